//! Import reports, kept for `GET /imports/{id}` and `GET /imports`, and found again by
//! a retry's `Idempotency-Key`.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError, Tx};

/// One import's report as kept.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportRecord {
    pub id: String,
    pub created: String,
    /// Who imported (`key:ID:NAME`): idempotency keys are scoped to it.
    pub actor: String,
    pub layer: String,
    pub idempotency_key: Option<String>,
    /// The HTTP status the import was answered with.
    pub status: u16,
    /// The report, JSON.
    pub report: String,
}

const COLUMNS: &str = "id, created, actor, layer, idempotency_key, status, report";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImportRecord> {
    Ok(ImportRecord {
        id: r.get(0)?,
        created: r.get(1)?,
        actor: r.get(2)?,
        layer: r.get(3)?,
        idempotency_key: r.get(4)?,
        status: r.get(5)?,
        report: r.get(6)?,
    })
}

impl Tx<'_> {
    /// Keeps a report (in the import's own transaction when it commits).
    pub fn keep_import(&self, r: &ImportRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO riskmap_imports ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    r.id,
                    r.created,
                    r.actor,
                    r.layer,
                    r.idempotency_key,
                    r.status,
                    r.report
                ],
            )
            .map_err(StoreError::sqlite("keeping an import report"))?;
        Ok(())
    }
}

impl Store {
    pub fn import_record(&self, id: &str) -> Result<Option<ImportRecord>, StoreError> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM riskmap_imports WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()
            .map_err(StoreError::sqlite("reading an import report"))
        })
    }

    /// The import `actor` made with this `Idempotency-Key`, if any.
    pub fn import_by_key(
        &self,
        actor: &str,
        key: &str,
    ) -> Result<Option<ImportRecord>, StoreError> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM riskmap_imports WHERE actor = ?1 AND idempotency_key = ?2"),
                [actor, key],
                from_row,
            )
            .optional()
            .map_err(StoreError::sqlite("reading an import report"))
        })
    }

    /// The newest reports first, at most `limit`, skipping `offset`.
    pub fn imports(&self, limit: u32, offset: u64) -> Result<Vec<ImportRecord>, StoreError> {
        self.read(|c| {
            let mut s = c
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM riskmap_imports ORDER BY created DESC, rowid DESC LIMIT ?1 OFFSET ?2"
                ))
                .map_err(StoreError::sqlite("listing imports"))?;
            let rows = s
                .query_map(params![limit, offset as i64], from_row)
                .map_err(StoreError::sqlite("listing imports"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::sqlite("listing imports"))
        })
    }
}
