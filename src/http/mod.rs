//! HTTP plumbing shared by every domain: extractors that answer in our error shape, request
//! metadata, the route registry (where each route declares its access), middleware, OpenAPI,
//! and the egress policy every outbound call to a tenant-named address follows.

pub mod api;
pub mod contract;
pub mod ctx;
pub mod docs;
pub mod egress;
pub mod middleware;
pub mod openapi;
pub mod request_log;

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;

pub use api::{Access, Api, RouteSpec};
pub use contract::Contract;
pub use ctx::{Credential, Ctx};

/// The value of the cookie `name` the request carries, from any of its `Cookie` headers.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// The name of the cookie that carries a browser session (set by `auth`, named here so the
/// API description can say where the credential goes).
pub const SESSION_COOKIE: &str = "custodian_session";

/// JSON in and out. Malformed input is refused with our error shape, never axum's plain text.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_type);
        if !is_json {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Error::PayloadTooLarge
                } else {
                    Error::bad_request("invalid_body", rejection.body_text())
                }
            })?;
        // PostgreSQL's text and jsonb cannot hold U+0000: refuse it here, clearly, rather than
        // fail in the database.
        if nul_escapes(&bytes).next().is_some() {
            return Err(Error::bad_request(
                "invalid_text",
                "text may not contain the NUL character (\\u0000)",
            ));
        }
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
            Error::bad_request("malformed_json", "the request body is not valid JSON")
        })?;
        settle_numbers(&mut value)?;
        serde_json::from_value(value).map(Json).map_err(|e| {
            Error::bad_request(
                "invalid_body",
                format!("Failed to deserialize the JSON body into the target type: {e}"),
            )
        })
    }
}

/// The smallest and largest magnitude a JSON number may have (besides zero): PostgreSQL's jsonb
/// keeps numbers as exact decimals, and one far smaller (`1e-311`) comes back as a text of
/// hundreds of digits that cannot be read again, so a stored body would break every read.
pub const NUMBER_MAGNITUDE: (f64, f64) = (1e-300, 1e300);

/// Refuses numbers outside `NUMBER_MAGNITUDE`, and writes a whole number written as a float
/// (`224.0`, which JSON Schema calls an integer) as the integer, so an integer field takes it.
fn settle_numbers(value: &mut serde_json::Value) -> Result<(), Error> {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            let (smallest, largest) = NUMBER_MAGNITUDE;
            if f != 0.0 && !(smallest..=largest).contains(&f.abs()) {
                return Err(Error::bad_request(
                    "invalid_number",
                    "numbers must be 0 or between 1e-300 and 1e300 in magnitude",
                ));
            }
            // Whole numbers up to 2^53 are exact in a float, and so in the integer.
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().try_for_each(settle_numbers)?,
        Value::Object(map) => map.values_mut().try_for_each(settle_numbers)?,
        _ => {}
    }
    Ok(())
}

/// Where a JSON text holds the escape `\u0000` (a NUL character in a string), by byte offset.
/// An escaped backslash followed by `u0000` is ordinary text and does not count.
pub fn nul_escapes(json: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < json.len() {
            if json[i] != b'\\' {
                i += 1;
                continue;
            }
            let at = i;
            if json[i + 1..].starts_with(b"u0000") {
                i += 6;
                return Some(at);
            }
            // Any other escape: skip the backslash and the escaped character.
            i += 2;
        }
        None
    })
}

/// Whether a `Content-Type` value names JSON (`application/json`, `application/…+json`).
fn is_json_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence
        .strip_prefix("application/")
        .is_some_and(|sub| sub == "json" || sub.ends_with("+json"))
}

/// Refuses a request that declares a content type other than JSON, or carries a body without
/// declaring one: every route that takes a body takes JSON (the registry puts this in front of
/// every POST, PUT, PATCH and DELETE). A request without a body passes, for the routes whose
/// action needs none.
pub async fn json_bodies_only(req: Request, next: axum::middleware::Next) -> Response {
    use axum::body::HttpBody;
    let declared = req.headers().get(axum::http::header::CONTENT_TYPE);
    let acceptable = match declared {
        Some(value) => value.to_str().is_ok_and(is_json_type),
        None => req.body().size_hint().exact() == Some(0),
    };
    if acceptable {
        next.run(req).await
    } else {
        Error::UnsupportedMediaType.into_response()
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters; a malformed id is a clear 400, not a framework message.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Invalid UTF-8 in a segment is axum's rejection below (`invalid_path`).
        check_text(parts.uri.path())?;
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| Error::bad_request("invalid_path", e.body_text()))
    }
}

