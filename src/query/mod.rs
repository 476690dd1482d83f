//! Queries as values, executed over the indexes (issue 8).

pub mod budget;
pub mod crs;
pub mod filter;
pub mod geodesic;
pub mod items;
pub mod near;

pub use budget::{Budget, WorkExceeded};
