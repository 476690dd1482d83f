//! From CQL2 text or JSON to a [`Filter`] checked against one layer.
//!
//! The `cql2` crate parses both encodings into one `cql2::Expr`; this module walks it
//! once, resolving names and coercing literals, and refuses what it cannot evaluate
//! exactly, naming it.
//!
//! # Literals
//!
//! | property type | accepted literals |
//! |---|---|
//! | string (and the id) | `'text'` |
//! | integer | a number (`5`, `5.0`; `2.5` compares numerically) |
//! | float | a number |
//! | boolean | `TRUE`/`FALSE` (a bare boolean property is `prop = TRUE`) |
//! | date | `DATE('2024-05-01')`, or `'2024-05-01'` (GDAL 3.6 writes `'2024-05-01T'`) |
//! | datetime | `TIMESTAMP('2024-05-01T08:30:00+08:00')`, or that as a plain string, or a date (midnight UTC) |
//!
//! A number against a text property, text against a number, `DATE` against a datetime
//! and so on are errors, never silently false. CQL2 text numbers are read as `f64` by
//! `cql2`, so integer literals beyond 2^53 lose precision before they reach us.
//! Timestamps are stored to the millisecond, so a literal with a finer fraction is
//! refused.
//!
//! # Bounds
//!
//! [`Limits`] caps the text size, nesting depth, node count, literal geometry vertices
//! and `S_DWITHIN` distance. Nesting and operators are counted on the raw text before
//! `cql2`'s recursive parser sees it, and that parser runs on a stack of its own
//! ([`PARSE_STACK`]).

use cql2::Expr;
use geo::CoordsIter;
use geo_types::Geometry;

use super::{
    CmpOp, Filter, FilterError, Fold, InSet, LikePattern, Literal, Problem, Prop, SpatialOp,
};
use crate::model::{LayerDef, PropertyType};

/// Names the feature geometry answers to in a filter (besides none of the declared
/// properties): CQL2's usual `geometry`, and the GeoPackage column `geom`.
pub const GEOMETRY_NAMES: [&str; 2] = ["geometry", "geom"];

/// The `filter-lang` values accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterLang {
    Cql2Text,
    Cql2Json,
}

impl FilterLang {
    /// Parses `filter-lang`: `cql2-text` and `cql2-json`, and the draft names
    /// `cql-text` (which GDAL 3.6 sends) and `cql-json`.
    pub fn parse(value: &str) -> Result<FilterLang, FilterError> {
        match value {
            "cql2-text" | "cql-text" => Ok(FilterLang::Cql2Text),
            "cql2-json" | "cql-json" => Ok(FilterLang::Cql2Json),
            _ => Err(FilterError::new(
                "filter-lang",
                Problem::UnknownLanguage {
                    value: value.into(),
                },
            )),
        }
    }
}

/// What one filter may cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Longest filter, bytes.
    pub max_bytes: usize,
    /// Most expression nodes (operators, operands, list values).
    pub max_nodes: usize,
    /// Deepest nesting (parentheses in text, objects and arrays in JSON, operators).
    pub max_depth: usize,
    /// Most vertices of all literal geometries together.
    pub max_vertices: usize,
    /// Largest `S_DWITHIN` distance, metres.
    pub max_distance_m: f64,
    /// Whether literal geometries must be lon/lat degrees (CRS84). `false` when
    /// `filter-crs` names another CRS: then only finite coordinates are required here,
    /// and the caller transforms the literals (`Filter::try_map_geometries`) and checks
    /// the result with [`check_literal_geometry`].
    pub lonlat_literals: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 256 * 1024,
            max_nodes: 1_000,
            max_depth: 64,
            max_vertices: 10_000,
            max_distance_m: 50_000.0,
            lonlat_literals: true,
        }
    }
}

impl Filter {
    /// Parses CQL2 text (`filter-lang=cql2-text`) with the default [`Limits`].
    pub fn parse_text(text: &str, layer: &LayerDef) -> Result<Filter, FilterError> {
        parse_text(text, layer, &Limits::default()).map_err(|p| FilterError::new("filter", p))
    }

    /// Parses CQL2 JSON (`filter-lang=cql2-json`) with the default [`Limits`].
    pub fn parse_json(json: &str, layer: &LayerDef) -> Result<Filter, FilterError> {
        parse_json(json, layer, &Limits::default()).map_err(|p| FilterError::new("filter", p))
    }

    /// Parses an already decoded CQL2 JSON value with the default [`Limits`].
    pub fn parse_json_value(
        value: &serde_json::Value,
        layer: &LayerDef,
    ) -> Result<Filter, FilterError> {
        parse_json_value(value, layer, &Limits::default())
            .map_err(|p| FilterError::new("filter", p))
    }

    /// Parses the `filter` parameter in language `lang` under `limits`.
    pub fn parse(
        filter: &str,
        lang: FilterLang,
        layer: &LayerDef,
        limits: &Limits,
    ) -> Result<Filter, FilterError> {
        match lang {
            FilterLang::Cql2Text => parse_text(filter, layer, limits),
            FilterLang::Cql2Json => parse_json(filter, layer, limits),
        }
        .map_err(|p| FilterError::new("filter", p))
    }
}

fn parse_text(text: &str, layer: &LayerDef, limits: &Limits) -> Result<Filter, Problem> {
    check_size(text, limits)?;
    check_text_shape(text, limits)?;
    on_parse_stack(|| {
        let expr = cql2::parse_text(text).map_err(|e| text_error(text, e))?;
        Converter::new(layer, limits).filter(&expr, 0)
    })
}

