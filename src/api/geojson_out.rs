//! Pages of features written as GeoJSON straight to bytes, without a `serde_json::Value`
//! tree: a page of hundreds of sensors spent most of its time building, hashing and
//! freeing such trees (a profile of `within` at stop 14: `IndexMap` inserts, SipHash,
//! serialising and freeing them), not searching. What comes out means exactly what
//! `items::feature_json_in` (with `select_properties` and `distance_m`) gives: the same
//! members in the same order, numbers written by serde_json's own formatter, strings by
//! its own escaper. `tests/ogc_part1.rs` compares the two on every property type.

use std::io::Write;

use geo_types::{Coord, Geometry, LineString, Polygon};
use serde_json::Value as Json;

use super::error::ApiError;
use crate::index::{GeomRef, LayerIndex};
use crate::model::{LayerDef, ValueRef};
use crate::query::crs::Crs;
use crate::query::filter::PropertySelection;

/// How each feature of a page is written.
pub(super) struct FeatureStyle<'a> {
    pub layer: &'a LayerDef,
    pub crs: Crs,
    pub selection: Option<&'a PropertySelection>,
    /// `skipGeometry=true`: `"geometry":null`.
    pub skip_geometry: bool,
    /// `{"href":"ORIGIN/collections/LAYER/items/`: every feature's self link up to its
    /// id, written once per page.
    self_head: Vec<u8>,
    /// The rest of the links after the id.
    links_tail: Vec<u8>,
}

impl<'a> FeatureStyle<'a> {
    /// `origin`: the absolute origin links start with.
    pub fn new(
        origin: &str,
        layer: &'a LayerDef,
        crs: Crs,
        selection: &'a super::items::Selection,
    ) -> Self {
        let mut self_head = b"{\"href\":".to_vec();
        text(
            &mut self_head,
            &format!("{origin}/collections/{}/items/", layer.name),
        );
        // Open again: the id follows.
        self_head.pop();
        let mut links_tail =
            b"\",\"rel\":\"self\",\"type\":\"application/geo+json\"},{\"href\":".to_vec();
        text(
            &mut links_tail,
            &format!("{origin}/collections/{}", layer.name),
        );
        links_tail.extend_from_slice(b",\"rel\":\"collection\",\"type\":\"application/json\"}]}");
        FeatureStyle {
            layer,
            crs,
            selection: selection.properties.as_ref(),
            skip_geometry: selection.skip_geometry,
            self_head,
            links_tail,
        }
    }
}

fn text(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn number(out: &mut Vec<u8>, v: f64) {
    let _ = serde_json::to_writer(&mut *out, &v);
}

fn value(out: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => out.extend_from_slice(b"null"),
        ValueRef::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        ValueRef::Int(i) => {
            let _ = write!(out, "{i}");
        }
        // A non-finite float is null, as `Value::to_json` has it.
        ValueRef::Float(f) => number(out, f),
        ValueRef::Text(s) => text(out, s),
    }
}

fn position(out: &mut Vec<u8>, c: Coord) {
    out.push(b'[');
    number(out, c.x);
    out.push(b',');
    number(out, c.y);
    out.push(b']');
}

fn positions(out: &mut Vec<u8>, l: &LineString) {
    out.push(b'[');
    for (i, c) in l.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        position(out, *c);
    }
    out.push(b']');
}

fn rings(out: &mut Vec<u8>, p: &Polygon) {
    out.push(b'[');
    positions(out, p.exterior());
    for r in p.interiors() {
        out.push(b',');
        positions(out, r);
    }
    out.push(b']');
}

fn list<T>(out: &mut Vec<u8>, items: &[T], mut each: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, t) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, t);
    }
    out.push(b']');
}

