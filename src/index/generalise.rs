//! Work done once per feature so that tiles cost little per request (the approach of
//! mapbox's geojson-vt and supercluster, written for live edits):
//!
//! - **Project once**: every vertex is kept in Web Mercator "world" coordinates,
//!   `[0, 1]` on both axes, y down (x = 0 at 180°W, y = 0 at 85.0511°N).
//! - **Simplify once**: each vertex of a line or ring carries its Douglas–Peucker
//!   importance (the squared world distance below which it would be dropped), so a
//!   tile keeps the vertices above its zoom's tolerance with a linear filter. Importance
//!   is capped by the parent's, so the filter gives exactly Douglas–Peucker's result.
//! - **Aggregate once**: point layers keep a count pyramid. A cell of level `L` is the
//!   tile `(L, x, y)`; a 64-unit cell of a 4096-extent tile at zoom `z` is a cell of
//!   level `z + 6`. Each cell holds the count, counts per rank (e.g. risk level) and
//!   the sum of its points' world coordinates (for the cluster's centroid), and is
//!   updated on every insert and removal.

use geo_types::{Coord, Geometry, LineString, Polygon};
use hashbrown::HashMap;

/// Latitude limit of Web Mercator tiles, degrees.
pub const MAX_LAT: f64 = 85.051_128_779_806_59;

/// Deepest pyramid level kept. Levels hold at most one cell per tile of that zoom with
/// points; level 18 (cells of ~150 m at Chongqing's latitude) serves cluster tiles up to
/// zoom 12 at a memory cost well below the points' own (measured at city scale).
/// Deeper zooms bin their points per request.
pub const PYRAMID_MAX_LEVEL: u8 = 18;

/// Rank classes a cluster cell counts (positions in the rank property's allowed values).
pub const MAX_RANKS: usize = 8;

/// WGS84 lon/lat to world coordinates, `None` beyond the Mercator latitude limit.
pub fn to_world(c: Coord) -> Option<[f64; 2]> {
    if !(-MAX_LAT..=MAX_LAT).contains(&c.y) {
        return None;
    }
    let x = (c.x + 180.0) / 360.0;
    let s = c.y.to_radians().sin();
    let y = 0.5 - ((1.0 + s) / (1.0 - s)).ln() / (4.0 * std::f64::consts::PI);
    Some([x.clamp(0.0, 1.0), y.clamp(0.0, 1.0)])
}

/// World coordinates back to lon/lat.
pub fn from_world(w: [f64; 2]) -> Coord {
    let lon = w[0] * 360.0 - 180.0;
    let n = std::f64::consts::PI * (1.0 - 2.0 * w[1]);
    Coord {
        x: lon,
        y: n.sinh().atan().to_degrees(),
    }
}

/// Same as [`to_world`] but clamping latitude (for vertices of lines and rings, which
/// must keep their shape even where they leave the Mercator square).
fn to_world_clamped(c: Coord) -> [f64; 2] {
    to_world(Coord {
        x: c.x,
        y: c.y.clamp(-MAX_LAT, MAX_LAT),
    })
    .unwrap_or([0.5, 0.5])
}

/// What a part of a shape is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// One point of a multipoint.
    Point,
    Line,
    /// Polygon exterior ring; the interior rings that follow belong to it.
    Exterior,
    Interior,
}

/// A contiguous run of vertices in [`WorldShape::xy`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Part {
    pub start: u32,
    pub end: u32,
    pub kind: PartKind,
    /// The highest importance among the part's interior vertices (0 when it has
    /// none): at any tolerance above it the part is just its two ends.
    pub max_inner: f32,
    /// For a line of more than [`CHUNKED_FROM`] vertices, its chunks' bounds in
    /// [`WorldShape::chunks`] (`first..end`), so that a tile visits only the stretches
    /// of a long line that come near it.
    pub chunks: Option<(u32, u32)>,
}

/// Vertices per chunk of a long line (see [`Part::chunks`]).
pub const CHUNK: usize = 256;
/// Lines of more vertices than this are given chunk bounds.
pub const CHUNKED_FROM: usize = 4 * CHUNK;

