//! The WhatsApp Cloud API channel against Meta's example payloads and a fake Graph API that
//! speaks the real wire format over real HTTP.

use axum::http::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{customer_then_reply, eventually, fast_worker, fixture, Member, Req, TestApp};
use crate::fakes::graph::{FakeGraph, Reply};

async fn setup() -> (TestApp, FakeGraph, Member, Uuid, String) {
    let fake = FakeGraph::start().await;
    let url = fake.base_url.clone();
    let app = TestApp::spawn_with(|c| fast_worker(c, &url)).await;
    let owner = app.signup("acme").await;
    let (inbox, secret) = app.whatsapp_inbox(&owner, &fake.token).await;
    // These tests script the fake's next answers for the member's messages: the agent's notice
    // that a person takes over (the offline responder finds no knowledge) would race them for it.
    let quiet = app
        .send(
            Req::new(axum::http::Method::PUT, "/api/v1/agent/settings")
                .by(&owner)
                .json(
                    json!({ "guardrails": { "options": { "quiet_handoffs": ["no_knowledge"] } } }),
                ),
        )
        .await;
    assert_eq!(quiet.status, StatusCode::OK, "{}", quiet.body);
    (app, fake, owner, inbox, secret)
}

async fn messages(app: &TestApp) -> Vec<Value> {
    let mut conn = app.superuser().await;
    sqlx::query_scalar("SELECT to_jsonb(m) FROM message m ORDER BY created_at, id")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_verification_handshake_answers_the_challenge_only_for_the_right_token() {
    let (app, _fake, _owner, inbox, _) = setup().await;
    let ok = app
        .send(Req::get(format!("/webhooks/whatsapp/{inbox}?hub.mode=subscribe&hub.verify_token=the-verify-token&hub.challenge=1158201444")))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body, json!(1158201444));
    assert!(ok.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=the-verify-token&hub.challenge=1",
        "hub.verify_token=the-verify-token&hub.challenge=1",
    ] {
        let resp = app
            .send(Req::get(format!("/webhooks/whatsapp/{inbox}?{query}")))
            .await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{query}");
    }
    let unknown = app
        .send(Req::get(format!("/webhooks/whatsapp/{}?hub.mode=subscribe&hub.verify_token=the-verify-token&hub.challenge=1", Uuid::new_v4())))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

// proves: SEC-9
#[tokio::test]
async fn a_webhook_with_a_missing_or_wrong_signature_is_refused_and_stores_nothing() {
    let (app, _fake, _owner, inbox, secret) = setup().await;
    let body = fixture("text");
    let path = format!("/webhooks/whatsapp/{inbox}");
    let unsigned = app
        .send(Req::post(&path).raw("application/json", body.clone()))
        .await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unsigned.error_code(), "bad_signature");
    let wrong_key = custodian::channels::whatsapp::signature::sign(b"not the app secret", &body);
    let other_body = custodian::channels::whatsapp::signature::sign(secret.as_bytes(), b"{}");
    for signature in [wrong_key, other_body, "sha256=zz".into(), "garbage".into()] {
        let resp = app
            .send(
                Req::post(&path)
                    .raw("application/json", body.clone())
                    .header("x-hub-signature-256", signature.clone()),
            )
            .await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{signature}");
    }
    assert_eq!(app.count("SELECT count(*) FROM message").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM contact").await, 0);
    // The same bytes, correctly signed, are accepted.
    assert_eq!(
        app.webhook(inbox, &body, &secret).await.status,
        StatusCode::OK
    );
    assert_eq!(app.count("SELECT count(*) FROM message").await, 1);
}

#[tokio::test]
async fn a_text_message_opens_a_conversation_with_a_contact_from_the_whatsapp_identity() {
    let (app, _fake, owner, inbox, secret) = setup().await;
    assert_eq!(
        app.webhook(inbox, &fixture("text"), &secret).await.status,
        StatusCode::OK
    );
    let list = app.send(Req::get("/api/v1/conversations").by(&owner)).await;
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["channel"], "whatsapp");
    assert_eq!(items[0]["handler"], "ai");
    assert_eq!(items[0]["status"], "open");
    let contact = app
        .send(
            Req::get(format!(
                "/api/v1/contacts/{}",
                items[0]["contact_id"].as_str().unwrap()
            ))
            .by(&owner),
        )
        .await;
    assert_eq!(contact.body["whatsapp_id"], "16505551234");
    assert_eq!(contact.body["phone"], "+16505551234");
    assert_eq!(contact.body["name"], "Sheena Nelson");
    let thread = app
        .send(
            Req::get(format!(
                "/api/v1/conversations/{}/messages",
                items[0]["id"].as_str().unwrap()
            ))
            .by(&owner),
        )
        .await;
    let message = &thread.body["items"][0];
    assert_eq!(message["direction"], "inbound");
    assert_eq!(message["author_kind"], "customer");
    assert!(message["provider_message_id"]
        .as_str()
        .unwrap()
        .starts_with("wamid."));
    assert!(!message["body"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn the_same_wamid_delivered_a_hundred_times_is_stored_once() {
    let (app, _fake, _owner, inbox, secret) = setup().await;
    let body = fixture("text");
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let router = app.router.clone();
        let signature = custodian::channels::whatsapp::signature::sign(secret.as_bytes(), &body);
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let req = axum::http::Request::post(format!("/webhooks/whatsapp/{inbox}"))
                .header("content-type", "application/json")
                .header("x-hub-signature-256", signature)
                .body(axum::body::Body::from(body))
                .unwrap();
            router.oneshot(req).await.unwrap().status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(app.count("SELECT count(*) FROM message").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM conversation").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM contact").await, 1);
}

/// The stored message of a fixture, by its wamid.
async fn stored(app: &TestApp, name: &str) -> Value {
    let parsed = custodian::channels::whatsapp::parse(&fixture(name)).unwrap();
    let wamid = parsed
        .events
        .iter()
        .find_map(|e| match e {
            custodian::channels::whatsapp::Event::Message(m) => Some(m.provider_message_id.clone()),
            _ => None,
        })
        .unwrap();
    messages(app)
        .await
        .into_iter()
        .find(|m| m["provider_message_id"] == wamid.as_str())
        .unwrap_or_else(|| panic!("{name}: no message {wamid} stored"))
}

/// Meta's Unix seconds, as the API and `to_jsonb` render a timestamptz.
fn meta_time(seconds: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(seconds).unwrap()
}

fn parsed_time(value: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        value.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap_or_else(|e| panic!("{value}: {e}"))
}

#[tokio::test]
async fn every_message_type_of_metas_examples_is_stored_with_its_contents_and_unknown_types_as_unsupported(
) {
    let (app, _fake, _owner, inbox, secret) = setup().await;
    let names = [
        "text",
        "text_reply",
        "image",
        "audio_voice",
        "video",
        "document",
        "sticker",
        "location",
        "contacts",
        "reaction",
        "reaction_removed",
        "interactive_button_reply",
        "interactive_list_reply",
        "button",
        "unsupported",
        "unknown_type",
        "text_from_username_user",
    ];
    for name in names {
        let resp = app.webhook(inbox, &fixture(name), &secret).await;
        assert_eq!(resp.status, StatusCode::OK, "{name}: {}", resp.body);
    }
    assert_eq!(
        app.count("SELECT count(*) FROM message").await,
        names.len() as i64
    );

    let m = stored(&app, "text").await;
    assert_eq!(
        (&m["content_type"], &m["body"], &m["attachments"]),
        (
            &json!("text"),
            &json!("Does it come in another color?"),
            &json!([])
        )
    );
    // Meta's own time of the message, not when we received it.
    assert_eq!(
        parsed_time(&m["provider_timestamp"]),
        meta_time(1_749_416_383)
    );
    let m = stored(&app, "text_reply").await;
    assert_eq!(m["body"], "Yes, the blue one please");

    let m = stored(&app, "image").await;
    assert_eq!(m["content_type"], "image");
    assert_eq!(m["body"], "Is this the right part?");
    assert_eq!(
        m["attachments"],
        json!([{ "kind": "image", "media_id": "1003383421387256", "mime_type": "image/jpeg",
                 "caption": "Is this the right part?",
                 "sha256": "7Rj1u9QFzU0I/5pVk4xzzYSQfT0Sq1aNbKkJ5F8E7wU=" }])
    );
    let m = stored(&app, "audio_voice").await;
    assert_eq!(
        (&m["content_type"], &m["body"]),
        (&json!("audio"), &json!("[voice message]"))
    );
    assert_eq!(m["attachments"][0]["media_id"], "1148529823564190");
    assert_eq!(m["attachments"][0]["mime_type"], "audio/ogg; codecs=opus");
    assert_eq!(m["attachments"][0]["voice"], true);
    let m = stored(&app, "video").await;
    assert_eq!(
        (&m["content_type"], &m["body"]),
        (&json!("video"), &json!("[video]"))
    );
    assert_eq!(m["attachments"][0]["media_id"], "1326985748621395");
    let m = stored(&app, "document").await;
    assert_eq!(m["body"], "Here is the invoice");
    assert_eq!(m["attachments"][0]["filename"], "invoice-2291.pdf");
    assert_eq!(m["attachments"][0]["mime_type"], "application/pdf");
    let m = stored(&app, "sticker").await;
    assert_eq!(
        (&m["content_type"], &m["body"]),
        (&json!("sticker"), &json!("[sticker]"))
    );
    assert_eq!(m["attachments"][0]["media_id"], "1502851637118476");

    let m = stored(&app, "location").await;
    assert_eq!(m["body"], "[location] Philz Coffee");
    assert_eq!(
        m["attachments"],
        json!([{ "kind": "location", "latitude": 37.483307, "longitude": -122.148981,
                 "name": "Philz Coffee", "address": "101 Forest Ave, Palo Alto, CA 94301" }])
    );

    let m = stored(&app, "contacts").await;
    assert_eq!(m["body"], "[contact] Barbara J. Johnson");
    let card = &m["attachments"][0];
    assert_eq!(card["kind"], "contacts");
    assert_eq!(
        card["contacts"][0]["name"]["formatted_name"],
        "Barbara J. Johnson"
    );
    assert_eq!(card["contacts"][0]["phones"][1]["wa_id"], "16505551234");
    assert_eq!(
        card["contacts"][0]["emails"][0]["email"],
        "bjohnson@example.com"
    );
    assert_eq!(card["contacts"][0]["org"]["company"], "Lucky Shrub");

    let reacted_to = "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA";
    let m = stored(&app, "reaction").await;
    assert_eq!(
        (&m["content_type"], &m["body"]),
        (&json!("reaction"), &json!("[reaction 👍]"))
    );
    assert_eq!(
        m["attachments"],
        json!([{ "kind": "reaction", "message_id": reacted_to, "emoji": "👍", "removed": false }])
    );
    let m = stored(&app, "reaction_removed").await;
    assert_eq!(m["body"], "[reaction removed]");
    assert_eq!(
        m["attachments"],
        json!([{ "kind": "reaction", "message_id": reacted_to, "emoji": "", "removed": true }])
    );

    // What the customer chose, by the business's own id, not only by its title.
    let m = stored(&app, "interactive_button_reply").await;
    assert_eq!(
        (&m["content_type"], &m["body"]),
        (&json!("button_reply"), &json!("Yes, reschedule"))
    );
    assert_eq!(
        m["attachments"],
        json!([{ "kind": "button_reply", "id": "reschedule-yes", "title": "Yes, reschedule",
                 "context_message_id": reacted_to }])
    );
    let m = stored(&app, "interactive_list_reply").await;
    assert_eq!(
        (&m["content_type"], &m["body"]),
        (&json!("list_reply"), &json!("Priority shipping"))
    );
    assert_eq!(
        m["attachments"],
        json!([{ "kind": "list_reply", "id": "shipping-priority", "title": "Priority shipping",
                 "description": "Arrives in 1-2 business days",
                 "context_message_id": "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBJBQjFDQjE4RjBGNTQ1RkQ3QTMA" }])
    );
    let m = stored(&app, "button").await;
    assert_eq!(
        (&m["content_type"], &m["body"]),
        (&json!("button"), &json!("Stop promotions"))
    );
    assert_eq!(
        m["attachments"],
        json!([{ "kind": "button", "payload": "STOP_PROMOTIONS", "text": "Stop promotions",
                 "context_message_id": reacted_to }])
    );

    let m = stored(&app, "unsupported").await;
    assert_eq!(
        (&m["content_type"], &m["body"]),
        (
            &json!("unsupported"),
            &json!("[unsupported message: unsupported]")
        )
    );
    assert_eq!(m["attachments"][0]["raw"]["errors"][0]["code"], 131051);
    let m = stored(&app, "unknown_type").await;
    assert_eq!(m["content_type"], "unsupported");
    assert_eq!(m["body"], "[unsupported message: order]");
    assert_eq!(
        m["attachments"][0]["raw"]["order"]["catalog_id"],
        "194836987003835"
    );

    // A username user is known by their business-scoped id; their number stays unknown.
    let m = stored(&app, "text_from_username_user").await;
    assert_eq!(m["body"], "Hi, it's Sheena from the username account");
    let mut conn = app.superuser().await;
    let (wa_id, phone, name): (String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT p.whatsapp_id, p.phone, p.name FROM message m JOIN conversation c ON c.id = m.conversation_id
         JOIN contact p ON p.id = c.contact_id WHERE m.id = $1",
    )
    .bind(Uuid::parse_str(m["id"].as_str().unwrap()).unwrap())
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(wa_id, "US.13491208655302741918");
    assert_eq!(phone, None);
    assert_eq!(name.as_deref(), Some("Sheena Nelson"));
    for m in messages(&app).await {
        assert_eq!(m["direction"], "inbound");
        assert!(m["provider_timestamp"].is_string(), "{m}");
    }
}

#[tokio::test]
async fn a_batched_delivery_stores_every_entry_in_one_go() {
    let (app, _fake, _owner, inbox, secret) = setup().await;
    let body = fixture("batch");
    let parsed = custodian::channels::whatsapp::parse(&body).unwrap();
    let expected = parsed
        .events
        .iter()
        .filter(|e| matches!(e, custodian::channels::whatsapp::Event::Message(m) if m.phone_number_id == crate::common::WA_PHONE_NUMBER_ID))
        .count() as i64;
    assert!(
        expected >= 2,
        "the batch fixture should carry several messages"
    );
    assert_eq!(
        app.webhook(inbox, &body, &secret).await.status,
        StatusCode::OK
    );
    assert_eq!(app.count("SELECT count(*) FROM message").await, expected);
}

#[tokio::test]
async fn bad_webhook_input_gets_a_clear_4xx_and_stores_nothing() {
    let (app, _fake, _owner, inbox, secret) = setup().await;
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (b"{not json".to_vec(), StatusCode::BAD_REQUEST, "malformed_json"),
        (br#"{"object":"page","entry":[]}"#.to_vec(), StatusCode::BAD_REQUEST, "wrong_object"),
        (
            br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"1","phone_number_id":"106540352242922"},"messages":[{"from":"16505551234","timestamp":"1700000000","type":"text","text":{"body":"no id"}}]}}]}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
    ];
    for (body, status, code) in cases {
        let resp = app.webhook(inbox, &body, &secret).await;
        assert_eq!(resp.status, status, "{}", resp.body);
        assert_eq!(resp.error_code(), code);
    }
    let unknown = app.webhook(Uuid::new_v4(), &fixture("text"), &secret).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let mut huge = b"{\"object\":\"whatsapp_business_account\",\"entry\":[],\"pad\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 3 * 1024 * 1024 + 10));
    huge.extend(b"\"}");
    let oversized = app.webhook(inbox, &huge, &secret).await;
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.count("SELECT count(*) FROM message").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM contact").await, 0);
}

