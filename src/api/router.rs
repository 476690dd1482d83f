//! Every route, grouped by who calls it. Route parameters are `{name}`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::routing::get;
use axum::{Router, middleware};
use tower_http::cors::{Any, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use super::error::ApiError;
use super::limit::{self, LimitOptions, Limits};
use super::{
    cap, collections, health, imports, items, landing, metrics, near, plans, tiles, warnings, web,
};
use crate::app::App;

/// Largest request body accepted (a feature with a very detailed polygon).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// A request that takes longer is answered 503 (edits are abandoned before their
/// commit a few seconds earlier, so a timed-out edit never lands).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Every route, with the default per-kind limits.
pub fn router(app: Arc<App>) -> Router {
    router_with(app, Limits::new(&LimitOptions::default()))
}

/// Every route; requests of each kind share `limits` (see `limit.rs`).
pub fn router_with(app: Arc<App>, limits: Arc<Limits>) -> Router {
    // Install the recorder before the first request records anything.
    metrics::handle();
    Router::new()
        // Operators and monitoring.
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::render))
        // Web map clients and planners: the catalogue and features (public reads).
        .route("/", get(web::root))
        // The built-in map page, its style and MapLibre GL JS (embedded, offline).
        .route("/app.js", get(web::app_js))
        .route("/app.css", get(web::app_css))
        .route("/favicon.svg", get(web::favicon))
        .route("/favicon.ico", get(web::favicon))
        .route("/vendor/maplibre-gl/{file}", get(web::vendor))
        .route("/styles/{name}", get(web::style))
        .route("/conformance", get(landing::conformance))
        .route("/api", get(landing::api))
        .route("/api.html", get(landing::api))
        .route(
            "/collections",
            get(collections::list).post(imports::create_layer),
        )
        .route(
            "/collections/{layer}",
            get(collections::one).delete(imports::delete_layer),
        )
        .route(
            "/collections/{layer}/queryables",
            get(collections::queryables),
        )
        // Planners: distances in metres on the ellipsoid, nearest first.
        .route("/collections/{layer}/within", get(near::within))
        .route("/collections/{layer}/nearest", get(near::nearest))
        .route("/collections/{layer}/corridor", get(near::corridor))
        .route(
            "/collections/{layer}/items/{id}/context",
            get(near::context),
        )
        .route(
            "/collections/{layer}/intersects",
            axum::routing::post(near::intersects),
        )
        // Planners: edits (OGC API – Features Part 4), key with role planner or admin.
        .route(
            "/collections/{layer}/items",
            get(items::list).post(items::create),
        )
        .route(
            "/collections/{layer}/items/{id}",
            get(items::get)
                .put(items::replace)
                .patch(items::patch)
                .delete(items::delete),
        )
        // Data staff: file uploads (key with role importer or admin) and their reports.
        .route(
            "/collections/{layer}/imports",
            axum::routing::post(imports::upload),
        )
        .route("/imports", get(imports::list))
        .route("/imports/{id}", get(imports::one))
        // Sensors: readings (key with role sensor or admin).
        .route("/readings", axum::routing::post(warnings::post_readings))
        .route("/sensors/{id}", get(plans::sensor))
        .route(
            "/sensors/{id}/rule",
            axum::routing::put(plans::put_sensor_rule).delete(plans::delete_sensor_rule),
        )
        // Duty officers: warnings (acts need a key with role duty_officer or admin).
        .route("/warnings", get(warnings::list))
        .route("/warnings.atom", get(cap::feed))
        .route("/warnings/stream", get(warnings::stream))
        .route("/warnings/{id}", get(warnings::one))
        .route("/warnings/{id}/ack", axum::routing::post(warnings::ack))
        .route(
            "/warnings/{id}/resolve",
            axum::routing::post(warnings::resolve),
        )
        // Planners: response plans and sensor types (writes: role planner or admin).
        .route("/risk_points", get(plans::risk_points))
        .route(
            "/risk_points/{id}/plan",
            get(plans::point_plan).put(plans::put_point_plan),
        )
        .route(
            "/risk_points/{id}/plan/versions",
            get(plans::point_plan_versions),
        )
        .route(
            "/plan-templates",
            get(plans::templates).post(plans::post_templates),
        )
        .route(
            "/plan-templates/{id}",
            get(plans::template).put(plans::put_template),
        )
        .route(
            "/sensor-types",
            get(plans::sensor_types).post(plans::post_sensor_types),
        )
        .route(
            "/sensor-types/{id}",
            get(plans::sensor_type).put(plans::put_sensor_type),
        )
        // Web maps: vector tiles and TileJSON (public reads).
        .route("/tiles/{layers}/{z}/{x}/{y}", get(tiles::tile))
        .route("/tiles/{file}", get(tiles::tilejson_handler))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Inside `track`, so refusals are counted and timed like every answer.
        .layer(middleware::from_fn_with_state(limits, limit::limit))
        .layer(middleware::from_fn(metrics::track))
        .layer(middleware::from_fn(timeout))
        // Inside CORS, so browsers can read the errors it writes or rewrites as JSON.
        .layer(middleware::from_fn(super::rejections::guard))
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([
                    Method::GET,
                    Method::HEAD,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                    Method::OPTIONS,
                ])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::IF_MATCH,
                    header::IF_NONE_MATCH,
                    header::HeaderName::from_static("idempotency-key"),
                ])
                .expose_headers([header::ETAG, header::LOCATION]),
        )
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

/// Answers JSON 503 when a read runs past [`REQUEST_TIMEOUT`]. Writes are not cut
/// here: a write cut after its commit would be reported as failed when it is not. They
/// carry a deadline instead, checked before the commit (see `items::deadline`); once
/// committed, the answer is the success.
async fn timeout(req: axum::extract::Request, next: middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !req.method().is_safe() {
        return next.run(req).await;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Timeout",
            "the request took too long; try again",
        )
        .with_header(header::RETRY_AFTER, "5")
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such resource; see / for the API's entry points")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "this method is not allowed on this resource",
    )
}
