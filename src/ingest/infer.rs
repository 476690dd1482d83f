//! A new layer's definition inferred from a file (`POST /collections?name=&kind=`):
//! its geometry type, its properties with their types, and the allowed values of text
//! properties that take few. The result is a layer file (TOML) written by riskmap and
//! validated by the same parser as hand-written ones.
//!
//! Rules:
//! - geometry: points, lines or polygons, single or multi: a file mixing families is
//!   refused with the counts; one multi part makes the layer multi;
//! - types: `integer` when every value is an integer, `float` when every value is a
//!   number, `boolean`, else `string` (dates stay text: files disagree on their forms);
//!   nulls say nothing; a property that is null everywhere is text;
//! - allowed values: a text property with at most [`MAX_ALLOWED_VALUES`] distinct
//!   values, each seen at least twice on average, gets them as its `values`;
//! - no property is required (a later import may leave any out);
//! - property names must be ASCII identifiers (they become columns and filter names):
//!   others (`名称`) are refused naming them and the `map=` that renames them;
//! - the id is the property `id_property=` names (default `id`), present and unique in
//!   every feature with a geometry.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value as Json;

use super::source::FeatureReader;
use super::{ImportOptions, IngestError};
use crate::model::{GeometryType, LayerKind};

/// Most distinct values a text property may have to get them as its allowed values.
pub const MAX_ALLOWED_VALUES: usize = 12;

#[derive(Default)]
struct Column {
    ints: u64,
    floats: u64,
    bools: u64,
    texts: u64,
    distinct: BTreeSet<String>,
    too_many: bool,
}

