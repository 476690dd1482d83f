//! Features, in the shape of OGC API – Features: `GET /collections/{layer}/items`
//! (bbox, paging) and Part 4 (Create, Replace, Update, Delete): `GET`, `PUT`, `PATCH`
//! (JSON merge patch) and `DELETE` on `/collections/{layer}/items/{id}`, `POST` on
//! `/collections/{layer}/items`. Writes need a key allowing `EditFeatures`, checked
//! before the body is read; `If-Match` with the feature's ETag guards against
//! overwriting someone else's edit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value as Json;

use super::error::ApiError;
use super::router::{MAX_BODY_BYTES, REQUEST_TIMEOUT};
use super::{auth, blocking, read_allowed};
use crate::app::{App, EditContext, etag};
use crate::model::{Action, Bbox, Feature, LayerDef, feature::id_of};
use crate::query::crs::{AxisBox, Crs};
use crate::store::StoredFeature;

/// Default and largest page of `GET /collections/{layer}/items`.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 10_000;

/// The origin links are made absolute with, and the `Vary` it implies.
#[derive(Clone, Debug)]
pub(super) struct Base {
    pub(super) origin: String,
    pub(super) vary: Option<&'static str>,
}

pub(super) fn base_of(app: &App, headers: &HeaderMap, uri: &Uri) -> Result<Base, ApiError> {
    let (origin, vary) = super::public_url::base_url(app, headers, uri)?;
    Ok(Base { origin, vary })
}

fn item_href(base: &Base, layer: &LayerDef, id: &str) -> String {
    format!(
        "{}/collections/{}/items/{}",
        base.origin,
        layer.name,
        percent_encode(id)
    )
}

fn feature_json(base: &Base, layer: &LayerDef, sf: &StoredFeature) -> Json {
    let mut doc = sf.feature.to_geojson(layer);
    doc["links"] = serde_json::json!([
        {"href": item_href(base, layer, &sf.feature.id), "rel": "self", "type": "application/geo+json"},
        {"href": format!("{}/collections/{}", base.origin, layer.name), "rel": "collection", "type": "application/json"},
    ]);
    doc
}

/// A feature's GeoJSON with its geometry in `crs` (OGC API – Features Part 2): wound as
/// RFC 7946 says in lon/lat, then transformed position by position, in the CRS's axis
/// order, rounded to the CRS's precision. A position the CRS cannot hold is refused
/// naming `crs` and the feature.
pub(super) fn feature_json_in(
    base: &Base,
    layer: &LayerDef,
    sf: &StoredFeature,
    crs: Crs,
) -> Result<Json, ApiError> {
    let mut doc = feature_json(base, layer, sf);
    if crs != Crs::CRS84 {
        let wound = crate::model::geometry::rfc7946_wound(&sf.feature.geometry);
        let mut g = crate::query::crs::to_crs(&wound, crs)
            .map_err(|e| ApiError::bad_request(format!("crs: feature {:?}: {e}", sf.feature.id)))?;
        crate::query::crs::round_coords(&mut g, crs);
        doc["geometry"] = serde_json::to_value(geojson::Geometry::from(&g))
            .map_err(|e| ApiError::internal("writing a geometry", e))?;
    }
    Ok(doc)
}

/// The CRS named by parameter `name` (`crs`, `bbox-crs`), CRS84 when absent.
pub(super) fn crs_param(params: &HashMap<String, String>, name: &str) -> Result<Crs, ApiError> {
    match params.get(name) {
        Some(t) => Crs::parse(name, t).map_err(crs_error),
        None => Ok(Crs::CRS84),
    }
}

/// A CRS error as an answer: 400 naming the parameter, or a server failure.
fn crs_error(e: crate::query::crs::CrsError) -> ApiError {
    match e.param() {
        Some(_) => ApiError::bad_request(e.to_string()),
        None => ApiError::internal("transforming coordinates", e),
    }
}

/// `Content-Crs` (OGC API – Features Part 2): the CRS of the answer's coordinates.
pub(super) fn content_crs(resp: &mut Response, crs: Crs) {
    if let Ok(v) = HeaderValue::from_str(&crs.content_crs_header()) {
        resp.headers_mut()
            .insert(HeaderName::from_static("content-crs"), v);
    }
}

