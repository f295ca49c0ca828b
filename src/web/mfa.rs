//! Two-factor sign-in in the web app (SEC-7), through the same functions as the API
//! (`auth::login`, `auth::mfa`): the sign-in's second step, and the member's own page to enrol
//! an authenticator (QR code drawn server side, inline), see their recovery codes once, and
//! turn it off. A member whose workspace requires it and who has not enrolled is sent to that
//! page from everywhere else (the guard refuses, `shell` redirects).

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use secrecy::SecretString;
use serde::Deserialize;

use super::login::{wait_text, Notice};
use super::{assets, csrf, render, see_other, Chrome, Form, HOME, LOGIN};
use crate::app::AppState;
use crate::auth::login;
use crate::auth::mfa::{self, Enrolment, Proof, Status};
use crate::error::{Error, Result};
use crate::http::{Ctx, RequestMeta};

/// The account's two-factor page.
pub const PAGE: &str = "/app/mfa";
/// The sign-in's second step.
pub const SECOND_STEP: &str = "/app/login/mfa";
/// The cookie that carries the challenge from the password step to the second step.
const CHALLENGE_COOKIE: &str = "custodian_mfa_challenge";

pub(super) fn challenge_cookie(token: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{CHALLENGE_COOKIE}={token}; Path=/app/login; HttpOnly; Secure; SameSite=Strict; \
         Max-Age={max_age}"
    ))
    .expect("the challenge is base64url")
}

/// The answer of a right password when a code is owed: on to the second step, the challenge
/// in a cookie of its own that only the sign-in pages see.
pub fn start(challenge: mfa::Challenge) -> Response {
    let mut response = see_other(SECOND_STEP);
    response.headers_mut().append(
        header::SET_COOKIE,
        challenge_cookie(&challenge.token, mfa::CHALLENGE_SECS),
    );
    response
}

#[derive(Template)]
#[template(path = "web/login_mfa.html")]
struct SecondStepPage<'a> {
    assets: &'a assets::Urls,
    csrf: String,
    error: Option<Notice>,
}

fn second_step_page(headers: &HeaderMap, error: Option<Notice>, status: StatusCode) -> Response {
    let token = csrf::login_token(headers);
    let mut response = render(&SecondStepPage {
        assets: &assets::URLS,
        csrf: token.clone(),
        error,
    });
    *response.status_mut() = status;
    response
        .headers_mut()
        .append(header::SET_COOKIE, csrf::login_cookie_header(&token));
    response
}

