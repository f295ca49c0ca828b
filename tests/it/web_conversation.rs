//! A conversation in the web app, in-process: the thread, the composer (reply, private note,
//! the WhatsApp window), the actions, the AI's waiting draft and the contact panel. Every
//! action goes through the same domain function as the API, so each test checks what the
//! database and the audit log hold afterwards, not only the page.

use axum::http::{header, Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{eventually, fast_worker, fixture, Member, Req, Resp, TestApp};
use crate::fakes::graph::FakeGraph;
use crate::fakes::openai::{FakeOpenAI, FakeReply};
use crate::web::{form, html, page_token};

fn page_of(conversation: Uuid) -> String {
    format!("/app/conversations/{conversation}")
}

/// Posts one of the conversation's forms as the member's page would.
async fn post(
    app: &TestApp,
    member: &Member,
    conversation: Uuid,
    action: &str,
    fields: &[(&str, &str)],
) -> Resp {
    let token = page_token(app, member).await;
    let mut all = vec![("_csrf", token.as_str())];
    all.extend_from_slice(fields);
    app.send(
        Req::post(format!("{}/{action}", page_of(conversation)))
            .by(member)
            .raw("application/x-www-form-urlencoded", form(&all)),
    )
    .await
}

fn went_back(resp: &Resp, conversation: Uuid) {
    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{}", resp.body);
    assert_eq!(resp.headers[header::LOCATION], page_of(conversation));
}

async fn conversation(app: &TestApp, member: &Member, id: Uuid) -> Value {
    let resp = app
        .send(Req::get(format!("/api/v1/conversations/{id}")).by(member))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    resp.body["conversation"].clone()
}

#[tokio::test]
async fn a_reply_from_the_page_reaches_the_customer_and_a_private_note_never_does() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, id) = app.visitor_writes(inbox, "Where is my parcel?").await;

    let page = app.send(Req::get(page_of(id)).by(&agent)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(html(&page).contains("Where is my parcel?"));
    assert!(html(&page).contains("data-composer"));

    let note = post(
        &app,
        &agent,
        id,
        "reply",
        &[
            ("body", "Customer sounds upset; check the courier"),
            ("mode", "note"),
        ],
    )
    .await;
    went_back(&note, id);
    let reply = post(
        &app,
        &agent,
        id,
        "reply",
        &[("body", "It left our warehouse today."), ("mode", "reply")],
    )
    .await;
    went_back(&reply, id);

    let stored = |private: bool| {
        let sql = format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{id}' AND direction = 'outbound'
             AND author_kind = 'member' AND author_id = '{}' AND private = {private}",
            agent.member_id
        );
        let app = &app;
        async move { app.count(&sql).await }
    };
    assert_eq!(stored(true).await, 1);
    assert_eq!(stored(false).await, 1);
    // What the customer's web chat shows: the reply, never the note.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{id}' AND NOT private
             AND body LIKE '%courier%'"
        ))
        .await,
        0
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "note.created")
            .await
            .len(),
        1
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "message.created")
            .await
            .len(),
        1
    );
    // Answering the customer took the conversation over from the AI, as the API does.
    assert_eq!(conversation(&app, &owner, id).await["handler"], "human");

    let page = app.send(Req::get(page_of(id)).by(&agent)).await;
    let page = html(&page);
    assert!(page.contains("It left our warehouse today."));
    let note_at = page.find("Customer sounds upset").unwrap();
    let note_item = &page[page[..note_at].rfind("<li").unwrap()..note_at];
    assert!(note_item.contains("private"), "{note_item}");
}

#[tokio::test]
async fn an_empty_reply_is_refused_on_the_page_with_the_reason_and_nothing_is_sent() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, id) = app.visitor_writes(inbox, "Hello").await;
    let resp = post(
        &app,
        &owner,
        id,
        "reply",
        &[("body", "   "), ("mode", "reply")],
    )
    .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(html(&resp).contains("data-notice"));
    assert!(html(&resp).contains("Body is required."));
    let bad_mode = post(
        &app,
        &owner,
        id,
        "reply",
        &[("body", "Hi"), ("mode", "shout")],
    )
    .await;
    assert_eq!(bad_mode.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.count("SELECT count(*) FROM message WHERE direction = 'outbound'")
            .await,
        0
    );
}

