//! Issue 10 end to end over HTTP (through the router, no socket), with the server's
//! clock set by the test (time stands still unless the test moves it): readings over a
//! threshold raise a warning that is in `GET /warnings` with the plan's steps, in the
//! next tile of its risk point (as a feature of `warnings` and as `warning_level`),
//! and on the SSE stream; acknowledging and resolving work, are audited, and are
//! refused to the wrong roles; bad readings are rejected and counted; a restart keeps
//! the sensors' state and the open warnings.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::*;
use geozero::mvt::{Message, Tile};
use riskmap::app::App;
use riskmap::model::Role;
use serde_json::{Value, json};

/// 2026-11-22T08:00:00Z.
const T0: i64 = 1_795_334_400_000;
const MIN: i64 = 60_000;

fn ts(ms: i64) -> String {
    riskmap::alerts::readings::format_ts(ms)
}

struct World {
    _dir: tempfile::TempDir,
    app: Arc<App>,
    clock: Arc<AtomicI64>,
    sensor: String,
    officer: String,
    planner: String,
    viewer: String,
}

impl World {
    /// The server stopped and opened again on the same store, at the same time.
    fn restart(self) -> World {
        let dir = self.app.store().path().parent().unwrap().to_path_buf();
        let World {
            app,
            _dir,
            clock,
            sensor,
            officer,
            planner,
            viewer,
        } = self;
        drop(app);
        let app = open_app(&dir);
        app.set_clock(clock_of(&clock));
        World {
            app,
            _dir,
            clock,
            sensor,
            officer,
            planner,
            viewer,
        }
    }

    fn set_time(&self, ms: i64) {
        self.clock.store(ms, Ordering::SeqCst);
    }

    async fn post(&self, uri: &str, key: &str, ct: &str, body: String) -> (u16, Value) {
        let auth = format!("Bearer {key}");
        let (s, _, b) = http(
            &self.app,
            "POST",
            uri,
            &[("authorization", &auth), ("content-type", ct)],
            Some(body),
        )
        .await;
        (
            s.as_u16(),
            serde_json::from_slice(&b).unwrap_or(Value::Null),
        )
    }

    async fn readings(&self, lines: &[(&str, i64, f64)]) -> Value {
        let body: Vec<String> = lines
            .iter()
            .map(|(s, t, v)| json!({"sensor_id": s, "ts": ts(*t), "value": v}).to_string())
            .collect();
        let (s, r) = self
            .post(
                "/readings",
                &self.sensor,
                "application/x-ndjson",
                body.join("\n"),
            )
            .await;
        assert_eq!(s, 200, "{r}");
        r
    }
}

fn clock_of(c: &Arc<AtomicI64>) -> riskmap::app::Clock {
    let c = c.clone();
    Arc::new(move || c.load(Ordering::SeqCst))
}

