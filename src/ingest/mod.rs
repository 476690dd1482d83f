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

mod csv;
mod geojson;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use compact_str::CompactString;
use sha2::{Digest, Sha256};

use crate::model::{Bbox, Feature, FieldError, LayerDef};
use crate::store::{AuditEntry, Store, StoreError, UpsertOutcome};

/// When an import changes more features than this, the change feed says "reload the
/// layer" instead of listing them (followers rebuild with one bulk load).
pub const CHANGE_LIST_LIMIT: usize = 10_000;
/// At most this many refusals are kept in [`ImportReport::rejections`] (memory stays
/// bounded); every one is counted and handed to [`Progress::rejected`] as found.
pub const MAX_REPORTED_REJECTIONS: usize = 1_000;

/// A feature refused, and why.
#[derive(Clone, Debug, PartialEq)]
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

/// The formats `import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A FeatureCollection, a single Feature, or features one per line
    /// (newline-delimited GeoJSON and RFC 8142 sequences).
    GeoJson,
    /// Comma-separated values with lon/lat columns, for point layers.
    Csv,
}

impl Format {
    /// Decides from the file name, then from the first non-blank byte (after a
    /// UTF-8 byte-order mark, which Windows tools write).
    pub fn detect(path: &Path, head: &[u8]) -> Option<Format> {
        let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("geojson" | "json" | "geojsonl" | "geojsons" | "ndjson" | "jsonl") => {
                return Some(Format::GeoJson);
            }
            Some("csv") => return Some(Format::Csv),
            _ => {}
        }
        match head.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') | Some(0x1e) => Some(Format::GeoJson),
            Some(_) => Some(Format::Csv),
            None => None,
        }
    }
}

/// Options of one import.
#[derive(Clone, Debug, Default)]
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
}

/// What an import did.
#[derive(Clone, Debug, Default)]
pub struct ImportReport {
    pub file: String,
    pub layer: String,
    pub sha256: String,
    pub bytes: u64,
    /// Features read (valid or not).
    pub features: u64,
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Number of refused features; the first [`MAX_REPORTED_REJECTIONS`] are in
    /// `rejections` (all of them went to [`Progress::rejected`]).
    pub rejected: u64,
    pub rejections: Vec<Rejection>,
    /// Whether anything was written (false when refusals stopped the import).
    pub committed: bool,
    /// Ids of the features added or updated, when at most [`CHANGE_LIST_LIMIT`];
    /// `None` when more changed.
    pub changed_ids: Option<Vec<String>>,
    /// Box of the features added or updated.
    pub changed_bbox: Option<Bbox>,
    /// Total geodesic length of the line features read, kilometres.
    pub length_km: f64,
}