fn feature_response(
    base: &Base,
    status: StatusCode,
    layer: &LayerDef,
    sf: &StoredFeature,
) -> Response {
    let mut resp = (status, feature_json(base, layer, sf).to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/geo+json"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag(layer, &sf.feature)) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::CREATED {
        if let Ok(v) = HeaderValue::from_str(&item_href(base, layer, &sf.feature.id)) {
            h.insert(header::LOCATION, v);
        }
    }
    if let Some(v) = base.vary {
        h.append(header::VARY, HeaderValue::from_static(v));
    }
    resp
}

/// Percent-encodes an id for a URL path segment (RFC 3986 unreserved kept).
pub(super) fn percent_encode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    percent_encode_into(&mut out, s);
    // Only ASCII was written.
    String::from_utf8(out).unwrap_or_default()
}

/// [`percent_encode`] appended to `out`: only unreserved ASCII and `%XX`, so nothing in
/// it needs escaping in JSON either.
pub(super) fn percent_encode_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

fn layer_of(app: &App, name: &str) -> Result<Arc<LayerDef>, ApiError> {
    app.layer(name)
        .map(|l| l.def.clone())
        .ok_or_else(|| ApiError::not_found(format!("no layer named {name:?}")))
}

/// `If-Match`, refused when present but unreadable (a write must not go ahead
/// unconditionally because its condition could not be parsed).
fn if_match(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| ApiError::bad_request("If-Match must be ASCII entity tags")),
    }
}

/// The content type, checked against `accepted` (before anything is read).
fn check_content_type(headers: &HeaderMap, accepted: &[&str]) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if accepted.contains(&mime.as_str()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("Content-Type must be one of {}", accepted.join(", ")),
        ))
    }
}

/// Reads a body (after the caller checked the key).
async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                format!("the body is larger than {MAX_BODY_BYTES} bytes or was cut off"),
            )
        })
}

