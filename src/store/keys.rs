//! API keys: only a SHA-256 of each key is stored. Keys are 256 random bits, so a
//! fast hash is enough (no password-style stretching needed: there is nothing to
//! guess).

use rand::Rng;
use rusqlite::{OptionalExtension, Row, params};
use sha2::{Digest, Sha256};

use super::{AuditEntry, Store, StoreError, now_timestamp};
use crate::model::Role;

/// Every key starts with this, so leaked keys are easy to find in logs and repos.
pub const KEY_PREFIX: &str = "rmk_";

/// A stored key (never the secret).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// The first characters of the secret, to recognise a key in a list.
    pub prefix: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

impl ApiKey {
    /// How audit rows name this key's holder.
    pub fn actor(&self) -> String {
        format!("key:{}:{}", self.id, self.name)
    }
}

/// The key id in an actor string made by [`ApiKey::actor`] (`key:ID:NAME`), `None`
/// for other actors (`cli:USER`, `demo`).
pub fn key_id_of_actor(actor: &str) -> Option<i64> {
    let rest = actor.strip_prefix("key:")?;
    let (id, _name) = rest.split_once(':')?;
    id.parse().ok()
}

/// A freshly made key: the secret is shown once and never stored.
#[derive(Debug)]
pub struct NewKey {
    pub key: ApiKey,
    pub secret: String,
}

fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn row_to_key(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let role: String = r.get(2)?;
    Ok(ApiKey {
        id: r.get(0)?,
        name: r.get(1)?,
        // An unknown role in the table (edited by hand) grants nothing useful:
        // treat it as the least privileged.
        role: Role::from_name(&role).unwrap_or(Role::Viewer),
        prefix: r.get(3)?,
        created_at: r.get(4)?,
        revoked_at: r.get(5)?,
    })
}

const KEY_COLUMNS: &str = "id, name, role, prefix, created_at, revoked_at";

impl Store {
    /// Creates a key with `role`, audited as `actor`.
    pub fn add_key(&self, actor: &str, role: Role, name: &str) -> Result<NewKey, StoreError> {
        let mut bytes = [0u8; 32];
        rand::rng().fill(&mut bytes);
        let secret = format!(
            "{KEY_PREFIX}{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let prefix = secret[..KEY_PREFIX.len() + 8].to_string();
        let created_at = now_timestamp();
        self.write(|tx| {
            tx.conn()
                .execute(
                    "INSERT INTO riskmap_keys (name, role, hash, prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![name, role.name(), hash(&secret), prefix, created_at],
                )
                .map_err(StoreError::sqlite("adding a key"))?;
            let id = tx.conn().last_insert_rowid();
            tx.audit(&AuditEntry {
                actor: actor.to_string(),
                action: "key_add".into(),
                detail: Some(serde_json::json!({"key_id": id, "name": name, "role": role.name(), "prefix": prefix})),
                ..Default::default()
            })?;
            tx.commit()?;
            Ok(NewKey {
                key: ApiKey { id, name: name.to_string(), role, prefix: prefix.clone(), created_at: created_at.clone(), revoked_at: None },
                secret: secret.clone(),
            })
        })
    }

    pub fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM riskmap_keys ORDER BY id"
                ))
                .map_err(StoreError::sqlite("listing keys"))?;
            stmt.query_map([], row_to_key)
                .and_then(|r| r.collect())
                .map_err(StoreError::sqlite("listing keys"))
        })
    }

    /// Revokes key `id`; `Ok(None)` when there is no such key. Revoking twice keeps
    /// the first revocation time.
    pub fn revoke_key(&self, actor: &str, id: i64) -> Result<Option<ApiKey>, StoreError> {
        self.write(|tx| {
            let n = tx
                .conn()
                .execute(
                    "UPDATE riskmap_keys SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1",
                    params![id, now_timestamp()],
                )
                .map_err(StoreError::sqlite("revoking a key"))?;
            if n == 0 {
                return Ok(None);
            }
            let key = tx
                .conn()
                .query_row(
                    &format!("SELECT {KEY_COLUMNS} FROM riskmap_keys WHERE id = ?1"),
                    [id],
                    row_to_key,
                )
                .map_err(StoreError::sqlite("reading a key"))?;
            tx.audit(&AuditEntry {
                actor: actor.to_string(),
                action: "key_revoke".into(),
                detail: Some(
                    serde_json::json!({"key_id": id, "name": key.name, "role": key.role.name()}),
                ),
                ..Default::default()
            })?;
            tx.commit()?;
            Ok(Some(key))
        })
    }

    /// The active (not revoked) key whose secret this is.
    pub fn authenticate(&self, secret: &str) -> Result<Option<ApiKey>, StoreError> {
        if !secret.starts_with(KEY_PREFIX) {
            return Ok(None);
        }
        let h = hash(secret);
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM riskmap_keys WHERE hash = ?1 AND revoked_at IS NULL"
            ))
            .and_then(|mut s| s.query_row([h], row_to_key).optional())
            .map_err(StoreError::sqlite("checking a key"))
        })
    }
}
