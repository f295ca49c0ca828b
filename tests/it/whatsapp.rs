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

#[tokio::test]
async fn every_message_type_of_metas_examples_is_stored_and_unknown_types_are_kept_as_unsupported()
{
    let (app, _fake, _owner, inbox, secret) = setup().await;
    let cases = [
        ("text", "text"),
        ("text_reply", "text"),
        ("image", "image"),
        ("audio_voice", "audio"),
        ("video", "video"),
        ("document", "document"),
        ("sticker", "sticker"),
        ("location", "location"),
        ("contacts", "contacts"),
        ("reaction", "reaction"),
        ("interactive_button_reply", "button_reply"),
        ("interactive_list_reply", "list_reply"),
        ("button", "button"),
        ("unsupported", "unsupported"),
        ("unknown_type", "unsupported"),
        ("text_from_username_user", "text"),
    ];
    for (name, _) in cases {
        let resp = app.webhook(inbox, &fixture(name), &secret).await;
        assert_eq!(resp.status, StatusCode::OK, "{name}: {}", resp.body);
    }
    let stored = messages(&app).await;
    let types: Vec<&str> = stored
        .iter()
        .map(|m| m["content_type"].as_str().unwrap())
        .collect();
    for (name, expected) in cases {
        assert!(
            types.contains(&expected),
            "{name}: no {expected} message among {types:?}"
        );
    }
    let image = stored
        .iter()
        .find(|m| m["content_type"] == "image")
        .unwrap();
    assert!(image["attachments"][0]["media_id"].is_string(), "{image}");
    assert!(image["attachments"][0]["mime_type"].is_string());
    let location = stored
        .iter()
        .find(|m| m["content_type"] == "location")
        .unwrap();
    assert!(location["attachments"][0]["latitude"].is_number());
    for m in &stored {
        assert!(
            m["provider_timestamp"].is_string(),
            "string timestamps were parsed: {m}"
        );
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
    assert_eq!(
        failed["delivery_error"]["kind"], "outside_window",
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
        if app.state.webhooks.shared_failures() > 0 {
            break;
        }
    }
    assert!(
        app.state.webhooks.shared_failures() > 0,
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
            state.endpoints = std::sync::Arc::new(custodian::channels::EndpointCache::with_ttl(
                std::time::Duration::from_secs(3600),
            ))
        })
        .await;
    let mut bus = b.state.bus.subscribe();
    custodian::events::spawn_listener(b.state.clone());
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