/// Query string parameters.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        check_text(parts.uri.query().unwrap_or_default())?;
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| Error::bad_request("invalid_query", e.body_text()))
    }
}

/// Refuses a percent-encoded path or query string that decodes to a NUL character or to bytes
/// that are not UTF-8, before any value of it reaches a handler: PostgreSQL's text cannot hold
/// NUL, and a lossy decoding would hand the handler a value the client did not send.
fn check_text(encoded: &str) -> Result<(), Error> {
    for part in encoded.split(['&', '=', '/']) {
        let decoded = percent_decode(part);
        if decoded.contains(&0) {
            return Err(Error::bad_request(
                "invalid_text",
                "the path and query may not contain the NUL character (%00)",
            ));
        }
        if std::str::from_utf8(&decoded).is_err() {
            return Err(Error::bad_request(
                "invalid_text",
                "the path and query must be UTF-8 once percent-decoded",
            ));
        }
    }
    Ok(())
}

/// `%XX` escapes decoded; a `%` without two hex digits after it stays as it is, as the
/// form decoding reads it.
fn percent_decode(part: &str) -> Vec<u8> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// Where a request came from, for audit rows and throttles. Filled in by middleware for
/// every request, authenticated or not.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl RequestMeta {
    /// `proxies` is how many trusted proxies stand in front of the server (0: none, the peer
    /// is the client).
    pub fn from_parts(headers: &HeaderMap, peer: Option<SocketAddr>, proxies: usize) -> Self {
        let text = |name: &str, max: usize| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(max).collect::<String>())
        };
        RequestMeta {
            ip: client_ip(headers, peer, proxies),
            user_agent: text("user-agent", 512),
            request_id: text("x-request-id", 128),
        }
    }
}

/// The client's address. Each trusted proxy appends the address it received the request from
/// to `X-Forwarded-For`, so behind `proxies` of them the client's address is that many entries
/// from the right; whatever lies further left came with the request and the client chose it.
/// A list too short for the proxies, or an entry there that is no address, means the request
/// did not arrive the way the proxies were declared: the peer is taken then, never an entry
/// the client may have written.
fn client_ip(headers: &HeaderMap, peer: Option<SocketAddr>, proxies: usize) -> Option<IpAddr> {
    let peer = peer.map(|p| p.ip().to_canonical());
    let Some(from_right) = proxies.checked_sub(1) else {
        return peer;
    };
    // Several header lines form one list, in order; the bytes are split before any decoding
    // so that a client's garbage on the left cannot spoil the proxies' entries on the right.
    headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|b| *b == b','))
        .nth(from_right)
        .and_then(forwarded_address)
        .or(peer)
}