/// A line or polygon geometry in world coordinates with vertex importances.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorldShape {
    pub xy: Vec<[f64; 2]>,
    /// Squared world distance at which each vertex drops out; `f32::INFINITY` for part
    /// ends (always kept).
    pub importance: Vec<f32>,
    pub parts: Vec<Part>,
    /// `[min_x, min_y, max_x, max_y]` of `xy`.
    pub bbox: [f64; 4],
    /// Bounds `[min_x, min_y, max_x, max_y]` of the chunks of long lines: chunk `k` of a
    /// part holds its vertices `k·CHUNK ..= (k+1)·CHUNK` (the last one shared with the
    /// next chunk, so every segment lies in one chunk's bounds).
    pub chunks: Vec<[f64; 4]>,
}

impl WorldShape {
    pub fn new(g: &Geometry) -> Self {
        Self::build(g, None).unwrap_or_default()
    }

    /// The shape of `g` with the vertex importances computed earlier for it (by
    /// [`WorldShape::new`] of the same geometry, in the same build), or `None` when
    /// their number does not match the shape's vertices.
    pub fn with_importance(g: &Geometry, importance: &[f32]) -> Option<Self> {
        Self::build(g, Some(importance))
    }

    fn build(g: &Geometry, given: Option<&[f32]>) -> Option<Self> {
        let mut s = WorldShape::default();
        // Whether every part found its importances in `given`.
        let fits = std::cell::Cell::new(true);
        let add = |l: &LineString, kind: PartKind, s: &mut WorldShape| {
            // A part wholly beyond the Mercator limit is not on any tile (clamping
            // would draw it along the world's edge).
            if l.0.iter().all(|c| !(-MAX_LAT..=MAX_LAT).contains(&c.y)) {
                return;
            }
            let start = s.xy.len();
            s.xy.extend(l.0.iter().map(|&c| to_world_clamped(c)));
            match given.map(|v| v.get(start..s.xy.len())) {
                None => {
                    s.importance.resize(s.xy.len(), 0.0);
                    douglas_peucker_importance(&s.xy[start..], &mut s.importance[start..]);
                }
                Some(Some(v)) => s.importance.extend_from_slice(v),
                Some(None) => {
                    fits.set(false);
                    s.importance.resize(s.xy.len(), 0.0);
                }
            }
            let max_inner = s.importance[start..]
                .iter()
                .filter(|v| v.is_finite())
                .fold(0.0f32, |a, &b| a.max(b));
            let n = s.xy.len() - start;
            let chunks = (kind == PartKind::Line && n > CHUNKED_FROM).then(|| {
                let first = s.chunks.len() as u32;
                let mut k = 0;
                while k * CHUNK < n - 1 {
                    let r = start + k * CHUNK..=(start + (k + 1) * CHUNK).min(start + n - 1);
                    s.chunks.push(bounds_of(&s.xy[r]));
                    k += 1;
                }
                (first, s.chunks.len() as u32)
            });
            s.parts.push(Part {
                start: start as u32,
                end: s.xy.len() as u32,
                kind,
                max_inner,
                chunks,
            });
        };
        let polygon = |p: &Polygon, s: &mut WorldShape| {
            add(p.exterior(), PartKind::Exterior, s);
            for hole in p.interiors() {
                add(hole, PartKind::Interior, s);
            }
        };
        match g {
            Geometry::LineString(l) => add(l, PartKind::Line, &mut s),
            Geometry::MultiLineString(m) => m.0.iter().for_each(|l| add(l, PartKind::Line, &mut s)),
            Geometry::Polygon(p) => polygon(p, &mut s),
            Geometry::MultiPolygon(m) => m.0.iter().for_each(|p| polygon(p, &mut s)),
            Geometry::MultiPoint(m) => {
                m.0.iter()
                    .for_each(|p| add(&LineString(vec![p.0]), PartKind::Point, &mut s))
            }
            _ => {}
        }
        s.bbox = bounds_of(&s.xy);
        (fits.get() && given.is_none_or(|v| v.len() == s.xy.len())).then_some(s)
    }

