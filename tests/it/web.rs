//! The staff web app in-process, through the same router as the API: sign-in and its CSRF
//! protection, access to every page (SEC-1, SEC-2, SEC-3), the inbox list, the assets and the
//! pages' CSP. The browser journeys are in `web_browser.rs`.

use std::collections::HashMap;

use axum::http::{header, Method, StatusCode};
use custodian::http::Access;
use custodian::rbac::Role;
use serde_json::json;

use crate::common::{concrete, Member, Req, Resp, TestApp, PASSWORD};

pub(crate) fn html(resp: &Resp) -> &str {
    resp.body
        .as_str()
        .unwrap_or_else(|| panic!("not HTML: {}", resp.body))
}

/// The value of the first hidden `_csrf` field of a page.
pub(crate) fn csrf_field(page: &str) -> String {
    let at = page
        .find("name=\"_csrf\" value=\"")
        .unwrap_or_else(|| panic!("no _csrf field in {page}"));
    let rest = &page[at + "name=\"_csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn set_cookies(resp: &Resp) -> Vec<String> {
    resp.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn cookie_value(resp: &Resp, name: &str) -> Option<String> {
    set_cookies(resp).iter().find_map(|c| {
        c.split(';')
            .next()?
            .strip_prefix(&format!("{name}="))
            .map(str::to_string)
    })
}

pub(crate) fn form(fields: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(fields).unwrap()
}

/// The sign-in page's token and its cookie, as a browser holds them after opening it.
async fn login_form(app: &TestApp) -> (String, String) {
    let page = app.send(Req::get("/app/login")).await;
    assert_eq!(page.status, StatusCode::OK);
    let token = csrf_field(html(&page));
    let cookie = cookie_value(&page, "custodian_login_csrf").expect("the form's cookie");
    assert_eq!(token, cookie);
    (token, cookie)
}

async fn sessions(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM session WHERE revoked_at IS NULL")
        .await
}

/// A signed-in member's page token, as the page embeds it.
pub(crate) async fn page_token(app: &TestApp, member: &Member) -> String {
    let page = app.send(Req::get("/app/password").by(member)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    csrf_field(html(&page))
}

#[tokio::test]
async fn signing_in_with_the_form_opens_the_inbox_with_a_session() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let logins_before = app
        .audit_events(owner.tenant_id, "auth.login.succeeded")
        .await
        .len();
    let (token, cookie) = login_form(&app).await;
    let signed_in = app
        .send(
            Req::post("/app/login")
                .header("cookie", format!("custodian_login_csrf={cookie}"))
                .raw(
                    "application/x-www-form-urlencoded",
                    form(&[
                        ("_csrf", &token),
                        ("tenant", "acme"),
                        ("email", &owner.email),
                        ("password", PASSWORD),
                    ]),
                ),
        )
        .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    assert_eq!(signed_in.headers[header::LOCATION], "/app");
    let session = cookie_value(&signed_in, "custodian_session").expect("a session cookie");
    assert!(set_cookies(&signed_in)
        .iter()
        .any(|c| c.starts_with("custodian_login_csrf=;") && c.contains("Max-Age=0")));

    let inbox = app.send(Req::get("/app").cookie(&session)).await;
    assert_eq!(inbox.status, StatusCode::OK);
    assert!(html(&inbox).contains("All conversations"));
    assert!(html(&inbox).contains("data-member-name>Owner<"));
    // The API takes the same session.
    let me = app.send(Req::get("/api/v1/auth/me").cookie(&session)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(
        app.audit_events(owner.tenant_id, "auth.login.succeeded")
            .await
            .len(),
        logins_before + 1
    );
}

#[tokio::test]
async fn the_sign_in_page_of_a_signed_in_member_goes_to_the_inbox() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let resp = app.send(Req::get("/app/login").by(&owner)).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    assert_eq!(resp.headers[header::LOCATION], "/app");
}

// proves: SEC-1
#[tokio::test]
async fn a_sign_in_post_without_its_csrf_token_or_with_a_wrong_one_is_refused_and_signs_no_one_in()
{
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (token, cookie) = login_form(&app).await;
    let before = sessions(&app).await;
    let logins_before = app
        .audit_events(owner.tenant_id, "auth.login.succeeded")
        .await
        .len();
    let fields = |csrf: &str| {
        form(&[
            ("_csrf", csrf),
            ("tenant", "acme"),
            ("email", &owner.email),
            ("password", PASSWORD),
        ])
    };
    let attempts = [
        // A cross-site form: the attacker has no cookie of ours to match.
        Req::post("/app/login").raw("application/x-www-form-urlencoded", fields(&token)),
        // The cookie but no token in the form.
        Req::post("/app/login")
            .header("cookie", format!("custodian_login_csrf={cookie}"))
            .raw(
                "application/x-www-form-urlencoded",
                form(&[
                    ("tenant", "acme"),
                    ("email", &owner.email),
                    ("password", PASSWORD),
                ]),
            ),
        // A token that is not the cookie's.
        Req::post("/app/login")
            .header("cookie", format!("custodian_login_csrf={cookie}"))
            .raw(
                "application/x-www-form-urlencoded",
                fields("forged-token-forged-token-forged-token"),
            ),
    ];
    for attempt in attempts {
        let refused = app.send(attempt).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
        assert!(html(&refused).contains("data-error-code=\"csrf_failed\""));
        assert!(cookie_value(&refused, "custodian_session").is_none());
    }
    assert_eq!(sessions(&app).await, before, "a session was opened");
    assert_eq!(
        app.audit_events(owner.tenant_id, "auth.login.succeeded")
            .await
            .len(),
        logins_before
    );
    assert!(app
        .audit_events(owner.tenant_id, "auth.login.failed")
        .await
        .is_empty());
}

#[tokio::test]
async fn a_wrong_password_shows_the_form_again_with_a_clear_message_and_no_session() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let (token, cookie) = login_form(&app).await;
    let resp = app
        .send(
            Req::post("/app/login")
                .header("cookie", format!("custodian_login_csrf={cookie}"))
                .raw(
                    "application/x-www-form-urlencoded",
                    form(&[
                        ("_csrf", &token),
                        ("tenant", "acme"),
                        ("email", &owner.email),
                        ("password", "not the password at all"),
                    ]),
                ),
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    let page = html(&resp);
    assert!(page.contains("data-login-error"));
    assert!(page.contains("do not match an account"));
    // What was typed stays, but never the password.
    assert!(page.contains(&format!("value=\"{}\"", owner.email)));
    assert!(!page.contains("not the password at all"));
    assert!(cookie_value(&resp, "custodian_session").is_none());
    assert_eq!(
        app.audit_events(owner.tenant_id, "auth.login.failed")
            .await
            .len(),
        1
    );
}

// proves: SEC-5
#[tokio::test]
async fn a_throttled_account_is_told_to_wait_instead_of_being_checked() {
    let app = TestApp::spawn_with(|c| c.limits.login_per_account_burst = 2).await;
    let owner = app.signup("acme").await;
    let (token, cookie) = login_form(&app).await;
    let attempt = |password: &'static str| {
        Req::post("/app/login")
            .header("cookie", format!("custodian_login_csrf={cookie}"))
            .client_ip("203.0.113.9")
            .raw(
                "application/x-www-form-urlencoded",
                form(&[
                    ("_csrf", &token),
                    ("tenant", "acme"),
                    ("email", &owner.email),
                    ("password", password),
                ]),
            )
    };
    for _ in 0..2 {
        assert_eq!(
            app.send(attempt("wrong password")).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Now even the right password is refused, without being checked, and the page says why.
    let throttled = app.send(attempt(PASSWORD)).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers.contains_key(header::RETRY_AFTER));
    assert!(html(&throttled).contains("Too many failed sign-ins"));
    assert!(cookie_value(&throttled, "custodian_session").is_none());
}

#[tokio::test]
async fn signing_out_needs_the_sessions_csrf_token_and_then_ends_the_session() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let other = app.join(&owner, "agent").await;
    let token = page_token(&app, &owner).await;
    // Another member's token, a made-up one, none: refused, and the session lives on.
    let others_token = page_token(&app, &other).await;
    assert_ne!(token, others_token, "tokens are per session");
    for body in [
        form(&[("_csrf", &others_token)]),
        form(&[("_csrf", "AAAA")]),
        String::new(),
    ] {
        let refused = app
            .send(
                Req::post("/app/logout")
                    .by(&owner)
                    .raw("application/x-www-form-urlencoded", body),
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
        let me = app.send(Req::get("/api/v1/auth/me").by(&owner)).await;
        assert_eq!(me.status, StatusCode::OK, "the session was ended");
    }
    assert!(app
        .audit_events(owner.tenant_id, "auth.logout")
        .await
        .is_empty());

    // The token may also come in the header htmx sends.
    let out = app
        .send(
            Req::post("/app/logout")
                .by(&owner)
                .header("x-csrf-token", &token)
                .raw("application/x-www-form-urlencoded", ""),
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.headers[header::LOCATION], "/app/login");
    let me = app.send(Req::get("/api/v1/auth/me").by(&owner)).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.audit_events(owner.tenant_id, "auth.logout").await.len(),
        1
    );
}

#[tokio::test]
async fn a_page_post_that_is_not_a_form_is_refused_before_anything_changes() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let token = page_token(&app, &owner).await;
    let resp = app
        .send(
            Req::post("/app/logout")
                .by(&owner)
                .header("x-csrf-token", &token)
                .json(json!({})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let me = app.send(Req::get("/api/v1/auth/me").by(&owner)).await;
    assert_eq!(me.status, StatusCode::OK);
}

#[tokio::test]
async fn the_password_form_changes_the_password_with_its_token_and_says_so() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let token = page_token(&app, &owner).await;
    let new_password = "another quite unusual passphrase";
    let change = |csrf: &str, current: &str, confirm: &str| {
        Req::post("/app/password").by(&owner).raw(
            "application/x-www-form-urlencoded",
            form(&[
                ("_csrf", csrf),
                ("current_password", current),
                ("new_password", new_password),
                ("confirm_password", confirm),
            ]),
        )
    };
    let forged = app.send(change("forged", PASSWORD, new_password)).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let mismatch = app
        .send(change(&token, PASSWORD, "something else entirely"))
        .await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    assert!(html(&mismatch).contains("differ"));
    let wrong = app
        .send(change(&token, "not my password", new_password))
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(html(&wrong).contains("The current password is wrong."));
    assert!(app
        .audit_events(owner.tenant_id, "auth.password_changed")
        .await
        .is_empty());

    let changed = app.send(change(&token, PASSWORD, new_password)).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert!(html(&changed).contains("Your password is changed"));
    assert_eq!(
        app.login("acme", &owner.email, PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("acme", &owner.email, new_password).await.status,
        StatusCode::OK
    );
}

const PUBLIC_PAGES: &[(&str, &str)] = &[
    ("GET", "/app/assets/{file}"),
    ("GET", "/app/login"),
    ("POST", "/app/login"),
    // The second step of a sign-in: the challenge cookie the password step set.
    ("GET", "/app/login/mfa"),
    ("POST", "/app/login/mfa"),
    // Single sign-on: the form, the redirect to the provider and its return.
    ("GET", "/app/sso"),
    ("GET", "/app/sso/{tenant_slug}/start"),
    ("GET", "/app/sso/callback"),
];

// proves: SEC-1
#[tokio::test]
async fn every_page_without_a_session_sends_the_browser_to_sign_in_and_shows_nothing() {
    let app = TestApp::spawn().await;
    let pages = app.state.pages().to_vec();
    assert!(pages.len() >= 7, "only {} pages", pages.len());
    for page in &pages {
        let key = (page.method.as_str(), page.path);
        if page.access == Access::Public {
            assert!(
                PUBLIC_PAGES.contains(&key),
                "{key:?} is public but not on the reviewed list"
            );
            continue;
        }
        for cookie in [None, Some("custodian_session=forged.value")] {
            let mut req = Req::new(page.method.clone(), concrete(page.path))
                .raw("application/x-www-form-urlencoded", "");
            if let Some(cookie) = cookie {
                req = req.header("cookie", cookie);
            }
            let resp = app.send(req).await;
            assert_eq!(
                resp.status,
                StatusCode::SEE_OTHER,
                "{key:?} with {cookie:?}"
            );
            assert_eq!(resp.headers[header::LOCATION], "/app/login");
        }
        // An htmx request is told where to go instead of getting the sign-in page swapped in.
        let resp = app
            .send(Req::new(page.method.clone(), concrete(page.path)).header("hx-request", "true"))
            .await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{key:?} from htmx");
        assert_eq!(resp.headers["hx-redirect"], "/app/login");
    }
    for (method, path) in PUBLIC_PAGES {
        assert!(
            pages
                .iter()
                .any(|p| p.method.as_str() == *method && p.path == *path),
            "{method} {path} is listed as public but not served"
        );
    }
}

// proves: SEC-1, SEC-2
#[tokio::test]
async fn every_role_is_refused_every_page_whose_permission_it_lacks() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let mut members = HashMap::new();
    for role in ["admin", "agent", "reviewer", "auditor", "partner"] {
        members.insert(role, app.join(&owner, role).await);
    }
    members.insert("owner", owner);
    let mut refused = 0;
    for page in app.state.pages().to_vec() {
        let Access::Requires(permission) = page.access else {
            continue;
        };
        for role in Role::ALL {
            if role.can(permission) {
                continue;
            }
            let resp = app
                .send(
                    Req::new(page.method.clone(), concrete(page.path)).by(&members[role.as_str()]),
                )
                .await;
            assert_eq!(
                resp.status,
                StatusCode::FORBIDDEN,
                "{role:?} reached {} {}",
                page.method,
                page.path
            );
            assert!(html(&resp).contains("Not allowed"), "{}", resp.body);
            refused += 1;
        }
    }
    assert!(refused >= 2, "only {refused} refusals were checked");
}

// proves: SEC-3
#[tokio::test]
async fn a_page_about_another_tenants_conversation_inbox_or_review_is_not_found() {
    let app = TestApp::spawn().await;
    let a = app.signup("alpha").await;
    let b = app.signup("bravo").await;
    let b_inbox = app.webchat_inbox(&b, "https://b.example").await;
    let (_, b_conversation) = app.visitor_writes(b_inbox, "Bravo's secret question").await;
    let b_article = app
        .send(
            Req::post("/api/v1/knowledge/articles")
                .by(&b)
                .json(json!({ "title": "Bravo's secret question", "body": "Secret." })),
        )
        .await
        .uuid("/id");
    let b_canned = app
        .send(Req::post("/api/v1/canned-replies").by(&b).json(json!({
            "shortcut": "secret", "title": "Bravo's secret question", "body": "Secret."
        })))
        .await
        .uuid("/id");
    let b_ticket = app
        .send(
            Req::post("/api/v1/tickets")
                .by(&b)
                .json(json!({ "subject": "Bravo's secret question" })),
        )
        .await
        .uuid("/id");
    let b_task = app
        .send(
            Req::post("/api/v1/tasks")
                .by(&b)
                .json(json!({ "title": "Bravo's secret question" })),
        )
        .await
        .uuid("/id");
    let b_review = app
        .send(Req::post("/api/v1/reviews").by(&b).json(json!({
            "kind": "human_review", "conversation_id": b_conversation,
            "note": "Bravo's secret question was answered wrongly"
        })))
        .await
        .uuid("/id");
    let b_export = app
        .send(
            Req::post("/api/v1/audit/exports")
                .by(&b)
                .json(json!({ "format": "csv" })),
        )
        .await
        .uuid("/id");
    let b_event: uuid::Uuid = app.audit_events(b.tenant_id, "tenant.created").await[0]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let b_execution = uuid::Uuid::new_v4();
    let mut conn = app.superuser().await;
    sqlx::query(
        "INSERT INTO agent_execution (id, tenant_id, conversation_id, contact_id, provider, model, offline, outcome)
         SELECT $1, tenant_id, id, contact_id, 'offline', 'offline', true, 'replied' FROM conversation WHERE id = $2",
    )
    .bind(b_execution)
    .bind(b_conversation)
    .execute(&mut conn)
    .await
    .unwrap();
    let foreign = HashMap::from([
        ("export_id", b_export),
        ("event_id", b_event),
        ("execution_id", b_execution),
        ("conversation_id", b_conversation),
        ("article_id", b_article),
        ("canned_reply_id", b_canned),
        ("ticket_id", b_ticket),
        ("task_id", b_task),
        ("review_id", b_review),
    ]);
    // A post carries A's token, so it is the id, not the CSRF check, that refuses it.
    let token = page_token(&app, &a).await;
    let mut checked = 0;
    for page in app.state.pages().to_vec() {
        if page.access == Access::Public || page.params().next().is_none() {
            continue;
        }
        let path = page
            .path
            .split('/')
            .map(
                |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => foreign
                        .get(name)
                        .unwrap_or_else(|| {
                            panic!("{} takes {{{name}}}: add tenant B's id", page.path)
                        })
                        .to_string(),
                    None => seg.to_string(),
                },
            )
            .collect::<Vec<_>>()
            .join("/");
        let mut req = Req::new(page.method.clone(), &path).by(&a);
        if page.method == Method::POST {
            // A form as the member's own page would post it: the id alone must be refused.
            req = req.raw(
                "application/x-www-form-urlencoded",
                form(&[("_csrf", &token)]),
            );
        }
        let resp = app.send(req).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!html(&resp).contains("secret question"));
        checked += 1;
    }
    assert!(checked >= 1);
    let inbox = app
        .send(Req::get(format!("/app?inbox={b_inbox}")).by(&a))
        .await;
    assert_eq!(inbox.status, StatusCode::NOT_FOUND);
    let all = app.send(Req::get("/app").by(&a)).await;
    assert!(!html(&all).contains("secret question"));
}

