//! CSV with longitude/latitude columns, for point layers (the shape of the synthetic
//! `sensors.csv`: `id,type_id,risk_point_id,pipeline_id,lon,lat`). Header names are
//! matched without case; an empty cell is null. Text must be UTF-8 (a BOM is
//! skipped).
//!
//! Whitespace: values are taken verbatim. The csv crate does not say which cells
//! were quoted, so `  R 1  ` and `"  R 1  "` cannot be told apart, and neither is
//! trimmed: a string cell is stored as written (a cell of spaces is that text, not
//! null). Only header names are trimmed, and a number, boolean or coordinate is
//! parsed ignoring the spaces around it (`" 254 "` is 254: the value is the same).
//! The id is verbatim too, so an id with spaces around it is refused, as in GeoJSON.

use std::io::Read;
use std::path::Path;

use geo_types::{Coord, Point};

use super::crs::ToWgs84;
use super::{ImportOptions, IngestError, Item};
use crate::model::{FieldError, GeometryType, LayerDef, UnknownProperties, Value};

const LON_NAMES: [&str; 4] = ["lon", "lng", "longitude", "x"];
const LAT_NAMES: [&str; 3] = ["lat", "latitude", "y"];

/// What a column feeds.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Id,
    Lon,
    Lat,
    Property(usize),
    Ignored,
}

