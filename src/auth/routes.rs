//! Login, logout, the caller's own account, password change and API tokens. Each of these is
//! a security event in the audit log (AUD-2).

use axum::extract::{FromRef, State};
use axum::http::{header, Method, StatusCode};
use axum::response::IntoResponse;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::guard::Ctx;
use super::member::MemberView;
use super::AuthState;
use super::{login, revocation, session, token};
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::http::Rfc3339;
use crate::http::{Access, Api, Contract, Json, Path, RequestMeta};
use crate::rbac::{Permission, Role};

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    AuthState: FromRef<S>,
{
    use Access::*;
    let api = api.endpoint(
        Method::POST,
        "/api/v1/auth/login",
        Public,
        (
            "auth",
            "Log in; sets the session cookie, or, for a member with two-factor sign-in, answers \
             202 with a challenge for POST /api/v1/auth/login/mfa",
        ),
        Contract::new()
            .body::<LoginBody>()
            .ok::<SessionView>()
            .returns::<super::mfa_routes::ChallengeView>(StatusCode::ACCEPTED)
            .error(StatusCode::UNAUTHORIZED, "invalid_credentials")
            .error(StatusCode::FORBIDDEN, "password_sign_in_disabled")
            .error(StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        login,
    )
    .endpoint(
        Method::POST,
        "/api/v1/auth/logout",
        Authenticated,
        ("auth", "End the current session"),
        Contract::new()
            .no_content()
            .error(StatusCode::BAD_REQUEST, "not_a_session"),
        logout,
    )
    .endpoint(
        Method::POST,
        "/api/v1/auth/password",
        Authenticated,
        ("auth", "Change the caller's password"),
        Contract::new()
            .body::<PasswordBody>()
            .no_content()
            .error(StatusCode::BAD_REQUEST, "invalid_credentials")
            .error(StatusCode::BAD_REQUEST, "weak_password")
            .error(StatusCode::FORBIDDEN, "forbidden"),
        change_password,
    )
    .endpoint(
        Method::GET,
        "/api/v1/tokens",
        Requires(Permission::TokensManage),
        ("tokens", "List API tokens"),
        Contract::new().ok_list::<TokenView>(),
        list_tokens,
    )
    .endpoint(
        Method::POST,
        "/api/v1/tokens",
        Requires(Permission::TokensManage),
        ("tokens", "Create an API token (shown once)"),
        Contract::new()
            .body::<CreateToken>()
            .created::<CreatedToken>()
            .error(StatusCode::BAD_REQUEST, "invalid_name")
            .error(StatusCode::BAD_REQUEST, "invalid_role")
            .error(StatusCode::BAD_REQUEST, "invalid_expiry")
            .error(StatusCode::FORBIDDEN, "mfa_check_required")
            .error(StatusCode::CONFLICT, "token_name_taken"),
        create_token,
    )
    .endpoint(
        Method::DELETE,
        "/api/v1/tokens/{token_id}",
        Requires(Permission::TokensManage),
        ("tokens", "Revoke an API token"),
        Contract::new().no_content(),
        revoke_token,
    );
    super::oidc_routes::routes(super::mfa_routes::routes(api))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    /// The tenant's slug: members belong to one tenant.
    tenant: String,
    #[schema(format = Email)]
    email: String,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionView {
    pub member: MemberView,
    pub tenant_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

async fn login(
    State(state): State<AuthState>,
    meta: RequestMeta,
    Json(body): Json<LoginBody>,
) -> Result<impl IntoResponse> {
    let outcome = login::sign_in(
        &state,
        &meta,
        login::Credentials {
            tenant: &body.tenant,
            email: &body.email,
            password: body.password,
        },
    )
    .await?;
    Ok(match outcome {
        login::SignInOutcome::SignedIn(signed_in) => signed_in_response(signed_in),
        login::SignInOutcome::CodeOwed(challenge) => (
            StatusCode::ACCEPTED,
            Json(super::mfa_routes::ChallengeView::from(challenge)),
        )
            .into_response(),
    })
}

/// The session cookie and the session, the answer of a completed sign-in.
pub(super) fn signed_in_response(signed_in: login::SignedIn) -> axum::response::Response {
    let view = SessionView {
        member: signed_in.member,
        tenant_id: signed_in.tenant_id,
        expires_at: signed_in.session.expires_at,
    };
    ([(header::SET_COOKIE, signed_in.session.cookie)], Json(view)).into_response()
}

async fn logout(State(state): State<AuthState>, ctx: Ctx) -> Result<impl IntoResponse> {
    login::sign_out(&state, &ctx).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session::clearing_cookie())],
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    #[schema(value_type = String, format = Password)]
    current_password: SecretString,
    /// Neither very common nor the member's email (`password::check_policy`).
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 256)]
    new_password: SecretString,
}

