//! Open-loop HTTP/1.1 load at a fixed rate (wrk2-style: each request has an intended
//! start time, and its latency counts from then, so a stalled server cannot hide its
//! stall by slowing the client down), for `benches/connections.sh`.
//!
//!   cargo run --release --example loadgen -- --addr 127.0.0.1:8080 --paths paths.txt \
//!       --prefix /tiles/risk_points,pipelines,sensors/ --suffix .mvt --rate 3000 --secs 20
//!
//! Prints one line per answer class (admitted 2xx/304, 503, other, failed) with count and
//! p50/p99/p99.9/max in milliseconds, the 503s' `Retry-After` presence, and, with
//! `--probe`, the latency of a path probed at a low rate on its own connections.

#![allow(clippy::unwrap_used)] // a bench tool: a failure to set up is fatal

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// File of paths, one a line (e.g. z/x/y); requests take them in turn.
    #[arg(long)]
    paths: Option<String>,
    #[arg(long, default_value = "/")]
    prefix: String,
    #[arg(long, default_value = "")]
    suffix: String,
    /// Requests per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Keep-alive connections (requests wait for a free one; that wait counts).
    #[arg(long, default_value_t = 128)]
    connections: usize,
    /// A path probed on fresh connections at `probe_rate` per second.
    #[arg(long)]
    probe: Option<String>,
    #[arg(long, default_value_t = 20.0)]
    probe_rate: f64,
}

#[derive(Default)]
struct Tally {
    ok: Vec<u64>,
    busy: Vec<u64>,
    busy_service: Vec<u64>,
    busy_without_retry_after: u64,
    other: Vec<u64>,
    failed: u64,
}

struct Answer {
    status: u16,
    retry_after: bool,
    close: bool,
}

async fn exchange(
    conn: &mut Option<BufReader<TcpStream>>,
    addr: &str,
    path: &str,
) -> std::io::Result<Answer> {
    if conn.is_none() {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        *conn = Some(BufReader::new(s));
    }
    let c = conn.as_mut().unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept-Encoding: gzip\r\n\r\n");
    c.get_mut().write_all(req.as_bytes()).await?;
    let mut line = String::new();
    if c.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let (mut len, mut retry_after, mut close) = (0usize, false, false);
    loop {
        line.clear();
        if c.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        } else if l.starts_with("retry-after:") {
            retry_after = true;
        } else if l == "connection: close" {
            close = true;
        }
    }
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).await?;
    if close {
        *conn = None;
    }
    Ok(Answer {
        status,
        retry_after,
        close,
    })
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p / 100.0).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1000.0
}

fn line(name: &str, v: &mut [u64]) {
    println!(
        "{name}: n={} p50_ms={:.2} p99_ms={:.2} p99.9_ms={:.2} max_ms={:.2}",
        v.len(),
        pct(v, 50.0),
        pct(v, 99.0),
        pct(v, 99.9),
        pct(v, 100.0)
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = Args::parse();
    let paths: Vec<String> = match &a.paths {
        Some(f) => std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("{}{}{}", a.prefix, l.trim(), a.suffix))
            .collect(),
        None => vec![a.prefix.clone()],
    };
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, usize)>();
    let rx = Arc::new(Mutex::new(rx));
    let paths = Arc::new(paths);
    let mut workers = Vec::new();
    for _ in 0..a.connections {
        let (rx, tally, paths, addr) = (rx.clone(), tally.clone(), paths.clone(), a.addr.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = None;
            loop {
                let job = rx.lock().await.recv().await;
                let Some((intended, i)) = job else { break };
                let sent = Instant::now();
                let r = exchange(&mut conn, &addr, &paths[i % paths.len()]).await;
                let done = Instant::now();
                let from_intended = (done - intended).as_micros() as u64;
                let service = (done - sent).as_micros() as u64;
                let mut t = tally.lock().await;
                match r {
                    Ok(ans) if ans.status < 400 => t.ok.push(from_intended),
                    Ok(ans) if ans.status == 503 => {
                        t.busy.push(from_intended);
                        t.busy_service.push(service);
                        if !ans.retry_after {
                            t.busy_without_retry_after += 1;
                        }
                        let _ = ans.close;
                    }
                    Ok(_) => t.other.push(from_intended),
                    Err(_) => {
                        t.failed += 1;
                        conn = None;
                    }
                }
            }
        }));
    }
    let probe = a.probe.clone().map(|p| {
        let (addr, rate, secs) = (a.addr.clone(), a.probe_rate, a.secs);
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0u64;
            let start = Instant::now();
            let n = (rate * secs) as u64;
            for k in 0..n {
                let at = start + Duration::from_secs_f64(k as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                let mut conn = None;
                match exchange(&mut conn, &addr, &p).await {
                    Ok(ans) if ans.status == 200 => lat.push(at.elapsed().as_micros() as u64),
                    _ => failed += 1,
                }
            }
            (lat, failed)
        })
    });
    let start = Instant::now();
    let n = (a.rate * a.secs) as usize;
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / a.rate);
        tokio::time::sleep_until(at.into()).await;
        tx.send((at, i)).unwrap();
    }
    drop(tx);
    for w in workers {
        let _ = w.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut t = tally.lock().await;
    println!(
        "rate={} secs={:.1} sent={} answered_per_s={:.0}",
        a.rate,
        elapsed,
        n,
        (t.ok.len() + t.busy.len() + t.other.len()) as f64 / elapsed
    );
    line("admitted", &mut t.ok);
    line("503 (from intended start)", &mut t.busy);
    line("503 (from send)", &mut t.busy_service);
    println!("503 without Retry-After: {}", t.busy_without_retry_after);
    line("other status", &mut t.other);
    println!("failed: {}", t.failed);
    if let Some(p) = probe {
        let (mut lat, failed) = p.await.unwrap();
        line("probe", &mut lat);
        println!("probe failed: {failed}");
    }
}
