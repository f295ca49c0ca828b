//! The staff web app: server-rendered pages (askama templates, improved by the vendored htmx)
//! for the people who work the inbox. It is the top layer: it calls the domains' own functions
//! and never their SQL, and its pages are registered in the route registry like the API's
//! routes, each with the access it needs (SEC-1), but kept out of the API's document.
//!
//! Every page answers HTML, its errors included ([`shell`]), under a CSP that allows this
//! origin's scripts and stylesheet and nothing inline. Every page that changes something is a
//! form post checked for its CSRF token (`csrf.rs`).

mod accounts;
pub mod assets;
mod audit;
mod canned;
mod closure;
mod conversation;
pub mod csrf;
mod deals;
mod executions;
mod inbox;
mod knowledge;
mod login;
mod mfa;
mod reviews;
mod sso;
mod tasks;
mod tickets;

use askama::Template;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::app::{self, AppState};
use crate::error::Error;
use crate::http::{Access, Api, Ctx};
use crate::rbac::Permission;

/// Where the web app lives.
pub const HOME: &str = "/app";
pub const LOGIN: &str = "/app/login";

/// The policy every page is served under: scripts and the stylesheet from this origin only,
/// nothing inline, connections (htmx, the live stream) to this origin, forms posted here.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The whole application: the API's router with the web app's pages.
pub fn router(state: AppState) -> Router {
    let checks = csrf::checks(&state);
    app::router_with(state, move |api| pages(api.form_checks(checks)))
        .layer(axum::middleware::from_fn(shell))
}

fn pages(api: Api<AppState>) -> Api<AppState> {
    use Access::*;
    use Permission::*;
    let api = deals::pages(accounts::pages(tickets::pages(tasks::pages(api))));
    let api = executions::pages(audit::pages(reviews::pages(api)));
    closure::pages(canned::pages(knowledge::pages(api)))
        .page(Method::GET, "/app/assets/{file}", Public, assets::serve)
        .page(Method::GET, LOGIN, Public, login::form)
        .page(Method::POST, LOGIN, Public, login::submit)
        .page(Method::GET, mfa::SECOND_STEP, Public, mfa::second_step_form)
        .page(
            Method::POST,
            mfa::SECOND_STEP,
            Public,
            mfa::second_step_submit,
        )
        .page(Method::GET, "/app/sso", Public, sso::choose)
        .page(
            Method::GET,
            "/app/sso/{tenant_slug}/start",
            Public,
            sso::start,
        )
        .page(Method::GET, sso::CALLBACK, Public, sso::callback)
        .page(Method::POST, "/app/logout", Authenticated, login::logout)
        .page(Method::GET, mfa::PAGE, Authenticated, mfa::page)
        .page(
            Method::POST,
            "/app/mfa/enrolment",
            Authenticated,
            mfa::start_enrolment,
        )
        .page(
            Method::POST,
            "/app/mfa/confirm",
            Authenticated,
            mfa::confirm,
        )
        .page(
            Method::POST,
            "/app/mfa/disable",
            Authenticated,
            mfa::disable,
        )
        .page(
            Method::GET,
            "/app/password",
            Authenticated,
            login::password_form,
        )
        .page(
            Method::POST,
            "/app/password",
            Authenticated,
            login::change_password,
        )
        .page(Method::GET, HOME, Requires(ConversationsRead), inbox::page)
        .page(
            Method::GET,
            "/app/conversations/{conversation_id}",
            Requires(ConversationsRead),
            conversation::page,
        )
        // Each action under the permission of the API route that does the same.
        .page(
            Method::POST,
            "/app/conversations/{conversation_id}/reply",
            Requires(ConversationsReply),
            conversation::reply,
        )
        .page(
            Method::POST,
            "/app/conversations/{conversation_id}/discard-draft",
            Requires(ConversationsReply),
            conversation::discard_draft,
        )
        .page(
            Method::POST,
            "/app/conversations/{conversation_id}/assign",
            Requires(ConversationsManage),
            conversation::assign,
        )
        .page(
            Method::POST,
            "/app/conversations/{conversation_id}/handler",
            Requires(ConversationsManage),
            conversation::handler,
        )
        .page(
            Method::POST,
            "/app/conversations/{conversation_id}/status",
            Requires(ConversationsManage),
            conversation::status,
        )
        .page(
            Method::POST,
            "/app/conversations/{conversation_id}/labels",
            Requires(ConversationsManage),
            conversation::labels,
        )
        .page(
            Method::POST,
            "/app/conversations/{conversation_id}/language",
            Requires(ConversationsManage),
            conversation::language,
        )
        .page(
            Method::POST,
            "/app/conversations/{conversation_id}/contact",
            Requires(ContactsWrite),
            conversation::contact,
        )
        .page(
            Method::POST,
            "/app/conversations/{conversation_id}/restriction",
            Requires(DataSubjectRights),
            conversation::restriction,
        )
        .page(
            Method::POST,
            "/app/conversations/{conversation_id}/export",
            Requires(DataSubjectRights),
            conversation::export,
        )
        .page(
            Method::POST,
            "/app/conversations/{conversation_id}/erasure",
            Requires(DataSubjectRights),
            conversation::erasure,
        )
}

fn is_page(path: &str) -> bool {
    path == HOME || path.starts_with("/app/")
}