fn parse_json(json: &str, layer: &LayerDef, limits: &Limits) -> Result<Filter, Problem> {
    check_size(json, limits)?;
    // serde_json refuses nesting beyond 128 levels itself; our own depth limit is
    // checked on the value.
    on_parse_stack(|| {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| Problem::JsonSyntax {
                line: e.line(),
                column: e.column(),
                message: strip_position(&e.to_string()),
            })?;
        parse_json_value(&value, layer, limits)
    })
}

fn parse_json_value(
    value: &serde_json::Value,
    layer: &LayerDef,
    limits: &Limits,
) -> Result<Filter, Problem> {
    check_json_shape(value, limits)?;
    on_parse_stack(|| {
        let expr: Expr =
            serde_json::from_value(value.clone()).map_err(|e| locate_json_error(value, &e))?;
        Converter::new(layer, limits).filter(&expr, 0)
    })
}

fn check_size(s: &str, limits: &Limits) -> Result<(), Problem> {
    if s.len() > limits.max_bytes {
        return Err(Problem::TooLarge {
            what: format!("{} bytes, at most {}", s.len(), limits.max_bytes),
        });
    }
    if s.trim().is_empty() {
        return Err(Problem::TextInvalid {
            message: "the filter is empty".into(),
        });
    }
    Ok(())
}

/// Stack given to `cql2`'s parser and to decoding JSON: both recurse once per nesting
/// level and per operator of a left-nested chain (`a AND b AND c …` nests before it is
/// flattened), with frames of a few kilobytes in debug builds, so a 2 MiB thread stack
/// overflows on 64 parentheses or 1,000 `AND`s. The text is checked first
/// ([`check_text_shape`]) so the depth is bounded, and the parse runs on a fresh stack
/// of this size (mapped lazily: only the pages used are committed). Measured in a
/// debug build: the worst accepted shapes (64 parentheses, 1,000 chained operators)
/// parse within 4 MiB, and overflow 1 MiB.
pub(super) const PARSE_STACK: usize = 16 << 20;

fn on_parse_stack<T>(f: impl FnOnce() -> T) -> T {
    stacker::grow(PARSE_STACK, f)
}

/// Bounds the work `cql2`'s recursive parser could do on `text`, before it runs:
/// parenthesis depth (plus runs of prefix `NOT`s) at most `max_depth`, and at most
/// `max_nodes` operators (`AND`, `OR`, `NOT`, `LIKE`, `IN`, `BETWEEN`, `IS`, and the
/// characters `= < > ! + - * / % ^`), counted outside quoted strings and outside the
/// coordinates of WKT geometries (which the grammar reads without recursion).
pub(super) fn check_text_shape(text: &str, limits: &Limits) -> Result<(), Problem> {
    const OPERATOR_WORDS: [&str; 7] = ["and", "or", "not", "like", "in", "between", "is"];
    const WKT_WORDS: [&str; 7] = [
        "point",
        "linestring",
        "polygon",
        "multipoint",
        "multilinestring",
        "multipolygon",
        "geometrycollection",
    ];
    let too_deep = |offset: usize| Problem::TooLarge {
        what: format!(
            "nested deeper than {} levels at character {offset}",
            limits.max_depth
        ),
    };
    let mut depth = 0usize;
    let mut nots = 0usize;
    let mut operators = 0usize;
    let mut quote: Option<char> = None;
    let mut word = String::new();
    // Inside a WKT geometry: the depth at which it closes.
    let mut wkt_until: Option<usize> = None;
    let mut wkt_pending = false;
    for (offset, c) in text.chars().enumerate() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_alphanumeric() || c == '_' || c == '.' || c == ':' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            let lower = word.to_lowercase();
            if wkt_until.is_none() {
                if OPERATOR_WORDS.contains(&lower.as_str()) {
                    operators += 1;
                }
                wkt_pending = WKT_WORDS.contains(&lower.as_str());
            }
            nots = if lower == "not" { nots + 1 } else { 0 };
            word.clear();
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '(' => {
                depth += 1;
                if wkt_pending && wkt_until.is_none() {
                    wkt_until = Some(depth - 1);
                }
                wkt_pending = false;
            }
            ')' => {
                depth = depth.saturating_sub(1);
                if wkt_until == Some(depth) {
                    wkt_until = None;
                }
            }
            '=' | '<' | '>' | '!' | '+' | '-' | '*' | '/' | '%' | '^' if wkt_until.is_none() => {
                operators += 1;
            }
            c if c.is_whitespace() => {}
            _ => wkt_pending = false,
        }
        if depth + nots > limits.max_depth {
            return Err(too_deep(offset));
        }
        if operators > limits.max_nodes {
            return Err(Problem::TooLarge {
                what: format!("more than {} operators", limits.max_nodes),
            });
        }
    }
    Ok(())
}

/// A `cql2` text error as a problem with its position.
fn text_error(text: &str, e: cql2::Error) -> Problem {
    match e {
        cql2::Error::Pest(p) => {
            let (line, column) = match p.line_col {
                pest::error::LineColLocation::Pos(lc) => lc,
                pest::error::LineColLocation::Span(lc, _) => lc,
            };
            let byte = match p.location {
                pest::error::InputLocation::Pos(b) => b,
                pest::error::InputLocation::Span((b, _)) => b,
            };
            let offset = text.get(..byte).map_or(0, |s| s.chars().count());
            Problem::TextSyntax {
                line,
                column,
                offset,
                expected: describe_pest(&p.variant, text, byte),
            }
        }
        other => Problem::TextInvalid {
            message: other.to_string(),
        },
    }
}

