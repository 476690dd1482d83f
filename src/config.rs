//! Configuration: `layers/NAME.toml` files, parsed raw and validated once, before
//! anything else runs. Runtime code sees only [`Config`] and [`LayerDef`]s.
//!
//! Unknown keys are errors; every error names the file, the key and the value.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::model::geometry::MAX_VERTICES;
use crate::model::{
    GeometryType, LayerDef, LayerKind, PropertyDef, PropertyType, Reference, TileSettings,
    UnknownProperties,
};

/// The layer files built into the binary, for running outside a checkout.
pub const BUILTIN_LAYERS: [(&str, &str); 5] = [
    ("boundary.toml", include_str!("../layers/boundary.toml")),
    ("pipelines.toml", include_str!("../layers/pipelines.toml")),
    (
        "risk_points.toml",
        include_str!("../layers/risk_points.toml"),
    ),
    ("rivers.toml", include_str!("../layers/rivers.toml")),
    ("sensors.toml", include_str!("../layers/sensors.toml")),
];

/// Highest zoom a layer may declare (tile maths uses 32-bit x/y up to z30).
pub const MAX_ZOOM: u8 = 30;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read layer directory {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key '{key}' = {value}: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
    },
    #[error("no layer files (*.toml) in {dir}")]
    NoLayers { dir: PathBuf },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub layers_dir: PathBuf,
    /// Sorted by name.
    pub layers: Vec<Arc<LayerDef>>,
}

