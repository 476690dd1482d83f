//! The CSV import reader (point layers).
//!
//! Properties, for the sensors and the risk points layers:
//! - no panic;
//! - the read ends either with features, each valid (a finite point inside WGS84) or
//!   refused naming its number, line and field, or with one error naming the line,
//!   column, header or feature where reading stopped;
//! - features are numbered 1, 2, 3... in order; a refusal names the line its row
//!   starts on (checked against the input when the id is the first column).

use std::path::Path;

use geo_types::Geometry;
use riskmap::ingest::{Format, ImportOptions, Rejection, read_features};
use riskmap::model::{Feature, LayerDef};

use crate::common::layer;
use crate::engine::{self, Verdict, normalise};

const TOKENS: &[&[u8]] = &[
    b",",
    b"\"",
    b"\"\"",
    b"\n",
    b"\r\n",
    b"\r",
    b"lon",
    b"lat",
    b"id",
    b"type_id",
    b"longitude",
    b"NaN",
    b"inf",
    b"-inf",
    b"1e400",
    b"-180",
    b"180.0000001",
    b"90",
    b"-90.5",
    b"-0",
    b"65536",
    b"0x10",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xd6\xd8",
    b"\0",
    b"   ",
    b"landslide",
    b"I",
    b"106.5,29.5",
    b"S9,3,,,106.5,29.5\n",
];

fn read_one(layer: &LayerDef, input: &[u8]) -> (usize, String) {
    let plain = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let first = plain.split(|b| matches!(b, b',' | b'\n' | b'\r')).next();
    let lines: Vec<&[u8]> = plain.split(|b| *b == b'\n').collect();
    let id_first = first.is_some_and(|h| h.trim_ascii().eq_ignore_ascii_case(b"id"));
    let mut expected_number = 0u64;
    let mut last_line = 0u64;
    let mut accepted = 0usize;
    let mut first_rejection: Option<Rejection> = None;
    let mut each = |r: Result<Feature, Rejection>| {
        expected_number += 1;
        match r {
            Ok(f) => {
                assert!(!f.id.is_empty());
                let p = match &f.geometry {
                    Geometry::Point(p) => p.0,
                    Geometry::MultiPoint(m) if m.0.len() == 1 => m.0[0].0,
                    g => panic!("a CSV row gave {g:?}"),
                };
                assert!(
                    p.x.is_finite()
                        && p.y.is_finite()
                        && (-180.0..=180.0).contains(&p.x)
                        && (-90.0..=90.0).contains(&p.y),
                    "accepted point {p:?}"
                );
                accepted += 1;
            }
            Err(rej) => {
                assert_eq!(rej.feature, expected_number, "rows are numbered in order");
                let line = rej.line.expect("a CSV refusal names its line");
                // Not strictly: a bare CR ends a record inside a line.
                assert!(line >= last_line.max(1), "line {line} after {last_line}");
                last_line = line;
                // With the id in the first column, the row starts on the named line.
                if let (true, Some(id)) = (id_first, &rej.id) {
                    if !id.contains(['"', '\r', '\n']) {
                        // Quotes removed: `" a "b` is the cell ` a b`.
                        let text: Option<Vec<u8>> = lines
                            .get(line as usize - 1)
                            .map(|t| t.iter().copied().filter(|b| *b != b'"').collect());
                        assert!(
                            text.as_ref()
                                .is_some_and(|t| t.windows(id.len()).any(|w| w == id.as_bytes())),
                            "refusal of {id:?} names line {line}: {:?}",
                            text.as_deref().map(String::from_utf8_lossy)
                        );
                    }
                }
                assert!(!rej.field.is_empty() && !rej.reason.is_empty(), "{rej}");
                if first_rejection.is_none() {
                    first_rejection = Some(rej);
                }
            }
        }
    };
    let result = read_features(
        Path::new("fuzz.csv"),
        Format::Csv,
        layer,
        &ImportOptions::default(),
        &mut &input[..],
        &mut each,
    );
    let signature = match result {
        Ok(()) => match &first_rejection {
            Some(r) => format!("refused {}: {}", normalise(&r.field), normalise(&r.reason)),
            None if accepted == 0 => "no rows".into(),
            None => "all accepted".into(),
        },
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz.csv: "), "{msg}");
            assert!(
                ["line", "column", "header", "feature"]
                    .iter()
                    .any(|w| msg.contains(w)),
                "an error says where: {msg}"
            );
            format!("error {}", normalise(&msg))
        }
    };
    (accepted, format!("{}: {signature}", layer.name))
}

#[test]
fn fuzz_csv_reader() {
    let layers: Vec<LayerDef> = ["sensors", "risk_points"]
        .iter()
        .map(|n| (*layer(n)).clone())
        .collect();
    let mut check = |input: &[u8]| {
        let mut accepted = 0;
        let mut sig = String::new();
        for l in &layers {
            let (n, s) = read_one(l, input);
            accepted += n;
            sig.push_str(&s);
            sig.push('|');
        }
        if accepted > 0 {
            Verdict::accepted(sig)
        } else {
            Verdict::refused(sig)
        }
    };
    let report = engine::run("csv", 3000, TOKENS, &mut |_| None, &mut check);
    assert!(report.signatures > 15, "{report:?}");
}

/// The line a refusal names is the row's, also in CRLF files and after blank lines
/// (the csv crate's own position is where it started reading: before both).
#[test]
fn refusals_name_the_line_of_their_row() {
    let layer = layer("sensors");
    for (text, want) in [
        ("id,type_id,lon,lat\nS1,3,NaN,1\nS2,3,1,NaN\n", vec![2, 3]),
        (
            "id,type_id,lon,lat\r\nS1,3,NaN,1\r\nS2,3,1,NaN\r\n",
            vec![2, 3],
        ),
        (
            "id,type_id,lon,lat\n\n\nS1,3,NaN,1\r\n\r\n\nS2,3,1,NaN",
            vec![4, 7],
        ),
        ("id,type_id,lon,lat\rS1,3,NaN,1\rS2,3,1,NaN\r", vec![1, 1]),
        (
            "id,type_id,lon,lat\nS1,\"3\n\",NaN,1\nS2,3,1,NaN\n",
            vec![2, 4],
        ),
    ] {
        let mut lines = Vec::new();
        read_features(
            Path::new("t.csv"),
            Format::Csv,
            &layer,
            &ImportOptions::default(),
            &mut text.as_bytes(),
            &mut |r| lines.push(r.err().and_then(|e| e.line)),
        )
        .unwrap();
        let want: Vec<Option<u64>> = want.into_iter().map(Some).collect();
        assert_eq!(lines, want, "{text:?}");
    }
}
