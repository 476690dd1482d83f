//! A full disk, for real: the server runs on a small tmpfs that a filler file fills up.
//! Writes must get 507 with a JSON error naming the cause, `/health` must say
//! `degraded` with the reason, reads (items, tiles) must go on; the operator's
//! procedure of the README ("When the disk is full") must work: `rm` the reserve and
//! deletes go through the API again, free real space and writes resume without a
//! restart, `/health` back to `ok`. Then SIGKILL and restart: every write that was
//! acknowledged (2xx) is there, every delete too, and `PRAGMA integrity_check` is ok.
//!
//! Mounting needs root (tests and CI run as root). Without it the test says so on
//! the terminal (not through the captured test output) and passes, unless
//! `RISKMAP_REQUIRE_TMPFS=1`, which makes the skip a failure (for CI).

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Size of the tmpfs: room for the empty store, its WAL (SQLite checkpoints it at
/// about 4 MB) and the reserve, in MiB.
const TMPFS_MB: u64 = 24;
/// The reserve the server keeps on it, in MiB (`--disk-reserve-mb`).
const RESERVE_MB: u64 = 2;
/// Space the filler leaves for the store's own writes to fill, in bytes: a few
/// hundred acknowledged writes go into it before the disk is full.
const LEFT_FOR_WRITES: u64 = 3 << 20;
/// Writes tried before the disk must have said "full" (each takes at least one 4 KiB
/// WAL page of `LEFT_FOR_WRITES`): bounds a broken server, one that never says 507,
/// to a short run, not a hang.
const MAX_WRITES: usize = 5_000;

/// A tmpfs mounted on a fresh directory, unmounted (lazily: a killed server may still
/// hold it for a moment) and removed on drop.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mb: u64) -> Result<Tmpfs, String> {
        let parent = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = parent.path().join("mnt");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mb}m"),
                "riskmap-test",
            ])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir,
            _parent: parent,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The server, killed with SIGKILL on drop (`Child::kill` sends SIGKILL).
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of the binary under test, taken once: the test restarts the server and
/// must run the same build both times even if the build directory is rebuilt
/// meanwhile (a target directory shared between worktrees).
fn binary() -> &'static Path {
    static BIN: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    let (_, path) = BIN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("riskmap");
        std::fs::copy(env!("CARGO_BIN_EXE_riskmap"), &path).unwrap();
        (dir, path)
    });
    path
}

