//! The running catalogue: the store, one index per layer, and the operations that
//! keep them in step. HTTP handlers call these; nothing here knows HTTP.
//!
//! Consistency rules:
//! - Every change is committed to the store first (durable), then applied to the index
//!   before the caller is answered. What indexing costs (projection, vertex importance,
//!   length) is derived before the commit ([`Prepared`]), so the index's lock is held
//!   for a tree update of microseconds.
//! - Readers never wait on writers: they take only a layer's index read lock, which a
//!   writer holds just for that update or to swap in a layer rebuilt beside the live
//!   one. They never take `write_lock` (held across a commit's fsync) and never catch
//!   up with the store themselves.
//! - This server applies each of its own writes once: the change-feed entries it wrote
//!   are remembered and skipped by [`App::follow_changes`], which applies only what
//!   other processes (`riskmap import`) wrote, in the background.
//! - Sensor readings and warnings have a path of their own (`alerts`): grouped, logged
//!   per group, never through the feature edits' audit rows and ETags.
//! - Index updates never go back in time: every one happens under `apply_lock`, and the
//!   follower holds it from reading a row to applying it, so a row read before one of
//!   our commits is never applied after it.

mod alerts;
mod references;

pub use crate::sched::{
    BACKGROUND_NICE, idle_thread_policy, lower_thread_priority, on_idle_thread,
};
pub use alerts::{
    ATTACH_M, Act, AlertError, Alerts, Announced, CHUNK_KEYS, Catalog, Clock, READINGS_ACTOR,
    ReadingsReport, TypeEntry, WARNINGS_LAYER, system_clock, warnings_layer_def,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::demo::{self, DemoError};
use crate::index::{Derived, LayerIndex, LayerState, Prepared};
use crate::model::{Bbox, Feature, FieldError, LayerDef, UnreadableRow};
use crate::store::{AuditEntry, OpenMode, Store, StoreError, StoredFeature};

/// The change-feed name under which `riskmap import --plans` and `--sensor-types`
/// announce that plan templates or sensor types changed (a running server reads them
/// again).
pub const CATALOG_FEED: &str = "riskmap:catalog";

/// File name of the store inside the data directory.
pub const STORE_FILE: &str = "riskmap.gpkg";
/// Change-feed rows older than this are pruned at start.
const CHANGE_FEED_KEEP_SECONDS: i64 = 24 * 3600;
/// Unreadable rows logged one by one per read of a layer; the rest in one line.
const UNREADABLE_LOGGED: usize = 100;

/// How to open the catalogue.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Load the demo into a store created by this open.
    pub demo: bool,
    /// Reads need no key.
    pub public_reads: bool,
    /// Memory for cached tiles (compressed bytes).
    pub tile_cache_bytes: u64,
    /// The origin clients reach the server at (`https://maps.example.org`), written
    /// into absolute URLs instead of anything a request says (`api::public_url`).
    pub public_url: Option<String>,
    /// Without a public URL: take `X-Forwarded-Host`/`-Proto` from requests (only
    /// behind a proxy that sets them).
    pub trust_forwarded: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            demo: true,
            public_reads: true,
            tile_cache_bytes: 256 << 20,
            public_url: None,
            trust_forwarded: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Demo(#[from] DemoError),
}

/// Who asks for an edit, and on what conditions.
#[derive(Clone, Copy, Debug, Default)]
pub struct EditContext<'a> {
    /// For the audit row: `key:ID:NAME`, `cli:USER`.
    pub actor: &'a str,
    /// `If-Match`: the ETag(s) the feature must still have.
    pub if_match: Option<&'a str>,
    /// After this instant the edit is abandoned before its commit (the client has
    /// been told it timed out).
    pub deadline: Option<Instant>,
}

impl EditContext<'_> {
    fn check_deadline(&self) -> Result<(), EditError> {
        match self.deadline {
            Some(d) if Instant::now() > d => Err(EditError::TimedOut),
            _ => Ok(()),
        }
    }
}

/// Why an edit was refused.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("no layer named {0:?}")]
    UnknownLayer(String),
    #[error(
        "layer {0:?} is made by the server (warnings come from sensor readings): it cannot be edited; acknowledge or resolve a warning at /warnings/{{id}}/ack or /resolve"
    )]
    ReadOnly(String),
    #[error("layer {layer} has no feature {id:?}")]
    NotFound { layer: String, id: String },
    #[error("layer {layer} already has a feature {id:?}")]
    Exists { layer: String, id: String },
    #[error(
        "{count} feature(s) of {by} name feature {id:?} of {layer} in {property}: delete them or make them name another first (GET /collections/{by}/items?{property}={id})"
    )]
    Referenced {
        layer: String,
        id: String,
        by: String,
        property: String,
        count: u32,
    },
    #[error("the feature changed since it was read (its ETag is now {current})")]
    PreconditionFailed { current: String },
    #[error("{0}")]
    Invalid(FieldError),
    #[error("the edit took too long and was abandoned before its commit; nothing changed")]
    TimedOut,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Points where a test can hold a writer (see [`App::set_pause`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pause {
    /// An edit's transaction, written and about to commit (the writers' lock held).
    BeforeCommit,
    /// A layer rebuilt beside the live one, about to be swapped in.
    ReloadBuilt,
}

/// What a paused writer calls.
pub type PauseFn = Arc<dyn Fn() + Send + Sync>;

/// The catalogue.
pub struct App {
    config: Config,
    store: Store,
    /// The layers served now: a snapshot replaced whole when a layer is added or
    /// removed (readers keep the snapshot they took for the whole request).
    layers: parking_lot::RwLock<Arc<Vec<Arc<LayerState>>>>,
    /// Serialises adding and removing layers.
    layer_admin: Mutex<()>,
    /// Serialises this server's writers around their commit and the index update that
    /// follows it, so its own writes reach the index in commit order. Readers never
    /// take it.
    write_lock: Mutex<()>,
    /// Serialises every index update (see the module comment).
    apply_lock: Mutex<()>,
    /// Serialises passes of [`App::follow_changes`]; holds the newest change-feed entry
    /// applied to the indexes.
    follow: Mutex<i64>,
    /// Change-feed entries this server wrote, already applied to its indexes: the
    /// follower skips them (entries are added before their commit, removed when the
    /// commit fails or the follower has passed them).
    own_changes: Arc<Mutex<BTreeSet<i64>>>,
    /// [`App::dangling`], with what it was computed from.
    dangling_cache: Mutex<Option<references::DanglingCache>>,
    /// See [`App::set_pause`].
    pauses: parking_lot::RwLock<Vec<(Pause, PauseFn)>>,
    started: Instant,
    options: OpenOptions,
    tiles: crate::tiles::TileCache,
    /// Uploads being imported now (see [`App::upload_slot`]).
    uploads: Arc<std::sync::atomic::AtomicUsize>,
    /// Sensor types, plans, readings and warnings.
    alerts: Alerts,
}

/// Uploads imported at once; more are refused (503) until one finishes: each holds a
/// GDAL child, a temporary copy of its file and, while writing, the store's writer.
pub const MAX_UPLOADS: usize = 2;

/// A place among the uploads running now; given back when dropped.
pub struct UploadSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Why a layer could not be created or removed.
#[derive(Debug, thiserror::Error)]
pub enum CreateLayerError {
    #[error("a layer named {0:?} exists already")]
    Exists(String),
    #[error("no layer named {0:?}")]
    Missing(String),
    #[error(
        "layer {0:?} comes from the configuration, not from an upload: remove its file from the layers directory instead"
    )]
    NotUploaded(String),
    #[error("{0}")]
    Schema(String),
    #[error("cannot write the layer file {0}")]
    LayerFile(String),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Removes the directories of uploads that were being imported when the server
/// stopped (`DATA/uploads/riskmap-import-*`).
fn clean_uploads(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with("riskmap-import-") {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => {
                    tracing::info!(dir = %e.path().display(), "removed the files of an upload interrupted by a stop")
                }
                Err(err) => {
                    tracing::warn!(dir = %e.path().display(), error = %err, "cannot remove an interrupted upload's files")
                }
            }
        }
    }
}

