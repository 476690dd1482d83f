//! `GET /tiles/{layers}/{z}/{x}/{y}.mvt` (one or several comma-separated layers; MVT
//! 2.1, gzip when accepted, `ETag` / `If-None-Match`, 204 when empty) and
//! `GET /tiles/{layers}.json` (TileJSON 3.0.0).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::limit::TileAdmission;
use super::read_allowed;
use crate::app::App;
use crate::index::{LayerState, clock_ms};
use crate::model::{Bbox, GeometryType, PropertyType};
use crate::tiles::{self, CachedTile, LayerListError, Source, TileCoord, TileKey};

const MVT: &str = "application/vnd.mapbox-vector-tile";
/// Tiles are revalidated on every use (`no-cache` + ETag: a 304 costs nothing), so a
/// client never shows a tile an acknowledged edit has changed.
const CACHE_CONTROL: &str = "public, no-cache";
/// Marks a tile answered from the cache although a change touched it since it was
/// drawn: `redrawing` (only warning levels changed, less than [`TILE_BEHIND_MS`] ago,
/// during a storm of warnings) or `drawing overloaded`. The client's next
/// revalidation gets the current tile.
const STALE_HEADER: &str = "riskmap-stale";

fn list_error(e: LayerListError) -> ApiError {
    match e {
        LayerListError::Unknown(_) => ApiError::not_found(e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    }
}

/// Whether `Accept-Encoding` allows gzip (RFC 9110, 12.5.3): named or through `*`,
/// with a quality above zero (`q=0`, `q=0.00`... refuse it; a named coding overrides
/// `*`). Items with an unreadable quality are ignored.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    for item in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        let q = match parts.find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))) {
            None => Some(1.0),
            Some(q) => q
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q)),
        };
        let Some(q) = q else { continue };
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(gzip.map_or(q, |g: f32| g.max(q)));
        } else if coding == "*" {
            any = Some(q);
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == etag || t == "*" || t.strip_prefix("W/") == Some(etag))
        })
}

fn respond(t: &CachedTile, headers: &HeaderMap) -> Result<Response, ApiError> {
    let gzip = accepts_gzip(headers) && t.gzip.is_some();
    let tag = if gzip { t.etag_gzip() } else { t.etag() };
    let etag = HeaderValue::from_str(&tag).map_err(|e| ApiError::internal("tile etag", e))?;
    let mut resp = if not_modified(headers, &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match &t.gzip {
            None => StatusCode::NO_CONTENT.into_response(),
            Some(gz) if gzip => {
                let mut r = Body::from(gz.clone()).into_response();
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            }
            Some(gz) => {
                use std::io::Read;
                let mut raw = Vec::with_capacity(t.raw_len);
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_end(&mut raw)
                    .map_err(|e| ApiError::internal("gunzip tile", e))?;
                Body::from(raw).into_response()
            }
        }
    };
    let h = resp.headers_mut();
    if t.gzip.is_some() {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(MVT));
    }
    h.insert(header::ETAG, etag);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    Ok(resp)
}

type TilePath = Result<Path<(String, String, String, String)>, PathRejection>;

/// Tiles are drawn on threads of their own, a fixed number of them: the knob
/// `RISKMAP_RENDER_THREADS` (read once; 1 to 256), by default one per core, as many as
/// tiles may be drawn at once (`--max-tile-requests`): drawing is CPU-bound, so more
/// threads would only share the cores. A fixed set (rather than tokio's blocking pool,
/// which grows to 512 threads under load) bounds the memory drawing can hold: each
/// thread keeps its stack, its gzip compressor and its allocator caches, see "Memory
/// budget" in the README.
///
/// Drawing threads run at a lower CPU priority ([`RENDER_NICE`]): when the cores are
/// saturated by drawing, the threads that accept connections, answer cached tiles,
/// `/health`, feature reads and the 503s of an overload still get a core at once
/// instead of after a scheduler time slice (measured in `benches/connections.sh
/// overload`). Alone on a machine, drawing still gets every idle cycle.
pub const RENDER_THREADS_ENV: &str = "RISKMAP_RENDER_THREADS";

/// The nice value of drawing threads (Linux: per thread; 0 is normal, 19 the lowest),
/// unless `RISKMAP_RENDER_NICE` says otherwise.
pub const RENDER_NICE: i32 = 5;

/// The nice value drawing threads run at.
pub fn render_nice() -> i32 {
    std::env::var("RISKMAP_RENDER_NICE")
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .filter(|n| (0..=19).contains(n))
        .unwrap_or(RENDER_NICE)
}

