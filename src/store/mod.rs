//! The durable store: one GeoPackage file (SQLite in WAL mode, `synchronous=FULL`).
//!
//! Layer tables are standard GeoPackage feature tables (`fid`, `geom`, the id column,
//! one column per declared property), registered in `gpkg_contents` and
//! `gpkg_geometry_columns`, so `ogrinfo` and QGIS read the file as it is. Our own
//! bookkeeping lives in `riskmap_*` tables of the same file, written in the same
//! transaction as the change they describe:
//!
//! - `riskmap_audit`: who changed what, when, with before/after;
//! - `riskmap_changes`: the change feed the server follows to keep its R-trees in step
//!   with writes made by other processes (`riskmap import`);
//! - `riskmap_keys`: API key hashes and roles; `riskmap_meta`: store settings.
//!
//! A change is acknowledged only after `COMMIT` returns: with WAL and
//! `synchronous=FULL` it has been fsynced by then.
//!
//! Disk full and I/O errors: SQLite's codes are classified once ([`StoreError::DiskFull`],
//! [`StoreError::Io`]); every write goes through [`Store::write`], which records the
//! failure in the write health that `/health` reports, puts the writer connection back
//! in a clean state (rolled back, reopened after an I/O error), and clears the state on
//! the next commit, so writes resume by themselves once space is back. A reserve file
//! beside the store (see [`Store::keep_reserve`]) is space the operator can free with
//! `rm` when the disk is full (README, "When the disk is full").

mod alerts;
mod audit;
pub mod blob;
mod features;
mod imports;
mod keys;
mod schema;
mod stage;

use std::cell::Cell;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::model::{LayerDef, UnreadableRow};

pub use alerts::{
    KeptTransition, READING_BYTES, Versioned, WarningFilter, pack_reading, pack_states,
    unpack_readings, unpack_states,
};
pub use audit::{AuditEntry, Change, ImportTotals};
pub use features::{Compared, Snapshot, StoredFeature, UpsertOutcome};
pub use imports::ImportRecord;
pub use keys::{ApiKey, NewKey};
pub use schema::{LayerPlan, SCHEMA_VERSION};
pub use stage::{STAGE_PREFIX, SwapOutcome, stage_name};

/// How long a write waits for another writer (an import in another process) before
/// giving up with [`StoreError::Busy`].
const WRITE_WAIT: Duration = Duration::from_secs(5);

/// Errors of the store. `Sqlite` carries the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the store's directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "store {path} does not exist (`riskmap serve` creates it on its first start, `riskmap init` on demand)"
    )]
    Missing { path: PathBuf },
    #[error("{path} is not a riskmap GeoPackage: {reason}")]
    NotGeoPackage { path: PathBuf, reason: String },
    #[error("store {path} is damaged: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("layer {layer}: the store table does not match layers/{layer}.toml: {detail}")]
    SchemaMismatch { layer: String, detail: String },
    /// A row that cannot be served (see [`crate::model::unreadable`]).
    #[error("layer {layer}, row fid {fid}{}: {reason}", .id.as_ref().map(|i| format!(" (id {i:?})")).unwrap_or_default())]
    BadRow {
        layer: String,
        fid: i64,
        /// The row's id, when it is readable text.
        id: Option<String>,
        reason: String,
    },
    #[error("the store is busy with another write (an import?); try again shortly")]
    Busy,
    /// The disk holding the store is full (`SQLITE_FULL`, or `ENOSPC`/`EDQUOT` from a
    /// file we write ourselves). `path` is the store's file (filled in by the store
    /// when the error passes through it; empty only for errors classified elsewhere).
    #[error("the disk holding the store {} is full (while {doing})", .path.display())]
    DiskFull { path: PathBuf, doing: String },
    /// An I/O error under the store (`SQLITE_IOERR*`, including a failed fsync;
    /// `SQLITE_READONLY`): `detail` says which.
    #[error("I/O error on the store {} while {doing}: {detail}", .path.display())]
    Io {
        path: PathBuf,
        doing: String,
        detail: String,
    },
    /// A row of the store's own tables (plans, warnings, readings) that this build
    /// cannot read.
    #[error("{reason}")]
    Invalid { reason: String },
    #[error("store error while {doing}: {source}")]
    Sqlite {
        doing: String,
        source: rusqlite::Error,
    },
}

