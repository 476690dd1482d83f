//! The in-memory index: per layer, an R-tree (rstar) over feature envelopes plus the
//! features themselves in compact columns, addressed by slot.
//!
//! Memory is set by the sensors (4.52 M points): a point feature costs its R-tree leaf
//! (about 80 bytes: rstar's node enum is 64 bytes whatever the leaf), its coordinate
//! (16), fid (8), id (24, inline up to 24 bytes), 4-16 bytes per property and a few
//! bytes of the id hash table. Start-up always bulk-loads (a tree built by single
//! inserts is much slower to query); edits insert and remove single leaves.
//!
//! Coordinates are WGS84 degrees, lon/lat. Queries are exact: the tree finds
//! candidates by envelope, the geometry decides.

mod changes;
mod columns;
mod generalise;
mod marks;

use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::sync::Arc;

use compact_str::CompactString;
use geo::{BoundingRect, Distance, Euclidean, Geodesic, Intersects};
use geo_types::{Coord, Geometry, Line, Point};
use hashbrown::{DefaultHashBuilder, HashTable};
use rstar::{AABB, PointDistance, RTree, RTreeObject};

pub use changes::{CHANGE_LOG_CAPACITY, ChangeLog, MARK_LOG_CAPACITY, Touch, clock_ms};
pub use columns::{Column, Interner};
pub use generalise::{
    Cell, MAX_LAT, MAX_RANKS, PYRAMID_MAX_LEVEL, Part, PartKind, Pyramid, WorldShape, cell_key,
    cell_of, douglas_peucker_importance, dp_work_budget, eliminate_importance, from_world,
    to_world,
};
pub use marks::Marks;

use crate::model::{Bbox, Feature, FeatureRef, LayerDef, StoredFeature, UnreadableRows, ValueRef};

/// An R-tree leaf: a feature's envelope and its slot.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry {
    env: AABB<[f64; 2]>,
    slot: u32,
}

impl RTreeObject for Entry {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        self.env
    }
}

impl PointDistance for Entry {
    /// Squared distance to the envelope: exact for points, a lower bound otherwise.
    fn distance_2(&self, point: &[f64; 2]) -> f64 {
        self.env.distance_2(point)
    }
}

/// Geometries by slot: bare coordinates for point layers, full geometries otherwise.
enum Geoms {
    Points(Vec<Coord>),
    Shapes(Vec<Geometry>),
}

/// A borrowed geometry.
#[derive(Clone, Copy, Debug)]
pub enum GeomRef<'a> {
    Point(Coord),
    Shape(&'a Geometry),
}

impl GeomRef<'_> {
    pub fn to_geometry(self) -> Geometry {
        match self {
            GeomRef::Point(c) => Point(c).into(),
            GeomRef::Shape(g) => g.clone(),
        }
    }

    pub fn bbox(self) -> Bbox {
        match self {
            GeomRef::Point(c) => Bbox::of_coord(c),
            GeomRef::Shape(g) => Bbox::of_geometry(g).unwrap_or(Bbox::of_coord(Coord::zero())),
        }
    }
}

fn envelope(g: GeomRef<'_>) -> AABB<[f64; 2]> {
    match g {
        GeomRef::Point(c) => AABB::from_point([c.x, c.y]),
        GeomRef::Shape(s) => match s.bounding_rect() {
            Some(r) => AABB::from_corners([r.min().x, r.min().y], [r.max().x, r.max().y]),
            // Stored geometries are never empty (model::geometry::check).
            None => AABB::from_point([0.0, 0.0]),
        },
    }
}

/// Whether a geometry shares at least one point with the closed box. Zero-width or
/// zero-height boxes are tested as the segment or point they are.
pub fn geometry_intersects_bbox(g: GeomRef<'_>, b: &Bbox) -> bool {
    match g {
        GeomRef::Point(c) => b.contains_coord(c),
        GeomRef::Shape(s) => {
            let min = Coord {
                x: b.min_lon,
                y: b.min_lat,
            };
            let max = Coord {
                x: b.max_lon,
                y: b.max_lat,
            };
            if min == max {
                s.intersects(&min)
            } else if min.x == max.x || min.y == max.y {
                s.intersects(&Line::new(min, max))
            } else {
                s.intersects(&b.to_rect())
            }
        }
    }
}

/// Planar distance in degrees from `c` to a geometry (0 inside a polygon).
pub fn distance_to(g: GeomRef<'_>, c: Coord) -> f64 {
    match g {
        GeomRef::Point(p) => ((p.x - c.x).powi(2) + (p.y - c.y).powi(2)).sqrt(),
        GeomRef::Shape(s) => Euclidean.distance(&Geometry::Point(Point(c)), s),
    }
}

/// Geodesic length (WGS84 ellipsoid) of a line geometry in kilometres; 0 for others.
pub fn geodesic_length_km(g: &Geometry) -> f64 {
    geodesic_length_m(GeomRef::Shape(g)) / 1000.0
}

fn geodesic_length_m(g: GeomRef<'_>) -> f64 {
    match g {
        GeomRef::Shape(Geometry::LineString(l)) => line_length_m(l),
        GeomRef::Shape(Geometry::MultiLineString(m)) => m.0.iter().map(line_length_m).sum(),
        _ => 0.0,
    }
}

/// Largest latitude or longitude difference, degrees, of a segment measured on the
/// tangent plane in [`line_length_m`] (about 1.1 km north–south) ...
const SHORT_SEGMENT_DEG: f64 = 0.01;
/// ... and the highest latitude where it is (meridians converge faster beyond).
const SHORT_SEGMENT_MAX_LAT: f64 = 60.0;

