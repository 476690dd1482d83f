//! A page of a layer's features (OGC API – Features `items`) as a value: a box, a
//! filter, an order and a page, executed over the layer's index. No HTTP here: the
//! handler parses the request into an [`ItemsQuery`], calls [`items`] and encodes the
//! slots it gets back, and a PostGIS store can answer the same value in SQL.

use geo_types::Geometry;

use super::filter::{EvalContext, Filter, SortBy};
use super::geodesic;
use super::{Budget, WorkExceeded};
use crate::index::LayerIndex;
use crate::model::Bbox;

/// What a page of `items` asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemsQuery {
    /// Features whose geometry meets this box (WGS84 degrees).
    pub bbox: Option<Bbox>,
    /// `Filter::Const(true)` for none.
    pub filter: Filter,
    /// Empty: in fid order (the store's order, stable across pages). Otherwise by the
    /// keys, then by id.
    pub sort: SortBy,
    pub limit: usize,
    pub offset: usize,
}

/// The slots of a page, in order, and how many features match in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemsPage {
    pub slots: Vec<u32>,
    pub matched: usize,
}

/// What the filter's `S_DWITHIN` asks: whether the nearest points of the two
/// geometries are within a distance, metres on WGS84 (`query::geodesic`, Karney's
/// method).
fn within_m(a: &Geometry, b: &Geometry, max_m: f64) -> bool {
    geodesic::within_distance_between_m(a, b, max_m)
}

/// The candidates a query must test: the R-tree under the box and under the filter's
/// spatial bounds (a filter like `S_DWITHIN(geometry, POINT(...), 500)` never scans
/// the layer), every slot only when neither bounds it. No repeats, in no order.
fn candidates(idx: &LayerIndex, q: &ItemsQuery, budget: &Budget) -> Result<Vec<u32>, WorkExceeded> {
    let expand = |g: &Geometry, d: f64| -> Vec<geo_types::Rect> {
        // A distance the filter refused would not be here; an empty answer is sound
        // only for an empty geometry, which matches nothing.
        geodesic::around_geometry(g, d)
            .unwrap_or_default()
            .iter()
            .map(|b| {
                geo_types::Rect::new(
                    geo_types::coord! { x: b.min_lon, y: b.min_lat },
                    geo_types::coord! { x: b.max_lon, y: b.max_lat },
                )
            })
            .collect()
    };
    let mut slots = Vec::new();
    match (&q.bbox, q.filter.spatial_bounds(&expand)) {
        // The box alone: the filter, spatial or not, is tested on each.
        (Some(b), _) => idx.for_each_in_bbox(b, |s| slots.push(s)),
        (None, Some(boxes)) => {
            for r in &boxes {
                if let Ok(b) = Bbox::new(r.min().x, r.min().y, r.max().x, r.max().y) {
                    idx.for_each_in_bbox(&b, |s| slots.push(s));
                }
            }
            // Boxes may overlap (at most `Filter::MAX_BOUNDS` of them).
            if boxes.len() > 1 {
                slots.sort_unstable();
                slots.dedup();
            }
        }
        (None, None) => slots.extend(idx.slots()),
    }
    // Each candidate costs one operation, tested or not.
    budget.charge(slots.len() as u64);
    budget.check()?;
    if !matches!(q.filter, Filter::Const(true)) {
        let ctx = EvalContext {
            within_m: &within_m,
            budget,
        };
        // Stops testing once the budget is spent: the query is refused then.
        slots.retain(|&s| !budget.exceeded() && q.filter.matches(&(idx, s), &ctx));
        budget.check()?;
    }
    Ok(slots)
}

/// Runs the query. The page is cut before it is sorted in full: the first
/// `offset + limit` in order are selected (linear), then only those are sorted.
pub fn items(idx: &LayerIndex, q: &ItemsQuery, budget: &Budget) -> Result<ItemsPage, WorkExceeded> {
    let mut slots = candidates(idx, q, budget)?;
    let matched = slots.len();
    let end = q.offset.saturating_add(q.limit).min(matched);
    if q.offset >= matched || q.limit == 0 {
        return Ok(ItemsPage {
            slots: Vec::new(),
            matched,
        });
    }
    // In fid order (the store's, stable across pages) or by the sort keys then id.
    // Only the first `end` are ordered: a page of 4.52 M sensors costs a linear
    // selection, not a full sort.
    let by_keys = |a: &u32, b: &u32| q.sort.compare(&(idx, *a), &(idx, *b));
    let by_fid = |a: &u32, b: &u32| idx.fid(*a).cmp(&idx.fid(*b));
    let order: &dyn Fn(&u32, &u32) -> std::cmp::Ordering = if q.sort.keys.is_empty() {
        &by_fid
    } else {
        &by_keys
    };
    if end < matched {
        slots.select_nth_unstable_by(end, order);
        slots.truncate(end);
    }
    slots.sort_unstable_by(order);
    Ok(ItemsPage {
        slots: slots.split_off(q.offset),
        matched,
    })
}