/// Errors that may carry a [`StoreError`]: what [`Store::write`] needs to see (and
/// complete with the store's path) a disk failure inside a caller's own error type.
pub trait HasStoreError {
    fn store_error_mut(&mut self) -> Option<&mut StoreError>;
}

impl HasStoreError for StoreError {
    fn store_error_mut(&mut self) -> Option<&mut StoreError> {
        Some(self)
    }
}

impl StoreError {
    /// The row a [`StoreError::BadRow`] is about; other errors are given back.
    pub fn into_unreadable(self) -> Result<UnreadableRow, StoreError> {
        match self {
            StoreError::BadRow {
                fid, id, reason, ..
            } => Ok(UnreadableRow { fid, id, reason }),
            e => Err(e),
        }
    }

    fn sqlite(doing: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
        let doing = doing.into();
        move |source| classify(doing, source)
    }

    /// An error of a file the store writes itself (the reserve): `ENOSPC` and `EDQUOT`
    /// are a full disk, anything else an I/O error.
    pub fn from_io(path: &Path, doing: impl Into<String>, e: &std::io::Error) -> StoreError {
        // Raw errno values (Linux): ENOSPC 28, EDQUOT 122. Matched by number because
        // `ErrorKind::QuotaExceeded` is newer than our rust-version.
        if matches!(e.raw_os_error(), Some(28 | 122)) || e.kind() == std::io::ErrorKind::StorageFull
        {
            StoreError::DiskFull {
                path: path.to_path_buf(),
                doing: doing.into(),
            }
        } else {
            StoreError::Io {
                path: path.to_path_buf(),
                doing: doing.into(),
                detail: e.to_string(),
            }
        }
    }

    /// A full disk or an I/O error: a fault of the machine, not of the request.
    pub fn is_disk_fault(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. } | StoreError::Io { .. })
    }

    /// Names the store file in a disk error classified without it.
    fn locate(&mut self, store: &Path) {
        if let StoreError::DiskFull { path, .. } | StoreError::Io { path, .. } = self {
            if path.as_os_str().is_empty() {
                *path = store.to_path_buf();
            }
        }
    }
}

/// SQLite's result code → our kind. `SQLITE_FULL` is what SQLite returns when a write
/// gets `ENOSPC` (or hits `max_page_count`); `SQLITE_IOERR_*` covers failed reads,
/// writes, truncations and fsyncs (the extended code says which, kept in `detail`);
/// `SQLITE_READONLY` comes from a file system remounted read-only after errors, or a
/// file made read-only under us: for the client all of these are "the store cannot
/// take writes now", not a bug, so they get their own kinds.
fn classify(doing: String, source: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    use rusqlite::ffi;
    if is_busy(&source) {
        return StoreError::Busy;
    }
    let (code, extended) = match &source {
        rusqlite::Error::SqliteFailure(e, _) => (e.code, e.extended_code),
        _ => return StoreError::Sqlite { doing, source },
    };
    let detail = match code {
        C::DiskFull => {
            return StoreError::DiskFull {
                path: PathBuf::new(),
                doing,
            };
        }
        C::SystemIoFailure => match extended {
            ffi::SQLITE_IOERR_FSYNC | ffi::SQLITE_IOERR_DIR_FSYNC => {
                "fsync failed: the disk did not confirm the write (the server reopens its \
                 connection; what reached the disk is uncertain)"
            }
            ffi::SQLITE_IOERR_WRITE => "a write to the file failed",
            ffi::SQLITE_IOERR_READ | ffi::SQLITE_IOERR_SHORT_READ => "a read of the file failed",
            ffi::SQLITE_IOERR_TRUNCATE => "truncating the file failed",
            ffi::SQLITE_IOERR_SHMOPEN
            | ffi::SQLITE_IOERR_SHMSIZE
            | ffi::SQLITE_IOERR_SHMMAP
            | ffi::SQLITE_IOERR_SHMLOCK => "the WAL index (-shm file) cannot be used",
            _ => "disk I/O error",
        }
        .to_string(),
        C::ReadOnly => "the store cannot be written (read-only file or file system; a file \
                       system is remounted read-only after disk errors)"
            .to_string(),
        _ => return StoreError::Sqlite { doing, source },
    };
    StoreError::Io {
        path: PathBuf::new(),
        doing,
        detail: format!("{detail} ({source}, extended code {extended})"),
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// What [`Store::writer_settings`] reports: `journal_mode` (`wal`) and
/// `synchronous` (`full`), lower case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterSettings {
    pub journal_mode: String,
    pub synchronous: String,
}

/// Whether [`Store::open`] may create the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    CreateIfMissing,
    MustExist,
}

