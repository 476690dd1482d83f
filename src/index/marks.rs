//! Marks on a layer's features that do not come from its table: the warning level a
//! risk point or a pipeline is at. Tiles draw a mark as a property of the feature
//! (`warning_level`) and a cluster carries the highest mark inside its cell.
//!
//! A feature is marked by fid, at a world position (a point's own; for a line, a
//! point on it), kept in a small R-tree so a cluster cell finds its highest mark
//! without walking every mark. Levels are small numbers (0 is no mark), named by the
//! caller.

use std::collections::HashMap;

use rstar::{AABB, RTree, primitives::GeomWithData};

type Entry = GeomWithData<[f64; 2], i64>;

/// One layer's marks.
#[derive(Default)]
pub struct Marks {
    by_fid: HashMap<i64, (u8, [f64; 2])>,
    tree: RTree<Entry>,
}

impl Marks {
    /// Sets `fid`'s mark (0 removes it) at `world` (world coordinates, 0..1 from the
    /// north-west corner).
    pub fn set(&mut self, fid: i64, level: u8, world: [f64; 2]) {
        if let Some((_, old)) = self.by_fid.remove(&fid) {
            self.tree.remove(&GeomWithData::new(old, fid));
        }
        if level > 0 && world.iter().all(|c| c.is_finite()) {
            self.by_fid.insert(fid, (level, world));
            self.tree.insert(GeomWithData::new(world, fid));
        }
    }

    /// The mark of `fid` (0: none).
    pub fn get(&self, fid: i64) -> u8 {
        self.by_fid.get(&fid).map_or(0, |m| m.0)
    }

    /// The highest mark inside world bounds `[min_x, min_y, max_x, max_y]`.
    pub fn max_in(&self, b: [f64; 4]) -> u8 {
        if self.by_fid.is_empty() {
            return 0;
        }
        let env = AABB::from_corners([b[0], b[1]], [b[2], b[3]]);
        self.tree
            .locate_in_envelope(&env)
            .map(|e| self.get(e.data))
            .max()
            .unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.by_fid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_fid.is_empty()
    }

    pub fn clear(&mut self) {
        *self = Marks::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_set_moved_and_cleared_and_cells_find_their_highest() {
        let mut m = Marks::default();
        m.set(1, 2, [0.1, 0.1]);
        m.set(2, 4, [0.2, 0.2]);
        m.set(3, 1, [0.8, 0.8]);
        assert_eq!(m.max_in([0.0, 0.0, 0.5, 0.5]), 4);
        m.set(2, 0, [0.2, 0.2]);
        assert_eq!(m.max_in([0.0, 0.0, 0.5, 0.5]), 2);
        m.set(1, 3, [0.9, 0.9]);
        assert_eq!(m.max_in([0.0, 0.0, 0.5, 0.5]), 0);
        assert_eq!(m.max_in([0.5, 0.5, 1.0, 1.0]), 3);
        assert_eq!((m.get(1), m.get(2), m.len()), (3, 0, 2));
    }
}
