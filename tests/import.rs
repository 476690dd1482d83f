//! `riskmap import`: good files land whole; bad files are refused with a message
//! naming the file, the feature and the field, a non-zero exit code, and nothing
//! written.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use common::*;
use serde_json::json;
use std::path::Path;

fn import(dir: &Path, layer: &str, file: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "import",
        "--data",
        dir.to_str().unwrap(),
        "--layer",
        layer,
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = riskmap(&args);
    (
        o.status.code().unwrap_or(-1),
        text(&o.stdout),
        text(&o.stderr),
    )
}

fn good_points(n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| risk_point(&format!("R{i:05}"), 106.0 + i as f64 * 1e-3, 29.5, "III"))
        .collect()
}

#[test]
fn a_feature_collection_is_added_then_unchanged_then_updated() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("points.geojson");
    std::fs::write(&file, collection(good_points(50))).unwrap();
    let (code, out, err) = import(dir.path(), "risk_points", &file, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("50 features read, 50 added, 0 updated, 0 unchanged, 0 rejected"),
        "{out}"
    );
    assert_eq!(sqlite_count(dir.path(), "risk_points"), 50);

    let (code, out, _) = import(dir.path(), "risk_points", &file, &[]);
    assert_eq!(code, 0);
    assert!(out.contains("0 added, 0 updated, 50 unchanged"), "{out}");

    let mut changed = good_points(50);
    changed[7] = risk_point("R00007", 106.5, 29.6, "I");
    changed.push(risk_point("R99999", 107.0, 30.0, "II"));
    std::fs::write(&file, collection(changed)).unwrap();
    let (code, out, _) = import(dir.path(), "risk_points", &file, &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("51 features read, 1 added, 1 updated, 49 unchanged"),
        "{out}"
    );
    assert_eq!(sqlite_count(dir.path(), "risk_points"), 51);
    assert_eq!(sqlite_audit_count(dir.path(), "import"), 3);
}

#[test]
fn newline_delimited_and_rfc8142_sequences_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = good_points(5).iter().map(|f| f.to_string()).collect();
    let nd = dir.path().join("points.geojsonl");
    std::fs::write(&nd, lines.join("\n") + "\n").unwrap();
    let (code, out, err) = import(dir.path(), "risk_points", &nd, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("5 added"), "{out}");
    let seq = dir.path().join("points.geojsons");
    let more: Vec<String> = (10..13)
        .map(|i| format!("\x1e{}\n", risk_point(&format!("S{i}"), 106.0, 29.0, "I")))
        .collect();
    std::fs::write(&seq, more.concat()).unwrap();
    let (code, out, err) = import(dir.path(), "risk_points", &seq, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3 added"), "{out}");
}

