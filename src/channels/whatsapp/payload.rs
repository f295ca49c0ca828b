//! WhatsApp Cloud API webhook payloads, parsed into domain types.
//!
//! Parse, don't validate: [`parse`] turns the raw body into a [`Webhook`] whose events
//! the channel code can store without looking at JSON again. The split between what
//! is refused and what is kept follows from Meta retrying any non-2xx for days:
//!
//! - the envelope and the identity of each event (`object`, `entry`, `changes`,
//!   `field`, the phone-number id, a message's id, sender and timestamp, a status's
//!   id, value and timestamp) are required: without them nothing can be stored
//!   idempotently, so the body is refused with a [`PayloadError`];
//! - a message's *content* never fails the body: an unknown type, Meta's own
//!   `unsupported`, or a known type whose object is not in the documented shape all
//!   become [`Content::Unsupported`] with the raw message kept;
//! - changes for other fields (account updates, template status...) are skipped.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::conversations::delivery::DeliveryStatus;

/// The only `object` a WhatsApp Business Account webhook carries.
pub const OBJECT: &str = "whatsapp_business_account";
/// The only `messaging_product` this layer understands.
pub const MESSAGING_PRODUCT: &str = "whatsapp";
/// The change field that carries messages and statuses.
pub const MESSAGES_FIELD: &str = "messages";

/// Graph error code for "more than 24 hours have passed since the customer last
/// replied": only a template may be sent until they write again.
pub const RE_ENGAGEMENT_CODE: i64 = 131_047;
/// The On-Premises API's code for the same condition; kept so old payloads map too.
const LEGACY_OUTSIDE_WINDOW_CODE: i64 = 470;

/// One webhook delivery, flattened over `entry[].changes[]` in the order Meta sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub events: Vec<Event>,
    /// `value.errors`: problems Meta reports about the account or app rather than
    /// about one message (for example throughput limits). Nothing to store on a
    /// message; worth logging.
    pub errors: Vec<SystemError>,
}

// Not boxed: a delivery holds a handful of events that live for one request, so the
// padding of statuses costs nothing and plain patterns read better.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Message(InboundMessage),
    Status(StatusUpdate),
}

/// A message a WhatsApp user sent to one of the tenant's business numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    /// The business number it was sent to: selects the channel.
    pub phone_number_id: String,
    pub display_phone_number: Option<String>,
    /// The sender's phone number (WhatsApp id), digits without `+`. `None` when the
    /// user has adopted a WhatsApp username and Meta withholds the number; then
    /// `from_user_id` is set. At least one of the two is always present.
    pub from_wa_id: Option<String>,
    /// The sender's business-scoped user id (BSUID, e.g. `US.13491208655302741918`),
    /// sent by Meta since 2026 alongside or instead of the phone number.
    pub from_user_id: Option<String>,
    pub profile_name: Option<String>,
    /// The sender's WhatsApp username, when they have one and Meta shares it.
    pub username: Option<String>,
    /// The `wamid.…` id: unique per message, the idempotency key for redeliveries.
    pub provider_message_id: String,
    pub timestamp: OffsetDateTime,
    /// The message this one replies to (quoted reply, button or list reply).
    pub context_message_id: Option<String>,
    pub forwarded: bool,
    pub content: Content,
    /// Errors Meta attached to the message itself (typically on `unsupported`).
    pub errors: Vec<GraphErrorDetail>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text {
        body: String,
    },
    Media {
        kind: MediaKind,
        media_id: String,
        mime_type: Option<String>,
        caption: Option<String>,
        filename: Option<String>,
        sha256: Option<String>,
        /// Audio recorded in WhatsApp as a voice note.
        voice: bool,
        /// Download URL when Meta includes one; it needs the access token and expires.
        url: Option<String>,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
    },
    /// Shared contact cards, kept as Meta sent them (`messages[].contacts`).
    Contacts {
        contacts: Value,
    },
    Reaction {
        /// The wamid of the message reacted to.
        message_id: String,
        /// Empty when the user removed their reaction.
        emoji: String,
    },
    /// A tap on a reply button of an interactive message.
    ButtonReply {
        id: String,
        title: String,
    },
    /// A choice from an interactive list message.
    ListReply {
        id: String,
        title: String,
        description: Option<String>,
    },
    /// A tap on a quick-reply button of a template message (`type: button`).
    TemplateButton {
        payload: String,
        text: String,
    },
    /// Anything else: Meta's `unsupported`/`unknown`, types this layer does not model
    /// (orders, flows replies, system messages...), or a known type whose object is
    /// not in the documented shape. `raw` is the whole message object.
    Unsupported {
        message_type: String,
        raw: Value,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Audio,
    Video,
    Document,
    Sticker,
}