pub(super) fn read(
    path: &Path,
    layer: &LayerDef,
    opts: &ImportOptions,
    to_wgs84: Option<&ToWgs84>,
    reader: &mut dyn Read,
    sink: &mut dyn FnMut(Item) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let format_err = |message: String| IngestError::Format {
        path: path.to_path_buf(),
        message,
    };
    if !matches!(
        layer.geometry,
        GeometryType::Point | GeometryType::MultiPoint
    ) {
        return Err(format_err(format!(
            "CSV can only feed point layers; layer {} holds {} features (use GeoJSON)",
            layer.name,
            layer.geometry.geojson_name()
        )));
    }
    let (mut rdr, names, lon, lat) = open(path, opts, reader)?;
    let mut targets = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let t = if i == lon {
            Target::Lon
        } else if i == lat {
            Target::Lat
        } else if name.eq_ignore_ascii_case(&layer.id_property) {
            Target::Id
        } else if let Some((p, _)) = layer
            .properties
            .iter()
            .enumerate()
            .find(|(_, p)| p.name.eq_ignore_ascii_case(name))
        {
            Target::Property(p)
        } else if layer.unknown_properties == UnknownProperties::Drop {
            Target::Ignored
        } else {
            return Err(format_err(format!(
                "column {name:?} is not declared by layer {} (declared: {}, {})",
                layer.name,
                layer.id_property,
                layer
                    .properties
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if t != Target::Ignored && targets.contains(&t) {
            return Err(format_err(format!("column {name:?} appears twice")));
        }
        targets.push(t);
    }
    if !targets.contains(&Target::Id) {
        return Err(format_err(format!(
            "no {:?} column (the layer's id property)",
            layer.id_property
        )));
    }

    each_record(path, &mut rdr, |number, line, record| {
        let result = row(layer, &names, &targets, record, to_wgs84);
        sink(Item {
            number,
            line,
            result,
        })
    })
}

/// A CSV reader over `reader` (header names trimmed, values verbatim: see the module
/// comment; rows of any length), and its header: each column's name (after `map=`),
/// and which columns hold the longitude and latitude.
#[allow(clippy::type_complexity)]
fn open<R: Read>(
    path: &Path,
    opts: &ImportOptions,
    reader: R,
) -> Result<(csv::Reader<Lines<R>>, Vec<String>, usize, usize), IngestError> {
    let format_err = |message: String| IngestError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::Headers)
        .has_headers(true)
        .flexible(true)
        .from_reader(Lines::new(reader));
    let headers = rdr
        .byte_headers()
        .map_err(|e| format_err(format!("cannot read the header line: {e}")))?
        .clone();
    let mut names = Vec::with_capacity(headers.len());
    for (i, h) in headers.iter().enumerate() {
        let h = if i == 0 {
            h.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(h)
        } else {
            h
        };
        let name = std::str::from_utf8(h)
            .map_err(|_| format_err(format!("header of column {} is not valid UTF-8", i + 1)))?;
        // map= renames a source column to a layer property.
        let name = name.trim();
        let name = opts
            .map
            .iter()
            .find(|(from, _)| from == name)
            .map_or(name, |(_, to)| to.as_str());
        names.push(name.to_string());
    }
    let find = |wanted: &Option<String>, defaults: &[&str]| -> Option<usize> {
        match wanted {
            Some(w) => names.iter().position(|n| n.eq_ignore_ascii_case(w)),
            None => names
                .iter()
                .position(|n| defaults.iter().any(|d| n.eq_ignore_ascii_case(d))),
        }
    };
    let lon = find(&opts.lon_column, &LON_NAMES).ok_or_else(|| {
        format_err(format!(
            "no longitude column (looked for {}); columns are: {}",
            opts.lon_column
                .as_deref()
                .map_or(LON_NAMES.join(", "), str::to_string),
            names.join(", ")
        ))
    })?;
    let lat = find(&opts.lat_column, &LAT_NAMES).ok_or_else(|| {
        format_err(format!(
            "no latitude column (looked for {}); columns are: {}",
            opts.lat_column
                .as_deref()
                .map_or(LAT_NAMES.join(", "), str::to_string),
            names.join(", ")
        ))
    })?;
    Ok((rdr, names, lon, lat))
}

/// Hands each record to `each` with its 1-based number and line.
fn each_record<R: Read>(
    path: &Path,
    rdr: &mut csv::Reader<Lines<R>>,
    mut each: impl FnMut(u64, Option<u64>, &csv::ByteRecord) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let mut record = csv::ByteRecord::new();
    let mut number = 0u64;
    loop {
        let more = rdr
            .read_byte_record(&mut record)
            .map_err(|e| IngestError::Format {
                path: path.to_path_buf(),
                message: format!("after feature {number}: {e}"),
            })?;
        if !more {
            return Ok(());
        }
        number += 1;
        // The csv crate's line is where it started reading: before blank lines, and
        // before the LF of a CRLF (so a whole CRLF file was off by one).
        let line = record.position().map(|p| rdr.get_ref().line_at(p.byte()));
        each(number, line, &record)?;
    }
}

/// Reads the rows as GeoJSON features, unchecked, for inferring a new layer's schema:
/// a point from the longitude and latitude columns (in WGS84), every other column a
/// property, typed from its text: empty is null, an integer (without leading zeros)
/// or finite decimal number is a number, `true`/`false` a boolean, anything else the
/// text as written.
pub(super) fn read_raw(
    path: &Path,
    opts: &ImportOptions,
    to_wgs84: Option<&ToWgs84>,
    reader: &mut dyn Read,
    each: &mut dyn FnMut(u64, &serde_json::Value) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    use serde_json::{Value as Json, json};
    let format_err = |message: String| IngestError::Format {
        path: path.to_path_buf(),
        message,
    };
    let (mut rdr, names, lon, lat) = open(path, opts, reader)?;
    for (i, n) in names.iter().enumerate() {
        if names[..i].iter().any(|m| m.eq_ignore_ascii_case(n)) {
            return Err(format_err(format!("column {n:?} appears twice")));
        }
    }
    let typed = |text: &str| -> Json {
        let t = text.trim();
        let digits = t.strip_prefix('-').unwrap_or(t);
        if t.is_empty() {
            Json::Null
        } else if t == "true" || t == "false" {
            Json::Bool(t == "true")
        } else if !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !(digits.len() > 1 && digits.starts_with('0'))
        {
            t.parse::<i64>()
                .map_or_else(|_| Json::String(text.into()), |i| json!(i))
        } else if t
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'e' | b'E' | b'+'))
            && !(digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0."))
        {
            match t.parse::<f64>() {
                Ok(f) if f.is_finite() => json!(f),
                _ => Json::String(text.into()),
            }
        } else {
            Json::String(text.into())
        }
    };
    each_record(path, &mut rdr, |number, line, record| {
        let line = line.unwrap_or(number + 1);
        let cell = |i: usize| -> Result<&str, IngestError> {
            std::str::from_utf8(record.get(i).unwrap_or(b""))
                .map_err(|_| format_err(format!("line {line}: column {:?} is not UTF-8", names[i])))
        };
        let coord = |i: usize| -> Result<f64, IngestError> {
            let t = cell(i)?.trim();
            t.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    format_err(format!(
                        "line {line}: column {:?} is {t:?}, not a number",
                        names[i]
                    ))
                })
        };
        let mut c = Coord {
            x: coord(lon)?,
            y: coord(lat)?,
        };
        if let Some(t) = to_wgs84 {
            c = t
                .apply(c)
                .map_err(|e| format_err(format!("line {line}: {e}")))?;
        }
        crate::model::geometry::check_coord(c)
            .map_err(|e| format_err(format!("line {line}: {e}")))?;
        let mut props = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            if i != lon && i != lat {
                props.insert(name.clone(), typed(cell(i)?));
            }
        }
        let feature = json!({
            "type": "Feature",
            "geometry": { "type": "Point", "coordinates": [c.x, c.y] },
            "properties": props,
        });
        each(number, &feature)
    })
}

/// Passes bytes through, noting the runs of line-end bytes (`\r`, `\n`) that the csv
/// reader may skip before a record, so that a record's 1-based line (counting `\n`)
/// can be found from the offset where reading it started. Runs already passed are
/// dropped: memory is bounded by the csv reader's read-ahead.
struct Lines<R> {
    inner: R,
    offset: u64,
    /// (start, end, newlines in it) of each run not yet passed.
    runs: std::cell::RefCell<std::collections::VecDeque<(u64, u64, u64)>>,
    /// Newlines in the runs dropped.
    passed: std::cell::Cell<u64>,
}

