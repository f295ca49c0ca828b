//! Canned replies: the answers a team gives again and again, each under a shortcut that a
//! member types after `/` in the composer. Everyone who may reply may use them; the people who
//! curate the team's knowledge (`KnowledgeManage`) write them, and every change is audited.
//!
//! A reply's text may name the conversation's contact and the member who sends it,
//! `{{contact.name}}` and `{{agent.name}}`: [`fill`] puts them in when the reply is inserted, so
//! the member still reads (and may edit) exactly what the customer will get.

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::crm::accounts::like_pattern;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Ctx, Json, Path, Query};
use crate::rbac::Permission;

/// At most this many canned replies per tenant: a list a member can still scan.
pub const MAX_PER_TENANT: i64 = 1000;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    use Permission::*;
    api.endpoint(
        Method::GET,
        "/api/v1/canned-replies",
        Requires(ConversationsReply),
        ("conversations", "List the canned replies, by shortcut"),
        Contract::new()
            .query::<ListQuery>()
            .ok_list::<CannedReplyView>()
            .error(StatusCode::BAD_REQUEST, "invalid_filter"),
        list_route,
    )
    .endpoint(
        Method::POST,
        "/api/v1/canned-replies",
        Requires(KnowledgeManage),
        ("conversations", "Write a canned reply"),
        checked(
            Contract::new()
                .body::<NewCannedReply>()
                .created::<CannedReplyView>()
                .error(StatusCode::CONFLICT, "too_many_canned_replies"),
        ),
        create_route,
    )
    .endpoint(
        Method::GET,
        "/api/v1/canned-replies/{canned_reply_id}",
        Requires(ConversationsReply),
        ("conversations", "Show a canned reply"),
        Contract::new().ok::<CannedReplyView>(),
        show_route,
    )
    .endpoint(
        Method::PATCH,
        "/api/v1/canned-replies/{canned_reply_id}",
        Requires(KnowledgeManage),
        ("conversations", "Change a canned reply"),
        checked(
            Contract::new()
                .body::<CannedReplyChanges>()
                .ok::<CannedReplyView>(),
        ),
        update_route,
    )
    .endpoint(
        Method::DELETE,
        "/api/v1/canned-replies/{canned_reply_id}",
        Requires(KnowledgeManage),
        ("conversations", "Delete a canned reply"),
        Contract::new().no_content(),
        delete_route,
    )
}

/// The refusals of a canned reply's fields, for writing and changing alike.
fn checked(contract: Contract) -> Contract {
    contract
        .error(StatusCode::BAD_REQUEST, "invalid_shortcut")
        .error(StatusCode::BAD_REQUEST, "invalid_title")
        .error(StatusCode::BAD_REQUEST, "invalid_body")
        .error(StatusCode::CONFLICT, "shortcut_taken")
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = CannedReply)]
pub struct CannedReplyView {
    pub id: Uuid,
    /// Typed after `/` in the composer.
    pub shortcut: String,
    pub title: String,
    /// May hold `{{contact.name}}` and `{{agent.name}}`, filled in when inserted.
    pub body: String,
    #[schema(required = true)]
    pub created_by: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

const SHORTCUT: &str = "^[a-z0-9][a-z0-9_-]{0,39}$";

/// A new canned reply.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewCannedReply)]
pub struct NewCannedReply {
    /// Lowercase letters, digits, `-` and `_`, starting with a letter or digit; unique in the
    /// tenant.
    #[schema(
        min_length = 1,
        max_length = 40,
        pattern = "^[a-z0-9][a-z0-9_-]{0,39}$"
    )]
    pub shortcut: String,
    /// One line; trimmed.
    #[schema(min_length = 1, max_length = 200, pattern = "$one_line")]
    pub title: String,
    /// Trimmed.
    #[schema(min_length = 1, max_length = 4096, pattern = "$not_blank")]
    pub body: String,
}

