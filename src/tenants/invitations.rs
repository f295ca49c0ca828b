//! Invitations: owners and admins invite members with a role; the invitee accepts with the
//! single-use token (sent by the inviter out of band) and chooses a password.

use axum::extract::{FromRef, State};
use axum::http::{header, Method, StatusCode};
use axum::response::IntoResponse;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::members::{self, DisplayName, Email};
use crate::audit::{self, AuditEvent, AuditSource};
use crate::auth::routes::SessionView;
use crate::auth::AuthState;
use crate::auth::{password, session, token, Ctx};
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Json, Path, RequestMeta};
use crate::rbac::{Permission, Role};
use utoipa::ToSchema;

/// How long an invitation stays valid.
const INVITATION_DAYS: i32 = 7;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    AuthState: FromRef<S>,
{
    use Access::*;
    api.endpoint(
        Method::GET,
        "/api/v1/invitations",
        Requires(Permission::MembersRead),
        ("members", "List pending invitations"),
        Contract::new().ok_list::<InvitationView>(),
        list,
    )
    .endpoint(
        Method::POST,
        "/api/v1/invitations",
        Requires(Permission::MembersManage),
        ("members", "Invite a member with a role"),
        Contract::new()
            .body::<CreateInvitation>()
            .body_rule(crate::tenants::members::PARTNER_ORG_RULE.clone())
            .created::<CreatedInvitation>()
            .error(StatusCode::BAD_REQUEST, "invalid_email")
            .error(StatusCode::NOT_FOUND, "not_found")
            .error(StatusCode::BAD_REQUEST, "partner_org_required")
            .error(StatusCode::CONFLICT, "email_taken"),
        create,
    )
    .endpoint(
        Method::DELETE,
        "/api/v1/invitations/{invitation_id}",
        Requires(Permission::MembersManage),
        ("members", "Withdraw an invitation"),
        Contract::new().no_content(),
        revoke,
    )
    .endpoint(
        Method::POST,
        "/api/v1/invitations/accept",
        Public,
        ("members", "Accept an invitation; sets the session cookie"),
        Contract::new()
            .body::<AcceptInvitation>()
            .created::<SessionView>()
            .error(StatusCode::CONFLICT, "invalid_invitation")
            .error(StatusCode::BAD_REQUEST, "invalid_display_name")
            .error(StatusCode::BAD_REQUEST, "weak_password")
            .error(StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        accept,
    )
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Invitation)]
struct InvitationView {
    id: Uuid,
    #[schema(format = Email)]
    email: String,
    #[schema(value_type = Role)]
    role: String,
    partner_org_id: Option<Uuid>,
    invited_by: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

async fn list(State(state): State<AuthState>, ctx: Ctx) -> Result<Json<Vec<InvitationView>>> {
    let mut tx = ctx.begin(&state).await?;
    let rows = sqlx::query_as!(
        InvitationView,
        "SELECT id, email, role, partner_org_id, invited_by, created_at, expires_at
         FROM invitation
         WHERE tenant_id = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now()
         ORDER BY created_at DESC",
        ctx.tenant_id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(rows))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateInvitation {
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// At most the inviter's own role.
    role: Role,
    /// Needed with the partner role, refused with any other.
    partner_org_id: Option<Uuid>,
}

/// A new invitation: the only answer that holds its token.
#[derive(Serialize, ToSchema)]
struct CreatedInvitation {
    #[serde(flatten)]
    invitation: InvitationView,
    /// What the invited person accepts with. Shown once: only its hash is kept.
    token: String,
}

async fn create(
    State(state): State<AuthState>,
    ctx: Ctx,
    Json(body): Json<CreateInvitation>,
) -> Result<(StatusCode, Json<CreatedInvitation>)> {
    let email = Email::parse(&body.email)?;
    if !ctx.role.can_grant(body.role) {
        return Err(Error::Forbidden(
            "you cannot invite someone with a role above your own",
        ));
    }
    let secret = token::new_opaque_token();
    let mut tx = ctx.begin(&state).await?;
    members::check_partner_org(&mut tx, ctx.tenant_id, body.partner_org_id).await?;
    let taken = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM member WHERE tenant_id = $1 AND lower(email) = lower($2)) AS "taken!""#,
        ctx.tenant_id,
        email.as_str()
    )
    .fetch_one(&mut *tx)
    .await?;
    if taken {
        return Err(Error::conflict(
            "email_taken",
            "a member with that email already exists",
        ));
    }
    let invitation = sqlx::query_as!(
        InvitationView,
        "INSERT INTO invitation (id, tenant_id, email, role, partner_org_id, token_hash, invited_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(days => $8))
         RETURNING id, email, role, partner_org_id, invited_by, created_at, expires_at",
        Uuid::now_v7(),
        ctx.tenant_id,
        email.as_str(),
        body.role.as_str(),
        body.partner_org_id,
        token::sha256(secret.as_bytes()),
        ctx.member_id,
        INVITATION_DAYS
    )
    .fetch_one(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("invitation.created", "invitation", invitation.id).after(&invitation),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedInvitation {
            invitation,
            token: secret,
        }),
    ))
}

