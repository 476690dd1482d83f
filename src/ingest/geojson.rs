//! Streaming GeoJSON: a FeatureCollection (features are handed over one at a time,
//! never all held), a single Feature, or a sequence of them (newline-delimited, or
//! RFC 8142 with record separators).
//!
//! Foreign members (RFC 7946 §6.1) are skipped, including a Feature's member named
//! `features`. Streaming decides what a top-level `features` member is when it
//! comes: a collection's, unless `"type": "Feature"` or a `geometry` came before it.
//! A document whose later `type` contradicts that decision is refused as ambiguous.
//!
//! A member given twice in one object of a feature (`"id"`, a property, a geometry
//! member...) refuses that feature, naming the member: keeping either value would
//! lose the other silently. Errors name the feature, its id when already read, and
//! the path of the field (`geometry.coordinates[0]`), tracked while parsing.

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use super::crs::{ImportCrs, ToWgs84};
use super::{ImportOptions, IngestError, Item};
use crate::model::{Feature, FieldError, LayerDef, feature::id_of};

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

/// Skips a UTF-8 byte-order mark at the start (JSON forbids it, Windows tools write
/// it); says whether there was one.
fn skip_bom(r: &mut impl std::io::BufRead) -> std::io::Result<bool> {
    let head = r.fill_buf()?;
    if head.starts_with(b"\xEF\xBB\xBF") {
        r.consume(3);
        return Ok(true);
    }
    Ok(false)
}

/// Where the parser is, for error messages: the member path inside the current
/// document (from `base`: inside the current feature) and the feature's id once read.
/// Syntax errors and text that is not UTF-8 are both worded from it.
#[derive(Default)]
struct Trail {
    path: Vec<Seg>,
    /// Where the current feature's own members start in `path`.
    base: usize,
    /// The current feature's id, once its `id` (or `properties.<id property>`) is read.
    id: Option<String>,
    /// The first member of the current feature given twice in one object.
    duplicate: Option<String>,
    id_property: String,
}

enum Seg {
    Key(String),
    Index(usize),
}

/// Paths deeper than this are cut short in messages (a 100,000-deep nesting error
/// must not print 128 indices).
const MAX_SHOWN_DEPTH: usize = 10;

impl Trail {
    fn start_feature(&mut self) {
        self.base = self.path.len();
        self.id = None;
        self.duplicate = None;
    }

    /// Notes that the member at the current path was given before in its object.
    fn note_duplicate(&mut self) {
        if self.duplicate.is_none() {
            self.duplicate = Some(self.field());
        }
    }

