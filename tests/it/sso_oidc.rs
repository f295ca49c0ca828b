//! Single sign-on through OpenID Connect against a fake provider over real HTTP
//! (`fakes/oidc.rs`): the authorization-code flow with PKCE, state and nonce, the ID token's
//! signature, issuer, audience, expiry and nonce, the allowed domains, just-in-time and
//! invited-only membership, the egress policy on the issuer, and the audit trail (AUD-2).

use axum::http::{header, StatusCode};
use serde_json::{json, Value};

use crate::common::{Member, Req, Resp, TestApp, PASSWORD};
use crate::fakes::oidc::{FakeOidc, Forge, CLIENT_ID, CLIENT_SECRET};

const PUBLIC_URL: &str = "http://custodian.test";

async fn spawn() -> TestApp {
    TestApp::spawn_with(|c| c.public_url = Some(PUBLIC_URL.into())).await
}

fn settings(fake: &FakeOidc, join_mode: &str, password_sign_in: bool) -> Value {
    json!({
        "issuer": fake.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "allowed_domains": ["acme.example"],
        "default_role": "agent",
        "join_mode": join_mode,
        "password_sign_in": password_sign_in,
    })
}

async fn configure(app: &TestApp, owner: &Member, fake: &FakeOidc, join_mode: &str) {
    let resp = app
        .send(
            Req::put("/api/v1/sso/oidc")
                .by(owner)
                .json(settings(fake, join_mode, true)),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
}

fn set_cookies(resp: &Resp) -> Vec<String> {
    resp.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

fn cookie(resp: &Resp, name: &str) -> Option<String> {
    set_cookies(resp).into_iter().find_map(|c| {
        let value = c.split(';').next()?.strip_prefix(&format!("{name}="))?;
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// A browser's journey out to the provider and back, up to the callback (not sent yet): the
/// callback's path and query, and the browser's sign-in cookie.
async fn to_provider_and_back(app: &TestApp, slug: &str) -> (String, String) {
    let start = app.send(Req::get(format!("/app/sso/{slug}/start"))).await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
    let location = start.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    let browser = cookie(&start, "custodian_sso").expect("the sign-in cookie");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let at_provider = client
        .get(&location)
        .send()
        .await
        .expect("the provider answers");
    assert_eq!(at_provider.status(), reqwest::StatusCode::FOUND);
    let back = at_provider.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    let callback = back
        .strip_prefix(PUBLIC_URL)
        .unwrap_or_else(|| panic!("the provider sent the browser to {back}"))
        .to_string();
    assert!(callback.starts_with("/app/sso/callback?"), "{callback}");
    (callback, browser)
}

async fn callback(app: &TestApp, callback: &str, browser: Option<&str>) -> Resp {
    let mut req = Req::get(callback);
    if let Some(browser) = browser {
        req = req.header("cookie", format!("custodian_sso={browser}"));
    }
    app.send(req).await
}

/// The whole journey; answers the callback's response.
async fn sign_in(app: &TestApp, slug: &str) -> Resp {
    let (path, browser) = to_provider_and_back(app, slug).await;
    callback(app, &path, Some(&browser)).await
}

async fn me(app: &TestApp, session: &str) -> Resp {
    app.send(Req::get("/api/v1/auth/me").cookie(session)).await
}

/// The reasons of the refused single sign-ons the tenant's audit log holds, in order.
async fn refusals(app: &TestApp, tenant_id: uuid::Uuid) -> Vec<String> {
    app.audit_events(tenant_id, "auth.login.failed")
        .await
        .iter()
        .filter(|e| e["after"]["method"] == "sso")
        .map(|e| {
            e["after"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn assert_refused(resp: &Resp, status: StatusCode, what: &str) {
    assert_eq!(resp.status, status, "{what}: {}", resp.body);
    assert!(
        cookie(resp, "custodian_session").is_none(),
        "{what}: a session was handed out"
    );
}

// proves: AUD-2
#[tokio::test]
async fn a_new_colleague_signs_in_through_the_identity_provider_joins_and_the_session_works_on_the_api(
) {
    let app = spawn().await;
    let owner = app.signup("acme").await;
    let fake = FakeOidc::start("ana@acme.example").await;
    configure(&app, &owner, &fake, "just_in_time").await;

    let resp = sign_in(&app, "acme").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    let session = cookie(&resp, "custodian_session").expect("a session cookie");
    let page = resp.body.as_str().unwrap_or_default();
    assert!(page.contains("url=/app\""), "the page goes on to the inbox");

    let who = me(&app, &session).await;
    assert_eq!(who.status, StatusCode::OK, "{}", who.body);
    assert_eq!(who.body["member"]["email"], "ana@acme.example");
    assert_eq!(who.body["member"]["display_name"], "Ana Lima");
    assert_eq!(who.body["member"]["role"], "agent");
    let inbox = app
        .send(Req::get("/api/v1/conversations").cookie(&session))
        .await;
    assert_eq!(inbox.status, StatusCode::OK, "{}", inbox.body);

    // The flow was the code flow with PKCE (S256), a state and a nonce.
    let asked = &fake.authorize_queries()[0];
    assert_eq!(asked["code_challenge_method"], "S256");
    assert_eq!(asked["code_challenge"].len(), 43);
    assert!(asked["state"].len() >= 43 && asked["nonce"].len() >= 43);
    assert_eq!(
        asked["redirect_uri"],
        format!("{PUBLIC_URL}/app/sso/callback")
    );

    let joined = app
        .audit_events(owner.tenant_id, "auth.sso.member_joined")
        .await;
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["after"]["role"], "agent");
    let logins = app
        .audit_events(owner.tenant_id, "auth.login.succeeded")
        .await;
    let sso_logins: Vec<_> = logins
        .iter()
        .filter(|e| e["after"]["method"] == "sso")
        .collect();
    assert_eq!(sso_logins.len(), 1, "{logins:?}");

    // Signing in again reuses the member, and the cached discovery document and keys.
    let again = sign_in(&app, "acme").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(
        app.count("SELECT count(*) FROM member WHERE lower(email) = 'ana@acme.example'")
            .await,
        1
    );
    assert_eq!(fake.discovery_fetches(), 1);
    assert_eq!(fake.jwks_fetches(), 1);
}

// proves: AUD-2
#[tokio::test]
async fn each_forged_id_token_is_refused_without_a_session_and_the_refusal_is_audited() {
    let app = spawn().await;
    let owner = app.signup("acme").await;
    let fake = FakeOidc::start("ana@acme.example").await;
    configure(&app, &owner, &fake, "just_in_time").await;

    let forgeries = [
        (
            Forge {
                audience: Some("another-client".into()),
                ..Forge::default()
            },
            "wrong_audience",
        ),
        (
            Forge {
                expired: true,
                ..Forge::default()
            },
            "expired_token",
        ),
        (
            Forge {
                foreign_key: true,
                ..Forge::default()
            },
            "bad_signature",
        ),
        (
            Forge {
                nonce: Some("a-nonce-of-another-sign-in".into()),
                ..Forge::default()
            },
            "wrong_nonce",
        ),
        (
            Forge {
                issuer: Some("https://evil.example".into()),
                ..Forge::default()
            },
            "wrong_issuer",
        ),
    ];
    let mut expected = Vec::new();
    for (forge, reason) in forgeries {
        fake.forge(forge);
        let resp = sign_in(&app, "acme").await;
        assert_refused(&resp, StatusCode::UNAUTHORIZED, reason);
        expected.push(reason.to_string());
        assert_eq!(refusals(&app, owner.tenant_id).await, expected);
    }
    assert_eq!(
        app.count("SELECT count(*) FROM member WHERE lower(email) = 'ana@acme.example'")
            .await,
        0,
        "no member joined through a forged token"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM session").await,
        1,
        "only the owner's sign-up session"
    );
}

// proves: AUD-2
#[tokio::test]
async fn a_replayed_state_and_a_return_to_another_browser_are_refused() {
    let app = spawn().await;
    let owner = app.signup("acme").await;
    let fake = FakeOidc::start("ana@acme.example").await;
    configure(&app, &owner, &fake, "just_in_time").await;

    let (path, browser) = to_provider_and_back(&app, "acme").await;
    let first = callback(&app, &path, Some(&browser)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let replayed = callback(&app, &path, Some(&browser)).await;
    assert_refused(&replayed, StatusCode::UNAUTHORIZED, "replayed state");

    // A link with someone else's code and state, opened in a browser that did not start it.
    let (path, _) = to_provider_and_back(&app, "acme").await;
    let elsewhere = callback(&app, &path, Some("not-the-starting-browser")).await;
    assert_refused(&elsewhere, StatusCode::UNAUTHORIZED, "another browser");
    let without = callback(&app, &path, None).await;
    assert_refused(
        &without,
        StatusCode::UNAUTHORIZED,
        "the state spent by then",
    );

    // A state nobody issued.
    let unknown = callback(
        &app,
        "/app/sso/callback?code=c&state=made-up",
        Some(&browser),
    )
    .await;
    assert_refused(&unknown, StatusCode::UNAUTHORIZED, "unknown state");

    assert_eq!(
        refusals(&app, owner.tenant_id).await,
        vec!["state_replayed", "other_browser", "state_replayed"]
    );
}

#[tokio::test]
async fn a_state_older_than_ten_minutes_is_refused() {
    let app = spawn().await;
    let owner = app.signup("acme").await;
    let fake = FakeOidc::start("ana@acme.example").await;
    configure(&app, &owner, &fake, "just_in_time").await;

    let (path, browser) = to_provider_and_back(&app, "acme").await;
    let mut conn = app.superuser().await;
    sqlx::query(
        "UPDATE oidc_login SET created_at = created_at - interval '11 minutes',
                               expires_at = expires_at - interval '11 minutes'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let resp = callback(&app, &path, Some(&browser)).await;
    assert_refused(&resp, StatusCode::UNAUTHORIZED, "expired state");
    assert_eq!(refusals(&app, owner.tenant_id).await, vec!["state_expired"]);
}

// proves: AUD-2
#[tokio::test]
async fn an_unverified_address_or_one_of_a_domain_not_allowed_is_refused() {
    let app = spawn().await;
    let owner = app.signup("acme").await;
    let fake = FakeOidc::start("ana@acme.example").await;
    configure(&app, &owner, &fake, "just_in_time").await;

    fake.set_user(|u| u.email_verified = false);
    let unverified = sign_in(&app, "acme").await;
    assert_refused(&unverified, StatusCode::UNAUTHORIZED, "unverified");

    fake.set_user(|u| {
        u.email_verified = true;
        u.email = "mallory@acme.example.evil.example".into();
    });
    let elsewhere = sign_in(&app, "acme").await;
    assert_refused(&elsewhere, StatusCode::UNAUTHORIZED, "domain not allowed");
    let page = elsewhere.body.as_str().unwrap_or_default();
    assert!(
        page.contains("not of a domain this workspace accepts"),
        "{page}"
    );

    assert_eq!(
        refusals(&app, owner.tenant_id).await,
        vec!["email_unverified", "domain_not_allowed"]
    );
    assert_eq!(app.count("SELECT count(*) FROM member").await, 1);
}

// proves: AUD-2
#[tokio::test]
async fn invited_only_refuses_unknown_addresses_and_signs_in_the_members_it_has() {
    let app = spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let fake = FakeOidc::start("stranger@acme.example").await;
    configure(&app, &owner, &fake, "invited_only").await;

    let stranger = sign_in(&app, "acme").await;
    assert_refused(&stranger, StatusCode::UNAUTHORIZED, "not a member");
    assert_eq!(refusals(&app, owner.tenant_id).await, vec!["not_a_member"]);
    assert_eq!(app.count("SELECT count(*) FROM member").await, 2);

    let upper = agent.email.to_uppercase();
    fake.set_user(|u| u.email = upper);
    let member = sign_in(&app, "acme").await;
    assert_eq!(member.status, StatusCode::OK, "{}", member.body);
    let session = cookie(&member, "custodian_session").expect("a session");
    let who = me(&app, &session).await;
    assert_eq!(who.body["member"]["id"], agent.member_id.to_string());
}

#[tokio::test]
async fn a_member_with_an_authenticator_still_owes_its_code_after_the_identity_provider() {
    let app = spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let (secret, _) = crate::mfa::enrol(&app, &agent).await;
    let fake = FakeOidc::start(&agent.email).await;
    configure(&app, &owner, &fake, "invited_only").await;

    let resp = sign_in(&app, "acme").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert!(
        cookie(&resp, "custodian_session").is_none(),
        "a session before the code"
    );
    let challenge = cookie(&resp, "custodian_mfa_challenge").expect("a challenge");
    assert!(resp
        .body
        .as_str()
        .unwrap_or_default()
        .contains("url=/app/login/mfa"));

    // The step the enrolment's code used is spent: the next one is the authenticator's now.
    let done = app
        .send(Req::post("/api/v1/auth/login/mfa").json(json!({
            "challenge": challenge, "code": crate::mfa::code(&secret, 1),
        })))
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.session_cookie().is_some());
}

#[tokio::test]
async fn rotated_provider_keys_are_fetched_again_when_a_token_names_an_unknown_key() {
    let app = spawn().await;
    let owner = app.signup("acme").await;
    let fake = FakeOidc::start("ana@acme.example").await;
    configure(&app, &owner, &fake, "just_in_time").await;

    assert_eq!(sign_in(&app, "acme").await.status, StatusCode::OK);
    assert_eq!(fake.jwks_fetches(), 1);
    fake.rotate();
    let resp = sign_in(&app, "acme").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(fake.jwks_fetches(), 2);
}

#[tokio::test]
async fn an_issuer_on_a_private_address_is_refused_unless_the_operator_allows_private_targets() {
    let fake = FakeOidc::start("ana@acme.example").await;

    let strict = TestApp::spawn_with(|c| {
        c.public_url = Some(PUBLIC_URL.into());
        c.actions_allow_private = false;
    })
    .await;
    let owner = strict.signup("acme").await;
    for issuer in [
        fake.issuer.clone(),
        "https://127.0.0.1/".into(),
        "https://169.254.169.254/".into(),
        "https://[::1]/".into(),
        "http://id.acme.example".into(),
    ] {
        let mut body = settings(&fake, "just_in_time", true);
        body["issuer"] = json!(issuer);
        let resp = strict
            .send(Req::put("/api/v1/sso/oidc").by(&owner).json(body))
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{issuer}: {}",
            resp.body
        );
        assert_eq!(resp.error_code(), "invalid_issuer");
    }
    assert_eq!(strict.count("SELECT count(*) FROM oidc_provider").await, 0);

    let open = spawn().await;
    let owner = open.signup("acme").await;
    configure(&open, &owner, &fake, "just_in_time").await;
    assert_eq!(sign_in(&open, "acme").await.status, StatusCode::OK);
}

// proves: SEC-10, AUD-2
#[tokio::test]
async fn the_provider_is_set_by_admins_audited_and_its_secret_is_sealed_and_never_answered() {
    let app = spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let fake = FakeOidc::start("ana@acme.example").await;

    let none = app.send(Req::get("/api/v1/sso/oidc").by(&owner)).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    let mut without_secret = settings(&fake, "just_in_time", true);
    without_secret
        .as_object_mut()
        .unwrap()
        .remove("client_secret");
    let refused = app
        .send(
            Req::put("/api/v1/sso/oidc")
                .by(&owner)
                .json(without_secret.clone()),
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.error_code(), "client_secret_required");
    let by_agent = app
        .send(
            Req::put("/api/v1/sso/oidc")
                .by(&agent)
                .json(settings(&fake, "just_in_time", true)),
        )
        .await;
    assert_eq!(by_agent.status, StatusCode::FORBIDDEN);

    configure(&app, &owner, &fake, "just_in_time").await;
    // A later change without the secret keeps it.
    without_secret["allowed_domains"] = json!(["ACME.example", "acme.example", "sub.acme.example"]);
    let changed = app
        .send(Req::put("/api/v1/sso/oidc").by(&owner).json(without_secret))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(
        changed.body["allowed_domains"],
        json!(["acme.example", "sub.acme.example"])
    );
    let shown = app.send(Req::get("/api/v1/sso/oidc").by(&owner)).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["client_secret_set"], true);
    assert!(!shown.body.to_string().contains(CLIENT_SECRET));

    let sealed: Vec<u8> = sqlx::query_scalar("SELECT sealed_client_secret FROM oidc_provider")
        .fetch_one(&mut app.superuser().await)
        .await
        .unwrap();
    assert!(!sealed
        .windows(CLIENT_SECRET.len())
        .any(|w| w == CLIENT_SECRET.as_bytes()));
    let events = app
        .audit_events(owner.tenant_id, "auth.sso.configured")
        .await;
    assert_eq!(events.len(), 2);
    assert!(!Value::Array(events.clone())
        .to_string()
        .contains(CLIENT_SECRET));
    assert_eq!(events[1]["after"]["client_secret_changed"], false);
    // The kept secret still works.
    assert_eq!(sign_in(&app, "acme").await.status, StatusCode::OK);

    let removed = app.send(Req::delete("/api/v1/sso/oidc").by(&owner)).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.audit_events(owner.tenant_id, "auth.sso.removed")
            .await
            .len(),
        1
    );
    let start = app.send(Req::get("/app/sso/acme/start")).await;
    assert_eq!(start.status, StatusCode::NOT_FOUND);
}

// proves: AUD-2
#[tokio::test]
async fn password_sign_in_is_refused_when_the_workspace_turns_it_off_but_owners_keep_it() {
    let app = spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let fake = FakeOidc::start("ana@acme.example").await;
    let resp = app
        .send(
            Req::put("/api/v1/sso/oidc")
                .by(&owner)
                .json(settings(&fake, "invited_only", false)),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);

    let refused = app.login("acme", &agent.email, PASSWORD).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.error_code(), "password_sign_in_disabled");
    assert!(refused.session_cookie().is_none());
    // A wrong password is still only a wrong password: the refusal tells nothing of accounts.
    let wrong = app
        .login("acme", &agent.email, "not the password at all")
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let failed = app.audit_events(owner.tenant_id, "auth.login.failed").await;
    assert!(failed
        .iter()
        .any(|e| e["after"]["reason"] == "password_sign_in_disabled"));

    let owner_login = app.login("acme", &owner.email, PASSWORD).await;
    assert_eq!(owner_login.status, StatusCode::OK, "{}", owner_login.body);
}

#[tokio::test]
async fn the_sign_in_page_offers_single_sign_on_and_the_form_leads_to_the_workspaces_start() {
    let app = spawn().await;
    let page = app.send(Req::get("/app/login")).await;
    let html = page.body.as_str().unwrap_or_default();
    assert!(html.contains("Sign in with SSO"), "{html}");
    assert!(html.contains("action=\"/app/sso\""));

    let chosen = app.send(Req::get("/app/sso?workspace=Acme")).await;
    assert_eq!(chosen.status, StatusCode::OK);
    assert!(chosen
        .body
        .as_str()
        .unwrap_or_default()
        .contains("url=/app/sso/acme/start"));
    let blank = app.send(Req::get("/app/sso?workspace=")).await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST);
    let unknown = app.send(Req::get("/app/sso/nobody-here/start")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let provider_error = app
        .send(Req::get("/app/sso/callback?error=access_denied&state=x"))
        .await;
    assert_eq!(provider_error.status, StatusCode::BAD_REQUEST);
}
