//! Readers never wait on writers (issue 7, ARCHITECTURE.md points 2 and 3), shown
//! structurally: a writer is held at a point of its work by [`App::set_pause`] while
//! reads run to completion, and the held writer is checked to be still unfinished
//! after them. No timing is asserted.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use riskmap::app::{App, EditContext, EditError, Pause, PauseFn};
use riskmap::model::Feature;
use riskmap::tiles::TileCoord;
use serde_json::{Value, json};

/// A pause that says "reached" once and then waits for "go".
fn gate() -> (PauseFn, Receiver<()>, Sender<()>) {
    let (reached_tx, reached_rx) = channel();
    let (go_tx, go_rx) = channel::<()>();
    let (reached_tx, go_rx) = (Mutex::new(reached_tx), Mutex::new(go_rx));
    let f: PauseFn = Arc::new(move || {
        let _ = reached_tx.lock().unwrap().send(());
        let _ = go_rx.lock().unwrap().recv();
    });
    (f, reached_rx, go_tx)
}

fn feature(app: &App, layer: &str, doc: &Value) -> Feature {
    Feature::from_geojson(&app.layer(layer).unwrap().def, doc).unwrap()
}

fn ctx() -> EditContext<'static> {
    EditContext {
        actor: "test",
        ..Default::default()
    }
}

