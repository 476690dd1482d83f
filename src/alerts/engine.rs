//! The warning engine: each sensor's level from its readings, each subject's (a risk
//! point's or a pipeline's) level from its sensors', and the warnings that follow.
//!
//! Plain state, driven by readings and by a clock passed in: no I/O, no threads, no
//! wall clock. The server applies readings in groups ([`Engine::apply`] per reading,
//! then [`Engine::finish`] once per group), writes the transitions it gets back and
//! commits, then announces them; a group whose commit fails is undone
//! ([`Engine::rollback`]), so the engine never runs ahead of the store.
//!
//! # Rules
//!
//! - A sensor's readings are taken in the order of their timestamps: a reading at the
//!   timestamp of the sensor's last one is a duplicate, an older one is out of order,
//!   and neither changes anything.
//! - A sensor's level follows its type's [`Rule`]: up at once, down only after the
//!   pending period.
//! - A subject's level is the highest level among its sensors. A sensor on a pipeline
//!   counts for the pipeline and for the risk points attached to it (the caller names
//!   a sensor's subjects with each reading).
//! - A warning is raised when a subject's level leaves normal, escalated or
//!   de-escalated as it moves, and resolved when it is back to normal. Escalation
//!   clears an acknowledgement: the new level must be acknowledged again.
//! - A warning resolved by hand while its subject is still above normal is not raised
//!   again at that level: a new warning comes only when the level rises above the
//!   lowest level seen since, or after it has been normal.
//! - Within one group, a subject changes at most once (from its level before the group
//!   to its level after), whatever order the readings came in.

use std::collections::HashMap;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::Level;
use super::rule::{Millis, Rule};

/// No time: a sensor that never reported, or no lower run under way.
const NEVER: Millis = Millis::MIN;
const NO_GROUP: u32 = u32::MAX;

/// What a warning is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    RiskPoint,
    Pipeline,
}

impl SubjectKind {
    /// The layer the subject's feature is in.
    pub fn layer(self) -> &'static str {
        match self {
            SubjectKind::RiskPoint => "risk_points",
            SubjectKind::Pipeline => "pipelines",
        }
    }
}

/// A risk point or a pipeline, by its feature id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Subject {
    pub kind: SubjectKind,
    pub id: CompactString,
}

impl Subject {
    pub fn risk_point(id: &str) -> Subject {
        Subject {
            kind: SubjectKind::RiskPoint,
            id: id.into(),
        }
    }
    pub fn pipeline(id: &str) -> Subject {
        Subject {
            kind: SubjectKind::Pipeline,
            id: id.into(),
        }
    }
}

/// One sensor as a reading names it: its stable key (the sensors layer's fid), its id,
/// its rule and its subjects.
#[derive(Clone, Copy, Debug)]
pub struct SensorRef<'a> {
    pub key: i64,
    pub id: &'a str,
    pub rule: &'a Rule,
    pub subjects: &'a [Subject],
}

/// What became of one reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Taken; the sensor's level before and after.
    Applied { from: Level, to: Level },
    /// The sensor's last reading has this timestamp already.
    Duplicate,
    /// Older than the sensor's last reading.
    OutOfOrder,
    /// NaN or infinite: never taken (least of all as normal).
    NotFinite,
}

/// A reading that moved a sensor's level: the evidence of a transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub sensor_id: CompactString,
    pub ts: Millis,
    pub value: f64,
    pub from: Level,
    pub to: Level,
    /// The threshold of the level reached (or left, when falling).
    pub threshold: Option<f64>,
}

/// Who acknowledged a warning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub at: Millis,
    pub note: String,
}

/// How a warning ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    /// `None`: by the readings (normal for the pending period).
    pub by: Option<String>,
    pub at: Millis,
    pub note: Option<String>,
}

/// A warning, as it is after its latest transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    pub id: u64,
    pub subject: Subject,
    pub level: Level,
    /// The highest level it reached.
    pub peak: Level,
    pub raised_at: Millis,
    pub updated_at: Millis,
    pub acknowledged: Option<Ack>,
    pub resolved: Option<Resolution>,
}

impl Warning {
    pub fn is_active(&self) -> bool {
        self.resolved.is_none()
    }

    /// `active`, `acknowledged` or `resolved`.
    pub fn state(&self) -> &'static str {
        match (&self.resolved, &self.acknowledged) {
            (Some(_), _) => "resolved",
            (None, Some(_)) => "acknowledged",
            (None, None) => "active",
        }
    }
}

/// The kind of a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    Raised,
    Escalated,
    DeEscalated,
    Acknowledged,
    Resolved,
}

impl TransitionKind {
    pub fn name(self) -> &'static str {
        match self {
            TransitionKind::Raised => "raised",
            TransitionKind::Escalated => "escalated",
            TransitionKind::DeEscalated => "de_escalated",
            TransitionKind::Acknowledged => "acknowledged",
            TransitionKind::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<TransitionKind> {
        Some(match s {
            "raised" => TransitionKind::Raised,
            "escalated" => TransitionKind::Escalated,
            "de_escalated" => TransitionKind::DeEscalated,
            "acknowledged" => TransitionKind::Acknowledged,
            "resolved" => TransitionKind::Resolved,
            _ => return None,
        })
    }
}

/// One step in a warning's life, with the warning as it is after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub kind: TransitionKind,
    pub from: Level,
    pub to: Level,
    pub at: Millis,
    pub warning: Warning,
    /// The readings that moved the subject's sensors (empty for acknowledgements and
    /// resolutions by hand).
    pub evidence: Vec<Evidence>,
}

