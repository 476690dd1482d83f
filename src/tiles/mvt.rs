//! A Mapbox Vector Tile 2.1 encoder, written by hand because the hot path needs what
//! the `mvt` crate does not give: the exact encoded size while features are added
//! (layer and tile byte budgets stop at the least important feature) and no
//! allocation per feature or per tag (keys and string values are borrowed from the
//! index and deduplicated per layer). Geometry arrives clipped, quantised and
//! oriented (see `render`); this module only writes protobuf.

use hashbrown::HashMap;

use super::coord::EXTENT;

/// MVT geometry types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeomType {
    Point = 1,
    LineString = 2,
    Polygon = 3,
}

/// A property value as MVT stores it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MvtValue<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
}

#[derive(Hash, PartialEq, Eq)]
enum ValueKey<'a> {
    Str(&'a str),
    Int(i64),
    Double(u64),
    Bool(bool),
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

/// Geometry commands for one feature, in tile units.
#[derive(Default)]
pub struct GeomBuf {
    cmds: Vec<u32>,
    cursor: (i32, i32),
}

impl GeomBuf {
    pub fn clear(&mut self) {
        self.cmds.clear();
        self.cursor = (0, 0);
    }

    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    fn command(&mut self, id: u32, count: u32) {
        self.cmds.push((id & 7) | (count << 3));
    }

    fn delta(&mut self, p: (i32, i32)) {
        self.cmds.push(zigzag(p.0.wrapping_sub(self.cursor.0)));
        self.cmds.push(zigzag(p.1.wrapping_sub(self.cursor.1)));
        self.cursor = p;
    }

    /// One point (call once per point for a multipoint: use `points` instead).
    pub fn points(&mut self, pts: &[(i32, i32)]) {
        if pts.is_empty() {
            return;
        }
        self.command(1, pts.len() as u32);
        for &p in pts {
            self.delta(p);
        }
    }

    /// A line part of two or more points (consecutive duplicates already removed).
    pub fn line(&mut self, pts: &[(i32, i32)]) {
        debug_assert!(pts.len() >= 2);
        self.command(1, 1);
        self.delta(pts[0]);
        self.command(2, pts.len() as u32 - 1);
        for &p in &pts[1..] {
            self.delta(p);
        }
    }

    /// A closed ring (first = last, at least four points), already oriented.
    pub fn ring(&mut self, pts: &[(i32, i32)]) {
        debug_assert!(pts.len() >= 4 && pts.first() == pts.last());
        let open = &pts[..pts.len() - 1];
        self.command(1, 1);
        self.delta(open[0]);
        self.command(2, open.len() as u32 - 1);
        for &p in &open[1..] {
            self.delta(p);
        }
        self.command(7, 1);
    }
}

/// One layer being written. Keys are numbered by the caller (`key_names[i]` is key
/// `i`) and enter the layer's key table on first use.
pub struct LayerWriter<'a> {
    name: &'a str,
    key_names: &'a [&'a str],
    /// Layer key index of each caller key, `u32::MAX` until used.
    key_slots: Vec<u32>,
    keys: Vec<&'a str>,
    values: Vec<u8>,
    value_index: HashMap<ValueKey<'a>, u32>,
    symbol_index: HashMap<u64, u32>,
    value_count: u32,
    keys_len: usize,
    features: Vec<u8>,
    feature_count: usize,
    scratch: Vec<u8>,
    tags: Vec<u32>,
    /// Table sizes before the current feature's tags, to undo them if it is refused.
    mark: Mark,
}

#[derive(Clone, Copy, Default)]
struct Mark {
    keys: usize,
    keys_len: usize,
    values_len: usize,
    value_count: u32,
}

impl<'a> LayerWriter<'a> {
    pub fn new(name: &'a str, key_names: &'a [&'a str]) -> Self {
        LayerWriter {
            name,
            key_names,
            key_slots: vec![u32::MAX; key_names.len()],
            keys: Vec::new(),
            values: Vec::new(),
            value_index: HashMap::new(),
            symbol_index: HashMap::new(),
            value_count: 0,
            keys_len: 0,
            features: Vec::with_capacity(16 * 1024),
            feature_count: 0,
            scratch: Vec::new(),
            tags: Vec::new(),
            mark: Mark::default(),
        }
    }

    pub fn feature_count(&self) -> usize {
        self.feature_count
    }

    /// Starts the tags of the next feature.
    pub fn clear_tags(&mut self) {
        self.tags.clear();
        self.mark = Mark {
            keys: self.keys.len(),
            keys_len: self.keys_len,
            values_len: self.values.len(),
            value_count: self.value_count,
        };
    }

    /// Empties the layer (features, keys and values), keeping its name and key names.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.key_slots.iter_mut().for_each(|k| *k = u32::MAX);
        self.keys_len = 0;
        self.values.clear();
        self.value_index.clear();
        self.symbol_index.clear();
        self.value_count = 0;
        self.features.clear();
        self.feature_count = 0;
        self.tags.clear();
        self.mark = Mark::default();
    }

