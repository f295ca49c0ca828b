//! Single sign-on through OpenID Connect: a tenant names its identity provider (Okta, Entra ID,
//! Google Workspace...), and its members sign in there instead of with a password.
//!
//! The flow is the authorization-code flow with PKCE (S256), a state and a nonce. [`start`]
//! keeps the state's hash, the nonce, the PKCE verifier and a hash of a cookie given to the
//! browser in `oidc_login` (single use, ten minutes) and answers where to send the browser;
//! [`finish`] takes the provider's code back, exchanges it at the token endpoint with the
//! client secret, and checks the ID token: its signature against the provider's JWKS, its
//! issuer, audience, expiry and nonce, then a verified e-mail address of an allowed domain.
//! Every sign-in and every refusal is an audit event (AUD-2).
//!
//! Discovery and the code exchange are two small HTTP requests written here; the ID token's
//! signature and claims are checked by `jsonwebtoken` (on ring, which the TLS stack already
//! builds). The `openidconnect` crate would bring its own HTTP and crypto stacks for the same
//! two requests; this keeps every request to a tenant-named URL on the egress policy's client
//! (`http::egress`, [`Target::IdentityProvider`]), checked before it is sent.
//!
//! A member who has enrolled an authenticator still owes its code after the provider: what the
//! provider asked of them is not known here (`amr` claims are optional and differ between
//! providers), and the platform's own second factor is the one the tenant's policy speaks of.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::future::BoxFuture;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgConnection;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::guard::Ctx;
use super::login::{SignInOutcome, SignedIn};
use super::{member, mfa, password, session, AuthState};
use crate::audit::{AuditEvent, AuditSource};
use crate::error::{Error, Result};
use crate::http::egress::{self, Target};
use crate::http::{RequestMeta, Rfc3339};
use crate::rbac::Role;

/// How long a sign-in may take between the redirect and the provider's return.
pub const LOGIN_SECS: i64 = 600;
/// How long a discovery document and a key set are trusted before they are fetched again (a key
/// set is fetched sooner when a token names a key it does not hold).
const CACHE_FOR: Duration = Duration::from_secs(3600);
/// The most of a provider's answer that is read.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// The signature algorithms an ID token may use: asymmetric ones only, so that nothing signed
/// with the client secret (HS256) or unsigned passes.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What the process keeps for single sign-on: the egress-filtered HTTP client, and the
/// providers' discovery documents and key sets.
pub struct Oidc {
    http: reqwest::Client,
    allow_private: bool,
    discovery: Mutex<HashMap<String, (Instant, Arc<Discovery>)>>,
    keys: Mutex<HashMap<String, (Instant, Arc<JwkSet>)>>,
}

impl Oidc {
    pub fn new(allow_private: bool) -> reqwest::Result<Self> {
        Ok(Oidc {
            http: egress::client_for(allow_private, Target::IdentityProvider)?,
            allow_private,
            discovery: Mutex::default(),
            keys: Mutex::default(),
        })
    }
}

/// The parts of a provider's discovery document the flow uses.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    /// How the client authenticates at the token endpoint; absent means `client_secret_basic`.
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
}

impl Discovery {
    /// Whether the client secret goes in the form rather than HTTP Basic: only for a provider
    /// that says it takes `client_secret_post` and not `client_secret_basic`.
    fn secret_in_form(&self) -> bool {
        let methods = &self.token_endpoint_auth_methods_supported;
        methods.iter().any(|m| m == "client_secret_post")
            && !methods.iter().any(|m| m == "client_secret_basic")
    }
}

/// Who may join through the provider: an unknown address of an allowed domain becomes a member
/// (`just_in_time`), or is refused (`invited_only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = OidcJoinMode)]
pub enum JoinMode {
    JustInTime,
    InvitedOnly,
}

impl JoinMode {
    fn as_str(self) -> &'static str {
        match self {
            JoinMode::JustInTime => "just_in_time",
            JoinMode::InvitedOnly => "invited_only",
        }
    }

    fn parse(raw: &str) -> JoinMode {
        if raw == "just_in_time" {
            JoinMode::JustInTime
        } else {
            JoinMode::InvitedOnly
        }
    }
}

/// The role of a member who joins through the provider. Never owner (owners are made by hand)
/// nor partner (who needs a partner organisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = OidcDefaultRole)]
pub enum JoinRole {
    Admin,
    Agent,
    Reviewer,
    Auditor,
}

