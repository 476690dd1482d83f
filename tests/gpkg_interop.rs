//! The store is a GeoPackage others can read: GDAL's `ogrinfo` lists every layer with
//! the right count, geometry type and EPSG:4326. Needs `ogrinfo` (Debian's gdal-bin,
//! installed by .ci/run).

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::process::Command;

use common::*;

#[test]
fn ogrinfo_reads_every_layer_with_its_count_and_crs() {
    let dir = tempfile::tempdir().unwrap();
    let app = std::sync::Arc::new(
        riskmap::app::App::open(config(), dir.path(), riskmap::app::OpenOptions::default())
            .unwrap(),
    );
    let path = store_path(dir.path());
    // The layers kept in the file (not `warnings`, which the server makes from readings).
    for l in app.layers().iter().filter(|l| l.def.kind.is_stored()) {
        let out = Command::new("ogrinfo")
            .args(["-so", "-ro", path.to_str().unwrap(), &l.def.name])
            .output()
            .expect("ogrinfo is installed (apt-get install gdal-bin; .ci/run does it)");
        let s = text(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            l.def.name,
            text(&out.stderr)
        );
        let count = l.index.read().len();
        assert!(count > 0);
        assert!(
            s.contains(&format!("Feature Count: {count}")),
            "{}: {s}",
            l.def.name
        );
        assert!(s.contains("ID[\"EPSG\",4326]"), "{}: {s}", l.def.name);
        let geom = match l.def.geometry.geojson_name() {
            "Point" => "Geometry: Point",
            "LineString" => "Geometry: Line String",
            "MultiPolygon" => "Geometry: Multi Polygon",
            other => panic!("{other}"),
        };
        assert!(s.contains(geom), "{}: {s}", l.def.name);
        assert!(
            !text(&out.stderr).contains("Warning"),
            "{}: {}",
            l.def.name,
            text(&out.stderr)
        );
    }
    // A feature reads back with its attributes, as QGIS would see it.
    let out = Command::new("ogrinfo")
        .args([
            "-ro",
            "-q",
            path.to_str().unwrap(),
            "risk_points",
            "-where",
            "id = 'R000001'",
        ])
        .output()
        .unwrap();
    let s = text(&out.stdout);
    assert!(
        s.contains("id (String) = R000001")
            && s.contains("level (String) =")
            && s.contains("POINT ("),
        "{s}"
    );
}

#[test]
fn a_store_left_by_an_import_is_a_complete_geopackage_on_its_own() {
    // After `riskmap import` exits, the .gpkg alone (no -wal beside it) holds
    // everything, and GDAL reads it without a warning.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.geojson");
    std::fs::write(
        &file,
        collection(
            (0..25)
                .map(|i| risk_point(&format!("R{i}"), 106.0 + i as f64 * 0.01, 29.5, "II"))
                .collect(),
        ),
    )
    .unwrap();
    cli_import(dir.path(), "risk_points", &file);
    let alone = dir.path().join("copy");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(store_path(dir.path()), alone.join("riskmap.gpkg")).unwrap();
    let out = Command::new("ogrinfo")
        .args([
            "-so",
            "-ro",
            alone.join("riskmap.gpkg").to_str().unwrap(),
            "risk_points",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Feature Count: 25"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        text(&out.stderr).trim(),
        "",
        "GDAL warned: {}",
        text(&out.stderr)
    );
}
