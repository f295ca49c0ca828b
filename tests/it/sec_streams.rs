//! Live event streams under attack: a web chat visitor may not multiply the server's work by
//! opening streams without end, no stream lives forever, and a members' stream ends with the
//! credential that opened it.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{EventStream, Member, Req, TestApp, PASSWORD};

const ORIGIN: &str = "https://shop.example";

/// An open response whose body is read by hand, to see the stream end.
struct Opened {
    status: StatusCode,
    headers: HeaderMap,
    stream: EventStream,
}

impl Opened {
    /// The JSON body of a response that is not a stream (a refusal).
    async fn json(self) -> Value {
        let bytes = self.stream.body.collect().await.expect("body").to_bytes();
        serde_json::from_slice(&bytes).expect("a JSON body")
    }

    /// Reads the stream until the server ends it and returns the kinds of the events it
    /// delivered; fails if it is still open after `secs`.
    async fn read_to_end(&mut self, secs: u64) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut text = String::new();
        loop {
            let frame = tokio::time::timeout_at(deadline, self.stream.body.frame())
                .await
                .unwrap_or_else(|_| panic!("the stream was still open after {secs} s: {text}"));
            match frame {
                None => break,
                Some(frame) => {
                    if let Ok(data) = frame.expect("stream error").into_data() {
                        text.push_str(&String::from_utf8_lossy(&data));
                    }
                }
            }
        }
        text.lines()
            .filter_map(|l| l.strip_prefix("event:"))
            .map(|kind| kind.trim().to_string())
            .collect()
    }

    /// The next event of `kind`, skipping others; fails after `secs` or if the stream ends.
    async fn next_event(&mut self, kind: &str, secs: u64) -> Value {
        self.stream.next_event(kind, secs).await
    }
}

async fn open(app: &TestApp, req: Req) -> Opened {
    let (status, headers, stream) = app.open_stream(req).await;
    Opened {
        status,
        headers,
        stream,
    }
}

fn visitor_stream(inbox: Uuid, token: &str) -> Req {
    Req::get(format!("/api/v1/webchat/{inbox}/events?session={token}")).header("origin", ORIGIN)
}