/// What the inbox stores about a media message: enough to fetch and show it later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub kind: MediaKind,
    pub media_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub voice: bool,
}

/// A delivery receipt for a message the business sent.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub phone_number_id: String,
    /// The wamid the Graph API returned when the message was sent.
    pub provider_message_id: String,
    /// The recipient's phone number; Meta may omit it for users with a username.
    pub recipient_id: Option<String>,
    /// The recipient's business-scoped user id, when Meta sends one.
    pub recipient_user_id: Option<String>,
    pub status: ReportedStatus,
    pub timestamp: OffsetDateTime,
    /// Why a `failed` status failed.
    pub errors: Vec<GraphErrorDetail>,
    /// Echo of the `biz_opaque_callback_data` given at send time, if any.
    pub biz_opaque_callback_data: Option<String>,
}

/// A status as Meta reports it. Meta's statuses do not arrive in order, and `read` may come
/// without `delivered` (Meta skips `delivered` when a message is read at once): what one
/// means for the message is its [`DeliveryStatus`], which only moves forward.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportedStatus {
    Sent,
    Delivered,
    Read,
    /// A voice message was played; implies read.
    Played,
    Failed,
    /// A status value this layer does not know yet (Meta adds some: `deleted`...).
    Other(String),
}

/// One entry of Meta's `errors` arrays (webhooks) or a Graph API error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphErrorDetail {
    pub code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// An error Meta reported in `value.errors`, for the business number it names.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemError {
    pub phone_number_id: String,
    pub error: GraphErrorDetail,
}

/// Why a webhook body was refused. Each has a stable [`code`](PayloadError::code)
/// for the API error body and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body is JSON but not in the shape of a WhatsApp webhook: {0}")]
    InvalidShape(String),
    #[error(
        "this endpoint only accepts WhatsApp Business Account webhooks \
         (object \"whatsapp_business_account\"), not object \"{0}\""
    )]
    WrongObject(String),
    #[error("this endpoint only accepts messaging_product \"whatsapp\", not \"{0}\" (at `{1}`)")]
    WrongMessagingProduct(String, String),
    #[error("the webhook is missing the required field `{0}`")]
    MissingField(String),
    #[error("`{path}` must be a Unix time in seconds, got {value}")]
    BadTimestamp { path: String, value: String },
}

impl PayloadError {
    /// Stable machine-readable code for API error bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            PayloadError::MalformedJson(_) => "malformed_json",
            PayloadError::InvalidShape(_) => "invalid_shape",
            PayloadError::WrongObject(_) => "wrong_object",
            PayloadError::WrongMessagingProduct(..) => "wrong_messaging_product",
            PayloadError::MissingField(_) => "missing_field",
            PayloadError::BadTimestamp { .. } => "bad_timestamp",
        }
    }
}

