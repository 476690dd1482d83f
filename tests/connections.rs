//! Connections and overload through real sockets (port 0): the header and idle
//! timeouts close held connections, the connection cap evicts the longest-idle
//! connection so a newcomer (and `/health`) still gets in, and a full request kind is
//! answered a JSON 503 with `Retry-After` while other kinds and `/health` go on.
//! Short timeouts come through `ServeOptions`; limits are held from the test through
//! the shared `Limits`, so nothing depends on how fast the machine is.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use riskmap::api::{Kind, LimitOptions, Limits, ServeOptions};

/// Longest wait for something the server must do by itself (closing a connection
/// after a timeout of at most a second): a safety net so a broken server fails the
/// test instead of hanging it, not a latency requirement.
const PATIENCE: Duration = Duration::from_secs(60);
/// A timeout long enough never to fire during a test.
const NEVER: Duration = Duration::from_secs(3600);

struct Server {
    addr: SocketAddr,
    app: std::sync::Arc<riskmap::app::App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn options(header: Duration, idle: Duration, max_connections: usize) -> ServeOptions {
    ServeOptions {
        header_timeout: header,
        idle_timeout: idle,
        max_connections,
        limits: Limits::new(&LimitOptions::for_cores(2)),
    }
}

/// The server on its own runtime and thread, on an empty store.
fn start(options: ServeOptions) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let app = common::open_app(dir.path());
    let served = app.clone();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            riskmap::api::serve_with(listener, served, options, async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
    });
    Server {
        app,
        addr: addr_rx.recv().unwrap(),
        stop: Some(stop_tx),
        _dir: dir,
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Reads one response (head, then `Content-Length` bytes of body).
fn read_answer(s: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).unwrap();
        assert!(n > 0, "connection closed mid-head: {:?}", text(&buf));
        buf.push(byte[0]);
    }
    let head = text(&buf);
    let status = head[9..12].parse().unwrap();
    let mut a = Answer {
        status,
        head,
        body: String::new(),
    };
    // No length: no body (204, 304).
    let len: usize = a.header("content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    a.body = text(&body);
    a
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Sends a GET on `s` (kept alive) and reads its answer.
fn get(s: &mut TcpStream, path: &str) -> Answer {
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    read_answer(s)
}

/// Waits until the server closes `s`, which must send nothing more.
fn assert_closed_by_server(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("{what}: unexpected data {:?}", text(&buf[..n])),
        Err(e) => panic!("{what}: not closed by the server ({e})"),
    }
}

#[test]
fn a_half_sent_head_is_closed_after_the_header_timeout() {
    // Only the header timeout is short: the idle one would wait an hour.
    let server = start(options(Duration::from_millis(300), NEVER, 100));
    // A new connection that stops mid-head.
    let mut fresh = connect(server.addr);
    fresh
        .write_all(b"GET /health HTTP/1.1\r\nHost: te")
        .unwrap();
    // A keep-alive connection that answered once, then stops mid-way through its
    // second head: its clock starts at that first byte.
    let mut kept = connect(server.addr);
    assert_eq!(get(&mut kept, "/health").status, 200);
    kept.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    assert_closed_by_server(&mut fresh, "half-sent head on a new connection");
    assert_closed_by_server(&mut kept, "half-sent second head");
    // A complete request on a new connection is still served.
    let mut s = connect(server.addr);
    assert_eq!(get(&mut s, "/health").status, 200);
    let metrics = get(&mut s, "/metrics").body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("riskmap_connections_closed_total{reason=\"header_timeout\"}")),
        "{metrics}"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // Only the idle timeout is short: the header one would wait an hour.
    let server = start(options(NEVER, Duration::from_millis(300), 100));
    let mut s = connect(server.addr);
    let a = get(&mut s, "/health");
    assert_eq!(a.status, 200, "{}", a.body);
    // The server kept the connection open after the answer (HTTP/1.1 keep-alive) ...
    assert_eq!(get(&mut s, "/health").status, 200);
    // ... until it stayed idle.
    assert_closed_by_server(&mut s, "idle keep-alive connection");
}