async fn reply(app: &TestApp, owner: &Member, conversation: Uuid, text: &str) {
    let resp = app
        .send(
            Req::post(format!("/api/v1/conversations/{conversation}/messages"))
                .by(owner)
                .json(json!({ "body": text })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
}

fn assert_too_many_streams(opened: &Opened) {
    assert_eq!(opened.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        opened.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "a refused stream is not opened"
    );
}

// Item 4: how many streams one client may hold open.

#[tokio::test]
async fn a_visitor_session_cannot_hold_more_than_three_streams_open() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, ORIGIN).await;
    let (token, _) = app.visitor_writes(inbox, "hello").await;

    let mut held = Vec::new();
    for _ in 0..3 {
        let opened = open(&app, visitor_stream(inbox, &token)).await;
        assert_eq!(opened.status, StatusCode::OK);
        held.push(opened);
    }
    let refused = open(&app, visitor_stream(inbox, &token)).await;
    assert_too_many_streams(&refused);
    // The widget reads the refusal across origins like any other error.
    assert_eq!(refused.headers["access-control-allow-origin"], ORIGIN);
    let body = refused.json().await;
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("at most 3"));

    // A stream the visitor closes gives its place back.
    held.pop();
    assert_eq!(
        open(&app, visitor_stream(inbox, &token)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_twenty_visitor_streams_open_whatever_the_session() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, ORIGIN).await;

    let mut held = Vec::new();
    let mut refused = None;
    'sessions: for n in 0..7 {
        let (token, _) = app.visitor_writes(inbox, &format!("visitor {n}")).await;
        for _ in 0..3 {
            let opened = open(&app, visitor_stream(inbox, &token).client_ip("203.0.113.7")).await;
            if opened.status != StatusCode::OK {
                refused = Some(opened);
                break 'sessions;
            }
            held.push(opened);
        }
    }
    assert_eq!(held.len(), 20, "streams opened from one address");
    let refused = refused.expect("the 21st stream from one address is refused");
    assert_too_many_streams(&refused);
    assert_eq!(refused.json().await["error"]["code"], "too_many_streams");

    // Another address is not held to the first one's count.
    let (token, _) = app.visitor_writes(inbox, "someone else").await;
    assert_eq!(
        open(
            &app,
            visitor_stream(inbox, &token).client_ip("198.51.100.20")
        )
        .await
        .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_addresses_of_one_ipv6_subscriber_share_one_count() {
    let app = TestApp::spawn_with(|config| config.streams.webchat_per_address = 2).await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, ORIGIN).await;
    let mut held = Vec::new();
    for ip in ["2001:db8:1:2::1", "2001:db8:1:2::ffff"] {
        let (token, _) = app.visitor_writes(inbox, "hello").await;
        let opened = open(&app, visitor_stream(inbox, &token).client_ip(ip)).await;
        assert_eq!(opened.status, StatusCode::OK);
        held.push(opened);
    }
    // A subscriber is handed a whole /64: a fresh address in it is no fresh client.
    let (token, _) = app.visitor_writes(inbox, "hello").await;
    let refused = open(
        &app,
        visitor_stream(inbox, &token).client_ip("2001:db8:1:2:abcd::9"),
    )
    .await;
    assert_too_many_streams(&refused);
    assert_eq!(
        open(
            &app,
            visitor_stream(inbox, &token).client_ip("2001:db8:1:3::1")
        )
        .await
        .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_member_credential_cannot_hold_more_than_its_share_of_streams_open() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let mut held = Vec::new();
    for _ in 0..10 {
        let opened = open(&app, Req::get("/api/v1/events").by(&owner)).await;
        assert_eq!(opened.status, StatusCode::OK);
        held.push(opened);
    }
    let refused = open(&app, Req::get("/api/v1/events").by(&owner)).await;
    assert_too_many_streams(&refused);
    assert_eq!(refused.json().await["error"]["code"], "too_many_streams");
}

// Item 4: what an open stream costs.

#[tokio::test]
async fn replies_in_other_visitors_conversations_cost_a_visitor_stream_no_database_work() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, ORIGIN).await;
    let (token, own) = app.visitor_writes(inbox, "my order").await;
    let (_, other) = app.visitor_writes(inbox, "someone else's order").await;
    crate::inbox::listening(&app).await;

    let mut streams = Vec::new();
    for _ in 0..3 {
        let opened = open(&app, visitor_stream(inbox, &token)).await;
        assert_eq!(opened.status, StatusCode::OK);
        streams.push(opened);
    }
    let before = app.state.streams.lookups();
    for n in 0..10 {
        reply(&app, &owner, other, &format!("reply {n} to someone else")).await;
    }
    // A reply of the visitor's own comes after them on the bus: once every stream delivered
    // it, every stream has dealt with the others.
    reply(&app, &owner, own, "your order ships today").await;
    for stream in &mut streams {
        let message = stream.next_event("message", 10).await;
        assert_eq!(message["body"], "your order ships today");
    }
    // One lookup per stream, for the one reply that was the visitor's.
    assert_eq!(app.state.streams.lookups() - before, 3);
}

// Item 4: no stream lives forever.

#[tokio::test]
async fn a_visitor_stream_ends_when_its_chat_session_expires() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, ORIGIN).await;
    let (token, _) = app.visitor_writes(inbox, "hello").await;
    let mut conn = app.superuser().await;
    sqlx::query("UPDATE webchat_session SET expires_at = now() + interval '2 seconds'")
        .execute(&mut conn)
        .await
        .unwrap();

    let mut stream = open(&app, visitor_stream(inbox, &token)).await;
    assert_eq!(stream.status, StatusCode::OK);
    stream.read_to_end(10).await;
}

