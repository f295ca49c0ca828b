//! Per-tenant agent settings: the provider (or the offline responder when none is set), the
//! confidence threshold and its formula's weights, and the tenant's guardrail configuration,
//! compiled into a policy cached per configuration version so a change takes effect on the
//! next message without a restart (AGT-3). A change of the embedding provider, model or
//! dimensions re-embeds the tenant's knowledge base in the background (progress on
//! `GET /api/v1/knowledge/status`); search compares a query only with vectors of its own model
//! (by name and size), so an article not yet re-embedded by a new model is left out rather
//! than compared across models.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::pipeline::{self, Masked};
use super::provider::{Provider, ProviderError};
use super::AgentState;
use crate::audit::AuditEvent;
use crate::auth::Ctx;
use crate::error::{Error, Result};
use crate::guardrails::{Policy, TenantConfig};
use crate::http::{Access, Api, Contract, Json};
use crate::knowledge::embedder::{EmbedError, Remote, RemoteQuery};
use crate::knowledge::{self, Embedded, EmbedderIdentity};
use crate::rbac::Permission;
use utoipa::ToSchema;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    AgentState: axum::extract::FromRef<S>,
{
    use Access::*;
    api.endpoint(
        Method::GET,
        "/api/v1/agent/settings",
        Requires(Permission::AgentConfigure),
        (
            "agent",
            "The agent's provider, threshold and guardrail configuration",
        ),
        Contract::new().ok::<AgentSettings>(),
        show,
    )
    .endpoint(
        Method::PUT,
        "/api/v1/agent/settings",
        Requires(Permission::AgentConfigure),
        (
            "agent",
            "Change the agent's settings; guardrail changes apply to the next message",
        ),
        Contract::new()
            .body::<UpdateSettings>()
            // A key goes only to the address it is saved with: a key comes with the address,
            // and a new address with its key (or `null`). Stricter than the server, which also
            // takes a key alone for the stored address.
            .body_rule(json!({
                "allOf": [
                    { "if": { "required": ["api_key"], "properties": { "api_key": { "type": "string" } } },
                      "then": { "required": ["provider_base_url"],
                                "properties": { "provider_base_url": { "type": "string" } } } },
                    { "if": { "required": ["provider_base_url"],
                              "properties": { "provider_base_url": { "type": "string" } } },
                      "then": { "required": ["api_key"] } }
                ]
            }))
            .ok::<AgentSettings>()
            .error(StatusCode::BAD_REQUEST, "invalid_provider")
            .error(StatusCode::BAD_REQUEST, "api_key_required")
            .error(StatusCode::BAD_REQUEST, "invalid_weights")
            .error(StatusCode::BAD_REQUEST, "invalid_guardrails")
            .error(StatusCode::BAD_REQUEST, "required_pack")
            .error(StatusCode::BAD_REQUEST, "pii_type_mandatory")
            .error(StatusCode::CONFLICT, "duplicate_rule_id")
            .error(StatusCode::BAD_REQUEST, "invalid_settings"),
        update,
    )
}

/// The sizes of knowledge vectors a provider's embedding model may be asked for
/// (`agent_settings_dims_known`); `null`: the model's own size, no `dimensions` sent.
fn embedding_dims_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .enum_values(Some([
            json!(384),
            json!(768),
            json!(1024),
            json!(1536),
            Value::Null,
        ]))
        .description(Some(
            "Sent to the provider as `dimensions` when set; `null`: the model's own size (vLLM \
             and ada-002 refuse the parameter).",
        ))
        .build()
}