#[tokio::test]
async fn after_whatsapps_24_hours_the_page_explains_why_a_reply_is_refused_and_keeps_the_text() {
    let graph = FakeGraph::start().await;
    let graph_url = graph.base_url.clone();
    let app = TestApp::spawn_with(|c| fast_worker(c, &graph_url)).await;
    let owner = app.signup("acme").await;
    let (inbox, secret) = app.whatsapp_inbox(&owner, &graph.token).await;
    assert_eq!(
        app.webhook(inbox, &fixture("text"), &secret).await.status,
        StatusCode::OK
    );
    let id: Uuid = eventually(10, "the conversation", || async {
        let list = app.send(Req::get("/api/v1/conversations").by(&owner)).await;
        list.body["items"][0]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
    })
    .await;
    // The customer wrote a day and an hour ago: the service window has closed.
    let mut conn = app.superuser().await;
    sqlx::query("UPDATE conversation SET last_inbound_at = now() - interval '25 hours'")
        .execute(&mut conn)
        .await
        .unwrap();
    let page = app.send(Req::get(page_of(id)).by(&owner)).await;
    assert!(html(&page).contains("data-window-closed"));

    let text = "Sorry for the wait, here is your refund";
    let refused = post(
        &app,
        &owner,
        id,
        "reply",
        &[("body", text), ("mode", "reply")],
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(html(&refused).contains("only a WhatsApp template may be sent"));
    assert!(html(&refused).contains(text), "the member's text was lost");
    assert_eq!(
        app.count("SELECT count(*) FROM message WHERE direction = 'outbound'")
            .await,
        0
    );
    // A note is still welcome.
    let note = post(
        &app,
        &owner,
        id,
        "reply",
        &[("body", text), ("mode", "note")],
    )
    .await;
    went_back(&note, id);
}

#[tokio::test]
async fn the_pages_actions_change_the_conversation_through_the_audited_domain() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, id) = app.visitor_writes(inbox, "Can I change my order?").await;

    went_back(
        &post(&app, &agent, id, "assign", &[("assignee", "me")]).await,
        id,
    );
    assert_eq!(
        conversation(&app, &owner, id).await["assignee_id"],
        agent.member_id.to_string()
    );
    let owner_id = owner.member_id.to_string();
    went_back(
        &post(&app, &agent, id, "assign", &[("assignee", &owner_id)]).await,
        id,
    );
    assert_eq!(
        conversation(&app, &owner, id).await["assignee_id"],
        owner_id
    );
    went_back(
        &post(&app, &agent, id, "handler", &[("handler", "human")]).await,
        id,
    );
    assert_eq!(conversation(&app, &owner, id).await["handler"], "human");
    went_back(
        &post(&app, &agent, id, "handler", &[("handler", "ai")]).await,
        id,
    );
    assert_eq!(conversation(&app, &owner, id).await["handler"], "ai");
    went_back(
        &post(&app, &agent, id, "labels", &[("labels", "Orders, vip ,")]).await,
        id,
    );
    assert_eq!(
        conversation(&app, &owner, id).await["labels"],
        json!(["orders", "vip"])
    );
    went_back(
        &post(&app, &agent, id, "language", &[("language", "pt")]).await,
        id,
    );
    assert_eq!(conversation(&app, &owner, id).await["language"], "pt");
    went_back(
        &post(
            &app,
            &agent,
            id,
            "status",
            &[
                ("status", "snoozed"),
                ("snooze", "custom"),
                ("until", "2099-01-02T08:30"),
            ],
        )
        .await,
        id,
    );
    let snoozed = conversation(&app, &owner, id).await;
    assert_eq!(snoozed["status"], "snoozed");
    assert_eq!(snoozed["snoozed_until"], "2099-01-02T08:30:00Z");
    went_back(
        &post(&app, &agent, id, "status", &[("status", "resolved")]).await,
        id,
    );
    assert_eq!(conversation(&app, &owner, id).await["status"], "resolved");
    let page = app.send(Req::get(page_of(id)).by(&agent)).await;
    assert!(html(&page).contains("data-reopen"));
    went_back(
        &post(&app, &agent, id, "status", &[("status", "open")]).await,
        id,
    );
    assert_eq!(conversation(&app, &owner, id).await["status"], "open");

    for action in [
        "conversation.assigned",
        "conversation.taken_over",
        "conversation.handed_back",
        "conversation.labels_changed",
        "conversation.language_set",
        "conversation.status_changed",
    ] {
        let events = app.audit_events(owner.tenant_id, action).await;
        assert!(!events.is_empty(), "no {action} audited");
        assert!(
            events
                .iter()
                .all(|e| e["actor_id"] == agent.member_id.to_string()
                    || e["actor_id"] == owner.member_id.to_string()),
            "{events:?}"
        );
    }

    // Bad input is a clear refusal that changes nothing.
    let before = conversation(&app, &owner, id).await;
    for (action, fields) in [
        (
            "status",
            vec![
                ("status", "snoozed"),
                ("snooze", "custom"),
                ("until", "soon"),
            ],
        ),
        (
            "status",
            vec![
                ("status", "snoozed"),
                ("snooze", "custom"),
                ("until", "2001-01-01T00:00"),
            ],
        ),
        ("status", vec![("status", "closed")]),
        ("assign", vec![("assignee", "someone")]),
        ("handler", vec![("handler", "robot")]),
        ("language", vec![("language", "klingon")]),
    ] {
        let resp = post(&app, &agent, id, action, &fields).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{action} {fields:?}");
    }
    let labels: Vec<String> = (0..21).map(|i| format!("l{i}")).collect();
    let resp = post(&app, &agent, id, "labels", &[("labels", &labels.join(","))]).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(html(&resp).contains("Up to 20 labels"));
    assert_eq!(conversation(&app, &owner, id).await, before);
}