async fn message_state(app: &TestApp, id: Uuid) -> Value {
    let mut conn = app.superuser().await;
    sqlx::query_scalar("SELECT to_jsonb(m) FROM message m WHERE id = $1")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_reply_is_sent_through_the_graph_api_and_status_updates_move_it_forward() {
    let (app, fake, owner, inbox, secret) = setup().await;
    app.start_workers();
    let (_, reply) = customer_then_reply(&app, &owner, inbox, &secret).await;
    fake.push(Reply::AcceptedWith {
        wamid: "wamid.SENT1".into(),
    });
    let sent = eventually(10, "the reply to be sent", || async {
        let m = message_state(&app, reply).await;
        (m["delivery_status"] == "sent").then_some(m)
    })
    .await;
    assert_eq!(sent["provider_message_id"], "wamid.SENT1");
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].authorized,
        "the bearer token was not the inbox's access token"
    );
    assert_eq!(
        requests[0].phone_number_id.as_deref(),
        Some(crate::common::WA_PHONE_NUMBER_ID)
    );
    assert_eq!(requests[0].body["to"], "16505551234");
    assert_eq!(
        requests[0].body["text"]["body"],
        "Hello Sheena, how can we help?"
    );

    // `read` arrives before `delivered` (and without `sent`): the state only moves forward.
    let status = |s: &str| {
        json!({"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{
            "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
            "statuses":[{"id":"wamid.SENT1","status":s,"timestamp":"1750263773","recipient_id":"16505551234"}]}}]}]})
        .to_string()
        .into_bytes()
    };
    assert_eq!(
        app.webhook(inbox, &status("read"), &secret).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.webhook(inbox, &status("delivered"), &secret)
            .await
            .status,
        StatusCode::OK
    );
    let after = message_state(&app, reply).await;
    assert_eq!(after["delivery_status"], "read");
    assert!(after["read_at"].is_string() && after["delivered_at"].is_string());
    // A status for a message we never sent is logged and acknowledged.
    let unknown = String::from_utf8(status("delivered"))
        .unwrap()
        .replace("wamid.SENT1", "wamid.NOT-OURS");
    assert_eq!(
        app.webhook(inbox, unknown.as_bytes(), &secret).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_rate_limited_send_is_retried_after_the_delay_meta_asked_for() {
    let (app, fake, owner, inbox, secret) = setup().await;
    fake.push(Reply::TooManyRequests {
        retry_after_secs: Some(1),
    });
    fake.push(Reply::ServerError);
    fake.push(Reply::AcceptedWith {
        wamid: "wamid.THIRD".into(),
    });
    app.start_workers();
    let (_, reply) = customer_then_reply(&app, &owner, inbox, &secret).await;
    let sent = eventually(15, "the retried send", || async {
        let m = message_state(&app, reply).await;
        (m["delivery_status"] == "sent").then_some(m)
    })
    .await;
    assert_eq!(sent["provider_message_id"], "wamid.THIRD");
    assert_eq!(fake.request_count(), 3);
    app.settled(
        "SELECT count(*) FROM job WHERE status = 'done' AND attempts = 3",
        1,
    )
    .await;
}

#[tokio::test]
async fn a_permanent_failure_is_recorded_on_the_message_and_the_job_is_dead_lettered() {
    let (app, fake, owner, inbox, secret) = setup().await;
    fake.push(Reply::invalid_parameter());
    app.start_workers();
    let (_, reply) = customer_then_reply(&app, &owner, inbox, &secret).await;
    let failed = eventually(10, "the failure to be recorded", || async {
        let m = message_state(&app, reply).await;
        (m["delivery_status"] == "failed").then_some(m)
    })
    .await;
    assert_eq!(failed["delivery_error"]["kind"], "permanent", "{failed}");
    assert!(failed["failed_at"].is_string());
    app.settled("SELECT count(*) FROM job WHERE status = 'dead'", 1)
        .await;
    let dead = app
        .send(Req::get("/api/v1/jobs?status=dead").by(&owner))
        .await;
    assert_eq!(dead.status, StatusCode::OK);
    let dead = dead.body.as_array().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["payload"]["message_id"], reply.to_string());
    assert!(dead[0]["last_error"].as_str().unwrap().contains("refused"));
    assert_eq!(fake.request_count(), 1, "a permanent failure was retried");
    // The listing takes the limits and statuses its document states, and no others.
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=501", "invalid_limit"),
        ("status=failed", "invalid_query"),
    ] {
        let resp = app
            .send(Req::get(format!("/api/v1/jobs?{query}")).by(&owner))
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(resp.error_code(), code, "{query}");
    }
    let listed = app
        .send(Req::get("/api/v1/jobs?status=dead&limit=500").by(&owner))
        .await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn sends_that_keep_failing_end_in_the_dead_letters_with_the_failure_recorded() {
    let (app, fake, owner, inbox, secret) = setup().await;
    for _ in 0..8 {
        fake.push(Reply::ServerError);
    }
    app.start_workers();
    let (_, reply) = customer_then_reply(&app, &owner, inbox, &secret).await;
    let failed = eventually(20, "the job to run out of attempts", || async {
        let m = message_state(&app, reply).await;
        (m["delivery_status"] == "failed").then_some(m)
    })
    .await;
    assert_eq!(failed["delivery_error"]["retryable"], true);
    assert_eq!(fake.request_count(), 8);
    app.settled(
        "SELECT count(*) FROM job WHERE status = 'dead' AND attempts = 8",
        1,
    )
    .await;
}