/// Receives progress: bytes of the file consumed and features read so far, and each
/// refusal as it is found (all of them, however many: the report keeps only the
/// first [`MAX_REPORTED_REJECTIONS`]).
pub trait Progress: Sync {
    fn start(&self, _total_bytes: u64) {}
    fn update(&self, _bytes: u64, _features: u64) {}
    fn rejected(&self, _rejection: &Rejection) {}
    fn finish(&self) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;
impl Progress for NoProgress {}

/// A reader that counts bytes and hashes them on the way through.
struct Tap<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
    sha: Sha256,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// One item a format reader hands over: the feature's 1-based number, its line
/// (when known), and the validated feature or the reason it was refused.
pub(crate) struct Item {
    pub number: u64,
    pub line: Option<u64>,
    pub result: Result<Feature, (Option<String>, FieldError)>,
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
    let mut sink = |item: Item| -> Result<(), IngestError> {
        each(item.result.map_err(|(id, e)| Rejection {
            feature: item.number,
            line: item.line,
            id,
            field: e.field,
            reason: e.reason,
        }));
        Ok(())
    };
    match format {
        Format::GeoJson => geojson::read(name, layer, reader, &mut sink),
        Format::Csv => csv::read(name, layer, opts, reader, &mut sink),
    }
}

/// Imports `path` into `layer`: see the module comment for the policy.
pub fn import_file(
    store: &Store,
    layer: &LayerDef,
    path: &Path,
    opts: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImportReport, IngestError> {
    let read_err = |source| IngestError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let total = file.metadata().map_err(read_err)?.len();
    let mut head = [0u8; 64];
    let n = {
        let mut f = File::open(path).map_err(read_err)?;
        f.read(&mut head).map_err(read_err)?
    };
    let format = Format::detect(path, &head[..n]).ok_or_else(|| IngestError::Format {
        path: path.to_path_buf(),
        message: "the file is empty".into(),
    })?;
    let bytes = Arc::new(AtomicU64::new(0));
    let mut tap = Tap {
        inner: BufReader::with_capacity(1 << 20, file),
        bytes: bytes.clone(),
        sha: Sha256::new(),
    };
    progress.start(total);

    let mut report = ImportReport {
        file: opts
            .source_name
            .clone()
            .unwrap_or_else(|| path.display().to_string()),
        layer: layer.name.clone(),
        changed_ids: Some(Vec::new()),
        ..Default::default()
    };
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
        let mut seen: HashMap<CompactString, u64> = HashMap::new();
        let mut writing = true;
        let mut sink = |item: Item| -> Result<(), IngestError> {
            report.features += 1;
            if report.features % 4096 == 0 {
                progress.update(bytes.load(Ordering::Relaxed), report.features);
            }
            let refusal = match item.result {
                Ok(f) => match seen.insert(CompactString::new(&f.id), item.number) {
                    Some(first) => {
                        // Keep the first occurrence's number for later duplicates too.
                        seen.insert(CompactString::new(&f.id), first);
                        Some((
                            Some(f.id.clone()),
                            FieldError::new(
                                "id",
                                format!("duplicate id {:?}: feature {first} has it too", f.id),
                            ),
                        ))
                    }
                    None => {
                        report.length_km += crate::index::geodesic_length_km(&f.geometry);
                        if writing {
                            let kept = crate::index::Derived::kept_for(layer, &f.geometry);
                            let outcome = tx.upsert(layer, &f, kept.as_deref())?;
                            match &outcome {
                                UpsertOutcome::Added => report.added += 1,
                                UpsertOutcome::Updated { before } => {
                                    report.updated += 1;
                                    // Added features are identified by the file's hash
                                    // in the import row; an update loses the earlier
                                    // values, so the changed members are kept here.
                                    // A row riskmap could not read (written by
                                    // another tool) is replaced whole: the after is
                                    // the whole feature, the detail says why.
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
                                let b = Bbox::of_geometry(&f.geometry);
                                report.changed_bbox = match (report.changed_bbox, b) {
                                    (Some(a), Some(b)) => Some(a.union(b)),
                                    (a, b) => a.or(b),
                                };
                                if let Some(ids) = &mut report.changed_ids {
                                    if ids.len() < CHANGE_LIST_LIMIT {
                                        ids.push(f.id);
                                    } else {
                                        report.changed_ids = None;
                                    }
                                }
                            }
                        }
                        None
                    }
                },
                Err(refusal) => Some(refusal),
            };
            if let Some((id, e)) = refusal {
                report.rejected += 1;
                let rejection = Rejection {
                    feature: item.number,
                    line: item.line,
                    id,
                    field: e.field,
                    reason: e.reason,
                };
                progress.rejected(&rejection);
                if report.rejections.len() < MAX_REPORTED_REJECTIONS {
                    report.rejections.push(rejection);
                }
                if !opts.skip_invalid {
                    writing = false;
                }
            }
            Ok(())
        };
        match format {
            Format::GeoJson => geojson::read(path, layer, &mut tap, &mut sink)?,
            Format::Csv => csv::read(path, layer, opts, &mut tap, &mut sink)?,
        }
        report.bytes = bytes.load(Ordering::Relaxed);
        report.sha256 = tap
            .sha
            .clone()
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        progress.update(report.bytes, report.features);
        if report.rejected > 0 && !opts.skip_invalid {
            return Ok(()); // dropping tx rolls back: nothing of this file is written
        }
        tx.touch_layer(layer, report.changed_bbox)?;
        tx.set_audit_detail(
            import_seq,
            &serde_json::json!({
                "file": report.file, "sha256": report.sha256, "bytes": report.bytes,
                "features": report.features, "added": report.added, "updated": report.updated,
                "unchanged": report.unchanged, "rejected": report.rejected,
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
        tx.commit()?;
        report.committed = true;
        Ok(())
    });
    progress.finish();
    result?;
    Ok(report)
}
