//! Queries as values, executed over the indexes (issue 8).

pub mod geodesic;