#[test]
fn at_the_connection_cap_the_longest_idle_connection_makes_room_for_health() {
    let server = start(options(NEVER, NEVER, 4));
    // The cap is held: two half-sent heads (oldest first), then two idle keep-alive
    // connections. Each answered request proves every earlier connection was accepted
    // (the server accepts in order).
    let mut half_a = connect(server.addr);
    half_a.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    let mut half_b = connect(server.addr);
    half_b.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    let mut idle_c = connect(server.addr);
    assert_eq!(get(&mut idle_c, "/health").status, 200);
    let mut idle_d = connect(server.addr);
    assert_eq!(get(&mut idle_d, "/health").status, 200);

    // A fifth client gets in; the connection idle the longest goes.
    let mut e = connect(server.addr);
    let a = get(&mut e, "/health");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_closed_by_server(&mut half_a, "the longest idle connection");
    // And a sixth (the fifth stays open, idle, so the cap is held again): the next
    // longest idle goes.
    let mut f = connect(server.addr);
    assert_eq!(get(&mut f, "/health").status, 200);
    assert_closed_by_server(&mut half_b, "the next longest idle connection");
    // The younger idle connections were kept.
    assert_eq!(get(&mut idle_c, "/health").status, 200);
    assert_eq!(get(&mut idle_d, "/health").status, 200);
    assert_eq!(get(&mut e, "/health").status, 200);
}

#[test]
fn at_the_cap_with_no_idle_connection_a_newcomer_gets_a_json_503() {
    let limits = Limits::new(&LimitOptions {
        tiles: 1,
        queries: 4,
        writes: 4,
        readings: 4,
        // A waiting request stays in flight as long as the test holds the slot.
        queue_wait: NEVER,
    });
    let server = start(ServeOptions {
        header_timeout: NEVER,
        idle_timeout: NEVER,
        max_connections: 1,
        limits: limits.clone(),
    });
    let held = limits.try_acquire(Kind::Tiles).unwrap();
    let mut busy = connect(server.addr);
    busy.write_all(b"GET /tiles/risk_points/0/0/0.mvt HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    // The only connection has a request in flight (waiting for the tile slot).
    while limits.waiting(Kind::Tiles) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut late = connect(server.addr);
    let a = read_answer(&mut late);
    assert_eq!(a.status, 503);
    assert_eq!(a.header("retry-after").as_deref(), Some("1"));
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["status"], 503);
    assert_eq!(v["code"], "TooManyConnections");
    assert_closed_by_server(&mut late, "the refused connection");
    // The busy request completes once the slot is free.
    drop(held);
    let a = read_answer(&mut busy);
    assert!(a.status < 300, "{} {}", a.status, a.body);
}

