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
use crate::http::{Access, Api, Contract, Json, Page, Path, Query};
use crate::rbac::Permission;
use utoipa::{IntoParams, ToSchema};

use super::{Hit, KnowledgeState};

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    KnowledgeState: FromRef<S>,
{
    use Access::*;
    use Permission::*;
    api.endpoint(
        Method::GET,
        "/api/v1/knowledge/articles",
        Requires(KnowledgeRead),
        ("knowledge", "List articles"),
        Contract::new()
            .query::<ListQuery>()
            .ok_page::<ArticleView>()
            .error(StatusCode::BAD_REQUEST, "invalid_limit"),
        list,
    )
    .endpoint(
        Method::POST,
        "/api/v1/knowledge/articles",
        Requires(KnowledgeManage),
        ("knowledge", "Create an article"),
        checked(
            Contract::new()
                .body::<NewArticle>()
                .created::<ArticleView>(),
        ),
        create,
    )
    .endpoint(
        Method::POST,
        "/api/v1/knowledge/articles/bulk",
        Requires(KnowledgeManage),
        (
            "knowledge",
            "Import up to 500 articles; embedding runs in the background",
        ),
        Contract::new()
            .body::<BulkBody>()
            .returns::<Imported>(StatusCode::ACCEPTED)
            // Each article's own refusal, named with its index.
            .error(StatusCode::BAD_REQUEST, "invalid_bulk"),
        bulk,
    )
    .endpoint(
        Method::GET,
        "/api/v1/knowledge/articles/{article_id}",
        Requires(KnowledgeRead),
        ("knowledge", "Show an article"),
        Contract::new().ok::<ArticleView>(),
        show,
    )
    .endpoint(
        Method::PATCH,
        "/api/v1/knowledge/articles/{article_id}",
        Requires(KnowledgeManage),
        ("knowledge", "Edit an article (re-embedded)"),
        checked(Contract::new().body::<ArticleChanges>().ok::<ArticleView>()),
        update,
    )
    .endpoint(
        Method::DELETE,
        "/api/v1/knowledge/articles/{article_id}",
        Requires(KnowledgeManage),
        ("knowledge", "Delete an article and its vectors"),
        Contract::new().no_content(),
        delete,
    )
    .endpoint(
        Method::GET,
        "/api/v1/knowledge/status",
        Requires(KnowledgeRead),
        ("knowledge", "Embedding progress"),
        Contract::new().ok::<EmbeddingProgress>(),
        status,
    )
    .endpoint(
        Method::POST,
        "/api/v1/knowledge/search",
        Requires(KnowledgeRead),
        ("knowledge", "Search passages by similarity"),
        Contract::new()
            .body::<SearchBody>()
            .ok::<SearchResult>()
            .error(StatusCode::BAD_REQUEST, "invalid_query")
            .error(StatusCode::BAD_REQUEST, "invalid_limit")
            .error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        search,
    )
}

/// The refusals of an article's fields ([`check`]), for creating and editing alike.
fn checked(contract: Contract) -> Contract {
    contract
        .error(StatusCode::BAD_REQUEST, "invalid_title")
        .error(StatusCode::BAD_REQUEST, "invalid_body")
        .error(StatusCode::BAD_REQUEST, "article_injection")
        .error(StatusCode::BAD_REQUEST, "invalid_status")
}

/// Whether an article is offered to the agent: only `published` ones are embedded and found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ArticleStatus)]
pub enum ArticleStatus {
    Draft,
    Published,
    Archived,
}

impl ArticleStatus {
    pub const ALL: [ArticleStatus; 3] = [Self::Draft, Self::Published, Self::Archived];

    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "draft" => Ok(Self::Draft),
            "published" => Ok(Self::Published),
            "archived" => Ok(Self::Archived),
            _ => Err(Error::bad_request(
                "invalid_status",
                "status must be draft, published or archived",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Published => "published",
            Self::Archived => "archived",
        }
    }
}

/// Where an article's passages stand (the embedding job moves it; the
/// `knowledge_article_embedding` CHECK holds the same three).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = EmbeddingStatus)]
pub enum EmbeddingStatus {
    /// Waiting for the embedding job, after a creation or an edit.
    Pending,
    /// Its passages are searchable.
    Ready,
    /// The job gave up; `embedding_error` says why.
    Failed,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = KnowledgeArticle)]
