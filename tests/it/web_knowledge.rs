//! The knowledge base pages in-process, through the same router as the API: the list with its
//! search, status filter and embedding progress; creating, editing, previewing and deleting an
//! article with the page's CSRF token; the same permissions and audit events as the API; and
//! Markdown that cannot carry a script.

use axum::http::{header, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::common::{fast_worker, Member, Req, Resp, TestApp};
use crate::web::{csrf_field, form, html, page_token};

/// An article created through the API (the same domain function as the page).
async fn api_article(
    app: &TestApp,
    member: &Member,
    title: &str,
    body: &str,
    status: &str,
) -> Uuid {
    let created = app
        .send(
            Req::post("/api/v1/knowledge/articles")
                .by(member)
                .json(json!({ "title": title, "body": body, "status": status })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.uuid("/id")
}

fn post(path: impl Into<String>, member: &Member, fields: &[(&str, &str)]) -> Req {
    Req::post(path)
        .by(member)
        .raw("application/x-www-form-urlencoded", form(fields))
}

fn location(resp: &Resp) -> String {
    resp.headers[header::LOCATION].to_str().unwrap().to_string()
}

async fn articles(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM knowledge_article").await
}

// proves: AUD-1
#[tokio::test]
async fn an_editor_creates_edits_and_deletes_an_article_through_the_pages_each_audited() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let new_page = app.send(Req::get("/app/knowledge/new").by(&owner)).await;
    assert_eq!(new_page.status, StatusCode::OK, "{}", new_page.body);
    let token = csrf_field(html(&new_page));

    // Without the page's token nothing is created.
    let forged = app
        .send(post(
            "/app/knowledge",
            &owner,
            &[("_csrf", "forged"), ("title", "Returns"), ("body", "x")],
        ))
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(articles(&app).await, 0);

    let created = app
        .send(post(
            "/app/knowledge",
            &owner,
            &[
                ("_csrf", &token),
                ("title", "  Returns policy "),
                ("body", "You have **30 days**\r\nto return an item."),
                ("tags", "Returns, policy"),
                ("status", "published"),
                ("intent", "save"),
            ],
        ))
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let at = location(&created);
    let id: Uuid = at
        .strip_prefix("/app/knowledge/")
        .and_then(|rest| rest.strip_suffix("?saved=1"))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("went to {at}"));
    let shown = app.send(Req::get(&at).by(&owner)).await;
    assert_eq!(shown.status, StatusCode::OK);
    let page = html(&shown);
    assert!(page.contains("data-notice=\"success\""), "{page}");
    assert!(page.contains("value=\"Returns policy\""));
    assert!(page.contains("data-embedding=\"pending\""));
    assert!(page.contains("<strong>30 days</strong>"), "the preview");
    let stored = app
        .send(Req::get(format!("/api/v1/knowledge/articles/{id}")).by(&owner))
        .await;
    assert_eq!(stored.body["title"], "Returns policy");
    assert_eq!(
        stored.body["body"],
        "You have **30 days**\nto return an item."
    );
    assert_eq!(stored.body["tags"], json!(["policy", "returns"]));
    let created_events = app
        .audit_events(owner.tenant_id, "knowledge.article_created")
        .await;
    assert_eq!(created_events.len(), 1);
    assert_eq!(created_events[0]["entity_id"], id.to_string());
    assert_eq!(created_events[0]["actor_id"], owner.member_id.to_string());

    let edited = app
        .send(post(
            format!("/app/knowledge/{id}"),
            &owner,
            &[
                ("_csrf", &token),
                ("revision", "1"),
                ("title", "Returns and refunds"),
                ("body", "Sixty days now."),
                ("tags", "returns"),
                ("status", "draft"),
            ],
        ))
        .await;
    assert_eq!(edited.status, StatusCode::SEE_OTHER, "{}", edited.body);
    let stored = app
        .send(Req::get(format!("/api/v1/knowledge/articles/{id}")).by(&owner))
        .await;
    assert_eq!(stored.body["title"], "Returns and refunds");
    assert_eq!(stored.body["status"], "draft");
    assert_eq!(stored.body["revision"], 2);
    let updated_events = app
        .audit_events(owner.tenant_id, "knowledge.article_updated")
        .await;
    assert_eq!(updated_events.len(), 1);
    assert_eq!(updated_events[0]["before"]["title"], "Returns policy");
    assert_eq!(updated_events[0]["after"]["title"], "Returns and refunds");

    // Deleting asks first, with a form (no script), then deletes.
    let confirm = app
        .send(Req::get(format!("/app/knowledge/{id}/delete")).by(&owner))
        .await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(html(&confirm).contains(&format!(
        "<form method=\"post\" action=\"/app/knowledge/{id}/delete\""
    )));
    assert!(html(&confirm).contains("Returns and refunds"));
    assert_eq!(articles(&app).await, 1, "asking deleted it");
    let deleted = app
        .send(post(
            format!("/app/knowledge/{id}/delete"),
            &owner,
            &[("_csrf", &token)],
        ))
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER, "{}", deleted.body);
    assert_eq!(location(&deleted), "/app/knowledge?deleted=1");
    assert_eq!(articles(&app).await, 0);
    let gone = app
        .send(Req::get(format!("/app/knowledge/{id}")).by(&owner))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let deleted_events = app
        .audit_events(owner.tenant_id, "knowledge.article_deleted")
        .await;
    assert_eq!(deleted_events.len(), 1);
    assert_eq!(deleted_events[0]["before"]["title"], "Returns and refunds");
    let list = app
        .send(Req::get("/app/knowledge?deleted=1").by(&owner))
        .await;
    assert!(html(&list).contains("The article is deleted."));
}