    /// The stretches of part `p` (vertex ranges within the part, each from a chunk's
    /// first vertex to a chunk's last) whose chunks come within `window`
    /// (`[min_x, min_y, max_x, max_y]`, world units), consecutive chunks merged. A part
    /// without chunks is one stretch, whole.
    pub fn stretches_near(
        &self,
        p: &Part,
        window: [f64; 4],
        out: &mut Vec<std::ops::Range<usize>>,
    ) {
        out.clear();
        let n = (p.end - p.start) as usize;
        let Some((first, end)) = p.chunks else {
            out.push(0..n);
            return;
        };
        let near = |b: &[f64; 4]| {
            b[0] <= window[2] && b[2] >= window[0] && b[1] <= window[3] && b[3] >= window[1]
        };
        for (k, b) in self.chunks[first as usize..end as usize].iter().enumerate() {
            if !near(b) {
                continue;
            }
            let r = k * CHUNK..((k + 1) * CHUNK + 1).min(n);
            match out.last_mut() {
                // Consecutive chunks share a vertex: one stretch.
                Some(last) if last.end == r.start + 1 => last.end = r.end,
                _ => out.push(r),
            }
        }
    }

    pub fn part(&self, p: &Part) -> (&[[f64; 2]], &[f32]) {
        let r = p.start as usize..p.end as usize;
        (&self.xy[r.clone()], &self.importance[r])
    }
}

/// `[min_x, min_y, max_x, max_y]` of points (infinite bounds for none).
fn bounds_of(xy: &[[f64; 2]]) -> [f64; 4] {
    xy.iter().fold(
        [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ],
        |b, p| {
            [
                b[0].min(p[0]),
                b[1].min(p[1]),
                b[2].max(p[0]),
                b[3].max(p[1]),
            ]
        },
    )
}

/// Squared distance from `p` to segment `a`-`b`.
fn seg_dist_sq(p: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    let (mut x, mut y) = (a[0], a[1]);
    let (dx, dy) = (b[0] - x, b[1] - y);
    if dx != 0.0 || dy != 0.0 {
        let t = ((p[0] - x) * dx + (p[1] - y) * dy) / (dx * dx + dy * dy);
        if t > 1.0 {
            x = b[0];
            y = b[1];
        } else if t > 0.0 {
            x += dx * t;
            y += dy * t;
        }
    }
    (p[0] - x).powi(2) + (p[1] - y).powi(2)
}

/// Sets every importance of a part of `n` vertices to 0 but its ends' (infinite, always
/// kept); false when there are no vertices.
fn reset_importance(imp: &mut [f32], n: usize) -> bool {
    if n == 0 {
        return false;
    }
    imp.iter_mut().for_each(|v| *v = 0.0);
    imp[0] = f32::INFINITY;
    imp[n - 1] = f32::INFINITY;
    true
}

/// Distance evaluations Douglas–Peucker may spend on `n` vertices before it gives way
/// to [`eliminate_importance`]: far above what real lines need (DP costs about
/// `n log2 n` on them; the whole city's pipelines never reach a tenth of this), far below
/// DP's quadratic worst case (a zigzag of 150,000 vertices: 10^10). Exhausting it
/// costs about 20 ms per 100,000 vertices before the fallback starts.
pub fn dp_work_budget(n: usize) -> u64 {
    let n = n as u64;
    let log2 = 64 - n.leading_zeros() as u64;
    n * (2 * log2 + 16)
}

/// Fills `imp` with each vertex's Douglas–Peucker importance (iteratively: lines can
/// have a million vertices). Ends are infinite; a vertex's importance never exceeds
/// its parent's, so `importance > t` selects exactly the DP simplification at `t`.
///
/// # Runtime
/// O(n log n) on any input. DP itself is quadratic on adversarial lines (each split
/// peels one vertex off a zigzag), so it runs within [`dp_work_budget`]; a line that
/// exhausts it is ranked by [`eliminate_importance`] instead, O(n log n), whose filter
/// is a nested simplification of the same kind (not DP's exact result). Returns the
/// work done (distance evaluations and heap operations), which tests bound.
pub fn douglas_peucker_importance(xy: &[[f64; 2]], imp: &mut [f32]) -> u64 {
    let n = xy.len();
    if !reset_importance(imp, n) {
        return 0;
    }
    let budget = dp_work_budget(n);
    let mut work = 0u64;
    let mut stack = vec![(0usize, n - 1, f32::INFINITY)];
    while let Some((first, last, cap)) = stack.pop() {
        if last <= first + 1 {
            continue;
        }
        work += (last - first - 1) as u64;
        if work > budget {
            return work + eliminate_importance(xy, imp);
        }
        let (mut best, mut index) = (0.0f64, 0usize);
        for i in first + 1..last {
            let d = seg_dist_sq(xy[i], xy[first], xy[last]);
            if d > best {
                best = d;
                index = i;
            }
        }
        if index == 0 {
            continue; // all collinear: importance 0, dropped at any tolerance
        }
        let v = (best as f32).min(cap);
        imp[index] = v;
        stack.push((first, index, v));
        stack.push((index, last, v));
    }
    work
}

