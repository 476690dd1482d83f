//! Oracle and property tests for `riskmap::query::geodesic`.
//!
//! The oracle shares only Karney's point-to-point distance with the code under test: it
//! samples every geodesic edge densely (positions from Karney's direct solution), refines
//! each local minimum by ternary search on distances alone, and decides "inside" by the
//! winding number of the densified rings in the azimuthal equidistant projection centred
//! on the point (no crossing rule, no bounds, no derivatives).

use geo_types::{Coord, Geometry, LineString, MultiPolygon, Point, Polygon, coord};
use geographiclib_rs::{DirectGeodesic, Geodesic, GeodesicLine, InverseGeodesic, capability};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use riskmap::model::Bbox;
use riskmap::query::geodesic::{
    Centre, GeodesicError, PreparedGeometry, around_parts, check_geometry, check_position,
    distance_between_m, distance_to_geometry_m, geodesic_bounds, min_distance_to_rect_m,
    point_distance_m, polygon_contains, search_box, within_distance_between_m, within_distance_m,
    within_m,
};

/// Agreement asked of every distance, metres.
const MM: f64 = 1e-3;

fn wgs84() -> Geodesic {
    Geodesic::wgs84()
}

fn karney(a: Coord, b: Coord) -> f64 {
    wgs84().inverse(a.y, a.x, b.y, b.x)
}

/// The point `dist` metres from `c` at azimuth `azi` degrees (longitude wrapped).
fn offset(c: Coord, azi: f64, dist: f64) -> Coord {
    let (lat, lon): (f64, f64) = wgs84().direct(c.y, c.x, azi, dist);
    coord! { x: wrap(lon), y: lat }
}

fn wrap(lon: f64) -> f64 {
    let r = lon.rem_euclid(360.0);
    if r > 180.0 { r - 360.0 } else { r }
}

/// Points along the geodesic from `a` to `b`: `n + 1` of them, ends included.
fn densify(a: Coord, b: Coord, n: usize) -> Vec<Coord> {
    let g = wgs84();
    let (s12, azi1, _, _): (f64, f64, f64, f64) = g.inverse(a.y, a.x, b.y, b.x);
    let line = GeodesicLine::new(&g, a.y, a.x, azi1, None, None, None);
    (0..=n)
        .map(|i| {
            let s = s12 * i as f64 / n as f64;
            let (_, lat, lon, ..) =
                line._gen_position(false, s, capability::LATITUDE | capability::LONGITUDE);
            coord! { x: wrap(lon), y: lat }
        })
        .collect()
}

/// Oracle distance from `c` to the geodesic segment `a`–`b`.
fn oracle_segment(c: Coord, a: Coord, b: Coord) -> f64 {
    let g = wgs84();
    let (s12, azi1, _, _): (f64, f64, f64, f64) = g.inverse(a.y, a.x, b.y, b.x);
    if s12 == 0.0 {
        return karney(c, a);
    }
    let line = GeodesicLine::new(&g, a.y, a.x, azi1, None, None, None);
    let at = |s: f64| {
        let (_, lat, lon, ..) =
            line._gen_position(false, s, capability::LATITUDE | capability::LONGITUDE);
        karney(c, coord! { x: lon, y: lat })
    };
    const N: usize = 400;
    let step = s12 / N as f64;
    let d: Vec<f64> = (0..=N).map(|i| at(step * i as f64)).collect();
    let mut best = d.iter().copied().fold(f64::INFINITY, f64::min);
    for i in 0..=N {
        let left = if i == 0 { f64::INFINITY } else { d[i - 1] };
        let right = if i == N { f64::INFINITY } else { d[i + 1] };
        if d[i] <= left && d[i] <= right {
            let (mut lo, mut hi) = (
                step * (i.saturating_sub(1)) as f64,
                (step * (i + 1) as f64).min(s12),
            );
            for _ in 0..200 {
                let m1 = lo + (hi - lo) / 3.0;
                let m2 = hi - (hi - lo) / 3.0;
                if at(m1) <= at(m2) {
                    hi = m2;
                } else {
                    lo = m1;
                }
            }
            best = best.min(at(0.5 * (lo + hi)));
        }
    }
    best
}

/// Edges of a ring, closed.
fn ring_edges(ring: &LineString) -> Vec<(Coord, Coord)> {
    let mut e: Vec<_> = ring.0.windows(2).map(|w| (w[0], w[1])).collect();
    if let (Some(&f), Some(&l)) = (ring.0.first(), ring.0.last())
        && f != l
    {
        e.push((l, f));
    }
    e
}

/// Winding number of a ring around `c`, in the azimuthal equidistant projection on `c`.
fn oracle_winding(ring: &LineString, c: Coord) -> i64 {
    let g = wgs84();
    let mut total = 0.0;
    let mut prev: Option<f64> = None;
    let mut first: Option<f64> = None;
    for (a, b) in ring_edges(ring) {
        for q in densify(a, b, 64) {
            let (_, azi1, _, _): (f64, f64, f64, f64) = g.inverse(c.y, c.x, q.y, q.x);
            let angle = azi1.to_radians();
            if let Some(p) = prev {
                let mut d = angle - p;
                while d > std::f64::consts::PI {
                    d -= 2.0 * std::f64::consts::PI;
                }
                while d < -std::f64::consts::PI {
                    d += 2.0 * std::f64::consts::PI;
                }
                total += d;
            } else {
                first = Some(angle);
            }
            prev = Some(angle);
        }
    }
    if let (Some(p), Some(f)) = (prev, first) {
        let mut d = f - p;
        while d > std::f64::consts::PI {
            d -= 2.0 * std::f64::consts::PI;
        }
        while d < -std::f64::consts::PI {
            d += 2.0 * std::f64::consts::PI;
        }
        total += d;
    }
    (total / (2.0 * std::f64::consts::PI)).round() as i64
}

