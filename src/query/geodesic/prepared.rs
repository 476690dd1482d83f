//! A geometry taken apart once for many distance questions: its vertices in Earth-centred
//! coordinates, its edges, its polygons.
//!
//! Every exact answer is Karney's; the chord bounds of [`super::ellipsoid`] only decide
//! which edges can be skipped (an edge whose lower bound exceeds the best distance found
//! so far, or the radius asked, cannot hold the minimum), so a cut-off search returns
//! bit for bit what the full search returns whenever the distance is within the cut-off.

use geo_types::{Coord, Geometry, LineString, Polygon};
use geographiclib_rs::capability as caps;

use super::ellipsoid::{SLACK_M, V3, WGS84, chord_gap, chord_upper_m, ecef, norm, sagitta_m, sub};
use super::polygon::{PreparedPolygon, ring_edges};
use super::segment::{karney_m, point_segment_m};

#[derive(Clone, Copy, Debug)]
struct Vertex {
    /// WGS84 degrees, lon/lat.
    c: Coord,
    /// Earth-centred, metres.
    p: V3,
}

impl Vertex {
    fn new(c: Coord) -> Self {
        Vertex { c, p: ecef(c) }
    }
}

#[derive(Clone, Copy, Debug)]
struct Edge {
    a: Vertex,
    b: Vertex,
    /// Midpoint of the chord, Earth-centred metres.
    mid: V3,
    /// The edge lies within this distance of `mid`, metres: half the chord plus the
    /// sagitta bound.
    reach: f64,
    /// The sagitta bound (`ellipsoid::sagitta_m`), metres.
    sag: f64,
}

impl Edge {
    fn new(a: Vertex, b: Vertex) -> Self {
        let chord = norm(sub(b.p, a.p));
        let sag = sagitta_m(chord);
        Edge {
            a,
            b,
            mid: [
                0.5 * (a.p[0] + b.p[0]),
                0.5 * (a.p[1] + b.p[1]),
                0.5 * (a.p[2] + b.p[2]),
            ],
            reach: 0.5 * chord + sag + SLACK_M,
            sag,
        }
    }
}

/// A geometry ready for repeated geodesic distance questions (WGS84 degrees, lon/lat;
/// edges are geodesics). Build once, ask many times: the corridor along one pipeline, or
/// one query polygon against many candidate features.
#[derive(Clone, Debug)]
pub struct PreparedGeometry {
    /// Isolated points (Point, MultiPoint).
    points: Vec<Vertex>,
    /// Edges of lines and of polygon rings.
    edges: Vec<Edge>,
    /// Every vertex of lines and rings, and the isolated points.
    vertices: Vec<Vertex>,
    /// One vertex of each point, line and polygon: if the geometries do not cross, each
    /// part is wholly inside or wholly outside the other, as its first vertex is.
    firsts: Vec<Coord>,
    polygons: Vec<PreparedPolygon>,
    /// A coordinate is not finite or its latitude is beyond ±90°: every distance is NaN.
    not_finite: bool,
}

impl PreparedGeometry {
    /// Takes `g` apart. Rect and Triangle become polygons; an empty geometry has no
    /// points, and every distance to it is infinite.
    pub fn new(g: &Geometry) -> Self {
        let mut out = PreparedGeometry {
            points: Vec::new(),
            edges: Vec::new(),
            vertices: Vec::new(),
            firsts: Vec::new(),
            polygons: Vec::new(),
            not_finite: false,
        };
        out.add(g);
        out.not_finite = out.vertices.iter().any(|v| !usable(v.c));
        out
    }

    fn add(&mut self, g: &Geometry) {
        match g {
            Geometry::Point(p) => self.add_point(p.0),
            Geometry::MultiPoint(m) => m.0.iter().for_each(|p| self.add_point(p.0)),
            Geometry::Line(l) => self.add_line(&[l.start, l.end]),
            Geometry::LineString(l) => self.add_line(&l.0),
            Geometry::MultiLineString(m) => m.0.iter().for_each(|l| self.add_line(&l.0)),
            Geometry::Polygon(p) => self.add_polygon(p),
            Geometry::MultiPolygon(m) => m.0.iter().for_each(|p| self.add_polygon(p)),
            Geometry::Rect(r) => self.add_polygon(&r.to_polygon()),
            Geometry::Triangle(t) => self.add_polygon(&t.to_polygon()),
            Geometry::GeometryCollection(c) => c.0.iter().for_each(|g| self.add(g)),
        }
    }

