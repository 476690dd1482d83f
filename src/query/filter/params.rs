//! The small query parameters around a filter: `property=value`, `sortby` and
//! `properties`.

use std::cmp::Ordering;

use super::parse::GEOMETRY_NAMES;
use super::{CmpOp, Filter, FilterError, Fold, InSet, Literal, Problem, Prop, Row};
use crate::model::{LayerDef, PropertyType, ValueRef};

/// The queryable names, for messages.
fn names(layer: &LayerDef) -> String {
    let mut names = vec![layer.id_property.as_str()];
    names.extend(layer.properties.iter().map(|p| p.name.as_str()));
    names.join(", ")
}

/// A declared property or the id, with its type.
fn lookup(layer: &LayerDef, name: &str) -> Option<(Prop, PropertyType)> {
    if let Some((i, p)) = layer.property(name) {
        return Some((Prop::Declared(i), p.ty));
    }
    (name == layer.id_property).then_some((Prop::Id, PropertyType::String))
}

impl Filter {
    /// The filter of simple `property=value` query parameters (OGC API – Features
    /// Part 1, §7.15.5): each is equality on a declared property or the id, the value
    /// read as the property's type; a property given more than once matches any of its
    /// values. Pass only the parameters the endpoint does not itself define: any other
    /// name is refused, naming it. No parameters give `TRUE`.
    pub fn from_params<K: AsRef<str>, V: AsRef<str>>(
        params: &[(K, V)],
        layer: &LayerDef,
    ) -> Result<Filter, FilterError> {
        let mut groups: Vec<(Prop, &str, Vec<Literal>)> = Vec::new();
        for (k, v) in params {
            let (name, text) = (k.as_ref(), v.as_ref());
            let Some((prop, ty)) = lookup(layer, name) else {
                return Err(FilterError::new(
                    name,
                    Problem::UnknownProperty {
                        name: name.into(),
                        queryables: names(layer),
                    },
                ));
            };
            let value = value_from_text(ty, text)
                .map_err(|message| FilterError::new(name, Problem::BadValue { message }))?;
            match groups.iter_mut().find(|g| g.0 == prop) {
                Some(g) if g.2.contains(&value) => {}
                Some(g) => g.2.push(value),
                None => groups.push((prop, name, vec![value])),
            }
        }
        Ok(Filter::all(groups.into_iter().map(
            |(prop, _, mut values)| {
                if values.len() == 1 {
                    Filter::Compare {
                        prop,
                        op: CmpOp::Eq,
                        value: values.remove(0),
                        fold: Fold::NONE,
                    }
                } else {
                    Filter::In {
                        prop,
                        set: InSet::new(values),
                        fold: Fold::NONE,
                    }
                }
            },
        )))
    }
}

/// A query parameter's text as a literal of type `ty` (what a CSV cell would be).
fn value_from_text(ty: PropertyType, text: &str) -> Result<Literal, String> {
    let t = text.trim();
    if t.is_empty() && ty != PropertyType::String {
        return Err(format!(
            "expected {}, found an empty value",
            ty.config_name()
        ));
    }
    match ty {
        PropertyType::String => Ok(Literal::Text(text.to_string())),
        PropertyType::Integer => match (t.parse::<i64>(), t.parse::<f64>()) {
            (Ok(i), _) => Ok(Literal::Int(i)),
            (_, Ok(f)) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
                Ok(Literal::Int(f as i64))
            }
            _ => Err(format!("expected an integer, found '{text}'")),
        },
        PropertyType::Float => match t.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Literal::Float(f)),
            _ => Err(format!("expected a finite number, found '{text}'")),
        },
        PropertyType::Boolean => match t.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Literal::Bool(true)),
            "false" | "0" => Ok(Literal::Bool(false)),
            _ => Err(format!("expected true or false, found '{text}'")),
        },
        PropertyType::Date => {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(t, format)
                .map(|_| Literal::Text(t.to_string()))
                .map_err(|_| format!("expected a date (YYYY-MM-DD), found '{text}'"))
        }
        PropertyType::DateTime => crate::model::layer::normalise_datetime(t).map(Literal::Text),
    }
}

/// One `sortby` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SortKey {
    pub prop: Prop,
    pub descending: bool,
}