fn oracle_polygon_contains(p: &Polygon, c: Coord) -> bool {
    oracle_winding(p.exterior(), c) != 0 && p.interiors().iter().all(|h| oracle_winding(h, c) == 0)
}

/// Oracle distance from `c` to a geometry (points, lines, polygons and multis).
fn oracle_distance(c: Coord, g: &Geometry) -> f64 {
    match g {
        Geometry::Point(p) => karney(c, p.0),
        Geometry::LineString(l) => {
            if l.0.len() == 1 {
                return karney(c, l.0[0]);
            }
            l.0.windows(2)
                .map(|w| oracle_segment(c, w[0], w[1]))
                .fold(f64::INFINITY, f64::min)
        }
        Geometry::MultiLineString(m) => {
            m.0.iter()
                .map(|l| oracle_distance(c, &Geometry::LineString(l.clone())))
                .fold(f64::INFINITY, f64::min)
        }
        Geometry::Polygon(p) => {
            if oracle_polygon_contains(p, c) {
                return 0.0;
            }
            std::iter::once(p.exterior())
                .chain(p.interiors())
                .flat_map(ring_edges)
                .map(|(a, b)| oracle_segment(c, a, b))
                .fold(f64::INFINITY, f64::min)
        }
        Geometry::MultiPolygon(m) => {
            m.0.iter()
                .map(|p| oracle_distance(c, &Geometry::Polygon(p.clone())))
                .fold(f64::INFINITY, f64::min)
        }
        other => panic!("oracle does not take {other:?}"),
    }
}

/// A star-shaped ring round `centre`: `n` vertices at increasing azimuths, each between
/// `r_min` and `r_max` metres out.
fn star_ring(rng: &mut ChaCha8Rng, centre: Coord, n: usize, r_min: f64, r_max: f64) -> LineString {
    let start: f64 = rng.random_range(0.0..360.0);
    let mut v: Vec<Coord> = (0..n)
        .map(|i| {
            let azi = start + 360.0 * (i as f64 + rng.random_range(0.1..0.9)) / n as f64;
            offset(centre, azi, rng.random_range(r_min..r_max))
        })
        .collect();
    v.push(v[0]);
    LineString(v)
}

/// A random polygon round `centre` of size `r` metres, with a hole half the time.
fn random_polygon(rng: &mut ChaCha8Rng, centre: Coord, r: f64) -> Polygon {
    let n = rng.random_range(3..9);
    let exterior = star_ring(rng, centre, n, 0.6 * r, r);
    let holes = if rng.random_bool(0.5) {
        let n = rng.random_range(3..7);
        vec![star_ring(rng, centre, n, 0.1 * r, 0.4 * r)]
    } else {
        vec![]
    };
    Polygon::new(exterior, holes)
}

/// A random line of 2..6 vertices starting near `centre`, steps up to `step` metres.
fn random_line(rng: &mut ChaCha8Rng, centre: Coord, step: f64) -> LineString {
    let n = rng.random_range(2..6);
    let mut v = vec![offset(
        centre,
        rng.random_range(0.0..360.0),
        rng.random_range(0.0..step),
    )];
    for _ in 1..n {
        let last = v[v.len() - 1];
        let d = if rng.random_bool(0.1) {
            0.0
        } else {
            rng.random_range(0.0..step)
        };
        v.push(offset(last, rng.random_range(0.0..360.0), d));
    }
    LineString(v)
}

/// A place to test at: Chongqing, high latitude, the antimeridian, anywhere.
fn random_centre(rng: &mut ChaCha8Rng, kind: usize) -> Coord {
    match kind % 4 {
        0 => coord! { x: rng.random_range(105.3..110.2), y: rng.random_range(28.2..32.2) },
        1 => {
            coord! { x: rng.random_range(-180.0..180.0), y: rng.random_range(70.0..89.5) * if rng.random_bool(0.5) { 1.0 } else { -1.0 } }
        }
        2 => {
            coord! { x: if rng.random_bool(0.5) { rng.random_range(179.5..180.0) } else { rng.random_range(-180.0..-179.5) }, y: rng.random_range(-60.0..60.0) }
        }
        _ => coord! { x: rng.random_range(-180.0..180.0), y: rng.random_range(-80.0..80.0) },
    }
}

/// Typical edge length at a place of `kind`: city scale in Chongqing, up to 1,500 km
/// elsewhere.
fn random_scale(rng: &mut ChaCha8Rng, kind: usize) -> f64 {
    match kind % 4 {
        0 => 10f64.powf(rng.random_range(1.0..3.7)),
        _ => 10f64.powf(rng.random_range(1.0..6.2)),
    }
}

fn assert_close(ours: f64, oracle: f64, what: &str) {
    assert!(
        (ours - oracle).abs() <= MM,
        "{what}: ours {ours} m, oracle {oracle} m (diff {} m)",
        ours - oracle
    );
}

