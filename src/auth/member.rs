//! A member as the API shows them: the identity that signs in. Authentication reads it (a
//! login answers with it); the tenants domain, which manages members, builds on it.

use serde::Serialize;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Member)]
pub struct MemberView {
    pub id: Uuid,
    #[schema(format = Email)]
    pub email: String,
    pub display_name: String,
    #[schema(value_type = crate::rbac::Role)]
    pub role: String,
    /// The partner organisation of a member with the partner role.
    pub partner_org_id: Option<Uuid>,
    #[schema(value_type = MemberStatus)]
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A member's status as the database keeps it (`member_status_known`); named for the API
/// document, as the view carries the stored text.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum MemberStatus {
    Active,
    /// Cannot sign in.
    Disabled,
}

/// One member of the transaction's tenant; another tenant's id is simply not found.
pub async fn fetch(conn: &mut PgConnection, member_id: Uuid) -> Result<MemberView> {
    sqlx::query_as!(
        MemberView,
        "SELECT id, email, display_name, role, partner_org_id, status, created_at
         FROM member WHERE id = $1 AND tenant_id = current_tenant_id()",
        member_id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}