#[tokio::test]
async fn a_member_sees_only_the_controls_their_role_may_use() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let reviewer = app.join(&owner, "reviewer").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, id) = app.visitor_writes(inbox, "Hi").await;
    let controls = [
        "data-composer",
        "data-claim",
        "data-resolve",
        "data-contact-form",
        "data-restrict",
    ];
    let shown = |page: &str| -> Vec<&str> {
        controls
            .iter()
            .copied()
            .filter(|c| page.contains(c))
            .collect()
    };
    let owner_page = app.send(Req::get(page_of(id)).by(&owner)).await;
    assert_eq!(shown(html(&owner_page)), controls);
    let agent_page = app.send(Req::get(page_of(id)).by(&agent)).await;
    assert_eq!(
        shown(html(&agent_page)),
        [
            "data-composer",
            "data-claim",
            "data-resolve",
            "data-contact-form"
        ]
    );
    let reviewer_page = app.send(Req::get(page_of(id)).by(&reviewer)).await;
    assert_eq!(reviewer_page.status, StatusCode::OK);
    assert!(shown(html(&reviewer_page)).is_empty());
    // And the page a hidden button would post to refuses them.
    let refused = post(&app, &reviewer, id, "status", &[("status", "resolved")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = post(
        &app,
        &agent,
        id,
        "restriction",
        &[("restriction", "restrict")],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}

// proves: DSR-2, DSR-4
#[tokio::test]
async fn the_contact_panel_corrects_the_contact_and_restricts_processing_with_audit() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, id) = app.visitor_writes(inbox, "Please update my e-mail").await;
    let contact_id = conversation(&app, &owner, id).await["contact_id"]
        .as_str()
        .unwrap()
        .to_string();

    let corrected = post(
        &app,
        &owner,
        id,
        "contact",
        &[
            ("name", "Ana Lima"),
            ("email", "ana@example.com"),
            ("phone", "+55 11 91234-5678"),
        ],
    )
    .await;
    went_back(&corrected, id);
    let contact = app
        .send(Req::get(format!("/api/v1/contacts/{contact_id}")).by(&owner))
        .await;
    assert_eq!(contact.body["name"], "Ana Lima");
    assert_eq!(contact.body["email"], "ana@example.com");
    assert_eq!(contact.body["phone"], "+5511912345678");
    let audit = app.audit_events(owner.tenant_id, "contact.updated").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["after"]["name"], "Ana Lima");

    let refused = post(
        &app,
        &owner,
        id,
        "contact",
        &[("name", "Ana"), ("email", "not an address"), ("phone", "")],
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(html(&refused).contains("data-notice"));
    assert!(
        html(&refused).contains("value=\"not an address\""),
        "the correction was lost"
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "contact.updated")
            .await
            .len(),
        1
    );

    went_back(
        &post(
            &app,
            &owner,
            id,
            "restriction",
            &[("restriction", "restrict")],
        )
        .await,
        id,
    );
    let page = app.send(Req::get(page_of(id)).by(&owner)).await;
    assert!(html(&page).contains("data-restricted"));
    assert!(html(&page).contains("data-lift-restriction"));
    assert_eq!(conversation(&app, &owner, id).await["handler"], "human");
    assert_eq!(
        app.audit_events(owner.tenant_id, "contact.restricted")
            .await
            .len(),
        1
    );
    went_back(
        &post(&app, &owner, id, "restriction", &[("restriction", "lift")]).await,
        id,
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "contact.unrestricted")
            .await
            .len(),
        1
    );
}

