//! What riskmap checks itself in a shapefile before GDAL sees it: that the three files
//! agree (a truncated `.shp`, a `.shx` pointing past the end, a `.dbf` with another
//! record count are refused with the problem named, where GDAL would read part of the
//! file without a word), and which text encoding its `.dbf` is in.
//!
//! Encoding, in order: the request's `encoding=`; the `.cpg`; the `.dbf`'s language
//! driver byte (0x4D: GBK, code page 936; 0x4F: Big5; 0x7A: GBK in ArcGIS's numbering...);
//! else detected from the bytes: all text valid UTF-8 is UTF-8, else text that decodes as
//! GB18030 (GBK's superset) without error is GB18030. Whatever the source, every text
//! cell is then decoded with the chosen encoding and one that does not decode is refused
//! naming the record and field: a wrong guess never turns into replacement characters.
//! Hand-written: reading a DBF's header and scanning its text cells is a few dozen lines
//! and must happen before the file reaches GDAL (shapefile crates decode lossily).

use std::path::Path;

use encoding_rs::Encoding;

/// An encoding a client or a file may name, and the name GDAL's iconv knows it by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextEncoding {
    /// The name reports show.
    pub name: &'static str,
    /// The name given to GDAL (`ENCODING=` open option of the shapefile driver).
    pub gdal: &'static str,
    pub encoding: &'static Encoding,
}

pub const UTF8: TextEncoding = TextEncoding {
    name: "UTF-8",
    gdal: "UTF-8",
    encoding: encoding_rs::UTF_8,
};
pub const GBK: TextEncoding = TextEncoding {
    name: "GBK",
    gdal: "CP936",
    encoding: encoding_rs::GBK,
};
pub const GB18030: TextEncoding = TextEncoding {
    name: "GB18030",
    gdal: "GB18030",
    encoding: encoding_rs::GB18030,
};
pub const BIG5: TextEncoding = TextEncoding {
    name: "Big5",
    gdal: "CP950",
    encoding: encoding_rs::BIG5,
};
pub const LATIN1: TextEncoding = TextEncoding {
    name: "ISO-8859-1",
    gdal: "ISO-8859-1",
    encoding: encoding_rs::WINDOWS_1252,
};

impl TextEncoding {
    /// Parses a name a client or a `.cpg` gives (case and punctuation ignored):
    /// UTF-8, GBK/CP936/936, GB18030, GB2312 (read as GBK, its superset), Big5/CP950,
    /// Latin-1/CP1252.
    pub fn parse(text: &str) -> Option<TextEncoding> {
        let t: String = text
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        Some(match t.as_str() {
            "utf8" | "65001" => UTF8,
            "gbk" | "cp936" | "936" | "gb2312" | "ansi936" | "windows936" | "euccn" => GBK,
            "gb18030" | "54936" => GB18030,
            "big5" | "cp950" | "950" => BIG5,
            "latin1" | "iso88591" | "cp1252" | "1252" | "windows1252" => LATIN1,
            _ => return None,
        })
    }

    /// Decodes `bytes` strictly: `None` when they are not valid in this encoding.
    pub fn decode_strict(&self, bytes: &[u8]) -> Option<String> {
        self.encoding
            .decode_without_bom_handling_and_without_replacement(bytes)
            .map(|c| c.into_owned())
    }
}

/// How the encoding was decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decided {
    pub encoding: TextEncoding,
    /// `request`, `.cpg`, `DBF language byte`, `detected`, `ASCII only`.
    pub source: &'static str,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The `.dbf`'s layout, read from its header.
struct Dbf {
    records: u64,
    header_len: usize,
    record_len: usize,
    language: u8,
    /// Character fields: name, offset in the record, length.
    text_fields: Vec<(String, usize, usize)>,
}