    /// `geometry.coordinates[0][3]`: the path inside the current feature (or document).
    fn field(&self) -> String {
        let mut out = String::new();
        let segs = &self.path[self.base.min(self.path.len())..];
        for seg in segs.iter().take(MAX_SHOWN_DEPTH) {
            match seg {
                Seg::Key(k) if out.is_empty() => out.push_str(k),
                Seg::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        if segs.len() > MAX_SHOWN_DEPTH {
            out.push_str("...");
        }
        out
    }

    /// True when the object being read is the current feature's `properties`.
    fn in_properties(&self) -> bool {
        self.path.len() == self.base + 1
            && matches!(&self.path[self.base], Seg::Key(k) if k == "properties")
    }

    fn note_id(&mut self, v: &Json) {
        if self.id.is_none() {
            self.id = match v {
                Json::String(s) => Some(s.clone()),
                Json::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
                _ => None,
            };
        }
    }
}

/// The members of a Feature riskmap reads; others (foreign members) are skipped.
const FEATURE_MEMBERS: [&str; 4] = ["type", "id", "geometry", "properties"];

/// What raw mode hands each feature to.
type RawSink<'a> = dyn FnMut(u64, &Json) -> Result<(), IngestError> + 'a;

/// Shared state of one read.
struct Ctx<'a> {
    layer: &'a LayerDef,
    opts: &'a ImportOptions,
    /// Positions to WGS84: the request's CRS, or the file's `crs` member.
    to_wgs84: Option<ToWgs84>,
    /// The CRS the file's `crs` member gave.
    declared: Option<String>,
    /// Raw mode (schema inference): each feature as read, not checked against a layer.
    raw: Option<&'a mut RawSink<'a>>,
    sink: &'a mut dyn FnMut(Item) -> Result<(), IngestError>,
    count: u64,
    /// A sink error (the store failed) is kept here: serde errors cannot carry it.
    failed: Option<IngestError>,
    /// A `crs` member naming a CRS we cannot take.
    bad_crs: Option<String>,
    /// Reading a feature (a syntax error now belongs to feature count + 1).
    in_feature: bool,
    trail: Trail,
}

impl Ctx<'_> {
    fn feature(&mut self, v: Json) -> Result<(), String> {
        self.count += 1;
        if let Some(raw) = self.raw.as_mut() {
            let mut v = v;
            let r = super::source::adapt(&mut v, self.opts, self.to_wgs84.as_ref())
                .map_err(|e| IngestError::Format {
                    path: std::path::PathBuf::from(format!("feature {}", self.count)),
                    message: e.to_string(),
                })
                .and_then(|_| raw(self.count, &v));
            return r.map_err(|e| {
                let msg = e.to_string();
                self.failed = Some(e);
                msg
            });
        }
        let result = match self.trail.duplicate.take() {
            // Policy: a member given twice is refused, never resolved by keeping one
            // of the values (JSON readers disagree on which; data would be lost).
            Some(field) => {
                let ambiguous_id =
                    field == "id" || field == format!("properties.{}", self.layer.id_property);
                let id = if ambiguous_id {
                    None
                } else {
                    id_of(self.layer, &v).ok().flatten()
                };
                Err((
                    id,
                    vec![FieldError::new(
                        field,
                        "duplicate member: given more than once in the same object (refused rather than keeping one of the values)",
                    )],
                ))
            }
            None => {
                let mut v = v;
                super::source::adapt(&mut v, self.opts, self.to_wgs84.as_ref())
                    .map_err(|e| vec![e])
                    .and_then(|_| Feature::from_geojson_all(self.layer, &v))
                    .map_err(|e| {
                        let id = id_of(self.layer, &v).ok().flatten();
                        (id, e)
                    })
            }
        };
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

/// Reads GeoJSON, handing every feature to `sink`; returns the CRS the file's `crs`
/// member declared, when it is not WGS84 (positions were transformed from it).
pub(super) fn read(
    path: &Path,
    layer: &LayerDef,
    opts: &ImportOptions,
    to_wgs84: Option<ToWgs84>,
    reader: &mut dyn Read,
    sink: &mut dyn FnMut(Item) -> Result<(), IngestError>,
) -> Result<Option<String>, IngestError> {
    read_with(path, layer, opts, to_wgs84, reader, sink, None)
}

/// Reads GeoJSON handing each feature over as read (after `map=` and the CRS
/// transform), unchecked: for inferring a new layer's schema.
pub(super) fn read_raw(
    path: &Path,
    opts: &ImportOptions,
    to_wgs84: Option<ToWgs84>,
    reader: &mut dyn Read,
    each: &mut dyn FnMut(u64, &Json) -> Result<(), IngestError>,
) -> Result<Option<String>, IngestError> {
    let layer = crate::config::parse_layer(
        Path::new("raw.toml"),
        "name = \"raw\"\ntitle = \"raw\"\nkind = \"reference\"\ngeometry = \"point\"\nid_property = \"id\"\nunknown_properties = \"drop\"\n",
    )
    .map_err(|e| IngestError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    read_with(
        path,
        &layer,
        opts,
        to_wgs84,
        reader,
        &mut |_| Ok(()),
        Some(each),
    )
}

#[allow(clippy::too_many_arguments)]
fn read_with<'a>(
    path: &Path,
    layer: &'a LayerDef,
    opts: &'a ImportOptions,
    to_wgs84: Option<ToWgs84>,
    reader: &mut dyn Read,
    sink: &'a mut dyn FnMut(Item) -> Result<(), IngestError>,
    raw: Option<&'a mut RawSink<'a>>,
) -> Result<Option<String>, IngestError> {
    let mut ctx = Ctx {
        layer,
        opts,
        to_wgs84,
        declared: None,
        raw,
        sink,
        count: 0,
        failed: None,
        bad_crs: None,
        in_feature: false,
        trail: Trail {
            id_property: layer.id_property.clone(),
            ..Default::default()
        },
    };
    // The buffer outermost: serde_json reads byte by byte through `Read::bytes`, which
    // std makes fast for a `BufReader` only (measured: 13 % of an import's time went to
    // one-byte reads through the separator filter when it wrapped the buffer).
    let mut reader = std::io::BufReader::with_capacity(1 << 16, NoRecordSeparators(reader));
    let bom = skip_bom(&mut reader).map_err(|source| IngestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // A file that fits in memory is parsed from a slice: serde_json reads a reader
    // byte by byte, a slice in place (the city's 136,000 risk points: a third faster).
    let mut head = Vec::new();
    (&mut reader)
        .take(IN_MEMORY_BYTES)
        .read_to_end(&mut head)
        .map_err(|source| IngestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let documents = if (head.len() as u64) < IN_MEMORY_BYTES {
        documents(
            serde_json::Deserializer::from_slice(&head),
            &mut ctx,
            path,
            bom,
        )?
    } else {
        let rest = std::io::Cursor::new(head).chain(reader);
        documents(
            serde_json::Deserializer::from_reader(rest),
            &mut ctx,
            path,
            bom,
        )?
    };
    if documents == 0 {
        return Err(IngestError::Format {
            path: path.to_path_buf(),
            message: "the file holds no JSON".into(),
        });
    }
    Ok(ctx.declared)
}

/// Files up to this size are parsed in memory.
const IN_MEMORY_BYTES: u64 = 128 << 20;

/// Reads every document of `de` (one, or a sequence), feature by feature; returns how
/// many documents there were.
fn documents<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    ctx: &mut Ctx<'_>,
    path: &Path,
    bom: bool,
) -> Result<usize, IngestError> {
    let mut documents = 0;
    loop {
        if de.end().is_ok() {
            break;
        }
        documents += 1;
        ctx.trail.path.clear();
        ctx.trail.start_feature();
        // In a sequence every document is a feature; the first one may be anything.
        ctx.in_feature = documents > 1;
        let r = Top { ctx: &mut *ctx }.deserialize(&mut de);
        if let Some(e) = ctx.failed.take() {
            return Err(e);
        }
        if let Some(crs) = ctx.bad_crs.take() {
            return Err(IngestError::Format {
                path: path.to_path_buf(),
                message: crs,
            });
        }
        if let Err(e) = r {
            return Err(syntax_error(path, ctx, bom, e));
        }
    }
    Ok(documents)
}

/// Turns a serde_json error into a message naming the feature (number, and id when
/// it was read before the error), the field, and the position in the file.
fn syntax_error(path: &Path, ctx: &Ctx<'_>, bom: bool, e: serde_json::Error) -> IngestError {
    let (line, mut column) = (e.line(), e.column());
    // serde_json counts from after the byte-order mark we skipped; the file does not.
    if bom && line == 1 {
        column += 3;
    }
    let mut text = e.to_string();
    // serde_json appends its own (BOM-blind) position: say it once, corrected.
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    if let Some(stripped) = text.strip_suffix(&suffix) {
        text = stripped.to_string();
    }
    let position = if line > 0 {
        format!(" at line {line} column {column}")
    } else {
        String::new()
    };
    let reason = if text.contains("invalid unicode code point")
        || text.contains("invalid escape") && text.contains("unicode")
    {
        format!(
            "text is not valid UTF-8{position} (GeoJSON must be UTF-8; convert with iconv -f GB18030 -t UTF-8)"
        )
    } else {
        format!("{text}{position}")
    };
    let mut place = String::new();
    if ctx.in_feature {
        place.push_str(&format!(" in feature {}", ctx.count + 1));
        if let Some(id) = &ctx.trail.id {
            place.push_str(&format!(" (id {id:?})"));
        }
    }
    let field = ctx.trail.field();
    if !field.is_empty() {
        place.push_str(&format!(", field '{field}'"));
    }
    IngestError::Format {
        path: path.to_path_buf(),
        message: format!("malformed GeoJSON{place}: {reason}"),
    }
}

/// Any JSON value, read while keeping [`Trail`] up to date, so an error anywhere
/// inside can be named. `root`: the value is a feature (its foreign members are
/// skipped, its `id` noted).
struct Tracked<'t> {
    t: &'t mut Trail,
    root: bool,
}

impl<'de> DeserializeSeed<'de> for Tracked<'_> {
    type Value = Json;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tracked<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut out = Vec::new();
        loop {
            // On an error the path is left as it is: it names where the error is.
            self.t.path.push(Seg::Index(out.len()));
            let next = seq.next_element_seed(Tracked {
                t: &mut *self.t,
                root: false,
            })?;
            self.t.path.pop();
            match next {
                Some(v) => out.push(v),
                None => break,
            }
        }
        Ok(Json::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let in_properties = !self.root && self.t.in_properties();
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.t.path.push(Seg::Key(key.clone()));
            if self.root && !FEATURE_MEMBERS.contains(&key.as_str()) {
                map.next_value::<IgnoredAny>()?;
                self.t.path.pop();
                continue;
            }
            let v = map.next_value_seed(Tracked {
                t: &mut *self.t,
                root: false,
            })?;
            if (self.root && key == "id") || (in_properties && key == self.t.id_property) {
                self.t.note_id(&v);
            }
            if out.contains_key(&key) {
                self.t.note_duplicate();
            }
            self.t.path.pop();
            out.insert(key, v);
        }
        Ok(Json::Object(out))
    }
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
        // A `features` member streamed as a FeatureCollection's, or skipped as a
        // Feature's foreign member (RFC 7946 allows them).
        let (mut saw_features, mut skipped_features) = (false, false);
        // Members of a Feature, kept in case the document is one.
        let mut members = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.ctx.trail.path.push(Seg::Key(key.clone()));
            // Streaming must decide when `features` comes: a Feature is one once its
            // type says so, or once it has a geometry (collections have none).
            let feature_like = match ty.as_deref() {
                Some(t) => t == "Feature",
                None => members.contains_key("geometry"),
            };
            match key.as_str() {
                "features" if feature_like => {
                    skipped_features = true;
                    map.next_value::<IgnoredAny>()?;
                }
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
                    let crs = map.next_value_seed(Tracked {
                        t: &mut self.ctx.trail,
                        root: false,
                    })?;
                    if self.ctx.trail.duplicate.take().is_some() {
                        return Err(A::Error::custom("a member is given twice in \"crs\""));
                    }
                    // The request's crs= wins over the file's; a file's own CRS is
                    // taken when it comes before the features (as writers put it).
                    if let Some(name) = crs_name(&crs) {
                        if self.ctx.opts.crs.is_none() && !is_wgs84(&name) {
                            let taken = ImportCrs::parse(&name).and_then(ToWgs84::new);
                            match taken {
                                Ok(t) if self.ctx.count == 0 => {
                                    self.ctx.declared = Some(t.crs().name());
                                    self.ctx.to_wgs84 = Some(t);
                                }
                                Ok(_) => {
                                    self.ctx.bad_crs = Some(format!(
                                        "the file declares CRS {name:?} after its first features; put the crs member first, or pass crs="
                                    ));
                                    return Err(A::Error::custom("crs after features"));
                                }
                                Err(e) => {
                                    self.ctx.bad_crs = Some(format!(
                                        "the file declares CRS {name:?}, which riskmap cannot use ({e}); pass crs= with its EPSG code"
                                    ));
                                    return Err(A::Error::custom("unsupported crs"));
                                }
                            }
                        }
                    }
                }
                "type" | "id" | "geometry" | "properties" => {
                    if key != "type" && !saw_features {
                        // A member only a Feature has: errors in it belong to a feature.
                        self.ctx.in_feature = true;
                    }
                    let v = map.next_value_seed(Tracked {
                        t: &mut self.ctx.trail,
                        root: false,
                    })?;
                    if key == "type" {
                        ty = v.as_str().map(str::to_string);
                        if ty.as_deref() == Some("Feature") && !saw_features {
                            self.ctx.in_feature = true;
                        }
                    } else if key == "id" {
                        self.ctx.trail.note_id(&v);
                    }
                    if members.contains_key(&key) {
                        if key == "type" {
                            return Err(A::Error::custom("duplicate \"type\" member"));
                        }
                        self.ctx.trail.note_duplicate();
                    }
                    members.insert(key, v);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            self.ctx.trail.path.pop();
        }
        const TYPE_FIRST: &str = "this reader streams and decides what \"features\" is when it comes: put \"type\" first";
        match ty.as_deref() {
            Some("FeatureCollection") if skipped_features => Err(A::Error::custom(format!(
                "a FeatureCollection whose \"type\" comes after its \"geometry\" and \"features\" members is ambiguous; {TYPE_FIRST}"
            ))),
            Some("FeatureCollection") => Ok(()),
            Some("Feature") if saw_features => Err(A::Error::custom(format!(
                "a Feature whose \"type\" comes after a \"features\" member (read as a FeatureCollection's) is ambiguous; {TYPE_FIRST}"
            ))),
            Some("Feature") => self
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
        self.ctx.in_feature = true;
        loop {
            self.ctx.trail.start_feature();
            let next = seq.next_element_seed(Tracked {
                t: &mut self.ctx.trail,
                root: true,
            })?;
            match next {
                Some(v) => self.ctx.feature(v).map_err(A::Error::custom)?,
                None => break,
            }
        }
        self.ctx.in_feature = false;
        self.ctx.trail.base = 0;
        self.ctx.trail.id = None;
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

    fn risk_points() -> LayerDef {
        crate::config::parse_layer(
            Path::new("layers/risk_points.toml"),
            include_str!("../../layers/risk_points.toml"),
        )
        .expect("the repository's layer file parses")
    }

    /// Reads `bytes`; returns the feature numbers handed over and the error message.
    fn read_bytes(bytes: &[u8]) -> (Vec<u64>, Option<String>) {
        let layer = risk_points();
        let mut numbers = Vec::new();
        let mut sink = |item: Item| {
            numbers.push(item.number);
            Ok(())
        };
        let r = read(
            Path::new("f.geojson"),
            &layer,
            &ImportOptions::default(),
            None,
            &mut &bytes[..],
            &mut sink,
        );
        (numbers, r.err().map(|e| e.to_string()))
    }

    const POINT: &str = r#"{"type":"Feature","id":"A","geometry":{"type":"Point","coordinates":[106.5,29.5]},"properties":{"name":"n","category":"landslide","level":"I"}}"#;

    /// The 1-based line and column a message gives.
    fn position(msg: &str) -> (usize, usize) {
        let at = msg.rfind(" at line ").expect("a position");
        let mut words = msg[at..].split_whitespace().skip(2);
        let line = words.next().and_then(|w| w.parse().ok()).expect("a line");
        let column = words
            .nth(1)
            .map(|w| w.trim_matches(|c: char| !c.is_ascii_digit()))
            .and_then(|w| w.parse().ok())
            .expect("a column");
        (line, column)
    }

    #[test]
    fn non_utf8_text_is_named_by_field_and_position_with_or_without_a_bom() {
        let doc = POINT.replace("\"n\"", "\"@@\"");
        let at = doc.find("@@").unwrap_or_default();
        let gbk = [
            &doc.as_bytes()[..at],
            &[0xD6, 0xD8],
            &doc.as_bytes()[at + 2..],
        ]
        .concat();
        for bom in [false, true] {
            let bytes = if bom {
                [&b"\xEF\xBB\xBF"[..], &gbk].concat()
            } else {
                gbk.clone()
            };
            let (_, err) = read_bytes(&bytes);
            let err = err.expect("refused");
            assert!(
                err.contains(
                    "feature 1 (id \"A\"), field 'properties.name': text is not valid UTF-8"
                ),
                "bom {bom}: {err}"
            );
            // The column is the file's: it points into the bad string, BOM or not.
            let (line, column) = position(&err);
            let start = at + 1 + if bom { 3 } else { 0 };
            assert_eq!(line, 1);
            assert!(
                (start..=start + 3).contains(&column),
                "bom {bom}: column {column}, the string starts at {start}: {err}"
            );
        }
    }

    #[test]
    fn syntax_errors_name_feature_id_and_field() {
        let bad = POINT.replace("106.5", "NaN");
        let (_, err) = read_bytes(bad.as_bytes());
        let err = err.expect("refused");
        assert!(
            err.contains("malformed GeoJSON in feature 1 (id \"A\"), field 'geometry.coordinates[0]': expected value at line 1"),
            "{err}"
        );
        // The id is named only when it was read before the error.
        let late_id = r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[106.5,Infinity]},"id":"A"}"#;
        let (_, err) = read_bytes(late_id.as_bytes());
        let err = err.expect("refused");
        assert!(
            err.contains("in feature 1, field 'geometry.coordinates[1]'"),
            "{err}"
        );
        // An id in properties counts too; a collection's features are numbered.
        let in_props = format!(
            r#"{{"type":"FeatureCollection","features":[{POINT},{{"type":"Feature","properties":{{"id":"B","name":"x"}},"geometry":{{"type":"Point","coordinates":[1e400,1]}}}}]}}"#
        );
        let (numbers, err) = read_bytes(in_props.as_bytes());
        let err = err.expect("refused");
        assert_eq!(numbers, [1]);
        assert!(
            err.contains(
                "in feature 2 (id \"B\"), field 'geometry.coordinates[0]': number out of range"
            ),
            "{err}"
        );
        // Outside any feature: the collection's member is named.
        let (_, err) = read_bytes(br#"{"type":"FeatureCollection","features":7}"#);
        let err = err.expect("refused");
        assert!(
            err.contains("malformed GeoJSON, field 'features': invalid type"),
            "{err}"
        );
    }