/// Infers the layer file of a new layer `name` of `kind` from `reader`'s features.
pub fn infer(
    name: &str,
    title: &str,
    kind: LayerKind,
    id_property: &str,
    reader: &dyn FeatureReader,
    opts: &ImportOptions,
) -> Result<String, String> {
    let mut order: Vec<String> = Vec::new();
    let mut columns: HashMap<String, Column> = HashMap::new();
    let mut types: HashMap<GeometryType, u64> = HashMap::new();
    let mut ids: HashSet<String> = HashSet::new();
    let mut features = 0u64;
    let mut problem: Option<String> = None;
    let r = reader.read_raw(opts, &mut |n, f| {
        features += 1;
        let geometry_type = f
            .get("geometry")
            .and_then(|g| g.get("type"))
            .and_then(Json::as_str)
            .and_then(|t| match t {
                "Point" => Some(GeometryType::Point),
                "MultiPoint" => Some(GeometryType::MultiPoint),
                "LineString" => Some(GeometryType::LineString),
                "MultiLineString" => Some(GeometryType::MultiLineString),
                "Polygon" => Some(GeometryType::Polygon),
                "MultiPolygon" => Some(GeometryType::MultiPolygon),
                _ => None,
            });
        if let Some(t) = geometry_type {
            *types.entry(t).or_default() += 1;
        }
        let empty = serde_json::Map::new();
        let props = f.get("properties").and_then(Json::as_object).unwrap_or(&empty);
        if geometry_type.is_some() && problem.is_none() {
            let id = match props.get(id_property).or_else(|| f.get("id")) {
                Some(Json::String(s)) => Some(s.clone()),
                Some(Json::Number(x)) if x.is_i64() || x.is_u64() => Some(x.to_string()),
                _ => None,
            };
            match id {
                None => {
                    problem = Some(format!(
                        "feature {n} has no {id_property:?}: a new layer needs a property with a unique id in every feature (name it with id_property=, or map one onto it with map=)"
                    ))
                }
                Some(id) if !ids.insert(id.clone()) => {
                    problem = Some(format!(
                        "feature {n}: id {id:?} is given twice: the {id_property:?} property must be unique (name another with id_property=)"
                    ))
                }
                Some(_) => {}
            }
        }
        for (k, v) in props {
            if k == id_property {
                continue;
            }
            let c = columns.entry(k.clone()).or_insert_with(|| {
                order.push(k.clone());
                Column::default()
            });
            match v {
                Json::Null => {}
                Json::Bool(_) => c.bools += 1,
                Json::Number(x) if x.is_i64() || x.is_u64() => c.ints += 1,
                Json::Number(_) => c.floats += 1,
                Json::String(s) => {
                    c.texts += 1;
                    if !c.too_many {
                        c.distinct.insert(s.clone());
                        if c.distinct.len() > MAX_ALLOWED_VALUES {
                            c.too_many = true;
                            c.distinct.clear();
                        }
                    }
                }
                _ => c.texts += 1,
            }
        }
        Ok(())
    });
    r.map_err(|e: IngestError| e.to_string())?;
    if let Some(p) = problem {
        return Err(p);
    }
    let family = |t: GeometryType| match t {
        GeometryType::Point | GeometryType::MultiPoint => 0,
        GeometryType::LineString | GeometryType::MultiLineString => 1,
        GeometryType::Polygon | GeometryType::MultiPolygon => 2,
    };
    let families: BTreeSet<u8> = types.keys().map(|t| family(*t)).collect();
    let geometry = match families.len() {
        0 => {
            return Err(format!(
                "none of the file's {features} features has a geometry"
            ));
        }
        1 => {
            let multi = types.keys().any(|t| {
                matches!(
                    t,
                    GeometryType::MultiPoint
                        | GeometryType::MultiLineString
                        | GeometryType::MultiPolygon
                )
            });
            let t = *types.keys().next().ok_or("no geometry")?;
            match (family(t), multi) {
                (0, false) => GeometryType::Point,
                (0, true) => GeometryType::MultiPoint,
                (1, false) => GeometryType::LineString,
                (1, true) => GeometryType::MultiLineString,
                (_, false) => GeometryType::Polygon,
                (_, true) => GeometryType::MultiPolygon,
            }
        }
        _ => {
            let mut counts: Vec<String> = types
                .iter()
                .map(|(t, n)| format!("{n} {}", t.geojson_name()))
                .collect();
            counts.sort();
            return Err(format!(
                "the file mixes geometry families ({}): a layer holds points, lines or polygons; split the file",
                counts.join(", ")
            ));
        }
    };
    let bad: Vec<&String> = order.iter().filter(|n| !is_identifier(n)).collect();
    if !bad.is_empty() {
        let suggestion: Vec<String> = bad
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n}:field_{}", i + 1))
            .collect();
        return Err(format!(
            "property names must be ASCII letters, digits and _ (they become columns and filter names): {} are not; rename them with map=, e.g. map={}",
            bad.iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            suggestion.join(",")
        ));
    }
    let mut toml = String::new();
    toml.push_str(
        "# Created by riskmap from an uploaded file (POST /collections); the schema was\n",
    );
    toml.push_str("# inferred from its features. DELETE /collections/NAME removes the layer.\n");
    toml.push_str(&format!("name = {}\n", quote(name)));
    toml.push_str(&format!("title = {}\n", quote(title)));
    toml.push_str(&format!("kind = {}\n", quote(kind.config_name())));
    toml.push_str(&format!("geometry = {}\n", quote(geometry.config_name())));
    toml.push_str(&format!("id_property = {}\n", quote(id_property)));
    toml.push_str("unknown_properties = \"drop\"\nuploaded = true\n");
    for name in &order {
        let c = &columns[name];
        let ty = if c.texts > 0 {
            "string"
        } else if c.floats > 0 && c.bools == 0 {
            "float"
        } else if c.ints > 0 && c.bools == 0 {
            "integer"
        } else if c.bools > 0 && c.ints + c.floats == 0 {
            "boolean"
        } else {
            "string"
        };
        toml.push_str(&format!(
            "\n[[properties]]\nname = {}\ntype = \"{ty}\"\n",
            quote(name)
        ));
        let only_text = c.ints + c.floats + c.bools == 0;
        if ty == "string"
            && only_text
            && !c.too_many
            && !c.distinct.is_empty()
            && c.texts >= 2 * c.distinct.len() as u64
        {
            let values: Vec<String> = c.distinct.iter().map(|v| quote(v)).collect();
            toml.push_str(&format!("values = [{}]\n", values.join(", ")));
        }
    }
    Ok(toml)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !["fid", "geom"].contains(&s.to_ascii_lowercase().as_str())
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