#[test]
fn a_csv_in_the_shape_of_the_synthetic_sensors_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sensors.csv");
    std::fs::write(
        &file,
        "id,type_id,risk_point_id,pipeline_id,lon,lat\nS0000001,17,R000012,,106.55,29.56\nS0000002,254,,L000003,106.6,29.6\n",
    )
    .unwrap();
    // What the sensors name does not exist yet: each such value refused, by field.
    open_store(dir.path());
    let (code, _, err) = import(dir.path(), "sensors", &file, &[]);
    assert_eq!(code, 1, "{err}");
    for (n, field, value) in [
        (1, "type_id", "17"),
        (1, "risk_point_id", "R000012"),
        (2, "type_id", "254"),
        (2, "pipeline_id", "L000003"),
    ] {
        assert!(
            err.contains(&format!(
                "feature {n} (line {}, id \"S000000{n}\"): field '{field}': names \"{value}\"",
                n + 1
            )),
            "{field}: {err}"
        );
    }
    assert!(
        err.contains("load them first (riskmap import --sensor-types"),
        "{err}"
    );
    assert_eq!(sqlite_count(dir.path(), "sensors"), 0);
    // Once they exist, the file is taken.
    store_sensor_types(dir.path(), [17, 254]);
    let points = dir.path().join("points.geojson");
    std::fs::write(
        &points,
        collection(vec![risk_point("R000012", 106.55, 29.56, "I")]),
    )
    .unwrap();
    cli_import(dir.path(), "risk_points", &points);
    let line = dir.path().join("line.geojson");
    std::fs::write(
        &line,
        collection(vec![json!({"type": "Feature", "id": "L000003",
            "geometry": {"type": "LineString", "coordinates": [[106.6, 29.6], [106.61, 29.61]]},
            "properties": {"id": "L000003", "kind": "gas", "material": "steel", "diameter_mm": 300, "district": "Yuzhong"}})]),
    )
    .unwrap();
    cli_import(dir.path(), "pipelines", &line);
    let (code, out, err) = import(dir.path(), "sensors", &file, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 added"), "{out}");
    // Replacing the risk points by a file without R000012 would leave S0000001 naming
    // nothing: refused, nothing written.
    let other = dir.path().join("other.geojson");
    std::fs::write(
        &other,
        collection(vec![risk_point("R000013", 106.5, 29.5, "II")]),
    )
    .unwrap();
    let (code, _, err) = import(dir.path(), "risk_points", &other, &["--mode", "replace"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("\"R000012\" (1 feature(s) of sensors in risk_point_id)"),
        "{err}"
    );
    assert_eq!(sqlite_count(dir.path(), "risk_points"), 1);
    let store = open_store(dir.path());
    let s = store
        .get_feature(&layer("sensors"), "S0000002")
        .unwrap()
        .unwrap();
    assert_eq!(s.feature.values[0], riskmap::model::Value::Int(254));
    assert_eq!(s.feature.values[1], riskmap::model::Value::Null);
    assert_eq!(
        s.feature.values[2],
        riskmap::model::Value::Text("L000003".into())
    );
}

/// One bad input: the file's bytes, the layer, and what the message must name.
struct Bad {
    what: &'static str,
    layer: &'static str,
    name: &'static str,
    bytes: Vec<u8>,
    expect: &'static [&'static str],
}

