//! Response plans: "one point, one plan". A plan template (the city has about 1,800)
//! holds the steps for each warning level and the roles to call; each risk point's
//! plan is its template plus the point's own overrides (contacts, steps added or
//! removed per level, notes). Templates and point plans are versioned by the store;
//! here they are values, checked and resolved.
//!
//! A step is a short text. The generator's steps are codes (`verify_on_site`);
//! [`step_text`] turns a code into words for people ("Verify on site"), and leaves
//! anything that is not a code as it is.

use serde::{Deserialize, Serialize};

use super::Level;

/// Steps per warning level.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steps {
    #[serde(default)]
    pub blue: Vec<String>,
    #[serde(default)]
    pub yellow: Vec<String>,
    #[serde(default)]
    pub orange: Vec<String>,
    #[serde(default)]
    pub red: Vec<String>,
}

impl Steps {
    pub fn of(&self, level: Level) -> &[String] {
        match level {
            Level::Normal => &[],
            Level::Blue => &self.blue,
            Level::Yellow => &self.yellow,
            Level::Orange => &self.orange,
            Level::Red => &self.red,
        }
    }

    fn of_mut(&mut self, level: Level) -> Option<&mut Vec<String>> {
        Some(match level {
            Level::Normal => return None,
            Level::Blue => &mut self.blue,
            Level::Yellow => &mut self.yellow,
            Level::Orange => &mut self.orange,
            Level::Red => &mut self.red,
        })
    }

    fn is_empty(&self) -> bool {
        Level::WARNINGS.iter().all(|l| self.of(*l).is_empty())
    }
}

/// Someone to call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// A plan template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub id: String,
    pub title: String,
    /// The risk category it is for (`landslide`...).
    pub category: String,
    pub levels: Steps,
    #[serde(default)]
    pub contacts: Vec<Contact>,
}

/// A risk point's own changes to its template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointPlan {
    /// The template; when absent, the one the risk point's `plan_id` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Replaces the template's contacts when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<Contact>>,
    /// Added after the template's (or the replacing) contacts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_contacts: Vec<Contact>,
    /// Appended to the template's steps of each level.
    #[serde(default, skip_serializing_if = "Steps::is_empty")]
    pub add_steps: Steps,
    /// Taken out of the template's steps of each level (by their exact text).
    #[serde(default, skip_serializing_if = "Steps::is_empty")]
    pub remove_steps: Steps,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// A risk point's plan as it applies: template and overrides together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedPlan {
    pub risk_point_id: String,
    pub template_id: String,
    pub template_version: i64,
    /// The point plan's version; `None` when the point uses its template as it is.
    pub version: Option<i64>,
    pub title: String,
    pub category: String,
    pub levels: Steps,
    pub contacts: Vec<Contact>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// Why a template or a point plan was refused (the field and the reason).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PlanError {
    pub field: String,
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> PlanError {
    PlanError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Longest id.
pub const MAX_ID: usize = 64;
/// Longest title, step, role, name, phone or note.
pub const MAX_TEXT: usize = 2000;
/// Most steps per level, most contacts.
pub const MAX_ITEMS: usize = 100;

fn text(field: &str, v: &str, required: bool) -> Result<(), PlanError> {
    if required && v.trim().is_empty() {
        return Err(err(field, "is empty"));
    }
    if v.chars().count() > MAX_TEXT {
        return Err(err(field, format!("is longer than {MAX_TEXT} characters")));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(err(field, "holds control characters"));
    }
    Ok(())
}

/// Checks an id of a template (also used for the path segment).
pub fn check_id(field: &str, id: &str) -> Result<(), PlanError> {
    if id.is_empty() || id.len() > MAX_ID {
        return Err(err(field, format!("must be 1 to {MAX_ID} bytes")));
    }
    if !id
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(err(
            field,
            format!("{id:?} may hold only letters, digits, '_', '-' and '.'"),
        ));
    }
    Ok(())
}

