//! Files in, features out: one reader per format, and [`import_file`], which feeds a
//! file through the layer's validation into the store, all or nothing.
//!
//! Policy: a file is imported whole or not at all. Every feature is validated; each
//! refusal is reported with its feature number, id and field. Unless the caller asks
//! to skip invalid features, one refusal means nothing is written. Syntax errors
//! (malformed JSON) stop the read and write nothing.
//!
//! Two ways in, both ending in one transaction that makes the import visible whole:
//! - into an empty layer (`import_staged`): one pass, written in short transactions
//!   into a staged table beside the layer (`store::stage`) as it is read and checked,
//!   the layer's index built on the way; one short transaction swaps it in;
//! - into a layer with features ([`import_prepared`]): pass 1 checks every feature and
//!   compares it with a snapshot of the layer, with no lock; pass 2 writes what differs
//!   in one transaction (reading the file again only when that is too much to keep).
//!
//! Either way the store's writer is held for a chunk, a swap, or the changed features,
//! never for reading the file, so edits do not wait for an upload.
//!
//! Audit, in the import's transaction: one `import` row (file, sha256, counts) and one
//! `import_update` row per feature it changed, with the members that changed, before
//! and after (see [`Feature::changes`]; its detail names the `import` row's seq). Added features are identified by
//! the file's hash; unchanged ones need nothing.

pub mod crs;
mod csv;
mod geojson;
pub mod infer;
pub mod shapefile;
mod source;
pub mod worker;
pub mod zipped;

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use compact_str::CompactString;
use sha2::{Digest, Sha256};

pub use crs::ImportCrs;
pub use shapefile::TextEncoding;

use crate::model::{Bbox, Feature, FeatureRef, FieldError, LayerDef};
use crate::store::{AuditEntry, Store, StoreError, UpsertOutcome};

/// When an import changes more features than this, the change feed says "reload the
/// layer" instead of listing them (followers rebuild with one bulk load).
pub const CHANGE_LIST_LIMIT: usize = 10_000;
/// At most this many refusals are kept in [`ImportReport::rejections`] (memory stays
/// bounded); every one is counted and handed to [`Progress::rejected`] as found.
pub const MAX_REPORTED_REJECTIONS: usize = 1_000;

/// A feature refused, and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Rejection {
    /// 1-based position of the feature in the file.
    pub feature: u64,
    /// 1-based line, where the format knows it (CSV, newline-delimited GeoJSON).
    pub line: Option<u64>,
    pub id: Option<String>,
    pub field: String,
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "feature {}", self.feature)?;
        match (&self.line, &self.id) {
            (Some(l), Some(id)) => write!(f, " (line {l}, id {id:?})")?,
            (Some(l), None) => write!(f, " (line {l})")?,
            (None, Some(id)) => write!(f, " (id {id:?})")?,
            (None, None) => {}
        }
        write!(f, ": field '{}': {}", self.field, self.reason)
    }
}

/// Errors that stop a whole import. Refusals of single features are not errors: they
/// are in [`ImportReport::rejected`].
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file cannot be read as its format (malformed JSON, a CSV without the
    /// needed columns...). `message` says where.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("unknown layer {name:?}; layers are: {known}")]
    UnknownLayer { name: String, known: String },
    /// Beyond a cap (archive size, feature count): 413.
    #[error("{message}")]
    TooLarge { message: String },
    /// `mode=replace` would delete features that features of other layers name: 409.
    #[error("{message}")]
    Referenced { message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::store::HasStoreError for IngestError {
    fn store_error_mut(&mut self) -> Option<&mut StoreError> {
        match self {
            IngestError::Store(e) => Some(e),
            _ => None,
        }
    }
}

pub use source::{Claim, FeatureReader, Format, ReaderSettings, SourceInfo, WorkDir};

impl Format {
    /// Decides between GeoJSON and CSV from the file name, then from the first
    /// non-blank byte (after a UTF-8 byte-order mark): what [`read_features`] reads.
    pub fn detect(path: &Path, head: &[u8]) -> Option<Format> {
        let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        if let Some(Claim::Format(f @ (Format::GeoJson | Format::Csv))) =
            Format::from_extension(path)
        {
            return Some(f);
        }
        match head.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') | Some(0x1e) => Some(Format::GeoJson),
            Some(_) => Some(Format::Csv),
            None => None,
        }
    }
}

/// `mode=`: what happens to the layer's features absent from the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Added and updated by id; others kept.
    #[default]
    Upsert,
    /// The layer becomes the file: features absent from it are deleted.
    Replace,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "upsert" => Some(Mode::Upsert),
            "replace" => Some(Mode::Replace),
            _ => None,
        }
    }
}

/// Parses `map=` (`名称:name,等级:level`): source property to layer property.
pub fn parse_map(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (from, to) = pair
            .split_once(':')
            .map(|(a, b)| (a.trim(), b.trim()))
            .filter(|(a, b)| !a.is_empty() && !b.is_empty())
            .ok_or_else(|| format!("{pair:?} is not SOURCE:TARGET"))?;
        if out.iter().any(|(f, _)| f == from) {
            return Err(format!("source property {from:?} is mapped twice"));
        }
        out.push((from.to_string(), to.to_string()));
    }
    Ok(out)
}