/// "expected …, found '…'" from pest's rule names, in words a user knows.
fn describe_pest(
    v: &pest::error::ErrorVariant<impl pest::RuleType>,
    text: &str,
    byte: usize,
) -> String {
    let found = match text.get(byte..).and_then(|s| s.split_whitespace().next()) {
        Some(tok) => format!("found '{}'", tok.chars().take(20).collect::<String>()),
        None => "found the end of the filter".into(),
    };
    match v {
        pest::error::ErrorVariant::ParsingError { positives, .. } if !positives.is_empty() => {
            let mut names: Vec<String> = positives
                .iter()
                .map(|r| rule_words(&format!("{r:?}")))
                .collect();
            names.sort();
            names.dedup();
            format!("expected {}; {found}", names.join(", "))
        }
        _ => format!("unexpected input; {found}"),
    }
}

/// Pest rule names of the `cql2` grammar in plain words.
fn rule_words(rule: &str) -> String {
    match rule {
        "Expr" | "ExprAtomValue" | "AtomicExpr" | "BetweenOperand" => "an expression".into(),
        "Identifier" => "a property name".into(),
        "SingleQuotedString" => "a quoted string".into(),
        "DECIMAL" | "Double" | "Integer" => "a number".into(),
        "EOI" => "the end of the filter".into(),
        "RPAREN" => "')'".into(),
        "And" => "AND".into(),
        "Or" => "OR".into(),
        other => {
            // Operator rules (Eq, Like, In, IsNullPostfix...) read as "an operator".
            if [
                "Eq",
                "NotEq",
                "Lt",
                "LtEq",
                "Gt",
                "GtEq",
                "Like",
                "In",
                "IsNullPostfix",
                "BetweenPostfix",
                "Add",
                "Subtract",
                "Multiply",
                "Divide",
                "Modulo",
                "Power",
            ]
            .contains(&other)
            {
                "an operator".into()
            } else {
                other.to_string()
            }
        }
    }
}

