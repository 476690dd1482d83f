//! The accept loop (ours rather than `axum::serve`, so that every connection is
//! accounted for): HTTP/1.1 over hyper, with
//! - a header timeout: a request head must be complete within `header_timeout` of the
//!   connection's accept, or of the first byte of a later request on it (slow or
//!   half-sent headers);
//! - an idle timeout: a keep-alive connection with no request in flight is closed after
//!   `idle_timeout`;
//! - a cap on open connections, kept below the file-descriptor limit: at the cap a new
//!   connection still gets in and the connection idle the longest (no request in flight:
//!   half-sent head or idle keep-alive) is closed for it; only when none is idle is the
//!   newcomer answered a minimal 503 with `Retry-After` and closed. So `/health` answers
//!   even when every slot is held by idle clients.
//!
//! hyper's own `header_read_timeout` is off: in hyper 1.x it starts as soon as the
//! connection waits for a head, which on a keep-alive connection is right after the
//! previous response, so it would close idle keep-alive connections after the header
//! timeout, not the idle one. Both timeouts are kept here instead, by one timer per
//! connection.
//!
//! A request in flight is timed by the request timeout middleware (`router.rs`), not
//! here. "In flight" lasts from the parsed head until the response body has been
//! handed to hyper in full (or dropped).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use super::limit::{LimitOptions, Limits};

/// Default header timeout, in seconds.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// Default idle keep-alive timeout, in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// File descriptors kept free for the store (SQLite opens the database, its WAL and
/// shared-memory file per connection), the listener, logs and the runtime: a tenth of
/// the limit, between 64 and 1,024.
fn fd_reserve(nofile: usize) -> usize {
    (nofile / 10).clamp(64, 1024)
}
/// Pause after an accept error that says the process or system is out of descriptors
/// or memory (retrying at once would spin), in milliseconds.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// How the server treats connections, and its per-kind request limits.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Longest time for a complete request head (seconds in the CLI).
    pub header_timeout: Duration,
    /// Longest time a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Open connections at most (see [`default_max_connections`]).
    pub max_connections: usize,
    /// Per-kind concurrency limits (shared: build it once with [`Limits::new`]).
    pub limits: Arc<Limits>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_timeout: Duration::from_secs(DEFAULT_HEADER_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            max_connections: default_max_connections(),
            limits: Limits::new(&LimitOptions::default()),
        }
    }
}

/// The soft limit on open files of this process (`RLIMIT_NOFILE`).
pub fn fd_limit() -> usize {
    let r = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    // No limit (None) or a huge one: the kernel still caps a process near 2^20 files.
    r.current.map_or(1 << 20, |n| n.min(1 << 20) as usize)
}

/// The connection cap that leaves room below the fd limit: the limit less a reserve
/// (19,000 with the usual 20,000 here; 960 with 1,024).
pub fn default_max_connections() -> usize {
    let nofile = fd_limit();
    nofile.saturating_sub(fd_reserve(nofile)).max(1)
}

/// `requested`, or lower if it would leave no reserve below the fd limit.
pub fn checked_max_connections(requested: usize) -> usize {
    let most = default_max_connections();
    if requested > most {
        tracing::warn!(
            requested,
            allowed = most,
            fd_limit = fd_limit(),
            "the connection cap must stay below the open-file limit; lowered"
        );
        most
    } else {
        requested.max(1)
    }
}

/// Milliseconds since the first call (a process-wide monotonic clock that fits in an
/// atomic); never 0, which stands for "not set".
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One open connection's state, shared by its task, its IO, its requests and the
/// registry.
struct Conn {
    id: u64,
    /// Requests whose response has not been handed over in full.
    in_flight: AtomicU32,
    /// Clock ms since which no request has been in flight (accept time at first).
    idle_since: AtomicU64,
    /// Clock ms of the first byte of a request head received while idle, or the accept
    /// time before the first request; 0 when no head is awaited.
    head_since: AtomicU64,
    /// Set by whoever decides to close it (eviction), so it is closed once.
    closing: AtomicBool,
    close: Notify,
}

impl Conn {
    fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        RequestGuard(self.clone())
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// When the connection must be closed if nothing changes (clock ms), or `None` while
    /// a request is in flight.
    fn deadline(&self, o: &ServeOptions) -> Option<u64> {
        if !self.is_idle() {
            return None;
        }
        let idle = self.idle_since.load(Ordering::Acquire) + o.idle_timeout.as_millis() as u64;
        match self.head_since.load(Ordering::Acquire) {
            0 => Some(idle),
            h => Some(idle.min(h + o.header_timeout.as_millis() as u64)),
        }
    }
}

