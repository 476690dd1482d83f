//! The audit trail and the change feed, both written inside the transaction of the
//! change they describe: if either write fails, the change fails.

use rusqlite::params;

use super::{Store, StoreError, Tx, now_timestamp};

/// One audit row: who, what, before and after.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditEntry {
    /// `key:ID:NAME` for an API key, `cli:USER` for the command line.
    pub actor: String,
    /// The role of the API key named by `actor` (`planner`, `admin`...), in its own
    /// column so the trail can be queried by role; `None` for the command line and the
    /// demo, which act without a key. [`Tx::audit`] fills it in from `riskmap_keys` in
    /// the same transaction when left `None`, so it is the key's role as stored when
    /// the change was made, whatever the caller passed as the actor's name.
    pub role: Option<String>,
    /// `create`, `replace`, `patch`, `delete`, `import`, `import_update` (one per
    /// feature an import changed, with before/after), `demo`, `key_add`, `key_revoke`.
    pub action: String,
    pub layer: Option<String>,
    pub feature_id: Option<String>,
    /// GeoJSON of the feature before and after an edit.
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    /// Anything else worth keeping (an import's file, hash and counts).
    pub detail: Option<serde_json::Value>,
}

/// What the imports into one layer did, summed over the audit trail.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportTotals {
    pub layer: String,
    pub imports: u64,
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// One entry of the change feed: a feature of a layer changed, or (no id) the whole
/// layer must be reloaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub seq: i64,
    pub layer: String,
    pub feature_id: Option<String>,
}

impl Tx<'_> {
    pub fn audit(&self, e: &AuditEntry) -> Result<i64, StoreError> {
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
        let role = match (&e.role, super::keys::key_id_of_actor(&e.actor)) {
            (Some(r), _) => Some(r.clone()),
            (None, Some(id)) => self.key_role(id)?,
            (None, None) => None,
        };
        self.conn()
            .prepare_cached(
                "INSERT INTO riskmap_audit (at, actor, role, action, layer, feature_id, before, after, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    now_timestamp(),
                    e.actor,
                    role,
                    e.action,
                    e.layer,
                    e.feature_id,
                    json(&e.before),
                    json(&e.after),
                    json(&e.detail)
                ])
            })
            .map_err(StoreError::sqlite("writing the audit row"))?;
        Ok(self.conn().last_insert_rowid())
    }

    /// The role of key `id` as `riskmap_keys` holds it (`None` for no such key).
    fn key_role(&self, id: i64) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn()
            .prepare_cached("SELECT role FROM riskmap_keys WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
            .map_err(StoreError::sqlite(
                "reading the key's role for the audit row",
            ))
    }

    /// Replaces the `detail` of audit row `seq` written earlier in this transaction
    /// (an import writes its row first, so its per-feature rows can name it, and
    /// fills in the counts and the file's hash at the end).
    pub fn set_audit_detail(&self, seq: i64, detail: &serde_json::Value) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("UPDATE riskmap_audit SET detail = ?2 WHERE seq = ?1")
            .and_then(|mut s| s.execute(params![seq, detail.to_string()]))
            .map_err(StoreError::sqlite("writing the audit row"))?;
        Ok(())
    }

    /// Records that `feature_id` of `layer` changed (`None`: reload the whole layer).
    /// Returns the entry's sequence number.
    pub fn record_change(&self, layer: &str, feature_id: Option<&str>) -> Result<i64, StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO riskmap_changes (at, layer, feature_id) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![now_timestamp(), layer, feature_id]))
            .map_err(StoreError::sqlite("writing the change feed"))?;
        Ok(self.conn().last_insert_rowid())
    }

    /// Forgets change-feed rows older than `keep_seconds` (readers that fall further
    /// behind see the gap and reload everything).
    pub fn prune_changes(&self, keep_seconds: i64) -> Result<usize, StoreError> {
        let cutoff = time::OffsetDateTime::now_utc() - time::Duration::seconds(keep_seconds);
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let cutoff = cutoff.format(format).unwrap_or_default();
        self.conn()
            .execute("DELETE FROM riskmap_changes WHERE at < ?1", [cutoff])
            .map_err(StoreError::sqlite("pruning the change feed"))
    }
}

