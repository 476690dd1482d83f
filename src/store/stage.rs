//! Staged loads: the first load of an empty layer (the city's 4.52 million sensors, a
//! layer created from an upload) is written beside the layer, into a table of the same
//! columns, in many short transactions, and swapped in by one short transaction.
//!
//! SQLite has one writer per file. An import written in one transaction holds it from
//! its first row to its commit, and every edit waits that long (minutes for millions
//! of rows). A staged table is invisible to readers (no layer names it, GeoPackage
//! readers do not list it: it is not in `gpkg_contents`), so writing it in chunks loses
//! nothing of "all or nothing": until the swap commits, the layer is as it was; after,
//! it is the whole file. Edits wait for one chunk at most, and for the swap.
//!
//! A stage left by a crash is dropped when the server starts ([`Store::drop_stages`]),
//! unless the process that made it (its id is in the name) still runs: a
//! `riskmap import` loading while the server starts.

use std::path::Path;

use rusqlite::OptionalExtension;

use super::schema::{create_table_sql, q};
use super::{Store, StoreError, Tx};
use crate::model::LayerDef;

/// Names of staged tables start with this.
pub const STAGE_PREFIX: &str = "riskmap_stage_";

impl Store {
    /// Whether `layer`'s table holds no feature (a staged load is possible).
    pub fn layer_is_empty(&self, layer: &LayerDef) -> Result<bool, StoreError> {
        self.read(|conn| {
            conn.query_row(
                &format!("SELECT NOT EXISTS (SELECT 1 FROM {})", q(&layer.name)),
                [],
                |r| r.get(0),
            )
            .map_err(StoreError::sqlite(format!(
                "counting the features of {}",
                layer.name
            )))
        })
    }

    /// Drops every staged table (a load interrupted by a crash or a kill). Returns how
    /// many there were.
    pub fn drop_stages(&self) -> Result<usize, StoreError> {
        self.write(|tx| {
            let names: Vec<String> = {
                let mut stmt = tx
                    .conn()
                    .prepare(
                        "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, ?1) = ?2",
                    )
                    .map_err(StoreError::sqlite("listing staged tables"))?;
                let rows = stmt
                    .query_map(
                        rusqlite::params![STAGE_PREFIX.len() as i64, STAGE_PREFIX],
                        |r| r.get(0),
                    )
                    .map_err(StoreError::sqlite("listing staged tables"))?;
                rows.collect::<Result<_, _>>()
                    .map_err(StoreError::sqlite("listing staged tables"))?
            };
            let orphans: Vec<&String> = names.iter().filter(|n| !stage_owner_alive(n)).collect();
            for name in &orphans {
                tx.drop_stage(name)?;
            }
            tx.commit()?;
            Ok(orphans.len())
        })
    }
}

