//! Drawing one tile from the index.
//!
//! Points: when a layer has at most `max_points` points inside the tile, each is drawn
//! (with those in the buffer around it). Otherwise the points inside the tile are
//! aggregated per cell (`cluster_cell` units wide): a cell of one point shows that
//! point, a cell of more shows a cluster at their centroid carrying `cluster: true`,
//! `count` and the most severe rank value among them. Cells come from the index's
//! pyramid while it holds them and are binned per request beyond.
//!
//! Lines and polygons: vertices below the zoom's tolerance are dropped (precomputed
//! Douglas–Peucker importance), parts are clipped to the buffered tile, quantised,
//! freed of repeated points, and dropped when they collapse; rings are oriented as
//! MVT 2.1 requires (exterior positive area in tile space, y down). Features are drawn
//! most important first and stop when the layer's or the tile's byte budget is spent.

use crate::alerts::Level;
use crate::config::MAX_TILE_BYTES;
use crate::index::{LayerIndex, LayerState, Marks, PYRAMID_MAX_LEVEL, PartKind};
use crate::model::{LayerDef, LayerKind, ValueRef};

use super::clip::{ClipBox, clip_line_into, clip_polygon};
use super::coord::{EXTENT, TileCoord};
use super::mvt::{GeomBuf, GeomType, LayerWriter, MvtValue};

/// A layer's cluster cells are tiles this many zooms below the tile (`tiles.cluster_cell`
/// units wide: 64 → 6, 128 → 5, 256 → 4, 512 → 3).
fn cell_zoom(def: &LayerDef) -> u8 {
    (EXTENT / def.tiles.cluster_cell).trailing_zeros() as u8
}
const KEY_CLUSTER: &str = "cluster";
const KEY_COUNT: &str = "count";
/// The warning level of a risk point or pipeline (`blue`..`red`), and of a cluster:
/// the highest inside it. Absent when normal.
pub const KEY_WARNING: &str = "warning_level";

/// Whether a layer's features can carry a warning level.
pub fn has_warning_level(def: &LayerDef) -> bool {
    matches!(def.kind, LayerKind::RiskPoint | LayerKind::Pipeline)
}

fn warning_tag<'a>(w: &mut LayerWriter<'a>, def: &LayerDef, mark: u8) {
    if let Some(level) = Level::from_u8(mark).filter(|l| *l != Level::Normal) {
        w.tag(3 + def.properties.len(), MvtValue::Str(level.name()));
    }
}

/// Up to this zoom, ranked line and polygon layers walk their importance order (tiles
/// cover much of a city, and the walk stops early at the byte budget); deeper, the
/// R-tree's hits are sorted by rank.
const ORDERED_SCAN_MAX_ZOOM: u8 = 12;

/// What drawing one layer of one tile did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerStats {
    pub features: usize,
    pub clusters: usize,
    /// Whether the byte budget was spent before every candidate was drawn (the least
    /// important ones were left out).
    pub truncated: bool,
    /// Features that reached the tile but had nothing drawable left (collapsed or
    /// invalid after clipping and quantisation).
    pub dropped_degenerate: usize,
}

/// A drawn tile: MVT bytes (empty when no layer has features) and per-layer stats.
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub stats: Vec<(String, LayerStats)>,
}