/// How many messages to the customer (not notes) of the conversation contain `text`.
async fn customer_was_sent(app: &TestApp, conversation: Uuid, text: &str) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM message WHERE conversation_id = '{conversation}' AND NOT private
         AND direction = 'outbound' AND body LIKE '%{text}%'"
    ))
    .await
}

/// A tenant whose model is never sure: every customer message leaves a draft for a person.
async fn unsure_tenant() -> (TestApp, Member, FakeOpenAI, Uuid) {
    let app = TestApp::spawn_with(|c| fast_worker(c, "http://127.0.0.1:9")).await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let model = FakeOpenAI::start().await;
    model.set_default_reply(FakeReply::Json(
        json!({ "action": "reply", "reply": "Maybe restart the router?", "confidence": 0.1,
                "reason_code": "unsure", "cited_sources": [], "action_request": null }),
    ));
    let settings = app
        .send(
            Req::new(Method::PUT, "/api/v1/agent/settings")
                .by(&owner)
                .json(json!({ "provider_base_url": model.base_url, "api_key": "sk-test", "max_retries": 1,
                              "timeout_ms": 2000, "confidence_threshold": 0.7 })),
        )
        .await;
    assert_eq!(settings.status, StatusCode::OK, "{}", settings.body);
    let inbox = app.webchat_inbox(&owner, "https://help.example").await;
    (app, owner, model, inbox)
}

async fn waiting_draft(app: &TestApp, member: &Member, id: Uuid) -> (Uuid, String) {
    eventually(30, "the AI's draft on the page", || async {
        let page = app.send(Req::get(page_of(id)).by(member)).await;
        let page = html(&page).to_string();
        let at = page.find("data-draft=\"")? + "data-draft=\"".len();
        let review: Uuid = page[at..at + 36].parse().ok()?;
        Some((review, page))
    })
    .await
}

async fn review(app: &TestApp, owner: &Member, id: Uuid) -> Value {
    app.send(Req::get(format!("/api/v1/reviews/{id}")).by(owner))
        .await
        .body
}