/// The agent's settings. Every field is always present; those without a value are `null`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentSettings {
    /// An OpenAI-compatible API; `null`: the built-in offline responder answers.
    #[schema(required = true)]
    pub provider_base_url: Option<String>,
    /// Whether an API key is stored; the key itself is never shown.
    pub api_key_configured: bool,
    pub chat_model: String,
    pub embedding_model: String,
    /// Sent as `dimensions` only when set; `None`: the model's own size (vLLM and ada-002
    /// refuse the parameter).
    #[schema(schema_with = embedding_dims_schema, required = true)]
    pub embedding_dims: Option<i32>,
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: f32,
    /// How long one call to the provider may take.
    #[schema(minimum = 1000, maximum = 120000)]
    pub timeout_ms: i32,
    #[schema(minimum = 0, maximum = 10)]
    pub max_retries: i32,
    /// Below this the draft is not sent: a person gets it as a suggestion (AGT-5).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub confidence_threshold: f32,
    /// The weights of the confidence formula: the model's own estimate, its token
    /// probabilities and the retrieval's similarity.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub weight_self: f32,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub weight_logprob: f32,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub weight_retrieval: f32,
    /// Similarity × this (capped at 1) is what retrieval counts for in the confidence; `None`:
    /// the embedder's default ([`AgentSettings::effective_retrieval_scale`]).
    #[schema(exclusive_minimum = 0.0, maximum = 10.0, required = true)]
    pub retrieval_scale: Option<f32>,
    /// Free-form: the tenant's guardrail configuration (`rules`, `options`: PII types, packs,
    /// safe replies...), checked by compiling it.
    #[schema(value_type = Object)]
    pub guardrails: Value,
    /// Bumped by every change.
    pub config_version: i64,
    /// `null` until the settings are first changed.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub updated_at: Option<OffsetDateTime>,
    #[serde(skip)]
    pub sealed_api_key: Option<Vec<u8>>,
}

/// The built-in lexical embedder's similarities run low for a good match (a passage and a
/// question share a few words among many): 0.5 already means a close one.
pub const LOCAL_RETRIEVAL_SCALE: f32 = 2.0;
/// A neural embedding model's cosine similarity is taken as it is.
pub const REMOTE_RETRIEVAL_SCALE: f32 = 1.0;

impl AgentSettings {
    /// No provider: the built-in offline responder answers from the knowledge base.
    pub fn is_offline(&self) -> bool {
        self.provider_base_url.is_none()
    }

    /// The retrieval scale in force: the tenant's, else the embedder's default.
    pub fn effective_retrieval_scale(&self) -> f32 {
        self.retrieval_scale.unwrap_or(if self.is_offline() {
            LOCAL_RETRIEVAL_SCALE
        } else {
            REMOTE_RETRIEVAL_SCALE
        })
    }

    /// What decides the knowledge vectors: the provider, its embedding model and dimensions
    /// (the built-in embedder without a provider). When this changes, the knowledge base is
    /// re-embedded.
    pub fn embedder_identity(&self) -> EmbedderIdentity {
        match &self.provider_base_url {
            None => EmbedderIdentity::Local,
            Some(url) => EmbedderIdentity::Remote {
                base_url: url.clone(),
                model: self.embedding_model.clone(),
                dims: self.embedding_dims,
            },
        }
    }
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            provider_base_url: None,
            api_key_configured: false,
            chat_model: "gpt-4o-mini".into(),
            embedding_model: "text-embedding-3-small".into(),
            embedding_dims: None,
            temperature: 0.2,
            timeout_ms: 20_000,
            max_retries: 3,
            confidence_threshold: 0.6,
            weight_self: 0.4,
            weight_logprob: 0.2,
            weight_retrieval: 0.4,
            retrieval_scale: None,
            guardrails: json!({}),
            config_version: 0,
            updated_at: None,
            sealed_api_key: None,
        }
    }
}

pub async fn load(conn: &mut PgConnection, tenant_id: Uuid) -> Result<AgentSettings> {
    let row = sqlx::query!(
        "SELECT provider_base_url, provider_api_key, chat_model, embedding_model, embedding_dims, temperature,
                timeout_ms, max_retries, confidence_threshold, weight_self, weight_logprob, weight_retrieval,
                retrieval_scale, guardrails, config_version, updated_at
         FROM agent_settings WHERE tenant_id = $1",
        tenant_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        None => AgentSettings::default(),
        Some(r) => AgentSettings {
            provider_base_url: r.provider_base_url,
            api_key_configured: r.provider_api_key.is_some(),
            chat_model: r.chat_model,
            embedding_model: r.embedding_model,
            embedding_dims: r.embedding_dims,
            temperature: r.temperature,
            timeout_ms: r.timeout_ms,
            max_retries: r.max_retries,
            confidence_threshold: r.confidence_threshold,
            weight_self: r.weight_self,
            weight_logprob: r.weight_logprob,
            weight_retrieval: r.weight_retrieval,
            retrieval_scale: r.retrieval_scale,
            guardrails: with_pii_floor(r.guardrails),
            config_version: r.config_version,
            updated_at: Some(r.updated_at),
            sealed_api_key: r.provider_api_key,
        },
    })
}

