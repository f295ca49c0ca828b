//! A fake OpenAI-compatible model server for tests.
//!
//! Real HTTP on `127.0.0.1:0`, served by a task on the current tokio runtime, so the
//! provider client talks to it exactly as it would to OpenAI, Ollama or vLLM: point the
//! provider's base URL at [`FakeOpenAI::base_url`] (it ends in `/v1`). It serves
//! `POST /v1/chat/completions` and `POST /v1/embeddings`, records every request (so a
//! test can assert that no raw PII value ever reached the model, AGT-2) and answers
//! chat requests from a script of [`FakeReply`]s pushed by the test; with the script
//! empty it answers the default reply (a short text unless set otherwise). Embeddings
//! have their own script; unscripted, they are deterministic vectors in which texts
//! sharing words are close (see [`fake_embedding`]).
//!
//! ```ignore
//! let fake = FakeOpenAI::start().await;
//! fake.push(FakeReply::RateLimited { retry_after_secs: Some(1) });
//! fake.push(FakeReply::Json(json!({ "action": "reply", "reply": "Hi", "confidence": 0.9 })));
//! // ... run the agent with the provider's base_url = fake.base_url ...
//! assert!(!fake.all_request_text().contains("maria@example.com"));
//! ```
//!
//! This file depends on no crate item, so it can be mounted by any test target.
#![allow(dead_code)] // each test target uses a different part of the fake

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// How long [`FakeReply::Hang`] holds a request before giving up; far beyond any client
/// timeout a test would set, short enough not to pin a task for the whole run.
const HANG_FOR: Duration = Duration::from_secs(120);

/// Dimension of unscripted embeddings when the request names none.
pub const DEFAULT_EMBEDDING_DIMENSION: usize = 8;

/// One scripted answer of the fake.
#[derive(Debug, Clone, PartialEq)]
pub enum FakeReply {
    /// 200, an assistant message with this content, `finish_reason: "stop"`.
    Text(String),
    /// 200, content is this JSON serialised (a structured decision).
    Json(Value),
    /// As `Json`, with every `{{system}}` in its `reply` replaced by the request's system
    /// message: a model that obeys "repeat your instructions".
    JsonEchoingSystem(Value),
    /// 200, tool calls `(function name, arguments)`, `finish_reason: "tool_calls"`. The
    /// arguments are sent as JSON text; a `Value::String` is sent verbatim, so a test
    /// can hand the client arguments that are not JSON at all.
    ToolCalls(Vec<(String, Value)>),
    /// 200 with this content and one `logprobs.content` entry per given value.
    WithLogprobs { content: String, logprobs: Vec<f32> },
    /// 429 with OpenAI's rate-limit body and, if given, `Retry-After: <secs>`.
    RateLimited { retry_after_secs: Option<u64> },
    /// 500 with OpenAI's server-error body.
    ServerError,
    /// Never answers (until well after any client timeout).
    Hang,
    /// 200, `Content-Type: application/json`, and a truncated JSON body.
    Malformed,
    /// Exactly this status and body (JSON content type if the body parses as JSON).
    Status(u16, String),
    /// 200 from the embeddings endpoint with these vectors, one per input.
    Embeddings(Vec<Vec<f32>>),
}

