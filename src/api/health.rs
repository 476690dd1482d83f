//! `GET /health`: is it up, how much does it hold, is the store served whole.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use crate::app::App;

/// Unreadable rows listed one by one in `/health`, at most.
const UNREADABLE_SHOWN: usize = 20;

/// `status` is `degraded` when rows of the store cannot be served (skipped at start or
/// from the change feed: see `model::unreadable`): `unreadable_rows` counts them per
/// layer and `unreadable` shows the first few with their reasons.
pub async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    let mut layers = Map::new();
    let mut unreadable_rows = Map::new();
    let mut shown = Vec::new();
    let mut total = 0usize;
    let mut unreadable = 0usize;
    for l in app.layers() {
        let n = l.index.read().len();
        total += n;
        layers.insert(l.def.name.clone(), n.into());
        let u = l.unreadable.lock();
        unreadable += u.len();
        unreadable_rows.insert(l.def.name.clone(), u.len().into());
        for r in u.iter().take(UNREADABLE_SHOWN.saturating_sub(shown.len())) {
            shown.push(json!({"layer": l.def.name, "fid": r.fid, "id": r.id, "reason": r.reason}));
        }
    }
    Json(json!({
        "status": if unreadable == 0 { "ok" } else { "degraded" },
        "uptime_seconds": (app.uptime().as_secs_f64() * 10.0).round() / 10.0,
        "store": { "backend": "geopackage", "path": app.store_path().display().to_string() },
        "features": total,
        "layers": layers,
        "unreadable_rows": unreadable_rows,
        "unreadable": shown,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}
