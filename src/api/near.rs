//! Planners' distance queries (issue 8), in geodesic metres to the nearest point of each
//! geometry (`query::near`), each feature with `distance_m` among its properties,
//! nearest first (ties in fid order):
//! - `GET /collections/{layer}/within?lon=&lat=&radius_m=`,
//! - `GET /collections/{layer}/nearest?lon=&lat=&k=`,
//! - `POST /collections/{layer}/intersects?buffer_m=` with a GeoJSON geometry,
//! - `GET /collections/{layer}/corridor?along=LAYER/ID&distance_m=`.
//!
//! Each combines with `filter` (CQL2), `property=value`, `properties` and `crs`, and all
//! but `nearest` page with `limit`/`offset`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use geo_types::{Coord, Geometry};
use serde_json::{Value as Json, json};

use super::error::ApiError;
use super::items::{
    DEFAULT_LIMIT, MAX_LIMIT, base_of, content_crs, crs_param, feature_json_in, geojson_params,
    items_query, query_encode,
};
use super::{blocking, read_allowed};
use crate::app::App;
use crate::query::near::{self, AroundQuery, Hit, NearestQuery, WithinQuery};

/// Which query: its own parameters, and whether it pages.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Within,
    Nearest,
    Intersects,
    Corridor,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Within => "within",
            Kind::Nearest => "nearest",
            Kind::Intersects => "intersects",
            Kind::Corridor => "corridor",
        }
    }

    /// Its own parameters, besides those it shares with `items` (`filter`,
    /// `filter-lang`, `filter-crs`, `properties`, `crs`, `f`, `property=value`).
    fn own(self) -> &'static [&'static str] {
        match self {
            Kind::Within => &["lon", "lat", "radius_m", "limit", "offset"],
            Kind::Nearest => &["lon", "lat", "k"],
            Kind::Intersects => &["buffer_m", "limit", "offset"],
            Kind::Corridor => &["along", "distance_m", "limit", "offset"],
        }
    }
}

/// `items` parameters these queries do not take: their order is by distance, and their
/// region is the radius.
const NOT_HERE: [&str; 6] = ["bbox", "bbox-crs", "sortby", "datetime", "limit", "offset"];

/// Largest body of `intersects`: a GeoJSON geometry of up to `filter::Limits`'
/// `max_vertices` (10,000) positions fits in well under this.
const MAX_GEOMETRY_BODY: usize = 1 << 20;

/// What a query is about, once its parameters are read.
enum Spec {
    Within {
        center: Coord,
        radius_m: f64,
    },
    Nearest {
        center: Coord,
        k: usize,
    },
    /// `intersects` (its geometry) or `corridor` (another feature's, found when run).
    Around {
        geometry: Option<Geometry>,
        along: Option<(String, String)>,
        distance_m: f64,
    },
}

pub async fn within(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    run(Kind::Within, app, path, query, uri, headers, None).await
}

pub async fn nearest(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    run(Kind::Nearest, app, path, query, uri, headers, None).await
}

pub async fn corridor(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    run(Kind::Corridor, app, path, query, uri, headers, None).await
}

/// `POST /collections/{layer}/intersects?buffer_m=`: the body is a GeoJSON geometry (or
/// a Feature, whose geometry is taken), WGS84 lon/lat.
pub async fn intersects(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    // The key first (when reads need one): no body is read for a client without it.
    read_allowed(&app, &headers).await?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !matches!(
        essence.as_str(),
        "application/geo+json" | "application/json"
    ) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "Content-Type must be application/geo+json or application/json (a GeoJSON geometry)",
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_GEOMETRY_BODY)
        .await
        .map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                format!("the body is larger than {MAX_GEOMETRY_BODY} bytes or was cut off"),
            )
        })?;
    let geometry = blocking(move || body_geometry(&bytes)).await?;
    run(
        Kind::Intersects,
        app,
        path,
        query,
        uri,
        headers,
        Some(geometry),
    )
    .await
}