/// Draws `layers` for `coord`, written in that order. Point layers are drawn first
/// and line and polygon layers share what is left of the tile's byte budget: points
/// (and the counts their clusters carry) are exact, while lines are generalised by
/// design, most important first.
pub fn render(layers: &[&LayerState], coord: TileCoord) -> Rendered {
    let mut order: Vec<usize> = (0..layers.len()).collect();
    order.sort_by_key(|&i| !layers[i].def.geometry.is_point());
    let mut drawn: Vec<Option<(Vec<u8>, LayerStats)>> = vec![None; layers.len()];
    let mut used = 0usize;
    for i in order {
        let l = layers[i];
        let def: &LayerDef = &l.def;
        if coord.z < def.minzoom || coord.z > def.maxzoom {
            continue;
        }
        let idx = l.index.read();
        let marks = l.marks.read();
        // Key numbers: 0 the id, 1..=n the properties, then the cluster keys and the
        // warning level.
        let keys: Vec<&str> = std::iter::once(def.id_property.as_str())
            .chain(def.properties.iter().map(|p| p.name.as_str()))
            .chain([KEY_CLUSTER, KEY_COUNT])
            .chain(has_warning_level(def).then_some(KEY_WARNING))
            .collect();
        let mut w = LayerWriter::new(&def.name, &keys);
        let left = (MAX_TILE_BYTES as usize).saturating_sub(used);
        let budget = (def.tiles.max_bytes as usize).min(left);
        let s = if def.geometry.is_point() {
            points(&idx, def, &marks, coord, &mut w, budget)
        } else {
            shapes(&idx, def, &marks, coord, &mut w, budget)
        };
        let mut bytes = Vec::new();
        w.finish(&mut bytes);
        used += bytes.len();
        if s.truncated {
            metrics::counter!("riskmap_tile_budget_cuts_total", "layer" => def.name.clone())
                .increment(1);
        }
        if s.dropped_degenerate > 0 {
            metrics::counter!("riskmap_tile_features_dropped_total", "layer" => def.name.clone(), "reason" => "degenerate")
                .increment(s.dropped_degenerate as u64);
        }
        drawn[i] = Some((bytes, s));
    }
    let mut bytes = Vec::with_capacity(used);
    let mut stats = Vec::with_capacity(layers.len());
    for (l, d) in layers.iter().zip(drawn) {
        if let Some((b, s)) = d {
            bytes.extend_from_slice(&b);
            stats.push((l.def.name.clone(), s));
        }
    }
    Rendered { bytes, stats }
}

/// The tags of a feature: its id property and every non-null declared property.
fn tags<'a>(
    w: &mut LayerWriter<'a>,
    def: &'a LayerDef,
    marks: &Marks,
    idx: &'a LayerIndex,
    slot: u32,
) {
    w.clear_tags();
    w.tag_unique(0, MvtValue::Str(idx.id(slot)));
    for i in 0..def.properties.len() {
        if idx.is_text(i) {
            if let Some((sym, text)) = idx.text_symbol(slot, i) {
                w.tag_symbol(1 + i, ((i as u64) << 32) | sym as u64, text);
            }
            continue;
        }
        match idx.value(slot, i) {
            ValueRef::Null | ValueRef::Text(_) => {}
            ValueRef::Int(v) => w.tag(1 + i, MvtValue::Int(v)),
            ValueRef::Float(v) => w.tag(1 + i, MvtValue::Double(v)),
            ValueRef::Bool(v) => w.tag(1 + i, MvtValue::Bool(v)),
        }
    }
    if !marks.is_empty() {
        warning_tag(w, def, marks.get(idx.fid(slot)));
    }
}

fn quantise(p: [f64; 2]) -> (i32, i32) {
    (p[0].round() as i32, p[1].round() as i32)
}

/// One cluster cell being filled.
#[derive(Clone, Copy, Default)]
struct Bin {
    count: u32,
    ranks: [u32; crate::index::MAX_RANKS],
    sum: [f64; 2],
    slot: u32,
}

