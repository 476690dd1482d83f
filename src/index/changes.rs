//! Where each layer last changed: the bounding boxes of recent edits, numbered. A
//! cached tile remembers the layer's change number when it was drawn; it is still
//! fresh if no box recorded since then touches the tile. Recording is O(1) whatever
//! the feature's size or the zooms involved; checking a tile costs a comparison when
//! nothing changed, and a scan of the recent boxes otherwise.
//!
//! Order matters for "never stale": a writer changes the index first and records the
//! box after, before acknowledging; a tile renderer reads the change number first and
//! the index after. A tile drawn from new data but stamped with an old number is
//! merely re-drawn once more; one drawn from old data is always caught.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::model::Bbox;

/// How many recent boxes a layer keeps; a tile older than all of them is re-drawn.
pub const CHANGE_LOG_CAPACITY: usize = 4096;

#[derive(Default)]
struct Inner {
    boxes: VecDeque<(u64, Bbox)>,
    /// Tiles stamped at or before this number are stale whatever their position
    /// (boxes were dropped, or the whole layer changed).
    floor: u64,
}

/// One layer's change log.
#[derive(Default)]
pub struct ChangeLog {
    version: AtomicU64,
    inner: RwLock<Inner>,
}

impl ChangeLog {
    /// The current change number (read it before reading the index).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Records that features changed within these boxes (old and new positions).
    pub fn record(&self, boxes: &[Bbox]) {
        if boxes.is_empty() {
            return;
        }
        let mut inner = self.inner.write();
        let v = self.version.load(Ordering::Acquire) + 1;
        for b in boxes {
            inner.boxes.push_back((v, *b));
        }
        while inner.boxes.len() > CHANGE_LOG_CAPACITY {
            if let Some((old, _)) = inner.boxes.pop_front() {
                inner.floor = inner.floor.max(old);
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
        if since == self.version() {
            return true;
        }
        let inner = self.inner.read();
        if since < inner.floor {
            return false;
        }
        !inner
            .boxes
            .iter()
            .any(|(v, b)| *v > since && b.intersects(area))
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
}
