//! Tools the model may call: `search_knowledge`, `get_customer_profile` (masked),
//! `create_ticket`, `add_note`, `handoff_to_human`, and the tenant's own HTTP actions.
//! Arguments are validated against each tool's JSON schema; an invalid call is returned to the
//! model once, then the conversation goes to a human. A tenant action's description and schema,
//! and every result, pass the inbound stage before the model sees them. A tenant action with
//! material effect is never executed on the model's call: it becomes a pending review item
//! (AGT-6), carried out once approved (`execute.rs`).

use serde_json::{json, Value};
use uuid::Uuid;

use std::sync::LazyLock;

use super::execute::invoke;
use super::pipeline::{constant, trusted_tool, Guard, Screened, ToolSpec};
use super::provider::ToolCall;
use super::runtime::{Final, Record, Stop};
use super::settings::Embedder;
use super::AgentState;
use crate::audit::{self, AuditEvent, AuditSource};
use crate::guardrails::schema::validate;
use crate::guardrails::Lang;
use crate::reviews::TenantAction;

/// What the customer is told while a material action waits for a reviewer, in their language.
pub fn pending_message(lang: Lang) -> &'static str {
    lang.pick([
        "I've passed this to a colleague who needs to confirm it. You'll hear back from us shortly.",
        "Encaminhei isto a um colega que precisa confirmar. Você receberá uma resposta em breve.",
        "He pasado esto a un compañero que debe confirmarlo. Te responderemos en breve.",
        "Ich habe das an eine Kollegin oder einen Kollegen weitergegeben, die oder der es bestätigen muss. Sie hören in Kürze von uns.",
    ])
}

/// A tenant's actions by the tenant's `actions_version`, which every change to its actions
/// bumps (migration 0019).
pub type ActionsCache = super::settings::TenantCache<i64, std::sync::Arc<Vec<TenantAction>>>;

/// The built-in tools, fixed texts compiled into the binary.
static BUILTIN: LazyLock<Vec<ToolSpec>> = LazyLock::new(|| {
    vec![
        trusted_tool(
            "search_knowledge",
            "Search the help center for passages about a question.",
            r#"{ "type": "object", "required": ["query"], "properties": { "query": { "type": "string", "minLength": 1, "maxLength": 2000 } }, "additionalProperties": false }"#,
        ),
        trusted_tool(
            "get_customer_profile",
            "The customer's profile (personal data appears as placeholders).",
            r#"{ "type": "object", "properties": {}, "additionalProperties": false }"#,
        ),
        trusted_tool(
            "create_ticket",
            "Open a support ticket for follow-up work.",
            r#"{ "type": "object", "required": ["subject"], "properties": {
                 "subject": { "type": "string", "minLength": 1, "maxLength": 300 }, "description": { "type": "string" },
                 "priority": { "type": "string", "enum": ["low", "normal", "high", "urgent"] } }, "additionalProperties": false }"#,
        ),
        trusted_tool(
            "add_note",
            "Leave a private note for the human team.",
            r#"{ "type": "object", "required": ["text"], "properties": { "text": { "type": "string", "minLength": 1 } }, "additionalProperties": false }"#,
        ),
        trusted_tool(
            "handoff_to_human",
            "Give the conversation to a human agent.",
            r#"{ "type": "object", "required": ["reason"], "properties": { "reason": { "type": "string" } }, "additionalProperties": false }"#,
        ),
    ]
});

/// The built-in tools' definitions (loads them: a unit test and start-up make sure they parse).
pub fn builtin_specs() -> &'static [ToolSpec] {
    &BUILTIN
}

/// The tools offered to the model in a run: the built-in ones, and each tenant action whose
/// description and schema pass the inbound stage (AGT-1, AGT-2).
pub fn specs(actions: &[TenantAction], guard: &mut Guard<'_>) -> Vec<ToolSpec> {
    let mut specs = builtin_specs().to_vec();
    specs.extend(
        actions
            .iter()
            .filter(|a| !builtin_specs().iter().any(|b| b.name() == a.name))
            .filter_map(|a| guard.tool(&a.name, &a.description, &a.parameters)),
    );
    specs
}