    /// Takes out the keys and values the refused feature's tags added.
    fn undo_tags(&mut self) {
        let m = self.mark;
        self.keys.truncate(m.keys);
        for slot in &mut self.key_slots {
            if *slot != u32::MAX && *slot as usize >= m.keys {
                *slot = u32::MAX;
            }
        }
        self.keys_len = m.keys_len;
        self.values.truncate(m.values_len);
        self.value_count = m.value_count;
        self.value_index.retain(|_, v| *v < m.value_count);
        self.symbol_index.retain(|_, v| *v < m.value_count);
        self.tags.clear();
    }

    fn key(&mut self, key: usize) -> u32 {
        let k = self.key_slots[key];
        if k != u32::MAX {
            return k;
        }
        let name = self.key_names[key];
        let k = self.keys.len() as u32;
        self.keys.push(name);
        self.key_slots[key] = k;
        self.keys_len += 1 + varint_len(name.len() as u64) + name.len();
        k
    }

    fn new_value(&mut self, value: MvtValue<'_>) -> u32 {
        let v = self.value_count;
        self.value_count += 1;
        // A Value message of one field, inside layer field 4.
        let (tag, body_len) = match value {
            MvtValue::Str(s) => (0x0a, 1 + varint_len(s.len() as u64) + s.len()),
            MvtValue::Double(_) => (0x19, 9),
            MvtValue::Int(i) => (0x20, 1 + varint_len(i as u64)),
            MvtValue::Bool(_) => (0x38, 2),
        };
        self.values.push(0x22);
        put_varint(&mut self.values, body_len as u64);
        self.values.push(tag);
        match value {
            MvtValue::Str(s) => {
                put_varint(&mut self.values, s.len() as u64);
                self.values.extend_from_slice(s.as_bytes());
            }
            MvtValue::Double(d) => self.values.extend_from_slice(&d.to_le_bytes()),
            MvtValue::Int(i) => put_varint(&mut self.values, i as u64),
            MvtValue::Bool(b) => self.values.push(b as u8),
        }
        v
    }

    /// The value number of `value`, shared with earlier equal values.
    fn shared_value(&mut self, value: MvtValue<'a>) -> u32 {
        let vk = match value {
            MvtValue::Str(s) => ValueKey::Str(s),
            MvtValue::Int(i) => ValueKey::Int(i),
            MvtValue::Double(d) => ValueKey::Double(d.to_bits()),
            MvtValue::Bool(b) => ValueKey::Bool(b),
        };
        match self.value_index.get(&vk) {
            Some(&v) => v,
            None => {
                let v = self.new_value(value);
                self.value_index.insert(vk, v);
                v
            }
        }
    }

    fn push_tag(&mut self, key: usize, value: u32) {
        let k = self.key(key);
        self.tags.push(k);
        self.tags.push(value);
    }

    /// Adds a tag (key number `key`) to the next feature, sharing equal values.
    pub fn tag(&mut self, key: usize, value: MvtValue<'a>) {
        let v = self.shared_value(value);
        self.push_tag(key, v);
    }

    /// Adds a text tag whose value the caller identifies by `symbol` (interned text:
    /// equal symbols are equal strings), so that equal texts are found without hashing
    /// them. Symbols must be unique across keys.
    pub fn tag_symbol(&mut self, key: usize, symbol: u64, value: &'a str) {
        let v = match self.symbol_index.get(&symbol) {
            Some(&v) => v,
            None => {
                // First use of the symbol in this layer: the same text may be in the
                // table already, tagged by value (a cluster's level).
                let v = self.shared_value(MvtValue::Str(value));
                self.symbol_index.insert(symbol, v);
                v
            }
        };
        self.push_tag(key, v);
    }

    /// Adds a tag whose value no other feature shares (an id).
    pub fn tag_unique(&mut self, key: usize, value: MvtValue<'a>) {
        let v = self.new_value(value);
        self.push_tag(key, v);
    }

    /// The layer's encoded size now, in bytes (as it would appear inside the tile).
    pub fn size(&self) -> usize {
        let body = self.body_len();
        1 + varint_len(body as u64) + body
    }

    fn body_len(&self) -> usize {
        2 + // version
        1 + varint_len(self.name.len() as u64) + self.name.len() +
        self.features.len() + self.keys_len + self.values.len() +
        1 + varint_len(EXTENT as u64)
    }

