//! JSON read strictly: an object that names a member twice is refused. serde_json keeps
//! the last value silently, other readers keep the first; either way a client's data
//! would be lost without a word, so edits over HTTP refuse it (imports apply the same
//! policy in their streaming reader, `ingest::geojson`).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

/// Parses `bytes` as serde_json does (same recursion limit, same numbers), refusing
/// duplicate members: the error names the member, the line and the column.
pub fn from_slice_strict(bytes: &[u8]) -> Result<Json, serde_json::Error> {
    serde_json::from_slice::<Strict>(bytes).map(|s| s.0)
}

struct Strict(Json);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(v.into())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Strict(x)) = seq.next_element()? {
            v.push(x);
        }
        Ok(Json::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut m = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if m.contains_key(&k) {
                return Err(de::Error::custom(format_args!(
                    "duplicate member {k:?}: given more than once in the same object (refused rather than keeping one of the values)"
                )));
            }
            m.insert(k, v);
        }
        Ok(Json::Object(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_members_are_refused_at_any_depth_and_the_rest_reads_as_serde_json() {
        let ok = br#"{"type":"Feature","id":"R1","geometry":{"type":"Point","coordinates":[106.5,29.5e0,-1]},"properties":{"level":"I","n":18446744073709551615,"x":null,"b":[true,false]}}"#;
        assert_eq!(
            from_slice_strict(ok).unwrap(),
            serde_json::from_slice::<Json>(ok).unwrap()
        );
        for bad in [
            &br#"{"id":"A","id":"B"}"#[..],
            br#"{"properties":{"level":"I","level":"IV"}}"#,
            br#"[{"a":{"b":1,"b":1}}]"#,
        ] {
            let e = from_slice_strict(bad).unwrap_err().to_string();
            assert!(e.contains("duplicate member"), "{e}");
        }
        // serde_json's own limits still hold: nesting, numbers beyond f64.
        let deep = "[".repeat(100_000);
        assert!(from_slice_strict(deep.as_bytes()).is_err());
        assert!(from_slice_strict(b"[1e400]").is_err());
    }
}
