//! Request paths through the router (no socket): tile paths above all, and the
//! static and item routes that take names from the path.
//!
//! Properties:
//! - no panic and no 5xx; every 4xx is a JSON error `{status, code, description}`;
//! - `/tiles/{layers}/{z}/{x}/{y}.mvt` answers 200 or 204 exactly when an independent
//!   reading of the path says it is a tile: `z ≤ MAX_ZOOM`, `x, y < 2^z` (decimal
//!   digits only), known layers, none twice, at most `MAX_LAYERS_PER_TILE`; otherwise
//!   a 4xx. A 200 tile decodes strictly inside its buffered extent;
//! - a static file (`/styles/`, `/vendor/`) is served only for a plain file name.

use std::sync::Arc;

use axum::http::{StatusCode, Uri};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use riskmap::app::App;
use riskmap::ingest::{ImportOptions, NoProgress, import_file};
use riskmap::tiles::{MAX_LAYERS_PER_TILE, MAX_ZOOM, TileCoord};
use serde_json::{Value, json};

use crate::common::{collection, http, open_app, risk_point};
use crate::engine::{self, Verdict, normalise};
use crate::geometry::decode_strict;

pub const LAYERS: [&str; 5] = ["boundary", "pipelines", "risk_points", "rivers", "sensors"];

