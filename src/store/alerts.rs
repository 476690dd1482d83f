//! What issue 10 keeps: sensor types and per-sensor rules, plan templates and point
//! plans (every version kept), warnings with every transition, and readings.
//!
//! Readings are not features: a group of readings is one row of `riskmap_readings_log`
//! (a packed blob, [`pack_reading`]) written in the group's transaction with the
//! warning transitions it caused, so a group is durable whole or not at all. The
//! sensors' latest state is saved in chunks (`riskmap_sensor_states`, each with the
//! last log row it includes); at start the chunks are read and the log rows after them
//! replayed, and rows every chunk includes are pruned.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};

use super::{AuditEntry, Store, StoreError, Tx, now_timestamp};
use crate::alerts::engine::{SavedSensor, Transition, Warning};
use crate::alerts::plans::{PointPlan, Template};
use crate::alerts::sensor_types::{RuleSpec, SensorType};
use crate::alerts::{Level, Millis};

/// A version of a document (template, point plan) with who wrote it when.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: i64,
    pub at: String,
    pub by: String,
}

/// A warning's transition as kept: its sequence number (the SSE event id) and the
/// transition.
#[derive(Clone, Debug, PartialEq)]
pub struct KeptTransition {
    pub seq: i64,
    pub transition: Transition,
    /// Who acted (acknowledgements, resolutions by hand) and their note.
    pub by: Option<String>,
    pub note: Option<String>,
}

/// Which warnings to list.
#[derive(Clone, Debug, Default)]
pub struct WarningFilter {
    /// `active`, `acknowledged`, `resolved`; `None`: any. `open` is active or
    /// acknowledged.
    pub state: Option<String>,
    pub limit: u32,
    pub offset: u64,
}

fn json_err(what: &'static str) -> impl Fn(serde_json::Error) -> StoreError {
    move |e| StoreError::Invalid {
        reason: format!("{what} in the store cannot be read: {e}"),
    }
}

fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    StoreError::sqlite(what)
}

/// Bytes of one packed reading: sensor key, timestamp (ms), value, little-endian.
pub const READING_BYTES: usize = 24;

