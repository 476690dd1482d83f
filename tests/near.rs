//! `within` and `nearest` (issue 8) through the router, against a brute-force scan with
//! the same geodesic formula (`query::geodesic::distance_to_geometry_m`) on seeded random
//! points and lines: features exactly at the radius, lines that pass near with both ends
//! far, filters, paging that neither skips nor repeats, and every bad parameter a 400
//! naming it.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use axum::http::StatusCode;
use common::*;
use geo_types::{Coord, Geometry, LineString, Point};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use riskmap::query::geodesic::distance_to_geometry_m;
use serde_json::{Value, json};

const LEVELS: [&str; 4] = ["I", "II", "III", "IV"];

struct World {
    _dir: tempfile::TempDir,
    app: std::sync::Arc<riskmap::app::App>,
    /// id, geometry, level (points) or kind (lines)
    points: Vec<(String, Geometry, &'static str)>,
    lines: Vec<(String, Geometry)>,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut points = Vec::new();
    for i in 0..400 {
        let (mut lon, mut lat) = (
            106.5 + rng.random_range(-0.05..0.05),
            29.5 + rng.random_range(-0.05..0.05),
        );
        // Every tenth point on top of the one before: ties, ordered by fid.
        if let (9, Some((_, Geometry::Point(p), _))) = (i % 10, points.last()) {
            (lon, lat) = (p.x(), p.y());
        }
        let level = LEVELS[rng.random_range(0..4)];
        let id = format!("P{i:03}");
        create(&app, "risk_points", &risk_point(&id, lon, lat, level));
        points.push((id, Geometry::Point(Point::new(lon, lat)), level));
    }
    let mut lines = Vec::new();
    for i in 0..60 {
        // Long lines across the area: most pass near the centres with both ends far.
        let n = rng.random_range(2..6);
        let coords: Vec<Coord> = (0..n)
            .map(|_| Coord {
                x: 106.5 + rng.random_range(-0.2..0.2),
                y: 29.5 + rng.random_range(-0.2..0.2),
            })
            .collect();
        let id = format!("L{i:02}");
        let c: Vec<[f64; 2]> = coords.iter().map(|c| [c.x, c.y]).collect();
        create(
            &app,
            "pipelines",
            &json!({"type": "Feature", "id": id, "geometry": {"type": "LineString", "coordinates": c},
                    "properties": {"kind": "gas"}}),
        );
        lines.push((id, Geometry::LineString(LineString::from(coords))));
    }
    World {
        _dir: dir,
        app,
        points,
        lines,
    }
}

async fn get(app: &std::sync::Arc<riskmap::app::App>, uri: &str) -> (StatusCode, Value) {
    let (status, _, body) = http(app, "GET", uri, &[], None).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// (id, distance) of each feature of a page, in order.
fn hits(doc: &Value) -> Vec<(String, f64)> {
    doc["features"]
        .as_array()
        .unwrap_or_else(|| panic!("{doc}"))
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_string(),
                f["properties"]["distance_m"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Brute force: every feature within `r` of `c`, nearest first, ties by insertion order
/// (which is fid order here).
fn brute(features: &[(String, Geometry)], c: Coord, r: f64) -> Vec<(String, f64)> {
    let mut v: Vec<(usize, String, f64)> = features
        .iter()
        .enumerate()
        .map(|(i, (id, g))| (i, id.clone(), distance_to_geometry_m(c, g)))
        .filter(|(_, _, d)| *d <= r)
        .collect();
    v.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
    v.into_iter().map(|(_, id, d)| (id, d)).collect()
}

fn same(got: &[(String, f64)], want: &[(String, f64)], what: &str) {
    assert_eq!(
        got.iter().map(|h| &h.0).collect::<Vec<_>>(),
        want.iter().map(|h| &h.0).collect::<Vec<_>>(),
        "{what}"
    );
    for ((id, g), (_, w)) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 0.0005 + 1e-9,
            "{what}: {id} at {g} m, brute force {w} m"
        );
    }
}

#[tokio::test]
async fn within_and_nearest_equal_a_brute_force_scan() {
    let w = world();
    let points: Vec<(String, Geometry)> = w
        .points
        .iter()
        .map(|(i, g, _)| (i.clone(), g.clone()))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(80);
    let mut found = [0usize; 2];
    for round in 0..12 {
        let c = Coord {
            x: 106.5 + rng.random_range(-0.05..0.05),
            y: 29.5 + rng.random_range(-0.05..0.05),
        };
        let r = rng.random_range(200.0..3000.0);
        for (n, (layer, features)) in [("risk_points", &points), ("pipelines", &w.lines)]
            .into_iter()
            .enumerate()
        {
            let want = brute(features, c, r);
            found[n] += want.len();
            let uri = format!(
                "/collections/{layer}/within?lon={}&lat={}&radius_m={r}&limit=10000",
                c.x, c.y
            );
            let (status, doc) = get(&w.app, &uri).await;
            assert_eq!(status, StatusCode::OK, "{doc}");
            same(
                &hits(&doc),
                &want,
                &format!("round {round} {layer} within {r}"),
            );
            assert_eq!(doc["numberMatched"], want.len());

            // Exactly at the radius: the farthest hit's own distance keeps it in.
            if let Some((id, d)) = want.last() {
                let exact =
                    distance_to_geometry_m(c, &features.iter().find(|f| &f.0 == id).unwrap().1);
                assert_eq!(*d, exact);
                let uri = format!(
                    "/collections/{layer}/within?lon={}&lat={}&radius_m={exact:?}&limit=10000",
                    c.x, c.y
                );
                let (_, doc) = get(&w.app, &uri).await;
                assert_eq!(
                    hits(&doc).last().map(|h| &h.0),
                    Some(id),
                    "round {round} {layer} at the radius"
                );
            }

            // Pages of 7: together, the whole list once.
            let mut paged = Vec::new();
            let mut next = Some(format!(
                "/collections/{layer}/within?lon={}&lat={}&radius_m={r}&limit=7",
                c.x, c.y
            ));
            while let Some(uri) = next {
                let (_, doc) = get(&w.app, &uri).await;
                paged.extend(hits(&doc));
                next = doc["links"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|l| l["rel"] == "next")
                    .map(|l| {
                        l["href"]
                            .as_str()
                            .unwrap()
                            .strip_prefix("http://localhost:8080")
                            .unwrap()
                            .to_string()
                    });
            }
            same(&paged, &want, &format!("round {round} {layer} paged"));

            // The k nearest.
            let k = rng.random_range(1..40);
            let want = brute(features, c, f64::INFINITY);
            let uri = format!("/collections/{layer}/nearest?lon={}&lat={}&k={k}", c.x, c.y);
            let (status, doc) = get(&w.app, &uri).await;
            assert_eq!(status, StatusCode::OK, "{doc}");
            same(
                &hits(&doc),
                &want[..k.min(want.len())],
                &format!("round {round} {layer} nearest {k}"),
            );
        }

        // With a filter: the brute force over the level-I points.
        let level_i: Vec<(String, Geometry)> = w
            .points
            .iter()
            .filter(|p| p.2 == "I")
            .map(|(i, g, _)| (i.clone(), g.clone()))
            .collect();
        let want = brute(&level_i, c, r);
        let uri = format!(
            "/collections/risk_points/within?lon={}&lat={}&radius_m={r}&limit=10000&filter=level%3D%27I%27",
            c.x, c.y
        );
        let (_, doc) = get(&w.app, &uri).await;
        same(&hits(&doc), &want, &format!("round {round} filtered"));
        let uri = format!(
            "/collections/risk_points/nearest?lon={}&lat={}&k=5&level=I&properties=name",
            c.x, c.y
        );
        let (_, doc) = get(&w.app, &uri).await;
        same(
            &hits(&doc),
            &brute(&level_i, c, f64::INFINITY)[..5],
            &format!("round {round} nearest level I"),
        );
        let props = doc["features"][0]["properties"].as_object().unwrap();
        assert!(
            props.contains_key("name")
                && props.contains_key("distance_m")
                && !props.contains_key("level")
        );
    }
    // The rounds found something to compare: points and lines within their radii.
    assert!(found[0] > 200 && found[1] > 50, "{found:?}");
}

#[tokio::test]
async fn bad_parameters_are_refused_naming_them() {
    let w = world();
    let base = "/collections/risk_points";
    for (uri, param) in [
        (
            format!("{base}/within?lon=106.5&lat=29.5&radius_m=0"),
            "radius_m",
        ),
        (
            format!("{base}/within?lon=106.5&lat=29.5&radius_m=-5"),
            "radius_m",
        ),
        (
            format!("{base}/within?lon=106.5&lat=29.5&radius_m=50001"),
            "radius_m",
        ),
        (
            format!("{base}/within?lon=106.5&lat=29.5&radius_m=NaN"),
            "radius_m",
        ),
        (
            format!("{base}/within?lon=106.5&lat=29.5&radius_m=abc"),
            "radius_m",
        ),
        (format!("{base}/within?lon=106.5&lat=29.5"), "radius_m"),
        (format!("{base}/within?lat=29.5&radius_m=10"), "lon"),
        (
            format!("{base}/within?lon=200&lat=29.5&radius_m=10"),
            "lon/lat",
        ),
        (
            format!("{base}/within?lon=106.5&lat=29.5&radius_m=10&limit=10001"),
            "limit",
        ),
        (
            format!("{base}/within?lon=106.5&lat=29.5&radius_m=10&sortby=name"),
            "sortby",
        ),
        (
            format!("{base}/within?lon=106.5&lat=29.5&radius_m=10&bbox=1,2,3,4"),
            "bbox",
        ),
        (
            format!("{base}/within?lon=106.5&lat=29.5&radius_m=10&filter=nope%3D1"),
            "filter",
        ),
        (
            format!("{base}/within?lon=106.5&lat=29.5&radius_m=10&colour=red"),
            "colour",
        ),
        (
            format!("{base}/within?lon=106.5&lat=29.5&radius_m=10&crs=EPSG:1"),
            "crs",
        ),
        (format!("{base}/nearest?lon=106.5&lat=29.5&k=0"), "k"),
        (format!("{base}/nearest?lon=106.5&lat=29.5&k=1001"), "k"),
        (format!("{base}/nearest?lon=106.5&lat=29.5"), "k"),
        (
            format!("{base}/nearest?lon=106.5&lat=29.5&k=3&limit=3"),
            "limit",
        ),
        (
            format!("{base}/nearest?lon=106.5&lat=29.5&k=3&lat=1"),
            "lat",
        ),
    ] {
        let (status, e) = get(&w.app, &uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {e}");
        let d = e["description"].as_str().unwrap();
        assert!(d.contains(param), "{uri}: {d}");
    }
    let (status, _) = get(
        &w.app,
        "/collections/nope/within?lon=106.5&lat=29.5&radius_m=10",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The largest page and radius are capped: 400 at the cap is work bounded by it.
    let (status, doc) = get(
        &w.app,
        &format!("{base}/within?lon=106.5&lat=29.5&radius_m=50000&limit=10000"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["numberReturned"], 400);
    let (status, doc) = get(
        &w.app,
        &format!("{base}/nearest?lon=106.5&lat=29.5&k=1000&crs=EPSG:4326"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["numberReturned"], 400);
    // In EPSG:4326 the geometry is latitude first; the distance is the same.
    let g = &doc["features"][0]["geometry"]["coordinates"];
    assert!(
        g[0].as_f64().unwrap() < 30.0 && g[1].as_f64().unwrap() > 100.0,
        "{g}"
    );
}

/// Brute force around a geometry: every feature within `d` of `g`, nearest first.
fn brute_around(features: &[(String, Geometry)], g: &Geometry, d: f64) -> Vec<(String, f64)> {
    let mut v: Vec<(usize, String, f64)> = features
        .iter()
        .enumerate()
        .map(|(i, (id, f))| {
            (
                i,
                id.clone(),
                riskmap::query::geodesic::distance_between_m(g, f),
            )
        })
        .filter(|(_, _, x)| *x <= d)
        .collect();
    v.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
    v.into_iter().map(|(_, id, x)| (id, x)).collect()
}

async fn post_geometry(
    app: &std::sync::Arc<riskmap::app::App>,
    uri: &str,
    content_type: &str,
    body: String,
) -> (StatusCode, Value) {
    let (status, _, body) = http(
        app,
        "POST",
        uri,
        &[("Content-Type", content_type)],
        Some(body),
    )
    .await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn intersects_and_corridor_equal_a_brute_force_scan() {
    let w = world();
    let points: Vec<(String, Geometry)> = w
        .points
        .iter()
        .map(|(i, g, _)| (i.clone(), g.clone()))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(81);
    let mut found = 0;
    for round in 0..10 {
        // A quadrilateral of a few km, sometimes with a buffer; and a line.
        let (cx, cy) = (
            106.5 + rng.random_range(-0.04..0.04),
            29.5 + rng.random_range(-0.04..0.04),
        );
        let s = rng.random_range(0.005..0.02);
        let ring = vec![
            [cx - s, cy - s],
            [cx + s, cy - s * 0.5],
            [cx + s * 0.7, cy + s],
            [cx - s * 0.8, cy + s * 0.6],
            [cx - s, cy - s],
        ];
        let polygon = Geometry::Polygon(geo_types::Polygon::new(
            LineString::from(ring.iter().map(|c| (c[0], c[1])).collect::<Vec<_>>()),
            vec![],
        ));
        let buffer = if round % 2 == 0 {
            0.0
        } else {
            rng.random_range(10.0..800.0)
        };
        let body = json!({"type": "Polygon", "coordinates": [ring]}).to_string();
        for (layer, features) in [("risk_points", &points), ("pipelines", &w.lines)] {
            let want = brute_around(features, &polygon, buffer);
            found += want.len();
            let uri = format!("/collections/{layer}/intersects?buffer_m={buffer}&limit=10000");
            let (status, doc) =
                post_geometry(&w.app, &uri, "application/geo+json", body.clone()).await;
            assert_eq!(status, StatusCode::OK, "{doc}");
            same(
                &hits(&doc),
                &want,
                &format!("round {round} {layer} intersects, buffer {buffer}"),
            );
        }
        // The corridor along a pipeline, over the risk points.
        let (id, line) = &w.lines[round];
        let d = rng.random_range(50.0..1500.0);
        let want = brute_around(&points, line, d);
        found += want.len();
        let uri = format!(
            "/collections/risk_points/corridor?along=pipelines/{id}&distance_m={d}&limit=10000"
        );
        let (status, doc) = get(&w.app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{doc}");
        same(
            &hits(&doc),
            &want,
            &format!("round {round} corridor along {id}, {d} m"),
        );
        // A Feature body is read for its geometry; a filter applies too.
        let feature = json!({"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}).to_string();
        let level_i: Vec<(String, Geometry)> = w
            .points
            .iter()
            .filter(|p| p.2 == "I")
            .map(|(i, g, _)| (i.clone(), g.clone()))
            .collect();
        let (_, doc) = post_geometry(
            &w.app,
            &format!("/collections/risk_points/intersects?buffer_m={buffer}&limit=10000&level=I"),
            "application/json",
            feature,
        )
        .await;
        same(
            &hits(&doc),
            &brute_around(&level_i, &polygon, buffer),
            &format!("round {round} filtered"),
        );
    }
    assert!(found > 100, "{found}");

    // Bad input, each named.
    let many: Vec<[f64; 2]> = (0..10_001)
        .map(|i| [106.0 + i as f64 * 1e-5, 29.5])
        .collect();
    for (uri, ct, body, status, what) in [
        (
            "/collections/risk_points/intersects",
            "application/geo+json",
            r#"{"type": "GeometryCollection", "geometries": []}"#.to_string(),
            400,
            "body",
        ),
        (
            "/collections/risk_points/intersects",
            "application/geo+json",
            json!({"type": "LineString", "coordinates": many}).to_string(),
            400,
            "10001 positions",
        ),
        (
            "/collections/risk_points/intersects",
            "application/geo+json",
            r#"{"type": "Point", "coordinates": [200, 29.5]}"#.to_string(),
            400,
            "body",
        ),
        (
            "/collections/risk_points/intersects",
            "application/geo+json",
            "{".to_string(),
            400,
            "malformed JSON",
        ),
        (
            "/collections/risk_points/intersects",
            "text/plain",
            r#"{"type": "Point", "coordinates": [106.5, 29.5]}"#.to_string(),
            415,
            "Content-Type",
        ),
        (
            "/collections/risk_points/intersects?buffer_m=60000",
            "application/geo+json",
            r#"{"type": "Point", "coordinates": [106.5, 29.5]}"#.to_string(),
            400,
            "buffer_m",
        ),
        (
            "/collections/risk_points/intersects?buffer_m=-1",
            "application/geo+json",
            r#"{"type": "Point", "coordinates": [106.5, 29.5]}"#.to_string(),
            400,
            "buffer_m",
        ),
    ] {
        let (got, e) = post_geometry(&w.app, uri, ct, body).await;
        assert_eq!(got.as_u16(), status, "{uri}: {e}");
        assert!(
            e["description"].as_str().unwrap().contains(what),
            "{uri}: {e}"
        );
    }
    refused(
        &w.app,
        &[
            (
                "/collections/risk_points/corridor?distance_m=100",
                400,
                "along",
            ),
            (
                "/collections/risk_points/corridor?along=pipelines/L00",
                400,
                "distance_m",
            ),
            (
                "/collections/risk_points/corridor?along=pipelines/L00&distance_m=-5",
                400,
                "distance_m",
            ),
            (
                "/collections/risk_points/corridor?along=nope/L00&distance_m=5",
                400,
                "along",
            ),
            (
                "/collections/risk_points/corridor?along=L00&distance_m=5",
                400,
                "along",
            ),
            (
                "/collections/risk_points/corridor?along=pipelines/NOPE&distance_m=5",
                404,
                "along",
            ),
        ],
    )
    .await;
}

/// Each request is answered with its status, the description naming what is wrong.
async fn refused(app: &std::sync::Arc<riskmap::app::App>, cases: &[(&str, u16, &str)]) {
    for &(uri, status, what) in cases {
        let (got, e) = get(app, uri).await;
        assert_eq!(got.as_u16(), status, "{uri}: {e}");
        assert!(
            e["description"].as_str().unwrap().contains(what),
            "{uri}: {e}"
        );
    }
}

#[tokio::test]
async fn the_context_of_a_risk_point_holds_its_sensors_and_its_surroundings() {
    let w = world();
    // Sensors: three attached to P000 (one far away), others near it attached elsewhere.
    let (lon, lat) = match &w.points[0].1 {
        Geometry::Point(p) => (p.x(), p.y()),
        _ => unreachable!(),
    };
    let types = riskmap::alerts::sensor_types::parse_csv(
        b"type_id,family,name,unit,warn_above,alarm_above\n7,rainfall,r,mm,50,100\n",
    )
    .unwrap();
    w.app.put_sensor_types(&types, "test").unwrap();
    let sensor = |id: &str, dx: f64, attached: &str| {
        let attached = (!attached.is_empty()).then_some(attached);
        json!({"type": "Feature", "id": id, "geometry": {"type": "Point", "coordinates": [lon + dx, lat]},
               "properties": {"type_id": 7, "risk_point_id": attached}})
    };
    for (id, dx, to) in [
        ("S1", 0.001, "P000"),
        ("S2", 0.002, "P000"),
        ("S3", 0.5, "P000"),
        ("S4", 0.0015, "P001"),
        ("S5", 0.003, ""),
    ] {
        create(&w.app, "sensors", &sensor(id, dx, to));
    }
    let (status, doc) = get(
        &w.app,
        "/collections/risk_points/items/P000/context?radius_m=400&k=3",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["feature"]["id"], "P000");
    let sensors = &doc["layers"]["sensors"];
    let attached: Vec<&str> = sensors["attached"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        attached,
        ["S1", "S2", "S3"],
        "nearest first, the far one too"
    );
    assert_eq!(sensors["attached"]["property"], "risk_point_id");
    let d: Vec<f64> = sensors["attached"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["properties"]["distance_m"].as_f64().unwrap())
        .collect();
    let here = Coord { x: lon, y: lat };
    for (dx, got) in [0.001, 0.002, 0.5].iter().zip(&d) {
        let want = riskmap::query::geodesic::point_distance_m(
            here,
            Coord {
                x: lon + dx,
                y: lat,
            },
        );
        assert!((got - want).abs() < 0.001, "{got} against {want}");
    }
    // Within 400 m: S1, S4, S2 (about 97, 145, 194 m); S5 at 290 m too.
    let within: Vec<&str> = sensors["within"]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(within, ["S1", "S4", "S2", "S5"]);
    let nearest: Vec<&str> = sensors["nearest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(nearest, ["S1", "S4", "S2"]);
    // Pipelines within the radius, against the brute force; the k nearest of them.
    let pipes = &doc["layers"]["pipelines"];
    assert!(pipes.get("attached").is_none());
    same(
        &hits(&pipes["within"]),
        &brute(&w.lines, here, 400.0),
        "pipelines within",
    );
    same(
        &pipes["nearest"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["id"].as_str().unwrap().to_string(),
                    f["properties"]["distance_m"].as_f64().unwrap(),
                )
            })
            .collect::<Vec<_>>(),
        &brute(&w.lines, here, f64::INFINITY)[..3],
        "pipelines nearest",
    );
    assert!(
        doc["layers"].get("risk_points").is_none(),
        "not its own layer"
    );
    // Refusals, each named; a missing feature is 404.
    refused(
        &w.app,
        &[
            (
                "/collections/risk_points/items/P000/context?radius_m=0",
                400,
                "radius_m",
            ),
            ("/collections/risk_points/items/P000/context?k=0", 400, "k"),
            (
                "/collections/risk_points/items/P000/context?bbox=1,2,3,4",
                400,
                "bbox",
            ),
            (
                "/collections/pipelines/items/L00/context",
                400,
                "point layers",
            ),
            ("/collections/risk_points/items/NOPE/context", 404, "NOPE"),
        ],
    )
    .await;
}

#[tokio::test]
async fn work_is_capped_by_the_budget_and_the_excess_refused() {
    use riskmap::query::Budget;
    use riskmap::query::filter::Filter;
    use riskmap::query::near::{self, AroundQuery, NearError};
    let w = world();
    // At the query level: a budget too small for 400 candidates × 5 vertices is refused,
    // having done no more than it allowed; a large enough one answers, and says what it spent.
    let ring: Vec<(f64, f64)> = vec![
        (106.4, 29.4),
        (106.6, 29.4),
        (106.6, 29.6),
        (106.4, 29.6),
        (106.4, 29.4),
    ];
    let q = AroundQuery {
        geometry: Geometry::Polygon(geo_types::Polygon::new(LineString::from(ring), vec![])),
        distance_m: 1_000.0,
        filter: Filter::Const(true),
        limit: 10,
        offset: 0,
    };
    {
        let idx_layer = w.app.layer("risk_points").unwrap();
        let idx = idx_layer.index.read();
        let small = Budget::new(1_000);
        assert!(matches!(
            near::around(&idx, &q, &small),
            Err(NearError::Work(_))
        ));
        assert!(small.exceeded() && small.spent() <= 1_000);
        let enough = Budget::new(1_000_000);
        let page = near::around(&idx, &q, &enough).unwrap();
        assert_eq!(page.matched, 400);
        // One per candidate, and 5 vertices × 1 per point.
        assert_eq!(enough.spent(), 400 + 400 * 5);
    }

    // Through HTTP: a 10,000-position line against a 50,000-vertex pipeline is 5 × 10^8
    // vertex pairs, over the default budget: refused at once, saying what to narrow.
    let long: Vec<[f64; 2]> = (0..50_000)
        .map(|i| [106.3 + i as f64 * 4e-6, 29.45 + (i % 2) as f64 * 1e-5])
        .collect();
    create(
        &w.app,
        "pipelines",
        &json!({"type": "Feature", "id": "LONG", "geometry": {"type": "LineString", "coordinates": long}, "properties": {"kind": "gas"}}),
    );
    let probe = |n: usize| {
        let c: Vec<[f64; 2]> = (0..n)
            .map(|i| [106.45 + i as f64 * 1e-5, 29.4502])
            .collect();
        json!({"type": "LineString", "coordinates": c}).to_string()
    };
    let (status, e) = post_geometry(
        &w.app,
        "/collections/pipelines/intersects?buffer_m=100",
        "application/geo+json",
        probe(10_000),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["code"], "QueryTooExpensive");
    assert!(e["description"].as_str().unwrap().contains("narrow"), "{e}");
    // The same question with a 100-position line is 5 × 10^6: answered.
    let (status, doc) = post_geometry(
        &w.app,
        "/collections/pipelines/intersects?buffer_m=100",
        "application/geo+json",
        probe(100),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert!(hits(&doc).iter().any(|h| h.0 == "LONG"));
}
