//! Tickets through the API: their life cycle, filters and pages, public comments that reach the
//! customer through the conversation's channel, SLA clocks, bulk changes audited per ticket,
//! bad input refused without a change, and partners who see only what is shared (SEC-2).

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{Member, Req, TestApp};

async fn ticket(app: &TestApp, member: &Member, body: Value) -> Value {
    let resp = app
        .send(Req::post("/api/v1/tickets").by(member).json(body))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    resp.body
}

async fn tickets_count(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM ticket").await
}

fn subjects(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["subject"].as_str().unwrap())
        .collect()
}

// proves: AUD-1
// Part of CS-1 (tickets and tasks); deals, NPS/CSAT and product events are still to come.
#[tokio::test]
async fn a_member_opens_lists_updates_and_comments_on_a_ticket_each_step_audited() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let account = app
        .send(
            Req::post("/api/v1/accounts")
                .by(&owner)
                .json(json!({ "name": "Globex" })),
        )
        .await
        .uuid("/id");
    let contact = app
        .send(
            Req::post("/api/v1/contacts")
                .by(&owner)
                .json(json!({ "name": "Gina", "account_id": account })),
        )
        .await
        .uuid("/id");

    let created = ticket(
        &app,
        &agent,
        json!({
            "subject": "  Invoice shows the wrong VAT ", "description": "Since March.",
            "priority": "high", "type": "incident", "requester_id": contact,
            "tags": ["Billing", "billing", "vat"], "due_at": "2027-01-15"
        }),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["subject"], "Invoice shows the wrong VAT");
    assert_eq!(created["status"], "new");
    assert_eq!(created["type"], "incident");
    assert_eq!(created["origin"], "member");
    assert_eq!(created["author_id"], agent.member_id.to_string());
    assert_eq!(created["requester_id"], contact.to_string());
    assert_eq!(
        created["account_id"],
        account.to_string(),
        "the requester's account"
    );
    assert_eq!(created["tags"], json!(["billing", "vat"]));
    assert_eq!(created["due_at"], "2027-01-15T00:00:00Z");
    ticket(
        &app,
        &owner,
        json!({ "subject": "Password reset", "priority": "low" }),
    )
    .await;

    let all = app.send(Req::get("/api/v1/tickets").by(&agent)).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(
        subjects(&all.body),
        vec!["Password reset", "Invoice shows the wrong VAT"]
    );
    for (query, expected) in [
        ("priority=high", vec!["Invoice shows the wrong VAT"]),
        ("q=vat", vec!["Invoice shows the wrong VAT"]),
        ("tag=vat", vec!["Invoice shows the wrong VAT"]),
        (
            &format!("account_id={account}"),
            vec!["Invoice shows the wrong VAT"],
        ),
        (
            &format!("requester_id={contact}"),
            vec!["Invoice shows the wrong VAT"],
        ),
        ("status=new&priority=low", vec!["Password reset"]),
        ("due_before=2027-02-01", vec!["Invoice shows the wrong VAT"]),
        (
            "created_after=2000-01-01&unassigned=true",
            vec!["Password reset", "Invoice shows the wrong VAT"],
        ),
        ("created_before=2000-01-01", vec![]),
    ] {
        let page = app
            .send(Req::get(format!("/api/v1/tickets?{query}")).by(&agent))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{query}: {}", page.body);
        assert_eq!(subjects(&page.body), expected, "{query}");
    }
    // Cursor pagination: one per page, then the next, then nothing.
    let first = app
        .send(Req::get("/api/v1/tickets?limit=1").by(&agent))
        .await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_string();
    let second = app
        .send(Req::get(format!("/api/v1/tickets?limit=1&after={cursor}")).by(&agent))
        .await;
    assert_eq!(subjects(&second.body), vec!["Invoice shows the wrong VAT"]);

    let updated = app
        .send(
            Req::patch(format!("/api/v1/tickets/{id}")).by(&agent).json(
                json!({ "status": "pending", "assignee_id": agent.member_id, "due_at": null }),
            ),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["status"], "pending");
    assert_eq!(updated.body["assignee_id"], agent.member_id.to_string());
    assert_eq!(updated.body["due_at"], Value::Null);
    assert_eq!(updated.body["subject"], "Invoice shows the wrong VAT");
    let mine = app
        .send(Req::get(format!("/api/v1/tickets?assignee_id={}", agent.member_id)).by(&agent))
        .await;
    assert_eq!(subjects(&mine.body), vec!["Invoice shows the wrong VAT"]);

    let note = app
        .send(
            Req::post(format!("/api/v1/tickets/{id}/comments"))
                .by(&agent)
                .json(json!({ "body": "Finance is looking at it." })),
        )
        .await;
    assert_eq!(note.status, StatusCode::CREATED, "{}", note.body);
    assert_eq!(note.body["public"], false);
    assert_eq!(note.body["message_id"], Value::Null);
    let solved = app
        .send(
            Req::patch(format!("/api/v1/tickets/{id}"))
                .by(&agent)
                .json(json!({ "status": "solved" })),
        )
        .await;
    assert!(solved.body["solved_at"].is_string());
    let reopened = app
        .send(
            Req::patch(format!("/api/v1/tickets/{id}"))
                .by(&agent)
                .json(json!({ "status": "open" })),
        )
        .await;
    assert_eq!(
        reopened.body["solved_at"],
        Value::Null,
        "reopening restarts the clock"
    );

    let shown = app
        .send(Req::get(format!("/api/v1/tickets/{id}")).by(&owner))
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["ticket"]["status"], "open");
    assert_eq!(
        shown.body["comments"][0]["body"],
        "Finance is looking at it."
    );

    let created_events = app.audit_events(owner.tenant_id, "ticket.created").await;
    assert_eq!(created_events.len(), 2);
    let updates = app.audit_events(owner.tenant_id, "ticket.updated").await;
    assert_eq!(updates.len(), 3);
    assert_eq!(updates[0]["actor_id"], agent.member_id.to_string());
    assert_eq!(updates[0]["before"]["status"], "new");
    assert_eq!(updates[0]["after"]["status"], "pending");
    assert_eq!(
        app.audit_events(owner.tenant_id, "ticket.commented")
            .await
            .len(),
        1
    );
}

