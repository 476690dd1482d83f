//! The built-in map page and what it needs, all embedded in the binary so riskmap runs
//! offline: `GET /` (the page for browsers, the OGC landing JSON for API clients),
//! `/app.js`, `/app.css`, MapLibre GL JS under `/vendor/maplibre-gl/` (from npm, see
//! `web/package.json` and `scripts/vendor-web.sh`), the style at
//! `/styles/riskmap.json`. The style declares no glyphs: MapLibre GL JS 6 draws its
//! labels (cluster counts) with the browser's fonts, so no font files are shipped.
//!
//! Static files are found in a fixed table by exact name, never by joining a request
//! path onto a directory: `..`, encoded slashes and the like simply do not match.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::app::App;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    /// Versioned files may be cached by browsers; the rest revalidate.
    immutable: bool,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../web/index.html"),
        immutable: false,
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/app.js"),
        immutable: false,
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/app.css"),
        immutable: false,
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../web/favicon.svg"),
        immutable: false,
    },
    Asset {
        name: "maplibre-gl.mjs",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/vendor/maplibre-gl/maplibre-gl.mjs"),
        immutable: true,
    },
    Asset {
        name: "maplibre-gl-worker.mjs",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../web/vendor/maplibre-gl/maplibre-gl-worker.mjs"),
        immutable: true,
    },
    Asset {
        name: "maplibre-gl.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../web/vendor/maplibre-gl/maplibre-gl.css"),
        immutable: true,
    },
    Asset {
        name: "LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("../../web/vendor/maplibre-gl/LICENSE.txt"),
        immutable: true,
    },
];

const STYLES: &[(&str, &str)] = &[("riskmap.json", include_str!("../../styles/riskmap.json"))];

/// The page may only talk to this server; MapLibre runs its worker from a blob URL.
const CSP: &str = "default-src 'self'; script-src 'self'; worker-src 'self' blob:; child-src 'self' blob:; \
    img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; frame-ancestors 'self'";

fn asset(name: &str) -> Result<Response, ApiError> {
    let a = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::not_found("no such file"))?;
    let mut resp = Body::from(a.bytes).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if a.immutable {
            "public, max-age=86400"
        } else {
            "no-cache"
        }),
    );
    if a.name == "index.html" {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    Ok(resp)
}

/// `GET /`: the map page for browsers (they ask for HTML), the landing JSON otherwise;
/// `?f=json` or `?f=html` decides instead of `Accept`.
pub async fn root(
    State(app): State<Arc<App>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let f = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("f="));
    let wants_html = match f {
        Some("json") => false,
        Some("html") => true,
        _ => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/html"))),
    };
    if wants_html {
        asset("index.html")
    } else {
        super::landing::landing(State(app), uri, headers).await
    }
}

pub async fn app_js() -> Result<Response, ApiError> {
    asset("app.js")
}

pub async fn app_css() -> Result<Response, ApiError> {
    asset("app.css")
}

/// The names of the embedded MapLibre files (`/vendor/maplibre-gl/{file}`).
pub fn vendor_files() -> Vec<&'static str> {
    ASSETS
        .iter()
        .filter(|a| a.immutable)
        .map(|a| a.name)
        .collect()
}

/// The names of the styles (`/styles/{name}`).
pub fn style_names() -> Vec<&'static str> {
    STYLES.iter().map(|(n, _)| *n).collect()
}

pub async fn favicon() -> Result<Response, ApiError> {
    asset("favicon.svg")
}

pub async fn vendor(path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(file) = path.map_err(|_| ApiError::not_found("no such file"))?;
    asset(&file)
}

/// A style with its relative URLs made absolute for the client's host (MapLibre and
/// other clients resolve TileJSON and glyph URLs against the page otherwise).
pub async fn style(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(|_| ApiError::not_found("no such style"))?;
    let (_, text) = STYLES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| ApiError::not_found("no such style"))?;
    let mut style: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ApiError::internal("embedded style", e))?;
    let (base, vary) = super::public_url::base_url(&app, &headers, &uri)?;
    with_current_layers(&mut style, &app);
    if let Some(sources) = style.get_mut("sources").and_then(|s| s.as_object_mut()) {
        for src in sources.values_mut() {
            if let Some(url) = src
                .get("url")
                .and_then(|u| u.as_str())
                .filter(|u| u.starts_with('/'))
            {
                src["url"] = format!("{base}{url}").into();
            }
            if let Some(tiles) = src.get_mut("tiles").and_then(|t| t.as_array_mut()) {
                for t in tiles.iter_mut() {
                    if let Some(u) = t.as_str().filter(|u| u.starts_with('/')) {
                        *t = format!("{base}{u}").into();
                    }
                }
            }
        }
    }
    let mut resp = style.to_string().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(v) = vary {
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static(v));
    }
    Ok(resp)
}

