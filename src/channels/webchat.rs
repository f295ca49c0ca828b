//! The web chat: public endpoints per inbox for the embeddable widget. A visitor starts or
//! resumes a session (optionally proving who they are with an HMAC of the tenant's own user id
//! under the inbox's identity secret), sends messages, and receives replies as server-sent
//! events. Browsers may call these endpoints only from the inbox's allowed origins.

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response, Sse};
use futures_util::{future, StreamExt};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use time::OffsetDateTime;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use uuid::Uuid;

use super::{ChannelEndpoint, ChannelsState, WebchatSecrets};
use crate::audit::{self, AuditEvent, AuditSource};
use crate::auth::token;
use crate::conversations::{self, Inbound, Ingested, Sender};
use crate::crm::{
    self,
    contacts::{channel_contact, channel_source},
};
use crate::error::{Error, Result};
use crate::events::{Cap, Holder};
use crate::http::{Access, Api, Contract, Json, Path, Query, RequestMeta};
use utoipa::{IntoParams, ToSchema};

const SESSION_HEADER: &str = "x-webchat-session";
const SESSION_DAYS: i32 = 30;
const WIDGET_JS: &str = include_str!("widget.js");

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    ChannelsState: FromRef<S>,
{
    use Access::Public;
    let doc = |summary| ("webchat", summary);
    api.endpoint(
        Method::GET,
        "/widget.js",
        Public,
        doc("The embeddable chat widget"),
        Contract::new().returns_media(
            StatusCode::OK,
            "application/javascript",
            "The chat widget's script, for a page's <script src>",
        ),
        widget,
    )
    .endpoint(
        Method::OPTIONS,
        "/api/v1/webchat/{inbox_id}/sessions",
        Public,
        doc("CORS preflight"),
        preflight_contract(),
        preflight,
    )
    .endpoint(
        Method::POST,
        "/api/v1/webchat/{inbox_id}/sessions",
        Public,
        doc("Start or resume a visitor session"),
        browser(
            Contract::new()
                .body::<SessionBody>()
                .created::<SessionView>()
                // A token of an earlier session, still valid: that session goes on.
                .ok::<SessionView>(),
        )
        .error(StatusCode::BAD_REQUEST, "identity_not_enabled")
        // The inbox requires a verified user id and none was given.
        .error(StatusCode::UNAUTHORIZED, "unauthorized")
        // The user id's hash is not the identity secret's.
        .error(StatusCode::UNAUTHORIZED, "bad_signature"),
        start_session,
    )
    .endpoint(
        Method::OPTIONS,
        "/api/v1/webchat/{inbox_id}/messages",
        Public,
        doc("CORS preflight"),
        preflight_contract(),
        preflight,
    )
    .endpoint(
        Method::GET,
        "/api/v1/webchat/{inbox_id}/messages",
        Public,
        doc("The visitor's conversation (X-Webchat-Session)"),
        visitor_session(Contract::new().ok::<History>()),
        history,
    )
    .endpoint(
        Method::POST,
        "/api/v1/webchat/{inbox_id}/messages",
        Public,
        doc("Send a visitor message (X-Webchat-Session)"),
        visitor_session(
            Contract::new()
                .body::<SendBody>()
                .created::<Stored>()
                // The same client_message_id again: stored once, nothing new.
                .ok::<Duplicate>(),
        )
        .error(StatusCode::BAD_REQUEST, "invalid_message"),
        send,
    )
    .endpoint(
        Method::GET,
        "/api/v1/webchat/{inbox_id}/events",
        Public,
        doc("Replies as server-sent events (?session=)"),
        browser(Contract::new().query::<EventsQuery>().returns_media(
            StatusCode::OK,
            "text/event-stream",
            "Server-sent events: `message` with a WebchatMessage as its data for each reply to \
             the visitor, `resync` when the stream fell behind (read the conversation again); \
             ends with the session",
        ))
        .error(StatusCode::UNAUTHORIZED, "unauthorized")
        .error(StatusCode::TOO_MANY_REQUESTS, "too_many_streams"),
        events,
    )
    .endpoint(
        Method::GET,
        "/demo/chat/{inbox_id}",
        Public,
        doc("A demo page embedding the widget for this inbox"),
        Contract::new().returns_media(
            StatusCode::OK,
            "text/html",
            "A page embedding the widget, for trying a web chat inbox",
        ),
        demo_page,
    )
}

