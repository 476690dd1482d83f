//! Crash safety of `riskmap import`: the importer is killed with SIGKILL at random
//! moments, many times. After each kill the store must hold all of that file or none
//! of it, pass `PRAGMA integrity_check`, and an index rebuilt from it must equal what
//! SQLite holds; and every import that exited 0 (acknowledged) must be there, whole.
//! A self-test first shows the checker does catch a partial write. The durability
//! settings themselves are checked directly: SIGKILL cannot reveal a weakened one.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;
use riskmap::index::LayerIndex;
use riskmap::model::{Bbox, Feature, Value};
use riskmap::store::{WriterSettings, blob};

const N: usize = 6_000;

fn write_geojson(path: &Path, prefix: &str) {
    let f: Vec<serde_json::Value> = (0..N)
        .map(|i| {
            risk_point(
                &format!("{prefix}-{i:05}"),
                106.0 + (i % 700) as f64 * 1e-3,
                29.0 + (i / 700) as f64 * 1e-3,
                ["I", "II", "III", "IV"][i % 4],
            )
        })
        .collect();
    std::fs::write(path, collection(f)).unwrap();
}

/// Sensors on the probe's risk points (`P-00000`...), of types 1 to 254.
fn write_csv(path: &Path, prefix: &str) {
    let mut s = String::from("id,type_id,risk_point_id,pipeline_id,lon,lat\n");
    for i in 0..N * 3 {
        s.push_str(&format!(
            "{prefix}-{i:06},{},P-{:05},,{},{}\n",
            i % 254 + 1,
            i % N,
            106.0 + (i % 900) as f64 * 1e-3,
            29.5 + (i / 900) as f64 * 1e-3
        ));
    }
    std::fs::write(path, s).unwrap();
}

/// Rows per id prefix, straight from SQLite.
fn prefix_counts(dir: &Path, table: &str) -> BTreeMap<String, usize> {
    let c = rusqlite::Connection::open(store_path(dir)).unwrap();
    let mut stmt = c.prepare(&format!("SELECT id FROM \"{table}\"")).unwrap();
    let ids: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut m = BTreeMap::new();
    for id in ids {
        let p = id.split('-').next().unwrap().to_string();
        *m.entry(p).or_insert(0) += 1;
    }
    m
}