#[test]
fn point_distance_is_karney() {
    let a = coord! { x: 106.5, y: 29.5 };
    let b = coord! { x: 106.51, y: 29.52 };
    assert_eq!(point_distance_m(a, b), karney(a, b));
    assert_eq!(point_distance_m(a, a), 0.0);
    // One degree of latitude at the equator: 110,574.389 m (GeographicLib).
    let d = point_distance_m(coord! { x: 0.0, y: 0.0 }, coord! { x: 0.0, y: 1.0 });
    assert!((d - 110_574.388_6).abs() < 1e-3, "{d}");
}

/// The point-to-point shortcuts (a prepared centre, the filter's `S_DWITHIN` between
/// two points) answer bit for bit what the general functions answer, at the radius
/// itself and one ulp either side of it, and their chord bound is never above Karney.
#[test]
fn point_shortcuts_answer_exactly_what_the_general_functions_do() {
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    for i in 0..20_000 {
        let a = random_centre(&mut rng, i);
        let b = offset(a, rng.random_range(0.0..360.0), random_scale(&mut rng, i));
        let (pa, pb) = (Geometry::Point(Point(a)), Geometry::Point(Point(b)));
        let centre = Centre::new(a);
        let d = point_distance_m(a, b);
        assert_eq!(centre.distance_m(b), d);
        assert!(centre.lower_bound_m(b) <= d, "{a:?} {b:?}");
        let between = distance_between_m(&pb, &pa);
        for r in [
            d,
            d.next_down(),
            d.next_up(),
            0.5 * d,
            2.0 * d,
            between,
            between.next_down(),
        ] {
            assert_eq!(
                centre.within_m(b, r),
                (d <= r).then_some(d),
                "{a:?} {b:?} {r}"
            );
            assert_eq!(
                within_distance_between_m(&pb, &pa, r),
                between <= r,
                "{a:?} {b:?} {r}"
            );
        }
    }
    // Unusable positions are never within any distance, as the general function has it.
    let bad = Geometry::Point(Point(coord! { x: 0.0, y: 95.0 }));
    let ok = Geometry::Point(Point(coord! { x: 0.0, y: 89.0 }));
    assert!(!within_distance_between_m(&bad, &ok, 1e9));
    assert!(distance_between_m(&bad, &ok).is_nan());
}

#[test]
fn lines_match_the_oracle_everywhere() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for case in 0..240 {
        let kind = case % 4;
        let centre = random_centre(&mut rng, kind);
        let scale = random_scale(&mut rng, kind);
        let line = Geometry::LineString(random_line(&mut rng, centre, scale));
        for _ in 0..3 {
            let p = offset(
                centre,
                rng.random_range(0.0..360.0),
                rng.random_range(0.0..2.0 * scale),
            );
            let ours = distance_to_geometry_m(p, &line);
            let oracle = oracle_distance(p, &line);
            assert_close(ours, oracle, &format!("case {case} {p:?} to {line:?}"));
            assert!(
                ours >= oracle - 1e-6,
                "below the minimum: {ours} < {oracle}"
            );
        }
    }
}

#[test]
fn polygons_with_holes_match_the_oracle() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut inside = 0;
    let mut in_hole = 0;
    for case in 0..160 {
        let kind = case % 4;
        let centre = random_centre(&mut rng, kind);
        let scale = random_scale(&mut rng, kind).min(2.0e6);
        let poly = random_polygon(&mut rng, centre, scale);
        let g = if rng.random_bool(0.3) {
            let other = random_polygon(&mut rng, offset(centre, 90.0, 3.0 * scale), scale);
            Geometry::MultiPolygon(MultiPolygon(vec![poly.clone(), other]))
        } else {
            Geometry::Polygon(poly.clone())
        };
        for _ in 0..4 {
            let p = offset(
                centre,
                rng.random_range(0.0..360.0),
                rng.random_range(0.0..1.5 * scale),
            );
            let ours = distance_to_geometry_m(p, &g);
            let oracle = oracle_distance(p, &g);
            assert_close(ours, oracle, &format!("case {case} {p:?} to {g:?}"));
            if oracle == 0.0 {
                inside += 1;
            } else if oracle_winding(poly.exterior(), p) != 0 {
                in_hole += 1;
            }
        }
    }
    assert!(
        inside > 50 && in_hole > 20,
        "inside {inside}, in holes {in_hole}"
    );
}

#[test]
fn a_line_passing_near_with_both_ends_far_is_near() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    for case in 0..40 {
        let kind = case % 4;
        let centre = random_centre(&mut rng, kind);
        let azi: f64 = rng.random_range(0.0..360.0);
        let half = rng.random_range(1_000.0..400_000.0);
        let a = offset(centre, azi, half);
        let b = offset(centre, azi + 180.0, half);
        // The geodesic a–b passes within metres of `centre`; p is off it sideways.
        let near = densify(a, b, 2)[1];
        let gap = rng.random_range(0.0..300.0);
        let p = offset(near, azi + 90.0, gap);
        let line = Geometry::LineString(LineString(vec![a, b]));
        let ours = distance_to_geometry_m(p, &line);
        assert_close(ours, oracle_distance(p, &line), &format!("case {case}"));
        assert!(
            ours < gap + 1.0 && ours < karney(p, a) / 2.0,
            "{ours} vs gap {gap}"
        );
    }
}

