//! Accounts: the companies a tenant serves. An account may be shared with one partner
//! organisation, whose partner members then see it and nothing else (SEC-2).

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{check_attributes, page_limit};
use crate::audit::AuditEvent;
use crate::auth::Ctx;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Json, Page, Path, Query};
use crate::rbac::{Permission, Role};
use utoipa::{IntoParams, ToSchema};

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    api.endpoint(
        Method::GET,
        "/api/v1/accounts",
        Requires(Permission::ContactsRead),
        ("crm", "List and search accounts"),
        Contract::new()
            .query::<ListQuery>()
            .ok_page::<AccountView>()
            .error(StatusCode::BAD_REQUEST, "invalid_limit"),
        list,
    )
    .endpoint(
        Method::POST,
        "/api/v1/accounts",
        Requires(Permission::ContactsWrite),
        ("crm", "Create an account"),
        Contract::new()
            .body::<AccountBody>()
            // A name, not null (said with `not`, which leaves the field's type to the body's
            // own schema: client generators cannot merge two types of one field).
            .body_rule(json!({
                "required": ["name"],
                "not": { "required": ["name"], "properties": { "name": { "type": "null" } } }
            }))
            .created::<AccountView>()
            .error(StatusCode::BAD_REQUEST, "invalid_name")
            .error(StatusCode::BAD_REQUEST, "name_too_long")
            .error(StatusCode::BAD_REQUEST, "invalid_attributes")
            .error(StatusCode::NOT_FOUND, "not_found"),
        create,
    )
    .endpoint(
        Method::GET,
        "/api/v1/accounts/{account_id}",
        Requires(Permission::ContactsRead),
        ("crm", "Show an account"),
        Contract::new().ok::<AccountView>(),
        show,
    )
    .endpoint(
        Method::PATCH,
        "/api/v1/accounts/{account_id}",
        Requires(Permission::ContactsWrite),
        ("crm", "Update an account"),
        Contract::new()
            .body::<AccountBody>()
            .ok::<AccountView>()
            .error(StatusCode::BAD_REQUEST, "invalid_name")
            .error(StatusCode::BAD_REQUEST, "name_too_long")
            .error(StatusCode::BAD_REQUEST, "invalid_attributes"),
        update,
    )
    .endpoint(
        Method::DELETE,
        "/api/v1/accounts/{account_id}",
        Requires(Permission::ContactsWrite),
        ("crm", "Delete an account"),
        Contract::new()
            .no_content()
            .error(StatusCode::CONFLICT, "legal_hold"),
        delete,
    )
    .endpoint(
        Method::GET,
        "/api/v1/partner/accounts",
        Requires(Permission::PartnerSharedRead),
        (
            "partner",
            "Accounts shared with the caller's partner organisation",
        ),
        Contract::new().ok_list::<AccountView>(),
        partner_list,
    )
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Account)]
pub struct AccountView {
    pub id: Uuid,
    pub name: String,
    pub domain: Option<String>,
    /// Free-form: the tenant's own fields, a JSON object of at most 16 KiB.
    #[schema(value_type = Object)]
    pub attributes: Value,
    /// The partner organisation the account is shared with.
    pub partner_org_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

pub async fn fetch(conn: &mut PgConnection, id: Uuid) -> Result<AccountView> {
    sqlx::query_as!(
        AccountView,
        "SELECT id, name, domain, attributes, partner_org_id, created_at, updated_at
         FROM account WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// A case-insensitive part of the name or domain.
    q: Option<String>,
    /// The last id of the previous page (its `next_cursor`).
    after: Option<Uuid>,
    /// 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

async fn list(
    State(state): State<Db>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> Result<Json<Page<AccountView>>> {
    let limit = page_limit(query.limit)?;
    let mut tx = ctx.begin(&state).await?;
    let items = search(&mut tx, query.q.as_deref(), query.after, limit).await?;
    tx.commit().await?;
    Ok(Json(Page::new(items, limit, |a| a.id)))
}

/// The transaction's tenant's accounts, newest first, whose name or domain holds `q`, after
/// the account `after` (the API's list and the accounts page).
pub async fn search(
    conn: &mut PgConnection,
    q: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<AccountView>> {
    let pattern = q.map(str::trim).filter(|q| !q.is_empty()).map(like_pattern);
    Ok(sqlx::query_as!(
        AccountView,
        "SELECT id, name, domain, attributes, partner_org_id, created_at, updated_at
         FROM account
         WHERE tenant_id = current_tenant_id()
           AND ($1::text IS NULL OR name ILIKE $1 OR domain ILIKE $1)
           AND ($2::uuid IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
        pattern,
        after,
        limit
    )
    .fetch_all(conn)
    .await?)
}

/// A case-insensitive substring pattern with the user's wildcards escaped.
pub fn like_pattern(q: &str) -> String {
    let escaped = q
        .trim()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// An account to create (`name` required), or the fields to change: an absent field stays as
/// it is, `null` clears it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AccountFields)]
struct AccountBody {
    /// Required to create; trimmed.
    #[schema(min_length = 1, max_length = 200, pattern = "$not_blank")]
    name: Option<String>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    domain: Option<Option<String>>,
    /// Free-form: the tenant's own fields, a JSON object of at most 16 KiB.
    #[schema(value_type = Option<Object>)]
    attributes: Option<Value>,
    /// Share the account with this partner organisation.
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    partner_org_id: Option<Option<Uuid>>,
}

async fn create(
    State(state): State<Db>,
    ctx: Ctx,
    Json(body): Json<AccountBody>,
) -> Result<(StatusCode, Json<AccountView>)> {
    let name = body.name.as_deref().map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(Error::bad_request("invalid_name", "name is required"));
    }
    let attributes = body.attributes.unwrap_or_else(|| json!({}));
    check_attributes(&attributes)?;
    let mut tx = ctx.begin(&state).await?;
    let account = sqlx::query_as!(
        AccountView,
        "INSERT INTO account (id, tenant_id, name, domain, attributes, partner_org_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, name, domain, attributes, partner_org_id, created_at, updated_at",
        Uuid::now_v7(),
        ctx.tenant_id,
        name,
        body.domain.flatten(),
        attributes,
        body.partner_org_id.flatten()
    )
    .fetch_one(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("account.created", "account", account.id).after(&account),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(account)))
}

async fn show(
    State(state): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<AccountView>> {
    let mut tx = ctx.begin(&state).await?;
    let account = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(account))
}

async fn update(
    State(state): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<AccountBody>,
) -> Result<Json<AccountView>> {
    let mut tx = ctx.begin(&state).await?;
    let before = fetch(&mut tx, id).await?;
    let name = match body.name.as_deref().map(str::trim) {
        Some("") => return Err(Error::bad_request("invalid_name", "name cannot be empty")),
        Some(name) => name.to_string(),
        None => before.name.clone(),
    };
    let attributes = body.attributes.unwrap_or_else(|| before.attributes.clone());
    check_attributes(&attributes)?;
    let after = sqlx::query_as!(
        AccountView,
        "UPDATE account SET name = $2, domain = $3, attributes = $4, partner_org_id = $5, updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()
         RETURNING id, name, domain, attributes, partner_org_id, created_at, updated_at",
        id,
        name,
        body.domain.unwrap_or(before.domain.clone()),
        attributes,
        body.partner_org_id.unwrap_or(before.partner_org_id)
    )
    .fetch_one(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("account.updated", "account", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}

async fn delete(State(state): State<Db>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<StatusCode> {
    let mut tx = ctx.begin(&state).await?;
    let before = fetch(&mut tx, id).await?;
    sqlx::query!(
        "DELETE FROM account WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .execute(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("account.deleted", "account", id).before(&before),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Partners see exactly the accounts shared with their organisation; owners and admins see
/// every shared account.
async fn partner_list(State(state): State<Db>, ctx: Ctx) -> Result<Json<Vec<AccountView>>> {
    let only_org = if ctx.role == Role::Partner {
        Some(
            ctx.partner_org_id
                .ok_or(Error::Forbidden("a partner without a partner organisation"))?,
        )
    } else {
        None
    };
    let mut tx = ctx.begin(&state).await?;
    let items = sqlx::query_as!(
        AccountView,
        "SELECT id, name, domain, attributes, partner_org_id, created_at, updated_at
         FROM account
         WHERE tenant_id = $1 AND partner_org_id IS NOT NULL
           AND ($2::uuid IS NULL OR partner_org_id = $2)
         ORDER BY name",
        ctx.tenant_id,
        only_org
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(items))
}

/// The whole account row, for the export of a contact of it (DSR-1).
pub async fn export_row(conn: &mut PgConnection, id: Uuid) -> Result<Option<serde_json::Value>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT to_jsonb(a) AS "row!" FROM account a WHERE id = $1 AND tenant_id = current_tenant_id()"#,
        id
    )
    .fetch_optional(conn)
    .await?)
}