/// Parses a JSON body: in the write's own task, off the async threads (a body of up to
/// MAX_BODY_BYTES takes a good fraction of a second).
fn parse_json(bytes: &[u8]) -> Result<Json, ApiError> {
    crate::model::json::from_slice_strict(bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// Bodies above this size are bulk work (`BULK_BODY_BYTES`: 1 MiB, a feature of tens
/// of thousands of vertices).
const BULK_BODY_BYTES: usize = 1 << 20;

/// Runs a write's parsing, validation, preparation and commit off the async threads: a
/// small one on the blocking pool at the normal priority, a large one (a body above
/// [`BULK_BODY_BYTES`]) on a thread of its own at the priority of bulk work
/// ([`crate::app::BACKGROUND_NICE`]). Its CPU-bound steps, which take no lock, run in
/// [`bulk_step`]s at idle priority, so that the seconds of CPU a feature of a million
/// vertices costs are taken from idle cycles, not from readers. There are at most as
/// many such threads as writes in progress (`--max-write-requests`).
async fn write_task<T: Send + 'static>(
    bulk: Bulk,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if !bulk.0 {
        return blocking(f).await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("riskmap-bulk-write".into())
        .spawn(move || {
            crate::app::lower_thread_priority(crate::app::BACKGROUND_NICE);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r);
        })
        .map_err(|e| ApiError::internal("starting a write", e))?;
    super::thread_result(rx, "a write").await
}

/// Whether a write is bulk work (its body is above [`BULK_BODY_BYTES`]).
#[derive(Clone, Copy)]
struct Bulk(bool);

impl Bulk {
    fn of(body: &[u8]) -> Bulk {
        Bulk(body.len() > BULK_BODY_BYTES)
    }
}

/// A CPU-bound step of a write that takes no lock (parsing, validating and deriving a
/// feature, encoding the answer): for bulk work on a thread at idle priority
/// ([`crate::app::on_idle_thread`]), otherwise in place.
fn bulk_step<T: Send>(bulk: Bulk, f: impl FnOnce() -> T + Send) -> T {
    if bulk.0 {
        crate::app::on_idle_thread("riskmap-bulk-step", f)
    } else {
        f()
    }
}

/// Checks the key (a store read) off the async threads.
async fn authorize(
    app: &Arc<App>,
    headers: &HeaderMap,
    action: Action,
) -> Result<String, ApiError> {
    let (a, h) = (app.clone(), headers.clone());
    blocking(move || auth::require(&a, &h, action).map(|k| k.actor())).await
}

/// Edits are abandoned before their commit once the client may have been told the
/// request timed out.
fn deadline() -> Option<Instant> {
    Some(Instant::now() + REQUEST_TIMEOUT.saturating_sub(Duration::from_secs(5)))
}

type Ids = Result<Path<(String, String)>, PathRejection>;

fn ids(p: Ids) -> Result<(String, String), ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

pub async fn get(
    State(app): State<Arc<App>>,
    path: Ids,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (layer, id) = ids(path)?;
    let base = base_of(&app, &headers, &uri)?;
    read_allowed(&app, &headers).await?;
    let params = geojson_params(uri.query())?;
    if let Some(k) = params.keys().find(|k| !matches!(k.as_str(), "crs" | "f")) {
        return Err(ApiError::bad_request(format!(
            "{k}: not a parameter of a single feature (crs, f)"
        )));
    }
    let crs = crs_param(&params, "crs")?;
    // Copying, hashing and encoding a feature is linear in its vertices (up to
    // `MAX_VERTICES`), and PROJ's first transformation on a thread takes a good part
    // of a second: off the async threads.
    blocking(move || {
        let state = app
            .layer(&layer)
            .ok_or_else(|| ApiError::not_found(format!("no layer named {layer:?}")))?;
        let sf =
            state.index.read().get(&id).ok_or_else(|| {
                ApiError::not_found(format!("layer {layer} has no feature {id:?}"))
            })?;
        // The ETag names the feature's version (what `If-Match` on an edit compares):
        // in another CRS the same version is another representation, so its tag is
        // weak (RFC 9110 §8.8.1), which `If-Match` never matches.
        let tag = match crs == Crs::CRS84 {
            true => etag(&state.def, &sf.feature),
            false => format!("W/{}", etag(&state.def, &sf.feature)),
        };
        // If-None-Match uses the weak comparison (RFC 9110 §13.1.2).
        let inm = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        if inm.is_some_and(|inm| {
            inm.split(',').map(str::trim).any(|t| {
                let opaque = |t: &str| t.strip_prefix("W/").unwrap_or(t).to_string();
                t == "*" || opaque(t) == opaque(&tag)
            })
        }) {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            if let Ok(v) = HeaderValue::from_str(&tag) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            return Ok(resp);
        }
        if crs == Crs::CRS84 {
            let mut resp = feature_response(&base, StatusCode::OK, &state.def, &sf);
            content_crs(&mut resp, crs);
            return Ok(resp);
        }
        let doc = feature_json_in(&base, &state.def, &sf, crs)?;
        let mut resp = doc.to_string().into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/geo+json"),
        );
        if let Ok(v) = HeaderValue::from_str(&tag) {
            h.insert(header::ETAG, v);
        }
        if let Some(v) = base.vary {
            h.append(header::VARY, HeaderValue::from_static(v));
        }
        content_crs(&mut resp, crs);
        Ok(resp)
    })
    .await
}

