//! OGC API – Features Part 1 (issue 8) through the router: the landing page and
//! `/conformance`, absolute links named from the request's host, paging links that
//! neither loop nor skip, `bbox` of 4 or 6 numbers, `datetime`, and GeoJSON polygons
//! wound as RFC 7946 says.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};

const HOST: &str = "maps.example.org:9000";
const ORIGIN: &str = "http://maps.example.org:9000";

async fn get(app: &std::sync::Arc<riskmap::app::App>, uri: &str) -> (StatusCode, Value) {
    let (status, _, body) = http(app, "GET", uri, &[("Host", HOST)], None).await;
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, v)
}

fn link<'a>(doc: &'a Value, rel: &str) -> Option<&'a str> {
    doc["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == rel)
        .map(|l| l["href"].as_str().unwrap())
}

/// The path and query of one of our absolute links (asserting its origin).
fn local(href: &str) -> &str {
    href.strip_prefix(ORIGIN)
        .unwrap_or_else(|| panic!("{href} is not under {ORIGIN}"))
}

fn app_with_points(n: usize) -> (tempfile::TempDir, std::sync::Arc<riskmap::app::App>) {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    for i in 0..n {
        let doc = risk_point(&format!("P{i:02}"), 106.0 + i as f64 * 0.01, 29.5, "III");
        create(&app, "risk_points", &doc);
    }
    (dir, app)
}

#[tokio::test]
async fn the_landing_page_and_conformance_link_everything_absolutely() {
    let (_dir, app) = app_with_points(0);
    let (status, landing) = get(&app, "/?f=json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(link(&landing, "self"), Some(format!("{ORIGIN}/").as_str()));
    for rel in ["conformance", "data"] {
        let href = link(&landing, rel).unwrap_or_else(|| panic!("no {rel} link"));
        let (status, _) = get(&app, local(href)).await;
        assert_eq!(status, StatusCode::OK, "{rel}: {href}");
    }
    let (_, conf) = get(&app, "/conformance").await;
    let classes: Vec<&str> = conf["conformsTo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for class in ["core", "geojson"] {
        let uri = format!("http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/{class}");
        assert!(classes.contains(&uri.as_str()), "{classes:?}");
    }
    // Every link of the catalogue is absolute, on the request's host.
    let (_, collections) = get(&app, "/collections").await;
    let mut hrefs = vec![link(&collections, "self").unwrap().to_string()];
    for c in collections["collections"].as_array().unwrap() {
        for l in c["links"].as_array().unwrap() {
            hrefs.push(l["href"].as_str().unwrap().to_string());
        }
    }
    for h in &hrefs {
        local(h);
    }
    // A host that is not host[:port] is refused, not written into links.
    let (status, _, _) = http(&app, "GET", "/collections", &[("Host", "evil/<x>")], None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn paging_links_move_on_go_back_and_never_loop() {
    let (_dir, app) = app_with_points(25);
    let (status, first) = get(&app, "/collections/risk_points/items?limit=10").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["numberMatched"], 25);
    assert_eq!(first["numberReturned"], 10);
    assert!(link(&first, "prev").is_none(), "no prev on the first page");
    // Following `next` visits every feature once, in order, and stops.
    let mut seen = Vec::new();
    let mut page = first;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 3, "more pages than 25 features in tens need");
        seen.extend(
            page["features"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["id"].as_str().unwrap().to_string()),
        );
        let Some(next) = link(&page, "next") else {
            break;
        };
        page = get(&app, local(next)).await.1;
    }
    let all: Vec<String> = (0..25).map(|i| format!("P{i:02}")).collect();
    assert_eq!(seen, all);
    // `prev` of the second page is the first.
    let (_, second) = get(&app, "/collections/risk_points/items?limit=10&offset=10").await;
    let prev = get(&app, local(link(&second, "prev").unwrap())).await.1;
    assert_eq!(prev["features"][0]["id"], "P00");
    assert_eq!(prev["numberReturned"], 10);
    // `limit=0`: an empty page whose links never lead back to itself.
    let (status, empty) = get(&app, "/collections/risk_points/items?limit=0").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty["numberReturned"], 0);
    assert_eq!(empty["numberMatched"], 25);
    assert!(link(&empty, "next").is_none(), "{}", empty["links"]);
    // The largest limit is served, one more is refused naming `limit`.
    let (status, _) = get(&app, "/collections/risk_points/items?limit=10000").await;
    assert_eq!(status, StatusCode::OK);
    let (status, e) = get(&app, "/collections/risk_points/items?limit=10001").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(e.to_string().contains("limit"), "{e}");
}

