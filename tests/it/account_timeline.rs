//! An account's timeline (#17 item 4): its conversations, tickets and tasks in one list,
//! newest first, paged without gaps or repeats, and nothing of another account or tenant.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{Member, Req, TestApp};

async fn post(app: &TestApp, who: &Member, path: &str, body: Value) -> Uuid {
    let resp = app.send(Req::post(path).by(who).json(body)).await;
    assert!(resp.status.is_success(), "{path}: {}", resp.body);
    resp.uuid("/id")
}

/// An account with a contact who wrote on the web chat (then resolved), a ticket (solved) and
/// two tasks (one done); and a second account with a ticket of its own.
async fn history(app: &TestApp, owner: &Member) -> (Uuid, Uuid) {
    let account = post(
        app,
        owner,
        "/api/v1/accounts",
        json!({ "name": "Acme Ltd" }),
    )
    .await;
    let other = post(
        app,
        owner,
        "/api/v1/accounts",
        json!({ "name": "Other Co" }),
    )
    .await;
    let inbox = app.webchat_inbox(owner, "https://shop.example").await;
    let (_, conversation) = app.visitor_writes(inbox, "Where is my order?").await;
    let contact = app
        .send(Req::get(format!("/api/v1/conversations/{conversation}")).by(owner))
        .await
        .body["conversation"]["contact_id"]
        .as_str()
        .unwrap()
        .to_string();
    let moved = app
        .send(
            Req::patch(format!("/api/v1/contacts/{contact}"))
                .by(owner)
                .json(json!({ "account_id": account })),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    let ticket = post(
        app,
        owner,
        "/api/v1/tickets",
        json!({ "subject": "Parcel lost", "account_id": account, "requester_id": contact }),
    )
    .await;
    post(
        app,
        owner,
        "/api/v1/tasks",
        json!({ "title": "Call them back", "account_id": account }),
    )
    .await;
    let done = post(
        app,
        owner,
        "/api/v1/tasks",
        json!({ "title": "Refund sent", "account_id": account }),
    )
    .await;
    let completed = app
        .send(Req::post(format!("/api/v1/tasks/{done}/complete")).by(owner))
        .await;
    assert!(completed.status.is_success(), "{}", completed.body);
    let solved = app
        .send(
            Req::patch(format!("/api/v1/tickets/{ticket}"))
                .by(owner)
                .json(json!({ "status": "solved" })),
        )
        .await;
    assert_eq!(solved.status, StatusCode::OK, "{}", solved.body);
    let resolved = app
        .send(
            Req::post(format!("/api/v1/conversations/{conversation}/status"))
                .by(owner)
                .json(json!({ "status": "resolved" })),
        )
        .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.body);
    post(
        app,
        owner,
        "/api/v1/tickets",
        json!({ "subject": "Not theirs", "account_id": other }),
    )
    .await;
    (account, other)
}

/// A deal for the account, moved one stage on, then won.
async fn deal_won(app: &TestApp, owner: &Member, account: Uuid) {
    let deal = post(
        app,
        owner,
        "/api/v1/deals",
        json!({ "name": "Renewal", "value_minor": 1250000, "currency": "EUR", "account_id": account }),
    )
    .await;
    let pipelines = app.send(Req::get("/api/v1/pipelines").by(owner)).await;
    let second = pipelines.body[0]["stages"][1]["id"].clone();
    let moved = app
        .send(
            Req::patch(format!("/api/v1/deals/{deal}"))
                .by(owner)
                .json(json!({ "stage_id": second })),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    let won = app
        .send(Req::post(format!("/api/v1/deals/{deal}/won")).by(owner))
        .await;
    assert_eq!(won.status, StatusCode::OK, "{}", won.body);
}

async fn timeline(app: &TestApp, who: &Member, account: Uuid, query: &str) -> Value {
    let resp = app
        .send(Req::get(format!("/api/v1/accounts/{account}/timeline{query}")).by(who))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    resp.body
}

fn kinds(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

// Part of CS-1 (an account's conversations, tickets, tasks and deals in one timeline); NPS/CSAT and product events are still to come.
#[tokio::test]
async fn an_accounts_timeline_lists_its_conversations_tickets_and_tasks_newest_first() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (account, _) = history(&app, &owner).await;
    deal_won(&app, &owner, account).await;
    let page = timeline(&app, &owner, account, "").await;
    assert_eq!(
        kinds(&page),
        [
            "deal.won",
            "deal.moved",
            "deal.opened",
            "conversation.resolved",
            "ticket.solved",
            "task.completed",
            "task.created",
            "task.created",
            "ticket.opened",
            "conversation.opened",
        ],
        "{page}"
    );
    let items = page["items"].as_array().unwrap();
    assert!(page["next_cursor"].is_null());
    assert_eq!(items[0]["title"], "Deal won: Renewal (EUR 12,500.00)");
    assert_eq!(items[0]["entity_type"], "deal");
    assert!(items[1]["title"]
        .as_str()
        .unwrap()
        .starts_with("Deal Renewal moved to "));
    assert_eq!(items[4]["title"], "Ticket solved: Parcel lost");
    assert_eq!(items[4]["status"], "solved");
    assert_eq!(items[9]["entity_type"], "conversation");
    assert_eq!(items[9]["status"], "resolved");
    assert!(
        items
            .iter()
            .all(|e| e["title"] != "Ticket opened: Not theirs"),
        "another account's ticket: {page}"
    );
    let times: Vec<&str> = items.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted);
}

#[tokio::test]
async fn a_timeline_pages_through_every_event_once_in_the_same_order() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (account, _) = history(&app, &owner).await;
    deal_won(&app, &owner, account).await;
    let whole = timeline(&app, &owner, account, "").await;
    let mut paged = Vec::new();
    let mut query = "?limit=2".to_string();
    loop {
        let page = timeline(&app, &owner, account, &query).await;
        assert!(page["items"].as_array().unwrap().len() <= 2);
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&after={}", urlencode(cursor)),
            None => break,
        }
    }
    assert_eq!(Value::Array(paged), whole["items"]);
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("x", s)]).unwrap()[2..].to_string()
}

// proves: SEC-3
#[tokio::test]
async fn another_tenants_account_answers_404_and_a_bad_cursor_400_and_a_partner_403() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (account, _) = history(&app, &owner).await;
    let stranger = app.signup("globex").await;
    let foreign = app
        .send(Req::get(format!("/api/v1/accounts/{account}/timeline")).by(&stranger))
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{}", foreign.body);
    for bad in ["x", "1~2~3", "123~01a25316-c935-7655-9f38-1d89045c2034~BAD"] {
        let resp = app
            .send(
                Req::get(format!(
                    "/api/v1/accounts/{account}/timeline?after={}",
                    urlencode(bad)
                ))
                .by(&owner),
            )
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{bad}: {}", resp.body);
        assert_eq!(resp.error_code(), "invalid_cursor");
    }
    let partner = app.join(&owner, "partner").await;
    let refused = app
        .send(Req::get(format!("/api/v1/accounts/{account}/timeline")).by(&partner))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // The auditor reads everything the timeline has, as their own lists allow.
    let auditor = app.join(&owner, "auditor").await;
    let seen: BTreeSet<String> = kinds(&timeline(&app, &auditor, account, "").await)
        .into_iter()
        .collect();
    assert!(seen.contains("ticket.opened") && seen.contains("conversation.opened"));
}
