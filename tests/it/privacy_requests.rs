//! Data-subject requests (DSR-6): a type, a subject, who asked and how they were identified, a
//! due date from the tenant's period, a workflow with a required refusal reason, notes, overdue
//! requests listed and counted, an audit trail, and nothing of another tenant's.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::common::{Member, Req, TestApp};

async fn contact(app: &TestApp, owner: &Member, body: Value) -> Uuid {
    let resp = app
        .send(Req::post("/api/v1/contacts").by(owner).json(body))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    resp.uuid("/id")
}

async fn request(app: &TestApp, owner: &Member, body: Value) -> Value {
    let resp = app
        .send(Req::post("/api/v1/privacy/requests").by(owner).json(body))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    resp.body
}

async fn move_to(app: &TestApp, owner: &Member, id: &Value, body: Value) -> crate::common::Resp {
    app.send(
        Req::post(format!(
            "/api/v1/privacy/requests/{}/status",
            id.as_str().unwrap()
        ))
        .by(owner)
        .json(body),
    )
    .await
}

fn at(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().unwrap(), &Rfc3339).unwrap()
}

fn days_until(value: &Value) -> f64 {
    (at(value) - OffsetDateTime::now_utc()).as_seconds_f64() / 86_400.0
}

// proves: DSR-6
#[tokio::test]
async fn a_request_is_due_in_fifteen_days_and_every_step_of_its_workflow_is_audited() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let ana = contact(&app, &owner, json!({ "name": "Ana Lima" })).await;

    let created = request(
        &app,
        &owner,
        json!({
            "type": "access", "contact_id": ana, "requester": "data_subject",
            "identity_check": "channel_identity", "note": "Asked on WhatsApp for a copy of her data"
        }),
    )
    .await;
    assert_eq!(created["type"], "access");
    assert_eq!(created["status"], "received");
    assert_eq!(created["contact_id"], json!(ana));
    assert_eq!(created["overdue"], false);
    assert_eq!(created["created_by"], json!(owner.member_id));
    let due = days_until(&created["due_at"]);
    assert!((14.99..=15.0).contains(&due), "due in {due} days");
    let id = &created["id"];

    for next in ["in_progress", "waiting_on_subject", "in_progress", "done"] {
        let moved = move_to(&app, &owner, id, json!({ "status": next })).await;
        assert_eq!(moved.status, StatusCode::OK, "{next}: {}", moved.body);
        assert_eq!(moved.body["status"], next);
    }
    let done = app
        .send(Req::get(format!("/api/v1/privacy/requests/{}", id.as_str().unwrap())).by(&owner))
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["request"]["status"], "done");
    assert!(done.body["request"]["closed_at"].is_string());
    assert_eq!(
        done.body["notes"][0]["body"],
        "Asked on WhatsApp for a copy of her data"
    );

    // The trail: its recording, its first note and each of its four steps, by the member.
    let created_events = app
        .audit_events(owner.tenant_id, "privacy_request.created")
        .await;
    assert_eq!(created_events.len(), 1);
    assert_eq!(created_events[0]["entity_id"], *id);
    assert_eq!(created_events[0]["actor_id"], owner.member_id.to_string());
    assert_eq!(
        app.audit_events(owner.tenant_id, "privacy_request.note_added")
            .await
            .len(),
        1
    );
    let steps: Vec<(Value, Value)> = app
        .audit_events(owner.tenant_id, "privacy_request.status_changed")
        .await
        .into_iter()
        .map(|e| (e["before"]["status"].clone(), e["after"]["status"].clone()))
        .collect();
    assert_eq!(
        steps,
        [
            (json!("received"), json!("in_progress")),
            (json!("in_progress"), json!("waiting_on_subject")),
            (json!("waiting_on_subject"), json!("in_progress")),
            (json!("in_progress"), json!("done")),
        ]
    );
    // The same trail through the audit API, by the request's id.
    let trail = app
        .send(
            Req::get(format!(
                "/api/v1/audit/events?entity_type=privacy_request&entity_id={}",
                id.as_str().unwrap()
            ))
            .by(&owner),
        )
        .await;
    assert_eq!(trail.status, StatusCode::OK, "{}", trail.body);
    assert_eq!(trail.body["events"].as_array().unwrap().len(), 6);
}