/// The tenant action a `request_action` decision names: by name, else by a material kind
/// (`refund`, `exchange_approval`…) that exactly one action has. None: no such action.
pub fn resolve_request<'a>(actions: &'a [TenantAction], name: &str) -> Option<&'a TenantAction> {
    let name = name.trim();
    if let Some(action) = actions.iter().find(|a| a.name == name) {
        return Some(action);
    }
    let kind = crate::reviews::policy::canonical_kind(name);
    let mut of_kind = actions.iter().filter(|a| a.kind.as_deref() == Some(kind));
    match (of_kind.next(), of_kind.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

/// What a tool call did to the run.
pub enum ToolEffect {
    Data,
    Invalid,
    Executed,
    Handoff {
        reason: String,
    },
    PendingReview {
        action_id: Uuid,
        name: String,
        arguments: Value,
        amount: Option<f64>,
    },
}

impl ToolEffect {
    pub fn label(&self) -> &'static str {
        match self {
            ToolEffect::Data => "data",
            ToolEffect::Invalid => "invalid",
            ToolEffect::Executed => "executed",
            ToolEffect::Handoff { .. } => "handoff",
            ToolEffect::PendingReview { .. } => "pending_review",
        }
    }

    pub(super) fn final_step(&self, lang: Lang) -> Option<Final> {
        match self {
            ToolEffect::Handoff { reason } => Some(Final::Handoff {
                reason: reason.clone(),
                suggestion: None,
                tell_customer: None,
            }),
            ToolEffect::PendingReview {
                action_id,
                name,
                arguments,
                amount,
            } => Some(Final::PendingReview {
                action_id: *action_id,
                name: name.clone(),
                arguments: arguments.clone(),
                amount: *amount,
                tell_customer: pending_message(lang).into(),
            }),
            _ => None,
        }
    }
}

