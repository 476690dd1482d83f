//! `GET /health`: is it up, how much does it hold.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use crate::app::App;

pub async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    let mut layers = Map::new();
    let mut total = 0usize;
    for l in app.layers() {
        let n = l.index.read().len();
        total += n;
        layers.insert(l.def.name.clone(), n.into());
    }
    Json(json!({
        "status": "ok",
        "uptime_seconds": (app.uptime().as_secs_f64() * 10.0).round() / 10.0,
        "store": { "backend": "geopackage", "path": app.store_path().display().to_string() },
        "features": total,
        "layers": layers,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}
