//! File uploads: `POST /collections/{layer}/imports` (role `importer` or `admin`),
//! `GET /imports/{id}` and `GET /imports`. The body is the file itself, its
//! `Content-Type` saying what it is (checked against the bytes), or a multipart form
//! with the file in its part `file` and options in text fields. The work is
//! `App::import_upload`; this module streams the body to the upload's own directory
//! (refusing it with 413 past [`MAX_UPLOAD_BYTES`], before reading it all when
//! `Content-Length` says so), parses the options, and answers the report.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use super::error::ApiError;
use super::{auth, blocking};
use crate::app::App;
use crate::ingest::{
    self, Format, ImportCrs, ImportOptions, IngestError, Mode, TextEncoding, WorkDir,
};
use crate::model::Action;

/// Largest upload accepted: the city's 4.52 M-row sensor CSV is about 250 MB.
pub const MAX_UPLOAD_BYTES: u64 = 2 << 30;

/// The query parameters of an upload.
const UPLOAD_PARAMS: [&str; 10] = [
    "crs",
    "encoding",
    "mode",
    "map",
    "source_layer",
    "dry_run",
    "skip_invalid",
    "lon_column",
    "lat_column",
    "f",
];

fn too_large(what: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", what)
}

fn parse_options(
    query: Option<&str>,
    form: &[(String, String)],
) -> Result<ImportOptions, ApiError> {
    parse_options_with(query, form, &[], &mut |_, _| Ok(()))
}

/// [`parse_options`], also taking the parameters `extra` (handed to `other`). `form`:
/// the text fields of a multipart form, taken as parameters too (one given both ways
/// is given twice).
fn parse_options_with(
    query: Option<&str>,
    form: &[(String, String)],
    extra: &[&str],
    other: &mut dyn FnMut(&str, String) -> Result<(), ApiError>,
) -> Result<ImportOptions, ApiError> {
    let mut opts = ImportOptions::default();
    let mut seen: HashMap<String, ()> = HashMap::new();
    let mut pairs = form_urlencoded_pairs(query.unwrap_or(""));
    pairs.extend(form.iter().cloned());
    for (k, v) in pairs {
        if extra.contains(&k.as_str()) {
            if seen.insert(k.clone(), ()).is_some() {
                return Err(ApiError::bad_request(format!(
                    "parameter {k:?} is given twice"
                )));
            }
            other(&k, v)?;
            continue;
        }
        if !UPLOAD_PARAMS.contains(&k.as_str()) {
            let mut all: Vec<&str> = UPLOAD_PARAMS.to_vec();
            all.extend_from_slice(extra);
            return Err(ApiError::bad_request(format!(
                "unknown parameter {k:?}; this takes {}",
                all.join(", ")
            )));
        }
        if seen.insert(k.clone(), ()).is_some() {
            return Err(ApiError::bad_request(format!(
                "parameter {k:?} is given twice"
            )));
        }
        let bool_of = |v: &str| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ApiError::bad_request(format!(
                "{k} must be true or false, not {v:?}"
            ))),
        };
        match k.as_str() {
            "crs" => {
                let crs = ImportCrs::parse(&v).map_err(|e| ApiError::bad_request(format!("crs: {e}")))?;
                // Known to PROJ (its database, no network): else 400 now, not 422 later.
                ingest::crs::ToWgs84::new(crs).map_err(|e| ApiError::bad_request(format!("crs: {e}")))?;
                opts.crs = Some(crs);
            }
            "encoding" => {
                opts.encoding = Some(TextEncoding::parse(&v).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "encoding: {v:?} is not an encoding riskmap reads (UTF-8, GBK, GB18030, Big5, ISO-8859-1)"
                    ))
                })?)
            }
            "mode" => {
                opts.mode = Mode::parse(&v).ok_or_else(|| {
                    ApiError::bad_request(format!("mode: {v:?}; it is upsert or replace"))
                })?
            }
            "map" => opts.map = ingest::parse_map(&v).map_err(|e| ApiError::bad_request(format!("map: {e}")))?,
            "source_layer" => opts.source_layer = Some(v),
            "dry_run" => opts.dry_run = bool_of(&v)?,
            "skip_invalid" => opts.skip_invalid = bool_of(&v)?,
            "lon_column" => opts.lon_column = Some(v),
            "lat_column" => opts.lat_column = Some(v),
            _ => {}
        }
    }
    Ok(opts)
}