impl Config {
    /// Reads and validates every `*.toml` in `layers_dir`.
    pub fn load(layers_dir: &Path) -> Result<Config, ConfigError> {
        let entries = std::fs::read_dir(layers_dir).map_err(|source| ConfigError::ReadDir {
            dir: layers_dir.to_path_buf(),
            source,
        })?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ConfigError::ReadDir {
                dir: layers_dir.to_path_buf(),
                source,
            })?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                paths.push(path);
            }
        }
        paths.sort();
        if paths.is_empty() {
            return Err(ConfigError::NoLayers {
                dir: layers_dir.to_path_buf(),
            });
        }
        let mut layers = Vec::with_capacity(paths.len());
        for path in &paths {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                path: path.clone(),
                source,
            })?;
            layers.push(Arc::new(parse_layer(path, &text)?));
        }
        layers.sort_by(|a, b| a.name.cmp(&b.name));
        for l in &layers {
            for (i, p) in l.properties.iter().enumerate() {
                if let Some(Reference::Layer(target)) = &p.references {
                    if !layers.iter().any(|t| &t.name == target) {
                        return Err(ConfigError::Invalid {
                            path: layers_dir.join(format!("{}.toml", l.name)),
                            key: format!("properties[{i}].references"),
                            value: format!("{target:?}"),
                            reason: "names no layer of this directory".into(),
                        });
                    }
                }
            }
        }
        Ok(Config {
            layers_dir: layers_dir.to_path_buf(),
            layers,
        })
    }

    pub fn layer(&self, name: &str) -> Option<&Arc<LayerDef>> {
        self.layers.iter().find(|l| l.name == name)
    }

    pub fn layer_names(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.name.as_str()).collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    name: String,
    title: String,
    #[serde(default)]
    description: String,
    kind: String,
    geometry: String,
    id_property: String,
    #[serde(default)]
    minzoom: Option<i64>,
    #[serde(default)]
    maxzoom: Option<i64>,
    #[serde(default)]
    unknown_properties: Option<String>,
    #[serde(default)]
    max_vertices: Option<i64>,
    /// Written by riskmap for a layer created from an upload.
    #[serde(default)]
    uploaded: bool,
    #[serde(default)]
    properties: Vec<RawProperty>,
    #[serde(default)]
    tiles: Option<RawTiles>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTiles {
    buffer: Option<i64>,
    max_points: Option<i64>,
    cluster_cell: Option<i64>,
    cluster_rank: Option<String>,
    importance: Option<String>,
    max_bytes: Option<i64>,
    simplify: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProperty {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    values: Option<Vec<String>>,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    max_length: Option<usize>,
    #[serde(default)]
    references: Option<String>,
}

/// No tile may exceed this many bytes before compression, whatever its layers.
pub const MAX_TILE_BYTES: u32 = 500_000;

/// Names a store table may not take: GeoPackage's, SQLite's and our own bookkeeping.
const RESERVED_PREFIXES: [&str; 4] = ["gpkg_", "rtree_", "sqlite_", "riskmap_"];
/// Columns every layer table has already.
const RESERVED_COLUMNS: [&str; 2] = ["fid", "geom"];

/// Parses and validates one layer file. `path` is used for messages and the
/// name check (the file stem must equal `name`).
pub fn parse_layer(path: &Path, text: &str) -> Result<LayerDef, ConfigError> {
    let raw: RawLayer = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let invalid = |key: &str, value: &dyn std::fmt::Debug, reason: &str| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: key.to_string(),
        value: format!("{value:?}"),
        reason: reason.to_string(),
    };

    if !is_layer_name(&raw.name) {
        return Err(invalid(
            "name",
            &raw.name,
            "use lower-case letters, digits and _, starting with a letter (at most 63)",
        ));
    }
    if RESERVED_PREFIXES.iter().any(|p| raw.name.starts_with(p)) {
        return Err(invalid(
            "name",
            &raw.name,
            "names starting with gpkg_, rtree_, sqlite_ or riskmap_ are reserved",
        ));
    }
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if stem != raw.name {
        return Err(invalid(
            "name",
            &raw.name,
            &format!("must equal the file name ({stem})"),
        ));
    }
    if raw.title.trim().is_empty() {
        return Err(invalid("title", &raw.title, "must not be empty"));
    }
    let kind = LayerKind::from_config_name(&raw.kind).ok_or_else(|| {
        invalid(
            "kind",
            &raw.kind,
            "expected risk_point, pipeline, sensor or reference",
        )
    })?;
    let geometry = GeometryType::from_config_name(&raw.geometry).ok_or_else(|| {
        invalid(
            "geometry",
            &raw.geometry,
            "expected point, linestring, polygon, multipoint, multilinestring or multipolygon",
        )
    })?;
    let zoom = |key: &str, v: Option<i64>, default: u8| -> Result<u8, ConfigError> {
        match v {
            None => Ok(default),
            Some(z) if (0..=MAX_ZOOM as i64).contains(&z) => Ok(z as u8),
            Some(z) => Err(invalid(key, &z, &format!("zoom must be 0..={MAX_ZOOM}"))),
        }
    };
    let minzoom = zoom("minzoom", raw.minzoom, 0)?;
    let maxzoom = zoom("maxzoom", raw.maxzoom, 22)?;
    if minzoom > maxzoom {
        return Err(invalid(
            "minzoom",
            &minzoom,
            &format!("must not exceed maxzoom ({maxzoom})"),
        ));
    }
    let max_vertices = match raw.max_vertices {
        None => MAX_VERTICES,
        Some(n) if (2..=MAX_VERTICES as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(invalid(
                "max_vertices",
                &n,
                &format!("must be 2..={MAX_VERTICES}"),
            ));
        }
    };
    let unknown_properties = match raw.unknown_properties.as_deref() {
        None | Some("reject") => UnknownProperties::Reject,
        Some("drop") => UnknownProperties::Drop,
        Some(other) => {
            return Err(invalid(
                "unknown_properties",
                &other,
                "expected reject or drop",
            ));
        }
    };
    if !is_property_name(&raw.id_property) || is_reserved_column(&raw.id_property) {
        return Err(invalid(
            "id_property",
            &raw.id_property,
            "must be a column name (letters, digits, _) other than fid and geom",
        ));
    }

    let mut seen: HashSet<String> = HashSet::from([raw.id_property.to_ascii_lowercase()]);
    let mut properties = Vec::with_capacity(raw.properties.len());
    for (i, p) in raw.properties.into_iter().enumerate() {
        let key = |field: &str| format!("properties[{i}].{field}");
        if !is_property_name(&p.name) || is_reserved_column(&p.name) {
            return Err(invalid(
                &key("name"),
                &p.name,
                "must be a column name (letters, digits, _; at most 63) other than fid and geom",
            ));
        }
        if !seen.insert(p.name.to_ascii_lowercase()) {
            return Err(invalid(
                &key("name"),
                &p.name,
                "is declared twice (names are compared without case; the id property counts)",
            ));
        }
        let ty = PropertyType::from_config_name(&p.ty).ok_or_else(|| {
            invalid(
                &key("type"),
                &p.ty,
                "expected string, integer, float, boolean, date or datetime",
            )
        })?;
        let numeric = matches!(ty, PropertyType::Integer | PropertyType::Float);
        if p.values.is_some() && ty != PropertyType::String {
            return Err(invalid(
                &key("values"),
                &p.values,
                "allowed values are for string properties",
            ));
        }
        if let Some(values) = &p.values {
            if values.is_empty() {
                return Err(invalid(
                    &key("values"),
                    values,
                    "must list at least one value",
                ));
            }
        }
        if (p.min.is_some() || p.max.is_some()) && !numeric {
            return Err(invalid(
                &key("min"),
                &p.min,
                "min and max are for integer and float properties",
            ));
        }
        for (k, v) in [("min", p.min), ("max", p.max)] {
            if let Some(v) = v {
                if !v.is_finite() {
                    return Err(invalid(&key(k), &v, "must be finite"));
                }
            }
        }
        if let (Some(min), Some(max)) = (p.min, p.max) {
            if min > max {
                return Err(invalid(
                    &key("min"),
                    &min,
                    &format!("must not exceed max ({max})"),
                ));
            }
        }
        if p.max_length.is_some() && ty != PropertyType::String {
            return Err(invalid(
                &key("max_length"),
                &p.max_length,
                "max_length is for string properties",
            ));
        }
        let references = p.references.as_deref().map(Reference::parse);
        match (&references, ty) {
            (None, _)
            | (Some(Reference::SensorType), PropertyType::Integer)
            | (Some(Reference::Layer(_) | Reference::PlanTemplate), PropertyType::String) => {}
            (Some(r), _) => {
                return Err(invalid(
                    &key("references"),
                    &r.config_name(),
                    "a feature or plan template is named by a string, a sensor type by an integer",
                ));
            }
        }
        if let Some(Reference::Layer(l)) = &references {
            if !is_layer_name(l) {
                return Err(invalid(
                    &key("references"),
                    l,
                    "names a layer, plan-templates or sensor-types",
                ));
            }
        }
        properties.push(PropertyDef {
            references,
            name: p.name,
            ty,
            title: p.title,
            required: p.required,
            values: p.values,
            min: p.min,
            max: p.max,
            max_length: p.max_length,
        });
    }

    let tiles = tile_settings(
        raw.tiles.unwrap_or_default(),
        geometry,
        &properties,
        &invalid,
    )?;

    Ok(LayerDef {
        tiles,
        name: raw.name,
        title: raw.title,
        description: raw.description,
        kind,
        geometry,
        id_property: raw.id_property,
        properties,
        minzoom,
        maxzoom,
        unknown_properties,
        max_vertices,
        uploaded: raw.uploaded,
    })
}

