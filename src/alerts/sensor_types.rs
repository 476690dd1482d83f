//! Sensor types (the city has 254: water level, rainfall, fire, pH, pressure,
//! displacement...) with their unit and thresholds, and the per-sensor overrides of
//! them. Both are a [`RuleSpec`]: the document a planner writes, from which the
//! [`Rule`] the engine runs is made.
//!
//! `sensor_types.csv` (what `chongqing_synth.py` writes) has the columns
//! `type_id,family,name,unit,warn_above,alarm_above`. Also read, all optional:
//! `warn_below,alarm_below` (instead of the `_above` pair: a falling value is bad),
//! `mapping` (`split` or `warn_alarm`), `blue,yellow,orange,red` (explicit thresholds,
//! all four), `hysteresis`, `clear_after_s`, `silent_after_s`. Header names are matched
//! without case; every problem is reported with its line and column.

use serde::{Deserialize, Serialize};

use super::rule::{
    DEFAULT_CLEAR_AFTER, DEFAULT_SILENT_AFTER, Direction, Mapping, Millis, Rule, RuleError,
};

/// Explicit thresholds of the four levels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub blue: f64,
    pub yellow: f64,
    pub orange: f64,
    pub red: f64,
}

/// How a sensor type (or one sensor) is judged, as written by a planner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    #[serde(default)]
    pub direction: Direction,
    pub warn: f64,
    pub alarm: f64,
    #[serde(default)]
    pub mapping: Mapping,
    /// Explicit thresholds; when given, `mapping` is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
    /// In the sensor's unit; default a tenth of `|alarm − warn|`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hysteresis: Option<f64>,
    /// The pending period in seconds; default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_after_s: Option<f64>,
    /// Silence in seconds after which the sensor has no data; default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_after_s: Option<f64>,
}

fn seconds(field: &'static str, s: Option<f64>, default: Millis) -> Result<Millis, RuleError> {
    match s {
        None => Ok(default),
        Some(s) if s.is_finite() && (0.0..=366.0 * 86_400.0).contains(&s) => {
            Ok((s * 1000.0).round() as Millis)
        }
        Some(s) => Err(RuleError {
            field,
            reason: format!("{s} is not a number of seconds between 0 and a year"),
        }),
    }
}

impl RuleSpec {
    /// The rule this spec describes, checked.
    pub fn rule(&self) -> Result<Rule, RuleError> {
        let base = Rule::from_warn_alarm(self.direction, self.warn, self.alarm, self.mapping)?;
        let thresholds = match self.thresholds {
            Some(t) => [t.blue, t.yellow, t.orange, t.red],
            None => base.thresholds,
        };
        Rule::new(
            self.direction,
            thresholds,
            self.hysteresis.unwrap_or(base.hysteresis),
            seconds("clear_after_s", self.clear_after_s, DEFAULT_CLEAR_AFTER)?,
            seconds("silent_after_s", self.silent_after_s, DEFAULT_SILENT_AFTER)?,
        )
    }
}

/// A sensor type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SensorType {
    pub type_id: u32,
    #[serde(default)]
    pub family: String,
    pub name: String,
    pub unit: String,
    #[serde(flatten)]
    pub spec: RuleSpec,
}

/// Longest name, family or unit.
pub const MAX_TEXT: usize = 200;

impl SensorType {
    /// Checks the texts and the rule; the error names the field.
    pub fn check(&self) -> Result<Rule, RuleError> {
        if self.type_id == 0 || self.type_id > 65_535 {
            return Err(RuleError {
                field: "type_id",
                reason: format!("{} is not between 1 and 65535", self.type_id),
            });
        }
        for (field, v, required) in [
            ("name", &self.name, true),
            ("unit", &self.unit, false),
            ("family", &self.family, false),
        ] {
            if required && v.trim().is_empty() {
                return Err(RuleError {
                    field,
                    reason: "is empty".into(),
                });
            }
            if v.chars().count() > MAX_TEXT {
                return Err(RuleError {
                    field,
                    reason: format!("is longer than {MAX_TEXT} characters"),
                });
            }
        }
        self.spec.rule()
    }
}

/// A problem in a sensor-types file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {field}: {reason}")]
pub struct TypeFileError {
    /// 1-based, the header being line 1.
    pub line: u64,
    pub field: String,
    pub reason: String,
}

