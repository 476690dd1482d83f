//! Fuzz-style tests on stable Rust, one module per target: the GeoJSON and CSV
//! import readers (and the strict JSON of HTTP edits), the tile path and the items
//! query string (through the router), and the clip–simplify–encode tile pipeline.
//!
//! Each target first replays every file of its corpus (`tests/fuzz/corpus/<target>/`,
//! kept in the repository: regressions), then runs a bounded number of new cases made
//! by a seeded generator: byte-level mutations of corpus entries (see [`engine`]) or,
//! for geometries, proptest strategies and coordinate mutations. Every case checks
//! the target's properties (no panic, no 5xx, errors that name a position or field,
//! tiles that decode strictly inside the buffered extent...). Both the accepting and
//! the refusing paths must be reached: each target counts them and fails if either
//! count is zero, so a generator that only makes garbage cannot pass silently.
//!
//! Environment (all optional):
//! - `RISKMAP_FUZZ_CASES=N`: new cases per target instead of each target's default
//!   (sized so that the whole file runs in well under a minute in a debug build);
//! - `RISKMAP_FUZZ_SEED=S`: another seed (the default is fixed, so runs repeat);
//! - `RISKMAP_FUZZ_SAVE=1`: inputs whose outcome was never seen before (a new kind of
//!   error message, a new acceptance) are written into the corpus as
//!   `found-<hash>` (at most 25 per target and run); review them and commit the
//!   useful ones.
//!
//! A failing case is written to `$TMPDIR/riskmap-fuzz-failures/` (and, with
//! `RISKMAP_FUZZ_SAVE=1`, into the corpus as `crash-<hash>`) and the test fails
//! naming the file. A longer session, in release:
//! `RISKMAP_FUZZ_CASES=50000 RISKMAP_FUZZ_SEED=7 cargo test --release --test fuzz`.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

#[path = "../common/mod.rs"]
mod common;

mod engine;

mod csv_reader;
mod geojson_reader;
mod geometry;
mod query;
mod tile_path;
