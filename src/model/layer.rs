//! A layer's definition after validation: what `config` builds from `layers/NAME.toml`
//! and every other module reads.

use super::GeometryType;
use super::value::{PropertyType, Value};

/// What a layer holds, which decides how the rest of riskmap treats it
/// (warnings attach to risk points and pipelines; sensors report readings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    RiskPoint,
    Pipeline,
    Sensor,
    Reference,
    /// The server's own layer of active warnings (read-only, never in a layer file).
    Warning,
}

impl LayerKind {
    pub const ALL: [LayerKind; 4] = [
        LayerKind::RiskPoint,
        LayerKind::Pipeline,
        LayerKind::Sensor,
        LayerKind::Reference,
    ];

    pub fn config_name(self) -> &'static str {
        match self {
            LayerKind::RiskPoint => "risk_point",
            LayerKind::Pipeline => "pipeline",
            LayerKind::Sensor => "sensor",
            LayerKind::Reference => "reference",
            LayerKind::Warning => "warning",
        }
    }

    /// The kind a layer file names (`warning` is the server's own: not one of them).
    pub fn from_config_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.config_name() == name)
    }

    /// Whether features of this kind are written by clients (edits, imports).
    pub fn is_stored(self) -> bool {
        self != LayerKind::Warning
    }
}

/// What happens to a property a feature carries but the layer does not declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownProperties {
    /// The feature is refused, naming the property (the default: a typo in an edit
    /// must not vanish silently).
    Reject,
    /// The property is dropped (for reference layers fed from third-party files).
    Drop,
}

/// A declared property with its constraints.
#[derive(Clone, Debug, PartialEq)]
pub struct PropertyDef {
    pub name: String,
    pub ty: PropertyType,
    pub title: Option<String>,
    pub required: bool,
    /// Allowed values of a string property.
    pub values: Option<Vec<String>>,
    /// Inclusive numeric bounds.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Longest text in characters (Unicode scalar values).
    pub max_length: Option<usize>,
    /// What a value of this property names, which must exist (`references = ...`).
    pub references: Option<Reference>,
}

/// What a property's value names: a feature of another layer (by its id) or an entry
/// of the warning catalogue. Imports and edits refuse a value naming nothing; deleting
/// a feature that others name is refused; `/health` counts what still dangles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// The id of a feature of this layer (`references = "risk_points"`).
    Layer(String),
    /// A plan template (`references = "plan-templates"`).
    PlanTemplate,
    /// A sensor type (`references = "sensor-types"`).
    SensorType,
}

impl Reference {
    pub fn parse(s: &str) -> Reference {
        match s {
            "plan-templates" => Reference::PlanTemplate,
            "sensor-types" => Reference::SensorType,
            layer => Reference::Layer(layer.to_string()),
        }
    }

    /// As written in a layer file.
    pub fn config_name(&self) -> &str {
        match self {
            Reference::Layer(l) => l,
            Reference::PlanTemplate => "plan-templates",
            Reference::SensorType => "sensor-types",
        }
    }

    /// The problem of a value `shown` naming nothing; `none_exist` when nothing it
    /// could name exists (the catalogue not loaded yet, an empty layer).
    pub fn missing(&self, shown: &str, none_exist: bool) -> String {
        let (noun, how) = match self {
            Reference::Layer(l) => (
                format!("a feature of {l}"),
                format!("import or create it in {l} first"),
            ),
            Reference::PlanTemplate if none_exist => (
                "a plan template".into(),
                "no plan template is loaded: load them first (riskmap import --plans, or PUT /plan-templates/{id})".into(),
            ),
            Reference::PlanTemplate => (
                "a plan template".into(),
                "GET /plan-templates lists those loaded".into(),
            ),
            Reference::SensorType if none_exist => (
                "a sensor type".into(),
                "no sensor type is loaded: load them first (riskmap import --sensor-types, or PUT /sensor-types)".into(),
            ),
            Reference::SensorType => (
                "a sensor type".into(),
                "GET /sensor-types lists those loaded".into(),
            ),
        };
        format!("names {shown:?}, which is not {noun}: {how}")
    }
}

