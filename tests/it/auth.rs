//! Passwords (SEC-4), throttles (SEC-5), sessions and tokens (SEC-6), and the security events
//! they leave in the audit log (AUD-2).

use axum::http::StatusCode;
use serde_json::json;

use crate::common::{Req, TestApp, PASSWORD};

async fn tenant_count(app: &TestApp) -> i64 {
    let mut conn = app.superuser().await;
    sqlx::query_scalar("SELECT count(*) FROM tenant")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

// proves: SEC-4
#[tokio::test]
async fn sign_up_refuses_short_and_common_passwords_and_creates_nothing() {
    let app = TestApp::spawn().await;
    for password in [
        "Short1!",
        "password1234",
        "qwertyuiop123",
        "owner@acme.example",
    ] {
        let resp = app
            .send(Req::post("/api/v1/auth/signup").json(json!({
                "tenant_name": "Acme", "tenant_slug": "acme", "email": "owner@acme.example",
                "display_name": "Owner", "password": password,
            })))
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{password} accepted: {}",
            resp.body
        );
        assert_eq!(resp.error_code(), "weak_password");
    }
    assert_eq!(tenant_count(&app).await, 0);
}

// proves: SEC-4
#[tokio::test]
async fn passwords_are_stored_as_argon2id_with_unique_salts() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    app.join(&owner, "agent").await; // same PASSWORD as the owner
    let mut conn = app.superuser().await;
    let hashes: Vec<String> = sqlx::query_scalar("SELECT password_hash FROM member")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(hashes.len(), 2);
    assert!(
        hashes.iter().all(|h| h.starts_with("$argon2id$")),
        "{hashes:?}"
    );
    assert_ne!(hashes[0], hashes[1]);
    assert!(hashes.iter().all(|h| !h.contains(PASSWORD)));
}

// proves: SEC-4, AUD-2
#[tokio::test]
async fn a_password_change_refuses_weak_passwords_and_ends_the_other_sessions() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let other = app
        .login("acme", &owner.email, PASSWORD)
        .await
        .session_cookie()
        .unwrap();

    let weak = app
        .send(Req::post("/api/v1/auth/password").by(&owner).json(json!({
            "current_password": PASSWORD, "new_password": "qwertyuiop123",
        })))
        .await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    assert_eq!(weak.error_code(), "weak_password");
    let wrong = app
        .send(Req::post("/api/v1/auth/password").by(&owner).json(json!({
            "current_password": "not my password at all", "new_password": "a brand new passphrase",
        })))
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);

    let ok = app
        .send(Req::post("/api/v1/auth/password").by(&owner).json(json!({
            "current_password": PASSWORD, "new_password": "a brand new passphrase",
        })))
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{}", ok.body);
    assert_eq!(
        app.send(Req::get("/api/v1/auth/me").cookie(&other))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.send(Req::get("/api/v1/auth/me").by(&owner))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.login("acme", &owner.email, PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("acme", &owner.email, "a brand new passphrase")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "auth.password_changed")
            .await
            .len(),
        1
    );
}

// proves: SEC-5
#[tokio::test]
async fn repeated_failed_logins_for_one_account_are_throttled() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let burst = app.state.config.limits.login_per_account_burst;
    let attempt = |ip: &str, password: &str| {
        Req::post("/api/v1/auth/login")
            .client_ip(ip)
            .json(json!({ "tenant": "acme", "email": owner.email, "password": password }))
    };
    for _ in 0..burst {
        let resp = app.send(attempt("10.0.0.1", "wrong password, again")).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
        assert_eq!(resp.error_code(), "invalid_credentials");
    }
    let throttled = app.send(attempt("10.0.0.1", PASSWORD)).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.error_code(), "rate_limited");
    let retry: u64 = throttled.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // The refusal is for the guessing address alone, so guesses cannot lock the member out:
    // elsewhere the account's failures only slow attempts down (tests/it/sec_login.rs).
    assert_eq!(
        app.send(attempt("10.0.1.1", PASSWORD)).await.status,
        StatusCode::OK
    );
    // Another account is not affected at all.
    let agent = app.join(&owner, "agent").await;
    assert_eq!(
        app.login("acme", &agent.email, PASSWORD).await.status,
        StatusCode::OK
    );
}

