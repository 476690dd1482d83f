//! Start-up and change-feed behaviour under the conditions a running city meets:
//! another process holding the write lock, a pruned change feed, a row written by
//! another tool that riskmap cannot read, stores created by other subcommands.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use common::*;
use riskmap::app::{App, OpenOptions};

fn import(dir: &std::path::Path, layer: &str, features: Vec<serde_json::Value>) {
    let file = dir.join(format!("{layer}-{}.geojson", features.len()));
    std::fs::write(&file, collection(features)).unwrap();
    cli_import(dir, layer, &file);
}

fn age_change_feed(dir: &std::path::Path) {
    let c = rusqlite::Connection::open(store_path(dir)).unwrap();
    c.execute(
        "UPDATE riskmap_changes SET at = '2000-01-01T00:00:00.000Z'",
        [],
    )
    .unwrap();
}

#[test]
fn the_server_starts_while_another_process_holds_the_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    import(
        dir.path(),
        "risk_points",
        vec![risk_point("R1", 106.5, 29.5, "I")],
    );
    age_change_feed(dir.path()); // pruning would need the lock
    let holder = rusqlite::Connection::open(store_path(dir.path())).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let t = std::time::Instant::now();
    let app = App::open(config(), dir.path(), OpenOptions::default()).unwrap();
    assert!(t.elapsed().as_secs_f64() < 30.0);
    assert_eq!(app.layer("risk_points").unwrap().index.read().len(), 1);
    holder.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn a_pruned_change_feed_does_not_cause_full_reloads() {
    let dir = tempfile::tempdir().unwrap();
    import(
        dir.path(),
        "risk_points",
        vec![risk_point("R1", 106.5, 29.5, "I")],
    );
    import(dir.path(), "sensors", vec![]);
    age_change_feed(dir.path());
    let app = open_app(dir.path());
    let c = rusqlite::Connection::open(store_path(dir.path())).unwrap();
    let left: i64 = c
        .query_row("SELECT count(*) FROM riskmap_changes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "old rows pruned");
    let sensors_version = app.layer("sensors").unwrap().changes.version();
    import(
        dir.path(),
        "risk_points",
        vec![risk_point("R2", 106.6, 29.6, "II")],
    );
    assert_eq!(app.follow_changes().unwrap(), 1, "one change, no reload");
    assert_eq!(
        app.layer("sensors").unwrap().changes.version(),
        sensors_version,
        "other layers untouched"
    );
    assert!(
        app.layer("risk_points")
            .unwrap()
            .index
            .read()
            .get("R2")
            .is_some()
    );
}

#[test]
fn an_unreadable_row_written_by_another_tool_does_not_stop_the_change_feed() {
    let dir = tempfile::tempdir().unwrap();
    import(
        dir.path(),
        "risk_points",
        vec![risk_point("R1", 106.5, 29.5, "I")],
    );
    let app = open_app(dir.path());
    // Another tool writes text into the INTEGER column of a sensor, with a feed row.
    let c = rusqlite::Connection::open(store_path(dir.path())).unwrap();
    let blob = riskmap::store::blob::encode(&geo_types::Point::new(106.5, 29.5).into());
    c.execute(
        "INSERT INTO sensors (id, geom, type_id) VALUES ('BAD', ?1, 'not a number')",
        [blob],
    )
    .unwrap();
    c.execute("INSERT INTO riskmap_changes (at, layer, feature_id) VALUES ('2030-01-01T00:00:00.000Z', 'sensors', 'BAD')", []).unwrap();
    import(
        dir.path(),
        "risk_points",
        vec![risk_point("R3", 106.7, 29.7, "III")],
    );
    app.follow_changes().unwrap();
    assert!(
        app.layer("risk_points")
            .unwrap()
            .index
            .read()
            .get("R3")
            .is_some(),
        "later changes still applied"
    );
    assert!(
        app.layer("sensors")
            .unwrap()
            .index
            .read()
            .get("BAD")
            .is_none()
    );
}

#[test]
fn keys_asked_for_before_the_first_serve_do_not_cancel_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    // `keys` never creates a store (a mistyped --data must not): refused, nothing made.
    let o = riskmap_raw(&[
        "keys",
        "add",
        "--role",
        "admin",
        "--data",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("no store at"),
        "{}",
        text(&o.stderr)
    );
    assert!(!store_path(dir.path()).exists());
    let app = App::open(config(), dir.path(), OpenOptions::default()).unwrap();
    assert_eq!(app.layer("risk_points").unwrap().index.read().len(), 1_360);
    // A store that starts with an import is the user's: no demo in it.
    let other = tempfile::tempdir().unwrap();
    import(
        other.path(),
        "risk_points",
        vec![risk_point("R1", 106.5, 29.5, "I")],
    );
    let app = App::open(config(), other.path(), OpenOptions::default()).unwrap();
    assert_eq!(app.layer("risk_points").unwrap().index.read().len(), 1);
    assert_eq!(app.layer("sensors").unwrap().index.read().len(), 0);
    // --no-demo on an empty store is remembered.
    let third = tempfile::tempdir().unwrap();
    drop(
        App::open(
            config(),
            third.path(),
            OpenOptions {
                demo: false,
                public_reads: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let app = App::open(config(), third.path(), OpenOptions::default()).unwrap();
    assert_eq!(app.layer("risk_points").unwrap().index.read().len(), 0);
}

#[test]
fn geojson_with_a_byte_order_mark_and_csv_with_spaces_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bom.geojson");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(collection(vec![risk_point("R1", 106.5, 29.5, "I")]).as_bytes());
    std::fs::write(&file, &bytes).unwrap();
    cli_import(dir.path(), "risk_points", &file);
    let noext = dir.path().join("bom_no_extension");
    std::fs::write(&noext, &bytes).unwrap();
    cli_import(dir.path(), "risk_points", &noext);
    // Spaces around header names and numbers are layout; text cells are data, kept
    // verbatim, quoted or not (the csv crate cannot tell which were quoted).
    store_sensor_types(dir.path(), [1, 254]);
    let csv = dir.path().join("s.csv");
    std::fs::write(
        &csv,
        "id , type_id, risk_point_id ,lon, lat\nS1, 254.0 ,R1, 106.5 , 29.5\n",
    )
    .unwrap();
    cli_import(dir.path(), "sensors", &csv);
    let store = open_store(dir.path());
    let s = store.get_feature(&layer("sensors"), "S1").unwrap().unwrap();
    assert_eq!(s.feature.values[0], riskmap::model::Value::Int(254));
    assert_eq!(
        s.feature.values[1],
        riskmap::model::Value::Text("R1".into())
    );
    assert_eq!(
        s.feature.geometry,
        geo_types::Geometry::Point(geo_types::Point::new(106.5, 29.5))
    );
    let csv = dir.path().join("r.csv");
    std::fs::write(
        &csv,
        "id , name, category,level , district ,lon, lat\nR2,\"  R 1  \",landslide,I,  R 2 ,106.5,29.5\nR3,\"   \",landslide,I,x,106.5,29.5\n",
    )
    .unwrap();
    cli_import(dir.path(), "risk_points", &csv);
    let get = |id: &str| {
        store
            .get_feature(&layer("risk_points"), id)
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        get("R2").feature.values[0],
        riskmap::model::Value::Text("  R 1  ".into())
    );
    assert_eq!(
        get("R2").feature.values[3],
        riskmap::model::Value::Text("  R 2 ".into())
    );
    assert_eq!(
        get("R3").feature.values[0],
        riskmap::model::Value::Text("   ".into())
    );
}

/// 5,000 sensors on a grid around (106.55, 29.55) and one risk point, written by
/// `riskmap import` (fids 1 and 1..=5000), with their types.
fn good_store(dir: &std::path::Path) {
    store_sensor_types(dir, 1..=254);
    import(
        dir,
        "risk_points",
        vec![risk_point("R1", 106.55, 29.55, "I")],
    );
    let csv = dir.join("sensors.csv");
    let mut text = String::from("id,type_id,risk_point_id,lon,lat\n");
    for i in 0..5_000 {
        let (x, y) = sensor_position(i);
        text += &format!("S{i:04},{},R1,{x},{y}\n", 1 + i % 254);
    }
    std::fs::write(&csv, text).unwrap();
    cli_import(dir, "sensors", &csv);
}

fn sensor_position(i: usize) -> (f64, f64) {
    (
        106.5 + (i % 100) as f64 * 0.001,
        29.5 + (i / 100) as f64 * 0.002,
    )
}

/// Ids of the sensor rows [`write_bad_rows`] writes (a sixth has a non-UTF-8 id).
const BAD_SENSORS: [&str; 5] = ["BAD-NAN", "BAD-FAR", "BAD-LINE", "BAD-BLOB", "BAD-TYPE"];

/// Writes, as another tool might, rows riskmap must not serve: sensors at (NaN, 29.55)
/// and (1e300, -1e300), a LineString, a truncated blob, text in the integer column, a
/// non-UTF-8 id; a risk point at (NaN, 29).
fn write_bad_rows(dir: &std::path::Path) {
    use riskmap::store::blob::encode;
    let point = |x: f64, y: f64| encode(&geo_types::Point::new(x, y).into());
    let line = encode(&geo_types::LineString::from(vec![(106.5, 29.5), (106.6, 29.6)]).into());
    let mut broken = point(106.55, 29.55);
    broken.truncate(15);
    let c = rusqlite::Connection::open(store_path(dir)).unwrap();
    let rows: [(&str, Vec<u8>, &str); 5] = [
        ("BAD-NAN", point(f64::NAN, 29.55), "7"),
        ("BAD-FAR", point(1e300, -1e300), "7"),
        ("BAD-LINE", line, "7"),
        ("BAD-BLOB", broken, "7"),
        ("BAD-TYPE", point(106.55, 29.55), "not a number"),
    ];
    for (id, geom, type_id) in rows {
        c.execute(
            "INSERT INTO sensors (id, geom, type_id) VALUES (?1, ?2, ?3)",
            rusqlite::params![id, geom, type_id],
        )
        .unwrap();
    }
    c.execute(
        "INSERT INTO sensors (id, geom, type_id) VALUES (CAST(X'42ff' AS TEXT), ?1, 7)",
        [point(106.55, 29.55)],
    )
    .unwrap();
    c.execute(
        "INSERT INTO risk_points (id, geom, name, category, level) VALUES ('RBAD', ?1, 'x', 'landslide', 'I')",
        [point(f64::NAN, 29.0)],
    )
    .unwrap();
}

/// A change-feed row, as `riskmap import` writes them (`None`: reload the layer).
fn feed(dir: &std::path::Path, layer: &str, id: Option<&str>) {
    let c = rusqlite::Connection::open(store_path(dir)).unwrap();
    c.execute(
        "INSERT INTO riskmap_changes (at, layer, feature_id) VALUES ('2030-01-01T00:00:00.000Z', ?1, ?2)",
        rusqlite::params![layer, id],
    )
    .unwrap();
}

/// What the server serves of the test data: the fids a bbox query over the whole
/// world finds, the extents of /collections, and the tiles over the sensors at zooms
/// 12 and 14 (hashes of their bytes).
#[derive(Debug, PartialEq)]
struct Served {
    sensors: Vec<i64>,
    risk_points: Vec<i64>,
    extents: Vec<serde_json::Value>,
    tiles: Vec<(String, u64)>,
}

async fn served(app: &std::sync::Arc<App>) -> Served {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let world = riskmap::model::Bbox::new(-180.0, -90.0, 180.0, 90.0).unwrap();
    let fids = |l: &str| -> Vec<i64> {
        let state = app.layer(l).unwrap();
        let idx = state.index.read();
        idx.in_bbox(&world)
            .into_iter()
            .map(|s| idx.fid(s))
            .collect()
    };
    let c = http_json(app, "/collections").await;
    let extents = c["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| serde_json::json!([c["id"], c["extent"]]))
        .collect();
    let mut tiles = Vec::new();
    for z in [12u8, 14] {
        let n = (1u64 << z) as f64;
        let tx = |lon: f64| ((lon + 180.0) / 360.0 * n) as u64;
        let ty = |lat: f64| {
            ((1.0 - lat.to_radians().tan().asinh() / std::f64::consts::PI) / 2.0 * n) as u64
        };
        for x in tx(106.5)..=tx(106.6) {
            for y in ty(29.6)..=ty(29.5) {
                let path = format!("/tiles/sensors,risk_points/{z}/{x}/{y}.mvt");
                let (status, body) = http_get(app, &path).await;
                assert!(status.is_success(), "{path}: {status}");
                let mut h = DefaultHasher::new();
                body.hash(&mut h);
                tiles.push((path, h.finish()));
            }
        }
    }
    Served {
        sensors: fids("sensors"),
        risk_points: fids("risk_points"),
        extents,
        tiles,
    }
}

/// Asserts two servers serve the same, saying briefly where they differ.
fn assert_same(got: &Served, want: &Served, what: &str) {
    let only = |a: &[i64], b: &[i64]| -> Vec<i64> {
        a.iter()
            .filter(|f| !b.contains(f))
            .copied()
            .take(10)
            .collect()
    };
    assert!(
        got == want,
        "{what}: sensors {} vs {} (only got {:?}, only want {:?}); risk points {:?} vs {:?}; extents {:?} vs {:?}; tiles differing {:?}",
        got.sensors.len(),
        want.sensors.len(),
        only(&got.sensors, &want.sensors),
        only(&want.sensors, &got.sensors),
        got.risk_points,
        want.risk_points,
        got.extents,
        want.extents,
        got.tiles
            .iter()
            .zip(&want.tiles)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| &a.0)
            .collect::<Vec<_>>()
    );
}

fn unreadable(h: &serde_json::Value, layer: &str) -> i64 {
    h["unreadable_rows"][layer].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn rows_that_cannot_be_served_are_skipped_at_start_counted_and_reported() {
    let clean = tempfile::tempdir().unwrap();
    good_store(clean.path());
    let dirty = tempfile::tempdir().unwrap();
    good_store(dirty.path());
    write_bad_rows(dirty.path());

    let want = open_app(clean.path());
    let app = open_app(dirty.path()); // starts: no panic, no refusal
    let got = served(&app).await;
    assert!(
        got.sensors == (1..=5_000).collect::<Vec<i64>>(),
        "every good sensor and nothing else: {} sensors",
        got.sensors.len()
    );
    assert_eq!(
        got.risk_points,
        [1],
        "the good point is found next to a NaN one"
    );
    assert_same(
        &got,
        &served(&want).await,
        "served as if the bad rows were not there",
    );

    let h = http_json(&app, "/health").await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(unreadable(&h, "sensors"), 6, "{h}");
    assert_eq!(unreadable(&h, "risk_points"), 1, "{h}");
    assert_eq!(unreadable(&h, "pipelines"), 0, "{h}");
    assert_eq!(h["layers"]["sensors"], 5_000);
    let ok = http_json(&want, "/health").await;
    assert_eq!(ok["status"], "ok", "{ok}");
    assert_eq!(unreadable(&ok, "sensors"), 0, "{ok}");

    let (_, m) = http_get(&app, "/metrics").await;
    let m = String::from_utf8(m).unwrap();
    assert!(
        m.contains("riskmap_unreadable_rows{layer=\"sensors\"} 6"),
        "{m}"
    );
    assert!(
        m.contains("riskmap_unreadable_rows{layer=\"risk_points\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn rows_that_cannot_be_served_are_skipped_by_the_change_feed_and_reloads() {
    let clean = tempfile::tempdir().unwrap();
    good_store(clean.path());
    let dir = tempfile::tempdir().unwrap();
    good_store(dir.path());
    let want = open_app(clean.path());
    let app = open_app(dir.path());
    let before = served(&app).await;
    assert_same(&before, &served(&want).await, "the same store");

    write_bad_rows(dir.path());
    for id in BAD_SENSORS {
        feed(dir.path(), "sensors", Some(id));
    }
    feed(dir.path(), "risk_points", Some("RBAD"));
    app.follow_changes().unwrap();
    assert_same(
        &served(&app).await,
        &before,
        "the feed serves none of the bad rows",
    );
    let h = http_json(&app, "/health").await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(
        unreadable(&h, "sensors"),
        5,
        "the non-UTF-8 id is not in the feed: {h}"
    );
    assert_eq!(unreadable(&h, "risk_points"), 1, "{h}");

    // A reload reads the whole layer: the sixth bad row is found, none counted twice.
    feed(dir.path(), "sensors", None);
    app.follow_changes().unwrap();
    assert_same(&served(&app).await, &before, "after a reload");
    let h = http_json(&app, "/health").await;
    assert_eq!(unreadable(&h, "sensors"), 6, "{h}");

    // A served sensor overwritten with a NaN point stops being served (the index does
    // not keep a position the store no longer has); fixed, it comes back.
    let c = rusqlite::Connection::open(store_path(dir.path())).unwrap();
    let blob = |x: f64, y: f64| riskmap::store::blob::encode(&geo_types::Point::new(x, y).into());
    c.execute(
        "UPDATE sensors SET geom = ?1 WHERE id = 'S0042'",
        [blob(f64::NAN, 29.5)],
    )
    .unwrap();
    feed(dir.path(), "sensors", Some("S0042"));
    app.follow_changes().unwrap();
    assert!(
        app.layer("sensors")
            .unwrap()
            .index
            .read()
            .get("S0042")
            .is_none()
    );
    let h = http_json(&app, "/health").await;
    assert_eq!(unreadable(&h, "sensors"), 7, "{h}");
    let (x, y) = sensor_position(42);
    c.execute(
        "UPDATE sensors SET geom = ?1 WHERE id = 'S0042'",
        [blob(x, y)],
    )
    .unwrap();
    feed(dir.path(), "sensors", Some("S0042"));
    // Bad rows the other tool deletes stop being counted.
    c.execute("DELETE FROM sensors WHERE id LIKE 'BAD-%'", [])
        .unwrap();
    c.execute("DELETE FROM risk_points WHERE id = 'RBAD'", [])
        .unwrap();
    for id in BAD_SENSORS {
        feed(dir.path(), "sensors", Some(id));
    }
    feed(dir.path(), "risk_points", Some("RBAD"));
    app.follow_changes().unwrap();
    assert_same(&served(&app).await, &before, "S0042 back where it was");
    let h = http_json(&app, "/health").await;
    assert_eq!(
        unreadable(&h, "sensors"),
        1,
        "the non-UTF-8 id is left: {h}"
    );
    assert_eq!(unreadable(&h, "risk_points"), 0, "{h}");
}

async fn send(
    app: &std::sync::Arc<App>,
    method: &str,
    uri: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> (axum::http::StatusCode, serde_json::Value) {
    let auth = format!("Bearer {key}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/geo+json"),
    ];
    let (status, _, bytes) = http(app, method, uri, &headers, body.map(|b| b.to_string())).await;
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test]
async fn edits_replace_or_delete_rows_the_server_does_not_serve() {
    let dir = tempfile::tempdir().unwrap();
    good_store(dir.path());
    write_bad_rows(dir.path());
    let app = open_app(dir.path());
    let key = app
        .store()
        .add_key("test", riskmap::model::Role::Planner, "planner")
        .unwrap()
        .secret;
    let items = "/collections/risk_points/items";
    let (s, _) = send(&app, "GET", &format!("{items}/RBAD"), &key, None).await;
    assert_eq!(s, 404, "not served");
    // A replacement fixes the row: served, no longer counted.
    let fixed = risk_point("RBAD", 106.51, 29.51, "II");
    let (s, b) = send(&app, "PUT", &format!("{items}/RBAD"), &key, Some(fixed)).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = send(&app, "GET", &format!("{items}/RBAD"), &key, None).await;
    assert_eq!(
        (s.as_u16(), &b["geometry"]["coordinates"]),
        (200, &serde_json::json!([106.51, 29.51]))
    );
    let h = http_json(&app, "/health").await;
    assert_eq!(unreadable(&h, "risk_points"), 0, "{h}");

    // A sensor at (NaN, 29.55) is deleted; its id is not free for a create meanwhile
    // (the row is there), and a row whose cells cannot be read is a conflict.
    let sensors = "/collections/sensors/items";
    let sensor = |id: &str| serde_json::json!({"type": "Feature", "id": id, "geometry": {"type": "Point", "coordinates": [106.5, 29.5]}, "properties": {"type_id": 3}});
    let (s, b) = send(&app, "POST", sensors, &key, Some(sensor("BAD-NAN"))).await;
    assert_eq!(s, 409, "{b}");
    let (s, b) = send(&app, "DELETE", &format!("{sensors}/BAD-NAN"), &key, None).await;
    assert!(s.is_success(), "{s} {b}");
    let (s, b) = send(
        &app,
        "PUT",
        &format!("{sensors}/BAD-TYPE"),
        &key,
        Some(sensor("BAD-TYPE")),
    )
    .await;
    assert_eq!(
        (s.as_u16(), b["code"].as_str()),
        (409, Some("UnreadableRow")),
        "{b}"
    );
    let h = http_json(&app, "/health").await;
    assert_eq!(unreadable(&h, "sensors"), 5, "{h}");
    assert_eq!(h["status"], "degraded");
}

#[tokio::test]
async fn an_import_replaces_rows_the_server_does_not_serve_and_audits_them() {
    let dir = tempfile::tempdir().unwrap();
    good_store(dir.path());
    write_bad_rows(dir.path());
    let fixed: Vec<serde_json::Value> = ["BAD-NAN", "BAD-BLOB", "BAD-TYPE"]
        .iter()
        .map(|id| serde_json::json!({"type": "Feature", "id": id, "geometry": {"type": "Point", "coordinates": [106.52, 29.52]}, "properties": {"type_id": 9}}))
        .collect();
    import(dir.path(), "sensors", fixed);
    let c = rusqlite::Connection::open(store_path(dir.path())).unwrap();
    let mut stmt = c
        .prepare("SELECT feature_id, before, after, detail FROM riskmap_audit WHERE action = 'import_update' ORDER BY feature_id")
        .unwrap();
    let rows: Vec<(String, Option<String>, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids, ["BAD-BLOB", "BAD-NAN", "BAD-TYPE"]);
    for (id, before, after, detail) in &rows {
        let after: serde_json::Value = serde_json::from_str(after).unwrap();
        let detail: serde_json::Value = serde_json::from_str(detail).unwrap();
        if detail.get("replaced_unreadable_row").is_some() {
            // Unreadable: no before, the whole new feature after.
            assert_eq!(before, &None, "{id}");
            assert_eq!(after["id"], id.as_str());
        } else {
            // Readable but not servable (a NaN position): the changed members.
            assert_eq!(id, "BAD-NAN");
            assert!(
                before.is_some()
                    && after["geometry"]["coordinates"] == serde_json::json!([106.52, 29.52]),
                "{after}"
            );
        }
    }
    let replaced: Vec<&str> = rows
        .iter()
        .filter(|r| r.3.contains("replaced_unreadable_row"))
        .map(|r| r.0.as_str())
        .collect();
    assert_eq!(replaced, ["BAD-BLOB", "BAD-TYPE"]);
    let app = open_app(dir.path());
    let h = http_json(&app, "/health").await;
    assert_eq!(unreadable(&h, "sensors"), 3, "{h}");
    let idx_layer = app.layer("sensors").unwrap();
    let idx = idx_layer.index.read();
    for id in ["BAD-NAN", "BAD-BLOB", "BAD-TYPE"] {
        assert!(idx.slot(id).is_some(), "{id} is served after the import");
    }
}
