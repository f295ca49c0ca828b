//! The model provider: one client for any OpenAI-compatible API (OpenAI, Ollama, vLLM,
//! llama.cpp server), speaking the chat-completions and embeddings wire format.
//!
//! This is the wire layer only. It knows nothing of tenants, guardrails or prompts: the
//! agent runtime calls it with messages that the guardrail pipeline has already masked
//! (AGT-1, AGT-2), and records what comes back (AGT-8, AGT-10).
//!
//! # How the work is split with async-openai
//!
//! async-openai is the primary path: its `OpenAIConfig` holds the base URL and the key,
//! its `Client` builds and sends every request, its request types are what goes on the
//! wire and its response types parse what comes back. What it cannot do for us is done
//! here, around it rather than instead of it:
//!
//! - **Retries (AGT-11).** Its default retry layer does not retry timeouts, sleeps for
//!   whatever `Retry-After` says with no cap, and reports neither how many attempts were
//!   made nor the status of a 4xx whose body is not OpenAI's error JSON. So the client is
//!   given our own tower service (`Transport`, through `Client::with_http_service`):
//!   it sends with reqwest, retries 408/429/5xx/transport failures with capped
//!   exponential backoff (honouring `Retry-After` seconds, capped too), counts attempts,
//!   and hands a final failure back as a [`ProviderError`] inside `OpenAIError::Boxed`.
//! - **The raw response for the audit (AGT-8).** Calls go through the `*_byot` methods
//!   with `serde_json::Value` as the response type, so the JSON is kept exactly as
//!   received; it is then parsed into async-openai's typed response.
//! - **Tolerant parsing.** Local servers often answer with a shape async-openai's strict
//!   types reject (no `created` or `object`, `finish_reason: "eos"`, tool-call arguments
//!   as an object, no tool-call id). When the typed parse fails, a lenient reader takes
//!   the fields we need from the JSON; only a body that is not JSON at all, or that has
//!   no message, is [`ProviderError::Malformed`].
//!
//! async-openai 0.43 is built on reqwest 0.13 (the rest of the platform is on 0.12), so
//! the HTTP client here is `reqwest013`. Its TLS is rustls with the *ring* provider and
//! the webpki roots, the same stack as the platform's reqwest 0.12: enabling
//! async-openai's default `rustls` feature would compile aws-lc-rs as well.
//!
//! # Where things are
//!
//! This file is the client: its configuration, its errors, [`Provider`] and its calls.
//! `types.rs` holds what is sent and answered ([`ChatMessage`], [`ChatResponse`]...),
//! `wire.rs` turns our messages into async-openai's, `parse.rs` is the lenient reader and
//! `transport.rs` the retrying transport.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_openai::config::OpenAIConfig;

use super::pipeline::ModelAccess;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionTool, ChatCompletionTools, CreateChatCompletionRequest, FunctionObject,
    ResponseFormat, ResponseFormatJsonSchema,
};
use async_openai::types::embeddings::{CreateEmbeddingRequest, EmbeddingInput};
use async_openai::Client;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::knowledge::Embedded;

mod parse;
mod transport;
mod types;
mod wire;

use parse::{parse_chat, parse_embeddings, unit_length};
use transport::{describe_transport_error, is_retryable, RetryPolicy, Transport};
pub use types::{ChatMessage, ChatRequest, ChatResponse, ToolCall, Usage};
use wire::wire_message;

const DEFAULT_RETRY_BASE_DELAY: Duration = Duration::from_millis(500);
const DEFAULT_MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// How to reach one OpenAI-compatible provider, and how hard to try.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Up to and including the version segment: `https://api.openai.com/v1`,
    /// `http://127.0.0.1:11434/v1` (Ollama), `http://host:8000/v1` (vLLM).
    pub base_url: String,
    /// `None` sends no `Authorization` header at all (local servers).
    pub api_key: Option<SecretString>,
    pub chat_model: String,
    pub embedding_model: String,
    pub temperature: f32,
    /// Per attempt, for the whole request: connect, send, and read the response.
    pub timeout: Duration,
    /// Retries after the first attempt; the total is at most `max_retries + 1`.
    pub max_retries: u32,
    /// Sent as `dimensions` and checked on every returned vector; `None` sends no
    /// `dimensions` (vLLM and ada-002 refuse it) and takes the model's own size.
    pub embedding_dimensions: Option<u32>,
    /// Whether the base URL may name a private, loopback or link-local address (an operator's
    /// local Ollama). Off: public addresses only, checked after DNS resolution too.
    pub allow_private: bool,
}

