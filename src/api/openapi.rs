//! `GET /api`: the OpenAPI 3.0 document of every route (OGC API – Features Part 1,
//! "OpenAPI 3.0" conformance class), and `GET /api.html`, the same for people.
//!
//! Built with utoipa's OpenAPI model (version 4: it writes OpenAPI 3.0.3; utoipa 5 writes
//! only 3.1, which the OGC class and GDAL's OAPIF driver do not expect). The operations
//! are described here rather than by utoipa's `#[utoipa::path]` attributes on the
//! handlers, because what clients need from the document comes from the server's own
//! values: each parameter's limits from the constants the handlers enforce
//! (`items::MAX_LIMIT`, `filter::Limits`, `tiles::MAX_ZOOM`...), the filter languages
//! and CRSs from `query`, the roles of each write from `model::access`, and one items
//! path per layer with a parameter per declared property (`property=value`), which is
//! how GDAL's OAPIF driver learns which `-where` clauses it may send to the server
//! instead of filtering every page itself. `tests/openapi.rs` checks that every route
//! of `router.rs` is documented and every documented operation answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use utoipa::openapi::path::{
    OperationBuilder, Parameter, ParameterBuilder, ParameterIn, ParameterStyle, PathItemType,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::server::Server;
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem,
    PathsBuilder, Ref, RefOr, Required, Schema,
};

use crate::model::access::{Action, Role};
use crate::model::layer::LayerDef;
use crate::query::crs::Crs;
use crate::query::filter::Limits;

/// The media type of the document (OGC API – Features Part 1, requirement /req/oas30).
pub const OPENAPI_JSON: &str = "application/vnd.oai.openapi+json;version=3.0";

const GEOJSON: &str = "application/geo+json";
const JSON: &str = "application/json";
const PROBLEM: &str = "#/components/responses/Error";
const BEARER: &str = "bearerAuth";

/// What the document needs to know of the server.
pub struct ApiFacts<'a> {
    /// The absolute base URL clients reach the server at.
    pub base: &'a str,
    pub layers: Vec<Arc<LayerDef>>,
    /// Whether reads need no key (`--private-reads` off).
    pub public_reads: bool,
    pub default_limit: usize,
    pub max_limit: usize,
    pub max_body_bytes: usize,
    pub max_zoom: u8,
    pub max_layers_per_tile: usize,
}

/// The OpenAPI 3.0 document of the server as it runs (its layers and settings).
pub fn document(f: &ApiFacts<'_>) -> OpenApi {
    let mut paths = PathsBuilder::new();
    for (path, method, op) in operations(f) {
        paths = paths.path(path, PathItem::new(method, op));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("riskmap")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "A city's risk points, pipelines and sensors on one map: OGC API – \
                     Features (Parts 1 and 3, CQL2), edits (Part 4), Mapbox vector tiles, \
                     TileJSON and a MapLibre style, from the same in-memory indexes.",
                ))
                .build(),
        )
        .servers(Some(vec![Server::new(f.base.to_string())]))
        .paths(paths.build())
        .components(Some(components()))
        .tags(Some(
            [
                ("Capabilities", "The entry points, conformance and this document."),
                ("Data", "Layers (collections) and their features, with filters."),
                ("Edits", "Creating, replacing, patching and deleting features (a key with the right role)."),
                ("Tiles", "Mapbox vector tiles, TileJSON and the map style."),
                ("Map page", "The built-in map page and its assets."),
                ("Operations", "Health and metrics, for operators and monitoring."),
                ("Warnings", "Sensor readings in; warnings out: listed, pushed live, acknowledged, resolved, and as CAP 1.2."),
                ("Plans", "Response plans (templates and each risk point's own) and sensor types with their thresholds."),
            ]
            .map(|(name, d)| TagBuilder::new().name(name).description(Some(d)).build()),
        ))
        .build()
}

