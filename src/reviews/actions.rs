//! A tenant's HTTP actions. The agent's API defines them (`agent::actions`), the agent offers
//! them to the model and calls them (`agent::tools`, `agent::execute`); but one with material effect waits for a person's approval first (AGT-6),
//! an approval may edit its arguments, and the approval policy's rules name actions and their
//! kinds. The review queue, below the agent, needs to know what an action is, so it owns it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;
use utoipa::ToSchema;

/// A built-in kind of action with material effect: always reviewed, whatever the flag (AGT-6).
/// `tenant_action.kind` (CHECK `tenant_action_kind`), and what approval-policy rules name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Refund,
    Discount,
    Exchange,
    Escalation,
}

impl ActionKind {
    pub const ALL: [ActionKind; 4] = [
        ActionKind::Refund,
        ActionKind::Discount,
        ActionKind::Exchange,
        ActionKind::Escalation,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ActionKind::Refund => "refund",
            ActionKind::Discount => "discount",
            ActionKind::Exchange => "exchange",
            ActionKind::Escalation => "escalation",
        }
    }
}

/// The kinds' stored names.
pub const MATERIAL_KINDS: [&str; 4] = [
    ActionKind::Refund.as_str(),
    ActionKind::Discount.as_str(),
    ActionKind::Exchange.as_str(),
    ActionKind::Escalation.as_str(),
];

/// A tenant's HTTP action. Its secret is never shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantAction {
    pub id: Uuid,
    /// Lowercase letters, digits and underscores; unique in the tenant.
    pub name: String,
    /// What the action does, as the model reads it.
    pub description: String,
    /// Free-form: the JSON Schema of the action's arguments.
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// Where the action is sent (a signed POST).
    pub target_url: String,
    /// Carried out only after a reviewer's approval (always so for a kind).
    pub requires_approval: bool,
    #[schema(value_type = Option<ActionKind>, required = true)]
    pub kind: Option<String>,
    /// The argument holding the action's amount, which approval rules compare.
    #[schema(required = true)]
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
