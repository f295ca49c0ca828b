//! Channels: the inboxes customers write to. A WhatsApp inbox is one business number; a web
//! chat inbox is one embeddable widget. Channel secrets are sealed with AES-256-GCM before they
//! reach the database, bound to their inbox, and never returned, logged or audited (SEC-10).

pub mod jobs;
pub mod webchat;
pub mod whatsapp;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::guard::Throttle;
use crate::auth::Ctx;
use crate::config::Config;
use crate::conversations::Channel;
use crate::crypto::{secret_string, Sealer};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::events;
use crate::http::{Access, Api, Contract, Json, Path};
use crate::rbac::Permission;
use utoipa::ToSchema;
use whatsapp::writer::WebhookWriter;
use whatsapp::{BusinessNumber, ConfirmError, GraphClient};

/// What the channels need of the process; cheap to clone. The Graph API client, the inbox
/// cache and the webhook writer are the channels' own; the rest is shared with the other
/// domains (`app.rs` builds the state once and hands the channels their parts).
#[derive(Clone)]
pub struct ChannelsState {
    pub config: Arc<Config>,
    pub db: Db,
    /// Seals the inboxes' secrets at rest (SEC-10).
    pub sealer: Arc<Sealer>,
    /// Web chat sessions per client address, and messages per session.
    pub throttle: Arc<Throttle>,
    /// Sends the notifications of the hot inbound paths after their commits.
    pub notifier: Arc<events::Notifier>,
    /// The web chat visitors' live streams.
    pub live: events::Live,
    /// The WhatsApp Cloud API, at its configured base URL.
    pub graph: Arc<GraphClient>,
    /// Inbox rows as the channel endpoints read them on every inbound request.
    pub endpoints: Arc<EndpointCache>,
    /// Stores verified WhatsApp deliveries, many to a transaction under load.
    pub webhooks: Arc<WebhookWriter>,
}

impl ChannelsState {
    /// The channels' state over the process's shared parts, with their own made here.
    pub fn new(
        config: Arc<Config>,
        db: Db,
        sealer: Arc<Sealer>,
        throttle: Arc<Throttle>,
        notifier: Arc<events::Notifier>,
        live: events::Live,
    ) -> anyhow::Result<Self> {
        let wa = &config.whatsapp;
        let graph = GraphClient::new(&wa.graph_base_url, &wa.graph_version, wa.timeout)?;
        let webhooks = WebhookWriter::new(db.clone(), notifier.clone());
        Ok(ChannelsState {
            graph: Arc::new(graph),
            endpoints: Arc::default(),
            webhooks: Arc::new(webhooks),
            config,
            db,
            sealer,
            throttle,
            notifier,
            live,
        })
    }
}

impl AsRef<Db> for ChannelsState {
    fn as_ref(&self) -> &Db {
        &self.db
    }
}

/// The job kinds the channels run.
pub fn register<S>(jobs: &mut crate::queue::Handlers<S>)
where
    ChannelsState: FromRef<S>,
{
    jobs.register(crate::conversations::SEND_MESSAGE, |state, job| {
        let state = ChannelsState::from_ref(state);
        Box::pin(async move { whatsapp::send::run(&state, job).await })
    });
}

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    ChannelsState: FromRef<S>,
{
    use Access::*;
    let api = api
        .endpoint(
            Method::GET,
            "/api/v1/inboxes",
            Requires(Permission::ConversationsRead),
            ("channels", "List inboxes"),
            Contract::new().ok_list::<InboxView>(),
            list,
        )
        .endpoint(
            Method::POST,
            "/api/v1/inboxes",
            Requires(Permission::ChannelsManage),
            ("channels", "Create a WhatsApp or web chat inbox"),
            written(Contract::new().body::<NewInbox>().created::<InboxView>()),
            create,
        )
        .endpoint(
            Method::GET,
            "/api/v1/inboxes/{inbox_id}",
            Requires(Permission::ConversationsRead),
            ("channels", "Show an inbox (never its secrets)"),
            Contract::new().ok::<InboxView>(),
            show,
        )
        .endpoint(
            Method::PATCH,
            "/api/v1/inboxes/{inbox_id}",
            Requires(Permission::ChannelsManage),
            ("channels", "Update an inbox or rotate its secrets"),
            written(Contract::new().body::<InboxChanges>().ok::<InboxView>())
                .error(StatusCode::CONFLICT, "inbox_changed")
                // Verified visitors required, with no identity secret left to verify them.
                .error(StatusCode::CONFLICT, "identity_secret_required"),
            update,
        )
        .endpoint(
            Method::DELETE,
            "/api/v1/inboxes/{inbox_id}",
            Requires(Permission::ChannelsManage),
            ("channels", "Delete an inbox and its conversations"),
            Contract::new()
                .no_content()
                .error(StatusCode::CONFLICT, "legal_hold"),
            delete,
        );
    webchat::routes(whatsapp::webhook::routes(api))
}