/// The last write that failed for a disk reason, until a write commits again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteFailure {
    /// `disk_full` or `io`.
    pub kind: &'static str,
    /// The error, as the client was told it.
    pub reason: String,
    /// When the first failure of this episode happened (RFC 3339 UTC), and the last.
    pub since: String,
    pub last: String,
    /// Writes failed since `since`.
    pub failures: u64,
}

/// The disk under the store, for `/health`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskStatus {
    /// Bytes an unprivileged writer may still use on the store's file system
    /// (`statvfs` `f_bavail × f_frsize`); `None` when it cannot be read.
    pub free_bytes: Option<u64>,
    /// The reserve file, its wanted size in bytes (0: no reserve kept) and whether
    /// it is there at that size.
    pub reserve_path: PathBuf,
    pub reserve_bytes: u64,
    pub reserve_present: bool,
}

/// The GeoPackage store. One writer connection (SQLite allows one writer at a time;
/// the mutex queues ours), one reader connection for small reads; bulk reads open
/// their own connections so layers load in parallel.
pub struct Store {
    path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    created: bool,
    /// `Some` from a write that failed for a disk reason until the next commit.
    health: Mutex<Option<WriteFailure>>,
    /// Wanted size of the reserve file in bytes; 0 keeps none.
    reserve_bytes: AtomicU64,
    /// Held while the reserve is being written (one writer of it at a time).
    reserve_lock: Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the GeoPackage at `path` and brings its layer tables in line
    /// with `layers`: missing tables and columns are added; a table whose geometry
    /// type or column types disagree with its layer file is an error.
    pub fn open(
        path: &Path,
        mode: OpenMode,
        layers: &[std::sync::Arc<crate::model::LayerDef>],
    ) -> Result<Store, StoreError> {
        let exists = path.exists();
        if !exists && mode == OpenMode::MustExist {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        if !exists {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
        }
        if !exists {
            // The GeoPackage header fields go into the file itself, before WAL mode: a
            // reader of the bare .gpkg (GDAL checks application_id) sees a GeoPackage.
            let c = Connection::open(path).map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
            c.execute_batch(&format!(
                "PRAGMA application_id = {}; PRAGMA user_version = {};",
                schema::GPKG_APPLICATION_ID,
                schema::GPKG_USER_VERSION
            ))
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let mut writer = open_connection(path, true)?;
        if exists {
            schema::check_is_ours(&writer, path)?;
        }
        // Opening writes only what is missing, so a server can start while another
        // process holds the write lock for a long import.
        if !schema::core_ready(&writer)? {
            schema::create_core(&mut writer, path)?;
        }
        let reader = open_connection(path, false)?;
        let store = Store {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            created: !exists,
            health: Mutex::new(None),
            reserve_bytes: AtomicU64::new(0),
            reserve_lock: Mutex::new(()),
        };
        let mut stale = false;
        {
            let conn = store.writer.lock();
            for layer in layers {
                stale |= schema::plan_layer(&conn, layer)? != LayerPlan::UpToDate
                    || schema::needs_retitle(&conn, layer)?;
            }
        }
        if stale {
            store.write(|tx| {
                for layer in layers {
                    schema::ensure_layer(&tx, layer)?;
                }
                tx.commit()
            })?;
        }
        Ok(store)
    }

    /// Inspects an existing store without changing it: for each layer, what opening it
    /// would do and how many features its table holds (0 when it has none yet).
    pub fn inspect(
        path: &Path,
        layers: &[std::sync::Arc<crate::model::LayerDef>],
    ) -> Result<Vec<(LayerPlan, u64)>, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        let conn = open_connection(path, false)?;
        schema::check_is_ours(&conn, path)?;
        layers
            .iter()
            .map(|l| {
                let plan = schema::plan_layer(&conn, l)?;
                let count = if plan == LayerPlan::Create {
                    0
                } else {
                    conn.query_row(
                        &format!("SELECT count(*) FROM {}", schema::q(&l.name)),
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                    .map_err(StoreError::sqlite("counting"))? as u64
                };
                Ok((plan, count))
            })
            .collect()
    }

    /// `PRAGMA integrity_check` on a store path, without opening it for writing.
    pub fn integrity_check_path(path: &Path) -> Result<(), StoreError> {
        integrity(&open_connection(path, false)?, path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when this `open` created the file.
    pub fn was_created(&self) -> bool {
        self.created
    }

    /// Runs `f` in an immediate (write-locked) transaction. Nothing is kept unless `f`
    /// calls [`Tx::commit`]; an error or an early return rolls everything back.
    ///
    /// A disk failure (full, I/O) in `f` is recorded in the write health and leaves
    /// the writer connection clean for the next write; a commit clears the health.
    pub fn write<T, E: From<StoreError> + HasStoreError>(
        &self,
        f: impl FnOnce(Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let committed = Cell::new(false);
        let mut conn = self.writer.lock();
        let mut result = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => f(Tx {
                tx,
                committed: &committed,
                sql: Default::default(),
            }),
            Err(e) => Err(E::from(StoreError::sqlite("starting a write")(e))),
        };
        if committed.get() {
            drop(conn);
            self.write_succeeded();
        } else if let Err(e) = &mut result {
            if let Some(se) = e.store_error_mut() {
                se.locate(&self.path);
                if se.is_disk_fault() {
                    self.write_failed(&mut conn, se);
                }
            }
        }
        result
    }

    /// After a write failed for a disk reason: record it, and make sure nothing latches.
    fn write_failed(&self, conn: &mut Connection, e: &StoreError) {
        let now = now_timestamp();
        let kind = if matches!(e, StoreError::DiskFull { .. }) {
            "disk_full"
        } else {
            "io"
        };
        metrics::counter!("riskmap_store_write_failures_total", "kind" => kind).increment(1);
        {
            let mut h = self.health.lock();
            match h.as_mut() {
                Some(f) => {
                    f.kind = kind;
                    f.reason = e.to_string();
                    f.last = now;
                    f.failures += 1;
                }
                None => {
                    tracing::error!(error = %e, "store writes are failing; GET /health reports it until a write succeeds");
                    *h = Some(WriteFailure {
                        kind,
                        reason: e.to_string(),
                        since: now.clone(),
                        last: now,
                        failures: 1,
                    });
                }
            }
        }
        // The transaction was rolled back when `Tx` was dropped, unless SQLite had
        // already ended it (it may, after SQLITE_FULL or SQLITE_IOERR) or the rollback
        // itself failed: a connection left inside a transaction would fail every later
        // write, so make sure, and reopen the connection if it cannot be reset.
        let mut reopen = !conn.is_autocommit() && conn.execute_batch("ROLLBACK").is_err();
        // After an I/O error (a failed fsync above all) the state of the pages this
        // connection caches is unknown ("fsyncgate": the kernel may have dropped the
        // dirty pages and marked them clean); a fresh connection reads the file again.
        reopen |= kind == "io";
        if reopen {
            match open_connection_with(&self.path, true, false) {
                Ok(fresh) => {
                    *conn = fresh;
                    tracing::warn!("reopened the store's writer connection after a disk error");
                }
                // Kept the old one: the next write tries again (and reopens again).
                Err(e) => {
                    tracing::error!(error = %e, "cannot reopen the store's writer connection")
                }
            }
        }
        if kind == "disk_full" {
            // A full checkpoint folds the WAL into the file and truncates it, which
            // frees the WAL's space when it holds many versions of the same pages (it
            // is never unsafe: a checkpoint that cannot finish leaves the WAL in use).
            // Without waiting for readers (busy timeout 0): the write path must not
            // stall on them.
            let _ = conn.busy_timeout(Duration::ZERO);
            let r = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            });
            tracing::debug!(result = ?r, "checkpoint after a full disk");
            let _ = conn.busy_timeout(WRITE_WAIT);
        }
    }

    /// After a commit: writes work, whatever failed before; and the reserve is put
    /// back once there is room for it (outside the writer's lock, but a caller's own
    /// lock may wait for it: writing 64 MiB once per full-disk episode is the cost).
    fn write_succeeded(&self) {
        if let Some(f) = self.health.lock().take() {
            tracing::info!(failures = f.failures, since = %f.since, "store writes work again");
        }
        if self.reserve_bytes.load(Ordering::Relaxed) > 0 && !self.reserve_present() {
            if let Err(e) = self.ensure_reserve() {
                tracing::debug!(error = %e, "reserve not recreated");
            }
        }
    }

    /// The failure of the last write, if no write has committed since.
    pub fn write_health(&self) -> Option<WriteFailure> {
        self.health.lock().clone()
    }

    /// The reserve file beside the store: `riskmap.gpkg.reserve`.
    pub fn reserve_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".reserve");
        PathBuf::from(name)
    }