pub(super) fn unmask_value(value: &Value, guard: &Guard<'_>) -> Value {
    match value {
        Value::String(s) => Value::String(guard.unmask(s)),
        Value::Array(a) => Value::Array(a.iter().map(|v| unmask_value(v, guard)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), unmask_value(v, guard)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn screened(guard: &mut Guard<'_>, source: &str, text: &str) -> Screened {
    guard
        .screen(source, text)
        .unwrap_or_else(|_| constant("(this result was withheld by the guardrails)"))
}

/// What a run hands a tool call: where it runs and what it may use.
pub struct CallScope<'a> {
    pub state: &'a AgentState,
    pub tenant_id: Uuid,
    pub conversation_id: Uuid,
    pub contact_id: Uuid,
    pub actions: &'a [TenantAction],
    /// The run's embedder (the tenant's provider, or the built-in one).
    pub embedder: &'a Embedder,
}

/// Runs one tool call; returns what the model gets back (screened) and the call's effect. A
/// provider failure (the embeddings API behind `search_knowledge`) is a [`Stop::Provider`],
/// like a failing chat call: the run hands the conversation over, it does not start again.
pub(super) async fn call(
    scope: &CallScope<'_>,
    record: &mut Record,
    call: &ToolCall,
    guard: &mut Guard<'_>,
) -> std::result::Result<(Screened, ToolEffect), Stop> {
    let CallScope {
        state,
        tenant_id,
        conversation_id,
        contact_id,
        actions,
        embedder,
    } = *scope;
    let execution_id = record.execution_id;
    let source = format!("tool:{}", call.name());
    let masked_args: Value = match serde_json::from_str(call.arguments()) {
        Ok(v) => v,
        Err(_) => {
            return Ok((
                constant("error: the arguments are not valid JSON"),
                ToolEffect::Invalid,
            ))
        }
    };
    let action = actions.iter().find(|a| a.name == call.name());
    let builtin = builtin_specs().iter().find(|s| s.name() == call.name());
    let schema = match (builtin, action) {
        (Some(spec), _) => spec.parameters().clone(),
        (None, Some(a)) => a.parameters.clone(),
        (None, None) => {
            return Ok((
                constant("error: there is no such tool"),
                ToolEffect::Invalid,
            ))
        }
    };
    // The endpoint gets, and the schema checks, the real values the placeholders stand for.
    let args = unmask_value(&masked_args, guard);
    if let Err(problem) = validate(&schema, &args) {
        let text = guard
            .screen(&source, &format!("error: {problem}"))
            .unwrap_or_else(|_| constant("error: invalid arguments"));
        return Ok((text, ToolEffect::Invalid));
    }
    let agent = AuditSource {
        tenant_id,
        actor_type: "agent",
        actor_id: Some(execution_id.to_string()),
        meta: Default::default(),
    };
    match (call.name(), builtin) {
        ("search_knowledge", Some(_)) => {
            let query = args["query"].as_str().unwrap_or_default();
            let masked = guard.mask("tool:search_knowledge:query", query);
            let started = std::time::Instant::now();
            let embedded = embedder.embed_query(query, masked).await;
            record.embedding_call("search_knowledge", embedder, &embedded, started);
            let query = embedded.map_err(Stop::Provider)?.into_query(embedder);
            let mut tx = crate::knowledge::SearchTx::begin(&state.db, tenant_id).await?;
            let hits = crate::knowledge::search(&mut tx, tenant_id, query, 3).await?;
            tx.commit().await?;
            record.retrieval.extend(hits.iter().map(|h| {
                json!({ "chunk_id": h.chunk_id, "article_id": h.article_id, "score": h.score, "via": "search_knowledge" })
            }));
            let text = hits
                .iter()
                .map(|h| format!("[{}] {}: {}", h.chunk_id, h.title, h.content))
                .collect::<Vec<_>>()
                .join("\n\n");
            Ok((
                screened(
                    guard,
                    &source,
                    if text.is_empty() {
                        "no passages found"
                    } else {
                        &text
                    },
                ),
                ToolEffect::Data,
            ))
        }
        ("get_customer_profile", Some(_)) => {
            let mut tx = state.db.tenant_tx(tenant_id).await?;
            let contact = crate::crm::contacts::fetch(&mut tx, contact_id).await?;
            tx.commit().await?;
            let text = format!(
                "name: {}\nemail: {}\nphone: {}\ncustomer since: {}",
                contact.name.as_deref().unwrap_or("unknown"),
                contact.email.as_deref().unwrap_or("unknown"),
                contact.phone.as_deref().unwrap_or("unknown"),
                contact.created_at.date()
            );
            Ok((screened(guard, &source, &text), ToolEffect::Data))
        }
        ("create_ticket", Some(_)) => {
            let mut tx = state.db.tenant_tx(tenant_id).await?;
            let subject: String = args["subject"]
                .as_str()
                .unwrap_or("Support request")
                .chars()
                .take(300)
                .collect();
            let priority = args["priority"]
                .as_str()
                .and_then(crate::cs::tickets::Priority::parse)
                .unwrap_or(crate::cs::tickets::Priority::Normal);
            let id = crate::cs::tickets::create_for_agent(
                &mut tx,
                tenant_id,
                contact_id,
                conversation_id,
                &subject,
                args["description"].as_str().unwrap_or_default(),
                priority,
                execution_id,
            )
            .await?;
            audit::record(
                &mut tx,
                &agent,
                AuditEvent::new("ticket.created", "ticket", id)
                    .after(json!({ "subject": args["subject"], "via": "agent" })),
            )
            .await?;
            tx.commit().await?;
            Ok((constant("ticket created"), ToolEffect::Executed))
        }
        ("add_note", Some(_)) => {
            let text = args["text"].as_str().unwrap_or_default();
            let mut tx = state.db.tenant_tx(tenant_id).await?;
            let id = crate::conversations::add_note(
                &mut tx,
                tenant_id,
                conversation_id,
                crate::conversations::Author::Ai,
                text,
            )
            .await?;
            audit::record(
                &mut tx,
                &agent,
                AuditEvent::new("note.created", "message", id).after(json!({ "via": "agent" })),
            )
            .await?;
            tx.commit().await?;
            Ok((constant("note added"), ToolEffect::Executed))
        }
        ("handoff_to_human", Some(_)) => {
            let reason = masked_args["reason"]
                .as_str()
                .unwrap_or("model_requested")
                .chars()
                .take(200)
                .collect::<String>();
            Ok((
                constant("a human will take over"),
                ToolEffect::Handoff { reason },
            ))
        }
        _ => {
            let Some(action) = action else {
                return Ok((
                    constant("error: there is no such tool"),
                    ToolEffect::Invalid,
                ));
            };
            if action.is_material() {
                return Ok((
                    constant(
                        "this action needs a person's approval; it has been submitted for review",
                    ),
                    ToolEffect::PendingReview {
                        action_id: action.id,
                        name: action.name.clone(),
                        amount: action.amount(&args),
                        arguments: args,
                    },
                ));
            }
            let result = invoke(
                state,
                action,
                &args,
                conversation_id,
                &format!("{execution_id}:{}", call.id()),
            )
            .await;
            let mut tx = state.db.tenant_tx(tenant_id).await?;
            audit::record(
                &mut tx,
                &agent,
                AuditEvent::new("action.executed", "tenant_action", action.id)
                    .after(json!({ "name": action.name, "status": result.0 })),
            )
            .await?;
            tx.commit().await?;
            Ok((
                screened(guard, &source, &format!("HTTP {}: {}", result.0, result.1)),
                ToolEffect::Executed,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guardrails::schema::check_schema;

    #[test]
    fn the_built_in_tools_parse_and_their_own_arguments_validate() {
        let specs = builtin_specs();
        assert_eq!(specs.len(), 5);
        for spec in specs {
            assert!(check_schema(spec.parameters()).is_ok(), "{}", spec.name());
        }
        let ticket = &specs[2];
        assert!(validate(
            ticket.parameters(),
            &json!({ "subject": "Broken", "priority": "high" })
        )
        .is_ok());
        assert!(validate(
            ticket.parameters(),
            &json!({ "subject": "", "priority": "high" })
        )
        .is_err());
    }
}
