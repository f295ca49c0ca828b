//! The account pages: the list with its search, and one account with its people and its
//! timeline, paged; only roles that read contacts see them.

use axum::http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::common::{Member, Req, TestApp};

async fn page(app: &TestApp, who: &Member, path: &str) -> (StatusCode, String) {
    let resp = app.send(Req::get(path).by(who)).await;
    let html = resp.body.as_str().unwrap_or_default().to_string();
    (resp.status, html)
}

async fn account(app: &TestApp, owner: &Member, name: &str) -> Uuid {
    app.send(
        Req::post("/api/v1/accounts")
            .by(owner)
            .json(json!({ "name": name, "domain": format!("{}.example", name.to_lowercase()) })),
    )
    .await
    .uuid("/id")
}

#[tokio::test]
async fn the_accounts_page_lists_and_searches_the_tenants_accounts() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    account(&app, &owner, "Initech").await;
    account(&app, &owner, "Globex").await;
    let (status, html) = page(&app, &owner, "/app/accounts").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Initech") && html.contains("Globex"),
        "{html}"
    );
    let (_, html) = page(&app, &owner, "/app/accounts?q=glob").await;
    assert!(
        html.contains("Globex") && !html.contains("Initech"),
        "{html}"
    );
    let (_, html) = page(&app, &owner, "/app/accounts?q=nothing-like-it").await;
    assert!(html.contains("No account matches"), "{html}");
}

// Part of CS-1 (an account's page: its people and its timeline); NPS/CSAT and product events are still to come.
#[tokio::test]
async fn an_account_page_shows_its_people_and_its_timeline_newest_first_and_pages_older_events() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let id = account(&app, &owner, "Initech").await;
    let contact = app
        .send(Req::post("/api/v1/contacts").by(&owner).json(
            json!({ "name": "Peter Gibbons", "email": "peter@initech.example", "account_id": id }),
        ))
        .await;
    assert_eq!(contact.status, StatusCode::CREATED, "{}", contact.body);
    for i in 0..55 {
        let resp = app
            .send(
                Req::post("/api/v1/tasks")
                    .by(&owner)
                    .json(json!({ "title": format!("Follow-up {i:02}"), "account_id": id })),
            )
            .await;
        assert_eq!(resp.status, StatusCode::CREATED);
    }
    let ticket = app
        .send(
            Req::post("/api/v1/tickets")
                .by(&owner)
                .json(json!({ "subject": "TPS report cover sheets", "account_id": id })),
        )
        .await
        .uuid("/id");
    let (status, html) = page(&app, &owner, &format!("/app/accounts/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Peter Gibbons") && html.contains("peter@initech.example"));
    // Newest first: the ticket, then the last task; the first tasks are on the older page.
    let ticket_at = html
        .find("Ticket opened: TPS report cover sheets")
        .expect("the ticket");
    let last_task_at = html.find("Task: Follow-up 54").expect("the last task");
    assert!(ticket_at < last_task_at);
    assert!(html.contains(&format!("/app/tickets/{ticket}")));
    assert!(!html.contains("Follow-up 00"));
    let older = html
        .split("href=\"")
        .find_map(|rest| {
            let url = &rest[..rest.find('"').unwrap()];
            url.contains("after=").then(|| url.replace("&amp;", "&"))
        })
        .expect("a link to older events");
    let (status, older_html) = page(&app, &owner, &older).await;
    assert_eq!(status, StatusCode::OK, "{older}");
    assert!(older_html.contains("Follow-up 00") && !older_html.contains("Follow-up 54"));
    // A cursor that is not one of ours is refused with the error page, not a 500.
    let (status, _) = page(&app, &owner, &format!("/app/accounts/{id}?after=nonsense")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

// proves: SEC-1
#[tokio::test]
async fn only_roles_that_read_contacts_see_the_account_pages() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let id = account(&app, &owner, "Initech").await;
    for role in ["admin", "agent", "reviewer", "auditor"] {
        let member = app.join(&owner, role).await;
        for path in ["/app/accounts".to_string(), format!("/app/accounts/{id}")] {
            assert_eq!(
                page(&app, &member, &path).await.0,
                StatusCode::OK,
                "{role} {path}"
            );
        }
    }
    let partner = app.join(&owner, "partner").await;
    for path in ["/app/accounts".to_string(), format!("/app/accounts/{id}")] {
        assert_eq!(
            page(&app, &partner, &path).await.0,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
}
