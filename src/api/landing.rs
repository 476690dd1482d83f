//! `GET /`: the entry points, and `GET /conformance`: the OGC API – Features
//! conformance classes the server implements. Links are absolute (OGC API clients such
//! as GDAL's OGCAPI driver resolve nothing relative), from `--public-url` or the
//! request's host (see `public_url.rs`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use crate::app::App;

/// OGC API – Features Part 1 classes implemented: the core (landing page, conformance,
/// collections, items with bbox and paging, one item) and GeoJSON encoding.
pub const CONFORMANCE: [&str; 2] = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
];

/// A JSON answer whose links name the request's host: `Vary` says so.
pub fn json_with_vary(body: Value, vary: Option<&'static str>) -> Response {
    let mut resp = axum::Json(body).into_response();
    if let Some(v) = vary {
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static(v));
    }
    resp
}

pub async fn landing(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (base, vary) = super::public_url::base_url(&app, &headers, &uri)?;
    Ok(json_with_vary(
        json!({
            "title": "riskmap",
            "description": "A city's risk points, pipelines and sensors on one map.",
            "links": [
                {"href": format!("{base}/"), "rel": "self", "type": "application/json", "title": "This document"},
                {"href": format!("{base}/conformance"), "rel": "conformance", "type": "application/json", "title": "Conformance classes"},
                {"href": format!("{base}/collections"), "rel": "data", "type": "application/json", "title": "Layers"},
                {"href": format!("{base}/health"), "rel": "service-status", "type": "application/json", "title": "Health"},
                {"href": format!("{base}/metrics"), "rel": "monitor", "type": "text/plain", "title": "Prometheus metrics"},
            ],
        }),
        vary,
    ))
}

pub async fn conformance() -> axum::Json<Value> {
    axum::Json(json!({ "conformsTo": CONFORMANCE }))
}
