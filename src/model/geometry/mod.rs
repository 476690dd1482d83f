//! Geometry types a layer may hold, and the checks every geometry passes before it is
//! stored or indexed, whatever its source (GeoJSON, CSV, an edit over HTTP).
//!
//! Policy: invalid geometries are refused with the reason, never repaired silently.
//! A third number (altitude) is dropped, a fourth or more refused (the store is 2D;
//! see [`from_geojson`]). Coordinates must be finite WGS84
//! degrees: longitude in -180..=180, latitude in -90..=90.

mod polygons;

use super::feature::FieldError;

pub use polygons::check_polygons_sweep;

use geo::Validation;
use geo_types::{
    Coord, Geometry, LineString, MultiLineString, MultiPoint, MultiPolygon, Point, Polygon,
};

/// At most this many vertices in one geometry: a guard against hostile input, far above
/// any real risk-map feature (the Chongqing outline has about 3,000).
pub const MAX_VERTICES: usize = 1_000_000;

/// The geometry type declared by a layer. A layer declared `Multi*` also accepts the
/// single type and stores it promoted (as `ogr2ogr -nlt PROMOTE_TO_MULTI` does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GeometryType {
    Point,
    LineString,
    Polygon,
    MultiPoint,
    MultiLineString,
    MultiPolygon,
}

impl GeometryType {
    pub const ALL: [GeometryType; 6] = [
        GeometryType::Point,
        GeometryType::LineString,
        GeometryType::Polygon,
        GeometryType::MultiPoint,
        GeometryType::MultiLineString,
        GeometryType::MultiPolygon,
    ];

    /// The spelling used in layer files: `point`, `linestring`, `multipolygon`...
    pub fn config_name(self) -> &'static str {
        match self {
            GeometryType::Point => "point",
            GeometryType::LineString => "linestring",
            GeometryType::Polygon => "polygon",
            GeometryType::MultiPoint => "multipoint",
            GeometryType::MultiLineString => "multilinestring",
            GeometryType::MultiPolygon => "multipolygon",
        }
    }

    pub fn from_config_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.config_name() == name)
    }

    /// The GeoJSON / OGC spelling: `Point`, `MultiPolygon`...
    pub fn geojson_name(self) -> &'static str {
        match self {
            GeometryType::Point => "Point",
            GeometryType::LineString => "LineString",
            GeometryType::Polygon => "Polygon",
            GeometryType::MultiPoint => "MultiPoint",
            GeometryType::MultiLineString => "MultiLineString",
            GeometryType::MultiPolygon => "MultiPolygon",
        }
    }

    /// The GeoPackage `geometry_type_name`.
    pub fn gpkg_name(self) -> &'static str {
        match self {
            GeometryType::Point => "POINT",
            GeometryType::LineString => "LINESTRING",
            GeometryType::Polygon => "POLYGON",
            GeometryType::MultiPoint => "MULTIPOINT",
            GeometryType::MultiLineString => "MULTILINESTRING",
            GeometryType::MultiPolygon => "MULTIPOLYGON",
        }
    }

    /// The type of a geometry, `None` for the kinds no layer can hold
    /// (collections, and geo's own Line, Rect and Triangle).
    pub fn of(g: &Geometry) -> Option<Self> {
        Some(match g {
            Geometry::Point(_) => GeometryType::Point,
            Geometry::LineString(_) => GeometryType::LineString,
            Geometry::Polygon(_) => GeometryType::Polygon,
            Geometry::MultiPoint(_) => GeometryType::MultiPoint,
            Geometry::MultiLineString(_) => GeometryType::MultiLineString,
            Geometry::MultiPolygon(_) => GeometryType::MultiPolygon,
            _ => return None,
        })
    }

    /// True for the point types, whose features the index keeps as bare coordinates.
    pub fn is_point(self) -> bool {
        self == GeometryType::Point
    }

    /// Brings `g` to this type: the same type passes, a single geometry is promoted to
    /// the declared multi type, anything else is refused with a reason.
    pub fn conform(self, g: Geometry) -> Result<Geometry, String> {
        let found = GeometryType::of(&g);
        match (self, g) {
            (GeometryType::MultiPoint, Geometry::Point(p)) => Ok(MultiPoint(vec![p]).into()),
            (GeometryType::MultiLineString, Geometry::LineString(l)) => {
                Ok(MultiLineString(vec![l]).into())
            }
            (GeometryType::MultiPolygon, Geometry::Polygon(p)) => Ok(MultiPolygon(vec![p]).into()),
            (want, g) if Some(want) == found => Ok(g),
            (want, g) => Err(format!(
                "expected a {} geometry, found {}",
                want.geojson_name(),
                found
                    .map(|t| t.geojson_name())
                    .unwrap_or_else(|| kind_name(&g))
            )),
        }
    }
}