/// The fields to change; an absent (or `null`) field stays as it is.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[schema(as = CannedReplyChanges)]
pub struct CannedReplyChanges {
    #[schema(
        min_length = 1,
        max_length = 40,
        pattern = "^[a-z0-9][a-z0-9_-]{0,39}$"
    )]
    pub shortcut: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = "$one_line")]
    pub title: Option<String>,
    #[schema(min_length = 1, max_length = 4096, pattern = "$not_blank")]
    pub body: Option<String>,
}

#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// A case-insensitive part of the shortcut, title or text.
    #[param(max_length = 200)]
    pub q: Option<String>,
}

fn shortcut(raw: &str) -> Result<String> {
    let ok = !raw.is_empty()
        && raw.len() <= 40
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && raw
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(raw.to_string())
    } else {
        Err(Error::bad_request(
            "invalid_shortcut",
            format!(
                "shortcut must be 1 to 40 lowercase letters, digits, - or _, starting with a \
                 letter or digit ({SHORTCUT})"
            ),
        ))
    }
}

fn title(raw: &str) -> Result<String> {
    let t = raw.trim();
    if t.is_empty() || t.chars().count() > 200 || t.chars().any(char::is_control) {
        return Err(Error::bad_request(
            "invalid_title",
            "title must be one line of 1 to 200 characters",
        ));
    }
    Ok(t.to_string())
}

fn body(raw: &str) -> Result<String> {
    let b = raw.trim();
    if b.is_empty() || b.chars().count() > 4096 || b.contains('\0') {
        return Err(Error::bad_request(
            "invalid_body",
            "body must be 1 to 4096 characters, not blank",
        ));
    }
    Ok(b.to_string())
}

/// The canned replies of the caller's tenant by shortcut, those matching `q` if given.
pub async fn list(db: &Db, ctx: &Ctx, q: Option<&str>) -> Result<Vec<CannedReplyView>> {
    let mut tx = ctx.begin(db).await?;
    let items = list_on(&mut tx, q).await?;
    tx.commit().await?;
    Ok(items)
}

/// [`list`] on the caller's transaction (a page that shows them with other things).
pub async fn list_on(
    conn: &mut sqlx::PgConnection,
    q: Option<&str>,
) -> Result<Vec<CannedReplyView>> {
    let q = q.map(str::trim).filter(|q| !q.is_empty());
    if q.is_some_and(|q| q.chars().count() > 200) {
        return Err(Error::bad_request(
            "invalid_filter",
            "search for at most 200 characters",
        ));
    }
    Ok(sqlx::query_as!(
        CannedReplyView,
        r#"SELECT id, shortcut, title, body, created_by, created_at, updated_at
           FROM canned_reply
           WHERE tenant_id = current_tenant_id()
             AND ($1::text IS NULL OR shortcut ILIKE $1 OR title ILIKE $1 OR body ILIKE $1)
           ORDER BY shortcut"#,
        q.map(like_pattern)
    )
    .fetch_all(conn)
    .await?)
}

