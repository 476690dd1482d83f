//! What an R-tree over lon/lat boxes needs: a box surely holding every point within a
//! radius, a lower bound of the distance to a box, and the box of a geometry with
//! geodesic edges.
//!
//! All three rest on the metric of the ellipsoid in latitude φ and longitude λ (radians):
//! `ds² = M(φ)² dφ² + (N(φ)·cos φ)² dλ²`, with `M` (meridional radius) growing and `N·cos φ`
//! (radius of the parallel) shrinking as |φ| grows. So a path's length is at least
//! `∫ M dφ` (the meridian arc between its end latitudes: meridians are the shortest way
//! between parallels) and at least `min(N·cos φ) · |Δλ|` over the latitudes it visits.

use geo_types::{Coord, Geometry};
use geographiclib_rs::capability as caps;

use super::GeodesicError;
use super::ellipsoid::{F, SLACK_M, WGS84, meridional_radius, parallel_radius, wrap180};
use super::polygon::ring_edges;
use super::segment::karney_m;
use crate::model::Bbox;

/// Latitude slack, degrees (1e-11° ≈ 1 µm), against rounding.
const LAT_SLACK_DEG: f64 = 1e-11;

/// Lon/lat boxes (one, or two split at the antimeridian) that surely contain every point
/// within `radius_m` metres (geodesic) of `p`. A radius reaching a pole gives the full
/// longitude range up to that pole.
///
/// Latitudes: from the meridian arcs of length `radius_m` north and south (Karney's direct
/// solution). Longitudes: every point of the shortest path to a point within the radius is
/// itself within the radius, so inside that latitude band, where the parallel's radius is
/// at least its value at the band's highest |φ|; `Δλ <= radius / that`.
pub fn search_box(p: Coord, radius_m: f64) -> Result<Vec<Bbox>, GeodesicError> {
    super::check_position(p, "point")?;
    if !(radius_m.is_finite() && radius_m >= 0.0) {
        return Err(GeodesicError::BadDistance {
            what: "radius_m",
            value: radius_m,
        });
    }
    let lon = wrap180(p.x);
    let north = karney_m(p, Coord { x: lon, y: 90.0 });
    let south = karney_m(p, Coord { x: lon, y: -90.0 });
    let along_meridian = |azi: f64| {
        let (_, lat, ..) = WGS84._gen_direct(p.y, lon, azi, false, radius_m, caps::LATITUDE);
        lat
    };
    let max_lat = if radius_m >= north {
        90.0
    } else {
        (along_meridian(0.0) + LAT_SLACK_DEG).min(90.0)
    };
    let min_lat = if radius_m >= south {
        -90.0
    } else {
        (along_meridian(180.0) - LAT_SLACK_DEG).max(-90.0)
    };
    let full = |min_lat, max_lat| {
        Bbox::new(-180.0, min_lat, 180.0, max_lat).map_err(|_| GeodesicError::BadPosition {
            what: "point".into(),
            lon: p.x,
            lat: p.y,
        })
    };
    if max_lat >= 90.0 || min_lat <= -90.0 {
        return Ok(vec![full(min_lat, max_lat)?]);
    }
    let highest = max_lat.abs().max(min_lat.abs()).to_radians();
    let dlon = (radius_m / parallel_radius(highest)).to_degrees() * (1.0 + 1e-12) + 1e-11;
    if dlon.is_nan() || dlon >= 180.0 {
        return Ok(vec![full(min_lat, max_lat)?]);
    }
    split_at_antimeridian(lon - dlon, lon + dlon)
        .into_iter()
        .map(|(w, e)| {
            Bbox::new(w, min_lat, e, max_lat).map_err(|_| GeodesicError::BadPosition {
                what: "point".into(),
                lon: p.x,
                lat: p.y,
            })
        })
        .collect()
}

/// Most boxes [`around_parts`] gives for one geometry.
const MAX_PART_BOXES: usize = 256;

