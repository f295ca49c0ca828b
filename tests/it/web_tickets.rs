//! The ticket and task pages in-process, through the same router as the API: the ticket list
//! with its counts and filters, a ticket opened from the conversation page in one click, the
//! ticket page's comments and actions, the task views with their complete button, each with the
//! page's CSRF token, the same domain functions and the same audit events as the API.

use axum::http::{header, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::common::{Member, Req, Resp, TestApp};
use crate::web::{csrf_field, form, html, page_token};

fn post(path: impl Into<String>, member: &Member, fields: &[(&str, &str)]) -> Req {
    Req::post(path)
        .by(member)
        .raw("application/x-www-form-urlencoded", form(fields))
}

fn location(resp: &Resp) -> String {
    resp.headers[header::LOCATION].to_str().unwrap().to_string()
}

async fn api_ticket(app: &TestApp, member: &Member, body: serde_json::Value) -> Uuid {
    let resp = app
        .send(Req::post("/api/v1/tickets").by(member).json(body))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    resp.uuid("/id")
}

#[tokio::test]
async fn the_ticket_list_shows_counts_per_status_and_filters_by_status_priority_and_words() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    api_ticket(
        &app,
        &owner,
        json!({ "subject": "Refund for order 77", "priority": "urgent" }),
    )
    .await;
    let solved = api_ticket(&app, &owner, json!({ "subject": "Wrong size shipped" })).await;
    app.send(
        Req::patch(format!("/api/v1/tickets/{solved}"))
            .by(&owner)
            .json(json!({ "status": "solved" })),
    )
    .await;

    let page = app.send(Req::get("/app/tickets").by(&owner)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = html(&page);
    assert!(body.contains("Refund for order 77") && body.contains("Wrong size shipped"));
    assert!(body.contains(r#"data-count="All">2<"#), "{body}");
    assert!(body.contains(r#"data-count="New">1<"#));
    assert!(body.contains(r#"data-count="Solved">1<"#));
    assert!(body.contains(r#"href="/app/tickets" aria-current="page""#));

    let only_solved = app
        .send(Req::get("/app/tickets?status=solved").by(&owner))
        .await;
    let body = html(&only_solved);
    assert!(body.contains("Wrong size shipped") && !body.contains("Refund for order 77"));
    let urgent = app
        .send(Req::get("/app/tickets?priority=urgent&q=refund").by(&owner))
        .await;
    let body = html(&urgent);
    assert!(body.contains("Refund for order 77") && !body.contains("Wrong size shipped"));
    let none = app
        .send(Req::get("/app/tickets?assignee=me").by(&owner))
        .await;
    assert!(html(&none).contains("No tickets match these filters."));
    let bad = app
        .send(Req::get("/app/tickets?status=lost").by(&owner))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(html(&bad).contains("That did not work"));
}

// proves: AUD-1
// Part of CS-1 (tickets and tasks); deals, NPS/CSAT and product events are still to come.
#[tokio::test]
async fn a_member_opens_a_ticket_from_the_conversation_page_in_one_click() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, conversation) = app.visitor_writes(inbox, "The app crashes on login").await;

    let page = app
        .send(Req::get(format!("/app/conversations/{conversation}")).by(&agent))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = html(&page);
    assert!(
        body.contains("data-create-ticket"),
        "no ticket form on the conversation page"
    );
    assert!(body.contains(&format!(r#"name="conversation_id" value="{conversation}""#)));
    let token = csrf_field(body);

    let forged = app
        .send(post(
            "/app/tickets",
            &agent,
            &[
                ("_csrf", "forged"),
                ("subject", "Crash"),
                ("conversation_id", &conversation.to_string()),
            ],
        ))
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(app.count("SELECT count(*) FROM ticket").await, 0);

    let created = app
        .send(post(
            "/app/tickets",
            &agent,
            &[
                ("_csrf", &token),
                ("subject", "App crashes on login"),
                ("priority", "high"),
                ("conversation_id", &conversation.to_string()),
            ],
        ))
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let at = location(&created);
    let id: Uuid = at
        .strip_prefix("/app/tickets/")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("went to {at}"));
    let api = app
        .send(Req::get(format!("/api/v1/tickets/{id}")).by(&agent))
        .await;
    assert_eq!(api.body["ticket"]["origin"], "conversation");
    assert_eq!(api.body["ticket"]["priority"], "high");
    assert_eq!(
        api.body["ticket"]["conversation_ids"],
        json!([conversation])
    );
    assert!(api.body["ticket"]["requester_id"].is_string());
    let events = app.audit_events(owner.tenant_id, "ticket.created").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["actor_id"], agent.member_id.to_string());

    let shown = app.send(Req::get(&at).by(&agent)).await;
    assert_eq!(shown.status, StatusCode::OK);
    let body = html(&shown);
    assert!(body.contains("App crashes on login"));
    assert!(body.contains("Opened from a conversation"));
    assert!(body.contains(&format!("/app/conversations/{conversation}")));
    assert!(body.contains("data-sla"));

    // The conversation's side panel now lists it.
    let again = app
        .send(Req::get(format!("/app/conversations/{conversation}")).by(&agent))
        .await;
    let body = html(&again);
    assert!(body.contains("data-linked-tickets"), "{body}");
    assert!(body.contains(&format!(r#"href="/app/tickets/{id}""#)));
}

// proves: AUD-1
#[tokio::test]
async fn the_ticket_page_comments_and_changes_status_through_the_domain_each_audited() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, conversation) = app.visitor_writes(inbox, "Where is my parcel?").await;
    let id = api_ticket(
        &app,
        &owner,
        json!({ "subject": "Parcel", "conversation_id": conversation }),
    )
    .await;
    let token = page_token(&app, &agent).await;

    let internal = app
        .send(post(
            format!("/app/tickets/{id}/comments"),
            &agent,
            &[
                ("_csrf", &token),
                ("body", "Asked the carrier."),
                ("visibility", "internal"),
            ],
        ))
        .await;
    assert_eq!(internal.status, StatusCode::SEE_OTHER, "{}", internal.body);
    let public = app
        .send(post(
            format!("/app/tickets/{id}/comments"),
            &agent,
            &[
                ("_csrf", &token),
                ("body", "It arrives tomorrow."),
                ("visibility", "public"),
            ],
        ))
        .await;
    assert_eq!(public.status, StatusCode::SEE_OTHER, "{}", public.body);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{conversation}' AND body = 'It arrives tomorrow.' AND NOT private"
        ))
        .await,
        1,
        "the public comment went to the conversation"
    );
    let changed = app
        .send(post(
            format!("/app/tickets/{id}"),
            &agent,
            &[
                ("_csrf", &token),
                ("status", "solved"),
                ("priority", "low"),
                ("assignee", "me"),
            ],
        ))
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    let page = app
        .send(Req::get(format!("/app/tickets/{id}")).by(&agent))
        .await;
    let body = html(&page);
    assert!(body.contains(r#"data-status="solved""#));
    assert!(
        body.contains(r#"data-comment="internal""#) && body.contains(r#"data-comment="public""#)
    );
    assert!(body.contains("Asked the carrier.") && body.contains("It arrives tomorrow."));
    let updates = app.audit_events(owner.tenant_id, "ticket.updated").await;
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["after"]["status"], "solved");
    assert_eq!(
        updates[0]["after"]["assignee_id"],
        agent.member_id.to_string()
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "ticket.commented")
            .await
            .len(),
        2
    );

    // A bad status is refused with the error page and changes nothing.
    let bad = app
        .send(post(
            format!("/app/tickets/{id}"),
            &agent,
            &[("_csrf", &token), ("status", "gone")],
        ))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.audit_events(owner.tenant_id, "ticket.updated")
            .await
            .len(),
        1
    );
}

// proves: AUD-1
#[tokio::test]
async fn the_task_pages_show_the_three_views_and_complete_a_task_audited() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let token = page_token(&app, &owner).await;
    let created = app
        .send(post(
            "/app/tasks",
            &owner,
            &[
                ("_csrf", &token),
                ("title", "Call Globex"),
                ("due", "2020-01-01"),
                ("assignee", "me"),
            ],
        ))
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert_eq!(location(&created), "/app/tasks?view=mine");
    let id: Uuid = sqlx::query_scalar("SELECT id FROM task")
        .fetch_one(&mut app.superuser().await)
        .await
        .unwrap();

    for (view, shows) in [("mine", true), ("overdue", true), ("due_this_week", false)] {
        let page = app
            .send(Req::get(format!("/app/tasks?view={view}")).by(&owner))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let body = html(&page);
        assert_eq!(body.contains("Call Globex"), shows, "{view}");
        assert!(body.contains(&format!(
            r#"href="/app/tasks?view={view}" aria-current="page""#
        )));
    }
    let overdue = app
        .send(Req::get("/app/tasks?view=overdue").by(&owner))
        .await;
    assert!(html(&overdue).contains("data-overdue"));
    assert!(html(&overdue).contains(&format!("/app/tasks/{id}/complete")));

    let done = app
        .send(post(
            format!("/app/tasks/{id}/complete"),
            &owner,
            &[("_csrf", &token), ("view", "overdue")],
        ))
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(location(&done), "/app/tasks?view=overdue");
    let after = app
        .send(Req::get("/app/tasks?view=overdue").by(&owner))
        .await;
    assert!(!html(&after).contains("Call Globex"));
    assert_eq!(
        app.audit_events(owner.tenant_id, "task.completed")
            .await
            .len(),
        1
    );
}

// proves: SEC-2
#[tokio::test]
async fn a_partner_sees_only_shared_tickets_on_the_pages_and_no_forms() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let partner = app.join(&owner, "partner").await;
    let me = app.send(Req::get("/api/v1/auth/me").by(&partner)).await;
    let account = app
        .send(Req::post("/api/v1/accounts").by(&owner).json(
            json!({ "name": "Resold Ltd", "partner_org_id": me.body["member"]["partner_org_id"] }),
        ))
        .await
        .uuid("/id");
    let shared = api_ticket(
        &app,
        &owner,
        json!({ "subject": "Shared trouble", "account_id": account, "shared": true }),
    )
    .await;
    let internal = api_ticket(
        &app,
        &owner,
        json!({ "subject": "Internal trouble", "account_id": account }),
    )
    .await;

    let list = app.send(Req::get("/app/tickets").by(&partner)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let body = html(&list);
    assert!(body.contains("Shared trouble") && !body.contains("Internal trouble"));
    assert!(!body.contains("data-new-ticket"));
    let page = app
        .send(Req::get(format!("/app/tickets/{shared}")).by(&partner))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!html(&page).contains("data-comment-form"));
    let hidden = app
        .send(Req::get(format!("/app/tickets/{internal}")).by(&partner))
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert!(!html(&hidden).contains("Internal trouble"));
}
