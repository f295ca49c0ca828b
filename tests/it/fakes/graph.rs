//! A fake Graph API (WhatsApp Cloud API messages endpoint and the business-number reads that
//! prove a token may use a number) for tests.
//!
//! Real HTTP on `127.0.0.1:0`, served by a task on the current tokio runtime, so the
//! code under test talks to it exactly as it would to Meta: point the Graph client's
//! base URL at [`FakeGraph::base_url`]. Every request is recorded (path, headers, JSON
//! body) and answered from a script of [`Reply`]s pushed by the test; with the script
//! empty it accepts the message with a fresh wamid.
//!
//! Reads of a number (`GET /{version}/{phone_number_id}`) and of a business account's numbers
//! (`GET /{version}/{waba_id}/phone_numbers`) are answered from the numbers the fake knows
//! ([`FakeGraph::add_number`]; the fixtures' number is known from the start) and recorded
//! apart from sends ([`FakeGraph::lookups`]), so tests counting sends are not disturbed. Any
//! token may use a known number until a test says which alone may
//! ([`FakeGraph::only_token_for`]), as when another business owns it.
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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

/// The access token the fake accepts unless started with another.
pub const TOKEN: &str = "fake-graph-access-token";

/// The business number of Meta's example payloads (tests/fixtures/whatsapp), and the
/// WhatsApp Business Account that holds it.
pub const FIXTURE_NUMBER: &str = "106540352242922";
pub const FIXTURE_BUSINESS_ACCOUNT: &str = "102290129340398";

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

/// A business number as the fake's Graph knows it.
#[derive(Debug, Clone)]
struct Number {
    business_account_id: String,
    display_phone_number: String,
    verified_name: String,
    /// The tokens that may use it; `None` lets any token.
    tokens: Option<Vec<String>>,
}

struct Shared {
    token: String,
    numbers: Mutex<HashMap<String, Number>>,
    /// Answers to the next number reads; with it empty they are answered from `numbers`.
    lookup_script: Mutex<VecDeque<Reply>>,
    lookups: Mutex<Vec<Recorded>>,
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
        let fixture = Number {
            business_account_id: FIXTURE_BUSINESS_ACCOUNT.into(),
            display_phone_number: "+1 555-078-3881".into(),
            verified_name: "Jaspers Market".into(),
            tokens: None,
        };
        let shared = Arc::new(Shared {
            token: token.to_string(),
            numbers: Mutex::new(HashMap::from([(FIXTURE_NUMBER.to_string(), fixture)])),
            lookup_script: Mutex::new(VecDeque::new()),
            lookups: Mutex::new(Vec::new()),
            gate: tokio::sync::watch::channel(false).0,
            script: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            next_wamid: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/{version}/{phone_number_id}/messages", post(messages))
            .route("/{version}/{node_id}", get(number))
            .route("/{version}/{node_id}/phone_numbers", get(business_numbers))
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

    /// Makes a business number of `business_account_id` known; any token may use it.
    pub fn add_number(&self, phone_number_id: &str, business_account_id: &str) {
        let display = format!("+1 555-{}", &phone_number_id[phone_number_id.len() - 7..]);
        self.shared.numbers.lock().unwrap().insert(
            phone_number_id.to_string(),
            Number {
                business_account_id: business_account_id.to_string(),
                display_phone_number: display,
                verified_name: format!("Business {phone_number_id}"),
                tokens: None,
            },
        );
    }

    /// From now on only `token` may use the number: Meta's answer to any other token is that
    /// the number does not exist for it. Panics for a number the fake does not know.
    pub fn only_token_for(&self, phone_number_id: &str, token: &str) {
        let mut numbers = self.shared.numbers.lock().unwrap();
        let number = numbers
            .get_mut(phone_number_id)
            .expect("a number the fake knows");
        number.tokens = Some(vec![token.to_string()]);
    }

    /// Queues the answer to the next read of a number or of a business account's numbers.
    pub fn push_lookup(&self, reply: Reply) {
        self.shared.lookup_script.lock().unwrap().push_back(reply);
    }

    /// Every read of a number or of a business account's numbers, oldest first.
    pub fn lookups(&self) -> Vec<Recorded> {
        self.shared.lookups.lock().unwrap().clone()
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

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Records a number read and takes its scripted answer, if any ([`Reply::Accepted`] answers
/// as the fake knows the numbers).
fn lookup(shared: &Shared, method: Method, uri: &Uri, headers: &HeaderMap) -> Option<Reply> {
    let authorized = bearer(headers) == Some(shared.token.as_str());
    let recorded = record(method, uri, headers, &Bytes::new(), authorized);
    shared.lookups.lock().unwrap().push(recorded);
    let reply = shared.lookup_script.lock().unwrap().pop_front();
    reply.filter(|r| *r != Reply::Accepted)
}

/// What Graph answers for a node the token may not see, or that does not exist: the two are
/// told apart by no one, on purpose.
fn no_such_node(id: &str) -> Response {
    let body = json!({ "error": {
        "message": format!("Unsupported get request. Object with ID '{id}' does not exist, \
            cannot be loaded due to missing permissions, or does not support this operation."),
        "type": "GraphMethodException",
        "code": 100,
        "error_subcode": 33,
        "fbtrace_id": "AbCdEfGhIjKlMnOpQrStUvW"
    }});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn may_use(number: &Number, token: Option<&str>) -> bool {
    match (token, &number.tokens) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(token), Some(tokens)) => tokens.iter().any(|t| t == token),
    }
}

/// `GET /{version}/{phone_number_id}?fields=…`: the number, to a token that may use it.
async fn number(
    State(shared): State<Arc<Shared>>,
    Path((_version, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(reply) = lookup(&shared, method, &uri, &headers) {
        return respond(reply, Value::Null).await;
    }
    let Some(token) = bearer(&headers) else {
        return graph_error(
            400,
            190,
            "An access token is required to request this resource.",
            None,
        );
    };
    let known = shared.numbers.lock().unwrap().get(&id).cloned();
    match known {
        Some(number) if may_use(&number, Some(token)) => axum::Json(json!({
            "verified_name": number.verified_name,
            "display_phone_number": number.display_phone_number,
            "id": id,
        }))
        .into_response(),
        _ => no_such_node(&id),
    }
}

/// `GET /{version}/{waba_id}/phone_numbers`: the account's numbers, to a token that may use
/// at least one of them, a page of `limit` at a time (`after` is the index to go on from).
async fn business_numbers(
    State(shared): State<Arc<Shared>>,
    Path((_version, waba)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(reply) = lookup(&shared, method, &uri, &headers) {
        return respond(reply, Value::Null).await;
    }
    let token = bearer(&headers);
    let mut ids: Vec<String> = shared
        .numbers
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, n)| n.business_account_id == waba)
        .filter(|(_, n)| may_use(n, token))
        .map(|(id, _)| id.clone())
        .collect();
    if ids.is_empty() {
        return no_such_node(&waba);
    }
    ids.sort();
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(25);
    let from: usize = query.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let page: Vec<Value> = ids
        .iter()
        .skip(from)
        .take(limit.max(1))
        .map(|id| json!({ "id": id }))
        .collect();
    let next = from + page.len();
    let mut paging =
        json!({ "cursors": { "before": from.to_string(), "after": next.to_string() } });
    if next < ids.len() {
        paging["next"] = json!(format!("{}?after={next}&limit={limit}", uri.path()));
    }
    axum::Json(json!({ "data": page, "paging": paging })).into_response()
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
