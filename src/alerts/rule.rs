//! When a sensor's value is at a warning level: thresholds, direction, hysteresis, the
//! pending period and the silence after which a sensor has "no data".
//!
//! # From two thresholds to four levels
//!
//! A sensor type gives a warn and an alarm threshold (`sensor_types.csv`: `warn_above`,
//! `alarm_above`). How they map onto the four levels is set per type ([`Mapping`]):
//!
//! - `split` (the default): with `d = alarm − warn`, blue at `warn`, yellow at
//!   `warn + d/2`, orange at `alarm`, red at `alarm + d`. A value one full warn-to-alarm
//!   step past the alarm is red.
//! - `warn_alarm`: yellow at `warn`, red at `alarm` (blue and orange are not used).
//! - `explicit`: four thresholds given in order blue, yellow, orange, red.
//!
//! For a `below` rule (a pressure drop, a low pH) everything is mirrored: a value at or
//! under a threshold is at its level, and `d` is negative.
//!
//! # Hysteresis and the pending period
//!
//! Rising is immediate: the first reading at or past a level's threshold puts the sensor
//! at that level. Falling is slow on purpose, so that a value flapping around a
//! threshold makes one warning, not a storm:
//!
//! - to count as under a level, a value must be past its threshold by more than the
//!   hysteresis (default a tenth of `|d|`) in the falling direction;
//! - and the lower readings must go on for the pending period (`clear_after`, default
//!   5 minutes, measured between readings' own timestamps) before the level drops, to
//!   the highest level seen during that period.

use serde::{Deserialize, Serialize};

use super::Level;

/// Milliseconds since the Unix epoch (UTC), the time of readings and transitions.
pub type Millis = i64;

/// Which side of the thresholds is bad.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Above,
    Below,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Above => "above",
            Direction::Below => "below",
        }
    }
}

/// How a type's warn and alarm thresholds become the four levels (see the module
/// comment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mapping {
    #[default]
    Split,
    WarnAlarm,
}

/// Default pending period before a level drops.
pub const DEFAULT_CLEAR_AFTER: Millis = 5 * 60 * 1000;
/// Default silence after which a sensor has no data.
pub const DEFAULT_SILENT_AFTER: Millis = 10 * 60 * 1000;

/// The rule of one sensor type (or of one sensor that overrides its type's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub direction: Direction,
    /// Thresholds of blue, yellow, orange and red, in the sensor's unit; monotonic in
    /// the rule's direction (equal neighbours leave the lower level unused).
    pub thresholds: [f64; 4],
    /// In the sensor's unit, ≥ 0.
    pub hysteresis: f64,
    /// The pending period: lower readings for this long before a level drops.
    pub clear_after: Millis,
    /// A sensor silent for longer has no data.
    pub silent_after: Millis,
}

/// Why a rule is refused (the field and the reason).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RuleError {
    pub field: &'static str,
    pub reason: String,
}

fn bad(field: &'static str, reason: impl Into<String>) -> RuleError {
    RuleError {
        field,
        reason: reason.into(),
    }
}

impl Rule {
    /// The rule from a warn and an alarm threshold through `mapping`, with the default
    /// hysteresis and periods.
    pub fn from_warn_alarm(
        direction: Direction,
        warn: f64,
        alarm: f64,
        mapping: Mapping,
    ) -> Result<Rule, RuleError> {
        if !warn.is_finite() {
            return Err(bad("warn", format!("{warn} is not a finite number")));
        }
        if !alarm.is_finite() {
            return Err(bad("alarm", format!("{alarm} is not a finite number")));
        }
        let d = alarm - warn;
        let wrong_way = match direction {
            Direction::Above => d < 0.0,
            Direction::Below => d > 0.0,
        };
        if wrong_way {
            return Err(bad(
                "alarm",
                format!(
                    "{alarm} is not {} the warn threshold {warn} (direction {})",
                    match direction {
                        Direction::Above => "at or above",
                        Direction::Below => "at or below",
                    },
                    direction.name()
                ),
            ));
        }
        let thresholds = match mapping {
            Mapping::Split => [warn, warn + d / 2.0, alarm, alarm + d],
            Mapping::WarnAlarm => [warn, warn, alarm, alarm],
        };
        Rule::new(
            direction,
            thresholds,
            d.abs() / 10.0,
            DEFAULT_CLEAR_AFTER,
            DEFAULT_SILENT_AFTER,
        )
    }

    /// A rule checked: finite thresholds in order, hysteresis ≥ 0, periods ≥ 0 and a
    /// silence of at least a second.
    pub fn new(
        direction: Direction,
        thresholds: [f64; 4],
        hysteresis: f64,
        clear_after: Millis,
        silent_after: Millis,
    ) -> Result<Rule, RuleError> {
        for (t, level) in thresholds.iter().zip(Level::WARNINGS) {
            if !t.is_finite() {
                return Err(bad(
                    "thresholds",
                    format!("the {level} threshold {t} is not a finite number"),
                ));
            }
        }
        for w in thresholds.windows(2) {
            let ordered = match direction {
                Direction::Above => w[0] <= w[1],
                Direction::Below => w[0] >= w[1],
            };
            if !ordered {
                return Err(bad(
                    "thresholds",
                    format!(
                        "{thresholds:?} are not in order blue, yellow, orange, red for direction {}",
                        direction.name()
                    ),
                ));
            }
        }
        if !(hysteresis.is_finite() && hysteresis >= 0.0) {
            return Err(bad(
                "hysteresis",
                format!("{hysteresis} is not a number ≥ 0"),
            ));
        }
        if clear_after < 0 {
            return Err(bad("clear_after_s", "must be ≥ 0"));
        }
        if silent_after < 1000 {
            return Err(bad("silent_after_s", "must be at least 1 second"));
        }
        Ok(Rule {
            direction,
            thresholds,
            hysteresis,
            clear_after,
            silent_after,
        })
    }

