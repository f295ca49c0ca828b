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

    let updated = app.audit_events(owner.tenant_id, "contact.updated").await;
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0]["before"]["email"], "hank@globex.example");
    assert_eq!(updated[0]["after"]["email"], "hank.s@globex.example");
    assert_eq!(updated[0]["before"]["phone"], "+16505551234");
    let deleted = app.audit_events(owner.tenant_id, "contact.deleted").await;
    assert_eq!(deleted[0]["before"]["name"], "Hank");
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
