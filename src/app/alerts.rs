//! Readings in, warnings out: the running side of [`crate::alerts`].
//!
//! # One committer, groups of requests
//!
//! Readings and a duty officer's acts (acknowledge, resolve) queue up, and one caller at
//! a time commits everything queued (the others wait on the committer's lock, then find
//! their answer ready or commit the next group themselves): under load, groups grow and
//! the fsync is shared. A group is:
//!
//! 1. each reading's sensor found in the sensors layer's index (id → fid, type, risk
//!    point or pipeline), checked against the acceptance window and its rule (a
//!    sensor's own, else its type's), and applied to the [`Engine`];
//! 2. the readings taken, packed into one row of the readings log, and every warning
//!    transition (with its evidence and an audit row) written in one transaction, and
//!    committed (durable: `synchronous=FULL`);
//! 3. only then the transitions shown: the warning levels marked on the risk points'
//!    and pipelines' features (`warning_level` in tiles), the `warnings` layer updated,
//!    the tiles they touch made stale, the events sent to `/warnings/stream` listeners,
//!    and the callers answered.
//!
//! A group whose commit fails is undone in the engine, and each caller gets the error:
//! nothing is announced that is not durable, and nothing durable is lost.
//!
//! # Restart
//!
//! Every sensor's state is saved in chunks of 65,536 sensors (by fid), each with the
//! last log row it includes, a chunk at most every 30 s when its sensors changed. At
//! start the chunks are read, the log rows after each chunk replayed for its sensors,
//! the open warnings read back, and any disagreement between them settled by a normal
//! group (written like any other).
//!
//! # Subjects
//!
//! A sensor with a `risk_point_id` warns on that risk point. A sensor with a
//! `pipeline_id` warns on the pipeline and on every risk point within
//! [`ATTACH_M`] metres of it (geodesic distance), found from the indexes and cached
//! until either layer changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use compact_str::CompactString;
use geo_types::{Coord, Geometry, Point};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use super::App;
use crate::alerts::engine::{ActError, Engine, SavedSensor, SensorRef, Subject, SubjectKind};
use crate::alerts::plans::{PointPlan, ResolvedPlan, Template};
use crate::alerts::readings::{Rejected, Rejection, Window};
use crate::alerts::sensor_types::{RuleSpec, SensorType};
use crate::alerts::{Level, Millis, Rule, Transition, Warning};
use crate::index::{LayerIndex, LayerState};
use crate::model::{
    Bbox, Feature, GeometryType, LayerDef, LayerKind, PropertyDef, PropertyType, TileSettings,
    UnknownProperties, Value, ValueRef,
};
use crate::store::{KeptTransition, Store, StoreError, Versioned, WarningFilter, pack_reading};

/// The name of the layer of active warnings.
pub const WARNINGS_LAYER: &str = "warnings";
/// A pipeline's sensors also warn on the risk points this close to it (metres).
pub const ATTACH_M: f64 = 100.0;
/// Sensors per saved state chunk (by fid).
pub const CHUNK_KEYS: i64 = 65_536;
/// A chunk is saved at most this often.
const CHUNK_EVERY: Duration = Duration::from_secs(30);
/// Rejected readings listed one by one in an answer (all are counted).
const LISTED: usize = 100;
/// The actor of transitions made by readings.
pub const READINGS_ACTOR: &str = "riskmap:readings";
/// Events kept for `/warnings/stream` listeners that fall behind (they then resume
/// from the store).
const EVENT_BUFFER: usize = 4096;

/// Milliseconds since the epoch, now. Replaceable for tests ([`App::set_clock`]).
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    })
}

/// A sensor type as loaded, with its rule.
#[derive(Clone, Debug)]
pub struct TypeEntry {
    pub ty: SensorType,
    pub rule: Rule,
    pub version: i64,
}

/// Types, per-sensor rules, templates and point plans, as loaded (replaced whole when
/// one changes: readers keep the one they took).
#[derive(Clone, Default)]
pub struct Catalog {
    pub types: HashMap<u32, TypeEntry>,
    pub sensor_rules: HashMap<String, (RuleSpec, Rule)>,
    pub templates: HashMap<String, Versioned<Template>>,
    pub point_plans: HashMap<String, Versioned<PointPlan>>,
}

/// What became of a request's readings.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReadingsReport {
    pub received: usize,
    pub accepted: usize,
    /// Readings not taken, by reason.
    pub rejected: BTreeMap<&'static str, usize>,
    /// The first rejected readings, one by one.
    pub errors: Vec<Rejected>,
    /// Warning transitions the request's group made.
    pub transitions: usize,
}

impl ReadingsReport {
    pub fn reject(&mut self, r: Rejected) {
        *self.rejected.entry(r.reason.name()).or_default() += 1;
        if self.errors.len() < LISTED {
            self.errors.push(r);
        }
    }
}

/// A duty officer's act on a warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Acknowledge,
    Resolve,
}