    #[test]
    fn a_syntax_error_in_the_first_of_newline_delimited_features_has_its_number() {
        let bad = POINT.replace("106.5", "NaN");
        let (_, err) = read_bytes(format!("{bad}\n{POINT}\n").as_bytes());
        let err = err.expect("refused");
        assert!(
            err.contains("in feature 1 (id \"A\"), field 'geometry.coordinates[0]'"),
            "{err}"
        );
        let (numbers, err) = read_bytes(format!("{POINT}\n{bad}\n").as_bytes());
        let err = err.expect("refused");
        assert_eq!(numbers, [1]);
        assert!(
            err.contains("in feature 2 (id \"A\")") && err.contains("at line 2"),
            "{err}"
        );
    }

    /// Reads `bytes`; returns each feature's id or refusal (id, field, reason).
    #[allow(clippy::type_complexity)]
    fn read_results(bytes: &[u8]) -> Vec<Result<String, (Option<String>, String, String)>> {
        let layer = risk_points();
        let mut out = Vec::new();
        let mut sink = |item: Item| {
            out.push(
                item.result
                    .map(|f| f.id)
                    .map_err(|(id, e)| (id, e[0].field.clone(), e[0].reason.clone())),
            );
            Ok(())
        };
        let r = read(
            Path::new("f.geojson"),
            &layer,
            &ImportOptions::default(),
            None,
            &mut &bytes[..],
            &mut sink,
        );
        assert!(r.is_ok(), "{r:?}");
        out
    }

