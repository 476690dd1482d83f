//! Tile maths: XYZ tiles of the Web Mercator grid (EPSG:3857), `y` counted from the
//! north. "World" coordinates are `[0, 1]` on both axes (see `index::to_world`); tile
//! units run `0..EXTENT` across a tile, `y` down.

use crate::index::{from_world, to_world};
use crate::model::Bbox;

/// Units across a tile (MVT `extent`).
pub const EXTENT: u32 = 4096;
/// Deepest zoom served (x and y fit in `u32`, `2^z` in `f64` exactly).
pub const MAX_ZOOM: u8 = 30;

/// A tile address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileCoord {
    pub z: u8,
    pub x: u32,
    pub y: u32,
}

/// Why a tile address was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TileError {
    #[error("{what} must be a non-negative integer, got {text:?}")]
    NotANumber { what: &'static str, text: String },
    #[error("zoom {z} is above the maximum {MAX_ZOOM}")]
    ZoomTooHigh { z: u64 },
    #[error("{what} = {value} is outside 0..{limit} at zoom {z}")]
    OutOfRange {
        what: &'static str,
        value: u64,
        limit: u64,
        z: u8,
    },
}

impl TileCoord {
    pub fn new(z: u64, x: u64, y: u64) -> Result<Self, TileError> {
        if z > MAX_ZOOM as u64 {
            return Err(TileError::ZoomTooHigh { z });
        }
        let z = z as u8;
        let n = 1u64 << z;
        if x >= n {
            return Err(TileError::OutOfRange {
                what: "x",
                value: x,
                limit: n,
                z,
            });
        }
        if y >= n {
            return Err(TileError::OutOfRange {
                what: "y",
                value: y,
                limit: n,
                z,
            });
        }
        Ok(TileCoord {
            z,
            x: x as u32,
            y: y as u32,
        })
    }

