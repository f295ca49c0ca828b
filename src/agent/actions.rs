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
    #[serde(default)]
    #[schema(schema_with = parameters_schema)]
    parameters: Option<Value>,
    /// Where the action is sent (a signed POST): an http(s) URL on a public address.
    #[schema(pattern = "$http_url", max_length = 2000)]
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

/// The types a parameter schema may name (`guardrails::schema`).
const SCHEMA_TYPES: [&str; 7] = [
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// How deep the document describes nesting in a parameter schema: the arguments' own
/// properties, and one level inside them (an object's properties, an array's items). The
/// server takes up to 32 levels; the document states fewer, which every schema within it meets.
const DOCUMENTED_DEPTH: usize = 2;

/// What `check_schema` accepts, as JSON Schema: an object schema using the keywords argument
/// validation understands, each with the shape it reads. Stricter than the server in two ways,
/// so that whatever it describes is accepted: nesting goes [`DOCUMENTED_DEPTH`] levels deep,
/// and a `pattern` is a literal text (letters, digits, space, `_`, `-`), optionally anchored
/// with `^`/`$`, which every regular expression engine reads alike.
fn parameters_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    let mut top = schema_node(0);
    top["properties"]["type"] = json!({ "type": "string", "enum": ["object"] });
    top["required"] = json!(["type"]);
    top["description"] = json!(
        "The JSON Schema of the action's arguments: an object schema; `{\"type\": \"object\", \
         \"properties\": {}}` when absent or null."
    );
    top["type"] = json!(["object", "null"]);
    crate::http::contract::raw_schema(top)
}

/// One schema node at `depth` (the arguments object is depth 0).
fn schema_node(depth: usize) -> Value {
    let scalar = json!({ "type": ["string", "number", "boolean", "null"] });
    let count = json!({ "type": "integer", "minimum": 0 });
    let bound = json!({ "type": "number" });
    let text = json!({ "type": "string", "maxLength": 1000 });
    let mut properties = json!({
        "type": { "anyOf": [
            { "type": "string", "enum": SCHEMA_TYPES },
            { "type": "array", "items": { "type": "string", "enum": SCHEMA_TYPES } }
        ] },
        "title": text,
        "description": text,
        "format": text,
        "enum": { "type": "array", "items": scalar },
        "const": scalar,
        "required": { "type": "array", "items": { "type": "string", "maxLength": 200 } },
        "minimum": bound, "maximum": bound, "exclusiveMinimum": bound, "exclusiveMaximum": bound,
        "minLength": count, "maxLength": count, "minItems": count, "maxItems": count,
        "pattern": { "type": "string", "maxLength": 1000, "pattern": "^\\^?[A-Za-z0-9 _-]*\\$?$" },
        "additionalProperties": { "type": "boolean" },
    });
    if depth < DOCUMENTED_DEPTH {
        let child = schema_node(depth + 1);
        properties["properties"] = json!({
            "type": "object",
            "propertyNames": { "type": "string", "maxLength": 200 },
            "additionalProperties": child,
        });
        properties["additionalProperties"] = json!({ "anyOf": [{ "type": "boolean" }, child] });
        properties["items"] = child;
    }
    json!({ "type": "object", "additionalProperties": false, "properties": properties })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guardrails::schema::check_schema;

    /// A parameter schema using every keyword the document describes, nested as deep as it
    /// describes, is one the server takes.
    #[test]
    fn a_parameter_schema_as_documented_is_accepted() {
        let leaf = json!({ "type": ["string", "null"], "title": "t", "description": "d",
            "format": "email", "enum": ["a", 1, true, null], "const": "a", "minLength": 0,
            "maxLength": 5, "pattern": "^AB-1$", "minimum": -1.5, "maximum": 2,
            "exclusiveMinimum": -2, "exclusiveMaximum": 3, "minItems": 0, "maxItems": 9,
            "additionalProperties": false, "required": ["x"] });
        let middle = json!({ "type": "object", "properties": { "leaf": leaf },
            "additionalProperties": leaf, "items": leaf, "required": ["leaf"] });
        let top = json!({ "type": "object", "properties": { "m": middle },
            "additionalProperties": middle, "required": ["m"], "description": "args" });
        assert_eq!(check_schema(&top), Ok(()));
        // The document's top level and its depth.
        let documented = serde_json::to_value(parameters_schema()).unwrap();
        let raw = &documented["x-raw-schema"];
        assert_eq!(raw["properties"]["type"]["enum"], json!(["object"]));
        let depth2 = &raw["properties"]["properties"]["additionalProperties"]["properties"]
            ["properties"]["additionalProperties"];
        assert!(depth2["properties"].get("properties").is_none());
        assert!(depth2["properties"].get("items").is_none());
    }
}