pub struct ArticleView {
    pub id: Uuid,
    pub title: String,
    pub body: String,
    /// Lowercase, sorted, without duplicates.
    pub tags: Vec<String>,
    #[schema(value_type = ArticleStatus)]
    pub status: String,
    #[schema(value_type = EmbeddingStatus)]
    pub embedding_status: String,
    /// Why embedding failed; `null` unless it did.
    #[schema(required = true)]
    pub embedding_error: Option<String>,
    /// Raised by every edit.
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

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// A case-insensitive part of the title or body.
    q: Option<String>,
    /// Only the articles in this status.
    #[param(value_type = Option<ArticleStatus>)]
    status: Option<String>,
    /// The last id of the previous page (its `next_cursor`).
    after: Option<Uuid>,
    /// 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// Which articles [`list_articles`] returns: newest first, at most `limit`.
pub struct ArticleFilter {
    /// A case-insensitive part of the title or body.
    pub q: Option<String>,
    pub status: Option<ArticleStatus>,
    /// The last id of the previous page.
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// Refuses a caller whose role lacks `permission`. The routes and the web app's pages are
/// registered with the same access; this keeps the functions they share from relying on it.
fn require(ctx: &Ctx, permission: Permission) -> Result<()> {
    if ctx.role.can(permission) {
        Ok(())
    } else {
        Err(Error::Forbidden("your role does not allow this"))
    }
}

/// The tenant's articles matching `filter`, newest first (the list route and page).
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id))]
pub async fn list_articles(
    state: &KnowledgeState,
    ctx: &Ctx,
    filter: &ArticleFilter,
) -> Result<Vec<ArticleView>> {
    require(ctx, Permission::KnowledgeRead)?;
    let pattern = filter.q.as_deref().map(like_pattern);
    let mut tx = ctx.begin(state).await?;
    let items = sqlx::query_as!(
        ArticleView,
        "SELECT id, title, body, tags, status, embedding_status, embedding_error, revision, created_at, updated_at
         FROM knowledge_article
         WHERE tenant_id = $1 AND ($2::text IS NULL OR title ILIKE $2 OR body ILIKE $2)
           AND ($3::text IS NULL OR status = $3) AND ($4::uuid IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5",
        ctx.tenant_id,
        pattern,
        filter.status.map(ArticleStatus::as_str),
        filter.after,
        filter.limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(items)
}

async fn list(
    State(state): State<KnowledgeState>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<ArticleView>>> {
    let limit = page_limit(q.limit)?;
    let status = q.status.as_deref().map(ArticleStatus::parse).transpose()?;
    let filter = ArticleFilter {
        q: q.q,
        status,
        after: q.after,
        limit,
    };
    let items = list_articles(&state, &ctx, &filter).await?;
    Ok(Json(Page::new(items, limit, |a| a.id)))
}

/// A new article. Only published articles are embedded and offered to the agent.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewKnowledgeArticle)]
pub struct NewArticle {
    /// Trimmed.
    #[schema(min_length = 1, max_length = 300, pattern = "$not_blank")]
    pub title: String,
    /// Empty when absent.
    #[schema(max_length = 200000)]
    pub body: Option<String>,
    /// Trimmed and lowercased; empty ones are dropped, duplicates merged.
    pub tags: Option<Vec<String>>,
    /// `published` when absent.
    #[schema(value_type = Option<ArticleStatus>)]
    pub status: Option<String>,
}

/// The fields of an article to change; an absent (or `null`) field stays as it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = KnowledgeArticleChanges)]
pub struct ArticleChanges {
    /// Trimmed.
    #[schema(min_length = 1, max_length = 300, pattern = "$not_blank")]
    pub title: Option<String>,
    #[schema(max_length = 200000)]
    pub body: Option<String>,
    /// Replaces the tags; trimmed and lowercased, empty ones dropped, duplicates merged.
    pub tags: Option<Vec<String>>,
    #[schema(value_type = Option<ArticleStatus>)]
    pub status: Option<String>,
}

impl From<NewArticle> for ArticleChanges {
    fn from(new: NewArticle) -> Self {
        ArticleChanges {
            title: Some(new.title),
            body: new.body,
            tags: new.tags,
            status: new.status,
        }
    }
}

struct Checked {
    title: String,
    body: String,
    tags: Vec<String>,
    status: String,
}

fn check(input: ArticleChanges, base: Option<&ArticleView>) -> Result<Checked> {
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
    // Characters, as the document's maxLength and the table's CHECK count them.
    if body.chars().count() > 200_000 {
        return Err(Error::bad_request(
            "invalid_body",
            "an article's body is limited to 200,000 characters",
        ));
    }
    // Passages reach the model as data: an article that reads as instructions to it (the
    // injection pack's rules) is refused here rather than found in a customer's run.
    let injected = crate::guardrails::injection_rules(&format!("{title}\n{body}"));
    if !injected.is_empty() {
        return Err(Error::bad_request(
            "article_injection",
            format!(
                "the article reads as instructions to the assistant ({}): knowledge is data the \
                 assistant answers from, it may not tell the assistant what to do",
                injected.join(", ")
            ),
        ));
    }
    let status = match input.status.as_deref().or(base.map(|b| b.status.as_str())) {
        Some(status) => ArticleStatus::parse(status)?,
        None => ArticleStatus::Published,
    }
    .as_str()
    .to_string();
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

/// Creates an article and schedules its embedding, audited (the create route and page).
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id))]
pub async fn create_article(
    state: &KnowledgeState,
    ctx: &Ctx,
    input: NewArticle,
) -> Result<ArticleView> {
    require(ctx, Permission::KnowledgeManage)?;
    let checked = check(input.into(), None)?;
    let mut tx = ctx.begin(state).await?;
    let article = insert(&mut tx, ctx.tenant_id, &checked).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("knowledge.article_created", "knowledge_article", article.id)
            .after(summary(&article)),
    )
    .await?;
    tx.commit().await?;
    Ok(article)
}