/// Whether a member may stand behind an invitation to `invited`: active, still managing
/// members, and allowed to grant that role. Asked when the invitation is accepted, not only when
/// it is made, so an invitation is worth no more than its inviter is now.
fn may_invite(inviter_role: Option<Role>, inviter_status: &str, invited: Role) -> bool {
    inviter_status == "active"
        && inviter_role.is_some_and(|r| r.can(Permission::MembersManage) && r.can_grant(invited))
}

/// Withdraws the pending invitations a member may no longer stand behind, after they were
/// disabled or their role changed (on the caller's transaction, audited one by one). Without
/// this, an admin could invite a second identity as admin and keep that door open after being
/// disabled or demoted.
pub async fn withdraw_unbacked(
    conn: &mut sqlx::PgConnection,
    source: &AuditSource,
    tenant_id: Uuid,
    inviter_id: Uuid,
    inviter_role: Role,
    inviter_status: &str,
) -> Result<()> {
    let still_grants: Vec<String> = Role::ALL
        .into_iter()
        .filter(|r| may_invite(Some(inviter_role), inviter_status, *r))
        .map(|r| r.as_str().to_string())
        .collect();
    let withdrawn = sqlx::query!(
        "UPDATE invitation SET revoked_at = now()
         WHERE tenant_id = $1 AND invited_by = $2 AND accepted_at IS NULL AND revoked_at IS NULL
           AND NOT (role = ANY($3))
         RETURNING id, email, role",
        tenant_id,
        inviter_id,
        &still_grants
    )
    .fetch_all(&mut *conn)
    .await?;
    for invitation in withdrawn {
        audit::record(
            &mut *conn,
            source,
            AuditEvent::new("invitation.revoked", "invitation", invitation.id)
                .before(json!({ "email": invitation.email, "role": invitation.role }))
                .after(json!({
                    "reason": "the inviter may no longer grant this role",
                    "inviter": inviter_id,
                    "inviter_role": inviter_role,
                    "inviter_status": inviter_status,
                })),
        )
        .await?;
    }
    Ok(())
}

async fn revoke(
    State(state): State<AuthState>,
    ctx: Ctx,
    Path(invitation_id): Path<Uuid>,
) -> Result<StatusCode> {
    let mut tx = ctx.begin(&state).await?;
    let email = sqlx::query_scalar!(
        "UPDATE invitation SET revoked_at = now()
         WHERE id = $1 AND tenant_id = $2 AND accepted_at IS NULL AND revoked_at IS NULL
         RETURNING email",
        invitation_id,
        ctx.tenant_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("invitation.revoked", "invitation", invitation_id)
            .before(json!({ "email": email })),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AcceptInvitation {
    /// The invitation's token, as its creation answered it.
    token: String,
    /// Trimmed; no control characters.
    #[schema(min_length = 1, max_length = 100, pattern = "$one_line")]
    display_name: String,
    /// Neither very common nor the member's email (`password::check_policy`).
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 256)]
    password: SecretString,
}

