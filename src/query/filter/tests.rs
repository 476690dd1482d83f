//! Oracle tests: random filters, written as CQL2 text and as CQL2 JSON, parsed and
//! evaluated over seeded random rows, must agree with a direct evaluation of the
//! generated expression written here independently (three-valued logic, timestamps
//! compared as instants, LIKE by dynamic programming, spatial predicates through geo's
//! DE-9IM `relate` rather than the `Intersects`/`Contains` traits the filter uses).
//!
//! `S_DWITHIN` needs a geodesic distance; the real one is written elsewhere
//! (`query::geodesic`), so these tests use a stand-in: Karney's geodesic (geo's
//! `Geodesic`) between the closest pair of vertices, 0 when the geometries meet. It is
//! exact for point layers and an upper bound otherwise; both sides here use it, so the
//! tests check the filter's logic, not the distance.

use geo::{BoundingRect, CoordsIter, Distance, Geodesic, Intersects, Relate};
use geo_types::{Coord, Geometry, LineString, Point, Polygon, Rect};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value as J, json};

use super::*;
use crate::index::GeomRef;
use crate::model::{
    GeometryType, LayerDef, LayerKind, PropertyDef, PropertyType, TileSettings, UnknownProperties,
    Value,
};

// ---------------------------------------------------------------------------------
// The test layer and its rows

const NAMES: [&str; 5] = ["alpha", "beta", "Gamma", "délta", "桥梁"];
const NOTE_CHARS: [char; 6] = ['a', 'b', 'A', '%', '_', 'É'];

fn prop(name: &str, ty: PropertyType) -> PropertyDef {
    PropertyDef {
        name: name.into(),
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

pub(super) fn layer() -> LayerDef {
    let mut name = prop("name", PropertyType::String);
    name.values = Some(NAMES.iter().map(|s| s.to_string()).collect());
    name.title = Some("Name".into());
    let mut height = prop("height", PropertyType::Integer);
    height.min = Some(0.0);
    height.max = Some(100.0);
    let mut note = prop("note", PropertyType::String);
    note.max_length = Some(40);
    LayerDef {
        name: "sites".into(),
        title: "Sites".into(),
        description: String::new(),
        kind: LayerKind::Reference,
        geometry: GeometryType::Point,
        id_property: "code".into(),
        properties: vec![
            name,
            note,
            height,
            prop("depth", PropertyType::Float),
            prop("active", PropertyType::Boolean),
            prop("built", PropertyType::Date),
            prop("seen", PropertyType::DateTime),
        ],
        minzoom: 0,
        maxzoom: 22,
        unknown_properties: UnknownProperties::Reject,
        tiles: TileSettings::default(),
        max_vertices: 1000,
        uploaded: false,
    }
}

/// Property numbers in [`layer`].
const NAME: usize = 0;
const NOTE: usize = 1;
const HEIGHT: usize = 2;
const DEPTH: usize = 3;
const ACTIVE: usize = 4;
const BUILT: usize = 5;
const SEEN: usize = 6;

#[derive(Clone, Debug)]
pub(super) struct TestRow {
    pub id: String,
    pub values: Vec<Value>,
    pub geometry: Geometry,
}

impl Row for TestRow {
    fn id(&self) -> &str {
        &self.id
    }
    fn value(&self, prop: usize) -> ValueRef<'_> {
        self.values[prop].as_ref()
    }
    fn geometry(&self) -> GeomRef<'_> {
        match &self.geometry {
            Geometry::Point(p) => GeomRef::Point(p.0),
            g => GeomRef::Shape(g),
        }
    }
}

/// The area rows and literals live in, WGS84 degrees.
const LON: (f64, f64) = (106.40, 106.60);
const LAT: (f64, f64) = (29.45, 29.60);

fn day(k: i64) -> String {
    let d = time::macros::date!(2024 - 01 - 01) + time::Duration::days(k);
    d.to_string()
}

/// Instant `k` half-hours after 2024-01-01T00:00Z, in the stored form.
fn instant(k: i64) -> time::OffsetDateTime {
    time::macros::datetime!(2024-01-01 0:00 UTC) + time::Duration::minutes(30 * k)
}

fn stored_instant(k: i64) -> String {
    crate::model::layer::normalise_datetime(
        &instant(k)
            .format(&time::format_description::well_known::Rfc3339)
            .expect("formats"),
    )
    .expect("normalises")
}

fn random_geometry(rng: &mut ChaCha8Rng) -> Geometry {
    let x = rng.random_range(LON.0..LON.1);
    let y = rng.random_range(LAT.0..LAT.1);
    match rng.random_range(0..4) {
        0 | 1 => Point::new(x, y).into(),
        2 => {
            let n = rng.random_range(2..5);
            let mut c = vec![Coord { x, y }];
            for _ in 1..n {
                let last = c[c.len() - 1];
                c.push(Coord {
                    x: last.x + rng.random_range(-0.02..0.02),
                    y: last.y + rng.random_range(-0.02..0.02),
                });
            }
            LineString(c).into()
        }
        _ => {
            let w = rng.random_range(0.005..0.06);
            let h = rng.random_range(0.005..0.06);
            Rect::new(Coord { x, y }, Coord { x: x + w, y: y + h })
                .to_polygon()
                .into()
        }
    }
}

pub(super) fn rows(n: usize, seed: u64) -> Vec<TestRow> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let maybe = |v: Value, rng: &mut ChaCha8Rng| {
                if rng.random_bool(0.15) {
                    Value::Null
                } else {
                    v
                }
            };
            let name = Value::Text(NAMES[rng.random_range(0..NAMES.len())].into());
            let note_len = rng.random_range(0..5);
            let note = Value::Text(
                (0..note_len)
                    .map(|_| NOTE_CHARS[rng.random_range(0..NOTE_CHARS.len())])
                    .collect(),
            );
            let height = Value::Int(rng.random_range(0..20));
            let depth = Value::Float(rng.random_range(-4..20) as f64 * 0.5);
            let active = Value::Bool(rng.random_bool(0.5));
            let built = Value::Text(day(rng.random_range(0..20)));
            let seen = Value::Text(stored_instant(rng.random_range(0..20)));
            let values = vec![
                maybe(name, &mut rng),
                maybe(note, &mut rng),
                maybe(height, &mut rng),
                maybe(depth, &mut rng),
                maybe(active, &mut rng),
                maybe(built, &mut rng),
                maybe(seen, &mut rng),
            ];
            TestRow {
                id: format!("F{i:03}"),
                values,
                geometry: random_geometry(&mut rng),
            }
        })
        .collect()
}

/// The stand-in geodesic distance (see the module comment).
pub(super) fn vertex_distance(a: &Geometry, b: &Geometry) -> f64 {
    if a.intersects(b) {
        return 0.0;
    }
    let mut best = f64::INFINITY;
    for p in a.coords_iter() {
        for q in b.coords_iter() {
            best = best.min(Geodesic.distance(Point(p), Point(q)));
        }
    }
    best
}