/// Parses a webhook body (the raw bytes whose signature was checked) into events.
pub fn parse(body: &[u8]) -> Result<Webhook, PayloadError> {
    // PostgreSQL cannot store U+0000, and refusing the delivery would only make Meta retry it
    // for a week: a NUL in any string becomes U+FFFD (the escapes have the same length).
    let mut cleaned;
    let mut body = body;
    let nuls: Vec<usize> = crate::http::nul_escapes(body).collect();
    if !nuls.is_empty() {
        cleaned = body.to_vec();
        for at in nuls {
            cleaned[at..at + 6].copy_from_slice(b"\\ufffd");
        }
        body = &cleaned;
    }
    let envelope: RawEnvelope = serde_json::from_slice(body).map_err(json_error)?;
    match envelope.object.as_deref() {
        None => return Err(missing("object")),
        Some(OBJECT) => {}
        Some(other) => return Err(PayloadError::WrongObject(other.to_string())),
    }
    let entries = envelope.entry.ok_or_else(|| missing("entry"))?;

    let mut webhook = Webhook {
        events: Vec::new(),
        errors: Vec::new(),
    };
    for (i, entry) in entries.into_iter().enumerate() {
        let changes = entry
            .changes
            .ok_or_else(|| missing(format!("entry[{i}].changes")))?;
        for (j, change) in changes.into_iter().enumerate() {
            let at = format!("entry[{i}].changes[{j}]");
            let field = change.field.ok_or_else(|| missing(format!("{at}.field")))?;
            if field != MESSAGES_FIELD {
                // Account, template and other subscriptions share the endpoint; they
                // are not this channel's business and must not make Meta retry.
                continue;
            }
            let value = change.value.ok_or_else(|| missing(format!("{at}.value")))?;
            parse_messages_value(value, &format!("{at}.value"), &mut webhook)?;
        }
    }
    Ok(webhook)
}

fn parse_messages_value(value: Value, at: &str, out: &mut Webhook) -> Result<(), PayloadError> {
    let value: RawValue = serde_json::from_value(value)
        .map_err(|e| PayloadError::InvalidShape(format!("`{at}`: {e}")))?;
    if let Some(product) = value.messaging_product {
        if product != MESSAGING_PRODUCT {
            return Err(PayloadError::WrongMessagingProduct(
                product,
                format!("{at}.messaging_product"),
            ));
        }
    }
    let metadata = value
        .metadata
        .ok_or_else(|| missing(format!("{at}.metadata")))?;
    let phone_number_id = metadata
        .phone_number_id
        .ok_or_else(|| missing(format!("{at}.metadata.phone_number_id")))?;
    let display_phone_number = metadata.display_phone_number;
    let contacts = value.contacts.unwrap_or_default();

    for (k, raw) in value.messages.unwrap_or_default().into_iter().enumerate() {
        let at = format!("{at}.messages[{k}]");
        let message = parse_message(
            raw,
            &at,
            &phone_number_id,
            display_phone_number.as_deref(),
            &contacts,
        )?;
        out.events.push(Event::Message(message));
    }
    for (k, raw) in value.statuses.unwrap_or_default().into_iter().enumerate() {
        let at = format!("{at}.statuses[{k}]");
        out.events
            .push(Event::Status(parse_status(raw, &at, &phone_number_id)?));
    }
    for raw in value.errors.unwrap_or_default() {
        out.errors.push(SystemError {
            phone_number_id: phone_number_id.clone(),
            error: raw.into(),
        });
    }
    Ok(())
}

fn parse_message(
    raw: Value,
    at: &str,
    phone_number_id: &str,
    display_phone_number: Option<&str>,
    contacts: &[RawContact],
) -> Result<InboundMessage, PayloadError> {
    let head = RawMessageHead::deserialize(&raw)
        .map_err(|e| PayloadError::InvalidShape(format!("`{at}`: {e}")))?;
    let provider_message_id = head.id.ok_or_else(|| missing(format!("{at}.id")))?;
    if head.from.is_none() && head.from_user_id.is_none() {
        return Err(missing(format!("{at}.from")));
    }
    let timestamp = unix_seconds(head.timestamp.as_ref(), &format!("{at}.timestamp"))?;
    let contact = find_contact(contacts, head.from.as_deref(), head.from_user_id.as_deref());
    let profile = contact.and_then(|c| c.profile.as_ref());
    let (context_message_id, forwarded) = match head.context {
        Some(c) => (c.id, c.forwarded || c.frequently_forwarded),
        None => (None, false),
    };
    let message_type = head.kind.unwrap_or_else(|| "unknown".to_string());
    let content = parse_content(&message_type, raw);

    Ok(InboundMessage {
        phone_number_id: phone_number_id.to_string(),
        display_phone_number: display_phone_number.map(str::to_string),
        from_wa_id: head.from,
        from_user_id: head
            .from_user_id
            .or_else(|| contact.and_then(|c| c.user_id.clone())),
        profile_name: profile.and_then(|p| p.name.clone()),
        username: profile.and_then(|p| p.username.clone()),
        provider_message_id,
        timestamp,
        context_message_id,
        forwarded,
        content,
        errors: head
            .errors
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect(),
    })
}

