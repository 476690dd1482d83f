//! Geodesic distances on WGS84, the one formula of every query.
//!
//! # The formula
//!
//! Coordinates are WGS84 degrees, lon/lat order (`x` = longitude, `y` = latitude).
//!
//! - Between two points: Karney's solution of the inverse geodesic problem on the WGS84
//!   ellipsoid (`geographiclib-rs`, the crate geo's `Geodesic` uses), accurate to 15 nm.
//! - An edge between two consecutive vertices (of a line or a polygon ring) is the
//!   geodesic between them: the shortest path on the ellipsoid, not a straight line in
//!   lon/lat degrees. This is what PostGIS `geography` means too (there on the sphere).
//! - From a point to a geometry: to its nearest point, which on an edge may lie between
//!   the vertices (found by a bracketed Newton iteration, `segment.rs`); 0 inside a
//!   polygon, whose edges are the same geodesics (`polygon.rs`); inside a hole, the
//!   distance to the nearest ring.
//! - Between two geometries: 0 when they share a point, else the least distance from a
//!   vertex of either to the other (why that is exact: `prepared.rs`).
//!
//! Results agree with a brute-force oracle (dense sampling of every edge, Karney
//! distances) to 1 mm, in the tests. Cheap bounds (chords in space, `ellipsoid.rs`) only
//! decide which edges need Karney's iteration: [`within_m`] answers exactly what
//! [`distance_to_geometry_m`] would, bit for bit.
//!
//! # Validity
//!
//! Anywhere on the globe, across the antimeridian and near the poles, for edges of any
//! length below half the globe. The nearest point on an edge is proven unique below
//! 8,000 km (`segment.rs`); the crossing tests assume geometries far smaller than a
//! hemisphere. A ring that goes round a pole contains it.
//!
//! # Errors
//!
//! The distance functions never panic: a NaN or out-of-range coordinate gives NaN, an
//! empty geometry an infinite distance. Check user input first with [`check_position`]
//! and [`check_geometry`], which name what is wrong.

mod bounds;
mod ellipsoid;
mod polygon;
mod prepared;
mod segment;

use geo::CoordsIter;
use geo_types::{Coord, Geometry};

pub use bounds::{
    around_geometry, around_parts, geodesic_bounds, min_distance_to_rect_m, search_box,
};
pub use prepared::PreparedGeometry;

/// Why a position or a distance was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GeodesicError {
    #[error(
        "{what}: ({lon}, {lat}) is not a WGS84 position (longitude -180..180, latitude -90..90)"
    )]
    BadPosition { what: String, lon: f64, lat: f64 },
    #[error("{what} must be a finite number of metres, at least 0; got {value}")]
    BadDistance { what: &'static str, value: f64 },
}

/// Refuses a position that is not finite lon/lat in range; `what` names it.
pub fn check_position(c: Coord, what: &str) -> Result<(), GeodesicError> {
    if c.x.is_finite()
        && c.y.is_finite()
        && (-180.0..=180.0).contains(&c.x)
        && (-90.0..=90.0).contains(&c.y)
    {
        Ok(())
    } else {
        Err(GeodesicError::BadPosition {
            what: what.to_string(),
            lon: c.x,
            lat: c.y,
        })
    }
}

/// Refuses a geometry with a position out of range, naming it `{what} position {i}`
/// (counting every coordinate in order from 0).
pub fn check_geometry(g: &Geometry, what: &str) -> Result<(), GeodesicError> {
    for (i, c) in g.coords_iter().enumerate() {
        check_position(c, &format!("{what} position {i}"))?;
    }
    Ok(())
}

/// Geodesic distance on WGS84 between two points, metres (Karney).
pub fn point_distance_m(a: Coord, b: Coord) -> f64 {
    segment::karney_m(a, b)
}

/// A point from which many points are measured (a `within` or `nearest` centre): its
/// Earth-centred position is computed once, so a chord in space bounds each distance
/// from below (`ellipsoid.rs`) and points that cannot be near enough skip Karney's
/// iteration. Every distance it gives is [`point_distance_m`]'s, bit for bit.
#[derive(Clone, Copy, Debug)]
pub struct Centre {
    c: Coord,
    p: ellipsoid::V3,
}

impl Centre {
    pub fn new(c: Coord) -> Self {
        Centre {
            c,
            p: ellipsoid::ecef(c),
        }
    }

    /// A lower bound of the distance to `q`, metres (the chord less the rounding slack).
    pub fn lower_bound_m(&self, q: Coord) -> f64 {
        ellipsoid::norm(ellipsoid::sub(self.p, ellipsoid::ecef(q))) - ellipsoid::SLACK_M
    }

    /// The distance to `q`, metres: [`point_distance_m`].
    pub fn distance_m(&self, q: Coord) -> f64 {
        point_distance_m(self.c, q)
    }

