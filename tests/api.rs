//! The HTTP API through `oneshot` (no socket): catalogue, feature edits round-tripped
//! through store, index and a restart, and the role × endpoint access matrix.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::*;
use http_body_util::BodyExt;
use riskmap::app::App;
use riskmap::model::Role;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn call(
    app: &Arc<App>,
    method: Method,
    uri: &str,
    key: Option<&str>,
    body: Option<(&str, Value)>,
) -> Resp {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    if let Some((ct, _)) = &body {
        headers.push(("content-type", ct));
    }
    let (status, headers, bytes) = http(
        app,
        method.as_str(),
        uri,
        &headers,
        body.map(|(_, v)| v.to_string()),
    )
    .await;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Resp {
        status,
        headers,
        body,
    }
}

const GEOJSON: &str = "application/geo+json";

/// A request body: content type and JSON.
type TypedBody = (&'static str, Value);

fn seed(dir: &Path) {
    let file = dir.join("seed.geojson");
    std::fs::write(
        &file,
        collection(vec![
            risk_point("R1", 106.5, 29.5, "III"),
            risk_point("R2", 106.6, 29.6, "IV"),
        ]),
    )
    .unwrap();
    cli_import(dir, "risk_points", &file);
}

fn key(app: &App, role: Role) -> String {
    app.store()
        .add_key("test", role, role.name())
        .unwrap()
        .secret
}

/// The feature as the index holds it and as the store holds it must agree.
fn index_matches_store(app: &App, layer: &str, id: &str) {
    let l = app.layer(layer).unwrap();
    let from_index = l.index.read().get(id);
    let from_store = app.store().get_feature(&l.def, id).unwrap();
    assert_eq!(
        from_index, from_store,
        "index and store disagree on {layer}/{id}"
    );
}

#[tokio::test]
async fn health_collections_and_metrics_describe_the_layers() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path());
    let app = open_app(dir.path());
    let h = call(&app, Method::GET, "/health", None, None).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.body["status"], "ok");
    assert_eq!(h.body["layers"]["risk_points"], 2);
    assert!(
        h.body["store"]["path"]
            .as_str()
            .unwrap()
            .ends_with("riskmap.gpkg")
    );
    assert!(h.body["uptime_seconds"].is_number());

    let c = call(&app, Method::GET, "/collections", None, None).await;
    let rp = c.body["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "risk_points")
        .unwrap()
        .clone();
    assert_eq!(rp["featureCount"], 2);
    assert_eq!(rp["geometryType"], "Point");
    assert_eq!(rp["title"], "Risk points");
    assert_eq!(
        rp["extent"]["spatial"]["bbox"],
        json!([[106.5, 29.5, 106.6, 29.6]])
    );
    let names: Vec<&str> = c.body["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "boundary",
            "pipelines",
            "risk_points",
            "rivers",
            "sensors",
            "warnings"
        ]
    );
    let one = call(&app, Method::GET, "/collections/pipelines", None, None).await;
    assert_eq!(one.body["lengthKm"], 0.0);
    assert_eq!(
        call(&app, Method::GET, "/collections/wells", None, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let m = call(&app, Method::GET, "/metrics", None, None).await;
    let text = m.body.as_str().unwrap().to_string();
    assert!(
        text.contains("riskmap_features{layer=\"risk_points\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("riskmap_imports_total{layer=\"risk_points\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("riskmap_imported_features_total{layer=\"risk_points\",outcome=\"added\"} 2"),
        "{text}"
    );
    assert!(text.contains("riskmap_http_requests_total"), "{text}");
    assert!(
        text.contains("riskmap_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn errors_are_json_never_html() {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    for (method, uri) in [
        (Method::GET, "/nowhere"),
        (Method::GET, "/collections/risk_points/items/nope"),
        (Method::DELETE, "/health"),
        (Method::GET, "/collections/..%2F..%2Fetc/items/x"),
    ] {
        let r = call(&app, method.clone(), uri, None, None).await;
        assert!(r.status.is_client_error(), "{method} {uri}: {}", r.status);
        assert_eq!(
            r.headers[header::CONTENT_TYPE],
            "application/json",
            "{method} {uri}"
        );
        assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(
            r.body["description"].is_string(),
            "{method} {uri}: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn create_replace_patch_delete_round_trip_through_store_index_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path());
    let app = open_app(dir.path());
    let planner = key(&app, Role::Planner);
    let base = "/collections/risk_points/items";

    // Create.
    let new = risk_point("R100", 106.55, 29.55, "II");
    let r = call(
        &app,
        Method::POST,
        base,
        Some(&planner),
        Some((GEOJSON, new)),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Absolute (OGC API – Features), on the request's host (here none: the default).
    assert_eq!(
        r.headers[header::LOCATION],
        "http://localhost:8080/collections/risk_points/items/R100"
    );
    assert_eq!(r.headers[header::CONTENT_TYPE], GEOJSON);
    let got = call(&app, Method::GET, &format!("{base}/R100"), None, None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["properties"]["level"], "II");
    assert_eq!(got.body["geometry"]["coordinates"], json!([106.55, 29.55]));
    index_matches_store(&app, "risk_points", "R100");

    // A feature without an id gets one from the server.
    let mut anon = risk_point("x", 106.0, 29.0, "IV");
    anon.as_object_mut().unwrap().remove("id");
    anon["properties"].as_object_mut().unwrap().remove("id");
    let r = call(
        &app,
        Method::POST,
        base,
        Some(&planner),
        Some((GEOJSON, anon)),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let generated = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "a UUID");

    // Creating an existing id conflicts.
    let r = call(
        &app,
        Method::POST,
        base,
        Some(&planner),
        Some((GEOJSON, risk_point("R100", 1.0, 1.0, "I"))),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // Replace: moved and re-levelled.
    let r = call(
        &app,
        Method::PUT,
        &format!("{base}/R100"),
        Some(&planner),
        Some((GEOJSON, risk_point("R100", 107.0, 30.0, "I"))),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let got = call(&app, Method::GET, &format!("{base}/R100"), None, None).await;
    assert_eq!(got.body["properties"]["level"], "I");
    assert_eq!(got.body["geometry"]["coordinates"], json!([107.0, 30.0]));
    index_matches_store(&app, "risk_points", "R100");
    let l = app.layer("risk_points").unwrap();
    let near_old = riskmap::model::Bbox::new(106.5, 29.5, 106.6, 29.6).unwrap();
    assert!(
        !l.index
            .read()
            .in_bbox(&near_old)
            .iter()
            .any(|&s| l.index.read().id(s) == "R100"),
        "old position left in the R-tree"
    );

    // Patch: a planner corrects the level only; optimistic locking with If-Match.
    let etag = got.headers[header::ETAG].to_str().unwrap().to_string();
    let stale = "\"000000000000000000000000\"";
    let r = call_with(
        &app,
        Method::PATCH,
        &format!("{base}/R100"),
        &planner,
        "application/merge-patch+json",
        json!({"properties": {"level": "II"}}),
        Some(stale),
    )
    .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = call_with(
        &app,
        Method::PATCH,
        &format!("{base}/R100"),
        &planner,
        "application/merge-patch+json",
        json!({"properties": {"level": "II"}}),
        Some(&etag),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["properties"]["level"], "II");
    assert_eq!(r.body["properties"]["name"], "point R100");
    assert_eq!(r.body["geometry"]["coordinates"], json!([107.0, 30.0]));
    // Patch the position.
    let r = call(
        &app,
        Method::PATCH,
        &format!("{base}/R100"),
        Some(&planner),
        Some((
            "application/merge-patch+json",
            json!({"geometry": {"type": "Point", "coordinates": [106.9, 29.9]}}),
        )),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    index_matches_store(&app, "risk_points", "R100");

    // Invalid edits change nothing.
    for (method, uri, ct, body, status) in [
        (
            Method::PATCH,
            format!("{base}/R100"),
            "application/merge-patch+json",
            json!({"properties": {"level": "V"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PATCH,
            format!("{base}/R100"),
            "application/merge-patch+json",
            json!({"id": "R200"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PUT,
            format!("{base}/R100"),
            GEOJSON,
            risk_point("R999", 106.0, 29.0, "I"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PUT,
            format!("{base}/R100"),
            GEOJSON,
            risk_point("R100", 106.0, 99.0, "I"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::PUT,
            format!("{base}/R100"),
            "text/plain",
            risk_point("R100", 106.0, 29.0, "I"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            Method::PUT,
            format!("{base}/nope"),
            GEOJSON,
            risk_point("nope", 106.0, 29.0, "I"),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/collections/wells/items".to_string(),
            GEOJSON,
            risk_point("W", 106.0, 29.0, "I"),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let before = call(&app, Method::GET, &format!("{base}/R100"), None, None)
            .await
            .body;
        let r = call(&app, method.clone(), &uri, Some(&planner), Some((ct, body))).await;
        assert_eq!(r.status, status, "{method} {uri}: {}", r.body);
        assert_eq!(
            call(&app, Method::GET, &format!("{base}/R100"), None, None)
                .await
                .body,
            before
        );
    }
    let malformed = Request::builder()
        .method(Method::POST)
        .uri(base)
        .header(header::AUTHORIZATION, format!("Bearer {planner}"))
        .header(header::CONTENT_TYPE, GEOJSON)
        .body(Body::from("{\"type\": \"Feature\","))
        .unwrap();
    let r = riskmap::api::router(app.clone())
        .oneshot(malformed)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Delete.
    let r = call(
        &app,
        Method::DELETE,
        &format!("{base}/R2"),
        Some(&planner),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&app, Method::GET, &format!("{base}/R2"), None, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(
            &app,
            Method::DELETE,
            &format!("{base}/R2"),
            Some(&planner),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    index_matches_store(&app, "risk_points", "R2");

    // Every change is audited with who and what.
    let audit = app.store().recent_audit(50).unwrap();
    let actions: Vec<&str> = audit
        .iter()
        .filter(|(_, _, e)| e.layer.as_deref() == Some("risk_points"))
        .map(|(_, _, e)| e.action.as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "delete", "patch", "patch", "replace", "create", "create", "import"
        ]
    );
    let (_, at, patch) = &audit.iter().find(|(_, _, e)| e.action == "patch").unwrap();
    assert!(
        patch.actor.starts_with("key:") && patch.actor.ends_with(":planner"),
        "{}",
        patch.actor
    );
    assert!(at.ends_with('Z'));
    assert_eq!(patch.before.as_ref().unwrap()["properties"]["level"], "II");
    assert_eq!(
        patch.after.as_ref().unwrap()["geometry"]["coordinates"],
        json!([106.9, 29.9])
    );

    // Restart: everything reads back the same from a fresh process state.
    drop(app);
    let app = open_app(dir.path());
    let got = call(&app, Method::GET, &format!("{base}/R100"), None, None).await;
    assert_eq!(got.body["properties"]["level"], "II");
    assert_eq!(got.body["geometry"]["coordinates"], json!([106.9, 29.9]));
    assert_eq!(
        call(
            &app,
            Method::GET,
            &format!("{base}/{generated}"),
            None,
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, Method::GET, &format!("{base}/R2"), None, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, Method::GET, "/health", None, None).await.body["layers"]["risk_points"],
        3
    );
    for id in ["R1", "R2", "R100", generated.as_str()] {
        index_matches_store(&app, "risk_points", id);
    }
}

async fn call_with(
    app: &Arc<App>,
    method: Method,
    uri: &str,
    key: &str,
    ct: &str,
    body: Value,
    if_match: Option<&str>,
) -> Resp {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, ct);
    if let Some(m) = if_match {
        req = req.header(header::IF_MATCH, m);
    }
    let resp = riskmap::api::router(app.clone())
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

#[tokio::test]
async fn without_a_key_or_with_the_wrong_role_edits_get_401_or_403_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path());
    let app = open_app(dir.path());
    let revoked = app.store().add_key("test", Role::Admin, "old").unwrap();
    app.store().revoke_key("test", revoked.key.id).unwrap();
    let keys: Vec<(Role, String)> = Role::ALL.iter().map(|&r| (r, key(&app, r))).collect();
    let base = "/collections/risk_points/items";
    let snapshot = |app: &Arc<App>| {
        let l = app.layer("risk_points").unwrap();
        let idx = l.index.read();
        let mut all: Vec<_> = idx.slots().map(|s| idx.feature(s)).collect();
        all.sort_by_key(|f| f.fid);
        (
            all,
            sqlite_count(dir.path(), "risk_points"),
            app.store().recent_audit(1000).unwrap().len(),
        )
    };
    let before = snapshot(&app);

    let endpoints: Vec<(Method, String, Option<TypedBody>)> = vec![
        (
            Method::POST,
            base.to_string(),
            Some((GEOJSON, risk_point("R50", 106.0, 29.0, "I"))),
        ),
        (
            Method::PUT,
            format!("{base}/R1"),
            Some((GEOJSON, risk_point("R1", 106.0, 29.0, "I"))),
        ),
        (
            Method::PATCH,
            format!("{base}/R1"),
            Some((
                "application/merge-patch+json",
                json!({"properties": {"level": "I"}}),
            )),
        ),
        (Method::DELETE, format!("{base}/R1"), None),
    ];
    let mut checked = 0;
    for (method, uri, body) in &endpoints {
        // No key, a malformed header, an unknown key, a revoked key: 401 with a challenge.
        for k in [
            None,
            Some("not-a-key"),
            Some("rmk_0000000000000000000000000000000000000000000000000000000000000000"),
            Some(revoked.secret.as_str()),
        ] {
            let r = call(&app, method.clone(), uri, k, body.clone()).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with {k:?}"
            );
            assert!(
                r.headers[header::WWW_AUTHENTICATE]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer")
            );
            checked += 1;
        }
        for (role, k) in &keys {
            if role.allows(riskmap::model::Action::EditFeatures) {
                continue;
            }
            let r = call(&app, method.clone(), uri, Some(k), body.clone()).await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{method} {uri} as {}",
                role.name()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * (4 + 4));
    assert_eq!(
        snapshot(&app),
        before,
        "a refused request changed something"
    );
    drop(app);
    let app = open_app(dir.path());
    assert_eq!(
        snapshot(&app),
        before,
        "a refused request changed the store"
    );

    // The allowed roles can: planner and admin.
    for role in [Role::Planner, Role::Admin] {
        let k = &keys.iter().find(|(r, _)| *r == role).unwrap().1;
        let r = call(
            &app,
            Method::PATCH,
            &format!("{base}/R1"),
            Some(k),
            Some((
                "application/merge-patch+json",
                json!({"properties": {"level": "I"}}),
            )),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", role.name());
    }
}

#[tokio::test]
async fn private_reads_need_a_key() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path());
    let app = Arc::new(
        App::open(
            config(),
            dir.path(),
            riskmap::app::OpenOptions {
                demo: false,
                public_reads: false,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    assert_eq!(
        call(&app, Method::GET, "/collections", None, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/collections/risk_points/items/R1",
            None,
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    let sensor = key(&app, Role::Sensor);
    assert_eq!(
        call(&app, Method::GET, "/collections", Some(&sensor), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let viewer = key(&app, Role::Viewer);
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/collections/risk_points/items/R1",
            Some(&viewer),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, Method::GET, "/health", None, None).await.status,
        StatusCode::OK
    );
    // The queries too: refused without a key (no body read), answered for a viewer.
    let point = || {
        Some((
            "application/geo+json",
            json!({"type": "Point", "coordinates": [106.5, 29.5]}),
        ))
    };
    for (method, uri, body) in [
        (Method::GET, "/collections/risk_points/queryables", None),
        (
            Method::GET,
            "/collections/risk_points/within?lon=106.5&lat=29.5&radius_m=500",
            None,
        ),
        (
            Method::GET,
            "/collections/risk_points/nearest?lon=106.5&lat=29.5&k=3",
            None,
        ),
        (
            Method::GET,
            "/collections/risk_points/items/R1/context",
            None,
        ),
        (
            Method::POST,
            "/collections/risk_points/intersects?buffer_m=100",
            point(),
        ),
    ] {
        let r = call(&app, method.clone(), uri, None, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
        let r = call(&app, method, uri, Some(&viewer), body).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {:?}", r.body);
    }
}

#[tokio::test]
async fn writes_by_another_process_reach_the_index_through_the_change_feed() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path());
    let app = open_app(dir.path());
    // Another process imports a small file (listed ids) ...
    let file = dir.path().join("more.geojson");
    std::fs::write(
        &file,
        collection(vec![
            risk_point("R1", 107.5, 30.5, "I"),
            risk_point("R3", 106.7, 29.7, "II"),
        ]),
    )
    .unwrap();
    cli_import(dir.path(), "risk_points", &file);
    // Readers never catch up themselves (they never wait on writes): the server's
    // follower applies the feed (in `serve`, every `FOLLOW_INTERVAL`; here, by hand).
    assert_eq!(
        app.follow_changes().unwrap(),
        2,
        "R1 and R3 from the import"
    );
    let r = call(
        &app,
        Method::GET,
        "/collections/risk_points/items/R3",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["properties"]["level"], "II");
    assert_eq!(app.follow_changes().unwrap(), 0, "already applied");
    // This server's own edits are applied once, when committed: the follower skips them.
    let planner = key(&app, Role::Planner);
    let r = call_with(
        &app,
        Method::PATCH,
        "/collections/risk_points/items/R3",
        &planner,
        "application/merge-patch+json",
        json!({"properties": {"level": "I"}}),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        app.follow_changes().unwrap(),
        0,
        "own edit not applied again"
    );
    index_matches_store(&app, "risk_points", "R1");
    // ... and a big one (the feed says "reload the layer").
    let many: Vec<Value> = (0..riskmap::ingest::CHANGE_LIST_LIMIT + 5)
        .map(|i| {
            risk_point(
                &format!("B{i}"),
                106.0 + (i % 1000) as f64 * 1e-3,
                29.0,
                "IV",
            )
        })
        .collect();
    std::fs::write(&file, collection(many)).unwrap();
    cli_import(dir.path(), "risk_points", &file);
    app.follow_changes().unwrap();
    assert_eq!(
        app.layer("risk_points").unwrap().index.read().len(),
        3 + riskmap::ingest::CHANGE_LIST_LIMIT + 5
    );
}

#[tokio::test]
async fn items_are_listed_by_bbox_with_paging() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.geojson");
    std::fs::write(
        &file,
        collection(
            (0..25)
                .map(|i| risk_point(&format!("P{i:02}"), 106.0 + i as f64 * 0.01, 29.5, "III"))
                .collect(),
        ),
    )
    .unwrap();
    let o = riskmap(&[
        "import",
        "--data",
        dir.path().to_str().unwrap(),
        "--layer",
        "risk_points",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let app = open_app(dir.path());
    let r = call(
        &app,
        Method::GET,
        "/collections/risk_points/items?limit=10",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], GEOJSON);
    assert_eq!(r.body["numberMatched"], 25);
    assert_eq!(r.body["numberReturned"], 10);
    assert_eq!(r.body["features"][0]["id"], "P00");
    let next = r.body["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "next")
        .unwrap()["href"]
        .as_str()
        .unwrap()
        .to_string();
    let r = call(&app, Method::GET, &next, None, None).await;
    assert_eq!(r.body["features"][0]["id"], "P10");
    let r = call(
        &app,
        Method::GET,
        "/collections/risk_points/items?bbox=106.045,29,106.105,30",
        None,
        None,
    )
    .await;
    let ids: Vec<&str> = r.body["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["P05", "P06", "P07", "P08", "P09", "P10"]);
    for bad in [
        "limit=1000000000",
        "limit=-1",
        "bbox=1,2,3",
        "bbox=1,NaN,2,3",
        "bbbox=1,2,3,4",
        "offset=x",
    ] {
        let r = call(
            &app,
            Method::GET,
            &format!("/collections/risk_points/items?{bad}"),
            None,
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.body["description"].is_string());
    }
}

#[tokio::test]
async fn an_unreadable_if_match_refuses_the_write() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path());
    let app = open_app(dir.path());
    let planner = key(&app, Role::Planner);
    let req = Request::builder()
        .method(Method::PATCH)
        .uri("/collections/risk_points/items/R1")
        .header(header::AUTHORIZATION, format!("Bearer {planner}"))
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .header(
            header::IF_MATCH,
            axum::http::HeaderValue::from_bytes(b"\"st\xe9le\"").unwrap(),
        )
        .body(Body::from(r#"{"properties":{"level":"I"}}"#))
        .unwrap();
    let r = riskmap::api::router(app.clone())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let got = call(
        &app,
        Method::GET,
        "/collections/risk_points/items/R1",
        None,
        None,
    )
    .await;
    assert_eq!(got.body["properties"]["level"], "III");
}

#[tokio::test]
async fn unknown_methods_do_not_create_metric_series() {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    let m = Method::from_bytes(b"XAAA1").unwrap();
    let r = call(&app, m, "/nowhere", None, None).await;
    assert!(r.status.is_client_error());
    let text = call(&app, Method::GET, "/metrics", None, None)
        .await
        .body
        .as_str()
        .unwrap()
        .to_string();
    assert!(!text.contains("XAAA1"));
    assert!(text.contains("method=\"other\""), "{text}");
}

#[tokio::test]
async fn an_edit_that_names_a_member_twice_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path());
    let app = open_app(dir.path());
    let planner = key(&app, Role::Planner);
    let auth = format!("Bearer {planner}");
    let before = app
        .store()
        .count(&app.layer("risk_points").unwrap().def)
        .unwrap();
    let cases = [
        (
            "POST",
            "/collections/risk_points/items",
            r#"{"type":"Feature","id":"R9","geometry":{"type":"Point","coordinates":[106.5,29.5]},"properties":{"name":"n","category":"landslide","level":"I","level":"IV"}}"#,
            "application/geo+json",
        ),
        (
            "PUT",
            "/collections/risk_points/items/R1",
            r#"{"type":"Feature","id":"R1","id":"R2","geometry":{"type":"Point","coordinates":[106.5,29.5]},"properties":{"name":"n","category":"landslide","level":"I"}}"#,
            "application/geo+json",
        ),
        (
            "PATCH",
            "/collections/risk_points/items/R1",
            r#"{"properties":{"level":"I","level":"II"}}"#,
            "application/merge-patch+json",
        ),
    ];
    for (method, uri, body, ct) in cases {
        let (status, _, bytes) = http(
            &app,
            method,
            uri,
            &[("authorization", &auth), ("content-type", ct)],
            Some(body.to_string()),
        )
        .await;
        let err: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {uri}: {err}");
        assert!(
            err["description"]
                .as_str()
                .unwrap()
                .contains("duplicate member"),
            "{err}"
        );
    }
    let l = app.layer("risk_points").unwrap();
    assert_eq!(app.store().count(&l.def).unwrap(), before);
    assert!(app.store().get_feature(&l.def, "R9").unwrap().is_none());
    let r1 = app.store().get_feature(&l.def, "R1").unwrap().unwrap();
    assert_eq!(r1.feature.to_geojson(&l.def)["properties"]["level"], "III");
    index_matches_store(&app, "risk_points", "R1");
}
