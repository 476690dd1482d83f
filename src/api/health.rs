//! `GET /health`: is it up, how much does it hold, is the store served whole, can it
//! take writes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use crate::app::App;

/// Unreadable rows listed one by one in `/health`, at most.
const UNREADABLE_SHOWN: usize = 20;

/// `status` is `degraded`, with each cause in `reasons`, when:
/// - rows of the store cannot be served (skipped at start or from the change feed: see
///   `model::unreadable`): `unreadable_rows` counts them per layer and `unreadable`
///   shows the first few with their reasons;
/// - the last write failed for a disk reason (full, I/O error) and none has committed
///   since: `writes` says which, since when and how often (it clears by itself at the
///   next commit);
/// - the disk reserve beside the store is missing (spent by an operator, or no room to
///   write it), or less space is free than the reserve's size: `disk` has the free
///   space and the reserve.
///
/// It always answers 200 from memory and a `statvfs`, so it answers on a full disk.
pub async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    let mut layers = Map::new();
    let mut unreadable_rows = Map::new();
    let mut shown = Vec::new();
    let mut total = 0usize;
    let mut unreadable = 0usize;
    for l in app.layers().iter() {
        let n = l.index.read().len();
        total += n;
        layers.insert(l.def.name.clone(), n.into());
        let u = l.unreadable.lock();
        unreadable += u.len();
        unreadable_rows.insert(l.def.name.clone(), u.len().into());
        for r in u.iter().take(UNREADABLE_SHOWN.saturating_sub(shown.len())) {
            shown.push(json!({"layer": l.def.name, "fid": r.fid, "id": r.id, "reason": r.reason}));
        }
    }
    let mut reasons: Vec<String> = Vec::new();
    if unreadable > 0 {
        reasons.push(format!(
            "{unreadable} rows of the store cannot be served (see unreadable)"
        ));
    }
    let store = app.store();
    let writes = match store.write_health() {
        None => json!({"status": "ok"}),
        Some(f) => {
            reasons.push(format!(
                "writes are failing since {}: {}",
                f.since, f.reason
            ));
            json!({
                "status": "failing",
                "kind": f.kind,
                "reason": f.reason,
                "since": f.since,
                "last_failure": f.last,
                "failures": f.failures,
            })
        }
    };
    let disk = store.disk_status();
    // Less free than the reserve: the next writes may fail (and right after a restart
    // on a full disk, before any write has failed, this is the only sign).
    if let Some(free) = disk.free_bytes.filter(|&f| f < disk.reserve_bytes) {
        reasons.push(format!(
            "the disk holding the store has {free} bytes free, less than the reserve ({} bytes)",
            disk.reserve_bytes
        ));
    }
    if disk.reserve_bytes > 0 && !disk.reserve_present {
        reasons.push(format!(
            "the disk reserve {} ({} bytes) is missing: it is written again once twice its size is free",
            disk.reserve_path.display(),
            disk.reserve_bytes
        ));
    }
    // References naming nothing, off the async threads: kept until a layer or the
    // catalogue changes, then counted again (a pass over 4.52 M sensors' types).
    let dangling = {
        let a = app.clone();
        tokio::task::spawn_blocking(move || a.dangling())
            .await
            .unwrap_or_default()
    };
    // Warnings and the gaps in the plans (a risk point whose plan resolves to nothing).
    let catalog = app.alerts().catalog();
    let alerts = json!({
        "open_warnings": app.open_warning_count(),
        "risk_points_without_plan": app.risk_points_without_plan().map(|v| v.len()).ok(),
        "sensor_types": catalog.types.len(),
        "plan_templates": catalog.templates.len(),
        "point_plans": catalog.point_plans.len(),
        "last_event": app.alerts().last_event(),
    });
    Json(json!({
        "status": if reasons.is_empty() { "ok" } else { "degraded" },
        "reasons": reasons,
        "uptime_seconds": (app.uptime().as_secs_f64() * 10.0).round() / 10.0,
        "store": { "backend": "geopackage", "path": app.store_path().display().to_string() },
        "writes": writes,
        "disk": {
            "free_bytes": disk.free_bytes,
            "reserve": {
                "path": disk.reserve_path.display().to_string(),
                "bytes": disk.reserve_bytes,
                "present": disk.reserve_present,
            },
        },
        "features": total,
        "layers": layers,
        "alerts": alerts,
        // References naming nothing (a sensor's risk point, pipeline or type, a risk
        // point's plan template): gaps the centre must close.
        "dangling_references": dangling,
        "unreadable_rows": unreadable_rows,
        "unreadable": shown,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}