/// Ranks vertices by repeated elimination, O(n log n) (Visvalingam–Whyatt's scheme
/// with Douglas–Peucker's measure): the vertex closest to the segment joining its
/// current neighbours goes first, its neighbours are re-measured, and so on. A vertex's
/// importance is the largest squared world distance measured up to its removal, so
/// importances grow along the removal order and `importance > t` keeps a suffix of it:
/// a nested simplification, ends always kept. Written by hand: geo's `SimplifyVw`
/// gives one result per tolerance, not a rank per vertex. Returns the work done.
pub fn eliminate_importance(xy: &[[f64; 2]], imp: &mut [f32]) -> u64 {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let n = xy.len();
    if !reset_importance(imp, n) || n < 3 {
        return 0;
    }
    // Neighbours in the current (partly eliminated) line.
    let mut prev: Vec<u32> = (0..n as u32).map(|i| i.saturating_sub(1)).collect();
    let mut next: Vec<u32> = (0..n as u32).map(|i| i + 1).collect();
    // Each vertex's current measure, as the bits of a non-negative f64 (which order
    // as the numbers do); a heap entry whose measure differs is stale.
    let mut key = vec![0u64; n];
    let mut heap = BinaryHeap::with_capacity(n);
    let measure = |i: usize, prev: &[u32], next: &[u32]| {
        seg_dist_sq(xy[i], xy[prev[i] as usize], xy[next[i] as usize]).to_bits()
    };
    for (i, k) in key.iter_mut().enumerate().take(n - 1).skip(1) {
        *k = measure(i, &prev, &next);
        heap.push(Reverse((*k, i as u32)));
    }
    let mut work = n as u64;
    let mut running = 0.0f64;
    let mut removed = vec![false; n];
    while let Some(Reverse((k, i))) = heap.pop() {
        work += 1;
        let i = i as usize;
        if removed[i] || key[i] != k {
            continue;
        }
        removed[i] = true;
        running = running.max(f64::from_bits(k));
        imp[i] = running as f32;
        let (p, q) = (prev[i] as usize, next[i] as usize);
        next[p] = q as u32;
        prev[q] = p as u32;
        for j in [p, q] {
            if j != 0 && j != n - 1 {
                key[j] = measure(j, &prev, &next);
                heap.push(Reverse((key[j], j as u32)));
                work += 1;
            }
        }
    }
    work
}

/// One pyramid cell: 32 bytes, so millions of sensors cost little. Rank counts are
/// boxed, allocated only in layers that rank their points.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cell {
    pub count: u32,
    /// A slot inside the cell, or `u32::MAX` when unknown (after its removal). Used to
    /// show a single point as itself rather than as a cluster of one.
    pub rep: u32,
    pub sum: [f64; 2],
    pub ranks: Option<Box<[u32; MAX_RANKS]>>,
}

impl Cell {
    /// The most severe rank present (lowest position), if ranks are counted.
    pub fn top_rank(&self) -> Option<usize> {
        self.ranks.as_ref()?.iter().position(|&n| n > 0)
    }

    /// Counts one more point at world position `w`.
    fn add(&mut self, w: [f64; 2], rank: Option<usize>) {
        self.count += 1;
        self.sum[0] += w[0];
        self.sum[1] += w[1];
        if let Some(r) = rank {
            self.ranks.get_or_insert_with(Box::default)[r] += 1;
        }
    }

    /// Counts per rank (zeros when the layer ranks nothing).
    pub fn rank_counts(&self) -> [u32; MAX_RANKS] {
        self.ranks.as_deref().copied().unwrap_or_default()
    }

    pub fn centroid(&self) -> [f64; 2] {
        [
            self.sum[0] / self.count as f64,
            self.sum[1] / self.count as f64,
        ]
    }
}

