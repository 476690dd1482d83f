//! `POST /collections/{layer}/imports` with real files made by GDAL: shapefiles in
//! Gauss–Krüger and UTM with GBK text, checked against `cs2cs` and byte for byte; a
//! corpus of hostile files, each refused with a reason and nothing written; dry runs.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::server::{Server, cli_key, http, http_bytes, start};
use common::*;
use serde_json::{Value, json};

/// Names that need GBK's two-byte forms, and some punctuation.
const NAMES: [&str; 8] = [
    "沙坪坝区磁器口滑坡点",
    "渝中区解放碑隧道",
    "嘉陵江大桥（北桥头）",
    "南岸区·弹子石加油站",
    "巫山县神女峰危岩",
    "綦江区“老街”易涝点",
    "酉阳土家族苗族自治县",
    "万州区长江二桥",
];

/// Risk points spread over Chongqing (105.3–110.1° E), with Chinese names.
fn points(prefix: &str) -> Vec<Value> {
    (0..24)
        .map(|i| {
            let lon = 105.31 + (i as f64) * 0.2013;
            let lat = 28.21 + (i as f64 * 0.137) % 3.9;
            let mut f = risk_point(&format!("{prefix}{i:03}"), lon, lat, "II");
            f["properties"]["name"] = json!(NAMES[i % NAMES.len()]);
            f["properties"]["district"] = json!(NAMES[(i + 3) % NAMES.len()]);
            f
        })
        .collect()
}

fn run(program: &str, args: &[&str]) -> String {
    let o = Command::new(program).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{program} {args:?}: {}",
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Zips the files of `dir` whose names start with `stem.` (deflate).
fn zip_set(dir: &Path, stem: &str) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(&format!("{stem}.")))
        .collect();
    names.sort();
    for n in names {
        w.start_file(n.clone(), opts).unwrap();
        w.write_all(&std::fs::read(dir.join(&n)).unwrap()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn upload(
    server: &Server,
    key: &str,
    layer: &str,
    query: &str,
    ct: &str,
    body: &[u8],
) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let (status, body) = http_bytes(
        &server.addr,
        "POST",
        &format!("/collections/{layer}/imports{query}"),
        &[("Authorization", &auth), ("Content-Type", ct)],
        body,
    );
    (
        status,
        serde_json::from_str(&body).unwrap_or(json!({ "raw": body })),
    )
}

fn items(server: &Server) -> Vec<Value> {
    let (s, b) = http(
        &server.addr,
        "GET",
        "/collections/risk_points/items?limit=10000",
        &[],
        "",
    );
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    v["features"].as_array().unwrap().clone()
}

/// Easting and northing of every feature of a shapefile, by id (from GDAL's CSV).
fn projected(shp: &Path) -> Vec<(String, f64, f64)> {
    let csv = run(
        "ogr2ogr",
        &[
            "-f",
            "CSV",
            "/vsistdout/",
            shp.to_str().unwrap(),
            "-lco",
            "GEOMETRY=AS_XY",
            "-select",
            "id",
        ],
    );
    csv.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (
                c[2].trim_matches('"').to_string(),
                c[0].parse().unwrap(),
                c[1].parse().unwrap(),
            )
        })
        .collect()
}