/// Meta sends one `contacts` entry per sender in the value; match it by phone or
/// BSUID, and fall back to the only entry when there is just one.
fn find_contact<'a>(
    contacts: &'a [RawContact],
    wa_id: Option<&str>,
    user_id: Option<&str>,
) -> Option<&'a RawContact> {
    contacts
        .iter()
        .find(|c| {
            (wa_id.is_some() && c.wa_id.as_deref() == wa_id)
                || (user_id.is_some() && c.user_id.as_deref() == user_id)
        })
        .or(match contacts {
            [only] => Some(only),
            _ => None,
        })
}

fn parse_content(message_type: &str, raw: Value) -> Content {
    let parsed = match message_type {
        "text" => typed::<RawText>(&raw, "text").map(|t| Content::Text { body: t.body }),
        "image" => media(&raw, MediaKind::Image),
        "audio" => media(&raw, MediaKind::Audio),
        "video" => media(&raw, MediaKind::Video),
        "document" => media(&raw, MediaKind::Document),
        "sticker" => media(&raw, MediaKind::Sticker),
        "location" => typed::<RawLocation>(&raw, "location").and_then(|l| {
            Some(Content::Location {
                latitude: number(&l.latitude)?,
                longitude: number(&l.longitude)?,
                name: l.name,
                address: l.address,
            })
        }),
        "contacts" => raw
            .get("contacts")
            .filter(|c| c.is_array())
            .map(|c| Content::Contacts {
                contacts: c.clone(),
            }),
        "reaction" => typed::<RawReaction>(&raw, "reaction").map(|r| Content::Reaction {
            message_id: r.message_id,
            emoji: r.emoji.unwrap_or_default(),
        }),
        "interactive" => interactive(&raw),
        "button" => typed::<RawButton>(&raw, "button").map(|b| Content::TemplateButton {
            payload: b.payload.unwrap_or_default(),
            text: b.text.unwrap_or_default(),
        }),
        _ => None,
    };
    parsed.unwrap_or_else(|| Content::Unsupported {
        message_type: message_type.to_string(),
        raw,
    })
}

fn typed<T: for<'de> Deserialize<'de>>(raw: &Value, key: &str) -> Option<T> {
    T::deserialize(raw.get(key)?).ok()
}

fn media(raw: &Value, kind: MediaKind) -> Option<Content> {
    let key = match kind {
        MediaKind::Image => "image",
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
        MediaKind::Document => "document",
        MediaKind::Sticker => "sticker",
    };
    let m: RawMedia = typed(raw, key)?;
    Some(Content::Media {
        kind,
        media_id: m.id,
        mime_type: m.mime_type,
        caption: m.caption,
        filename: m.filename,
        sha256: m.sha256,
        voice: m.voice,
        url: m.url,
    })
}

fn interactive(raw: &Value) -> Option<Content> {
    let i = raw.get("interactive")?;
    match i.get("type")?.as_str()? {
        "button_reply" => {
            let b: RawReply = typed(i, "button_reply")?;
            Some(Content::ButtonReply {
                id: b.id,
                title: b.title,
            })
        }
        "list_reply" => {
            let l: RawReply = typed(i, "list_reply")?;
            Some(Content::ListReply {
                id: l.id,
                title: l.title,
                description: l.description,
            })
        }
        _ => None,
    }
}

