//! The clip–simplify–encode pipeline: a geometry accepted by a line or polygon layer
//! is indexed (projection, vertex importance), then drawn into tiles at many zooms
//! (simplification, clipping, quantisation, orientation, MVT encoding).
//!
//! Properties of every drawn tile: it decodes strictly (geozero's MVT reader, which
//! refuses bad commands and wrong winding; polygons valid by `geo`'s rules), every
//! coordinate lies inside the buffered extent, tags point at existing keys and
//! values, the stats count what was written, and drawing again gives the same bytes.
//!
//! Inputs: the corpus (`corpus/geometry/*.json`, GeoJSON geometries), coordinate-level
//! mutations of it (jitter, special values, duplicated and removed vertices, zigzags,
//! scaling, moves to the antimeridian and the Mercator limit), and proptest-generated
//! lines, polygons with holes and multipolygons with a fixed seed.

use std::sync::Arc;

use geo::CoordsIter;
use geo_types::Geometry;
use geozero::mvt::{Message, Tile};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use riskmap::index::{LayerIndex, LayerState};
use riskmap::model::{Feature, LayerDef};
use riskmap::tiles::{EXTENT, TileCoord, render};
use serde_json::{Value, json};

use crate::common::layer;
use crate::engine::{self, Verdict, normalise};

/// What one decoded tile held.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Per layer: its name and its feature count.
    pub layers: Vec<(String, usize)>,
    pub polygons: usize,
    pub lines: usize,
    pub points: usize,
}

/// Decodes an MVT strictly and checks it: MVT 2, extent 4096, geometry accepted by
/// geozero, polygons valid, every coordinate within `buffer` units of the tile, tags
/// in range and in pairs.
pub fn decode_strict(bytes: &[u8], buffer: u32) -> Decoded {
    assert!(bytes.len() <= 500_000, "a tile of {} bytes", bytes.len());
    let tile = Tile::decode(bytes).expect("a valid protobuf tile");
    let (lo, hi) = (-(buffer as f64), EXTENT as f64 + buffer as f64);
    let mut out = Decoded::default();
    for layer in &tile.layers {
        assert_eq!(layer.version, 2, "MVT 2");
        assert_eq!(layer.extent, Some(EXTENT));
        assert!(!layer.features.is_empty(), "empty layers are not written");
        for f in &layer.features {
            assert!(f.tags.len() % 2 == 0, "tags come in pairs");
            for pair in f.tags.chunks(2) {
                assert!((pair[0] as usize) < layer.keys.len(), "tag key in range");
                assert!(
                    (pair[1] as usize) < layer.values.len(),
                    "tag value in range"
                );
            }
            let mut w = geozero::geo_types::GeoWriter::new();
            geozero::mvt::process_geom(f, &mut w).unwrap_or_else(|e| {
                panic!("{} feature {:?}: geozero refuses: {e}", layer.name, f.id)
            });
            let geom = w.take_geometry().expect("a geometry");
            for c in geom.coords_iter() {
                assert!(
                    c.x >= lo && c.x <= hi && c.y >= lo && c.y <= hi,
                    "{} feature {:?}: ({}, {}) outside the buffered extent {lo}..{hi}",
                    layer.name,
                    f.id,
                    c.x,
                    c.y
                );
            }
            match &geom {
                Geometry::Polygon(_) | Geometry::MultiPolygon(_) => {
                    use geo::Validation;
                    if let Err(e) = geom.check_validation() {
                        panic!("{} feature {:?}: invalid polygon: {e}", layer.name, f.id);
                    }
                    out.polygons += 1;
                }
                Geometry::LineString(l) => {
                    assert!(l.0.len() >= 2, "a line of {} points", l.0.len());
                    out.lines += 1;
                }
                Geometry::MultiLineString(m) => {
                    assert!(m.0.iter().all(|l| l.0.len() >= 2), "a line of < 2 points");
                    out.lines += 1;
                }
                Geometry::Point(_) | Geometry::MultiPoint(_) => out.points += 1,
                g => panic!("unexpected geometry {g:?}"),
            }
        }
        out.layers.push((layer.name.clone(), layer.features.len()));
    }
    out
}

/// The layers geometries go to, by GeoJSON type.
fn layers_for(ty: &str) -> &'static [&'static str] {
    match ty {
        "LineString" | "MultiLineString" => &["pipelines", "rivers"],
        "Polygon" | "MultiPolygon" => &["boundary"],
        _ => &["pipelines", "boundary"],
    }
}

