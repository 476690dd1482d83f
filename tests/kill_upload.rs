//! Crash safety of uploads: the server is killed with SIGKILL while files are being
//! uploaded to it, many times. After each restart every upload is in the store whole or
//! not at all, every upload answered 2xx is there, the store passes its integrity check,
//! and nothing of the interrupted uploads is left on disk.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::server::{Server, start};
use common::*;
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;

/// An upload, as the client saw it: the status, or `None` when the connection failed.
fn post(addr: &str, key: &str, ct: &str, body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    let head = format!(
        "POST /collections/risk_points/imports HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {key}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    std::str::from_utf8(resp.get(9..12)?).ok()?.parse().ok()
}

fn points(prefix: &str, n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            risk_point(
                &format!("{prefix}-{i:05}"),
                106.0 + (i % 300) as f64 * 1e-3,
                29.0 + (i / 300) as f64 * 1e-3,
                ["I", "II", "III", "IV"][i % 4],
            )
        })
        .collect()
}

/// A zipped shapefile (EPSG:4547, GBK) of `points(prefix, n)`.
fn zipped_shapefile(work: &Path, prefix: &str, n: usize) -> Vec<u8> {
    let src = work.join(format!("{prefix}.geojson"));
    std::fs::write(&src, collection(points(prefix, n))).unwrap();
    let shp = work.join(format!("{prefix}.shp"));
    let o = Command::new("ogr2ogr")
        .args([
            "-f",
            "ESRI Shapefile",
            "-t_srs",
            "EPSG:4547",
            "-lco",
            "ENCODING=CP936",
            shp.to_str().unwrap(),
            src.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for ext in ["shp", "shx", "dbf", "prj", "cpg"] {
        w.start_file(
            format!("{prefix}.{ext}"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        w.write_all(&std::fs::read(work.join(format!("{prefix}.{ext}"))).unwrap())
            .unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn prefix_counts(dir: &Path) -> BTreeMap<String, usize> {
    let c = rusqlite::Connection::open(store_path(dir)).unwrap();
    let mut stmt = c.prepare("SELECT id FROM risk_points").unwrap();
    let ids: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut m = BTreeMap::new();
    for id in ids {
        *m.entry(id.split('-').next().unwrap().to_string())
            .or_insert(0) += 1;
    }
    m
}

#[test]
fn sigkill_during_uploads_leaves_each_upload_whole_or_absent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    riskmap(&["init", "--data", data]);
    let o = riskmap(&[
        "keys", "add", "--role", "importer", "--name", "k", "--data", data,
    ]);
    let key = text(&o.stdout).trim().to_string();
    let work = tempfile::tempdir().unwrap();
    // The uploads, in order: GeoJSON of 5,000 points and zipped shapefiles of 2,000.
    let mut uploads: Vec<(String, &str, Vec<u8>, usize)> = Vec::new();
    for k in 0..40 {
        let prefix = format!("U{k:02}");
        if k % 3 == 2 {
            let z = zipped_shapefile(work.path(), &prefix, 2_000);
            uploads.push((prefix, "application/zip", z, 2_000));
        } else {
            let g = collection(points(&prefix, 5_000)).into_bytes();
            uploads.push((prefix, "application/geo+json", g, 5_000));
        }
    }
    let mut expected: BTreeMap<String, usize> =
        uploads.iter().map(|u| (u.0.clone(), u.3)).collect();
    expected.insert("V".into(), 5_000);
    expected.insert("W".into(), 5_000);
    let uploads = Arc::new(uploads);
    let acknowledged: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    // How long one upload takes here, to spread the kills over it: the second one (the
    // first into an empty layer is a staged load, faster than the uploads below, which
    // go into a layer with features).
    let full = {
        let server = start(dir.path(), &["--no-demo"]);
        let g = collection(points("V", 5_000)).into_bytes();
        assert_eq!(
            post(&server.addr, &key, "application/geo+json", &g),
            Some(201)
        );
        let t = std::time::Instant::now();
        let g = collection(points("W", 5_000)).into_bytes();
        assert_eq!(
            post(&server.addr, &key, "application/geo+json", &g),
            Some(201)
        );
        t.elapsed()
    };
    let mut next = 0usize;
    for round in 0..16 {
        if next >= uploads.len() {
            break;
        }
        let server: Server = start(dir.path(), &["--no-demo"]);
        // Nothing of an interrupted upload is left after a restart.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("uploads"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "round {round}: left behind {left:?}");
        let addr = server.addr.clone();
        let (ups, acks, key2) = (uploads.clone(), acknowledged.clone(), key.clone());
        let first = next;
        let client = std::thread::spawn(move || {
            let mut i = first;
            while i < ups.len() {
                let (prefix, ct, body, _) = &ups[i];
                match post(&addr, &key2, ct, body) {
                    Some(201) => {
                        acks.lock().unwrap().insert(prefix.clone());
                    }
                    Some(s) => panic!("upload {prefix} answered {s}"),
                    None => return i + 1, // cut by the kill: its fate is the store's
                }
                i += 1;
            }
            i
        });
        // Most kills land inside an upload; every fourth round lets two or three finish.
        let span = if round % 4 == 3 { 3.0 } else { 1.2 };
        let delay = full.mul_f64(rng.random_range(0.1..span));
        std::thread::sleep(delay);
        let mut server = server;
        let _ = server.child.kill();
        let _ = server.child.wait();
        next = client.join().unwrap();
        // Whole or absent, each; every acknowledged one whole.
        let store = open_store(dir.path());
        store.integrity_check().unwrap();
        drop(store);
        let counts = prefix_counts(dir.path());
        for (p, n) in &counts {
            assert_eq!(
                *n, expected[p],
                "round {round} (kill after {delay:?}): upload {p} is partial"
            );
        }
        for p in acknowledged.lock().unwrap().iter() {
            assert_eq!(
                counts.get(p),
                Some(&expected[p]),
                "round {round}: acknowledged upload {p} is missing"
            );
        }
    }
    let counts = prefix_counts(dir.path());
    let acked = acknowledged.lock().unwrap().len();
    let sent: Vec<&String> = uploads.iter().take(next).map(|u| &u.0).collect();
    let whole = sent.iter().filter(|p| counts.contains_key(**p)).count();
    eprintln!(
        "one upload took {full:?}; {next} uploads sent over 16 kills: {acked} acknowledged, {whole} whole in the store, {} absent",
        next - whole
    );
    assert!(
        acked > 0,
        "some uploads must be acknowledged before their kill"
    );
    assert!(
        next > whole,
        "some kills must land before an upload's commit"
    );
}
