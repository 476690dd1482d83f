//! The CRS of an imported file, and turning its coordinates into WGS84 lon/lat.
//!
//! A CRS comes from the file (a shapefile's `.prj`, a GeoPackage's SRS, a GeoJSON
//! `crs` member) or from the request (`crs=`), which wins. The request's text is never
//! handed to PROJ or GDAL: it is parsed here into an EPSG code (or GCJ-02 / BD-09) and
//! PROJ is given `EPSG:n` built from the number. PROJ runs without network access
//! (the `proj` crate is built without its `network` feature), so an unknown code is an
//! error, never a download.
//!
//! # GCJ-02 and BD-09
//!
//! Chinese web maps (Amap/Gaode, Tencent, Google's China tiles) publish coordinates in
//! GCJ-02, WGS84 shifted by a deliberately obfuscating offset of a few hundred metres;
//! Baidu adds a second rotation and shift on top (BD-09). `crs=GCJ02` and `crs=BD09`
//! undo them. The forward formulas are the ones every open implementation uses (for
//! example `wandergis/coordtransform`; their published test pair, WGS84 (116.404,
//! 39.915) → GCJ-02 (116.41024449916938, 39.91640428150164), is checked in the tests).
//! They have no closed inverse; the usual one-step inverse (subtract the offset computed
//! at the shifted point) is off by 1–2 m, so this module inverts them by fixed-point
//! iteration until the forward formula maps the result back onto the input to within
//! 1e-10° (about 0.01 mm). That is the accuracy of the inversion; how close the
//! published formula is to the official, secret one cannot be measured here (reports
//! put it within a metre). Outside China (the box the formula itself uses,
//! 72.004–137.8347° E, 0.8293–55.8271° N) GCJ-02 equals WGS84 and nothing is changed.
//! Written by hand: the crates that do this (`coordtransform-rs`) offer only the 1–2 m
//! one-step inverse.

use std::f64::consts::PI;

use geo_types::Coord;
use proj::Proj;

/// A CRS an import can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportCrs {
    /// WGS84 lon/lat (OGC CRS84, EPSG:4326 in GIS order, CGCS2000 EPSG:4490, which PROJ
    /// and every GIS take as equal to WGS84).
    Wgs84,
    /// Any other CRS of the EPSG database, by code.
    Epsg(u32),
    /// GCJ-02, the obfuscated lon/lat of Chinese web maps.
    Gcj02,
    /// BD-09, Baidu's lon/lat.
    Bd09,
}

impl ImportCrs {
    /// Parses a CRS as a client names it: `EPSG:4547`, `epsg:4547`,
    /// `http://www.opengis.net/def/crs/EPSG/0/4547`, `urn:ogc:def:crs:EPSG::4547`,
    /// `CRS84`, `GCJ02`/`GCJ-02`, `BD09`/`BD-09`. Anything else is an error naming what
    /// is accepted.
    pub fn parse(text: &str) -> Result<ImportCrs, String> {
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        let compact: String = lower.chars().filter(|c| *c != '-' && *c != '_').collect();
        match compact.as_str() {
            "gcj02" => return Ok(ImportCrs::Gcj02),
            "bd09" | "bd09ll" => return Ok(ImportCrs::Bd09),
            "crs84"
            | "ogc:crs84"
            | "http://www.opengis.net/def/crs/ogc/1.3/crs84"
            | "urn:ogc:def:crs:ogc:1.3:crs84"
            | "wgs84" => return Ok(ImportCrs::Wgs84),
            _ => {}
        }
        let code = [
            "epsg:",
            "http://www.opengis.net/def/crs/epsg/0/",
            "urn:ogc:def:crs:epsg::",
        ]
        .iter()
        .find_map(|p| lower.strip_prefix(p))
        .or_else(|| {
            lower
                .strip_prefix("urn:ogc:def:crs:epsg:")
                .and_then(|r| r.rsplit(':').next())
        });
        match code {
            Some(n) if !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit()) => {
                let n: u32 = n
                    .parse()
                    .map_err(|_| format!("{t:?} is not an EPSG code"))?;
                Ok(Self::from_epsg(n))
            }
            _ => Err(format!(
                "{t:?} is not a CRS riskmap reads; give EPSG:n (e.g. EPSG:4547), its OGC URI, CRS84, GCJ02 or BD09"
            )),
        }
    }

    /// The CRS of an EPSG code (4326 and 4490 are WGS84 lon/lat).
    pub fn from_epsg(code: u32) -> ImportCrs {
        match code {
            4326 | 4490 => ImportCrs::Wgs84,
            n => ImportCrs::Epsg(n),
        }
    }

    /// How reports name it.
    pub fn name(&self) -> String {
        match self {
            ImportCrs::Wgs84 => "EPSG:4326".into(),
            ImportCrs::Epsg(n) => format!("EPSG:{n}"),
            ImportCrs::Gcj02 => "GCJ-02".into(),
            ImportCrs::Bd09 => "BD-09".into(),
        }
    }
}