fn properties(layer: &LayerDef, i: usize) -> Value {
    match layer.name.as_str() {
        "pipelines" => json!({"kind": "gas", "diameter_mm": (i * 397) % 10_001}),
        "rivers" => json!({"wdb_level": 1 + i % 11}),
        _ => json!({"name": format!("b{i}")}),
    }
}

/// Counts of drawn tiles, over a run.
#[derive(Debug, Default, Clone, Copy)]
struct Drawn {
    tiles: usize,
    empty: usize,
    polygons: usize,
    lines: usize,
}

/// Tiles to draw for `geoms`: the world tile, and at random zooms the tile holding a
/// random vertex, sometimes with a neighbour.
fn tiles_for(geoms: &[&Geometry], rng: &mut impl Rng, n: usize) -> Vec<TileCoord> {
    let coords: Vec<geo_types::Coord> = geoms.iter().flat_map(|g| g.coords_iter()).collect();
    let mut out = vec![TileCoord { z: 0, x: 0, y: 0 }];
    if coords.is_empty() {
        return out;
    }
    for _ in 0..n {
        let z = if rng.random_bool(0.3) {
            rng.random_range(14..=22)
        } else {
            rng.random_range(0..=22)
        };
        let c = coords[rng.random_range(0..coords.len())];
        if let Some(t) = TileCoord::of_lonlat(c.x, c.y, z) {
            out.push(t);
            if rng.random_bool(0.4) {
                let side = 1i64 << z;
                let nx = (t.x as i64 + rng.random_range(-1..=1)).rem_euclid(side);
                let ny = (t.y as i64 + rng.random_range(-1..=1)).clamp(0, side - 1);
                out.push(TileCoord {
                    z,
                    x: nx as u32,
                    y: ny as u32,
                });
            }
        }
    }
    out
}

/// Indexes `features` into a fresh layer and draws `tiles`, checking each.
fn draw_and_check(def: &Arc<LayerDef>, features: &[Feature], tiles: &[TileCoord]) -> Drawn {
    let mut idx = LayerIndex::new(def.clone());
    for (i, f) in features.iter().enumerate() {
        idx.upsert(i as i64 + 1, f);
    }
    let state = LayerState::new(idx);
    let mut d = Drawn::default();
    for &t in tiles {
        let r = render(&[&state], t);
        if r.bytes.is_empty() {
            d.empty += 1;
            assert!(
                r.stats
                    .iter()
                    .all(|(_, s)| s.features == 0 && s.clusters == 0),
                "{t:?}: nothing written but stats say {:?}",
                r.stats
            );
            continue;
        }
        let dec = decode_strict(&r.bytes, def.tiles.buffer);
        for (name, n) in &dec.layers {
            let s = r
                .stats
                .iter()
                .find(|(l, _)| l == name)
                .map(|(_, s)| *s)
                .unwrap_or_else(|| panic!("{t:?}: layer {name} has no stats"));
            assert_eq!(*n, s.features + s.clusters, "{t:?}: stats {s:?}");
        }
        let again = render(&[&state], t);
        assert!(again.bytes == r.bytes, "{t:?}: drawing twice differs");
        d.tiles += 1;
        d.polygons += dec.polygons;
        d.lines += dec.lines;
    }
    d
}

/// Validates a GeoJSON geometry as a feature of each layer its type may go to.
fn features_for(geometry: &Value, seed: usize) -> Vec<(Arc<LayerDef>, Result<Feature, String>)> {
    let ty = geometry.get("type").and_then(Value::as_str).unwrap_or("");
    layers_for(ty)
        .iter()
        .map(|name| {
            let def = layer(name);
            let doc = json!({
                "type": "Feature", "id": format!("G{seed}"),
                "geometry": geometry, "properties": properties(&def, seed),
            });
            let f = Feature::from_geojson(&def, &doc).map_err(|e| e.to_string());
            (def, f)
        })
        .collect()
}

// ---- coordinate-level mutations of corpus geometries ----

/// Calls `f` on every array of positions (a line, a ring) inside `v`.
fn for_each_line(v: &mut Value, f: &mut dyn FnMut(&mut Vec<Value>)) {
    if let Value::Array(a) = v {
        if a.first()
            .is_some_and(|p| p.get(0).is_some_and(Value::is_number))
        {
            f(a);
        } else {
            for x in a {
                for_each_line(x, f);
            }
        }
    }
}

fn xy(p: &Value) -> (f64, f64) {
    (
        p.get(0).and_then(Value::as_f64).unwrap_or(0.0),
        p.get(1).and_then(Value::as_f64).unwrap_or(0.0),
    )
}