// proves: SEC-5
#[tokio::test]
async fn one_address_trying_many_accounts_is_throttled() {
    let app = TestApp::spawn().await;
    app.signup("acme").await;
    let burst = app.state.config.limits.login_per_ip_burst;
    let mut statuses = Vec::new();
    for i in 0..=burst {
        let resp = app
            .send(Req::post("/api/v1/auth/login").client_ip("203.0.113.7").json(json!({
                "tenant": "acme", "email": format!("user{i}@acme.example"), "password": "guess guess guess",
            })))
            .await;
        statuses.push(resp.status);
    }
    assert!(
        statuses[..burst as usize]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(statuses[burst as usize], StatusCode::TOO_MANY_REQUESTS);
    // Another address is not affected.
    let other = app
        .send(
            Req::post("/api/v1/auth/login")
                .client_ip("198.51.100.1")
                .json(json!({
                    "tenant": "acme", "email": "owner@acme.example", "password": PASSWORD,
                })),
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
}

// proves: SEC-5
#[tokio::test]
async fn api_requests_are_rate_limited_per_client() {
    let app = TestApp::spawn_with(|c| c.limits.api_per_client_per_sec = 2).await;
    let owner = app.signup("acme").await;
    let (_, token) = app.token(&owner, "admin").await;
    let mut limited = None;
    for i in 0..20 {
        let resp = app.send(Req::get("/api/v1/auth/me").by(&owner)).await;
        if resp.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(i);
            break;
        }
        assert_eq!(resp.status, StatusCode::OK);
    }
    let at = limited.expect("20 rapid requests were never limited");
    // A burst of twice the rate, less the one request that created the token.
    assert!((3..10).contains(&at), "limited after {at} requests");
    // Another client of the same tenant has its own allowance.
    assert_eq!(
        app.send(Req::get("/api/v1/auth/me").bearer(&token))
            .await
            .status,
        StatusCode::OK
    );
}

// proves: SEC-6
#[tokio::test]
async fn the_session_cookie_is_httponly_secure_samesite_and_expires_within_thirty_days() {
    let app = TestApp::spawn().await;
    app.signup("acme").await;
    let resp = app.login("acme", "owner@acme.example", PASSWORD).await;
    assert_eq!(resp.status, StatusCode::OK);
    let cookie = resp.set_cookie().unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie.split("; ").any(|a| a == attribute),
            "{attribute} missing from {cookie}"
        );
    }
    let max_age: u64 = cookie
        .split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age > 0 && max_age <= 30 * 24 * 3600);
    let mut conn = app.superuser().await;
    let longest: f64 = sqlx::query_scalar(
        "SELECT max(extract(epoch FROM expires_at - created_at))::float8 FROM session",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        longest <= 30.0 * 24.0 * 3600.0,
        "a session lives {longest} s"
    );
    // Only a hash of the token is stored.
    let token = resp.session_cookie().unwrap();
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM session WHERE encode(token_hash, 'escape') LIKE '%' || $1 || '%'",
    )
    .bind(token.split('.').next().unwrap())
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(stored, 0);
}

// proves: SEC-6, AUD-2
#[tokio::test]
async fn logout_ends_the_session_at_once() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    assert_eq!(
        app.send(Req::get("/api/v1/auth/me").by(&owner))
            .await
            .status,
        StatusCode::OK
    );
    let out = app.send(Req::post("/api/v1/auth/logout").by(&owner)).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(out.set_cookie().unwrap().contains("Max-Age=0"));
    let after = app.send(Req::get("/api/v1/auth/me").by(&owner)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.audit_events(owner.tenant_id, "auth.logout").await.len(),
        1
    );
}

