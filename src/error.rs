//! The one error type of the HTTP surface. Every 4xx/5xx the platform answers has the shape
//! `{"error":{"code":"…","message":"…"}}`; expected outcomes are variants with a clear message,
//! anything unexpected becomes an opaque 500 whose cause chain goes to the log only.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("authentication required")]
    Unauthorized,
    #[error("wrong tenant, email or password")]
    InvalidCredentials,
    #[error("the request signature is missing or wrong")]
    BadSignature,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    /// It existed, and is gone for good (an expired export).
    #[error("{0}")]
    Gone(&'static str),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// A client holds as many live streams open as it may; one must close first.
    #[error("at most {limit} live event streams may be open per {per}: close one first")]
    TooManyStreams { limit: usize, per: &'static str },
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("{0}")]
    Unavailable(&'static str),
    /// An outside service the request depends on (Meta's Graph API...) could not be asked or
    /// gave no usable answer, so the request changed nothing and may be tried again.
    #[error("{message}")]
    Upstream { code: &'static str, message: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Error::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Error::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Unauthorized | Error::InvalidCredentials | Error::BadSignature => {
                StatusCode::UNAUTHORIZED
            }
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::Gone(_) => StatusCode::GONE,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::TooManyRequests { .. } | Error::TooManyStreams { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest { code, .. }
            | Error::Conflict { code, .. }
            | Error::Upstream { code, .. } => code,
            Error::Unauthorized => "unauthorized",
            Error::InvalidCredentials => "invalid_credentials",
            Error::BadSignature => "bad_signature",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound => "not_found",
            Error::Gone(_) => "gone",
            Error::TooManyRequests { .. } => "rate_limited",
            Error::TooManyStreams { .. } => "too_many_streams",
            Error::PayloadTooLarge => "payload_too_large",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }
}

/// Builds the error body for any status, so responses the framework produces on its own
/// (unknown route, wrong method, timeouts) carry the same shape as ours.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                "an internal error occurred".to_string()
            }
            other => other.to_string(),
        };
        let mut response = error_response(status, self.code(), &message);
        if let Error::TooManyRequests { retry_after_secs } = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs.max(1)),
            );
        }
        response
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => Error::NotFound,
            sqlx::Error::Database(db) => match db.constraint() {
                Some(constraint) => constraint_error(constraint)
                    .unwrap_or_else(|| Error::Internal(anyhow::Error::new(err))),
                None => Error::Internal(anyhow::Error::new(err)),
            },
            _ => Error::Internal(anyhow::Error::new(err)),
        }
    }
}

/// Named constraints that users can violate map to a clear 4xx; the rest stay internal.
fn constraint_error(constraint: &str) -> Option<Error> {
    let (code, message) = match constraint {
        "tenant_slug_key" => ("slug_taken", "that tenant slug is already taken"),
        "tenant_slug_format" => (
            "invalid_slug",
            "slug must be 2-63 lowercase letters, digits or dashes, starting with a letter or digit",
        ),
        "tenant_name_length" => ("invalid_name", "name must be 1 to 200 characters"),
        "member_email_key" => ("email_taken", "a member with that email already exists"),
        "api_token_name_key" => ("token_name_taken", "an active token with that name exists"),
        "partner_org_name_key" => ("partner_org_taken", "a partner organisation with that name exists"),
        "member_partner_org_fkey" | "invitation_partner_org_fkey" => {
            return Some(Error::bad_request("unknown_partner_org", "no such partner organisation"))
        }
        // Tenant-scoped references (`(tenant_id, x)` foreign keys): a value that names nothing
        // in the caller's tenant, another tenant's id included, is not found (SEC-3).
        "account_partner_org_fkey" | "contact_account_fkey" | "conversation_assignee_fkey" => {
            return Some(Error::NotFound)
        }
        // Migration 0022: no delete reaches data under a legal hold.
        "legal_hold_blocks_delete" => (
            "legal_hold",
            "this data is under a legal hold: it cannot be deleted until the hold is released",
        ),
        "member_partner_org_required" | "invitation_partner_org_required" => {
            return Some(Error::bad_request(
                "partner_org_required",
                "the partner role needs a partner_org_id, and only the partner role takes one",
            ))
        }
        _ => return None,
    };
    Some(Error::conflict(code, message))
}
