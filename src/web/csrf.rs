//! Cross-site request forgery. Every page that changes something takes a token that only this
//! app's own pages carry, on top of the SameSite=Strict session cookie: in the form's hidden
//! field `_csrf`, or, for htmx requests, in the `X-CSRF-Token` header the layout sets on the
//! body (`hx-headers`). An Origin check alone would not do: the `no-referrer` policy makes
//! browsers send `Origin: null` on form posts.
//!
//! A signed-in member's token is derived from their session (`Keys::csrf_token`), so it needs
//! no storage and dies with the session. Before there is a session (the sign-in form) the token
//! is a random value the sign-in page also puts in a cookie of its own, and the post must carry
//! both (a double submit), so no other site can sign a browser in to an account of its choosing.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::auth::token::Keys;
use crate::error::error_response;
use crate::http::api::Guard;
use crate::http::{Access, Credential, Ctx};

/// The hidden form field that carries the token.
pub const FIELD: &str = "_csrf";
/// The header htmx requests carry it in.
pub const HEADER: &str = "x-csrf-token";
/// The sign-in form's own cookie (double submit).
pub const LOGIN_COOKIE: &str = "custodian_login_csrf";

#[derive(Clone)]
struct Checks {
    keys: Arc<Keys>,
    access: Access,
    body_limit: usize,
}

/// The checks the registry runs in front of every page that takes a body.
pub fn checks(state: &AppState) -> Guard<AppState> {
    let keys = state.keys.clone();
    let body_limit = state.config.max_body_bytes;
    Arc::new(move |access, route| {
        route.route_layer(axum::middleware::from_fn_with_state(
            Checks {
                keys: keys.clone(),
                access,
                body_limit,
            },
            check,
        ))
    })
}

/// The token of the caller's session, for the pages to embed.
pub fn token(keys: &Keys, ctx: &Ctx) -> String {
    match ctx.credential {
        Credential::Session(id) => keys.csrf_token(id),
        // API tokens cannot post pages (see `check`); a page shown to one carries no token.
        Credential::ApiToken(_) => String::new(),
    }
}

/// A fresh token for the sign-in form, or the one its cookie already holds (another tab's).
pub fn login_token(headers: &HeaderMap) -> String {
    login_cookie(headers)
        .filter(|v| {
            v.len() >= 32
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(crate::auth::token::new_opaque_token)
}

/// The `Set-Cookie` value that gives the browser the sign-in form's token.
pub fn login_cookie_header(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={token}; Path=/app/login; HttpOnly; Secure; SameSite=Strict; Max-Age=7200"
    ))
    .expect("the token is base64url")
}

/// The `Set-Cookie` value that removes it once signed in.
pub fn clear_login_cookie() -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}=; Path=/app/login; HttpOnly; Secure; SameSite=Strict; Max-Age=0"
    ))
    .expect("a constant cookie")
}

fn login_cookie(headers: &HeaderMap) -> Option<&str> {
    crate::http::cookie(headers, LOGIN_COOKIE)
}

fn refused() -> Response {
    error_response(
        StatusCode::FORBIDDEN,
        "csrf_failed",
        "This form has expired or did not come from this app. Reload the page and try again.",
    )
}

/// Refuses a page post that is not a form, or whose token is missing or wrong, before the
/// handler (and so anything that changes) runs.
async fn check(State(checks): State<Checks>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let is_form = match parts.headers.get(header::CONTENT_TYPE) {
        None => true,
        Some(value) => value.to_str().is_ok_and(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        }),
    };
    if !is_form {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a page takes its form as application/x-www-form-urlencoded",
        );
    }
    let bytes = match axum::body::to_bytes(body, checks.body_limit).await {
        Ok(bytes) => bytes,
        Err(_) => return crate::error::Error::PayloadTooLarge.into_response(),
    };
    let from_header = parts
        .headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let given = from_header.or_else(|| {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
            .ok()?
            .into_iter()
            .find(|(name, _)| name == FIELD)
            .map(|(_, value)| value)
    });
    let Some(given) = given.filter(|g| !g.is_empty()) else {
        return refused();
    };
    let valid = match checks.access {
        Access::Public => login_cookie(&parts.headers)
            .is_some_and(|cookie| bool::from(cookie.as_bytes().ct_eq(given.as_bytes()))),
        _ => match parts.extensions.get::<Ctx>().map(|ctx| ctx.credential) {
            Some(Credential::Session(id)) => checks.keys.csrf_token_matches(id, &given),
            // An API token never posts a page: pages are for browser sessions.
            Some(Credential::ApiToken(_)) | None => false,
        },
    };
    if !valid {
        return refused();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