impl Store {
    /// Whether the change feed has rows older than `keep_seconds` to prune.
    pub fn has_old_changes(&self, keep_seconds: i64) -> Result<bool, StoreError> {
        let cutoff = time::OffsetDateTime::now_utc() - time::Duration::seconds(keep_seconds);
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let cutoff = cutoff.format(format).unwrap_or_default();
        self.read(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM riskmap_changes WHERE at < ?1)",
                [cutoff],
                |r| r.get(0),
            )
            .map_err(StoreError::sqlite("reading the change feed"))
        })
    }

    /// The newest change-feed sequence number ever given (0 when none): SQLite's
    /// AUTOINCREMENT counter, which survives the pruning of every row.
    pub fn last_change_seq(&self) -> Result<i64, StoreError> {
        self.read(feed_seq)
    }

    /// Changes after `seq`, oldest first (at most `limit`), and whether rows between
    /// `seq` and the first returned were pruned (the caller must then reload all).
    pub fn changes_since(&self, seq: i64, limit: usize) -> Result<(Vec<Change>, bool), StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached("SELECT seq, layer, feature_id FROM riskmap_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2")
                .map_err(StoreError::sqlite("reading the change feed"))?;
            let rows: Vec<Change> = stmt
                .query_map(params![seq, limit as i64], |r| {
                    Ok(Change { seq: r.get(0)?, layer: r.get(1)?, feature_id: r.get(2)? })
                })
                .and_then(|rows| rows.collect())
                .map_err(StoreError::sqlite("reading the change feed"))?;
            let gap = match rows.first() {
                Some(first) if first.seq > seq + 1 => {
                    // Sequence numbers are contiguous unless rows were pruned.
                    let min: i64 = c
                        .query_row("SELECT coalesce(min(seq), 0) FROM riskmap_changes", [], |r| r.get(0))
                        .map_err(StoreError::sqlite("reading the change feed"))?;
                    min > seq + 1
                }
                _ => false,
            };
            Ok((rows, gap))
        })
    }

    /// `SQLite's data_version` on the shared reader: changes when any other
    /// connection commits. A cheap "has anything happened?" for the change follower.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.read(|c| {
            c.query_row("PRAGMA data_version", [], |r| r.get(0))
                .map_err(StoreError::sqlite("reading data_version"))
        })
    }

    /// Per layer: number of imports and the features they added, updated and left
    /// unchanged, from the audit trail.
    pub fn import_totals(&self) -> Result<Vec<ImportTotals>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT layer, count(*),
                            coalesce(sum(json_extract(detail, '$.added')), 0),
                            coalesce(sum(json_extract(detail, '$.updated')), 0),
                            coalesce(sum(json_extract(detail, '$.unchanged')), 0)
                     FROM riskmap_audit WHERE action = 'import' GROUP BY layer ORDER BY layer",
                )
                .map_err(StoreError::sqlite("reading import totals"))?;
            stmt.query_map([], |r| {
                Ok(ImportTotals {
                    layer: r.get(0)?,
                    imports: r.get::<_, i64>(1)? as u64,
                    added: r.get::<_, i64>(2)? as u64,
                    updated: r.get::<_, i64>(3)? as u64,
                    unchanged: r.get::<_, i64>(4)? as u64,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(StoreError::sqlite("reading import totals"))
        })
    }

    /// The newest audit rows, newest first.
    pub fn recent_audit(&self, limit: usize) -> Result<Vec<(i64, String, AuditEntry)>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, at, actor, action, layer, feature_id, before, after, detail, role
                     FROM riskmap_audit ORDER BY seq DESC LIMIT ?1",
                )
                .map_err(StoreError::sqlite("reading the audit trail"))?;
            let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
            stmt.query_map([limit as i64], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    AuditEntry {
                        actor: r.get(2)?,
                        role: r.get(9)?,
                        action: r.get(3)?,
                        layer: r.get(4)?,
                        feature_id: r.get(5)?,
                        before: parse(r.get(6)?),
                        after: parse(r.get(7)?),
                        detail: parse(r.get(8)?),
                    },
                ))
            })
            .and_then(|rows| rows.collect())
            .map_err(StoreError::sqlite("reading the audit trail"))
        })
    }

    /// A value from `riskmap_meta`.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        self.read(|c| {
            c.query_row(
                "SELECT value FROM riskmap_meta WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::sqlite("reading riskmap_meta"))
        })
    }
}

impl Tx<'_> {
    pub fn set_meta(&self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let r = match value {
            Some(v) => self.conn().execute(
                "INSERT OR REPLACE INTO riskmap_meta VALUES (?1, ?2)",
                [key, v],
            ),
            None => self
                .conn()
                .execute("DELETE FROM riskmap_meta WHERE key = ?1", [key]),
        };
        r.map(|_| ())
            .map_err(StoreError::sqlite("writing riskmap_meta"))
    }
}

/// The change feed's last sequence number as `conn` sees it (in a read transaction:
/// the position its snapshot is at).
pub(super) fn feed_seq(conn: &rusqlite::Connection) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'riskmap_changes'), 0)",
        [],
        |r| r.get(0),
    )
    .map_err(StoreError::sqlite("reading the change feed"))
}