/// The refusals of an inbox's fields, for creating and changing one alike.
fn written(contract: Contract) -> Contract {
    contract
        .error(StatusCode::BAD_REQUEST, "missing_field")
        .error(StatusCode::BAD_REQUEST, "invalid_field")
        .error(StatusCode::BAD_REQUEST, "name_too_long")
        .error(StatusCode::BAD_REQUEST, "invalid_origin")
        // Meta did not confirm that the access token may use the number.
        .error(StatusCode::BAD_REQUEST, "whatsapp_not_verified")
        .error(StatusCode::BAD_REQUEST, "invalid_access_token")
        .error(StatusCode::CONFLICT, "phone_number_in_use")
        // Meta could not be asked; nothing was saved.
        .error(StatusCode::BAD_GATEWAY, "whatsapp_unreachable")
}

/// Whether a free-form message (not a WhatsApp template) may go to a customer on `channel`
/// now, who last wrote at `last_inbound_at`: on WhatsApp only inside its service window, on
/// the web chat always. The members' replies are checked with it (handed down to
/// `conversations` by `app.rs`), the send job with the window itself when the message is
/// about to go.
pub fn free_form_open(
    channel: crate::conversations::Channel,
    last_inbound_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> bool {
    channel != crate::conversations::Channel::Whatsapp
        || whatsapp::window::is_open(last_inbound_at, now)
}

/// What a WhatsApp inbox needs to receive and send.
#[derive(Serialize, Deserialize)]
pub struct WhatsAppSecrets {
    #[serde(with = "secret_string")]
    pub verify_token: SecretString,
    #[serde(with = "secret_string")]
    pub app_secret: SecretString,
    #[serde(with = "secret_string")]
    pub access_token: SecretString,
}

/// Web chat: the key of the optional identity verification (HMAC of the tenant's user id).
#[derive(Serialize, Deserialize, Default)]
pub struct WebchatSecrets {
    #[serde(default, with = "optional_secret")]
    pub identity_secret: Option<SecretString>,
}

mod optional_secret {
    use secrecy::{ExposeSecret, SecretString};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(secret) => s.serialize_some(secret.expose_secret()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(SecretString::from))
    }
}

/// The AAD a channel's sealed secrets are bound to.
pub fn seal_context(inbox_id: Uuid) -> String {
    format!("inbox:{inbox_id}")
}

