//! Queries as values, executed over the indexes (issue 8).

pub mod filter;
pub mod geodesic;
