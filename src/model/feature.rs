//! Features: an id, a geometry and the layer's declared property values; the one gate
//! (`Feature::from_geojson`) that every feature from GeoJSON passes, and the way back.

use geo_types::Geometry;
use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::geometry;
use super::layer::{LayerDef, UnknownProperties, check_id, json_kind};
use super::value::Value;

/// A validated feature of one layer. `values[i]` belongs to `layer.properties[i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    pub id: String,
    /// WGS84 degrees, lon/lat; conforms to the layer's geometry type and passed
    /// [`geometry::check`].
    pub geometry: Geometry,
    pub values: Vec<Value>,
}

/// A feature as stored: `fid` is the table's integer key (stable for the feature's
/// life, used as the MVT feature id).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredFeature {
    pub fid: i64,
    pub feature: Feature,
}

/// A borrowed feature, as the index takes it: bulk loads hand over rows read from
/// SQLite without copying their text.
#[derive(Clone, Copy, Debug)]
pub struct FeatureRef<'a> {
    pub id: &'a str,
    pub geometry: &'a Geometry,
    /// `values[i]` belongs to `layer.properties[i]`.
    pub values: &'a [super::value::ValueRef<'a>],
}

/// A feature refused, naming the field (`id`, `geometry`, `properties.level`...).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("field '{field}': {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl Feature {
    /// Checks parts built by a reader that typed the values itself (CSV, the demo):
    /// the id, the geometry against the layer's type, and the value count.
    pub fn new(
        layer: &LayerDef,
        id: String,
        geometry: Geometry,
        values: Vec<Value>,
    ) -> Result<Self, FieldError> {
        check_id(&id).map_err(|e| FieldError::new("id", e))?;
        let geometry = layer
            .geometry
            .conform(geometry)
            .map_err(|e| FieldError::new("geometry", e))?;
        layer
            .check_vertices(&geometry)
            .map_err(|e| FieldError::new("geometry", e))?;
        geometry::check(&geometry).map_err(|e| FieldError::new("geometry", e))?;
        if values.len() != layer.properties.len() {
            return Err(FieldError::new(
                "properties",
                format!(
                    "{} values for {} declared properties",
                    values.len(),
                    layer.properties.len()
                ),
            ));
        }
        for (def, v) in layer.properties.iter().zip(&values) {
            def.check(v.clone())
                .map_err(|e| FieldError::new(format!("properties.{}", def.name), e))?;
        }
        Ok(Feature {
            id,
            geometry,
            values,
        })
    }

    /// Validates a GeoJSON Feature object against the layer: the first problem.
    pub fn from_geojson(layer: &LayerDef, v: &Json) -> Result<Self, FieldError> {
        Self::from_geojson_all(layer, v).map_err(|e| {
            e.into_iter()
                .next()
                .unwrap_or_else(|| FieldError::new("feature", "refused"))
        })
    }

    /// Validates a GeoJSON Feature object against the layer, finding every problem in
    /// one pass (the id, the geometry, each property), in that order: never empty when
    /// it is an error.
    pub fn from_geojson_all(layer: &LayerDef, v: &Json) -> Result<Self, Vec<FieldError>> {
        let obj = v.as_object().ok_or_else(|| {
            vec![FieldError::new(
                "type",
                format!("expected a Feature object, found {}", json_kind(v)),
            )]
        })?;
        match obj.get("type") {
            Some(Json::String(t)) if t == "Feature" => {}
            Some(Json::String(t)) => {
                return Err(vec![FieldError::new(
                    "type",
                    format!("expected \"Feature\", found {t:?}"),
                )]);
            }
            _ => {
                return Err(vec![FieldError::new(
                    "type",
                    "missing \"type\": \"Feature\"",
                )]);
            }
        }
        let mut errors = Vec::new();
        let id = match id_of(layer, v) {
            Ok(Some(id)) => match check_id(&id) {
                Ok(()) => Some(id),
                Err(e) => {
                    errors.push(FieldError::new("id", e));
                    None
                }
            },
            Ok(None) => {
                errors.push(FieldError::new(
                    "id",
                    format!(
                        "missing: give the feature an \"id\" or properties.{}",
                        layer.id_property
                    ),
                ));
                None
            }
            Err(e) => {
                errors.push(e);
                None
            }
        };

        let geometry = match obj.get("geometry") {
            None => {
                errors.push(FieldError::new("geometry", "is missing"));
                None
            }
            Some(Json::Null) => {
                errors.push(FieldError::new(
                    "geometry",
                    "is null; every feature needs a geometry",
                ));
                None
            }
            Some(g) => {
                let checked = geojson::GeometryValue::deserialize(g)
                    .map_err(|e| FieldError::new("geometry", e.to_string()))
                    .and_then(|parsed| geometry::from_geojson(&parsed))
                    .and_then(|g| {
                        let g = layer
                            .geometry
                            .conform(g)
                            .map_err(|e| FieldError::new("geometry", e))?;
                        layer
                            .check_vertices(&g)
                            .map_err(|e| FieldError::new("geometry", e))?;
                        geometry::check(&g).map_err(|e| FieldError::new("geometry", e))?;
                        Ok(g)
                    });
                match checked {
                    Ok(g) => Some(g),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                }
            }
        };

        let empty = Map::new();
        let props = match obj.get("properties") {
            None | Some(Json::Null) => &empty,
            Some(Json::Object(m)) => m,
            Some(other) => {
                errors.push(FieldError::new(
                    "properties",
                    format!("expected an object, found {}", json_kind(other)),
                ));
                return Err(errors);
            }
        };
        if layer.unknown_properties == UnknownProperties::Reject {
            for k in props
                .keys()
                .filter(|k| **k != layer.id_property && layer.property(k).is_none())
            {
                errors.push(FieldError::new(
                    format!("properties.{k}"),
                    format!(
                        "is not declared by layer {} (declared: {})",
                        layer.name,
                        declared_list(layer)
                    ),
                ));
            }
        }
        let mut values = Vec::with_capacity(layer.properties.len());
        for def in &layer.properties {
            match def.value_from_json(props.get(&def.name)) {
                Ok(v) => values.push(v),
                Err(e) => errors.push(FieldError::new(format!("properties.{}", def.name), e)),
            }
        }
        match (id, geometry) {
            (Some(id), Some(geometry)) if errors.is_empty() => Ok(Feature {
                id,
                geometry,
                values,
            }),
            _ => Err(errors),
        }
    }

    /// The GeoJSON Feature: `id` at the top and, as in the files we import, also as the
    /// layer's id property; then every declared property, nulls included.
    pub fn to_geojson(&self, layer: &LayerDef) -> Json {
        let mut props = Map::with_capacity(self.values.len() + 1);
        props.insert(layer.id_property.clone(), Json::String(self.id.clone()));
        for (def, v) in layer.properties.iter().zip(&self.values) {
            props.insert(def.name.clone(), v.to_json());
        }
        let geometry =
            geojson::Geometry::from(&*crate::model::geometry::rfc7946_wound(&self.geometry));
        serde_json::json!({
            "type": "Feature",
            "id": self.id,
            "geometry": geometry,
            "properties": props,
        })
    }

    /// What differs between this feature and `after` (the same id), as two partial
    /// GeoJSON features holding only the changed members: `geometry` when it moved,
    /// `properties` with the changed ones. The audit trail of imports keeps these:
    /// a re-import of millions of features changes one or two members of each, and
    /// whole copies would multiply the store.
    pub fn changes(&self, layer: &LayerDef, after: &Feature) -> (Json, Json) {
        let mut before_j = Map::new();
        let mut after_j = Map::new();
        if self.geometry != after.geometry {
            before_j.insert(
                "geometry".into(),
                serde_json::json!(geojson::Geometry::from(&self.geometry)),
            );
            after_j.insert(
                "geometry".into(),
                serde_json::json!(geojson::Geometry::from(&after.geometry)),
            );
        }
        let (mut bp, mut ap) = (Map::new(), Map::new());
        for ((def, b), a) in layer.properties.iter().zip(&self.values).zip(&after.values) {
            if b != a {
                bp.insert(def.name.clone(), b.to_json());
                ap.insert(def.name.clone(), a.to_json());
            }
        }
        if !bp.is_empty() {
            before_j.insert("properties".into(), Json::Object(bp));
            after_j.insert("properties".into(), Json::Object(ap));
        }
        (Json::Object(before_j), Json::Object(after_j))
    }

    /// Applies a JSON merge patch (RFC 7396) to this feature's GeoJSON and validates
    /// the result. The id cannot change.
    pub fn merge_patch(&self, layer: &LayerDef, patch: &Json) -> Result<Feature, FieldError> {
        if !patch.is_object() {
            return Err(FieldError::new(
                "patch",
                format!("expected an object, found {}", json_kind(patch)),
            ));
        }
        // The id cannot change: refuse a patch that names another one.
        let field = format!("properties.{}", layer.id_property);
        for (value, name) in [
            (patch.get("id"), "id"),
            (
                patch
                    .get("properties")
                    .and_then(|p| p.get(&layer.id_property)),
                field.as_str(),
            ),
        ] {
            match value {
                None | Some(Json::Null) => {}
                Some(Json::String(s)) if *s == self.id => {}
                Some(Json::Number(n)) if n.to_string() == self.id => {}
                Some(other) => {
                    return Err(FieldError::new(
                        name,
                        format!("cannot change the id ({} -> {other})", self.id),
                    ));
                }
            }
        }
        let mut doc = self.to_geojson(layer);
        json_patch::merge(&mut doc, patch);
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("id".into(), Json::String(self.id.clone()));
            if let Some(Json::Object(props)) = obj.get_mut("properties") {
                props.insert(layer.id_property.clone(), Json::String(self.id.clone()));
            }
        }
        Feature::from_geojson(layer, &doc)
    }
}