#[tokio::test]
async fn no_stream_outlives_the_longest_stream_lifetime() {
    let app = TestApp::spawn_with(|config| {
        config.streams.max_lifetime = Duration::from_secs(1);
    })
    .await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, ORIGIN).await;
    let (token, _) = app.visitor_writes(inbox, "hello").await;

    let mut visitor = open(&app, visitor_stream(inbox, &token)).await;
    let mut member = open(&app, Req::get("/api/v1/events").by(&owner)).await;
    assert_eq!(visitor.status, StatusCode::OK);
    assert_eq!(member.status, StatusCode::OK);
    visitor.read_to_end(10).await;
    member.read_to_end(10).await;
    // Ended, not refused: the client reconnects and is let in again.
    assert_eq!(
        open(&app, visitor_stream(inbox, &token)).await.status,
        StatusCode::OK
    );
}

// Item 5: a members' stream ends with its credential.

#[tokio::test]
async fn a_members_stream_ends_when_its_session_logs_out_and_delivers_nothing_after() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, ORIGIN).await;
    crate::inbox::listening(&app).await;
    let mut stream = open(&app, Req::get("/api/v1/events").by(&owner)).await;
    assert_eq!(stream.status, StatusCode::OK);
    app.visitor_writes(inbox, "before the logout").await;
    stream.next_event("message.created", 10).await;

    let logout = app.send(Req::post("/api/v1/auth/logout").by(&owner)).await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    app.visitor_writes(inbox, "after the logout").await;
    let delivered = stream.read_to_end(10).await;
    assert!(
        !delivered.iter().any(|kind| kind == "message.created"),
        "a logged-out stream delivered {delivered:?}"
    );
}

#[tokio::test]
async fn a_members_stream_ends_when_the_member_is_disabled() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let inbox = app.webchat_inbox(&owner, ORIGIN).await;
    crate::inbox::listening(&app).await;
    let mut stream = open(&app, Req::get("/api/v1/events").by(&agent)).await;
    assert_eq!(stream.status, StatusCode::OK);

    let disabled = app
        .send(
            Req::patch(format!("/api/v1/members/{}", agent.member_id))
                .by(&owner)
                .json(json!({ "status": "disabled" })),
        )
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.body);
    app.visitor_writes(inbox, "after the member left").await;
    let delivered = stream.read_to_end(10).await;
    assert!(
        !delivered.iter().any(|kind| kind == "message.created"),
        "a disabled member's stream delivered {delivered:?}"
    );
}

#[tokio::test]
async fn a_members_stream_opened_with_an_api_token_ends_when_the_token_is_revoked() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (token_id, secret) = app.token(&owner, "agent").await;
    crate::inbox::listening(&app).await;
    let mut stream = open(&app, Req::get("/api/v1/events").bearer(&secret)).await;
    assert_eq!(stream.status, StatusCode::OK);

    let revoked = app
        .send(Req::delete(format!("/api/v1/tokens/{token_id}")).by(&owner))
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    stream.read_to_end(10).await;
}

#[tokio::test]
async fn logging_out_one_session_leaves_the_members_other_sessions_streaming() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, ORIGIN).await;
    let login = app.login("acme", &owner.email, PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let laptop = Member {
        cookie: login.session_cookie().unwrap(),
        ..owner.clone()
    };
    crate::inbox::listening(&app).await;
    let mut stream = open(&app, Req::get("/api/v1/events").by(&laptop)).await;
    assert_eq!(stream.status, StatusCode::OK);

    let logout = app.send(Req::post("/api/v1/auth/logout").by(&owner)).await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    app.visitor_writes(inbox, "still watched").await;
    stream.next_event("message.created", 10).await;
}

#[tokio::test]
async fn a_members_stream_whose_revocation_went_unannounced_ends_at_its_next_check() {
    let app = TestApp::spawn_with(|config| {
        config.streams.recheck = Duration::from_secs(1);
    })
    .await;
    let owner = app.signup("acme").await;
    let mut stream = open(&app, Req::get("/api/v1/events").by(&owner)).await;
    assert_eq!(stream.status, StatusCode::OK);
    // Revoked behind the application's back: no notification, as when the listener was down.
    let mut conn = app.superuser().await;
    sqlx::query("UPDATE session SET revoked_at = now()")
        .execute(&mut conn)
        .await
        .unwrap();
    stream.read_to_end(10).await;
}