/// Two risk points (R1 with plan P1, R2 near pipeline L1), sensors S1 and S2 on R1,
/// S3 on L1; water-level types and plans loaded over HTTP first (the features name
/// them). S4 names type 99, which nobody loaded: a row another tool wrote, which the
/// server serves after its restart but cannot judge.
async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let app = open_app(dir.path());
    let key = |r: Role| app.store().add_key("test", r, r.name()).unwrap().secret;
    let (sensor, officer, planner, viewer) = (
        key(Role::Sensor),
        key(Role::DutyOfficer),
        key(Role::Planner),
        key(Role::Viewer),
    );
    let clock = Arc::new(AtomicI64::new(T0));
    let w = World {
        sensor,
        officer,
        planner,
        viewer,
        _dir: dir,
        app,
        clock,
    };
    let (s, r) = w
        .post(
            "/sensor-types",
            &w.planner.clone(),
            "text/csv",
            "type_id,family,name,unit,warn_above,alarm_above\n3,water_level,water_level_model_1,m,2.0,3.0\n".into(),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let plans = json!([{"id": "P1", "title": "landslide response plan 1", "category": "landslide",
        "levels": {"red": ["evacuate_residents", "close_road"], "orange": ["close_road"],
                   "yellow": ["verify_on_site"], "blue": ["monitor_every_10_min"]},
        "contacts": [{"role": "town_duty_officer", "phone": "023-63966140"}]}]);
    let (s, r) = w
        .post(
            "/plan-templates",
            &w.planner.clone(),
            "application/json",
            plans.to_string(),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let app = &w.app;
    let mut r1 = risk_point("R1", 106.55, 29.56, "I");
    r1["properties"]["plan_id"] = json!("P1");
    create(app, "risk_points", &r1);
    create(app, "risk_points", &risk_point("R2", 106.60, 29.60, "III"));
    create(
        app,
        "pipelines",
        &json!({"type": "Feature", "id": "L1",
            "geometry": {"type": "LineString", "coordinates": [[106.5995, 29.5995], [106.6005, 29.6005]]},
            "properties": {"id": "L1", "kind": "gas", "material": "steel", "diameter_mm": 300, "district": "Yuzhong"}}),
    );
    let sensor = |id: &str, ty: i64, rp: Option<&str>, pipe: Option<&str>, lon: f64, lat: f64| {
        json!({"type": "Feature", "id": id,
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {"id": id, "type_id": ty, "risk_point_id": rp, "pipeline_id": pipe}})
    };
    create(
        app,
        "sensors",
        &sensor("S1", 3, Some("R1"), None, 106.5501, 29.5601),
    );
    create(
        app,
        "sensors",
        &sensor("S2", 3, Some("R1"), None, 106.5502, 29.5602),
    );
    create(
        app,
        "sensors",
        &sensor("S3", 3, None, Some("L1"), 106.6, 29.6),
    );
    // The server refuses S4 (its type names nothing) ...
    let def = app.layer("sensors").unwrap().def.clone();
    let s4 = riskmap::model::Feature::from_geojson(
        &def,
        &sensor("S4", 99, Some("R2"), None, 106.6, 29.6),
    )
    .unwrap();
    let refused = app.create(Default::default(), "sensors", s4.clone());
    assert!(
        matches!(&refused, Err(riskmap::app::EditError::Invalid(e)) if e.field == "type_id"),
        "{refused:?}"
    );
    // ... which another tool wrote all the same; the server serves it after a restart.
    app.store()
        .write(|tx| {
            tx.insert_feature(&def, &s4, None)?;
            tx.commit()
        })
        .unwrap();
    w.restart()
}

/// Whether `layer`'s index holds feature `id`.
fn holds(app: &App, layer: &str, id: &str) -> bool {
    app.layer(layer).unwrap().index.read().slot(id).is_some()
}

/// The features of one layer of a tile: their tags.
fn tile_layer(bytes: &[u8], name: &str) -> Vec<HashMap<String, Value>> {
    let tile = Tile::decode(bytes).unwrap();
    let Some(layer) = tile.layers.iter().find(|l| l.name == name) else {
        return Vec::new();
    };
    layer
        .features
        .iter()
        .map(|f| {
            f.tags
                .chunks(2)
                .map(|p| {
                    let v = &layer.values[p[1] as usize];
                    let v = v
                        .string_value
                        .clone()
                        .map(Value::from)
                        .or(v.int_value.map(Value::from))
                        .or(v.double_value.map(Value::from))
                        .or(v.bool_value.map(Value::from))
                        .unwrap_or(Value::Null);
                    (layer.keys[p[0] as usize].clone(), v)
                })
                .collect()
        })
        .collect()
}

/// The tile holding lon/lat at zoom `z`.
fn tile_of(lon: f64, lat: f64, z: u8) -> String {
    let n = f64::from(1u32 << z);
    let x = ((lon + 180.0) / 360.0 * n) as u32;
    let r = lat.to_radians();
    let y = ((1.0 - (r.tan() + 1.0 / r.cos()).ln() / std::f64::consts::PI) / 2.0 * n) as u32;
    format!("{z}/{x}/{y}")
}

async fn tile(app: &Arc<App>, layers: &str, at: &str) -> Vec<u8> {
    let (s, b) = http_get(app, &format!("/tiles/{layers}/{at}.mvt")).await;
    assert_eq!(s.as_u16(), 200);
    b
}

/// Reads SSE frames from `body` until `want` events came (or a few seconds passed).
async fn sse_events(body: axum::body::Body, want: usize) -> Vec<(String, String, Value)> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut text = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while out.len() < want {
        let frame = tokio::time::timeout_at(deadline, body.frame()).await;
        let Ok(Some(Ok(frame))) = frame else { break };
        if let Some(d) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(d));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut id, mut ev, mut data) = (String::new(), String::new(), Value::Null);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.into();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    ev = v.into();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).unwrap();
                }
            }
            if !ev.is_empty() {
                out.push((id, ev, data));
            }
        }
    }
    out
}