/// `GET /app/login/mfa`: the code's form, while a challenge is open.
pub async fn second_step_form(headers: HeaderMap) -> Response {
    if crate::http::cookie(&headers, CHALLENGE_COOKIE).is_none() {
        return see_other(LOGIN);
    }
    second_step_page(&headers, None, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

/// `POST /app/login/mfa`: completes the sign-in and goes to the inbox, or shows the form again
/// saying why not; an expired challenge goes back to the password.
pub async fn second_step_submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    Form(form): Form<CodeForm>,
) -> Result<Response> {
    let Some(challenge) = crate::http::cookie(&headers, CHALLENGE_COOKIE) else {
        return Ok(see_other(LOGIN));
    };
    if form.code.len() > 40 {
        return Ok(second_step_page(
            &headers,
            Some(Notice::error(
                "That code is wrong, expired or already used.",
            )),
            StatusCode::UNAUTHORIZED,
        ));
    }
    match login::complete_sign_in(&state.auth(), &meta, challenge, &form.code).await {
        Ok(signed_in) => {
            let mut response = see_other(HOME);
            let cookies = response.headers_mut();
            cookies.append(header::SET_COOKIE, signed_in.session.cookie);
            cookies.append(header::SET_COOKIE, csrf::clear_login_cookie());
            cookies.append(header::SET_COOKIE, challenge_cookie("", 0));
            Ok(response)
        }
        Err(Error::Unauthenticated {
            code: "challenge_expired",
            ..
        }) => {
            let mut response = see_other(LOGIN);
            response
                .headers_mut()
                .append(header::SET_COOKIE, challenge_cookie("", 0));
            Ok(response)
        }
        Err(Error::Unauthenticated { .. }) => Ok(second_step_page(
            &headers,
            Some(Notice::error(
                "That code is wrong, expired or already used. Enter the code your authenticator \
                 shows now, or one of your recovery codes.",
            )),
            StatusCode::UNAUTHORIZED,
        )),
        Err(Error::TooManyRequests { retry_after_secs }) => {
            let mut response = second_step_page(
                &headers,
                Some(Notice {
                    kind: "warning",
                    message: format!(
                        "Too many wrong codes. Wait {} before trying again.",
                        wait_text(retry_after_secs)
                    ),
                }),
                StatusCode::TOO_MANY_REQUESTS,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            Ok(response)
        }
        Err(other) => Err(other),
    }
}

#[derive(Template)]
#[template(path = "web/mfa.html")]
struct MfaPage {
    chrome: Chrome,
    status: Status,
    enrolment: Option<Enrolment>,
    /// Shown once, right after confirming.
    recovery_codes: Vec<String>,
    notice: Option<Notice>,
}

async fn mfa_page(
    state: &AppState,
    ctx: &Ctx,
    recovery_codes: Vec<String>,
    notice: Option<Notice>,
    status_code: StatusCode,
) -> Result<Response> {
    let auth = state.auth();
    let status = mfa::status(&auth, ctx).await?;
    let enrolment = if status.enabled {
        None
    } else {
        mfa::pending_enrolment(&auth, ctx).await?
    };
    let chrome = Chrome::new(state, ctx, "account").await?;
    let mut response = render(&MfaPage {
        chrome,
        status,
        enrolment,
        recovery_codes,
        notice,
    });
    *response.status_mut() = status_code;
    Ok(response)
}

/// `GET /app/mfa`.
pub async fn page(State(state): State<AppState>, ctx: Ctx) -> Result<Response> {
    mfa_page(&state, &ctx, Vec::new(), None, StatusCode::OK).await
}

/// `POST /app/mfa/enrolment`: a new secret, then the page shows its QR code.
pub async fn start_enrolment(State(state): State<AppState>, ctx: Ctx) -> Result<Response> {
    match mfa::start_enrolment(&state.auth(), &ctx).await {
        Ok(_) => Ok(see_other(PAGE)),
        Err(Error::Conflict { message, .. }) => {
            let notice = Notice::error(super::sentence(&message));
            mfa_page(&state, &ctx, Vec::new(), Some(notice), StatusCode::CONFLICT).await
        }
        Err(other) => Err(other),
    }
}

/// `POST /app/mfa/confirm`: the first code turns it on; the recovery codes are shown, once.
pub async fn confirm(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<CodeForm>,
) -> Result<Response> {
    let outcome = if form.code.len() > 40 {
        Err(Error::bad_request("invalid_code", "the code is wrong"))
    } else {
        mfa::confirm(&state.auth(), &ctx, &form.code).await
    };
    match outcome {
        Ok(codes) => {
            let notice = Notice {
                kind: "success",
                message: "Two-factor sign-in is on. Keep your recovery codes somewhere safe."
                    .into(),
            };
            mfa_page(&state, &ctx, codes, Some(notice), StatusCode::OK).await
        }
        Err(error) => failed(&state, &ctx, error).await,
    }
}

async fn failed(state: &AppState, ctx: &Ctx, error: Error) -> Result<Response> {
    let (status, notice) = match error {
        Error::BadRequest {
            code: "invalid_code",
            ..
        } => (
            StatusCode::BAD_REQUEST,
            Notice::error(
                "That code is wrong, expired or already used. Enter the code your \
                 authenticator shows now.",
            ),
        ),
        Error::BadRequest { message, .. } | Error::Conflict { message, .. } => (
            StatusCode::BAD_REQUEST,
            Notice::error(super::sentence(&message)),
        ),
        Error::TooManyRequests { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            Notice {
                kind: "warning",
                message: format!(
                    "Too many wrong codes. Wait {} before trying again.",
                    wait_text(retry_after_secs)
                ),
            },
        ),
        other => return Err(other),
    };
    mfa_page(state, ctx, Vec::new(), Some(notice), status).await
}

#[derive(Deserialize)]
pub struct DisableForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    password: String,
}

/// `POST /app/mfa/disable`: with a current code or the password.
pub async fn disable(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<DisableForm>,
) -> Result<Response> {
    let proof = match (form.code.trim().is_empty(), form.password.is_empty()) {
        (false, _) if form.code.len() <= 40 => Proof::Code(form.code),
        (true, false) => Proof::Password(SecretString::from(form.password)),
        _ => {
            let error =
                Error::bad_request("proof_required", "enter a current code or your password");
            return failed(&state, &ctx, error).await;
        }
    };
    match mfa::disable(&state.auth(), &ctx, proof).await {
        Ok(()) => {
            let notice = Notice {
                kind: "success",
                message: "Two-factor sign-in is off.".into(),
            };
            mfa_page(&state, &ctx, Vec::new(), Some(notice), StatusCode::OK).await
        }
        Err(error) => failed(&state, &ctx, error).await,
    }
}