/// Why an acknowledgement or a resolution by hand was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActError {
    #[error("no warning {0}")]
    Missing(u64),
    #[error("warning {0} is resolved already")]
    Resolved(u64),
}

/// A sensor's latest state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SensorState {
    /// Timestamp of the latest reading, `Millis::MIN` when none.
    ts: Millis,
    value: f64,
    /// First reading of the current run under `level`, `Millis::MIN` when none.
    lower_since: Millis,
    /// The subjects the sensor's level counts for now (an index into the groups).
    group: u32,
    level: Level,
    /// Highest level seen in the current lower run.
    lower_max: Level,
}

impl Default for SensorState {
    fn default() -> Self {
        SensorState {
            ts: NEVER,
            value: f64::NAN,
            lower_since: NEVER,
            group: NO_GROUP,
            level: Level::Normal,
            lower_max: Level::Normal,
        }
    }
}

/// What a sensor looks like from outside.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SensorView {
    pub ts: Millis,
    pub value: f64,
    pub level: Level,
    /// Silent for longer than its rule allows (or never reported).
    pub no_data: bool,
}

/// A sensor's state as kept across restarts ([`Engine::export`], [`Engine::import`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SavedSensor {
    pub key: i64,
    pub ts: Millis,
    pub value: f64,
    pub level: Level,
    pub lower_since: Millis,
    pub lower_max: Level,
}

#[derive(Clone, Debug, Default)]
struct SubjectState {
    /// Sensors at blue, yellow, orange, red.
    counts: [u32; 4],
    /// In this group's touched list.
    touched: bool,
    warning: Option<Warning>,
    /// Set by a resolution by hand: no new warning at or under this level.
    suppressed: Level,
    evidence: Vec<Evidence>,
}

impl SubjectState {
    fn level(&self) -> Level {
        (0..4)
            .rev()
            .find(|&i| self.counts[i] > 0)
            .and_then(|i| Level::from_u8(i as u8 + 1))
            .unwrap_or(Level::Normal)
    }
}

/// What the undo log remembers.
enum Undo {
    Sensor(i64, SensorState),
    Subject(u32, Box<SubjectState>),
}

/// The engine (see the module comment).
#[derive(Default)]
pub struct Engine {
    /// By sensor key (the sensors layer's fid: small, dense, never reused).
    sensors: Vec<SensorState>,
    groups: Vec<Box<[u32]>>,
    group_ids: HashMap<Box<[u32]>, u32>,
    subjects: Vec<SubjectState>,
    subject_keys: Vec<Subject>,
    subject_ids: HashMap<Subject, u32>,
    /// Subjects whose counts moved in this group.
    touched: Vec<u32>,
    /// Active warnings: id → subject.
    active: HashMap<u64, u32>,
    next_warning: u64,
    /// Set between [`Engine::begin`] and [`Engine::commit`] / [`Engine::rollback`].
    undo: Option<(Vec<Undo>, u64)>,
}

/// Keys above this are refused: the state is a vector indexed by key.
pub const MAX_SENSOR_KEY: i64 = 1 << 31;

impl Engine {
    pub fn new() -> Engine {
        Engine {
            next_warning: 1,
            ..Default::default()
        }
    }

    /// Starts a group whose changes [`Engine::rollback`] can undo.
    pub fn begin(&mut self) {
        self.undo = Some((Vec::new(), self.next_warning));
    }

    /// Keeps the group's changes.
    pub fn commit(&mut self) {
        self.undo = None;
    }

    /// Undoes everything since [`Engine::begin`] (the group's commit failed).
    pub fn rollback(&mut self) {
        let Some((log, next)) = self.undo.take() else {
            return;
        };
        for u in log.into_iter().rev() {
            match u {
                Undo::Sensor(k, s) => self.sensors[k as usize] = s,
                Undo::Subject(i, s) => {
                    let now_active = self.subjects[i as usize].warning.as_ref().map(|w| w.id);
                    if let Some(id) = now_active {
                        self.active.remove(&id);
                    }
                    if let Some(w) = &s.warning {
                        self.active.insert(w.id, i);
                    }
                    self.subjects[i as usize] = *s;
                }
            }
        }
        self.touched.clear();
        self.next_warning = next;
    }

    fn save_sensor(&mut self, key: i64) {
        if let Some((log, _)) = &mut self.undo {
            log.push(Undo::Sensor(key, self.sensors[key as usize]));
        }
    }

    fn save_subject(&mut self, i: u32) {
        if let Some((log, _)) = &mut self.undo {
            log.push(Undo::Subject(
                i,
                Box::new(self.subjects[i as usize].clone()),
            ));
        }
    }

