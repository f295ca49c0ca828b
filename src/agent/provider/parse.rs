//! The lenient response parser: a completion or embeddings body read into our types through
//! async-openai's typed responses when they fit, and field by field when a local server's shape
//! does not (no `created`, `finish_reason: "eos"`, arguments as an object, no tool-call id).
//! Only a body with no usable answer is [`ProviderError::Malformed`].

use std::time::Duration;

use async_openai::types::chat::{ChatCompletionMessageToolCalls, CreateChatCompletionResponse};
use async_openai::types::embeddings::CreateEmbeddingResponse;
use serde_json::Value;

use super::{ChatResponse, ProviderError, ToolCall, Usage};

pub(super) fn parse_chat(
    raw: Value,
    configured_model: &str,
) -> Result<ChatResponse, ProviderError> {
    let mut response = match serde_json::from_value::<CreateChatCompletionResponse>(raw.clone()) {
        Ok(typed) => typed_chat(typed)?,
        Err(e) => {
            tracing::debug!(error = %e, "completion does not match the OpenAI types; reading it leniently");
            lenient_chat(&raw)?
        }
    };
    if response.model.is_empty() {
        response.model = configured_model.to_string();
    }
    response.raw = raw;
    Ok(response)
}

fn typed_chat(typed: CreateChatCompletionResponse) -> Result<ChatResponse, ProviderError> {
    let choice = typed
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Malformed("completion has no choices".into()))?;
    let tool_calls = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|call| match call {
            ChatCompletionMessageToolCalls::Function(call) => ToolCall {
                id: call.id,
                name: call.function.name,
                arguments: call.function.arguments,
            },
            ChatCompletionMessageToolCalls::Custom(call) => ToolCall {
                id: call.id,
                name: call.custom_tool.name,
                arguments: call.custom_tool.input,
            },
        })
        .collect();
    let finish_reason = choice
        .finish_reason
        .and_then(|reason| serde_json::to_value(reason).ok())
        .and_then(|reason| reason.as_str().map(str::to_owned));
    Ok(ChatResponse {
        content: choice.message.content.filter(|c| !c.is_empty()),
        tool_calls,
        finish_reason,
        logprobs: choice
            .logprobs
            .and_then(|l| l.content)
            .map(|tokens| tokens.iter().map(|t| t.logprob).collect()),
        usage: typed.usage.map(|u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }),
        model: typed.model,
        raw: Value::Null,
        attempts: 0,
        latency: Duration::ZERO,
    })
}

fn lenient_chat(raw: &Value) -> Result<ChatResponse, ProviderError> {
    let choice = raw
        .pointer("/choices/0")
        .ok_or_else(|| ProviderError::Malformed("completion has no choices".into()))?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| ProviderError::Malformed("completion choice has no message".into()))?;
    let mut tool_calls = Vec::new();
    for (i, call) in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::Malformed("tool call without a function name".into()))?;
        let arguments = match call.pointer("/function/arguments") {
            Some(Value::String(text)) => text.clone(),
            None | Some(Value::Null) => "{}".to_string(),
            Some(other) => other.to_string(),
        };
        tool_calls.push(ToolCall {
            id: call
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .map_or_else(|| format!("call_{i}"), str::to_owned),
            name: name.to_string(),
            arguments,
        });
    }
    let logprobs = choice
        .pointer("/logprobs/content")
        .and_then(Value::as_array)
        .map(|tokens| {
            tokens
                .iter()
                .filter_map(|t| t.get("logprob").and_then(Value::as_f64))
                .map(|l| l as f32)
                .collect()
        });
    let count = |field: &str| {
        raw.pointer(&format!("/usage/{field}"))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let usage = match (count("prompt_tokens"), count("completion_tokens")) {
        (Some(prompt_tokens), Some(completion_tokens)) => Some(Usage {
            prompt_tokens,
            completion_tokens,
        }),
        _ => None,
    };
    Ok(ChatResponse {
        content: message
            .get("content")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        tool_calls,
        finish_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        logprobs,
        usage,
        model: raw
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        raw: Value::Null,
        attempts: 0,
        latency: Duration::ZERO,
    })
}

/// An embedding scaled to unit length: cosine similarity does not depend on length, and the
/// knowledge index holds half-precision copies, whose values cannot exceed 65,504. A value that
/// is not a finite number makes the whole response malformed.
pub(super) fn unit_length(mut vector: Vec<f32>) -> Result<Vec<f32>, ProviderError> {
    if vector.iter().any(|x| !x.is_finite()) {
        return Err(ProviderError::Malformed(
            "embedding has a value that is not a finite number".into(),
        ));
    }
    let norm = vector
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    // Finite f32 values cannot overflow their f64 sum of squares.
    if norm == 0.0 {
        return Err(ProviderError::Malformed(
            "embedding has no direction (all zeros)".into(),
        ));
    }
    vector
        .iter_mut()
        .for_each(|x| *x = (f64::from(*x) / norm) as f32);
    Ok(vector)
}

pub(super) fn parse_embeddings(raw: Value) -> Result<Vec<Vec<f32>>, ProviderError> {
    if let Ok(typed) = serde_json::from_value::<CreateEmbeddingResponse>(raw.clone()) {
        let mut data = typed.data;
        data.sort_by_key(|e| e.index);
        return Ok(data.into_iter().map(|e| e.embedding).collect());
    }
    // Lenient: some servers leave out `usage`, `object` or `index`.
    let data = raw
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Malformed("embeddings response has no data".into()))?;
    let mut indexed = Vec::with_capacity(data.len());
    for (position, item) in data.iter().enumerate() {
        let vector = item
            .get("embedding")
            .and_then(Value::as_array)
            .ok_or_else(|| ProviderError::Malformed("embedding is not an array".into()))?
            .iter()
            .map(|x| x.as_f64().map(|x| x as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| ProviderError::Malformed("embedding has a non-number".into()))?;
        let index = item
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position as u64);
        indexed.push((index, vector));
    }
    indexed.sort_by_key(|(index, _)| *index);
    Ok(indexed.into_iter().map(|(_, v)| v).collect())
}
