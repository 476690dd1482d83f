//! OGC API – Features Part 3 on `items` through the router (issue 8): `filter` in CQL2
//! text and JSON, `filter-crs`, `property=value`, `sortby`, `properties` and the
//! queryables, each checked against a brute-force reading of the same seeded points
//! (distances by the same geodesic formula), with paging that neither skips nor repeats,
//! and every bad parameter a 400 naming it.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::*;
use rand::{Rng, SeedableRng};
use riskmap::app::App;
use riskmap::query::geodesic::point_distance_m;
use serde_json::{Value, json};

const LEVELS: [&str; 4] = ["I", "II", "III", "IV"];
const CENTRE: (f64, f64) = (106.55, 29.56);

struct Point {
    id: String,
    lon: f64,
    lat: f64,
    level: &'static str,
    name: String,
}

/// 400 risk points within about 5 km of the centre, some exactly 1,500 m from it.
fn seeded() -> (tempfile::TempDir, Arc<App>, Vec<Point>) {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let mut points = Vec::new();
    for i in 0..400 {
        let (lon, lat) = if i % 25 == 0 {
            // On the 1,500 m circle (Karney's direct solution): S_DWITHIN includes it.
            let g = geographiclib_rs::Geodesic::wgs84();
            let azi: f64 = rng.random_range(0.0..360.0);
            let (lat, lon): (f64, f64) =
                geographiclib_rs::DirectGeodesic::direct(&g, CENTRE.1, CENTRE.0, azi, 1500.0);
            (lon, lat)
        } else {
            (
                CENTRE.0 + rng.random_range(-0.05..0.05),
                CENTRE.1 + rng.random_range(-0.05..0.05),
            )
        };
        let level = LEVELS[rng.random_range(0..4)];
        let id = format!("R{i:03}");
        let mut doc = risk_point(&id, lon, lat, level);
        let name = format!("point {} {}", ["north", "south", "Yuzhong"][i % 3], i);
        doc["properties"]["name"] = json!(name);
        create(&app, "risk_points", &doc);
        // What was stored (7 decimals), for the oracle.
        let state = app.layer("risk_points").unwrap();
        let stored = &state.index.read();
        let f = stored.get(&id).unwrap().feature;
        let geo_types::Geometry::Point(p) = f.geometry else {
            panic!()
        };
        points.push(Point {
            id,
            lon: p.x(),
            lat: p.y(),
            level,
            name,
        });
    }
    (dir, app, points)
}