fn pos(x: f64, y: f64) -> Value {
    json!([x, y])
}

const SPECIAL: [f64; 9] = [
    180.0,
    -180.0,
    179.999_999_9,
    85.051_128_779_8,
    -85.051_128_779_8,
    85.06,
    90.0,
    -90.0,
    0.0,
];

/// One to three coordinate mutations of a corpus geometry; rings are usually closed
/// again afterwards.
fn mutate_geometry(g: &mut Value, rng: &mut ChaCha8Rng) {
    let rounds = rng.random_range(1..=3);
    for _ in 0..rounds {
        let mut lines = 0usize;
        if let Some(c) = g.get_mut("coordinates") {
            for_each_line(c, &mut |_| lines += 1);
        }
        if lines == 0 {
            return;
        }
        let target = rng.random_range(0..lines);
        let op = rng.random_range(0..9u32);
        let scale = [1e-9, 1e-6, 1e-3, 0.1, 5.0][rng.random_range(0..5)];
        let (r1, r2, r3): (f64, f64, f64) = (
            rng.random_range(-1.0..1.0),
            rng.random_range(-1.0..1.0),
            rng.random(),
        );
        let k = rng.random_range(0..usize::MAX);
        let special = SPECIAL[rng.random_range(0..SPECIAL.len())];
        let zig = rng.random_range(2..200usize);
        let mut i = 0usize;
        let Some(c) = g.get_mut("coordinates") else {
            return;
        };
        // Whole-geometry moves apply to every line; the others to one.
        let whole = matches!(op, 5 | 6);
        let anchor = {
            let mut a = None;
            for_each_line(c, &mut |l| {
                if a.is_none() {
                    a = l.first().map(xy);
                }
            });
            a.unwrap_or((0.0, 0.0))
        };
        for_each_line(c, &mut |l| {
            let this = i;
            i += 1;
            if (!whole && this != target) || l.is_empty() {
                return;
            }
            let n = l.len();
            let v = k % n;
            match op {
                0 => {
                    let (x, y) = xy(&l[v]);
                    l[v] = pos(x + r1 * scale, y + r2 * scale);
                }
                1 => {
                    let (x, y) = xy(&l[v]);
                    l[v] = if r3 < 0.5 {
                        pos(special.clamp(-180.0, 180.0), y)
                    } else {
                        pos(x, special)
                    };
                }
                2 => {
                    let p = l[v].clone();
                    l.insert(v, p);
                }
                3 if n > 2 => {
                    l.remove(v);
                }
                4 => l.reverse(),
                5 => {
                    let f = [1e-6, 1e-3, 0.5, 2.0, 100.0][k % 5];
                    for p in l.iter_mut() {
                        let (x, y) = xy(p);
                        *p = pos(anchor.0 + (x - anchor.0) * f, anchor.1 + (y - anchor.1) * f);
                    }
                }
                6 => {
                    // Towards the antimeridian or the Mercator limit.
                    let (dx, dy) = if r3 < 0.5 {
                        (179.9 * r1.signum() - anchor.0, 0.0)
                    } else {
                        (0.0, 85.0 * r2.signum() - anchor.1)
                    };
                    for p in l.iter_mut() {
                        let (x, y) = xy(p);
                        *p = pos(x + dx, y + dy);
                    }
                }
                7 if n > 1 => {
                    // A zigzag between two neighbouring vertices.
                    let w = v.min(n - 2);
                    let (a, b) = (xy(&l[w]), xy(&l[w + 1]));
                    let amp = scale.min(0.01);
                    let teeth: Vec<Value> = (1..zig)
                        .map(|j| {
                            let t = j as f64 / zig as f64;
                            let side = if j % 2 == 0 { amp } else { -amp };
                            pos(a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t + side)
                        })
                        .collect();
                    l.splice(w + 1..w + 1, teeth);
                }
                _ if n > 1 => {
                    let w = (k / 7) % n;
                    l.swap(v, w);
                }
                _ => {}
            }
        });
    }
    let polygonal = matches!(
        g.get("type").and_then(Value::as_str),
        Some("Polygon" | "MultiPolygon")
    );
    if polygonal && rng.random_bool(0.85) {
        if let Some(c) = g.get_mut("coordinates") {
            for_each_line(c, &mut |l| {
                if l.len() > 1 {
                    let first = l[0].clone();
                    let last = l.len() - 1;
                    l[last] = first;
                }
            });
        }
    }
}

