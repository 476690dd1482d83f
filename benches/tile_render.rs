//! Renders a list of tile paths from a store, without HTTP: time per zoom (mean, p99,
//! max) and the largest uncompressed tile per zoom.
//!
//! RISKMAP_DATA=/path/to/data PATHS=paths.txt [LAYERS=risk_points,pipelines,sensors]
//!   cargo bench --bench tile_render
//! PATHS lines are `z/x/y` (../shared/bench/tile_paths.py); DECODE=1 also decodes every
//! tile strictly (polygons must be valid and wound as MVT 2.1 says) and checks point
//! totals. Without PATHS, every zoom
//! 0..=18 is sampled around the data's risk points; with COVER=1, zooms 0..=12 are
//! covered tile by tile over the data's extent and 13..=18 sampled (400 tiles each).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use riskmap::app::{App, OpenOptions};
use riskmap::tiles::{TileCoord, render, resolve};

/// DECODE=1: every tile decoded strictly by geozero's MVT reader (an independent
/// decoder that refuses wrong winding), and for point layers the points of the tile
/// (single points inside it plus cluster counts) compared with the index's exact count.
fn verify(app: &App, states: &[&riskmap::index::LayerState], tiles: &[TileCoord]) {
    use geozero::mvt::{Message, Tile};
    let (mut decoded, mut features, mut checked) = (0usize, 0usize, 0usize);
    for &t in tiles {
        let bytes = render(states, t).bytes;
        let tile =
            Tile::decode(&bytes[..]).unwrap_or_else(|e| panic!("{t:?}: not a valid tile: {e}"));
        for layer in &tile.layers {
            assert_eq!((layer.version, layer.extent), (2, Some(4096)), "{t:?}");
            let mut clustered = false;
            let (mut sum, mut drawn_ids) = (0i64, std::collections::HashSet::new());
            for f in &layer.features {
                let mut w = geozero::geo_types::GeoWriter::new();
                geozero::mvt::process_geom(f, &mut w)
                    .unwrap_or_else(|e| panic!("{t:?} {}: {e}", layer.name));
                let geom = w.take_geometry().expect("geometry");
                if matches!(
                    geom,
                    geo_types::Geometry::Polygon(_) | geo_types::Geometry::MultiPolygon(_)
                ) {
                    // A hole wound the wrong way reads as a polygon inside another;
                    // crossing or touching rings are invalid too (MVT 2.1, 4.3.4.4).
                    use geo::Validation;
                    if let Err(e) = geom.check_validation() {
                        panic!("{t:?} {}: invalid polygon: {e}", layer.name);
                    }
                }
                features += 1;
                let count = f
                    .tags
                    .chunks(2)
                    .find(|p| layer.keys[p[0] as usize] == "count")
                    .and_then(|p| layer.values[p[1] as usize].int_value);
                clustered |= count.is_some();
                sum += count.unwrap_or(1);
                if let Some(id) = f.id {
                    drawn_ids.insert(id as i64);
                }
            }
            let l = app.layer(&layer.name).expect("layer");
            if l.def.geometry == riskmap::model::GeometryType::Point {
                let idx = l.index.read();
                let mut exact = Vec::new();
                idx.for_each_in_bbox(&t.lonlat_bbox(1), |s| {
                    if idx.world_point(s).is_some_and(|w| t.contains(w)) {
                        exact.push(idx.fid(s));
                    }
                });
                if clustered {
                    // Clustered tiles hold exactly the tile's points.
                    assert_eq!(
                        sum,
                        exact.len() as i64,
                        "{t:?} {}: cluster counts",
                        layer.name
                    );
                } else {
                    // Raw tiles draw every point of the tile (and some of the buffer).
                    let missing = exact.iter().filter(|f| !drawn_ids.contains(*f)).count();
                    assert_eq!(
                        missing,
                        0,
                        "{t:?} {}: {missing} of {} points not drawn",
                        layer.name,
                        exact.len()
                    );
                }
                checked += 1;
            }
        }
        decoded += 1;
    }
    println!(
        "decoded {decoded} tiles strictly ({features} features); point totals checked in {checked} layer tiles"
    );
}

/// Per zoom: render times (ms), the largest tile's size and address.
type ZoomStats = (Vec<f64>, usize, (u32, u32), usize);

