//! Two-factor sign-in (SEC-7): enrolment with TOTP (RFC 6238) and recovery codes, the sign-in's
//! second step, replay, throttling (SEC-5), the tenant's mandatory policy enforced by the guard,
//! an administrator's reset, the recent check API tokens need, and the audit trail (AUD-2).
//! Codes are made here with the real algorithm from the secret the enrolment showed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{Member, Req, Resp, TestApp, PASSWORD};

/// The code an authenticator app shows `steps` steps from now, from the enrolment's secret.
pub(crate) fn code(secret: &str, steps: i64) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret).expect("a base32 secret");
    let totp = totp_rs::Builder::new()
        .with_secret(secret)
        .build()
        .expect("a valid TOTP");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    totp.generate((now + 30 * steps) as u64).to_string()
}

/// Enrols the member's authenticator (confirming with the current step's code); returns the
/// secret and the recovery codes.
pub(crate) async fn enrol(app: &TestApp, member: &Member) -> (String, Vec<String>) {
    let started = app
        .send(Req::post("/api/v1/auth/mfa/enrolment").by(member))
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
    let secret = started.body["secret"].as_str().unwrap().to_string();
    let confirmed = app
        .send(
            Req::post("/api/v1/auth/mfa/enrolment/confirm")
                .by(member)
                .json(json!({ "code": code(&secret, 0) })),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    let codes = confirmed.body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (secret, codes)
}

/// The password step; returns the challenge of a member with two-factor sign-in.
async fn password_step(app: &TestApp, member: &Member) -> String {
    let resp = app.login(&member.slug, &member.email, PASSWORD).await;
    assert_eq!(resp.status, StatusCode::ACCEPTED, "{}", resp.body);
    assert!(resp.session_cookie().is_none(), "a session before the code");
    resp.body["challenge"].as_str().unwrap().to_string()
}

async fn second_step(app: &TestApp, challenge: &str, code: &str) -> Resp {
    app.send(
        Req::post("/api/v1/auth/login/mfa").json(json!({ "challenge": challenge, "code": code })),
    )
    .await
}

/// Lets the member's authenticator codes be used again (as if a minute had passed), for tests
/// that sign in more often than the three steps the window holds.
async fn forget_used_steps(app: &TestApp, member: &Member) {
    let mut db = app.superuser().await;
    sqlx::query("UPDATE member_mfa SET last_step = NULL WHERE member_id = $1")
        .bind(member.member_id)
        .execute(&mut db)
        .await
        .unwrap();
}

// proves: SEC-7
// proves: AUD-2
#[tokio::test]
async fn a_member_enrols_in_totp_and_then_signs_in_with_a_code() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;

    let started = app
        .send(Req::post("/api/v1/auth/mfa/enrolment").by(&owner))
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
    let secret = started.body["secret"].as_str().unwrap().to_string();
    let uri = started.body["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(uri.contains("issuer=Custodian"), "{uri}");
    assert!(started.body["qr_svg"].as_str().unwrap().starts_with("<svg"));
    // Sealed at rest (SEC-10): neither the secret nor its bytes are in the row.
    let raw = totp_rs::Secret::try_from_base32(&secret).unwrap();
    let mut db = app.superuser().await;
    let sealed: Vec<u8> =
        sqlx::query_scalar("SELECT sealed_secret FROM member_mfa WHERE member_id = $1")
            .bind(owner.member_id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(!sealed.windows(8).any(|w| raw.as_bytes().starts_with(w)));
    assert!(!sealed.windows(8).any(|w| secret.as_bytes().starts_with(w)));

    // Not in use before it is confirmed: the password alone still signs in.
    let before = app.login("acme", &owner.email, PASSWORD).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);

    let wrong = app
        .send(
            Req::post("/api/v1/auth/mfa/enrolment/confirm")
                .by(&owner)
                .json(json!({ "code": code(&secret, 5) })),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong.error_code(), "invalid_code");
    let confirmed = app
        .send(
            Req::post("/api/v1/auth/mfa/enrolment/confirm")
                .by(&owner)
                .json(json!({ "code": code(&secret, 0) })),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    let recovery = confirmed.body["recovery_codes"].as_array().unwrap();
    assert_eq!(recovery.len(), 10);
    // Stored hashed: no code is in the table.
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT code_hash FROM mfa_recovery_code WHERE member_id = $1")
            .bind(owner.member_id)
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(stored.len(), 10);
    for code in recovery {
        let code = code.as_str().unwrap().replace('-', "");
        assert!(!stored
            .iter()
            .any(|h| h.windows(4).any(|w| code.as_bytes().starts_with(w))));
    }

    let status = app.send(Req::get("/api/v1/auth/mfa").by(&owner)).await;
    assert_eq!(status.body["enabled"], true);
    assert_eq!(status.body["recovery_codes_left"], 10);

    // The password now opens only the second step.
    let challenge = password_step(&app, &owner).await;
    let refused = second_step(&app, &challenge, &code(&secret, 5)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.error_code(), "invalid_code");
    assert!(refused.session_cookie().is_none());
    // The next step's code (the current one was spent confirming), within the ±1 window.
    let signed_in = second_step(&app, &challenge, &code(&secret, 1)).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);
    assert_eq!(signed_in.body["member"]["id"], owner.member_id.to_string());
    let session = signed_in.session_cookie().expect("a session cookie");
    let me = app.send(Req::get("/api/v1/auth/me").cookie(&session)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    // The challenge was used up.
    let again = second_step(&app, &challenge, &code(&secret, 1)).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert_eq!(again.error_code(), "challenge_expired");

    for action in [
        "auth.mfa.enrolment_started",
        "auth.mfa.enabled",
        "auth.login.code_owed",
    ] {
        assert_eq!(
            app.audit_events(owner.tenant_id, action).await.len(),
            1,
            "{action}"
        );
    }
    let failed = app.audit_events(owner.tenant_id, "auth.mfa.failed").await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    let logins = app
        .audit_events(owner.tenant_id, "auth.login.succeeded")
        .await;
    assert_eq!(logins.last().unwrap()["after"]["second_factor"], "totp");
}

// proves: SEC-7
#[tokio::test]
async fn a_code_is_accepted_once_and_refused_when_replayed() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (secret, _) = enrol(&app, &owner).await;

    let first = password_step(&app, &owner).await;
    let used = code(&secret, 1);
    let signed_in = second_step(&app, &first, &used).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);

    // The same code, seen on the wire, in another sign-in: refused.
    let second = password_step(&app, &owner).await;
    let replayed = second_step(&app, &second, &used).await;
    assert_eq!(replayed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(replayed.error_code(), "invalid_code");
    // So is the code of an earlier step, still inside the window.
    let earlier = second_step(&app, &second, &code(&secret, 0)).await;
    assert_eq!(earlier.status, StatusCode::UNAUTHORIZED);
    // And one two steps away, outside it.
    let far = second_step(&app, &second, &code(&secret, 3)).await;
    assert_eq!(far.status, StatusCode::UNAUTHORIZED);
}

// proves: SEC-7
// proves: AUD-2
#[tokio::test]
async fn each_recovery_code_signs_in_once() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (_, recovery) = enrol(&app, &owner).await;

    let challenge = password_step(&app, &owner).await;
    // Typed loosely: upper case, spaces for dashes.
    let typed = recovery[3].to_uppercase().replace('-', " ");
    let signed_in = second_step(&app, &challenge, &typed).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.body);

    let challenge = password_step(&app, &owner).await;
    let again = second_step(&app, &challenge, &recovery[3]).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert_eq!(again.error_code(), "invalid_code");
    let other = second_step(&app, &challenge, &recovery[4]).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);

    let used = app
        .audit_events(owner.tenant_id, "auth.mfa.recovery_code_used")
        .await;
    assert_eq!(used.len(), 2);
    assert_eq!(used[1]["after"]["recovery_codes_left"], 8);
    let status = app
        .send(Req::get("/api/v1/auth/mfa").cookie(&other.session_cookie().unwrap()))
        .await;
    assert_eq!(status.body["recovery_codes_left"], 8);
}

