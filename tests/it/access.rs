//! Deny by default (SEC-1) and the roles (SEC-2), walked over every route the router serves.

use std::collections::HashMap;

use axum::http::StatusCode;
use custodian::http::Access;
use custodian::rbac::Role;

use crate::common::{concrete, Req, TestApp};

/// The routes that answer without credentials. Adding one is a deliberate act: it has to be
/// added here too, where a reviewer sees it.
const PUBLIC_ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/api/openapi.json"),
    // The API's reference for people, rendered from the document.
    ("GET", "/api/docs"),
    ("GET", "/api/docs.css"),
    ("POST", "/api/v1/auth/signup"),
    ("POST", "/api/v1/auth/login"),
    // The second step of a login: authenticated by the challenge the password step gave.
    ("POST", "/api/v1/auth/login/mfa"),
    ("POST", "/api/v1/invitations/accept"),
    // WhatsApp: authenticated by the verify token and X-Hub-Signature-256 (SEC-9).
    ("GET", "/webhooks/whatsapp/{inbox_id}"),
    ("POST", "/webhooks/whatsapp/{inbox_id}"),
    // Web chat: visitors, authenticated by their own session token and the inbox's origins.
    ("GET", "/widget.js"),
    ("OPTIONS", "/api/v1/webchat/{inbox_id}/sessions"),
    ("POST", "/api/v1/webchat/{inbox_id}/sessions"),
    ("OPTIONS", "/api/v1/webchat/{inbox_id}/messages"),
    ("GET", "/api/v1/webchat/{inbox_id}/messages"),
    ("POST", "/api/v1/webchat/{inbox_id}/messages"),
    ("GET", "/api/v1/webchat/{inbox_id}/events"),
    ("GET", "/demo/chat/{inbox_id}"),
];

// proves: SEC-1
#[tokio::test]
async fn every_route_without_credentials_is_refused_unless_it_is_declared_public() {
    let app = TestApp::spawn().await;
    let routes = app.state.routes().to_vec();
    assert!(
        routes.len() >= 20,
        "the registry lists only {} routes",
        routes.len()
    );
    for spec in &routes {
        let key = (spec.method.as_str(), spec.path);
        if spec.access == Access::Public {
            assert!(
                PUBLIC_ROUTES.contains(&key),
                "{key:?} is public but not on the reviewed list"
            );
            continue;
        }
        for credential in [None, Some("custodian_session=forged.value"), Some("")] {
            let mut req =
                Req::new(spec.method.clone(), concrete(spec.path)).json(serde_json::json!({}));
            if let Some(cookie) = credential {
                req = req.header("cookie", cookie);
            }
            let resp = app.send(req).await;
            assert_eq!(
                resp.status,
                StatusCode::UNAUTHORIZED,
                "{key:?} with {credential:?}"
            );
            assert_eq!(resp.error_code(), "unauthorized");
        }
        let resp = app
            .send(Req::new(spec.method.clone(), concrete(spec.path)).bearer("cst_not-a-real-token"))
            .await;
        assert_eq!(
            resp.status,
            StatusCode::UNAUTHORIZED,
            "{key:?} with a bad bearer token"
        );
    }
    for (method, path) in PUBLIC_ROUTES {
        assert!(
            routes
                .iter()
                .any(|r| r.method.as_str() == *method && r.path == *path),
            "{method} {path} is listed as public but not served"
        );
    }
}

// proves: SEC-1, SEC-2
#[tokio::test]
async fn every_role_is_refused_every_route_whose_permission_it_lacks() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let mut members = HashMap::new();
    for role in ["admin", "agent", "reviewer", "auditor", "partner"] {
        members.insert(role, app.join(&owner, role).await);
    }
    members.insert("owner", owner);

    for spec in app.state.routes().to_vec() {
        let Access::Requires(permission) = spec.access else {
            continue;
        };
        for role in Role::ALL {
            if role.can(permission) {
                continue;
            }
            let member = &members[role.as_str()];
            let resp = app
                .send(
                    Req::new(spec.method.clone(), concrete(spec.path))
                        .by(member)
                        .json(serde_json::json!({})),
                )
                .await;
            assert_eq!(
                resp.status,
                StatusCode::FORBIDDEN,
                "{:?} reached {} {} without {}",
                role,
                spec.method,
                spec.path,
                permission.as_str()
            );
            assert_eq!(resp.error_code(), "forbidden");
        }
    }
}