/// `GET /collections/{layer}/items?bbox=..&limit=..&offset=..&datetime=..`: features in
/// fid order, with `self`, `next` and `prev` links (absolute).
pub async fn list(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(layer) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let base = base_of(&app, &headers, &uri)?;
    read_allowed(&app, &headers).await?;
    let state = app
        .layer(&layer)
        .ok_or_else(|| ApiError::not_found(format!("no layer named {layer:?}")))?;
    let params = geojson_params(query.as_deref())?;
    let number = |name: &str, default: usize, max: usize| -> Result<usize, ApiError> {
        match params.get(name) {
            None => Ok(default),
            Some(t) => match t.parse::<usize>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "{name} must be an integer 0..={max}, got {t:?}"
                ))),
            },
        }
    };
    let limit = number("limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let offset = number("offset", 0, usize::MAX / 2)?;
    let crs = crs_param(&params, "crs")?;
    let bbox_crs = crs_param(&params, "bbox-crs")?;
    // A box in CRS84 is read here; in another CRS it is transformed (PROJ) off the
    // async threads, below.
    let (bbox, axis_box) = match params.get("bbox") {
        Some(b) if bbox_crs == Crs::CRS84 => (Some(parse_bbox_param(b)?), None),
        Some(b) => (None, Some(parse_axis_box(b)?)),
        None => (None, None),
    };
    if let Some(d) = params.get("datetime") {
        // No layer has a temporal property yet: a well-formed datetime selects every
        // feature (OGC API – Features 1.0, 7.15.4); a malformed one is refused.
        check_datetime(d)?;
    }
    let def = state.def.clone();
    // Parsing the filter (up to `Limits::max_bytes`, and PROJ's first transformation on
    // a thread takes some 0.4 s) and selecting and sorting a page (4.52 million sensors
    // without a bbox or a spatial filter): off the async threads, like the other
    // blocking work.
    let (a, name, b, p) = (app.clone(), layer.clone(), base.clone(), params.clone());
    let (features, matched) = blocking(move || {
        let state = a
            .layer(&name)
            .ok_or_else(|| ApiError::not_found(format!("no layer named {name:?}")))?;
        let def = &state.def;
        // A box in a projected CRS covers a region whose edges are curves in lon/lat:
        // the R-tree is searched with the box around it, and each candidate is kept if
        // it intersects the region's outline (a spatial filter like any other).
        let (bbox, outline) = match axis_box {
            Some(ab) => {
                let region =
                    crate::query::crs::bbox_from_crs("bbox", ab, bbox_crs).map_err(crs_error)?;
                (Some(region.bbox), region.outline)
            }
            None => (bbox, None),
        };
        let (query, selection) = items_query(def, &p, bbox, outline, limit, offset)?;
        let idx = state.index.read();
        let budget = crate::query::Budget::default();
        let page = crate::query::items::items(&idx, &query, &budget).map_err(work_error)?;
        let style = super::geojson_out::FeatureStyle::new(&b.origin, def, crs, &selection);
        let mut features = super::geojson_out::page_head(page.matched, page.slots.len());
        for (i, &s) in page.slots.iter().enumerate() {
            if i > 0 {
                features.push(b',');
            }
            super::geojson_out::feature(&mut features, &style, &idx, s, None)?;
        }
        Ok(((features, page.slots.len()), page.matched))
    })
    .await?;
    let (features, returned) = features;
    let items = format!("{}/collections/{}/items", base.origin, def.name);
    let with = |off: usize| {
        let mut q = vec![format!("limit={limit}"), format!("offset={off}")];
        // Every other parameter as given, in a stable order.
        let mut rest: Vec<(&String, &String)> = params
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "limit" | "offset"))
            .collect();
        rest.sort();
        for (key, v) in rest {
            q.push(format!("{}={}", query_encode(key), query_encode(v)));
        }
        format!("{items}?{}", q.join("&"))
    };
    let mut links = vec![
        serde_json::json!({"href": with(offset), "rel": "self", "type": "application/geo+json"}),
        serde_json::json!({"href": format!("{}/collections/{}", base.origin, def.name), "rel": "collection", "type": "application/json"}),
    ];
    // `next` only when it moves on: with `limit=0` a page is empty and the next one
    // would be this one again, a loop for clients that follow links.
    if returned > 0 && offset + returned < matched {
        links.push(serde_json::json!({"href": with(offset + returned), "rel": "next", "type": "application/geo+json"}));
    }
    if offset > 0 && limit > 0 {
        links.push(serde_json::json!({"href": with(offset.saturating_sub(limit)), "rel": "prev", "type": "application/geo+json"}));
    }
    let body = super::geojson_out::page_tail(features, &Json::Array(links));
    let mut resp = geojson_page(body, &headers).await?;
    if let Some(v) = base.vary {
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static(v));
    }
    content_crs(&mut resp, crs);
    Ok(resp)
}

/// Pages above this size are gzip-compressed for clients that accept it (a page of
/// 100 risk points is about 40 KB of GeoJSON, 6 KB gzipped).
const GZIP_FROM_BYTES: usize = 16 * 1024;

/// A page of features (written by `geojson_out`) as `application/geo+json`: above
/// [`GZIP_FROM_BYTES`] gzip-compressed when `Accept-Encoding` allows it, off the async
/// threads (a page of 10,000 features is megabytes; tower-http's compression layer
/// would compress it on them).
pub(super) async fn geojson_page(text: Vec<u8>, headers: &HeaderMap) -> Result<Response, ApiError> {
    let gzip = accepts_gzip(headers);
    // A small page is answered as it is, without a hand-off to a blocking thread.
    let (bytes, compressed) = if !gzip || text.len() < GZIP_FROM_BYTES {
        (text, false)
    } else {
        blocking(move || {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(text.len() / 4),
                flate2::Compression::fast(),
            );
            enc.write_all(&text)
                .and_then(|()| enc.finish())
                .map(|gz| (gz, true))
                .map_err(|e| ApiError::internal("compressing a page", e))
        })
        .await?
    };
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/geo+json"),
    );
    h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    if compressed {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(resp)
}

