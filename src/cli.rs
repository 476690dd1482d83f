//! The command line: `serve`, `import`, `keys`, `check`. Parses arguments, opens what
//! each command needs, prints results; the work itself lives in the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use crate::app::{App, OpenOptions, STORE_FILE};
use crate::config::{Config, ConfigError};
use crate::ingest::{self, ImportOptions, IngestError};
use crate::model::Role;
use crate::store::{LayerPlan, OpenMode, Store};

#[derive(Parser, Debug)]
#[command(
    name = "riskmap",
    version,
    about = "A city's risks on one map: vector tiles, spatial queries, imports and warnings"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Data directory: holds the store (riskmap.gpkg).
    #[arg(long, global = true, env = "RISKMAP_DATA", default_value = "data")]
    pub data: PathBuf,
    /// Directory of layer files (one TOML per layer). When left at its default and
    /// absent, the layer files built into the binary are used.
    #[arg(long, global = true, env = "RISKMAP_LAYERS", default_value = "layers")]
    pub layers: PathBuf,
    /// Log format: text or json.
    #[arg(
        long,
        global = true,
        env = "RISKMAP_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve tiles, features and the API over HTTP.
    Serve {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, env = "RISKMAP_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Do not load the demo into a new store.
        #[arg(long)]
        no_demo: bool,
        /// Require a key (any role allowed to read) for reads too.
        #[arg(long, env = "RISKMAP_PRIVATE_READS")]
        private_reads: bool,
        /// Memory for cached tiles, in MiB (compressed tiles).
        #[arg(long, env = "RISKMAP_TILE_CACHE_MB", default_value_t = 256)]
        tile_cache_mb: u64,
        /// Size of the disk reserve kept beside the store (DATA/riskmap.gpkg.reserve), in
        /// MiB; 0 keeps none. When the disk is full, `rm` it to let writes resume.
        #[arg(long, env = "RISKMAP_DISK_RESERVE_MB", default_value_t = 64)]
        disk_reserve_mb: u64,
        /// The origin clients reach the server at (https://maps.example.org), written
        /// into TileJSON and the style instead of the request's Host.
        #[arg(long, env = "RISKMAP_PUBLIC_URL", value_parser = crate::api::parse_public_url)]
        public_url: Option<String>,
        /// Without --public-url: take X-Forwarded-Host and X-Forwarded-Proto from
        /// requests (only behind a proxy that sets them itself).
        #[arg(long, env = "RISKMAP_TRUST_FORWARDED")]
        trust_forwarded: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Import a file into a layer (all of it or nothing): GeoJSON, CSV, a zipped
    /// shapefile (or its .shp), GeoPackage or FlatGeobuf, in any CRS and encoding.
    Import {
        /// Target layer (with FILE).
        #[arg(long, required_unless_present_any = ["plans", "sensor_types"], conflicts_with_all = ["plans", "sensor_types"])]
        layer: Option<String>,
        /// GeoJSON (FeatureCollection, Feature, newline-delimited), CSV with coordinate
        /// columns, .zip (a shapefile), .shp (beside its .shx, .dbf, .prj), .gpkg, .fgb.
        #[arg(required_unless_present_any = ["plans", "sensor_types"])]
        file: Option<PathBuf>,
        /// Load response plan templates instead: a JSON array of templates (the
        /// generator's plans.json). All or nothing; a template that changed gets a new
        /// version.
        #[arg(long, conflicts_with = "sensor_types")]
        plans: Option<PathBuf>,
        /// Load sensor types and their thresholds instead: a CSV
        /// (type_id,family,name,unit,warn_above,alarm_above...). All or nothing.
        #[arg(long)]
        sensor_types: Option<PathBuf>,
        /// The file's CRS, overriding what it says: EPSG:n, CRS84, GCJ02 or BD09.
        #[arg(long, value_parser = parse_crs)]
        crs: Option<ingest::ImportCrs>,
        /// The file's text encoding, overriding what it says: UTF-8, GBK, GB18030, Big5.
        #[arg(long, value_parser = parse_encoding)]
        encoding: Option<ingest::TextEncoding>,
        /// upsert (add and update by id) or replace (also delete the layer's features
        /// absent from the file).
        #[arg(long, default_value = "upsert", value_parser = parse_mode)]
        mode: ingest::Mode,
        /// Source property to layer property, e.g. 名称:name,等级:level.
        #[arg(long, value_parser = parse_map_arg)]
        map: Option<PropertyMap>,
        /// Which dataset of an archive, or layer of a GeoPackage.
        #[arg(long)]
        source_layer: Option<String>,
        /// Check and count everything as a real import would, then write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON on standard output.
        #[arg(long)]
        json: bool,
        /// Import the valid features even if some are refused (refusals are listed).
        #[arg(long)]
        skip_invalid: bool,
        /// CSV column holding longitude.
        #[arg(long)]
        lon_column: Option<String>,
        /// CSV column holding latitude.
        #[arg(long)]
        lat_column: Option<String>,
        /// CPU priority of the import (nice value, 0 to 19). An import is batch work
        /// beside a server answering people: by default it also runs under Linux's
        /// SCHED_IDLE policy, so it takes only the CPU the server leaves idle (on an
        /// idle machine it runs at full speed all the same). A nice value alone does
        /// not do that: the import runs in a session of its own, which the kernel's
        /// autogroups give the same share of the CPU as the server's.
        #[arg(long, default_value_t = crate::app::BACKGROUND_NICE, value_parser = clap::value_parser!(i32).range(0..=19))]
        nice: i32,
        /// Run at the nice value only, not under SCHED_IDLE (an import that must finish
        /// while the server is saturated, at the cost of the server's latency).
        #[arg(long)]
        not_idle: bool,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Create the store in the data directory (empty, or with the demo), if it does
    /// not exist yet. `serve` does this on its first start; `import` and `keys` never
    /// do, so that a mistyped --data cannot create a second, empty store.
    Init {
        /// Load the demo into the new store.
        #[arg(long)]
        demo: bool,
    },
    /// Internal: read an upload with GDAL, in a child process of the server or of
    /// `import` (see src/ingest/worker.rs).
    #[command(hide = true)]
    GdalWorker(ingest::worker::WorkerArgs),
    /// Validate the layer files (and, if present, the store against them), then exit.
    Check {
        /// Also run SQLite's full integrity check on the store.
        #[arg(long)]
        integrity: bool,
    },
}

/// Connection timeouts, the connection cap and per-kind request limits of `serve`.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Seconds a client has to send a complete request head, from connecting or from
    /// the first byte of a later request.
    #[arg(long, env = "RISKMAP_HEADER_TIMEOUT_SECS", default_value_t = crate::api::DEFAULT_HEADER_TIMEOUT_SECS)]
    pub header_timeout_secs: u64,
    /// Seconds a keep-alive connection may stay open with no request in flight.
    #[arg(long, env = "RISKMAP_IDLE_TIMEOUT_SECS", default_value_t = crate::api::DEFAULT_IDLE_TIMEOUT_SECS)]
    pub idle_timeout_secs: u64,
    /// Open connections at most [default: the open-file limit less a tenth, kept
    /// between 64 and 1,024, for the store].
    #[arg(long, env = "RISKMAP_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Tiles drawn at once (cached tiles are not counted); beyond it a request waits or
    /// gets 503 [default: one per core].
    #[arg(long, env = "RISKMAP_MAX_TILE_REQUESTS")]
    pub max_tile_requests: Option<usize>,
    /// Feature and collection reads handled at once; beyond it 503 [default: two per core].
    #[arg(long, env = "RISKMAP_MAX_QUERY_REQUESTS")]
    pub max_query_requests: Option<usize>,
    /// Edits handled at once; beyond it 503 [default: one per core, at least two].
    #[arg(long, env = "RISKMAP_MAX_WRITE_REQUESTS")]
    pub max_write_requests: Option<usize>,
    /// `POST /readings` requests handled at once (their own budget: tiles and edits
    /// never take its slots); beyond it 503 [default: eight per core].
    #[arg(long, env = "RISKMAP_MAX_READINGS_REQUESTS")]
    pub max_readings_requests: Option<usize>,
    /// Milliseconds a request beyond its kind's limit may wait for a slot before the
    /// 503 (at most four per slot wait); no wait while the kind is overloaded (a refusal
    /// in the last second).
    #[arg(long, env = "RISKMAP_QUEUE_WAIT_MS", default_value_t = crate::api::DEFAULT_QUEUE_WAIT_MS)]
    pub queue_wait_ms: u64,
}

