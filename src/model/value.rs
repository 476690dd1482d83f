//! Property types and values.

use std::fmt;

/// The type of a declared property, as spelled in layer files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PropertyType {
    String,
    Integer,
    Float,
    Boolean,
    /// A calendar date, `YYYY-MM-DD`, stored as text.
    Date,
    /// An RFC 3339 timestamp, stored in GeoPackage's UTC form `YYYY-MM-DDTHH:MM:SS.SSSZ`.
    DateTime,
}

impl PropertyType {
    pub const ALL: [PropertyType; 6] = [
        PropertyType::String,
        PropertyType::Integer,
        PropertyType::Float,
        PropertyType::Boolean,
        PropertyType::Date,
        PropertyType::DateTime,
    ];

    pub fn config_name(self) -> &'static str {
        match self {
            PropertyType::String => "string",
            PropertyType::Integer => "integer",
            PropertyType::Float => "float",
            PropertyType::Boolean => "boolean",
            PropertyType::Date => "date",
            PropertyType::DateTime => "datetime",
        }
    }

    pub fn from_config_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.config_name() == name)
    }

    /// The column type in a GeoPackage table (GeoPackage 1.3, table 1).
    pub fn gpkg_sql_type(self) -> &'static str {
        match self {
            PropertyType::String => "TEXT",
            PropertyType::Integer => "INTEGER",
            PropertyType::Float => "REAL",
            PropertyType::Boolean => "BOOLEAN",
            PropertyType::Date => "DATE",
            PropertyType::DateTime => "DATETIME",
        }
    }

    /// The type name in TileJSON `vector_layers` fields and JSON schemas.
    pub fn json_type(self) -> &'static str {
        match self {
            PropertyType::String | PropertyType::Date | PropertyType::DateTime => "String",
            PropertyType::Integer | PropertyType::Float => "Number",
            PropertyType::Boolean => "Boolean",
        }
    }
}

/// One property value. Dates and timestamps are `Text` after validation.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// Always finite.
    Float(f64),
    Text(String),
}

impl Value {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
            }
            Value::Text(s) => s.clone().into(),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Borrowed view.
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Float(f) => ValueRef::Float(*f),
            Value::Text(s) => ValueRef::Text(s),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// A borrowed property value, as the index hands them out without allocating.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
}

impl ValueRef<'_> {
    pub fn into_owned(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Float(f) => Value::Float(f),
            ValueRef::Text(s) => Value::Text(s.to_string()),
        }
    }
}