/// Writes a layer file atomically (a temporary file, synced, renamed, the directory
/// synced). A missing layers directory means the server runs on the layer files built
/// into the binary: the directory is created with them first, so that the next start
/// still has them beside the new one.
fn write_layer_file(dir: &Path, file: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        for (name, builtin) in crate::config::BUILTIN_LAYERS {
            std::fs::write(dir.join(name), builtin)?;
        }
    }
    let tmp = dir.join(format!(
        ".{}.tmp",
        file.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("layer.toml")
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(dir)?.sync_all()
}

/// How an upload ended, as the HTTP answer gives it.
#[derive(Debug)]
pub struct UploadOutcome {
    /// 201 imported, 200 dry run, 422 refused features (nothing written).
    pub status: u16,
    pub report: crate::ingest::ImportReport,
    /// True when this answers a retry: the report was kept from the first request.
    pub replayed: Option<crate::store::ImportRecord>,
}

impl App {
    /// Opens (or creates) `data_dir/riskmap.gpkg`, loads the demo into a new store
    /// when asked, and bulk-loads every layer's index (in parallel).
    pub fn open(config: Config, data_dir: &Path, options: OpenOptions) -> Result<App, AppError> {
        let path = data_dir.join(STORE_FILE);
        let store = Store::open(&path, OpenMode::CreateIfMissing, &config.layers)?;
        match demo::decide(&store, &config, options.demo) {
            Ok(true) => {
                let started = Instant::now();
                let layers = demo::build(&config, demo::DEMO_SEED, demo::SMALL)?;
                demo::load(&store, &layers, "riskmap:demo")?;
                let counts: Vec<String> = layers
                    .iter()
                    .map(|(l, f)| format!("{} {}", l.name, f.len()))
                    .collect();
                tracing::info!(features = %counts.join(", "), elapsed_ms = started.elapsed().as_millis() as u64, "loaded the demo into the empty store");
            }
            Ok(false) => {}
            // Another process is writing (an import into this new store): no demo now.
            Err(DemoError::Store(StoreError::Busy)) => {
                tracing::info!("store busy: the demo decision waits for the next start")
            }
            Err(e) => return Err(e.into()),
        }
        if store.has_old_changes(CHANGE_FEED_KEEP_SECONDS)? {
            let pruned = store.write(|tx| {
                let n = tx.prune_changes(CHANGE_FEED_KEEP_SECONDS)?;
                tx.commit()?;
                Ok::<_, StoreError>(n)
            });
            match pruned {
                Ok(n) => tracing::debug!(pruned = n, "pruned old change-feed rows"),
                // Another process is writing (a long import): prune at a later start.
                Err(StoreError::Busy) => tracing::info!("store busy: change-feed pruning skipped"),
                Err(e) => return Err(e.into()),
            }
        }
        // Uploads a killed server was importing: their directories are all that is
        // left of them (an upload is in the store whole or not at all).
        clean_uploads(&data_dir.join("uploads"));
        // And the staged tables of loads a kill interrupted (never swapped in, so
        // never seen); not those of a `riskmap import` still loading.
        match store.drop_stages() {
            Ok(0) => {}
            Ok(n) => tracing::info!(tables = n, "dropped the staged tables of interrupted loads"),
            Err(StoreError::Busy) => {
                tracing::info!("store busy: staged tables left for a later start")
            }
            Err(e) => return Err(e.into()),
        }
        // Read the feed position before loading: changes committed during the load
        // are applied again afterwards, which is harmless (applying is idempotent).
        let seq = store.last_change_seq()?;
        let started = Instant::now();
        let layers = load_all(&store, &config.layers)?;
        tracing::info!(
            layers = layers.len(),
            features = layers.iter().map(|l| l.index.read().len()).sum::<usize>(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "indexes built"
        );
        let layers: Vec<Arc<LayerState>> = layers.into_iter().map(Arc::new).collect();
        let (alerts, settled) = Alerts::open(&store, &layers, system_clock())?;
        if !settled.is_empty() {
            let kept = store.write(|tx| {
                for t in &settled {
                    tx.keep_transition(t, READINGS_ACTOR, None)?;
                }
                tx.commit()
            });
            if let Err(e) = kept {
                tracing::warn!(error = %e, transitions = settled.len(), "warnings settled at start not kept (settled again at the next start)");
            }
        }
        let mut layers = layers;
        layers.push(alerts.layer.clone());
        let unreadable: usize = layers.iter().map(|l| l.unreadable.lock().len()).sum();
        if unreadable > 0 {
            tracing::warn!(
                rows = unreadable,
                "the store is not served whole: rows that cannot be served were skipped (GET /health lists them by layer)"
            );
        }
        let app = App {
            config,
            store,
            layers: parking_lot::RwLock::new(Arc::new(layers)),
            layer_admin: Mutex::new(()),
            write_lock: Mutex::new(()),
            apply_lock: Mutex::new(()),
            follow: Mutex::new(seq),
            own_changes: Arc::new(Mutex::new(BTreeSet::new())),
            dangling_cache: Mutex::new(None),
            pauses: parking_lot::RwLock::new(Vec::new()),
            started: Instant::now(),
            tiles: crate::tiles::TileCache::new(options.tile_cache_bytes),
            options,
            uploads: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            alerts,
        };
        app.show_open_warnings();
        Ok(app)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn store_path(&self) -> PathBuf {
        self.store.path().to_path_buf()
    }

    /// The layers served now (a snapshot).
    pub fn layers(&self) -> Arc<Vec<Arc<LayerState>>> {
        self.layers.read().clone()
    }

    pub fn layer(&self, name: &str) -> Option<Arc<LayerState>> {
        self.layers
            .read()
            .iter()
            .find(|l| l.def.name == name)
            .cloned()
    }

    /// The names of the layers served now.
    pub fn layer_names(&self) -> Vec<String> {
        self.layers
            .read()
            .iter()
            .map(|l| l.def.name.clone())
            .collect()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The tile cache.
    pub fn tile_cache(&self) -> &crate::tiles::TileCache {
        &self.tiles
    }

    /// The options the catalogue was opened with.
    pub fn options(&self) -> &OpenOptions {
        &self.options
    }

    pub fn public_reads(&self) -> bool {
        self.options.public_reads
    }

    fn layer_or(&self, name: &str) -> Result<Arc<LayerState>, EditError> {
        let l = self
            .layer(name)
            .ok_or_else(|| EditError::UnknownLayer(name.to_string()))?;
        if !l.def.kind.is_stored() {
            return Err(EditError::ReadOnly(name.to_string()));
        }
        Ok(l)
    }

    /// Adds a feature whose id is new to the layer.
    pub fn create(
        &self,
        ctx: EditContext<'_>,
        layer: &str,
        feature: Feature,
    ) -> Result<StoredFeature, EditError> {
        // The expensive part of indexing, before any lock.
        let prepared = self.prepare(layer, feature)?;
        self.create_prepared(ctx, layer, prepared)
    }

    /// The expensive part of indexing a feature of this layer, which needs no lock: the
    /// callers of [`App::create_prepared`] and [`App::replace_prepared`] may do it
    /// elsewhere (a large feature's on a thread of idle priority, [`on_idle_thread`]).
    pub fn prepare(&self, layer: &str, feature: Feature) -> Result<Prepared, EditError> {
        Ok(Prepared::new(&self.layer_or(layer)?.def, feature))
    }

    /// [`App::create`] of a feature [`App::prepare`]d for this layer.
    pub fn create_prepared(
        &self,
        ctx: EditContext<'_>,
        layer: &str,
        prepared: Prepared,
    ) -> Result<StoredFeature, EditError> {
        let actor = ctx.actor;
        let state = self.layer_or(layer)?;
        let def = &state.def;
        let Prepared { feature, derived } = prepared;
        let kept = derived.kept();
        let _w = self.lock_writers(&ctx)?;
        self.check_references(def, &feature, None)
            .map_err(EditError::Invalid)?;
        let fid = self.store.write(|tx| {
            if tx.get_feature(def, &feature.id)?.is_some() {
                return Err(EditError::Exists {
                    layer: def.name.clone(),
                    id: feature.id.clone(),
                });
            }
            let fid = tx.insert_feature(def, &feature, kept.as_deref())?;
            tx.touch_layer(def, Bbox::of_geometry(&feature.geometry))?;
            tx.audit(&AuditEntry {
                actor: actor.into(),
                action: "create".into(),
                layer: Some(def.name.clone()),
                feature_id: Some(feature.id.clone()),
                after: Some(feature.to_geojson(def)),
                ..Default::default()
            })?;
            let seq = tx.record_change(&def.name, Some(&feature.id))?;
            self.commit_own(&ctx, tx, seq)?;
            Ok::<_, EditError>(fid)
        })?;
        // Committed: from here on the answer is the success.
        let stored = StoredFeature { fid, feature };
        self.apply_own(&state, &stored, derived);
        metrics::counter!("riskmap_edits_total", "layer" => def.name.clone(), "action" => "create")
            .increment(1);
        Ok(stored)
    }

    /// Replaces the geometry and properties of an existing feature.
    pub fn replace(
        &self,
        ctx: EditContext<'_>,
        layer: &str,
        feature: Feature,
    ) -> Result<StoredFeature, EditError> {
        // Prepared before the writers' lock: the new feature does not depend on the old.
        let prepared = self.prepare(layer, feature)?;
        self.replace_prepared(ctx, layer, prepared)
    }

    /// [`App::replace`] with a feature [`App::prepare`]d for this layer.
    pub fn replace_prepared(
        &self,
        ctx: EditContext<'_>,
        layer: &str,
        prepared: Prepared,
    ) -> Result<StoredFeature, EditError> {
        let id = prepared.feature.id.clone();
        self.update(ctx, layer, &id, "replace", |_| Ok(prepared))
    }

    /// Applies a JSON merge patch (RFC 7396) to an existing feature.
    pub fn patch(
        &self,
        ctx: EditContext<'_>,
        layer: &str,
        id: &str,
        patch: &Json,
    ) -> Result<StoredFeature, EditError> {
        let def = self.layer_or(layer)?.def.clone();
        // The patched feature depends on the stored one, so it is prepared inside the
        // transaction: still before the commit and outside every lock readers take.
        self.update(ctx, layer, id, "patch", |current| {
            let next = current
                .merge_patch(&def, patch)
                .map_err(EditError::Invalid)?;
            Ok(Prepared::new(&def, next))
        })
    }

    fn update(
        &self,
        ctx: EditContext<'_>,
        layer: &str,
        id: &str,
        action: &'static str,
        change: impl FnOnce(&Feature) -> Result<Prepared, EditError>,
    ) -> Result<StoredFeature, EditError> {
        let (actor, if_match) = (ctx.actor, ctx.if_match);
        let state = self.layer_or(layer)?;
        let def = &state.def;
        let _w = self.lock_writers(&ctx)?;
        let (stored, derived) = self.store.write(|tx| {
            let current = tx
                .get_feature(def, id)?
                .ok_or_else(|| EditError::NotFound {
                    layer: def.name.clone(),
                    id: id.to_string(),
                })?;
            check_if_match(def, &current.feature, if_match)?;
            let Prepared {
                feature: next,
                derived,
            } = change(&current.feature)?;
            self.check_references(def, &next, Some(&current.feature))
                .map_err(EditError::Invalid)?;
            tx.update_feature(def, current.fid, &next, derived.kept().as_deref())?;
            tx.touch_layer(def, Bbox::of_geometry(&next.geometry))?;
            tx.audit(&AuditEntry {
                actor: actor.into(),
                action: action.into(),
                layer: Some(def.name.clone()),
                feature_id: Some(id.to_string()),
                before: Some(current.feature.to_geojson(def)),
                after: Some(next.to_geojson(def)),
                ..Default::default()
            })?;
            let seq = tx.record_change(&def.name, Some(id))?;
            self.commit_own(&ctx, tx, seq)?;
            let stored = StoredFeature {
                fid: current.fid,
                feature: next,
            };
            Ok::<_, EditError>((stored, derived))
        })?;
        self.apply_own(&state, &stored, derived);
        metrics::counter!("riskmap_edits_total", "layer" => def.name.clone(), "action" => action)
            .increment(1);
        Ok(stored)
    }

    /// Deletes a feature; returns what it was.
    pub fn delete(
        &self,
        ctx: EditContext<'_>,
        layer: &str,
        id: &str,
    ) -> Result<StoredFeature, EditError> {
        let (actor, if_match) = (ctx.actor, ctx.if_match);
        let state = self.layer_or(layer)?;
        let def = &state.def;
        let _w = self.lock_writers(&ctx)?;
        if let Some((by, property, count)) = self.referenced_by(&def.name, id) {
            return Err(EditError::Referenced {
                layer: def.name.clone(),
                id: id.to_string(),
                by,
                property,
                count,
            });
        }
        let gone = self.store.write(|tx| {
            let current = tx
                .get_feature(def, id)?
                .ok_or_else(|| EditError::NotFound {
                    layer: def.name.clone(),
                    id: id.to_string(),
                })?;
            check_if_match(def, &current.feature, if_match)?;
            tx.delete_feature(def, current.fid)?;
            tx.touch_layer(def, None)?;
            tx.audit(&AuditEntry {
                actor: actor.into(),
                action: "delete".into(),
                layer: Some(def.name.clone()),
                feature_id: Some(id.to_string()),
                before: Some(current.feature.to_geojson(def)),
                ..Default::default()
            })?;
            let seq = tx.record_change(&def.name, Some(id))?;
            self.commit_own(&ctx, tx, seq)?;
            Ok::<_, EditError>(current)
        })?;
        {
            let _a = self.apply_lock.lock();
            remove_from(&state, &mut state.index.write(), id);
        }
        drop(_w);
        metrics::counter!("riskmap_edits_total", "layer" => def.name.clone(), "action" => "delete")
            .increment(1);
        if def.kind == crate::model::LayerKind::Sensor {
            // Its level stops counting now (its warnings fall), not at a next reading.
            if let Err(e) = self.sweep_sensors() {
                tracing::warn!(error = %e, sensor = id, "the warnings of a deleted sensor were not updated yet; the next readings will");
            }
        }
        Ok(gone)
    }

    /// Takes the writers' lock, giving up at the edit's deadline (nothing has been
    /// written then, so the client may be told the edit timed out).
    fn lock_writers(&self, ctx: &EditContext<'_>) -> Result<MutexGuard<'_, ()>, EditError> {
        match ctx.deadline {
            Some(d) => self.write_lock.try_lock_until(d).ok_or(EditError::TimedOut),
            None => Ok(self.write_lock.lock()),
        }
    }

    /// Commits a transaction whose change-feed entry `seq` this server will apply
    /// itself: the entry is marked as ours before the commit (so the follower, which
    /// sees it only once committed, always knows to skip it) and unmarked if the commit
    /// fails.
    /// The edit's deadline is checked last before the commit: after it, the answer is
    /// the success.
    fn commit_own(
        &self,
        ctx: &EditContext<'_>,
        tx: crate::store::Tx<'_>,
        seq: i64,
    ) -> Result<(), EditError> {
        self.pause(Pause::BeforeCommit);
        ctx.check_deadline()?;
        self.own_changes.lock().insert(seq);
        tx.commit().map_err(|e| {
            self.own_changes.lock().remove(&seq);
            e.into()
        })
    }

    /// Makes the writer (or reloader) that reaches `at` call `f` there, or nobody when
    /// `f` is `None`. For tests that hold a writer at that point to show what readers
    /// and other writers do meanwhile.
    pub fn set_pause(&self, at: Pause, f: Option<PauseFn>) {
        let mut p = self.pauses.write();
        p.retain(|(a, _)| *a != at);
        if let Some(f) = f {
            p.push((at, f));
        }
    }

    fn pause(&self, at: Pause) {
        let f = self
            .pauses
            .read()
            .iter()
            .find(|(a, _)| *a == at)
            .map(|(_, f)| f.clone());
        if let Some(f) = f {
            f();
        }
    }

    /// A place among the [`MAX_UPLOADS`] uploads allowed at once, or `None` when all
    /// are taken.
    pub fn upload_slot(&self) -> Option<UploadSlot> {
        use std::sync::atomic::Ordering;
        let n = self.uploads.fetch_add(1, Ordering::SeqCst);
        if n >= MAX_UPLOADS {
            self.uploads.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(UploadSlot(self.uploads.clone()))
    }

    /// Where uploads are written while they are imported: `DATA/uploads/`, on the
    /// store's file system (a large upload must not fill a small /tmp).
    pub fn upload_dir(&self) -> PathBuf {
        self.store
            .path()
            .parent()
            .unwrap_or(Path::new("."))
            .join("uploads")
    }

    /// Imports an uploaded file into `layer` (see `ingest::import_file`), keeps the
    /// report (in the import's own transaction when it commits) and, once committed,
    /// applies it to the index before returning: tiles and queries see all of it from
    /// then on, and none of it before. `idempotency_key`: a retry with the same key
    /// by the same actor gets the first report back and imports nothing again.
    pub fn import_upload(
        &self,
        layer: &str,
        path: &Path,
        mut opts: crate::ingest::ImportOptions,
        idempotency_key: Option<&str>,
    ) -> Result<UploadOutcome, crate::ingest::IngestError> {
        use crate::ingest::{ImportReport, IngestError, NoProgress};
        use crate::store::ImportRecord;
        let def = self
            .layer(layer)
            .filter(|l| l.def.kind.is_stored())
            .ok_or_else(|| IngestError::UnknownLayer {
                name: layer.to_string(),
                known: self.layer_names().join(", "),
            })?
            .def
            .clone();
        if let Some(key) = idempotency_key {
            if let Some(rec) = self.store.import_by_key(&opts.actor, key)? {
                return Ok(UploadOutcome {
                    status: rec.status,
                    report: ImportReport::default(),
                    replayed: Some(rec),
                });
            }
        }
        let defs: Vec<Arc<LayerDef>> = self.layers().iter().map(|l| l.def.clone()).collect();
        opts.references = crate::ingest::reference_check(&self.store, &def, &defs)?;
        if opts.mode == crate::ingest::Mode::Replace {
            // From the indexes, which hold what is committed: no table scan.
            let naming = self.naming_layers(&def.name);
            if !naming.is_empty() {
                opts.referenced = Some(Arc::new(move |id: &str| {
                    naming.iter().find_map(|(l, prop)| {
                        let n = l.index.read().uses(*prop, id);
                        (n > 0).then(|| {
                            format!(
                                "{n} feature(s) of {} in {}",
                                l.def.name, l.def.properties[*prop].name
                            )
                        })
                    })
                }));
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let (own, marked) = self.own_index_changes(&mut opts);
        let record = |status: u16, report: &ImportReport| -> Result<ImportRecord, StoreError> {
            let mut r = report.clone();
            r.id = Some(id.clone());
            Ok(ImportRecord {
                id: id.clone(),
                created: crate::store::now_timestamp(),
                actor: opts.actor.clone(),
                layer: layer.to_string(),
                idempotency_key: idempotency_key.map(str::to_string),
                status,
                // A report is plain data: serialising it cannot fail.
                report: serde_json::to_string(&r).unwrap_or_default(),
            })
        };
        {
            let (id, actor, key, layer) = (
                id.clone(),
                opts.actor.clone(),
                idempotency_key.map(str::to_string),
                layer.to_string(),
            );
            opts.keep_report = Some(Arc::new(move |tx, report| {
                own(report);
                let mut r = report.clone();
                r.id = Some(id.clone());
                r.committed = true;
                tx.keep_import(&ImportRecord {
                    id: id.clone(),
                    created: crate::store::now_timestamp(),
                    actor: actor.clone(),
                    layer: layer.clone(),
                    idempotency_key: key.clone(),
                    status: 201,
                    report: serde_json::to_string(&r).unwrap_or_default(),
                })
            }));
        }
        let sink = opts.index_sink.clone();
        let result = crate::ingest::import_file(&self.store, &def, path, &opts, &NoProgress);
        let mut report = match result {
            Ok(r) => r,
            Err(e) => {
                self.disown(&marked);
                // A concurrent retry with the same key committed first: answer its report.
                if let Some(key) = idempotency_key {
                    if let Ok(Some(rec)) = self.store.import_by_key(&opts.actor, key) {
                        return Ok(UploadOutcome {
                            status: rec.status,
                            report: ImportReport::default(),
                            replayed: Some(rec),
                        });
                    }
                }
                return Err(e);
            }
        };
        report.id = Some(id.clone());
        if !report.committed {
            self.disown(&marked);
        }
        if report.committed {
            // Applied before the answer: whoever is told "imported" sees it. A first
            // load brings its index along; other imports are read back.
            let built = sink.and_then(|s| s.lock().take());
            match (built, self.layer(layer), report.change_seqs.last()) {
                (Some(index), Some(l), Some(&seq)) if report.index_built => {
                    self.install_index(&l, index, Vec::new(), seq)?
                }
                _ => {
                    self.disown(&marked);
                    self.follow_changes()?;
                }
            }
            if def.kind == crate::model::LayerKind::Sensor && report.deleted > 0 {
                if let Err(e) = self.sweep_sensors() {
                    tracing::warn!(error = %e, "the warnings of deleted sensors were not updated yet; the next readings will");
                }
            }
            return Ok(UploadOutcome {
                status: 201,
                report,
                replayed: None,
            });
        }
        let status = if opts.dry_run { 200 } else { 422 };
        // Kept on its own: nothing else was written. A dry run or refused upload is not
        // an import, so its key is not kept (a corrected retry may reuse it).
        let mut rec = record(status, &report)?;
        rec.idempotency_key = None;
        self.store.write(|tx| {
            tx.keep_import(&rec)?;
            tx.commit()
        })?;
        Ok(UploadOutcome {
            status,
            report,
            replayed: None,
        })
    }

    /// Creates layer `name` from an uploaded file: its definition inferred from the
    /// features (`ingest::infer`), written as `NAME.toml` in the layers directory, its
    /// table created in the store, the file imported into it (all or nothing), and the
    /// layer served at once (tiles, queries, TileJSON, the style). If the import is
    /// refused, the layer file and table are removed again and the report says why.
    #[allow(clippy::too_many_arguments)]
    pub fn create_layer(
        &self,
        name: &str,
        title: &str,
        kind: crate::model::LayerKind,
        id_property: &str,
        path: &Path,
        mut opts: crate::ingest::ImportOptions,
    ) -> Result<UploadOutcome, CreateLayerError> {
        use crate::ingest::{ImportReport, NoProgress};
        let _admin = self.layer_admin.lock();
        if self.layer(name).is_some() {
            return Err(CreateLayerError::Exists(name.to_string()));
        }
        let dir = self.config.layers_dir.clone();
        let file = dir.join(format!("{name}.toml"));
        if file.exists() {
            return Err(CreateLayerError::Exists(name.to_string()));
        }
        let prepared = crate::ingest::prepare(path, &opts)?;
        let infer = || {
            crate::ingest::infer::infer(
                name,
                title,
                kind,
                id_property,
                prepared.reader.as_ref(),
                &opts,
            )
        };
        let toml = if opts.parse_at_idle {
            on_idle_thread("riskmap-infer", infer)
        } else {
            infer()
        }
        .map_err(CreateLayerError::Schema)?;
        let def = Arc::new(
            crate::config::parse_layer(&file, &toml)
                .map_err(|e| CreateLayerError::Schema(e.to_string()))?,
        );
        write_layer_file(&dir, &file, &toml)
            .map_err(|e| CreateLayerError::LayerFile(format!("{}: {e}", file.display())))?;
        let undo = |store: &Store| {
            let _ = store.write(|tx| {
                tx.drop_layer(name)?;
                tx.commit()
            });
            let _ = std::fs::remove_file(&file);
        };
        if let Err(e) = self.store.write(|tx| {
            tx.create_layer(&def)?;
            tx.commit()
        }) {
            undo(&self.store);
            return Err(e.into());
        }
        let id = uuid::Uuid::new_v4().to_string();
        let marked: Arc<Mutex<Vec<i64>>>;
        {
            let (id, actor, layer) = (id.clone(), opts.actor.clone(), name.to_string());
            let own = self.own_index_changes(&mut opts);
            marked = own.1;
            let own = own.0;
            opts.keep_report = Some(Arc::new(move |tx, report: &ImportReport| {
                own(report);
                let mut r = report.clone();
                r.id = Some(id.clone());
                r.committed = true;
                tx.keep_import(&crate::store::ImportRecord {
                    id: id.clone(),
                    created: crate::store::now_timestamp(),
                    actor: actor.clone(),
                    layer: layer.clone(),
                    idempotency_key: None,
                    status: 201,
                    report: serde_json::to_string(&r).unwrap_or_default(),
                })
            }));
        }
        opts.dry_run = false;
        let sink = opts.index_sink.clone();
        let mut report = match crate::ingest::import_prepared_file(
            &self.store,
            &def,
            prepared,
            &opts,
            &NoProgress,
        ) {
            Ok(r) => r,
            Err(e) => {
                self.disown(&marked);
                undo(&self.store);
                return Err(e.into());
            }
        };
        report.id = Some(id);
        if !report.committed {
            self.disown(&marked);
            undo(&self.store);
            return Ok(UploadOutcome {
                status: 422,
                report,
                replayed: None,
            });
        }
        // Nobody could edit the layer before it is listed: the load's own index is
        // the whole layer. Read back only when the load did not make one.
        let (index, skipped) = match sink.and_then(|s| s.lock().take()) {
            Some(index) => (index, Vec::new()),
            None => {
                let (index, skipped, _) = build_index(&self.store, &def, None)?;
                (index, skipped)
            }
        };
        let state = LayerState::new(index);
        log_unreadable(name, &state.unreadable.lock().replace(skipped));
        {
            let mut layers = self.layers.write();
            let mut next: Vec<Arc<LayerState>> = layers.iter().cloned().collect();
            next.push(Arc::new(state));
            next.sort_by(|a, b| a.def.name.cmp(&b.def.name));
            *layers = Arc::new(next);
        }
        self.tiles.invalidate_all();
        tracing::info!(
            layer = name,
            features = report.added,
            "layer created from an upload"
        );
        Ok(UploadOutcome {
            status: 201,
            report,
            replayed: None,
        })
    }

    /// Removes a layer created from an upload: no longer served, its table dropped, its
    /// layer file deleted. Layers written by hand are refused (their file is the
    /// operator's).
    pub fn remove_layer(&self, name: &str) -> Result<(), CreateLayerError> {
        let _admin = self.layer_admin.lock();
        let l = self
            .layer(name)
            .ok_or_else(|| CreateLayerError::Missing(name.to_string()))?;
        if !l.def.uploaded {
            return Err(CreateLayerError::NotUploaded(name.to_string()));
        }
        {
            let mut layers = self.layers.write();
            let next: Vec<Arc<LayerState>> = layers
                .iter()
                .filter(|x| x.def.name != name)
                .cloned()
                .collect();
            *layers = Arc::new(next);
        }
        self.tiles.invalidate_all();
        let file = self.config.layers_dir.join(format!("{name}.toml"));
        // The file first: a crash after it leaves a table no layer names (ignored, and
        // replaced if the name is used again), never a layer without its table.
        std::fs::remove_file(&file)
            .map_err(|e| CreateLayerError::LayerFile(format!("{}: {e}", file.display())))?;
        self.store.write(|tx| {
            tx.drop_layer(name)?;
            tx.audit(&AuditEntry {
                actor: "server".into(),
                action: "drop_layer".into(),
                layer: Some(name.to_string()),
                ..Default::default()
            })?;
            tx.commit()
        })?;
        Ok(())
    }

    /// Applies one of this server's own committed writes to the index.
    fn apply_own(&self, state: &LayerState, sf: &StoredFeature, derived: Derived) {
        let _a = self.apply_lock.lock();
        apply_to(state, &mut state.index.write(), sf, derived);
    }

    /// Applies to the indexes what other processes wrote to the store (the change feed
    /// since the last pass), skipping this server's own entries: single features are
    /// re-read from the store, "reload" entries rebuild the layer beside the live one
    /// and swap it in. Readers are never held up; this server's writers only while a
    /// re-read row is applied. Returns the number of entries applied.
    pub fn follow_changes(&self) -> Result<usize, StoreError> {
        let mut seq = self.follow.lock();
        let mut applied = 0;
        loop {
            let (changes, gap) = self
                .store
                .changes_since(*seq, 2 * crate::ingest::CHANGE_LIST_LIMIT)?;
            if gap {
                tracing::warn!(
                    from = *seq,
                    "change feed has a gap (pruned rows); reloading every layer"
                );
                for l in self.layers().iter() {
                    self.reload(l)?;
                }
            }
            let Some(last) = changes.last().map(|c| c.seq) else {
                break;
            };
            let own: BTreeSet<i64> = self.own_changes.lock().range(..=last).copied().collect();
            let mut reloaded: Vec<&str> = Vec::new();
            for c in &changes {
                if c.feature_id.is_none()
                    && !own.contains(&c.seq)
                    && !reloaded.contains(&c.layer.as_str())
                {
                    reloaded.push(&c.layer);
                }
            }
            // A reload reads a snapshot taken after this batch was read, and applies
            // every later change of its layer itself: the batch's single changes of a
            // reloaded layer are in it.
            for name in &reloaded {
                if *name == CATALOG_FEED {
                    self.reload_catalog()?;
                } else if let Some(l) = self.layer(name) {
                    self.reload(&l)?;
                }
            }
            // The batch's rows are read first, then applied with one index lock per
            // run of the same layer: readers see an import (its entries are consecutive)
            // whole or not at all, never half of it.
            {
                let _a = self.apply_lock.lock();
                let mut reads: Vec<(Arc<LayerState>, &str, RowRead)> = Vec::new();
                for c in &changes {
                    if own.contains(&c.seq) {
                        continue; // applied when it was committed
                    }
                    applied += 1;
                    let (Some(id), Some(l)) = (&c.feature_id, self.layer(&c.layer)) else {
                        continue;
                    };
                    if reloaded.contains(&c.layer.as_str()) {
                        continue;
                    }
                    let read = self.read_for_index(&l, id)?;
                    reads.push((l, id.as_str(), read));
                }
                let mut reads = reads.into_iter().peekable();
                while let Some((l, id, read)) = reads.next() {
                    let mut index = l.index.write();
                    apply_read(&l, &mut index, id, read);
                    while let Some((_, id, read)) = reads.next_if(|(m, _, _)| Arc::ptr_eq(m, &l)) {
                        apply_read(&l, &mut index, id, read);
                    }
                }
            }
            *seq = last;
            let mut mine = self.own_changes.lock();
            for s in own {
                mine.remove(&s);
            }
        }
        Ok(applied)
    }

    /// A row as the index should show it, read and prepared (the caller holds
    /// `apply_lock`): `Some` to put in, `None` to take out (deleted, or unreadable:
    /// then recorded as such).
    fn read_for_index(&self, l: &LayerState, id: &str) -> Result<RowRead, StoreError> {
        match self.store.get_feature(&l.def, id) {
            Ok(Some(sf)) => {
                let Prepared { feature, derived } = Prepared::new(&l.def, sf.feature);
                Ok(RowRead::Put(
                    StoredFeature {
                        fid: sf.fid,
                        feature,
                    },
                    derived,
                ))
            }
            Ok(None) => Ok(RowRead::Gone),
            // A row another tool wrote that cannot be served: the index drops what it
            // had under this id (the store no longer has it), the row is counted, and
            // the rest of the feed goes on.
            Err(e) => Ok(RowRead::Unreadable(e.into_unreadable()?)),
        }
    }

    /// Rebuilds a layer's index from the store beside the live one, without any lock,
    /// then swaps it in together with the layer's changes committed after the snapshot
    /// it was built from (this server's own writes made meanwhile among them), so no
    /// reader ever sees an acknowledged write go missing.
    fn reload(&self, l: &LayerState) -> Result<(), StoreError> {
        if !l.def.kind.is_stored() {
            return Ok(()); // the server's own layer: nothing in the store to read
        }
        let started = Instant::now();
        // Built on a thread of its own at a lower CPU priority: a rebuild (seconds for
        // millions of features) is background work, and requests come first.
        let (index, skipped, snapshot) =
            on_idle_thread("riskmap-reload", || build_index(&self.store, &l.def, None))?;
        let n = index.len();
        self.pause(Pause::ReloadBuilt);
        self.install_index(l, index, skipped, snapshot)?;
        tracing::info!(layer = %l.def.name, features = n, elapsed_ms = started.elapsed().as_millis() as u64, "layer reloaded from the store");
        Ok(())
    }

    /// Prepares `opts` to receive the index of a layer an import loads first
    /// ([`crate::ingest::ImportOptions::index_sink`]) and returns the hook that, before
    /// the commit, marks the import's change-feed entries as this server's own (it
    /// installs that index instead of reading the layer back), and the list of what it
    /// marked, for [`App::disown`].
    fn own_index_changes(
        &self,
        opts: &mut crate::ingest::ImportOptions,
    ) -> (
        impl Fn(&crate::ingest::ImportReport) + Send + Sync + 'static,
        Arc<Mutex<Vec<i64>>>,
    ) {
        opts.index_sink = Some(Arc::new(Mutex::new(None)));
        let own = self.own_changes.clone();
        let marked: Arc<Mutex<Vec<i64>>> = Arc::default();
        let list = marked.clone();
        let hook = move |report: &crate::ingest::ImportReport| {
            if report.index_built {
                own.lock().extend(report.change_seqs.iter().copied());
                list.lock().extend(report.change_seqs.iter().copied());
            }
        };
        (hook, marked)
    }

    /// Unmarks what an [`App::own_index_changes`] hook marked, for an import that did
    /// not commit (rolled-back sequence numbers are used again, and must not be
    /// skipped then) or whose index is not installed.
    fn disown(&self, marked: &Mutex<Vec<i64>>) {
        let mut own = self.own_changes.lock();
        for seq in marked.lock().drain(..) {
            own.remove(&seq);
        }
    }

    /// Replaces a layer's index by `index`, built from the store as of feed position
    /// `snapshot` (or from an import whose last feed entry is `snapshot`): the feed's
    /// later entries of the layer are applied to it first, this server's own among
    /// them, so no acknowledged write goes missing. Readers wait only for the swap.
    fn install_index(
        &self,
        l: &LayerState,
        index: LayerIndex,
        skipped: Vec<UnreadableRow>,
        snapshot: i64,
    ) -> Result<(), StoreError> {
        let old = {
            let _a = self.apply_lock.lock();
            let mut later = Vec::new();
            let mut from = snapshot;
            loop {
                let (changes, _) = self.store.changes_since(from, 10_000)?;
                let Some(last) = changes.last().map(|c| c.seq) else {
                    break;
                };
                for c in changes {
                    if c.layer != l.def.name {
                        continue;
                    }
                    // A later reload entry of this layer is the follower's next job.
                    if let Some(id) = c.feature_id {
                        let read = self.read_for_index(l, &id)?;
                        later.push((id, read));
                    }
                }
                from = last;
            }
            let mut live = l.index.write();
            let old = std::mem::replace(&mut *live, index);
            l.record_all_edited();
            let new = l.unreadable.lock().replace(skipped);
            log_unreadable(&l.def.name, &new);
            for (id, read) in later {
                apply_read(l, &mut live, &id, read);
            }
            old
        };
        // Freed after the locks are released, so readers are not held up, and at idle
        // priority: a layer of millions of features takes a good part of a second.
        on_idle_thread("riskmap-free", move || drop(old));
        Ok(())
    }
}

/// A row read from the store for the index.
enum RowRead {
    Put(StoredFeature, Derived),
    Gone,
    Unreadable(UnreadableRow),
}

/// Applies a row read by [`App::read_for_index`] to a layer's locked index.
fn apply_read(state: &LayerState, index: &mut LayerIndex, id: &str, read: RowRead) {
    match read {
        RowRead::Put(sf, derived) => apply_to(state, index, &sf, derived),
        RowRead::Gone => remove_from(state, index, id),
        RowRead::Unreadable(row) => {
            remove_from(state, index, id);
            if state.unreadable.lock().insert(row.clone()) {
                log_unreadable(&state.def.name, &[row]);
            }
        }
    }
}

/// Puts a stored feature into a layer's (locked) index and records where the layer
/// changed (old and new boxes) for tile freshness: index first, change log second.
fn apply_to(state: &LayerState, index: &mut LayerIndex, sf: &StoredFeature, derived: Derived) {
    forget_unreadable(state, &sf.feature.id);
    let old = index.upsert_prepared(sf.fid, &sf.feature, derived);
    let new = Bbox::of_geometry(&sf.feature.geometry);
    state.record_edit(&old.into_iter().chain(new).collect::<Vec<_>>());
}

/// Takes a feature out of a layer's (locked) index and records where.
fn remove_from(state: &LayerState, index: &mut LayerIndex, id: &str) {
    forget_unreadable(state, id);
    if let Some(old) = index.remove(id) {
        state.record_edit(&[old]);
    }
}

/// The row with this id was replaced or deleted: it is no longer unreadable.
fn forget_unreadable(state: &LayerState, id: &str) {
    let mut u = state.unreadable.lock();
    if !u.is_empty() {
        u.remove_id(id);
    }
}

/// Logs rows that are not served, each once (callers pass only rows not known yet).
fn log_unreadable(layer: &str, rows: &[UnreadableRow]) {
    for r in rows.iter().take(UNREADABLE_LOGGED) {
        tracing::warn!(
            layer,
            fid = r.fid,
            id = r.id.as_deref().unwrap_or("(unreadable)"),
            reason = %r.reason,
            "row in the store cannot be served: skipped"
        );
    }
    if rows.len() > UNREADABLE_LOGGED {
        tracing::warn!(
            layer,
            rows = rows.len() - UNREADABLE_LOGGED,
            "more rows that cannot be served were skipped (not logged one by one)"
        );
    }
}

/// The ETag of a feature: a hash of its GeoJSON.
pub fn etag(layer: &LayerDef, f: &Feature) -> String {
    let digest = Sha256::digest(f.to_geojson(layer).to_string().as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

fn check_if_match(
    layer: &LayerDef,
    current: &Feature,
    if_match: Option<&str>,
) -> Result<(), EditError> {
    let Some(wanted) = if_match else {
        return Ok(());
    };
    // RFC 9110 §13.1.1: `*` matches any current representation (there is one: the
    // caller found the feature); otherwise the list's entity tags are compared
    // strongly, so a weak tag `W/"..."` never matches, not even with the same opaque
    // tag (a weak tag only promises semantic equivalence, too little to overwrite on).
    // A list that does not parse matches nothing: the write must not go ahead on a
    // condition that could not be read.
    fn matches(list: &str, now: &str) -> bool {
        // `*` stands alone (`If-Match = "*" / #entity-tag`).
        if list.trim_matches([' ', '\t']) == "*" {
            return true;
        }
        let (mut rest, mut found) = (list, false);
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                return found;
            }
            let (weak, r) = match rest.strip_prefix("W/") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            // An entity tag is a quoted opaque tag without inner quotes.
            let Some(body) = r.strip_prefix('"') else {
                return false;
            };
            let Some(end) = body.find('"') else {
                return false;
            };
            let tag = &r[..end + 2];
            found |= !weak && tag == now;
            rest = &body[end + 1..];
            if !(rest.is_empty() || rest.starts_with([' ', '\t', ','])) {
                return false;
            }
        }
    }
    let now = etag(layer, current);
    if matches(wanted, &now) {
        Ok(())
    } else {
        Err(EditError::PreconditionFailed { current: now })
    }
}

/// A layer's index bulk-loaded from the store, and the rows it could not serve.
/// Also returns the change-feed position of the snapshot it was read from.
fn build_index(
    store: &Store,
    def: &Arc<LayerDef>,
    expected: Option<usize>,
) -> Result<(LayerIndex, Vec<UnreadableRow>, i64), StoreError> {
    let mut conn = store.open_reader()?;
    let expected = match expected {
        Some(n) => n,
        None => store.count(def)? as usize,
    };
    let (mut skipped, mut seq) = (Vec::new(), 0);
    let index = LayerIndex::build(def.clone(), expected, |push| {
        (skipped, seq) = store.scan_layer_snapshot(&mut conn, def, push)?;
        Ok::<_, StoreError>(())
    })?;
    Ok((index, skipped, seq))
}

/// Loads every layer on as many threads as there are cores, largest layer first, each
/// thread taking the next layer when it is done (longest-processing-time-first): the
/// largest layer has a core to itself from the start and is never preempted by the
/// loading of another, so the start-up takes about as long as the largest layer or the
/// rest together, whichever is longer. Costly features of a smaller layer (a polygon of
/// a million vertices) do not take the largest layer's core, but where cores share
/// memory bandwidth and caches they still slow it (measured in `benches/hostile.sh`:
/// 2–3 s for three million-vertex features beside the 4.52 M sensors on 2 vCPUs).
fn load_all(store: &Store, defs: &[Arc<LayerDef>]) -> Result<Vec<LayerState>, StoreError> {
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(defs.len());
    for (i, def) in defs.iter().enumerate() {
        order.push((i, store.count(def)? as usize));
    }
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let load = |i: usize, expected: usize| -> Result<(usize, LayerState), StoreError> {
        let def = &defs[i];
        let started = Instant::now();
        let (index, skipped, _) = build_index(store, def, Some(expected))?;
        let state = LayerState::new(index);
        log_unreadable(&def.name, &state.unreadable.lock().replace(skipped));
        tracing::info!(layer = %def.name, features = expected, elapsed_ms = started.elapsed().as_millis() as u64, "layer loaded");
        Ok((i, state))
    };
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, defs.len().max(1));
    let loaded: Vec<Result<Vec<(usize, LayerState)>, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(i, expected)) = order.get(k) else {
                            return Ok(mine);
                        };
                        mine.push(load(i, expected)?);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut states: Vec<Option<LayerState>> = (0..defs.len()).map(|_| None).collect();
    for part in loaded {
        for (i, state) in part? {
            states[i] = Some(state);
        }
    }
    Ok(states
        .into_iter()
        .map(|s| s.expect("every layer was loaded by one of the threads"))
        .collect())
}

impl crate::store::HasStoreError for EditError {
    fn store_error_mut(&mut self) -> Option<&mut StoreError> {
        match self {
            EditError::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<FieldError> for EditError {
    fn from(e: FieldError) -> Self {
        EditError::Invalid(e)
    }
}

#[cfg(test)]
mod priority_tests {
    #[test]
    fn bulk_work_runs_under_sched_idle_and_its_caller_does_not() {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        let before = thread_schedule_policy().expect("the caller's policy");
        assert_ne!(before, idle);
        let (policy, name) = super::on_idle_thread("riskmap-test-idle", || {
            (
                thread_schedule_policy().expect("the thread's policy"),
                std::thread::current().name().map(str::to_string),
            )
        });
        assert_eq!(policy, idle);
        assert_eq!(name.as_deref(), Some("riskmap-test-idle"));
        assert_eq!(thread_schedule_policy().ok(), Some(before));
        // A panic of the work reaches the caller.
        let panicked = std::panic::catch_unwind(|| {
            super::on_idle_thread("riskmap-test-idle", || panic!("in the bulk work"))
        });
        assert!(panicked.is_err());
    }

    #[test]
    fn a_thread_lowers_its_own_priority_and_never_raises_it() {
        std::thread::spawn(|| {
            let before = rustix::process::getpriority_process(None).expect("getpriority");
            super::lower_thread_priority(before + 3);
            let lowered = rustix::process::getpriority_process(None).expect("getpriority");
            assert_eq!(lowered, before + 3);
            super::lower_thread_priority(before + 1);
            assert_eq!(
                rustix::process::getpriority_process(None).expect("getpriority"),
                lowered
            );
        })
        .join()
        .expect("the thread's checks pass");
        // The calling thread is untouched.
        assert_eq!(rustix::process::getpriority_process(None).ok(), Some(0));
    }
}
