//! `GET /metrics` (Prometheus text) and the middleware that counts and times every
//! request by route template (never by raw path: that would let clients create
//! unbounded label sets).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::app::App;

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder (installed once: `metrics` has one global).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("riskmap_http_request_duration_seconds".into()),
                &LATENCY_BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(h) => h,
            // Another recorder is installed (embedding application): render an empty one.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    // Only standard methods become label values: clients must not create series.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m.to_string(),
        _ => "other".to_string(),
    };
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("riskmap_http_requests_total", "method" => method, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("riskmap_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

pub async fn render(State(app): State<Arc<App>>) -> Response {
    for l in app.layers().iter() {
        let n = l.index.read().len();
        metrics::gauge!("riskmap_features", "layer" => l.def.name.clone()).set(n as f64);
        let unreadable = l.unreadable.lock().len();
        metrics::gauge!("riskmap_unreadable_rows", "layer" => l.def.name.clone())
            .set(unreadable as f64);
    }
    metrics::gauge!("riskmap_uptime_seconds").set(app.uptime().as_secs_f64());
    metrics::gauge!("riskmap_tile_cache_bytes").set(app.tile_cache().weighted_size() as f64);
    metrics::gauge!("riskmap_tile_cache_entries").set(app.tile_cache().entry_count() as f64);
    let a = app.clone();
    match tokio::task::spawn_blocking(move || a.store().import_totals()).await {
        Ok(Ok(rows)) => {
            for t in rows {
                metrics::counter!("riskmap_imports_total", "layer" => t.layer.clone())
                    .absolute(t.imports);
                let outcomes = [
                    ("added", t.added),
                    ("updated", t.updated),
                    ("unchanged", t.unchanged),
                ];
                for (outcome, n) in outcomes {
                    metrics::counter!("riskmap_imported_features_total", "layer" => t.layer.clone(), "outcome" => outcome)
                        .absolute(n);
                }
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot read import totals for /metrics"),
        Err(e) => tracing::warn!(error = %e, "cannot read import totals for /metrics"),
    }
    let h = handle();
    h.run_upkeep();
    let mut resp = h.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
