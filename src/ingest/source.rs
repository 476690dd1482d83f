//! What a file is, and the one interface every format is read through.
//!
//! The format is decided from the bytes (a zip archive, a SQLite database, FlatGeobuf's
//! magic, a shapefile header, JSON, text), then checked against what the client said
//! (its `Content-Type` or the file name's extension): a file that is not what it says is
//! refused with the format found (a GDAL VRT named `.geojson` is XML, not JSON). GeoJSON
//! and CSV are read by riskmap's own streaming readers in this process; shapefiles,
//! GeoPackages and FlatGeobuf by GDAL in a child process ([`super::worker`]), whose
//! output is then read here. Every [`FeatureReader`] may be read twice: once to validate
//! (no lock held), once to write.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value as Json;

use super::crs::{ImportCrs, ToWgs84};
use super::shapefile::{self, TextEncoding};
use super::worker::{self, Driver, WorkerArgs};
use super::zipped::{self, ZipError};
use super::{ImportOptions, IngestError, Item};
use crate::model::{Feature, FieldError, LayerDef, feature::id_of};

/// The formats riskmap reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A FeatureCollection, a single Feature, or features one per line.
    GeoJson,
    /// Comma-separated values with coordinate columns, for point layers.
    Csv,
    /// An ESRI shapefile (zipped, or its `.shp` on the command line).
    Shapefile,
    GeoPackage,
    FlatGeobuf,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::GeoJson => "GeoJSON",
            Format::Csv => "CSV",
            Format::Shapefile => "ESRI Shapefile",
            Format::GeoPackage => "GeoPackage",
            Format::FlatGeobuf => "FlatGeobuf",
        }
    }

    /// The format a media type names (`Content-Type` of an upload), or `Zip` for an
    /// archive; `None` for media types riskmap does not read.
    pub fn from_media_type(mt: &str) -> Option<Claim> {
        let mt = mt
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Some(match mt.as_str() {
            "application/geo+json"
            | "application/json"
            | "application/geo+json-seq"
            | "application/x-ndjson"
            | "application/vnd.geo+json" => Claim::Format(Format::GeoJson),
            "text/csv" | "application/csv" => Claim::Format(Format::Csv),
            "application/zip" | "application/x-zip-compressed" | "application/x-zip" => Claim::Zip,
            "application/geopackage+sqlite3"
            | "application/x-sqlite3"
            | "application/vnd.sqlite3" => Claim::Format(Format::GeoPackage),
            "application/flatgeobuf" | "application/vnd.flatgeobuf" => {
                Claim::Format(Format::FlatGeobuf)
            }
            "application/octet-stream" => Claim::Any,
            _ => return None,
        })
    }

    /// The format a file name's extension names.
    pub fn from_extension(path: &Path) -> Option<Claim> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "geojson" | "json" | "geojsonl" | "geojsons" | "ndjson" | "jsonl" => {
                Claim::Format(Format::GeoJson)
            }
            "csv" | "txt" => Claim::Format(Format::Csv),
            "zip" => Claim::Zip,
            "shp" => Claim::Format(Format::Shapefile),
            "gpkg" => Claim::Format(Format::GeoPackage),
            "fgb" => Claim::Format(Format::FlatGeobuf),
            _ => return None,
        })
    }
}

/// What the client says a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    Format(Format),
    Zip,
    /// `application/octet-stream`: go by the bytes.
    Any,
}

/// What the bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Format(Format),
    Zip,
    Other(&'static str),
}

