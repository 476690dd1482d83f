//! A `bbox` given in another CRS (`bbox-crs`), as the WGS84 region it covers.
//!
//! In a geographic CRS and in Pseudo-Mercator, a box's edges are meridians and parallels,
//! so the region is the box of its two transformed corners, exactly. In a Gauss–Krüger
//! zone the edges are grid lines, curves in lon/lat: the region is the box's outline
//! followed edge by edge (PROJ 9.1 has `proj_trans_bounds`, but the `proj` crate does not
//! expose it and our code may not call PROJ's C API itself), and the box around it,
//! widened so that it contains every point of the requested box.

use geo::Intersects;
use geo_types::{Coord, Geometry, LineString, Point, Polygon, Rect};
use proj::Proj;

use super::transform::{
    Direction, convert, position_to_storage, swap_if_north_first, with_transformer,
};
use super::{Crs, CrsError, Kind};
use crate::model::Bbox;

/// A box as a request gives it with `bbox-crs`: its lower corner, then its upper corner,
/// each in the CRS's axis order (so `[lat, lon]` for EPSG:4326, `[northing, easting]`
/// for the Gauss–Krüger zones), as OGC API – Features Part 2 says. Heights of a
/// 6-number `bbox` are not part of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AxisBox {
    pub lower: [f64; 2],
    pub upper: [f64; 2],
}

/// The WGS84 region a box given in another CRS covers.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRegion {
    /// WGS84 degrees, lon/lat: contains every point of the requested box. The box to
    /// search the R-tree with. Exact (the transformed corners) when `outline` is `None`.
    pub bbox: Bbox,
    /// The requested box's outline in WGS84 lon/lat when it is not a lon/lat box (the
    /// Gauss–Krüger zones): a polygon whose edges follow the box's curved edges to within
    /// [`EDGE_TOLERANCE`] degrees (a line or a point if the box has no width or height).
    /// Candidates from `bbox` are kept if they intersect it.
    pub outline: Option<Geometry>,
}

impl StorageRegion {
    /// Whether a stored geometry (WGS84 lon/lat) intersects the requested box: the exact
    /// test for candidates found through [`StorageRegion::bbox`].
    pub fn intersects(&self, geometry: &Geometry) -> bool {
        match &self.outline {
            Some(outline) => outline.intersects(geometry),
            None => {
                let b = &self.bbox;
                Rect::new(
                    Coord {
                        x: b.min_lon,
                        y: b.min_lat,
                    },
                    Coord {
                        x: b.max_lon,
                        y: b.max_lat,
                    },
                )
                .intersects(geometry)
            }
        }
    }
}

/// How far, in degrees, a curved edge of a box's outline may stray from the chords that
/// approximate it (1e-7° is 1.1 cm of latitude). A 500 × 400 km box over Chongqing in
/// EPSG:4547 then has an outline of about 4,000 points.
pub const EDGE_TOLERANCE: f64 = 1e-7;

/// An edge is halved at least this many times (8 pieces), so that one midpoint lying on
/// the chord by chance (an S-bend) does not stop the refinement.
const MIN_DEPTH: u32 = 3;

/// And at most this many times (4,096 pieces), which bounds the work to 16,388 PROJ
/// calls per box; a longer piece is allowed for by widening the box.
const MAX_DEPTH: u32 = 12;