/// Every operation: path, method, operation.
fn operations(f: &ApiFacts<'_>) -> Vec<(String, PathItemType, utoipa::openapi::path::Operation)> {
    use PathItemType::{Delete, Get, Patch, Post, Put};
    let read = |op: OperationBuilder| {
        if f.public_reads {
            op
        } else {
            op.security(SecurityRequirement::new(BEARER, Vec::<String>::new()))
                .response("401", error_ref())
        }
    };
    let mut ops = vec![
        (
            "/".to_string(),
            Get,
            op("Capabilities", "getLandingPage", "The landing page",
               "Links to the API's parts. Browsers (Accept: text/html) get the map page; \
                `f=json` or `f=html` decides instead of Accept.")
                .parameter(f_param(&["json", "html"]))
                .response("200", json_response("The landing page (JSON), or the map page (HTML).", "landingPage").content("text/html", html()).build()),
        ),
        (
            "/api".to_string(),
            Get,
            op("Capabilities", "getOpenAPI", "This document", "The OpenAPI 3.0 document of every route, with each parameter's limits.")
                .response("200", ResponseBuilder::new().description("The OpenAPI document.").content(OPENAPI_JSON, any_json()).build()),
        ),
        (
            "/api.html".to_string(),
            Get,
            op("Capabilities", "getOpenAPIHtml", "This document for people", "The operations and parameters of `/api`, as an HTML page.")
                .response("200", ResponseBuilder::new().description("HTML.").content("text/html", html()).build()),
        ),
        (
            "/conformance".to_string(),
            Get,
            op("Capabilities", "getConformanceDeclaration", "Conformance classes", "The OGC conformance classes the server implements.")
                .response("200", json_response("The conformance declaration.", "confClasses").build()),
        ),
        (
            "/collections".to_string(),
            Get,
            read(op("Data", "getCollections", "The layers", "Every layer with its extent, CRSs and links."))
                .response("200", json_response("The collections.", "collections").build()),
        ),
        (
            "/collections/{collectionId}".to_string(),
            Get,
            read(op("Data", "describeCollection", "One layer", "A layer's extent, CRSs and links."))
                .parameter(collection_id(f))
                .response("200", json_response("The collection.", "collection").build())
                .response("404", error_ref()),
        ),
        (
            "/collections/{collectionId}/queryables".to_string(),
            Get,
            read(op("Data", "getQueryables", "What filters may name",
                    "A JSON Schema of the layer's queryable properties (OGC API – Features Part 3)."))
                .parameter(collection_id(f))
                .response("200", ResponseBuilder::new().description("The queryables.").content("application/schema+json", any_json()).build())
                .response("404", error_ref()),
        ),
        (
            "/collections/{collectionId}/items".to_string(),
            Get,
            items_get(f, read, None),
        ),
        (
            "/collections/{collectionId}/items".to_string(),
            Post,
            edit("createFeature", "Add a feature",
                    "Adds a GeoJSON feature; the server names it (a UUID) when it comes without an id. \
                     Answers 201 with the stored feature, its `Location` and `ETag`.")
                .parameter(collection_id(f))
                .request_body(Some(feature_body(f, "The feature (GeoJSON, WGS 84 lon/lat).")))
                .response("201", feature_response("The stored feature."))
                .response("409", error_ref())
                .response("413", error_ref())
                .response("415", error_ref()),
        ),
        (
            "/collections/{collectionId}/items/{featureId}".to_string(),
            Get,
            read(op("Data", "getFeature", "One feature", "A feature by id, with its `ETag` (for `If-Match` on edits)."))
                .parameter(collection_id(f))
                .parameter(feature_id())
                .parameter(crs_param())
                .response("200", feature_response("The feature."))
                .response("304", ResponseBuilder::new().description("Not modified (`If-None-Match`).").build())
                .response("404", error_ref()),
        ),
        (
            "/collections/{collectionId}/items/{featureId}".to_string(),
            Put,
            edit("replaceFeature", "Replace a feature",
                    "Replaces the feature's geometry and properties. With `If-Match`, only if it is still that version.")
                .parameter(collection_id(f))
                .parameter(feature_id())
                .parameter(if_match())
                .request_body(Some(feature_body(f, "The new feature (GeoJSON); an id, if given, must be the URL's.")))
                .response("200", feature_response("The stored feature."))
                .response("404", error_ref())
                .response("412", error_ref())
                .response("413", error_ref()),
        ),
        (
            "/collections/{collectionId}/items/{featureId}".to_string(),
            Patch,
            edit("updateFeature", "Change a feature",
                    "Applies a JSON merge patch (RFC 7396) to the feature. With `If-Match`, only if it is still that version.")
                .parameter(collection_id(f))
                .parameter(feature_id())
                .parameter(if_match())
                .request_body(Some(
                    RequestBodyBuilder::new()
                        .description(Some("A JSON merge patch of the GeoJSON feature."))
                        .required(Some(Required::True))
                        .content("application/merge-patch+json", any_json())
                        .content(JSON, any_json())
                        .build(),
                ))
                .response("200", feature_response("The stored feature."))
                .response("404", error_ref())
                .response("412", error_ref()),
        ),
        (
            "/collections/{collectionId}/items/{featureId}".to_string(),
            Delete,
            edit("deleteFeature", "Delete a feature", "Deletes the feature. With `If-Match`, only if it is still that version. \
                    A feature that features of another layer name (a risk point its sensors name) is not deleted: 409, naming them.")
                .parameter(collection_id(f))
                .parameter(feature_id())
                .parameter(if_match())
                .response("204", ResponseBuilder::new().description("Deleted.").build())
                .response("404", error_ref())
                .response("409", error_ref())
                .response("412", error_ref()),
        ),
        (
            "/collections/{collectionId}/imports".to_string(),
            Post,
            keyed("Imports", Action::ImportFiles, "importFile", "Import a file into a layer",
                    "The body is the file: GeoJSON, CSV, a zipped shapefile (or any of these zipped), a GeoPackage or \
                     FlatGeobuf, in any CRS and encoding (detected, or given). All of it or nothing: every feature is \
                     checked first, then written in one transaction. Answers the import report: 201 imported, 200 a dry \
                     run, 422 refusals (nothing written), with `Location: /imports/{id}`. A retry with the same \
                     `Idempotency-Key` gets the first report back (`Idempotent-Replayed: true`).")
                .parameter(collection_id(f))
                .parameter(query("crs", "The file's CRS, overriding what it says: `EPSG:n`, its OGC URI, `CRS84`, `GCJ02` or `BD09`.", json!({"type": "string"})))
                .parameter(query("encoding", "The file's text encoding, overriding what it says.", json!({"type": "string", "enum": ["UTF-8", "GBK", "GB18030", "Big5", "ISO-8859-1"]})))
                .parameter(query("mode", "`upsert` adds and updates by id; `replace` also deletes the layer's features absent from the file, unless features of another layer name one of them (409).", json!({"type": "string", "enum": ["upsert", "replace"], "default": "upsert"})))
                .parameter(query("map", "Source property to layer property, `SOURCE:TARGET,...` (e.g. `名称:name`).", json!({"type": "string"})))
                .parameter(query("source_layer", "Which dataset of an archive, or layer of a GeoPackage.", json!({"type": "string"})))
                .parameter(query("dry_run", "Check and count everything, then write nothing.", json!({"type": "boolean", "default": false})))
                .parameter(query("skip_invalid", "Import the valid features even when others are refused.", json!({"type": "boolean", "default": false})))
                .parameter(query("lon_column", "CSV: the column of x or longitude.", json!({"type": "string"})))
                .parameter(query("lat_column", "CSV: the column of y or latitude.", json!({"type": "string"})))
                .parameter(ParameterBuilder::new().name("Idempotency-Key").parameter_in(ParameterIn::Header).description(Some("A retry with the same key imports nothing twice.")).schema(Some(schema(json!({"type": "string", "maxLength": 255})))).build())
                .request_body(Some(upload_body()))
                .response("200", report_response("The report of a dry run."))
                .response("201", report_response("The report of the import."))
                .response("404", error_ref())
                .response("409", error_ref())
                .response("413", error_ref())
                .response("415", error_ref()),
        ),
        (
            "/imports".to_string(),
            Get,
            keyed("Imports", Action::ImportFiles, "getImports", "Import reports", "The newest import reports first, in summary.")
                .parameter(query("limit", "Reports per page.", json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})))
                .parameter(offset_param())
                .response("200", ResponseBuilder::new().description("The reports.").content(JSON, any_json()).build()),
        ),
        (
            "/imports/{importId}".to_string(),
            Get,
            keyed("Imports", Action::ImportFiles, "getImport", "One import report", "The report of an import, as it was answered.")
                .parameter(ParameterBuilder::new().name("importId").parameter_in(ParameterIn::Path).required(Required::True).schema(Some(schema(json!({"type": "string"})))).build())
                .response("200", report_response("The report."))
                .response("404", error_ref()),
        ),
        (
            "/collections".to_string(),
            Post,
            keyed("Imports", Action::Administer, "createCollection", "A new layer from a file",
                    "Creates a reference layer from a file: its schema inferred from the features (types, allowed \
                     values where few), its layer file written to the layers directory, its table created, the file \
                     imported; served at once in tiles, TileJSON, the style and queries. Takes the options of an \
                     import (not `mode` or `dry_run`).")
                .parameter(query("name", "The layer's name: lower-case letters, digits and _.", json!({"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"})).required(Required::True))
                .parameter(query("kind", "Only `reference`.", json!({"type": "string", "enum": ["reference"]})))
                .parameter(query("title", "The layer's title.", json!({"type": "string"})))
                .parameter(query("id_property", "The property holding each feature's unique id.", json!({"type": "string", "default": "id"})))
                .parameter(query("crs", "As for an import.", json!({"type": "string"})))
                .parameter(query("encoding", "As for an import.", json!({"type": "string"})))
                .parameter(query("map", "As for an import; property names must be ASCII identifiers.", json!({"type": "string"})))
                .parameter(query("source_layer", "As for an import.", json!({"type": "string"})))
                .request_body(Some(upload_body()))
                .response("201", report_response("The layer was created; the report of its import."))
                .response("409", error_ref())
                .response("413", error_ref())
                .response("415", error_ref()),
        ),
        (
            "/collections/{collectionId}".to_string(),
            Delete,
            keyed("Imports", Action::Administer, "deleteCollection", "Remove a layer created from a file",
                    "Removes a layer created by `POST /collections`: its table and its layer file. Layers written by \
                     hand answer 409.")
                .parameter(collection_id(f))
                .response("204", ResponseBuilder::new().description("Removed.").build())
                .response("404", error_ref())
                .response("409", error_ref()),
        ),
        (
            "/tiles/{layers}/{z}/{x}/{y}.mvt".to_string(),
            Get,
            read(op("Tiles", "getTile", "A vector tile",
                    "A Mapbox vector tile (version 2.1) of the named layers, generalised for its zoom. \
                     `.pbf` is accepted for `.mvt`. Answers 204 when the tile is empty, 304 to a matching `If-None-Match`."))
                .parameter(tile_layers(f))
                .parameter(int_path("z", "Zoom level.", 0, f.max_zoom as u64))
                .parameter(int_path("x", "Column, 0 to 2^z - 1.", 0, (1u64 << f.max_zoom) - 1))
                .parameter(int_path("y", "Row, 0 to 2^z - 1 (XYZ scheme, from the north).", 0, (1u64 << f.max_zoom) - 1))
                .response("200", ResponseBuilder::new().description("The tile.").content("application/vnd.mapbox-vector-tile", binary()).build())
                .response("204", ResponseBuilder::new().description("Nothing in the tile.").build())
                .response("304", ResponseBuilder::new().description("Not modified.").build())
                .response("404", error_ref()),
        ),
        (
            "/tiles/{layers}.json".to_string(),
            Get,
            read(op("Tiles", "getTileJSON", "TileJSON", "The TileJSON 3.0 of the named layers: tile URL, zoom range, bounds and fields."))
                .parameter(tile_layers(f))
                .response("200", ResponseBuilder::new().description("TileJSON.").content(JSON, any_json()).build())
                .response("404", error_ref()),
        ),
        (
            "/styles/{styleId}".to_string(),
            Get,
            op("Tiles", "getStyle", "A MapLibre style", "The map page's MapLibre style, its sources pointing at this server.")
                .parameter(
                    ParameterBuilder::new()
                        .name("styleId")
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(schema(json!({"type": "string", "enum": crate::api::web::style_names()}))))
                        .build(),
                )
                .response("200", ResponseBuilder::new().description("The style.").content(JSON, any_json()).build())
                .response("404", error_ref()),
        ),
        (
            "/health".to_string(),
            Get,
            op("Operations", "getHealth", "Health",
               "`ok`, or `degraded` with the reasons (a full disk, rows the store holds that cannot be served).")
                .response("200", ResponseBuilder::new().description("Health.").content(JSON, any_json()).build()),
        ),
        (
            "/metrics".to_string(),
            Get,
            op("Operations", "getMetrics", "Prometheus metrics", "Requests, latencies, refusals, edits, cache and layer sizes.")
                .response("200", ResponseBuilder::new().description("Metrics in the Prometheus text format.").content("text/plain", text()).build()),
        ),
    ];
    for (path, id, what, ty) in [
        (
            "/app.js",
            "getMapScript",
            "The map page's script",
            "text/javascript",
        ),
        (
            "/app.css",
            "getMapStylesheet",
            "The map page's stylesheet",
            "text/css",
        ),
        ("/favicon.svg", "getIconSvg", "The icon", "image/svg+xml"),
        (
            "/favicon.ico",
            "getIcon",
            "The icon (the same SVG)",
            "image/svg+xml",
        ),
    ] {
        ops.push((
            path.to_string(),
            Get,
            op("Map page", id, what, what).response(
                "200",
                ResponseBuilder::new()
                    .description(what)
                    .content(ty, text())
                    .build(),
            ),
        ));
    }
    ops.push((
        "/vendor/maplibre-gl/{file}".to_string(),
        Get,
        op(
            "Map page",
            "getMapLibre",
            "MapLibre GL JS",
            "MapLibre GL JS, embedded (the map page works offline).",
        )
        .parameter(
            ParameterBuilder::new()
                .name("file")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(schema(
                    json!({"type": "string", "enum": crate::api::web::vendor_files()}),
                )))
                .build(),
        )
        .response(
            "200",
            ResponseBuilder::new()
                .description("The file.")
                .content("*/*", binary())
                .build(),
        )
        .response("404", error_ref()),
    ));
    for (path, id, summary, description) in [
        (
            "/collections/{collectionId}/within",
            "getFeaturesWithin",
            "Features within a distance",
            "Features within `radius_m` metres of a point, measured on the WGS 84 ellipsoid \
             (Karney's geodesics) to the nearest point of each geometry, nearest first (ties \
             in fid order), each with `distance_m` (millimetres) among its properties; paged \
             by `limit` and `offset`.",
        ),
        (
            "/collections/{collectionId}/nearest",
            "getFeaturesNearest",
            "The nearest features",
            "The `k` features nearest to a point (within 1,000 km), measured as `within` does, \
             nearest first, each with `distance_m`.",
        ),
    ] {
        let within = id == "getFeaturesWithin";
        let mut o = read(op("Data", id, summary, description))
            .parameter(collection_id(f))
            .parameter(
                query(
                    "lon",
                    "Longitude of the point, WGS 84 degrees.",
                    json!({"type": "number", "minimum": -180, "maximum": 180}),
                )
                .required(Required::True)
                .build(),
            )
            .parameter(
                query(
                    "lat",
                    "Latitude of the point, WGS 84 degrees.",
                    json!({"type": "number", "minimum": -90, "maximum": 90}),
                )
                .required(Required::True)
                .build(),
            );
        o = if within {
            o.parameter(query("radius_m", "The distance, metres.", json!({"type": "number", "exclusiveMinimum": true, "minimum": 0, "maximum": crate::query::near::MAX_RADIUS_M})).required(Required::True).build())
                .parameter(limit_param(f))
                .parameter(offset_param())
        } else {
            o.parameter(
                query(
                    "k",
                    "How many features.",
                    json!({"type": "integer", "minimum": 1, "maximum": crate::query::near::MAX_K}),
                )
                .required(Required::True)
                .build(),
            )
        };
        o = o
            .parameter(and_filter_param())
            .parameter(filter_lang_param())
            .parameter(crs_param())
            .parameter(near_properties_param())
            .parameter(skip_geometry_param())
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The features, nearest first (GeoJSON FeatureCollection).")
                    .content(
                        GEOJSON,
                        ContentBuilder::new()
                            .schema(Ref::from_schema_name("featureCollectionGeoJSON"))
                            .build(),
                    )
                    .build(),
            )
            .response("404", error_ref());
        ops.push((path.to_string(), Get, o));
    }
    let shared = |o: OperationBuilder| {
        o.parameter(collection_id(f))
            .parameter(limit_param(f))
            .parameter(offset_param())
            .parameter(and_filter_param())
            .parameter(filter_lang_param())
            .parameter(crs_param())
            .parameter(near_properties_param())
            .parameter(skip_geometry_param())
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The features, nearest first (GeoJSON FeatureCollection).")
                    .content(
                        GEOJSON,
                        ContentBuilder::new()
                            .schema(Ref::from_schema_name("featureCollectionGeoJSON"))
                            .build(),
                    )
                    .build(),
            )
            .response("404", error_ref())
    };
    let max_m = crate::query::near::MAX_RADIUS_M;
    ops.push((
        "/collections/{collectionId}/intersects".to_string(),
        Post,
        shared(read(op(
            "Data",
            "getFeaturesIntersecting",
            "Features meeting a geometry",
            "Features that intersect the GeoJSON geometry in the body (WGS 84 lon/lat), or \
             with `buffer_m` lie within that many metres of it, each with `distance_m` \
             (geodesic, 0 where they meet), nearest first. A read, though a POST: it needs \
             no more than a read does.",
        )))
        .parameter(query("buffer_m", "Also features within this distance of the geometry, metres.", json!({"type": "number", "minimum": 0, "maximum": max_m, "default": 0})).build())
        .request_body(Some(
            RequestBodyBuilder::new()
                .description(Some(format!(
                    "A GeoJSON Point, LineString, Polygon or their Multi forms (or a Feature with one), at most {} positions.",
                    Limits::default().max_vertices
                )))
                .required(Some(Required::True))
                .content(GEOJSON, ContentBuilder::new().schema(Ref::from_schema_name("geometryGeoJSON")).build())
                .content(JSON, ContentBuilder::new().schema(Ref::from_schema_name("geometryGeoJSON")).build())
                .build(),
        ))
        .response("413", error_ref())
        .response("415", error_ref()),
    ));
    ops.push((
        "/collections/{collectionId}/corridor".to_string(),
        Get,
        shared(read(op(
            "Data",
            "getFeaturesInCorridor",
            "Features along another feature",
            "Features within `distance_m` metres (geodesic) of another feature, e.g. the risk \
             points within 200 m of one gas main, each with `distance_m`, nearest first.",
        )))
        .parameter(
            query(
                "along",
                "The feature to follow, `LAYER/ID`.",
                json!({"type": "string", "pattern": "^[a-z][a-z0-9_]*/.+$"}),
            )
            .required(Required::True)
            .build(),
        )
        .parameter(
            query(
                "distance_m",
                "The corridor's half-width, metres.",
                json!({"type": "number", "minimum": 0, "maximum": max_m}),
            )
            .required(Required::True)
            .build(),
        ),
    ));
    ops.push((
        "/collections/{collectionId}/items/{featureId}/context".to_string(),
        Get,
        read(op(
            "Data",
            "getFeatureContext",
            "What surrounds a feature",
            "A duty officer's one call around a feature of a point layer (a risk point): the \
             feature, and for every other layer the features that name it (`attached`, by a \
             property `{kind}_id` such as a sensor's `risk_point_id`), those within \
             `radius_m` (`within`) and the `k` nearest (`nearest`), each with `distance_m` \
             (geodesic metres), nearest first, at most `limit` per list.",
        ))
        .parameter(collection_id(f))
        .parameter(feature_id())
        .parameter(query("radius_m", "The radius, metres.", json!({"type": "number", "exclusiveMinimum": true, "minimum": 0, "maximum": crate::query::near::MAX_RADIUS_M, "default": 500})).build())
        .parameter(query("k", "How many nearest features of each layer.", json!({"type": "integer", "minimum": 1, "maximum": crate::query::near::MAX_K, "default": 5})).build())
        .parameter(query("limit", "Most features in each list.", json!({"type": "integer", "minimum": 0, "maximum": f.max_limit, "default": f.default_limit})).build())
        .parameter(crs_param())
        .response("200", ResponseBuilder::new().description("The feature and its surroundings.").content(JSON, any_json()).build())
        .response("404", error_ref()),
    ));
    ops.extend(alert_operations(&read));
    // One items path per layer, with its properties as parameters (`property=value`).
    for l in &f.layers {
        ops.push((
            format!("/collections/{}/items", l.name),
            Get,
            items_get(f, read, Some(l)),
        ));
    }
    ops.into_iter().map(|(p, m, o)| (p, m, o.build())).collect()
}

