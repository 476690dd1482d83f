//! `GET /api` (issue 8, OGC API – Features Part 1 "OpenAPI 3.0"): the document covers
//! every route of `src/api/router.rs` and nothing else, every operation it lists answers,
//! and the parameters carry the limits the server enforces (GDAL's use of it is in
//! `tests/real_clients.rs`).

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use common::*;
use serde_json::Value;

const HOST: &str = "maps.example.org:9000";

async fn get(app: &std::sync::Arc<riskmap::app::App>, uri: &str) -> (StatusCode, String, Vec<u8>) {
    let (status, headers, body) = http(app, "GET", uri, &[("Host", HOST)], None).await;
    let ct = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, body)
}

/// A path with each segment holding a `{parameter}` made `*`: the router's
/// `/tiles/{file}` and the document's `/tiles/{layers}.json` are the same route.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|s| if s.contains('{') { "*" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// The (method, path shape) of every route `router.rs` declares, read from its source.
fn routes() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/api/router.rs");
    let mut out = BTreeSet::new();
    for chunk in src.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).unwrap();
        // The call's arguments: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let end = chunk
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .unwrap()
            .0;
        let args = &chunk[..end];
        for m in ["get", "post", "put", "patch", "delete"] {
            if args.contains(&format!("{m}(")) {
                out.insert((m.to_string(), shape(path)));
            }
        }
    }
    assert!(out.len() > 15, "routes read from router.rs: {out:?}");
    out
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

/// A concrete request path for a documented one: each path parameter its first allowed
/// value, or one that exists.
fn concrete(path: &str, op: &Value) -> String {
    let mut p = path.to_string();
    for param in op["parameters"].as_array().into_iter().flatten() {
        if param["in"] != "path" {
            continue;
        }
        let name = param["name"].as_str().unwrap();
        let value = match name {
            "featureId" => "P00".to_string(),
            "collectionId" => "risk_points".to_string(),
            "layers" => "risk_points".to_string(),
            "z" | "x" | "y" => "0".to_string(),
            "importId" => "no-such-import".to_string(),
            "warningId" => "1".to_string(),
            "riskPointId" => "P00".to_string(),
            "sensorId" => "S1".to_string(),
            "templateId" => "T1".to_string(),
            "typeId" => "3".to_string(),
            _ => param["schema"]["enum"][0]
                .as_str()
                .unwrap_or_else(|| panic!("no value for {name} in {path}"))
                .to_string(),
        };
        p = p.replace(&format!("{{{name}}}"), &value);
    }
    // Required query parameters, with values that exist.
    let query: Vec<String> = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["in"] == "query" && q["required"] == true)
        .map(|q| {
            let name = q["name"].as_str().unwrap();
            let value = match name {
                "lon" => "106.5",
                "lat" => "29.5",
                "radius_m" => "500",
                "k" => "3",
                "along" => "risk_points/P00",
                "distance_m" => "100",
                "name" => "shelters",
                "without_plan" => "true",
                _ => panic!("no value for the required {name} of {path}"),
            };
            format!("{name}={value}")
        })
        .collect();
    if !query.is_empty() {
        p = format!("{p}?{}", query.join("&"));
    }
    p
}