#[tokio::test]
async fn a_refused_article_shows_the_form_again_with_the_reason_and_the_text_kept() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let token = page_token(&app, &owner).await;
    let long_title = "t".repeat(301);
    for (title, reason) in [
        ("   ", "Title must be 1 to 300 characters."),
        (long_title.as_str(), "Title must be 1 to 300 characters."),
    ] {
        let resp = app
            .send(post(
                "/app/knowledge",
                &owner,
                &[
                    ("_csrf", &token),
                    ("title", title),
                    ("body", "My carefully written <answer>"),
                    ("status", "published"),
                ],
            ))
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.body);
        let page = html(&resp);
        assert!(page.contains(reason), "{page}");
        assert!(page.contains("data-notice=\"error\""));
        assert!(page.contains("My carefully written &#60;answer&#62;</textarea>"));
    }
    let bad_status = app
        .send(post(
            "/app/knowledge",
            &owner,
            &[("_csrf", &token), ("title", "Ok"), ("status", "deleted")],
        ))
        .await;
    assert_eq!(bad_status.status, StatusCode::BAD_REQUEST);
    assert!(html(&bad_status).contains("Status must be draft, published or archived."));
    assert_eq!(articles(&app).await, 0);
    assert!(app
        .audit_events(owner.tenant_id, "knowledge.article_created")
        .await
        .is_empty());

    // An edit of a revision someone else has changed since is refused, the text kept, and the
    // form now carries the stored revision, so saving again is deliberate.
    let id = api_article(&app, &owner, "Shipping", "Two days.", "published").await;
    let other = app
        .send(
            Req::patch(format!("/api/v1/knowledge/articles/{id}"))
                .by(&owner)
                .json(json!({ "body": "Three days." })),
        )
        .await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    let stale = app
        .send(post(
            format!("/app/knowledge/{id}"),
            &owner,
            &[
                ("_csrf", &token),
                ("revision", "1"),
                ("title", "Shipping"),
                ("body", "One day, my version."),
                ("status", "published"),
            ],
        ))
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    let page = html(&stale);
    assert!(page.contains("Someone else changed this article"));
    assert!(page.contains("One day, my version.</textarea>"));
    assert!(page.contains("name=\"revision\" value=\"2\""), "{page}");
    let stored = app
        .send(Req::get(format!("/api/v1/knowledge/articles/{id}")).by(&owner))
        .await;
    assert_eq!(stored.body["body"], "Three days.");
    let again = app
        .send(post(
            format!("/app/knowledge/{id}"),
            &owner,
            &[
                ("_csrf", &token),
                ("revision", "2"),
                ("title", "Shipping"),
                ("body", "One day, my version."),
                ("status", "published"),
            ],
        ))
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
}