impl LimitArgs {
    pub fn serve_options(&self) -> crate::api::ServeOptions {
        use std::time::Duration;
        let defaults = crate::api::LimitOptions::default();
        let limits = crate::api::LimitOptions {
            tiles: self.max_tile_requests.unwrap_or(defaults.tiles),
            queries: self.max_query_requests.unwrap_or(defaults.queries),
            writes: self.max_write_requests.unwrap_or(defaults.writes),
            readings: self.max_readings_requests.unwrap_or(defaults.readings),
            queue_wait: Duration::from_millis(self.queue_wait_ms),
        };
        crate::api::ServeOptions {
            // Zero would close every connection at once: one second at least.
            header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            max_connections: self.max_connections.map_or_else(
                crate::api::default_max_connections,
                crate::api::checked_max_connections,
            ),
            limits: crate::api::Limits::new(&limits),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; prints the key alone on standard output, once.
    Add {
        /// viewer, importer, planner, duty_officer, sensor or admin.
        #[arg(long)]
        role: String,
        /// A name to recognise the key by.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (never the secrets).
    List,
    /// Revoke a key by its id (see `keys list`).
    Revoke { id: i64 },
}

/// Exit codes: 0 done; 1 the work failed (bad data, store error); 2 bad usage.
pub fn run(cli: Cli) -> ExitCode {
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Loads the layer files from `dir`, or the built-in ones when `dir` is the default
/// and does not exist.
pub fn load_config(dir: &Path) -> Result<Config, ConfigError> {
    if dir == Path::new("layers") && !dir.exists() {
        let mut layers = Vec::new();
        for (file, text) in crate::config::BUILTIN_LAYERS {
            layers.push(Arc::new(crate::config::parse_layer(
                &Path::new("layers").join(file),
                text,
            )?));
        }
        layers.sort_by(|a, b| a.name.cmp(&b.name));
        tracing::info!("no ./layers directory: using the layer files built into the binary");
        return Ok(Config {
            layers_dir: dir.to_path_buf(),
            layers,
        });
    }
    Config::load(dir)
}

fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into())
    )
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Serve {
            listen,
            no_demo,
            private_reads,
            tile_cache_mb,
            disk_reserve_mb,
            public_url,
            trust_forwarded,
            limits,
        } => {
            let config = load_config(&g.layers)?;
            serve(
                config,
                &g.data,
                &listen,
                OpenOptions {
                    demo: !no_demo,
                    public_reads: !private_reads,
                    tile_cache_bytes: tile_cache_mb << 20,
                    public_url,
                    trust_forwarded,
                },
                disk_reserve_mb << 20,
                limits.serve_options(),
            )
        }
        Command::Import {
            plans: Some(path), ..
        } => catalog_import(&g, &path, CatalogFile::Plans),
        Command::Import {
            sensor_types: Some(path),
            ..
        } => catalog_import(&g, &path, CatalogFile::SensorTypes),
        Command::Import {
            layer: Some(layer),
            file: Some(file),
            skip_invalid,
            lon_column,
            lat_column,
            nice,
            not_idle,
            crs,
            encoding,
            mode,
            map,
            source_layer,
            dry_run,
            json,
            plans: None,
            sensor_types: None,
        } => {
            // Before any thread is started: threads inherit it. SCHED_IDLE only for
            // reading and checking (`parse_at_idle`): the thread that holds the store's
            // writer must not starve while a server's edits wait for it.
            crate::app::lower_thread_priority(nice);
            let config = load_config(&g.layers)?;
            let Some(def) = config.layer(&layer).cloned() else {
                eprintln!(
                    "error: {}: {}",
                    file.display(),
                    IngestError::UnknownLayer {
                        name: layer,
                        known: config.layer_names().join(", ")
                    }
                );
                eprintln!("error: {}: nothing was imported", file.display());
                return Ok(ExitCode::from(2));
            };
            if !file.exists() {
                eprintln!(
                    "error: {}: no such file; nothing was imported",
                    file.display()
                );
                return Ok(ExitCode::from(2));
            }
            let Some(store) = existing_store(&g, &config)? else {
                return Ok(ExitCode::from(2));
            };
            let references = match ingest::reference_check(&store, &def, &config.layers) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {}: {e}; nothing was imported", file.display());
                    return Ok(ExitCode::from(2));
                }
            };
            let referenced = if mode == ingest::Mode::Replace {
                match ingest::referenced_check(&store, &def, &config.layers) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("error: {}: {e}; nothing was imported", file.display());
                        return Ok(ExitCode::from(2));
                    }
                }
            } else {
                None
            };
            let opts = ImportOptions {
                referenced,
                references,
                skip_invalid,
                actor: cli_actor(),
                lon_column,
                lat_column,
                source_name: None,
                crs,
                encoding,
                mode,
                map: map.map(|m| m.0).unwrap_or_default(),
                source_layer,
                dry_run,
                parse_at_idle: !not_idle,
                ..Default::default()
            };
            import(&store, &def, &file, &opts, json)
        }
        Command::Import { .. } => {
            eprintln!("error: give --layer LAYER FILE, --plans FILE or --sensor-types FILE");
            Ok(ExitCode::from(2))
        }
        Command::Keys { command } => {
            let config = load_config(&g.layers)?;
            let Some(store) = existing_store(&g, &config)? else {
                return Ok(ExitCode::from(2));
            };
            keys(&store, command)
        }
        Command::GdalWorker(args) => Ok(ingest::worker::main(args)),
        Command::Init { demo } => {
            let config = load_config(&g.layers)?;
            let path = g.data.join(STORE_FILE);
            if path.exists() {
                eprintln!("{} exists already: nothing to do", path.display());
                return Ok(ExitCode::SUCCESS);
            }
            std::fs::create_dir_all(&g.data)?;
            let app = App::open(
                config,
                &g.data,
                OpenOptions {
                    demo,
                    ..Default::default()
                },
            )?;
            eprintln!(
                "created {} ({} features)",
                path.display(),
                app.layers()
                    .iter()
                    .map(|l| l.index.read().len())
                    .sum::<usize>()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { integrity } => check(&g, integrity),
    }
}