/// Like [`around_geometry`], but a box around each run of edges of a line (and each of
/// a few points) rather than one around the whole: a corridor 200 m either side of a
/// 3 km pipeline running diagonally covers a tenth of the box around the pipeline, and
/// every risk point in that box would be a candidate to measure. Polygons keep one box
/// (their inside is near too). About [`MAX_PART_BOXES`] runs, and at least one per
/// line of a MultiLineString (a query geometry has at most 10,000 positions, so that
/// many at most); twice as many boxes where a run crosses the antimeridian. They
/// overlap, so the caller removes duplicate candidates.
pub fn around_parts(g: &Geometry, radius_m: f64) -> Result<Vec<Bbox>, GeodesicError> {
    use geo_types::{Coord, LineString, Point};
    let lines: Vec<&LineString> = match g {
        Geometry::LineString(l) => vec![l],
        Geometry::MultiLineString(m) => m.0.iter().collect(),
        Geometry::MultiPoint(m) if m.0.len() <= MAX_PART_BOXES => {
            let mut out = Vec::new();
            for p in &m.0 {
                out.extend(around_geometry(&Geometry::Point(*p), radius_m)?);
            }
            return Ok(out);
        }
        _ => return around_geometry(g, radius_m),
    };
    // Runs about twice the distance long: shorter ones would overlap mostly (each box
    // reaches the distance beyond its run), longer ones hold more to measure. Lengths
    // are estimated on the flat map: they only choose where runs end, never what is
    // kept.
    let approx_m = |a: Coord, b: Coord| {
        let dx = wrap180(b.x - a.x) * (0.5 * (a.y + b.y)).to_radians().cos() * 111_320.0;
        let dy = (b.y - a.y) * 110_574.0;
        dx.hypot(dy)
    };
    let total: f64 = lines
        .iter()
        .flat_map(|l| l.0.windows(2).map(|w| approx_m(w[0], w[1])))
        .sum();
    let target = (2.0 * radius_m).max(total / MAX_PART_BOXES as f64);
    let mut out = Vec::new();
    for l in lines {
        if l.0.len() < 2 {
            if let Some(&c) = l.0.first() {
                out.extend(around_geometry(&Geometry::Point(Point(c)), radius_m)?);
            }
            continue;
        }
        let mut start = 0;
        while start + 1 < l.0.len() {
            let mut end = start + 1;
            let mut length = approx_m(l.0[start], l.0[end]);
            while end + 1 < l.0.len() && length < target {
                length += approx_m(l.0[end], l.0[end + 1]);
                end += 1;
            }
            let part = Geometry::LineString(LineString(l.0[start..=end].to_vec()));
            out.extend(around_geometry(&part, radius_m)?);
            start = end;
        }
    }
    Ok(out)
}

/// Lon/lat boxes (one, or two split at the antimeridian) that surely contain every
/// point within `radius_m` metres (geodesic) of some point of `g` (edges geodesic): the
/// filter `S_DWITHIN` and corridors ask the R-tree with these. Empty for an empty
/// geometry.
///
/// From [`geodesic_bounds`] of `g`: a path of length `r` changes latitude by at most
/// `r / M(0)` (the meridional radius is least at the equator), and longitude by at most
/// `r` over the least parallel radius of the latitudes it can reach.
pub fn around_geometry(g: &Geometry, radius_m: f64) -> Result<Vec<Bbox>, GeodesicError> {
    if !(radius_m.is_finite() && radius_m >= 0.0) {
        return Err(GeodesicError::BadDistance {
            what: "distance",
            value: radius_m,
        });
    }
    let Some(b) = geodesic_bounds(g) else {
        return Ok(Vec::new());
    };
    let dlat = (radius_m / meridional_radius(0.0)).to_degrees() * (1.0 + 1e-12) + LAT_SLACK_DEG;
    let (south, north) = ((b.min_lat - dlat).max(-90.0), (b.max_lat + dlat).min(90.0));
    let bad = |_| GeodesicError::BadDistance {
        what: "distance",
        value: radius_m,
    };
    let full = || {
        Bbox::new(-180.0, south, 180.0, north)
            .map(|b| vec![b])
            .map_err(bad)
    };
    if south <= -90.0 || north >= 90.0 {
        return full();
    }
    let highest = south.abs().max(north.abs()).to_radians();
    let dlon = (radius_m / parallel_radius(highest)).to_degrees() * (1.0 + 1e-12) + 1e-11;
    let (west, east) = (b.min_lon - dlon, b.max_lon + dlon);
    if dlon.is_nan() || east - west >= 360.0 {
        return full();
    }
    split_at_antimeridian(west, east)
        .into_iter()
        .map(|(w, e)| Bbox::new(w, south, e, north).map_err(bad))
        .collect()
}

