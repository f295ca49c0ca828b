//! No delete reaches data under a legal hold, and deleting a person's data is a data-subject
//! decision (security review, item 2): an agent could delete a held contact, with its
//! conversations and messages, through `DELETE /api/v1/contacts/{id}`; an inbox or an account
//! deletion never asked about holds either.

use axum::http::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::common::{Member, Req, TestApp};

/// A visitor's conversation in a new web-chat inbox: (inbox, conversation, contact).
async fn visitor_conversation(app: &TestApp, owner: &Member) -> (Uuid, Uuid, Uuid) {
    let inbox = app.webchat_inbox(owner, "https://shop.example").await;
    let (_, conversation) = app.visitor_writes(inbox, "Where is my order?").await;
    let contact = app
        .send(Req::get(format!("/api/v1/conversations/{conversation}")).by(owner))
        .await
        .uuid("/conversation/contact_id");
    (inbox, conversation, contact)
}

async fn hold(app: &TestApp, owner: &Member, entity_type: &str, id: Uuid) -> Uuid {
    let placed = app
        .send(Req::post("/api/v1/legal-holds").by(owner).json(
            json!({ "entity_type": entity_type, "entity_id": id, "reason": "pending lawsuit" }),
        ))
        .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
    placed.uuid("/id")
}

async fn stored(app: &TestApp, conversation: Uuid, contact: Uuid) -> (i64, i64, i64) {
    (
        app.count(&format!(
            "SELECT count(*) FROM contact WHERE id = '{contact}'"
        ))
        .await,
        app.count(&format!(
            "SELECT count(*) FROM conversation WHERE id = '{conversation}'"
        ))
        .await,
        app.count(&format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{conversation}'"
        ))
        .await,
    )
}

#[tokio::test]
async fn an_agent_cannot_delete_a_contact_and_nobody_deletes_a_held_one() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let (_, conversation, contact) = visitor_conversation(&app, &owner).await;
    hold(&app, &owner, "contact", contact).await;
    let before = stored(&app, conversation, contact).await;
    assert_eq!(before, (1, 1, 1));

    // The attack: an agent deletes the held contact (and, by cascade, their conversations).
    let by_agent = app
        .send(Req::delete(format!("/api/v1/contacts/{contact}")).by(&agent))
        .await;
    assert_eq!(by_agent.status, StatusCode::FORBIDDEN, "{}", by_agent.body);
    // The owner holds the data-subject-rights permission, and the hold still wins.
    let by_owner = app
        .send(Req::delete(format!("/api/v1/contacts/{contact}")).by(&owner))
        .await;
    assert_eq!(by_owner.status, StatusCode::CONFLICT, "{}", by_owner.body);
    assert_eq!(by_owner.error_code(), "legal_hold");
    assert_eq!(stored(&app, conversation, contact).await, before);
    assert_eq!(
        app.count("SELECT count(*) FROM audit_event WHERE action = 'contact.deleted'")
            .await,
        0
    );
}

#[tokio::test]
async fn deleting_an_inbox_or_an_account_never_takes_held_data_with_it() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (inbox, conversation, contact) = visitor_conversation(&app, &owner).await;
    let hold_id = hold(&app, &owner, "conversation", conversation).await;

    let inbox_gone = app
        .send(Req::delete(format!("/api/v1/inboxes/{inbox}")).by(&owner))
        .await;
    assert_eq!(
        inbox_gone.status,
        StatusCode::CONFLICT,
        "{}",
        inbox_gone.body
    );
    assert_eq!(inbox_gone.error_code(), "legal_hold");
    // A held conversation keeps its contact too: deleting the contact would cascade to it.
    let contact_gone = app
        .send(Req::delete(format!("/api/v1/contacts/{contact}")).by(&owner))
        .await;
    assert_eq!(
        contact_gone.status,
        StatusCode::CONFLICT,
        "{}",
        contact_gone.body
    );
    assert_eq!(stored(&app, conversation, contact).await, (1, 1, 1));

    // An account whose contact is held keeps that contact attached.
    let account = app
        .send(
            Req::post("/api/v1/accounts")
                .by(&owner)
                .json(json!({ "name": "Shop Ltd" })),
        )
        .await;
    assert_eq!(account.status, StatusCode::CREATED, "{}", account.body);
    let account = account.uuid("/id");
    let linked = app
        .send(
            Req::new(Method::PATCH, format!("/api/v1/contacts/{contact}"))
                .by(&owner)
                .json(json!({ "account_id": account })),
        )
        .await;
    assert_eq!(linked.status, StatusCode::OK, "{}", linked.body);
    let held_contact = hold(&app, &owner, "contact", contact).await;
    let account_gone = app
        .send(Req::delete(format!("/api/v1/accounts/{account}")).by(&owner))
        .await;
    assert_eq!(
        account_gone.status,
        StatusCode::CONFLICT,
        "{}",
        account_gone.body
    );
    assert_eq!(account_gone.error_code(), "legal_hold");

    // Released, the data may go as before.
    for id in [hold_id, held_contact] {
        let released = app
            .send(Req::delete(format!("/api/v1/legal-holds/{id}")).by(&owner))
            .await;
        assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    }
    let account_gone = app
        .send(Req::delete(format!("/api/v1/accounts/{account}")).by(&owner))
        .await;
    assert_eq!(
        account_gone.status,
        StatusCode::NO_CONTENT,
        "{}",
        account_gone.body
    );
    let inbox_gone = app
        .send(Req::delete(format!("/api/v1/inboxes/{inbox}")).by(&owner))
        .await;
    assert_eq!(
        inbox_gone.status,
        StatusCode::NO_CONTENT,
        "{}",
        inbox_gone.body
    );
    assert_eq!(stored(&app, conversation, contact).await, (1, 0, 0));
}

#[tokio::test]
async fn the_database_refuses_to_delete_held_messages_whoever_asks() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (_, conversation, contact) = visitor_conversation(&app, &owner).await;
    hold(&app, &owner, "contact", contact).await;
    // Even the schema's owner, past every route and row-level policy, meets the hold.
    let mut db = app.superuser().await;
    for sql in [
        format!("DELETE FROM message WHERE conversation_id = '{conversation}'"),
        format!("DELETE FROM conversation WHERE id = '{conversation}'"),
        format!("DELETE FROM contact WHERE id = '{contact}'"),
    ] {
        let refused = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut db)
            .await
            .expect_err(&sql);
        let constraint = refused
            .as_database_error()
            .and_then(|e| e.constraint().map(str::to_string));
        assert_eq!(
            constraint.as_deref(),
            Some("legal_hold_blocks_delete"),
            "{sql}: {refused}"
        );
    }
    assert_eq!(stored(&app, conversation, contact).await, (1, 1, 1));
}
