//! Warnings as CAP 1.2 (OASIS Common Alerting Protocol), the format public alerting
//! systems exchange, and an Atom feed of the active ones.
//!
//! One message per warning, as it stands now (`GET /warnings/{id}.cap`):
//!
//! - `msgType`: `Alert` while the warning is as it was raised, `Update` once it moved
//!   (escalated, de-escalated, acknowledged), `Cancel` once resolved; `Update` and
//!   `Cancel` reference the first message (`sender,identifier,sent`).
//! - `identifier`: `riskmap-warning-{id}-{event}`, unique per message (the event is the
//!   sequence number of the warning's latest transition).
//! - `category` from the risk category (Geo for landslides, Met for floods, Infra for
//!   pipelines and structures... see [`cap_category`]); `severity`, `urgency` and
//!   `responseType` from the level: red is Extreme / Immediate / Evacuate, orange
//!   Severe / Expected / Prepare, yellow Moderate / Expected / Monitor, blue Minor /
//!   Future / Monitor; a cancelled warning is Minor / Past / AllClear.
//! - `instruction`: the steps of the risk point's plan for the level, numbered, then
//!   the contacts; `area`: a circle of [`AREA_RADIUS_KM`] around the risk point (or the
//!   point standing for a pipeline) with `areaDesc` naming its district.
//!
//! The XML is written here rather than through an XML crate: the document has a fixed
//! shape, and text escaping ([`escape`]) is the only thing that varies.

use super::engine::{Evidence, Warning};
use super::plans::{Contact, step_text};
use super::{Level, Millis};

/// Radius of the circle around a warned point, in kilometres.
pub const AREA_RADIUS_KM: f64 = 0.5;

/// CAP's namespace.
pub const CAP_NS: &str = "urn:oasis:names:tc:emergency:cap:1.2";

/// What a message says about the warned feature.
#[derive(Clone, Debug, Default)]
pub struct CapSubject {
    pub layer: String,
    pub id: String,
    pub name: Option<String>,
    pub category: Option<String>,
    pub district: Option<String>,
    /// WGS84 lon/lat.
    pub position: Option<[f64; 2]>,
}

/// One message.
#[derive(Clone, Debug)]
pub struct CapInput<'a> {
    /// `riskmap@host`: who sends.
    pub sender: &'a str,
    pub warning: &'a Warning,
    /// The sequence number of the warning's first and latest transitions.
    pub first_event: i64,
    pub last_event: i64,
    /// The warning moved since it was raised.
    pub moved: bool,
    pub subject: CapSubject,
    /// Plan steps for the level (as written; codes become words) and contacts.
    pub steps: Vec<String>,
    pub contacts: Vec<Contact>,
    pub plan_title: Option<String>,
    /// Readings that moved it, newest last.
    pub evidence: Vec<Evidence>,
    /// The server's own address, for `web`.
    pub web: Option<String>,
}

/// CAP's category for a risk category (`landslide` → `Geo`); pipelines are `Infra`.
pub fn cap_category(layer: &str, category: Option<&str>) -> &'static str {
    if layer == "pipelines" {
        return "Infra";
    }
    match category.unwrap_or("") {
        "landslide" | "dangerous_rock" | "debris_flow" | "ground_subsidence"
        | "slope_instability" => "Geo",
        "waterlogging" | "river_flood" | "flash_flood" => "Met",
        "reservoir_dam" | "dike" | "gas_pipeline_node" | "bridge" | "overpass" | "tunnel"
        | "power_substation" | "water_plant" | "sewage_plant" | "cableway" => "Infra",
        "gas_station" | "lpg_storage" | "hazardous_chemicals" | "fireworks_storage" => "CBRNE",
        "forest_fire" => "Fire",
        "hospital" | "elder_care" => "Health",
        "port_terminal" | "ferry_crossing" | "metro_station" => "Transport",
        "mine_tailings" | "landfill" | "quarry" => "Env",
        "" => "Other",
        _ => "Safety",
    }
}

