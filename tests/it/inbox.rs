//! The members' inbox: filters, pagination, replies and notes, assignment, hand-over between
//! the AI and humans, status changes, labels, live updates, and an audit entry for every
//! mutation (AUD-1).

use axum::http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::common::{Member, Req, TestApp};

async fn inbox_with_conversations(app: &TestApp, owner: &Member, n: usize) -> (Uuid, Vec<Uuid>) {
    let inbox = app.webchat_inbox(owner, "https://shop.example").await;
    let mut conversations = Vec::new();
    for i in 0..n {
        let (_, conversation) = app
            .visitor_writes(inbox, &format!("question number {i}"))
            .await;
        conversations.push(conversation);
    }
    (inbox, conversations)
}

#[tokio::test]
async fn conversations_are_listed_newest_first_with_cursor_pagination() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (_, conversations) = inbox_with_conversations(&app, &owner, 5).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/conversations?limit=2&cursor={c}"),
            None => "/api/v1/conversations?limit=2".to_string(),
        };
        let page = app.send(Req::get(path).by(&owner)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for item in page.body["items"].as_array().unwrap() {
            seen.push(Uuid::parse_str(item["id"].as_str().unwrap()).unwrap());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let newest_first: Vec<Uuid> = conversations.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    let bad = app
        .send(Req::get("/api/v1/conversations?cursor=not-ours").by(&owner))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_code(), "invalid_cursor");
}

