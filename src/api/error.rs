//! Error policy, in three lines:
//! 1. Every error is JSON `{"status", "code", "description"}` with `nosniff`; never HTML, and
//!    request text is never echoed into markup.
//! 2. Client mistakes are 4xx naming the field at fault; a busy store is 503 with `Retry-After`;
//!    a full disk is 507 `InsufficientStorage` and an I/O error under the store 503 `StoreIoError`
//!    (both name the store file and say what to do: they are faults of the machine an operator
//!    can fix, not bugs); an edit of a row the store holds in unreadable form is 409; anything
//!    else is a 500 whose detail goes to the log, not to the client.
//! 3. Handlers return `Result<_, ApiError>`; domain errors are mapped once, in the `From` impls here.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::EditError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            description: description.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    pub fn bad_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidParameterValue", d)
    }

    pub fn not_found(d: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", d)
    }

    pub fn unprocessable(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "InvalidFeature", d)
    }

    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "status": self.status.as_u16(),
            "code": self.code,
            "description": self.description,
        });
        let mut resp = (self.status, Json(body)).into_response();
        resp.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Busy => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "StoreBusy", e.to_string())
                    .with_header(header::RETRY_AFTER, "2")
            }
            // Writes resume by themselves once space is back (the store clears its write
            // health at the next commit), hence a Retry-After although 507 has no
            // retry semantics of its own. Seconds.
            StoreError::DiskFull { .. } => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "InsufficientStorage",
                format!(
                    "{e}: nothing was written. Reads go on; writes resume by themselves once \
                     space is freed on that disk (operators: GET /health, and the README's \
                     \"When the disk is full\")"
                ),
            )
            .with_header(header::RETRY_AFTER, "30"),
            // The server reopens its writer connection after an I/O error; a retry a
            // few seconds later is the right move for a client, and after a failed
            // fsync it should read the feature first (If-Match makes the retry safe).
            StoreError::Io { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "StoreIoError",
                format!(
                    "{e}: the request was not completed; try again shortly (after a failed \
                     write, read the feature first: If-Match makes a retry safe)"
                ),
            )
            .with_header(header::RETRY_AFTER, "5"),
            // An edit of a row whose cells cannot be read (written by another tool).
            StoreError::BadRow { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "UnreadableRow",
                format!("{e}; the row is not served: fix or delete it in the store"),
            ),
            e => ApiError::internal("store error", e),
        }
    }
}

impl From<EditError> for ApiError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::UnknownLayer(_) | EditError::NotFound { .. } => {
                ApiError::not_found(e.to_string())
            }
            EditError::Exists { .. } | EditError::Referenced { .. } => {
                ApiError::new(StatusCode::CONFLICT, "Conflict", e.to_string())
            }
            EditError::ReadOnly(_) => ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                e.to_string(),
            )
            .with_header(header::ALLOW, "GET, HEAD"),
            EditError::PreconditionFailed { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                e.to_string(),
            ),
            EditError::Invalid(f) => ApiError::unprocessable(f.to_string()),
            EditError::TimedOut => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Timeout", e.to_string())
                    .with_header(header::RETRY_AFTER, "5")
            }
            EditError::Store(s) => s.into(),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal("a blocking task failed", e)
    }
}
