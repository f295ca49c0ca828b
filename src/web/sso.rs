//! Single sign-on in the web app, through `auth::oidc`: the sign-in page's "Sign in with SSO"
//! form, the redirect to the workspace's identity provider, and its return.
//!
//! The return comes from the provider's site, so a browser treats the whole redirect chain
//! after it as cross-site and would not send the SameSite=Strict session cookie on a 303 to the
//! inbox: the callback answers a page that moves on by itself (a meta refresh, from this
//! origin) instead. The cookie tying the sign-in to this browser is SameSite=Lax for the same
//! reason: it must come back on the provider's top-level redirect.

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::login::{login_page, Notice};
use super::{assets, mfa, render, HOME};
use crate::app::AppState;
use crate::auth::login::SignInOutcome;
use crate::auth::oidc::{self, Callback};
use crate::error::{Error, Result};
use crate::http::{Path, Query, RequestMeta};

/// Where the provider sends the browser back (registered with the provider as
/// `<PUBLIC_URL>/app/sso/callback`).
pub const CALLBACK: &str = "/app/sso/callback";
/// The cookie that ties a sign-in to the browser that started it.
const BROWSER_COOKIE: &str = "custodian_sso";

fn browser_cookie(value: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{BROWSER_COOKIE}={value}; Path=/app/sso; HttpOnly; Secure; SameSite=Lax; \
         Max-Age={max_age}"
    ))
    .expect("the value is base64url")
}

#[derive(Template)]
#[template(path = "web/sso_continue.html")]
struct ContinuePage<'a> {
    assets: &'a assets::Urls,
    next: &'a str,
}

/// A page that goes on to `next` by itself.
fn continue_to(next: &str) -> Response {
    render(&ContinuePage {
        assets: &assets::URLS,
        next,
    })
}

fn refused(headers: &HeaderMap, status: StatusCode, message: impl Into<String>) -> Response {
    let mut response = login_page(
        headers,
        String::new(),
        String::new(),
        Some(Notice::error(message)),
    );
    *response.status_mut() = status;
    response
}

fn valid_slug(slug: &str) -> bool {
    (2..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
}

#[derive(Deserialize)]
pub struct WorkspaceForm {
    #[serde(default)]
    workspace: String,
}

/// `GET /app/sso?workspace=…`: the sign-in page's SSO form. It answers a page that moves on to
/// the workspace's start rather than a redirect, as the page's CSP (`form-action 'self'`) would
/// stop a form's redirect chain at the provider's address.
pub async fn choose(headers: HeaderMap, Query(form): Query<WorkspaceForm>) -> Response {
    let slug = form.workspace.trim().to_ascii_lowercase();
    if !valid_slug(&slug) {
        return refused(
            &headers,
            StatusCode::BAD_REQUEST,
            "Enter your workspace to sign in with single sign-on.",
        );
    }
    continue_to(&format!("/app/sso/{slug}/start"))
}

/// This server's callback as the browser reaches it: from PUBLIC_URL, or the Host the browser
/// asked for (over https, as sessions cookies are Secure).
fn redirect_uri(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let base = match &state.config.public_url {
        Some(url) => url.clone(),
        None => {
            let host = headers.get(header::HOST)?.to_str().ok()?;
            let plain = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
            if !plain {
                return None;
            }
            format!("https://{host}")
        }
    };
    Some(format!("{base}{CALLBACK}"))
}

/// `GET /app/sso/{tenant_slug}/start`: off to the workspace's identity provider.
pub async fn start(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Result<Response> {
    let Some(redirect_uri) = redirect_uri(&state, &headers) else {
        return Ok(refused(
            &headers,
            StatusCode::BAD_REQUEST,
            "This server does not know its own address for single sign-on (PUBLIC_URL).",
        ));
    };
    match oidc::start(&state.auth(), &meta, &slug, &redirect_uri).await {
        Ok(started) => {
            let mut response = super::see_other(&started.location);
            response.headers_mut().append(
                header::SET_COOKIE,
                browser_cookie(&started.browser, oidc::LOGIN_SECS),
            );
            Ok(response)
        }
        Err(Error::NotFound) => Ok(refused(
            &headers,
            StatusCode::NOT_FOUND,
            "That workspace does not sign in through an identity provider. Sign in with your \
             password.",
        )),
        Err(Error::Upstream { .. }) => Ok(refused(
            &headers,
            StatusCode::BAD_GATEWAY,
            "The workspace's identity provider cannot be reached right now. Try again in a \
             moment.",
        )),
        Err(other) => Err(other),
    }
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /app/sso/callback?code&state`: the provider's return. Signs in (or on to the second
/// step for a member with an authenticator), or shows the sign-in page saying why not.
pub async fn callback(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Result<Response> {
    let forget = browser_cookie("", 0);
    let (code, login_state) = match (&query.code, &query.state, &query.error) {
        (Some(code), Some(s), None) if code.len() <= 4096 && s.len() <= 200 => (code, s),
        _ => {
            let mut response = refused(
                &headers,
                StatusCode::BAD_REQUEST,
                "The identity provider did not sign you in. Start again, or ask your \
                 administrator.",
            );
            response.headers_mut().append(header::SET_COOKIE, forget);
            return Ok(response);
        }
    };
    let outcome = oidc::finish(
        &state.auth(),
        &meta,
        Callback {
            code,
            state: login_state,
            browser: crate::http::cookie(&headers, BROWSER_COOKIE),
        },
        crate::tenants::members::join_by_sso,
    )
    .await;
    let mut response = match outcome {
        Ok(SignInOutcome::SignedIn(signed_in)) => {
            let mut response = continue_to(HOME);
            response
                .headers_mut()
                .append(header::SET_COOKIE, signed_in.session.cookie);
            response
        }
        Ok(SignInOutcome::CodeOwed(challenge)) => {
            let mut response = continue_to(mfa::SECOND_STEP);
            response.headers_mut().append(
                header::SET_COOKIE,
                mfa::challenge_cookie(&challenge.token, crate::auth::mfa::CHALLENGE_SECS),
            );
            response
        }
        Err(Error::Unauthenticated { message, .. }) => refused(
            &headers,
            StatusCode::UNAUTHORIZED,
            super::sentence(&message),
        ),
        Err(Error::Upstream { .. }) => refused(
            &headers,
            StatusCode::BAD_GATEWAY,
            "The workspace's identity provider cannot be reached right now. Try again in a \
             moment.",
        ),
        Err(other) => return Err(other),
    };
    response.headers_mut().append(header::SET_COOKIE, forget);
    Ok(response)
}
