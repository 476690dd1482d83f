//! OGC API – Features Part 2 (issue 8) through the router: each collection's `crs` and
//! `storageCrs`, `crs` on items and on one item (axis order, `Content-Crs`, a weak ETag),
//! and `bbox-crs`, against two oracles independent of riskmap's PROJ calls: the
//! Pseudo-Mercator formulas, and PROJ's own `cs2cs` (Debian's proj-bin) for the
//! Gauss–Krüger zone.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use axum::http::StatusCode;
use common::*;
use serde_json::Value;

const CRS84: &str = "http://www.opengis.net/def/crs/OGC/1.3/CRS84";
const EPSG: &str = "http://www.opengis.net/def/crs/EPSG/0/";
/// WGS 84's semi-major axis: Pseudo-Mercator's sphere.
const R: f64 = 6_378_137.0;

/// 121 risk points on a grid over central Chongqing, 0.02° apart.
fn app_with_grid() -> (
    tempfile::TempDir,
    std::sync::Arc<riskmap::app::App>,
    Vec<(String, f64, f64)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    let mut points = Vec::new();
    for i in 0..11 {
        for j in 0..11 {
            let (id, lon, lat) = (
                format!("G{i:02}{j:02}"),
                106.4 + i as f64 * 0.02,
                29.4 + j as f64 * 0.02,
            );
            create(&app, "risk_points", &risk_point(&id, lon, lat, "III"));
            points.push((id, lon, lat));
        }
    }
    (dir, app, points)
}