/// A stored guardrail configuration as it applies: a `pii_types` list saved before the floor
/// existed (or written behind the API's back) shows the mandatory types it leaves out, as the
/// policy compiled from it masks them anyway (AGT-2). The next save stores it so.
fn with_pii_floor(mut guardrails: Value) -> Value {
    if let Some(Value::Array(types)) = guardrails.pointer_mut("/options/pii_types") {
        for t in crate::guardrails::PiiType::MANDATORY {
            let label = Value::from(t.label());
            if !types.contains(&label) {
                types.push(label);
            }
        }
    }
    guardrails
}

/// The sealing context of the tenant's API key names the address it is sent to, so a key opens
/// only for the provider it was saved for: whoever changes where the key would go must send the
/// key again, and a base URL changed behind the API's back (in the database) finds a key that
/// no longer opens rather than one that travels to the new host.
fn key_context(tenant_id: Uuid, base_url: &str) -> String {
    format!("agent:{tenant_id}:{base_url}")
}

/// The tenant's compiled guardrail policy, from the cache while its version is current.
pub fn policy(
    state: &AgentState,
    tenant_id: Uuid,
    settings: &AgentSettings,
) -> Result<Arc<Policy>> {
    let version = settings.config_version as u64;
    state
        .policies
        .get_or_compile(&tenant_id.to_string(), version, || {
            let config: TenantConfig = serde_json::from_value(settings.guardrails.clone())
                .map_err(|e| format!("tenant configuration: {e}"))?;
            Policy::new(&config).map_err(|e| e.to_string())
        })
        .map_err(|e| {
            Error::Internal(anyhow::anyhow!(
                "the tenant's guardrail configuration does not compile: {e}"
            ))
        })
}

pub use crate::guardrails::REQUIRED_PACK;

/// Refuses a guardrail configuration that does not compile, or that leaves out a pack no tenant
/// may turn off. Every configuration a tenant saves or dry-runs passes here.
pub fn check_guardrails(config: &TenantConfig) -> Result<Policy> {
    let mut ids = std::collections::HashSet::new();
    if let Some(rule) = config.rules.iter().find(|r| !ids.insert(r.id.as_str())) {
        return Err(Error::conflict(
            "duplicate_rule_id",
            format!(
                "two rules have the id `{}`: a rule id names one rule",
                rule.id
            ),
        ));
    }
    let unmasked = config.options.unmasked_mandatory();
    if !unmasked.is_empty() {
        let labels: Vec<&str> = unmasked.iter().map(|t| t.label()).collect();
        return Err(Error::bad_request(
            "pii_type_mandatory",
            format!(
                "options.pii_types must include {}: structured identifiers, e-mail addresses, \
                 phone numbers, secrets and names are always masked before the model sees a \
                 message (AGT-2); a configuration may add types, never remove these",
                labels.join(", ")
            ),
        ));
    }
    if let Some(packs) = &config.options.packs {
        if !packs.iter().any(|p| p == REQUIRED_PACK) {
            return Err(Error::bad_request(
                "required_pack",
                format!(
                    "options.packs must include `{REQUIRED_PACK}`: customers can always ask for a \
                     person to review a decision (AGT-7)"
                ),
            ));
        }
    }
    Policy::new(config).map_err(|e| Error::bad_request("invalid_guardrails", e.to_string()))
}

/// The tenant's provider as the knowledge base's remote embedder. Both of its roads to the
/// embeddings API go through the pipeline (AGT-1) with masked text (AGT-2): passages are masked
/// here with the tenant's guardrails, outside any conversation; a run's query arrives masked by
/// the run's guard, with the conversation's vault.
pub struct ProviderEmbedder {
    provider: Provider,
    /// The tenant's guardrails, to mask knowledge passages outside any conversation.
    policy: Arc<Policy>,
}

impl Remote for ProviderEmbedder {
    fn embed_passages<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Embedded, EmbedError>> {
        Box::pin(async move {
            let masked = pipeline::mask_passages(&self.policy, texts);
            Ok(pipeline::embed(&self.provider, &masked).await?)
        })
    }

    fn model(&self) -> &str {
        self.provider.embedding_model()
    }

    fn provider_name(&self) -> &str {
        self.provider.provider_name()
    }
}

impl RemoteQuery for ProviderEmbedder {
    type Masked = Masked;
    type Error = ProviderError;

    async fn embed_query(&self, masked: Masked) -> Result<Embedded, ProviderError> {
        pipeline::embed(&self.provider, &[masked]).await
    }
}

