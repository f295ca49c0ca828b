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
mod tests {
    use super::*;

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
}
