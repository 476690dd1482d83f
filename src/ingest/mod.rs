//! Files in, features out: one reader per format, and [`import_file`], which feeds a
//! file through the layer's validation into the store in one transaction.
//!
//! Policy: a file is imported whole or not at all. Every feature is validated; each
//! refusal is reported with its feature number, id and field. Unless the caller asks
//! to skip invalid features, one refusal means nothing is written. Syntax errors
//! (malformed JSON) stop the read and write nothing.
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

use crate::model::{Bbox, Feature, FieldError, LayerDef};
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
}

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
    let (sha256, bytes) = hash_file(path).map_err(read_err)?;
    let work = WorkDir::new(opts.work_parent.as_deref()).map_err(read_err)?;
    let reader = source::open(path, &shown, opts.claim, work.path(), opts, &opts.settings)?;
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

/// The two passes of [`import_file`] over a prepared reader.
pub fn import_prepared(
    store: &Store,
    layer: &LayerDef,
    reader: &dyn FeatureReader,
    opts: &ImportOptions,
    progress: &dyn Progress,
    report: &mut ImportReport,
) -> Result<(), IngestError> {
    let bytes = AtomicU64::new(0);
    progress.start(reader.size());

    // Pass 1: every feature checked, nothing locked.
    let checking = Instant::now();
    progress.phase("checking");
    let mut seen: hashbrown::HashMap<CompactString, u64> = hashbrown::HashMap::new();
    // Features refused in pass 1 (duplicates among them), skipped in pass 2.
    let mut refused: hashbrown::HashSet<u64> = hashbrown::HashSet::new();
    let declared = reader.read(layer, opts, &bytes, &mut |item: Item| {
        report.features += 1;
        if report.features % 4096 == 0 {
            progress.update(bytes.load(Ordering::Relaxed), report.features);
        }
        let refusal = match item.result {
            Ok(f) => match seen.get(f.id.as_str()) {
                Some(&first) => Some((
                    Some(f.id.clone()),
                    vec![FieldError::new(
                        "id",
                        format!("duplicate id {:?}: feature {first} has it too", f.id),
                    )],
                )),
                None => {
                    seen.insert(CompactString::new(&f.id), item.number);
                    report.length_km += crate::index::geodesic_length_km(&f.geometry);
                    None
                }
            },
            Err(refusal) => Some(refusal),
        };
        if let Some((id, errors)) = refusal {
            refused.insert(item.number);
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
                progress.rejected(&rejection);
                if report.rejections.len() < MAX_REPORTED_REJECTIONS {
                    report.rejections.push(rejection);
                }
            }
        }
        Ok(())
    })?;
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
        reader.read(layer, opts, &bytes, &mut |item: Item| {
            read_again += 1;
            if read_again % 4096 == 0 {
                progress.update(bytes.load(Ordering::Relaxed), read_again);
            }
            let Ok(f) = item.result else { return Ok(()) };
            if refused.contains(&item.number) {
                return Ok(());
            }
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
        })?;
        if read_again != features_checked {
            return Err(IngestError::Format {
                path: PathBuf::from(&report.file),
                message: format!(
                    "the file changed while it was being imported ({features_checked} features checked, {read_again} read to write); nothing was imported"
                ),
            });
        }
        if opts.mode == Mode::Replace {
            for (fid, id) in tx.ids(layer)? {
                if seen.contains_key(id.as_str()) {
                    continue;
                }
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
        tx.set_audit_detail(
            import_seq,
            &serde_json::json!({
                "file": report.file, "sha256": report.sha256, "bytes": report.bytes,
                "format": report.source.format, "crs": report.source.crs,
                "encoding": report.source.encoding, "mode": report.mode,
                "features": report.features, "added": report.added, "updated": report.updated,
                "unchanged": report.unchanged, "deleted": report.deleted,
                "rejected": report.rejected, "id": report.id,
            }),
        )?;
        match &report.changed_ids {
            Some(ids) => {
                for id in ids {
                    tx.record_change(&layer.name, Some(id))?;
                }
            }
            None => {
                tx.record_change(&layer.name, None)?;
            }
        }
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