/// An inbox, never with its secrets.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Inbox)]
pub struct InboxView {
    pub id: Uuid,
    pub name: String,
    #[schema(value_type = Channel)]
    pub channel: String,
    /// The channel's settings: a WhatsApp number's, or a web chat's.
    #[schema(value_type = InboxSettings)]
    pub settings: Value,
    /// Whether secrets are configured, never their values.
    pub secrets_configured: bool,
    /// Where Meta delivers a WhatsApp inbox's webhooks; `null` for a web chat.
    #[schema(required = true)]
    pub webhook_path: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

struct InboxRow {
    id: Uuid,
    name: String,
    channel: String,
    settings: Value,
    secrets: Option<Vec<u8>>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl From<InboxRow> for InboxView {
    fn from(row: InboxRow) -> Self {
        InboxView {
            webhook_path: (row.channel == "whatsapp")
                .then(|| format!("/webhooks/whatsapp/{}", row.id)),
            id: row.id,
            name: row.name,
            channel: row.channel,
            settings: row.settings,
            secrets_configured: row.secrets.is_some(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

async fn fetch_row(conn: &mut PgConnection, id: Uuid) -> Result<InboxRow> {
    sqlx::query_as!(
        InboxRow,
        "SELECT id, name, channel, settings, secrets, created_at, updated_at
         FROM inbox WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

pub async fn fetch(conn: &mut PgConnection, id: Uuid) -> Result<InboxView> {
    Ok(fetch_row(conn, id).await?.into())
}

/// An inbox as a channel endpoint sees it, before any tenant is known: looked up by id through
/// the owner pool, the tenant then taken from the row.
pub struct ChannelEndpoint {
    pub inbox_id: Uuid,
    pub tenant_id: Uuid,
    pub channel: String,
    pub settings: Value,
    pub secrets: Option<Vec<u8>>,
}

/// How long an inbox row read by a channel endpoint is reused. A change to the inbox drops it
/// at once in every process (see [`EndpointCache::forget`]); this bounds how long a lost
/// notification could leave a process on the old settings.
const ENDPOINT_TTL: Duration = Duration::from_secs(10);
/// Unknown ids are never cached, so the map only holds real inboxes; past this many it starts
/// over rather than grow.
const ENDPOINT_CACHE_MAX: usize = 10_000;

/// Inbox rows as channel endpoints read them on every inbound request (each webhook and chat
/// message), so the hot path does not go to the database for a row that rarely changes.
pub struct EndpointCache {
    entries: Mutex<HashMap<Uuid, (Instant, Arc<ChannelEndpoint>)>>,
    /// A tenant's WhatsApp phone-number ids and the inbox serving each, for deliveries that
    /// name another number than their URL's inbox.
    numbers: Mutex<HashMap<(Uuid, String), (Instant, Uuid)>>,
    ttl: Duration,
}

impl Default for EndpointCache {
    fn default() -> Self {
        Self::with_ttl(ENDPOINT_TTL)
    }
}

impl EndpointCache {
    /// A cache that keeps rows for `ttl` unless told of a change sooner.
    pub fn with_ttl(ttl: Duration) -> Self {
        EndpointCache {
            entries: Mutex::default(),
            numbers: Mutex::default(),
            ttl,
        }
    }

    /// The inbox with this id, from the cache while fresh, otherwise from the database.
    pub async fn get(
        &self,
        system: &PgPool,
        inbox_id: Uuid,
    ) -> Result<Option<Arc<ChannelEndpoint>>> {
        if let Some(endpoint) = self.fresh(inbox_id) {
            return Ok(Some(endpoint));
        }
        let Some(endpoint) = ChannelEndpoint::load(system, inbox_id).await? else {
            return Ok(None);
        };
        let endpoint = Arc::new(endpoint);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= ENDPOINT_CACHE_MAX {
            entries.clear();
        }
        entries.insert(inbox_id, (Instant::now(), endpoint.clone()));
        Ok(Some(endpoint))
    }

    /// The tenant's WhatsApp inbox serving this phone-number id, if any. A number is unique
    /// only within a tenant (other tenants may hold the same id, and only Meta knows whose
    /// it really is), so there is no platform-wide answer to give.
    pub async fn by_number(
        &self,
        system: &PgPool,
        tenant_id: Uuid,
        phone_number_id: &str,
    ) -> Result<Option<Arc<ChannelEndpoint>>> {
        let key = (tenant_id, phone_number_id.to_string());
        let cached = self
            .numbers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, id)| *id);
        let inbox_id = match cached {
            Some(id) => id,
            None => {
                let Some(id) = sqlx::query_scalar!(
                    "SELECT id FROM inbox
                     WHERE tenant_id = $1 AND channel = 'whatsapp' AND settings ->> 'phone_number_id' = $2",
                    tenant_id,
                    phone_number_id
                )
                .fetch_optional(system)
                .await?
                else {
                    return Ok(None);
                };
                let mut numbers = self.numbers.lock().unwrap_or_else(PoisonError::into_inner);
                if numbers.len() >= ENDPOINT_CACHE_MAX {
                    numbers.clear();
                }
                numbers.insert(key, (Instant::now(), id));
                id
            }
        };
        // The inbox row has the last word: its number may have changed since.
        Ok(self.get(system, inbox_id).await?.filter(|e| {
            e.tenant_id == tenant_id
                && e.channel == "whatsapp"
                && e.setting("phone_number_id") == Some(phone_number_id)
        }))
    }

    fn fresh(&self, inbox_id: Uuid) -> Option<Arc<ChannelEndpoint>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&inbox_id)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, endpoint)| endpoint.clone())
    }

    /// Drops the inbox, so the next request reads it again. Called in the process that changed
    /// it and, through the `inbox.changed` notification, in every other.
    pub fn forget(&self, inbox_id: Uuid) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&inbox_id);
        self.numbers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, (_, id)| *id != inbox_id);
    }
}

/// Tells every process that each of the tenant's inboxes changed (at commit), so no cached
/// copy keeps serving them: closing a tenant stops its channels at once (RET-2).
pub async fn announce_tenant_inboxes(conn: &mut PgConnection, tenant_id: Uuid) -> Result<()> {
    let inboxes = sqlx::query_scalar!("SELECT id FROM inbox WHERE tenant_id = $1", tenant_id)
        .fetch_all(&mut *conn)
        .await?;
    for inbox_id in inboxes {
        announce_change(conn, tenant_id, inbox_id).await?;
    }
    Ok(())
}