// proves: AUD-1
#[tokio::test]
async fn assigning_handing_over_snoozing_resolving_and_labelling_are_filtered_and_audited() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let (_, conversations) = inbox_with_conversations(&app, &owner, 3).await;
    let [first, second, third] = [conversations[0], conversations[1], conversations[2]];
    let post = |path: String, body: serde_json::Value| Req::post(path).by(&agent).json(body);

    assert_eq!(
        app.send(post(
            format!("/api/v1/conversations/{first}/assign"),
            json!({ "assignee_id": agent.member_id })
        ))
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        app.send(post(
            format!("/api/v1/conversations/{first}/takeover"),
            json!({})
        ))
        .await
        .status,
        StatusCode::OK
    );
    let until = (time::OffsetDateTime::now_utc() + time::Duration::hours(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(
        app.send(post(
            format!("/api/v1/conversations/{second}/status"),
            json!({ "status": "snoozed", "snoozed_until": until })
        ))
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        app.send(post(
            format!("/api/v1/conversations/{third}/status"),
            json!({ "status": "resolved" })
        ))
        .await
        .status,
        StatusCode::OK
    );
    let labels = app
        .send(
            Req::new(
                axum::http::Method::PUT,
                format!("/api/v1/conversations/{third}/labels"),
            )
            .by(&agent)
            .json(json!({ "labels": ["Billing", "vip", "billing"] })),
        )
        .await;
    assert_eq!(labels.body["labels"], json!(["billing", "vip"]));

    let ids = |resp: crate::common::Resp| -> Vec<String> {
        resp.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    let list =
        |query: &str| app.send(Req::get(format!("/api/v1/conversations?{query}")).by(&agent));
    assert_eq!(ids(list("assignee=me").await), vec![first.to_string()]);
    assert_eq!(ids(list("handler=human").await), vec![first.to_string()]);
    assert_eq!(ids(list("status=snoozed").await), vec![second.to_string()]);
    assert_eq!(
        ids(list("status=resolved&label=vip").await),
        vec![third.to_string()]
    );
    assert_eq!(ids(list("q=number%201").await), vec![second.to_string()]);
    assert_eq!(
        ids(list("channel=webchat&assignee=none&status=open").await),
        Vec::<String>::new()
    );
    assert_eq!(list("status=bogus").await.status, StatusCode::BAD_REQUEST);

    // Hand back, reopen: each a separate audited change.
    assert_eq!(
        app.send(post(
            format!("/api/v1/conversations/{first}/handback"),
            json!({})
        ))
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        app.send(post(
            format!("/api/v1/conversations/{third}/status"),
            json!({ "status": "open" })
        ))
        .await
        .status,
        StatusCode::OK
    );

    for (action, entity, before_field, before, after) in [
        (
            "conversation.assigned",
            first,
            "assignee_id",
            json!(null),
            json!(agent.member_id.to_string()),
        ),
        (
            "conversation.taken_over",
            first,
            "handler",
            json!("ai"),
            json!("human"),
        ),
        (
            "conversation.handed_back",
            first,
            "handler",
            json!("human"),
            json!("ai"),
        ),
        (
            "conversation.labels_changed",
            third,
            "labels",
            json!([]),
            json!(["billing", "vip"]),
        ),
    ] {
        let events = app.audit_events(owner.tenant_id, action).await;
        let event = events
            .iter()
            .find(|e| e["entity_id"] == entity.to_string())
            .unwrap_or_else(|| panic!("no {action} for {entity}"));
        assert_eq!(event["before"][before_field], before, "{action}");
        assert_eq!(event["after"][before_field], after, "{action}");
        assert_eq!(event["actor_id"], agent.member_id.to_string(), "{action}");
    }
    let statuses = app
        .audit_events(owner.tenant_id, "conversation.status_changed")
        .await;
    assert_eq!(statuses.len(), 3);
    assert_eq!(statuses[2]["before"]["status"], "resolved");
    assert_eq!(statuses[2]["after"]["status"], "open");
}

#[tokio::test]
async fn snoozing_needs_a_future_time_and_partners_cannot_be_assigned() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let partner = app.join(&owner, "partner").await;
    let (_, conversations) = inbox_with_conversations(&app, &owner, 1).await;
    let c = conversations[0];
    let snooze = app
        .send(
            Req::post(format!("/api/v1/conversations/{c}/status"))
                .by(&owner)
                .json(json!({ "status": "snoozed" })),
        )
        .await;
    assert_eq!(
        (snooze.status, snooze.error_code()),
        (StatusCode::BAD_REQUEST, "invalid_snooze")
    );
    let assign = app
        .send(
            Req::post(format!("/api/v1/conversations/{c}/assign"))
                .by(&owner)
                .json(json!({ "assignee_id": partner.member_id })),
        )
        .await;
    assert_eq!(
        (assign.status, assign.error_code()),
        (StatusCode::BAD_REQUEST, "invalid_assignee")
    );
    let nobody = app
        .send(
            Req::post(format!("/api/v1/conversations/{c}/assign"))
                .by(&owner)
                .json(json!({ "assignee_id": Uuid::new_v4() })),
        )
        .await;
    // An id that names no member of this tenant is not found, like any foreign id (SEC-3).
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
    assert!(app
        .audit_events(owner.tenant_id, "conversation.assigned")
        .await
        .is_empty());
}

// proves: AUD-1
#[tokio::test]
async fn a_reply_takes_over_from_the_ai_and_a_note_stays_private_both_audited() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (inbox, conversations) = inbox_with_conversations(&app, &owner, 1).await;
    let c = conversations[0];
    let note = app
        .send(
            Req::post(format!("/api/v1/conversations/{c}/messages"))
                .by(&owner)
                .json(json!({ "body": "VIP, be nice", "private": true })),
        )
        .await;
    assert_eq!(note.status, StatusCode::CREATED);
    assert_eq!(note.body["private"], true);
    assert!(note.body["delivery_status"].is_null());
    let shown = app
        .send(Req::get(format!("/api/v1/conversations/{c}")).by(&owner))
        .await;
    assert_eq!(
        shown.body["conversation"]["handler"], "ai",
        "a note took the conversation over"
    );

    let reply = app
        .send(
            Req::post(format!("/api/v1/conversations/{c}/messages"))
                .by(&owner)
                .json(json!({ "body": "Hi! Happy to help." })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body["delivery_status"], "sent");
    let shown = app
        .send(Req::get(format!("/api/v1/conversations/{c}")).by(&owner))
        .await;
    assert_eq!(shown.body["conversation"]["handler"], "human");

    assert_eq!(
        app.audit_events(owner.tenant_id, "note.created")
            .await
            .len(),
        1
    );
    let created = app.audit_events(owner.tenant_id, "message.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["after"]["body"], "Hi! Happy to help.");
    assert_eq!(
        app.audit_events(owner.tenant_id, "conversation.taken_over")
            .await
            .len(),
        1
    );

    // The visitor sees the reply, never the note.
    let (session, _) = app.visitor_writes(inbox, "another question").await;
    let history = app
        .send(
            Req::get(format!("/api/v1/webchat/{inbox}/messages"))
                .header("x-webchat-session", session),
        )
        .await;
    let bodies: Vec<&str> = history.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert!(!bodies.contains(&"VIP, be nice"));
}

// proves: AUD-1, DSR-2
#[tokio::test]
async fn contacts_and_accounts_are_created_corrected_and_deleted_with_audit_entries() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let account = app
        .send(
            Req::post("/api/v1/accounts")
                .by(&owner)
                .json(json!({ "name": "Globex", "domain": "globex.example" })),
        )
        .await;
    assert_eq!(account.status, StatusCode::CREATED);
    let account_id = account.uuid("/id");
    let contact = app
        .send(Req::post("/api/v1/contacts").by(&owner).json(json!({ "name": "Hank", "email": "hank@globex.example", "phone": "+1 (650) 555-1234", "account_id": account_id })))
        .await;
    assert_eq!(contact.status, StatusCode::CREATED, "{}", contact.body);
    assert_eq!(contact.body["phone"], "+16505551234");
    let contact_id = contact.uuid("/id");
    let corrected = app
        .send(
            Req::patch(format!("/api/v1/contacts/{contact_id}"))
                .by(&owner)
                .json(json!({ "email": "hank.s@globex.example", "phone": null })),
        )
        .await;
    assert_eq!(corrected.status, StatusCode::OK);
    assert_eq!(corrected.body["phone"], serde_json::Value::Null);
    assert_eq!(corrected.body["name"], "Hank");
    let bad = app
        .send(
            Req::patch(format!("/api/v1/contacts/{contact_id}"))
                .by(&owner)
                .json(json!({ "phone": "12345" })),
        )
        .await;
    assert_eq!(
        (bad.status, bad.error_code()),
        (StatusCode::BAD_REQUEST, "invalid_phone")
    );
    let found = app
        .send(Req::get("/api/v1/contacts?q=hank.s").by(&owner))
        .await;
    assert_eq!(found.body["items"].as_array().unwrap().len(), 1);
    let updated = app.audit_events(owner.tenant_id, "contact.updated").await;
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0]["before"]["email"], "hank@globex.example");
    assert_eq!(updated[0]["after"]["email"], "hank.s@globex.example");
    assert_eq!(updated[0]["before"]["phone"], "+16505551234");

    assert_eq!(
        app.send(Req::delete(format!("/api/v1/contacts/{contact_id}")).by(&owner))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.send(Req::get(format!("/api/v1/contacts/{contact_id}")).by(&owner))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Deleting a contact is their erasure (DSR-3): the entry keeps the fact and the counts, and
    // no earlier entry keeps their values either.
    let deleted = app.audit_events(owner.tenant_id, "contact.erased").await;
    assert_eq!(deleted[0]["entity_id"], contact_id.to_string());
    assert_eq!(deleted[0]["after"]["erased"]["contact"], 1);
    assert!(!deleted[0].to_string().contains("Hank"), "{}", deleted[0]);
    let updated = app.audit_events(owner.tenant_id, "contact.updated").await;
    assert_eq!(updated[0]["before"], serde_json::Value::Null);
    assert_eq!(updated[0]["after"], serde_json::Value::Null);
    assert_eq!(
        app.audit_events(owner.tenant_id, "account.created")
            .await
            .len(),
        1
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "contact.created")
            .await
            .len(),
        1
    );
}

