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

mod audit;
pub mod blob;
mod features;
mod keys;
mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::model::UnreadableRow;

pub use audit::{AuditEntry, Change, ImportTotals};
pub use features::{StoredFeature, UpsertOutcome};
pub use keys::{ApiKey, NewKey};
pub use schema::LayerPlan;

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
    #[error("store {path} does not exist (run `riskmap serve` or `riskmap import` to create it)")]
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
    #[error("store error while {doing}: {source}")]
    Sqlite {
        doing: String,
        source: rusqlite::Error,
    },
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
        move |source| {
            if is_busy(&source) {
                StoreError::Busy
            } else {
                StoreError::Sqlite { doing, source }
            }
        }
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

/// The GeoPackage store. One writer connection (SQLite allows one writer at a time;
/// the mutex queues ours), one reader connection for small reads; bulk reads open
/// their own connections so layers load in parallel.
pub struct Store {
    path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    created: bool,
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
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.writer.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sqlite("starting a write"))?;
        f(Tx { tx })
    }

    /// Runs `f` on the shared reader connection (short reads only).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.reader.lock();
        f(&conn)
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
            .map_err(StoreError::sqlite("checkpointing the WAL"))
    }
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
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
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
}

impl Tx<'_> {
    /// Commits durably (see the module comment).
    pub fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().map_err(StoreError::sqlite("committing"))
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