/// Tells every process that an inbox changed (at commit), so cached copies are dropped.
async fn announce_change(conn: &mut PgConnection, tenant_id: Uuid, inbox_id: Uuid) -> Result<()> {
    events::publish(
        conn,
        &events::Event {
            tenant_id,
            kind: INBOX_CHANGED.into(),
            conversation_id: None,
            message_id: None,
            data: json!({ "inbox_id": inbox_id }),
        },
    )
    .await?;
    Ok(())
}

/// The listener's hook that drops an inbox from `endpoints` when any process announces it
/// changed, before any stream hears of it, so the next request reads it afresh.
pub fn forget_changed_inboxes(endpoints: Arc<EndpointCache>) -> events::Hook {
    Arc::new(move |event: &events::Event| {
        if event.kind != INBOX_CHANGED {
            return;
        }
        if let Some(inbox) = event
            .data
            .get("inbox_id")
            .and_then(Value::as_str)
            .and_then(|v| Uuid::parse_str(v).ok())
        {
            endpoints.forget(inbox);
        }
    })
}

/// The event that says an inbox's settings or secrets changed, or that it is gone.
pub const INBOX_CHANGED: &str = "inbox.changed";

impl ChannelEndpoint {
    pub async fn load(system: &PgPool, inbox_id: Uuid) -> Result<Option<ChannelEndpoint>> {
        Ok(sqlx::query_as!(
            ChannelEndpoint,
            // A closing tenant's inboxes answer as unknown ones (RET-2): nothing it receives
            // is stored once its owner closed it.
            r#"SELECT i.id AS "inbox_id", i.tenant_id, i.channel, i.settings, i.secrets
               FROM inbox i JOIN tenant t ON t.id = i.tenant_id
               WHERE i.id = $1 AND t.status = 'active'"#,
            inbox_id
        )
        .fetch_optional(system)
        .await?)
    }

    pub fn open<T: serde::de::DeserializeOwned>(&self, sealer: &Sealer) -> Result<T> {
        let sealed = self
            .secrets
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("inbox {} has no secrets", self.inbox_id))?;
        sealer
            .open_json(sealed, &seal_context(self.inbox_id))
            .map_err(|e| Error::Internal(anyhow::anyhow!("inbox {} secrets: {e}", self.inbox_id)))
    }

    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.get(key).and_then(Value::as_str)
    }
}

/// A WhatsApp inbox's settings, as the inbox answers them.
#[derive(Serialize, ToSchema)]
#[schema(as = WhatsAppInboxSettings)]
struct WhatsAppSettings {
    /// Meta's id of the business number.
    phone_number_id: String,
    /// Meta's id of the WhatsApp Business Account that holds it.
    business_account_id: String,
    /// The number as people see it; Meta's own when none was given.
    #[schema(required = true)]
    display_phone_number: Option<String>,
}

/// A web chat inbox's settings, as the inbox answers them.
#[derive(Serialize, ToSchema)]
#[schema(as = WebchatInboxSettings)]
struct WebchatSettings {
    /// The browser origins whose pages may use the chat (lowercase, without a trailing `/`).
    allowed_origins: Vec<String>,
    /// Whether only visitors proven by the identity secret may chat.
    identity_required: bool,
}

/// An inbox's settings: its channel's.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = InboxSettings)]
enum InboxSettings {
    Whatsapp(WhatsAppSettings),
    Webchat(WebchatSettings),
}

/// A new inbox: a WhatsApp business number, or a web chat widget, told apart by `channel`.
///
/// Read by its channel into the struct of that channel, each refusing fields it does not know;
/// so described too: utoipa's schema of an internally tagged enum would leave out that unknown
/// fields are refused.
enum NewInbox {
    Whatsapp(NewWhatsAppInbox),
    Webchat(NewWebchatInbox),
}

impl<'de> Deserialize<'de> for NewInbox {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let body = Value::deserialize(deserializer)?;
        let channel = match body.get("channel") {
            None => return Err(D::Error::missing_field("channel")),
            Some(channel) => Channel::deserialize(channel).map_err(D::Error::custom)?,
        };
        match channel {
            Channel::Whatsapp => NewWhatsAppInbox::deserialize(body).map(NewInbox::Whatsapp),
            Channel::Webchat => NewWebchatInbox::deserialize(body).map(NewInbox::Webchat),
        }
        .map_err(D::Error::custom)
    }
}

impl utoipa::PartialSchema for NewInbox {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{OneOfBuilder, Ref};
        OneOfBuilder::new()
            .description(Some(
                "A new inbox: a WhatsApp business number, or a web chat widget, told apart by \
                 `channel`.",
            ))
            .item(Ref::from_schema_name(NewWhatsAppInbox::name()))
            .item(Ref::from_schema_name(NewWebchatInbox::name()))
            .into()
    }
}

