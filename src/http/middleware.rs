//! Middleware every response passes: request ids, metadata, security headers (SEC-8) and
//! the error shape for responses the framework builds on its own.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::RequestMeta;
use crate::error::{error_response, Error};

/// Headers every response carries unless a route set its own (an embeddable widget may).
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    ),
];

pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        let name = HeaderName::from_static(name);
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// How many proxies' entries of `X-Forwarded-For` to trust (`Config::trusted_proxies`).
#[derive(Clone, Copy)]
pub struct TrustedProxies(pub usize);

/// Records where the request came from, for audit rows and throttles.
pub async fn request_meta(
    State(TrustedProxies(hops)): State<TrustedProxies>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = super::peer_addr(req.extensions());
    let meta = RequestMeta::from_parts(req.headers(), peer, hops);
    req.extensions_mut().insert(meta);
    next.run(req).await
}

/// Gives responses that the framework or a tower layer produced (405, 408, 413 from a body
/// limit, a caught panic) the same `{"error":{…}}` shape as our own.
pub async fn error_shape(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // A page's own error page (the web app's) is already what its reader should see.
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_json || is_html {
        return response;
    }
    let (code, message) = match status {
        StatusCode::BAD_REQUEST => ("bad_request", "the request is malformed"),
        StatusCode::UNAUTHORIZED => ("unauthorized", "authentication required"),
        StatusCode::FORBIDDEN => ("forbidden", "not allowed"),
        StatusCode::NOT_FOUND => ("not_found", "not found"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "method not allowed for this route")
        }
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "unsupported content type")
        }
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests"),
        s if s.is_server_error() => ("internal", "an internal error occurred"),
        _ => ("error", "the request failed"),
    };
    let (parts, _) = response.into_parts();
    let mut shaped = error_response(status, code, message);
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    shaped
}

pub async fn not_found(req: Request<Body>) -> Error {
    tracing::debug!(path = %req.uri().path(), "no route");
    Error::NotFound
}

/// A panic in a handler becomes an opaque 500 in our shape; the process lives on.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "an internal error occurred",
    )
}