fn main() {
    let Ok(data) = std::env::var("RISKMAP_DATA").map(PathBuf::from) else {
        eprintln!(
            "usage: RISKMAP_DATA=DIR [PATHS=paths.txt] [LAYERS=..] [REPEAT=n] cargo bench --bench tile_render"
        );
        return;
    };
    let layers = std::env::var("LAYERS").unwrap_or_else(|_| "risk_points,pipelines,sensors".into());
    let layer_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("layers");
    let config = riskmap::config::Config::load(&layer_dir).expect("layers");
    let t = Instant::now();
    let app = App::open(
        config,
        &data,
        OpenOptions {
            demo: false,
            ..Default::default()
        },
    )
    .expect("store");
    eprintln!(
        "opened {} in {:.1} s",
        data.display(),
        t.elapsed().as_secs_f64()
    );
    let all = app.layers();
    let states = resolve(&layers, &all).expect("layers");
    let tiles: Vec<TileCoord> = match std::env::var("PATHS") {
        Ok(p) => std::fs::read_to_string(p)
            .expect("paths file")
            .lines()
            .filter_map(|l| {
                let v: Vec<&str> = l.trim().split('/').collect();
                (v.len() == 3)
                    .then(|| TileCoord::parse(v[0], v[1], v[2]).ok())
                    .flatten()
            })
            .collect(),
        Err(_) if std::env::var("COVER").is_ok() => {
            // Every tile over the data's extent at zooms 0..=12; 400 around risk points at
            // 13..=18 (too many to cover there).
            let extent = states
                .iter()
                .filter_map(|l| l.index.read().extent())
                .reduce(riskmap::model::Bbox::union)
                .expect("data");
            let mut v = Vec::new();
            for z in 0..=12u8 {
                let a = TileCoord::of_lonlat(extent.min_lon, extent.max_lat, z).expect("in range");
                let b = TileCoord::of_lonlat(extent.max_lon, extent.min_lat, z).expect("in range");
                for x in a.x..=b.x {
                    for y in a.y..=b.y {
                        v.push(TileCoord { z, x, y });
                    }
                }
            }
            let l = app.layer("risk_points").expect("risk_points");
            let idx = l.index.read();
            let pts: Vec<geo_types::Coord> = idx
                .slots()
                .filter_map(|s| match idx.geometry(s) {
                    riskmap::index::GeomRef::Point(c) => Some(c),
                    _ => None,
                })
                .collect();
            for z in 13..=18u8 {
                for i in 0..400usize {
                    let c = pts[(i * 7919 + z as usize * 104_729) % pts.len()];
                    v.extend(TileCoord::of_lonlat(c.x, c.y, z));
                }
            }
            v
        }
        Err(_) => {
            // Every zoom 0..=18, 40 tiles each around risk points.
            let l = app.layer("risk_points").expect("risk_points");
            let idx = l.index.read();
            let pts: Vec<geo_types::Coord> = idx
                .slots()
                .take(100_000)
                .filter_map(|s| match idx.geometry(s) {
                    riskmap::index::GeomRef::Point(c) => Some(c),
                    _ => None,
                })
                .collect();
            (0..=18u8)
                .flat_map(|z| (0..40).map(move |i| (z, i)))
                .filter_map(|(z, i)| {
                    let c = pts[(i * 7919 + z as usize * 104_729) % pts.len()];
                    TileCoord::of_lonlat(c.x, c.y, z)
                })
                .collect()
        }
    };
    let repeat: usize = std::env::var("REPEAT")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let tiles: Vec<TileCoord> = (0..repeat).flat_map(|_| tiles.iter().copied()).collect();
    let mut by_zoom: BTreeMap<u8, ZoomStats> = BTreeMap::new();
    let t = Instant::now();
    for &tile in &tiles {
        let s = Instant::now();
        let r = render(&states, tile);
        let ms = s.elapsed().as_secs_f64() * 1000.0;
        let e = by_zoom.entry(tile.z).or_default();
        e.0.push(ms);
        e.3 += r.bytes.len();
        if r.bytes.len() > e.1 {
            e.1 = r.bytes.len();
            e.2 = (tile.x, tile.y);
        }
    }
    let total = t.elapsed().as_secs_f64();
    if std::env::var("DECODE").is_ok() {
        verify(&app, &states, &tiles);
    }
    println!(
        "{} tiles of {layers} in {:.2} s: {:.0} tiles/s on one thread",
        tiles.len(),
        total,
        tiles.len() as f64 / total
    );
    println!("zoom  tiles  mean_ms   p99_ms   max_ms  mean_bytes  largest_bytes  largest_tile");
    for (z, (mut ms, largest, (x, y), total_bytes)) in by_zoom {
        ms.sort_by(f64::total_cmp);
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        let p99 = ms[((ms.len() as f64 * 0.99) as usize).min(ms.len() - 1)];
        let mean_bytes = total_bytes / ms.len();
        println!(
            "{z:>4} {:>6} {mean:>8.2} {p99:>8.2} {:>8.2} {mean_bytes:>11} {largest:>14}  {z}/{x}/{y}",
            ms.len(),
            ms[ms.len() - 1]
        );
    }
}