// proves: AGT-5
#[tokio::test]
async fn an_ai_draft_is_inserted_edited_and_sent_as_the_members_reply_and_closed_as_handled() {
    let (app, owner, _model, inbox) = unsure_tenant().await;
    let agent = app.join(&owner, "agent").await;
    let (_, id) = app.visitor_writes(inbox, "My internet is down").await;
    let (review_id, page) = waiting_draft(&app, &agent, id).await;
    assert!(page.contains("Maybe restart the router?"));
    assert!(page.contains("confidence 0.10"));

    // Without JavaScript, "insert" reloads the page with the draft in the composer.
    let inserted = app
        .send(Req::get(format!("{}?use_draft=1", page_of(id))).by(&agent))
        .await;
    let inserted = html(&inserted);
    assert!(inserted.contains(&format!("name=\"draft_id\" value=\"{review_id}\"")));
    assert!(inserted.contains(">Maybe restart the router?</textarea>"));

    let edited = "Please restart the router and wait two minutes.";
    let draft_id = review_id.to_string();
    let fields = [
        ("body", edited),
        ("mode", "reply"),
        ("draft_id", draft_id.as_str()),
    ];
    let send_edited = || post(&app, &agent, id, "reply", &fields);
    went_back(&send_edited().await, id);
    // The customer gets the member's words, in the member's name; the unsure draft never.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{id}' AND NOT private
             AND author_kind = 'member' AND author_id = '{}' AND body = '{edited}'",
            agent.member_id
        ))
        .await,
        1
    );
    assert_eq!(customer_was_sent(&app, id, "Maybe restart").await, 0);
    // Closed as handled by the member: no reviewer approved anything.
    let item = review(&app, &owner, review_id).await;
    assert_eq!(item["status"], "resolved");
    assert_eq!(item["decided_by"], agent.member_id.to_string());
    assert_eq!(item["approvals"], 0);
    assert_eq!(item["result"]["handled_by_member"], true);
    assert_eq!(item["result"]["edited"], true);
    let audit = app.audit_events(owner.tenant_id, "review.draft_sent").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["actor_id"], agent.member_id.to_string());
    let page = app.send(Req::get(page_of(id)).by(&agent)).await;
    assert!(!html(&page).contains("data-draft="));

    // The same draft cannot be sent twice.
    let again = send_edited().await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(html(&again).contains(edited), "the member's text was lost");
}

// proves: AGT-5
#[tokio::test]
async fn a_discarded_draft_is_never_sent_and_the_api_sends_a_draft_as_the_page_does() {
    let (app, owner, _model, inbox) = unsure_tenant().await;
    let agent = app.join(&owner, "agent").await;
    let reviewer = app.join(&owner, "reviewer").await;
    let (_, first) = app
        .visitor_writes(inbox, "Is the shop open on Sunday?")
        .await;
    let (review_id, _) = waiting_draft(&app, &agent, first).await;
    let discarded = post(
        &app,
        &agent,
        first,
        "discard-draft",
        &[("review_id", &review_id.to_string())],
    )
    .await;
    went_back(&discarded, first);
    let item = review(&app, &owner, review_id).await;
    assert_eq!(item["status"], "resolved");
    assert_eq!(item["result"]["sent"], false);
    assert_eq!(
        app.audit_events(owner.tenant_id, "review.draft_discarded")
            .await
            .len(),
        1
    );
    assert_eq!(customer_was_sent(&app, first, "Maybe restart").await, 0);
    // The customer was told that a person will answer, and nothing else.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{first}' AND direction = 'outbound'
             AND NOT private AND author_kind = 'ai' AND body LIKE '%a colleague will pick up%'"
        ))
        .await,
        1
    );

    // Through the API: a reviewer may not reply, so may not send it; the agent may.
    let (_, second) = app.visitor_writes(inbox, "Do you ship to Portugal?").await;
    let (review_id, _) = waiting_draft(&app, &agent, second).await;
    let send = |member: &Member| {
        Req::post(format!("/api/v1/reviews/{review_id}/send-draft"))
            .by(member)
            .json(json!({ "text": "Maybe restart the router?" }))
    };
    assert_eq!(
        app.send(send(&reviewer)).await.status,
        StatusCode::FORBIDDEN
    );
    let sent = app.send(send(&agent)).await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    assert_eq!(sent.body["status"], "resolved");
    assert_eq!(sent.body["result"]["edited"], false);
    let twice = app.send(send(&agent)).await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert_eq!(twice.body["error"]["code"], "already_decided");
    // Only a draft is sent this way.
    let other = app
        .send(Req::post(format!("/api/v1/reviews/{}/discard-draft", Uuid::now_v7())).by(&agent))
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
}

