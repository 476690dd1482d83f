//! Position-by-position transformations between the storage CRS (CRS84) and the others,
//! through PROJ.
//!
//! # PROJ transformers
//!
//! PROJ builds a transformation from its database (`proj_create_crs_to_crs`, what
//! `cs2cs` does), normalised so that both ends take lon/lat or easting/northing
//! (`proj_normalize_for_visualization`); the CRS's own axis order is applied here, by a
//! swap. A `proj::Proj` is neither `Send` nor `Sync` (it owns a PROJ context), so each
//! thread keeps its own, for the thread's life, at most two per supported CRS.
//!
//! Building one from the database takes about 0.4 s (measured on the 2-core machine,
//! every time, in every thread: each PROJ context opens and initialises the database).
//! So that happens once per process and direction: the transformation's PROJ string
//! (its pipeline, e.g. `proj=pipeline step proj=unitconvert ... step proj=tmerc
//! lon_0=114 ...`) is kept process-wide, and other threads build their transformer from
//! it in under a millisecond, with the same numbers (PROJ picks a single operation for
//! every supported CRS: none has alternatives by area). [`warm_up`] does the slow part
//! for every CRS ahead of the first request. Using a cached transformer costs a few
//! nanoseconds.

use std::cell::{Cell, RefCell};
use std::sync::{Mutex, OnceLock};

use geo::{MapCoords, MapCoordsInPlace};
use geo_types::{Coord, Geometry};
use proj::Proj;

use super::{Crs, CrsError, GRS80_QUARTER_MERIDIAN, Kind, MERCATOR_HALF_WORLD};

/// Which way a transformer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// CRS84 → the CRS.
    FromStorage,
    /// The CRS → CRS84.
    ToStorage,
}

thread_local! {
    /// Slot `2 × crs.slot() + direction`: this thread's PROJ transformers.
    static TRANSFORMERS: RefCell<Vec<Option<Proj>>> = const { RefCell::new(Vec::new()) };
}

/// Slot `2 × crs.slot() + direction`: the PROJ strings of the transformations built so
/// far in this process.
fn definitions() -> &'static Mutex<Vec<Option<String>>> {
    static DEFINITIONS: OnceLock<Mutex<Vec<Option<String>>>> = OnceLock::new();
    DEFINITIONS.get_or_init(|| Mutex::new(vec![None; 2 * Crs::supported().len()]))
}

fn slot(crs: Crs, direction: Direction) -> usize {
    2 * crs.slot() + usize::from(direction == Direction::ToStorage)
}

/// A new transformer between CRS84 and `crs`: from the process's PROJ string for it if
/// there is one, else from PROJ's database (leaving the PROJ string for other threads).
fn build(crs: Crs, direction: Direction) -> Result<Proj, CrsError> {
    let (from, to) = match direction {
        Direction::FromStorage => (Crs::CRS84.proj_name(), crs.proj_name()),
        Direction::ToStorage => (crs.proj_name(), Crs::CRS84.proj_name()),
    };
    let setup = |message: String| CrsError::Setup { from, to, message };
    let slot = slot(crs, direction);
    // A poisoned lock only means another thread panicked meanwhile: the strings are
    // whole either way.
    let known = definitions()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(slot)
        .cloned()
        .flatten();
    if let Some(definition) = known {
        return Proj::new(&definition).map_err(|e| setup(e.to_string()));
    }
    let proj = Proj::new_known_crs(from, to, None).map_err(|e| setup(e.to_string()))?;
    let definition = proj.def().map_err(|e| setup(e.to_string()))?;
    if let Some(entry) = definitions()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(slot)
    {
        *entry = Some(definition);
    }
    Ok(proj)
}

/// Builds, in this thread, the transformers of every supported CRS both ways, so that
/// no request waits for PROJ's database (about 0.4 s per CRS and direction, once per
/// process: call it from a background thread at start-up). Fails if PROJ cannot set
/// one up (its database missing, say).
pub fn warm_up() -> Result<(), CrsError> {
    for &crs in Crs::supported().iter().filter(|c| **c != Crs::CRS84) {
        for direction in [Direction::FromStorage, Direction::ToStorage] {
            with_transformer(crs, direction, |_| ())?;
        }
    }
    Ok(())
}

/// Runs `f` with this thread's PROJ transformer between CRS84 and `crs`, building it on
/// first use. Both ends take PROJ's normalised order (lon/lat, easting/northing).
///
/// `f` must not transform through another CRS itself (the cache is borrowed meanwhile).
pub(crate) fn with_transformer<R>(
    crs: Crs,
    direction: Direction,
    f: impl FnOnce(&Proj) -> R,
) -> Result<R, CrsError> {
    TRANSFORMERS.with(|cell| {
        let mut cache = cell.borrow_mut();
        let slot = slot(crs, direction);
        if cache.len() <= slot {
            cache.resize_with(slot + 1, || None);
        }
        let proj = match cache[slot].take() {
            Some(proj) => proj,
            None => build(crs, direction)?,
        };
        let out = f(&proj);
        cache[slot] = Some(proj);
        Ok(out)
    })
}

/// Swaps a position between the CRS's axis order and PROJ's normalised one (the same
/// swap both ways).
pub(crate) fn swap_if_north_first(crs: Crs, c: Coord) -> Coord {
    if crs.axis_order().north_first() {
        Coord { x: c.y, y: c.x }
    } else {
        c
    }
}