fn points<'a>(
    idx: &'a LayerIndex,
    def: &'a LayerDef,
    marks: &'a Marks,
    coord: TileCoord,
    w: &mut LayerWriter<'a>,
    budget: usize,
) -> LayerStats {
    let ts = &def.tiles;
    let max_points = ts.max_points as usize;
    let pyramid = idx.pyramid();
    let inside = match pyramid {
        Some(p) if coord.z <= PYRAMID_MAX_LEVEL => {
            Some(p.count(coord.z, coord.x, coord.y) as usize)
        }
        _ => None,
    };
    if inside == Some(0) && ts.buffer == 0 {
        return LayerStats::default();
    }
    if let (Some(n), Some(p)) = (inside, pyramid) {
        // Pyramid cells serve clusters while the layer's cells exist in it (to zoom 14
        // for 256-unit cells with the pyramid's 18 levels); deeper, points are binned.
        if n > max_points && coord.z + cell_zoom(def) <= PYRAMID_MAX_LEVEL {
            return pyramid_clusters(idx, def, marks, p, coord, w, budget);
        }
    }
    let buffer = ts.buffer as f64;
    let bx = ClipBox {
        min: -buffer,
        max: EXTENT as f64 + buffer,
    };
    // Candidates: points in the buffered tile, with their tile position and whether
    // they lie in the tile itself.
    let mut cands: Vec<(u32, [f64; 2], bool)> = Vec::new();
    let query = if inside.is_some_and(|n| n > max_points) {
        // One unit of padding: the lon/lat box computed back from world coordinates
        // may be an ulp short of the tile; `contains` below decides exactly.
        coord.lonlat_bbox(1)
    } else {
        coord.lonlat_bbox(ts.buffer)
    };
    idx.for_each_in_bbox(&query, |slot| {
        if let Some(wp) = idx.world_point(slot) {
            let p = coord.to_tile(wp);
            if bx.contains(p) {
                cands.push((slot, p, coord.contains(wp)));
            }
        }
    });
    let n_inside = inside.unwrap_or_else(|| cands.iter().filter(|c| c.2).count());
    if n_inside > max_points {
        return binned_clusters(idx, def, marks, coord, &cands, w, budget);
    }
    // The tile's own points first, then those of the buffer; each group in slot order
    // (spatial order, see index: deterministic and cache-friendly).
    cands.sort_unstable_by_key(|c| (!c.2, c.0));
    let mut stats = LayerStats::default();
    let mut g = GeomBuf::default();
    for &(slot, p, inside) in cands.iter() {
        g.clear();
        g.points(&[quantise(p)]);
        tags(w, def, marks, idx, slot);
        if !w.add_feature(Some(idx.fid(slot) as u64), GeomType::Point, &g, budget) {
            if inside {
                // The budget cannot hold the tile's own points: show clusters instead,
                // so every point is still counted.
                w.clear();
                return binned_clusters(idx, def, marks, coord, &cands, w, budget);
            }
            stats.truncated = true;
            break;
        }
        stats.features += 1;
    }
    stats
}

/// Emits one cell: the point itself when alone, else a cluster.
#[allow(clippy::too_many_arguments)]
fn emit_cell<'a>(
    idx: &'a LayerIndex,
    def: &'a LayerDef,
    marks: &'a Marks,
    coord: TileCoord,
    w: &mut LayerWriter<'a>,
    g: &mut GeomBuf,
    count: u32,
    ranks: &[u32],
    centroid: [f64; 2],
    cell: [f64; 4],
    single: Option<u32>,
    budget: usize,
    stats: &mut LayerStats,
) -> bool {
    g.clear();
    if let (1, Some(slot)) = (count, single) {
        let Some(wp) = idx.world_point(slot) else {
            return true;
        };
        g.points(&[quantise(coord.to_tile(wp))]);
        tags(w, def, marks, idx, slot);
        if !w.add_feature(Some(idx.fid(slot) as u64), GeomType::Point, g, budget) {
            return false;
        }
        stats.features += 1;
        return true;
    }
    // The centroid lies inside the cell, hence inside the tile.
    let p = quantise(coord.to_tile(centroid));
    g.points(&[(
        p.0.clamp(0, EXTENT as i32 - 1),
        p.1.clamp(0, EXTENT as i32 - 1),
    )]);
    w.clear_tags();
    let n = def.properties.len();
    w.tag(1 + n, MvtValue::Bool(true));
    w.tag(2 + n, MvtValue::Int(count as i64));
    if let Some(rank_prop) = def.tiles.cluster_rank {
        let prop = &def.properties[rank_prop];
        if let (Some(values), Some(top)) = (&prop.values, ranks.iter().position(|&n| n > 0)) {
            if let Some(v) = values.get(top) {
                w.tag(1 + rank_prop, MvtValue::Str(v));
            }
        }
    }
    if !marks.is_empty() {
        warning_tag(w, def, marks.max_in(cell));
    }
    if !w.add_feature(None, GeomType::Point, g, budget) {
        return false;
    }
    stats.clusters += 1;
    true
}

