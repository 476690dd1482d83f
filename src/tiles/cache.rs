//! The tile cache: encoded, gzip-compressed tiles kept within a memory budget (moka,
//! weighed by bytes), each stamped with its layers' change numbers. A hit is served
//! only if no change since the stamp touches the tile (see `index::ChangeLog`), so an
//! edit is visible in every tile it affects as soon as the edit is acknowledged.
//!
//! Memory: an entry is charged everything it keeps allocated (`entry_weight`): the gzip
//! body, held at its exact size; the key's layer list; the tile record and its stamps,
//! each rounded up as the allocator rounds; and moka's own bookkeeping for one entry.
//! `--tile-cache-mb` therefore bounds the memory the cache really holds, empty tiles
//! included (issue 7: the old charge, body length + 256, was a tenth of the truth for
//! the small tiles of deep zooms, and the gzip body kept the spare capacity of its
//! buffer).

use std::cell::RefCell;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::write::GzEncoder;
use flate2::{Compress, Compression, FlushCompress, Status};

use super::coord::TileCoord;
use crate::index::{LayerState, Touch};
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
    /// Change numbers of each layer (in request order) as of which the tile is known
    /// current: first those of its features' log, then those of its marks' log (see
    /// `LayerState`). Drawn at the numbers read before drawing, moved forward when a
    /// check finds nothing newer touching the tile (the next check starts there).
    pub stamps: Box<[AtomicU64]>,
    /// The area whose changes make it stale: the tile grown by the largest buffer.
    pub area: Bbox,
    /// gzip-compressed MVT, allocated at its exact length; `None` for an empty tile.
    pub gzip: Option<bytes::Bytes>,
    /// Size before compression.
    pub raw_len: usize,
    /// CRC-32 of the uncompressed body.
    crc: u32,
    /// 64-bit SipHash of the uncompressed body (fixed keys, so stable across restarts).
    sip: u64,
}

/// Bytes of moka's bookkeeping for one entry, beyond the key and value themselves: the
/// hash table bucket, the `Arc`'d key, value entry, entry info and deque node, and the
/// frequency sketch's share. Measured with jemalloc's count of allocated bytes: 252 bytes
/// with moka 0.12.16 at 14,000 entries; charged with a margin for the sketch, which
/// doubles in steps (`tests/tile_cache_memory.rs` fails if the real figure outgrows
/// the charge, or if the charge is more than a quarter above it).
pub const ENTRY_OVERHEAD: usize = 320;

/// The bytes an allocator really reserves for a request of `n` bytes: jemalloc's size
/// classes (16-byte steps up to 128 bytes, then four classes per power of two), which
/// glibc's and mimalloc's rounding do not exceed by more than a header word.
pub fn allocation_size(n: usize) -> usize {
    if n == 0 {
        0
    } else if n <= 128 {
        n.next_multiple_of(16)
    } else {
        n.next_multiple_of(n.next_power_of_two() / 8)
    }
}

/// Bytes one cache entry keeps allocated, what the cache charges it against its budget.
pub fn entry_weight(key: &TileKey, tile: &CachedTile) -> usize {
    // `Arc<str>`: two reference counts, then the text.
    let layers = allocation_size(2 * size_of::<usize>() + key.layers.len());
    // `Arc<CachedTile>`: two reference counts, then the record.
    let record = allocation_size(2 * size_of::<usize>() + size_of::<CachedTile>());
    let stamps = allocation_size(size_of_val(&*tile.stamps));
    let body = tile.gzip.as_ref().map_or(0, |b| allocation_size(b.len()));
    ENTRY_OVERHEAD + size_of::<TileKey>() + layers + record + stamps + body
}

