//! Oracle tests: every index query equals a brute-force scan over the same seeded
//! random data, before and after live edits. Coordinates sit on a coarse grid so that
//! many features lie exactly on box edges, and boxes include zero-width, zero-height
//! and zero-size ones (boxes never cross the antimeridian).

#![allow(clippy::unwrap_used)] // tests panic on failure by design

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use geo_types::{Coord, Geometry, LineString, MultiPolygon, Point, Polygon};
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;
use riskmap::config::parse_layer;
use riskmap::index::{GeomRef, LayerIndex, distance_to};
use riskmap::model::{Bbox, Feature, LayerDef, Value};
use riskmap::store::StoredFeature;

fn layer(geometry: &str) -> Arc<LayerDef> {
    let text = format!(
        "name = \"t_{geometry}\"\ntitle = \"t\"\nkind = \"reference\"\ngeometry = \"{geometry}\"\nid_property = \"id\"\n[[properties]]\nname = \"n\"\ntype = \"integer\"\n"
    );
    Arc::new(parse_layer(Path::new(&format!("layers/t_{geometry}.toml")), &text).unwrap())
}

/// Grid step: a binary fraction, so grid coordinates and their sums are exact in f64
/// and the oracle's integer arithmetic sees exactly the geometry the index sees.
const STEP: f64 = 1.0 / 128.0;
/// The oracle's integer scale: every coordinate used is a multiple of 1/512 degree.
const SCALE: f64 = 512.0;