impl<R> Lines<R> {
    fn new(inner: R) -> Self {
        Lines {
            inner,
            offset: 0,
            runs: Default::default(),
            passed: Default::default(),
        }
    }

    /// The line of the first byte at or after `offset` that does not end a line.
    /// Offsets must not decrease from one call to the next.
    fn line_at(&self, offset: u64) -> u64 {
        let mut runs = self.runs.borrow_mut();
        // Runs before the offset, and the one it starts in (skipped blank lines),
        // come before the record.
        while let Some(&(s, e, n)) = runs.front() {
            if s > offset {
                break;
            }
            self.passed.set(self.passed.get() + n);
            runs.pop_front();
            if e > offset {
                break;
            }
        }
        1 + self.passed.get()
    }
}

impl<R: Read> Read for Lines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let runs = self.runs.get_mut();
        for (i, b) in buf[..n].iter().enumerate() {
            if matches!(b, b'\r' | b'\n') {
                let at = self.offset + i as u64;
                let nl = (*b == b'\n') as u64;
                match runs.back_mut() {
                    Some(run) if run.1 == at => {
                        run.1 += 1;
                        run.2 += nl;
                    }
                    _ => runs.push_back((at, at + 1, nl)),
                }
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Builds one feature from a row, or says which columns are wrong: every problem of
/// the row, in column order (then the id, then the geometry).
fn row(
    layer: &LayerDef,
    names: &[String],
    targets: &[Target],
    record: &csv::ByteRecord,
    to_wgs84: Option<&ToWgs84>,
) -> Result<crate::model::Feature, (Option<String>, Vec<FieldError>)> {
    // The id first, so every refusal can name it.
    let id_col = targets.iter().position(|t| *t == Target::Id).unwrap_or(0);
    let id = record
        .get(id_col)
        .and_then(|b| std::str::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if record.len() != names.len() {
        return Err((
            id,
            vec![FieldError::new(
                "row",
                format!("{} fields, the header has {}", record.len(), names.len()),
            )],
        ));
    }
    let mut errors: Vec<FieldError> = Vec::new();
    let mut values = vec![Value::Null; layer.properties.len()];
    let (mut x, mut y) = (f64::NAN, f64::NAN);
    let mut coords_ok = true;
    for ((cell, name), target) in record.iter().zip(names).zip(targets) {
        let Ok(text) = std::str::from_utf8(cell) else {
            errors.push(FieldError::new(
                name.as_str(),
                "text is not valid UTF-8 (pass encoding= with the file's encoding, e.g. GBK)",
            ));
            coords_ok &= !matches!(target, Target::Lon | Target::Lat);
            continue;
        };
        match *target {
            Target::Id | Target::Ignored => {}
            Target::Lon | Target::Lat => {
                match text.trim().parse::<f64>().ok().filter(|v| v.is_finite()) {
                    Some(v) if *target == Target::Lon => x = v,
                    Some(v) => y = v,
                    None => {
                        coords_ok = false;
                        errors.push(FieldError::new(
                            name.as_str(),
                            format!("expected a finite number, found {text:?}"),
                        ));
                    }
                }
            }
            Target::Property(p) => {
                let def = &layer.properties[p];
                match def.value_from_text(text) {
                    Ok(v) => values[p] = v,
                    Err(e) => errors.push(FieldError::new(format!("properties.{}", def.name), e)),
                }
            }
        }
    }
    // Required properties whose column is absent from the file.
    for (def, v) in layer.properties.iter().zip(&values) {
        let named = errors
            .iter()
            .any(|e| e.field == format!("properties.{}", def.name));
        if def.required && v.is_null() && !named {
            errors.push(FieldError::new(
                format!("properties.{}", def.name),
                "is required",
            ));
        }
    }
    if id.is_none() {
        errors.push(FieldError::new(
            "id",
            format!("missing: the {:?} cell is empty", layer.id_property),
        ));
    }
    let point = if coords_ok {
        match to_wgs84 {
            Some(t) => match t.apply(Coord { x, y }) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(FieldError::new("geometry", e));
                    None
                }
            },
            None => Some(Coord { x, y }),
        }
    } else {
        None
    };
    match (id, point) {
        (Some(id), Some(c)) if errors.is_empty() => {
            crate::model::Feature::new(layer, id.clone(), Point(c).into(), values)
                .map_err(|e| (Some(id), vec![e]))
        }
        (id, Some(c)) => {
            // The coordinate's own check too, so the report has every problem.
            if let Err(e) = crate::model::geometry::check_coord(c) {
                errors.push(FieldError::new("geometry", e));
            }
            Err((id, errors))
        }
        (id, None) => Err((id, errors)),
    }
}
