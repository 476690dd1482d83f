//! Vector tiles: decoded with an independent, strict reader (geozero's MVT reader,
//! which refuses wrong winding) and checked against brute force over the index; HTTP
//! behaviour; and freshness after edits and imports.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::*;
use geo::CoordsIter;
use geo_types::Geometry;
use geozero::mvt::{Message, Tile};
use riskmap::app::App;
use riskmap::model::Role;
use riskmap::tiles::TileCoord;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A decoded feature: id, tags (as JSON values) and geometry in tile units.
#[derive(Debug, Clone)]
struct Decoded {
    id: Option<u64>,
    tags: HashMap<String, Value>,
    geom: Geometry,
}

/// Decodes an MVT strictly: every geometry through geozero (wrong winding, bad
/// commands are errors), tags resolved against the layer's keys and values.
fn decode(bytes: &[u8]) -> HashMap<String, Vec<Decoded>> {
    let tile = Tile::decode(bytes).expect("a valid protobuf tile");
    let mut out = HashMap::new();
    for layer in tile.layers {
        assert_eq!(layer.version, 2, "MVT 2");
        assert_eq!(layer.extent, Some(4096));
        let mut features = Vec::new();
        for f in &layer.features {
            let mut w = geozero::geo_types::GeoWriter::new();
            geozero::mvt::process_geom(f, &mut w)
                .expect("geozero accepts the geometry (winding, commands)");
            let geom = w.take_geometry().expect("a geometry");
            if matches!(geom, Geometry::Polygon(_) | Geometry::MultiPolygon(_)) {
                // geozero reads a positive ring as a new exterior and a negative one as
                // a hole of the last: a hole wound the wrong way comes out as a polygon
                // inside another, which validation refuses, as it refuses rings that
                // cross or touch (MVT 2.1, 4.3.4.4).
                use geo::Validation;
                if let Err(e) = geom.check_validation() {
                    panic!("{} feature {:?}: invalid polygon: {e}", layer.name, f.id);
                }
            }
            let mut tags = HashMap::new();
            for pair in f.tags.chunks(2) {
                let key = layer.keys[pair[0] as usize].clone();
                let v = &layer.values[pair[1] as usize];
                let value = if let Some(s) = &v.string_value {
                    json!(s)
                } else if let Some(i) = v.int_value {
                    json!(i)
                } else if let Some(d) = v.double_value {
                    json!(d)
                } else if let Some(b) = v.bool_value {
                    json!(b)
                } else {
                    panic!("unexpected value type {v:?}")
                };
                assert!(tags.insert(key, value).is_none(), "repeated key");
            }
            features.push(Decoded {
                id: f.id,
                tags,
                geom,
            });
        }
        assert!(!features.is_empty(), "empty layers are not written");
        out.insert(layer.name.clone(), features);
    }
    out
}

async fn get(
    app: &Arc<App>,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    http(app, "GET", uri, headers, None).await
}

/// A tile's MVT bytes over HTTP (gzip on the wire), or empty for 204.
async fn tile(app: &Arc<App>, layers: &str, t: TileCoord) -> Vec<u8> {
    let (status, h, body) = get(
        app,
        &format!("/tiles/{layers}/{}/{}/{}.mvt", t.z, t.x, t.y),
        &[("accept-encoding", "gzip")],
    )
    .await;
    match status {
        StatusCode::NO_CONTENT => Vec::new(),
        StatusCode::OK => {
            assert_eq!(h[header::CONTENT_ENCODING], "gzip");
            assert_eq!(
                h[header::CONTENT_TYPE],
                "application/vnd.mapbox-vector-tile"
            );
            use std::io::Read;
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut raw)
                .unwrap();
            assert!(raw.len() <= 500_000, "tile {t:?} is {} bytes", raw.len());
            raw
        }
        s => panic!("{t:?}: {s}"),
    }
}

/// Tile position of a lon/lat, computed here independently of riskmap (the usual
/// slippy-map formula): fractional tile units at zoom z.
fn slippy(lon: f64, lat: f64, z: u8) -> (f64, f64) {
    let n = (1u64 << z) as f64;
    let x = (lon + 180.0) / 360.0 * n;
    let y = (1.0 - lat.to_radians().tan().asinh() / std::f64::consts::PI) / 2.0 * n;
    (x, y)
}

fn demo_app() -> (tempfile::TempDir, Arc<App>) {
    demo_app_with(|_, text| text)
}

/// The demo with the repository's layer files, each passed through `edit` first.
fn demo_app_with(edit: impl Fn(&str, String) -> String) -> (tempfile::TempDir, Arc<App>) {
    let dir = tempfile::tempdir().unwrap();
    let layers = dir.path().join("layers");
    std::fs::create_dir(&layers).unwrap();
    for f in std::fs::read_dir(layers_dir()).unwrap() {
        let f = f.unwrap().path();
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        std::fs::write(
            layers.join(&name),
            edit(&name, std::fs::read_to_string(&f).unwrap()),
        )
        .unwrap();
    }
    let cfg = riskmap::config::Config::load(&layers).unwrap();
    let app = Arc::new(App::open(cfg, dir.path(), riskmap::app::OpenOptions::default()).unwrap());
    (dir, app)
}

