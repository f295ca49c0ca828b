//! A fake Graph API (WhatsApp Cloud API messages endpoint) for tests.
//!
//! Real HTTP on `127.0.0.1:0`, served by a task on the current tokio runtime, so the
//! code under test talks to it exactly as it would to Meta: point the Graph client's
//! base URL at [`FakeGraph::base_url`]. Every request is recorded (path, headers, JSON
//! body) and answered from a script of [`Reply`]s pushed by the test; with the script
//! empty it accepts the message with a fresh wamid.
//!
//! ```ignore
//! let fake = FakeGraph::start().await;
//! fake.push(Reply::TooManyRequests { retry_after_secs: Some(7) });
//! // ... send through the client with base_url = fake.base_url, token = fake.token ...
//! assert_eq!(fake.requests()[0].body["to"], "16505551234");
//! ```
//!
//! This file depends on no crate item, so it can be mounted by any test target.
#![allow(dead_code)] // each test target uses a different part of the fake

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// The access token the fake accepts unless started with another.
pub const TOKEN: &str = "fake-graph-access-token";

/// How long [`Reply::Hang`] holds a request before giving up; far beyond any client
/// timeout a test would set, short enough not to pin a task for the whole run.
const HANG_FOR: Duration = Duration::from_secs(120);

/// One scripted answer of the fake.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 200 with a generated `wamid.FAKE…` id, like Graph's send response.
    Accepted,
    /// 200 with this wamid.
    AcceptedWith { wamid: String },
    /// 429 with Graph's throughput error body and, if given, `Retry-After: <secs>`.
    TooManyRequests { retry_after_secs: Option<u64> },
    /// 500 with Graph's generic "unknown error" body.
    ServerError,
    /// Any Graph error body (`{"error": {...}}`) with this HTTP status.
    GraphError {
        status: u16,
        code: i64,
        message: String,
        details: String,
    },
    /// Never answers (until well after any client timeout).
    Hang,
    /// Takes the message (recorded with this wamid, as Meta would have it) and holds its 200
    /// until [`FakeGraph::release`]: the sender may die while Meta already has the message.
    AcceptedOnRelease { wamid: String },
    /// Exactly this response.
    Raw {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

impl Reply {
    /// Meta's answer to a free-form message outside the 24-hour window.
    pub fn outside_window() -> Reply {
        Reply::GraphError {
            status: 400,
            code: 131_047,
            message: "(#131047) Re-engagement message".into(),
            details: "Message failed to send because more than 24 hours have passed \
                      since the customer last replied to this number."
                .into(),
        }
    }

    /// A permanent 400: Graph's invalid-parameter error.
    pub fn invalid_parameter() -> Reply {
        Reply::GraphError {
            status: 400,
            code: 100,
            message: "(#100) Invalid parameter".into(),
            details: "Parameter 'to' is not a valid phone number.".into(),
        }
    }

    /// Meta's per-recipient throttle, which Graph returns with HTTP 400.
    pub fn pair_rate_limit() -> Reply {
        Reply::GraphError {
            status: 400,
            code: 131_056,
            message: "(#131056) (Business Account, Consumer Account) pair rate limit hit".into(),
            details: "Message failed to send because there were too many messages sent \
                      from this phone number to the same phone number in a short period of time."
                .into(),
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path only, e.g. `/v23.0/106540352242922/messages`.
    pub path: String,
    /// Set when the path matched `/{version}/{phone_number_id}/messages`.
    pub version: Option<String>,
    pub phone_number_id: Option<String>,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The JSON body, or `Value::Null` when it was not JSON.
    pub body: Value,
    /// Whether the `Authorization: Bearer` token matched.
    pub authorized: bool,
    /// The wamid the fake answered with, for accepted messages.
    pub wamid: Option<String>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    token: String,
    /// Opened by [`FakeGraph::release`] for held answers.
    gate: tokio::sync::watch::Sender<bool>,
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    next_wamid: AtomicU64,
}

/// A running fake; the server stops when this is dropped.
pub struct FakeGraph {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub base_url: String,
    /// The bearer token it accepts.
    pub token: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeGraph {
    /// Starts a fake that accepts [`TOKEN`].
    pub async fn start() -> FakeGraph {
        FakeGraph::start_with_token(TOKEN).await
    }

    pub async fn start_with_token(token: &str) -> FakeGraph {
        let shared = Arc::new(Shared {
            token: token.to_string(),
            gate: tokio::sync::watch::channel(false).0,
            script: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            next_wamid: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/{version}/{phone_number_id}/messages", post(messages))
            .fallback(unknown_route)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Graph API on loopback");
        let addr = listener.local_addr().expect("fake Graph API address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake Graph API server");
        });
        FakeGraph {
            base_url: format!("http://{addr}"),
            token: token.to_string(),
            shared,
            server,
        }
    }

    /// Queues the answer to the next unanswered request.
    pub fn push(&self, reply: Reply) {
        self.shared.script.lock().unwrap().push_back(reply);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Lets held answers ([`Reply::AcceptedOnRelease`]) go.
    pub fn release(&self) {
        self.shared.gate.send_replace(true);
    }

    /// Replies pushed but not yet used.
    pub fn pending_replies(&self) -> usize {
        self.shared.script.lock().unwrap().len()
    }
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    Path((version, phone_number_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == shared.token);
    let mut recorded = record(method, &uri, &headers, &body, authorized);
    recorded.version = Some(version);
    recorded.phone_number_id = Some(phone_number_id);

    if !authorized {
        // Graph's answer to a missing or bad token; the script is left untouched.
        shared.requests.lock().unwrap().push(recorded);
        return graph_error(
            401,
            190,
            "Invalid OAuth access token - Cannot parse access token",
            None,
        );
    }

    let reply = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::Accepted);
    let reply = match reply {
        Reply::Accepted => {
            let n = shared.next_wamid.fetch_add(1, Ordering::Relaxed);
            Reply::AcceptedWith {
                wamid: format!("wamid.FAKE{n:06}{}", uuid::Uuid::new_v4().simple()),
            }
        }
        other => other,
    };
    if let Reply::AcceptedWith { wamid } | Reply::AcceptedOnRelease { wamid } = &reply {
        recorded.wamid = Some(wamid.clone());
    }
    // `recipient` carries a business-scoped user id instead of a phone number.
    let to = ["to", "recipient"]
        .iter()
        .find_map(|k| recorded.body.get(*k).cloned())
        .unwrap_or(Value::Null);
    shared.requests.lock().unwrap().push(recorded);
    if let Reply::AcceptedOnRelease { wamid } = reply {
        let mut gate = shared.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
        return respond(Reply::AcceptedWith { wamid }, to).await;
    }
    respond(reply, to).await
}

async fn unknown_route(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Recorded too: a request on the wrong path is what a failing test needs to see.
    let recorded = record(method, &uri, &headers, &body, false);
    shared.requests.lock().unwrap().push(recorded);
    graph_error(
        404,
        803,
        &format!("Unknown path components: {}", uri.path()),
        None,
    )
}

fn record(
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    authorized: bool,
) -> Recorded {
    Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        version: None,
        phone_number_id: None,
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
        authorized,
        wamid: None,
    }
}

async fn respond(reply: Reply, to: Value) -> Response {
    match reply {
        Reply::Accepted | Reply::AcceptedOnRelease { .. } => {
            unreachable!("replaced by AcceptedWith before responding")
        }
        Reply::AcceptedWith { wamid } => {
            let input = to.as_str().unwrap_or_default().to_string();
            let wa_id = input.trim_start_matches('+').to_string();
            (
                StatusCode::OK,
                axum::Json(json!({
                    "messaging_product": "whatsapp",
                    "contacts": [{ "input": input, "wa_id": wa_id }],
                    "messages": [{ "id": wamid, "message_status": "accepted" }]
                })),
            )
                .into_response()
        }
        Reply::TooManyRequests { retry_after_secs } => {
            let mut response = graph_error(
                429,
                130_429,
                "(#130429) Rate limit hit",
                Some("Cloud API message throughput has been reached."),
            );
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(secs));
            }
            response
        }
        Reply::ServerError => graph_error(500, 1, "An unknown error occurred", None),
        Reply::GraphError {
            status,
            code,
            message,
            details,
        } => graph_error(status, code, &message, Some(&details)),
        Reply::Hang => {
            tokio::time::sleep(HANG_FOR).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Reply::Raw {
            status,
            headers,
            body,
        } => {
            let mut response = (status_code(status), body).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(
                    HeaderName::try_from(name).expect("valid header name"),
                    HeaderValue::try_from(value).expect("valid header value"),
                );
            }
            response
        }
    }
}

/// Graph's error envelope, as the Cloud API returns it.
fn graph_error(status: u16, code: i64, message: &str, details: Option<&str>) -> Response {
    let mut error = json!({
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AbCdEfGhIjKlMnOpQrStUvW"
    });
    if let Some(details) = details {
        error["error_data"] = json!({ "messaging_product": "whatsapp", "details": details });
    }
    (status_code(status), axum::Json(json!({ "error": error }))).into_response()
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).expect("valid HTTP status in a scripted reply")
}