/// `cs2cs` from EPSG:`epsg` to EPSG:4326: (lon, lat). The Gauss–Krüger CRSs of CGCS2000
/// are northing first, UTM easting first, EPSG:4326 latitude first, as their EPSG
/// definitions say: this oracle knows nothing of riskmap's axis handling.
fn cs2cs(epsg: u32, pts: &[(String, f64, f64)]) -> Vec<(f64, f64)> {
    let northing_first = epsg != 32648;
    let input: String = pts
        .iter()
        .map(|(_, e, n)| {
            if northing_first {
                format!("{n} {e}\n")
            } else {
                format!("{e} {n}\n")
            }
        })
        .collect();
    let mut child = Command::new("cs2cs")
        .args(["-f", "%.12f", &format!("EPSG:{epsg}"), "EPSG:4326"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    text(&out.stdout)
        .lines()
        .map(|l| {
            let v: Vec<f64> = l
                .split_whitespace()
                .take(2)
                .map(|x| x.parse().unwrap())
                .collect();
            (v[1], v[0])
        })
        .collect()
}

fn serve_empty() -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    riskmap(&["init", "--data", dir.path().to_str().unwrap()]);
    let key = cli_key(dir.path(), "importer");
    let server = start(dir.path(), &["--no-demo"]);
    (dir, server, key)
}

#[test]
fn shapefiles_in_gauss_kruger_and_utm_with_gbk_text_land_where_cs2cs_says() {
    let (dir, server, key) = serve_empty();
    let work = tempfile::tempdir().unwrap();
    let mut expected: Vec<(String, f64, f64, String, String)> = Vec::new();
    for (n, epsg) in [4547u32, 4545, 4524, 32648].into_iter().enumerate() {
        // Three variants of each: .cpg present; no .cpg (the DBF's language byte says
        // GBK); no .cpg and no language byte (detected).
        for variant in 0..3 {
            let prefix = format!("C{epsg}V{variant}-");
            let feats = points(&prefix);
            let src = work.path().join(format!("{prefix}src.geojson"));
            std::fs::write(&src, collection(feats.clone())).unwrap();
            let stem = format!("set{n}{variant}");
            let shp = work.path().join(format!("{stem}.shp"));
            run(
                "ogr2ogr",
                &[
                    "-f",
                    "ESRI Shapefile",
                    "-t_srs",
                    &format!("EPSG:{epsg}"),
                    "-lco",
                    "ENCODING=CP936",
                    shp.to_str().unwrap(),
                    src.to_str().unwrap(),
                ],
            );
            if variant >= 1 {
                let _ = std::fs::remove_file(work.path().join(format!("{stem}.cpg")));
            }
            // GDAL writes no language byte (it relies on the .cpg); ArcGIS writes 0x4D
            // for code page 936, as variant 1 has it.
            let dbf = work.path().join(format!("{stem}.dbf"));
            let mut b = std::fs::read(&dbf).unwrap();
            b[29] = if variant == 1 { 0x4d } else { 0 };
            std::fs::write(&dbf, b).unwrap();
            let pts = projected(&shp);
            assert_eq!(pts.len(), feats.len());
            for ((id, _, _), (lon, lat)) in pts.iter().zip(cs2cs(epsg, &pts)) {
                let f = feats.iter().find(|f| f["id"] == json!(id)).unwrap();
                let name = f["properties"]["name"].as_str().unwrap().to_string();
                let district = f["properties"]["district"].as_str().unwrap().to_string();
                expected.push((id.clone(), lon, lat, name, district));
            }
            let (status, report) = upload(
                &server,
                &key,
                "risk_points",
                "",
                "application/zip",
                &zip_set(work.path(), &stem),
            );
            assert_eq!(status, 201, "EPSG:{epsg} variant {variant}: {report}");
            assert_eq!(report["added"], 24, "{report}");
            assert_eq!(report["source"]["crs"], format!("EPSG:{epsg}"), "{report}");
            let enc = report["source"]["encoding"].as_str().unwrap();
            assert!(enc == "GBK" || enc == "GB18030", "{report}");
            let source = report["source"]["encoding_source"].as_str().unwrap();
            let want = [".cpg", "DBF language byte", "detected"][variant];
            assert_eq!(source, want, "{report}");
        }
    }
    let got = items(&server);
    assert_eq!(got.len(), expected.len());
    for (id, lon, lat, name, district) in &expected {
        let f = got.iter().find(|f| f["id"] == json!(id)).unwrap();
        let c = f["geometry"]["coordinates"].as_array().unwrap();
        let (x, y) = (c[0].as_f64().unwrap(), c[1].as_f64().unwrap());
        assert!(
            (x - lon).abs() < 1e-7 && (y - lat).abs() < 1e-7,
            "{id}: ({x}, {y}) against cs2cs ({lon}, {lat})"
        );
        assert_eq!(
            f["properties"]["name"].as_str().unwrap().as_bytes(),
            name.as_bytes(),
            "{id}"
        );
        assert_eq!(
            f["properties"]["district"].as_str().unwrap().as_bytes(),
            district.as_bytes(),
            "{id}"
        );
    }
    // The reports are kept.
    let auth = format!("Bearer {key}");
    let (s, b) = http(
        &server.addr,
        "GET",
        "/imports",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(s, 200, "{b}");
    let list: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(list["imports"].as_array().unwrap().len(), 12);
    let first = list["imports"][0]["href"].as_str().unwrap().to_string();
    let (s, b) = http(&server.addr, "GET", &first, &[("Authorization", &auth)], "");
    assert_eq!(s, 200, "{b}");
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["added"], 24);
    drop(server);
    // Nothing left behind in the uploads directory.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("uploads"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A valid zipped shapefile of `feats` in EPSG:4547 and GBK, as (stem, files).
fn shapefile_files(work: &Path, stem: &str, feats: Vec<Value>) -> Vec<(String, Vec<u8>)> {
    let src = work.join(format!("{stem}.geojson"));
    std::fs::write(&src, collection(feats)).unwrap();
    let shp = work.join(format!("{stem}.shp"));
    run(
        "ogr2ogr",
        &[
            "-f",
            "ESRI Shapefile",
            "-t_srs",
            "EPSG:4547",
            "-lco",
            "ENCODING=CP936",
            shp.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    ["shp", "shx", "dbf", "prj", "cpg"]
        .iter()
        .map(|e| {
            (
                format!("{stem}.{e}"),
                std::fs::read(work.join(format!("{stem}.{e}"))).unwrap(),
            )
        })
        .collect()
}

fn zip_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in files {
        w.start_file(name.clone(), zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn hostile_files_are_refused_with_a_reason_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    riskmap(&["init", "--data", dir.path().to_str().unwrap()]);
    let key = cli_key(dir.path(), "importer");
    // The zip-bomb cap lowered to 32 MiB for the test.
    let server = &start_on(
        dir.path(),
        &layers_dir(),
        &[("RISKMAP_MAX_UNZIPPED_MB", "32")],
    );
    let work = tempfile::tempdir().unwrap();
    let good = shapefile_files(work.path(), "good", points("G-"));
    let with = |name: &str, bytes: Vec<u8>| -> Vec<(String, Vec<u8>)> {
        let mut f: Vec<_> = good
            .iter()
            .filter(|(n, _)| !n.ends_with(&name[name.len() - 4..]))
            .cloned()
            .collect();
        f.push((name.to_string(), bytes));
        f
    };
    let file = |n: &str| good.iter().find(|(f, _)| f.ends_with(n)).unwrap().1.clone();
    let mut cases: Vec<(&str, &str, String, Vec<u8>, &str)> = Vec::new();
    // Zip slip.
    let mut slip = good.clone();
    slip[0].0 = "../../evil.shp".into();
    cases.push((
        "zip slip",
        "application/zip",
        String::new(),
        zip_of(&slip),
        "leaves the archive",
    ));
    // A symbolic link entry.
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (n, b) in &good {
        w.start_file(n.clone(), zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(b).unwrap();
    }
    w.add_symlink(
        "link.dbf",
        "/etc/passwd",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    cases.push((
        "symlink",
        "application/zip",
        String::new(),
        w.finish().unwrap().into_inner(),
        "symbolic link",
    ));
    // A zip bomb: 64 MiB of zeros, over the server's 32 MiB cap (RISKMAP_MAX_UNZIPPED_MB).
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("bomb.dbf", zip::write::SimpleFileOptions::default())
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        w.write_all(&zeros).unwrap();
    }
    cases.push((
        "zip bomb",
        "application/zip",
        String::new(),
        w.finish().unwrap().into_inner(),
        "inflates to more than",
    ));
    // An archive inside the archive.
    cases.push((
        "nested",
        "application/zip",
        String::new(),
        zip_of(&with("inner.zip", zip_of(&good))),
        "nested",
    ));
    // A VRT named as GeoJSON.
    let vrt = b"<OGRVRTDataSource><OGRVRTLayer name=\"x\"><SrcDataSource>/etc/passwd</SrcDataSource></OGRVRTLayer></OGRVRTDataSource>".to_vec();
    cases.push((
        "VRT as GeoJSON",
        "application/geo+json",
        String::new(),
        vrt,
        "VRT",
    ));
    // An HTML page as the .prj.
    cases.push((
        "HTML .prj",
        "application/zip",
        String::new(),
        zip_of(&with(
            "good.prj",
            b"<html><body>404 Not Found</body></html>".to_vec(),
        )),
        ".prj cannot be read",
    ));
    // A truncated .shp.
    let shp = file(".shp");
    cases.push((
        "truncated .shp",
        "application/zip",
        String::new(),
        zip_of(&with("good.shp", shp[..shp.len() - 7].to_vec())),
        "truncated",
    ));
    // A DBF whose record count disagrees with the .shx.
    let mut dbf = file(".dbf");
    dbf[4] = dbf[4].wrapping_add(1);
    cases.push((
        "DBF count",
        "application/zip",
        String::new(),
        zip_of(&with("good.dbf", dbf)),
        "records",
    ));
    // NaN coordinates in CSV and JSON.
    cases.push((
        "NaN in CSV",
        "text/csv",
        String::new(),
        b"id,name,category,level,lon,lat\nN1,x,landslide,I,NaN,29.5\n".to_vec(),
        "finite",
    ));
    cases.push(("NaN in GeoJSON", "application/geo+json", String::new(), br#"{"type":"Feature","id":"N2","properties":{"name":"x","category":"landslide","level":"I"},"geometry":{"type":"Point","coordinates":[NaN,29.5]}}"#.to_vec(), ""));
    // 100,000-deep nesting.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    cases.push((
        "deep nesting",
        "application/geo+json",
        String::new(),
        deep.into_bytes(),
        "",
    ));
    // An unknown CRS, in the request and in the file.
    cases.push((
        "unknown crs=",
        "application/zip",
        "?crs=EPSG:999999".into(),
        zip_of(&good),
        "crs",
    ));
    cases.push(("unknown crs member", "application/geo+json", String::new(), br#"{"type":"FeatureCollection","crs":{"type":"name","properties":{"name":"urn:ogc:def:crs:EPSG::999999"}},"features":[]}"#.to_vec(), "999999"));
    // A wrong encoding: GBK text in a file whose .cpg says UTF-8.
    cases.push((
        "wrong encoding",
        "application/zip",
        String::new(),
        zip_of(&with("good.cpg", b"UTF-8".to_vec())),
        "not valid UTF-8",
    ));
    // A shapefile in projected metres with no .prj.
    let no_prj: Vec<_> = good
        .iter()
        .filter(|(n, _)| !n.ends_with(".prj"))
        .cloned()
        .collect();
    cases.push((
        "no .prj",
        "application/zip",
        String::new(),
        zip_of(&no_prj),
        "Gauss",
    ));
    // Bytes that are not what the Content-Type says.
    cases.push((
        "zip as GeoPackage",
        "application/geopackage+sqlite3",
        String::new(),
        zip_of(&good),
        "not GeoPackage",
    ));
    for (what, ct, query, body, reason) in cases {
        let (status, answer) = upload(server, &key, "risk_points", &query, ct, &body);
        assert!((400..500).contains(&status), "{what}: {status} {answer}");
        let said = answer.to_string();
        assert!(said.contains(reason), "{what}: {said}");
        assert_eq!(
            sqlite_count(dir.path(), "risk_points"),
            0,
            "{what}: something was written"
        );
        // Tiles are served throughout.
        let (s, _) = http(
            &server.addr,
            "GET",
            "/tiles/risk_points/5/25/13.mvt",
            &[],
            "",
        );
        assert!(
            s == 200 || s == 204,
            "{what}: the server stopped serving tiles ({s})"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path().join("uploads"))
            .map(|d| d.collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{what}: left behind {left:?}");
        assert!(!dir.path().join("evil.shp").exists() && !work.path().join("evil.shp").exists());
    }
    // The good file itself goes in.
    let (status, answer) = upload(
        server,
        &key,
        "risk_points",
        "",
        "application/zip",
        &zip_of(&good),
    );
    assert_eq!(status, 201, "{answer}");
    // A viewer may not upload.
    let viewer = cli_key(dir.path(), "viewer");
    let (status, _) = upload(
        server,
        &viewer,
        "risk_points",
        "",
        "application/zip",
        &zip_of(&good),
    );
    assert_eq!(status, 403);
}

#[test]
fn a_dry_run_writes_nothing_and_counts_what_the_real_run_does() {
    let (dir, server, key) = serve_empty();
    let first = points("D-");
    let (s, _) = upload(
        &server,
        &key,
        "risk_points",
        "",
        "application/geo+json",
        collection(first.clone()).as_bytes(),
    );
    assert_eq!(s, 201);
    // Half changed, half the same, some new; mode=replace drops those absent.
    let mut second: Vec<Value> = first[..12].to_vec();
    for f in second.iter_mut().take(6) {
        f["properties"]["level"] = json!("I");
    }
    second.extend(points("E-").into_iter().take(5));
    let body = collection(second);
    let audit_before = sqlite_count(dir.path(), "riskmap_audit");
    let tile = |s: &Server| http(&s.addr, "GET", "/tiles/risk_points/0/0/0.mvt", &[], "").1;
    let tile_before = tile(&server);
    let (s, dry) = upload(
        &server,
        &key,
        "risk_points",
        "?mode=replace&dry_run=true",
        "application/geo+json",
        body.as_bytes(),
    );
    assert_eq!(s, 200, "{dry}");
    assert_eq!(dry["committed"], false);
    assert_eq!(sqlite_count(dir.path(), "riskmap_audit"), audit_before);
    assert_eq!(items(&server).len(), 24);
    assert_eq!(tile(&server), tile_before);
    let (s, real) = upload(
        &server,
        &key,
        "risk_points",
        "?mode=replace",
        "application/geo+json",
        body.as_bytes(),
    );
    assert_eq!(s, 201, "{real}");
    for k in [
        "features",
        "added",
        "updated",
        "unchanged",
        "deleted",
        "rejected",
    ] {
        assert_eq!(dry[k], real[k], "{k}: dry {dry} real {real}");
    }
    assert_eq!(
        (
            real["added"].as_u64(),
            real["updated"].as_u64(),
            real["unchanged"].as_u64(),
            real["deleted"].as_u64()
        ),
        (Some(5), Some(6), Some(6), Some(12))
    );
    assert_eq!(items(&server).len(), 17);
    // A retry with the same Idempotency-Key imports nothing twice.
    let auth = format!("Bearer {key}");
    let third = collection(points("F-"));
    let send = || {
        http_bytes(
            &server.addr,
            "POST",
            "/collections/risk_points/imports",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/geo+json"),
                ("Idempotency-Key", "k-1"),
            ],
            third.as_bytes(),
        )
    };
    let (s1, b1) = send();
    let (s2, b2) = send();
    assert_eq!((s1, s2), (201, 201), "{b1} {b2}");
    let (v1, v2): (Value, Value) = (
        serde_json::from_str(&b1).unwrap(),
        serde_json::from_str(&b2).unwrap(),
    );
    assert_eq!(v1["id"], v2["id"]);
    assert_eq!(sqlite_audit_count(dir.path(), "import"), 3);
}

/// Boundary features with what real files carry: a multipolygon with a holed part, a
/// polygon with a hole, altitudes, a null property, and a feature without geometry.
fn boundary_features(prefix: &str) -> Vec<Value> {
    let ring = |x0: f64, y0: f64, d: f64| {
        json!([
            [x0, y0, 210.5],
            [x0 + d, y0, 211.0],
            [x0 + d, y0 + d, 212.0],
            [x0, y0 + d, 213.0],
            [x0, y0, 210.5]
        ])
    };
    let hole = |x0: f64, y0: f64, d: f64| {
        json!([
            [x0, y0, 0.0],
            [x0, y0 + d, 0.0],
            [x0 + d, y0 + d, 0.0],
            [x0 + d, y0, 0.0],
            [x0, y0, 0.0]
        ])
    };
    vec![
        json!({"type": "Feature", "properties": {"id": format!("{prefix}1"), "name": "渝北区", "gn_name": "Yubei"},
               "geometry": {"type": "MultiPolygon", "coordinates": [
                   [ring(106.5, 29.6, 0.2), hole(106.55, 29.65, 0.05)],
                   [ring(106.9, 29.6, 0.1)]]}}),
        json!({"type": "Feature", "properties": {"id": format!("{prefix}2"), "name": null, "gn_name": "Unnamed"},
               "geometry": {"type": "MultiPolygon", "coordinates": [[ring(107.2, 29.9, 0.3), hole(107.25, 29.95, 0.1)]]}}),
        json!({"type": "Feature", "properties": {"id": format!("{prefix}3"), "name": "无几何", "gn_name": "none"}, "geometry": null}),
    ]
}

/// The 2-D rings of a stored (multi)polygon.
fn rings_2d(g: &Value) -> Vec<Vec<(f64, f64)>> {
    let polys = match g["type"].as_str().unwrap() {
        "MultiPolygon" => g["coordinates"].as_array().unwrap().clone(),
        _ => vec![g["coordinates"].clone()],
    };
    let mut out = Vec::new();
    for p in polys {
        for r in p.as_array().unwrap() {
            let mut ring: Vec<(f64, f64)> = r
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c[0].as_f64().unwrap(), c[1].as_f64().unwrap()))
                .collect();
            // Winding is the writer's choice (RFC 7946 on output): compare as sets of vertices.
            ring.sort_by(|a, b| a.partial_cmp(b).unwrap());
            out.push(ring);
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

#[test]
fn geopackage_flatgeobuf_geojson_and_csv_keep_parts_holes_and_text_and_drop_z_and_m() {
    let (_dir, server, key) = serve_empty();
    let work = tempfile::tempdir().unwrap();
    for (format, ct, ext, extra) in [
        (
            "GPKG",
            "application/geopackage+sqlite3",
            "gpkg",
            vec!["-dim", "XYZM"],
        ),
        ("FlatGeobuf", "application/flatgeobuf", "fgb", vec![]),
        ("GeoJSON", "application/geo+json", "geojson", vec![]),
    ] {
        let prefix = format!("{ext}-");
        let feats = boundary_features(&prefix);
        let src = work.path().join(format!("{ext}-src.geojson"));
        std::fs::write(&src, collection(feats.clone())).unwrap();
        let out = work.path().join(format!("b.{ext}"));
        let mut args = vec![
            "-f",
            format,
            out.to_str().unwrap(),
            src.to_str().unwrap(),
            "-nln",
            "districts",
        ];
        args.extend(extra.iter().copied());
        run("ogr2ogr", &args);
        let (status, report) = upload(
            &server,
            &key,
            "boundary",
            "?skip_invalid=true",
            ct,
            &std::fs::read(&out).unwrap(),
        );
        assert_eq!(status, 201, "{format}: {report}");
        if format == "FlatGeobuf" {
            // GDAL's FlatGeobuf writer leaves features without geometry out of the file.
            assert_eq!(
                (report["added"].as_u64(), report["rejected"].as_u64()),
                (Some(2), Some(0)),
                "{format}: {report}"
            );
        } else {
            assert_eq!(
                (report["added"].as_u64(), report["rejected"].as_u64()),
                (Some(2), Some(1)),
                "{format}: {report}"
            );
            let r = &report["rejections"][0];
            assert_eq!(
                (r["feature"].as_u64(), r["field"].as_str()),
                (Some(3), Some("geometry")),
                "{format}: {report}"
            );
            assert!(
                r["reason"].as_str().unwrap().contains("null"),
                "{format}: {report}"
            );
        }
        if format != "GeoJSON" {
            assert_eq!(report["source"]["z_dropped"], 2, "{format}: {report}");
            assert_eq!(
                report["source"]["source_layer"], "districts",
                "{format}: {report}"
            );
        }
        if format == "GPKG" {
            assert_eq!(report["source"]["m_dropped"], 2, "{report}");
        }
        let (s, b) = http(
            &server.addr,
            "GET",
            &format!("/collections/boundary/items?limit=100&filter=id%20LIKE%20%27{prefix}%25%27"),
            &[],
            "",
        );
        assert_eq!(s, 200, "{b}");
        let got: Value = serde_json::from_str(&b).unwrap();
        let got = got["features"].as_array().unwrap();
        assert_eq!(got.len(), 2, "{format}: {b}");
        for f in &feats[..2] {
            let id = f["properties"]["id"].as_str().unwrap();
            let g = got.iter().find(|x| x["id"] == json!(id)).unwrap();
            // Equal to the file's numbers (GDAL's GeoJSON writer keeps 15 digits).
            let (a, b) = (rings_2d(&g["geometry"]), rings_2d(&f["geometry"]));
            assert_eq!(a.len(), b.len(), "{format} {id}");
            for (ra, rb) in a.iter().zip(&b) {
                assert_eq!(ra.len(), rb.len(), "{format} {id}");
                for (p, q) in ra.iter().zip(rb) {
                    assert!(
                        (p.0 - q.0).abs() < 1e-12 && (p.1 - q.1).abs() < 1e-12,
                        "{format} {id}: {p:?} {q:?}"
                    );
                }
            }
            assert_eq!(
                g["properties"]["name"], f["properties"]["name"],
                "{format} {id}: text and nulls kept"
            );
        }
    }
}

#[test]
fn gbk_csv_in_gauss_kruger_and_a_gcj02_file_come_back_in_wgs84() {
    let (_dir, server, key) = serve_empty();
    let work = tempfile::tempdir().unwrap();
    // A spreadsheet export: GBK text, x/y in EPSG:4547 metres.
    let feats = points("X-");
    let src = work.path().join("src.geojson");
    std::fs::write(&src, collection(feats.clone())).unwrap();
    let shp = work.path().join("pts.shp");
    run(
        "ogr2ogr",
        &[
            "-f",
            "ESRI Shapefile",
            "-t_srs",
            "EPSG:4547",
            shp.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    let pts = projected(&shp);
    let expected = cs2cs(4547, &pts);
    let mut csv = String::from("id,name,category,level,district,x,y\n");
    for (id, e, n) in &pts {
        let f = feats.iter().find(|f| f["id"] == json!(id)).unwrap();
        let p = &f["properties"];
        csv.push_str(&format!(
            "{id},{},{},{},{},{e},{n}\n",
            p["name"].as_str().unwrap(),
            p["category"].as_str().unwrap(),
            p["level"].as_str().unwrap(),
            p["district"].as_str().unwrap()
        ));
    }
    let gbk = encoding_rs::GBK.encode(&csv).0.into_owned();
    let (status, report) = upload(
        &server,
        &key,
        "risk_points",
        "?crs=EPSG:4547",
        "text/csv",
        &gbk,
    );
    assert_eq!(status, 201, "{report}");
    assert_eq!(report["source"]["encoding"], "GB18030", "{report}");
    let got = items(&server);
    for ((id, _, _), (lon, lat)) in pts.iter().zip(&expected) {
        let f = got.iter().find(|f| f["id"] == json!(id)).unwrap();
        let c = &f["geometry"]["coordinates"];
        assert!(
            (c[0].as_f64().unwrap() - lon).abs() < 1e-7
                && (c[1].as_f64().unwrap() - lat).abs() < 1e-7,
            "{id}: {c} against cs2cs ({lon}, {lat})"
        );
        let want = feats.iter().find(|x| x["id"] == json!(id)).unwrap();
        assert_eq!(f["properties"]["name"], want["properties"]["name"], "{id}");
    }
    // Points published by a Chinese web map in GCJ-02: back to WGS84 within the
    // documented 1e-9°.
    let truth = points("G-");
    let mut shifted = truth.clone();
    for f in &mut shifted {
        let c = &f["geometry"]["coordinates"];
        let g = riskmap::ingest::crs::wgs84_to_gcj02(geo_types::Coord {
            x: c[0].as_f64().unwrap(),
            y: c[1].as_f64().unwrap(),
        });
        f["geometry"]["coordinates"] = json!([g.x, g.y]);
    }
    let (status, report) = upload(
        &server,
        &key,
        "risk_points",
        "?crs=GCJ02",
        "application/geo+json",
        collection(shifted).as_bytes(),
    );
    assert_eq!(status, 201, "{report}");
    assert_eq!(report["source"]["crs"], "GCJ-02");
    let got = items(&server);
    for t in &truth {
        let f = got.iter().find(|f| f["id"] == t["id"]).unwrap();
        for i in 0..2 {
            let (a, b) = (
                f["geometry"]["coordinates"][i].as_f64().unwrap(),
                t["geometry"]["coordinates"][i].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 1e-9, "{}: {a} against {b}", t["id"]);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn tile_of(lon: f64, lat: f64, z: u32) -> (u32, u32) {
    let n = f64::from(1u32 << z);
    let x = ((lon + 180.0) / 360.0 * n).floor() as u32;
    let r = lat.to_radians();
    let y =
        ((1.0 - (r.tan() + 1.0 / r.cos()).ln() / std::f64::consts::PI) / 2.0 * n).floor() as u32;
    (x, y)
}

/// `serve` on `dir` with the layer files of `layers`, and `env` for the server only.
fn start_on(dir: &Path, layers: &Path, env: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riskmap"));
    cmd.args([
        "serve",
        "--no-demo",
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.to_str().unwrap(),
        "--layers",
        layers.to_str().unwrap(),
    ])
    .envs(env.iter().copied())
    .env("RISKMAP_LOG", "info")
    .stderr(std::process::Stdio::piped());
    common::server::start_command(cmd)
}

/// A server on a new store with a copy of the layer files in `DIR/layers` (a test that
/// creates layers must not write into the repository's), and a key with `role`.
fn serve_with_own_layers(role: &str) -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let layers = dir.path().join("layers");
    copy_dir(&layers_dir(), &layers);
    riskmap(&["init", "--data", dir.path().to_str().unwrap()]);
    let key = cli_key(dir.path(), role);
    let server = start_on(dir.path(), &layers, &[]);
    (dir, server, key)
}

#[test]
fn a_layer_created_from_a_zipped_shapefile_is_served_at_once_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let layers = dir.path().join("layers");
    copy_dir(&layers_dir(), &layers);
    let data = dir.path().join("data");
    let run_cli = |args: &[&str]| {
        let o = riskmap_raw(&[args, &["--data", data.to_str().unwrap()]].concat());
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout).trim().to_string()
    };
    // riskmap_raw adds the repository's --layers; these commands need only the store.
    run_cli(&["init"]);
    let admin = run_cli(&["keys", "add", "--role", "admin", "--name", "a"]);
    let importer = run_cli(&["keys", "add", "--role", "importer", "--name", "i"]);
    let server = start_on(&data, &layers, &[]);
    // Shelters from a district office: a GBK shapefile in Gauss–Krüger with a Chinese
    // field name, and a type column that takes few values.
    let work = tempfile::tempdir().unwrap();
    let kinds = ["school", "park", "stadium"];
    let shelters: Vec<Value> = (0..30)
        .map(|i| {
            json!({"type": "Feature", "properties": {"id": format!("SH{i:02}"), "名称": format!("避难场所{i}号"), "capacity": 200 + i * 10, "type": kinds[i % 3]},
                   "geometry": {"type": "Point", "coordinates": [106.45 + i as f64 * 0.004, 29.52 + (i % 5) as f64 * 0.003]}})
        })
        .collect();
    let src = work.path().join("shelters.geojson");
    std::fs::write(&src, collection(shelters.clone())).unwrap();
    run(
        "ogr2ogr",
        &[
            "-f",
            "ESRI Shapefile",
            "-t_srs",
            "EPSG:4545",
            "-lco",
            "ENCODING=CP936",
            work.path().join("bz.shp").to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    let zip = zip_set(work.path(), "bz");
    let create = |key: &str, query: &str| {
        let auth = format!("Bearer {key}");
        let (s, b) = http_bytes(
            &server.addr,
            "POST",
            &format!("/collections{query}"),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/zip"),
            ],
            &zip,
        );
        (
            s,
            serde_json::from_str::<Value>(&b).unwrap_or(json!({ "raw": b })),
        )
    };
    let q = "?name=shelters&kind=reference&title=Emergency%20shelters&map=%E5%90%8D%E7%A7%B0:name";
    let (s, _) = create(&importer, q);
    assert_eq!(s, 403, "an importer may not create layers");
    // A Chinese property name without map= is refused, naming it.
    let (s, b) = create(&admin, "?name=shelters&kind=reference");
    assert_eq!(s, 422, "{b}");
    assert!(b.to_string().contains("名称"), "{b}");
    let (s, b) = create(&admin, q);
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["added"], 30, "{b}");
    let (s, _) = create(&admin, q);
    assert_eq!(s, 409, "the name is taken");
    let toml = std::fs::read_to_string(layers.join("shelters.toml")).unwrap();
    assert!(
        toml.contains("uploaded = true")
            && toml.contains("values = [\"park\", \"school\", \"stadium\"]")
            && toml.contains("type = \"integer\""),
        "{toml}"
    );

    let check = |server: &Server| {
        let get = |path: &str| {
            let (s, b) = http(&server.addr, "GET", path, &[], "");
            assert_eq!(s, 200, "{path}: {b}");
            b
        };
        let c: Value = serde_json::from_str(&get("/collections")).unwrap();
        assert!(
            c["collections"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == "shelters"),
            "{c}"
        );
        let items: Value =
            serde_json::from_str(&get("/collections/shelters/items?limit=100")).unwrap();
        assert_eq!(items["features"].as_array().unwrap().len(), 30);
        let f = items["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == "SH07")
            .unwrap()
            .clone();
        assert_eq!(f["properties"]["name"], "避难场所7号");
        assert_eq!(f["properties"]["capacity"], 270);
        let near: Value = serde_json::from_str(&get(
            "/collections/shelters/nearest?lon=106.45&lat=29.52&k=3",
        ))
        .unwrap();
        assert_eq!(near["features"][0]["id"], "SH00", "{near}");
        let filtered: Value = serde_json::from_str(&get(
            "/collections/shelters/items?filter=type%3D%27park%27&limit=100",
        ))
        .unwrap();
        assert_eq!(filtered["features"].as_array().unwrap().len(), 10);
        let (x, y) = tile_of(106.5, 29.525, 12);
        let (s, body) = http_bytes(
            &server.addr,
            "GET",
            &format!("/tiles/shelters/12/{x}/{y}.mvt"),
            &[],
            b"",
        );
        assert_eq!(s, 200, "{body}");
        let tj: Value = serde_json::from_str(&get("/tiles/risk_points,shelters.json")).unwrap();
        assert!(
            tj["vector_layers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["id"] == "shelters"),
            "{tj}"
        );
        let style: Value = serde_json::from_str(&get("/styles/riskmap.json")).unwrap();
        assert!(
            style["sources"]["riskmap"]["url"]
                .as_str()
                .unwrap()
                .contains("shelters"),
            "{}",
            style["sources"]
        );
        assert!(
            style["layers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["source-layer"] == "shelters")
        );
        // The map page lists it in its legend (from the style's metadata).
        let entry = &style["metadata"]["riskmap:legend"]["shelters"];
        assert_eq!(entry["mark"], "swatch", "{entry}");
        assert!(
            entry["items"][0][1]
                .as_str()
                .is_some_and(|c| c.starts_with('#')),
            "{entry}"
        );
    };
    check(&server);
    drop(server);
    let server = start_on(&data, &layers, &[]);
    check(&server);

    // Removing it: admin only; hand-written layers cannot be.
    let del = |key: &str, name: &str| {
        http(
            &server.addr,
            "DELETE",
            &format!("/collections/{name}"),
            &[("Authorization", &format!("Bearer {key}"))],
            "",
        )
        .0
    };
    assert_eq!(del(&importer, "shelters"), 403);
    assert_eq!(del(&admin, "risk_points"), 409);
    assert_eq!(del(&admin, "shelters"), 204);
    assert_eq!(
        http(&server.addr, "GET", "/collections/shelters", &[], "").0,
        404
    );
    assert!(!layers.join("shelters.toml").exists());
    assert_eq!(del(&admin, "shelters"), 404);
    drop(server);
    let server = start_on(&data, &layers, &[]);
    assert_eq!(
        http(&server.addr, "GET", "/collections/shelters", &[], "").0,
        404
    );
}

#[test]
fn every_problem_of_a_feature_is_reported_at_once_with_hints() {
    let (dir, server, key) = serve_empty();
    let mut bad = risk_point(" R1", 29.55, 106.55, "V");
    bad["properties"]["category"] = json!("landslip");
    let mut metres = risk_point("R2", 412_345.6, 3_270_123.4, "I");
    metres["properties"]["name"] = json!("ok");
    let body = collection(vec![bad, metres, risk_point("R3", 106.5, 29.5, "II")]);
    let (status, report) = upload(
        &server,
        &key,
        "risk_points",
        "",
        "application/geo+json",
        body.as_bytes(),
    );
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["rejected"], 2, "{report}");
    let of = |n: u64| -> Vec<(String, String)> {
        report["rejections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["feature"] == n)
            .map(|r| {
                (
                    r["field"].as_str().unwrap().to_string(),
                    r["reason"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let first = of(1);
    let fields: Vec<&str> = first.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        ["id", "geometry", "properties.category", "properties.level"],
        "{report}"
    );
    assert!(first[1].1.contains("latitude, longitude"), "{:?}", first[1]);
    assert!(first[2].1.contains("closest: landslide"), "{:?}", first[2]);
    let second = of(2);
    assert!(
        second[0].1.contains("projected metres") && second[0].1.contains("crs="),
        "{second:?}"
    );
    assert_eq!(sqlite_count(dir.path(), "risk_points"), 0);
}

/// `curl -F`: the file in the form's part `file`, options as text fields.
fn curl_form(server: &Server, key: &str, path: &str, fields: &[&str]) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {key}"));
    for f in fields {
        cmd.args(["-F", f]);
    }
    cmd.arg(format!("http://{}{path}", server.addr));
    let out = cmd.output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("curl printed the status");
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(json!({ "raw": body })),
    )
}

#[test]
fn a_multipart_form_carries_the_file_and_its_options() {
    let (dir, server, key) = serve_with_own_layers("importer");
    let work = tempfile::tempdir().unwrap();
    let geojson = work.path().join("points.geojson");
    std::fs::write(&geojson, collection(points("M"))).unwrap();
    let n = points("M").len() as u64;
    let file = format!("file=@{}", geojson.display());
    // curl sends the part as application/octet-stream: the file name tells GeoJSON.
    let (s, r) = curl_form(
        &server,
        &key,
        "/collections/risk_points/imports",
        &[&file, "dry_run=true", "crs=EPSG:4326"],
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (r["dry_run"].as_bool(), r["added"].as_u64()),
        (Some(true), Some(n)),
        "{r}"
    );
    assert_eq!(r["source"]["format"], "GeoJSON", "{r}");
    assert!(
        items(&server).is_empty(),
        "a dry run through a form writes nothing"
    );
    // The part's own Content-Type is believed, and checked against the bytes.
    let typed = format!("file=@{};type=text/csv", geojson.display());
    let (s, r) = curl_form(&server, &key, "/collections/risk_points/imports", &[&typed]);
    assert!((400..500).contains(&s), "{s} {r}");
    // An option given in the query and in the form is given twice.
    let (s, r) = curl_form(
        &server,
        &key,
        "/collections/risk_points/imports?mode=upsert",
        &[&file, "mode=replace"],
    );
    assert_eq!(s, 400, "{r}");
    assert!(
        r["description"]
            .as_str()
            .unwrap_or_default()
            .contains("twice"),
        "{r}"
    );
    // Unknown fields and forms without a file are refused, naming what is wrong.
    let (s, r) = curl_form(
        &server,
        &key,
        "/collections/risk_points/imports",
        &[&file, "colour=red"],
    );
    assert_eq!(s, 400, "{r}");
    assert!(
        r["description"]
            .as_str()
            .unwrap_or_default()
            .contains("colour"),
        "{r}"
    );
    let (s, r) = curl_form(
        &server,
        &key,
        "/collections/risk_points/imports",
        &["crs=EPSG:4326"],
    );
    assert_eq!(s, 400, "{r}");
    assert!(
        r["description"]
            .as_str()
            .unwrap_or_default()
            .contains("\"file\""),
        "{r}"
    );
    let other = format!("data=@{}", geojson.display());
    let (s, r) = curl_form(
        &server,
        &key,
        "/collections/risk_points/imports",
        &[&file, &other],
    );
    assert_eq!(s, 400, "{r}");
    // A zipped shapefile by its file name, into a new layer, with the layer's name in
    // the query and an import option in the form.
    let shp_dir = work.path().join("shp");
    std::fs::create_dir(&shp_dir).unwrap();
    let zip_path = work.path().join("shelters.zip");
    std::fs::write(
        &zip_path,
        zip_of(&shapefile_files(&shp_dir, "shelters", points("S"))),
    )
    .unwrap();
    let admin = cli_key(dir.path(), "admin");
    let zipped = format!("file=@{}", zip_path.display());
    let (s, r) = curl_form(
        &server,
        &admin,
        "/collections?name=shelters_form&kind=reference",
        &[&zipped, "crs=EPSG:4547"],
    );
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["added"].as_u64(), Some(n), "{r}");
    assert_eq!(r["source"]["crs"], "EPSG:4547", "{r}");
    assert_eq!(r["source"]["crs_source"], "request", "{r}");
    let (s, r) = curl_form(
        &server,
        &admin,
        "/collections?kind=reference",
        &[&zipped, "name=x"],
    );
    assert_eq!(s, 400, "{r}");
    // The real import, through the form.
    let (s, r) = curl_form(&server, &key, "/collections/risk_points/imports", &[&file]);
    assert_eq!(s, 201, "{r}");
    assert_eq!(items(&server).len() as u64, n);
}

#[test]
fn a_layer_is_created_from_a_csv_with_types_taken_from_its_text() {
    let (dir, server, admin) = serve_with_own_layers("admin");
    let layers = dir.path().join("layers");
    // Hydrants, GBK-encoded, one cell of each kind; "007" is a code, not a number.
    let mut csv = String::from("id,name,pressure_kpa,floors,in_service,code,lon,lat\n");
    for i in 0..20 {
        csv.push_str(&format!(
            "H{i:02},{},{}.5,{},{},00{i},{},{}\n",
            NAMES[i % NAMES.len()],
            300 + i,
            i % 3,
            i % 2 == 0,
            106.5 + i as f64 * 0.01,
            29.5 + i as f64 * 0.01
        ));
    }
    let (gbk, _, _) = encoding_rs::GBK.encode(&csv);
    let auth = format!("Bearer {admin}");
    let (s, b) = http_bytes(
        &server.addr,
        "POST",
        "/collections?name=hydrants&kind=reference&title=Hydrants",
        &[("Authorization", &auth), ("Content-Type", "text/csv")],
        &gbk,
    );
    assert_eq!(s, 201, "{b}");
    let r: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(r["added"].as_u64(), Some(20), "{r}");
    let toml = std::fs::read_to_string(layers.join("hydrants.toml")).unwrap();
    for (name, ty) in [
        ("name", "string"),
        ("pressure_kpa", "float"),
        ("floors", "integer"),
        ("in_service", "boolean"),
        ("code", "string"),
    ] {
        let at = toml
            .find(&format!("name = \"{name}\""))
            .unwrap_or_else(|| panic!("{name} in {toml}"));
        let rest = &toml[at..];
        let ty_at = rest.find("type = ").unwrap();
        assert!(
            rest[ty_at..].starts_with(&format!("type = \"{ty}\"")),
            "{name} is {ty} in {toml}"
        );
    }
    let (s, b) = http(
        &server.addr,
        "GET",
        "/collections/hydrants/items/H03",
        &[],
        "",
    );
    assert_eq!(s, 200, "{b}");
    let f: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(f["properties"]["name"], NAMES[3], "{f}");
    assert_eq!(f["properties"]["pressure_kpa"], 303.5, "{f}");
    assert_eq!(f["properties"]["floors"], 0, "{f}");
    assert_eq!(f["properties"]["in_service"], false, "{f}");
    assert_eq!(f["properties"]["code"], "003", "{f}");
    assert_eq!(f["geometry"]["coordinates"], json!([106.53, 29.53]), "{f}");
}