fn check_steps(field: &str, s: &Steps) -> Result<(), PlanError> {
    for level in Level::WARNINGS {
        let steps = s.of(level);
        if steps.len() > MAX_ITEMS {
            return Err(err(
                format!("{field}.{level}"),
                format!("more than {MAX_ITEMS} steps"),
            ));
        }
        for (i, step) in steps.iter().enumerate() {
            text(&format!("{field}.{level}[{i}]"), step, true)?;
        }
    }
    Ok(())
}

fn check_contacts(field: &str, c: &[Contact]) -> Result<(), PlanError> {
    if c.len() > MAX_ITEMS {
        return Err(err(field, format!("more than {MAX_ITEMS} contacts")));
    }
    for (i, c) in c.iter().enumerate() {
        text(&format!("{field}[{i}].role"), &c.role, true)?;
        if let Some(n) = &c.name {
            text(&format!("{field}[{i}].name"), n, false)?;
        }
        if let Some(p) = &c.phone {
            text(&format!("{field}[{i}].phone"), p, false)?;
            if !p
                .chars()
                .all(|c| c.is_ascii_digit() || " +-()#*".contains(c))
            {
                return Err(err(
                    format!("{field}[{i}].phone"),
                    format!("{p:?} is not a phone number (digits, spaces and + - ( ) # *)"),
                ));
            }
        }
    }
    Ok(())
}

impl Template {
    /// Checks every field; the error names the first bad one.
    pub fn check(&self) -> Result<(), PlanError> {
        check_id("id", &self.id)?;
        text("title", &self.title, true)?;
        text("category", &self.category, true)?;
        check_steps("levels", &self.levels)?;
        if self.levels.is_empty() {
            return Err(err("levels", "no steps at any level"));
        }
        check_contacts("contacts", &self.contacts)
    }
}

impl PointPlan {
    pub fn check(&self) -> Result<(), PlanError> {
        if let Some(t) = &self.template {
            check_id("template", t)?;
        }
        if let Some(c) = &self.contacts {
            check_contacts("contacts", c)?;
        }
        check_contacts("extra_contacts", &self.extra_contacts)?;
        check_steps("add_steps", &self.add_steps)?;
        check_steps("remove_steps", &self.remove_steps)?;
        if let Some(n) = &self.notes {
            text("notes", n, false)?;
        }
        Ok(())
    }
}

/// A risk point's plan: `template` (at `template_version`) with `point`'s overrides
/// (at `version`).
pub fn resolve(
    risk_point_id: &str,
    template: &Template,
    template_version: i64,
    point: Option<(&PointPlan, i64)>,
) -> ResolvedPlan {
    let mut levels = template.levels.clone();
    let mut contacts = template.contacts.clone();
    let mut notes = None;
    if let Some((p, _)) = point {
        for level in Level::WARNINGS {
            if let Some(steps) = levels.of_mut(level) {
                let remove = p.remove_steps.of(level);
                steps.retain(|s| !remove.contains(s));
                for s in p.add_steps.of(level) {
                    if !steps.contains(s) {
                        steps.push(s.clone());
                    }
                }
            }
        }
        if let Some(c) = &p.contacts {
            contacts = c.clone();
        }
        contacts.extend(p.extra_contacts.iter().cloned());
        notes = p.notes.clone();
    }
    ResolvedPlan {
        risk_point_id: risk_point_id.into(),
        template_id: template.id.clone(),
        template_version,
        version: point.map(|(_, v)| v),
        title: template.title.clone(),
        category: template.category.clone(),
        levels,
        contacts,
        notes,
    }
}

/// A step for people: a code (`verify_on_site`: lower-case ASCII letters, digits and
/// underscores) becomes words ("Verify on site"); other text is kept as written.
pub fn step_text(step: &str) -> String {
    let is_code = !step.is_empty()
        && step
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !is_code {
        return step.to_string();
    }
    let words = step.replace('_', " ");
    let mut c = words.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => words,
    }
}

