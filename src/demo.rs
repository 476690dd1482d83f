//! The built-in Chongqing demo: real base layers (municipality outline, rivers),
//! embedded in the binary from `data/demo/`, and synthetic risk data generated here,
//! deterministically, at 1/100 of the city's published scale (1,360 risk points,
//! 1,100 km of pipelines, 45,200 sensors). It follows the same recipe as
//! `chongqing_synth.py` (points clustered around district seats, wandering pipelines,
//! sensors next to risk points or on pipeline vertices), but from its own seeded
//! generator; the files are not byte-identical.
//!
//! Everything goes through the same validation as an import, in one transaction, with
//! the plan templates the risk points name and the 254 sensor types (the generator's
//! families and thresholds), so warnings work on the demo out of the box.

use std::collections::HashMap;
use std::sync::Arc;

use geo::Contains;
use geo_types::{Coord, Geometry, LineString, MultiPolygon, Point};
use rand::distr::weighted::WeightedIndex;
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_distr::Normal;

use crate::config::Config;
use crate::model::{Feature, FieldError, LayerDef, Value};
use crate::store::{AuditEntry, Store, StoreError};

const BOUNDARY_GEOJSON: &str = include_str!("../data/demo/boundary_chongqing_ne10m.geojson");
const RIVERS_GEOJSON: &str = include_str!("../data/demo/rivers_gshhg_wdbii.geojson");

/// The seed of the published demo.
pub const DEMO_SEED: u64 = 20_231_115;

/// District seats: (name, lon, lat, weight ~ relative density of assets).
const DISTRICTS: [(&str, f64, f64, u32); 38] = [
    ("Yuzhong", 106.57, 29.555, 10),
    ("Jiangbei", 106.574, 29.606, 8),
    ("Nan'an", 106.56, 29.523, 7),
    ("Shapingba", 106.456, 29.541, 8),
    ("Jiulongpo", 106.511, 29.502, 8),
    ("Dadukou", 106.482, 29.484, 4),
    ("Yubei", 106.631, 29.718, 8),
    ("Banan", 106.540, 29.402, 6),
    ("Beibei", 106.397, 29.805, 4),
    ("Wanzhou", 108.408, 30.807, 6),
    ("Fuling", 107.390, 29.703, 5),
    ("Qianjiang", 108.771, 29.533, 2),
    ("Changshou", 107.081, 29.857, 3),
    ("Jiangjin", 106.259, 29.290, 4),
    ("Hechuan", 106.276, 29.972, 4),
    ("Yongchuan", 105.927, 29.356, 4),
    ("Nanchuan", 107.099, 29.157, 2),
    ("Qijiang", 106.651, 29.028, 3),
    ("Dazu", 105.721, 29.707, 3),
    ("Bishan", 106.227, 29.592, 3),
    ("Tongliang", 106.056, 29.845, 2),
    ("Tongnan", 105.840, 30.191, 2),
    ("Rongchang", 105.594, 29.404, 2),
    ("Kaizhou", 108.393, 31.161, 3),
    ("Liangping", 107.800, 30.674, 2),
    ("Wulong", 107.760, 29.326, 2),
    ("Chengkou", 108.664, 31.948, 1),
    ("Fengdu", 107.731, 29.866, 2),
    ("Dianjiang", 107.348, 30.330, 2),
    ("Zhongxian", 108.038, 30.300, 2),
    ("Yunyang", 108.697, 30.930, 2),
    ("Fengjie", 109.464, 31.019, 2),
    ("Wushan", 109.879, 31.075, 2),
    ("Wuxi", 109.629, 31.398, 1),
    ("Shizhu", 108.112, 29.999, 1),
    ("Xiushan", 108.989, 28.448, 1),
    ("Youyang", 108.767, 28.840, 1),
    ("Pengshui", 108.166, 29.294, 1),
];
const BBOX: (f64, f64, f64, f64) = (105.28, 28.16, 110.20, 32.20);
const CATEGORIES: [&str; 43] = [
    "landslide",
    "dangerous_rock",
    "debris_flow",
    "ground_subsidence",
    "slope_instability",
    "waterlogging",
    "river_flood",
    "flash_flood",
    "reservoir_dam",
    "dike",
    "gas_station",
    "gas_pipeline_node",
    "lpg_storage",
    "hazardous_chemicals",
    "fireworks_storage",
    "high_rise_building",
    "crowded_venue",
    "old_residential",
    "market",
    "hospital",
    "school",
    "elder_care",
    "underground_space",
    "metro_station",
    "tunnel",
    "bridge",
    "overpass",
    "cableway",
    "port_terminal",
    "ferry_crossing",
    "construction_site",
    "deep_excavation",
    "tower_crane",
    "mine_tailings",
    "quarry",
    "power_substation",
    "water_plant",
    "sewage_plant",
    "landfill",
    "forest_fire",
    "ancient_town",
    "cave_scenic_area",
    "heritage_building",
];
const LEVELS: [(&str, u32); 4] = [("I", 1), ("II", 3), ("III", 8), ("IV", 20)];
const PIPE_KINDS: [(&str, u32, &[&str]); 6] = [
    ("gas", 22, &["PE", "steel"]),
    ("water_supply", 25, &["ductile_iron", "PE", "steel"]),
    ("drainage", 25, &["concrete", "HDPE", "brick"]),
    ("power", 14, &["cable_duct"]),
    ("telecom", 10, &["PVC_duct"]),
    ("heat", 4, &["steel"]),
];
const DIAMETERS: [i64; 8] = [100, 150, 200, 300, 400, 600, 800, 1200];

