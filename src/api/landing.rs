//! `GET /`: the entry points.

use axum::Json;
use serde_json::{Value, json};

pub async fn landing() -> Json<Value> {
    Json(json!({
        "title": "riskmap",
        "description": "A city's risk points, pipelines and sensors on one map.",
        "links": [
            {"href": "/collections", "rel": "data", "type": "application/json", "title": "Layers"},
            {"href": "/health", "rel": "service-status", "type": "application/json", "title": "Health"},
            {"href": "/metrics", "rel": "monitor", "type": "text/plain", "title": "Prometheus metrics"},
        ],
    }))
}