/// One `X-Forwarded-For` entry: an address, or an address and port as some proxies write it.
fn forwarded_address(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestMeta>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The peer address when the server was started with connect info (tests may not be).
pub fn peer_addr(parts: &axum::http::Extensions) -> Option<SocketAddr> {
    parts.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// For `Option<Option<T>>` fields of update bodies: absent stays `None` (unchanged, with
/// `#[serde(default)]`), while an explicit `null` becomes `Some(None)` (clear).
pub fn explicit_null<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// Timestamps in hand-built JSON (`json!`) as RFC 3339 strings, like every typed response;
/// `time`'s own serialisation would give a tuple of numbers.
pub trait Rfc3339 {
    fn rfc3339(&self) -> serde_json::Value;
}

impl Rfc3339 for time::OffsetDateTime {
    fn rfc3339(&self) -> serde_json::Value {
        self.format(&time::format_description::well_known::Rfc3339)
            .map(serde_json::Value::String)
            .unwrap_or(serde_json::Value::Null)
    }
}

impl Rfc3339 for Option<time::OffsetDateTime> {
    fn rfc3339(&self) -> serde_json::Value {
        self.as_ref()
            .map_or(serde_json::Value::Null, Rfc3339::rfc3339)
    }
}

/// One page of a cursor-paginated list. The cursor names the last item of a full page (a
/// shorter page is the last one): the caller asks for the items after it next.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(bound = "T: utoipa::ToSchema")]
pub struct Page<T, C = uuid::Uuid> {
    pub items: Vec<T>,
    /// Ask for the next page with this as `after`; `null` on the last page. Opaque: every
    /// cursor is a string (an id, or an encoded position).
    #[schema(value_type = Option<String>)]
    pub next_cursor: Option<C>,
}

impl<T, C> Page<T, C> {
    /// `items` as fetched with `LIMIT limit`; `cursor` reads an item's cursor value.
    pub fn new(items: Vec<T>, limit: i64, cursor: impl FnOnce(&T) -> C) -> Self {
        let next_cursor = if items.len() as i64 == limit {
            items.last().map(cursor)
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(
                "x-forwarded-for",
                axum::http::HeaderValue::from_bytes(line).unwrap(),
            );
        }
        headers
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    const PEER: &str = "10.1.2.3:40000";

    fn client(lines: &[&[u8]], proxies: usize) -> Option<IpAddr> {
        client_ip(&headers(lines), Some(PEER.parse().unwrap()), proxies)
    }

    #[test]
    fn behind_one_proxy_the_entry_it_appended_is_the_client_not_what_the_client_wrote() {
        assert_eq!(client(&[b"6.6.6.6, 203.0.113.5"], 1), ip("203.0.113.5"));
        assert_eq!(client(&[b"203.0.113.5"], 1), ip("203.0.113.5"));
    }

    #[test]
    fn behind_two_proxies_the_address_the_outer_one_saw_is_the_client() {
        let line: &[u8] = b"6.6.6.6, 203.0.113.5, 192.0.2.1";
        assert_eq!(client(&[line], 2), ip("203.0.113.5"));
    }

    #[test]
    fn several_header_lines_are_one_list_in_order() {
        assert_eq!(
            client(&[b"6.6.6.6", b"203.0.113.5, 192.0.2.1"], 2),
            ip("203.0.113.5")
        );
        assert_eq!(client(&[b"6.6.6.6", b"203.0.113.5"], 1), ip("203.0.113.5"));
    }

    #[test]
    fn a_list_shorter_than_the_proxies_gives_the_peer_never_a_client_entry() {
        assert_eq!(client(&[b"6.6.6.6"], 2), ip("10.1.2.3"));
        assert_eq!(client(&[], 1), ip("10.1.2.3"));
    }

    #[test]
    fn a_malformed_entry_where_the_proxy_writes_gives_the_peer() {
        assert_eq!(client(&[b"203.0.113.5, unknown"], 1), ip("10.1.2.3"));
        assert_eq!(client(&[b"203.0.113.5,"], 1), ip("10.1.2.3"));
    }

    #[test]
    fn client_garbage_left_of_the_proxy_entries_does_not_matter() {
        assert_eq!(
            client(&[b"\xff\xfe junk,,, 203.0.113.5"], 1),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn entries_with_ports_and_mapped_v4_addresses_are_read_as_their_address() {
        assert_eq!(client(&[b"203.0.113.5:443"], 1), ip("203.0.113.5"));
        assert_eq!(client(&[b"[2001:db8::1]:443"], 1), ip("2001:db8::1"));
        assert_eq!(client(&[b"::ffff:203.0.113.5"], 1), ip("203.0.113.5"));
    }

    #[test]
    fn a_nul_or_invalid_utf8_in_the_path_or_query_is_refused_and_other_text_passes() {
        for bad in ["actor_id=%00", "q=a%00b", "q=%FF", "%00=x", "q=%C3"] {
            assert!(check_text(bad).is_err(), "{bad}");
        }
        for good in [
            "",
            "q=caf%C3%A9",
            "q=100%",
            "q=%zz",
            "q=a+b&limit=3",
            "/api/v1/x",
        ] {
            assert!(check_text(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        assert_eq!(client(&[b"203.0.113.5"], 0), ip("10.1.2.3"));
        assert_eq!(client_ip(&headers(&[b"203.0.113.5"]), None, 0), None);
    }
}