/// The number of drawing threads: `RISKMAP_RENDER_THREADS` or one per core.
pub fn render_threads() -> usize {
    std::env::var(RENDER_THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=256).contains(n))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

type Job = Box<dyn FnOnce() + Send>;

/// The drawing threads and their queue.
struct RenderPool {
    /// One permit per thread, taken before a job is queued and given back when it
    /// ends: at most one job per thread is queued or running; further requests wait
    /// here, in arrival order (the semaphore is fair), and leave the queue when their
    /// client goes away.
    slots: Arc<tokio::sync::Semaphore>,
    jobs: std::sync::mpsc::Sender<Job>,
}

impl RenderPool {
    /// `threads` threads named `riskmap-{name}-N`, at the drawing threads' priority.
    fn start(threads: usize, name: &str) -> std::io::Result<RenderPool> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(parking_lot::Mutex::new(queue));
        let mut started = 0;
        let nice = render_nice();
        // Each thread says when it runs at its priority: the pool is ready when all are.
        let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
        for i in 0..threads {
            let queue = queue.clone();
            let ready_tx = ready_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("riskmap-{name}-{i}"))
                .spawn(move || {
                    crate::app::lower_thread_priority(nice);
                    let _ = ready_tx.send(());
                    drop(ready_tx);
                    loop {
                        // The lock is held only while taking the next job.
                        let job = queue.lock().recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) if started == 0 => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, started, "fewer tile drawing threads than asked");
                    break;
                }
            }
        }
        drop(ready_tx);
        for _ in 0..started {
            // Only fails if a thread died before saying it was ready: no wait then.
            if ready.recv().is_err() {
                break;
            }
        }
        Ok(RenderPool {
            slots: Arc::new(tokio::sync::Semaphore::new(started)),
            jobs,
        })
    }

    /// Runs `f` on a drawing thread. A panic in `f` is caught (the thread lives on)
    /// and answered as an internal error.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::internal("render queue", e))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                drop(permit);
                // The client may have gone away: the tile is cached all the same.
                let _ = tx.send(r);
            }))
            .map_err(|e| ApiError::internal("render queue", e))?;
        super::thread_result(rx, "drawing a tile").await
    }

    /// Queues `job` without waiting for it (and without a slot: the caller bounds how
    /// many it queues). False if the threads are gone.
    fn submit(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }
}

/// How far behind warning levels a tile may be answered during a storm of warnings
/// (milliseconds; `RISKMAP_TILE_BEHIND_MS`, 0 to 900, overrides it). The rule
/// is that the tiles a change touches are fresh within a second: half of it is left
/// for the redraw.
pub const TILE_BEHIND_MS: u64 = 500;

/// A storm of warnings: at least this many changes of warning levels within the last
/// second in one of a tile's layers. Below it (a warning raised now and then), the
/// next tile fetched after a change always shows it.
pub const STORM_CHANGES_PER_SECOND: usize = 100;

/// At most this many tiles wait to be redrawn in the background; beyond, a tile
/// behind is drawn by the request that finds it once it is too far behind.
const MAX_PENDING_REDRAWS: usize = 1024;