    fn reserve_present(&self) -> bool {
        let want = self.reserve_bytes.load(Ordering::Relaxed);
        std::fs::metadata(self.reserve_path()).is_ok_and(|m| m.len() >= want)
    }

    /// Keeps a reserve file of `bytes` beside the store (0: none), written now if the
    /// disk has room for it and later, after a commit, once it has. The reserve is
    /// space an operator frees with `rm` when the disk is full, so that the store
    /// can take writes (deletes) again at once: a delete appends to the WAL before
    /// anything is freed, so it needs free space too. The server never spends the
    /// reserve itself: a write storm would use it up before anyone looked.
    pub fn keep_reserve(&self, bytes: u64) -> Result<(), StoreError> {
        self.reserve_bytes.store(bytes, Ordering::Relaxed);
        if bytes == 0 {
            return Ok(());
        }
        match self.ensure_reserve()? {
            true => Ok(()),
            false => {
                tracing::warn!(
                    reserve = %self.reserve_path().display(),
                    bytes,
                    free = ?free_bytes(&self.path),
                    "no room for the disk reserve: it is written once twice its size is free"
                );
                Ok(())
            }
        }
    }

    /// Writes the reserve if it is missing and at least twice its size is free (so
    /// that putting it back never takes the last of the space an operator just
    /// freed). Returns whether it is there.
    fn ensure_reserve(&self) -> Result<bool, StoreError> {
        let want = self.reserve_bytes.load(Ordering::Relaxed);
        let Some(_guard) = self.reserve_lock.try_lock() else {
            return Ok(false); // another thread is writing it
        };
        if want == 0 || self.reserve_present() {
            return Ok(true);
        }
        if free_bytes(&self.path).is_none_or(|free| free < want.saturating_mul(2)) {
            return Ok(false);
        }
        let path = self.reserve_path();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        // Real zeros, not `set_len`: a sparse file would reserve nothing.
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            let chunk = vec![0u8; 1 << 20];
            let mut left = want;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        match write() {
            Ok(()) => {
                tracing::info!(reserve = %path.display(), bytes = want, "disk reserve in place");
                Ok(true)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(StoreError::from_io(&path, "writing the disk reserve", &e))
            }
        }
    }

