//! Tasks through the API: their life cycle, the three views (mine, overdue, due this week),
//! completion audited, bad input refused without a change, and another tenant's task not found.

use axum::http::StatusCode;
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::common::{Member, Req, TestApp};

async fn task(app: &TestApp, member: &Member, body: Value) -> Uuid {
    let resp = app
        .send(Req::post("/api/v1/tasks").by(member).json(body))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    resp.uuid("/id")
}

fn at(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn titles(app: &TestApp, member: &Member, query: &str) -> Vec<String> {
    let resp = app
        .send(Req::get(format!("/api/v1/tasks?{query}")).by(member))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{query}: {}", resp.body);
    resp.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_string())
        .collect()
}

// proves: AUD-1
// Part of CS-1 (tickets and tasks); deals, NPS/CSAT and product events are still to come.
#[tokio::test]
async fn tasks_show_in_the_mine_overdue_and_this_week_views_and_completion_is_audited() {
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
    let ticket = app
        .send(
            Req::post("/api/v1/tickets")
                .by(&owner)
                .json(json!({ "subject": "Renewal questions", "account_id": account })),
        )
        .await
        .uuid("/id");

    let now = OffsetDateTime::now_utc();
    let (week_start, week_end) = custodian::cs::tasks::this_week(now);
    // Due later this week unless the week is nearly over; then due tomorrow falls next week.
    let later_this_week = now + (week_end - now) / 2;
    let overdue = task(
        &app,
        &agent,
        json!({ "title": "Send the renewal quote", "due_at": at(now - Duration::days(2)),
                "assignee_id": agent.member_id, "contact_id": contact }),
    )
    .await;
    let this_week = task(
        &app,
        &owner,
        json!({ "title": "Check usage", "due_at": at(later_this_week),
                "assignee_id": owner.member_id, "ticket_id": ticket }),
    )
    .await;
    task(
        &app,
        &owner,
        json!({ "title": "Quarterly review", "due_at": at(week_end + Duration::days(10)),
                "assignee_id": agent.member_id, "notes": "Bring the NPS numbers" }),
    )
    .await;

    let shown = app
        .send(Req::get(format!("/api/v1/tasks/{overdue}")).by(&agent))
        .await;
    assert_eq!(
        shown.body["account_id"],
        account.to_string(),
        "the contact's account"
    );
    assert_eq!(shown.body["overdue"], true);
    let linked = app
        .send(Req::get(format!("/api/v1/tasks/{this_week}")).by(&owner))
        .await;
    assert_eq!(
        linked.body["account_id"],
        account.to_string(),
        "the ticket's account"
    );

    assert_eq!(
        titles(&app, &agent, "view=mine").await,
        vec!["Quarterly review", "Send the renewal quote"]
    );
    assert_eq!(
        titles(&app, &owner, "view=overdue").await,
        vec!["Send the renewal quote"]
    );
    let week = titles(&app, &owner, "view=due_this_week").await;
    assert!(week.contains(&"Check usage".to_string()), "{week:?}");
    assert!(!week.contains(&"Quarterly review".to_string()));
    assert!(
        now - Duration::days(2) < week_start
            || week.contains(&"Send the renewal quote".to_string()),
        "an overdue task of this week is due this week"
    );
    assert_eq!(
        titles(&app, &owner, "q=nps").await,
        vec!["Quarterly review"]
    );
    assert_eq!(
        titles(&app, &owner, &format!("ticket_id={ticket}")).await,
        vec!["Check usage"]
    );
    assert_eq!(
        titles(&app, &owner, &format!("account_id={account}"))
            .await
            .len(),
        2
    );

    let renamed = app
        .send(
            Req::patch(format!("/api/v1/tasks/{overdue}"))
                .by(&agent)
                .json(json!({ "title": "Send the renewal quote (v2)", "due_at": null })),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["due_at"], Value::Null);
    assert_eq!(renamed.body["overdue"], false);

    let done = app
        .send(Req::post(format!("/api/v1/tasks/{overdue}/complete")).by(&agent))
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body["completed_at"].is_string());
    assert_eq!(done.body["completed_by"], agent.member_id.to_string());
    assert_eq!(
        titles(&app, &agent, "view=mine").await,
        vec!["Quarterly review"]
    );
    assert_eq!(
        titles(&app, &agent, "done=true").await,
        vec!["Send the renewal quote (v2)"]
    );
    let again = app
        .send(Req::post(format!("/api/v1/tasks/{overdue}/complete")).by(&agent))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "already_completed");

    let completed = app.audit_events(owner.tenant_id, "task.completed").await;
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0]["entity_id"], overdue.to_string());
    assert_eq!(completed[0]["actor_id"], agent.member_id.to_string());
    assert_eq!(completed[0]["before"]["completed_at"], Value::Null);
    assert!(completed[0]["after"]["completed_at"].is_string());
    assert_eq!(
        app.audit_events(owner.tenant_id, "task.created")
            .await
            .len(),
        3
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "task.updated")
            .await
            .len(),
        1
    );

    let reopened = app
        .send(Req::post(format!("/api/v1/tasks/{overdue}/reopen")).by(&agent))
        .await;
    assert_eq!(reopened.status, StatusCode::OK);
    assert_eq!(reopened.body["completed_at"], Value::Null);
    assert_eq!(
        app.audit_events(owner.tenant_id, "task.reopened")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn bad_task_input_is_refused_with_a_4xx_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let id = task(&app, &owner, json!({ "title": "Kept" })).await;
    let before = app.count("SELECT count(*) FROM audit_event").await;
    for (req, expected) in [
        (
            Req::post("/api/v1/tasks").json(json!({ "title": "" })),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::post("/api/v1/tasks").json(json!({ "title": "x", "due_at": "friday" })),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::post("/api/v1/tasks").json(json!({ "title": "x", "ticket_id": Uuid::new_v4() })),
            StatusCode::NOT_FOUND,
        ),
        (
            Req::post("/api/v1/tasks").json(json!({ "title": "x", "assignee_id": Uuid::new_v4() })),
            StatusCode::NOT_FOUND,
        ),
        (
            Req::patch(format!("/api/v1/tasks/{id}")).json(json!({ "title": "  " })),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::patch(format!("/api/v1/tasks/{id}")).json(json!({ "contact_id": Uuid::new_v4() })),
            StatusCode::NOT_FOUND,
        ),
        (
            Req::post(format!("/api/v1/tasks/{id}/reopen")),
            StatusCode::CONFLICT,
        ),
        (
            Req::get("/api/v1/tasks?view=someday"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Req::get("/api/v1/tasks?due_before=later"),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let resp = app.send(req.by(&owner)).await;
        assert_eq!(resp.status, expected, "{}", resp.body);
    }
    assert_eq!(app.count("SELECT count(*) FROM task").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM audit_event").await, before);
    let kept = app
        .send(Req::get(format!("/api/v1/tasks/{id}")).by(&owner))
        .await;
    assert_eq!(kept.body["title"], "Kept");
}

// proves: SEC-3
#[tokio::test]
async fn another_tenants_task_answers_404_and_stays_open() {
    let app = TestApp::spawn().await;
    let a = app.signup("alpha").await;
    let b = app.signup("bravo").await;
    let b_task = task(&app, &b, json!({ "title": "Bravo's plan" })).await;
    for req in [
        Req::get(format!("/api/v1/tasks/{b_task}")),
        Req::patch(format!("/api/v1/tasks/{b_task}")).json(json!({ "title": "mine" })),
        Req::post(format!("/api/v1/tasks/{b_task}/complete")),
    ] {
        assert_eq!(app.send(req.by(&a)).await.status, StatusCode::NOT_FOUND);
    }
    assert!(titles(&app, &a, "").await.is_empty());
    let kept = app
        .send(Req::get(format!("/api/v1/tasks/{b_task}")).by(&b))
        .await;
    assert_eq!(kept.body["title"], "Bravo's plan");
    assert_eq!(kept.body["completed_at"], Value::Null);
}