#[test]
fn vertices_and_degenerate_segments() {
    let a = coord! { x: 106.5, y: 29.5 };
    let b = coord! { x: 106.51, y: 29.5 };
    let line = Geometry::LineString(LineString(vec![a, a, b, b]));
    assert_eq!(distance_to_geometry_m(a, &line), 0.0);
    assert_eq!(distance_to_geometry_m(b, &line), 0.0);
    let mid = densify(a, b, 2)[1];
    assert!(distance_to_geometry_m(mid, &line) < 1e-6);
    let single = Geometry::LineString(LineString(vec![a]));
    let p = coord! { x: 106.5, y: 29.51 };
    assert_eq!(distance_to_geometry_m(p, &single), karney(p, a));
    let zero = Geometry::LineString(LineString(vec![a, a]));
    assert_eq!(distance_to_geometry_m(p, &zero), karney(p, a));
    let empty = Geometry::LineString(LineString(vec![]));
    assert_eq!(distance_to_geometry_m(p, &empty), f64::INFINITY);
    assert_eq!(within_m(p, &empty, 1e9), None);
}

#[test]
fn within_gives_exactly_the_distance_and_the_edge_case_radius() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for case in 0..300 {
        let kind = case % 4;
        let centre = random_centre(&mut rng, kind);
        let scale = random_scale(&mut rng, kind).min(1.0e6);
        let g = match case % 3 {
            0 => Geometry::Point(Point(offset(centre, 10.0, scale))),
            1 => Geometry::LineString(random_line(&mut rng, centre, scale)),
            _ => Geometry::Polygon(random_polygon(&mut rng, centre, scale)),
        };
        let p = offset(
            centre,
            rng.random_range(0.0..360.0),
            rng.random_range(0.0..2.0 * scale),
        );
        let d = distance_to_geometry_m(p, &g);
        assert_eq!(within_m(p, &g, d), Some(d), "case {case}: at the radius");
        if d > 0.0 {
            assert_eq!(
                within_m(p, &g, d.next_down()),
                None,
                "case {case}: just inside"
            );
        }
        assert_eq!(within_m(p, &g, d * 1.5 + 1.0), Some(d));
        let r = rng.random_range(0.0..3.0 * scale);
        assert_eq!(
            within_m(p, &g, r),
            (d <= r).then_some(d),
            "case {case} r {r}"
        );
    }
}

#[test]
fn points_inside_holes_measure_to_the_hole() {
    let centre = coord! { x: 106.55, y: 29.56 };
    let square = |r: f64| {
        let mut v: Vec<Coord> = [45.0, 135.0, 225.0, 315.0]
            .iter()
            .map(|&azi| offset(centre, azi, r))
            .collect();
        v.push(v[0]);
        LineString(v)
    };
    let poly = Geometry::Polygon(Polygon::new(square(1000.0), vec![square(300.0)]));
    // The centre is 300·cos 45° ≈ 212 m from the hole's edges.
    let d = distance_to_geometry_m(centre, &poly);
    assert_close(d, oracle_distance(centre, &poly), "centre of the hole");
    assert!((d - 212.1).abs() < 1.0, "{d}");
    assert!(!polygon_contains(&poly, centre));
    let in_ring = offset(centre, 0.0, 500.0);
    assert_eq!(distance_to_geometry_m(in_ring, &poly), 0.0);
    assert!(polygon_contains(&poly, in_ring));
}

#[test]
fn polygon_edges_are_geodesics_not_lon_lat_lines() {
    // A 10 km east–west edge at 60° N bulges 3.4 m north of the parallel.
    let (w, e) = (coord! { x: 10.0, y: 60.0 }, coord! { x: 10.18, y: 60.0 });
    let poly = Polygon::new(
        LineString(vec![
            w,
            e,
            coord! { x: 10.18, y: 59.9 },
            coord! { x: 10.0, y: 59.9 },
            w,
        ]),
        vec![],
    );
    let g = Geometry::Polygon(poly.clone());
    let on_parallel_mid = coord! { x: 10.09, y: 60.0 };
    let just_north = coord! { x: 10.09, y: 60.00002 }; // 2.2 m north of the parallel
    assert!(
        polygon_contains(&g, just_north),
        "inside the geodesic edge's bulge"
    );
    assert!(oracle_polygon_contains(&poly, just_north));
    assert_eq!(distance_to_geometry_m(on_parallel_mid, &g), 0.0);
    let bulge = oracle_segment(on_parallel_mid, w, e);
    assert!((bulge - 3.4).abs() < 0.1, "bulge {bulge}");
}

#[test]
fn antimeridian_and_pole_polygons() {
    // A square across the antimeridian: small, not the world minus a strip.
    let ring = LineString(vec![
        coord! { x: 179.9, y: -0.1 },
        coord! { x: -179.9, y: -0.1 },
        coord! { x: -179.9, y: 0.1 },
        coord! { x: 179.9, y: 0.1 },
        coord! { x: 179.9, y: -0.1 },
    ]);
    let g = Geometry::Polygon(Polygon::new(ring.clone(), vec![]));
    assert!(polygon_contains(&g, coord! { x: 180.0, y: 0.0 }));
    assert!(polygon_contains(&g, coord! { x: -179.95, y: 0.05 }));
    assert!(!polygon_contains(&g, coord! { x: 0.0, y: 0.0 }));
    let p = coord! { x: -179.8, y: 0.0 };
    assert_close(
        distance_to_geometry_m(p, &g),
        oracle_distance(p, &g),
        "east of it",
    );
    // A ring round the north pole at 80° N holds the pole.
    let cap: Vec<Coord> = (0..=12)
        .map(|i| coord! { x: wrap(30.0 * i as f64), y: 80.0 })
        .collect();
    let cap = Geometry::Polygon(Polygon::new(LineString(cap), vec![]));
    assert!(polygon_contains(&cap, coord! { x: 17.0, y: 89.0 }));
    assert!(polygon_contains(&cap, coord! { x: 0.0, y: 90.0 }));
    assert!(!polygon_contains(&cap, coord! { x: 17.0, y: 70.0 }));
    let q = coord! { x: 17.0, y: 75.0 };
    assert_close(
        distance_to_geometry_m(q, &cap),
        oracle_distance(q, &cap),
        "south of the cap",
    );
}