/// (severity, urgency, responseType) of a level.
fn judged(level: Level, cancelled: bool) -> (&'static str, &'static str, &'static str) {
    if cancelled {
        return ("Minor", "Past", "AllClear");
    }
    match level {
        Level::Red => ("Extreme", "Immediate", "Evacuate"),
        Level::Orange => ("Severe", "Expected", "Prepare"),
        Level::Yellow => ("Moderate", "Expected", "Monitor"),
        Level::Blue | Level::Normal => ("Minor", "Future", "Monitor"),
    }
}

/// CAP's date-time: `2026-11-22T08:00:00+00:00` (no fraction, no `Z`).
pub fn cap_time(ms: Millis) -> String {
    let s = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+00:00");
    s.format(f)
        .unwrap_or_else(|_| "1970-01-01T00:00:00+00:00".into())
}

/// Escapes text for XML content and attribute values; drops characters XML 1.0 does not
/// allow (control characters other than tab, newline and carriage return).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

fn identifier(warning: u64, event: i64) -> String {
    format!("riskmap-warning-{warning}-{event}")
}

/// The message.
pub fn alert_xml(m: &CapInput<'_>) -> String {
    let w = m.warning;
    let cancelled = !w.is_active();
    let msg_type = if cancelled {
        "Cancel"
    } else if m.moved {
        "Update"
    } else {
        "Alert"
    };
    let level = if cancelled { w.peak } else { w.level };
    let (severity, urgency, response) = judged(level, cancelled);
    let category = cap_category(&m.subject.layer, m.subject.category.as_deref());
    let name = m
        .subject
        .name
        .clone()
        .unwrap_or_else(|| m.subject.id.clone());
    let level_name = |l: Level| format!("{} ({})", l.name(), l.numeral().unwrap_or("-"));
    let headline = if cancelled {
        format!("Warning over: {name}")
    } else {
        format!("{} warning: {name}", capitalised(level.name()))
    };
    let mut description = format!(
        "{} warning {} at {} {} ({}), raised {}",
        capitalised(level_name(level).as_str()),
        w.id,
        m.subject.layer.trim_end_matches('s').replace('_', " "),
        m.subject.id,
        name,
        cap_time(w.raised_at)
    );
    if w.peak > w.level && !cancelled {
        description.push_str(&format!("; it reached {}", w.peak.name()));
    }
    if let Some(a) = &w.acknowledged {
        description.push_str(&format!("; acknowledged by {} at {}", a.by, cap_time(a.at)));
    }
    if let Some(r) = &w.resolved {
        match &r.by {
            Some(by) => description.push_str(&format!("; resolved by {by} at {}", cap_time(r.at))),
            None => description.push_str(&format!(
                "; resolved at {}: readings back to normal",
                cap_time(r.at)
            )),
        }
    }
    description.push('.');
    for e in m.evidence.iter().rev().take(5) {
        description.push_str(&format!(
            "\nSensor {} read {} at {} ({} to {}{}).",
            e.sensor_id,
            e.value,
            cap_time(e.ts),
            e.from.name(),
            e.to.name(),
            e.threshold
                .map(|t| format!(", threshold {t}"))
                .unwrap_or_default()
        ));
    }
    let mut instruction = String::new();
    if let Some(t) = &m.plan_title {
        instruction.push_str(&format!("Plan: {t}.\n"));
    }
    for (i, s) in m.steps.iter().enumerate() {
        instruction.push_str(&format!("{}. {}\n", i + 1, step_text(s)));
    }
    if !m.contacts.is_empty() {
        instruction.push_str("Call: ");
        let c: Vec<String> = m
            .contacts
            .iter()
            .map(|c| {
                let mut s = c.role.replace('_', " ");
                if let Some(n) = &c.name {
                    s.push_str(&format!(" {n}"));
                }
                if let Some(p) = &c.phone {
                    s.push_str(&format!(" {p}"));
                }
                s
            })
            .collect();
        instruction.push_str(&c.join("; "));
    }
    let sent = cap_time(w.updated_at);
    let mut x = String::with_capacity(2048);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!("<alert xmlns=\"{CAP_NS}\">\n"));
    let el = |x: &mut String, indent: &str, name: &str, text: &str| {
        x.push_str(&format!("{indent}<{name}>{}</{name}>\n", escape(text)));
    };
    el(&mut x, "  ", "identifier", &identifier(w.id, m.last_event));
    el(&mut x, "  ", "sender", m.sender);
    el(&mut x, "  ", "sent", &sent);
    el(&mut x, "  ", "status", "Actual");
    el(&mut x, "  ", "msgType", msg_type);
    el(&mut x, "  ", "scope", "Public");
    if msg_type != "Alert" {
        el(
            &mut x,
            "  ",
            "references",
            &format!(
                "{},{},{}",
                m.sender,
                identifier(w.id, m.first_event),
                cap_time(w.raised_at)
            ),
        );
    }
    el(
        &mut x,
        "  ",
        "incidents",
        &format!("riskmap-warning-{}", w.id),
    );
    x.push_str("  <info>\n");
    el(&mut x, "    ", "language", "en");
    el(&mut x, "    ", "category", category);
    el(
        &mut x,
        "    ",
        "event",
        &format!(
            "{} warning",
            m.subject
                .category
                .as_deref()
                .unwrap_or(&m.subject.layer)
                .replace('_', " ")
        ),
    );
    el(&mut x, "    ", "responseType", response);
    el(&mut x, "    ", "urgency", urgency);
    el(&mut x, "    ", "severity", severity);
    el(&mut x, "    ", "certainty", "Observed");
    el(&mut x, "    ", "effective", &cap_time(w.raised_at));
    el(&mut x, "    ", "senderName", "riskmap city risk map");
    el(&mut x, "    ", "headline", &headline);
    el(&mut x, "    ", "description", &description);
    if !instruction.is_empty() {
        el(&mut x, "    ", "instruction", instruction.trim_end());
    }
    if let Some(web) = &m.web {
        el(&mut x, "    ", "web", web);
    }
    for (name, value) in [
        ("riskmap:warning_id", w.id.to_string()),
        ("riskmap:level", w.level.name().to_string()),
        ("riskmap:state", w.state().to_string()),
        (
            "riskmap:subject",
            format!("{}/{}", m.subject.layer, m.subject.id),
        ),
    ] {
        x.push_str("    <parameter>\n");
        el(&mut x, "      ", "valueName", name);
        el(&mut x, "      ", "value", &value);
        x.push_str("    </parameter>\n");
    }
    x.push_str("    <area>\n");
    let area = match (&m.subject.district, &m.subject.name) {
        (Some(d), Some(n)) => format!("{d} district: {n}"),
        (Some(d), None) => format!("{d} district"),
        (None, Some(n)) => n.clone(),
        (None, None) => m.subject.id.clone(),
    };
    el(&mut x, "      ", "areaDesc", &area);
    if let Some([lon, lat]) = m.subject.position {
        el(
            &mut x,
            "      ",
            "circle",
            &format!("{lat:.6},{lon:.6} {AREA_RADIUS_KM}"),
        );
    }
    x.push_str("    </area>\n");
    x.push_str("  </info>\n");
    x.push_str("</alert>\n");
    x
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// One entry of the Atom feed.
#[derive(Clone, Debug)]
pub struct FeedEntry {
    pub warning: Warning,
    pub title: String,
    /// Absolute URL of the CAP message.
    pub cap_url: String,
    pub summary: String,
}