impl ToSchema for NewInbox {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((
            NewWhatsAppInbox::name().into_owned(),
            NewWhatsAppInbox::schema(),
        ));
        NewWhatsAppInbox::schemas(schemas);
        schemas.push((
            NewWebchatInbox::name().into_owned(),
            NewWebchatInbox::schema(),
        ));
        NewWebchatInbox::schemas(schemas);
    }
}

/// A WhatsApp business number. Meta is asked to confirm that the access token may use it
/// before the inbox is saved.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewWhatsAppInbox)]
struct NewWhatsAppInbox {
    /// Trimmed.
    #[schema(min_length = 1, max_length = 100, pattern = "$not_blank")]
    name: String,
    #[schema(schema_with = whatsapp_channel)]
    #[allow(dead_code)] // Read by `NewInbox` already; kept so the field is known here.
    channel: Channel,
    whatsapp: NewWhatsApp,
}

/// A web chat widget.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewWebchatInbox)]
struct NewWebchatInbox {
    /// Trimmed.
    #[schema(min_length = 1, max_length = 100, pattern = "$not_blank")]
    name: String,
    #[schema(schema_with = webchat_channel)]
    #[allow(dead_code)] // Read by `NewInbox` already; kept so the field is known here.
    channel: Channel,
    webchat: Option<WebchatInput>,
}

/// The one `channel` a variant of [`NewInbox`] takes.
fn channel_is(channel: Channel) -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some([channel.as_str()]))
        .build()
}

fn whatsapp_channel() -> utoipa::openapi::schema::Object {
    channel_is(Channel::Whatsapp)
}

fn webchat_channel() -> utoipa::openapi::schema::Object {
    channel_is(Channel::Webchat)
}

/// A WhatsApp number and the secrets it is served with.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewWhatsAppNumber)]
struct NewWhatsApp {
    /// Meta's id of the business number.
    #[schema(pattern = r"^[0-9]{1,32}$")]
    phone_number_id: String,
    /// Meta's id of the WhatsApp Business Account that holds it.
    #[schema(pattern = r"^[0-9]{1,32}$")]
    business_account_id: String,
    /// The number as people see it; Meta's own when absent.
    display_phone_number: Option<String>,
    /// What Meta's verification handshake must present.
    #[schema(value_type = String, format = Password, min_length = 1)]
    verify_token: SecretString,
    /// The Meta app's secret, which signs its webhooks.
    #[schema(value_type = String, format = Password, min_length = 1)]
    app_secret: SecretString,
    /// A token of the business account that may send from the number: printable ASCII, as
    /// it goes in an HTTP header.
    #[schema(value_type = String, format = Password, pattern = "^[!-~]{1,4096}$")]
    access_token: SecretString,
}

/// A WhatsApp inbox's settings and secrets to change; an absent one stays as it is. Giving the
/// number, the business account or the access token has Meta confirm them again.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WhatsAppNumberChanges)]
struct WhatsAppInput {
    #[schema(pattern = r"^[0-9]{1,32}$")]
    phone_number_id: Option<String>,
    #[schema(pattern = r"^[0-9]{1,32}$")]
    business_account_id: Option<String>,
    display_phone_number: Option<String>,
    #[schema(value_type = Option<String>, format = Password, min_length = 1)]
    verify_token: Option<SecretString>,
    #[schema(value_type = Option<String>, format = Password, min_length = 1)]
    app_secret: Option<SecretString>,
    #[schema(value_type = Option<String>, format = Password, pattern = "^[!-~]{1,4096}$")]
    access_token: Option<SecretString>,
}

/// A web chat's settings; on a change, an absent one stays as it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebchatInboxInput)]
struct WebchatInput {
    /// The browser origins whose pages may use the chat, such as `https://shop.example`.
    #[schema(schema_with = origins_schema)]
    allowed_origins: Option<Vec<String>>,
    /// Only visitors proven by the identity secret may chat; needs one.
    identity_required: Option<bool>,
    /// The key of the identity verification (HMAC-SHA256 of the tenant's user id). Set to
    /// rotate; `null` removes identity verification.
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<String>, format = Password, min_length = 1)]
    identity_secret: Option<Option<SecretString>>,
}

