//! Outbound WhatsApp messages through the Graph API (`POST /{version}/{phone-number-id}/messages`),
//! and the reads that prove a token may use a business number before an inbox takes it
//! ([`GraphClient::confirm_number`]).
//!
//! One call is one attempt: the durable work queue owns retries and backoff, so this
//! client only says *whether* a failure is worth retrying ([`SendError::is_retryable`])
//! and how long Meta asked us to wait. The access token is passed per call (each
//! channel has its own), goes only into the `Authorization` header (marked sensitive),
//! and never into an error, a log line or `Debug` output.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::channels::whatsapp::payload::{self, MediaKind};

/// Graph error codes Meta documents as throttling: the same request can succeed later.
/// 4 app call limit, 80007 WABA rate limit, 130429 Cloud API throughput,
/// 131048 spam rate limit, 131056 business/consumer pair rate limit.
/// Meta returns most of them with HTTP 400, so the code decides, not the status.
pub const THROTTLING_CODES: &[i64] = &[4, 80_007, 130_429, 131_048, 131_056];

/// Graph error codes for temporary failures on Meta's side (often, not always, 5xx):
/// 2 service temporarily unavailable, 131000 something went wrong,
/// 131016 service unavailable, 133004 server temporarily unavailable.
pub const TRANSIENT_CODES: &[i64] = &[2, 131_000, 131_016, 133_004];

/// Longest error text kept from a response body (a proxy's HTML page, a Graph message...).
const MAX_MESSAGE_CHARS: usize = 500;

/// Pages of a business account's numbers read before giving up on finding one. Meta lets an
/// account hold a few dozen numbers at most, so ten pages of 100 is far past any real one.
const MAX_NUMBER_PAGES: usize = 10;

/// A Graph API client for one base URL and API version, shared by all channels.
#[derive(Debug, Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base_url: Url,
    version: String,
}

/// A bad base URL or version: a configuration error to fail start-up with.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("the Graph API base URL {0:?} is not an absolute http(s) URL")]
    BaseUrl(String),
    #[error("the Graph API version {0:?} is not a single path segment like \"v23.0\"")]
    Version(String),
    #[error("the HTTP client could not be built: {0}")]
    Http(String),
}

/// A message to send. `to` is the recipient's phone number (WhatsApp id), or their
/// business-scoped user id (`US.1349…`) when Meta withholds the number.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Free-form text: only inside the 24-hour customer-service window.
    Text {
        to: String,
        body: String,
        preview_url: bool,
    },
    /// An approved template: the only thing Meta delivers outside the window.
    Template {
        to: String,
        name: String,
        /// Language code of the approved template, e.g. `en_US`.
        language: String,
        /// Graph's `template.components` array; `null` or `[]` for none.
        components: Value,
    },
    /// Media already uploaded to Meta (`Id`) or at a public URL (`Link`).
    Media {
        to: String,
        kind: MediaKind,
        source: MediaSource,
        /// Images, videos and documents only.
        caption: Option<String>,
        /// Documents only.
        filename: Option<String>,
    },
}

/// A business number as Meta shows it to a token that may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessNumber {
    pub id: String,
    /// As Meta formats it, e.g. `+1 555-078-3881`.
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
}

/// Why Meta did not confirm that a token may use a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmError {
    /// Meta answered, and not with the number: the token may not use it, the number does not
    /// exist, or it is not one of that business account's. Meta does not say which.
    #[error("{0}")]
    NotConfirmed(String),
    /// No usable answer (no connection, a timeout, throttling, a fault on Meta's side): nothing
    /// can be concluded either way.
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaSource {
    Id(String),
    Link(String),
}

/// Meta accepted the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The `wamid.…` that later status webhooks refer to.
    pub wamid: String,
    /// The recipient's WhatsApp id as Meta resolved it.
    pub wa_id: Option<String>,
    /// `accepted`, `held_for_quality_assessment`... when Meta says.
    pub message_status: Option<String>,
}

/// Why a send did not go through, sorted by what the caller should do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Rate limited or failing on Meta's side: retry later, after `retry_after` when
    /// Meta gave one.
    #[error("the Graph API could not take the message now (HTTP {status}): {message}")]
    Retryable {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    /// The customer last wrote more than 24 hours ago: only a template can be sent
    /// until they write again. Retrying the same message cannot help.
    #[error(
        "the customer-service window is closed (more than 24 hours since the customer \
         last wrote); only a template message can be sent: {message}"
    )]
    OutsideWindow { code: i64, message: String },
    /// Meta refused this message for good (bad recipient, bad template, bad token...).
    #[error("the Graph API refused the message (HTTP {status}): {message}")]
    Permanent {
        status: u16,
        code: Option<i64>,
        message: String,
    },
    /// No answer after the request left: timeout, broken response. Retryable, but the
    /// message may or may not have been sent.
    #[error("could not reach the Graph API: {0}")]
    Transport(String),
    /// No connection: the request never left, so nothing was sent. Retryable.
    #[error("could not connect to the Graph API: {0}")]
    Unreachable(String),
}