fn bad_inputs() -> Vec<Bad> {
    // 30 good features first, so a partial write would be visible.
    let good = good_points(30);
    let with = |bad: serde_json::Value| {
        let mut f = good.clone();
        f.push(bad);
        collection(f).into_bytes()
    };
    let mut with_bad_name = good.clone();
    with_bad_name.push(json!({"type":"Feature","id":"X1","geometry":{"type":"Point","coordinates":[106,29]},"properties":{"name":"@@","category":"landslide","level":"I"}}));
    let text = collection(with_bad_name);
    let at = text.find("@@").unwrap();
    // "重庆" in GBK, as real Chinese files without a declared encoding carry it.
    let non_utf8 = [
        &text.as_bytes()[..at],
        &[0xD6, 0xD8, 0xC7, 0xEC],
        &text.as_bytes()[at + 2..],
    ]
    .concat();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    // The same file with a UTF-8 byte-order mark: positions must still name 'name'.
    let bom_non_utf8 = [&b"\xEF\xBB\xBF"[..], &non_utf8].concat();
    // A literal that JSON does not allow in place of the bad feature's longitude.
    let bad_number = |literal: &str| {
        let mut f = good.clone();
        f.push(risk_point("X1", 106.25, 29.0, "I"));
        collection(f).replace("106.25", literal).into_bytes()
    };
    // A member given twice in the bad feature (JSON text: serde_json::Value cannot).
    let twice = |from: &str, to: &str| {
        let mut f = good.clone();
        f.push(risk_point("X1", 106.25, 29.0, "I"));
        let text = collection(f);
        assert_eq!(text.matches(from).count(), 1, "{from}");
        text.replace(from, to).into_bytes()
    };
    // Newline-delimited: the first document (then the second) carries the bad number.
    let nd = |bad_line: usize| {
        (0..3)
            .map(|i| {
                let line = risk_point(&format!("N{i}"), 106.25, 29.0, "I").to_string();
                if i == bad_line {
                    line.replace("106.25", "NaN")
                } else {
                    line
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()
    };
    vec![
        Bad { what: "malformed JSON", layer: "risk_points", name: "trunc.geojson", bytes: collection(good.clone()).as_bytes()[..800].to_vec(), expect: &["trunc.geojson", "malformed GeoJSON in feature", "EOF"] },
        Bad { what: "out-of-range longitude", layer: "risk_points", name: "far.geojson", bytes: with(risk_point("X1", 200.0, 29.0, "I")), expect: &["far.geojson", "feature 31", "X1", "field 'geometry'", "longitude 200"] },
        Bad { what: "out-of-range latitude", layer: "risk_points", name: "pole.geojson", bytes: with(risk_point("X1", 106.0, -95.0, "I")), expect: &["feature 31", "field 'geometry'", "latitude -95"] },
        Bad { what: "missing id", layer: "risk_points", name: "noid.geojson", bytes: with(json!({"type":"Feature","geometry":{"type":"Point","coordinates":[106,29]},"properties":{"name":"n","category":"landslide","level":"I"}})), expect: &["feature 31", "field 'id'", "missing"] },
        Bad { what: "wrong geometry type", layer: "risk_points", name: "line.geojson", bytes: with(json!({"type":"Feature","id":"X1","geometry":{"type":"LineString","coordinates":[[106,29],[107,30]]},"properties":{"name":"n","category":"landslide","level":"I"}})), expect: &["feature 31", "field 'geometry'", "expected a Point geometry, found LineString"] },
        Bad { what: "null geometry", layer: "risk_points", name: "nullgeom.geojson", bytes: with(json!({"type":"Feature","id":"X1","geometry":null,"properties":{"name":"n","category":"landslide","level":"I"}})), expect: &["feature 31", "field 'geometry'", "null"] },
        Bad { what: "duplicate ids", layer: "risk_points", name: "dup.geojson", bytes: with(risk_point("R00003", 106.0, 29.0, "I")), expect: &["feature 31", "R00003", "field 'id'", "duplicate", "feature 4"] },
        Bad { what: "id member given twice", layer: "risk_points", name: "twoids.geojson", bytes: twice(r#""id":"X1","geometry""#, r#""id":"X1","id":"X2","geometry""#), expect: &["twoids.geojson", "feature 31", "field 'id'", "duplicate member"] },
        Bad { what: "property given twice", layer: "risk_points", name: "twolevels.geojson", bytes: twice(r#""level":"I","#, r#""level":"I","level":"II","#), expect: &["twolevels.geojson", "feature 31", "X1", "field 'properties.level'", "duplicate member"] },
        Bad { what: "value not allowed", layer: "risk_points", name: "level.geojson", bytes: with(risk_point("X1", 106.0, 29.0, "V")), expect: &["feature 31", "field 'properties.level'", "\"V\" is not one of I, II, III, IV"] },
        Bad { what: "undeclared property", layer: "risk_points", name: "extra.geojson", bytes: with(json!({"type":"Feature","id":"X1","geometry":{"type":"Point","coordinates":[106,29]},"properties":{"name":"n","category":"landslide","level":"I","colour":"red"}})), expect: &["feature 31", "field 'properties.colour'", "not declared"] },
        Bad { what: "open polygon ring", layer: "boundary", name: "ring.geojson", bytes: collection(vec![json!({"type":"Feature","id":"b","geometry":{"type":"Polygon","coordinates":[[[106,29],[107,29],[107,30],[106,30]]]},"properties":{}})]).into_bytes(), expect: &["feature 1", "field 'geometry.coordinates[0]'", "not closed"] },
        Bad { what: "self-intersecting polygon", layer: "boundary", name: "bowtie.geojson", bytes: collection(vec![json!({"type":"Feature","id":"b","geometry":{"type":"Polygon","coordinates":[[[106,29],[107,30],[107,29],[106,30],[106,29]]]},"properties":{}})]).into_bytes(), expect: &["feature 1", "field 'geometry'", "intersect"] },
        Bad { what: "non-UTF-8 text", layer: "risk_points", name: "gbk.geojson", bytes: non_utf8, expect: &["gbk.geojson", "feature 31", "(id \"X1\")", "field 'properties.name'", "UTF-8"] },
        Bad { what: "non-UTF-8 text after a BOM", layer: "risk_points", name: "bomgbk.geojson", bytes: bom_non_utf8, expect: &["bomgbk.geojson", "feature 31", "(id \"X1\")", "field 'properties.name'", "UTF-8"] },
        Bad { what: "GeoJSON NaN coordinate", layer: "risk_points", name: "nan.geojson", bytes: bad_number("NaN"), expect: &["nan.geojson", "malformed GeoJSON", "feature 31", "(id \"X1\")", "field 'geometry.coordinates[0]'"] },
        Bad { what: "GeoJSON Infinity coordinate", layer: "risk_points", name: "inf.geojson", bytes: bad_number("Infinity"), expect: &["inf.geojson", "malformed GeoJSON", "feature 31", "(id \"X1\")", "field 'geometry.coordinates[0]'"] },
        Bad { what: "GeoJSON -Infinity coordinate", layer: "risk_points", name: "neginf.geojson", bytes: bad_number("-Infinity"), expect: &["neginf.geojson", "malformed GeoJSON", "feature 31", "(id \"X1\")", "field 'geometry.coordinates[0]'"] },
        Bad { what: "GeoJSON 1e400 coordinate", layer: "risk_points", name: "e400.geojson", bytes: bad_number("1e400"), expect: &["e400.geojson", "number out of range", "feature 31", "(id \"X1\")", "field 'geometry.coordinates[0]'"] },
        Bad { what: "NaN in the first line of newline-delimited GeoJSON", layer: "risk_points", name: "first.geojsonl", bytes: nd(0), expect: &["first.geojsonl", "malformed GeoJSON", "feature 1", "(id \"N0\")", "field 'geometry.coordinates[0]'"] },
        Bad { what: "NaN in the second line of newline-delimited GeoJSON", layer: "risk_points", name: "second.geojsonl", bytes: nd(1), expect: &["second.geojsonl", "malformed GeoJSON", "feature 2", "(id \"N1\")", "field 'geometry.coordinates[0]'"] },
        Bad { what: "100,000-deep nesting", layer: "risk_points", name: "deep.geojson", bytes: format!("{{\"type\":\"FeatureCollection\",\"features\":{deep}}}").into_bytes(), expect: &["deep.geojson", "recursion limit"] },
        Bad { what: "CSV NaN coordinate", layer: "sensors", name: "nan.csv", bytes: b"id,type_id,lon,lat\nS1,1,106.5,29.5\nS2,1,NaN,29.5\n".to_vec(), expect: &["nan.csv", "feature 2", "line 3", "S2", "field 'lon'", "finite number"] },
        Bad { what: "CSV in neither UTF-8 nor GBK", layer: "sensors", name: "bytes.csv", bytes: [b"id,type_id,risk_point_id,lon,lat\nS1,1,".to_vec(), vec![0xFF, 0xFE], b",106.5,29.5\n".to_vec()].concat(), expect: &["bytes.csv", "neither UTF-8 nor GBK/GB18030", "encoding="] },
        Bad { what: "CSV missing id", layer: "sensors", name: "noid.csv", bytes: b"id,type_id,lon,lat\nS1,1,106.5,29.5\n,1,106.5,29.5\n".to_vec(), expect: &["feature 2", "field 'id'", "missing"] },
        Bad { what: "CSV id with spaces", layer: "sensors", name: "spaceid.csv", bytes: b"id,type_id,lon,lat\nS1,1,106.5,29.5\n S2 ,1,106.5,29.5\n".to_vec(), expect: &["spaceid.csv", "feature 2", "line 3", "field 'id'", "leading or trailing whitespace"] },
        Bad { what: "CSV bad integer", layer: "sensors", name: "type.csv", bytes: b"id,type_id,lon,lat\nS1,one,106.5,29.5\n".to_vec(), expect: &["feature 1", "field 'properties.type_id'", "expected an integer"] },
        Bad { what: "CSV for a line layer", layer: "pipelines", name: "lines.csv", bytes: b"id,lon,lat\nL1,106.5,29.5\n".to_vec(), expect: &["lines.csv", "CSV can only feed point layers"] },
        Bad { what: "CSV without coordinates", layer: "sensors", name: "nocoords.csv", bytes: b"id,type_id\nS1,1\n".to_vec(), expect: &["nocoords.csv", "no longitude column"] },
        Bad { what: "foreign CRS", layer: "risk_points", name: "mercator.geojson", bytes: format!("{{\"type\":\"FeatureCollection\",\"crs\":{{\"type\":\"name\",\"properties\":{{\"name\":\"urn:ogc:def:crs:EPSG::999999\"}}}},\"features\":{}}}", serde_json::to_string(&good).unwrap()).into_bytes(), expect: &["mercator.geojson", "EPSG::999999", "pass crs="] },
        Bad { what: "dot-segment id", layer: "risk_points", name: "dotdot.geojson", bytes: with(risk_point("..", 106.0, 29.0, "I")), expect: &["dotdot.geojson", "feature 31", "field 'id'", "dot segment"] },
        Bad { what: "id with a slash", layer: "risk_points", name: "slash.geojson", bytes: with(risk_point("R/1", 106.0, 29.0, "I")), expect: &["slash.geojson", "feature 31", "field 'id'", "'/'"] },
        Bad { what: "CSV dot id", layer: "sensors", name: "dot.csv", bytes: b"id,type_id,lon,lat\nS1,1,106.5,29.5\n.,1,106.5,29.5\n".to_vec(), expect: &["dot.csv", "feature 2", "line 3", "field 'id'", "dot segment"] },
        Bad { what: "position of five numbers", layer: "risk_points", name: "five.geojson", bytes: with(json!({"type":"Feature","id":"X1","geometry":{"type":"Point","coordinates":[106.5,29.5,300,1,2]},"properties":{"name":"n","category":"landslide","level":"I"}})), expect: &["five.geojson", "feature 31", "X1", "field 'geometry.coordinates'", "5 number(s)"] },
        Bad { what: "line position of four numbers", layer: "pipelines", name: "four.geojson", bytes: collection(vec![json!({"type":"Feature","id":"L1","geometry":{"type":"LineString","coordinates":[[106.5,29.5],[106.6,29.6,0,7]]},"properties":{}})]).into_bytes(), expect: &["four.geojson", "feature 1", "L1", "field 'geometry.coordinates[1]'", "4 number(s)"] },
        Bad { what: "empty file", layer: "risk_points", name: "empty.geojson", bytes: Vec::new(), expect: &["empty.geojson", "no JSON"] },
    ]
}

#[test]
fn bad_input_is_refused_naming_file_feature_and_field_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Something already in the store must survive every refused import untouched.
    let base = dir.path().join("base.geojson");
    std::fs::write(
        &base,
        collection(vec![risk_point("KEEP", 106.1, 29.1, "II")]),
    )
    .unwrap();
    assert_eq!(import(dir.path(), "risk_points", &base, &[]).0, 0);
    let before_audit = sqlite_audit_count(dir.path(), "import");

    // Wording problems are collected, so one run shows every case that fails.
    let mut wording = Vec::new();
    for bad in bad_inputs() {
        let file = dir.path().join(bad.name);
        std::fs::write(&file, &bad.bytes).unwrap();
        let (code, _, err) = import(dir.path(), bad.layer, &file, &[]);
        assert_ne!(code, 0, "{}: exit code", bad.what);
        let lacking: Vec<&str> = bad
            .expect
            .iter()
            .copied()
            .filter(|e| !err.contains(e))
            .collect();
        if !lacking.is_empty() {
            wording.push(format!("{}: message lacks {lacking:?}:\n{err}", bad.what));
        }
        assert!(!err.contains("panicked"), "{}: {err}", bad.what);
        for table in ["risk_points", "sensors", "pipelines", "boundary"] {
            let expect = if table == "risk_points" { 1 } else { 0 };
            assert_eq!(
                sqlite_count(dir.path(), table),
                expect,
                "{}: partial write in {table}",
                bad.what
            );
        }
        assert_eq!(
            sqlite_audit_count(dir.path(), "import"),
            before_audit,
            "{}: audit row of a refused import",
            bad.what
        );
    }
    assert!(wording.is_empty(), "{}", wording.join("\n"));
}

#[test]
fn numbers_beyond_f64_are_malformed_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.geojson");
    let text = collection(vec![risk_point("A", 106.0, 29.0, "I")]).replace("106.0", "1e400");
    std::fs::write(&file, text).unwrap();
    let (code, _, err) = import(dir.path(), "risk_points", &file, &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("huge.geojson")
            && err.contains("number out of range")
            && err.contains("in feature 1"),
        "{err}"
    );
    assert_eq!(sqlite_count(dir.path(), "risk_points"), 0);
}

#[test]
fn an_unknown_layer_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.geojson");
    std::fs::write(&file, collection(good_points(1))).unwrap();
    // Run as given (the helper would create the store first).
    let o = riskmap_raw(&[
        "import",
        "--data",
        dir.path().to_str().unwrap(),
        "--layer",
        "wells",
        file.to_str().unwrap(),
    ]);
    let (code, err) = (o.status.code().unwrap_or(-1), text(&o.stderr));
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("{}: unknown layer \"wells\"", file.display()))
            && err.contains("risk_points")
            && err.contains("nothing was imported"),
        "{err}"
    );
    assert!(!store_path(dir.path()).exists(), "the store was created");
}

#[test]
fn skip_invalid_imports_the_valid_features_and_lists_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = good_points(10);
    f.insert(3, risk_point("BAD", 300.0, 29.0, "I"));
    let file = dir.path().join("mixed.geojson");
    std::fs::write(&file, collection(f)).unwrap();
    let (code, _, err) = import(dir.path(), "risk_points", &file, &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("1 of 11 features rejected (1 listed above); nothing was imported"),
        "{err}"
    );
    assert_eq!(sqlite_count(dir.path(), "risk_points"), 0);
    let (code, out, err) = import(dir.path(), "risk_points", &file, &["--skip-invalid"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("feature 4 (id \"BAD\"): field 'geometry'"),
        "{err}"
    );
    assert!(
        out.contains("10 added") && out.contains("1 rejected (1 listed above)"),
        "{out}"
    );
    assert_eq!(sqlite_count(dir.path(), "risk_points"), 10);
}

#[test]
fn every_rejection_is_listed_even_beyond_the_in_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let n_bad = riskmap::ingest::MAX_REPORTED_REJECTIONS + 100;
    let mut f = good_points(5);
    f.extend((0..n_bad).map(|i| risk_point(&format!("BAD{i}"), 300.0, 29.0, "I")));
    let file = dir.path().join("many.geojson");
    std::fs::write(&file, collection(f)).unwrap();
    let (code, _, err) = import(dir.path(), "risk_points", &file, &[]);
    assert_eq!(code, 1);
    let listed: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("rejected: "))
        .collect();
    assert_eq!(
        listed.len(),
        n_bad,
        "{}",
        &err[err.len().saturating_sub(500)..]
    );
    for (i, line) in listed.iter().enumerate() {
        let want = format!("feature {} (id \"BAD{i}\"): field 'geometry'", i + 6);
        assert!(line.contains(&want), "{line} lacks {want}");
    }
    assert!(
        err.contains(&format!(
            "{n_bad} of {} features rejected ({n_bad} listed above); nothing was imported",
            n_bad + 5
        )),
        "{}",
        &err[err.len().saturating_sub(500)..]
    );
    assert_eq!(sqlite_count(dir.path(), "risk_points"), 0);
}