fn tile_behind_ms() -> u64 {
    static MS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MS.get_or_init(|| {
        std::env::var("RISKMAP_TILE_BEHIND_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&ms| ms <= 900)
            .unwrap_or(TILE_BEHIND_MS)
    })
}

/// Whether a tile behind warning levels since `since_ms` may be answered now: during a
/// storm in one of its layers, and at most [`TILE_BEHIND_MS`] behind.
fn may_answer_behind(layers: &[&LayerState], since_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(since_ms) <= tile_behind_ms()
        && layers.iter().any(|l| {
            l.mark_changes.recorded_since(now_ms.saturating_sub(1000)) >= STORM_CHANGES_PER_SECOND
        })
}

type RedrawKey = (usize, TileKey);

/// Tiles behind warning levels, redrawn in the background during a storm of warnings:
/// the request that finds one is answered at once from the cache, and the tile is
/// current again for the next. A flood of readings at city scale changes levels across
/// the whole city every second: drawn in the requests that found them, those redraws
/// took the tile p99 from 1.9 to 15.4 ms (`benches/readings.sh`, closed loop).
///
/// A drawing pool of its own, one thread per core at the drawing threads' priority
/// (nice 5), so that redraws never take a request's drawing slot. Under `SCHED_IDLE`
/// they were starved by the readings flood (which also runs there) and most tiles
/// behind grew too old and were drawn by requests after all (measured with the flood
/// and the tiles alone: 1,155 redrawn, 3,643 drawn in requests, p99 11.2 ms; at nice 5,
/// 3,476 redrawn, 7 drawn in requests, p99 4.5 ms).
struct Redrawer {
    pending: Arc<parking_lot::Mutex<std::collections::HashSet<RedrawKey>>>,
    pool: RenderPool,
}

impl Redrawer {
    /// Asks for `key` to be redrawn, unless it is already asked for or too many are.
    fn ask(&self, app: &Arc<App>, key: &TileKey) {
        let k = (Arc::as_ptr(app) as usize, key.clone());
        {
            let mut pending = self.pending.lock();
            if pending.len() >= MAX_PENDING_REDRAWS || !pending.insert(k.clone()) {
                return;
            }
        }
        let (app, key, pending) = (app.clone(), key.clone(), self.pending.clone());
        let queued = self.pool.submit(Box::new(move || {
            let all = app.layers();
            if let Ok(layers) = tiles::resolve(&key.layers, &all) {
                let drawn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    tiles::tile(app.tile_cache(), &key.layers, &layers, key.coord)
                }));
                match drawn {
                    Ok((_, Source::Drawn)) => {
                        metrics::counter!("riskmap_tiles_redrawn_total").increment(1)
                    }
                    Ok(_) => {}
                    Err(_) => tracing::error!(?key, "redrawing a tile panicked"),
                }
            }
            pending.lock().remove(&(Arc::as_ptr(&app) as usize, key));
        }));
        if !queued {
            self.pending.lock().remove(&k);
        }
    }
}

/// The background redrawing threads, started at the first tile found behind.
fn redrawer() -> Option<&'static Redrawer> {
    static R: std::sync::OnceLock<Option<Redrawer>> = std::sync::OnceLock::new();
    R.get_or_init(|| match RenderPool::start(render_threads(), "redraw") {
        Ok(pool) => Some(Redrawer {
            pending: Default::default(),
            pool,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "no tile redrawing threads: tiles behind are drawn by requests");
            None
        }
    })
    .as_ref()
}

/// The drawing threads, started at the first tile that is drawn.
fn render_pool() -> Result<&'static RenderPool, ApiError> {
    static POOL: std::sync::OnceLock<Result<RenderPool, String>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| RenderPool::start(render_threads(), "render").map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| ApiError::internal("starting the tile drawing threads", e))
}

