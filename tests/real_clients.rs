//! Real clients against the real server (issue 8, acceptance 2): GDAL's OAPIF driver
//! (`ogrinfo -so`, `ogr2ogr`, `-spat`, `-where` through `/api`), GDAL's OGCAPI driver, and OWSLib's OGC API –
//! Features client. Needs Debian's gdal-bin and python3-owslib (`scripts/test.sh`
//! installs both); without them these tests fail, saying so.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// 30 risk points on a line of longitude, every third of level I; the server on them.
fn serve_points() -> (tempfile::TempDir, common::server::Server) {
    let dir = tempfile::tempdir().unwrap();
    {
        let app = open_app(dir.path());
        for i in 0..30 {
            let level = if i % 3 == 0 { "I" } else { "III" };
            create(
                &app,
                "risk_points",
                &risk_point(&format!("P{i:02}"), 106.0 + i as f64 * 0.01, 29.5, level),
            );
        }
    }
    let server = common::server::start(dir.path(), &["--no-demo"]);
    (dir, server)
}

fn gdal(program: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(program)
        .args(args)
        .env("CPL_CURL_VERBOSE", "YES")
        .env("GDAL_HTTP_TIMEOUT", "60")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{program} is installed (apt-get install gdal-bin; scripts/test.sh does it): {e}"
            )
        });
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{program} {args:?}: {stderr}");
    (stdout, stderr)
}

/// The paths GDAL asked for, from curl's verbose log.
fn requests(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("> GET "))
        .map(|l| l.trim_end_matches(" HTTP/1.1"))
        .collect()
}

#[test]
fn gdal_counts_copies_and_filters_through_the_server() {
    let (dir, server) = serve_points();
    let url = format!("OAPIF:http://{}", server.addr);

    // `ogrinfo -so`: the count from numberMatched, no error.
    let (stdout, stderr) = gdal("ogrinfo", &["-ro", "-so", &url, "risk_points"]);
    assert!(stdout.contains("Feature Count: 30"), "{stdout}");
    assert!(!stderr.contains("ERROR"), "{stderr}");

    // `ogr2ogr` of the layer: as many features as /collections says.
    let out = dir.path().join("copy.geojson");
    gdal(
        "ogr2ogr",
        &["-f", "GeoJSON", out.to_str().unwrap(), &url, "risk_points"],
    );
    let copy: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let (status, body) =
        common::server::http(&server.addr, "GET", "/collections/risk_points", &[], "");
    assert_eq!(status, 200);
    let collection: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        copy["features"].as_array().unwrap().len() as u64,
        collection["featureCount"].as_u64().unwrap()
    );

    // `-spat`: sent as bbox, answered by the server.
    let (stdout, stderr) = gdal(
        "ogrinfo",
        &[
            "-ro",
            "-al",
            "-q",
            "-spat",
            "106.045",
            "29.4",
            "106.095",
            "29.6",
            &url,
            "risk_points",
        ],
    );
    assert_eq!(
        stdout.matches("OGRFeature(risk_points)").count(),
        5,
        "{stdout}"
    );
    assert!(
        requests(&stderr).iter().any(|r| r.contains("bbox=106.045")),
        "{:?}",
        requests(&stderr)
    );

    // GDAL's OGCAPI driver opens the service and lists the layers.
    let (stdout, _) = gdal(
        "ogrinfo",
        &["-ro", "-q", &format!("OGCAPI:http://{}", server.addr)],
    );
    assert!(stdout.contains("risk_points"), "{stdout}");
}

#[test]
fn owslib_reads_conformance_api_queryables_and_filtered_items() {
    let (_dir, server) = serve_points();
    let script = r#"
import json, sys
from owslib.ogcapi.features import Features
w = Features(sys.argv[1])
conformance = w.conformance()
api = w.api()
queryables = w.collection_queryables("risk_points")
page = w.collection_items("risk_points", bbox=[106.045, 29.4, 106.205, 29.6], filter="level = 'I'", limit=100)
print(json.dumps({
    "conformsTo": conformance["conformsTo"],
    "openapi": api.get("openapi") if isinstance(api, dict) else str(type(api)),
    "queryables": sorted(queryables.get("properties", {}).keys()),
    "ids": [f["id"] for f in page["features"]],
    "matched": page.get("numberMatched"),
}))
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script, &format!("http://{}", server.addr)])
        .output()
        .expect("python3 runs");
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "OWSLib (apt-get install python3-owslib; scripts/test.sh does it): {stderr}"
    );
    let got: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert!(
        got["conformsTo"]
            .as_array()
            .unwrap()
            .contains(&"http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter".into())
    );
    assert!(got["openapi"].as_str().unwrap().starts_with("3.0"), "{got}");
    let q: Vec<&str> = got["queryables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(q.contains(&"level") && q.contains(&"geometry"), "{q:?}");
    // Points 5..=20 lie in the box; of them, those of level I: 6, 9, 12, 15, 18.
    let ids: Vec<&str> = got["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids, ["P06", "P09", "P12", "P15", "P18"], "{got}");
    assert_eq!(got["matched"], 5);
}

/// GDAL reads `/api`, finds the filter languages and the layer's properties there, and
/// sends an attribute filter to the server instead of reading the whole layer to filter
/// it itself.
#[test]
fn gdal_reads_the_api_document_and_sends_its_filters_to_the_server() {
    let (_dir, server) = serve_points();
    let url = format!("OAPIF:http://{}", server.addr);
    let (stdout, stderr) = gdal(
        "ogrinfo",
        &[
            "-ro",
            "-al",
            "-q",
            "-where",
            "level = 'I'",
            &url,
            "risk_points",
        ],
    );
    // The ten features of level I, and no other.
    assert_eq!(
        stdout.matches("OGRFeature(risk_points)").count(),
        10,
        "{stdout}"
    );
    assert!(!stdout.contains("level (String) = III"), "{stdout}");
    let requests = requests(&stderr);
    assert!(requests.contains(&"/api"), "{requests:?}");
    let items: Vec<&&str> = requests
        .iter()
        .filter(|r| r.starts_with("/collections/risk_points/items?"))
        .collect();
    // GDAL 3.6 sends the clause as CQL text under the draft's name, `cql-text`
    // (newer versions as `property=value` or CQL2); either way the server filters.
    assert!(
        items.iter().any(|r| r.contains("level=I")
            || (r.contains("filter=level%20%3D%20'I'") && r.contains("filter-lang=cql"))),
        "GDAL filtered on the client: {items:?}"
    );
}
