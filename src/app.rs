//! The running catalogue: the store, one index per layer, and the operations that
//! keep them in step. HTTP handlers call these; nothing here knows HTTP.
//!
//! Consistency rule: every change is committed to the store first (durable), then
//! applied to the index, under one write lock, before the caller is answered. Writes
//! by other processes (`riskmap import`) reach the index through the store's change
//! feed ([`App::follow_changes`]), applied under the same lock, so the two paths never
//! interleave.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::demo::{self, DemoError};
use crate::index::{LayerIndex, LayerState};
use crate::model::{Bbox, Feature, FieldError, LayerDef, UnreadableRow};
use crate::store::{AuditEntry, OpenMode, Store, StoreError, StoredFeature};

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
    #[error("layer {layer} has no feature {id:?}")]
    NotFound { layer: String, id: String },
    #[error("layer {layer} already has a feature {id:?}")]
    Exists { layer: String, id: String },
    #[error("the feature changed since it was read (its ETag is now {current})")]
    PreconditionFailed { current: String },
    #[error("{0}")]
    Invalid(FieldError),
    #[error("the edit took too long and was abandoned before its commit; nothing changed")]
    TimedOut,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The catalogue.
pub struct App {
    config: Config,
    store: Store,
    layers: Vec<LayerState>,
    /// Serialises store writes with their index updates (see the module comment).
    write_lock: Mutex<()>,
    /// Newest change-feed entry applied to the indexes.
    applied_seq: Mutex<i64>,
    started: Instant,
    options: OpenOptions,
    tiles: crate::tiles::TileCache,
    /// Per thread: a read connection and what its `data_version` says has been
    /// applied (see [`App::store_changed`]).
    watch: thread_local::ThreadLocal<std::cell::RefCell<Option<Watch>>>,
    /// Passes of [`App::follow_changes`] begun and completed, numbered from 1: a
    /// change seen before pass `n` began is applied once `follows_done >= n`.
    follows_begun: AtomicU64,
    follows_done: AtomicU64,
}

/// One thread's view of the store for [`App::store_changed`].
struct Watch {
    conn: rusqlite::Connection,
    /// The newest `data_version` known to be applied to the indexes.
    applied: Option<i64>,
    /// A newer version seen, and how many passes had begun when it was seen: it is
    /// applied when a pass begun later has completed.
    pending: Option<(i64, u64)>,
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
        let unreadable: usize = layers.iter().map(|l| l.unreadable.lock().len()).sum();
        if unreadable > 0 {
            tracing::warn!(
                rows = unreadable,
                "the store is not served whole: rows that cannot be served were skipped (GET /health lists them by layer)"
            );
        }
        Ok(App {
            config,
            store,
            layers,
            write_lock: Mutex::new(()),
            applied_seq: Mutex::new(seq),
            started: Instant::now(),
            tiles: crate::tiles::TileCache::new(options.tile_cache_bytes),
            options,
            watch: thread_local::ThreadLocal::new(),
            follows_begun: AtomicU64::new(0),
            follows_done: AtomicU64::new(0),
        })
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

    pub fn layers(&self) -> &[LayerState] {
        &self.layers
    }

