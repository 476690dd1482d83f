//! Duty officers: warnings listed, read with their evidence and plan, acknowledged and
//! resolved, and pushed live (`/warnings/stream`, Server-Sent Events); sensors post
//! their readings (`POST /readings`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{auth, blocking};
use crate::alerts::engine::Warning;
use crate::alerts::plans::step_text;
use crate::alerts::readings::{self, BodyError, Format, format_ts};
use crate::alerts::{Level, TransitionKind};
use crate::app::{Act, AlertError, App, ReadingsReport};
use crate::model::{Action, Bbox};
use crate::store::WarningFilter;

/// Largest readings body: 100,000 readings of about 80 bytes, with room.
pub const MAX_READINGS_BYTES: usize = 16 * 1024 * 1024;
/// Most warnings one list answers.
pub const MAX_LIMIT: u32 = 1000;
/// Resolved warnings are filtered from the newest this many.
const RESOLVED_SCAN: u32 = 10_000;

impl From<AlertError> for ApiError {
    fn from(e: AlertError) -> Self {
        match e {
            AlertError::NoWarning(_)
            | AlertError::NoPlan(_)
            | AlertError::NoRiskPoint(_)
            | AlertError::NoSensor(_)
            | AlertError::NoType(_) => ApiError::not_found(e.to_string()),
            AlertError::NoTemplate(_) => ApiError::unprocessable(e.to_string()),
            AlertError::Resolved(_) => {
                ApiError::new(StatusCode::CONFLICT, "Conflict", e.to_string())
            }
            AlertError::Invalid { .. } => ApiError::unprocessable(e.to_string()),
            AlertError::NoLayer(_) => ApiError::not_found(e.to_string()),
            AlertError::Lost => ApiError::internal("readings", e),
            AlertError::Store(s) => s.into(),
        }
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

async fn key_for(
    app: &Arc<App>,
    headers: &HeaderMap,
    action: Action,
) -> Result<crate::store::ApiKey, ApiError> {
    let (a, h) = (app.clone(), headers.clone());
    blocking(move || auth::require(&a, &h, action)).await
}

/// `POST /readings`: a JSON array or NDJSON of readings (role `sensor` or `admin`).
pub async fn post_readings(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    key_for(&app, &headers, Action::PostReadings).await?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let format = match ct.as_str() {
        "application/json" => Format::Array,
        "application/x-ndjson" | "application/jsonl" => Format::Lines,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "Content-Type must be application/json (an array of readings) or application/x-ndjson (one reading a line)",
            ));
        }
    };
    let bytes = axum::body::to_bytes(body, MAX_READINGS_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                format!(
                    "the body is larger than {MAX_READINGS_BYTES} bytes or was cut off; send at most {} readings a request",
                    readings::MAX_PER_REQUEST
                ),
            )
        })?;
    let report = blocking(move || {
        // Reading the body is the CPU-heavy part of a readings request: done under
        // SCHED_IDLE, so that a flood of readings takes only the CPU that tiles and
        // queries leave (their drawing runs at nice 5); the commit that follows runs at
        // normal priority (it holds the store's writer).
        let parsed =
            crate::sched::on_idle_thread("riskmap-readings", || readings::parse(&bytes, format))
                .map_err(|e| match e {
                    BodyError::TooMany => ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "PayloadTooLarge",
                        e.to_string(),
                    ),
                    other => ApiError::bad_request(other.to_string()),
                })?;
        let mut report = ReadingsReport {
            received: parsed.rejected.len(),
            ..Default::default()
        };
        for r in parsed.rejected {
            report.reject(r);
        }
        // The group (the engine, the commit, the marks) at normal priority: it holds the
        // store's writer and read locks of the layers an edit waits on (at nice 10 it
        // took an edit's wait to 1.9 s and the tiles behind it to 774 ms, measured).
        Ok(app.post_readings(parsed.readings, report)?)
    })
    .await?;
    Ok(Json(report).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `open` (default: active or acknowledged), `active`, `acknowledged`, `resolved`,
    /// `all`.
    state: Option<String>,
    /// Comma-separated levels.
    level: Option<String>,
    bbox: Option<String>,
    category: Option<String>,
    district: Option<String>,
    limit: Option<u32>,
    offset: Option<u64>,
}

