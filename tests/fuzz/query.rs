//! The query string of `GET /collections/{layer}/items` (bbox, limit, offset, f,
//! datetime), through the router. Filters, `sortby`, `properties` and
//! `property=value` are judged elsewhere (see [`oracle`]).
//!
//! An independent reading of the query decides what the answer must be: pairs split
//! on `&`, `+` as a space, `%XX` escapes (a bad escape or text that is not UTF-8 is
//! refused), no key twice after decoding, only the known keys, `limit` an integer
//! `0..=MAX_LIMIT`, `offset` an integer `0..=usize::MAX/2`, `bbox` four finite
//! numbers. Refused → 400 with a JSON error; accepted → 200 with a page that is
//! exactly right: `numberMatched` counted by brute force over the layer, at most
//! `limit` features, all matching, in fid order, the right slice for the offset, and
//! a `next` link exactly when more remain. Never a 5xx, never an overflow.

use std::collections::HashMap;

use axum::http::{StatusCode, Uri};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use riskmap::index::geometry_intersects_bbox;
use riskmap::model::Bbox;
use serde_json::Value;

use crate::common::http;
use crate::engine::{self, Verdict};
use crate::tile_path::{check_error_body, fixture_app, to_uri};

/// The documented largest page.
const MAX_LIMIT: usize = 10_000;
const DEFAULT_LIMIT: usize = 100;

