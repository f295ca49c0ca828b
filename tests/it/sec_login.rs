//! Attacks on sign-in that the throttles (SEC-5) and the request's address must withstand:
//! locking a member out with others' wrong passwords, and choosing one's own address through
//! `X-Forwarded-For`.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;

use crate::common::{Req, TestApp, PASSWORD};

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

// proves: SEC-5
#[tokio::test]
async fn wrong_passwords_from_many_addresses_do_not_lock_the_member_out() {
    let app = TestApp::spawn_with(|c| {
        c.limits.login_per_account_period = Duration::from_secs(3600);
        // Short delays keep fifty guesses quick; the delay itself is tested below.
        c.limits.login_delay_base = Duration::from_millis(1);
        c.limits.login_delay_max = Duration::from_millis(5);
    })
    .await;
    let owner = app.signup("acme").await;
    let usual = "198.51.100.7";
    let signed_in = app.send(login(usual, &owner.email, PASSWORD)).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);

    // Fifty wrong passwords from ten addresses, then one more from each.
    let burst = app.state.config.limits.login_per_account_burst;
    let mut attacker = Vec::new();
    for a in 0..10 {
        let ip = format!("10.9.0.{a}");
        for _ in 0..burst {
            attacker.push(
                app.send(login(&ip, &owner.email, "a wrong guess"))
                    .await
                    .status,
            );
        }
        attacker.push(app.send(login(&ip, &owner.email, PASSWORD)).await.status);
    }

    let victim = app.send(login(usual, &owner.email, PASSWORD)).await;
    assert_eq!(victim.status, StatusCode::OK, "{}", victim.body);
    let elsewhere = app.send(login("192.0.2.77", &owner.email, PASSWORD)).await;
    assert_eq!(elsewhere.status, StatusCode::OK, "{}", elsewhere.body);

    // Each attacking address spent its own budget for the account, and was then refused,
    // right password or not, before it was looked at.
    for answers in attacker.chunks(burst as usize + 1) {
        assert!(answers[..burst as usize]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED));
        assert_eq!(answers[burst as usize], StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(
        app.audit_events(owner.tenant_id, "auth.login.failed")
            .await
            .len(),
        10 * burst as usize
    );
}

// proves: SEC-5
#[tokio::test]
async fn an_account_under_attack_slows_unfamiliar_addresses_down_but_not_its_members_own() {
    let delay = Duration::from_secs(2);
    let app = TestApp::spawn_with(|c| {
        c.limits.login_per_account_burst = 2;
        c.limits.login_delay_base = delay;
        c.limits.login_delay_max = delay;
    })
    .await;
    let owner = app.signup("acme").await;
    // Signed in before from an IPv6 address, whose device rotates the last 64 bits.
    let signed_in = app
        .send(login("2001:db8:7:7::10", &owner.email, PASSWORD))
        .await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);
    for ip in ["10.9.0.1", "10.9.0.2"] {
        let resp = app.send(login(ip, &owner.email, "a wrong guess")).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    }

    let started = Instant::now();
    let own = app
        .send(login("2001:db8:7:7::99", &owner.email, PASSWORD))
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    assert!(started.elapsed() < delay, "{:?}", started.elapsed());

    let started = Instant::now();
    let unfamiliar = app.send(login("192.0.2.77", &owner.email, PASSWORD)).await;
    assert_eq!(unfamiliar.status, StatusCode::OK, "{}", unfamiliar.body);
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
}