fn pyramid_clusters<'a>(
    idx: &'a LayerIndex,
    def: &'a LayerDef,
    marks: &'a Marks,
    pyramid: &crate::index::Pyramid,
    coord: TileCoord,
    w: &mut LayerWriter<'a>,
    budget: usize,
) -> LayerStats {
    // The layer's cell size at every zoom, so clusters line up across tiles.
    let d = cell_zoom(def);
    let mut cells: Vec<(u32, u32, &crate::index::Cell)> = Vec::new();
    pyramid.children(coord.z, coord.x, coord.y, d, |cx, cy, c| {
        cells.push((cx, cy, c))
    });
    cells.sort_unstable_by_key(|&(cx, cy, _)| (cy, cx));
    let mut stats = LayerStats::default();
    let mut g = GeomBuf::default();
    let level = coord.z + d;
    for (cx, cy, c) in cells.iter() {
        let single = if c.count == 1 {
            Some(if c.rep != u32::MAX {
                c.rep
            } else {
                find_in_cell(idx, level, *cx, *cy)
            })
        } else {
            None
        };
        if !emit_cell(
            idx,
            def,
            marks,
            coord,
            w,
            &mut g,
            c.count,
            &c.rank_counts(),
            c.centroid(),
            TileCoord {
                z: level,
                x: *cx,
                y: *cy,
            }
            .world_bounds(),
            single.filter(|&s| s != u32::MAX),
            budget,
            &mut stats,
        ) {
            stats.truncated = true;
            break;
        }
    }
    stats
}

/// The one point of a cell whose representative was removed.
fn find_in_cell(idx: &LayerIndex, level: u8, cx: u32, cy: u32) -> u32 {
    let cell = TileCoord {
        z: level,
        x: cx,
        y: cy,
    };
    let mut found = u32::MAX;
    idx.for_each_in_bbox(&cell.lonlat_bbox(1), |slot| {
        if found == u32::MAX && idx.world_point(slot).is_some_and(|wp| cell.contains(wp)) {
            found = slot;
        }
    });
    found
}

fn binned_clusters<'a>(
    idx: &'a LayerIndex,
    def: &'a LayerDef,
    marks: &'a Marks,
    coord: TileCoord,
    cands: &[(u32, [f64; 2], bool)],
    w: &mut LayerWriter<'a>,
    budget: usize,
) -> LayerStats {
    let side = EXTENT / def.tiles.cluster_cell;
    let mut bins = vec![Bin::default(); (side * side) as usize];
    let cell_units = def.tiles.cluster_cell as f64;
    for &(slot, p, inside) in cands {
        if !inside {
            continue;
        }
        let (cx, cy) = (
            ((p[0] / cell_units) as u32).min(side - 1),
            ((p[1] / cell_units) as u32).min(side - 1),
        );
        let b = &mut bins[(cy * side + cx) as usize];
        if let Some(wp) = idx.world_point(slot) {
            b.count += 1;
            b.sum[0] += wp[0];
            b.sum[1] += wp[1];
            b.slot = slot;
            if let Some(r) = idx.rank(slot) {
                b.ranks[r] += 1;
            }
        }
    }
    let mut stats = LayerStats::default();
    let mut g = GeomBuf::default();
    let [x0, y0, _, _] = coord.world_bounds();
    let cell_world = def.tiles.cluster_cell as f64 / EXTENT as f64 / coord.scale();
    for (i, b) in bins.iter().enumerate().filter(|(_, b)| b.count > 0) {
        let (cx, cy) = ((i as u32 % side) as f64, (i as u32 / side) as f64);
        let cell = [
            x0 + cx * cell_world,
            y0 + cy * cell_world,
            x0 + (cx + 1.0) * cell_world,
            y0 + (cy + 1.0) * cell_world,
        ];
        let centroid = [b.sum[0] / b.count as f64, b.sum[1] / b.count as f64];
        if !emit_cell(
            idx,
            def,
            marks,
            coord,
            w,
            &mut g,
            b.count,
            &b.ranks,
            centroid,
            cell,
            Some(b.slot),
            budget,
            &mut stats,
        ) {
            stats.truncated = true;
            break;
        }
    }
    stats
}