// proves: SEC-2
#[tokio::test]
async fn a_partner_sees_only_the_accounts_shared_with_its_organisation() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let partner = app.join(&owner, "partner").await;
    let me = app.send(Req::get("/api/v1/auth/me").by(&partner)).await;
    let org = me.body["member"]["partner_org_id"]
        .as_str()
        .unwrap()
        .to_string();
    let other_org = app
        .send(
            Req::post("/api/v1/partner-orgs")
                .by(&owner)
                .json(json!({ "name": "Another partner" })),
        )
        .await
        .uuid("/id");
    for (name, shared) in [
        ("Shared Co", json!(org)),
        ("Other Co", json!(other_org)),
        ("Private Co", json!(null)),
    ] {
        let resp = app
            .send(
                Req::post("/api/v1/accounts")
                    .by(&owner)
                    .json(json!({ "name": name, "partner_org_id": shared })),
            )
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    }
    let seen = app
        .send(Req::get("/api/v1/partner/accounts").by(&partner))
        .await;
    let names: Vec<&str> = seen
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Shared Co"]);
    assert_eq!(
        app.send(Req::get("/api/v1/accounts").by(&partner))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.send(Req::get("/api/v1/contacts").by(&partner))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn members_follow_new_messages_and_changes_live_for_their_own_tenant_only() {
    let app = TestApp::spawn().await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let other = app.signup("globex").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let other_inbox = app.webchat_inbox(&other, "https://globex.example").await;
    let (status, headers, mut stream) =
        app.open_stream(Req::get("/api/v1/events").by(&owner)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    // Let the listener settle, then make noise in both tenants.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    app.visitor_writes(other_inbox, "globex visitor").await;
    let (_, conversation) = app.visitor_writes(inbox, "acme visitor").await;
    let event = stream.next_event("message.created", 10).await;
    assert_eq!(
        event["conversation_id"],
        conversation.to_string(),
        "saw another tenant's event: {event}"
    );
    assert_eq!(event["tenant_id"], owner.tenant_id.to_string());
    app.send(
        Req::post(format!("/api/v1/conversations/{conversation}/status"))
            .by(&owner)
            .json(json!({ "status": "pending" })),
    )
    .await;
    // Other changes may come first (the agent hands the conversation over, say): wait for ours.
    loop {
        let changed = stream.next_event("conversation.updated", 10).await;
        assert_eq!(changed["tenant_id"], owner.tenant_id.to_string());
        if changed["data"]["status"] == "pending" {
            break;
        }
    }
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Starts this process's event listener and waits until it hears notifications, so that a live
/// stream opened now misses nothing committed from here on.
pub(crate) async fn listening(app: &TestApp) {
    custodian::app::spawn_listener(&app.state);
    let mut bus = app.state.bus.subscribe();
    let mut conn = app.superuser().await;
    let probe = json!({ "tenant_id": Uuid::nil(), "kind": "test.probe", "conversation_id": null, "message_id": null, "data": {} }).to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        sqlx::query("SELECT pg_notify('custodian_events', $1)")
            .bind(&probe)
            .execute(&mut conn)
            .await
            .unwrap();
        let heard = tokio::time::timeout(std::time::Duration::from_millis(200), bus.recv()).await;
        if matches!(heard, Ok(Ok(ref e)) if e.kind == "test.probe") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never listened"
        );
    }
}

#[tokio::test]
async fn a_snoozed_conversation_wakes_by_itself_when_its_time_comes_audited_and_announced() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (_, conversations) = inbox_with_conversations(&app, &owner, 2).await;
    let [due, later] = [conversations[0], conversations[1]];
    for c in [due, later] {
        let until = rfc3339(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
        let resp = app
            .send(
                Req::post(format!("/api/v1/conversations/{c}/status"))
                    .by(&owner)
                    .json(json!({ "status": "snoozed", "snoozed_until": until })),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    }
    // The first one's time has come (the API only takes a future time: the clock moved on).
    let mut conn = app.superuser().await;
    sqlx::query(
        "UPDATE conversation SET snoozed_until = now() - interval '1 minute' WHERE id = $1",
    )
    .bind(due)
    .execute(&mut conn)
    .await
    .unwrap();
    listening(&app).await;
    let (_, _, mut stream) = app.open_stream(Req::get("/api/v1/events").by(&owner)).await;

    // The housekeeping sweep, called directly.
    assert_eq!(
        custodian::conversations::wake_snoozed(&app.state.db)
            .await
            .unwrap(),
        1
    );
    let event = stream.next_event("conversation.updated", 10).await;
    assert_eq!(event["conversation_id"], due.to_string());
    assert_eq!(event["data"]["action"], "conversation.woken");
    assert_eq!(event["data"]["status"], "open");
    let shown = app
        .send(Req::get(format!("/api/v1/conversations/{due}")).by(&owner))
        .await;
    assert_eq!(shown.body["conversation"]["status"], "open");
    assert!(shown.body["conversation"]["snoozed_until"].is_null());
    let still = app
        .send(Req::get(format!("/api/v1/conversations/{later}")).by(&owner))
        .await;
    assert_eq!(still.body["conversation"]["status"], "snoozed");

    let woken = app
        .audit_events(owner.tenant_id, "conversation.woken")
        .await;
    assert_eq!(woken.len(), 1);
    assert_eq!(woken[0]["actor_type"], "system");
    assert_eq!(woken[0]["entity_id"], due.to_string());
    assert_eq!(woken[0]["before"]["status"], "snoozed");
    assert!(woken[0]["before"]["snoozed_until"].is_string());
    assert_eq!(woken[0]["after"]["status"], "open");
    assert!(woken[0]["after"]["snoozed_until"].is_null());
    // Nothing more is due: the next sweep changes nothing.
    assert_eq!(
        custodian::conversations::wake_snoozed(&app.state.db)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "conversation.woken")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn a_customer_message_wakes_a_snoozed_conversation_before_its_time() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (token, conversation) = app.visitor_writes(inbox, "first question").await;
    let until = rfc3339(time::OffsetDateTime::now_utc() + time::Duration::days(2));
    let snoozed = app
        .send(
            Req::post(format!("/api/v1/conversations/{conversation}/status"))
                .by(&owner)
                .json(json!({ "status": "snoozed", "snoozed_until": until })),
        )
        .await;
    assert_eq!(snoozed.body["status"], "snoozed");
    let sent = app
        .send(
            Req::post(format!("/api/v1/webchat/{inbox}/messages"))
                .header("x-webchat-session", token)
                .json(json!({ "body": "any news?" })),
        )
        .await;
    assert_eq!(sent.status, StatusCode::CREATED);
    assert_eq!(sent.body["conversation_id"], conversation.to_string());
    let shown = app
        .send(Req::get(format!("/api/v1/conversations/{conversation}")).by(&owner))
        .await;
    assert_eq!(shown.body["conversation"]["status"], "open");
    assert!(shown.body["conversation"]["snoozed_until"].is_null());
}

// proves: AUD-1
#[tokio::test]
async fn a_conversation_a_customer_message_opens_is_audited_with_the_channel_as_actor_once() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (token, conversation) = app.visitor_writes(inbox, "first question").await;
    // A second message joins the open conversation: no second creation on record.
    let sent = app
        .send(
            Req::post(format!("/api/v1/webchat/{inbox}/messages"))
                .header("x-webchat-session", token.clone())
                .json(json!({ "body": "and another thing" })),
        )
        .await;
    assert_eq!(sent.status, StatusCode::CREATED);
    let created = app
        .audit_events(owner.tenant_id, "conversation.created")
        .await;
    assert_eq!(created.len(), 1, "{created:?}");
    let event = &created[0];
    assert_eq!(event["entity_type"], "conversation");
    assert_eq!(event["entity_id"], conversation.to_string());
    assert_eq!(event["actor_type"], "channel");
    assert_eq!(event["actor_id"], inbox.to_string());
    assert_eq!(event["after"]["inbox_id"], inbox.to_string());
    assert_eq!(event["after"]["status"], "open");
    assert_eq!(event["after"]["handler"], "ai");
    // Resolved, the next message opens a new conversation, on record as well.
    let resolved = app
        .send(
            Req::post(format!("/api/v1/conversations/{conversation}/status"))
                .by(&owner)
                .json(json!({ "status": "resolved" })),
        )
        .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.body);
    let again = app
        .send(
            Req::post(format!("/api/v1/webchat/{inbox}/messages"))
                .header("x-webchat-session", token)
                .json(json!({ "body": "a new question" })),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    let reopened = again.body["conversation_id"].as_str().unwrap().to_string();
    assert_ne!(reopened, conversation.to_string());
    let created = app
        .audit_events(owner.tenant_id, "conversation.created")
        .await;
    assert_eq!(created.len(), 2, "{created:?}");
    assert!(created.iter().any(|e| e["entity_id"] == reopened.as_str()));
}

const IP: &str = "192.0.2.44";
const AGENT: &str = "inbox-web/3.1";

fn from(req: Req, member: &Member) -> Req {
    req.by(member).client_ip(IP).header("user-agent", AGENT)
}

fn assert_by(event: &serde_json::Value, member: &Member) {
    assert_eq!(event["actor_type"], "member", "{event}");
    assert_eq!(event["actor_id"], member.member_id.to_string(), "{event}");
    assert_eq!(event["ip"], IP, "{event}");
    assert_eq!(event["user_agent"], AGENT, "{event}");
    assert_eq!(event["tenant_id"], member.tenant_id.to_string(), "{event}");
    assert!(event["occurred_at"].is_string(), "{event}");
}

// proves: AUD-1
#[tokio::test]
async fn conversation_changes_are_audited_with_actor_address_agent_and_before_after() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let (_, conversations) = inbox_with_conversations(&app, &owner, 1).await;
    let c = conversations[0];
    let assign = app
        .send(
            from(
                Req::post(format!("/api/v1/conversations/{c}/assign")),
                &agent,
            )
            .json(json!({ "assignee_id": agent.member_id })),
        )
        .await;
    assert_eq!(assign.status, StatusCode::OK);
    let status = app
        .send(
            from(
                Req::post(format!("/api/v1/conversations/{c}/status")),
                &agent,
            )
            .json(json!({ "status": "pending" })),
        )
        .await;
    assert_eq!(status.status, StatusCode::OK);
    let labels = app
        .send(
            from(
                Req::new(
                    axum::http::Method::PUT,
                    format!("/api/v1/conversations/{c}/labels"),
                ),
                &agent,
            )
            .json(json!({ "labels": ["refund"] })),
        )
        .await;
    assert_eq!(labels.status, StatusCode::OK);

    for (action, field, before, after) in [
        (
            "conversation.assigned",
            "assignee_id",
            json!(null),
            json!(agent.member_id.to_string()),
        ),
        (
            "conversation.status_changed",
            "status",
            json!("open"),
            json!("pending"),
        ),
        (
            "conversation.labels_changed",
            "labels",
            json!([]),
            json!(["refund"]),
        ),
    ] {
        let events = app.audit_events(owner.tenant_id, action).await;
        assert_eq!(events.len(), 1, "{action}");
        let event = &events[0];
        assert_by(event, &agent);
        assert_eq!(event["entity_type"], "conversation");
        assert_eq!(event["entity_id"], c.to_string());
        assert_eq!(event["before"][field], before, "{action}");
        assert_eq!(event["after"][field], after, "{action}");
    }
}