impl GraphClient {
    /// `base_url` is Meta's (`https://graph.facebook.com`) or a fake's; `version` is
    /// the Graph API version path segment (`v23.0`). `timeout` bounds each request.
    pub fn new(
        base_url: &str,
        version: &str,
        timeout: Duration,
    ) -> Result<Self, ClientConfigError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| ClientConfigError::Http(e.to_string()))?;
        Self::with_http_client(http, base_url, version)
    }

    /// As [`GraphClient::new`], reusing an existing `reqwest::Client` (its timeout
    /// settings apply).
    pub fn with_http_client(
        http: reqwest::Client,
        base_url: &str,
        version: &str,
    ) -> Result<Self, ClientConfigError> {
        let url = Url::parse(base_url).map_err(|_| ClientConfigError::BaseUrl(base_url.into()))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(ClientConfigError::BaseUrl(base_url.into()));
        }
        let version = version.trim();
        if version.is_empty() || version.contains(['/', '?', '#']) {
            return Err(ClientConfigError::Version(version.into()));
        }
        Ok(GraphClient {
            http,
            base_url: url,
            version: version.to_string(),
        })
    }

    /// The messages endpoint for one business phone number.
    pub fn messages_url(&self, phone_number_id: &str) -> Url {
        self.graph_url(&[phone_number_id, "messages"])
    }

    /// `{base}/{version}/{segments…}`, each segment escaped.
    fn graph_url(&self, path: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        {
            let mut segments = url
                .path_segments_mut()
                .expect("checked in the constructor: the base URL can be a base");
            segments.pop_if_empty().push(&self.version).extend(path);
        }
        url
    }

    /// Asks Meta, with the tenant's own access token, whether that token may use the number
    /// and whether the number is one of the business account's. Meta answers a token for a
    /// number it may not use as if the number did not exist, so a confirmation is the proof
    /// that whoever holds the token controls the number; the number as Meta shows it comes
    /// back. One call per read, no retries: the caller is waiting.
    pub async fn confirm_number(
        &self,
        phone_number_id: &str,
        business_account_id: &str,
        access_token: &SecretString,
    ) -> Result<BusinessNumber, ConfirmError> {
        let mut url = self.graph_url(&[phone_number_id]);
        url.query_pairs_mut()
            .append_pair("fields", "id,display_phone_number,verified_name");
        let number: RawNumber = self.read(url, access_token).await?;
        if number.id.as_deref() != Some(phone_number_id) {
            return Err(ConfirmError::NotConfirmed(
                "Meta answered with another number".into(),
            ));
        }
        let mut after: Option<String> = None;
        for _ in 0..MAX_NUMBER_PAGES {
            let mut url = self.graph_url(&[business_account_id, "phone_numbers"]);
            {
                let mut query = url.query_pairs_mut();
                query
                    .append_pair("fields", "id")
                    .append_pair("limit", "100");
                if let Some(cursor) = &after {
                    query.append_pair("after", cursor);
                }
            }
            let page: RawNumberPage = self.read(url, access_token).await?;
            if page
                .data
                .iter()
                .any(|n| n.id.as_deref() == Some(phone_number_id))
            {
                return Ok(BusinessNumber {
                    id: phone_number_id.to_string(),
                    display_phone_number: number.display_phone_number,
                    verified_name: number.verified_name,
                });
            }
            // Graph gives `next` only while there is a further page.
            after = page
                .paging
                .filter(|p| p.next.is_some())
                .and_then(|p| p.cursors?.after);
            if after.is_none() {
                break;
            }
        }
        Err(ConfirmError::NotConfirmed(
            "the number is not one of the business account's numbers".into(),
        ))
    }

    /// One authorised GET of a Graph node or edge.
    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        url: Url,
        access_token: &SecretString,
    ) -> Result<T, ConfirmError> {
        let unavailable =
            |e: reqwest::Error| ConfirmError::Unavailable(transport_error(e).to_string());
        let response = self
            .http
            .get(url)
            .bearer_auth(access_token.expose_secret())
            .send()
            .await
            .map_err(unavailable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unavailable)?;
        interpret_read(status, &body)
    }

    /// Sends one message, once.
    pub async fn send(
        &self,
        phone_number_id: &str,
        access_token: &SecretString,
        message: &Outbound,
    ) -> Result<Sent, SendError> {
        self.send_tagged(phone_number_id, access_token, message, None)
            .await
    }

    /// Sends one message, once, with `callback_data` as its `biz_opaque_callback_data`: Meta
    /// echoes it in every status webhook of the message, so a status can name the message
    /// even when the send's own answer (the wamid) was lost.
    pub async fn send_tagged(
        &self,
        phone_number_id: &str,
        access_token: &SecretString,
        message: &Outbound,
        callback_data: Option<&str>,
    ) -> Result<Sent, SendError> {
        if phone_number_id.trim().is_empty() {
            return Err(SendError::Permanent {
                status: 0,
                code: None,
                message: "the channel has no phone number id".into(),
            });
        }
        let response = self
            .http
            .post(self.messages_url(phone_number_id))
            // `bearer_auth` marks the header sensitive, so it is redacted in debug output.
            .bearer_auth(access_token.expose_secret())
            .json(&message.to_request_body_tagged(callback_data))
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let retry_after = retry_after(response.headers(), OffsetDateTime::now_utc());
        let body = response.bytes().await.map_err(transport_error)?;
        interpret(status, retry_after, &body)
    }
}