/// A run's embedder: the knowledge base's, with the tenant's provider as its remote side, so the
/// run embeds its queries masked by its own guard and fails with the provider's own error.
///
/// ```no_run
/// use custodian::agent::pipeline::{constant, Masked};
/// use custodian::agent::settings::Embedder;
///
/// async fn retrieve(embedder: &Embedder) {
///     let _ = embedder.embed_query("return policy", Masked::from(constant("return policy"))).await;
/// }
/// ```
///
/// ```compile_fail,E0308
/// // proves: AGT-2 (a run's query reaches the embeddings API only masked)
/// use custodian::agent::settings::Embedder;
///
/// async fn retrieve(embedder: &Embedder, question: String) {
///     let _ = embedder.embed_query(&question, question.clone()).await;
/// }
/// ```
pub type Embedder = knowledge::Embedder<ProviderEmbedder>;

/// The tenant's provider client, or None for the offline responder.
pub fn provider(
    state: &AgentState,
    tenant_id: Uuid,
    settings: &AgentSettings,
) -> Result<Option<super::provider::Provider>> {
    let Some(base_url) = &settings.provider_base_url else {
        return Ok(None);
    };
    if let Some(cached) = state.providers.get(tenant_id, settings.config_version) {
        return Ok(Some(cached));
    }
    let provider = build_provider(state, tenant_id, settings, base_url)?;
    state
        .providers
        .put(tenant_id, settings.config_version, provider.clone());
    Ok(Some(provider))
}

/// A provider client from the settings, uncached: what a settings change is checked with (the
/// cache holds clients per saved version, and the version being saved is not one yet).
fn build_provider(
    state: &AgentState,
    tenant_id: Uuid,
    settings: &AgentSettings,
    base_url: &str,
) -> Result<super::provider::Provider> {
    let api_key = match &settings.sealed_api_key {
        Some(sealed) => Some(SecretString::from(
            String::from_utf8(
                state
                    .sealer
                    .open(sealed, &key_context(tenant_id, base_url))
                    .map_err(|_| {
                        Error::bad_request(
                            "api_key_required",
                            "the stored API key was saved for another provider address: send \
                             the api_key again with provider_base_url",
                        )
                    })?,
            )
            .map_err(|_| Error::Internal(anyhow::anyhow!("agent API key is not text")))?,
        )),
        None => None,
    };
    let config = super::provider::ProviderConfig {
        base_url: base_url.to_string(),
        api_key,
        chat_model: settings.chat_model.clone(),
        embedding_model: settings.embedding_model.clone(),
        temperature: settings.temperature,
        timeout: std::time::Duration::from_millis(settings.timeout_ms as u64),
        max_retries: settings.max_retries as u32,
        embedding_dimensions: settings.embedding_dims.map(|d| d as u32),
        allow_private: state.allow_private,
    };
    super::provider::Provider::new(config)
        .map_err(|e| Error::bad_request("invalid_provider", e.to_string()))
}

/// Values loaded per tenant, each valid for one version of what it was loaded from. A reader
/// asks with the version it just read in its own transaction, so it never gets a stale value:
/// a change bumps the version, and the next reader loads afresh.
pub struct TenantCache<V, T> {
    entries: std::sync::RwLock<std::collections::HashMap<Uuid, (V, T)>>,
}

impl<V, T> Default for TenantCache<V, T> {
    fn default() -> Self {
        TenantCache {
            entries: Default::default(),
        }
    }
}

impl<V: PartialEq + Copy, T: Clone> TenantCache<V, T> {
    pub fn get(&self, tenant_id: Uuid, version: V) -> Option<T> {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(&tenant_id)
            .filter(|(v, _)| *v == version)
            .map(|(_, value)| value.clone())
    }

    pub fn put(&self, tenant_id: Uuid, version: V, value: T) {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant_id, (version, value));
    }
}

/// Provider clients by tenant, valid for one configuration version (every settings change,
/// the API key included, bumps it, so a stale client is never used).
pub type ProviderCache = TenantCache<i64, super::provider::Provider>;

/// A tenant's settings by configuration version (0: none stored, the defaults).
pub type SettingsCache = TenantCache<i64, std::sync::Arc<AgentSettings>>;

/// The tenant's embedder, from its settings (and compiled policy, for masking).
pub fn embedder_for(
    state: &AgentState,
    tenant_id: Uuid,
    settings: &AgentSettings,
    provider: Option<&Provider>,
) -> Result<Embedder> {
    Ok(match provider {
        Some(provider) => Embedder::Remote(Box::new(ProviderEmbedder {
            provider: provider.clone(),
            policy: policy(state, tenant_id, settings)?,
        })),
        None => Embedder::Local,
    })
}

