//! Clipping in tile units against the buffered tile box. Lines: Liang–Barsky per
//! segment, splitting a line into parts where it leaves the box and re-enters.
//! Polygons: [`clip_polygon`], an exact boolean intersection with the box on the
//! integer tile grid (i_overlay, the engine under geo's `BooleanOps`), so that the
//! rings written are valid as MVT 2.1 requires (no self-intersection or
//! self-tangency) even where the box cuts a concave shape or snapping to the grid
//! makes rings touch.

use i_overlay::core::fill_rule::FillRule;
use i_overlay::core::overlay::{IntOverlayOptions, Overlay, ShapeType};
use i_overlay::core::overlay_rule::OverlayRule;
use i_overlay::core::solver::{Precision, Solver};
use i_overlay::i_float::int::point::IntPoint;

/// An axis-aligned box in tile units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipBox {
    pub min: f64,
    pub max: f64,
}

impl ClipBox {
    pub fn contains(&self, p: [f64; 2]) -> bool {
        p[0] >= self.min && p[0] <= self.max && p[1] >= self.min && p[1] <= self.max
    }
}

/// The part of segment `a`-`b` inside the box, as parameters `(t0, t1)` on it.
fn liang_barsky(a: [f64; 2], b: [f64; 2], bx: &ClipBox) -> Option<(f64, f64)> {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a[0] - bx.min),
        (dx, bx.max - a[0]),
        (-dy, a[1] - bx.min),
        (dy, bx.max - a[1]),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let r = q / p;
            if p < 0.0 {
                if r > t1 {
                    return None;
                }
                t0 = t0.max(r);
            } else {
                if r < t0 {
                    return None;
                }
                t1 = t1.min(r);
            }
        }
    }
    Some((t0, t1))
}

fn lerp(a: [f64; 2], b: [f64; 2], t: f64) -> [f64; 2] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]
}

/// Clips a line; returns its parts inside the box (each of two or more points).
pub fn clip_line(pts: &[[f64; 2]], bx: &ClipBox, out: &mut Vec<Vec<[f64; 2]>>) {
    let (mut flat, mut parts) = (Vec::new(), Vec::new());
    clip_line_into(pts, bx, &mut flat, &mut parts);
    out.extend(parts.into_iter().map(|r| flat[r].to_vec()));
}

/// Clips a line into reused buffers: the parts' points go into `points`, their ranges
/// into `parts` (both cleared first). The hot path of tile drawing: no allocation per
/// part.
pub fn clip_line_into(
    pts: &[[f64; 2]],
    bx: &ClipBox,
    points: &mut Vec<[f64; 2]>,
    parts: &mut Vec<std::ops::Range<usize>>,
) {
    points.clear();
    parts.clear();
    if pts.len() == 1 {
        if bx.contains(pts[0]) {
            points.push(pts[0]);
            parts.push(0..1);
        }
        return;
    }
    // Start of the part being built in `points`, if one is open.
    let mut open: Option<usize> = None;
    let close = |open: &mut Option<usize>,
                 points: &mut Vec<[f64; 2]>,
                 parts: &mut Vec<std::ops::Range<usize>>| {
        if let Some(start) = open.take() {
            if points.len() - start >= 2 {
                parts.push(start..points.len());
            } else {
                points.truncate(start);
            }
        }
    };
    for w in pts.windows(2) {
        let (a, b) = (w[0], w[1]);
        match liang_barsky(a, b, bx) {
            None => close(&mut open, points, parts),
            Some((t0, t1)) => {
                let start = if t0 > 0.0 { lerp(a, b, t0) } else { a };
                let end = if t1 < 1.0 { lerp(a, b, t1) } else { b };
                if open.is_none() || t0 > 0.0 {
                    close(&mut open, points, parts);
                    open = Some(points.len());
                    points.push(start);
                }
                points.push(end);
                if t1 < 1.0 {
                    close(&mut open, points, parts);
                }
            }
        }
    }
    close(&mut open, points, parts);
}

/// Twice the signed area of a closed ring (positive: the MVT exterior winding in
/// y-down tile units).
pub fn ring_area2(r: &[(i32, i32)]) -> i64 {
    r.windows(2)
        .map(|w| w[0].0 as i64 * w[1].1 as i64 - w[1].0 as i64 * w[0].1 as i64)
        .sum()
}

