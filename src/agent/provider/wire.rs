//! Our chat messages in async-openai's request types, the shape that goes on the wire. Tool calls
//! are sent back exactly as the model made them: id, name and raw arguments (AGT-1).

use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestToolMessage,
    ChatCompletionRequestUserMessage, FunctionCall,
};

use super::ChatMessage;

pub(super) fn wire_message(message: &ChatMessage) -> ChatCompletionRequestMessage {
    match message {
        ChatMessage::System(content) => ChatCompletionRequestSystemMessage {
            content: content.clone().into(),
            name: None,
        }
        .into(),
        ChatMessage::User(content) => ChatCompletionRequestUserMessage {
            content: content.clone().into(),
            name: None,
        }
        .into(),
        ChatMessage::Assistant {
            content,
            tool_calls,
        } => {
            let tool_calls = tool_calls
                .iter()
                .map(|call| {
                    ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                        id: call.id.clone(),
                        function: FunctionCall {
                            name: call.name.clone(),
                            arguments: call.arguments.clone(),
                        },
                    })
                })
                .collect::<Vec<_>>();
            ChatCompletionRequestAssistantMessage {
                content: content.clone().map(Into::into),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                ..Default::default()
            }
            .into()
        }
        ChatMessage::Tool {
            tool_call_id,
            content,
        } => ChatCompletionRequestToolMessage {
            content: content.clone().into(),
            tool_call_id: tool_call_id.clone(),
        }
        .into(),
    }
}
