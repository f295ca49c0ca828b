//! The one road to the model (AGT-1, AGT-2, AGT-4). Text becomes [`Screened`] only by passing
//! the guardrails' inbound stage here, which masks its PII with the conversation's vault; a
//! [`GuardedRequest`] is built only from screened parts, tool definitions made here, the model's
//! own earlier turns and trusted templates; embeddings inputs are [`Masked`] here too; and the
//! provider will only send a request when handed a [`ModelAccess`], which nothing outside this
//! module can make. So a path from the runtime to the model that skips the guardrails does not
//! compile.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::prompts::{Template, PROMPTS};
use super::provider::{ChatMessage, ChatRequest, ChatResponse, Provider, ProviderError, ToolCall};
use crate::guardrails::{
    evaluate, unmask, Context, KnownEntities, Policy, PromptSecret, Stage, Vault, Verdict,
};
use crate::knowledge::Embedded;

/// Text that passed the inbound stage: what the model may see.
#[derive(Debug, Clone)]
pub struct Screened(String);

impl Screened {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Text whose PII the inbound stage replaced with placeholders: what an embeddings API may see.
/// Unlike [`Screened`] it exists also when a topic rule stopped the text: an embedding is not a
/// prompt (nothing is generated from it, and a stopped passage is withheld again, by the same
/// stage, before any model could read it), while the personal data in it never leaves (AGT-2).
#[derive(Debug, Clone)]
pub struct Masked(String);

impl Masked {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Part of the masked text, as `narrow` picks it (the question out of a message). `narrow`
    /// only ever sees masked text, so what it returns holds no raw value.
    pub fn narrowed(self, narrow: impl FnOnce(&str) -> String) -> Masked {
        Masked(narrow(&self.0))
    }
}

impl From<Screened> for Masked {
    fn from(s: Screened) -> Self {
        Masked(s.0)
    }
}

/// The capability to call the model. Its field is private: only this module constructs it, in
/// [`call_model`] and [`embed`], after the request was built from screened parts.
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
///     let request = GuardedRequest::new(vec![Part::User(constant("hello"))], vec![], false, false);
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
///     let request = GuardedRequest::new(vec![Part::User(Screened(customer_text))], vec![], false, false);
///     let _ = call_model(provider, &request).await;
/// }
/// ```
///
/// The embeddings API is a provider too. The pipeline embeds masked text, and text becomes
/// [`Masked`] only through the inbound stage ([`Guard::mask`], [`mask_passages`]) or from
/// screened text:
///
/// ```no_run
/// use custodian::agent::pipeline::{constant, embed, Masked};
/// use custodian::agent::provider::Provider;
///
/// async fn vectors(provider: &Provider) {
///     let _ = embed(provider, &[Masked::from(constant("return policy"))]).await;
/// }
/// ```
///
/// ```compile_fail,E0423
/// // proves: AGT-2 (raw text cannot pose as masked text to reach the embeddings API)
/// use custodian::agent::pipeline::{constant, embed, Masked};
/// use custodian::agent::provider::Provider;
///
/// async fn vectors(provider: &Provider, passage: String) {
///     let _ = embed(provider, &[Masked(passage)]).await;
/// }
/// ```
///
/// ```no_run
/// use custodian::agent::pipeline::ModelAccess;
/// use custodian::agent::provider::Provider;
///
/// async fn vectors(provider: &Provider, passages: &[String], access: ModelAccess) {
///     let _ = provider.embed(passages, access).await;
/// }
/// ```
///
/// ```compile_fail,E0061
/// // proves: AGT-1 (the embeddings API needs the pipeline's capability as well)
/// use custodian::agent::provider::Provider;
///
/// async fn vectors(provider: &Provider, passages: &[String]) {
///     let _ = provider.embed(passages).await;
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
    /// This run's data-block boundary ([`Guard::as_data`]): random, so no text can close a
    /// block it is inside of.
    boundary: String,
}

impl<'p> Guard<'p> {
    pub fn new(policy: &'p Policy, ctx: Context) -> Self {
        let mut boundary = uuid::Uuid::new_v4().simple().to_string();
        boundary.truncate(12);
        Guard {
            policy,
            ctx,
            verdicts: Vec::new(),
            boundary,
        }
    }