    /// The disk under the store: free space and the reserve.
    pub fn disk_status(&self) -> DiskStatus {
        DiskStatus {
            free_bytes: free_bytes(&self.path),
            reserve_path: self.reserve_path(),
            reserve_bytes: self.reserve_bytes.load(Ordering::Relaxed),
            reserve_present: self.reserve_present(),
        }
    }

    /// Runs `f` on the shared reader connection (short reads only).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.reader.lock();
        f(&conn).map_err(|mut e| {
            e.locate(&self.path);
            e
        })
    }

    /// A fresh read-only connection, for long reads (loading a layer) that must not
    /// hold the shared reader.
    pub fn open_reader(&self) -> Result<Connection, StoreError> {
        open_connection(&self.path, false)
    }

    /// `PRAGMA integrity_check`: `Ok(())` or the problems SQLite lists.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        integrity(&self.open_reader()?, &self.path)
    }

    /// The durability settings of the connection every write goes through, as SQLite
    /// reports them now. A kill test cannot see a weakened setting (the OS page cache
    /// survives SIGKILL), so tests check these directly.
    pub fn writer_settings(&self) -> Result<WriterSettings, StoreError> {
        let conn = self.writer.lock();
        let journal_mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(StoreError::sqlite("reading journal_mode"))?;
        let synchronous: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .map_err(StoreError::sqlite("reading synchronous"))?;
        Ok(WriterSettings {
            journal_mode: journal_mode.to_ascii_lowercase(),
            synchronous: match synchronous {
                0 => "off",
                1 => "normal",
                2 => "full",
                3 => "extra",
                _ => "unknown",
            }
            .to_string(),
        })
    }

    /// Copies the WAL into the main file and truncates it (after big imports).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let conn = self.writer.lock();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| {
                let mut e = StoreError::sqlite("checkpointing the WAL")(e);
                e.locate(&self.path);
                e
            })
    }
}