/// `a=1&b=%E5%90%8D` into pairs, percent- and plus-decoded (map= carries Chinese names).
fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(b[i + 1]), hex(b[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The parts of an upload request both endpoints share: the file's claimed format and
/// the body, received into a new directory of the upload's own.
/// An upload as received: its directory, the file, what the client says the file is,
/// and the text fields of a multipart form (options given beside the file).
struct Received {
    work: WorkDir,
    file: std::path::PathBuf,
    claim: ingest::Claim,
    form: Vec<(String, String)>,
}

impl Received {
    /// The options of `opts` that come from the upload itself.
    fn apply(&self, opts: &mut ImportOptions) {
        opts.claim = Some(self.claim);
        opts.work_parent = Some(self.work.path().to_path_buf());
    }
}

/// Most bytes a multipart form's text field may hold, and all of them together.
const MAX_FORM_FIELD: u64 = 64 << 10;
const MAX_FORM_FIELDS: usize = 32;

fn unsupported_media_type(ct: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        format!(
            "Content-Type {ct:?} is not a format riskmap imports: application/geo+json, text/csv, application/zip (a zipped shapefile), application/geopackage+sqlite3, application/flatgeobuf, application/octet-stream to go by the bytes, or multipart/form-data with the file in a part named \"file\""
        ),
    )
}

/// Receives the body: the file itself, or a multipart form (`curl -F file=@x.zip`) whose
/// part `file` is the file (what it is from the part's `Content-Type`, else its file
/// name's extension, else its bytes) and whose text fields are options.
async fn receive_upload(
    app: &Arc<App>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Received, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let multipart = ct
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"));
    let claim = if multipart {
        None
    } else {
        Some(Format::from_media_type(ct).ok_or_else(|| unsupported_media_type(ct))?)
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > MAX_UPLOAD_BYTES {
            return Err(too_large(format!(
                "the upload is {len} bytes; at most {MAX_UPLOAD_BYTES} are accepted"
            )));
        }
    }
    let parent = app.upload_dir();
    let work = blocking(move || {
        std::fs::create_dir_all(&parent)
            .map_err(|e| ApiError::internal("creating the upload directory", e))?;
        WorkDir::new(Some(&parent))
            .map_err(|e| ApiError::internal("creating the upload directory", e))
    })
    .await?;
    let file = work.path().join("body");
    let (claim, form) = match claim {
        Some(claim) => {
            receive(body, &file).await?;
            (claim, Vec::new())
        }
        None => receive_form(ct, body, &file).await?,
    };
    Ok(Received {
        work,
        file,
        claim,
        form,
    })
}

/// Reads a multipart form: its part `file` into `to`, its text fields returned.
async fn receive_form(
    ct: &str,
    body: Body,
    to: &std::path::Path,
) -> Result<(ingest::Claim, Vec<(String, String)>), ApiError> {
    let boundary = multer::parse_boundary(ct).map_err(|_| {
        ApiError::bad_request("Content-Type multipart/form-data needs its boundary parameter")
    })?;
    let limits = multer::SizeLimit::new()
        .whole_stream(MAX_UPLOAD_BYTES + MAX_FORM_FIELD * MAX_FORM_FIELDS as u64)
        .per_field(MAX_FORM_FIELD)
        .for_field("file", MAX_UPLOAD_BYTES);
    let mut form = multer::Multipart::with_constraints(
        body.into_data_stream(),
        boundary,
        multer::Constraints::new().size_limit(limits),
    );
    let form_error = |e: multer::Error| match e {
        multer::Error::FieldSizeExceeded { field_name, .. } => too_large(format!(
            "form field {:?} is larger than allowed ({} bytes for the file, {MAX_FORM_FIELD} for others)",
            field_name.unwrap_or_default(),
            MAX_UPLOAD_BYTES
        )),
        multer::Error::StreamSizeExceeded { .. } => too_large(format!(
            "the upload is larger than {MAX_UPLOAD_BYTES} bytes"
        )),
        other => ApiError::bad_request(format!("the multipart form cannot be read: {other}")),
    };
    let mut claim = None;
    let mut fields: Vec<(String, String)> = Vec::new();
    while let Some(mut field) = form.next_field().await.map_err(form_error)? {
        let name = field.name().unwrap_or("").to_string();
        if name != "file" {
            if fields.len() == MAX_FORM_FIELDS {
                return Err(ApiError::bad_request(format!(
                    "the form has more than {MAX_FORM_FIELDS} fields"
                )));
            }
            if field.file_name().is_some() {
                return Err(ApiError::bad_request(format!(
                    "form part {name:?} is a file: the file goes in the part named \"file\", options in text fields"
                )));
            }
            let text = field.text().await.map_err(form_error)?;
            fields.push((name, text));
            continue;
        }
        if claim.is_some() {
            return Err(ApiError::bad_request(
                "the form has two parts named \"file\": one upload is one file",
            ));
        }
        let by_type = field
            .content_type()
            .map(|m| m.essence_str().to_string())
            .filter(|m| m != "application/octet-stream");
        claim = Some(match by_type {
            Some(m) => Format::from_media_type(&m).ok_or_else(|| unsupported_media_type(&m))?,
            None => field
                .file_name()
                .and_then(|n| Format::from_extension(std::path::Path::new(n)))
                .unwrap_or(ingest::Claim::Any),
        });
        let mut out = UploadFile::create(to).await?;
        while let Some(chunk) = field.chunk().await.map_err(form_error)? {
            out.write(&chunk).await?;
        }
        out.finish("the form's part \"file\" is empty").await?;
    }
    let claim = claim.ok_or_else(|| {
        ApiError::bad_request(
            "the form has no part named \"file\": send the file in it (curl -F file=@data.zip)",
        )
    })?;
    Ok((claim, fields))
}

fn too_many_uploads() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "TooManyUploads",
        format!(
            "{} uploads are being imported; try again shortly",
            crate::app::MAX_UPLOADS
        ),
    )
    .with_header(header::RETRY_AFTER, "10")
}