/// How a layer is drawn in vector tiles (`[tiles]` in the layer file). Distances are in
/// tile units: a tile is 4096 units wide (MVT extent), drawn 512 px wide by web maps.
#[derive(Clone, Debug, PartialEq)]
pub struct TileSettings {
    /// Margin around the tile whose features are included too, so symbols and lines
    /// crossing the edge are drawn whole.
    pub buffer: u32,
    /// Point layers: above this many points in a tile, points are aggregated into
    /// clusters (each from the points inside one 64-unit cell of that tile).
    pub max_points: u32,
    /// Point layers: width of a cluster cell, 64, 128, 256 or 512 units (8 to 64 px):
    /// a clustered tile holds at most (4096 / cell)² clusters.
    pub cluster_cell: u32,
    /// Point layers: the property whose allowed values rank severity, most severe
    /// first; clusters carry the most severe value among their points.
    pub cluster_rank: Option<usize>,
    /// Line and polygon layers: a numeric property; when a tile exceeds `max_bytes`,
    /// the features with the largest values are kept.
    pub importance: Option<usize>,
    /// Most bytes this layer may add to one tile (before compression).
    pub max_bytes: u32,
    /// Douglas–Peucker tolerance for lines and polygons.
    pub simplify: f64,
}

impl Default for TileSettings {
    fn default() -> Self {
        TileSettings {
            buffer: 128,
            max_points: 1000,
            cluster_cell: 128,
            cluster_rank: None,
            importance: None,
            max_bytes: 300_000,
            simplify: 4.0,
        }
    }
}

/// A validated layer definition.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerDef {
    /// Also the table name in the store and the URL segment: `[a-z][a-z0-9_]*`.
    pub name: String,
    pub title: String,
    pub description: String,
    pub kind: LayerKind,
    pub geometry: GeometryType,
    /// The property whose value is the feature id (a string, unique in the layer).
    pub id_property: String,
    /// Declared properties, in column order; the id property is not among them.
    pub properties: Vec<PropertyDef>,
    pub minzoom: u8,
    pub maxzoom: u8,
    pub unknown_properties: UnknownProperties,
    pub tiles: TileSettings,
    /// Most vertices one geometry of this layer may have (`max_vertices` in the layer
    /// file; at most, and by default, [`crate::model::geometry::MAX_VERTICES`]).
    pub max_vertices: usize,
    /// Created from an uploaded file (`POST /collections`), so `DELETE
    /// /collections/{name}` may remove it; layers written by hand may not be.
    pub uploaded: bool,
}

/// Longest feature id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

impl LayerDef {
    /// Refuses a geometry with more vertices than the layer accepts: counted before any
    /// other check, so an oversized geometry costs one pass.
    pub fn check_vertices(&self, g: &geo_types::Geometry) -> Result<(), String> {
        use geo::CoordsIter;
        let n = g.coords_count();
        if n > self.max_vertices {
            Err(format!(
                "{n} vertices, more than the {} that layer {} accepts in one geometry",
                self.max_vertices, self.name
            ))
        } else {
            Ok(())
        }
    }

    /// The position and definition of a declared property.
    pub fn property(&self, name: &str) -> Option<(usize, &PropertyDef)> {
        self.properties
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == name)
    }
}

/// Checks a feature id. An id is the last segment of its URL
/// (`/collections/{layer}/items/{id}`), so it must come back unchanged through any
/// client, proxy and server that percent-encodes it; it is refused when it is:
/// - empty, or longer than [`MAX_ID_BYTES`];
/// - `.` or `..`: dot segments, which every URL parser removes (RFC 3986 §5.2.4, and
///   the WHATWG URL standard even when written `%2E`), so no browser or curl could
///   reach the feature;
/// - holding `/` or `\`: `%2F` is refused (Apache's default) or decoded into a path
///   separator by common proxies, and browsers read a `\` as `/`;
/// - holding a control character, or starting or ending with whitespace (lost by
///   copy and paste, trimmed by many tools).
///
/// Anything else is fine (`?`, `#`, `%`, spaces inside, any script): it round-trips
/// percent-encoded, as the `self` links and `Location` give it.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("id is empty".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!(
            "id is {} bytes long, the limit is {MAX_ID_BYTES}",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("id contains a control character".into());
    }
    if id.trim() != id {
        return Err(format!("id {id:?} has leading or trailing whitespace"));
    }
    if id == "." || id == ".." {
        return Err(format!(
            "id {id:?} is a dot segment, which URL parsers remove: the feature could not be reached at /collections/{{layer}}/items/{{id}}"
        ));
    }
    if let Some(c) = id.chars().find(|c| matches!(c, '/' | '\\')) {
        return Err(format!(
            "id {id:?} contains {c:?}, which proxies and browsers turn into a path separator: the feature could not be reached at /collections/{{layer}}/items/{{id}}"
        ));
    }
    Ok(())
}