impl Outbound {
    /// The recipient.
    pub fn to(&self) -> &str {
        match self {
            Outbound::Text { to, .. }
            | Outbound::Template { to, .. }
            | Outbound::Media { to, .. } => to,
        }
    }

    /// Templates are the only messages allowed outside the 24-hour window.
    pub fn is_template(&self) -> bool {
        matches!(self, Outbound::Template { .. })
    }

    /// The JSON body Graph expects for this message, with Meta's 512-character
    /// `biz_opaque_callback_data` when given.
    pub fn to_request_body_tagged(&self, callback_data: Option<&str>) -> Value {
        let mut body = self.to_request_body();
        if let Some(data) = callback_data {
            body["biz_opaque_callback_data"] = json!(data.chars().take(512).collect::<String>());
        }
        body
    }

    /// The JSON body Graph expects for this message.
    pub fn to_request_body(&self) -> Value {
        let mut body = json!({
            "messaging_product": payload::MESSAGING_PRODUCT,
            "recipient_type": "individual",
        });
        // A user who hides their number behind a username is only reachable by their
        // business-scoped id, which Graph takes as `recipient` instead of `to`.
        let to_key = if is_business_scoped_id(self.to()) {
            "recipient"
        } else {
            "to"
        };
        body[to_key] = json!(self.to());
        match self {
            Outbound::Text {
                body: text,
                preview_url,
                ..
            } => {
                body["type"] = json!("text");
                body["text"] = json!({ "preview_url": preview_url, "body": text });
            }
            Outbound::Template {
                name,
                language,
                components,
                ..
            } => {
                let mut template = json!({ "name": name, "language": { "code": language } });
                let empty =
                    components.is_null() || components.as_array().is_some_and(Vec::is_empty);
                if !empty {
                    template["components"] = components.clone();
                }
                body["type"] = json!("template");
                body["template"] = template;
            }
            Outbound::Media {
                kind,
                source,
                caption,
                filename,
                ..
            } => {
                let mut media = match source {
                    MediaSource::Id(id) => json!({ "id": id }),
                    MediaSource::Link(link) => json!({ "link": link }),
                };
                if let Some(caption) = caption {
                    media["caption"] = json!(caption);
                }
                if let Some(filename) = filename {
                    media["filename"] = json!(filename);
                }
                body["type"] = json!(kind.as_str());
                body[kind.as_str()] = media;
            }
        }
        body
    }
}

impl SendError {
    /// Whether the same message may succeed if sent again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SendError::Retryable { .. } | SendError::Transport(_) | SendError::Unreachable(_)
        )
    }

    /// Whether Meta may have taken the message although we got no answer saying so: the
    /// request left and no answer came back. Sending it again could deliver it twice.
    pub fn may_have_been_sent(&self) -> bool {
        matches!(self, SendError::Transport(_))
    }

    /// How long Meta asked us to wait, when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Retryable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The Graph error code, when Meta gave one.
    pub fn graph_code(&self) -> Option<i64> {
        match self {
            SendError::OutsideWindow { code, .. } => Some(*code),
            SendError::Permanent { code, .. } => *code,
            _ => None,
        }
    }

    /// A stable short name for the kind of failure.
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::Retryable { .. } => "retryable",
            SendError::OutsideWindow { .. } => "outside_window",
            SendError::Permanent { .. } => "permanent",
            SendError::Transport(_) => "transport",
            SendError::Unreachable(_) => "unreachable",
        }
    }

    /// What to store on the message as its provider error.
    pub fn as_json(&self) -> Value {
        let mut value = json!({
            "kind": self.kind(),
            "retryable": self.is_retryable(),
            "message": self.to_string(),
        });
        match self {
            SendError::Retryable {
                status,
                retry_after,
                ..
            } => {
                value["status"] = json!(status);
                if let Some(after) = retry_after {
                    value["retry_after_secs"] = json!(after.as_secs());
                }
            }
            SendError::OutsideWindow { code, .. } => value["code"] = json!(code),
            SendError::Permanent { status, code, .. } => {
                value["status"] = json!(status);
                if let Some(code) = code {
                    value["code"] = json!(code);
                }
            }
            SendError::Transport(_) | SendError::Unreachable(_) => {}
        }
        value
    }
}

/// BSUIDs look like `US.13491208655302741918` (or `US.ENT.…` for parent ids): a
/// two-letter country code and a dot. Phone numbers never contain letters.
fn is_business_scoped_id(to: &str) -> bool {
    let bytes = to.as_bytes();
    bytes.len() > 3
        && bytes[0].is_ascii_uppercase()
        && bytes[1].is_ascii_uppercase()
        && bytes[2] == b'.'
}

