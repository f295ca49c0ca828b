//! Managing the knowledge base: articles (one by one or in bulk), embedding progress, search.

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::auth::Ctx;
use crate::crm::accounts::like_pattern;
use crate::crm::page_limit;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Json, Path, Query};
use crate::rbac::Permission;

use super::KnowledgeState;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    KnowledgeState: FromRef<S>,
{
    use Access::*;
    use Permission::*;
    api.route(
        Method::GET,
        "/api/v1/knowledge/articles",
        Requires(KnowledgeRead),
        ("knowledge", "List articles"),
        list,
    )
    .route(
        Method::POST,
        "/api/v1/knowledge/articles",
        Requires(KnowledgeManage),
        ("knowledge", "Create an article"),
        create,
    )
    .route(
        Method::POST,
        "/api/v1/knowledge/articles/bulk",
        Requires(KnowledgeManage),
        (
            "knowledge",
            "Import up to 500 articles; embedding runs in the background",
        ),
        bulk,
    )
    .route(
        Method::GET,
        "/api/v1/knowledge/articles/{article_id}",
        Requires(KnowledgeRead),
        ("knowledge", "Show an article"),
        show,
    )
    .route(
        Method::PATCH,
        "/api/v1/knowledge/articles/{article_id}",
        Requires(KnowledgeManage),
        ("knowledge", "Edit an article (re-embedded)"),
        update,
    )
    .route(
        Method::DELETE,
        "/api/v1/knowledge/articles/{article_id}",
        Requires(KnowledgeManage),
        ("knowledge", "Delete an article and its vectors"),
        delete,
    )
    .route(
        Method::GET,
        "/api/v1/knowledge/status",
        Requires(KnowledgeRead),
        ("knowledge", "Embedding progress"),
        status,
    )
    .route(
        Method::POST,
        "/api/v1/knowledge/search",
        Requires(KnowledgeRead),
        ("knowledge", "Search passages by similarity"),
        search,
    )
}