fn text_path(name: &str, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema(json!({"type": "string", "minLength": 1}))))
        .build()
}

fn json_body(description: &str) -> utoipa::openapi::request_body::RequestBody {
    RequestBodyBuilder::new()
        .description(Some(description))
        .required(Some(Required::True))
        .content(JSON, any_json())
        .build()
}

fn ok_json(description: &str) -> utoipa::openapi::response::Response {
    ResponseBuilder::new()
        .description(description)
        .content(JSON, any_json())
        .build()
}

/// Readings, warnings, plans and sensor types (issue 10).
fn alert_operations(
    read: &dyn Fn(OperationBuilder) -> OperationBuilder,
) -> Vec<(String, PathItemType, OperationBuilder)> {
    use PathItemType::{Delete, Get, Post, Put};
    let warning_id = || int_path("warningId", "The warning's id.", 1, i64::MAX as u64);
    let risk_point = || text_path("riskPointId", "The risk point's id.");
    let plan_roles =
        |id: &str, summary: &str, d: &str| keyed("Plans", Action::EditPlans, id, summary, d);
    let note_body = |d: &str| {
        RequestBodyBuilder::new()
            .description(Some(d))
            .required(Some(Required::False))
            .content(JSON, ContentBuilder::new().schema(schema(json!({"type": "object", "properties": {"note": {"type": "string", "maxLength": 2000}}, "additionalProperties": false}))).build())
            .build()
    };
    let max = crate::alerts::readings::MAX_PER_REQUEST;
    vec![
        (
            "/readings".into(),
            Post,
            keyed("Warnings", Action::PostReadings, "postReadings", "Post sensor readings",
                &format!("Up to {max} readings `{{\"sensor_id\", \"ts\" (RFC 3339 with an offset), \"value\"}}` as a JSON array or NDJSON lines. \
                 Idempotent on (sensor, ts): a repeat is counted as a duplicate; a reading older than the sensor's latest is out of order; \
                 unknown sensors, values that are not finite numbers, timestamps older than 7 days or more than 5 minutes ahead, \
                 and sensors whose type has no thresholds are rejected and counted, never taken as normal. \
                 Answered after the readings and the warning transitions they caused are durable."))
                .request_body(Some(
                    RequestBodyBuilder::new()
                        .description(Some("The readings."))
                        .required(Some(Required::True))
                        .content(JSON, any_json())
                        .content("application/x-ndjson", text())
                        .build(),
                ))
                .response("200", ok_json("What became of the readings: received, accepted, rejected by reason, the first rejected one by one, and the transitions made."))
                .response("413", error_ref())
                .response("415", error_ref()),
        ),
        (
            "/warnings".into(),
            Get,
            read(op("Warnings", "getWarnings", "Warnings",
                "Warnings, newest first, with their subject (risk point or pipeline) and links to their CAP message and plan. \
                 Open ones (active or acknowledged) by default."))
            .parameter(query("state", "Which warnings.", json!({"type": "string", "enum": ["open", "active", "acknowledged", "resolved", "all"], "default": "open"})).build())
            .parameter(query("level", "Levels, comma-separated (blue, yellow, orange, red): the current level or the highest reached.", json!({"type": "string"})).build())
            .parameter(query("bbox", "Subjects within lon/lat bounds: minLon,minLat,maxLon,maxLat.", json!({"type": "string"})).build())
            .parameter(query("category", "The subject's risk category.", json!({"type": "string"})).build())
            .parameter(query("district", "The subject's district.", json!({"type": "string"})).build())
            .parameter(query("limit", "Most warnings answered.", json!({"type": "integer", "minimum": 1, "maximum": super::warnings::MAX_LIMIT, "default": 100})).build())
            .parameter(offset_param())
            .response("200", ok_json("The warnings: numberMatched, numberReturned, warnings.")),
        ),
        (
            "/warnings.atom".into(),
            Get,
            read(op("Warnings", "getWarningsFeed", "Active warnings as an Atom feed", "One entry per open warning, linking its CAP 1.2 message."))
                .response("200", ResponseBuilder::new().description("Atom (RFC 4287).").content("application/atom+xml", text()).build()),
        ),
        (
            "/warnings/stream".into(),
            Get,
            read(op("Warnings", "getWarningsStream", "Warnings, live",
                "Server-Sent Events: every transition (raised, escalated, de_escalated, acknowledged, resolved) as it is made durable, \
                 `id` its sequence number. With `Last-Event-ID` the stream first sends what was missed."))
                .parameter(ParameterBuilder::new().name("Last-Event-ID").parameter_in(ParameterIn::Header).required(Required::False)
                    .description(Some("The id of the last event received.")).schema(Some(schema(json!({"type": "integer", "minimum": 0})))).build())
                .response("200", ResponseBuilder::new().description("An event stream.").content("text/event-stream", text()).build()),
        ),
        (
            "/warnings/{warningId}".into(),
            Get,
            read(op("Warnings", "getWarning", "One warning",
                "The warning with its transitions and their evidence (the readings, thresholds and levels), its sensors now \
                 (type name and unit, latest value, state), and the plan's steps and contacts for its level. \
                 `/warnings/{id}.cap` answers its CAP 1.2 message (application/cap+xml)."))
                .parameter(warning_id())
                .response("200", ResponseBuilder::new().description("The warning.").content(JSON, any_json()).content("application/cap+xml", text()).build())
                .response("404", error_ref()),
        ),
        (
            "/warnings/{warningId}/ack".into(),
            Post,
            keyed("Warnings", Action::HandleWarnings, "acknowledgeWarning", "Acknowledge a warning",
                "Records who acknowledged it, when, and their note (audited). An escalation clears it: the new level must be acknowledged again.")
                .parameter(warning_id())
                .request_body(Some(note_body("An optional note.")))
                .response("200", ok_json("The transition."))
                .response("404", error_ref())
                .response("409", error_ref()),
        ),
        (
            "/warnings/{warningId}/resolve".into(),
            Post,
            keyed("Warnings", Action::HandleWarnings, "resolveWarning", "Resolve a warning by hand",
                "Ends the warning with a note saying why (audited); it is not raised again at its level until its readings rise above it or go back to normal first. Warnings also resolve themselves once the readings stay normal for the pending period.")
                .parameter(warning_id())
                .request_body(Some(note_body("The note (required).")))
                .response("200", ok_json("The transition."))
                .response("404", error_ref())
                .response("409", error_ref()),
        ),
        (
            "/sensors/{sensorId}".into(),
            Get,
            read(op("Warnings", "getSensor", "One sensor now",
                "The sensor's type (name, family, unit), risk point or pipeline, latest reading, state (normal, a level, or no_data when silent longer than its type allows) and thresholds."))
                .parameter(text_path("sensorId", "The sensor's id."))
                .response("200", ok_json("The sensor."))
                .response("404", error_ref()),
        ),
        (
            "/sensors/{sensorId}/rule".into(),
            Put,
            plan_roles("putSensorRule", "Set a sensor's own thresholds",
                "Overrides its type's rule: `{warn, alarm, direction, mapping, thresholds, hysteresis, clear_after_s, silent_after_s}`.")
                .parameter(text_path("sensorId", "The sensor's id."))
                .request_body(Some(json_body("The rule.")))
                .response("200", ok_json("The sensor."))
                .response("404", error_ref())
                .response("415", error_ref()),
        ),
        (
            "/sensors/{sensorId}/rule".into(),
            Delete,
            plan_roles("deleteSensorRule", "Back to the type's thresholds", "Removes the sensor's own rule.")
                .parameter(text_path("sensorId", "The sensor's id."))
                .response("204", ResponseBuilder::new().description("Removed.").build())
                .response("404", error_ref()),
        ),
        (
            "/risk_points".into(),
            Get,
            read(op("Plans", "getRiskPointsWithoutPlan", "Risk points without a plan",
                "The risk points whose plan resolves to nothing (no plan_id, or a template not loaded): a gap the centre must close."))
                .parameter(query("without_plan", "Must be true.", json!({"type": "boolean", "enum": [true]})).required(Required::True).build())
                .response("200", ok_json("numberMatched and the ids.")),
        ),
        (
            "/risk_points/{riskPointId}/plan".into(),
            Get,
            read(op("Plans", "getPointPlan", "A risk point's plan",
                "Its template (its own plan's, else its plan_id's) with its own changes: steps per level (as written and in words), contacts, notes, versions."))
                .parameter(risk_point())
                .response("200", ok_json("The plan."))
                .response("404", error_ref())
                .response("422", error_ref()),
        ),
        (
            "/risk_points/{riskPointId}/plan".into(),
            Put,
            plan_roles("putPointPlan", "Change a risk point's plan",
                "A new version of the point's own plan: `{template, contacts, extra_contacts, add_steps, remove_steps, notes}`; earlier versions are kept.")
                .parameter(risk_point())
                .request_body(Some(json_body("The point's plan.")))
                .response("200", ok_json("The plan as it now applies."))
                .response("404", error_ref())
                .response("415", error_ref()),
        ),
        (
            "/risk_points/{riskPointId}/plan/versions".into(),
            Get,
            read(op("Plans", "getPointPlanVersions", "A risk point's plan, every version", "Newest first, with who wrote each and when."))
                .parameter(risk_point())
                .response("200", ok_json("The versions."))
                .response("404", error_ref()),
        ),
        (
            "/plan-templates".into(),
            Get,
            read(op("Plans", "getPlanTemplates", "Plan templates", "Every template's latest version, in summary."))
                .response("200", ok_json("The templates.")),
        ),
        (
            "/plan-templates".into(),
            Post,
            plan_roles("postPlanTemplates", "Load plan templates",
                "A plans file (a JSON array of templates, the generator's plans.json), all or nothing; a changed template gets a new version.")
                .request_body(Some(json_body("The templates.")))
                .response("200", ok_json("How many were read and how many got a new version."))
                .response("415", error_ref()),
        ),
        (
            "/plan-templates/{templateId}".into(),
            Get,
            read(op("Plans", "getPlanTemplate", "One plan template", "The latest version, or `version=N`."))
                .parameter(text_path("templateId", "The template's id."))
                .parameter(query("version", "A version.", json!({"type": "integer", "minimum": 1})).build())
                .response("200", ok_json("The template."))
                .response("404", error_ref()),
        ),
        (
            "/plan-templates/{templateId}".into(),
            Put,
            plan_roles("putPlanTemplate", "Change a plan template", "A new version of the template: `{title, category, levels: {blue, yellow, orange, red}, contacts}`.")
                .parameter(text_path("templateId", "The template's id."))
                .request_body(Some(json_body("The template.")))
                .response("200", ok_json("Its version."))
                .response("415", error_ref()),
        ),
        (
            "/sensor-types".into(),
            Get,
            read(op("Plans", "getSensorTypes", "Sensor types", "Every type with its unit, thresholds per level, hysteresis and periods."))
                .response("200", ok_json("The types.")),
        ),
        (
            "/sensor-types".into(),
            Post,
            plan_roles("postSensorTypes", "Load sensor types",
                "A CSV `type_id,family,name,unit,warn_above,alarm_above` (or `_below`; optional mapping, blue..red, hysteresis, clear_after_s, silent_after_s), all or nothing.")
                .request_body(Some(RequestBodyBuilder::new().description(Some("The CSV.")).required(Some(Required::True)).content("text/csv", text()).build()))
                .response("200", ok_json("How many were read and changed."))
                .response("415", error_ref()),
        ),
        (
            "/sensor-types/{typeId}".into(),
            Get,
            read(op("Plans", "getSensorType", "One sensor type", "Its unit, thresholds per level, hysteresis and periods."))
                .parameter(int_path("typeId", "The type's id.", 1, 65535))
                .response("200", ok_json("The type."))
                .response("404", error_ref()),
        ),
        (
            "/sensor-types/{typeId}".into(),
            Put,
            plan_roles("putSensorType", "Change a sensor type", "`{name, unit, family, warn, alarm, direction, mapping, thresholds, hysteresis, clear_after_s, silent_after_s}`.")
                .parameter(int_path("typeId", "The type's id.", 1, 65535))
                .request_body(Some(json_body("The type.")))
                .response("200", ok_json("The type."))
                .response("415", error_ref()),
        ),
    ]
}

