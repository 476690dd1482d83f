//! HTTP: the only module that knows axum. `router(app)` builds every route (see
//! `router.rs`); `serve` runs it on a listener until shutdown, with the task that
//! follows the store's change feed.

mod auth;
mod collections;
mod error;
mod health;
mod items;
mod landing;
mod metrics;
mod public_url;
mod rejections;
mod router;
mod tiles;
mod web;

use std::sync::Arc;
use std::time::Duration;

pub use error::ApiError;
pub use public_url::parse_public_url;
pub use rejections::{MAX_HEAD_BYTES, MAX_HEADERS};
pub use router::{MAX_BODY_BYTES, router};

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

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let follower = tokio::spawn(follow(app.clone()));
    let result = axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await;
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