/// How much synthetic data to make.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub risk_points: usize,
    pub sensors: usize,
    pub pipeline_km: f64,
    pub plans: usize,
}

/// 1/100 of Chongqing's published figures.
pub const SMALL: Scale = Scale {
    risk_points: 1_360,
    sensors: 45_200,
    pipeline_km: 1_100.0,
    plans: 18,
};

/// Why the demo could not be built or loaded.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo layer {layer}, feature {id}: {error}")]
    Invalid {
        layer: String,
        id: String,
        error: FieldError,
    },
    #[error("embedded demo file for layer {layer} is not valid GeoJSON: {message}")]
    BadEmbeddedFile { layer: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::store::HasStoreError for DemoError {
    fn store_error_mut(&mut self) -> Option<&mut StoreError> {
        match self {
            DemoError::Store(e) => Some(e),
            _ => None,
        }
    }
}

/// One layer's demo features.
pub type LayerBatch = (Arc<LayerDef>, Vec<Feature>);
/// Features per layer, in the order they were made.
pub type LayerFeatures = Vec<LayerBatch>;

/// Builds every demo layer the configuration declares (`boundary`, `rivers`,
/// `risk_points`, `pipelines`, `sensors`); layers it does not declare are skipped.
pub fn build(config: &Config, seed: u64, scale: Scale) -> Result<LayerFeatures, DemoError> {
    let mut out: LayerFeatures = Vec::new();
    let boundary = reference(config, "boundary", BOUNDARY_GEOJSON, |_, _| {
        "chongqing".to_string()
    })?;
    let outline: Option<MultiPolygon> =
        boundary
            .as_ref()
            .and_then(|(_, fs)| match fs.first().map(|f| &f.geometry) {
                Some(Geometry::MultiPolygon(m)) => Some(m.clone()),
                Some(Geometry::Polygon(p)) => Some(MultiPolygon(vec![p.clone()])),
                _ => None,
            });
    out.extend(boundary);
    out.extend(reference(config, "rivers", RIVERS_GEOJSON, |i, _| {
        format!("river-{:04}", i + 1)
    })?);
    out.extend(synthesize(config, seed, scale, outline.as_ref())?);
    Ok(out)
}

/// Reads an embedded reference file, giving each feature the id `make_id` says.
fn reference(
    config: &Config,
    name: &str,
    text: &str,
    make_id: impl Fn(usize, &serde_json::Value) -> String,
) -> Result<Option<LayerBatch>, DemoError> {
    let Some(layer) = config.layer(name) else {
        return Ok(None);
    };
    let bad = |message: String| DemoError::BadEmbeddedFile {
        layer: name.into(),
        message,
    };
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let features = doc
        .get("features")
        .and_then(|f| f.as_array())
        .ok_or_else(|| bad("no features array".into()))?;
    let mut out = Vec::with_capacity(features.len());
    for (i, f) in features.iter().enumerate() {
        let mut f = f.clone();
        let id = make_id(i, &f);
        if let Some(obj) = f.as_object_mut() {
            obj.insert("id".into(), id.clone().into());
        }
        let feature = Feature::from_geojson(layer, &f).map_err(|error| DemoError::Invalid {
            layer: name.into(),
            id,
            error,
        })?;
        out.push(feature);
    }
    Ok(Some((layer.clone(), out)))
}

fn r6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Degrees per kilometre at latitude `lat`: (dlat, dlon).
fn deg_per_km(lat: f64) -> (f64, f64) {
    (1.0 / 111.32, 1.0 / (111.32 * lat.to_radians().cos()))
}

fn clamp(c: Coord) -> Coord {
    Coord {
        x: c.x.clamp(BBOX.0, BBOX.2),
        y: c.y.clamp(BBOX.1, BBOX.3),
    }
}

/// Builds a feature from named values; names the layer does not declare are dropped,
/// declared names not given are null.
fn make(
    layer: &LayerDef,
    id: String,
    geometry: Geometry,
    named: &[(&str, Value)],
) -> Result<Feature, DemoError> {
    let map: HashMap<&str, &Value> = named.iter().map(|(k, v)| (*k, v)).collect();
    let values = layer
        .properties
        .iter()
        .map(|p| {
            map.get(p.name.as_str())
                .map_or(Value::Null, |v| (*v).clone())
        })
        .collect();
    Feature::new(layer, id.clone(), geometry, values).map_err(|error| DemoError::Invalid {
        layer: layer.name.clone(),
        id,
        error,
    })
}

/// The synthetic risk points, pipelines and sensors. Risk points fall inside
/// `outline` when it is given (candidates outside are drawn again).
pub fn synthesize(
    config: &Config,
    seed: u64,
    scale: Scale,
    outline: Option<&MultiPolygon>,
) -> Result<LayerFeatures, DemoError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let district_w = WeightedIndex::new(DISTRICTS.iter().map(|d| d.3)).expect("positive weights");
    let level_w = WeightedIndex::new(LEVELS.iter().map(|l| l.1)).expect("positive weights");
    let kind_w = WeightedIndex::new(PIPE_KINDS.iter().map(|k| k.1)).expect("positive weights");
    let unit = Normal::new(0.0, 1.0).expect("valid normal");
    let mut out: LayerFeatures = Vec::new();

    // Risk points, clustered around district seats.
    let mut points: Vec<Coord> = Vec::with_capacity(scale.risk_points);
    let mut risk_points = Vec::with_capacity(scale.risk_points);
    let rp_layer = config.layer("risk_points");
    for i in 0..scale.risk_points {
        let (district, c) = loop {
            let d = DISTRICTS[district_w.sample(&mut rng)];
            let spread = *[1.5, 4.0, 12.0].choose(&mut rng).expect("non-empty");
            let (dlat, dlon) = deg_per_km(d.2);
            let c = clamp(Coord {
                x: r6(d.1 + unit.sample(&mut rng) * spread * dlon),
                y: r6(d.2 + unit.sample(&mut rng) * spread * dlat),
            });
            if outline.is_none_or(|o| o.contains(&Point(c))) {
                break (d.0, c);
            }
        };
        points.push(c);
        // The first 43 points cover every category once.
        let category = match CATEGORIES.get(i) {
            Some(c) => *c,
            None => CATEGORIES[rng.random_range(0..CATEGORIES.len())],
        };
        let level = LEVELS[level_w.sample(&mut rng)].0;
        let ci = CATEGORIES.iter().position(|c| *c == category).unwrap_or(0);
        // Plans are made per category: plan k serves category k mod 43.
        let plans_for_cat: Vec<usize> = (0..scale.plans.max(1))
            .filter(|p| p % CATEGORIES.len() == ci)
            .collect();
        // One plan per point: a category the scale's plans do not reach takes the
        // extra template made for it (plan k = its index; see `plan_templates`).
        let plan = plans_for_cat.choose(&mut rng).copied().or(Some(ci));
        if let Some(layer) = rp_layer {
            let id = format!("R{:06}", i + 1);
            risk_points.push(make(
                layer,
                id.clone(),
                Point(c).into(),
                &[
                    (
                        "name",
                        Value::Text(format!("{district} {category} #{}", i + 1)),
                    ),
                    ("category", Value::Text(category.into())),
                    ("level", Value::Text(level.into())),
                    ("district", Value::Text(district.into())),
                    (
                        "plan_id",
                        plan.map_or(Value::Null, |p| Value::Text(format!("P{:05}", p + 1))),
                    ),
                ],
            )?);
        }
    }
    if let Some(layer) = rp_layer {
        out.push((layer.clone(), risk_points));
    }

    // Pipelines: wandering polylines of 50-150 m segments until the length is reached.
    let mut pipe_vertices: Vec<(String, Vec<Coord>)> = Vec::new();
    let mut pipelines = Vec::new();
    let mut total_km = 0.0;
    while total_km < scale.pipeline_km {
        let d = DISTRICTS[district_w.sample(&mut rng)];
        let spread = *[2.0, 5.0, 10.0].choose(&mut rng).expect("non-empty");
        let (dlat, dlon) = deg_per_km(d.2);
        let mut c = clamp(Coord {
            x: d.1 + unit.sample(&mut rng) * spread * dlon,
            y: d.2 + unit.sample(&mut rng) * spread * dlat,
        });
        let mut heading: f64 = rng.random_range(0.0..std::f64::consts::TAU);
        let mut coords = vec![Coord {
            x: r6(c.x),
            y: r6(c.y),
        }];
        let mut length = 0.0;
        for _ in 0..rng.random_range(6..=40) {
            heading += unit.sample(&mut rng) * 0.25;
            let seg: f64 = rng.random_range(0.05..0.15);
            let (dlat, dlon) = deg_per_km(c.y);
            c = clamp(Coord {
                x: c.x + heading.cos() * seg * dlon,
                y: c.y + heading.sin() * seg * dlat,
            });
            coords.push(Coord {
                x: r6(c.x),
                y: r6(c.y),
            });
            length += seg;
        }
        let (kind, _, materials) = PIPE_KINDS[kind_w.sample(&mut rng)];
        let id = format!("L{:06}", pipe_vertices.len() + 1);
        if let Some(layer) = config.layer("pipelines") {
            pipelines.push(make(
                layer,
                id.clone(),
                LineString(coords.clone()).into(),
                &[
                    ("kind", Value::Text(kind.into())),
                    (
                        "material",
                        Value::Text((*materials.choose(&mut rng).expect("non-empty")).into()),
                    ),
                    (
                        "diameter_mm",
                        Value::Int(*DIAMETERS.choose(&mut rng).expect("non-empty")),
                    ),
                    ("district", Value::Text(d.0.into())),
                    (
                        "length_km",
                        Value::Float((length * 1000.0_f64).round() / 1000.0),
                    ),
                ],
            )?);
        }
        pipe_vertices.push((id, coords));
        total_km += length;
    }
    if let Some(layer) = config.layer("pipelines") {
        out.push((layer.clone(), pipelines));
    }

    // Sensors: 90 % within ~300 m of a risk point, 10 % on pipeline vertices.
    if let Some(layer) = config.layer("sensors") {
        let mut sensors = Vec::with_capacity(scale.sensors);
        for k in 0..scale.sensors {
            let id = format!("S{:07}", k + 1);
            let type_id = Value::Int(rng.random_range(1..=254));
            let f = if rng.random::<f64>() < 0.9 && !points.is_empty() {
                let pi = rng.random_range(0..points.len());
                let p = points[pi];
                let (dlat, dlon) = deg_per_km(p.y);
                let c = clamp(Coord {
                    x: r6(p.x + unit.sample(&mut rng) * 0.15 * dlon),
                    y: r6(p.y + unit.sample(&mut rng) * 0.15 * dlat),
                });
                make(
                    layer,
                    id,
                    Point(c).into(),
                    &[
                        ("type_id", type_id),
                        ("risk_point_id", Value::Text(format!("R{:06}", pi + 1))),
                    ],
                )?
            } else {
                let (lid, coords) = &pipe_vertices[rng.random_range(0..pipe_vertices.len())];
                let c = coords[rng.random_range(0..coords.len())];
                make(
                    layer,
                    id,
                    Point(c).into(),
                    &[
                        ("type_id", type_id),
                        ("pipeline_id", Value::Text(lid.clone())),
                    ],
                )?
            };
            sensors.push(f);
        }
        out.push((layer.clone(), sensors));
    }
    Ok(out)
}