pub async fn fetch_on(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<CannedReplyView> {
    sqlx::query_as!(
        CannedReplyView,
        r#"SELECT id, shortcut, title, body, created_by, created_at, updated_at
           FROM canned_reply WHERE id = $1 AND tenant_id = current_tenant_id()"#,
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

pub async fn fetch(db: &Db, ctx: &Ctx, id: Uuid) -> Result<CannedReplyView> {
    let mut tx = ctx.begin(db).await?;
    let item = fetch_on(&mut tx, id).await?;
    tx.commit().await?;
    Ok(item)
}

pub async fn create(db: &Db, ctx: &Ctx, new: &NewCannedReply) -> Result<CannedReplyView> {
    let (shortcut, title, body) = (
        shortcut(&new.shortcut)?,
        title(&new.title)?,
        body(&new.body)?,
    );
    let mut tx = ctx.begin(db).await?;
    // One tenant's list stays one a member can scan (and one no client can grow without end).
    let held = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM canned_reply WHERE tenant_id = current_tenant_id()"#
    )
    .fetch_one(&mut *tx)
    .await?;
    if held >= MAX_PER_TENANT {
        return Err(Error::conflict(
            "too_many_canned_replies",
            format!("a tenant holds at most {MAX_PER_TENANT} canned replies: delete one first"),
        ));
    }
    let item = sqlx::query_as!(
        CannedReplyView,
        r#"INSERT INTO canned_reply (id, tenant_id, shortcut, title, body, created_by)
           VALUES ($1, $2, $3, $4, $5, $6)
           RETURNING id, shortcut, title, body, created_by, created_at, updated_at"#,
        Uuid::now_v7(),
        ctx.tenant_id,
        shortcut,
        title,
        body,
        ctx.member_id
    )
    .fetch_one(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("canned_reply.created", "canned_reply", item.id).after(&item),
    )
    .await?;
    tx.commit().await?;
    Ok(item)
}

pub async fn update(
    db: &Db,
    ctx: &Ctx,
    id: Uuid,
    changes: &CannedReplyChanges,
) -> Result<CannedReplyView> {
    let shortcut = changes.shortcut.as_deref().map(shortcut).transpose()?;
    let title = changes.title.as_deref().map(title).transpose()?;
    let body = changes.body.as_deref().map(body).transpose()?;
    let mut tx = ctx.begin(db).await?;
    let before = fetch_on(&mut tx, id).await?;
    let after = sqlx::query_as!(
        CannedReplyView,
        r#"UPDATE canned_reply
           SET shortcut = coalesce($2, shortcut), title = coalesce($3, title),
               body = coalesce($4, body), updated_at = now()
           WHERE id = $1 AND tenant_id = current_tenant_id()
           RETURNING id, shortcut, title, body, created_by, created_at, updated_at"#,
        id,
        shortcut,
        title,
        body
    )
    .fetch_one(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("canned_reply.updated", "canned_reply", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

pub async fn delete(db: &Db, ctx: &Ctx, id: Uuid) -> Result<()> {
    let mut tx = ctx.begin(db).await?;
    let before = fetch_on(&mut tx, id).await?;
    sqlx::query!(
        "DELETE FROM canned_reply WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .execute(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("canned_reply.deleted", "canned_reply", id).before(&before),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A canned reply's text for one conversation: `{{contact.name}}` and `{{agent.name}}` filled
/// in (with "there" and the member's name when the contact has none), anything else as written.
pub fn fill(body: &str, contact_name: Option<&str>, agent_name: &str) -> String {
    let contact = contact_name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or("there");
    body.replace("{{contact.name}}", contact)
        .replace("{{agent.name}}", agent_name)
}

async fn list_route(
    State(db): State<Db>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<CannedReplyView>>> {
    list(&db, &ctx, query.q.as_deref()).await.map(Json)
}

async fn create_route(
    State(db): State<Db>,
    ctx: Ctx,
    Json(new): Json<NewCannedReply>,
) -> Result<(StatusCode, Json<CannedReplyView>)> {
    let item = create(&db, &ctx, &new).await?;
    Ok((StatusCode::CREATED, Json(item)))
}

async fn show_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<CannedReplyView>> {
    fetch(&db, &ctx, id).await.map(Json)
}

async fn update_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(changes): Json<CannedReplyChanges>,
) -> Result<Json<CannedReplyView>> {
    update(&db, &ctx, id, &changes).await.map(Json)
}

async fn delete_route(State(db): State<Db>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<StatusCode> {
    delete(&db, &ctx, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shortcut_is_lowercase_letters_digits_dashes_and_underscores() {
        for good in ["thanks", "refund-policy", "a", "x_1", "9lives"] {
            assert!(shortcut(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Thanks",
            "-x",
            "_x",
            "two words",
            "ümlaut",
            &"x".repeat(41),
        ] {
            assert!(shortcut(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filling_names_the_contact_and_the_member_and_leaves_other_braces_alone() {
        assert_eq!(
            fill(
                "Hi {{contact.name}}, {{agent.name}} here. {{order.id}}",
                Some("Ana"),
                "Bo"
            ),
            "Hi Ana, Bo here. {{order.id}}"
        );
        assert_eq!(fill("Hi {{contact.name}}", Some("  "), "Bo"), "Hi there");
        assert_eq!(fill("Hi {{contact.name}}", None, "Bo"), "Hi there");
    }
}
