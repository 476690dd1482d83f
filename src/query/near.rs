//! "What lies within this radius" and "what is nearest", in metres on WGS84 (Karney's
//! geodesics, `query::geodesic`) to the nearest point of each geometry, not to its box.
//! Queries as values over a layer's index, like [`super::items`]: the handler parses a
//! request into a [`WithinQuery`] or [`NearestQuery`] and encodes the hits.

use geo::CoordsIter;
use geo_types::{Coord, Geometry};

use super::budget::pair_cost;
use super::filter::{EvalContext, Filter};
use super::geodesic::{self, GeodesicError};
use super::{Budget, WorkExceeded};
use crate::index::{GeomRef, LayerIndex};

/// Largest radius of [`within`] and of the filter's `S_DWITHIN` (the same cap: 50 km
/// holds the whole of the city's main urban area around any point).
pub const MAX_RADIUS_M: f64 = 50_000.0;

/// Most features [`nearest`] returns.
pub const MAX_K: usize = 1_000;

/// How far [`nearest`] looks: no farther than any two points of the city (Chongqing is
/// about 470 km across), so a filter that matches nothing costs one bounded pass, not a
/// search of the globe.
pub const MAX_NEAREST_M: f64 = 1_000_000.0;

/// The first radius [`nearest`] tries; each next one is four times larger. Small: every
/// point in the box is a candidate to bound, and around a risk point in the city the
/// ten nearest sensors usually lie within 50 m (250 m held some 250 sensors: twice the
/// time per query at city scale, stop 15). Elsewhere the rounds grow fast and each
/// costs one R-tree search.
const FIRST_NEAREST_M: f64 = 50.0;

/// Features within `radius_m` of `center` that match `filter`, nearest first (ties by
/// fid), paged.
#[derive(Clone, Debug)]
pub struct WithinQuery {
    pub center: Coord,
    pub radius_m: f64,
    /// `Filter::Const(true)` for none.
    pub filter: Filter,
    pub limit: usize,
    pub offset: usize,
}

/// The `k` features nearest to `center` that match `filter` (and lie within
/// [`MAX_NEAREST_M`]), nearest first, ties by fid.
#[derive(Clone, Debug)]
pub struct NearestQuery {
    pub center: Coord,
    pub k: usize,
    pub filter: Filter,
}

/// Features within `distance_m` of a geometry (0: those that intersect it) that match
/// `filter`, nearest first (ties by fid), paged: `intersects` with a buffer, and the
/// corridor along another feature.
#[derive(Clone, Debug)]
pub struct AroundQuery {
    /// WGS84 lon/lat, checked ([`geodesic::check_geometry`]).
    pub geometry: Geometry,
    pub distance_m: f64,
    pub filter: Filter,
    pub limit: usize,
    pub offset: usize,
}

/// A feature and its distance from the query's centre, metres.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub slot: u32,
    pub distance_m: f64,
}

/// A page of hits and how many match in all.
#[derive(Clone, Debug, PartialEq)]
pub struct NearPage {
    pub hits: Vec<Hit>,
    pub matched: usize,
}

