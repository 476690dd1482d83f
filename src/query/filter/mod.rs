//! CQL2 filters (OGC API – Features Part 3) as values: parsed from CQL2 text or JSON
//! with the `cql2` crate, checked against a layer's schema once, then evaluated per
//! feature row without allocating (except under `CASEI`/`ACCENTI`).
//!
//! # The value
//!
//! [`Filter`] is our own expression tree, not `cql2::Expr`: property names are resolved
//! to column numbers, literals coerced to the property's type, `LIKE` patterns compiled
//! and `IN` lists hashed, so evaluating one row is a walk over a few nodes; and it is
//! small enough for a PostGIS store to translate into SQL later.
//!
//! # Semantics
//!
//! - Three-valued logic as in SQL and CQL2: a comparison with a null property is
//!   *unknown*, `NOT unknown` is unknown, `false AND unknown` is false, `true OR unknown`
//!   is true; a row matches only when the whole filter is true.
//! - Comparisons, `LIKE`, `IN`, `BETWEEN` (inclusive) and `IS NULL` take a property (or
//!   the id property) and literals of its type (see [`parse`] for the coercions).
//!   Text compares by code point (byte order of UTF-8), as PostgreSQL's `C` collation.
//! - Spatial predicates compare the feature's geometry (named `geometry` or `geom`) with
//!   a literal geometry in WGS84 lon/lat degrees (CRS84): `S_INTERSECTS`, `S_WITHIN`
//!   (feature inside the literal), `S_CONTAINS` (feature contains the literal) with
//!   geo's DE-9IM semantics, and `S_DWITHIN`: geodesic distance in metres at most the
//!   given one, measured by the caller's [`EvalContext::within_m`].
//! - [`Filter::spatial_bounds`] gives boxes every match must meet, for the R-tree.

mod error;
mod like;
mod params;
pub mod parse;
mod queryables;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::HashSet;

use geo::{BoundingRect, Contains, CoordsIter, Intersects};
use geo_types::{Geometry, Point, Rect};

use crate::index::{GeomRef, LayerIndex};
use crate::model::ValueRef;
use crate::query::budget::pair_cost;

pub use error::{FilterError, Problem};
pub use like::{Fold, LikePattern, LikePatternError};
pub use params::{PropertySelection, SortBy, SortKey};
pub use parse::{FilterLang, Limits, check_literal_geometry};
pub use queryables::{property_schema, queryables};

/// A property a filter reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prop {
    /// The feature id (the layer's `id_property`, text).
    Id,
    /// Declared property number `n` (the layer's declaration order).
    Declared(usize),
}

/// A literal, already coerced to the type of the property it is compared with. Dates
/// and timestamps are text in the stored form (`YYYY-MM-DD`, and
/// `YYYY-MM-DDTHH:MM:SS.SSSZ` in UTC), so they compare as text.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Bool(bool),
    Int(i64),
    /// Finite; also a non-integral number compared with an integer property.
    Float(f64),
    Text(String),
}

/// A comparison operator, property on the left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator with its operands swapped (`5 < x` is `x > 5`).
    pub fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Eq => CmpOp::Eq,
            CmpOp::Ne => CmpOp::Ne,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
        }
    }

    /// Whether `ord` (property against literal) satisfies the operator.
    pub fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::Ne => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Le => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::Ge => ord != Ordering::Less,
        }
    }

    /// The CQL2 spelling.
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A spatial predicate between the feature's geometry (first) and a literal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpatialOp {
    Intersects,
    /// The feature lies within the literal.
    Within,
    /// The feature contains the literal.
    Contains,
}

/// The values of an `IN` list, with a hashed copy of long text lists.
#[derive(Clone, Debug)]
pub struct InSet {
    values: Vec<Literal>,
    /// Text lists above [`InSet::LINEAR`] values are looked up by hash.
    hashed: Option<HashSet<String>>,
}

impl PartialEq for InSet {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl InSet {
    /// Up to this many values a scan beats hashing the probe.
    const LINEAR: usize = 8;

    pub fn new(values: Vec<Literal>) -> InSet {
        let hashed = (values.len() > Self::LINEAR
            && values.iter().all(|v| matches!(v, Literal::Text(_))))
        .then(|| {
            values
                .iter()
                .filter_map(|v| match v {
                    Literal::Text(t) => Some(t.clone()),
                    _ => None,
                })
                .collect()
        });
        InSet { values, hashed }
    }

