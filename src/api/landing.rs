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
/// conformance, collections, items with bbox and paging, one item), GeoJSON and
/// OpenAPI 3.0 (`/api`); Part 2 (`crs`, `bbox-crs`, `Content-Crs`, each collection's
/// `crs` and `storageCrs`); Part 3
/// queryables, `property=value` filters, `filter` on items; CQL2 text and JSON with the
/// basic language, advanced comparisons (`LIKE`, `BETWEEN`, `IN`), case- and
/// accent-insensitive comparison, and `S_INTERSECTS` on every literal geometry type
/// (with `S_WITHIN`, `S_CONTAINS` and `S_DWITHIN` in metres, geodesic, though not the
/// rest of CQL2's spatial-functions class). Only what `query::filter` evaluates is claimed.
pub const CONFORMANCE: [&str; 16] = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
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
                {"href": format!("{base}/api"), "rel": "service-desc", "type": super::openapi::OPENAPI_JSON, "title": "The API definition (OpenAPI 3.0)"},
                {"href": format!("{base}/api.html"), "rel": "service-doc", "type": "text/html", "title": "The API documentation"},
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

/// `GET /api`: the OpenAPI 3.0 document of the server as it runs; `GET /api.html` (or
/// `/api?f=html`) the same as an HTML page.
pub async fn api(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (base, vary) = super::public_url::base_url(&app, &headers, &uri)?;
    let html = match uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("f="))
    {
        None | Some("json") => uri.path().ends_with(".html"),
        Some("html") => true,
        Some(f) => {
            return Err(ApiError::bad_request(format!(
                "f: {f:?} is not offered here (json, html)"
            )));
        }
    };
    let doc = super::openapi::document(&api_facts(&app, &base));
    let (body, content_type) = if html {
        (super::openapi::html_page(&doc), "text/html; charset=utf-8")
    } else {
        let text = doc
            .to_json()
            .map_err(|e| ApiError::internal("writing the OpenAPI document", e))?;
        (text, super::openapi::OPENAPI_JSON)
    };
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(v) = vary {
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static(v));
    }
    Ok(resp)
}

/// What the OpenAPI document says of this server.
pub fn api_facts<'a>(app: &'a App, base: &'a str) -> super::openapi::ApiFacts<'a> {
    super::openapi::ApiFacts {
        base,
        layers: app.layers().iter().map(|l| l.def.clone()).collect(),
        public_reads: app.public_reads(),
        default_limit: super::items::DEFAULT_LIMIT,
        max_limit: super::items::MAX_LIMIT,
        max_body_bytes: super::router::MAX_BODY_BYTES,
        max_zoom: crate::tiles::MAX_ZOOM,
        max_layers_per_tile: crate::tiles::MAX_LAYERS_PER_TILE,
    }
}