pub async fn tile(
    State(app): State<Arc<App>>,
    admission: Option<Extension<TileAdmission>>,
    path: TilePath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((spec, z, x, y)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let y = y
        .strip_suffix(".mvt")
        .or_else(|| y.strip_suffix(".pbf"))
        .ok_or_else(|| {
            ApiError::not_found("tile paths end in .mvt: /tiles/{layers}/{z}/{x}/{y}.mvt")
        })?;
    let coord = TileCoord::parse(&z, &x, y).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let all = app.layers();
    let layers = tiles::resolve(&spec, &all).map_err(list_error)?;
    read_allowed(&app, &headers).await?;
    let spec: Arc<str> = spec.into();
    let key = tiles::TileKey {
        layers: spec.clone(),
        coord,
    };
    // A fresh cached tile is answered here, and so is one a little behind warning
    // levels during a storm of warnings (redrawn in the background); drawing happens
    // off the async threads.
    let found = match app.tile_cache().lookup(&key, &layers) {
        tiles::Lookup::Behind { tile, since_ms } => {
            match redrawer().filter(|_| may_answer_behind(&layers, since_ms, clock_ms())) {
                Some(r) => {
                    r.ask(&app, &key);
                    metrics::counter!("riskmap_tiles_total", "source" => "behind").increment(1);
                    let mut resp = respond(&tile, &headers)?;
                    resp.headers_mut()
                        .insert(STALE_HEADER, HeaderValue::from_static("redrawing"));
                    return Ok(resp);
                }
                None => tiles::Lookup::Stale(tile),
            }
        }
        other => other,
    };
    let t = match found {
        tiles::Lookup::Fresh(t) => {
            metrics::counter!("riskmap_tiles_total", "source" => "cache").increment(1);
            t
        }
        other => {
            // Only a tile to draw takes a drawing slot. When drawing is overloaded (a
            // flood of warnings touching every tile), the tile drawn before the latest
            // change is answered, marked stale, rather than the 503 of an overload.
            let _slot = match &admission {
                Some(Extension(a)) => match (a.admit().await, other) {
                    (Ok(permit), _) => Some(permit),
                    (Err(_), tiles::Lookup::Stale(t)) => {
                        metrics::counter!("riskmap_tiles_total", "source" => "stale").increment(1);
                        let mut resp = respond(&t, &headers)?;
                        resp.headers_mut()
                            .insert(STALE_HEADER, HeaderValue::from_static("drawing overloaded"));
                        return Ok(resp);
                    }
                    (Err(e), _) => return Err(e),
                },
                None => None,
            };
            let a = app.clone();
            let (t, source) = render_pool()?
                .run(move || {
                    let all = a.layers();
                    let layers = tiles::resolve(&spec, &all).map_err(list_error)?;
                    Ok(tiles::tile(a.tile_cache(), &spec, &layers, coord))
                })
                .await?;
            let label = if source == Source::Cache {
                "cache"
            } else {
                "drawn"
            };
            metrics::counter!("riskmap_tiles_total", "source" => label).increment(1);
            t
        }
    };
    respond(&t, &headers)
}

fn fields(l: &LayerState) -> Map<String, Value> {
    let mut f = Map::new();
    f.insert(l.def.id_property.clone(), "String".into());
    for p in &l.def.properties {
        let t = match p.ty {
            PropertyType::String | PropertyType::Date | PropertyType::DateTime => "String",
            PropertyType::Integer | PropertyType::Float => "Number",
            PropertyType::Boolean => "Boolean",
        };
        f.insert(p.name.clone(), t.into());
    }
    if matches!(
        l.def.geometry,
        GeometryType::Point | GeometryType::MultiPoint
    ) {
        f.insert("cluster".into(), "Boolean".into());
        f.insert("count".into(), "Number".into());
    }
    f
}

/// TileJSON 3.0.0 for a layer list.
pub fn tilejson(layers: &[&LayerState], spec: &str, base: &str) -> Value {
    let extent: Option<Bbox> = layers
        .iter()
        .filter_map(|l| l.index.read().extent())
        .reduce(Bbox::union);
    let (minzoom, maxzoom) = (
        layers.iter().map(|l| l.def.minzoom).min().unwrap_or(0),
        layers.iter().map(|l| l.def.maxzoom).max().unwrap_or(22),
    );
    let bounds = extent.map_or([-180.0, -85.051_128_78, 180.0, 85.051_128_78], |b| {
        [
            b.min_lon,
            b.min_lat.max(-85.051_128_78),
            b.max_lon,
            b.max_lat.min(85.051_128_78),
        ]
    });
    let centre = [
        (bounds[0] + bounds[2]) / 2.0,
        (bounds[1] + bounds[3]) / 2.0,
        (minzoom.max(7)) as f64,
    ];
    let vector_layers: Vec<Value> = layers
        .iter()
        .map(|l| {
            json!({
                "id": l.def.name, "description": l.def.title,
                "minzoom": l.def.minzoom, "maxzoom": l.def.maxzoom, "fields": fields(l),
            })
        })
        .collect();
    json!({
        "tilejson": "3.0.0",
        "name": format!("riskmap {spec}"),
        "scheme": "xyz",
        "tiles": [format!("{base}/tiles/{spec}/{{z}}/{{x}}/{{y}}.mvt")],
        "minzoom": minzoom,
        "maxzoom": maxzoom,
        "bounds": bounds,
        "center": centre,
        "vector_layers": vector_layers,
        "attribution": "riskmap; boundary: Natural Earth; rivers: GSHHG (LGPL-3.0)",
    })
}

pub async fn tilejson_handler(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(file) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let spec = file
        .strip_suffix(".json")
        .ok_or_else(|| ApiError::not_found("TileJSON is at /tiles/{layers}.json"))?;
    let all = app.layers();
    let layers = tiles::resolve(spec, &all).map_err(list_error)?;
    read_allowed(&app, &headers).await?;
    let (base, vary) = super::public_url::base_url(&app, &headers, &uri)?;
    let doc = tilejson(&layers, spec, &base);
    let mut resp = doc.to_string().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(v) = vary {
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static(v));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_taken_when_allowed_with_a_quality_above_zero() {
        let cases = [
            ("gzip", true),
            ("br, gzip;q=0.5", true),
            ("GZIP", true),
            ("x-gzip", true),
            ("*", true),
            ("identity", false),
            ("gzip;q=0", false),
            ("gzip;q=0.00", false),
            ("gzip; q=0.000", false),
            ("gzip;q=0.001", true),
            ("*;q=0", false),
            ("*, gzip;q=0", false),
            ("gzip;q=0, *", false),
            ("gzip;q=nonsense", false),
            ("", false),
        ];
        for (value, want) in cases {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            assert_eq!(accepts_gzip(&h), want, "{value:?}");
        }
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