fn kind_name(g: &Geometry) -> &'static str {
    match g {
        Geometry::GeometryCollection(_) => "GeometryCollection",
        Geometry::Line(_) => "Line",
        Geometry::Rect(_) => "Rect",
        Geometry::Triangle(_) => "Triangle",
        _ => "another type",
    }
}

/// Checks one coordinate: finite WGS84 degrees in range.
pub fn check_coord(c: Coord) -> Result<(), String> {
    if !c.x.is_finite() || !c.y.is_finite() {
        return Err(format!("coordinate ({}, {}) is not finite", c.x, c.y));
    }
    if !(-180.0..=180.0).contains(&c.x) {
        return Err(format!(
            "longitude {} is outside -180..180{}",
            c.x,
            coord_hint(c)
        ));
    }
    if !(-90.0..=90.0).contains(&c.y) {
        return Err(format!(
            "latitude {} is outside -90..90{}",
            c.y,
            coord_hint(c)
        ));
    }
    Ok(())
}

/// What a coordinate out of the lon/lat range most likely is: projected metres (a
/// file whose CRS was not given), or latitude and longitude swapped.
fn coord_hint(c: Coord) -> &'static str {
    if c.x.abs() > 1000.0 || c.y.abs() > 1000.0 {
        "; these look like projected metres, not degrees: give the file's CRS (crs=EPSG:4547, for example)"
    } else if (-90.0..=90.0).contains(&c.x) && (-180.0..=180.0).contains(&c.y) {
        "; the numbers look like latitude, longitude: positions are [longitude, latitude]"
    } else {
        ""
    }
}

/// The geometry wound as RFC 7946 §3.1.6 says for GeoJSON output: exterior rings
/// counter-clockwise, holes clockwise (in lon/lat). Borrowed when it already is (a
/// winding test per ring, linear), else a re-wound copy. Stored geometries keep the
/// winding they were given; GeoJSON readers must accept either, writers should do this.
pub fn rfc7946_wound(g: &Geometry) -> std::borrow::Cow<'_, Geometry> {
    use geo::orient::{Direction, Orient};
    use geo::winding_order::Winding;
    use std::borrow::Cow;
    let wound =
        |p: &geo_types::Polygon| !p.exterior().is_cw() && p.interiors().iter().all(|h| !h.is_ccw());
    match g {
        Geometry::Polygon(p) if !wound(p) => {
            Cow::Owned(Geometry::Polygon(p.orient(Direction::Default)))
        }
        Geometry::MultiPolygon(m) if !m.0.iter().all(wound) => {
            Cow::Owned(Geometry::MultiPolygon(m.orient(Direction::Default)))
        }
        _ => Cow::Borrowed(g),
    }
}

/// The check of a geometry read from the store (rows written by other tools are not
/// trusted): brought to the layer's type, then [`check`]ed, so the index never sees
/// a wrong type or a non-finite or out-of-range coordinate. For points, the common
/// case (millions of sensors at start-up), a few float comparisons.
pub fn check_stored(ty: GeometryType, g: Geometry) -> Result<Geometry, String> {
    if let (GeometryType::Point, Geometry::Point(p)) = (ty, &g) {
        check_coord(p.0)?;
        return Ok(g);
    }
    let g = ty.conform(g)?;
    check(&g)?;
    Ok(g)
}