impl JoinRole {
    fn role(self) -> Role {
        match self {
            JoinRole::Admin => Role::Admin,
            JoinRole::Agent => Role::Agent,
            JoinRole::Reviewer => Role::Reviewer,
            JoinRole::Auditor => Role::Auditor,
        }
    }

    fn parse(raw: &str) -> JoinRole {
        match raw {
            "admin" => JoinRole::Admin,
            "reviewer" => JoinRole::Reviewer,
            "auditor" => JoinRole::Auditor,
            _ => JoinRole::Agent,
        }
    }
}

/// A tenant's identity provider as the API shows it: the client secret is never answered.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = OidcProvider)]
pub struct ProviderView {
    pub issuer: String,
    pub client_id: String,
    /// Always true: a provider is not saved without its secret, which is never shown.
    pub client_secret_set: bool,
    pub allowed_domains: Vec<String>,
    pub default_role: JoinRole,
    pub join_mode: JoinMode,
    /// Whether members (other than owners) may still sign in with a password.
    pub password_sign_in: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

const DOMAIN: &str = "^([a-z0-9]+(-[a-z0-9]+)*\\.)+[a-z]{2,24}$";

/// A tenant's identity provider, as an administrator sets it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OidcProviderSettings)]
pub struct ProviderSettings {
    /// The provider's issuer identifier, exactly as its ID tokens name it; its discovery
    /// document is at `<issuer>/.well-known/openid-configuration`. The server also takes
    /// http and IP literals when the operator allows private targets (ACTIONS_ALLOW_PRIVATE).
    #[schema(max_length = 500, pattern = "$https_url")]
    pub issuer: String,
    #[schema(min_length = 1, max_length = 255, pattern = "$one_line")]
    pub client_id: String,
    /// Needed the first time; when absent later, the saved secret stays.
    #[schema(value_type = Option<String>, format = Password, min_length = 1, max_length = 1024)]
    pub client_secret: Option<SecretString>,
    /// The e-mail domains (lower case) whose verified addresses may sign in.
    #[schema(schema_with = domains_schema)]
    pub allowed_domains: Vec<String>,
    pub default_role: JoinRole,
    pub join_mode: JoinMode,
    /// Whether members may still sign in with a password (owners always may, so that a broken
    /// provider locks nobody out of the workspace).
    pub password_sign_in: bool,
}

fn domains_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::http::contract::schema(json!({
        "type": "array",
        "minItems": 1,
        "maxItems": 50,
        "items": { "type": "string", "maxLength": 253, "pattern": DOMAIN }
    }))
}

fn invalid(code: &'static str, message: impl Into<String>) -> Error {
    Error::bad_request(code, message)
}

fn domains(raw: &[String]) -> Result<Vec<String>> {
    let pattern = regex::Regex::new(DOMAIN).expect("the domain pattern compiles");
    let mut out: Vec<String> = Vec::new();
    for domain in raw {
        let domain = domain.trim().to_ascii_lowercase();
        if domain.len() > 253 || !pattern.is_match(&domain) {
            return Err(invalid(
                "invalid_domain",
                format!("{domain:?} is not an e-mail domain such as example.com"),
            ));
        }
        if !out.contains(&domain) {
            out.push(domain);
        }
    }
    if out.is_empty() || out.len() > 50 {
        return Err(invalid(
            "invalid_domain",
            "name 1 to 50 e-mail domains whose members may sign in",
        ));
    }
    Ok(out)
}

/// Checks a URL of the provider (its issuer, or an endpoint its discovery names) against the
/// egress policy: https to a public host, unless the operator allows private targets (then
/// http and private addresses too, for a provider inside the operator's network).
fn check_url(oidc: &Oidc, raw: &str) -> std::result::Result<(), String> {
    egress::check_target(raw, oidc.allow_private, Target::IdentityProvider)
        .map_err(String::from)?;
    if !oidc.allow_private && !raw.starts_with("https://") {
        return Err("the identity provider must be reached over https".into());
    }
    Ok(())
}

fn secret_context(tenant_id: Uuid) -> String {
    format!("oidc_provider:{tenant_id}")
}

struct ProviderRow {
    issuer: String,
    client_id: String,
    sealed_client_secret: Vec<u8>,
    allowed_domains: Vec<String>,
    default_role: String,
    join_mode: String,
    password_sign_in: bool,
    updated_at: OffsetDateTime,
}