/// Cell key: `x` in the high half, `y` in the low half.
pub fn cell_key(x: u32, y: u32) -> u64 {
    ((x as u64) << 32) | y as u64
}

/// The cell of a world coordinate at level `l`: half-open, so every point falls in
/// exactly one cell.
pub fn cell_of(w: [f64; 2], l: u8) -> (u32, u32) {
    let n = (1u64 << l) as f64;
    let max = (1u64 << l) - 1;
    let x = ((w[0] * n) as u64).min(max) as u32;
    let y = ((w[1] * n) as u64).min(max) as u32;
    (x, y)
}

/// Counts per cell for levels `0..=PYRAMID_MAX_LEVEL`.
#[derive(Clone, Debug)]
pub struct Pyramid {
    levels: Vec<HashMap<u64, Cell>>,
}

impl Default for Pyramid {
    fn default() -> Self {
        Pyramid {
            levels: (0..=PYRAMID_MAX_LEVEL).map(|_| HashMap::new()).collect(),
        }
    }
}

impl Pyramid {
    /// Adds (`sign` = 1) or removes (`sign` = -1) a point of rank `rank` in `slot`.
    pub fn apply(&mut self, w: [f64; 2], rank: Option<usize>, slot: u32, sign: i32) {
        for (l, level) in self.levels.iter_mut().enumerate() {
            let (x, y) = cell_of(w, l as u8);
            let key = cell_key(x, y);
            if sign > 0 {
                let c = level.entry(key).or_insert(Cell {
                    rep: slot,
                    ..Cell::default()
                });
                c.add(w, rank);
                if c.rep == u32::MAX {
                    c.rep = slot;
                }
            } else if let Some(c) = level.get_mut(&key) {
                c.count = c.count.saturating_sub(1);
                if c.count == 0 {
                    level.remove(&key);
                    continue;
                }
                c.sum[0] -= w[0];
                c.sum[1] -= w[1];
                if let (Some(r), Some(ranks)) = (rank, c.ranks.as_mut()) {
                    ranks[r] = ranks[r].saturating_sub(1);
                }
                if c.rep == slot {
                    c.rep = u32::MAX;
                }
            }
        }
    }

    /// Builds the pyramid for many points at once: the deepest level point by point,
    /// every level above from the one below (far fewer cells than points).
    pub fn build(points: impl IntoIterator<Item = ([f64; 2], Option<usize>, u32)>) -> Pyramid {
        let mut levels: Vec<HashMap<u64, Cell>> =
            (0..=PYRAMID_MAX_LEVEL).map(|_| HashMap::new()).collect();
        let deepest = &mut levels[PYRAMID_MAX_LEVEL as usize];
        for (w, rank, slot) in points {
            let (x, y) = cell_of(w, PYRAMID_MAX_LEVEL);
            deepest
                .entry(cell_key(x, y))
                .or_insert(Cell {
                    rep: slot,
                    ..Cell::default()
                })
                .add(w, rank);
        }
        for l in (0..PYRAMID_MAX_LEVEL as usize).rev() {
            let (upper, lower) = levels.split_at_mut(l + 1);
            let parent_level = &mut upper[l];
            for (&k, child) in lower[0].iter() {
                let (x, y) = ((k >> 32) as u32, k as u32);
                let p = parent_level
                    .entry(cell_key(x >> 1, y >> 1))
                    .or_insert(Cell {
                        rep: child.rep,
                        ..Cell::default()
                    });
                p.count += child.count;
                p.sum[0] += child.sum[0];
                p.sum[1] += child.sum[1];
                if let Some(cr) = &child.ranks {
                    let pr = p.ranks.get_or_insert_with(Box::default);
                    for (a, b) in pr.iter_mut().zip(cr.iter()) {
                        *a += b;
                    }
                }
            }
        }
        Pyramid { levels }
    }

    pub fn cell(&self, level: u8, x: u32, y: u32) -> Option<&Cell> {
        self.levels.get(level as usize)?.get(&cell_key(x, y))
    }

    /// Number of points in tile `(z, x, y)`, for `z <= PYRAMID_MAX_LEVEL`.
    pub fn count(&self, z: u8, x: u32, y: u32) -> u32 {
        self.cell(z, x, y).map_or(0, |c| c.count)
    }

