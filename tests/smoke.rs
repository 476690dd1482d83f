//! The real binary on a real socket: `serve` on the demo, `keys add` for a planner, an
//! edit over HTTP, an import by another process that the running server picks up,
//! a revoked key refused, and a clean stop on SIGTERM.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::{http, start};
use common::*;

#[test]
fn serve_edit_import_revoke_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    let (status, body) = http(&server.addr, "GET", "/health", &[], "");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["layers"]["risk_points"], 1360);
    assert_eq!(health["layers"]["sensors"], 45200);
    assert_eq!(health["layers"]["boundary"], 1);

    // A key printed alone on stdout.
    let o = riskmap(&[
        "keys",
        "add",
        "--role",
        "planner",
        "--name",
        "smoke",
        "--data",
        dir.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let key = text(&o.stdout);
    assert_eq!(key.lines().count(), 1);
    let key = key.trim().to_string();
    assert!(key.starts_with("rmk_") && key.len() == 68, "{key}");
    let auth = format!("Bearer {key}");

    let patch = r#"{"properties":{"level":"I"}}"#;
    let h = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/merge-patch+json"),
    ];
    let (status, body) = http(
        &server.addr,
        "PATCH",
        "/collections/risk_points/items/R000001",
        &h,
        patch,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"level\":\"I\""));

    // Another process imports while the server runs; the server picks it up.
    let file = dir.path().join("new.geojson");
    std::fs::write(
        &file,
        collection(vec![risk_point("NEW1", 106.5, 29.5, "II")]),
    )
    .unwrap();
    cli_import(dir.path(), "risk_points", &file);
    let t = Instant::now();
    loop {
        let (status, _) = http(
            &server.addr,
            "GET",
            "/collections/risk_points/items/NEW1",
            &[],
            "",
        );
        if status == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the server never saw the import"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Listing shows the key without its secret; revoking it takes effect at once.
    let o = riskmap(&["keys", "list", "--data", dir.path().to_str().unwrap()]);
    let list = text(&o.stdout);
    assert!(
        list.contains("planner") && list.contains("smoke") && !list.contains(&key),
        "{list}"
    );
    let id = list
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(
        riskmap(&[
            "keys",
            "revoke",
            &id,
            "--data",
            dir.path().to_str().unwrap()
        ])
        .status
        .success()
    );
    let (status, _) = http(
        &server.addr,
        "PATCH",
        "/collections/risk_points/items/R000001",
        &h,
        patch,
    );
    assert_eq!(status, 401);

    // SIGTERM stops it cleanly.
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let t = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn check_validates_layer_files_and_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let layers = dir.path().join("layers");
    std::fs::create_dir(&layers).unwrap();
    for f in std::fs::read_dir(layers_dir()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, layers.join(f.file_name().unwrap())).unwrap();
    }
    let run = |dir: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_riskmap"))
            .args([
                "check",
                "--data",
                dir.join("data").to_str().unwrap(),
                "--layers",
                dir.join("layers").to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let o = run(dir.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("5 layer files"),
        "{}",
        text(&o.stdout)
    );
    // A 41st layer is one more file.
    std::fs::write(layers.join("wells.toml"), "name = \"wells\"\ntitle = \"Wells\"\nkind = \"reference\"\ngeometry = \"point\"\nid_property = \"id\"\n").unwrap();
    let o = run(dir.path());
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("6 layer files"));
    std::fs::write(layers.join("wells.toml"), "name = \"wells\"\ntitle = \"Wells\"\nkind = \"well\"\ngeometry = \"point\"\nid_property = \"id\"\n").unwrap();
    let o = run(dir.path());
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("wells.toml") && err.contains("'kind'") && err.contains("\"well\""),
        "{err}"
    );
}