/// Options of one import.
#[derive(Clone, Default)]
pub struct ImportOptions {
    /// Write the valid features even when others are refused.
    pub skip_invalid: bool,
    /// Who is importing, for the audit row (`cli:USER`, `key:ID:NAME`).
    pub actor: String,
    /// CSV columns holding longitude and latitude (default: lon/lng/longitude/x and
    /// lat/latitude/y).
    pub lon_column: Option<String>,
    pub lat_column: Option<String>,
    /// The name recorded for the file (default: the path).
    pub source_name: Option<String>,
    /// The file's CRS, overriding what it says (`crs=`).
    pub crs: Option<ImportCrs>,
    /// The file's text encoding, overriding what it says (`encoding=`).
    pub encoding: Option<TextEncoding>,
    pub mode: Mode,
    /// Source property to layer property (`map=`).
    pub map: Vec<(String, String)>,
    /// Which dataset of an archive, or layer of a multi-layer file (`source_layer=`).
    pub source_layer: Option<String>,
    /// Validate and count as a real import would, then roll back.
    pub dry_run: bool,
    /// What the client says the file is (its `Content-Type`); else the file name's
    /// extension.
    pub claim: Option<Claim>,
    /// Where the import's temporary directory goes (default: the system's).
    pub work_parent: Option<PathBuf>,
    pub settings: ReaderSettings,
    /// Called inside the write transaction, before its commit, to keep the report
    /// with the data (the server's `GET /imports/{id}`).
    pub keep_report: Option<KeepReport>,
    /// Read, unpack and check the file on threads under `SCHED_IDLE` (the server:
    /// requests come first). Whatever holds the store's writer runs at the caller's
    /// priority, so an edit never waits on a starved thread.
    pub parse_at_idle: bool,
    /// Where the first load of an empty layer leaves the layer's index, built from the
    /// features as they are written (the server installs it instead of reading the
    /// layer back from the store). Left empty when the load did not make one (rows an
    /// edit wrote meanwhile, or another path).
    pub index_sink: Option<IndexSink>,
    /// Checks what a feature's properties name (features of other layers, plan
    /// templates, sensor types): each value naming nothing is a problem of the feature.
    pub references: Option<ReferenceCheck>,
    /// Who names a feature of this layer (`mode=replace` deletes none that others
    /// name): a description such as "3 feature(s) of sensors in risk_point_id".
    pub referenced: Option<ReferencedCheck>,
}

/// See [`ImportOptions::referenced`].
pub type ReferencedCheck = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// [`ImportOptions::referenced`] from what the store holds now: every value of every
/// property of `layers` that references `layer`, with its count. `None` when nothing
/// references the layer. Reads the referencing tables whole (the city's 4.52 M
/// sensors: a few seconds), so it is made only for `mode=replace`.
pub fn referenced_check(
    store: &Store,
    layer: &LayerDef,
    layers: &[std::sync::Arc<LayerDef>],
) -> Result<Option<ReferencedCheck>, StoreError> {
    use crate::model::Reference;
    let mut uses: Vec<(String, String, hashbrown::HashMap<String, u64>)> = Vec::new();
    for l in layers {
        for p in &l.properties {
            if p.references.as_ref() == Some(&Reference::Layer(layer.name.clone())) {
                uses.push((
                    l.name.clone(),
                    p.name.clone(),
                    store.value_counts(l, &p.name)?,
                ));
            }
        }
    }
    if uses.is_empty() {
        return Ok(None);
    }
    Ok(Some(std::sync::Arc::new(move |id: &str| {
        uses.iter().find_map(|(l, p, counts)| {
            counts
                .get(id)
                .map(|n| format!("{n} feature(s) of {l} in {p}"))
        })
    })))
}

/// See [`ImportOptions::references`].
pub type ReferenceCheck = std::sync::Arc<dyn Fn(&Feature) -> Vec<FieldError> + Send + Sync>;

/// The check of the references of features of `layer` against what the store holds
/// now (`layers`: the layers a reference may name). `None` when the layer names
/// nothing. Read once, before the import: a city's 136,000 risk points and 48,000
/// pipelines are a few megabytes of ids.
pub fn reference_check(
    store: &Store,
    layer: &LayerDef,
    layers: &[std::sync::Arc<LayerDef>],
) -> Result<Option<ReferenceCheck>, StoreError> {
    use crate::model::{Reference, Value};
    let mut checks = Vec::new();
    for (prop, p) in layer.properties.iter().enumerate() {
        let Some(r) = &p.references else { continue };
        let target = match r {
            Reference::Layer(name) => layers.iter().find(|l| &l.name == name).map(|l| &**l),
            _ => None,
        };
        let ids = store.referable_ids(r, target)?;
        checks.push((prop, p.name.clone(), r.clone(), ids));
    }
    if checks.is_empty() {
        return Ok(None);
    }
    Ok(Some(std::sync::Arc::new(move |f: &Feature| {
        let mut problems = Vec::new();
        for (prop, name, r, ids) in &checks {
            // Text is looked up as it is; an integer (a sensor type) as its decimal
            // text, formatted without allocating (millions of features).
            let mut buf = itoa::Buffer::new();
            let shown: &str = match f.values.get(*prop) {
                Some(Value::Text(s)) => s,
                Some(Value::Int(i)) => buf.format(*i),
                _ => continue,
            };
            if !ids.contains(shown) {
                problems.push(FieldError::new(name, r.missing(shown, ids.is_empty())));
            }
        }
        problems
    })))
}

/// See [`ImportOptions::index_sink`].
pub type IndexSink = std::sync::Arc<parking_lot::Mutex<Option<crate::index::LayerIndex>>>;