/// What every web chat call from a browser can be refused for: an origin the inbox does not
/// allow, or too many sessions or messages.
fn browser(contract: Contract) -> Contract {
    contract
        .error(StatusCode::FORBIDDEN, "forbidden")
        .error(StatusCode::TOO_MANY_REQUESTS, "rate_limited")
}

/// A call made with a visitor's session token in `X-Webchat-Session`.
fn visitor_session(contract: Contract) -> Contract {
    browser(contract)
        .credential(
            "webchat_session",
            json!({
                "type": "apiKey",
                "in": "header",
                "name": "X-Webchat-Session",
                "description": "A web chat visitor's session token, from starting a session \
                                (POST /api/v1/webchat/{inbox_id}/sessions)"
            }),
        )
        // No token, or one that is unknown, expired or of another inbox.
        .error(StatusCode::UNAUTHORIZED, "unauthorized")
}

/// A browser's preflight: no content, CORS headers for an allowed origin.
fn preflight_contract() -> Contract {
    Contract::new()
        .no_content()
        .error(StatusCode::FORBIDDEN, "forbidden")
}

async fn widget() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=300"),
            // Loaded by other sites' pages by design.
            (
                header::HeaderName::from_static("cross-origin-resource-policy"),
                "cross-origin",
            ),
        ],
        WIDGET_JS,
    )
        .into_response()
}

/// A page embedding the widget, for trying an inbox locally (the README's demo).
async fn demo_page(
    State(state): State<ChannelsState>,
    Path(inbox_id): Path<Uuid>,
) -> Result<Response> {
    webchat_endpoint(&state, inbox_id).await?;
    let html = include_str!("demo.html").replace("{{inbox_id}}", &inbox_id.to_string());
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Own scripts and API only; the widget sets inline style attributes.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ],
        html,
    )
        .into_response())
}

async fn webchat_endpoint(state: &ChannelsState, inbox_id: Uuid) -> Result<Arc<ChannelEndpoint>> {
    state
        .endpoints
        .get(&state.db.system, inbox_id)
        .await?
        .filter(|e| e.channel == "webchat")
        .ok_or(Error::NotFound)
}

/// The origin to echo back when the request comes from an allowed browser origin; requests
/// without an Origin (not from a browser page) get no CORS headers; others are refused.
fn allowed_origin(endpoint: &ChannelEndpoint, headers: &HeaderMap) -> Result<Option<HeaderValue>> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    let wanted = origin
        .to_str()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_ascii_lowercase();
    let allowed = endpoint
        .settings
        .get("allowed_origins")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|o| o.as_str() == Some(wanted.as_str())));
    if allowed {
        Ok(Some(origin.clone()))
    } else {
        Err(Error::Forbidden("this origin may not use this chat"))
    }
}

/// Answers a browser call from an allowed origin with CORS headers, errors included: a widget
/// must be able to read a 401 (its session expired, start a new one) or a 429 (wait), not
/// only its successes.
fn answer(result: Result<Response>, origin: Option<HeaderValue>) -> Response {
    with_cors(result.unwrap_or_else(IntoResponse::into_response), origin)
}

fn with_cors(mut response: Response, origin: Option<HeaderValue>) -> Response {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("content-type, retry-after"),
        );
    }
    response
}