/// Oracle for geometry to geometry: densify `a`'s edges, measure each sample to `b` with
/// the point function (checked against its own oracle above), refine the best sample by
/// ternary search along its edge; and the same from `b`. No use of the vertex theorem.
fn oracle_between(a: &Geometry, b: &Geometry) -> f64 {
    one_way(a, b).min(one_way(b, a))
}

fn one_way(a: &Geometry, b: &Geometry) -> f64 {
    let edges: Vec<(Coord, Coord)> = match a {
        Geometry::Point(p) => vec![(p.0, p.0)],
        Geometry::LineString(l) => l.0.windows(2).map(|w| (w[0], w[1])).collect(),
        Geometry::Polygon(p) => std::iter::once(p.exterior())
            .chain(p.interiors())
            .flat_map(ring_edges)
            .collect(),
        other => panic!("oracle does not take {other:?}"),
    };
    let mut best = f64::INFINITY;
    for (u, v) in edges {
        let samples = densify(u, v, 60);
        let d: Vec<f64> = samples
            .iter()
            .map(|&s| distance_to_geometry_m(s, b))
            .collect();
        let i = (0..d.len())
            .min_by(|&i, &j| d[i].total_cmp(&d[j]))
            .unwrap_or(0);
        best = best.min(d[i]);
        let g = wgs84();
        let (s12, azi1, _, _): (f64, f64, f64, f64) = g.inverse(u.y, u.x, v.y, v.x);
        if s12 == 0.0 {
            continue;
        }
        let line = GeodesicLine::new(&g, u.y, u.x, azi1, None, None, None);
        let at = |s: f64| {
            let (_, lat, lon, ..) =
                line._gen_position(false, s, capability::LATITUDE | capability::LONGITUDE);
            distance_to_geometry_m(coord! { x: wrap(lon), y: lat }, b)
        };
        let step = s12 / 60.0;
        let (mut lo, mut hi) = (
            step * i.saturating_sub(1) as f64,
            (step * (i + 1) as f64).min(s12),
        );
        for _ in 0..60 {
            let m1 = lo + (hi - lo) / 3.0;
            let m2 = hi - (hi - lo) / 3.0;
            if at(m1) <= at(m2) {
                hi = m2;
            } else {
                lo = m1;
            }
        }
        best = best.min(at(0.5 * (lo + hi)));
    }
    best
}

#[test]
fn geometry_to_geometry_matches_the_oracle() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut zero = 0;
    for case in 0..90 {
        let kind = case % 4;
        let centre = random_centre(&mut rng, kind);
        let scale = random_scale(&mut rng, kind).min(3.0e5);
        let make = |rng: &mut ChaCha8Rng, k: usize| {
            let c = offset(
                centre,
                rng.random_range(0.0..360.0),
                rng.random_range(0.0..2.0 * scale),
            );
            match k % 3 {
                0 => Geometry::Point(Point(c)),
                1 => Geometry::LineString(random_line(rng, c, scale)),
                _ => Geometry::Polygon(random_polygon(rng, c, scale)),
            }
        };
        let a = make(&mut rng, case / 3 + 1);
        let b = make(&mut rng, case);
        let ours = distance_between_m(&a, &b);
        let oracle = oracle_between(&a, &b);
        assert_close(ours, oracle, &format!("case {case}: {a:?} / {b:?}"));
        assert_eq!(ours, distance_between_m(&b, &a), "symmetric");
        if ours == 0.0 {
            zero += 1;
        }
        assert_eq!(within_distance_m(&a, &b, ours), Some(ours));
        if ours > 0.0 {
            assert_eq!(within_distance_m(&a, &b, ours.next_down()), None);
        }
    }
    assert!(zero > 10, "only {zero} intersecting pairs");
}

#[test]
fn crossing_lines_are_at_distance_zero() {
    let c = coord! { x: 106.5, y: 29.5 };
    let a = Geometry::LineString(LineString(vec![
        offset(c, 0.0, 5000.0),
        offset(c, 180.0, 5000.0),
    ]));
    let b = Geometry::LineString(LineString(vec![
        offset(c, 90.0, 5000.0),
        offset(c, 270.0, 5000.0),
    ]));
    assert_eq!(distance_between_m(&a, &b), 0.0);
    let p = PreparedGeometry::new(&a);
    assert!(p.intersects(&PreparedGeometry::new(&b)));
    // A line wholly inside a polygon, touching nothing.
    let square: Vec<Coord> = [45.0, 135.0, 225.0, 315.0, 45.0]
        .iter()
        .map(|&azi| offset(c, azi, 20_000.0))
        .collect();
    let poly = Geometry::Polygon(Polygon::new(LineString(square), vec![]));
    assert_eq!(distance_between_m(&a, &poly), 0.0);
}

