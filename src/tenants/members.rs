//! Members of a tenant, their roles, and partner organisations. Role changes and disabling
//! are security events (AUD-2); the last active owner can never be removed.

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, AuditEvent};
pub use crate::auth::member::{fetch, MemberView};
use crate::auth::AuthState;
use crate::auth::{revocation, session, Ctx};
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Json, Path};
use crate::rbac::{Permission, Role};
use utoipa::ToSchema;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    AuthState: FromRef<S>,
{
    use Access::*;
    api.endpoint(
        Method::GET,
        "/api/v1/members",
        Requires(Permission::MembersRead),
        ("members", "List members"),
        Contract::new().ok_list::<MemberView>(),
        list,
    )
    .endpoint(
        Method::GET,
        "/api/v1/members/{member_id}",
        Requires(Permission::MembersRead),
        ("members", "Show a member"),
        Contract::new().ok::<MemberView>(),
        show,
    )
    .endpoint(
        Method::PATCH,
        "/api/v1/members/{member_id}",
        Requires(Permission::MembersManage),
        ("members", "Change a member's role or status"),
        Contract::new()
            .body::<UpdateMember>()
            .ok::<MemberView>()
            .error(StatusCode::BAD_REQUEST, "invalid_status")
            .error(StatusCode::BAD_REQUEST, "invalid_display_name")
            .error(StatusCode::NOT_FOUND, "not_found")
            .error(StatusCode::CONFLICT, "partner_org_required")
            .error(StatusCode::CONFLICT, "last_owner"),
        update,
    )
    .endpoint(
        Method::GET,
        "/api/v1/partner-orgs",
        Requires(Permission::MembersRead),
        ("members", "List partner organisations"),
        Contract::new().ok_list::<PartnerOrgView>(),
        list_partner_orgs,
    )
    .endpoint(
        Method::POST,
        "/api/v1/partner-orgs",
        Requires(Permission::MembersManage),
        ("members", "Create a partner organisation"),
        Contract::new()
            .body::<CreatePartnerOrg>()
            .created::<PartnerOrgView>()
            .error(StatusCode::CONFLICT, "partner_org_taken"),
        create_partner_org,
    )
}

/// An email address, trimmed; compared case-insensitively by the database.
#[derive(Debug, Clone)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self> {
        let email = raw.trim();
        let valid = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            });
        if valid {
            Ok(Email(email.to_string()))
        } else {
            Err(Error::bad_request(
                "invalid_email",
                "that is not a valid email address",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone)]
pub struct DisplayName(String);

/// The partner role and a partner organisation go together (`partner_org_required`): the rule
/// of a body with `role` and `partner_org_id` fields.
pub static PARTNER_ORG_RULE: std::sync::LazyLock<serde_json::Value> =
    std::sync::LazyLock::new(|| {
        serde_json::json!({
            "anyOf": [
                {
                    "required": ["role", "partner_org_id"],
                    "properties": {
                        "role": { "const": "partner" },
                        "partner_org_id": { "type": "string", "format": "uuid" }
                    }
                },
                {
                    "properties": {
                        "role": { "not": { "const": "partner" } },
                        "partner_org_id": { "type": "null" }
                    }
                }
            ]
        })
    });

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self> {
        let name = raw.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(Error::bad_request(
                "invalid_display_name",
                "display_name must be 1 to 100 characters",
            ));
        }
        Ok(DisplayName(name.to_string()))
    }
}

pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    email: &Email,
    display_name: &DisplayName,
    password_hash: &str,
    role: Role,
    partner_org_id: Option<Uuid>,
) -> Result<MemberView> {
    Ok(sqlx::query_as!(
        MemberView,
        "INSERT INTO member (id, tenant_id, email, display_name, password_hash, role, partner_org_id)
         VALUES ($1, current_tenant_id(), $2, $3, $4, $5, $6)
         RETURNING id, email, display_name, role, partner_org_id, status, created_at",
        id,
        email.0,
        display_name.0,
        password_hash,
        role.as_str(),
        partner_org_id
    )
    .fetch_one(conn)
    .await?)
}

/// Creates a member who joins through the workspace's identity provider, just in time
/// (`auth::oidc::Join`): the sign-in checked the address and audits the joining.
pub fn join_by_sso<'c>(
    conn: &'c mut PgConnection,
    new: &'c crate::auth::oidc::NewMember,
) -> futures_util::future::BoxFuture<'c, Result<Uuid>> {
    Box::pin(async move {
        let email = Email::parse(&new.email)?;
        let name = DisplayName::parse(&new.display_name)?;
        let member = insert(
            conn,
            Uuid::now_v7(),
            &email,
            &name,
            &new.password_hash,
            new.role,
            None,
        )
        .await?;
        Ok(member.id)
    })
}