async fn set_policy(app: &TestApp, by: &Member, required: &str) {
    let resp = app
        .send(
            Req::new(Method::PUT, "/api/v1/auth/mfa/policy")
                .by(by)
                .json(json!({ "required": required })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(resp.body["required"], required);
}

// proves: SEC-7
#[tokio::test]
async fn an_admin_of_a_tenant_with_mandatory_mfa_can_reach_nothing_before_enrolling() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let admin = app.join(&owner, "admin").await;
    let agent = app.join(&owner, "agent").await;
    // The machine path: a token the admin made before the policy keeps working.
    let (_, token) = app.token(&admin, "admin").await;
    enrol(&app, &owner).await;
    set_policy(&app, &owner, "admins").await;

    // A fresh sign-in, as the admin would after the policy: a session, but a restricted one.
    let login = app.login("acme", &admin.email, PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let session = login.session_cookie().unwrap();
    for (method, path, body) in [
        (Method::GET, "/api/v1/auth/me", None),
        (Method::GET, "/api/v1/members", None),
        (Method::GET, "/api/v1/contacts", None),
        (Method::GET, "/api/v1/conversations", None),
        (Method::GET, "/api/v1/audit/events", None),
        (Method::GET, "/api/v1/auth/mfa/policy", None),
        (
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "sneaky", "role": "admin" })),
        ),
        (
            Method::PUT,
            "/api/v1/auth/mfa/policy",
            Some(json!({ "required": "none" })),
        ),
        (
            Method::POST,
            "/api/v1/auth/password",
            Some(
                json!({ "current_password": PASSWORD, "new_password": "another long passphrase" }),
            ),
        ),
    ] {
        let mut req = Req::new(method.clone(), path).cookie(&session);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = app.send(req).await;
        assert_eq!(
            resp.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            resp.body
        );
        assert_eq!(
            resp.error_code(),
            "mfa_enrolment_required",
            "{method} {path}"
        );
    }
    // The web app sends the browser to enrolment from every page.
    for path in ["/app", "/app/password"] {
        let page = app.send(Req::get(path).cookie(&session)).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(page.headers[header::LOCATION], "/app/mfa", "{path}");
    }
    let page = app.send(Req::get("/app/mfa").cookie(&session)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.as_str().unwrap().contains("data-mfa-required"));
    let status = app
        .send(Req::get("/api/v1/auth/mfa").cookie(&session))
        .await;
    assert_eq!(status.body["required"], true);
    assert_eq!(status.body["enabled"], false);
    // Nothing changed meanwhile.
    assert_eq!(
        app.count("SELECT count(*) FROM api_token WHERE name = 'sneaky'")
            .await,
        0
    );

    // Others are unaffected: an agent (not required), the token.
    let members = app.send(Req::get("/api/v1/members").by(&agent)).await;
    assert_eq!(members.status, StatusCode::OK);
    let by_token = app.send(Req::get("/api/v1/members").bearer(&token)).await;
    assert_eq!(by_token.status, StatusCode::OK);

    // Enrolling, in the same session, lifts the restriction.
    let restricted = Member {
        cookie: session.clone(),
        ..admin.clone()
    };
    enrol(&app, &restricted).await;
    let members = app.send(Req::get("/api/v1/members").cookie(&session)).await;
    assert_eq!(members.status, StatusCode::OK, "{}", members.body);

    // "everyone" reaches the agent too; disabling is refused while required.
    set_policy(&app, &owner, "everyone").await;
    let members = app.send(Req::get("/api/v1/members").by(&agent)).await;
    assert_eq!(members.error_code(), "mfa_enrolment_required");
    let disable = app
        .send(
            Req::post("/api/v1/auth/mfa/disable")
                .cookie(&session)
                .json(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(disable.status, StatusCode::CONFLICT);
    assert_eq!(disable.error_code(), "mfa_mandatory");
    let changed = app
        .audit_events(owner.tenant_id, "auth.mfa.policy_changed")
        .await;
    assert_eq!(changed.len(), 2);
    assert_eq!(changed[1]["after"]["required"], "everyone");
}

// proves: SEC-7
// proves: AUD-2
#[tokio::test]
async fn an_admin_resets_a_members_mfa_which_ends_their_sessions_and_is_audited() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let other_agent = app.join(&owner, "agent").await;
    enrol(&app, &agent).await;

    // Not an agent's to do, nor anyone's for a member without it.
    let refused = app
        .send(
            Req::post(format!(
                "/api/v1/auth/mfa/members/{}/reset",
                agent.member_id
            ))
            .by(&other_agent),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let nothing = app
        .send(
            Req::post(format!(
                "/api/v1/auth/mfa/members/{}/reset",
                other_agent.member_id
            ))
            .by(&owner),
        )
        .await;
    assert_eq!(nothing.error_code(), "mfa_not_enabled");

    let reset = app
        .send(
            Req::post(format!(
                "/api/v1/auth/mfa/members/{}/reset",
                agent.member_id
            ))
            .by(&owner),
        )
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{}", reset.body);
    let gone = app.send(Req::get("/api/v1/auth/me").by(&agent)).await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED);

    // The password alone signs in again, and the member is told.
    let login = app.login("acme", &agent.email, PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let status = app
        .send(Req::get("/api/v1/auth/mfa").cookie(&login.session_cookie().unwrap()))
        .await;
    assert_eq!(status.body["enabled"], false);
    assert!(status.body["reset_at"].is_string(), "{}", status.body);
    assert_eq!(app.count("SELECT count(*) FROM mfa_recovery_code").await, 0);

    let events = app.audit_events(owner.tenant_id, "auth.mfa.reset").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["entity_id"], agent.member_id.to_string());
    assert_eq!(events[0]["actor_id"], owner.member_id.to_string());
}

