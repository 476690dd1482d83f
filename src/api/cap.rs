//! `GET /warnings/{id}.cap` (CAP 1.2) and `GET /warnings.atom` (the feed of active
//! warnings), written by [`crate::alerts::cap`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};

use super::blocking;
use super::error::ApiError;
use crate::alerts::cap::{CapInput, CapSubject, FeedEntry, alert_xml, atom_feed};
use crate::alerts::{Level, TransitionKind};
use crate::app::{AlertError, App};

/// Who sends: `riskmap@` and the host the server is reached at.
fn sender(origin: &str) -> String {
    let host = origin
        .split("://")
        .nth(1)
        .unwrap_or(origin)
        .split(['/', ':'])
        .next()
        .filter(|h| !h.is_empty())
        .unwrap_or("localhost");
    format!("riskmap@{host}")
}

fn xml(body: String, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The CAP message of warning `id` as it stands now.
pub async fn alert(app: Arc<App>, id: u64, origin: String) -> Result<Response, ApiError> {
    let body = blocking(move || {
        let w = app.warning(id)?.ok_or(AlertError::NoWarning(id))?;
        let events = app.store().warning_events(id)?;
        let first = events.first().map_or(0, |e| e.0);
        let last = events.last().map_or(0, |e| e.0);
        let moved = events.iter().any(|(_, t)| t.kind != TransitionKind::Raised);
        let info = app.subject_info(&w.subject);
        let level = if w.is_active() { w.level } else { w.peak };
        let (steps, contacts, plan_title) = match app.plan_of(&w.subject.id) {
            Ok(p) if w.subject.kind == crate::alerts::SubjectKind::RiskPoint => {
                (p.levels.of(level).to_vec(), p.contacts, Some(p.title))
            }
            _ => (Vec::new(), Vec::new(), None),
        };
        let evidence = events
            .iter()
            .flat_map(|(_, t)| t.evidence.iter().cloned())
            .collect();
        let sender = sender(&origin);
        Ok::<_, ApiError>(alert_xml(&CapInput {
            sender: &sender,
            warning: &w,
            first_event: first,
            last_event: last,
            moved,
            subject: CapSubject {
                layer: info.layer.to_string(),
                id: info.id,
                name: info.name,
                category: info.category,
                district: info.district,
                position: info.position,
            },
            steps,
            contacts,
            plan_title,
            evidence,
            web: Some(format!("{origin}/warnings/{id}")),
        }))
    })
    .await?;
    Ok(xml(body, "application/cap+xml; charset=utf-8"))
}

/// `GET /warnings.atom`
pub async fn feed(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    super::read_allowed(&app, &headers).await?;
    let (origin, _) = super::public_url::base_url(&app, &headers, &uri)?;
    let body = blocking(move || {
        let open = app.open_warnings();
        let updated = open.iter().map(|w| w.updated_at).max().unwrap_or(0);
        let entries: Vec<FeedEntry> = open
            .into_iter()
            .map(|w| {
                let info = app.subject_info(&w.subject);
                let name = info.name.clone().unwrap_or_else(|| info.id.clone());
                FeedEntry {
                    title: format!("{} warning: {name}", level_title(w.level)),
                    cap_url: format!("{origin}/warnings/{}.cap", w.id),
                    summary: format!(
                        "{} {}{}, {}",
                        info.layer.trim_end_matches('s').replace('_', " "),
                        info.id,
                        info.district
                            .map(|d| format!(" in {d}"))
                            .unwrap_or_default(),
                        w.state()
                    ),
                    warning: w,
                }
            })
            .collect();
        Ok::<_, ApiError>(atom_feed(
            &format!("{origin}/warnings.atom"),
            updated,
            &entries,
        ))
    })
    .await?;
    Ok(xml(body, "application/atom+xml; charset=utf-8"))
}

fn level_title(l: Level) -> String {
    let n = l.name();
    let mut c = n.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
