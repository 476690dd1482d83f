//! Unpacking an uploaded zip archive (a zipped shapefile, usually) into the upload's
//! own temporary directory, treating the archive as hostile:
//! - an entry whose name holds `..`, starts with `/` or a drive letter, or holds a
//!   backslash or NUL is refused (zip slip), as is a symbolic link, an encrypted entry,
//!   or an archive inside the archive (`.zip`, `.gz`, `.7z`...: nesting is how bombs
//!   multiply);
//! - entries are written under names riskmap makes (`e0.shp`, `e0.dbf`...: the client's
//!   names are kept only for messages), so nothing lands outside the directory whatever
//!   the archive says; two entries whose names differ only in case or folder are refused,
//!   since which one a reader would take is undefined;
//! - bytes are counted while inflating, against the caps, not taken from the central
//!   directory (which can lie): an archive that inflates past them is refused with 413;
//! - macOS's `__MACOSX/` resource forks and `.DS_Store` files are skipped, as are files
//!   no reader needs (a PDF of metadata): they are listed in the report.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Caps on what one archive may hold.
#[derive(Clone, Copy, Debug)]
pub struct ZipCaps {
    pub max_entries: usize,
    /// Bytes written out, all entries together.
    pub max_bytes: u64,
}

/// A file taken out of the archive.
#[derive(Clone, Debug)]
pub struct Unpacked {
    /// The name in the archive (for messages), without its folders.
    pub original: String,
    /// Lower-case extension.
    pub ext: String,
    /// Where it was written (inside the directory, a name riskmap made).
    pub path: PathBuf,
    /// Entries sharing a base name share a stem (`e3`): a shapefile's parts.
    pub stem: String,
    /// The original base name without extension (`roads` for `data/roads.shp`).
    pub original_stem: String,
}

/// Why an archive was refused.
#[derive(Debug)]
pub enum ZipError {
    /// Too big: 413.
    TooLarge(String),
    /// Anything else: 422.
    Refused(String),
}

/// Extensions kept: what the readers use.
const KEPT: [&str; 14] = [
    "shp", "shx", "dbf", "prj", "cpg", "qix", "sbn", "sbx", "gpkg", "fgb", "geojson", "json",
    "csv", "txt",
];
/// Archive and compression formats: never unpacked, refused.
const NESTED: [&str; 12] = [
    "zip", "gz", "tgz", "tar", "7z", "rar", "bz2", "xz", "zst", "kmz", "lz", "lzma",
];

/// Unpacks `archive` into `dir` (see the module comment). Returns the files kept and
/// the names skipped.
pub fn unpack(
    archive: &Path,
    dir: &Path,
    caps: ZipCaps,
) -> Result<(Vec<Unpacked>, Vec<String>), ZipError> {
    let refused = |m: String| ZipError::Refused(m);
    let file = File::open(archive).map_err(|e| refused(format!("cannot open the upload: {e}")))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| refused(format!("the body is not a readable zip archive: {e}")))?;
    if zip.len() > caps.max_entries {
        return Err(ZipError::TooLarge(format!(
            "the archive has {} entries; at most {} are accepted",
            zip.len(),
            caps.max_entries
        )));
    }
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut stems: HashMap<String, String> = HashMap::new();
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| {
            refused(format!(
                "entry {} of the archive cannot be read: {e}",
                i + 1
            ))
        })?;
        let name = entry.name().to_string();
        let bad_name = name.contains('\\')
            || name.contains('\0')
            || name.starts_with('/')
            || name.split('/').any(|s| s == "..")
            || name.as_bytes().get(1) == Some(&b':');
        if bad_name || entry.enclosed_name().is_none() {
            return Err(refused(format!(
                "the archive entry {name:?} has a path that leaves the archive (absolute, '..', a backslash or a drive): refused"
            )));
        }
        if entry.is_symlink() {
            return Err(refused(format!(
                "the archive entry {name:?} is a symbolic link: refused"
            )));
        }
        if entry.is_dir() {
            continue;
        }
        if entry.encrypted() {
            return Err(refused(format!(
                "the archive entry {name:?} is encrypted: refused"
            )));
        }
        let base = name.rsplit('/').next().unwrap_or(&name).to_string();
        if name.starts_with("__MACOSX/") || base == ".DS_Store" || base.starts_with("._") {
            skipped.push(name);
            continue;
        }
        let (stem_part, ext) = match base.rsplit_once('.') {
            Some((s, e)) => (s.to_string(), e.to_ascii_lowercase()),
            None => (base.clone(), String::new()),
        };
        if NESTED.contains(&ext.as_str()) {
            return Err(refused(format!(
                "the archive entry {name:?} is itself an archive: nested archives are refused; unpack it and upload its contents"
            )));
        }
        if !KEPT.contains(&ext.as_str()) {
            skipped.push(name);
            continue;
        }
        let key = base.to_lowercase();
        if let Some(first) = seen.insert(key, name.clone()) {
            return Err(refused(format!(
                "the archive holds both {first:?} and {name:?}: names that differ only in case or folder are refused"
            )));
        }
        let next = stems.len();
        let stem = stems
            .entry(stem_part.to_lowercase())
            .or_insert_with(|| format!("e{next}"))
            .clone();
        let path = dir.join(format!("{stem}.{ext}"));
        let mut out = File::create_new(&path)
            .map_err(|e| refused(format!("cannot write {name:?} out: {e}")))?;
        let room = caps.max_bytes - total;
        let written = std::io::copy(&mut (&mut entry).take(room + 1), &mut out).map_err(|e| {
            refused(format!(
                "the archive entry {name:?} cannot be inflated: {e}"
            ))
        })?;
        total += written;
        if total > caps.max_bytes {
            return Err(ZipError::TooLarge(format!(
                "the archive inflates to more than {} bytes (at entry {name:?}): refused",
                caps.max_bytes
            )));
        }
        out.flush()
            .map_err(|e| refused(format!("cannot write {name:?} out: {e}")))?;
        kept.push(Unpacked {
            original: base,
            ext,
            path,
            stem,
            original_stem: stem_part,
        });
    }
    Ok((kept, skipped))
}