/// Hands the knowledge base each tenant's embedder, made from the settings the agent owns.
pub struct KnowledgeEmbedders(pub AgentState);

impl knowledge::Embedders for KnowledgeEmbedders {
    fn current<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        tenant_id: Uuid,
    ) -> BoxFuture<'a, Result<EmbedderIdentity>> {
        Box::pin(async move { Ok(load(conn, tenant_id).await?.embedder_identity()) })
    }

    fn embedder<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        tenant_id: Uuid,
    ) -> BoxFuture<'a, Result<(knowledge::Embedder, EmbedderIdentity)>> {
        Box::pin(async move {
            let state = &self.0;
            let settings = load(conn, tenant_id).await?;
            let provider = provider(state, tenant_id, &settings)?;
            let embedder = embedder_for(state, tenant_id, &settings, provider.as_ref())?;
            Ok((embedder.into_dyn(), settings.embedder_identity()))
        })
    }
}

async fn show(State(state): State<AgentState>, ctx: Ctx) -> Result<Json<AgentSettings>> {
    let mut tx = ctx.begin(&state).await?;
    let settings = load(&mut tx, ctx.tenant_id).await?;
    tx.commit().await?;
    Ok(Json(settings))
}

/// The settings to change: an absent field stays as it is. Ranges as in the settings.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AgentSettingsChange)]
struct UpdateSettings {
    /// An OpenAI-compatible API (http or https, on a public address); `null` switches back to
    /// the offline responder. A stored API key goes only to the address it was saved with: a
    /// new address needs the `api_key` again.
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<String>, pattern = "$http_url", max_length = 2000)]
    provider_base_url: Option<Option<String>>,
    /// Write-only; `null` removes it.
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<String>, format = Password, pattern = "^[!-~]*$")]
    api_key: Option<Option<SecretString>>,
    #[schema(min_length = 1, pattern = "$not_blank")]
    chat_model: Option<String>,
    #[schema(min_length = 1, pattern = "$not_blank")]
    embedding_model: Option<String>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(schema_with = embedding_dims_schema)]
    embedding_dims: Option<Option<i32>>,
    #[schema(minimum = 0.0, maximum = 2.0)]
    temperature: Option<f32>,
    #[schema(minimum = 1000, maximum = 120000)]
    timeout_ms: Option<i32>,
    #[schema(minimum = 0, maximum = 10)]
    max_retries: Option<i32>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    confidence_threshold: Option<f32>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    weight_self: Option<f32>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    weight_logprob: Option<f32>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    weight_retrieval: Option<f32>,
    /// `null`: the embedder's default.
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<f32>, exclusive_minimum = 0.0, maximum = 10.0)]
    retrieval_scale: Option<Option<f32>>,
    /// The tenant's guardrail configuration (`rules`, `options`); refused unless it compiles,
    /// `options.packs`, when given, must include `human_review`, and `options.pii_types`, when
    /// given, every type no tenant may turn off.
    #[schema(value_type = Option<TenantConfig>)]
    guardrails: Option<Value>,
}

