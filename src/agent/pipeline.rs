//! The one road to the model (AGT-1, AGT-2, AGT-4). Text becomes [`Screened`] only by passing
//! the guardrails' inbound stage here, which masks its PII with the conversation's vault; a
//! [`GuardedRequest`] is built only from screened parts and trusted templates; and the provider
//! will only send a request when handed a [`ModelAccess`], which nothing outside this module
//! can make. So a path from the runtime to the model that skips the guardrails does not compile.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::prompts::Template;
use super::provider::{
    ChatMessage, ChatRequest, ChatResponse, Provider, ProviderError, ToolCall, ToolSpec,
};
use crate::guardrails::{evaluate, unmask, Context, Policy, Stage, Verdict};

/// Text that passed the inbound stage: what the model may see.
#[derive(Debug, Clone)]
pub struct Screened(String);

impl Screened {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The capability to call the model. Its field is private: only this module constructs it, in
/// [`call_model`], after the request was built from screened parts.
///
/// Code that holds a `ModelAccess` may call the provider, and anyone may call the model
/// through [`call_model`] with a request made of screened parts:
///
/// ```no_run
/// use custodian::agent::pipeline::{call_model, constant, GuardedRequest, ModelAccess, Part};
/// use custodian::agent::provider::{ChatRequest, Provider};
///
/// async fn send(provider: &Provider, request: &ChatRequest, access: ModelAccess) {
///     let _ = provider.chat(request, access).await;
/// }
///
/// async fn ask(provider: &Provider) {
///     let request = GuardedRequest::new(vec![Part::User(constant("hello"))], vec![], None, false);
///     let _ = call_model(provider, &request).await;
/// }
/// ```
///
/// Code anywhere else cannot make a `ModelAccess` or pass raw text off as screened, so a path
/// to the model that skips the guardrails does not compile. Each example below differs from
/// its twin above only where the capability or the text comes from (rustdoc on stable does
/// not check the error code, so the twins are what shows the failure is the intended one):
///
/// ```compile_fail,E0423
/// // proves: AGT-1 (a `ModelAccess` cannot be made outside the pipeline)
/// use custodian::agent::pipeline::ModelAccess;
/// use custodian::agent::provider::{ChatRequest, Provider};
///
/// async fn send(provider: &Provider, request: &ChatRequest) {
///     let _ = provider.chat(request, ModelAccess(())).await;
/// }
/// ```
///
/// ```compile_fail,E0423
/// // proves: AGT-1 (raw text cannot pose as screened text to reach the model)
/// use custodian::agent::pipeline::{call_model, GuardedRequest, Part, Screened};
/// use custodian::agent::provider::Provider;
///
/// async fn send(provider: &Provider, customer_text: String) {
///     let request = GuardedRequest::new(vec![Part::User(Screened(customer_text))], vec![], None, false);
///     let _ = call_model(provider, &request).await;
/// }
/// ```
pub struct ModelAccess(());

#[derive(Debug, Clone, Serialize)]
pub struct VerdictRecord {
    pub stage: &'static str,
    /// What was evaluated: `customer_message`, `history:<id>`, `knowledge:<chunk>`, `draft`…
    pub source: String,
    pub verdict: Verdict,
}

/// The guardrails of one run: the tenant's policy, the conversation's vault and CRM context,
/// and every verdict given, for the execution audit.
pub struct Guard<'p> {
    policy: &'p Policy,
    pub ctx: Context,
    pub verdicts: Vec<VerdictRecord>,
}

impl<'p> Guard<'p> {
    pub fn new(policy: &'p Policy, ctx: Context) -> Self {
        Guard {
            policy,
            ctx,
            verdicts: Vec::new(),
        }
    }

    /// The inbound stage: `Ok` with the masked text when it may go on to the model, `Err` with
    /// the verdict when a rule stopped it.
    pub fn screen(&mut self, source: impl Into<String>, text: &str) -> Result<Screened, Verdict> {
        let verdict = evaluate(Stage::Inbound, text, &mut self.ctx, self.policy);
        let stopped = verdict.is_stopped();
        let masked = verdict.masked_text.clone();
        self.verdicts.push(VerdictRecord {
            stage: "inbound",
            source: source.into(),
            verdict: verdict.clone(),
        });
        if stopped {
            Err(verdict)
        } else {
            Ok(Screened(masked))
        }
    }

