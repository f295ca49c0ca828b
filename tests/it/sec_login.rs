//! Attacks on sign-in that the throttles (SEC-5) and the request's address must withstand:
//! locking a member out with others' wrong passwords, and choosing one's own address through
//! `X-Forwarded-For`.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use crate::common::{Req, TestApp};

fn login(ip: &str, email: &str, password: &str) -> Req {
    Req::post("/api/v1/auth/login")
        .client_ip(ip)
        .json(json!({ "tenant": "acme", "email": email, "password": password }))
}

// proves: SEC-5
#[tokio::test]
async fn a_client_cannot_escape_its_address_throttle_or_audit_ip_by_writing_x_forwarded_for() {
    let app = TestApp::spawn_with(|c| {
        c.limits.login_per_ip_burst = 3;
        // None of the spent budget comes back while the test runs, however slowly.
        c.limits.login_per_ip_period = Duration::from_secs(3600);
    })
    .await;
    let owner = app.signup("acme").await;
    // The trusted proxy appends the address it saw; everything left of it is the client's.
    let real = "203.0.113.5";
    let mut statuses = Vec::new();
    for i in 0..4 {
        let resp = app
            .send(login(
                &format!("6.6.6.{i}, {real}"),
                &owner.email,
                "not the password",
            ))
            .await;
        statuses.push(resp.status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
        ]
    );
    let failed = app.audit_events(owner.tenant_id, "auth.login.failed").await;
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|e| e["ip"] == real), "{failed:?}");
}