    /// Cells (with their level coordinates) of the `2^d x 2^d` children of tile
    /// `(z, x, y)` at level `z + d`, for `z + d <= PYRAMID_MAX_LEVEL`, found by descending
    /// from the tile through non-empty cells only (sparse tiles cost little).
    pub fn children<'s>(
        &'s self,
        z: u8,
        x: u32,
        y: u32,
        d: u8,
        mut visit: impl FnMut(u32, u32, &'s Cell),
    ) {
        if (z + d) as usize >= self.levels.len() || self.cell(z, x, y).is_none() {
            return;
        }
        let mut frontier = vec![(x, y)];
        let mut next = Vec::new();
        for l in z + 1..=z + d {
            next.clear();
            let level = &self.levels[l as usize];
            for &(px, py) in &frontier {
                for (cx, cy) in [
                    (2 * px, 2 * py),
                    (2 * px + 1, 2 * py),
                    (2 * px, 2 * py + 1),
                    (2 * px + 1, 2 * py + 1),
                ] {
                    if let Some(c) = level.get(&cell_key(cx, cy)) {
                        if l == z + d {
                            visit(cx, cy, c);
                        } else {
                            next.push((cx, cy));
                        }
                    }
                }
            }
            std::mem::swap(&mut frontier, &mut next);
        }
        if d == 0 {
            if let Some(c) = self.cell(z, x, y) {
                visit(x, y, c);
            }
        }
    }