// proves: DSR-6
#[tokio::test]
async fn an_illegal_step_or_a_refusal_without_a_reason_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let ana = contact(&app, &owner, json!({ "name": "Ana Lima" })).await;
    let created = request(
        &app,
        &owner,
        json!({ "type": "erasure", "contact_id": ana, "requester": "data_subject", "identity_check": "document" }),
    )
    .await;
    let id = &created["id"];

    // Work must start before it is done.
    let skipped = move_to(&app, &owner, id, json!({ "status": "done" })).await;
    assert_eq!(skipped.status, StatusCode::CONFLICT, "{}", skipped.body);
    assert_eq!(skipped.error_code(), "illegal_transition");
    let same = move_to(&app, &owner, id, json!({ "status": "received" })).await;
    assert_eq!(same.error_code(), "illegal_transition");

    let unexplained = move_to(&app, &owner, id, json!({ "status": "refused" })).await;
    assert_eq!(unexplained.status, StatusCode::BAD_REQUEST);
    assert_eq!(unexplained.error_code(), "reason_required");
    let blank = move_to(
        &app,
        &owner,
        id,
        json!({ "status": "refused", "reason": "  " }),
    )
    .await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST);
    let misplaced = move_to(
        &app,
        &owner,
        id,
        json!({ "status": "in_progress", "reason": "why" }),
    )
    .await;
    assert_eq!(misplaced.error_code(), "reason_not_allowed");
    let unknown = move_to(&app, &owner, id, json!({ "status": "closed" })).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.audit_events(owner.tenant_id, "privacy_request.status_changed")
            .await
            .len(),
        0,
        "a refused step was audited"
    );

    let refused = move_to(
        &app,
        &owner,
        id,
        json!({ "status": "refused", "reason": "The data is under a legal obligation to be kept (tax records)" }),
    )
    .await;
    assert_eq!(refused.status, StatusCode::OK, "{}", refused.body);
    assert_eq!(
        refused.body["refusal_reason"],
        "The data is under a legal obligation to be kept (tax records)"
    );
    // Closed stays closed.
    let reopened = move_to(&app, &owner, id, json!({ "status": "in_progress" })).await;
    assert_eq!(reopened.status, StatusCode::CONFLICT);
    assert_eq!(reopened.error_code(), "illegal_transition");
    assert!(reopened.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("refused"));
    let events = app
        .audit_events(owner.tenant_id, "privacy_request.status_changed")
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["after"]["refusal_reason"],
        "The data is under a legal obligation to be kept (tax records)"
    );
}

// proves: DSR-6
#[tokio::test]
async fn a_subject_is_found_by_email_or_phone_and_an_unknown_or_ambiguous_one_is_refused() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let ana = contact(
        &app,
        &owner,
        json!({ "name": "Ana", "email": "Ana@Customer.example" }),
    )
    .await;
    let bia = contact(&app, &owner, json!({ "whatsapp_id": "5511987650001" })).await;
    contact(
        &app,
        &owner,
        json!({ "name": "Caio", "phone": "+5511987650002" }),
    )
    .await;
    contact(
        &app,
        &owner,
        json!({ "name": "Cris", "phone": "+5511987650002" }),
    )
    .await;
    let base = json!({ "type": "confirmation", "requester": "data_subject", "identity_check": "email_confirmation" });
    let with = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };

    let by_email = request(
        &app,
        &owner,
        with(json!({ "email": "ana@customer.example" })),
    )
    .await;
    assert_eq!(by_email["contact_id"], json!(ana));
    // A WhatsApp contact is found by their number, written as people write it.
    let by_phone = request(&app, &owner, with(json!({ "phone": "+55 11 98765-0001" }))).await;
    assert_eq!(by_phone["contact_id"], json!(bia));

    for (extra, status, code) in [
        (
            json!({ "email": "nobody@customer.example" }),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({ "phone": "+5511987650002" }),
            StatusCode::CONFLICT,
            "ambiguous_subject",
        ),
        (
            json!({ "phone": "11987650002" }),
            StatusCode::BAD_REQUEST,
            "invalid_phone",
        ),
        (
            json!({ "contact_id": Uuid::new_v4() }),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({ "contact_id": ana, "email": "ana@customer.example" }),
            StatusCode::BAD_REQUEST,
            "invalid_subject",
        ),
        (json!({}), StatusCode::BAD_REQUEST, "invalid_subject"),
    ] {
        let resp = app
            .send(
                Req::post("/api/v1/privacy/requests")
                    .by(&owner)
                    .json(with(extra.clone())),
            )
            .await;
        assert_eq!(resp.status, status, "{extra}: {}", resp.body);
        assert_eq!(resp.error_code(), code, "{extra}");
    }
    assert_eq!(app.count("SELECT count(*) FROM privacy_request").await, 2);
}