#[derive(Debug, Serialize)]
pub struct ArticleView {
    pub id: Uuid,
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
    pub status: String,
    pub embedding_status: String,
    pub embedding_error: Option<String>,
    pub revision: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

async fn fetch(conn: &mut PgConnection, id: Uuid) -> Result<ArticleView> {
    sqlx::query_as!(
        ArticleView,
        "SELECT id, title, body, tags, status, embedding_status, embedding_error, revision, created_at, updated_at
         FROM knowledge_article WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    q: Option<String>,
    status: Option<String>,
    after: Option<Uuid>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<KnowledgeState>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>> {
    let limit = page_limit(q.limit)?;
    let pattern = q.q.as_deref().map(like_pattern);
    let mut tx = ctx.begin(&state).await?;
    let items = sqlx::query_as!(
        ArticleView,
        "SELECT id, title, body, tags, status, embedding_status, embedding_error, revision, created_at, updated_at
         FROM knowledge_article
         WHERE tenant_id = $1 AND ($2::text IS NULL OR title ILIKE $2 OR body ILIKE $2)
           AND ($3::text IS NULL OR status = $3) AND ($4::uuid IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5",
        ctx.tenant_id,
        pattern,
        q.status,
        q.after,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last().map(|a| a.id))
        .flatten();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArticleBody {
    title: Option<String>,
    body: Option<String>,
    tags: Option<Vec<String>>,
    status: Option<String>,
}

struct Checked {
    title: String,
    body: String,
    tags: Vec<String>,
    status: String,
}

fn check(input: ArticleBody, base: Option<&ArticleView>) -> Result<Checked> {
    let title = input
        .title
        .map(|t| t.trim().to_string())
        .or_else(|| base.map(|b| b.title.clone()))
        .unwrap_or_default();
    if title.is_empty() || title.chars().count() > 300 {
        return Err(Error::bad_request(
            "invalid_title",
            "title must be 1 to 300 characters",
        ));
    }
    let body = input
        .body
        .or_else(|| base.map(|b| b.body.clone()))
        .unwrap_or_default();
    if body.len() > 200_000 {
        return Err(Error::bad_request(
            "invalid_body",
            "an article is limited to 200 kB",
        ));
    }
    let status = input
        .status
        .or_else(|| base.map(|b| b.status.clone()))
        .unwrap_or_else(|| "published".into());
    if !matches!(status.as_str(), "draft" | "published" | "archived") {
        return Err(Error::bad_request(
            "invalid_status",
            "status must be draft, published or archived",
        ));
    }
    let mut tags: Vec<String> = input
        .tags
        .or_else(|| base.map(|b| b.tags.clone()))
        .unwrap_or_default()
        .iter()
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    tags.sort();
    tags.dedup();
    Ok(Checked {
        title,
        body,
        tags,
        status,
    })
}

async fn insert(conn: &mut PgConnection, tenant_id: Uuid, a: &Checked) -> Result<ArticleView> {
    let article = sqlx::query_as!(
        ArticleView,
        "INSERT INTO knowledge_article (id, tenant_id, title, body, tags, status) VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, title, body, tags, status, embedding_status, embedding_error, revision, created_at, updated_at",
        Uuid::now_v7(),
        tenant_id,
        a.title,
        a.body,
        &a.tags,
        a.status
    )
    .fetch_one(&mut *conn)
    .await?;
    super::schedule_embedding(conn, tenant_id, article.id, article.revision).await?;
    Ok(article)
}

/// An audit record of an article without its (possibly long) body.
fn summary(a: &ArticleView) -> Value {
    json!({ "title": a.title, "tags": a.tags, "status": a.status, "revision": a.revision, "body_length": a.body.len() })
}

async fn create(
    State(state): State<KnowledgeState>,
    ctx: Ctx,
    Json(input): Json<ArticleBody>,
) -> Result<(StatusCode, Json<ArticleView>)> {
    let checked = check(input, None)?;
    let mut tx = ctx.begin(&state).await?;
    let article = insert(&mut tx, ctx.tenant_id, &checked).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("knowledge.article_created", "knowledge_article", article.id)
            .after(summary(&article)),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(article)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    articles: Vec<ArticleBody>,
}

async fn bulk(
    State(state): State<KnowledgeState>,
    ctx: Ctx,
    Json(input): Json<BulkBody>,
) -> Result<(StatusCode, Json<Value>)> {
    if input.articles.is_empty() || input.articles.len() > 500 {
        return Err(Error::bad_request(
            "invalid_bulk",
            "send 1 to 500 articles at a time",
        ));
    }
    // Validate everything first: a bad article refuses the whole import, nothing half-done.
    let checked = input
        .articles
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            check(a, None)
                .map_err(|e| Error::bad_request("invalid_bulk", format!("article {i}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut tx = ctx.begin(&state).await?;
    let mut ids = Vec::with_capacity(checked.len());
    for a in &checked {
        ids.push(insert(&mut tx, ctx.tenant_id, a).await?.id);
    }
    ctx.audit(
        &mut tx,
        AuditEvent::new("knowledge.imported", "knowledge_article", "bulk")
            .after(json!({ "count": ids.len(), "ids": ids })),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "created": ids.len(), "ids": ids, "progress": "/api/v1/knowledge/status" })),
    ))
}

async fn show(
    State(state): State<KnowledgeState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<ArticleView>> {
    let mut tx = ctx.begin(&state).await?;
    let article = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(article))
}

async fn update(
    State(state): State<KnowledgeState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(input): Json<ArticleBody>,
) -> Result<Json<ArticleView>> {
    let mut tx = ctx.begin(&state).await?;
    let before = fetch(&mut tx, id).await?;
    let c = check(input, Some(&before))?;
    let after = sqlx::query_as!(
        ArticleView,
        "UPDATE knowledge_article
         SET title = $2, body = $3, tags = $4, status = $5, revision = revision + 1,
             embedding_status = 'pending', embedding_error = NULL, updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()
         RETURNING id, title, body, tags, status, embedding_status, embedding_error, revision, created_at, updated_at",
        id,
        c.title,
        c.body,
        &c.tags,
        c.status
    )
    .fetch_one(&mut *tx)
    .await?;
    super::schedule_embedding(&mut tx, ctx.tenant_id, id, after.revision).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("knowledge.article_updated", "knowledge_article", id)
            .before(summary(&before))
            .after(summary(&after)),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}

async fn delete(
    State(state): State<KnowledgeState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    let mut tx = ctx.begin(&state).await?;
    let before = fetch(&mut tx, id).await?;
    // Its passages and vectors go with it (ON DELETE CASCADE).
    sqlx::query!(
        "DELETE FROM knowledge_article WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .execute(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("knowledge.article_deleted", "knowledge_article", id)
            .before(summary(&before)),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Embedding progress: articles by state, and passages by whether their vectors are of the
/// tenant's current embedding model (`chunks`, the ones search reads) or of an earlier one
/// (`stale_chunks`, replaced as re-embedding proceeds).
async fn status(State(state): State<KnowledgeState>, ctx: Ctx) -> Result<Json<Value>> {
    let mut tx = ctx.begin(&state).await?;
    let identity = state.embedders.current(&mut tx, ctx.tenant_id).await?;
    let model = identity.model();
    let row = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE embedding_status = 'pending') AS "pending!",
                  count(*) FILTER (WHERE embedding_status = 'ready') AS "ready!",
                  count(*) FILTER (WHERE embedding_status = 'failed') AS "failed!",
                  (SELECT count(*) FROM knowledge_chunk WHERE tenant_id = $1 AND model = $2) AS "chunks!",
                  (SELECT count(*) FROM knowledge_chunk WHERE tenant_id = $1 AND model <> $2) AS "stale_chunks!"
           FROM knowledge_article WHERE tenant_id = $1"#,
        ctx.tenant_id,
        model
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let total = row.pending + row.ready + row.failed;
    Ok(Json(json!({
        "articles": total, "pending": row.pending, "ready": row.ready, "failed": row.failed, "chunks": row.chunks,
        "stale_chunks": row.stale_chunks, "model": model,
        "progress": if total == 0 { 1.0 } else { (row.ready + row.failed) as f64 / total as f64 },
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    query: String,
    limit: Option<i64>,
}

async fn search(
    State(state): State<KnowledgeState>,
    ctx: Ctx,
    Json(input): Json<SearchBody>,
) -> Result<Json<Value>> {
    let query = input.query.trim();
    if query.is_empty() || query.chars().count() > 2000 {
        return Err(Error::bad_request(
            "invalid_query",
            "query must be 1 to 2000 characters",
        ));
    }
    let limit = input.limit.unwrap_or(5);
    if !(1..=50).contains(&limit) {
        return Err(Error::bad_request("invalid_limit", "limit must be 1 to 50"));
    }
    let mut tx = ctx.begin(&state).await?;
    let (embedder, _) = state.embedders.embedder(&mut tx, ctx.tenant_id).await?;
    tx.commit().await?;
    // Masked like the passages before it reaches a provider (AGT-2).
    let query = embedder
        .embed_passages(&[query.to_string()])
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "embedding a search query failed");
            Error::Unavailable("the embedding provider is unavailable")
        })?
        .into_query(&embedder);
    let mut tx = super::SearchTx::begin(&state.db, ctx.tenant_id).await?;
    let hits = super::search(&mut tx, ctx.tenant_id, query, limit).await?;
    tx.commit().await?;
    Ok(Json(
        json!({ "hits": hits, "embedder": embedder.model(), "offline": embedder.is_local() }),
    ))
}