/// Boxes covering every point within `d` metres (geodesic) of `g`'s box: degrees of
/// latitude are at least 110,574 m, of longitude at least 111,320·cos(lat) m; 2 %
/// margin.
pub(super) fn expand(g: &Geometry, d: f64) -> Vec<Rect> {
    let Some(r) = g.bounding_rect() else {
        return Vec::new();
    };
    let dlat = d / 110_574.0 * 1.02;
    let max_lat = (r.max().y.abs().max(r.min().y.abs()) + dlat).min(89.0);
    let dlon = d / (111_320.0 * max_lat.to_radians().cos()) * 1.02;
    vec![Rect::new(
        Coord {
            x: r.min().x - dlon,
            y: r.min().y - dlat,
        },
        Coord {
            x: r.max().x + dlon,
            y: r.max().y + dlat,
        },
    )]
}

fn ctx() -> EvalContext<'static> {
    EvalContext {
        within_m: &|a, b, d| vertex_distance(a, b) <= d,
        // A test's few evaluations never come near any budget; leaked, one per call.
        budget: Box::leak(Box::new(crate::query::Budget::new(u64::MAX))),
    }
}

// ---------------------------------------------------------------------------------
// Generated filters, their two spellings, and the oracle

#[derive(Clone, Debug)]
enum L {
    Str(String),
    Int(i64),
    Num(f64),
    Bool(bool),
    /// A date, written `DATE('…')` (or plain in text when `plain`).
    Date(String, bool),
    /// Instant number `k` (see [`instant`]), written with an offset of `off` hours.
    Ts(i64, i32),
}

#[derive(Clone, Debug)]
enum G {
    Const(bool),
    And(Vec<G>),
    Or(Vec<G>),
    Not(Box<G>),
    Cmp {
        prop: &'static str,
        op: &'static str,
        lit: L,
        flipped: bool,
        casei: bool,
    },
    Like {
        prop: &'static str,
        pattern: String,
        casei: bool,
        negated: bool,
    },
    In {
        prop: &'static str,
        lits: Vec<L>,
        negated: bool,
    },
    Between {
        prop: &'static str,
        lo: L,
        hi: L,
        negated: bool,
    },
    IsNull {
        prop: &'static str,
        negated: bool,
    },
    Spatial {
        op: &'static str,
        geometry: Geometry,
        swapped: bool,
        geom_name: &'static str,
    },
    DWithin {
        point: Point,
        distance: f64,
        km: bool,
    },
}

fn lit_text(l: &L) -> String {
    match l {
        L::Str(s) => format!("'{}'", s.replace('\'', "''")),
        L::Int(i) => i.to_string(),
        L::Num(f) => format!("{f:?}"),
        L::Bool(b) => if *b { "TRUE" } else { "false" }.into(),
        L::Date(d, true) => format!("'{d}'"),
        L::Date(d, false) => format!("DATE('{d}')"),
        L::Ts(k, off) => format!("TIMESTAMP('{}')", ts_literal(*k, *off)),
    }
}

fn ts_literal(k: i64, off: i32) -> String {
    let offset = time::UtcOffset::from_hms(off as i8, 0, 0).expect("offset");
    instant(k)
        .to_offset(offset)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

fn lit_json(l: &L) -> J {
    match l {
        L::Str(s) => json!(s),
        L::Int(i) => json!(i),
        L::Num(f) => json!(f),
        L::Bool(b) => json!(b),
        L::Date(d, _) => json!({ "date": d }),
        L::Ts(k, off) => json!({ "timestamp": ts_literal(*k, *off) }),
    }
}

fn wkt(g: &Geometry) -> String {
    let pts = |c: &mut dyn Iterator<Item = Coord>| {
        c.map(|c| format!("{:?} {:?}", c.x, c.y))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match g {
        Geometry::Point(p) => format!("POINT({:?} {:?})", p.x(), p.y()),
        Geometry::LineString(l) => format!("LINESTRING({})", pts(&mut l.0.iter().copied())),
        Geometry::Polygon(p) => format!("POLYGON(({}))", pts(&mut p.exterior().0.iter().copied())),
        other => panic!("no WKT writer for {other:?} in the tests"),
    }
}

fn geojson(g: &Geometry) -> J {
    let pts = |l: &LineString| l.0.iter().map(|c| json!([c.x, c.y])).collect::<Vec<_>>();
    match g {
        Geometry::Point(p) => json!({"type": "Point", "coordinates": [p.x(), p.y()]}),
        Geometry::LineString(l) => json!({"type": "LineString", "coordinates": pts(l)}),
        Geometry::Polygon(p) => json!({"type": "Polygon", "coordinates": [pts(p.exterior())]}),
        other => panic!("no GeoJSON writer for {other:?} in the tests"),
    }
}

fn quoted(p: &str, quote: bool) -> String {
    if quote { format!("\"{p}\"") } else { p.into() }
}

fn text(g: &G) -> String {
    match g {
        G::Const(b) => if *b { "TRUE" } else { "FALSE" }.into(),
        G::And(c) => c
            .iter()
            .map(|c| format!("({})", text(c)))
            .collect::<Vec<_>>()
            .join(" AND "),
        G::Or(c) => c
            .iter()
            .map(|c| format!("({})", text(c)))
            .collect::<Vec<_>>()
            .join(" or "),
        G::Not(c) => format!("NOT ({})", text(c)),
        G::Cmp {
            prop,
            op,
            lit,
            flipped,
            casei,
        } => {
            let (p, l) = if *casei {
                (
                    format!("CASEI({prop})"),
                    format!("CASEI({})", lit_text(lit)),
                )
            } else {
                (quoted(prop, prop.len() % 2 == 0), lit_text(lit))
            };
            if *flipped {
                let op = match *op {
                    "<" => ">",
                    "<=" => ">=",
                    ">" => "<",
                    ">=" => "<=",
                    o => o,
                };
                format!("{l} {op} {p}")
            } else {
                format!("{p} {op} {l}")
            }
        }
        G::Like {
            prop,
            pattern,
            casei,
            negated,
        } => {
            let not = if *negated { " NOT" } else { "" };
            let pat = lit_text(&L::Str(pattern.clone()));
            if *casei {
                format!("CASEI({prop}){not} LIKE CASEI({pat})")
            } else {
                format!("{prop}{not} LIKE {pat}")
            }
        }
        G::In {
            prop,
            lits,
            negated,
        } => format!(
            "{prop} {}IN ({})",
            if *negated { "NOT " } else { "" },
            lits.iter().map(lit_text).collect::<Vec<_>>().join(", ")
        ),
        G::Between {
            prop,
            lo,
            hi,
            negated,
        } => format!(
            "{prop} {}BETWEEN {} AND {}",
            if *negated { "NOT " } else { "" },
            lit_text(lo),
            lit_text(hi)
        ),
        G::IsNull { prop, negated } => {
            format!("{prop} IS {}NULL", if *negated { "NOT " } else { "" })
        }
        G::Spatial {
            op,
            geometry,
            swapped,
            geom_name,
        } => {
            if *swapped {
                format!("{}({}, {geom_name})", op.to_uppercase(), wkt(geometry))
            } else {
                format!("{op}({geom_name}, {})", wkt(geometry))
            }
        }
        G::DWithin {
            point,
            distance,
            km,
        } => {
            if *km {
                format!(
                    "S_DWITHIN(geometry, {}, {:?}, km)",
                    wkt(&(*point).into()),
                    distance / 1000.0
                )
            } else {
                format!(
                    "s_dwithin(geometry, {}, {distance:?}, meters)",
                    wkt(&(*point).into())
                )
            }
        }
    }
}

fn json_of(g: &G) -> J {
    let p = |name: &str| json!({ "property": name });
    let op = |op: &str, args: Vec<J>| json!({ "op": op, "args": args });
    let not = |negated: bool, j: J| {
        if negated {
            json!({"op": "not", "args": [j]})
        } else {
            j
        }
    };
    match g {
        G::Const(b) => json!(b),
        G::And(c) => op("and", c.iter().map(json_of).collect()),
        G::Or(c) => op("or", c.iter().map(json_of).collect()),
        G::Not(c) => op("not", vec![json_of(c)]),
        G::Cmp {
            prop,
            op: o,
            lit,
            flipped,
            casei,
        } => {
            let (mut a, mut b) = (p(prop), lit_json(lit));
            if *casei {
                a = op("casei", vec![a]);
                b = op("casei", vec![b]);
            }
            if *flipped {
                let o = match *o {
                    "<" => ">",
                    "<=" => ">=",
                    ">" => "<",
                    ">=" => "<=",
                    o => o,
                };
                op(o, vec![b, a])
            } else {
                op(o, vec![a, b])
            }
        }
        G::Like {
            prop,
            pattern,
            casei,
            negated,
        } => {
            let (mut a, mut b) = (p(prop), json!(pattern));
            if *casei {
                a = op("casei", vec![a]);
                b = op("casei", vec![b]);
            }
            not(*negated, op("like", vec![a, b]))
        }
        G::In {
            prop,
            lits,
            negated,
        } => not(
            *negated,
            op(
                "in",
                vec![p(prop), J::Array(lits.iter().map(lit_json).collect())],
            ),
        ),
        G::Between {
            prop,
            lo,
            hi,
            negated,
        } => not(
            *negated,
            op("between", vec![p(prop), lit_json(lo), lit_json(hi)]),
        ),
        G::IsNull { prop, negated } => not(*negated, op("isNull", vec![p(prop)])),
        G::Spatial {
            op: o,
            geometry,
            swapped,
            geom_name,
        } => {
            if *swapped {
                op(o, vec![geojson(geometry), p(geom_name)])
            } else {
                op(o, vec![p(geom_name), geojson(geometry)])
            }
        }
        G::DWithin {
            point,
            distance,
            km,
        } => {
            let (d, unit) = if *km {
                (distance / 1000.0, "kilometers")
            } else {
                (*distance, "metres")
            };
            op(
                "s_dwithin",
                vec![
                    p("geometry"),
                    geojson(&(*point).into()),
                    json!(d),
                    json!(unit),
                ],
            )
        }
    }
}

/// Kleene logic helpers for the oracle.
fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// A row's value of `prop` as the oracle sees it.
fn oracle_value<'r>(row: &'r TestRow, prop: &str) -> &'r Value {
    let i = match prop {
        "name" => NAME,
        "note" => NOTE,
        "height" => HEIGHT,
        "depth" => DEPTH,
        "active" => ACTIVE,
        "built" => BUILT,
        "seen" => SEEN,
        other => panic!("no property {other}"),
    };
    &row.values[i]
}

