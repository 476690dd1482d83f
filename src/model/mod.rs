//! Plain data shared by every other module: layers and their schemas, features,
//! property values, boxes, roles. No I/O happens here.
//!
//! Coordinates are WGS84 degrees in lon/lat order (EPSG:4326, GIS axis order)
//! everywhere in this module.

pub mod access;
pub mod bbox;
pub mod feature;
pub mod geometry;
pub mod json;
pub mod layer;
pub mod unreadable;
pub mod value;

pub use access::{Action, Role};
pub use bbox::Bbox;
pub use feature::{Feature, FeatureRef, FieldError, StoredFeature};
pub use geometry::GeometryType;
pub use layer::{LayerDef, LayerKind, PropertyDef, Reference, TileSettings, UnknownProperties};
pub use unreadable::{UnreadableRow, UnreadableRows};
pub use value::{PropertyType, Value, ValueRef};

/// Hand-built layer definitions for unit tests (the real ones come from `layers/`).
#[cfg(test)]
pub(crate) mod test_layers {
    use super::*;

    fn prop(name: &str, ty: PropertyType, required: bool, values: Option<&[&str]>) -> PropertyDef {
        PropertyDef {
            name: name.into(),
            ty,
            title: None,
            required,
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
            min: None,
            max: None,
            max_length: None,
            references: None,
        }
    }

    pub fn risk_points() -> LayerDef {
        LayerDef {
            name: "risk_points".into(),
            title: "Risk points".into(),
            description: String::new(),
            kind: LayerKind::RiskPoint,
            geometry: GeometryType::Point,
            id_property: "id".into(),
            properties: vec![
                prop("name", PropertyType::String, true, None),
                prop("category", PropertyType::String, true, None),
                prop(
                    "level",
                    PropertyType::String,
                    true,
                    Some(&["I", "II", "III", "IV"]),
                ),
                prop("district", PropertyType::String, false, None),
            ],
            minzoom: 0,
            maxzoom: 22,
            unknown_properties: UnknownProperties::Reject,
            max_vertices: crate::model::geometry::MAX_VERTICES,
            uploaded: false,
            tiles: TileSettings {
                cluster_rank: Some(2),
                ..TileSettings::default()
            },
        }
    }
}
