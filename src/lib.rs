//! riskmap: a whole city's risks on one map, from one binary.
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod index;
pub mod ingest;
pub mod model;
pub mod store;