/// Orders a row value against a literal, `None` for null.
fn oracle_cmp(row: &TestRow, prop: &str, lit: &L, casei: bool) -> Option<std::cmp::Ordering> {
    if prop == "code" {
        let L::Str(s) = lit else {
            panic!("id compared with {lit:?}")
        };
        return Some(if casei {
            row.id.to_lowercase().cmp(&s.to_lowercase())
        } else {
            row.id.as_str().cmp(s)
        });
    }
    let v = oracle_value(row, prop);
    match (v, lit) {
        (Value::Null, _) => None,
        (Value::Text(a), L::Str(b)) if casei => Some(a.to_lowercase().cmp(&b.to_lowercase())),
        (Value::Text(a), L::Str(b)) => Some(a.as_str().cmp(b)),
        (Value::Int(a), L::Int(b)) => Some(a.cmp(b)),
        (Value::Int(a), L::Num(b)) => (*a as f64).partial_cmp(b),
        (Value::Float(a), L::Num(b)) => a.partial_cmp(b),
        (Value::Float(a), L::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Value::Bool(a), L::Bool(b)) => Some(a.cmp(b)),
        (Value::Text(a), L::Date(b, _)) => Some(a.as_str().cmp(b)),
        (Value::Text(a), L::Ts(k, _)) => {
            let t = time::OffsetDateTime::parse(a, &time::format_description::well_known::Rfc3339)
                .expect("stored timestamps parse");
            Some(t.cmp(&instant(*k)))
        }
        (v, l) => panic!("oracle cannot compare {v:?} with {l:?}"),
    }
}

/// LIKE by memoised recursion over characters (independent of the filter's matcher).
fn oracle_like(pattern: &str, s: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum T {
        Any,
        One,
        C(char),
    }
    let mut toks = Vec::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        toks.push(match c {
            '%' => T::Any,
            '_' => T::One,
            '\\' => T::C(it.next().expect("escape followed by a character")),
            c => T::C(c),
        });
    }
    let s: Vec<char> = s.chars().collect();
    fn go(t: &[T], s: &[char], memo: &mut std::collections::HashMap<(usize, usize), bool>) -> bool {
        if let Some(&r) = memo.get(&(t.len(), s.len())) {
            return r;
        }
        let r = match t.first() {
            None => s.is_empty(),
            Some(T::Any) => go(&t[1..], s, memo) || (!s.is_empty() && go(t, &s[1..], memo)),
            Some(T::One) => !s.is_empty() && go(&t[1..], &s[1..], memo),
            Some(T::C(c)) => s.first() == Some(c) && go(&t[1..], &s[1..], memo),
        };
        memo.insert((t.len(), s.len()), r);
        r
    }
    go(&toks, &s, &mut std::collections::HashMap::new())
}

