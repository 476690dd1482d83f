//! Oracle tests: every index query equals a brute-force scan over the same seeded
//! random data, before and after live edits. Coordinates sit on a coarse grid so that
//! many features lie exactly on box edges, and boxes include zero-width, zero-height
//! and zero-size ones (boxes never cross the antimeridian).

#![allow(clippy::unwrap_used)] // tests panic on failure by design

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use geo_types::{Coord, Geometry, LineString, Point, Polygon};
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;
use riskmap::config::parse_layer;
use riskmap::index::{GeomRef, LayerIndex, distance_to, geometry_intersects_bbox};
use riskmap::model::{Bbox, Feature, LayerDef, Value};
use riskmap::store::StoredFeature;

fn layer(geometry: &str) -> Arc<LayerDef> {
    let text = format!(
        "name = \"t_{geometry}\"\ntitle = \"t\"\nkind = \"reference\"\ngeometry = \"{geometry}\"\nid_property = \"id\"\n[[properties]]\nname = \"n\"\ntype = \"integer\"\n"
    );
    Arc::new(parse_layer(Path::new(&format!("layers/t_{geometry}.toml")), &text).unwrap())
}

/// A grid coordinate: multiples of 0.01 degrees in a 0.5-degree square.
fn grid(rng: &mut ChaCha8Rng) -> Coord {
    Coord {
        x: 106.0 + rng.random_range(0..=50) as f64 * 0.01,
        y: 29.0 + rng.random_range(0..=50) as f64 * 0.01,
    }
}

fn random_geometry(kind: &str, rng: &mut ChaCha8Rng) -> Geometry {
    match kind {
        "point" => Point(if rng.random_bool(0.7) {
            grid(rng)
        } else {
            Coord {
                x: rng.random_range(106.0..106.5),
                y: rng.random_range(29.0..29.5),
            }
        })
        .into(),
        "linestring" => loop {
            let n = rng.random_range(2..6);
            let coords: Vec<Coord> = (0..n).map(|_| grid(rng)).collect();
            let l = LineString(coords);
            let g: Geometry = l.into();
            if riskmap::model::geometry::check(&g).is_ok() {
                break g;
            }
        },
        _ => loop {
            let c = grid(rng);
            let (w, h) = (
                rng.random_range(1..6) as f64 * 0.01,
                rng.random_range(1..6) as f64 * 0.01,
            );
            let ring = if rng.random_bool(0.5) {
                vec![
                    c,
                    Coord { x: c.x + w, y: c.y },
                    Coord {
                        x: c.x + w,
                        y: c.y + h,
                    },
                    Coord { x: c.x, y: c.y + h },
                    c,
                ]
            } else {
                vec![
                    c,
                    Coord { x: c.x + w, y: c.y },
                    Coord { x: c.x, y: c.y + h },
                    c,
                ]
            };
            let g: Geometry = Polygon::new(LineString(ring), vec![]).into();
            if riskmap::model::geometry::check(&g).is_ok() {
                break g;
            }
        },
    }
}

fn random_bbox(rng: &mut ChaCha8Rng) -> Bbox {
    let a = grid(rng);
    let b = grid(rng);
    let (mut min, mut max) = (
        Coord {
            x: a.x.min(b.x),
            y: a.y.min(b.y),
        },
        Coord {
            x: a.x.max(b.x),
            y: a.y.max(b.y),
        },
    );
    match rng.random_range(0..6) {
        0 => max.x = min.x, // zero width
        1 => max.y = min.y, // zero height
        2 => max = min,     // a point
        3 => {
            // a small box whose edges pass through grid points
            max = Coord {
                x: min.x + 0.02,
                y: min.y + 0.02,
            };
        }
        4 => {
            min = Coord {
                x: min.x - 0.003,
                y: min.y - 0.004,
            }; // off-grid edges
        }
        _ => {}
    }
    Bbox::new(min.x, min.y, max.x, max.y).unwrap()
}

/// The brute force: every live feature tested on its own. Points use plain
/// comparisons (independent of the index's code); shapes use the same exact
/// predicate the index applies after its envelope filter.
fn brute_bbox(all: &[(String, Geometry)], b: &Bbox) -> BTreeSet<String> {
    all.iter()
        .filter(|(_, g)| match g {
            Geometry::Point(p) => {
                b.min_lon <= p.x() && p.x() <= b.max_lon && b.min_lat <= p.y() && p.y() <= b.max_lat
            }
            g => geometry_intersects_bbox(GeomRef::Shape(g), b),
        })
        .map(|(id, _)| id.clone())
        .collect()
}

fn index_bbox(idx: &LayerIndex, b: &Bbox) -> BTreeSet<String> {
    idx.in_bbox(b)
        .into_iter()
        .map(|s| idx.id(s).to_string())
        .collect()
}

fn feature(id: &str, g: Geometry) -> Feature {
    Feature {
        id: id.into(),
        geometry: g,
        values: vec![Value::Int(1)],
    }
}