// proves: AUD-1
#[tokio::test]
async fn account_updates_and_deletions_are_audited_with_actor_address_agent_and_before_after() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let account = app
        .send(
            Req::post("/api/v1/accounts")
                .by(&owner)
                .json(json!({ "name": "Globex", "domain": "globex.example" })),
        )
        .await
        .uuid("/id");
    let updated = app
        .send(
            from(Req::patch(format!("/api/v1/accounts/{account}")), &owner)
                .json(json!({ "name": "Globex Corp", "attributes": { "tier": "gold" } })),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(
        app.send(from(
            Req::delete(format!("/api/v1/accounts/{account}")),
            &owner
        ))
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    let update = &app.audit_events(owner.tenant_id, "account.updated").await[0];
    assert_by(update, &owner);
    assert_eq!(update["entity_id"], account.to_string());
    assert_eq!(update["before"]["name"], "Globex");
    assert_eq!(update["before"]["attributes"], json!({}));
    assert_eq!(update["after"]["name"], "Globex Corp");
    assert_eq!(update["after"]["attributes"]["tier"], "gold");
    let delete = &app.audit_events(owner.tenant_id, "account.deleted").await[0];
    assert_by(delete, &owner);
    assert_eq!(delete["before"]["name"], "Globex Corp");
    assert_eq!(delete["before"]["domain"], "globex.example");
    assert!(delete["after"].is_null());
}

async fn all_pages(app: &TestApp, owner: &Member, path: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &after {
            Some(a) => format!("{path}{sep}limit=2&after={a}"),
            None => format!("{path}{sep}limit=2"),
        };
        let page = app.send(Req::get(url).by(owner)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string()),
        );
        match page.body["next_cursor"].as_str() {
            Some(c) => after = Some(c.to_string()),
            None => return seen,
        }
    }
}

