//! Sensor readings as devices post them: a JSON array or NDJSON lines of
//! `{"sensor_id": "S0000001", "ts": "2026-11-22T08:00:00.000Z", "value": 2.7}`.
//!
//! Each reading is read on its own, so one bad reading is rejected and counted without
//! losing the others (a JSON array that is not JSON at all is refused whole: there is
//! nothing to count). Timestamps are RFC 3339 with an offset, kept to the millisecond
//! (finer digits are cut, not rounded, so a reading never moves forward in time).

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Millis;

/// Most readings one request may carry.
pub const MAX_PER_REQUEST: usize = 100_000;
/// Longest sensor id.
pub const MAX_SENSOR_ID: usize = 64;

/// One reading, read.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub sensor_id: CompactString,
    pub ts: Millis,
    pub value: f64,
}

/// Why a reading was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// Not an object with `sensor_id`, `ts` and `value`, or a `ts` that is not RFC 3339.
    Malformed,
    /// The value is not a finite number (NaN, null, a string...).
    NotFinite,
    UnknownSensor,
    /// The sensor's type has no thresholds loaded: the reading cannot be judged.
    NoRule,
    /// Older than the acceptance window.
    TooOld,
    /// Later than now plus the allowed clock skew.
    InFuture,
    /// The sensor has a reading at this timestamp already.
    Duplicate,
    /// Older than the sensor's latest reading: kept out, so a sensor never goes back in
    /// time.
    OutOfOrder,
}

impl Rejection {
    pub fn name(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::NotFinite => "not_finite",
            Rejection::UnknownSensor => "unknown_sensor",
            Rejection::NoRule => "no_rule",
            Rejection::TooOld => "too_old",
            Rejection::InFuture => "in_future",
            Rejection::Duplicate => "duplicate",
            Rejection::OutOfOrder => "out_of_order",
        }
    }
}

/// A reading not taken: its position in the request (0-based), its sensor when known,
/// the reason and a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensor_id: Option<String>,
    pub reason: Rejection,
    pub message: String,
}

/// The request as a whole could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is not a JSON array of readings: {0}")]
    NotJson(String),
    #[error("the body holds more than {MAX_PER_REQUEST} readings")]
    TooMany,
    #[error("the body holds no reading")]
    Empty,
}

/// How readings are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/json`: one array.
    Array,
    /// `application/x-ndjson`: one object per line.
    Lines,
}

#[derive(Deserialize)]
struct RawReading<'a> {
    #[serde(borrow)]
    sensor_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    ts: std::borrow::Cow<'a, str>,
    value: Box<RawValue>,
}

/// A body read: the readings with their positions in it, in order, and the readings
/// rejected (malformed or not finite).
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub readings: Vec<(usize, Reading)>,
    pub rejected: Vec<Rejected>,
}

/// Reads a body.
pub fn parse(body: &[u8], format: Format) -> Result<Parsed, BodyError> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let mut each = |index: usize, item: &[u8]| {
        if ok.len() + bad.len() >= MAX_PER_REQUEST {
            return Err(BodyError::TooMany);
        }
        match one(item) {
            Ok(r) => ok.push((index, r)),
            Err((sensor_id, reason, message)) => bad.push(Rejected {
                index,
                sensor_id,
                reason,
                message,
            }),
        }
        Ok(())
    };
    match format {
        Format::Array => {
            let items: Vec<&RawValue> =
                serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
            if items.len() > MAX_PER_REQUEST {
                return Err(BodyError::TooMany);
            }
            for (i, item) in items.iter().enumerate() {
                each(i, item.get().as_bytes())?;
            }
        }
        Format::Lines => {
            let mut index = 0;
            for line in body.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                each(index, line)?;
                index += 1;
            }
        }
    }
    if ok.is_empty() && bad.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(Parsed {
        readings: ok,
        rejected: bad,
    })
}

type ItemError = (Option<String>, Rejection, String);

fn one(item: &[u8]) -> Result<Reading, ItemError> {
    let raw: RawReading<'_> = serde_json::from_slice(item).map_err(|e| {
        (
            None,
            Rejection::Malformed,
            format!("not an object with sensor_id, ts and value: {e}"),
        )
    })?;
    let sid = || Some(raw.sensor_id.to_string());
    if raw.sensor_id.is_empty() || raw.sensor_id.len() > MAX_SENSOR_ID {
        return Err((
            None,
            Rejection::Malformed,
            format!("sensor_id must be 1 to {MAX_SENSOR_ID} bytes"),
        ));
    }
    let ts = parse_ts(&raw.ts).ok_or_else(|| {
        (
            sid(),
            Rejection::Malformed,
            format!(
                "ts {:?} is not an RFC 3339 timestamp with an offset (2026-11-22T08:00:00.000Z)",
                raw.ts
            ),
        )
    })?;
    let value = match serde_json::from_str::<f64>(raw.value.get()) {
        Ok(v) if v.is_finite() => v,
        _ => {
            return Err((
                sid(),
                Rejection::NotFinite,
                format!("value {} is not a finite number", raw.value.get()),
            ));
        }
    };
    Ok(Reading {
        sensor_id: CompactString::from(raw.sensor_id.as_ref()),
        ts,
        value,
    })
}