#[tokio::test]
async fn bbox_takes_four_or_six_numbers_and_datetime_is_checked() {
    let (_dir, app) = app_with_points(25);
    let ids = |doc: &Value| -> Vec<String> {
        doc["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, four) = get(
        &app,
        "/collections/risk_points/items?bbox=106.045,29,106.105,30",
    )
    .await;
    let (status, six) = get(
        &app,
        "/collections/risk_points/items?bbox=106.045,29,-100,106.105,30,100",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&four), ["P05", "P06", "P07", "P08", "P09", "P10"]);
    assert_eq!(ids(&six), ids(&four));
    // A layer without a time property: a well-formed datetime selects everything.
    for dt in [
        "2026-12-02T08:00:00Z",
        "2026-12-02",
        "2026-01-01T00:00:00Z/..",
        "../2026-12-02",
        "2026-01-01/2026-12-31",
    ] {
        let (status, doc) = get(
            &app,
            &format!("/collections/risk_points/items?limit=100&datetime={dt}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{dt}: {doc}");
        assert_eq!(doc["numberMatched"], 25, "{dt}");
    }
    for (query, names) in [
        ("bbox=1,2,3,4,5", "bbox"),
        ("bbox=106,29,NaN,107,30,1", "bbox"),
        ("bbox=106,29,107", "bbox"),
        ("datetime=yesterday", "datetime"),
        ("datetime=../..", "datetime"),
        ("datetime=2026-13-01", "datetime"),
        ("f=xml", "f"),
    ] {
        let (status, e) = get(&app, &format!("/collections/risk_points/items?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(e.to_string().contains(names), "{query}: {e}");
    }
}

/// Signed area of a ring (positive: counter-clockwise in lon/lat).
fn signed_area(ring: &Value) -> f64 {
    let p: Vec<(f64, f64)> = ring
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_f64().unwrap(), c[1].as_f64().unwrap()))
        .collect();
    p.windows(2)
        .map(|w| w[0].0 * w[1].1 - w[1].0 * w[0].1)
        .sum::<f64>()
        / 2.0
}

#[tokio::test]
async fn polygons_are_served_wound_as_rfc_7946_says() {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    // Exterior clockwise, hole counter-clockwise: the opposite of RFC 7946.
    let doc = json!({"type": "Feature", "id": "CW",
        "geometry": {"type": "Polygon", "coordinates": [
            [[106.0, 29.0], [106.0, 30.0], [107.0, 30.0], [107.0, 29.0], [106.0, 29.0]],
            [[106.2, 29.2], [106.4, 29.2], [106.4, 29.4], [106.2, 29.4], [106.2, 29.2]]
        ]},
        "properties": {"name": "clockwise"}});
    create(&app, "boundary", &doc);
    let (_, one) = get(&app, "/collections/boundary/items/CW").await;
    let (_, page) = get(&app, "/collections/boundary/items").await;
    for f in [&one, &page["features"][0]] {
        let rings = &f["geometry"]["coordinates"][0];
        assert!(
            signed_area(&rings[0]) > 0.0,
            "exterior counter-clockwise: {rings}"
        );
        assert!(signed_area(&rings[1]) < 0.0, "hole clockwise: {rings}");
    }
}

#[tokio::test]
async fn large_pages_are_gzipped_for_clients_that_accept_it() {
    use std::io::Read;
    let (_dir, app) = app_with_points(90);
    let uri = "/collections/risk_points/items?limit=90";
    let without_time = |mut v: Value| {
        v["timeStamp"] = Value::Null;
        v
    };
    let (status, h, plain) = http(&app, "GET", uri, &[("Host", HOST)], None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(h.get("content-encoding").is_none());
    assert!(plain.len() > 16 * 1024, "{} bytes", plain.len());
    let plain: Value = serde_json::from_slice(&plain).unwrap();
    for ae in ["gzip", "deflate, gzip;q=0.5", "br, *"] {
        let (status, h, body) = http(
            &app,
            "GET",
            uri,
            &[("Host", HOST), ("Accept-Encoding", ae)],
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h["content-encoding"], "gzip", "{ae}");
        assert_eq!(h["content-type"], "application/geo+json");
        assert!(h.get_all("vary").iter().any(|v| v == "accept-encoding"));
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut text)
            .unwrap();
        assert!(
            body.len() * 4 < text.len(),
            "{} of {}",
            body.len(),
            text.len()
        );
        let doc: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(without_time(doc), without_time(plain.clone()), "{ae}");
    }
    // Refused by weight, or a small page: not compressed.
    for (uri, ae) in [
        (uri, "gzip;q=0"),
        (uri, "identity"),
        ("/collections/risk_points/items?limit=2", "gzip"),
    ] {
        let (_, h, _) = http(
            &app,
            "GET",
            uri,
            &[("Host", HOST), ("Accept-Encoding", ae)],
            None,
        )
        .await;
        assert!(h.get("content-encoding").is_none(), "{uri} {ae}");
    }
}

/// Pages are written straight to bytes (`api/geojson_out.rs`), one feature by the
/// `serde_json` tree: both must say the same, member for member, for every property
/// type, nulls, text needing escapes, polygons to be re-wound, another CRS and a
/// property selection.
#[tokio::test]
async fn a_page_and_one_feature_say_the_same() {
    let (_dir, app) = app_with_points(0);
    let mut point = risk_point("Q\"1 é", 106.51, 29.52, "II");
    point["properties"]["name"] = "重庆 \"渝中\" \\ tab\t end".into();
    create(&app, "risk_points", &point);
    create(&app, "risk_points", &risk_point("Q2", 106.52, 29.53, "I"));
    create(
        &app,
        "pipelines",
        &json!({"type": "Feature", "id": "G1", "properties": {"kind": "gas", "diameter_mm": 300, "length_km": 1.25, "material": null},
                "geometry": {"type": "LineString", "coordinates": [[106.5, 29.5], [106.5000001, 29.61], [106.7, 29.6]]}}),
    );
    create(
        &app,
        "pipelines",
        &json!({"type": "Feature", "id": "G2", "properties": {"kind": "water_supply", "length_km": 0.1},
                "geometry": {"type": "LineString", "coordinates": [[106.55, 29.55], [106.56, 29.56]]}}),
    );
    // Clockwise exterior with a hole: both answers wind it as RFC 7946 says.
    create(
        &app,
        "boundary",
        &json!({"type": "Feature", "id": "B1", "properties": {"name": "区"},
                "geometry": {"type": "MultiPolygon", "coordinates": [[[[106.0, 29.0], [106.0, 30.0], [107.0, 30.0], [107.0, 29.0], [106.0, 29.0]],
                                                                     [[106.2, 29.2], [106.4, 29.2], [106.4, 29.4], [106.2, 29.4], [106.2, 29.2]]]]}}),
    );
    for (layer, query) in [
        ("risk_points", ""),
        ("risk_points", "&crs=EPSG:4326"),
        ("risk_points", "&properties=level,name"),
        ("pipelines", ""),
        ("pipelines", "&crs=EPSG:4547"),
        ("pipelines", "&properties=length_km"),
        ("pipelines", "&skipGeometry=true"),
        ("pipelines", "&skipGeometry=false"),
        ("boundary", ""),
        ("boundary", "&crs=EPSG:3857"),
    ] {
        let (status, page) =
            get(&app, &format!("/collections/{layer}/items?limit=10{query}")).await;
        assert_eq!(status, StatusCode::OK, "{layer}{query}: {page}");
        let features = page["features"].as_array().unwrap();
        assert!(!features.is_empty());
        for f in features {
            let id = f["id"].as_str().unwrap();
            let crs = query
                .strip_prefix("&crs=")
                .map(|c| format!("?crs={c}"))
                .unwrap_or_default();
            let (status, mut one) = get(
                &app,
                &format!("/collections/{layer}/items/{}{crs}", segment(id)),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{layer} {id}: {one}");
            if query.contains("skipGeometry=true") {
                one["geometry"] = Value::Null;
            }
            if let Some(list) = query.strip_prefix("&properties=") {
                let props = one["properties"].as_object().unwrap().clone();
                let kept: serde_json::Map<String, Value> = list
                    .split(',')
                    .map(|p| (p.to_string(), props[p].clone()))
                    .collect();
                one["properties"] = Value::Object(kept);
            }
            assert_eq!(f, &one, "{layer}{query} {id}");
        }
    }
    // The distance queries write theirs the same way, with distance_m.
    let (_, near) = get(
        &app,
        "/collections/risk_points/nearest?lon=106.5&lat=29.5&k=2",
    )
    .await;
    let f = &near["features"][0];
    let (_, mut one) = get(
        &app,
        &format!(
            "/collections/risk_points/items/{}",
            segment(f["id"].as_str().unwrap())
        ),
    )
    .await;
    one["properties"]["distance_m"] = f["properties"]["distance_m"].clone();
    assert!(f["properties"]["distance_m"].as_f64().unwrap() > 1000.0);
    // Without geometries, the same features in the same order.
    let (_, bare) = get(
        &app,
        "/collections/risk_points/nearest?lon=106.5&lat=29.5&k=2&skipGeometry=true",
    )
    .await;
    for (a, b) in near["features"]
        .as_array()
        .unwrap()
        .iter()
        .zip(bare["features"].as_array().unwrap())
    {
        let mut a = a.clone();
        a["geometry"] = Value::Null;
        assert_eq!(&a, b);
    }
    assert_eq!(bare["features"].as_array().unwrap().len(), 2);
    assert_eq!(f, &one);
}

/// An id as a path segment, percent-encoded.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