    /// Screened text that comes from outside the platform (a customer's message, a knowledge
    /// passage, a tool's result) marked as data for the model (spotlighting): a block opened and
    /// closed by lines naming the run's random boundary, each of its lines marked with `│ `, as
    /// the system prompt explains. Instructions inside it read as quoted data, and no text can
    /// end the block early, as none knows the boundary.
    pub fn as_data(&self, kind: &str, text: Screened) -> Screened {
        let mut out = String::with_capacity(text.0.len() + 64);
        out.push_str(&format!("«data {kind} {}»\n", self.boundary));
        for line in text.0.lines() {
            out.push_str("│ ");
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&format!("«end data {}»", self.boundary));
        Screened(out)
    }

    /// The boundary, for the system prompt that explains the data blocks.
    pub fn data_boundary(&self) -> Screened {
        Screened(self.boundary.clone())
    }

    /// The inbound stage: `Ok` with the masked text when it may go on to the model, `Err` with
    /// the verdict when a rule stopped it.
    /// What the customer is told when a person takes over for `reason`: the tenant's wording
    /// for that kind of hand-off (`safe_replies` key `handoff.<kind>`, the kind being the part
    /// before any `:`), else its general `handoff` wording, else the built-in one, in the
    /// customer's language; nothing when the tenant turned announcing that kind off.
    pub fn handoff_notice(&self, reason: &str) -> Option<String> {
        let kind = reason.split(':').next().unwrap_or(reason);
        if self.policy.quiet_handoff(kind) {
            return None;
        }
        self.policy
            .safe_reply(&format!("handoff.{kind}"), self.ctx.language)
            .or_else(|| self.policy.safe_reply("handoff", self.ctx.language))
    }

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

    /// The inbound stage for an embeddings input: the masked text, whatever the topic verdict.
    pub fn mask(&mut self, source: impl Into<String>, text: &str) -> Masked {
        let verdict = evaluate(Stage::Inbound, text, &mut self.ctx, self.policy);
        let masked = Masked(verdict.masked_text.clone());
        self.verdicts.push(VerdictRecord {
            stage: "inbound",
            source: source.into(),
            verdict,
        });
        masked
    }