    pub fn layer(&self, name: &str) -> Option<&LayerState> {
        self.layers.iter().find(|l| l.def.name == name)
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

    fn layer_or(&self, name: &str) -> Result<&LayerState, EditError> {
        self.layer(name)
            .ok_or_else(|| EditError::UnknownLayer(name.to_string()))
    }

    /// Adds a feature whose id is new to the layer.
    pub fn create(
        &self,
        ctx: EditContext<'_>,
        layer: &str,
        feature: Feature,
    ) -> Result<StoredFeature, EditError> {
        let actor = ctx.actor;
        let state = self.layer_or(layer)?;
        let def = &state.def;
        let _w = self.write_lock.lock();
        let stored = self.store.write(|tx| {
            if tx.get_feature(def, &feature.id)?.is_some() {
                return Err(EditError::Exists {
                    layer: def.name.clone(),
                    id: feature.id.clone(),
                });
            }
            let fid = tx.insert_feature(def, &feature)?;
            tx.touch_layer(def, Bbox::of_geometry(&feature.geometry))?;
            tx.audit(&AuditEntry {
                actor: actor.into(),
                action: "create".into(),
                layer: Some(def.name.clone()),
                feature_id: Some(feature.id.clone()),
                after: Some(feature.to_geojson(def)),
                ..Default::default()
            })?;
            tx.record_change(&def.name, Some(&feature.id))?;
            ctx.check_deadline()?;
            tx.commit()?;
            Ok::<_, EditError>(StoredFeature { fid, feature })
        })?;
        apply(state, &stored);
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
        self.update(ctx, layer, &feature.id.clone(), "replace", |_| Ok(feature))
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
        self.update(ctx, layer, id, "patch", |current| {
            current.merge_patch(&def, patch).map_err(EditError::Invalid)
        })
    }

    fn update(
        &self,
        ctx: EditContext<'_>,
        layer: &str,
        id: &str,
        action: &'static str,
        change: impl FnOnce(&Feature) -> Result<Feature, EditError>,
    ) -> Result<StoredFeature, EditError> {
        let (actor, if_match) = (ctx.actor, ctx.if_match);
        let state = self.layer_or(layer)?;
        let def = &state.def;
        let _w = self.write_lock.lock();
        let stored = self.store.write(|tx| {
            let current = tx
                .get_feature(def, id)?
                .ok_or_else(|| EditError::NotFound {
                    layer: def.name.clone(),
                    id: id.to_string(),
                })?;
            check_if_match(def, &current.feature, if_match)?;
            let next = change(&current.feature)?;
            tx.update_feature(def, current.fid, &next)?;
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
            tx.record_change(&def.name, Some(id))?;
            ctx.check_deadline()?;
            tx.commit()?;
            Ok::<_, EditError>(StoredFeature {
                fid: current.fid,
                feature: next,
            })
        })?;
        apply(state, &stored);
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
        let _w = self.write_lock.lock();
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
            tx.record_change(&def.name, Some(id))?;
            ctx.check_deadline()?;
            tx.commit()?;
            Ok::<_, EditError>(current)
        })?;
        remove(state, id);
        metrics::counter!("riskmap_edits_total", "layer" => def.name.clone(), "action" => "delete")
            .increment(1);
        Ok(gone)
    }

    /// Whether another connection (an import in another process, or this server's own
    /// writer) may have committed something the indexes do not show yet: SQLite's
    /// `data_version` on a connection of this thread's own, about a microsecond and no
    /// shared lock. Readers that must never see an acknowledged write missing (tiles,
    /// features) check it and run [`App::follow_changes`] first when it says yes.
    /// Errors count as yes.
    ///
    /// A version counts as applied only once a pass of `follow_changes` that began
    /// after it was seen has completed, so every request that arrives while a catch-up
    /// is still running (on any thread) also waits for it, instead of being answered
    /// from the old state.
    pub fn store_changed(&self) -> bool {
        let cell = self.watch.get_or(|| std::cell::RefCell::new(None));
        let mut slot = cell.borrow_mut();
        let read = |c: &rusqlite::Connection| {
            c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
                .ok()
        };
        let done = self.follows_done.load(Ordering::Acquire);
        let w = match slot.as_mut() {
            Some(w) => w,
            None => match self.store.open_reader() {
                Ok(conn) => slot.insert(Watch {
                    conn,
                    applied: None,
                    pending: None,
                }),
                Err(_) => return true,
            },
        };
        if let Some((v, begun)) = w.pending {
            if done > begun {
                w.applied = Some(v);
                w.pending = None;
            }
        }
        let Some(now) = read(&w.conn) else {
            return true;
        };
        if w.applied == Some(now) {
            return false;
        }
        if w.pending.is_none_or(|(v, _)| v != now) {
            w.pending = Some((now, self.follows_begun.load(Ordering::Acquire)));
        }
        true
    }

    /// Applies the store's change feed to the indexes: single features are re-read
    /// from the store, "reload" entries rebuild the layer with a bulk load. Returns the
    /// number of entries applied.
    pub fn follow_changes(&self) -> Result<usize, StoreError> {
        let _w = self.write_lock.lock();
        // Numbered before the feed is read: whatever was committed before this point
        // is applied when the pass completes (see `store_changed`).
        let pass = self.follows_begun.fetch_add(1, Ordering::AcqRel) + 1;
        let applied = self.apply_feed()?;
        self.follows_done.store(pass, Ordering::Release);
        Ok(applied)
    }

    fn apply_feed(&self) -> Result<usize, StoreError> {
        let mut seq = self.applied_seq.lock();
        let mut applied = 0;
        loop {
            let (changes, gap) = self.store.changes_since(*seq, 10_000)?;
            if gap {
                tracing::warn!(
                    from = *seq,
                    "change feed has a gap (pruned rows); reloading every layer"
                );
                for l in &self.layers {
                    self.reload(l)?;
                }
            }
            let Some(last) = changes.last().map(|c| c.seq) else {
                break;
            };
            let mut reloaded: Vec<&str> = Vec::new();
            for c in &changes {
                if c.feature_id.is_none() && !reloaded.contains(&c.layer.as_str()) {
                    reloaded.push(&c.layer);
                }
            }
            for name in &reloaded {
                if let Some(l) = self.layer(name) {
                    self.reload(l)?;
                }
            }
            for c in &changes {
                let (Some(id), Some(l)) = (&c.feature_id, self.layer(&c.layer)) else {
                    continue;
                };
                if reloaded.contains(&c.layer.as_str()) {
                    continue;
                }
                match self.store.get_feature(&l.def, id) {
                    Ok(Some(sf)) => apply(l, &sf),
                    Ok(None) => remove(l, id),
                    // A row another tool wrote that cannot be served: the index drops
                    // what it had under this id (the store no longer has it), the
                    // row is counted, and the rest of the feed goes on.
                    Err(e) => {
                        let row = e.into_unreadable()?;
                        remove(l, id);
                        if l.unreadable.lock().insert(row.clone()) {
                            log_unreadable(&l.def.name, &[row]);
                        }
                    }
                }
            }
            applied += changes.len();
            *seq = last;
        }
        Ok(applied)
    }

    fn reload(&self, l: &LayerState) -> Result<(), StoreError> {
        let started = Instant::now();
        let (index, skipped) = build_index(&self.store, &l.def)?;
        let n = index.len();
        let old = std::mem::replace(&mut *l.index.write(), index);
        l.changes.record_all();
        let new = l.unreadable.lock().replace(skipped);
        log_unreadable(&l.def.name, &new);
        drop(old); // freed after the lock is released: readers are not held up
        tracing::info!(layer = %l.def.name, features = n, elapsed_ms = started.elapsed().as_millis() as u64, "layer reloaded from the store");
        Ok(())
    }
}

