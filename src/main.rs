//! The `riskmap` binary: parse arguments, set up logging, run.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// jemalloc, not glibc's malloc: chosen by measurement (`benches/tile_memory.sh`, issue 7;
/// 20 s of wrk over 120,000 distinct tiles, resident memory growth per cached tile):
/// glibc 16 KB (demo store) and 34 KB (city store), about 100 KB with
/// `MALLOC_ARENA_MAX=1`, and none of it given back: each drawing freed large blocks that
/// the cache's long-lived small ones then split, so its heaps fragmented. jemalloc 1.1 KB
/// and 2.1 KB, what the entries really hold; mimalloc 1.3 KB and 3.7 KB. Its background
/// threads (the `background_threads` feature) return freed pages to the system while the
/// server idles (dirty pages decay over 10 s).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = riskmap::cli::Cli::parse();
    let filter = EnvFilter::try_from_env("RISKMAP_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.global.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    riskmap::cli::run(cli)
}