#[tokio::test]
async fn contacts_and_accounts_page_with_cursors_and_accounts_can_be_searched() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    for name in ["Initech", "Globex", "Globex Europe", "Umbrella", "Hooli"] {
        let resp = app
            .send(Req::post("/api/v1/accounts").by(&owner).json(json!({ "name": name, "domain": format!("{}.example", name.to_lowercase().replace(' ', "-")) })))
            .await;
        assert_eq!(resp.status, StatusCode::CREATED);
    }
    for name in ["Ana", "Bo", "Cy", "Di", "Ed"] {
        let resp = app
            .send(
                Req::post("/api/v1/contacts")
                    .by(&owner)
                    .json(json!({ "name": name })),
            )
            .await;
        assert_eq!(resp.status, StatusCode::CREATED);
    }
    // Newest first, every item once, across pages of two.
    assert_eq!(
        all_pages(&app, &owner, "/api/v1/accounts").await,
        vec!["Hooli", "Umbrella", "Globex Europe", "Globex", "Initech"]
    );
    assert_eq!(
        all_pages(&app, &owner, "/api/v1/contacts").await,
        vec!["Ed", "Di", "Cy", "Bo", "Ana"]
    );
    // Search by name or domain, case-insensitive, wildcards taken literally; pages too.
    assert_eq!(
        all_pages(&app, &owner, "/api/v1/accounts?q=globex").await,
        vec!["Globex Europe", "Globex"]
    );
    assert_eq!(
        all_pages(&app, &owner, "/api/v1/accounts?q=UMBRELLA.example").await,
        vec!["Umbrella"]
    );
    assert!(all_pages(&app, &owner, "/api/v1/accounts?q=%25")
        .await
        .is_empty());
    let bad = app
        .send(Req::get("/api/v1/accounts?after=not-a-cursor").by(&owner))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let too_many = app
        .send(Req::get("/api/v1/contacts?limit=500").by(&owner))
        .await;
    assert_eq!(too_many.error_code(), "invalid_limit");
}

