//! Tenants: sign-up, the tenant record, members, invitations and partner organisations.

pub mod invitations;
pub mod members;

use axum::extract::{FromRef, State};
use axum::http::{header, Method, StatusCode};
use axum::response::IntoResponse;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, AuditEvent, AuditSource};
use crate::auth::AuthState;
use crate::auth::{password, session, Credential, Ctx};
use crate::error::Result;
use crate::http::Rfc3339;
use crate::http::{Access, Api, Json, RequestMeta};
use crate::rbac::{Permission, Role};
use members::{DisplayName, Email};

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    AuthState: FromRef<S>,
{
    use Access::*;
    let api = api
        .route(
            Method::POST,
            "/api/v1/auth/signup",
            Public,
            ("auth", "Create a tenant and its owner"),
            signup,
        )
        .route(
            Method::GET,
            "/api/v1/auth/me",
            Authenticated,
            ("auth", "The caller, its tenant and permissions"),
            me,
        )
        .route(
            Method::GET,
            "/api/v1/tenant",
            Requires(Permission::TenantRead),
            ("tenant", "The caller's tenant"),
            get_tenant,
        )
        .route(
            Method::PATCH,
            "/api/v1/tenant",
            Requires(Permission::TenantManage),
            ("tenant", "Rename the tenant"),
            update_tenant,
        );
    invitations::routes(members::routes(api))
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantView {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The tenant the transaction is pinned to.
pub async fn fetch(conn: &mut PgConnection) -> Result<TenantView> {
    Ok(sqlx::query_as!(
        TenantView,
        "SELECT id, slug, name, created_at FROM tenant WHERE id = current_tenant_id()"
    )
    .fetch_one(conn)
    .await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    pub tenant_name: String,
    pub tenant_slug: String,
    pub email: String,
    pub display_name: String,
    pub password: SecretString,
}

pub struct NewTenant {
    pub tenant: TenantView,
    pub owner: members::MemberView,
}

/// Creates a tenant and its owner in one transaction, audited. Used by sign-up and `--demo`.
pub async fn create_tenant(
    state: &AuthState,
    body: SignupBody,
    meta: &RequestMeta,
) -> Result<(NewTenant, session::NewSession)> {
    let email = Email::parse(&body.email)?;
    let display_name = DisplayName::parse(&body.display_name)?;
    let name = body.tenant_name.trim();
    password::check_policy(&body.password, email.as_str())?;
    let hash = password::hash(body.password).await?;

    let tenant_id = Uuid::now_v7();
    let owner_id = Uuid::now_v7();
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let tenant = sqlx::query_as!(
        TenantView,
        "INSERT INTO tenant (id, slug, name) VALUES ($1, $2, $3)
         RETURNING id, slug, name, created_at",
        tenant_id,
        body.tenant_slug.trim(),
        name
    )
    .fetch_one(&mut *tx)
    .await?;
    let owner = members::insert(
        &mut tx,
        owner_id,
        &email,
        &display_name,
        &hash,
        Role::Owner,
        None,
    )
    .await?;
    let source = AuditSource::anonymous(tenant_id, meta);
    audit::record(
        &mut tx,
        &source,
        AuditEvent::new("tenant.created", "tenant", tenant_id).after(&tenant),
    )
    .await?;
    audit::record(
        &mut tx,
        &source,
        AuditEvent::new("member.created", "member", owner_id).after(&owner),
    )
    .await?;
    let new_session = session::create(&mut tx, state, tenant_id, owner_id, meta).await?;
    audit::record(
        &mut tx,
        &AuditSource::member(tenant_id, owner_id, meta),
        AuditEvent::new("auth.login.succeeded", "session", new_session.id)
            .after(json!({ "member_id": owner_id, "via": "signup" })),
    )
    .await?;
    tx.commit().await?;
    Ok((NewTenant { tenant, owner }, new_session))
}

async fn signup(
    State(state): State<AuthState>,
    meta: RequestMeta,
    Json(body): Json<SignupBody>,
) -> Result<impl IntoResponse> {
    state.throttle.check_ip(meta.ip)?;
    let (created, new_session) = create_tenant(&state, body, &meta).await?;
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, new_session.cookie)],
        Json(
            json!({ "tenant": created.tenant, "member": created.owner, "expires_at": new_session.expires_at.rfc3339() }),
        ),
    ))
}

async fn get_tenant(State(state): State<AuthState>, ctx: Ctx) -> Result<Json<TenantView>> {
    let mut tx = ctx.begin(&state).await?;
    let tenant = fetch(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(tenant))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateTenant {
    name: String,
}

async fn update_tenant(
    State(state): State<AuthState>,
    ctx: Ctx,
    Json(body): Json<UpdateTenant>,
) -> Result<Json<TenantView>> {
    let mut tx = ctx.begin(&state).await?;
    let before = fetch(&mut tx).await?;
    let after = sqlx::query_as!(
        TenantView,
        "UPDATE tenant SET name = $2, updated_at = now() WHERE id = $1
         RETURNING id, slug, name, created_at",
        ctx.tenant_id,
        body.name.trim()
    )
    .fetch_one(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("tenant.updated", "tenant", ctx.tenant_id)
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}

/// The caller, its tenant and what its role allows. Served under `/auth` with the other
/// routes of the signed-in member, answered here where the tenant is known.
async fn me(State(state): State<AuthState>, ctx: Ctx) -> Result<Json<serde_json::Value>> {
    let mut tx = ctx.begin(&state).await?;
    let member = members::fetch(&mut tx, ctx.member_id).await?;
    let tenant = fetch(&mut tx).await?;
    tx.commit().await?;
    let permissions: Vec<&str> = ctx.role.permissions().iter().map(|p| p.as_str()).collect();
    Ok(Json(json!({
        "member": member,
        "tenant": tenant,
        "role": ctx.role,
        "permissions": permissions,
        "credential": match ctx.credential {
            Credential::Session(_) => "session",
            Credential::ApiToken(_) => "api_token",
        },
    })))
}