/// Turns positions of an [`ImportCrs`] into WGS84 lon/lat. Holds a PROJ object, which
/// is neither `Send` nor `Sync`: build one per reading thread.
pub struct ToWgs84 {
    crs: ImportCrs,
    proj: Option<Proj>,
}

impl std::fmt::Debug for ToWgs84 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ToWgs84({})", self.crs.name())
    }
}

/// Half the extent of Web Mercator: beyond it PROJ wraps round the world silently.
const MERCATOR_LIMIT: f64 = 20_037_508.342_789_244;

impl ToWgs84 {
    /// Builds the transformation; an EPSG code PROJ does not know is an error saying so.
    pub fn new(crs: ImportCrs) -> Result<ToWgs84, String> {
        let proj = match crs {
            ImportCrs::Epsg(n) => Some(
                // Axis order normalised for visualisation: easting (or lon) first, as
                // shapefiles, GeoJSON and CSV x/y columns give them.
                Proj::new_known_crs(&format!("EPSG:{n}"), "OGC:CRS84", None)
                    .map_err(|e| format!("unknown CRS EPSG:{n}: PROJ cannot use it ({e})"))?,
            ),
            _ => None,
        };
        Ok(ToWgs84 { crs, proj })
    }

    /// True when positions pass unchanged.
    pub fn is_identity(&self) -> bool {
        self.crs == ImportCrs::Wgs84
    }

    pub fn crs(&self) -> ImportCrs {
        self.crs
    }

    /// One position (x, y in the CRS's GIS order) to WGS84 lon/lat. Non-finite input,
    /// or a point PROJ cannot transform, is an error with the reason.
    pub fn apply(&self, c: Coord) -> Result<Coord, String> {
        if !c.x.is_finite() || !c.y.is_finite() {
            return Err(format!("coordinate ({}, {}) is not finite", c.x, c.y));
        }
        match self.crs {
            ImportCrs::Wgs84 => Ok(c),
            ImportCrs::Gcj02 => Ok(gcj02_to_wgs84(c)),
            ImportCrs::Bd09 => Ok(gcj02_to_wgs84(bd09_to_gcj02(c))),
            ImportCrs::Epsg(n) => {
                if n == 3857 && (c.x.abs() > MERCATOR_LIMIT || c.y.abs() > MERCATOR_LIMIT) {
                    return Err(format!(
                        "({}, {}) is outside Web Mercator's extent (±{MERCATOR_LIMIT} m)",
                        c.x, c.y
                    ));
                }
                let proj = self.proj.as_ref().ok_or("no transformation")?;
                let (x, y) = proj.convert((c.x, c.y)).map_err(|e| {
                    format!(
                        "({}, {}) cannot be transformed from EPSG:{n}: {e}",
                        c.x, c.y
                    )
                })?;
                if !x.is_finite() || !y.is_finite() {
                    return Err(format!(
                        "({}, {}) is outside the area EPSG:{n} can be transformed from",
                        c.x, c.y
                    ));
                }
                Ok(Coord { x, y })
            }
        }
    }
}

// GCJ-02: Krasovsky 1940's semi-major axis and eccentricity squared, as the formula has them.
const GCJ_A: f64 = 6_378_245.0;
const GCJ_EE: f64 = 0.006_693_421_622_965_943;

fn out_of_china(c: Coord) -> bool {
    !(72.004..=137.8347).contains(&c.x) || !(0.8293..=55.8271).contains(&c.y)
}

fn gcj_dlat(x: f64, y: f64) -> f64 {
    let mut r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * x.abs().sqrt();
    r += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    r += (20.0 * (y * PI).sin() + 40.0 * (y / 3.0 * PI).sin()) * 2.0 / 3.0;
    r += (160.0 * (y / 12.0 * PI).sin() + 320.0 * (y * PI / 30.0).sin()) * 2.0 / 3.0;
    r
}