/// Every audit row, oldest first: (seq, action, feature id, before, after, detail).
#[allow(clippy::type_complexity)]
fn audit_rows(
    dir: &Path,
) -> Vec<(
    i64,
    String,
    Option<String>,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
)> {
    let c = rusqlite::Connection::open(store_path(dir)).unwrap();
    let mut stmt = c
        .prepare(
            "SELECT seq, action, feature_id, before, after, detail FROM riskmap_audit ORDER BY seq",
        )
        .unwrap();
    let json = |s: Option<String>| s.map(|s| serde_json::from_str(&s).unwrap());
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            json(r.get(3)?),
            json(r.get(4)?),
            json(r.get(5)?),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn a_reimport_audits_the_before_and_after_of_each_updated_feature() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("points.geojson");
    std::fs::write(&file, collection(good_points(20))).unwrap();
    assert_eq!(import(dir.path(), "risk_points", &file, &[]).0, 0);
    let def = layer("risk_points");
    let stored = |id: &str| {
        open_store(dir.path())
            .get_feature(&def, id)
            .unwrap()
            .unwrap()
            .feature
            .to_geojson(&def)
    };
    let old: Vec<serde_json::Value> = ["R00003", "R00007", "R00011"]
        .iter()
        .map(|id| stored(id))
        .collect();

    // Moved, re-levelled, both; one added; the rest unchanged.
    let mut changed = good_points(20);
    changed[3] = risk_point("R00003", 106.9, 29.9, "III");
    changed[7] = risk_point("R00007", 106.007, 29.5, "I");
    changed[11] = risk_point("R00011", 107.1, 30.1, "IV");
    changed.push(risk_point("R99999", 107.0, 30.0, "II"));

    // Refused first (one bad feature after the changes): no audit row of any kind.
    let rows_before = audit_rows(dir.path());
    let mut refused = changed.clone();
    refused.push(risk_point("BAD", 300.0, 29.0, "I"));
    let bad = dir.path().join("bad.geojson");
    std::fs::write(&bad, collection(refused)).unwrap();
    assert_eq!(import(dir.path(), "risk_points", &bad, &[]).0, 1);
    assert_eq!(
        audit_rows(dir.path()),
        rows_before,
        "a refused import wrote audit rows"
    );

    std::fs::write(&file, collection(changed)).unwrap();
    let (code, out, err) = import(dir.path(), "risk_points", &file, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 added, 3 updated, 17 unchanged"), "{out}");

    let rows = audit_rows(dir.path());
    let new_rows = &rows[rows_before.len()..];
    let import_row = new_rows
        .iter()
        .find(|r| r.1 == "import")
        .expect("the import row");
    let detail = import_row.5.as_ref().unwrap();
    assert_eq!(
        (&detail["added"], &detail["updated"], &detail["unchanged"]),
        (&json!(1), &json!(3), &json!(17))
    );
    assert_eq!(detail["sha256"].as_str().unwrap().len(), 64);
    let updates: Vec<_> = new_rows.iter().filter(|r| r.1 == "import_update").collect();
    assert_eq!(updates.len(), 3, "{new_rows:?}");
    assert_eq!(
        new_rows.len(),
        4,
        "added and unchanged features get no row of their own"
    );
    for (id, before) in ["R00003", "R00007", "R00011"].iter().zip(&old) {
        let row = updates
            .iter()
            .find(|r| r.2.as_deref() == Some(*id))
            .unwrap_or_else(|| panic!("no audit row for {id}"));
        // Only the changed members, before and after: applied to the old feature the
        // after gives the stored one, applied to the stored one the before gives the
        // old, and every member kept differs.
        let (was, is) = (row.3.as_ref().unwrap(), row.4.as_ref().unwrap());
        let apply = |base: &serde_json::Value, part: &serde_json::Value| {
            let mut f = base.clone();
            if let Some(g) = part.get("geometry") {
                f["geometry"] = g.clone();
            }
            for (k, v) in part
                .get("properties")
                .and_then(|p| p.as_object())
                .into_iter()
                .flatten()
            {
                f["properties"][k] = v.clone();
            }
            f
        };
        let now = stored(id);
        assert_eq!(apply(before, is), now, "{id}: after");
        assert_eq!(apply(&now, was), *before, "{id}: before");
        assert_ne!(was, is, "{id}");
        for (k, v) in was
            .get("properties")
            .and_then(|p| p.as_object())
            .into_iter()
            .flatten()
        {
            assert_ne!(
                Some(v),
                is["properties"].get(k),
                "{id}: {k} kept but unchanged"
            );
        }
        if let Some(g) = was.get("geometry") {
            assert_ne!(
                Some(g),
                is.get("geometry"),
                "{id}: geometry kept but unchanged"
            );
        }
        assert_eq!(
            row.5.as_ref().unwrap()["import"],
            json!(import_row.0),
            "{id}: the row names its import"
        );
    }
}

/// Edits a feature the moment an import's write pass begins (after its check pass
/// compared every feature with the store).
struct EditAtWrite<'a> {
    store: &'a riskmap::store::Store,
    id: &'a str,
    level: &'a str,
}