#[tokio::test]
async fn outside_the_24_hour_window_only_a_template_may_be_sent() {
    let (app, fake, owner, inbox, secret) = setup().await;
    app.start_workers();
    assert_eq!(
        app.webhook(inbox, &fixture("text"), &secret).await.status,
        StatusCode::OK
    );
    // The inbound message starts an agent run; let it settle so that what the
    // agent says (inside the window) does not mix with what this test sends.
    eventually(10, "the agent run to settle", || async {
        (app.count("SELECT count(*) FROM job WHERE status IN ('queued', 'running')")
            .await
            == 0)
            .then_some(())
    })
    .await;
    let outbound_before = app
        .count("SELECT count(*) FROM message WHERE direction = 'outbound'")
        .await;
    let graph_before = fake.request_count();
    let mut conn = app.superuser().await;
    sqlx::query("UPDATE conversation SET last_inbound_at = now() - interval '25 hours'")
        .execute(&mut conn)
        .await
        .unwrap();
    let conversation: Uuid = sqlx::query_scalar("SELECT id FROM conversation")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let path = format!("/api/v1/conversations/{conversation}/messages");

    let refused = app
        .send(
            Req::post(&path)
                .by(&owner)
                .json(json!({ "body": "Are you still there?" })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.error_code(), "outside_service_window");
    assert_eq!(
        app.count("SELECT count(*) FROM message WHERE direction = 'outbound'")
            .await,
        outbound_before
    );

    // A private note is not a message to the customer: always allowed.
    let note = app
        .send(
            Req::post(&path)
                .by(&owner)
                .json(json!({ "body": "customer went quiet", "private": true })),
        )
        .await;
    assert_eq!(note.status, StatusCode::CREATED);

    let template = app
        .send(Req::post(&path).by(&owner).json(
            json!({ "template": { "name": "follow_up", "language": "en_US", "components": [] } }),
        ))
        .await;
    assert_eq!(template.status, StatusCode::CREATED, "{}", template.body);
    let id = template.uuid("/id");
    eventually(10, "the template to be sent", || async {
        (message_state(&app, id).await["delivery_status"] == "sent").then_some(())
    })
    .await;
    let sent = &fake.requests()[graph_before];
    assert_eq!(sent.body["type"], "template");
    assert_eq!(sent.body["template"]["name"], "follow_up");
    assert_eq!(
        fake.request_count(),
        graph_before + 1,
        "the note was sent to the customer"
    );

    // Meta's own word that the window is closed is recorded on the message.
    sqlx::query("UPDATE conversation SET last_inbound_at = now()")
        .execute(&mut conn)
        .await
        .unwrap();
    fake.push(Reply::outside_window());
    let reply = app
        .send(
            Req::post(&path)
                .by(&owner)
                .json(json!({ "body": "one more thing" })),
        )
        .await;
    let id = reply.uuid("/id");
    let failed = eventually(10, "the window failure", || async {
        let m = message_state(&app, id).await;
        (m["delivery_status"] == "failed").then_some(m)
    })
    .await;
    // One kind for "the window is closed", whoever said so; Meta's own answer kept with it.
    assert_eq!(
        failed["delivery_error"]["kind"], "outside_service_window",
        "{failed}"
    );
    assert_eq!(
        failed["delivery_error"]["graph"]["code"], 131047,
        "{failed}"
    );
}

// proves: SEC-10
#[tokio::test]
async fn channel_secrets_are_sealed_at_rest_and_never_returned_or_audited() {
    let (app, fake, owner, inbox, secret) = setup().await;
    let mut conn = app.superuser().await;
    let (settings, sealed): (Value, Vec<u8>) =
        sqlx::query_as("SELECT settings, secrets FROM inbox WHERE id = $1")
            .bind(inbox)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let row_text = format!("{settings} {}", String::from_utf8_lossy(&sealed));
    for plain in [secret.as_str(), fake.token.as_str(), "the-verify-token"] {
        assert!(!row_text.contains(plain), "{plain} is stored in the clear");
        assert!(!sealed.windows(plain.len()).any(|w| w == plain.as_bytes()));
    }
    let shown = app
        .send(Req::get(format!("/api/v1/inboxes/{inbox}")).by(&owner))
        .await;
    let listed = app.send(Req::get("/api/v1/inboxes").by(&owner)).await;
    let rotated = app
        .send(
            Req::patch(format!("/api/v1/inboxes/{inbox}"))
                .by(&owner)
                .json(json!({ "whatsapp": { "access_token": "EAAG-rotated-token" } })),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let audit: Vec<String> = sqlx::query_scalar("SELECT to_jsonb(e)::text FROM audit_event e")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let everything = format!(
        "{} {} {} {}",
        shown.body,
        listed.body,
        rotated.body,
        audit.join(" ")
    );
    for plain in [
        secret.as_str(),
        fake.token.as_str(),
        "the-verify-token",
        "EAAG-rotated-token",
    ] {
        assert!(
            !everything.contains(plain),
            "{plain} leaked into a response or the audit log"
        );
    }
    assert_eq!(shown.body["secrets_configured"], true);
    // A sealed blob moved onto another inbox's row does not open there.
    let other = app.webchat_inbox(&owner, "https://shop.example").await;
    sqlx::query("UPDATE inbox SET secrets = $1 WHERE id = $2")
        .bind(&sealed)
        .bind(other)
        .execute(&mut conn)
        .await
        .unwrap();
    let moved = app
        .send(
            Req::patch(format!("/api/v1/inboxes/{other}"))
                .by(&owner)
                .json(json!({ "name": "x" })),
        )
        .await;
    assert_eq!(moved.status, StatusCode::INTERNAL_SERVER_ERROR);
}

// proves: AUD-1
#[tokio::test]
async fn creating_and_changing_an_inbox_is_audited_without_its_secrets() {
    let (app, _fake, owner, inbox, _) = setup().await;
    let created = app.audit_events(owner.tenant_id, "inbox.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["entity_id"], inbox.to_string());
    assert_eq!(
        created[0]["after"]["settings"]["phone_number_id"],
        crate::common::WA_PHONE_NUMBER_ID
    );
    app.send(
        Req::patch(format!("/api/v1/inboxes/{inbox}"))
            .by(&owner)
            .json(json!({ "name": "Support line" })),
    )
    .await;
    let updated = app.audit_events(owner.tenant_id, "inbox.updated").await;
    assert_eq!(updated[0]["before"]["name"], "WhatsApp support");
    assert_eq!(updated[0]["after"]["name"], "Support line");
}

fn text_from(wa_id: &str, wamid: &str, text: &str) -> Vec<u8> {
    json!({"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
        "contacts":[{"profile":{"name":"A customer"},"wa_id":wa_id}],
        "messages":[{"from":wa_id,"id":wamid,"timestamp":"1750263773","type":"text","text":{"body":text}}]}}]}]})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn one_delivery_that_cannot_be_stored_costs_no_other_delivery_in_its_shared_transaction() {
    let (app, _fake, _owner, inbox, secret) = setup().await;
    // A real database fault, for one message only: the kind of failure a shared transaction
    // must not spread to the deliveries that happen to share it.
    let mut conn = app.superuser().await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.body = 'poison' THEN RAISE EXCEPTION 'a poisoned message'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON message FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let mut good = 0;
    for round in 0..10 {
        // Many senders at once, so the writers find them waiting together; one is poisoned.
        let bodies: Vec<(bool, Vec<u8>)> = (0..24)
            .map(|i| {
                let poisoned = i == 11;
                let text = if poisoned { "poison" } else { "hello" };
                let body = text_from(
                    &format!("165055{round:02}{i:03}"),
                    &format!("wamid.R{round}-{i}"),
                    text,
                );
                (poisoned, body)
            })
            .collect();
        let answers = futures_util::future::join_all(
            bodies
                .iter()
                .map(|(_, body)| app.webhook(inbox, body, &secret)),
        )
        .await;
        for ((poisoned, _), answer) in bodies.iter().zip(answers) {
            if *poisoned {
                assert!(answer.status.is_server_error(), "{}", answer.status);
            } else {
                assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
                good += 1;
            }
        }
        if app.state.channels.webhooks.shared_failures() > 0 {
            break;
        }
    }
    assert!(
        app.state.channels.webhooks.shared_failures() > 0,
        "the poisoned delivery never shared a transaction, so the fallback was not exercised"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM message WHERE body = 'hello'")
            .await,
        good
    );
    assert_eq!(
        app.count("SELECT count(*) FROM message WHERE body = 'poison'")
            .await,
        0
    );
}