fn oracle(g: &G, row: &TestRow) -> Option<bool> {
    let neg = |negated: bool, r: Option<bool>| if negated { r.map(|b| !b) } else { r };
    match g {
        G::Const(b) => Some(*b),
        // Not `try_fold`: unknown does not end a Kleene AND (a later false decides it).
        G::And(c) => {
            let mut acc = Some(true);
            for c in c {
                acc = and3(acc, oracle(c, row));
            }
            acc
        }
        G::Or(c) => {
            let mut acc = Some(false);
            for c in c {
                acc = or3(acc, oracle(c, row));
            }
            acc
        }
        G::Not(c) => oracle(c, row).map(|b| !b),
        G::Cmp {
            prop,
            op,
            lit,
            casei,
            ..
        } => oracle_cmp(row, prop, lit, *casei).map(|o| match *op {
            "=" => o.is_eq(),
            "<>" => o.is_ne(),
            "<" => o.is_lt(),
            "<=" => o.is_le(),
            ">" => o.is_gt(),
            ">=" => o.is_ge(),
            other => panic!("op {other}"),
        }),
        G::Like {
            prop,
            pattern,
            casei,
            negated,
        } => {
            let v = if *prop == "code" {
                Some(row.id.clone())
            } else {
                match oracle_value(row, prop) {
                    Value::Text(t) => Some(t.clone()),
                    _ => None,
                }
            };
            neg(
                *negated,
                v.map(|v| {
                    if *casei {
                        oracle_like(&pattern.to_lowercase(), &v.to_lowercase())
                    } else {
                        oracle_like(pattern, &v)
                    }
                }),
            )
        }
        G::In {
            prop,
            lits,
            negated,
        } => {
            let hits: Vec<Option<std::cmp::Ordering>> = lits
                .iter()
                .map(|l| oracle_cmp(row, prop, l, false))
                .collect();
            let r = if hits.iter().any(Option::is_none) {
                None
            } else {
                Some(hits.contains(&Some(std::cmp::Ordering::Equal)))
            };
            neg(*negated, r)
        }
        G::Between {
            prop,
            lo,
            hi,
            negated,
        } => {
            let r = match (
                oracle_cmp(row, prop, lo, false),
                oracle_cmp(row, prop, hi, false),
            ) {
                (Some(a), Some(b)) => Some(a.is_ge() && b.is_le()),
                _ => None,
            };
            neg(*negated, r)
        }
        G::IsNull { prop, negated } => {
            let null = *prop != "code" && matches!(oracle_value(row, prop), Value::Null);
            neg(*negated, Some(null))
        }
        G::Spatial {
            op,
            geometry,
            swapped,
            ..
        } => {
            let m = row.geometry.relate(geometry);
            Some(match (*op, *swapped) {
                ("s_intersects", _) => m.is_intersects(),
                ("s_within", false) | ("s_contains", true) => m.is_within(),
                ("s_contains", false) | ("s_within", true) => m.is_contains(),
                other => panic!("{other:?}"),
            })
        }
        G::DWithin {
            point, distance, ..
        } => Some(vertex_distance(&row.geometry, &(*point).into()) <= *distance),
    }
}

// ---------------------------------------------------------------------------------
// Strategies

fn coord() -> impl Strategy<Value = Coord> {
    (LON.0..LON.1, LAT.0..LAT.1).prop_map(|(x, y)| Coord { x, y })
}

fn literal_geometry() -> impl Strategy<Value = Geometry> {
    prop_oneof![
        coord().prop_map(|c| Point(c).into()),
        (coord(), 0.01..0.12f64, 0.01..0.12f64).prop_map(|(c, w, h)| {
            Rect::new(
                c,
                Coord {
                    x: c.x + w,
                    y: c.y + h,
                },
            )
            .to_polygon()
            .into()
        }),
        (coord(), coord()).prop_map(|(a, b)| LineString(vec![a, b]).into()),
        (coord(), coord(), coord()).prop_map(|(a, b, c)| {
            let mut p = Polygon::new(LineString(vec![a, b, c, a]), vec![]);
            use geo::Orient;
            p = p.orient(geo::orient::Direction::Default);
            p.into()
        }),
    ]
}

fn str_pool(prop: &'static str) -> BoxedStrategy<String> {
    match prop {
        "name" => prop::sample::select(
            NAMES
                .iter()
                .map(|s| s.to_string())
                .chain(["ALPHA".to_string(), "delta".into(), "x'y".into()])
                .collect::<Vec<_>>(),
        )
        .boxed(),
        "note" => prop::collection::vec(prop::sample::select(NOTE_CHARS.to_vec()), 0..4)
            .prop_map(|c| c.into_iter().collect())
            .boxed(),
        _ => (0..320usize).prop_map(|i| format!("F{i:03}")).boxed(),
    }
}

fn lit_for(prop: &'static str) -> BoxedStrategy<L> {
    match prop {
        "name" | "note" | "code" => str_pool(prop).prop_map(L::Str).boxed(),
        "height" => prop_oneof![
            4 => (-1..21i64).prop_map(L::Int),
            1 => (-2..42i64).prop_map(|i| L::Num(i as f64 * 0.5 + 0.25)),
        ]
        .boxed(),
        "depth" => prop_oneof![
            4 => (-5..21i64).prop_map(|i| L::Num(i as f64 * 0.5)),
            1 => (-2..10i64).prop_map(L::Int),
        ]
        .boxed(),
        "active" => any::<bool>().prop_map(L::Bool).boxed(),
        "built" => (0..21i64, any::<bool>())
            .prop_map(|(k, plain)| L::Date(day(k), plain))
            .boxed(),
        _ => (-1..21i64, prop::sample::select(vec![0, 8, -5]))
            .prop_map(|(k, off)| L::Ts(k, off))
            .boxed(),
    }
}

const PROPS: [&str; 8] = [
    "code", "name", "note", "height", "depth", "active", "built", "seen",
];
const ORDERED: [&str; 7] = ["code", "name", "note", "height", "depth", "built", "seen"];
const TEXTUAL: [&str; 3] = ["code", "name", "note"];

fn cmp_leaf() -> impl Strategy<Value = G> {
    (prop::sample::select(PROPS.to_vec()), any::<bool>()).prop_flat_map(|(prop, flipped)| {
        let ops: Vec<&'static str> = if prop == "active" {
            vec!["=", "<>"]
        } else {
            vec!["=", "<>", "<", "<=", ">", ">="]
        };
        (prop::sample::select(ops), lit_for(prop), any::<bool>()).prop_map(move |(op, lit, c)| {
            let casei = c && TEXTUAL.contains(&prop) && (op == "=" || op == "<>");
            G::Cmp {
                prop,
                op,
                lit,
                flipped,
                casei,
            }
        })
    })
}

fn like_pattern(prop: &'static str) -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        2 => Just("%".to_string()),
        1 => Just("_".to_string()),
        1 => Just("\\%".to_string()),
        1 => Just("\\_".to_string()),
        4 => str_pool(prop).prop_map(|s| {
            s.chars().take(2).map(|c| match c {
                '%' | '_' | '\\' => format!("\\{c}"),
                c => c.to_string(),
            }).collect::<String>()
        }),
    ];
    prop::collection::vec(atom, 0..4).prop_map(|v| v.concat())
}