/// serde_json's message without its trailing "at line L column C".
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Refuses JSON nested deeper than the limit or with more values than a filter of
/// `max_nodes` nodes and `max_vertices` vertices could hold, without recursing.
fn check_json_shape(value: &serde_json::Value, limits: &Limits) -> Result<(), Problem> {
    let budget = limits.max_nodes * 4 + limits.max_vertices * 3;
    let mut stack = vec![(value, 0usize)];
    let mut seen = 0usize;
    while let Some((v, depth)) = stack.pop() {
        seen += 1;
        if seen > budget {
            return Err(Problem::TooLarge {
                what: format!("more than {budget} JSON values"),
            });
        }
        // Coordinates of a polygon sit 4 levels below their geometry object.
        if depth > limits.max_depth + 4 {
            return Err(Problem::TooLarge {
                what: format!("JSON nested deeper than {} levels", limits.max_depth),
            });
        }
        match v {
            serde_json::Value::Array(a) => stack.extend(a.iter().map(|c| (c, depth + 1))),
            serde_json::Value::Object(o) => stack.extend(o.values().map(|c| (c, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

/// Finds the innermost part of a JSON filter that is not a CQL2 expression (serde's
/// untagged enums only say that the whole does not fit), as a JSON pointer.
fn locate_json_error(value: &serde_json::Value, e: &serde_json::Error) -> Problem {
    fn fits(v: &serde_json::Value) -> bool {
        serde_json::from_value::<Expr>(v.clone()).is_ok()
    }
    let mut pointer = String::new();
    let mut here = value;
    'descend: loop {
        let children: Vec<(String, &serde_json::Value)> = match here {
            serde_json::Value::Object(o) => match o.get("args") {
                Some(serde_json::Value::Array(args)) => args
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (format!("/args/{i}"), a))
                    .collect(),
                _ => Vec::new(),
            },
            serde_json::Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("/{i}"), a))
                .collect(),
            _ => Vec::new(),
        };
        for (step, child) in children {
            if !fits(child) {
                pointer.push_str(&step);
                here = child;
                continue 'descend;
            }
        }
        break;
    }
    let shown: String = here.to_string().chars().take(120).collect();
    let message = if std::ptr::eq(here, value) {
        format!("{shown} ({})", strip_position(&e.to_string()))
    } else {
        format!("{shown} is neither an operation, a property, a literal nor a geometry")
    };
    Problem::JsonShape {
        pointer: if pointer.is_empty() {
            "/".into()
        } else {
            pointer
        },
        message,
    }
}

/// The expression rendered back as CQL2 text, for messages (at most 120 characters).
/// `cql2` renders by recursion, so a deeply nested expression (a long arithmetic
/// chain) is named by its operator only.
fn snippet(e: &Expr) -> String {
    if !shallow(e, 16) {
        return match e {
            Expr::Operation { op, .. } => {
                format!("{} … (nested too deep to show)", op.to_uppercase())
            }
            _ => "a deeply nested expression".into(),
        };
    }
    let text = e.to_text().unwrap_or_else(|_| format!("{e:?}"));
    let mut out: String = text.chars().take(120).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Whether `e` nests at most `limit` levels (checked without recursion).
fn shallow(e: &Expr, limit: usize) -> bool {
    let mut stack = vec![(e, 0usize)];
    while let Some((e, d)) = stack.pop() {
        if d > limit {
            return false;
        }
        match e {
            Expr::Operation { args, .. } => stack.extend(args.iter().map(|a| (a.as_ref(), d + 1))),
            Expr::Array(items)
            | Expr::BBox { bbox: items }
            | Expr::Interval { interval: items } => {
                stack.extend(items.iter().map(|a| (a.as_ref(), d + 1)))
            }
            Expr::Date { date: inner } | Expr::Timestamp { timestamp: inner } => {
                stack.push((inner.as_ref(), d + 1))
            }
            _ => {}
        }
    }
    true
}

/// What a name in a filter refers to.
#[derive(Clone, Copy, Debug)]
enum Target {
    Prop(Prop, PropertyType),
    Geometry,
}

/// An operand of a predicate: a property (possibly inside `CASEI`/`ACCENTI`) or a
/// literal expression.
enum Operand<'e> {
    Prop { name: &'e str, fold: Fold },
    Lit { expr: &'e Expr, fold: Fold },
}

/// The words for a property type in messages.
fn type_words(ty: PropertyType) -> &'static str {
    match ty {
        PropertyType::String => "a string",
        PropertyType::Integer => "an integer",
        PropertyType::Float => "a number",
        PropertyType::Boolean => "a boolean",
        PropertyType::Date => "a date",
        PropertyType::DateTime => "a timestamp",
    }
}

/// The words for a literal's kind in messages.
fn literal_words(e: &Expr) -> String {
    match e {
        Expr::Float(f) => format!("the number {f}"),
        Expr::Literal(s) => format!("the string '{s}'"),
        Expr::Bool(b) => format!("the boolean {b}"),
        Expr::Date { .. } => "a DATE".into(),
        Expr::Timestamp { .. } => "a TIMESTAMP".into(),
        Expr::Interval { .. } => "an INTERVAL".into(),
        Expr::Geometry(_) | Expr::BBox { .. } => "a geometry".into(),
        Expr::Array(_) => "a list".into(),
        Expr::Null => "NULL".into(),
        Expr::Property { .. } | Expr::Operation { .. } => "an expression".into(),
    }
}

const SUPPORTED: &str = "; supported: AND, OR, NOT, =, <>, <, <=, >, >=, LIKE, IN, BETWEEN, IS NULL, CASEI, ACCENTI, S_INTERSECTS, S_WITHIN, S_CONTAINS, S_DWITHIN";

struct Converter<'a> {
    layer: &'a LayerDef,
    limits: &'a Limits,
    nodes: usize,
    vertices: usize,
}

impl<'a> Converter<'a> {
    fn new(layer: &'a LayerDef, limits: &'a Limits) -> Self {
        Converter {
            layer,
            limits,
            nodes: 0,
            vertices: 0,
        }
    }

    /// Counts one node at `depth`, refusing past the limits.
    fn count(&mut self, depth: usize) -> Result<(), Problem> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(Problem::TooLarge {
                what: format!("more than {} expression nodes", self.limits.max_nodes),
            });
        }
        if depth > self.limits.max_depth {
            return Err(Problem::TooLarge {
                what: format!("nested deeper than {} levels", self.limits.max_depth),
            });
        }
        Ok(())
    }

    fn queryables(&self) -> String {
        let mut names = vec![self.layer.id_property.clone()];
        names.extend(self.layer.properties.iter().map(|p| p.name.clone()));
        names.push(GEOMETRY_NAMES[0].into());
        names.join(", ")
    }

    fn resolve(&self, name: &str) -> Result<Target, Problem> {
        if let Some((i, p)) = self.layer.property(name) {
            return Ok(Target::Prop(Prop::Declared(i), p.ty));
        }
        if name == self.layer.id_property {
            return Ok(Target::Prop(Prop::Id, PropertyType::String));
        }
        if GEOMETRY_NAMES.contains(&name) {
            return Ok(Target::Geometry);
        }
        Err(Problem::UnknownProperty {
            name: name.into(),
            queryables: self.queryables(),
        })
    }

    /// A boolean expression.
    fn filter(&mut self, e: &Expr, depth: usize) -> Result<Filter, Problem> {
        self.count(depth)?;
        match e {
            Expr::Bool(b) => Ok(Filter::Const(*b)),
            Expr::Operation { op, args } => self.operation(op, args, e, depth),
            Expr::Property { property } => match self.resolve(property)? {
                Target::Prop(prop, PropertyType::Boolean) => Ok(Filter::Compare {
                    prop,
                    op: CmpOp::Eq,
                    value: Literal::Bool(true),
                    fold: Fold::NONE,
                }),
                _ => Err(Problem::Invalid {
                    message: format!(
                        "property '{property}' is not a boolean, so it is not a condition by itself"
                    ),
                    at: snippet(e),
                }),
            },
            other => Err(Problem::Invalid {
                message: format!("{} is not a condition", literal_words(other)),
                at: snippet(e),
            }),
        }
    }

    fn arity(&self, op: &str, args: &[Box<Expr>], n: usize, whole: &Expr) -> Result<(), Problem> {
        if args.len() == n {
            Ok(())
        } else {
            Err(Problem::Invalid {
                message: format!(
                    "{} takes {n} arguments, found {}",
                    op.to_uppercase(),
                    args.len()
                ),
                at: snippet(whole),
            })
        }
    }

    fn operation(
        &mut self,
        op: &str,
        args: &[Box<Expr>],
        whole: &Expr,
        depth: usize,
    ) -> Result<Filter, Problem> {
        let lower = op.to_ascii_lowercase();
        match lower.as_str() {
            "and" | "or" => {
                if args.is_empty() {
                    return Err(Problem::Invalid {
                        message: format!("{} needs arguments", op.to_uppercase()),
                        at: snippet(whole),
                    });
                }
                let children = args
                    .iter()
                    .map(|a| self.filter(a, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if lower == "and" {
                    Filter::And(children)
                } else {
                    Filter::Or(children)
                })
            }
            "not" => {
                self.arity(op, args, 1, whole)?;
                Ok(Filter::Not(Box::new(self.filter(&args[0], depth + 1)?)))
            }
            "=" | "<>" | "<" | "<=" | ">" | ">=" => {
                let cmp = match lower.as_str() {
                    "=" => CmpOp::Eq,
                    "<>" => CmpOp::Ne,
                    "<" => CmpOp::Lt,
                    "<=" => CmpOp::Le,
                    ">" => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                self.arity(op, args, 2, whole)?;
                self.comparison(cmp, &args[0], &args[1], whole, depth)
            }
            "like" => {
                self.arity(op, args, 2, whole)?;
                self.like(&args[0], &args[1], whole, depth)
            }
            "in" => {
                self.arity(op, args, 2, whole)?;
                self.in_list(&args[0], &args[1], whole, depth)
            }
            "between" => {
                self.arity(op, args, 3, whole)?;
                self.between(args, whole, depth)
            }
            "isnull" => {
                self.arity(op, args, 1, whole)?;
                match self.operand(&args[0], whole, depth)? {
                    Operand::Prop { name, fold } if fold.is_none() => match self.resolve(name)? {
                        Target::Prop(prop, _) => Ok(Filter::IsNull { prop }),
                        // Stored geometries are never null.
                        Target::Geometry => Ok(Filter::Const(false)),
                    },
                    _ => Err(Problem::Unsupported {
                        what: "IS NULL on anything but a property".into(),
                        at: snippet(whole),
                        hint: String::new(),
                    }),
                }
            }
            "s_intersects" | "s_within" | "s_contains" => {
                self.arity(op, args, 2, whole)?;
                let sop = match lower.as_str() {
                    "s_intersects" => SpatialOp::Intersects,
                    "s_within" => SpatialOp::Within,
                    _ => SpatialOp::Contains,
                };
                let (geometry, swapped) =
                    self.spatial_args(op, &args[0], &args[1], whole, depth)?;
                let op = match (sop, swapped) {
                    // S_WITHIN(literal, geometry): the literal lies within the feature.
                    (SpatialOp::Within, true) => SpatialOp::Contains,
                    (SpatialOp::Contains, true) => SpatialOp::Within,
                    (op, _) => op,
                };
                Ok(Filter::Spatial { op, geometry })
            }
            "s_dwithin" | "dwithin" => self.dwithin(op, args, whole, depth),
            "casei" | "accenti" => Err(Problem::Invalid {
                message: format!("{} gives text, not a condition", op.to_uppercase()),
                at: snippet(whole),
            }),
            _ => Err(Problem::Unsupported {
                what: describe_op(op),
                at: snippet(whole),
                hint: SUPPORTED.into(),
            }),
        }
    }

    /// Unwraps `CASEI`/`ACCENTI` and classifies an operand.
    fn operand<'e>(
        &mut self,
        e: &'e Expr,
        whole: &Expr,
        depth: usize,
    ) -> Result<Operand<'e>, Problem> {
        self.count(depth + 1)?;
        match e {
            Expr::Property { property } => Ok(Operand::Prop {
                name: property,
                fold: Fold::NONE,
            }),
            Expr::Operation { op, args } if op == "casei" || op == "accenti" => {
                self.arity(op, args, 1, whole)?;
                let inner = self.operand(&args[0], whole, depth + 1)?;
                let add = |f: Fold| Fold {
                    case: f.case || op == "casei",
                    accent: f.accent || op == "accenti",
                };
                Ok(match inner {
                    Operand::Prop { name, fold } => Operand::Prop {
                        name,
                        fold: add(fold),
                    },
                    Operand::Lit { expr, fold } => Operand::Lit {
                        expr,
                        fold: add(fold),
                    },
                })
            }
            Expr::Operation { op, .. } => Err(Problem::Unsupported {
                what: describe_op(op),
                at: snippet(whole),
                hint: "; operands are properties and literals".into(),
            }),
            _ => Ok(Operand::Lit {
                expr: e,
                fold: Fold::NONE,
            }),
        }
    }

    /// A property that is not the geometry, with its type.
    fn scalar_prop(&self, name: &str, whole: &Expr) -> Result<(Prop, PropertyType), Problem> {
        match self.resolve(name)? {
            Target::Prop(p, ty) => Ok((p, ty)),
            Target::Geometry => Err(Problem::Invalid {
                message: format!(
                    "'{name}' is the geometry, which only S_INTERSECTS, S_WITHIN, S_CONTAINS and S_DWITHIN take"
                ),
                at: snippet(whole),
            }),
        }
    }

    /// Refuses a fold on a property that is not text.
    fn check_fold(
        &self,
        name: &str,
        ty: PropertyType,
        fold: Fold,
        whole: &Expr,
    ) -> Result<(), Problem> {
        if !fold.is_none() && ty != PropertyType::String {
            return Err(Problem::Invalid {
                message: format!(
                    "CASEI and ACCENTI apply to text, and '{name}' is {}",
                    type_words(ty)
                ),
                at: snippet(whole),
            });
        }
        Ok(())
    }

    fn comparison(
        &mut self,
        op: CmpOp,
        left: &Expr,
        right: &Expr,
        whole: &Expr,
        depth: usize,
    ) -> Result<Filter, Problem> {
        let l = self.operand(left, whole, depth)?;
        let r = self.operand(right, whole, depth)?;
        let (name, pfold, lit, lfold, op) = match (l, r) {
            (Operand::Prop { name, fold }, Operand::Lit { expr, fold: lf }) => {
                (name, fold, expr, lf, op)
            }
            (Operand::Lit { expr, fold: lf }, Operand::Prop { name, fold }) => {
                (name, fold, expr, lf, op.flipped())
            }
            (Operand::Prop { .. }, Operand::Prop { .. }) => {
                return Err(Problem::Unsupported {
                    what: "comparing two properties".into(),
                    at: snippet(whole),
                    hint: "; compare a property with a literal".into(),
                });
            }
            (Operand::Lit { expr: a, .. }, Operand::Lit { expr: b, .. }) => {
                return constant_comparison(op, a, b).ok_or_else(|| Problem::Invalid {
                    message: "a comparison needs a property, or two literals of one kind".into(),
                    at: snippet(whole),
                });
            }
        };
        let (prop, ty) = self.scalar_prop(name, whole)?;
        self.check_fold(name, ty, pfold, whole)?;
        if ty == PropertyType::Boolean && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            return Err(Problem::Invalid {
                message: format!("'{name}' is a boolean, compared only with = and <>"),
                at: snippet(whole),
            });
        }
        let value = self.literal(name, ty, lit, lfold, whole)?;
        Ok(Filter::Compare {
            prop,
            op,
            value,
            fold: pfold,
        })
    }

    /// A literal coerced to property `name`'s type (see the module's table).
    fn literal(
        &self,
        name: &str,
        ty: PropertyType,
        e: &Expr,
        fold: Fold,
        whole: &Expr,
    ) -> Result<Literal, Problem> {
        let mismatch = || Problem::TypeMismatch {
            property: name.into(),
            expected: type_words(ty),
            found: literal_words(e),
            at: snippet(whole),
        };
        let invalid = |message: String| Problem::Invalid {
            message,
            at: snippet(whole),
        };
        if !(fold.is_none() || (ty == PropertyType::String && matches!(e, Expr::Literal(_)))) {
            return Err(invalid(format!(
                "CASEI and ACCENTI apply to text, and '{name}' is {}",
                type_words(ty)
            )));
        }
        match (ty, e) {
            (_, Expr::Null) => Err(invalid(format!(
                "nothing compares with NULL; write {name} IS NULL"
            ))),
            (PropertyType::Integer | PropertyType::Float, Expr::Float(f)) => {
                if !f.is_finite() {
                    return Err(invalid(format!("the number {f} is out of range")));
                }
                // Integral values within i64 compare exactly as integers.
                if ty == PropertyType::Integer && f.fract() == 0.0 && f.abs() < 9.2e18 {
                    Ok(Literal::Int(*f as i64))
                } else {
                    Ok(Literal::Float(*f))
                }
            }
            (PropertyType::String, Expr::Literal(s)) => {
                Ok(Literal::Text(fold.apply(s).into_owned()))
            }
            (PropertyType::Boolean, Expr::Bool(b)) => Ok(Literal::Bool(*b)),
            (PropertyType::Date, Expr::Literal(s)) => {
                date_literal(s).map(Literal::Text).map_err(invalid)
            }
            (PropertyType::Date, Expr::Date { date }) => match date.as_ref() {
                Expr::Literal(s) => date_literal(s).map(Literal::Text).map_err(invalid),
                _ => Err(mismatch()),
            },
            (PropertyType::DateTime, Expr::Literal(s)) => {
                datetime_literal(s).map(Literal::Text).map_err(invalid)
            }
            (PropertyType::DateTime, Expr::Timestamp { timestamp }) => match timestamp.as_ref() {
                Expr::Literal(s) => datetime_literal(s).map(Literal::Text).map_err(invalid),
                _ => Err(mismatch()),
            },
            _ => Err(mismatch()),
        }
    }

    fn like(
        &mut self,
        left: &Expr,
        right: &Expr,
        whole: &Expr,
        depth: usize,
    ) -> Result<Filter, Problem> {
        let (Operand::Prop { name, fold }, Operand::Lit { expr, fold: pfold }) = (
            self.operand(left, whole, depth)?,
            self.operand(right, whole, depth)?,
        ) else {
            return Err(Problem::Unsupported {
                what: "LIKE other than property LIKE 'pattern'".into(),
                at: snippet(whole),
                hint: String::new(),
            });
        };
        let (prop, ty) = self.scalar_prop(name, whole)?;
        if ty != PropertyType::String {
            return Err(Problem::TypeMismatch {
                property: name.into(),
                expected: type_words(ty),
                found: "a LIKE pattern (LIKE applies to text)".into(),
                at: snippet(whole),
            });
        }
        let Expr::Literal(p) = expr else {
            return Err(Problem::Invalid {
                message: format!(
                    "a LIKE pattern is a quoted string, not {}",
                    literal_words(expr)
                ),
                at: snippet(whole),
            });
        };
        let pattern = LikePattern::new(p, pfold).map_err(|e| Problem::Invalid {
            message: e.0,
            at: snippet(whole),
        })?;
        Ok(Filter::Like {
            prop,
            pattern,
            fold,
        })
    }

    fn in_list(
        &mut self,
        left: &Expr,
        right: &Expr,
        whole: &Expr,
        depth: usize,
    ) -> Result<Filter, Problem> {
        let Operand::Prop { name, fold } = self.operand(left, whole, depth)? else {
            return Err(Problem::Unsupported {
                what: "IN other than property IN (literals)".into(),
                at: snippet(whole),
                hint: String::new(),
            });
        };
        let (prop, ty) = self.scalar_prop(name, whole)?;
        self.check_fold(name, ty, fold, whole)?;
        let Expr::Array(items) = right else {
            return Err(Problem::Invalid {
                message: "IN takes a list of literals".into(),
                at: snippet(whole),
            });
        };
        if items.is_empty() {
            return Err(Problem::Invalid {
                message: "IN needs at least one value".into(),
                at: snippet(whole),
            });
        }
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            let Operand::Lit { expr, fold: lfold } = self.operand(item, whole, depth)? else {
                return Err(Problem::Unsupported {
                    what: "a property inside an IN list".into(),
                    at: snippet(whole),
                    hint: String::new(),
                });
            };
            let v = self.literal(name, ty, expr, lfold, whole)?;
            if !values.contains(&v) {
                values.push(v);
            }
        }
        Ok(Filter::In {
            prop,
            set: InSet::new(values),
            fold,
        })
    }

    fn between(
        &mut self,
        args: &[Box<Expr>],
        whole: &Expr,
        depth: usize,
    ) -> Result<Filter, Problem> {
        let ops = [
            self.operand(&args[0], whole, depth)?,
            self.operand(&args[1], whole, depth)?,
            self.operand(&args[2], whole, depth)?,
        ];
        let [
            Operand::Prop { name, fold },
            Operand::Lit { expr: lo, fold: lf },
            Operand::Lit { expr: hi, fold: hf },
        ] = ops
        else {
            return Err(Problem::Unsupported {
                what: "BETWEEN other than property BETWEEN literal AND literal".into(),
                at: snippet(whole),
                hint: String::new(),
            });
        };
        if !(fold.is_none() && lf.is_none() && hf.is_none()) {
            return Err(Problem::Unsupported {
                what: "CASEI or ACCENTI with BETWEEN".into(),
                at: snippet(whole),
                hint: "; they work with =, <>, <, <=, >, >=, LIKE and IN".into(),
            });
        }
        let (prop, ty) = self.scalar_prop(name, whole)?;
        if ty == PropertyType::Boolean {
            return Err(Problem::Invalid {
                message: format!("'{name}' is a boolean, which has no BETWEEN"),
                at: snippet(whole),
            });
        }
        Ok(Filter::Between {
            prop,
            low: self.literal(name, ty, lo, Fold::NONE, whole)?,
            high: self.literal(name, ty, hi, Fold::NONE, whole)?,
        })
    }

    /// The literal geometry of a spatial predicate and whether it came first.
    fn spatial_args(
        &mut self,
        op: &str,
        a: &Expr,
        b: &Expr,
        whole: &Expr,
        depth: usize,
    ) -> Result<(Geometry, bool), Problem> {
        self.count(depth + 1)?;
        self.count(depth + 1)?;
        let is_geom_prop = |s: &Self, e: &Expr| -> Result<bool, Problem> {
            match e {
                Expr::Property { property } => match s.resolve(property)? {
                    Target::Geometry => Ok(true),
                    Target::Prop(_, ty) => Err(Problem::TypeMismatch {
                        property: property.clone(),
                        expected: type_words(ty),
                        found: format!("a geometry in {}", op.to_uppercase()),
                        at: snippet(whole),
                    }),
                },
                _ => Ok(false),
            }
        };
        let (lit, swapped) = match (is_geom_prop(self, a)?, is_geom_prop(self, b)?) {
            (true, false) => (b, false),
            (false, true) => (a, true),
            (true, true) => {
                return Err(Problem::Invalid {
                    message: format!(
                        "{} compares the geometry with a literal geometry, not with itself",
                        op.to_uppercase()
                    ),
                    at: snippet(whole),
                });
            }
            (false, false) => {
                return Err(Problem::Invalid {
                    message: format!(
                        "{} needs the property '{}' as one argument",
                        op.to_uppercase(),
                        GEOMETRY_NAMES[0]
                    ),
                    at: snippet(whole),
                });
            }
        };
        let g = self.geometry_literal(lit, whole)?;
        Ok((g, swapped))
    }

    fn geometry_literal(&mut self, e: &Expr, whole: &Expr) -> Result<Geometry, Problem> {
        if !matches!(e, Expr::Geometry(_) | Expr::BBox { .. }) {
            return Err(Problem::Invalid {
                message: format!(
                    "expected a geometry (WKT in text, GeoJSON in JSON, or BBOX(...)), found {}",
                    literal_words(e)
                ),
                at: snippet(whole),
            });
        }
        let g = Geometry::try_from(e.clone()).map_err(|err| Problem::Invalid {
            message: format!("the geometry is not readable: {err}"),
            at: snippet(whole),
        })?;
        self.vertices += g.coords_count();
        if self.vertices > self.limits.max_vertices {
            return Err(Problem::TooLarge {
                what: format!(
                    "literal geometries with more than {} vertices",
                    self.limits.max_vertices
                ),
            });
        }
        let checked = if self.limits.lonlat_literals {
            check_literal_geometry(&g)
        } else if g.coords_iter().all(|c| c.x.is_finite() && c.y.is_finite()) {
            Ok(())
        } else {
            Err("the geometry has a coordinate that is not a finite number".into())
        };
        checked.map_err(|message| Problem::Invalid {
            message,
            at: snippet(whole),
        })?;
        Ok(g)
    }

    fn dwithin(
        &mut self,
        op: &str,
        args: &[Box<Expr>],
        whole: &Expr,
        depth: usize,
    ) -> Result<Filter, Problem> {
        if !(args.len() == 3 || args.len() == 4) {
            return Err(Problem::Invalid {
                message: format!(
                    "S_DWITHIN takes (geometry, literal geometry, distance, units), found {} arguments",
                    args.len()
                ),
                at: snippet(whole),
            });
        }
        let (geometry, _) = self.spatial_args(op, &args[0], &args[1], whole, depth)?;
        self.count(depth + 1)?;
        let Expr::Float(d) = args[2].as_ref() else {
            return Err(Problem::Invalid {
                message: format!(
                    "the S_DWITHIN distance is a number, not {}",
                    literal_words(&args[2])
                ),
                at: snippet(whole),
            });
        };
        // Units: a bare word in text reads as a property name, a string in JSON.
        let scale = match args.get(3).map(|u| u.as_ref()) {
            None => 1.0,
            Some(Expr::Property { property: u }) | Some(Expr::Literal(u)) => {
                match u.to_ascii_lowercase().as_str() {
                    "m" | "meter" | "meters" | "metre" | "metres" => 1.0,
                    "km" | "kilometer" | "kilometers" | "kilometre" | "kilometres" => 1000.0,
                    other => {
                        return Err(Problem::Unsupported {
                            what: format!("distance unit '{other}'"),
                            at: snippet(whole),
                            hint: "; use meters (m) or kilometers (km)".into(),
                        });
                    }
                }
            }
            Some(other) => {
                return Err(Problem::Invalid {
                    message: format!(
                        "the S_DWITHIN unit is a word such as meters, not {}",
                        literal_words(other)
                    ),
                    at: snippet(whole),
                });
            }
        };
        let distance_m = d * scale;
        if !(distance_m.is_finite() && distance_m >= 0.0) {
            return Err(Problem::Invalid {
                message: format!("the S_DWITHIN distance {d} is not a finite number ≥ 0"),
                at: snippet(whole),
            });
        }
        if distance_m > self.limits.max_distance_m {
            return Err(Problem::TooLarge {
                what: format!(
                    "S_DWITHIN distance {distance_m} m is above the {} m cap",
                    self.limits.max_distance_m
                ),
            });
        }
        Ok(Filter::DWithin {
            geometry,
            distance_m,
        })
    }
}