fn op(tag: &str, id: &str, summary: &str, description: &str) -> OperationBuilder {
    OperationBuilder::new()
        .tag(tag)
        .operation_id(Some(id))
        .summary(Some(summary))
        .description(Some(description))
        .response("400", error_ref())
        .response("500", error_ref())
}

/// A write: the key and the roles that may, and the answers of the admission limits.
fn edit(id: &str, summary: &str, description: &str) -> OperationBuilder {
    let roles: Vec<&str> = Role::ALL
        .into_iter()
        .filter(|r| r.allows(Action::EditFeatures))
        .map(Role::name)
        .collect();
    let description = format!(
        "{description} Needs a key with the role {}.",
        roles.join(" or ")
    );
    op("Edits", id, summary, &description)
        .security(SecurityRequirement::new(BEARER, Vec::<String>::new()))
        .response("401", error_ref())
        .response("403", error_ref())
        .response("422", error_ref())
        .response("503", error_ref())
        .response("507", error_ref())
}

/// An operation that needs a key whose role allows `action`.
fn keyed(
    tag: &str,
    action: Action,
    id: &str,
    summary: &str,
    description: &str,
) -> OperationBuilder {
    let roles: Vec<&str> = Role::ALL
        .into_iter()
        .filter(|r| r.allows(action))
        .map(Role::name)
        .collect();
    let description = format!(
        "{description} Needs a key with the role {}.",
        roles.join(" or ")
    );
    op(tag, id, summary, &description)
        .security(SecurityRequirement::new(BEARER, Vec::<String>::new()))
        .response("401", error_ref())
        .response("403", error_ref())
        .response("422", error_ref())
        .response("503", error_ref())
}

