//! `/collections/{layer}/queryables`: the layer's filterable properties as a JSON
//! Schema (OGC API – Features Part 3, §6.2, JSON Schema 2020-12).
//!
//! GDAL 3.6's OAPIF driver reads an earlier draft's shape instead: a top-level
//! `queryables` array whose members name a property in `id`. The document carries
//! both: JSON Schema ignores keywords it does not know, so the array changes nothing
//! for a validator or for OWSLib, and GDAL finds the names where it looks. (GDAL also
//! needs the collection's `queryables` link and `filter-lang` in the OpenAPI document:
//! see DEPENDENCIES.md, trap 4.)

use serde_json::{Map, Value, json};

use super::parse::GEOMETRY_NAMES;
use crate::model::layer::PropertyDef;
use crate::model::{GeometryType, LayerDef, PropertyType};

/// The queryables document of `layer`; `base_url` is the service's absolute root
/// without a trailing slash (`https://host/riskmap`).
pub fn queryables(layer: &LayerDef, base_url: &str) -> Value {
    let base = base_url.trim_end_matches('/');
    let mut props = Map::new();
    let mut draft = Vec::new();
    props.insert(
        layer.id_property.clone(),
        json!({"title": "Feature id", "type": "string", "x-ogc-role": "id"}),
    );
    draft.push(json!({"id": layer.id_property, "queryable": layer.id_property, "title": "Feature id", "type": "string"}));
    for p in &layer.properties {
        let mut s = Map::new();
        s.insert(
            "title".into(),
            p.title.clone().unwrap_or_else(|| p.name.clone()).into(),
        );
        s.extend(property_schema(p));
        let ty = s["type"].as_str().unwrap_or("string").to_string();
        let format = s.get("format").and_then(Value::as_str).map(str::to_string);
        draft.push(json!({
            "id": p.name,
            "queryable": p.name,
            "title": s["title"],
            "type": format.unwrap_or(ty),
        }));
        props.insert(p.name.clone(), Value::Object(s));
    }
    let geometry = GEOMETRY_NAMES[0];
    props.insert(
        geometry.into(),
        json!({
            "title": "Geometry",
            "format": geometry_format(layer.geometry),
            "x-ogc-role": "primary-geometry",
        }),
    );
    draft.push(
        json!({"id": geometry, "queryable": geometry, "title": "Geometry", "type": "geometry"}),
    );
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("{base}/collections/{}/queryables", layer.name),
        "type": "object",
        "title": layer.title,
        "properties": props,
        "additionalProperties": false,
        "queryables": draft,
    })
}

/// A declared property's value as JSON Schema: `type`, `format` for dates, `enum`,
/// `minimum`/`maximum`, `maxLength`. Also the schema of its `property=value` parameter
/// in the OpenAPI document.
pub fn property_schema(p: &PropertyDef) -> Map<String, Value> {
    let mut s = Map::new();
    let (ty, format) = match p.ty {
        PropertyType::String => ("string", None),
        PropertyType::Integer => ("integer", None),
        PropertyType::Float => ("number", None),
        PropertyType::Boolean => ("boolean", None),
        PropertyType::Date => ("string", Some("date")),
        PropertyType::DateTime => ("string", Some("date-time")),
    };
    s.insert("type".into(), ty.into());
    if let Some(f) = format {
        s.insert("format".into(), f.into());
    }
    if let Some(values) = &p.values {
        s.insert("enum".into(), values.clone().into());
    }
    for (key, bound) in [("minimum", p.min), ("maximum", p.max)] {
        if let Some(n) = bound.and_then(|b| number(b, p.ty)) {
            s.insert(key.into(), n);
        }
    }
    if let Some(n) = p.max_length {
        s.insert("maxLength".into(), n.into());
    }
    s
}

/// A bound as JSON: an integer for integer properties when it is one.
fn number(b: f64, ty: PropertyType) -> Option<Value> {
    if ty == PropertyType::Integer && b.fract() == 0.0 && b.abs() < 9.0e15 {
        Some((b as i64).into())
    } else {
        serde_json::Number::from_f64(b).map(Value::Number)
    }
}

/// Part 3's geometry formats (`geometry-point`, ...).
fn geometry_format(g: GeometryType) -> &'static str {
    match g {
        GeometryType::Point => "geometry-point",
        GeometryType::LineString => "geometry-linestring",
        GeometryType::Polygon => "geometry-polygon",
        GeometryType::MultiPoint => "geometry-multipoint",
        GeometryType::MultiLineString => "geometry-multilinestring",
        GeometryType::MultiPolygon => "geometry-multipolygon",
    }
}