/// Sorts a Graph response into success or one of the [`SendError`] kinds.
fn interpret(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Sent, SendError> {
    if status.is_success() {
        let sent = serde_json::from_slice::<RawSendResponse>(body)
            .ok()
            .and_then(|r| {
                let message = r.messages?.into_iter().next()?;
                Some(Sent {
                    wamid: message.id.filter(|id| !id.is_empty())?,
                    wa_id: r.contacts.and_then(|c| c.into_iter().next()?.wa_id),
                    message_status: message.message_status,
                })
            });
        // Not retryable: Meta took the request, and sending again could duplicate it.
        return sent.ok_or_else(|| SendError::Permanent {
            status: status.as_u16(),
            code: None,
            message: "the Graph API accepted the request but returned no message id".into(),
        });
    }

    let error = serde_json::from_slice::<RawErrorResponse>(body)
        .ok()
        .and_then(|r| r.error);
    let code = error
        .as_ref()
        .and_then(|e| e.code.as_ref())
        .and_then(payload::error_code);
    let message = match &error {
        Some(e) => graph_message(e, status),
        None => non_graph_message(status, body),
    };

    match code {
        Some(code) if payload::is_outside_window_code(code) => {
            Err(SendError::OutsideWindow { code, message })
        }
        _ if status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error()
            || code
                .is_some_and(|c| THROTTLING_CODES.contains(&c) || TRANSIENT_CODES.contains(&c)) =>
        {
            Err(SendError::Retryable {
                status: status.as_u16(),
                retry_after,
                message,
            })
        }
        _ => Err(SendError::Permanent {
            status: status.as_u16(),
            code,
            message,
        }),
    }
}

/// Sorts the answer to a read: only Meta's own refusal (a Graph error, not throttling or a
/// fault on its side) says no; anything else says nothing.
fn interpret_read<T: serde::de::DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
) -> Result<T, ConfirmError> {
    if status.is_success() {
        return serde_json::from_slice(body).map_err(|_| {
            ConfirmError::Unavailable(format!(
                "the Graph API answered HTTP {} with an unexpected body: {}",
                status.as_u16(),
                non_graph_message(status, body)
            ))
        });
    }
    let error = serde_json::from_slice::<RawErrorResponse>(body)
        .ok()
        .and_then(|r| r.error);
    let code = error
        .as_ref()
        .and_then(|e| e.code.as_ref())
        .and_then(payload::error_code);
    let temporary = status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
        || code.is_some_and(|c| THROTTLING_CODES.contains(&c) || TRANSIENT_CODES.contains(&c));
    match error {
        Some(e) if status.is_client_error() && !temporary => Err(ConfirmError::NotConfirmed(
            truncate(&graph_message(&e, status)),
        )),
        Some(e) => Err(ConfirmError::Unavailable(format!(
            "the Graph API could not answer (HTTP {}): {}",
            status.as_u16(),
            truncate(&graph_message(&e, status))
        ))),
        None => Err(ConfirmError::Unavailable(format!(
            "the Graph API could not answer (HTTP {}): {}",
            status.as_u16(),
            non_graph_message(status, body)
        ))),
    }
}

fn truncate(text: &str) -> String {
    let mut short: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

fn graph_message(e: &RawGraphError, status: StatusCode) -> String {
    let details = e.error_data.as_ref().and_then(|d| d.details.as_deref());
    match (e.message.as_deref(), details) {
        (Some(m), Some(d)) if !d.is_empty() => format!("{m}: {d}"),
        (Some(m), _) => m.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => status.canonical_reason().unwrap_or("error").to_string(),
    }
}

fn non_graph_message(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status.canonical_reason().unwrap_or("error").to_string();
    }
    truncate(text)
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(headers: &HeaderMap, now: OffsetDateTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, &format)
        .ok()?
        .assume_utc();
    // A date in the past means "now".
    Some((at - now).try_into().unwrap_or(Duration::ZERO))
}

fn transport_error(e: reqwest::Error) -> SendError {
    // The URL holds no secret, but dropping it keeps messages short and stable.
    let e = e.without_url();
    let what = if e.is_timeout() {
        "the request timed out"
    } else if e.is_connect() {
        "the connection failed"
    } else if e.is_body() || e.is_decode() {
        "the response could not be read"
    } else {
        "the request failed"
    };
    let mut message = what.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if e.is_connect() {
        SendError::Unreachable(message)
    } else {
        SendError::Transport(message)
    }
}

#[derive(Deserialize)]
struct RawSendResponse {
    contacts: Option<Vec<RawSendContact>>,
    messages: Option<Vec<RawSendMessage>>,
}

#[derive(Deserialize)]
struct RawSendContact {
    wa_id: Option<String>,
}

#[derive(Deserialize)]
struct RawSendMessage {
    id: Option<String>,
    message_status: Option<String>,
}

#[derive(Deserialize)]
struct RawNumber {
    id: Option<String>,
    display_phone_number: Option<String>,
    verified_name: Option<String>,
}

#[derive(Deserialize)]
struct RawNumberPage {
    #[serde(default)]
    data: Vec<RawNumberId>,
    paging: Option<RawPaging>,
}

#[derive(Deserialize)]
struct RawNumberId {
    id: Option<String>,
}