/// A grid coordinate: multiples of STEP in a 0.5-degree square.
fn grid(rng: &mut ChaCha8Rng) -> Coord {
    Coord {
        x: 106.0 + rng.random_range(0..=64) as f64 * STEP,
        y: 29.0 + rng.random_range(0..=64) as f64 * STEP,
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
        "polygon" if rng.random_bool(0.5) => loop {
            let g: Geometry = polygon_with_holes(rng).into();
            if riskmap::model::geometry::check(&g).is_ok() {
                break g;
            }
        },
        "multipolygon" => loop {
            let mut parts = Vec::new();
            for _ in 0..rng.random_range(1..4) {
                match rng.random_range(0..3) {
                    0 => parts.extend(lake_with_island(rng)),
                    1 => parts.push(polygon_with_holes(rng)),
                    _ => match random_geometry("polygon", rng) {
                        Geometry::Polygon(p) => parts.push(p),
                        other => unreachable!("{other:?}"),
                    },
                }
            }
            let g: Geometry = MultiPolygon(parts).into();
            if riskmap::model::geometry::check(&g).is_ok() {
                break g;
            }
        },
        _ => loop {
            let c = grid(rng);
            let (w, h) = (
                rng.random_range(1..6) as f64 * STEP,
                rng.random_range(1..6) as f64 * STEP,
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

fn rect(c: Coord, w: i32, h: i32) -> LineString {
    let at = |i: i32, j: i32| Coord {
        x: c.x + i as f64 * STEP,
        y: c.y + j as f64 * STEP,
    };
    LineString(vec![at(0, 0), at(w, 0), at(w, h), at(0, h), at(0, 0)])
}

/// A rectangle with a rectangular hole, or one or two random grid triangles as holes
/// (often touching the shell or each other at a point; invalid draws are refused by
/// the caller's check).
fn polygon_with_holes(rng: &mut ChaCha8Rng) -> Polygon {
    let c = grid(rng);
    let (w, h) = (rng.random_range(3..9), rng.random_range(3..9));
    if rng.random_bool(0.5) {
        let inset = Coord {
            x: c.x + STEP,
            y: c.y + STEP,
        };
        return Polygon::new(rect(c, w, h), vec![rect(inset, w - 2, h - 2)]);
    }
    let holes = (0..rng.random_range(1..3))
        .map(|_| {
            let mut pts: Vec<Coord> = (0..3)
                .map(|_| Coord {
                    x: c.x + rng.random_range(0..=w) as f64 * STEP,
                    y: c.y + rng.random_range(0..=h) as f64 * STEP,
                })
                .collect();
            pts.push(pts[0]);
            LineString(pts)
        })
        .collect();
    Polygon::new(rect(c, w, h), holes)
}

/// A rectangle with a rectangular hole, and an island in the hole.
fn lake_with_island(rng: &mut ChaCha8Rng) -> [Polygon; 2] {
    let c = grid(rng);
    let (w, h) = (rng.random_range(5..12), rng.random_range(5..12));
    let inset = |k: i32| Coord {
        x: c.x + k as f64 * STEP,
        y: c.y + k as f64 * STEP,
    };
    [
        Polygon::new(rect(c, w, h), vec![rect(inset(1), w - 2, h - 2)]),
        Polygon::new(rect(inset(2), w - 4, h - 4), vec![]),
    ]
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
                x: min.x + 2.0 * STEP,
                y: min.y + 2.0 * STEP,
            };
        }
        4 => {
            min = Coord {
                x: min.x - 1.0 / SCALE,
                y: min.y - 3.0 / SCALE,
            }; // off-grid edges
        }
        _ => {}
    }
    Bbox::new(min.x, min.y, max.x, max.y).unwrap()
}

/// Integer coordinates for exact predicates: shape vertices and boxes are multiples of
/// 1/SCALE degree, so scaling is exact.
type P = (i64, i64);

fn grid_point(x: f64, y: f64) -> P {
    let p = ((x * SCALE) as i64, (y * SCALE) as i64);
    assert!(
        p.0 as f64 == x * SCALE && p.1 as f64 == y * SCALE,
        "{x},{y} is off the grid"
    );
    p
}

fn orient(a: P, b: P, c: P) -> i128 {
    ((b.0 - a.0) as i128) * ((c.1 - a.1) as i128) - ((b.1 - a.1) as i128) * ((c.0 - a.0) as i128)
}

fn on_segment(a: P, b: P, c: P) -> bool {
    orient(a, b, c) == 0
        && a.0.min(b.0) <= c.0
        && c.0 <= a.0.max(b.0)
        && a.1.min(b.1) <= c.1
        && c.1 <= a.1.max(b.1)
}

fn segments_meet(a: P, b: P, c: P, d: P) -> bool {
    let (o1, o2, o3, o4) = (
        orient(a, b, c).signum(),
        orient(a, b, d).signum(),
        orient(c, d, a).signum(),
        orient(c, d, b).signum(),
    );
    (o1 != o2 && o3 != o4)
        || on_segment(a, b, c)
        || on_segment(a, b, d)
        || on_segment(c, d, a)
        || on_segment(c, d, b)
}

/// The brute force: every live feature tested on its own with predicates written
/// here, independent of the index's code (and of geo's). Points: inside the closed
/// box (plain comparisons). Shapes, in exact integer arithmetic: a segment meets the
/// box if an end is inside or it meets one of the box's edges; a polygon meets it if
/// an edge of one of its rings does or the box's corner is inside the polygon (inside
/// its exterior ring and no interior ring, by crossing numbers); a multipolygon if
/// one of its polygons does. Also returns how many polygons were missed only because
/// the box lies in one of their holes (the cases holes are there for).
fn brute_bbox(all: &[(String, Geometry)], b: &Bbox) -> (BTreeSet<String>, usize) {
    let (lo, hi) = (
        grid_point(b.min_lon, b.min_lat),
        grid_point(b.max_lon, b.max_lat),
    );
    let inside = |p: P| lo.0 <= p.0 && p.0 <= hi.0 && lo.1 <= p.1 && p.1 <= hi.1;
    let edges = [
        (lo, (hi.0, lo.1)),
        ((hi.0, lo.1), hi),
        (hi, (lo.0, hi.1)),
        ((lo.0, hi.1), lo),
    ];
    let seg_meets_box = |a: P, c: P| {
        inside(a) || inside(c) || edges.iter().any(|&(e0, e1)| segments_meet(a, c, e0, e1))
    };
    let ring_points = |l: &LineString| l.0.iter().map(|c| grid_point(c.x, c.y)).collect::<Vec<P>>();
    let corner_in_ring = |ring: &[P], p: P| {
        let mut inside = false;
        for w in ring.windows(2) {
            let (a, c) = (w[0], w[1]);
            if (a.1 > p.1) != (c.1 > p.1) {
                // p is left of the edge's crossing at height p.1 (exact, sign-adjusted).
                let cross = orient(a, c, p);
                if (cross > 0) == (c.1 > a.1) {
                    inside = !inside;
                }
            }
        }
        inside
    };
    let in_hole = std::cell::Cell::new(0);
    let polygon_meets = |p: &Polygon| {
        let rings: Vec<Vec<P>> = std::iter::once(p.exterior())
            .chain(p.interiors())
            .map(ring_points)
            .collect();
        if rings
            .iter()
            .any(|r| r.windows(2).any(|w| seg_meets_box(w[0], w[1])))
        {
            return true;
        }
        if !corner_in_ring(&rings[0], lo) {
            return false;
        }
        let holed = rings[1..].iter().any(|h| corner_in_ring(h, lo));
        in_hole.set(in_hole.get() + usize::from(holed));
        !holed
    };
    let hits = all
        .iter()
        .filter(|(_, g)| match g {
            Geometry::Point(p) => {
                b.min_lon <= p.x() && p.x() <= b.max_lon && b.min_lat <= p.y() && p.y() <= b.max_lat
            }
            Geometry::LineString(l) => ring_points(l).windows(2).any(|w| seg_meets_box(w[0], w[1])),
            Geometry::Polygon(p) => polygon_meets(p),
            Geometry::MultiPolygon(m) => m.0.iter().any(polygon_meets),
            other => panic!("no oracle for {other:?}"),
        })
        .map(|(id, _)| id.clone())
        .collect();
    (hits, in_hole.get())
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
    let mut idx = LayerIndex::build(def.clone(), 0, |push| {
        for sf in &stored {
            let values: Vec<riskmap::model::ValueRef<'_>> =
                sf.feature.values.iter().map(|v| v.as_ref()).collect();
            push(
                sf.fid,
                riskmap::model::FeatureRef {
                    id: &sf.feature.id,
                    geometry: &sf.feature.geometry,
                    values: &values,
                },
                None,
            );
        }
        Ok::<(), ()>(())
    })
    .unwrap();
    assert_eq!(idx.len(), n);

    let (mut edge_hits, mut hole_misses) = (0, 0);
    for round in 0..3 {
        for _ in 0..400 {
            let b = random_bbox(&mut rng);
            let (want, in_hole) = brute_bbox(&all, &b);
            hole_misses += in_hole;
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
    if kind.ends_with("polygon") {
        assert!(
            hole_misses > 50,
            "the data must exercise boxes inside holes ({hole_misses})"
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
fn multipolygon_queries_equal_brute_force() {
    check_kind("multipolygon", 600, 4);
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