impl PropertyDef {
    /// Validates a JSON value (absent counts as null) against this definition.
    pub fn value_from_json(&self, v: Option<&serde_json::Value>) -> Result<Value, String> {
        use serde_json::Value as J;
        let value = match (self.ty, v) {
            (_, None | Some(J::Null)) => Value::Null,
            (
                PropertyType::String | PropertyType::Date | PropertyType::DateTime,
                Some(J::String(s)),
            ) => Value::Text(s.clone()),
            (PropertyType::Integer, Some(J::Number(n))) => match n.as_i64() {
                Some(i) => Value::Int(i),
                // 3.0 is an integer written as a float; 3.5 and 1e30 are not.
                None => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
                        Value::Int(f as i64)
                    }
                    _ => return Err(format!("expected an integer, found {n}")),
                },
            },
            (PropertyType::Float, Some(J::Number(n))) => match n.as_f64() {
                Some(f) if f.is_finite() => Value::Float(f),
                _ => return Err(format!("number {n} is out of range")),
            },
            (PropertyType::Boolean, Some(J::Bool(b))) => Value::Bool(*b),
            (ty, Some(other)) => {
                return Err(format!(
                    "expected {}, found {}",
                    type_phrase(ty),
                    json_kind(other)
                ));
            }
        };
        self.check(value)
    }

    /// Validates a text cell (CSV); the empty cell is null.
    pub fn value_from_text(&self, text: &str) -> Result<Value, String> {
        let t = text.trim();
        let value = if text.is_empty() {
            Value::Null
        } else {
            match self.ty {
                // Text is data: verbatim, spaces included (only an empty cell is null).
                PropertyType::String | PropertyType::Date | PropertyType::DateTime => {
                    Value::Text(text.to_string())
                }
                // A blank number cell is a missing number.
                _ if t.is_empty() => Value::Null,
                // "254.0" is an integer written by a tool that made the column float
                // (pandas does, for columns with blanks), as JSON accepts 254.0.
                PropertyType::Integer => match (t.parse::<i64>(), t.parse::<f64>()) {
                    (Ok(i), _) => Value::Int(i),
                    (_, Ok(f)) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
                        Value::Int(f as i64)
                    }
                    _ => return Err(format!("expected an integer, found {text:?}")),
                },
                PropertyType::Float => match t.parse::<f64>() {
                    Ok(f) if f.is_finite() => Value::Float(f),
                    _ => return Err(format!("expected a finite number, found {text:?}")),
                },
                PropertyType::Boolean => match t.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => Value::Bool(true),
                    "false" | "0" | "no" => Value::Bool(false),
                    _ => return Err(format!("expected true or false, found {text:?}")),
                },
            }
        };
        self.check(value)
    }

    /// Applies the constraints to an already typed value.
    pub fn check(&self, value: Value) -> Result<Value, String> {
        match &value {
            Value::Null if self.required => return Err("is required".into()),
            Value::Null => {}
            Value::Text(s) => {
                if let Some(max) = self.max_length {
                    let n = s.chars().count();
                    if n > max {
                        return Err(format!("text of {n} characters is longer than {max}"));
                    }
                }
                if let Some(allowed) = &self.values {
                    if !allowed.iter().any(|a| a == s) {
                        return Err(not_allowed(s, allowed));
                    }
                }
                match self.ty {
                    PropertyType::Date => check_date(s)?,
                    // GeoPackage stores DATETIME as UTC `YYYY-MM-DDTHH:MM:SS.SSSZ`:
                    // any RFC 3339 timestamp is accepted and stored in that form.
                    PropertyType::DateTime => return Ok(Value::Text(normalise_datetime(s)?)),
                    _ => {}
                }
            }
            Value::Int(i) => self.check_range(*i as f64)?,
            Value::Float(f) => self.check_range(*f)?,
            Value::Bool(_) => {}
        }
        Ok(value)
    }

    fn check_range(&self, x: f64) -> Result<(), String> {
        if let Some(min) = self.min {
            if x < min {
                return Err(format!("{x} is below the minimum {min}"));
            }
        }
        if let Some(max) = self.max {
            if x > max {
                return Err(format!("{x} is above the maximum {max}"));
            }
        }
        Ok(())
    }
}

fn check_date(s: &str) -> Result<(), String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, format)
        .map(|_| ())
        .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD)"))
}

/// An RFC 3339 timestamp in GeoPackage's DATETIME form (UTC, milliseconds, `Z`).
pub fn normalise_datetime(s: &str) -> Result<String, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("{s:?} is not an RFC 3339 timestamp (2024-05-01T08:30:00+08:00)"))?;
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(format)
        .map_err(|e| format!("{s:?}: {e}"))
}

fn type_phrase(ty: PropertyType) -> &'static str {
    match ty {
        PropertyType::String => "a string",
        PropertyType::Integer => "an integer",
        PropertyType::Float => "a number",
        PropertyType::Boolean => "true or false",
        PropertyType::Date => "a date string",
        PropertyType::DateTime => "a timestamp string",
    }
}

