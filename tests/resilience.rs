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
fn keys_made_before_the_first_serve_do_not_cancel_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let o = riskmap(&[
        "keys",
        "add",
        "--role",
        "admin",
        "--data",
        dir.path().to_str().unwrap(),
    ]);
    assert!(o.status.success());
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
    let csv = dir.path().join("s.csv");
    std::fs::write(
        &csv,
        "id , type_id, risk_point_id ,lon, lat\nS1, 254.0 ,R000001, 106.5 , 29.5\nS2,1,\"  R 1  \",106.5,29.5\nS3,1,  R 2 ,106.5,29.5\nS4,1,\"   \",106.5,29.5\n",
    )
    .unwrap();
    cli_import(dir.path(), "sensors", &csv);
    let store = open_store(dir.path());
    let get = |id: &str| store.get_feature(&layer("sensors"), id).unwrap().unwrap();
    let s = get("S1");
    assert_eq!(s.feature.values[0], riskmap::model::Value::Int(254));
    assert_eq!(
        s.feature.values[1],
        riskmap::model::Value::Text("R000001".into())
    );
    assert_eq!(
        s.feature.geometry,
        geo_types::Geometry::Point(geo_types::Point::new(106.5, 29.5))
    );
    for (id, text) in [("S2", "  R 1  "), ("S3", "  R 2 "), ("S4", "   ")] {
        assert_eq!(
            get(id).feature.values[1],
            riskmap::model::Value::Text(text.into()),
            "{id}"
        );
    }
}
