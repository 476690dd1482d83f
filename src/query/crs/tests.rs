//! Oracle tests against PROJ's own command-line tools, `cs2cs` and `projinfo` (Debian
//! package `proj-bin`, installed by `scripts/test.sh`): run as subprocesses with the same
//! pair of CRSs, in the CRSs' own axis order. Without them these tests fail, saying so.

use std::io::Write;
use std::process::{Command, Stdio};

use geo::{Contains, CoordsIter};
use geo_types::{Coord, Geometry, LineString, Point, Polygon};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::model::Bbox;

const NO_PROJ_TOOLS: &str = "PROJ's command-line tools (cs2cs, projinfo; Debian package \
    proj-bin) are needed by the CRS tests: apt-get install proj-bin (scripts/test.sh does)";

/// Runs `cs2cs from to` over `points` (each in `from`'s axis order); each answer is in
/// `to`'s axis order, `None` where cs2cs could not transform the point.
fn cs2cs(from: &str, to: &str, points: &[Coord]) -> Vec<Option<Coord>> {
    let mut child = Command::new("cs2cs")
        .args(["-f", "%.12f", from, to])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{NO_PROJ_TOOLS}: {e}"));
    let mut input = String::new();
    for p in points {
        input.push_str(&format!("{:.15} {:.15}\n", p.x, p.y));
    }
    let mut stdin = child.stdin.take().expect("cs2cs stdin");
    // Written from another thread: cs2cs answers line by line and would block on a full
    // stdout pipe while we still write.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("cs2cs runs");
    writer
        .join()
        .expect("writer")
        .expect("cs2cs reads its input");
    assert!(
        out.status.success(),
        "cs2cs {from} {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("cs2cs writes UTF-8");
    let answers: Vec<Option<Coord>> = text
        .lines()
        .map(|line| {
            let mut fields = line.split_whitespace();
            let x = fields.next()?.parse::<f64>().ok()?;
            let y = fields.next()?.parse::<f64>().ok()?;
            Some(Coord { x, y })
        })
        .collect();
    assert_eq!(answers.len(), points.len(), "cs2cs answered every line");
    answers
}

fn cs2cs_all(from: &str, to: &str, points: &[Coord]) -> Vec<Coord> {
    cs2cs(from, to, points)
        .into_iter()
        .zip(points)
        .map(|(a, p)| a.unwrap_or_else(|| panic!("cs2cs {from} {to} failed on {p:?}")))
        .collect()
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Seeded WGS84 positions: most over Chongqing (105.2–110.2° E, 28.1–32.2° N), the rest
/// well beyond every zone's edges (95–125° E, 15–45° N).
fn lonlat_points(seed: u64, n: usize) -> Vec<Coord> {
    let mut r = rng(seed);
    (0..n)
        .map(|i| {
            if i % 4 == 3 {
                Coord {
                    x: r.random_range(95.0..125.0),
                    y: r.random_range(15.0..45.0),
                }
            } else {
                Coord {
                    x: r.random_range(105.2..110.2),
                    y: r.random_range(28.1..32.2),
                }
            }
        })
        .collect()
}

fn crs(name: &str) -> Crs {
    Crs::parse("crs", name).expect("supported")
}

/// The largest difference between two positions, per axis.
fn gap(a: Coord, b: Coord) -> f64 {
    (a.x - b.x).abs().max((a.y - b.y).abs())
}

/// The tolerance of the acceptance: 1 mm in metres, 1e-9° in degrees.
fn acceptance(crs: Crs) -> f64 {
    if crs.is_geographic() { 1e-9 } else { 1e-3 }
}

fn point_of(g: &Geometry) -> Coord {
    match g {
        Geometry::Point(p) => p.0,
        other => panic!("not a point: {other:?}"),
    }
}

#[test]
fn every_supported_crs_parses_in_every_spelling_and_names_its_uri() {
    assert_eq!(Crs::supported().len(), 11);
    assert_eq!(Crs::supported()[0], Crs::CRS84);
    assert_eq!(Crs::storage_crs(), Crs::CRS84);
    for &c in Crs::supported() {
        let name = c.proj_name();
        let (authority, code) = name.split_once(':').expect("AUTH:CODE");
        let urn = if authority == "EPSG" {
            format!("urn:ogc:def:crs:EPSG::{code}")
        } else {
            "urn:ogc:def:crs:OGC:1.3:CRS84".to_string()
        };
        let spellings = [
            c.uri().to_string(),
            c.uri().replace("http://", "https://"),
            c.uri().to_ascii_uppercase(),
            format!("  {}\t", c.uri()),
            name.to_string(),
            name.to_ascii_lowercase(),
            format!("[{name}]"),
            urn,
        ];
        for s in spellings {
            assert_eq!(Crs::parse("crs", &s), Ok(c), "{s:?}");
        }
        assert_eq!(c.content_crs_header(), format!("<{}>", c.uri()));
        if authority == "EPSG" {
            assert_eq!(
                c.uri(),
                format!("http://www.opengis.net/def/crs/EPSG/0/{code}")
            );
        }
    }
    assert_eq!(
        Crs::parse("crs", "http://www.opengis.net/def/crs/OGC/0/CRS84"),
        Ok(Crs::CRS84)
    );
}

#[test]
fn unsupported_crs_names_the_parameter_and_lists_the_supported_uris() {
    for bad in [
        "",
        "EPSG:4327",
        "EPSG:04326",
        "EPSG:+4326",
        "EPSG:4326 ",
        "EPSG:",
        "EPSG::4326",
        "[EPSG:4326",
        "EPSG:4326]",
        "ESRI:4326",
        "4326",
        "CRS84h",
        "OGC:CRS84h",
        "http://www.opengis.net/def/crs/EPSG/9.9/4326",
        "http://www.opengis.net/def/crs/EPSG/0/4326/extra",
        "http://example.org/def/crs/EPSG/0/4326",
        "urn:ogc:def:crs:EPSG:6.6:4326",
        "[http://www.opengis.net/def/crs/EPSG/0/4326]",
    ] {
        // A trailing space is trimmed, so that one is accepted: check it separately.
        if bad == "EPSG:4326 " {
            assert!(Crs::parse("bbox-crs", bad).is_ok());
            continue;
        }
        let err = Crs::parse("bbox-crs", bad).expect_err(bad);
        assert_eq!(err.param(), Some("bbox-crs"));
        let text = err.to_string();
        assert!(text.starts_with("bbox-crs: unsupported CRS"), "{text}");
        for c in Crs::supported() {
            assert!(text.contains(c.uri()), "{text} lists {}", c.uri());
        }
    }
}

/// Our table (title, axis order, Gauss–Krüger central meridian and false easting)
/// against PROJ's database as `projinfo` prints it.
#[test]
fn catalogue_agrees_with_the_proj_database() {
    for &c in Crs::supported() {
        let out = Command::new("projinfo")
            .args(["-q", "-o", "WKT2:2019", c.proj_name()])
            .output()
            .unwrap_or_else(|e| panic!("{NO_PROJ_TOOLS}: {e}"));
        assert!(out.status.success(), "projinfo {}", c.proj_name());
        let wkt = String::from_utf8(out.stdout).expect("UTF-8");
        assert!(
            wkt.contains(&format!("CRS[\"{}\"", c.title())),
            "{}: title {:?} in {wkt}",
            c.proj_name(),
            c.title()
        );
        let axes: Vec<&str> = wkt
            .lines()
            .filter_map(|l| l.trim().strip_prefix("AXIS["))
            .collect();
        assert_eq!(axes.len(), 2, "{wkt}");
        let first_is_north = axes[0].contains(",north");
        assert_eq!(
            first_is_north,
            c.axis_order().north_first(),
            "{}",
            c.proj_name()
        );
        assert!(axes[1].contains(if first_is_north { ",east" } else { ",north" }));
        assert_eq!(
            c.is_geographic(),
            wkt.starts_with("GEOGCRS"),
            "{}",
            c.proj_name()
        );
        if let Kind::GaussKruger {
            central_meridian,
            false_easting,
        } = c.kind()
        {
            assert!(wkt.contains(&format!(
                "\"Longitude of natural origin\",{central_meridian},"
            )));
            assert!(wkt.contains(&format!("\"False easting\",{false_easting},")));
            assert!(wkt.contains("\"Scale factor at natural origin\",1,"));
            // CGCS2000's ellipsoid: GRS80's semi-major axis and flattening.
            assert!(wkt.contains("ELLIPSOID[\"CGCS2000\",6378137,298.257222101,"));
        }
    }
}

#[test]
fn output_in_every_crs_matches_cs2cs_in_the_crs_axis_order() {
    let points = lonlat_points(1, 2_000);
    for &c in Crs::supported() {
        let expected = cs2cs_all("OGC:CRS84", c.proj_name(), &points);
        let mut worst: f64 = 0.0;
        for (p, e) in points.iter().zip(&expected) {
            let out = point_of(&to_crs(&Geometry::Point(Point(*p)), c).expect("transforms"));
            worst = worst.max(gap(out, *e));
            // As served: rounded to the CRS's decimals, still within the acceptance.
            let served = Coord {
                x: c.round(out.x),
                y: c.round(out.y),
            };
            assert!(
                gap(served, *e) <= acceptance(c),
                "{}: {p:?} → {served:?}, cs2cs {e:?}",
                c.proj_name()
            );
        }
        // The same PROJ computes both: equal to cs2cs's printed precision.
        let same = if c.is_geographic() { 1e-11 } else { 1e-8 };
        assert!(worst <= same, "{}: worst {worst}", c.proj_name());
    }
}

#[test]
fn lines_and_polygons_keep_their_shape_and_order_of_positions() {
    let pts = lonlat_points(2, 41);
    let line = Geometry::LineString(LineString::new(pts[..20].to_vec()));
    let mut ring = pts[20..40].to_vec();
    ring.push(ring[0]);
    let hole = LineString::new(vec![pts[40], pts[40], pts[40], pts[40]]);
    let polygon = Geometry::Polygon(Polygon::new(LineString::new(ring), vec![hole]));
    for &c in Crs::supported() {
        for g in [&line, &polygon] {
            let out = to_crs(g, c).expect("transforms");
            let given: Vec<Coord> = g.coords_iter().collect();
            let expected = cs2cs_all("OGC:CRS84", c.proj_name(), &given);
            let got: Vec<Coord> = out.coords_iter().collect();
            assert_eq!(got.len(), expected.len());
            let same = if c.is_geographic() { 1e-11 } else { 1e-6 };
            for (a, b) in got.iter().zip(&expected) {
                assert!(gap(*a, *b) <= same, "{}", c.proj_name());
            }
            assert_eq!(std::mem::discriminant(&out), std::mem::discriminant(g));
            // And back.
            let back = from_crs("filter", &out, c).expect("inverse");
            for (a, b) in back.coords_iter().zip(g.coords_iter()) {
                assert!(gap(a, b) <= 1e-11, "{}: {a:?} vs {b:?}", c.proj_name());
            }
        }
    }
}

#[test]
fn input_in_every_crs_matches_cs2cs() {
    let lonlat = lonlat_points(3, 2_000);
    for &c in Crs::supported() {
        // Positions as a client would give them: cs2cs's own, in the CRS's axis order.
        let given = cs2cs_all("OGC:CRS84", c.proj_name(), &lonlat);
        let expected = cs2cs_all(c.proj_name(), "OGC:CRS84", &given);
        for (g, e) in given.iter().zip(&expected) {
            let out =
                point_of(&from_crs("filter", &Geometry::Point(Point(*g)), c).expect("transforms"));
            assert!(
                gap(out, *e) <= 1e-11,
                "{}: {g:?} → {out:?}, cs2cs {e:?}",
                c.proj_name()
            );
        }
    }
}

#[test]
fn axis_order_is_the_crs_definition() {
    let p = Geometry::Point(Point::new(106.5, 29.5));
    assert_eq!(
        point_of(&to_crs(&p, Crs::CRS84).expect("id")),
        Coord { x: 106.5, y: 29.5 }
    );
    for name in ["EPSG:4326", "EPSG:4490"] {
        let out = point_of(&to_crs(&p, crs(name)).expect("transforms"));
        assert_eq!(out, Coord { x: 29.5, y: 106.5 }, "{name}: lat, lon");
    }
    let merc = point_of(&to_crs(&p, crs("EPSG:3857")).expect("transforms"));
    assert!(
        (merc.x - 106.5 / 180.0 * MERCATOR_HALF_WORLD).abs() < 1e-6,
        "easting first"
    );
    for name in ["EPSG:4545", "EPSG:4524"] {
        let gk = point_of(&to_crs(&p, crs(name)).expect("transforms"));
        assert!(
            (3_200_000.0..3_300_000.0).contains(&gk.x),
            "{name}: northing first {gk:?}"
        );
        assert!(
            gk.y.rem_euclid(1_000_000.0) < 500_000.0,
            "west of 108° E: {gk:?}"
        );
    }
}

#[test]
fn positions_outside_a_crs_domain_are_refused_naming_the_parameter_and_position() {
    let cases: [(&str, [f64; 2], &str); 10] = [
        ("OGC:CRS84", [f64::NAN, 29.0], "finite"),
        ("OGC:CRS84", [180.5, 29.0], "longitude"),
        ("EPSG:4326", [29.0, 181.0], "longitude"),
        ("EPSG:4326", [91.0, 106.0], "latitude"),
        ("EPSG:4490", [f64::INFINITY, 106.0], "finite"),
        ("EPSG:3857", [20_037_509.0, 0.0], "Pseudo-Mercator"),
        ("EPSG:3857", [0.0, -20_037_509.0], "Pseudo-Mercator"),
        ("EPSG:4547", [10_001_966.0, 500_000.0], "pole"),
        ("EPSG:4524", [-1e300, 36_500_000.0], "pole"),
        ("EPSG:4545", [3_300_000.0, f64::NEG_INFINITY], "finite"),
    ];
    for (name, [a, b], word) in cases {
        let c = crs(name);
        // A valid first position, then the bad one.
        let first = point_of(&to_crs(&Geometry::Point(Point::new(107.0, 30.0)), c).expect("ok"));
        let line = Geometry::LineString(LineString::new(vec![first, Coord { x: a, y: b }]));
        let err = from_crs("filter", &line, c).expect_err(name);
        let text = err.to_string();
        assert_eq!(err.param(), Some("filter"), "{text}");
        assert!(text.starts_with("filter: position 1 "), "{text}");
        assert!(text.contains(word), "{name}: {text}");
        assert!(text.contains(c.proj_name()), "{text}");
    }
}

#[test]
fn stored_positions_anywhere_in_china_and_beyond_are_written_in_every_crs() {
    // The extremes a stored WGS84 position can take, and PROJ's answer for each.
    let corners = [
        Coord { x: 73.0, y: 16.0 },
        Coord { x: 135.0, y: 54.0 },
        Coord {
            x: -180.0,
            y: -85.0,
        },
        Coord { x: 180.0, y: 85.0 },
        Coord { x: 0.0, y: 0.0 },
    ];
    for &c in Crs::supported() {
        let expected = cs2cs("OGC:CRS84", c.proj_name(), &corners);
        for (p, e) in corners.iter().zip(&expected) {
            let out = to_crs(&Geometry::Point(Point(*p)), c);
            match (out, e) {
                (Ok(g), Some(e)) => {
                    assert!(gap(point_of(&g), *e) <= 1e-6, "{}: {p:?}", c.proj_name())
                }
                (Err(err), None) => {
                    assert!(err.param().is_none(), "{err}");
                    assert!(err.to_string().contains(c.proj_name()), "{err}");
                }
                (out, e) => panic!("{}: {p:?}: we {out:?}, cs2cs {e:?}", c.proj_name()),
            }
        }
    }
}

#[test]
fn rounding_keeps_the_decimals_of_the_crs_and_the_nearest_value() {
    let mut r = rng(4);
    for &c in [Crs::CRS84, crs("EPSG:4547")].iter() {
        let d = c.decimals() as i32;
        assert_eq!(d, if c.is_geographic() { 9 } else { 4 });
        for _ in 0..10_000 {
            let v: f64 = if c.is_geographic() {
                r.random_range(-180.0..180.0)
            } else {
                r.random_range(-37_000_000.0..37_000_000.0)
            };
            let rounded = c.round(v);
            let text = format!("{rounded}");
            let decimals = text.split_once('.').map_or(0, |(_, f)| f.len());
            assert!(decimals <= d as usize, "{v} → {text}");
            assert!(
                (rounded - v).abs() <= 0.5 * 10f64.powi(-d) * (1.0 + 1e-6),
                "{v} → {text}"
            );
        }
    }
    let mut g = Geometry::Point(Point::new(3_300_000.123_456, 36_400_000.987_654_3));
    round_coords(&mut g, crs("EPSG:4524"));
    assert_eq!(
        point_of(&g),
        Coord {
            x: 3_300_000.123_5,
            y: 36_400_000.987_7
        }
    );
}

/// Boxes in each Gauss–Krüger zone, from a metre to 600 km across, over Chongqing and
/// beyond: every point of the box, densely sampled and transformed by cs2cs, lies in the
/// region's lon/lat box; points 5 cm inside lie in its outline, points 5 cm outside
/// do not.
#[test]
fn gauss_kruger_box_region_contains_the_whole_box() {
    let mut r = rng(5);
    for &c in Crs::supported()
        .iter()
        .filter(|c| matches!(c.kind(), Kind::GaussKruger { .. }))
    {
        let Kind::GaussKruger { false_easting, .. } = c.kind() else {
            unreachable!()
        };
        for case in 0..6 {
            let size = 10f64.powf(r.random_range(0.0..5.78)); // 1 m .. 600 km
            let aspect = r.random_range(0.2..5.0);
            let (w, h) = (size, size * aspect);
            // Eastings from 1,000 km west to 500 km east of the central meridian.
            let e0 = false_easting + r.random_range(-1_000_000.0..500_000.0);
            let n0 = r.random_range(1_500_000.0..4_500_000.0);
            let b = AxisBox {
                lower: [n0, e0],
                upper: [n0 + h, e0 + w],
            };
            let region = bbox_from_crs("bbox", b, c).expect("region");
            let outline = region.outline.clone().expect("an outline for Gauss–Krüger");
            let mut on_box = Vec::new();
            let k = 20;
            for i in 0..=k {
                for j in 0..=k {
                    let (fi, fj) = (i as f64 / k as f64, j as f64 / k as f64);
                    on_box.push(Coord {
                        x: n0 + fi * h,
                        y: e0 + fj * w,
                    });
                }
                // Edges, finer.
                for t in 0..if i < k { 25 } else { 0 } {
                    let f = (i as f64 * 25.0 + t as f64) / (k as f64 * 25.0);
                    on_box.push(Coord {
                        x: n0,
                        y: e0 + f * w,
                    });
                    on_box.push(Coord {
                        x: n0 + h,
                        y: e0 + f * w,
                    });
                    on_box.push(Coord {
                        x: n0 + f * h,
                        y: e0,
                    });
                    on_box.push(Coord {
                        x: n0 + f * h,
                        y: e0 + w,
                    });
                }
            }
            let lonlat = cs2cs_all(c.proj_name(), "OGC:CRS84", &on_box);
            let bb = region.bbox;
            for (p, ll) in on_box.iter().zip(&lonlat) {
                assert!(
                    ll.x >= bb.min_lon
                        && ll.x <= bb.max_lon
                        && ll.y >= bb.min_lat
                        && ll.y <= bb.max_lat,
                    "{} case {case}: {p:?} → {ll:?} outside {bb:?}",
                    c.proj_name()
                );
            }
            // The box is tight: its edges are reached within the padding.
            let reach = lonlat.iter().fold(
                Bbox {
                    min_lon: 180.0,
                    min_lat: 90.0,
                    max_lon: -180.0,
                    max_lat: -90.0,
                },
                |acc, ll| acc.union(Bbox::of_coord(*ll)),
            );
            for (ours, sampled) in [
                (bb.min_lon, reach.min_lon),
                (bb.min_lat, reach.min_lat),
                (bb.max_lon, reach.max_lon),
                (bb.max_lat, reach.max_lat),
            ] {
                assert!(
                    (ours - sampled).abs() < 1e-6,
                    "{} case {case}: {bb:?} vs {reach:?}",
                    c.proj_name()
                );
            }
            // Inside and outside, 5 cm from the edges (the outline follows them to 1e-7°).
            if w > 0.2 && h > 0.2 {
                let Geometry::Polygon(poly) = &outline else {
                    panic!("{outline:?}")
                };
                let m = 0.05;
                let mut inner = Vec::new();
                let mut outer = Vec::new();
                for t in 0..=100 {
                    let f = t as f64 / 100.0;
                    let (ni, ei) = (n0 + m + f * (h - 2.0 * m), e0 + m + f * (w - 2.0 * m));
                    inner.extend([
                        Coord { x: n0 + m, y: ei },
                        Coord {
                            x: n0 + h - m,
                            y: ei,
                        },
                        Coord { x: ni, y: e0 + m },
                        Coord {
                            x: ni,
                            y: e0 + w - m,
                        },
                    ]);
                    let (no, eo) = (n0 - m + f * (h + 2.0 * m), e0 - m + f * (w + 2.0 * m));
                    outer.extend([
                        Coord { x: n0 - m, y: eo },
                        Coord {
                            x: n0 + h + m,
                            y: eo,
                        },
                        Coord { x: no, y: e0 - m },
                        Coord {
                            x: no,
                            y: e0 + w + m,
                        },
                    ]);
                }
                for ll in cs2cs_all(c.proj_name(), "OGC:CRS84", &inner) {
                    assert!(
                        poly.contains(&Point(ll)),
                        "{} case {case}: {ll:?} inside",
                        c.proj_name()
                    );
                    assert!(region.intersects(&Geometry::Point(Point(ll))));
                }
                for ll in cs2cs_all(c.proj_name(), "OGC:CRS84", &outer) {
                    assert!(
                        !poly.contains(&Point(ll)),
                        "{} case {case}: {ll:?} outside",
                        c.proj_name()
                    );
                    assert!(!region.intersects(&Geometry::Point(Point(ll))));
                }
            }
        }
    }
}

#[test]
fn gauss_kruger_boxes_without_width_or_height_are_lines_and_points() {
    let c = crs("EPSG:4545");
    let line = bbox_from_crs(
        "bbox",
        AxisBox {
            lower: [3_200_000.0, 400_000.0],
            upper: [3_200_000.0, 600_000.0],
        },
        c,
    )
    .expect("a line");
    let Some(Geometry::LineString(l)) = &line.outline else {
        panic!("{line:?}")
    };
    assert!(l.0.len() > 2, "follows the curved grid line");
    let ends = cs2cs_all(
        "EPSG:4545",
        "OGC:CRS84",
        &[
            Coord {
                x: 3_200_000.0,
                y: 400_000.0,
            },
            Coord {
                x: 3_200_000.0,
                y: 600_000.0,
            },
        ],
    );
    assert!(gap(l.0[0], ends[0]) < 1e-11 && gap(l.0[l.0.len() - 1], ends[1]) < 1e-11);
    let point = bbox_from_crs(
        "bbox",
        AxisBox {
            lower: [3_200_000.0, 400_000.0],
            upper: [3_200_000.0, 400_000.0],
        },
        c,
    )
    .expect("a point");
    let Some(Geometry::Point(p)) = point.outline else {
        panic!("{point:?}")
    };
    assert!(gap(p.0, ends[0]) < 1e-11);
    assert!(point.intersects(&Geometry::Point(p)));
}

/// The acceptance: a `bbox-crs` query in EPSG:3857 selects the same features as
/// its WGS84 equivalent. The region is exactly the box of the corners cs2cs gives, and a
/// seeded cloud of points is selected by it exactly when cs2cs puts the point inside the
/// Web Mercator box.
#[test]
fn pseudo_mercator_box_selects_what_its_wgs84_box_selects() {
    let c = crs("EPSG:3857");
    let mut r = rng(6);
    let cloud = lonlat_points(7, 20_000);
    let cloud_merc = cs2cs_all("OGC:CRS84", "EPSG:3857", &cloud);
    for case in 0..20 {
        let lon = r.random_range(104.0..110.0);
        let lat = r.random_range(27.5..32.0);
        let sw = cs2cs_all("OGC:CRS84", "EPSG:3857", &[Coord { x: lon, y: lat }])[0];
        let (w, h) = (
            r.random_range(100.0..300_000.0),
            r.random_range(100.0..300_000.0),
        );
        let b = AxisBox {
            lower: [sw.x, sw.y],
            upper: [sw.x + w, sw.y + h],
        };
        let region = bbox_from_crs("bbox", b, c).expect("region");
        assert_eq!(region.outline, None, "exact box");
        let corners = cs2cs_all(
            "EPSG:3857",
            "OGC:CRS84",
            &[
                Coord {
                    x: b.lower[0],
                    y: b.lower[1],
                },
                Coord {
                    x: b.upper[0],
                    y: b.upper[1],
                },
            ],
        );
        let bb = region.bbox;
        assert!(
            gap(
                Coord {
                    x: bb.min_lon,
                    y: bb.min_lat
                },
                corners[0]
            ) <= 1e-11,
            "case {case}"
        );
        assert!(
            gap(
                Coord {
                    x: bb.max_lon,
                    y: bb.max_lat
                },
                corners[1]
            ) <= 1e-11,
            "case {case}"
        );
        let (mut selected, mut near_edge) = (0, 0);
        for (ll, m) in cloud.iter().zip(&cloud_merc) {
            let edge = [
                m.x - b.lower[0],
                b.upper[0] - m.x,
                m.y - b.lower[1],
                b.upper[1] - m.y,
            ]
            .into_iter()
            .map(f64::abs)
            .fold(f64::INFINITY, f64::min);
            if edge < 1e-6 {
                near_edge += 1; // a micrometre from an edge: rounding decides
                continue;
            }
            let in_merc =
                m.x >= b.lower[0] && m.x <= b.upper[0] && m.y >= b.lower[1] && m.y <= b.upper[1];
            assert_eq!(
                region.intersects(&Geometry::Point(Point(*ll))),
                in_merc,
                "case {case}: {ll:?}"
            );
            selected += usize::from(in_merc);
        }
        assert_eq!(near_edge, 0);
        if case == 0 {
            assert!(selected > 0, "the test selects something");
        }
    }
}

#[test]
fn geographic_boxes_are_read_in_their_axis_order() {
    let b = AxisBox {
        lower: [29.0, 106.0],
        upper: [30.0, 107.5],
    };
    for name in ["EPSG:4326", "EPSG:4490"] {
        let region = bbox_from_crs("bbox", b, crs(name)).expect("region");
        assert_eq!(
            region.bbox,
            Bbox::new(106.0, 29.0, 107.5, 30.0).expect("box"),
            "{name}"
        );
        assert_eq!(region.outline, None);
    }
    let lonlat = AxisBox {
        lower: [106.0, 29.0],
        upper: [107.5, 30.0],
    };
    let region = bbox_from_crs("bbox", lonlat, Crs::CRS84).expect("region");
    assert_eq!(
        region.bbox,
        Bbox::new(106.0, 29.0, 107.5, 30.0).expect("box")
    );
    // In lat/lon order, the CRS84 box is a latitude of 106°.
    let err = bbox_from_crs("bbox", b, Crs::CRS84).expect_err("latitude 106");
    assert!(err.to_string().contains("latitude"), "{err}");
}

#[test]
fn bad_boxes_are_refused_naming_the_parameter() {
    let cases: [(&str, AxisBox, &str); 6] = [
        (
            "EPSG:4326",
            AxisBox {
                lower: [29.0, 170.0],
                upper: [30.0, -170.0],
            },
            "longitude minimum",
        ),
        (
            "EPSG:4326",
            AxisBox {
                lower: [31.0, 106.0],
                upper: [30.0, 107.0],
            },
            "latitude minimum",
        ),
        (
            "EPSG:3857",
            AxisBox {
                lower: [0.0, 0.0],
                upper: [2.1e7, 1.0],
            },
            "Pseudo-Mercator",
        ),
        (
            "EPSG:4547",
            AxisBox {
                lower: [3.3e6, 6e5],
                upper: [3.2e6, 7e5],
            },
            "northing minimum",
        ),
        (
            "EPSG:4547",
            AxisBox {
                lower: [3.2e6, f64::NAN],
                upper: [3.3e6, 7e5],
            },
            "finite",
        ),
        // A box 10,000 km wide east of 114° E reaches past 180° (cs2cs: -179.45° E).
        (
            "EPSG:4547",
            AxisBox {
                lower: [1e6, 5e5],
                upper: [2e6, 1.05e7],
            },
            "antimeridian",
        ),
    ];
    for (name, b, word) in cases {
        let err = bbox_from_crs("bbox", b, crs(name)).expect_err(name);
        assert_eq!(err.param(), Some("bbox"), "{err}");
        assert!(err.to_string().starts_with("bbox: "), "{err}");
        assert!(err.to_string().contains(word), "{name}: {err}");
    }
}

#[test]
fn transformers_work_on_many_threads_at_once() {
    let points = lonlat_points(8, 200);
    for &c in Crs::supported() {
        let expected = cs2cs_all("OGC:CRS84", c.proj_name(), &points);
        let given: Vec<Geometry> = expected
            .iter()
            .map(|e| Geometry::Point(Point(*e)))
            .collect();
        // Threads that start together: one builds the transformer from PROJ's database,
        // the others from the definition it leaves (or all from the database).
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for ((p, e), g) in points.iter().zip(&expected).zip(&given) {
                        let out = point_of(&to_crs(&Geometry::Point(Point(*p)), c).expect("ok"));
                        assert!(gap(out, *e) <= 1e-8, "{}", c.proj_name());
                        let back = point_of(&from_crs("bbox", g, c).expect("ok"));
                        assert!(gap(back, *p) <= 1e-10, "{}", c.proj_name());
                    }
                });
            }
        });
    }
}