/// The body of an upload: the file.
fn upload_body() -> utoipa::openapi::request_body::RequestBody {
    let mut b = RequestBodyBuilder::new()
        .description(Some(
            "The file itself, at most 2 GiB; or a form with the file in its part `file` (what it is from the part's Content-Type, else its file name) and the query's options as text fields.",
        ))
        .required(Some(Required::True));
    for mt in [
        GEOJSON,
        "text/csv",
        "application/zip",
        "application/geopackage+sqlite3",
        "application/flatgeobuf",
        "application/octet-stream",
    ] {
        b = b.content(mt, binary());
    }
    let form = ContentBuilder::new()
        .schema(schema(json!({
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary"},
                "crs": {"type": "string"}, "encoding": {"type": "string"},
                "mode": {"type": "string", "enum": ["upsert", "replace"]},
                "map": {"type": "string"}, "source_layer": {"type": "string"},
                "dry_run": {"type": "boolean"}, "skip_invalid": {"type": "boolean"},
                "lon_column": {"type": "string"}, "lat_column": {"type": "string"}
            }
        })))
        .build();
    b = b.content("multipart/form-data", form);
    b.build()
}

fn report_response(description: &str) -> utoipa::openapi::response::Response {
    ResponseBuilder::new()
        .description(description)
        .content(JSON, any_json())
        .build()
}