    fn add_point(&mut self, c: Coord) {
        let v = Vertex::new(c);
        self.points.push(v);
        self.vertices.push(v);
        self.firsts.push(c);
    }

    fn add_line(&mut self, coords: &[Coord]) {
        let Some(&first) = coords.first() else { return };
        self.firsts.push(first);
        let start = self.vertices.len();
        self.vertices.extend(coords.iter().map(|&c| Vertex::new(c)));
        if coords.len() == 1 {
            self.points.push(self.vertices[start]);
        }
        for i in start + 1..self.vertices.len() {
            self.edges
                .push(Edge::new(self.vertices[i - 1], self.vertices[i]));
        }
    }

    fn add_ring(&mut self, ring: &LineString) {
        for (a, b) in ring_edges(ring) {
            self.edges.push(Edge::new(Vertex::new(a), Vertex::new(b)));
        }
        self.vertices.extend(ring.0.iter().map(|&c| Vertex::new(c)));
        if ring.0.len() == 1 {
            self.points.push(Vertex::new(ring.0[0]));
        }
    }

    fn add_polygon(&mut self, p: &Polygon) {
        let Some(&first) = p.exterior().0.first() else {
            return;
        };
        self.firsts.push(first);
        self.add_ring(p.exterior());
        for h in p.interiors() {
            self.add_ring(h);
        }
        self.polygons.push(PreparedPolygon::new(p));
    }

    /// Whether the geometry has no point at all.
    pub fn is_empty(&self) -> bool {
        self.vertices.is_empty()
    }

    /// Whether `c` is inside one of the polygons (geodesic edges; see `polygon.rs`).
    pub fn contains(&self, c: Coord) -> bool {
        self.polygons.iter().any(|p| p.contains(c))
    }

    /// Geodesic distance, metres, from `c` to the nearest point of the geometry (0 inside
    /// a polygon); infinite for an empty geometry.
    pub fn distance_from_m(&self, c: Coord) -> f64 {
        if self.not_finite || !usable(c) {
            return f64::NAN;
        }
        if self.contains(c) {
            return 0.0;
        }
        self.boundary_distance(c, f64::INFINITY)
    }

    /// `Some(distance)` when `c` is within `radius_m` of the geometry, with exactly the
    /// distance [`Self::distance_from_m`] gives; `None` otherwise.
    pub fn within_m(&self, c: Coord, radius_m: f64) -> Option<f64> {
        if self.is_empty() || self.not_finite || radius_m.is_nan() || radius_m < 0.0 {
            return None;
        }
        if !usable(c) {
            return None;
        }
        if self.contains(c) {
            return Some(0.0);
        }
        let d = self.boundary_distance(c, radius_m);
        (d <= radius_m).then_some(d)
    }

    /// Distance from `c` to the points and edges. Exact when it is at most `cutoff`;
    /// otherwise some number above `cutoff`.
    fn boundary_distance(&self, c: Coord, cutoff: f64) -> f64 {
        let c3 = ecef(c);
        // First pass: the least upper bound, so edges that cannot win are skipped. The
        // chord's bound is nondecreasing in the chord, so the least bound is the bound
        // of the least chord (plus sagitta): one `asin` per call, not two per edge (a
        // profile of the corridor query at stop 14 spent a third of its time in them).
        let mut least_chord = f64::INFINITY;
        for v in &self.points {
            least_chord = least_chord.min(norm(sub(c3, v.p)));
        }
        for e in &self.edges {
            least_chord = least_chord.min(chord_gap(c3, e.a.p, e.b.p).0 + e.sag);
        }
        let limit = cutoff.min(chord_upper_m(least_chord));
        let mut best = f64::INFINITY;
        for v in &self.points {
            let lower = norm(sub(c3, v.p)) - SLACK_M;
            if lower <= limit && lower <= best {
                best = best.min(karney_m(c, v.c));
            }
        }
        for e in &self.edges {
            let (d3, t) = chord_gap(c3, e.a.p, e.b.p);
            let lower = (d3 - e.sag - SLACK_M).max(0.0);
            if lower <= limit && lower <= best {
                best = best.min(point_segment_m(c, e.a.c, e.b.c, t));
            }
        }
        best
    }