/// The geometry of an `intersects` body: GeoJSON Point, LineString, Polygon or their
/// Multi forms (or a Feature with one), at most `filter::Limits`' `max_vertices`
/// positions, every one a WGS84 position.
fn body_geometry(bytes: &[u8]) -> Result<Geometry, ApiError> {
    let bad = |m: String| ApiError::bad_request(format!("body: {m}"));
    let doc: Json = crate::model::json::from_slice_strict(bytes)
        .map_err(|e| bad(format!("malformed JSON: {e}")))?;
    let g = match doc.get("type").and_then(Json::as_str) {
        Some("Feature") => doc.get("geometry").cloned().unwrap_or(Json::Null),
        _ => doc,
    };
    let gj: geojson::Geometry =
        serde_json::from_value(g).map_err(|e| bad(format!("not a GeoJSON geometry: {e}")))?;
    if matches!(gj.value, geojson::GeometryValue::GeometryCollection { .. }) {
        return Err(bad(
            "a GeometryCollection is not accepted; send one geometry".into(),
        ));
    }
    let geometry = Geometry::try_from(gj).map_err(|e| bad(format!("not a geometry: {e}")))?;
    let max = crate::query::filter::Limits::default().max_vertices;
    let n = geo::CoordsIter::coords_count(&geometry);
    if n == 0 {
        return Err(bad("the geometry is empty".into()));
    }
    if n > max {
        return Err(bad(format!("{n} positions; at most {max}")));
    }
    crate::query::geodesic::check_geometry(&geometry, "body")
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(geometry)
}

/// A query's refusal: 400 naming the parameter, or saying what to narrow.
fn near_error(e: near::NearError) -> ApiError {
    match e {
        near::NearError::Work(w) => super::items::work_error(w),
        e => ApiError::bad_request(e.to_string()),
    }
}

fn number<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &str,
    what: &str,
) -> Result<Option<T>, ApiError> {
    match params.get(name) {
        None => Ok(None),
        Some(t) => t
            .trim()
            .parse::<T>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("{name}: {t:?} is not {what}"))),
    }
}

fn required<T>(v: Option<T>, name: &str, what: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| ApiError::bad_request(format!("{name}: required ({what})")))
}