/// The id a GeoJSON feature carries: top-level `id` and/or `properties[id_property]`,
/// strings or integers; both must agree when both are given.
pub fn id_of(layer: &LayerDef, v: &Json) -> Result<Option<String>, FieldError> {
    fn text(v: &Json, field: &str) -> Result<Option<String>, FieldError> {
        match v {
            Json::Null => Ok(None),
            Json::String(s) => Ok(Some(s.clone())),
            Json::Number(n) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
            other => Err(FieldError::new(
                field,
                format!(
                    "expected a string or an integer, found {}",
                    json_kind(other)
                ),
            )),
        }
    }
    let top = match v.get("id") {
        Some(x) => text(x, "id")?,
        None => None,
    };
    let field = format!("properties.{}", layer.id_property);
    let inner = match v.get("properties").and_then(|p| p.get(&layer.id_property)) {
        Some(x) => text(x, &field)?,
        None => None,
    };
    match (top, inner) {
        (Some(a), Some(b)) if a != b => Err(FieldError::new(
            field,
            format!("{b:?} differs from the feature id {a:?}"),
        )),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

fn declared_list(layer: &LayerDef) -> String {
    let mut names: Vec<&str> = vec![layer.id_property.as_str()];
    names.extend(layer.properties.iter().map(|p| p.name.as_str()));
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_layers::risk_points;
    use serde_json::json;

    fn good() -> Json {
        json!({"type":"Feature","id":"R1","geometry":{"type":"Point","coordinates":[106.5,29.5]},
               "properties":{"id":"R1","name":"Yuzhong landslide #1","category":"landslide","level":"II"}})
    }

    #[test]
    fn a_valid_feature_round_trips_through_geojson() {
        let layer = risk_points();
        let f = Feature::from_geojson(&layer, &good()).unwrap();
        assert_eq!(f.id, "R1");
        let back = Feature::from_geojson(&layer, &f.to_geojson(&layer)).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn errors_name_the_field() {
        let layer = risk_points();
        let cases = [
            (
                json!({"type":"Feature","geometry":{"type":"Point","coordinates":[1,2]},"properties":{"name":"x","category":"landslide","level":"I"}}),
                "id",
            ),
            (
                json!({"type":"Feature","id":"a","geometry":null,"properties":{}}),
                "geometry",
            ),
            (
                json!({"type":"Feature","id":"a","geometry":{"type":"LineString","coordinates":[[1,2],[3,4]]},"properties":{}}),
                "geometry",
            ),
            (
                json!({"type":"Feature","id":"a","geometry":{"type":"Point","coordinates":[200,2]},"properties":{}}),
                "geometry",
            ),
            (
                json!({"type":"Feature","id":"a","geometry":{"type":"Point","coordinates":[1,2]},"properties":{"name":"x","category":"landslide","level":"V"}}),
                "properties.level",
            ),
            (
                json!({"type":"Feature","id":"a","geometry":{"type":"Point","coordinates":[1,2]},"properties":{"name":"x","category":"landslide","level":"I","levle":"I"}}),
                "properties.levle",
            ),
            (
                json!({"type":"Feature","id":"a","geometry":{"type":"Point","coordinates":[1,2]},"properties":{"id":"b"}}),
                "properties.id",
            ),
        ];
        for (v, field) in cases {
            let e = Feature::from_geojson(&layer, &v).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn merge_patch_changes_only_what_it_names_and_keeps_the_id() {
        let layer = risk_points();
        let f = Feature::from_geojson(&layer, &good()).unwrap();
        let g = f
            .merge_patch(&layer, &json!({"properties":{"level":"I"}}))
            .unwrap();
        assert_eq!(g.values[2], Value::Text("I".into()));
        assert_eq!(g.geometry, f.geometry);
        let moved = f
            .merge_patch(
                &layer,
                &json!({"geometry":{"type":"Point","coordinates":[106.6,29.6]}}),
            )
            .unwrap();
        assert_ne!(moved.geometry, f.geometry);
        assert_eq!(
            f.merge_patch(&layer, &json!({"id":"R2"}))
                .unwrap_err()
                .field,
            "id"
        );
        assert_eq!(
            f.merge_patch(&layer, &json!({"properties":{"name":null}}))
                .unwrap_err()
                .field,
            "properties.name"
        );
    }
}