/// Origins as [`check_origins`] takes them, in ASCII (as browsers send them): a scheme, a host
/// and perhaps a port, at most 200 characters.
fn origins_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let origin = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(200))
        .pattern(Some(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$"))
        .examples([json!("https://shop.example")]);
    ArrayBuilder::new().items(origin).build()
}

/// An inbox's name and settings to change; an absent field stays as it is. An inbox keeps its
/// channel for good: a body naming one is refused like any unknown field.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = InboxChanges)]
struct InboxChanges {
    /// Trimmed.
    #[schema(min_length = 1, max_length = 100, pattern = "$not_blank")]
    name: Option<String>,
    /// For a WhatsApp inbox.
    whatsapp: Option<WhatsAppInput>,
    /// For a web chat inbox.
    webchat: Option<WebchatInput>,
}

/// An inbox's name, trimmed: 1 to 100 characters (the `inbox_name_length` CHECK), checked
/// before Meta is asked anything.
fn inbox_name(value: String) -> Result<String> {
    let name = required(Some(value), "name")?;
    if name.chars().count() > 100 {
        return Err(Error::bad_request(
            "name_too_long",
            "name must be at most 100 characters",
        ));
    }
    Ok(name)
}

/// A secret as given: an empty one would be no secret at all (a webhook signed with an empty
/// key, an identity anyone can prove).
fn secret(value: SecretString, field: &str) -> Result<SecretString> {
    if value.expose_secret().is_empty() {
        return Err(Error::bad_request(
            "missing_field",
            format!("{field} is required"),
        ));
    }
    Ok(value)
}

/// Meta's access token goes in the `Authorization` header: one that cannot (a space, a
/// character beyond ASCII) could never be used, so it is refused rather than reported as
/// Meta being unreachable.
fn access_token(value: SecretString) -> Result<SecretString> {
    let token = value.expose_secret();
    if token.is_empty() || token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::bad_request(
            "invalid_access_token",
            "whatsapp.access_token must be 1 to 4096 printable ASCII characters",
        ));
    }
    Ok(value)
}

fn required(value: Option<String>, field: &str) -> Result<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::bad_request("missing_field", format!("{field} is required")))
}

/// Meta's ids (phone-number id, business-account id) are strings of digits.
fn meta_id(value: Option<String>, field: &str) -> Result<String> {
    let value = required(value, field)?;
    if value.len() > 32 || !value.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::bad_request(
            "invalid_field",
            format!("{field} is Meta's numeric id"),
        ));
    }
    Ok(value)
}

/// Has Meta confirm, with the tenant's own access token, that the token may use the number of
/// `settings` and that it is one of their business account's, before an inbox takes it. On the
/// tenant's word alone anyone who knows a number's id could claim it, receive nothing and yet
/// hold it; Meta's answer is the one proof of control it offers.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id))]
async fn confirm_number(
    state: &ChannelsState,
    tenant_id: Uuid,
    settings: &Value,
    access_token: &SecretString,
) -> Result<BusinessNumber> {
    let number = settings["phone_number_id"].as_str().unwrap_or_default();
    let account = settings["business_account_id"].as_str().unwrap_or_default();
    let unreachable = || Error::Upstream {
        code: "whatsapp_unreachable",
        message: "Meta could not be asked whether this access token can use that WhatsApp \
                  number; nothing was saved, try again later"
            .into(),
    };
    // The client bounds each request; this bounds the few reads together, inside the
    // request's own timeout.
    let asked = state.graph.confirm_number(number, account, access_token);
    match tokio::time::timeout(state.config.whatsapp.timeout, asked).await {
        Ok(Ok(confirmed)) => Ok(confirmed),
        Ok(Err(ConfirmError::NotConfirmed(reason))) => {
            tracing::info!(number, account, %reason, "Meta did not confirm a WhatsApp number for the token given");
            Err(Error::bad_request(
                "whatsapp_not_verified",
                format!(
                    "Meta did not confirm that this access token can use WhatsApp number \
                     {number} of business account {account}: {reason}"
                ),
            ))
        }
        Ok(Err(ConfirmError::Unavailable(reason))) => {
            tracing::warn!(number, account, %reason, "could not ask Meta about a WhatsApp number");
            Err(unreachable())
        }
        Err(_) => {
            tracing::warn!(
                number,
                account,
                "Meta did not answer about a WhatsApp number in time"
            );
            Err(unreachable())
        }
    }
}

fn check_origins(origins: &[String]) -> Result<Vec<String>> {
    origins
        .iter()
        .map(|o| {
            let o = o.trim().trim_end_matches('/');
            let ok = (o.starts_with("https://") || o.starts_with("http://"))
                && !o["https://".len().min(o.len())..].contains('/')
                && o.len() <= 200;
            if ok {
                Ok(o.to_ascii_lowercase())
            } else {
                Err(Error::bad_request(
                    "invalid_origin",
                    format!("{o} is not an origin like https://shop.example"),
                ))
            }
        })
        .collect()
}

