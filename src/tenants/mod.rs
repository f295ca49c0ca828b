//! Tenants: sign-up, the tenant record, members, invitations and partner organisations.

pub mod closure;
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
use crate::http::{Access, Api, Contract, Json, RequestMeta};
use crate::rbac::{Permission, Role};
use members::{DisplayName, Email};
use utoipa::ToSchema;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    AuthState: FromRef<S>,
{
    use Access::*;
    let api = api
        .endpoint(
            Method::POST,
            "/api/v1/auth/signup",
            Public,
            ("auth", "Create a tenant and its owner"),
            Contract::new()
                .body::<SignupBody>()
                .created::<SignedUp>()
                .error(StatusCode::BAD_REQUEST, "invalid_email")
                .error(StatusCode::BAD_REQUEST, "invalid_display_name")
                .error(StatusCode::BAD_REQUEST, "weak_password")
                .error(StatusCode::CONFLICT, "slug_taken")
                .error(StatusCode::CONFLICT, "invalid_slug")
                .error(StatusCode::BAD_REQUEST, "invalid_name")
                .error(StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            signup,
        )
        .endpoint(
            Method::GET,
            "/api/v1/auth/me",
            Authenticated,
            ("auth", "The caller, its tenant and permissions"),
            Contract::new().ok::<Me>(),
            me,
        )
        .endpoint(
            Method::GET,
            "/api/v1/tenant",
            Requires(Permission::TenantRead),
            ("tenant", "The caller's tenant"),
            Contract::new().ok::<TenantView>(),
            get_tenant,
        )
        .endpoint(
            Method::PATCH,
            "/api/v1/tenant",
            Requires(Permission::TenantManage),
            ("tenant", "Rename the tenant"),
            Contract::new()
                .body::<UpdateTenant>()
                .ok::<TenantView>()
                .error(StatusCode::BAD_REQUEST, "invalid_name"),
            update_tenant,
        );
    invitations::routes(members::routes(api))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Tenant)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    /// Trimmed.
    #[schema(min_length = 1, max_length = 200, pattern = "$not_blank")]
    pub tenant_name: String,
    /// Members name it when they log in.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{1,62}$")]
    pub tenant_slug: String,
    /// The owner's address.
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// Trimmed; no control characters.
    #[schema(min_length = 1, max_length = 100, pattern = "$one_line")]
    pub display_name: String,
    /// Neither very common nor the owner's email (`password::check_policy`).
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 256)]
    pub password: SecretString,
}

/// A new tenant and its owner, signed in (the session cookie is set).
#[derive(Serialize, ToSchema)]
struct SignedUp {
    tenant: TenantView,
    member: members::MemberView,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
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
        Json(SignedUp {
            tenant: created.tenant,
            member: created.owner,
            expires_at: new_session.expires_at,
        }),
    ))
}

async fn get_tenant(State(state): State<AuthState>, ctx: Ctx) -> Result<Json<TenantView>> {
    let mut tx = ctx.begin(&state).await?;
    let tenant = fetch(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(tenant))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateTenant {
    /// Trimmed.
    #[schema(min_length = 1, max_length = 200, pattern = "$not_blank")]
    name: String,
}

/// The caller: who they are, in which tenant, and what they may do.
#[derive(Serialize, ToSchema)]
struct Me {
    member: members::MemberView,
    tenant: TenantView,
    role: Role,
    /// The permissions the role holds (`tenant.read`, `members.manage`...).
    permissions: Vec<&'static str>,
    credential: CredentialKind,
}

/// What the caller authenticated with.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum CredentialKind {
    /// A browser session (cookie).
    Session,
    /// An API token (bearer).
    ApiToken,
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
async fn me(State(state): State<AuthState>, ctx: Ctx) -> Result<Json<Me>> {
    let mut tx = ctx.begin(&state).await?;
    let member = members::fetch(&mut tx, ctx.member_id).await?;
    let tenant = fetch(&mut tx).await?;
    tx.commit().await?;
    let permissions = ctx.role.permissions().iter().map(|p| p.as_str()).collect();
    Ok(Json(Me {
        member,
        tenant,
        role: ctx.role,
        permissions,
        credential: match ctx.credential {
            Credential::Session(_) => CredentialKind::Session,
            Credential::ApiToken(_) => CredentialKind::ApiToken,
        },
    }))
}