/// Why a query was refused; the message names the parameter.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NearError {
    #[error(transparent)]
    Geodesic(#[from] GeodesicError),
    #[error("radius_m must be above 0 and at most {MAX_RADIUS_M} m; got {0}")]
    Radius(f64),
    #[error("k must be 1 to {MAX_K}; got {0}")]
    K(usize),
    #[error("{0} must be at least 0 and at most {MAX_RADIUS_M} m; got {1}")]
    Distance(&'static str, f64),
    #[error(transparent)]
    Work(#[from] WorkExceeded),
}

/// Checks a centre (named `lon`/`lat`) and a radius.
pub fn check(center: Coord, radius_m: Option<f64>) -> Result<(), NearError> {
    geodesic::check_position(center, "lon/lat")?;
    if let Some(r) = radius_m {
        if !(r > 0.0 && r <= MAX_RADIUS_M) {
            return Err(NearError::Radius(r));
        }
    }
    Ok(())
}

/// The slots whose envelope meets one of `boxes`, each once, each charged one
/// operation.
fn candidates(
    idx: &LayerIndex,
    boxes: &[crate::model::Bbox],
    budget: &Budget,
) -> Result<Vec<u32>, WorkExceeded> {
    let mut slots = Vec::new();
    for b in boxes {
        idx.for_each_envelope_in_bbox(b, |s| slots.push(s));
    }
    if boxes.len() > 1 {
        slots.sort_unstable();
        slots.dedup();
    }
    budget.charge(slots.len() as u64);
    budget.check()?;
    Ok(slots)
}

/// Every feature whose envelope meets one of `boxes`, that matches `filter` and that
/// `measure` finds near enough (its distance), in no order. Each candidate costs one
/// operation, the filter its nodes, and `measure` charges its own geometry test.
fn hits(
    idx: &LayerIndex,
    boxes: &[crate::model::Bbox],
    filter: &Filter,
    budget: &Budget,
    measure: impl Fn(GeomRef<'_>) -> Option<f64>,
) -> Result<Vec<Hit>, WorkExceeded> {
    let slots = candidates(idx, boxes, budget)?;
    let ctx = EvalContext {
        within_m: &geodesic::within_distance_between_m,
        budget,
    };
    let unfiltered = matches!(filter, Filter::Const(true));
    let hits = slots
        .into_iter()
        // The filter first: a property comparison costs less than a geodesic.
        .filter(|&s| !budget.exceeded() && (unfiltered || filter.matches(&(idx, s), &ctx)))
        .filter_map(|s| {
            measure(idx.geometry(s)).map(|d| Hit {
                slot: s,
                distance_m: d,
            })
        })
        .collect();
    budget.check()?;
    Ok(hits)
}

/// Every feature within `radius_m` of `center` that matches `filter`, with its distance,
/// in no order. Candidates come from the R-tree under the geodesic search box (split at
/// the antimeridian); each is measured exactly, so a feature exactly at the radius is in.
fn hits_within(
    idx: &LayerIndex,
    center: Coord,
    radius_m: f64,
    filter: &Filter,
    budget: &Budget,
) -> Result<Vec<Hit>, WorkExceeded> {
    let boxes = geodesic::search_box(center, radius_m).unwrap_or_default();
    let from = geodesic::Centre::new(center);
    hits(idx, &boxes, filter, budget, |g| match g {
        GeomRef::Point(c) => from.within_m(c, radius_m),
        GeomRef::Shape(g) => budget
            .charge(pair_cost(1, g.coords_count()))
            .then(|| geodesic::within_m(center, g, radius_m))
            .flatten(),
    })
}

/// Every feature within `distance_m` of `g` that matches `filter`, with its distance, in
/// no order. Candidates come from the R-tree under the geodesic boxes around `g`; the
/// query geometry is prepared once and each candidate measured against it exactly.
fn hits_around(
    idx: &LayerIndex,
    g: &Geometry,
    distance_m: f64,
    filter: &Filter,
    budget: &Budget,
) -> Result<Vec<Hit>, WorkExceeded> {
    let boxes = geodesic::around_parts(g, distance_m).unwrap_or_default();
    let query = geodesic::PreparedGeometry::new(g);
    let n = g.coords_count();
    hits(idx, &boxes, filter, budget, |candidate| match candidate {
        GeomRef::Point(c) => budget
            .charge(pair_cost(n, 1))
            .then(|| query.within_m(c, distance_m))
            .flatten(),
        GeomRef::Shape(shape) => budget
            .charge(pair_cost(n, shape.coords_count()))
            .then(|| {
                query.within_distance_of_m(&geodesic::PreparedGeometry::new(shape), distance_m)
            })
            .flatten(),
    })
}

/// Runs an [`AroundQuery`].
pub fn around(idx: &LayerIndex, q: &AroundQuery, budget: &Budget) -> Result<NearPage, NearError> {
    geodesic::check_geometry(&q.geometry, "geometry")?;
    if !(0.0..=MAX_RADIUS_M).contains(&q.distance_m) {
        return Err(NearError::Distance("distance_m", q.distance_m));
    }
    let hits = hits_around(idx, &q.geometry, q.distance_m, &q.filter, budget)?;
    Ok(page(idx, hits, q.limit, q.offset))
}

/// The page `offset..offset + limit` of the hits nearest first: only the first
/// `offset + limit` are ordered.
fn page(idx: &LayerIndex, mut hits: Vec<Hit>, limit: usize, offset: usize) -> NearPage {
    let matched = hits.len();
    if offset >= matched || limit == 0 {
        return NearPage {
            hits: Vec::new(),
            matched,
        };
    }
    let end = offset.saturating_add(limit).min(matched);
    let order = by_distance(idx);
    if end < matched {
        hits.select_nth_unstable_by(end, &order);
        hits.truncate(end);
    }
    hits.sort_unstable_by(&order);
    NearPage {
        hits: hits.split_off(offset),
        matched,
    }
}

fn by_distance(idx: &LayerIndex) -> impl Fn(&Hit, &Hit) -> std::cmp::Ordering + '_ {
    |a, b| {
        a.distance_m
            .total_cmp(&b.distance_m)
            .then(idx.fid(a.slot).cmp(&idx.fid(b.slot)))
    }
}

/// Runs a [`WithinQuery`]: only the first `offset + limit` hits are ordered.
pub fn within(idx: &LayerIndex, q: &WithinQuery, budget: &Budget) -> Result<NearPage, NearError> {
    check(q.center, Some(q.radius_m))?;
    let hits = hits_within(idx, q.center, q.radius_m, &q.filter, budget)?;
    Ok(page(idx, hits, q.limit, q.offset))
}

/// Runs a [`NearestQuery`]: searches a radius four times larger each round until `k`
/// hits lie within it (then no feature outside can be nearer) or the radius reaches
/// [`MAX_NEAREST_M`]. The work is bounded by the features within that distance.
pub fn nearest(idx: &LayerIndex, q: &NearestQuery, budget: &Budget) -> Result<Vec<Hit>, NearError> {
    check(q.center, None)?;
    if q.k == 0 || q.k > MAX_K {
        return Err(NearError::K(q.k));
    }
    let mut radius = FIRST_NEAREST_M;
    loop {
        let (hits, whole_layer) = nearest_within(idx, q, radius, budget)?;
        if hits.len() >= q.k || radius >= MAX_NEAREST_M {
            return Ok(hits);
        }
        // When the search box already held every feature, a larger one holds no more:
        // one last round at the largest radius.
        radius = match whole_layer {
            true => MAX_NEAREST_M,
            false => (radius * 4.0).min(MAX_NEAREST_M),
        };
    }
}

/// The `q.k` features nearest to the centre among those within `radius` that match the
/// filter, nearest first (ties by fid), and whether the search box held every feature
/// of the layer. A point's distance is measured only while its chord bound could still
/// beat the `k`-th best found (most of the hundreds of sensors within 250 m of a point
/// in the city never need Karney's iteration); a shape is measured exactly at once.
fn nearest_within(
    idx: &LayerIndex,
    q: &NearestQuery,
    radius: f64,
    budget: &Budget,
) -> Result<(Vec<Hit>, bool), WorkExceeded> {
    let boxes = geodesic::search_box(q.center, radius).unwrap_or_default();
    let slots = candidates(idx, &boxes, budget)?;
    let whole_layer = slots.len() >= idx.len();
    let ctx = EvalContext {
        within_m: &geodesic::within_distance_between_m,
        budget,
    };
    let unfiltered = matches!(q.filter, Filter::Const(true));
    let from = geodesic::Centre::new(q.center);
    // Each candidate with a lower bound of its distance, and whether that is the
    // distance itself.
    let mut candidates: Vec<(f64, u32, bool)> = Vec::new();
    for s in slots {
        if budget.exceeded() {
            break;
        }
        if !(unfiltered || q.filter.matches(&(idx, s), &ctx)) {
            continue;
        }
        match idx.geometry(s) {
            GeomRef::Point(c) => {
                let lower = from.lower_bound_m(c);
                if lower <= radius {
                    candidates.push((lower, s, false));
                }
            }
            GeomRef::Shape(g) => {
                let d = budget
                    .charge(pair_cost(1, g.coords_count()))
                    .then(|| geodesic::within_m(q.center, g, radius))
                    .flatten();
                if let Some(d) = d {
                    candidates.push((d, s, true));
                }
            }
        }
    }
    budget.check()?;
    candidates.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let order = by_distance(idx);
    let mut best: Vec<Hit> = Vec::with_capacity(q.k + 1);
    for (lower, slot, exact) in candidates {
        // Every candidate left is at least `lower` away: farther than the k-th best.
        if best.len() == q.k && lower > best[q.k - 1].distance_m {
            break;
        }
        let distance_m = match (exact, idx.geometry(slot)) {
            (true, _) => lower,
            (false, GeomRef::Point(c)) => match from.within_m(c, radius) {
                Some(d) => d,
                None => continue,
            },
            (false, GeomRef::Shape(_)) => continue,
        };
        let hit = Hit { slot, distance_m };
        let at = best.partition_point(|h| order(h, &hit).is_lt());
        if at < q.k {
            best.insert(at, hit);
            best.truncate(q.k);
        }
    }
    Ok((best, whole_layer))
}

/// The features of a layer that name a feature in property `prop` (a sensor's
/// `risk_point_id`), each with its distance from `from` (the named feature's geometry),
/// nearest first, the first `limit` of them. The property is compared on every feature
/// of the layer: a reference by value has no spatial bound (the work is bounded by the
/// layer's size, one comparison each).
pub fn attached(
    idx: &LayerIndex,
    prop: &str,
    id: &str,
    from: &Geometry,
    limit: usize,
    budget: &Budget,
) -> Result<NearPage, NearError> {
    geodesic::check_geometry(from, "the feature")?;
    let filter = match Filter::from_params(&[(prop, id)], idx.layer()) {
        Ok(f) => f,
        // Not a property of this layer (or not text): nothing refers to the feature.
        Err(_) => {
            return Ok(NearPage {
                hits: Vec::new(),
                matched: 0,
            });
        }
    };
    let ctx = EvalContext {
        within_m: &geodesic::within_distance_between_m,
        budget,
    };
    let n = from.coords_count();
    let from = geodesic::PreparedGeometry::new(from);
    let hits: Vec<Hit> = idx
        .slots()
        .filter(|&s| !budget.exceeded() && filter.matches(&(idx, s), &ctx))
        .map(|s| Hit {
            slot: s,
            distance_m: match idx.geometry(s) {
                GeomRef::Point(c) => from.distance_from_m(c),
                GeomRef::Shape(g) => {
                    budget.charge(pair_cost(n, g.coords_count()));
                    from.distance_to_m(&geodesic::PreparedGeometry::new(g))
                }
            },
        })
        .collect();
    budget.check()?;
    Ok(page(idx, hits, limit, 0))
}
