//! Planners: response plans (templates and each risk point's own), sensor types and
//! their thresholds, and the risk points whose plan is missing. Reads are public (as
//! configured); writes need a key with role `planner` or `admin`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{auth, blocking};
use crate::alerts::plans::{PointPlan, Template, parse_templates, step_text};
use crate::alerts::sensor_types::{RuleSpec, SensorType, parse_csv};
use crate::app::{AlertError, App};
use crate::model::Action;

/// Largest plans or sensor-types file.
const MAX_FILE: usize = 32 * 1024 * 1024;

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

async fn planner(app: &Arc<App>, headers: &HeaderMap) -> Result<String, ApiError> {
    let (a, h) = (app.clone(), headers.clone());
    blocking(move || auth::require(&a, &h, Action::EditPlans).map(|k| k.actor())).await
}

async fn body_bytes(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_FILE).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("the body is larger than {MAX_FILE} bytes"),
        )
    })
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<T, ApiError> {
    if content_type(headers) != "application/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "Content-Type must be application/json",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::unprocessable(format!("{e}")))
}

fn resolved_json(p: &crate::alerts::plans::ResolvedPlan) -> Value {
    let mut j = serde_json::to_value(p).unwrap_or(Value::Null);
    // The steps as people read them, beside the steps as written.
    let texts: serde_json::Map<String, Value> = crate::alerts::Level::WARNINGS
        .iter()
        .map(|l| {
            (
                l.name().to_string(),
                json!(
                    p.levels
                        .of(*l)
                        .iter()
                        .map(|s| step_text(s))
                        .collect::<Vec<_>>()
                ),
            )
        })
        .collect();
    j["steps_text"] = Value::Object(texts);
    j
}

/// `GET /risk_points/{id}/plan`: the point's plan as it applies.
pub async fn point_plan(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path(p)?;
    super::read_allowed(&app, &headers).await?;
    let body = blocking(move || match app.plan_of(&id) {
        Ok(p) => Ok(resolved_json(&p)),
        // Reading a plan that resolves to nothing: there is no such plan (a gap,
        // listed by GET /risk_points?without_plan=true).
        Err(AlertError::NoTemplate(t)) => Err(ApiError::not_found(format!(
            "risk point {id} has no response plan: its plan template {t} is not loaded"
        ))),
        Err(e) => Err(e.into()),
    })
    .await?;
    Ok(Json(body).into_response())
}

/// `PUT /risk_points/{id}/plan`: a new version of the point's own plan (role
/// `planner`): `{"template": "P00001", "contacts": [...], "extra_contacts": [...],
/// "add_steps": {"red": [...]}, "remove_steps": {...}, "notes": "..."}`.
pub async fn put_point_plan(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path(p)?;
    let actor = planner(&app, &headers).await?;
    let bytes = body_bytes(body).await?;
    let plan: PointPlan = json_body(&headers, &bytes)?;
    let body =
        blocking(move || Ok::<_, ApiError>(resolved_json(&app.put_point_plan(&id, plan, &actor)?)))
            .await?;
    Ok(Json(body).into_response())
}

/// `GET /risk_points/{id}/plan/versions`: every version of the point's own plan, newest
/// first.
pub async fn point_plan_versions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path(p)?;
    super::read_allowed(&app, &headers).await?;
    let body = blocking(move || {
        // A point that does not exist is a 404, not an empty history.
        app.plan_of(&id).map(|_| ()).or_else(|e| match e {
            AlertError::NoTemplate(_) | AlertError::NoPlan(_) => Ok(()),
            e => Err(e),
        })?;
        let v = app.store().point_plan_versions(&id)?;
        Ok::<_, ApiError>(json!({
            "risk_point_id": id,
            "versions": v.iter().map(|v| json!({
                "version": v.version, "at": v.at, "by": v.by, "plan": v.value,
            })).collect::<Vec<_>>(),
        }))
    })
    .await?;
    Ok(Json(body).into_response())
}