/// Length of a line on the WGS84 ellipsoid, metres. Karney's inverse solution (geo's
/// `Geodesic`) costs about a microsecond a segment, a second for a line of a million
/// vertices, paid again at every start; so a short segment (both differences under
/// [`SHORT_SEGMENT_DEG`] and within [`SHORT_SEGMENT_MAX_LAT`], which is nearly every
/// segment of a surveyed line in China) is measured
/// on the ellipsoid's tangent plane at its mid-latitude, with the meridional (M) and
/// prime-vertical (N) radii of curvature there: relative error under 1e-8 at that size
/// (a test compares it with Karney's), some 20 times faster. Longer segments use Karney's.
/// No crate offers this shortcut.
fn line_length_m(l: &geo_types::LineString) -> f64 {
    const A: f64 = 6_378_137.0;
    const F: f64 = 1.0 / 298.257_223_563;
    const E2: f64 = F * (2.0 - F);
    l.0.windows(2)
        .map(|w| {
            let (p, q) = (w[0], w[1]);
            let (dlon, dlat) = (q.x - p.x, q.y - p.y);
            let mid_lat = (p.y + q.y) / 2.0;
            if dlon.abs() <= SHORT_SEGMENT_DEG
                && dlat.abs() <= SHORT_SEGMENT_DEG
                && mid_lat.abs() <= SHORT_SEGMENT_MAX_LAT
            {
                let phi = mid_lat.to_radians();
                let w2 = 1.0 - E2 * phi.sin().powi(2);
                let n = A / w2.sqrt();
                let m = A * (1.0 - E2) / (w2 * w2.sqrt());
                let dx = dlon.to_radians() * n * phi.cos();
                let dy = dlat.to_radians() * m;
                dx.hypot(dy)
            } else {
                Geodesic.distance(Point(p), Point(q))
            }
        })
        .sum()
}

/// What indexing a feature costs beyond copying it, computed before any lock is taken
/// (see [`LayerIndex::prepare`]): its Web Mercator coordinates with vertex importances
/// (Douglas–Peucker, O(n log n) on any input) and its geodesic length.
#[derive(Clone, Debug)]
pub struct Derived {
    world: DerivedWorld,
    /// Geodesic length on WGS84, metres (0 for points and polygons).
    length_m: f64,
}

#[derive(Clone, Debug)]
enum DerivedWorld {
    /// World coordinates of a point (`NaN` beyond the Mercator latitude limit).
    Point([f64; 2]),
    Shape(WorldShape),
}

impl Derived {
    /// The derived data of `g` in a layer of points (`point_layer`) or of shapes.
    pub fn of(point_layer: bool, g: &Geometry) -> Derived {
        if point_layer {
            let w = match g {
                Geometry::Point(p) => to_world(p.0).unwrap_or([f64::NAN; 2]),
                _ => [f64::NAN; 2],
            };
            Derived {
                world: DerivedWorld::Point(w),
                length_m: 0.0,
            }
        } else {
            Derived {
                world: DerivedWorld::Shape(WorldShape::new(g)),
                length_m: geodesic_length_m(GeomRef::Shape(g)),
            }
        }
    }
}

/// Geometries of at least this many vertices keep what was derived from them in the
/// store ([`Derived::kept`], stored beside the row by `store::Tx::insert_feature`),
/// so that a start neither checks nor derives them again: for a million vertices that
/// is 0.3–2 s of Douglas–Peucker and up to 2 s of polygon validation, against some
/// 5 ms to verify the blob's CRC. Smaller geometries cost a few milliseconds at most.
/// (Their blobs are at least 16 bytes a vertex, so over `store::KEPT_FROM_BYTES`.)
pub const KEEP_FROM_VERTICES: usize = 8192;

/// Version of the kept data: its layout and the algorithms that produced it
/// (`to_world_clamped`, `douglas_peucker_importance`, `line_length_m`). Bump it when
/// any of them changes: data kept by an earlier build is then derived afresh.
const KEPT_VERSION: u32 = 1;

impl Derived {
    /// What to keep in the store for a line or polygon geometry of at least
    /// [`KEEP_FROM_VERTICES`] vertices (`None` for others): [`KEPT_VERSION`], the
    /// geodesic length (f64) and the vertex importances (f32), little-endian. Its
    /// Web Mercator coordinates are not kept: projecting is cheap.
    pub fn kept(&self) -> Option<Vec<u8>> {
        let DerivedWorld::Shape(s) = &self.world else {
            return None;
        };
        if s.xy.len() < KEEP_FROM_VERTICES {
            return None;
        }
        let mut out = Vec::with_capacity(12 + 4 * s.importance.len());
        out.extend(KEPT_VERSION.to_le_bytes());
        out.extend(self.length_m.to_le_bytes());
        for v in &s.importance {
            out.extend(v.to_le_bytes());
        }
        Some(out)
    }

    /// What to keep for a geometry about to be stored where no [`Derived`] is at hand
    /// (imports): derived only when it is large enough to be kept.
    pub fn kept_for(layer: &LayerDef, g: &Geometry) -> Option<Vec<u8>> {
        use geo::CoordsIter;
        if layer.geometry.is_point() || g.coords_count() < KEEP_FROM_VERTICES {
            return None;
        }
        Self::of(false, g).kept()
    }

    /// [`Derived::of`], taking the importances and length from `kept` (see
    /// [`Derived::kept`]) when it is of this version and fits the geometry.
    pub fn of_kept(point_layer: bool, g: &Geometry, kept: Option<&[u8]>) -> Derived {
        match kept {
            Some(k) if !point_layer => Self::from_kept(g, k).unwrap_or_else(|| {
                tracing::debug!("kept derived data does not fit its geometry: derived afresh");
                Self::of(point_layer, g)
            }),
            _ => Self::of(point_layer, g),
        }
    }

