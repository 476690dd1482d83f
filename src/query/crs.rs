//! OGC API – Features Part 2 (Coordinate Reference Systems by Reference): the CRSs a
//! request may name in `crs`, `bbox-crs` and `filter-crs`, and the transformations
//! between them and the storage CRS.
//!
//! Features are stored in WGS84 degrees, lon/lat order (OGC CRS84). A request may ask
//! for its output in another CRS ([`to_crs`]) or give its `bbox` ([`bbox_from_crs`]) or
//! filter geometry ([`from_crs`]) in one. Every transformation goes through PROJ (the
//! system library, through the `proj` crate), so the numbers are those of `cs2cs` with
//! the same pair of CRSs.
//!
//! # Supported CRSs and their axis order
//!
//! Coordinates are written in the order the CRS's own definition gives (the EPSG
//! database's, as `projinfo EPSG:nnnn` shows), as Part 2 requires: the first number of a
//! position is the CRS's first axis.
//!
//! | CRS | what | unit | axis order |
//! |---|---|---|---|
//! | OGC CRS84 | WGS84 (the storage CRS) | degree | lon, lat |
//! | EPSG:4326 | WGS84 | degree | lat, lon |
//! | EPSG:4490 | CGCS2000 | degree | lat, lon |
//! | EPSG:3857 | WGS84 / Pseudo-Mercator (web maps) | metre | easting, northing |
//! | EPSG:4544, 4545, 4546, 4547 | CGCS2000 3° Gauss–Krüger, central meridian 105°, 108°, 111°, 114° E (false easting 500 km) | metre | northing (X), easting (Y) |
//! | EPSG:4523, 4524, 4525 | CGCS2000 3° Gauss–Krüger zones 35, 36, 37 (central meridian 105°, 108°, 111° E; false easting zone × 1,000 km + 500 km) | metre | northing (X), easting (Y) |
//!
//! Chongqing (105.2–110.2° E) spans the zones of central meridians 105°, 108° and 111° E.
//! EPSG:4547 (114° E, Hubei and Hunan) is offered because the issue names it; over
//! Chongqing it is used 4–9° from its central meridian, where Gauss–Krüger grid distances
//! are up to 1.2 % too long, but the numbers still equal `cs2cs`'s (see below).
//!
//! # CGCS2000 and WGS84
//!
//! PROJ has no transformation between CGCS2000 and WGS84 in its database and uses a null
//! one ("ballpark geographic offset"): the two datums are taken as equal, a difference
//! of a few centimetres in reality. So do `cs2cs`, GDAL and QGIS, which is what clients
//! compare against; the tests check that our numbers equal `cs2cs`'s.
//!
//! # Outside a zone's area of use
//!
//! Positions outside a Gauss–Krüger zone's area of use (its 3° strip) are transformed
//! anyway, as PROJ and `cs2cs` do: PROJ's transverse Mercator (Poder/Engsager) stays
//! exact far beyond the strip; only the map distortion grows. What is refused is input
//! that names no place: a non-finite number, a longitude or latitude out of range, a
//! Pseudo-Mercator coordinate beyond ±20,037,508.34 m (PROJ would silently wrap it
//! round the world), a Gauss–Krüger northing at or beyond the pole (±10,001,965.73 m),
//! or anything PROJ itself cannot transform.

mod region;
mod transform;

#[cfg(test)]
mod tests;

pub use region::{AxisBox, EDGE_TOLERANCE, StorageRegion, bbox_from_crs};
pub use transform::{from_crs, round_coords, to_crs, warm_up};

use std::fmt;

/// The order of the two numbers of a position in a CRS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AxisOrder {
    /// Longitude then latitude, degrees (CRS84).
    LonLat,
    /// Latitude then longitude, degrees (EPSG:4326, EPSG:4490).
    LatLon,
    /// Easting then northing, metres (EPSG:3857).
    EastingNorthing,
    /// Northing (X) then easting (Y), metres (the CGCS2000 Gauss–Krüger zones).
    NorthingEasting,
}

impl AxisOrder {
    /// Whether the first number is the north-pointing one (latitude or northing), so a
    /// position must be swapped to become PROJ's normalised lon/lat or easting/northing.
    pub fn north_first(self) -> bool {
        matches!(self, AxisOrder::LatLon | AxisOrder::NorthingEasting)
    }
}

