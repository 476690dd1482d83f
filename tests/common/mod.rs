//! Shared set-up for the integration tests: layer files from the repository, stores
//! in temporary directories, the `riskmap` binary, and small feature builders.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // tests panic on failure by design

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use riskmap::app::{App, OpenOptions, STORE_FILE};
use riskmap::config::Config;
use riskmap::model::LayerDef;
use riskmap::store::{OpenMode, Store};
use serde_json::{Value, json};

pub fn layers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("layers")
}

pub fn config() -> Config {
    Config::load(&layers_dir()).expect("the repository's layer files are valid")
}

pub fn layer(name: &str) -> Arc<LayerDef> {
    config().layer(name).expect("layer exists").clone()
}

pub fn store_path(dir: &Path) -> PathBuf {
    dir.join(STORE_FILE)
}

/// Opens (creating) the store in `dir` with the repository's layers.
pub fn open_store(dir: &Path) -> Store {
    Store::open(
        &store_path(dir),
        OpenMode::CreateIfMissing,
        &config().layers,
    )
    .expect("store opens")
}

/// Opens the catalogue on `dir` without the demo.
pub fn open_app(dir: &Path) -> Arc<App> {
    Arc::new(
        App::open(
            config(),
            dir,
            OpenOptions {
                demo: false,
                public_reads: true,
                ..Default::default()
            },
        )
        .expect("app opens"),
    )
}

/// Runs the `riskmap` binary with the repository's layer files.
pub fn riskmap(args: &[&str]) -> Output {
    // `import` and `keys` never create a store (a typo'd --data must not): tests that
    // start from an empty directory create it first, empty, as an operator would.
    if matches!(args.first(), Some(&"import") | Some(&"keys")) {
        if let Some(i) = args.iter().position(|a| *a == "--data") {
            let dir = std::path::Path::new(args[i + 1]);
            if !dir.join("riskmap.gpkg").exists() {
                let o = riskmap_raw(&["init", "--data", args[i + 1]]);
                assert!(o.status.success(), "init: {}", text(&o.stderr));
            }
        }
    }
    riskmap_raw(args)
}

/// The binary, run as given.
pub fn riskmap_raw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_riskmap"))
        .args(args)
        .arg("--layers")
        .arg(layers_dir())
        .env("RISKMAP_LOG", "warn")
        .output()
        .expect("the binary runs")
}

pub fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// A valid risk point as GeoJSON.
pub fn risk_point(id: &str, lon: f64, lat: f64, level: &str) -> Value {
    json!({
        "type": "Feature",
        "id": id,
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": {"id": id, "name": format!("point {id}"), "category": "landslide", "level": level, "district": "Yuzhong"}
    })
}

pub fn collection(features: Vec<Value>) -> String {
    json!({"type": "FeatureCollection", "features": features}).to_string()
}

/// Counts rows of a layer table straight from SQLite (not through riskmap).
pub fn sqlite_count(dir: &Path, table: &str) -> i64 {
    let c = rusqlite::Connection::open(store_path(dir)).expect("sqlite opens");
    c.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
        r.get(0)
    })
    .expect("count")
}

pub fn sqlite_audit_count(dir: &Path, action: &str) -> i64 {
    let c = rusqlite::Connection::open(store_path(dir)).expect("sqlite opens");
    c.query_row(
        "SELECT count(*) FROM riskmap_audit WHERE action = ?1",
        [action],
        |r| r.get(0),
    )
    .expect("count")
}

/// Writes sensor types `ids` into the store in `dir` (water level, yellow above 2 m,
/// red above 3 m): a sensor names its type, so tests load types before sensors.
pub fn store_sensor_types(dir: &Path, ids: impl IntoIterator<Item = u32>) {
    let store = open_store(dir);
    let mut csv = String::from("type_id,family,name,unit,warn_above,alarm_above\n");
    for i in ids {
        csv += &format!("{i},water_level,water_level_model_{i},m,2,3\n");
    }
    let types = riskmap::alerts::sensor_types::parse_csv(csv.as_bytes()).expect("types parse");
    store
        .write(|tx| {
            for t in &types {
                tx.put_sensor_type(t, "test")?;
            }
            tx.commit()
        })
        .expect("types written");
}

/// Imports `file` into `layer` of the store in `dir` with the `riskmap` binary, as
/// another process would; panics with the importer's message if it fails.
pub fn cli_import(dir: &Path, layer: &str, file: &Path) {
    let o = riskmap(&[
        "import",
        "--data",
        dir.to_str().unwrap(),
        "--layer",
        layer,
        file.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "import of {} into {layer}: {}",
        file.display(),
        text(&o.stderr)
    );
}

/// One request through the router (no socket): status, headers and body bytes.
pub async fn http(
    app: &Arc<App>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (axum::http::StatusCode, axum::http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body.map_or_else(axum::body::Body::empty, axum::body::Body::from))
        .unwrap();
    let resp = riskmap::api::router(app.clone())
        .oneshot(req)
        .await
        .unwrap();
    let (status, h) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, h, bytes.to_vec())
}

/// A GET through the router: status and body bytes (identity encoding).
pub async fn http_get(app: &Arc<App>, uri: &str) -> (axum::http::StatusCode, Vec<u8>) {
    let (status, _, body) = http(app, "GET", uri, &[], None).await;
    (status, body)
}

/// A GET of a JSON resource through the router.
pub async fn http_json(app: &Arc<App>, uri: &str) -> Value {
    let (status, body) = http_get(app, uri).await;
    assert_eq!(status, axum::http::StatusCode::OK, "GET {uri}");
    serde_json::from_slice(&body).unwrap()
}

/// Adds a GeoJSON feature to `layer` through the catalogue, as the command line would
/// (actor `test`); panics if it is refused.
pub fn create(app: &App, layer: &str, doc: &Value) {
    let def = app.layer(layer).expect("layer exists").def.clone();
    let feature = riskmap::model::Feature::from_geojson(&def, doc).expect("a valid feature");
    app.create(
        riskmap::app::EditContext {
            actor: "test",
            ..Default::default()
        },
        layer,
        feature,
    )
    .expect("created");
}
