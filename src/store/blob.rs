//! GeoPackage geometry blobs (GeoPackage 1.3, §2.1.3): a small header, an optional
//! envelope, then ISO WKB. The header is written by hand because no maintained crate
//! writes GeoPackage blobs without pulling a database driver (geozero's `with-gpkg`
//! brings sqlx); the WKB inside comes from the `wkb` crate.

use geo::BoundingRect;
use geo_traits::to_geo::ToGeoGeometry;
use geo_types::{Coord, Geometry, Point};

/// Our only spatial reference system: WGS84 lon/lat.
pub const SRS_WGS84: i32 = 4326;

const MAGIC: &[u8; 2] = b"GP";
/// Flags: little-endian header (bit 0), envelope indicator in bits 1-3.
const FLAG_LITTLE_ENDIAN: u8 = 0b0000_0001;
const FLAG_EMPTY: u8 = 0b0001_0000;
const FLAG_EXTENDED: u8 = 0b0010_0000;

/// Encodes a geometry. Points carry no envelope (their envelope is the point, as GDAL
/// writes them); other types carry `[minx, maxx, miny, maxy]`.
pub fn encode(g: &Geometry) -> Vec<u8> {
    let envelope = match g {
        Geometry::Point(_) => None,
        other => other.bounding_rect(),
    };
    let mut out = Vec::with_capacity(8 + 32 + wkb::writer::geometry_wkb_size(g));
    out.extend_from_slice(MAGIC);
    out.push(0); // version 1 (encoded as 0)
    out.push(FLAG_LITTLE_ENDIAN | if envelope.is_some() { 1 << 1 } else { 0 });
    out.extend_from_slice(&SRS_WGS84.to_le_bytes());
    if let Some(r) = envelope {
        for v in [r.min().x, r.max().x, r.min().y, r.max().y] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let options = wkb::writer::WriteOptions {
        endianness: wkb::Endianness::LittleEndian,
    };
    // Writing into a Vec cannot fail, and every geo-types variant has a WKB form.
    if let Err(e) = wkb::writer::write_geometry(&mut out, g, &options) {
        unreachable!("WKB into a Vec failed: {e}");
    }
    out
}

/// Decodes a blob written by us, GDAL or QGIS. Refuses extended and empty geometries
/// and SRS ids other than WGS84 (4326) and undefined geographic (0).
pub fn decode(blob: &[u8]) -> Result<Geometry, String> {
    if blob.len() < 8 || &blob[0..2] != MAGIC {
        return Err("not a GeoPackage geometry blob (no GP magic)".into());
    }
    if blob[2] != 0 {
        return Err(format!("unsupported GeoPackage blob version {}", blob[2]));
    }
    let flags = blob[3];
    if flags & FLAG_EXTENDED != 0 {
        return Err("extended GeoPackage geometry types are not supported".into());
    }
    if flags & FLAG_EMPTY != 0 {
        return Err("empty geometry".into());
    }
    let srs = if flags & FLAG_LITTLE_ENDIAN != 0 {
        i32::from_le_bytes([blob[4], blob[5], blob[6], blob[7]])
    } else {
        i32::from_be_bytes([blob[4], blob[5], blob[6], blob[7]])
    };
    if srs != SRS_WGS84 && srs != 0 {
        return Err(format!("geometry has srs_id {srs}, expected 4326"));
    }
    let envelope_len = match (flags >> 1) & 0b111 {
        0 => 0,
        1 => 32,
        2 | 3 => 48,
        4 => 64,
        n => return Err(format!("invalid envelope indicator {n}")),
    };
    let wkb = blob
        .get(8 + envelope_len..)
        .ok_or("blob shorter than its envelope")?;
    decode_wkb(wkb)
}

/// Decodes ISO WKB, with a fast path for the 21-byte 2D point (most of a city's
/// features are sensors: this keeps start-up within budget).
pub fn decode_wkb(wkb: &[u8]) -> Result<Geometry, String> {
    if wkb.len() == 21 && wkb[0] == 1 && wkb[1..5] == 1u32.to_le_bytes() {
        let x = f64::from_le_bytes(wkb[5..13].try_into().map_err(|_| "short point")?);
        let y = f64::from_le_bytes(wkb[13..21].try_into().map_err(|_| "short point")?);
        return Ok(Point(Coord { x, y }).into());
    }
    let parsed = wkb::reader::read_wkb(wkb).map_err(|e| format!("invalid WKB: {e}"))?;
    parsed
        .try_to_geometry()
        .ok_or_else(|| "WKB geometry type not supported".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo_types::{MultiPolygon, line_string, polygon};

    #[test]
    fn blobs_round_trip_every_layer_type() {
        let poly = polygon![(x: 106.0, y: 29.0), (x: 107.0, y: 29.0), (x: 107.0, y: 30.0), (x: 106.0, y: 29.0)];
        let geoms: Vec<Geometry> = vec![
            Point::new(106.55, 29.56).into(),
            line_string![(x: 106.0, y: 29.0), (x: 106.1, y: 29.2)].into(),
            poly.clone().into(),
            MultiPolygon(vec![poly]).into(),
        ];
        for g in geoms {
            let blob = encode(&g);
            assert_eq!(&blob[0..2], b"GP");
            assert_eq!(decode(&blob).unwrap(), g);
        }
    }

    #[test]
    fn foreign_and_broken_blobs_are_refused() {
        assert!(decode(b"XX\0\x01\0\0\0\0").is_err());
        let mut blob = encode(&Point::new(1.0, 2.0).into());
        blob[4..8].copy_from_slice(&3857i32.to_le_bytes());
        assert!(decode(&blob).unwrap_err().contains("3857"));
        let blob = encode(&line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 1.0)].into());
        assert!(decode(&blob[..blob.len() - 3]).is_err());
    }
}