// proves: SEC-5
// proves: SEC-7
// proves: AUD-2
#[tokio::test]
async fn wrong_second_steps_are_throttled_like_passwords() {
    let app = TestApp::spawn_with(|c| {
        c.limits.login_per_account_burst = 3;
        c.limits.login_per_account_period = Duration::from_secs(3600);
    })
    .await;
    let owner = app.signup("acme").await;
    let (secret, _) = enrol(&app, &owner).await;

    let challenge = password_step(&app, &owner).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(second_step(&app, &challenge, "000000").await.status);
    }
    // Spent: even the right code is refused unseen, and a new challenge does not help.
    let right = second_step(&app, &challenge, &code(&secret, 1)).await;
    statuses.push(right.status);
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
        ]
    );
    assert!(right.headers.contains_key(header::RETRY_AFTER));
    let fresh = password_step(&app, &owner).await;
    let again = second_step(&app, &fresh, &code(&secret, 1)).await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        app.audit_events(owner.tenant_id, "auth.mfa.failed")
            .await
            .len(),
        3
    );
}

// proves: SEC-7
#[tokio::test]
async fn a_challenge_dies_after_five_wrong_codes() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (secret, _) = enrol(&app, &owner).await;
    let challenge = password_step(&app, &owner).await;
    for _ in 0..5 {
        let resp = second_step(&app, &challenge, "999999").await;
        assert_eq!(resp.error_code(), "invalid_code");
    }
    let dead = second_step(&app, &challenge, &code(&secret, 1)).await;
    assert_eq!(dead.error_code(), "challenge_expired");
}

