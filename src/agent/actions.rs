//! The tenant's own HTTP actions, as admins define them: list, create (the secret sealed for
//! its endpoint), delete. The agent offers them to the model as tools (`tools.rs`) and carries
//! out approved ones (`execute.rs`).

use axum::extract::State;
use axum::http::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::AgentState;
use crate::audit::AuditEvent;
use crate::auth::Ctx;
use crate::error::{Error, Result};
use crate::guardrails::schema::check_schema;
use crate::http::{Access, Api, Contract, Json, Path};
use crate::rbac::Permission;
use crate::reviews::{self, tenant_actions, ActionKind, TenantAction};
use utoipa::ToSchema;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    AgentState: axum::extract::FromRef<S>,
{
    use Access::*;
    api.endpoint(
        Method::GET,
        "/api/v1/agent/actions",
        Requires(Permission::AgentConfigure),
        ("agent", "List the tenant's HTTP actions"),
        Contract::new().ok_list::<TenantAction>(),
        list,
    )
    .endpoint(
        Method::POST,
        "/api/v1/agent/actions",
        Requires(Permission::AgentConfigure),
        ("agent", "Define an HTTP action the agent may call"),
        Contract::new()
            .body::<CreateAction>()
            .created::<TenantAction>()
            .error(StatusCode::BAD_REQUEST, "invalid_parameters")
            .error(StatusCode::BAD_REQUEST, "invalid_url")
            .error(StatusCode::BAD_REQUEST, "invalid_name")
            .error(StatusCode::CONFLICT, "name_taken"),
        create,
    )
    .endpoint(
        Method::DELETE,
        "/api/v1/agent/actions/{action_id}",
        Requires(Permission::AgentConfigure),
        ("agent", "Remove an HTTP action"),
        Contract::new().no_content(),
        delete,
    )
}

/// The sealing context of an action's secret names the endpoint it signs for: a target URL
/// changed without the secret being saved again (by any path, the database included) finds a
/// secret that no longer opens, so nothing signed with it goes to the new address.
pub(super) fn secret_context(action_id: Uuid, target_url: &str) -> String {
    format!("action:{action_id}:{target_url}")
}

/// An HTTP action: the agent may call it as a tool, signed with its secret; one of a kind, or
/// marked `requires_approval`, waits for a reviewer's approval first (AGT-6).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewTenantAction)]
struct CreateAction {
    /// Lowercase letters, digits and underscores, starting with a letter; unique in the tenant.
    #[schema(pattern = "^[a-z][a-z0-9_]{1,63}$")]
    name: String,
    /// What the action does, as the model reads it.
    description: String,
    /// Free-form: the JSON Schema of the action's arguments (an object schema); none when
    /// absent.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    parameters: Option<Value>,
    /// Where the action is sent (a signed POST): an http(s) URL on a public address.
    target_url: String,
    /// The key of the request's signature; write-only.
    #[schema(value_type = String, format = Password)]
    secret: SecretString,
    /// `true` when absent; always so for an action of a kind.
    #[serde(default = "yes")]
    #[schema(default = true)]
    requires_approval: bool,
    /// A built-in kind with material effect: always reviewed.
    kind: Option<ActionKind>,
    /// The argument that holds the action's amount, which approval rules compare.
    amount_field: Option<String>,
}

fn yes() -> bool {
    true
}

async fn list(State(state): State<AgentState>, ctx: Ctx) -> Result<Json<Vec<TenantAction>>> {
    let mut tx = ctx.begin(&state).await?;
    let actions = tenant_actions(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(actions))
}

async fn create(
    State(state): State<AgentState>,
    ctx: Ctx,
    Json(body): Json<CreateAction>,
) -> Result<(StatusCode, Json<TenantAction>)> {
    let parameters = body
        .parameters
        .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
    check_schema(&parameters).map_err(|e| Error::bad_request("invalid_parameters", e))?;
    crate::http::egress::check_url(&body.target_url, state.allow_private)
        .map_err(|e| Error::bad_request("invalid_url", format!("target_url: {e}")))?;
    // AGT-6: a material kind is always reviewed; the stored flag says so rather than the
    // opposite of what happens (the database refuses it too).
    let requires_approval = body.requires_approval || body.kind.is_some();
    let id = Uuid::now_v7();
    let secret = state.sealer.seal(
        body.secret.expose_secret().as_bytes(),
        &secret_context(id, &body.target_url),
    );
    let mut tx = ctx.begin(&state).await?;
    let action = reviews::create_action(
        &mut tx,
        ctx.tenant_id,
        reviews::NewAction {
            id,
            name: &body.name,
            description: &body.description,
            parameters: &parameters,
            target_url: &body.target_url,
            sealed_secret: &secret,
            requires_approval,
            kind: body.kind.map(ActionKind::as_str),
            amount_field: body.amount_field.as_deref(),
        },
    )
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("action.created", "tenant_action", id).after(&action),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(action)))
}

async fn delete(
    State(state): State<AgentState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    let mut tx = ctx.begin(&state).await?;
    let name = reviews::delete_action(&mut tx, id).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("action.deleted", "tenant_action", id).before(json!({ "name": name })),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