fn read_dbf_header(name: &str, b: &[u8]) -> Result<Dbf, String> {
    if b.len() < 32 {
        return Err(format!(
            "{name} is too short to be a DBF file ({} bytes)",
            b.len()
        ));
    }
    let records = u64::from(le32(b, 4));
    let header_len = usize::from(le16(b, 8));
    let record_len = usize::from(le16(b, 10));
    if header_len < 33 || header_len > b.len() {
        return Err(format!(
            "{name}: its header length ({header_len}) does not fit the file"
        ));
    }
    let mut text_fields = Vec::new();
    let mut offset = 1; // the deletion flag
    let mut at = 32;
    while at + 32 <= header_len && b[at] != 0x0d {
        let d = &b[at..at + 32];
        let raw = &d[..11];
        let end = raw.iter().position(|c| *c == 0).unwrap_or(11);
        let fname = String::from_utf8_lossy(&raw[..end]).into_owned();
        let len = usize::from(d[16]);
        if d[11] == b'C' {
            // Character fields may use the decimal-count byte as a length high byte.
            let len = len + usize::from(d[17]) * 256;
            text_fields.push((fname, offset, len));
            offset += len;
        } else {
            offset += len;
        }
        at += 32;
    }
    if offset > record_len {
        return Err(format!(
            "{name}: its fields ({offset} bytes) do not fit its record length ({record_len})"
        ));
    }
    let need = header_len as u64 + records * record_len as u64;
    if (b.len() as u64) < need {
        return Err(format!(
            "{name} is truncated: its header says {records} records ({need} bytes), the file has {} bytes",
            b.len()
        ));
    }
    Ok(Dbf {
        records,
        header_len,
        record_len,
        language: b[29],
        text_fields,
    })
}

/// The encoding a DBF language driver byte names, for the bytes Chinese files carry.
fn language_encoding(ldid: u8) -> Option<TextEncoding> {
    match ldid {
        0x4d | 0x7a => Some(GBK),
        0x4f | 0x78 => Some(BIG5),
        0x03 | 0x57 | 0x59 => None, // Windows ANSI / "current code page": says nothing useful
        _ => None,
    }
}

/// Checks that `stem.shp`, `.shx` and `.dbf` in `dir` agree, and decides the DBF's
/// encoding (see the module comment). `shown` is the name messages use.
pub fn check(
    dir: &Path,
    stem: &str,
    shown: &str,
    requested: Option<TextEncoding>,
) -> Result<Decided, String> {
    let read = |ext: &str| -> Result<Vec<u8>, String> {
        std::fs::read(dir.join(format!("{stem}.{ext}"))).map_err(|_| {
            format!("{shown}.{ext} is missing: a shapefile needs its .shp, .shx and .dbf")
        })
    };
    let shp = read("shp")?;
    let shx = read("shx")?;
    let dbf = read("dbf")?;
    for (ext, b) in [("shp", &shp), ("shx", &shx)] {
        if b.len() < 100 || be32(b, 0) != 9994 {
            return Err(format!(
                "{shown}.{ext} is not a shapefile component (no shapefile header)"
            ));
        }
        let said = u64::from(be32(b, 24)) * 2;
        if said != b.len() as u64 {
            return Err(format!(
                "{shown}.{ext} is truncated or padded: its header says {said} bytes, the file has {}",
                b.len()
            ));
        }
    }
    let shapes = (shx.len() - 100) / 8;
    for i in 0..shapes {
        let offset = u64::from(be32(&shx, 100 + i * 8)) * 2;
        let len = u64::from(be32(&shx, 104 + i * 8)) * 2;
        if offset < 100 || offset + 8 + len > shp.len() as u64 {
            return Err(format!(
                "{shown}.shx: record {} points past the end of {shown}.shp (offset {offset}, {len} bytes; the .shp has {})",
                i + 1,
                shp.len()
            ));
        }
    }
    let d = read_dbf_header(&format!("{shown}.dbf"), &dbf)?;
    if d.records != shapes as u64 {
        return Err(format!(
            "{shown}.dbf has {} records but {shown}.shx has {shapes} shapes: the files do not belong together",
            d.records
        ));
    }
    let cpg = std::fs::read(dir.join(format!("{stem}.cpg"))).ok();
    let decided = match (requested, cpg) {
        (Some(e), _) => Decided {
            encoding: e,
            source: "request",
        },
        (None, Some(c)) => {
            let text = String::from_utf8_lossy(&c).trim().to_string();
            let e = TextEncoding::parse(&text).ok_or_else(|| {
                format!("{shown}.cpg names encoding {text:?}, which riskmap does not read; pass encoding= (UTF-8, GBK, GB18030, Big5, ISO-8859-1)")
            })?;
            Decided {
                encoding: e,
                source: ".cpg",
            }
        }
        (None, None) => match language_encoding(d.language) {
            Some(e) => Decided {
                encoding: e,
                source: "DBF language byte",
            },
            None => detect(&d, &dbf),
        },
    };
    // Every text cell must decode in the chosen encoding.
    for r in 0..d.records as usize {
        let rec = &dbf[d.header_len + r * d.record_len..d.header_len + (r + 1) * d.record_len];
        for (fname, off, len) in &d.text_fields {
            let cell = &rec[*off..*off + *len];
            if cell.is_ascii() {
                continue;
            }
            if decided.encoding.decode_strict(cell).is_none() {
                return Err(format!(
                    "{shown}.dbf: record {} field {fname:?} is not valid {} (encoding from {}); pass encoding= with the file's encoding (GBK, GB18030, UTF-8, Big5...)",
                    r + 1,
                    decided.encoding.name,
                    decided.source
                ));
            }
        }
    }
    Ok(decided)
}

