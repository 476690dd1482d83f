//! Issue 7's findings 1 and 2 from the outside, on the real binary and a real socket:
//! hostile geometries (a zigzag line whose every Douglas–Peucker split peels one
//! vertex, a comb polygon of the same kind) are accepted, answered 201 (never a 503
//! for a write that was committed), served in items and tiles, kept through a SIGKILL
//! restart, and audited once. Reads sent meanwhile are all answered. That the work is
//! bounded is shown by counting operations (`index::generalise` tests) and that reads
//! never wait on a writer by holding one (`tests/concurrency.rs`), not by timing here.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::server::{self, cli_key, start};
use common::*;
use riskmap::tiles::TileCoord;
use serde_json::{Value, json};

/// A line of `n` vertices zigzagging with a growing amplitude (DP's quadratic case).
pub fn zigzag_line(n: usize) -> Vec<[f64; 2]> {
    (0..n)
        .map(|i| {
            let a = 1e-7 * (1.0 + i as f64);
            let y = if i % 2 == 0 { 29.5 } else { 29.5 + a.min(0.01) };
            [106.4 + i as f64 * 1e-6, y]
        })
        .collect()
}

/// A comb: a zigzag top edge over a straight bottom, closed; simple and valid.
fn comb_polygon(n: usize) -> Vec<[f64; 2]> {
    let mut ring = zigzag_line(n);
    let last = ring[n - 1][0];
    ring.push([last, 29.49]);
    ring.push([106.4, 29.49]);
    ring.push(ring[0]);
    ring
}

fn round(c: &[[f64; 2]]) -> Vec<[f64; 2]> {
    c.iter()
        .map(|p| [(p[0] * 1e7).round() / 1e7, (p[1] * 1e7).round() / 1e7])
        .collect()
}