#[tokio::test]
async fn an_inbox_change_made_in_one_process_reaches_another_processs_cache_at_once() {
    let (a, _fake, owner, inbox, secret) = setup().await;
    // The second process keeps inbox rows for an hour: only the change notification can make
    // it read the inbox again.
    let b = a
        .another_process(|state| {
            state.channels.endpoints = std::sync::Arc::new(
                custodian::channels::EndpointCache::with_ttl(std::time::Duration::from_secs(3600)),
            )
        })
        .await;
    let mut bus = b.state.bus.subscribe();
    custodian::app::spawn_listener(&b.state);
    // Wait until it listens: a notification sent now must reach it.
    let mut conn = a.superuser().await;
    let probe = json!({ "tenant_id": owner.tenant_id, "kind": "test.probe", "conversation_id": null, "message_id": null, "data": {} }).to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        sqlx::query("SELECT pg_notify('custodian_events', $1)")
            .bind(&probe)
            .execute(&mut conn)
            .await
            .unwrap();
        let heard = tokio::time::timeout(std::time::Duration::from_millis(200), bus.recv()).await;
        if matches!(heard, Ok(Ok(ref e)) if e.kind == "test.probe") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second process never listened"
        );
    }

    let first = text_from("16505551234", "wamid.CACHE-1", "hello");
    assert_eq!(
        b.webhook(inbox, &first, &secret).await.status,
        StatusCode::OK
    );

    // The first process rotates the app secret.
    let rotated = a
        .send(
            Req::patch(format!("/api/v1/inboxes/{inbox}"))
                .by(&owner)
                .json(json!({ "whatsapp": { "app_secret": "the-rotated-app-secret" } })),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);

    let second = text_from("16505551234", "wamid.CACHE-2", "hello again");
    eventually(
        10,
        "the second process to accept the new secret",
        || async {
            (b.webhook(inbox, &second, "the-rotated-app-secret")
                .await
                .status
                == StatusCode::OK)
                .then_some(())
        },
    )
    .await;
    let third = text_from("16505551234", "wamid.CACHE-3", "old secret");
    assert_eq!(
        b.webhook(inbox, &third, &secret).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(a.count("SELECT count(*) FROM message").await, 2);
}

#[tokio::test]
async fn a_nul_character_is_stored_as_a_replacement_from_meta_and_refused_from_the_api() {
    let (app, _fake, owner, inbox, secret) = setup().await;
    // Meta would retry a refused delivery for a week: the NUL becomes U+FFFD and it is stored.
    let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Nul\u0000Name"},"wa_id":"16505551234"}],"messages":[{"from":"16505551234","id":"wamid.NUL","timestamp":"1750263773","type":"text","text":{"body":"a\u0000b and a literal \\u0000"}}]}}]}]}"#;
    let stored = app.webhook(inbox, body, &secret).await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.body);
    let all = messages(&app).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["body"], "a\u{fffd}b and a literal \\u0000");

    // A member's API call gets a clear 400 and changes nothing.
    let refused = app
        .send(
            Req::post("/api/v1/contacts")
                .by(&owner)
                .json(json!({ "name": "Bad\u{0}Name" })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert_eq!(refused.error_code(), "invalid_text");
    assert_eq!(
        app.count("SELECT count(*) FROM contact WHERE name LIKE 'Bad%'")
            .await,
        0
    );
}

/// A text message from `wa_id` to the business number `to`, written at Unix time `at`.
fn text_to(to: &str, wa_id: &str, wamid: &str, text: &str, at: i64) -> Vec<u8> {
    json!({"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":to},
        "contacts":[{"profile":{"name":"A customer"},"wa_id":wa_id}],
        "messages":[{"from":wa_id,"id":wamid,"timestamp":at.to_string(),"type":"text","text":{"body":text}}]}}]}]})
    .to_string()
    .into_bytes()
}

