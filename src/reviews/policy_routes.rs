//! The approval policy's endpoints: show the tenant's policy, and replace it (validated,
//! normalized and audited; it applies to items opened from then on). What a policy says and
//! how it is checked is in `policy.rs`.

use axum::extract::State;
use serde_json::Value;

use super::load_policy;
use super::policy::ReviewPolicy;
use crate::audit::AuditEvent;
use crate::auth::Ctx;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::Json;

pub(super) async fn show_policy(State(db): State<Db>, ctx: Ctx) -> Result<Json<ReviewPolicy>> {
    let mut tx = ctx.begin(&db).await?;
    let policy = load_policy(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(policy))
}

pub(super) async fn update_policy(
    State(db): State<Db>,
    ctx: Ctx,
    Json(body): Json<Value>,
) -> Result<Json<ReviewPolicy>> {
    let policy: ReviewPolicy = serde_json::from_value(body)
        .map_err(|e| Error::bad_request("invalid_policy", e.to_string()))?;
    policy
        .validate()
        .map_err(|e| Error::bad_request("invalid_policy", e))?;
    let policy = policy.normalized();
    let mut tx = ctx.begin(&db).await?;
    let before = load_policy(&mut tx).await?;
    let stored = serde_json::to_value(&policy).map_err(anyhow::Error::from)?;
    sqlx::query!(
        "INSERT INTO agent_settings (tenant_id, review_policy) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET review_policy = EXCLUDED.review_policy, updated_at = now()",
        ctx.tenant_id,
        stored
    )
    .execute(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("review_policy.updated", "agent_settings", ctx.tenant_id)
            .before(&before)
            .after(&policy),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(policy))
}
