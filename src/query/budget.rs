//! How much work one query may do, counted in operations, not seconds: every filter node
//! evaluated on a feature, every candidate the R-tree yields, and for a geometry compared
//! with another, the product of their vertex counts (what the distance and intersection
//! tests cost at worst). A query that would exceed it stops and is refused, naming what
//! to narrow, so no request holds a core for longer than [`Budget::DEFAULT`] operations
//! take (a few seconds at most on this project's 2-core machine; the usual query spends
//! under a thousandth of it). Counted the same way on every machine, so tests can prove
//! the bound.

use std::cell::Cell;

/// The work a query may still do.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    left: Cell<u64>,
    exceeded: Cell<bool>,
}

/// A query needed more work than its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the query needs more than {limit} operations, the most one request may do: narrow it \
     (a bbox, a smaller radius or distance, a simpler filter, or a literal geometry with fewer positions)"
)]
pub struct WorkExceeded {
    pub limit: u64,
}

impl Budget {
    /// 400 million operations: a filter of ten nodes over all 4.52 million sensors spends
    /// about 50 million.
    pub const DEFAULT: u64 = 400_000_000;

    pub fn new(limit: u64) -> Budget {
        Budget {
            limit,
            left: Cell::new(limit),
            exceeded: Cell::new(false),
        }
    }

    /// Spends `units`; `false` (and from then on [`Budget::exceeded`]) when there were
    /// not that many left.
    pub fn charge(&self, units: u64) -> bool {
        match self.left.get().checked_sub(units) {
            Some(left) if !self.exceeded.get() => {
                self.left.set(left);
                true
            }
            _ => {
                self.left.set(0);
                self.exceeded.set(true);
                false
            }
        }
    }

    /// Whether a charge failed: the query must stop and be refused.
    pub fn exceeded(&self) -> bool {
        self.exceeded.get()
    }

    /// The refusal, if a charge failed.
    pub fn check(&self) -> Result<(), WorkExceeded> {
        if self.exceeded() {
            Err(WorkExceeded { limit: self.limit })
        } else {
            Ok(())
        }
    }

    /// Operations spent so far.
    pub fn spent(&self) -> u64 {
        self.limit - self.left.get()
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(Budget::DEFAULT)
    }
}

/// The cost of comparing two geometries of `a` and `b` vertices: their product (at
/// least 1).
pub fn pair_cost(a: usize, b: usize) -> u64 {
    (a.max(1) as u64).saturating_mul(b.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_the_charge_that_would_overdraw_it_and_every_one_after() {
        let b = Budget::new(10);
        assert!(b.charge(4) && b.charge(6));
        assert_eq!(b.spent(), 10);
        assert!(b.check().is_ok());
        assert!(!b.charge(1));
        assert!(b.exceeded());
        assert_eq!(b.check(), Err(WorkExceeded { limit: 10 }));
        assert!(!b.charge(0), "nothing more once exceeded");
        assert_eq!(pair_cost(0, 5), 5);
        assert_eq!(pair_cost(usize::MAX, usize::MAX), u64::MAX);
    }
}