async fn label(app: &TestApp, member: &Member, conversation: uuid::Uuid, labels: &[&str]) {
    let resp = app
        .send(
            Req::new(
                Method::PUT,
                format!("/api/v1/conversations/{conversation}/labels"),
            )
            .by(member)
            .json(json!({ "labels": labels })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
}

#[tokio::test]
async fn the_inbox_lists_the_views_conversations_with_counts_filters_and_search() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, refund) = app
        .visitor_writes(inbox, "Where is my refund for order 1234?")
        .await;
    let (_, shipping) = app.visitor_writes(inbox, "Do you ship to Portugal?").await;
    let (_, resolved) = app.visitor_writes(inbox, "Thanks, all good now").await;
    label(&app, &owner, refund, &["billing"]).await;
    let status = app
        .send(
            Req::post(format!("/api/v1/conversations/{resolved}/status"))
                .by(&owner)
                .json(json!({ "status": "resolved" })),
        )
        .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    for action in ["takeover", "assign"] {
        let resp = app
            .send(
                Req::post(format!("/api/v1/conversations/{shipping}/{action}"))
                    .by(&owner)
                    .json(if action == "assign" {
                        json!({ "assignee_id": owner.member_id })
                    } else {
                        json!({})
                    }),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{action}: {}", resp.body);
    }

    let page = app.send(Req::get("/app").by(&owner)).await;
    assert_eq!(page.status, StatusCode::OK);
    let page = html(&page);
    assert!(page.contains(&format!("data-conversation=\"{refund}\"")));
    assert!(page.contains(&format!("data-conversation=\"{shipping}\"")));
    assert!(
        !page.contains(&format!("data-conversation=\"{resolved}\"")),
        "resolved shows as open"
    );
    assert!(page.contains("data-count=\"open\">2<"), "{page}");
    assert!(page.contains("data-count=\"resolved\">1<"));
    assert!(page.contains("Where is my refund for order 1234?"));
    assert!(page.contains("data-holder=\"ai\""));
    assert!(page.contains("Site chat"));
    assert!(page.contains(&format!("href=\"/app/conversations/{refund}\"")));

    let resolved_tab =
        html(&app.send(Req::get("/app?status=resolved").by(&owner)).await).to_string();
    assert!(resolved_tab.contains(&format!("data-conversation=\"{resolved}\"")));
    assert!(!resolved_tab.contains(&format!("data-conversation=\"{refund}\"")));

    let by_label = html(&app.send(Req::get("/app?label=billing").by(&owner)).await).to_string();
    assert!(by_label.contains(&format!("data-conversation=\"{refund}\"")));
    assert!(!by_label.contains(&format!("data-conversation=\"{shipping}\"")));

    let people = html(&app.send(Req::get("/app?handler=human").by(&owner)).await).to_string();
    assert!(people.contains(&format!("data-conversation=\"{shipping}\"")));
    assert!(!people.contains(&format!("data-conversation=\"{refund}\"")));

    let search = html(&app.send(Req::get("/app?q=portugal").by(&owner)).await).to_string();
    assert!(search.contains(&format!("data-conversation=\"{shipping}\"")));
    assert!(!search.contains(&format!("data-conversation=\"{refund}\"")));

    // Assigned to the owner: it is theirs, and no longer unassigned.
    let mine = html(&app.send(Req::get("/app?view=mine").by(&owner)).await).to_string();
    assert!(mine.contains(&format!("data-conversation=\"{shipping}\"")));
    assert!(!mine.contains(&format!("data-conversation=\"{refund}\"")));
    let unassigned = html(&app.send(Req::get("/app?view=unassigned").by(&owner)).await).to_string();
    assert!(unassigned.contains(&format!("data-conversation=\"{refund}\"")));
    assert!(!unassigned.contains(&format!("data-conversation=\"{shipping}\"")));

    let per_inbox = html(
        &app.send(Req::get(format!("/app?inbox={inbox}")).by(&owner))
            .await,
    )
    .to_string();
    assert!(per_inbox.contains(&format!("data-conversation=\"{refund}\"")));

    let thread = app
        .send(Req::get(format!("/app/conversations/{refund}")).by(&owner))
        .await;
    assert_eq!(thread.status, StatusCode::OK);
    assert!(html(&thread).contains("Where is my refund for order 1234?"));
}

#[tokio::test]
async fn a_bad_filter_is_a_clear_error_page_not_a_failure() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    for query in [
        "status=closed",
        "view=everyone",
        "handler=robot",
        "inbox=not-an-id",
        "q=%00",
    ] {
        let resp = app.send(Req::get(format!("/app?{query}")).by(&owner)).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            resp.body
        );
        assert!(html(&resp).contains("<html"), "{query}");
    }
}