fn gcj_dlon(x: f64, y: f64) -> f64 {
    let mut r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * x.abs().sqrt();
    r += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    r += (20.0 * (x * PI).sin() + 40.0 * (x / 3.0 * PI).sin()) * 2.0 / 3.0;
    r += (150.0 * (x / 12.0 * PI).sin() + 300.0 * (x / 30.0 * PI).sin()) * 2.0 / 3.0;
    r
}

/// The published forward formula: WGS84 lon/lat to GCJ-02.
pub fn wgs84_to_gcj02(c: Coord) -> Coord {
    if out_of_china(c) {
        return c;
    }
    let dlat = gcj_dlat(c.x - 105.0, c.y - 35.0);
    let dlon = gcj_dlon(c.x - 105.0, c.y - 35.0);
    let rad = c.y / 180.0 * PI;
    let magic = 1.0 - GCJ_EE * rad.sin() * rad.sin();
    let sqrt_magic = magic.sqrt();
    let dlat = (dlat * 180.0) / ((GCJ_A * (1.0 - GCJ_EE)) / (magic * sqrt_magic) * PI);
    let dlon = (dlon * 180.0) / (GCJ_A / sqrt_magic * rad.cos() * PI);
    Coord {
        x: c.x + dlon,
        y: c.y + dlat,
    }
}

const BD_X_PI: f64 = PI * 3000.0 / 180.0;

/// The published forward formula: GCJ-02 to BD-09.
pub fn gcj02_to_bd09(c: Coord) -> Coord {
    let z = (c.x * c.x + c.y * c.y).sqrt() + 0.00002 * (c.y * BD_X_PI).sin();
    let theta = c.y.atan2(c.x) + 0.000003 * (c.x * BD_X_PI).cos();
    Coord {
        x: z * theta.cos() + 0.0065,
        y: z * theta.sin() + 0.006,
    }
}

/// Solves `forward(w) = target` by fixed-point iteration from `w = target`: each
/// forward formula is the identity plus an offset that changes slowly with position,
/// so the error shrinks by orders of magnitude per step.
fn invert(target: Coord, forward: impl Fn(Coord) -> Coord) -> Coord {
    let mut w = target;
    for _ in 0..30 {
        let f = forward(w);
        let (dx, dy) = (f.x - target.x, f.y - target.y);
        if dx.abs() < 1e-10 && dy.abs() < 1e-10 {
            break;
        }
        w = Coord {
            x: w.x - dx,
            y: w.y - dy,
        };
    }
    w
}

/// GCJ-02 to WGS84, to 1e-10° of the forward formula's inverse.
pub fn gcj02_to_wgs84(c: Coord) -> Coord {
    if out_of_china(c) {
        return c;
    }
    invert(c, wgs84_to_gcj02)
}

/// BD-09 to GCJ-02, to 1e-10° of the forward formula's inverse.
pub fn bd09_to_gcj02(c: Coord) -> Coord {
    invert(c, gcj02_to_bd09)
}