/// Why an alerts operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("no warning {0}")]
    NoWarning(u64),
    #[error("warning {0} is resolved already")]
    Resolved(u64),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("no risk point {0:?}")]
    NoRiskPoint(String),
    #[error("no plan template {0:?}")]
    NoTemplate(String),
    #[error("risk point {0} names no response plan (its plan_id is empty)")]
    NoPlan(String),
    #[error("no sensor type {0}")]
    NoType(u32),
    #[error("no sensor {0:?}")]
    NoSensor(String),
    #[error("this server has no {0} layer")]
    NoLayer(&'static str),
    /// The group this request was in ended without an answer for it (a bug: logged).
    #[error("the readings' group ended without an answer for this request")]
    Lost,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::store::HasStoreError for AlertError {
    fn store_error_mut(&mut self) -> Option<&mut StoreError> {
        match self {
            AlertError::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ActError> for AlertError {
    fn from(e: ActError) -> Self {
        match e {
            ActError::Missing(id) => AlertError::NoWarning(id),
            ActError::Resolved(id) => AlertError::Resolved(id),
        }
    }
}

type Reply<T> = std::sync::mpsc::SyncSender<Result<T, AlertError>>;

enum Job {
    Readings {
        readings: Vec<(usize, crate::alerts::readings::Reading)>,
        report: ReadingsReport,
        reply: Reply<ReadingsReport>,
    },
    Act {
        act: Act,
        id: u64,
        by: String,
        role: Option<String>,
        note: String,
        reply: Reply<KeptTransition>,
    },
    /// Nothing but the group itself: its sweep forgets deleted sensors, and the
    /// transitions that follow are kept before the reply.
    Sweep { reply: Reply<usize> },
}

/// What the committer keeps between groups: when each state chunk was last saved.
#[derive(Default)]
struct Committer {
    saved: HashMap<i64, Instant>,
    /// The sensors layer's edit count at the last sweep for deleted sensors.
    swept: Option<u64>,
}

/// Pipeline id → the subjects its sensors warn on.
type AttachCache = HashMap<CompactString, Attached>;

/// A pipeline's subjects, valid while no feature edit of the risk points or the
/// pipelines touched `area` (the pipeline and [`ATTACH_M`] around it) since the
/// change numbers it was made at (`LayerState::changes`: marks, which move all the
/// time during a flood, are logged apart).
#[derive(Clone)]
struct Attached {
    subjects: Arc<[Subject]>,
    points_at: u64,
    pipes_at: u64,
    area: Bbox,
}

/// A transition as announced to every listener, with the listeners' rendering of it
/// made once for all of them: a storm announces thousands of transitions a second, and
/// each open stream (a duty officer's map) rendering its own copy cost each one as much
/// CPU as the first, on the threads that answer tiles.
pub struct Announced {
    pub kept: KeptTransition,
    rendered: std::sync::OnceLock<Arc<str>>,
}

impl Announced {
    pub fn new(kept: KeptTransition) -> Self {
        Announced {
            kept,
            rendered: std::sync::OnceLock::new(),
        }
    }

    /// What `render` makes of the transition: made by the first listener that asks,
    /// shared with the others (all listeners render it the same way: the stream's
    /// event data).
    pub fn rendered(&self, render: impl FnOnce(&KeptTransition) -> String) -> Arc<str> {
        self.rendered
            .get_or_init(|| render(&self.kept).into())
            .clone()
    }
}

/// The alerts state of a running server.
pub struct Alerts {
    engine: Mutex<Engine>,
    committer: Mutex<Committer>,
    queue: Mutex<Vec<Job>>,
    catalog: RwLock<Arc<Catalog>>,
    events: tokio::sync::broadcast::Sender<Arc<Announced>>,
    /// The newest event announced.
    last_event: AtomicI64,
    window: Window,
    clock: RwLock<Clock>,
    /// Pipeline id → its subjects (see [`Attached`]).
    attached: Mutex<AttachCache>,
    /// Chunks whose sensors changed since they were saved.
    dirty: Mutex<std::collections::BTreeSet<i64>>,
    /// The layer of active warnings.
    pub(super) layer: Arc<LayerState>,
}

/// The definition of the `warnings` layer: one point per active warning, at its risk
/// point (or on its pipeline), clustered with the most severe level first.
pub fn warnings_layer_def() -> LayerDef {
    let text = |name: &str, title: &str, values: Option<&[&str]>| PropertyDef {
        name: name.into(),
        ty: PropertyType::String,
        title: Some(title.into()),
        required: false,
        values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        min: None,
        max: None,
        max_length: None,
        references: None,
    };
    LayerDef {
        name: WARNINGS_LAYER.into(),
        title: "Warnings".into(),
        description: "Active warnings: raised by sensor readings at risk points and pipelines, until resolved.".into(),
        kind: LayerKind::Warning,
        geometry: GeometryType::Point,
        id_property: "id".into(),
        properties: vec![
            text(
                "level",
                "Warning level",
                Some(&["red", "orange", "yellow", "blue"]),
            ),
            text(
                "state",
                "State",
                Some(&["active", "acknowledged"]),
            ),
            text("subject_layer", "Layer of the warned feature", None),
            text("subject_id", "Warned feature", None),
            text("name", "Name", None),
            text("category", "Category", None),
            text("district", "District", None),
            text("raised_at", "Raised at", None),
            text("updated_at", "Updated at", None),
        ],
        minzoom: 0,
        maxzoom: 22,
        unknown_properties: UnknownProperties::Reject,
        tiles: TileSettings {
            cluster_rank: Some(0),
            ..TileSettings::default()
        },
        max_vertices: 1,
        uploaded: false,
    }
}

/// The three layers warnings come from: sensors, risk points, pipelines (by kind).
struct Sources {
    sensors: Option<Arc<LayerState>>,
    risk_points: Option<Arc<LayerState>>,
    pipelines: Option<Arc<LayerState>>,
}

fn sources(layers: &[Arc<LayerState>]) -> Sources {
    let of = |k: LayerKind| layers.iter().find(|l| l.def.kind == k).cloned();
    Sources {
        sensors: of(LayerKind::Sensor),
        risk_points: of(LayerKind::RiskPoint),
        pipelines: of(LayerKind::Pipeline),
    }
}

/// Where the sensors layer keeps a sensor's type, risk point and pipeline.
#[derive(Clone, Copy)]
struct SensorColumns {
    type_id: Option<usize>,
    risk_point: Option<usize>,
    pipeline: Option<usize>,
}

impl SensorColumns {
    fn of(def: &LayerDef) -> SensorColumns {
        let col = |n: &str| def.properties.iter().position(|p| p.name == n);
        SensorColumns {
            type_id: col("type_id"),
            risk_point: col("risk_point_id"),
            pipeline: col("pipeline_id"),
        }
    }
}

fn text_of(idx: &LayerIndex, slot: u32, col: Option<usize>) -> Option<&str> {
    match idx.value(slot, col?) {
        ValueRef::Text(t) if !t.is_empty() => Some(t),
        _ => None,
    }
}

fn int_of(idx: &LayerIndex, slot: u32, col: Option<usize>) -> Option<i64> {
    match idx.value(slot, col?) {
        ValueRef::Int(v) => Some(v),
        _ => None,
    }
}

/// A point standing for a feature: a point's own position, else the middle vertex of
/// its first part (on the line, unlike a centroid).
fn anchor(g: &Geometry) -> Option<Coord> {
    use geo::CoordsIter;
    match g {
        Geometry::Point(p) => Some(p.0),
        Geometry::MultiPoint(m) => m.0.first().map(|p| p.0),
        Geometry::LineString(l) => l.0.get(l.0.len() / 2).copied(),
        Geometry::MultiLineString(m) => m.0.first().and_then(|l| l.0.get(l.0.len() / 2).copied()),
        other => {
            let n = other.coords_count();
            other.coords_iter().nth(n / 2)
        }
    }
}

impl Alerts {
    /// Reads the catalogue and the engine's state back from the store (see the module
    /// comment); the transitions that settle disagreements are returned, to be kept.
    pub(super) fn open(
        store: &Store,
        layers: &[Arc<LayerState>],
        clock: Clock,
    ) -> Result<(Alerts, Vec<Transition>), StoreError> {
        let started = Instant::now();
        let catalog = load_catalog(store)?;
        let mut engine = Engine::new();
        let src = sources(layers);
        let mut replayed = 0usize;
        let chunks = store.state_chunks()?;
        let mut upto: HashMap<i64, i64> = HashMap::new();
        let mut saved: Vec<SavedSensor> = Vec::new();
        for (chunk, seq, data) in &chunks {
            upto.insert(*chunk, *seq);
            saved.extend(crate::store::unpack_states(data)?);
        }
        // Every row: the log is pruned to what some chunk does not include, and a chunk
        // never saved needs its readings from the first row.
        let mut log: Vec<(i64, i64, Millis, f64)> = Vec::new();
        let mut dirty = std::collections::BTreeSet::new();
        store.readings_log_after(0, |seq, data| {
            for (key, ts, value) in crate::store::unpack_readings(data)? {
                if seq > upto.get(&(key / CHUNK_KEYS)).copied().unwrap_or(0) {
                    log.push((seq, key, ts, value));
                    // Not saved with this row yet: the chunk must be saved before the
                    // log is pruned past it.
                    dirty.insert(key / CHUNK_KEYS);
                }
            }
            Ok(())
        })?;
        if let Some(sensors) = &src.sensors {
            let idx = sensors.index.read();
            let cols = SensorColumns::of(&sensors.def);
            let wanted: std::collections::HashSet<i64> = saved
                .iter()
                .filter(|s| s.level != Level::Normal)
                .map(|s| s.key)
                .chain(log.iter().map(|l| l.1))
                .collect();
            let mut slot_of: HashMap<i64, u32> = HashMap::with_capacity(wanted.len());
            if !wanted.is_empty() {
                for slot in idx.slots() {
                    let fid = idx.fid(slot);
                    if wanted.contains(&fid) {
                        slot_of.insert(fid, slot);
                    }
                }
            }
            let attach = Attach::new(&src);
            for s in saved {
                let subjects = slot_of
                    .get(&s.key)
                    .map(|&slot| attach.subjects(&idx, cols, slot))
                    .unwrap_or_default();
                engine.import(s, &subjects);
            }
            for (_, key, ts, value) in log {
                let Some(&slot) = slot_of.get(&key) else {
                    continue;
                };
                let id = idx.id(slot);
                let Some(rule) = rule_for(&catalog, &idx, cols, slot, id) else {
                    continue;
                };
                let subjects = attach.subjects(&idx, cols, slot);
                engine.apply(
                    SensorRef {
                        key,
                        id,
                        rule: &rule,
                        subjects: &subjects,
                    },
                    ts,
                    value,
                );
                replayed += 1;
            }
        }
        // What the replay moved is already in the store: only the settling below counts.
        engine.settle();
        let (open, next) = store.open_warnings()?;
        let restored = open.len();
        engine.restore_warnings(open, next);
        // A resolution by hand holds back new warnings at its level: kept across restarts.
        for w in store.last_resolved_by_hand()? {
            engine.restore_suppression(&w.subject, w.level);
        }
        let now = clock();
        let settled = engine.finish(now);
        let (events, _) = tokio::sync::broadcast::channel(EVENT_BUFFER);
        let last = store.last_event_seq()?;
        tracing::info!(
            sensors = engine.export().count(),
            replayed,
            open_warnings = restored,
            settled = settled.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "alerts state restored"
        );
        let layer = Arc::new(LayerState::new(LayerIndex::new(Arc::new(
            warnings_layer_def(),
        ))));
        Ok((
            Alerts {
                engine: Mutex::new(engine),
                committer: Mutex::new(Committer::default()),
                queue: Mutex::new(Vec::new()),
                catalog: RwLock::new(Arc::new(catalog)),
                events,
                last_event: AtomicI64::new(last),
                window: Window::default(),
                clock: RwLock::new(clock),
                attached: Mutex::new(HashMap::new()),
                dirty: Mutex::new(dirty),
                layer,
            },
            settled,
        ))
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().clone()
    }

    pub fn now(&self) -> Millis {
        (self.clock.read())()
    }

    /// Listens to warning events from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Announced>> {
        self.events.subscribe()
    }

    /// The newest event announced.
    pub fn last_event(&self) -> i64 {
        self.last_event.load(Ordering::Acquire)
    }

    pub fn window(&self) -> Window {
        self.window
    }
}

fn load_catalog(store: &Store) -> Result<Catalog, StoreError> {
    let mut c = Catalog::default();
    for (ty, version) in store.sensor_types()? {
        match ty.check() {
            Ok(rule) => {
                c.types.insert(ty.type_id, TypeEntry { ty, rule, version });
            }
            Err(e) => {
                tracing::warn!(type_id = ty.type_id, error = %e, "sensor type in the store not used")
            }
        }
    }
    for (id, spec) in store.sensor_rules()? {
        match spec.rule() {
            Ok(rule) => {
                c.sensor_rules.insert(id, (spec, rule));
            }
            Err(e) => tracing::warn!(sensor = %id, error = %e, "sensor rule in the store not used"),
        }
    }
    for t in store.templates()? {
        c.templates.insert(t.value.id.clone(), t);
    }
    for (id, p) in store.point_plans()? {
        c.point_plans.insert(id, p);
    }
    Ok(c)
}

/// A sensor's rule: its own, else its type's.
fn rule_for(
    catalog: &Catalog,
    idx: &LayerIndex,
    cols: SensorColumns,
    slot: u32,
    id: &str,
) -> Option<Rule> {
    if let Some((_, r)) = catalog.sensor_rules.get(id) {
        return Some(r.clone());
    }
    let t = int_of(idx, slot, cols.type_id)?;
    catalog
        .types
        .get(&u32::try_from(t).ok()?)
        .map(|e| e.rule.clone())
}

/// Finds a sensor's subjects (see the module comment). The risk points' and
/// pipelines' indexes are read only while a pipeline's attachment is worked out, not
/// for the whole group: an edit waiting to write one of them would otherwise hold up
/// every tile drawn from it (a waiting writer stops new readers) for as long as the
/// group lasts (measured: edits every 0.25 s during a flood took the tile p99 to
/// 591 ms).
struct Attach<'a> {
    src: &'a Sources,
    cache: std::cell::RefCell<AttachCache>,
}

impl<'a> Attach<'a> {
    fn new(src: &'a Sources) -> Attach<'a> {
        Attach {
            src,
            cache: Default::default(),
        }
    }

    fn with_cache(src: &'a Sources, cache: AttachCache) -> Attach<'a> {
        let a = Attach::new(src);
        *a.cache.borrow_mut() = cache;
        a
    }

    fn subjects(&self, idx: &LayerIndex, cols: SensorColumns, slot: u32) -> Vec<Subject> {
        if let Some(rp) = text_of(idx, slot, cols.risk_point) {
            return vec![Subject::risk_point(rp)];
        }
        match text_of(idx, slot, cols.pipeline) {
            Some(p) => self.of_pipeline(p).to_vec(),
            None => Vec::new(),
        }
    }

    /// The pipeline and the risk points within [`ATTACH_M`] of it.
    fn of_pipeline(&self, id: &str) -> Arc<[Subject]> {
        let (points_l, pipes_l) = (&self.src.risk_points, &self.src.pipelines);
        let valid = |e: &Attached| {
            points_l
                .as_ref()
                .is_none_or(|l| l.changes.fresh(e.points_at, &e.area))
                && pipes_l
                    .as_ref()
                    .is_none_or(|l| l.changes.fresh(e.pipes_at, &e.area))
        };
        if let Some(e) = self.cache.borrow().get(id).filter(|e| valid(e)) {
            return e.subjects.clone();
        }
        // The change numbers before the indexes (see `index::ChangeLog`).
        let points_at = points_l.as_ref().map_or(0, |l| l.changes.version());
        let pipes_at = pipes_l.as_ref().map_or(0, |l| l.changes.version());
        let mut out = vec![Subject::pipeline(id)];
        let mut area: Option<Bbox> = None;
        {
            let pipes = pipes_l.as_ref().map(|l| l.index.read());
            let points = points_l.as_ref().map(|l| l.index.read());
            if let (Some(pipes), Some(points)) = (&pipes, &points) {
                if let Some(f) = pipes.get(id) {
                    let g = &f.feature.geometry;
                    let boxes =
                        crate::query::geodesic::around_geometry(g, ATTACH_M).unwrap_or_default();
                    let mut found = Vec::new();
                    // Taken apart once for all the candidate points (taken apart for
                    // each, it took about a seventh of the server's CPU during a flood
                    // of readings, measured with perf).
                    let prepared = crate::query::geodesic::PreparedGeometry::new(g);
                    for b in &boxes {
                        area = Some(area.map_or(*b, |a| a.union(*b)));
                        points.for_each_in_bbox(b, |slot| {
                            if let crate::index::GeomRef::Point(p) = points.geometry(slot) {
                                if prepared.within_m(p, ATTACH_M).is_some() {
                                    found.push(points.id(slot).to_string());
                                }
                            }
                        });
                    }
                    found.sort();
                    found.dedup();
                    out.extend(found.iter().map(|r| Subject::risk_point(r)));
                }
            }
        }
        let subjects: Arc<[Subject]> = out.into();
        // A pipeline not found (yet) is not kept: its creation elsewhere would not
        // touch any area.
        if let Some(area) = area {
            self.cache.borrow_mut().insert(
                id.into(),
                Attached {
                    subjects: subjects.clone(),
                    points_at,
                    pipes_at,
                    area,
                },
            );
        }
        subjects
    }
}

impl App {
    pub fn alerts(&self) -> &Alerts {
        &self.alerts
    }

    /// Replaces the clock readings and transitions are timed by (tests).
    pub fn set_clock(&self, clock: Clock) {
        *self.alerts.clock.write() = clock;
    }

    /// Takes readings (already parsed; `report` holds those rejected while parsing).
    /// Answers after the group they went in is durable.
    pub fn post_readings(
        &self,
        readings: Vec<(usize, crate::alerts::readings::Reading)>,
        mut report: ReadingsReport,
    ) -> Result<ReadingsReport, AlertError> {
        report.received += readings.len();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.alerts.queue.lock().push(Job::Readings {
            readings,
            report,
            reply: tx,
        });
        self.commit_queued();
        rx.recv().unwrap_or_else(|_| Err(AlertError::Lost))
    }

    /// Runs a group now: sensors deleted since the last one stop counting, and the
    /// transitions that follow are durable and announced when this returns (called
    /// after a sensor is deleted). The number of transitions.
    pub fn sweep_sensors(&self) -> Result<usize, AlertError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.alerts.queue.lock().push(Job::Sweep { reply: tx });
        self.commit_queued();
        rx.recv().unwrap_or_else(|_| Err(AlertError::Lost))
    }

    /// Acknowledges or resolves warning `id`, by `by` (`key:ID:NAME`) with a note.
    pub fn act_on_warning(
        &self,
        act: Act,
        id: u64,
        by: &str,
        role: Option<&str>,
        note: &str,
    ) -> Result<KeptTransition, AlertError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.alerts.queue.lock().push(Job::Act {
            act,
            id,
            by: by.into(),
            role: role.map(str::to_string),
            note: note.into(),
            reply: tx,
        });
        self.commit_queued();
        rx.recv().unwrap_or_else(|_| Err(AlertError::Lost))
    }

    /// Commits what is queued, unless another caller's group took it already.
    fn commit_queued(&self) {
        let mut committer = self.alerts.committer.lock();
        let jobs = std::mem::take(&mut *self.alerts.queue.lock());
        if jobs.is_empty() {
            return; // answered by the group before
        }
        self.commit_group(&mut committer, jobs);
    }

    fn commit_group(&self, committer: &mut Committer, jobs: Vec<Job>) {
        let a = &self.alerts;
        let now = a.now();
        let catalog = a.catalog();
        let layers = self.layers();
        let src = sources(&layers);
        let mut blob = Vec::new();
        let mut taken = 0usize;
        let mut acts: Vec<(usize, Transition, String, Option<String>)> = Vec::new();
        let mut results: Vec<Option<Result<KeptTransition, AlertError>>> = Vec::new();
        let mut reports: Vec<Option<ReadingsReport>> = Vec::new();
        let mut engine = a.engine.lock();
        engine.begin();
        {
            let cache = std::mem::take(&mut *a.attached.lock());
            let attach = Attach::with_cache(&src, cache);
            let edits = src.sensors.as_ref().map(|l| l.edit_count());
            let idx = src.sensors.as_ref().map(|l| l.index.read());
            let cols = src.sensors.as_ref().map(|l| SensorColumns::of(&l.def));
            let mut dirty = Vec::new();
            // Sensors deleted since the last sweep (by an edit, an import replacing the
            // layer, another process) no longer count: their subjects' levels fall now,
            // in this group, not at their next reading (there is none).
            if edits != committer.swept {
                let mut live: Vec<u64> = Vec::new();
                if let Some(idx) = &idx {
                    for slot in idx.slots() {
                        let fid = idx.fid(slot);
                        if let Ok(f) = usize::try_from(fid) {
                            if live.len() <= f / 64 {
                                live.resize(f / 64 + 1, 0);
                            }
                            live[f / 64] |= 1 << (f % 64);
                        }
                    }
                }
                let is_live = |k: i64| {
                    let k = k as usize;
                    live.get(k / 64).is_some_and(|w| w & (1 << (k % 64)) != 0)
                };
                let gone: Vec<i64> = engine.keys().filter(|&k| !is_live(k)).collect();
                for k in gone {
                    engine.forget(k);
                    dirty.push(k / CHUNK_KEYS);
                }
                committer.swept = edits;
            }
            for (j, job) in jobs.iter().enumerate() {
                match job {
                    Job::Readings {
                        readings, report, ..
                    } => {
                        let mut report = report.clone();
                        for (index, r) in readings {
                            let reject = |reason: Rejection, message: String| Rejected {
                                index: *index,
                                sensor_id: Some(r.sensor_id.to_string()),
                                reason,
                                message,
                            };
                            let (Some(idx), Some(cols)) = (&idx, cols) else {
                                report.reject(reject(
                                    Rejection::UnknownSensor,
                                    "this server has no sensors layer".into(),
                                ));
                                continue;
                            };
                            let Some(slot) = idx.slot(&r.sensor_id) else {
                                report.reject(reject(
                                    Rejection::UnknownSensor,
                                    format!("no sensor {:?}", r.sensor_id),
                                ));
                                continue;
                            };
                            if let Err((reason, message)) = a.window.check(r.ts, now) {
                                report.reject(reject(reason, message));
                                continue;
                            }
                            let key = idx.fid(slot);
                            if !(0..crate::alerts::engine::MAX_SENSOR_KEY).contains(&key) {
                                report.reject(reject(
                                    Rejection::UnknownSensor,
                                    format!("sensor fid {key} is out of range"),
                                ));
                                continue;
                            }
                            let Some(rule) = rule_for(&catalog, idx, cols, slot, &r.sensor_id)
                            else {
                                report.reject(reject(
                                    Rejection::NoRule,
                                    format!(
                                        "sensor {:?} has no thresholds: its type {} is not loaded (riskmap import --sensor-types, or PUT /sensor-types/{{id}})",
                                        r.sensor_id,
                                        int_of(idx, slot, cols.type_id)
                                            .map_or("(none)".to_string(), |t| t.to_string())
                                    ),
                                ));
                                continue;
                            };
                            let subjects = attach.subjects(idx, cols, slot);
                            let outcome = engine.apply(
                                SensorRef {
                                    key,
                                    id: &r.sensor_id,
                                    rule: &rule,
                                    subjects: &subjects,
                                },
                                r.ts,
                                r.value,
                            );
                            use crate::alerts::engine::Outcome;
                            match outcome {
                                Outcome::Applied { .. } => {
                                    report.accepted += 1;
                                    taken += 1;
                                    pack_reading(&mut blob, key, r.ts, r.value);
                                    dirty.push(key / CHUNK_KEYS);
                                }
                                Outcome::Duplicate => report.reject(reject(
                                    Rejection::Duplicate,
                                    "the sensor has a reading at this timestamp already".into(),
                                )),
                                Outcome::OutOfOrder => report.reject(reject(
                                    Rejection::OutOfOrder,
                                    "older than the sensor's latest reading".into(),
                                )),
                                Outcome::NotFinite => report.reject(reject(
                                    Rejection::NotFinite,
                                    "the value is not a finite number".into(),
                                )),
                            }
                        }
                        reports.push(Some(report));
                        results.push(None);
                    }
                    Job::Act {
                        act,
                        id,
                        by,
                        role,
                        note,
                        ..
                    } => {
                        let r = match act {
                            Act::Acknowledge => engine.acknowledge(*id, by, note, now),
                            Act::Resolve => engine.resolve(*id, by, note, now),
                        };
                        match r {
                            Ok(t) => {
                                acts.push((j, t, by.clone(), role.clone()));
                                results.push(None);
                            }
                            Err(e) => results.push(Some(Err(self.act_error(e)))),
                        }
                        reports.push(None);
                    }
                    Job::Sweep { .. } => {
                        results.push(None);
                        reports.push(None);
                    }
                }
            }
            let cache = attach.cache.into_inner();
            *a.attached.lock() = cache;
            a.dirty.lock().extend(dirty);
        }
        let transitions = engine.finish(now);
        let written = self.store.write(|tx| {
            let log_seq = if taken > 0 {
                tx.log_readings(now, taken, &blob)?
            } else {
                0
            };
            let mut seqs = Vec::with_capacity(acts.len() + transitions.len());
            for (_, t, by, role) in &acts {
                seqs.push(tx.keep_transition(t, by, role.as_deref())?);
            }
            for t in &transitions {
                seqs.push(tx.keep_transition(t, READINGS_ACTOR, None)?);
            }
            tx.commit()?;
            Ok::<_, StoreError>((seqs, log_seq))
        });
        let (seqs, log_seq) = match written {
            Ok(w) => w,
            Err(e) => {
                engine.rollback();
                drop(engine);
                let msg = e.to_string();
                for job in jobs {
                    let err = || {
                        AlertError::Store(StoreError::Invalid {
                            reason: format!("the readings were not kept: {msg}"),
                        })
                    };
                    match job {
                        Job::Readings { reply, .. } => {
                            let _ = reply.send(Err(err()));
                        }
                        Job::Act { reply, .. } => {
                            let _ = reply.send(Err(err()));
                        }
                        Job::Sweep { reply } => {
                            let _ = reply.send(Err(err()));
                        }
                    }
                }
                return;
            }
        };
        engine.commit();
        // Durable: show it.
        let mut kept: Vec<KeptTransition> = Vec::with_capacity(seqs.len());
        let by_act: Vec<(usize, &str)> =
            acts.iter().map(|(j, _, by, _)| (*j, by.as_str())).collect();
        let mut act_results: HashMap<usize, KeptTransition> = HashMap::new();
        for (i, (seq, t)) in seqs
            .iter()
            .zip(acts.iter().map(|a| &a.1).chain(transitions.iter()))
            .enumerate()
        {
            let (by, note) = match acts.get(i) {
                Some((_, _, by, _)) => (Some(by.clone()), None),
                None => (None, None),
            };
            let k = KeptTransition {
                seq: *seq,
                transition: t.clone(),
                by,
                note,
            };
            if let Some((j, _)) = by_act.get(i) {
                act_results.insert(*j, k.clone());
            }
            kept.push(k);
        }
        self.show_transitions(&engine, &src, &kept);
        drop(engine);
        let n_transitions = transitions.len();
        for k in kept {
            a.last_event.store(k.seq, Ordering::Release);
            let _ = a.events.send(Arc::new(Announced::new(k)));
        }
        for (j, job) in jobs.into_iter().enumerate() {
            match job {
                Job::Readings { reply, .. } => {
                    let mut r = reports[j].take().unwrap_or_default();
                    r.transitions = n_transitions;
                    let _ = reply.send(Ok(r));
                }
                Job::Act { reply, .. } => {
                    let r = match results[j].take() {
                        Some(r) => r,
                        None => act_results.remove(&j).ok_or(AlertError::Lost),
                    };
                    let _ = reply.send(r);
                }
                Job::Sweep { reply } => {
                    let _ = reply.send(Ok(n_transitions));
                }
            }
        }
        if taken > 0 {
            metrics::counter!("riskmap_readings_total").increment(taken as u64);
        }
        if n_transitions > 0 {
            metrics::counter!("riskmap_warning_transitions_total").increment(n_transitions as u64);
        }
        self.save_chunks(committer, log_seq);
    }

    fn act_error(&self, e: ActError) -> AlertError {
        // A resolved warning is no longer in the engine: tell "resolved" from "none".
        match e {
            ActError::Missing(id) => match self.store.warning(id) {
                Ok(Some(w)) if !w.is_active() => AlertError::Resolved(id),
                _ => AlertError::NoWarning(id),
            },
            other => other.into(),
        }
    }

    /// Saves the state chunks due (changed, and not saved for [`CHUNK_EVERY`]), each
    /// with the log row the engine now includes. Best effort: a failure leaves the
    /// chunk dirty (the log still has its readings).
    fn save_chunks(&self, committer: &mut Committer, log_seq: i64) {
        let a = &self.alerts;
        let due: Vec<i64> = {
            let dirty = a.dirty.lock();
            dirty
                .iter()
                .copied()
                .filter(|c| {
                    committer
                        .saved
                        .get(c)
                        .is_none_or(|t| t.elapsed() >= CHUNK_EVERY)
                })
                .take(2)
                .collect()
        };
        if due.is_empty() {
            return;
        }
        let upto = if log_seq > 0 {
            log_seq
        } else {
            match self.store.last_readings_seq() {
                Ok(s) => s,
                Err(_) => return,
            }
        };
        for c in due {
            let states: Vec<SavedSensor> = {
                let engine = a.engine.lock();
                engine.export_range(c * CHUNK_KEYS, (c + 1) * CHUNK_KEYS)
            };
            let data = crate::store::pack_states(&states);
            let r = self.store.write(|tx| {
                tx.put_state_chunk(c, upto, &data)?;
                tx.commit()
            });
            match r {
                Ok(()) => {
                    a.dirty.lock().remove(&c);
                    committer.saved.insert(c, Instant::now());
                }
                Err(e) => {
                    tracing::warn!(chunk = c, error = %e, "sensor states not saved; the readings log keeps them");
                    return;
                }
            }
        }
        // Log rows every chunk includes are no longer needed; a chunk with readings
        // that was never saved needs them all.
        if let Ok(saved) = self.store.state_chunks_upto() {
            let unsaved = a.dirty.lock().iter().any(|c| !saved.contains_key(c));
            if let (false, Some(&floor)) = (unsaved, saved.values().min()) {
                if let Err(e) = self.store.write(|tx| {
                    tx.prune_readings_log(floor)?;
                    tx.commit()
                }) {
                    tracing::debug!(error = %e, "readings log not pruned");
                }
            }
        }
    }

    /// Marks the subjects of `kept` with their warning level, updates the warnings
    /// layer, and makes the tiles they touch stale (index first, then the change log).
    fn show_transitions(&self, engine: &Engine, src: &Sources, kept: &[KeptTransition]) {
        self.show_warnings(
            engine,
            src,
            kept.iter().map(|k| (&k.transition.warning, k.by.is_some())),
        );
    }

    /// Shows every open warning (at start).
    pub(super) fn show_open_warnings(&self) {
        let layers = self.layers();
        let src = sources(&layers);
        let engine = self.alerts.engine.lock();
        let open: Vec<Warning> = engine.active().into_iter().cloned().collect();
        self.show_warnings(&engine, &src, open.iter().map(|w| (w, false)));
    }

    /// Draws warnings (each with whether a person's act changed it) on their subjects'
    /// marks and in the `warnings` layer. What readings changed is logged as a change
    /// of marks (tiles may be a little behind it in a storm, see `api::tiles`); what a
    /// person did (acknowledged, resolved by hand) as a change of features, in the
    /// next tile they fetch.
    fn show_warnings<'w>(
        &self,
        engine: &Engine,
        src: &Sources,
        warnings: impl Iterator<Item = (&'w Warning, bool)>,
    ) {
        let wl = &self.alerts.layer;
        // [by readings, by a person]
        let mut warn_boxes: [Vec<Bbox>; 2] = Default::default();
        let mut subject_boxes: HashMap<(LayerKind, bool), Vec<Bbox>> = HashMap::new();
        let _a = self.apply_lock.lock();
        for (w, by_person) in warnings {
            let warn_boxes = &mut warn_boxes[usize::from(by_person)];
            let layer = match w.subject.kind {
                SubjectKind::RiskPoint => &src.risk_points,
                SubjectKind::Pipeline => &src.pipelines,
            };
            let level = engine
                .warning_of(&w.subject)
                .map_or(Level::Normal, |w| w.level);
            let mut position = None;
            let mut props: Vec<(&str, Option<String>)> = Vec::new();
            if let Some(l) = layer {
                let idx = l.index.read();
                if let Some(slot) = idx.slot(&w.subject.id) {
                    let g = idx.geometry(slot).to_geometry();
                    position = anchor(&g);
                    let world = position.and_then(crate::index::to_world);
                    if let Some(world) = world {
                        l.marks.write().set(idx.fid(slot), level as u8, world);
                        if let Some(b) = Bbox::of_geometry(&g) {
                            subject_boxes
                                .entry((l.def.kind, by_person))
                                .or_default()
                                .push(b);
                        }
                    }
                    for name in ["name", "category", "district"] {
                        let v = l
                            .def
                            .properties
                            .iter()
                            .position(|p| p.name == name)
                            .and_then(|i| match idx.value(slot, i) {
                                ValueRef::Text(t) => Some(t.to_string()),
                                _ => None,
                            });
                        props.push((name, v));
                    }
                }
            }
            // The warnings layer holds the subject's active warning, if any.
            let mut index = wl.index.write();
            let id = w.id.to_string();
            if let Some(old) = index.remove(&id) {
                warn_boxes.push(old);
            }
            if let (Some(active), Some(p)) = (engine.warning_of(&w.subject), position) {
                let f = warning_feature(active, p, &props);
                // Where it was (an upsert gives back the old box) and where it is now.
                if let Some(b) = index.upsert(active.id as i64, &f) {
                    warn_boxes.push(b);
                }
                warn_boxes.extend(Bbox::of_geometry(&f.geometry));
            }
        }
        fn log(l: &LayerState, by_person: bool) -> &crate::index::ChangeLog {
            if by_person {
                &l.changes
            } else {
                &l.mark_changes
            }
        }
        for ((kind, by_person), boxes) in subject_boxes {
            let l = match kind {
                LayerKind::RiskPoint => &src.risk_points,
                _ => &src.pipelines,
            };
            if let Some(l) = l {
                log(l, by_person).record(&boxes);
            }
        }
        let [by_readings, by_people] = warn_boxes;
        wl.mark_changes.record(&by_readings);
        wl.changes.record(&by_people);
    }

    /// How many warnings are open (from the `warnings` layer: no wait on a group being
    /// committed).
    pub fn open_warning_count(&self) -> usize {
        self.alerts.layer.index.read().len()
    }

    /// The open warnings, newest first (from memory).
    pub fn open_warnings(&self) -> Vec<Warning> {
        let mut v: Vec<Warning> = self
            .alerts
            .engine
            .lock()
            .active()
            .into_iter()
            .cloned()
            .collect();
        v.reverse();
        v
    }

    /// A warning by id: open ones from memory, others from the store.
    pub fn warning(&self, id: u64) -> Result<Option<Warning>, AlertError> {
        if let Some(w) = self.alerts.engine.lock().active_warning(id) {
            return Ok(Some(w.clone()));
        }
        Ok(self.store.warning(id)?)
    }

    /// Warnings from the store (resolved ones included), newest first.
    pub fn stored_warnings(&self, f: &WarningFilter) -> Result<Vec<Warning>, AlertError> {
        Ok(self.store.warnings(f)?)
    }

    /// A sensor's state now: (latest ts, value, level, no data) and its rule.
    pub fn sensor_state(
        &self,
        id: &str,
    ) -> Option<(crate::alerts::engine::SensorView, Option<Rule>)> {
        let layers = self.layers();
        let src = sources(&layers);
        let sensors = src.sensors?;
        let idx = sensors.index.read();
        let slot = idx.slot(id)?;
        let cols = SensorColumns::of(&sensors.def);
        let rule = rule_for(&self.alerts.catalog(), &idx, cols, slot, id);
        let default_rule;
        let r = match &rule {
            Some(r) => r,
            None => {
                default_rule = Rule::from_warn_alarm(
                    crate::alerts::Direction::Above,
                    0.0,
                    0.0,
                    crate::alerts::Mapping::Split,
                )
                .ok()?;
                &default_rule
            }
        };
        let view = self
            .alerts
            .engine
            .lock()
            .sensor(idx.fid(slot), r, self.alerts.now());
        Some((view, rule))
    }

    /// The resolved plan of risk point `id` (its `plan_id` names the template unless
    /// its own plan names another).
    pub fn plan_of(&self, id: &str) -> Result<ResolvedPlan, AlertError> {
        let layers = self.layers();
        let src = sources(&layers);
        let rp = src.risk_points.ok_or(AlertError::NoLayer("risk_points"))?;
        let plan_id = {
            let idx = rp.index.read();
            let slot = idx
                .slot(id)
                .ok_or_else(|| AlertError::NoRiskPoint(id.to_string()))?;
            let col = rp.def.properties.iter().position(|p| p.name == "plan_id");
            text_of(&idx, slot, col).map(str::to_string)
        };
        let catalog = self.alerts.catalog();
        let own = catalog.point_plans.get(id);
        let template_id = own
            .and_then(|p| p.value.template.clone())
            .or(plan_id)
            .ok_or_else(|| AlertError::NoPlan(id.to_string()))?;
        let t = catalog
            .templates
            .get(&template_id)
            .ok_or_else(|| AlertError::NoTemplate(template_id.clone()))?;
        Ok(crate::alerts::plans::resolve(
            id,
            &t.value,
            t.version,
            own.map(|p| (&p.value, p.version)),
        ))
    }

    /// Risk points whose plan resolves to nothing (no `plan_id`, or a template that is
    /// not loaded): ids in order.
    pub fn risk_points_without_plan(&self) -> Result<Vec<String>, AlertError> {
        let layers = self.layers();
        let src = sources(&layers);
        let rp = src.risk_points.ok_or(AlertError::NoLayer("risk_points"))?;
        let catalog = self.alerts.catalog();
        let idx = rp.index.read();
        let col = rp.def.properties.iter().position(|p| p.name == "plan_id");
        let mut out: Vec<String> = idx
            .slots()
            .filter_map(|slot| {
                let id = idx.id(slot);
                let template = catalog
                    .point_plans
                    .get(id)
                    .and_then(|p| p.value.template.as_deref())
                    .or_else(|| text_of(&idx, slot, col));
                match template {
                    Some(t) if catalog.templates.contains_key(t) => None,
                    _ => Some(id.to_string()),
                }
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Loads sensor types (all or nothing); returns how many were new or changed.
    pub fn put_sensor_types(&self, types: &[SensorType], by: &str) -> Result<usize, AlertError> {
        let mut rules = Vec::with_capacity(types.len());
        for t in types {
            rules.push(t.check().map_err(|e| AlertError::Invalid {
                field: format!("type {}: {}", t.type_id, e.field),
                reason: e.reason,
            })?);
        }
        let current = self.alerts.catalog();
        let changed: Vec<(&SensorType, &Rule)> = types
            .iter()
            .zip(&rules)
            .filter(|(t, _)| current.types.get(&t.type_id).is_none_or(|e| &e.ty != *t))
            .collect();
        let versions = self.store.write(|tx| {
            let mut v = Vec::with_capacity(changed.len());
            for (t, _) in &changed {
                v.push(tx.put_sensor_type(t, by)?);
            }
            tx.commit()?;
            Ok::<_, StoreError>(v)
        })?;
        let mut next = (*current).clone();
        for ((t, rule), version) in changed.iter().zip(versions) {
            next.types.insert(
                t.type_id,
                TypeEntry {
                    ty: (*t).clone(),
                    rule: (*rule).clone(),
                    version,
                },
            );
        }
        *self.alerts.catalog.write() = Arc::new(next);
        Ok(changed.len())
    }

    /// Loads plan templates (all or nothing); returns how many got a new version.
    pub fn put_templates(&self, templates: &[Template], by: &str) -> Result<usize, AlertError> {
        for t in templates {
            t.check().map_err(|e| AlertError::Invalid {
                field: format!("template {}: {}", t.id, e.field),
                reason: e.reason,
            })?;
        }
        let written = self.store.write(|tx| {
            let mut v = Vec::with_capacity(templates.len());
            for t in templates {
                v.push(tx.put_template(t, by)?);
            }
            tx.commit()?;
            Ok::<_, StoreError>(v)
        })?;
        let mut next = (*self.alerts.catalog()).clone();
        let mut n = 0;
        for (t, (version, new)) in templates.iter().zip(written) {
            if new {
                n += 1;
                next.templates.insert(
                    t.id.clone(),
                    Versioned {
                        value: t.clone(),
                        version,
                        at: crate::store::now_timestamp(),
                        by: by.to_string(),
                    },
                );
            }
        }
        *self.alerts.catalog.write() = Arc::new(next);
        Ok(n)
    }

    /// Writes a new version of risk point `id`'s own plan.
    pub fn put_point_plan(
        &self,
        id: &str,
        plan: PointPlan,
        by: &str,
    ) -> Result<ResolvedPlan, AlertError> {
        plan.check().map_err(|e| AlertError::Invalid {
            field: e.field,
            reason: e.reason,
        })?;
        // The template it applies to must exist: the plan's own, else the point's
        // `plan_id` (checked before writing: a plan that resolves to nothing is refused).
        let plan_id = {
            let layers = self.layers();
            let rp = sources(&layers)
                .risk_points
                .ok_or(AlertError::NoLayer("risk_points"))?;
            let idx = rp.index.read();
            let slot = idx
                .slot(id)
                .ok_or_else(|| AlertError::NoRiskPoint(id.to_string()))?;
            let col = rp.def.properties.iter().position(|p| p.name == "plan_id");
            text_of(&idx, slot, col).map(str::to_string)
        };
        match plan.template.clone().or(plan_id) {
            Some(t) if self.alerts.catalog().templates.contains_key(&t) => {}
            Some(t) => return Err(AlertError::NoTemplate(t)),
            None => {
                return Err(AlertError::Invalid {
                    field: "template".into(),
                    reason: format!(
                        "risk point {id} names no plan (plan_id): give the template this plan builds on"
                    ),
                });
            }
        }
        let version = self.store.write(|tx| {
            let v = tx.put_point_plan(id, &plan, by)?;
            tx.commit()?;
            Ok::<_, StoreError>(v)
        })?;
        let mut next = (*self.alerts.catalog()).clone();
        next.point_plans.insert(
            id.to_string(),
            Versioned {
                value: plan,
                version,
                at: crate::store::now_timestamp(),
                by: by.to_string(),
            },
        );
        *self.alerts.catalog.write() = Arc::new(next);
        self.plan_of(id)
    }
}

/// The `warnings` layer's feature for an active warning at `p`.
fn warning_feature(w: &Warning, p: Coord, subject: &[(&str, Option<String>)]) -> Feature {
    let get = |n: &str| {
        subject
            .iter()
            .find(|(k, _)| *k == n)
            .and_then(|(_, v)| v.clone())
            .map_or(Value::Null, Value::Text)
    };
    let ts = crate::alerts::readings::format_ts;
    Feature {
        id: w.id.to_string(),
        geometry: Geometry::Point(Point(p)),
        values: vec![
            Value::Text(w.level.name().into()),
            Value::Text(w.state().into()),
            Value::Text(w.subject.kind.layer().into()),
            Value::Text(w.subject.id.to_string()),
            get("name"),
            get("category"),
            get("district"),
            Value::Text(ts(w.raised_at)),
            Value::Text(ts(w.updated_at)),
        ],
    }
}

/// What a warning's subject is, for people: from its layer's index.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SubjectInfo {
    pub layer: &'static str,
    pub id: String,
    /// Whether the feature exists (a sensor may name one that was deleted).
    pub found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// A risk point's own risk level (I..IV), or a pipeline's kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// WGS84 lon/lat of the point standing for it (see `anchor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<[f64; 2]>,
}

impl App {
    /// The warned feature as people see it.
    pub fn subject_info(&self, s: &Subject) -> SubjectInfo {
        let layers = self.layers();
        let src = sources(&layers);
        let layer = match s.kind {
            SubjectKind::RiskPoint => src.risk_points,
            SubjectKind::Pipeline => src.pipelines,
        };
        let mut info = SubjectInfo {
            layer: s.kind.layer(),
            id: s.id.to_string(),
            ..Default::default()
        };
        let Some(l) = layer else {
            return info;
        };
        let idx = l.index.read();
        let Some(slot) = idx.slot(&s.id) else {
            return info;
        };
        info.found = true;
        let text = |name: &str| {
            let col = l.def.properties.iter().position(|p| p.name == name);
            text_of(&idx, slot, col).map(str::to_string)
        };
        info.name = text("name");
        info.category = text("category");
        info.district = text("district");
        info.risk_level = text("level");
        info.kind = text("kind");
        info.position = anchor(&idx.geometry(slot).to_geometry()).map(|c| [c.x, c.y]);
        info
    }

    /// A sensor for people: its type's name and unit, its subject, its state now.
    pub fn sensor_info(&self, id: &str) -> Option<serde_json::Value> {
        let layers = self.layers();
        let src = sources(&layers);
        let sensors = src.sensors?;
        let (type_id, risk_point, pipeline) = {
            let idx = sensors.index.read();
            let slot = idx.slot(id)?;
            let cols = SensorColumns::of(&sensors.def);
            (
                int_of(&idx, slot, cols.type_id),
                text_of(&idx, slot, cols.risk_point).map(str::to_string),
                text_of(&idx, slot, cols.pipeline).map(str::to_string),
            )
        };
        let catalog = self.alerts.catalog();
        let ty = type_id
            .and_then(|t| u32::try_from(t).ok())
            .and_then(|t| catalog.types.get(&t));
        let (view, rule) = self.sensor_state(id)?;
        let ts = crate::alerts::readings::format_ts;
        Some(serde_json::json!({
            "id": id,
            "type_id": type_id,
            "type": ty.map(|t| serde_json::json!({
                "name": t.ty.name, "family": t.ty.family, "unit": t.ty.unit,
            })),
            "risk_point_id": risk_point,
            "pipeline_id": pipeline,
            "state": if view.no_data { "no_data" } else if view.level == Level::Normal { "normal" } else { view.level.name() },
            "level": view.level,
            "latest": (view.ts != Millis::MIN).then(|| serde_json::json!({"ts": ts(view.ts), "value": view.value})),
            "rule": rule.map(|r| serde_json::json!({
                "direction": r.direction,
                "thresholds": {"blue": r.thresholds[0], "yellow": r.thresholds[1], "orange": r.thresholds[2], "red": r.thresholds[3]},
                "hysteresis": r.hysteresis,
                "clear_after_s": r.clear_after as f64 / 1000.0,
                "silent_after_s": r.silent_after as f64 / 1000.0,
                "own": catalog.sensor_rules.contains_key(id),
            })),
        }))
    }
}

impl App {
    /// Reads sensor types, rules, templates and point plans again (another process
    /// changed them).
    pub(super) fn reload_catalog(&self) -> Result<(), StoreError> {
        let c = load_catalog(&self.store)?;
        tracing::info!(
            sensor_types = c.types.len(),
            templates = c.templates.len(),
            "plans and sensor types read again from the store"
        );
        *self.alerts.catalog.write() = Arc::new(c);
        Ok(())
    }

    /// Sets (or with `None` removes) sensor `id`'s own rule.
    pub fn put_sensor_rule(
        &self,
        id: &str,
        spec: Option<RuleSpec>,
        by: &str,
    ) -> Result<(), AlertError> {
        let rule = spec
            .as_ref()
            .map(|s| {
                s.rule().map_err(|e| AlertError::Invalid {
                    field: e.field.to_string(),
                    reason: e.reason,
                })
            })
            .transpose()?;
        {
            let layers = self.layers();
            let sensors = sources(&layers)
                .sensors
                .ok_or(AlertError::NoLayer("sensors"))?;
            if sensors.index.read().slot(id).is_none() {
                return Err(AlertError::NoSensor(id.to_string()));
            }
        }
        self.store.write(|tx| {
            tx.put_sensor_rule(id, spec.as_ref(), by)?;
            tx.commit()
        })?;
        let mut next = (*self.alerts.catalog()).clone();
        match (spec, rule) {
            (Some(s), Some(r)) => {
                next.sensor_rules.insert(id.to_string(), (s, r));
            }
            _ => {
                next.sensor_rules.remove(id);
            }
        }
        *self.alerts.catalog.write() = Arc::new(next);
        Ok(())
    }
}