impl ProviderRow {
    fn view(&self) -> ProviderView {
        ProviderView {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret_set: true,
            allowed_domains: self.allowed_domains.clone(),
            default_role: JoinRole::parse(&self.default_role),
            join_mode: JoinMode::parse(&self.join_mode),
            password_sign_in: self.password_sign_in,
            updated_at: self.updated_at,
        }
    }
}

async fn provider(conn: &mut PgConnection, tenant_id: Uuid) -> Result<Option<ProviderRow>> {
    Ok(sqlx::query_as!(
        ProviderRow,
        "SELECT issuer, client_id, sealed_client_secret, allowed_domains, default_role,
                join_mode, password_sign_in, updated_at
         FROM oidc_provider WHERE tenant_id = $1",
        tenant_id
    )
    .fetch_optional(conn)
    .await?)
}

/// The caller tenant's provider; none set answers 404.
pub async fn show(state: &AuthState, ctx: &Ctx) -> Result<ProviderView> {
    let mut tx = ctx.begin(state).await?;
    let found = provider(&mut tx, ctx.tenant_id).await?;
    tx.commit().await?;
    found.map(|p| p.view()).ok_or(Error::NotFound)
}

/// Sets the caller tenant's provider (audited, without the secret).
pub async fn save(
    state: &AuthState,
    ctx: &Ctx,
    settings: ProviderSettings,
) -> Result<ProviderView> {
    let issuer = settings.issuer.trim().to_string();
    if issuer.len() > 500 {
        return Err(invalid("invalid_issuer", "the issuer URL is too long"));
    }
    check_url(&state.oidc, &issuer).map_err(|m| invalid("invalid_issuer", m))?;
    let client_id = settings.client_id.trim().to_string();
    if client_id.is_empty() || client_id.len() > 255 || client_id.chars().any(char::is_control) {
        return Err(invalid(
            "invalid_client_id",
            "the client id must be 1 to 255 characters on one line",
        ));
    }
    let allowed_domains = domains(&settings.allowed_domains)?;
    let secret = match &settings.client_secret {
        Some(s) if s.expose_secret().is_empty() || s.expose_secret().len() > 1024 => {
            return Err(invalid(
                "invalid_client_secret",
                "the client secret must be 1 to 1024 characters",
            ))
        }
        Some(s) => Some(
            state
                .sealer
                .seal(s.expose_secret().as_bytes(), &secret_context(ctx.tenant_id)),
        ),
        None => None,
    };

    let mut tx = ctx.begin(state).await?;
    let before = provider(&mut tx, ctx.tenant_id).await?;
    let sealed = match (secret, &before) {
        (Some(sealed), _) => sealed,
        (None, Some(before)) => before.sealed_client_secret.clone(),
        (None, None) => {
            return Err(Error::conflict(
                "client_secret_required",
                "the workspace has no identity provider yet: send its client_secret",
            ))
        }
    };
    let saved = sqlx::query_as!(
        ProviderRow,
        "INSERT INTO oidc_provider (tenant_id, issuer, client_id, sealed_client_secret,
                                    allowed_domains, default_role, join_mode, password_sign_in)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (tenant_id) DO UPDATE SET
             issuer = EXCLUDED.issuer, client_id = EXCLUDED.client_id,
             sealed_client_secret = EXCLUDED.sealed_client_secret,
             allowed_domains = EXCLUDED.allowed_domains, default_role = EXCLUDED.default_role,
             join_mode = EXCLUDED.join_mode, password_sign_in = EXCLUDED.password_sign_in,
             updated_at = now()
         RETURNING issuer, client_id, sealed_client_secret, allowed_domains, default_role,
                   join_mode, password_sign_in, updated_at",
        ctx.tenant_id,
        issuer,
        client_id,
        sealed,
        &allowed_domains,
        settings.default_role.role().as_str(),
        settings.join_mode.as_str(),
        settings.password_sign_in
    )
    .fetch_one(&mut *tx)
    .await?;
    let view = saved.view();
    let mut event = AuditEvent::new("auth.sso.configured", "tenant", ctx.tenant_id).after(json!({
        "view": view,
        "client_secret_changed": settings.client_secret.is_some(),
    }));
    if let Some(before) = before {
        event = event.before(before.view());
    }
    ctx.audit(&mut tx, event).await?;
    tx.commit().await?;
    Ok(view)
}