fn tile_settings(
    raw: RawTiles,
    geometry: GeometryType,
    properties: &[PropertyDef],
    invalid: &dyn Fn(&str, &dyn std::fmt::Debug, &str) -> ConfigError,
) -> Result<TileSettings, ConfigError> {
    let d = TileSettings::default();
    let int =
        |key: &str, v: Option<i64>, min: i64, max: i64, default: u32| -> Result<u32, ConfigError> {
            match v {
                None => Ok(default),
                Some(n) if (min..=max).contains(&n) => Ok(n as u32),
                Some(n) => Err(invalid(key, &n, &format!("must be {min}..={max}"))),
            }
        };
    let buffer = int("tiles.buffer", raw.buffer, 0, 2048, d.buffer)?;
    let max_points = int("tiles.max_points", raw.max_points, 1, 100_000, d.max_points)?;
    let max_bytes = int(
        "tiles.max_bytes",
        raw.max_bytes,
        1_000,
        MAX_TILE_BYTES as i64,
        d.max_bytes,
    )?;
    let simplify = match raw.simplify {
        None => d.simplify,
        Some(s) if s.is_finite() && (0.0..=64.0).contains(&s) => s,
        Some(s) => return Err(invalid("tiles.simplify", &s, "must be 0..=64 tile units")),
    };
    let cluster_cell = match raw.cluster_cell {
        None => d.cluster_cell,
        Some(c @ (64 | 128 | 256 | 512)) => c as u32,
        Some(c) => {
            return Err(invalid(
                "tiles.cluster_cell",
                &c,
                "must be 64, 128, 256 or 512 tile units",
            ));
        }
    };
    // Clusters are drawn for point layers (a multipoint is drawn as it is).
    let points = geometry == GeometryType::Point;
    if points {
        if let Some(p) = properties
            .iter()
            .find(|p| p.name == "cluster" || p.name == "count")
        {
            return Err(invalid(
                "properties",
                &p.name,
                "cluster and count are reserved on point layers: tiles use them for clusters",
            ));
        }
    }
    let find = |key: &str, name: &str| {
        properties
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| invalid(key, &name, "is not a declared property of this layer"))
    };
    let cluster_rank = match raw.cluster_rank {
        None => None,
        Some(name) => {
            if !points {
                return Err(invalid(
                    "tiles.cluster_rank",
                    &name,
                    "clusters are for point layers",
                ));
            }
            let i = find("tiles.cluster_rank", &name)?;
            match &properties[i].values {
                Some(v) if v.len() <= crate::index::MAX_RANKS => Some(i),
                Some(v) => {
                    return Err(invalid(
                        "tiles.cluster_rank",
                        &name,
                        &format!(
                            "has {} allowed values; at most {} can be ranked",
                            v.len(),
                            crate::index::MAX_RANKS
                        ),
                    ));
                }
                None => {
                    return Err(invalid(
                        "tiles.cluster_rank",
                        &name,
                        "needs a string property with allowed values (their order is the rank)",
                    ));
                }
            }
        }
    };
    let importance = match raw.importance {
        None => None,
        Some(name) => {
            let i = find("tiles.importance", &name)?;
            if !matches!(
                properties[i].ty,
                PropertyType::Integer | PropertyType::Float
            ) {
                return Err(invalid(
                    "tiles.importance",
                    &name,
                    "needs an integer or float property",
                ));
            }
            Some(i)
        }
    };
    Ok(TileSettings {
        buffer,
        max_points,
        cluster_cell,
        cluster_rank,
        importance,
        max_bytes,
        simplify,
    })
}

