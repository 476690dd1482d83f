//! Streaming GeoJSON: a FeatureCollection (features are handed over one at a time,
//! never all held), a single Feature, or a sequence of them (newline-delimited, or
//! RFC 8142 with record separators).

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use super::{IngestError, Item};
use crate::model::{Feature, LayerDef, feature::id_of};

/// Replaces RFC 8142 record separators (0x1E) with spaces. JSON strings cannot hold a
/// raw control character, so the byte only ever appears between records.
struct NoRecordSeparators<R>(R);

impl<R: Read> Read for NoRecordSeparators<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        for b in &mut buf[..n] {
            if *b == 0x1e {
                *b = b' ';
            }
        }
        Ok(n)
    }
}

/// Skips a UTF-8 byte-order mark at the start (JSON forbids it, Windows tools write it).
fn skip_bom(r: &mut impl std::io::BufRead) -> std::io::Result<()> {
    let head = r.fill_buf()?;
    if head.starts_with(b"\xEF\xBB\xBF") {
        r.consume(3);
    }
    Ok(())
}

/// Shared state of one read.
struct Ctx<'a> {
    layer: &'a LayerDef,
    sink: &'a mut dyn FnMut(Item) -> Result<(), IngestError>,
    count: u64,
    /// A sink error (the store failed) is kept here: serde errors cannot carry it.
    failed: Option<IngestError>,
    /// A `crs` member naming a CRS we cannot take.
    bad_crs: Option<String>,
    /// Inside a `features` array (a syntax error there belongs to feature count + 1).
    in_features: bool,
}

impl Ctx<'_> {
    fn feature(&mut self, v: Json) -> Result<(), String> {
        self.count += 1;
        let result = Feature::from_geojson(self.layer, &v).map_err(|e| {
            let id = id_of(self.layer, &v).ok().flatten();
            (id, e)
        });
        let item = Item {
            number: self.count,
            line: None,
            result,
        };
        (self.sink)(item).map_err(|e| {
            let msg = e.to_string();
            self.failed = Some(e);
            msg
        })
    }
}