/// The full check of a geometry that is about to be stored: coordinates, size, and
/// topology (lines of two distinct points; polygons by the OGC rules, see
/// [`check_polygons_sweep`]), with the reason of the first problem found.
pub fn check(g: &Geometry) -> Result<(), String> {
    use geo::CoordsIter;
    let mut vertices = 0usize;
    for (i, c) in g.coords_iter().enumerate() {
        check_coord(c).map_err(|e| format!("vertex {i}: {e}"))?;
        vertices += 1;
    }
    if vertices > MAX_VERTICES {
        return Err(format!(
            "{vertices} vertices, more than the limit of {MAX_VERTICES}"
        ));
    }
    if vertices == 0 {
        return Err("geometry is empty".into());
    }
    let empty_part = match g {
        Geometry::MultiPoint(m) => m.0.is_empty(),
        Geometry::MultiLineString(m) => m.0.iter().any(|l| l.0.is_empty()),
        Geometry::MultiPolygon(m) => m.0.iter().any(|p| p.exterior().0.is_empty()),
        _ => false,
    };
    if empty_part {
        return Err("geometry has an empty part".into());
    }
    match g {
        // geo's `Validation` tests every segment of a ring against every other and
        // accepts rings of zero area; the sweep is O(n log n) and gives every vertex
        // count the same verdict (tests compare the two).
        Geometry::Polygon(p) => check_polygons_sweep(&[p]),
        Geometry::MultiPolygon(m) => check_polygons_sweep(&m.0.iter().collect::<Vec<_>>()),
        _ => g.check_validation().map_err(|e| e.to_string()),
    }
}