/// The generator's sensor families: family, unit, warn, alarm (`SENSOR_FAMILIES` in
/// `chongqing_synth.py`).
const SENSOR_FAMILIES: [(&str, &str, f64, f64); 14] = [
    ("fire_smoke", "obscuration_pct", 3.0, 8.0),
    ("fire_temperature", "degC", 57.0, 70.0),
    ("water_level", "m", 2.0, 3.0),
    ("rainfall", "mm_per_h", 20.0, 50.0),
    ("ph", "pH", 9.0, 10.5),
    ("pressure", "MPa", 0.8, 1.0),
    ("displacement", "mm", 10.0, 30.0),
    ("crack_width", "mm", 2.0, 5.0),
    ("tilt", "deg", 1.0, 3.0),
    ("gas_concentration", "pct_LEL", 20.0, 50.0),
    ("flow", "m3_per_h", 400.0, 600.0),
    ("vibration", "mm_per_s", 10.0, 25.0),
    ("soil_moisture", "pct", 35.0, 45.0),
    ("wind_speed", "m_per_s", 17.0, 25.0),
];

/// The 254 sensor types, type k of family k mod 14 (as the generator makes them).
pub fn sensor_types() -> Vec<crate::alerts::sensor_types::SensorType> {
    use crate::alerts::sensor_types::{RuleSpec, SensorType};
    (0..254)
        .map(|t| {
            let (family, unit, warn, alarm) = SENSOR_FAMILIES[t % SENSOR_FAMILIES.len()];
            SensorType {
                type_id: t as u32 + 1,
                family: family.into(),
                name: format!("{family}_model_{}", t / SENSOR_FAMILIES.len() + 1),
                unit: unit.into(),
                spec: RuleSpec {
                    direction: Default::default(),
                    warn,
                    alarm,
                    mapping: Default::default(),
                    thresholds: None,
                    hysteresis: None,
                    clear_after_s: None,
                    silent_after_s: None,
                },
            }
        })
        .collect()
}