/// Removes the caller tenant's provider: members sign in with passwords again.
pub async fn remove(state: &AuthState, ctx: &Ctx) -> Result<()> {
    let mut tx = ctx.begin(state).await?;
    let before = provider(&mut tx, ctx.tenant_id)
        .await?
        .ok_or(Error::NotFound)?;
    sqlx::query!(
        "DELETE FROM oidc_provider WHERE tenant_id = $1",
        ctx.tenant_id
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("DELETE FROM oidc_login WHERE tenant_id = $1", ctx.tenant_id)
        .execute(&mut *tx)
        .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("auth.sso.removed", "tenant", ctx.tenant_id).before(before.view()),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Whether the member may sign in with a password: yes, unless the tenant's provider says
/// otherwise; owners always may (the way back in when the provider fails).
pub async fn password_allowed(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    member_id: Uuid,
) -> Result<bool> {
    let allowed = sqlx::query_scalar!(
        r#"SELECT (m.role = 'owner' OR coalesce(p.password_sign_in, true)) AS "allowed!"
           FROM member m
           LEFT JOIN oidc_provider p ON p.tenant_id = m.tenant_id
           WHERE m.tenant_id = $1 AND m.id = $2"#,
        tenant_id,
        member_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(allowed.unwrap_or(true))
}

fn unavailable(message: impl Into<String>) -> Error {
    Error::Upstream {
        code: "sso_provider_unavailable",
        message: message.into(),
    }
}

/// GETs a JSON document of the provider, through the egress policy.
async fn fetch_json<T: serde::de::DeserializeOwned>(oidc: &Oidc, url: &str) -> Result<T> {
    check_url(oidc, url).map_err(|m| unavailable(format!("{url}: {m}")))?;
    let response = oidc
        .http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| unavailable(format!("the identity provider did not answer: {e}")))?;
    if !response.status().is_success() {
        return Err(unavailable(format!(
            "the identity provider answered {} for {url}",
            response.status()
        )));
    }
    let body = read_capped(response).await?;
    serde_json::from_slice(&body)
        .map_err(|e| unavailable(format!("the identity provider's {url} is not usable: {e}")))
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unavailable(format!("the identity provider's answer broke off: {e}")))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER_BYTES {
            return Err(unavailable("the identity provider's answer is too large"));
        }
    }
    Ok(body)
}

fn cached<T>(map: &Mutex<HashMap<String, (Instant, Arc<T>)>>, key: &str) -> Option<Arc<T>> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.get(key)
        .filter(|(at, _)| at.elapsed() < CACHE_FOR)
        .map(|(_, value)| value.clone())
}

fn remember<T>(map: &Mutex<HashMap<String, (Instant, Arc<T>)>>, key: &str, value: Arc<T>) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    // A process serves few providers; the bound only keeps a flood of configurations at bay.
    if map.len() > 10_000 {
        map.clear();
    }
    map.insert(key.to_string(), (Instant::now(), value));
}