/// Every kind of read, through the router: an item, a page, a tile, the catalogue
/// and health. Returns their statuses.
async fn read_everything(app: &Arc<App>) -> Vec<(String, StatusCode)> {
    let t = TileCoord::of_lonlat(106.55, 29.56, 14).unwrap();
    let mut out = Vec::new();
    for uri in [
        "/collections/risk_points/items/R1".to_string(),
        "/collections/risk_points/items?limit=10".to_string(),
        format!("/tiles/risk_points,sensors/{}/{}/{}.mvt", t.z, t.x, t.y),
        "/collections".to_string(),
        "/health".to_string(),
    ] {
        let (status, _) = http_get(app, &uri).await;
        out.push((uri, status));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_complete_while_a_writer_is_held_mid_commit() {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    app.create(
        ctx(),
        "risk_points",
        feature(&app, "risk_points", &risk_point("R1", 106.55, 29.56, "II")),
    )
    .unwrap();
    let (pause, reached, go) = gate();
    app.set_pause(Pause::BeforeCommit, Some(pause));
    let writer = {
        let app = app.clone();
        let f = feature(&app, "risk_points", &risk_point("R2", 106.551, 29.561, "I"));
        std::thread::spawn(move || app.create(ctx(), "risk_points", f))
    };
    // The writer holds the writers' lock and SQLite's write lock, its transaction
    // written and not committed.
    reached.recv().unwrap();
    for (uri, status) in read_everything(&app).await {
        assert!(
            status == StatusCode::OK || status == StatusCode::NO_CONTENT,
            "{uri}: {status}"
        );
    }
    let (status, _) = http_get(&app, "/collections/risk_points/items/R2").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not committed, not shown");
    assert!(
        !writer.is_finished(),
        "the reads completed while the writer was held mid-commit"
    );
    app.set_pause(Pause::BeforeCommit, None);
    go.send(()).unwrap();
    writer.join().unwrap().unwrap();
    let (status, _) = http_get(&app, "/collections/risk_points/items/R2").await;
    assert_eq!(status, StatusCode::OK, "acknowledged, so served");
    assert_eq!(
        app.follow_changes().unwrap(),
        0,
        "the server's own writes are applied once, not again from the change feed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_past_its_deadline_is_abandoned_before_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    // The writer is held at its commit until its deadline has passed.
    let deadline = Instant::now() + Duration::from_millis(20);
    app.set_pause(
        Pause::BeforeCommit,
        Some(Arc::new(move || {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            std::thread::sleep(Duration::from_millis(1));
        })),
    );
    let f = feature(&app, "risk_points", &risk_point("R9", 106.5, 29.5, "I"));
    let r = app.create(
        EditContext {
            actor: "test",
            deadline: Some(deadline),
            ..Default::default()
        },
        "risk_points",
        f.clone(),
    );
    assert!(matches!(r, Err(EditError::TimedOut)), "{r:?}");
    assert_eq!(
        sqlite_count(dir.path(), "risk_points"),
        0,
        "nothing written"
    );
    assert_eq!(
        sqlite_audit_count(dir.path(), "create"),
        0,
        "nothing audited"
    );
    // Without a deadline the same edit lands; once committed it is a success.
    app.set_pause(Pause::BeforeCommit, None);
    app.create(ctx(), "risk_points", f).unwrap();
    assert_eq!(sqlite_count(dir.path(), "risk_points"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_is_built_beside_the_live_layer_and_keeps_edits_made_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    // The old state: a few hundred points, cached in tiles.
    let old: Vec<Value> = (0..300)
        .map(|i| risk_point(&format!("P{i}"), 106.5 + i as f64 * 1e-4, 29.5, "IV"))
        .collect();
    std::fs::write(dir.path().join("old.geojson"), collection(old)).unwrap();
    cli_import(dir.path(), "risk_points", &dir.path().join("old.geojson"));
    app.follow_changes().unwrap();
    let t = TileCoord::of_lonlat(106.51, 29.5, 12).unwrap();
    let tile_uri = format!("/tiles/risk_points/{}/{}/{}.mvt", t.z, t.x, t.y);
    let (status, old_tile) = http_get(&app, &tile_uri).await;
    assert_eq!(status, StatusCode::OK);

    // Another process re-imports more than the change list holds: a reload.
    let n = riskmap::ingest::CHANGE_LIST_LIMIT + 10;
    let new: Vec<Value> = (0..n)
        .map(|i| risk_point(&format!("P{i}"), 106.5 + (i % 300) as f64 * 1e-4, 29.5, "I"))
        .collect();
    std::fs::write(dir.path().join("new.geojson"), collection(new)).unwrap();
    cli_import(dir.path(), "risk_points", &dir.path().join("new.geojson"));

    let (pause, reached, go) = gate();
    app.set_pause(Pause::ReloadBuilt, Some(pause));
    let follower = {
        let app = app.clone();
        std::thread::spawn(move || app.follow_changes())
    };
    // The new layer is built and held before the swap.
    reached.recv().unwrap();
    let len = |app: &App| app.layer("risk_points").unwrap().index.read().len();
    assert_eq!(len(&app), 300, "readers see the whole old layer meanwhile");
    let (status, during) = http_get(&app, &tile_uri).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(during, old_tile, "the old state, whole, not half an import");
    for (uri, status) in read_everything(&app).await {
        assert!(
            status == StatusCode::OK || status == StatusCode::NO_CONTENT || uri.contains("/R1"),
            "{uri}: {status}"
        );
    }
    // This server's own edit during the rebuild lands at once (edits do not wait for
    // reloads either) ...
    app.create(
        ctx(),
        "risk_points",
        feature(&app, "risk_points", &risk_point("MINE", 106.52, 29.5, "I")),
    )
    .unwrap();
    assert_eq!(len(&app), 301);
    assert!(
        !follower.is_finished(),
        "all of it while the reload was held"
    );
    app.set_pause(Pause::ReloadBuilt, None);
    go.send(()).unwrap();
    follower.join().unwrap().unwrap();
    // ... and survives the swap: the rebuilt layer was read before it was committed.
    assert_eq!(len(&app), n + 1);
    let (status, _) = http_get(&app, "/collections/risk_points/items/MINE").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an acknowledged edit never goes missing"
    );
    let (status, after) = http_get(&app, &tile_uri).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(after, old_tile, "the import is served once swapped in");
    let doc = http_json(&app, "/collections/risk_points/items/P7").await;
    assert_eq!(doc["properties"]["level"], json!("I"));
    assert_eq!(app.follow_changes().unwrap(), 0);
}