/// What kind of coordinates a CRS has, and what bounds its domain.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kind {
    /// Degrees: longitude in -180..=180, latitude in -90..=90.
    Geographic,
    /// Web Mercator metres: both coordinates within ±[`MERCATOR_HALF_WORLD`].
    PseudoMercator,
    /// Transverse Mercator on GRS80, metres.
    GaussKruger {
        /// Degrees east.
        central_meridian: f64,
        /// Metres added to every easting.
        false_easting: f64,
    },
}

/// Half the width of the EPSG:3857 world, metres (π × 6,378,137).
pub(crate) const MERCATOR_HALF_WORLD: f64 = 20_037_508.342_789_244;

/// The length of the GRS80 meridian from the equator to a pole, metres: the northing of
/// the poles in every Gauss–Krüger zone (scale factor 1).
pub(crate) const GRS80_QUARTER_MERIDIAN: f64 = 10_001_965.729_312_8;

/// A coordinate reference system a request may name.
///
/// Equal when their URIs are equal. Obtain one from [`Crs::parse`], [`Crs::supported`]
/// or [`Crs::CRS84`].
#[derive(Clone, Copy, Debug)]
pub struct Crs {
    /// The OGC URI, the canonical name.
    uri: &'static str,
    /// The name PROJ knows it by (`OGC:CRS84`, `EPSG:4547`).
    proj_name: &'static str,
    /// The EPSG code, `None` for CRS84.
    epsg: Option<u16>,
    /// Its name in the EPSG database.
    title: &'static str,
    axis_order: AxisOrder,
    kind: Kind,
    /// Position in [`SUPPORTED`], for the per-thread transformer cache.
    slot: usize,
}

impl PartialEq for Crs {
    fn eq(&self, other: &Self) -> bool {
        self.uri == other.uri
    }
}
impl Eq for Crs {}

impl std::hash::Hash for Crs {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.uri.hash(state);
    }
}

impl fmt::Display for Crs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.proj_name)
    }
}

const fn gauss_kruger(
    slot: usize,
    uri: &'static str,
    proj_name: &'static str,
    epsg: u16,
    title: &'static str,
    central_meridian: f64,
    false_easting: f64,
) -> Crs {
    Crs {
        uri,
        proj_name,
        epsg: Some(epsg),
        title,
        axis_order: AxisOrder::NorthingEasting,
        kind: Kind::GaussKruger {
            central_meridian,
            false_easting,
        },
        slot,
    }
}

/// Every CRS a request may name, the storage CRS first. The Gauss–Krüger parameters
/// repeat the EPSG database's (checked against PROJ in the tests).
static SUPPORTED: [Crs; 11] = [
    Crs::CRS84,
    Crs {
        uri: "http://www.opengis.net/def/crs/EPSG/0/4326",
        proj_name: "EPSG:4326",
        epsg: Some(4326),
        title: "WGS 84",
        axis_order: AxisOrder::LatLon,
        kind: Kind::Geographic,
        slot: 1,
    },
    Crs {
        uri: "http://www.opengis.net/def/crs/EPSG/0/4490",
        proj_name: "EPSG:4490",
        epsg: Some(4490),
        title: "China Geodetic Coordinate System 2000",
        axis_order: AxisOrder::LatLon,
        kind: Kind::Geographic,
        slot: 2,
    },
    Crs {
        uri: "http://www.opengis.net/def/crs/EPSG/0/3857",
        proj_name: "EPSG:3857",
        epsg: Some(3857),
        title: "WGS 84 / Pseudo-Mercator",
        axis_order: AxisOrder::EastingNorthing,
        kind: Kind::PseudoMercator,
        slot: 3,
    },
    gauss_kruger(
        4,
        "http://www.opengis.net/def/crs/EPSG/0/4544",
        "EPSG:4544",
        4544,
        "CGCS2000 / 3-degree Gauss-Kruger CM 105E",
        105.0,
        500_000.0,
    ),
    gauss_kruger(
        5,
        "http://www.opengis.net/def/crs/EPSG/0/4545",
        "EPSG:4545",
        4545,
        "CGCS2000 / 3-degree Gauss-Kruger CM 108E",
        108.0,
        500_000.0,
    ),
    gauss_kruger(
        6,
        "http://www.opengis.net/def/crs/EPSG/0/4546",
        "EPSG:4546",
        4546,
        "CGCS2000 / 3-degree Gauss-Kruger CM 111E",
        111.0,
        500_000.0,
    ),
    gauss_kruger(
        7,
        "http://www.opengis.net/def/crs/EPSG/0/4547",
        "EPSG:4547",
        4547,
        "CGCS2000 / 3-degree Gauss-Kruger CM 114E",
        114.0,
        500_000.0,
    ),
    gauss_kruger(
        8,
        "http://www.opengis.net/def/crs/EPSG/0/4523",
        "EPSG:4523",
        4523,
        "CGCS2000 / 3-degree Gauss-Kruger zone 35",
        105.0,
        35_500_000.0,
    ),
    gauss_kruger(
        9,
        "http://www.opengis.net/def/crs/EPSG/0/4524",
        "EPSG:4524",
        4524,
        "CGCS2000 / 3-degree Gauss-Kruger zone 36",
        108.0,
        36_500_000.0,
    ),
    gauss_kruger(
        10,
        "http://www.opengis.net/def/crs/EPSG/0/4525",
        "EPSG:4525",
        4525,
        "CGCS2000 / 3-degree Gauss-Kruger zone 37",
        111.0,
        37_500_000.0,
    ),
];