/// The name of a new staged table for this process: the prefix, the process id (so
/// that a server starting beside a running `riskmap import` leaves its stage alone),
/// and a random part.
pub fn stage_name() -> String {
    format!(
        "{STAGE_PREFIX}{}_{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Whether the process that made staged table `name` still runs (another process:
/// this one has none left when it looks, at its start). Names without a process id
/// are orphans.
fn stage_owner_alive(name: &str) -> bool {
    let Some(pid) = name
        .strip_prefix(STAGE_PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .and_then(|(pid, _)| pid.parse::<u32>().ok())
    else {
        return false;
    };
    // A process id used again by now would keep the table until a later start.
    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
}

/// What [`Tx::swap_stage`] found in the live table: features written into the layer
/// (by edits) while the load ran.
#[derive(Debug, Default)]
pub struct SwapOutcome {
    /// Ids the file has too: the file's feature replaced them (the import commits
    /// last), with what each was before.
    pub replaced: Vec<(String, Option<crate::model::Feature>)>,
    /// Ids the file does not have: kept, copied into the new table (new fids).
    pub kept: Vec<String>,
}

impl Tx<'_> {
    /// Creates the staged table `stage` for `layer`: its columns, and its fid sequence
    /// continuing the layer's (the fid of a feature deleted before is not used again;
    /// the rows edits write into the layer during the load are carried over at the
    /// swap with new fids).
    pub fn create_stage(&self, layer: &LayerDef, stage: &str) -> Result<(), StoreError> {
        debug_assert!(stage.starts_with(STAGE_PREFIX));
        let conn = self.conn();
        conn.execute(&create_table_sql(layer, stage), [])
            .map_err(StoreError::sqlite(format!(
                "creating the staged table {stage}"
            )))?;
        conn.execute(
            "INSERT INTO sqlite_sequence (name, seq) SELECT ?1, seq FROM sqlite_sequence WHERE name = ?2",
            rusqlite::params![stage, layer.name],
        )
        .map_err(StoreError::sqlite("continuing the fid sequence"))?;
        Ok(())
    }

    /// Drops a staged table and the derived rows written for it.
    pub fn drop_stage(&self, stage: &str) -> Result<(), StoreError> {
        debug_assert!(stage.starts_with(STAGE_PREFIX));
        let conn = self.conn();
        conn.execute(&format!("DROP TABLE IF EXISTS {}", q(stage)), [])
            .map_err(StoreError::sqlite(format!(
                "dropping the staged table {stage}"
            )))?;
        conn.execute("DELETE FROM riskmap_derived WHERE layer = ?1", [stage])
            .map_err(StoreError::sqlite("dropping a stage's derived rows"))?;
        Ok(())
    }

    /// Makes the staged table `stage` the table of `layer`: features written into the
    /// layer meanwhile are carried over (see [`SwapOutcome`]), the old table dropped,
    /// the staged one renamed. Short: the live table held only what edits wrote during
    /// the load. Nothing is kept unless the transaction commits.
    pub fn swap_stage(&self, layer: &LayerDef, stage: &str) -> Result<SwapOutcome, StoreError> {
        debug_assert!(stage.starts_with(STAGE_PREFIX));
        let conn = self.conn();
        let (live, staged, id) = (q(&layer.name), q(stage), q(&layer.id_property));
        let err = |doing: &str| StoreError::sqlite(format!("{doing} ({})", layer.name));
        let mut out = SwapOutcome::default();
        let any: bool = conn
            .query_row(&format!("SELECT EXISTS (SELECT 1 FROM {live})"), [], |r| {
                r.get(0)
            })
            .map_err(err("looking for features written during the load"))?;
        if any {
            let ids = |sql: String| -> Result<Vec<String>, StoreError> {
                let mut stmt = conn
                    .prepare(&sql)
                    .map_err(err("reading features written during the load"))?;
                let rows = stmt
                    .query_map([], |r| r.get(0))
                    .map_err(err("reading features written during the load"))?;
                rows.collect::<Result<_, _>>()
                    .map_err(err("reading features written during the load"))
            };
            for both in ids(format!(
                "SELECT {id} FROM {live} WHERE {id} IN (SELECT {id} FROM {staged})"
            ))? {
                let before = self
                    .get_feature(layer, &both)
                    .ok()
                    .flatten()
                    .map(|sf| sf.feature);
                out.replaced.push((both, before));
            }
            out.kept = ids(format!(
                "SELECT {id} FROM {live} WHERE {id} NOT IN (SELECT {id} FROM {staged})"
            ))?;
            let mut names = vec!["\"geom\"".to_string(), id.clone()];
            names.extend(layer.properties.iter().map(|p| q(&p.name)));
            let names = names.join(", ");
            conn.execute(
                &format!(
                    "INSERT INTO {staged} ({names}) SELECT {names} FROM {live} WHERE {id} NOT IN (SELECT {id} FROM {staged}) ORDER BY fid"
                ),
                [],
            )
            .map_err(err("carrying over features written during the load"))?;
        }
        // The carried-over rows have new fids: their derived rows are made again when
        // the index is built.
        conn.execute(
            "DELETE FROM riskmap_derived WHERE layer = ?1",
            [&layer.name],
        )
        .map_err(err("dropping the old derived rows"))?;
        conn.execute(
            "UPDATE riskmap_derived SET layer = ?1 WHERE layer = ?2",
            [&layer.name, stage],
        )
        .map_err(err("moving the staged derived rows"))?;
        // The staged sequence continues the live one and is at least as far on.
        let seq: Option<i64> = conn
            .query_row(
                "SELECT max(seq) FROM sqlite_sequence WHERE name IN (?1, ?2)",
                [&layer.name, stage],
                |r| r.get(0),
            )
            .optional()
            .map_err(err("reading the fid sequences"))?
            .flatten();
        conn.execute(&format!("DROP TABLE {live}"), [])
            .map_err(err("dropping the old table"))?;
        conn.execute(&format!("ALTER TABLE {staged} RENAME TO {live}"), [])
            .map_err(err("renaming the staged table"))?;
        if let Some(seq) = seq {
            conn.execute(
                "UPDATE sqlite_sequence SET seq = max(seq, ?2) WHERE name = ?1",
                rusqlite::params![layer.name, seq],
            )
            .map_err(err("continuing the fid sequence"))?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::test_layers::risk_points;
    use crate::model::{Feature, Value};
    use crate::store::OpenMode;

    fn point(layer: &LayerDef, id: &str, name: &str, lon: f64) -> Feature {
        Feature::new(
            layer,
            id.into(),
            geo::Geometry::Point(geo::Point::new(lon, 29.5)),
            vec![
                Value::Text(name.into()),
                Value::Text("landslide".into()),
                Value::Text("I".into()),
                Value::Null,
            ],
        )
        .unwrap()
    }

    /// A new store with the risk points layer.
    fn store() -> (tempfile::TempDir, LayerDef, Store) {
        let dir = tempfile::tempdir().unwrap();
        let layer = risk_points();
        let store = Store::open(
            &dir.path().join("s.gpkg"),
            OpenMode::CreateIfMissing,
            &[Arc::new(layer.clone())],
        )
        .unwrap();
        (dir, layer, store)
    }

    fn names(store: &Store, layer: &LayerDef) -> Vec<(i64, String, String)> {
        store
            .read(|c| {
                let mut s = c
                    .prepare(&format!(
                        "SELECT fid, id, name FROM {} ORDER BY fid",
                        q(&layer.name)
                    ))
                    .unwrap();
                let rows = s
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .unwrap();
                Ok(rows.map(Result::unwrap).collect())
            })
            .unwrap()
    }

    #[test]
    fn a_swap_carries_over_what_edits_wrote_during_the_load_and_never_reuses_a_fid() {
        let (_dir, layer, store) = store();
        // A feature created and deleted before: its fid (1) must never come back.
        store
            .write(|tx| {
                let fid = tx.insert_feature(&layer, &point(&layer, "R0", "old", 106.0), None)?;
                tx.delete_feature(&layer, fid)?;
                tx.commit()
            })
            .unwrap();
        assert!(store.layer_is_empty(&layer).unwrap());
        let stage = format!("{STAGE_PREFIX}test");
        let mut staged = layer.clone();
        staged.name = stage.clone();
        store
            .write(|tx| {
                tx.create_stage(&layer, &stage)?;
                tx.commit()
            })
            .unwrap();
        // The load, in two chunks (more than one multi-row statement's worth).
        let rows: Vec<(Feature, Option<Vec<u8>>)> = (1..=150)
            .map(|i| {
                (
                    point(&layer, &format!("R{i}"), "file", 106.0 + i as f64 / 1000.0),
                    None,
                )
            })
            .collect();
        let mut fids = Vec::new();
        for chunk in rows.chunks(100) {
            store
                .write(|tx| {
                    fids.extend(tx.insert_new_features(&staged, chunk)?);
                    tx.commit()
                })
                .unwrap();
        }
        assert_eq!(
            fids,
            (2..=151).collect::<Vec<i64>>(),
            "consecutive, after the deleted fid"
        );
        // Meanwhile, edits create two features in the live layer: one the file has too.
        store
            .write(|tx| {
                tx.insert_feature(&layer, &point(&layer, "R7", "edited", 107.0), None)?;
                tx.insert_feature(&layer, &point(&layer, "E1", "edited", 107.0), None)?;
                tx.commit()
            })
            .unwrap();
        let outcome = store
            .write(|tx| {
                let o = tx.swap_stage(&layer, &stage)?;
                tx.commit()?;
                Ok::<_, StoreError>(o)
            })
            .unwrap();
        assert_eq!(outcome.replaced.len(), 1);
        assert_eq!(outcome.replaced[0].0, "R7");
        assert_eq!(
            outcome.replaced[0].1.as_ref().map(|f| f.values[0].clone()),
            Some(Value::Text("edited".into()))
        );
        assert_eq!(outcome.kept, vec!["E1".to_string()]);
        let rows = names(&store, &layer);
        assert_eq!(rows.len(), 151);
        assert!(
            rows.iter()
                .any(|(_, id, name)| id == "R7" && name == "file"),
            "the file's R7 wins"
        );
        let e1 = rows.iter().find(|(_, id, _)| id == "E1").unwrap();
        assert_eq!(e1.2, "edited");
        assert_eq!(e1.0, 152, "the carried-over row has a new fid");
        // The next feature continues the sequence; no staged table is left.
        let next = store
            .write(|tx| {
                let fid = tx.insert_feature(&layer, &point(&layer, "N1", "next", 108.0), None)?;
                tx.commit()?;
                Ok::<_, StoreError>(fid)
            })
            .unwrap();
        assert_eq!(next, 153);
        assert_eq!(store.drop_stages().unwrap(), 0);
    }

    #[test]
    fn stages_left_by_a_crash_are_dropped() {
        let (_dir, layer, store) = store();
        for name in ["a", "b"] {
            let stage = format!("{STAGE_PREFIX}{name}");
            let mut staged = layer.clone();
            staged.name = stage.clone();
            store
                .write(|tx| {
                    tx.create_stage(&layer, &stage)?;
                    tx.insert_new_features(&staged, &[(point(&layer, "R1", "x", 106.0), None)])?;
                    tx.commit()
                })
                .unwrap();
        }
        assert_eq!(store.drop_stages().unwrap(), 2);
        assert_eq!(store.drop_stages().unwrap(), 0);
        assert!(names(&store, &layer).is_empty());
        // A stage of a process that still runs (pid 1 always does) is left alone; one
        // of a process that no longer does, or of this one, is dropped.
        let alive = format!("{STAGE_PREFIX}1_x");
        let gone = format!("{STAGE_PREFIX}{}_x", u32::MAX);
        let mine = stage_name();
        for stage in [&alive, &gone, &mine] {
            store
                .write(|tx| {
                    tx.create_stage(&layer, stage)?;
                    tx.commit()
                })
                .unwrap();
        }
        assert_eq!(store.drop_stages().unwrap(), 2);
        let left: Vec<String> = store
            .read(|c| {
                let mut s = c
                    .prepare("SELECT name FROM sqlite_master WHERE name LIKE 'riskmap_stage_%'")
                    .unwrap();
                let rows = s.query_map([], |r| r.get(0)).unwrap();
                Ok(rows.map(Result::unwrap).collect())
            })
            .unwrap();
        assert_eq!(left, vec![alive]);
    }
}