impl ProviderConfig {
    /// A config with the defaults: temperature 0.2, 30 s timeout, 3 retries, no key.
    pub fn new(
        base_url: impl Into<String>,
        chat_model: impl Into<String>,
        embedding_model: impl Into<String>,
    ) -> Self {
        ProviderConfig {
            base_url: base_url.into(),
            api_key: None,
            chat_model: chat_model.into(),
            embedding_model: embedding_model.into(),
            temperature: 0.2,
            timeout: Duration::from_secs(30),
            max_retries: 3,
            embedding_dimensions: None,
            allow_private: false,
        }
    }
}

/// Why a provider call gave no usable answer. No variant ever holds the API key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// 429, 5xx, timeouts or connection failures, still failing after every retry.
    /// The runtime hands the conversation to a human (AGT-11).
    #[error("model provider unavailable after {attempts} attempt(s): {last}")]
    Unavailable { attempts: u32, last: String },
    /// A 4xx other than 408/429 (bad key, unknown model, invalid request), or a 429 for
    /// exhausted quota: retrying would not help.
    #[error("model provider rejected the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    /// A 2xx whose body could not be read as a completion or embeddings response.
    #[error("model provider answered with a malformed response: {0}")]
    Malformed(String),
    /// The provider settings are unusable; nothing was sent.
    #[error("model provider configuration is invalid: {0}")]
    Config(String),
}

/// A configured provider. Cheap to clone: clones share the HTTP connection pool and
/// what was learned about the server (json_schema and logprobs support). The tenant's
/// provider is cached per configuration version, so what is learned holds per tenant and
/// version: a settings change starts afresh.
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
    retry: RetryPolicy,
}

struct Inner {
    openai: OpenAIConfig,
    http: reqwest013::Client,
    api_key: Option<SecretString>,
    name: String,
    base_url: String,
    chat_model: String,
    embedding_model: String,
    temperature: f32,
    embedding_dimensions: Option<u32>,
    json_schema: AtomicBool,
    logprobs: AtomicBool,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.inner.name)
            .field("base_url", &self.inner.base_url)
            .field("chat_model", &self.inner.chat_model)
            .field("embedding_model", &self.inner.embedding_model)
            .field("has_api_key", &self.inner.api_key.is_some())
            .finish_non_exhaustive()
    }
}

