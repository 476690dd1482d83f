//! Where each layer last changed: the bounding boxes of recent changes, numbered and
//! timed. A cached tile remembers the layer's change number when it was drawn; it is
//! still fresh if no box recorded since then touches the tile. Recording is O(1)
//! whatever the feature's size or the zooms involved; checking a tile costs a
//! comparison when nothing changed, and a scan of the boxes recorded since its number
//! otherwise (a tile found untouched takes the newer number, so the next check starts
//! there).
//!
//! Order matters for "never stale": a writer changes the index first and records the
//! box after, before acknowledging; a tile renderer reads the change number first and
//! the index after. A tile drawn from new data but stamped with an old number is
//! merely re-drawn once more; one drawn from old data is always caught.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::RwLock;

use crate::model::Bbox;

/// How many recent boxes a layer's log of feature changes keeps; a tile older than all
/// of them is re-drawn.
pub const CHANGE_LOG_CAPACITY: usize = 4096;

/// How many recent boxes a layer's log of mark changes keeps (warning levels come and
/// go thousands of times a second in a storm of readings: with 4,096 boxes the log
/// overflowed every half second, and every tile older than that was re-drawn wherever
/// it lay). 48 bytes a box: 3 MiB per marked layer at most, held only after a storm.
pub const MARK_LOG_CAPACITY: usize = 65_536;

/// Milliseconds on the process's monotonic clock, the time changes are recorded at.
pub fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

struct Change {
    version: u64,
    at_ms: u64,
    bbox: Bbox,
}

#[derive(Default)]
struct Inner {
    /// In order of version (and of time).
    boxes: VecDeque<Change>,
    /// Tiles stamped before this number are stale whatever their position (boxes were
    /// dropped, or the whole layer changed).
    floor: u64,
}

/// What changed in an area since a change number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// Nothing up to this change number touches it.
    Untouched(u64),
    /// Touched; the oldest change that touches it was recorded at this time
    /// ([`clock_ms`]).
    Since(u64),
    /// Unknown (the boxes since then were dropped, or the whole layer changed): touched.
    Unknown,
}

/// One layer's change log.
pub struct ChangeLog {
    version: AtomicU64,
    capacity: usize,
    inner: RwLock<Inner>,
}

impl Default for ChangeLog {
    fn default() -> Self {
        ChangeLog::with_capacity(CHANGE_LOG_CAPACITY)
    }
}

impl ChangeLog {
    /// A log keeping the `capacity` most recent boxes.
    pub fn with_capacity(capacity: usize) -> Self {
        ChangeLog {
            version: AtomicU64::new(0),
            capacity: capacity.max(1),
            inner: RwLock::new(Inner::default()),
        }
    }

    /// The current change number (read it before reading the index).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Records that features changed within these boxes (old and new positions), now.
    pub fn record(&self, boxes: &[Bbox]) {
        self.record_at(boxes, clock_ms());
    }

    /// Records that features changed within these boxes at `at_ms` ([`clock_ms`]; not
    /// before the last record's).
    pub fn record_at(&self, boxes: &[Bbox], at_ms: u64) {
        if boxes.is_empty() {
            return;
        }
        let mut inner = self.inner.write();
        let v = self.version.load(Ordering::Acquire) + 1;
        let at_ms = inner.boxes.back().map_or(at_ms, |c| c.at_ms.max(at_ms));
        for b in boxes {
            inner.boxes.push_back(Change {
                version: v,
                at_ms,
                bbox: *b,
            });
        }
        while inner.boxes.len() > self.capacity {
            if let Some(old) = inner.boxes.pop_front() {
                inner.floor = inner.floor.max(old.version);
            }
        }
        self.version.store(v, Ordering::Release);
    }

    /// Records that the whole layer changed (a reload).
    pub fn record_all(&self) {
        let mut inner = self.inner.write();
        let v = self.version.load(Ordering::Acquire) + 1;
        inner.boxes.clear();
        inner.floor = v;
        self.version.store(v, Ordering::Release);
    }

    /// Whether something stamped `since` and covering `area` is still current.
    pub fn fresh(&self, since: u64, area: &Bbox) -> bool {
        matches!(self.touch(since, area), Touch::Untouched(_))
    }

    /// What changed in `area` since change number `since`.
    pub fn touch(&self, since: u64, area: &Bbox) -> Touch {
        let now = self.version();
        if since >= now {
            return Touch::Untouched(now);
        }
        let inner = self.inner.read();
        if since < inner.floor {
            return Touch::Unknown;
        }
        let first = inner.boxes.partition_point(|c| c.version <= since);
        for c in inner.boxes.range(first..) {
            if c.version > now {
                // Recorded after `now` was read: the next check sees it.
                break;
            }
            if c.bbox.intersects(area) {
                return Touch::Since(c.at_ms);
            }
        }
        Touch::Untouched(now)
    }

    /// How many boxes were recorded at or after `since_ms` ([`clock_ms`]).
    pub fn recorded_since(&self, since_ms: u64) -> usize {
        let inner = self.inner.read();
        inner.boxes.len() - inner.boxes.partition_point(|c| c.at_ms < since_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x: f64) -> Bbox {
        Bbox::new(x, 29.0, x + 0.1, 29.1).unwrap()
    }

    #[test]
    fn only_tiles_touched_by_later_changes_are_stale() {
        let log = ChangeLog::default();
        let v0 = log.version();
        log.record(&[b(106.0)]);
        assert!(log.fresh(v0, &b(107.0)));
        assert!(!log.fresh(v0, &b(106.05)));
        let v1 = log.version();
        assert!(log.fresh(v1, &b(106.05)));
        log.record_all();
        assert!(!log.fresh(v1, &b(107.0)));
        let v2 = log.version();
        for i in 0..CHANGE_LOG_CAPACITY + 1 {
            log.record(&[b(100.0 + i as f64 * 1e-4)]);
        }
        assert!(
            !log.fresh(v2, &b(120.0)),
            "older than the kept boxes: stale"
        );
    }

    #[test]
    fn a_touch_tells_when_the_oldest_change_over_an_area_was_recorded() {
        let log = ChangeLog::with_capacity(8);
        let v0 = log.version();
        log.record_at(&[b(106.0)], 1_000);
        log.record_at(&[b(107.0)], 1_200);
        log.record_at(&[b(106.02), b(108.0)], 1_500);
        let now = log.version();
        assert_eq!(log.touch(v0, &b(106.05)), Touch::Since(1_000));
        assert_eq!(log.touch(v0 + 1, &b(106.05)), Touch::Since(1_500));
        assert_eq!(log.touch(v0, &b(109.0)), Touch::Untouched(now));
        assert_eq!(log.touch(now, &b(106.05)), Touch::Untouched(now));
        // A clock going back is taken as the last time recorded (times stay in order).
        log.record_at(&[b(110.0)], 900);
        assert_eq!(log.touch(now, &b(110.0)), Touch::Since(1_500));
        assert_eq!(log.recorded_since(1_200), 4);
        assert_eq!(log.recorded_since(1_501), 0);
        // Beyond the capacity, what was dropped is unknown.
        for i in 0..8 {
            log.record_at(&[b(120.0 + i as f64)], 2_000);
        }
        assert_eq!(log.touch(v0, &b(109.0)), Touch::Unknown);
        assert_eq!(log.recorded_since(0), 8);
    }
}