async fn preflight(
    State(state): State<ChannelsState>,
    Path(inbox_id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response> {
    let endpoint = webchat_endpoint(&state, inbox_id).await?;
    let origin = allowed_origin(&endpoint, &headers)?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, x-webchat-session"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    Ok(with_cors(response, origin))
}

/// A visitor starting a session, or resuming one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebchatSessionRequest)]
struct SessionBody {
    /// A token from an earlier session in this browser, to resume it; an unknown or expired
    /// one starts a new session.
    session_token: Option<String>,
    /// The visitor's name; trimmed, kept to its first 200 characters.
    name: Option<String>,
    /// Only a claim, kept with the contact (to its first 254 characters), never used to find
    /// an existing one.
    email: Option<String>,
    /// The tenant's own id for a logged-in user, with `user_hash`; only where the inbox has an
    /// identity secret.
    #[schema(min_length = 1, max_length = 200)]
    user_id: Option<String>,
    /// Hex HMAC-SHA256 of `user_id` under the inbox's identity secret.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    user_hash: Option<String>,
}

/// A visitor's session: its token goes in `X-Webchat-Session` (and `?session=` for the events).
#[derive(Serialize, ToSchema)]
#[schema(as = WebchatSession)]
struct SessionView {
    session_token: String,
    contact_id: Uuid,
    verified: bool,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

fn identity_ok(secret: &str, user_id: &str, hash: &str) -> bool {
    let Ok(expected) = hex::decode(hash.trim()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(user_id.as_bytes());
    mac.verify_slice(&expected).is_ok()
}

async fn start_session(
    State(state): State<ChannelsState>,
    Path(inbox_id): Path<Uuid>,
    headers: HeaderMap,
    meta: RequestMeta,
    body: Result<Json<SessionBody>>,
) -> Result<Response> {
    let endpoint = webchat_endpoint(&state, inbox_id).await?;
    let origin = allowed_origin(&endpoint, &headers)?;
    let result = open_session(&state, &endpoint, &meta, body).await;
    Ok(answer(result, origin))
}

async fn open_session(
    state: &ChannelsState,
    endpoint: &ChannelEndpoint,
    meta: &RequestMeta,
    body: Result<Json<SessionBody>>,
) -> Result<Response> {
    let Json(body) = body?;
    let inbox_id = endpoint.inbox_id;
    state.throttle.check_ip(meta.ip)?;
    let secrets: WebchatSecrets = endpoint.open(&state.sealer)?;
    let tenant_id = endpoint.tenant_id;

    // Who is this? A verified user id, or an anonymous visitor.
    let verified_user = match (&body.user_id, &secrets.identity_secret) {
        (Some(user_id), Some(secret)) => {
            let hash = body.user_hash.as_deref().unwrap_or_default();
            if user_id.is_empty()
                || user_id.chars().count() > 200
                || !identity_ok(secret.expose_secret(), user_id, hash)
            {
                return Err(Error::BadSignature);
            }
            Some(user_id.clone())
        }
        (Some(_), None) => {
            return Err(Error::bad_request(
                "identity_not_enabled",
                "this inbox does not verify user ids",
            ))
        }
        (None, _) => None,
    };
    if endpoint.settings.get("identity_required") == Some(&json!(true)) && verified_user.is_none() {
        return Err(Error::Unauthorized);
    }
    let name = body
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| n.chars().take(200).collect::<String>());

    let mut tx = state.db.tenant_tx(tenant_id).await?;
    // Resume: the same browser, the same inbox, and (if verified) the same user.
    if let Some(previous) = body.session_token.as_deref() {
        let resumed = sqlx::query!(
            "SELECT s.contact_id, s.verified, s.expires_at, c.external_id
             FROM webchat_session s JOIN contact c ON c.id = s.contact_id
             WHERE s.token_hash = $1 AND s.inbox_id = $2 AND s.expires_at > now()",
            token::sha256(previous.as_bytes()),
            inbox_id
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(found) =
            resumed.filter(|r| verified_user.is_none() || r.external_id == verified_user)
        {
            tx.commit().await?;
            let view = SessionView {
                session_token: previous.to_string(),
                contact_id: found.contact_id,
                verified: found.verified,
                expires_at: found.expires_at,
            };
            return Ok(Json(view).into_response());
        }
    }

    // The visitor's own request did this, on the channel's behalf: its address and agent are
    // on record like a member's.
    let source = AuditSource {
        meta: meta.clone(),
        ..channel_source(tenant_id, inbox_id)
    };
    let contact_id = match &verified_user {
        Some(user_id) => {
            // `prior` reads the snapshot before the upsert: whether a name was filled in.
            let row =
                crm::contacts::upsert_by_external_id(&mut tx, tenant_id, name.as_deref(), user_id)
                    .await?;
            if row.inserted {
                audit::record(
                    &mut tx,
                    &source,
                    AuditEvent::new("contact.created", "contact", row.id).after(channel_contact(
                        row.id,
                        name.as_deref(),
                        None,
                        None,
                        Some(user_id),
                        &json!({}),
                    )),
                )
                .await?;
            } else if row.prior_name.is_none() && row.name.is_some() {
                audit::record(
                    &mut tx,
                    &source,
                    AuditEvent::new("contact.updated", "contact", row.id)
                        .before(json!({ "name": null }))
                        .after(json!({ "name": row.name })),
                )
                .await?;
            }
            row.id
        }
        None => {
            // An unverified visitor's email is only a claim: it must not merge them into an
            // existing customer's history.
            let attributes = match body
                .email
                .as_deref()
                .map(str::trim)
                .filter(|e| !e.is_empty())
            {
                Some(email) => {
                    json!({ "claimed_email": email.chars().take(254).collect::<String>() })
                }
                None => json!({}),
            };
            let id =
                crm::contacts::create_visitor(&mut tx, tenant_id, name.as_deref(), &attributes)
                    .await?;
            audit::record(
                &mut tx,
                &source,
                AuditEvent::new("contact.created", "contact", id).after(channel_contact(
                    id,
                    name.as_deref(),
                    None,
                    None,
                    None,
                    &attributes,
                )),
            )
            .await?;
            id
        }
    };
    let secret = token::new_opaque_token();
    let session_id = Uuid::now_v7();
    let expires_at = sqlx::query_scalar!(
        "INSERT INTO webchat_session (id, tenant_id, inbox_id, contact_id, token_hash, verified, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(days => $7)) RETURNING expires_at",
        session_id,
        tenant_id,
        inbox_id,
        contact_id,
        token::sha256(secret.as_bytes()),
        verified_user.is_some(),
        SESSION_DAYS
    )
    .fetch_one(&mut *tx)
    .await?;
    // The session is tenant data like the contact: on record, never with its token.
    audit::record(
        &mut tx,
        &source,
        AuditEvent::new("webchat_session.created", "webchat_session", session_id).after(json!({
            "id": session_id,
            "inbox_id": inbox_id,
            "contact_id": contact_id,
            "verified": verified_user.is_some(),
            "expires_at": expires_at.format(&time::format_description::well_known::Rfc3339).ok(),
        })),
    )
    .await?;
    tx.commit().await?;
    let view = SessionView {
        session_token: secret,
        contact_id,
        verified: verified_user.is_some(),
        expires_at,
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// The visitor behind a session token, for one inbox.
struct Visitor {
    session_id: Uuid,
    contact_id: Uuid,
    expires_at: OffsetDateTime,
}

async fn visitor(
    state: &ChannelsState,
    endpoint: &ChannelEndpoint,
    token: Option<&str>,
) -> Result<Visitor> {
    let token = token.filter(|t| !t.is_empty()).ok_or(Error::Unauthorized)?;
    let mut tx = state.db.tenant_tx(endpoint.tenant_id).await?;
    let found = sqlx::query_as!(
        Visitor,
        r#"SELECT id AS "session_id", contact_id, expires_at FROM webchat_session
           WHERE token_hash = $1 AND inbox_id = $2 AND expires_at > now()"#,
        token::sha256(token.as_bytes()),
        endpoint.inbox_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let visitor = found.ok_or(Error::Unauthorized)?;
    state.throttle.check_client(visitor.session_id)?;
    Ok(visitor)
}

fn session_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok())
}

/// A message of the visitor's conversation, as the visitor sees it (never a note).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WebchatMessage)]
struct VisitorMessage {
    id: Uuid,
    /// `inbound` (the visitor's) or `outbound` (to the visitor).
    direction: String,
    /// `customer`, `member`, `ai` or `system`.
    author_kind: String,
    body: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

async fn history(
    State(state): State<ChannelsState>,
    Path(inbox_id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response> {
    let endpoint = webchat_endpoint(&state, inbox_id).await?;
    let origin = allowed_origin(&endpoint, &headers)?;
    Ok(answer(
        read_history(&state, &endpoint, &headers).await,
        origin,
    ))
}

async fn read_history(
    state: &ChannelsState,
    endpoint: &ChannelEndpoint,
    headers: &HeaderMap,
) -> Result<Response> {
    let inbox_id = endpoint.inbox_id;
    let visitor = visitor(state, endpoint, session_header(headers)).await?;
    let mut tx = state.db.tenant_tx(endpoint.tenant_id).await?;
    let messages = sqlx::query_as!(
        VisitorMessage,
        "SELECT m.id, m.direction, m.author_kind, m.body, m.created_at
         FROM message m JOIN conversation c ON c.id = m.conversation_id
         WHERE c.contact_id = $1 AND c.inbox_id = $2 AND NOT m.private
         ORDER BY m.id DESC LIMIT 200",
        visitor.contact_id,
        inbox_id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let messages: Vec<_> = messages.into_iter().rev().collect();
    Ok(Json(History { messages }).into_response())
}

/// The visitor's conversation in this inbox, oldest first (the last 200 messages).
#[derive(Serialize, ToSchema)]
#[schema(as = WebchatHistory)]
struct History {
    messages: Vec<VisitorMessage>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WebchatMessageBody)]
struct SendBody {
    /// Trimmed.
    #[schema(min_length = 1, max_length = 4096, pattern = "$not_blank")]
    body: String,
    /// The widget's own id for the message, so a retried send is stored once.
    client_message_id: Option<Uuid>,
}

/// A visitor's message, stored.
#[derive(Serialize, ToSchema)]
#[schema(as = WebchatMessageStored)]
struct Stored {
    id: Uuid,
    conversation_id: Uuid,
}

/// A message already stored under the same `client_message_id`.
#[derive(Serialize, ToSchema)]
#[schema(as = WebchatMessageDuplicate)]
struct Duplicate {
    /// Always true.
    duplicate: bool,
}

async fn send(
    State(state): State<ChannelsState>,
    Path(inbox_id): Path<Uuid>,
    headers: HeaderMap,
    body: Result<Json<SendBody>>,
) -> Result<Response> {
    let endpoint = webchat_endpoint(&state, inbox_id).await?;
    let origin = allowed_origin(&endpoint, &headers)?;
    Ok(answer(
        store_message(&state, &endpoint, &headers, body).await,
        origin,
    ))
}

async fn store_message(
    state: &ChannelsState,
    endpoint: &ChannelEndpoint,
    headers: &HeaderMap,
    body: Result<Json<SendBody>>,
) -> Result<Response> {
    let inbox_id = endpoint.inbox_id;
    let visitor = visitor(state, endpoint, session_header(headers)).await?;
    let Json(body) = body?;
    let text = body.body.trim();
    if text.is_empty() || text.chars().count() > 4096 {
        return Err(Error::bad_request(
            "invalid_message",
            "a message has 1 to 4096 characters",
        ));
    }
    let provider_id = body
        .client_message_id
        .map(|id| format!("webchat:{}:{id}", visitor.session_id));
    // Notifications go out after the commit, so concurrent senders commit in groups.
    let outcome = crate::events::deferred(&state.notifier, async {
        let mut tx = state
            .db
            .tenant_tx_with(endpoint.tenant_id, conversations::INGEST_TX)
            .await?;
        let outcome = conversations::ingest(
            &mut tx,
            endpoint.tenant_id,
            Inbound {
                inbox_id,
                from: Sender::Contact(visitor.contact_id),
                provider_message_id: provider_id.as_deref(),
                content_type: "text",
                body: text,
                attachments: json!([]),
                provider_timestamp: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok::<_, Error>(outcome)
    })
    .await?;
    Ok(match outcome {
        Ingested::New {
            conversation_id,
            message_id,
        } => (
            StatusCode::CREATED,
            Json(Stored {
                id: message_id,
                conversation_id,
            }),
        )
            .into_response(),
        Ingested::Duplicate => Json(Duplicate { duplicate: true }).into_response(),
    })
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// The visitor's session token: an EventSource cannot send headers, so it comes here.
    session: String,
}

/// Replies to the visitor as they are committed: members' and the AI's public messages in the
/// visitor's own conversations, never notes, never anyone else's. A stream that fell behind and
/// lost events gets a `resync` event: the widget then reads the conversation again. A session
/// and a client address may hold only a few streams open at once, and a stream ends with its
/// session (and at the latest after the longest stream lifetime; the widget reconnects).
async fn events(
    State(state): State<ChannelsState>,
    Path(inbox_id): Path<Uuid>,
    headers: HeaderMap,
    meta: RequestMeta,
    query: Result<Query<EventsQuery>>,
) -> Result<Response> {
    let endpoint = webchat_endpoint(&state, inbox_id).await?;
    let origin = allowed_origin(&endpoint, &headers)?;
    Ok(answer(
        visitor_stream(&state, &endpoint, &meta, query).await,
        origin,
    ))
}

/// What a visitor's stream carries, before the message is looked up.
enum Seen {
    Reply(Uuid),
    Missed(u64),
}

/// The id in an event's `data` under `field`.
fn data_id(event: &crate::events::Event, field: &str) -> Option<Uuid> {
    event
        .data
        .get(field)
        .and_then(Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok())
}

async fn visitor_stream(
    state: &ChannelsState,
    endpoint: &ChannelEndpoint,
    meta: &RequestMeta,
    query: Result<Query<EventsQuery>>,
) -> Result<Response> {
    let Query(query) = query?;
    let inbox_id = endpoint.inbox_id;
    let visitor = visitor(state, endpoint, Some(&query.session)).await?;
    let limits = state.live.limits;
    let mut caps = vec![Cap {
        holder: Holder::Visitor(visitor.session_id),
        limit: limits.webchat_per_session,
        per: "chat session",
    }];
    if let Some(ip) = meta.ip {
        caps.push(Cap {
            holder: Holder::address(ip),
            limit: limits.webchat_per_address,
            per: "client address",
        });
    }
    let slot = state.live.streams.open(&caps)?;
    let tenant_id = endpoint.tenant_id;
    let contact_id = visitor.contact_id;
    // An expired session could not open the stream again, so it keeps none open either.
    let session_left =
        std::time::Duration::try_from(visitor.expires_at - OffsetDateTime::now_utc())
            .unwrap_or_default();
    let expires = tokio::time::Instant::now().checked_add(session_left);
    let lookup_state = state.clone();
    let stream = BroadcastStream::new(state.live.bus.subscribe())
        .filter_map(move |item| {
            // Every stream sees every event of every tenant: only replies addressed to this
            // visitor, by the ids the event carries, go on to the database.
            future::ready(match item {
                Ok(e) if e.tenant_id == tenant_id
                    && e.kind == "message.created"
                    && e.data["direction"] == "outbound"
                    && e.data["private"] != json!(true)
                    && data_id(&e, "contact_id") == Some(contact_id)
                    && data_id(&e, "inbox_id") == Some(inbox_id) =>
                {
                    e.message_id.map(Seen::Reply)
                }
                Ok(_) => None,
                Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Seen::Missed(missed)),
            })
        })
        .then(move |seen| {
            let state = lookup_state.clone();
            async move {
                match seen {
                    Seen::Reply(message_id) => {
                        visible_message(&state, tenant_id, contact_id, inbox_id, message_id)
                            .await
                            .map(|message| {
                                SseEvent::default()
                                    .event("message")
                                    .json_data(&message)
                                    .unwrap_or_default()
                            })
                    }
                    Seen::Missed(missed) => {
                        tracing::warn!(%inbox_id, missed, "a visitor's stream fell behind; telling it to resync");
                        Some(crate::events::resync_event(missed))
                    }
                }
            }
        })
        .filter_map(future::ready)
        .map(move |event| {
            let _open = &slot;
            Ok::<_, std::convert::Infallible>(event)
        })
        .take_until(crate::events::end_of_life(&state.live, expires));
    let sse = Sse::new(stream).keep_alive(
        axum::response::sse::KeepAlive::new().interval(std::time::Duration::from_secs(15)),
    );
    Ok(sse.into_response())
}

async fn visible_message(
    state: &ChannelsState,
    tenant_id: Uuid,
    contact_id: Uuid,
    inbox_id: Uuid,
    message_id: Uuid,
) -> Option<VisitorMessage> {
    state.live.streams.looked_up();
    let mut tx = state.db.tenant_tx(tenant_id).await.ok()?;
    let message = sqlx::query_as!(
        VisitorMessage,
        "SELECT m.id, m.direction, m.author_kind, m.body, m.created_at
         FROM message m JOIN conversation c ON c.id = m.conversation_id
         WHERE m.id = $1 AND c.contact_id = $2 AND c.inbox_id = $3 AND NOT m.private",
        message_id,
        contact_id,
        inbox_id
    )
    .fetch_optional(&mut *tx)
    .await
    .ok()?;
    tx.commit().await.ok()?;
    message
}

/// A data subject's erasure (DSR-3): their web-chat sessions go in either mode, since a session
/// ties a browser to the person. Called by the privacy domain on its transaction.
pub async fn erase_sessions(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    contact_id: Uuid,
) -> sqlx::Result<i64> {
    let n = sqlx::query!(
        "DELETE FROM webchat_session WHERE tenant_id = $1 AND contact_id = $2",
        tenant_id,
        contact_id
    )
    .execute(conn)
    .await?;
    Ok(n.rows_affected() as i64)
}