/// A partner organisation named in a request must be the caller tenant's: another tenant's
/// id answers 404 like a missing one (SEC-3), checked before the id reaches a constraint.
pub async fn check_partner_org(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    partner_org_id: Option<Uuid>,
) -> Result<()> {
    let Some(id) = partner_org_id else {
        return Ok(());
    };
    sqlx::query_scalar!(
        "SELECT id FROM partner_org WHERE id = $1 AND tenant_id = $2",
        id,
        tenant_id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
    .map(drop)
}

/// The staff a conversation can be given to: active members who are not partners, by name.
pub async fn assignable(conn: &mut PgConnection) -> Result<Vec<(Uuid, String)>> {
    let rows = sqlx::query!(
        "SELECT id, display_name FROM member
         WHERE tenant_id = current_tenant_id() AND status = 'active' AND role <> 'partner'
         ORDER BY lower(display_name), id"
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.display_name)).collect())
}

/// The active staff with their roles, by name: who an item or a task may be given to, for the
/// caller to narrow by what the role allows.
pub async fn active_staff(conn: &mut PgConnection) -> Result<Vec<(Uuid, String, Role)>> {
    let rows = sqlx::query!(
        "SELECT id, display_name, role FROM member
         WHERE tenant_id = current_tenant_id() AND status = 'active' AND role <> 'partner'
         ORDER BY lower(display_name), id"
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.id, r.display_name, Role::parse(&r.role)?)))
        .collect())
}

async fn list(State(state): State<AuthState>, ctx: Ctx) -> Result<Json<Vec<MemberView>>> {
    let mut tx = ctx.begin(&state).await?;
    let members = sqlx::query_as!(
        MemberView,
        "SELECT id, email, display_name, role, partner_org_id, status, created_at
         FROM member WHERE tenant_id = $1 ORDER BY created_at",
        ctx.tenant_id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(members))
}

async fn show(
    State(state): State<AuthState>,
    ctx: Ctx,
    Path(member_id): Path<Uuid>,
) -> Result<Json<MemberView>> {
    let mut tx = ctx.begin(&state).await?;
    let member = fetch(&mut tx, member_id).await?;
    tx.commit().await?;
    Ok(Json(member))
}

/// What to change; an absent field stays as it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateMember {
    role: Option<Role>,
    /// `active` or `disabled`.
    #[schema(value_type = Option<crate::auth::member::MemberStatus>)]
    status: Option<String>,
    /// Needed with the partner role, refused with any other.
    partner_org_id: Option<Uuid>,
    /// Trimmed; no control characters.
    #[schema(min_length = 1, max_length = 100, pattern = "$one_line")]
    display_name: Option<String>,
}

