//! Axis-aligned boxes in WGS84 degrees.

use geo::BoundingRect;
use geo_types::{Coord, Geometry, Rect};

/// A closed box in WGS84 degrees, lon/lat order: points on an edge belong to it.
///
/// Invariant: all four numbers are finite and `min <= max` on both axes. Boxes never
/// cross the antimeridian; a box of zero width or height is valid (a line or a point).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bbox {
    pub min_lon: f64,
    pub min_lat: f64,
    pub max_lon: f64,
    pub max_lat: f64,
}

/// Why a box was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BboxError {
    #[error("bbox needs 4 numbers (min_lon,min_lat,max_lon,max_lat), got {count}")]
    WrongCount { count: usize },
    #[error("bbox value {index} ({text:?}) is not a finite number")]
    NotANumber { index: usize, text: String },
    #[error("bbox longitude {value} is outside -180..180")]
    LonOutOfRange { value: f64 },
    #[error("bbox latitude {value} is outside -90..90")]
    LatOutOfRange { value: f64 },
    #[error(
        "bbox minimum exceeds maximum ({min} > {max}); boxes across the antimeridian are not supported"
    )]
    Inverted { min: f64, max: f64 },
}

impl Bbox {
    /// A validated box.
    pub fn new(min_lon: f64, min_lat: f64, max_lon: f64, max_lat: f64) -> Result<Self, BboxError> {
        for lon in [min_lon, max_lon] {
            if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
                return Err(BboxError::LonOutOfRange { value: lon });
            }
        }
        for lat in [min_lat, max_lat] {
            if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
                return Err(BboxError::LatOutOfRange { value: lat });
            }
        }
        if min_lon > max_lon {
            return Err(BboxError::Inverted {
                min: min_lon,
                max: max_lon,
            });
        }
        if min_lat > max_lat {
            return Err(BboxError::Inverted {
                min: min_lat,
                max: max_lat,
            });
        }
        Ok(Bbox {
            min_lon,
            min_lat,
            max_lon,
            max_lat,
        })
    }

    /// Parses `min_lon,min_lat,max_lon,max_lat` as in OGC API – Features.
    pub fn parse(text: &str) -> Result<Self, BboxError> {
        let parts: Vec<&str> = text.split(',').collect();
        if parts.len() != 4 {
            return Err(BboxError::WrongCount { count: parts.len() });
        }
        let mut n = [0.0; 4];
        for (index, part) in parts.iter().enumerate() {
            n[index] = part
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| BboxError::NotANumber {
                    index,
                    text: part.to_string(),
                })?;
        }
        Bbox::new(n[0], n[1], n[2], n[3])
    }

    /// The box of one coordinate.
    pub fn of_coord(c: Coord) -> Self {
        Bbox {
            min_lon: c.x,
            min_lat: c.y,
            max_lon: c.x,
            max_lat: c.y,
        }
    }

    /// The bounding box of a geometry, `None` when it is empty.
    pub fn of_geometry(g: &Geometry) -> Option<Self> {
        g.bounding_rect().map(Bbox::from)
    }

    /// The smallest box holding both.
    pub fn union(self, other: Bbox) -> Bbox {
        Bbox {
            min_lon: self.min_lon.min(other.min_lon),
            min_lat: self.min_lat.min(other.min_lat),
            max_lon: self.max_lon.max(other.max_lon),
            max_lat: self.max_lat.max(other.max_lat),
        }
    }

    /// Whether the closed boxes share at least one point.
    pub fn intersects(&self, other: &Bbox) -> bool {
        self.min_lon <= other.max_lon
            && other.min_lon <= self.max_lon
            && self.min_lat <= other.max_lat
            && other.min_lat <= self.max_lat
    }

    /// Whether the coordinate lies inside or on the edge.
    pub fn contains_coord(&self, c: Coord) -> bool {
        self.min_lon <= c.x && c.x <= self.max_lon && self.min_lat <= c.y && c.y <= self.max_lat
    }

    pub fn to_rect(self) -> Rect {
        Rect::new(
            Coord {
                x: self.min_lon,
                y: self.min_lat,
            },
            Coord {
                x: self.max_lon,
                y: self.max_lat,
            },
        )
    }

    /// `[min_lon, min_lat, max_lon, max_lat]`, the order of GeoJSON and OGC API bboxes.
    pub fn to_array(self) -> [f64; 4] {
        [self.min_lon, self.min_lat, self.max_lon, self.max_lat]
    }
}

impl From<Rect> for Bbox {
    fn from(r: Rect) -> Self {
        Bbox {
            min_lon: r.min().x,
            min_lat: r.min().y,
            max_lon: r.max().x,
            max_lat: r.max().y,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_zero_width_and_refuses_bad_boxes() {
        assert!(Bbox::parse("106,29,106,30").is_ok());
        assert_eq!(
            Bbox::parse("1,2,3"),
            Err(BboxError::WrongCount { count: 3 })
        );
        assert!(matches!(
            Bbox::parse("1,NaN,3,4"),
            Err(BboxError::NotANumber { index: 1, .. })
        ));
        assert!(matches!(
            Bbox::parse("1,2,inf,4"),
            Err(BboxError::NotANumber { index: 2, .. })
        ));
        assert!(matches!(
            Bbox::parse("170,0,-170,1"),
            Err(BboxError::Inverted { .. })
        ));
        assert!(matches!(
            Bbox::parse("0,-91,1,1"),
            Err(BboxError::LatOutOfRange { .. })
        ));
    }

    #[test]
    fn edges_belong_to_the_box() {
        let b = Bbox::new(0.0, 0.0, 1.0, 1.0).unwrap();
        assert!(b.contains_coord(Coord { x: 1.0, y: 0.5 }));
        assert!(b.contains_coord(Coord { x: 0.0, y: 0.0 }));
        assert!(!b.contains_coord(Coord {
            x: 1.0 + 1e-12,
            y: 0.5
        }));
        assert!(b.intersects(&Bbox::new(1.0, 1.0, 2.0, 2.0).unwrap()));
    }
}