// proves: SEC-6
#[tokio::test]
async fn expired_forged_and_disabled_members_sessions_are_refused() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let late = app.join(&owner, "reviewer").await;

    // Forged: a valid shape signed with another key.
    let forged = custodian::auth::token::Keys::random().new_session_token();
    assert_eq!(
        app.send(Req::get("/api/v1/auth/me").cookie(&forged))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // Expired.
    let mut conn = app.superuser().await;
    sqlx::query("UPDATE session SET expires_at = now() - interval '1 second', created_at = now() - interval '2 seconds' WHERE member_id = $1")
        .bind(late.member_id)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        app.send(Req::get("/api/v1/auth/me").by(&late)).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Disabled.
    let disable = app
        .send(
            Req::patch(format!("/api/v1/members/{}", agent.member_id))
                .by(&owner)
                .json(json!({ "status": "disabled" })),
        )
        .await;
    assert_eq!(disable.status, StatusCode::OK, "{}", disable.body);
    assert_eq!(
        app.send(Req::get("/api/v1/auth/me").by(&agent))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("acme", &agent.email, PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
}

// proves: SEC-6, AUD-2
#[tokio::test]
async fn api_tokens_are_stored_hashed_and_revocation_takes_effect_at_once() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (token_id, secret) = app.token(&owner, "auditor").await;
    assert!(secret.starts_with("cst_"));
    let me = app.send(Req::get("/api/v1/auth/me").bearer(&secret)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["role"], "auditor");
    assert_eq!(me.body["credential"], "api_token");

    let listed = app.send(Req::get("/api/v1/tokens").by(&owner)).await;
    assert!(
        !listed.body.to_string().contains(&secret),
        "a listing shows the secret"
    );
    let mut conn = app.superuser().await;
    let plain: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_token WHERE token_hash = convert_to($1, 'UTF8')",
    )
    .bind(&secret)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(plain, 0);

    let revoke = app
        .send(Req::delete(format!("/api/v1/tokens/{token_id}")).by(&owner))
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.send(Req::get("/api/v1/auth/me").bearer(&secret))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "token.created")
            .await
            .len(),
        1
    );
    let revoked = app.audit_events(owner.tenant_id, "token.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["entity_id"], token_id.to_string());
    // The token's secret appears in no audit row.
    let all: Vec<String> = sqlx::query_scalar("SELECT to_jsonb(e)::text FROM audit_event e")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(all.iter().all(|row| !row.contains(&secret)));
}

// proves: AUD-2
#[tokio::test]
async fn logins_that_succeed_and_fail_are_audit_events_with_address_and_agent() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let fail = app
        .send(
            Req::post("/api/v1/auth/login")
                .client_ip("192.0.2.10")
                .header("user-agent", "attacker/1.0")
                .json(json!({ "tenant": "acme", "email": owner.email, "password": "not the password" })),
        )
        .await;
    assert_eq!(fail.status, StatusCode::UNAUTHORIZED);
    let ok = app
        .send(
            Req::post("/api/v1/auth/login")
                .client_ip("192.0.2.11")
                .header("user-agent", "browser/2.0")
                .json(json!({ "tenant": "acme", "email": owner.email, "password": PASSWORD })),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);

    let failed = app.audit_events(owner.tenant_id, "auth.login.failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["ip"], "192.0.2.10");
    assert_eq!(failed[0]["user_agent"], "attacker/1.0");
    assert_eq!(failed[0]["entity_id"], owner.member_id.to_string());
    let succeeded = app
        .audit_events(owner.tenant_id, "auth.login.succeeded")
        .await;
    let last = succeeded.last().unwrap();
    assert_eq!(last["ip"], "192.0.2.11");
    assert_eq!(last["actor_id"], owner.member_id.to_string());
    // A failed login never stores the password that was tried.
    assert!(!failed[0].to_string().contains("not the password"));
}

// proves: AUD-2
#[tokio::test]
async fn a_role_change_is_an_audit_event_with_before_and_after() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let resp = app
        .send(
            Req::patch(format!("/api/v1/members/{}", agent.member_id))
                .by(&owner)
                .json(json!({ "role": "reviewer" })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    let events = app
        .audit_events(owner.tenant_id, "member.role_changed")
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["before"], json!({ "role": "agent" }));
    assert_eq!(events[0]["after"], json!({ "role": "reviewer" }));
    assert_eq!(events[0]["actor_id"], owner.member_id.to_string());
    assert_eq!(events[0]["entity_id"], agent.member_id.to_string());
}