thread_local! {
    /// Per drawing thread, one gzip compressor and its output buffer, reused for every
    /// tile. A fresh zlib-rs compressor allocates (and zeroes) about 270 KiB of state at
    /// level 1; made and dropped for each of thousands of tiles a second, those blocks
    /// interleaved with the cache's long-lived small ones and glibc's arenas kept growing
    /// (issue 7). The drawing threads are a fixed few (see `api::tiles`), so this is a
    /// fixed cost: `RENDER_SCRATCH_BYTES` each.
    static GZIP: RefCell<Option<(Compress, Vec<u8>)>> = const { RefCell::new(None) };
}

/// A drawing thread's output buffer is kept between tiles up to this capacity (bytes;
/// the largest tiles are 500 KB raw): a rare huge tile does not pin its buffer.
const KEEP_OUTPUT_BYTES: usize = 256 << 10;

/// gzip at level 1 (most of the size saving at a fraction of the CPU of level 6), as an
/// exact-length buffer.
fn gzip(raw: &[u8]) -> bytes::Bytes {
    let reused = GZIP.with_borrow_mut(|slot| {
        let (c, out) =
            slot.get_or_insert_with(|| (Compress::new_gzip(Compression::fast(), 15), Vec::new()));
        c.reset();
        out.clear();
        // deflate's worst case is a few bytes per 16 KiB block over the input, plus the
        // 18 bytes of gzip header and trailer; the loop grows the buffer if ever needed.
        out.reserve(raw.len() + raw.len() / 64 + 64);
        let ok = loop {
            let consumed = c.total_in() as usize;
            match c.compress_vec(&raw[consumed..], out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => break true,
                Ok(_) => out.reserve(out.capacity().max(64)),
                Err(_) => break false,
            }
        };
        let body = ok.then(|| bytes::Bytes::copy_from_slice(out));
        if out.capacity() > KEEP_OUTPUT_BYTES {
            *out = Vec::new();
        }
        if !ok {
            // A compressor in an unknown state is not reused.
            *slot = None;
        }
        body
    });
    reused.unwrap_or_else(|| gzip_once(raw))
}

/// gzip with a compressor of its own (used if the thread's one fails).
fn gzip_once(raw: &[u8]) -> bytes::Bytes {
    let mut e = GzEncoder::new(Vec::with_capacity(raw.len() / 2 + 64), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = e.write_all(raw);
    let body = e.finish().unwrap_or_default();
    // `Bytes::from(Vec)` would keep the spare capacity: copy to the exact length.
    bytes::Bytes::copy_from_slice(&body)
}

impl CachedTile {
    /// `stamps`: the features' change numbers of the layers, then their marks'.
    pub fn new(stamps: Vec<u64>, area: Bbox, raw: &[u8]) -> Self {
        let sip = {
            use std::hash::Hasher;
            #[allow(deprecated)] // SipHasher: fixed keys on purpose (stable validators)
            let mut h = std::hash::SipHasher::new();
            h.write(raw);
            h.finish()
        };
        CachedTile {
            stamps: stamps.into_iter().map(AtomicU64::new).collect(),
            area,
            gzip: (!raw.is_empty()).then(|| gzip(raw)),
            raw_len: raw.len(),
            crc: crc32fast::hash(raw),
            sip,
        }
    }

    /// Strong validator of the uncompressed body: CRC-32, SipHash and the length.
    /// Formatted when answering rather than kept: two strings per entry would cost
    /// more than the body of most deep-zoom tiles.
    pub fn etag(&self) -> String {
        format!("\"{:08x}{:016x}-{:x}\"", self.crc, self.sip, self.raw_len)
    }

    /// The gzip body's validator (a different representation needs its own).
    pub fn etag_gzip(&self) -> String {
        format!(
            "\"{:08x}{:016x}-{:x}-gz\"",
            self.crc, self.sip, self.raw_len
        )
    }

    /// How current this tile is for `layers` (those it was drawn from, in order).
    pub fn currency(&self, layers: &[&LayerState]) -> Currency {
        let n = layers.len();
        if self.stamps.len() != 2 * n {
            return Currency::Stale;
        }
        let logs = layers
            .iter()
            .map(|l| &l.changes)
            .chain(layers.iter().map(|l| &l.mark_changes));
        let mut behind: Option<u64> = None;
        // Features first: a tile an edit touched is stale whatever its marks.
        for (i, log) in logs.enumerate() {
            let stamp = &self.stamps[i];
            match log.touch(stamp.load(Ordering::Acquire), &self.area) {
                Touch::Untouched(v) => {
                    stamp.fetch_max(v, Ordering::AcqRel);
                }
                Touch::Since(at) if i >= n => behind = Some(behind.map_or(at, |b| b.min(at))),
                Touch::Since(_) | Touch::Unknown => return Currency::Stale,
            }
        }
        match behind {
            None => Currency::Fresh,
            Some(at) => Currency::Behind { since_ms: at },
        }
    }

    /// Whether every layer is unchanged where this tile lies.
    pub fn fresh(&self, layers: &[&LayerState]) -> bool {
        self.currency(layers) == Currency::Fresh
    }
}

/// How current a cached tile is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Currency {
    Fresh,
    /// Only marks changed where it lies, the oldest of those changes at `since_ms`
    /// (`index::clock_ms`).
    Behind {
        since_ms: u64,
    },
    /// Features changed where it lies (or what changed is no longer known).
    Stale,
}