const PLAN_STEPS: [&str; 15] = [
    "verify_on_site",
    "notify_district_center",
    "notify_town_center",
    "dispatch_patrol",
    "close_road",
    "cut_gas_supply",
    "evacuate_residents",
    "open_shelter",
    "deploy_pumps",
    "deploy_sandbags",
    "call_fire_brigade",
    "monitor_every_10_min",
    "report_to_city_center",
    "issue_public_warning",
    "restore_and_review",
];
const CONTACT_ROLES: [&str; 6] = [
    "town_duty_officer",
    "district_duty_officer",
    "grid_worker",
    "police",
    "fire_brigade",
    "utility_operator",
];

/// The plan templates the demo's risk points name (`P00001`...): plan k for category
/// k mod 43, its steps growing with the level (blue the first few, red all), from its
/// own seeded generator. At least one per category (43), so every point has a plan
/// even at a scale with fewer plans than categories.
pub fn plan_templates(seed: u64, scale: Scale) -> Vec<crate::alerts::plans::Template> {
    use crate::alerts::plans::{Contact, Steps, Template};
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x504c_414e);
    (0..scale.plans.max(CATEGORIES.len()))
        .map(|k| {
            let category = CATEGORIES[k % CATEGORIES.len()];
            let n = rng.random_range(4..=9);
            let steps: Vec<String> = PLAN_STEPS
                .choose_multiple(&mut rng, n)
                .map(|s| s.to_string())
                .collect();
            let upto = |m: usize| steps[..m.min(steps.len())].to_vec();
            let contacts = CONTACT_ROLES
                .choose_multiple(&mut rng, 3)
                .map(|r| Contact {
                    role: r.to_string(),
                    name: None,
                    phone: Some(format!("023-{}", rng.random_range(6000_0000..6999_9999))),
                })
                .collect();
            Template {
                id: format!("P{:05}", k + 1),
                title: format!("{category} response plan {}", k / CATEGORIES.len() + 1),
                category: category.into(),
                levels: Steps {
                    blue: upto(2),
                    yellow: upto(3),
                    orange: upto(n - 1),
                    red: steps.clone(),
                },
                contacts,
            }
        })
        .collect()
}