/// Reads a sensor-types CSV. All problems of all lines are reported at once.
pub fn parse_csv(bytes: &[u8]) -> Result<Vec<SensorType>, Vec<TypeFileError>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut rdr = csv::ReaderBuilder::new().flexible(false).from_reader(bytes);
    let header_err = |reason: String| {
        vec![TypeFileError {
            line: 1,
            field: "header".into(),
            reason,
        }]
    };
    let headers = rdr
        .headers()
        .map_err(|e| header_err(format!("cannot be read as CSV: {e}")))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    const KNOWN: [&str; 17] = [
        "type_id",
        "family",
        "name",
        "unit",
        "warn_above",
        "alarm_above",
        "warn_below",
        "alarm_below",
        "mapping",
        "blue",
        "yellow",
        "orange",
        "red",
        "hysteresis",
        "clear_after_s",
        "silent_after_s",
        "description",
    ];
    if let Some(h) = headers
        .iter()
        .find(|h| !KNOWN.iter().any(|k| h.trim().eq_ignore_ascii_case(k)))
    {
        return Err(header_err(format!(
            "unknown column {h:?} (known: {})",
            KNOWN.join(", ")
        )));
    }
    for need in ["type_id", "name"] {
        if col(need).is_none() {
            return Err(header_err(format!("the column {need} is missing")));
        }
    }
    let above = (col("warn_above"), col("alarm_above"));
    let below = (col("warn_below"), col("alarm_below"));
    let explicit = ["blue", "yellow", "orange", "red"].map(col);
    let has_pair = |p: (Option<usize>, Option<usize>)| p.0.is_some() && p.1.is_some();
    if !has_pair(above) && !has_pair(below) {
        return Err(header_err(
            "give warn_above and alarm_above (or warn_below and alarm_below)".into(),
        ));
    }
    if explicit.iter().any(Option::is_some) && !explicit.iter().all(Option::is_some) {
        return Err(header_err(
            "explicit thresholds need all four columns blue, yellow, orange, red".into(),
        ));
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i as u64 + 2;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                errors.push(TypeFileError {
                    line,
                    field: "record".into(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let mut problems = Vec::new();
        let cell = |c: Option<usize>| c.and_then(|c| rec.get(c)).map(str::trim).unwrap_or("");
        let num = |name: &str, c: Option<usize>, problems: &mut Vec<(String, String)>| {
            let s = cell(c);
            if s.is_empty() {
                return None;
            }
            match s.parse::<f64>() {
                Ok(v) if v.is_finite() => Some(v),
                _ => {
                    problems.push((name.to_string(), format!("{s:?} is not a finite number")));
                    None
                }
            }
        };
        let type_id = match cell(col("type_id")).parse::<u32>() {
            Ok(t) => t,
            Err(_) => {
                problems.push((
                    "type_id".into(),
                    format!("{:?} is not a whole number", cell(col("type_id"))),
                ));
                0
            }
        };
        let before = problems.len();
        let (wa, aa) = (
            num("warn_above", above.0, &mut problems),
            num("alarm_above", above.1, &mut problems),
        );
        let (wb, ab) = (
            num("warn_below", below.0, &mut problems),
            num("alarm_below", below.1, &mut problems),
        );
        let unreadable = problems.len() > before;
        let (direction, warn, alarm) = match (wa, aa, wb, ab) {
            _ if unreadable => (Direction::Above, 0.0, 0.0),
            (Some(w), Some(a), None, None) => (Direction::Above, w, a),
            (None, None, Some(w), Some(a)) => (Direction::Below, w, a),
            (None, None, None, None) => {
                problems.push((
                    "warn_above".into(),
                    "no thresholds: give warn_above and alarm_above, or warn_below and alarm_below"
                        .into(),
                ));
                (Direction::Above, 0.0, 0.0)
            }
            _ => {
                problems.push((
                    "warn_above".into(),
                    "give both thresholds of one direction (above or below), not a mix".into(),
                ));
                (Direction::Above, 0.0, 0.0)
            }
        };
        let mapping = match cell(col("mapping")) {
            "" | "split" => Mapping::Split,
            "warn_alarm" => Mapping::WarnAlarm,
            other => {
                problems.push((
                    "mapping".into(),
                    format!("{other:?} is not split or warn_alarm"),
                ));
                Mapping::Split
            }
        };
        let t = explicit.map(|c| num("thresholds", c, &mut problems));
        let thresholds = match t {
            [Some(blue), Some(yellow), Some(orange), Some(red)] => Some(Thresholds {
                blue,
                yellow,
                orange,
                red,
            }),
            [None, None, None, None] => None,
            _ => {
                problems.push((
                    "blue".into(),
                    "explicit thresholds need all four of blue, yellow, orange, red".into(),
                ));
                None
            }
        };
        let ty = SensorType {
            type_id,
            family: cell(col("family")).to_string(),
            name: cell(col("name")).to_string(),
            unit: cell(col("unit")).to_string(),
            spec: RuleSpec {
                direction,
                warn,
                alarm,
                mapping,
                thresholds,
                hysteresis: num("hysteresis", col("hysteresis"), &mut problems),
                clear_after_s: num("clear_after_s", col("clear_after_s"), &mut problems),
                silent_after_s: num("silent_after_s", col("silent_after_s"), &mut problems),
            },
        };
        if problems.is_empty() {
            if let Err(e) = ty.check() {
                problems.push((e.field.to_string(), e.reason));
            } else if !seen.insert(type_id) {
                problems.push(("type_id".into(), format!("{type_id} is given twice")));
            }
        }
        if problems.is_empty() {
            out.push(ty);
        }
        errors.extend(problems.into_iter().map(|(field, reason)| TypeFileError {
            line,
            field,
            reason,
        }));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::alerts::Level;

    #[test]
    fn the_generators_file_reads_with_the_default_mapping() {
        let csv = "type_id,family,name,unit,warn_above,alarm_above\n\
                   3,water_level,water_level_model_1,m,2.0,3.0\n\
                   4,rainfall,rainfall_model_1,mm_per_h,20,50\n";
        let types = parse_csv(csv.as_bytes()).unwrap();
        assert_eq!(types.len(), 2);
        assert_eq!(types[0].unit, "m");
        let rule = types[1].spec.rule().unwrap();
        assert_eq!(rule.thresholds, [20.0, 35.0, 50.0, 80.0]);
        assert_eq!(rule.level(49.0, Level::Normal), Level::Yellow);
    }

    #[test]
    fn below_rules_explicit_thresholds_and_periods_are_read() {
        let csv = "type_id,name,unit,warn_below,alarm_below,blue,yellow,orange,red,clear_after_s,silent_after_s\n\
                   9,pressure drop,MPa,0.3,0.1,0.3,0.2,0.1,0.05,60,120\n";
        let t = &parse_csv(csv.as_bytes()).unwrap()[0];
        let r = t.spec.rule().unwrap();
        assert_eq!(r.direction, Direction::Below);
        assert_eq!(r.thresholds, [0.3, 0.2, 0.1, 0.05]);
        assert_eq!((r.clear_after, r.silent_after), (60_000, 120_000));
    }

    #[test]
    fn every_problem_of_every_line_is_reported_with_its_line_and_column() {
        let csv = "type_id,name,unit,warn_above,alarm_above,mapping\n\
                   x,a,m,1,2,split\n\
                   2,b,m,3,1,split\n\
                   3,c,m,1,nan,sideways\n\
                   2,d,m,1,2,\n\
                   2,e,m,1,2,\n";
        let e = parse_csv(csv.as_bytes()).unwrap_err();
        let got: Vec<(u64, &str)> = e.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (2, "type_id"),
                (3, "alarm"),
                (4, "alarm_above"),
                (4, "mapping"),
                (6, "type_id")
            ]
        );
        assert!(e[4].reason.contains("given twice"), "{}", e[4].reason);
    }

    #[test]
    fn unknown_columns_and_missing_thresholds_are_refused_in_the_header() {
        let e = parse_csv(b"type_id,name,unit,warn_abve,alarm_above\n").unwrap_err();
        assert_eq!((e[0].line, e[0].field.as_str()), (1, "header"));
        assert!(e[0].reason.contains("warn_abve"));
        let e = parse_csv(b"type_id,name,unit\n").unwrap_err();
        assert!(e[0].reason.contains("warn_above"));
    }
}