/// Coordinates are JSON numbers in Meta's payloads; some relays send strings.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn parse_status(
    raw: RawStatus,
    at: &str,
    phone_number_id: &str,
) -> Result<StatusUpdate, PayloadError> {
    let provider_message_id = raw.id.ok_or_else(|| missing(format!("{at}.id")))?;
    let status = match raw
        .status
        .ok_or_else(|| missing(format!("{at}.status")))?
        .as_str()
    {
        "sent" => ReportedStatus::Sent,
        "delivered" => ReportedStatus::Delivered,
        "read" => ReportedStatus::Read,
        "played" => ReportedStatus::Played,
        "failed" => ReportedStatus::Failed,
        other => ReportedStatus::Other(other.to_string()),
    };
    Ok(StatusUpdate {
        phone_number_id: phone_number_id.to_string(),
        provider_message_id,
        recipient_id: raw.recipient_id,
        recipient_user_id: raw.recipient_user_id,
        status,
        timestamp: unix_seconds(raw.timestamp.as_ref(), &format!("{at}.timestamp"))?,
        errors: raw
            .errors
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect(),
        biz_opaque_callback_data: raw.biz_opaque_callback_data,
    })
}

/// Meta sends timestamps as strings of Unix seconds (`"1749416383"`); a bare number
/// is accepted too.
fn unix_seconds(v: Option<&Value>, path: &str) -> Result<OffsetDateTime, PayloadError> {
    let bad = |value: &Value| PayloadError::BadTimestamp {
        path: path.to_string(),
        value: value.to_string(),
    };
    let v = v.ok_or_else(|| missing(path))?;
    let seconds = match v {
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| bad(v))?,
        Value::Number(n) => n.as_i64().ok_or_else(|| bad(v))?,
        _ => return Err(bad(v)),
    };
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| bad(v))
}

fn missing(path: impl Into<String>) -> PayloadError {
    PayloadError::MissingField(path.into())
}

fn json_error(e: serde_json::Error) -> PayloadError {
    match e.classify() {
        serde_json::error::Category::Data => PayloadError::InvalidShape(e.to_string()),
        _ => PayloadError::MalformedJson(e.to_string()),
    }
}

impl Content {
    /// Plain text for the inbox list and the agent: the text itself, a caption, or a
    /// bracketed label for what has no text (`[image]`, `[location] Name`...).
    pub fn text_summary(&self) -> String {
        match self {
            Content::Text { body } => body.clone(),
            Content::Media {
                kind,
                caption,
                filename,
                voice,
                ..
            } => match caption.as_deref().filter(|c| !c.trim().is_empty()) {
                Some(caption) => caption.to_string(),
                None => match (kind, filename) {
                    (MediaKind::Document, Some(name)) => format!("[document] {name}"),
                    (MediaKind::Audio, _) if *voice => "[voice message]".to_string(),
                    _ => format!("[{}]", kind.as_str()),
                },
            },
            Content::Location {
                latitude,
                longitude,
                name,
                address,
            } => match name.as_deref().or(address.as_deref()) {
                Some(label) => format!("[location] {label}"),
                None => format!("[location] {latitude}, {longitude}"),
            },
            Content::Contacts { contacts } => {
                let names: Vec<&str> = contacts
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.pointer("/name/formatted_name")?.as_str())
                    .collect();
                if names.is_empty() {
                    "[contact]".to_string()
                } else {
                    format!("[contact] {}", names.join(", "))
                }
            }
            Content::Reaction { emoji, .. } if emoji.is_empty() => "[reaction removed]".to_string(),
            Content::Reaction { emoji, .. } => format!("[reaction {emoji}]"),
            Content::ButtonReply { title, .. } | Content::ListReply { title, .. } => title.clone(),
            Content::TemplateButton { payload, text } => {
                if text.is_empty() {
                    payload.clone()
                } else {
                    text.clone()
                }
            }
            Content::Unsupported { message_type, .. } => {
                format!("[unsupported message: {message_type}]")
            }
        }
    }

    /// The media to store on the message, for media messages only.
    pub fn attachment(&self) -> Option<Attachment> {
        match self {
            Content::Media {
                kind,
                media_id,
                mime_type,
                caption,
                filename,
                sha256,
                voice,
                ..
            } => Some(Attachment {
                kind: *kind,
                media_id: media_id.clone(),
                mime_type: mime_type.clone(),
                caption: caption.clone(),
                filename: filename.clone(),
                sha256: sha256.clone(),
                voice: *voice,
            }),
            _ => None,
        }
    }

    /// Meta's name for the message type (`text`, `image`, `interactive`...), or the
    /// unsupported type as received.
    pub fn message_type(&self) -> &str {
        match self {
            Content::Text { .. } => "text",
            Content::Media { kind, .. } => kind.as_str(),
            Content::Location { .. } => "location",
            Content::Contacts { .. } => "contacts",
            Content::Reaction { .. } => "reaction",
            Content::ButtonReply { .. } | Content::ListReply { .. } => "interactive",
            Content::TemplateButton { .. } => "button",
            Content::Unsupported { message_type, .. } => message_type,
        }
    }
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }
}

