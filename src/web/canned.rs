//! The canned replies page: the team's recurring answers by shortcut, and for those who curate
//! the team's knowledge, writing, changing and deleting them. Every change goes through the
//! conversations domain's own functions (`conversations::canned`), the ones the API calls.
//! The composer of a conversation offers them (`conversation.rs`).

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::login::Notice;
use super::{render, see_other, Chrome, Form};
use crate::app::AppState;
use crate::conversations::canned::{self, CannedReplyChanges, CannedReplyView, NewCannedReply};
use crate::error::{Error, Result};
use crate::http::{Access, Api, Ctx, Path, Query};
use crate::rbac::Permission;

pub const LIST: &str = "/app/canned-replies";

/// The pages, each with the access of the API route it stands for.
pub fn pages(api: Api<AppState>) -> Api<AppState> {
    use Access::*;
    use Permission::*;
    api.page(Method::GET, LIST, Requires(ConversationsReply), list)
        .page(Method::POST, LIST, Requires(KnowledgeManage), create)
        .page(
            Method::GET,
            "/app/canned-replies/{canned_reply_id}",
            Requires(KnowledgeManage),
            edit_form,
        )
        .page(
            Method::POST,
            "/app/canned-replies/{canned_reply_id}",
            Requires(KnowledgeManage),
            update,
        )
        .page(
            Method::POST,
            "/app/canned-replies/{canned_reply_id}/delete",
            Requires(KnowledgeManage),
            delete,
        )
}

/// What the form holds: typed, or stored.
#[derive(Deserialize, Default, Clone)]
pub struct CannedForm {
    #[serde(default)]
    shortcut: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: String,
}

impl From<&CannedReplyView> for CannedForm {
    fn from(c: &CannedReplyView) -> Self {
        CannedForm {
            shortcut: c.shortcut.clone(),
            title: c.title.clone(),
            body: c.body.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "web/canned.html")]
struct CannedPage {
    chrome: Chrome,
    can_manage: bool,
    notice: Option<Notice>,
    q: String,
    items: Vec<CannedReplyView>,
    /// The reply being changed, if any; `None` for the new-reply form.
    editing: Option<Uuid>,
    form: CannedForm,
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    q: Option<String>,
    /// Set by the redirect after a change, for its notice.
    done: Option<String>,
}

async fn page(
    state: &AppState,
    ctx: &Ctx,
    q: Option<&str>,
    editing: Option<Uuid>,
    form: CannedForm,
) -> Result<CannedPage> {
    let chrome = Chrome::new(state, ctx, "knowledge").await?;
    let items = canned::list(&state.db, ctx, q).await?;
    Ok(CannedPage {
        chrome,
        can_manage: ctx.role.can(Permission::KnowledgeManage),
        notice: None,
        q: q.unwrap_or_default().to_string(),
        items,
        editing,
        form,
    })
}

/// `GET /app/canned-replies`.
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> Result<Response> {
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let mut page = page(&state, &ctx, q, None, CannedForm::default()).await?;
    page.notice = match query.done.as_deref() {
        Some("saved") => Some(Notice {
            kind: "success",
            message: "Saved. Type / and its shortcut in a reply to use it.".to_string(),
        }),
        Some("deleted") => Some(Notice {
            kind: "success",
            message: "Deleted.".to_string(),
        }),
        _ => None,
    };
    Ok(render(&page))
}

/// The form again after a refusal, with what was typed and why, under the refusal's status.
fn refused(mut page: CannedPage, error: Error) -> Result<Response> {
    let refused = super::refusal(error)?;
    page.notice = Some(Notice {
        kind: "error",
        message: refused.message,
    });
    let mut response = render(&page);
    *response.status_mut() = refused.status;
    Ok(response)
}

/// `POST /app/canned-replies`: writes a new canned reply.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<CannedForm>,
) -> Result<Response> {
    let new = NewCannedReply {
        shortcut: form.shortcut.trim().to_string(),
        title: form.title.clone(),
        body: form.body.replace("\r\n", "\n"),
    };
    match canned::create(&state.db, &ctx, &new).await {
        Ok(_) => Ok(see_other(&format!("{LIST}?done=saved"))),
        Err(error) => refused(page(&state, &ctx, None, None, form).await?, error),
    }
}

/// `GET /app/canned-replies/{id}`: the list with this reply's form filled in.
pub async fn edit_form(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    let stored = canned::fetch(&state.db, &ctx, id).await?;
    let page = page(&state, &ctx, None, Some(id), CannedForm::from(&stored)).await?;
    Ok(render(&page))
}

/// `POST /app/canned-replies/{id}`: saves a change.
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<CannedForm>,
) -> Result<Response> {
    // Another tenant's id, or none, is not found whatever the form holds.
    canned::fetch(&state.db, &ctx, id).await?;
    let changes = CannedReplyChanges {
        shortcut: Some(form.shortcut.trim().to_string()),
        title: Some(form.title.clone()),
        body: Some(form.body.replace("\r\n", "\n")),
    };
    match canned::update(&state.db, &ctx, id, &changes).await {
        Ok(_) => Ok(see_other(&format!("{LIST}?done=saved"))),
        Err(error) => refused(page(&state, &ctx, None, Some(id), form).await?, error),
    }
}

/// `POST /app/canned-replies/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    canned::delete(&state.db, &ctx, id).await?;
    Ok(see_other(&format!("{LIST}?done=deleted")))
}
