//! The built-in demo: deterministic, at 1/100 of the city's scale, inside the real
//! municipality outline.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use common::*;
use geo::Contains;
use geo_types::Geometry;
use riskmap::demo::{self, DEMO_SEED, SMALL};

#[test]
fn the_demo_is_deterministic_and_at_small_scale() {
    let cfg = config();
    let a = demo::build(&cfg, DEMO_SEED, SMALL).unwrap();
    let b = demo::build(&cfg, DEMO_SEED, SMALL).unwrap();
    assert!(
        a.iter()
            .zip(&b)
            .all(|((la, fa), (lb, fb))| la.name == lb.name && fa == fb),
        "same seed, same data"
    );
    let count = |name: &str| {
        a.iter()
            .find(|(l, _)| l.name == name)
            .map(|(_, f)| f.len())
            .unwrap()
    };
    assert_eq!(count("risk_points"), 1_360);
    assert_eq!(count("sensors"), 45_200);
    assert_eq!(count("boundary"), 1);
    assert_eq!(count("rivers"), 102);
    let km: f64 = a
        .iter()
        .find(|(l, _)| l.name == "pipelines")
        .unwrap()
        .1
        .iter()
        .map(|f| riskmap::index::geodesic_length_km(&f.geometry))
        .sum();
    assert!((1_100.0..1_120.0).contains(&km), "{km} km of pipelines");
    let other = demo::build(&cfg, DEMO_SEED + 1, SMALL).unwrap();
    assert_ne!(a[2].1, other[2].1, "another seed, other data");

    let Geometry::MultiPolygon(outline) =
        &a.iter().find(|(l, _)| l.name == "boundary").unwrap().1[0].geometry
    else {
        panic!()
    };
    for f in &a.iter().find(|(l, _)| l.name == "risk_points").unwrap().1 {
        assert!(outline.contains(&f.geometry), "{} outside Chongqing", f.id);
    }
}

#[test]
fn a_new_store_gets_the_demo_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = riskmap::app::App::open(config(), dir.path(), riskmap::app::OpenOptions::default())
        .unwrap();
    assert_eq!(app.layer("risk_points").unwrap().index.read().len(), 1_360);
    assert_eq!(sqlite_audit_count(dir.path(), "demo"), 1);
    drop(app);
    let app = riskmap::app::App::open(config(), dir.path(), riskmap::app::OpenOptions::default())
        .unwrap();
    assert_eq!(app.layer("sensors").unwrap().index.read().len(), 45_200);
    assert_eq!(
        sqlite_audit_count(dir.path(), "demo"),
        1,
        "not loaded twice"
    );
    // Every reference holds: each sensor's type and risk point or pipeline, each risk
    // point's plan template; and every risk point has a plan.
    assert!(app.dangling().is_empty(), "{:?}", app.dangling());
    assert_eq!(
        app.risk_points_without_plan().unwrap(),
        Vec::<String>::new()
    );
}
