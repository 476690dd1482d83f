//! HTTP details that clients and proxies rely on, through the router (`oneshot`); the
//! ones hyper sees first are also checked on a real socket in `tests/smoke.rs`.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::path::Path;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use common::*;
use riskmap::app::{App, OpenOptions};
use riskmap::model::Role;
use serde_json::{Value, json};

const GEOJSON: &str = "application/geo+json";
const MERGE: &str = "application/merge-patch+json";
const ITEMS: &str = "/collections/risk_points/items";

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(
    app: &Arc<App>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Resp {
    let (status, headers, bytes) =
        http(app, method, uri, headers, body.map(|b| b.to_string())).await;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{method} {uri}: {status} with a body that is not JSON: {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Resp {
        status,
        headers,
        body,
    }
}

/// The error shape of every refusal: JSON `{status, code, description}`, `nosniff`.
fn assert_json_error(r: &Resp, status: StatusCode, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        "application/json",
        "{what}"
    );
    assert_eq!(
        r.headers[header::X_CONTENT_TYPE_OPTIONS],
        "nosniff",
        "{what}"
    );
    assert_eq!(r.body["status"], status.as_u16(), "{what}");
    assert!(r.body["code"].is_string(), "{what}: {}", r.body);
    assert!(r.body["description"].is_string(), "{what}: {}", r.body);
}

fn planner(app: &App) -> String {
    app.store()
        .add_key("test", Role::Planner, "Li Wei")
        .unwrap()
        .secret
}

/// A store with one risk point, R1, created over HTTP by a planner; the app and the
/// planner's key.
async fn with_r1(dir: &Path) -> (Arc<App>, String) {
    let app = open_app(dir);
    let key = planner(&app);
    let auth = format!("Bearer {key}");
    let r = send(
        &app,
        "POST",
        ITEMS,
        &[("authorization", &auth), ("content-type", GEOJSON)],
        Some(risk_point("R1", 106.5, 29.5, "III")),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    (app, key)
}

async fn patch_level(app: &Arc<App>, auth: &str, if_match: Option<&str>, level: &str) -> Resp {
    let mut h = vec![("authorization", auth), ("content-type", MERGE)];
    if let Some(m) = if_match {
        h.push(("if-match", m));
    }
    send(
        app,
        "PATCH",
        &format!("{ITEMS}/R1"),
        &h,
        Some(json!({"properties": {"level": level}})),
    )
    .await
}

async fn level_of_r1(app: &Arc<App>) -> Value {
    send(app, "GET", &format!("{ITEMS}/R1"), &[], None)
        .await
        .body["properties"]["level"]
        .clone()
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_in_any_case() {
    let dir = tempfile::tempdir().unwrap();
    let (app, key) = with_r1(dir.path()).await;
    // RFC 9110 §11.1: the scheme is case-insensitive, one or more spaces follow it.
    for (scheme, level) in [("bearer", "I"), ("BEARER", "II"), ("BeArEr ", "IV")] {
        let r = patch_level(&app, &format!("{scheme} {key}"), None, level).await;
        assert_eq!(r.status, StatusCode::OK, "{scheme:?}: {}", r.body);
        assert_eq!(level_of_r1(&app).await, level, "{scheme:?}");
    }
    // Other schemes, a scheme run into the key, no key: 401 with a challenge.
    for bad in [
        format!("Basic {key}"),
        format!("Bearer{key}"),
        format!("Bearers {key}"),
        "Bearer ".to_string(),
        "bearer".to_string(),
    ] {
        let r = patch_level(&app, &bad, None, "I").await;
        assert_json_error(&r, StatusCode::UNAUTHORIZED, &bad);
        assert!(
            r.headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer realm=")
        );
    }
    assert_eq!(level_of_r1(&app).await, "IV");
}

#[tokio::test]
async fn if_match_compares_strongly_and_star_matches_an_existing_feature() {
    let dir = tempfile::tempdir().unwrap();
    let (app, key) = with_r1(dir.path()).await;
    let auth = format!("Bearer {key}");
    let etag = |r: &Resp| r.headers[header::ETAG].to_str().unwrap().to_string();
    let tag = etag(&send(&app, "GET", &format!("{ITEMS}/R1"), &[], None).await);
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");

    // A weak tag never matches for a write (RFC 9110 §13.1.1), even the same one;
    // nor does a malformed list that happens to hold the tag.
    for cond in [
        format!("W/{tag}"),
        format!("w/{tag}"),
        format!("\"other\", W/{tag}"),
        format!("{tag}, garbage"),
        format!("*, {tag}"),
        tag.trim_matches('"').to_string(),
    ] {
        let r = patch_level(&app, &auth, Some(&cond), "I").await;
        assert_json_error(&r, StatusCode::PRECONDITION_FAILED, &cond);
        assert_eq!(level_of_r1(&app).await, "III", "{cond}");
    }
    let r = send(
        &app,
        "DELETE",
        &format!("{ITEMS}/R1"),
        &[("authorization", &auth), ("if-match", &format!("W/{tag}"))],
        None,
    )
    .await;
    assert_json_error(&r, StatusCode::PRECONDITION_FAILED, "weak DELETE");

    // The strong tag, alone or in a list, matches.
    let r = patch_level(&app, &auth, Some(&format!("\"x\", {tag}")), "II").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let tag2 = etag(&r);
    assert_ne!(tag2, tag);
    // The old tag no longer does.
    let r = patch_level(&app, &auth, Some(&tag), "I").await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    // `*` matches any existing feature, and nothing that does not exist.
    let r = patch_level(&app, &auth, Some("*"), "IV").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(level_of_r1(&app).await, "IV");
    let r = send(
        &app,
        "PATCH",
        &format!("{ITEMS}/NOPE"),
        &[
            ("authorization", &auth),
            ("content-type", MERGE),
            ("if-match", "*"),
        ],
        Some(json!({"properties": {"level": "I"}})),
    )
    .await;
    assert_json_error(&r, StatusCode::NOT_FOUND, "* on a missing feature");
    // GET's If-None-Match keeps the weak comparison it is defined with.
    let now = etag(&send(&app, "GET", &format!("{ITEMS}/R1"), &[], None).await);
    let r = send(
        &app,
        "GET",
        &format!("{ITEMS}/R1"),
        &[("if-none-match", &format!("W/{now}"))],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn ids_a_url_cannot_carry_back_are_refused_naming_the_field_and_others_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    let key = planner(&app);
    let auth = format!("Bearer {key}");
    let h = [("authorization", auth.as_str()), ("content-type", GEOJSON)];
    for (id, why) in [
        (".", "dot segment"),
        ("..", "dot segment"),
        ("a/b", "'/'"),
        ("a\\b", "'\\\\'"),
        (" R2", "whitespace"),
        ("R\u{0}2", "control"),
        ("", "empty"),
    ] {
        let r = send(
            &app,
            "POST",
            ITEMS,
            &h,
            Some(risk_point(id, 106.5, 29.5, "I")),
        )
        .await;
        assert_json_error(&r, StatusCode::UNPROCESSABLE_ENTITY, id);
        let d = r.body["description"].as_str().unwrap();
        assert!(
            d.starts_with("field 'id'") || d.starts_with("field 'properties.id'"),
            "{id:?}: {d}"
        );
        assert!(d.contains(why), "{id:?}: {d}");
    }
    // Through the URL of a PUT (the id comes from the path): `%2E%2E` decodes to `..`.
    let r = send(
        &app,
        "PUT",
        &format!("{ITEMS}/%2E%2E"),
        &h,
        Some(
            json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [106.5, 29.5]},
                    "properties": {"name": "n", "category": "landslide", "level": "I"}}),
        ),
    )
    .await;
    assert_json_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "PUT %2E%2E");
    let d = r.body["description"].as_str().unwrap();
    assert!(
        d.starts_with("field 'id'") && d.contains("dot segment"),
        "{d}"
    );
    assert_eq!(
        app.layer("risk_points").unwrap().index.read().len(),
        0,
        "nothing was stored"
    );

    // Ids with characters that need percent-encoding are fine: the Location and the
    // self link give them encoded, and they lead back to the feature.
    for id in ["a?b#c", "50%", "桥 7", "..."] {
        let r = send(
            &app,
            "POST",
            ITEMS,
            &h,
            Some(risk_point(id, 106.5, 29.5, "I")),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{id:?}: {}", r.body);
        let location = r.headers[header::LOCATION].to_str().unwrap().to_string();
        assert_eq!(r.body["links"][0]["href"], location.as_str());
        let got = send(&app, "GET", &location, &[], None).await;
        assert_eq!(got.status, StatusCode::OK, "{id:?} at {location}");
        assert_eq!(got.body["id"], id);
    }
}

#[tokio::test]
async fn positions_need_two_or_three_numbers_and_refusals_name_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let (app, key) = with_r1(dir.path()).await;
    let auth = format!("Bearer {key}");
    let mut five = risk_point("R2", 106.5, 29.5, "I");
    five["geometry"]["coordinates"] = json!([106.5, 29.5, 300.0, 1.0, 2.0]);
    let r = send(
        &app,
        "POST",
        ITEMS,
        &[("authorization", &auth), ("content-type", GEOJSON)],
        Some(five),
    )
    .await;
    assert_json_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "five numbers");
    let d = r.body["description"].as_str().unwrap();
    assert!(d.starts_with("field 'geometry.coordinates': "), "{d}");
    assert!(d.contains("5 number(s)"), "{d}");
    let r = send(&app, "GET", &format!("{ITEMS}/R2"), &[], None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "nothing was stored");

    // A PATCH into a multi-part geometry names the position.
    let r = send(
        &app,
        "PATCH",
        &format!("{ITEMS}/R1"),
        &[("authorization", &auth), ("content-type", MERGE)],
        Some(json!({"geometry": {"type": "Point", "coordinates": [106.6]}})),
    )
    .await;
    assert_json_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "one number");
    assert!(
        r.body["description"]
            .as_str()
            .unwrap()
            .starts_with("field 'geometry.coordinates': a position has 1 number(s)"),
        "{}",
        r.body
    );

    // Three numbers: the altitude is dropped, and the answer shows what was stored.
    let r = send(
        &app,
        "PATCH",
        &format!("{ITEMS}/R1"),
        &[("authorization", &auth), ("content-type", MERGE)],
        Some(json!({"geometry": {"type": "Point", "coordinates": [106.6, 29.6, 250.0]}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["geometry"]["coordinates"], json!([106.6, 29.6]));
}

#[tokio::test]
async fn refusals_for_size_and_bad_input_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    let long = format!("/collections/risk_points/items?bbox={}", "1".repeat(9000));
    let r = send(&app, "GET", &long, &[], None).await;
    assert_json_error(&r, StatusCode::URI_TOO_LONG, "long URI");
    assert_eq!(r.body["code"], "UriTooLong");

    let names: Vec<String> = (0..70).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let r = send(&app, "GET", "/health", &many, None).await;
    assert_json_error(
        &r,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "70 headers",
    );

    let big = "c".repeat(40 * 1024);
    let r = send(&app, "GET", "/health", &[("cookie", &big)], None).await;
    assert_json_error(
        &r,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "40 KiB header",
    );
    assert_eq!(r.body["code"], "HeaderFieldsTooLarge");

    // Just under the limits: served.
    let fine = format!("/health?{}", "a".repeat(8000));
    assert_eq!(
        send(&app, "GET", &fine, &[], None).await.status,
        StatusCode::OK
    );

    // Bad JSON, query and path: 400 in JSON, with the reason.
    let key = planner(&app);
    let auth = format!("Bearer {key}");
    let (status, h, body) = http(
        &app,
        "POST",
        ITEMS,
        &[("authorization", &auth), ("content-type", GEOJSON)],
        Some("{\"type\": \"Feature\",".into()),
    )
    .await;
    let r = Resp {
        status,
        headers: h,
        body: serde_json::from_slice(&body).unwrap(),
    };
    assert_json_error(&r, StatusCode::BAD_REQUEST, "truncated JSON");
    for uri in [
        "/collections/risk_points/items?limit=x",
        "/collections/risk_points/items?bbox=1,2,3",
        "/collections/risk_points/items?limit=%ZZ",
        "/collections/%FF/items",
        "/tiles/risk_points/99/0/0.mvt",
        "/tiles/risk_points/a/b/c.mvt",
    ] {
        let r = send(&app, "GET", uri, &[], None).await;
        assert!(r.status.is_client_error(), "{uri}");
        assert_json_error(&r, r.status, uri);
    }
}

fn app_with(dir: &Path, public_url: Option<&str>, trust_forwarded: bool) -> Arc<App> {
    Arc::new(
        App::open(
            config(),
            dir,
            OpenOptions {
                demo: false,
                public_reads: true,
                public_url: public_url.map(|u| riskmap::api::parse_public_url(u).unwrap()),
                trust_forwarded,
                ..Default::default()
            },
        )
        .unwrap(),
    )
}

/// Every `Vary` value, joined (CORS adds its own).
fn vary(h: &HeaderMap) -> String {
    h.get_all(header::VARY)
        .iter()
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(", ")
}

async fn tiles_url(app: &Arc<App>, headers: &[(&str, &str)]) -> (Resp, String) {
    let r = send(app, "GET", "/tiles/risk_points.json", headers, None).await;
    let url = r.body["tiles"][0].as_str().unwrap_or("").to_string();
    (r, url)
}

#[tokio::test]
async fn tilejson_uses_the_public_url_and_a_hostile_host_cannot_inject() {
    let dir = tempfile::tempdir().unwrap();
    let hostile: [(&str, &str); 2] = [("host", "evil.example"), ("x-forwarded-proto", "https")];

    // A public URL: the request's Host and X-Forwarded-* change nothing, no Vary.
    let app = app_with(dir.path(), Some("https://maps.example.org/"), false);
    let cases: [&[(&str, &str)]; 3] = [&hostile, &[("x-forwarded-host", "evil.example")], &[]];
    for h in cases {
        let (r, url) = tiles_url(&app, h).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            url,
            "https://maps.example.org/tiles/risk_points/{z}/{x}/{y}.mvt"
        );
        assert!(!vary(&r.headers).contains("host"), "{}", vary(&r.headers));
    }
    let style = send(&app, "GET", "/styles/riskmap.json", &hostile, None).await;
    let src = style.body["sources"]["riskmap"]["url"].as_str().unwrap();
    assert!(src.starts_with("https://maps.example.org/tiles/"), "{src}");
    drop(app);

    // No public URL: the Host, checked; X-Forwarded-* ignored unless trusted.
    let app = app_with(dir.path(), None, false);
    let (r, url) = tiles_url(&app, &hostile).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        url, "http://evil.example/tiles/risk_points/{z}/{x}/{y}.mvt",
        "Host is the origin asked for; the proto is not taken"
    );
    assert!(vary(&r.headers).contains("host"), "{}", vary(&r.headers));
    // An absolute-form target names the host instead of Host (RFC 9112 §3.2.2), under
    // the same syntax.
    let r = send(
        &app,
        "GET",
        "http://maps.example:8080/tiles/risk_points.json",
        &[("host", "other.example")],
        None,
    )
    .await;
    let url = r.body["tiles"][0].as_str().unwrap();
    assert!(url.starts_with("http://maps.example:8080/tiles/"), "{url}");
    let r = send(
        &app,
        "GET",
        "http://user@maps.example/tiles/risk_points.json",
        &[("host", "maps.example")],
        None,
    )
    .await;
    assert_json_error(&r, StatusCode::BAD_REQUEST, "user info in the target");
    assert!(
        !vary(&r.headers).contains("forwarded"),
        "{}",
        vary(&r.headers)
    );
    let (_, url) = tiles_url(
        &app,
        &[
            ("host", "maps.example:8080"),
            ("x-forwarded-host", "evil.example"),
        ],
    )
    .await;
    assert!(url.starts_with("http://maps.example:8080/"), "{url}");
    for bad in [
        "evil.example/<script>",
        "evil.example\"><img src=x>",
        "javascript:alert(1)",
        "user@evil.example",
        "evil.example:99999",
        "evil.example, other.example",
    ] {
        let r = send(
            &app,
            "GET",
            "/tiles/risk_points.json",
            &[("host", bad)],
            None,
        )
        .await;
        assert_json_error(&r, StatusCode::BAD_REQUEST, bad);
        let r = send(&app, "GET", "/styles/riskmap.json", &[("host", bad)], None).await;
        assert_json_error(&r, StatusCode::BAD_REQUEST, bad);
    }
    drop(app);

    // Behind a trusted proxy: its X-Forwarded-Host and -Proto, held to the same
    // syntax; the answer varies on them.
    let app = app_with(dir.path(), None, true);
    let (r, url) = tiles_url(
        &app,
        &[
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-host", "maps.example.org"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(
        url,
        "https://maps.example.org/tiles/risk_points/{z}/{x}/{y}.mvt"
    );
    assert!(
        vary(&r.headers).contains("x-forwarded-host"),
        "{}",
        vary(&r.headers)
    );
    for (name, bad) in [
        ("x-forwarded-proto", "javascript"),
        ("x-forwarded-proto", "https, http"),
        ("x-forwarded-host", "evil.example/x"),
        ("x-forwarded-host", "a.example, b.example"),
    ] {
        let r = send(
            &app,
            "GET",
            "/tiles/risk_points.json",
            &[("host", "maps.example"), (name, bad)],
            None,
        )
        .await;
        assert_json_error(&r, StatusCode::BAD_REQUEST, bad);
    }
}