/// The prefixes of the OGC CRS URIs, `http` and `https`, lower case.
const URI_PREFIXES: [&str; 2] = [
    "http://www.opengis.net/def/crs/",
    "https://www.opengis.net/def/crs/",
];

impl Crs {
    /// OGC CRS84: WGS84 degrees, lon/lat. The storage CRS, and the default of `crs`,
    /// `bbox-crs` and `filter-crs`.
    pub const CRS84: Crs = Crs {
        uri: "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
        proj_name: "OGC:CRS84",
        epsg: None,
        title: "WGS 84 (CRS84)",
        axis_order: AxisOrder::LonLat,
        kind: Kind::Geographic,
        slot: 0,
    };

    /// Every supported CRS, CRS84 first: a collection's `crs` list.
    pub fn supported() -> &'static [Crs] {
        &SUPPORTED
    }

    /// The CRS features are stored in (CRS84): a collection's `storageCrs`.
    pub fn storage_crs() -> Crs {
        Crs::CRS84
    }

    /// Reads the value of a CRS parameter (`crs`, `bbox-crs`, `filter-crs`), named
    /// `param` in the error.
    ///
    /// Accepted spellings, ignoring ASCII case and surrounding whitespace (CRS names are
    /// identifiers, and clients differ in case: `epsg:4326`, `EPSG:4326`):
    /// - the OGC URI, `http://www.opengis.net/def/crs/EPSG/0/4326` (also `https`), and for
    ///   CRS84 `.../OGC/1.3/CRS84` or `.../OGC/0/CRS84`;
    /// - a CURIE, bare or as a safe CURIE in brackets: `EPSG:4326`, `[EPSG:4326]`,
    ///   `OGC:CRS84`, `[OGC:CRS84]`;
    /// - the OGC URN: `urn:ogc:def:crs:EPSG::4326`, `urn:ogc:def:crs:OGC:1.3:CRS84`
    ///   (older WFS clients send these).
    ///
    /// Anything else, including a supported CRS's code with another authority or
    /// version, is refused with the list of supported URIs.
    pub fn parse(param: &str, text: &str) -> Result<Crs, CrsError> {
        let unsupported = || CrsError::Unsupported {
            param: param.to_string(),
            given: text.to_string(),
        };
        let lower = text.trim().to_ascii_lowercase();
        let (authority, code) = split_name(&lower).ok_or_else(unsupported)?;
        SUPPORTED
            .iter()
            .find(|crs| match (authority, crs.epsg) {
                ("epsg", Some(epsg)) => code == epsg.to_string(),
                ("ogc", None) => code == "crs84",
                _ => false,
            })
            .copied()
            .ok_or_else(unsupported)
    }

    /// The OGC URI: the value of `Content-Crs`, `storageCrs` and the `crs` list.
    pub fn uri(&self) -> &'static str {
        self.uri
    }

    /// The value of the `Content-Crs` response header: the URI in angle brackets.
    pub fn content_crs_header(&self) -> String {
        format!("<{}>", self.uri)
    }

    /// The name PROJ and `cs2cs` know it by, e.g. `EPSG:4547`, `OGC:CRS84`.
    pub fn proj_name(&self) -> &'static str {
        self.proj_name
    }

    /// Its name in the EPSG database (`CGCS2000 / 3-degree Gauss-Kruger zone 36`).
    pub fn title(&self) -> &'static str {
        self.title
    }

    /// The order of the numbers of a position, as the CRS's definition gives it.
    pub fn axis_order(&self) -> AxisOrder {
        self.axis_order
    }

    /// Whether coordinates are degrees (else metres).
    pub fn is_geographic(&self) -> bool {
        matches!(self.kind, Kind::Geographic)
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    pub(crate) fn slot(&self) -> usize {
        self.slot
    }

    /// Decimal places written for a coordinate: 9 for degrees (1e-9° is at most 0.11 mm
    /// on the ground), 4 for metres (0.1 mm). Both keep a position within 0.06 mm of
    /// PROJ's, well inside the 1 mm the output must match `cs2cs` to, and drop the
    /// digits that only carry floating-point noise.
    pub fn decimals(&self) -> u32 {
        if self.is_geographic() { 9 } else { 4 }
    }

    /// `value` rounded to [`Crs::decimals`] places (half away from zero): the nearest
    /// `f64` to the decimal, so it prints with at most that many decimals.
    pub fn round(&self, value: f64) -> f64 {
        let scale = 10f64.powi(self.decimals() as i32);
        let scaled = (value * scale).round();
        // Beyond 2^53 every f64 is an integer already at this scale: nothing to round.
        if scaled.abs() >= 9_007_199_254_740_992.0 || !scaled.is_finite() {
            value
        } else {
            scaled / scale
        }
    }
}