async fn open_stream(app: &Arc<App>, last: Option<&str>) -> axum::body::Body {
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder().uri("/warnings/stream");
    if let Some(l) = last {
        req = req.header("last-event-id", l);
    }
    let resp = riskmap::api::router(app.clone())
        .oneshot(req.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    resp.into_body()
}

#[tokio::test]
async fn readings_over_a_threshold_raise_a_warning_seen_in_the_list_the_tile_and_the_stream() {
    let w = world().await;
    let stream = open_stream(&w.app, None).await;
    let at = tile_of(106.55, 29.56, 14);
    // Drawn and cached before the warning: the next fetch must not be this copy.
    let before = tile(&w.app, "risk_points,warnings", &at).await;
    let (s, _) = http_get(&w.app, &format!("/tiles/warnings/{at}.mvt")).await;
    assert_eq!(s.as_u16(), 204, "no warning yet: an empty tile");
    assert!(tile_layer(&before, "warnings").is_empty());
    assert!(!tile_layer(&before, "risk_points")[0].contains_key("warning_level"));

    let r = w
        .readings(&[("S1", T0 - 1000, 1.0), ("S2", T0 - 1000, 1.5)])
        .await;
    assert_eq!(
        (r["accepted"].as_u64(), r["transitions"].as_u64()),
        (Some(2), Some(0))
    );
    let started = std::time::Instant::now();
    let r = w.readings(&[("S1", T0, 3.2)]).await;
    assert_eq!(r["transitions"], 1);

    // In the list, with the plan's steps for orange.
    let list = http_json(&w.app, "/warnings").await;
    assert_eq!(list["numberMatched"], 1);
    assert_eq!(
        http_json(&w.app, "/health").await["alerts"]["open_warnings"],
        1
    );
    let one = &list["warnings"][0];
    assert_eq!(
        (one["level"].as_str(), one["state"].as_str()),
        (Some("orange"), Some("active"))
    );
    assert_eq!(one["subject"]["id"], "R1");
    let id = one["id"].as_u64().unwrap();
    let detail = http_json(&w.app, &format!("/warnings/{id}")).await;
    assert_eq!(detail["plan"]["steps"], json!(["Close road"]));
    assert_eq!(detail["plan"]["contacts"][0]["phone"], "023-63966140");
    assert_eq!(detail["events"][0]["evidence"][0]["sensor_id"], "S1");
    assert_eq!(detail["events"][0]["evidence"][0]["threshold"], 3.0);
    assert_eq!(detail["sensors"][0]["type"]["name"], "water_level_model_1");
    assert_eq!(detail["sensors"][0]["type"]["unit"], "m");

    // In the next tile: a feature of `warnings`, and `warning_level` on the point; the
    // warnings layer's own tile too (cached before, empty).
    let alone = tile(&w.app, "warnings", &at).await;
    assert_eq!(
        tile_layer(&alone, "warnings").len(),
        1,
        "the cached empty tile was served"
    );
    let after = tile(&w.app, "risk_points,warnings", &at).await;
    let warned = tile_layer(&after, "warnings");
    assert_eq!(warned.len(), 1);
    assert_eq!(warned[0]["level"], "orange");
    assert_eq!(
        tile_layer(&after, "risk_points")[0]["warning_level"],
        "orange"
    );
    // A low zoom where R1 and R2 are one cluster: it carries the highest level inside.
    let low = tile(&w.app, "risk_points", &tile_of(106.55, 29.56, 2)).await;
    let rp = tile_layer(&low, "risk_points");
    assert!(
        rp.iter()
            .any(|f| f.get("warning_level") == Some(&json!("orange"))),
        "{rp:?}"
    );

    // On the stream.
    let events = sse_events(stream, 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1, "raised");
    assert_eq!(events[0].2["warning_id"], id);
    assert_eq!(events[0].2["to"], "orange");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Escalation: red.
    w.readings(&[("S2", T0 + 1000, 9.0)]).await;
    let w1 = http_json(&w.app, &format!("/warnings/{id}")).await;
    assert_eq!(w1["level"], "red");
    assert_eq!(
        w1["plan"]["steps"],
        json!(["Evacuate residents", "Close road"])
    );

    // Acts: refused to the wrong roles, done by a duty officer, audited.
    for key in [&w.sensor, &w.planner, &w.viewer] {
        let (s, _) = w
            .post(
                &format!("/warnings/{id}/ack"),
                key,
                "application/json",
                "{}".into(),
            )
            .await;
        assert_eq!(s, 403);
    }
    let (s, _, _) = http(&w.app, "POST", &format!("/warnings/{id}/ack"), &[], None).await;
    assert_eq!(s.as_u16(), 401);
    let (s, ack) = w
        .post(
            &format!("/warnings/{id}/ack"),
            &w.officer,
            "application/json",
            json!({"note": "team on the way"}).to_string(),
        )
        .await;
    assert_eq!(s, 200, "{ack}");
    assert_eq!(ack["kind"], "acknowledged");
    let (s, e) = w
        .post(
            &format!("/warnings/{id}/resolve"),
            &w.officer,
            "application/json",
            "{}".into(),
        )
        .await;
    assert_eq!(s, 422, "a resolution by hand needs a note: {e}");
    let (s, res) = w
        .post(
            &format!("/warnings/{id}/resolve"),
            &w.officer,
            "application/json",
            json!({"note": "gauge fouled by debris, cleared"}).to_string(),
        )
        .await;
    assert_eq!(s, 200, "{res}");
    assert_eq!(res["kind"], "resolved");
    let (s, _) = w
        .post(
            &format!("/warnings/{id}/resolve"),
            &w.officer,
            "application/json",
            json!({"note": "again"}).to_string(),
        )
        .await;
    assert_eq!(s, 409);
    let dir = w.app.store().path().parent().unwrap().to_path_buf();
    for action in [
        "warning_raised",
        "warning_escalated",
        "warning_acknowledged",
        "warning_resolved",
    ] {
        assert_eq!(sqlite_audit_count(&dir, action), 1, "{action}");
    }
    let audit_role: String = rusqlite::Connection::open(store_path(&dir))
        .unwrap()
        .query_row(
            "SELECT role FROM riskmap_audit WHERE action = 'warning_acknowledged'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audit_role, "duty_officer");

    // Resolved: gone from the list, the layer and the tile; still readable.
    assert_eq!(http_json(&w.app, "/warnings").await["numberMatched"], 0);
    assert_eq!(
        http_json(&w.app, "/warnings?state=resolved").await["numberMatched"],
        1
    );
    let after = tile(&w.app, "risk_points,warnings", &at).await;
    assert!(tile_layer(&after, "warnings").is_empty());
    assert!(!tile_layer(&after, "risk_points")[0].contains_key("warning_level"));
    // Resumed with Last-Event-ID: the three events after the first.
    let resumed = sse_events(open_stream(&w.app, Some("1")).await, 3).await;
    let kinds: Vec<&str> = resumed.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(kinds, ["escalated", "acknowledged", "resolved"]);
    assert_eq!(resumed[0].0, "2");
}

#[tokio::test]
async fn a_warning_resolves_itself_after_the_pending_period_and_flapping_makes_one() {
    let w = world().await;
    // Flapping around blue's threshold (2.0, hysteresis 0.1) every 30 s.
    for (i, v) in [2.05, 1.95, 2.02, 1.5, 2.01, 1.7].iter().enumerate() {
        let t = T0 + i as i64 * 30_000;
        w.set_time(t);
        w.readings(&[("S1", t, *v)]).await;
    }
    assert_eq!(
        http_json(&w.app, "/warnings?state=all").await["numberMatched"],
        1
    );
    // Under blue since the 1.7 at T0 + 150 s: resolved by the first reading 5 minutes
    // after that one, not before.
    for m in 3..=7 {
        let t = T0 + m * MIN;
        w.set_time(t);
        w.readings(&[("S1", t, 1.0)]).await;
        assert_eq!(
            http_json(&w.app, "/warnings").await["numberMatched"],
            1,
            "minute {m}"
        );
    }
    let t = T0 + 8 * MIN;
    w.set_time(t);
    let r = w.readings(&[("S1", t, 1.0)]).await;
    assert_eq!(r["transitions"], 1);
    assert_eq!(http_json(&w.app, "/warnings").await["numberMatched"], 0);
    let all = http_json(&w.app, "/warnings?state=resolved").await;
    assert_eq!(all["warnings"][0]["resolved"]["how"], "readings_normal");
}

#[tokio::test]
async fn bad_readings_are_rejected_and_counted_never_taken_as_normal() {
    let w = world().await;
    w.readings(&[("S1", T0, 3.5)]).await;
    let body = [
        json!({"sensor_id": "S1", "ts": ts(T0), "value": 1.0}).to_string(), // duplicate
        json!({"sensor_id": "S1", "ts": ts(T0 - MIN), "value": 1.0}).to_string(), // out of order
        "{\"sensor_id\":\"S1\",\"ts\":\"2026-11-22T08:01:00Z\",\"value\":NaN}".to_string(),
        json!({"sensor_id": "S1", "ts": ts(T0 + MIN), "value": null}).to_string(),
        json!({"sensor_id": "S404", "ts": ts(T0), "value": 1.0}).to_string(),
        json!({"sensor_id": "S2", "ts": ts(T0 - 8 * 24 * 60 * MIN), "value": 1.0}).to_string(),
        json!({"sensor_id": "S2", "ts": ts(T0 + 10 * MIN), "value": 1.0}).to_string(),
        json!({"sensor_id": "S4", "ts": ts(T0), "value": 1.0}).to_string(), // type 99 not loaded
        json!({"sensor_id": "S2", "ts": "yesterday", "value": 1.0}).to_string(),
    ];
    let (s, r) = w
        .post(
            "/readings",
            &w.sensor,
            "application/x-ndjson",
            body.join("\n"),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["received"], 9);
    assert_eq!(r["accepted"], 0);
    assert_eq!(
        r["rejected"],
        json!({"duplicate": 1, "out_of_order": 1, "malformed": 2, "not_finite": 1,
               "unknown_sensor": 1, "too_old": 1, "in_future": 1, "no_rule": 1})
    );
    // S1 is still orange: nothing bad was taken as normal.
    let s1 = http_json(&w.app, "/sensors/S1").await;
    assert_eq!(
        (s1["state"].as_str(), s1["latest"]["value"].as_f64()),
        (Some("orange"), Some(3.5))
    );
    // S2 never reported: no data, not normal.
    assert_eq!(http_json(&w.app, "/sensors/S2").await["state"], "no_data");
    // Silent longer than its type allows (10 min): no data too.
    w.set_time(T0 + 11 * MIN);
    assert_eq!(http_json(&w.app, "/sensors/S1").await["state"], "no_data");
    // Whole-body errors.
    let (s, _) = w
        .post("/readings", &w.sensor, "application/json", "[{".into())
        .await;
    assert_eq!(s, 400);
    let (s, _) = w
        .post("/readings", &w.sensor, "text/plain", "x".into())
        .await;
    assert_eq!(s, 415);
    let (s, _) = w
        .post("/readings", &w.officer, "application/json", "[]".into())
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn a_pipeline_sensor_warns_on_its_pipeline_and_the_risk_point_beside_it() {
    let w = world().await;
    w.readings(&[("S3", T0, 2.2)]).await;
    let list = http_json(&w.app, "/warnings").await;
    let mut subjects: Vec<String> = list["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            format!(
                "{}/{}",
                w["subject"]["layer"].as_str().unwrap(),
                w["subject"]["id"].as_str().unwrap()
            )
        })
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["pipelines/L1", "risk_points/R2"]);
    let (_, b) = http_get(
        &w.app,
        &format!("/tiles/pipelines/{}.mvt", tile_of(106.6, 29.6, 16)),
    )
    .await;
    assert_eq!(tile_layer(&b, "pipelines")[0]["warning_level"], "blue");
}