    /// Total cells held (for memory reports).
    pub fn cells(&self) -> usize {
        self.levels.iter().map(|l| l.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_visited_only_in_the_stretches_near_a_window() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..40 {
            // A random walk of a few thousand vertices around Chongqing.
            let n = rng.random_range(CHUNKED_FROM + 1..6_000);
            let mut c = Coord { x: 106.5, y: 29.5 };
            let mut pts = Vec::with_capacity(n);
            for _ in 0..n {
                c.x += rng.random_range(-0.001..0.001);
                c.y += rng.random_range(-0.001..0.001);
                pts.push(c);
            }
            let shape = WorldShape::new(&Geometry::LineString(LineString(pts)));
            let part = shape.parts[0];
            assert!(
                part.chunks.is_some(),
                "case {case}: {n} vertices, no chunks"
            );
            let xy = shape.part(&part).0;
            let [x0, y0, x1, y1] = shape.bbox;
            let mut stretches = Vec::new();
            for _ in 0..20 {
                let (w, h) = (
                    (x1 - x0) * rng.random_range(0.0..0.3),
                    (y1 - y0) * rng.random_range(0.0..0.3),
                );
                let (wx, wy) = (rng.random_range(x0..x1), rng.random_range(y0..y1));
                let window = [wx, wy, wx + w, wy + h];
                shape.stretches_near(&part, window, &mut stretches);
                // Sound: every segment that comes into the window is in a stretch.
                for i in 0..xy.len() - 1 {
                    let b = bounds_of(&xy[i..=i + 1]);
                    let near = b[0] <= window[2]
                        && b[2] >= window[0]
                        && b[1] <= window[3]
                        && b[3] >= window[1];
                    if near {
                        assert!(
                            stretches.iter().any(|r| r.start <= i && i + 1 < r.end),
                            "case {case}: segment {i} near {window:?} is in no stretch of {stretches:?}"
                        );
                    }
                }
                // Bounded: stretches are disjoint but for shared ends, and made of
                // chunks whose bounds reach the window.
                let (first, end) = part.chunks.expect("chunked");
                let near_chunks = shape.chunks[first as usize..end as usize]
                    .iter()
                    .filter(|b| {
                        b[0] <= window[2]
                            && b[2] >= window[0]
                            && b[1] <= window[3]
                            && b[3] >= window[1]
                    })
                    .count();
                let visited: usize = stretches.iter().map(|r| r.len()).sum();
                assert!(
                    visited <= near_chunks * (CHUNK + 1),
                    "case {case}: {visited} vertices for {near_chunks} chunks"
                );
                for w in stretches.windows(2) {
                    assert!(w[0].end <= w[1].start + 1, "{stretches:?}");
                }
            }
        }
    }

    #[test]
    fn world_coordinates_round_trip_and_clamp_at_the_mercator_limit() {
        for (lon, lat) in [(0.0, 0.0), (106.55, 29.56), (-179.9, -85.0), (180.0, 85.0)] {
            let w = to_world(Coord { x: lon, y: lat }).unwrap();
            let back = from_world(w);
            assert!(
                (back.x - lon).abs() < 1e-9 && (back.y - lat).abs() < 1e-9,
                "{lon},{lat} -> {back:?}"
            );
        }
        assert!(to_world(Coord { x: 0.0, y: 86.0 }).is_none());
        assert_eq!(
            to_world(Coord {
                x: -180.0,
                y: MAX_LAT
            })
            .unwrap(),
            [0.0, 0.0]
        );
    }

    #[test]
    fn importance_filter_equals_douglas_peucker() {
        // A zigzag with decreasing amplitude: the DP result at each tolerance must be
        // what the importance filter keeps.
        let xy: Vec<[f64; 2]> = (0..40)
            .map(|i| [i as f64, if i % 2 == 0 { 0.0 } else { 40.0 - i as f64 }])
            .collect();
        let mut imp = vec![0.0f32; xy.len()];
        douglas_peucker_importance(&xy, &mut imp);
        for tol in [0.5f64, 2.0, 10.0, 100.0, 400.0] {
            let kept: Vec<usize> = (0..xy.len()).filter(|&i| imp[i] as f64 > tol).collect();
            let mut dp = vec![0, xy.len() - 1];
            fn rec(xy: &[[f64; 2]], a: usize, b: usize, tol: f64, out: &mut Vec<usize>) {
                let (mut best, mut idx) = (0.0, 0);
                for i in a + 1..b {
                    let d = seg_dist_sq(xy[i], xy[a], xy[b]);
                    if d > best {
                        best = d;
                        idx = i;
                    }
                }
                if idx != 0 && best > tol {
                    out.push(idx);
                    rec(xy, a, idx, tol, out);
                    rec(xy, idx, b, tol, out);
                }
            }
            rec(&xy, 0, xy.len() - 1, tol, &mut dp);
            dp.sort();
            assert_eq!(kept, dp, "tolerance {tol}");
        }
    }

    /// The hostile lines of issue 7: a zigzag whose amplitude grows along the line makes
    /// every DP split peel one vertex off (quadratic); the work must stay O(n log n).
    fn zigzag(n: usize) -> Vec<[f64; 2]> {
        (0..n)
            .map(|i| {
                let a = 1e-9 * (1.0 + i as f64);
                [i as f64 * 1e-8, if i % 2 == 0 { 0.5 } else { 0.5 + a }]
            })
            .collect()
    }

    #[test]
    fn importance_work_is_n_log_n_on_hostile_zigzags() {
        for n in [1_000usize, 20_000, 150_000, 1_000_000] {
            let xy = zigzag(n);
            let mut imp = vec![0.0f32; n];
            let work = douglas_peucker_importance(&xy, &mut imp);
            let log2 = (n as f64).log2().ceil() as u64;
            // DP's budget plus the elimination's heap operations (at most 3n pushes and
            // pops, each O(log n) but counted once: the heap's own cost is log n per op).
            let bound = dp_work_budget(n) + 8 * n as u64;
            assert!(
                work <= bound,
                "n = {n}: {work} operations, more than {bound}"
            );
            assert!(
                work <= n as u64 * (2 * log2 + 32),
                "n = {n}: {work} operations is not O(n log n)"
            );
            assert!(imp[0].is_infinite() && imp[n - 1].is_infinite());
        }
        // Without the budget DP would have evaluated about n^2 / 2 distances here.
        let n = 20_000;
        assert!(dp_work_budget(n) < (n * n / 2) as u64 / 50);
    }

    #[test]
    fn ordinary_lines_stay_within_the_dp_budget() {
        // A smooth pipeline-like curve and a random walk: DP finishes within its
        // budget, so their importances are exactly DP's.
        let curve: Vec<[f64; 2]> = (0..50_000)
            .map(|i| {
                let t = i as f64 / 50_000.0;
                [0.5 + 0.01 * t, 0.5 + 0.002 * (t * 40.0).sin()]
            })
            .collect();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut p = [0.5, 0.5];
        let walk: Vec<[f64; 2]> = (0..50_000)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                p[0] += ((rng & 0xffff) as f64 / 65536.0 - 0.5) * 1e-6;
                p[1] += (((rng >> 16) & 0xffff) as f64 / 65536.0 - 0.5) * 1e-6;
                p
            })
            .collect();
        for xy in [curve, walk] {
            let mut imp = vec![0.0f32; xy.len()];
            let work = douglas_peucker_importance(&xy, &mut imp);
            assert!(work <= dp_work_budget(xy.len()), "{work} operations");
        }
    }

    #[test]
    fn elimination_ranks_form_a_nested_simplification() {
        let xy = zigzag(5_000);
        let mut imp = vec![0.0f32; xy.len()];
        let work = eliminate_importance(&xy, &mut imp);
        assert!(work > 0);
        assert!(imp[0].is_infinite() && imp[xy.len() - 1].is_infinite());
        // Nested: the set kept at a larger tolerance is a subset of the set kept at a
        // smaller one (true of any threshold filter), and the kept counts fall as the
        // tolerance grows, down to the two ends.
        let kept = |t: f32| imp.iter().filter(|&&v| v > t).count();
        let mut last = usize::MAX;
        let mut finite: Vec<f32> = imp.iter().copied().filter(|v| v.is_finite()).collect();
        finite.sort_by(f32::total_cmp);
        for t in finite.iter().step_by(500) {
            let k = kept(*t);
            assert!(k <= last);
            last = k;
        }
        assert_eq!(kept(f32::MAX), 2);
        // The running maximum makes importances follow the removal order: a vertex
        // dropped early (close to its neighbours' segment) never outranks the line's
        // widest swings, which are the last inner vertices to go.
        let widest = (1..xy.len() - 1)
            .max_by(|&a, &b| imp[a].total_cmp(&imp[b]))
            .unwrap();
        assert!(
            widest > xy.len() / 2,
            "the large-amplitude end survives longest"
        );
        // Collinear vertices cost nothing at any tolerance.
        let line: Vec<[f64; 2]> = (0..10).map(|i| [i as f64, 0.0]).collect();
        let mut imp = vec![0.0f32; 10];
        eliminate_importance(&line, &mut imp);
        assert!(imp[1..9].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn pyramid_counts_follow_inserts_and_removals() {
        let mut p = Pyramid::default();
        let a = to_world(Coord { x: 106.5, y: 29.5 }).unwrap();
        let b = to_world(Coord {
            x: 106.51,
            y: 29.51,
        })
        .unwrap();
        p.apply(a, Some(2), 0, 1);
        p.apply(b, Some(0), 1, 1);
        assert_eq!(p.count(0, 0, 0), 2);
        let (x, y) = cell_of(a, 10);
        assert_eq!(p.cell(10, x, y).unwrap().top_rank(), Some(0));
        p.apply(b, Some(0), 1, -1);
        assert_eq!(p.cell(10, x, y).unwrap().top_rank(), Some(2));
        assert_eq!(p.cell(10, x, y).unwrap().rep, 0);
        p.apply(a, Some(2), 0, -1);
        assert_eq!(p.cells(), 0);
    }

    #[test]
    fn bulk_build_equals_point_by_point() {
        let pts: Vec<([f64; 2], Option<usize>, u32)> = (0..500)
            .map(|i| {
                let c = Coord {
                    x: 106.0 + (i % 37) as f64 * 0.013,
                    y: 29.0 + (i / 37) as f64 * 0.011,
                };
                (to_world(c).unwrap(), Some(i as usize % 4), i)
            })
            .collect();
        let mut live = Pyramid::default();
        for &(w, r, s) in &pts {
            live.apply(w, r, s, 1);
        }
        let bulk = Pyramid::build(pts);
        for l in 0..=PYRAMID_MAX_LEVEL as usize {
            assert_eq!(live.levels[l].len(), bulk.levels[l].len(), "level {l}");
            for (k, c) in &live.levels[l] {
                let b = &bulk.levels[l][k];
                assert_eq!(
                    (c.count, c.rank_counts()),
                    (b.count, b.rank_counts()),
                    "level {l}"
                );
                assert!((c.sum[0] - b.sum[0]).abs() < 1e-9 && (c.sum[1] - b.sum[1]).abs() < 1e-9);
            }
        }
    }
}
