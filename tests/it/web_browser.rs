//! The staff web app in a real browser: Debian's Chromium, headless, driven over WebDriver by
//! its chromedriver (`scripts/install-browser.sh` installs both; a missing browser fails this
//! test, it never skips). The app listens on a real port. One test walks the journeys in turn,
//! so one browser runs at a time on the two cores, and every step waits for a condition on the
//! page, never for a time.
//!
//! With `WRITE_SCREENSHOTS=1` it also writes the screenshots the README shows
//! (`docs/screenshots/`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::http::StatusCode;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use uuid::Uuid;

use crate::common::{fast_worker, fixture, Member, Req, TestApp, PASSWORD};
use crate::fakes::graph::FakeGraph;
use crate::fakes::openai::{FakeOpenAI, FakeReply};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any one condition may take to come true on the page.
const WAIT: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Held by each test that runs a browser, so one runs at a time on the two cores.
pub(crate) static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A chromedriver of our own on a free port, stopped with the test.
pub(crate) struct Driver {
    _child: tokio::process::Child,
    url: String,
}

pub(crate) async fn start_driver() -> Driver {
    for binary in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing: run scripts/install-browser.sh (the browser tests never skip)"
        );
    }
    let port = free_port();
    let child = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    // Ready once it accepts connections.
    crate::common::eventually(20, "chromedriver to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(drop)
    })
    .await;
    Driver { _child: child, url }
}

pub(crate) async fn browser(driver: &Driver, profile: &Path) -> Client {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,860",
        "--lang=en-US",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": CHROMIUM, "args": args }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

/// The app on a real port, with its workers (the live event stream needs the listener).
pub(crate) async fn serve(app: &TestApp) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    let stop = app.state.shutdown.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .unwrap();
    });
    app.start_workers();
    format!("http://{addr}")
}

/// A customer with a name writes on the web chat; returns the conversation.
async fn customer_writes(app: &TestApp, inbox: Uuid, name: &str, text: &str) -> Uuid {
    customer_session_writes(app, inbox, name, text).await.1
}

/// The same, with the customer's session token, to write again.
async fn customer_session_writes(
    app: &TestApp,
    inbox: Uuid,
    name: &str,
    text: &str,
) -> (String, Uuid) {
    let session = app
        .send(Req::post(format!("/api/v1/webchat/{inbox}/sessions")).json(json!({ "name": name })))
        .await;
    assert_eq!(session.status, StatusCode::CREATED, "{}", session.body);
    let token = session.body["session_token"].as_str().unwrap().to_string();
    let sent = app
        .send(
            Req::post(format!("/api/v1/webchat/{inbox}/messages"))
                .header("x-webchat-session", token.clone())
                .json(json!({ "body": text })),
        )
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.body);
    (token, sent.uuid("/conversation_id"))
}

async fn customer_writes_again(app: &TestApp, inbox: Uuid, token: &str, text: &str) -> Uuid {
    let sent = app
        .send(
            Req::post(format!("/api/v1/webchat/{inbox}/messages"))
                .header("x-webchat-session", token)
                .json(json!({ "body": text })),
        )
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.body);
    sent.uuid("/id")
}

pub(crate) async fn fill(client: &Client, id: &str, text: &str) {
    let field = client.find(Locator::Id(id)).await.expect(id);
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

pub(crate) async fn wait_for(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("waiting for {css}: {e}"))
}