/// What the cache holds for a tile.
pub enum Lookup {
    Fresh(Arc<CachedTile>),
    /// Drawn before warning levels changed where it lies (and nothing else), the
    /// oldest of those changes at `since_ms` (`index::clock_ms`).
    Behind {
        tile: Arc<CachedTile>,
        since_ms: u64,
    },
    /// Drawn before a change that touches it.
    Stale(Arc<CachedTile>),
    Miss,
}

/// The cache.
pub struct TileCache {
    inner: moka::sync::Cache<TileKey, Arc<CachedTile>>,
}

impl TileCache {
    /// A cache whose entries hold at most `max_bytes` in all (see `entry_weight`).
    pub fn new(max_bytes: u64) -> Self {
        let inner = moka::sync::Cache::builder()
            .weigher(|k: &TileKey, v: &Arc<CachedTile>| {
                entry_weight(k, v).min(u32::MAX as usize) as u32
            })
            .max_capacity(max_bytes)
            .build();
        TileCache { inner }
    }

    /// A cached tile still fresh for `layers`.
    pub fn get(&self, key: &TileKey, layers: &[&LayerState]) -> Option<Arc<CachedTile>> {
        match self.lookup(key, layers) {
            Lookup::Fresh(t) => Some(t),
            _ => None,
        }
    }

    /// The cached tile, fresh or stale. A stale entry stays until the tile drawn
    /// again replaces it (or the budget evicts it): it is what a request gets when
    /// drawing is overloaded, rather than no tile at all.
    pub fn lookup(&self, key: &TileKey, layers: &[&LayerState]) -> Lookup {
        let Some(t) = self.inner.get(key) else {
            return Lookup::Miss;
        };
        match t.currency(layers) {
            Currency::Fresh => Lookup::Fresh(t),
            Currency::Behind { since_ms } => Lookup::Behind { tile: t, since_ms },
            Currency::Stale => Lookup::Stale(t),
        }
    }

    /// Forgets every tile (a layer was added or removed: a layer list naming it means
    /// something else now).
    pub fn invalidate_all(&self) {
        self.inner.invalidate_all();
    }

    pub fn insert(&self, key: TileKey, tile: Arc<CachedTile>) {
        self.inner.insert(key, tile);
    }