#[tokio::test]
async fn assets_are_served_under_their_content_hash_and_cached_for_good() {
    let app = TestApp::spawn().await;
    let page = app.send(Req::get("/app/login")).await;
    let page = html(&page);
    let css = page
        .split("href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a stylesheet link")
        .to_string();
    assert!(
        css.starts_with("/app/assets/app.") && css.ends_with(".css"),
        "{css}"
    );
    let resp = app.send(Req::get(&css)).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        resp.headers[header::CONTENT_TYPE],
        "text/css; charset=utf-8"
    );
    assert_eq!(
        resp.headers[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    for script in ["htmx.min.js", "app.js"] {
        let url = custodian::web::assets::url(script);
        let resp = app.send(Req::get(&url)).await;
        assert_eq!(resp.status, StatusCode::OK, "{url}");
    }
    // Without its hash, or with another, a name is not served.
    for stale in ["/app/assets/app.css", "/app/assets/app.000000000000.css"] {
        assert_eq!(
            app.send(Req::get(stale)).await.status,
            StatusCode::NOT_FOUND
        );
    }
}

// proves: SEC-8
#[tokio::test]
async fn pages_allow_only_this_origins_scripts_and_styles_and_have_none_inline() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, conversation) = app.visitor_writes(inbox, "<script>alert(1)</script>").await;
    for (path, who) in [
        ("/app/login".to_string(), None),
        ("/app".to_string(), Some(&owner)),
        (format!("/app/conversations/{conversation}"), Some(&owner)),
        ("/app/password".to_string(), Some(&owner)),
        ("/app/nothing-here".to_string(), Some(&owner)),
    ] {
        let mut req = Req::get(&path);
        if let Some(member) = who {
            req = req.by(member);
        }
        let resp = app.send(req).await;
        let csp = resp.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("style-src 'self'"),
            "{csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
        let page = html(&resp);
        assert!(page.starts_with("<!doctype html>"), "{path}: {page}");
        assert!(!page.contains("<script>"), "{path} has an inline script");
        assert!(!page.contains(" style="), "{path} has an inline style");
        assert!(!page.contains("<style"), "{path} has a style element");
        // What customers write is shown as text.
        assert!(!page.contains("<script>alert(1)"), "{path}");
    }
}

