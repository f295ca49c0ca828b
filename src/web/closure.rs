//! The owner's closure page (RET-2): the tenant's status, closing it (typing its slug), the
//! whole-tenant exports with their progress and download links, and reopening during the grace
//! period. Every change calls the privacy domain's own functions, the ones the API calls, so the
//! checks and audit events are the same. The page stays reachable while the tenant is closing
//! (`auth::guard::WHILE_CLOSING`); the downloads are the API's.

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::inbox::readable;
use super::login::Notice;
use super::{render, see_other, sentence, Chrome, Form};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Ctx, Query};
use crate::privacy::closure::{self, TenantExportView};
use crate::rbac::Permission;
use crate::tenants::closure::ClosureView;

pub const PAGE: &str = "/app/tenant/closure";

pub fn pages(api: Api<AppState>) -> Api<AppState> {
    use Access::*;
    use Permission::TenantOwn;
    api.page(Method::GET, PAGE, Requires(TenantOwn), show)
        .page(Method::POST, PAGE, Requires(TenantOwn), close)
        .page(
            Method::POST,
            "/app/tenant/closure/reopen",
            Requires(TenantOwn),
            reopen,
        )
        .page(
            Method::POST,
            "/app/tenant/exports",
            Requires(TenantOwn),
            export,
        )
}

pub struct ExportRow {
    pub id: String,
    pub status: String,
    pub progress: i32,
    pub created: String,
    pub expires: String,
}

#[derive(Template)]
#[template(path = "web/closure.html")]
struct ClosurePage {
    chrome: Chrome,
    notice: Option<Notice>,
    closing: bool,
    slug: String,
    closed_at: String,
    purge_after: String,
    exports: Vec<ExportRow>,
}

#[derive(Deserialize, Default)]
pub struct ShowQuery {
    done: Option<String>,
}

async fn page(state: &AppState, ctx: &Ctx) -> Result<ClosurePage> {
    let chrome = Chrome::new(state, ctx, "account").await?;
    let (view, slug): (ClosureView, String) = closure::status(&state.db, ctx).await?;
    let exports: Vec<TenantExportView> = closure::exports(&state.db, ctx).await?;
    Ok(ClosurePage {
        chrome,
        notice: None,
        closing: view.status == "closing",
        slug,
        closed_at: view.closed_at.map(readable).unwrap_or_default(),
        purge_after: view.purge_after.map(readable).unwrap_or_default(),
        exports: exports
            .into_iter()
            .map(|e| ExportRow {
                id: e.id.to_string(),
                status: e.status,
                progress: e.progress,
                created: readable(e.created_at),
                expires: readable(e.expires_at),
            })
            .collect(),
    })
}

/// `GET /app/tenant/closure`.
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<ShowQuery>,
) -> Result<Response> {
    let mut page = page(&state, &ctx).await?;
    page.notice = match query.done.as_deref() {
        Some("closed") => Some(Notice {
            kind: "success",
            message: "The workspace is closed. Export its data before the date below.".into(),
        }),
        Some("reopened") => Some(Notice {
            kind: "success",
            message: "The workspace is open again.".into(),
        }),
        Some("exporting") => Some(Notice {
            kind: "success",
            message: "The export is being written; reload to see its progress.".into(),
        }),
        _ => None,
    };
    Ok(render(&page))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CloseForm {
    confirm_slug: String,
}

/// `POST /app/tenant/closure`: closes the tenant; a mistyped slug or a legal hold shows the page
/// again with the reason.
pub async fn close(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<CloseForm>,
) -> Result<Response> {
    match closure::close_tenant(&state.db, &ctx, &form.confirm_slug).await {
        Ok(_) => Ok(see_other(&format!("{PAGE}?done=closed"))),
        Err(error @ Error::Conflict { .. }) => {
            let mut page = page(&state, &ctx).await?;
            page.notice = Some(Notice {
                kind: "error",
                message: sentence(&error.to_string()),
            });
            let mut response = render(&page);
            *response.status_mut() = StatusCode::CONFLICT;
            Ok(response)
        }
        Err(error) => Err(error),
    }
}

/// `POST /app/tenant/closure/reopen`.
pub async fn reopen(State(state): State<AppState>, ctx: Ctx) -> Result<Response> {
    closure::reopen_tenant(&state.db, &ctx).await?;
    Ok(see_other(&format!("{PAGE}?done=reopened")))
}

/// `POST /app/tenant/exports`.
pub async fn export(State(state): State<AppState>, ctx: Ctx) -> Result<Response> {
    closure::request_export(&state.db, &ctx).await?;
    Ok(see_other(&format!("{PAGE}?done=exporting")))
}