    pub fn values(&self) -> &[Literal] {
        &self.values
    }

    /// Whether `v` equals one of the values; `None` for a null `v`.
    fn contains(&self, v: ValueRef<'_>, fold: Fold) -> Option<bool> {
        if let ValueRef::Null = v {
            return None;
        }
        if let (Some(set), ValueRef::Text(t)) = (&self.hashed, v) {
            return Some(set.contains(fold.apply(t).as_ref()));
        }
        Some(
            self.values
                .iter()
                .any(|lit| compare(v, lit, fold) == Some(Ordering::Equal)),
        )
    }
}

/// A filter, resolved against one layer's schema.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// `TRUE`/`FALSE`; also what an empty parameter list or `geometry IS NULL` become.
    Const(bool),
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    /// `prop op value`; `fold` applies to the property's text (the literal was folded
    /// when written inside `CASEI`/`ACCENTI`).
    Compare {
        prop: Prop,
        op: CmpOp,
        value: Literal,
        fold: Fold,
    },
    /// `prop LIKE pattern` (text properties only).
    Like {
        prop: Prop,
        pattern: LikePattern,
        fold: Fold,
    },
    /// `prop IN (values)`.
    In {
        prop: Prop,
        set: InSet,
        fold: Fold,
    },
    /// `prop BETWEEN low AND high`, both ends included.
    Between {
        prop: Prop,
        low: Literal,
        high: Literal,
    },
    /// `prop IS NULL`.
    IsNull {
        prop: Prop,
    },
    /// A spatial predicate between the feature's geometry and `geometry` (WGS84).
    Spatial {
        op: SpatialOp,
        geometry: Geometry,
    },
    /// Geodesic distance from the feature's geometry to `geometry` at most
    /// `distance_m` metres.
    DWithin {
        geometry: Geometry,
        distance_m: f64,
    },
}

/// A feature as a filter reads it: the index supplies rows by slot, tests their own.
pub trait Row {
    /// The feature id.
    fn id(&self) -> &str;
    /// Declared property number `prop`.
    fn value(&self, prop: usize) -> ValueRef<'_>;
    /// The geometry, WGS84 degrees.
    fn geometry(&self) -> GeomRef<'_>;
}

/// A slot of a layer index.
impl Row for (&LayerIndex, u32) {
    fn id(&self) -> &str {
        self.0.id(self.1)
    }
    fn value(&self, prop: usize) -> ValueRef<'_> {
        self.0.value(self.1, prop)
    }
    fn geometry(&self) -> GeomRef<'_> {
        self.0.geometry(self.1)
    }
}

/// What evaluation needs from outside.
#[derive(Clone, Copy)]
pub struct EvalContext<'a> {
    /// Whether the feature's geometry (first) lies within a distance (third, metres)
    /// of a literal geometry (second), geodesic on WGS84 between their nearest points.
    /// Only `S_DWITHIN` calls it.
    pub within_m: &'a dyn Fn(&Geometry, &Geometry, f64) -> bool,
    /// Charged 1 per node evaluated, and the product of the vertex counts per spatial
    /// test. Once exceeded, evaluation answers *false* without working, and the caller
    /// refuses the query ([`crate::query::Budget::check`]).
    pub budget: &'a crate::query::Budget,
}