#[test]
fn excess_tile_requests_get_a_json_503_with_retry_after_and_health_still_answers() {
    let limits = Limits::new(&LimitOptions {
        tiles: 2,
        queries: 4,
        writes: 4,
        readings: 4,
        queue_wait: Duration::ZERO,
    });
    let server = start(ServeOptions {
        header_timeout: NEVER,
        idle_timeout: NEVER,
        max_connections: 100,
        limits: limits.clone(),
    });
    // Every tile slot is taken, as by two slow drawings.
    let held: Vec<_> = (0..2)
        .map(|_| limits.try_acquire(Kind::Tiles).unwrap())
        .collect();
    let mut s = connect(server.addr);
    for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1), (2, 3)] {
        let a = get(&mut s, &format!("/tiles/risk_points/2/{x}/{y}.mvt"));
        assert_eq!(a.status, 503, "{}", a.body);
        assert_eq!(a.header("retry-after").as_deref(), Some("1"));
        assert!(
            a.header("content-type")
                .unwrap()
                .starts_with("application/json")
        );
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["status"], 503);
        assert_eq!(v["code"], "Overloaded");
        assert!(v["description"].as_str().unwrap().contains("tiles"), "{v}");
    }
    // Other kinds, TileJSON, /health and /metrics are not held up by the tiles.
    assert_eq!(get(&mut s, "/health").status, 200);
    assert_eq!(get(&mut s, "/collections/risk_points/items").status, 200);
    assert_eq!(get(&mut s, "/tiles/risk_points.json").status, 200);
    let metrics = get(&mut s, "/metrics").body;
    let rejected: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("riskmap_rejected_requests_total{kind=\"tiles\"} "))
        .unwrap()
        .parse()
        .unwrap();
    // The recorder is process-wide: other tests may add to the count, never less.
    assert!(rejected >= 5.0, "{metrics}");
    // A freed slot serves tiles again.
    drop(held);
    let a = get(&mut s, "/tiles/risk_points/2/0/0.mvt");
    assert_ne!(a.status, 503, "{}", a.body);
    assert!(a.status < 300, "{}", a.status);
    // A slot is taken only to draw: with every slot held again, the tile just drawn
    // is answered from the cache, and a tile not drawn yet is refused.
    let held: Vec<_> = (0..2)
        .map(|_| limits.try_acquire(Kind::Tiles).unwrap())
        .collect();
    let cached = get(&mut s, "/tiles/risk_points/2/0/0.mvt");
    assert_eq!(cached.status, a.status, "{}", cached.body);
    assert_eq!(cached.header("etag"), a.header("etag"));
    assert_eq!(get(&mut s, "/tiles/risk_points/3/0/0.mvt").status, 503);
    // A change touches the cached tile: while drawing stays overloaded, the tile drawn
    // before it is answered, marked stale, rather than a 503 ...
    common::create(
        &server.app,
        "risk_points",
        &common::risk_point("T1", -150.0, 75.0, "I"),
    );
    let stale = get(&mut s, "/tiles/risk_points/2/0/0.mvt");
    assert_eq!(stale.status, a.status, "{}", stale.body);
    assert_eq!(stale.header("etag"), a.header("etag"));
    assert_eq!(
        stale.header("riskmap-stale").as_deref(),
        Some("drawing overloaded")
    );
    // ... and once a slot is free, the tile is drawn again, with the change.
    drop(held);
    let fresh = get(&mut s, "/tiles/risk_points/2/0/0.mvt");
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert_ne!(fresh.header("etag"), a.header("etag"));
    assert_eq!(fresh.header("riskmap-stale"), None);
}

#[test]
fn a_limit_is_shared_by_every_connection() {
    // One slot for queries, held by the test: refusals on every connection prove the
    // limiter is one for the whole server, not one per connection or router clone.
    let limits = Limits::new(&LimitOptions {
        tiles: 4,
        queries: 1,
        writes: 4,
        readings: 4,
        queue_wait: Duration::ZERO,
    });
    let server = start(ServeOptions {
        header_timeout: NEVER,
        idle_timeout: NEVER,
        max_connections: 100,
        limits: limits.clone(),
    });
    let held = limits.try_acquire(Kind::Queries).unwrap();
    let statuses: Vec<u16> = (0..4)
        .map(|_| get(&mut connect(server.addr), "/collections/risk_points/items").status)
        .collect();
    assert_eq!(statuses, [503; 4]);
    drop(held);
    assert_eq!(
        get(&mut connect(server.addr), "/collections/risk_points/items").status,
        200
    );
}

/// The nice value of each of this process's threads whose name starts with `prefix`
/// (Linux: field 19 of `/proc/self/task/TID/stat`, after the parenthesised name).
fn nice_of_threads(prefix: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = t.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        // Fields from the state (field 3) on: nice is field 19.
        out.push(after_name.split(' ').nth(16).unwrap().parse().unwrap());
    }
    out
}

#[test]
fn drawing_threads_run_below_the_threads_that_answer() {
    let server = start(options(NEVER, NEVER, 100));
    let mut s = connect(server.addr);
    let a = get(&mut s, "/tiles/risk_points/4/12/6.mvt");
    assert!(a.status < 300, "{} {}", a.status, a.body);
    let drawing = nice_of_threads("riskmap-render");
    assert!(!drawing.is_empty(), "no drawing thread found");
    assert!(
        drawing.iter().all(|&n| n == riskmap::api::render_nice()),
        "drawing threads' nice values: {drawing:?}"
    );
    // The threads answering requests keep the normal priority.
    let answering = nice_of_threads("tokio-rt-worker");
    assert!(!answering.is_empty(), "no tokio worker thread found");
    assert!(answering.iter().all(|&n| n == 0), "{answering:?}");
}