/// Appends one reading to a log blob.
pub fn pack_reading(out: &mut Vec<u8>, key: i64, ts: Millis, value: f64) {
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(&value.to_le_bytes());
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

/// The readings of a log blob (a torn tail cannot happen: the blob is written whole
/// in its transaction; a blob of the wrong size is refused).
pub fn unpack_readings(data: &[u8]) -> Result<Vec<(i64, Millis, f64)>, StoreError> {
    if data.len() % READING_BYTES != 0 {
        return Err(StoreError::Invalid {
            reason: format!(
                "a readings log row of {} bytes is not whole readings",
                data.len()
            ),
        });
    }
    Ok(data
        .chunks_exact(READING_BYTES)
        .map(|c| {
            (
                i64::from_le_bytes(le8(c)),
                i64::from_le_bytes(le8(&c[8..])),
                f64::from_le_bytes(le8(&c[16..])),
            )
        })
        .collect())
}

/// Bytes of one saved sensor in a state chunk.
pub const SAVED_BYTES: usize = 34;

/// Packs saved sensors into a chunk blob.
pub fn pack_states(states: &[SavedSensor]) -> Vec<u8> {
    let mut out = Vec::with_capacity(states.len() * SAVED_BYTES);
    for s in states {
        out.extend_from_slice(&s.key.to_le_bytes());
        out.extend_from_slice(&s.ts.to_le_bytes());
        out.extend_from_slice(&s.value.to_le_bytes());
        out.extend_from_slice(&s.lower_since.to_le_bytes());
        out.push(s.level as u8);
        out.push(s.lower_max as u8);
    }
    out
}

/// The saved sensors of a chunk blob.
pub fn unpack_states(data: &[u8]) -> Result<Vec<SavedSensor>, StoreError> {
    let bad = || StoreError::Invalid {
        reason: "a saved sensor state chunk cannot be read".into(),
    };
    if data.len() % SAVED_BYTES != 0 {
        return Err(bad());
    }
    data.chunks_exact(SAVED_BYTES)
        .map(|c| {
            Ok(SavedSensor {
                key: i64::from_le_bytes(le8(c)),
                ts: i64::from_le_bytes(le8(&c[8..])),
                value: f64::from_le_bytes(le8(&c[16..])),
                lower_since: i64::from_le_bytes(le8(&c[24..])),
                level: Level::from_u8(c[32]).ok_or_else(bad)?,
                lower_max: Level::from_u8(c[33]).ok_or_else(bad)?,
            })
        })
        .collect()
}

impl Tx<'_> {
    /// Creates or replaces a sensor type; returns its new version.
    pub fn put_sensor_type(&self, t: &SensorType, by: &str) -> Result<i64, StoreError> {
        let body = serde_json::to_string(t).map_err(json_err("a sensor type"))?;
        self.conn()
            .prepare_cached(
                "INSERT INTO riskmap_sensor_types (type_id, body, version, updated_at, updated_by)
                 VALUES (?1, ?2, 1, ?3, ?4)
                 ON CONFLICT (type_id) DO UPDATE SET body = excluded.body,
                   version = version + 1, updated_at = excluded.updated_at,
                   updated_by = excluded.updated_by
                 RETURNING version",
            )
            .and_then(|mut s| {
                s.query_row(params![t.type_id, body, now_timestamp(), by], |r| r.get(0))
            })
            .map_err(sql("writing a sensor type"))
    }

    /// Sets (or with `None` removes) one sensor's own rule.
    pub fn put_sensor_rule(
        &self,
        sensor_id: &str,
        spec: Option<&RuleSpec>,
        by: &str,
    ) -> Result<(), StoreError> {
        match spec {
            Some(spec) => {
                let body = serde_json::to_string(spec).map_err(json_err("a sensor rule"))?;
                self.conn()
                    .prepare_cached(
                        "INSERT OR REPLACE INTO riskmap_sensor_rules (sensor_id, body, updated_at, updated_by)
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .and_then(|mut s| s.execute(params![sensor_id, body, now_timestamp(), by]))
                    .map_err(sql("writing a sensor rule"))?;
            }
            None => {
                self.conn()
                    .execute(
                        "DELETE FROM riskmap_sensor_rules WHERE sensor_id = ?1",
                        [sensor_id],
                    )
                    .map_err(sql("removing a sensor rule"))?;
            }
        }
        Ok(())
    }

    /// Writes a new version of a template (unless it equals the latest: then the
    /// latest version is returned and nothing written).
    pub fn put_template(&self, t: &Template, by: &str) -> Result<(i64, bool), StoreError> {
        let body = serde_json::to_string(t).map_err(json_err("a plan template"))?;
        let latest: Option<(i64, String)> = self
            .conn()
            .prepare_cached(
                "SELECT version, body FROM riskmap_plan_templates WHERE id = ?1
                 ORDER BY version DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row([&t.id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(sql("reading a plan template"))?;
        if let Some((v, old)) = &latest {
            if *old == body {
                return Ok((*v, false));
            }
        }
        let version = latest.map_or(1, |(v, _)| v + 1);
        self.conn()
            .prepare_cached(
                "INSERT INTO riskmap_plan_templates (id, version, body, at, by) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![t.id, version, body, now_timestamp(), by]))
            .map_err(sql("writing a plan template"))?;
        Ok((version, true))
    }

    /// Writes a new version of a risk point's plan; returns it.
    pub fn put_point_plan(
        &self,
        risk_point_id: &str,
        p: &PointPlan,
        by: &str,
    ) -> Result<i64, StoreError> {
        let body = serde_json::to_string(p).map_err(json_err("a point plan"))?;
        let version: i64 = self
            .conn()
            .prepare_cached(
                "SELECT coalesce(max(version), 0) + 1 FROM riskmap_point_plans WHERE risk_point_id = ?1",
            )
            .and_then(|mut s| s.query_row([risk_point_id], |r| r.get(0)))
            .map_err(sql("reading a point plan"))?;
        self.conn()
            .prepare_cached(
                "INSERT INTO riskmap_point_plans (risk_point_id, version, body, at, by) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![risk_point_id, version, body, now_timestamp(), by]))
            .map_err(sql("writing a point plan"))?;
        Ok(version)
    }

    /// Keeps a warning's transition: the warning row as it is after it, the event
    /// (with its evidence) and an audit row. Returns the event's sequence number.
    pub fn keep_transition(
        &self,
        t: &Transition,
        actor: &str,
        role: Option<&str>,
    ) -> Result<i64, StoreError> {
        let w = &t.warning;
        let body = serde_json::to_string(w).map_err(json_err("a warning"))?;
        self.conn()
            .prepare_cached(
                "INSERT INTO riskmap_warnings (id, subject_kind, subject_id, level, state, raised_at, updated_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET level = excluded.level, state = excluded.state,
                   updated_at = excluded.updated_at, body = excluded.body",
            )
            .and_then(|mut s| {
                s.execute(params![
                    w.id as i64,
                    w.subject.kind.layer(),
                    w.subject.id.as_str(),
                    w.level.name(),
                    w.state(),
                    w.raised_at,
                    w.updated_at,
                    body
                ])
            })
            .map_err(sql("writing a warning"))?;
        let event = serde_json::to_string(t).map_err(json_err("a warning event"))?;
        self.conn()
            .prepare_cached(
                "INSERT INTO riskmap_warning_events (warning_id, kind, at, body) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![w.id as i64, t.kind.name(), t.at, event]))
            .map_err(sql("writing a warning event"))?;
        let seq = self.conn().last_insert_rowid();
        self.audit(&AuditEntry {
            actor: actor.to_string(),
            role: role.map(str::to_string),
            action: format!("warning_{}", t.kind.name()),
            layer: Some(w.subject.kind.layer().to_string()),
            feature_id: Some(w.subject.id.to_string()),
            before: None,
            after: serde_json::to_value(w).ok(),
            detail: Some(serde_json::json!({
                "warning_id": w.id,
                "event": seq,
                "from": t.from,
                "to": t.to,
                "evidence": t.evidence.len(),
            })),
        })?;
        Ok(seq)
    }

    /// Logs a group of readings (packed with [`pack_reading`]); returns the row's
    /// sequence number.
    pub fn log_readings(&self, at: Millis, n: usize, data: &[u8]) -> Result<i64, StoreError> {
        self.conn()
            .prepare_cached("INSERT INTO riskmap_readings_log (at, n, data) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![at, n as i64, data]))
            .map_err(sql("logging readings"))?;
        Ok(self.conn().last_insert_rowid())
    }

    /// Saves one chunk of sensor states, including the log up to row `upto`.
    pub fn put_state_chunk(&self, chunk: i64, upto: i64, data: &[u8]) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT OR REPLACE INTO riskmap_sensor_states (chunk, upto, data) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![chunk, upto, data]))
            .map_err(sql("saving sensor states"))?;
        Ok(())
    }

    /// Removes log rows up to `upto` (every chunk includes them).
    pub fn prune_readings_log(&self, upto: i64) -> Result<usize, StoreError> {
        self.conn()
            .execute("DELETE FROM riskmap_readings_log WHERE seq <= ?1", [upto])
            .map_err(sql("pruning the readings log"))
    }
}

/// A row of (body, version, at, by).
type VersionRow = (String, i64, String, String);

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn parse_versioned<T: serde::de::DeserializeOwned>(
    what: &'static str,
    rows: Vec<VersionRow>,
) -> Result<Vec<Versioned<T>>, StoreError> {
    rows.into_iter()
        .map(|(body, version, at, by)| {
            Ok(Versioned {
                value: serde_json::from_str(&body).map_err(json_err(what))?,
                version,
                at,
                by,
            })
        })
        .collect()
}

impl Store {
    /// What exists to be named by a reference: the ids of a layer's features (`layer`,
    /// the referenced layer's definition), of the plan templates, or of the sensor
    /// types (as text). For an import's check of the references of its features.
    pub fn referable_ids(
        &self,
        reference: &crate::model::Reference,
        layer: Option<&crate::model::LayerDef>,
    ) -> Result<hashbrown::HashSet<String>, StoreError> {
        use crate::model::Reference;
        let sql_text = match (reference, layer) {
            (Reference::Layer(_), Some(l)) => format!(
                "SELECT {} FROM {}",
                super::schema::q(&l.id_property),
                super::schema::q(&l.name)
            ),
            (Reference::Layer(name), None) => {
                return Err(StoreError::Invalid {
                    reason: format!("no layer {name:?} to check references against"),
                });
            }
            (Reference::PlanTemplate, _) => "SELECT DISTINCT id FROM riskmap_plan_templates".into(),
            (Reference::SensorType, _) => {
                "SELECT CAST(type_id AS TEXT) FROM riskmap_sensor_types".into()
            }
        };
        // A connection of its own: a long read must not hold the shared reader.
        let c = self.open_reader()?;
        {
            let mut s = c
                .prepare(&sql_text)
                .map_err(sql("reading what references may name"))?;
            let rows = s
                .query_map([], |r| r.get::<_, String>(0))
                .and_then(|r| r.collect::<Result<hashbrown::HashSet<_>, _>>())
                .map_err(sql("reading what references may name"))?;
            Ok(rows)
        }
    }

    /// Each non-null value of property `property` of `layer`, as text, with the number
    /// of rows holding it.
    pub fn value_counts(
        &self,
        layer: &crate::model::LayerDef,
        property: &str,
    ) -> Result<hashbrown::HashMap<String, u64>, StoreError> {
        let col = super::schema::q(property);
        let sql_text = format!(
            "SELECT CAST({col} AS TEXT), count(*) FROM {} WHERE {col} IS NOT NULL GROUP BY 1",
            super::schema::q(&layer.name)
        );
        // A connection of its own: a long read must not hold the shared reader.
        let c = self.open_reader()?;
        {
            let mut s = c
                .prepare(&sql_text)
                .map_err(sql("counting what references name"))?;
            let rows = s
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })
                .and_then(|r| r.collect::<Result<hashbrown::HashMap<_, _>, _>>())
                .map_err(sql("counting what references name"))?;
            Ok(rows)
        }
    }

    /// Every sensor type with its version.
    pub fn sensor_types(&self) -> Result<Vec<(SensorType, i64)>, StoreError> {
        self.read(|c| {
            let mut s = c
                .prepare("SELECT body, version FROM riskmap_sensor_types ORDER BY type_id")
                .map_err(sql("reading sensor types"))?;
            let rows = s
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(sql("reading sensor types"))?;
            rows.into_iter()
                .map(|(b, v)| {
                    Ok((
                        serde_json::from_str(&b).map_err(json_err("a sensor type"))?,
                        v,
                    ))
                })
                .collect()
        })
    }

    /// Every sensor's own rule.
    pub fn sensor_rules(&self) -> Result<Vec<(String, RuleSpec)>, StoreError> {
        self.read(|c| {
            let mut s = c
                .prepare("SELECT sensor_id, body FROM riskmap_sensor_rules")
                .map_err(sql("reading sensor rules"))?;
            let rows = s
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(sql("reading sensor rules"))?;
            rows.into_iter()
                .map(|(id, b)| {
                    Ok((
                        id,
                        serde_json::from_str(&b).map_err(json_err("a sensor rule"))?,
                    ))
                })
                .collect()
        })
    }

    /// The latest version of every template.
    pub fn templates(&self) -> Result<Vec<Versioned<Template>>, StoreError> {
        self.read(|c| {
            let mut s = c
                .prepare(
                    "SELECT body, version, at, by FROM riskmap_plan_templates t
                     WHERE version = (SELECT max(version) FROM riskmap_plan_templates u WHERE u.id = t.id)
                     ORDER BY id",
                )
                .map_err(sql("reading plan templates"))?;
            let rows = s
                .query_map([], version_row)
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(sql("reading plan templates"))?;
            parse_versioned("a plan template", rows)
        })
    }

    /// Every version of a template, newest first.
    pub fn template_versions(&self, id: &str) -> Result<Vec<Versioned<Template>>, StoreError> {
        self.read(|c| {
            let mut s = c
                .prepare(
                    "SELECT body, version, at, by FROM riskmap_plan_templates WHERE id = ?1 ORDER BY version DESC",
                )
                .map_err(sql("reading plan templates"))?;
            let rows = s
                .query_map([id], version_row)
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(sql("reading plan templates"))?;
            parse_versioned("a plan template", rows)
        })
    }

    /// The latest plan of every risk point that has its own.
    pub fn point_plans(&self) -> Result<Vec<(String, Versioned<PointPlan>)>, StoreError> {
        self.read(|c| {
            let mut s = c
                .prepare(
                    "SELECT risk_point_id, body, version, at, by FROM riskmap_point_plans p
                     WHERE version = (SELECT max(version) FROM riskmap_point_plans q WHERE q.risk_point_id = p.risk_point_id)",
                )
                .map_err(sql("reading point plans"))?;
            let rows = s
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                })
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(sql("reading point plans"))?;
            rows.into_iter()
                .map(|(id, row)| {
                    let mut v = parse_versioned::<PointPlan>("a point plan", vec![row])?;
                    Ok((id, v.remove(0)))
                })
                .collect()
        })
    }

    /// Every version of a risk point's plan, newest first.
    pub fn point_plan_versions(
        &self,
        risk_point_id: &str,
    ) -> Result<Vec<Versioned<PointPlan>>, StoreError> {
        self.read(|c| {
            let mut s = c
                .prepare(
                    "SELECT body, version, at, by FROM riskmap_point_plans WHERE risk_point_id = ?1 ORDER BY version DESC",
                )
                .map_err(sql("reading point plans"))?;
            let rows = s
                .query_map([risk_point_id], version_row)
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(sql("reading point plans"))?;
            parse_versioned("a point plan", rows)
        })
    }

    /// A warning by id, as its latest transition left it.
    pub fn warning(&self, id: u64) -> Result<Option<Warning>, StoreError> {
        let body: Option<String> = self.read(|c| {
            c.query_row(
                "SELECT body FROM riskmap_warnings WHERE id = ?1",
                [id as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("reading a warning"))
        })?;
        body.map(|b| serde_json::from_str(&b).map_err(json_err("a warning")))
            .transpose()
    }

    /// Warnings, newest first.
    pub fn warnings(&self, f: &WarningFilter) -> Result<Vec<Warning>, StoreError> {
        let (cond, arg) = match f.state.as_deref() {
            None => ("?1 = ''", String::new()),
            Some("open") => ("state <> ?1", "resolved".to_string()),
            Some(s) => ("state = ?1", s.to_string()),
        };
        let bodies: Vec<String> = self.read(|c| {
            let mut s = c
                .prepare(&format!(
                    "SELECT body FROM riskmap_warnings WHERE {cond} ORDER BY id DESC LIMIT ?2 OFFSET ?3"
                ))
                .map_err(sql("reading warnings"))?;
            s.query_map(params![arg, f.limit, f.offset as i64], |r| r.get(0))
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(sql("reading warnings"))
        })?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(json_err("a warning")))
            .collect()
    }

    /// The warnings not resolved, and the next warning id to give.
    pub fn open_warnings(&self) -> Result<(Vec<Warning>, u64), StoreError> {
        let open = self.warnings(&WarningFilter {
            state: Some("open".into()),
            limit: u32::MAX,
            offset: 0,
        })?;
        let max: i64 = self.read(|c| {
            c.query_row(
                "SELECT coalesce(max(id), 0) FROM riskmap_warnings",
                [],
                |r| r.get(0),
            )
            .map_err(sql("reading warnings"))
        })?;
        Ok((open, max as u64 + 1))
    }

    /// Each subject's latest warning when it was resolved by hand (for the engine's
    /// suppression after a restart).
    pub fn last_resolved_by_hand(&self) -> Result<Vec<Warning>, StoreError> {
        let bodies: Vec<String> = self.read(|c| {
            let mut s = c
                .prepare(
                    "SELECT body FROM riskmap_warnings WHERE state = 'resolved'
                       AND json_extract(body, '$.resolved.by') IS NOT NULL AND id IN
                       (SELECT max(id) FROM riskmap_warnings GROUP BY subject_kind, subject_id)",
                )
                .map_err(sql("reading warnings"))?;
            let rows = s
                .query_map([], |r| r.get::<_, String>(0))
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(sql("reading warnings"))?;
            Ok(rows)
        })?;
        let mut out = Vec::new();
        for b in bodies {
            let w: Warning = serde_json::from_str(&b).map_err(json_err("a warning"))?;
            if w.resolved.as_ref().is_some_and(|r| r.by.is_some()) {
                out.push(w);
            }
        }
        Ok(out)
    }

    /// The transitions of one warning, oldest first.
    pub fn warning_events(&self, id: u64) -> Result<Vec<(i64, Transition)>, StoreError> {
        self.events("WHERE warning_id = ?1 ORDER BY seq", id as i64, u32::MAX)
    }

    /// Transitions after event `seq`, oldest first, at most `limit` (SSE resumption).
    pub fn events_since(&self, seq: i64, limit: u32) -> Result<Vec<(i64, Transition)>, StoreError> {
        self.events("WHERE seq > ?1 ORDER BY seq", seq, limit)
    }

    /// The newest event's sequence number (0 when none).
    pub fn last_event_seq(&self) -> Result<i64, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT coalesce(max(seq), 0) FROM riskmap_warning_events",
                [],
                |r| r.get(0),
            )
            .map_err(sql("reading warning events"))
        })
    }

    fn events(
        &self,
        cond: &str,
        arg: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Transition)>, StoreError> {
        let rows: Vec<(i64, String)> = self.read(|c| {
            let mut s = c
                .prepare(&format!(
                    "SELECT seq, body FROM riskmap_warning_events {cond} LIMIT ?2"
                ))
                .map_err(sql("reading warning events"))?;
            s.query_map(params![arg, limit], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(sql("reading warning events"))
        })?;
        rows.into_iter()
            .map(|(seq, b)| {
                Ok((
                    seq,
                    serde_json::from_str(&b).map_err(json_err("a warning event"))?,
                ))
            })
            .collect()
    }

    /// Every saved chunk of sensor states: (chunk, upto, blob).
    pub fn state_chunks(&self) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError> {
        self.read(|c| {
            let mut s = c
                .prepare("SELECT chunk, upto, data FROM riskmap_sensor_states ORDER BY chunk")
                .map_err(sql("reading sensor states"))?;
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .map_err(sql("reading sensor states"))
        })
    }

    /// Each saved chunk with the last log row it includes.
    pub fn state_chunks_upto(&self) -> Result<HashMap<i64, i64>, StoreError> {
        self.read(|c| {
            let mut s = c
                .prepare("SELECT chunk, upto FROM riskmap_sensor_states")
                .map_err(sql("reading sensor states"))?;
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|r| r.collect::<Result<HashMap<_, _>, _>>())
                .map_err(sql("reading sensor states"))
        })
    }

    /// Calls `f` with every readings log row after `seq`, in order: (seq, blob).
    pub fn readings_log_after(
        &self,
        seq: i64,
        mut f: impl FnMut(i64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let conn = self.open_reader()?;
        let mut s = conn
            .prepare("SELECT seq, data FROM riskmap_readings_log WHERE seq > ?1 ORDER BY seq")
            .map_err(sql("reading the readings log"))?;
        let mut rows = s.query([seq]).map_err(sql("reading the readings log"))?;
        while let Some(r) = rows.next().map_err(sql("reading the readings log"))? {
            let seq: i64 = r.get(0).map_err(sql("reading the readings log"))?;
            let data = r
                .get_ref(1)
                .and_then(|v| v.as_blob().map_err(Into::into))
                .map_err(sql("reading the readings log"))?;
            f(seq, data)?;
        }
        Ok(())
    }

    /// The newest readings log row (0 when none).
    pub fn last_readings_seq(&self) -> Result<i64, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT coalesce(max(seq), 0) FROM riskmap_readings_log",
                [],
                |r| r.get(0),
            )
            .map_err(sql("reading the readings log"))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::alerts::engine::{Engine, SensorRef, Subject};
    use crate::alerts::{Direction, Mapping, Rule};
    use crate::store::OpenMode;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.gpkg"), OpenMode::CreateIfMissing, &[]).unwrap();
        (dir, s)
    }

    fn template(title: &str) -> Template {
        serde_json::from_value(serde_json::json!({
            "id": "P1", "title": title, "category": "landslide",
            "levels": {"red": ["evacuate"]}
        }))
        .unwrap()
    }

    #[test]
    fn templates_and_point_plans_keep_every_version() {
        let (_d, s) = store();
        let put = |t: &Template| {
            s.write(|tx| {
                let v = tx.put_template(t, "planner")?;
                tx.commit()?;
                Ok::<_, StoreError>(v)
            })
        };
        assert_eq!(put(&template("a")).unwrap(), (1, true));
        assert_eq!(put(&template("a")).unwrap(), (1, false));
        assert_eq!(put(&template("b")).unwrap(), (2, true));
        let latest = s.templates().unwrap();
        assert_eq!(latest.len(), 1);
        assert_eq!(
            (latest[0].value.title.as_str(), latest[0].version),
            ("b", 2)
        );
        let all = s.template_versions("P1").unwrap();
        assert_eq!(
            all.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![2, 1]
        );
        for note in ["one", "two"] {
            s.write(|tx| {
                tx.put_point_plan(
                    "R1",
                    &PointPlan {
                        notes: Some(note.into()),
                        ..Default::default()
                    },
                    "planner",
                )?;
                tx.commit()
            })
            .unwrap();
        }
        let plans = s.point_plans().unwrap();
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].1.value.notes.as_deref(), Some("two"));
        assert_eq!(s.point_plan_versions("R1").unwrap().len(), 2);
    }

    #[test]
    fn transitions_keep_the_warning_its_events_and_an_audit_row() {
        let (_d, s) = store();
        let rule = Rule::from_warn_alarm(Direction::Above, 1.0, 2.0, Mapping::Split).unwrap();
        let subjects = [Subject::risk_point("R1")];
        let mut e = Engine::new();
        let sensor = SensorRef {
            key: 1,
            id: "S1",
            rule: &rule,
            subjects: &subjects,
        };
        e.apply(sensor, 1000, 1.5);
        let raised = e.finish(1000);
        let ack = e.acknowledge(1, "key:1:officer", "seen", 2000).unwrap();
        let mut blob = Vec::new();
        pack_reading(&mut blob, 1, 1000, 1.5);
        s.write(|tx| {
            tx.log_readings(1000, 1, &blob)?;
            for t in raised.iter().chain([&ack]) {
                tx.keep_transition(t, "key:1:officer", Some("duty_officer"))?;
            }
            tx.commit()
        })
        .unwrap();
        let w = s.warning(1).unwrap().unwrap();
        assert_eq!(w.state(), "acknowledged");
        let events = s.warning_events(1).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].1.evidence[0].sensor_id, "S1");
        assert_eq!(s.events_since(events[0].0, 10).unwrap().len(), 1);
        let (open, next) = s.open_warnings().unwrap();
        assert_eq!((open.len(), next), (1, 2));
        let audit = s.recent_audit(10).unwrap();
        assert!(audit.iter().any(|(_, _, a)| a.action == "warning_raised"));
        let mut logged = Vec::new();
        s.readings_log_after(0, |_, d| {
            logged.extend(unpack_readings(d)?);
            Ok(())
        })
        .unwrap();
        assert_eq!(logged, vec![(1, 1000, 1.5)]);
    }

    #[test]
    fn saved_states_pack_and_unpack_exactly() {
        let states = vec![SavedSensor {
            key: 7,
            ts: 1_795_334_400_123,
            value: -0.1,
            level: Level::Orange,
            lower_since: i64::MIN,
            lower_max: Level::Blue,
        }];
        assert_eq!(unpack_states(&pack_states(&states)).unwrap(), states);
        assert!(unpack_states(&[0; 35]).is_err());
        assert!(unpack_readings(&[0; 25]).is_err());
    }
}