/// See [`ImportOptions::keep_report`].
pub type KeepReport = std::sync::Arc<
    dyn Fn(&crate::store::Tx<'_>, &ImportReport) -> Result<(), StoreError> + Send + Sync,
>;

/// What an import did: what the file was found to be, the counts, and each refusal.
/// The same report answers `POST /collections/{layer}/imports`, is kept for
/// `GET /imports/{id}`, and is printed by `riskmap import`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ImportReport {
    /// Set by whoever keeps reports (the server: `GET /imports/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub file: String,
    pub layer: String,
    pub sha256: String,
    pub bytes: u64,
    pub source: SourceInfo,
    pub mode: Mode,
    pub dry_run: bool,
    /// Features read (valid or not).
    pub features: u64,
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Features of the layer absent from the file, deleted (`mode=replace`).
    pub deleted: u64,
    /// Number of refused features; the first [`MAX_REPORTED_REJECTIONS`] are in
    /// `rejections` (all of them went to [`Progress::rejected`]).
    pub rejected: u64,
    pub rejections: Vec<Rejection>,
    /// Whether anything was written (false when refusals stopped the import, and for
    /// a dry run).
    pub committed: bool,
    /// Milliseconds: preparing the file (unpacking, GDAL), checking every feature,
    /// writing (the store's writer held), in all.
    pub timings_ms: Timings,
    /// Ids of the features added, updated or deleted, when at most
    /// [`CHANGE_LIST_LIMIT`]; `None` when more changed.
    #[serde(skip)]
    pub changed_ids: Option<Vec<String>>,
    /// Box of the features added or updated.
    #[serde(skip)]
    pub changed_bbox: Option<Bbox>,
    /// Total geodesic length of the line features read, kilometres.
    pub length_km: f64,
    /// Sequence numbers of the change-feed entries the import wrote (known to the
    /// [`ImportOptions::keep_report`] hook, before the commit).
    #[serde(skip)]
    pub change_seqs: Vec<i64>,
    /// Whether the import built the layer's index and hands it over through
    /// [`ImportOptions::index_sink`] once committed (set before the `keep_report` hook).
    #[serde(skip)]
    pub index_built: bool,
}

/// Where an import's time went.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Timings {
    pub prepare: u64,
    pub check: u64,
    pub write: u64,
    pub total: u64,
}

/// Receives progress: bytes of the file consumed and features read so far, and each
/// refusal as it is found (all of them, however many: the report keeps only the
/// first [`MAX_REPORTED_REJECTIONS`]).
pub trait Progress: Sync {
    fn start(&self, _total_bytes: u64) {}
    /// A pass begins: `checking` (every feature validated, nothing locked) or `writing`.
    fn phase(&self, _name: &'static str) {}
    fn update(&self, _bytes: u64, _features: u64) {}
    fn rejected(&self, _rejection: &Rejection) {}
    fn finish(&self) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;
impl Progress for NoProgress {}

/// One item a format reader hands over: the feature's 1-based number, its line
/// (when known), and the validated feature or the reason it was refused.
pub struct Item {
    pub number: u64,
    pub line: Option<u64>,
    /// The feature, or its id (when readable) and every problem found in it.
    pub result: Result<Feature, (Option<String>, Vec<FieldError>)>,
}

/// Reads features from `reader` as [`import_file`] would, without a store: hands each
/// one to `each`, valid or refused (with its number, line and field). An error stops
/// the read, as it stops an import. `name` is the file name used in messages. For
/// checking files and for the fuzz tests (`tests/fuzz/`); [`import_file`] imports.
pub fn read_features(
    name: &Path,
    format: Format,
    layer: &LayerDef,
    opts: &ImportOptions,
    reader: &mut dyn Read,
    each: &mut dyn FnMut(Result<Feature, Rejection>),
) -> Result<(), IngestError> {
    // One call per feature: a refused one with its first problem (imports report all).
    let mut sink = |item: Item| -> Result<(), IngestError> {
        each(item.result.map_err(|(id, errors)| {
            let e = errors
                .into_iter()
                .next()
                .unwrap_or_else(|| FieldError::new("feature", "refused"));
            Rejection {
                feature: item.number,
                line: item.line,
                id,
                field: e.field,
                reason: e.reason,
            }
        }));
        Ok(())
    };
    match format {
        Format::GeoJson => geojson::read(name, layer, opts, None, reader, &mut sink).map(|_| ()),
        Format::Csv => csv::read(name, layer, opts, None, reader, &mut sink),
        other => Err(IngestError::Format {
            path: name.to_path_buf(),
            message: format!("{} is read through GDAL, from a file", other.name()),
        }),
    }
}

/// The sha256 and size of a file.
fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        sha.update(&buf[..k]);
        n += k as u64;
    }
    Ok((
        sha.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        n,
    ))
}

/// A file's size and modification time.
fn file_stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// Runs `f` on a thread under `SCHED_IDLE` when `opts.parse_at_idle`, else here.
fn at_idle<T: Send>(opts: &ImportOptions, name: &str, f: impl FnOnce() -> T + Send) -> T {
    if opts.parse_at_idle {
        crate::sched::on_idle_thread(name, f)
    } else {
        f()
    }
}

/// A file made ready to read: its format found, an archive unpacked and GDAL run (in
/// the import's own directory, removed when this is dropped), its hash taken.
pub struct PreparedFile {
    pub reader: Box<dyn FeatureReader>,
    pub shown: String,
    pub sha256: String,
    pub bytes: u64,
    started: Instant,
    path: PathBuf,
    /// Size and modification time when hashed: compared after the commit (cheaper than
    /// hashing the file a second time).
    stamp: Option<(u64, std::time::SystemTime)>,
    // Dropped last: the reader's files live in it.
    _work: WorkDir,
}