/// The expected reading: `Err(())` for a 400, else (bbox, limit, offset).
/// `Ok(None)`: the query uses a parameter this target does not judge (a filter,
/// `sortby`, `properties`, or `property=value` on one of `other_keys`; `tests/ogc_filter.rs`
/// and the `query::filter` oracle tests cover them), so only "never a 5xx" is checked.
#[allow(clippy::type_complexity)]
fn oracle(q: &str, other_keys: &[String]) -> Result<Option<(Option<Bbox>, usize, usize)>, ()> {
    fn dec(s: &str) -> Option<String> {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let h = (*b.get(i + 1)? as char).to_digit(16)?;
                let l = (*b.get(i + 2)? as char).to_digit(16)?;
                out.push((h * 16 + l) as u8);
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).ok()
    }
    let mut params = HashMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (dec(k).ok_or(())?, dec(v).ok_or(())?);
        if params.insert(k, v).is_some() {
            return Err(());
        }
    }
    if params.keys().any(|k| {
        matches!(
            k.as_str(),
            "filter" | "filter-lang" | "filter-crs" | "sortby" | "properties"
        ) || other_keys.contains(k)
    }) {
        return Ok(None);
    }
    if params
        .keys()
        .any(|k| !matches!(k.as_str(), "bbox" | "limit" | "offset" | "f" | "datetime"))
    {
        return Err(());
    }
    if !matches!(
        params.get("f").map(String::as_str),
        None | Some("json" | "geojson")
    ) {
        return Err(());
    }
    // No layer has a time property: a valid datetime selects everything, another is
    // refused. Valid: an RFC 3339 date-time or date, or an interval of two of them
    // where one end (not both) may be open (`..` or empty).
    if let Some(d) = params.get("datetime") {
        let one = |t: &str| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_ok()
                || time::Date::parse(t, time::macros::format_description!("[year]-[month]-[day]"))
                    .is_ok()
        };
        let open = |t: &str| t.is_empty() || t == "..";
        let ok = match d.split('/').collect::<Vec<_>>()[..] {
            [t] => one(t),
            [a, b] => !(open(a) && open(b)) && (open(a) || one(a)) && (open(b) || one(b)),
            _ => false,
        };
        if !ok {
            return Err(());
        }
    }
    let int = |name: &str, default: usize, max: usize| match params.get(name) {
        None => Ok(default),
        Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
            t.parse::<usize>().ok().filter(|n| *n <= max).ok_or(())
        }
        // `usize::from_str` also takes a leading `+`.
        Some(t)
            if t.len() > 1 && t.starts_with('+') && t[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            t[1..].parse::<usize>().ok().filter(|n| *n <= max).ok_or(())
        }
        Some(_) => Err(()),
    };
    let limit = int("limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let offset = int("offset", 0, usize::MAX / 2)?;
    let bbox = match params.get("bbox") {
        None => None,
        Some(b) => {
            let n: Vec<f64> = b
                .split(',')
                .map(|p| p.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
                .collect::<Option<_>>()
                .ok_or(())?;
            // Four numbers, or six with heights (checked, not used: the store is 2-D).
            let n = match n.len() {
                4 => n,
                6 => vec![n[0], n[1], n[3], n[4]],
                _ => return Err(()),
            };
            Some(Bbox::new(n[0], n[1], n[2], n[3]).map_err(|_| ())?)
        }
    };
    Ok(Some((bbox, limit, offset)))
}

const TOKENS: &[&[u8]] = &[
    b"&",
    b"=",
    b"+",
    b"%",
    b"%26",
    b"%3D",
    b"%2C",
    b"%6Cimit",
    b"%FF",
    b"%C3%A9",
    b"%zz",
    b"bbox=",
    b"limit=",
    b"offset=",
    b"datetime=",
    b"2026-12-02",
    b"2026-12-02T08:00:00Z",
    b"..",
    b"/",
    b"f=json",
    b"f=json",
    b"&limit=1",
    b"&offset=1",
    b"&bbox=106,29,107,30",
    b",",
    b"NaN",
    b"inf",
    b"1e400",
    b"-0",
    b"10000",
    b"10001",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-1",
    b"180",
    b"-90",
    b" ",
    b"#",
];

fn generate(rng: &mut ChaCha8Rng) -> Option<Vec<u8>> {
    if rng.random_bool(0.5) {
        return None;
    }
    let mut parts: Vec<String> = Vec::new();
    if rng.random_bool(0.6) {
        let c = |rng: &mut ChaCha8Rng| -> String {
            match rng.random_range(0..10) {
                0 => ["NaN", "inf", "1e400", "", "-0", "1e-400", "0x10"][rng.random_range(0..7)]
                    .into(),
                1 => format!("{}", rng.random_range(-200.0..200.0f64)),
                _ => format!("{:.3}", rng.random_range(105.0..108.0f64)),
            }
        };
        let (lo_lon, lo_lat) = (
            rng.random_range(105.0..107.0f64),
            rng.random_range(28.5..30.0f64),
        );
        let (w, h) = (rng.random_range(0.0..1.5f64), rng.random_range(0.0..1.5f64));
        let mut nums = vec![
            format!("{lo_lon}"),
            format!("{lo_lat}"),
            format!("{}", lo_lon + w),
            format!("{}", lo_lat + h),
        ];
        match rng.random_range(0..8) {
            0 => nums[rng.random_range(0..4)] = c(rng),
            1 => {
                nums.pop();
            }
            2 => nums.push(c(rng)),
            3 => nums = vec!["-180".into(), "-90".into(), "180".into(), "90".into()],
            4 => nums.swap(0, 2),
            _ => {}
        }
        parts.push(format!("bbox={}", nums.join(",")));
    }
    let big = |rng: &mut ChaCha8Rng| -> String {
        match rng.random_range(0..10) {
            0 => (usize::MAX / 2).to_string(),
            1 => (usize::MAX / 2 + 1).to_string(),
            2 => u64::MAX.to_string(),
            3 => "18446744073709551616".into(),
            4 => "-1".into(),
            5 => format!("+{}", rng.random_range(0..500)),
            6 => format!("{}", rng.random_range(9_990..10_010)),
            _ => rng.random_range(0..400).to_string(),
        }
    };
    if rng.random_bool(0.7) {
        parts.push(format!("limit={}", big(rng)));
    }
    if rng.random_bool(0.6) {
        parts.push(format!("offset={}", big(rng)));
    }
    if rng.random_bool(0.1) {
        parts
            .push(["f=json", "limit=1", "x=1", "%6Cimit=2", "bbox"][rng.random_range(0..5)].into());
    }
    if rng.random_bool(0.03) {
        parts.push(format!("{}=1", "k".repeat(rng.random_range(1000..30_000))));
    }
    // Order does not matter to the server.
    for i in (1..parts.len()).rev() {
        let j = rng.random_range(0..=i);
        parts.swap(i, j);
    }
    Some(parts.join("&").into_bytes())
}

#[test]
fn fuzz_items_query_string() {
    let (_dir, app) = fixture_app();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // fid order and brute-force matches per layer.
    let layers = ["risk_points", "pipelines", "boundary"];
    let (mut pages, mut partial, mut nonempty, mut refused) = (0usize, 0usize, 0usize, 0usize);
    let mut check = |input: &[u8]| {
        let name = layers[(engine::fnv(input) % 3) as usize];
        let uri = to_uri(&format!("/collections/{name}/items?"), input);
        let Ok(parsed) = uri.parse::<Uri>() else {
            return Verdict::refused("unsendable");
        };
        let q = parsed.query().unwrap_or("").to_string();
        let (status, _, body) = rt.block_on(http(&app, "GET", &uri, &[], None));
        assert!(!status.is_server_error(), "{uri}: {status}");
        // Over the target limit the whole request is refused before any parameter is read.
        if parsed.path_and_query().map_or(0, |p| p.as_str().len()) > riskmap::api::MAX_URI_BYTES {
            assert_eq!(status, StatusCode::URI_TOO_LONG, "{uri}");
            refused += 1;
            return Verdict::refused(check_error_body(status, &body));
        }
        let def = &app.layer(name).unwrap().def;
        let mut keys: Vec<String> = def.properties.iter().map(|p| p.name.clone()).collect();
        keys.push(def.id_property.clone());
        let expected = oracle(&q, &keys);
        if let Ok(None) = expected {
            return Verdict::accepted(format!("{} not judged here", status.as_u16()));
        }
        let Ok(Some((bbox, limit, offset))) = expected else {
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{uri}: {}",
                String::from_utf8_lossy(&body)
            );
            refused += 1;
            return Verdict::refused(check_error_body(status, &body));
        };
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
        let doc: Value = serde_json::from_slice(&body).unwrap();
        // Brute force: every feature of the layer, in fid order, that meets the box.
        let state = app.layer(name).unwrap();
        let idx = state.index.read();
        let mut all: Vec<(i64, String)> = idx
            .slots()
            .filter(|&s| bbox.is_none_or(|b| geometry_intersects_bbox(idx.geometry(s), &b)))
            .map(|s| (idx.fid(s), idx.id(s).to_string()))
            .collect();
        all.sort();
        let matched = all.len();
        assert_eq!(doc["numberMatched"], matched, "{uri}");
        let want: Vec<&str> = all
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(_, id)| id.as_str())
            .collect();
        let got: Vec<&str> = doc["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap())
            .collect();
        assert_eq!(got, want, "{uri}: the page");
        assert_eq!(doc["numberReturned"], got.len(), "{uri}");
        let links = doc["links"].as_array().unwrap();
        let next = links.iter().find(|l| l["rel"] == "next");
        // `next` only when it moves on (`limit=0` must not link a page to itself).
        assert_eq!(
            next.is_some(),
            !got.is_empty() && offset.saturating_add(got.len()) < matched,
            "{uri}: next link {next:?}"
        );
        pages += 1;
        if !got.is_empty() {
            nonempty += 1;
        }
        if next.is_some() {
            partial += 1;
        }
        Verdict::accepted(format!(
            "200 {} {} {}",
            got.is_empty(),
            next.is_some(),
            bbox.is_some()
        ))
    };
    let report = engine::run("query", 1000, TOKENS, &mut generate, &mut check);
    eprintln!(
        "fuzz query: {pages} pages ({nonempty} non-empty, {partial} with a next link), {refused} refused"
    );
    assert!(
        pages > 0 && nonempty > 0 && partial > 0 && refused > 0,
        "{report:?}"
    );
}