// proves: DSR-6
#[tokio::test]
async fn overdue_requests_are_listed_and_counted_and_lists_filter_and_page() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let ana = contact(&app, &owner, json!({ "name": "Ana" })).await;
    let mut ids = Vec::new();
    for kind in ["access", "portability", "erasure", "access", "objection"] {
        let created = request(
            &app,
            &owner,
            json!({ "type": kind, "contact_id": ana, "requester": "representative",
                    "requester_name": "Dra. Souza (lawyer)", "identity_check": "document" }),
        )
        .await;
        ids.push(created["id"].clone());
    }
    // Two fell past their due date: one still open, one answered (late, but answered).
    move_to(&app, &owner, &ids[4], json!({ "status": "in_progress" })).await;
    move_to(&app, &owner, &ids[4], json!({ "status": "done" })).await;
    sqlx::query("UPDATE privacy_request SET due_at = now() - interval '1 day' WHERE id = ANY($1)")
        .bind(vec![
            Uuid::parse_str(ids[0].as_str().unwrap()).unwrap(),
            Uuid::parse_str(ids[4].as_str().unwrap()).unwrap(),
        ])
        .execute(&mut app.superuser().await)
        .await
        .unwrap();

    let list = |query: &str| {
        let path = format!("/api/v1/privacy/requests{query}");
        let app = &app;
        let owner = &owner;
        async move {
            let resp = app.send(Req::get(path.clone()).by(owner)).await;
            assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.body);
            resp.body
        }
    };
    let overdue = list("?overdue=true").await;
    assert_eq!(overdue["items"].as_array().unwrap().len(), 1);
    assert_eq!(overdue["items"][0]["id"], ids[0]);
    assert_eq!(overdue["items"][0]["overdue"], true);
    assert_eq!(
        list("?overdue=false").await["items"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        list("?type=access").await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        list("?status=done").await["items"][0]["id"],
        ids[4],
        "status filter"
    );
    assert_eq!(
        list(&format!("?contact_id={}", Uuid::new_v4())).await["items"],
        json!([])
    );

    // Newest first, two at a time.
    let first = list("?limit=2").await;
    assert_eq!(first["items"][0]["id"], ids[4]);
    assert_eq!(first["items"][1]["id"], ids[3]);
    let second = list(&format!(
        "?limit=2&after={}",
        first["next_cursor"].as_str().unwrap()
    ))
    .await;
    assert_eq!(second["items"][0]["id"], ids[2]);
    let last = list(&format!(
        "?limit=2&after={}",
        second["next_cursor"].as_str().unwrap()
    ))
    .await;
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    assert_eq!(last["next_cursor"], Value::Null);

    let bad = app
        .send(Req::get("/api/v1/privacy/requests?status=lost").by(&owner))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let summary = app
        .send(Req::get("/api/v1/privacy/summary").by(&owner))
        .await;
    assert_eq!(summary.status, StatusCode::OK, "{}", summary.body);
    assert_eq!(
        summary.body,
        json!({ "open": 4, "overdue": 1, "received": 4, "in_progress": 0,
                "waiting_on_subject": 0, "done": 1, "refused": 0 })
    );
}

// proves: DSR-6
#[tokio::test]
async fn the_tenant_chooses_the_period_new_requests_are_due_in() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let ana = contact(&app, &owner, json!({ "name": "Ana" })).await;
    let body = json!({ "type": "correction", "contact_id": ana, "requester": "data_subject", "identity_check": "signed_in" });
    let before = request(&app, &owner, body.clone()).await;

    let settings = app
        .send(Req::get("/api/v1/privacy/settings").by(&owner))
        .await;
    assert_eq!(settings.body, json!({ "request_due_days": 15 }));
    for bad in [0, 91] {
        let refused = app
            .send(
                Req::new(Method::PUT, "/api/v1/privacy/settings")
                    .by(&owner)
                    .json(json!({ "request_due_days": bad })),
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(refused.error_code(), "invalid_settings");
    }
    let changed = app
        .send(
            Req::new(Method::PUT, "/api/v1/privacy/settings")
                .by(&owner)
                .json(json!({ "request_due_days": 30 })),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let events = app
        .audit_events(owner.tenant_id, "privacy_settings.updated")
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["before"]["request_due_days"], 15);
    assert_eq!(events[0]["after"]["request_due_days"], 30);

    let after = request(&app, &owner, body).await;
    let due = days_until(&after["due_at"]);
    assert!((29.99..=30.0).contains(&due), "due in {due} days");
    // A recorded request keeps the date it was given.
    let kept = app
        .send(
            Req::get(format!(
                "/api/v1/privacy/requests/{}",
                before["id"].as_str().unwrap()
            ))
            .by(&owner),
        )
        .await;
    assert_eq!(kept.body["request"]["due_at"], before["due_at"]);
}