fn start(data: &Path) -> Server {
    let mut child = Command::new(binary())
        .args(["serve", "--no-demo", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--layers")
        .arg(layers_dir())
        .args(["--disk-reserve-mb", &RESERVE_MB.to_string()])
        .env("RISKMAP_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads the log to its end (a full pipe would block the server's logging).
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let rest = &line[i + "listening on http://".len()..];
                let _ = tx.send(rest.split('/').next().unwrap().to_string());
            }
            if std::env::var_os("RISKMAP_TEST_LOG").is_some() {
                eprintln!("server: {line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server reports its address");
    Server { child, addr }
}

/// A minimal HTTP/1.1 client: status, headers (lower-cased names) and body.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head[9..12].parse().unwrap();
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

struct Resp {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn health(addr: &str) -> Value {
    let r = http(addr, "GET", "/health", &[], "");
    assert_eq!(r.status, 200, "/health answers on a full disk too");
    r.json()
}

/// Fills the file system holding `dir` with `dir/filler`: 1 MiB writes, then single
/// pages, until ENOSPC; then gives `leave` bytes back, so that the store's own writes
/// fill the rest; fsynced. Returns its size in bytes.
fn fill(dir: &Path, leave: u64) -> u64 {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let mut size = 0u64;
    for chunk in [1usize << 20, 4096, 512] {
        let buf = vec![0xA5u8; chunk];
        loop {
            match f.write(&buf) {
                Ok(0) => break,
                Ok(n) => size += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling: {e}"),
            }
        }
    }
    size -= leave.min(size);
    f.set_len(size).unwrap();
    let _ = f.sync_all();
    size
}

/// What must be in the store after the restart: id → level, `None` when deleted.
type Expected = BTreeMap<String, Option<String>>;

fn feature(i: usize) -> (String, String) {
    let id = format!("DF{i:05}");
    let body = risk_point(
        &id,
        106.3 + (i % 100) as f64 * 1e-3,
        29.4 + (i / 100) as f64 * 1e-3,
        ["I", "II", "III", "IV"][i % 4],
    )
    .to_string();
    (id, body)
}

/// `PRAGMA integrity_check` straight from SQLite, read-only (a read-write connection
/// closing last would checkpoint the WAL, changing what the restart finds).
fn integrity(store: &Path) -> String {
    let c =
        rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Every acknowledged write is served as acknowledged (deleted ones are gone), and
/// nothing else is: returns how many features are there.
fn check_all(addr: &str, expected: &Expected) -> usize {
    let mut present = 0;
    for (id, want) in expected {
        let r = http(
            addr,
            "GET",
            &format!("/collections/risk_points/items/{id}"),
            &[],
            "",
        );
        match want {
            Some(level) => {
                assert_eq!(r.status, 200, "{id} was acknowledged: {}", r.text());
                assert_eq!(r.json()["properties"]["level"], level.as_str(), "{id}");
                present += 1;
            }
            None => assert_eq!(r.status, 404, "{id} was deleted: {}", r.text()),
        }
    }
    let r = http(
        addr,
        "GET",
        "/collections/risk_points/items?limit=10000",
        &[],
        "",
    );
    assert_eq!(r.json()["numberMatched"], present, "nothing else is there");
    present
}

#[test]
fn disk_full_on_tmpfs() {
    let mnt = match Tmpfs::mount(TMPFS_MB) {
        Ok(m) => m,
        Err(why) => {
            let msg = format!(
                "SKIPPED disk_full_on_tmpfs: cannot mount a tmpfs ({why}); run the tests as root to check the full-disk behaviour"
            );
            // Straight to the terminal: libtest captures only print!/eprint!.
            let _ = writeln!(std::io::stderr(), "{msg}");
            assert!(
                std::env::var_os("RISKMAP_REQUIRE_TMPFS").is_none(),
                "{msg} (RISKMAP_REQUIRE_TMPFS is set)"
            );
            return;
        }
    };
    let data = mnt.dir.join("data");
    let o = riskmap(&[
        "keys",
        "add",
        "--role",
        "planner",
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let auth = format!("Bearer {}", text(&o.stdout).trim());
    let json_h = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/geo+json"),
    ];
    let patch_h = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/merge-patch+json"),
    ];
    let key_h = [("Authorization", auth.as_str())];
    let reserve = data.join("riskmap.gpkg.reserve");
    let store = data.join("riskmap.gpkg");
    let mut expected = Expected::new();
    let mut next = 0usize;

    let server = start(&data);
    let addr = server.addr.clone();
    let h = health(&addr);
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(
        std::fs::metadata(&reserve).unwrap().len(),
        RESERVE_MB << 20,
        "the reserve is written at start"
    );
    for _ in 0..20 {
        let (id, body) = feature(next);
        next += 1;
        let r = http(
            &addr,
            "POST",
            "/collections/risk_points/items",
            &json_h,
            &body,
        );
        assert_eq!(r.status, 201, "{}", r.text());
        expected.insert(id, Some(["I", "II", "III", "IV"][(next - 1) % 4].into()));
    }

    // Fill the disk but for LEFT_FOR_WRITES, then write until it says "full" three
    // times in a row (a failure may be followed by writes into WAL space that the
    // checkpoint after it freed).
    let filler = fill(&mnt.dir, LEFT_FOR_WRITES);
    let mut full_in_a_row = 0;
    let mut full = None;
    let mut acked_while_full = 0;
    while full_in_a_row < 3 {
        assert!(next < MAX_WRITES, "{next} writes on a full disk and no 507");
        let (id, body) = feature(next);
        let level = ["I", "II", "III", "IV"][next % 4];
        next += 1;
        let r = http(
            &addr,
            "POST",
            "/collections/risk_points/items",
            &json_h,
            &body,
        );
        match r.status {
            201 => {
                expected.insert(id, Some(level.into()));
                acked_while_full += 1;
                full_in_a_row = 0;
            }
            507 => {
                full_in_a_row += 1;
                full = Some(r);
            }
            s => panic!("a write on a full disk got {s}: {}", r.text()),
        }
    }
    let full = full.unwrap();
    let e = full.json();
    assert_eq!(e["status"], 507, "{e}");
    assert_eq!(e["code"], "InsufficientStorage", "{e}");
    let d = e["description"].as_str().unwrap();
    assert!(
        d.contains("is full") && d.contains(store.to_str().unwrap()),
        "the description names the cause and the store: {d}"
    );
    assert!(
        full.headers.contains_key("retry-after"),
        "{:?}",
        full.headers
    );
    assert_eq!(full.headers["x-content-type-options"], "nosniff");

    // /health says why.
    let h = health(&addr);
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["writes"]["status"], "failing", "{h}");
    assert_eq!(h["writes"]["kind"], "disk_full", "{h}");
    assert!(h["writes"]["failures"].as_u64().unwrap() >= 3, "{h}");
    assert!(
        h["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("is full")),
        "{h}"
    );

    // Reads go on: the list, one item, a tile, the collections.
    let acked: Vec<&String> = expected.keys().collect();
    let r = http(
        &addr,
        "GET",
        "/collections/risk_points/items?limit=10000",
        &[],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["numberMatched"],
        expected.len(),
        "every acknowledged write is served"
    );
    let r = http(
        &addr,
        "GET",
        &format!("/collections/risk_points/items/{}", acked[0]),
        &[],
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http(&addr, "GET", "/tiles/risk_points/0/0/0.mvt", &[], "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.body.is_empty());
    let r = http(&addr, "GET", "/collections", &[], "");
    assert_eq!(r.status, 200, "{}", r.text());

    // A delete needs space too (SQLite appends it to the WAL): it is refused cleanly.
    let victim = acked[1].clone();
    let r = http(
        &addr,
        "DELETE",
        &format!("/collections/risk_points/items/{victim}"),
        &key_h,
        "",
    );
    let delete_when_full = r.status;
    match r.status {
        507 => assert_eq!(r.json()["code"], "InsufficientStorage"),
        // Space a failed write's checkpoint freed: acknowledged, so it must stay gone.
        204 => {
            expected.insert(victim.clone(), None);
        }
        s => panic!("DELETE on a full disk got {s}: {}", r.text()),
    }

    // SIGKILL on the full disk: the server starts again on it, serves every
    // acknowledged write, says the disk is short of space, and refuses writes cleanly.
    drop(server);
    assert_eq!(integrity(&store), "ok");
    let server = start(&data);
    let addr = server.addr.clone();
    let served = check_all(&addr, &expected);
    let h = health(&addr);
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["reasons"][0].as_str().unwrap().contains("bytes free"),
        "{h}"
    );
    let (id, body) = feature(next);
    next += 1;
    let r = http(
        &addr,
        "POST",
        "/collections/risk_points/items",
        &json_h,
        &body,
    );
    match r.status {
        507 => assert_eq!(r.json()["code"], "InsufficientStorage"),
        201 => {
            expected.insert(id, Some(["I", "II", "III", "IV"][(next - 1) % 4].into()));
        }
        s => panic!(
            "a write on a full disk after a restart got {s}: {}",
            r.text()
        ),
    }

    // The operator's first step: rm the reserve. Deletes go through the API at once.
    std::fs::remove_file(&reserve).unwrap();
    let victims: Vec<String> = expected
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.clone())
        .take(3)
        .collect();
    for v in &victims {
        let r = http(
            &addr,
            "DELETE",
            &format!("/collections/risk_points/items/{v}"),
            &key_h,
            "",
        );
        assert_eq!(
            r.status,
            204,
            "DELETE after rm of the reserve: {}",
            r.text()
        );
        expected.insert(v.clone(), None);
    }
    let patched = expected
        .iter()
        .find(|(_, v)| v.is_some())
        .map(|(k, _)| k.clone())
        .unwrap();
    let r = http(
        &addr,
        "PATCH",
        &format!("/collections/risk_points/items/{patched}"),
        &patch_h,
        r#"{"properties":{"level":"I"}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    expected.insert(patched, Some("I".into()));
    // Writes work, but the reserve is spent and the disk still nearly full.
    let h = health(&addr);
    assert_eq!(h["writes"]["status"], "ok", "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["disk"]["reserve"]["present"], false, "{h}");

    // Real space back (the filler goes): writes resume without a restart, the
    // reserve is written again, /health is ok.
    std::fs::remove_file(mnt.dir.join("filler")).unwrap();
    let mut after = 0;
    for _ in 0..10 {
        let (id, body) = feature(next);
        let level = ["I", "II", "III", "IV"][next % 4];
        next += 1;
        let r = http(
            &addr,
            "POST",
            "/collections/risk_points/items",
            &json_h,
            &body,
        );
        assert_eq!(r.status, 201, "a write after space came back: {}", r.text());
        expected.insert(id, Some(level.into()));
        after += 1;
    }
    let h = health(&addr);
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["reasons"], serde_json::json!([]), "{h}");
    assert_eq!(std::fs::metadata(&reserve).unwrap().len(), RESERVE_MB << 20);

    // SIGKILL, then everything acknowledged is there and the file is sound.
    drop(server);
    assert_eq!(integrity(&store), "ok");
    let server = start(&data);
    let addr = server.addr.clone();
    let present = check_all(&addr, &expected);
    assert_eq!(health(&addr)["status"], "ok");
    // Figures for the record (visible with --nocapture).
    println!(
        "tmpfs {TMPFS_MB} MiB, reserve {RESERVE_MB} MiB, filler {filler} bytes; writes: {} acknowledged before the disk filled, {acked_while_full} while filling, {} 507s in a row ended it; a DELETE then got {delete_when_full}; restarted after SIGKILL on the full disk: {served} served; {} deletes and 1 patch after rm of the reserve; {after} writes after the filler went; after SIGKILL + restart {present} present, {} deleted, all as acknowledged",
        20,
        full_in_a_row,
        victims.len(),
        expected.len() - present
    );
}