#[test]
fn hostile_geometries_are_committed_answered_served_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let key = cli_key(dir.path(), "planner");
    let auth = format!("Bearer {key}");
    let h = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/geo+json"),
    ];
    let line = round(&zigzag_line(150_000));
    let pipe = json!({"type": "Feature", "id": "ZIGZAG",
        "geometry": {"type": "LineString", "coordinates": line},
        "properties": {"kind": "gas"}});
    let comb = round(&comb_polygon(20_000));
    let area = json!({"type": "Feature", "id": "COMB",
        "geometry": {"type": "Polygon", "coordinates": [comb]},
        "properties": {"name": "comb"}});

    // Reads keep being sent while the hostile writes go in; every one is answered.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (addr, stop, reads) = (server.addr.clone(), stop.clone(), reads.clone());
        let t = TileCoord::of_lonlat(106.45, 29.5, 14).unwrap();
        std::thread::spawn(move || {
            let uris = [
                "/health".to_string(),
                "/collections/risk_points/items/R000001".to_string(),
                format!("/tiles/pipelines,sensors/{}/{}/{}.mvt", t.z, t.x, t.y),
            ];
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for uri in &uris {
                    let (status, body) = server::http(&addr, "GET", uri, &[], "");
                    if !(status == 200 || status == 204) {
                        failures.push(format!("{uri}: {status} {body}"));
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }
            failures
        })
    };
    let (status, body) = server::http(
        &server.addr,
        "POST",
        "/collections/pipelines/items",
        &h,
        &pipe.to_string(),
    );
    assert_eq!(status, 201, "{}", &body[..body.len().min(300)]);
    let (status, body) = server::http(
        &server.addr,
        "POST",
        "/collections/boundary/items",
        &h,
        &area.to_string(),
    );
    assert_eq!(status, 201, "{}", &body[..body.len().min(300)]);
    stop.store(true, Ordering::Relaxed);
    let failures = reader.join().unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(reads.load(Ordering::Relaxed) > 0);

    // Served whole, in items and in tiles at every zoom.
    let served = |addr: &str| {
        let (status, body) =
            server::http(addr, "GET", "/collections/pipelines/items/ZIGZAG", &[], "");
        assert_eq!(status, 200);
        let doc: Value = serde_json::from_str(&body).unwrap();
        doc["geometry"]["coordinates"].as_array().unwrap().len()
    };
    assert_eq!(served(&server.addr), 150_000);
    for z in [6, 10, 14, 18] {
        let t = TileCoord::of_lonlat(106.45, 29.5001, z).unwrap();
        let uri = format!("/tiles/pipelines,boundary/{}/{}/{}.mvt", t.z, t.x, t.y);
        let (status, _) = server::http(&server.addr, "GET", &uri, &[], "");
        assert_eq!(status, 200, "{uri}");
    }
    // Audited once each: the answer and the store agree.
    assert_eq!(sqlite_audit_count(dir.path(), "create"), 2);

    // Kept through a SIGKILL and a restart.
    drop(server);
    let server = start(dir.path(), &[]);
    assert_eq!(served(&server.addr), 150_000);
    let (status, _) = server::http(
        &server.addr,
        "GET",
        "/collections/boundary/items/COMB",
        &[],
        "",
    );
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_geometry_over_its_layers_vertex_cap_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let layers = dir.path().join("layers");
    std::fs::create_dir(&layers).unwrap();
    for f in std::fs::read_dir(layers_dir()).unwrap() {
        let f = f.unwrap().path();
        let mut text = std::fs::read_to_string(&f).unwrap();
        if f.ends_with("pipelines.toml") {
            text = text.replace(
                "id_property = \"id\"\n",
                "id_property = \"id\"\nmax_vertices = 1000\n",
            );
        }
        std::fs::write(layers.join(f.file_name().unwrap()), text).unwrap();
    }
    let cfg = riskmap::config::Config::load(&layers).unwrap();
    assert_eq!(cfg.layer("pipelines").unwrap().max_vertices, 1000);
    let app = Arc::new(
        riskmap::app::App::open(
            cfg,
            dir.path(),
            riskmap::app::OpenOptions {
                demo: false,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let key = app
        .store()
        .add_key("test", riskmap::model::Role::Planner, "planner")
        .unwrap()
        .secret;
    let auth = format!("Bearer {key}");
    let post = |n: usize| {
        let line = round(&zigzag_line(n));
        json!({"type": "Feature", "id": format!("L{n}"),
            "geometry": {"type": "LineString", "coordinates": line},
            "properties": {"kind": "gas"}})
        .to_string()
    };
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/geo+json"),
    ];
    let (status, _, body) = http(
        &app,
        "POST",
        "/collections/pipelines/items",
        &headers,
        Some(post(1001)),
    )
    .await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        status,
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "{body}"
    );
    let d = body["description"].as_str().unwrap();
    assert!(
        d.contains("geometry") && d.contains("1001 vertices") && d.contains("1000"),
        "{d}"
    );
    assert_eq!(sqlite_count(dir.path(), "pipelines"), 0);
    let (status, _, _) = http(
        &app,
        "POST",
        "/collections/pipelines/items",
        &headers,
        Some(post(1000)),
    )
    .await;
    assert_eq!(status, axum::http::StatusCode::CREATED);
    // The cap itself is checked when the layer file is read.
    std::fs::write(
        layers.join("pipelines.toml"),
        std::fs::read_to_string(layers.join("pipelines.toml"))
            .unwrap()
            .replace("max_vertices = 1000", "max_vertices = 2000000"),
    )
    .unwrap();
    let e = riskmap::config::Config::load(&layers)
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_vertices") && e.contains("pipelines"), "{e}");
}

/// What a start reads from a layer: each row's id and the length of the data kept with
/// its geometry (if it is still the geometry that data was derived from), and the ids
/// of the rows it refuses.
fn read_at_start(
    dir: &std::path::Path,
    layer: &str,
) -> (Vec<(String, Option<usize>)>, Vec<String>) {
    let store = open_store(dir);
    let def = common::layer(layer);
    let mut conn = store.open_reader().unwrap();
    let mut seen = Vec::new();
    let skipped = store
        .scan_layer(&mut conn, &def, |_, f, kept| {
            seen.push((f.id.to_string(), kept.map(<[u8]>::len)))
        })
        .unwrap();
    let refused = skipped
        .iter()
        .map(|r| format!("{} {}", r.id.clone().unwrap_or_default(), r.reason))
        .collect();
    (seen, refused)
}

