//! riskmap: a whole city's risks on one map, from one binary.
//!
//! # Data flow
//!
//! ```text
//!  layers/*.toml ──> config ──> model::LayerDef (validated once)
//!
//!  file ──> ingest (GeoJSON, CSV) ──┐
//!  HTTP edit ──> api ──> app ───────┼──> store (GeoPackage: rows + audit + change feed, one commit)
//!  demo ────────────────────────────┘        │
//!                                            v
//!          app: index (per-layer R-tree) kept in step; readers never wait on writers
//!                                            │
//!                         tiles: clip, generalise, encode MVT, cache (fresh by change logs)
//!                                            │
//!                         api: /tiles, /collections, /items, /, /health, /metrics  <── clients
//! ```
//!
//! # Modules
//!
//! - [`model`]: layers, features, values, boxes, roles, and the validation every feature
//!   passes. No I/O.
//! - [`config`]: `layers/NAME.toml` → validated [`model::LayerDef`]s.
//! - [`store`]: the GeoPackage file (WAL, `synchronous=FULL`): layer tables, audit trail,
//!   change feed, API keys.
//! - [`index`]: per-layer R-tree (rstar) with compact columnar features; exact bbox and
//!   nearest queries; what tiles need precomputed (Web Mercator coordinates, vertex
//!   importance, count pyramid) and where each layer last changed.
//! - [`tiles`]: tile maths, clipping, generalisation, the MVT encoder and the tile cache.
//! - [`query`]: queries as values over the indexes, without HTTP types (issue 8, being
//!   built): geodesic distances, CQL2 filters, coordinate reference systems.
//! - [`ingest`]: streaming readers and the all-or-nothing import.
//! - [`demo`]: the built-in Chongqing demo.
//! - [`sched`]: the CPU priority of bulk work beside requests (used by `ingest` and
//!   `app`).
//! - [`app`]: the running catalogue, where edits go to the store then the index (what
//!   indexing costs prepared before the commit, applied once after it), and where writes
//!   by other processes arrive through the change feed (large ones rebuilt beside the live
//!   layer and swapped in).
//! - [`api`]: HTTP, the only module that knows axum (also serves the built-in map page).
//! - [`cli`]: the `riskmap` command line.
//!
//! Dependencies point one way: `model` ← `index`, `store` ← `ingest`, `demo`, `tiles` ←
//! `app` ← `api` ← `cli`.

pub mod alerts;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod index;
pub mod ingest;
pub mod model;
pub mod query;
pub mod sched;
pub mod store;
pub mod tiles;