async fn list(State(state): State<ChannelsState>, ctx: Ctx) -> Result<Json<Vec<InboxView>>> {
    let mut tx = ctx.begin(&state).await?;
    let rows = sqlx::query_as!(
        InboxRow,
        "SELECT id, name, channel, settings, secrets, created_at, updated_at
         FROM inbox WHERE tenant_id = $1 ORDER BY name",
        ctx.tenant_id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

async fn show(
    State(state): State<ChannelsState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<InboxView>> {
    let mut tx = ctx.begin(&state).await?;
    let inbox = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(inbox))
}

async fn create(
    State(state): State<ChannelsState>,
    ctx: Ctx,
    Json(body): Json<NewInbox>,
) -> Result<(StatusCode, Json<InboxView>)> {
    let id = Uuid::now_v7();
    let context = seal_context(id);
    let (name, channel, settings, secrets) = match body {
        NewInbox::Whatsapp(NewWhatsAppInbox {
            name, whatsapp: wa, ..
        }) => {
            let name = inbox_name(name)?;
            let mut settings = WhatsAppSettings {
                phone_number_id: meta_id(Some(wa.phone_number_id), "whatsapp.phone_number_id")?,
                business_account_id: meta_id(
                    Some(wa.business_account_id),
                    "whatsapp.business_account_id",
                )?,
                display_phone_number: wa
                    .display_phone_number
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty()),
            };
            let secrets = WhatsAppSecrets {
                verify_token: secret(wa.verify_token, "whatsapp.verify_token")?,
                app_secret: secret(wa.app_secret, "whatsapp.app_secret")?,
                access_token: access_token(wa.access_token)?,
            };
            let confirmed = confirm_number(
                &state,
                ctx.tenant_id,
                &json!(settings),
                &secrets.access_token,
            )
            .await?;
            if settings.display_phone_number.is_none() {
                settings.display_phone_number = confirmed.display_phone_number;
            }
            (
                name,
                "whatsapp",
                json!(InboxSettings::Whatsapp(settings)),
                Some(state.sealer.seal_json(&secrets, &context)),
            )
        }
        NewInbox::Webchat(NewWebchatInbox { name, webchat, .. }) => {
            let name = inbox_name(name)?;
            let wc = webchat.unwrap_or(WebchatInput {
                allowed_origins: None,
                identity_required: None,
                identity_secret: None,
            });
            let settings = WebchatSettings {
                allowed_origins: check_origins(&wc.allowed_origins.unwrap_or_default())?,
                identity_required: wc.identity_required.unwrap_or(false),
            };
            let identity_secret = wc
                .identity_secret
                .flatten()
                .map(|s| secret(s, "webchat.identity_secret"))
                .transpose()?;
            if settings.identity_required && identity_secret.is_none() {
                return Err(Error::bad_request(
                    "missing_field",
                    "identity_required needs an identity_secret",
                ));
            }
            let secrets = WebchatSecrets { identity_secret };
            (
                name,
                "webchat",
                json!(InboxSettings::Webchat(settings)),
                Some(state.sealer.seal_json(&secrets, &context)),
            )
        }
    };
    let mut tx = ctx.begin(&state).await?;
    let row = sqlx::query_as!(
        InboxRow,
        "INSERT INTO inbox (id, tenant_id, name, channel, settings, secrets) VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, name, channel, settings, secrets, created_at, updated_at",
        id,
        ctx.tenant_id,
        name,
        channel,
        settings,
        secrets
    )
    .fetch_one(&mut *tx)
    .await?;
    let view: InboxView = row.into();
    ctx.audit(
        &mut tx,
        AuditEvent::new("inbox.created", "inbox", id).after(&view),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn update(
    State(state): State<ChannelsState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<InboxChanges>,
) -> Result<Json<InboxView>> {
    let mut tx = ctx.begin(&state).await?;
    let before_row = fetch_row(&mut tx, id).await?;
    let endpoint = ChannelEndpoint {
        inbox_id: id,
        tenant_id: ctx.tenant_id,
        channel: before_row.channel.clone(),
        settings: before_row.settings.clone(),
        secrets: before_row.secrets.clone(),
    };
    let name = match body.name {
        Some(n) => inbox_name(n)?,
        None => before_row.name.clone(),
    };
    let mut settings = before_row.settings.clone();
    let context = seal_context(id);
    let secrets = match before_row.channel.as_str() {
        "whatsapp" => {
            let mut secrets: WhatsAppSecrets = endpoint.open(&state.sealer)?;
            if let Some(wa) = body.whatsapp {
                let new_number = wa.phone_number_id.is_some();
                // Any of the three given is confirmed again, changed or not: a token Meta has
                // since revoked, or a number since moved away, must not be saved again on the
                // strength of an old answer.
                let reconfirm =
                    new_number || wa.business_account_id.is_some() || wa.access_token.is_some();
                if new_number {
                    settings["phone_number_id"] =
                        json!(meta_id(wa.phone_number_id, "whatsapp.phone_number_id")?);
                }
                if wa.business_account_id.is_some() {
                    settings["business_account_id"] = json!(meta_id(
                        wa.business_account_id,
                        "whatsapp.business_account_id"
                    )?);
                }
                let display_given = wa.display_phone_number.is_some();
                if let Some(v) = wa.display_phone_number {
                    settings["display_phone_number"] = json!(v.trim());
                }
                if let Some(token) = wa.verify_token {
                    secrets.verify_token = secret(token, "whatsapp.verify_token")?;
                }
                if let Some(app_secret) = wa.app_secret {
                    secrets.app_secret = secret(app_secret, "whatsapp.app_secret")?;
                }
                if let Some(token) = wa.access_token {
                    secrets.access_token = access_token(token)?;
                }
                if reconfirm {
                    // Meta may take seconds to answer: no connection waits idle in a
                    // transaction for it. The update below only lands on the row read here.
                    tx.rollback().await?;
                    let confirmed =
                        confirm_number(&state, ctx.tenant_id, &settings, &secrets.access_token)
                            .await?;
                    let display_unset = settings["display_phone_number"]
                        .as_str()
                        .is_none_or(str::is_empty);
                    if !display_given && (new_number || display_unset) {
                        settings["display_phone_number"] = json!(confirmed.display_phone_number);
                    }
                    tx = ctx.begin(&state).await?;
                }
            }
            state.sealer.seal_json(&secrets, &context)
        }
        _ => {
            let mut secrets: WebchatSecrets = endpoint.open(&state.sealer)?;
            if let Some(wc) = body.webchat {
                if let Some(origins) = wc.allowed_origins {
                    settings["allowed_origins"] = json!(check_origins(&origins)?);
                }
                // The body alone asks for verification without a key: its own contradiction.
                if wc.identity_required == Some(true) && matches!(wc.identity_secret, Some(None)) {
                    return Err(Error::bad_request(
                        "missing_field",
                        "identity_required needs an identity_secret",
                    ));
                }
                if let Some(given) = wc.identity_secret {
                    secrets.identity_secret = given
                        .map(|s| secret(s, "webchat.identity_secret"))
                        .transpose()?;
                }
                if let Some(required) = wc.identity_required {
                    settings["identity_required"] = json!(required);
                }
                // Otherwise it is the inbox as it stands that the change does not fit.
                if settings["identity_required"] == json!(true) && secrets.identity_secret.is_none()
                {
                    return Err(Error::conflict(
                        "identity_secret_required",
                        "this inbox would require verified visitors without an identity secret \
                         to verify them: give one, or turn identity_required off",
                    ));
                }
            }
            state.sealer.seal_json(&secrets, &context)
        }
    };
    let read_at = before_row.updated_at;
    let before: InboxView = before_row.into();
    // Only onto the row as read: the new settings and secrets were built from it (and may
    // have been confirmed with Meta since), so a change made meanwhile must not be overwritten.
    let after: InboxView = sqlx::query_as!(
        InboxRow,
        "UPDATE inbox SET name = $2, settings = $3, secrets = $4, updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id() AND updated_at = $5
         RETURNING id, name, channel, settings, secrets, created_at, updated_at",
        id,
        name,
        settings,
        secrets,
        read_at
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| {
        Error::conflict(
            "inbox_changed",
            "the inbox changed or was deleted while this update was being made; load it again \
             and retry",
        )
    })?
    .into();
    ctx.audit(
        &mut tx,
        AuditEvent::new("inbox.updated", "inbox", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    announce_change(&mut tx, ctx.tenant_id, id).await?;
    tx.commit().await?;
    state.endpoints.forget(id);
    Ok(Json(after))
}

async fn delete(
    State(state): State<ChannelsState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    let mut tx = ctx.begin(&state).await?;
    let before = fetch(&mut tx, id).await?;
    sqlx::query!(
        "DELETE FROM inbox WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .execute(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("inbox.deleted", "inbox", id).before(&before),
    )
    .await?;
    announce_change(&mut tx, ctx.tenant_id, id).await?;
    tx.commit().await?;
    state.endpoints.forget(id);
    Ok(StatusCode::NO_CONTENT)
}
