//! The execution record of a run (AGT-8): what was configured, sent, retrieved, called and
//! decided, with timings, token counts and every provider call.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::agent::decision::{Confidence, Decision};
use crate::agent::pipeline::{self};
use crate::agent::prompts::TemplateUse;
use crate::agent::provider::{ChatResponse, Provider, ProviderError};
use crate::agent::settings::Embedder;
use crate::knowledge::Embedded;

/// How a run ended (`agent_execution.outcome`): `running` until it finishes.
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RunOutcome {
    #[default]
    Running,
    Replied,
    Blocked,
    HandedOff,
    PendingReview,
    Failed,
    Abandoned,
}

impl RunOutcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Replied => "replied",
            RunOutcome::Blocked => "blocked",
            RunOutcome::HandedOff => "handed_off",
            RunOutcome::PendingReview => "pending_review",
            RunOutcome::Failed => "failed",
            RunOutcome::Abandoned => "abandoned",
        }
    }
}

/// Token counts summed over every provider call of a run.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct UsageTotals {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub embedding_tokens: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Record {
    pub execution_id: Uuid,
    pub conversation_id: Uuid,
    pub trigger_message_id: Uuid,
    pub provider: String,
    pub model: String,
    pub offline: bool,
    /// Everything the run was configured with, the embedder included (AGT-10).
    pub parameters: Value,
    pub templates: Vec<TemplateUse>,
    /// Each model call's messages exactly as sent (masked).
    pub requests: Vec<Value>,
    pub retrieval: Vec<Value>,
    pub tool_calls: Vec<Value>,
    pub responses: Vec<Value>,
    /// Every call to a provider (chat or embeddings): its attempts, latency, tokens and error.
    pub provider_calls: Vec<Value>,
    pub decision: Option<Decision>,
    pub confidence: Option<Confidence>,
    pub guardrails: Vec<pipeline::VerdictRecord>,
    pub outcome: RunOutcome,
    pub reason: String,
    /// Milliseconds, to the microsecond.
    pub timings_ms: BTreeMap<&'static str, f64>,
    pub usage: UsageTotals,
    pub errors: Vec<String>,
}

impl Record {
    /// Records a chat call, answered or not.
    pub(in crate::agent) fn chat_call(
        &mut self,
        provider: &Provider,
        result: &std::result::Result<ChatResponse, ProviderError>,
        started: Instant,
    ) {
        let mut call = json!({
            "kind": "chat", "provider": provider.provider_name(), "model": provider.chat_model(),
            "latency_ms": millis(started),
        });
        match result {
            Ok(answer) => {
                let usage = answer.usage();
                if let Some(u) = usage {
                    self.usage.prompt_tokens += u64::from(u.prompt_tokens);
                    self.usage.completion_tokens += u64::from(u.completion_tokens);
                }
                call["attempts"] = json!(answer.attempts());
                call["answered_by"] = json!(answer.model());
                call["prompt_tokens"] = json!(usage.map(|u| u.prompt_tokens));
                call["completion_tokens"] = json!(usage.map(|u| u.completion_tokens));
            }
            Err(e) => {
                call["attempts"] = json!(attempts_of(e));
                call["error"] = json!(e.to_string());
            }
        }
        self.provider_calls.push(call);
    }

    /// Records an embeddings call of a provider (the built-in embedder is no provider call).
    pub(in crate::agent) fn embedding_call(
        &mut self,
        purpose: &str,
        embedder: &Embedder,
        result: &std::result::Result<Embedded, ProviderError>,
        started: Instant,
    ) {
        let Some(provider) = embedder.provider_name() else {
            return;
        };
        let mut call = json!({
            "kind": "embeddings", "purpose": purpose, "provider": provider, "model": embedder.model(),
            "latency_ms": millis(started),
        });
        match result {
            Ok(embedded) => {
                self.usage.embedding_tokens += u64::from(embedded.tokens.unwrap_or(0));
                call["attempts"] = json!(embedded.attempts);
                call["tokens"] = json!(embedded.tokens);
            }
            Err(e) => {
                call["attempts"] = json!(attempts_of(e));
                call["error"] = json!(e.to_string());
            }
        }
        self.provider_calls.push(call);
    }
}

/// How many HTTP requests a failed call made, when the error says.
pub(super) fn attempts_of(error: &ProviderError) -> Option<u32> {
    match error {
        ProviderError::Unavailable { attempts, .. } => Some(*attempts),
        ProviderError::Config(_) => Some(0),
        _ => None,
    }
}

/// The guardrail verdicts of a run that found something, for a review item.
pub(super) fn findings(record: &Record) -> Value {
    Value::Array(
        record
            .guardrails
            .iter()
            .filter(|v| !v.verdict.findings.is_empty())
            .filter_map(|v| serde_json::to_value(v).ok())
            .collect(),
    )
}

/// Time since `t` in milliseconds, kept to the microsecond.
pub(super) fn millis(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0
}