/// Clips a polygon given as all its rings, in tile units (exteriors and holes of
/// every part, any orientation: inside is decided even-odd, so a hole is a hole
/// wherever simplification moved it), to the box, on the integer grid. Returns the
/// shapes left, each an exterior ring followed by its holes, every ring closed and
/// wound as MVT 2.1 wants (exteriors of positive area in y-down tile units, holes
/// negative), valid in the OGC sense (i_overlay's OGC extraction): rings that the
/// box or the grid would make cross, touch or collapse are resolved, not written.
pub fn clip_polygon(rings: &[Vec<[f64; 2]>], bx: &ClipBox) -> Vec<Vec<Vec<(i32, i32)>>> {
    // First a cheap Sutherland–Hodgman pass against a box three times as wide: it
    // bounds the coordinates (to i32, and the vertex count of huge shapes at high
    // zoom), and the zero-width edges it may leave lie on that wider border, which
    // the exact intersection below cuts away.
    let size = bx.max - bx.min;
    let wide = ClipBox {
        min: bx.min - size,
        max: bx.max + size,
    };
    let mut overlay = Overlay::new_custom(
        rings.iter().map(Vec::len).sum::<usize>() + 4,
        IntOverlayOptions::ogc(),
        // Snapping within one unit, never more: with the frame drawn one unit
        // inside the box, what comes out stays inside it.
        Solver {
            precision: Precision::ABSOLUTE,
            ..Solver::AUTO
        },
    );
    let mut contour: Vec<IntPoint> = Vec::new();
    for ring in rings {
        contour.clear();
        for p in clip_ring(ring, &wide) {
            let q = IntPoint::new(p[0].round() as i32, p[1].round() as i32);
            if contour.last() != Some(&q) {
                contour.push(q);
            }
        }
        if contour.len() > 1 && contour.first() == contour.last() {
            contour.pop();
        }
        if contour.len() >= 3 {
            overlay.add_contour(&contour, ShapeType::Subject);
        }
    }
    let (lo, hi) = (bx.min.ceil() as i32 + 1, bx.max.floor() as i32 - 1);
    let frame = [
        IntPoint::new(lo, lo),
        IntPoint::new(hi, lo),
        IntPoint::new(hi, hi),
        IntPoint::new(lo, hi),
    ];
    overlay.add_contour(&frame, ShapeType::Clip);
    overlay
        .overlay(OverlayRule::Intersect, FillRule::EvenOdd)
        .into_iter()
        .map(|shape| {
            shape
                .into_iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let mut r: Vec<(i32, i32)> = c.iter().map(|p| (p.x, p.y)).collect();
                    r.push(*r.first()?);
                    let area = ring_area2(&r);
                    if r.len() < 4 || area == 0 {
                        return None;
                    }
                    if (area > 0) != (i == 0) {
                        r.reverse();
                    }
                    Some(r)
                })
                .collect::<Vec<_>>()
        })
        .filter(|shape| !shape.is_empty())
        .collect()
}