/// `GET /plan-templates`
pub async fn templates(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::read_allowed(&app, &headers).await?;
    let catalog = app.alerts().catalog();
    let mut list: Vec<_> = catalog.templates.values().collect();
    list.sort_by(|a, b| a.value.id.cmp(&b.value.id));
    Ok(Json(json!({
        "numberMatched": list.len(),
        "templates": list.iter().map(|t| json!({
            "id": t.value.id, "title": t.value.title, "category": t.value.category,
            "version": t.version, "links": [{"rel": "self", "href": format!("/plan-templates/{}", t.value.id)}],
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `GET /plan-templates/{id}`: the latest version, with `?version=N` an older one.
pub async fn template(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<VersionQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = path(p)?;
    let q = q
        .map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    super::read_allowed(&app, &headers).await?;
    let body = blocking(move || {
        let versions = app.store().template_versions(&id)?;
        let v = match q.version {
            None => versions.first(),
            Some(n) => versions.iter().find(|v| v.version == n),
        }
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no plan template {id:?}{}",
                q.version
                    .map(|n| format!(" version {n}"))
                    .unwrap_or_default()
            ))
        })?;
        let mut j = serde_json::to_value(&v.value).unwrap_or(Value::Null);
        j["version"] = json!(v.version);
        j["updated_at"] = json!(v.at);
        j["updated_by"] = json!(v.by);
        j["versions"] = json!(versions.iter().map(|v| v.version).collect::<Vec<_>>());
        Ok::<_, ApiError>(j)
    })
    .await?;
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    version: Option<i64>,
}

/// `PUT /plan-templates/{id}`: a new version of a template (role `planner`).
pub async fn put_template(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path(p)?;
    let actor = planner(&app, &headers).await?;
    let bytes = body_bytes(body).await?;
    let mut doc: Value = json_body(&headers, &bytes)?;
    match doc.get("id") {
        None => {
            doc["id"] = json!(id);
        }
        Some(v) if v.as_str() == Some(id.as_str()) => {}
        Some(v) => {
            return Err(ApiError::unprocessable(format!(
                "id: {v} differs from the path's {id:?}"
            )));
        }
    }
    let t: Template =
        serde_json::from_value(doc).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    blocking(move || {
        let n = app.put_templates(std::slice::from_ref(&t), &actor)?;
        let v = app.store().template_versions(&t.id)?;
        Ok::<_, ApiError>((n, v.first().map_or(1, |v| v.version)))
    })
    .await
    .map(|(n, version)| {
        Json(json!({"id": id, "version": version, "changed": n > 0})).into_response()
    })
}

/// `POST /plan-templates`: a plans file (`plans.json`, a JSON array of templates), all
/// or nothing (role `planner`).
pub async fn post_templates(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let actor = planner(&app, &headers).await?;
    if content_type(&headers) != "application/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "Content-Type must be application/json (an array of plan templates)",
        ));
    }
    let bytes = body_bytes(body).await?;
    let body = blocking(move || {
        let templates = parse_templates(&bytes).map_err(|errors| {
            ApiError::unprocessable(format!(
                "{} template(s) refused, nothing loaded: {}",
                errors.len(),
                errors
                    .iter()
                    .take(20)
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        let n = app.put_templates(&templates, &actor)?;
        Ok::<_, ApiError>(json!({"templates": templates.len(), "new_versions": n}))
    })
    .await?;
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// `GET /sensor-types`
pub async fn sensor_types(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::read_allowed(&app, &headers).await?;
    let catalog = app.alerts().catalog();
    let mut list: Vec<_> = catalog.types.values().collect();
    list.sort_by_key(|t| t.ty.type_id);
    Ok(Json(json!({
        "numberMatched": list.len(),
        "sensor_types": list.iter().map(|t| type_json(t)).collect::<Vec<_>>(),
    }))
    .into_response())
}

fn type_json(t: &crate::app::TypeEntry) -> Value {
    let mut j = serde_json::to_value(&t.ty).unwrap_or(Value::Null);
    j["version"] = json!(t.version);
    j["levels"] = json!({
        "blue": t.rule.thresholds[0], "yellow": t.rule.thresholds[1],
        "orange": t.rule.thresholds[2], "red": t.rule.thresholds[3],
        "hysteresis": t.rule.hysteresis,
        "clear_after_s": t.rule.clear_after as f64 / 1000.0,
        "silent_after_s": t.rule.silent_after as f64 / 1000.0,
    });
    j
}

/// `GET /sensor-types/{id}`
pub async fn sensor_type(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: Result<Path<u32>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path(p)?;
    super::read_allowed(&app, &headers).await?;
    let catalog = app.alerts().catalog();
    let t = catalog
        .types
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no sensor type {id}")))?;
    Ok(Json(type_json(t)).into_response())
}

/// `PUT /sensor-types/{id}` (role `planner`): `{"name", "unit", "family", "warn",
/// "alarm", "direction", "mapping", "thresholds", "hysteresis", "clear_after_s",
/// "silent_after_s"}`.
pub async fn put_sensor_type(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: Result<Path<u32>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path(p)?;
    let actor = planner(&app, &headers).await?;
    let bytes = body_bytes(body).await?;
    let mut doc: Value = json_body(&headers, &bytes)?;
    match doc.get("type_id") {
        None => doc["type_id"] = json!(id),
        Some(v) if v.as_u64() == Some(u64::from(id)) => {}
        Some(v) => {
            return Err(ApiError::unprocessable(format!(
                "type_id: {v} differs from the path's {id}"
            )));
        }
    }
    let t: SensorType =
        serde_json::from_value(doc).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    blocking(move || {
        app.put_sensor_types(std::slice::from_ref(&t), &actor)?;
        let c = app.alerts().catalog();
        let e = c.types.get(&id).ok_or(AlertError::NoType(id))?;
        Ok::<_, ApiError>(Json(type_json(e)).into_response())
    })
    .await
}

/// `POST /sensor-types`: a sensor-types CSV (`text/csv`), all or nothing (role
/// `planner`).
pub async fn post_sensor_types(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let actor = planner(&app, &headers).await?;
    if content_type(&headers) != "text/csv" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "Content-Type must be text/csv (type_id,family,name,unit,warn_above,alarm_above...)",
        ));
    }
    let bytes = body_bytes(body).await?;
    let body = blocking(move || {
        let types = parse_csv(&bytes).map_err(|errors| {
            ApiError::unprocessable(format!(
                "{} problem(s), nothing loaded: {}",
                errors.len(),
                errors
                    .iter()
                    .take(20)
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        let n = app.put_sensor_types(&types, &actor)?;
        Ok::<_, ApiError>(json!({"sensor_types": types.len(), "changed": n}))
    })
    .await?;
    Ok(Json(body).into_response())
}

/// `GET /sensors/{id}`: a sensor with its type's name and unit, its risk point or
/// pipeline, its latest reading and state (`normal`, a level, or `no_data`).
pub async fn sensor(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path(p)?;
    super::read_allowed(&app, &headers).await?;
    let info = app
        .sensor_info(&id)
        .ok_or_else(|| ApiError::not_found(format!("no sensor {id:?}")))?;
    Ok(Json(info).into_response())
}

/// `PUT /sensors/{id}/rule` (role `planner`): the sensor's own thresholds (a rule
/// spec, as for a type); `DELETE` goes back to its type's.
pub async fn put_sensor_rule(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = path(p)?;
    let actor = planner(&app, &headers).await?;
    let bytes = body_bytes(body).await?;
    let spec: RuleSpec = json_body(&headers, &bytes)?;
    blocking(move || {
        app.put_sensor_rule(&id, Some(spec), &actor)?;
        Ok::<_, ApiError>(Json(app.sensor_info(&id)).into_response())
    })
    .await
}

pub async fn delete_sensor_rule(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path(p)?;
    let actor = planner(&app, &headers).await?;
    blocking(move || {
        app.put_sensor_rule(&id, None, &actor)?;
        Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskPointsQuery {
    without_plan: Option<bool>,
}

/// `GET /risk_points?without_plan=true`: the risk points whose plan resolves to
/// nothing (a gap the centre must close).
pub async fn risk_points(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Result<Query<RiskPointsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = q
        .map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    if q.without_plan != Some(true) {
        return Err(ApiError::bad_request(
            "GET /risk_points lists risk points without a plan: add without_plan=true (the risk points themselves are at /collections/risk_points/items)",
        ));
    }
    super::read_allowed(&app, &headers).await?;
    let body = blocking(move || {
        let ids = app.risk_points_without_plan()?;
        Ok::<_, ApiError>(json!({"numberMatched": ids.len(), "without_plan": ids}))
    })
    .await?;
    Ok(Json(body).into_response())
}