#[test]
fn fuzz_geometry_corpus_and_mutations() {
    let pool: Vec<Value> = engine::corpus("geometry")
        .into_iter()
        .map(|(name, b)| {
            serde_json::from_slice(&b).unwrap_or_else(|e| panic!("corpus geometry {name}: {e}"))
        })
        .collect();
    let mut total = Drawn::default();
    let mut seed = 0usize;
    let mut tile_rng = engine::rng("geometry-tiles");
    let mut check = |input: &[u8]| {
        let g: Value = match serde_json::from_slice(input) {
            Ok(g) => g,
            Err(e) => return Verdict::refused(format!("json {}", normalise(&e.to_string()))),
        };
        seed += 1;
        let mut sig = String::new();
        let mut accepted = false;
        for (def, f) in features_for(&g, seed) {
            match f {
                Err(e) => sig.push_str(&format!("{}: {}|", def.name, normalise(&e))),
                Ok(f) => {
                    accepted = true;
                    let tiles = tiles_for(&[&f.geometry], &mut tile_rng, 8);
                    let d = draw_and_check(&def, &[f], &tiles);
                    total.tiles += d.tiles;
                    total.empty += d.empty;
                    total.polygons += d.polygons;
                    total.lines += d.lines;
                    sig.push_str(&format!("{}: drawn {}|", def.name, d.tiles.min(3)));
                }
            }
        }
        if accepted {
            Verdict::accepted(sig)
        } else {
            Verdict::refused(sig)
        }
    };
    let mut generate = |rng: &mut ChaCha8Rng| {
        let mut g = pool[rng.random_range(0..pool.len())].clone();
        mutate_geometry(&mut g, rng);
        Some(serde_json::to_vec(&g).unwrap())
    };
    let report = engine::run("geometry", 200, &[], &mut generate, &mut check);
    eprintln!("fuzz geometry: drawn {total:?}");
    assert!(report.accepted > report.cases / 10, "{report:?}");
    assert!(total.tiles > 0 && total.polygons > 0 && total.lines > 0 && total.empty > 0);
}

// ---- generated geometries (proptest) ----

/// A centre: Chongqing, anywhere, by the antimeridian or by the Mercator limit.
fn centre() -> impl Strategy<Value = (f64, f64)> {
    prop_oneof![
        Just((106.55, 29.56)),
        (-179.0..179.0f64, -84.0..84.0f64),
        (prop_oneof![Just(179.999), Just(-179.999)], -80.0..80.0f64),
        (-170.0..170.0f64, prop_oneof![Just(85.05), Just(-85.05)]),
    ]
}

fn scale() -> impl Strategy<Value = f64> {
    prop_oneof![Just(1e-7), Just(1e-5), Just(1e-3), Just(0.05), Just(2.0)]
}

fn clamp(x: f64, y: f64) -> [f64; 2] {
    [x.clamp(-180.0, 180.0), y.clamp(-89.9, 89.9)]
}

/// A line: a random walk, sometimes a zigzag.
fn line() -> impl Strategy<Value = Value> {
    (
        centre(),
        scale(),
        proptest::collection::vec((-1.0..1.0f64, -1.0..1.0f64), 2..120),
        any::<bool>(),
    )
        .prop_map(|((cx, cy), s, steps, zigzag)| {
            let (mut x, mut y) = (cx, cy);
            let mut pts = Vec::new();
            for (i, (dx, dy)) in steps.into_iter().enumerate() {
                if zigzag {
                    x += dx.abs() * s * 0.1;
                    y = cy + if i % 2 == 0 { s } else { -s } * dy.abs();
                } else {
                    x += dx * s;
                    y += dy * s;
                }
                pts.push(clamp(x, y));
            }
            json!({"type": "LineString", "coordinates": pts})
        })
}

/// A star-shaped ring around `c`: sorted angles, radii `r` (times `s`), closed.
fn star(c: (f64, f64), s: f64, radii: &[f64], jitter: &[f64], clockwise: bool) -> Vec<[f64; 2]> {
    let n = radii.len();
    let step = std::f64::consts::TAU / n as f64;
    let mut ring: Vec<[f64; 2]> = radii
        .iter()
        .zip(jitter)
        .enumerate()
        .map(|(i, (r, j))| {
            let a = step * (i as f64 + 0.45 * j);
            clamp(c.0 + r * s * a.cos(), c.1 + r * s * a.sin())
        })
        .collect();
    if clockwise {
        ring.reverse();
    }
    ring.push(ring[0]);
    ring
}