/// A longitude span `west..east` (less than 360° wide, within one turn of ±180°) as
/// one or two spans inside -180..180.
fn split_at_antimeridian(west: f64, east: f64) -> Vec<(f64, f64)> {
    if west < -180.0 {
        vec![(west + 360.0, 180.0), (-180.0, east)]
    } else if east > 180.0 {
        vec![(west, 180.0), (-180.0, east - 360.0)]
    } else {
        vec![(west, east)]
    }
}

/// A lower bound, metres, of the geodesic distance from `p` to every point of `rect`
/// (lon/lat degrees; longitudes compared round the globe). 0 when `p` is inside. Within
/// about 1e-4 of the true distance at city scale (2 cm at 500 m near 30° N).
///
/// Why it is a lower bound: take a latitude band `[φlo, φhi]` holding `p`, the box, and a
/// margin `w` beyond both. A path from `p` to the box that stays in the band is at least as
/// long as in the flat metric `M_min² dφ² + P_min² dλ²` (the metric's least coefficients
/// over the band), where the shortest way to the box is the straight one; a path that
/// leaves the band first climbs `w` in latitude, at least `M_min·w` metres. The bound is
/// the smaller of the two, and `w` is chosen so the second rarely is.
pub fn min_distance_to_rect_m(p: Coord, rect: &Bbox) -> f64 {
    let lat_gap = if p.y < rect.min_lat {
        rect.min_lat - p.y
    } else if p.y > rect.max_lat {
        p.y - rect.max_lat
    } else {
        0.0
    };
    let lon_gap = {
        let west = (rect.min_lon - p.x).rem_euclid(360.0);
        let east = (p.x - rect.max_lon).rem_euclid(360.0);
        let width = rect.max_lon - rect.min_lon;
        if width >= 360.0 || (p.x - rect.min_lon).rem_euclid(360.0) <= width {
            0.0
        } else {
            west.min(east)
        }
    };
    if lat_gap == 0.0 && lon_gap == 0.0 {
        return 0.0;
    }
    if lat_gap.is_nan() || lon_gap.is_nan() {
        return f64::NAN;
    }
    let (lat_gap, lon_gap) = (lat_gap.to_radians(), lon_gap.to_radians());
    let phi = p.y.to_radians();
    let estimate = (meridional_radius(phi) * lat_gap).hypot(parallel_radius(phi) * lon_gap);
    let w = 1.05 * estimate / super::ellipsoid::RHO_MIN + 1e-12;
    let half_pi = std::f64::consts::FRAC_PI_2;
    let lo = (phi.min(rect.min_lat.to_radians()) - w).max(-half_pi);
    let hi = (phi.max(rect.max_lat.to_radians()) + w).min(half_pi);
    let nearest_equator = if lo <= 0.0 && hi >= 0.0 {
        0.0
    } else {
        lo.abs().min(hi.abs())
    };
    let m_min = meridional_radius(nearest_equator);
    let p_min = parallel_radius(lo.abs().max(hi.abs()));
    let flat = (m_min * lat_gap).hypot(p_min * lon_gap);
    let bound = flat.min(m_min * w);
    (bound * (1.0 - 1e-12) - SLACK_M).max(0.0)
}

/// The lon/lat box of a geometry whose edges are geodesics: its vertices' box widened
/// where an edge bulges poleward beyond its ends (1.1 cm for a 1 km east–west edge at
/// 30° N, kilometres for long edges at high latitude), the whole longitude range when an
/// edge crosses the antimeridian, and up to the pole for a ring round a pole. An R-tree
/// over these boxes never misses a geometry that [`search_box`] reaches; one over the
/// vertices' boxes can, by the bulge. `None` for an empty geometry.
pub fn geodesic_bounds(g: &Geometry) -> Option<Bbox> {
    let mut b = Bounds {
        min_lon: f64::INFINITY,
        max_lon: f64::NEG_INFINITY,
        min_lat: f64::INFINITY,
        max_lat: f64::NEG_INFINITY,
    };
    b.add_geometry(g);
    if !(b.min_lon <= b.max_lon && b.min_lat <= b.max_lat) {
        return None;
    }
    // Slack against rounding, as for every bound here (Karney's positions along an edge
    // differ from its vertices in the last bits).
    Bbox::new(
        (b.min_lon - LAT_SLACK_DEG).max(-180.0),
        (b.min_lat - LAT_SLACK_DEG).max(-90.0),
        (b.max_lon + LAT_SLACK_DEG).min(180.0),
        (b.max_lat + LAT_SLACK_DEG).min(90.0),
    )
    .ok()
}

