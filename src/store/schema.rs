//! Tables: the GeoPackage core, our bookkeeping, and one feature table per layer.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::blob::SRS_WGS84;
use super::{StoreError, Tx, now_timestamp};
use crate::model::LayerDef;

/// `PRAGMA application_id` of a GeoPackage: "GPKG".
pub(super) const GPKG_APPLICATION_ID: i64 = 0x4750_4B47;
/// `PRAGMA user_version` of GeoPackage 1.3.
pub(super) const GPKG_USER_VERSION: i64 = 10300;
/// Version of our own tables, in `riskmap_meta`. 2: `riskmap_audit.role`; 3:
/// `riskmap_derived` (stores of earlier versions are migrated when opened, see
/// [`create_core`]).
pub const SCHEMA_VERSION: &str = "4";

const WGS84_WKT: &str = r#"GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]"#;

const CORE: &str = r#"
CREATE TABLE IF NOT EXISTS gpkg_spatial_ref_sys (
  srs_name TEXT NOT NULL,
  srs_id INTEGER PRIMARY KEY,
  organization TEXT NOT NULL,
  organization_coordsys_id INTEGER NOT NULL,
  definition TEXT NOT NULL,
  description TEXT
);
CREATE TABLE IF NOT EXISTS gpkg_contents (
  table_name TEXT NOT NULL PRIMARY KEY,
  data_type TEXT NOT NULL,
  identifier TEXT UNIQUE,
  description TEXT DEFAULT '',
  last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE,
  srs_id INTEGER,
  CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id)
);
CREATE TABLE IF NOT EXISTS gpkg_geometry_columns (
  table_name TEXT NOT NULL,
  column_name TEXT NOT NULL,
  geometry_type_name TEXT NOT NULL,
  srs_id INTEGER NOT NULL,
  z TINYINT NOT NULL,
  m TINYINT NOT NULL,
  CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
  CONSTRAINT uk_gc_table_name UNIQUE (table_name),
  CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
  CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id)
);
CREATE TABLE IF NOT EXISTS riskmap_meta (
  key TEXT PRIMARY KEY NOT NULL,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS riskmap_audit (
  seq INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  at TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  layer TEXT,
  feature_id TEXT,
  before TEXT,
  after TEXT,
  detail TEXT,
  role TEXT
);
CREATE INDEX IF NOT EXISTS riskmap_audit_action ON riskmap_audit(action, layer);
CREATE TABLE IF NOT EXISTS riskmap_changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  at TEXT NOT NULL,
  layer TEXT NOT NULL,
  feature_id TEXT
);
CREATE TABLE IF NOT EXISTS riskmap_keys (
  id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  name TEXT NOT NULL,
  role TEXT NOT NULL,
  hash TEXT NOT NULL UNIQUE,
  prefix TEXT NOT NULL,
  created_at TEXT NOT NULL,
  revoked_at TEXT
);
-- Import reports (`GET /imports/{id}`): kept in the import's own transaction when
-- it commits, so a retry with the same Idempotency-Key finds it exactly when the
-- import is in the store.
CREATE TABLE IF NOT EXISTS riskmap_imports (
  id TEXT PRIMARY KEY NOT NULL,
  created TEXT NOT NULL,
  actor TEXT NOT NULL,
  layer TEXT NOT NULL,
  idempotency_key TEXT,
  status INTEGER NOT NULL,
  report TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS riskmap_imports_key ON riskmap_imports(actor, idempotency_key);
CREATE INDEX IF NOT EXISTS riskmap_imports_created ON riskmap_imports(created);
-- What riskmap derived from a large geometry it stored (see `Tx::insert_feature`),
-- with the length and CRC-32 of the geometry blob it was derived from: a row another
-- tool changed no longer matches and is checked and derived afresh.
CREATE TABLE IF NOT EXISTS riskmap_derived (
  layer TEXT NOT NULL,
  fid INTEGER NOT NULL,
  geom_bytes INTEGER NOT NULL,
  geom_crc32 INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (layer, fid)
) WITHOUT ROWID;
-- Issue 10: sensor types, plans, warnings and readings (see `store::alerts`).
CREATE TABLE IF NOT EXISTS riskmap_sensor_types (
  type_id INTEGER PRIMARY KEY NOT NULL,
  body TEXT NOT NULL,
  version INTEGER NOT NULL,
  updated_at TEXT NOT NULL,
  updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS riskmap_sensor_rules (
  sensor_id TEXT PRIMARY KEY NOT NULL,
  body TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS riskmap_plan_templates (
  id TEXT NOT NULL,
  version INTEGER NOT NULL,
  body TEXT NOT NULL,
  at TEXT NOT NULL,
  by TEXT NOT NULL,
  PRIMARY KEY (id, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS riskmap_point_plans (
  risk_point_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  body TEXT NOT NULL,
  at TEXT NOT NULL,
  by TEXT NOT NULL,
  PRIMARY KEY (risk_point_id, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS riskmap_warnings (
  id INTEGER PRIMARY KEY NOT NULL,
  subject_kind TEXT NOT NULL,
  subject_id TEXT NOT NULL,
  level TEXT NOT NULL,
  state TEXT NOT NULL,
  raised_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS riskmap_warnings_state ON riskmap_warnings(state, id);
CREATE INDEX IF NOT EXISTS riskmap_warnings_subject ON riskmap_warnings(subject_kind, subject_id);
CREATE TABLE IF NOT EXISTS riskmap_warning_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  warning_id INTEGER NOT NULL,
  kind TEXT NOT NULL,
  at INTEGER NOT NULL,
  body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS riskmap_warning_events_warning ON riskmap_warning_events(warning_id, seq);
CREATE TABLE IF NOT EXISTS riskmap_readings_log (
  seq INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  at INTEGER NOT NULL,
  n INTEGER NOT NULL,
  data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS riskmap_sensor_states (
  chunk INTEGER PRIMARY KEY NOT NULL,
  upto INTEGER NOT NULL,
  data BLOB NOT NULL
);
"#;

/// Refuses to touch a file that is neither a GeoPackage nor empty, and reports a
/// file SQLite cannot read as damaged.
pub(super) fn check_is_ours(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let app_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("SQLite cannot read it: {e}"),
        })?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("SQLite cannot read it: {e}"),
        })?;
    if app_id != GPKG_APPLICATION_ID && tables > 0 {
        return Err(StoreError::NotGeoPackage {
            path: path.to_path_buf(),
            reason: format!("application_id is {app_id:#x}, not GPKG"),
        });
    }
    Ok(())
}

/// Whether the core tables exist at this build's schema version (then opening need not
/// write anything). A different version is reported by [`create_core`].
pub(super) fn core_ready(conn: &Connection) -> Result<bool, StoreError> {
    let has_meta: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'riskmap_meta'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(StoreError::sqlite("reading the schema"))?;
    if !has_meta {
        return Ok(false);
    }
    let version: Option<String> = conn
        .query_row(
            "SELECT value FROM riskmap_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(StoreError::sqlite("reading the schema version"))?;
    Ok(version.as_deref() == Some(SCHEMA_VERSION))
}

/// Whether the layer's title in `gpkg_contents` differs from its layer file.
pub(super) fn needs_retitle(conn: &Connection, layer: &LayerDef) -> Result<bool, StoreError> {
    let d: Option<Option<String>> = conn
        .query_row(
            "SELECT description FROM gpkg_contents WHERE table_name = ?1",
            [&layer.name],
            |r| r.get(0),
        )
        .optional()
        .map_err(StoreError::sqlite("reading gpkg_contents"))?;
    Ok(matches!(d, Some(ref t) if t.as_deref() != Some(layer.title.as_str())))
}

/// Creates the GeoPackage core and our tables (idempotent), in one transaction.
pub(super) fn create_core(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let fail = |e| StoreError::Open {
        path: path.to_path_buf(),
        source: e,
    };
    conn.execute_batch(&format!(
        "PRAGMA application_id = {GPKG_APPLICATION_ID}; PRAGMA user_version = {GPKG_USER_VERSION};"
    ))
    .map_err(fail)?;
    let tx = conn.transaction().map_err(fail)?;
    tx.execute_batch(CORE).map_err(fail)?;
    let srs = [
        (
            "Undefined cartesian SRS",
            -1,
            "NONE",
            -1,
            "undefined",
            "undefined cartesian coordinate reference system",
        ),
        (
            "Undefined geographic SRS",
            0,
            "NONE",
            0,
            "undefined",
            "undefined geographic coordinate reference system",
        ),
        (
            "WGS 84 geodetic",
            SRS_WGS84 as i64,
            "EPSG",
            4326,
            WGS84_WKT,
            "longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid",
        ),
    ];
    for (name, id, org, org_id, def, desc) in srs {
        tx.execute(
            "INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![name, id, org, org_id, def, desc],
        )
        .map_err(fail)?;
    }
    tx.execute(
        "INSERT OR IGNORE INTO riskmap_meta VALUES ('schema_version', ?1)",
        [SCHEMA_VERSION],
    )
    .map_err(fail)?;
    let mut version: String = tx
        .query_row(
            "SELECT value FROM riskmap_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .map_err(fail)?;
    if version == "1" {
        migrate_1_to_2(&tx).map_err(fail)?;
        version = "2".to_string();
    }
    if version == "2" {
        // Version 3 only adds `riskmap_derived`, created above by `CORE`.
        set_version(&tx, "3").map_err(fail)?;
        tracing::info!(
            "store migrated to schema version 3: large geometries keep what was derived from them"
        );
        version = "3".to_string();
    }
    if version == "3" {
        // Version 4 only adds the tables of sensor types, plans, warnings and readings,
        // created above by `CORE`.
        set_version(&tx, "4").map_err(fail)?;
        tracing::info!(
            "store migrated to schema version 4: sensor types, plans, readings and warnings"
        );
        version = "4".to_string();
    }
    if version != SCHEMA_VERSION {
        return Err(StoreError::NotGeoPackage {
            path: path.to_path_buf(),
            reason: format!("riskmap schema version {version}, this build knows {SCHEMA_VERSION}"),
        });
    }
    tx.commit().map_err(fail)
}

/// Version 1 → 2: audit rows name the key's role in a column of their own. Rows
/// written by keys before the migration get the role from `riskmap_keys` (a key's role
/// never changes: keys are only added and revoked); rows of the command line keep
/// NULL. In the transaction of `create_core`: all of it or nothing.
fn migrate_1_to_2(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let has_role: bool = tx.query_row(
        "SELECT count(*) FROM pragma_table_info('riskmap_audit') WHERE name = 'role'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_role {
        tx.execute("ALTER TABLE riskmap_audit ADD COLUMN role TEXT", [])?;
    }
    tx.execute(
        "UPDATE riskmap_audit SET role = (
             SELECT k.role FROM riskmap_keys k
             WHERE substr(riskmap_audit.actor, 1, length('key:' || k.id || ':')) = 'key:' || k.id || ':')
         WHERE role IS NULL AND actor LIKE 'key:%'",
        [],
    )?;
    set_version(tx, "2")?;
    tracing::info!("store migrated to schema version 2: audit rows name the key's role");
    Ok(())
}

fn set_version(tx: &rusqlite::Transaction<'_>, version: &str) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE riskmap_meta SET value = ?1 WHERE key = 'schema_version'",
        [version],
    )
    .map(|_| ())
}

/// Quotes an identifier already validated by `config` (letters, digits, `_`).
pub(super) fn q(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// What opening the store would do to a layer's table.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerPlan {
    /// The table matches the layer file.
    UpToDate,
    /// No table yet: it will be created.
    Create,
    /// These declared properties have no column yet: they will be added (nullable).
    AddColumns(Vec<String>),
}

/// Compares a layer's table with its layer file without changing anything. A
/// geometry type or column type that disagrees is an error: riskmap never rewrites
/// data to follow a changed layer file.
pub(super) fn plan_layer(conn: &Connection, layer: &LayerDef) -> Result<LayerPlan, StoreError> {
    let mismatch = |detail: String| StoreError::SchemaMismatch {
        layer: layer.name.clone(),
        detail,
    };
    let exists: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [&layer.name],
            |r| r.get(0),
        )
        .optional()
        .map_err(StoreError::sqlite(format!(
            "looking up table {}",
            layer.name
        )))?;
    if exists.is_none() {
        return Ok(LayerPlan::Create);
    }
    let geom_type: Option<String> = conn
        .query_row(
            "SELECT geometry_type_name FROM gpkg_geometry_columns WHERE table_name = ?1 AND column_name = 'geom'",
            [&layer.name],
            |r| r.get(0),
        )
        .optional()
        .map_err(StoreError::sqlite("reading gpkg_geometry_columns"))?;
    match geom_type {
        Some(t) if t.eq_ignore_ascii_case(layer.geometry.gpkg_name()) => {}
        Some(t) => {
            return Err(mismatch(format!(
                "the table holds {t}, the layer file declares {}",
                layer.geometry.gpkg_name()
            )));
        }
        None => {
            return Err(mismatch(
                "the table has no 'geom' column in gpkg_geometry_columns".into(),
            ));
        }
    }
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({})", q(&layer.name)))
        .map_err(StoreError::sqlite("reading table columns"))?;
    let columns: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
        .and_then(|rows| rows.collect())
        .map_err(StoreError::sqlite("reading table columns"))?;
    let find = |name: &str| {
        columns
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, t)| t.clone())
    };
    match find(&layer.id_property) {
        Some(t) if t.eq_ignore_ascii_case("TEXT") => {}
        other => {
            return Err(mismatch(format!(
                "id column {} is {other:?}, expected TEXT",
                layer.id_property
            )));
        }
    }
    let mut missing = Vec::new();
    for p in &layer.properties {
        match find(&p.name) {
            Some(t) if t.eq_ignore_ascii_case(p.ty.gpkg_sql_type()) => {}
            Some(t) => {
                return Err(mismatch(format!(
                    "column {} is {t}, the layer file declares {} ({})",
                    p.name,
                    p.ty.config_name(),
                    p.ty.gpkg_sql_type()
                )));
            }
            None => missing.push(p.name.clone()),
        }
    }
    Ok(if missing.is_empty() {
        LayerPlan::UpToDate
    } else {
        LayerPlan::AddColumns(missing)
    })
}

/// `CREATE TABLE` for a table of `layer`'s columns named `table` (the layer's own, or
/// a staged load's, see `store::stage`).
pub(super) fn create_table_sql(layer: &LayerDef, table: &str) -> String {
    let mut cols = vec![
        "\"fid\" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL".to_string(),
        format!("\"geom\" {} NOT NULL", layer.geometry.gpkg_name()),
        format!("{} TEXT NOT NULL UNIQUE", q(&layer.id_property)),
    ];
    cols.extend(
        layer
            .properties
            .iter()
            .map(|p| format!("{} {}", q(&p.name), p.ty.gpkg_sql_type())),
    );
    format!("CREATE TABLE {} ({})", q(table), cols.join(", "))
}

/// Creates the layer's table, or adds the columns new in its layer file.
pub(super) fn ensure_layer(tx: &Tx<'_>, layer: &LayerDef) -> Result<(), StoreError> {
    let conn = tx.conn();
    match plan_layer(conn, layer)? {
        LayerPlan::UpToDate => {}
        LayerPlan::Create => {
            conn.execute(&create_table_sql(layer, &layer.name), [])
                .map_err(StoreError::sqlite(format!("creating table {}", layer.name)))?;
            conn.execute(
                "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change, srs_id)
                 VALUES (?1, 'features', ?1, ?2, ?3, ?4)",
                params![layer.name, layer.title, now_timestamp(), SRS_WGS84],
            )
            .map_err(StoreError::sqlite("registering in gpkg_contents"))?;
            conn.execute(
                "INSERT INTO gpkg_geometry_columns VALUES (?1, 'geom', ?2, ?3, 0, 0)",
                params![layer.name, layer.geometry.gpkg_name(), SRS_WGS84],
            )
            .map_err(StoreError::sqlite("registering in gpkg_geometry_columns"))?;
        }
        LayerPlan::AddColumns(names) => {
            for name in names {
                let ty = layer
                    .property(&name)
                    .map(|(_, p)| p.ty.gpkg_sql_type())
                    .unwrap_or("TEXT");
                let sql = format!(
                    "ALTER TABLE {} ADD COLUMN {} {ty}",
                    q(&layer.name),
                    q(&name)
                );
                conn.execute(&sql, [])
                    .map_err(StoreError::sqlite(format!("adding column {name}")))?;
                tracing::info!(layer = %layer.name, column = %name, "added a column declared in the layer file");
            }
        }
    }
    conn.execute(
        "UPDATE gpkg_contents SET description = ?2 WHERE table_name = ?1 AND description IS NOT ?2",
        params![layer.name, layer.title],
    )
    .map_err(StoreError::sqlite("updating gpkg_contents"))?;
    Ok(())
}

/// Removes a layer's table and every row riskmap and GeoPackage keep about it.
pub(super) fn drop_layer(tx: &Tx<'_>, name: &str) -> Result<(), StoreError> {
    let conn = tx.conn();
    conn.execute(&format!("DROP TABLE IF EXISTS {}", q(name)), [])
        .map_err(StoreError::sqlite(format!("dropping table {name}")))?;
    for sql in [
        "DELETE FROM gpkg_geometry_columns WHERE table_name = ?1",
        "DELETE FROM gpkg_contents WHERE table_name = ?1",
        "DELETE FROM riskmap_derived WHERE layer = ?1",
    ] {
        conn.execute(sql, [name])
            .map_err(StoreError::sqlite(format!("forgetting layer {name}")))?;
    }
    Ok(())
}