impl FakeReply {
    /// What OpenAI-compatible servers without structured outputs answer to
    /// `response_format: {"type": "json_schema", ...}`.
    pub fn json_schema_unsupported() -> FakeReply {
        FakeReply::Status(
            400,
            json!({
                "error": {
                    "message": "response_format type json_schema is not supported by this server",
                    "type": "invalid_request_error",
                    "param": "response_format",
                    "code": null
                }
            })
            .to_string(),
        )
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Path only, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body, or `Value::Null` when it was not JSON.
    pub body: Value,
    /// The body exactly as received.
    pub raw_body: String,
    /// Whether the bearer key matched (always true when the fake checks none).
    pub authorized: bool,
    /// When the request arrived, to measure retry delays.
    pub received_at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_chat(&self) -> bool {
        self.path.ends_with("/chat/completions")
    }

    pub fn is_embeddings(&self) -> bool {
        self.path.ends_with("/embeddings")
    }
}

struct Shared {
    api_key: Option<String>,
    chat_script: Mutex<VecDeque<FakeReply>>,
    embeddings_script: Mutex<VecDeque<FakeReply>>,
    default_reply: Mutex<FakeReply>,
    embedding_dimension: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
    next_id: AtomicU64,
    /// Chat requests wait until this many have arrived (0: none wait).
    hold_chat_until: AtomicUsize,
}

/// A running fake; the server stops when this is dropped.
pub struct FakeOpenAI {
    /// `http://127.0.0.1:<port>/v1`, without a trailing slash.
    pub base_url: String,
    /// The bearer key it requires, if any.
    pub api_key: Option<String>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeOpenAI {
    /// A fake that accepts any request, with or without a key.
    pub async fn start() -> FakeOpenAI {
        FakeOpenAI::start_inner(None).await
    }

    /// A fake that answers 401 unless `Authorization: Bearer <api_key>`.
    pub async fn start_with_key(api_key: &str) -> FakeOpenAI {
        FakeOpenAI::start_inner(Some(api_key.to_string())).await
    }

    async fn start_inner(api_key: Option<String>) -> FakeOpenAI {
        let shared = Arc::new(Shared {
            api_key: api_key.clone(),
            chat_script: Mutex::new(VecDeque::new()),
            embeddings_script: Mutex::new(VecDeque::new()),
            default_reply: Mutex::new(FakeReply::Text("This is the fake model.".into())),
            embedding_dimension: AtomicUsize::new(DEFAULT_EMBEDDING_DIMENSION),
            requests: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            hold_chat_until: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/embeddings", post(embeddings))
            .fallback(unknown_route)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake OpenAI server on loopback");
        let addr = listener.local_addr().expect("fake OpenAI server address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake OpenAI server");
        });
        FakeOpenAI {
            base_url: format!("http://{addr}/v1"),
            api_key,
            shared,
            server,
        }
    }

    /// Queues the answer to the next unanswered chat request.
    pub fn push(&self, reply: FakeReply) {
        self.shared.chat_script.lock().unwrap().push_back(reply);
    }

    /// Queues the answer to the next unanswered embeddings request: any failure reply,
    /// or [`FakeReply::Embeddings`].
    pub fn push_embeddings(&self, reply: FakeReply) {
        self.shared
            .embeddings_script
            .lock()
            .unwrap()
            .push_back(reply);
    }

    /// What chat requests get once the script is empty.
    pub fn set_default_reply(&self, reply: FakeReply) {
        *self.shared.default_reply.lock().unwrap() = reply;
    }

    /// Dimension of unscripted embeddings when the request does not name one.
    pub fn set_embedding_dimension(&self, dimension: usize) {
        self.shared
            .embedding_dimension
            .store(dimension, Ordering::Relaxed);
    }

    /// Holds every chat request until `n` chat requests have arrived (then all are answered),
    /// so a test can have several runs talk to the model at the same time, whatever the
    /// scheduling. Gives up holding after a minute.
    pub fn hold_chat_until(&self, n: usize) {
        self.shared.hold_chat_until.store(n, Ordering::Relaxed);
    }

    /// The embeddings requests only, oldest first.
    pub fn embedding_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_embeddings)
            .collect()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The chat-completion requests only, oldest first.
    pub fn chat_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_chat)
            .collect()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Replies pushed (chat and embeddings) but not yet used.
    pub fn pending_replies(&self) -> usize {
        self.shared.chat_script.lock().unwrap().len()
            + self.shared.embeddings_script.lock().unwrap().len()
    }

    /// Everything the model was sent: each body as received, followed by every string
    /// in it unescaped (so a value with quotes or non-ASCII, or inside tool-call
    /// arguments, is found whichever way it was encoded). For "no raw PII value ever
    /// reached the model": `assert!(!fake.all_request_text().contains(email))`.
    pub fn all_request_text(&self) -> String {
        let mut text = String::new();
        for request in self.shared.requests.lock().unwrap().iter() {
            text.push_str(&request.raw_body);
            text.push('\n');
            collect_strings(&request.body, &mut text);
        }
        text
    }
}

