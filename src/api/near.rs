//! Planners' distance queries (issue 8): `GET /collections/{layer}/within?lon=&lat=
//! &radius_m=` and `GET /collections/{layer}/nearest?lon=&lat=&k=`. Geodesic metres to
//! the nearest point of each geometry (`query::near`), each feature with `distance_m`
//! among its properties, nearest first; combinable with `filter` (CQL2), `property=value`,
//! `properties` and `crs`, and for `within` with `limit`/`offset` paging.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use geo_types::Coord;
use serde_json::{Value as Json, json};

use super::error::ApiError;
use super::items::{
    DEFAULT_LIMIT, MAX_LIMIT, base_of, content_crs, crs_param, feature_json_in, items_query,
    query_encode, select_properties, serde_urlencoded_pairs,
};
use super::{auth, blocking};
use crate::app::App;
use crate::query::near::{self, Hit, NearestQuery, WithinQuery};

/// Which query: its own parameters, and whether it pages.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Within,
    Nearest,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Within => "within",
            Kind::Nearest => "nearest",
        }
    }

    /// Its own parameters, besides those it shares with `items` (`filter`,
    /// `filter-lang`, `filter-crs`, `properties`, `crs`, `f`, `property=value`).
    fn own(self) -> &'static [&'static str] {
        match self {
            Kind::Within => &["lon", "lat", "radius_m", "limit", "offset"],
            Kind::Nearest => &["lon", "lat", "k"],
        }
    }
}

/// `items` parameters these queries do not take: their order is by distance, and their
/// region is the radius.
const NOT_HERE: [&str; 5] = ["bbox", "bbox-crs", "sortby", "datetime", "limit"];

pub async fn within(
    state: State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    query: RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    run(Kind::Within, state, path, query, uri, headers).await
}

pub async fn nearest(
    state: State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    query: RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    run(Kind::Nearest, state, path, query, uri, headers).await
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
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(layer) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let base = base_of(&app, &headers, &uri)?;
    let (a, h) = (app.clone(), headers.clone());
    blocking(move || auth::require_read(&a, &h)).await?;
    let state = app
        .layer(&layer)
        .ok_or_else(|| ApiError::not_found(format!("no layer named {layer:?}")))?;
    let def = state.def.clone();
    let params: HashMap<String, String> = match &query {
        Some(q) => serde_urlencoded_pairs(q)?,
        None => HashMap::new(),
    };
    match params.get("f").map(String::as_str) {
        None | Some("json" | "geojson") => {}
        Some(f) => {
            return Err(ApiError::bad_request(format!(
                "f: {f:?} is not offered here (json)"
            )));
        }
    }
    for p in NOT_HERE {
        if params.contains_key(p) && !kind.own().contains(&p) {
            return Err(ApiError::bad_request(format!(
                "{p}: not a parameter of {} (results are ordered by distance)",
                kind.name()
            )));
        }
    }
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
    let center = Coord { x: lon, y: lat };
    let crs = crs_param(&params, "crs")?;
    // What is left is what `items` reads: the filter, property=value, properties.
    let shared: HashMap<String, String> = params
        .iter()
        .filter(|(k, _)| !kind.own().contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (limit, offset, radius_m, k) = match kind {
        Kind::Within => {
            let limit = number::<usize>(&params, "limit", "an integer")?.unwrap_or(DEFAULT_LIMIT);
            if limit > MAX_LIMIT {
                return Err(ApiError::bad_request(format!(
                    "limit must be an integer 0..={MAX_LIMIT}, got {limit}"
                )));
            }
            let offset = number::<usize>(&params, "offset", "an integer")?.unwrap_or(0);
            let r = required(
                number::<f64>(&params, "radius_m", "a number of metres")?,
                "radius_m",
                "metres",
            )?;
            (limit, offset, r, 0)
        }
        Kind::Nearest => {
            let k = required(
                number::<usize>(&params, "k", "an integer")?,
                "k",
                "how many, 1 to 1000",
            )?;
            (k, 0, 0.0, k)
        }
    };
    near::check(center, (kind == Kind::Within).then_some(radius_m))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (a, name, b) = (app.clone(), layer.clone(), base.clone());
    let (features, matched) = blocking(move || {
        let state = a
            .layer(&name)
            .ok_or_else(|| ApiError::not_found(format!("no layer named {name:?}")))?;
        let def = &state.def;
        let (q, selection) = items_query(def, &shared, None, None, limit, offset)?;
        let idx = state.index.read();
        let (hits, matched): (Vec<Hit>, usize) = match kind {
            Kind::Within => {
                let page = near::within(
                    &idx,
                    &WithinQuery {
                        center,
                        radius_m,
                        filter: q.filter,
                        limit,
                        offset,
                    },
                )
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
                (page.hits, page.matched)
            }
            Kind::Nearest => {
                let hits = near::nearest(
                    &idx,
                    &NearestQuery {
                        center,
                        k,
                        filter: q.filter,
                    },
                )
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
                let n = hits.len();
                (hits, n)
            }
        };
        let features = hits
            .iter()
            .map(|h| {
                let mut doc = feature_json_in(&b, def, &idx.feature(h.slot), crs)?;
                if let Some(sel) = &selection {
                    select_properties(&mut doc, def, sel);
                }
                // Millimetres: the precision the distances are exact to.
                let d = (h.distance_m * 1000.0).round() / 1000.0;
                if let Some(p) = doc.get_mut("properties").and_then(Json::as_object_mut) {
                    p.insert("distance_m".into(), json!(d));
                }
                Ok(doc)
            })
            .collect::<Result<Vec<Json>, ApiError>>()?;
        Ok((features, matched))
    })
    .await?;
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
    let paged = kind == Kind::Within;
    let mut links = vec![
        json!({"href": with(paged.then_some(offset)), "rel": "self", "type": "application/geo+json"}),
        json!({"href": format!("{}/collections/{}", base.origin, def.name), "rel": "collection", "type": "application/json"}),
    ];
    if paged && !features.is_empty() && offset + features.len() < matched {
        links.push(json!({"href": with(Some(offset + features.len())), "rel": "next", "type": "application/geo+json"}));
    }
    if paged && offset > 0 && limit > 0 {
        links.push(json!({"href": with(Some(offset.saturating_sub(limit))), "rel": "prev", "type": "application/geo+json"}));
    }
    let body = json!({
        "type": "FeatureCollection",
        "numberMatched": matched,
        "numberReturned": features.len(),
        "timeStamp": crate::store::now_timestamp(),
        "features": features,
        "links": links,
    });
    let mut resp = body.to_string().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/geo+json"),
    );
    if let Some(v) = base.vary {
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static(v));
    }
    content_crs(&mut resp, crs);
    Ok(resp)
}
