//! Queries as values, executed over the indexes.

pub mod crs;