    /// The outbound stage on a draft, still masked.
    pub fn check_draft(&mut self, draft: &str) -> Verdict {
        let verdict = evaluate(Stage::Outbound, draft, &mut self.ctx, self.policy);
        self.verdicts.push(VerdictRecord {
            stage: "outbound",
            source: "draft".into(),
            verdict: verdict.clone(),
        });
        verdict
    }

    /// Restores the real values for the customer; placeholders the vault did not issue stay as
    /// they are (the outbound stage has already refused drafts holding any).
    pub fn unmask(&self, text: &str) -> String {
        unmask(text, &self.ctx.vault)
    }

    pub fn policy(&self) -> &Policy {
        self.policy
    }
}

/// Renders a trusted template with screened values.
pub fn render(
    template: &Template,
    values: BTreeMap<&str, Screened>,
) -> Result<Screened, super::prompts::TemplateError> {
    let plain: BTreeMap<&str, String> = values.into_iter().map(|(k, v)| (k, v.0)).collect();
    template.render(&plain).map(Screened)
}

/// Joins screened texts (e.g. a list of passages) into one.
pub fn join(parts: &[Screened], separator: &str) -> Screened {
    Screened(
        parts
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>()
            .join(separator),
    )
}

/// A fixed, trusted text (no customer data), e.g. "(none)".
pub fn constant(text: &'static str) -> Screened {
    Screened(text.to_string())
}

/// A message of a request, made of screened text only.
pub enum Part {
    System(Screened),
    User(Screened),
    /// The model's own earlier turn (it only ever saw screened text): an agent message of the
    /// history, screened like the rest, or [`Part::model_turn`].
    Assistant {
        content: Option<Screened>,
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        call_id: String,
        content: Screened,
    },
}

impl Part {
    /// What the model answered, to send back with the tool results. It holds only placeholders
    /// the model was given (the outbound stage checks the final draft before anyone sees it).
    pub fn model_turn(answer: &ChatResponse) -> Part {
        Part::Assistant {
            content: answer.content.clone().map(Screened),
            tool_calls: answer.tool_calls.clone(),
        }
    }
}

pub struct GuardedRequest(ChatRequest);

impl GuardedRequest {
    pub fn new(
        parts: Vec<Part>,
        tools: Vec<ToolSpec>,
        response_schema: Option<(String, Value)>,
        logprobs: bool,
    ) -> Self {
        let messages = parts
            .into_iter()
            .map(|p| match p {
                Part::System(s) => ChatMessage::System(s.0),
                Part::User(s) => ChatMessage::User(s.0),
                Part::Assistant {
                    content,
                    tool_calls,
                } => ChatMessage::Assistant {
                    content: content.map(|c| c.0),
                    tool_calls,
                },
                Part::Tool { call_id, content } => ChatMessage::Tool {
                    tool_call_id: call_id,
                    content: content.0,
                },
            })
            .collect();
        GuardedRequest(ChatRequest {
            messages,
            tools,
            response_schema,
            logprobs,
        })
    }

    /// The messages exactly as they will be sent, for the execution audit.
    pub fn messages(&self) -> &[ChatMessage] {
        &self.0.messages
    }
}

/// Turns a sent request back into parts, to continue the conversation with the model. Its
/// texts were screened when the request was built.
pub fn reopen(request: GuardedRequest) -> Vec<Part> {
    request
        .0
        .messages
        .into_iter()
        .map(|m| match m {
            ChatMessage::System(t) => Part::System(Screened(t)),
            ChatMessage::User(t) => Part::User(Screened(t)),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => Part::Assistant {
                content: content.map(Screened),
                tool_calls,
            },
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => Part::Tool {
                call_id: tool_call_id,
                content: Screened(content),
            },
        })
        .collect()
}

/// The only function that calls the model.
pub async fn call_model(
    provider: &Provider,
    request: &GuardedRequest,
) -> Result<ChatResponse, ProviderError> {
    provider.chat(&request.0, ModelAccess(())).await
}