/// Prepares `path` for [`import_prepared_file`] (see [`PreparedFile`]).
pub fn prepare(path: &Path, opts: &ImportOptions) -> Result<PreparedFile, IngestError> {
    let started = Instant::now();
    let shown = opts
        .source_name
        .clone()
        .unwrap_or_else(|| path.display().to_string());
    let read_err = |source| IngestError::Read {
        path: PathBuf::from(&shown),
        source,
    };
    let work = WorkDir::new(opts.work_parent.as_deref()).map_err(read_err)?;
    let (sha256, bytes, reader) = at_idle(opts, "riskmap-prepare", || {
        let (sha256, bytes) = hash_file(path).map_err(read_err)?;
        let reader = source::open(path, &shown, opts.claim, work.path(), opts, &opts.settings)?;
        Ok::<_, IngestError>((sha256, bytes, reader))
    })?;
    Ok(PreparedFile {
        reader,
        shown,
        sha256,
        bytes,
        started,
        stamp: file_stamp(path),
        path: path.to_path_buf(),
        _work: work,
    })
}

/// Imports `path` into `layer`: see the module comment for the policy. The file is
/// prepared (format found, archive unpacked, GDAL run in its child, encoding and CRS
/// decided), every feature checked with no lock held, and only then, when nothing is
/// refused (or `skip_invalid`), read again and written in one transaction.
pub fn import_file(
    store: &Store,
    layer: &LayerDef,
    path: &Path,
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImportReport, IngestError> {
    let prepared = prepare(path, opts)?;
    import_prepared_file(store, layer, prepared, opts, progress)
}

/// The import of a [`prepare`]d file.
pub fn import_prepared_file(
    store: &Store,
    layer: &LayerDef,
    prepared: PreparedFile,
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImportReport, IngestError> {
    let mut report = ImportReport {
        file: prepared.shown.clone(),
        layer: layer.name.clone(),
        sha256: prepared.sha256.clone(),
        bytes: prepared.bytes,
        source: prepared.reader.info().clone(),
        mode: opts.mode,
        dry_run: opts.dry_run,
        changed_ids: Some(Vec::new()),
        ..Default::default()
    };
    report.timings_ms.prepare = ms(prepared.started);
    let result = import_prepared(
        store,
        layer,
        prepared.reader.as_ref(),
        opts,
        progress,
        &mut report,
    );
    progress.finish();
    result?;
    if report.committed && file_stamp(&prepared.path) != prepared.stamp {
        // Committed from a file that changed meanwhile: the counts still describe what
        // was written (the second pass), but say so.
        tracing::warn!(file = %prepared.shown, "the file changed while it was being imported");
    }
    report.timings_ms.total = ms(prepared.started);
    Ok(report)
}

/// The features pass 1 found new or changed, kept for pass 2 (while they fit in
/// [`SPOOL_BYTES`]), and the number found unchanged.
#[derive(Default)]
struct Spool {
    features: Vec<Feature>,
    same: u64,
    /// About what `features` hold in memory.
    bytes: usize,
}

/// At most this much memory (estimated) keeps pass 1's changed features; beyond it,
/// pass 2 reads the file again.
const SPOOL_BYTES: usize = 256 << 20;

/// Pass 1 of an import, feature by feature: counts, refusals (each problem with its
/// field), duplicate ids, the length of lines.
struct Checker<'a> {
    progress: &'a dyn Progress,
    bytes: &'a AtomicU64,
    /// Each valid id, with the number of the feature that has it.
    seen: hashbrown::HashMap<CompactString, u64>,
    /// Numbers of the features refused (duplicates among them).
    refused: hashbrown::HashSet<u64>,
    references: Option<&'a ReferenceCheck>,
}

impl<'a> Checker<'a> {
    fn new(progress: &'a dyn Progress, bytes: &'a AtomicU64, opts: &'a ImportOptions) -> Self {
        Checker {
            progress,
            bytes,
            references: opts.references.as_ref(),
            seen: hashbrown::HashMap::new(),
            refused: hashbrown::HashSet::new(),
        }
    }

    /// Counts `item` into `report`: the feature when it is valid, `None` when refused.
    fn check(&mut self, report: &mut ImportReport, item: Item) -> Option<Feature> {
        report.features += 1;
        if report.features % 4096 == 0 {
            self.progress
                .update(self.bytes.load(Ordering::Relaxed), report.features);
        }
        let (id, errors) = match item.result {
            Ok(f) => {
                // What the feature names, checked whether or not its id is new.
                let mut e = self.references.map_or_else(Vec::new, |r| r(&f));
                if let Some(&first) = self.seen.get(f.id.as_str()) {
                    e.insert(
                        0,
                        FieldError::new(
                            "id",
                            format!("duplicate id {:?}: feature {first} has it too", f.id),
                        ),
                    );
                }
                if !e.is_empty() {
                    (Some(f.id), e)
                } else {
                    self.seen.insert(CompactString::new(&f.id), item.number);
                    report.length_km += crate::index::geodesic_length_km(&f.geometry);
                    return Some(f);
                }
            }
            Err(refusal) => refusal,
        };
        self.refused.insert(item.number);
        report.rejected += 1;
        // Every problem of the feature, each with its field.
        for e in errors {
            let rejection = Rejection {
                feature: item.number,
                line: item.line,
                id: id.clone(),
                field: e.field,
                reason: e.reason,
            };
            self.progress.rejected(&rejection);
            if report.rejections.len() < MAX_REPORTED_REJECTIONS {
                report.rejections.push(rejection);
            }
        }
        None
    }
}

/// The two passes of [`import_file`] over a prepared reader.
pub fn import_prepared(
    store: &Store,
    layer: &LayerDef,
    reader: &dyn FeatureReader,
    opts: &ImportOptions,
    progress: &dyn Progress,
    report: &mut ImportReport,
) -> Result<(), IngestError> {
    if !opts.dry_run && store.layer_is_empty(layer)? {
        return import_staged(store, layer, reader, opts, progress, report);
    }
    let bytes = AtomicU64::new(0);
    progress.start(reader.size());

    // Pass 1: every feature checked, nothing locked.
    let checking = Instant::now();
    progress.phase("checking");
    let mut checker = Checker::new(progress, &bytes, opts);
    // Each valid feature compared with the layer as it is now (no lock): only those
    // that differ are kept, to be written in pass 2 without reading the file again,
    // unless there are too many to keep.
    let snapshot = store.snapshot(layer)?;
    let snapshot_seq = snapshot.feed_seq;
    // Moved to the reading thread (a connection is not shared between threads).
    let mut lent = Some(snapshot);
    let mut spool = Some(Spool::default());
    let declared = at_idle(opts, "riskmap-check", || {
        let Some(snapshot) = lent.take() else {
            return Ok(None);
        };
        reader.read(layer, opts, &bytes, &mut |item: Item| {
            let Some(f) = checker.check(report, item) else {
                return Ok(());
            };
            let Some(kept) = &mut spool else {
                return Ok(());
            };
            match snapshot.compare(layer, &f)? {
                crate::store::Compared::Same => kept.same += 1,
                _ => {
                    kept.bytes += 96 + 16 * geo::CoordsIter::coords_count(&f.geometry);
                    kept.bytes += f
                        .values
                        .iter()
                        .map(|v| match v {
                            crate::model::Value::Text(t) => 24 + t.len(),
                            _ => 24,
                        })
                        .sum::<usize>();
                    kept.features.push(f);
                    if kept.bytes > SPOOL_BYTES {
                        spool = None;
                    }
                }
            }
            Ok(())
        })
    })?;
    let Checker { seen, refused, .. } = checker;
    if let Some(crs) = declared {
        report.source.crs = crs;
        report.source.crs_source = "file".into();
    }
    progress.update(bytes.load(Ordering::Relaxed), report.features);
    report.timings_ms.check = ms(checking);
    if report.rejected > 0 && !opts.skip_invalid {
        return Ok(()); // nothing written, no lock taken
    }

    // Pass 2: the same features again, written in one transaction.
    let writing = Instant::now();
    progress.phase("writing");
    bytes.store(0, Ordering::Relaxed);
    let features_checked = report.features;
    let result = store.write(|tx| -> Result<(), IngestError> {
        // The import's own row first, so each feature's row can name it; its detail
        // (counts, the file's hash) is filled in at the end. A refused or failed
        // import rolls all of them back.
        let import_seq = tx.audit(&AuditEntry {
            actor: opts.actor.clone(),
            action: "import".into(),
            layer: Some(layer.name.clone()),
            ..Default::default()
        })?;
        // The kept features suffice when no feature the file has but pass 1 found
        // unchanged was written since (else its file version is needed again).
        let spooled = match spool.take() {
            None => None,
            Some(kept) => match tx.layer_changes_since(&layer.name, snapshot_seq)? {
                None => None,
                Some(changed) => {
                    let differ: hashbrown::HashSet<&str> =
                        kept.features.iter().map(|f| f.id.as_str()).collect();
                    let stale = changed
                        .iter()
                        .any(|id| seen.contains_key(id.as_str()) && !differ.contains(id.as_str()));
                    drop(differ);
                    (!stale).then_some(kept)
                }
            },
        };
        let mut read_again = 0u64;
        let note_change = |report: &mut ImportReport, id: &str, bbox: Option<Bbox>| {
            report.changed_bbox = match (report.changed_bbox, bbox) {
                (Some(a), Some(b)) => Some(a.union(b)),
                (a, b) => a.or(b),
            };
            if let Some(ids) = &mut report.changed_ids {
                if ids.len() < CHANGE_LIST_LIMIT {
                    ids.push(id.to_string());
                } else {
                    report.changed_ids = None;
                }
            }
        };
        let write = |f: Feature, report: &mut ImportReport| -> Result<(), IngestError> {
            let kept = crate::index::Derived::kept_for(layer, &f.geometry);
            let outcome = tx.upsert(layer, &f, kept.as_deref())?;
            match &outcome {
                UpsertOutcome::Added => report.added += 1,
                UpsertOutcome::Updated { before } => {
                    report.updated += 1;
                    // Added features are identified by the file's hash in the import
                    // row; an update loses the earlier values, so the changed members
                    // are kept here. A row riskmap could not read (written by another
                    // tool) is replaced whole: the after is the whole feature, the
                    // detail says why.
                    let (was, is, detail) = match before {
                        Ok(b) => {
                            let (was, is) = b.changes(layer, &f);
                            (Some(was), is, serde_json::json!({ "import": import_seq }))
                        }
                        Err(reason) => (
                            None,
                            f.to_geojson(layer),
                            serde_json::json!({ "import": import_seq, "replaced_unreadable_row": reason }),
                        ),
                    };
                    tx.audit(&AuditEntry {
                        actor: opts.actor.clone(),
                        action: "import_update".into(),
                        layer: Some(layer.name.clone()),
                        feature_id: Some(f.id.clone()),
                        before: was,
                        after: Some(is),
                        detail: Some(detail),
                        // Filled in from the key, if the actor is one.
                        role: None,
                    })?;
                }
                UpsertOutcome::Unchanged => report.unchanged += 1,
            }
            if !matches!(outcome, UpsertOutcome::Unchanged) {
                note_change(report, &f.id, Bbox::of_geometry(&f.geometry));
            }
            Ok(())
        };
        match spooled {
            Some(kept) => {
                // Only what differed in pass 1 is written (and compared again, under
                // the writer: exact whatever happened since).
                report.unchanged += kept.same;
                read_again = features_checked;
                for f in kept.features {
                    write(f, report)?;
                }
            }
            None => {
                reader.read(layer, opts, &bytes, &mut |item: Item| {
                    read_again += 1;
                    if read_again % 4096 == 0 {
                        progress.update(bytes.load(Ordering::Relaxed), read_again);
                    }
                    let Ok(f) = item.result else { return Ok(()) };
                    if refused.contains(&item.number) {
                        return Ok(());
                    }
                    write(f, report)
                })?;
            }
        }
        if read_again != features_checked {
            return Err(IngestError::Format {
                path: PathBuf::from(&report.file),
                message: format!(
                    "the file changed while it was being imported ({features_checked} features checked, {read_again} read to write); nothing was imported"
                ),
            });
        }
        if opts.mode == Mode::Replace {
            let gone: Vec<(i64, String)> = tx
                .ids(layer)?
                .into_iter()
                .filter(|(_, id)| !seen.contains_key(id.as_str()))
                .collect();
            // None of them may be named by another layer's features (references hold).
            if let Some(check) = &opts.referenced {
                let named: Vec<String> = gone
                    .iter()
                    .filter_map(|(_, id)| check(id).map(|who| format!("{id:?} ({who})")))
                    .collect();
                if !named.is_empty() {
                    return Err(IngestError::Referenced {
                        message: format!(
                            "mode=replace would delete {} feature(s) of {} that others name: {}{}; delete or move what names them first, or import in mode=upsert; nothing was imported",
                            named.len(),
                            layer.name,
                            named.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
                            if named.len() > 10 { ", ..." } else { "" }
                        ),
                    });
                }
            }
            for (fid, id) in gone {
                let before = tx.get_feature(layer, &id).ok().flatten();
                tx.delete_feature(layer, fid)?;
                report.deleted += 1;
                tx.audit(&AuditEntry {
                    actor: opts.actor.clone(),
                    action: "import_delete".into(),
                    layer: Some(layer.name.clone()),
                    feature_id: Some(id.clone()),
                    before: before.map(|b| b.feature.to_geojson(layer)),
                    after: None,
                    detail: Some(serde_json::json!({ "import": import_seq, "mode": "replace" })),
                    role: None,
                })?;
                note_change(report, &id, None);
            }
        }
        tx.touch_layer(layer, report.changed_bbox)?;
        tx.set_audit_detail(import_seq, &import_detail(report))?;
        record_changes(&tx, layer, &mut *report)?;
        if let Some(keep) = &opts.keep_report {
            keep(&tx, report)?;
        }
        if opts.dry_run {
            return Ok(()); // rolled back: counted exactly as a real run, nothing kept
        }
        tx.commit()?;
        report.committed = true;
        Ok(())
    });
    report.timings_ms.write = ms(writing);
    result
}

/// The `import` audit row's detail: the file, what it was found to be, the counts.
fn import_detail(report: &ImportReport) -> serde_json::Value {
    serde_json::json!({
        "file": report.file, "sha256": report.sha256, "bytes": report.bytes,
        "format": report.source.format, "crs": report.source.crs,
        "encoding": report.source.encoding, "mode": report.mode,
        "features": report.features, "added": report.added, "updated": report.updated,
        "unchanged": report.unchanged, "deleted": report.deleted,
        "rejected": report.rejected, "id": report.id,
    })
}

/// The change feed's entries of an import: its features, or "reload the layer" when
/// more than [`CHANGE_LIST_LIMIT`] changed.
fn record_changes(
    tx: &crate::store::Tx<'_>,
    layer: &LayerDef,
    report: &mut ImportReport,
) -> Result<(), StoreError> {
    let mut seqs = Vec::new();
    match &report.changed_ids {
        Some(ids) => {
            for id in ids {
                seqs.push(tx.record_change(&layer.name, Some(id))?);
            }
        }
        None => {
            seqs.push(tx.record_change(&layer.name, None)?);
        }
    }
    report.change_seqs = seqs;
    Ok(())
}

/// Rows per transaction of a staged load, and bytes of geometry: an edit waits for one
/// chunk at most.
const STAGE_CHUNK_ROWS: usize = 20_000;
const STAGE_CHUNK_BYTES: usize = 16 << 20;

/// A staged table, dropped unless it was swapped in.
struct StageGuard<'a> {
    store: &'a Store,
    name: &'a str,
    swapped: bool,
}