/// Whether `Accept-Encoding` lists gzip (or `*`) with a weight above 0 (RFC 9110 §12.5.3).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .and_then(|q| q.trim().parse::<f64>().ok())
                .unwrap_or(1.0);
            (coding == "gzip" || coding == "x-gzip" || coding == "*") && q > 0.0
        })
}

/// The parameters `items` defines itself; any other names a property (`property=value`).
const ITEMS_PARAMETERS: [&str; 13] = [
    "bbox",
    "bbox-crs",
    "crs",
    "datetime",
    "f",
    "filter",
    "filter-crs",
    "filter-lang",
    "limit",
    "offset",
    "properties",
    "skipGeometry",
    "sortby",
];

/// A query that needed more work than one request may do: 400, saying what to narrow.
pub(super) fn work_error(e: crate::query::WorkExceeded) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "QueryTooExpensive", e.to_string())
}

fn filter_error(e: crate::query::filter::FilterError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// What of each feature a page shows: `properties` (all when `None`) and
/// `skipGeometry`.
pub(super) struct Selection {
    pub properties: Option<crate::query::filter::PropertySelection>,
    pub skip_geometry: bool,
}

/// The query of an `items` request as a value (`query::items`), and which properties
/// to return: `filter` (CQL2 text or JSON per `filter-lang`, its geometries in
/// `filter-crs`), `property=value` on declared properties, `sortby`, `properties`,
/// `skipGeometry`.
pub(super) fn items_query(
    def: &LayerDef,
    params: &HashMap<String, String>,
    bbox: Option<Bbox>,
    outline: Option<geo_types::Geometry>,
    limit: usize,
    offset: usize,
) -> Result<(crate::query::items::ItemsQuery, Selection), ApiError> {
    use crate::query::crs::{Crs, from_crs};
    use crate::query::filter::{Filter, FilterLang, Limits, PropertySelection, SortBy};
    let lang = match params.get("filter-lang") {
        Some(v) => FilterLang::parse(v).map_err(filter_error)?,
        None => FilterLang::Cql2Text,
    };
    let crs = match params.get("filter-crs") {
        Some(t) => Crs::parse("filter-crs", t).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => Crs::CRS84,
    };
    let limits = Limits {
        lonlat_literals: crs == Crs::CRS84,
        ..Limits::default()
    };
    let mut filter = match params.get("filter") {
        Some(f) => Filter::parse(f, lang, def, &limits).map_err(filter_error)?,
        None => Filter::Const(true),
    };
    if crs != Crs::CRS84 {
        // Literals in `filter-crs` (EPSG:4326 is latitude first, Gauss–Krüger northing
        // first) to lon/lat through PROJ, each position checked against the CRS's domain.
        filter
            .try_map_geometries(&mut |g| {
                *g = from_crs("filter", g, crs).map_err(|e| e.to_string())?;
                crate::query::filter::check_literal_geometry(g)
                    .map_err(|e| format!("parameter 'filter': {e}"))
            })
            .map_err(ApiError::bad_request)?;
    }
    let simple: Vec<(&String, &String)> = params
        .iter()
        .filter(|(k, _)| !ITEMS_PARAMETERS.contains(&k.as_str()))
        .collect();
    let by_value = Filter::from_params(&simple, def).map_err(filter_error)?;
    let sort = match params.get("sortby") {
        Some(t) => SortBy::parse(t, def).map_err(filter_error)?,
        None => SortBy::default(),
    };
    let selection = match params.get("properties") {
        Some(t) => Some(PropertySelection::parse(t, def).map_err(filter_error)?),
        None => None,
    };
    let skip_geometry = match params.get("skipGeometry").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "skipGeometry must be true or false; got {v:?}"
            )));
        }
    };
    let selection = Selection {
        properties: selection,
        skip_geometry,
    };
    Ok((
        crate::query::items::ItemsQuery {
            bbox,
            filter: Filter::all([
                filter,
                by_value,
                match outline {
                    Some(geometry) => Filter::Spatial {
                        op: crate::query::filter::SpatialOp::Intersects,
                        geometry,
                    },
                    None => Filter::Const(true),
                },
            ]),
            sort,
            limit,
            offset,
        },
        selection,
    ))
}

