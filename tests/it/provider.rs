//! The OpenAI-compatible provider client on its own, against the fake model server: the wire
//! shape of chat and embeddings requests, structured outputs and logprobs with their
//! fallbacks, retries and timeouts (AGT-11), lenient parsing of local servers, and the API key
//! kept out of every error and `Debug` output. Calls go through the guardrail pipeline's
//! [`call_model`] and [`embed`], the only road to the model (AGT-1), with trusted constant text.

use std::time::{Duration, Instant};

use async_openai::types::chat::CreateChatCompletionResponse;
use custodian::agent::pipeline::{
    call_model, constant, embed, trusted_tool, GuardedRequest, Masked, Part,
};
use custodian::agent::prompts::PROMPTS;
use custodian::agent::provider::{Provider, ProviderConfig, ProviderError};
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::fakes::openai::{FakeOpenAI, FakeReply};

fn config(fake: &FakeOpenAI) -> ProviderConfig {
    let mut config = ProviderConfig::new(&fake.base_url, "fake-chat", "fake-embed");
    config.api_key = fake.api_key.clone().map(SecretString::from);
    config.timeout = Duration::from_secs(5);
    // The fake listens on loopback.
    config.allow_private = true;
    config
}

/// Short backoff so retry tests run fast; `Retry-After` waits up to 2 s.
fn build(config: ProviderConfig) -> Provider {
    Provider::new(config)
        .expect("valid provider config")
        .with_retry_delays(Duration::from_millis(10), Duration::from_secs(2))
}

fn provider(fake: &FakeOpenAI) -> Provider {
    build(config(fake))
}

fn conversation(text: &'static str) -> Vec<Part> {
    vec![
        Part::System(constant("You answer customers.")),
        Part::User(constant(text)),
    ]
}

fn ask(text: &'static str) -> GuardedRequest {
    ask_for(text, false, false)
}

/// `decision`: ask for the structured decision (`prompts/decision.schema.json`).
fn ask_for(text: &'static str, decision: bool, logprobs: bool) -> GuardedRequest {
    GuardedRequest::new(conversation(text), Vec::new(), decision, logprobs)
}

fn masked(texts: &[&'static str]) -> Vec<Masked> {
    texts.iter().map(|t| Masked::from(constant(t))).collect()
}

/// The fake must answer in the exact OpenAI shape, so the typed (not the lenient)
/// parser is what these tests exercise.
fn assert_openai_shaped(raw: &Value) {
    if let Err(e) = serde_json::from_value::<CreateChatCompletionResponse>(raw.clone()) {
        panic!("the fake's reply is not a typed OpenAI completion: {e}\n{raw}");
    }
}

#[tokio::test]
async fn a_text_reply_comes_back_with_model_usage_and_the_raw_json() {
    let fake = FakeOpenAI::start_with_key("sk-test-key").await;
    fake.push(FakeReply::Text("Your order ships tomorrow.".into()));
    let provider = provider(&fake);

    let response = call_model(&provider, &ask("Where is my order?"))
        .await
        .unwrap();

    assert_eq!(response.content(), Some("Your order ships tomorrow."));
    assert!(response.tool_calls().is_empty());
    assert_eq!(response.finish_reason(), Some("stop"));
    assert_eq!(response.model(), "fake-chat");
    assert!(response.usage().is_some_and(|u| u.prompt_tokens > 0));
    assert_eq!(
        response.raw()["choices"][0]["message"]["content"],
        "Your order ships tomorrow."
    );
    assert_eq!(response.attempts(), 1);
    assert_openai_shaped(response.raw());
    assert_eq!(
        provider.provider_name(),
        fake.base_url[7..].split('/').next().unwrap()
    );
    assert_eq!(provider.chat_model(), "fake-chat");

    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-test-key"));
    assert_eq!(sent.body["model"], "fake-chat");
    assert_eq!(sent.body["messages"][0]["role"], "system");
    assert_eq!(sent.body["messages"][1]["content"], "Where is my order?");
    assert!((sent.body["temperature"].as_f64().unwrap() - 0.2).abs() < 1e-6);
    assert!(sent.body.get("response_format").is_none());
    assert!(fake.all_request_text().contains("Where is my order?"));
}

#[tokio::test]
async fn a_response_schema_is_sent_as_a_strict_json_schema_response_format() {
    let fake = FakeOpenAI::start().await;
    fake.push(FakeReply::Json(
        json!({ "action": "reply", "confidence": 0.9 }),
    ));
    let provider = provider(&fake);
    let request = ask_for("Can I return this?", true, false);

    let response = call_model(&provider, &request).await.unwrap();

    let decision: Value = serde_json::from_str(response.content().unwrap()).unwrap();
    assert_eq!(decision["action"], "reply");
    let format = &fake.requests()[0].body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["name"], "decision");
    assert_eq!(format["json_schema"]["strict"], true);
    assert_eq!(format["json_schema"]["schema"], PROMPTS.decision_schema);
}