    fn from_kept(g: &Geometry, k: &[u8]) -> Option<Derived> {
        let (version, rest) = k.split_first_chunk::<4>()?;
        let (length, rest) = rest.split_first_chunk::<8>()?;
        let length_m = f64::from_le_bytes(*length);
        if u32::from_le_bytes(*version) != KEPT_VERSION
            || rest.len() % 4 != 0
            || !(length_m.is_finite() && length_m >= 0.0)
        {
            return None;
        }
        let importance: Vec<f32> = rest
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // Importances are squared distances, or infinite for part ends.
        if importance.iter().any(|v| v.is_nan() || *v < 0.0) {
            return None;
        }
        Some(Derived {
            world: DerivedWorld::Shape(WorldShape::with_importance(g, &importance)?),
            length_m,
        })
    }
}

/// A feature ready to enter an index: the expensive part done (outside every lock).
#[derive(Clone, Debug)]
pub struct Prepared {
    pub feature: Feature,
    pub derived: Derived,
}

impl Prepared {
    pub fn new(layer: &LayerDef, feature: Feature) -> Prepared {
        let derived = Derived::of(layer.geometry.is_point(), &feature.geometry);
        Prepared { feature, derived }
    }
}

/// One layer as the server holds it: its definition, its index, where it last
/// changed (for tile freshness), and the rows of its table it does not serve.
pub struct LayerState {
    pub def: Arc<LayerDef>,
    pub index: parking_lot::RwLock<LayerIndex>,
    /// Where its features changed (edits, imports, reloads): a tile drawn before a
    /// change touching it is never served (the next read after an acknowledged edit
    /// shows it), and what is derived from the features in one place (a pipeline's
    /// attached risk points) is stale.
    pub changes: ChangeLog,
    /// Where its marks changed (warning levels raised or lowered by readings): the
    /// tiles drawn before are behind, by the age of the oldest such change (see
    /// `api::tiles` for when a tile a little behind is answered).
    pub mark_changes: ChangeLog,
    pub unreadable: parking_lot::Mutex<UnreadableRows>,
    /// Warning levels on its features (risk points, pipelines), drawn in its tiles.
    pub marks: parking_lot::RwLock<Marks>,
    /// Counts changes of its features (not of its marks): what is derived from the
    /// features elsewhere (the sensors a readings group has swept) is stale when it
    /// moved.
    pub edits: std::sync::atomic::AtomicU64,
}

impl LayerState {
    /// Records that features changed within `boxes`: the change log and the edit
    /// count.
    pub fn record_edit(&self, boxes: &[Bbox]) {
        self.edits.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.changes.record(boxes);
    }

    /// Records that the whole layer changed.
    pub fn record_all_edited(&self) {
        self.edits.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.changes.record_all();
    }