// proves: SEC-7
#[tokio::test]
async fn creating_an_api_token_needs_a_recent_mfa_check_when_the_member_has_mfa() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (secret, _) = enrol(&app, &owner).await;
    let create = |member: &Member| {
        Req::post("/api/v1/tokens")
            .by(member)
            .json(json!({ "name": format!("t {}", uuid::Uuid::new_v4()), "role": "admin" }))
    };
    // Confirming the enrolment was a check.
    let fresh = app.send(create(&owner)).await;
    assert_eq!(fresh.status, StatusCode::CREATED, "{}", fresh.body);

    let mut db = app.superuser().await;
    sqlx::query("UPDATE session SET mfa_verified_at = now() - interval '11 minutes'")
        .execute(&mut db)
        .await
        .unwrap();
    let stale = app.send(create(&owner)).await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN);
    assert_eq!(stale.error_code(), "mfa_check_required");

    let wrong = app
        .send(
            Req::post("/api/v1/auth/mfa/verify")
                .by(&owner)
                .json(json!({ "code": "123456" })),
        )
        .await;
    assert_eq!(wrong.error_code(), "invalid_code");
    let checked = app
        .send(
            Req::post("/api/v1/auth/mfa/verify")
                .by(&owner)
                .json(json!({ "code": code(&secret, 1) })),
        )
        .await;
    assert_eq!(checked.status, StatusCode::NO_CONTENT, "{}", checked.body);
    let again = app.send(create(&owner)).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);

    // A token cannot stand in for the check.
    let token = again.body["token"].as_str().unwrap();
    let by_token = app
        .send(
            Req::post("/api/v1/tokens")
                .bearer(token)
                .json(json!({ "name": "from a token", "role": "agent" })),
        )
        .await;
    assert_eq!(by_token.status, StatusCode::FORBIDDEN);
    assert_eq!(by_token.error_code(), "mfa_check_required");
}