/// Signed area × 2 of a closed ring in tile units (y down): positive is clockwise on
/// screen, which MVT 2.1 requires of exterior rings.
/// Adds clipped line parts to a feature, quantised, repeated points dropped.
fn draw_clipped(
    clipped: &[[f64; 2]],
    parts: &[std::ops::Range<usize>],
    q: &mut Vec<(i32, i32)>,
    g: &mut GeomBuf,
) {
    for r in parts.iter().cloned() {
        q.clear();
        for &p in &clipped[r] {
            let p = quantise(p);
            if q.last() != Some(&p) {
                q.push(p);
            }
        }
        if q.len() >= 2 {
            g.line(q);
        }
    }
}

fn shapes<'a>(
    idx: &'a LayerIndex,
    def: &'a LayerDef,
    marks: &'a Marks,
    coord: TileCoord,
    w: &mut LayerWriter<'a>,
    budget: usize,
) -> LayerStats {
    let ts = &def.tiles;
    let buffer = ts.buffer as f64;
    let bx = ClipBox {
        min: -buffer,
        max: EXTENT as f64 + buffer,
    };
    // Candidates, most important first when the layer ranks its features. Over large
    // areas (low zoom) the precomputed order is walked lazily with a test on projected
    // bounds, and the walk stops at the budget; over small ones the R-tree's few hits
    // are sorted.
    let ordered;
    let listed: Vec<u32>;
    let candidates: Box<dyn Iterator<Item = u32> + '_> = if ts.importance.is_some()
        && coord.z <= ORDERED_SCAN_MAX_ZOOM
    {
        let [x0, y0, x1, y1] = coord.world_bounds();
        let pad = buffer / EXTENT as f64 / coord.scale();
        let (x0, y0, x1, y1) = (x0 - pad, y0 - pad, x1 + pad, y1 + pad);
        ordered = idx.importance_order();
        Box::new(
            ordered
                .iter()
                .filter(move |r| {
                    r.bbox[0] <= x1 && r.bbox[2] >= x0 && r.bbox[1] <= y1 && r.bbox[3] >= y0
                })
                .map(|r| r.slot),
        )
    } else {
        let mut v = Vec::new();
        // Envelopes only: clipping below is the exact test.
        idx.for_each_envelope_in_bbox(&coord.lonlat_bbox(ts.buffer), |s| v.push(s));
        if ts.importance.is_some() {
            // Ties in slot order, as in the importance order of lower zooms.
            let mut keyed: Vec<(f64, u32)> = v.iter().map(|&s| (idx.importance(s), s)).collect();
            keyed.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            listed = keyed.into_iter().map(|k| k.1).collect();
        } else {
            v.sort_unstable_by_key(|&s| idx.fid(s));
            listed = v;
        }
        Box::new(listed.iter().copied())
    };
    // Douglas–Peucker tolerance in world units, squared (as the importances are).
    let tol = ts.simplify / EXTENT as f64 / coord.scale();
    let tol_sq = (tol * tol) as f32;
    let mut stats = LayerStats::default();
    let mut g = GeomBuf::default();
    let mut kept: Vec<[f64; 2]> = Vec::new();
    let mut rings: Vec<Vec<[f64; 2]>> = Vec::new();
    let mut clipped: Vec<[f64; 2]> = Vec::new();
    let mut clipped_parts: Vec<std::ops::Range<usize>> = Vec::new();
    let mut q: Vec<(i32, i32)> = Vec::new();
    let mut points_q: Vec<(i32, i32)> = Vec::new();
    let mut ty = GeomType::LineString;
    // The tile with its buffer and the tolerance, in world units: the stretches of a
    // long line outside it cannot reach the tile (see `WorldShape::stretches_near`).
    let window = {
        let [x0, y0, x1, y1] = coord.world_bounds();
        let pad = buffer / EXTENT as f64 / coord.scale() + tol;
        [x0 - pad, y0 - pad, x1 + pad, y1 + pad]
    };
    let mut stretches: Vec<std::ops::Range<usize>> = Vec::new();
    for slot in candidates {
        let Some(shape) = idx.world_shape(slot) else {
            continue;
        };
        g.clear();
        points_q.clear();
        // Whether the current polygon's exterior was kept (its holes follow it).
        let mut exterior_kept = false;
        // Whether clipping left anything (then an empty result means it collapsed).
        let mut reached = false;
        for part in &shape.parts {
            let (xy, imp) = shape.part(part);
            kept.clear();
            if part.kind == PartKind::Line && part.chunks.is_some() {
                // A long line (thousands to a million vertices): only the stretches
                // near the tile are simplified and clipped. Each stretch is drawn from
                // its first to its last vertex (outside the tile by more than the
                // tolerance) through its vertices kept at this tolerance.
                ty = GeomType::LineString;
                shape.stretches_near(part, window, &mut stretches);
                for r in stretches.iter().cloned() {
                    kept.clear();
                    let last = r.end - 1;
                    kept.push(coord.to_tile(xy[r.start]));
                    kept.extend(
                        (r.start + 1..last)
                            .filter(|&i| imp[i] > tol_sq)
                            .map(|i| coord.to_tile(xy[i])),
                    );
                    kept.push(coord.to_tile(xy[last]));
                    clip_line_into(&kept, &bx, &mut clipped, &mut clipped_parts);
                    reached |= !clipped_parts.is_empty() || kept.iter().any(|&p| bx.contains(p));
                    draw_clipped(&clipped, &clipped_parts, &mut q, &mut g);
                }
                continue;
            }
            if part.max_inner <= tol_sq {
                // Simplified to its ends (most lines at low zoom): skip the vertex scan.
                kept.push(coord.to_tile(xy[0]));
                kept.push(coord.to_tile(xy[xy.len() - 1]));
            } else {
                kept.extend(
                    xy.iter()
                        .zip(imp)
                        .filter(|(_, v)| **v > tol_sq)
                        .map(|(p, _)| coord.to_tile(*p)),
                );
            }
            match part.kind {
                PartKind::Point => {
                    ty = GeomType::Point;
                    let p = coord.to_tile(xy[0]);
                    if bx.contains(p) {
                        reached = true;
                        points_q.push(quantise(p));
                    }
                }
                PartKind::Line => {
                    ty = GeomType::LineString;
                    clip_line_into(&kept, &bx, &mut clipped, &mut clipped_parts);
                    reached |= !clipped_parts.is_empty() || kept.iter().any(|&p| bx.contains(p));
                    draw_clipped(&clipped, &clipped_parts, &mut q, &mut g);
                }
                PartKind::Exterior | PartKind::Interior => {
                    ty = GeomType::Polygon;
                    // A vertex strictly inside the box: the polygon's area reaches
                    // the tile, so nothing drawn means it collapsed (simplified or
                    // snapped away).
                    reached |= kept
                        .iter()
                        .any(|p| p[0] > bx.min && p[0] < bx.max && p[1] > bx.min && p[1] < bx.max);
                    // A ring simplified below three points is gone, and the holes of
                    // a vanished exterior with it (even-odd would fill them).
                    let distinct = kept.len() >= 4;
                    if part.kind == PartKind::Exterior {
                        exterior_kept = distinct;
                    }
                    if !distinct || !exterior_kept {
                        continue;
                    }
                    rings.push(std::mem::take(&mut kept));
                }
            }
        }
        if !rings.is_empty() {
            for shape in clip_polygon(&rings, &bx) {
                for ring in &shape {
                    g.ring(ring);
                }
            }
            rings.clear();
        }
        if !points_q.is_empty() {
            g.points(&points_q);
        }
        if g.is_empty() {
            if reached {
                // In the tile, but nothing drawable left after quantisation.
                stats.dropped_degenerate += 1;
                tracing::debug!(layer = %def.name, id = %idx.id(slot), z = coord.z, "feature dropped: nothing drawable left in the tile");
            }
            continue;
        }
        tags(w, def, marks, idx, slot);
        if !w.add_feature(Some(idx.fid(slot) as u64), ty, &g, budget) {
            stats.truncated = true;
            break;
        }
        stats.features += 1;
    }
    stats
}