struct Bounds {
    min_lon: f64,
    max_lon: f64,
    min_lat: f64,
    max_lat: f64,
}

impl Bounds {
    fn add_geometry(&mut self, g: &Geometry) {
        match g {
            Geometry::Point(p) => self.add_vertex(p.0),
            Geometry::MultiPoint(m) => m.0.iter().for_each(|p| self.add_vertex(p.0)),
            Geometry::Line(l) => self.add_path(&[l.start, l.end]),
            Geometry::LineString(l) => self.add_path(&l.0),
            Geometry::MultiLineString(m) => m.0.iter().for_each(|l| self.add_path(&l.0)),
            Geometry::Polygon(p) => self.add_polygon(p),
            Geometry::MultiPolygon(m) => m.0.iter().for_each(|p| self.add_polygon(p)),
            Geometry::Rect(r) => self.add_polygon(&r.to_polygon()),
            Geometry::Triangle(t) => self.add_polygon(&t.to_polygon()),
            Geometry::GeometryCollection(c) => c.0.iter().for_each(|g| self.add_geometry(g)),
        }
    }

    fn add_vertex(&mut self, c: Coord) {
        self.min_lon = self.min_lon.min(c.x);
        self.max_lon = self.max_lon.max(c.x);
        self.min_lat = self.min_lat.min(c.y);
        self.max_lat = self.max_lat.max(c.y);
    }

    fn add_path(&mut self, coords: &[Coord]) {
        coords.iter().for_each(|&c| self.add_vertex(c));
        for w in coords.windows(2) {
            self.add_edge(w[0], w[1]);
        }
    }

    fn add_polygon(&mut self, p: &geo_types::Polygon) {
        p.exterior().0.iter().for_each(|&c| self.add_vertex(c));
        for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
            for (a, b) in ring_edges(ring) {
                self.add_edge(a, b);
            }
        }
        let winding: f64 = ring_edges(p.exterior())
            .map(|(a, b)| wrap180(b.x - a.x))
            .sum();
        if winding.abs() > 180.0 {
            // Round a pole: the polygon holds it (see polygon.rs for which).
            let n = p.exterior().0.len() as f64;
            let mean_lat = p.exterior().0.iter().map(|v| v.y).sum::<f64>() / n;
            self.full_lon();
            if mean_lat > 0.0 {
                self.max_lat = 90.0;
            } else {
                self.min_lat = -90.0;
            }
        }
    }

    fn full_lon(&mut self) {
        self.min_lon = -180.0;
        self.max_lon = 180.0;
    }

    /// Widens for the edge between two vertices already added (bounds in polygon.rs).
    fn add_edge(&mut self, a: Coord, b: Coord) {
        let dl = wrap180(b.x - a.x);
        if !(-180.0..=180.0).contains(&(a.x + dl)) || dl.abs() >= 180.0 {
            self.full_lon();
        }
        let omega = dl.abs().to_radians() / (1.0 - F);
        let (ta, tb) = (a.y.to_radians().tan(), b.y.to_radians().tan());
        if omega >= std::f64::consts::PI {
            if ta.max(tb) > 0.0 {
                self.max_lat = 90.0;
            }
            if ta.min(tb) < 0.0 {
                self.min_lat = -90.0;
            }
            return;
        }
        let spread = 1.0 / (0.5 * omega).cos();
        let high = ta.max(tb);
        if high > 0.0 {
            let lat = (high * spread).atan().to_degrees() + LAT_SLACK_DEG;
            self.max_lat = self.max_lat.max(lat);
        }
        let low = ta.min(tb);
        if low < 0.0 {
            let lat = (low * spread).atan().to_degrees() - LAT_SLACK_DEG;
            self.min_lat = self.min_lat.min(lat);
        }
    }
}