fn sniff(head: &[u8]) -> Found {
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let first = text.iter().find(|b| !b.is_ascii_whitespace());
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Found::Zip
    } else if head.starts_with(b"SQLite format 3\0") {
        Found::Format(Format::GeoPackage)
    } else if head.starts_with(b"fgb\x03") {
        Found::Format(Format::FlatGeobuf)
    } else if head.len() >= 4 && head[..4] == [0, 0, 0x27, 0x0a] {
        Found::Format(Format::Shapefile)
    } else if head.starts_with(b"\x1f\x8b") {
        Found::Other("gzip-compressed data")
    } else if head.starts_with(b"%PDF") {
        Found::Other("a PDF document")
    } else if matches!(first, Some(b'{') | Some(b'[') | Some(0x1e)) {
        Found::Format(Format::GeoJson)
    } else if matches!(first, Some(b'<')) {
        let lower = String::from_utf8_lossy(&text[..text.len().min(512)]).to_ascii_lowercase();
        if lower.contains("<ogrvrtdatasource") || lower.contains("<vrtdataset") {
            Found::Other("a GDAL VRT (XML that points at other files)")
        } else if lower.contains("<html") || lower.contains("<!doctype html") {
            Found::Other("an HTML page")
        } else if lower.contains("gml") {
            Found::Other("GML (XML)")
        } else if lower.contains("<kml") {
            Found::Other("KML (XML)")
        } else {
            Found::Other("XML")
        }
    } else if first.is_none() {
        Found::Other("an empty file")
    } else if head.iter().take(4096).any(|b| *b == 0) {
        Found::Other("binary data of an unknown format")
    } else {
        Found::Format(Format::Csv)
    }
}

fn found_name(f: Found) -> String {
    match f {
        Found::Format(f) => f.name().to_string(),
        Found::Zip => "a zip archive".into(),
        Found::Other(s) => s.into(),
    }
}

/// What was found out about a file, for the report.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SourceInfo {
    pub format: String,
    /// The GDAL driver that read it, when GDAL did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The layer read, for multi-layer files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_layer: Option<String>,
    pub crs: String,
    /// `file`, `.prj`, `request`, `none (lon/lat assumed)`.
    pub crs_source: String,
    pub encoding: String,
    pub encoding_source: String,
    /// Features whose Z (or M) values were dropped: the store is 2-D.
    pub z_dropped: u64,
    pub m_dropped: u64,
    /// Archive entries not read (resource forks, metadata documents).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_entries: Vec<String>,
}

/// Reads features of one prepared file. Implemented by the GeoJSON and CSV readers and
/// by the reader of GDAL's output; may be called more than once.
pub trait FeatureReader: Send + Sync {
    fn info(&self) -> &SourceInfo;
    fn info_mut(&mut self) -> &mut SourceInfo;
    /// Bytes a read goes through (for progress).
    fn size(&self) -> u64;
    /// Hands every feature, valid or refused, to `sink`; counts bytes read in `bytes`.
    /// Returns the CRS the data declared while being read (a GeoJSON `crs` member), if
    /// the info did not know it.
    fn read(
        &self,
        layer: &LayerDef,
        opts: &ImportOptions,
        bytes: &AtomicU64,
        sink: &mut dyn FnMut(Item) -> Result<(), IngestError>,
    ) -> Result<Option<String>, IngestError>;
    /// Hands every feature over as read (a GeoJSON Feature object, after `map=` and the
    /// CRS transform), before any check against a layer: for inferring the schema of a
    /// new layer.
    fn read_raw(
        &self,
        opts: &ImportOptions,
        each: &mut dyn FnMut(u64, &Json) -> Result<(), IngestError>,
    ) -> Result<(), IngestError>;
}

/// A directory of the import's own, removed when dropped.
pub struct WorkDir(PathBuf);