#[tokio::test]
async fn a_risk_point_moved_away_from_a_pipeline_or_beside_it_follows_its_warnings() {
    let w = world().await;
    let subjects = |list: &Value| -> Vec<String> {
        let mut v: Vec<String> = list["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["subject"]["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    // S3 (on L1) reads normal: L1's subjects are worked out (L1 and R2) and kept.
    w.readings(&[("S3", T0, 1.0)]).await;
    // R2 moves 2 km away, R5 is created beside L1.
    let auth = format!("Bearer {}", w.planner);
    let (s, _, b) = http(
        &w.app,
        "PATCH",
        "/collections/risk_points/items/R2",
        &[
            ("authorization", &auth),
            ("content-type", "application/merge-patch+json"),
        ],
        Some(json!({"geometry": {"type": "Point", "coordinates": [106.62, 29.6]}}).to_string()),
    )
    .await;
    assert_eq!(s.as_u16(), 200, "{}", String::from_utf8_lossy(&b));
    create(
        &w.app,
        "risk_points",
        &risk_point("R5", 106.6001, 29.6, "II"),
    );
    w.set_time(T0 + MIN);
    w.readings(&[("S3", T0 + MIN, 2.2)]).await;
    let list = http_json(&w.app, "/warnings").await;
    assert_eq!(subjects(&list), ["L1", "R5"], "{list}");
}

#[tokio::test]
async fn plans_are_versioned_and_a_point_without_one_is_listed() {
    let w = world().await;
    let gaps = http_json(&w.app, "/risk_points?without_plan=true").await;
    assert_eq!(gaps["without_plan"], json!(["R2"]));
    let health = http_json(&w.app, "/health").await;
    assert_eq!(health["alerts"]["risk_points_without_plan"], 1);
    assert_eq!(health["alerts"]["plan_templates"], 1);
    let plan = json!({"template": "P1", "extra_contacts": [{"role": "village_head", "name": "王建国", "phone": "138 0000 0000"}],
                      "add_steps": {"red": ["open the school as a shelter"]}, "notes": "slope above No. 3 school"});
    for key in [&w.officer, &w.sensor] {
        let (s, _) = w
            .post_put("/risk_points/R2/plan", key, plan.to_string())
            .await;
        assert_eq!(s, 403);
    }
    let (s, r) = w
        .post_put("/risk_points/R2/plan", &w.planner, plan.to_string())
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["version"], 1);
    assert_eq!(
        r["levels"]["red"],
        json!([
            "evacuate_residents",
            "close_road",
            "open the school as a shelter"
        ])
    );
    assert_eq!(r["contacts"][1]["name"], "王建国");
    assert_eq!(
        http_json(&w.app, "/risk_points?without_plan=true").await["without_plan"],
        json!([])
    );
    // R2 names no plan_id: a plan that does not name its template resolves to nothing.
    let (s, e) = w
        .post_put(
            "/risk_points/R2/plan",
            &w.planner,
            json!({"notes": "v2"}).to_string(),
        )
        .await;
    assert_eq!(s, 422, "{e}");
    assert!(
        e["description"].as_str().unwrap().contains("template"),
        "{e}"
    );
    let (s, _) = w
        .post_put(
            "/risk_points/R2/plan",
            &w.planner,
            json!({"template": "P1", "notes": "v2"}).to_string(),
        )
        .await;
    assert_eq!(s, 200);
    let versions = http_json(&w.app, "/risk_points/R2/plan/versions").await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    assert_eq!(versions["versions"][0]["plan"]["notes"], "v2");
    let (s, e) = w
        .post_put(
            "/risk_points/R2/plan",
            &w.planner,
            json!({"template": "P404"}).to_string(),
        )
        .await;
    assert_eq!(s, 422, "{e}");
    let (s, _) = w
        .post_put("/risk_points/R404/plan", &w.planner, "{}".into())
        .await;
    assert_eq!(s, 404);
    let (s, e) = w
        .post_put(
            "/risk_points/R2/plan",
            &w.planner,
            json!({"contacts": [{"role": "x", "phone": "<b>"}]}).to_string(),
        )
        .await;
    assert_eq!(s, 422);
    assert!(
        e["description"]
            .as_str()
            .unwrap()
            .contains("contacts[0].phone"),
        "{e}"
    );
    // Templates keep their versions too.
    let t = json!({"title": "landslide response plan 1b", "category": "landslide", "levels": {"red": ["evacuate_residents"]}});
    let (s, r) = w
        .post_put("/plan-templates/P1", &w.planner, t.to_string())
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["version"], 2);
    assert_eq!(
        http_json(&w.app, "/plan-templates/P1?version=1").await["title"],
        "landslide response plan 1"
    );
}