async fn change_password(
    State(state): State<AuthState>,
    ctx: Ctx,
    Json(body): Json<PasswordBody>,
) -> Result<StatusCode> {
    login::change_password(&state, &ctx, body.current_password, body.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
#[schema(as = ApiToken)]
struct TokenView {
    id: Uuid,
    name: String,
    #[schema(value_type = Role)]
    role: String,
    /// The token's first characters, to recognise it by.
    prefix: String,
    created_by: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    revoked_at: Option<OffsetDateTime>,
}

async fn list_tokens(State(state): State<AuthState>, ctx: Ctx) -> Result<Json<Vec<TokenView>>> {
    let mut tx = ctx.begin(&state).await?;
    let tokens = sqlx::query_as!(
        TokenView,
        "SELECT id, name, role, prefix, created_by, created_at, expires_at, last_used_at, revoked_at
         FROM api_token WHERE tenant_id = $1 ORDER BY created_at DESC",
        ctx.tenant_id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(tokens))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    /// Unique among the tenant's active tokens; trimmed.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// At most the caller's own role; never owner nor partner.
    #[schema(schema_with = token_role_schema)]
    role: Role,
    /// Days until expiry; no expiry when absent.
    #[schema(minimum = 1, maximum = 3650)]
    expires_in_days: Option<u32>,
}

fn token_role_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::http::contract::schema(serde_json::json!({
        "type": "string",
        "enum": ["admin", "agent", "reviewer", "auditor"]
    }))
}

/// A new API token: the only answer that holds its secret.
#[derive(Serialize, ToSchema)]
struct CreatedToken {
    id: Uuid,
    name: String,
    role: Role,
    prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    /// The bearer token. Shown once: only its hash is kept.
    token: String,
}

async fn create_token(
    State(state): State<AuthState>,
    ctx: Ctx,
    Json(body): Json<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>)> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::bad_request(
            "invalid_name",
            "name must be 1 to 100 characters",
        ));
    }
    if body.role == Role::Owner || !ctx.role.can_grant(body.role) {
        return Err(Error::Forbidden(
            "a token cannot hold a role above your own, nor ownership",
        ));
    }
    if body.role == Role::Partner {
        return Err(Error::bad_request(
            "invalid_role",
            "partner tokens are not supported",
        ));
    }
    if body.expires_in_days.is_some_and(|d| d == 0 || d > 3650) {
        return Err(Error::bad_request(
            "invalid_expiry",
            "expires_in_days must be 1 to 3650",
        ));
    }
    let (secret, prefix) = token::new_api_token();
    let mut tx = ctx.begin(&state).await?;
    super::mfa::require_recent_check(&mut tx, &ctx).await?;
    let row = sqlx::query!(
        r#"INSERT INTO api_token (id, tenant_id, created_by, name, role, token_hash, prefix, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7,
                   now() + make_interval(days => $8::int))
           RETURNING id, created_at, expires_at"#,
        Uuid::now_v7(),
        ctx.tenant_id,
        ctx.member_id,
        name,
        body.role.as_str(),
        token::sha256(secret.as_bytes()),
        prefix,
        body.expires_in_days.map(|d| d as i32),
    )
    .fetch_one(&mut *tx)
    .await?;
    ctx.audit(&mut tx, AuditEvent::new("token.created", "api_token", row.id)
            .after(json!({ "name": name, "role": body.role, "prefix": prefix, "expires_at": row.expires_at.rfc3339() })))
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: row.id,
            name: name.to_string(),
            role: body.role,
            prefix,
            created_at: row.created_at,
            expires_at: row.expires_at,
            token: secret,
        }),
    ))
}

async fn revoke_token(
    State(state): State<AuthState>,
    ctx: Ctx,
    Path(token_id): Path<Uuid>,
) -> Result<StatusCode> {
    let mut tx = ctx.begin(&state).await?;
    let revoked = sqlx::query!(
        "UPDATE api_token SET revoked_at = now()
         WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL RETURNING name, created_by",
        token_id,
        ctx.tenant_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    revocation::announce(&mut tx, ctx.tenant_id, revoked.created_by).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("token.revoked", "api_token", token_id)
            .before(json!({ "name": revoked.name })),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