    /// Parses decimal path segments; signs, spaces and other characters are refused.
    pub fn parse(z: &str, x: &str, y: &str) -> Result<Self, TileError> {
        fn num(what: &'static str, t: &str) -> Result<u64, TileError> {
            if t.is_empty() || t.len() > 12 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(TileError::NotANumber {
                    what,
                    text: t.chars().take(24).collect(),
                });
            }
            t.parse().map_err(|_| TileError::NotANumber {
                what,
                text: t.to_string(),
            })
        }
        TileCoord::new(num("z", z)?, num("x", x)?, num("y", y)?)
    }

    /// Tiles per side at this zoom.
    pub fn scale(self) -> f64 {
        (1u64 << self.z) as f64
    }

    /// World bounds `[min_x, min_y, max_x, max_y]`.
    pub fn world_bounds(self) -> [f64; 4] {
        let n = self.scale();
        [
            self.x as f64 / n,
            self.y as f64 / n,
            (self.x + 1) as f64 / n,
            (self.y + 1) as f64 / n,
        ]
    }

    /// A world coordinate in this tile's units.
    pub fn to_tile(self, w: [f64; 2]) -> [f64; 2] {
        let n = self.scale();
        let e = EXTENT as f64;
        [
            (w[0] * n - self.x as f64) * e,
            (w[1] * n - self.y as f64) * e,
        ]
    }

    /// Whether a world coordinate lies in the tile: half-open, so each point belongs
    /// to exactly one tile per zoom (the last row and column take the far edge).
    pub fn contains(self, w: [f64; 2]) -> bool {
        let n = self.scale();
        let (tx, ty) = (w[0] * n, w[1] * n);
        let last = (1u64 << self.z) as f64 - 1.0;
        let inside = |t: f64, i: u32| {
            t >= i as f64 && (t < i as f64 + 1.0 || (i as f64 == last && t <= i as f64 + 1.0))
        };
        inside(tx, self.x) && inside(ty, self.y)
    }

    /// The lon/lat box of the tile grown by `buffer` tile units, clipped to the world
    /// (for R-tree queries; a slightly larger box is harmless, a smaller one is not).
    pub fn lonlat_bbox(self, buffer: u32) -> Bbox {
        let [x0, y0, x1, y1] = self.world_bounds();
        let pad = buffer as f64 / EXTENT as f64 / self.scale();
        let nw = from_world([(x0 - pad).max(0.0), (y0 - pad).max(0.0)]);
        let se = from_world([(x1 + pad).min(1.0), (y1 + pad).min(1.0)]);
        // Lower latitude bound: at the south edge of the world, reach the pole so
        // nothing below the Mercator limit is missed by the query (it is never drawn).
        let min_lat = if y1 + pad >= 1.0 { -90.0 } else { se.y };
        let max_lat = if y0 - pad <= 0.0 { 90.0 } else { nw.y };
        Bbox {
            min_lon: nw.x.max(-180.0),
            min_lat,
            max_lon: se.x.min(180.0),
            max_lat,
        }
    }

    /// The tile holding a lon/lat at zoom `z` (`None` beyond the Mercator limit).
    pub fn of_lonlat(lon: f64, lat: f64, z: u8) -> Option<TileCoord> {
        let w = to_world(geo_types::Coord { x: lon, y: lat })?;
        let n = (1u64 << z) as f64;
        let max = (1u64 << z) - 1;
        Some(TileCoord {
            z,
            x: ((w[0] * n) as u64).min(max) as u32,
            y: ((w[1] * n) as u64).min(max) as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn addresses_are_checked() {
        assert_eq!(
            TileCoord::parse("0", "0", "0"),
            Ok(TileCoord { z: 0, x: 0, y: 0 })
        );
        assert!(matches!(
            TileCoord::parse("31", "0", "0"),
            Err(TileError::ZoomTooHigh { .. })
        ));
        assert!(matches!(
            TileCoord::parse("2", "4", "0"),
            Err(TileError::OutOfRange { what: "x", .. })
        ));
        assert!(matches!(
            TileCoord::parse("2", "0", "4"),
            Err(TileError::OutOfRange { what: "y", .. })
        ));
        assert!(matches!(
            TileCoord::parse("-1", "0", "0"),
            Err(TileError::NotANumber { .. })
        ));
        assert!(matches!(
            TileCoord::parse("3", "+1", "0"),
            Err(TileError::NotANumber { .. })
        ));
        assert!(matches!(
            TileCoord::parse("3", "1", "99999999999999999999"),
            Err(TileError::NotANumber { .. })
        ));
        assert!(TileCoord::parse("30", "1073741823", "1073741823").is_ok());
    }

    #[test]
    fn known_tiles() {
        // Chongqing's Jiefangbei at z12, checked against the usual slippy-map formula.
        assert_eq!(
            TileCoord::of_lonlat(106.577, 29.557, 12),
            Some(TileCoord {
                z: 12,
                x: 3260,
                y: 1695
            })
        );
        assert_eq!(
            TileCoord::of_lonlat(-180.0, MAX_LAT_TEST, 1),
            Some(TileCoord { z: 1, x: 0, y: 0 })
        );
        assert_eq!(
            TileCoord::of_lonlat(180.0, -MAX_LAT_TEST, 1),
            Some(TileCoord { z: 1, x: 1, y: 1 })
        );
    }
    const MAX_LAT_TEST: f64 = 85.0;

    #[test]
    fn tile_bounds_in_degrees_are_the_standard_ones() {
        use crate::index::MAX_LAT;
        // (z, x, y) → (west, south, east, north), from the slippy-map formulas.
        let cases = [
            ((0, 0, 0), (-180.0, -MAX_LAT, 180.0, MAX_LAT)),
            ((1, 0, 0), (-180.0, 0.0, 0.0, MAX_LAT)),
            ((1, 1, 1), (0.0, -MAX_LAT, 180.0, 0.0)),
            ((2, 3, 1), (90.0, 0.0, 180.0, 66.513_260_443_111_8)),
            (
                (12, 3260, 1695),
                (
                    106.523_437_5,
                    29.535_229_562_948_5,
                    106.611_328_125,
                    29.611_670_115_197_4,
                ),
            ),
        ];
        for ((z, x, y), (w, s, e, n)) in cases {
            let b = TileCoord { z, x, y }.lonlat_bbox(0);
            let got = [b.min_lon, b.min_lat, b.max_lon, b.max_lat];
            // The world's edge rows reach the poles in the query box (nothing is lost).
            let want = [
                w,
                if s == -MAX_LAT { -90.0 } else { s },
                e,
                if n == MAX_LAT { 90.0 } else { n },
            ];
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-9, "{z}/{x}/{y}: {got:?} vs {want:?}");
            }
        }
        // The Mercator limit is the last latitude that has a tile; beyond, none.
        let top = TileCoord::of_lonlat(0.0, MAX_LAT, 30).unwrap();
        assert_eq!(top.y, 0);
        let bottom = TileCoord::of_lonlat(180.0, -MAX_LAT, 30).unwrap();
        assert_eq!((bottom.x, bottom.y), ((1 << 30) - 1, (1 << 30) - 1));
        assert_eq!(TileCoord::of_lonlat(0.0, 85.06, 3), None);
        assert_eq!(TileCoord::of_lonlat(0.0, -90.0, 3), None);
    }

    proptest! {
        #[test]
        fn lonlat_tile_bounds_round_trip(lon in -180.0f64..=180.0, lat in -crate::index::MAX_LAT..=crate::index::MAX_LAT, z in 0u8..=30) {
            let t = TileCoord::of_lonlat(lon, lat, z).unwrap();
            let w = to_world(geo_types::Coord { x: lon, y: lat }).unwrap();
            prop_assert!(t.contains(w));
            let b = t.lonlat_bbox(0);
            prop_assert!(b.min_lon <= lon + 1e-9 && lon <= b.max_lon + 1e-9, "{lon} in {b:?}");
            prop_assert!(b.min_lat <= lat + 1e-9 && lat <= b.max_lat + 1e-9, "{lat} in {b:?}");
            let p = t.to_tile(w);
            prop_assert!(p[0] >= -1e-6 && p[0] <= EXTENT as f64 + 1e-6 && p[1] >= -1e-6 && p[1] <= EXTENT as f64 + 1e-6);
            // The tile's world bounds and its parent's nest.
            if z > 0 {
                let parent = TileCoord::of_lonlat(lon, lat, z - 1).unwrap();
                prop_assert_eq!((parent.x, parent.y), (t.x >> 1, t.y >> 1));
            }
        }

        #[test]
        fn each_point_is_in_exactly_one_tile(x in 0.0f64..=1.0, y in 0.0f64..=1.0, z in 0u8..=30) {
            let n = 1u32 << z;
            let cx = ((x * n as f64) as u32).min(n - 1);
            let cy = ((y * n as f64) as u32).min(n - 1);
            let mut hits = 0;
            for dx in cx.saturating_sub(1)..=(cx + 1).min(n - 1) {
                for dy in cy.saturating_sub(1)..=(cy + 1).min(n - 1) {
                    if (TileCoord { z, x: dx, y: dy }).contains([x, y]) { hits += 1; }
                }
            }
            prop_assert_eq!(hits, 1);
        }
    }
}