fn derived_rows(dir: &std::path::Path) -> Vec<(String, i64)> {
    let c = rusqlite::Connection::open(store_path(dir)).unwrap();
    let mut s = c
        .prepare("SELECT layer, fid FROM riskmap_derived ORDER BY layer, fid")
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Issue 7, acceptance 2 (restart time unchanged by any accepted feature): what the
/// index derives from a large geometry (vertex importances, length) is kept beside its
/// row when riskmap stores it, by an edit or an import, so a start neither checks nor
/// derives it again (`index` tests show the kept data gives the same index). A row
/// another tool changed since is checked and derived afresh, and refused if invalid;
/// deleting the feature forgets the data.
#[test]
fn a_large_geometry_keeps_what_was_derived_from_it_until_it_changes() {
    use riskmap::app::EditContext;
    use riskmap::model::Feature;
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    let ctx = || EditContext {
        actor: "test",
        ..Default::default()
    };
    let def = app.layer("boundary").unwrap().def.clone();
    let polygon = |id: &str, ring: Vec<[f64; 2]>| {
        let doc = json!({"type": "Feature", "id": id,
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"name": id}});
        Feature::from_geojson(&def, &doc).unwrap()
    };
    let comb = round(&comb_polygon(20_000));
    app.create(ctx(), "boundary", polygon("COMB", comb.clone()))
        .unwrap();
    let square = vec![
        [106.0, 29.0],
        [106.1, 29.0],
        [106.1, 29.1],
        [106.0, 29.1],
        [106.0, 29.0],
    ];
    app.create(ctx(), "boundary", polygon("SQUARE", square))
        .unwrap();
    drop(app);
    let (seen, refused) = read_at_start(dir.path(), "boundary");
    // Version, length, one importance per vertex.
    let kept_len = 4 + 8 + 4 * comb.len();
    assert_eq!(
        seen,
        [
            ("COMB".to_string(), Some(kept_len)),
            ("SQUARE".to_string(), None)
        ]
    );
    assert!(refused.is_empty(), "{refused:?}");

    // Another tool moves the polygon (still valid): no kept data, derived afresh.
    let c = rusqlite::Connection::open(store_path(dir.path())).unwrap();
    let rewrite = |ring: &[[f64; 2]]| {
        let g = geo_types::Geometry::MultiPolygon(geo_types::MultiPolygon(vec![
            geo_types::Polygon::new(
                ring.iter()
                    .map(|p| geo_types::coord! {x: p[0], y: p[1]})
                    .collect(),
                vec![],
            ),
        ]));
        let blob = riskmap::store::blob::encode(&g);
        c.execute("UPDATE boundary SET geom = ?1 WHERE name = 'COMB'", [blob])
            .unwrap();
    };
    let moved: Vec<[f64; 2]> = comb.iter().map(|p| [p[0] + 0.001, p[1]]).collect();
    rewrite(&moved);
    let (seen, refused) = read_at_start(dir.path(), "boundary");
    assert_eq!(seen[0], ("COMB".to_string(), None));
    assert!(refused.is_empty(), "{refused:?}");
    // ... and back to the very geometry riskmap stored: the data fits again.
    rewrite(&comb);
    assert_eq!(read_at_start(dir.path(), "boundary").0[0].1, Some(kept_len));
    // Another tool makes it self-intersecting: checked, and refused.
    let mut crossed = comb.clone();
    crossed.swap(1000, 3000);
    rewrite(&crossed);
    let (seen, refused) = read_at_start(dir.path(), "boundary");
    assert_eq!(seen, [("SQUARE".to_string(), None)]);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].starts_with("COMB "), "{refused:?}");
    drop(c);

    // Deleting forgets the data; so does replacing the geometry by a small one.
    let app = open_app(dir.path());
    assert_eq!(derived_rows(dir.path()).len(), 1);
    app.delete(ctx(), "boundary", "COMB").unwrap();
    assert!(derived_rows(dir.path()).is_empty());
    drop(app);

    // An import keeps it too, for lines, and never for points.
    let file = dir.path().join("long.geojson");
    let line = round(&zigzag_line(10_000));
    std::fs::write(
        &file,
        collection(vec![json!({"type": "Feature", "id": "LONG",
            "geometry": {"type": "LineString", "coordinates": line},
            "properties": {"kind": "gas"}})]),
    )
    .unwrap();
    cli_import(dir.path(), "pipelines", &file);
    assert_eq!(
        read_at_start(dir.path(), "pipelines").0,
        [("LONG".to_string(), Some(4 + 8 + 4 * line.len()))]
    );
    assert_eq!(derived_rows(dir.path()).len(), 1);
}
