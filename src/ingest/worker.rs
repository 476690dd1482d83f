//! GDAL in a child process. GDAL's security policy says to treat its parsers as exposed
//! to hostile input, so the server never opens an upload with GDAL itself: it starts
//! its own binary as `riskmap gdal-worker` in the upload's temporary directory, with
//!
//! - limits set by the child on itself before GDAL is touched: address space, CPU
//!   seconds, bytes it may write to one file, open files;
//! - a wall-clock timeout kept by the parent, which kills the child;
//! - an empty environment but for GDAL settings that keep it to the files given:
//!   `GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`, `GDAL_PAM_ENABLED=NO`,
//!   `GDAL_VRT_ENABLE_RAWRASTERBAND=NO`, `PROJ_NETWORK=OFF`, `GDAL_HTTP_*` unset;
//! - one driver allowed per open (the format riskmap found in the bytes: ESRI Shapefile,
//!   GPKG or FlatGeobuf; never VRT or a network driver), and file names riskmap made
//!   (`e0.shp`, `upload.gpkg`): no client string is ever a path, URL or option for GDAL.
//!   The CRS a client gives is passed as a number; the layer it names is compared with
//!   the names GDAL lists, then opened by index.
//!
//! The child writes each feature, reprojected to WGS84 lon/lat by GDAL's PROJ with GIS
//! axis order at both ends, as one JSON line (`{"n":1,"p":{...},"g":<GeoJSON geometry>}`,
//! or with `"e":{"field","reason"}` for a feature it cannot turn into one) to a file in
//! the directory, and a summary (driver, layers, CRS, counts) or an error as one JSON
//! line on its standard output. The parent validates the features like any other file's.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};

/// The drivers an upload may be opened with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Driver {
    Shapefile,
    Gpkg,
    FlatGeobuf,
}

impl Driver {
    pub fn gdal_name(self) -> &'static str {
        match self {
            Driver::Shapefile => "ESRI Shapefile",
            Driver::Gpkg => "GPKG",
            Driver::FlatGeobuf => "FlatGeobuf",
        }
    }
}

/// Limits of one child.
#[derive(Clone, Copy, Debug)]
pub struct WorkerLimits {
    pub memory_bytes: u64,
    pub cpu_seconds: u64,
    pub wall: Duration,
    /// Bytes the child may write into one file (its output).
    pub output_bytes: u64,
    /// Features read at most (more: 413).
    pub max_features: u64,
}

impl Default for WorkerLimits {
    fn default() -> Self {
        WorkerLimits {
            memory_bytes: 4 << 30,
            cpu_seconds: 600,
            wall: Duration::from_secs(600),
            output_bytes: 16 << 30,
            max_features: 10_000_000,
        }
    }
}

/// What the child was asked to do (its command line).
#[derive(Clone, Debug, clap::Args)]
pub struct WorkerArgs {
    /// File to open, a name inside the working directory.
    #[arg(long)]
    pub input: String,
    #[arg(long, value_enum)]
    pub driver: Driver,
    /// File to write the features to, inside the working directory.
    #[arg(long)]
    pub output: String,
    /// Shapefile text encoding, as GDAL names it.
    #[arg(long)]
    pub encoding: Option<String>,
    /// Source CRS, overriding the file's.
    #[arg(long)]
    pub epsg: Option<u32>,
    /// Hand positions over as they are (the parent transforms them: GCJ-02, BD-09).
    #[arg(long)]
    pub raw: bool,
    /// The layer to read, by name.
    #[arg(long)]
    pub layer: Option<String>,
    /// The source has a `.prj` (a shapefile): no SRS from GDAL means it is unreadable.
    #[arg(long)]
    pub has_prj: bool,
    #[arg(long, default_value_t = 4 << 30)]
    pub memory_bytes: u64,
    #[arg(long, default_value_t = 600)]
    pub cpu_seconds: u64,
    #[arg(long, default_value_t = 16 << 30)]
    pub output_bytes: u64,
    #[arg(long, default_value_t = 10_000_000)]
    pub max_features: u64,
}

/// The child's summary.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub driver: String,
    pub layer: String,
    pub layers: Vec<String>,
    /// `EPSG:4547`, or the CRS's name when it has no code.
    pub crs: String,
    /// Where the CRS came from: `request`, `.prj`, `file`, `none (lon/lat assumed)`.
    pub crs_source: String,
    pub features: u64,
    /// Features that had Z or M values (dropped: the store is 2-D).
    pub with_z: u64,
    pub with_m: u64,
}