/// A literal geometry must be non-empty with finite WGS84 coordinates.
pub fn check_literal_geometry(g: &Geometry) -> Result<(), String> {
    let mut any = false;
    for c in g.coords_iter() {
        any = true;
        if !(c.x.is_finite() && c.y.is_finite()) {
            return Err("the geometry has a coordinate that is not a finite number".into());
        }
        if !(-180.0..=180.0).contains(&c.x) || !(-90.0..=90.0).contains(&c.y) {
            return Err(format!(
                "the geometry has the coordinate ({}, {}), outside lon/lat degrees (CRS84: longitude first)",
                c.x, c.y
            ));
        }
    }
    if any {
        Ok(())
    } else {
        Err("the geometry is empty".into())
    }
}

/// A comparison of two literals of one kind, folded to a constant.
fn constant_comparison(op: CmpOp, a: &Expr, b: &Expr) -> Option<Filter> {
    let ord = match (a, b) {
        (Expr::Float(x), Expr::Float(y)) => x.partial_cmp(y)?,
        (Expr::Literal(x), Expr::Literal(y)) => x.cmp(y),
        (Expr::Bool(x), Expr::Bool(y)) => x.cmp(y),
        _ => return None,
    };
    Some(Filter::Const(op.holds(ord)))
}

/// Names an operator we do not evaluate, with its family.
fn describe_op(op: &str) -> String {
    let lower = op.to_ascii_lowercase();
    let family = if lower.starts_with("s_") {
        "the spatial function"
    } else if lower.starts_with("t_") {
        "the temporal function"
    } else if lower.starts_with("a_") {
        "the array function"
    } else if ["+", "-", "*", "/", "%", "^", "div"].contains(&lower.as_str()) {
        "the arithmetic operator"
    } else {
        "the function"
    };
    format!("{family} {}", op.to_uppercase())
}

/// A date literal in stored form, `YYYY-MM-DD` (GDAL 3.6 writes `YYYY-MM-DDT`).
fn date_literal(s: &str) -> Result<String, String> {
    let d = s.strip_suffix('T').unwrap_or(s);
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(d, format)
        .map(|_| d.to_string())
        .map_err(|_| format!("'{s}' is not a date (YYYY-MM-DD)"))
}

/// A timestamp literal in stored form (`YYYY-MM-DDTHH:MM:SS.SSSZ`, UTC); a date alone is
/// its midnight UTC.
fn datetime_literal(s: &str) -> Result<String, String> {
    if let Ok(d) = date_literal(s) {
        return Ok(format!("{d}T00:00:00.000Z"));
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("'{s}' is not an RFC 3339 timestamp (2024-05-01T08:30:00+08:00)"))?;
    if t.nanosecond() % 1_000_000 != 0 {
        return Err(format!(
            "'{s}' is finer than a millisecond, the precision timestamps are stored with"
        ));
    }
    crate::model::layer::normalise_datetime(s)
}