/// `POST /collections?name=&kind=reference` (admin): a new layer from a file.
pub async fn create_layer(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (a, h) = (app.clone(), headers.clone());
    let actor =
        blocking(move || auth::require(&a, &h, Action::Administer).map(|k| k.actor())).await?;
    let (mut name, mut kind, mut title, mut id_property) = (None, None, None, None);
    const LAYER_PARAMS: [&str; 4] = ["name", "kind", "title", "id_property"];
    let mut opts = parse_options_with(query.as_deref(), &[], &LAYER_PARAMS, &mut |k, v| {
        match k {
            "name" => name = Some(v),
            "kind" => kind = Some(v),
            "title" => title = Some(v),
            _ => id_property = Some(v),
        }
        Ok(())
    })?;
    let name = name.ok_or_else(|| {
        ApiError::bad_request(
            "name is required: the new layer's name (lower-case letters, digits and _)",
        )
    })?;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !["gpkg_", "rtree_", "sqlite_", "riskmap_"]
            .iter()
            .any(|p| name.starts_with(p));
    if !valid {
        return Err(ApiError::bad_request(format!(
            "name {name:?}: use lower-case letters, digits and _, starting with a letter (at most 63; not gpkg_, rtree_, sqlite_ or riskmap_)"
        )));
    }
    let kind = match kind.as_deref() {
        None | Some("reference") => crate::model::LayerKind::Reference,
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "kind {k:?}: layers created from files are reference layers (kind=reference); risk points, pipelines and sensors have the fixed schemas of their layer files"
            )));
        }
    };
    let title = title.unwrap_or_else(|| name.clone());
    let id_property = id_property.unwrap_or_else(|| "id".into());
    opts.actor = actor;
    opts.mode = Mode::Upsert;
    if opts.dry_run {
        return Err(ApiError::bad_request(
            "dry_run: a layer is created for real or not at all; try the file with a dry run into an existing layer",
        ));
    }
    let Some(slot) = app.upload_slot() else {
        return Err(too_many_uploads());
    };
    let received = receive_upload(&app, &headers, body).await?;
    if !received.form.is_empty() {
        if let Some((k, _)) = received
            .form
            .iter()
            .find(|(k, _)| LAYER_PARAMS.contains(&k.as_str()))
        {
            return Err(ApiError::bad_request(format!(
                "{k}: the new layer's {} go in the query string; a form's fields are import options",
                LAYER_PARAMS.join(", ")
            )));
        }
        let mut o = parse_options_with(
            query.as_deref(),
            &received.form,
            &LAYER_PARAMS,
            &mut |_, _| Ok(()),
        )?;
        o.actor = std::mem::take(&mut opts.actor);
        o.mode = Mode::Upsert;
        if o.dry_run {
            return Err(ApiError::bad_request(
                "dry_run: a layer is created for real or not at all; try the file with a dry run into an existing layer",
            ));
        }
        opts = o;
    }
    received.apply(&mut opts);
    let Received { work, file, .. } = received;
    opts.source_name = Some(format!("new layer {name}"));
    let (app2, name2) = (app.clone(), name.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        opts.parse_at_idle = true;
        let r = app2.create_layer(&name2, &title, kind, &id_property, &file, opts);
        drop(work);
        r
    })
    .await?;
    let outcome = outcome.map_err(|e| match e {
        crate::app::CreateLayerError::Exists(_) => {
            ApiError::new(StatusCode::CONFLICT, "Conflict", e.to_string())
        }
        crate::app::CreateLayerError::Schema(m) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "UnusableSchema", m)
        }
        crate::app::CreateLayerError::Ingest(i) => ingest_error(i),
        crate::app::CreateLayerError::Store(s) => s.into(),
        other => ApiError::internal("creating a layer", other),
    })?;
    let mut body = serde_json::to_value(&outcome.report).unwrap_or(Json::Null);
    if outcome.status == 422 {
        body["status"] = json!(422);
        body["code"] = json!("ImportRejected");
        body["description"] = json!(format!(
            "{} of {} features refused; the layer was not created",
            body["rejected"], body["features"]
        ));
    } else {
        body["collection"] = json!(format!("/collections/{name}"));
    }
    let mut resp = (
        StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::OK),
        axum::Json(body),
    )
        .into_response();
    if outcome.status == 201 {
        if let Ok(v) = format!("/collections/{name}").parse() {
            resp.headers_mut().insert(header::LOCATION, v);
        }
    }
    Ok(resp)
}

