//! The WhatsApp Cloud API webhook, one URL per inbox. The signature is checked over the raw
//! bytes, in constant time, before anything is parsed (SEC-9); then every message and status
//! of the delivery is stored in one transaction, and only after it commits does Meta get its
//! 200 — so an acknowledged message survives a crash, and Meta's retries of one we did not
//! acknowledge are welcome: redeliveries of a stored wamid are no-ops.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::writer::Delivery;
use super::{Content, Event};
use crate::channels::whatsapp;
use crate::channels::{ChannelEndpoint, ChannelsState, WhatsAppSecrets};
use crate::conversations::{self, delivery, Inbound, Ingested, Sender};
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Json, Path, Query};

/// Meta sends at most a few MB per delivery.
pub const MAX_WEBHOOK_BYTES: usize = 3 * 1024 * 1024;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    ChannelsState: FromRef<S>,
{
    api.endpoint(
        Method::GET,
        "/webhooks/whatsapp/{inbox_id}",
        Access::Public,
        ("webhooks", "WhatsApp verification handshake"),
        Contract::new()
            .query::<Handshake>()
            .returns_media(StatusCode::OK, "text/plain", "The hub.challenge, as sent")
            // Not a subscription, or not the inbox's verify token.
            .error(StatusCode::FORBIDDEN, "forbidden"),
        handshake,
    )
    .endpoint(
        Method::POST,
        "/webhooks/whatsapp/{inbox_id}",
        Access::Public,
        (
            "webhooks",
            "WhatsApp Cloud API notifications (signed with X-Hub-Signature-256)",
        ),
        Contract::new()
            .body::<whatsapp::payload::RawEnvelope>()
            .ok::<Receipt>()
            .credential(
                "whatsapp_signature",
                json!({
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Hub-Signature-256",
                    "description": "`sha256=` and the hex HMAC-SHA256 of the raw body under \
                                    the inbox's Meta app secret (SEC-9)"
                }),
            )
            .error(StatusCode::UNAUTHORIZED, "bad_signature")
            .error(StatusCode::BAD_REQUEST, "malformed_json")
            .error(StatusCode::BAD_REQUEST, "invalid_shape")
            .error(StatusCode::BAD_REQUEST, "wrong_object")
            .error(StatusCode::BAD_REQUEST, "wrong_messaging_product")
            .error(StatusCode::BAD_REQUEST, "missing_field")
            .error(StatusCode::BAD_REQUEST, "bad_timestamp")
            .body_limit(MAX_WEBHOOK_BYTES),
        receive,
    )
}

/// Meta's verification handshake, when a callback URL is set up.
#[derive(Deserialize, IntoParams)]
struct Handshake {
    #[serde(rename = "hub.mode")]
    #[param(required = true, pattern = "^subscribe$")]
    mode: Option<String>,
    /// The inbox's verify token.
    #[serde(rename = "hub.verify_token")]
    #[param(required = true)]
    verify_token: Option<String>,
    /// Answered back as it came.
    #[serde(rename = "hub.challenge")]
    #[param(required = true)]
    challenge: Option<String>,
}

/// A delivery stored: Meta needs only the 200.
#[derive(Serialize, ToSchema)]
#[schema(as = WhatsAppWebhookReceipt)]
struct Receipt {
    /// The messages and statuses it carried.
    events: usize,
    /// The messages new to the inbox (a redelivery stores none).
    stored: usize,
}

async fn whatsapp_endpoint(
    state: &ChannelsState,
    inbox_id: Uuid,
) -> Result<(Arc<ChannelEndpoint>, WhatsAppSecrets)> {
    let endpoint = state
        .endpoints
        .get(&state.db.system, inbox_id)
        .await?
        .filter(|e| e.channel == "whatsapp")
        .ok_or(Error::NotFound)?;
    let secrets = endpoint.open(&state.sealer)?;
    Ok((endpoint, secrets))
}

/// `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…` answers the challenge as plain
/// text when the token matches; anything else is refused.
async fn handshake(
    State(state): State<ChannelsState>,
    Path(inbox_id): Path<Uuid>,
    Query(params): Query<Handshake>,
) -> Result<Response> {
    let (_, secrets) = whatsapp_endpoint(&state, inbox_id).await?;
    let mode_ok = params.mode.as_deref() == Some("subscribe");
    let token_ok = params.verify_token.is_some_and(|t| {
        bool::from(
            t.as_bytes()
                .ct_eq(secrets.verify_token.expose_secret().as_bytes()),
        )
    });
    match params.challenge {
        Some(challenge) if mode_ok && token_ok => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            challenge,
        )
            .into_response()),
        _ => Err(Error::Forbidden("the verification token does not match")),
    }
}