/// Splits a lower-cased CRS name into its authority and code (`("epsg", "4326")`,
/// `("ogc", "crs84")`), whichever spelling it uses; `None` if it is none of them.
fn split_name(lower: &str) -> Option<(&str, &str)> {
    if let Some(path) = URI_PREFIXES.iter().find_map(|p| lower.strip_prefix(p)) {
        // authority/version/code
        let mut parts = path.split('/');
        let (authority, version, code) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        return match (authority, version) {
            ("epsg", "0") | ("ogc", "1.3" | "0") => Some((authority, code)),
            _ => None,
        };
    }
    if let Some(rest) = lower.strip_prefix("urn:ogc:def:crs:") {
        // authority:version:code, the version often empty
        let mut parts = rest.split(':');
        let (authority, version, code) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        return match (authority, version) {
            ("epsg", "" | "0") | ("ogc", "1.3" | "") => Some((authority, code)),
            _ => None,
        };
    }
    let curie = match lower.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None => lower,
    };
    let (authority, code) = curie.split_once(':')?;
    matches!(authority, "epsg" | "ogc").then_some((authority, code))
}

/// Why a CRS parameter, or a position given or asked for in a CRS, was refused.
///
/// `param` is the request parameter the value came from (`crs`, `bbox`, `filter`), so
/// the API can answer 400 naming it; [`CrsError::Output`] and [`CrsError::Setup`] are the
/// server's own failures.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CrsError {
    #[error("{param}: unsupported CRS {given:?}; supported: {}", supported_list())]
    Unsupported { param: String, given: String },
    #[error(
        "{param}: position {index} ({first}, {second}) is outside the domain of {crs}: {reason}"
    )]
    OutOfDomain {
        param: String,
        crs: &'static str,
        /// The position's number within the geometry or box (0-based, in the order the
        /// coordinates were given).
        index: usize,
        /// The position's numbers as given, in the CRS's axis order.
        first: f64,
        second: f64,
        reason: String,
    },
    #[error(
        "{param}: the {axis} minimum {min} exceeds its maximum {max} in {crs}; boxes across the antimeridian are not supported"
    )]
    Inverted {
        param: String,
        crs: &'static str,
        axis: &'static str,
        min: f64,
        max: f64,
    },
    #[error("{param}: the box in {crs} crosses the antimeridian, which is not supported")]
    AcrossAntimeridian { param: String, crs: &'static str },
    #[error(
        "position {index} ({lon}, {lat}) of a stored geometry cannot be written in {crs}: {reason}"
    )]
    Output {
        crs: &'static str,
        index: usize,
        /// WGS84 degrees.
        lon: f64,
        lat: f64,
        reason: String,
    },
    #[error("PROJ cannot set up the transformation from {from} to {to}: {message}")]
    Setup {
        from: &'static str,
        to: &'static str,
        message: String,
    },
}

impl CrsError {
    /// The request parameter the error is about, `None` for the server's own failures.
    pub fn param(&self) -> Option<&str> {
        match self {
            CrsError::Unsupported { param, .. }
            | CrsError::OutOfDomain { param, .. }
            | CrsError::Inverted { param, .. }
            | CrsError::AcrossAntimeridian { param, .. } => Some(param),
            CrsError::Output { .. } | CrsError::Setup { .. } => None,
        }
    }
}

fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|c| c.uri)
        .collect::<Vec<_>>()
        .join(", ")
}