/// Writes the demo into the store in one transaction (upserts, so loading twice
/// changes nothing), audited as `actor`, and clears the store's "demo pending" mark.
pub fn load(store: &Store, layers: &LayerFeatures, actor: &str) -> Result<(), DemoError> {
    store.write(|tx| {
        let mut counts = serde_json::Map::new();
        for (layer, features) in layers {
            let mut bbox = None;
            for f in features {
                tx.upsert(
                    layer,
                    f,
                    crate::index::Derived::kept_for(layer, &f.geometry).as_deref(),
                )?;
                bbox = match (bbox, crate::model::Bbox::of_geometry(&f.geometry)) {
                    (Some(a), Some(b)) => Some(crate::model::Bbox::union(a, b)),
                    (a, b) => a.or(b),
                };
            }
            tx.touch_layer(layer, bbox)?;
            tx.record_change(&layer.name, None)?;
            counts.insert(layer.name.clone(), features.len().into());
        }
        for t in plan_templates(DEMO_SEED, SMALL) {
            tx.put_template(&t, actor)?;
        }
        for t in sensor_types() {
            tx.put_sensor_type(&t, actor)?;
        }
        tx.audit(&AuditEntry {
            actor: actor.to_string(),
            action: "demo".into(),
            detail: Some(serde_json::json!({ "seed": DEMO_SEED, "features": counts })),
            ..Default::default()
        })?;
        tx.set_meta(DEMO_STATE, Some("loaded"))?;
        tx.commit()?;
        Ok(())
    })
}

/// `riskmap_meta` key recording the demo decision: `pending` (decided, not loaded yet:
/// a start interrupted half-way loads it again), `loaded`, `declined` (`--no-demo` on
/// an empty store). Stores holding data never get the demo and need no mark.
pub const DEMO_STATE: &str = "demo";

/// Whether to load the demo now. The first `serve` of a store decides, once: an empty
/// store (no features, no import ever) gets the demo unless declined. Stores made by
/// `keys add` or `import` before any `serve` are judged by their content, not by who
/// created the file.
pub fn decide(store: &Store, config: &Config, wanted: bool) -> Result<bool, DemoError> {
    match store.meta(DEMO_STATE)?.as_deref() {
        Some("pending") => return Ok(true),
        Some(_) => return Ok(false),
        None => {}
    }
    let mut empty = store.import_totals()?.is_empty();
    for l in &config.layers {
        empty &= store.count(l)? == 0;
    }
    if !empty {
        return Ok(false); // the store is the user's data: nothing to remember
    }
    let state = if wanted { "pending" } else { "declined" };
    store.write(|tx| {
        tx.set_meta(DEMO_STATE, Some(state))?;
        tx.commit()
    })?;
    Ok(state == "pending")
}
