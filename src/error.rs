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
    /// Not authenticated, for a reason the client can act on: a wrong second-factor code, a
    /// sign-in challenge that expired.
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    /// Not allowed yet, for a reason the client can act on: two-factor enrolment owed, a
    /// recent two-factor check needed.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
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
            Error::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Error::Refused { .. } => StatusCode::FORBIDDEN,
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
            | Error::Upstream { code, .. }
            | Error::Unauthenticated { code, .. }
            | Error::Refused { code, .. } => code,
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
            sqlx::Error::Database(db) => match db.constraint().and_then(on_constraint) {
                Some(refused) => refused,
                None => Error::Internal(anyhow::Error::new(err)),
            },
            _ => Error::Internal(anyhow::Error::new(err)),
        }
    }
}

/// What breaking a named constraint tells the client.
#[derive(Clone, Copy)]
enum Refusal {
    /// 400: the value itself is not acceptable.
    Invalid(&'static str, &'static str),
    /// 409: the value clashes with what is stored.
    Conflict(&'static str, &'static str),
    /// 404: a tenant-scoped reference (a `(tenant_id, x)` foreign key) that names nothing in
    /// the caller's tenant, another tenant's id included (SEC-3).
    NotFound,
}

use Refusal::{Conflict, Invalid, NotFound};

/// The named constraints (migrations/*.sql) a client can break, and the answer each gets: the
/// one place that maps them, so a handler only adds a name here. A name ending in `*` covers
/// every constraint that starts with what precedes it, and the broken constraint's name follows
/// its message. A constraint not listed is a bug if it breaks: a 500, its cause logged.
const CONSTRAINTS: &[(&str, Refusal)] = &[
    ("tenant_slug_key", Conflict("slug_taken", "that tenant slug is already taken")),
    (
        "tenant_slug_format",
        Conflict(
            "invalid_slug",
            "slug must be 2-63 lowercase letters, digits or dashes, starting with a letter or digit",
        ),
    ),
    ("tenant_name_length", Invalid("invalid_name", "name must be 1 to 200 characters")),
    ("member_email_key", Conflict("email_taken", "a member with that email already exists")),
    ("api_token_name_key", Conflict("token_name_taken", "an active token with that name exists")),
    (
        "canned_reply_shortcut_key",
        Conflict("shortcut_taken", "a canned reply with that shortcut exists"),
    ),
    (
        "partner_org_name_key",
        Conflict("partner_org_taken", "a partner organisation with that name exists"),
    ),
    ("member_partner_org_fkey", NotFound),
    ("invitation_partner_org_fkey", NotFound),
    ("account_partner_org_fkey", NotFound),
    ("contact_account_fkey", NotFound),
    ("conversation_assignee_fkey", NotFound),
    // Migration 0033: a ticket's or task's references within the tenant.
    ("ticket_assignee_fkey", NotFound),
    ("ticket_account_fkey", NotFound),
    ("ticket_contact_fkey", NotFound),
    ("ticket_conversation_conversation_fkey", NotFound),
    ("task_assignee_fkey", NotFound),
    ("task_account_fkey", NotFound),
    ("task_contact_fkey", NotFound),
    ("task_ticket_fkey", NotFound),
    ("ticket_subject", Invalid("invalid_text", "subject must be 1 to 300 characters")),
    ("task_title", Invalid("invalid_text", "title must be 1 to 300 characters")),
    // Migration 0022: no delete reaches data under a legal hold.
    (
        "legal_hold_blocks_delete",
        Conflict(
            "legal_hold",
            "this data is under a legal hold: it cannot be deleted until the hold is released",
        ),
    ),
    // A member's role and organisation change in parts (`PATCH`): the pair breaks against
    // what the member already is, a conflict with their state.
    (
        "member_partner_org_required",
        Conflict(
            "partner_org_required",
            "the partner role needs a partner_org_id, and only the partner role takes one",
        ),
    ),
    (
        "invitation_partner_org_required",
        Invalid(
            "partner_org_required",
            "the partner role needs a partner_org_id, and only the partner role takes one",
        ),
    ),
    ("account_name_length", Invalid("name_too_long", "name must be at most 200 characters")),
    ("contact_name_length", Invalid("name_too_long", "name must be at most 200 characters")),
    (
        "contact_external_id_length",
        Invalid("external_id_too_long", "external_id must be at most 200 characters"),
    ),
    ("contact_email_key", Conflict("email_taken", "a contact with that email already exists")),
    (
        "contact_whatsapp_key",
        Conflict("whatsapp_id_taken", "a contact with that whatsapp_id already exists"),
    ),
    (
        "contact_external_key",
        Conflict("external_id_taken", "a contact with that external_id already exists"),
    ),
    ("inbox_name_length", Invalid("name_too_long", "name must be at most 100 characters")),
    ("partner_org_name_length", Invalid("invalid_name", "name must be 1 to 200 characters")),
    ("api_token_name_length", Invalid("invalid_name", "name must be 1 to 100 characters")),
    (
        "inbox_tenant_phone_number_key",
        Conflict("phone_number_in_use", "another of your inboxes already serves that WhatsApp number"),
    ),
    (
        "conversation_active_key",
        Conflict(
            "conversation_already_open",
            "this contact already has an open conversation in this inbox",
        ),
    ),
    (
        "tenant_action_name",
        Invalid("invalid_name", "name must be lowercase letters, digits and underscores"),
    ),
    ("tenant_action_name_key", Conflict("name_taken", "an action with that name exists")),
    ("agent_settings_*", Invalid("invalid_settings", "out of range")),
    (
        "pipeline_name_key",
        Conflict("pipeline_taken", "a pipeline with that name exists"),
    ),
    ("deal_owner_fkey", NotFound),
    ("task_deal_fkey", NotFound),
];

/// The answer to a broken constraint named `constraint`, if a client can break it.
fn on_constraint(constraint: &str) -> Option<Error> {
    let (name, refusal) = CONSTRAINTS
        .iter()
        .find(|(name, _)| match name.strip_suffix('*') {
            Some(prefix) => constraint.starts_with(prefix),
            None => *name == constraint,
        })?;
    let message = |text: &str| match name.ends_with('*') {
        true => format!("{text}: {constraint}"),
        false => text.to_string(),
    };
    Some(match *refusal {
        Invalid(code, text) => Error::bad_request(code, message(text)),
        Conflict(code, text) => Error::conflict(code, message(text)),
        NotFound => Error::NotFound,
    })
}

/// Declares a refusal that is only its message, saying what to fix, for checks whose callers
/// answer with the text (an HTTP error, a note to the model): a `thiserror` newtype over the
/// message, made from a `String` or `&str` and turned back into one.
macro_rules! message_error {
    ($(#[$meta:meta])* $vis:vis struct $name:ident;) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        #[error("{0}")]
        $vis struct $name(String);

        impl From<String> for $name {
            fn from(message: String) -> Self {
                $name(message)
            }
        }

        impl From<&str> for $name {
            fn from(message: &str) -> Self {
                $name(message.to_string())
            }
        }

        impl From<$name> for String {
            fn from(e: $name) -> String {
                e.0
            }
        }
    };
}
pub(crate) use message_error;