impl ReportedStatus {
    pub fn as_str(&self) -> &str {
        match self {
            ReportedStatus::Sent => "sent",
            ReportedStatus::Delivered => "delivered",
            ReportedStatus::Read => "read",
            ReportedStatus::Played => "played",
            ReportedStatus::Failed => "failed",
            ReportedStatus::Other(s) => s,
        }
    }

    /// What the report means for the message: a played voice message was read; a status
    /// this layer does not know changes nothing.
    pub fn delivery_status(&self) -> Option<DeliveryStatus> {
        match self {
            ReportedStatus::Sent => Some(DeliveryStatus::Sent),
            ReportedStatus::Delivered => Some(DeliveryStatus::Delivered),
            ReportedStatus::Read | ReportedStatus::Played => Some(DeliveryStatus::Read),
            ReportedStatus::Failed => Some(DeliveryStatus::Failed),
            ReportedStatus::Other(_) => None,
        }
    }
}

impl GraphErrorDetail {
    /// True for Meta's "outside the 24-hour customer-service window" error.
    pub fn is_outside_window(&self) -> bool {
        is_outside_window_code(self.code)
    }
}

pub(crate) fn is_outside_window_code(code: i64) -> bool {
    code == RE_ENGAGEMENT_CODE || code == LEGACY_OUTSIDE_WINDOW_CODE
}

// ---- wire shapes: every field optional so a missing one gets a precise path ----
//
// They are also what the API document says Meta sends (`ToSchema`): a field [`parse`] requires
// is marked required there, non-null, though it is optional here.

/// A WhatsApp Cloud API webhook delivery, as Meta sends it, signed.
#[derive(Deserialize, ToSchema)]
#[schema(as = WhatsAppWebhook)]
pub(crate) struct RawEnvelope {
    #[schema(
        required = true,
        nullable = false,
        pattern = "^whatsapp_business_account$"
    )]
    object: Option<String>,
    #[schema(required = true, nullable = false)]
    entry: Option<Vec<RawEntry>>,
}

/// One WhatsApp Business Account's changes (Meta also sends the account's `id`).
#[derive(Deserialize, ToSchema)]
#[schema(as = WhatsAppWebhookEntry)]
struct RawEntry {
    #[schema(required = true, nullable = false)]
    changes: Option<Vec<RawChange>>,
}

/// One change. Only `messages` changes are read; the others (account and template updates...)
/// are acknowledged and left alone, whatever their `value`.
#[derive(Deserialize, ToSchema)]
#[schema(as = WhatsAppWebhookChange)]
struct RawChange {
    #[schema(required = true, nullable = false)]
    field: Option<String>,
    // Left untyped until `field` says what it is: other fields have other shapes.
    /// For a `messages` change: its messages, statuses and errors.
    #[schema(value_type = RawValue, required = true)]
    value: Option<Value>,
}