/// What `riskmap import --plans` or `--sensor-types` loads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CatalogFile {
    Plans,
    SensorTypes,
}

/// Loads plan templates or sensor types into the existing store, all or nothing; a
/// running server picks them up from the change feed.
fn catalog_import(g: &Global, path: &Path, what: CatalogFile) -> anyhow::Result<ExitCode> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}: {e}; nothing was imported", path.display());
            return Ok(ExitCode::from(2));
        }
    };
    let config = load_config(&g.layers)?;
    let Some(store) = existing_store(g, &config)? else {
        return Ok(ExitCode::from(2));
    };
    let actor = cli_actor();
    let refused = |errors: Vec<String>| {
        for e in errors.iter().take(50) {
            eprintln!("error: {}: {e}", path.display());
        }
        if errors.len() > 50 {
            eprintln!(
                "error: {}: {} more problems",
                path.display(),
                errors.len() - 50
            );
        }
        eprintln!("error: {}: nothing was imported", path.display());
        Ok(ExitCode::from(1))
    };
    let (n, changed, noun) = match what {
        CatalogFile::Plans => {
            let templates = match crate::alerts::plans::parse_templates(&bytes) {
                Ok(t) => t,
                Err(errors) => return refused(errors.iter().map(|e| e.to_string()).collect()),
            };
            let changed = store.write(|tx| {
                let mut n = 0;
                for t in &templates {
                    n += usize::from(tx.put_template(t, &actor)?.1);
                }
                tx.record_change(crate::app::CATALOG_FEED, None)?;
                tx.commit()?;
                Ok::<_, crate::store::StoreError>(n)
            })?;
            (templates.len(), changed, "plan templates")
        }
        CatalogFile::SensorTypes => {
            let types = match crate::alerts::sensor_types::parse_csv(&bytes) {
                Ok(t) => t,
                Err(errors) => return refused(errors.iter().map(|e| e.to_string()).collect()),
            };
            let old: std::collections::HashMap<u32, crate::alerts::sensor_types::SensorType> =
                store
                    .sensor_types()?
                    .into_iter()
                    .map(|(t, _)| (t.type_id, t))
                    .collect();
            let changed = store.write(|tx| {
                let mut n = 0;
                for t in types.iter().filter(|t| old.get(&t.type_id) != Some(*t)) {
                    tx.put_sensor_type(t, &actor)?;
                    n += 1;
                }
                tx.record_change(crate::app::CATALOG_FEED, None)?;
                tx.commit()?;
                Ok::<_, crate::store::StoreError>(n)
            })?;
            (types.len(), changed, "sensor types")
        }
    };
    eprintln!(
        "{}: {n} {noun} read, {changed} new or changed",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Connections the kernel may queue before `accept`: tokio's default of 1,024 overflows
/// in a storm of new connections, and each one dropped then waits a second for its SYN
/// to be sent again (`/health` from a fresh connection among them). The kernel caps it at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 8192;

async fn bind(listen: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(listen).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address to listen on")
    }))
}