pub(crate) async fn sign_in(client: &Client, base: &str, owner: &Member, password: &str) {
    client.goto(&format!("{base}/app/login")).await.unwrap();
    fill(client, "tenant", &owner.slug).await;
    fill(client, "email", &owner.email).await;
    fill(client, "password", password).await;
    client
        .find(Locator::Css("form button.primary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Waits until the element's text satisfies `ok`, finding it again each time (a live refresh
/// may replace it between two looks); returns the text.
async fn text_until(client: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if let Ok(text) = element.text().await {
                if ok(&text) {
                    return text;
                }
                last = text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} never showed the expected text; last: {last}");
}

/// Clicks the element, finding it again if a live refresh replaced it in between.
async fn click(client: &Client, css: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match wait_for(client, css).await.click().await {
            Ok(_) => return,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                    && tokio::time::Instant::now() < deadline => {}
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
}

async fn conversation_status(app: &TestApp, member: &Member, id: Uuid) -> String {
    let resp = app
        .send(Req::get(format!("/api/v1/conversations/{id}")).by(member))
        .await;
    resp.body["conversation"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A tenant's action endpoint that counts the calls it receives.
async fn action_endpoint() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/actions",
        axum::routing::post(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { axum::Json(json!({ "ok": true })) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/actions", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

fn screenshots_dir() -> Option<PathBuf> {
    std::env::var_os("WRITE_SCREENSHOTS")
        .filter(|v| v == "1")
        .map(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots"))
}

async fn screenshot(client: &Client, name: &str) {
    if let Some(dir) = screenshots_dir() {
        std::fs::create_dir_all(&dir).unwrap();
        let png = client.screenshot().await.expect("a screenshot");
        std::fs::write(dir.join(name), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_signs_in_and_works_the_inbox_in_a_real_browser() {
    let _one = ONE_BROWSER.lock().await;
    let graph = FakeGraph::start().await;
    let graph_url = graph.base_url.clone();
    let app = TestApp::spawn_with(|c| fast_worker(c, &graph_url)).await;
    let owner = app.signup("acme").await;
    let reviewer = app.join(&owner, "reviewer").await;
    let (whatsapp, app_secret) = app.whatsapp_inbox(&owner, &graph.token).await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let base = serve(&app).await;
    // One article, so the AI answers one customer and hands the others to people.
    let article = app
        .send(
            Req::post("/api/v1/knowledge/articles")
                .by(&owner)
                .json(json!({
                    "title": "Returns and refunds",
                    "body": "You can return any item within 30 days of delivery for a full refund. \
                             Start a return from the Orders page.",
                })),
        )
        .await;
    assert_eq!(article.status, StatusCode::CREATED, "{}", article.body);
    let article_id = article.uuid("/id");
    crate::common::eventually(30, "the article to be embedded", || async {
        let status = app
            .send(Req::get("/api/v1/knowledge/status").by(&owner))
            .await;
        (status.body["ready"] == 1).then_some(())
    })
    .await;
    let answered = customer_writes(
        &app,
        inbox,
        "Sofia Rossi",
        "How long do I have to return an item?",
    )
    .await;
    let (maria, refund) = customer_session_writes(
        &app,
        inbox,
        "Maria Souza",
        "Hi! I returned my order #4411 last week. When will the refund reach my card?",
    )
    .await;
    let canned = app
        .send(Req::post("/api/v1/canned-replies").by(&owner).json(json!({
            "shortcut": "colours",
            "title": "Other colours",
            "body": "Yes, it also comes in navy blue and forest green.",
        })))
        .await;
    assert_eq!(canned.status, StatusCode::CREATED, "{}", canned.body);
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, profile.path()).await;

    let journeys = async {
        // Unauthenticated, the inbox sends the browser to sign in.
        client.goto(&format!("{base}/app")).await.unwrap();
        wait_for(&client, "form[action='/app/login']").await;
        screenshot(&client, "login.png").await;

        // A wrong password: the form again, with a message, and no way in.
        sign_in(&client, &base, &owner, "certainly not the password").await;
        let error = wait_for(&client, "[data-login-error]").await;
        assert!(error.text().await.unwrap().contains("do not match"));
        assert_eq!(client.current_url().await.unwrap().path(), "/app/login");

        // The right one: the inbox, with the customers' conversations.
        sign_in(&client, &base, &owner, PASSWORD).await;
        wait_for(&client, &format!("[data-conversation='{refund}']")).await;
        // htmx was told not to inject its indicator styles: no style element, nothing for the
        // CSP to refuse.
        let styles = client
            .execute("return document.querySelectorAll('style').length;", vec![])
            .await
            .unwrap();
        assert_eq!(styles, json!(0));
        // The AI's answer shows as the last message of its conversation.
        wait_for(
            &client,
            &format!("[data-conversation='{answered}'] [data-author='AI']"),
        )
        .await;
        text_until(&client, ".conversations", |text| {
            text.contains("Maria Souza") && text.contains("Sofia Rossi")
        })
        .await;

        // A customer writes while the inbox is open: the conversation appears without a reload.
        wait_for(&client, "[data-live-state='open']").await;
        let marker = client
            .execute(
                "document.body.dataset.loadedOnce = 'yes'; return true;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(marker, json!(true));
        let live = customer_writes(
            &app,
            inbox,
            "Jonas Weber",
            "Hello, my package arrived damaged. Can someone help?",
        )
        .await;
        wait_for(&client, &format!("[data-conversation='{live}']")).await;
        wait_for(&client, "[data-count='open']").await;
        let same_page = client
            .execute(
                "return document.body.dataset.loadedOnce || 'reloaded';",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            same_page,
            json!("yes"),
            "the page was reloaded, not updated live"
        );
        text_until(&client, "[data-count='open']", |open| open == "3").await;
        // The inbox's count in the sidebar follows.
        wait_for(&client, "#inbox-nav [data-open='3']").await;

        // A customer writes over WhatsApp (a webhook signed as Meta signs it): live too.
        let webhook = app.webhook(whatsapp, &fixture("text"), &app_secret).await;
        assert_eq!(webhook.status, StatusCode::OK, "{}", webhook.body);
        let on_whatsapp: Uuid = {
            let mut conn = app.superuser().await;
            sqlx::query_scalar(
                "SELECT conversation_id FROM message WHERE provider_message_id LIKE 'wamid.%'",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap()
        };
        // The row may be swapped by a live refresh while it is read: wait for its text.
        text_until(
            &client,
            &format!("[data-conversation='{on_whatsapp}']"),
            |text| text.contains("Sheena Nelson") && text.contains("WhatsApp"),
        )
        .await;
        wait_for(&client, "[data-count='open']").await;
        screenshot(&client, "inbox.png").await;

        // The keyboard: `?` lists the shortcuts, `/` goes to the search.
        let body = client.find(Locator::Css("body")).await.unwrap();
        body.send_keys("?").await.unwrap();
        wait_for(&client, "dialog#shortcuts[open]").await;
        client
            .find(Locator::Css("dialog#shortcuts button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        body.send_keys("/").await.unwrap();
        wait_for(&client, "[data-search]:focus").await;

        // A row opens its thread.
        client
            .find(Locator::Css(&format!("[data-conversation='{refund}']")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for(&client, ".thread").await;
        text_until(&client, ".thread", |thread| {
            thread.contains("When will the refund reach my card?")
        })
        .await;
        // The customer writes again while the thread is open: it appears there, live.
        wait_for(&client, "[data-live-state='open']").await;
        let again = customer_writes_again(
            &app,
            inbox,
            &maria,
            "It was paid with a Visa card ending in 4242, if that helps.",
        )
        .await;
        wait_for(&client, &format!("[data-message='{again}']")).await;
        screenshot(&client, "conversation.png").await;

        // The WhatsApp customer: claim the conversation and answer within the 24 hours (Meta's
        // example message is old; the customer wrote "just now").
        {
            let mut conn = app.superuser().await;
            sqlx::query("UPDATE conversation SET last_inbound_at = now() WHERE id = $1")
                .bind(on_whatsapp)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        client
            .goto(&format!("{base}/app/conversations/{on_whatsapp}"))
            .await
            .unwrap();
        click(&client, "[data-claim]").await;
        wait_for(&client, "[data-assigned-to-me]").await;
        // The answer is a canned reply: "/" and the start of its shortcut, then Tab.
        let answer = "Yes, it also comes in navy blue and forest green.";
        fill(&client, "reply-body", "/col").await;
        wait_for(
            &client,
            "[data-canned-list]:not([hidden]) #canned-colours[aria-selected='true']",
        )
        .await;
        let body = client.find(Locator::Id("reply-body")).await.unwrap();
        body.send_keys("\u{e004}").await.unwrap();
        assert_eq!(
            body.prop("value").await.unwrap().as_deref(),
            Some(answer),
            "the canned reply replaced what was typed"
        );
        wait_for(&client, "[data-canned-list][hidden]").await;
        click(&client, "[data-send-reply]").await;
        wait_for(&client, ".thread li.member").await;
        crate::common::eventually(20, "the reply to reach WhatsApp", || async {
            graph
                .requests()
                .iter()
                .any(|r| r.body["text"]["body"] == answer)
                .then_some(())
        })
        .await;
        // Its delivery state follows live: Graph accepted it.
        wait_for(&client, ".thread li.member [data-delivery='sent']").await;

        // A private note stays with the team: shown as a note, never sent.
        let note = "Customer asked about colours twice; consider a size chart too.";
        fill(&client, "reply-body", note).await;
        click(&client, "[data-send-note]").await;
        wait_for(&client, ".thread li.private").await;
        let sent_to_graph = graph.requests();
        assert!(
            sent_to_graph
                .iter()
                .all(|r| !r.body.to_string().contains("size chart")),
            "a private note reached WhatsApp"
        );

        // A forged form is refused: the page's token is what lets a post through.
        client
            .execute(
                "document.querySelector(\"form[data-snooze-form] input[name='_csrf']\").value = 'forged'; return true;",
                vec![],
            )
            .await
            .unwrap();
        click(&client, "[data-snooze-submit]").await;
        wait_for(&client, ".error-page").await;
        assert_eq!(
            conversation_status(&app, &owner, on_whatsapp).await,
            "open",
            "a forged form changed the conversation"
        );

        // Snooze for an hour, then resolve.
        client
            .goto(&format!("{base}/app/conversations/{on_whatsapp}"))
            .await
            .unwrap();
        click(&client, "[data-snooze-submit]").await;
        wait_for(&client, "[data-status='snoozed']").await;
        click(&client, "[data-resolve]").await;
        wait_for(&client, "[data-status='resolved']").await;
        assert_eq!(
            conversation_status(&app, &owner, on_whatsapp).await,
            "resolved"
        );

        // The knowledge base the AI answered from.
        client.goto(&format!("{base}/app/knowledge")).await.unwrap();
        wait_for(&client, &format!("[data-article='{article_id}']")).await;
        screenshot(&client, "knowledge.png").await;

        // The AI is unsure of an answer: its draft waits for a person, who edits and sends it.
        let model = FakeOpenAI::start().await;
        model.set_default_reply(FakeReply::Json(json!({
            "action": "reply", "reply": "I think the store opens at 9?", "confidence": 0.2,
            "reason_code": "unsure", "cited_sources": [], "action_request": null
        })));
        let settings = app
            .send(
                Req::new(axum::http::Method::PUT, "/api/v1/agent/settings")
                    .by(&owner)
                    .json(json!({ "provider_base_url": model.base_url, "api_key": "sk-test",
                                  "max_retries": 1, "timeout_ms": 3000, "confidence_threshold": 0.7 })),
            )
            .await;
        assert_eq!(settings.status, StatusCode::OK, "{}", settings.body);
        let unsure = customer_writes(
            &app,
            inbox,
            "Ana Lima",
            "When does the store open on Saturday?",
        )
        .await;
        client
            .goto(&format!("{base}/app/conversations/{unsure}"))
            .await
            .unwrap();
        text_until(&client, "[data-draft-text]", |draft| {
            draft == "I think the store opens at 9?"
        })
        .await;
        screenshot(&client, "draft.png").await;
        click(&client, "[data-insert-draft]").await;
        let body = wait_for(&client, "[data-reply-body]:focus").await;
        assert_eq!(
            body.prop("value").await.unwrap().as_deref(),
            Some("I think the store opens at 9?")
        );
        let edited = "On Saturdays the store opens at 10:00 and closes at 16:00.";
        fill(&client, "reply-body", edited).await;
        click(&client, "[data-send-reply]").await;
        text_until(&client, ".thread li.member", |sent| sent.contains(edited)).await;
        let reviews = app
            .send(
                Req::get(format!(
                    "/api/v1/reviews?kind=low_confidence&conversation_id={unsure}"
                ))
                .by(&owner),
            )
            .await;
        assert_eq!(
            reviews.body["items"][0]["status"], "resolved",
            "{}",
            reviews.body
        );
        assert_eq!(reviews.body["items"][0]["result"]["edited"], true);

        // Signing out ends the session: the inbox asks to sign in again.
        client
            .find(Locator::Css("form[action='/app/logout'] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for(&client, "form[action='/app/login']").await;
        client.goto(&format!("{base}/app")).await.unwrap();
        wait_for(&client, "form[action='/app/login']").await;

        // A reviewer reads conversations but does not answer or manage them: no such controls.
        sign_in(&client, &base, &reviewer, PASSWORD).await;
        wait_for(&client, &format!("[data-conversation='{refund}']")).await;
        client
            .goto(&format!("{base}/app/conversations/{refund}"))
            .await
            .unwrap();
        wait_for(&client, "[data-contact-panel]").await;
        for control in [
            "[data-composer]",
            "[data-claim]",
            "[data-resolve]",
            "[data-contact-form]",
        ] {
            let found = client.find_all(Locator::Css(control)).await.unwrap();
            assert!(found.is_empty(), "a reviewer sees {control}");
        }

        // The reviewer works the queue: a refund the owner proposes appears in it live, and
        // the reviewer approves it from its page; the tenant's endpoint is called once.
        let (endpoint, calls) = action_endpoint().await;
        let action = app
            .send(Req::post("/api/v1/agent/actions").by(&owner).json(json!({
                "name": "issue_refund", "description": "Refund an order", "target_url": endpoint,
                "secret": "action-secret", "kind": "refund", "amount_field": "amount",
                "parameters": { "type": "object", "required": ["order_id", "amount"],
                    "properties": { "order_id": { "type": "string" }, "amount": { "type": "number" },
                                    "currency": { "type": "string", "enum": ["EUR", "USD"] } } }
            })))
            .await;
        assert_eq!(action.status, StatusCode::CREATED, "{}", action.body);
        click(&client, "[data-nav='reviews']").await;
        wait_for(&client, "[data-live-state='open']").await;
        let propose = |body: serde_json::Value| {
            let app = &app;
            let owner = &owner;
            async move {
                let resp = app
                    .send(Req::post("/api/v1/reviews").by(owner).json(body))
                    .await;
                assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
                resp.uuid("/id")
            }
        };
        propose(json!({ "kind": "human_review", "conversation_id": unsure,
                        "note": "The customer says the opening hours we gave are wrong" }))
        .await;
        let item = propose(json!({
            "kind": "action", "conversation_id": refund, "action_id": action.uuid("/id"),
            "arguments": { "order_id": "4411", "amount": 59.9, "currency": "EUR" },
            "note": "Returned parcel arrived at the warehouse"
        }))
        .await;
        let row = format!("[data-review='{item}'] [data-row]");
        text_until(&client, &row, |s| s.contains("issue_refund")).await;
        // The tab's count follows the queue, the earlier journeys' drafts included.
        let pending = app
            .send(Req::get("/api/v1/reviews/counts").by(&owner))
            .await
            .body["by_status"]["pending"]
            .to_string();
        text_until(&client, "[data-count='pending']", |n| n == pending).await;
        screenshot(&client, "reviews.png").await;
        click(&client, &row).await;
        text_until(&client, "[data-amount]", |a| a == "59.90 EUR").await;
        screenshot(&client, "review.png").await;
        click(&client, "[data-approve]").await;
        wait_for(&client, "[data-decision]").await;
        crate::common::eventually(20, "the approved refund to be executed once", || async {
            (calls.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
        })
        .await;
    };
    let outcome = tokio::time::timeout(Duration::from_secs(300), journeys).await;
    // The browser goes whatever happened, so no Chromium outlives the test.
    client.close().await.ok();
    outcome.expect("the journeys finished in time");
}

// proves: AUD-3, AUD-4
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_verifies_the_chain_filters_the_log_and_downloads_an_export_in_a_real_browser() {
    let _one = ONE_BROWSER.lock().await;
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let auditor = app.join(&owner, "auditor").await;
    for subject in ["Broken zip", "Late parcel"] {
        let resp = app
            .send(
                Req::post("/api/v1/tickets")
                    .by(&owner)
                    .json(json!({ "subject": subject })),
            )
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    }
    let base = serve(&app).await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, profile.path()).await;

    let journey = async {
        sign_in(&client, &base, &auditor, PASSWORD).await;
        click(&client, "a[data-nav='audit']").await;
        wait_for(&client, "[data-audit-entries]").await;
        // htmx swaps the verification in, the page stays.
        click(&client, "[data-verify]").await;
        text_until(&client, "[data-chain='ok']", |t| {
            t.contains("The chain holds")
        })
        .await;

        fill(&client, "action", "ticket.*").await;
        click(&client, "[data-filter]").await;
        wait_for(&client, "[data-audit-entries]").await;
        let listed = client
            .find_all(Locator::Css("[data-entry-action]"))
            .await
            .unwrap();
        assert_eq!(listed.len(), 2);
        for entry in listed {
            assert_eq!(entry.text().await.unwrap(), "ticket.created");
        }
        screenshot(&client, "audit.png").await;

        // The export holds the filter; its page follows the job until the file is there.
        click(&client, "[data-export]").await;
        let download = wait_for(&client, "[data-download]").await;
        let href = download.attr("href").await.unwrap().unwrap();
        text_until(&client, "#export-progress [data-status]", |s| s == "done").await;
        // `…/exports/{id}/download`, relative or made absolute by the browser.
        let export_id: Uuid = href.rsplit('/').nth(1).unwrap().parse().unwrap();
        let export = app
            .send(Req::get(format!("/api/v1/audit/exports/{export_id}")).by(&owner))
            .await;
        assert_eq!(export.body["filters"]["action_prefix"], "ticket.");
        assert_eq!(export.body["rows_done"], 2);
    };
    let outcome = tokio::time::timeout(Duration::from_secs(120), journey).await;
    client.close().await.ok();
    outcome.expect("the journey finished in time");
}

// Part of CS-1 (the account's timeline, a ticket from a conversation, a task assigned, in the browser).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_makes_a_ticket_from_a_conversation_then_opens_the_account_and_assigns_a_task_in_a_real_browser(
) {
    let _one = ONE_BROWSER.lock().await;
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let colleague = app.join(&owner, "agent").await;
    let account = app
        .send(
            Req::post("/api/v1/accounts")
                .by(&owner)
                .json(json!({ "name": "Initech", "domain": "initech.example" })),
        )
        .await
        .uuid("/id");
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let conversation = customer_writes(
        &app,
        inbox,
        "Peter Gibbons",
        "My red stapler never came back",
    )
    .await;
    let contact = app
        .send(Req::get(format!("/api/v1/conversations/{conversation}")).by(&owner))
        .await
        .uuid("/conversation/contact_id");
    let linked = app
        .send(
            Req::patch(format!("/api/v1/contacts/{contact}"))
                .by(&owner)
                .json(json!({ "account_id": account })),
        )
        .await;
    assert_eq!(linked.status, StatusCode::OK, "{}", linked.body);
    let base = serve(&app).await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, profile.path()).await;

    let journey = async {
        sign_in(&client, &base, &agent, PASSWORD).await;
        wait_for(&client, "a[data-nav='accounts']").await;
        // A ticket from the conversation's side panel: the customer asks, the ticket follows.
        client
            .goto(&format!("{base}/app/conversations/{conversation}"))
            .await
            .unwrap();
        fill(&client, "ticket-subject", "Red stapler missing").await;
        click(&client, "[data-create-ticket] button[type='submit']").await;
        text_until(&client, "[data-subject]", |s| s == "Red stapler missing").await;

        // The account: its person, and the conversation and the ticket on its timeline.
        click(&client, "a[data-nav='accounts']").await;
        click(&client, "[data-account-row]").await;
        text_until(&client, "[data-account-name]", |s| s == "Initech").await;
        text_until(&client, "[data-people]", |s| s.contains("Peter Gibbons")).await;
        text_until(&client, "[data-timeline]", |s| {
            s.contains("Ticket opened: Red stapler missing")
                && s.contains("Conversation with Peter Gibbons on web chat")
        })
        .await;

        // A task for a colleague, from the account's page: it joins the timeline.
        fill(&client, "task-title", "Bring the stapler back").await;
        client
            .find(Locator::Id("task-assignee"))
            .await
            .unwrap()
            .select_by_value(&colleague.member_id.to_string())
            .await
            .unwrap();
        click(&client, "[data-new-task] button[type='submit']").await;
        text_until(&client, "[data-timeline]", |s| {
            s.contains("Task: Bring the stapler back")
        })
        .await;
        screenshot(&client, "account.png").await;
    };
    let outcome = tokio::time::timeout(Duration::from_secs(120), journey).await;
    client.close().await.ok();
    outcome.expect("the journey finished in time");

    let tasks = app
        .send(Req::get(format!("/api/v1/tasks?account_id={account}")).by(&owner))
        .await;
    let task = &tasks.body["items"][0];
    assert_eq!(task["title"], "Bring the stapler back", "{}", tasks.body);
    assert_eq!(task["assignee_id"], colleague.member_id.to_string());
    let tickets = app
        .send(Req::get(format!("/api/v1/tickets?account_id={account}")).by(&owner))
        .await;
    assert_eq!(
        tickets.body["items"][0]["requester_id"],
        contact.to_string()
    );
}

/// The deal journey on its own browser: a member opens the board, creates a deal there, moves
/// it through the stages with each card's select and Move button (the no-script fallback of
/// dragging), marks it won on its page and sees it won.
// Part of CS-1 (deals with pipeline stages, in the browser).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_moves_a_deal_through_the_board_to_won_in_a_real_browser() {
    let _one = ONE_BROWSER.lock().await;
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let base = serve(&app).await;
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, profile.path()).await;

    let journey = async {
        sign_in(&client, &base, &agent, PASSWORD).await;
        wait_for(&client, "[data-member-name]").await;
        click(&client, "a[href='/app/deals/board']").await;
        wait_for(&client, "[data-board] [data-stage]").await;
        fill(&client, "new-name", "Globex renewal").await;
        fill(&client, "new-value", "12,500").await;
        click(&client, "[data-new-deal] button[type='submit']").await;
        let card = wait_for(&client, "[data-deal]").await;
        let id = card
            .attr("data-deal")
            .await
            .unwrap()
            .expect("the card's id");
        let card_css = format!("[data-deal='{id}']");
        text_until(&client, &format!("{card_css} [data-deal-value]"), |v| {
            v == "EUR 12,500.00"
        })
        .await;

        let pipeline = app.send(Req::get("/api/v1/pipelines").by(&agent)).await;
        let stages = pipeline.body[0]["stages"].as_array().unwrap().clone();
        // Lead is where it starts; each move lands the card in the next column.
        for stage in &stages[1..] {
            let stage_id = stage["id"].as_str().unwrap();
            let select = wait_for(&client, &format!("{card_css} select")).await;
            select.select_by_value(stage_id).await.unwrap();
            click(&client, &format!("{card_css} [data-move] button")).await;
            wait_for(
                &client,
                &format!("[data-stage='{stage_id}'] [data-deal='{id}']"),
            )
            .await;
        }
        screenshot(&client, "deals.png").await;
        click(&client, &format!("{card_css} [data-deal-name]")).await;
        click(&client, "[data-won-form] button").await;
        text_until(&client, "[data-status]", |s| s == "Won").await;
        wait_for(&client, "[data-won]").await;
        let entries = client
            .find_all(Locator::Css("[data-history-entry]"))
            .await
            .unwrap();
        assert_eq!(entries.len(), stages.len(), "one entry per stage entered");
        let shown = app
            .send(Req::get(format!("/api/v1/deals/{id}")).by(&agent))
            .await;
        assert_eq!(shown.body["status"], "won");
        assert_eq!(shown.body["stage_name"], stages.last().unwrap()["name"]);
    };
    let outcome = tokio::time::timeout(Duration::from_secs(120), journey).await;
    client.close().await.ok();
    outcome.expect("the journey finished in time");
}
