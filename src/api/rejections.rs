//! Requests refused before any route sees them (a request target or header section too
//! large), and the guarantee of the error policy (`error.rs`) for answers riskmap did
//! not write itself: any 4xx or 5xx without a JSON body (a rejection of axum or of a
//! tower layer) leaves as JSON `{"status", "code", "description"}` with `nosniff`.
//!
//! hyper answers a few requests itself, before any service: a head it cannot parse
//! (400), a request target over 65,534 bytes (414), a header section over its buffer
//! (about 400 KB) or with more than 100 fields (431). Those answers have empty bodies
//! that no service can change, so the limits below are set well inside hyper's: every
//! request a client can reasonably send that is refused for its size gets JSON. The
//! connection settings must keep hyper's limits above these (see `MAX_HEAD_BYTES`).

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Longest request target (path and query) accepted: nginx's and Apache's default
/// request-line limits are about the same (8 KiB); tile and item URLs are far shorter.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header fields in one request (browsers send about 20).
pub const MAX_HEADERS: usize = 64;
/// Largest header section (names, values and separators), as nginx's default 4 × 8 KiB.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The smallest request head that must reach the router for the limits above to be
/// answered in JSON: hyper's `max_buf_size` must be at least this (its default, about
/// 400 KB, is), and its `max_headers` at least [`MAX_HEADERS`] + 1 (default 100).
pub const MAX_HEAD_BYTES: usize = MAX_URI_BYTES + MAX_HEADER_BYTES + 1024;

// hyper's defaults, which the limits above must stay inside: 100 header fields, and
// a buffer of 8 KiB + 100 × 4 KiB (about 400 KB) for the head.
const _: () = assert!(MAX_HEADERS < 100 && MAX_HEAD_BYTES < 8192 + 4096 * 100);

/// The error bodies read back from an inner layer, at most (a rejection's text).
const MAX_REWRITTEN_BODY: usize = 4 * 1024;

/// Refuses oversized targets and header sections, then makes sure an error answer
/// is JSON.
pub async fn guard(req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "UriTooLong",
            format!("the request target is {target} bytes long, the limit is {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    let headers = req.headers();
    if headers.len() > MAX_HEADERS {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HeaderFieldsTooLarge",
            format!(
                "the request has {} header fields, the limit is {MAX_HEADERS}",
                headers.len()
            ),
        )
        .into_response();
    }
    // As on the wire: `name: value\r\n`.
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HeaderFieldsTooLarge",
            format!("the header section is {bytes} bytes, the limit is {MAX_HEADER_BYTES}"),
        )
        .into_response();
    }
    as_json(next.run(req).await).await
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| m == "application/json" || m.ends_with("+json"))
}

/// An error answer that is not JSON, rewritten as JSON with the same status and
/// headers; its text (axum's rejections say what was wrong) becomes the description.
async fn as_json(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&resp) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_REWRITTEN_BODY)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let description = text.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_string()
    });
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), %description, "an inner layer answered an error without JSON");
    }
    let mut out = ApiError::new(status, code(status), description).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().append(name, value.clone());
        }
    }
    out.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out
}

fn code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::REQUEST_TIMEOUT => "RequestTimeout",
        StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLarge",
        StatusCode::URI_TOO_LONG => "UriTooLong",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
        StatusCode::UNPROCESSABLE_ENTITY => "Unprocessable",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "HeaderFieldsTooLarge",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        s if s.is_server_error() => "InternalError",
        _ => "Error",
    }
}

/// Used by tests of the rewriting alone: an answer as an inner layer may give it.
#[cfg(test)]
fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = (status, text).into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn non_json_errors_become_json_keeping_status_headers_and_text() {
        let r = as_json(plain(
            StatusCode::BAD_REQUEST,
            "Failed to parse the request body",
        ))
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(r.headers()[header::ALLOW], "GET");
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["status"], 400);
        assert_eq!(v["code"], "BadRequest");
        assert_eq!(v["description"], "Failed to parse the request body");
        // Empty bodies get the reason phrase.
        let r = as_json(StatusCode::URI_TOO_LONG.into_response()).await;
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["code"], "UriTooLong");
        assert_eq!(v["description"], "URI Too Long");
        // Successes and JSON errors pass untouched.
        let ok = as_json((StatusCode::OK, "text").into_response()).await;
        assert_eq!(
            ok.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
}
