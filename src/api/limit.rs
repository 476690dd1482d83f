//! Per-kind concurrency limits: at most N tiles being drawn, N feature queries and N
//! writes in a handler at once, process-wide. Beyond that a request may wait for a slot,
//! but only while the kind is not overloaded:
//!
//! - a request that finds no free slot waits (at most `queue_wait`, behind at most
//!   [`QUEUE_PER_SLOT`] × the limit others): a map opening asks for a dozen tiles at once
//!   over its six connections, and each of them is drawn a few milliseconds later;
//! - a request refused (the queue full, or its wait over) puts the kind into refusal for
//!   [`REFUSAL_HOLD`]: while it lasts a request that finds no free slot gets the 503 at
//!   once, without waiting, and each such refusal extends it. Under sustained overload
//!   the kind therefore stays in refusal: the excess is answered in microseconds and an
//!   admitted request waits for nobody (its latency is its own work). Once requests find
//!   free slots again for the length of the hold, waiting is allowed again.
//!
//! This is the idea of adaptive shedding (as in CoDel): a queue is good for bursts and
//! bad under sustained overload, so it is offered only while it drains.
//!
//! One [`Limits`] is created per router and shared by every clone of it through an
//! `Arc` (a `tower::limit::ConcurrencyLimitLayer` added with `Router::layer` would give
//! each clone its own semaphore and limit nothing). `/health`, `/metrics`, the map page
//! and TileJSON are never limited, and neither are tiles answered from the cache: a tile
//! request takes its slot (through [`TileAdmission`]) only when the tile must be drawn,
//! so a map's burst of cached tiles is never refused while drawing is saturated.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// What a request costs the server, for its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `GET /tiles/{layers}/{z}/{x}/{y}` that must be drawn (not cached): CPU-bound.
    Tiles,
    /// `GET` of collections and features: index queries and GeoJSON encoding.
    Queries,
    /// `POST`/`PUT`/`PATCH`/`DELETE` of features: validation and a synced commit.
    Writes,
    /// `POST /readings`: its own budget, so tiles never delay warnings and readings
    /// never take the slots of edits.
    Readings,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Tiles, Kind::Queries, Kind::Writes, Kind::Readings];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Tiles => "tiles",
            Kind::Queries => "queries",
            Kind::Writes => "writes",
            Kind::Readings => "readings",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The kind of a routed request (`route` is the matched route template), or
    /// `None` for requests that are never limited.
    pub fn of(method: &Method, route: &str) -> Option<Kind> {
        let read = method == Method::GET || method == Method::HEAD;
        match route {
            "/tiles/{layers}/{z}/{x}/{y}" if read => Some(Kind::Tiles),
            "/readings" if method == Method::POST => Some(Kind::Readings),
            "/collections"
            | "/collections/{layer}"
            | "/collections/{layer}/queryables"
            | "/collections/{layer}/within"
            | "/collections/{layer}/nearest"
            | "/collections/{layer}/corridor"
            | "/collections/{layer}/items/{id}/context"
                if read =>
            {
                Some(Kind::Queries)
            }
            // A query whose geometry comes in the body: a read all the same.
            "/collections/{layer}/intersects" if method == Method::POST => Some(Kind::Queries),
            "/collections/{layer}/items" | "/collections/{layer}/items/{id}" => {
                if read {
                    Some(Kind::Queries)
                } else if method == Method::OPTIONS {
                    None
                } else {
                    Some(Kind::Writes)
                }
            }
            _ => None,
        }
    }
}

/// Requests of each kind in a handler at once, and how long an excess request may
/// wait for a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitOptions {
    pub tiles: usize,
    pub queries: usize,
    pub writes: usize,
    pub readings: usize,
    /// Longest wait for a slot before the 503 when the kind is not overloaded (zero:
    /// never wait).
    pub queue_wait: Duration,
}