/// The checks after one kill. `expected[p]` is the full size of prefix `p`'s file.
fn check_store(dir: &Path, table: &str, expected: &BTreeMap<String, usize>) -> Result<(), String> {
    let store = open_store(dir);
    store
        .integrity_check()
        .map_err(|e| format!("integrity: {e}"))?;
    // All or nothing, per file.
    for (p, n) in prefix_counts(dir, table) {
        let full = expected.get(&p).copied().unwrap_or(usize::MAX);
        if n != full {
            return Err(format!(
                "file {p}: {n} of {full} features in the store (partial)"
            ));
        }
    }
    // An index rebuilt from the store equals the rows SQLite holds.
    let def = layer(table);
    let mut conn = store.open_reader().unwrap();
    let mut skipped = Vec::new();
    let idx = LayerIndex::build(def.clone(), 0, |push| {
        skipped = store.scan_layer(&mut conn, &def, push)?;
        Ok::<_, riskmap::store::StoreError>(())
    })
    .map_err(|e| e.to_string())?;
    if !skipped.is_empty() {
        return Err(format!("rows the server would not serve: {skipped:?}"));
    }
    let c = rusqlite::Connection::open(store_path(dir)).unwrap();
    let cols: Vec<String> = def
        .properties
        .iter()
        .map(|p| format!("\"{}\"", p.name))
        .collect();
    let mut stmt = c
        .prepare(&format!(
            "SELECT fid, id, geom, {} FROM \"{table}\"",
            cols.join(", ")
        ))
        .unwrap();
    let mut rows = stmt.query([]).unwrap();
    let mut n = 0;
    let mut points = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        n += 1;
        let fid: i64 = r.get(0).unwrap();
        let id: String = r.get(1).unwrap();
        let g = blob::decode(&r.get::<_, Vec<u8>>(2).unwrap()).map_err(|e| format!("{id}: {e}"))?;
        let values: Vec<Value> = def
            .properties
            .iter()
            .enumerate()
            .map(|(i, p)| match r.get_ref(3 + i).unwrap() {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(v)
                    if p.ty == riskmap::model::PropertyType::Integer =>
                {
                    Value::Int(v)
                }
                rusqlite::types::ValueRef::Text(t) => {
                    Value::Text(String::from_utf8(t.to_vec()).unwrap())
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let want = riskmap::store::StoredFeature {
            fid,
            feature: Feature {
                id: id.clone(),
                geometry: g.clone(),
                values,
            },
        };
        if idx.get(&id).as_ref() != Some(&want) {
            return Err(format!("index differs from the store for {id}"));
        }
        if let geo_types::Geometry::Point(p) = g {
            points.push((id, p.0));
        }
    }
    if idx.len() != n {
        return Err(format!("index holds {} features, the store {n}", idx.len()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
    for _ in 0..20 {
        let (x, y) = (rng.random_range(105.9..107.0), rng.random_range(28.9..30.0));
        let b = Bbox::new(
            x,
            y,
            x + rng.random_range(0.0..0.3),
            y + rng.random_range(0.0..0.3),
        )
        .unwrap();
        let mut want: Vec<&str> = points
            .iter()
            .filter(|(_, c)| b.contains_coord(*c))
            .map(|(id, _)| id.as_str())
            .collect();
        let mut got: Vec<&str> = idx.in_bbox(&b).into_iter().map(|s| idx.id(s)).collect();
        want.sort();
        got.sort();
        if want != got {
            return Err(format!("bbox {b:?}: index and store disagree"));
        }
    }
    Ok(())
}

fn spawn_import(dir: &Path, layer: &str, file: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_riskmap"))
        .args([
            "import",
            "--data",
            dir.to_str().unwrap(),
            "--layers",
            layers_dir().to_str().unwrap(),
            "--layer",
            layer,
            file.to_str().unwrap(),
        ])
        .env("RISKMAP_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn every_connection_that_writes_is_wal_with_synchronous_full() {
    // SIGKILL leaves the OS page cache intact, so the kill test below passes even with
    // synchronous=OFF: the settings themselves are checked here, on the connection
    // every write goes through, opened the ways riskmap opens it.
    let want = WriterSettings {
        journal_mode: "wal".into(),
        synchronous: "full".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    // `riskmap import` / `keys`: a new store, then an existing one.
    for _ in 0..2 {
        let store = open_store(dir.path());
        assert_eq!(store.writer_settings().unwrap(), want);
        // Still so after a write transaction.
        let def = layer("risk_points");
        store
            .write(|tx| {
                let f = Feature::from_geojson(&def, &risk_point("W1", 106.0, 29.0, "I")).unwrap();
                tx.upsert(&def, &f, None)?;
                tx.commit()
            })
            .unwrap();
        assert_eq!(store.writer_settings().unwrap(), want);
    }
    // `riskmap serve`.
    let app = open_app(dir.path());
    assert_eq!(app.store().writer_settings().unwrap(), want);
}

#[test]
fn the_checker_detects_a_partial_import() {
    // A harness that cannot see a half-written file is blind: write half a file
    // outside any import transaction and make sure the check fails.
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let def = layer("risk_points");
    store
        .write(|tx| {
            for i in 0..N / 2 {
                let f = Feature::from_geojson(
                    &def,
                    &risk_point(&format!("H-{i:05}"), 106.0, 29.0, "I"),
                )
                .unwrap();
                tx.insert_feature(&def, &f, None)?;
            }
            tx.commit()
        })
        .unwrap();
    let expected = BTreeMap::from([("H".to_string(), N)]);
    let err = check_store(dir.path(), "risk_points", &expected).unwrap_err();
    assert!(err.contains("partial"), "{err}");
}

#[test]
fn sigkill_at_random_moments_leaves_each_file_whole_or_absent() {
    let dir = tempfile::tempdir().unwrap();
    // The sensors' types; their risk points are the probe's (written first, never killed).
    store_sensor_types(dir.path(), 1..=254);
    let mut rng = ChaCha8Rng::seed_from_u64(20_261_122);
    // How long a full import takes here, to spread the kills over it.
    let probe = dir.path().join("probe.geojson");
    write_geojson(&probe, "P");
    let t = Instant::now();
    assert!(
        spawn_import(dir.path(), "risk_points", &probe)
            .wait()
            .unwrap()
            .success()
    );
    let full = t.elapsed();
    let mut expected_points = BTreeMap::from([("P".to_string(), N)]);
    let mut expected_sensors = BTreeMap::new();
    let (mut whole, mut absent) = (0, 0);
    // Each import's exit status: one that exited 0 acknowledged its file, which must
    // then be in the store, whole.
    let mut statuses = Vec::new();

    for k in 0..24 {
        let csv = k % 3 == 2;
        let (table, prefix) = if csv {
            ("sensors", format!("C{k}"))
        } else {
            ("risk_points", format!("K{k}"))
        };
        let file = dir
            .path()
            .join(format!("{prefix}.{}", if csv { "csv" } else { "geojson" }));
        if csv {
            write_csv(&file, &prefix)
        } else {
            write_geojson(&file, &prefix)
        }
        let expected = if csv {
            &mut expected_sensors
        } else {
            &mut expected_points
        };
        expected.insert(prefix.clone(), if csv { N * 3 } else { N });
        let mut child = spawn_import(dir.path(), table, &file);
        // Most kills land inside the import; some before it starts, some after it ends.
        let delay = if k % 4 == 3 {
            // Every fourth import gets ample time, so some surely commit before their kill.
            full.mul_f64(5.0)
        } else {
            full.mul_f64(rng.random_range(0.0..1.15))
        };
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL on Unix (no effect once it has exited)
        let status = child.wait().unwrap();
        check_store(dir.path(), table, expected)
            .unwrap_or_else(|e| panic!("kill {k} after {delay:?} ({status}): {e}"));
        let present = prefix_counts(dir.path(), table).get(&prefix).copied();
        if status.success() {
            assert_eq!(
                present,
                Some(expected[&prefix]),
                "kill {k} after {delay:?}: the import exited 0 but its file is not whole in the store"
            );
        }
        statuses.push(status);
        match present {
            Some(_) => whole += 1,
            None => absent += 1,
        }
        // Previous files are untouched.
        let other = if csv {
            ("risk_points", &expected_points)
        } else {
            ("sensors", &expected_sensors)
        };
        check_store(dir.path(), other.0, other.1)
            .unwrap_or_else(|e| panic!("kill {k}: other layer: {e}"));
    }
    assert!(absent > 0, "some kills must land before the commit");
    let exited_ok = statuses.iter().filter(|s| s.success()).count();
    assert!(
        exited_ok > 0,
        "some imports must finish (exit 0) before their kill: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| s.success() || s.code().is_none()),
        "an import failed on its own rather than by the kill: {statuses:?}"
    );

    // After all that, an import runs to the end and the store is whole.
    let last = dir.path().join("Z.geojson");
    write_geojson(&last, "Z");
    assert!(
        spawn_import(dir.path(), "risk_points", &last)
            .wait()
            .unwrap()
            .success()
    );
    expected_points.insert("Z".into(), N);
    check_store(dir.path(), "risk_points", &expected_points).unwrap();
    assert_eq!(prefix_counts(dir.path(), "risk_points")["Z"], N);
    // One audit row per import that committed, none for killed ones.
    let imports = sqlite_audit_count(dir.path(), "import") as usize;
    let committed =
        prefix_counts(dir.path(), "risk_points").len() + prefix_counts(dir.path(), "sensors").len();
    assert_eq!(imports, committed);
    eprintln!(
        "24 kills: {exited_ok} imports exited 0, {whole} files whole, {absent} absent; full import took {full:?}"
    );
    let _ = Duration::ZERO;
}