impl World {
    async fn post_put(&self, uri: &str, key: &str, body: String) -> (u16, Value) {
        let auth = format!("Bearer {key}");
        let (s, _, b) = http(
            &self.app,
            "PUT",
            uri,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(body),
        )
        .await;
        (
            s.as_u16(),
            serde_json::from_slice(&b).unwrap_or(Value::Null),
        )
    }
}

#[tokio::test]
async fn a_restart_keeps_the_sensors_state_and_the_open_warnings() {
    let w = world().await;
    w.readings(&[("S1", T0, 3.5), ("S2", T0, 1.0)]).await;
    w.set_time(T0 + MIN);
    w.readings(&[("S1", T0 + MIN, 1.0)]).await; // pending period under way
    let w = w.restart();
    let list = http_json(&w.app, "/warnings").await;
    assert_eq!(list["numberMatched"], 1);
    assert_eq!(list["warnings"][0]["level"], "orange");
    let at = tile_of(106.55, 29.56, 14);
    let b = tile(&w.app, "risk_points,warnings", &at).await;
    assert_eq!(tile_layer(&b, "risk_points")[0]["warning_level"], "orange");
    assert_eq!(tile_layer(&b, "warnings").len(), 1);
    // The duplicate is still a duplicate, and the pending period goes on from before.
    let r = w.readings(&[("S1", T0 + MIN, 1.0)]).await;
    assert_eq!(r["rejected"]["duplicate"], 1);
    w.set_time(T0 + 6 * MIN);
    let r = w.readings(&[("S1", T0 + 6 * MIN, 1.0)]).await;
    assert_eq!(r["transitions"], 1);
    assert_eq!(http_json(&w.app, "/warnings").await["numberMatched"], 0);
}