/// What a `messages` change carries for one business number.
#[derive(Deserialize, ToSchema)]
#[schema(as = WhatsAppMessagesValue)]
struct RawValue {
    #[schema(pattern = "^whatsapp$")]
    messaging_product: Option<String>,
    #[schema(required = true, nullable = false)]
    metadata: Option<RawMetadata>,
    /// The senders' profiles.
    contacts: Option<Vec<RawContact>>,
    // Kept as JSON so unsupported messages keep everything Meta sent.
    /// Messages customers sent.
    #[schema(value_type = Option<Vec<RawMessageHead>>)]
    messages: Option<Vec<Value>>,
    /// Delivery receipts of messages the business sent.
    statuses: Option<Vec<RawStatus>>,
    /// Problems Meta reports about the account or app.
    errors: Option<Vec<RawError>>,
}

/// The business number the change is for.
#[derive(Deserialize, ToSchema)]
#[schema(as = WhatsAppMetadata)]
struct RawMetadata {
    display_phone_number: Option<String>,
    /// Selects the inbox.
    #[schema(required = true, nullable = false)]
    phone_number_id: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = WhatsAppContact)]
struct RawContact {
    /// The sender's phone number, digits without `+`.
    wa_id: Option<String>,
    /// The sender's business-scoped user id.
    user_id: Option<String>,
    profile: Option<RawProfile>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = WhatsAppProfile)]
struct RawProfile {
    name: Option<String>,
    username: Option<String>,
}

/// A customer's message: `from` (or `from_user_id`), its `id` and `timestamp` are required.
/// Its content is under the key its `type` names (`text`, `image`, `audio`, `video`,
/// `document`, `sticker`, `location`, `contacts`, `reaction`, `interactive`, `button`); any
/// other type, or content not in Meta's documented shape, is kept whole as unsupported.
#[derive(Deserialize, ToSchema)]
#[schema(as = WhatsAppInboundMessage)]
struct RawMessageHead {
    /// The sender's phone number; absent when Meta withholds it, then `from_user_id` is set.
    from: Option<String>,
    from_user_id: Option<String>,
    /// The `wamid.…` id.
    #[schema(required = true, nullable = false)]
    id: Option<String>,
    #[schema(required = true, schema_with = unix_seconds_schema)]
    timestamp: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
    context: Option<RawContext>,
    errors: Option<Vec<RawError>>,
}

/// Unix time in seconds, as Meta sends it (a string of digits) or as a number.
fn unix_seconds_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9]{1,12}$")),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(253_402_300_799_i64)),
        )
        .description(Some("Unix time in seconds"))
        .build()
        .into()
}

/// The message a reply answers, or that it was forwarded.
#[derive(Deserialize, ToSchema)]
#[schema(as = WhatsAppMessageContext)]
struct RawContext {
    id: Option<String>,
    #[serde(default)]
    forwarded: bool,
    #[serde(default)]
    frequently_forwarded: bool,
}

#[derive(Deserialize)]
struct RawText {
    body: String,
}

#[derive(Deserialize)]
struct RawMedia {
    id: String,
    mime_type: Option<String>,
    caption: Option<String>,
    filename: Option<String>,
    sha256: Option<String>,
    #[serde(default)]
    voice: bool,
    url: Option<String>,
}

#[derive(Deserialize)]
struct RawLocation {
    latitude: Value,
    longitude: Value,
    name: Option<String>,
    address: Option<String>,
}

#[derive(Deserialize)]
struct RawReaction {
    // Some third-party copies of Meta's docs spell it with three s.
    #[serde(alias = "messsage_id")]
    message_id: String,
    // Omitted (or empty) when the user removes their reaction.
    emoji: Option<String>,
}

#[derive(Deserialize)]
struct RawReply {
    id: String,
    title: String,
    description: Option<String>,
}

#[derive(Deserialize)]
struct RawButton {
    payload: Option<String>,
    text: Option<String>,
}

/// A delivery receipt for a message the business sent.
#[derive(Deserialize, ToSchema)]
#[schema(as = WhatsAppStatus)]
struct RawStatus {
    /// The `wamid.…` the Graph API gave the message when it was sent.
    #[schema(required = true, nullable = false)]
    id: Option<String>,
    /// `sent`, `delivered`, `read`, `played` or `failed`; others Meta adds are ignored.
    #[schema(required = true, nullable = false)]
    status: Option<String>,
    #[schema(required = true, schema_with = unix_seconds_schema)]
    timestamp: Option<Value>,
    recipient_id: Option<String>,
    recipient_user_id: Option<String>,
    biz_opaque_callback_data: Option<String>,
    errors: Option<Vec<RawError>>,
}