async fn create(
    State(state): State<KnowledgeState>,
    ctx: Ctx,
    Json(input): Json<NewArticle>,
) -> Result<(StatusCode, Json<ArticleView>)> {
    let article = create_article(&state, &ctx, input).await?;
    Ok((StatusCode::CREATED, Json(article)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = KnowledgeImport)]
struct BulkBody {
    /// All are checked before any is stored: one refused article refuses the import.
    #[schema(min_items = 1, max_items = 500)]
    articles: Vec<NewArticle>,
}

/// An import accepted: its articles exist, their embedding runs in the background.
#[derive(Serialize, ToSchema)]
#[schema(as = KnowledgeImported)]
struct Imported {
    created: usize,
    /// The new articles' ids, in the order they were sent.
    ids: Vec<Uuid>,
    /// Where the embedding progress shows: `/api/v1/knowledge/status`.
    progress: &'static str,
}

async fn bulk(
    State(state): State<KnowledgeState>,
    ctx: Ctx,
    Json(input): Json<BulkBody>,
) -> Result<(StatusCode, Json<Imported>)> {
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
            check(a.into(), None)
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
        Json(Imported {
            created: ids.len(),
            ids,
            progress: "/api/v1/knowledge/status",
        }),
    ))
}

/// One of the tenant's articles; another tenant's, or none, is not found.
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, article_id = %id))]
pub async fn article(state: &KnowledgeState, ctx: &Ctx, id: Uuid) -> Result<ArticleView> {
    require(ctx, Permission::KnowledgeRead)?;
    let mut tx = ctx.begin(state).await?;
    let article = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(article)
}