fn leaf() -> BoxedStrategy<G> {
    prop_oneof![
        1 => any::<bool>().prop_map(G::Const),
        6 => cmp_leaf(),
        3 => (prop::sample::select(TEXTUAL.to_vec()), any::<bool>(), any::<bool>())
            .prop_flat_map(|(prop, casei, negated)| like_pattern(prop).prop_map(move |pattern| G::Like { prop, pattern, casei, negated })),
        3 => (prop::sample::select(PROPS.to_vec()), any::<bool>())
            .prop_flat_map(|(prop, negated)| {
                // Integer properties get integer lists (a non-integral value would never match).
                let lit = if prop == "height" { (-1..21i64).prop_map(L::Int).boxed() } else { lit_for(prop) };
                prop::collection::vec(lit, 1..12).prop_map(move |lits| G::In { prop, lits, negated })
            }),
        2 => (prop::sample::select(ORDERED.to_vec()), any::<bool>())
            .prop_flat_map(|(prop, negated)| (lit_for(prop), lit_for(prop)).prop_map(move |(lo, hi)| G::Between { prop, lo, hi, negated })),
        2 => (prop::sample::select(PROPS.to_vec()), any::<bool>()).prop_map(|(prop, negated)| G::IsNull { prop, negated }),
        4 => (prop::sample::select(vec!["s_intersects", "s_within", "s_contains"]), literal_geometry(), any::<bool>(), prop::sample::select(vec!["geometry", "geom"]))
            .prop_map(|(op, geometry, swapped, geom_name)| G::Spatial { op, geometry, swapped, geom_name }),
        2 => (coord(), 0.0..4000.0f64, any::<bool>()).prop_map(|(c, d, km)| G::DWithin { point: Point(c), distance: (d * 8.0).round() / 8.0, km }),
    ]
    .boxed()
}

fn filters() -> impl Strategy<Value = G> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(G::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(G::Or),
            inner.prop_map(|g| G::Not(Box::new(g))),
        ]
    })
}

fn shared_rows() -> &'static [TestRow] {
    static ROWS: std::sync::OnceLock<Vec<TestRow>> = std::sync::OnceLock::new();
    ROWS.get_or_init(|| rows(300, 8))
}

fn shared_layer() -> &'static LayerDef {
    static LAYER: std::sync::OnceLock<LayerDef> = std::sync::OnceLock::new();
    LAYER.get_or_init(layer)
}