/// Free bytes for unprivileged writers on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

fn integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .map_err(StoreError::sqlite("checking integrity"))?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(StoreError::sqlite("checking integrity"))?;
    if lines == ["ok"] {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: lines.join("; "),
        })
    }
}

fn open_connection(path: &Path, write: bool) -> Result<Connection, StoreError> {
    open_connection_with(path, write, write)
}

/// `create`: whether a missing file is created. Never when a connection is reopened
/// after an error: a store moved away under a running server must not come back as
/// a new empty file at its path.
fn open_connection_with(path: &Path, write: bool, create: bool) -> Result<Connection, StoreError> {
    let flags = if write && create {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(WRITE_WAIT).map_err(open_err)?;
    if write {
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotGeoPackage {
                path: path.to_path_buf(),
                reason: format!("cannot use WAL mode (got {mode})"),
            });
        }
    }
    // FULL: a commit returns only after the WAL is fsynced, so an acknowledged write
    // survives power loss. Set on every connection: it is per connection.
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
        .map_err(open_err)?;
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

impl Drop for Store {
    /// Folds the WAL into the file, so a closed store is one self-contained .gpkg
    /// (what a user copies or opens in QGIS). Best effort: another process may hold it.
    fn drop(&mut self) {
        let conn = self.writer.lock();
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "checkpoint on close skipped");
        }
    }
}

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
pub struct Tx<'c> {
    tx: rusqlite::Transaction<'c>,
    /// Set when the commit returned: [`Store::write`] then clears the write health.
    committed: &'c Cell<bool>,
    /// SQL texts made once per transaction (an import writes millions of rows with the
    /// same few statements: formatting them per row was measurable).
    sql: std::cell::RefCell<hashbrown::HashMap<(&'static str, String), std::rc::Rc<str>>>,
}