fn serve(
    config: Config,
    data: &Path,
    listen: &str,
    options: OpenOptions,
    disk_reserve_bytes: u64,
    serve_options: crate::api::ServeOptions,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let app = Arc::new(App::open(config, data, options)?);
    // A server that cannot write its reserve still serves (and says so in /health).
    if let Err(e) = app.store().keep_reserve(disk_reserve_bytes) {
        tracing::warn!(error = %e, "cannot write the disk reserve");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(addr = %addr, store = %app.store_path().display(), startup_ms = started.elapsed().as_millis() as u64, "riskmap listening on http://{addr}/");
        tracing::info!(
            max_connections = serve_options.max_connections,
            fd_limit = crate::api::fd_limit(),
            header_timeout_s = serve_options.header_timeout.as_secs(),
            idle_timeout_s = serve_options.idle_timeout.as_secs(),
            limits = ?serve_options.limits,
            "connection and request limits"
        );
        crate::api::serve_with(listener, app, serve_options, shutdown_signal()).await?;
        tracing::info!("riskmap stopped");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// A progress bar on a terminal (nothing otherwise), and every refusal on standard
/// error as it is found: the import's report keeps only the first ones in memory.
struct Bar<'a> {
    bar: indicatif::ProgressBar,
    file: &'a Path,
    listed: AtomicU64,
}

impl ingest::Progress for Bar<'_> {
    fn start(&self, total: u64) {
        self.bar.set_length(total);
    }
    fn phase(&self, name: &'static str) {
        self.bar.set_prefix(name);
        self.bar.set_position(0);
    }
    fn update(&self, bytes: u64, features: u64) {
        self.bar.set_position(bytes);
        self.bar.set_message(format!("{features} features"));
    }
    fn rejected(&self, r: &ingest::Rejection) {
        self.bar
            .suspend(|| eprintln!("rejected: {}: {r}", self.file.display()));
        self.listed.fetch_add(1, Ordering::Relaxed);
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Opens the store of `--data` only if it exists: a typo'd `--data` or a command run
/// from the wrong directory must not create a new empty store (only `serve` creates
/// one, on its first start). Says so on standard error when it is missing.
fn existing_store(g: &Global, config: &Config) -> anyhow::Result<Option<Store>> {
    let path = g.data.join(STORE_FILE);
    if !path.exists() {
        eprintln!(
            "error: no store at {}: start the server once (riskmap serve --data {}) to create it, or give the right --data (or RISKMAP_DATA)",
            path.display(),
            g.data.display()
        );
        return Ok(None);
    }
    Ok(Some(Store::open(
        &path,
        OpenMode::MustExist,
        &config.layers,
    )?))
}

fn parse_crs(s: &str) -> Result<ingest::ImportCrs, String> {
    ingest::ImportCrs::parse(s)
}

fn parse_encoding(s: &str) -> Result<ingest::TextEncoding, String> {
    ingest::TextEncoding::parse(s)
        .ok_or_else(|| format!("unknown encoding {s:?}: UTF-8, GBK, GB18030, Big5, ISO-8859-1"))
}

fn parse_mode(s: &str) -> Result<ingest::Mode, String> {
    ingest::Mode::parse(s).ok_or_else(|| format!("{s:?}: the mode is upsert or replace"))
}

/// `--map`'s pairs (a newtype: clap reads `Option<Vec<_>>` as repeated values).
#[derive(Clone, Debug)]
pub struct PropertyMap(Vec<(String, String)>);

fn parse_map_arg(s: &str) -> Result<PropertyMap, String> {
    ingest::parse_map(s).map(PropertyMap)
}

fn import(
    store: &Store,
    layer: &crate::model::LayerDef,
    file: &Path,
    opts: &ImportOptions,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} {bytes}/{total_bytes} [{bar:30}] {msg} {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let progress = Bar {
        bar,
        file,
        listed: AtomicU64::new(0),
    };
    let report = match ingest::import_file(store, layer, file, opts, &progress) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("error: {}: nothing was imported", file.display());
            return Ok(ExitCode::from(1));
        }
    };
    let listed = progress.listed.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    let src = &report.source;
    eprintln!(
        "{}: {}{}, CRS {} ({}), encoding {} ({}){}{}",
        file.display(),
        src.format,
        src.source_layer
            .as_deref()
            .map(|l| format!(" layer {l:?}"))
            .unwrap_or_default(),
        src.crs,
        src.crs_source,
        src.encoding,
        src.encoding_source,
        if src.z_dropped + src.m_dropped > 0 {
            format!(
                ", Z/M values dropped from {} features (the store is 2-D)",
                src.z_dropped.max(src.m_dropped)
            )
        } else {
            String::new()
        },
        if opts.dry_run {
            " [dry run: nothing is written]"
        } else {
            ""
        },
    );
    let length = if report.length_km > 0.0 {
        format!(", {:.1} km of lines", report.length_km)
    } else {
        String::new()
    };
    if opts.dry_run && (report.rejected == 0 || opts.skip_invalid) {
        println!(
            "{} -> layer {} (dry run, nothing written): {} features read, would add {}, update {}, leave {} unchanged, delete {}, reject {}",
            file.display(),
            layer.name,
            report.features,
            report.added,
            report.updated,
            report.unchanged,
            report.deleted,
            report.rejected
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !report.committed {
        eprintln!(
            "error: {}: {} of {} features rejected ({listed} listed above); nothing was imported (fix them, or pass --skip-invalid to import the valid ones: {})",
            file.display(),
            report.rejected,
            report.features,
            report.features - report.rejected
        );
        return Ok(ExitCode::from(1));
    }
    if report.changed_ids.is_none() || report.added + report.updated > 100_000 {
        // A big import leaves a big WAL: fold it into the main file now.
        if let Err(e) = store.checkpoint() {
            tracing::warn!(error = %e, "checkpoint after import failed (harmless: SQLite will retry)");
        }
    }
    let listed_note = if report.rejected > 0 {
        format!(" ({listed} listed above)")
    } else {
        String::new()
    };
    println!(
        "{} -> layer {}: {} features read, {} added, {} updated, {} unchanged, {}{} rejected{listed_note}{length} in {secs:.1} s",
        file.display(),
        layer.name,
        report.features,
        report.added,
        report.updated,
        report.unchanged,
        if opts.mode == ingest::Mode::Replace {
            format!("{} deleted, ", report.deleted)
        } else {
            String::new()
        },
        report.rejected
    );
    Ok(ExitCode::SUCCESS)
}

fn keys(store: &Store, command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Add { role, name } => {
            let Some(role) = Role::from_name(&role) else {
                let roles: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
                eprintln!(
                    "error: unknown role {role:?}; roles are: {}",
                    roles.join(", ")
                );
                return Ok(ExitCode::from(2));
            };
            let k = store.add_key(&cli_actor(), role, &name)?;
            // The key alone on stdout, so KEY=$(riskmap keys add ...) works.
            println!("{}", k.secret);
            eprintln!(
                "key {} ({}, role {}) created; it is shown only this once",
                k.key.id,
                k.key.prefix,
                role.name()
            );
        }
        KeysCommand::List => {
            println!(
                "{:<5} {:<14} {:<13} {:<20} {:<25} revoked",
                "id", "prefix", "role", "name", "created"
            );
            for k in store.list_keys()? {
                println!(
                    "{:<5} {:<14} {:<13} {:<20} {:<25} {}",
                    k.id,
                    k.prefix,
                    k.role.name(),
                    k.name,
                    k.created_at,
                    k.revoked_at.as_deref().unwrap_or("-")
                );
            }
        }
        KeysCommand::Revoke { id } => match store.revoke_key(&cli_actor(), id)? {
            Some(k) => eprintln!(
                "key {} ({}, role {}) revoked at {}",
                k.id,
                k.prefix,
                k.role.name(),
                k.revoked_at.unwrap_or_default()
            ),
            None => {
                eprintln!("error: no key with id {id}");
                return Ok(ExitCode::from(1));
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn check(g: &Global, integrity: bool) -> anyhow::Result<ExitCode> {
    let config = match load_config(&g.layers) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    for l in &config.layers {
        println!(
            "layer {:<14} {:<16} {:<11} {} properties, zoom {}-{}",
            l.name,
            l.geometry.geojson_name(),
            l.kind.config_name(),
            l.properties.len(),
            l.minzoom,
            l.maxzoom
        );
    }
    println!(
        "{} layer files in {}: ok",
        config.layers.len(),
        config.layers_dir.display()
    );
    let path = g.data.join(STORE_FILE);
    if !path.exists() {
        println!("no store at {} yet", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    // Read-only: a check never changes the store.
    let plans = match Store::inspect(&path, &config.layers) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    for (l, (plan, count)) in config.layers.iter().zip(plans) {
        let note = match plan {
            LayerPlan::UpToDate => String::new(),
            LayerPlan::Create => " (no table yet: created at next start)".into(),
            LayerPlan::AddColumns(c) => {
                format!(" (new columns added at next start: {})", c.join(", "))
            }
        };
        println!("store {:<14} {count} features{note}", l.name);
    }
    if integrity {
        if let Err(e) = Store::integrity_check_path(&path) {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
        println!("store {}: integrity ok", path.display());
    } else {
        println!("store {}: schema ok", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