#[test]
fn the_query_oracle_agrees_with_known_answers() {
    let keys = ["level".to_string()];
    let oracle = |q: &str| oracle(q, &keys);
    assert_eq!(oracle(""), Ok(Some((None, DEFAULT_LIMIT, 0))));
    assert_eq!(
        oracle("limit=10&offset=5").map(|r| r.map(|r| (r.1, r.2))),
        Ok(Some((10, 5)))
    );
    assert_eq!(oracle("%6Cimit=7&&").map(|r| r.map(|r| r.1)), Ok(Some(7)));
    assert_eq!(
        oracle("bbox=1,2,-5,3,4,5").map(|r| r.map(|r| r.0)),
        Ok(Some(Some(Bbox::new(1.0, 2.0, 3.0, 4.0).unwrap())))
    );
    assert_eq!(
        oracle("datetime=2026-12-02/..").map(|r| r.is_some()),
        Ok(true)
    );
    for other in ["level=I", "filter=x", "sortby=level", "limit=3&properties="] {
        assert_eq!(oracle(other), Ok(None), "{other}");
    }
    for bad in [
        "limit=10001",
        "limit=-1",
        "limit=1&limit=2",
        "limit=1&%6Cimit=2",
        "x=1",
        "limit=%zz",
        "limit=%FF",
        "bbox=1,2,3",
        "bbox=NaN,0,1,1",
        "offset=18446744073709551615",
        "f=xml",
        "datetime=../..",
    ] {
        assert_eq!(oracle(bad), Err(()), "{bad}");
    }
}