    /// `Some(distance)` when `q` is within `radius_m`, the very number
    /// [`point_distance_m`] gives; `None` otherwise.
    pub fn within_m(&self, q: Coord, radius_m: f64) -> Option<f64> {
        if self.lower_bound_m(q) > radius_m {
            return None;
        }
        let d = self.distance_m(q);
        (d <= radius_m).then_some(d)
    }
}

/// Geodesic distance, metres, from `p` to the nearest point of `g` (0 inside a polygon,
/// infinite for an empty geometry).
pub fn distance_to_geometry_m(p: Coord, g: &Geometry) -> f64 {
    if let Geometry::Point(q) = g {
        return point_distance_m(p, q.0);
    }
    // Inside: no need to take the geometry apart (this is the same test it would make).
    if inside_usable(g, p) {
        return 0.0;
    }
    PreparedGeometry::new(g).distance_from_m(p)
}

/// `Some(distance)` when `p` is within `radius_m` metres of `g`, the very number
/// [`distance_to_geometry_m`] gives; `None` otherwise (and for a negative or NaN radius).
/// Cheap when the answer is no: a chord in space bounds the distance first.
pub fn within_m(p: Coord, g: &Geometry, radius_m: f64) -> Option<f64> {
    if let Geometry::Point(q) = g {
        if radius_m.is_nan() || radius_m < 0.0 {
            return None;
        }
        let chord = ellipsoid::norm(ellipsoid::sub(ellipsoid::ecef(p), ellipsoid::ecef(q.0)));
        if chord - ellipsoid::SLACK_M > radius_m {
            return None;
        }
        let d = point_distance_m(p, q.0);
        return (d <= radius_m).then_some(d);
    }
    if radius_m >= 0.0 && inside_usable(g, p) {
        return Some(0.0);
    }
    PreparedGeometry::new(g).within_m(p, radius_m)
}

/// Whether `p` is inside a polygon of `g`, all coordinates being usable: the answer
/// [`PreparedGeometry`] would give first, without computing what it keeps for distances.
fn inside_usable(g: &Geometry, p: Coord) -> bool {
    let usable = |c: Coord| c.x.is_finite() && c.y.abs() <= 90.0;
    usable(p) && g.coords_iter().all(usable) && polygon_contains(g, p)
}

/// Whether `p` lies inside a polygon of `g` (geodesic edges; holes excluded). Points,
/// lines and empty geometries contain nothing.
pub fn polygon_contains(g: &Geometry, p: Coord) -> bool {
    match g {
        Geometry::Polygon(poly) => polygon::polygon_contains(poly, p),
        Geometry::MultiPolygon(m) => m.0.iter().any(|poly| polygon::polygon_contains(poly, p)),
        Geometry::Rect(r) => polygon::polygon_contains(&r.to_polygon(), p),
        Geometry::Triangle(t) => polygon::polygon_contains(&t.to_polygon(), p),
        Geometry::GeometryCollection(c) => c.0.iter().any(|g| polygon_contains(g, p)),
        Geometry::Point(_)
        | Geometry::MultiPoint(_)
        | Geometry::Line(_)
        | Geometry::LineString(_)
        | Geometry::MultiLineString(_) => false,
    }
}

/// Geodesic distance, metres, between the nearest points of `a` and `b` (0 when they
/// intersect; infinite when either is empty). For `S_DWITHIN`, corridors and buffers.
pub fn distance_between_m(a: &Geometry, b: &Geometry) -> f64 {
    PreparedGeometry::new(a).distance_to_m(&PreparedGeometry::new(b))
}

/// Whether `a` and `b` lie within `max_m` metres of each other: exactly
/// `distance_between_m(a, b) <= max_m` (the filter's `S_DWITHIN`), but between two
/// points without taking them apart, and with a chord bound first, so most candidates
/// of a radius never reach Karney's iteration.
pub fn within_distance_between_m(a: &Geometry, b: &Geometry, max_m: f64) -> bool {
    if let (Geometry::Point(p), Geometry::Point(q)) = (a, b) {
        let usable = |c: Coord| c.x.is_finite() && c.y.abs() <= 90.0;
        if !(usable(p.0) && usable(q.0)) {
            return false;
        }
        if Centre::new(q.0).lower_bound_m(p.0) > max_m {
            return false;
        }
        // `distance_between_m` takes the lesser of Karney's answers from either end.
        return point_distance_m(p.0, q.0) <= max_m || point_distance_m(q.0, p.0) <= max_m;
    }
    distance_between_m(a, b) <= max_m
}

/// `Some(distance)` when `a` and `b` are within `max_m` metres, the very number
/// [`distance_between_m`] gives; `None` otherwise.
pub fn within_distance_m(a: &Geometry, b: &Geometry, max_m: f64) -> Option<f64> {
    PreparedGeometry::new(a).within_distance_of_m(&PreparedGeometry::new(b), max_m)
}