/// Reads a plans file: a JSON array of templates (what `chongqing_synth.py` writes as
/// `plans.json`). Every bad template is reported, by position and id.
pub fn parse_templates(bytes: &[u8]) -> Result<Vec<Template>, Vec<PlanError>> {
    let raw: Vec<serde_json::Value> = serde_json::from_slice(bytes).map_err(|e| {
        vec![err(
            "file",
            format!("is not a JSON array of plan templates: {e}"),
        )]
    })?;
    let mut out = Vec::with_capacity(raw.len());
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, v) in raw.into_iter().enumerate() {
        let id = v
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string();
        let at = |e: PlanError| err(format!("[{i}] ({id}).{}", e.field), e.reason);
        match serde_json::from_value::<Template>(v) {
            Ok(t) => match t.check() {
                Ok(()) if !seen.insert(t.id.clone()) => {
                    errors.push(at(err("id", "is given twice")));
                }
                Ok(()) => out.push(t),
                Err(e) => errors.push(at(e)),
            },
            Err(e) => errors.push(at(err("template", e.to_string()))),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn template() -> Template {
        serde_json::from_value(serde_json::json!({
            "id": "P00001", "title": "landslide response plan 1", "category": "landslide",
            "levels": {"red": ["verify_on_site", "evacuate"], "orange": ["verify_on_site"],
                       "yellow": ["verify_on_site"], "blue": ["monitor_every_10_min"]},
            "contacts": [{"role": "town_duty_officer", "phone": "023-63966140"}]
        }))
        .unwrap()
    }

    #[test]
    fn a_point_plan_adds_removes_and_replaces_on_its_template() {
        let p = PointPlan {
            contacts: Some(vec![Contact {
                role: "village_head".into(),
                name: Some("王建国".into()),
                phone: Some("138 0000 0000".into()),
            }]),
            add_steps: Steps {
                red: vec!["close the school road".into()],
                ..Default::default()
            },
            remove_steps: Steps {
                red: vec!["evacuate".into()],
                ..Default::default()
            },
            notes: Some("the slope above No. 3 school".into()),
            ..Default::default()
        };
        p.check().unwrap();
        let r = resolve("R000001", &template(), 1, Some((&p, 3)));
        assert_eq!(
            r.levels.red,
            vec!["verify_on_site", "close the school road"]
        );
        assert_eq!(r.levels.blue, vec!["monitor_every_10_min"]);
        assert_eq!(r.contacts.len(), 1);
        assert_eq!(r.contacts[0].name.as_deref(), Some("王建国"));
        assert_eq!((r.version, r.template_version), (Some(3), 1));
        let plain = resolve("R000002", &template(), 1, None);
        assert_eq!(plain.levels, template().levels);
        assert_eq!(plain.version, None);
    }

    #[test]
    fn codes_become_words_and_text_stays_as_written() {
        assert_eq!(step_text("verify_on_site"), "Verify on site");
        assert_eq!(step_text("monitor_every_10_min"), "Monitor every 10 min");
        assert_eq!(step_text("Close the road"), "Close the road");
        assert_eq!(step_text("疏散群众"), "疏散群众");
    }

    #[test]
    fn a_plans_file_reports_every_bad_template_by_position_and_id() {
        let file = serde_json::json!([
            template(),
            {"id": "P2", "title": "", "category": "x", "levels": {"red": ["a"]}},
            {"id": "P3", "title": "t", "category": "x", "levels": {"purple": ["a"]}},
            template(),
            {"id": "P5", "title": "t", "category": "x", "levels": {"red": ["a"]},
             "contacts": [{"role": "r", "phone": "<script>"}]}
        ]);
        let e = parse_templates(file.to_string().as_bytes()).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "[1] (P2).title",
                "[2] (P3).template",
                "[3] (P00001).id",
                "[4] (P5).contacts[0].phone"
            ]
        );
        assert!(e[1].reason.contains("purple"), "{}", e[1].reason);
        assert!(parse_templates(b"{}").is_err());
    }
}