/// An error Meta reports.
#[derive(Deserialize, ToSchema)]
#[schema(as = WhatsAppError)]
pub(crate) struct RawError {
    /// An integer (some relays send it as a string).
    #[schema(value_type = Option<i64>)]
    code: Option<Value>,
    title: Option<String>,
    message: Option<String>,
    error_data: Option<RawErrorData>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = WhatsAppErrorData)]
struct RawErrorData {
    details: Option<String>,
}

impl From<RawError> for GraphErrorDetail {
    fn from(raw: RawError) -> Self {
        GraphErrorDetail {
            // Integers in Meta's payloads; some relays send strings. 0 = not given.
            code: raw.code.as_ref().and_then(error_code).unwrap_or(0),
            title: raw.title,
            message: raw.message,
            details: raw.error_data.and_then(|d| d.details),
        }
    }
}

pub(crate) fn error_code(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_type_in_an_unexpected_shape_is_kept_not_refused() {
        // Seen in the wild: an `interactive` message whose object Meta left out.
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
            "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
            "messages":[{"from":"16505551234","id":"wamid.A","timestamp":"1749416383","type":"interactive"},
                        {"from":"16505551234","id":"wamid.B","timestamp":"1749416383","type":"text","text":{"body":7}},
                        {"from":"16505551234","id":"wamid.C","timestamp":"1749416383","type":"interactive",
                         "interactive":{"type":"nfm_reply","nfm_reply":{"response_json":"{}","body":"Sent","name":"flow"}}}]}}]}]}"#;
        let webhook = parse(body).unwrap();
        assert_eq!(webhook.events.len(), 3);
        for event in &webhook.events {
            match event {
                Event::Message(m) => assert!(
                    matches!(m.content, Content::Unsupported { .. }),
                    "{:?}",
                    m.content
                ),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_wrong_object_is_refused_with_a_clear_code() {
        let err = parse(br#"{"object":"page","entry":[]}"#).unwrap_err();
        assert_eq!(err.code(), "wrong_object");
        assert!(
            err.to_string().contains("whatsapp_business_account"),
            "{err}"
        );
        assert!(err.to_string().contains("\"page\""), "{err}");
    }

    #[test]
    fn malformed_json_is_refused_with_a_clear_code() {
        for body in [&b""[..], b"{", b"not json", b"{\"object\":"] {
            let err = parse(body).unwrap_err();
            assert_eq!(err.code(), "malformed_json", "{body:?}: {err}");
        }
        let err = parse(b"[1,2]").unwrap_err();
        assert_eq!(err.code(), "invalid_shape", "{err}");
        let err = parse(br#"{"object":"whatsapp_business_account","entry":{}}"#).unwrap_err();
        assert_eq!(err.code(), "invalid_shape", "{err}");
    }

    #[test]
    fn an_empty_entry_list_is_a_valid_webhook_with_no_events() {
        let webhook = parse(br#"{"object":"whatsapp_business_account","entry":[]}"#).unwrap();
        assert!(webhook.events.is_empty());
    }

    #[test]
    fn error_codes_sent_as_strings_are_read() {
        let raw: RawError = serde_json::from_value(serde_json::json!({
            "code": "131056", "title": "pair rate limit hit"
        }))
        .unwrap();
        assert_eq!(GraphErrorDetail::from(raw).code, 131_056);
    }

    #[test]
    fn every_error_has_a_distinct_stable_code() {
        let errors = [
            PayloadError::MalformedJson(String::new()),
            PayloadError::InvalidShape(String::new()),
            PayloadError::WrongObject(String::new()),
            PayloadError::WrongMessagingProduct(String::new(), String::new()),
            PayloadError::MissingField(String::new()),
            PayloadError::BadTimestamp {
                path: String::new(),
                value: String::new(),
            },
        ];
        let codes: std::collections::HashSet<&str> = errors.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), errors.len());
    }
}