impl Tx<'_> {
    /// The SQL text `kind` for `layer`, made by `make` the first time in this
    /// transaction.
    pub(crate) fn sql(
        &self,
        kind: &'static str,
        layer: &str,
        make: impl FnOnce() -> String,
    ) -> std::rc::Rc<str> {
        let mut cache = self.sql.borrow_mut();
        if let Some(s) = cache.get(&(kind, layer.to_string())) {
            return s.clone();
        }
        let s: std::rc::Rc<str> = make().into();
        cache.insert((kind, layer.to_string()), s.clone());
        s
    }

    /// Commits durably (see the module comment).
    pub fn commit(self) -> Result<(), StoreError> {
        let committed = self.committed;
        self.tx.commit().map_err(StoreError::sqlite("committing"))?;
        committed.set(true);
        Ok(())
    }

    /// Creates the table of a layer new to the store (a layer created from an upload).
    pub fn create_layer(&self, layer: &LayerDef) -> Result<(), StoreError> {
        schema::ensure_layer(self, layer)
    }

    /// Drops a layer's table and what the store keeps about it.
    pub fn drop_layer(&self, name: &str) -> Result<(), StoreError> {
        schema::drop_layer(self, name)
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.tx
    }
}

/// The current time as GeoPackage and our audit rows write it: RFC 3339, UTC, ms.
pub fn now_timestamp() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests panic on failure by design
mod tests {
    use super::*;

    /// A write of `bytes` into `riskmap_meta` through [`Store::write`].
    fn put(store: &Store, key: &str, bytes: usize) -> Result<(), StoreError> {
        store.write(|tx| {
            tx.conn()
                .execute(
                    "INSERT OR REPLACE INTO riskmap_meta VALUES (?1, ?2)",
                    rusqlite::params![key, "x".repeat(bytes)],
                )
                .map_err(StoreError::sqlite("writing a test row"))?;
            tx.commit()
        })
    }

