//! The canned replies page and the composer's canned replies, in-process: written through the
//! page with its CSRF token by those who curate the team's knowledge, offered to everyone who
//! replies with the contact's and the member's names filled in.

use axum::http::{header, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::common::{Member, Req, TestApp};
use crate::web::{form, html, page_token};

async fn post(
    app: &TestApp,
    member: &Member,
    path: &str,
    fields: &[(&str, &str)],
) -> crate::common::Resp {
    let token = page_token(app, member).await;
    let mut all = vec![("_csrf", token.as_str())];
    all.extend_from_slice(fields);
    app.send(
        Req::post(path)
            .by(member)
            .raw("application/x-www-form-urlencoded", form(&all)),
    )
    .await
}

async fn stored(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM canned_reply").await
}

#[tokio::test]
async fn an_admin_adds_changes_and_deletes_a_canned_reply_through_the_page() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let added = post(
        &app,
        &owner,
        "/app/canned-replies",
        &[
            ("shortcut", "thanks"),
            ("title", "Thanks for waiting"),
            (
                "body",
                "Thanks for waiting, {{contact.name}}!\r\n{{agent.name}}",
            ),
        ],
    )
    .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    assert_eq!(
        added.headers[header::LOCATION],
        "/app/canned-replies?done=saved"
    );
    let list = app
        .send(Req::get("/app/canned-replies?done=saved").by(&owner))
        .await;
    let page = html(&list);
    assert!(page.contains("data-canned=\"thanks\""), "{page}");
    assert!(page.contains("Thanks for waiting, {{contact.name}}!\n{{agent.name}}"));
    assert!(page.contains("data-notice=\"success\""));

    // A refusal shows the form again with what was typed and the reason; nothing is stored.
    let refused = post(
        &app,
        &owner,
        "/app/canned-replies",
        &[
            ("shortcut", "Thanks Again"),
            ("title", "Again"),
            ("body", "kept text"),
        ],
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let page = html(&refused);
    assert!(page.contains("data-notice=\"error\""));
    assert!(page.contains("Shortcut must be"), "{page}");
    assert!(page.contains(">kept text</textarea>"));
    let taken = post(
        &app,
        &owner,
        "/app/canned-replies",
        &[("shortcut", "thanks"), ("title", "Again"), ("body", "x")],
    )
    .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(stored(&app).await, 1);

    let id: Uuid = {
        let mut conn = app.superuser().await;
        sqlx::query_scalar("SELECT id FROM canned_reply")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    let edit = app
        .send(Req::get(format!("/app/canned-replies/{id}")).by(&owner))
        .await;
    assert_eq!(edit.status, StatusCode::OK);
    assert!(html(&edit).contains(&format!("action=\"/app/canned-replies/{id}\"")));
    let saved = post(
        &app,
        &owner,
        &format!("/app/canned-replies/{id}"),
        &[
            ("shortcut", "thx"),
            ("title", "Thanks"),
            ("body", "Thank you!"),
        ],
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let changed = app
        .audit_events(owner.tenant_id, "canned_reply.updated")
        .await;
    assert_eq!(changed[0]["before"]["shortcut"], "thanks");
    assert_eq!(changed[0]["after"]["shortcut"], "thx");

    let deleted = post(
        &app,
        &owner,
        &format!("/app/canned-replies/{id}/delete"),
        &[],
    )
    .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert_eq!(stored(&app).await, 0);
    assert_eq!(
        app.audit_events(owner.tenant_id, "canned_reply.deleted")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn the_composer_offers_canned_replies_filled_in_for_the_contact_and_the_member() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, conversation) = app.visitor_writes(inbox, "Where is my parcel?").await;
    let contact: Uuid = {
        let mut conn = app.superuser().await;
        sqlx::query_scalar("SELECT contact_id FROM conversation WHERE id = $1")
            .bind(conversation)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    let named = app
        .send(
            Req::patch(format!("/api/v1/contacts/{contact}"))
                .by(&owner)
                .json(json!({ "name": "Ana Lima" })),
        )
        .await;
    assert_eq!(named.status, StatusCode::OK, "{}", named.body);
    let id = app
        .send(Req::post("/api/v1/canned-replies").by(&owner).json(json!({
            "shortcut": "parcel",
            "title": "Parcel on its way",
            "body": "Hi {{contact.name}}, your parcel is on its way. {{agent.name}}"
        })))
        .await
        .uuid("/id");
    let agent_name: String = {
        let mut conn = app.superuser().await;
        sqlx::query_scalar("SELECT display_name FROM member WHERE id = $1")
            .bind(agent.member_id)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    let filled = format!("Hi Ana Lima, your parcel is on its way. {agent_name}");

    let page = app
        .send(Req::get(format!("/app/conversations/{conversation}")).by(&agent))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let page = html(&page);
    assert!(page.contains("data-shortcut=\"parcel\""), "{page}");
    assert!(page.contains(&format!("data-text=\"{filled}\"")), "{page}");

    // Without JavaScript, "Insert" reloads the page with the reply in the composer.
    let inserted = app
        .send(Req::get(format!("/app/conversations/{conversation}?canned={id}")).by(&agent))
        .await;
    assert_eq!(inserted.status, StatusCode::OK);
    assert!(html(&inserted).contains(&format!("\">{filled}</textarea>")));
    let bad = app
        .send(Req::get(format!("/app/conversations/{conversation}?canned=nope")).by(&agent))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // An agent uses them but does not write them: no form, and a post is refused.
    let list = app.send(Req::get("/app/canned-replies").by(&agent)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!html(&list).contains("data-canned-form"));
    let forbidden = post(
        &app,
        &agent,
        "/app/canned-replies",
        &[("shortcut", "mine"), ("title", "Mine"), ("body", "x")],
    )
    .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert_eq!(stored(&app).await, 1);

    // A reviewer cannot reply, so the composer and its canned replies are not there.
    let reviewer = app.join(&owner, "reviewer").await;
    let page = app
        .send(Req::get(format!("/app/conversations/{conversation}")).by(&reviewer))
        .await;
    assert!(!html(&page).contains("data-canned-list"));
}
