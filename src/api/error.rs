//! Error policy, in three lines:
//! 1. Every error is JSON `{"status", "code", "description"}` with `nosniff`; never HTML, and
//!    request text is never echoed into markup.
//! 2. Client mistakes are 4xx naming the field at fault; a busy store is 503 with `Retry-After`;
//!    an edit of a row the store holds in unreadable form is 409; anything else is a 500 whose
//!    detail goes to the log, not to the client.
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
            EditError::Exists { .. } => {
                ApiError::new(StatusCode::CONFLICT, "Conflict", e.to_string())
            }
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
