//! Signing in and out, and changing one's password, through the same functions as the API
//! (`auth::login`): the same throttles (SEC-5), the same audit events (AUD-2).

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{assets, csrf, render, see_other, Chrome, Form, HOME, LOGIN};
use crate::app::AppState;
use crate::auth::login::{self, Credentials};
use crate::auth::session;
use crate::error::{Error, Result};
use crate::http::{Ctx, RequestMeta};

/// A message on a form: `error`, `warning` or `success`.
pub struct Notice {
    pub kind: &'static str,
    pub message: String,
}

impl Notice {
    pub(super) fn error(message: impl Into<String>) -> Self {
        Notice {
            kind: "error",
            message: message.into(),
        }
    }
}

#[derive(Template)]
#[template(path = "web/login.html")]
struct LoginPage<'a> {
    assets: &'a assets::Urls,
    csrf: String,
    tenant: String,
    email: String,
    error: Option<Notice>,
}

pub(super) fn login_page(
    headers: &HeaderMap,
    tenant: String,
    email: String,
    error: Option<Notice>,
) -> Response {
    let token = csrf::login_token(headers);
    let page = LoginPage {
        assets: &assets::URLS,
        csrf: token.clone(),
        tenant,
        email,
        error,
    };
    let mut response = render(&page);
    response
        .headers_mut()
        .append(header::SET_COOKIE, csrf::login_cookie_header(&token));
    response
}

/// `GET /app/login`: the form, or the inbox for someone already signed in.
pub async fn form(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
) -> Result<Response> {
    if crate::auth::guard::authenticate(&state.auth(), &headers, meta)
        .await?
        .is_some()
    {
        return Ok(see_other(HOME));
    }
    Ok(login_page(&headers, String::new(), String::new(), None))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// `POST /app/login`: signs in and goes to the inbox, or shows the form again saying why not.
pub async fn submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response> {
    let password = SecretString::from(form.password);
    if form.tenant.trim().is_empty()
        || form.email.trim().is_empty()
        || password.expose_secret().is_empty()
    {
        let mut response = login_page(
            &headers,
            form.tenant,
            form.email,
            Some(Notice::error("Enter your workspace, e-mail and password.")),
        );
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(response);
    }
    let signed_in = login::sign_in(
        &state.auth(),
        &meta,
        Credentials {
            tenant: &form.tenant,
            email: &form.email,
            password,
        },
    )
    .await;
    match signed_in {
        Ok(login::SignInOutcome::CodeOwed(challenge)) => Ok(super::mfa::start(challenge)),
        Ok(login::SignInOutcome::SignedIn(signed_in)) => {
            let mut response = see_other(HOME);
            let cookies = response.headers_mut();
            cookies.append(header::SET_COOKIE, signed_in.session.cookie);
            cookies.append(header::SET_COOKIE, csrf::clear_login_cookie());
            Ok(response)
        }
        Err(Error::InvalidCredentials) => {
            let mut response = login_page(
                &headers,
                form.tenant,
                form.email,
                Some(Notice::error(
                    "That workspace, e-mail and password do not match an account. Check them and try again.",
                )),
            );
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            Ok(response)
        }
        Err(Error::Refused {
            code: "password_sign_in_disabled",
            ..
        }) => {
            let mut response = login_page(
                &headers,
                form.tenant,
                form.email,
                Some(Notice::error(
                    "This workspace signs in through its identity provider: use \"Sign in with \
                     SSO\" below.",
                )),
            );
            *response.status_mut() = StatusCode::FORBIDDEN;
            Ok(response)
        }
        Err(Error::TooManyRequests { retry_after_secs }) => {
            let mut response = login_page(
                &headers,
                form.tenant,
                form.email,
                Some(Notice {
                    kind: "warning",
                    message: format!(
                        "Too many failed sign-ins for this account from here. For your account's \
                         safety, wait {} before trying again.",
                        wait_text(retry_after_secs)
                    ),
                }),
            );
            *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(retry_after_secs),
            );
            Ok(response)
        }
        Err(other) => Err(other),
    }
}

/// "45 seconds", "2 minutes".
pub(super) fn wait_text(secs: u64) -> String {
    match secs {
        0..=1 => "a second".to_string(),
        2..=89 => format!("{secs} seconds"),
        _ => format!("{} minutes", secs.div_ceil(60)),
    }
}

/// `POST /app/logout`: ends the session and goes back to the sign-in page.
pub async fn logout(State(state): State<AppState>, ctx: Ctx) -> Result<Response> {
    login::sign_out(&state.auth(), &ctx).await?;
    let mut response = see_other(LOGIN);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::clearing_cookie());
    Ok(response)
}

#[derive(Template)]
#[template(path = "web/password.html")]
struct PasswordPage {
    chrome: Chrome,
    notice: Option<Notice>,
}

/// `GET /app/password`.
pub async fn password_form(State(state): State<AppState>, ctx: Ctx) -> Result<Response> {
    let chrome = Chrome::new(&state, &ctx, "account").await?;
    Ok(render(&PasswordPage {
        chrome,
        notice: None,
    }))
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

/// `POST /app/password`: changes the password (signing out the member's other sessions).
pub async fn change_password(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<PasswordForm>,
) -> Result<Response> {
    let outcome = if form.new_password != form.confirm_password {
        Err(Error::bad_request(
            "password_mismatch",
            "The new password and its repetition differ.",
        ))
    } else {
        login::change_password(
            &state.auth(),
            &ctx,
            SecretString::from(form.current_password),
            SecretString::from(form.new_password),
        )
        .await
    };
    let (status, notice) = match outcome {
        Ok(()) => (
            StatusCode::OK,
            Notice {
                kind: "success",
                message: "Your password is changed. Your other sessions are signed out.".into(),
            },
        ),
        Err(Error::BadRequest { message, .. }) => (
            StatusCode::BAD_REQUEST,
            Notice::error(super::sentence(&message)),
        ),
        Err(Error::TooManyRequests { retry_after_secs }) => (
            StatusCode::TOO_MANY_REQUESTS,
            Notice {
                kind: "warning",
                message: format!(
                    "Too many wrong passwords. Wait {} before trying again.",
                    wait_text(retry_after_secs)
                ),
            },
        ),
        Err(other) => return Err(other),
    };
    let chrome = Chrome::new(&state, &ctx, "account").await?;
    let mut response = render(&PasswordPage {
        chrome,
        notice: Some(notice),
    });
    *response.status_mut() = status;
    Ok(response)
}
