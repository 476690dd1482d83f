//! The tile cache: encoded, gzip-compressed tiles kept within a memory budget (moka,
//! weighed by bytes), each stamped with its layers' change numbers. A hit is served
//! only if no change since the stamp touches the tile (see `index::ChangeLog`), so an
//! edit is visible in every tile it affects as soon as the edit is acknowledged.

use std::io::Write;
use std::sync::Arc;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::coord::TileCoord;
use crate::index::LayerState;
use crate::model::Bbox;

/// A cached tile's address: the layer list as requested (its order is the order of
/// MVT layers) and the tile.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TileKey {
    pub layers: Arc<str>,
    pub coord: TileCoord,
}

/// A drawn tile ready to send.
#[derive(Debug)]
pub struct CachedTile {
    /// Change number of each layer when drawn (in request order).
    pub stamps: Vec<u64>,
    /// The area whose changes make it stale: the tile grown by the largest buffer.
    pub area: Bbox,
    /// gzip-compressed MVT; `None` for an empty tile.
    pub gzip: Option<bytes::Bytes>,
    /// Size before compression.
    pub raw_len: usize,
    /// Strong validator of the uncompressed body: CRC-32, a 64-bit SipHash (fixed
    /// keys, so stable across restarts) and the length.
    pub etag: String,
    /// The gzip body's validator (a different representation needs its own).
    pub etag_gzip: String,
}

impl CachedTile {
    pub fn new(stamps: Vec<u64>, area: Bbox, raw: &[u8]) -> Self {
        let sip = {
            use std::hash::Hasher;
            #[allow(deprecated)] // SipHasher: fixed keys on purpose (stable validators)
            let mut h = std::hash::SipHasher::new();
            h.write(raw);
            h.finish()
        };
        let tag = format!("{:08x}{sip:016x}-{:x}", crc32fast::hash(raw), raw.len());
        let (etag, etag_gzip) = (format!("\"{tag}\""), format!("\"{tag}-gz\""));
        let gzip = if raw.is_empty() {
            None
        } else {
            // Level 1: most of the size saving at a fraction of the CPU of level 6.
            let mut e = GzEncoder::new(Vec::with_capacity(raw.len() / 2 + 64), Compression::fast());
            // Writing into a Vec cannot fail.
            let _ = e.write_all(raw);
            Some(bytes::Bytes::from(e.finish().unwrap_or_default()))
        };
        CachedTile {
            stamps,
            area,
            gzip,
            raw_len: raw.len(),
            etag,
            etag_gzip,
        }
    }

    /// Whether every layer is unchanged where this tile lies.
    pub fn fresh(&self, layers: &[&LayerState]) -> bool {
        layers
            .iter()
            .zip(&self.stamps)
            .all(|(l, &since)| l.changes.fresh(since, &self.area))
    }
}

/// The cache.
pub struct TileCache {
    inner: moka::sync::Cache<TileKey, Arc<CachedTile>>,
}

impl TileCache {
    /// A cache holding at most `max_bytes` of compressed tiles (plus bookkeeping).
    pub fn new(max_bytes: u64) -> Self {
        let inner = moka::sync::Cache::builder()
            .weigher(|_k: &TileKey, v: &Arc<CachedTile>| {
                (v.gzip.as_ref().map_or(0, |b| b.len()) + 256).min(u32::MAX as usize) as u32
            })
            .max_capacity(max_bytes)
            .build();
        TileCache { inner }
    }

    /// A cached tile still fresh for `layers`; stale entries are dropped.
    pub fn get(&self, key: &TileKey, layers: &[&LayerState]) -> Option<Arc<CachedTile>> {
        let t = self.inner.get(key)?;
        if t.fresh(layers) {
            Some(t)
        } else {
            self.inner.invalidate(key);
            None
        }
    }

    pub fn insert(&self, key: TileKey, tile: Arc<CachedTile>) {
        self.inner.insert(key, tile);
    }

    /// Approximate bytes held.
    pub fn weighted_size(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.weighted_size()
    }

    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }
}