/// UTF-8 when every text cell is valid UTF-8 (or ASCII), else GB18030 when every cell
/// decodes as GB18030 (the check after this refuses the file otherwise).
fn detect(d: &Dbf, dbf: &[u8]) -> Decided {
    let mut any_non_ascii = false;
    let mut all_utf8 = true;
    for r in 0..d.records as usize {
        let rec = &dbf[d.header_len + r * d.record_len..d.header_len + (r + 1) * d.record_len];
        for (_, off, len) in &d.text_fields {
            let cell = &rec[*off..*off + *len];
            if cell.is_ascii() {
                continue;
            }
            any_non_ascii = true;
            if std::str::from_utf8(cell).is_err() {
                all_utf8 = false;
                break;
            }
        }
        if !all_utf8 {
            break;
        }
    }
    match (any_non_ascii, all_utf8) {
        (false, _) => Decided {
            encoding: UTF8,
            source: "ASCII only",
        },
        (true, true) => Decided {
            encoding: UTF8,
            source: "detected",
        },
        (true, false) => Decided {
            encoding: GB18030,
            source: "detected",
        },
    }
}

/// Detects the encoding of a whole text file (CSV): `request` wins; a UTF-8 BOM or
/// valid UTF-8 is UTF-8; else GB18030 if it decodes without error; else an error asking
/// for `encoding=`. A requested encoding the bytes are not valid in is refused too.
pub fn detect_text(
    bytes: &[u8],
    requested: Option<TextEncoding>,
    shown: &str,
) -> Result<Decided, String> {
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if let Some(e) = requested {
        if e.decode_strict(body).is_none() {
            return Err(format!(
                "{shown} is not valid {} text, as encoding= says; give its real encoding",
                e.name
            ));
        }
        return Ok(Decided {
            encoding: e,
            source: "request",
        });
    }
    if std::str::from_utf8(body).is_ok() {
        let source = if body.is_ascii() {
            "ASCII only"
        } else {
            "detected"
        };
        return Ok(Decided {
            encoding: UTF8,
            source,
        });
    }
    if GB18030.decode_strict(body).is_some() {
        return Ok(Decided {
            encoding: GB18030,
            source: "detected",
        });
    }
    Err(format!(
        "{shown} is neither UTF-8 nor GBK/GB18030 text; pass encoding= with its encoding"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_parse_from_cpg_spellings() {
        assert_eq!(TextEncoding::parse("CP936"), Some(GBK));
        assert_eq!(TextEncoding::parse(" 936\r\n"), Some(GBK));
        assert_eq!(TextEncoding::parse("UTF-8"), Some(UTF8));
        assert_eq!(TextEncoding::parse("GB18030"), Some(GB18030));
        assert_eq!(TextEncoding::parse("../../etc"), None);
    }

    #[test]
    fn text_is_detected_or_refused() {
        let gbk = encoding_rs::GBK.encode("名称,重庆").0.into_owned();
        assert_eq!(
            detect_text(&gbk, None, "f").map(|d| d.encoding),
            Ok(GB18030)
        );
        assert_eq!(
            detect_text("名称".as_bytes(), None, "f").map(|d| d.encoding),
            Ok(UTF8)
        );
        // GBK bytes declared UTF-8: refused, never decoded with replacements.
        assert!(detect_text(&gbk, Some(UTF8), "f").is_err());
        // Bytes valid in neither.
        assert!(detect_text(&[0xff, 0xff, 0xff], None, "f").is_err());
    }
}