/// The provider's discovery document (cached), which must name the configured issuer and only
/// endpoints the egress policy allows.
async fn discover(oidc: &Oidc, issuer: &str) -> Result<Arc<Discovery>> {
    if let Some(found) = cached(&oidc.discovery, issuer) {
        return Ok(found);
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let document: Discovery = fetch_json(oidc, &url).await?;
    if document.issuer != issuer {
        return Err(unavailable(format!(
            "the discovery document names the issuer {:?}, not {issuer:?}",
            document.issuer
        )));
    }
    for endpoint in [
        &document.authorization_endpoint,
        &document.token_endpoint,
        &document.jwks_uri,
    ] {
        check_url(oidc, endpoint).map_err(|m| unavailable(format!("{endpoint}: {m}")))?;
    }
    let document = Arc::new(document);
    remember(&oidc.discovery, issuer, document.clone());
    Ok(document)
}

/// The provider's signing keys: from the cache, unless `refresh` (a token named a key the
/// cached set lacks; the provider has rotated its keys).
async fn key_set(oidc: &Oidc, jwks_uri: &str, refresh: bool) -> Result<Arc<JwkSet>> {
    if !refresh {
        if let Some(found) = cached(&oidc.keys, jwks_uri) {
            return Ok(found);
        }
    }
    let keys: JwkSet = fetch_json(oidc, jwks_uri).await?;
    let keys = Arc::new(keys);
    remember(&oidc.keys, jwks_uri, keys.clone());
    Ok(keys)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random_token() -> String {
    b64(&super::token::random_bytes())
}

/// Where to send the browser, and the cookie that ties the sign-in to it.
pub struct Started {
    pub location: String,
    /// The value of the browser's sign-in cookie; only its hash is kept.
    pub browser: String,
}

/// Starts a sign-in at the provider of the tenant `slug`: an unknown tenant, or one without a
/// provider, answers 404 alike. `redirect_uri` is this server's callback as the browser reaches
/// it (registered with the provider).
pub async fn start(
    state: &AuthState,
    meta: &RequestMeta,
    slug: &str,
    redirect_uri: &str,
) -> Result<Started> {
    // Each start keeps a row: an address may not pile them up.
    state.throttle.check_ip(meta.ip)?;
    let found = sqlx::query!(
        "SELECT p.tenant_id, p.issuer, p.client_id
         FROM oidc_provider p JOIN tenant t ON t.id = p.tenant_id
         WHERE t.slug = $1",
        slug.trim()
    )
    .fetch_optional(&state.db.system)
    .await?
    .ok_or(Error::NotFound)?;
    let discovery = discover(&state.oidc, &found.issuer).await?;

    let login_state = random_token();
    let nonce = random_token();
    let verifier = random_token();
    let browser = random_token();
    let challenge = b64(&super::token::sha256(verifier.as_bytes()));

    let mut tx = state.db.tenant_tx(found.tenant_id).await?;
    // Finished and abandoned sign-ins go once they can no longer tell a replay from nothing.
    sqlx::query!(
        "DELETE FROM oidc_login WHERE tenant_id = $1 AND expires_at < now() - interval '1 day'",
        found.tenant_id
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO oidc_login (id, tenant_id, state_hash, browser_hash, nonce, pkce_verifier,
                                 redirect_uri, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))",
        Uuid::now_v7(),
        found.tenant_id,
        super::token::sha256(login_state.as_bytes()),
        super::token::sha256(browser.as_bytes()),
        nonce,
        verifier,
        redirect_uri,
        LOGIN_SECS as f64
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let mut location = reqwest::Url::parse(&discovery.authorization_endpoint).map_err(|e| {
        unavailable(format!(
            "the provider's authorization endpoint is not a URL: {e}"
        ))
    })?;
    location
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &found.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "openid email profile")
        .append_pair("state", &login_state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    Ok(Started {
        location: location.into(),
        browser,
    })
}

/// The provider's return to the callback.
pub struct Callback<'a> {
    pub code: &'a str,
    pub state: &'a str,
    /// The sign-in cookie of the browser that came back.
    pub browser: Option<&'a str>,
}

/// A member who joins through the provider, for the domain that creates members.
pub struct NewMember {
    pub email: String,
    pub display_name: String,
    pub role: Role,
    /// A hash of a random password nobody knows: such a member signs in through the provider.
    pub password_hash: String,
}

/// Creates a member in the tenant the connection is pinned to and answers their id. Members
/// belong to the domain above this one, which hands this in.
pub type Join = for<'c> fn(&'c mut PgConnection, &'c NewMember) -> BoxFuture<'c, Result<Uuid>>;

/// Why a sign-in through the provider was refused: the audit event's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    StateUnknown,
    StateReplayed,
    StateExpired,
    OtherBrowser,
    NotConfigured,
    CodeRejected,
    Malformed,
    UnsupportedAlgorithm,
    UnknownKey,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    Expired,
    WrongNonce,
    EmailUnverified,
    DomainNotAllowed,
    NotAMember,
    MemberDisabled,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::StateUnknown => "state_unknown",
            Refusal::StateReplayed => "state_replayed",
            Refusal::StateExpired => "state_expired",
            Refusal::OtherBrowser => "other_browser",
            Refusal::NotConfigured => "not_configured",
            Refusal::CodeRejected => "code_rejected",
            Refusal::Malformed => "malformed_token",
            Refusal::UnsupportedAlgorithm => "unsupported_algorithm",
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::Expired => "expired_token",
            Refusal::WrongNonce => "wrong_nonce",
            Refusal::EmailUnverified => "email_unverified",
            Refusal::DomainNotAllowed => "domain_not_allowed",
            Refusal::NotAMember => "not_a_member",
            Refusal::MemberDisabled => "member_disabled",
        }
    }

    /// What the person is told: enough to act on, nothing an attacker learns from.
    fn message(self) -> &'static str {
        match self {
            Refusal::StateUnknown | Refusal::StateExpired | Refusal::StateReplayed => {
                "this sign-in has expired or was already used: start again"
            }
            Refusal::OtherBrowser => "this sign-in was started in another browser: start again",
            Refusal::NotConfigured => {
                "this workspace no longer signs in through an identity provider"
            }
            Refusal::EmailUnverified => {
                "your identity provider has not verified your e-mail address"
            }
            Refusal::DomainNotAllowed => {
                "your e-mail address is not of a domain this workspace accepts"
            }
            Refusal::NotAMember | Refusal::MemberDisabled => {
                "your account is not a member of this workspace: ask an administrator to invite you"
            }
            _ => "the identity provider's answer could not be verified: start again",
        }
    }

    fn error(self) -> Error {
        Error::Unauthenticated {
            code: "sso_refused",
            message: self.message().into(),
        }
    }
}