/// Puts a stored feature into a layer's index and records where the layer changed
/// (old and new boxes) for tile freshness: index first, change log second.
fn apply(state: &LayerState, sf: &StoredFeature) {
    forget_unreadable(state, &sf.feature.id);
    let old = state.index.write().upsert(sf.fid, &sf.feature);
    let new = Bbox::of_geometry(&sf.feature.geometry);
    state
        .changes
        .record(&old.into_iter().chain(new).collect::<Vec<_>>());
}

/// Takes a feature out of a layer's index and records where.
fn remove(state: &LayerState, id: &str) {
    forget_unreadable(state, id);
    if let Some(old) = state.index.write().remove(id) {
        state.changes.record(&[old]);
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
fn build_index(
    store: &Store,
    def: &Arc<LayerDef>,
) -> Result<(LayerIndex, Vec<UnreadableRow>), StoreError> {
    let mut conn = store.open_reader()?;
    let expected = store.count(def)? as usize;
    let mut skipped = Vec::new();
    let index = LayerIndex::build(def.clone(), expected, |push| {
        skipped = store.scan_layer(&mut conn, def, push)?;
        Ok::<_, StoreError>(())
    })?;
    Ok((index, skipped))
}

/// Loads every layer, one thread each.
fn load_all(store: &Store, defs: &[Arc<LayerDef>]) -> Result<Vec<LayerState>, StoreError> {
    let load = |def: &Arc<LayerDef>| {
        let (index, skipped) = build_index(store, def)?;
        let state = LayerState::new(index);
        log_unreadable(&def.name, &state.unreadable.lock().replace(skipped));
        Ok(state)
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = defs.iter().map(|def| s.spawn(move || load(def))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

impl From<FieldError> for EditError {
    fn from(e: FieldError) -> Self {
        EditError::Invalid(e)
    }
}