fn bbox_meets(row: &TestRow, boxes: &[Rect]) -> bool {
    let Some(r) = row.geometry.bounding_rect() else {
        return false;
    };
    boxes.iter().any(|b| {
        r.min().x <= b.max().x
            && b.min().x <= r.max().x
            && r.min().y <= b.max().y
            && b.min().y <= r.max().y
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Text and JSON spellings both parse, and each row's result equals the oracle.
    #[test]
    fn text_and_json_filters_agree_with_the_oracle(g in filters()) {
        let layer = shared_layer();
        let t = text(&g);
        let j = json_of(&g).to_string();
        let from_text = Filter::parse_text(&t, layer).map_err(|e| TestCaseError::fail(format!("{t}: {e}")))?;
        let from_json = Filter::parse_json(&j, layer).map_err(|e| TestCaseError::fail(format!("{j}: {e}")))?;
        for row in shared_rows() {
            let want = oracle(&g, row);
            prop_assert_eq!(from_text.eval(row, &ctx()), want, "text {} on {:?}", t, row);
            prop_assert_eq!(from_json.eval(row, &ctx()), want, "json {} on {:?}", j, row);
        }
    }

    /// Every row a filter matches meets one of its spatial bounds.
    #[test]
    fn spatial_bounds_hold_every_match(g in filters()) {
        let layer = shared_layer();
        let f = Filter::parse_text(&text(&g), layer).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Some(boxes) = f.spatial_bounds(&expand) {
            prop_assert!(boxes.len() <= Filter::MAX_BOUNDS);
            for row in shared_rows() {
                if f.matches(row, &ctx()) {
                    prop_assert!(bbox_meets(row, &boxes), "{} matches {:?} outside {:?}", text(&g), row, boxes);
                }
            }
        }
    }
}

/// The oracle tests are not vacuous: sampled the same way, most predicates of every
/// kind are true on some rows and false on others, and nulls make some unknown.
#[test]
fn generated_predicates_split_the_rows() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut split: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    let mut unknown = 0;
    for _ in 0..3000 {
        let g = leaf().new_tree(&mut runner).expect("samples").current();
        let kind = match &g {
            G::Const(_) => continue,
            G::Cmp { .. } => "comparison",
            G::Like { .. } => "like",
            G::In { .. } => "in",
            G::Between { .. } => "between",
            G::IsNull { .. } => "is null",
            G::Spatial { op, .. } => op,
            G::DWithin { .. } => "s_dwithin",
            _ => unreachable!("leaves only"),
        };
        let results: Vec<Option<bool>> = shared_rows().iter().map(|r| oracle(&g, r)).collect();
        let e = split.entry(kind).or_default();
        e.1 += 1;
        if results.contains(&Some(true)) && results.contains(&Some(false)) {
            e.0 += 1;
        }
        unknown += results.contains(&None) as usize;
    }
    for (kind, (both, all)) in &split {
        assert!(
            *both * 4 >= *all,
            "{kind}: only {both} of {all} split the rows"
        );
    }
    assert_eq!(split.len(), 9, "{split:?}");
    assert!(unknown > 300, "{unknown}");
}

/// Bounds are not vacuous: filters built around a spatial predicate are bounded, and
/// the bounds of an `AND` are no larger than its spatial part's.
#[test]
fn spatial_predicates_under_and_or_give_bounds() {
    let layer = layer();
    let bounded = [
        "S_INTERSECTS(geometry, POLYGON((106.4 29.4, 106.5 29.4, 106.5 29.5, 106.4 29.4))) AND height > 3",
        "S_DWITHIN(geometry, POINT(106.5 29.5), 500, meters) OR S_WITHIN(geom, BBOX(106.0, 29.0, 106.1, 29.1))",
        "name = 'beta' AND (S_CONTAINS(geometry, POINT(106.5 29.5)) OR FALSE)",
    ];
    for t in bounded {
        let f = Filter::parse_text(t, &layer).expect("parses");
        let b = f
            .spatial_bounds(&expand)
            .unwrap_or_else(|| panic!("{t} is bounded"));
        assert!(!b.is_empty(), "{t}");
        for r in &b {
            assert!(r.width() < 0.2 && r.height() < 0.2, "{t}: {r:?}");
        }
    }
    for t in [
        "height > 3",
        "NOT S_INTERSECTS(geometry, POINT(106.5 29.5))",
        "S_INTERSECTS(geometry, POINT(106.5 29.5)) OR height > 3",
    ] {
        let f = Filter::parse_text(t, &layer).expect("parses");
        assert_eq!(f.spatial_bounds(&expand), None, "{t}");
    }
    // AND keeps the smaller box, whichever side it is on.
    let f = Filter::parse_text(
        "S_INTERSECTS(geometry, BBOX(106.0, 29.0, 106.5, 29.5)) AND S_INTERSECTS(geometry, BBOX(107.0, 30.0, 107.1, 30.1))",
        &layer,
    )
    .expect("parses");
    assert_eq!(
        f.spatial_bounds(&expand),
        Some(vec![Rect::new(
            Coord { x: 107.0, y: 30.0 },
            Coord { x: 107.1, y: 30.1 }
        )])
    );
    assert_eq!(Filter::Const(false).spatial_bounds(&expand), Some(vec![]));
}

// ---------------------------------------------------------------------------------
// Errors

fn err_text(t: &str) -> String {
    match Filter::parse_text(t, &layer()) {
        Ok(f) => panic!("{t} parsed as {f:?}"),
        Err(e) => {
            assert_eq!(e.parameter, "filter");
            e.to_string()
        }
    }
}

fn err_json(j: &str) -> String {
    match Filter::parse_json(j, &layer()) {
        Ok(f) => panic!("{j} parsed as {f:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn syntax_errors_give_their_position() {
    let e = err_text("height > 5 AND");
    assert!(
        e.contains("line 1, column 15") && e.contains("character 14"),
        "{e}"
    );
    assert!(e.contains("parameter 'filter'"), "{e}");
    let e = err_text("height > 5\n  AND name = 'x");
    assert!(e.contains("line 2"), "{e}");
    let e = err_text("height >> 5");
    assert!(e.contains("column 9") || e.contains("column 10"), "{e}");
    let e = err_json(r#"{"op": "=", "args": [{"property": "height"}, 5]"#);
    assert!(
        e.contains("CQL2 JSON does not parse at line 1, column"),
        "{e}"
    );
    let e = err_json(
        r#"{"op": "and", "args": [{"op": "=", "args": [{"property": "height"}, 5]}, {"op": "=", "args": [{"propertee": "height"}, 5]}]}"#,
    );
    assert!(
        e.contains("/args/1/args/0") && e.contains("propertee"),
        "{e}"
    );
}

#[test]
fn semantic_errors_name_what_is_wrong() {
    let cases: &[(&str, &[&str])] = &[
        (
            "nmae = 'x'",
            &[
                "unknown property 'nmae'",
                "queryables are: code, name, note, height",
            ],
        ),
        (
            "height = 'tall'",
            &["'height' is an integer", "the string 'tall'"],
        ),
        ("name > 5", &["'name' is a string", "the number 5"]),
        (
            "height LIKE '1%'",
            &["'height' is an integer", "LIKE applies to text"],
        ),
        ("active < TRUE", &["'active' is a boolean", "= and <>"]),
        (
            "built = TIMESTAMP('2024-01-01T00:00:00Z')",
            &["'built' is a date", "a TIMESTAMP"],
        ),
        (
            "seen = DATE('2024-01-01')",
            &["'seen' is a timestamp", "a DATE"],
        ),
        ("built = '2024-02-30'", &["'2024-02-30' is not a date"]),
        (
            "seen > TIMESTAMP('2024-01-01T00:00:00.0001Z')",
            &["finer than a millisecond"],
        ),
        ("height = NULL", &["IS NULL"]),
        ("height + 1 > 5", &["arithmetic operator +"]),
        (
            "S_TOUCHES(geometry, POINT(106.5 29.5))",
            &["spatial function S_TOUCHES", "supported:"],
        ),
        (
            "T_BEFORE(seen, TIMESTAMP('2024-01-01T00:00:00Z'))",
            &["temporal function T_BEFORE"],
        ),
        ("upper(name) = 'X'", &["function UPPER"]),
        ("height = depth", &["comparing two properties"]),
        (
            "S_INTERSECTS(name, POINT(106.5 29.5))",
            &["'name' is a string", "S_INTERSECTS"],
        ),
        (
            "S_INTERSECTS(geometry, POINT(206.5 29.5))",
            &["outside lon/lat"],
        ),
        (
            "S_DWITHIN(geometry, POINT(106.5 29.5), 500, feet)",
            &["distance unit 'feet'", "meters"],
        ),
        (
            "S_DWITHIN(geometry, POINT(106.5 29.5), 500000, meters)",
            &["above the 50000 m cap"],
        ),
        (
            "S_DWITHIN(geometry, POINT(106.5 29.5), -1, meters)",
            &["not a finite number ≥ 0"],
        ),
        ("name LIKE 'ab\\'", &["escape character"]),
        (
            "CASEI(height) = 5",
            &["CASEI and ACCENTI apply to text", "'height' is an integer"],
        ),
        ("height", &["'height' is not a boolean"]),
        ("geometry = 5", &["'geometry' is the geometry"]),
        ("'a' = 5", &["a comparison needs a property"]),
    ];
    for (t, wants) in cases {
        let e = err_text(t);
        for w in *wants {
            assert!(e.contains(w), "{t}: {e} lacks {w:?}");
        }
    }
}

#[test]
fn size_and_nesting_are_bounded_before_parsing() {
    let limits = Limits::default();
    let deep = format!("{}height = 1{}", "(".repeat(100), ")".repeat(100));
    assert!(err_text(&deep).contains("nested deeper than 64"));
    let nots = format!("{}height = 1", "NOT ".repeat(100));
    assert!(err_text(&nots).contains("nested deeper than 64"));
    let wide = vec!["height = 1"; 600].join(" OR ");
    assert!(err_text(&wide).contains("more than 1000 operators"));
    // Within the operator count the parser's recursion runs on its own stack (a 2 MiB
    // thread stack overflows on such chains in a debug build); what it builds is then
    // refused by the node count or for what it holds.
    let chain = vec!["height = 1"; 450].join(" AND ");
    assert!(err_text(&chain).contains("more than 1000 expression nodes"));
    let arithmetic = format!("height > 1{}", " - 1".repeat(900));
    assert!(err_text(&arithmetic).contains("arithmetic operator -"));
    let list = format!("height IN (1{})", ", 1".repeat(1200));
    assert!(err_text(&list).contains("more than 1000 expression nodes"));
    let long = format!("name = '{}'", "x".repeat(limits.max_bytes));
    assert!(err_text(&long).contains("bytes, at most"));
    let ring: Vec<String> = (0..=limits.max_vertices)
        .map(|i| {
            let a = i as f64 / limits.max_vertices as f64 * std::f64::consts::TAU;
            format!("{:.4} {:.4}", 106.5 + 0.1 * a.cos(), 29.5 + 0.1 * a.sin())
        })
        .collect();
    let big = format!("S_INTERSECTS(geometry, LINESTRING({}))", ring.join(", "));
    let e = err_text(&big);
    assert!(e.contains("more than 10000 vertices"), "{e}");
    // JSON nesting beyond the limit is refused on the value, before cql2 sees it.
    let mut j = json!({"op": "=", "args": [{"property": "height"}, 1]});
    for _ in 0..40 {
        j = json!({"op": "not", "args": [j]});
    }
    assert!(err_json(&j.to_string()).contains("nested deeper"));
    // Within the limits all of these are fine.
    let ok = format!("{}height = 1{}", "(".repeat(30), ")".repeat(30));
    assert!(Filter::parse_text(&ok, &layer()).is_ok());
}

#[test]
fn filter_lang_accepts_the_draft_names() {
    assert_eq!(FilterLang::parse("cql-text"), Ok(FilterLang::Cql2Text));
    assert_eq!(FilterLang::parse("cql2-text"), Ok(FilterLang::Cql2Text));
    assert_eq!(FilterLang::parse("cql2-json"), Ok(FilterLang::Cql2Json));
    assert_eq!(FilterLang::parse("cql-json"), Ok(FilterLang::Cql2Json));
    let e = FilterLang::parse("ecql").expect_err("unknown");
    assert_eq!(e.parameter, "filter-lang");
    assert!(e.to_string().contains("'ecql'"));
}

/// What GDAL 3.6's OAPIF driver sends for `-where` (see its `BuildFilterCQLText`):
/// parenthesised conjunctions, bare names, `'YYYY-MM-DDT'` for dates.
#[test]
fn gdal_cql_text_is_understood() {
    let layer = layer();
    let rows = shared_rows();
    let f = Filter::parse_text(
        "((name = 'beta') AND (height >= 3)) AND (NOT ((note IS NULL)))",
        &layer,
    )
    .expect("parses");
    let want = rows
        .iter()
        .filter(|r| {
            r.values[NAME] == Value::Text("beta".into())
                && matches!(r.values[HEIGHT], Value::Int(h) if h >= 3)
                && !r.values[NOTE].is_null()
        })
        .count();
    assert!(want > 0);
    assert_eq!(rows.iter().filter(|r| f.matches(*r, &ctx())).count(), want);
    let d = Filter::parse_text("built >= '2024-01-05T'", &layer).expect("parses");
    let want = rows
        .iter()
        .filter(|r| matches!(&r.values[BUILT], Value::Text(t) if t.as_str() >= "2024-01-05"))
        .count();
    assert_eq!(rows.iter().filter(|r| d.matches(*r, &ctx())).count(), want);
    let t = Filter::parse_text("seen < '2024-01-01T05:00:00Z'", &layer).expect("parses");
    assert!(rows.iter().any(|r| t.matches(r, &ctx())));
}

#[test]
fn literal_order_is_normalised_and_id_is_filterable() {
    let layer = layer();
    assert_eq!(
        Filter::parse_text("5 < height", &layer).expect("parses"),
        Filter::parse_text("height > 5", &layer).expect("parses"),
    );
    let f =
        Filter::parse_text("code IN ('F001', 'F007') OR code LIKE 'F29_'", &layer).expect("parses");
    let ids: Vec<&str> = shared_rows()
        .iter()
        .filter(|r| f.matches(*r, &ctx()))
        .map(|r| r.id.as_str())
        .collect();
    let mut want = vec!["F001", "F007"];
    want.extend((290..300).map(|i| match i {
        290 => "F290",
        291 => "F291",
        292 => "F292",
        293 => "F293",
        294 => "F294",
        295 => "F295",
        296 => "F296",
        297 => "F297",
        298 => "F298",
        _ => "F299",
    }));
    assert_eq!(ids, want);
    // A boolean property alone is a condition; ACCENTI folds accents.
    let a =
        Filter::parse_text("active AND ACCENTI(name) = ACCENTI('delta')", &layer).expect("parses");
    for r in shared_rows() {
        let want =
            r.values[ACTIVE] == Value::Bool(true) && r.values[NAME] == Value::Text("délta".into());
        assert_eq!(a.matches(r, &ctx()), want, "{r:?}");
    }
}

// ---------------------------------------------------------------------------------
// property=value, sortby, properties, queryables

#[test]
fn simple_parameters_are_equality_on_declared_properties() {
    let layer = layer();
    let f = Filter::from_params(
        &[("name", "beta"), ("height", "4"), ("name", "Gamma")],
        &layer,
    )
    .expect("valid");
    for r in shared_rows() {
        let want = matches!(&r.values[NAME], Value::Text(t) if t == "beta" || t == "Gamma")
            && r.values[HEIGHT] == Value::Int(4);
        assert_eq!(f.matches(r, &ctx()), want, "{r:?}");
    }
    assert_eq!(
        Filter::from_params::<&str, &str>(&[], &layer),
        Ok(Filter::Const(true))
    );
    let f = Filter::from_params(&[("code", "F010")], &layer).expect("valid");
    assert_eq!(
        shared_rows()
            .iter()
            .filter(|r| f.matches(*r, &ctx()))
            .count(),
        1
    );
    let e = Filter::from_params(&[("height", "tall")], &layer).expect_err("not an integer");
    assert_eq!(e.parameter, "height");
    assert!(
        e.to_string().contains("expected an integer, found 'tall'"),
        "{e}"
    );
    let e = Filter::from_params(&[("colour", "red")], &layer).expect_err("unknown");
    assert_eq!(e.parameter, "colour");
    assert!(e.to_string().contains("unknown property 'colour'"), "{e}");
    for (k, v, want) in [
        ("active", "yes", "true or false"),
        ("built", "2024-13-01", "a date"),
        ("seen", "yesterday", "RFC 3339"),
        ("depth", "NaN", "finite number"),
    ] {
        let e = Filter::from_params(&[(k, v)], &layer).expect_err("bad value");
        assert!(e.to_string().contains(want), "{k}={v}: {e}");
    }
}

#[test]
fn sortby_orders_by_keys_then_id_with_nulls_last_ascending() {
    let layer = layer();
    // "+" decoded from a URL becomes a space.
    let s = SortBy::parse(" height,-depth", &layer).expect("valid");
    assert_eq!(
        s.keys,
        vec![
            SortKey {
                prop: Prop::Declared(HEIGHT),
                descending: false
            },
            SortKey {
                prop: Prop::Declared(DEPTH),
                descending: true
            }
        ]
    );
    let mut rows: Vec<&TestRow> = shared_rows().iter().collect();
    rows.sort_by(|a, b| s.compare(*a, *b));
    // Oracle: key tuples, null as +infinity (height) and as -infinity after reversal.
    let key = |r: &TestRow| {
        let h = match r.values[HEIGHT] {
            Value::Int(h) => h as f64,
            _ => f64::INFINITY,
        };
        let d = match r.values[DEPTH] {
            Value::Float(d) => -d,
            _ => f64::NEG_INFINITY,
        };
        (h, d, r.id.clone())
    };
    for w in rows.windows(2) {
        let (a, b) = (key(w[0]), key(w[1]));
        assert!(
            a.0 < b.0 || (a.0 == b.0 && (a.1 < b.1 || (a.1 == b.1 && a.2 < b.2))),
            "{a:?} before {b:?}"
        );
    }
    for (bad, want) in [
        ("heigth", "unknown property 'heigth'"),
        ("height,+height", "appears twice"),
        ("geometry", "cannot be sorted by"),
        ("height,,name", "empty key"),
    ] {
        let e = SortBy::parse(bad, &layer).expect_err("bad sortby");
        assert_eq!(e.parameter, "sortby");
        assert!(e.to_string().contains(want), "{bad}: {e}");
    }
    assert!(SortBy::parse("-code", &layer).is_ok());
}

#[test]
fn properties_select_declared_members() {
    let layer = layer();
    let p = PropertySelection::parse("height, name,code,height", &layer).expect("valid");
    assert_eq!(p.props, vec![HEIGHT, NAME]);
    assert_eq!(
        PropertySelection::parse("", &layer).expect("valid").props,
        Vec::<usize>::new()
    );
    let e = PropertySelection::parse("name,colour", &layer).expect_err("unknown");
    assert_eq!(e.parameter, "properties");
    assert!(e.to_string().contains("unknown property 'colour'"), "{e}");
    assert!(PropertySelection::parse("geometry", &layer).is_err());
}

#[test]
fn queryables_are_a_json_schema_and_the_draft_array() {
    let q = queryables(&layer(), "https://maps.example.org/riskmap/");
    assert_eq!(q["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(
        q["$id"],
        "https://maps.example.org/riskmap/collections/sites/queryables"
    );
    assert_eq!(q["type"], "object");
    assert_eq!(q["additionalProperties"], false);
    let p = &q["properties"];
    assert_eq!(p["name"]["enum"][4], "桥梁");
    assert_eq!(p["name"]["title"], "Name");
    assert_eq!(
        p["height"],
        json!({"title": "height", "type": "integer", "minimum": 0, "maximum": 100})
    );
    assert_eq!(p["note"]["maxLength"], 40);
    assert_eq!(p["depth"]["type"], "number");
    assert_eq!(p["active"]["type"], "boolean");
    assert_eq!(p["built"]["format"], "date");
    assert_eq!(p["seen"]["format"], "date-time");
    assert_eq!(p["geometry"]["format"], "geometry-point");
    assert_eq!(p["code"]["type"], "string");
    // Every schema property is a queryable the parser accepts, and GDAL's array lists
    // the same names under "id".
    let names: Vec<&str> = p
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let draft: Vec<&str> = q["queryables"]
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect();
    assert_eq!(names, draft);
    for n in names {
        let t = if n == "geometry" {
            "S_INTERSECTS(geometry, POINT(106.5 29.5))".to_string()
        } else {
            format!("{n} IS NULL")
        };
        assert!(Filter::parse_text(&t, &layer()).is_ok(), "{t}");
    }
}

// ---------------------------------------------------------------------------------
// The index as a row source, and speed

fn index_of(layer: &LayerDef, n: usize, seed: u64) -> crate::index::LayerIndex {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let layer = std::sync::Arc::new(layer.clone());
    crate::index::LayerIndex::build(layer, n, |push| {
        for i in 0..n {
            let values = [
                ValueRef::Text(NAMES[rng.random_range(0..NAMES.len())]),
                if rng.random_bool(0.1) {
                    ValueRef::Null
                } else {
                    ValueRef::Text(["pump station", "school", "slope", "bridge"][i % 4])
                },
                ValueRef::Int(rng.random_range(0..100)),
                ValueRef::Float(rng.random_range(0.0..10.0)),
                ValueRef::Bool(rng.random_bool(0.5)),
                ValueRef::Null,
                ValueRef::Null,
            ];
            let id = format!("S{i:07}");
            let g: Geometry = Point::new(
                rng.random_range(LON.0..LON.1),
                rng.random_range(LAT.0..LAT.1),
            )
            .into();
            push(
                i as i64 + 1,
                crate::model::FeatureRef {
                    id: &id,
                    geometry: &g,
                    values: &values,
                },
                None,
            );
        }
        Ok::<(), ()>(())
    })
    .expect("builds")
}

#[test]
fn index_slots_are_rows() {
    let layer = layer();
    let index = index_of(&layer, 2000, 3);
    let f = Filter::parse_text(
        "height < 30 AND note LIKE '%o%' AND S_DWITHIN(geometry, POINT(106.5 29.5), 5, km)",
        &layer,
    )
    .expect("parses");
    let boxes = f.spatial_bounds(&expand).expect("bounded");
    let mut by_tree = Vec::new();
    for b in &boxes {
        let bbox =
            crate::model::Bbox::new(b.min().x, b.min().y, b.max().x, b.max().y).expect("valid box");
        index.for_each_envelope_in_bbox(&bbox, |s| {
            if f.matches(&(&index, s), &ctx()) {
                by_tree.push(s);
            }
        });
    }
    by_tree.sort_unstable();
    by_tree.dedup();
    let mut by_scan: Vec<u32> = index
        .slots()
        .filter(|&s| f.matches(&(&index, s), &ctx()))
        .collect();
    by_scan.sort_unstable();
    assert!(!by_scan.is_empty());
    assert_eq!(by_tree, by_scan);
}

/// Speed of evaluation over a million index rows (run in release:
/// `cargo test --release --lib query::filter::tests::evaluation_speed -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement: run in release by hand"]
fn evaluation_speed() {
    let layer = layer();
    let n = 1_000_000;
    let index = index_of(&layer, n, 5);
    for t in [
        "height > 50",
        "name = 'beta'",
        "note LIKE '%station'",
        "CASEI(note) LIKE '%STATION'",
        "name IN ('alpha', 'beta', 'Gamma')",
        "height BETWEEN 10 AND 20 AND depth < 5.0 AND active",
        "S_INTERSECTS(geometry, POLYGON((106.4 29.4, 106.6 29.4, 106.6 29.6, 106.4 29.6, 106.4 29.4)))",
    ] {
        let f = Filter::parse_text(t, &layer).expect("parses");
        let slots: Vec<u32> = index.slots().collect();
        let start = std::time::Instant::now();
        let mut hits = 0usize;
        for &s in &slots {
            hits += f.matches(&(&index, s), &ctx()) as usize;
        }
        let ns = start.elapsed().as_nanos() as f64 / slots.len() as f64;
        println!("{t}: {ns:.1} ns/row ({hits} of {n} match)");
    }
}

/// The worst shapes [`parse::check_text_shape`] lets through (64 parentheses with
/// prefix `NOT`s, 1,000 chained or prefix operators) parse within a quarter of the
/// stack the parser is given; a 2 MiB thread stack overflows on them in a debug build.
#[test]
fn worst_accepted_shapes_fit_a_quarter_of_the_parse_stack() {
    let limits = Limits::default();
    let layer = layer();
    let worst = [
        format!("{}height = 1{}", "(".repeat(64), ")".repeat(64)),
        format!("{}height = 1", "NOT ".repeat(63)),
        format!("height = 1{}", " AND height".repeat(999)),
        format!("height > 1{}", " - 1".repeat(998)),
        format!("height > {}1", "- ".repeat(998)),
        format!(
            "{}height = 1{}{}",
            "(".repeat(60),
            " OR height".repeat(999),
            ")".repeat(60)
        ),
    ];
    for text in worst {
        parse::check_text_shape(&text, &limits).unwrap_or_else(|e| panic!("{e}: {text:.80}"));
        let parsed = stacker::grow(parse::PARSE_STACK / 4, || cql2::parse_text(&text).is_ok());
        assert!(parsed, "{text:.80}");
        // And the whole path refuses or accepts it without trouble.
        let _ = Filter::parse_text(&text, &layer);
    }
}