impl riskmap::ingest::Progress for EditAtWrite<'_> {
    fn phase(&self, name: &'static str) {
        if name != "writing" {
            return;
        }
        let layer = layer("risk_points");
        self.store
            .write(|tx| {
                let mut sf = tx
                    .get_feature(&layer, self.id)?
                    .expect("the feature is there");
                let (i, _) = layer.property("level").unwrap();
                sf.feature.values[i] = riskmap::model::Value::Text(self.level.into());
                tx.update_feature(&layer, sf.fid, &sf.feature, None)?;
                tx.record_change(&layer.name, Some(self.id))?;
                tx.commit()
            })
            .unwrap();
    }
}

fn level_of(store: &riskmap::store::Store, id: &str) -> String {
    let layer = layer("risk_points");
    let sf = store.get_feature(&layer, id).unwrap().unwrap();
    let (i, _) = layer.property("level").unwrap();
    match &sf.feature.values[i] {
        riskmap::model::Value::Text(t) => t.clone(),
        other => panic!("level {other:?}"),
    }
}

#[test]
fn a_reimport_writes_only_what_changed_and_stays_exact_when_an_edit_comes_between_its_passes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let layer = layer("risk_points");
    let file = dir.path().join("points.geojson");
    let opts = riskmap::ingest::ImportOptions::default();
    std::fs::write(&file, collection(good_points(300))).unwrap();
    let first =
        riskmap::ingest::import_file(&store, &layer, &file, &opts, &riskmap::ingest::NoProgress)
            .unwrap();
    assert_eq!((first.added, first.committed), (300, true));

    // The same file again, one feature changed in it; between the passes an edit
    // changes a feature the file has unchanged (R00010), and the one it changes
    // (R00020). The file's version of both is what the import leaves.
    let mut points = good_points(300);
    points[20] = risk_point("R00020", 106.02, 29.5, "I");
    std::fs::write(&file, collection(points)).unwrap();
    for (id, level) in [("R00010", "II"), ("R00020", "IV")] {
        let edit = EditAtWrite {
            store: &store,
            id,
            level,
        };
        let r = riskmap::ingest::import_file(&store, &layer, &file, &opts, &edit).unwrap();
        assert!(r.committed);
        assert_eq!(r.added + r.updated + r.unchanged, 300, "{r:?}");
        assert_eq!(
            level_of(&store, "R00010"),
            "III",
            "the file's R00010 after editing {id}"
        );
        assert_eq!(
            level_of(&store, "R00020"),
            "I",
            "the file's R00020 after editing {id}"
        );
        if id == "R00010" {
            // R00020 changed by the file, R00010 put back.
            assert_eq!((r.updated, r.unchanged), (2, 298), "{r:?}");
        } else {
            // R00020: the file's again after the edit; R00010 unchanged now.
            assert_eq!((r.updated, r.unchanged), (1, 299), "{r:?}");
        }
    }
    // With nothing between the passes: nothing to write.
    let r =
        riskmap::ingest::import_file(&store, &layer, &file, &opts, &riskmap::ingest::NoProgress)
            .unwrap();
    assert_eq!((r.added, r.updated, r.unchanged), (0, 0, 300));
    assert_eq!(sqlite_audit_count(dir.path(), "import_update"), 3);
}