    /// Geodesic distance, metres, between the nearest points of two geometries (0 when
    /// they intersect); infinite when either is empty.
    pub fn distance_to_m(&self, other: &PreparedGeometry) -> f64 {
        self.distance_within(other, f64::INFINITY)
    }

    /// `Some(distance)` when the geometries are within `max_m` of each other, with exactly
    /// the distance [`Self::distance_to_m`] gives; `None` otherwise.
    pub fn within_distance_of_m(&self, other: &PreparedGeometry, max_m: f64) -> Option<f64> {
        if max_m.is_nan() || max_m < 0.0 {
            return None;
        }
        let d = self.distance_within(other, max_m);
        (d <= max_m).then_some(d)
    }

    /// Whether the two geometries share a point: a part of one inside a polygon of the
    /// other, or two edges crossing. (Touching at a vertex shows as distance 0.)
    pub fn intersects(&self, other: &PreparedGeometry) -> bool {
        self.firsts.iter().any(|&c| other.contains(c))
            || other.firsts.iter().any(|&c| self.contains(c))
            || self
                .edges
                .iter()
                .any(|e| other.edges.iter().any(|f| edges_cross(e, f)))
    }

    /// Why the vertices suffice: between two geodesic segments that do not cross, the
    /// distance has no minimum with both ends inside the segments. At such a point the
    /// shortest geodesic between them would meet both at right angles, and sliding both
    /// ends the same way along their segments changes its length, to second order, by
    /// `−∫K ds` (second variation of arc length with a parallel unit normal field; the
    /// boundary terms vanish because the segments are geodesics), negative because the
    /// ellipsoid's Gaussian curvature K is positive everywhere. So the minimum has an end
    /// at a vertex: it is the distance from some vertex of one geometry to the other.
    fn distance_within(&self, other: &PreparedGeometry, cutoff: f64) -> f64 {
        if self.not_finite || other.not_finite {
            return f64::NAN;
        }
        if self.is_empty() || other.is_empty() {
            return f64::INFINITY;
        }
        if self.intersects(other) {
            return 0.0;
        }
        let mut best = f64::INFINITY;
        for v in &self.vertices {
            best = best.min(other.boundary_distance(v.c, cutoff.min(best)));
        }
        for v in &other.vertices {
            best = best.min(self.boundary_distance(v.c, cutoff.min(best)));
        }
        best
    }
}

/// Whether Karney's solution takes `c` (any finite longitude, latitude within ±90°).
fn usable(c: Coord) -> bool {
    c.x.is_finite() && c.y.abs() <= 90.0
}

/// Whether two geodesic edges cross at a point inside both. Cheap rejection: each edge
/// lies within the ball about its chord's midpoint of radius half the chord plus the
/// sagitta bound. Then the sides, from azimuths (Karney): `c` and `d` on opposite sides
/// of the geodesic through `a`, `b`, and `a`, `b` on opposite sides of that through `c`,
/// `d`. Exact on the sphere; on the ellipsoid it holds while two geodesics cross at most
/// once within the region, i.e. for edges and gaps far below 10,000 km.
fn edges_cross(e: &Edge, f: &Edge) -> bool {
    if norm(sub(e.mid, f.mid)) > e.reach + f.reach {
        return false;
    }
    let sides_differ = |a: Coord, b: Coord, c: Coord, d: Coord| {
        let ab = azimuth(a, b);
        let side = |x: Coord| {
            let ax = azimuth(a, x);
            ax.0 * ab.1 - ax.1 * ab.0
        };
        let (sc, sd) = (side(c), side(d));
        (sc > 0.0 && sd < 0.0) || (sc < 0.0 && sd > 0.0)
    };
    sides_differ(e.a.c, e.b.c, f.a.c, f.b.c) && sides_differ(f.a.c, f.b.c, e.a.c, e.b.c)
}

/// Sine and cosine of the azimuth at `a` of the geodesic to `b`.
fn azimuth(a: Coord, b: Coord) -> (f64, f64) {
    let (_, _, salp1, calp1, ..) = WGS84._gen_inverse(a.y, a.x, b.y, b.x, caps::AZIMUTH);
    (salp1, calp1)
}
