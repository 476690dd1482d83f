//! `GET /collections` and `GET /collections/{layer}`: the layers, OGC API – Features
//! style, with counts, extents and the property schema.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use super::error::ApiError;
use super::landing::json_with_vary;
use super::{auth, blocking};
use crate::app::App;
use crate::index::LayerState;
use crate::model::{GeometryType, PropertyType};

const CRS84: &str = "http://www.opengis.net/def/crs/OGC/1.3/CRS84";

fn describe(l: &LayerState, base: &str) -> Value {
    let def = &l.def;
    let (count, extent, length_km) = {
        let idx = l.index.read();
        (idx.len(), idx.extent(), idx.length_km())
    };
    let properties: Vec<Value> = std::iter::once(
        json!({"name": def.id_property, "type": "string", "required": true, "id": true}),
    )
    .chain(def.properties.iter().map(|p| {
        let mut v = json!({"name": p.name, "type": p.ty.config_name(), "required": p.required});
        let o = v.as_object_mut().expect("object");
        if let Some(t) = &p.title {
            o.insert("title".into(), t.clone().into());
        }
        if let Some(vals) = &p.values {
            o.insert("values".into(), vals.clone().into());
        }
        if let Some(m) = p.min {
            o.insert("min".into(), m.into());
        }
        if let Some(m) = p.max {
            o.insert("max".into(), m.into());
        }
        if let Some(m) = p.max_length {
            o.insert("max_length".into(), m.into());
        }
        if let Some(r) = &p.references {
            o.insert("references".into(), r.config_name().into());
        }
        if matches!(p.ty, PropertyType::Date | PropertyType::DateTime) {
            o.insert(
                "format".into(),
                if p.ty == PropertyType::Date {
                    "date"
                } else {
                    "date-time"
                }
                .into(),
            );
        }
        v
    }))
    .collect();
    let mut v = json!({
        "id": def.name,
        "title": def.title,
        "description": def.description,
        "itemType": "feature",
        "kind": def.kind.config_name(),
        "geometryType": def.geometry.geojson_name(),
        "featureCount": count,
        // OGC API – Features Part 2: what `crs` and `bbox-crs` accept, and what the
        // features are stored in.
        "crs": crate::query::crs::Crs::supported().iter().map(|c| c.uri()).collect::<Vec<_>>(),
        "storageCrs": crate::query::crs::Crs::storage_crs().uri(),
        "minzoom": def.minzoom,
        "maxzoom": def.maxzoom,
        "idProperty": def.id_property,
        "properties": properties,
        "links": [
            {"href": format!("{base}/collections/{}", def.name), "rel": "self", "type": "application/json", "title": def.title},
            {"href": format!("{base}/collections/{}/items", def.name), "rel": "items", "type": "application/geo+json", "title": "Features"},
            {"href": format!("{base}/collections/{}/queryables", def.name), "rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables", "type": "application/schema+json", "title": "Queryables"},
        ],
    });
    // An empty layer has no extent (OGC API – Features: a bbox has four numbers, so
    // the member is left out rather than given an empty list).
    if let Some(b) = extent {
        v["extent"] = json!({ "spatial": { "bbox": [b.to_array()], "crs": CRS84 } });
    }
    if matches!(
        def.geometry,
        GeometryType::LineString | GeometryType::MultiLineString
    ) {
        v["lengthKm"] = ((length_km * 1000.0).round() / 1000.0).into();
    }
    v
}

pub async fn list(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (base, vary) = super::public_url::base_url(&app, &headers, &uri)?;
    let a = app.clone();
    blocking(move || auth::require_read(&a, &headers)).await?;
    let collections: Vec<Value> = app.layers().iter().map(|l| describe(l, &base)).collect();
    Ok(json_with_vary(
        json!({
            "collections": collections,
            "links": [
                {"href": format!("{base}/collections"), "rel": "self", "type": "application/json", "title": "Layers"},
            ],
        }),
        vary,
    ))
}

type LayerPath = Result<Path<String>, axum::extract::rejection::PathRejection>;

/// What a read of one layer's description needs: the layer (404 if unknown, after the
/// read check), the origin for its links and the `Vary` that implies.
async fn layer_read(
    app: &Arc<App>,
    path: LayerPath,
    uri: &Uri,
    headers: HeaderMap,
) -> Result<(Arc<LayerState>, String, Option<&'static str>), ApiError> {
    let Path(name) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (base, vary) = super::public_url::base_url(app, &headers, uri)?;
    let a = app.clone();
    blocking(move || auth::require_read(&a, &headers)).await?;
    let l = app
        .layer(&name)
        .ok_or_else(|| ApiError::not_found(format!("no layer named {name:?}")))?;
    Ok((l, base, vary))
}

pub async fn one(
    State(app): State<Arc<App>>,
    path: LayerPath,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (l, base, vary) = layer_read(&app, path, &uri, headers).await?;
    Ok(json_with_vary(describe(&l, &base), vary))
}

/// `GET /collections/{layer}/queryables`: the properties a filter may name, as a JSON
/// Schema (OGC API – Features Part 3).
pub async fn queryables(
    State(app): State<Arc<App>>,
    path: LayerPath,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (l, base, vary) = layer_read(&app, path, &uri, headers).await?;
    let mut resp = json_with_vary(crate::query::filter::queryables(&l.def, &base), vary);
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/schema+json"),
    );
    Ok(resp)
}
