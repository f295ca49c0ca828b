//! Every route that changes something speaks JSON (security review, item 6): an empty
//! `text/plain` POST to `/api/v1/reviews/{id}/approve` approved the item and ran its action, and
//! `text/plain` is what a cross-site form may send without asking.

use axum::http::StatusCode;
use custodian::http::api::takes_body;
use serde_json::json;

use crate::common::{concrete, Req, TestApp};

#[tokio::test]
async fn every_route_that_changes_something_refuses_a_body_that_is_not_json() {
    // Four requests a route from one session: more than the API's per-client rate.
    let app = TestApp::spawn_with(|c| {
        c.limits.api_per_client_per_sec = 10_000;
        c.limits.api_per_tenant_per_sec = 10_000;
    })
    .await;
    let owner = app.signup("acme").await;
    let routes = app.state.routes().to_vec();
    let mut walked = 0;
    for spec in routes.iter().filter(|s| takes_body(&s.method)) {
        for (content_type, body) in [
            ("text/plain", "{}"),
            ("text/plain", ""),
            ("application/x-www-form-urlencoded", "note=ok"),
            ("multipart/form-data; boundary=x", "--x--"),
        ] {
            let resp = app
                .send(
                    Req::new(spec.method.clone(), concrete(spec.path))
                        .by(&owner)
                        .raw(content_type, body),
                )
                .await;
            assert_eq!(
                resp.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{} {} with {content_type}: {}",
                spec.method,
                spec.path,
                resp.body
            );
            assert_eq!(resp.error_code(), "unsupported_media_type");
        }
        walked += 1;
    }
    assert!(walked >= 30, "only {walked} routes take a body");
}

#[tokio::test]
async fn an_empty_or_plain_text_approval_approves_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let action = app
        .send(Req::post("/api/v1/agent/actions").by(&owner).json(json!({
            "name": "issue_refund", "description": "Refund an order", "kind": "refund",
            "target_url": "https://shop.example/refund", "secret": "s",
            "parameters": { "type": "object", "properties": { "order_id": { "type": "string" } } }
        })))
        .await;
    assert_eq!(action.status, StatusCode::CREATED, "{}", action.body);
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, conversation) = app.visitor_writes(inbox, "My order is broken").await;
    let item = app
        .send(Req::post("/api/v1/reviews").by(&agent).json(json!({
            "kind": "action", "conversation_id": conversation, "action_id": action.uuid("/id"),
            "arguments": { "order_id": "A-1" }
        })))
        .await;
    assert_eq!(item.status, StatusCode::CREATED, "{}", item.body);
    let id = item.uuid("/id");

    let path = format!("/api/v1/reviews/{id}/approve");
    for attempt in [
        Req::post(&path).by(&owner).raw("text/plain", ""),
        Req::post(&path).by(&owner).raw("text/plain", "{}"),
        // No body and no type at all: an approval says what it approves, `{}` at least.
        Req::post(&path).by(&owner),
    ] {
        let refused = app.send(attempt).await;
        assert_eq!(
            refused.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{}",
            refused.body
        );
    }
    let shown = app
        .send(Req::get(format!("/api/v1/reviews/{id}")).by(&owner))
        .await;
    assert_eq!(shown.body["status"], "pending", "{}", shown.body);
    assert_eq!(app.count("SELECT count(*) FROM review_approval").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM job WHERE kind = 'review.execute'")
            .await,
        0
    );
}