/// A polygon part: a star-shaped shell (8+ vertices, so it holds the disc of 0.7
/// times its smallest radius) with up to three small holes inside it.
fn polygon_part() -> impl Strategy<Value = (Vec<f64>, Vec<f64>, usize, Vec<usize>, bool)> {
    (
        proptest::collection::vec(0.5..1.0f64, 8..80),
        proptest::collection::vec(-1.0..1.0f64, 80),
        0..=3usize,
        proptest::collection::vec(3..24usize, 3),
        any::<bool>(),
    )
}

/// A polygon or multipolygon of 1 to 3 disjoint parts.
fn polygonal() -> impl Strategy<Value = Value> {
    (
        centre(),
        scale(),
        proptest::collection::vec(polygon_part(), 1..=3),
    )
        .prop_map(|((cx, cy), s, parts)| {
            let polys: Vec<Vec<Vec<[f64; 2]>>> = parts
                .iter()
                .enumerate()
                .map(|(p, (radii, jitter, holes, hole_sizes, cw))| {
                    let c = (cx + p as f64 * 2.5 * s, cy);
                    let rmin = radii.iter().copied().fold(f64::INFINITY, f64::min);
                    let inner = 0.7 * rmin;
                    let mut rings = vec![star(c, s, radii, jitter, *cw)];
                    for (h, &n) in hole_sizes.iter().enumerate().take(*holes) {
                        let a = std::f64::consts::TAU * h as f64 / *holes as f64;
                        let hc = if *holes == 1 {
                            c
                        } else {
                            (
                                c.0 + 0.5 * inner * s * a.cos(),
                                c.1 + 0.5 * inner * s * a.sin(),
                            )
                        };
                        let hr: Vec<f64> = (0..n)
                            .map(|i| 0.2 * inner * (0.6 + 0.4 * jitter[i % jitter.len()].abs()))
                            .collect();
                        rings.push(star(hc, s, &hr, &jitter[n..], !*cw));
                    }
                    rings
                })
                .collect();
            if polys.len() == 1 {
                json!({"type": "Polygon", "coordinates": polys[0]})
            } else {
                json!({"type": "MultiPolygon", "coordinates": polys})
            }
        })
}

#[test]
fn fuzz_generated_lines_and_polygons() {
    let cases = engine::cases(200) as u32;
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&engine::seed().to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 2000,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let counts = std::cell::RefCell::new((0usize, 0usize, Drawn::default()));
    let strategy = (
        proptest::collection::vec(prop_oneof![line(), polygonal()], 1..=4),
        any::<u64>(),
    );
    let result = runner.run(&strategy, |(geoms, tile_seed)| {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::seed_from_u64(tile_seed);
        // Accepted features, grouped by layer (several features share an index).
        let mut by_layer: Vec<(Arc<LayerDef>, Vec<Feature>)> = Vec::new();
        for (i, g) in geoms.iter().enumerate() {
            for (def, f) in features_for(g, i) {
                let mut c = counts.borrow_mut();
                match f {
                    Ok(f) => {
                        c.0 += 1;
                        match by_layer.iter_mut().find(|(d, _)| d.name == def.name) {
                            Some((_, v)) => v.push(f),
                            None => by_layer.push((def, vec![f])),
                        }
                    }
                    Err(e) => {
                        c.1 += 1;
                        if c.1 <= 5 {
                            eprintln!("generated geometry refused ({}): {e}", def.name);
                        }
                    }
                }
            }
        }
        for (def, features) in &by_layer {
            let geoms: Vec<&Geometry> = features.iter().map(|f| &f.geometry).collect();
            let tiles = tiles_for(&geoms, &mut rng, 6);
            let d = draw_and_check(def, features, &tiles);
            let mut c = counts.borrow_mut();
            c.2.tiles += d.tiles;
            c.2.empty += d.empty;
            c.2.polygons += d.polygons;
            c.2.lines += d.lines;
        }
        Ok::<(), TestCaseError>(())
    });
    if let Err(e) = result {
        let text = format!("{e}");
        engine::fail(
            "geometry",
            "a generated case (shrunk)",
            text.as_bytes(),
            &text,
        );
    }
    let (accepted, refused, drawn) = counts.into_inner();
    eprintln!(
        "fuzz generated geometries: {cases} cases, {accepted} features accepted, {refused} refused, drawn {drawn:?}"
    );
    assert!(
        // Valid by construction, except where clamping to the world folds a shape.
        accepted > 0 && refused * 5 < accepted,
        "{accepted} accepted, {refused} refused"
    );
    assert!(drawn.tiles > 0 && drawn.polygons > 0 && drawn.lines > 0);
}
