//! The streaming GeoJSON import reader, and the strict JSON parser of HTTP edits.
//!
//! Properties, for every input and for a point, a line and a polygon layer:
//! - no panic;
//! - the read ends either with features (each valid or refused naming its number and
//!   a field) or with one error naming a position (`at line L column C`) or the
//!   document-level reason;
//! - features are numbered 1, 2, 3... in order; every accepted feature passes the
//!   layer's validation again and survives a round trip through its GeoJSON;
//! - the strict JSON of edits refuses with a line and column, or gives a value whose
//!   validation as a feature does not panic.

use std::path::Path;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use riskmap::ingest::{Format, ImportOptions, Rejection, read_features};
use riskmap::model::{Feature, LayerDef};
use serde_json::{Value, json};

use crate::common::layer;
use crate::engine::{self, Verdict, normalise};

const TOKENS: &[&[u8]] = &[
    b"1e400",
    b"-1e400",
    b"NaN",
    b"Infinity",
    b"-0",
    b"4.9e-324",
    b"18446744073709551616",
    b"9007199254740993",
    b"180.0000000001",
    b"85.0511287798",
    b"-90",
    b"\"\\ud800\"",
    b"\"\\u0000\"",
    b"\"\\\"",
    b"\xd6\xd8",
    b"\xef\xbb\xbf",
    b"\x1e",
    b"null",
    b"true",
    b"[",
    b"]",
    b"{",
    b"}",
    b"[[",
    b"]]",
    b",",
    b":",
    b"\n",
    b"\"type\":",
    b"\"Feature\"",
    b"\"FeatureCollection\"",
    b"\"features\":[",
    b"\"geometry\":",
    b"\"coordinates\":",
    b"\"properties\":{",
    b"\"id\":",
    b"\"Point\"",
    b"\"LineString\"",
    b"\"Polygon\"",
    b"\"MultiPolygon\"",
    b"\"GeometryCollection\"",
    b"\"crs\":",
    b"\"level\":\"I\",",
    b"\"category\":\"landslide\",",
    b"\"name\":\"n\",",
    b"{\"type\":\"Point\",\"coordinates\":[106.5,29.5]}",
    b"[106.5,29.5],",
    b"[[0,0],[1,0],[1,1],[0,1],[0,0]]",
];

/// What one read of `input` into `layer` gave: accepted ids and a signature.
fn read_one(layer: &LayerDef, input: &[u8]) -> (usize, String) {
    let name = Path::new("fuzz.geojson");
    let mut expected_number = 0u64;
    let mut accepted: Vec<Feature> = Vec::new();
    let mut first_rejection: Option<Rejection> = None;
    let mut each = |r: Result<Feature, Rejection>| {
        expected_number += 1;
        match r {
            Ok(f) => accepted.push(f),
            Err(rej) => {
                assert_eq!(
                    rej.feature, expected_number,
                    "features are numbered in order"
                );
                assert!(!rej.field.is_empty(), "a refusal names its field: {rej}");
                assert!(!rej.reason.is_empty(), "a refusal says why: {rej}");
                if first_rejection.is_none() {
                    first_rejection = Some(rej);
                }
            }
        }
    };
    let result = read_features(
        name,
        Format::GeoJson,
        layer,
        &ImportOptions::default(),
        &mut &input[..],
        &mut each,
    );
    for f in &accepted {
        check_accepted(layer, f);
    }
    let signature = match result {
        Ok(()) => match &first_rejection {
            Some(r) => format!("refused {}: {}", normalise(&r.field), normalise(&r.reason)),
            None if accepted.is_empty() => "no features".into(),
            None => "all accepted".into(),
        },
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with("fuzz.geojson: "),
                "an error names the file: {msg}"
            );
            assert!(
                msg.contains(" at line ")
                    || msg.contains("the file holds no JSON")
                    || msg.contains("the file declares CRS"),
                "an error names its position or the document-level reason: {msg}"
            );
            format!("error {}", normalise(&msg))
        }
    };
    (accepted.len(), format!("{}: {signature}", layer.name))
}

/// An accepted feature is valid, and reads back the same from its own GeoJSON.
fn check_accepted(layer: &LayerDef, f: &Feature) {
    assert!(!f.id.is_empty());
    riskmap::model::geometry::check(&f.geometry)
        .unwrap_or_else(|e| panic!("accepted feature {:?} has an invalid geometry: {e}", f.id));
    let doc = f.to_geojson(layer);
    let text = doc.to_string();
    let back = riskmap::model::json::from_slice_strict(text.as_bytes())
        .unwrap_or_else(|e| panic!("the GeoJSON of accepted {:?} does not parse: {e}", f.id));
    let again = Feature::from_geojson(layer, &back)
        .unwrap_or_else(|e| panic!("accepted {:?} is refused on its way back: {e}", f.id));
    assert_eq!(&again, f, "round trip through GeoJSON");
}

/// The body of a POST or PUT: strict JSON, then validation as a feature.
fn strict_edit(layers: &[LayerDef], input: &[u8]) -> usize {
    match riskmap::model::json::from_slice_strict(input) {
        Err(e) => {
            assert!(
                e.line() > 0 || input.is_empty(),
                "a JSON error has a position: {e}"
            );
            0
        }
        Ok(v) => layers
            .iter()
            .filter(|l| match Feature::from_geojson(l, &v) {
                Ok(f) => {
                    check_accepted(l, &f);
                    true
                }
                Err(e) => {
                    assert!(!e.field.is_empty() && !e.reason.is_empty(), "{e}");
                    false
                }
            })
            .count(),
    }
}

