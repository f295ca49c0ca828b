//! What the client and the agent say to each other: the messages sent, the request, and the
//! model's answer. A model's answer and its tool calls are made only inside the provider (their
//! fields are `pub(super)`, so the parser can fill them and nothing outside can), which is what
//! lets them go back to the model as its own words (AGT-1).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::pipeline::ToolSpec;

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatMessage {
    System(String),
    User(String),
    Assistant {
        content: Option<String>,
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        tool_call_id: String,
        content: String,
    },
}

/// A function call the model asked for. Only a model's answer makes one (its fields are
/// private and it cannot be deserialised), so a call id or arguments sent back to the model
/// always came from the model (AGT-1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    /// Echoed back as `tool_call_id` in the tool message that answers it.
    pub(super) id: String,
    pub(super) name: String,
    /// The model's raw JSON text: not parsed or validated here.
    pub(super) arguments: String,
}

impl ToolCall {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn arguments(&self) -> &str {
        &self.arguments
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
    /// `(name, JSON schema)` of the structured answer wanted.
    pub response_schema: Option<(String, Value)>,
    /// Ask for per-token log probabilities.
    pub logprobs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// What the model answered. Only the provider's response path makes one (its fields are
/// private), so [`crate::agent::pipeline::Part::model_turn`] can send it back to the model as the
/// model's own words: nothing else can pose as a model turn (AGT-1).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// `None` when the model answered only with tool calls (an empty string counts as none).
    pub(super) content: Option<String>,
    pub(super) tool_calls: Vec<ToolCall>,
    pub(super) finish_reason: Option<String>,
    /// Log probability of each generated token, when asked for and returned.
    pub(super) logprobs: Option<Vec<f32>>,
    pub(super) usage: Option<Usage>,
    /// The model that answered, as the provider named it.
    pub(super) model: String,
    /// The response body exactly as received, for the execution audit.
    pub(super) raw: Value,
    /// HTTP requests made for this call, retries and fallbacks included.
    pub(super) attempts: u32,
    /// Wall time of the whole call, retries included.
    pub(super) latency: Duration,
}

impl ChatResponse {
    /// `None` when the model answered only with tool calls (an empty string counts as none).
    pub fn content(&self) -> Option<&str> {
        self.content.as_deref()
    }

    pub fn tool_calls(&self) -> &[ToolCall] {
        &self.tool_calls
    }

    pub fn finish_reason(&self) -> Option<&str> {
        self.finish_reason.as_deref()
    }

    /// Log probability of each generated token, when asked for and returned.
    pub fn logprobs(&self) -> Option<&[f32]> {
        self.logprobs.as_deref()
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The model that answered, as the provider named it.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The response body exactly as received, for the execution audit.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// HTTP requests made for this call, retries and fallbacks included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Wall time of the whole call, retries included.
    pub fn latency(&self) -> Duration {
        self.latency
    }
}