/// Ends a request's time in flight when dropped (with the response body, or with the
/// request future if the connection goes first).
struct RequestGuard(Arc<Conn>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let c = &self.0;
        c.idle_since.store(now_ms(), Ordering::Release);
        c.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every open connection, for the cap, eviction and shutdown.
struct Registry {
    inner: Mutex<RegistryInner>,
}

struct RegistryInner {
    conns: HashMap<u64, Arc<Conn>>,
    next_id: u64,
    /// The oldest idle connections found by the last scan, oldest last, with the
    /// `idle_since` seen then: eviction pops from here and rescans only when it runs
    /// out, so a burst of newcomers at the cap costs one scan per [`EVICTION_BATCH`].
    candidates: Vec<(u64, Arc<Conn>)>,
}

/// Connections an eviction scan remembers.
const EVICTION_BATCH: usize = 64;

impl Registry {
    fn new() -> Registry {
        Registry {
            inner: Mutex::new(RegistryInner {
                conns: HashMap::new(),
                next_id: 0,
                candidates: Vec::new(),
            }),
        }
    }

    fn len(&self) -> usize {
        self.inner.lock().conns.len()
    }

    fn insert(&self) -> Arc<Conn> {
        let now = now_ms();
        let mut r = self.inner.lock();
        r.next_id += 1;
        let conn = Arc::new(Conn {
            id: r.next_id,
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now),
            head_since: AtomicU64::new(now),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        r.conns.insert(conn.id, conn.clone());
        let n = r.conns.len();
        drop(r);
        metrics::gauge!("riskmap_open_connections").set(n as f64);
        conn
    }

    fn remove(&self, id: u64) {
        let mut r = self.inner.lock();
        if r.conns.remove(&id).is_some() {
            let n = r.conns.len();
            drop(r);
            metrics::gauge!("riskmap_open_connections").set(n as f64);
        }
    }

    /// Closes the connection idle the longest; false if none is idle.
    fn evict_oldest_idle(&self) -> bool {
        let mut r = self.inner.lock();
        for rescanned in [false, true] {
            if rescanned {
                let mut idle: Vec<(u64, Arc<Conn>)> = r
                    .conns
                    .values()
                    .filter(|c| c.is_idle())
                    .map(|c| (c.idle_since.load(Ordering::Acquire), c.clone()))
                    .collect();
                // Oldest first; of two idle since the same millisecond, the older
                // connection (lower id).
                let key = |(t, c): &(u64, Arc<Conn>)| (*t, c.id);
                if idle.len() > EVICTION_BATCH {
                    idle.select_nth_unstable_by_key(EVICTION_BATCH, key);
                    idle.truncate(EVICTION_BATCH);
                }
                idle.sort_unstable_by_key(|e| std::cmp::Reverse(key(e)));
                r.candidates = idle;
            }
            while let Some((seen, c)) = r.candidates.pop() {
                // Still open, still idle, and not busy since the scan.
                let unchanged = c.is_idle() && c.idle_since.load(Ordering::Acquire) == seen;
                if unchanged && r.conns.remove(&c.id).is_some() {
                    let n = r.conns.len();
                    drop(r);
                    c.closing.store(true, Ordering::Release);
                    c.close.notify_one();
                    metrics::gauge!("riskmap_open_connections").set(n as f64);
                    metrics::counter!("riskmap_connections_closed_total", "reason" => "evicted")
                        .increment(1);
                    return true;
                }
            }
        }
        false
    }
}

/// The answer to a connection beyond the cap when no open one is idle (the body is the
/// API's JSON error).
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
x-content-type-options: nosniff\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 103\r\n\r\n\
{\"status\":503,\"code\":\"TooManyConnections\",\"description\":\"too many open connections; try again shortly\"}";

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in
/// flight finish (idle connections are closed at once).
pub async fn run(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let options = Arc::new(options);
    let registry = Arc::new(Registry::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    // Accept errors of one burst are logged once, with their count when it ends.
    let mut failed_accepts = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                if failed_accepts > 0 {
                    tracing::warn!(errors = failed_accepts, "accepting connections again");
                    failed_accepts = 0;
                }
                stream
            }
            Err(e) => {
                metrics::counter!("riskmap_accept_errors_total").increment(1);
                if failed_accepts == 0 {
                    tracing::warn!(error = %e, open = registry.len(), "accept error");
                }
                failed_accepts += 1;
                if out_of_resources(&e) {
                    // Free a descriptor for the next one if an idle connection holds it,
                    // and do not spin while the condition lasts.
                    registry.evict_oldest_idle();
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
                continue;
            }
        };
        if registry.len() >= options.max_connections && !registry.evict_oldest_idle() {
            metrics::counter!("riskmap_connections_refused_total").increment(1);
            // Non-blocking: the answer fits in an empty socket buffer; then closed.
            let _ = stream.try_write(REFUSAL);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let conn = registry.insert();
        let (router, options, registry, stop) = (
            router.clone(),
            options.clone(),
            registry.clone(),
            stop_rx.clone(),
        );
        tokio::spawn(async move {
            let id = conn.id;
            serve_connection(stream, conn, router, &options, stop).await;
            registry.remove(id);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Connections end by themselves now: idle ones at once, busy ones after their
    // request (bounded by the request timeout).
    while registry.len() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Errors after which accepting again at once would fail again.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
            || code == rustix::io::Errno::NFILE.raw_os_error()
            || code == rustix::io::Errno::NOBUFS.raw_os_error()
            || code == rustix::io::Errno::NOMEM.raw_os_error()
    )
}

async fn serve_connection(
    stream: TcpStream,
    conn: Arc<Conn>,
    router: Router,
    options: &ServeOptions,
    mut stop: watch::Receiver<bool>,
) {
    let io = TokioIo::new(Tracked {
        stream,
        conn: conn.clone(),
    });
    let c = conn.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = c.begin_request();
        let mut router = router.clone();
        async move {
            // The router's readiness is unconditional, so it is called directly.
            let resp = tower::Service::call(&mut router, req).await?;
            Ok::<_, Infallible>(resp.map(|body| GuardedBody {
                inner: body,
                guard: Some(guard),
            }))
        }
    });
    let http = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Off: see the module comment; our timer below keeps both timeouts.
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(http);
    let mut stopping = *stop.borrow();
    if stopping && conn.is_idle() {
        return;
    }
    loop {
        let deadline = conn.deadline(options);
        let wake = match deadline {
            Some(d) => Duration::from_millis(d.saturating_sub(now_ms())),
            // A request in flight: look again later (it may end at any time).
            None => options.idle_timeout.min(options.header_timeout),
        };
        tokio::select! {
            r = http.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = conn.close.notified() => return,
            _ = tokio::time::sleep(wake) => {
                if let Some(d) = conn.deadline(options) && now_ms() >= d {
                    let reason = if conn.head_since.load(Ordering::Acquire) != 0 {
                        "header_timeout"
                    } else {
                        "idle_timeout"
                    };
                    metrics::counter!("riskmap_connections_closed_total", "reason" => reason)
                        .increment(1);
                    return;
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                if conn.is_idle() {
                    return;
                }
                http.as_mut().graceful_shutdown();
            }
        }
        if conn.closing.load(Ordering::Acquire) {
            return;
        }
    }
}

/// The socket, noting when the first byte of a request head arrives on an idle
/// connection (that starts its header timeout).
struct Tracked {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before && this.conn.is_idle() {
            // Only the first byte of the head starts the clock.
            let _ = this.conn.head_since.compare_exchange(
                0,
                now_ms(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A response body that keeps its request in flight until it has been read to the end
/// (or dropped).
struct GuardedBody {
    inner: axum::body::Body,
    guard: Option<RequestGuard>,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = r {
            this.guard = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_well_formed_json_error() {
        let text = std::str::from_utf8(REFUSAL).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .expect("a content length");
        assert_eq!(body.len(), len);
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["status"], 503);
        assert_eq!(v["code"], "TooManyConnections");
    }

    #[test]
    fn the_default_cap_leaves_a_reserve_below_the_fd_limit() {
        let nofile = fd_limit();
        let cap = default_max_connections();
        assert!(cap < nofile);
        assert!(nofile - cap >= 64.min(nofile - 1));
        assert_eq!(fd_reserve(20_000), 1024);
        assert_eq!(fd_reserve(1024), 102);
        assert_eq!(fd_reserve(256), 64);
    }
}