// proves: SEC-4
#[tokio::test]
async fn a_login_to_an_unknown_account_fails_like_a_wrong_password() {
    let app = TestApp::spawn().await;
    app.signup("acme").await;
    let unknown = app.login("acme", "nobody@acme.example", PASSWORD).await;
    let wrong = app
        .login("acme", "owner@acme.example", "not the password")
        .await;
    let no_tenant = app.login("nope", "owner@acme.example", PASSWORD).await;
    for resp in [&unknown, &wrong, &no_tenant] {
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
        assert_eq!(resp.body, wrong.body);
    }
}

// proves: SEC-5
#[tokio::test]
async fn successful_logins_never_spend_the_failed_login_budgets() {
    let app = TestApp::spawn_with(|c| {
        c.limits.login_per_account_burst = 2;
        c.limits.login_per_ip_burst = 3;
    })
    .await;
    let owner = app.signup("acme").await;
    // Six in a row, from one address, well past both budgets.
    for i in 0..6 {
        let resp = app
            .send(
                Req::post("/api/v1/auth/login")
                    .client_ip("192.0.2.10")
                    .json(json!({ "tenant": "acme", "email": owner.email, "password": PASSWORD })),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "login {i}: {}", resp.body);
    }
    // Failures still count in full: the address's two for the account are spent, then it is
    // refused, even with the right password, before the password is looked at.
    for _ in 0..2 {
        let resp = app
            .send(Req::post("/api/v1/auth/login").client_ip("192.0.2.11").json(
                json!({ "tenant": "acme", "email": owner.email, "password": "not the password" }),
            ))
            .await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    }
    let refused = app
        .send(
            Req::post("/api/v1/auth/login")
                .client_ip("192.0.2.11")
                .json(json!({ "tenant": "acme", "email": owner.email, "password": PASSWORD })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.error_code(), "rate_limited");
}

// proves: SEC-5
#[tokio::test]
async fn a_throttled_login_answers_the_same_whether_the_password_is_right_or_wrong() {
    let app = TestApp::spawn_with(|c| c.limits.login_per_account_burst = 1).await;
    let owner = app.signup("acme").await;
    let attempt = |password: &str, ip: &str| {
        Req::post("/api/v1/auth/login")
            .client_ip(ip)
            .json(json!({ "tenant": "acme", "email": owner.email, "password": password }))
    };
    assert_eq!(
        app.send(attempt("a wrong password", "192.0.2.20"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let right = app.send(attempt(PASSWORD, "192.0.2.20")).await;
    let wrong = app.send(attempt("another wrong one", "192.0.2.20")).await;
    assert_eq!(
        (right.status, right.body.clone()),
        (wrong.status, wrong.body.clone())
    );
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(right.session_cookie().is_none());
    // Only the first failure was ever checked, and recorded.
    assert_eq!(
        app.audit_events(owner.tenant_id, "auth.login.failed")
            .await
            .len(),
        1
    );
}

// proves: SEC-5
#[tokio::test]
async fn failed_password_checks_when_changing_a_password_are_throttled_but_successes_are_not() {
    let app = TestApp::spawn_with(|c| c.limits.login_per_account_burst = 2).await;
    let owner = app.signup("acme").await;
    let change = |current: &str, new: &str| {
        Req::post("/api/v1/auth/password")
            .by(&owner)
            .json(json!({ "current_password": current, "new_password": new }))
    };
    // Three successful changes, more than the budget of two.
    let passwords = [
        PASSWORD,
        "first replacement passphrase",
        "second replacement passphrase",
        "third replacement passphrase",
    ];
    for pair in passwords.windows(2) {
        let resp = app.send(change(pair[0], pair[1])).await;
        assert_eq!(resp.status, StatusCode::NO_CONTENT, "{}", resp.body);
    }
    for _ in 0..2 {
        let resp = app
            .send(change("a wrong guess", "fourth replacement passphrase"))
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    }
    let resp = app
        .send(change(passwords[3], "fourth replacement passphrase"))
        .await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS);
}
