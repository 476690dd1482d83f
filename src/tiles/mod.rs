//! Vector tiles: tile maths, clipping, generalisation (simplification, clusters, byte
//! budgets), a hand-written MVT 2.1 encoder, and a cache that never serves a tile an
//! acknowledged edit has made stale. Plain functions over the index; `api` serves
//! them over HTTP.

pub mod cache;
pub mod clip;
pub mod coord;
pub mod mvt;
pub mod render;

use std::sync::Arc;

pub use cache::{CachedTile, Currency, Lookup, TileCache, TileKey};
pub use coord::{EXTENT, MAX_ZOOM, TileCoord, TileError};
pub use render::{LayerStats, Rendered, render};

use crate::index::LayerState;
use crate::model::Bbox;

/// At most this many layers in one composite tile.
pub const MAX_LAYERS_PER_TILE: usize = 16;

/// Why a layer list was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LayerListError {
    #[error("no layer named {0:?}")]
    Unknown(String),
    #[error("layer {0:?} is listed twice")]
    Repeated(String),
    #[error("at most {MAX_LAYERS_PER_TILE} layers per tile")]
    TooMany,
    #[error("the layer list is empty")]
    Empty,
}

/// Resolves `a,b,c` against the catalogue, in the order given.
pub fn resolve<'a>(
    spec: &str,
    layers: &'a [std::sync::Arc<LayerState>],
) -> Result<Vec<&'a LayerState>, LayerListError> {
    let mut out: Vec<&LayerState> = Vec::new();
    for name in spec.split(',') {
        if name.is_empty() {
            return Err(LayerListError::Empty);
        }
        let l = layers
            .iter()
            .find(|l| l.def.name == name)
            .ok_or_else(|| LayerListError::Unknown(name.chars().take(64).collect()))?;
        if out.iter().any(|o| o.def.name == name) {
            return Err(LayerListError::Repeated(name.to_string()));
        }
        out.push(&**l);
        if out.len() > MAX_LAYERS_PER_TILE {
            return Err(LayerListError::TooMany);
        }
    }
    Ok(out)
}

/// Whether a cached copy answered or the tile was drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Cache,
    Drawn,
}

/// The tile for `layers` at `coord`: from the cache when fresh, else drawn (change
/// numbers read before the index, see `index::ChangeLog`) and cached.
pub fn tile(
    cache: &TileCache,
    spec: &Arc<str>,
    layers: &[&LayerState],
    coord: TileCoord,
) -> (Arc<CachedTile>, Source) {
    let key = TileKey {
        layers: spec.clone(),
        coord,
    };
    if let Some(t) = cache.get(&key, layers) {
        return (t, Source::Cache);
    }
    let stamps: Vec<u64> = (layers.iter().map(|l| l.changes.version()))
        .chain(layers.iter().map(|l| l.mark_changes.version()))
        .collect();
    let buffer = layers.iter().map(|l| l.def.tiles.buffer).max().unwrap_or(0);
    let area: Bbox = coord.lonlat_bbox(buffer);
    let drawn = render(layers, coord);
    let t = Arc::new(CachedTile::new(stamps, area, &drawn.bytes));
    cache.insert(key, t.clone());
    (t, Source::Drawn)
}