    pub fn edit_count(&self) -> u64 {
        self.edits.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl LayerState {
    pub fn new(index: LayerIndex) -> Self {
        LayerState {
            def: index.layer().clone(),
            index: parking_lot::RwLock::new(index),
            changes: ChangeLog::default(),
            mark_changes: ChangeLog::with_capacity(MARK_LOG_CAPACITY),
            unreadable: parking_lot::Mutex::new(UnreadableRows::default()),
            marks: parking_lot::RwLock::new(Marks::default()),
            edits: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// The importance order and each slot's rank in it.
type ImportanceTables = (Arc<Vec<Ranked>>, Arc<Vec<u32>>);

/// An entry of [`LayerIndex::importance_order`].
#[derive(Clone, Copy, Debug)]
pub struct Ranked {
    pub slot: u32,
    /// World bounds `[min_x, min_y, max_x, max_y]`.
    pub bbox: [f64; 4],
}

/// Interleaves the bits of `x` and `y` (x in the even bits).
fn morton(x: u32, y: u32) -> u64 {
    fn spread(v: u32) -> u64 {
        let mut v = v as u64;
        v = (v | (v << 16)) & 0x0000_FFFF_0000_FFFF;
        v = (v | (v << 8)) & 0x00FF_00FF_00FF_00FF;
        v = (v | (v << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
        v = (v | (v << 2)) & 0x3333_3333_3333_3333;
        v = (v | (v << 1)) & 0x5555_5555_5555_5555;
        v
    }
    spread(x) | (spread(y) << 1)
}

/// One layer's index.
pub struct LayerIndex {
    layer: Arc<LayerDef>,
    tree: RTree<Entry>,
    /// 0 marks a free slot (GeoPackage fids start at 1).
    fids: Vec<i64>,
    ids: Vec<CompactString>,
    geoms: Geoms,
    columns: Vec<Column>,
    by_id: HashTable<u32>,
    hasher: DefaultHashBuilder,
    free: Vec<u32>,
    /// Sum of geodesic lengths of line features, metres.
    length_m: f64,
    /// Each slot's geodesic length, metres (empty for point layers).
    lengths: Vec<f64>,
    /// Web Mercator world coordinates by slot (see `generalise`).
    world: World,
    /// Count pyramid of a point layer (clusters in tiles).
    pyramid: Option<Pyramid>,
    /// Slots of a layer with an importance property, most important first (slot
    /// order breaking ties: spatial after a load); rebuilt on first use after an edit.
    importance_order: parking_lot::Mutex<Option<ImportanceTables>>,
}

/// World coordinates by slot: points (`NaN` beyond the Mercator latitude limit), or
/// projected shapes with vertex importances.
enum World {
    Points(Vec<[f64; 2]>),
    Shapes(Vec<WorldShape>),
}

impl LayerIndex {
    /// An empty index for `layer`.
    pub fn new(layer: Arc<LayerDef>) -> Self {
        let geoms = if layer.geometry.is_point() {
            Geoms::Points(Vec::new())
        } else {
            Geoms::Shapes(Vec::new())
        };
        let columns = layer.properties.iter().map(|p| Column::new(p.ty)).collect();
        let (world, pyramid) = if layer.geometry.is_point() {
            (World::Points(Vec::new()), Some(Pyramid::default()))
        } else {
            (World::Shapes(Vec::new()), None)
        };
        LayerIndex {
            world,
            pyramid,
            importance_order: parking_lot::Mutex::new(None),
            layer,
            tree: RTree::new(),
            fids: Vec::new(),
            ids: Vec::new(),
            geoms,
            columns,
            by_id: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            free: Vec::new(),
            length_m: 0.0,
            lengths: Vec::new(),
        }
    }

    /// Builds an index with one bulk load from rows handed to the callback `load`
    /// gives (fid, borrowed feature, and what was kept with its geometry, see
    /// [`Derived::kept`]).
    ///
    /// Ids must be unique (the store's UNIQUE constraint); `expected` sizes the tables
    /// up front (a row count; a wrong guess only costs reallocation).
    pub fn build<E>(
        layer: Arc<LayerDef>,
        expected: usize,
        load: impl FnOnce(&mut dyn FnMut(i64, FeatureRef<'_>, Option<&[u8]>)) -> Result<(), E>,
    ) -> Result<Self, E> {
        let t0 = std::time::Instant::now();
        let mut index = LayerIndex::new(layer);
        index.reserve(expected);
        // The pyramid is built once at the end, not point by point.
        let pyramid = index.pyramid.take();
        load(&mut |fid, f, kept| {
            debug_assert!(index.slot(f.id).is_none(), "duplicate id {}", f.id);
            let derived = Derived::of_kept(index.layer.geometry.is_point(), f.geometry, kept);
            index.allocate(fid, &f, derived);
        })?;
        index.reorder_spatially();
        let entries: Vec<Entry> = (0..index.fids.len() as u32)
            .map(|slot| Entry {
                env: envelope(index.geometry(slot)),
                slot,
            })
            .collect();
        let t1 = t0.elapsed();
        index.tree = RTree::bulk_load(entries);
        let t2 = t0.elapsed();
        if pyramid.is_some() {
            let points = (0..index.fids.len() as u32)
                .filter_map(|s| index.world_point(s).map(|w| (w, index.rank(s), s)));
            let built = Pyramid::build(points);
            index.pyramid = Some(built);
        }
        tracing::debug!(layer = %index.layer.name, rows_ms = t1.as_millis() as u64, rtree_ms = (t2 - t1).as_millis() as u64, pyramid_ms = (t0.elapsed() - t2).as_millis() as u64, "index built");
        Ok(index)
    }

    /// Renumbers the slots along a Morton (Z-order) curve of their world position, so
    /// features close on the map are close in memory: a tile touches a few runs of
    /// memory instead of a scattered slot per point (rows come in fid order, which is
    /// import order, spatially random for sensors). Layers with an importance property
    /// are ordered by importance first. Only for a freshly built index without free
    /// slots.
    fn reorder_spatially(&mut self) {
        let n = self.fids.len();
        if n < 2 || !self.free.is_empty() {
            return;
        }
        let key = |slot: usize| -> u64 {
            let w = match &self.world {
                World::Points(v) => v[slot],
                World::Shapes(v) => v[slot].xy.first().copied().unwrap_or([0.0, 0.0]),
            };
            let q = |t: f64| {
                if t.is_finite() {
                    (t.clamp(0.0, 1.0) * u32::MAX as f64) as u32
                } else {
                    u32::MAX
                }
            };
            morton(q(w[0]), q(w[1]))
        };
        // Layers ranked by an importance property are walked in that order at low zoom:
        // they are ordered by importance first, then spatially.
        let ranked = self.layer.tiles.importance.is_some();
        let mut order: Vec<(f64, u64, u32)> = (0..n)
            .map(|s| {
                (
                    if ranked {
                        -self.importance(s as u32)
                    } else {
                        0.0
                    },
                    key(s),
                    s as u32,
                )
            })
            .collect();
        order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let perm: Vec<u32> = order.into_iter().map(|(_, _, s)| s).collect();
        fn permute<T: Default>(v: &mut Vec<T>, perm: &[u32]) {
            let mut old = std::mem::take(v);
            *v = perm
                .iter()
                .map(|&o| std::mem::take(&mut old[o as usize]))
                .collect();
        }
        permute(&mut self.fids, &perm);
        if !self.lengths.is_empty() {
            permute(&mut self.lengths, &perm);
        }
        permute(&mut self.ids, &perm);
        match &mut self.geoms {
            Geoms::Points(v) => permute(v, &perm),
            Geoms::Shapes(v) => {
                let mut old = std::mem::take(v);
                *v = perm
                    .iter()
                    .map(|&o| std::mem::replace(&mut old[o as usize], Point(Coord::zero()).into()))
                    .collect();
            }
        }
        match &mut self.world {
            World::Points(v) => {
                let old = std::mem::take(v);
                *v = perm.iter().map(|&o| old[o as usize]).collect();
            }
            World::Shapes(v) => permute(v, &perm),
        }
        for c in &mut self.columns {
            c.permute(&perm);
        }
        self.by_id.clear();
        for slot in 0..n as u32 {
            let hash = self.hasher.hash_one(self.ids[slot as usize].as_str());
            let (ids, hasher) = (&self.ids, &self.hasher);
            self.by_id
                .insert_unique(hash, slot, |&s| hasher.hash_one(ids[s as usize].as_str()));
        }
    }

    /// Room for `n` more features without reallocating.
    fn reserve(&mut self, n: usize) {
        self.fids.reserve(n);
        self.ids.reserve(n);
        match &mut self.geoms {
            Geoms::Points(v) => v.reserve(n),
            Geoms::Shapes(v) => v.reserve(n),
        }
        match &mut self.world {
            World::Points(v) => v.reserve(n),
            World::Shapes(v) => v.reserve(n),
        }
        for c in &mut self.columns {
            c.reserve(n);
        }
        let (ids, hasher) = (&self.ids, &self.hasher);
        self.by_id
            .reserve(n, |&s| hasher.hash_one(ids[s as usize].as_str()));
    }

    pub fn layer(&self) -> &Arc<LayerDef> {
        &self.layer
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.tree.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The box around every feature, `None` when empty.
    pub fn extent(&self) -> Option<Bbox> {
        if self.is_empty() {
            return None;
        }
        let env = self.tree.root().envelope();
        Some(Bbox {
            min_lon: env.lower()[0],
            min_lat: env.lower()[1],
            max_lon: env.upper()[0],
            max_lat: env.upper()[1],
        })
    }

    /// Total geodesic length of a line layer's features, kilometres.
    pub fn length_km(&self) -> f64 {
        self.length_m / 1000.0
    }

    fn hash_id(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    /// The slot holding feature `id`.
    pub fn slot(&self, id: &str) -> Option<u32> {
        let ids = &self.ids;
        self.by_id
            .find(self.hash_id(id), |&s| ids[s as usize] == id)
            .copied()
    }

    pub fn fid(&self, slot: u32) -> i64 {
        self.fids[slot as usize]
    }

    pub fn id(&self, slot: u32) -> &str {
        &self.ids[slot as usize]
    }

    pub fn geometry(&self, slot: u32) -> GeomRef<'_> {
        match &self.geoms {
            Geoms::Points(v) => GeomRef::Point(v[slot as usize]),
            Geoms::Shapes(v) => GeomRef::Shape(&v[slot as usize]),
        }
    }

    /// Value of property number `prop` (the layer's declaration order).
    pub fn value(&self, slot: u32, prop: usize) -> ValueRef<'_> {
        self.columns[prop].get(slot as usize)
    }

    /// A text property's interned symbol and value (see [`Column::symbol`]).
    pub fn text_symbol(&self, slot: u32, prop: usize) -> Option<(u32, &str)> {
        self.columns[prop].symbol(slot as usize)
    }

    /// How many features have text `s` in property `prop` (a text property).
    pub fn uses(&self, prop: usize, s: &str) -> u32 {
        self.columns[prop].text_uses(s)
    }

    /// Each distinct text of property `prop` (a text property) with the number of
    /// features having it.
    pub fn distinct_text(&self, prop: usize) -> Vec<(String, u32)> {
        self.columns[prop].distinct_text()
    }

    /// Counts the values of integer property `prop` in slots `slots` into `counts`
    /// (callers walk a large layer in ranges, taking the lock per range).
    pub fn count_ints(
        &self,
        prop: usize,
        slots: std::ops::Range<usize>,
        counts: &mut hashbrown::HashMap<i64, u32>,
    ) {
        self.columns[prop].count_ints(slots, counts);
    }

    /// The number of slots, live and free: the end of slot ranges.
    pub fn slot_count(&self) -> usize {
        self.fids.len()
    }

    /// Whether property `prop` is held as interned text.
    pub fn is_text(&self, prop: usize) -> bool {
        matches!(self.columns[prop], Column::Text { .. })
    }

    /// The whole feature, copied out.
    pub fn feature(&self, slot: u32) -> StoredFeature {
        StoredFeature {
            fid: self.fid(slot),
            feature: Feature {
                id: self.id(slot).to_string(),
                geometry: self.geometry(slot).to_geometry(),
                values: (0..self.columns.len())
                    .map(|i| self.value(slot, i).into_owned())
                    .collect(),
            },
        }
    }

    pub fn get(&self, id: &str) -> Option<StoredFeature> {
        self.slot(id).map(|s| self.feature(s))
    }

    /// Every live slot, in no particular order.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.tree.iter().map(|e| e.slot)
    }

    /// Puts a feature in a free (or new) slot and its id in the hash table; the
    /// caller adds the tree entry.
    fn allocate(&mut self, fid: i64, f: &FeatureRef<'_>, derived: Derived) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.write_slot(slot, fid, f, derived);
                slot
            }
            None => {
                // A new slot at the end: values are pushed once, in place.
                let slot = self.fids.len() as u32;
                self.fids.push(fid);
                self.ids.push(CompactString::new(f.id));
                match (&mut self.geoms, f.geometry) {
                    (Geoms::Points(v), Geometry::Point(p)) => v.push(p.0),
                    (Geoms::Points(v), _) => v.push(Coord::zero()),
                    (Geoms::Shapes(v), g) => v.push(g.clone()),
                }
                for (col, v) in self.columns.iter_mut().zip(f.values) {
                    col.push(*v);
                }
                match (&mut self.world, derived.world) {
                    (World::Points(v), DerivedWorld::Point(w)) => v.push(w),
                    (World::Shapes(v), DerivedWorld::Shape(w)) => v.push(w),
                    // `Derived::of` follows the layer's kind; a mismatch draws nothing.
                    (World::Points(v), _) => v.push([f64::NAN; 2]),
                    (World::Shapes(v), _) => v.push(WorldShape::default()),
                }
                if !self.layer.geometry.is_point() {
                    self.lengths.push(derived.length_m);
                }
                self.index_derived(slot);
                slot
            }
        };
        let hash = self.hash_id(f.id);
        let (ids, hasher) = (&self.ids, &self.hasher);
        self.by_id
            .insert_unique(hash, slot, |&s| hasher.hash_one(ids[s as usize].as_str()));
        slot
    }

    /// Overwrites a slot's content, keeping the length total and the pyramid right.
    fn write_slot(&mut self, slot: u32, fid: i64, f: &FeatureRef<'_>, derived: Derived) {
        let s = slot as usize;
        self.unindex_derived(slot);
        self.fids[s] = fid;
        self.ids[s] = CompactString::new(f.id);
        match (&mut self.geoms, f.geometry) {
            (Geoms::Points(v), Geometry::Point(p)) => v[s] = p.0,
            (Geoms::Points(v), _) => v[s] = Coord::zero(),
            (Geoms::Shapes(v), g) => v[s] = g.clone(),
        }
        for (col, v) in self.columns.iter_mut().zip(f.values) {
            col.set(s, *v);
        }
        match (&mut self.world, derived.world) {
            (World::Points(v), DerivedWorld::Point(w)) => v[s] = w,
            (World::Shapes(v), DerivedWorld::Shape(w)) => v[s] = w,
            (World::Points(v), _) => v[s] = [f64::NAN; 2],
            (World::Shapes(v), _) => v[s] = WorldShape::default(),
        }
        if let Some(l) = self.lengths.get_mut(s) {
            *l = derived.length_m;
        }
        self.index_derived(slot);
    }

    /// Adds the slot's current content to the totals and the pyramid.
    fn index_derived(&mut self, slot: u32) {
        *self.importance_order.get_mut() = None;
        self.length_m += self.lengths.get(slot as usize).copied().unwrap_or(0.0);
        if let (Some(w), rank) = (self.world_point(slot), self.rank(slot)) {
            if let Some(p) = &mut self.pyramid {
                p.apply(w, rank, slot, 1);
            }
        }
    }

    /// Takes the slot's current content out of the totals and the pyramid.
    fn unindex_derived(&mut self, slot: u32) {
        *self.importance_order.get_mut() = None;
        if self.fids[slot as usize] == 0 {
            return; // a free slot holds nothing
        }
        self.length_m -= self.lengths.get(slot as usize).copied().unwrap_or(0.0);
        if let (Some(w), rank) = (self.world_point(slot), self.rank(slot)) {
            if let Some(p) = &mut self.pyramid {
                p.apply(w, rank, slot, -1);
            }
        }
    }

    /// Derives what indexing `f` needs (projection, vertex importances, length): the
    /// expensive part of an insert, to be done before taking the index's write lock.
    pub fn prepare(&self, f: Feature) -> Prepared {
        Prepared::new(&self.layer, f)
    }

    /// Inserts or replaces feature `f` (stored as row `fid`), deriving what it needs
    /// here. Returns the box of the geometry it replaced, if any.
    pub fn upsert(&mut self, fid: i64, f: &Feature) -> Option<Bbox> {
        let derived = Derived::of(self.layer.geometry.is_point(), &f.geometry);
        self.upsert_prepared(fid, f, derived)
    }

    /// Inserts or replaces feature `f` (stored as row `fid`) with what was derived of it
    /// beforehand (see [`Derived::of`]): O(log n) in the tree plus a copy of the
    /// feature, so writers hold the index's lock for microseconds. Returns the box of
    /// the geometry it replaced, if any.
    pub fn upsert_prepared(&mut self, fid: i64, f: &Feature, derived: Derived) -> Option<Bbox> {
        let values: Vec<ValueRef<'_>> = f.values.iter().map(|v| v.as_ref()).collect();
        let f = &FeatureRef {
            id: &f.id,
            geometry: &f.geometry,
            values: &values,
        };
        match self.slot(f.id) {
            Some(slot) => {
                let old = self.geometry(slot);
                let old_bbox = old.bbox();
                let old_entry = Entry {
                    env: envelope(old),
                    slot,
                };
                self.tree.remove(&old_entry);
                self.write_slot(slot, fid, f, derived);
                self.tree.insert(Entry {
                    env: envelope(self.geometry(slot)),
                    slot,
                });
                Some(old_bbox)
            }
            None => {
                let slot = self.allocate(fid, f, derived);
                self.tree.insert(Entry {
                    env: envelope(self.geometry(slot)),
                    slot,
                });
                None
            }
        }
    }

    /// Removes feature `id`; returns the box of its geometry.
    pub fn remove(&mut self, id: &str) -> Option<Bbox> {
        let slot = self.slot(id)?;
        let g = self.geometry(slot);
        let (bbox, env) = (g.bbox(), envelope(g));
        self.tree.remove(&Entry { env, slot });
        self.unindex_derived(slot);
        let hash = self.hash_id(id);
        if let Ok(entry) = self.by_id.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        let s = slot as usize;
        self.fids[s] = 0;
        self.ids[s] = CompactString::default();
        match &mut self.geoms {
            Geoms::Shapes(v) => v[s] = Point(Coord::zero()).into(),
            Geoms::Points(v) => v[s] = Coord::zero(),
        }
        match &mut self.world {
            World::Points(v) => v[s] = [f64::NAN; 2],
            World::Shapes(v) => v[s] = WorldShape::default(),
        }
        if let Some(l) = self.lengths.get_mut(s) {
            *l = 0.0;
        }
        for col in &mut self.columns {
            col.set(s, ValueRef::Null);
        }
        self.free.push(slot);
        Some(bbox)
    }

    /// A point's world coordinates (`None` for other layers, free slots and points
    /// beyond the Mercator latitude limit).
    pub fn world_point(&self, slot: u32) -> Option<[f64; 2]> {
        match &self.world {
            World::Points(v) => v.get(slot as usize).copied().filter(|w| !w[0].is_nan()),
            World::Shapes(_) => None,
        }
    }

    /// A line or polygon's projected shape (`None` for point layers).
    pub fn world_shape(&self, slot: u32) -> Option<&WorldShape> {
        match &self.world {
            World::Shapes(v) => v.get(slot as usize),
            World::Points(_) => None,
        }
    }

    /// The point layer's count pyramid.
    pub fn pyramid(&self) -> Option<&Pyramid> {
        self.pyramid.as_ref()
    }

    /// The slot's position in the cluster rank property's values (0 = most severe).
    pub fn rank(&self, slot: u32) -> Option<usize> {
        let p = self.layer.tiles.cluster_rank?;
        let values = self.layer.properties[p].values.as_ref()?;
        match self.value(slot, p) {
            ValueRef::Text(t) => values.iter().position(|v| v == t),
            _ => None,
        }
    }

    /// Live line and polygon features by decreasing importance (then slot), with their
    /// world bounds inline: tiles over large areas walk this in order, testing bounds
    /// as they go, instead of querying and sorting. Rebuilt on first use after an edit.
    pub fn importance_order(&self) -> Arc<Vec<Ranked>> {
        self.importance_tables().0
    }

    /// Each slot's position in [`LayerIndex::importance_order`] (indexed by slot).
    pub fn importance_rank(&self) -> Arc<Vec<u32>> {
        self.importance_tables().1
    }

    fn importance_tables(&self) -> ImportanceTables {
        let mut cached = self.importance_order.lock();
        if let Some(o) = &*cached {
            return o.clone();
        }
        let mut keyed: Vec<(f64, Ranked)> = self
            .slots()
            .filter_map(|s| {
                self.world_shape(s).map(|w| {
                    (
                        self.importance(s),
                        Ranked {
                            slot: s,
                            bbox: w.bbox,
                        },
                    )
                })
            })
            .collect();
        // Ties in slot order: after a load that is spatial order (see
        // `reorder_spatially`), so the walk reads memory in sequence.
        keyed.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.slot.cmp(&b.1.slot)));
        let order: Vec<Ranked> = keyed.into_iter().map(|k| k.1).collect();
        let mut rank = vec![u32::MAX; self.fids.len()];
        for (i, r) in order.iter().enumerate() {
            rank[r.slot as usize] = i as u32;
        }
        let tables = (Arc::new(order), Arc::new(rank));
        *cached = Some(tables.clone());
        tables
    }

    /// The slot's importance for tile budgets (the layer's importance property; 0 when
    /// absent).
    pub fn importance(&self, slot: u32) -> f64 {
        match self.layer.tiles.importance.map(|p| self.value(slot, p)) {
            Some(ValueRef::Int(i)) => i as f64,
            Some(ValueRef::Float(f)) => f,
            _ => 0.0,
        }
    }

    /// Calls `visit` with every slot whose geometry shares a point with the closed
    /// box, in no particular order.
    pub fn for_each_in_bbox(&self, b: &Bbox, mut visit: impl FnMut(u32)) {
        let env = AABB::from_corners([b.min_lon, b.min_lat], [b.max_lon, b.max_lat]);
        let exact_by_envelope = self.layer.geometry.is_point();
        for e in self.tree.locate_in_envelope_intersecting(&env) {
            if exact_by_envelope || geometry_intersects_bbox(self.geometry(e.slot), b) {
                visit(e.slot);
            }
        }
    }

    /// Calls `visit` with every slot whose envelope meets the closed box (a superset of
    /// [`LayerIndex::for_each_in_bbox`], for callers that test geometry themselves).
    pub fn for_each_envelope_in_bbox(&self, b: &Bbox, mut visit: impl FnMut(u32)) {
        let env = AABB::from_corners([b.min_lon, b.min_lat], [b.max_lon, b.max_lat]);
        for e in self.tree.locate_in_envelope_intersecting(&env) {
            visit(e.slot);
        }
    }

    /// Slots intersecting the box, sorted by fid (a stable order for paging).
    pub fn in_bbox(&self, b: &Bbox) -> Vec<u32> {
        let mut out = Vec::new();
        self.for_each_in_bbox(b, |s| out.push(s));
        out.sort_unstable_by_key(|&s| self.fids[s as usize]);
        out
    }

    /// The `k` features nearest to `c` by planar distance in degrees, nearest first,
    /// ties broken by fid. Exact for every geometry type: candidates come from the
    /// tree in order of envelope distance (a lower bound) and the search stops once
    /// that bound exceeds the k-th exact distance.
    pub fn nearest(&self, c: Coord, k: usize) -> Vec<(u32, f64)> {
        if k == 0 {
            return Vec::new();
        }
        #[derive(PartialEq)]
        struct Hit(f64, i64, u32);
        impl Eq for Hit {}
        impl PartialOrd for Hit {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Hit {
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
            }
        }
        let mut best: BinaryHeap<Hit> = BinaryHeap::with_capacity(k + 1);
        for (e, env_d2) in self.tree.nearest_neighbor_iter_with_distance_2(&[c.x, c.y]) {
            if best.len() == k {
                if let Some(worst) = best.peek() {
                    // The envelope bound and the exact distance are computed differently
                    // and may round apart by an ulp; stop only when the bound is clearly
                    // beyond, so exact ties (broken by fid) are never cut off.
                    if env_d2.sqrt() > worst.0 * (1.0 + 1e-12) + 1e-300 {
                        break;
                    }
                }
            }
            let d = distance_to(self.geometry(e.slot), c);
            best.push(Hit(d, self.fids[e.slot as usize], e.slot));
            if best.len() > k {
                best.pop();
            }
        }
        let mut out: Vec<Hit> = best.into_vec();
        out.sort();
        out.into_iter().map(|h| (h.2, h.0)).collect()
    }

    /// Rough bytes held, for `/health` and memory reports.
    pub fn approx_bytes(&self) -> usize {
        let slots = self.fids.len();
        let geoms = match &self.geoms {
            Geoms::Points(v) => v.capacity() * 16,
            Geoms::Shapes(v) => v
                .iter()
                .map(|g| {
                    use geo::CoordsIter;
                    64 + g.coords_count() * 16
                })
                .sum(),
        };
        let columns: usize = self
            .columns
            .iter()
            .map(|c| match c {
                Column::Int(v) => v.capacity() * 16,
                Column::Float(v) => v.capacity() * 16,
                Column::Bool(v) => v.capacity() * 2,
                Column::Text { cells, strings } => cells.capacity() * 4 + strings.len() * 48,
            })
            .sum();
        self.tree.size() * 80 + slots * (8 + 24) + self.by_id.capacity() * 5 + geoms + columns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;
    use crate::model::test_layers::risk_points;

    /// A shape of `n` vertices zigzagging along a line, and a polygon whose outer ring
    /// does the same, with a hole.
    fn large_shapes(n: usize) -> [Geometry; 2] {
        let zig: Vec<Coord> = (0..n)
            .map(|i| Coord {
                x: 106.4 + i as f64 * 1e-6,
                y: 29.5
                    + if i % 2 == 0 {
                        0.0
                    } else {
                        1e-7 * (1 + i % 97) as f64
                    },
            })
            .collect();
        let mut ring = zig.clone();
        ring.extend([
            Coord {
                x: ring[n - 1].x,
                y: 29.49,
            },
            Coord { x: 106.4, y: 29.49 },
            zig[0],
        ]);
        let hole = geo_types::LineString::from(vec![
            (106.4001, 29.495),
            (106.4002, 29.495),
            (106.4002, 29.496),
            (106.4001, 29.495),
        ]);
        [
            Geometry::LineString(geo_types::LineString(zig)),
            Geometry::MultiPolygon(geo_types::MultiPolygon(vec![geo_types::Polygon::new(
                geo_types::LineString(ring),
                vec![hole],
            )])),
        ]
    }

    fn same(a: &Derived, b: &Derived) -> bool {
        match (&a.world, &b.world) {
            (DerivedWorld::Shape(x), DerivedWorld::Shape(y)) => x == y && a.length_m == b.length_m,
            _ => false,
        }
    }

    #[test]
    fn kept_derived_data_gives_the_same_derivation_and_what_does_not_fit_is_derived_afresh() {
        for g in large_shapes(KEEP_FROM_VERTICES + 10) {
            let fresh = Derived::of(false, &g);
            let kept = fresh.kept().expect("a large shape is kept");
            // Taken from the kept data, without computing: the very same derivation.
            let taken = Derived::from_kept(&g, &kept).expect("the kept data fits");
            assert!(same(&taken, &fresh));
            assert!(same(&Derived::of_kept(false, &g, Some(&kept)), &fresh));
            // What does not fit is refused, and `of_kept` derives afresh.
            let mut other_version = kept.clone();
            other_version[0] ^= 1;
            let mut nan = kept.clone();
            let at = nan.len() - 8;
            nan[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
            let [other_shape, _] = large_shapes(KEEP_FROM_VERTICES + 11);
            let misfits: [(&str, &Geometry, &[u8]); 5] = [
                ("another version", &g, &other_version),
                ("truncated", &g, &kept[..kept.len() - 4]),
                ("not whole numbers", &g, &kept[..kept.len() - 1]),
                ("a NaN importance", &g, &nan),
                ("another vertex count", &other_shape, &kept),
            ];
            for (what, g, k) in misfits {
                assert!(Derived::from_kept(g, k).is_none(), "{what}");
                assert!(
                    same(&Derived::of_kept(false, g, Some(k)), &Derived::of(false, g)),
                    "{what}"
                );
            }
        }
        // Small shapes and points keep nothing.
        let [small, _] = large_shapes(KEEP_FROM_VERTICES - 1);
        assert!(Derived::of(false, &small).kept().is_none());
        assert!(
            Derived::of(true, &Geometry::Point(Point::new(106.5, 29.5)))
                .kept()
                .is_none()
        );
    }

    fn feature(id: &str, x: f64, y: f64, level: &str) -> Feature {
        Feature {
            id: id.into(),
            geometry: Point::new(x, y).into(),
            values: vec![
                Value::Text(format!("name {id}")),
                Value::Text("landslide".into()),
                Value::Text(level.into()),
                Value::Null,
            ],
        }
    }

    #[test]
    fn short_segments_measure_as_karneys_geodesics() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        for _ in 0..20_000 {
            // Chongqing and everywhere up to 85°, segments from a millimetre to the limit.
            let lat = -85.0 + 170.0 * next();
            let lon = -179.0 + 358.0 * next();
            let scale = 10f64.powf(-8.0 + 6.0 * next()) / 0.01 * SHORT_SEGMENT_DEG;
            let p = Coord { x: lon, y: lat };
            let q = Coord {
                x: lon + (2.0 * next() - 1.0) * scale.min(SHORT_SEGMENT_DEG),
                y: (lat + (2.0 * next() - 1.0) * scale.min(SHORT_SEGMENT_DEG)).clamp(-85.0, 85.0),
            };
            let ours = line_length_m(&geo_types::LineString(vec![p, q]));
            let karney = Geodesic.distance(Point(p), Point(q));
            let err = (ours - karney).abs();
            assert!(
                err <= 1e-8 * karney + 1e-6,
                "{p:?} {q:?}: {ours} m against {karney} m"
            );
        }
        // Longer segments are Karney's own.
        let long = geo_types::LineString(vec![
            Coord { x: 106.0, y: 29.0 },
            Coord { x: 107.0, y: 30.0 },
        ]);
        assert_eq!(
            line_length_m(&long),
            Geodesic.distance(Point::new(106.0, 29.0), Point::new(107.0, 30.0))
        );
    }

    #[test]
    fn upsert_move_and_remove_keep_tree_and_slots_in_step() {
        let mut idx = LayerIndex::new(Arc::new(risk_points()));
        assert_eq!(idx.upsert(1, &feature("a", 106.0, 29.0, "I")), None);
        idx.upsert(2, &feature("b", 107.0, 30.0, "II"));
        let b = Bbox::new(105.5, 28.5, 106.5, 29.5).unwrap();
        assert_eq!(idx.in_bbox(&b).len(), 1);
        let old = idx.upsert(1, &feature("a", 108.0, 31.0, "III")).unwrap();
        assert_eq!(old, Bbox::of_coord(Coord { x: 106.0, y: 29.0 }));
        assert!(idx.in_bbox(&b).is_empty());
        assert_eq!(
            idx.get("a").unwrap().feature.values[2],
            Value::Text("III".into())
        );
        assert!(idx.remove("a").is_some());
        assert_eq!(idx.len(), 1);
        assert!(idx.get("a").is_none());
        idx.upsert(3, &feature("c", 106.0, 29.0, "IV"));
        assert_eq!(idx.in_bbox(&b).len(), 1, "the freed slot is reused");
        assert_eq!(idx.fids.len(), 2);
    }
}