async fn get(app: &Arc<App>, uri: &str) -> (StatusCode, Value) {
    let (status, _, body) = http(app, "GET", uri, &[], None).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `k=v&k=v` with keys and values percent-encoded.
fn encoded(query: &str) -> String {
    query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Every feature of the query, following `next` links (absolute: on the default host).
async fn all_pages(app: &Arc<App>, first: &str) -> (Vec<Value>, usize) {
    let (status, mut page) = get(app, first).await;
    assert_eq!(status, StatusCode::OK, "{first}: {page}");
    let matched = page["numberMatched"].as_u64().unwrap() as usize;
    let mut out = Vec::new();
    loop {
        out.extend(page["features"].as_array().unwrap().iter().cloned());
        let next = page["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rel"] == "next")
            .map(|l| l["href"].as_str().unwrap().to_string());
        let Some(next) = next else { break };
        let local = next
            .strip_prefix("http://localhost:8080")
            .unwrap()
            .to_string();
        let (status, p) = get(app, &local).await;
        assert_eq!(status, StatusCode::OK, "{local}");
        page = p;
        assert!(out.len() <= matched, "pages repeat");
    }
    (out, matched)
}

fn ids(features: &[Value]) -> Vec<String> {
    features
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn filters_match_a_brute_force_reading_across_pages() {
    let (_dir, app, points) = seeded();
    let near = |p: &Point, m: f64| {
        point_distance_m(
            geo_types::coord! {x: CENTRE.0, y: CENTRE.1},
            geo_types::coord! {x: p.lon, y: p.lat},
        ) <= m
    };
    type Pred = Box<dyn Fn(&Point) -> bool>;
    let cases: Vec<(String, Pred)> = vec![
        ("filter=level = 'II'".into(), Box::new(|p: &Point| p.level == "II")),
        (
            "filter=level IN ('I','II') AND name LIKE 'point north%'".into(),
            Box::new(|p: &Point| (p.level == "I" || p.level == "II") && p.name.starts_with("point north")),
        ),
        (
            "filter=NOT (level = 'IV') OR name LIKE '%7'".into(),
            Box::new(|p: &Point| p.level != "IV" || p.name.ends_with('7')),
        ),
        (
            format!("filter=S_DWITHIN(geometry, POINT({} {}), 1500)", CENTRE.0, CENTRE.1),
            Box::new(move |p: &Point| near(p, 1500.0)),
        ),
        (
            format!(
                "filter=S_DWITHIN(geometry, POINT({} {}), 1500) AND level = 'III'",
                CENTRE.0, CENTRE.1
            ),
            Box::new(move |p: &Point| near(p, 1500.0) && p.level == "III"),
        ),
        (
            "filter=S_INTERSECTS(geometry, POLYGON((106.5 29.5, 106.6 29.5, 106.6 29.6, 106.5 29.6, 106.5 29.5)))".into(),
            Box::new(|p: &Point| (106.5..=106.6).contains(&p.lon) && (29.5..=29.6).contains(&p.lat)),
        ),
        // The same in CQL2 JSON.
        (
            format!(
                "filter-lang=cql2-json&filter={}",
                json!({"op": "s_dwithin", "args": [{"property": "geometry"}, {"type": "Point", "coordinates": [CENTRE.0, CENTRE.1]}, 1500]})
            ),
            Box::new(move |p: &Point| near(p, 1500.0)),
        ),
        // EPSG:4326 literals are latitude first.
        (
            format!(
                "filter-crs=http://www.opengis.net/def/crs/EPSG/0/4326&filter=S_DWITHIN(geometry, POINT({} {}), 1500)",
                CENTRE.1, CENTRE.0
            ),
            Box::new(move |p: &Point| near(p, 1500.0)),
        ),
        ("level=IV".into(), Box::new(|p: &Point| p.level == "IV")),
        (
            "level=IV&filter=name LIKE '%south%'".into(),
            Box::new(|p: &Point| p.level == "IV" && p.name.contains("south")),
        ),
    ];
    let mut some_on_circle = 0;
    for (query, pred) in &cases {
        let uri = format!("/collections/risk_points/items?limit=7&{}", encoded(query));
        let (features, matched) = all_pages(&app, &uri).await;
        let want: Vec<String> = points
            .iter()
            .filter(|p| pred(p))
            .map(|p| p.id.clone())
            .collect();
        assert!(
            !want.is_empty() && want.len() < points.len(),
            "{query}: not a split"
        );
        assert_eq!(matched, want.len(), "{query}: numberMatched");
        assert_eq!(ids(&features), want, "{query}");
        some_on_circle += want
            .iter()
            .filter(|id| id[1..].parse::<usize>().unwrap() % 25 == 0)
            .count();
    }
    assert!(
        some_on_circle > 0,
        "features exactly at the distance were tested"
    );

    // sortby: by level descending, then name; pages of 9 add up to the brute-force order.
    let (features, _) = all_pages(
        &app,
        "/collections/risk_points/items?limit=9&sortby=-level,%2Bname&properties=level,name",
    )
    .await;
    let mut want: Vec<&Point> = points.iter().collect();
    want.sort_by(|a, b| {
        b.level
            .cmp(a.level)
            .then(a.name.cmp(&b.name))
            .then(a.id.cmp(&b.id))
    });
    assert_eq!(
        ids(&features),
        want.iter().map(|p| p.id.clone()).collect::<Vec<_>>()
    );
    // properties: only those asked, in that order.
    let keys: Vec<&String> = features[0]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["level", "name"]);
}

#[tokio::test]
async fn queryables_are_listed_and_linked() {
    let (_dir, app, _) = seeded();
    let (status, q) = get(&app, "/collections/risk_points/queryables").await;
    assert_eq!(status, StatusCode::OK);
    for name in ["id", "name", "level", "geometry"] {
        assert!(q["properties"].get(name).is_some(), "{name}: {q}");
    }
    let (_, c) = get(&app, "/collections/risk_points").await;
    let link = c["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "http://www.opengis.net/def/rel/ogc/1.0/queryables")
        .unwrap();
    assert_eq!(
        link["href"],
        "http://localhost:8080/collections/risk_points/queryables"
    );
    let (status, _) = get(&app, "/collections/nope/queryables").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_bad_filter_parameter_is_a_400_naming_it() {
    let (_dir, app, _) = seeded();
    for (query, names) in [
        ("filter=level = ", "filter"),
        ("filter=level === 'I'", "column"),
        ("filter=height > 3", "height"),
        ("filter=level > 3", "level"),
        (
            "filter=S_DWITHIN(geometry, POINT(106.5 29.5), 1e9)",
            "filter",
        ),
        ("filter-lang=xml&filter=level = 'I'", "filter-lang"),
        ("filter-crs=EPSG:9999&filter=level = 'I'", "filter-crs"),
        ("filter-lang=cql2-json&filter={\"op\": \"=\"}", "filter"),
        ("sortby=height", "sortby"),
        ("properties=height", "properties"),
        ("skipGeometry=yes", "skipGeometry"),
        ("height=3", "height"),
        ("level=I&bbox=1,2", "bbox"),
    ] {
        let uri = format!("/collections/risk_points/items?{}", encoded(query));
        let (status, e) = get(&app, &uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {e}");
        assert!(
            e["description"].as_str().unwrap().contains(names),
            "{query}: {e}"
        );
    }
}