/// Default longest wait for a slot, in milliseconds: long enough for a map's burst of
/// tiles to be drawn (a dozen tiles, a few milliseconds each, on one thread per core).
pub const DEFAULT_QUEUE_WAIT_MS: u64 = 1000;

/// Requests that may wait for a slot, per slot of the limit.
pub const QUEUE_PER_SLOT: usize = 4;

/// How long a refusal keeps a kind refusing without a wait (see the module's notes).
pub const REFUSAL_HOLD: Duration = Duration::from_secs(1);

impl LimitOptions {
    /// Defaults for `cores` CPU cores: tiles drawn at once, one per core, as many as the
    /// drawing threads (drawing is CPU-bound: a second drawing per core would only make
    /// both take twice as long, and an admitted tile never waits behind another one;
    /// cached tiles are not counted); queries two per core (CPU-bound too, but a query
    /// also waits between its steps, so two keep a core busy); writes one per core, at
    /// least two (they take turns at the store's single writer anyway, and a commit
    /// waits on fsync, not on a core).
    pub fn for_cores(cores: usize) -> LimitOptions {
        let cores = cores.max(1);
        LimitOptions {
            tiles: cores,
            queries: 2 * cores,
            writes: cores.max(2),
            // Readings wait for their group's commit, not for a core: enough at once
            // for groups to fill while one commits.
            readings: 8 * cores,
            queue_wait: Duration::from_millis(DEFAULT_QUEUE_WAIT_MS),
        }
    }

    pub fn get(&self, kind: Kind) -> usize {
        match kind {
            Kind::Tiles => self.tiles,
            Kind::Queries => self.queries,
            Kind::Writes => self.writes,
            Kind::Readings => self.readings,
        }
    }
}