async fn update(
    State(state): State<AgentState>,
    ctx: Ctx,
    Json(body): Json<UpdateSettings>,
) -> Result<Json<AgentSettings>> {
    let mut tx = ctx.begin(&state).await?;
    let before = load(&mut tx, ctx.tenant_id).await?;
    let mut s = before.clone();
    if let Some(url) = body.provider_base_url {
        if let Some(u) = &url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(Error::bad_request(
                    "invalid_provider",
                    "provider_base_url must be an http(s) URL",
                ));
            }
            // Like an action's endpoint: not into the platform's own network (the provider
            // client checks host names again when it resolves them).
            crate::http::egress::check_target(
                u,
                state.allow_private,
                crate::http::egress::Target::Provider,
            )
            .map_err(|e| {
                Error::bad_request("invalid_provider", format!("provider_base_url: {e}"))
            })?;
        }
        s.provider_base_url = url.map(|u| u.trim_end_matches('/').to_string());
    }
    // A stored key goes only where it was saved for: a new address needs the key sent again
    // in the same request (otherwise any admin could redirect the owner's key to a host of
    // their own, and the re-embedding a provider change starts would send it at once).
    let moved = s.provider_base_url.is_some() && s.provider_base_url != before.provider_base_url;
    match body.api_key {
        Some(Some(key)) => {
            let destination = s.provider_base_url.as_deref().ok_or_else(|| {
                Error::bad_request(
                    "invalid_provider",
                    "an api_key needs a provider_base_url to be sent to",
                )
            })?;
            s.sealed_api_key = Some(state.sealer.seal(
                key.expose_secret().as_bytes(),
                &key_context(ctx.tenant_id, destination),
            ));
        }
        Some(None) => s.sealed_api_key = None,
        // Back to the offline responder: the key has nowhere left it may go.
        None if s.provider_base_url.is_none() => s.sealed_api_key = None,
        None if moved && s.sealed_api_key.is_some() => {
            return Err(Error::bad_request(
                "api_key_required",
                "provider_base_url changed: send the api_key again in the same request (a \
                 stored key is only ever sent to the address it was saved for), or null to \
                 remove it",
            ))
        }
        None => {}
    }
    s.api_key_configured = s.sealed_api_key.is_some();
    s.chat_model = body.chat_model.unwrap_or(s.chat_model);
    s.embedding_model = body.embedding_model.unwrap_or(s.embedding_model);
    if let Some(dims) = body.embedding_dims {
        s.embedding_dims = dims;
    }
    s.temperature = body.temperature.unwrap_or(s.temperature);
    s.timeout_ms = body.timeout_ms.unwrap_or(s.timeout_ms);
    s.max_retries = body.max_retries.unwrap_or(s.max_retries);
    s.confidence_threshold = body.confidence_threshold.unwrap_or(s.confidence_threshold);
    s.weight_self = body.weight_self.unwrap_or(s.weight_self);
    s.weight_logprob = body.weight_logprob.unwrap_or(s.weight_logprob);
    s.weight_retrieval = body.weight_retrieval.unwrap_or(s.weight_retrieval);
    if let Some(scale) = body.retrieval_scale {
        s.retrieval_scale = scale;
    }
    if [s.weight_self, s.weight_logprob, s.weight_retrieval]
        .iter()
        .any(|w| !(0.0..=1.0).contains(w))
    {
        return Err(Error::bad_request(
            "invalid_weights",
            "confidence weights must be between 0 and 1",
        ));
    }
    if let Some(guardrails) = body.guardrails {
        // A configuration that does not compile is refused here, never at the next message.
        let config: TenantConfig = serde_json::from_value(guardrails.clone())
            .map_err(|e| Error::bad_request("invalid_guardrails", e.to_string()))?;
        check_guardrails(&config)?;
        s.guardrails = guardrails;
    }
    if let Some(base_url) = &s.provider_base_url {
        build_provider(&state, ctx.tenant_id, &s, base_url)?;
    }
    let saved = sqlx::query_scalar!(
        "INSERT INTO agent_settings (tenant_id, provider_base_url, provider_api_key, chat_model, embedding_model,
             embedding_dims, temperature, timeout_ms, max_retries, confidence_threshold, weight_self, weight_logprob,
             weight_retrieval, guardrails, retrieval_scale)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (tenant_id) DO UPDATE SET provider_base_url = $2, provider_api_key = $3, chat_model = $4,
             embedding_model = $5, embedding_dims = $6, temperature = $7, timeout_ms = $8, max_retries = $9,
             confidence_threshold = $10, weight_self = $11, weight_logprob = $12, weight_retrieval = $13,
             guardrails = $14, retrieval_scale = $15, config_version = agent_settings.config_version + 1,
             updated_at = now()
         RETURNING config_version",
        ctx.tenant_id,
        s.provider_base_url,
        s.sealed_api_key,
        s.chat_model,
        s.embedding_model,
        s.embedding_dims,
        s.temperature,
        s.timeout_ms,
        s.max_retries,
        s.confidence_threshold,
        s.weight_self,
        s.weight_logprob,
        s.weight_retrieval,
        s.guardrails,
        s.retrieval_scale
    )
    .fetch_one(&mut *tx)
    .await?;
    let after = load(&mut tx, ctx.tenant_id).await?;
    if before.embedder_identity() != after.embedder_identity() {
        // The vectors in store came from another embedder: compute them again, in the
        // background; search reads only the current model's meanwhile.
        crate::knowledge::schedule_reembedding(&mut tx, ctx.tenant_id, saved).await?;
    }
    ctx.audit(
        &mut tx,
        AuditEvent::new("agent.settings_changed", "agent_settings", ctx.tenant_id)
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    state.policies.invalidate(&ctx.tenant_id.to_string());
    tracing::info!(version = saved, "agent settings changed");
    Ok(Json(after))
}
