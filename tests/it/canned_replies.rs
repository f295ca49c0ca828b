//! Canned replies: written by the people who curate the team's knowledge, used by everyone who
//! replies, every change audited, bad input refused with nothing stored.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::common::{Req, TestApp};

#[tokio::test]
async fn an_admin_writes_changes_and_deletes_canned_replies_each_change_audited() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let created = app
        .send(Req::post("/api/v1/canned-replies").by(&owner).json(json!({
            "shortcut": "refund-policy",
            "title": "  Refund policy ",
            "body": "Hi {{contact.name}}, refunds take 5 working days.\n",
        })))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["title"], "Refund policy", "trimmed");
    assert_eq!(
        created.body["body"],
        "Hi {{contact.name}}, refunds take 5 working days."
    );
    let id = created.uuid("/id");
    app.send(Req::post("/api/v1/canned-replies").by(&owner).json(json!({
        "shortcut": "greeting", "title": "Greeting", "body": "Hello! How can I help?"
    })))
    .await;

    let changed = app
        .send(
            Req::patch(format!("/api/v1/canned-replies/{id}"))
                .by(&owner)
                .json(json!({ "body": "Refunds take 3 working days." })),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["shortcut"], "refund-policy", "unchanged");
    assert_eq!(changed.body["body"], "Refunds take 3 working days.");

    let listed = app
        .send(Req::get("/api/v1/canned-replies").by(&owner))
        .await;
    let shortcuts: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["shortcut"].as_str().unwrap())
        .collect();
    assert_eq!(shortcuts, ["greeting", "refund-policy"], "by shortcut");
    let found = app
        .send(Req::get("/api/v1/canned-replies?q=3%20WORKING").by(&owner))
        .await;
    assert_eq!(found.body.as_array().unwrap().len(), 1, "{}", found.body);

    let deleted = app
        .send(Req::delete(format!("/api/v1/canned-replies/{id}")).by(&owner))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.send(Req::get(format!("/api/v1/canned-replies/{id}")).by(&owner))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let updated = app
        .audit_events(owner.tenant_id, "canned_reply.updated")
        .await;
    assert_eq!(
        updated[0]["before"]["body"],
        "Hi {{contact.name}}, refunds take 5 working days."
    );
    assert_eq!(updated[0]["after"]["body"], "Refunds take 3 working days.");
    assert_eq!(
        app.audit_events(owner.tenant_id, "canned_reply.created")
            .await
            .len(),
        2
    );
    let gone = app
        .audit_events(owner.tenant_id, "canned_reply.deleted")
        .await;
    assert_eq!(gone[0]["before"]["shortcut"], "refund-policy");
}

#[tokio::test]
async fn an_agent_uses_canned_replies_but_cannot_write_them() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let id = app
        .send(Req::post("/api/v1/canned-replies").by(&owner).json(json!({
            "shortcut": "thanks", "title": "Thanks", "body": "Thank you for waiting."
        })))
        .await
        .uuid("/id");
    let listed = app
        .send(Req::get("/api/v1/canned-replies").by(&agent))
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body[0]["body"], "Thank you for waiting.");
    for req in [
        Req::post("/api/v1/canned-replies")
            .json(json!({ "shortcut": "mine", "title": "Mine", "body": "x" })),
        Req::patch(format!("/api/v1/canned-replies/{id}")).json(json!({ "title": "Renamed" })),
        Req::delete(format!("/api/v1/canned-replies/{id}")),
    ] {
        assert_eq!(app.send(req.by(&agent)).await.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        app.count("SELECT count(*) FROM canned_reply WHERE title = 'Thanks'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_bad_or_taken_shortcut_and_a_blank_text_are_refused_and_store_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let first = app
        .send(Req::post("/api/v1/canned-replies").by(&owner).json(json!({
            "shortcut": "thanks", "title": "Thanks", "body": "Thank you."
        })))
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let id = first.uuid("/id");
    for (body, status, code) in [
        (
            json!({ "shortcut": "Thanks!", "title": "T", "body": "x" }),
            StatusCode::BAD_REQUEST,
            "invalid_shortcut",
        ),
        (
            json!({ "shortcut": "-x", "title": "T", "body": "x" }),
            StatusCode::BAD_REQUEST,
            "invalid_shortcut",
        ),
        (
            json!({ "shortcut": "ok", "title": "  ", "body": "x" }),
            StatusCode::BAD_REQUEST,
            "invalid_title",
        ),
        (
            json!({ "shortcut": "ok", "title": "two\nlines", "body": "x" }),
            StatusCode::BAD_REQUEST,
            "invalid_title",
        ),
        (
            json!({ "shortcut": "ok", "title": "T", "body": " \n " }),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({ "shortcut": "ok", "title": "T", "body": "x".repeat(4097) }),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({ "shortcut": "thanks", "title": "Again", "body": "Thanks again." }),
            StatusCode::CONFLICT,
            "shortcut_taken",
        ),
    ] {
        let resp = app
            .send(Req::post("/api/v1/canned-replies").by(&owner).json(body))
            .await;
        assert_eq!(resp.status, status, "{}", resp.body);
        assert_eq!(resp.error_code(), code);
    }
    let other = app
        .send(Req::post("/api/v1/canned-replies").by(&owner).json(json!({
            "shortcut": "other", "title": "Other", "body": "Other."
        })))
        .await
        .uuid("/id");
    let clash = app
        .send(
            Req::new(Method::PATCH, format!("/api/v1/canned-replies/{other}"))
                .by(&owner)
                .json(json!({ "shortcut": "thanks" })),
        )
        .await;
    assert_eq!(clash.status, StatusCode::CONFLICT);
    assert_eq!(clash.error_code(), "shortcut_taken");
    assert_eq!(app.count("SELECT count(*) FROM canned_reply").await, 2);
    let unchanged = app
        .send(Req::get(format!("/api/v1/canned-replies/{id}")).by(&owner))
        .await;
    assert_eq!(unchanged.body["title"], "Thanks");
    assert!(app
        .audit_events(owner.tenant_id, "canned_reply.updated")
        .await
        .is_empty());
}