#[test]
fn search_box_holds_every_point_within_the_radius() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for case in 0..3000 {
        let kind = case % 4;
        let p = random_centre(&mut rng, kind);
        let radius = match case % 5 {
            0 => rng.random_range(0.0..1000.0),
            1 => rng.random_range(0.0..50_000.0),
            2 => rng.random_range(0.0..2_000_000.0),
            3 => 10f64.powf(rng.random_range(0.0..7.0)),
            _ => 500.0,
        };
        let boxes = search_box(p, radius).expect("valid");
        assert!(!boxes.is_empty() && boxes.len() <= 2);
        for _ in 0..5 {
            let d = if rng.random_bool(0.5) {
                radius
            } else {
                rng.random_range(0.0..=radius)
            };
            let q = offset(p, rng.random_range(0.0..360.0), d);
            let within = |b: &Bbox| {
                q.x >= b.min_lon && q.x <= b.max_lon && q.y >= b.min_lat && q.y <= b.max_lat
            };
            assert!(
                boxes.iter().any(within),
                "case {case}: {q:?} at {d} m of {p:?} outside {boxes:?}"
            );
        }
    }
    // Tight at city scale: 500 m at 29.5° N is about ±0.004511° lat and ±0.005157° lon.
    let b = search_box(coord! { x: 106.5, y: 29.5 }, 500.0).expect("valid");
    assert_eq!(b.len(), 1);
    assert!((b[0].max_lat - 29.5 - 0.004_511).abs() < 1e-6, "{b:?}");
    assert!((b[0].max_lon - 106.5 - 0.005_157).abs() < 1e-6, "{b:?}");
    // Across the antimeridian: two boxes; over a pole: every longitude.
    assert_eq!(
        search_box(coord! { x: 179.999, y: 10.0 }, 1000.0)
            .expect("valid")
            .len(),
        2
    );
    let polar = search_box(coord! { x: 10.0, y: 89.999 }, 1000.0).expect("valid");
    assert_eq!(
        (polar[0].min_lon, polar[0].max_lon, polar[0].max_lat),
        (-180.0, 180.0, 90.0)
    );
}

/// The boxes around runs of a line's edges hold every point within the distance of the
/// line, and many fewer lon/lat square degrees than the one box around it.
#[test]
fn boxes_around_a_lines_parts_hold_every_point_near_it() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let mut near = 0;
    for case in 0..300 {
        let kind = case % 4;
        let centre = random_centre(&mut rng, kind);
        let step = random_scale(&mut rng, kind);
        let n = [2, 5, 40, 600][case % 4];
        let mut coords = vec![centre];
        for _ in 1..n {
            let last = *coords.last().unwrap();
            coords.push(offset(last, rng.random_range(0.0..360.0), step));
        }
        let line = Geometry::LineString(LineString(coords.clone()));
        let radius = step * rng.random_range(0.05..2.0);
        let boxes = around_parts(&line, radius).expect("valid");
        assert!(!boxes.is_empty() && boxes.len() <= 512, "{}", boxes.len());
        for _ in 0..40 {
            // Near a random vertex, or near the middle of a random edge.
            let i = rng.random_range(0..coords.len());
            let q = offset(
                coords[i],
                rng.random_range(0.0..360.0),
                rng.random_range(0.0..2.0 * radius),
            );
            let inside = boxes.iter().any(|b| {
                q.x >= b.min_lon && q.x <= b.max_lon && q.y >= b.min_lat && q.y <= b.max_lat
            });
            if distance_to_geometry_m(q, &line) <= radius {
                near += 1;
                assert!(
                    inside,
                    "case {case}: {q:?} within {radius} m of the line, in no box"
                );
            }
        }
    }
    assert!(near > 3000, "{near}");
    // A 3 km diagonal pipeline in the city, 200 m either side: the parts cover far less.
    let pipe: Vec<Coord> = (0..=30)
        .map(|i| coord! { x: 106.5 + 0.0007 * i as f64, y: 29.5 + 0.0007 * i as f64 })
        .collect();
    let g = Geometry::LineString(LineString(pipe));
    let parts = around_parts(&g, 200.0).unwrap();
    let whole = riskmap::query::geodesic::around_geometry(&g, 200.0).unwrap();
    assert_eq!(whole.len(), 1);
    let w = &whole[0];
    let (mut covered, mut all) = (0, 0);
    for i in 0..100 {
        for j in 0..100 {
            let x = w.min_lon + (w.max_lon - w.min_lon) * (i as f64 + 0.5) / 100.0;
            let y = w.min_lat + (w.max_lat - w.min_lat) * (j as f64 + 0.5) / 100.0;
            all += 1;
            covered += parts
                .iter()
                .any(|b| b.contains_coord(coord! { x: x, y: y })) as usize;
        }
    }
    assert!(covered * 2 < all, "{covered} of {all}: {parts:?}");
    // Polygons keep one box: their inside is near too.
    let square = Geometry::Polygon(Polygon::new(
        LineString(vec![
            coord! { x: 106.0, y: 29.0 },
            coord! { x: 106.1, y: 29.0 },
            coord! { x: 106.1, y: 29.1 },
            coord! { x: 106.0, y: 29.0 },
        ]),
        vec![],
    ));
    assert_eq!(around_parts(&square, 10.0).unwrap().len(), 1);
}