/// The WGS84 region covered by `bbox`, given in `crs` by request parameter `param`.
///
/// Refuses (naming `param`) a corner outside the CRS's domain, a minimum above its
/// maximum (boxes across the antimeridian are not supported, as in [`Bbox`]), and a
/// Gauss–Krüger box whose region would cross the antimeridian.
pub fn bbox_from_crs(param: &str, bbox: AxisBox, crs: Crs) -> Result<StorageRegion, CrsError> {
    let lower = swap_if_north_first(crs, coord(bbox.lower));
    let upper = swap_if_north_first(crs, coord(bbox.upper));
    let (east_name, north_name) = if crs.is_geographic() {
        ("longitude", "latitude")
    } else {
        ("easting", "northing")
    };
    for (axis, min, max) in [
        (east_name, lower.x, upper.x),
        (north_name, lower.y, upper.y),
    ] {
        if min > max {
            return Err(CrsError::Inverted {
                param: param.to_string(),
                crs: crs.proj_name(),
                axis,
                min,
                max,
            });
        }
    }
    let refuse = |index: usize, reason: String| {
        let given = if index == 0 { bbox.lower } else { bbox.upper };
        CrsError::OutOfDomain {
            param: param.to_string(),
            crs: crs.proj_name(),
            index,
            first: given[0],
            second: given[1],
            reason,
        }
    };
    let corners_to_storage = |proj: Option<&Proj>| -> Result<StorageRegion, CrsError> {
        let mut out = [lower, upper];
        for (index, c) in out.iter_mut().enumerate() {
            let given = swap_if_north_first(crs, *c);
            *c = match proj {
                Some(proj) => position_to_storage(proj, crs, given),
                None => match super::transform::domain_violation(crs, *c) {
                    Some(reason) => Err(reason),
                    None => Ok(*c),
                },
            }
            .map_err(|reason| refuse(index, reason))?;
        }
        let bbox = Bbox::new(out[0].x, out[0].y, out[1].x, out[1].y)
            .map_err(|e| refuse(0, e.to_string()))?;
        Ok(StorageRegion {
            bbox,
            outline: None,
        })
    };
    match crs.kind() {
        // Meridians and parallels stay meridians and parallels, in the same order (the
        // datum shifts PROJ uses here are null or uniform): the corners say it all.
        Kind::Geographic | Kind::PseudoMercator if crs == Crs::CRS84 => corners_to_storage(None),
        Kind::Geographic | Kind::PseudoMercator => {
            with_transformer(crs, Direction::ToStorage, |proj| {
                corners_to_storage(Some(proj))
            })?
        }
        Kind::GaussKruger {
            central_meridian, ..
        } => {
            for (index, c) in [lower, upper].into_iter().enumerate() {
                if let Some(reason) = super::transform::domain_violation(crs, c) {
                    return Err(refuse(index, reason));
                }
            }
            let traced = with_transformer(crs, Direction::ToStorage, |proj| {
                trace_outline(proj, central_meridian, lower, upper)
            })?
            .map_err(|reason| CrsError::OutOfDomain {
                param: param.to_string(),
                crs: crs.proj_name(),
                index: 0,
                first: bbox.lower[0],
                second: bbox.lower[1],
                reason: format!("a point of the box cannot be transformed: {reason}"),
            })?;
            region_of_outline(param, crs, traced)
        }
    }
}

fn coord(p: [f64; 2]) -> Coord {
    Coord { x: p[0], y: p[1] }
}

/// A box's outline in lon/lat, longitudes continued across ±180° from the central
/// meridian, and how far its chords may stray from the true edges (degrees).
struct Traced {
    /// A closed ring; or, for a box with no width or height, a line from the lower to
    /// the upper corner; or the one point of a box with neither.
    path: Vec<Coord>,
    max_deviation: f64,
}