async fn accept(
    State(state): State<AuthState>,
    meta: RequestMeta,
    Json(body): Json<AcceptInvitation>,
) -> Result<impl IntoResponse> {
    state.throttle.check_ip(meta.ip)?;
    let hash = token::sha256(body.token.trim().as_bytes());
    // The token names the tenant: look it up before any tenant is known.
    let found = sqlx::query!(
        "SELECT id, tenant_id, email FROM invitation
         WHERE token_hash = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now()",
        hash
    )
    .fetch_optional(&state.db.system)
    .await?
    .ok_or_else(|| Error::conflict("invalid_invitation", "the invitation is unknown, used or expired"))?;
    let display_name = DisplayName::parse(&body.display_name)?;
    password::check_policy(&body.password, &found.email)?;
    let password_hash = password::hash(body.password).await?;

    let mut tx = state.db.tenant_tx(found.tenant_id).await?;
    // The inviter's standing now, not when they invited: a disabled or demoted inviter's
    // invitations are worthless. The share lock waits for a change of the inviter under way
    // (which withdraws their invitations in its own transaction) and keeps one from starting.
    let inviter = sqlx::query!(
        "SELECT m.role, m.status FROM invitation i
         JOIN member m ON m.tenant_id = i.tenant_id AND m.id = i.invited_by
         WHERE i.id = $1 AND i.tenant_id = $2
         FOR SHARE OF m",
        found.id,
        found.tenant_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    // Claim the invitation; a concurrent acceptance of the same token finds nothing to claim.
    let invitation = sqlx::query!(
        "UPDATE invitation SET accepted_at = now()
         WHERE id = $1 AND tenant_id = $2 AND accepted_at IS NULL AND revoked_at IS NULL
         RETURNING email, role, partner_org_id",
        found.id,
        found.tenant_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| {
        Error::conflict(
            "invalid_invitation",
            "the invitation is unknown, used or expired",
        )
    })?;
    let role =
        Role::parse(&invitation.role).ok_or_else(|| anyhow::anyhow!("unknown role in database"))?;
    let backed = inviter
        .as_ref()
        .is_some_and(|m| may_invite(Role::parse(&m.role), &m.status, role));
    if !backed {
        // Dropped with the transaction: the invitation stays unclaimed, and the refusal reads
        // like any other dead invitation.
        return Err(Error::conflict(
            "invalid_invitation",
            "the invitation is unknown, used or expired",
        ));
    }
    let email = Email::parse(&invitation.email)?;
    let member_id = Uuid::now_v7();
    let member = members::insert(
        &mut tx,
        member_id,
        &email,
        &display_name,
        &password_hash,
        role,
        invitation.partner_org_id,
    )
    .await?;
    let source = AuditSource::member(found.tenant_id, member_id, &meta);
    audit::record(
        &mut tx,
        &source,
        AuditEvent::new("member.joined", "member", member_id)
            .after(json!({ "member": &member, "invitation_id": found.id })),
    )
    .await?;
    let new_session = session::create(&mut tx, &state, found.tenant_id, member_id, &meta).await?;
    audit::record(
        &mut tx,
        &source,
        AuditEvent::new("auth.login.succeeded", "session", new_session.id)
            .after(json!({ "member_id": member_id, "via": "invitation" })),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, new_session.cookie)],
        Json(SessionView {
            member,
            tenant_id: found.tenant_id,
            expires_at: new_session.expires_at,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invitation_is_backed_only_by_an_active_inviter_who_may_still_grant_its_role() {
        assert!(may_invite(Some(Role::Admin), "active", Role::Admin));
        assert!(may_invite(Some(Role::Admin), "active", Role::Agent));
        assert!(!may_invite(Some(Role::Admin), "disabled", Role::Agent));
        assert!(!may_invite(Some(Role::Admin), "active", Role::Owner));
        assert!(!may_invite(Some(Role::Agent), "active", Role::Agent));
        assert!(!may_invite(None, "active", Role::Agent));
    }
}