/// Converts a parsed GeoJSON geometry, checking what the conversion would otherwise
/// hide, with the path of the member at fault (`geometry.coordinates[0][3]`):
/// - a position is `[lon, lat]` or `[lon, lat, altitude]` (RFC 7946 §3.1.1). The
///   altitude is accepted and dropped (the store and the tiles are 2-D; the stored
///   feature, as every edit's response shows it, has two numbers). A position of one
///   number, or of four or more, is refused: RFC 7946 gives the fourth and later
///   numbers no meaning, and they are more often the sign of a flattened or shifted
///   array (`[x1, y1, x2, y2, x3]`) than of M values, so dropping them would lose data
///   without a word;
/// - polygon rings must be closed with at least four positions (geo-types would close
///   an open ring silently).
pub fn from_geojson(v: &geojson::GeometryValue) -> Result<Geometry, FieldError> {
    use geojson::GeometryValue as G;
    fn coord(p: &geojson::Position, at: &str) -> Result<Coord, FieldError> {
        let s = p.as_slice();
        match s.len() {
            2 | 3 => Ok(Coord { x: s[0], y: s[1] }),
            n => Err(FieldError::new(
                format!("geometry.{at}"),
                format!(
                    "a position has {n} number(s); it needs [lon, lat] or [lon, lat, altitude]"
                ),
            )),
        }
    }
    fn line(ps: &[geojson::Position], at: &str) -> Result<LineString, FieldError> {
        ps.iter()
            .enumerate()
            .map(|(i, p)| coord(p, &format!("{at}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(LineString)
    }
    fn polygon(rings: &[Vec<geojson::Position>], at: &str) -> Result<Polygon, FieldError> {
        let mut out = Vec::with_capacity(rings.len());
        for (r, ring) in rings.iter().enumerate() {
            let here = format!("{at}[{r}]");
            if ring.len() < 4 {
                return Err(FieldError::new(
                    format!("geometry.{here}"),
                    format!("ring has {} positions, needs at least 4", ring.len()),
                ));
            }
            let l = line(ring, &here)?;
            if l.0.first() != l.0.last() {
                return Err(FieldError::new(
                    format!("geometry.{here}"),
                    "ring is not closed (first and last positions differ)",
                ));
            }
            out.push(l);
        }
        let mut it = out.into_iter();
        let exterior = it
            .next()
            .ok_or_else(|| FieldError::new(format!("geometry.{at}"), "polygon has no rings"))?;
        Ok(Polygon::new(exterior, it.collect()))
    }
    Ok(match v {
        G::Point { coordinates } => Point(coord(coordinates, "coordinates")?).into(),
        G::MultiPoint { coordinates } => MultiPoint(
            coordinates
                .iter()
                .enumerate()
                .map(|(i, p)| coord(p, &format!("coordinates[{i}]")).map(Point))
                .collect::<Result<_, _>>()?,
        )
        .into(),
        G::LineString { coordinates } => line(coordinates, "coordinates")?.into(),
        G::MultiLineString { coordinates } => MultiLineString(
            coordinates
                .iter()
                .enumerate()
                .map(|(i, l)| line(l, &format!("coordinates[{i}]")))
                .collect::<Result<_, _>>()?,
        )
        .into(),
        G::Polygon { coordinates } => polygon(coordinates, "coordinates")?.into(),
        G::MultiPolygon { coordinates } => MultiPolygon(
            coordinates
                .iter()
                .enumerate()
                .map(|(i, p)| polygon(p, &format!("coordinates[{i}]")))
                .collect::<Result<_, _>>()?,
        )
        .into(),
        G::GeometryCollection { .. } => {
            return Err(FieldError::new(
                "geometry",
                "GeometryCollection is not supported",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo_types::{coord, line_string, polygon};

    #[test]
    fn single_geometries_are_promoted_to_the_declared_multi_type() {
        let p: Geometry =
            polygon![(x: 0., y: 0.), (x: 1., y: 0.), (x: 1., y: 1.), (x: 0., y: 0.)].into();
        let m = GeometryType::MultiPolygon.conform(p).unwrap();
        assert_eq!(GeometryType::of(&m), Some(GeometryType::MultiPolygon));
        let l: Geometry = line_string![(x: 0., y: 0.), (x: 1., y: 1.)].into();
        let e = GeometryType::Point.conform(l).unwrap_err();
        assert_eq!(e, "expected a Point geometry, found LineString");
    }

    #[test]
    fn stored_geometries_must_conform_and_pass_the_checks() {
        let p = |x, y| Geometry::Point(Point::new(x, y));
        assert_eq!(
            check_stored(GeometryType::Point, p(106.5, 29.5)),
            Ok(p(106.5, 29.5))
        );
        let nan = check_stored(GeometryType::Point, p(f64::NAN, 29.0)).unwrap_err();
        assert!(nan.contains("not finite"), "{nan}");
        let far = check_stored(GeometryType::Point, p(1e300, -1e300)).unwrap_err();
        assert!(far.contains("longitude"), "{far}");
        let line: Geometry = line_string![(x: 106.5, y: 29.5), (x: 106.6, y: 29.6)].into();
        let e = check_stored(GeometryType::Point, line).unwrap_err();
        assert_eq!(e, "expected a Point geometry, found LineString");
        let square: Geometry =
            polygon![(x: 0., y: 0.), (x: 1., y: 0.), (x: 1., y: 1.), (x: 0., y: 0.)].into();
        let m = check_stored(GeometryType::MultiPolygon, square).unwrap();
        assert_eq!(GeometryType::of(&m), Some(GeometryType::MultiPolygon));
        let bowtie: Geometry =
            polygon![(x: 0., y: 0.), (x: 1., y: 1.), (x: 1., y: 0.), (x: 0., y: 1.), (x: 0., y: 0.)].into();
        assert!(check_stored(GeometryType::Polygon, bowtie).is_err());
    }

    #[test]
    fn check_refuses_out_of_range_non_finite_degenerate_and_self_intersecting() {
        let far: Geometry = Point(coord! { x: 190.0, y: 0.0 }).into();
        assert!(check(&far).unwrap_err().contains("longitude 190"));
        let nan: Geometry = Point(coord! { x: f64::NAN, y: 0.0 }).into();
        assert!(check(&nan).unwrap_err().contains("not finite"));
        let one: Geometry = line_string![(x: 1., y: 1.), (x: 1., y: 1.)].into();
        assert!(check(&one).is_err());
        let bowtie: Geometry =
            polygon![(x: 0., y: 0.), (x: 1., y: 1.), (x: 1., y: 0.), (x: 0., y: 1.), (x: 0., y: 0.)].into();
        assert!(check(&bowtie).is_err());
        let ok: Geometry = line_string![(x: 106.5, y: 29.5), (x: 106.6, y: 29.6)].into();
        assert!(check(&ok).is_ok());
    }

    #[test]
    fn large_polygons_are_checked_by_the_sweep_with_the_same_verdicts() {
        // A 20,000-vertex circle is valid; with one vertex pulled across it is not.
        let n = 20_000;
        let ring: Vec<Coord> = (0..=n)
            .map(|i| {
                let a = (i % n) as f64 / n as f64 * std::f64::consts::TAU;
                Coord {
                    x: 106.5 + 0.2 * a.cos(),
                    y: 29.5 + 0.2 * a.sin(),
                }
            })
            .collect();
        let circle: Geometry = Polygon::new(LineString(ring.clone()), vec![]).into();
        let t = std::time::Instant::now();
        assert_eq!(check(&circle), Ok(()));
        assert!(
            t.elapsed().as_secs_f64() < 5.0,
            "the sweep must not be quadratic"
        );
        let mut bent = ring.clone();
        bent[5_000] = Coord {
            x: 106.5 - 0.3,
            y: 29.5,
        };
        let bent: Geometry = Polygon::new(LineString(bent), vec![]).into();
        assert!(check(&bent).unwrap_err().contains("intersects itself"));
        let hole_outside = Polygon::new(
            LineString(ring.clone()),
            vec![LineString(vec![
                Coord { x: 107.0, y: 29.0 },
                Coord { x: 107.1, y: 29.0 },
                Coord { x: 107.1, y: 29.1 },
                Coord { x: 107.0, y: 29.0 },
            ])],
        );
        assert!(
            check_polygons_sweep(&[&hole_outside])
                .unwrap_err()
                .contains("outside")
        );
        let square = polygon![(x: 0., y: 0.), (x: 1., y: 0.), (x: 1., y: 1.), (x: 0., y: 1.), (x: 0., y: 0.)];
        assert_eq!(check_polygons_sweep(&[&square]), Ok(()));
        let bowtie = polygon![(x: 0., y: 0.), (x: 1., y: 1.), (x: 1., y: 0.), (x: 0., y: 1.), (x: 0., y: 0.)];
        assert!(check_polygons_sweep(&[&bowtie]).is_err());
        let inner =
            polygon![(x: 0.2, y: 0.2), (x: 0.4, y: 0.2), (x: 0.4, y: 0.4), (x: 0.2, y: 0.2)];
        assert!(
            check_polygons_sweep(&[&square, &inner])
                .unwrap_err()
                .contains("inside")
        );
    }

    #[test]
    fn open_rings_and_positions_of_the_wrong_length_are_refused_naming_the_member() {
        let parse = |t: &str| from_geojson(&serde_json::from_str(t).unwrap());
        let open =
            parse(r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1]]]}"#).unwrap_err();
        assert_eq!(open.field, "geometry.coordinates[0]");
        assert!(open.reason.contains("not closed"), "{open}");
        let short = parse(r#"{"type":"Point","coordinates":[1]}"#).unwrap_err();
        assert_eq!(short.field, "geometry.coordinates");
        assert!(short.reason.contains("needs [lon, lat]"), "{short}");
        for (t, field) in [
            (
                r#"{"type":"Point","coordinates":[106.5,29.5,300,0]}"#,
                "geometry.coordinates",
            ),
            (
                r#"{"type":"LineString","coordinates":[[106.5,29.5],[106.6,29.6,1,2,3]]}"#,
                "geometry.coordinates[1]",
            ),
            (
                r#"{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,1],[0,0]]],[[[2,2],[3,2],[3,3],[2,3,0,0],[2,2]]]]}"#,
                "geometry.coordinates[1][0][3]",
            ),
        ] {
            let e = parse(t).unwrap_err();
            assert_eq!(e.field, field, "{t}");
            assert!(e.reason.contains("number(s)"), "{e}");
        }
        // The altitude is accepted and dropped.
        let z = parse(r#"{"type":"Point","coordinates":[106.5,29.5,300]}"#).unwrap();
        assert_eq!(z, Geometry::Point(Point::new(106.5, 29.5)));
    }
}