/// `bbox` of four numbers, or six (OGC API – Features: minimum and maximum heights
/// between; the store is 2-D, so the heights are checked as numbers and not used).
/// `bbox` given in another CRS (`bbox-crs`): its lower and upper corners in the CRS's
/// axis order; heights of 6 numbers are checked and dropped.
fn parse_axis_box(b: &str) -> Result<AxisBox, ApiError> {
    let four = bbox_corners(b)?;
    let mut n = [0.0; 4];
    for (i, t) in four.split(',').enumerate() {
        n[i] = t
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "bbox: number {} {t:?} is not a finite number",
                    i + 1
                ))
            })?;
    }
    Ok(AxisBox {
        lower: [n[0], n[1]],
        upper: [n[2], n[3]],
    })
}

fn parse_bbox_param(b: &str) -> Result<Bbox, ApiError> {
    let four = bbox_corners(b)?;
    Bbox::parse(&four).map_err(|e| ApiError::bad_request(format!("bbox: {e}")))
}

/// The four horizontal numbers of `bbox` (4 numbers, or 6 with heights), as text.
fn bbox_corners(b: &str) -> Result<String, ApiError> {
    let parts: Vec<&str> = b.split(',').collect();
    let four = match parts.len() {
        4 => b.to_string(),
        6 => {
            for (i, z) in [parts[2], parts[5]].iter().enumerate() {
                if !z.trim().parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(ApiError::bad_request(format!(
                        "bbox: height {} {z:?} is not a finite number",
                        if i == 0 { "minimum" } else { "maximum" }
                    )));
                }
            }
            [parts[0], parts[1], parts[3], parts[4]].join(",")
        }
        n => {
            return Err(ApiError::bad_request(format!(
                "bbox: 4 numbers (min lon, min lat, max lon, max lat) or 6 (with heights), got {n}"
            )));
        }
    };
    Ok(four)
}

/// Checks `datetime` as OGC API – Features says: an RFC 3339 date-time or date, or an
/// interval `start/end` where either end may be `..` or empty (open), not both.
fn check_datetime(d: &str) -> Result<(), ApiError> {
    let one = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_ok()
            || time::Date::parse(t, time::macros::format_description!("[year]-[month]-[day]"))
                .is_ok()
    };
    let ok = match d.split_once('/') {
        None => one(d),
        Some((a, b)) => {
            let open = |t: &str| t.is_empty() || t == "..";
            !(open(a) && open(b)) && (open(a) || one(a)) && (open(b) || one(b)) && !b.contains('/')
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "datetime: {d:?} is not an RFC 3339 date-time or date, nor an interval of them (start/end, `..` for an open end)"
        )))
    }
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved and `,` `:` kept).
pub(super) fn query_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The query parameters of a request answered in GeoJSON: parsed, and `f` (if given)
/// checked to be `json` or `geojson`.
pub(super) fn geojson_params(query: Option<&str>) -> Result<HashMap<String, String>, ApiError> {
    let params = match query {
        Some(q) => serde_urlencoded_pairs(q)?,
        None => HashMap::new(),
    };
    match params.get("f").map(String::as_str) {
        None | Some("json" | "geojson") => Ok(params),
        Some(f) => Err(ApiError::bad_request(format!(
            "f: {f:?} is not offered here (json)"
        ))),
    }
}