#[derive(Deserialize)]
struct RawPaging {
    cursors: Option<RawCursors>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct RawCursors {
    after: Option<String>,
}

#[derive(Deserialize)]
struct RawErrorResponse {
    error: Option<RawGraphError>,
}

#[derive(Deserialize)]
struct RawGraphError {
    message: Option<String>,
    code: Option<Value>,
    error_data: Option<RawGraphErrorData>,
}

#[derive(Deserialize)]
struct RawGraphErrorData {
    details: Option<String>,
}

#[cfg(test)]
#[path = "../../../tests/it/fakes/graph.rs"]
mod fake_graph;

#[cfg(test)]
mod tests {
    use super::fake_graph::{FakeGraph, Reply};
    use super::*;
    use std::path::{Path, PathBuf};

    const PHONE_NUMBER_ID: &str = "106540352242922";
    const VERSION: &str = "v23.0";

    fn client(fake: &FakeGraph) -> GraphClient {
        GraphClient::new(&fake.base_url, VERSION, Duration::from_secs(5)).unwrap()
    }

    fn token(fake: &FakeGraph) -> SecretString {
        SecretString::from(fake.token.clone())
    }

    fn text() -> Outbound {
        Outbound::Text {
            to: "16505551234".into(),
            body: "Your replacement part ships today.".into(),
            preview_url: false,
        }
    }

    async fn send_one(fake: &FakeGraph, reply: Reply) -> Result<Sent, SendError> {
        fake.push(reply);
        client(fake)
            .send(PHONE_NUMBER_ID, &token(fake), &text())
            .await
    }

