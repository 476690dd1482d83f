//! HTTP: the only module that knows axum. `router(app)` builds every route (see
//! `router.rs`); `serve` runs it on a listener until shutdown (our own accept loop with
//! connection timeouts and a connection cap: `serve.rs`; per-kind request limits:
//! `limit.rs`), with the task that follows the store's change feed.

mod auth;
mod cap;
mod collections;
mod error;
mod geojson_out;
mod health;
mod imports;
mod items;
mod landing;
mod limit;
mod metrics;
mod near;
mod openapi;
mod plans;
mod public_url;
mod rejections;
mod router;
mod serve;
mod tiles;
mod warnings;
mod web;

use std::sync::Arc;
use std::time::Duration;

pub use error::ApiError;
pub use limit::{DEFAULT_QUEUE_WAIT_MS, Kind, LimitOptions, Limits, Permit};
pub use public_url::parse_public_url;
pub use rejections::{MAX_HEAD_BYTES, MAX_HEADERS, MAX_URI_BYTES};
pub use router::{MAX_BODY_BYTES, router, router_with};
pub use serve::{
    DEFAULT_HEADER_TIMEOUT_SECS, DEFAULT_IDLE_TIMEOUT_SECS, ServeOptions, checked_max_connections,
    default_max_connections, fd_limit,
};
pub use tiles::{RENDER_NICE, render_nice, render_threads};

use crate::app::App;

/// How often the server checks the store for writes by other processes (a
/// `data_version` read, about a microsecond). Readers never catch up themselves (they
/// never wait on writes), so this is how soon another process's commit is served.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// Runs blocking work (SQLite, fsync) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?
}

/// [`auth::require_read`] off the async threads (a key is looked up in the store); no
/// hop at all when reads are public (a hand-off costs more than a small query).
async fn read_allowed(app: &Arc<App>, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    if app.public_reads() {
        return Ok(());
    }
    let (a, h) = (app.clone(), headers.clone());
    blocking(move || auth::require_read(&a, &h)).await
}

/// The answer of a job run on a thread of ours (drawing threads, bulk writes), which
/// sends `catch_unwind`'s result back: a panic or a lost job is an internal error
/// naming `what`.
async fn thread_result<T>(
    rx: tokio::sync::oneshot::Receiver<std::thread::Result<Result<T, ApiError>>>,
    what: &str,
) -> Result<T, ApiError> {
    match rx.await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(ApiError::internal(what, "panicked (see the log above)")),
        Err(e) => Err(ApiError::internal(what, e)),
    }
}

/// Serves `app` on `listener` with the default [`ServeOptions`] until `shutdown`
/// completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, ServeOptions::default(), shutdown).await
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the requests in
/// flight finish.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let follower = tokio::spawn(follow(app.clone()));
    let router = router_with(app, options.limits.clone());
    let result = serve::run(listener, router, options, shutdown).await;
    follower.abort();
    result
}

/// Polls SQLite's `data_version` (cheap) and applies the change feed when another
/// connection has committed.
async fn follow(app: Arc<App>) {
    let mut last_version = None;
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        let a = app.clone();
        let r = tokio::task::spawn_blocking(move || {
            let v = a.store().data_version()?;
            if Some(v) == last_version {
                return Ok((v, 0));
            }
            a.follow_changes().map(|n| (v, n))
        })
        .await;
        match r {
            Ok(Ok((v, n))) => {
                last_version = Some(v);
                if n > 0 {
                    tracing::debug!(changes = n, "applied the store's change feed");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot follow the store's change feed"),
            Err(e) => tracing::warn!(error = %e, "change-feed task failed"),
        }
    }
}