// part of CS-1: tickets (deals, NPS/CSAT and product events are still to come)
#[tokio::test]
async fn a_public_comment_reaches_the_customer_in_the_web_chat_and_stops_the_first_response_clock()
{
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (token, conversation) = app
        .visitor_writes(inbox, "My order 1234 never arrived")
        .await;

    // One click from the conversation: its customer is the requester, and it is linked.
    let created = ticket(
        &app,
        &owner,
        json!({ "subject": "Lost parcel", "conversation_id": conversation, "priority": "urgent" }),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["origin"], "conversation");
    assert_eq!(created["conversation_ids"], json!([conversation]));
    assert!(created["requester_id"].is_string());
    assert_eq!(created["first_response_at"], Value::Null);

    let internal = app
        .send(
            Req::post(format!("/api/v1/tickets/{id}/comments"))
                .by(&owner)
                .json(json!({ "body": "Carrier says it is in Lisbon." })),
        )
        .await;
    assert_eq!(internal.status, StatusCode::CREATED, "{}", internal.body);
    let public = app
        .send(
            Req::post(format!("/api/v1/tickets/{id}/comments"))
                .by(&owner)
                .json(json!({ "body": "We are sending a replacement today.", "public": true })),
        )
        .await;
    assert_eq!(public.status, StatusCode::CREATED, "{}", public.body);
    assert_eq!(public.body["conversation_id"], conversation.to_string());
    assert!(public.body["message_id"].is_string());

    let history = app
        .send(
            Req::get(format!("/api/v1/webchat/{inbox}/messages"))
                .header("x-webchat-session", token),
        )
        .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    let bodies: Vec<&str> = history.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert!(
        bodies.contains(&"We are sending a replacement today."),
        "{bodies:?}"
    );
    assert!(
        !bodies.contains(&"Carrier says it is in Lisbon."),
        "an internal comment reached the customer"
    );

    let shown = app
        .send(Req::get(format!("/api/v1/tickets/{id}")).by(&owner))
        .await;
    assert!(shown.body["ticket"]["first_response_at"].is_string());
    assert_eq!(
        shown.body["ticket"]["status"], "open",
        "answering opens a new ticket"
    );
    assert_eq!(
        shown.body["ticket"]["sla"]["first_response_breached"],
        false
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "message.created")
            .await
            .len(),
        1,
        "the reply is audited by the send path"
    );
}