fn is_layer_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_property_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_reserved_column(s: &str) -> bool {
    RESERVED_COLUMNS.iter().any(|r| r.eq_ignore_ascii_case(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "wells"
title = "Wells"
kind = "reference"
geometry = "point"
id_property = "id"
[[properties]]
name = "depth_m"
type = "float"
min = 0
"#;

    fn err(text: &str) -> String {
        parse_layer(Path::new("layers/wells.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_good_layer_parses() {
        let l = parse_layer(Path::new("layers/wells.toml"), GOOD).unwrap();
        assert_eq!(l.properties[0].ty, PropertyType::Float);
        assert_eq!(l.maxzoom, 22);
    }

    #[test]
    fn errors_name_file_key_and_value() {
        let e = err(&GOOD.replace("kind = \"reference\"", "kind = \"well\""));
        assert!(
            e.contains("layers/wells.toml") && e.contains("'kind'") && e.contains("\"well\""),
            "{e}"
        );
        let e = err(&format!("{GOOD}colour = 1\n"));
        assert!(e.contains("unknown field"), "{e}");
        let e = err(&GOOD.replace("name = \"depth_m\"", "name = \"geom\""));
        assert!(e.contains("properties[0].name"), "{e}");
        let e = err(&GOOD.replace("name = \"wells\"", "name = \"pumps\""));
        assert!(e.contains("must equal the file name"), "{e}");
        let e = err(&GOOD.replace("min = 0", "min = 5\nmax = 1"));
        assert!(e.contains("must not exceed max"), "{e}");
        let e = err(&format!(
            "{GOOD}[[properties]]\nname = \"DEPTH_M\"\ntype = \"string\"\n"
        ));
        assert!(e.contains("declared twice"), "{e}");
    }

    #[test]
    fn references_are_typed_and_name_a_loaded_layer() {
        let with = |ty: &str, r: &str| {
            format!("{GOOD}[[properties]]\nname = \"r\"\ntype = \"{ty}\"\nreferences = \"{r}\"\n")
        };
        let l = parse_layer(
            Path::new("layers/wells.toml"),
            &with("integer", "sensor-types"),
        )
        .unwrap();
        assert_eq!(l.properties[1].references, Some(Reference::SensorType));
        let l = parse_layer(Path::new("layers/wells.toml"), &with("string", "pumps")).unwrap();
        assert_eq!(
            l.properties[1].references,
            Some(Reference::Layer("pumps".into()))
        );
        let e = err(&with("string", "sensor-types"));
        assert!(e.contains("properties[1].references"), "{e}");
        let e = err(&with("float", "plan-templates"));
        assert!(e.contains("properties[1].references"), "{e}");
        let e = err(&with("string", "Not A Layer"));
        assert!(e.contains("names a layer"), "{e}");
        // A layer directory whose layer names a layer it lacks.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wells.toml"), with("string", "pumps")).unwrap();
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("names no layer") && e.contains("wells.toml"),
            "{e}"
        );
    }
}