/// `GET .../items`, generic (`layer` None) or for one layer.
fn items_get(
    f: &ApiFacts<'_>,
    read: impl Fn(OperationBuilder) -> OperationBuilder,
    layer: Option<&LayerDef>,
) -> OperationBuilder {
    let limits = Limits::default();
    let (id, summary) = match layer {
        None => ("getFeatures".to_string(), "Features of a layer".to_string()),
        Some(l) => (
            format!("getFeatures_{}", l.name),
            format!("Features of {}", l.title),
        ),
    };
    let mut op = read(op(
        "Data",
        &id,
        &summary,
        "Features in fid order (or `sortby`), paged by `limit` and `offset` with `next` and \
         `prev` links; `numberMatched` counts every match. Filters combine: `bbox`, \
         `property=value` on declared properties, and a CQL2 `filter`.",
    ));
    if layer.is_none() {
        op = op.parameter(collection_id(f));
    }
    let crs_uris: Vec<&str> = Crs::supported().iter().map(Crs::uri).collect();
    op = op
        .parameter(query(
            "bbox",
            "Only features whose geometry intersects this box: lower-left and upper-right \
             corners in WGS 84 lon/lat (CRS84), `minLon,minLat,maxLon,maxLat`, or 6 numbers \
             with heights (ignored). A box whose west edge is east of its east edge crosses \
             the antimeridian.",
            json!({"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}}),
        ).style(Some(ParameterStyle::Form)).explode(Some(false)).build())
        .parameter(query(
            "bbox-crs",
            "The CRS of `bbox` (its corners then in the CRS's axis order: EPSG:4326 is \
             latitude first, the Gauss–Krüger zones northing first).",
            json!({"type": "string", "format": "uri", "enum": crs_uris, "default": Crs::CRS84.uri()}),
        ).build())
        .parameter(crs_param())
        .parameter(query(
            "datetime",
            "A date-time or interval (RFC 3339, `..` for open ends). No layer has a temporal \
             property, so any valid value matches every feature.",
            json!({"type": "string"}),
        ).build())
        .parameter(query(
            "limit",
            "How many features per page.",
            json!({"type": "integer", "minimum": 0, "maximum": f.max_limit, "default": f.default_limit}),
        ).style(Some(ParameterStyle::Form)).explode(Some(false)).build())
        .parameter(query(
            "offset",
            "How many matching features to skip.",
            json!({"type": "integer", "minimum": 0, "default": 0}),
        ).build())
        .parameter(query(
            "filter",
            &format!(
                "A CQL2 expression (OGC API – Features Part 3): comparisons, LIKE, BETWEEN, \
                 IN, IS NULL, CASEI, ACCENTI, S_INTERSECTS, S_WITHIN, S_CONTAINS, and \
                 S_DWITHIN in metres (geodesic). At most {} bytes, {} nodes, {} levels of \
                 nesting, {} vertices of literal geometries, and S_DWITHIN distances up to \
                 {} m.",
                limits.max_bytes, limits.max_nodes, limits.max_depth, limits.max_vertices, limits.max_distance_m
            ),
            json!({"type": "string", "maxLength": limits.max_bytes}),
        ).build())
        .parameter(query(
            "filter-lang",
            "The language of `filter`: CQL2 text (the default) or CQL2 JSON. `cql-text` and \
             `cql-json`, the names of the drafts, are read as CQL2.",
            json!({"type": "string", "enum": ["cql2-text", "cql2-json", "cql-text", "cql-json"], "default": "cql2-text"}),
        ).build())
        .parameter(query(
            "filter-crs",
            "The CRS of the geometries in `filter` (axis order as the CRS defines it: \
             EPSG:4326 is latitude first).",
            json!({"type": "string", "format": "uri", "enum": crs_uris, "default": Crs::CRS84.uri()}),
        ).build())
        .parameter(query(
            "sortby",
            "Properties to sort by, comma-separated, each with `+` (ascending, the default) or \
             `-` (descending); ties in fid order.",
            json!({"type": "array", "items": {"type": "string"}}),
        ).style(Some(ParameterStyle::Form)).explode(Some(false)).build())
        .parameter(query(
            "properties",
            "Only these properties in each feature, comma-separated.",
            json!({"type": "array", "items": {"type": "string"}}),
        ).style(Some(ParameterStyle::Form)).explode(Some(false)).build())
        .parameter(skip_geometry_param())
        .parameter(query(
            "f",
            "The format: GeoJSON.",
            json!({"type": "string", "enum": ["json", "geojson"]}),
        ).build());
    if let Some(l) = layer {
        op = op.parameter(
            query(
                &l.id_property,
                "Only the feature with this id.",
                json!({"type": "string"}),
            )
            .build(),
        );
        for p in &l.properties {
            op = op.parameter(
                query(
                    &p.name,
                    &format!(
                        "Only features whose {} equals this value.",
                        p.title.as_deref().unwrap_or(&p.name)
                    ),
                    Value::Object(crate::query::filter::property_schema(p)),
                )
                .build(),
            );
        }
    }
    op.response(
        "200",
        ResponseBuilder::new()
            .description("A page of features (GeoJSON FeatureCollection).")
            .content(
                GEOJSON,
                ContentBuilder::new()
                    .schema(Ref::from_schema_name("featureCollectionGeoJSON"))
                    .build(),
            )
            .build(),
    )
    .response("404", error_ref())
}

/// A schema from its JSON. The schemas are literals of this file (and a property's
/// bounds), so a schema utoipa's model cannot hold is a bug of this file: debug builds
/// (the tests) check that nothing was lost on the way; release builds log it and
/// describe the value as any object rather than failing the request.
fn schema(v: Value) -> RefOr<Schema> {
    match serde_json::from_value::<Schema>(v.clone()) {
        Ok(s) => {
            debug_assert_eq!(
                numbers_as_f64(serde_json::to_value(&s).unwrap_or_default()),
                numbers_as_f64(v),
                "utoipa's model lost part of a schema"
            );
            RefOr::T(s)
        }
        Err(e) => {
            tracing::error!(error = %e, "an OpenAPI schema of src/api/openapi.rs does not parse");
            RefOr::T(Schema::Object(Default::default()))
        }
    }
}

/// `v` with every number as a float (utoipa keeps bounds as f64: 10000 comes back as
/// 10000.0).
fn numbers_as_f64(v: Value) -> Value {
    match v {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        v => v,
    }
}

fn query(name: &str, description: &str, s: Value) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema(s)))
}