// proves: DSR-6
#[tokio::test]
async fn a_request_outlives_the_deletion_of_its_contact() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let ana = contact(&app, &owner, json!({ "name": "Ana" })).await;
    let created = request(
        &app,
        &owner,
        json!({ "type": "erasure", "contact_id": ana, "requester": "data_subject", "identity_check": "document" }),
    )
    .await;
    let deleted = app
        .send(Req::delete(format!("/api/v1/contacts/{ana}")).by(&owner))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let kept = app
        .send(
            Req::get(format!(
                "/api/v1/privacy/requests/{}",
                created["id"].as_str().unwrap()
            ))
            .by(&owner),
        )
        .await;
    assert_eq!(kept.status, StatusCode::OK, "{}", kept.body);
    assert_eq!(kept.body["request"]["contact_id"], Value::Null);
    assert_eq!(kept.body["request"]["type"], "erasure");
}

// proves: DSR-6, SEC-3
#[tokio::test]
async fn another_tenants_requests_and_contacts_are_out_of_reach() {
    let app = TestApp::spawn().await;
    let a = app.signup("alpha").await;
    let b = app.signup("bravo").await;
    let b_contact = contact(
        &app,
        &b,
        json!({ "name": "Bruna", "email": "bruna@customer.example", "phone": "+5511900000001" }),
    )
    .await;
    let b_request = request(
        &app,
        &b,
        json!({ "type": "access", "contact_id": b_contact, "requester": "data_subject", "identity_check": "document" }),
    )
    .await;
    let b_id = b_request["id"].as_str().unwrap();

    for extra in [
        json!({ "contact_id": b_contact }),
        json!({ "email": "bruna@customer.example" }),
        json!({ "phone": "+5511900000001" }),
    ] {
        let mut body =
            json!({ "type": "access", "requester": "data_subject", "identity_check": "document" });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let resp = app
            .send(Req::post("/api/v1/privacy/requests").by(&a).json(body))
            .await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{extra}: {}", resp.body);
    }
    let list = app.send(Req::get("/api/v1/privacy/requests").by(&a)).await;
    assert_eq!(list.body["items"], json!([]));
    let summary = app.send(Req::get("/api/v1/privacy/summary").by(&a)).await;
    assert_eq!(summary.body["received"], 0);
    for req in [
        Req::get(format!("/api/v1/privacy/requests/{b_id}")),
        Req::post(format!("/api/v1/privacy/requests/{b_id}/status"))
            .json(json!({ "status": "in_progress" })),
        Req::post(format!("/api/v1/privacy/requests/{b_id}/notes")).json(json!({ "body": "x" })),
    ] {
        let resp = app.send(req.by(&a)).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.body);
    }
    let untouched = app
        .send(Req::get(format!("/api/v1/privacy/requests/{b_id}")).by(&b))
        .await;
    assert_eq!(untouched.body["request"]["status"], "received");
    assert_eq!(untouched.body["notes"], json!([]));
}

// proves: DSR-6
#[tokio::test]
async fn only_members_holding_data_subject_rights_see_or_record_requests() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let ana = contact(&app, &owner, json!({ "name": "Ana" })).await;
    for req in [
        Req::get("/api/v1/privacy/requests"),
        Req::get("/api/v1/privacy/summary"),
        Req::post("/api/v1/privacy/requests").json(json!({
            "type": "access", "contact_id": ana, "requester": "data_subject", "identity_check": "document"
        })),
    ] {
        let resp = app.send(req.by(&agent)).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.body);
    }
    assert_eq!(app.count("SELECT count(*) FROM privacy_request").await, 0);
}