// proves: SEC-2
#[tokio::test]
async fn the_auditor_reads_the_audit_log_but_changes_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let auditor = app.join(&owner, "auditor").await;
    let resp = app
        .send(Req::get("/api/v1/audit/events").by(&auditor))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert!(!resp.body["events"].as_array().unwrap().is_empty());
    for req in [
        Req::patch("/api/v1/tenant").json(serde_json::json!({ "name": "x" })),
        Req::post("/api/v1/tokens").json(serde_json::json!({ "name": "x", "role": "auditor" })),
        Req::post("/api/v1/invitations")
            .json(serde_json::json!({ "email": "a@b.example", "role": "auditor" })),
    ] {
        assert_eq!(
            app.send(req.by(&auditor)).await.status,
            StatusCode::FORBIDDEN
        );
    }
}

// proves: SEC-2
#[tokio::test]
async fn an_admin_cannot_grant_ownership_nor_demote_an_owner() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let admin = app.join(&owner, "admin").await;
    let agent = app.join(&owner, "agent").await;

    let promote = app
        .send(
            Req::patch(format!("/api/v1/members/{}", agent.member_id))
                .by(&admin)
                .json(serde_json::json!({ "role": "owner" })),
        )
        .await;
    assert_eq!(promote.status, StatusCode::FORBIDDEN);
    let demote = app
        .send(
            Req::patch(format!("/api/v1/members/{}", owner.member_id))
                .by(&admin)
                .json(serde_json::json!({ "role": "agent" })),
        )
        .await;
    assert_eq!(demote.status, StatusCode::FORBIDDEN);
    let invite_owner = app
        .send(
            Req::post("/api/v1/invitations")
                .by(&admin)
                .json(serde_json::json!({ "email": "boss@acme.example", "role": "owner" })),
        )
        .await;
    assert_eq!(invite_owner.status, StatusCode::FORBIDDEN);
}

// proves: SEC-2
#[tokio::test]
async fn the_last_owner_cannot_step_down() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let resp = app
        .send(
            Req::patch(format!("/api/v1/members/{}", owner.member_id))
                .by(&owner)
                .json(serde_json::json!({ "role": "admin" })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CONFLICT);
    assert_eq!(resp.error_code(), "last_owner");
}

// proves: SEC-2
#[tokio::test]
async fn a_partner_must_belong_to_a_partner_organisation() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let resp = app
        .send(
            Req::post("/api/v1/invitations")
                .by(&owner)
                .json(serde_json::json!({ "email": "p@partner.example", "role": "partner" })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.body);
    assert_eq!(resp.error_code(), "partner_org_required");
    let partner = app.join(&owner, "partner").await;
    let me = app.send(Req::get("/api/v1/auth/me").by(&partner)).await;
    assert_eq!(
        me.body["permissions"],
        serde_json::json!([
            "tenant.read",
            "partner.shared.read",
            "tickets.read",
            "tasks.read",
            "deals.read"
        ])
    );
    assert!(me.body["member"]["partner_org_id"].is_string());
}

// proves: SEC-1
#[tokio::test]
async fn a_token_cannot_outrank_its_creator_even_after_a_demotion() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let admin = app.join(&owner, "admin").await;
    let (_, secret) = app.token(&admin, "admin").await;
    assert_eq!(
        app.send(Req::get("/api/v1/members").bearer(&secret))
            .await
            .status,
        StatusCode::OK
    );

    let demoted = app
        .send(
            Req::patch(format!("/api/v1/members/{}", admin.member_id))
                .by(&owner)
                .json(serde_json::json!({ "role": "agent" })),
        )
        .await;
    assert_eq!(demoted.status, StatusCode::OK, "{}", demoted.body);
    assert_eq!(
        app.send(Req::get("/api/v1/members").bearer(&secret))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}