/// A geometry as a GeoJSON geometry object (`type` then `coordinates`, as the geojson
/// crate writes it); kinds the store never holds go through that crate.
fn geometry(out: &mut Vec<u8>, g: &Geometry) {
    let kind = |out: &mut Vec<u8>, t: &str| {
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(t.as_bytes());
        out.extend_from_slice(b"\",\"coordinates\":");
    };
    match g {
        Geometry::Point(p) => {
            kind(out, "Point");
            position(out, p.0);
        }
        Geometry::LineString(l) => {
            kind(out, "LineString");
            positions(out, l);
        }
        Geometry::Polygon(p) => {
            kind(out, "Polygon");
            rings(out, p);
        }
        Geometry::MultiPoint(m) => {
            kind(out, "MultiPoint");
            list(out, &m.0, |o, p| position(o, p.0));
        }
        Geometry::MultiLineString(m) => {
            kind(out, "MultiLineString");
            list(out, &m.0, positions);
        }
        Geometry::MultiPolygon(m) => {
            kind(out, "MultiPolygon");
            list(out, &m.0, rings);
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, &geojson::Geometry::from(other));
            return;
        }
    }
    out.push(b'}');
}

/// Writes the feature in `slot` of `idx`, with `distance_m` among its properties when
/// given (millimetres).
pub(super) fn feature(
    out: &mut Vec<u8>,
    style: &FeatureStyle<'_>,
    idx: &LayerIndex,
    slot: u32,
    distance_m: Option<f64>,
) -> Result<(), ApiError> {
    let def = style.layer;
    let id = idx.id(slot);
    out.extend_from_slice(b"{\"type\":\"Feature\",\"id\":");
    text(out, id);
    out.extend_from_slice(b",\"geometry\":");
    if style.skip_geometry {
        out.extend_from_slice(b"null");
    } else {
        geometry_in(out, style, idx, slot, id)?;
    }
    out.extend_from_slice(b",\"properties\":{");
    let mut first = true;
    let mut member = |out: &mut Vec<u8>, name: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        text(out, name);
        out.push(b':');
    };
    match style.selection {
        None => {
            member(out, &def.id_property);
            text(out, id);
            for (i, p) in def.properties.iter().enumerate() {
                member(out, &p.name);
                value(out, idx.value(slot, i));
            }
        }
        Some(sel) => {
            for &i in &sel.props {
                member(out, &def.properties[i].name);
                value(out, idx.value(slot, i));
            }
        }
    }
    if let Some(d) = distance_m {
        member(out, "distance_m");
        number(out, (d * 1000.0).round() / 1000.0);
    }
    out.extend_from_slice(b"},\"links\":[");
    out.extend_from_slice(&style.self_head);
    super::items::percent_encode_into(out, id);
    out.extend_from_slice(&style.links_tail);
    Ok(())
}

/// The feature's geometry, RFC 7946 wound, in the page's CRS.
fn geometry_in(
    out: &mut Vec<u8>,
    style: &FeatureStyle<'_>,
    idx: &LayerIndex,
    slot: u32,
    id: &str,
) -> Result<(), ApiError> {
    let owned;
    let stored: &Geometry = match idx.geometry(slot) {
        GeomRef::Shape(g) => g,
        GeomRef::Point(c) => {
            owned = Geometry::Point(geo_types::Point(c));
            &owned
        }
    };
    let wound = crate::model::geometry::rfc7946_wound(stored);
    if style.crs == Crs::CRS84 {
        geometry(out, &wound);
    } else {
        let mut g = crate::query::crs::to_crs(&wound, style.crs)
            .map_err(|e| ApiError::bad_request(format!("crs: feature {id:?}: {e}")))?;
        crate::query::crs::round_coords(&mut g, style.crs);
        geometry(out, &g);
    }
    Ok(())
}

/// The start of a FeatureCollection page of `returned` features out of `matched`, up to
/// its `features` array, in a buffer sized for them: the features are written after it,
/// comma-separated, then [`page_tail`] closes the page (a page is megabytes; it is not
/// copied again).
pub(super) fn page_head(matched: usize, returned: usize) -> Vec<u8> {
    // A sensor is about 450 bytes of GeoJSON.
    let mut out = Vec::with_capacity(512 + returned.min(10_000) * 512);
    let _ = write!(
        out,
        "{{\"type\":\"FeatureCollection\",\"numberMatched\":{matched},\"numberReturned\":{returned},\"timeStamp\":"
    );
    text(&mut out, &crate::store::now_timestamp());
    out.extend_from_slice(b",\"features\":[");
    out
}

/// Closes a page begun by [`page_head`] with its links.
pub(super) fn page_tail(mut out: Vec<u8>, links: &Json) -> Vec<u8> {
    out.extend_from_slice(b"],\"links\":");
    let _ = serde_json::to_writer(&mut out, links);
    out.push(b'}');
    out
}