/// Validates `xml` against the OASIS CAP 1.2 schema with xmllint (libxml2-utils).
fn validate_cap(xml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alert.xml");
    std::fs::write(&file, xml).unwrap();
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cap/CAP-v1.2-schema.xsd");
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&schema)
        .arg(&file)
        .output()
        .expect("xmllint is installed (apt-get install libxml2-utils; scripts/test.sh does it)");
    assert!(
        out.status.success(),
        "not valid CAP 1.2: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn every_message_of_a_warnings_life_is_valid_cap_1_2_and_the_feed_links_them() {
    let w = world().await;
    w.readings(&[("S1", T0, 2.6)]).await;
    let id = http_json(&w.app, "/warnings").await["warnings"][0]["id"]
        .as_u64()
        .unwrap();
    let cap = |app: Arc<App>| async move {
        let (s, h, b) = http(&app, "GET", &format!("/warnings/{id}.cap"), &[], None).await;
        assert_eq!(s.as_u16(), 200);
        assert!(
            h["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/cap+xml")
        );
        String::from_utf8(b).unwrap()
    };
    let raised = cap(w.app.clone()).await;
    validate_cap(&raised);
    assert!(raised.contains("<msgType>Alert</msgType>"));
    assert!(raised.contains("<category>Geo</category>"), "{raised}");
    assert!(raised.contains("<severity>Moderate</severity>"));
    assert!(raised.contains("1. Verify on site"));
    assert!(
        raised.contains("<areaDesc>Yuzhong district: point R1</areaDesc>"),
        "{raised}"
    );
    assert!(
        raised.contains("<circle>29.560000,106.550000 0.5</circle>"),
        "{raised}"
    );
    // The feed of active warnings links the message.
    let (_, h, feed) = http(&w.app, "GET", "/warnings.atom", &[], None).await;
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/atom+xml")
    );
    let feed = String::from_utf8(feed).unwrap();
    assert!(feed.contains(&format!("/warnings/{id}.cap")), "{feed}");
    // Escalated and acknowledged: an Update referencing the first message.
    w.readings(&[("S1", T0 + MIN, 4.5)]).await;
    let (s, _) = w
        .post(
            &format!("/warnings/{id}/ack"),
            &w.officer,
            "application/json",
            json!({"note": "<on site> & calling"}).to_string(),
        )
        .await;
    assert_eq!(s, 200);
    let update = cap(w.app.clone()).await;
    validate_cap(&update);
    assert!(update.contains("<msgType>Update</msgType>"));
    assert!(update.contains("<severity>Extreme</severity>"));
    assert!(update.contains("<references>riskmap@"), "{update}");
    // Resolved: a Cancel, all clear.
    let (s, _) = w
        .post(
            &format!("/warnings/{id}/resolve"),
            &w.officer,
            "application/json",
            json!({"note": "slope stable"}).to_string(),
        )
        .await;
    assert_eq!(s, 200);
    let cancel = cap(w.app.clone()).await;
    validate_cap(&cancel);
    assert!(cancel.contains("<msgType>Cancel</msgType>"));
    assert!(cancel.contains("<responseType>AllClear</responseType>"));
    let (s, _, _) = http(&w.app, "GET", "/warnings/999.cap", &[], None).await;
    assert_eq!(s.as_u16(), 404);
}