#[tokio::test]
async fn a_public_comment_on_a_ticket_without_a_conversation_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let id = ticket(&app, &owner, json!({ "subject": "Phoned in" })).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = app
        .send(
            Req::post(format!("/api/v1/tickets/{id}/comments"))
                .by(&owner)
                .json(json!({ "body": "Hello", "public": true })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CONFLICT, "{}", resp.body);
    assert_eq!(resp.error_code(), "no_conversation");
    assert_eq!(app.count("SELECT count(*) FROM ticket_comment").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM message").await, 0);
}

#[tokio::test]
async fn sla_breach_times_follow_the_priority_and_the_tenants_targets() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let urgent = ticket(
        &app,
        &owner,
        json!({ "subject": "Site down", "priority": "urgent" }),
    )
    .await;
    let created: time::OffsetDateTime = time::OffsetDateTime::parse(
        urgent["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let due = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!(
        due(&urgent["sla"]["first_response_due_at"]) - created,
        time::Duration::hours(1)
    );
    assert_eq!(
        due(&urgent["sla"]["resolution_due_at"]) - created,
        time::Duration::hours(4)
    );
    assert_eq!(urgent["sla"]["first_response_breached"], false);

    // Two hours pass without an answer: the first response is breached, resolution is not yet.
    let id = urgent["id"].as_str().unwrap();
    sqlx::query("UPDATE ticket SET created_at = now() - interval '2 hours' WHERE id = $1::uuid")
        .bind(id)
        .execute(&mut app.superuser().await)
        .await
        .unwrap();
    let late = app
        .send(Req::get(format!("/api/v1/tickets/{id}")).by(&owner))
        .await;
    assert_eq!(late.body["ticket"]["sla"]["first_response_breached"], true);
    assert_eq!(late.body["ticket"]["sla"]["resolution_breached"], false);

    // The tenant allows urgent tickets a day to be answered: no longer breached.
    let set = app
        .send(
            Req::new(Method::PUT, "/api/v1/ticket-sla")
                .by(&owner)
                .json(json!([{ "priority": "urgent", "first_response_minutes": 1440, "resolution_minutes": 2880 }])),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(
        set.body.as_array().unwrap().len(),
        4,
        "every priority has targets"
    );
    let relaxed = app
        .send(Req::get(format!("/api/v1/tickets/{id}")).by(&owner))
        .await;
    assert_eq!(
        relaxed.body["ticket"]["sla"]["first_response_breached"],
        false
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "ticket_sla.updated")
            .await
            .len(),
        1
    );

    let refused = app
        .send(Req::new(Method::PUT, "/api/v1/ticket-sla").by(&owner).json(
            json!([{ "priority": "low", "first_response_minutes": 600, "resolution_minutes": 60 }]),
        ))
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.error_code(), "sla_contradiction");
    assert_eq!(app.count("SELECT count(*) FROM ticket_sla").await, 1);
}

// proves: AUD-1
#[tokio::test]
async fn bulk_assign_and_bulk_status_change_every_ticket_and_audit_each_one() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let mut ids = Vec::new();
    for subject in ["One", "Two", "Three"] {
        ids.push(ticket(&app, &owner, json!({ "subject": subject })).await["id"].clone());
    }
    let assigned = app
        .send(
            Req::post("/api/v1/tickets/bulk-assign")
                .by(&owner)
                .json(json!({ "ticket_ids": ids, "assignee_id": agent.member_id })),
        )
        .await;
    assert_eq!(assigned.status, StatusCode::OK, "{}", assigned.body);
    assert_eq!(assigned.body.as_array().unwrap().len(), 3);
    let solved = app
        .send(
            Req::post("/api/v1/tickets/bulk-status")
                .by(&owner)
                .json(json!({ "ticket_ids": ids, "status": "solved" })),
        )
        .await;
    assert_eq!(solved.status, StatusCode::OK, "{}", solved.body);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM ticket WHERE status = 'solved' AND assignee_id = '{}'",
            agent.member_id
        ))
        .await,
        3
    );
    let updates = app.audit_events(owner.tenant_id, "ticket.updated").await;
    assert_eq!(updates.len(), 6, "one entry per ticket and change");
    let mut entities: Vec<&str> = updates
        .iter()
        .map(|e| e["entity_id"].as_str().unwrap())
        .collect();
    entities.sort();
    entities.dedup();
    assert_eq!(entities.len(), 3);

    // One unknown id among them: none changes.
    let mut with_unknown = ids.clone();
    with_unknown.push(json!(Uuid::new_v4()));
    let refused = app
        .send(
            Req::post("/api/v1/tickets/bulk-status")
                .by(&owner)
                .json(json!({ "ticket_ids": with_unknown, "status": "open" })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.count("SELECT count(*) FROM ticket WHERE status = 'solved'")
            .await,
        3
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "ticket.updated")
            .await
            .len(),
        6
    );
}