/// The claims of an ID token this sign-in reads.
#[derive(Debug, Deserialize)]
pub struct IdClaims {
    pub sub: String,
    #[serde(default)]
    pub email: Option<String>,
    /// A boolean, or the string "true" as some providers send it.
    #[serde(default)]
    pub email_verified: Option<Value>,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub azp: Option<String>,
}

impl IdClaims {
    fn email_verified(&self) -> bool {
        match &self.email_verified {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        }
    }
}

/// Checks an ID token against the provider's keys: an asymmetric signature by the key it names,
/// then issuer, audience (the client id), expiry (a minute's leeway for clocks) and nonce.
pub fn verify_id_token(
    token: &str,
    keys: &JwkSet,
    issuer: &str,
    client_id: &str,
    nonce: &str,
) -> std::result::Result<IdClaims, Refusal> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(Refusal::UnsupportedAlgorithm);
    }
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        // A provider with a single key may leave the id out.
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or(Refusal::UnknownKey)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| Refusal::UnknownKey)?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let claims = jsonwebtoken::decode::<IdClaims>(token, &key, &validation)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature => Refusal::BadSignature,
                ErrorKind::InvalidAlgorithm => Refusal::UnsupportedAlgorithm,
                ErrorKind::ExpiredSignature => Refusal::Expired,
                ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
                ErrorKind::InvalidAudience => Refusal::WrongAudience,
                _ => Refusal::Malformed,
            }
        })?
        .claims;
    // A token for several audiences must have been issued to this client.
    if claims.azp.as_deref().is_some_and(|azp| azp != client_id) {
        return Err(Refusal::WrongAudience);
    }
    let nonce_matches = claims
        .nonce
        .as_deref()
        .is_some_and(|n| bool::from(n.as_bytes().ct_eq(nonce.as_bytes())));
    if !nonce_matches {
        return Err(Refusal::WrongNonce);
    }
    Ok(claims)
}

/// Records a refused sign-in in the tenant's audit log (AUD-2) and answers its error.
async fn refuse(
    state: &AuthState,
    meta: &RequestMeta,
    tenant_id: Uuid,
    refusal: Refusal,
    member_id: Option<Uuid>,
    email: Option<&str>,
) -> Result<Error> {
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    crate::audit::record(
        &mut tx,
        &AuditSource::anonymous(tenant_id, meta),
        AuditEvent {
            action: "auth.login.failed",
            entity_type: "member",
            entity_id: member_id.map(|id| id.to_string()),
            before: None,
            after: Some(json!({ "method": "sso", "reason": refusal.as_str(), "email": email })),
            execution_id: None,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(%tenant_id, reason = refusal.as_str(), "single sign-on refused");
    Ok(refusal.error())
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

/// Exchanges the code at the token endpoint with the client secret (HTTP Basic, RFC 6749
/// section 2.3.1) and the PKCE verifier. A provider that refuses the code is a refusal; one
/// that cannot be asked is unavailable.
async fn exchange(
    oidc: &Oidc,
    discovery: &Discovery,
    client_id: &str,
    client_secret: &SecretString,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<std::result::Result<String, Refusal>> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
        ("client_id", client_id),
    ];
    let request = oidc.http.post(&discovery.token_endpoint);
    let request = if discovery.secret_in_form() {
        form.push(("client_secret", client_secret.expose_secret()));
        request
    } else {
        request.basic_auth(
            form_urlencoded(client_id),
            Some(form_urlencoded(client_secret.expose_secret())),
        )
    };
    let response = request
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form)
        .send()
        .await
        .map_err(|e| unavailable(format!("the identity provider did not answer: {e}")))?;
    let status = response.status();
    if status.is_client_error() {
        return Ok(Err(Refusal::CodeRejected));
    }
    if !status.is_success() {
        return Err(unavailable(format!(
            "the identity provider's token endpoint answered {status}"
        )));
    }
    let body = read_capped(response).await?;
    let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
        unavailable(format!(
            "the identity provider's token answer is not usable: {e}"
        ))
    })?;
    Ok(answer.id_token.ok_or(Refusal::Malformed))
}