    /// SQLITE_FULL for real (a page budget stands in for the disk): classified as
    /// `DiskFull` naming the store, recorded in the write health, the writer left
    /// outside any transaction, nothing written; once there is room again the next
    /// write commits and clears the health without any reset.
    #[test]
    fn sqlite_full_is_disk_full_and_does_not_latch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("riskmap.gpkg");
        let store = Store::open(&path, OpenMode::CreateIfMissing, &[]).unwrap();
        put(&store, "before", 10).unwrap();
        assert_eq!(store.write_health(), None);
        let pages: i64 = {
            let c = store.writer.lock();
            let n = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
            c.query_row(&format!("PRAGMA max_page_count = {n}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap();
            n
        };
        // 64 KiB cannot fit in a file that may not grow (4 KiB pages).
        let e = put(&store, "big", 64 << 10).unwrap_err();
        match &e {
            StoreError::DiskFull { path: p, doing } => {
                assert_eq!(p, &path);
                assert_eq!(doing, "writing a test row");
            }
            other => panic!("expected DiskFull, got {other:?}"),
        }
        assert!(e.to_string().contains("riskmap.gpkg"), "{e}");
        let h = store.write_health().expect("the failure is recorded");
        assert_eq!((h.kind, h.failures), ("disk_full", 1));
        assert_eq!(h.reason, e.to_string());
        assert!(
            store.writer.lock().is_autocommit(),
            "no transaction left open"
        );
        // A second failure counts in the same episode.
        put(&store, "big", 64 << 10).unwrap_err();
        let h2 = store.write_health().unwrap();
        assert_eq!((h2.since.as_str(), h2.failures), (h.since.as_str(), 2));
        let n: i64 = store
            .read(|c| {
                c.query_row(
                    "SELECT count(*) FROM riskmap_meta WHERE key = 'big'",
                    [],
                    |r| r.get(0),
                )
                .map_err(StoreError::sqlite("counting"))
            })
            .unwrap();
        assert_eq!(n, 0, "a failed write leaves nothing");

        // Space is back: writes resume by themselves.
        store
            .writer
            .lock()
            .query_row(
                &format!("PRAGMA max_page_count = {}", pages + 10_000),
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap();
        put(&store, "big", 64 << 10).unwrap();
        assert_eq!(store.write_health(), None, "a commit clears the failure");
        store.integrity_check().unwrap();
    }

    /// The extended codes SQLite gives for failed fsyncs, writes and read-only files
    /// are I/O errors naming what failed; busy stays busy; others stay `Sqlite`.
    #[test]
    fn io_codes_are_classified() {
        let err = |code, extended| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error {
                    code,
                    extended_code: extended,
                },
                None,
            )
        };
        use rusqlite::ErrorCode as C;
        use rusqlite::ffi;
        let fsync = classify(
            "committing".into(),
            err(C::SystemIoFailure, ffi::SQLITE_IOERR_FSYNC),
        );
        assert!(
            matches!(&fsync, StoreError::Io { detail, .. } if detail.starts_with("fsync failed")),
            "{fsync:?}"
        );
        let ro = classify("x".into(), err(C::ReadOnly, ffi::SQLITE_READONLY_DBMOVED));
        assert!(
            matches!(&ro, StoreError::Io { detail, .. } if detail.contains("read-only")),
            "{ro:?}"
        );
        let full = classify("x".into(), err(C::DiskFull, ffi::SQLITE_FULL));
        assert!(matches!(full, StoreError::DiskFull { .. }), "{full:?}");
        let busy = classify("x".into(), err(C::DatabaseBusy, ffi::SQLITE_BUSY));
        assert!(matches!(busy, StoreError::Busy), "{busy:?}");
        let other = classify(
            "x".into(),
            err(C::ConstraintViolation, ffi::SQLITE_CONSTRAINT_UNIQUE),
        );
        assert!(matches!(other, StoreError::Sqlite { .. }), "{other:?}");
        assert!(!other.is_disk_fault());

        let p = Path::new("/data/riskmap.gpkg.reserve");
        let enospc = StoreError::from_io(p, "w", &std::io::Error::from_raw_os_error(28));
        assert!(matches!(enospc, StoreError::DiskFull { .. }), "{enospc:?}");
        let eio = StoreError::from_io(p, "w", &std::io::Error::from_raw_os_error(5));
        assert!(matches!(eio, StoreError::Io { .. }), "{eio:?}");
    }

    /// The writer reopened after an I/O error does not create a store: a store moved
    /// away under a running server must not come back as a new empty file.
    #[test]
    fn reopening_the_writer_never_creates_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("riskmap.gpkg");
        assert!(open_connection_with(&path, true, false).is_err());
        assert!(!path.exists());
        let _ = Store::open(&path, OpenMode::CreateIfMissing, &[]).unwrap();
        assert!(open_connection_with(&path, true, false).is_ok());
    }

    /// The reserve is real bytes of the asked size beside the store, written back
    /// after a commit once it is gone and there is room.
    #[test]
    fn reserve_is_written_and_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("riskmap.gpkg"),
            OpenMode::CreateIfMissing,
            &[],
        )
        .unwrap();
        store.keep_reserve(1 << 20).unwrap();
        let r = dir.path().join("riskmap.gpkg.reserve");
        assert_eq!(std::fs::metadata(&r).unwrap().len(), 1 << 20);
        let d = store.disk_status();
        assert!(d.reserve_present && d.reserve_bytes == 1 << 20 && d.free_bytes.is_some());
        std::fs::remove_file(&r).unwrap();
        assert!(!store.disk_status().reserve_present);
        put(&store, "k", 1).unwrap();
        assert_eq!(std::fs::metadata(&r).unwrap().len(), 1 << 20);
    }
}