/// A status webhook for the business number `to`, optionally echoing callback data.
fn status_to(to: &str, wamid: &str, status: &str, callback: Option<&str>) -> Vec<u8> {
    let mut entry =
        json!({"id":wamid,"status":status,"timestamp":"1750263773","recipient_id":"16505551234"});
    if let Some(data) = callback {
        entry["biz_opaque_callback_data"] = json!(data);
    }
    json!({"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":to},
        "statuses":[entry]}}]}]})
    .to_string()
    .into_bytes()
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn conversation_of(app: &TestApp, owner: &Member) -> Value {
    let list = app.send(Req::get("/api/v1/conversations").by(owner)).await;
    list.body["items"][0].clone()
}

#[tokio::test]
async fn a_failed_status_webhook_records_metas_error_on_the_message() {
    let (app, fake, owner, inbox, secret) = setup().await;
    // The wamid of Meta's example failure.
    fake.push(Reply::AcceptedWith {
        wamid: "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBJBQjFDQjE4RjBGNTQ1RkQ3QTMA".into(),
    });
    app.start_workers();
    let (_, reply) = customer_then_reply(&app, &owner, inbox, &secret).await;
    eventually(10, "the reply to be sent", || async {
        (message_state(&app, reply).await["delivery_status"] == "sent").then_some(())
    })
    .await;
    let resp = app.webhook(inbox, &fixture("status_failed"), &secret).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    let thread = app
        .send(
            Req::get(format!(
                "/api/v1/conversations/{}/messages",
                message_state(&app, reply).await["conversation_id"]
                    .as_str()
                    .unwrap()
            ))
            .by(&owner),
        )
        .await;
    let failed = thread.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == reply.to_string())
        .unwrap()
        .clone();
    assert_eq!(failed["delivery_status"], "failed", "{failed}");
    let error = &failed["delivery_error"]["errors"][0];
    assert_eq!(error["code"], 131047);
    assert_eq!(error["title"], "Re-engagement message");
    assert_eq!(
        parsed_time(&failed["failed_at"]),
        meta_time(1_750_263_801),
        "the failure is dated by Meta's timestamp"
    );
    // A late `delivered` does not hide the failure.
    let late = status_to(
        crate::common::WA_PHONE_NUMBER_ID,
        "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBJBQjFDQjE4RjBGNTQ1RkQ3QTMA",
        "delivered",
        None,
    );
    assert_eq!(
        app.webhook(inbox, &late, &secret).await.status,
        StatusCode::OK
    );
    assert_eq!(
        message_state(&app, reply).await["delivery_status"],
        "failed"
    );
}

#[tokio::test]
async fn a_status_naming_our_message_settles_a_send_whose_answer_was_lost() {
    let (app, fake, owner, inbox, secret) = setup().await;
    let (_, reply) = customer_then_reply(&app, &owner, inbox, &secret).await;
    // A worker posted the message and died before it could record Meta's answer.
    let mut conn = app.superuser().await;
    sqlx::query("DELETE FROM job WHERE kind = 'agent.run'")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE message SET delivery_status = 'sending', send_attempted_at = now() WHERE id = $1",
    )
    .bind(reply)
    .execute(&mut conn)
    .await
    .unwrap();
    // Meta's `sent` names the wamid we never learnt, and our message id as callback data.
    let status = status_to(
        crate::common::WA_PHONE_NUMBER_ID,
        "wamid.LOST-ANSWER",
        "sent",
        Some(&reply.to_string()),
    );
    assert_eq!(
        app.webhook(inbox, &status, &secret).await.status,
        StatusCode::OK
    );
    let m = message_state(&app, reply).await;
    assert_eq!(m["delivery_status"], "sent", "{m}");
    assert_eq!(m["provider_message_id"], "wamid.LOST-ANSWER");
    // Later statuses find it by that wamid.
    let read = status_to(
        crate::common::WA_PHONE_NUMBER_ID,
        "wamid.LOST-ANSWER",
        "read",
        None,
    );
    assert_eq!(
        app.webhook(inbox, &read, &secret).await.status,
        StatusCode::OK
    );
    assert_eq!(message_state(&app, reply).await["delivery_status"], "read");
    // The job runs again (at least once) and sends nothing.
    app.start_workers();
    app.settled("SELECT count(*) FROM job WHERE status = 'done'", 1)
        .await;
    assert_eq!(fake.request_count(), 0, "the message was sent twice");
    // Callback data naming another message, or no message, changes nothing.
    let stray = status_to(
        crate::common::WA_PHONE_NUMBER_ID,
        "wamid.STRAY",
        "sent",
        Some(&Uuid::new_v4().to_string()),
    );
    assert_eq!(
        app.webhook(inbox, &stray, &secret).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.count("SELECT count(*) FROM message WHERE provider_message_id = 'wamid.STRAY'")
            .await,
        0
    );
}

#[tokio::test]
async fn an_unanswered_send_waits_for_metas_word_before_sending_again() {
    let (app, fake, owner, inbox, secret) = setup().await;
    let (_, reply) = customer_then_reply(&app, &owner, inbox, &secret).await;
    let mut conn = app.superuser().await;
    sqlx::query("DELETE FROM job WHERE kind = 'agent.run'")
        .execute(&mut conn)
        .await
        .unwrap();
    // Meta takes the request and never answers: it may or may not have the message.
    fake.push(Reply::Hang);
    app.start_workers();
    let run_at: time::OffsetDateTime =
        eventually(20, "the send to wait for Meta's word", || async {
            let mut conn = app.superuser().await;
            let (status, last_error, run_at): (String, Option<String>, time::OffsetDateTime) =
                sqlx::query_as("SELECT status, last_error, run_at FROM job")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            (status == "queued" && last_error.is_some_and(|e| e.contains("status webhook")))
                .then_some(run_at)
        })
        .await;
    assert!(
        run_at > time::OffsetDateTime::now_utc() + time::Duration::minutes(4),
        "the job should wait out the grace period, not retry at once: {run_at}"
    );
    assert_eq!(
        message_state(&app, reply).await["delivery_status"],
        "sending"
    );
    assert_eq!(fake.request_count(), 1);
    // The grace period passes without a status webhook: now it is sent again.
    sqlx::query(
        "UPDATE message SET send_attempted_at = now() - interval '6 minutes' WHERE id = $1",
    )
    .bind(reply)
    .execute(&mut conn)
    .await
    .unwrap();
    fake.push(Reply::AcceptedWith {
        wamid: "wamid.SECOND-TRY".into(),
    });
    sqlx::raw_sql("UPDATE job SET run_at = now(); SELECT pg_notify('custodian_jobs', '')")
        .execute(&mut conn)
        .await
        .unwrap();
    eventually(10, "the second try", || async {
        (message_state(&app, reply).await["provider_message_id"] == "wamid.SECOND-TRY")
            .then_some(())
    })
    .await;
    assert_eq!(fake.request_count(), 2);
    let requests = fake.requests();
    for request in &requests {
        assert_eq!(request.body["biz_opaque_callback_data"], reply.to_string());
    }
    // The wait spent no attempt: one unanswered try, one answered.
    app.settled(
        "SELECT count(*) FROM job WHERE status = 'done' AND attempts = 2",
        1,
    )
    .await;
}

#[tokio::test]
async fn a_late_message_from_the_ai_is_not_sent_and_the_conversation_goes_to_a_person() {
    let (app, fake, owner, inbox, secret) = setup().await;
    assert_eq!(
        app.webhook(inbox, &fixture("text"), &secret).await.status,
        StatusCode::OK
    );
    let mut conn = app.superuser().await;
    sqlx::query("DELETE FROM job WHERE kind = 'agent.run'")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE conversation SET last_inbound_at = now() - interval '25 hours'")
        .execute(&mut conn)
        .await
        .unwrap();
    let conversation =
        Uuid::parse_str(conversation_of(&app, &owner).await["id"].as_str().unwrap()).unwrap();
    // What the AI (or the platform, or a reviewer's decision) writes goes through the queue
    // without the reply endpoint's check.
    let mut tx = app.state.db.tenant_tx(owner.tenant_id).await.unwrap();
    let late = custodian::conversations::post_outbound(
        &mut tx,
        owner.tenant_id,
        conversation,
        custodian::conversations::Author::Ai,
        "Here is the answer you asked for yesterday.",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    app.start_workers();
    let failed = eventually(10, "the window failure", || async {
        let m = message_state(&app, late).await;
        (m["delivery_status"] == "failed").then_some(m)
    })
    .await;
    assert_eq!(
        failed["delivery_error"]["kind"], "outside_service_window",
        "{failed}"
    );
    assert_eq!(
        fake.request_count(),
        0,
        "a free-form message left outside the window"
    );
    let shown = app
        .send(Req::get(format!("/api/v1/conversations/{conversation}")).by(&owner))
        .await;
    assert_eq!(shown.body["conversation"]["handler"], "human");
    let note: (String, String, bool) = sqlx::query_as(
        "SELECT author_kind, body, private FROM message WHERE conversation_id = $1 AND content_type = 'note'",
    )
    .bind(conversation)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(note.0, "system");
    assert!(note.1.contains("template"), "{}", note.1);
    assert!(note.2);
    let handed = app
        .audit_events(owner.tenant_id, "conversation.handed_off")
        .await;
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0]["actor_type"], "system");
    assert_eq!(handed[0]["before"]["handler"], "ai");
    assert_eq!(handed[0]["after"]["reason"], "outside_service_window");
    app.settled("SELECT count(*) FROM job WHERE status = 'done'", 1)
        .await;
}

