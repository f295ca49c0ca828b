//! The knowledge base behind the agent: vectors per embedding model, re-embedding when the
//! tenant's embedder changes or an article is edited, vectors gone with their article,
//! progress while it happens, and search confined to the tenant and to the current model.

use std::collections::HashSet;

use axum::http::{Method, StatusCode};
use custodian::knowledge::embed::{embed_local, LOCAL_MODEL};
use custodian::queue::Job;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{eventually, fast_worker, Member, Req, TestApp};
use crate::fakes::openai::FakeOpenAI;

/// Runs the queued `knowledge.embed` jobs (fan-outs and the jobs they enqueue) until none is
/// left, as the worker would, so a test sees each stage.
async fn drain_embedding(app: &TestApp) {
    let mut done: HashSet<Uuid> = HashSet::new();
    loop {
        let mut conn = app.superuser().await;
        let jobs: Vec<(Uuid, Uuid, Value)> = sqlx::query_as(
            "SELECT id, tenant_id, payload FROM job WHERE kind = 'knowledge.embed' AND status = 'queued' ORDER BY created_at",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let fresh: Vec<_> = jobs
            .into_iter()
            .filter(|(id, ..)| !done.contains(id))
            .collect();
        if fresh.is_empty() {
            return;
        }
        for (id, tenant_id, payload) in fresh {
            let job = Job {
                id,
                tenant_id,
                kind: "knowledge.embed".into(),
                payload,
                attempts: 1,
                max_attempts: 8,
            };
            let outcome = custodian::knowledge::run_embed_job(&app.state.knowledge, &job).await;
            assert!(
                matches!(outcome, custodian::queue::Outcome::Done),
                "{outcome:?}"
            );
            sqlx::query("UPDATE job SET status = 'done', finished_at = now() WHERE id = $1")
                .bind(id)
                .execute(&mut conn)
                .await
                .unwrap();
            done.insert(id);
        }
    }
}

async fn status(app: &TestApp, owner: &Member) -> Value {
    app.send(Req::get("/api/v1/knowledge/status").by(owner))
        .await
        .body
}

async fn article(app: &TestApp, owner: &Member, title: &str, body: &str) -> Uuid {
    let created = app
        .send(
            Req::post("/api/v1/knowledge/articles")
                .by(owner)
                .json(json!({ "title": title, "body": body })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.uuid("/id")
}

async fn chunk_models(app: &TestApp) -> Vec<(String, i32)> {
    let mut conn = app.superuser().await;
    sqlx::query_as("SELECT DISTINCT model, dims FROM knowledge_chunk ORDER BY model")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

async fn settings(app: &TestApp, owner: &Member, body: Value) {
    let put = app
        .send(
            Req::new(Method::PUT, "/api/v1/agent/settings")
                .by(owner)
                .json(body),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
}

#[tokio::test]
async fn switching_from_offline_to_a_provider_re_embeds_and_search_reads_only_the_new_vectors() {
    let app = TestApp::spawn_with(|c| fast_worker(c, "http://127.0.0.1:9")).await;
    let owner = app.signup("acme").await;
    article(
        &app,
        &owner,
        "Returns",
        "You can return any item within 30 days of delivery.",
    )
    .await;
    article(
        &app,
        &owner,
        "Shipping",
        "Orders leave our warehouse within two business days.",
    )
    .await;
    drain_embedding(&app).await;
    assert_eq!(chunk_models(&app).await, [(LOCAL_MODEL.to_string(), 384)]);

    let model = FakeOpenAI::start().await;
    model.set_embedding_dimension(384);
    settings(&app, &owner, json!({ "provider_base_url": model.base_url })).await;

    // Every article is waiting to be embedded again, at once.
    let pending = status(&app, &owner).await;
    assert_eq!(pending["pending"], 2, "{pending}");
    assert_eq!(pending["progress"], 0.0);
    assert_eq!(pending["model"], "text-embedding-3-small");
    assert_eq!(pending["chunks"], 0, "{pending}");
    assert!(pending["stale_chunks"].as_i64().unwrap() >= 2);

    drain_embedding(&app).await;

    let ready = status(&app, &owner).await;
    assert_eq!(ready["ready"], 2, "{ready}");
    assert_eq!(ready["stale_chunks"], 0);
    assert_eq!(
        chunk_models(&app).await,
        [("text-embedding-3-small".to_string(), 384)]
    );
    // The passages went to the provider, without `dimensions` (none is configured).
    let embedded = model.embedding_requests();
    assert_eq!(embedded.len(), 2, "one call per article");
    assert!(embedded.iter().all(|r| r.body.get("dimensions").is_none()));

    // A vector of the old model left behind (same size, a perfect match for the query under
    // the old model) is never compared with the new model's query.
    let query = "How many days do I have to return an item?";
    let mut conn = app.superuser().await;
    let stale = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO knowledge_chunk (id, tenant_id, article_id, ordinal, content, dims, embedding, model)
         SELECT $1, tenant_id, id, 99, 'stale passage', 384, $2, $3 FROM knowledge_article LIMIT 1",
    )
    .bind(stale)
    .bind(pgvector::Vector::from(embed_local(query)))
    .bind(LOCAL_MODEL)
    .execute(&mut conn)
    .await
    .unwrap();
    let found = app
        .send(
            Req::post("/api/v1/knowledge/search")
                .by(&owner)
                .json(json!({ "query": query, "limit": 50 })),
        )
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.body["embedder"], "text-embedding-3-small");
    let hits = found.body["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits.iter().all(|h| h["chunk_id"] != stale.to_string()));

    // Explicit dimensions are a new embedder too: sent, and everything embedded again.
    let before = model.embedding_requests().len();
    settings(&app, &owner, json!({ "embedding_dims": 768 })).await;
    model.set_embedding_dimension(8); // would be wrong, were `dimensions` not sent
    drain_embedding(&app).await;
    let after = model.embedding_requests();
    assert_eq!(after.len(), before + 2);
    assert!(
        after[before..].iter().all(|r| r.body["dimensions"] == 768),
        "{:?}",
        after.last().map(|r| &r.body)
    );
    assert!(chunk_models(&app)
        .await
        .contains(&("text-embedding-3-small".to_string(), 768)));
    assert_eq!(status(&app, &owner).await["ready"], 2);
}

#[tokio::test]
async fn vectors_of_a_size_without_an_index_fail_the_article_with_a_clear_message() {
    let app = TestApp::spawn_with(|c| fast_worker(c, "http://127.0.0.1:9")).await;
    let owner = app.signup("acme").await;
    let model = FakeOpenAI::start().await;
    model.set_embedding_dimension(12);
    settings(&app, &owner, json!({ "provider_base_url": model.base_url })).await;
    let id = article(&app, &owner, "Returns", "Return any item within 30 days.").await;
    let mut conn = app.superuser().await;
    let (tenant_id, payload): (Uuid, Value) =
        sqlx::query_as("SELECT tenant_id, payload FROM job WHERE kind = 'knowledge.embed'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let job = Job {
        id: Uuid::now_v7(),
        tenant_id,
        kind: "knowledge.embed".into(),
        payload,
        attempts: 1,
        max_attempts: 8,
    };
    let outcome = custodian::knowledge::run_embed_job(&app.state.knowledge, &job).await;
    assert!(
        matches!(outcome, custodian::queue::Outcome::Fail { .. }),
        "{outcome:?}"
    );
    let shown = app
        .send(Req::get(format!("/api/v1/knowledge/articles/{id}")).by(&owner))
        .await;
    assert_eq!(shown.body["embedding_status"], "failed");
    assert!(
        shown.body["embedding_error"]
            .as_str()
            .unwrap()
            .contains("embedding_dims"),
        "{}",
        shown.body
    );
    // A query of that size finds nothing, rather than failing (a run goes on without knowledge).
    let found = app
        .send(
            Req::post("/api/v1/knowledge/search")
                .by(&owner)
                .json(json!({ "query": "returns" })),
        )
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.body["hits"], json!([]));
}

#[tokio::test]
async fn an_edited_article_is_embedded_again_and_a_deleted_one_takes_its_vectors_along() {
    let app = TestApp::spawn_with(|c| fast_worker(c, "http://127.0.0.1:9")).await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let id = article(
        &app,
        &owner,
        "Returns",
        "You can return any item within 30 days.",
    )
    .await;
    let keep = article(&app, &owner, "Shipping", "Orders ship within two days.").await;
    let ready = |n: i64| {
        let app = &app;
        let owner = &owner;
        async move {
            eventually(20, "the articles to be embedded", || async {
                (status(app, owner).await["ready"] == n).then_some(())
            })
            .await
        }
    };
    ready(2).await;
    let contents = || async {
        let mut conn = app.superuser().await;
        sqlx::query_scalar::<_, String>(
            "SELECT content FROM knowledge_chunk WHERE article_id = $1 ORDER BY ordinal",
        )
        .bind(id)
        .fetch_all(&mut conn)
        .await
        .unwrap()
    };
    assert!(contents().await.concat().contains("30 days"));

    let edited = app
        .send(
            Req::patch(format!("/api/v1/knowledge/articles/{id}"))
                .by(&owner)
                .json(json!({ "body": "Returns are accepted within 60 days now." })),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(edited.body["embedding_status"], "pending");
    eventually(20, "the edit to be embedded", || async {
        let text = contents().await.concat();
        (text.contains("60 days") && !text.contains("30 days")).then_some(())
    })
    .await;
    ready(2).await;

    let deleted = app
        .send(Req::delete(format!("/api/v1/knowledge/articles/{id}")).by(&owner))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(contents().await.is_empty());
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM knowledge_chunk WHERE article_id = '{keep}'"
        ))
        .await,
        1
    );
    assert_eq!(status(&app, &owner).await["articles"], 1);
}

#[tokio::test]
async fn a_large_import_shows_its_progress_until_every_article_is_embedded() {
    let app = TestApp::spawn_with(|c| fast_worker(c, "http://127.0.0.1:9")).await;
    let owner = app.signup("acme").await;
    let articles: Vec<Value> = (0..25)
        .map(|i| json!({ "title": format!("Topic {i}"), "body": format!("Everything about topic number {i}.") }))
        .collect();
    let imported = app
        .send(
            Req::post("/api/v1/knowledge/articles/bulk")
                .by(&owner)
                .json(json!({ "articles": articles })),
        )
        .await;
    assert_eq!(imported.status, StatusCode::ACCEPTED, "{}", imported.body);

    let before = status(&app, &owner).await;
    assert_eq!(before["pending"], 25);
    assert_eq!(before["progress"], 0.0);
    drain_embedding(&app).await;
    let after = status(&app, &owner).await;
    assert_eq!(after["ready"], 25);
    assert_eq!(after["progress"], 1.0);
    assert_eq!(after["chunks"], 25);
}

// proves: SEC-3 (knowledge search stays within the tenant)
#[tokio::test]
async fn search_never_returns_another_tenants_passages() {
    let app = TestApp::spawn_with(|c| fast_worker(c, "http://127.0.0.1:9")).await;
    let acme = app.signup("acme").await;
    let globex = app.signup("globex").await;
    let ours = article(
        &app,
        &acme,
        "Returns",
        "You can return any item within 30 days.",
    )
    .await;
    article(
        &app,
        &globex,
        "Returns",
        "You can return any item within 30 days, globex style.",
    )
    .await;
    drain_embedding(&app).await;

    let found = app
        .send(
            Req::post("/api/v1/knowledge/search")
                .by(&acme)
                .json(json!({ "query": "return an item within 30 days", "limit": 50 })),
        )
        .await;
    assert_eq!(found.status, StatusCode::OK);
    let hits = found.body["hits"].as_array().unwrap();
    assert!(!hits.is_empty());
    assert!(
        hits.iter().all(|h| h["article_id"] == ours.to_string()),
        "{hits:?}"
    );
}

#[tokio::test]
async fn an_article_body_is_limited_in_characters_as_documented_not_in_bytes() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    // 200,000 characters of two bytes each: the documented limit, twice as many bytes.
    let longest = "é".repeat(200_000);
    let created = app
        .send(
            Req::post("/api/v1/knowledge/articles")
                .by(&owner)
                .json(json!({ "title": "Long", "body": longest })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    let refused = app
        .send(
            Req::post("/api/v1/knowledge/articles")
                .by(&owner)
                .json(json!({ "title": "Longer", "body": "a".repeat(200_001) })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert_eq!(refused.error_code(), "invalid_body");
    assert_eq!(app.count("SELECT count(*) FROM knowledge_article").await, 1);
}

#[tokio::test]
async fn a_list_filtered_by_an_unknown_status_is_refused_and_a_known_one_filters() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let draft = app
        .send(
            Req::post("/api/v1/knowledge/articles")
                .by(&owner)
                .json(json!({ "title": "Draft", "status": "draft" })),
        )
        .await
        .uuid("/id");
    article(&app, &owner, "Published", "Visible to the agent.").await;

    let drafts = app
        .send(Req::get("/api/v1/knowledge/articles?status=draft").by(&owner))
        .await;
    assert_eq!(drafts.status, StatusCode::OK, "{}", drafts.body);
    assert_eq!(drafts.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(drafts.body["items"][0]["id"], draft.to_string());

    let unknown = app
        .send(Req::get("/api/v1/knowledge/articles?status=deleted").by(&owner))
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
    assert_eq!(unknown.error_code(), "invalid_status");
}

#[tokio::test]
async fn a_passage_or_a_query_without_words_is_near_nothing_and_every_score_is_a_number() {
    let app = TestApp::spawn_with(|c| fast_worker(c, "http://127.0.0.1:9")).await;
    app.start_workers();
    let owner = app.signup("acme").await;
    // `{` embeds to a vector of zeros: pgvector's cosine distance to it is NaN, which sorted
    // first and answered as `null`.
    article(&app, &owner, "{", "{").await;
    article(
        &app,
        &owner,
        "Returns",
        "You can return any item within 30 days.",
    )
    .await;
    eventually(20, "the articles to be embedded", || async {
        (status(&app, &owner).await["ready"] == 2).then_some(())
    })
    .await;
    let search = |query: &'static str| {
        let app = &app;
        let owner = &owner;
        async move {
            let resp = app
                .send(
                    Req::post("/api/v1/knowledge/search")
                        .by(owner)
                        .json(json!({ "query": query, "limit": 5 })),
                )
                .await;
            assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
            resp.body["hits"].as_array().unwrap().clone()
        }
    };
    let hits = search("how long can I return an item?").await;
    assert_eq!(hits[0]["title"], "Returns", "{hits:?}");
    assert!(hits.iter().all(|h| h["score"].is_f64()), "{hits:?}");
    assert!(search("{").await.is_empty());
}