async fn show(
    State(state): State<KnowledgeState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<ArticleView>> {
    Ok(Json(article(&state, &ctx, id).await?))
}

/// Edits an article, raising its revision and scheduling its re-embedding, audited (the edit
/// route and page). With `expected_revision`, an article changed since that revision was read
/// is left alone and the edit refused as a conflict (the page's form carries the revision it
/// showed, so two people editing at once do not overwrite each other unseen).
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, article_id = %id))]
pub async fn update_article(
    state: &KnowledgeState,
    ctx: &Ctx,
    id: Uuid,
    input: ArticleChanges,
    expected_revision: Option<i32>,
) -> Result<ArticleView> {
    require(ctx, Permission::KnowledgeManage)?;
    let mut tx = ctx.begin(state).await?;
    let before = fetch(&mut tx, id).await?;
    if expected_revision.is_some_and(|r| r != before.revision) {
        return Err(stale());
    }
    let c = check(input, Some(&before))?;
    // With an expected revision, an edit committed in between makes this match nothing, and
    // the edit is refused rather than lost.
    let after = sqlx::query_as!(
        ArticleView,
        "UPDATE knowledge_article
         SET title = $2, body = $3, tags = $4, status = $5, revision = revision + 1,
             embedding_status = 'pending', embedding_error = NULL, updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id() AND ($6::int IS NULL OR revision = $6)
         RETURNING id, title, body, tags, status, embedding_status, embedding_error, revision, created_at, updated_at",
        id,
        c.title,
        c.body,
        &c.tags,
        c.status,
        expected_revision
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(stale)?;
    super::schedule_embedding(&mut tx, ctx.tenant_id, id, after.revision).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("knowledge.article_updated", "knowledge_article", id)
            .before(summary(&before))
            .after(summary(&after)),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

fn stale() -> Error {
    Error::Conflict {
        code: "article_changed",
        message: "the article was changed by someone else since it was opened".to_string(),
    }
}

async fn update(
    State(state): State<KnowledgeState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(input): Json<ArticleChanges>,
) -> Result<Json<ArticleView>> {
    Ok(Json(update_article(&state, &ctx, id, input, None).await?))
}

/// Deletes an article with its passages and vectors, audited (the delete route and page).
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, article_id = %id))]
pub async fn delete_article(state: &KnowledgeState, ctx: &Ctx, id: Uuid) -> Result<ArticleView> {
    require(ctx, Permission::KnowledgeManage)?;
    let mut tx = ctx.begin(state).await?;
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
    Ok(before)
}

async fn delete(
    State(state): State<KnowledgeState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<StatusCode> {
    delete_article(&state, &ctx, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Embedding progress: articles by state, and passages by whether their vectors are of the
/// tenant's current embedding model (`chunks`, the ones search reads) or of an earlier one
/// (`stale_chunks`, replaced as re-embedding proceeds).
#[derive(Serialize, ToSchema)]
#[schema(as = KnowledgeStatus)]
pub struct EmbeddingProgress {
    pub articles: i64,
    pub pending: i64,
    pub ready: i64,
    pub failed: i64,
    /// Passages with vectors of the current model: the ones search reads.
    pub chunks: i64,
    /// Passages with vectors of an earlier model, replaced as re-embedding proceeds.
    pub stale_chunks: i64,
    /// The tenant's current embedding model.
    pub model: String,
    /// The share of articles done (ready or failed), 1 when there are none.
    #[schema(minimum = 0, maximum = 1)]
    pub progress: f64,
}

async fn status(State(state): State<KnowledgeState>, ctx: Ctx) -> Result<Json<EmbeddingProgress>> {
    Ok(Json(embedding_status(&state, &ctx).await?))
}

/// The tenant's embedding progress (the status route and the list page).
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id))]
pub async fn embedding_status(state: &KnowledgeState, ctx: &Ctx) -> Result<EmbeddingProgress> {
    require(ctx, Permission::KnowledgeRead)?;
    let mut tx = ctx.begin(state).await?;
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
    Ok(EmbeddingProgress {
        articles: total,
        pending: row.pending,
        ready: row.ready,
        failed: row.failed,
        chunks: row.chunks,
        stale_chunks: row.stale_chunks,
        model: model.to_string(),
        progress: if total == 0 {
            1.0
        } else {
            (row.ready + row.failed) as f64 / total as f64
        },
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = KnowledgeSearch)]
struct SearchBody {
    /// Trimmed.
    #[schema(min_length = 1, max_length = 2000, pattern = "$not_blank")]
    query: String,
    /// How many passages at most; 5 when absent.
    #[schema(minimum = 1, maximum = 50)]
    limit: Option<i64>,
}

/// The passages nearest to a query, best first.
#[derive(Serialize, ToSchema)]
#[schema(as = KnowledgeSearchResult)]
struct SearchResult {
    hits: Vec<Hit>,
    /// The embedding model that embedded the query.
    embedder: String,
    /// Whether the built-in embedder answered (no provider was asked).
    offline: bool,
}

async fn search(
    State(state): State<KnowledgeState>,
    ctx: Ctx,
    Json(input): Json<SearchBody>,
) -> Result<Json<SearchResult>> {
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
    Ok(Json(SearchResult {
        hits,
        embedder: embedder.model().to_string(),
        offline: embedder.is_local(),
    }))
}