async fn run(
    kind: Kind,
    app: Arc<App>,
    path: Result<Path<String>, PathRejection>,
    query: Option<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Geometry>,
) -> Result<Response, ApiError> {
    let Path(layer) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let base = base_of(&app, &headers, &uri)?;
    read_allowed(&app, &headers).await?;
    let state = app
        .layer(&layer)
        .ok_or_else(|| ApiError::not_found(format!("no layer named {layer:?}")))?;
    let def = state.def.clone();
    let params = geojson_params(query.as_deref())?;
    for p in NOT_HERE {
        if params.contains_key(p) && !kind.own().contains(&p) {
            return Err(ApiError::bad_request(format!(
                "{p}: not a parameter of {} (results are ordered by distance)",
                kind.name()
            )));
        }
    }
    let crs = crs_param(&params, "crs")?;
    // What is left is what `items` reads: the filter, property=value, properties.
    let shared: HashMap<String, String> = params
        .iter()
        .filter(|(k, _)| !kind.own().contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let center = || -> Result<Coord, ApiError> {
        let lon = required(
            number::<f64>(&params, "lon", "a longitude")?,
            "lon",
            "degrees, WGS84",
        )?;
        let lat = required(
            number::<f64>(&params, "lat", "a latitude")?,
            "lat",
            "degrees, WGS84",
        )?;
        Ok(Coord { x: lon, y: lat })
    };
    let distance = |name: &'static str| -> Result<f64, ApiError> {
        let d = number::<f64>(&params, name, "a number of metres")?.unwrap_or(0.0);
        if !(0.0..=near::MAX_RADIUS_M).contains(&d) {
            return Err(ApiError::bad_request(format!(
                "{name} must be at least 0 and at most {} m; got {d}",
                near::MAX_RADIUS_M
            )));
        }
        Ok(d)
    };
    let (limit, offset) = match kind {
        Kind::Nearest => (0, 0),
        _ => {
            let limit = number::<usize>(&params, "limit", "an integer")?.unwrap_or(DEFAULT_LIMIT);
            if limit > MAX_LIMIT {
                return Err(ApiError::bad_request(format!(
                    "limit must be an integer 0..={MAX_LIMIT}, got {limit}"
                )));
            }
            (
                limit,
                number::<usize>(&params, "offset", "an integer")?.unwrap_or(0),
            )
        }
    };
    let spec = match kind {
        Kind::Within => {
            let center = center()?;
            let radius_m = required(
                number::<f64>(&params, "radius_m", "a number of metres")?,
                "radius_m",
                "metres",
            )?;
            near::check(center, Some(radius_m))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            Spec::Within { center, radius_m }
        }
        Kind::Nearest => {
            let center = center()?;
            let k = required(
                number::<usize>(&params, "k", "an integer")?,
                "k",
                "how many, 1 to 1000",
            )?;
            near::check(center, None).map_err(|e| ApiError::bad_request(e.to_string()))?;
            if k == 0 || k > near::MAX_K {
                return Err(ApiError::bad_request(format!(
                    "k must be 1 to {}; got {k}",
                    near::MAX_K
                )));
            }
            Spec::Nearest { center, k }
        }
        Kind::Intersects => Spec::Around {
            geometry: body,
            along: None,
            distance_m: distance("buffer_m")?,
        },
        Kind::Corridor => {
            let along = required(
                params.get("along"),
                "along",
                "LAYER/ID of the feature to follow",
            )?;
            let (l, id) = along.split_once('/').ok_or_else(|| {
                ApiError::bad_request(format!("along: {along:?} is not LAYER/ID"))
            })?;
            if app.layer(l).is_none() {
                return Err(ApiError::bad_request(format!(
                    "along: no layer named {l:?}"
                )));
            }
            Spec::Around {
                geometry: None,
                along: Some((l.to_string(), id.to_string())),
                distance_m: required(params.get("distance_m").map(|_| ()), "distance_m", "metres")
                    .and_then(|()| distance("distance_m"))?,
            }
        }
    };
    let (a, name, b) = (app.clone(), layer.clone(), base.clone());
    let (features, matched) = blocking(move || {
        let state = a
            .layer(&name)
            .ok_or_else(|| ApiError::not_found(format!("no layer named {name:?}")))?;
        let def = &state.def;
        let (q, selection) = items_query(def, &shared, None, None, limit, offset)?;
        let budget = crate::query::Budget::default();
        let idx = state.index.read();
        let (hits, matched): (Vec<Hit>, usize) = match spec {
            Spec::Within { center, radius_m } => {
                let page = near::within(
                    &idx,
                    &WithinQuery {
                        center,
                        radius_m,
                        filter: q.filter,
                        limit,
                        offset,
                    },
                    &budget,
                )
                .map_err(near_error)?;
                (page.hits, page.matched)
            }
            Spec::Nearest { center, k } => {
                let hits = near::nearest(
                    &idx,
                    &NearestQuery {
                        center,
                        k,
                        filter: q.filter,
                    },
                    &budget,
                )
                .map_err(near_error)?;
                let n = hits.len();
                (hits, n)
            }
            Spec::Around {
                geometry,
                along,
                distance_m,
            } => {
                let geometry = match (geometry, along) {
                    (Some(g), _) => g,
                    (None, Some((l, id))) => {
                        let other = a.layer(&l).ok_or_else(|| {
                            ApiError::bad_request(format!("along: no layer named {l:?}"))
                        })?;
                        // Copied out, so no second lock on a layer is ever held.
                        let g = match l == name {
                            true => idx.get(&id).map(|f| f.feature.geometry),
                            false => other.index.read().get(&id).map(|f| f.feature.geometry),
                        };
                        g.ok_or_else(|| {
                            ApiError::not_found(format!("along: layer {l} has no feature {id:?}"))
                        })?
                    }
                    (None, None) => {
                        return Err(ApiError::internal("a query", "no geometry to measure from"));
                    }
                };
                let page = near::around(
                    &idx,
                    &AroundQuery {
                        geometry,
                        distance_m,
                        filter: q.filter,
                        limit,
                        offset,
                    },
                    &budget,
                )
                .map_err(near_error)?;
                (page.hits, page.matched)
            }
        };
        let style = super::geojson_out::FeatureStyle::new(&b.origin, def, crs, &selection);
        let mut features = super::geojson_out::page_head(matched, hits.len());
        for (i, h) in hits.iter().enumerate() {
            if i > 0 {
                features.push(b',');
            }
            super::geojson_out::feature(&mut features, &style, &idx, h.slot, Some(h.distance_m))?;
        }
        let features = (features, hits.len());
        Ok((features, matched))
    })
    .await?;
    let (features, returned) = features;
    let here = format!("{}/collections/{}/{}", base.origin, def.name, kind.name());
    let with = |off: Option<usize>| {
        let mut rest: Vec<(&String, &String)> = params
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "offset"))
            .collect();
        rest.sort();
        let mut q: Vec<String> = rest
            .into_iter()
            .map(|(k, v)| format!("{}={}", query_encode(k), query_encode(v)))
            .collect();
        if let Some(o) = off {
            q.push(format!("offset={o}"));
        }
        format!("{here}?{}", q.join("&"))
    };
    let paged = kind != Kind::Nearest;
    let mut links = vec![
        json!({"href": with(paged.then_some(offset)), "rel": "self", "type": "application/geo+json"}),
        json!({"href": format!("{}/collections/{}", base.origin, def.name), "rel": "collection", "type": "application/json"}),
    ];
    if paged && returned > 0 && offset + returned < matched {
        links.push(json!({"href": with(Some(offset + returned)), "rel": "next", "type": "application/geo+json"}));
    }
    if paged && offset > 0 && limit > 0 {
        links.push(json!({"href": with(Some(offset.saturating_sub(limit))), "rel": "prev", "type": "application/geo+json"}));
    }
    let body = super::geojson_out::page_tail(features, &Json::Array(links));
    let mut resp = super::items::geojson_page(body, &headers).await?;
    if let Some(v) = base.vary {
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static(v));
    }
    content_crs(&mut resp, crs);
    Ok(resp)
}