    fn subject_index(&mut self, s: &Subject) -> u32 {
        if let Some(&i) = self.subject_ids.get(s) {
            return i;
        }
        let i = self.subjects.len() as u32;
        self.subjects.push(SubjectState::default());
        self.subject_keys.push(s.clone());
        self.subject_ids.insert(s.clone(), i);
        i
    }

    fn group_index(&mut self, subjects: &[Subject]) -> u32 {
        let mut members: Vec<u32> = subjects.iter().map(|s| self.subject_index(s)).collect();
        members.sort_unstable();
        members.dedup();
        let members = members.into_boxed_slice();
        if let Some(&g) = self.group_ids.get(&members) {
            return g;
        }
        let g = self.groups.len() as u32;
        self.groups.push(members.clone());
        self.group_ids.insert(members, g);
        g
    }

    /// True when group `g` is exactly `subjects`.
    fn group_matches(&self, g: u32, subjects: &[Subject]) -> bool {
        let Some(members) = self.groups.get(g as usize) else {
            return false;
        };
        if let [one] = subjects {
            return members.len() == 1 && self.subject_ids.get(one) == Some(&members[0]);
        }
        let mut ids = Vec::with_capacity(subjects.len());
        for s in subjects {
            match self.subject_ids.get(s) {
                Some(&i) => ids.push(i),
                None => return false,
            }
        }
        ids.sort_unstable();
        ids.dedup();
        *ids == **members
    }

    /// Moves one sensor's contribution (`level` in group `g`) by `delta` (+1/−1).
    fn count(&mut self, g: u32, level: Level, delta: i32, evidence: Option<&Evidence>) {
        let Some(idx) = level.warning_index() else {
            if let Some(e) = evidence {
                self.note(g, e);
            }
            return;
        };
        let members = self.groups[g as usize].clone();
        for &i in members.iter() {
            self.touch(i);
            let c = &mut self.subjects[i as usize].counts[idx];
            *c = c.saturating_add_signed(delta);
            if let Some(e) = evidence {
                self.subjects[i as usize].evidence.push(e.clone());
            }
        }
    }

    /// Keeps `e` as evidence for the subjects of group `g` (a sensor falling to normal
    /// moves no count but is evidence of a de-escalation or resolution).
    fn note(&mut self, g: u32, e: &Evidence) {
        let members = self.groups[g as usize].clone();
        for &i in members.iter() {
            self.touch(i);
            self.subjects[i as usize].evidence.push(e.clone());
        }
    }

    fn touch(&mut self, i: u32) {
        if !self.subjects[i as usize].touched {
            self.save_subject(i);
            self.subjects[i as usize].touched = true;
            self.touched.push(i);
        }
    }

    /// Takes one reading. Call [`Engine::finish`] after a group of them.
    pub fn apply(&mut self, sensor: SensorRef<'_>, ts: Millis, value: f64) -> Outcome {
        let key = sensor.key;
        assert!(
            (0..MAX_SENSOR_KEY).contains(&key),
            "sensor key {key} out of range (the caller checks it)"
        );
        let k = key as usize;
        if self.sensors.len() <= k {
            self.sensors.resize(k + 1, SensorState::default());
        }
        let s = self.sensors[k];
        if !value.is_finite() {
            return Outcome::NotFinite;
        }
        if ts == s.ts {
            return Outcome::Duplicate;
        }
        if ts < s.ts {
            return Outcome::OutOfOrder;
        }
        self.save_sensor(key);
        let rule = sensor.rule;
        let mut next = s;
        next.ts = ts;
        next.value = value;
        let raw = rule.level(value, s.level);
        if raw >= s.level {
            next.level = raw;
            next.lower_since = NEVER;
            next.lower_max = Level::Normal;
        } else {
            if s.lower_since == NEVER {
                next.lower_since = ts;
                next.lower_max = raw;
            } else {
                next.lower_max = next.lower_max.max(raw);
            }
            if ts.saturating_sub(next.lower_since) >= rule.clear_after {
                next.level = next.lower_max;
                if raw < next.level {
                    next.lower_since = ts;
                    next.lower_max = raw;
                } else {
                    next.lower_since = NEVER;
                    next.lower_max = Level::Normal;
                }
            }
        }
        // The subjects it counts for now (a sensor moved to another risk point leaves
        // the old one).
        let group = if s.group != NO_GROUP && self.group_matches(s.group, sensor.subjects) {
            s.group
        } else {
            self.group_index(sensor.subjects)
        };
        next.group = group;
        let evidence = (next.level != s.level).then(|| Evidence {
            sensor_id: sensor.id.into(),
            ts,
            value,
            from: s.level,
            to: next.level,
            threshold: rule.threshold(next.level.max(s.level)),
        });
        if group != s.group || next.level != s.level {
            if s.group != NO_GROUP {
                self.count(s.group, s.level, -1, None);
            }
            self.count(group, next.level, 1, evidence.as_ref());
        }
        self.sensors[k] = next;
        Outcome::Applied {
            from: s.level,
            to: next.level,
        }
    }