/// Why a position in `crs`, in PROJ's normalised order (lon/lat or easting/northing),
/// names no place; `None` if it is in the domain. See the module documentation of
/// [`super`] for the rules.
pub(crate) fn domain_violation(crs: Crs, c: Coord) -> Option<String> {
    if !c.x.is_finite() || !c.y.is_finite() {
        return Some("coordinates must be finite numbers".to_string());
    }
    match crs.kind() {
        Kind::Geographic => {
            if !(-180.0..=180.0).contains(&c.x) {
                Some(format!("longitude {} is outside -180..180", c.x))
            } else if !(-90.0..=90.0).contains(&c.y) {
                Some(format!("latitude {} is outside -90..90", c.y))
            } else {
                None
            }
        }
        Kind::PseudoMercator => {
            if c.x.abs() > MERCATOR_HALF_WORLD || c.y.abs() > MERCATOR_HALF_WORLD {
                Some(format!(
                    "Pseudo-Mercator coordinates must lie within ±{MERCATOR_HALF_WORLD} m"
                ))
            } else {
                None
            }
        }
        Kind::GaussKruger { .. } => (c.y.abs() >= GRS80_QUARTER_MERIDIAN).then(|| {
            format!(
                "northing {} m is at or beyond a pole (±{GRS80_QUARTER_MERIDIAN} m)",
                c.y
            )
        }),
    }
}

/// One position through `proj`, refusing a PROJ error or a non-finite result.
pub(crate) fn convert(proj: &Proj, c: Coord) -> Result<Coord, String> {
    let (x, y) = proj.convert((c.x, c.y)).map_err(|e| e.to_string())?;
    if x.is_finite() && y.is_finite() {
        Ok(Coord { x, y })
    } else {
        Err("PROJ gave no finite result".to_string())
    }
}

/// A position in `crs`, in the CRS's axis order, to WGS84 lon/lat, with the domain
/// checked; the error is the reason, without the parameter.
pub(crate) fn position_to_storage(proj: &Proj, crs: Crs, given: Coord) -> Result<Coord, String> {
    let normalised = swap_if_north_first(crs, given);
    if let Some(reason) = domain_violation(crs, normalised) {
        return Err(reason);
    }
    let lonlat = convert(proj, normalised)?;
    match domain_violation(Crs::CRS84, lonlat) {
        Some(reason) => Err(format!("it transforms to no WGS84 position ({reason})")),
        None => Ok(lonlat),
    }
}

/// A stored geometry (WGS84 degrees, lon/lat) in `crs`, each position in the CRS's axis
/// order (lat/lon for EPSG:4326 and 4490, northing/easting for the Gauss–Krüger zones).
///
/// Transforms vertex by vertex, like `ST_Transform` and `ogr2ogr`: edges are not
/// densified. Not rounded: see [`round_coords`]. Fails where PROJ (and `cs2cs`) cannot
/// transform a position, e.g. a pole to EPSG:3857; the error names the position, not a
/// parameter (it is the stored data's).
pub fn to_crs(geometry: &Geometry, crs: Crs) -> Result<Geometry, CrsError> {
    if crs == Crs::CRS84 {
        return Ok(geometry.clone());
    }
    with_transformer(crs, Direction::FromStorage, |proj| {
        let index = Cell::new(0usize);
        geometry.try_map_coords(|c| {
            let i = index.replace(index.get() + 1);
            convert(proj, c)
                .map(|out| swap_if_north_first(crs, out))
                .map_err(|reason| CrsError::Output {
                    crs: crs.proj_name(),
                    index: i,
                    lon: c.x,
                    lat: c.y,
                    reason,
                })
        })
    })?
}

/// A geometry given in `crs` (its positions in the CRS's axis order), from request
/// parameter `param` (`filter` with `filter-crs`, `intersects` body...), in WGS84
/// degrees, lon/lat.
///
/// Transforms vertex by vertex, like `ST_Transform`: a straight edge in a projected CRS
/// stays a straight edge in lon/lat (the difference is under 1 mm for edges of a few
/// kilometres in Chongqing). A box has its own function, [`super::bbox_from_crs`],
/// which follows the edges. Refuses a position outside the CRS's domain (see
/// [`super`]), naming `param` and the position's number.
pub fn from_crs(param: &str, geometry: &Geometry, crs: Crs) -> Result<Geometry, CrsError> {
    let index = Cell::new(0usize);
    let refuse = |c: Coord, i: usize, reason: String| CrsError::OutOfDomain {
        param: param.to_string(),
        crs: crs.proj_name(),
        index: i,
        first: c.x,
        second: c.y,
        reason,
    };
    if crs == Crs::CRS84 {
        return geometry.try_map_coords(|c| {
            let i = index.replace(index.get() + 1);
            match domain_violation(crs, c) {
                Some(reason) => Err(refuse(c, i, reason)),
                None => Ok(c),
            }
        });
    }
    with_transformer(crs, Direction::ToStorage, |proj| {
        geometry.try_map_coords(|c| {
            let i = index.replace(index.get() + 1);
            position_to_storage(proj, crs, c).map_err(|reason| refuse(c, i, reason))
        })
    })?
}

/// Rounds every coordinate of a geometry given in `crs` to [`Crs::decimals`] places,
/// for output.
pub fn round_coords(geometry: &mut Geometry, crs: Crs) {
    geometry.map_coords_in_place(|c| Coord {
        x: crs.round(c.x),
        y: crs.round(c.y),
    });
}