// proves: SEC-7
// proves: AUD-2
#[tokio::test]
async fn disabling_needs_a_current_code_or_the_password() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (secret, _) = enrol(&app, &owner).await;
    let disable = |body: Value| Req::post("/api/v1/auth/mfa/disable").by(&owner).json(body);

    let neither = app.send(disable(json!({}))).await;
    assert_eq!(neither.error_code(), "proof_required");
    let wrong = app
        .send(disable(json!({ "password": "not it at all" })))
        .await;
    assert_eq!(wrong.error_code(), "invalid_credentials");
    let wrong_code = app.send(disable(json!({ "code": "000000" }))).await;
    assert_eq!(wrong_code.error_code(), "invalid_code");
    let done = app.send(disable(json!({ "code": code(&secret, 1) }))).await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.body);

    let login = app.login("acme", &owner.email, PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    assert_eq!(
        app.audit_events(owner.tenant_id, "auth.mfa.disabled")
            .await
            .len(),
        1
    );

    // And a password works as the proof too.
    forget_used_steps(&app, &owner).await;
    enrol(&app, &owner).await;
    let by_password = app.send(disable(json!({ "password": PASSWORD }))).await;
    assert_eq!(
        by_password.status,
        StatusCode::NO_CONTENT,
        "{}",
        by_password.body
    );
}

fn html(resp: &Resp) -> &str {
    resp.body
        .as_str()
        .unwrap_or_else(|| panic!("not HTML: {}", resp.body))
}

/// The text of `page` between `start` and the next `end`.
fn between<'a>(page: &'a str, start: &str, end: &str) -> &'a str {
    let at = page
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in {page}"))
        + start.len();
    &page[at..at + page[at..].find(end).unwrap()]
}

fn cookie_value(resp: &Resp, name: &str) -> Option<String> {
    resp.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.split(';')
                .next()?
                .strip_prefix(&format!("{name}="))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        })
}

fn form(req: Req, fields: &[(&str, &str)]) -> Req {
    req.raw(
        "application/x-www-form-urlencoded",
        serde_urlencoded::to_string(fields).unwrap(),
    )
}