    /// Bytes held (see `entry_weight`), once pending evictions are done.
    pub fn weighted_size(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.weighted_size()
    }

    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    /// Empties the cache (used by tests and benchmarks to measure what it held).
    pub fn clear(&self) {
        self.inner.invalidate_all();
        self.inner.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gunzip(b: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(b)
            .read_to_end(&mut raw)
            .expect("a valid gzip stream");
        raw
    }

    #[test]
    fn allocation_sizes_follow_the_size_classes() {
        let cases = [
            (0, 0),
            (1, 16),
            (16, 16),
            (17, 32),
            (128, 128),
            (129, 160),
            (160, 160),
            (161, 192),
            (257, 320),
            (1000, 1024),
            (1025, 1280),
            (40_000, 40_960),
        ];
        for (n, want) in cases {
            assert_eq!(allocation_size(n), want, "{n}");
            assert!(allocation_size(n) >= n);
        }
    }

    #[test]
    fn the_reused_compressor_round_trips_every_size_and_keeps_exact_lengths() {
        // Incompressible input (larger than its reserve once headers are added) and
        // repetitive input, small and large, one after the other on one thread.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..600_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let inputs: Vec<Vec<u8>> = vec![
            b"x".to_vec(),
            noise[..300].to_vec(),
            vec![7u8; 100_000],
            noise.clone(),
            b"tile".repeat(10),
        ];
        for raw in &inputs {
            let gz = gzip(raw);
            assert_eq!(gunzip(&gz), *raw, "{} bytes", raw.len());
            assert_eq!(gunzip(&gzip_once(raw)), *raw);
        }
        // The kept buffer never exceeds its cap after a huge tile.
        GZIP.with_borrow(|s| {
            let (_, out) = s.as_ref().expect("a compressor was made");
            assert!(out.capacity() <= KEEP_OUTPUT_BYTES);
        });
    }

    #[test]
    fn validators_are_stable_and_distinct_per_representation() {
        let area = Bbox {
            min_lon: 0.0,
            min_lat: 0.0,
            max_lon: 1.0,
            max_lat: 1.0,
        };
        let t = CachedTile::new(vec![1, 1], area, b"some tile");
        let u = CachedTile::new(vec![2, 2], area, b"some tile");
        assert_eq!(t.etag(), u.etag(), "the validator depends on the body only");
        assert_ne!(t.etag(), t.etag_gzip());
        assert!(t.etag().starts_with('"') && t.etag().ends_with("-9\""));
        assert_eq!(
            t.etag_gzip(),
            format!("{}-gz\"", t.etag().trim_end_matches('"'))
        );
        let v = CachedTile::new(vec![1, 1], area, b"another tile");
        assert_ne!(t.etag(), v.etag());
        assert_eq!(CachedTile::new(vec![1, 1], area, b"").gzip, None);
    }

    #[test]
    fn a_tile_is_behind_marks_stale_after_features_and_moves_on_when_untouched() {
        use crate::index::LayerIndex;
        let l = LayerState::new(LayerIndex::new(Arc::new(crate::app::warnings_layer_def())));
        let b = |x: f64| Bbox::new(x, 29.0, x + 0.1, 29.1).unwrap();
        let stamps = || vec![l.changes.version(), l.mark_changes.version()];
        let here = CachedTile::new(stamps(), b(106.0), b"tile");
        let there = CachedTile::new(stamps(), b(108.0), b"tile");
        assert_eq!(here.currency(&[&l]), Currency::Fresh);
        // Marks changed here: behind since then; nothing changed there.
        l.mark_changes.record_at(&[b(106.05)], 5_000);
        assert_eq!(here.currency(&[&l]), Currency::Behind { since_ms: 5_000 });
        assert_eq!(there.currency(&[&l]), Currency::Fresh);
        // Found untouched, the tile there took the log's number: later checks start there.
        assert_eq!(
            there.stamps[1].load(Ordering::Acquire),
            l.mark_changes.version()
        );
        // A feature changed here too: stale, whatever its marks.
        l.changes.record(&[b(106.02)]);
        assert_eq!(here.currency(&[&l]), Currency::Stale);
        assert_eq!(there.currency(&[&l]), Currency::Fresh);
        // A tile for another layer list is never taken as current.
        assert_eq!(here.currency(&[&l, &l]), Currency::Stale);
    }
}
