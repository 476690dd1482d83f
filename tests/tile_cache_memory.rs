//! The tile cache is charged for what it really holds (issue 7, finding 3): measured with
//! jemalloc's own count of allocated bytes (the server's allocator, see `src/main.rs`).
//! One test at a time in this binary (a lock), so no other test allocates meanwhile.

use std::sync::{Arc, Mutex};

use riskmap::model::Bbox;
use riskmap::tiles::{CachedTile, TileCache, TileCoord, TileKey};
use tikv_jemalloc_ctl::{epoch, stats};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Bytes allocated by the whole process now.
fn allocated() -> usize {
    epoch::advance().expect("jemalloc epoch");
    stats::allocated::read().expect("jemalloc stats.allocated")
}

const AREA: Bbox = Bbox {
    min_lon: 106.0,
    min_lat: 29.0,
    max_lon: 106.1,
    max_lat: 29.1,
};

/// A tile body of `n` bytes that gzip shrinks only somewhat, like MVT: varied bytes
/// from a xorshift generator, drawn from 16 values.
fn body(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 16) as u8
        })
        .collect()
}

/// Each key gets its own layer list allocation, as a request does.
fn key(i: u32, layers: &str) -> TileKey {
    TileKey {
        layers: Arc::from(layers),
        coord: TileCoord {
            z: 18,
            x: 200_000 + i,
            y: 100_000,
        },
    }
}

#[test]
fn the_charge_covers_what_the_entries_really_allocate() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Bodies as deep-zoom tiles have them: empty, tiny, a few hundred bytes, a few KB.
    let sizes = [0usize, 0, 12, 90, 400, 1_500, 6_000];
    let n = 14_000u32;
    let cache = TileCache::new(1 << 40);
    // The cache's own fixed structures come before the count starts.
    cache.insert(
        key(1_000_000, "x"),
        Arc::new(CachedTile::new(vec![1], AREA, b"")),
    );
    cache.clear();
    let before = allocated();
    // Keys and tiles are made as a request makes them, after the count starts: they are
    // what the cache holds.
    let mut charged_each = 0;
    for i in 0..n {
        let raw = body(sizes[i as usize % sizes.len()], i as u64);
        let layers = if i % 2 == 0 {
            "risk_points,pipelines,sensors"
        } else {
            "sensors"
        };
        let (k, t) = (
            key(i, layers),
            Arc::new(CachedTile::new(vec![1, 2, 3], AREA, &raw)),
        );
        charged_each += riskmap::tiles::cache::entry_weight(&k, &t);
        cache.insert(k, t);
    }
    let charged = cache.weighted_size() as usize;
    let held = allocated() - before;
    assert_eq!(cache.entry_count(), n as u64);
    assert_eq!(
        charged, charged_each,
        "the cache charges each entry its weight"
    );
    println!(
        "{n} entries: {held} bytes allocated ({} each), {charged} charged ({} each)",
        held / n as usize,
        charged / n as usize
    );
    // Charged for all it holds, and not for much more (the overhead constant is a
    // measured figure with some margin, not a guess several times too big).
    assert!(charged >= held, "charged {charged} < held {held}");
    assert!(
        charged <= held + held / 4,
        "charged {charged} > 1.25 x held {held}"
    );

    // Emptied, the cache gives it all back (within the allocator's bins' slack).
    cache.clear();
    let left = allocated().saturating_sub(before);
    assert!(left < held / 20, "{left} bytes still held of {held}");
}

#[test]
fn a_tiny_budget_bounds_memory_and_entries_even_for_empty_tiles() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const BUDGET: u64 = 1 << 20;
    let cache = TileCache::new(BUDGET);
    cache.insert(
        key(1_000_000, "x"),
        Arc::new(CachedTile::new(vec![1], AREA, b"")),
    );
    cache.clear();
    let before = allocated();
    let mut peak_held = 0usize;
    // 100,000 distinct tiles, most of them empty (as deep zooms are), a few small ones.
    let small = body(300, 9);
    for i in 0..100_000u32 {
        let raw: &[u8] = if i % 10 == 0 { &small } else { b"" };
        let t = Arc::new(CachedTile::new(vec![7, 7, 7], AREA, raw));
        cache.insert(key(i, "risk_points,pipelines,sensors"), t);
        if i % 10_000 == 9_999 {
            let charged = cache.weighted_size();
            assert!(charged <= BUDGET, "{charged} bytes charged over {BUDGET}");
            peak_held = peak_held.max(allocated().saturating_sub(before));
        }
    }
    let entries = cache.entry_count();
    let empty_weight = riskmap::tiles::cache::entry_weight(
        &key(0, "risk_points,pipelines,sensors"),
        &CachedTile::new(vec![7, 7, 7], AREA, b""),
    ) as u64;
    println!("{entries} entries of at least {empty_weight} bytes; at most {peak_held} bytes held");
    assert!(entries > 0, "the cache still caches");
    assert!(
        entries <= BUDGET / empty_weight,
        "{entries} entries cannot fit in {BUDGET} bytes"
    );
    // What the process really holds for the cache stays near the budget: the budget
    // plus moka's fixed tables and its pending-write log (bounded, a few thousand
    // entries), well under the 196 MB that `--tile-cache-mb 1` once reached.
    assert!(
        peak_held < 2 * BUDGET as usize,
        "{peak_held} bytes held for a {BUDGET}-byte budget"
    );
}