#[test]
fn search_box_refuses_bad_input() {
    let p = coord! { x: 106.5, y: 29.5 };
    assert!(matches!(
        search_box(p, -1.0),
        Err(GeodesicError::BadDistance {
            what: "radius_m",
            ..
        })
    ));
    assert!(search_box(p, f64::NAN).is_err());
    assert!(search_box(p, f64::INFINITY).is_err());
    let err = search_box(coord! { x: 106.5, y: 91.0 }, 10.0).expect_err("lat 91");
    assert!(err.to_string().contains("point"), "{err}");
    assert!(check_position(coord! { x: f64::NAN, y: 0.0 }, "lon").is_err());
    let g = Geometry::LineString(LineString(vec![p, coord! { x: 200.0, y: 0.0 }]));
    let err = check_geometry(&g, "geometry").expect_err("lon 200");
    assert!(err.to_string().contains("geometry position 1"), "{err}");
    assert!(check_geometry(&Geometry::Point(Point(p)), "geometry").is_ok());
}

#[test]
fn bad_numbers_give_nan_not_a_panic() {
    let p = coord! { x: f64::NAN, y: 29.5 };
    let line = Geometry::LineString(LineString(vec![
        coord! { x: 106.5, y: 29.5 },
        coord! { x: 106.6, y: 29.6 },
    ]));
    assert!(distance_to_geometry_m(p, &line).is_nan());
    assert_eq!(within_m(p, &line, 1000.0), None);
    let bad_line = Geometry::LineString(LineString(vec![
        coord! { x: 106.5, y: 29.5 },
        coord! { x: 106.6, y: f64::NAN },
    ]));
    let q = coord! { x: 106.5, y: 29.5 };
    assert!(distance_to_geometry_m(q, &bad_line).is_nan());
    assert!(distance_between_m(&line, &bad_line).is_nan());
    assert!(distance_to_geometry_m(coord! { x: 106.5, y: 95.0 }, &line).is_nan());
    assert!(point_distance_m(q, coord! { x: 106.5, y: 95.0 }).is_nan());
    assert!(min_distance_to_rect_m(p, &Bbox::new(0.0, 0.0, 1.0, 1.0).expect("box")).is_nan());
}

#[test]
fn rect_lower_bound_is_never_above_the_distance_and_tight_in_the_city() {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    for case in 0..4000 {
        let kind = case % 4;
        let p = random_centre(&mut rng, kind);
        let c = random_centre(&mut rng, kind);
        let span = if kind == 0 { 0.05 } else { 20.0 };
        let (w, s) = (c.x, c.y.clamp(-89.0, 89.0));
        let e = (w + rng.random_range(0.0..span)).min(180.0);
        let n = (s + rng.random_range(0.0..span)).min(90.0);
        let rect = Bbox::new(w, s, e, n).expect("box");
        let bound = min_distance_to_rect_m(p, &rect);
        for _ in 0..5 {
            let q = coord! {
                x: rng.random_range(rect.min_lon..=rect.max_lon),
                y: rng.random_range(rect.min_lat..=rect.max_lat),
            };
            assert!(
                bound <= karney(p, q),
                "case {case}: {bound} > {} to {q:?}",
                karney(p, q)
            );
        }
        for q in [
            coord! { x: rect.min_lon, y: rect.min_lat },
            coord! { x: rect.max_lon, y: rect.max_lat },
            coord! { x: rect.min_lon, y: p.y.clamp(rect.min_lat, rect.max_lat) },
            coord! { x: rect.max_lon, y: p.y.clamp(rect.min_lat, rect.max_lat) },
            coord! { x: p.x.clamp(rect.min_lon, rect.max_lon), y: rect.min_lat },
            coord! { x: p.x.clamp(rect.min_lon, rect.max_lon), y: rect.max_lat },
        ] {
            assert!(
                bound <= karney(p, q),
                "case {case}: {bound} > {} to {q:?}",
                karney(p, q)
            );
        }
    }
    // Tightness near Chongqing: boxes a few km off, bound within 1e-3 of the nearest
    // point of the box's edges (sampled finely).
    for _ in 0..300 {
        let p = random_centre(&mut rng, 0);
        let w = p.x + rng.random_range(-0.05..0.05);
        let s = p.y + rng.random_range(-0.05..0.05);
        let rect = Bbox::new(w, s, w + 0.01, s + 0.01).expect("box");
        let bound = min_distance_to_rect_m(p, &rect);
        let mut nearest = f64::INFINITY;
        for i in 0..=400 {
            let f = i as f64 / 400.0;
            for q in [
                coord! { x: w + 0.01 * f, y: s },
                coord! { x: w + 0.01 * f, y: s + 0.01 },
                coord! { x: w, y: s + 0.01 * f },
                coord! { x: w + 0.01, y: s + 0.01 * f },
            ] {
                nearest = nearest.min(karney(p, q));
            }
        }
        let inside = p.x >= w && p.x <= w + 0.01 && p.y >= s && p.y <= s + 0.01;
        if inside {
            assert_eq!(bound, 0.0);
        } else {
            assert!(
                bound <= nearest + 1e-9 && bound >= nearest * 0.999 - 0.05,
                "{bound} vs {nearest}"
            );
        }
    }
    // Round the globe: a box just east of the antimeridian seen from just west of it.
    let rect = Bbox::new(-180.0, 0.0, -179.9, 1.0).expect("box");
    let near = min_distance_to_rect_m(coord! { x: 179.99, y: 0.5 }, &rect);
    assert!(near > 1000.0 && near <= 1113.2, "{near}");
}

