//! A tenant's HTTP actions. The agent's API defines them (`agent::actions`), the agent offers
//! them to the model and calls them (`agent::tools`, `agent::execute`); but one with material effect waits for a person's approval first (AGT-6),
//! an approval may edit its arguments, and the approval policy's rules name actions and their
//! kinds. The review queue, below the agent, needs to know what an action is, so it owns it.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;

/// Built-in kinds of action with material effect: always reviewed, whatever the flag (AGT-6).
pub const MATERIAL_KINDS: &[&str] = &["refund", "discount", "exchange", "escalation"];

#[derive(Debug, Clone, Serialize)]
pub struct TenantAction {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub parameters: Value,
    pub target_url: String,
    pub requires_approval: bool,
    pub kind: Option<String>,
    pub amount_field: Option<String>,
    #[serde(skip)]
    pub secret: Vec<u8>,
}

impl TenantAction {
    /// Refunds, discounts, exchanges and escalations always need approval, whatever the flag
    /// (the database keeps the flag true for them as well, migration 0015).
    pub fn is_material(&self) -> bool {
        self.requires_approval || self.kind.is_some()
    }

    pub fn amount(&self, arguments: &Value) -> Option<f64> {
        let field = self.amount_field.as_deref()?;
        let v = arguments.get(field)?;
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    }
}

/// The tenant's actions, by name.
pub async fn tenant_actions(conn: &mut PgConnection) -> Result<Vec<TenantAction>> {
    Ok(sqlx::query_as!(
        TenantAction,
        "SELECT id, name, description, parameters, target_url, requires_approval, kind, amount_field, secret
         FROM tenant_action WHERE tenant_id = current_tenant_id() ORDER BY name"
    )
    .fetch_all(conn)
    .await?)
}

/// A new tenant action, its secret already sealed for its endpoint.
pub struct NewAction<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub description: &'a str,
    pub parameters: &'a Value,
    pub target_url: &'a str,
    pub sealed_secret: &'a [u8],
    pub requires_approval: bool,
    pub kind: Option<&'a str>,
    pub amount_field: Option<&'a str>,
}

/// Stores a tenant action on the caller's tenant transaction; the caller audits it.
pub async fn create_action(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    new: NewAction<'_>,
) -> Result<TenantAction> {
    Ok(sqlx::query_as!(
        TenantAction,
        "INSERT INTO tenant_action (id, tenant_id, name, description, parameters, target_url, secret, requires_approval, kind, amount_field)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING id, name, description, parameters, target_url, requires_approval, kind, amount_field, secret",
        new.id,
        tenant_id,
        new.name,
        new.description,
        new.parameters,
        new.target_url,
        new.sealed_secret,
        new.requires_approval,
        new.kind,
        new.amount_field
    )
    .fetch_one(conn)
    .await?)
}

/// Removes a tenant action of the caller's tenant; returns its name (the caller audits it), or
/// 404 when the tenant has no such action.
pub async fn delete_action(conn: &mut PgConnection, id: Uuid) -> Result<String> {
    sqlx::query_scalar!("DELETE FROM tenant_action WHERE id = $1 AND tenant_id = current_tenant_id() RETURNING name", id)
        .fetch_optional(conn)
        .await?
        .ok_or(crate::error::Error::NotFound)
}