#[test]
fn a_damaged_or_foreign_store_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // Not a GeoPackage at all.
    std::fs::write(store_path(dir.path()), "this is not a database, it is a text file that is long enough to look like one .................................................................").unwrap();
    let o = riskmap(&["serve", "--data", data, "--listen", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("riskmap.gpkg"),
        "{}",
        text(&o.stderr)
    );

    // A real store with a damaged page.
    std::fs::remove_file(store_path(dir.path())).unwrap();
    let file = dir.path().join("p.geojson");
    let many: Vec<serde_json::Value> = (0..3000)
        .map(|i| risk_point(&format!("R{i}"), 106.0 + i as f64 * 1e-4, 29.0, "I"))
        .collect();
    std::fs::write(&file, collection(many)).unwrap();
    assert!(
        riskmap(&[
            "import",
            "--data",
            data,
            "--layer",
            "risk_points",
            file.to_str().unwrap()
        ])
        .status
        .success()
    );
    let path = store_path(dir.path());
    // Fold the WAL into the file, then damage a page in the middle.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(c);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 64 * 1024, "{} bytes", bytes.len());
    let len = bytes.len();
    for b in &mut bytes[len / 2..len / 2 + 4096] {
        *b = 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();
    let o = riskmap(&["check", "--integrity", "--data", data]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("damaged") || text(&o.stderr).contains("malformed"),
        "{}",
        text(&o.stderr)
    );
    let o = riskmap(&[
        "serve",
        "--no-demo",
        "--data",
        data,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a damaged store must not be served: {}",
        text(&o.stderr)
    );
}

/// The whole answer to raw request bytes (the connection is closed after it).
fn raw(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    String::from_utf8_lossy(&resp).into_owned()
}

/// Status, lower-cased head and body of a raw answer.
fn parts(resp: &str) -> (u16, String, String) {
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
    (
        resp[9..12].parse().unwrap(),
        head.to_ascii_lowercase(),
        body.to_string(),
    )
}

#[test]
fn oversized_requests_get_json_through_hyper() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--no-demo"]);
    let addr = server.addr.as_str();
    let request = |target: &str, headers: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n")
    };
    // Over riskmap's limits, well inside hyper's (64 KiB target, 100 fields, ~400 KB
    // head): riskmap answers, in JSON.
    let long_target = format!("/health?{}", "a".repeat(9000));
    let many: String = (0..70).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let big = format!("Cookie: {}\r\n", "c".repeat(40 * 1024));
    for (what, req, status) in [
        ("9 KB target", request(&long_target, ""), 414),
        ("70 header fields", request("/health", &many), 431),
        ("40 KiB header", request("/health", &big), 431),
    ] {
        let (got, head, body) = parts(&raw(addr, req.as_bytes()));
        assert_eq!(got, status, "{what}: {head}");
        assert!(
            head.contains("content-type: application/json"),
            "{what}: {head}"
        );
        assert!(
            head.contains("x-content-type-options: nosniff"),
            "{what}: {head}"
        );
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{what}: body {body:?} is not JSON: {e}"));
        assert_eq!(v["status"], status, "{what}");
        assert!(v["description"].is_string(), "{what}");
    }
    // Just under them: served.
    let (got, _, _) = parts(&raw(
        addr,
        request(&format!("/health?{}", "a".repeat(8000)), "").as_bytes(),
    ));
    assert_eq!(got, 200);
}

#[test]
fn tilejson_takes_the_public_url_given_to_serve() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &["--no-demo", "--public-url", "https://maps.example.org"],
    );
    // The configured public URL, whatever Host and X-Forwarded-* say.
    let (status, head, body) = parts(&raw(
        &server.addr,
        b"GET /tiles/risk_points.json HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(status, 200, "{head}");
    let tj: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        tj["tiles"][0],
        "https://maps.example.org/tiles/risk_points/{z}/{x}/{y}.mvt"
    );
    // A public URL that is not an http(s) origin stops the server before it starts.
    let o = riskmap(&[
        "serve",
        "--no-demo",
        "--data",
        dir.path().to_str().unwrap(),
        "--public-url",
        "https://maps.example.org/riskmap",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("origin"), "{}", text(&o.stderr));
}