async fn update(
    State(state): State<AuthState>,
    ctx: Ctx,
    Path(member_id): Path<Uuid>,
    Json(body): Json<UpdateMember>,
) -> Result<Json<MemberView>> {
    let mut tx = ctx.begin(&state).await?;
    // Lock the tenant's owners first: two concurrent demotions must not both see "another
    // owner remains".
    sqlx::query!(
        "SELECT id FROM member WHERE tenant_id = $1 AND role = 'owner' FOR UPDATE",
        ctx.tenant_id
    )
    .fetch_all(&mut *tx)
    .await?;
    let before = fetch(&mut tx, member_id).await?;
    check_partner_org(&mut tx, ctx.tenant_id, body.partner_org_id).await?;
    let old_role =
        Role::parse(&before.role).ok_or_else(|| anyhow::anyhow!("unknown role in database"))?;
    let new_role = body.role.unwrap_or(old_role);
    let new_status = body.status.clone().unwrap_or_else(|| before.status.clone());
    if !matches!(new_status.as_str(), "active" | "disabled") {
        return Err(Error::bad_request(
            "invalid_status",
            "status must be active or disabled",
        ));
    }
    // Nobody manages a member who outranks them, nor hands out a role above their own.
    if !ctx.role.can_grant(old_role) || !ctx.role.can_grant(new_role) {
        return Err(Error::Forbidden(
            "you cannot manage a member or grant a role above your own",
        ));
    }
    let partner_org_id = match new_role {
        Role::Partner => body.partner_org_id.or(before.partner_org_id),
        _ => None,
    };
    let loses_ownership = old_role == Role::Owner
        && before.status == "active"
        && (new_role != Role::Owner || new_status != "active");
    if loses_ownership {
        let others = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM member
               WHERE tenant_id = $1 AND role = 'owner' AND status = 'active' AND id <> $2"#,
            ctx.tenant_id,
            member_id
        )
        .fetch_one(&mut *tx)
        .await?;
        if others == 0 {
            return Err(Error::conflict(
                "last_owner",
                "the tenant must keep at least one active owner",
            ));
        }
    }
    let display_name = match &body.display_name {
        Some(raw) => DisplayName::parse(raw)?.0,
        None => before.display_name.clone(),
    };
    let after = sqlx::query_as!(
        MemberView,
        "UPDATE member SET role = $2, status = $3, partner_org_id = $4, display_name = $5, updated_at = now()
         WHERE id = $1 AND tenant_id = $6
         RETURNING id, email, display_name, role, partner_org_id, status, created_at",
        member_id,
        new_role.as_str(),
        new_status,
        partner_org_id,
        display_name,
        ctx.tenant_id
    )
    .fetch_one(&mut *tx)
    .await?;

    let source = ctx.audit_source();
    if old_role != new_role {
        audit::record(
            &mut tx,
            &source,
            AuditEvent::new("member.role_changed", "member", member_id)
                .before(json!({ "role": old_role }))
                .after(json!({ "role": new_role })),
        )
        .await?;
    }
    if before.status != after.status
        || before.display_name != after.display_name
        || before.partner_org_id != after.partner_org_id
    {
        audit::record(
            &mut tx,
            &source,
            AuditEvent::new("member.updated", "member", member_id)
                .before(&before)
                .after(&after),
        )
        .await?;
    }
    // Invitations are worth no more than their inviter now: a disabled or demoted member's
    // pending invitations to roles they can no longer grant are withdrawn.
    if before.status != after.status || old_role != new_role {
        super::invitations::withdraw_unbacked(
            &mut tx,
            &source,
            ctx.tenant_id,
            member_id,
            new_role,
            &after.status,
        )
        .await?;
    }
    // A disabled member's sessions end now, and a demoted member's tokens may not outrank them.
    if after.status == "disabled" {
        session::revoke_all(&mut tx, ctx.tenant_id, member_id, None).await?;
        sqlx::query!(
            "UPDATE api_token SET revoked_at = now()
             WHERE tenant_id = $1 AND created_by = $2 AND revoked_at IS NULL",
            ctx.tenant_id,
            member_id
        )
        .execute(&mut *tx)
        .await?;
    }
    // Streams the member holds open re-check what they may still see.
    if old_role != new_role || before.status != after.status {
        revocation::announce(&mut tx, ctx.tenant_id, member_id).await?;
    }
    tx.commit().await?;
    Ok(Json(after))
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PartnerOrg)]
struct PartnerOrgView {
    id: Uuid,
    name: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

async fn list_partner_orgs(
    State(state): State<AuthState>,
    ctx: Ctx,
) -> Result<Json<Vec<PartnerOrgView>>> {
    let mut tx = ctx.begin(&state).await?;
    let orgs = sqlx::query_as!(
        PartnerOrgView,
        "SELECT id, name, created_at FROM partner_org WHERE tenant_id = $1 ORDER BY name",
        ctx.tenant_id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(orgs))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreatePartnerOrg {
    /// Unique in the tenant, case-insensitively; trimmed.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
}

async fn create_partner_org(
    State(state): State<AuthState>,
    ctx: Ctx,
    Json(body): Json<CreatePartnerOrg>,
) -> Result<(StatusCode, Json<PartnerOrgView>)> {
    let mut tx = ctx.begin(&state).await?;
    let org = sqlx::query_as!(
        PartnerOrgView,
        "INSERT INTO partner_org (id, tenant_id, name) VALUES ($1, $2, $3) RETURNING id, name, created_at",
        Uuid::now_v7(),
        ctx.tenant_id,
        body.name.trim()
    )
    .fetch_one(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("partner_org.created", "partner_org", org.id).after(&org),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(org)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_checked() {
        assert_eq!(
            Email::parse("  ana@example.com ").unwrap().as_str(),
            "ana@example.com"
        );
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "a b@example.com",
            "ana@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