// proves: SEC-7
#[tokio::test]
async fn a_member_enrols_and_signs_in_with_a_code_through_the_web_app() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;

    let page = app.send(Req::get("/app/mfa").by(&owner)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(html(&page).contains("data-mfa-state=\"off\""));
    let csrf = between(html(&page), "name=\"_csrf\" value=\"", "\"").to_string();
    let started = app
        .send(form(
            Req::post("/app/mfa/enrolment").by(&owner),
            &[("_csrf", &csrf)],
        ))
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
    assert_eq!(started.headers[header::LOCATION], "/app/mfa");

    // The QR code is drawn into the page, with the secret to type by hand.
    let page = app.send(Req::get("/app/mfa").by(&owner)).await;
    let qr = between(html(&page), "data-qr>", "</div>");
    assert!(qr.starts_with("<svg") && qr.ends_with("</svg>"), "{qr}");
    let secret = between(html(&page), "data-secret>", "<").to_string();

    let wrong = app
        .send(form(
            Req::post("/app/mfa/confirm").by(&owner),
            &[("_csrf", &csrf), ("code", &code(&secret, 5))],
        ))
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(html(&wrong).contains("data-notice=\"error\""));
    let confirmed = app
        .send(form(
            Req::post("/app/mfa/confirm").by(&owner),
            &[("_csrf", &csrf), ("code", &code(&secret, 0))],
        ))
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    let codes = between(html(&confirmed), "data-recovery-codes>", "</section>");
    assert_eq!(codes.matches("<li><code>").count(), 10, "{codes}");
    // Shown once.
    let again = app.send(Req::get("/app/mfa").by(&owner)).await;
    assert!(!html(&again).contains("data-recovery-codes"));
    assert!(html(&again).contains("data-mfa-state=\"on\""));

    // Signing in: the password, then the code.
    let login = app.send(Req::get("/app/login")).await;
    let login_csrf = cookie_value(&login, "custodian_login_csrf").unwrap();
    let csrf_cookie = format!("custodian_login_csrf={login_csrf}");
    let password = app
        .send(form(
            Req::post("/app/login").header("cookie", csrf_cookie.clone()),
            &[
                ("_csrf", &login_csrf),
                ("tenant", "acme"),
                ("email", &owner.email),
                ("password", PASSWORD),
            ],
        ))
        .await;
    assert_eq!(password.status, StatusCode::SEE_OTHER, "{}", password.body);
    assert_eq!(password.headers[header::LOCATION], "/app/login/mfa");
    assert!(cookie_value(&password, "custodian_session").is_none());
    let challenge = cookie_value(&password, "custodian_mfa_challenge").expect("a challenge");
    let cookies = format!("{csrf_cookie}; custodian_mfa_challenge={challenge}");

    let step = app
        .send(Req::get("/app/login/mfa").header("cookie", cookies.clone()))
        .await;
    assert_eq!(step.status, StatusCode::OK);
    assert!(html(&step).contains("autocomplete=\"one-time-code\""));
    let refused = app
        .send(form(
            Req::post("/app/login/mfa").header("cookie", cookies.clone()),
            &[("_csrf", &login_csrf), ("code", "000000")],
        ))
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(html(&refused).contains("data-login-error"));
    assert!(cookie_value(&refused, "custodian_session").is_none());
    let signed_in = app
        .send(form(
            Req::post("/app/login/mfa").header("cookie", cookies.clone()),
            &[("_csrf", &login_csrf), ("code", &code(&secret, 1))],
        ))
        .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    assert_eq!(signed_in.headers[header::LOCATION], "/app");
    let session = cookie_value(&signed_in, "custodian_session").expect("a session");
    let inbox = app.send(Req::get("/app").cookie(&session)).await;
    assert_eq!(inbox.status, StatusCode::OK);
    // Without its CSRF token, the second step is refused like any form.
    let forged = app
        .send(form(
            Req::post("/app/login/mfa").header("cookie", cookies),
            &[("code", &code(&secret, 1))],
        ))
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
}

// proves: SEC-7
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_enrols_and_signs_in_with_a_code_in_a_real_browser() {
    use crate::web_browser::{browser, fill, serve, sign_in, start_driver, wait_for, ONE_BROWSER};
    use fantoccini::Locator;

    let _one = ONE_BROWSER.lock().await;
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let base = serve(&app).await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, profile.path()).await;
    let click = |css: &'static str| {
        let client = client.clone();
        async move {
            client
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"))
                .click()
                .await
                .unwrap();
        }
    };

    let journey = async {
        sign_in(&client, &base, &owner, PASSWORD).await;
        wait_for(&client, "[data-member-name]").await;

        // Enrolment: the QR code in the page, the key by hand, the first code, the codes once.
        client.goto(&format!("{base}/app/mfa")).await.unwrap();
        click("form[action='/app/mfa/enrolment'] button").await;
        wait_for(&client, "[data-qr] svg").await;
        let secret = wait_for(&client, "[data-secret]")
            .await
            .text()
            .await
            .unwrap();
        fill(&client, "code", &code(&secret, 0)).await;
        click("form[action='/app/mfa/confirm'] button").await;
        wait_for(&client, "[data-recovery-codes]").await;
        let codes = client
            .find_all(Locator::Css("[data-recovery-codes] li"))
            .await
            .unwrap();
        assert_eq!(codes.len(), 10);
        wait_for(&client, "[data-mfa-state='on']").await;

        // Signed out and in again: the password, then the code.
        click("form[action='/app/logout'] button").await;
        wait_for(&client, "form[action='/app/login']").await;
        sign_in(&client, &base, &owner, PASSWORD).await;
        wait_for(&client, "form[action='/app/login/mfa']").await;
        fill(&client, "code", "000000").await;
        click("form[action='/app/login/mfa'] button").await;
        wait_for(&client, "[data-login-error]").await;
        fill(&client, "code", &code(&secret, 1)).await;
        click("form[action='/app/login/mfa'] button").await;
        wait_for(&client, "[data-member-name]").await;
        assert_eq!(client.current_url().await.unwrap().path(), "/app");
    };
    let outcome = tokio::time::timeout(Duration::from_secs(120), journey).await;
    client.close().await.ok();
    outcome.expect("the journey finished in time");
}