/// `GET /collections/{layer}/items/{id}/context?radius_m=&k=&limit=&crs=`: a duty
/// officer's one call around a feature of a point layer (a risk point): the feature, and
/// for every other layer
/// - `attached`: the features that name it (a property `{kind}_id`, e.g. a sensor's
///   `risk_point_id`), nearest first;
/// - `within`: the features within `radius_m` (default 500 m), nearest first;
/// - `nearest`: the `k` nearest (default 5).
///
/// Each list holds at most `limit` features (default 100) and says how many matched;
/// every feature has its `distance_m`. Each layer's index is read in turn, never two
/// at once.
pub async fn context(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((layer, id)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let base = base_of(&app, &headers, &uri)?;
    read_allowed(&app, &headers).await?;
    let state = app
        .layer(&layer)
        .ok_or_else(|| ApiError::not_found(format!("no layer named {layer:?}")))?;
    if !state.def.geometry.is_point() {
        return Err(ApiError::bad_request(format!(
            "context is offered for point layers (risk points); {layer} holds {}",
            state.def.geometry.geojson_name()
        )));
    }
    let params = geojson_params(query.as_deref())?;
    if let Some(k) = params
        .keys()
        .find(|k| !matches!(k.as_str(), "radius_m" | "k" | "limit" | "crs" | "f"))
    {
        return Err(ApiError::bad_request(format!(
            "{k}: not a parameter of context (radius_m, k, limit, crs)"
        )));
    }
    let radius_m = number::<f64>(&params, "radius_m", "a number of metres")?.unwrap_or(500.0);
    if !(radius_m > 0.0 && radius_m <= near::MAX_RADIUS_M) {
        return Err(ApiError::bad_request(format!(
            "radius_m must be above 0 and at most {} m; got {radius_m}",
            near::MAX_RADIUS_M
        )));
    }
    let k = number::<usize>(&params, "k", "an integer")?.unwrap_or(5);
    if k == 0 || k > near::MAX_K {
        return Err(ApiError::bad_request(format!(
            "k must be 1 to {}; got {k}",
            near::MAX_K
        )));
    }
    let limit = number::<usize>(&params, "limit", "an integer")?.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be an integer 0..={MAX_LIMIT}, got {limit}"
        )));
    }
    let crs = crs_param(&params, "crs")?;
    let (a, b) = (app.clone(), base.clone());
    let doc = blocking(move || {
        let own = a
            .layer(&layer)
            .ok_or_else(|| ApiError::not_found(format!("no layer named {layer:?}")))?;
        let (feature, geometry) = {
            let idx = own.index.read();
            let sf = idx.get(&id).ok_or_else(|| {
                ApiError::not_found(format!("layer {layer} has no feature {id:?}"))
            })?;
            let geometry = sf.feature.geometry.clone();
            (feature_json_in(&b, &own.def, &sf, crs)?, geometry)
        };
        let center = match &geometry {
            Geometry::Point(p) => p.0,
            _ => {
                return Err(ApiError::internal(
                    "context",
                    "a point layer holds a non-point",
                ));
            }
        };
        let reference = format!("{}_id", own.def.kind.config_name());
        // One budget for the whole call, over every layer.
        let budget = crate::query::Budget::default();
        let mut layers = serde_json::Map::new();
        for other in a.layers().iter().filter(|l| l.def.name != layer) {
            let idx = other.index.read();
            let def = &other.def;
            let encode = |hits: &[Hit]| -> Result<Vec<Json>, ApiError> {
                hits.iter()
                    .map(|h| {
                        let mut doc = feature_json_in(&b, def, &idx.feature(h.slot), crs)?;
                        let d = (h.distance_m * 1000.0).round() / 1000.0;
                        if let Some(p) = doc.get_mut("properties").and_then(Json::as_object_mut) {
                            p.insert("distance_m".into(), json!(d));
                        }
                        Ok(doc)
                    })
                    .collect()
            };
            let bad = near_error;
            let mut entry = serde_json::Map::new();
            if def.properties.iter().any(|p| p.name == reference) {
                let page = near::attached(&idx, &reference, &id, &geometry, limit, &budget)
                    .map_err(bad)?;
                entry.insert(
                    "attached".into(),
                    json!({"property": reference, "numberMatched": page.matched,
                           "numberReturned": page.hits.len(), "features": encode(&page.hits)?}),
                );
            }
            let page = near::within(
                &idx,
                &WithinQuery {
                    center,
                    radius_m,
                    filter: crate::query::filter::Filter::Const(true),
                    limit,
                    offset: 0,
                },
                &budget,
            )
            .map_err(bad)?;
            entry.insert(
                "within".into(),
                json!({"numberMatched": page.matched, "numberReturned": page.hits.len(),
                       "features": encode(&page.hits)?}),
            );
            let nearest = near::nearest(
                &idx,
                &NearestQuery {
                    center,
                    k,
                    filter: crate::query::filter::Filter::Const(true),
                },
                &budget,
            )
            .map_err(bad)?;
            entry.insert("nearest".into(), Json::Array(encode(&nearest)?));
            layers.insert(def.name.clone(), Json::Object(entry));
        }
        Ok(json!({
            "feature": feature,
            "radius_m": radius_m,
            "k": k,
            "layers": layers,
        }))
    })
    .await?;
    let mut doc = doc;
    doc["links"] = json!([
        {"href": format!("{}{}", base.origin, uri.path_and_query().map(|p| p.as_str()).unwrap_or("")), "rel": "self", "type": "application/json"},
        {"href": format!("{}{}", base.origin, uri.path().trim_end_matches("/context")), "rel": "about", "type": "application/geo+json"},
    ]);
    let mut resp = axum::Json(doc).into_response();
    if let Some(v) = base.vary {
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static(v));
    }
    content_crs(&mut resp, crs);
    Ok(resp)
}