/// The parameters the distance queries share with `items`.
fn limit_param(f: &ApiFacts<'_>) -> Parameter {
    query("limit", "How many features per page.", json!({"type": "integer", "minimum": 0, "maximum": f.max_limit, "default": f.default_limit})).build()
}

fn offset_param() -> Parameter {
    query(
        "offset",
        "How many features to skip.",
        json!({"type": "integer", "minimum": 0, "default": 0}),
    )
    .build()
}

fn and_filter_param() -> Parameter {
    query(
        "filter",
        "A CQL2 expression the features must also match (as on `items`).",
        json!({"type": "string", "maxLength": Limits::default().max_bytes}),
    )
    .build()
}

fn filter_lang_param() -> Parameter {
    query("filter-lang", "The language of `filter`.", json!({"type": "string", "enum": ["cql2-text", "cql2-json", "cql-text", "cql-json"], "default": "cql2-text"})).build()
}

/// `skipGeometry` (as pygeoapi and OGC API – Records name it): features without their
/// geometry, for lists of ids and properties.
fn skip_geometry_param() -> Parameter {
    query(
        "skipGeometry",
        "`true`: each feature's `geometry` is null (a list of ids and properties, without \
         coordinates).",
        json!({"type": "boolean", "default": false}),
    )
    .build()
}

fn near_properties_param() -> Parameter {
    query(
        "properties",
        "Only these properties in each feature (and `distance_m`), comma-separated.",
        json!({"type": "array", "items": {"type": "string"}}),
    )
    .style(Some(ParameterStyle::Form))
    .explode(Some(false))
    .build()
}

/// `crs`: the CRS of the answer's geometries (OGC API – Features Part 2).
fn crs_param() -> Parameter {
    let crs_uris: Vec<&str> = Crs::supported().iter().map(Crs::uri).collect();
    query(
        "crs",
        "The CRS of the geometries in the answer, in its axis order (EPSG:4326 latitude \
         first), transformed by PROJ position by position; the answer's `Content-Crs` \
         names it.",
        json!({"type": "string", "format": "uri", "enum": crs_uris, "default": Crs::CRS84.uri()}),
    )
    .build()
}

fn f_param(values: &[&str]) -> Parameter {
    query(
        "f",
        "The format, instead of `Accept`.",
        json!({"type": "string", "enum": values}),
    )
    .build()
}

fn collection_id(f: &ApiFacts<'_>) -> Parameter {
    let names: Vec<&str> = f.layers.iter().map(|l| l.name.as_str()).collect();
    ParameterBuilder::new()
        .name("collectionId")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The layer's name."))
        .schema(Some(schema(json!({"type": "string", "enum": names}))))
        .build()
}

fn feature_id() -> Parameter {
    ParameterBuilder::new()
        .name("featureId")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The feature's id."))
        .schema(Some(schema(json!({"type": "string", "minLength": 1}))))
        .build()
}

fn if_match() -> Parameter {
    ParameterBuilder::new()
        .name("If-Match")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some("The strong ETag of the version the change is based on; 412 if the feature changed since."))
        .schema(Some(schema(json!({"type": "string"}))))
        .build()
}

fn tile_layers(f: &ApiFacts<'_>) -> Parameter {
    let names: Vec<&str> = f.layers.iter().map(|l| l.name.as_str()).collect();
    ParameterBuilder::new()
        .name("layers")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(format!(
            "Layer names, comma-separated, each once, at most {} (of: {}).",
            f.max_layers_per_tile,
            names.join(", ")
        )))
        .schema(Some(schema(
            json!({"type": "string", "pattern": "^[a-z][a-z0-9_]*(,[a-z][a-z0-9_]*)*$"}),
        )))
        .build()
}

fn int_path(name: &str, description: &str, min: u64, max: u64) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema(
            json!({"type": "integer", "minimum": min, "maximum": max}),
        )))
        .build()
}