// proves: DSR-4, AUD-1
#[tokio::test]
async fn restricting_a_contact_needs_the_data_subject_right_and_is_audited_with_before_and_after() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, conversation) = app.visitor_writes(inbox, "hello").await;
    let contact = app
        .send(Req::get(format!("/api/v1/conversations/{conversation}")).by(&owner))
        .await
        .body["contact"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let restrict = format!("/api/v1/contacts/{contact}/restrict");
    let denied = app.send(Req::post(&restrict).by(&agent)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let unknown = app
        .send(Req::post(format!("/api/v1/contacts/{}/restrict", Uuid::new_v4())).by(&owner))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let restricted = app.send(from(Req::post(&restrict), &owner)).await;
    assert_eq!(restricted.status, StatusCode::OK, "{}", restricted.body);
    assert_eq!(restricted.body["restricted"], true);
    // Its open conversation is with the humans at once.
    let shown = app
        .send(Req::get(format!("/api/v1/conversations/{conversation}")).by(&owner))
        .await;
    assert_eq!(shown.body["conversation"]["handler"], "human");
    assert_eq!(shown.body["contact"]["restricted"], true);

    let lifted = app
        .send(from(
            Req::post(format!("/api/v1/contacts/{contact}/unrestrict")),
            &owner,
        ))
        .await;
    assert_eq!(lifted.status, StatusCode::OK);
    assert_eq!(lifted.body["restricted"], false);

    let on = &app
        .audit_events(owner.tenant_id, "contact.restricted")
        .await[0];
    assert_by(on, &owner);
    assert_eq!(on["entity_id"], contact);
    assert_eq!(on["before"]["restricted"], false);
    assert_eq!(on["after"]["restricted"], true);
    let off = &app
        .audit_events(owner.tenant_id, "contact.unrestricted")
        .await[0];
    assert_by(off, &owner);
    assert_eq!(off["before"]["restricted"], true);
    assert_eq!(off["after"]["restricted"], false);
    let handed = app
        .audit_events(owner.tenant_id, "conversation.taken_over")
        .await;
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0]["entity_id"], conversation.to_string());
    assert_eq!(handed[0]["after"]["reason"], "restricted_contact");
}