/// Follows the outline of the easting/northing box `lower`..`upper` (PROJ's normalised
/// order) into lon/lat, anticlockwise from the lower-left corner, halving each edge until
/// the midpoint of each piece lies within [`EDGE_TOLERANCE`] of its chord.
fn trace_outline(
    proj: &Proj,
    central_meridian: f64,
    lower: Coord,
    upper: Coord,
) -> Result<Traced, String> {
    // The whole zone lies within 90° of its central meridian, so longitudes measured
    // from it never jump: a box's outline is continuous even across ±180°.
    let to_lonlat = |c: Coord| -> Result<Coord, String> {
        let out = convert(proj, c)?;
        let mut lon = out.x - central_meridian;
        lon -= 360.0 * (lon / 360.0).round();
        Ok(Coord {
            x: central_meridian + lon,
            y: out.y,
        })
    };
    let corners = if lower == upper {
        vec![lower]
    } else if lower.x == upper.x || lower.y == upper.y {
        vec![lower, upper]
    } else {
        let lower_right = Coord {
            x: upper.x,
            y: lower.y,
        };
        let upper_left = Coord {
            x: lower.x,
            y: upper.y,
        };
        vec![lower, lower_right, upper, upper_left, lower]
    };
    let mapped = corners
        .iter()
        .map(|&c| to_lonlat(c))
        .collect::<Result<Vec<_>, _>>()?;
    let mut traced = Traced {
        path: vec![mapped[0]],
        max_deviation: 0.0,
    };
    for i in 1..corners.len() {
        follow_edge(
            &to_lonlat,
            (corners[i - 1], mapped[i - 1]),
            (corners[i], mapped[i]),
            0,
            &mut traced,
        )?;
        traced.path.push(mapped[i]);
    }
    Ok(traced)
}

/// Adds to `traced` the points strictly between `a` and `b` (each a projected position
/// and its lon/lat), refining where the edge curves away from the chord.
fn follow_edge(
    to_lonlat: &impl Fn(Coord) -> Result<Coord, String>,
    a: (Coord, Coord),
    b: (Coord, Coord),
    depth: u32,
    traced: &mut Traced,
) -> Result<(), String> {
    let mid = Coord {
        x: (a.0.x + b.0.x) / 2.0,
        y: (a.0.y + b.0.y) / 2.0,
    };
    let mid_lonlat = to_lonlat(mid)?;
    let deviation = (mid_lonlat.x - (a.1.x + b.1.x) / 2.0)
        .abs()
        .max((mid_lonlat.y - (a.1.y + b.1.y) / 2.0).abs());
    if depth < MAX_DEPTH && (depth < MIN_DEPTH || deviation > EDGE_TOLERANCE) {
        follow_edge(to_lonlat, a, (mid, mid_lonlat), depth + 1, traced)?;
        traced.path.push(mid_lonlat);
        follow_edge(to_lonlat, (mid, mid_lonlat), b, depth + 1, traced)
    } else {
        // The two halves of this piece stray from their chords by about a quarter of
        // `deviation` each (the sagitta of a smooth curve grows with the square of its
        // length): widening the box by `deviation` covers them with room to spare.
        traced.max_deviation = traced.max_deviation.max(deviation);
        traced.path.push(mid_lonlat);
        Ok(())
    }
}

/// The region of a traced Gauss–Krüger box.
fn region_of_outline(param: &str, crs: Crs, traced: Traced) -> Result<StorageRegion, CrsError> {
    let Traced {
        path,
        max_deviation,
    } = traced;
    let (mut min, mut max) = (path[0], path[0]);
    for c in &path {
        min.x = min.x.min(c.x);
        min.y = min.y.min(c.y);
        max.x = max.x.max(c.x);
        max.y = max.y.max(c.y);
    }
    if min.x < -180.0 || max.x > 180.0 {
        return Err(CrsError::AcrossAntimeridian {
            param: param.to_string(),
            crs: crs.proj_name(),
        });
    }
    // Widened by the chords' straying, and by 1e-12° (0.1 µm) for PROJ's rounding.
    let pad = max_deviation + 1e-12;
    let bbox = Bbox {
        min_lon: (min.x - pad).max(-180.0),
        min_lat: (min.y - pad).max(-90.0),
        max_lon: (max.x + pad).min(180.0),
        max_lat: (max.y + pad).min(90.0),
    };
    let outline = match path.len() {
        1 => Geometry::Point(Point(path[0])),
        n if path[0] != path[n - 1] => Geometry::LineString(LineString::new(path)),
        _ => Geometry::Polygon(Polygon::new(LineString::new(path), vec![])),
    };
    Ok(StorageRegion {
        bbox,
        outline: Some(outline),
    })
}