impl Drop for StageGuard<'_> {
    fn drop(&mut self) {
        if self.swapped {
            return;
        }
        if let Err(e) = self.store.write(|tx| {
            tx.drop_stage(self.name)?;
            tx.commit()
        }) {
            // Dropped at the next start instead.
            tracing::warn!(stage = self.name, error = %e, "could not drop a staged table");
        }
    }
}

/// The import of a file into an empty layer (its first load, or a layer created from
/// the file): one read, each feature checked and written as it is read into a staged
/// table beside the layer, in transactions of [`STAGE_CHUNK_ROWS`], then swapped in by
/// one short transaction (see `store::stage`). All or nothing as [`import_prepared`]:
/// a refusal stops the writing and the staged table is dropped; until the swap the
/// layer is as it was. Edits to the store wait for one chunk at most, not for the file.
/// Reading and checking run on one thread (under `SCHED_IDLE` when
/// [`ImportOptions::parse_at_idle`]), writing on the caller's, at the same time.
fn import_staged(
    store: &Store,
    layer: &LayerDef,
    reader: &dyn FeatureReader,
    opts: &ImportOptions,
    progress: &dyn Progress,
    report: &mut ImportReport,
) -> Result<(), IngestError> {
    use geo::CoordsIter;
    let bytes = AtomicU64::new(0);
    progress.start(reader.size());
    progress.phase("importing");
    let started = Instant::now();
    let stage = crate::store::stage_name();
    let mut staged = layer.clone();
    staged.name = stage.clone();
    store.write(|tx| {
        tx.create_stage(layer, &stage)?;
        tx.commit()
    })?;
    let mut guard = StageGuard {
        store,
        name: &stage,
        swapped: false,
    };
    let mut checker = Checker::new(progress, &bytes, opts);
    let mut bbox: Option<Bbox> = None;
    let mut parse_ms = 0u64;
    let mut write_ms = 0u64;
    let (send, recv) = std::sync::mpsc::sync_channel::<Vec<(Feature, Option<Vec<u8>>)>>(2);
    let mut written = 0u64;
    // The smallest and largest fid written.
    let mut span = (i64::MAX, i64::MIN);
    let (declared, built) = std::thread::scope(|s| {
        let (checker, report, bbox, parse_ms, bytes) =
            (&mut checker, &mut *report, &mut bbox, &mut parse_ms, &bytes);
        let parse = std::thread::Builder::new()
            .name("riskmap-import-read".into())
            .spawn_scoped(s, move || {
                if opts.parse_at_idle {
                    crate::sched::lower_thread_priority(crate::sched::BACKGROUND_NICE);
                    crate::sched::idle_thread_policy();
                }
                let t = Instant::now();
                let mut chunk = Vec::new();
                let mut chunk_bytes = 0usize;
                // A refusal: nothing will be written, but every feature is still checked.
                let mut stopped = false;
                let result = reader.read(layer, opts, bytes, &mut |item: Item| {
                    let Some(f) = checker.check(report, item) else {
                        if !opts.skip_invalid {
                            stopped = true;
                            chunk.clear();
                        }
                        return Ok(());
                    };
                    if stopped {
                        return Ok(());
                    }
                    *bbox = match (*bbox, Bbox::of_geometry(&f.geometry)) {
                        (Some(a), Some(b)) => Some(a.union(b)),
                        (a, b) => a.or(b),
                    };
                    let kept = crate::index::Derived::kept_for(layer, &f.geometry);
                    chunk_bytes += 64 + f.geometry.coords_count() * 16;
                    chunk.push((f, kept));
                    if chunk.len() >= STAGE_CHUNK_ROWS || chunk_bytes >= STAGE_CHUNK_BYTES {
                        chunk_bytes = 0;
                        if send.send(std::mem::take(&mut chunk)).is_err() {
                            // The writer failed: its error is the import's.
                            return Err(IngestError::Format {
                                path: PathBuf::from(&report.file),
                                message: "the write stopped".into(),
                            });
                        }
                    }
                    Ok(())
                });
                if result.is_ok() && !stopped && !chunk.is_empty() {
                    let _ = send.send(chunk);
                }
                drop(send);
                *parse_ms = ms(t);
                result
            });
        let parse = match parse {
            Ok(p) => p,
            Err(e) => {
                let e = IngestError::Read {
                    path: PathBuf::from("(no thread to read the file)"),
                    source: e,
                };
                return (Err(e), Ok(None));
            }
        };
        // The writer, on this thread: at the caller's priority, since it holds the
        // store's writer (an edit must never wait on a starved thread). Each chunk,
        // once committed, goes into the layer's new index when one is wanted.
        // Each chunk, once committed, goes to the indexer when the layer's new index
        // is wanted: a thread of its own (at idle priority with the reading), so that
        // writing, reading and indexing share the cores.
        type Written = (Vec<(Feature, Option<Vec<u8>>)>, Vec<i64>);
        let (to_index, indexed) = std::sync::mpsc::sync_channel::<Written>(2);
        let indexer = match &opts.index_sink {
            None => None,
            Some(_) => {
                let spawned = std::thread::Builder::new()
                    .name("riskmap-import-index".into())
                    .spawn_scoped(s, move || {
                        if opts.parse_at_idle {
                            crate::sched::lower_thread_priority(crate::sched::BACKGROUND_NICE);
                            crate::sched::idle_thread_policy();
                        }
                        let def = std::sync::Arc::new(layer.clone());
                        crate::index::LayerIndex::build(def, 0, |push| {
                            for (chunk, fids) in indexed {
                                for ((f, kept), fid) in chunk.iter().zip(fids) {
                                    let values: Vec<crate::model::ValueRef<'_>> =
                                        f.values.iter().map(|v| v.as_ref()).collect();
                                    let r = FeatureRef {
                                        id: &f.id,
                                        geometry: &f.geometry,
                                        values: &values,
                                    };
                                    push(fid, r, kept.as_deref());
                                }
                            }
                            Ok::<_, std::convert::Infallible>(())
                        })
                    });
                // No thread: no index; the layer is read back from the store.
                spawned.ok()
            }
        };
        let mut to_index = indexer.is_some().then_some(to_index);
        // The writer, on this thread: at the caller's priority, since it holds the
        // store's writer (an edit must never wait on a starved thread). `recv` is
        // dropped when the loop ends: a writer that stopped early makes the reader's
        // next send fail.
        let mut write_result: Result<(), StoreError> = Ok(());
        for chunk in recv {
            let t = Instant::now();
            let r = store.write(|tx| {
                let fids = tx.insert_new_features(&staged, &chunk)?;
                tx.commit()?;
                Ok::<_, StoreError>(fids)
            });
            write_ms += ms(t);
            let fids = match r {
                Ok(fids) => fids,
                Err(e) => {
                    write_result = Err(e);
                    break;
                }
            };
            written += chunk.len() as u64;
            if let (Some(&lo), Some(&hi)) = (fids.iter().min(), fids.iter().max()) {
                span = (span.0.min(lo), span.1.max(hi));
            }
            if let Some(tx) = &to_index {
                if tx.send((chunk, fids)).is_err() {
                    to_index = None; // the indexer is gone: read back instead
                }
            }
        }
        drop(to_index);
        let built = match indexer {
            Some(h) => match h.join() {
                Ok(Ok(index)) => Some(index),
                Ok(Err(never)) => match never {},
                Err(p) => std::panic::resume_unwind(p),
            },
            None => None,
        };
        let built = write_result.map(|_| built);
        let declared = parse
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (declared, built)
    });
    let index = built?;
    let declared = declared?;
    let Checker { seen, .. } = checker;
    if let Some(crs) = declared {
        report.source.crs = crs;
        report.source.crs_source = "file".into();
    }
    progress.update(bytes.load(Ordering::Relaxed), report.features);
    report.timings_ms.check = parse_ms;
    if report.rejected > 0 && !opts.skip_invalid {
        report.timings_ms.write = write_ms;
        return Ok(()); // the guard drops what was staged
    }
    debug_assert_eq!(written, seen.len() as u64);

    // The index was built with the fids the batched inserts were taken to have: kept
    // only if the staged table's agree (read before the swap: no lock held).
    let fids_agree = index.is_none()
        || written == 0
        || store.fid_span(&stage)? == (span.0, span.1, written as i64);

    // The swap: one short transaction.
    let swapping = Instant::now();
    let mut index_usable = false;
    let result = store.write(|tx| -> Result<(), IngestError> {
        let import_seq = tx.audit(&AuditEntry {
            actor: opts.actor.clone(),
            action: "import".into(),
            layer: Some(layer.name.clone()),
            ..Default::default()
        })?;
        let outcome = tx.swap_stage(layer, &stage)?;
        index_usable = fids_agree && outcome.replaced.is_empty() && outcome.kept.is_empty();
        report.index_built = index_usable && index.is_some();
        report.added = written - outcome.replaced.len() as u64;
        report.updated = outcome.replaced.len() as u64;
        // Features an edit created while the file was loaded, and the file has too: the
        // file's version replaced them (the import committed last).
        for (id, before) in &outcome.replaced {
            let after = tx.get_feature(layer, id)?.map(|sf| sf.feature);
            let (was, is) = match (before, &after) {
                (Some(b), Some(a)) => {
                    let (was, is) = b.changes(layer, a);
                    (Some(was), Some(is))
                }
                (b, a) => (
                    b.as_ref().map(|b| b.to_geojson(layer)),
                    a.as_ref().map(|a| a.to_geojson(layer)),
                ),
            };
            tx.audit(&AuditEntry {
                actor: opts.actor.clone(),
                action: "import_update".into(),
                layer: Some(layer.name.clone()),
                feature_id: Some(id.clone()),
                before: was,
                after: is,
                detail: Some(serde_json::json!({ "import": import_seq, "during_load": true })),
                role: None,
            })?;
        }
        let changed = written as usize + outcome.kept.len();
        report.changed_ids = (changed <= CHANGE_LIST_LIMIT).then(|| {
            seen.keys()
                .map(|k| k.to_string())
                .chain(outcome.kept.iter().cloned())
                .collect()
        });
        report.changed_bbox = bbox;
        tx.touch_layer(layer, bbox)?;
        tx.set_audit_detail(import_seq, &import_detail(report))?;
        record_changes(&tx, layer, &mut *report)?;
        if let Some(keep) = &opts.keep_report {
            keep(&tx, report)?;
        }
        tx.commit()?;
        report.committed = true;
        Ok(())
    });
    if report.committed {
        guard.swapped = true;
        if let (Some(sink), Some(index)) = (&opts.index_sink, index) {
            if index_usable {
                *sink.lock() = Some(index);
            } else {
                tracing::info!(layer = %layer.name, "the layer is read back from the store: edits wrote to it during the load");
            }
        }
    }
    report.timings_ms.write = write_ms + ms(swapping);
    tracing::debug!(
        layer = %layer.name,
        features = written,
        elapsed_ms = ms(started),
        "staged load swapped in"
    );
    result
}