/// A store with features of every layer: around Chongqing, and at the antimeridian
/// and the Mercator limit.
pub fn fixture_app() -> (tempfile::TempDir, Arc<App>) {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    let mut points: Vec<Value> = (0..240)
        .map(|i| {
            let (a, b) = ((i * 37 % 240) as f64 / 240.0, (i * 91 % 240) as f64 / 240.0);
            let level = ["I", "II", "III", "IV"][i % 4];
            risk_point(&format!("R{i:03}"), 106.0 + 1.5 * a, 29.0 + 1.5 * b, level)
        })
        .collect();
    for (i, (lon, lat)) in [
        (180.0, 0.0),
        (-180.0, 0.0),
        (0.0, 85.051_128_779_8),
        (0.0, -85.051_128_779_8),
        (0.0, 89.0),
        (179.999_999_9, -89.9),
    ]
    .into_iter()
    .enumerate()
    {
        points.push(risk_point(&format!("E{i}"), lon, lat, "I"));
    }
    let sensors: Vec<Value> = (0..120)
        .map(|i| {
            let lon = 106.5 + (i % 12) as f64 * 1e-3;
            let lat = 29.5 + (i / 12) as f64 * 1e-3;
            json!({"type": "Feature", "id": format!("S{i}"),
                   "geometry": {"type": "Point", "coordinates": [lon, lat]},
                   "properties": {"type_id": 1 + i % 254}})
        })
        .collect();
    let line = |id: String, pts: Vec<[f64; 2]>, d: usize| {
        json!({"type": "Feature", "id": id, "geometry": {"type": "LineString", "coordinates": pts},
               "properties": {"kind": "gas", "diameter_mm": d}})
    };
    let mut lines: Vec<Value> = (0..30)
        .map(|i| {
            let pts = (0..40)
                .map(|j| {
                    let t = j as f64 / 39.0;
                    [
                        106.0 + 1.5 * t,
                        29.0 + i as f64 * 0.05 + 0.01 * (j % 2) as f64,
                    ]
                })
                .collect();
            line(format!("P{i}"), pts, 100 + i * 10)
        })
        .collect();
    lines.push(line(
        "PZ".into(),
        (0..2000)
            .map(|j| [106.5 + j as f64 * 1e-5, 29.5 + 1e-4 * (j % 2) as f64])
            .collect(),
        900,
    ));
    lines.push(line("PA".into(), vec![[179.0, 1.0], [180.0, 1.5]], 50));
    lines.push(line("PB".into(), vec![[-180.0, 1.5], [-179.0, 2.0]], 50));
    let sq = |x: f64, y: f64, s: f64| vec![[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]];
    let mut hole = sq(106.2, 29.2, 0.5);
    hole.reverse();
    let boundary = vec![
        json!({"type": "Feature", "id": "B1", "properties": {"name": "b"},
               "geometry": {"type": "MultiPolygon", "coordinates": [[sq(106.0, 29.0, 1.0), hole], [sq(107.5, 29.0, 0.3)]]}}),
        json!({"type": "Feature", "id": "B2", "properties": {"name": "am"},
               "geometry": {"type": "MultiPolygon", "coordinates": [[sq(179.0, -10.0, 1.0)], [sq(-180.0, -10.0, 1.0)]]}}),
    ];
    let rivers = vec![
        json!({"type": "Feature", "id": "W1", "properties": {"wdb_level": 1},
        "geometry": {"type": "LineString", "coordinates": [[106.0, 29.6], [106.6, 29.55], [107.2, 29.8]]}}),
    ];
    for (name, features) in [
        ("risk_points", points),
        ("sensors", sensors),
        ("pipelines", lines),
        ("boundary", boundary),
        ("rivers", rivers),
    ] {
        let file = dir.path().join(format!("{name}.geojson"));
        std::fs::write(&file, collection(features)).unwrap();
        let def = app.layer(name).unwrap().def.clone();
        let r = import_file(
            app.store(),
            &def,
            &file,
            &ImportOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert!(r.committed && r.rejected == 0, "{name}: {:?}", r.rejections);
    }
    app.follow_changes().unwrap();
    (dir, app)
}

/// `prefix` + `input` as a request target: bytes a URI cannot hold are
/// percent-encoded (a `%` is kept as it is, so bad escapes reach the server).
pub fn to_uri(prefix: &str, input: &[u8]) -> String {
    let mut s = String::from(prefix);
    for &b in input {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if !s.starts_with('/') {
        s.insert(0, '/');
    }
    s
}

/// Percent-decoding as the router does for path parameters: `%XX` with two hex digits
/// is a byte, anything else is kept; `None` when the result is not UTF-8.
pub fn path_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// An independent reading of a tile coordinate: decimal digits only (at most 12),
/// z ≤ MAX_ZOOM, x and y below 2^z.
fn oracle_coord(z: &str, x: &str, y: &str) -> Option<(u8, u32, u32)> {
    let num = |t: &str| -> Option<u64> {
        if t.is_empty() || t.len() > 12 || !t.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (z, x, y) = (num(z)?, num(x)?, num(y)?);
    if z > MAX_ZOOM as u64 {
        return None;
    }
    let n = 1u64 << z;
    (x < n && y < n).then_some((z as u8, x as u32, y as u32))
}

fn oracle_layers(spec: &str) -> bool {
    let names: Vec<&str> = spec.split(',').collect();
    names.len() <= MAX_LAYERS_PER_TILE
        && names.iter().all(|n| LAYERS.contains(n))
        && names
            .iter()
            .enumerate()
            .all(|(i, n)| !names[..i].contains(n))
}

/// Whether the router should serve this path as a tile: `Some(buffer)` if so.
fn expect_tile(path: &str) -> Option<(String, TileCoord)> {
    let segs: Vec<&str> = path.split('/').collect();
    if segs.len() != 6
        || !segs[0].is_empty()
        || segs[1] != "tiles"
        || segs[2..].iter().any(|s| s.is_empty())
    {
        return None;
    }
    let dec: Vec<String> = segs[2..]
        .iter()
        .map(|s| path_decode(s))
        .collect::<Option<_>>()?;
    let y = dec[3]
        .strip_suffix(".mvt")
        .or_else(|| dec[3].strip_suffix(".pbf"))?;
    let (z, x, y) = oracle_coord(&dec[1], &dec[2], y)?;
    oracle_layers(&dec[0]).then(|| (dec[0].clone(), TileCoord { z, x, y }))
}

/// A 4xx must be a JSON error naming its status.
pub fn check_error_body(status: StatusCode, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{status}: the error body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    assert_eq!(v["status"], status.as_u16(), "{v}");
    assert!(v["code"].is_string() && v["description"].is_string(), "{v}");
    format!(
        "{} {}",
        status.as_u16(),
        normalise(v["description"].as_str().unwrap_or(""))
    )
}

const TOKENS: &[&[u8]] = &[
    b"/",
    b"%2F",
    b"%2f",
    b"..",
    b"%2e%2e",
    b"%252e",
    b"%5C",
    b"\\",
    b"%00",
    b"%FF",
    b"%",
    b".mvt",
    b".pbf",
    b".json",
    b",",
    b"risk_points",
    b"pipelines",
    b"sensors",
    b"boundary",
    b"rivers",
    b"-1",
    b"+1",
    b"0",
    b"00",
    b"30",
    b"31",
    b"1073741823",
    b"1073741824",
    b"4294967296",
    b"99999999999999999999",
    b"%31",
    b"?",
    b"#",
    b" ",
    b"\xe9",
];

/// A tile path made from parts: valid, nearly valid or hostile.
fn generate(rng: &mut ChaCha8Rng, data: &[(f64, f64)]) -> Option<Vec<u8>> {
    if rng.random_bool(0.5) {
        return None;
    }
    let n_layers = if rng.random_bool(0.9) {
        rng.random_range(1..=3)
    } else {
        rng.random_range(0..20)
    };
    let mut names: Vec<String> = (0..n_layers)
        .map(|_| {
            if rng.random_bool(0.95) {
                LAYERS[rng.random_range(0..LAYERS.len())].to_string()
            } else {
                ["", "nope", "risk_point", "RISK_POINTS", "risk%5Fpoints"][rng.random_range(0..5)]
                    .to_string()
            }
        })
        .collect();
    if rng.random_bool(0.8) {
        names.dedup();
    }
    let z: u64 = match rng.random_range(0..10) {
        0 => rng.random_range(31..70),
        1 => MAX_ZOOM as u64,
        _ => rng.random_range(0..=22),
    };
    let (x, y) = if rng.random_bool(0.6) && z <= MAX_ZOOM as u64 {
        // Near the data, so that tiles have features.
        let (lon, lat) = data[rng.random_range(0..data.len())];
        let t = TileCoord::of_lonlat(lon, lat, z as u8).unwrap_or(TileCoord {
            z: z as u8,
            x: 0,
            y: 0,
        });
        (t.x as u64, t.y as u64)
    } else {
        let edge = |rng: &mut ChaCha8Rng| -> u64 {
            let n = 1u64.checked_shl(z.min(63) as u32).unwrap_or(u64::MAX);
            match rng.random_range(0..6) {
                0 => 0,
                1 => n.saturating_sub(1),
                2 => n,
                3 => n.saturating_add(1),
                4 => u32::MAX as u64 + rng.random_range(0..3),
                _ => rng.random_range(0..n.max(1)),
            }
        };
        (edge(rng), edge(rng))
    };
    let num = |v: u64, rng: &mut ChaCha8Rng| -> String {
        match rng.random_range(0..12) {
            0 => format!("0{v}"),
            1 => format!("+{v}"),
            2 => format!("-{v}"),
            3 => v.to_string().bytes().map(|b| format!("%{b:02X}")).collect(),
            4 => format!("{v}.0"),
            _ => v.to_string(),
        }
    };
    let ext = [".mvt", ".mvt", ".mvt", ".pbf", ".png", "", ".MVT"][rng.random_range(0..7)];
    let path = format!(
        "/tiles/{}/{}/{}/{}{ext}",
        names.join(","),
        num(z, rng),
        num(x, rng),
        num(y, rng)
    );
    Some(path.into_bytes())
}

#[test]
fn fuzz_tile_and_static_paths() {
    let (_dir, app) = fixture_app();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let data: Vec<(f64, f64)> = vec![
        (106.5, 29.5),
        (106.9, 29.9),
        (180.0, 0.0),
        (-180.0, 0.0),
        (0.0, 85.05),
        (179.5, -5.0),
    ];
    let (mut tiles_ok, mut tiles_empty, mut tiles_refused, mut client_errors, mut unsendable) =
        (0, 0, 0, 0, 0);
    let mut check = |input: &[u8]| {
        let uri = to_uri("", input);
        let Ok(parsed) = uri.parse::<Uri>() else {
            unsendable += 1;
            return Verdict::refused("unsendable");
        };
        let path = parsed.path().to_string();
        let (status, headers, body) = rt.block_on(http(&app, "GET", &uri, &[], None));
        assert!(
            !status.is_server_error(),
            "{uri}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        let expected = expect_tile(&path);
        if path.starts_with("/tiles/") && !path.ends_with(".json") {
            match &expected {
                Some((spec, t)) => {
                    assert!(
                        status == StatusCode::OK || status == StatusCode::NO_CONTENT,
                        "{uri} is tile {spec} {t:?}: {status} {}",
                        String::from_utf8_lossy(&body)
                    );
                    assert!(headers.contains_key("etag"), "{uri}: no ETag");
                    if status == StatusCode::OK {
                        let buffer = spec
                            .split(',')
                            .map(|n| app.layer(n).unwrap().def.tiles.buffer)
                            .max()
                            .unwrap_or(0);
                        let d = decode_strict(&body, buffer);
                        for (name, _) in &d.layers {
                            assert!(
                                spec.split(',').any(|s| s == name),
                                "{uri}: layer {name} not asked for"
                            );
                        }
                        tiles_ok += 1;
                    } else {
                        assert!(body.is_empty());
                        tiles_empty += 1;
                    }
                }
                None => {
                    assert!(
                        status.is_client_error(),
                        "{uri} is not a tile, yet {status}"
                    );
                    tiles_refused += 1;
                }
            }
        }
        if status.is_client_error() {
            client_errors += 1;
            return Verdict::refused(check_error_body(status, &body));
        }
        if status.is_success() {
            let last = path.rsplit('/').next().unwrap_or("");
            if path.starts_with("/styles/") || path.starts_with("/vendor/") {
                let name = path_decode(last).unwrap_or_default();
                assert!(
                    !name.contains("..") && !name.contains(['/', '\\', '\0']),
                    "{uri}: served a static file for {name:?}"
                );
            }
        }
        let kind = path.split('/').nth(1).unwrap_or("").to_string();
        if status.is_success() {
            Verdict::accepted(format!("{kind} {}", status.as_u16()))
        } else {
            Verdict::refused(format!("{kind} {}", status.as_u16()))
        }
    };
    let mut generate = |rng: &mut ChaCha8Rng| generate(rng, &data);
    let report = engine::run("tile_path", 2000, TOKENS, &mut generate, &mut check);
    eprintln!(
        "fuzz tile_path: tiles {tiles_ok} drawn, {tiles_empty} empty, {tiles_refused} refused; {client_errors} 4xx, {unsendable} unsendable"
    );
    assert!(
        tiles_ok > 0 && tiles_empty > 0 && tiles_refused > 0,
        "{report:?}"
    );
    assert!(
        unsendable * 10 < report.cases.max(1),
        "too many inputs cannot be sent: {unsendable}"
    );
}

#[test]
fn the_path_oracle_agrees_with_known_answers() {
    assert!(expect_tile("/tiles/risk_points/12/3260/1695.mvt").is_some());
    assert!(expect_tile("/tiles/risk_points,pipelines/0/0/0.pbf").is_some());
    assert!(expect_tile("/tiles/risk_points/30/1073741823/1073741823.mvt").is_some());
    assert!(expect_tile("/tiles/risk_points/%31%32/3260/1695.mvt").is_some());
    for bad in [
        "/tiles/risk_points/31/0/0.mvt",
        "/tiles/risk_points/2/4/0.mvt",
        "/tiles/risk_points/2/0/4.mvt",
        "/tiles/risk_points/-1/0/0.mvt",
        "/tiles/risk_points/1/+1/0.mvt",
        "/tiles/risk_points/1/1/1.png",
        "/tiles/risk_points,risk_points/1/1/1.mvt",
        "/tiles/nope/1/1/1.mvt",
        "/tiles/risk_points/1/1/1.mvt/",
        "/tiles/risk_points/%FF/0/0.mvt",
        "/tiles/risk_points/1/0000000000001/0.mvt",
    ] {
        assert!(expect_tile(bad).is_none(), "{bad}");
    }
    assert_eq!(path_decode("a%2Fb%zz%4"), Some("a/b%zz%4".into()));
    assert_eq!(path_decode("%FF"), None);
    assert_eq!(to_uri("/x/", b"a b#\xff"), "/x/a%20b%23%FF");
}