async fn get(
    app: &std::sync::Arc<riskmap::app::App>,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let (status, h, body) = http(app, "GET", uri, headers, None).await;
    (
        status,
        h,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

fn ids(doc: &Value) -> BTreeSet<String> {
    doc["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

/// `cs2cs from to` over points given in `from`'s axis order; answers in `to`'s.
fn cs2cs(from: &str, to: &str, points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut child = Command::new("cs2cs")
        .args(["-f", "%.12f", from, to])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cs2cs is installed (apt-get install proj-bin; scripts/test.sh does)");
    let input: String = points
        .iter()
        .map(|(a, b)| format!("{a:.15} {b:.15}\n"))
        .collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let n: Vec<f64> = l
                .split_whitespace()
                .take(2)
                .map(|t| t.parse().unwrap())
                .collect();
            (n[0], n[1])
        })
        .collect()
}

#[tokio::test]
async fn collections_list_their_crss_and_items_come_in_the_one_asked_for() {
    let (_dir, app, points) = app_with_grid();
    let (_, _, c) = get(&app, "/collections/risk_points", &[]).await;
    assert_eq!(c["storageCrs"], CRS84);
    let crs: Vec<&str> = c["crs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for code in [
        "4326", "3857", "4490", "4523", "4524", "4525", "4544", "4545", "4546", "4547",
    ] {
        assert!(
            crs.contains(&format!("{EPSG}{code}").as_str()),
            "{code} in {crs:?}"
        );
    }
    assert_eq!(crs[0], CRS84);

    // CRS84 by default, named by Content-Crs.
    let (status, h, doc) = get(&app, "/collections/risk_points/items?limit=200", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["content-crs"], format!("<{CRS84}>"));
    let by_id = |doc: &Value| -> Vec<(String, f64, f64)> {
        doc["features"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let c = &f["geometry"]["coordinates"];
                (
                    f["id"].as_str().unwrap().to_string(),
                    c[0].as_f64().unwrap(),
                    c[1].as_f64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(by_id(&doc).len(), points.len());

    // EPSG:4326: latitude first.
    let (_, h, doc) = get(
        &app,
        "/collections/risk_points/items?limit=200&crs=EPSG:4326",
        &[],
    )
    .await;
    assert_eq!(h["content-crs"], format!("<{EPSG}4326>"));
    for ((id, a, b), (id0, lon, lat)) in by_id(&doc).into_iter().zip(&points) {
        assert_eq!(&id, id0);
        assert!(
            (a - lat).abs() < 1e-9 && (b - lon).abs() < 1e-9,
            "{id}: {a} {b}"
        );
    }

    // EPSG:3857, against the Pseudo-Mercator formulas (millimetres: 3 decimals).
    let uri = format!(
        "/collections/risk_points/items?limit=200&crs={}",
        "http%3A%2F%2Fwww.opengis.net%2Fdef%2Fcrs%2FEPSG%2F0%2F3857"
    );
    let (_, h, doc) = get(&app, &uri, &[]).await;
    assert_eq!(h["content-crs"], format!("<{EPSG}3857>"));
    for ((id, x, y), (_, lon, lat)) in by_id(&doc).into_iter().zip(&points) {
        let ex = R * lon.to_radians();
        let ey = R
            * (std::f64::consts::FRAC_PI_4 + lat.to_radians() / 2.0)
                .tan()
                .ln();
        assert!(
            (x - ex).abs() < 2e-3 && (y - ey).abs() < 2e-3,
            "{id}: ({x}, {y}) against ({ex}, {ey})"
        );
    }

    // The Gauss–Krüger zones, against cs2cs to the millimetre: northing first. EPSG:4545
    // (CM 108° E), 4547 (CM 114° E, 6–8° off it here) and 4524 (zone 36, CM 108° E, the
    // zone number before the easting).
    let latlon: Vec<(f64, f64)> = points.iter().map(|(_, lon, lat)| (*lat, *lon)).collect();
    for code in ["4545", "4547", "4524"] {
        let (_, h, doc) = get(
            &app,
            &format!("/collections/risk_points/items?limit=200&crs=EPSG:{code}"),
            &[],
        )
        .await;
        assert_eq!(h["content-crs"], format!("<{EPSG}{code}>"));
        let expected = cs2cs("EPSG:4490", &format!("EPSG:{code}"), &latlon);
        assert_eq!(expected.len(), points.len());
        for ((id, n, e), (en, ee)) in by_id(&doc).into_iter().zip(expected) {
            assert!(
                n > 3_000_000.0 && n < 3_500_000.0,
                "{code} {id}: northing first ({n}, {e})"
            );
            assert!(
                (n - en).abs() <= 1e-3 && (e - ee).abs() <= 1e-3,
                "{code} {id}: ({n}, {e}) against cs2cs ({en}, {ee})"
            );
        }
    }

    // An unsupported CRS is refused, naming the parameter.
    let (status, _, e) = get(&app, "/collections/risk_points/items?crs=EPSG:2000", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        e["description"].as_str().unwrap().starts_with("crs:"),
        "{e}"
    );
}

#[tokio::test]
async fn a_bbox_in_another_crs_selects_what_lies_in_it() {
    let (_dir, app, points) = app_with_grid();
    // A box in Pseudo-Mercator metres; which points lie in it, by the formulas.
    let (x0, y0, x1, y1) = (11_850_000.0, 3_430_000.0, 11_870_000.0, 3_445_000.0);
    let expected: BTreeSet<String> = points
        .iter()
        .filter(|(_, lon, lat)| {
            let x = R * lon.to_radians();
            let y = R
                * (std::f64::consts::FRAC_PI_4 + lat.to_radians() / 2.0)
                    .tan()
                    .ln();
            (x0..=x1).contains(&x) && (y0..=y1).contains(&y)
        })
        .map(|(id, _, _)| id.clone())
        .collect();
    assert!(
        expected.len() > 10 && expected.len() < points.len(),
        "{}",
        expected.len()
    );
    let uri = format!(
        "/collections/risk_points/items?limit=200&bbox={x0},{y0},{x1},{y1}&bbox-crs=EPSG:3857"
    );
    let (status, _, doc) = get(&app, &uri, &[]).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(ids(&doc), expected);
    assert_eq!(doc["numberMatched"], expected.len());
    // The same as its WGS84 equivalent: a Pseudo-Mercator box is a lon/lat box.
    let lon = |x: f64| (x / R).to_degrees();
    let lat = |y: f64| (2.0 * (y / R).exp().atan() - std::f64::consts::FRAC_PI_2).to_degrees();
    let wgs84 = format!(
        "/collections/risk_points/items?limit=200&bbox={},{},{},{}",
        lon(x0),
        lat(y0),
        lon(x1),
        lat(y1)
    );
    let (_, _, same) = get(&app, &wgs84, &[]).await;
    assert_eq!(ids(&same), expected);
    // The next link keeps bbox-crs.
    let (_, _, page) = get(
        &app,
        &format!("{uri}&limit=5").replace("limit=200&", ""),
        &[],
    )
    .await;
    let next = page["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "next")
        .unwrap();
    assert!(
        next["href"]
            .as_str()
            .unwrap()
            .contains("bbox-crs=EPSG:3857"),
        "{next}"
    );

    // A box in EPSG:4545 (CGCS2000 Gauss–Krüger, CM 108° E; northing, easting), against cs2cs.
    let (n0, e0, n1, e1) = (3_258_000.0, 348_000.0, 3_272_000.0, 360_000.0);
    let latlon: Vec<(f64, f64)> = points.iter().map(|(_, lon, lat)| (*lat, *lon)).collect();
    let ne = cs2cs("EPSG:4490", "EPSG:4545", &latlon);
    let expected: BTreeSet<String> = points
        .iter()
        .zip(ne)
        .filter(|(_, (n, e))| (n0..=n1).contains(n) && (e0..=e1).contains(e))
        .map(|((id, _, _), _)| id.clone())
        .collect();
    assert!(
        expected.len() > 10 && expected.len() < points.len(),
        "{}",
        expected.len()
    );
    let uri = format!(
        "/collections/risk_points/items?limit=200&bbox={n0},{e0},{n1},{e1}&bbox-crs=EPSG:4545"
    );
    let (status, _, doc) = get(&app, &uri, &[]).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(ids(&doc), expected);

    // A box whose minimum exceeds its maximum is refused, naming bbox.
    let (status, _, e) = get(
        &app,
        "/collections/risk_points/items?bbox=3272000,348000,3258000,360000&bbox-crs=EPSG:4545",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        e["description"].as_str().unwrap().starts_with("bbox:"),
        "{e}"
    );
    let (status, _, e) = get(
        &app,
        "/collections/risk_points/items?bbox=1,2,3&bbox-crs=EPSG:3857",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        e["description"].as_str().unwrap().starts_with("bbox:"),
        "{e}"
    );
}

#[tokio::test]
async fn one_feature_in_another_crs_is_another_representation_of_the_same_version() {
    let (_dir, app, _) = app_with_grid();
    let (status, h, f) = get(&app, "/collections/risk_points/items/G0505", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["content-crs"], format!("<{CRS84}>"));
    let strong = h["etag"].to_str().unwrap().to_string();
    assert!(!strong.starts_with("W/"));
    assert_eq!(f["geometry"]["coordinates"][0].as_f64(), Some(106.5));

    let (status, h, f) = get(
        &app,
        "/collections/risk_points/items/G0505?crs=EPSG:4326",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["content-crs"], format!("<{EPSG}4326>"));
    assert_eq!(f["geometry"]["coordinates"][0].as_f64(), Some(29.5));
    let weak = h["etag"].to_str().unwrap().to_string();
    assert_eq!(weak, format!("W/{strong}"));
    // The weak tag revalidates the representation...
    let (status, _, _) = get(
        &app,
        "/collections/risk_points/items/G0505?crs=EPSG:4326",
        &[("If-None-Match", &weak)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    // ...but never guards an edit (If-Match compares strongly); the strong one does.
    let key = app
        .store()
        .add_key("test", riskmap::model::Role::Planner, "planner")
        .unwrap()
        .secret;
    let auth = format!("Bearer {key}");
    let patch = r#"{"properties": {"level": "II"}}"#.to_string();
    for (tag, expected) in [
        (&weak, StatusCode::PRECONDITION_FAILED),
        (&strong, StatusCode::OK),
    ] {
        let (status, _, body) = http(
            &app,
            "PATCH",
            "/collections/risk_points/items/G0505",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/merge-patch+json"),
                ("If-Match", tag),
            ],
            Some(patch.clone()),
        )
        .await;
        assert_eq!(
            status,
            expected,
            "If-Match {tag}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // A parameter items has and one feature has not is refused, naming it.
    let (status, _, e) = get(&app, "/collections/risk_points/items/G0505?limit=3", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["description"].as_str().unwrap().starts_with("limit:"),
        "{e}"
    );
}