#[tokio::test]
async fn the_service_window_runs_from_when_the_customer_wrote_by_metas_clock() {
    let (app, _fake, owner, inbox, secret) = setup().await;
    let number = crate::common::WA_PHONE_NUMBER_ID;
    let wrote_at = now_unix() - 25 * 3600;
    let body = text_to(number, "16505551234", "wamid.OLD", "hello?", wrote_at);
    assert_eq!(
        app.webhook(inbox, &body, &secret).await.status,
        StatusCode::OK
    );
    let conversation = conversation_of(&app, &owner).await;
    assert_eq!(
        parsed_time(&conversation["last_inbound_at"]),
        meta_time(wrote_at)
    );
    let path = format!(
        "/api/v1/conversations/{}/messages",
        conversation["id"].as_str().unwrap()
    );
    let reply = |text: &str| Req::post(&path).by(&owner).json(json!({ "body": text }));
    // Received now, written 25 hours ago: the window is closed.
    let refused = app.send(reply("sorry for the wait")).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.error_code(), "outside_service_window");

    let recent = now_unix() - 3600;
    let body = text_to(
        number,
        "16505551234",
        "wamid.RECENT",
        "still there?",
        recent,
    );
    assert_eq!(
        app.webhook(inbox, &body, &secret).await.status,
        StatusCode::OK
    );
    assert_eq!(
        parsed_time(&conversation_of(&app, &owner).await["last_inbound_at"]),
        meta_time(recent)
    );
    assert_eq!(app.send(reply("yes!")).await.status, StatusCode::CREATED);

    // An older message arriving late does not move the window back; a clock ahead of ours
    // does not move it past now.
    let body = text_to(
        number,
        "16505551234",
        "wamid.LATE",
        "earlier",
        now_unix() - 20 * 3600,
    );
    assert_eq!(
        app.webhook(inbox, &body, &secret).await.status,
        StatusCode::OK
    );
    assert_eq!(
        parsed_time(&conversation_of(&app, &owner).await["last_inbound_at"]),
        meta_time(recent)
    );
    let body = text_to(
        number,
        "16505551234",
        "wamid.FUTURE",
        "from the future",
        now_unix() + 3 * 3600,
    );
    assert_eq!(
        app.webhook(inbox, &body, &secret).await.status,
        StatusCode::OK
    );
    let window_start = parsed_time(&conversation_of(&app, &owner).await["last_inbound_at"]);
    assert!(
        window_start <= time::OffsetDateTime::now_utc(),
        "{window_start}"
    );
    assert!(window_start > meta_time(recent));
}

/// An inbox for another number of the fixtures' business account, which Meta (the fake)
/// confirms for any token.
async fn whatsapp_inbox_for(
    app: &TestApp,
    fake: &FakeGraph,
    owner: &Member,
    number: &str,
    app_secret: &str,
) -> Uuid {
    fake.add_number(number, crate::fakes::graph::FIXTURE_BUSINESS_ACCOUNT);
    let resp = app
        .send(Req::post("/api/v1/inboxes").by(owner).json(json!({
            "name": format!("WhatsApp {number}"),
            "channel": "whatsapp",
            "whatsapp": {
                "phone_number_id": number,
                "business_account_id": "102290129340398",
                "verify_token": "the-verify-token",
                "app_secret": app_secret,
                "access_token": "a-token",
            }
        })))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    resp.uuid("/id")
}

#[tokio::test]
async fn several_numbers_of_one_tenant_each_reach_their_own_inbox_even_through_one_url() {
    let (app, fake, owner, first, secret) = setup().await;
    let number = crate::common::WA_PHONE_NUMBER_ID;
    // A second number under the same Meta app (same app secret), a third under another app,
    // and a number of another tenant's under the same app.
    let second = whatsapp_inbox_for(&app, &fake, &owner, "200000000000001", &secret).await;
    let _third = whatsapp_inbox_for(
        &app,
        &fake,
        &owner,
        "300000000000001",
        "another-apps-secret",
    )
    .await;
    let other = app.signup("globex").await;
    let _foreign = whatsapp_inbox_for(&app, &fake, &other, "400000000000001", &secret).await;

    // Each number's own URL.
    let at = now_unix();
    let own = text_to(
        "200000000000001",
        "16505550001",
        "wamid.OWN-URL",
        "to the second",
        at,
    );
    assert_eq!(
        app.webhook(second, &own, &secret).await.status,
        StatusCode::OK
    );

    // One delivery to the first inbox's URL naming all four numbers.
    let mut body: Value = serde_json::from_slice(&text_to(
        number,
        "16505550002",
        "wamid.A",
        "to the first",
        at,
    ))
    .unwrap();
    for (to, wamid) in [
        ("200000000000001", "wamid.B"),
        ("300000000000001", "wamid.C"),
        ("400000000000001", "wamid.D"),
    ] {
        let extra: Value =
            serde_json::from_slice(&text_to(to, "16505550003", wamid, "hi", at)).unwrap();
        body["entry"]
            .as_array_mut()
            .unwrap()
            .push(extra["entry"][0].clone());
    }
    let body = body.to_string().into_bytes();
    assert_eq!(
        app.webhook(first, &body, &secret).await.status,
        StatusCode::OK
    );

    let inbox_of = |wamid: &'static str| {
        let app = &app;
        async move {
            let mut conn = app.superuser().await;
            sqlx::query_scalar::<_, Uuid>(
                "SELECT inbox_id FROM message WHERE provider_message_id = $1",
            )
            .bind(wamid)
            .fetch_optional(&mut conn)
            .await
            .unwrap()
        }
    };
    assert_eq!(inbox_of("wamid.OWN-URL").await, Some(second));
    assert_eq!(inbox_of("wamid.A").await, Some(first));
    assert_eq!(
        inbox_of("wamid.B").await,
        Some(second),
        "the same app's other number"
    );
    assert_eq!(inbox_of("wamid.C").await, None, "another Meta app's number");
    assert_eq!(inbox_of("wamid.D").await, None, "another tenant's number");
    assert_eq!(app.count("SELECT count(*) FROM message").await, 3);

    // Statuses route the same way: the second number's reply, reported through the first URL.
    let mut conn = app.superuser().await;
    let conversation: Uuid = sqlx::query_scalar(
        "SELECT conversation_id FROM message WHERE provider_message_id = 'wamid.B'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    sqlx::query("UPDATE conversation SET last_inbound_at = now()")
        .execute(&mut conn)
        .await
        .unwrap();
    let reply = app
        .send(
            Req::post(format!("/api/v1/conversations/{conversation}/messages"))
                .by(&owner)
                .json(json!({ "body": "answered from the second number" })),
        )
        .await
        .uuid("/id");
    sqlx::query("UPDATE message SET delivery_status = 'sent', provider_message_id = 'wamid.B-OUT' WHERE id = $1")
        .bind(reply)
        .execute(&mut conn)
        .await
        .unwrap();
    let delivered = status_to("200000000000001", "wamid.B-OUT", "delivered", None);
    assert_eq!(
        app.webhook(first, &delivered, &secret).await.status,
        StatusCode::OK
    );
    assert_eq!(
        message_state(&app, reply).await["delivery_status"],
        "delivered"
    );
}