#[tokio::test]
async fn the_api_document_covers_every_route_and_every_operation_answers() {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    // The sensor type and plan template first: the features name them.
    let types = riskmap::alerts::sensor_types::parse_csv(
        b"type_id,family,name,unit,warn_above,alarm_above\n3,water_level,w,m,2,3\n",
    )
    .unwrap();
    app.put_sensor_types(&types, "test").unwrap();
    let plans = riskmap::alerts::plans::parse_templates(
        br#"[{"id": "T1", "title": "t", "category": "landslide", "levels": {"red": ["evacuate"]}}]"#,
    )
    .unwrap();
    app.put_templates(&plans, "test").unwrap();
    let mut p00 = risk_point("P00", 106.5, 29.5, "III");
    p00["properties"]["plan_id"] = serde_json::json!("T1");
    create(&app, "risk_points", &p00);
    // A sensor, its type, a plan and a warning, for the warnings' and plans' reads.
    create(
        &app,
        "sensors",
        &serde_json::json!({"type": "Feature", "id": "S1",
            "geometry": {"type": "Point", "coordinates": [106.5, 29.5]},
            "properties": {"id": "S1", "type_id": 3, "risk_point_id": "P00"}}),
    );
    let now = app.alerts().now();
    let r = app
        .post_readings(
            vec![(
                0,
                riskmap::alerts::readings::Reading {
                    sensor_id: "S1".into(),
                    ts: now,
                    value: 9.0,
                },
            )],
            Default::default(),
        )
        .unwrap();
    assert_eq!(r.transitions, 1);

    let (status, ct, body) = get(&app, "/api").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "application/vnd.oai.openapi+json;version=3.0");
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.0."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["servers"][0]["url"], format!("http://{HOST}"));

    let ops = operations(&doc);
    // The per-layer items paths (`/collections/risk_points/items`) are the generic route.
    // The configured layers and the server's own layer of warnings.
    let layer_names: Vec<String> = config()
        .layer_names()
        .iter()
        .map(|n| n.to_string())
        .chain([riskmap::app::WARNINGS_LAYER.to_string()])
        .collect();
    let generic = |p: &str| {
        let mut p = p.to_string();
        for n in &layer_names {
            p = p.replace(
                &format!("/collections/{n}/"),
                "/collections/{collectionId}/",
            );
        }
        shape(&p)
    };
    let documented: BTreeSet<(String, String)> = ops
        .iter()
        .map(|(m, p, _)| (m.clone(), generic(p)))
        .collect();
    for n in &layer_names {
        assert!(
            doc["paths"][format!("/collections/{n}/items")]["get"].is_object(),
            "no items path of its own for {n}"
        );
    }
    let routed = routes();
    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes without documentation: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        extra.is_empty(),
        "documented operations no route serves: {extra:?}"
    );

    let mut ids = BTreeSet::new();
    for (method, path, op) in &ops {
        let id = op["operationId"].as_str().unwrap();
        assert!(ids.insert(id.to_string()), "operationId {id} twice");
        assert!(
            op["responses"].as_object().unwrap().len() >= 2,
            "{method} {path}"
        );
        let uri = concrete(path, op);
        // Writes, and the import operations (reports name files and actors): a key.
        let edit = op["tags"][0] == "Edits"
            || op["tags"][0] == "Imports"
            || (method != "get" && op["security"].is_array());
        if path == "/warnings/stream" {
            // Never ends: its answer is read in tests/warnings.rs.
            continue;
        }
        // A query whose geometry comes in the body (`intersects`): a point.
        let (headers, body): (Vec<(&str, &str)>, Option<String>) = if method == "post" && !edit {
            (
                vec![("Host", HOST), ("Content-Type", "application/geo+json")],
                Some(r#"{"type": "Point", "coordinates": [106.5, 29.5]}"#.to_string()),
            )
        } else {
            (vec![("Host", HOST)], None)
        };
        let (status, _, body) = http(&app, &method.to_uppercase(), &uri, &headers, body).await;
        if !edit {
            assert!(
                status.is_success(),
                "{method} {uri}: {status} {}",
                String::from_utf8_lossy(&body)
            );
            let documented: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            assert!(
                documented.contains(&&status.as_u16().to_string()),
                "{method} {uri} answered {status}, not among {documented:?}"
            );
        } else {
            // A write without a key: routed, and refused for the key it lacks.
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            assert!(op["security"].is_array(), "{method} {path} names no key");
        }
    }

    // Every error answer and schema a reference names is there.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/").skip(1) {
        let pointer = format!("/{}", r.split('"').next().unwrap());
        assert!(doc.pointer(&pointer).is_some(), "dangling $ref {pointer}");
    }

    // The landing page links the document and its HTML form.
    let landing = http_json(&app, "/?f=json").await;
    let links = landing["links"].as_array().unwrap();
    let desc = links.iter().find(|l| l["rel"] == "service-desc").unwrap();
    assert_eq!(desc["type"], "application/vnd.oai.openapi+json;version=3.0");
    assert!(desc["href"].as_str().unwrap().ends_with("/api"));
    let human = links.iter().find(|l| l["rel"] == "service-doc").unwrap();
    assert_eq!(human["type"], "text/html");
    let (status, ct, html) = get(&app, "/api.html").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ct.starts_with("text/html"), "{ct}");
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("<code>GET /collections/{collectionId}/items</code>"));
    assert!(!html.contains("<script"), "the page runs no script");
    let (status, _, _) = get(&app, "/api?f=xml").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let conf = http_json(&app, "/conformance").await;
    assert!(
        conf["conformsTo"]
            .as_array()
            .unwrap()
            .contains(&"http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30".into())
    );
}