/// A warning as JSON, with its subject and links.
fn warning_json(app: &App, w: &Warning) -> Value {
    let subject = app.subject_info(&w.subject);
    let ts = format_ts;
    let mut links = vec![
        json!({"rel": "self", "href": format!("/warnings/{}", w.id), "type": "application/json"}),
        json!({"rel": "alternate", "href": format!("/warnings/{}.cap", w.id), "type": "application/cap+xml"}),
        json!({"rel": "subject", "href": format!("/collections/{}/items/{}", w.subject.kind.layer(), w.subject.id), "type": "application/geo+json"}),
    ];
    if w.subject.kind == crate::alerts::SubjectKind::RiskPoint {
        links.push(json!({"rel": "plan", "href": format!("/risk_points/{}/plan", w.subject.id), "type": "application/json"}));
    }
    json!({
        "id": w.id,
        "level": w.level,
        "peak": w.peak,
        "state": w.state(),
        "subject": subject,
        "raised_at": ts(w.raised_at),
        "updated_at": ts(w.updated_at),
        "acknowledged": w.acknowledged.as_ref().map(|a| json!({"by": a.by, "at": ts(a.at), "note": a.note})),
        "resolved": w.resolved.as_ref().map(|r| json!({"by": r.by, "at": ts(r.at), "note": r.note, "how": if r.by.is_some() { "by_hand" } else { "readings_normal" }})),
        "links": links,
    })
}

/// `GET /warnings`
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    super::read_allowed(&app, &headers).await?;
    let state = q.state.as_deref().unwrap_or("open");
    if !matches!(
        state,
        "open" | "active" | "acknowledged" | "resolved" | "all"
    ) {
        return Err(ApiError::bad_request(format!(
            "state={state}: must be open, active, acknowledged, resolved or all"
        )));
    }
    let levels: Option<Vec<Level>> = match &q.level {
        None => None,
        Some(s) => Some(
            s.split(',')
                .map(|l| {
                    Level::parse(l)
                        .filter(|l| *l != Level::Normal)
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "level={l}: must be blue, yellow, orange or red"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let bbox = q
        .bbox
        .as_deref()
        .map(Bbox::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("bbox: {e}")))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit={limit}: must be 1 to {MAX_LIMIT}"
        )));
    }
    let offset = q.offset.unwrap_or(0);
    let state = state.to_string();
    let body = blocking(move || {
        let all: Vec<Warning> = match state.as_str() {
            "open" | "active" | "acknowledged" => app
                .open_warnings()
                .into_iter()
                .filter(|w| state == "open" || w.state() == state)
                .collect(),
            other => app.stored_warnings(&WarningFilter {
                state: (other == "resolved").then(|| "resolved".to_string()),
                limit: RESOLVED_SCAN,
                offset: 0,
            })?,
        };
        let mut matched = Vec::new();
        for w in &all {
            if levels
                .as_ref()
                .is_some_and(|ls| !ls.contains(&w.level) && !ls.contains(&w.peak))
            {
                continue;
            }
            let j = warning_json(&app, w);
            let s = &j["subject"];
            if let Some(c) = &q.category {
                if s["category"].as_str() != Some(c) {
                    continue;
                }
            }
            if let Some(d) = &q.district {
                if s["district"].as_str() != Some(d) {
                    continue;
                }
            }
            if let Some(b) = &bbox {
                let inside = s["position"]
                    .as_array()
                    .and_then(|p| Some((p.first()?.as_f64()?, p.get(1)?.as_f64()?)))
                    .is_some_and(|(x, y)| {
                        x >= b.min_lon && x <= b.max_lon && y >= b.min_lat && y <= b.max_lat
                    });
                if !inside {
                    continue;
                }
            }
            matched.push(j);
        }
        let total = matched.len();
        let page: Vec<Value> = matched
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .collect();
        Ok::<_, ApiError>(json!({
            "numberMatched": total,
            "numberReturned": page.len(),
            "warnings": page,
        }))
    })
    .await?;
    Ok(Json(body).into_response())
}

type IdPath = Result<Path<String>, PathRejection>;