#[tokio::test]
async fn a_valid_delivery_of_nearly_three_megabytes_is_accepted() {
    let (app, _fake, _owner, inbox, secret) = setup().await;
    let mut body: Value = serde_json::from_slice(&fixture("text")).unwrap();
    let size = body.to_string().len();
    // Meta adds fields we do not read; the limit is on the bytes.
    body["padding"] = json!("x".repeat(3 * 1024 * 1024 - size - 1024));
    let bytes = body.to_string().into_bytes();
    assert!(bytes.len() > 3 * 1024 * 1024 - 2048 && bytes.len() <= 3 * 1024 * 1024);
    let resp = app.webhook(inbox, &bytes, &secret).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(app.count("SELECT count(*) FROM message").await, 1);
}

#[tokio::test]
async fn a_contact_known_by_a_whatsapp_username_id_can_be_corrected() {
    let (app, _fake, owner, inbox, secret) = setup().await;
    assert_eq!(
        app.webhook(inbox, &fixture("text_from_username_user"), &secret)
            .await
            .status,
        StatusCode::OK
    );
    let contact = conversation_of(&app, &owner).await["contact_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/contacts/{contact}");
    let renamed = app
        .send(
            Req::patch(&path)
                .by(&owner)
                .json(json!({ "name": "Sheena N." })),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["whatsapp_id"], "US.13491208655302741918");
    let moved = app
        .send(
            Req::patch(&path)
                .by(&owner)
                .json(json!({ "whatsapp_id": "US.ENT.11815799212886844830" })),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    for bad in ["+16505551234", "us.123", "US.12 34"] {
        let refused = app
            .send(
                Req::patch(&path)
                    .by(&owner)
                    .json(json!({ "whatsapp_id": bad })),
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(refused.error_code(), "invalid_whatsapp_id");
    }
    let shown = app.send(Req::get(&path).by(&owner)).await;
    assert_eq!(shown.body["whatsapp_id"], "US.ENT.11815799212886844830");
}

#[tokio::test]
async fn a_phone_number_id_in_use_or_empty_is_refused_with_a_clear_error() {
    let (app, fake, owner, _first, _) = setup().await;
    let second = whatsapp_inbox_for(&app, &fake, &owner, "200000000000001", "s").await;
    let path = format!("/api/v1/inboxes/{second}");
    let taken = app
        .send(
            Req::patch(&path).by(&owner).json(
                json!({ "whatsapp": { "phone_number_id": crate::common::WA_PHONE_NUMBER_ID } }),
            ),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.body);
    assert_eq!(taken.error_code(), "phone_number_in_use");
    for bad in ["", "   ", "12 34", "abc"] {
        let refused = app
            .send(
                Req::patch(&path)
                    .by(&owner)
                    .json(json!({ "whatsapp": { "phone_number_id": bad } })),
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{bad:?}: {}",
            refused.body
        );
        let created = app
            .send(Req::post("/api/v1/inboxes").by(&owner).json(json!({
                "name": "Bad", "channel": "whatsapp",
                "whatsapp": { "phone_number_id": bad, "business_account_id": "1",
                              "verify_token": "v", "app_secret": "s", "access_token": "t" }
            })))
            .await;
        assert_eq!(
            created.status,
            StatusCode::BAD_REQUEST,
            "{bad:?}: {}",
            created.body
        );
    }
    let shown = app.send(Req::get(&path).by(&owner)).await;
    assert_eq!(shown.body["settings"]["phone_number_id"], "200000000000001");
    assert_eq!(
        app.audit_events(owner.tenant_id, "inbox.updated")
            .await
            .len(),
        0
    );
}

// proves: AUD-1
#[tokio::test]
async fn updating_and_deleting_an_inbox_is_audited_with_who_where_and_before_after_without_secrets()
{
    let (app, fake, owner, inbox, secret) = setup().await;
    let from = |req: Req| {
        req.by(&owner)
            .client_ip("203.0.113.7")
            .header("user-agent", "audit-check/1.0")
    };
    let updated = app
        .send(from(Req::patch(format!("/api/v1/inboxes/{inbox}")).json(
            json!({
                "name": "Support line",
                "whatsapp": { "access_token": "EAAG-new-token", "app_secret": "new-app-secret" }
            }),
        )))
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(
        app.send(from(Req::delete(format!("/api/v1/inboxes/{inbox}"))))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let update = &app.audit_events(owner.tenant_id, "inbox.updated").await[0];
    let delete = &app.audit_events(owner.tenant_id, "inbox.deleted").await[0];
    for event in [update, delete] {
        assert_eq!(event["actor_type"], "member");
        assert_eq!(event["actor_id"], owner.member_id.to_string());
        assert_eq!(event["ip"], "203.0.113.7");
        assert_eq!(event["user_agent"], "audit-check/1.0");
        assert_eq!(event["entity_id"], inbox.to_string());
        let text = event.to_string();
        for plain in [
            secret.as_str(),
            fake.token.as_str(),
            "the-verify-token",
            "EAAG-new-token",
            "new-app-secret",
        ] {
            assert!(!text.contains(plain), "{plain} in {text}");
        }
    }
    assert_eq!(update["before"]["name"], "WhatsApp support");
    assert_eq!(update["after"]["name"], "Support line");
    assert_eq!(update["before"]["secrets_configured"], true);
    assert_eq!(delete["before"]["name"], "Support line");
    assert!(delete["after"].is_null());
}

// proves: AUD-1
#[tokio::test]
async fn retrying_a_dead_send_sends_it_again_and_is_audited() {
    let (app, fake, owner, inbox, secret) = setup().await;
    fake.push(Reply::invalid_parameter());
    app.start_workers();
    let (_, reply) = customer_then_reply(&app, &owner, inbox, &secret).await;
    eventually(10, "the failure", || async {
        (message_state(&app, reply).await["delivery_status"] == "failed").then_some(())
    })
    .await;
    app.settled("SELECT count(*) FROM job WHERE status = 'dead'", 1)
        .await;
    let job = app
        .send(Req::get("/api/v1/jobs?status=dead").by(&owner))
        .await
        .body[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    fake.push(Reply::AcceptedWith {
        wamid: "wamid.RETRIED".into(),
    });
    let retried = app
        .send(
            Req::post(format!("/api/v1/jobs/{job}/retry"))
                .by(&owner)
                .client_ip("198.51.100.4")
                .header("user-agent", "ops-console/2"),
        )
        .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{}", retried.body);
    assert_eq!(
        retried.body,
        json!({ "id": job, "kind": "message.send", "status": "queued", "message_id": reply })
    );
    let sent = eventually(10, "the retried send", || async {
        let m = message_state(&app, reply).await;
        (m["delivery_status"] == "sent").then_some(m)
    })
    .await;
    assert_eq!(sent["provider_message_id"], "wamid.RETRIED");
    assert!(
        sent["delivery_error"].is_null() && sent["failed_at"].is_null(),
        "{sent}"
    );
    assert_eq!(fake.request_count(), 2);
    app.settled(
        "SELECT count(*) FROM job WHERE status = 'done' AND kind = 'message.send'",
        1,
    )
    .await;

    let audit = &app.audit_events(owner.tenant_id, "job.retried").await[0];
    assert_eq!(audit["actor_id"], owner.member_id.to_string());
    assert_eq!(audit["ip"], "198.51.100.4");
    assert_eq!(audit["user_agent"], "ops-console/2");
    assert_eq!(audit["before"]["status"], "dead");
    assert!(audit["before"]["last_error"]
        .as_str()
        .unwrap()
        .contains("refused"));
    assert_eq!(audit["before"]["message"]["delivery_status"], "failed");
    assert_eq!(audit["after"]["status"], "queued");
    assert_eq!(audit["after"]["message"]["delivery_status"], "queued");

    // Only a dead job can be retried, and a sent message is never sent again.
    let again = app
        .send(Req::post(format!("/api/v1/jobs/{job}/retry")).by(&owner))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let mut conn = app.superuser().await;
    sqlx::query("UPDATE job SET status = 'dead'")
        .execute(&mut conn)
        .await
        .unwrap();
    let twice = app
        .send(Req::post(format!("/api/v1/jobs/{job}/retry")).by(&owner))
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "{}", twice.body);
    assert_eq!(twice.error_code(), "already_sent");
}

#[tokio::test]
async fn a_send_that_fails_for_the_platforms_own_reasons_records_the_failure_when_it_gives_up() {
    let (app, fake, owner, inbox, secret) = setup().await;
    let (_, reply) = customer_then_reply(&app, &owner, inbox, &secret).await;
    let mut conn = app.superuser().await;
    sqlx::query("DELETE FROM job WHERE kind = 'agent.run'")
        .execute(&mut conn)
        .await
        .unwrap();
    // The channel's secrets can no longer be opened (sealed for another inbox), and the job
    // has two attempts.
    let other = app.webchat_inbox(&owner, "https://shop.example").await;
    sqlx::query(
        "UPDATE inbox SET secrets = (SELECT secrets FROM inbox WHERE id = $1) WHERE id = $2",
    )
    .bind(other)
    .bind(inbox)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("UPDATE job SET max_attempts = 2")
        .execute(&mut conn)
        .await
        .unwrap();
    app.start_workers();
    let failed = eventually(10, "the failure to be recorded", || async {
        let m = message_state(&app, reply).await;
        (m["delivery_status"] == "failed").then_some(m)
    })
    .await;
    assert_eq!(failed["delivery_error"]["kind"], "platform", "{failed}");
    app.settled(
        "SELECT count(*) FROM job WHERE status = 'dead' AND attempts = 2",
        1,
    )
    .await;
    assert_eq!(fake.request_count(), 0);
}

// proves: SEC-10
#[tokio::test]
async fn the_server_never_logs_a_channels_secrets_while_receiving_and_sending() {
    let graph_token = format!("EAAG-sec10-{}", Uuid::new_v4().simple());
    let fake = FakeGraph::start_with_token(&graph_token).await;
    let app = TestApp::spawn().await;
    let log_path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sec10-{}.log", Uuid::new_v4().simple()));
    let log = std::fs::File::create(&log_path).unwrap();
    let port = crate::queue::free_port();
    // Everything, from every crate, to a file we read afterwards (logs go to stdout).
    let mut server = crate::queue::server_command(&app, &fake.base_url, port)
        .env("RUST_LOG", "trace")
        .stderr(std::process::Stdio::from(log.try_clone().unwrap()))
        .stdout(std::process::Stdio::from(log))
        .spawn()
        .unwrap();
    crate::queue::wait_ready(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let signup = http
        .post(format!("{base}/api/v1/auth/signup"))
        .json(&json!({ "tenant_name": "Acme Inc", "tenant_slug": "acme", "email": "owner@acme.example",
                       "display_name": "Owner", "password": crate::common::PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let cookie = signup
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let app_secret = format!("sec10-app-secret-{}", Uuid::new_v4().simple());
    let verify_token = format!("sec10-verify-{}", Uuid::new_v4().simple());
    let identity_secret = format!("sec10-identity-{}", Uuid::new_v4().simple());
    let rotated = format!("EAAG-sec10-rotated-{}", Uuid::new_v4().simple());
    let inbox: Value = http
        .post(format!("{base}/api/v1/inboxes"))
        .header("cookie", &cookie)
        .json(&json!({ "name": "WhatsApp", "channel": "whatsapp", "whatsapp": {
            "phone_number_id": crate::common::WA_PHONE_NUMBER_ID, "business_account_id": "102290129340398",
            "verify_token": verify_token, "app_secret": app_secret, "access_token": graph_token } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let inbox = inbox["id"].as_str().unwrap().to_string();
    let chat: Value = http
        .post(format!("{base}/api/v1/inboxes"))
        .header("cookie", &cookie)
        .json(&json!({ "name": "Chat", "channel": "webchat", "webchat": {
            "allowed_origins": ["https://shop.example"], "identity_secret": identity_secret } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let chat = chat["id"].as_str().unwrap().to_string();

    // The handshake carries the verify token in its query string.
    let handshake = http
        .get(format!("{base}/webhooks/whatsapp/{inbox}?hub.mode=subscribe&hub.verify_token={verify_token}&hub.challenge=42"))
        .send()
        .await
        .unwrap();
    assert_eq!(handshake.status(), 200);
    let body = fixture("text");
    for signature in [
        custodian::channels::whatsapp::signature::sign(app_secret.as_bytes(), &body),
        "sha256=00".to_string(),
    ] {
        http.post(format!("{base}/webhooks/whatsapp/{inbox}"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
    }
    let mut conn = app.superuser().await;
    sqlx::query("UPDATE conversation SET last_inbound_at = now()")
        .execute(&mut conn)
        .await
        .unwrap();
    let conversation: Uuid = sqlx::query_scalar("SELECT id FROM conversation")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let reply = http
        .post(format!(
            "{base}/api/v1/conversations/{conversation}/messages"
        ))
        .header("cookie", &cookie)
        .json(&json!({ "body": "Hello from the logs test" }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 201);
    eventually(30, "the reply to be sent with the access token", || async {
        fake.requests()
            .iter()
            .any(|r| r.authorized && r.body["text"]["body"] == "Hello from the logs test")
            .then_some(())
    })
    .await;
    let rotate = http
        .patch(format!("{base}/api/v1/inboxes/{inbox}"))
        .header("cookie", &cookie)
        .json(&json!({ "whatsapp": { "access_token": rotated } }))
        .send()
        .await
        .unwrap();
    assert_eq!(rotate.status(), 200);
    let session = http
        .post(format!("{base}/api/v1/webchat/{chat}/sessions"))
        .json(&json!({ "user_id": "42", "user_hash": "00" }))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 401);
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    let logged = std::fs::read_to_string(&log_path).unwrap();
    std::fs::remove_file(&log_path).ok();
    assert!(
        logged.contains("custodian is listening") && logged.lines().count() > 50,
        "the server logged too little to prove anything: {logged}"
    );
    for secret in [
        graph_token.as_str(),
        app_secret.as_str(),
        verify_token.as_str(),
        identity_secret.as_str(),
        rotated.as_str(),
    ] {
        if let Some(at) = logged.find(secret) {
            let line = logged[..at].rsplit('\n').next().unwrap_or_default();
            panic!("a secret was logged: {line}…");
        }
    }
}

#[tokio::test]
async fn one_batch_stores_each_senders_messages_in_order_once_and_creates_each_contact_once() {
    use custodian::conversations::{ingest_many, Inbound, Ingested, Sender};

    let (app, _fake, owner, inbox, _) = setup().await;
    // What one shared transaction of the webhook writer may hold: several messages of one
    // sender, a redelivery of one of them, and a second sender, all new to the tenant.
    let batch = [
        ("5511900000001", "wamid.a1", "first from one"),
        ("5511900000002", "wamid.b1", "first from two"),
        ("5511900000001", "wamid.a2", "second from one"),
        ("5511900000001", "wamid.a1", "first from one"),
        ("5511900000001", "wamid.a3", "third from one"),
    ];
    let inbound: Vec<Inbound<'_>> = batch
        .iter()
        .map(|(from, wamid, body)| Inbound {
            inbox_id: inbox,
            from: Sender::WhatsApp {
                wa_id: from,
                profile_name: Some("Customer"),
            },
            provider_message_id: Some(wamid),
            content_type: "text",
            body,
            attachments: json!([]),
            provider_timestamp: None,
        })
        .collect();
    let mut tx = app.state.db.tenant_tx(owner.tenant_id).await.unwrap();
    let outcome = ingest_many(&mut tx, owner.tenant_id, &inbound)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let new: Vec<bool> = outcome
        .iter()
        .map(|o| matches!(o, Ingested::New { .. }))
        .collect();
    assert_eq!(new, [true, true, true, false, true]);
    let stored: Vec<Value> = messages(&app).await;
    let bodies_of = |wamid_prefix: &str| -> Vec<String> {
        stored
            .iter()
            .filter(|m| {
                m["provider_message_id"]
                    .as_str()
                    .unwrap()
                    .starts_with(wamid_prefix)
            })
            .map(|m| m["body"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(stored.len(), 4);
    // Each sender's messages keep their order (ids are time-ordered).
    let mut conn = app.superuser().await;
    let thread: Vec<String> = sqlx::query_scalar(
        "SELECT m.body FROM message m JOIN contact c ON c.id = (SELECT contact_id FROM conversation WHERE id = m.conversation_id)
         WHERE c.whatsapp_id = '5511900000001' ORDER BY m.id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        thread,
        ["first from one", "second from one", "third from one"]
    );
    assert_eq!(bodies_of("wamid.b"), ["first from two"]);
    assert_eq!(app.count("SELECT count(*) FROM contact").await, 2);
    assert_eq!(app.count("SELECT count(*) FROM conversation").await, 2);
    assert_eq!(
        app.audit_events(owner.tenant_id, "contact.created")
            .await
            .len(),
        2
    );
    // Every new message on these AI-handled conversations has its agent run, once.
    assert_eq!(
        app.count("SELECT count(*) FROM job WHERE kind = 'agent.run'")
            .await,
        4
    );
}