#[tokio::test]
async fn a_live_stream_that_falls_behind_is_told_to_resync() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    listening(&app).await;
    // The stream subscribes now and is not read while far more events than it can hold
    // arrive.
    let (status, _, mut stream) = app.open_stream(Req::get("/api/v1/events").by(&owner)).await;
    assert_eq!(status, StatusCode::OK);
    let mut bus = app.state.bus.subscribe();
    let event = json!({ "tenant_id": owner.tenant_id, "kind": "message.created", "conversation_id": null, "message_id": null, "data": {} }).to_string();
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
    // Wait until the process has heard them all (this receiver lags too; it only counts).
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

/// What the tallies say and what counting the conversations says, side by side: rows that
/// differ between the two, in either direction (zero when they agree).
async fn tally_drift(app: &TestApp) -> (i64, i64) {
    let statuses = app
        .count(
            "SELECT count(*) FROM ((
                SELECT tenant_id, inbox_id, status, handler, assignee_id, sum(n)::bigint
                FROM conversation_tally GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0
                EXCEPT
                SELECT tenant_id, inbox_id, status, handler, assignee_id, count(*)
                FROM conversation GROUP BY 1, 2, 3, 4, 5
             ) UNION ALL (
                SELECT tenant_id, inbox_id, status, handler, assignee_id, count(*)
                FROM conversation GROUP BY 1, 2, 3, 4, 5
                EXCEPT
                SELECT tenant_id, inbox_id, status, handler, assignee_id, sum(n)::bigint
                FROM conversation_tally GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0)) drift",
        )
        .await;
    let labels = app
        .count(
            "SELECT count(*) FROM ((
                SELECT tenant_id, label, sum(n)::bigint FROM conversation_label_tally
                GROUP BY 1, 2 HAVING sum(n) <> 0
                EXCEPT
                SELECT c.tenant_id, l, count(DISTINCT c.id) FROM conversation c, unnest(c.labels) l
                GROUP BY 1, 2
             ) UNION ALL (
                SELECT c.tenant_id, l, count(DISTINCT c.id) FROM conversation c, unnest(c.labels) l
                GROUP BY 1, 2
                EXCEPT
                SELECT tenant_id, label, sum(n)::bigint FROM conversation_label_tally
                GROUP BY 1, 2 HAVING sum(n) <> 0)) drift",
        )
        .await;
    (statuses, labels)
}