/// The warning id of `/warnings/{id}` (or `{id}.cap`).
fn warning_id(p: IdPath, suffix: &str) -> Result<u64, ApiError> {
    let Path(s) = p.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let digits = s.strip_suffix(suffix).unwrap_or(&s);
    digits
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::not_found(format!("no warning {s:?} (ids are whole numbers)")))
}

/// `GET /warnings/{id}`: the warning, its events with their evidence, the plan's steps
/// and contacts for its level, and its sensors as they are now. `{id}.cap`: CAP 1.2.
pub async fn one(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    p: IdPath,
) -> Result<Response, ApiError> {
    let raw = p.as_ref().map(|Path(s)| s.clone()).unwrap_or_default();
    if raw.ends_with(".cap") {
        let id = warning_id(p, ".cap")?;
        super::read_allowed(&app, &headers).await?;
        let (origin, _) = super::public_url::base_url(&app, &headers, &uri)?;
        return super::cap::alert(app, id, origin).await;
    }
    let id = warning_id(p, "")?;
    super::read_allowed(&app, &headers).await?;
    let body = blocking(move || {
        let w = app.warning(id)?.ok_or(AlertError::NoWarning(id))?;
        let mut j = warning_json(&app, &w);
        let events = app.store().warning_events(id)?;
        let mut sensors: Vec<String> = Vec::new();
        let ev: Vec<Value> = events
            .iter()
            .map(|(seq, t)| {
                for e in &t.evidence {
                    if !sensors.contains(&e.sensor_id.to_string()) {
                        sensors.push(e.sensor_id.to_string());
                    }
                }
                event_json(*seq, t, None)
            })
            .collect();
        j["events"] = Value::Array(ev);
        j["sensors"] = Value::Array(sensors.iter().filter_map(|s| app.sensor_info(s)).collect());
        if w.subject.kind == crate::alerts::SubjectKind::RiskPoint {
            let level = if w.is_active() { w.level } else { w.peak };
            j["plan"] = match app.plan_of(&w.subject.id) {
                Ok(p) => json!({
                    "template_id": p.template_id,
                    "title": p.title,
                    "version": p.version,
                    "level": level,
                    "steps": p.levels.of(level).iter().map(|s| step_text(s)).collect::<Vec<_>>(),
                    "contacts": p.contacts,
                    "notes": p.notes,
                }),
                Err(e) => json!({"missing": e.to_string()}),
            };
        }
        Ok::<_, ApiError>(j)
    })
    .await?;
    Ok(Json(body).into_response())
}

fn event_json(seq: i64, t: &crate::alerts::Transition, by: Option<&str>) -> Value {
    let ts = format_ts;
    json!({
        "seq": seq,
        "kind": t.kind,
        "from": t.from,
        "to": t.to,
        "at": ts(t.at),
        "by": by.map(str::to_string).or_else(|| match t.kind {
            TransitionKind::Acknowledged => t.warning.acknowledged.as_ref().map(|a| a.by.clone()),
            TransitionKind::Resolved => t.warning.resolved.as_ref().and_then(|r| r.by.clone()),
            _ => None,
        }),
        "note": match t.kind {
            TransitionKind::Acknowledged => t.warning.acknowledged.as_ref().map(|a| a.note.clone()),
            TransitionKind::Resolved => t.warning.resolved.as_ref().and_then(|r| r.note.clone()),
            _ => None,
        },
        "evidence": t.evidence.iter().map(|e| json!({
            "sensor_id": e.sensor_id, "ts": ts(e.ts), "value": e.value,
            "from": e.from, "to": e.to, "threshold": e.threshold,
        })).collect::<Vec<_>>(),
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActBody {
    #[serde(default)]
    note: Option<String>,
}

/// Longest note.
const MAX_NOTE: usize = 2000;

async fn act(
    app: Arc<App>,
    headers: HeaderMap,
    p: IdPath,
    body: Body,
    act: Act,
) -> Result<Response, ApiError> {
    let id = warning_id(p, "")?;
    let key = key_for(&app, &headers, Action::HandleWarnings).await?;
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            "the body is larger than 64 KiB",
        )
    })?;
    let b: ActBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        ActBody::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(format!("the body must be {{\"note\": \"...\"}}: {e}"))
        })?
    };
    let note = b.note.unwrap_or_default();
    if note.chars().count() > MAX_NOTE {
        return Err(ApiError::unprocessable(format!(
            "note: longer than {MAX_NOTE} characters"
        )));
    }
    if act == Act::Resolve && note.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "note: resolving by hand needs a note saying why (warnings also resolve themselves when the readings are back to normal)",
        ));
    }
    let kept = blocking(move || {
        let role = key.role.name();
        Ok(app.act_on_warning(act, id, &key.actor(), Some(role), &note)?)
    })
    .await?;
    Ok(Json(event_json(kept.seq, &kept.transition, kept.by.as_deref())).into_response())
}