#[tokio::test]
async fn pages_are_not_part_of_the_api_document() {
    let app = TestApp::spawn().await;
    let doc = app.send(Req::get("/api/openapi.json")).await.body;
    let paths = doc["paths"].as_object().unwrap();
    assert!(
        !paths.keys().any(|p| p.starts_with("/app")),
        "{:?}",
        paths.keys()
    );
    assert!(app
        .state
        .routes()
        .iter()
        .all(|r| !r.path.starts_with("/app")));
}

fn row_is_unread(page: &str, conversation: uuid::Uuid) -> bool {
    let at = page
        .find(&format!("data-conversation=\"{conversation}\""))
        .unwrap_or_else(|| panic!("no row for {conversation}"));
    let tag_end = at + page[at..].find('>').unwrap();
    page[at..tag_end].contains("data-unread")
}

#[tokio::test]
async fn a_conversation_is_unread_for_each_member_until_they_open_it_and_again_when_the_customer_writes(
) {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (token, conversation) = app.visitor_writes(inbox, "Is anyone there?").await;
    let inbox_page = |member: &Member| {
        let req = Req::get("/app").by(member);
        async { html(&app.send(req).await).to_string() }
    };
    assert!(row_is_unread(&inbox_page(&owner).await, conversation));

    let opened = app
        .send(Req::get(format!("/app/conversations/{conversation}")).by(&owner))
        .await;
    assert_eq!(opened.status, StatusCode::OK);
    assert!(!row_is_unread(&inbox_page(&owner).await, conversation));
    // Reading is each member's own.
    assert!(row_is_unread(&inbox_page(&agent).await, conversation));

    let again = app
        .send(
            Req::post(format!("/api/v1/webchat/{inbox}/messages"))
                .header("x-webchat-session", token)
                .json(json!({ "body": "Hello?" })),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert!(row_is_unread(&inbox_page(&owner).await, conversation));
}