#[tokio::test]
async fn references_hold_in_edits_imports_and_deletes_and_what_dangles_is_counted() {
    let w = world().await;
    let planner = w.planner.clone();
    let sensor = |id: &str, ty: i64, rp: &str| {
        json!({"type": "Feature", "id": id,
            "geometry": {"type": "Point", "coordinates": [106.55, 29.56]},
            "properties": {"id": id, "type_id": ty, "risk_point_id": rp}})
        .to_string()
    };
    // A sensor naming a risk point that does not exist: 422 naming the field.
    let ct = "application/geo+json";
    let (s, r) = w
        .post(
            "/collections/sensors/items",
            &planner,
            ct,
            sensor("S9", 3, "R404"),
        )
        .await;
    assert_eq!(s, 422, "{r}");
    let detail = r["description"].as_str().unwrap_or_default();
    assert!(
        detail.contains("risk_point_id") && detail.contains("R404"),
        "{r}"
    );
    // A risk point naming a plan template nobody loaded.
    let mut rp = risk_point("R9", 106.5, 29.5, "II");
    rp["properties"]["plan_id"] = json!("P404");
    let (s, r) = w
        .post(
            "/collections/risk_points/items",
            &planner,
            ct,
            rp.to_string(),
        )
        .await;
    assert_eq!(s, 422, "{r}");
    assert!(
        r["description"]
            .as_str()
            .unwrap_or_default()
            .contains("plan_id"),
        "{r}"
    );
    // Naming what exists is accepted.
    let (s, r) = w
        .post(
            "/collections/sensors/items",
            &planner,
            ct,
            sensor("S9", 3, "R2"),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    // A patch changing a reference to nothing is refused; S4 (its type dangles) can
    // still be corrected in another property.
    let auth = format!("Bearer {planner}");
    let patch = |id: &str, body: Value| {
        let (app, auth, uri) = (
            w.app.clone(),
            auth.clone(),
            format!("/collections/sensors/items/{id}"),
        );
        async move {
            let (s, _, b) = http(
                &app,
                "PATCH",
                &uri,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/merge-patch+json"),
                ],
                Some(body.to_string()),
            )
            .await;
            (s.as_u16(), String::from_utf8_lossy(&b).to_string())
        }
    };
    let (s, b) = patch("S9", json!({"properties": {"risk_point_id": "R405"}})).await;
    assert_eq!(s, 422, "{b}");
    let (s, b) = patch("S4", json!({"properties": {"risk_point_id": "R1"}})).await;
    assert_eq!(s, 200, "{b}");
    // Deleting a risk point its sensors name: 409, naming who names it.
    let (s, _, b) = http(
        &w.app,
        "DELETE",
        "/collections/risk_points/items/R1",
        &[("authorization", &auth)],
        None,
    )
    .await;
    let b = String::from_utf8_lossy(&b);
    assert_eq!(s.as_u16(), 409, "{b}");
    assert!(
        b.contains("3 feature(s) of sensors") && b.contains("risk_point_id"),
        "{b}"
    );
    assert!(holds(&w.app, "risk_points", "R1"));
    // An upload naming nothing: every such feature refused with its field, nothing written.
    let importer = w
        .app
        .store()
        .add_key("test", Role::Importer, "importer")
        .unwrap()
        .secret;
    let csv = "id,type_id,risk_point_id,pipeline_id,lon,lat\nS20,3,R1,,106.55,29.56\nS21,7,R404,,106.55,29.56\nS22,3,,L404,106.55,29.56\n";
    let (s, r) = w
        .post(
            "/collections/sensors/imports",
            &importer,
            "text/csv",
            csv.into(),
        )
        .await;
    assert_eq!(s, 422, "{r}");
    let fields: Vec<(u64, &str)> = r["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["feature"].as_u64().unwrap(), x["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        fields,
        vec![(2, "type_id"), (2, "risk_point_id"), (3, "pipeline_id")],
        "{r}"
    );
    assert!(!holds(&w.app, "sensors", "S20"));
    // An import replacing the risk points without R1 (its sensors name it): 409,
    // nothing written.
    let replacement = collection(vec![risk_point("R2", 106.60, 29.60, "III")]);
    let (s, r) = w
        .post(
            "/collections/risk_points/imports?mode=replace",
            &importer,
            "application/geo+json",
            replacement,
        )
        .await;
    assert_eq!(s, 409, "{r}");
    let d = r["description"].as_str().unwrap_or_default();
    assert!(
        d.contains("\"R1\" (3 feature(s) of sensors in risk_point_id)"),
        "{r}"
    );
    assert!(holds(&w.app, "risk_points", "R1"));
    // What dangles: S4's type 99, no longer its risk point.
    let health = http_json(&w.app, "/health").await;
    assert_eq!(
        health["dangling_references"],
        json!([{"layer": "sensors", "property": "type_id", "references": "sensor-types",
                "features": 1, "examples": ["99"]}])
    );
}

#[tokio::test]
async fn a_deleted_sensor_stops_counting_at_once() {
    let w = world().await;
    w.readings(&[("S1", T0, 3.5), ("S2", T0, 2.1)]).await;
    let list = http_json(&w.app, "/warnings").await;
    assert_eq!(list["warnings"][0]["level"], "orange", "{list}");
    let auth = format!("Bearer {}", w.planner);
    let delete = |id: &str| {
        let (app, auth, uri) = (
            w.app.clone(),
            auth.clone(),
            format!("/collections/sensors/items/{id}"),
        );
        async move {
            let (s, _, _) = http(&app, "DELETE", &uri, &[("authorization", &auth)], None).await;
            s.as_u16()
        }
    };
    // The orange sensor deleted: R1 falls to S2's blue at once, no reading needed.
    assert_eq!(delete("S1").await, 204);
    let list = http_json(&w.app, "/warnings").await;
    assert_eq!(
        (
            list["numberMatched"].as_u64(),
            list["warnings"][0]["level"].as_str()
        ),
        (Some(1), Some("blue")),
        "{list}"
    );
    // And resolved when its last sensor in warning goes.
    assert_eq!(delete("S2").await, 204);
    let list = http_json(&w.app, "/warnings").await;
    assert_eq!(list["numberMatched"], 0, "{list}");
    let at = tile_of(106.55, 29.56, 14);
    let b = tile(&w.app, "risk_points,warnings", &at).await;
    assert!(tile_layer(&b, "warnings").is_empty());
    assert!(!tile_layer(&b, "risk_points")[0].contains_key("warning_level"));
}