impl Provider {
    pub fn new(config: ProviderConfig) -> Result<Self, ProviderError> {
        let config_error = |message: &str| Err(ProviderError::Config(message.to_string()));
        let base_url = config.base_url.trim().trim_end_matches('/').to_string();
        // The URL is not quoted back: a mistyped one may hold a credential.
        let url = reqwest013::Url::parse(&base_url)
            .map_err(|e| ProviderError::Config(format!("base URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return config_error("base URL must be an http(s) URL with a host");
        }
        if !url.username().is_empty() || url.password().is_some() {
            // It would be recorded as the provider (AGT-10) and shown in errors.
            return config_error("base URL must not hold credentials; use the API key");
        }
        // A tenant names this URL: it must not lead into the platform's own network.
        crate::http::egress::check_target(
            &base_url,
            config.allow_private,
            crate::http::egress::Target::Provider,
        )
        .map_err(|e| ProviderError::Config(format!("base URL: {e}")))?;
        let name = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        if config.chat_model.trim().is_empty() || config.embedding_model.trim().is_empty() {
            return config_error("chat and embedding models must be named");
        }
        if !(config.temperature.is_finite() && (0.0..=2.0).contains(&config.temperature)) {
            return config_error("temperature must be between 0 and 2");
        }
        if config.timeout.is_zero() {
            return config_error("timeout must be positive");
        }
        if config.embedding_dimensions == Some(0) {
            return config_error("embedding dimensions must be positive");
        }
        // A stored-but-empty key means "no key": local servers need none.
        let api_key = config
            .api_key
            .filter(|key| !key.expose_secret().trim().is_empty());
        if let Some(key) = &api_key {
            // async-openai unwraps the header it builds; refuse what would panic there.
            // The message names no character of the key.
            if !key.expose_secret().bytes().all(|b| b.is_ascii_graphic()) {
                return config_error("API key contains characters not allowed in a header");
            }
        }

        // Every field is set explicitly: `OpenAIConfig::new()` reads OPENAI_API_KEY,
        // OPENAI_BASE_URL, OPENAI_ORG_ID and OPENAI_PROJECT_ID from the environment, and
        // the platform's own key must never be sent to a tenant's server.
        let openai = OpenAIConfig::new()
            .with_api_base(base_url.clone())
            .with_api_key(
                api_key
                    .as_ref()
                    .map(|key| key.expose_secret().to_string())
                    .unwrap_or_default(),
            )
            .with_org_id("")
            .with_project_id("");

        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ProviderError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let builder = reqwest013::Client::builder();
        let builder = if config.allow_private {
            builder
        } else {
            // Host names are checked after resolution: one that resolves to a private
            // address is refused at call time, like a private IP literal here.
            builder.dns_resolver(crate::http::egress::PublicOnly(
                crate::http::egress::Target::Provider,
            ))
        };
        let http = builder
            .tls_backend_preconfigured(tls)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            // A provider API has no reason to redirect, and a redirect could carry the
            // masked conversation somewhere the tenant did not configure.
            .redirect(reqwest013::redirect::Policy::none())
            .user_agent(concat!("custodian/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Config(format!("HTTP client: {e}")))?;

        Ok(Provider {
            inner: Arc::new(Inner {
                openai,
                http,
                api_key,
                name,
                base_url,
                chat_model: config.chat_model,
                embedding_model: config.embedding_model,
                temperature: config.temperature,
                embedding_dimensions: config.embedding_dimensions,
                json_schema: AtomicBool::new(true),
                logprobs: AtomicBool::new(true),
            }),
            retry: RetryPolicy {
                max_retries: config.max_retries,
                base_delay: DEFAULT_RETRY_BASE_DELAY,
                max_delay: DEFAULT_MAX_RETRY_DELAY,
            },
        })
    }

    /// Backoff starts at `base` and doubles per retry (with jitter); no single wait,
    /// backoff or `Retry-After`, is longer than `max`. Defaults: 500 ms and 30 s.
    pub fn with_retry_delays(mut self, base: Duration, max: Duration) -> Self {
        self.retry.base_delay = base;
        self.retry.max_delay = max;
        self
    }

    /// Whether to ask for `response_format: json_schema` (the default) or go straight
    /// to `json_object`, for a server known not to support structured outputs. Without
    /// this, the first refusal switches it off for this provider and its clones.
    pub fn with_json_schema(self, supported: bool) -> Self {
        self.inner.json_schema.store(supported, Ordering::Relaxed);
        self
    }

    /// Who processed the data (AGT-10): the host (and port, if given) of the base URL,
    /// e.g. `api.openai.com` or `127.0.0.1:11434`.
    pub fn provider_name(&self) -> &str {
        &self.inner.name
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    pub fn chat_model(&self) -> &str {
        &self.inner.chat_model
    }

    pub fn embedding_model(&self) -> &str {
        &self.inner.embedding_model
    }

    pub fn embedding_dimensions(&self) -> Option<u32> {
        self.inner.embedding_dimensions
    }

    /// Whether a response schema will be sent as `json_schema` (false once the server
    /// has refused it).
    pub fn supports_json_schema(&self) -> bool {
        self.inner.json_schema.load(Ordering::Relaxed)
    }

    /// Whether `logprobs` will be asked for when a request wants them (false once the
    /// server has refused the parameter).
    pub fn supports_logprobs(&self) -> bool {
        self.inner.logprobs.load(Ordering::Relaxed)
    }

    /// One chat completion. 408, 429, 5xx, timeouts and connection failures are retried
    /// with exponential backoff (honouring `Retry-After` seconds, capped) up to
    /// `max_retries`, then [`ProviderError::Unavailable`]. A 400 that refuses the
    /// `json_schema` response format is retried once with `json_object`, one that refuses
    /// `logprobs` once without them, and the provider remembers not to send either again.
    ///
    /// Only the guardrail pipeline holds a [`ModelAccess`], so only it can call this (AGT-1).
    #[tracing::instrument(skip_all, fields(provider = %self.inner.name, model = %self.inner.chat_model))]
    pub async fn chat(
        &self,
        request: &ChatRequest,
        _access: ModelAccess,
    ) -> Result<ChatResponse, ProviderError> {
        self.complete(request).await
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let started = Instant::now();
        let attempts = Arc::new(AtomicU32::new(0));
        let mut json_schema = request.response_schema.is_some() && self.supports_json_schema();
        let mut logprobs = request.logprobs && self.supports_logprobs();
        // Each optional feature is given up at most once: at most three requests.
        let raw = loop {
            match self
                .send_chat(request, json_schema, logprobs, &attempts)
                .await
            {
                Err(ProviderError::Rejected { status, message })
                    if json_schema
                        && refuses(status, &message, &["response_format", "json_schema"]) =>
                {
                    tracing::warn!(
                        status,
                        "provider refused the json_schema response format; using json_object"
                    );
                    self.inner.json_schema.store(false, Ordering::Relaxed);
                    json_schema = false;
                }
                Err(ProviderError::Rejected { status, message })
                    if logprobs && refuses(status, &message, &["logprobs"]) =>
                {
                    tracing::warn!(status, "provider refused logprobs; asking without them");
                    self.inner.logprobs.store(false, Ordering::Relaxed);
                    logprobs = false;
                }
                other => break other?,
            }
        };
        let mut response = parse_chat(raw, &self.inner.chat_model)?;
        response.attempts = attempts.load(Ordering::Relaxed);
        response.latency = started.elapsed();
        Ok(response)
    }

    /// One embedding per input, in input order, through the embeddings endpoint (same
    /// retry policy as [`Provider::chat`]). `dimensions` is sent only when configured, and
    /// then every vector is checked against it; otherwise all must have one size.
    ///
    /// Embedding inputs leave the platform like prompts do, so only the guardrail pipeline,
    /// which masks them first, can call this (AGT-1, AGT-2).
    #[tracing::instrument(skip_all, fields(provider = %self.inner.name, model = %self.inner.embedding_model, inputs = inputs.len()))]
    pub async fn embed(
        &self,
        inputs: &[String],
        _access: ModelAccess,
    ) -> Result<Embedded, ProviderError> {
        self.embed_unchecked(inputs).await
    }

    async fn embed_unchecked(&self, inputs: &[String]) -> Result<Embedded, ProviderError> {
        let started = Instant::now();
        if inputs.is_empty() {
            return Ok(Embedded {
                vectors: Vec::new(),
                tokens: None,
                attempts: 0,
                latency: Duration::ZERO,
            });
        }
        let body = CreateEmbeddingRequest {
            model: self.inner.embedding_model.clone(),
            input: EmbeddingInput::StringArray(inputs.to_vec()),
            dimensions: self.inner.embedding_dimensions,
            ..Default::default()
        };
        let attempts = Arc::new(AtomicU32::new(0));
        let raw: Value = self
            .client(&attempts)
            .embeddings()
            .create_byot(&body)
            .await
            .map_err(|e| self.provider_error(e, &attempts))?;
        let tokens = raw
            .pointer("/usage/prompt_tokens")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok());
        let vectors = parse_embeddings(raw)?;
        if vectors.len() != inputs.len() {
            return Err(ProviderError::Malformed(format!(
                "{} embeddings returned for {} inputs",
                vectors.len(),
                inputs.len()
            )));
        }
        let expected = self
            .inner
            .embedding_dimensions
            .map(|d| d as usize)
            .unwrap_or(vectors[0].len());
        if let Some(bad) = vectors.iter().find(|v| v.len() != expected || v.is_empty()) {
            return Err(ProviderError::Malformed(format!(
                "embedding of dimension {} where {expected} was expected",
                bad.len()
            )));
        }
        let vectors = vectors
            .into_iter()
            .map(unit_length)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Embedded {
            vectors,
            tokens,
            attempts: attempts.load(Ordering::Relaxed),
            latency: started.elapsed(),
        })
    }

    async fn send_chat(
        &self,
        request: &ChatRequest,
        json_schema: bool,
        logprobs: bool,
        attempts: &Arc<AtomicU32>,
    ) -> Result<Value, ProviderError> {
        let body = self.chat_body(request, json_schema, logprobs);
        self.client(attempts)
            .chat()
            .create_byot(&body)
            .await
            .map_err(|e| self.provider_error(e, attempts))
    }

    fn chat_body(
        &self,
        request: &ChatRequest,
        json_schema: bool,
        logprobs: bool,
    ) -> CreateChatCompletionRequest {
        let messages = request.messages.iter().map(wire_message).collect();
        let tools = request
            .tools
            .iter()
            .map(|tool| {
                ChatCompletionTools::Function(ChatCompletionTool {
                    function: FunctionObject {
                        name: tool.name().to_string(),
                        description: Some(tool.description().to_string()),
                        parameters: Some(tool.parameters().clone()),
                        strict: None,
                    },
                })
            })
            .collect::<Vec<_>>();
        let response_format = request.response_schema.as_ref().map(|(name, schema)| {
            if json_schema {
                ResponseFormat::JsonSchema {
                    json_schema: ResponseFormatJsonSchema {
                        description: None,
                        name: name.clone(),
                        schema: schema.clone(),
                        strict: Some(true),
                    },
                }
            } else {
                ResponseFormat::JsonObject
            }
        });
        CreateChatCompletionRequest {
            model: self.inner.chat_model.clone(),
            messages,
            temperature: Some(self.inner.temperature),
            tools: (!tools.is_empty()).then_some(tools),
            response_format,
            logprobs: logprobs.then_some(true),
            ..Default::default()
        }
    }

    /// A client for one call. It is built per call so that its transport can count
    /// this call's attempts; everything heavy (connection pool, TLS) is shared.
    /// (`Client::with_config` is not used: it builds a default reqwest client, which
    /// without async-openai's aws-lc-rs feature has no TLS provider and panics.)
    fn client(&self, attempts: &Arc<AtomicU32>) -> Client<OpenAIConfig> {
        Client::build(self.inner.http.clone(), self.inner.openai.clone()).with_http_service(
            Transport {
                http: self.inner.http.clone(),
                retry: self.retry,
                send_auth: self.inner.api_key.is_some(),
                attempts: attempts.clone(),
            },
        )
    }

    fn provider_error(&self, error: OpenAIError, attempts: &AtomicU32) -> ProviderError {
        let attempts = attempts.load(Ordering::Relaxed);
        let error = match error {
            OpenAIError::Boxed(boxed) => match boxed.downcast::<ProviderError>() {
                Ok(ours) => *ours,
                Err(other) => ProviderError::Unavailable {
                    attempts,
                    last: other.to_string(),
                },
            },
            OpenAIError::JSONDeserialize(e, _) => {
                ProviderError::Malformed(format!("response body is not JSON: {e}"))
            }
            // The transport turns every non-2xx into a ProviderError, so this is only
            // reached if async-openai itself reports an HTTP status.
            OpenAIError::ApiError(api) if is_retryable(api.status_code) => {
                ProviderError::Unavailable {
                    attempts,
                    last: format!("HTTP {}: {}", api.status_code.as_u16(), api.api_error),
                }
            }
            OpenAIError::ApiError(api) => ProviderError::Rejected {
                status: api.status_code.as_u16(),
                message: api.api_error.to_string(),
            },
            // Reading the body of a 2xx failed (e.g. the timeout struck mid-body).
            OpenAIError::Reqwest(e) => ProviderError::Unavailable {
                attempts,
                last: describe_transport_error(&e),
            },
            OpenAIError::InvalidArgument(message) => ProviderError::Config(message),
            other => ProviderError::Malformed(other.to_string()),
        };
        self.scrub(error)
    }

    /// Servers echo what they were sent (OpenAI's 401 quotes the key it got); make sure
    /// none of that reaches an error string, a log or the audit.
    fn scrub(&self, error: ProviderError) -> ProviderError {
        let Some(key) = &self.inner.api_key else {
            return error;
        };
        let key = key.expose_secret();
        let clean = |text: String| text.replace(key, "[REDACTED]");
        match error {
            ProviderError::Unavailable { attempts, last } => ProviderError::Unavailable {
                attempts,
                last: clean(last),
            },
            ProviderError::Rejected { status, message } => ProviderError::Rejected {
                status,
                message: clean(message),
            },
            ProviderError::Malformed(message) => ProviderError::Malformed(clean(message)),
            ProviderError::Config(message) => ProviderError::Config(clean(message)),
        }
    }
}

/// Whether a 400/422 refuses one of the request's optional parameters. Local servers word it
/// differently ("response_format is not supported", "unknown field json_schema", "logprobs
/// is not supported"); they all name the field.
fn refuses(status: u16, message: &str, fields: &[&str]) -> bool {
    let message = message.to_ascii_lowercase();
    matches!(status, 400 | 422) && fields.iter().any(|f| message.contains(f))
}