/// Parses `a=1&b=2` (percent-decoded), refusing repeated keys.
pub(super) fn serde_urlencoded_pairs(q: &str) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_decode(&s.replace('+', " "))
                .ok_or_else(|| ApiError::bad_request(format!("bad percent-encoding in {s:?}")))
        };
        if out.insert(dec(k)?, dec(v)?).is_some() {
            return Err(ApiError::bad_request(format!(
                "query parameter {k:?} is repeated"
            )));
        }
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub async fn create(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(layer) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let base = base_of(&app, &headers, &uri)?;
    let def = layer_of(&app, &layer)?;
    let actor = authorize(&app, &headers, Action::EditFeatures).await?;
    check_content_type(&headers, &["application/geo+json", "application/json"])?;
    let bytes = read_body(body).await?;
    let bulk = Bulk::of(&bytes);
    write_task(bulk, move || {
        let prepared = bulk_step(bulk, || {
            let mut doc = parse_json(&bytes)?;
            // The server names features that come without an id.
            if id_of(&def, &doc)
                .map_err(|e| ApiError::unprocessable(e.to_string()))?
                .is_none()
            {
                if let Some(o) = doc.as_object_mut() {
                    o.insert("id".into(), uuid::Uuid::new_v4().to_string().into());
                }
            }
            let feature = Feature::from_geojson(&def, &doc)
                .map_err(|e| ApiError::unprocessable(e.to_string()))?;
            Ok::<_, ApiError>(app.prepare(&layer, feature)?)
        })?;
        let ctx = EditContext {
            actor: &actor,
            if_match: None,
            deadline: deadline(),
        };
        let sf = app.create_prepared(ctx, &layer, prepared)?;
        Ok(bulk_step(bulk, || {
            feature_response(&base, StatusCode::CREATED, &def, &sf)
        }))
    })
    .await
}

pub async fn replace(
    State(app): State<Arc<App>>,
    path: Ids,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (layer, id) = ids(path)?;
    let base = base_of(&app, &headers, &uri)?;
    let def = layer_of(&app, &layer)?;
    let actor = authorize(&app, &headers, Action::EditFeatures).await?;
    let cond = if_match(&headers)?;
    check_content_type(&headers, &["application/geo+json", "application/json"])?;
    let bytes = read_body(body).await?;
    let bulk = Bulk::of(&bytes);
    write_task(bulk, move || {
        let prepared = bulk_step(bulk, || {
            let mut doc = parse_json(&bytes)?;
            match id_of(&def, &doc).map_err(|e| ApiError::unprocessable(e.to_string()))? {
                Some(body_id) if body_id != id => {
                    return Err(ApiError::unprocessable(format!(
                        "field 'id': the body's id {body_id:?} differs from the URL's {id:?}"
                    )));
                }
                _ => {}
            }
            if let Some(o) = doc.as_object_mut() {
                o.insert("id".into(), id.clone().into());
            }
            let feature = Feature::from_geojson(&def, &doc)
                .map_err(|e| ApiError::unprocessable(e.to_string()))?;
            Ok(app.prepare(&layer, feature)?)
        })?;
        let ctx = EditContext {
            actor: &actor,
            if_match: cond.as_deref(),
            deadline: deadline(),
        };
        let sf = app.replace_prepared(ctx, &layer, prepared)?;
        Ok(bulk_step(bulk, || {
            feature_response(&base, StatusCode::OK, &def, &sf)
        }))
    })
    .await
}

pub async fn patch(
    State(app): State<Arc<App>>,
    path: Ids,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (layer, id) = ids(path)?;
    let base = base_of(&app, &headers, &uri)?;
    let def = layer_of(&app, &layer)?;
    let actor = authorize(&app, &headers, Action::EditFeatures).await?;
    let cond = if_match(&headers)?;
    check_content_type(
        &headers,
        &["application/merge-patch+json", "application/json"],
    )?;
    let bytes = read_body(body).await?;
    let bulk = Bulk::of(&bytes);
    write_task(bulk, move || {
        let doc = bulk_step(bulk, || parse_json(&bytes))?;
        let ctx = EditContext {
            actor: &actor,
            if_match: cond.as_deref(),
            deadline: deadline(),
        };
        let sf = app.patch(ctx, &layer, &id, &doc)?;
        Ok(bulk_step(bulk, || {
            feature_response(&base, StatusCode::OK, &def, &sf)
        }))
    })
    .await
}

pub async fn delete(
    State(app): State<Arc<App>>,
    path: Ids,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (layer, id) = ids(path)?;
    layer_of(&app, &layer)?;
    let actor = authorize(&app, &headers, Action::EditFeatures).await?;
    let cond = if_match(&headers)?;
    blocking(move || {
        let ctx = EditContext {
            actor: &actor,
            if_match: cond.as_deref(),
            deadline: deadline(),
        };
        app.delete(ctx, &layer, &id)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}
