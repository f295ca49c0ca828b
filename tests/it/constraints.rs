//! Named database constraints a client can break answer a clear 4xx with the platform's error
//! shape, never a 500, and the refused write leaves nothing behind.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::common::{Member, Req, TestApp};

/// Sends `req` and asserts it is refused with `status` and `code`, and that `count_sql` counts
/// as many rows afterwards as before.
async fn refused(
    app: &TestApp,
    req: Req,
    status: StatusCode,
    code: &str,
    count_sql: &str,
) -> Value {
    let before = app.count(count_sql).await;
    let resp = app.send(req).await;
    assert_eq!(resp.status, status, "{}", resp.body);
    assert_eq!(resp.error_code(), code, "{}", resp.body);
    assert_eq!(app.count(count_sql).await, before, "{count_sql}");
    resp.body
}

async fn contact(app: &TestApp, owner: &Member, body: Value) {
    let resp = app
        .send(Req::post("/api/v1/contacts").by(owner).json(body))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
}

#[tokio::test]
async fn a_contact_name_longer_than_the_limit_is_refused_with_400_not_500() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;

    let body = refused(
        &app,
        Req::post("/api/v1/contacts")
            .by(&owner)
            .json(json!({ "name": "a".repeat(201) })),
        StatusCode::BAD_REQUEST,
        "name_too_long",
        "SELECT count(*) FROM contact",
    )
    .await;

    assert!(body["error"]["message"].as_str().unwrap().contains("200"));
    contact(&app, &owner, json!({ "name": "a".repeat(200) })).await;
}

#[tokio::test]
async fn a_contact_external_id_longer_than_the_limit_is_refused_with_400_not_500() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;

    refused(
        &app,
        Req::post("/api/v1/contacts")
            .by(&owner)
            .json(json!({ "external_id": "x".repeat(201) })),
        StatusCode::BAD_REQUEST,
        "external_id_too_long",
        "SELECT count(*) FROM contact",
    )
    .await;
}

#[tokio::test]
async fn an_account_name_longer_than_the_limit_is_refused_with_400_not_500() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;

    refused(
        &app,
        Req::post("/api/v1/accounts")
            .by(&owner)
            .json(json!({ "name": "a".repeat(201) })),
        StatusCode::BAD_REQUEST,
        "name_too_long",
        "SELECT count(*) FROM account",
    )
    .await;
}

#[tokio::test]
async fn an_inbox_name_longer_than_the_limit_is_refused_with_400_not_500() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;

    refused(
        &app,
        Req::post("/api/v1/inboxes").by(&owner).json(json!({
            "name": "a".repeat(101), "channel": "webchat",
            "webchat": { "allowed_origins": ["https://shop.example.com"] }
        })),
        StatusCode::BAD_REQUEST,
        "name_too_long",
        "SELECT count(*) FROM inbox",
    )
    .await;

    let inbox = app.webchat_inbox(&owner, "https://shop.example.com").await;
    refused(
        &app,
        Req::patch(format!("/api/v1/inboxes/{inbox}"))
            .by(&owner)
            .json(json!({ "name": "a".repeat(101) })),
        StatusCode::BAD_REQUEST,
        "name_too_long",
        "SELECT count(*) FROM inbox WHERE length(name) > 100",
    )
    .await;
}

#[tokio::test]
async fn a_second_contact_with_the_same_email_is_refused_with_409_not_500() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    contact(&app, &owner, json!({ "email": "ana@example.com" })).await;

    refused(
        &app,
        Req::post("/api/v1/contacts")
            .by(&owner)
            .json(json!({ "email": "ANA@example.com" })),
        StatusCode::CONFLICT,
        "email_taken",
        "SELECT count(*) FROM contact",
    )
    .await;
}

#[tokio::test]
async fn a_second_contact_with_the_same_whatsapp_id_is_refused_with_409_not_500() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    contact(&app, &owner, json!({ "whatsapp_id": "16505551234" })).await;

    refused(
        &app,
        Req::post("/api/v1/contacts")
            .by(&owner)
            .json(json!({ "whatsapp_id": "16505551234" })),
        StatusCode::CONFLICT,
        "whatsapp_id_taken",
        "SELECT count(*) FROM contact",
    )
    .await;
}

#[tokio::test]
async fn a_second_contact_with_the_same_external_id_is_refused_with_409_not_500() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    contact(&app, &owner, json!({ "external_id": "crm-42" })).await;

    refused(
        &app,
        Req::post("/api/v1/contacts")
            .by(&owner)
            .json(json!({ "external_id": "crm-42" })),
        StatusCode::CONFLICT,
        "external_id_taken",
        "SELECT count(*) FROM contact",
    )
    .await;
}

#[tokio::test]
async fn a_partner_organisation_name_longer_than_the_limit_is_refused_with_400_not_500() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;

    refused(
        &app,
        Req::post("/api/v1/partner-orgs")
            .by(&owner)
            .json(json!({ "name": "a".repeat(201) })),
        StatusCode::BAD_REQUEST,
        "invalid_name",
        "SELECT count(*) FROM partner_org",
    )
    .await;
    let resp = app
        .send(
            Req::post("/api/v1/partner-orgs")
                .by(&owner)
                .json(json!({ "name": "a".repeat(200) })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
}

#[tokio::test]
async fn an_api_token_name_longer_than_the_limit_is_refused_with_400_not_500() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;

    refused(
        &app,
        Req::post("/api/v1/tokens")
            .by(&owner)
            .json(json!({ "name": "a".repeat(101), "role": "agent" })),
        StatusCode::BAD_REQUEST,
        "invalid_name",
        "SELECT count(*) FROM api_token",
    )
    .await;
}
