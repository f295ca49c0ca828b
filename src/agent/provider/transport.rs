//! The retrying HTTP transport under async-openai's client (AGT-11): it sends with reqwest,
//! retries 408/429/5xx and transport failures with capped, jittered backoff (honouring
//! `Retry-After` seconds), counts attempts, and reads a final failure's body into a
//! [`ProviderError`]. It is its own file because none of this depends on what is being asked.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use reqwest013::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER};
use reqwest013::StatusCode;
use serde_json::Value;

use super::ProviderError;

#[derive(Debug, Clone, Copy)]
pub(super) struct RetryPolicy {
    pub(super) max_retries: u32,
    pub(super) base_delay: Duration,
    pub(super) max_delay: Duration,
}

impl RetryPolicy {
    /// `retry` counts from 0 for the wait before the first retry.
    fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_delay);
        }
        let exponential = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max_delay);
        // Jitter keeps many conversations hit by one outage from retrying in lockstep.
        exponential.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.5..=1.0))
    }
}

pub(super) fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// The HTTP transport under async-openai's client: sends, retries, counts attempts,
/// and classifies failures. Only 2xx responses are passed up to async-openai.
#[derive(Clone)]
pub(super) struct Transport {
    pub(super) http: reqwest013::Client,
    pub(super) retry: RetryPolicy,
    pub(super) send_auth: bool,
    pub(super) attempts: Arc<AtomicU32>,
}

impl tower::Service<HttpRequestFactory> for Transport {
    type Response = reqwest013::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let transport = self.clone();
        Box::pin(async move {
            transport
                .send(factory)
                .await
                .map_err(|e| OpenAIError::Boxed(Box::new(e)))
        })
    }
}

impl Transport {
    async fn send(
        self,
        factory: HttpRequestFactory,
    ) -> Result<reqwest013::Response, ProviderError> {
        let mut retry = 0;
        loop {
            let mut request = factory
                .build()
                .await
                .map_err(|e| ProviderError::Config(format!("building the request: {e}")))?;
            if self.send_auth {
                if let Some(value) = request.headers_mut().get_mut(AUTHORIZATION) {
                    value.set_sensitive(true);
                }
            } else {
                // async-openai always writes `Bearer <key>`; with no key that is an empty
                // bearer, which some servers refuse.
                request.headers_mut().remove(AUTHORIZATION);
            }
            let attempt = self.attempts.fetch_add(1, Ordering::Relaxed) + 1;
            let (failure, retry_after) = match self.http.execute(request).await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let body = response.text().await.unwrap_or_default();
                    let message = error_message(&body);
                    if !is_retryable(status) || is_quota_exhausted(status, &body) {
                        return Err(ProviderError::Rejected {
                            status: status.as_u16(),
                            message,
                        });
                    }
                    (format!("HTTP {}: {message}", status.as_u16()), retry_after)
                }
                Err(e) if e.is_builder() => {
                    return Err(ProviderError::Config(describe_transport_error(&e)))
                }
                Err(e) => (describe_transport_error(&e), None),
            };
            if retry >= self.retry.max_retries {
                return Err(ProviderError::Unavailable {
                    attempts: attempt,
                    last: failure,
                });
            }
            let delay = self.retry.delay(retry, retry_after);
            tracing::warn!(attempt, ?delay, %failure, "model provider call failed; retrying");
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }
}

/// `Retry-After` in seconds; the HTTP-date form is ignored (backoff applies instead).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// OpenAI answers 429 both for rate limits (worth a retry) and for an exhausted quota
/// (not until someone pays).
fn is_quota_exhausted(status: StatusCode, body: &str) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS && body.contains("insufficient_quota")
}

/// The human part of an error body: OpenAI's `{"error": {"message"}}`, Ollama's
/// `{"error": "..."}`, FastAPI's `{"detail"}`, or the text itself; never long.
fn error_message(body: &str) -> String {
    let json = serde_json::from_str::<Value>(body).ok();
    let message = json
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("error"))
                .or_else(|| v.get("message"))
                .or_else(|| v.get("detail"))
        })
        .map(|m| match m {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| body.trim().to_string());
    truncate(message, 300)
}

fn truncate(mut text: String, max_chars: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max_chars) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// reqwest's Display names the URL (base URL and path, never the key); the kind is what
/// a reader needs.
pub(super) fn describe_transport_error(error: &reqwest013::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "failed reading the response"
    } else {
        "request failed"
    };
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    truncate(text, 300)
}