fn feature_body(f: &ApiFacts<'_>, description: &str) -> utoipa::openapi::request_body::RequestBody {
    let content = || {
        ContentBuilder::new()
            .schema(Ref::from_schema_name("featureGeoJSON"))
            .build()
    };
    RequestBodyBuilder::new()
        .description(Some(format!(
            "{description} At most {} bytes.",
            f.max_body_bytes
        )))
        .required(Some(Required::True))
        .content(GEOJSON, content())
        .content(JSON, content())
        .build()
}

fn feature_response(description: &str) -> utoipa::openapi::response::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            GEOJSON,
            ContentBuilder::new()
                .schema(Ref::from_schema_name("featureGeoJSON"))
                .build(),
        )
        .build()
}

fn json_response(description: &str, schema_name: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        JSON,
        ContentBuilder::new()
            .schema(Ref::from_schema_name(schema_name))
            .build(),
    )
}

fn error_ref() -> RefOr<utoipa::openapi::response::Response> {
    RefOr::Ref(Ref::new(PROBLEM))
}

fn any_json() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(schema(json!({"type": "object"})))
        .build()
}

fn html() -> utoipa::openapi::Content {
    text()
}

fn text() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(schema(json!({"type": "string"})))
        .build()
}

fn binary() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(schema(json!({"type": "string", "format": "binary"})))
        .build()
}

/// The schemas of the answers (after the OGC API – Features Part 1 building blocks),
/// the error answer, and the key.
fn components() -> utoipa::openapi::Components {
    let link = json!({
        "type": "object", "required": ["href", "rel"],
        "properties": {
            "href": {"type": "string", "format": "uri"}, "rel": {"type": "string"},
            "type": {"type": "string"}, "title": {"type": "string"}
        }
    });
    let links = || json!({"type": "array", "items": {"$ref": "#/components/schemas/link"}});
    let geometry = json!({
        "type": "object", "required": ["type"], "nullable": true,
        "properties": {
            "type": {"type": "string", "enum": ["Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"]},
            "coordinates": {"type": "array", "items": {"$ref": "#/components/schemas/coordinates"}}
        }
    });
    let feature = json!({
        "type": "object", "required": ["type", "geometry", "properties"],
        "properties": {
            "type": {"type": "string", "enum": ["Feature"]},
            "id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "geometry": {"$ref": "#/components/schemas/geometryGeoJSON"},
            "properties": {"type": "object", "nullable": true},
            "links": links()
        }
    });
    let collection = json!({
        "type": "object", "required": ["id", "links"],
        "properties": {
            "id": {"type": "string"}, "title": {"type": "string"}, "description": {"type": "string"},
            "links": links(),
            "extent": {"type": "object"},
            "itemType": {"type": "string"},
            "crs": {"type": "array", "items": {"type": "string"}},
            "storageCrs": {"type": "string"}
        }
    });
    let mut schemas: BTreeMap<&str, Value> = BTreeMap::new();
    schemas.insert("link", link);
    schemas.insert(
        "landingPage",
        json!({"type": "object", "required": ["links"], "properties": {
            "title": {"type": "string"}, "description": {"type": "string"}, "links": links()}}),
    );
    schemas.insert(
        "confClasses",
        json!({"type": "object", "required": ["conformsTo"], "properties": {
            "conformsTo": {"type": "array", "items": {"type": "string"}}}}),
    );
    schemas.insert("collection", collection);
    schemas.insert(
        "collections",
        json!({"type": "object", "required": ["links", "collections"], "properties": {
            "links": links(),
            "collections": {"type": "array", "items": {"$ref": "#/components/schemas/collection"}}}}),
    );
    schemas.insert("geometryGeoJSON", geometry);
    // A number of a position, or an array of them, nested as deep as the type needs.
    schemas.insert(
        "coordinates",
        json!({"oneOf": [{"type": "number"}, {"type": "array", "items": {"$ref": "#/components/schemas/coordinates"}}]}),
    );
    schemas.insert("featureGeoJSON", feature);
    schemas.insert(
        "featureCollectionGeoJSON",
        json!({"type": "object", "required": ["type", "features"], "properties": {
            "type": {"type": "string", "enum": ["FeatureCollection"]},
            "features": {"type": "array", "items": {"$ref": "#/components/schemas/featureGeoJSON"}},
            "links": links(),
            "timeStamp": {"type": "string", "format": "date-time"},
            "numberMatched": {"type": "integer", "minimum": 0},
            "numberReturned": {"type": "integer", "minimum": 0}}}),
    );
    schemas.insert(
        "exception",
        json!({"type": "object", "required": ["status", "code", "description"], "properties": {
            "status": {"type": "integer"},
            "code": {"type": "string", "description": "What went wrong, as a word: InvalidParameterValue, NotFound, Unauthorized..."},
            "description": {"type": "string", "description": "What went wrong and what to do, naming the parameter or field at fault."}}}),
    );
    let mut c = ComponentsBuilder::new();
    for (name, s) in schemas {
        c = c.schema(name, schema(s));
    }
    c.response(
        "Error",
        ResponseBuilder::new()
            .description("An error: the parameter or field at fault and what to do.")
            .content(
                JSON,
                ContentBuilder::new()
                    .schema(Ref::from_schema_name("exception"))
                    .build(),
            )
            .build(),
    )
    .security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API key (`riskmap keys add --role ROLE`), as `Authorization: Bearer KEY`.",
                ))
                .build(),
        ),
    )
    .build()
}

/// The document as an HTML page: each operation with its parameters and their limits.
pub fn html_page(doc: &OpenApi) -> String {
    let mut out = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>riskmap API</title>\
         <style>body{font:14px/1.4 system-ui,sans-serif;margin:2em;max-width:70em}\
         table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}\
         code{background:#f4f4f4}h2{margin-top:2em}</style></head><body>",
    );
    out += &format!(
        "<h1>riskmap {}</h1><p>{}</p><p>The machine-readable document: <a href=\"api\">/api</a> (OpenAPI 3.0).</p>",
        esc(&doc.info.version),
        esc(doc.info.description.as_deref().unwrap_or(""))
    );
    for (path, item) in &doc.paths.paths {
        for (method, op) in &item.operations {
            let m = serde_json::to_value(method)
                .ok()
                .and_then(|v| v.as_str().map(str::to_uppercase))
                .unwrap_or_default();
            out += &format!(
                "<h2><code>{} {}</code></h2><p><b>{}</b>. {}</p>",
                esc(&m),
                esc(path),
                esc(op.summary.as_deref().unwrap_or("")),
                esc(op.description.as_deref().unwrap_or(""))
            );
            if let Some(params) = &op.parameters {
                out += "<table><tr><th>parameter</th><th>in</th><th>schema</th><th>description</th></tr>";
                for p in params {
                    let v = serde_json::to_value(p).unwrap_or(Value::Null);
                    out += &format!(
                        "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                        esc(v["name"].as_str().unwrap_or("")),
                        esc(v["in"].as_str().unwrap_or("")),
                        esc(&v["schema"].to_string()),
                        esc(v["description"].as_str().unwrap_or(""))
                    );
                }
                out += "</table>";
            }
            let codes: Vec<&str> = op.responses.responses.keys().map(String::as_str).collect();
            out += &format!("<p>Answers: {}</p>", esc(&codes.join(", ")));
        }
    }
    out += "</body></html>";
    out
}

/// Text for HTML (the document holds layer titles and property names from layer files).
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}