/// The Atom feed of active warnings (RFC 4287), each entry linking its CAP message.
pub fn atom_feed(self_url: &str, updated: Millis, entries: &[FeedEntry]) -> String {
    let rfc3339 = |ms: Millis| cap_time(ms).replace("+00:00", "Z");
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    x.push_str(&format!("  <id>{}</id>\n", escape(self_url)));
    x.push_str("  <title>riskmap: active warnings</title>\n");
    x.push_str(&format!("  <updated>{}</updated>\n", rfc3339(updated)));
    x.push_str("  <author><name>riskmap</name></author>\n");
    x.push_str(&format!(
        "  <link rel=\"self\" href=\"{}\"/>\n",
        escape(self_url)
    ));
    for e in entries {
        x.push_str("  <entry>\n");
        x.push_str(&format!(
            "    <id>{}</id>\n",
            escape(&format!("{}#{}", e.cap_url, e.warning.updated_at))
        ));
        x.push_str(&format!("    <title>{}</title>\n", escape(&e.title)));
        x.push_str(&format!(
            "    <updated>{}</updated>\n",
            rfc3339(e.warning.updated_at)
        ));
        x.push_str(&format!(
            "    <link rel=\"alternate\" type=\"application/cap+xml\" href=\"{}\"/>\n",
            escape(&e.cap_url)
        ));
        x.push_str(&format!("    <summary>{}</summary>\n", escape(&e.summary)));
        x.push_str("  </entry>\n");
    }
    x.push_str("</feed>\n");
    x
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::alerts::engine::{Ack, Resolution, Subject};

    fn warning() -> Warning {
        Warning {
            id: 7,
            subject: Subject::risk_point("R000001"),
            level: Level::Orange,
            peak: Level::Red,
            raised_at: 1_795_334_400_000,
            updated_at: 1_795_334_460_000,
            acknowledged: None,
            resolved: None,
        }
    }

    fn input(w: &Warning, moved: bool) -> CapInput<'_> {
        CapInput {
            sender: "riskmap@example.org",
            warning: w,
            first_event: 3,
            last_event: 9,
            moved,
            subject: CapSubject {
                layer: "risk_points".into(),
                id: "R000001".into(),
                name: Some("Qianjiang <landslide> #1 & co".into()),
                category: Some("landslide".into()),
                district: Some("Qianjiang".into()),
                position: Some([108.86196, 29.66493]),
            },
            steps: vec!["verify_on_site".into(), "疏散群众".into()],
            contacts: vec![Contact {
                role: "town_duty_officer".into(),
                name: None,
                phone: Some("023-63966140".into()),
            }],
            plan_title: Some("landslide response plan 1".into()),
            evidence: vec![],
            web: None,
        }
    }

    #[test]
    fn a_message_follows_the_lifecycle_and_escapes_its_text() {
        let w = warning();
        let x = alert_xml(&input(&w, false));
        assert!(x.contains("<msgType>Alert</msgType>"));
        assert!(!x.contains("<references>"));
        assert!(x.contains("<category>Geo</category>"));
        assert!(x.contains("<severity>Severe</severity>"));
        assert!(x.contains("<circle>29.664930,108.861960 0.5</circle>"));
        assert!(x.contains("Qianjiang &lt;landslide&gt; #1 &amp; co"));
        assert!(x.contains("1. Verify on site\n2. 疏散群众"));
        assert!(x.contains("<sent>2026-11-22T08:01:00+00:00</sent>"));
        let mut acked = w.clone();
        acked.acknowledged = Some(Ack {
            by: "key:2:officer".into(),
            at: 1_795_334_470_000,
            note: "on site".into(),
        });
        let x = alert_xml(&input(&acked, true));
        assert!(x.contains("<msgType>Update</msgType>"));
        assert!(x.contains(
            "<references>riskmap@example.org,riskmap-warning-7-3,2026-11-22T08:00:00+00:00</references>"
        ));
        let mut done = w;
        done.resolved = Some(Resolution {
            by: None,
            at: 1_795_334_500_000,
            note: None,
        });
        let x = alert_xml(&input(&done, true));
        assert!(x.contains("<msgType>Cancel</msgType>"));
        assert!(x.contains("<responseType>AllClear</responseType>"));
    }

    #[test]
    fn categories_follow_the_risk_and_pipelines_are_infrastructure() {
        assert_eq!(cap_category("risk_points", Some("river_flood")), "Met");
        assert_eq!(cap_category("risk_points", Some("debris_flow")), "Geo");
        assert_eq!(cap_category("pipelines", None), "Infra");
        assert_eq!(cap_category("risk_points", Some("market")), "Safety");
        assert_eq!(escape("a\u{1}b<"), "ab&lt;");
    }
}