/// Number of nodes in a JSON tree.
fn nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(nodes).sum(),
        Value::Object(o) => o.values().map(nodes).sum(),
        _ => 0,
    }
}

/// Applies `f` to the `k`-th node (pre-order); true once applied.
fn at_node(v: &mut Value, k: &mut usize, f: &mut dyn FnMut(&mut Value)) -> bool {
    if *k == 0 {
        f(v);
        return true;
    }
    *k -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|x| at_node(x, k, f)),
        Value::Object(o) => o.values_mut().any(|x| at_node(x, k, f)),
        _ => false,
    }
}

/// A structure-aware mutation: one node of a parsed corpus document changed (a
/// number to an edge value, a string to a hostile one, a member removed or added, an
/// element dropped or repeated...), written back as JSON. Reaches validation more
/// often than byte flips, which mostly break the syntax.
fn mutate_json(doc: &mut Value, rng: &mut ChaCha8Rng) {
    const NUMBERS: [f64; 12] = [
        1e308,
        -1e308,
        0.0,
        -0.0,
        180.000_000_1,
        -180.0,
        85.06,
        90.5,
        -90.0,
        1e-320,
        0.5,
        1e15,
    ];
    const STRINGS: [&str; 16] = [
        "",
        ".",
        "..",
        " padded ",
        "重庆\u{202e}",
        "\0",
        "Feature",
        "FeatureCollection",
        "Point",
        "LineString",
        "Polygon",
        "MultiPolygon",
        "V",
        "landslide",
        "EPSG:3857",
        "gas",
    ];
    for _ in 0..rng.random_range(1..=3) {
        let mut k = rng.random_range(0..nodes(doc));
        let op = rng.random_range(0..8u32);
        let (a, b) = (rng.random_range(0..usize::MAX), rng.random_bool(0.5));
        at_node(doc, &mut k, &mut |v| match v {
            Value::Number(_) if op < 6 => {
                *v = match op {
                    0 => json!(u64::MAX),
                    1 => json!(i64::MIN),
                    2 => json!(9_007_199_254_740_993u64),
                    _ => json!(NUMBERS[a % NUMBERS.len()]),
                }
            }
            Value::String(_) if op < 6 => *v = json!(STRINGS[a % STRINGS.len()]),
            Value::String(s) if op < 7 => *s = s.repeat(1 + a % 300),
            Value::Array(arr) if !arr.is_empty() && op < 6 => {
                let i = a % arr.len();
                match op % 3 {
                    0 => {
                        arr.remove(i);
                    }
                    1 => {
                        let x = arr[i].clone();
                        arr.insert(i, x);
                    }
                    _ => arr.reverse(),
                }
            }
            Value::Object(o) if !o.is_empty() && op < 6 => {
                let key = o.keys().nth(a % o.len()).cloned().unwrap_or_default();
                if b {
                    o.remove(&key);
                } else {
                    let x = o[&key].clone();
                    let other = [
                        "id",
                        "type",
                        "geometry",
                        "properties",
                        "features",
                        "crs",
                        "bbox",
                    ][a % 7];
                    o.insert(other.into(), x);
                }
            }
            _ => {
                *v = [
                    json!(null),
                    json!(true),
                    json!({}),
                    json!([]),
                    json!([v.clone()]),
                    json!(1),
                ][a % 6]
                    .clone()
            }
        });
    }
}

#[test]
fn fuzz_geojson_reader() {
    let layers: Vec<LayerDef> = ["risk_points", "pipelines", "boundary"]
        .iter()
        .map(|n| (*layer(n)).clone())
        .collect();
    let (mut features, mut edits_accepted, mut edits_refused) = (0usize, 0usize, 0usize);
    let mut check = |input: &[u8]| {
        let mut accepted = 0;
        let mut sig = String::new();
        for l in &layers {
            let (n, s) = read_one(l, input);
            accepted += n;
            sig.push_str(&s);
            sig.push('|');
        }
        features += accepted;
        if strict_edit(&layers, input) > 0 {
            edits_accepted += 1;
        } else {
            edits_refused += 1;
        }
        if accepted > 0 {
            Verdict::accepted(sig)
        } else {
            Verdict::refused(sig)
        }
    };
    let docs: Vec<Value> = engine::corpus("geojson")
        .iter()
        .filter_map(|(_, b)| serde_json::from_slice(b).ok())
        .collect();
    let mut generate = |rng: &mut ChaCha8Rng| {
        if rng.random_bool(0.6) {
            return None;
        }
        let mut doc = docs[rng.random_range(0..docs.len())].clone();
        mutate_json(&mut doc, rng);
        Some(serde_json::to_vec(&doc).unwrap())
    };
    let report = engine::run("geojson", 2000, TOKENS, &mut generate, &mut check);
    assert!(features > 0);
    assert!(
        edits_accepted > 0 && edits_refused > 0,
        "strict JSON of edits: {edits_accepted} accepted, {edits_refused} refused"
    );
    assert!(report.signatures > 20, "{report:?}");
}