    /// Appends a feature with the current tags if the layer stays within `budget`
    /// bytes; false (nothing added) otherwise.
    pub fn add_feature(
        &mut self,
        id: Option<u64>,
        ty: GeomType,
        geom: &GeomBuf,
        budget: usize,
    ) -> bool {
        let body = self.body_len();
        let s = &mut self.scratch;
        s.clear();
        if let Some(id) = id {
            s.push(0x08);
            put_varint(s, id);
        }
        if !self.tags.is_empty() {
            let len: usize = self.tags.iter().map(|&t| varint_len(t as u64)).sum();
            s.push(0x12);
            put_varint(s, len as u64);
            for &t in &self.tags {
                put_varint(s, t as u64);
            }
        }
        s.push(0x18);
        s.push(ty as u8);
        let len: usize = geom.cmds.iter().map(|&c| varint_len(c as u64)).sum();
        s.push(0x22);
        put_varint(s, len as u64);
        for &c in &geom.cmds {
            put_varint(s, c as u64);
        }
        // The layer's size with this feature, its length prefix included (it may grow).
        let new_body = body + 1 + varint_len(s.len() as u64) + s.len();
        if 1 + varint_len(new_body as u64) + new_body > budget {
            self.undo_tags();
            return false;
        }
        self.features.push(0x12); // layer field 2
        put_varint(&mut self.features, s.len() as u64);
        self.features.extend_from_slice(s);
        self.feature_count += 1;
        true
    }

    /// Writes the layer (if it has features) into the tile buffer.
    pub fn finish(self, tile: &mut Vec<u8>) {
        if self.feature_count == 0 {
            return;
        }
        tile.reserve(self.size());
        tile.push(0x1a); // tile field 3
        put_varint(tile, self.body_len() as u64);
        tile.push(0x78); // version (field 15)
        tile.push(2);
        tile.push(0x0a);
        put_varint(tile, self.name.len() as u64);
        tile.extend_from_slice(self.name.as_bytes());
        tile.extend_from_slice(&self.features);
        for k in &self.keys {
            tile.push(0x1a);
            put_varint(tile, k.len() as u64);
            tile.extend_from_slice(k.as_bytes());
        }
        tile.extend_from_slice(&self.values);
        tile.push(0x28);
        put_varint(tile, EXTENT as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact() {
        const KEYS: [&str; 3] = ["id", "level", "count"];
        let mut l = LayerWriter::new("risk_points", &KEYS);
        let mut g = GeomBuf::default();
        for i in 0..300 {
            g.clear();
            g.points(&[(i * 13, 4095 - i)]);
            l.clear_tags();
            l.tag_unique(0, MvtValue::Str("R000001"));
            l.tag_symbol(1, i as u64 % 2, ["I", "II"][i as usize % 2]);
            l.tag(2, MvtValue::Int(i as i64 * 1000));
            assert!(l.add_feature(Some(i as u64 + 1), GeomType::Point, &g, usize::MAX));
        }
        let size = l.size();
        // Refused for budget: the new key and values its tags brought are taken out.
        l.clear_tags();
        l.tag_unique(
            0,
            MvtValue::Str("a new id with a long text that would not fit"),
        );
        l.tag(2, MvtValue::Int(-77));
        assert!(
            !l.add_feature(Some(1), GeomType::Point, &g, size + 3),
            "over budget: refused"
        );
        assert_eq!(l.size(), size, "a refused feature leaves nothing behind");
        // The tables still work after the undo.
        l.clear_tags();
        l.tag(2, MvtValue::Int(-77));
        assert!(l.add_feature(Some(2), GeomType::Point, &g, usize::MAX));
        let size = l.size();
        let mut tile = Vec::new();
        l.finish(&mut tile);
        assert_eq!(tile.len(), size);
    }

    #[test]
    fn equal_texts_share_one_value_however_they_were_tagged() {
        use geozero::mvt::{Message, Tile};
        const KEYS: [&str; 2] = ["id", "level"];
        let mut l = LayerWriter::new("risk_points", &KEYS);
        let mut g = GeomBuf::default();
        g.points(&[(1, 1)]);
        // A cluster's level by value, then points' levels by symbol, then by value.
        for (i, by_symbol) in [false, true, true, false].into_iter().enumerate() {
            l.clear_tags();
            if by_symbol {
                l.tag_symbol(1, 42, "III");
            } else {
                l.tag(1, MvtValue::Str("III"));
            }
            assert!(l.add_feature(Some(i as u64), GeomType::Point, &g, usize::MAX));
        }
        let mut tile = Vec::new();
        l.finish(&mut tile);
        let t = Tile::decode(&tile[..]).unwrap();
        assert_eq!(t.layers[0].values.len(), 1, "{:?}", t.layers[0].values);
        assert!(t.layers[0].features.iter().all(|f| f.tags == [0, 0]));
    }
}