#[tokio::test]
async fn a_server_that_refuses_json_schema_gets_json_object_once_and_from_then_on() {
    let fake = FakeOpenAI::start().await;
    fake.push(FakeReply::json_schema_unsupported());
    fake.push(FakeReply::Json(
        json!({ "action": "reply", "confidence": 0.8 }),
    ));
    fake.push(FakeReply::Json(
        json!({ "action": "handoff", "confidence": 0.2 }),
    ));
    let provider = provider(&fake);
    let request = ask_for("Hi", true, false);

    let first = call_model(&provider, &request).await.unwrap();
    let second = call_model(&provider.clone(), &request).await.unwrap();

    assert_eq!(first.attempts(), 2);
    assert_eq!(second.attempts(), 1);
    assert!(!provider.supports_json_schema());
    let formats: Vec<Value> = fake
        .requests()
        .iter()
        .map(|r| r.body["response_format"]["type"].clone())
        .collect();
    assert_eq!(formats, ["json_schema", "json_object", "json_object"]);
}

#[tokio::test]
async fn a_provider_known_to_lack_json_schema_asks_for_json_object_directly() {
    let fake = FakeOpenAI::start().await;
    let provider = provider(&fake).with_json_schema(false);
    let request = ask_for("Hi", true, false);

    let response = call_model(&provider, &request).await.unwrap();

    assert_eq!(response.attempts(), 1);
    assert_eq!(
        fake.requests()[0].body["response_format"],
        json!({ "type": "json_object" })
    );
}

#[tokio::test]
async fn tool_calls_are_parsed_and_a_tool_round_trip_sends_the_call_ids_back() {
    let fake = FakeOpenAI::start().await;
    fake.push(FakeReply::ToolCalls(vec![(
        "search_knowledge".into(),
        json!({ "query": "return policy" }),
    )]));
    fake.push(FakeReply::Text("You can return it within 30 days.".into()));
    let provider = provider(&fake);
    let tool = || {
        trusted_tool(
            "search_knowledge",
            "Search the knowledge base",
            r#"{ "type": "object", "properties": { "query": { "type": "string" } }, "required": ["query"] }"#,
        )
    };
    let request = GuardedRequest::new(
        conversation("Can I return this?"),
        vec![tool()],
        false,
        false,
    );

    let first = call_model(&provider, &request).await.unwrap();

    assert_eq!(first.content(), None);
    assert_eq!(first.finish_reason(), Some("tool_calls"));
    assert_eq!(first.tool_calls().len(), 1);
    assert_openai_shaped(first.raw());
    let call = first.tool_calls()[0].clone();
    assert_eq!(call.name(), "search_knowledge");
    let arguments: Value = serde_json::from_str(call.arguments()).unwrap();
    assert_eq!(arguments, json!({ "query": "return policy" }));

    let mut parts = conversation("Can I return this?");
    parts.push(Part::model_turn(&first));
    parts.push(Part::Tool {
        call: (&call).into(),
        content: constant("Returns are accepted within 30 days."),
    });
    let request = GuardedRequest::new(parts, vec![tool()], false, false);
    let second = call_model(&provider, &request).await.unwrap();

    assert_eq!(second.content(), Some("You can return it within 30 days."));
    let requests = fake.requests();
    assert_eq!(requests[0].body["tools"][0]["type"], "function");
    assert_eq!(
        requests[0].body["tools"][0]["function"]["name"],
        "search_knowledge"
    );
    let sent = &requests[1].body["messages"];
    assert_eq!(sent[2]["role"], "assistant");
    assert_eq!(sent[2]["tool_calls"][0]["id"], call.id());
    assert_eq!(sent[2]["tool_calls"][0]["type"], "function");
    assert_eq!(
        sent[2]["tool_calls"][0]["function"]["arguments"],
        call.arguments()
    );
    assert_eq!(sent[3]["role"], "tool");
    assert_eq!(sent[3]["tool_call_id"], call.id());
    assert_eq!(sent[3]["content"], "Returns are accepted within 30 days.");
}