    #[tokio::test]
    async fn a_text_message_is_posted_with_the_bearer_token_and_returns_the_wamid() {
        let fake = FakeGraph::start().await;
        let sent = client(&fake)
            .send(PHONE_NUMBER_ID, &token(&fake), &text())
            .await
            .unwrap();

        let requests = fake.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v23.0/106540352242922/messages");
        assert_eq!(request.version.as_deref(), Some(VERSION));
        assert_eq!(request.phone_number_id.as_deref(), Some(PHONE_NUMBER_ID));
        assert!(request.authorized);
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {}", fake.token).as_str())
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.body,
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "16505551234",
                "type": "text",
                "text": { "preview_url": false, "body": "Your replacement part ships today." }
            })
        );
        assert_eq!(Some(&sent.wamid), request.wamid.as_ref());
        assert!(sent.wamid.starts_with("wamid."));
        assert_eq!(sent.wa_id.as_deref(), Some("16505551234"));
        assert_eq!(sent.message_status.as_deref(), Some("accepted"));
    }

    #[tokio::test]
    async fn templates_and_media_are_posted_in_graph_shape() {
        let fake = FakeGraph::start().await;
        let graph = client(&fake);
        let template = Outbound::Template {
            to: "16505551234".into(),
            name: "order_update".into(),
            language: "en_US".into(),
            components: json!([{ "type": "body", "parameters": [{ "type": "text", "text": "2291" }] }]),
        };
        let bare_template = Outbound::Template {
            to: "16505551234".into(),
            name: "hello_world".into(),
            language: "en_US".into(),
            components: Value::Null,
        };
        let document = Outbound::Media {
            to: "16505551234".into(),
            kind: MediaKind::Document,
            source: MediaSource::Id("1268523917764580".into()),
            caption: Some("Your invoice".into()),
            filename: Some("invoice-2291.pdf".into()),
        };
        let image = Outbound::Media {
            to: "16505551234".into(),
            kind: MediaKind::Image,
            source: MediaSource::Link("https://example.com/part.jpg".into()),
            caption: None,
            filename: None,
        };
        for message in [&template, &bare_template, &document, &image] {
            graph
                .send(PHONE_NUMBER_ID, &token(&fake), message)
                .await
                .unwrap();
        }
        let bodies: Vec<Value> = fake.requests().into_iter().map(|r| r.body).collect();
        assert_eq!(bodies[0]["type"], "template");
        assert_eq!(
            bodies[0]["template"],
            json!({
                "name": "order_update",
                "language": { "code": "en_US" },
                "components": [{ "type": "body", "parameters": [{ "type": "text", "text": "2291" }] }]
            })
        );
        assert_eq!(
            bodies[1]["template"],
            json!({ "name": "hello_world", "language": { "code": "en_US" } })
        );
        assert_eq!(bodies[2]["type"], "document");
        assert_eq!(
            bodies[2]["document"],
            json!({ "id": "1268523917764580", "caption": "Your invoice", "filename": "invoice-2291.pdf" })
        );
        assert_eq!(
            bodies[3]["image"],
            json!({ "link": "https://example.com/part.jpg" })
        );
        assert!(template.is_template() && !document.is_template());
    }

    #[tokio::test]
    async fn a_business_scoped_id_is_sent_as_recipient() {
        let fake = FakeGraph::start().await;
        let message = Outbound::Text {
            to: "US.13491208655302741918".into(),
            body: "Hello".into(),
            preview_url: false,
        };
        client(&fake)
            .send(PHONE_NUMBER_ID, &token(&fake), &message)
            .await
            .unwrap();
        let body = &fake.requests()[0].body;
        assert_eq!(body["recipient"], "US.13491208655302741918");
        assert!(body.get("to").is_none(), "{body}");
        // Phone numbers, with or without `+`, stay in `to`.
        for phone in ["16505551234", "+16505551234"] {
            let body = Outbound::Text {
                to: phone.into(),
                body: "x".into(),
                preview_url: false,
            }
            .to_request_body();
            assert_eq!(body["to"], phone);
            assert!(body.get("recipient").is_none());
        }
    }

    #[tokio::test]
    async fn a_429_surfaces_retry_after_and_is_retryable() {
        let fake = FakeGraph::start().await;
        let err = send_one(
            &fake,
            Reply::TooManyRequests {
                retry_after_secs: Some(7),
            },
        )
        .await
        .unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        match &err {
            SendError::Retryable {
                status, message, ..
            } => {
                assert_eq!(*status, 429);
                assert!(message.contains("130429"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err.as_json()["retry_after_secs"], 7);

        let err = send_one(
            &fake,
            Reply::TooManyRequests {
                retry_after_secs: None,
            },
        )
        .await
        .unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(err.retry_after(), None);
    }

    #[tokio::test]
    async fn a_500_is_retryable() {
        let fake = FakeGraph::start().await;
        let err = send_one(&fake, Reply::ServerError).await.unwrap_err();
        assert!(
            matches!(err, SendError::Retryable { status: 500, .. }),
            "{err:?}"
        );

        let err = send_one(
            &fake,
            Reply::Raw {
                status: 502,
                headers: vec![("content-type".into(), "text/html".into())],
                body: "<html>Bad Gateway</html>".into(),
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, SendError::Retryable { status: 502, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("Bad Gateway"), "{err}");
    }

    #[tokio::test]
    async fn graph_throttling_codes_are_retryable_even_with_a_400() {
        let fake = FakeGraph::start().await;
        let err = send_one(&fake, Reply::pair_rate_limit()).await.unwrap_err();
        assert!(
            matches!(err, SendError::Retryable { status: 400, .. }),
            "{err:?}"
        );
        for code in THROTTLING_CODES.iter().chain(TRANSIENT_CODES) {
            let err = send_one(
                &fake,
                Reply::GraphError {
                    status: 400,
                    code: *code,
                    message: format!("(#{code}) limit"),
                    details: String::new(),
                },
            )
            .await
            .unwrap_err();
            assert!(err.is_retryable(), "code {code}: {err:?}");
        }
    }

    #[tokio::test]
    async fn a_re_engagement_error_means_outside_the_window() {
        let fake = FakeGraph::start().await;
        let err = send_one(&fake, Reply::outside_window()).await.unwrap_err();
        match &err {
            SendError::OutsideWindow { code, message } => {
                assert_eq!(*code, 131_047);
                assert!(message.contains("24 hours"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!err.is_retryable());
        assert_eq!(err.graph_code(), Some(131_047));
        assert_eq!(err.as_json()["kind"], "outside_window");
        assert_eq!(err.as_json()["code"], 131_047);
    }

    #[tokio::test]
    async fn a_400_with_a_graph_error_is_permanent_and_keeps_its_code() {
        let fake = FakeGraph::start().await;
        let err = send_one(&fake, Reply::invalid_parameter())
            .await
            .unwrap_err();
        match &err {
            SendError::Permanent {
                status,
                code,
                message,
            } => {
                assert_eq!(*status, 400);
                assert_eq!(*code, Some(100));
                assert_eq!(
                    message,
                    "(#100) Invalid parameter: Parameter 'to' is not a valid phone number."
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!err.is_retryable());
        assert_eq!(
            err.as_json(),
            json!({
                "kind": "permanent",
                "retryable": false,
                "status": 400,
                "code": 100,
                "message": err.to_string(),
            })
        );
    }

    #[tokio::test]
    async fn a_wrong_token_is_refused_permanently() {
        let fake = FakeGraph::start().await;
        let err = client(&fake)
            .send(
                PHONE_NUMBER_ID,
                &SecretString::from("not-the-token"),
                &text(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SendError::Permanent {
                    status: 401,
                    code: Some(190),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!fake.requests()[0].authorized);
    }

    #[tokio::test]
    async fn a_hanging_server_is_a_transport_error_after_the_timeout() {
        let fake = FakeGraph::start().await;
        fake.push(Reply::Hang);
        let graph = GraphClient::new(&fake.base_url, VERSION, Duration::from_millis(200)).unwrap();
        let started = std::time::Instant::now();
        let err = graph
            .send(PHONE_NUMBER_ID, &token(&fake), &text())
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        match &err {
            SendError::Transport(message) => assert!(message.contains("timed out"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(err.is_retryable());
        assert!(
            err.may_have_been_sent(),
            "an unanswered request may have reached Meta"
        );
        assert_eq!(fake.request_count(), 1);
    }

    #[tokio::test]
    async fn callback_data_is_posted_for_meta_to_echo_in_status_webhooks() {
        let fake = FakeGraph::start().await;
        client(&fake)
            .send_tagged(
                PHONE_NUMBER_ID,
                &token(&fake),
                &text(),
                Some("0190c1f6-0000-7000-8000-000000000001"),
            )
            .await
            .unwrap();
        client(&fake)
            .send(PHONE_NUMBER_ID, &token(&fake), &text())
            .await
            .unwrap();
        let requests = fake.requests();
        assert_eq!(
            requests[0].body["biz_opaque_callback_data"],
            "0190c1f6-0000-7000-8000-000000000001"
        );
        assert!(requests[1].body.get("biz_opaque_callback_data").is_none());
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable_and_so_certainly_not_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let graph =
            GraphClient::new(&format!("http://{addr}"), VERSION, Duration::from_secs(2)).unwrap();
        let err = graph
            .send(PHONE_NUMBER_ID, &SecretString::from("t"), &text())
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Unreachable(_)), "{err:?}");
        assert!(err.is_retryable());
        assert!(!err.may_have_been_sent());
    }

    #[tokio::test]
    async fn a_success_without_a_message_id_is_not_retried() {
        let fake = FakeGraph::start().await;
        let err = send_one(
            &fake,
            Reply::Raw {
                status: 200,
                headers: vec![],
                body: r#"{"messaging_product":"whatsapp","messages":[]}"#.into(),
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, SendError::Permanent { status: 200, .. }),
            "{err:?}"
        );
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn the_access_token_never_appears_in_errors_or_debug_output() {
        let secret = "EAAG-very-secret-token-do-not-log";
        let fake = FakeGraph::start_with_token(secret).await;
        let graph = GraphClient::new(&fake.base_url, VERSION, Duration::from_millis(300)).unwrap();
        let token = SecretString::from(secret);
        let replies = [
            Reply::TooManyRequests {
                retry_after_secs: Some(1),
            },
            Reply::ServerError,
            Reply::outside_window(),
            Reply::invalid_parameter(),
            Reply::Hang,
        ];
        for reply in replies {
            fake.push(reply);
            let err = graph
                .send(PHONE_NUMBER_ID, &token, &text())
                .await
                .unwrap_err();
            for shown in [
                format!("{err}"),
                format!("{err:?}"),
                err.as_json().to_string(),
            ] {
                assert!(!shown.contains(secret), "token leaked: {shown}");
            }
        }
        assert!(!format!("{graph:?}").contains(secret));
        assert!(!format!("{token:?}").contains(secret));
        assert!(fake.requests().iter().all(|r| r.authorized));
    }

    const BUSINESS_ACCOUNT_ID: &str = "102290129340398";

    #[tokio::test]
    async fn a_number_the_token_may_use_is_confirmed_as_meta_shows_it() {
        let fake = FakeGraph::start().await;
        let token = SecretString::from("EAAG-the-owners-token");
        let number = client(&fake)
            .confirm_number(PHONE_NUMBER_ID, BUSINESS_ACCOUNT_ID, &token)
            .await
            .unwrap();
        assert_eq!(number.id, PHONE_NUMBER_ID);
        assert_eq!(
            number.display_phone_number.as_deref(),
            Some("+1 555-078-3881")
        );
        assert_eq!(number.verified_name.as_deref(), Some("Jaspers Market"));
        let lookups = fake.lookups();
        assert_eq!(lookups.len(), 2);
        assert_eq!(lookups[0].method, "GET");
        assert_eq!(lookups[0].path, "/v23.0/106540352242922");
        assert_eq!(lookups[1].path, "/v23.0/102290129340398/phone_numbers");
        for lookup in &lookups {
            // The token goes in the header only, never in a URL that proxies and logs keep.
            assert_eq!(
                lookup.header("authorization"),
                Some("Bearer EAAG-the-owners-token")
            );
        }
        assert_eq!(fake.request_count(), 0, "a lookup sends nothing");
    }

    #[tokio::test]
    async fn a_token_meta_does_not_confirm_for_the_number_is_not_confirmed() {
        let fake = FakeGraph::start().await;
        fake.only_token_for(PHONE_NUMBER_ID, "EAAG-the-owners-token");
        let err = client(&fake)
            .confirm_number(
                PHONE_NUMBER_ID,
                BUSINESS_ACCOUNT_ID,
                &SecretString::from("EAAG-someone-elses-token"),
            )
            .await
            .unwrap_err();
        match &err {
            ConfirmError::NotConfirmed(reason) => {
                assert!(reason.contains("does not exist"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fake.lookups().len(), 1, "no second read after a refusal");
    }

    #[tokio::test]
    async fn a_number_outside_the_business_account_is_not_confirmed() {
        let fake = FakeGraph::start().await;
        fake.add_number("200000000000001", "999999999999999");
        let err = client(&fake)
            .confirm_number(
                "200000000000001",
                BUSINESS_ACCOUNT_ID,
                &SecretString::from("t"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ConfirmError::NotConfirmed(r) if r.contains("not one of the business account")),
            "{err:?}"
        );
        // An account the token cannot see is refused by Meta itself.
        let err = client(&fake)
            .confirm_number(PHONE_NUMBER_ID, "999999999999998", &SecretString::from("t"))
            .await
            .unwrap_err();
        assert!(matches!(err, ConfirmError::NotConfirmed(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_business_accounts_numbers_are_read_page_after_page() {
        let fake = FakeGraph::start().await;
        for n in 0..150u64 {
            fake.add_number(&format!("3000000000{n:05}"), BUSINESS_ACCOUNT_ID);
        }
        let number = client(&fake)
            .confirm_number(
                "300000000000149",
                BUSINESS_ACCOUNT_ID,
                &SecretString::from("t"),
            )
            .await
            .unwrap();
        assert_eq!(number.id, "300000000000149");
        let lookups = fake.lookups();
        assert_eq!(lookups.len(), 3, "{lookups:?}");
        assert!(
            lookups[2].header("authorization").is_some()
                && lookups[2].path.ends_with("/phone_numbers")
        );
    }

    #[tokio::test]
    async fn no_usable_answer_from_meta_is_unavailable_never_a_refusal() {
        let fake = FakeGraph::start().await;
        let graph = GraphClient::new(&fake.base_url, VERSION, Duration::from_millis(300)).unwrap();
        let token = SecretString::from("t");
        let replies = [
            Reply::ServerError,
            Reply::TooManyRequests {
                retry_after_secs: Some(3),
            },
            Reply::pair_rate_limit(),
            Reply::Hang,
            Reply::Raw {
                status: 403,
                headers: vec![("content-type".into(), "text/html".into())],
                body: "<html>Forbidden by proxy</html>".into(),
            },
            Reply::Raw {
                status: 200,
                headers: vec![],
                body: "not json".into(),
            },
        ];
        for reply in replies {
            fake.push_lookup(reply.clone());
            let err = graph
                .confirm_number(PHONE_NUMBER_ID, BUSINESS_ACCOUNT_ID, &token)
                .await
                .unwrap_err();
            assert!(
                matches!(err, ConfirmError::Unavailable(_)),
                "{reply:?}: {err:?}"
            );
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let closed =
            GraphClient::new(&format!("http://{addr}"), VERSION, Duration::from_secs(2)).unwrap();
        let err = closed
            .confirm_number(PHONE_NUMBER_ID, BUSINESS_ACCOUNT_ID, &token)
            .await
            .unwrap_err();
        assert!(matches!(err, ConfirmError::Unavailable(_)), "{err:?}");
    }

    #[test]
    fn the_messages_url_keeps_a_base_path_and_escapes_the_id() {
        let graph = GraphClient::new(
            "https://graph.example.com/proxy/",
            "v23.0",
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            graph.messages_url("106540352242922").as_str(),
            "https://graph.example.com/proxy/v23.0/106540352242922/messages"
        );
        assert_eq!(
            graph.messages_url("1/../2").as_str(),
            "https://graph.example.com/proxy/v23.0/1%2F..%2F2/messages"
        );
    }

    #[test]
    fn bad_configuration_is_refused_at_construction() {
        let t = Duration::from_secs(1);
        assert!(matches!(
            GraphClient::new("graph.facebook.com", "v23.0", t),
            Err(ClientConfigError::BaseUrl(_))
        ));
        assert!(matches!(
            GraphClient::new("ftp://graph.facebook.com", "v23.0", t),
            Err(ClientConfigError::BaseUrl(_))
        ));
        assert!(matches!(
            GraphClient::new("https://graph.facebook.com", "", t),
            Err(ClientConfigError::Version(_))
        ));
        assert!(matches!(
            GraphClient::new("https://graph.facebook.com", "v23.0/x", t),
            Err(ClientConfigError::Version(_))
        ));
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = time::macros::datetime!(2026-06-01 12:00:00 UTC);
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, v.parse().unwrap());
            h
        };
        assert_eq!(
            retry_after(&headers("30"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&headers("Mon, 01 Jun 2026 12:01:30 GMT"), now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after(&headers("Mon, 01 Jun 2026 11:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    fn fixtures_dir() -> PathBuf {
        Path::new(file!())
            .parent()
            .expect("source file has a directory")
            .join("../../../tests/fixtures/whatsapp")
    }

    #[test]
    fn every_graph_response_fixture_is_understood() {
        let expectations: &[(&str, u16, &str)] = &[
            ("graph_send_response.json", 200, "sent"),
            ("graph_error_outside_window.json", 400, "outside_window"),
            ("graph_error_invalid_parameter.json", 400, "permanent"),
            ("graph_error_rate_limit.json", 400, "retryable"),
        ];
        let mut on_disk: Vec<String> = std::fs::read_dir(fixtures_dir())
            .expect("fixtures directory")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("graph_") && n.ends_with(".json"))
            .collect();
        on_disk.sort();
        let mut expected: Vec<String> = expectations.iter().map(|(n, ..)| n.to_string()).collect();
        expected.sort();
        assert_eq!(
            on_disk, expected,
            "every graph_*.json fixture needs an expectation"
        );

        for (name, status, kind) in expectations {
            let body = std::fs::read(fixtures_dir().join(name)).unwrap();
            let outcome = interpret(StatusCode::from_u16(*status).unwrap(), None, &body);
            match (outcome, *kind) {
                (Ok(sent), "sent") => {
                    assert!(sent.wamid.starts_with("wamid."), "{name}");
                    assert_eq!(sent.wa_id.as_deref(), Some("16505551234"), "{name}");
                }
                (Err(err), kind) => assert_eq!(err.kind(), kind, "{name}: {err:?}"),
                (other, kind) => panic!("{name}: expected {kind}, got {other:?}"),
            }
        }
    }
}