/// A short name of a JSON value's kind, for messages.
/// The refusal of a value not among `allowed`: the whole list when it is short, and
/// the closest allowed values (by edit distance, case ignored; or containing it), so a
/// person sees `landslip` is probably `landslide`.
fn not_allowed(s: &str, allowed: &[String]) -> String {
    let lower = s.to_lowercase();
    let mut scored: Vec<(usize, &String)> = allowed
        .iter()
        .map(|a| {
            let al = a.to_lowercase();
            let d = if !lower.is_empty() && (al.contains(&lower) || lower.contains(&al)) {
                0
            } else {
                edit_distance(&lower, &al)
            };
            (d, a)
        })
        .collect();
    scored.sort();
    let limit = (lower.chars().count() / 2).max(2);
    let close: Vec<&str> = scored
        .iter()
        .filter(|(d, _)| *d <= limit)
        .take(3)
        .map(|(_, a)| a.as_str())
        .collect();
    let hint = if close.is_empty() {
        String::new()
    } else {
        format!("; closest: {}", close.join(", "))
    };
    if allowed.len() <= 12 {
        format!("{s:?} is not one of {}{hint}", allowed.join(", "))
    } else {
        format!(
            "{s:?} is not one of the {} allowed values{hint} (all of them: the layer's queryables)",
            allowed.len()
        )
    }
}

/// Levenshtein distance over characters. Written here: a dozen lines, for hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

pub fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_that_a_url_path_cannot_carry_back_are_refused() {
        for ok in [
            "R000001", "a.b", "...", ".a", "a b", "x?y#z%20", "桥梁-7", "a:b@c",
        ] {
            assert_eq!(check_id(ok), Ok(()), "{ok:?}");
        }
        for (bad, why) in [
            ("", "empty"),
            (".", "dot segment"),
            ("..", "dot segment"),
            ("a/b", "'/'"),
            ("/", "'/'"),
            ("a\\b", "'\\\\'"),
            ("a\tb", "control"),
            ("a\u{7f}", "control"),
            (" a", "whitespace"),
            ("a\u{3000}", "whitespace"),
        ] {
            let e = check_id(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(check_id(&"x".repeat(MAX_ID_BYTES)).is_ok());
        assert!(check_id(&"x".repeat(MAX_ID_BYTES + 1)).is_err());
    }

    fn def(ty: PropertyType) -> PropertyDef {
        PropertyDef {
            name: "p".into(),
            ty,
            title: None,
            required: false,
            values: None,
            min: None,
            max: None,
            max_length: None,
            references: None,
        }
    }

    #[test]
    fn integers_accept_integral_floats_only() {
        let d = def(PropertyType::Integer);
        assert_eq!(d.value_from_json(Some(&json!(3.0))), Ok(Value::Int(3)));
        assert!(d.value_from_json(Some(&json!(3.5))).is_err());
        assert!(
            d.value_from_json(Some(&json!("3")))
                .unwrap_err()
                .contains("found a string")
        );
        assert_eq!(d.value_from_text(" 42 "), Ok(Value::Int(42)));
        assert_eq!(d.value_from_text(""), Ok(Value::Null));
        assert_eq!(d.value_from_text("  "), Ok(Value::Null));
        let s = def(PropertyType::String);
        assert_eq!(s.value_from_text(" R 1 "), Ok(Value::Text(" R 1 ".into())));
        assert_eq!(s.value_from_text("  "), Ok(Value::Text("  ".into())));
        assert_eq!(s.value_from_text(""), Ok(Value::Null));
    }

    #[test]
    fn constraints_are_enforced() {
        let mut d = def(PropertyType::String);
        d.values = Some(vec!["I".into(), "II".into()]);
        d.required = true;
        assert!(d.value_from_json(None).unwrap_err().contains("required"));
        assert!(
            d.value_from_json(Some(&json!("V")))
                .unwrap_err()
                .contains("not one of I, II")
        );
        let mut f = def(PropertyType::Float);
        f.min = Some(0.0);
        assert!(f.value_from_text("-1").is_err());
        assert!(f.value_from_text("NaN").is_err());
        assert!(f.value_from_text("inf").is_err());
        assert!(
            def(PropertyType::Date)
                .value_from_json(Some(&json!("2024-02-30")))
                .is_err()
        );
        assert!(
            def(PropertyType::DateTime)
                .value_from_json(Some(&json!("2024-02-03T01:02:03+08:00")))
                .is_ok()
        );
    }
}