pub(super) fn read(
    path: &Path,
    layer: &LayerDef,
    reader: &mut dyn Read,
    sink: &mut dyn FnMut(Item) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let mut ctx = Ctx {
        layer,
        sink,
        count: 0,
        failed: None,
        bad_crs: None,
        in_features: false,
    };
    let mut reader = std::io::BufReader::new(reader);
    skip_bom(&mut reader).map_err(|source| IngestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut de = serde_json::Deserializer::from_reader(NoRecordSeparators(reader));
    let mut documents = 0;
    loop {
        if de.end().is_ok() {
            break;
        }
        documents += 1;
        let r = Top { ctx: &mut ctx }.deserialize(&mut de);
        if let Some(e) = ctx.failed.take() {
            return Err(e);
        }
        if let Some(crs) = ctx.bad_crs.take() {
            return Err(IngestError::Format {
                path: path.to_path_buf(),
                message: format!(
                    "the file declares CRS {crs:?}; this import reads WGS84 lon/lat (CRS84, EPSG:4326, or CGCS2000 EPSG:4490). Reproject first, e.g. ogr2ogr -t_srs EPSG:4326"
                ),
            });
        }
        if let Err(e) = r {
            return Err(syntax_error(
                path,
                ctx.count,
                ctx.in_features || documents > 1,
                e,
            ));
        }
    }
    if documents == 0 {
        return Err(IngestError::Format {
            path: path.to_path_buf(),
            message: "the file holds no JSON".into(),
        });
    }
    Ok(())
}

/// Turns a serde_json error into a message naming the feature and, for text that is
/// not UTF-8, the field.
fn syntax_error(
    path: &Path,
    features_before: u64,
    in_feature: bool,
    e: serde_json::Error,
) -> IngestError {
    let (line, column) = (e.line(), e.column());
    let text = e.to_string();
    let message = if text.contains("invalid unicode code point")
        || text.contains("invalid escape") && text.contains("unicode")
    {
        let field = key_before(path, line, column)
            .map(|k| format!(", field '{k}'"))
            .unwrap_or_default();
        format!(
            "feature {}{field}: text is not valid UTF-8 at line {line}, column {column} (GeoJSON must be UTF-8; convert with iconv -f GB18030 -t UTF-8)",
            features_before + 1
        )
    } else if in_feature {
        format!(
            "malformed GeoJSON in feature {}: {text}",
            features_before + 1
        )
    } else {
        format!("malformed GeoJSON: {text}")
    };
    IngestError::Format {
        path: path.to_path_buf(),
        message,
    }
}

/// The JSON key whose value holds position `line`:`column` (1-based), found by
/// scanning back from there for `"key":`. Used only to word an error.
fn key_before(path: &Path, line: usize, column: usize) -> Option<String> {
    use std::io::BufRead;
    // Read only up to the error's line.
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let mut bytes = Vec::new();
    for _ in 0..line {
        if reader.read_until(b'\n', &mut bytes).ok()? == 0 {
            break;
        }
    }
    let mut offset = 0usize;
    for _ in 1..line {
        offset += bytes[offset..].iter().position(|&b| b == b'\n')? + 1;
    }
    let end = (offset + column).min(bytes.len());
    let before = &bytes[..end];
    // Find the last `":` before the error, then the key's opening quote.
    let colon = before.windows(2).rposition(|w| w == b"\":")?;
    let start = before[..colon].iter().rposition(|&b| b == b'"')?;
    String::from_utf8(before[start + 1..colon].to_vec()).ok()
}

/// A top-level JSON document: FeatureCollection or Feature.
struct Top<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
}

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a GeoJSON FeatureCollection or Feature object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let mut ty: Option<String> = None;
        let mut saw_features = false;
        // Members of a Feature, kept in case the document is one.
        let mut members = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "features" => {
                    if saw_features {
                        return Err(A::Error::custom("duplicate \"features\" member"));
                    }
                    saw_features = true;
                    map.next_value_seed(Features {
                        ctx: &mut *self.ctx,
                    })?;
                }
                "crs" => {
                    let crs: Json = map.next_value()?;
                    if let Some(name) = crs_name(&crs) {
                        if !is_wgs84(&name) {
                            self.ctx.bad_crs = Some(name);
                            return Err(A::Error::custom("unsupported crs"));
                        }
                    }
                }
                "type" => {
                    let t: Json = map.next_value()?;
                    ty = t.as_str().map(str::to_string);
                    members.insert(key, t);
                }
                "id" | "geometry" | "properties" => {
                    members.insert(key, map.next_value()?);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match ty.as_deref() {
            Some("FeatureCollection") => Ok(()),
            Some("Feature") if !saw_features => self
                .ctx
                .feature(Json::Object(members))
                .map_err(A::Error::custom),
            Some(other) => Err(A::Error::custom(format!(
                "expected a FeatureCollection or Feature, found type {other:?}"
            ))),
            None => Err(A::Error::custom("the document has no \"type\" member")),
        }
    }
}

/// The `features` array, streamed.
struct Features<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
}

impl<'de> DeserializeSeed<'de> for Features<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Features<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of features")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error;
        self.ctx.in_features = true;
        while let Some(v) = seq.next_element::<Json>()? {
            self.ctx.feature(v).map_err(A::Error::custom)?;
        }
        self.ctx.in_features = false;
        Ok(())
    }
}

/// The name in a legacy GeoJSON `crs` member (`{"type":"name","properties":{"name":..}}`).
fn crs_name(crs: &Json) -> Option<String> {
    if crs.is_null() {
        return None;
    }
    Some(
        crs.pointer("/properties/name")
            .and_then(Json::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| crs.to_string()),
    )
}

/// CRS names meaning WGS84 lon/lat. CGCS2000 (EPSG:4490) differs from WGS84 by
/// centimetres, far below what a risk map shows, and is accepted as is.
fn is_wgs84(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    n.ends_with("CRS84")
        || n.ends_with("EPSG::4326")
        || n == "EPSG:4326"
        || n.ends_with("EPSG::4490")
        || n == "EPSG:4490"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crs_names_for_wgs84_are_recognised() {
        assert!(is_wgs84("urn:ogc:def:crs:OGC:1.3:CRS84"));
        assert!(is_wgs84("urn:ogc:def:crs:EPSG::4326"));
        assert!(is_wgs84("EPSG:4490"));
        assert!(!is_wgs84("urn:ogc:def:crs:EPSG::3857"));
        assert!(!is_wgs84("EPSG:43260"));
    }
}