#[tokio::test]
async fn logprobs_are_asked_for_and_returned_per_token() {
    let fake = FakeOpenAI::start().await;
    fake.push(FakeReply::WithLogprobs {
        content: "Yes we can".into(),
        logprobs: vec![-0.01, -0.2, -1.5],
    });
    let provider = provider(&fake);
    let request = ask_for("Can you?", false, true);

    let response = call_model(&provider, &request).await.unwrap();

    assert_eq!(response.logprobs(), Some(&[-0.01, -0.2, -1.5][..]));
    assert_openai_shaped(response.raw());
    assert_eq!(fake.requests()[0].body["logprobs"], true);
    assert_eq!(
        call_model(&provider, &ask("again"))
            .await
            .unwrap()
            .logprobs(),
        None,
        "no logprobs unless asked and returned"
    );
}

// proves: AGT-11 (retry with backoff, honouring Retry-After)
#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_the_delay_and_then_succeeds() {
    let fake = FakeOpenAI::start().await;
    fake.push(FakeReply::RateLimited {
        retry_after_secs: Some(1),
    });
    fake.push(FakeReply::Text("Back again.".into()));
    let provider = provider(&fake);

    let response = call_model(&provider, &ask("Hello?")).await.unwrap();

    assert_eq!(response.content(), Some("Back again."));
    assert_eq!(response.attempts(), 2);
    let requests = fake.requests();
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(gap >= Duration::from_secs(1), "retried after only {gap:?}");
    assert!(
        gap < Duration::from_secs(2),
        "waited {gap:?} for Retry-After: 1"
    );
    assert!(response.latency() >= Duration::from_secs(1));
}

// proves: AGT-11 (a provider's Retry-After cannot hold a conversation for long)
#[tokio::test]
async fn a_huge_retry_after_is_capped_by_the_configured_maximum_delay() {
    let fake = FakeOpenAI::start().await;
    fake.push(FakeReply::RateLimited {
        retry_after_secs: Some(3600),
    });
    fake.push(FakeReply::Text("ok".into()));
    let provider = Provider::new(config(&fake))
        .unwrap()
        .with_retry_delays(Duration::from_millis(10), Duration::from_millis(200));

    let started = Instant::now();
    call_model(&provider, &ask("Hello?")).await.unwrap();

    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(fake.request_count(), 2);
}