fn audit_roles(dir: &Path) -> Vec<(String, String, Option<String>)> {
    let c = rusqlite::Connection::open(store_path(dir)).unwrap();
    let mut s = c
        .prepare("SELECT action, actor, role FROM riskmap_audit ORDER BY seq")
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn audit_rows_name_the_role_of_the_key_in_a_column() {
    let dir = tempfile::tempdir().unwrap();
    let (app, key) = with_r1(dir.path()).await;
    let admin = app
        .store()
        .add_key("test", Role::Admin, "Zhang")
        .unwrap()
        .secret;
    let r = patch_level(&app, &format!("Bearer {admin}"), None, "I").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = patch_level(&app, &format!("Bearer {key}"), None, "II").await;
    assert_eq!(r.status, StatusCode::OK);
    let rows = audit_roles(dir.path());
    let edits: Vec<(&str, Option<&str>)> = rows
        .iter()
        .filter(|(a, _, _)| a == "create" || a == "patch")
        .map(|(a, _, r)| (a.as_str(), r.as_deref()))
        .collect();
    assert_eq!(
        edits,
        [
            ("create", Some("planner")),
            ("patch", Some("admin")),
            ("patch", Some("planner"))
        ]
    );
    // Rows of the command line have no role.
    assert!(
        rows.iter()
            .filter(|(a, _, _)| a == "key_add")
            .all(|(_, actor, role)| actor == "test" && role.is_none())
    );
    let recent = app.store().recent_audit(1).unwrap();
    assert_eq!(recent[0].2.role.as_deref(), Some("planner"));
    drop(app);

    // A store written before the column (schema version 1) is migrated when opened
    // (to the current version 3): the column is added and earlier rows of keys get
    // their key's role, and the table of version 3 is created.
    {
        let c = rusqlite::Connection::open(store_path(dir.path())).unwrap();
        c.execute_batch(
            "ALTER TABLE riskmap_audit DROP COLUMN role;
             DROP TABLE riskmap_derived;
             UPDATE riskmap_meta SET value = '1' WHERE key = 'schema_version';",
        )
        .unwrap();
    }
    let app = open_app(dir.path());
    let version: String = rusqlite::Connection::open(store_path(dir.path()))
        .unwrap()
        .query_row(
            "SELECT value FROM riskmap_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, riskmap::store::SCHEMA_VERSION);
    let migrated = audit_roles(dir.path());
    assert_eq!(migrated, rows, "the migration gives the same roles");
    let r = patch_level(&app, &format!("Bearer {admin}"), None, "IV").await;
    assert_eq!(r.status, StatusCode::OK);
    let last = audit_roles(dir.path()).pop().unwrap();
    assert_eq!(
        (last.0.as_str(), last.2.as_deref()),
        ("patch", Some("admin"))
    );
}