fn param<'a>(op: &'a Value, name: &str) -> &'a Value {
    op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
}

#[tokio::test]
async fn the_parameters_carry_the_limits_the_server_enforces() {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    let doc = http_json(&app, "/api").await;
    let items = &doc["paths"]["/collections/{collectionId}/items"]["get"];
    let limit = &param(items, "limit")["schema"];
    assert_eq!(limit["maximum"].as_f64(), Some(10_000.0));
    assert_eq!(limit["default"].as_f64(), Some(100.0));
    // The documented maximum is the enforced one: one more is refused, naming `limit`.
    let (status, _, body) = get(&app, "/collections/risk_points/items?limit=10001").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("limit"));
    let (status, _, _) = get(&app, "/collections/risk_points/items?limit=10000").await;
    assert_eq!(status, StatusCode::OK);

    let limits = riskmap::query::filter::Limits::default();
    let filter = &param(items, "filter")["schema"];
    assert_eq!(filter["maxLength"].as_f64(), Some(limits.max_bytes as f64));
    let langs = &param(items, "filter-lang")["schema"]["enum"];
    // GDAL 3.6 looks for the draft's name, `cql-text`.
    for l in ["cql2-text", "cql2-json", "cql-text"] {
        assert!(langs.as_array().unwrap().contains(&l.into()), "{l}");
        let (status, _, body) = get(
            &app,
            &format!("/collections/risk_points/items?filter-lang={l}&filter={}", if l.ends_with("json") {
                "%7B%22op%22%3A%22%3D%22%2C%22args%22%3A%5B%7B%22property%22%3A%22level%22%7D%2C%22I%22%5D%7D"
            } else {
                "level%3D%27I%27"
            }),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{l}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let crs = param(items, "filter-crs")["schema"]["enum"]
        .as_array()
        .unwrap();
    assert!(
        crs.contains(&"http://www.epsg.org/def/crs/EPSG/0/4545".into())
            || crs.contains(&"http://www.opengis.net/def/crs/EPSG/0/4545".into())
    );

    // One path per layer, with a parameter per declared property and its allowed values.
    let def = layer("risk_points");
    let points = &doc["paths"]["/collections/risk_points/items"]["get"];
    for p in &def.properties {
        let schema = &param(points, &p.name)["schema"];
        if let Some(values) = &p.values {
            assert_eq!(
                schema["enum"].as_array().unwrap().len(),
                values.len(),
                "{}",
                p.name
            );
        }
    }
    assert!(param(points, "limit").is_object());

    // Tile coordinates and the layer list name their bounds.
    let tile = &doc["paths"]["/tiles/{layers}/{z}/{x}/{y}.mvt"]["get"];
    assert_eq!(
        param(tile, "z")["schema"]["maximum"].as_f64(),
        Some(riskmap::tiles::MAX_ZOOM as f64)
    );
    // Writes name the roles that may make them.
    let post = &doc["paths"]["/collections/{collectionId}/items"]["post"];
    let d = post["description"].as_str().unwrap();
    assert!(
        d.contains("planner") && d.contains("admin") && !d.contains("viewer"),
        "{d}"
    );
}