/// Brings the embedded style up to the layers served now: the `riskmap` source's
/// TileJSON names every layer (up to the per-tile limit; more go into sources of their
/// own), and a layer the style does not draw (one created from an upload) gets a plain
/// drawing by geometry, under the sensors and risk points: circles, lines, or a fill
/// with its outline. Each such style layer carries `metadata."riskmap:group"` = the
/// layer's name, as the others do, for the map page's toggles.
fn with_current_layers(style: &mut serde_json::Value, app: &App) {
    use crate::model::GeometryType as G;
    use serde_json::json;
    let layers = app.layers();
    let Some(list) = style.get("layers").and_then(|l| l.as_array()).cloned() else {
        return;
    };
    let drawn: std::collections::HashSet<String> = list
        .iter()
        .filter_map(|l| {
            l.get("source-layer")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .collect();
    // The style's own order first (it is the drawing order), then the others.
    let mut names: Vec<String> = ["boundary", "rivers", "pipelines", "sensors", "risk_points"]
        .iter()
        .filter(|n| layers.iter().any(|l| l.def.name == **n))
        .map(|n| n.to_string())
        .collect();
    let extra: Vec<_> = layers
        .iter()
        .filter(|l| !drawn.contains(&l.def.name))
        .collect();
    let mut new_layers = Vec::new();
    let palette = [
        "#2f9e44", "#1971c2", "#9c36b5", "#e8590c", "#0c8599", "#5f3dc4",
    ];
    for (i, l) in extra.iter().enumerate() {
        let name = &l.def.name;
        let source = if names.len() < crate::tiles::MAX_LAYERS_PER_TILE {
            names.push(name.clone());
            "riskmap".to_string()
        } else {
            let id = format!("riskmap-{name}");
            style["sources"][&id] = json!({"type": "vector", "url": format!("/tiles/{name}.json")});
            id
        };
        let colour = palette[i % palette.len()];
        let meta = json!({"riskmap:group": name, "riskmap:title": l.def.title});
        // In the map page's legend and layer list too.
        let mark = match l.def.geometry {
            G::LineString | G::MultiLineString => "line",
            _ => "swatch",
        };
        if !style["metadata"].is_object() {
            style["metadata"] = json!({});
        }
        if !style["metadata"]["riskmap:legend"].is_object() {
            style["metadata"]["riskmap:legend"] = json!({});
        }
        style["metadata"]["riskmap:legend"][name] = json!({
            "title": l.def.title, "mark": mark, "items": [[null, colour, l.def.title]]
        });
        match l.def.geometry {
            G::Point | G::MultiPoint => new_layers.push(json!({
                "id": name, "type": "circle", "source": source, "source-layer": name, "metadata": meta,
                "paint": {"circle-color": colour, "circle-radius": 4, "circle-stroke-color": "#ffffff", "circle-stroke-width": 1}
            })),
            G::LineString | G::MultiLineString => new_layers.push(json!({
                "id": name, "type": "line", "source": source, "source-layer": name, "metadata": meta,
                "paint": {"line-color": colour, "line-width": 1.5}
            })),
            G::Polygon | G::MultiPolygon => {
                new_layers.push(json!({
                    "id": format!("{name}-fill"), "type": "fill", "source": source, "source-layer": name, "metadata": meta,
                    "paint": {"fill-color": colour, "fill-opacity": 0.15}
                }));
                new_layers.push(json!({
                    "id": format!("{name}-line"), "type": "line", "source": source, "source-layer": name, "metadata": meta,
                    "paint": {"line-color": colour, "line-width": 1}
                }));
            }
        }
    }
    style["sources"]["riskmap"]["url"] = json!(format!("/tiles/{}.json", names.join(",")));
    // Under the first sensor or risk point layer, so points stay on top.
    let at = list
        .iter()
        .position(|l| {
            matches!(
                l.get("source-layer").and_then(|s| s.as_str()),
                Some("sensors" | "risk_points")
            )
        })
        .unwrap_or(list.len());
    let mut all = list;
    for (k, nl) in new_layers.into_iter().enumerate() {
        all.insert(at + k, nl);
    }
    style["layers"] = serde_json::Value::Array(all);
}