// proves: AGT-11 (retries are bounded, then the caller is told the provider is down)
#[tokio::test]
async fn server_errors_exhaust_the_retries_to_unavailable_with_attempts_counted() {
    let fake = FakeOpenAI::start().await;
    for _ in 0..4 {
        fake.push(FakeReply::ServerError);
    }
    let mut config = config(&fake);
    config.max_retries = 3;
    let provider = build(config);

    let error = call_model(&provider, &ask("Hello?")).await.unwrap_err();

    match &error {
        ProviderError::Unavailable { attempts, last } => {
            assert_eq!(*attempts, 4);
            assert!(last.contains("500"), "{last}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(fake.request_count(), 4);
    assert_eq!(fake.pending_replies(), 0);
}

// proves: AGT-11 (a hanging provider is a timeout, retried, then Unavailable)
#[tokio::test]
async fn a_hanging_provider_times_out_and_counts_as_retryable() {
    let fake = FakeOpenAI::start().await;
    fake.push(FakeReply::Hang);
    fake.push(FakeReply::Hang);
    let mut config = config(&fake);
    config.timeout = Duration::from_millis(300);
    config.max_retries = 1;
    let provider = build(config);

    let started = Instant::now();
    let error = call_model(&provider, &ask("Hello?")).await.unwrap_err();

    match &error {
        ProviderError::Unavailable { attempts, last } => {
            assert_eq!(*attempts, 2);
            assert!(last.contains("timed out"), "{last}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_hang_then_an_answer_succeeds_on_the_retry() {
    let fake = FakeOpenAI::start().await;
    fake.push(FakeReply::Hang);
    fake.push(FakeReply::Text("Sorry for the wait.".into()));
    let mut config = config(&fake);
    config.timeout = Duration::from_millis(300);
    let provider = build(config);

    let response = call_model(&provider, &ask("Hello?")).await.unwrap();

    assert_eq!(response.content(), Some("Sorry for the wait."));
    assert_eq!(response.attempts(), 2);
}

#[tokio::test]
async fn a_malformed_body_is_reported_as_malformed_without_a_retry() {
    let fake = FakeOpenAI::start().await;
    fake.push(FakeReply::Malformed);
    let provider = provider(&fake);

    let error = call_model(&provider, &ask("Hello?")).await.unwrap_err();

    assert!(matches!(error, ProviderError::Malformed(_)), "{error:?}");
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn a_local_server_reply_missing_openai_fields_is_read_leniently() {
    let fake = FakeOpenAI::start().await;
    // llama.cpp/Ollama-style: no id/object/created, an unknown finish reason, a tool
    // call without id whose arguments are an object.
    fake.push(FakeReply::Status(
        200,
        json!({
            "model": "llama3",
            "choices": [{
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{ "function": { "name": "add_note", "arguments": { "text": "hi" } } }]
                },
                "finish_reason": "eos"
            }]
        })
        .to_string(),
    ));
    let provider = provider(&fake);

    let response = call_model(&provider, &ask("Hello?")).await.unwrap();

    assert_eq!(response.content(), None);
    assert_eq!(response.finish_reason(), Some("eos"));
    assert_eq!(response.model(), "llama3");
    let calls: Vec<(&str, &str, &str)> = response
        .tool_calls()
        .iter()
        .map(|c| (c.id(), c.name(), c.arguments()))
        .collect();
    assert_eq!(calls, [("call_0", "add_note", r#"{"text":"hi"}"#)]);
    assert_eq!(response.raw()["choices"][0]["finish_reason"], "eos");
}

#[tokio::test]
async fn a_bad_key_is_rejected_with_401_without_a_retry() {
    let fake = FakeOpenAI::start_with_key("sk-the-right-key").await;
    let mut config = config(&fake);
    config.api_key = Some(SecretString::from("sk-a-wrong-key"));
    let provider = build(config);

    let error = call_model(&provider, &ask("Hello?")).await.unwrap_err();

    assert!(
        matches!(&error, ProviderError::Rejected { status: 401, .. }),
        "{error:?}"
    );
    assert_eq!(fake.request_count(), 1);
    assert!(!fake.requests()[0].authorized);
}

#[tokio::test]
async fn an_exhausted_quota_429_is_rejected_without_a_retry() {
    let fake = FakeOpenAI::start().await;
    fake.push(FakeReply::Status(
        429,
        json!({ "error": { "message": "You exceeded your current quota.", "type": "insufficient_quota", "code": "insufficient_quota" } }).to_string(),
    ));
    let provider = provider(&fake);

    let error = call_model(&provider, &ask("Hello?")).await.unwrap_err();

    assert_eq!(
        error,
        ProviderError::Rejected {
            status: 429,
            message: "You exceeded your current quota.".into()
        }
    );
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn no_authorization_header_is_sent_when_no_key_is_configured() {
    let fake = FakeOpenAI::start().await;
    let provider = provider(&fake);

    call_model(&provider, &ask("Hello?")).await.unwrap();
    embed(&provider, &masked(&["text"])).await.unwrap();

    assert!(fake
        .requests()
        .iter()
        .all(|r| r.header("authorization").is_none()));
}

#[tokio::test]
async fn embeddings_come_back_one_per_input_with_the_requested_dimension() {
    let fake = FakeOpenAI::start_with_key("sk-test-key").await;
    let mut config = config(&fake);
    config.embedding_dimensions = Some(16);
    let provider = build(config);
    let inputs = masked(&[
        "refund policy for damaged items",
        "shipping times to Portugal",
        "refund for a damaged item",
    ]);

    let vectors = embed(&provider, &inputs).await.unwrap().vectors;

    assert_eq!(vectors.len(), 3);
    assert!(vectors.iter().all(|v| v.len() == 16));
    let cosine = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(cosine(&vectors[0], &vectors[2]) > cosine(&vectors[0], &vectors[1]));
    assert_eq!(
        embed(&provider, &inputs).await.unwrap().vectors,
        vectors,
        "deterministic"
    );
    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(sent.body["model"], "fake-embed");
    assert_eq!(sent.body["dimensions"], 16);
    assert_eq!(sent.body["input"][1], "shipping times to Portugal");
    assert!(embed(&provider, &[]).await.unwrap().vectors.is_empty());
    assert_eq!(fake.request_count(), 2, "no request for no input");
}

#[tokio::test]
async fn no_dimensions_are_sent_unless_configured_and_the_models_size_is_taken() {
    let fake = FakeOpenAI::start().await;
    fake.set_embedding_dimension(768);
    // vLLM and ada-002 answer 400 to a `dimensions` they do not support.
    let provider = provider(&fake);
    assert_eq!(provider.embedding_dimensions(), None);

    let embedded = embed(&provider, &masked(&["one", "two"])).await.unwrap();

    assert!(embedded.vectors.iter().all(|v| v.len() == 768));
    let sent = &fake.requests()[0];
    assert!(sent.body.get("dimensions").is_none(), "{}", sent.body);
}

#[tokio::test]
async fn a_server_that_refuses_logprobs_is_asked_again_without_them_and_never_again() {
    let fake = FakeOpenAI::start().await;
    fake.push(FakeReply::Status(
        400,
        json!({ "error": { "message": "logprobs is not supported for this model", "type": "invalid_request_error", "param": "logprobs" } }).to_string(),
    ));
    fake.push(FakeReply::Text("first".into()));
    fake.push(FakeReply::Text("second".into()));
    let provider = provider(&fake);
    let request = ask_for("Hi", false, true);

    let first = call_model(&provider, &request).await.unwrap();
    let second = call_model(&provider.clone(), &request).await.unwrap();

    assert_eq!(first.content(), Some("first"));
    assert_eq!(first.attempts(), 2);
    assert_eq!(second.attempts(), 1);
    assert!(!provider.supports_logprobs());
    let asked: Vec<Value> = fake
        .requests()
        .iter()
        .map(|r| r.body.get("logprobs").cloned().unwrap_or(Value::Null))
        .collect();
    assert_eq!(asked, [json!(true), Value::Null, Value::Null]);
}

#[tokio::test]
async fn both_refusals_in_turn_cost_one_retry_each() {
    let fake = FakeOpenAI::start().await;
    fake.push(FakeReply::json_schema_unsupported());
    fake.push(FakeReply::Status(
        422,
        json!({ "detail": "unknown field `logprobs`" }).to_string(),
    ));
    fake.push(FakeReply::Json(
        json!({ "action": "reply", "confidence": 0.8 }),
    ));
    let provider = provider(&fake);
    let request = ask_for("Hi", true, true);

    let answer = call_model(&provider, &request).await.unwrap();

    assert_eq!(answer.attempts(), 3);
    let last = &fake.requests()[2].body;
    assert_eq!(last["response_format"]["type"], "json_object");
    assert!(last.get("logprobs").is_none());
}

#[tokio::test]
async fn embeddings_of_the_wrong_dimension_are_malformed() {
    let fake = FakeOpenAI::start().await;
    fake.push_embeddings(FakeReply::Embeddings(vec![vec![0.6, 0.8]]));
    let mut config = config(&fake);
    config.embedding_dimensions = Some(8);
    let provider = build(config);

    let error = embed(&provider, &masked(&["text"])).await.unwrap_err();

    assert!(matches!(error, ProviderError::Malformed(_)), "{error:?}");
}

#[tokio::test]
async fn embeddings_are_kept_at_unit_length_and_ones_without_a_direction_are_malformed() {
    let fake = FakeOpenAI::start().await;
    // Half-precision copies go into the knowledge index: a length of 50,000 would not fit.
    fake.push_embeddings(FakeReply::Embeddings(vec![
        vec![3.0, 4.0],
        vec![30_000.0, 40_000.0],
    ]));
    fake.push_embeddings(FakeReply::Embeddings(vec![vec![0.0, 0.0]]));
    fake.push_embeddings(FakeReply::Status(
        200,
        json!({ "data": [{ "index": 0, "embedding": [1e39, 1.0] }] }).to_string(),
    ));
    let provider = provider(&fake);
    let two = masked(&["a", "b"]);

    let scaled = embed(&provider, &two).await.unwrap().vectors;
    let zero = embed(&provider, &two[..1]).await.unwrap_err();
    let overflow = embed(&provider, &two[..1]).await.unwrap_err();

    assert_eq!(scaled, [vec![0.6, 0.8], vec![0.6, 0.8]]);
    assert!(matches!(zero, ProviderError::Malformed(_)), "{zero:?}");
    assert!(
        matches!(overflow, ProviderError::Malformed(_)),
        "{overflow:?}"
    );
}

#[tokio::test]
async fn embeddings_are_retried_like_chat() {
    let fake = FakeOpenAI::start().await;
    fake.push_embeddings(FakeReply::ServerError);
    let provider = provider(&fake);

    let embedded = embed(&provider, &masked(&["text"])).await.unwrap();

    assert_eq!(embedded.vectors[0].len(), 8);
    assert_eq!(embedded.attempts, 2);
    assert!(embedded.tokens.is_some_and(|t| t > 0));
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn the_api_key_never_appears_in_debug_output_or_error_strings() {
    let key = "sk-very-secret-4d2f9a";
    let fake = FakeOpenAI::start().await;
    let mut config = config(&fake);
    config.api_key = Some(SecretString::from(key));
    config.max_retries = 0;
    let provider = build(config.clone());
    // Servers quote what they were sent: OpenAI's 401 names the key it got.
    fake.push(FakeReply::Status(
        401,
        json!({ "error": { "message": format!("Incorrect API key provided: {key}."), "code": "invalid_api_key" } }).to_string(),
    ));
    fake.push(FakeReply::Status(503, format!("upstream said {key}")));

    let rejected = call_model(&provider, &ask("Hello?")).await.unwrap_err();
    let unavailable = call_model(&provider, &ask("Hello?")).await.unwrap_err();

    assert_eq!(
        rejected,
        ProviderError::Rejected {
            status: 401,
            message: "Incorrect API key provided: [REDACTED].".into()
        }
    );
    assert!(matches!(unavailable, ProviderError::Unavailable { .. }));
    for text in [
        format!("{config:?}"),
        format!("{provider:?}"),
        format!("{rejected}"),
        format!("{rejected:?}"),
        format!("{unavailable}"),
        format!("{unavailable:?}"),
    ] {
        assert!(!text.contains(key), "key leaked into: {text}");
    }
}

#[test]
fn unusable_settings_are_refused_before_anything_is_sent() {
    let good = || ProviderConfig {
        allow_private: true,
        ..ProviderConfig::new("http://127.0.0.1:9/v1", "m", "e")
    };
    assert!(Provider::new(good()).is_ok());
    for (what, config) in [
        (
            "a loopback server without the operator's opt-in",
            ProviderConfig::new("http://127.0.0.1:9/v1", "m", "e"),
        ),
        (
            "the cloud metadata service",
            ProviderConfig::new("http://169.254.169.254/latest", "m", "e"),
        ),
        ("ftp scheme", ProviderConfig::new("ftp://host/v1", "m", "e")),
        ("no URL", ProviderConfig::new("not a url", "m", "e")),
        (
            "credentials in the URL",
            ProviderConfig::new("https://user:sk-abc@host/v1", "m", "e"),
        ),
        ("no model", ProviderConfig::new("http://h/v1", " ", "e")),
        (
            "temperature",
            ProviderConfig {
                temperature: 3.0,
                ..good()
            },
        ),
        (
            "timeout",
            ProviderConfig {
                timeout: Duration::ZERO,
                ..good()
            },
        ),
        (
            "key with a newline",
            ProviderConfig {
                api_key: Some(SecretString::from("sk-abc\ndef")),
                ..good()
            },
        ),
    ] {
        match Provider::new(config) {
            Err(ProviderError::Config(message)) => {
                assert!(!message.contains("sk-abc"), "{what}: {message}")
            }
            other => panic!("{what}: expected Config, got {other:?}"),
        }
    }
    let provider =
        Provider::new(ProviderConfig::new("https://api.openai.com/v1/", "m", "e")).unwrap();
    assert_eq!(provider.provider_name(), "api.openai.com");
    assert_eq!(provider.base_url(), "https://api.openai.com/v1");
}