#[tokio::test]
async fn a_resolution_by_hand_still_holds_back_its_level_after_a_restart() {
    let w = world().await;
    w.readings(&[("S1", T0, 3.5)]).await; // orange
    let id = http_json(&w.app, "/warnings").await["warnings"][0]["id"]
        .as_u64()
        .unwrap();
    let (s, r) = w
        .post(
            &format!("/warnings/{id}/resolve"),
            &w.officer,
            "application/json",
            json!({"note": "gauge fouled by debris, cleared"}).to_string(),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let w = w.restart();
    // R1 moves (S2 to blue) but stays orange: no new warning, as before the restart ...
    w.set_time(T0 + MIN);
    w.readings(&[("S1", T0 + MIN, 3.6), ("S2", T0 + MIN, 2.1)])
        .await;
    assert_eq!(http_json(&w.app, "/warnings").await["numberMatched"], 0);
    // ... but red is beyond what was resolved: a new warning.
    w.set_time(T0 + 2 * MIN);
    w.readings(&[("S1", T0 + 2 * MIN, 4.5)]).await;
    let list = http_json(&w.app, "/warnings").await;
    assert_eq!(
        (
            list["numberMatched"].as_u64(),
            list["warnings"][0]["level"].as_str()
        ),
        (Some(1), Some("red")),
        "{list}"
    );
}

/// The same tile fetched with its headers: (status, `riskmap-stale`, body).
async fn tile_with_header(
    app: &Arc<App>,
    layers: &str,
    at: &str,
) -> (u16, Option<String>, Vec<u8>) {
    let (s, h, b) = http(app, "GET", &format!("/tiles/{layers}/{at}.mvt"), &[], None).await;
    let stale = h
        .get("riskmap-stale")
        .map(|v| v.to_str().unwrap().to_string());
    (s.as_u16(), stale, b)
}

#[tokio::test]
async fn in_a_storm_of_warnings_a_tile_behind_is_answered_at_once_and_redrawn_behind_it() {
    // 150 more risk points far from R1, each with a sensor: written by another tool,
    // served after a restart.
    let w = world().await;
    let (points, sensors) = (
        w.app.layer("risk_points").unwrap().def.clone(),
        w.app.layer("sensors").unwrap().def.clone(),
    );
    w.app
        .store()
        .write(|tx| {
            for i in 0..150 {
                let (lon, lat) = (107.0 + f64::from(i) * 0.01, 30.5);
                let rp = risk_point(&format!("Q{i}"), lon, lat, "II");
                tx.insert_feature(
                    &points,
                    &riskmap::model::Feature::from_geojson(&points, &rp).unwrap(),
                    None,
                )?;
                let id = format!("T{i}");
                let s = json!({"type": "Feature", "id": id,
                    "geometry": {"type": "Point", "coordinates": [lon, lat]},
                    "properties": {"id": id, "type_id": 3, "risk_point_id": format!("Q{i}")}});
                tx.insert_feature(
                    &sensors,
                    &riskmap::model::Feature::from_geojson(&sensors, &s).unwrap(),
                    None,
                )?;
            }
            tx.commit()
        })
        .unwrap();
    let w = w.restart();
    let at = tile_of(106.55, 29.56, 14);
    let before = tile(&w.app, "risk_points", &at).await;
    assert!(!tile_layer(&before, "risk_points")[0].contains_key("warning_level"));
    let (s, _, _) = tile_with_header(&w.app, "warnings", &at).await;
    assert_eq!(s, 204, "no warning yet");

    // A storm: 151 warnings raised in one request, R1's among them.
    let mut lines: Vec<(String, i64, f64)> = (0..150).map(|i| (format!("T{i}"), T0, 3.2)).collect();
    lines.push(("S1".into(), T0, 3.2));
    let borrowed: Vec<(&str, i64, f64)> =
        lines.iter().map(|(s, t, v)| (s.as_str(), *t, *v)).collect();
    let r = w.readings(&borrowed).await;
    assert_eq!(r["transitions"], 151, "{r}");

    // R1's tile is behind its mark: answered at once from the cache, said to be redrawn.
    let (s, stale, body) = tile_with_header(&w.app, "risk_points", &at).await;
    assert_eq!((s, stale.as_deref()), (200, Some("redrawing")));
    assert!(!tile_layer(&body, "risk_points")[0].contains_key("warning_level"));

    // What a person does is in the next tile even during the storm.
    let list = http_json(&w.app, "/warnings?bbox=106.5,29.5,106.6,29.6").await;
    let id = list["warnings"][0]["id"].as_u64().unwrap();
    let (s, ack) = w
        .post(
            &format!("/warnings/{id}/ack"),
            &w.officer,
            "application/json",
            "{}".into(),
        )
        .await;
    assert_eq!(s, 200, "{ack}");
    let (s, stale, body) = tile_with_header(&w.app, "warnings", &at).await;
    assert_eq!((s, stale), (200, None));
    assert_eq!(tile_layer(&body, "warnings")[0]["state"], "acknowledged");

    // Redrawn in the background: current for the requests that follow.
    let started = std::time::Instant::now();
    loop {
        let (s, stale, body) = tile_with_header(&w.app, "risk_points", &at).await;
        assert_eq!(s, 200);
        if stale.is_none() {
            assert_eq!(
                tile_layer(&body, "risk_points")[0]["warning_level"],
                "orange"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the tile was not redrawn"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_listener_gets_the_same_event_live_and_when_resuming() {
    let w = world().await;
    let (a, b) = (
        open_stream(&w.app, None).await,
        open_stream(&w.app, None).await,
    );
    let r = w.readings(&[("S1", T0, 3.2)]).await;
    assert_eq!(r["transitions"], 1);
    let (a, b) = (sse_events(a, 1).await, sse_events(b, 1).await);
    assert_eq!(a.len(), 1);
    assert_eq!(a, b, "two listeners, one rendering");
    assert_eq!(a[0].1, "raised");
    assert_eq!(a[0].2["subject"]["id"], "R1");
    // A listener resuming from before it reads the same event from the store.
    let resumed = sse_events(open_stream(&w.app, Some("0")).await, 1).await;
    assert_eq!(resumed, a);
}