    /// The keys of every sensor the engine holds a state for.
    pub fn keys(&self) -> impl Iterator<Item = i64> + '_ {
        self.sensors
            .iter()
            .enumerate()
            .filter(|(_, s)| s.ts != NEVER || s.group != NO_GROUP)
            .map(|(k, _)| k as i64)
    }

    /// Forgets a sensor (deleted from its layer): its level no longer counts.
    pub fn forget(&mut self, key: i64) {
        let Some(s) = usize::try_from(key)
            .ok()
            .and_then(|k| self.sensors.get(k))
            .copied()
        else {
            return;
        };
        if s.ts == NEVER && s.group == NO_GROUP {
            return;
        }
        self.save_sensor(key);
        if s.group != NO_GROUP {
            self.count(s.group, s.level, -1, None);
        }
        self.sensors[key as usize] = SensorState::default();
    }

    /// Ends a group: the subjects whose level moved get their transitions, in subject
    /// order, timed `now`.
    pub fn finish(&mut self, now: Millis) -> Vec<Transition> {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        let mut out = Vec::new();
        for i in touched {
            let key = self.subject_keys[i as usize].clone();
            let next_id = self.next_warning;
            let s = &mut self.subjects[i as usize];
            s.touched = false;
            let level = s.level();
            let evidence = std::mem::take(&mut s.evidence);
            s.suppressed = s.suppressed.min(level);
            match s.warning.as_mut() {
                None if level > s.suppressed => {
                    let w = Warning {
                        id: next_id,
                        subject: key,
                        level,
                        peak: level,
                        raised_at: now,
                        updated_at: now,
                        acknowledged: None,
                        resolved: None,
                    };
                    s.warning = Some(w.clone());
                    self.active.insert(next_id, i);
                    self.next_warning += 1;
                    out.push(Transition {
                        kind: TransitionKind::Raised,
                        from: Level::Normal,
                        to: level,
                        at: now,
                        warning: w,
                        evidence,
                    });
                }
                None => {}
                Some(w) if level == Level::Normal => {
                    let from = w.level;
                    w.level = Level::Normal;
                    w.updated_at = now;
                    w.resolved = Some(Resolution {
                        by: None,
                        at: now,
                        note: None,
                    });
                    let w = w.clone();
                    s.warning = None;
                    self.active.remove(&w.id);
                    out.push(Transition {
                        kind: TransitionKind::Resolved,
                        from,
                        to: Level::Normal,
                        at: now,
                        warning: w,
                        evidence,
                    });
                }
                Some(w) if level != w.level => {
                    let from = w.level;
                    let kind = if level > from {
                        w.acknowledged = None;
                        TransitionKind::Escalated
                    } else {
                        TransitionKind::DeEscalated
                    };
                    w.level = level;
                    w.peak = w.peak.max(level);
                    w.updated_at = now;
                    out.push(Transition {
                        kind,
                        from,
                        to: level,
                        at: now,
                        warning: w.clone(),
                        evidence,
                    });
                }
                Some(_) => {}
            }
        }
        out
    }

    /// A duty officer acknowledges a warning.
    pub fn acknowledge(
        &mut self,
        id: u64,
        by: &str,
        note: &str,
        now: Millis,
    ) -> Result<Transition, ActError> {
        let i = *self.active.get(&id).ok_or(ActError::Missing(id))?;
        self.save_subject(i);
        let s = &mut self.subjects[i as usize];
        let w = s.warning.as_mut().ok_or(ActError::Missing(id))?;
        w.acknowledged = Some(Ack {
            by: by.into(),
            at: now,
            note: note.into(),
        });
        w.updated_at = now;
        Ok(Transition {
            kind: TransitionKind::Acknowledged,
            from: w.level,
            to: w.level,
            at: now,
            warning: w.clone(),
            evidence: Vec::new(),
        })
    }

    /// A duty officer resolves a warning by hand.
    pub fn resolve(
        &mut self,
        id: u64,
        by: &str,
        note: &str,
        now: Millis,
    ) -> Result<Transition, ActError> {
        let i = *self.active.get(&id).ok_or(ActError::Missing(id))?;
        self.save_subject(i);
        let s = &mut self.subjects[i as usize];
        let mut w = s.warning.take().ok_or(ActError::Missing(id))?;
        let from = w.level;
        s.suppressed = s.level();
        w.updated_at = now;
        w.resolved = Some(Resolution {
            by: Some(by.into()),
            at: now,
            note: Some(note.into()),
        });
        self.active.remove(&id);
        Ok(Transition {
            kind: TransitionKind::Resolved,
            from,
            to: from,
            at: now,
            warning: w,
            evidence: Vec::new(),
        })
    }

    /// A sensor as it is at `now`.
    pub fn sensor(&self, key: i64, rule: &Rule, now: Millis) -> SensorView {
        let s = usize::try_from(key)
            .ok()
            .and_then(|k| self.sensors.get(k))
            .copied()
            .unwrap_or_default();
        SensorView {
            ts: s.ts,
            value: s.value,
            level: s.level,
            no_data: s.ts == NEVER || now.saturating_sub(s.ts) > rule.silent_after,
        }
    }

    /// A subject's level now (normal when it has no sensor above normal).
    pub fn subject_level(&self, subject: &Subject) -> Level {
        self.subject_ids
            .get(subject)
            .map(|&i| self.subjects[i as usize].level())
            .unwrap_or_default()
    }

    /// The active warning of a subject.
    pub fn warning_of(&self, subject: &Subject) -> Option<&Warning> {
        self.subject_ids
            .get(subject)
            .and_then(|&i| self.subjects[i as usize].warning.as_ref())
    }

    /// An active warning by id.
    pub fn active_warning(&self, id: u64) -> Option<&Warning> {
        self.active
            .get(&id)
            .and_then(|&i| self.subjects[i as usize].warning.as_ref())
    }

    /// The active warnings, by id.
    pub fn active(&self) -> Vec<&Warning> {
        let mut v: Vec<&Warning> = self
            .active
            .values()
            .filter_map(|&i| self.subjects[i as usize].warning.as_ref())
            .collect();
        v.sort_by_key(|w| w.id);
        v
    }

    /// The next warning id this engine will give.
    pub fn next_warning_id(&self) -> u64 {
        self.next_warning
    }

    /// The sensors that have reported, for saving.
    pub fn export(&self) -> impl Iterator<Item = SavedSensor> + '_ {
        self.sensors
            .iter()
            .enumerate()
            .filter(|(_, s)| s.ts != NEVER)
            .map(|(k, s)| SavedSensor {
                key: k as i64,
                ts: s.ts,
                value: s.value,
                level: s.level,
                lower_since: s.lower_since,
                lower_max: s.lower_max,
            })
    }

    /// The saved states of sensors with keys in `from..to`.
    pub fn export_range(&self, from: i64, to: i64) -> Vec<SavedSensor> {
        let lo = usize::try_from(from.max(0))
            .unwrap_or(0)
            .min(self.sensors.len());
        let hi = usize::try_from(to.max(0))
            .unwrap_or(0)
            .min(self.sensors.len());
        self.sensors[lo..hi]
            .iter()
            .enumerate()
            .filter(|(_, s)| s.ts != NEVER)
            .map(|(i, s)| SavedSensor {
                key: (lo + i) as i64,
                ts: s.ts,
                value: s.value,
                level: s.level,
                lower_since: s.lower_since,
                lower_max: s.lower_max,
            })
            .collect()
    }

    /// Forgets what moved since the last [`Engine::finish`] without making
    /// transitions (after replaying readings whose transitions are already kept).
    pub fn settle(&mut self) {
        for i in std::mem::take(&mut self.touched) {
            let s = &mut self.subjects[i as usize];
            s.touched = false;
            s.evidence.clear();
        }
    }

    /// A saved sensor back, with its subjects now (at start, before any reading).
    pub fn import(&mut self, saved: SavedSensor, subjects: &[Subject]) {
        if !(0..MAX_SENSOR_KEY).contains(&saved.key) {
            return;
        }
        let k = saved.key as usize;
        if self.sensors.len() <= k {
            self.sensors.resize(k + 1, SensorState::default());
        }
        let old = self.sensors[k];
        if old.group != NO_GROUP {
            self.count(old.group, old.level, -1, None);
        }
        let group = self.group_index(subjects);
        self.sensors[k] = SensorState {
            ts: saved.ts,
            value: saved.value,
            lower_since: saved.lower_since,
            group,
            level: saved.level,
            lower_max: saved.lower_max,
        };
        self.count(group, saved.level, 1, None);
    }

    /// Active warnings back from the store (at start, after the sensors), and the next
    /// id to give. A warning whose subject is no longer above normal is resolved by the
    /// next [`Engine::finish`] (its transition then written like any other).
    pub fn restore_warnings(&mut self, warnings: Vec<Warning>, next_id: u64) {
        for w in warnings {
            let i = self.subject_index(&w.subject);
            self.touch(i);
            self.active.insert(w.id, i);
            self.subjects[i as usize].warning = Some(w);
        }
        self.next_warning = self.next_warning.max(next_id);
    }

    /// After a restart: `subject`, without an open warning, was last resolved by hand
    /// at `level`. As [`Engine::resolve`] left it: no new warning at or under that
    /// level, nor under its level now. (Had its level fallen and risen again since,
    /// a newer warning would have been raised; so its level now bounds what the
    /// resolution still holds back, erring on the side of warning.)
    pub fn restore_suppression(&mut self, subject: &Subject, level: Level) {
        let i = self.subject_index(subject);
        let s = &mut self.subjects[i as usize];
        if s.warning.is_none() {
            s.suppressed = level.min(s.level());
        }
    }

    /// Bytes the sensor states hold (for `/health`).
    pub fn approx_bytes(&self) -> usize {
        self.sensors.capacity() * std::mem::size_of::<SensorState>()
            + self.subjects.capacity() * std::mem::size_of::<SubjectState>()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::alerts::rule::{Direction, Mapping};

    const MIN: Millis = 60_000;
    /// 2026-11-22T08:00:00Z: the clock the tests start from (time is passed in, so it
    /// stands still unless a test moves it).
    const T0: Millis = 1_795_334_400_000;

    fn water_level() -> Rule {
        // Blue 2.0, yellow 2.5, orange 3.0, red 4.0; hysteresis 0.1; pending 5 min.
        Rule::from_warn_alarm(Direction::Above, 2.0, 3.0, Mapping::Split).unwrap()
    }

    struct Bench {
        engine: Engine,
        rule: Rule,
        subjects: Vec<Vec<Subject>>,
    }

    impl Bench {
        fn new(rule: Rule) -> Bench {
            Bench {
                engine: Engine::new(),
                rule,
                subjects: vec![vec![Subject::risk_point("R1")]; 8],
            }
        }
        /// One reading of sensor `k` as its own group.
        fn read(&mut self, k: i64, ts: Millis, value: f64) -> (Outcome, Vec<Transition>) {
            let id = format!("S{k}");
            let o = self.engine.apply(
                SensorRef {
                    key: k,
                    id: &id,
                    rule: &self.rule,
                    subjects: &self.subjects[k as usize],
                },
                ts,
                value,
            );
            (o, self.engine.finish(ts))
        }
        fn kinds(&mut self, k: i64, ts: Millis, value: f64) -> Vec<(TransitionKind, Level)> {
            self.read(k, ts, value)
                .1
                .iter()
                .map(|t| (t.kind, t.to))
                .collect()
        }
    }

    #[test]
    fn a_reading_over_a_threshold_raises_at_once_and_a_higher_one_escalates() {
        let mut b = Bench::new(water_level());
        assert!(b.kinds(1, T0, 1.0).is_empty());
        let (o, t) = b.read(1, T0 + MIN, 2.1);
        assert_eq!(
            o,
            Outcome::Applied {
                from: Level::Normal,
                to: Level::Blue
            }
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].kind, TransitionKind::Raised);
        assert_eq!(t[0].warning.subject, Subject::risk_point("R1"));
        assert_eq!(t[0].evidence.len(), 1);
        assert_eq!(t[0].evidence[0].sensor_id, "S1");
        assert_eq!(t[0].evidence[0].value, 2.1);
        assert_eq!(t[0].evidence[0].threshold, Some(2.0));
        assert_eq!(
            b.kinds(1, T0 + 2 * MIN, 3.2),
            vec![(TransitionKind::Escalated, Level::Orange)]
        );
        let w = b.engine.warning_of(&Subject::risk_point("R1")).unwrap();
        assert_eq!((w.level, w.peak, w.id), (Level::Orange, Level::Orange, 1));
    }

    #[test]
    fn a_forgotten_sensor_no_longer_counts() {
        let mut b = Bench::new(water_level());
        b.kinds(1, T0, 3.2);
        b.kinds(2, T0, 2.1);
        assert_eq!(b.engine.keys().collect::<Vec<_>>(), vec![1, 2]);
        let mut forget = |k: i64| -> Vec<(TransitionKind, Level)> {
            b.engine.forget(k);
            let t = b.engine.finish(T0 + MIN);
            t.iter().map(|t| (t.kind, t.to)).collect()
        };
        // The orange sensor deleted: down to blue at once (nothing left to wait for).
        assert_eq!(forget(1), vec![(TransitionKind::DeEscalated, Level::Blue)]);
        assert_eq!(forget(2), vec![(TransitionKind::Resolved, Level::Normal)]);
        assert_eq!(b.engine.keys().count(), 0);
        assert!(b.engine.warning_of(&Subject::risk_point("R1")).is_none());
    }

    #[test]
    fn below_rules_warn_on_falling_values() {
        let rule = Rule::from_warn_alarm(Direction::Below, 0.3, 0.1, Mapping::Split).unwrap();
        let mut b = Bench::new(rule);
        assert!(b.kinds(1, T0, 0.6).is_empty());
        assert_eq!(
            b.kinds(1, T0 + MIN, 0.05),
            vec![(TransitionKind::Raised, Level::Orange)]
        );
    }

    #[test]
    fn a_value_flapping_around_a_threshold_makes_one_warning() {
        let mut b = Bench::new(water_level());
        let mut all = Vec::new();
        for (i, v) in [2.05, 1.95, 2.02, 1.5, 2.01, 1.7, 2.0, 1.6, 2.1, 1.8]
            .iter()
            .enumerate()
        {
            all.extend(b.kinds(1, T0 + i as Millis * 30_000, *v));
        }
        assert_eq!(all, vec![(TransitionKind::Raised, Level::Blue)]);
    }

    #[test]
    fn a_warning_resolves_itself_only_after_the_pending_period_of_normal_readings() {
        let mut b = Bench::new(water_level());
        b.kinds(1, T0, 2.6);
        // Normal from T0 + 1 min: not resolved until 5 minutes of normal readings.
        for m in 1..6 {
            assert!(b.kinds(1, T0 + m * MIN, 1.0).is_empty(), "minute {m}");
        }
        let (_, t) = b.read(1, T0 + 6 * MIN, 1.0);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].kind, TransitionKind::Resolved);
        assert_eq!(t[0].from, Level::Yellow);
        assert_eq!(t[0].warning.resolved.as_ref().unwrap().by, None);
        assert!(!t[0].warning.is_active());
        assert!(b.engine.active().is_empty());
        // A new episode is a new warning.
        let (_, t) = b.read(1, T0 + 7 * MIN, 2.2);
        assert_eq!(t[0].kind, TransitionKind::Raised);
        assert_eq!(t[0].warning.id, 2);
    }

    #[test]
    fn a_high_reading_during_the_pending_period_restarts_it() {
        let mut b = Bench::new(water_level());
        b.kinds(1, T0, 2.6);
        b.kinds(1, T0 + MIN, 1.0);
        b.kinds(1, T0 + 4 * MIN, 2.7); // back at yellow: the lower run ends
        assert!(b.kinds(1, T0 + 5 * MIN, 1.0).is_empty());
        assert!(b.kinds(1, T0 + 9 * MIN, 1.0).is_empty());
        assert_eq!(
            b.kinds(1, T0 + 10 * MIN, 1.0),
            vec![(TransitionKind::Resolved, Level::Normal)]
        );
    }

    #[test]
    fn a_level_falls_to_the_highest_level_seen_during_the_pending_period() {
        let mut b = Bench::new(water_level());
        b.kinds(1, T0, 4.5); // red
        b.kinds(1, T0 + MIN, 3.1); // orange
        b.kinds(1, T0 + 2 * MIN, 2.1); // blue
        assert!(b.kinds(1, T0 + 5 * MIN, 2.1).is_empty());
        assert_eq!(
            b.kinds(1, T0 + 6 * MIN, 2.1),
            vec![(TransitionKind::DeEscalated, Level::Orange)]
        );
        // Blue since 6 min: 5 more minutes at blue, and it is blue.
        assert!(b.kinds(1, T0 + 10 * MIN, 2.1).is_empty());
        assert_eq!(
            b.kinds(1, T0 + 11 * MIN, 2.1),
            vec![(TransitionKind::DeEscalated, Level::Blue)]
        );
    }

    #[test]
    fn duplicate_out_of_order_and_non_finite_readings_change_nothing() {
        let mut b = Bench::new(water_level());
        b.kinds(1, T0 + 10 * MIN, 1.0);
        assert_eq!(b.read(1, T0 + 10 * MIN, 9.0), (Outcome::Duplicate, vec![]));
        assert_eq!(b.read(1, T0, 9.0), (Outcome::OutOfOrder, vec![]));
        assert_eq!(
            b.read(1, T0 + 11 * MIN, f64::NAN),
            (Outcome::NotFinite, vec![])
        );
        assert_eq!(
            b.read(1, T0 + 11 * MIN, f64::INFINITY),
            (Outcome::NotFinite, vec![])
        );
        let v = b.engine.sensor(1, &b.rule, T0 + 11 * MIN);
        assert_eq!(
            (v.ts, v.value, v.level),
            (T0 + 10 * MIN, 1.0, Level::Normal)
        );
        // The out-of-order high value did not move the sensor back in time either.
        assert!(b.engine.active().is_empty());
    }

    #[test]
    fn a_silent_sensor_has_no_data_and_never_reported_is_no_data_too() {
        let mut b = Bench::new(water_level());
        assert!(b.engine.sensor(1, &b.rule, T0).no_data);
        b.kinds(1, T0, 2.6);
        assert!(!b.engine.sensor(1, &b.rule, T0 + 10 * MIN).no_data);
        let later = b.engine.sensor(1, &b.rule, T0 + 10 * MIN + 1);
        assert!(later.no_data);
        // Silence does not resolve the warning: no data is not normal.
        assert_eq!(later.level, Level::Yellow);
        assert_eq!(b.engine.active().len(), 1);
    }

    #[test]
    fn a_subject_is_at_the_worst_level_of_its_sensors() {
        let mut b = Bench::new(water_level());
        b.kinds(1, T0, 2.1);
        assert_eq!(
            b.kinds(2, T0, 3.5),
            vec![(TransitionKind::Escalated, Level::Orange)]
        );
        // Sensor 1 going normal changes nothing: sensor 2 is still orange.
        for m in 1..=6 {
            assert!(b.kinds(1, T0 + m * MIN, 1.0).is_empty());
        }
        assert_eq!(
            b.engine.subject_level(&Subject::risk_point("R1")),
            Level::Orange
        );
    }

    #[test]
    fn a_pipeline_sensor_warns_on_its_pipeline_and_the_risk_points_attached_to_it() {
        let mut b = Bench::new(water_level());
        b.subjects[3] = vec![
            Subject::pipeline("L1"),
            Subject::risk_point("R7"),
            Subject::risk_point("R8"),
        ];
        let t = b.read(3, T0, 3.0).1;
        let mut subjects: Vec<_> = t.iter().map(|t| t.warning.subject.clone()).collect();
        subjects.sort();
        assert_eq!(
            subjects,
            vec![
                Subject::risk_point("R7"),
                Subject::risk_point("R8"),
                Subject::pipeline("L1")
            ]
        );
        assert!(t.iter().all(|t| t.kind == TransitionKind::Raised));
    }

    #[test]
    fn escalation_clears_an_acknowledgement_and_de_escalation_keeps_it() {
        let mut b = Bench::new(water_level());
        let id = b.read(1, T0, 2.1).1[0].warning.id;
        let t = b
            .engine
            .acknowledge(id, "officer", "on my way", T0 + 1)
            .unwrap();
        assert_eq!(t.kind, TransitionKind::Acknowledged);
        assert_eq!(t.warning.state(), "acknowledged");
        b.kinds(1, T0 + MIN, 3.1);
        assert_eq!(b.engine.active_warning(id).unwrap().acknowledged, None);
        b.engine
            .acknowledge(id, "officer", "seen", T0 + MIN + 1)
            .unwrap();
        b.kinds(1, T0 + 2 * MIN, 2.1);
        b.kinds(1, T0 + 7 * MIN, 2.1);
        let w = b.engine.active_warning(id).unwrap();
        assert_eq!(w.level, Level::Blue);
        assert_eq!(w.acknowledged.as_ref().unwrap().note, "seen");
    }

    #[test]
    fn a_warning_resolved_by_hand_is_not_raised_again_at_its_level() {
        let mut b = Bench::new(water_level());
        let id = b.read(1, T0, 2.6).1[0].warning.id;
        let t = b
            .engine
            .resolve(id, "officer", "sensor fouled", T0 + 1)
            .unwrap();
        assert_eq!(t.kind, TransitionKind::Resolved);
        assert_eq!(
            t.warning.resolved.as_ref().unwrap().by.as_deref(),
            Some("officer")
        );
        assert_eq!(
            b.engine.resolve(id, "officer", "again", T0 + 2),
            Err(ActError::Missing(id))
        );
        // Still yellow, then flapping at yellow: nothing.
        assert!(b.kinds(1, T0 + MIN, 2.6).is_empty());
        assert!(b.kinds(1, T0 + 2 * MIN, 2.55).is_empty());
        // Above the level it was resolved at: a new warning.
        let t = b.read(1, T0 + 3 * MIN, 3.3).1;
        assert_eq!(
            (t[0].kind, t[0].to),
            (TransitionKind::Raised, Level::Orange)
        );
        assert_ne!(t[0].warning.id, id);
    }

    #[test]
    fn a_group_changes_a_subject_once_whatever_the_order_of_its_readings() {
        let mut b = Bench::new(water_level());
        let r = b.rule.clone();
        let s = vec![Subject::risk_point("R1")];
        let sensor = |k| SensorRef {
            key: k,
            id: "S",
            rule: &r,
            subjects: &s,
        };
        b.engine.apply(sensor(1), T0, 3.5);
        b.engine.apply(sensor(2), T0, 2.1);
        let t = b.engine.finish(T0);
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].kind, t[0].to),
            (TransitionKind::Raised, Level::Orange)
        );
        assert_eq!(t[0].evidence.len(), 2);
    }

    #[test]
    fn a_sensor_moved_to_another_risk_point_leaves_the_old_one() {
        let mut b = Bench::new(water_level());
        b.kinds(1, T0, 3.5);
        b.subjects[1] = vec![Subject::risk_point("R2")];
        let t = b.read(1, T0 + MIN, 3.5).1;
        let kinds: Vec<_> = t
            .iter()
            .map(|t| (t.kind, t.warning.subject.id.to_string()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (TransitionKind::Resolved, "R1".to_string()),
                (TransitionKind::Raised, "R2".to_string())
            ]
        );
    }

    #[test]
    fn a_rolled_back_group_leaves_the_engine_as_it_was() {
        let mut b = Bench::new(water_level());
        b.kinds(1, T0, 2.1);
        let id = b.engine.active()[0].id;
        let before_sensor = b.engine.sensor(1, &b.rule, T0);
        b.engine.begin();
        b.kinds(1, T0 + MIN, 4.5);
        b.kinds(2, T0 + MIN, 4.5);
        b.engine.acknowledge(id, "x", "y", T0 + MIN).unwrap();
        b.engine.resolve(id, "x", "y", T0 + MIN).unwrap();
        b.engine.rollback();
        assert_eq!(b.engine.sensor(1, &b.rule, T0), before_sensor);
        assert_eq!(b.engine.sensor(2, &b.rule, T0).ts, NEVER);
        let w = b.engine.active_warning(id).unwrap();
        assert_eq!((w.level, &w.acknowledged), (Level::Blue, &None));
        assert_eq!(b.engine.next_warning_id(), 2);
        // And it goes on from there as if the group had never been.
        assert_eq!(
            b.kinds(1, T0 + MIN, 3.1),
            vec![(TransitionKind::Escalated, Level::Orange)]
        );
    }

    #[test]
    fn saved_sensors_and_warnings_come_back_as_they_were() {
        let mut b = Bench::new(water_level());
        b.kinds(1, T0, 3.5);
        b.kinds(1, T0 + MIN, 1.0); // lower run under way
        let saved: Vec<_> = b.engine.export().collect();
        let warnings: Vec<_> = b.engine.active().into_iter().cloned().collect();
        let mut again = Bench::new(water_level());
        for s in &saved {
            again.engine.import(*s, &[Subject::risk_point("R1")]);
        }
        again
            .engine
            .restore_warnings(warnings, b.engine.next_warning_id());
        assert!(again.engine.finish(T0 + MIN).is_empty());
        // Both resolve at the same reading.
        assert!(again.kinds(1, T0 + 5 * MIN, 1.0).is_empty());
        assert_eq!(
            again.kinds(1, T0 + 6 * MIN, 1.0),
            b.kinds(1, T0 + 6 * MIN, 1.0)
        );
    }
}