    #[test]
    fn a_member_given_twice_refuses_the_feature_naming_it() {
        let twice = [
            (
                POINT.replace(r#""id":"A""#, r#""id":"A","id":"B""#),
                "id",
                None,
            ),
            (
                POINT.replace(r#""level":"I""#, r#""level":"I","level":"IV""#),
                "properties.level",
                Some("A"),
            ),
            (
                POINT.replace(r#""name":"n""#, r#""id":"A","name":"n","id":"A""#),
                "properties.id",
                None,
            ),
            (
                POINT.replace(
                    r#""type":"Point","#,
                    r#""type":"Point","type":"LineString","#,
                ),
                "geometry.type",
                Some("A"),
            ),
        ];
        for (doc, field, id) in &twice {
            let collection =
                format!(r#"{{"type":"FeatureCollection","features":[{doc},{POINT}]}}"#);
            let newline_delimited = format!("{doc}\n{POINT}\n");
            for bytes in [collection, newline_delimited] {
                let got = read_results(bytes.as_bytes());
                assert_eq!(got.len(), 2, "{bytes}");
                match &got[0] {
                    Err((got_id, got_field, reason)) => {
                        assert_eq!(
                            (got_id.as_deref(), got_field.as_str()),
                            (*id, *field),
                            "{bytes}"
                        );
                        assert!(reason.starts_with("duplicate member"), "{reason}");
                    }
                    Ok(id) => panic!("{bytes}: accepted as {id}"),
                }
                // The refusal is the feature's alone: the next one is read as usual.
                assert_eq!(got[1], Ok("A".to_string()));
            }
        }
        // Foreign members are not read, so they are not checked either.
        let foreign = POINT.replace(r#""id":"A","#, r#""id":"A","x":1,"x":2,"#);
        assert_eq!(read_results(foreign.as_bytes()), [Ok("A".to_string())]);
    }

    #[test]
    fn a_feature_with_a_features_member_is_a_feature() {
        // RFC 7946 allows foreign members; "features" is one when "type" is "Feature".
        let doc = POINT.replace(r#""id":"A","#, r#""id":"A","features":[{"x":1},2],"#);
        let (numbers, err) = read_bytes(doc.as_bytes());
        assert_eq!((numbers, err), (vec![1], None));
        // Also when "features" comes first but the geometry already said "Feature".
        let doc = r#"{"geometry":{"type":"Point","coordinates":[1,2]},"features":[],"type":"Feature","id":"A"}"#;
        let (numbers, err) = read_bytes(doc.as_bytes());
        assert_eq!((numbers, err), (vec![1], None));
        // "features" before any sign of a Feature is streamed as a collection's; a
        // later "type": "Feature" makes the document ambiguous: refused, saying so.
        let doc = format!(r#"{{"features":[{POINT}],"type":"Feature","id":"B"}}"#);
        let (_, err) = read_bytes(doc.as_bytes());
        let err = err.expect("refused");
        assert!(err.contains("put \"type\" first"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_with_a_short_field() {
        let deep = format!(
            r#"{{"type":"FeatureCollection","features":[{{"type":"Feature","geometry":{}{}}}]}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let (_, err) = read_bytes(deep.as_bytes());
        let err = err.expect("refused");
        assert!(err.contains("recursion limit exceeded"), "{err}");
        assert!(
            err.contains("field 'geometry[0][0]") && err.len() < 300,
            "{err}"
        );
    }

    #[test]
    fn crs_names_for_wgs84_are_recognised() {
        assert!(is_wgs84("urn:ogc:def:crs:OGC:1.3:CRS84"));
        assert!(is_wgs84("urn:ogc:def:crs:EPSG::4326"));
        assert!(is_wgs84("EPSG:4490"));
        assert!(!is_wgs84("urn:ogc:def:crs:EPSG::3857"));
        assert!(!is_wgs84("EPSG:43260"));
    }
}