/// Tiles where people look: around risk points, zooms 0-18 (like tile_paths.py).
fn sample_tiles(app: &App, n: usize) -> Vec<TileCoord> {
    let l = app.layer("risk_points").unwrap();
    let idx = l.index.read();
    let slots: Vec<u32> = idx.slots().collect();
    (0..n)
        .map(|i| {
            let s = slots[(i * 7919) % slots.len()];
            let c = match idx.geometry(s) {
                riskmap::index::GeomRef::Point(c) => c,
                _ => unreachable!(),
            };
            let z = [0u8, 3, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18][i % 14];
            TileCoord::of_lonlat(c.x, c.y, z).unwrap()
        })
        .collect()
}

/// How a point layer's tile was drawn.
#[derive(Debug, PartialEq)]
enum Mode {
    Absent,
    Raw,
    Clustered,
}

/// Checks one point layer of a decoded tile against brute force over the index:
/// - raw: every point inside the tile is drawn, within a unit of its position, and
///   nothing clearly inside is drawn that is not in the tile;
/// - clustered: cell by cell (the layer's cluster cell size), the drawn count equals
///   the points in that cell and a cluster's level is the most severe among them.
fn check_point_layer(
    app: &App,
    name: &str,
    t: TileCoord,
    layers: &HashMap<String, Vec<Decoded>>,
) -> Mode {
    let l = app.layer(name).unwrap();
    if t.z < l.def.minzoom {
        assert!(
            !layers.contains_key(name),
            "{name} below its minzoom at {t:?}"
        );
        return Mode::Absent;
    }
    let cell = l.def.tiles.cluster_cell as f64;
    let rank_prop = l.def.tiles.cluster_rank;
    let idx = l.index.read();
    // Brute force: every point of the layer, with the independent slippy-map formula.
    let mut want: HashMap<String, (f64, f64, Option<String>)> = HashMap::new();
    for s in idx.slots() {
        let riskmap::index::GeomRef::Point(c) = idx.geometry(s) else {
            unreachable!()
        };
        let (x, y) = slippy(c.x, c.y, t.z);
        if x.floor() as u32 == t.x && y.floor() as u32 == t.y {
            let level = rank_prop.and_then(|p| match idx.value(s, p) {
                riskmap::model::ValueRef::Text(v) => Some(v.to_string()),
                _ => None,
            });
            want.insert(
                idx.id(s).to_string(),
                ((x - t.x as f64) * 4096.0, (y - t.y as f64) * 4096.0, level),
            );
        }
    }
    let got = layers.get(name).cloned().unwrap_or_default();
    for f in &got {
        // Points carry their store fid as MVT id; clusters have none.
        assert_eq!(
            f.id.is_some(),
            !f.tags.contains_key("cluster"),
            "{name} at {t:?}: {f:?}"
        );
    }
    let pos = |f: &Decoded| f.geom.coords_iter().next().unwrap();
    if !got.iter().any(|f| f.tags.contains_key("cluster")) {
        let by_id: HashMap<&str, &Decoded> = got
            .iter()
            .map(|f| (f.tags["id"].as_str().unwrap(), f))
            .collect();
        for (id, (wx, wy, _)) in &want {
            let f = by_id
                .get(id.as_str())
                .unwrap_or_else(|| panic!("{name} {id} missing at {t:?}"));
            let c = pos(f);
            assert!(
                (c.x - wx).abs() <= 1.0 && (c.y - wy).abs() <= 1.0,
                "{name} {id} at {t:?}: ({}, {}) vs ({wx}, {wy})",
                c.x,
                c.y
            );
        }
        for f in &got {
            let c = pos(f);
            if (1.0..4095.0).contains(&c.x) && (1.0..4095.0).contains(&c.y) {
                assert!(
                    want.contains_key(f.tags["id"].as_str().unwrap()),
                    "{name} at {t:?}: {:?} drawn inside but not in the tile",
                    f.tags["id"]
                );
            }
        }
        return if got.is_empty() {
            Mode::Absent
        } else {
            Mode::Raw
        };
    }
    // Clustered: expected count and most severe level per cell.
    let levels = ["I", "II", "III", "IV"];
    let mut cells: HashMap<(i64, i64), (i64, Option<usize>)> = HashMap::new();
    for (x, y, level) in want.values() {
        let e = cells
            .entry(((x / cell).floor() as i64, (y / cell).floor() as i64))
            .or_insert((0, None));
        e.0 += 1;
        if let Some(r) = level
            .as_deref()
            .and_then(|l| levels.iter().position(|v| *v == l))
        {
            e.1 = Some(e.1.map_or(r, |o: usize| o.min(r)));
        }
    }
    let mut seen: HashMap<(i64, i64), i64> = HashMap::new();
    for f in &got {
        let c = pos(f);
        assert!(
            (0.0..4096.0).contains(&c.x) && (0.0..4096.0).contains(&c.y),
            "{name} at {t:?}: clustered tiles hold only the tile's own points"
        );
    }
    // A cell of one point shows the point itself: placed by its id.
    for f in got.iter().filter(|f| !f.tags.contains_key("cluster")) {
        let id = f.tags["id"].as_str().unwrap();
        let (x, y, _) = want
            .get(id)
            .unwrap_or_else(|| panic!("{name} at {t:?}: {id} is not in the tile"));
        let key = ((x / cell).floor() as i64, (y / cell).floor() as i64);
        assert_eq!(
            cells[&key].0, 1,
            "{name} at {t:?}: {id} shown alone in a cell of {}",
            cells[&key].0
        );
        assert!(
            seen.insert(key, 1).is_none(),
            "{name} at {t:?}: cell {key:?} drawn twice"
        );
    }
    // Clusters: at their centroid, which quantisation may move half a unit across a
    // cell edge (the neighbour with the same count is then taken).
    for f in got.iter().filter(|f| f.tags.contains_key("cluster")) {
        let c = pos(f);
        let count = f.tags["count"].as_i64().unwrap();
        let options = [
            (c.x, c.y),
            (c.x - 0.5, c.y),
            (c.x + 0.5, c.y),
            (c.x, c.y - 0.5),
            (c.x, c.y + 0.5),
        ];
        let key = options
            .iter()
            .map(|(x, y)| ((x / cell).floor() as i64, (y / cell).floor() as i64))
            .find(|k| cells.get(k).is_some_and(|e| e.0 == count) && !seen.contains_key(k))
            .unwrap_or_else(|| {
                panic!("{name} at {t:?}: a cluster of {count} at {c:?} matches no cell")
            });
        seen.insert(key, count);
        if let Some(r) = cells[&key].1 {
            assert_eq!(
                f.tags["level"], levels[r],
                "{name} at {t:?}, cell {key:?}: the most severe level"
            );
        }
    }
    assert_eq!(
        seen.len(),
        cells.len(),
        "{name} at {t:?}: every non-empty cell is drawn"
    );
    Mode::Clustered
}