#[tokio::test]
async fn the_list_searches_titles_and_text_and_filters_by_status() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let returns = api_article(
        &app,
        &owner,
        "Returns",
        "Thirty days to return.",
        "published",
    )
    .await;
    let shipping = api_article(&app, &owner, "Shipping", "We ship to Portugal.", "draft").await;
    let old = api_article(&app, &owner, "Old prices", "Obsolete.", "archived").await;
    let listed = |query: &'static str| {
        let req = Req::get(format!("/app/knowledge{query}")).by(&owner);
        let app = &app;
        async move {
            let resp = app.send(req).await;
            assert_eq!(resp.status, StatusCode::OK, "{query}: {}", resp.body);
            html(&resp).to_string()
        }
    };
    let row = |id: Uuid| format!("data-article=\"{id}\"");

    let all = listed("").await;
    for id in [returns, shipping, old] {
        assert!(all.contains(&row(id)), "{all}");
    }
    assert!(all.contains("data-status=\"draft\""));
    assert!(all.contains("data-embedding=\"pending\""));
    assert!(all.contains("aria-current=\"page\">Knowledge<"), "the nav");

    let by_text = listed("?q=portugal").await;
    assert!(by_text.contains(&row(shipping)));
    assert!(!by_text.contains(&row(returns)));
    let by_title = listed("?q=RETURN").await;
    assert!(by_title.contains(&row(returns)));
    assert!(!by_title.contains(&row(shipping)));
    assert!(by_title.contains("value=\"RETURN\""), "the search is kept");

    let archived = listed("?status=archived").await;
    assert!(archived.contains(&row(old)));
    assert!(!archived.contains(&row(returns)));
    assert!(listed("?q=nothing-like-this")
        .await
        .contains("No articles match"));

    for query in ["status=deleted", "after=not-an-id", "q=%00"] {
        let resp = app
            .send(Req::get(format!("/app/knowledge?{query}")).by(&owner))
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(html(&resp).contains("<html"));
    }
}

#[tokio::test]
async fn the_list_polls_for_embedding_progress_only_while_an_article_is_pending() {
    let app = TestApp::spawn_with(|c| fast_worker(c, "http://127.0.0.1:9")).await;
    let owner = app.signup("acme").await;
    let empty = html(&app.send(Req::get("/app/knowledge").by(&owner)).await).to_string();
    assert!(
        !empty.contains("hx-trigger"),
        "nothing to wait for: {empty}"
    );
    assert!(empty.contains("No articles yet."));

    api_article(
        &app,
        &owner,
        "Returns",
        "Thirty days to return.",
        "published",
    )
    .await;
    let pending = html(&app.send(Req::get("/app/knowledge").by(&owner)).await).to_string();
    assert!(pending.contains("hx-trigger=\"every 3s\""), "{pending}");
    assert!(pending.contains("hx-select=\"#knowledge-live\""));
    assert!(pending.contains("data-count=\"pending\">1<"));
    assert!(pending.contains("Embedding: 0 of 1 articles done."));

    app.start_workers();
    app.settled(
        "SELECT count(*) FROM knowledge_article WHERE embedding_status = 'ready'",
        1,
    )
    .await;
    let ready = html(&app.send(Req::get("/app/knowledge").by(&owner)).await).to_string();
    assert!(!ready.contains("hx-trigger"), "still polling: {ready}");
    assert!(ready.contains("data-count=\"ready\">1<"));
    assert!(ready.contains("data-embedding=\"ready\""));
    assert!(ready.contains("Every article is embedded."));
}

