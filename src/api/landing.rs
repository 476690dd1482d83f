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

/// Conformance classes implemented: OGC API – Features Part 1 core (landing page,
/// conformance, collections, items with bbox and paging, one item) and GeoJSON; Part 3
/// queryables, `property=value` filters, `filter` on items; CQL2 text and JSON with the
/// basic language, advanced comparisons (`LIKE`, `BETWEEN`, `IN`), case- and
/// accent-insensitive comparison, and `S_INTERSECTS` on every literal geometry type
/// (with `S_WITHIN`, `S_CONTAINS` and `S_DWITHIN` in metres, geodesic, though not the
/// rest of CQL2's spatial-functions class). Only what `query::filter` evaluates is claimed.
pub const CONFORMANCE: [&str; 14] = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/case-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/accent-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
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