#[tokio::test]
async fn point_counts_and_cluster_levels_equal_brute_force_and_positions_are_within_a_pixel() {
    // Low thresholds, so that the demo exercises raw points, clusters from the
    // pyramid and clusters binned per request.
    let (_dir, app) = demo_app_with(|_, text| text.replace("max_points = 1000", "max_points = 60"));
    let (mut clustered, mut raw) = (std::collections::BTreeSet::new(), 0);
    for t in sample_tiles(&app, 140) {
        let layers = decode(&tile(&app, "boundary,rivers,pipelines,risk_points,sensors", t).await);
        for name in ["risk_points", "sensors"] {
            match check_point_layer(&app, name, t, &layers) {
                Mode::Clustered => {
                    clustered.insert((name, t.z));
                }
                Mode::Raw => raw += 1,
                Mode::Absent => {}
            }
        }
    }
    let deep = riskmap::index::PYRAMID_MAX_LEVEL;
    assert!(raw > 20, "raw tiles: {raw}");
    let cell_zoom =
        |n: &str| (4096 / app.layer(n).unwrap().def.tiles.cluster_cell).trailing_zeros() as u8;
    assert!(
        clustered
            .iter()
            .any(|&(n, z)| n == "risk_points" && z + cell_zoom(n) <= deep),
        "pyramid clusters: {clustered:?}"
    );
    assert!(
        clustered.iter().any(|&(n, z)| z + cell_zoom(n) > deep),
        "binned clusters: {clustered:?}"
    );
    assert!(
        clustered.iter().any(|&(n, _)| n == "sensors"),
        "sensor clusters: {clustered:?}"
    );
}

#[tokio::test]
async fn when_the_budget_cannot_hold_a_tiles_own_points_they_are_clustered() {
    // Sensors with room for a few dozen points per tile but no point-count limit.
    let (_dir, app) = demo_app_with(|name, text| {
        if name == "sensors.toml" {
            text.replace(
                "max_points = 1000",
                "max_points = 100000\nmax_bytes = 16000",
            )
        } else {
            text
        }
    });
    let mut fell_back = 0;
    for t in sample_tiles(&app, 140).into_iter().filter(|t| t.z >= 12) {
        let layers = decode(&tile(&app, "sensors", t).await);
        if check_point_layer(&app, "sensors", t, &layers) == Mode::Clustered {
            fell_back += 1;
        }
    }
    assert!(fell_back > 5, "{fell_back}");
}