/// `POST /warnings/{id}/ack` (role `duty_officer` or `admin`): `{"note": "..."}`.
pub async fn ack(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: IdPath,
    body: Body,
) -> Result<Response, ApiError> {
    act(app, headers, p, body, Act::Acknowledge).await
}

/// `POST /warnings/{id}/resolve` (role `duty_officer` or `admin`): `{"note": "..."}`.
pub async fn resolve(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    p: IdPath,
    body: Body,
) -> Result<Response, ApiError> {
    act(app, headers, p, body, Act::Resolve).await
}

/// Events sent to a stream listener at once when it resumes.
const RESUME_BATCH: u32 = 1000;

/// `GET /warnings/stream`: every transition as a Server-Sent Event (`id` its sequence
/// number, `event` its kind, `data` the event with the warning). With `Last-Event-ID`
/// the stream first sends what was missed, from the store.
pub async fn stream(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    super::read_allowed(&app, &headers).await?;
    let last: Option<i64> = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Last-Event-ID must be the id of an event (a whole number)",
                    )
                })?,
        ),
    };
    // Subscribe before reading the store, so nothing falls between the two.
    let mut rx = app.alerts().subscribe();
    let start = last.unwrap_or_else(|| app.alerts().last_event());
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(256);
    tokio::spawn(async move {
        let mut sent = start;
        let catch_up = |from: i64, app: Arc<App>| async move {
            tokio::task::spawn_blocking(move || app.store().events_since(from, RESUME_BATCH))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        };
        // Missed events, in batches.
        loop {
            let batch = catch_up(sent, app.clone()).await;
            let n = batch.len();
            for (seq, t) in batch {
                if tx.send(Ok(sse_event(seq, &t, None))).await.is_err() {
                    return;
                }
                sent = seq;
            }
            if n < RESUME_BATCH as usize {
                break;
            }
        }
        loop {
            match rx.recv().await {
                Ok(a) => {
                    let k = &a.kept;
                    if k.seq <= sent {
                        continue;
                    }
                    let data = a.rendered(|k| sse_data(k.seq, &k.transition, k.by.as_deref()));
                    if tx
                        .send(Ok(event_of(k.seq, &k.transition, &data)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    sent = k.seq;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the buffer: read what was missed from the store.
                    for (seq, t) in catch_up(sent, app.clone()).await {
                        if tx.send(Ok(sse_event(seq, &t, None))).await.is_err() {
                            return;
                        }
                        sent = seq;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let stream = tokio_stream_from(out);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response())
}

/// The data of a stream event: the transition, its warning and subject.
fn sse_data(seq: i64, t: &crate::alerts::Transition, by: Option<&str>) -> String {
    let mut data = event_json(seq, t, by);
    data["warning_id"] = json!(t.warning.id);
    data["level"] = json!(t.warning.level);
    data["state"] = json!(t.warning.state());
    data["subject"] = json!({"layer": t.warning.subject.kind.layer(), "id": t.warning.subject.id});
    data.to_string()
}

fn event_of(seq: i64, t: &crate::alerts::Transition, data: &str) -> Event {
    Event::default()
        .id(seq.to_string())
        .event(t.kind.name())
        .data(data)
}

fn sse_event(seq: i64, t: &crate::alerts::Transition, by: Option<&str>) -> Event {
    event_of(seq, t, &sse_data(seq, t, by))
}

/// A stream of the receiver's items (what `tokio-stream`'s wrapper does, in a few
/// lines rather than a dependency).
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