#[test]
fn geodesic_bounds_hold_every_point_of_every_edge() {
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    for case in 0..400 {
        let kind = case % 4;
        let centre = random_centre(&mut rng, kind);
        let scale = random_scale(&mut rng, kind).min(2.0e6);
        let g = if case % 2 == 0 {
            Geometry::LineString(random_line(&mut rng, centre, scale))
        } else {
            Geometry::Polygon(random_polygon(&mut rng, centre, scale))
        };
        let b = geodesic_bounds(&g).expect("not empty");
        let edges: Vec<(Coord, Coord)> = match &g {
            Geometry::LineString(l) => l.0.windows(2).map(|w| (w[0], w[1])).collect(),
            Geometry::Polygon(p) => ring_edges(p.exterior()),
            _ => unreachable!(),
        };
        for (u, v) in edges {
            for q in densify(u, v, 50) {
                assert!(
                    q.x >= b.min_lon && q.x <= b.max_lon && q.y >= b.min_lat && q.y <= b.max_lat,
                    "case {case}: {q:?} outside {b:?}"
                );
            }
        }
    }
    // City scale: the bulge is centimetres.
    let line = Geometry::LineString(LineString(vec![
        coord! { x: 106.5, y: 29.5 },
        coord! { x: 106.51, y: 29.5 },
    ]));
    let b = geodesic_bounds(&line).expect("not empty");
    assert!(b.max_lat > 29.5 && b.max_lat < 29.5 + 2e-7, "{b:?}");
    assert_eq!(
        geodesic_bounds(&Geometry::LineString(LineString(vec![]))),
        None
    );
}

/// The premise of the unimodality proof in `segment.rs`: the geodesic scale M21 stays
/// positive to 9,000 km in every direction from everywhere.
#[test]
fn geodesic_scale_is_positive_to_9000_km() {
    let g = wgs84();
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    for _ in 0..5000 {
        let lat: f64 = rng.random_range(-90.0..=90.0);
        let azi: f64 = rng.random_range(-180.0..180.0);
        let (_, _, _, _m12, _big_m12, m21): (f64, f64, f64, f64, f64, f64) =
            g.direct(lat, 0.0, azi, 9.0e6);
        assert!(m21 > 0.05, "M21 {m21} at lat {lat} azi {azi}");
    }
}

/// Speed, ns per call: `cargo test --release --test query_geodesic -- --ignored --nocapture`.
#[test]
#[ignore]
fn speed() {
    use std::hint::black_box;
    use std::time::Instant;
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let centre = coord! { x: 106.55, y: 29.56 };
    let points: Vec<Coord> = (0..2000)
        .map(|_| {
            offset(
                centre,
                rng.random_range(0.0..360.0),
                rng.random_range(0.0..3000.0),
            )
        })
        .collect();
    let time = |name: &str, f: &mut dyn FnMut(Coord) -> f64| {
        let start = Instant::now();
        let mut sum = 0.0;
        for _ in 0..5 {
            for &p in &points {
                sum += f(black_box(p));
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / (5 * points.len()) as f64;
        println!("{name:<52} {ns:>9.0} ns/call  (checksum {sum:.3})");
    };
    let q = offset(centre, 30.0, 400.0);
    time("point_distance_m", &mut |p| point_distance_m(p, q));
    let pt = Geometry::Point(Point(q));
    time("within_m point, 500 m (27% hits)", &mut |p| {
        within_m(p, &pt, 500.0).unwrap_or(0.0)
    });
    // A 100-vertex line wandering 10 km through the points.
    let mut v = vec![offset(centre, 270.0, 5000.0)];
    for i in 1..100 {
        let last = v[i - 1];
        v.push(offset(last, 90.0 + rng.random_range(-30.0..30.0), 100.0));
    }
    let line = Geometry::LineString(LineString(v));
    time("distance_to_geometry_m, 100-vertex line", &mut |p| {
        distance_to_geometry_m(p, &line)
    });
    let prepared = PreparedGeometry::new(&line);
    time("PreparedGeometry::distance_from_m, same line", &mut |p| {
        prepared.distance_from_m(p)
    });
    time("within_m 100-vertex line, 200 m", &mut |p| {
        within_m(p, &line, 200.0).unwrap_or(0.0)
    });
    time("PreparedGeometry::within_m, same line, 200 m", &mut |p| {
        prepared.within_m(p, 200.0).unwrap_or(0.0)
    });
    // A 40-vertex polygon with two 20-vertex holes, 2.5 km across.
    let ring = |c: Coord, n: usize, r: f64| {
        let mut v: Vec<Coord> = (0..n)
            .map(|i| offset(c, 360.0 * i as f64 / n as f64, r))
            .collect();
        v.push(v[0]);
        LineString(v)
    };
    let poly = Geometry::Polygon(Polygon::new(
        ring(centre, 40, 2500.0),
        vec![
            ring(offset(centre, 0.0, 1000.0), 20, 400.0),
            ring(offset(centre, 180.0, 1000.0), 20, 400.0),
        ],
    ));
    time(
        "polygon_contains, 80-vertex polygon with 2 holes",
        &mut |p| f64::from(u8::from(polygon_contains(&poly, p))),
    );
    let prepared_poly = PreparedGeometry::new(&poly);
    time("PreparedGeometry::contains, same polygon", &mut |p| {
        f64::from(u8::from(prepared_poly.contains(p)))
    });
    time("distance_to_geometry_m, same polygon", &mut |p| {
        distance_to_geometry_m(p, &poly)
    });
    let rect = Bbox::new(106.56, 29.57, 106.57, 29.58).expect("box");
    time("min_distance_to_rect_m", &mut |p| {
        min_distance_to_rect_m(p, &rect)
    });
    time("search_box 500 m", &mut |p| {
        search_box(p, 500.0).map(|b| b[0].min_lon).unwrap_or(0.0)
    });
}