// proves: SEC-8
#[tokio::test]
async fn markdown_with_a_script_or_a_javascript_link_comes_out_inert() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let token = page_token(&app, &owner).await;
    let body = "Hello <script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n\
                [click me](javascript:alert(3)) and <javascript:alert(4)> and \
                [fine](https://example.com/help)\n\n| a | b |\n|:-:|--:|\n| 1 | 2 |";
    let check = |page: &str| {
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(!page.contains("href=\"javascript:"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(page.contains("<a href=\"https://example.com/help\">fine</a>"));
        assert!(!page.contains(" style="), "an inline style: {page}");
    };

    // The preview htmx asks for.
    let preview = app
        .send(
            post(
                "/app/knowledge/preview",
                &owner,
                &[("_csrf", &token), ("body", body)],
            )
            .header("hx-request", "true"),
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert!(html(&preview).starts_with("<div id=\"preview\""));
    check(html(&preview));
    // The preview without JavaScript: the form again, nothing saved.
    let no_js = app
        .send(post(
            "/app/knowledge",
            &owner,
            &[
                ("_csrf", &token),
                ("title", "Help"),
                ("body", body),
                ("intent", "preview"),
            ],
        ))
        .await;
    assert_eq!(no_js.status, StatusCode::OK);
    check(html(&no_js));
    assert_eq!(articles(&app).await, 0, "a preview saved the article");

    // The saved article, to its editor and to a reader.
    let id = api_article(&app, &owner, "Help", body, "published").await;
    for member in [&owner, &agent] {
        let shown = app
            .send(Req::get(format!("/app/knowledge/{id}")).by(member))
            .await;
        assert_eq!(shown.status, StatusCode::OK);
        check(html(&shown));
        let csp = shown.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    }
}

// proves: SEC-1, SEC-2
#[tokio::test]
async fn a_role_without_knowledge_manage_sees_no_edit_controls_and_is_refused_the_posts() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let id = api_article(&app, &owner, "Returns", "Thirty **days**.", "published").await;
    let owners_list = html(&app.send(Req::get("/app/knowledge").by(&owner)).await).to_string();
    assert!(owners_list.contains("data-new-article"));

    let list = app.send(Req::get("/app/knowledge").by(&agent)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(html(&list).contains(&format!("data-article=\"{id}\"")));
    assert!(!html(&list).contains("data-new-article"));
    let shown = app
        .send(Req::get(format!("/app/knowledge/{id}")).by(&agent))
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    let page = html(&shown);
    assert!(
        page.contains("<strong>days</strong>"),
        "the article is readable"
    );
    for control in ["data-article-form", "data-delete", "data-save", "<textarea"] {
        assert!(!page.contains(control), "{control} shown to an agent");
    }

    let token = csrf_field(page);
    for (path, fields) in [
        ("/app/knowledge".to_string(), vec![("title", "Mine")]),
        (
            format!("/app/knowledge/{id}"),
            vec![("title", "Changed"), ("revision", "1")],
        ),
        (format!("/app/knowledge/{id}/delete"), vec![]),
        ("/app/knowledge/preview".to_string(), vec![("body", "x")]),
    ] {
        let mut fields = fields;
        fields.push(("_csrf", &token));
        let resp = app.send(post(&path, &agent, &fields)).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{path}: {}", resp.body);
        assert!(html(&resp).contains("Not allowed"));
    }
    for path in [
        "/app/knowledge/new".to_string(),
        format!("/app/knowledge/{id}/delete"),
    ] {
        let resp = app.send(Req::get(&path).by(&agent)).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{path}");
    }
    let stored = app
        .send(Req::get(format!("/api/v1/knowledge/articles/{id}")).by(&owner))
        .await;
    assert_eq!(stored.body["title"], "Returns");
    assert_eq!(articles(&app).await, 1);
}

// proves: SEC-3
#[tokio::test]
async fn another_tenants_article_is_not_found_on_any_knowledge_page_and_is_left_alone() {
    let app = TestApp::spawn().await;
    let a = app.signup("alpha").await;
    let b = app.signup("bravo").await;
    let theirs = api_article(&app, &b, "Bravo's secret pricing", "Secret.", "published").await;
    let token = page_token(&app, &a).await;
    for req in [
        Req::get(format!("/app/knowledge/{theirs}")).by(&a),
        Req::get(format!("/app/knowledge/{theirs}/delete")).by(&a),
        post(
            format!("/app/knowledge/{theirs}"),
            &a,
            &[("_csrf", &token), ("title", "Taken"), ("revision", "1")],
        ),
        post(
            format!("/app/knowledge/{theirs}/delete"),
            &a,
            &[("_csrf", &token)],
        ),
    ] {
        let resp = app.send(req).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.body);
        assert!(!html(&resp).contains("secret pricing"));
    }
    let list = app.send(Req::get("/app/knowledge").by(&a)).await;
    assert!(!html(&list).contains("secret pricing"));
    let stored = app
        .send(Req::get(format!("/api/v1/knowledge/articles/{theirs}")).by(&b))
        .await;
    assert_eq!(stored.body["title"], "Bravo's secret pricing");
    assert_eq!(stored.body["revision"], 1);
}