// proves: AGT-5
#[tokio::test]
async fn a_tenant_rewords_the_hand_off_notice_per_kind_or_turns_it_off() {
    let (app, owner, _model, inbox) = unsure_tenant().await;
    let guardrails = |options: Value| {
        Req::new(Method::PUT, "/api/v1/agent/settings")
            .by(&owner)
            .json(json!({ "guardrails": { "options": options } }))
    };
    let reworded = app
        .send(guardrails(json!({ "safe_replies": {
            "handoff.low_confidence": { "en": "A specialist will answer you within the hour." }
        } })))
        .await;
    assert_eq!(reworded.status, StatusCode::OK, "{}", reworded.body);
    let (_, first) = app
        .visitor_writes(inbox, "Can I pay by bank transfer?")
        .await;
    waiting_draft(&app, &owner, first).await;
    assert_eq!(
        customer_was_sent(&app, first, "A specialist will answer you").await,
        1
    );
    assert_eq!(
        customer_was_sent(&app, first, "a colleague will pick up").await,
        0
    );

    let quiet = app
        .send(guardrails(json!({ "quiet_handoffs": ["low_confidence"] })))
        .await;
    assert_eq!(quiet.status, StatusCode::OK, "{}", quiet.body);
    let (_, second) = app
        .visitor_writes(inbox, "Do you have a shop in Lisbon?")
        .await;
    waiting_draft(&app, &owner, second).await;
    assert_eq!(customer_was_sent(&app, second, "").await, 0);

    // A kind is a plain name; anything else is refused and changes nothing.
    let refused = app
        .send(guardrails(json!({ "quiet_handoffs": ["Low Confidence!"] })))
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
}

// proves: DSR-3
#[tokio::test]
async fn the_contact_panel_erases_a_person_only_after_the_typed_confirmation() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, id) = app.visitor_writes(inbox, "Please forget me").await;
    let (_, other) = app.visitor_writes(inbox, "Someone else").await;
    let page = app.send(Req::get(page_of(id)).by(&owner)).await;
    assert!(html(&page).contains("data-erasure"));
    let page = app.send(Req::get(page_of(id)).by(&agent)).await;
    assert!(
        !html(&page).contains("data-erasure"),
        "an agent sees the erase form"
    );

    let unconfirmed = post(
        &app,
        &owner,
        id,
        "erasure",
        &[("mode", "erase"), ("confirm", "yes")],
    )
    .await;
    assert_eq!(unconfirmed.status, StatusCode::BAD_REQUEST);
    assert!(
        html(&unconfirmed).contains("erase to confirm"),
        "{}",
        html(&unconfirmed)
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM conversation WHERE id = '{id}'"
        ))
        .await,
        1
    );
    let by_agent = post(
        &app,
        &agent,
        id,
        "erasure",
        &[("mode", "erase"), ("confirm", "erase")],
    )
    .await;
    assert_eq!(by_agent.status, StatusCode::FORBIDDEN);

    let erased = post(
        &app,
        &owner,
        id,
        "erasure",
        &[("mode", "erase"), ("confirm", "erase")],
    )
    .await;
    assert_eq!(erased.status, StatusCode::SEE_OTHER, "{}", erased.body);
    assert_eq!(erased.headers[header::LOCATION], "/app");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM conversation WHERE id = '{id}'"
        ))
        .await,
        0
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "contact.erased")
            .await
            .len(),
        1
    );
    // Anonymising keeps the conversation, blank, and goes back to it.
    went_back(
        &post(
            &app,
            &owner,
            other,
            "erasure",
            &[("mode", "anonymise"), ("confirm", "anonymise")],
        )
        .await,
        other,
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{other}' AND body = ''"
        ))
        .await,
        1
    );
}
