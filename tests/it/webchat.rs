//! The web chat: a visitor's round trip over SSE, identity verification, allowed origins, and
//! the embeddable widget.

use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::common::{Req, TestApp};

#[tokio::test]
async fn a_visitor_message_reaches_the_inbox_and_the_reply_arrives_over_sse() {
    let app = TestApp::spawn().await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (token, conversation) = app.visitor_writes(inbox, "Where is my order #4411?").await;

    let (status, headers, mut stream) = app
        .open_stream(
            Req::get(format!("/api/v1/webchat/{inbox}/events?session={token}"))
                .header("origin", "https://shop.example"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let thread = app
        .send(Req::get(format!("/api/v1/conversations/{conversation}/messages")).by(&owner))
        .await;
    assert_eq!(thread.body["items"][0]["body"], "Where is my order #4411?");
    // The AI finds no answer in the (empty) knowledge base and hands over: the visitor is told
    // that a person will reply, in their language, instead of waiting in silence.
    let handoff = stream.next_event("message", 10).await;
    assert_eq!(handoff["author_kind"], "ai");
    let notice = handoff["body"].as_str().unwrap().to_string();
    assert!(notice.contains("a colleague will pick up"), "{notice}");
    // A note first: it must never reach the visitor.
    app.send(
        Req::post(format!("/api/v1/conversations/{conversation}/messages"))
            .by(&owner)
            .json(json!({ "body": "internal: check the warehouse", "private": true })),
    )
    .await;
    let reply = app
        .send(
            Req::post(format!("/api/v1/conversations/{conversation}/messages"))
                .by(&owner)
                .json(json!({ "body": "It ships tomorrow." })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let received = stream.next_event("message", 10).await;
    assert_eq!(received["body"], "It ships tomorrow.");
    assert_eq!(received["author_kind"], "member");

    // Resuming with the token continues the same conversation.
    let resumed = app
        .send(
            Req::post(format!("/api/v1/webchat/{inbox}/sessions"))
                .json(json!({ "session_token": token })),
        )
        .await;
    assert_eq!(resumed.status, StatusCode::OK);
    let history = app
        .send(
            Req::get(format!("/api/v1/webchat/{inbox}/messages"))
                .header("x-webchat-session", token.clone()),
        )
        .await;
    let bodies: Vec<&str> = history.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        vec![
            "Where is my order #4411?",
            notice.as_str(),
            "It ships tomorrow."
        ]
    );
}

#[tokio::test]
async fn a_visitor_message_retried_with_the_same_client_id_is_stored_once() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (token, _) = app.visitor_writes(inbox, "first").await;
    let id = uuid::Uuid::new_v4();
    for expected in [StatusCode::CREATED, StatusCode::OK, StatusCode::OK] {
        let resp = app
            .send(
                Req::post(format!("/api/v1/webchat/{inbox}/messages"))
                    .header("x-webchat-session", token.clone())
                    .json(json!({ "body": "retry me", "client_message_id": id })),
            )
            .await;
        assert_eq!(resp.status, expected);
    }
    assert_eq!(
        app.count("SELECT count(*) FROM message WHERE body = 'retry me'")
            .await,
        1
    );
    let no_session = app
        .send(
            Req::post(format!("/api/v1/webchat/{inbox}/messages"))
                .json(json!({ "body": "who am I" })),
        )
        .await;
    assert_eq!(no_session.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn browsers_may_use_the_chat_only_from_the_inboxs_allowed_origins() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let preflight = app
        .send(
            Req::new(
                axum::http::Method::OPTIONS,
                format!("/api/v1/webchat/{inbox}/messages"),
            )
            .header("origin", "https://shop.example"),
        )
        .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    assert_eq!(
        preflight.headers["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(preflight.headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("x-webchat-session"));

    let evil = app
        .send(
            Req::post(format!("/api/v1/webchat/{inbox}/sessions"))
                .header("origin", "https://evil.example")
                .json(json!({})),
        )
        .await;
    assert_eq!(evil.status, StatusCode::FORBIDDEN);
    assert!(evil.headers.get("access-control-allow-origin").is_none());
    let evil_preflight = app
        .send(
            Req::new(
                axum::http::Method::OPTIONS,
                format!("/api/v1/webchat/{inbox}/sessions"),
            )
            .header("origin", "https://evil.example"),
        )
        .await;
    assert_eq!(evil_preflight.status, StatusCode::FORBIDDEN);
    assert_eq!(app.count("SELECT count(*) FROM webchat_session").await, 0);
    let unknown = app
        .send(
            Req::post(format!("/api/v1/webchat/{}/sessions", uuid::Uuid::new_v4())).json(json!({})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

fn user_hash(secret: &str, user_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(user_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

// proves: SEC-9
#[tokio::test]
async fn identity_verification_accepts_only_the_tenants_own_hmac_of_the_user_id() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let resp = app
        .send(Req::post("/api/v1/inboxes").by(&owner).json(json!({
            "name": "Logged-in chat", "channel": "webchat",
            "webchat": { "allowed_origins": ["https://app.acme.example"], "identity_required": true, "identity_secret": "tenant-identity-secret" }
        })))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    let inbox = resp.uuid("/id");
    let path = format!("/api/v1/webchat/{inbox}/sessions");

    let anonymous = app
        .send(Req::post(&path).json(json!({ "name": "Anon" })))
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let forged = app
        .send(
            Req::post(&path)
                .json(json!({ "user_id": "42", "user_hash": user_hash("guessed-secret", "42") })),
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let swapped = app
        .send(Req::post(&path).json(
            json!({ "user_id": "43", "user_hash": user_hash("tenant-identity-secret", "42") }),
        ))
        .await;
    assert_eq!(swapped.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.count("SELECT count(*) FROM contact").await, 0);

    let verified = app.send(Req::post(&path).json(json!({ "user_id": "42", "user_hash": user_hash("tenant-identity-secret", "42"), "name": "Ana" }))).await;
    assert_eq!(verified.status, StatusCode::CREATED, "{}", verified.body);
    assert_eq!(verified.body["verified"], true);
    let again = app
        .send(Req::post(&path).json(
            json!({ "user_id": "42", "user_hash": user_hash("tenant-identity-secret", "42") }),
        ))
        .await;
    assert_eq!(
        again.body["contact_id"], verified.body["contact_id"],
        "the same user became two contacts"
    );
    let contact = app
        .send(
            Req::get(format!(
                "/api/v1/contacts/{}",
                verified.body["contact_id"].as_str().unwrap()
            ))
            .by(&owner),
        )
        .await;
    assert_eq!(contact.body["external_id"], "42");
}

#[tokio::test]
async fn the_widget_script_is_served_for_any_page_to_embed() {
    let app = TestApp::spawn().await;
    let resp = app.send(Req::get("/widget.js")).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/javascript"));
    assert_eq!(resp.headers["cross-origin-resource-policy"], "cross-origin");
    let script = resp.body.as_str().unwrap();
    for needle in [
        "/api/v1/webchat/",
        "EventSource",
        "x-webchat-session",
        "data-inbox",
        "client_message_id",
    ] {
        assert!(script.contains(needle), "the widget does not use {needle}");
    }
}

#[tokio::test]
async fn errors_reach_the_widget_with_cors_headers_for_an_allowed_origin() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (token, _) = app.visitor_writes(inbox, "hello").await;
    let origin = "https://shop.example";
    // The session ran out: the widget must be able to read the 401 and start a new one.
    let mut conn = app.superuser().await;
    sqlx::query("UPDATE webchat_session SET expires_at = now() - interval '1 second'")
        .execute(&mut conn)
        .await
        .unwrap();
    let cases = [
        Req::get(format!("/api/v1/webchat/{inbox}/messages"))
            .header("origin", origin)
            .header("x-webchat-session", token.clone()),
        Req::post(format!("/api/v1/webchat/{inbox}/messages"))
            .header("origin", origin)
            .header("x-webchat-session", token.clone())
            .json(json!({ "body": "still there?" })),
        Req::get(format!("/api/v1/webchat/{inbox}/events?session={token}"))
            .header("origin", origin),
        Req::post(format!("/api/v1/webchat/{inbox}/messages"))
            .header("origin", origin)
            .raw("application/json", "{not json"),
        Req::get(format!("/api/v1/webchat/{inbox}/events")).header("origin", origin),
        Req::post(format!("/api/v1/webchat/{inbox}/sessions"))
            .header("origin", origin)
            .json(json!({ "user_id": "42", "user_hash": "00" })),
    ];
    let expected = [
        StatusCode::UNAUTHORIZED,
        StatusCode::UNAUTHORIZED,
        StatusCode::UNAUTHORIZED,
        StatusCode::UNAUTHORIZED,
        StatusCode::BAD_REQUEST,
        StatusCode::BAD_REQUEST,
    ];
    for (req, status) in cases.into_iter().zip(expected) {
        let resp = app.send(req).await;
        assert_eq!(resp.status, status, "{}", resp.body);
        resp.error_code();
        assert_eq!(
            resp.headers
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            Some(origin),
            "{status}: {}",
            resp.body
        );
    }
    // Another origin still learns nothing.
    let evil = app
        .send(
            Req::get(format!("/api/v1/webchat/{inbox}/messages"))
                .header("origin", "https://evil.example")
                .header("x-webchat-session", token),
        )
        .await;
    assert_eq!(evil.status, StatusCode::FORBIDDEN);
    assert!(evil.headers.get("access-control-allow-origin").is_none());
}

// proves: AUD-1
#[tokio::test]
async fn contacts_and_sessions_a_channel_creates_are_audited_alike_with_the_visitors_address() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let resp = app
        .send(Req::post("/api/v1/inboxes").by(&owner).json(json!({
            "name": "Chat", "channel": "webchat",
            "webchat": { "allowed_origins": ["https://shop.example"], "identity_secret": "s3cret" }
        })))
        .await;
    let inbox = resp.uuid("/id");
    let path = format!("/api/v1/webchat/{inbox}/sessions");
    let visitor = |body: serde_json::Value| {
        Req::post(&path)
            .client_ip("203.0.113.9")
            .header("user-agent", "Mozilla/5.0 (visitor)")
            .json(body)
    };
    let anonymous = app
        .send(visitor(
            json!({ "name": "Anon", "email": "anon@example.com" }),
        ))
        .await;
    assert_eq!(anonymous.status, StatusCode::CREATED);
    // A verified user first without a name, then with one: the name fills in, audited.
    let hash = user_hash("s3cret", "u-7");
    let first = app
        .send(visitor(json!({ "user_id": "u-7", "user_hash": hash })))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let second = app
        .send(visitor(
            json!({ "user_id": "u-7", "user_hash": hash, "name": "Ana" }),
        ))
        .await;
    assert_eq!(second.body["contact_id"], first.body["contact_id"]);
    // A member creates one too, for comparison.
    let member_made = app
        .send(
            Req::post("/api/v1/contacts")
                .by(&owner)
                .json(json!({ "name": "Hank" })),
        )
        .await;
    assert_eq!(member_made.status, StatusCode::CREATED);

    let created = app.audit_events(owner.tenant_id, "contact.created").await;
    assert_eq!(created.len(), 3);
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !k.ends_with("_at"))
            .cloned()
            .collect();
        k.sort();
        k
    };
    for event in &created[..2] {
        assert_eq!(event["actor_type"], "channel");
        assert_eq!(event["actor_id"], inbox.to_string());
        assert_eq!(event["ip"], "203.0.113.9");
        assert_eq!(event["user_agent"], "Mozilla/5.0 (visitor)");
        assert_eq!(event["entity_id"], event["after"]["id"]);
        assert_eq!(keys(&event["after"]), keys(&created[2]["after"]), "{event}");
    }
    assert_eq!(created[0]["after"]["name"], "Anon");
    assert_eq!(
        created[0]["after"]["attributes"]["claimed_email"],
        "anon@example.com"
    );
    assert_eq!(created[1]["after"]["external_id"], "u-7");
    let named = app.audit_events(owner.tenant_id, "contact.updated").await;
    assert_eq!(named.len(), 1);
    assert_eq!(named[0]["before"]["name"], serde_json::Value::Null);
    assert_eq!(named[0]["after"]["name"], "Ana");

    let sessions = app
        .audit_events(owner.tenant_id, "webchat_session.created")
        .await;
    assert_eq!(sessions.len(), 3);
    for (event, resp) in sessions.iter().zip([&anonymous, &first, &second]) {
        assert_eq!(event["actor_type"], "channel");
        assert_eq!(event["ip"], "203.0.113.9");
        assert_eq!(event["after"]["contact_id"], resp.body["contact_id"]);
        let token = resp.body["session_token"].as_str().unwrap();
        assert!(
            !event.to_string().contains(token),
            "a session token was audited"
        );
    }
    assert_eq!(sessions[1]["after"]["verified"], true);
}

#[tokio::test]
async fn a_visitor_stream_that_falls_behind_is_told_to_resync() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (token, _) = app.visitor_writes(inbox, "hello").await;
    crate::inbox::listening(&app).await;
    let (status, _, mut stream) = app
        .open_stream(Req::get(format!(
            "/api/v1/webchat/{inbox}/events?session={token}"
        )))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut bus = app.state.bus.subscribe();
    let event = json!({ "tenant_id": owner.tenant_id, "kind": "conversation.updated", "conversation_id": null, "message_id": null, "data": {} }).to_string();
    let mut conn = app.superuser().await;
    // Distinct payloads: PostgreSQL folds identical notifications of one transaction into one.
    sqlx::query(
        "SELECT pg_notify('custodian_events', jsonb_set($1::jsonb, '{data,n}', to_jsonb(i))::text)
         FROM generate_series(1, 1500) AS i",
    )
    .bind(&event)
    .execute(&mut conn)
    .await
    .unwrap();
    let mut heard = 0u64;
    while heard < 1500 {
        match tokio::time::timeout(std::time::Duration::from_secs(10), bus.recv())
            .await
            .expect("the notifications to arrive")
        {
            Ok(_) => heard += 1,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => heard += n,
            Err(e) => panic!("{e}"),
        }
    }
    let resync = stream.next_event("resync", 10).await;
    assert!(resync["missed"].as_u64().unwrap() > 0, "{resync}");
}

/// An empty identity secret would let anyone prove any user id: it is refused, when the inbox
/// is created and when the secret is rotated.
#[tokio::test]
async fn an_empty_identity_secret_is_refused() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let created = app
        .send(Req::post("/api/v1/inboxes").by(&owner).json(json!({
            "name": "Site chat", "channel": "webchat",
            "webchat": { "allowed_origins": ["https://shop.example"], "identity_secret": "" }
        })))
        .await;
    assert_eq!(created.status, StatusCode::BAD_REQUEST, "{}", created.body);
    assert_eq!(created.error_code(), "missing_field");
    assert_eq!(app.count("SELECT count(*) FROM inbox").await, 0);

    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let rotated = app
        .send(
            Req::patch(format!("/api/v1/inboxes/{inbox}"))
                .by(&owner)
                .json(json!({ "webchat": { "identity_secret": "" } })),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::BAD_REQUEST, "{}", rotated.body);
    assert_eq!(rotated.error_code(), "missing_field");
}

#[tokio::test]
async fn an_inbox_body_with_an_unknown_field_or_channel_is_refused_and_a_channel_never_changes() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    for body in [
        json!({ "name": "Chat", "channel": "webchat", "colour": "blue" }),
        json!({ "name": "Chat", "channel": "sms" }),
        json!({ "name": "Chat" }),
    ] {
        let resp = app
            .send(Req::post("/api/v1/inboxes").by(&owner).json(body.clone()))
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            resp.body
        );
        assert_eq!(resp.error_code(), "invalid_body", "{body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM inbox").await, 0);

    // An inbox keeps its channel: a change naming one is refused, even its own.
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    for channel in ["webchat", "whatsapp"] {
        let resp = app
            .send(
                Req::patch(format!("/api/v1/inboxes/{inbox}"))
                    .by(&owner)
                    .json(json!({ "name": "Renamed", "channel": channel })),
            )
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.body);
        assert_eq!(resp.error_code(), "invalid_body");
    }
    let kept = app
        .send(Req::get(format!("/api/v1/inboxes/{inbox}")).by(&owner))
        .await;
    assert_ne!(kept.body["name"], "Renamed");
}

/// Verified visitors need a key to verify them. A change that asks for both and for no key is
/// a bad request; one that leaves the inbox as it stands without a key conflicts with it.
#[tokio::test]
async fn an_inbox_never_requires_verified_visitors_without_an_identity_secret() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let change = |body: serde_json::Value| {
        Req::patch(format!("/api/v1/inboxes/{inbox}"))
            .by(&owner)
            .json(json!({ "webchat": body }))
    };
    for (body, status, code) in [
        (
            json!({ "identity_required": true, "identity_secret": null }),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
        // The inbox has no key yet.
        (
            json!({ "identity_required": true }),
            StatusCode::CONFLICT,
            "identity_secret_required",
        ),
    ] {
        let resp = app.send(change(body.clone())).await;
        assert_eq!(resp.status, status, "{body}: {}", resp.body);
        assert_eq!(resp.error_code(), code, "{body}");
    }
    let required = app
        .send(change(
            json!({ "identity_required": true, "identity_secret": "s3cret" }),
        ))
        .await;
    assert_eq!(required.status, StatusCode::OK, "{}", required.body);
    let removed = app.send(change(json!({ "identity_secret": null }))).await;
    assert_eq!(removed.status, StatusCode::CONFLICT, "{}", removed.body);
    assert_eq!(removed.error_code(), "identity_secret_required");
    let off = app
        .send(change(
            json!({ "identity_required": false, "identity_secret": null }),
        ))
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    assert_eq!(off.body["settings"]["identity_required"], false);
}