#[tokio::test]
async fn multipoint_layers_are_drawn() {
    let (dir, _) = demo_app();
    let layers = dir.path().join("layers");
    std::fs::write(layers.join("wells.toml"), "name = \"wells\"\ntitle = \"Wells\"\nkind = \"reference\"\ngeometry = \"multipoint\"\nid_property = \"id\"\n").unwrap();
    let cfg = riskmap::config::Config::load(&layers).unwrap();
    let app = Arc::new(App::open(cfg, dir.path(), riskmap::app::OpenOptions::default()).unwrap());
    let file = dir.path().join("wells.geojson");
    let f = json!({"type":"Feature","id":"W1","geometry":{"type":"MultiPoint","coordinates":[[106.5,29.5],[106.51,29.51],[106.5,86.0]]},"properties":{}});
    std::fs::write(&file, collection(vec![f])).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_riskmap"))
        .args([
            "import",
            "--data",
            dir.path().to_str().unwrap(),
            "--layers",
            layers.to_str().unwrap(),
            "--layer",
            "wells",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    app.follow_changes().unwrap();
    let t = TileCoord::of_lonlat(106.5, 29.5, 10).unwrap();
    let decoded = decode(&tile(&app, "wells", t).await);
    let Geometry::MultiPoint(m) = &decoded["wells"][0].geom else {
        panic!("{:?}", decoded["wells"][0].geom)
    };
    assert_eq!(m.0.len(), 2, "the point beyond 85° is on no tile");
}

#[tokio::test]
async fn polygons_are_wound_as_mvt_requires_and_lines_split_where_they_leave() {
    let (dir, app) = demo_app();
    // The municipality outline, clipped at several zooms, decodes strictly.
    for t in sample_tiles(&app, 60) {
        let layers = decode(&tile(&app, "boundary", t).await);
        if let Some(b) = layers.get("boundary") {
            assert!(matches!(
                b[0].geom,
                Geometry::Polygon(_) | Geometry::MultiPolygon(_)
            ));
        }
    }
    // A square with a square hole, across a tile's corner: one polygon with one
    // hole, valid, wound exterior positive and hole negative (checked in `decode`).
    let t = TileCoord {
        z: 12,
        x: 3260,
        y: 1695,
    };
    let [x0, y0, x1, y1] = t.world_bounds();
    let at =
        |fx: f64, fy: f64| riskmap::index::from_world([x0 + (x1 - x0) * fx, y0 + (y1 - y0) * fy]);
    let ring = |a: f64, b: f64| -> Vec<[f64; 2]> {
        [(a, a), (b, a), (b, b), (a, b), (a, a)]
            .iter()
            .map(|&(x, y)| {
                let c = at(x, y);
                [c.x, c.y]
            })
            .collect()
    };
    let mut hole = ring(0.75, 0.95);
    hole.reverse();
    let framed = json!({"type":"Feature","id":"frame","geometry":{"type":"Polygon","coordinates":[ring(0.6, 1.4), hole]},"properties":{"name":"frame"}});
    let file = dir.path().join("frame.geojson");
    std::fs::write(&file, collection(vec![framed])).unwrap();
    cli_import(dir.path(), "boundary", &file);
    app.follow_changes().unwrap();
    let layers = decode(&tile(&app, "boundary", t).await);
    let frame = layers["boundary"]
        .iter()
        .find(|f| f.tags["id"] == "frame")
        .expect("the framed square is drawn");
    let Geometry::Polygon(p) = &frame.geom else {
        panic!("one polygon, not {:?}", frame.geom)
    };
    assert_eq!(p.interiors().len(), 1, "{p:?}");
    // A U-shaped river leaves the tile and comes back: two parts, inside the buffer.
    let u: Vec<[f64; 2]> = [(0.2, 0.3), (1.5, 0.3), (1.5, 0.7), (0.2, 0.7)]
        .iter()
        .map(|&(a, b)| {
            let c = at(a, b);
            [c.x, c.y]
        })
        .collect();
    let file = dir.path().join("u.geojson");
    std::fs::write(&file, collection(vec![json!({"type":"Feature","id":"U","geometry":{"type":"LineString","coordinates":u},"properties":{"wdb_level":3}})])).unwrap();
    cli_import(dir.path(), "rivers", &file);
    app.follow_changes().unwrap();
    let layers = decode(&tile(&app, "rivers", t).await);
    let u = layers["rivers"]
        .iter()
        .find(|f| f.tags["id"] == "U")
        .unwrap();
    let Geometry::MultiLineString(parts) = &u.geom else {
        panic!("{:?}", u.geom)
    };
    assert_eq!(parts.0.len(), 2);
    for c in u.geom.coords_iter() {
        assert!(
            c.x >= -128.0 && c.x <= 4096.0 + 128.0 && c.y >= -128.0 && c.y <= 4096.0 + 128.0,
            "{c:?}"
        );
    }
}

#[tokio::test]
async fn lines_over_budget_keep_the_widest() {
    // The demo's pipelines with a small byte budget: a tile must keep the widest lines.
    let (_dir, app) = demo_app_with(|name, text| {
        if name == "pipelines.toml" {
            text.replace("max_bytes = 64000", "max_bytes = 4000")
        } else {
            text
        }
    });
    let t = TileCoord {
        z: 9,
        x: 407,
        y: 211,
    };
    let all = app.layers();
    let states = riskmap::tiles::resolve("pipelines", &all).unwrap();
    let drawn = riskmap::tiles::render(&states, t);
    let stats = drawn.stats[0].1;
    assert!(stats.truncated, "the budget must bite here: {stats:?}");
    assert!(drawn.bytes.len() <= 4000, "{} bytes", drawn.bytes.len());
    let decoded = decode(&drawn.bytes);
    let kept: std::collections::HashSet<&str> = decoded["pipelines"]
        .iter()
        .map(|f| f.tags["id"].as_str().unwrap())
        .collect();
    let l = app.layer("pipelines").unwrap();
    let idx = l.index.read();
    let diameter = |s: u32| match idx.value(s, 2) {
        riskmap::model::ValueRef::Int(d) => d,
        _ => 0,
    };
    let mut in_tile = Vec::new();
    idx.for_each_in_bbox(&t.lonlat_bbox(0), |s| in_tile.push(s));
    let min_kept = in_tile
        .iter()
        .filter(|&&s| kept.contains(idx.id(s)))
        .map(|&s| diameter(s))
        .min()
        .unwrap();
    let max_left = in_tile
        .iter()
        .filter(|&&s| !kept.contains(idx.id(s)))
        .map(|&s| diameter(s))
        .max()
        .unwrap();
    assert!(
        min_kept >= max_left,
        "kept a {min_kept} mm line while leaving out a {max_left} mm one"
    );
}

#[tokio::test]
async fn tile_requests_are_validated_and_cached_responses_revalidate() {
    let (_dir, app) = demo_app();
    for (uri, status) in [
        ("/tiles/risk_points/31/0/0.mvt", StatusCode::BAD_REQUEST),
        ("/tiles/risk_points/2/4/0.mvt", StatusCode::BAD_REQUEST),
        ("/tiles/risk_points/2/0/4.mvt", StatusCode::BAD_REQUEST),
        ("/tiles/risk_points/-1/0/0.mvt", StatusCode::BAD_REQUEST),
        ("/tiles/risk_points/a/0/0.mvt", StatusCode::BAD_REQUEST),
        (
            "/tiles/risk_points/99999999999999999999/0/0.mvt",
            StatusCode::BAD_REQUEST,
        ),
        ("/tiles/risk_points/1/0/0", StatusCode::NOT_FOUND),
        ("/tiles/wells/1/0/0.mvt", StatusCode::NOT_FOUND),
        (
            "/tiles/risk_points,risk_points/1/0/0.mvt",
            StatusCode::BAD_REQUEST,
        ),
        ("/tiles/risk_points,/1/0/0.mvt", StatusCode::BAD_REQUEST),
        ("/tiles/risk_points/3/0/0.mvt", StatusCode::NO_CONTENT),
    ] {
        let (s, h, body) = get(&app, uri, &[]).await;
        assert_eq!(s, status, "{uri}");
        if s.is_client_error() {
            assert_eq!(h[header::CONTENT_TYPE], "application/json", "{uri}");
            assert!(serde_json::from_slice::<Value>(&body).unwrap()["description"].is_string());
        }
    }
    let uri = "/tiles/risk_points,sensors/12/3260/1695.mvt";
    let (s, h, raw) = get(&app, uri, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h.get(header::CONTENT_ENCODING).is_none(),
        "no gzip unless asked"
    );
    assert_eq!(h[header::CACHE_CONTROL], "public, no-cache");
    decode(&raw);
    let etag = h[header::ETAG].to_str().unwrap().to_string();
    let (s, _, body) = get(&app, uri, &[("if-none-match", &etag)]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());

    // TileJSON describes the layers and points at the tiles.
    let (s, _, body) = get(
        &app,
        "/tiles/risk_points,pipelines.json",
        &[("host", "maps.example:8080")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let tj: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(tj["tilejson"], "3.0.0");
    assert_eq!(
        tj["tiles"][0],
        "http://maps.example:8080/tiles/risk_points,pipelines/{z}/{x}/{y}.mvt"
    );
    assert_eq!(tj["vector_layers"][0]["id"], "risk_points");
    assert_eq!(tj["vector_layers"][0]["fields"]["level"], "String");
    assert_eq!(tj["vector_layers"][1]["fields"]["diameter_mm"], "Number");
    assert_eq!(tj["bounds"].as_array().unwrap().len(), 4);
    assert!(tj["center"][0].as_f64().unwrap() > 105.0);
}

#[tokio::test]
async fn one_tile_reads_in_gdal() {
    let (dir, app) = demo_app();
    let bytes = tile(
        &app,
        "boundary,rivers,pipelines,risk_points,sensors",
        TileCoord {
            z: 12,
            x: 3260,
            y: 1695,
        },
    )
    .await;
    let path = dir.path().join("tile.mvt");
    std::fs::write(&path, &bytes).unwrap();
    let out = std::process::Command::new("ogrinfo")
        .args(["-ro", "-al", "-so", path.to_str().unwrap()])
        .output()
        .expect("ogrinfo (gdal-bin)");
    let s = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let decoded = decode(&bytes);
    assert!(
        decoded.len() >= 4,
        "the tile holds most layers: {decoded:?}"
    );
    // GDAL's summary, layer by layer: each layer's block names it, then its count.
    let mut counts = HashMap::new();
    let mut layer = None;
    for line in s.lines() {
        if let Some(name) = line.strip_prefix("Layer name: ") {
            layer = Some(name.trim().to_string());
        } else if let Some(n) = line.strip_prefix("Feature Count: ") {
            let l = layer.take().expect("a count follows its layer's name");
            counts.insert(l, n.trim().parse::<usize>().unwrap());
        }
    }
    let ours: HashMap<String, usize> = decoded.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    assert_eq!(counts, ours, "{s}");
}

/// Every tile at every zoom that holds `c` (with its neighbours, for the buffer).
fn tiles_around(c: geo_types::Coord) -> Vec<TileCoord> {
    let mut out = Vec::new();
    for z in 0..=18u8 {
        let t = TileCoord::of_lonlat(c.x, c.y, z).unwrap();
        let n = 1u32 << z;
        for dx in -1i64..=1 {
            for dy in -1i64..=1 {
                let (x, y) = (t.x as i64 + dx, t.y as i64 + dy);
                if x >= 0 && y >= 0 && x < n as i64 && y < n as i64 {
                    out.push(TileCoord {
                        z,
                        x: x as u32,
                        y: y as u32,
                    });
                }
            }
        }
    }
    out
}

/// Every served tile must equal one drawn now, without the cache.
async fn assert_fresh(app: &Arc<App>, layers: &str, tiles: &[TileCoord], what: &str) {
    for &t in tiles {
        let served = tile(app, layers, t).await;
        let all = app.layers();
        let states = riskmap::tiles::resolve(layers, &all).unwrap();
        let now = riskmap::tiles::render(&states, t).bytes;
        assert!(served == now, "{what}: tile {t:?} served stale content");
    }
}

#[tokio::test]
async fn after_an_edit_or_import_no_tile_shows_the_old_state() {
    // Low thresholds: the tiles around the edited point hold clusters at low zoom.
    let (dir, app) = demo_app_with(|_, text| text.replace("max_points = 1000", "max_points = 60"));
    let layers = "risk_points,sensors";
    let planner = app
        .store()
        .add_key("test", Role::Planner, "p")
        .unwrap()
        .secret;
    let l = app.layer("risk_points").unwrap();
    let (old, id) = {
        let idx = l.index.read();
        let s = idx.slot("R000100").unwrap();
        let riskmap::index::GeomRef::Point(c) = idx.geometry(s) else {
            unreachable!()
        };
        (c, idx.id(s).to_string())
    };
    let new = geo_types::Coord {
        x: old.x + 0.37,
        y: old.y - 0.21,
    };
    let mut all: Vec<TileCoord> = tiles_around(old);
    all.extend(tiles_around(new));
    // Warm the cache with the old state.
    for &t in &all {
        tile(&app, layers, t).await;
    }
    // Move and re-level it through the edit endpoint.
    let patch = json!({"geometry": {"type": "Point", "coordinates": [new.x, new.y]}, "properties": {"level": "I"}});
    let req = Request::builder()
        .method(Method::PATCH)
        .uri(format!("/collections/risk_points/items/{id}"))
        .header(header::AUTHORIZATION, format!("Bearer {planner}"))
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .body(Body::from(patch.to_string()))
        .unwrap();
    let r = riskmap::api::router(app.clone())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_fresh(&app, layers, &all, "after PATCH").await;
    // And every one of them still agrees with brute force (the count pyramid followed the move).
    for &t in &all {
        let decoded = decode(&tile(&app, layers, t).await);
        check_point_layer(&app, "risk_points", t, &decoded);
    }
    // At z16 the point is drawn at its new place with its new level, and gone from the old.
    let t_new = TileCoord::of_lonlat(new.x, new.y, 16).unwrap();
    let f = decode(&tile(&app, "risk_points", t_new).await)
        .remove("risk_points")
        .unwrap();
    assert!(
        f.iter()
            .any(|f| f.tags["id"] == id.as_str() && f.tags["level"] == "I")
    );
    let t_old = TileCoord::of_lonlat(old.x, old.y, 16).unwrap();
    let gone = decode(&tile(&app, "risk_points", t_old).await)
        .remove("risk_points")
        .unwrap_or_default();
    assert!(!gone.iter().any(|f| f.tags["id"] == id.as_str()));

    // A re-import (another process; the server follows the store's change feed) moves
    // it back and changes its level again.
    let mut f = risk_point(&id, old.x, old.y, "IV");
    f["properties"]["category"] = json!("landslide");
    let file = dir.path().join("again.geojson");
    std::fs::write(&file, collection(vec![f])).unwrap();
    cli_import(dir.path(), "risk_points", &file);
    // No explicit catch-up: the next tile request applies the import itself.

    assert_fresh(&app, layers, &all, "after re-import").await;

    // A delete, too: of its sensors first (a risk point its sensors name cannot go).
    let attached: Vec<String> = {
        let sensors = app.layer("sensors").unwrap();
        let idx = sensors.index.read();
        idx.slots()
            .filter(|&s| idx.value(s, 1) == riskmap::model::ValueRef::Text(&id))
            .map(|s| idx.id(s).to_string())
            .collect()
    };
    assert!(!attached.is_empty());
    for s in &attached {
        app.delete(Default::default(), "sensors", s).unwrap();
    }
    let req = Request::builder()
        .method(Method::DELETE)
        .uri(format!("/collections/risk_points/items/{id}"))
        .header(header::AUTHORIZATION, format!("Bearer {planner}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        riskmap::api::router(app.clone())
            .oneshot(req)
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_fresh(&app, layers, &all, "after DELETE").await;
}

#[tokio::test]
async fn the_map_page_its_style_and_maplibre_are_served_offline() {
    let (_dir, app) = demo_app();
    // Browsers get the page, API clients the landing JSON.
    let (s, h, body) = get(&app, "/", &[("accept", "text/html,application/xhtml+xml")]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("/vendor/maplibre-gl/maplibre-gl.css") && html.contains("/app.js"));
    assert!(!html.contains("https://"), "no CDN");
    let (_, h, body) = get(&app, "/", &[("accept", "application/json")]).await;
    assert_eq!(h[header::CONTENT_TYPE], "application/json");
    assert!(serde_json::from_slice::<Value>(&body).unwrap()["links"].is_array());
    for (uri, ct) in [
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
        ("/vendor/maplibre-gl/maplibre-gl.mjs", "text/javascript"),
        (
            "/vendor/maplibre-gl/maplibre-gl-worker.mjs",
            "text/javascript",
        ),
        ("/vendor/maplibre-gl/maplibre-gl.css", "text/css"),
    ] {
        let (s, h, body) = get(&app, uri, &[]).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
        assert!(
            h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ct),
            "{uri}"
        );
        assert!(!body.is_empty());
    }
    // Static files resolve by name only: traversal attempts find nothing.
    for uri in [
        "/vendor/maplibre-gl/..%2F..%2FCargo.toml",
        "/vendor/maplibre-gl/%2e%2e%2fapp.js",
        "/vendor/maplibre-gl/..%5Capp.js",
        "/vendor/maplibre-gl/app.js%00",
        "/vendor/maplibre-gl/%252e%252e%252fCargo.toml",
        "/styles/..%2Flayers%2Frisk_points.toml",
    ] {
        let (s, h, _) = get(&app, uri, &[]).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(h[header::CONTENT_TYPE], "application/json", "{uri}");
    }
    // The style points at our TileJSON with an absolute URL for the client's host.
    let (s, _, body) = get(
        &app,
        "/styles/riskmap.json",
        &[("host", "risk.example:9000")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let style: Value = serde_json::from_slice(&body).unwrap();
    let url = style["sources"]["riskmap"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.starts_with("http://risk.example:9000/tiles/"), "{url}");
    let (s, _, body) = get(
        &app,
        url.trim_start_matches("http://risk.example:9000"),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let tj: Value = serde_json::from_slice(&body).unwrap();
    let served: Vec<&str> = tj["vector_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    for layer in style["layers"].as_array().unwrap() {
        let Some(sl) = layer["source-layer"].as_str() else {
            continue;
        };
        if layer["source"] == "riskmap" {
            assert!(
                served.contains(&sl),
                "style layer {} uses {sl}, not in the tiles",
                layer["id"]
            );
            continue;
        }
        // A source of its own (the warnings, reloaded live by the page): absolute tile
        // URLs of that layer.
        let src = &style["sources"][layer["source"].as_str().unwrap()];
        let t = src["tiles"][0].as_str().unwrap();
        assert_eq!(
            t,
            format!("http://risk.example:9000/tiles/{sl}/{{z}}/{{x}}/{{y}}.mvt"),
            "style layer {}",
            layer["id"]
        );
        let (s, _, _) = get(&app, &format!("/tiles/{sl}/0/0/0.mvt"), &[]).await;
        assert!(s.is_success(), "style layer {}: {s}", layer["id"]);
    }
}

#[tokio::test]
async fn a_feature_that_collapses_in_a_tile_is_dropped_counted_and_the_tile_still_served() {
    let (dir, app) = demo_app();
    // A polygon 20 cm wide: at zoom 8 it quantises to nothing.
    let tiny = json!({"type":"Feature","id":"speck","geometry":{"type":"Polygon","coordinates":[[[106.5,29.5],[106.500002,29.5],[106.500002,29.500002],[106.5,29.5]]]},"properties":{"name":"speck"}});
    let file = dir.path().join("speck.geojson");
    std::fs::write(&file, collection(vec![tiny])).unwrap();
    cli_import(dir.path(), "boundary", &file);
    app.follow_changes().unwrap();
    let t = TileCoord::of_lonlat(106.5, 29.5, 8).unwrap();
    let all = app.layers();
    let states = riskmap::tiles::resolve("boundary", &all).unwrap();
    let drawn = riskmap::tiles::render(&states, t);
    assert_eq!(drawn.stats[0].1.dropped_degenerate, 1, "{:?}", drawn.stats);
    let layers = decode(&tile(&app, "boundary", t).await);
    assert_eq!(
        layers["boundary"].len(),
        1,
        "the municipality is still drawn"
    );
    assert_eq!(layers["boundary"][0].tags["id"], "chongqing");
    let (_, _, metrics) = get(&app, "/metrics", &[]).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains(
            "riskmap_tile_features_dropped_total{layer=\"boundary\",reason=\"degenerate\"}"
        ),
        "{metrics}"
    );
}

/// Distance in tile units from `p` to the polyline `line` (tile units).
fn distance_to_polyline(p: (f64, f64), line: &[(f64, f64)]) -> f64 {
    let mut best = f64::INFINITY;
    for w in line.windows(2) {
        let ((ax, ay), (bx, by)) = (w[0], w[1]);
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = dx * dx + dy * dy;
        let t = if len2 == 0.0 {
            0.0
        } else {
            (((p.0 - ax) * dx + (p.1 - ay) * dy) / len2).clamp(0.0, 1.0)
        };
        let (cx, cy) = (ax + t * dx, ay + t * dy);
        best = best.min(((p.0 - cx).powi(2) + (p.1 - cy).powi(2)).sqrt());
    }
    best
}

#[tokio::test]
async fn a_long_line_is_drawn_exactly_where_it_runs_in_every_tile() {
    // A river of 12,000 vertices (long lines are drawn stretch by stretch, only near
    // the tile): in every tile it crosses it is drawn, every drawn vertex lies on the
    // river (within the simplification tolerance and a unit of rounding), and every
    // vertex of the river inside the tile is near the drawing (no stretch missed).
    use rand::{Rng, SeedableRng};
    let (dir, app) = demo_app();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let (mut lon, mut lat) = (106.0, 29.5);
    let mut coords = Vec::with_capacity(12_000);
    for _ in 0..12_000 {
        lon += 0.0001;
        lat += rng.random_range(-0.0001..0.0001);
        coords.push([lon, lat]);
    }
    let file = dir.path().join("long.geojson");
    let feature = json!({"type":"Feature","id":"LONG","geometry":{"type":"LineString","coordinates":coords},"properties":{"wdb_level":2}});
    std::fs::write(&file, collection(vec![feature])).unwrap();
    cli_import(dir.path(), "rivers", &file);
    app.follow_changes().unwrap();
    let tol = app.layer("rivers").unwrap().def.tiles.simplify;
    let mut drawn_tiles = 0;
    for z in [9u8, 12, 15, 17] {
        let at_z: Vec<(f64, f64)> = coords.iter().map(|c| slippy(c[0], c[1], z)).collect();
        // Tiles along the river: those of every 500th vertex, and their neighbours.
        let mut tiles: Vec<(u32, u32)> = Vec::new();
        for p in at_z.iter().step_by(400) {
            for (dx, dy) in [(0i64, 0i64), (0, 1), (0, -1), (1, 0), (-1, 0)] {
                let t = ((p.0 as i64 + dx) as u32, (p.1 as i64 + dy) as u32);
                if !tiles.contains(&t) {
                    tiles.push(t);
                }
            }
        }
        for (x, y) in tiles {
            let t = TileCoord { z, x, y };
            // The river in this tile's units.
            let line: Vec<(f64, f64)> = at_z
                .iter()
                .map(|p| ((p.0 - x as f64) * 4096.0, (p.1 - y as f64) * 4096.0))
                .collect();
            let inside = |p: &(f64, f64)| p.0 > 0.0 && p.0 < 4096.0 && p.1 > 0.0 && p.1 < 4096.0;
            let crosses = line.iter().any(inside);
            let layers = decode(&tile(&app, "rivers", t).await);
            let drawn = layers
                .get("rivers")
                .and_then(|fs| fs.iter().find(|f| f.tags["id"] == "LONG"));
            let Some(drawn) = drawn else {
                assert!(
                    !crosses,
                    "{t:?}: the river runs through the tile but is not drawn"
                );
                continue;
            };
            drawn_tiles += 1;
            // Segments of the river near the tile (with its buffer), for the distances.
            let near: Vec<(f64, f64)> = line
                .iter()
                .copied()
                .filter(|p| p.0 > -600.0 && p.0 < 4696.0 && p.1 > -600.0 && p.1 < 4696.0)
                .collect();
            let slack = tol + 1.5;
            for c in drawn.geom.coords_iter() {
                let d = distance_to_polyline((c.x, c.y), &line);
                assert!(
                    d <= slack,
                    "{t:?}: drawn vertex {c:?} is {d} units off the river"
                );
            }
            let drawing: Vec<Vec<(f64, f64)>> = match &drawn.geom {
                Geometry::LineString(l) => vec![l.0.iter().map(|c| (c.x, c.y)).collect()],
                Geometry::MultiLineString(m) => {
                    m.0.iter()
                        .map(|l| l.0.iter().map(|c| (c.x, c.y)).collect())
                        .collect()
                }
                g => panic!("{t:?}: {g:?}"),
            };
            for p in near.iter().filter(|p| inside(p)) {
                let d = drawing
                    .iter()
                    .map(|l| distance_to_polyline(*p, l))
                    .fold(f64::INFINITY, f64::min);
                assert!(
                    d <= slack,
                    "{t:?}: river vertex {p:?} is {d} units from the drawing"
                );
            }
        }
    }
    assert!(drawn_tiles > 50, "only {drawn_tiles} tiles drew the river");
}
