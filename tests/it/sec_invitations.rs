//! An invitation is worth no more than its inviter is now (security review, item 3): an admin
//! who invited `backdoor@…` as admin and was then disabled kept a way back in, since the
//! invitation still yielded an active admin.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::common::{Member, Req, TestApp, PASSWORD};

async fn invite(app: &TestApp, by: &Member, email: &str, role: &str) -> String {
    let invitation = app
        .send(
            Req::post("/api/v1/invitations")
                .by(by)
                .json(json!({ "email": email, "role": role })),
        )
        .await;
    assert_eq!(
        invitation.status,
        StatusCode::CREATED,
        "{}",
        invitation.body
    );
    invitation.body["token"].as_str().unwrap().to_string()
}

async fn accept(app: &TestApp, token: &str) -> crate::common::Resp {
    app.send(Req::post("/api/v1/invitations/accept").json(json!({
        "token": token, "display_name": "Backdoor", "password": PASSWORD,
    })))
    .await
}

async fn set_member(app: &TestApp, by: &Member, who: &Member, body: serde_json::Value) {
    let changed = app
        .send(
            Req::new(Method::PATCH, format!("/api/v1/members/{}", who.member_id))
                .by(by)
                .json(body),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
}

#[tokio::test]
async fn a_disabled_admins_invitation_no_longer_lets_anyone_in() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let rogue = app.join(&owner, "admin").await;
    let backdoor = invite(&app, &rogue, "backdoor@evil.example", "admin").await;

    set_member(&app, &owner, &rogue, json!({ "status": "disabled" })).await;
    let refused = accept(&app, &backdoor).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.error_code(), "invalid_invitation");
    assert!(refused.session_cookie().is_none());
    assert_eq!(
        app.count("SELECT count(*) FROM member WHERE email = 'backdoor@evil.example'")
            .await,
        0
    );
    // The withdrawal is on the record, with its reason.
    let withdrawn = app
        .audit_events(owner.tenant_id, "invitation.revoked")
        .await;
    assert_eq!(withdrawn.len(), 1, "{withdrawn:?}");
    assert_eq!(withdrawn[0]["before"]["email"], "backdoor@evil.example");
    let pending = app.send(Req::get("/api/v1/invitations").by(&owner)).await;
    assert_eq!(pending.body, json!([]));
}

#[tokio::test]
async fn a_demoted_admins_invitations_to_roles_they_can_no_longer_grant_are_withdrawn() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let admin = app.join(&owner, "admin").await;
    let as_admin = invite(&app, &admin, "second-admin@acme.example", "admin").await;
    let as_agent = invite(&app, &admin, "helper@acme.example", "agent").await;

    // An agent manages no members: none of their invitations stands any more.
    set_member(&app, &owner, &admin, json!({ "role": "agent" })).await;
    for token in [&as_admin, &as_agent] {
        let refused = accept(&app, token).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
        assert_eq!(refused.error_code(), "invalid_invitation");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM invitation WHERE revoked_at IS NOT NULL")
            .await,
        2
    );
}

#[tokio::test]
async fn an_invitation_is_checked_against_its_inviter_when_it_is_accepted() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let admin = app.join(&owner, "admin").await;
    let backdoor = invite(&app, &admin, "backdoor@evil.example", "admin").await;
    let helper = invite(&app, &admin, "helper@acme.example", "agent").await;

    // Changed behind the API's back, with the invitations left pending: acceptance still asks
    // whether the inviter may grant the role today.
    let mut db = app.superuser().await;
    sqlx::query("UPDATE member SET role = 'reviewer' WHERE id = $1")
        .bind(admin.member_id)
        .execute(&mut db)
        .await
        .unwrap();
    let refused = accept(&app, &backdoor).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.error_code(), "invalid_invitation");

    // Restored, the inviter backs their invitations again: the refusal claimed nothing.
    sqlx::query("UPDATE member SET role = 'admin' WHERE id = $1")
        .bind(admin.member_id)
        .execute(&mut db)
        .await
        .unwrap();
    let joined = accept(&app, &helper).await;
    assert_eq!(joined.status, StatusCode::CREATED, "{}", joined.body);
    assert_eq!(joined.body["member"]["role"], "agent");
}