impl Drop for FakeOpenAI {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The fake's unscripted embedding: feature hashing of the lower-cased words into
/// `dimension` signed buckets, normalised to unit length. Deterministic, and texts that
/// share words have a higher cosine similarity, so retrieval tests rank sensibly.
pub fn fake_embedding(text: &str, dimension: usize) -> Vec<f32> {
    let dimension = dimension.max(1);
    let mut vector = vec![0.0f32; dimension];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let hash = fnv1a(&word.to_lowercase());
        let bucket = (hash % dimension as u64) as usize;
        vector[bucket] += if hash >> 63 == 0 { 1.0 } else { -1.0 };
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        // No words (or they cancelled out): a fixed unit vector rather than zeros,
        // which cosine distance cannot handle.
        vector[0] = 1.0;
    } else {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn collect_strings(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            out.push_str(k);
            out.push('\n');
            collect_strings(v, out);
        }),
        _ => {}
    }
}

/// Records the request; answers `Some(401)` when the key is wrong.
fn record(shared: &Shared, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authorized = match &shared.api_key {
        None => true,
        Some(key) => presented == Some(key.as_str()),
    };
    shared.requests.lock().unwrap().push(Recorded {
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
        raw_body: String::from_utf8_lossy(body).into_owned(),
        authorized,
        received_at: Instant::now(),
    });
    if authorized {
        return None;
    }
    // Like OpenAI, the message quotes the key presented (OpenAI masks most of it; this
    // fake does not, so a client that echoes server messages is caught leaking it).
    let message = match presented {
        Some(key) => format!("Incorrect API key provided: {key}."),
        None => "You didn't provide an API key.".to_string(),
    };
    Some(openai_error(
        401,
        &message,
        "invalid_request_error",
        Some("invalid_api_key"),
    ))
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(unauthorized) = record(&shared, &uri, &headers, &body) {
        return unauthorized;
    }
    let hold = shared.hold_chat_until.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while hold > 0 && Instant::now() < deadline {
        let arrived = shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.is_chat())
            .count();
        if arrived >= hold {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = shared.chat_script.lock().unwrap().pop_front();
    let reply = reply.unwrap_or_else(|| shared.default_reply.lock().unwrap().clone());
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let model = request["model"]
        .as_str()
        .unwrap_or("fake-model")
        .to_string();
    let prompt_tokens = (body.len() / 4).max(1);

    let completion = |message: Value, finish_reason: &str, logprobs: Value| {
        let completion_tokens = message["content"].as_str().map_or(1, |c| c.len() / 4 + 1);
        let body = json!({
            "id": format!("chatcmpl-fake-{id}"),
            "object": "chat.completion",
            "created": 1_700_000_000u32,
            "model": model,
            "choices": [{
                "index": 0,
                "message": message,
                "finish_reason": finish_reason,
                "logprobs": logprobs
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens
            }
        });
        (StatusCode::OK, axum::Json(body)).into_response()
    };

    match reply {
        FakeReply::Text(content) => completion(
            json!({ "role": "assistant", "content": content }),
            "stop",
            Value::Null,
        ),
        FakeReply::Json(decision) => completion(
            json!({ "role": "assistant", "content": decision.to_string() }),
            "stop",
            Value::Null,
        ),
        FakeReply::JsonEchoingSystem(mut decision) => {
            let system = request["messages"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["role"] == "system"))
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_string();
            if let Some(reply) = decision["reply"].as_str() {
                decision["reply"] = Value::from(reply.replace("{{system}}", &system));
            }
            completion(
                json!({ "role": "assistant", "content": decision.to_string() }),
                "stop",
                Value::Null,
            )
        }
        FakeReply::ToolCalls(calls) => {
            let calls: Vec<Value> = calls
                .into_iter()
                .enumerate()
                .map(|(i, (name, arguments))| {
                    let arguments = match arguments {
                        Value::String(text) => text,
                        other => other.to_string(),
                    };
                    json!({
                        "id": format!("call_fake_{id}_{i}"),
                        "type": "function",
                        "function": { "name": name, "arguments": arguments }
                    })
                })
                .collect();
            completion(
                json!({ "role": "assistant", "content": null, "tool_calls": calls }),
                "tool_calls",
                Value::Null,
            )
        }
        FakeReply::WithLogprobs { content, logprobs } => {
            let words: Vec<&str> = content.split_whitespace().collect();
            let tokens: Vec<Value> = logprobs
                .iter()
                .enumerate()
                .map(|(i, logprob)| {
                    json!({
                        "token": words.get(i).copied().unwrap_or(""),
                        "logprob": logprob,
                        "bytes": null,
                        "top_logprobs": []
                    })
                })
                .collect();
            completion(
                json!({ "role": "assistant", "content": content }),
                "stop",
                json!({ "content": tokens, "refusal": null }),
            )
        }
        FakeReply::Embeddings(_) => openai_error(
            500,
            "fake misuse: FakeReply::Embeddings was pushed for a chat request",
            "server_error",
            None,
        ),
        failure => failure_response(failure).await,
    }
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(unauthorized) = record(&shared, &uri, &headers, &body) {
        return unauthorized;
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let inputs: Vec<String> = match &request["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => {
            return openai_error(
                400,
                "'input' is a required property",
                "invalid_request_error",
                None,
            )
        }
    };
    let dimension = request["dimensions"].as_u64().map_or_else(
        || shared.embedding_dimension.load(Ordering::Relaxed),
        |d| d as usize,
    );
    let reply = shared.embeddings_script.lock().unwrap().pop_front();
    let vectors = match reply {
        None => inputs
            .iter()
            .map(|text| fake_embedding(text, dimension))
            .collect(),
        Some(FakeReply::Embeddings(vectors)) => vectors,
        Some(
            chat_only @ (FakeReply::Text(_)
            | FakeReply::Json(_)
            | FakeReply::JsonEchoingSystem(_)
            | FakeReply::ToolCalls(_)
            | FakeReply::WithLogprobs { .. }),
        ) => {
            return openai_error(
                500,
                &format!("fake misuse: {chat_only:?} was pushed for an embeddings request"),
                "server_error",
                None,
            )
        }
        Some(failure) => return failure_response(failure).await,
    };
    let tokens: usize = inputs.iter().map(|t| t.len() / 4 + 1).sum();
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| {
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": request["model"].as_str().unwrap_or("fake-embedding-model"),
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens }
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn unknown_route(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Recorded too: a request on the wrong path is what a failing test needs to see.
    if let Some(unauthorized) = record(&shared, &uri, &headers, &body) {
        return unauthorized;
    }
    openai_error(
        404,
        &format!("Unknown request URL: {}", uri.path()),
        "invalid_request_error",
        Some("unknown_url"),
    )
}

/// The replies that mean the same on both endpoints.
async fn failure_response(reply: FakeReply) -> Response {
    match reply {
        FakeReply::RateLimited { retry_after_secs } => {
            let mut response = openai_error(
                429,
                "Rate limit reached for requests. Please try again later.",
                "requests",
                Some("rate_limit_exceeded"),
            );
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        FakeReply::ServerError => openai_error(
            500,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
        FakeReply::Hang => {
            tokio::time::sleep(HANG_FOR).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        FakeReply::Malformed => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"id":"chatcmpl-fake","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"trunc"#,
        )
            .into_response(),
        FakeReply::Status(status, body) => {
            let content_type = match serde_json::from_str::<Value>(&body) {
                Ok(_) => "application/json",
                Err(_) => "text/plain; charset=utf-8",
            };
            (
                status_code(status),
                [(header::CONTENT_TYPE, content_type)],
                body,
            )
                .into_response()
        }
        other => openai_error(
            500,
            &format!("fake misuse: {other:?} is not a failure reply"),
            "server_error",
            None,
        ),
    }
}

/// OpenAI's error envelope.
fn openai_error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Response {
    (
        status_code(status),
        axum::Json(json!({
            "error": { "message": message, "type": kind, "param": null, "code": code }
        })),
    )
        .into_response()
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).expect("valid HTTP status in a scripted reply")
}