/// A CRS family named from coordinates alone, for a file that says nothing of its CRS:
/// `None` when they look like lon/lat degrees.
pub fn guess_family(min: Coord, max: Coord) -> Option<String> {
    let degrees = |c: Coord| (-180.0..=180.0).contains(&c.x) && (-90.0..=90.0).contains(&c.y);
    if degrees(min) && degrees(max) {
        return None;
    }
    let swapped = |c: Coord| (-90.0..=90.0).contains(&c.x) && (-180.0..=180.0).contains(&c.y);
    if swapped(min) && swapped(max) {
        return Some("latitude/longitude in swapped order (lat, lon)".into());
    }
    let zone_numbered = |lo: f64, hi: f64| {
        let z = (lo / 1e6).floor();
        z == (hi / 1e6).floor() && (13.0..=45.0).contains(&z)
    };
    if min.y > 0.0 && max.y < 10_001_966.0 {
        if zone_numbered(min.x, max.x) {
            let z = (min.x / 1e6).floor() as u32;
            let hint = if z >= 25 {
                format!(
                    "CGCS2000 3° Gauss–Krüger with the zone number in the easting: zone {z}, central meridian {}° E, EPSG:{}",
                    z * 3,
                    4488 + z
                )
            } else {
                format!(
                    "CGCS2000 6° Gauss–Krüger with the zone number in the easting: zone {z}, central meridian {}° E, EPSG:{}",
                    z * 6 - 3,
                    4478 + z
                )
            };
            return Some(hint);
        }
        // Easting about the 500 km false easting (negative when a zone is used far
        // west of its meridian, as EPSG:4547 over Chongqing).
        if min.x >= -1_000_000.0 && max.x <= 2_000_000.0 {
            return Some(
                "projected metres with a 500 km false easting: Gauss–Krüger without the zone number (CGCS2000 3°: EPSG:4534–4554, e.g. EPSG:4545 for 108° E) or UTM (EPSG:32648 for zone 48N)".into(),
            );
        }
        if max.x.abs() <= MERCATOR_LIMIT && max.y <= MERCATOR_LIMIT {
            return Some("projected metres, perhaps Web Mercator (EPSG:3857)".into());
        }
    }
    Some("projected coordinates of an unknown CRS".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forward_formulas_give_the_published_test_pairs() {
        let g = wgs84_to_gcj02(Coord {
            x: 116.404,
            y: 39.915,
        });
        assert_eq!((g.x, g.y), (116.41024449916938, 39.91640428150164));
        let b = gcj02_to_bd09(Coord {
            x: 116.404,
            y: 39.915,
        });
        assert!(
            (b.x - 116.41036949371029).abs() < 1e-12 && (b.y - 39.92133699351021).abs() < 1e-12
        );
    }

    #[test]
    fn the_inverses_come_back_to_within_1e_9_degrees() {
        for i in 0..2000 {
            let w = Coord {
                x: 73.0 + (i as f64 * 0.0371) % 62.0,
                y: 18.0 + (i as f64 * 0.0173) % 35.0,
            };
            let back = gcj02_to_wgs84(wgs84_to_gcj02(w));
            assert!(
                (back.x - w.x).abs() < 1e-9 && (back.y - w.y).abs() < 1e-9,
                "{w:?} {back:?}"
            );
            let back = gcj02_to_wgs84(bd09_to_gcj02(gcj02_to_bd09(wgs84_to_gcj02(w))));
            assert!(
                (back.x - w.x).abs() < 1e-9 && (back.y - w.y).abs() < 1e-9,
                "{w:?} {back:?}"
            );
        }
        // Outside China nothing moves.
        let paris = Coord { x: 2.35, y: 48.85 };
        assert_eq!(gcj02_to_wgs84(paris), paris);
    }

    #[test]
    fn crs_texts_parse_to_codes_and_nothing_else_passes() {
        assert_eq!(ImportCrs::parse("EPSG:4547"), Ok(ImportCrs::Epsg(4547)));
        assert_eq!(ImportCrs::parse("epsg:4326"), Ok(ImportCrs::Wgs84));
        assert_eq!(
            ImportCrs::parse("http://www.opengis.net/def/crs/EPSG/0/32648"),
            Ok(ImportCrs::Epsg(32648))
        );
        assert_eq!(
            ImportCrs::parse("urn:ogc:def:crs:EPSG::4524"),
            Ok(ImportCrs::Epsg(4524))
        );
        assert_eq!(ImportCrs::parse("GCJ-02"), Ok(ImportCrs::Gcj02));
        assert_eq!(ImportCrs::parse("bd09"), Ok(ImportCrs::Bd09));
        for bad in [
            "",
            "EPSG:",
            "EPSG:12a",
            "/etc/passwd",
            "http://evil/x.prj",
            "+proj=longlat",
            "EPSG:99999999",
        ] {
            assert!(ImportCrs::parse(bad).is_err(), "{bad}");
        }
        assert!(ToWgs84::new(ImportCrs::Epsg(999_999)).is_err());
    }

    #[test]
    fn families_are_named_from_ranges() {
        let c = |x, y| Coord { x, y };
        assert_eq!(guess_family(c(105.0, 29.0), c(106.0, 30.0)), None);
        assert!(
            guess_family(c(36_400_000.0, 3_200_000.0), c(36_500_000.0, 3_300_000.0))
                .unwrap()
                .contains("EPSG:4524")
        );
        assert!(
            guess_family(c(400_000.0, 3_200_000.0), c(500_000.0, 3_300_000.0))
                .unwrap()
                .contains("500 km")
        );
        assert!(
            guess_family(c(29.0, 105.0), c(30.0, 106.0))
                .unwrap()
                .contains("swapped")
        );
    }
}