/// An RFC 3339 timestamp as milliseconds since the epoch (sub-millisecond digits cut).
pub fn parse_ts(s: &str) -> Option<Millis> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp() * 1000 + i64::from(t.millisecond()))
}

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds).
pub fn format_ts(ms: Millis) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Which timestamps are taken: from `now − max_age` to `now + max_skew`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub max_age: Millis,
    pub max_skew: Millis,
}

impl Default for Window {
    /// Seven days back (a station that was offline uploads its backlog), five minutes
    /// ahead (clocks drift).
    fn default() -> Self {
        Window {
            max_age: 7 * 86_400_000,
            max_skew: 5 * 60_000,
        }
    }
}

impl Window {
    pub fn check(&self, ts: Millis, now: Millis) -> Result<(), (Rejection, String)> {
        if ts < now.saturating_sub(self.max_age) {
            Err((
                Rejection::TooOld,
                format!(
                    "ts {} is more than {} h old",
                    format_ts(ts),
                    self.max_age / 3_600_000
                ),
            ))
        } else if ts > now.saturating_add(self.max_skew) {
            Err((
                Rejection::InFuture,
                format!(
                    "ts {} is more than {} s ahead of the server's clock ({})",
                    format_ts(ts),
                    self.max_skew / 1000,
                    format_ts(now)
                ),
            ))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn arrays_and_lines_read_the_same_readings() {
        let a = br#"[{"sensor_id":"S0000001","ts":"2026-11-22T08:00:00.000Z","value":2.7},
                     {"sensor_id":"S0000002","ts":"2026-11-22T16:00:00.5+08:00","value":-1}]"#;
        let l = b"{\"sensor_id\":\"S0000001\",\"ts\":\"2026-11-22T08:00:00.000Z\",\"value\":2.7}\r\n\n{\"sensor_id\":\"S0000002\",\"ts\":\"2026-11-22T16:00:00.5+08:00\",\"value\":-1}\n";
        let pa = parse(a, Format::Array).unwrap();
        let pl = parse(l, Format::Lines).unwrap();
        assert!(pa.rejected.is_empty());
        assert_eq!(pa, pl);
        let ra = pa.readings;
        assert_eq!(ra[0].1.ts, 1_795_334_400_000);
        assert_eq!(ra[1].1.ts, 1_795_334_400_500);
        assert_eq!(format_ts(ra[1].1.ts), "2026-11-22T08:00:00.500Z");
    }

    #[test]
    fn bad_readings_are_rejected_one_by_one_with_their_positions() {
        let l = b"{\"sensor_id\":\"S1\",\"ts\":\"2026-11-22T08:00:00Z\",\"value\":NaN}\n\
                  {\"sensor_id\":\"S1\",\"ts\":\"2026-11-22T08:00:00Z\",\"value\":null}\n\
                  {\"sensor_id\":\"S1\",\"ts\":\"2026-11-22 08:00\",\"value\":1}\n\
                  {\"sensor_id\":\"S1\",\"ts\":\"2026-11-22T08:00:00Z\",\"value\":\"3\"}\n\
                  {\"sensor_id\":\"S1\",\"ts\":\"2026-11-22T08:00:00Z\",\"value\":1e999}\n\
                  [1,2]\n\
                  {\"sensor_id\":\"S1\",\"ts\":\"2026-11-22T08:00:00Z\",\"value\":1}\n";
        let Parsed {
            readings: ok,
            rejected: bad,
        } = parse(l, Format::Lines).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].0, 6);
        let got: Vec<(usize, Rejection)> = bad.iter().map(|r| (r.index, r.reason)).collect();
        assert_eq!(
            got,
            vec![
                (0, Rejection::Malformed),
                (1, Rejection::NotFinite),
                (2, Rejection::Malformed),
                (3, Rejection::NotFinite),
                (4, Rejection::NotFinite),
                (5, Rejection::Malformed),
            ]
        );
    }

    #[test]
    fn a_body_that_is_not_json_empty_or_too_big_is_refused_whole() {
        assert!(matches!(
            parse(b"[{", Format::Array),
            Err(BodyError::NotJson(_))
        ));
        assert_eq!(parse(b"[]", Format::Array), Err(BodyError::Empty));
        assert_eq!(parse(b"\n\n", Format::Lines), Err(BodyError::Empty));
        let line = "{\"sensor_id\":\"S1\",\"ts\":\"2026-11-22T08:00:00Z\",\"value\":1}\n";
        let big = line.repeat(MAX_PER_REQUEST + 1);
        assert_eq!(
            parse(big.as_bytes(), Format::Lines),
            Err(BodyError::TooMany)
        );
    }

    #[test]
    fn the_window_refuses_ancient_and_future_timestamps() {
        let w = Window::default();
        let now = 1_795_334_400_000;
        assert!(w.check(now, now).is_ok());
        assert!(w.check(now + 5 * 60_000, now).is_ok());
        assert_eq!(
            w.check(now + 5 * 60_000 + 1, now).unwrap_err().0,
            Rejection::InFuture
        );
        assert_eq!(
            w.check(now - 8 * 86_400_000, now).unwrap_err().0,
            Rejection::TooOld
        );
        assert_eq!(w.check(0, now).unwrap_err().0, Rejection::TooOld);
    }
}