/// What every page goes through on its way out: an unauthenticated request is sent to sign in
/// (htmx is told with `HX-Redirect`), an error in the API's JSON shape becomes an error page,
/// and the page's CSP replaces the API's.
async fn shell(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if !is_page(&path) {
        return next.run(req).await;
    }
    let from_htmx = req.headers().contains_key("hx-request");
    let response = next.run(req).await;
    let status = response.status();
    // The sign-in pages answer a wrong password or code with 401 and their form again.
    let signing_in = path == LOGIN || path == mfa::SECOND_STEP || path.starts_with("/app/sso");
    let mut response = if status == StatusCode::UNAUTHORIZED && !signing_in {
        to_login(from_htmx)
    } else if (status.is_client_error() || status.is_server_error()) && is_json(&response) {
        error_page(response).await
    } else {
        response
    };
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn to_login(from_htmx: bool) -> Response {
    if from_htmx {
        // htmx follows a redirect inside the page; this makes it load the sign-in page whole.
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response
            .headers_mut()
            .insert("hx-redirect", HeaderValue::from_static(LOGIN));
        response
    } else {
        see_other(LOGIN)
    }
}

/// A 303 to `to`: the answer to a form post that worked, so a reload does not post again.
pub fn see_other(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static(HOME)),
        )],
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "web/error.html")]
struct ErrorPage<'a> {
    assets: &'a assets::Urls,
    title: &'a str,
    code: String,
    message: String,
}

/// The error page for an error the API's way (`{"error": {"code", "message"}}`), same status.
async fn error_page(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let error: serde_json::Value = axum::body::to_bytes(body, 64 * 1024)
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let text = |key: &str| {
        error["error"][key]
            .as_str()
            .map(str::to_string)
            .unwrap_or_default()
    };
    let (code, message) = (text("code"), text("message"));
    if code == "mfa_enrolment_required" {
        // The workspace requires a second factor this member has not enrolled: the guard lets
        // them reach only the page where they do.
        return see_other(mfa::PAGE);
    }
    let title = match parts.status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::TOO_MANY_REQUESTS => "Too many requests",
        s if s.is_server_error() => "Something went wrong",
        _ => "That did not work",
    };
    let page = ErrorPage {
        assets: &assets::URLS,
        title,
        code,
        message: sentence(&message),
    };
    let mut response = render(&page);
    *response.status_mut() = parts.status;
    for name in [
        header::RETRY_AFTER,
        header::HeaderName::from_static("x-request-id"),
    ] {
        if let Some(value) = parts.headers.get(&name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// A refusal the member can act on, shown above the form they sent, with what they typed kept
/// and the status the API would answer.
pub(super) struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

/// Sorts a domain error for a page that sent a form: bad input, a state that refuses the change
/// and a permission the member lacks for this one action show the page again with the reason
/// ([`Refusal`]); anything else (not found, a failure) goes up to the error page.
pub(super) fn refusal(error: Error) -> crate::error::Result<Refusal> {
    match error {
        Error::BadRequest { .. } | Error::Conflict { .. } | Error::Forbidden(_) => Ok(Refusal {
            status: error.status(),
            message: sentence(&error.to_string()),
        }),
        other => Err(other),
    }
}

/// The API's messages start in lower case; a page shows them as sentences.
pub(super) fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => {
            let mut s: String = first.to_uppercase().collect();
            s.push_str(chars.as_str());
            if !s.ends_with(['.', '!', '?']) {
                s.push('.');
            }
            s
        }
        None => "The request could not be handled.".to_string(),
    }
}

/// A template as an HTML response; a template that fails to render is a 500 (logged).
pub fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => Error::Internal(anyhow::anyhow!("rendering a page failed: {e}")).into_response(),
    }
}

/// What the layout around every signed-in page shows.
pub struct Chrome {
    pub assets: &'static assets::Urls,
    /// The session's CSRF token, for forms and for htmx requests (`hx-headers` on the body).
    pub csrf: String,
    pub member_name: String,
    /// Which top-level section the page belongs to (`inbox`, `reviews`, `account`).
    pub section: &'static str,
    /// The items waiting for review, for a member who may read the queue.
    pub reviews_pending: Option<i64>,
    /// Whether the member may read the audit log: its link is shown to them alone.
    pub can_audit: bool,
}

impl Chrome {
    pub async fn new(
        state: &AppState,
        ctx: &Ctx,
        section: &'static str,
    ) -> crate::error::Result<Self> {
        let mut tx = ctx.begin(state).await?;
        let member = crate::auth::member::fetch(&mut tx, ctx.member_id).await?;
        let reviews_pending = match ctx.role.can(Permission::ReviewsRead) {
            true => Some(crate::reviews::worklist::pending(&mut tx).await?),
            false => None,
        };
        tx.commit().await?;
        Ok(Chrome {
            assets: &assets::URLS,
            csrf: csrf::token(&state.keys, ctx),
            member_name: member.display_name,
            section,
            reviews_pending,
            can_audit: ctx.role.can(Permission::AuditRead),
        })
    }
}

/// A page's form (`application/x-www-form-urlencoded`); a malformed one is a clear 400.
pub struct Form<T>(pub T);

impl<T, S> FromRequest<S> for Form<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request<Body>, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| Error::PayloadTooLarge)?;
        if bytes.contains(&0) || memchr::memmem::find(&bytes, b"%00").is_some() {
            return Err(Error::bad_request(
                "invalid_text",
                "text may not contain the NUL character",
            ));
        }
        serde_urlencoded::from_bytes(&bytes)
            .map(Form)
            .map_err(|e| Error::bad_request("invalid_form", format!("the form is incomplete: {e}")))
    }
}
