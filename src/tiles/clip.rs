//! Clipping in tile units against the buffered tile box. Lines: Liang–Barsky per
//! segment, splitting a line into parts where it leaves the box and re-enters.
//! Rings: Sutherland–Hodgman against the four edges (the box is convex, so the result
//! is the exact intersection, possibly with edges running along the box border).

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

/// Clips a closed ring (first point = last); returns the clipped ring, closed, or an
/// empty vector when nothing is left.
pub fn clip_ring(ring: &[[f64; 2]], bx: &ClipBox) -> Vec<[f64; 2]> {
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

    proptest! {
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