/// Clips a closed ring (first point = last) by Sutherland–Hodgman against the four
/// edges; returns the clipped ring, closed, or an empty vector when nothing is left.
/// The box is convex, so the result covers exactly the intersection, but a concave
/// ring can come out with zero-width edges along the border: [`clip_polygon`] uses
/// it only as a first, coarse pass.
fn clip_ring(ring: &[[f64; 2]], bx: &ClipBox) -> Vec<[f64; 2]> {
    let open = if ring.len() > 1 && ring.first() == ring.last() {
        &ring[..ring.len() - 1]
    } else {
        ring
    };
    let mut poly: Vec<[f64; 2]> = open.to_vec();
    // Each edge: keep points where inside(p) holds; intersect crossing segments.
    type Edge = (usize, f64, bool); // axis, value, keep >= value
    let edges: [Edge; 4] = [
        (0, bx.min, true),
        (0, bx.max, false),
        (1, bx.min, true),
        (1, bx.max, false),
    ];
    for (axis, v, keep_ge) in edges {
        if poly.is_empty() {
            break;
        }
        let inside = |p: &[f64; 2]| if keep_ge { p[axis] >= v } else { p[axis] <= v };
        let mut next = Vec::with_capacity(poly.len() + 4);
        for i in 0..poly.len() {
            let cur = poly[i];
            let prev = poly[(i + poly.len() - 1) % poly.len()];
            let (ci, pi) = (inside(&cur), inside(&prev));
            if ci != pi {
                let t = (v - prev[axis]) / (cur[axis] - prev[axis]);
                let mut x = lerp(prev, cur, t);
                x[axis] = v;
                next.push(x);
            }
            if ci {
                next.push(cur);
            }
        }
        poly = next;
    }
    if poly.len() < 3 {
        return Vec::new();
    }
    let first = poly[0];
    poly.push(first);
    poly
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOX: ClipBox = ClipBox {
        min: -64.0,
        max: 4160.0,
    };

    #[test]
    fn a_line_leaving_and_reentering_is_split() {
        let line = [[0.0, 100.0], [5000.0, 100.0], [5000.0, 200.0], [0.0, 200.0]];
        let mut parts = Vec::new();
        clip_line(&line, &BOX, &mut parts);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], vec![[0.0, 100.0], [4160.0, 100.0]]);
        assert_eq!(parts[1], vec![[4160.0, 200.0], [0.0, 200.0]]);
    }

    #[test]
    fn a_ring_around_the_box_becomes_the_box() {
        let ring = [
            [-1e5, -1e5],
            [1e5, -1e5],
            [1e5, 1e5],
            [-1e5, 1e5],
            [-1e5, -1e5],
        ];
        let r = clip_ring(&ring, &BOX);
        assert_eq!(r.len(), 5);
        assert!(r.iter().all(|p| BOX.contains(*p)));
    }

    /// A star-shaped ring (simple, often concave) around `c`, radii in `r`.
    fn star(c: [f64; 2], radii: &[f64], turn: f64) -> Vec<[f64; 2]> {
        let n = radii.len();
        let mut ring: Vec<[f64; 2]> = radii
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let a = turn + i as f64 / n as f64 * std::f64::consts::TAU;
                [c[0] + r * a.cos(), c[1] + r * a.sin()]
            })
            .collect();
        ring.push(ring[0]);
        ring
    }

    fn to_geo(shapes: &[Vec<Vec<(i32, i32)>>]) -> geo_types::MultiPolygon {
        let ls = |r: &Vec<(i32, i32)>| {
            geo_types::LineString::from(
                r.iter()
                    .map(|&(x, y)| (x as f64, y as f64))
                    .collect::<Vec<_>>(),
            )
        };
        geo_types::MultiPolygon(
            shapes
                .iter()
                .map(|s| geo_types::Polygon::new(ls(&s[0]), s[1..].iter().map(ls).collect()))
                .collect(),
        )
    }

    /// What every clipped polygon must be: inside the box, closed, exteriors positive
    /// and holes negative, valid (no crossing or touching rings, OGC), and of the
    /// area of the exact intersection up to snapping (half a unit along the outline).
    fn check_clipped(
        rings: &[Vec<[f64; 2]>],
        shapes: &[Vec<Vec<(i32, i32)>>],
    ) -> Result<(), String> {
        use geo::{Area, BooleanOps, Validation};
        for shape in shapes {
            for (i, r) in shape.iter().enumerate() {
                if r.len() < 4 || r.first() != r.last() {
                    return Err(format!("ring {r:?} not closed"));
                }
                if (ring_area2(r) > 0) != (i == 0) {
                    return Err(format!("ring {i} wound the wrong way"));
                }
                for &(x, y) in r {
                    if !BOX.contains([x as f64, y as f64]) {
                        return Err(format!("({x}, {y}) outside the box"));
                    }
                }
            }
        }
        let got = to_geo(shapes);
        if let Err(e) = got.check_validation() {
            return Err(format!("invalid output: {e}"));
        }
        // The exact intersection in floating point, by geo (even-odd: xor of rings).
        let mut source = geo_types::MultiPolygon(vec![]);
        for r in rings {
            let p = geo_types::Polygon::new(
                geo_types::LineString::from(r.iter().map(|p| (p[0], p[1])).collect::<Vec<_>>()),
                vec![],
            );
            source = source.xor(&geo_types::MultiPolygon(vec![p]));
        }
        let frame = geo_types::Rect::new((BOX.min, BOX.min), (BOX.max, BOX.max)).to_polygon();
        let exact = source.intersection(&geo_types::MultiPolygon(vec![frame]));
        let perimeter: f64 = rings
            .iter()
            .map(|r| {
                r.windows(2)
                    .map(|w| (w[1][0] - w[0][0]).hypot(w[1][1] - w[0][1]))
                    .sum::<f64>()
            })
            .sum::<f64>()
            + 4.0 * (BOX.max - BOX.min);
        let (a, b) = (got.unsigned_area(), exact.unsigned_area());
        if (a - b).abs() > perimeter {
            return Err(format!("area {a}, exact {b}"));
        }
        Ok(())
    }

    #[test]
    fn a_concave_polygon_cut_by_the_box_stays_valid() {
        // A U lying on its side, its base left of the box and its arms reaching in:
        // Sutherland–Hodgman alone joins the arms with a zero-width edge along the
        // border (a self-touching ring); they must come out as two polygons.
        let u = vec![
            [-1000.0, 100.0],
            [2000.0, 100.0],
            [2000.0, 1000.0],
            [-500.0, 1000.0],
            [-500.0, 2000.0],
            [2000.0, 2000.0],
            [2000.0, 3000.0],
            [-1000.0, 3000.0],
            [-1000.0, 100.0],
        ];
        let shapes = clip_polygon(std::slice::from_ref(&u), &BOX);
        assert_eq!(shapes.len(), 2, "{shapes:?}");
        check_clipped(std::slice::from_ref(&u), &shapes).unwrap();
        // With a hole, and as a frame the box lies in: the hole comes out as a hole.
        let outer = star([2048.0, 2048.0], &[9000.0; 8], 0.1);
        let hole = star([2048.0, 2048.0], &[1000.0; 8], 0.3);
        let shapes = clip_polygon(&[outer.clone(), hole.clone()], &BOX);
        assert_eq!(shapes.len(), 1);
        assert_eq!(shapes[0].len(), 2, "exterior and hole");
        check_clipped(&[outer, hole], &shapes).unwrap();
    }

    proptest! {
        #[test]
        fn clipped_polygons_are_valid_wound_and_of_the_exact_area(
            c in (-3000.0f64..7000.0, -3000.0f64..7000.0),
            radii in proptest::collection::vec(200.0f64..6000.0, 3..40),
            hole in proptest::option::of(0.05f64..0.9),
            turn in 0.0f64..6.3,
            scale in prop_oneof![Just(1.0f64), Just(0.01), Just(0.0007)],
        ) {
            // Scaled down, shapes become a few units wide: snapping to the grid then
            // makes rings touch and collapse, which must be resolved, not written.
            let radii: Vec<f64> = radii.iter().map(|r| r * scale).collect();
            let c = [c.0, c.1];
            let mut rings = vec![star(c, &radii, turn)];
            if let Some(h) = hole {
                let inner = radii.iter().cloned().fold(f64::MAX, f64::min) * h;
                rings.push(star(c, &[inner; 7], turn * 2.0));
            }
            let shapes = clip_polygon(&rings, &BOX);
            prop_assert!(check_clipped(&rings, &shapes).is_ok(), "{:?}", check_clipped(&rings, &shapes));
        }

        #[test]
        fn clipped_lines_stay_inside_the_buffered_box(pts in proptest::collection::vec((-10000.0f64..14000.0, -10000.0f64..14000.0), 2..20)) {
            let pts: Vec<[f64; 2]> = pts.into_iter().map(|(x, y)| [x, y]).collect();
            let mut parts = Vec::new();
            clip_line(&pts, &BOX, &mut parts);
            for part in &parts {
                prop_assert!(part.len() >= 2);
                for p in part {
                    prop_assert!(p[0] >= BOX.min - 1e-6 && p[0] <= BOX.max + 1e-6 && p[1] >= BOX.min - 1e-6 && p[1] <= BOX.max + 1e-6, "{p:?}");
                }
            }
            // Every input vertex inside the box survives in some part.
            for p in pts.iter().filter(|p| BOX.contains(**p)) {
                prop_assert!(parts.iter().any(|part| part.contains(p)), "{p:?} lost");
            }
        }

        #[test]
        fn clipped_rings_stay_inside_and_stay_closed(pts in proptest::collection::vec((-10000.0f64..14000.0, -10000.0f64..14000.0), 3..12)) {
            let mut ring: Vec<[f64; 2]> = pts.into_iter().map(|(x, y)| [x, y]).collect();
            ring.push(ring[0]);
            let r = clip_ring(&ring, &BOX);
            if !r.is_empty() {
                prop_assert!(r.len() >= 4);
                prop_assert_eq!(r.first(), r.last());
                for p in &r {
                    prop_assert!(p[0] >= BOX.min - 1e-6 && p[0] <= BOX.max + 1e-6 && p[1] >= BOX.min - 1e-6 && p[1] <= BOX.max + 1e-6, "{p:?}");
                }
            }
        }
    }
}