fn form_urlencoded(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

/// Completes a sign-in on the provider's return: the state must be live, unused and this
/// browser's; the code is exchanged and its ID token checked; the verified address of an
/// allowed domain must belong to an active member, or become one when the tenant lets members
/// join just in time. Answers a session, or the second step for a member with an authenticator.
pub async fn finish(
    state: &AuthState,
    meta: &RequestMeta,
    callback: Callback<'_>,
    join: Join,
) -> Result<SignInOutcome> {
    let state_hash = super::token::sha256(callback.state.trim().as_bytes());
    let Some(login) = sqlx::query!(
        "SELECT id, tenant_id, browser_hash, nonce, pkce_verifier, redirect_uri
         FROM oidc_login WHERE state_hash = $1",
        state_hash
    )
    .fetch_optional(&state.db.system)
    .await?
    else {
        // No tenant to record it for: the log says it.
        tracing::info!(reason = "state_unknown", "single sign-on refused");
        return Err(Refusal::StateUnknown.error());
    };
    let tenant_id = login.tenant_id;

    // Spent now, whatever follows: a state works once.
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let claimed = sqlx::query!(
        r#"UPDATE oidc_login SET used_at = now()
           WHERE id = $1 AND tenant_id = $2 AND used_at IS NULL AND expires_at > now()
           RETURNING id"#,
        login.id,
        tenant_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let expired = if claimed.is_none() {
        sqlx::query_scalar!(
            r#"SELECT (used_at IS NULL) AS "unused!" FROM oidc_login WHERE id = $1"#,
            login.id
        )
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or(false)
    } else {
        false
    };
    tx.commit().await?;
    if claimed.is_none() {
        let refusal = if expired {
            Refusal::StateExpired
        } else {
            Refusal::StateReplayed
        };
        return Err(refuse(state, meta, tenant_id, refusal, None, None).await?);
    }
    let same_browser = callback
        .browser
        .is_some_and(|b| bool::from(super::token::sha256(b.as_bytes()).ct_eq(&login.browser_hash)));
    if !same_browser {
        return Err(refuse(state, meta, tenant_id, Refusal::OtherBrowser, None, None).await?);
    }

    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let provider = provider(&mut tx, tenant_id).await?;
    tx.commit().await?;
    let Some(provider) = provider else {
        return Err(refuse(state, meta, tenant_id, Refusal::NotConfigured, None, None).await?);
    };
    let client_secret = state
        .sealer
        .open(&provider.sealed_client_secret, &secret_context(tenant_id))
        .map_err(|e| Error::Internal(anyhow::anyhow!("the SSO client secret: {e}")))
        .and_then(|plain| {
            String::from_utf8(plain)
                .map_err(|_| Error::Internal(anyhow::anyhow!("the SSO client secret is not text")))
        })
        .map(SecretString::from)?;

    let discovery = discover(&state.oidc, &provider.issuer).await?;
    let id_token = match exchange(
        &state.oidc,
        &discovery,
        &provider.client_id,
        &client_secret,
        callback.code,
        &login.pkce_verifier,
        &login.redirect_uri,
    )
    .await?
    {
        Ok(token) => token,
        Err(refusal) => return Err(refuse(state, meta, tenant_id, refusal, None, None).await?),
    };
    let keys = key_set(&state.oidc, &discovery.jwks_uri, false).await?;
    let verified = match verify_id_token(
        &id_token,
        &keys,
        &provider.issuer,
        &provider.client_id,
        &login.nonce,
    ) {
        Err(Refusal::UnknownKey) => {
            let keys = key_set(&state.oidc, &discovery.jwks_uri, true).await?;
            verify_id_token(
                &id_token,
                &keys,
                &provider.issuer,
                &provider.client_id,
                &login.nonce,
            )
        }
        other => other,
    };
    let claims = match verified {
        Ok(claims) => claims,
        Err(refusal) => return Err(refuse(state, meta, tenant_id, refusal, None, None).await?),
    };

    let email = claims
        .email
        .as_deref()
        .unwrap_or_default()
        .trim()
        .to_string();
    if email.is_empty() || !claims.email_verified() {
        let shown = (!email.is_empty()).then_some(email.as_str());
        return Err(refuse(
            state,
            meta,
            tenant_id,
            Refusal::EmailUnverified,
            None,
            shown,
        )
        .await?);
    }
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    if !provider.allowed_domains.contains(&domain) {
        return Err(refuse(
            state,
            meta,
            tenant_id,
            Refusal::DomainNotAllowed,
            None,
            Some(&email),
        )
        .await?);
    }

    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let existing = sqlx::query!(
        "SELECT id, status FROM member WHERE tenant_id = $1 AND lower(email) = lower($2)",
        tenant_id,
        email
    )
    .fetch_optional(&mut *tx)
    .await?;
    let source_anonymous = AuditSource::anonymous(tenant_id, meta);
    let member_id = match existing {
        Some(m) if m.status == "active" => m.id,
        Some(m) => {
            drop(tx);
            return Err(refuse(
                state,
                meta,
                tenant_id,
                Refusal::MemberDisabled,
                Some(m.id),
                Some(&email),
            )
            .await?);
        }
        None if JoinMode::parse(&provider.join_mode) == JoinMode::InvitedOnly => {
            drop(tx);
            return Err(refuse(
                state,
                meta,
                tenant_id,
                Refusal::NotAMember,
                None,
                Some(&email),
            )
            .await?);
        }
        None => {
            let role = JoinRole::parse(&provider.default_role).role();
            let display_name = claims
                .name
                .as_deref()
                .map(str::trim)
                .filter(|n| {
                    !n.is_empty() && n.chars().count() <= 100 && !n.chars().any(char::is_control)
                })
                .unwrap_or_else(|| email.split('@').next().unwrap_or("member"))
                .to_string();
            let password_hash = password::hash(SecretString::from(random_token())).await?;
            let new = NewMember {
                email: email.clone(),
                display_name,
                role,
                password_hash,
            };
            let member_id = join(&mut tx, &new).await?;
            crate::audit::record(
                &mut tx,
                &source_anonymous,
                AuditEvent::new("auth.sso.member_joined", "member", member_id).after(json!({
                    "email": email,
                    "display_name": new.display_name,
                    "role": role.as_str(),
                    "subject": claims.sub,
                })),
            )
            .await?;
            member_id
        }
    };

    let source = AuditSource::member(tenant_id, member_id, meta);
    if mfa::enabled(&mut tx, tenant_id, member_id).await? {
        let challenge = mfa::open_challenge(&mut tx, tenant_id, member_id).await?;
        crate::audit::record(
            &mut tx,
            &source,
            AuditEvent::new("auth.login.code_owed", "member", member_id).after(json!({
                "method": "sso",
                "expires_at": challenge.expires_at.rfc3339(),
            })),
        )
        .await?;
        tx.commit().await?;
        return Ok(SignInOutcome::CodeOwed(challenge));
    }
    let new = session::create(&mut tx, state, tenant_id, member_id, meta).await?;
    crate::audit::record(
        &mut tx,
        &source,
        AuditEvent::new("auth.login.succeeded", "session", new.id).after(json!({
            "member_id": member_id,
            "expires_at": new.expires_at.rfc3339(),
            "method": "sso",
            "subject": claims.sub,
        })),
    )
    .await?;
    let member = member::fetch(&mut tx, member_id).await?;
    tx.commit().await?;
    Ok(SignInOutcome::SignedIn(SignedIn {
        session: new,
        member,
        tenant_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_trimmed_lower_cased_and_deduplicated() {
        let got = domains(&[" Example.COM ".into(), "example.com".into(), "b.io".into()]).unwrap();
        assert_eq!(got, vec!["example.com".to_string(), "b.io".to_string()]);
        for bad in [
            vec![],
            vec!["not a domain".to_string()],
            vec!["@x.com".into()],
        ] {
            assert!(domains(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_token_signed_with_the_client_secret_is_refused_before_any_key_is_looked_up() {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &json!({ "sub": "x", "exp": 9_999_999_999u64 }),
            &jsonwebtoken::EncodingKey::from_secret(b"the client secret"),
        )
        .unwrap();
        let keys = JwkSet { keys: vec![] };
        assert_eq!(
            verify_id_token(&token, &keys, "https://id.example", "c", "n").unwrap_err(),
            Refusal::UnsupportedAlgorithm
        );
    }

    #[test]
    fn credentials_are_form_encoded_for_basic_auth() {
        assert_eq!(form_urlencoded("a b:c/d"), "a+b%3Ac%2Fd");
    }
}