/// `DELETE /collections/{name}` (admin): removes a layer created from an upload.
pub async fn delete_layer(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let a = app.clone();
    blocking(move || {
        auth::require(&a, &headers, Action::Administer)?;
        a.remove_layer(&name).map_err(|e| match e {
            crate::app::CreateLayerError::Missing(_) => ApiError::not_found(e.to_string()),
            crate::app::CreateLayerError::NotUploaded(_) => {
                ApiError::new(StatusCode::CONFLICT, "Conflict", e.to_string())
            }
            crate::app::CreateLayerError::Store(s) => s.into(),
            other => ApiError::internal("removing a layer", other),
        })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /collections/{layer}/imports`.
pub async fn upload(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(layer) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (a, h) = (app.clone(), headers.clone());
    let actor =
        blocking(move || auth::require(&a, &h, Action::ImportFiles).map(|k| k.actor())).await?;
    if app.layer(&layer).is_none() {
        return Err(ApiError::not_found(format!("no layer named {layer:?}")));
    }
    // Checked before the body is read; again with a form's fields once it is.
    let mut opts = parse_options(query.as_deref(), &[])?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|k| !k.is_empty() && k.len() <= 255);
            Some(
                k.ok_or_else(|| {
                    ApiError::bad_request(
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    )
                })?
                .to_string(),
            )
        }
    };
    let Some(slot) = app.upload_slot() else {
        return Err(too_many_uploads());
    };
    let received = receive_upload(&app, &headers, body).await?;
    if !received.form.is_empty() {
        opts = parse_options(query.as_deref(), &received.form)?;
    }
    opts.actor = actor;
    received.apply(&mut opts);
    let Received { work, file, .. } = received;
    opts.source_name = Some(format!("upload to {layer}"));
    let app2 = app.clone();
    let layer2 = layer.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        // Reading and checking run at idle priority (`parse_at_idle`), holding the
        // store's writer at normal priority (an edit never waits on a starved thread).
        opts.parse_at_idle = true;
        let r = app2.import_upload(&layer2, &file, opts, key.as_deref());
        drop(work);
        r
    })
    .await?;
    let outcome = outcome.map_err(ingest_error)?;
    let (status, mut body) = match &outcome.replayed {
        Some(rec) => (
            rec.status,
            serde_json::from_str::<Json>(&rec.report).unwrap_or(Json::Null),
        ),
        None => (
            outcome.status,
            serde_json::to_value(&outcome.report).unwrap_or(Json::Null),
        ),
    };
    let id = body
        .get("id")
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_string();
    if status == 422 {
        body["status"] = json!(422);
        body["code"] = json!("ImportRejected");
        body["description"] = json!(format!(
            "{} of {} features refused; nothing was imported (fix them, or pass skip_invalid=true to import the valid ones)",
            body["rejected"], body["features"]
        ));
    }
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        axum::Json(body),
    )
        .into_response();
    if let Ok(v) = format!("/imports/{id}").parse() {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if outcome.replayed.is_some() {
        resp.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// Streams the body into `to`, refusing it past [`MAX_UPLOAD_BYTES`].
async fn receive(mut body: Body, to: &std::path::Path) -> Result<(), ApiError> {
    use http_body::Body as _;
    let mut out = UploadFile::create(to).await?;
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        let Some(frame) = frame else { break };
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("the upload was cut off: {e}")))?;
        if let Ok(data) = frame.into_data() {
            out.write(&data).await?;
        }
    }
    out.finish("the upload is empty: send the file as the request body")
        .await
}

/// An upload's file being written: refused past [`MAX_UPLOAD_BYTES`], and when empty.
struct UploadFile {
    out: tokio::fs::File,
    bytes: u64,
}

impl UploadFile {
    async fn create(to: &std::path::Path) -> Result<Self, ApiError> {
        let out = tokio::fs::File::create(to)
            .await
            .map_err(|e| ApiError::internal("writing the upload", e))?;
        Ok(UploadFile { out, bytes: 0 })
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), ApiError> {
        use tokio::io::AsyncWriteExt;
        self.bytes += data.len() as u64;
        if self.bytes > MAX_UPLOAD_BYTES {
            return Err(too_large(format!(
                "the upload is larger than {MAX_UPLOAD_BYTES} bytes"
            )));
        }
        self.out
            .write_all(data)
            .await
            .map_err(|e| ApiError::internal("writing the upload", e))
    }

    /// Flushes; `empty` is the refusal when nothing came.
    async fn finish(mut self, empty: &str) -> Result<(), ApiError> {
        use tokio::io::AsyncWriteExt;
        self.out
            .flush()
            .await
            .map_err(|e| ApiError::internal("writing the upload", e))?;
        if self.bytes == 0 {
            return Err(ApiError::bad_request(empty));
        }
        Ok(())
    }
}

fn ingest_error(e: IngestError) -> ApiError {
    match e {
        IngestError::TooLarge { message } => too_large(message),
        IngestError::Format { message, .. } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "UnreadableFile", message)
        }
        IngestError::Referenced { message } => {
            ApiError::new(StatusCode::CONFLICT, "Conflict", message)
        }
        IngestError::UnknownLayer { .. } => ApiError::not_found(e.to_string()),
        IngestError::Read { source, .. } => ApiError::internal("reading the upload", source),
        IngestError::Store(s) => s.into(),
    }
}

/// `GET /imports/{id}`: a kept report.
pub async fn one(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let a = app.clone();
    let rec = blocking(move || {
        auth::require(&a, &headers, Action::ImportFiles)?;
        Ok(a.store().import_record(&id)?)
    })
    .await?
    .ok_or_else(|| ApiError::not_found("no import with this id"))?;
    let mut body: Json = serde_json::from_str(&rec.report).unwrap_or(Json::Null);
    body["status"] = json!(rec.status);
    body["created"] = json!(rec.created);
    body["actor"] = json!(rec.actor);
    Ok(axum::Json(body).into_response())
}

/// `GET /imports?limit=&offset=`: the newest reports first, in summary.
pub async fn list(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (mut limit, mut offset) = (100u32, 0u64);
    for (k, v) in form_urlencoded_pairs(query.as_deref().unwrap_or("")) {
        match k.as_str() {
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| ApiError::bad_request("limit must be 1 to 1000"))?
            }
            "offset" => {
                offset = v
                    .parse()
                    .ok()
                    .filter(|o| *o <= 1_000_000_000)
                    .ok_or_else(|| ApiError::bad_request("offset must be 0 to 1000000000"))?
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {k:?}; /imports takes limit and offset"
                )));
            }
        }
    }
    let a = app.clone();
    let recs = blocking(move || {
        auth::require(&a, &headers, Action::ImportFiles)?;
        Ok(a.store().imports(limit, offset)?)
    })
    .await?;
    let items: Vec<Json> = recs
        .iter()
        .map(|r| {
            let rep: Json = serde_json::from_str(&r.report).unwrap_or(Json::Null);
            json!({
                "id": r.id, "created": r.created, "actor": r.actor, "layer": r.layer,
                "status": r.status, "file": rep["file"], "format": rep["source"]["format"],
                "features": rep["features"], "added": rep["added"], "updated": rep["updated"],
                "unchanged": rep["unchanged"], "deleted": rep["deleted"], "rejected": rep["rejected"],
                "dry_run": rep["dry_run"], "committed": rep["committed"],
                "href": format!("/imports/{}", r.id),
            })
        })
        .collect();
    Ok(axum::Json(json!({ "imports": items })).into_response())
}