/// A parsed `sortby` parameter: keys in order of precedence.
///
/// Order: values by type (numbers numerically, text by code point as PostgreSQL's
/// `C` collation, dates and timestamps as their ISO text, `false` before `true`);
/// nulls after every value ascending and before every value descending (PostgreSQL's
/// default, `NULLS LAST` for `ASC`, so a PostGIS store can order alike); then by id,
/// ascending, so the order is total and paging neither skips nor repeats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SortBy {
    pub keys: Vec<SortKey>,
}

impl SortBy {
    /// Parses `sortby=+name,-height` (`+` ascending, the default; `-` descending). A
    /// `+` left unescaped in a URL arrives as a space, which reads as `+`. Unknown or
    /// repeated properties and the geometry are refused, naming them.
    pub fn parse(text: &str, layer: &LayerDef) -> Result<SortBy, FilterError> {
        let err = |message: String| FilterError::new("sortby", Problem::BadValue { message });
        let mut keys: Vec<SortKey> = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            let (name, descending) = match item.strip_prefix('-') {
                Some(rest) => (rest.trim_start(), true),
                None => (item.strip_prefix('+').unwrap_or(item).trim_start(), false),
            };
            if name.is_empty() {
                return Err(err(format!(
                    "'{text}' has an empty key; write sortby=+name,-height"
                )));
            }
            if GEOMETRY_NAMES.contains(&name) && layer.property(name).is_none() {
                return Err(err(format!("the geometry '{name}' cannot be sorted by")));
            }
            let Some((prop, _)) = lookup(layer, name) else {
                return Err(FilterError::new(
                    "sortby",
                    Problem::UnknownProperty {
                        name: name.into(),
                        queryables: names(layer),
                    },
                ));
            };
            if keys.iter().any(|k| k.prop == prop) {
                return Err(err(format!("'{name}' appears twice")));
            }
            keys.push(SortKey { prop, descending });
        }
        Ok(SortBy { keys })
    }

    /// Orders two rows by the keys, then by id.
    pub fn compare<R: Row + ?Sized>(&self, a: &R, b: &R) -> Ordering {
        for k in &self.keys {
            let (va, vb) = match k.prop {
                Prop::Id => (ValueRef::Text(a.id()), ValueRef::Text(b.id())),
                Prop::Declared(i) => (a.value(i), b.value(i)),
            };
            let o = order_values(va, vb);
            let o = if k.descending { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.id().cmp(b.id())
    }
}

/// Ascending order of two values of one property, nulls last.
fn order_values(a: ValueRef<'_>, b: ValueRef<'_>) -> Ordering {
    match (a, b) {
        (ValueRef::Null, ValueRef::Null) => Ordering::Equal,
        (ValueRef::Null, _) => Ordering::Greater,
        (_, ValueRef::Null) => Ordering::Less,
        (ValueRef::Int(x), ValueRef::Int(y)) => x.cmp(&y),
        (ValueRef::Float(x), ValueRef::Float(y)) => x.total_cmp(&y),
        (ValueRef::Int(x), ValueRef::Float(y)) => (x as f64).total_cmp(&y),
        (ValueRef::Float(x), ValueRef::Int(y)) => x.total_cmp(&(y as f64)),
        (ValueRef::Text(x), ValueRef::Text(y)) => x.cmp(y),
        (ValueRef::Bool(x), ValueRef::Bool(y)) => x.cmp(&y),
        // A column holds one type; mixed kinds cannot meet.
        _ => Ordering::Equal,
    }
}

/// A parsed `properties` parameter: which declared properties each feature carries,
/// in the order asked. The id is always returned; naming it is allowed and changes
/// nothing. An empty parameter returns no properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertySelection {
    /// Declared property numbers.
    pub props: Vec<usize>,
}

impl PropertySelection {
    pub fn parse(text: &str, layer: &LayerDef) -> Result<PropertySelection, FilterError> {
        let mut props = Vec::new();
        if text.trim().is_empty() {
            return Ok(PropertySelection { props });
        }
        for name in text.split(',').map(str::trim) {
            if name == layer.id_property && layer.property(name).is_none() {
                continue;
            }
            let Some((i, _)) = layer.property(name) else {
                let problem = if GEOMETRY_NAMES.contains(&name) {
                    Problem::BadValue {
                        message: format!(
                            "'{name}' is the geometry, not a property; it is always returned"
                        ),
                    }
                } else {
                    Problem::UnknownProperty {
                        name: name.into(),
                        queryables: names(layer),
                    }
                };
                return Err(FilterError::new("properties", problem));
            };
            if !props.contains(&i) {
                props.push(i);
            }
        }
        Ok(PropertySelection { props })
    }
}