#[tokio::test]
async fn the_inbox_counts_and_labels_stay_equal_to_the_conversations_through_every_kind_of_change()
{
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let neighbour = app.signup("globex").await;
    let (_, ours) = inbox_with_conversations(&app, &owner, 6).await;
    inbox_with_conversations(&app, &neighbour, 2).await;
    assert_eq!(tally_drift(&app).await, (0, 0), "after new conversations");

    let post = |path: String, body: serde_json::Value| Req::post(path).by(&agent).json(body);
    let labels = |c: Uuid, labels: serde_json::Value| {
        Req::new(
            axum::http::Method::PUT,
            format!("/api/v1/conversations/{c}/labels"),
        )
        .by(&agent)
        .json(json!({ "labels": labels }))
    };
    for req in [
        post(
            format!("/api/v1/conversations/{}/assign", ours[0]),
            json!({ "assignee_id": agent.member_id }),
        ),
        post(
            format!("/api/v1/conversations/{}/takeover", ours[1]),
            json!({}),
        ),
        post(
            format!("/api/v1/conversations/{}/status", ours[2]),
            json!({ "status": "resolved" }),
        ),
        post(
            format!("/api/v1/conversations/{}/status", ours[3]),
            json!({ "status": "pending" }),
        ),
        labels(ours[0], json!(["billing", "vip"])),
        labels(ours[1], json!(["billing"])),
        labels(ours[0], json!(["vip", "refund"])),
        labels(ours[1], json!([])),
        post(
            format!("/api/v1/conversations/{}/status", ours[2]),
            json!({ "status": "open" }),
        ),
        post(
            format!("/api/v1/conversations/{}/assign", ours[0]),
            json!({ "assignee_id": null }),
        ),
    ] {
        let resp = app.send(req).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
        assert_eq!(tally_drift(&app).await, (0, 0), "after {}", resp.body);
    }
    let contact: Uuid = {
        let mut conn = app.superuser().await;
        sqlx::query_scalar("SELECT contact_id FROM conversation WHERE id = $1")
            .bind(ours[0])
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    let deleted = app
        .send(Req::delete(format!("/api/v1/contacts/{contact}")).by(&owner))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    assert_eq!(tally_drift(&app).await, (0, 0), "after deleting a contact");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM conversation_label_tally WHERE label = 'refund' AND n <> 0"
        )
        .await,
        0,
        "a label nobody uses any more is gone from the filter"
    );

    // The inbox page reads its tabs and its labels from the tallies: of the five
    // conversations left, one is pending; the other tenant's two count nowhere here.
    let page = app.send(Req::get("/app").by(&owner)).await;
    assert_eq!(page.status, StatusCode::OK);
    let page = crate::web::html(&page);
    assert!(page.contains("data-count=\"open\">4<"), "{page}");
    assert!(page.contains("data-count=\"pending\">1<"));
    assert!(page.contains("data-count=\"resolved\">0<"));
    assert!(
        !page.contains("refund"),
        "the deleted conversation's label is offered"
    );
}
