//! Single features, in the shape of OGC API – Features Part 4 (Create, Replace,
//! Update, Delete): `GET`, `PUT`, `PATCH` (JSON merge patch) and `DELETE` on
//! `/collections/{layer}/items/{id}`, `POST` on `/collections/{layer}/items`.
//! Writes need a key allowing `EditFeatures`; `If-Match` with the feature's ETag
//! guards against overwriting someone else's edit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value as Json;

use super::error::ApiError;
use super::{auth, blocking};
use crate::app::{App, etag};
use crate::model::{Action, Feature, LayerDef, feature::id_of};
use crate::store::StoredFeature;

fn feature_response(status: StatusCode, layer: &LayerDef, sf: &StoredFeature) -> Response {
    let mut doc = sf.feature.to_geojson(layer);
    let enc = percent_encode(&sf.feature.id);
    doc["links"] = serde_json::json!([
        {"href": format!("/collections/{}/items/{}", layer.name, enc), "rel": "self", "type": "application/geo+json"},
        {"href": format!("/collections/{}", layer.name), "rel": "collection", "type": "application/json"},
    ]);
    let mut resp = (status, doc.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/geo+json"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag(layer, &sf.feature)) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::CREATED {
        if let Ok(v) = HeaderValue::from_str(&format!("/collections/{}/items/{}", layer.name, enc))
        {
            h.insert(header::LOCATION, v);
        }
    }
    resp
}

/// Percent-encodes an id for a URL path segment (RFC 3986 unreserved kept).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn layer_of(app: &App, name: &str) -> Result<Arc<LayerDef>, ApiError> {
    app.layer(name)
        .map(|l| l.def.clone())
        .ok_or_else(|| ApiError::not_found(format!("no layer named {name:?}")))
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Parses a JSON body whose content type is one of `accepted`.
fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    accepted: &[&str],
) -> Result<Json, ApiError> {
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
    if !accepted.contains(&mime.as_str()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("Content-Type must be one of {}", accepted.join(", ")),
        ));
    }
    let bytes = body.map_err(|e| ApiError::new(e.status(), "InvalidBody", e.body_text()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

type Ids = Result<Path<(String, String)>, PathRejection>;

fn ids(p: Ids) -> Result<(String, String), ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

pub async fn get(
    State(app): State<Arc<App>>,
    path: Ids,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (layer, id) = ids(path)?;
    let a = app.clone();
    let h = headers.clone();
    blocking(move || auth::require_read(&a, &h)).await?;
    let state = app
        .layer(&layer)
        .ok_or_else(|| ApiError::not_found(format!("no layer named {layer:?}")))?;
    let sf = state
        .index
        .read()
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("layer {layer} has no feature {id:?}")))?;
    let tag = etag(&state.def, &sf.feature);
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if inm
            .split(',')
            .map(str::trim)
            .any(|t| t == tag || t == "*" || t.strip_prefix("W/") == Some(tag.as_str()))
        {
            let mut resp = StatusCode::NOT_MODIFIED.into_response();
            if let Ok(v) = HeaderValue::from_str(&tag) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            return Ok(resp);
        }
    }
    Ok(feature_response(StatusCode::OK, &state.def, &sf))
}

pub async fn create(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(layer) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let def = layer_of(&app, &layer)?;
    blocking(move || {
        let key = auth::require(&app, &headers, Action::EditFeatures)?;
        let mut doc = json_body(
            &headers,
            body,
            &["application/geo+json", "application/json"],
        )?;
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
        let sf = app.create(&key.actor(), &layer, feature)?;
        Ok(feature_response(StatusCode::CREATED, &def, &sf))
    })
    .await
}

pub async fn replace(
    State(app): State<Arc<App>>,
    path: Ids,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (layer, id) = ids(path)?;
    let def = layer_of(&app, &layer)?;
    blocking(move || {
        let key = auth::require(&app, &headers, Action::EditFeatures)?;
        let mut doc = json_body(
            &headers,
            body,
            &["application/geo+json", "application/json"],
        )?;
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
        let sf = app.replace(&key.actor(), &layer, feature, if_match(&headers).as_deref())?;
        Ok(feature_response(StatusCode::OK, &def, &sf))
    })
    .await
}

pub async fn patch(
    State(app): State<Arc<App>>,
    path: Ids,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (layer, id) = ids(path)?;
    let def = layer_of(&app, &layer)?;
    blocking(move || {
        let key = auth::require(&app, &headers, Action::EditFeatures)?;
        let doc = json_body(
            &headers,
            body,
            &["application/merge-patch+json", "application/json"],
        )?;
        let sf = app.patch(
            &key.actor(),
            &layer,
            &id,
            &doc,
            if_match(&headers).as_deref(),
        )?;
        Ok(feature_response(StatusCode::OK, &def, &sf))
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
    blocking(move || {
        let key = auth::require(&app, &headers, Action::EditFeatures)?;
        app.delete(&key.actor(), &layer, &id, if_match(&headers).as_deref())?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}