fn check_kind(kind: &str, n: usize, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let def = layer(kind);
    let mut all: Vec<(String, Geometry)> = (0..n)
        .map(|i| (format!("f{i}"), random_geometry(kind, &mut rng)))
        .collect();
    let fids: std::collections::HashMap<String, i64> = all
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.clone(), i as i64 + 1))
        .collect();

    // Bulk-loaded, as at start-up.
    let stored: Vec<StoredFeature> = all
        .iter()
        .map(|(id, g)| StoredFeature {
            fid: fids[id],
            feature: feature(id, g.clone()),
        })
        .collect();
    let mut idx = LayerIndex::build(def.clone(), |push| {
        stored.into_iter().for_each(push);
        Ok(())
    })
    .unwrap();
    assert_eq!(idx.len(), n);

    let mut edge_hits = 0;
    for round in 0..3 {
        for _ in 0..400 {
            let b = random_bbox(&mut rng);
            let want = brute_bbox(&all, &b);
            assert_eq!(
                index_bbox(&idx, &b),
                want,
                "{kind} round {round}: bbox {b:?}"
            );
            // Count queries where a point sits exactly on an edge: the cases the test is for.
            edge_hits += all
                .iter()
                .filter(|(_, g)| matches!(g, Geometry::Point(p) if !want.is_empty() && (p.x() == b.min_lon || p.x() == b.max_lon || p.y() == b.min_lat || p.y() == b.max_lat) && b.contains_coord(p.0)))
                .count();
        }
        for k in [1, 5, 20] {
            for _ in 0..60 {
                let c = Coord {
                    x: rng.random_range(105.9..106.6),
                    y: rng.random_range(28.9..29.6),
                };
                let mut brute: Vec<(f64, i64, String)> = all
                    .iter()
                    .map(|(id, g)| (distance_to(GeomRef::Shape(g), c), fids[id], id.clone()))
                    .collect();
                brute.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                brute.truncate(k);
                let got: Vec<(f64, i64, String)> = idx
                    .nearest(c, k)
                    .into_iter()
                    .map(|(s, d)| (d, idx.fid(s), idx.id(s).to_string()))
                    .collect();
                assert_eq!(got.len(), brute.len());
                for (g, w) in got.iter().zip(&brute) {
                    assert!(
                        (g.0 - w.0).abs() <= 1e-12,
                        "{kind} nearest {k} at {c:?}: {got:?} vs {brute:?}"
                    );
                }
                assert_eq!(
                    got.iter().map(|g| &g.2).collect::<Vec<_>>(),
                    brute.iter().map(|w| &w.2).collect::<Vec<_>>(),
                    "{kind} nearest ids: {got:?} vs {brute:?}"
                );
            }
        }
        // Live edits: move a third, delete a tenth, add some; the oracle follows.
        for i in 0..n / 3 {
            let j = rng.random_range(0..all.len());
            let g = random_geometry(kind, &mut rng);
            let id = all[j].0.clone();
            idx.upsert(fids[&id], &feature(&id, g.clone()));
            all[j].1 = g;
            if i % 3 == 0 {
                let j = rng.random_range(0..all.len());
                let (id, _) = all.swap_remove(j);
                assert!(idx.remove(&id).is_some());
                assert!(idx.remove(&id).is_none());
            }
        }
        assert_eq!(idx.len(), all.len(), "{kind}: size after edits");
        for (id, g) in &all {
            assert_eq!(
                idx.get(id).map(|f| f.feature.geometry),
                Some(g.clone()),
                "{kind}: {id} after edits"
            );
        }
    }
    if kind == "point" {
        assert!(
            edge_hits > 100,
            "the data must exercise points on box edges ({edge_hits})"
        );
    }
}

#[test]
fn point_queries_equal_brute_force() {
    check_kind("point", 4_000, 1);
}

#[test]
fn line_queries_equal_brute_force() {
    check_kind("linestring", 1_500, 2);
}

#[test]
fn polygon_queries_equal_brute_force() {
    check_kind("polygon", 800, 3);
}

#[test]
fn zero_width_boxes_find_what_lies_on_them() {
    let def = layer("linestring");
    let mut idx = LayerIndex::new(def);
    // A horizontal line crossed by a zero-width box, a diagonal whose envelope meets
    // the box but whose line does not, and a vertical line lying in the box.
    let lines = [
        ("h", vec![(106.0, 29.2), (106.4, 29.2)]),
        ("d", vec![(106.0, 29.0), (106.1, 29.1)]),
        ("v", vec![(106.05, 29.3), (106.05, 29.4)]),
    ];
    for (i, (id, pts)) in lines.iter().enumerate() {
        let g: Geometry = LineString(pts.iter().map(|&(x, y)| Coord { x, y }).collect()).into();
        idx.upsert(i as i64 + 1, &feature(id, g));
    }
    let ids = |b: Bbox| index_bbox(&idx, &b).into_iter().collect::<Vec<_>>();
    assert_eq!(
        ids(Bbox::new(106.05, 29.0, 106.05, 29.5).unwrap()),
        ["d", "h", "v"],
        "the diagonal crosses x = 106.05 at y = 29.05"
    );
    assert_eq!(
        ids(Bbox::new(106.05, 29.09, 106.05, 29.1).unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(Bbox::new(106.05, 29.05, 106.05, 29.05).unwrap()),
        ["d"],
        "a point box on the diagonal"
    );
    assert_eq!(
        ids(Bbox::new(106.0, 29.4, 106.4, 29.4).unwrap()),
        ["v"],
        "a zero-height box touching an end point"
    );
}