/// `cargo test --release --lib -- --ignored --nocapture transform_speed`: a page of
/// 10,000 points to EPSG:4547, each its own call (so each looks its transformer up).
#[test]
#[ignore = "a measurement: run in release with --nocapture"]
fn transform_speed() {
    use std::time::Instant;
    let c = crs("EPSG:4547");
    let points: Vec<Geometry> = lonlat_points(9, 10_000)
        .into_iter()
        .map(|p| Geometry::Point(Point(p)))
        .collect();
    let start = Instant::now();
    let fresh = std::thread::spawn(move || {
        let t = Instant::now();
        to_crs(&Geometry::Point(Point::new(107.0, 30.0)), c).expect("ok");
        t.elapsed()
    })
    .join()
    .expect("thread");
    println!("first call on a new thread (builds the transformer): {fresh:?}");
    for name in ["EPSG:4547", "EPSG:4524"] {
        let c2 = crs(name);
        let again = std::thread::spawn(move || {
            let t = Instant::now();
            to_crs(&Geometry::Point(Point::new(107.0, 30.0)), c2).expect("ok");
            t.elapsed()
        })
        .join()
        .expect("thread");
        println!("first call to {name} on another new thread: {again:?}");
    }
    to_crs(&Geometry::Point(Point::new(107.0, 30.0)), c).expect("ok");
    from_crs("bbox", &Geometry::Point(Point::new(3.3e6, 0.0)), c).expect("ok");
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let mut out = Vec::with_capacity(points.len());
        for g in &points {
            let mut g = to_crs(g, c).expect("ok");
            round_coords(&mut g, c);
            out.push(g);
        }
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(out.len(), 10_000);
    }
    println!(
        "10,000 points to EPSG:4547, transformed and rounded: {:.2} ms ({:.3} µs per point); whole test {:?}",
        best * 1e3,
        best * 1e6 / 10_000.0,
        start.elapsed()
    );
    let t = Instant::now();
    let b = AxisBox {
        lower: [3_100_000.0, -350_000.0],
        upper: [3_600_000.0, 150_000.0],
    };
    let region = bbox_from_crs("bbox", b, c).expect("region");
    let Some(Geometry::Polygon(p)) = region.outline else {
        panic!()
    };
    println!(
        "bbox-crs EPSG:4547 over Chongqing (500 × 400 km): {:?}, outline of {} points",
        t.elapsed(),
        p.exterior().0.len()
    );
}