#[tokio::test]
async fn bad_ticket_input_is_refused_with_a_4xx_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let id = ticket(&app, &owner, json!({ "subject": "Kept" })).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = app.count("SELECT count(*) FROM audit_event").await;
    let long = "x".repeat(301);
    let cases: Vec<(Req, StatusCode)> = vec![
        (
            Req::post("/api/v1/tickets").json(json!({ "subject": "   " })),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::post("/api/v1/tickets").json(json!({ "subject": long })),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::post("/api/v1/tickets").json(json!({ "subject": "x", "priority": "asap" })),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::post("/api/v1/tickets").json(json!({ "subject": "x", "due_at": "soon" })),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::post("/api/v1/tickets").json(json!({ "subject": "x", "tags": [""] })),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::post("/api/v1/tickets")
                .json(json!({ "subject": "x", "requester_id": Uuid::new_v4() })),
            StatusCode::NOT_FOUND,
        ),
        (
            Req::post("/api/v1/tickets")
                .json(json!({ "subject": "x", "assignee_id": Uuid::new_v4() })),
            StatusCode::NOT_FOUND,
        ),
        (
            Req::post("/api/v1/tickets").json(json!({ "subject": "x", "surprise": 1 })),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::patch(format!("/api/v1/tickets/{id}")).json(json!({ "status": "done" })),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::patch(format!("/api/v1/tickets/{id}")).json(json!({ "subject": "" })),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::patch(format!("/api/v1/tickets/{id}"))
                .json(json!({ "conversation_ids": [Uuid::new_v4()] })),
            StatusCode::NOT_FOUND,
        ),
        (
            Req::post(format!("/api/v1/tickets/{id}/comments")).json(json!({ "body": "  " })),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::post("/api/v1/tickets/bulk-assign")
                .json(json!({ "ticket_ids": [], "assignee_id": null })),
            StatusCode::BAD_REQUEST,
        ),
        (Req::get("/api/v1/tickets?limit=0"), StatusCode::BAD_REQUEST),
        (
            Req::get("/api/v1/tickets?created_after=yesterday"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::get("/api/v1/tickets?status=lost"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::get("/api/v1/tickets/not-a-uuid"),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (req, expected) in cases {
        let resp = app.send(req.by(&owner)).await;
        assert_eq!(resp.status, expected, "{}", resp.body);
        assert!(!resp.error_code().is_empty());
    }
    assert_eq!(tickets_count(&app).await, 1);
    assert_eq!(app.count("SELECT count(*) FROM ticket_comment").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM audit_event").await,
        before,
        "a refused request was audited as a change"
    );
    let kept = app
        .send(Req::get(format!("/api/v1/tickets/{id}")).by(&owner))
        .await;
    assert_eq!(kept.body["ticket"]["subject"], "Kept");
    assert_eq!(kept.body["ticket"]["status"], "new");

    // A closed ticket stays closed.
    app.send(
        Req::patch(format!("/api/v1/tickets/{id}"))
            .by(&owner)
            .json(json!({ "status": "closed" })),
    )
    .await;
    let reopen = app
        .send(
            Req::patch(format!("/api/v1/tickets/{id}"))
                .by(&owner)
                .json(json!({ "status": "open" })),
        )
        .await;
    assert_eq!(reopen.status, StatusCode::CONFLICT);
    assert_eq!(reopen.error_code(), "ticket_closed");
}

// proves: SEC-3
#[tokio::test]
async fn another_tenants_ticket_answers_404_and_stays_as_it_was() {
    let app = TestApp::spawn().await;
    let a = app.signup("alpha").await;
    let b = app.signup("bravo").await;
    let b_ticket = ticket(&app, &b, json!({ "subject": "Bravo's secret" })).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for req in [
        Req::get(format!("/api/v1/tickets/{b_ticket}")),
        Req::patch(format!("/api/v1/tickets/{b_ticket}")).json(json!({ "subject": "mine" })),
        Req::post(format!("/api/v1/tickets/{b_ticket}/comments")).json(json!({ "body": "hi" })),
        Req::post("/api/v1/tickets/bulk-status")
            .json(json!({ "ticket_ids": [b_ticket], "status": "closed" })),
    ] {
        let resp = app.send(req.by(&a)).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.body);
    }
    let list = app.send(Req::get("/api/v1/tickets").by(&a)).await;
    assert_eq!(list.body["items"], json!([]));
    let kept = app
        .send(Req::get(format!("/api/v1/tickets/{b_ticket}")).by(&b))
        .await;
    assert_eq!(kept.body["ticket"]["subject"], "Bravo's secret");
    assert_eq!(kept.body["ticket"]["status"], "new");
    assert_eq!(kept.body["comments"], json!([]));
}

// proves: SEC-2
#[tokio::test]
async fn a_partner_sees_only_the_shared_tickets_and_tasks_of_accounts_shared_with_it() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let partner = app.join(&owner, "partner").await;
    let me = app.send(Req::get("/api/v1/auth/me").by(&partner)).await;
    let org = me.body["member"]["partner_org_id"].clone();
    let shared_account = app
        .send(
            Req::post("/api/v1/accounts")
                .by(&owner)
                .json(json!({ "name": "Resold Ltd", "partner_org_id": org })),
        )
        .await
        .uuid("/id");
    let own_account = app
        .send(
            Req::post("/api/v1/accounts")
                .by(&owner)
                .json(json!({ "name": "Direct Ltd" })),
        )
        .await
        .uuid("/id");
    let visible = ticket(
        &app,
        &owner,
        json!({ "subject": "Shared", "account_id": shared_account, "shared": true }),
    )
    .await;
    let visible = visible["id"].as_str().unwrap().to_string();
    let mut hidden = Vec::new();
    for body in [
        json!({ "subject": "Not marked", "account_id": shared_account }),
        json!({ "subject": "Other account", "account_id": own_account, "shared": true }),
        json!({ "subject": "No account", "shared": true }),
    ] {
        hidden.push(
            ticket(&app, &owner, body).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    app.send(
        Req::post(format!("/api/v1/tickets/{visible}/comments"))
            .by(&owner)
            .json(json!({ "body": "Internal: margin is thin" })),
    )
    .await;
    let task = |title: &str, account: Uuid, shared: bool| {
        Req::post("/api/v1/tasks")
            .by(&owner)
            .json(json!({ "title": title, "account_id": account, "shared": shared }))
    };
    let shared_task = app
        .send(task("Call the reseller", shared_account, true))
        .await
        .uuid("/id");
    let hidden_tasks = [
        app.send(task("Internal follow-up", shared_account, false))
            .await
            .uuid("/id"),
        app.send(task("Direct follow-up", own_account, true))
            .await
            .uuid("/id"),
    ];

    let list = app.send(Req::get("/api/v1/tickets").by(&partner)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(subjects(&list.body), vec!["Shared"]);
    let shown = app
        .send(Req::get(format!("/api/v1/tickets/{visible}")).by(&partner))
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(
        shown.body["comments"],
        json!([]),
        "an internal comment was shown"
    );
    let tasks = app.send(Req::get("/api/v1/tasks").by(&partner)).await;
    let titles: Vec<&str> = tasks.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, vec!["Call the reseller"]);
    assert_eq!(
        app.send(Req::get(format!("/api/v1/tasks/{shared_task}")).by(&partner))
            .await
            .status,
        StatusCode::OK
    );

    // Every ticket and task route: what is not shared is not found, and the partner writes
    // nothing at all.
    let mut checked = 0;
    for spec in app.state.routes().to_vec() {
        let (ids, kind): (Vec<String>, &str) = if spec.path.contains("{ticket_id}") {
            (hidden.clone(), "ticket_id")
        } else if spec.path.contains("{task_id}") {
            (
                hidden_tasks.iter().map(Uuid::to_string).collect(),
                "task_id",
            )
        } else {
            continue;
        };
        for id in ids {
            let path = spec.path.replace(&format!("{{{kind}}}"), &id);
            let resp = app
                .send(
                    Req::new(spec.method.clone(), &path)
                        .by(&partner)
                        .json(json!({})),
                )
                .await;
            let expected = if spec.method == Method::GET {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(
                resp.status, expected,
                "{} {path}: {}",
                spec.method, resp.body
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} partner requests were checked"
    );
    for path in ["/api/v1/tickets", "/api/v1/tasks"] {
        let resp = app
            .send(
                Req::post(path)
                    .by(&partner)
                    .json(json!({ "subject": "x", "title": "x" })),
            )
            .await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN);
    }

    // Row-level security holds even without the query's filter.
    let mut tx = app
        .state
        .db
        .app
        .begin_with(sqlx::AssertSqlSafe(format!(
            "BEGIN; SELECT set_config('app.tenant_id', '{}', true), set_config('app.partner_org_id', '{}', true)",
            owner.tenant_id,
            org.as_str().unwrap()
        )))
        .await
        .unwrap();
    let rows: Vec<String> = sqlx::query_scalar("SELECT subject FROM ticket")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(rows, vec!["Shared"]);
    let comments: i64 = sqlx::query_scalar("SELECT count(*) FROM ticket_comment")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(comments, 0);
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM task")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(tasks, 1);
}