impl Default for LimitOptions {
    fn default() -> Self {
        LimitOptions::for_cores(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

struct Slot {
    permits: Arc<Semaphore>,
    /// Requests waiting for a permit now; at most `QUEUE_PER_SLOT` × the limit.
    waiting: AtomicUsize,
    limit: usize,
    /// Until when (microseconds since `Limits::epoch`) requests are refused without a
    /// wait; 0: not refusing.
    refusing_until: AtomicU64,
}

/// The process-wide limiter: one semaphore per kind.
pub struct Limits {
    slots: [Slot; 4],
    queue_wait: Duration,
    epoch: Instant,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("tiles", &self.limit(Kind::Tiles))
            .field("queries", &self.limit(Kind::Queries))
            .field("writes", &self.limit(Kind::Writes))
            .field("readings", &self.limit(Kind::Readings))
            .field("queue_wait", &self.queue_wait)
            .finish()
    }
}

/// A request's slot; released when dropped.
#[derive(Debug)]
pub struct Permit(#[allow(dead_code)] OwnedSemaphorePermit);

impl Limits {
    pub fn new(options: &LimitOptions) -> Arc<Limits> {
        let slot = |kind| {
            // A limit of zero would refuse every request of the kind: take it as one.
            let limit = options.get(kind).max(1);
            Slot {
                permits: Arc::new(Semaphore::new(limit)),
                waiting: AtomicUsize::new(0),
                limit,
                refusing_until: AtomicU64::new(0),
            }
        };
        Arc::new(Limits {
            slots: Kind::ALL.map(slot),
            queue_wait: options.queue_wait,
            epoch: Instant::now(),
        })
    }

    pub fn limit(&self, kind: Kind) -> usize {
        self.slots[kind.index()].limit
    }

    /// Requests of `kind` waiting for a slot now.
    pub fn waiting(&self, kind: Kind) -> usize {
        self.slots[kind.index()].waiting.load(Ordering::Acquire)
    }

    /// A slot if one is free now (never waits). Also lets an operator's tool or a test
    /// hold slots.
    pub fn try_acquire(&self, kind: Kind) -> Option<Permit> {
        self.slots[kind.index()]
            .permits
            .clone()
            .try_acquire_owned()
            .ok()
            .map(Permit)
    }

    /// Whether requests of `kind` are being refused without a wait now (overload).
    pub fn refusing(&self, kind: Kind) -> bool {
        self.now_us()
            < self.slots[kind.index()]
                .refusing_until
                .load(Ordering::Acquire)
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Refuses a request of the slot's kind, holding the refusal (see the module).
    fn refuse(&self, slot: &Slot) -> Option<Permit> {
        let until = self.now_us() + REFUSAL_HOLD.as_micros() as u64;
        slot.refusing_until.fetch_max(until, Ordering::AcqRel);
        None
    }

    /// A slot: at once if one is free; else, unless the kind is refusing (overloaded),
    /// after a wait of at most `queue_wait` behind at most `QUEUE_PER_SLOT` × `limit`
    /// others. `None` means refuse.
    pub async fn acquire(&self, kind: Kind) -> Option<Permit> {
        if let Some(p) = self.try_acquire(kind) {
            return Some(p);
        }
        let slot = &self.slots[kind.index()];
        if self.queue_wait.is_zero() || self.refusing(kind) {
            return self.refuse(slot);
        }
        if slot.waiting.fetch_add(1, Ordering::AcqRel) >= slot.limit * QUEUE_PER_SLOT {
            slot.waiting.fetch_sub(1, Ordering::AcqRel);
            return self.refuse(slot);
        }
        let got = tokio::time::timeout(self.queue_wait, slot.permits.clone().acquire_owned()).await;
        slot.waiting.fetch_sub(1, Ordering::AcqRel);
        match got {
            Ok(Ok(p)) => Some(Permit(p)),
            // Timed out (or the semaphore was closed, which never happens).
            _ => self.refuse(slot),
        }
    }
}

/// Seconds a refused client is asked to wait before trying again.
pub const RETRY_AFTER_SECS: &str = "1";

/// The 503 for a refused request of `kind` (counted in
/// `riskmap_rejected_requests_total{kind}`).
fn overloaded(limits: &Limits, kind: Kind) -> ApiError {
    metrics::counter!("riskmap_rejected_requests_total", "kind" => kind.name()).increment(1);
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Overloaded",
        format!(
            "too many {} requests at once (limit {}); try again shortly",
            kind.name(),
            limits.limit(kind)
        ),
    )
    .with_header(header::RETRY_AFTER, RETRY_AFTER_SECS)
}

/// Given to the tile handler in the request's extensions: it takes a slot of
/// [`Kind::Tiles`] only when the tile is not in the cache.
#[derive(Clone, Debug)]
pub struct TileAdmission(pub Arc<Limits>);

impl TileAdmission {
    /// A drawing slot, or the 503 to answer.
    pub async fn admit(&self) -> Result<Permit, ApiError> {
        self.0
            .acquire(Kind::Tiles)
            .await
            .ok_or_else(|| overloaded(&self.0, Kind::Tiles))
    }
}

/// Middleware: takes a slot of the request's kind for the time of its handler, or
/// answers 503 with `Retry-After`. Tile requests are passed on with a
/// [`TileAdmission`] instead.
pub async fn limit(State(limits): State<Arc<Limits>>, mut req: Request, next: Next) -> Response {
    let kind = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| Kind::of(req.method(), p.as_str()));
    match kind {
        None => next.run(req).await,
        Some(Kind::Tiles) => {
            req.extensions_mut().insert(TileAdmission(limits));
            next.run(req).await
        }
        Some(kind) => match limits.acquire(kind).await {
            Some(_permit) => next.run(req).await,
            None => overloaded(&limits, kind).into_response(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_by_route_and_method() {
        let tile = "/tiles/{layers}/{z}/{x}/{y}";
        assert_eq!(Kind::of(&Method::GET, tile), Some(Kind::Tiles));
        assert_eq!(Kind::of(&Method::POST, tile), None);
        let items = "/collections/{layer}/items";
        assert_eq!(Kind::of(&Method::GET, items), Some(Kind::Queries));
        assert_eq!(Kind::of(&Method::POST, items), Some(Kind::Writes));
        let item = "/collections/{layer}/items/{id}";
        for m in [Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(Kind::of(&m, item), Some(Kind::Writes));
        }
        assert_eq!(Kind::of(&Method::OPTIONS, item), None);
        assert_eq!(Kind::of(&Method::GET, "/collections"), Some(Kind::Queries));
        for q in ["within", "nearest", "corridor", "queryables"] {
            let route = format!("/collections/{{layer}}/{q}");
            assert_eq!(Kind::of(&Method::GET, &route), Some(Kind::Queries), "{q}");
        }
        assert_eq!(
            Kind::of(&Method::POST, "/collections/{layer}/intersects"),
            Some(Kind::Queries)
        );
        assert_eq!(Kind::of(&Method::GET, "/health"), None);
        assert_eq!(Kind::of(&Method::GET, "/metrics"), None);
        assert_eq!(Kind::of(&Method::GET, "/tiles/{file}"), None);
    }

    #[tokio::test]
    async fn a_full_kind_refuses_after_a_bounded_wait_and_others_are_free() {
        let limits = Limits::new(&LimitOptions {
            tiles: 1,
            queries: 1,
            writes: 1,
            readings: 1,
            queue_wait: Duration::from_millis(1),
        });
        let held = limits.try_acquire(Kind::Tiles).expect("a free slot");
        assert!(limits.try_acquire(Kind::Tiles).is_none());
        assert!(!limits.refusing(Kind::Tiles));
        assert!(limits.acquire(Kind::Tiles).await.is_none());
        // The refusal holds: the kind now refuses without waiting, other kinds do not.
        assert!(limits.refusing(Kind::Tiles));
        assert!(!limits.refusing(Kind::Queries));
        assert!(limits.acquire(Kind::Queries).await.is_some());
        drop(held);
        // A free slot is always taken, refusing or not.
        assert!(limits.acquire(Kind::Tiles).await.is_some());
    }

    #[tokio::test]
    async fn a_burst_waits_its_turn_and_sustained_overload_is_refused_at_once() {
        let limits = Limits::new(&LimitOptions {
            tiles: 1,
            queries: 1,
            writes: 1,
            readings: 1,
            // Long enough that waiters are still queued when the next ones come.
            queue_wait: Duration::from_secs(3600),
        });
        let held = limits.try_acquire(Kind::Tiles).expect("a free slot");
        // A burst: the queue (QUEUE_PER_SLOT per slot) takes four waiters.
        let mut waiters = Vec::new();
        for n in 1..=QUEUE_PER_SLOT {
            let l = limits.clone();
            waiters.push(tokio::spawn(async move {
                l.acquire(Kind::Tiles).await.map(|_| ())
            }));
            while limits.waiting(Kind::Tiles) < n {
                tokio::task::yield_now().await;
            }
        }
        assert!(!limits.refusing(Kind::Tiles));
        // The fifth finds the queue full: refused at once (not after the hour), and
        // the kind is refusing from then on.
        let started = std::time::Instant::now();
        assert!(limits.acquire(Kind::Tiles).await.is_none());
        assert!(started.elapsed() < Duration::from_secs(60));
        assert!(limits.refusing(Kind::Tiles));
        // The queued burst is still served, in turn.
        drop(held);
        for w in waiters {
            assert!(w.await.expect("waiter runs").is_some());
        }
        // While refusing, a request that finds no free slot does not wait at all.
        let held = limits.try_acquire(Kind::Tiles).expect("a free slot");
        let l = limits.clone();
        let late = tokio::spawn(async move { l.acquire(Kind::Tiles).await.is_some() });
        assert!(
            !late.await.expect("runs"),
            "refused without waiting for the hour"
        );
        drop(held);
    }
}