    /// True when `value` is at or past `threshold` in the rule's direction.
    fn past(&self, value: f64, threshold: f64) -> bool {
        match self.direction {
            Direction::Above => value >= threshold,
            Direction::Below => value <= threshold,
        }
    }

    /// The level of `value` for a sensor now at `current`: the highest level whose
    /// threshold it reaches, or `current` (or a level under it) as long as the value
    /// stays within the hysteresis of that level's threshold.
    pub fn level(&self, value: f64, current: Level) -> Level {
        let h = match self.direction {
            Direction::Above => -self.hysteresis,
            Direction::Below => self.hysteresis,
        };
        let mut best = Level::Normal;
        for (i, level) in Level::WARNINGS.iter().enumerate() {
            let t = self.thresholds[i];
            let holding = *level <= current && self.past(value, t + h);
            if self.past(value, t) || holding {
                best = *level;
            }
        }
        best
    }

    /// The threshold of `level` (`None` for normal).
    pub fn threshold(&self, level: Level) -> Option<f64> {
        level.warning_index().map(|i| self.thresholds[i])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn split_mapping_puts_four_levels_between_and_past_the_two_thresholds() {
        let r = Rule::from_warn_alarm(Direction::Above, 2.0, 3.0, Mapping::Split).unwrap();
        assert_eq!(r.thresholds, [2.0, 2.5, 3.0, 4.0]);
        assert_eq!(r.hysteresis, 0.1);
        let n = Level::Normal;
        assert_eq!(r.level(1.99, n), Level::Normal);
        assert_eq!(r.level(2.0, n), Level::Blue);
        assert_eq!(r.level(2.7, n), Level::Yellow);
        assert_eq!(r.level(3.0, n), Level::Orange);
        assert_eq!(r.level(1e6, n), Level::Red);
    }

    #[test]
    fn below_rules_are_mirrored() {
        let r = Rule::from_warn_alarm(Direction::Below, 0.3, 0.1, Mapping::Split).unwrap();
        assert_eq!(r.level(0.5, Level::Normal), Level::Normal);
        assert_eq!(r.level(0.3, Level::Normal), Level::Blue);
        assert_eq!(r.level(0.1, Level::Normal), Level::Orange);
        assert_eq!(r.level(-0.2, Level::Normal), Level::Red);
        // Hysteresis mirrored too: 0.31 keeps a blue sensor blue, 0.33 does not.
        assert_eq!(r.level(0.31, Level::Blue), Level::Blue);
        assert_eq!(r.level(0.33, Level::Blue), Level::Normal);
    }

    #[test]
    fn warn_alarm_mapping_uses_yellow_and_red_only() {
        let r = Rule::from_warn_alarm(Direction::Above, 20.0, 50.0, Mapping::WarnAlarm).unwrap();
        assert_eq!(r.level(19.0, Level::Normal), Level::Normal);
        assert_eq!(r.level(20.0, Level::Normal), Level::Yellow);
        assert_eq!(r.level(49.0, Level::Normal), Level::Yellow);
        assert_eq!(r.level(50.0, Level::Normal), Level::Red);
    }

    #[test]
    fn hysteresis_holds_a_level_only_near_its_threshold_and_never_raises() {
        let r = Rule::from_warn_alarm(Direction::Above, 2.0, 3.0, Mapping::Split).unwrap();
        assert_eq!(r.level(1.95, Level::Blue), Level::Blue);
        assert_eq!(r.level(1.85, Level::Blue), Level::Normal);
        // Near yellow's threshold but the sensor is only blue: stays blue.
        assert_eq!(r.level(2.45, Level::Blue), Level::Blue);
        assert_eq!(r.level(2.45, Level::Yellow), Level::Yellow);
    }

    #[test]
    fn bad_rules_are_refused_naming_the_field() {
        let e = Rule::from_warn_alarm(Direction::Above, 3.0, 2.0, Mapping::Split).unwrap_err();
        assert_eq!(e.field, "alarm");
        let e = Rule::from_warn_alarm(Direction::Above, f64::NAN, 2.0, Mapping::Split).unwrap_err();
        assert_eq!(e.field, "warn");
        let e = Rule::new(Direction::Above, [1.0, 3.0, 2.0, 4.0], 0.0, 0, 60_000).unwrap_err();
        assert_eq!(e.field, "thresholds");
        let e = Rule::new(Direction::Above, [1.0, 2.0, 3.0, 4.0], -1.0, 0, 60_000).unwrap_err();
        assert_eq!(e.field, "hysteresis");
    }
}