impl WorkDir {
    /// A new private directory under `parent` (the system's temp dir by default).
    pub fn new(parent: Option<&Path>) -> std::io::Result<WorkDir> {
        let parent = parent
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let path = parent.join(format!("riskmap-import-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        Ok(WorkDir(path))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens a prepared file, errors naming it as the client knows it.
fn open_file(path: &Path, shown: &Path) -> Result<File, IngestError> {
    File::open(path).map_err(|source| IngestError::Read {
        path: shown.to_path_buf(),
        source,
    })
}

/// Counts bytes on the way through.
struct Counted<'a, R> {
    inner: R,
    bytes: &'a AtomicU64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Decodes text of another encoding to UTF-8 on the way through (the file was checked
/// to decode without error before).
struct ToUtf8<R> {
    inner: R,
    decoder: encoding_rs::Decoder,
    input: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R> ToUtf8<R> {
    fn new(inner: R, enc: TextEncoding) -> Self {
        ToUtf8 {
            inner,
            decoder: enc.encoding.new_decoder_without_bom_handling(),
            input: vec![0; 1 << 16],
            start: 0,
            end: 0,
            eof: false,
        }
    }
}

impl<R: Read> Read for ToUtf8<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.len() < 4 {
            return Err(std::io::Error::other("buffer too small"));
        }
        loop {
            if self.start == self.end && !self.eof {
                self.start = 0;
                self.end = self.inner.read(&mut self.input)?;
                self.eof = self.end == 0;
            }
            let (result, read, written) = self.decoder.decode_to_utf8_without_replacement(
                &self.input[self.start..self.end],
                buf,
                self.eof,
            );
            self.start += read;
            if let encoding_rs::DecoderResult::Malformed(_, _) = result {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "text is not valid in the file's encoding",
                ));
            }
            if written > 0 || (self.eof && self.start == self.end) {
                return Ok(written);
            }
        }
    }
}

/// Checks that the file at `path` decodes without error in `enc` (streaming).
fn decodes(path: &Path, enc: TextEncoding) -> std::io::Result<bool> {
    let mut r = ToUtf8::new(File::open(path)?, enc);
    let mut out = vec![0u8; 1 << 17];
    loop {
        match r.read(&mut out) {
            Ok(0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Settings of the readers that are not the client's to choose.
#[derive(Clone, Debug)]
pub struct ReaderSettings {
    /// The riskmap binary GDAL runs in.
    pub worker_exe: PathBuf,
    pub worker: worker::WorkerLimits,
    pub zip: zipped::ZipCaps,
}

impl Default for ReaderSettings {
    fn default() -> Self {
        ReaderSettings {
            worker_exe: worker::default_exe(),
            worker: worker::WorkerLimits::default(),
            zip: zipped::ZipCaps {
                max_entries: 1000,
                // RISKMAP_MAX_UNZIPPED_MB lowers (or raises) the 8 GiB default.
                max_bytes: std::env::var("RISKMAP_MAX_UNZIPPED_MB")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(8 << 30, |mb| mb << 20),
            },
        }
    }
}

/// An error about the file itself (422), or about its size (413).
fn unreadable(path: &Path, message: impl Into<String>) -> IngestError {
    IngestError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Prepares `path` for reading: decides its format (checked against `claim`), unpacks
/// an archive into `work`, runs GDAL for the formats it reads, detects the encoding.
/// `shown` is the file's name in messages.
pub fn open(
    path: &Path,
    shown: &str,
    claim: Option<Claim>,
    work: &Path,
    opts: &ImportOptions,
    settings: &ReaderSettings,
) -> Result<Box<dyn FeatureReader>, IngestError> {
    let shown_path = PathBuf::from(shown);
    let mut head = [0u8; 4096];
    let n = {
        let mut f = File::open(path).map_err(|source| IngestError::Read {
            path: shown_path.clone(),
            source,
        })?;
        read_up_to(&mut f, &mut head).map_err(|source| IngestError::Read {
            path: shown_path.clone(),
            source,
        })?
    };
    let found = sniff(&head[..n]);
    if found == Found::Other("an empty file") {
        return Err(unreadable(
            &shown_path,
            "the file is empty: it holds no JSON, no CSV, no features",
        ));
    }
    let claim = claim
        .or_else(|| Format::from_extension(path))
        .unwrap_or(Claim::Any);
    let agrees = match (claim, found) {
        (Claim::Any, _) => true,
        (Claim::Zip, Found::Zip) => true,
        (Claim::Format(a), Found::Format(b)) => a == b,
        _ => false,
    };
    if !agrees {
        let said = match claim {
            Claim::Format(f) => f.name().to_string(),
            Claim::Zip => "a zip archive".into(),
            Claim::Any => unreachable!(),
        };
        return Err(unreadable(
            &shown_path,
            format!(
                "the file is {}, not {said} as its name or Content-Type says",
                found_name(found)
            ),
        ));
    }
    match found {
        Found::Format(Format::GeoJson) => Ok(Box::new(GeoJsonFile::new(path, &shown_path, opts)?)),
        Found::Format(Format::Csv) => Ok(Box::new(CsvFile::new(path, &shown_path, opts)?)),
        Found::Format(Format::GeoPackage) => gdal(
            path,
            "upload.gpkg",
            Driver::Gpkg,
            &shown_path,
            work,
            opts,
            settings,
            false,
            Vec::new(),
        ),
        Found::Format(Format::FlatGeobuf) => gdal(
            path,
            "upload.fgb",
            Driver::FlatGeobuf,
            &shown_path,
            work,
            opts,
            settings,
            false,
            Vec::new(),
        ),
        Found::Format(Format::Shapefile) => {
            // A bare .shp on the command line: its siblings are beside it.
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            for ext in ["shp", "shx", "dbf", "prj", "cpg"] {
                let from = path.with_file_name(format!("{stem}.{ext}"));
                let from = if from.exists() {
                    from
                } else {
                    path.with_file_name(format!("{stem}.{}", ext.to_ascii_uppercase()))
                };
                if from.exists() {
                    std::fs::copy(&from, work.join(format!("e0.{ext}"))).map_err(|source| {
                        IngestError::Read {
                            path: from.clone(),
                            source,
                        }
                    })?;
                }
            }
            shapefile_in(work, "e0", stem, &shown_path, opts, settings, Vec::new())
        }
        Found::Zip => {
            let (files, skipped) =
                zipped::unpack(path, work, settings.zip).map_err(|e| match e {
                    ZipError::TooLarge(m) => IngestError::TooLarge { message: m },
                    ZipError::Refused(m) => unreadable(&shown_path, m),
                })?;
            // Datasets in the archive: shapefiles by stem, and single-file formats.
            let mut sets: Vec<(String, String, &'static str)> = Vec::new(); // (original, stem, kind)
            for f in &files {
                let kind = match f.ext.as_str() {
                    "shp" => "shp",
                    "gpkg" => "gpkg",
                    "fgb" => "fgb",
                    "geojson" | "json" => "geojson",
                    "csv" => "csv",
                    _ => continue,
                };
                sets.push((f.original_stem.clone(), f.stem.clone(), kind));
            }
            let chosen = match (&opts.source_layer, sets.len()) {
                (_, 0) => {
                    return Err(unreadable(
                        &shown_path,
                        format!(
                            "the archive holds no dataset riskmap reads (a .shp with its .shx and .dbf, .gpkg, .fgb, .geojson or .csv); it holds: {}",
                            files
                                .iter()
                                .map(|f| f.original.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                (Some(want), _) if sets.iter().any(|s| &s.0 == want) => {
                    sets.iter().find(|s| &s.0 == want)
                }
                (_, 1) => sets.first(),
                // A multi-layer file inside: source_layer= is for its layers.
                (Some(_), _) | (None, _) => {
                    if opts.source_layer.is_none() || sets.len() > 1 {
                        return Err(unreadable(
                            &shown_path,
                            format!(
                                "the archive holds {} datasets ({}); name one with source_layer=",
                                sets.len(),
                                sets.iter()
                                    .map(|s| s.0.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                    }
                    sets.first()
                }
            };
            let (original, stem, kind) = chosen
                .cloned()
                .ok_or_else(|| unreadable(&shown_path, "no dataset chosen"))?;
            let shown_inner = PathBuf::from(format!("{shown}/{original}"));
            let one = |ext: &str| work.join(format!("{stem}.{ext}"));
            let mut reader: Box<dyn FeatureReader> = match kind {
                "shp" => shapefile_in(
                    work,
                    &stem,
                    &original,
                    &shown_inner,
                    opts,
                    settings,
                    skipped.clone(),
                )?,
                "gpkg" => gdal_named(
                    &format!("{stem}.gpkg"),
                    Driver::Gpkg,
                    &shown_inner,
                    work,
                    opts,
                    settings,
                    false,
                    skipped.clone(),
                )?,
                "fgb" => gdal_named(
                    &format!("{stem}.fgb"),
                    Driver::FlatGeobuf,
                    &shown_inner,
                    work,
                    opts,
                    settings,
                    false,
                    skipped.clone(),
                )?,
                "geojson" => {
                    let p = if one("geojson").exists() {
                        one("geojson")
                    } else {
                        one("json")
                    };
                    Box::new(GeoJsonFile::new(&p, &shown_inner, opts)?)
                }
                _ => Box::new(CsvFile::new(&one("csv"), &shown_inner, opts)?),
            };
            reader.info_mut().skipped_entries = skipped;
            Ok(reader)
        }
        Found::Other(what) => Err(unreadable(
            &shown_path,
            format!(
                "the file is {what}, which riskmap does not import (GeoJSON, CSV, a zipped shapefile, GeoPackage or FlatGeobuf)"
            ),
        )),
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[allow(clippy::too_many_arguments)]
fn gdal(
    path: &Path,
    name: &str,
    driver: Driver,
    shown: &Path,
    work: &Path,
    opts: &ImportOptions,
    settings: &ReaderSettings,
    has_prj: bool,
    skipped: Vec<String>,
) -> Result<Box<dyn FeatureReader>, IngestError> {
    let target = work.join(name);
    if path != target {
        // Hard link when on the same file system, else a copy: GDAL gets a name
        // riskmap made, in the directory it may read.
        if std::fs::hard_link(path, &target).is_err() {
            std::fs::copy(path, &target).map_err(|source| IngestError::Read {
                path: shown.to_path_buf(),
                source,
            })?;
        }
    }
    gdal_named(name, driver, shown, work, opts, settings, has_prj, skipped)
}

#[allow(clippy::too_many_arguments)]
fn gdal_named(
    name: &str,
    driver: Driver,
    shown: &Path,
    work: &Path,
    opts: &ImportOptions,
    settings: &ReaderSettings,
    has_prj: bool,
    skipped: Vec<String>,
) -> Result<Box<dyn FeatureReader>, IngestError> {
    gdal_run(
        name, driver, shown, work, opts, settings, has_prj, None, skipped,
    )
}

fn shapefile_in(
    work: &Path,
    stem: &str,
    original: &str,
    shown: &Path,
    opts: &ImportOptions,
    settings: &ReaderSettings,
    skipped: Vec<String>,
) -> Result<Box<dyn FeatureReader>, IngestError> {
    // Messages name the shapefile's own parts (`roads.dbf`); the error adds the upload.
    let decided =
        shapefile::check(work, stem, original, opts.encoding).map_err(|m| unreadable(shown, m))?;
    let has_prj = work.join(format!("{stem}.prj")).exists();
    let mut reader = gdal_run(
        &format!("{stem}.shp"),
        Driver::Shapefile,
        shown,
        work,
        opts,
        settings,
        has_prj,
        Some(decided),
        skipped,
    )?;
    reader.info_mut().source_layer = Some(original.to_string());
    Ok(reader)
}

#[allow(clippy::too_many_arguments)]
fn gdal_run(
    name: &str,
    driver: Driver,
    shown: &Path,
    work: &Path,
    opts: &ImportOptions,
    settings: &ReaderSettings,
    has_prj: bool,
    encoding: Option<shapefile::Decided>,
    skipped: Vec<String>,
) -> Result<Box<dyn FeatureReader>, IngestError> {
    let output = format!("{}.features", name.replace('.', "_"));
    let (epsg, raw) = match opts.crs {
        Some(ImportCrs::Epsg(n)) => (Some(n), false),
        Some(ImportCrs::Wgs84) => (Some(4326), false),
        Some(ImportCrs::Gcj02 | ImportCrs::Bd09) => (None, true),
        None => (None, false),
    };
    let args = WorkerArgs {
        input: name.to_string(),
        driver,
        output: output.clone(),
        encoding: encoding.as_ref().map(|d| d.encoding.gdal.to_string()),
        epsg,
        raw,
        layer: opts
            .source_layer
            .clone()
            .filter(|_| driver != Driver::Shapefile),
        has_prj,
        memory_bytes: settings.worker.memory_bytes,
        cpu_seconds: settings.worker.cpu_seconds,
        output_bytes: settings.worker.output_bytes,
        max_features: settings.worker.max_features,
    };
    let info =
        worker::run(&settings.worker_exe, work, &args, settings.worker).map_err(|e| {
            match e.status {
                413 => IngestError::TooLarge { message: e.message },
                _ => unreadable(shown, e.message),
            }
        })?;
    let (encoding, encoding_source) = match (&encoding, driver) {
        (Some(d), _) => (d.encoding.name.to_string(), d.source.to_string()),
        (None, _) => (
            "UTF-8".to_string(),
            format!("{} is always UTF-8", driver.gdal_name()),
        ),
    };
    let (crs, crs_source) = match opts.crs {
        Some(c @ (ImportCrs::Gcj02 | ImportCrs::Bd09)) => (c.name(), "request".to_string()),
        _ => (info.crs.clone(), info.crs_source.clone()),
    };
    let format = match driver {
        Driver::Shapefile => Format::Shapefile,
        Driver::Gpkg => Format::GeoPackage,
        Driver::FlatGeobuf => Format::FlatGeobuf,
    };
    let path = work.join(&output);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(Box::new(GdalOutput {
        path,
        size,
        shown: shown.to_path_buf(),
        info: SourceInfo {
            format: format.name().into(),
            driver: Some(info.driver),
            source_layer: Some(info.layer),
            crs,
            crs_source,
            encoding,
            encoding_source,
            z_dropped: info.with_z,
            m_dropped: info.with_m,
            skipped_entries: skipped,
        },
    }))
}

/// The transformation the options ask for, or the identity.
fn transform_for(crs: Option<ImportCrs>) -> Result<Option<ToWgs84>, String> {
    match crs {
        None | Some(ImportCrs::Wgs84) => Ok(None),
        Some(c) => ToWgs84::new(c).map(Some),
    }
}

/// Renames properties by the `map=` option, and transforms a GeoJSON geometry's
/// positions in place. Errors name the field.
pub(super) fn adapt(
    v: &mut Json,
    opts: &ImportOptions,
    to_wgs84: Option<&ToWgs84>,
) -> Result<(), FieldError> {
    if !opts.map.is_empty() {
        if let Some(props) = v.get_mut("properties").and_then(Json::as_object_mut) {
            let mut renamed = serde_json::Map::with_capacity(props.len());
            for (k, val) in std::mem::take(props) {
                let to = opts
                    .map
                    .iter()
                    .find(|(from, _)| *from == k)
                    .map(|(_, to)| to.clone());
                let key = to.unwrap_or(k);
                if renamed.contains_key(&key) {
                    return Err(FieldError::new(
                        format!("properties.{key}"),
                        "is given twice once map= is applied (a source property maps onto one the file also has)",
                    ));
                }
                renamed.insert(key, val);
            }
            *props = renamed;
        }
    }
    if let Some(t) = to_wgs84 {
        if let Some(coords) = v.get_mut("geometry").and_then(|g| g.get_mut("coordinates")) {
            transform_positions(coords, t, "geometry.coordinates")?;
        }
    }
    Ok(())
}

fn transform_positions(v: &mut Json, t: &ToWgs84, at: &str) -> Result<(), FieldError> {
    let Some(items) = v.as_array_mut() else {
        return Ok(()); // the validator names what is wrong
    };
    if items.first().is_some_and(Json::is_number) {
        if items.len() >= 2 {
            let (Some(x), Some(y)) = (items[0].as_f64(), items[1].as_f64()) else {
                return Ok(());
            };
            let c = t
                .apply(geo_types::Coord { x, y })
                .map_err(|e| FieldError::new(at.to_string(), e))?;
            items[0] = Json::from(c.x);
            items[1] = Json::from(c.y);
        }
        return Ok(());
    }
    for (i, item) in items.iter_mut().enumerate() {
        transform_positions(item, t, &format!("{at}[{i}]"))?;
    }
    Ok(())
}

/// GeoJSON, read by riskmap's streaming reader.
struct GeoJsonFile {
    path: PathBuf,
    shown: PathBuf,
    size: u64,
    info: SourceInfo,
}

impl GeoJsonFile {
    fn new(path: &Path, shown: &Path, opts: &ImportOptions) -> Result<Self, IngestError> {
        if let Some(e) = opts.encoding {
            if e.name != "UTF-8" {
                return Err(unreadable(
                    shown,
                    format!(
                        "GeoJSON is UTF-8 by definition (RFC 8259); encoding={} does not apply",
                        e.name
                    ),
                ));
            }
        }
        transform_for(opts.crs).map_err(|m| unreadable(shown, m))?;
        Ok(GeoJsonFile {
            path: path.to_path_buf(),
            shown: shown.to_path_buf(),
            size: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            info: SourceInfo {
                format: Format::GeoJson.name().into(),
                crs: opts.crs.map_or("EPSG:4326".into(), |c| c.name()),
                crs_source: if opts.crs.is_some() {
                    "request".into()
                } else {
                    "GeoJSON default (WGS84)".into()
                },
                encoding: "UTF-8".into(),
                encoding_source: "GeoJSON is always UTF-8".into(),
                ..Default::default()
            },
        })
    }
}

impl FeatureReader for GeoJsonFile {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn info_mut(&mut self) -> &mut SourceInfo {
        &mut self.info
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read(
        &self,
        layer: &LayerDef,
        opts: &ImportOptions,
        bytes: &AtomicU64,
        sink: &mut dyn FnMut(Item) -> Result<(), IngestError>,
    ) -> Result<Option<String>, IngestError> {
        let file = open_file(&self.path, &self.shown)?;
        let mut r = Counted {
            inner: BufReader::with_capacity(1 << 20, file),
            bytes,
        };
        let t = transform_for(opts.crs).map_err(|m| unreadable(&self.shown, m))?;
        super::geojson::read(&self.shown, layer, opts, t, &mut r, sink)
    }
    fn read_raw(
        &self,
        opts: &ImportOptions,
        each: &mut dyn FnMut(u64, &Json) -> Result<(), IngestError>,
    ) -> Result<(), IngestError> {
        let file = open_file(&self.path, &self.shown)?;
        let mut r = BufReader::with_capacity(1 << 20, file);
        let t = transform_for(opts.crs).map_err(|m| unreadable(&self.shown, m))?;
        super::geojson::read_raw(&self.shown, opts, t, &mut r, each).map(|_| ())
    }
}

/// CSV, read by riskmap's reader, decoded to UTF-8 first when it is in another encoding.
struct CsvFile {
    path: PathBuf,
    shown: PathBuf,
    size: u64,
    encoding: TextEncoding,
    info: SourceInfo,
}

impl CsvFile {
    fn new(path: &Path, shown: &Path, opts: &ImportOptions) -> Result<Self, IngestError> {
        let io = |source| IngestError::Read {
            path: shown.to_path_buf(),
            source,
        };
        let (encoding, source) = match opts.encoding {
            Some(e) => {
                if !decodes(path, e).map_err(io)? {
                    return Err(unreadable(
                        shown,
                        format!(
                            "the file is not valid {} text, as encoding= says; give its real encoding",
                            e.name
                        ),
                    ));
                }
                (e, "request")
            }
            None if decodes(path, shapefile::UTF8).map_err(io)? => (shapefile::UTF8, "detected"),
            None if decodes(path, shapefile::GB18030).map_err(io)? => {
                (shapefile::GB18030, "detected")
            }
            None => {
                return Err(unreadable(
                    shown,
                    "the file is neither UTF-8 nor GBK/GB18030 text; pass encoding= with its encoding",
                ));
            }
        };
        transform_for(opts.crs).map_err(|m| unreadable(shown, m))?;
        Ok(CsvFile {
            path: path.to_path_buf(),
            shown: shown.to_path_buf(),
            size: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            encoding,
            info: SourceInfo {
                format: Format::Csv.name().into(),
                crs: opts.crs.map_or("EPSG:4326".into(), |c| c.name()),
                crs_source: if opts.crs.is_some() {
                    "request".into()
                } else {
                    "none (lon/lat assumed)".into()
                },
                encoding: encoding.name.into(),
                encoding_source: source.into(),
                ..Default::default()
            },
        })
    }
}

impl CsvFile {
    /// `inner`'s text as UTF-8: as it is, or decoded from the file's encoding.
    fn in_utf8<'a>(&self, inner: impl Read + 'a) -> Box<dyn Read + 'a> {
        if self.encoding.name == "UTF-8" {
            Box::new(inner)
        } else {
            Box::new(ToUtf8::new(inner, self.encoding))
        }
    }
}

impl FeatureReader for CsvFile {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn info_mut(&mut self) -> &mut SourceInfo {
        &mut self.info
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read(
        &self,
        layer: &LayerDef,
        opts: &ImportOptions,
        bytes: &AtomicU64,
        sink: &mut dyn FnMut(Item) -> Result<(), IngestError>,
    ) -> Result<Option<String>, IngestError> {
        let file = open_file(&self.path, &self.shown)?;
        let counted = Counted {
            inner: BufReader::with_capacity(1 << 20, file),
            bytes,
        };
        let t = transform_for(opts.crs).map_err(|m| unreadable(&self.shown, m))?;
        let mut r = self.in_utf8(counted);
        super::csv::read(&self.shown, layer, opts, t.as_ref(), &mut r, sink)?;
        Ok(None)
    }
    fn read_raw(
        &self,
        opts: &ImportOptions,
        each: &mut dyn FnMut(u64, &Json) -> Result<(), IngestError>,
    ) -> Result<(), IngestError> {
        let file = open_file(&self.path, &self.shown)?;
        let t = transform_for(opts.crs).map_err(|m| unreadable(&self.shown, m))?;
        let mut r = self.in_utf8(BufReader::with_capacity(1 << 20, file));
        super::csv::read_raw(&self.shown, opts, t.as_ref(), &mut r, each)
    }
}

/// What the GDAL worker wrote: one JSON line per feature, positions in WGS84 (or as
/// given, for GCJ-02 and BD-09, transformed here).
struct GdalOutput {
    path: PathBuf,
    shown: PathBuf,
    size: u64,
    info: SourceInfo,
}

impl GdalOutput {
    /// Each line of the worker's output as (number, GeoJSON Feature, the worker's
    /// problem), positions adapted (GCJ-02/BD-09, `map=`).
    fn lines(
        &self,
        opts: &ImportOptions,
        bytes: &AtomicU64,
        each: &mut dyn FnMut(u64, Json, Result<(), FieldError>) -> Result<(), IngestError>,
    ) -> Result<(), IngestError> {
        use std::io::BufRead;
        let t = match opts.crs {
            Some(c @ (ImportCrs::Gcj02 | ImportCrs::Bd09)) => {
                Some(ToWgs84::new(c).map_err(|m| unreadable(&self.shown, m))?)
            }
            _ => None,
        };
        let file = open_file(&self.path, &self.shown)?;
        let r = BufReader::with_capacity(1 << 20, file);
        for line in r.split(b'\n') {
            let line = line.map_err(|source| IngestError::Read {
                path: self.shown.clone(),
                source,
            })?;
            bytes.fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
            let l: worker::Line = serde_json::from_slice(&line).map_err(|e| {
                unreadable(
                    &self.shown,
                    format!("the GDAL worker's output is not readable: {e}"),
                )
            })?;
            let mut v = serde_json::json!({ "type": "Feature", "properties": Json::Object(l.p), "geometry": l.g });
            let problem = match l.e {
                Some((field, reason)) => Err(FieldError::new(field, reason)),
                None => adapt(&mut v, opts, t.as_ref()),
            };
            each(l.n, v, problem)?;
        }
        Ok(())
    }
}

impl FeatureReader for GdalOutput {
    fn info(&self) -> &SourceInfo {
        &self.info
    }
    fn info_mut(&mut self) -> &mut SourceInfo {
        &mut self.info
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read(
        &self,
        layer: &LayerDef,
        opts: &ImportOptions,
        bytes: &AtomicU64,
        sink: &mut dyn FnMut(Item) -> Result<(), IngestError>,
    ) -> Result<Option<String>, IngestError> {
        self.lines(opts, bytes, &mut |n, v, problem| {
            let result = problem
                .map_err(|e| vec![e])
                .and_then(|_| Feature::from_geojson_all(layer, &v))
                .map_err(|e| (id_of(layer, &v).ok().flatten(), e));
            sink(Item {
                number: n,
                line: None,
                result,
            })
        })?;
        Ok(None)
    }
    fn read_raw(
        &self,
        opts: &ImportOptions,
        each: &mut dyn FnMut(u64, &Json) -> Result<(), IngestError>,
    ) -> Result<(), IngestError> {
        let bytes = AtomicU64::new(0);
        self.lines(opts, &bytes, &mut |n, v, problem| match problem {
            Ok(()) => each(n, &v),
            Err(e) => Err(unreadable(&self.shown, format!("feature {n}: {e}"))),
        })
    }
}