/// Orders a property value against a literal: `None` when the value is null (or of
/// another type, which validation rules out).
fn compare(v: ValueRef<'_>, lit: &Literal, fold: Fold) -> Option<Ordering> {
    match (v, lit) {
        (ValueRef::Int(a), Literal::Int(b)) => Some(a.cmp(b)),
        // A non-integral literal: `a as f64` cannot round past it (integers beyond 2^53,
        // where rounding starts, are all larger than any non-integral float).
        (ValueRef::Int(a), Literal::Float(b)) => (a as f64).partial_cmp(b),
        (ValueRef::Float(a), Literal::Float(b)) => a.partial_cmp(b),
        (ValueRef::Float(a), Literal::Int(b)) => a.partial_cmp(&(*b as f64)),
        (ValueRef::Text(a), Literal::Text(b)) => {
            if fold.is_none() {
                Some(a.cmp(b.as_str()))
            } else {
                Some(fold.apply(a).as_ref().cmp(b.as_str()))
            }
        }
        (ValueRef::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn value_of<R: Row + ?Sized>(row: &R, prop: Prop) -> ValueRef<'_> {
    match prop {
        Prop::Id => ValueRef::Text(row.id()),
        Prop::Declared(i) => row.value(i),
    }
}

/// Runs `f` with the feature's geometry as a `Geometry` (a point is built on the stack).
fn with_geometry<T>(g: GeomRef<'_>, f: impl FnOnce(&Geometry) -> T) -> T {
    match g {
        GeomRef::Point(c) => f(&Geometry::Point(Point(c))),
        GeomRef::Shape(s) => f(s),
    }
}

impl Filter {
    /// Whether the row matches (the filter is true, not false or unknown).
    pub fn matches<R: Row + ?Sized>(&self, row: &R, ctx: &EvalContext<'_>) -> bool {
        self.eval(row, ctx) == Some(true)
    }

    /// The filter's truth value for the row: `None` is *unknown* (a null involved).
    pub fn eval<R: Row + ?Sized>(&self, row: &R, ctx: &EvalContext<'_>) -> Option<bool> {
        if !ctx.budget.charge(1) {
            return Some(false);
        }
        match self {
            Filter::Const(b) => Some(*b),
            Filter::And(children) => {
                let mut unknown = false;
                for c in children {
                    match c.eval(row, ctx) {
                        Some(false) => return Some(false),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                if unknown { None } else { Some(true) }
            }
            Filter::Or(children) => {
                let mut unknown = false;
                for c in children {
                    match c.eval(row, ctx) {
                        Some(true) => return Some(true),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                if unknown { None } else { Some(false) }
            }
            Filter::Not(c) => c.eval(row, ctx).map(|b| !b),
            Filter::Compare {
                prop,
                op,
                value,
                fold,
            } => compare(value_of(row, *prop), value, *fold).map(|o| op.holds(o)),
            Filter::Like {
                prop,
                pattern,
                fold,
            } => match value_of(row, *prop) {
                ValueRef::Text(t) if fold.is_none() => Some(pattern.matches(t)),
                ValueRef::Text(t) => Some(pattern.matches(&fold.apply(t))),
                _ => None,
            },
            Filter::In { prop, set, fold } => set.contains(value_of(row, *prop), *fold),
            Filter::Between { prop, low, high } => {
                let v = value_of(row, *prop);
                let lo = compare(v, low, Fold::NONE)?;
                let hi = compare(v, high, Fold::NONE)?;
                Some(lo != Ordering::Less && hi != Ordering::Greater)
            }
            Filter::IsNull { prop } => Some(matches!(value_of(row, *prop), ValueRef::Null)),
            Filter::Spatial { op, geometry } => Some(with_geometry(row.geometry(), |g| {
                if !ctx
                    .budget
                    .charge(pair_cost(g.coords_count(), geometry.coords_count()))
                {
                    return false;
                }
                match op {
                    SpatialOp::Intersects => g.intersects(geometry),
                    SpatialOp::Within => geometry.contains(g),
                    SpatialOp::Contains => g.contains(geometry),
                }
            })),
            Filter::DWithin {
                geometry,
                distance_m,
            } => Some(with_geometry(row.geometry(), |g| {
                ctx.budget
                    .charge(pair_cost(g.coords_count(), geometry.coords_count()))
                    && (ctx.within_m)(g, geometry, *distance_m)
            })),
        }
    }

    /// All of `filters` (flattened; `TRUE`s dropped): combines `filter` with simple
    /// `property=value` parameters and the like.
    pub fn all(filters: impl IntoIterator<Item = Filter>) -> Filter {
        let mut out = Vec::new();
        for f in filters {
            match f {
                Filter::Const(true) => {}
                Filter::Const(false) => return Filter::Const(false),
                Filter::And(children) => out.extend(children),
                other => out.push(other),
            }
        }
        match out.len() {
            0 => Filter::Const(true),
            1 => out.pop().unwrap_or(Filter::Const(true)),
            _ => Filter::And(out),
        }
    }

    /// Whether evaluation calls [`EvalContext::within_m`].
    pub fn uses_distance(&self) -> bool {
        match self {
            Filter::DWithin { .. } => true,
            Filter::And(c) | Filter::Or(c) => c.iter().any(Filter::uses_distance),
            Filter::Not(c) => c.uses_distance(),
            _ => false,
        }
    }

    /// Applies `f` to every literal geometry, for example to bring a `filter-crs` other
    /// than CRS84 into WGS84 lon/lat (the caller checks the result with
    /// [`parse::check_literal_geometry`]).
    pub fn try_map_geometries<E>(
        &mut self,
        f: &mut dyn FnMut(&mut Geometry) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            Filter::Spatial { geometry, .. } | Filter::DWithin { geometry, .. } => f(geometry),
            Filter::And(c) | Filter::Or(c) => {
                c.iter_mut().try_for_each(|c| c.try_map_geometries(f))
            }
            Filter::Not(c) => c.try_map_geometries(f),
            _ => Ok(()),
        }
    }

    /// Lon/lat boxes (WGS84 degrees) that the envelope of every matching feature meets,
    /// when the filter's structure implies them; `None` when it does not (the caller
    /// must then walk the layer, bounded by its own limits). An empty list means no
    /// feature can match.
    ///
    /// - a spatial predicate gives its literal's box (a feature intersecting, inside or
    ///   containing the literal meets that box); `S_DWITHIN` gives the boxes
    ///   `expand(literal, metres)` returns, which must cover every point within that
    ///   geodesic distance of the literal;
    /// - `AND` keeps the smallest bounds of its bounded children (not their
    ///   intersection: a line may meet two disjoint boxes), `OR` unites them when every
    ///   child is bounded; `NOT` and non-spatial predicates give none.
    ///
    /// At most [`Filter::MAX_BOUNDS`] boxes come back (more are merged into their
    /// common box, still sound). Boxes may overlap: a caller querying each must not
    /// count a feature twice.
    pub fn spatial_bounds(
        &self,
        expand: &dyn Fn(&Geometry, f64) -> Vec<Rect>,
    ) -> Option<Vec<Rect>> {
        let boxes = match self {
            Filter::Const(false) => Some(Vec::new()),
            Filter::Spatial { geometry, .. } => {
                Some(geometry.bounding_rect().into_iter().collect())
            }
            Filter::DWithin {
                geometry,
                distance_m,
            } => Some(expand(geometry, *distance_m)),
            Filter::And(children) => {
                let mut acc: Option<Vec<Rect>> = None;
                for b in children.iter().filter_map(|c| c.spatial_bounds(expand)) {
                    acc = Some(match acc {
                        None => b,
                        Some(a) => tighter(a, b),
                    });
                }
                acc
            }
            Filter::Or(children) => {
                let mut all = Vec::new();
                for c in children {
                    all.extend(c.spatial_bounds(expand)?);
                }
                Some(all)
            }
            _ => None,
        };
        boxes.map(cap_boxes)
    }

    /// Most boxes [`Filter::spatial_bounds`] returns.
    pub const MAX_BOUNDS: usize = 32;
}

/// The tighter of two bounds of an `AND`: a match meets a box of each list, but an
/// extended feature may meet two disjoint boxes, so the lists are not intersected;
/// the one with the smaller total area is kept.
fn tighter(a: Vec<Rect>, b: Vec<Rect>) -> Vec<Rect> {
    let area = |v: &[Rect]| v.iter().map(|r| r.width() * r.height()).sum::<f64>();
    if area(&a) <= area(&b) { a } else { b }
}

/// Merges a long list into its common box.
fn cap_boxes(v: Vec<Rect>) -> Vec<Rect> {
    if v.len() <= Filter::MAX_BOUNDS {
        return v;
    }
    let mut it = v.into_iter();
    let Some(first) = it.next() else {
        return Vec::new();
    };
    let (mut min, mut max) = (first.min(), first.max());
    for r in it {
        min.x = min.x.min(r.min().x);
        min.y = min.y.min(r.min().y);
        max.x = max.x.max(r.max().x);
        max.y = max.y.max(r.max().y);
    }
    vec![Rect::new(min, max)]
}