async fn receive(
    State(state): State<ChannelsState>,
    Path(inbox_id): Path<Uuid>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Receipt>> {
    let (endpoint, secrets) = whatsapp_endpoint(&state, inbox_id).await?;
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !whatsapp::signature::verify(
        secrets.app_secret.expose_secret().as_bytes(),
        &body,
        signature,
    ) {
        tracing::warn!(%inbox_id, "WhatsApp webhook with a missing or wrong signature refused");
        return Err(Error::BadSignature);
    }
    let webhook =
        whatsapp::parse(&body).map_err(|e| Error::bad_request(e.code(), e.to_string()))?;
    for error in &webhook.errors {
        tracing::warn!(%inbox_id, code = error.error.code, message = ?error.error.message, "WhatsApp reported an error");
    }

    let our_number = endpoint
        .setting("phone_number_id")
        .unwrap_or_default()
        .to_string();
    let others = other_numbers(&state, &endpoint, &secrets, &our_number, &webhook).await?;
    let events = webhook.events.len();
    let stored = state
        .webhooks
        .write(Delivery {
            tenant_id: endpoint.tenant_id,
            inbox_id,
            our_number,
            others,
            webhook,
        })
        .await?;
    tracing::debug!(%inbox_id, stored, events, "WhatsApp webhook stored");
    Ok(Json(Receipt { events, stored }))
}

/// The inboxes of the other business numbers a delivery names. A Meta app sends every number's
/// events to the callback URL it is configured with, so one inbox's URL may receive another
/// number's: those go to the tenant's own inbox of that number when it is under the same Meta
/// app (the same app secret, which just signed this delivery); anything else is logged and
/// left alone. Another tenant's inbox is never looked at: the same number id may be held by
/// several tenants, and which one really has it is Meta's to know, not the id's. Only a
/// delivery naming another number pays for the look-up.
async fn other_numbers(
    state: &ChannelsState,
    endpoint: &ChannelEndpoint,
    secrets: &WhatsAppSecrets,
    our_number: &str,
    webhook: &whatsapp::Webhook,
) -> Result<Vec<(String, Uuid)>> {
    let mut others: Vec<(String, Uuid)> = Vec::new();
    let mut refused: Vec<&str> = Vec::new();
    for event in &webhook.events {
        let number = match event {
            Event::Message(msg) => msg.phone_number_id.as_str(),
            Event::Status(status) => status.phone_number_id.as_str(),
        };
        if number == our_number
            || refused.contains(&number)
            || others.iter().any(|(n, _)| n == number)
        {
            continue;
        }
        let sibling = state
            .endpoints
            .by_number(&state.db.system, endpoint.tenant_id, number)
            .await?;
        let same_app = match &sibling {
            Some(other) => {
                let theirs: WhatsAppSecrets = other.open(&state.sealer)?;
                bool::from(
                    theirs
                        .app_secret
                        .expose_secret()
                        .as_bytes()
                        .ct_eq(secrets.app_secret.expose_secret().as_bytes()),
                )
            }
            _ => false,
        };
        match sibling {
            Some(other) if same_app => others.push((number.to_string(), other.inbox_id)),
            _ => {
                tracing::warn!(inbox_id = %endpoint.inbox_id, to = %number, "events for a number that is not this tenant's under the same Meta app ignored");
                refused.push(number);
            }
        }
    }
    Ok(others)
}

/// A customer's message of a delivery, with what its storage needs that the payload does not
/// hold as is.
struct Incoming<'a> {
    /// Which delivery of the batch it came in.
    delivery: usize,
    inbox_id: Uuid,
    msg: &'a whatsapp::InboundMessage,
    identity: &'a str,
    content_type: &'a str,
    summary: String,
    attachments: serde_json::Value,
}

