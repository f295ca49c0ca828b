//! The API of two-factor sign-in (SEC-7): the second step of a login, the member's own
//! enrolment, check and disabling, the tenant's policy, and an administrator's reset. Every
//! change is an audit event (AUD-2); see `mfa.rs` for the rules.

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::guard::Ctx;
use super::mfa::{self, Enrolment, Proof, Requirement, Status};
use super::{login, AuthState};
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Json, Path, RequestMeta};
use crate::rbac::Permission;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    AuthState: FromRef<S>,
{
    use Access::*;
    api.endpoint(
        Method::POST,
        "/api/v1/auth/login/mfa",
        Public,
        (
            "auth",
            "Complete a login with a code of the authenticator or a recovery code; sets the \
             session cookie",
        ),
        Contract::new()
            .body::<SecondStep>()
            .ok::<super::routes::SessionView>()
            .error(StatusCode::UNAUTHORIZED, "challenge_expired")
            .error(StatusCode::UNAUTHORIZED, "invalid_code")
            .error(StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        second_step,
    )
    .endpoint(
        Method::GET,
        "/api/v1/auth/mfa",
        Authenticated,
        ("auth", "The caller's two-factor sign-in"),
        Contract::new().ok::<Status>(),
        status,
    )
    .endpoint(
        Method::POST,
        "/api/v1/auth/mfa/enrolment",
        Authenticated,
        (
            "auth",
            "Start enrolling an authenticator: its secret, URI and QR code (shown once)",
        ),
        Contract::new()
            .created::<Enrolment>()
            .error(StatusCode::FORBIDDEN, "forbidden")
            .error(StatusCode::CONFLICT, "mfa_already_enabled"),
        start_enrolment,
    )
    .endpoint(
        Method::POST,
        "/api/v1/auth/mfa/enrolment/confirm",
        Authenticated,
        (
            "auth",
            "Confirm the enrolment with a first code; answers the recovery codes (shown once)",
        ),
        Contract::new()
            .body::<CodeBody>()
            .ok::<RecoveryCodes>()
            .error(StatusCode::BAD_REQUEST, "invalid_code")
            .error(StatusCode::FORBIDDEN, "forbidden")
            .error(StatusCode::CONFLICT, "no_enrolment")
            .error(StatusCode::CONFLICT, "mfa_already_enabled"),
        confirm,
    )
    .endpoint(
        Method::POST,
        "/api/v1/auth/mfa/verify",
        Authenticated,
        (
            "auth",
            "Prove the second factor again (needed shortly before creating an API token)",
        ),
        Contract::new()
            .body::<CodeBody>()
            .no_content()
            .error(StatusCode::BAD_REQUEST, "invalid_code")
            .error(StatusCode::FORBIDDEN, "forbidden")
            .error(StatusCode::CONFLICT, "mfa_not_enabled"),
        verify,
    )
    .endpoint(
        Method::POST,
        "/api/v1/auth/mfa/disable",
        Authenticated,
        (
            "auth",
            "Turn two-factor sign-in off, with a current code or the password",
        ),
        Contract::new()
            .body::<DisableBody>()
            // Exactly one proof.
            .body_rule(json!({ "oneOf": [
                { "required": ["code"], "properties": { "code": { "type": "string" } } },
                { "required": ["password"], "properties": { "password": { "type": "string" } } },
            ] }))
            .no_content()
            .error(StatusCode::BAD_REQUEST, "invalid_code")
            .error(StatusCode::BAD_REQUEST, "invalid_credentials")
            .error(StatusCode::BAD_REQUEST, "proof_required")
            .error(StatusCode::FORBIDDEN, "forbidden")
            .error(StatusCode::CONFLICT, "mfa_not_enabled")
            .error(StatusCode::CONFLICT, "mfa_mandatory"),
        disable,
    )
    .endpoint(
        Method::GET,
        "/api/v1/auth/mfa/policy",
        Requires(Permission::TenantRead),
        ("auth", "Who must sign in with a second factor"),
        Contract::new().ok::<Policy>(),
        show_policy,
    )
    .endpoint(
        Method::PUT,
        "/api/v1/auth/mfa/policy",
        Requires(Permission::TenantManage),
        (
            "auth",
            "Make two-factor sign-in mandatory for admins, everyone, or nobody",
        ),
        Contract::new().body::<Policy>().ok::<Policy>(),
        update_policy,
    )
    .endpoint(
        Method::POST,
        "/api/v1/auth/mfa/members/{member_id}/reset",
        Requires(Permission::MembersManage),
        (
            "auth",
            "Reset a member's two-factor sign-in (a lost authenticator); ends their sessions",
        ),
        Contract::new()
            .no_content()
            .error(StatusCode::NOT_FOUND, "not_found")
            .error(StatusCode::CONFLICT, "mfa_not_enabled"),
        reset,
    )
}

/// The answer of a password that was right, when a code is still owed.
#[derive(Serialize, ToSchema)]
#[schema(as = MfaChallenge)]
pub struct ChallengeView {
    /// Send it back with the code to POST /api/v1/auth/login/mfa.
    pub challenge: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl From<mfa::Challenge> for ChallengeView {
    fn from(challenge: mfa::Challenge) -> Self {
        ChallengeView {
            challenge: challenge.token,
            expires_at: challenge.expires_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SecondStep {
    /// The challenge the password step answered.
    #[schema(max_length = 200)]
    challenge: String,
    /// Six digits of the authenticator, or a recovery code.
    #[schema(max_length = 40)]
    code: String,
}

async fn second_step(
    State(state): State<AuthState>,
    meta: RequestMeta,
    Json(body): Json<SecondStep>,
) -> Result<Response> {
    if body.challenge.len() > 200 || body.code.len() > 40 {
        return Err(mfa::wrong_code());
    }
    let signed_in = login::complete_sign_in(&state, &meta, &body.challenge, &body.code).await?;
    Ok(super::routes::signed_in_response(signed_in))
}

async fn status(State(state): State<AuthState>, ctx: Ctx) -> Result<Json<Status>> {
    Ok(Json(mfa::status(&state, &ctx).await?))
}

async fn start_enrolment(
    State(state): State<AuthState>,
    ctx: Ctx,
) -> Result<(StatusCode, Json<Enrolment>)> {
    Ok((
        StatusCode::CREATED,
        Json(mfa::start_enrolment(&state, &ctx).await?),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MfaCode)]
struct CodeBody {
    /// Six digits of the authenticator (or, to verify, a recovery code).
    #[schema(max_length = 40)]
    code: String,
}

/// The recovery codes: shown once, kept only as hashes. Each works once in place of a code.
#[derive(Serialize, ToSchema)]
struct RecoveryCodes {
    recovery_codes: Vec<String>,
}

fn bounded(code: &str) -> Result<&str> {
    if code.len() > 40 {
        return Err(Error::bad_request(
            "invalid_code",
            "the code is wrong, expired or already used",
        ));
    }
    Ok(code)
}

async fn confirm(
    State(state): State<AuthState>,
    ctx: Ctx,
    Json(body): Json<CodeBody>,
) -> Result<Json<RecoveryCodes>> {
    let recovery_codes = mfa::confirm(&state, &ctx, bounded(&body.code)?).await?;
    Ok(Json(RecoveryCodes { recovery_codes }))
}

async fn verify(
    State(state): State<AuthState>,
    ctx: Ctx,
    Json(body): Json<CodeBody>,
) -> Result<StatusCode> {
    mfa::verify(&state, &ctx, bounded(&body.code)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One of the two: a current code (or recovery code), or the password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MfaDisable)]
struct DisableBody {
    #[schema(max_length = 40)]
    code: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    password: Option<SecretString>,
}

async fn disable(
    State(state): State<AuthState>,
    ctx: Ctx,
    Json(body): Json<DisableBody>,
) -> Result<StatusCode> {
    let proof = match (body.code, body.password) {
        (Some(code), None) => Proof::Code(bounded(&code)?.to_owned()),
        (None, Some(password)) => Proof::Password(password),
        _ => {
            return Err(Error::bad_request(
                "proof_required",
                "send either a current code or the password",
            ))
        }
    };
    mfa::disable(&state, &ctx, proof).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who must sign in with a second factor.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MfaPolicy)]
struct Policy {
    required: Requirement,
}

async fn show_policy(State(state): State<AuthState>, ctx: Ctx) -> Result<Json<Policy>> {
    let mut tx = ctx.begin(&state).await?;
    let required = mfa::requirement(&mut tx, ctx.tenant_id).await?;
    tx.commit().await?;
    Ok(Json(Policy { required }))
}

async fn update_policy(
    State(state): State<AuthState>,
    ctx: Ctx,
    Json(body): Json<Policy>,
) -> Result<Json<Policy>> {
    mfa::set_requirement(&state, &ctx, body.required).await?;
    Ok(Json(body))
}

async fn reset(
    State(state): State<AuthState>,
    ctx: Ctx,
    Path(member_id): Path<Uuid>,
) -> Result<StatusCode> {
    mfa::reset(&state, &ctx, member_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
