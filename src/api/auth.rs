//! `Authorization: Bearer KEY` → the key's role → allowed or not, per the table in
//! `model::access`. Keys never reach the log.

use axum::http::{HeaderMap, StatusCode, header};

use super::error::ApiError;
use crate::app::App;
use crate::model::Action;
use crate::store::ApiKey;

fn challenge(e: ApiError, error: Option<&str>) -> ApiError {
    let value = match error {
        Some(err) => format!("Bearer realm=\"riskmap\", error=\"{err}\""),
        None => "Bearer realm=\"riskmap\"".to_string(),
    };
    e.with_header(header::WWW_AUTHENTICATE, &value)
}

/// The token of `Bearer TOKEN`. The scheme is matched case-insensitively (RFC 9110
/// §11.1: `bearer` and `BEARER` are the same scheme) and is followed by one or more
/// spaces (`1*SP`); `None` for another scheme or no token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(rest.trim()).filter(|t| !t.is_empty())
}

/// The key presented, checked for `action`. Blocking (reads the store): call from a
/// blocking task.
pub fn require(app: &App, headers: &HeaderMap, action: Action) -> Result<ApiKey, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        challenge(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "this request needs an API key: Authorization: Bearer KEY",
            ),
            None,
        )
    })?;
    let secret = value.to_str().ok().and_then(bearer_token).ok_or_else(|| {
        challenge(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "the Authorization header must be: Bearer KEY",
            ),
            Some("invalid_request"),
        )
    })?;
    let key = app.store().authenticate(secret)?.ok_or_else(|| {
        challenge(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "unknown or revoked API key",
            ),
            Some("invalid_token"),
        )
    })?;
    if !key.role.allows(action) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("a key with role {} may not do this", key.role.name()),
        ));
    }
    Ok(key)
}

/// For reads: nothing to check when reads are public, else a key allowing `Read`.
pub fn require_read(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    if app.public_reads() {
        return Ok(());
    }
    require(app, headers, Action::Read).map(|_| ())
}