/// Stores every event of the deliveries on the caller's tenant transaction; returns how many
/// messages of each were new. All their messages go to [`conversations::ingest_many`] at once,
/// so a shared transaction stores them in as few statements as their senders allow.
pub(super) async fn store_deliveries(
    tx: &mut PgConnection,
    tenant_id: Uuid,
    deliveries: &[&Delivery],
) -> Result<Vec<usize>> {
    let mut incoming = Vec::new();
    for (index, delivery) in deliveries.iter().enumerate() {
        for event in &delivery.webhook.events {
            let Event::Message(msg) = event else { continue };
            let Some(inbox_id) = delivery.route(&msg.phone_number_id) else {
                continue;
            };
            let Some(identity) = msg.from_wa_id.as_deref().or(msg.from_user_id.as_deref()) else {
                continue;
            };
            let attachments = match &msg.content {
                Content::Media { .. } => json!([msg.content.attachment()]),
                Content::Location {
                    latitude,
                    longitude,
                    name,
                    address,
                } => {
                    json!([{ "kind": "location", "latitude": latitude, "longitude": longitude, "name": name, "address": address }])
                }
                Content::Contacts { contacts } => {
                    json!([{ "kind": "contacts", "contacts": contacts }])
                }
                Content::Reaction { message_id, emoji } => {
                    json!([{ "kind": "reaction", "message_id": message_id, "emoji": emoji,
                             "removed": emoji.is_empty() }])
                }
                // What the customer chose, by the id the business gave it (the title is
                // only what they saw), and the message they answered.
                Content::ButtonReply { id, title } => {
                    json!([{ "kind": "button_reply", "id": id, "title": title,
                             "context_message_id": msg.context_message_id }])
                }
                Content::ListReply {
                    id,
                    title,
                    description,
                } => {
                    json!([{ "kind": "list_reply", "id": id, "title": title, "description": description,
                             "context_message_id": msg.context_message_id }])
                }
                Content::TemplateButton { payload, text } => {
                    json!([{ "kind": "button", "payload": payload, "text": text,
                             "context_message_id": msg.context_message_id }])
                }
                Content::Unsupported { raw, .. } => {
                    json!([{ "kind": "unsupported", "raw": raw }])
                }
                _ => json!([]),
            };
            let content_type = match &msg.content {
                Content::Unsupported { .. } => "unsupported",
                Content::ButtonReply { .. } => "button_reply",
                Content::ListReply { .. } => "list_reply",
                other => other.message_type(),
            };
            incoming.push(Incoming {
                delivery: index,
                inbox_id,
                msg,
                identity,
                content_type,
                summary: msg.content.text_summary(),
                attachments,
            });
        }
    }
    let inbound: Vec<Inbound<'_>> = incoming
        .iter()
        .map(|m| Inbound {
            inbox_id: m.inbox_id,
            from: Sender::WhatsApp {
                wa_id: m.identity,
                profile_name: m.msg.profile_name.as_deref(),
            },
            provider_message_id: Some(&m.msg.provider_message_id),
            content_type: m.content_type,
            body: &m.summary,
            attachments: m.attachments.clone(),
            provider_timestamp: Some(m.msg.timestamp),
        })
        .collect();
    let outcomes = conversations::ingest_many(&mut *tx, tenant_id, &inbound).await?;
    let mut stored = vec![0usize; deliveries.len()];
    for (m, outcome) in incoming.iter().zip(outcomes) {
        if let Ingested::New { .. } = outcome {
            stored[m.delivery] += 1;
        }
    }
    for delivery in deliveries {
        for event in &delivery.webhook.events {
            let Event::Status(status) = event else {
                continue;
            };
            let Some(inbox_id) = delivery.route(&status.phone_number_id) else {
                continue;
            };
            // A status Meta added that we do not know changes nothing.
            let Some(new) = status.status.delivery_status() else {
                continue;
            };
            let error = (!status.errors.is_empty()).then(|| json!({ "errors": status.errors }));
            // Our message id, given to Meta at send time (see channels::whatsapp::send).
            let callback = status
                .biz_opaque_callback_data
                .as_deref()
                .and_then(|data| Uuid::parse_str(data).ok());
            let known = delivery::apply_status(
                &mut *tx,
                tenant_id,
                inbox_id,
                &status.provider_message_id,
                callback,
                new,
                status.timestamp,
                error,
            )
            .await?;
            if !known {
                tracing::info!(%inbox_id, wamid = %status.provider_message_id, status = new.as_str(), "status for an unknown message ignored");
            }
        }
    }
    Ok(stored)
}