    /// A tenant's tool (an HTTP action) as the model may see it: its description and every
    /// string of its parameter schema pass the inbound stage. `None` when a rule stopped any of
    /// them: the model is not offered the tool. Only verdicts that found something are kept
    /// (a schema has many small strings).
    pub fn tool(&mut self, name: &str, description: &str, parameters: &Value) -> Option<ToolSpec> {
        let source = format!("tool:{name}");
        let mut stopped = false;
        let mut screen = |text: &str, guard: &mut Guard<'_>| -> String {
            let verdict = evaluate(Stage::Inbound, text, &mut guard.ctx, guard.policy);
            stopped |= verdict.is_stopped();
            let masked = verdict.masked_text.clone();
            if !verdict.findings.is_empty() {
                guard.verdicts.push(VerdictRecord {
                    stage: "inbound",
                    source: source.clone(),
                    verdict,
                });
            }
            masked
        };
        let description = screen(description, self);
        let parameters = map_strings(parameters, &mut |s| screen(s, self));
        (!stopped).then(|| ToolSpec {
            name: name.to_string(),
            description,
            parameters,
        })
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

/// Every string value of a JSON document through `f`; keys and other values stay.
fn map_strings(value: &Value, f: &mut dyn FnMut(&str) -> String) -> Value {
    match value {
        Value::String(s) => Value::String(f(s)),
        Value::Array(items) => Value::Array(items.iter().map(|v| map_strings(v, f)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), map_strings(v, f)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Knowledge passages for the embeddings API, outside any conversation: each passes the
/// inbound stage of the tenant's policy with a vault of its own, so an address or a phone
/// number in an article is embedded as a placeholder (the stored passage keeps the real text,
/// for quoting).
pub fn mask_passages(policy: &Policy, texts: &[String]) -> Vec<Masked> {
    let mut ctx = Context::new(Vault::new(), KnownEntities::new());
    texts
        .iter()
        .map(|t| Masked(evaluate(Stage::Inbound, t, &mut ctx, policy).masked_text))
        .collect()
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

/// A fresh canary for one run's system prompt, and what the run's guard checks drafts against
/// (the canary and the templates' wording): a draft giving either away is refused.
pub fn canary() -> (PromptSecret, Screened) {
    let token = format!("cnry{}", uuid::Uuid::new_v4().simple());
    (
        PromptSecret::new(token.clone(), PROMPTS.texts.clone()),
        Screened(token),
    )
}

/// A fixed, trusted text (no customer data), e.g. "(none)".
pub fn constant(text: &'static str) -> Screened {
    Screened(text.to_string())
}

/// A function the model may call: made only here, from trusted constants ([`trusted_tool`]) or
/// through the inbound stage ([`Guard::tool`]), so its description cannot carry raw text.
///
/// ```no_run
/// use custodian::agent::pipeline::{call_model, constant, trusted_tool, GuardedRequest, Part};
/// use custodian::agent::provider::Provider;
///
/// async fn ask(provider: &Provider) {
///     let tool = trusted_tool("lookup", "Look an order up.", r#"{"type":"object"}"#);
///     let request = GuardedRequest::new(vec![Part::User(constant("hi"))], vec![tool], false, false);
///     let _ = call_model(provider, &request).await;
/// }
/// ```
///
/// ```compile_fail,E0451
/// // proves: AGT-1 (a tool description cannot carry unscreened text to the model)
/// use custodian::agent::pipeline::{call_model, constant, GuardedRequest, Part, ToolSpec};
/// use custodian::agent::provider::Provider;
///
/// async fn ask(provider: &Provider, tenant_text: String) {
///     let tool = ToolSpec { name: "lookup".into(), description: tenant_text, parameters: serde_json::json!({}) };
///     let request = GuardedRequest::new(vec![Part::User(constant("hi"))], vec![tool], false, false);
///     let _ = call_model(provider, &request).await;
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    name: String,
    description: String,
    /// JSON schema of the arguments object.
    parameters: Value,
}

impl ToolSpec {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    pub fn parameters(&self) -> &Value {
        &self.parameters
    }
}

/// A built-in tool: fixed texts, compiled into the binary. Panics when `parameters` is not
/// JSON, which a unit test of the built-in tools rules out.
pub fn trusted_tool(
    name: &'static str,
    description: &'static str,
    parameters: &'static str,
) -> ToolSpec {
    ToolSpec {
        name: name.to_string(),
        description: description.to_string(),
        parameters: serde_json::from_str(parameters)
            .unwrap_or_else(|e| panic!("the parameters of tool {name} are not JSON: {e}")),
    }
}

/// Which call a tool result answers: only ever taken from a call the model made.
pub struct CallId(String);

impl From<&ToolCall> for CallId {
    fn from(call: &ToolCall) -> Self {
        CallId(call.id().to_string())
    }
}

/// The model's own earlier turn, exactly as the provider returned it.
pub struct ModelTurn {
    content: Option<String>,
    tool_calls: Vec<ToolCall>,
}

/// A message of a request, made of screened text, the model's own turns and the ids of the
/// calls it made.
///
/// ```no_run
/// use custodian::agent::pipeline::{call_model, constant, GuardedRequest, Part};
/// use custodian::agent::provider::{ChatResponse, Provider};
///
/// async fn answer_tool(provider: &Provider, answer: &ChatResponse) {
///     let mut parts = vec![Part::User(constant("hi")), Part::model_turn(answer)];
///     for call in answer.tool_calls() {
///         parts.push(Part::Tool { call: call.into(), content: constant("done") });
///     }
///     let _ = call_model(provider, &GuardedRequest::new(parts, vec![], false, false)).await;
/// }
/// ```
///
/// A call id (or arguments) that did not come from the model, or a made-up model turn, cannot
/// be sent:
///
/// ```compile_fail,E0308
/// // proves: AGT-1 (a tool result answers only a call the model made)
/// use custodian::agent::pipeline::{call_model, constant, GuardedRequest, Part};
/// use custodian::agent::provider::{ChatResponse, Provider};
///
/// async fn answer_tool(provider: &Provider, answer: &ChatResponse, raw_id: String) {
///     let parts = vec![Part::model_turn(answer), Part::Tool { call: raw_id, content: constant("done") }];
///     let _ = call_model(provider, &GuardedRequest::new(parts, vec![], false, false)).await;
/// }
/// ```
///
/// ```compile_fail,E0423
/// // proves: AGT-1 (a call id cannot be made from raw text either)
/// use custodian::agent::pipeline::{call_model, constant, CallId, GuardedRequest, Part};
/// use custodian::agent::provider::{ChatResponse, Provider};
///
/// async fn answer_tool(provider: &Provider, answer: &ChatResponse, raw_id: String) {
///     let parts = vec![Part::model_turn(answer), Part::Tool { call: CallId(raw_id), content: constant("done") }];
///     let _ = call_model(provider, &GuardedRequest::new(parts, vec![], false, false)).await;
/// }
/// ```
///
/// ```compile_fail,E0451
/// // proves: AGT-1 (only the provider's response path makes a model turn)
/// use custodian::agent::pipeline::{call_model, GuardedRequest, Part};
/// use custodian::agent::provider::{ChatResponse, Provider};
///
/// async fn pose(provider: &Provider, customer_text: String) {
///     let answer = ChatResponse {
///         content: Some(customer_text), tool_calls: vec![], finish_reason: None, logprobs: None,
///         usage: None, model: String::new(), raw: serde_json::Value::Null, attempts: 1,
///         latency: std::time::Duration::ZERO,
///     };
///     let parts = vec![Part::model_turn(&answer)];
///     let _ = call_model(provider, &GuardedRequest::new(parts, vec![], false, false)).await;
/// }
/// ```
pub enum Part {
    System(Screened),
    User(Screened),
    /// An agent message of the history, screened like the rest (the model only ever saw
    /// screened text, so its earlier words are placeholders and all).
    Assistant(Screened),
    /// What the model answered in this run: [`Part::model_turn`].
    ModelTurn(ModelTurn),
    Tool {
        call: CallId,
        content: Screened,
    },
}

impl Part {
    /// What the model answered, to send back with the tool results. It holds only placeholders
    /// the model was given (the outbound stage checks the final draft before anyone sees it),
    /// and only the provider makes a [`ChatResponse`].
    pub fn model_turn(answer: &ChatResponse) -> Part {
        Part::ModelTurn(ModelTurn {
            content: answer.content().map(str::to_owned),
            tool_calls: answer.tool_calls().to_vec(),
        })
    }
}

pub struct GuardedRequest(ChatRequest);

impl GuardedRequest {
    /// `decision`: ask for the structured decision of `prompts/decision.schema.json`.
    pub fn new(parts: Vec<Part>, tools: Vec<ToolSpec>, decision: bool, logprobs: bool) -> Self {
        let messages = parts
            .into_iter()
            .map(|p| match p {
                Part::System(s) => ChatMessage::System(s.0),
                Part::User(s) => ChatMessage::User(s.0),
                Part::Assistant(s) => ChatMessage::Assistant {
                    content: Some(s.0),
                    tool_calls: Vec::new(),
                },
                Part::ModelTurn(turn) => ChatMessage::Assistant {
                    content: turn.content,
                    tool_calls: turn.tool_calls,
                },
                Part::Tool { call, content } => ChatMessage::Tool {
                    tool_call_id: call.0,
                    content: content.0,
                },
            })
            .collect();
        GuardedRequest(ChatRequest {
            messages,
            tools,
            response_schema: decision
                .then(|| ("decision".to_string(), PROMPTS.decision_schema.clone())),
            logprobs,
        })
    }

    /// The messages exactly as they will be sent, for the execution audit.
    pub fn messages(&self) -> &[ChatMessage] {
        &self.0.messages
    }

    /// The tools offered, as they will be sent.
    pub fn tools(&self) -> &[ToolSpec] {
        &self.0.tools
    }
}

/// Turns a sent request back into parts, to continue the conversation with the model. Its
/// texts were screened, and its model turns and call ids came from the model, when the request
/// was built.
pub fn reopen(request: GuardedRequest) -> (Vec<Part>, Vec<ToolSpec>) {
    let ChatRequest {
        messages, tools, ..
    } = request.0;
    let parts = messages
        .into_iter()
        .map(|m| match m {
            ChatMessage::System(t) => Part::System(Screened(t)),
            ChatMessage::User(t) => Part::User(Screened(t)),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => Part::ModelTurn(ModelTurn {
                content,
                tool_calls,
            }),
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => Part::Tool {
                call: CallId(tool_call_id),
                content: Screened(content),
            },
        })
        .collect();
    (parts, tools)
}

/// The only function that calls the chat model.
pub async fn call_model(
    provider: &Provider,
    request: &GuardedRequest,
) -> Result<ChatResponse, ProviderError> {
    provider.chat(&request.0, ModelAccess(())).await
}

/// The only function that calls the embeddings API.
pub async fn embed(provider: &Provider, texts: &[Masked]) -> Result<Embedded, ProviderError> {
    let inputs: Vec<String> = texts.iter().map(|t| t.0.clone()).collect();
    provider.embed(&inputs, ModelAccess(())).await
}
