//! Crash safety of readings and warnings: the server is killed with SIGKILL during a
//! flood of readings, many times. After each restart:
//!
//! - every reading of a batch answered 2xx is there: posted again, it is a duplicate
//!   (or out of order, when a later reading of its sensor was taken), never accepted;
//! - every warning transition announced on `/warnings/stream` is in the store, as it
//!   was announced;
//! - no warning is raised twice, and no subject has two open warnings;
//! - the store passes its integrity check.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::server::{cli_key, start};
use common::*;
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

const POINTS: usize = 60;
const SENSORS: usize = 600;
const KILLS: usize = 12;

/// A POST of readings as the client saw it: the status and body, or `None` when the
/// connection failed (the server died).
fn post(addr: &str, key: &str, body: &str) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let head = format!(
        "POST /readings HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {key}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp);
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// Reads `/warnings/stream` (from `last`) until the connection ends: every event's
/// (seq, kind, warning id).
fn listen(
    addr: String,
    last: i64,
    seen: Arc<Mutex<Vec<(i64, String, u64)>>>,
    ready: Arc<AtomicBool>,
) {
    let Ok(mut s) = TcpStream::connect(&addr) else {
        ready.store(true, Ordering::SeqCst);
        return;
    };
    let req =
        format!("GET /warnings/stream HTTP/1.1\r\nHost: {addr}\r\nLast-Event-ID: {last}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        ready.store(true, Ordering::SeqCst);
        return;
    }
    let mut r = BufReader::new(s);
    let (mut id, mut ev) = (0i64, String::new());
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let l = line.trim_end();
        if l.starts_with("HTTP/1.1 200") {
            ready.store(true, Ordering::SeqCst);
        } else if let Some(v) = l.strip_prefix("id: ") {
            id = v.parse().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("event: ") {
            ev = v.to_string();
        } else if let Some(v) = l.strip_prefix("data: ") {
            let d: Value = serde_json::from_str(v).unwrap();
            seen.lock()
                .unwrap()
                .push((id, ev.clone(), d["warning_id"].as_u64().unwrap()));
        }
    }
}

fn setup(dir: &Path) {
    let work = dir.join("files");
    std::fs::create_dir_all(&work).unwrap();
    // The sensor type and plan template first: the features name them.
    std::fs::write(
        work.join("types.csv"),
        "type_id,family,name,unit,warn_above,alarm_above\n3,water_level,w,m,2,3\n",
    )
    .unwrap();
    std::fs::write(
        work.join("plans.json"),
        json!([{"id": "P1", "title": "t", "category": "landslide", "levels": {"red": ["evacuate"]}}]).to_string(),
    )
    .unwrap();
    for (flag, file) in [("--sensor-types", "types.csv"), ("--plans", "plans.json")] {
        let o = riskmap(&[
            "import",
            "--data",
            dir.to_str().unwrap(),
            flag,
            work.join(file).to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let mut points = Vec::new();
    for i in 0..POINTS {
        let mut p = risk_point(
            &format!("R{i:03}"),
            106.5 + (i % 10) as f64 * 0.01,
            29.5 + (i / 10) as f64 * 0.01,
            "II",
        );
        p["properties"]["plan_id"] = json!("P1");
        points.push(p);
    }
    std::fs::write(work.join("points.geojson"), collection(points)).unwrap();
    cli_import(dir, "risk_points", &work.join("points.geojson"));
    let mut csv = String::from("id,type_id,risk_point_id,pipeline_id,lon,lat\n");
    for i in 0..SENSORS {
        let p = i % POINTS;
        csv.push_str(&format!(
            "S{i:04},3,R{p:03},,{},{}\n",
            106.5 + (p % 10) as f64 * 0.01,
            29.5 + (p / 10) as f64 * 0.01
        ));
    }
    std::fs::write(work.join("sensors.csv"), csv).unwrap();
    cli_import(dir, "sensors", &work.join("sensors.csv"));
}

#[test]
fn killed_during_a_flood_of_readings_every_acknowledged_batch_and_announced_transition_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let key = cli_key(dir.path(), "sensor");
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    // Readings' timestamps go forward one millisecond apart, so no two readings of a run
    // share one, from six days ago: hundreds of thousands of them stay inside the
    // server's acceptance window (7 days back, 5 minutes ahead) from the first post to
    // the last check. (Starting near now, a fast run posted readings more than 5
    // minutes ahead: refused as in the future, then taken when posted again later.)
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let clock = Arc::new(AtomicI64::new(now - 6 * 86_400_000));
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let announced: Arc<Mutex<Vec<(i64, String, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut last_event = 0i64;
    let mut total_ok = 0usize;
    for round in 0..KILLS {
        let mut server = start(dir.path(), &[]);
        let addr = server.addr.clone();
        let ready = Arc::new(AtomicBool::new(false));
        {
            let (a, seen, r) = (addr.clone(), announced.clone(), ready.clone());
            std::thread::spawn(move || listen(a, last_event, seen, r));
        }
        while !ready.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for c in 0..3u64 {
            let (addr, key, acked, stop, clock) = (
                addr.clone(),
                key.clone(),
                acknowledged.clone(),
                stop.clone(),
                clock.clone(),
            );
            let seed = round as u64 * 10 + c;
            clients.push(std::thread::spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                while !stop.load(Ordering::SeqCst) {
                    let n = rng.random_range(50..400);
                    let lines: Vec<String> = (0..n)
                        .map(|_| {
                            let ts = clock.fetch_add(1, Ordering::SeqCst);
                            // Levels up and down, so warnings rise, move and resolve.
                            let v = match rng.random_range(0..10) {
                                0 => 4.5,
                                1 => 3.2,
                                2 => 2.2,
                                _ => 0.5,
                            };
                            json!({"sensor_id": format!("S{:04}", rng.random_range(0..SENSORS)),
                                   "ts": riskmap::alerts::readings::format_ts(ts), "value": v})
                            .to_string()
                        })
                        .collect();
                    let body = lines.join("\n");
                    match post(&addr, &key, &body) {
                        Some((200, r)) => {
                            assert_eq!(r["received"].as_u64(), Some(n as u64), "{r}");
                            // Taken, or refused only for coming after a later reading
                            // of its sensor: posted again, all must be refused.
                            let other = r["rejected"]
                                .as_object()
                                .unwrap()
                                .keys()
                                .any(|k| k != "duplicate" && k != "out_of_order");
                            assert!(!other, "{r}");
                            acked.lock().unwrap().push(body);
                        }
                        Some((s, r)) => panic!("answered {s}: {r}"),
                        None => return, // killed
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(150..700)));
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.join().unwrap();
        }
        // Restart and check.
        let server = start(dir.path(), &[]);
        let acked: Vec<String> = std::mem::take(&mut *acknowledged.lock().unwrap());
        total_ok += acked.len();
        for body in &acked {
            let (s, r) = post(&server.addr, &key, body).unwrap();
            assert_eq!(s, 200);
            assert_eq!(
                r["accepted"], 0,
                "round {round}: a reading answered 2xx before the kill was lost: {r}"
            );
        }
        let c = rusqlite::Connection::open(store_path(dir.path())).unwrap();
        let kept: BTreeMap<i64, (String, u64)> = c
            .prepare("SELECT seq, kind, warning_id FROM riskmap_warning_events")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, (r.get(1)?, r.get::<_, i64>(2)? as u64)))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (seq, kind, id) in announced.lock().unwrap().iter() {
            assert_eq!(
                kept.get(seq),
                Some(&(kind.clone(), *id)),
                "round {round}: announced event {seq} ({kind} of warning {id}) is not in the store as announced"
            );
            last_event = last_event.max(*seq);
        }
        let twice: i64 = c
            .query_row(
                "SELECT count(*) FROM (SELECT warning_id FROM riskmap_warning_events WHERE kind = 'raised' GROUP BY warning_id HAVING count(*) > 1)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(twice, 0, "a warning was raised twice");
        let doubled: i64 = c
            .query_row(
                "SELECT count(*) FROM (SELECT subject_id FROM riskmap_warnings WHERE state <> 'resolved' GROUP BY subject_kind, subject_id HAVING count(*) > 1)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(doubled, 0, "a subject has two open warnings");
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        drop(server);
    }
    let events = announced.lock().unwrap().len();
    assert!(
        total_ok > KILLS * 3,
        "only {total_ok} batches were answered"
    );
    assert!(events > KILLS, "only {events} transitions were announced");
    eprintln!(
        "{KILLS} kills: {total_ok} batches answered and found again, {events} announced transitions found again"
    );
}