/// Why the child refused (or failed).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerError {
    /// 413 for caps, 422 otherwise.
    pub status: u16,
    pub message: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Reply {
    Ok(WorkerInfo),
    Error(WorkerError),
}

/// One feature line of the child's output.
#[derive(Debug, Deserialize)]
pub struct Line {
    pub n: u64,
    #[serde(default)]
    pub p: Map<String, Json>,
    #[serde(default)]
    pub g: Json,
    #[serde(default)]
    pub e: Option<(String, String)>,
}

/// Parent side: runs `exe gdal-worker` in `dir` on `args`, within `limits`. The child's
/// refusals come back as `Err(WorkerError)` with its status.
pub fn run(
    exe: &Path,
    dir: &Path,
    args: &WorkerArgs,
    limits: WorkerLimits,
) -> Result<WorkerInfo, WorkerError> {
    let failed = |m: String| WorkerError {
        status: 500,
        message: m,
    };
    let mut cmd = Command::new(exe);
    cmd.arg("gdal-worker")
        .args(["--input", &args.input, "--output", &args.output])
        .args([
            "--driver",
            match args.driver {
                Driver::Shapefile => "shapefile",
                Driver::Gpkg => "gpkg",
                Driver::FlatGeobuf => "flat-geobuf",
            },
        ])
        .args(["--memory-bytes", &limits.memory_bytes.to_string()])
        .args(["--cpu-seconds", &limits.cpu_seconds.to_string()])
        .args(["--output-bytes", &limits.output_bytes.to_string()])
        .args(["--max-features", &limits.max_features.to_string()]);
    if let Some(e) = &args.encoding {
        cmd.args(["--encoding", e]);
    }
    if let Some(n) = args.epsg {
        cmd.args(["--epsg", &n.to_string()]);
    }
    if args.raw {
        cmd.arg("--raw");
    }
    if args.has_prj {
        cmd.arg("--has-prj");
    }
    if let Some(l) = &args.layer {
        cmd.args(["--layer", l]);
    }
    cmd.current_dir(dir)
        .env_clear()
        .env("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
        .env("GDAL_PAM_ENABLED", "NO")
        .env("GDAL_VRT_ENABLE_RAWRASTERBAND", "NO")
        .env("CPL_VSIL_CURL_ALLOWED_EXTENSIONS", "none")
        .env("PROJ_NETWORK", "OFF")
        .env("GDAL_NUM_THREADS", "1")
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // PROJ finds its database through the default path; keep a configured one.
    for var in ["PROJ_DATA", "PROJ_LIB", "GDAL_DATA"] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn().map_err(|e| {
        failed(format!(
            "cannot start the GDAL worker {}: {e}",
            exe.display()
        ))
    })?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| failed("no worker output".into()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| failed("no worker output".into()))?;
    // Bounded reads on their own threads, so a chatty child cannot block on a full pipe.
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = (&mut stdout).take(1 << 20).read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut b);
        b
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > limits.wall => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(WorkerError {
                    status: 422,
                    message: format!(
                        "reading the file took longer than {} s: refused",
                        limits.wall.as_secs()
                    ),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(failed(format!("waiting for the GDAL worker: {e}"))),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    let last = out
        .split(|b| *b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap_or_default();
    match serde_json::from_slice::<Reply>(last) {
        Ok(Reply::Ok(info)) if status.success() => Ok(info),
        Ok(Reply::Error(e)) => Err(e),
        _ => {
            use std::os::unix::process::ExitStatusExt;
            let why = match status.signal() {
                Some(9) => "it was killed (CPU time or memory limit reached)".to_string(),
                Some(s) => format!("it died of signal {s} (the file may be crafted to crash GDAL)"),
                None => format!("it exited with {status}"),
            };
            tracing::warn!(stderr = %String::from_utf8_lossy(&err), "GDAL worker failed");
            Err(WorkerError {
                status: 422,
                message: format!("the file could not be read: the GDAL reader stopped: {why}"),
            })
        }
    }
}

/// Child side: `riskmap gdal-worker`. Prints one JSON line, the summary or the error.
pub fn main(args: WorkerArgs) -> ExitCode {
    let reply = match child(&args) {
        Ok(info) => Reply::Ok(info),
        Err(e) => Reply::Error(e),
    };
    let ok = matches!(reply, Reply::Ok(_));
    let mut stdout = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut stdout, &reply);
    let _ = stdout.write_all(b"\n");
    let _ = stdout.flush();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

fn limit(resource: rustix::process::Resource, value: u64) {
    let l = rustix::process::Rlimit {
        current: Some(value),
        maximum: Some(value),
    };
    if let Err(e) = rustix::process::setrlimit(resource, l) {
        eprintln!("cannot set a limit ({resource:?}): {e}");
    }
}

fn refuse(message: impl Into<String>) -> WorkerError {
    WorkerError {
        status: 422,
        message: message.into(),
    }
}

fn child(a: &WorkerArgs) -> Result<WorkerInfo, WorkerError> {
    use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
    use gdal::vector::LayerAccess;
    use rustix::process::Resource;
    limit(Resource::As, a.memory_bytes);
    limit(Resource::Cpu, a.cpu_seconds);
    limit(Resource::Fsize, a.output_bytes);
    limit(Resource::Nofile, 64);
    limit(Resource::Core, 0);
    for name in [&a.input, &a.output] {
        if name.contains('/') || name.starts_with('.') {
            return Err(refuse(
                "the worker reads and writes only in its own directory",
            ));
        }
    }
    let enc = a.encoding.as_ref().map(|e| format!("ENCODING={e}"));
    let open_options: Vec<&str> = enc.iter().map(String::as_str).collect();
    let ds = gdal::Dataset::open_ex(
        &a.input,
        gdal::DatasetOptions {
            open_flags: gdal::GdalOpenFlags::GDAL_OF_VECTOR | gdal::GdalOpenFlags::GDAL_OF_READONLY,
            allowed_drivers: Some(&[a.driver.gdal_name()]),
            open_options: if open_options.is_empty() {
                None
            } else {
                Some(&open_options)
            },
            sibling_files: None,
        },
    )
    .map_err(|e| {
        refuse(format!(
            "GDAL cannot open the file as {}: {e}",
            a.driver.gdal_name()
        ))
    })?;
    let names: Vec<String> = ds.layers().map(|l| l.name()).collect();
    let index = match (&a.layer, names.len()) {
        (Some(want), _) => names.iter().position(|n| n == want).ok_or_else(|| {
            refuse(format!(
                "the file has no layer {want:?}; its layers are: {}",
                names.join(", ")
            ))
        })?,
        (None, 0) => return Err(refuse("the file holds no layer")),
        (None, 1) => 0,
        (None, _) => {
            return Err(refuse(format!(
                "the file holds {} layers ({}); name one with source_layer=",
                names.len(),
                names.join(", ")
            )));
        }
    };
    // FlatGeobuf leaves a null property unset, which the gdal crate reads as "" or 0;
    // through GDAL's SQLite dialect an unset field comes back NULL. The layer name is
    // the file's (quoted), never the client's.
    let mut result_set;
    let mut plain;
    let layer: &mut gdal::vector::Layer = if a.driver == Driver::FlatGeobuf {
        let sql = format!("SELECT * FROM \"{}\"", names[index].replace('"', "\"\""));
        result_set = ds
            .execute_sql(sql, None, gdal::vector::sql::Dialect::SQLITE)
            .map_err(|e| refuse(format!("cannot read layer {}: {e}", names[index])))?
            .ok_or_else(|| refuse(format!("cannot read layer {}", names[index])))?;
        &mut result_set
    } else {
        plain = ds
            .layer(index)
            .map_err(|e| refuse(format!("cannot read layer {}: {e}", names[index])))?;
        &mut plain
    };
    let (mut source, crs_source) = match (a.epsg, layer.spatial_ref()) {
        (Some(n), _) => (
            Some(
                SpatialRef::from_epsg(n)
                    .map_err(|e| refuse(format!("unknown CRS EPSG:{n}: {e}")))?,
            ),
            "request",
        ),
        (None, Some(s)) => (
            Some(s),
            if a.driver == Driver::Shapefile {
                ".prj"
            } else {
                "file"
            },
        ),
        (None, None) if a.has_prj => {
            return Err(refuse(
                "the .prj cannot be read as a CRS (is it a CRS definition at all?); fix it, or remove it and pass crs=",
            ));
        }
        (None, None) => (None, "none (lon/lat assumed)"),
    };
    if a.raw {
        source = None;
    }
    if source.is_none() && !a.raw {
        // No CRS: fine for lon/lat, refused for anything else, naming what it looks like.
        if let Ok(Some(env)) = layer.try_get_extent() {
            let min = geo_types::Coord {
                x: env.MinX,
                y: env.MinY,
            };
            let max = geo_types::Coord {
                x: env.MaxX,
                y: env.MaxY,
            };
            if let Some(family) = super::crs::guess_family(min, max) {
                return Err(refuse(format!(
                    "the file gives no CRS (no .prj) and its coordinates ({:.0}..{:.0}, {:.0}..{:.0}) are not lon/lat: they look like {family}; pass crs=",
                    env.MinX, env.MaxX, env.MinY, env.MaxY
                )));
            }
        }
    }
    let (crs_name, transform) = match source.as_mut() {
        None => ("EPSG:4326".to_string(), None),
        Some(s) => {
            let _ = s.auto_identify_epsg();
            let name = match (s.auth_name(), s.auth_code()) {
                (Some(auth), Ok(code)) => format!("{auth}:{code}"),
                _ => s.name().unwrap_or_else(|| "an unnamed CRS".into()),
            };
            s.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
            let mut wgs = SpatialRef::from_epsg(4326).map_err(|e| refuse(e.to_string()))?;
            wgs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
            // WGS84 (2-D or 3-D) and CGCS2000: lon/lat already.
            let same = s
                .auth_code()
                .is_ok_and(|c| matches!(c, 4326 | 4979 | 4490 | 4480))
                || s.to_wkt().ok() == wgs.to_wkt().ok();
            let ct = if same {
                None
            } else {
                Some(CoordTransform::new(s, &wgs).map_err(|e| {
                    refuse(format!(
                        "the file's CRS ({name}) cannot be transformed to WGS84: {e}"
                    ))
                })?)
            };
            (name, ct)
        }
    };
    let fields: Vec<String> = layer.defn().fields().map(|f| f.name()).collect();
    let out =
        std::fs::File::create_new(&a.output).map_err(|e| refuse(format!("cannot write: {e}")))?;
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut info = WorkerInfo {
        driver: a.driver.gdal_name().into(),
        layer: names[index].clone(),
        layers: names.clone(),
        crs: crs_name,
        crs_source: crs_source.into(),
        ..Default::default()
    };
    let mut n = 0u64;
    for feature in layer.features() {
        n += 1;
        if n > a.max_features {
            return Err(WorkerError {
                status: 413,
                message: format!(
                    "the file holds more than {} features, the most one upload may hold",
                    a.max_features
                ),
            });
        }
        let mut props = Map::new();
        let mut problem: Option<(String, String)> = None;
        for (i, name) in fields.iter().enumerate() {
            let v = match feature.field(i) {
                Ok(v) => v,
                Err(e) => {
                    problem.get_or_insert((
                        format!("properties.{name}"),
                        format!("cannot be read: {e}"),
                    ));
                    continue;
                }
            };
            let j = match v {
                None => Json::Null,
                Some(gdal::vector::FieldValue::StringValue(s)) => {
                    if s.contains('\u{fffd}') {
                        problem.get_or_insert((
                            format!("properties.{name}"),
                            "holds text that is not in the file's encoding (a replacement character appeared); pass encoding=".into(),
                        ));
                    }
                    Json::String(s)
                }
                Some(gdal::vector::FieldValue::IntegerValue(i)) => json!(i),
                Some(gdal::vector::FieldValue::Integer64Value(i)) => json!(i),
                Some(gdal::vector::FieldValue::RealValue(f)) if f.is_finite() => json!(f),
                Some(gdal::vector::FieldValue::RealValue(f)) => {
                    problem.get_or_insert((
                        format!("properties.{name}"),
                        format!("is {f}, not a finite number"),
                    ));
                    Json::Null
                }
                Some(gdal::vector::FieldValue::DateValue(d)) => Json::String(d.to_string()),
                Some(gdal::vector::FieldValue::DateTimeValue(d)) => Json::String(format!(
                    "{}{}",
                    d.naive_local().to_string().replacen(' ', "T", 1),
                    d.offset()
                )),
                Some(other) => {
                    problem.get_or_insert((
                        format!("properties.{name}"),
                        format!("is a list ({other:?}); lists are not read"),
                    ));
                    Json::Null
                }
            };
            props.insert(name.clone(), j);
        }
        let geometry = match feature.geometry() {
            None => Json::Null,
            Some(g) if g.is_empty() => Json::Null,
            Some(g) => {
                let ty = g.geometry_type();
                if gdal::vector::geometry_type_has_z(ty) {
                    info.with_z += 1;
                }
                if gdal::vector::geometry_type_has_m(ty) {
                    info.with_m += 1;
                }
                let g = match &transform {
                    Some(ct) => match g.transform(ct) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            problem.get_or_insert((
                                "geometry".into(),
                                format!("cannot be transformed to WGS84: {e}"),
                            ));
                            None
                        }
                    },
                    None => None,
                };
                let g = g
                    .as_ref()
                    .or(feature.geometry())
                    .ok_or_else(|| refuse("geometry vanished"))?;
                match to_geojson(g) {
                    Ok(j) => j,
                    Err(reason) => {
                        problem.get_or_insert(("geometry".into(), reason));
                        Json::Null
                    }
                }
            }
        };
        let mut line = json!({ "n": n, "p": props, "g": geometry });
        if let Some(p) = problem {
            line["e"] = json!(p);
        }
        serde_json::to_writer(&mut out, &line).map_err(|e| refuse(format!("cannot write: {e}")))?;
        out.write_all(b"\n")
            .map_err(|e| refuse(format!("cannot write: {e}")))?;
    }
    out.flush()
        .map_err(|e| refuse(format!("cannot write: {e}")))?;
    info.features = n;
    Ok(info)
}

/// A GDAL geometry as GeoJSON, 2-D (Z and M dropped), numbers exact (shortest round-trip
/// form). A non-finite coordinate is refused here, with the vertex named.
fn to_geojson(g: &gdal::vector::Geometry) -> Result<Json, String> {
    use gdal::vector::OGRwkbGeometryType as T;
    fn points(g: &gdal::vector::Geometry, at: &mut usize) -> Result<Vec<Json>, String> {
        let mut v = Vec::new();
        g.get_points(&mut v);
        v.iter()
            .map(|(x, y, _)| {
                *at += 1;
                if x.is_finite() && y.is_finite() {
                    Ok(json!([x, y]))
                } else {
                    Err(format!(
                        "vertex {}: coordinate ({x}, {y}) is not finite",
                        *at - 1
                    ))
                }
            })
            .collect()
    }
    fn rings(g: &gdal::vector::Geometry, at: &mut usize) -> Result<Vec<Json>, String> {
        (0..g.geometry_count())
            .map(|i| points(&g.get_geometry(i), at).map(Json::Array))
            .collect()
    }
    let mut at = 0usize;
    let flat = gdal::vector::geometry_type_flatten(g.geometry_type());
    let parts = |f: &dyn Fn(&gdal::vector::Geometry, &mut usize) -> Result<Json, String>,
                 at: &mut usize| {
        (0..g.geometry_count())
            .map(|i| f(&g.get_geometry(i), at))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match flat {
        T::wkbPoint => {
            let mut p = points(g, &mut at)?;
            json!({"type": "Point", "coordinates": p.pop().unwrap_or(Json::Null)})
        }
        T::wkbLineString => json!({"type": "LineString", "coordinates": points(g, &mut at)?}),
        T::wkbPolygon => json!({"type": "Polygon", "coordinates": rings(g, &mut at)?}),
        T::wkbMultiPoint => {
            json!({"type": "MultiPoint", "coordinates": parts(&|p, at| Ok(points(p, at)?.pop().unwrap_or(Json::Null)), &mut at)?})
        }
        T::wkbMultiLineString => {
            json!({"type": "MultiLineString", "coordinates": parts(&|p, at| Ok(Json::Array(points(p, at)?)), &mut at)?})
        }
        T::wkbMultiPolygon => {
            json!({"type": "MultiPolygon", "coordinates": parts(&|p, at| Ok(Json::Array(rings(p, at)?)), &mut at)?})
        }
        other => {
            return Err(format!(
                "is a {}, which riskmap does not store (points, lines and polygons only; curves must be linearised first)",
                gdal::vector::geometry_type_to_name(other)
            ));
        }
    })
}

/// The path of the riskmap binary the worker runs as: `RISKMAP_WORKER_EXE` when set
/// (tests run the server inside a test binary), else this executable.
pub fn default_exe() -> PathBuf {
    std::env::var_os("RISKMAP_WORKER_EXE")
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| PathBuf::from("riskmap"))
}
