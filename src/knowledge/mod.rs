//! The knowledge base: articles, split into passages and embedded into pgvector, searched by
//! cosine similarity within the tenant. Embedding runs on the job queue (`knowledge.embed`),
//! so large imports proceed in the background with their progress visible; an edit bumps the
//! article's revision so a stale job cannot overwrite newer passages, and a deleted or
//! unpublished article's vectors are removed.
//!
//! Each vector is stored with the model that computed it, and search compares a query only
//! with vectors of the query's own model: vectors of two models are not comparable, even at
//! the same size. Changing the tenant's embedding provider, model or dimensions re-embeds
//! every article (a fan-out job per change, one job per article, progress on the status
//! endpoint). A provider's embeddings API gets the passages masked by the guardrails' inbound
//! stage (AGT-2); the stored passages keep their text, for quoting.
//!
//! The tenant's embedder comes from its provider settings, which the agent owns: the agent
//! hands it down through [`Embedders`], which `app.rs` puts in [`KnowledgeState`].

pub mod chunk;
pub mod embed;
pub mod embedder;
pub mod focus;
pub mod routes;

use std::sync::Arc;

use axum::extract::FromRef;
use futures_util::future::BoxFuture;
use pgvector::Vector;
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::{Db, Tx};
use crate::error::Result;
use crate::queue::{self, Job, NewJob, Outcome};

pub use embedder::{Embedded, Embedder, EmbedderIdentity};

pub const EMBED_JOB: &str = "knowledge.embed";

/// What the knowledge base needs of the process: the database and where each tenant's
/// embedder comes from.
#[derive(Clone)]
pub struct KnowledgeState {
    pub db: Db,
    pub embedders: Arc<dyn Embedders>,
}

impl AsRef<Db> for KnowledgeState {
    fn as_ref(&self) -> &Db {
        &self.db
    }
}

/// The job kinds knowledge runs.
pub fn register<S>(jobs: &mut crate::queue::Handlers<S>)
where
    S: Send + Sync + 'static,
    KnowledgeState: FromRef<S>,
{
    jobs.register(EMBED_JOB, |state, job| {
        let state = KnowledgeState::from_ref(state);
        Box::pin(async move { run_embed_job(&state, job).await })
    });
}

/// Embedding sizes with an HNSW index (see migration 0003).
pub const SUPPORTED_DIMS: [usize; 4] = [384, 768, 1024, 1536];

/// Where the knowledge base gets a tenant's embedder. The tenant's provider settings (and their
/// table) are the agent's, so the agent implements this and `app.rs` registers it; knowledge
/// asks through it and never reads the settings itself.
pub trait Embedders: Send + Sync {
    /// What computes the tenant's vectors now, read on the caller's transaction.
    fn current<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        tenant_id: Uuid,
    ) -> BoxFuture<'a, Result<EmbedderIdentity>>;

    /// The tenant's embedder, and what it was made from (read on the caller's transaction).
    fn embedder<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        tenant_id: Uuid,
    ) -> BoxFuture<'a, Result<(Embedder, EmbedderIdentity)>>;
}

/// One passage found by a search.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = KnowledgeHit)]
pub struct Hit {
    pub chunk_id: Uuid,
    pub article_id: Uuid,
    pub title: String,
    pub content: String,
    /// Cosine similarity, 1 = identical direction.
    pub score: f64,
}

/// A search: a query vector and the model that computed it.
#[derive(Debug, Clone)]
pub struct Query {
    pub vector: Vec<f32>,
    pub model: String,
}

impl Query {
    pub fn new(vector: Vec<f32>, model: impl Into<String>) -> Self {
        Query {
            vector,
            model: model.into(),
        }
    }
}

/// A bare vector is the built-in embedder's ([`embed::embed_local`]).
impl From<Vec<f32>> for Query {
    fn from(vector: Vec<f32>) -> Self {
        Query::new(vector, embed::LOCAL_MODEL)
    }
}

/// The transaction-local settings a search needs: pgvector's iterative index scan, its
/// candidate list, and a plan per call (whether the HNSW scan, for a large tenant, or the
/// tenant index and an exact sort, for a small one, is cheaper depends on the tenant, which a
/// cached generic plan cannot see).
const SEARCH_SETTINGS: &[(&str, &str)] = &[
    ("hnsw.iterative_scan", "relaxed_order"),
    ("hnsw.ef_search", "100"),
    ("plan_cache_mode", "force_custom_plan"),
];

/// A tenant transaction set up for [`search`]: the tenant and the search settings are pinned by
/// the statement that opens it, in one round trip.
pub struct SearchTx(pub Tx);

impl SearchTx {
    pub async fn begin(db: &Db, tenant_id: Uuid) -> Result<SearchTx> {
        Ok(SearchTx(
            db.tenant_tx_with(tenant_id, SEARCH_SETTINGS).await?,
        ))
    }

    pub async fn commit(self) -> Result<()> {
        Ok(self.0.commit().await?)
    }
}

/// The statement of [`search`] for vectors of `dims` dimensions (one of [`SUPPORTED_DIMS`]):
/// `$1` the query vector, `$2` the tenant, `$3` the limit, `$4` the embedding model. Passages are
/// ranked by the half-precision copies the HNSW index holds (the typed cast must match the
/// index expression), and only the hits are scored, from the full-precision vectors (a small
/// tenant's passages are all ranked by an exact sort, which need not compute two distances).
/// A passage without a direction (a vector of zeros: text without words, such as `{`) has no
/// similarity to anything: pgvector says NaN, which would sort first; it scores 0.
pub fn search_sql(dims: usize) -> String {
    format!(
        "SELECT c.id AS chunk_id, c.article_id, a.title, c.content,
                COALESCE(NULLIF(1 - (c.embedding::vector({dims}) <=> $1::vector({dims})),
                                'NaN'::float8), 0) AS score
         FROM (SELECT id, article_id, content, embedding
               FROM knowledge_chunk
               WHERE tenant_id = $2 AND dims = {dims} AND model = $4
               ORDER BY embedding_half::halfvec({dims}) <=> $1::vector({dims})::halfvec({dims})
               LIMIT $3) c
         JOIN knowledge_article a ON a.id = c.article_id
         ORDER BY score DESC"
    )
}

/// The passages nearest to `query`, among the vectors of the query's model, in the
/// transaction's tenant only. pgvector's iterative index scan keeps going past filtered-out
/// rows, so the tenant filter cannot starve the result; a tenant with few passages is ranked
/// exactly from its own rows instead.
pub async fn search(
    tx: &mut SearchTx,
    tenant_id: Uuid,
    query: impl Into<Query>,
    limit: i64,
) -> Result<Vec<Hit>> {
    let conn = &mut *tx.0;
    let Query {
        vector: query,
        model,
    } = query.into();
    let dims = query.len();
    if query.iter().all(|x| *x == 0.0) {
        // A query without words points nowhere: nothing is near it.
        return Ok(Vec::new());
    }
    if !SUPPORTED_DIMS.contains(&dims) {
        // No passage of this size exists (the embedding job refuses them and says so on the
        // article): the knowledge base has nothing to offer, which is no reason to fail a run.
        tracing::warn!(dims, %model, "no knowledge vectors can have this embedding size");
        return Ok(Vec::new());
    }
    let hits = sqlx::query_as::<_, Hit>(sqlx::AssertSqlSafe(search_sql(dims)))
        .bind(Vector::from(query))
        .bind(tenant_id)
        .bind(limit)
        .bind(model)
        .fetch_all(&mut *conn)
        .await?;
    Ok(hits)
}

/// Re-embeds every article of the tenant after its embedder changed (configuration `version`),
/// on the caller's transaction: every article shows as pending at once (the status endpoint's
/// progress), and one job fans out an embedding job per article.
pub async fn schedule_reembedding(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    version: i64,
) -> Result<()> {
    let pending = sqlx::query!(
        "UPDATE knowledge_article SET embedding_status = 'pending', embedding_error = NULL
         WHERE tenant_id = current_tenant_id()",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if pending > 0 {
        queue::enqueue(
            conn,
            tenant_id,
            NewJob::new(
                EMBED_JOB,
                format!("reembed:{tenant_id}:{version}"),
                json!({ "reembed": version }),
            ),
        )
        .await?;
    }
    Ok(())
}

/// The fan-out of [`schedule_reembedding`]: an embedding job for each article, keyed by the
/// configuration version so the article's earlier job for the same revision does not hide it.
async fn fan_out(state: &KnowledgeState, job: &Job, version: i64) -> Result<Outcome> {
    let mut tx = state.db.tenant_tx(job.tenant_id).await?;
    let articles = sqlx::query!(
        "SELECT id, revision FROM knowledge_article WHERE tenant_id = current_tenant_id() ORDER BY id"
    )
    .fetch_all(&mut *tx)
    .await?;
    for article in articles {
        queue::enqueue(
            &mut tx,
            job.tenant_id,
            NewJob::new(
                EMBED_JOB,
                format!("embed:{}:{}:v{version}", article.id, article.revision),
                json!({ "article_id": article.id, "revision": article.revision }),
            ),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Outcome::Done)
}

/// How many of the tenant's articles still wait for their embedding (the demo seeds its
/// conversations once the knowledge base can answer them).
/// The titles of the tenant's articles among `ids` (those that still exist).
pub async fn titles(conn: &mut sqlx::PgConnection, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>> {
    let rows = sqlx::query!(
        "SELECT id, title FROM knowledge_article WHERE id = ANY($1) AND tenant_id = current_tenant_id()",
        ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.title)).collect())
}

pub async fn pending_embeddings(conn: &mut sqlx::PgConnection, tenant_id: Uuid) -> Result<i64> {
    let pending = sqlx::query_scalar!(
        r#"SELECT count(*) AS "pending!" FROM knowledge_article
           WHERE tenant_id = $1 AND embedding_status = 'pending'"#,
        tenant_id
    )
    .fetch_one(conn)
    .await?;
    Ok(pending)
}

/// Marks an article for (re-)embedding and enqueues the work, on the caller's transaction.
pub async fn schedule_embedding(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    article_id: Uuid,
    revision: i32,
) -> Result<()> {
    queue::enqueue(
        conn,
        tenant_id,
        NewJob::new(
            EMBED_JOB,
            format!("embed:{article_id}:{revision}"),
            json!({ "article_id": article_id, "revision": revision }),
        ),
    )
    .await?;
    Ok(())
}

/// The `knowledge.embed` job.
pub async fn run_embed_job(state: &KnowledgeState, job: &Job) -> Outcome {
    match embed_article(state, job).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Retry {
            error: e.to_string(),
            after: None,
        },
    }
}

async fn embed_article(state: &KnowledgeState, job: &Job) -> Result<Outcome> {
    if let Some(version) = job.payload.get("reembed").and_then(|v| v.as_i64()) {
        return fan_out(state, job, version).await;
    }
    let (Some(article_id), Some(revision)) = (
        job.payload
            .get("article_id")
            .and_then(|v| v.as_str())
            .and_then(|s| Uuid::parse_str(s).ok()),
        job.payload.get("revision").and_then(|v| v.as_i64()),
    ) else {
        return Ok(Outcome::Fail {
            error: "the job names no article".into(),
        });
    };
    let mut tx = state.db.tenant_tx(job.tenant_id).await?;
    let article = sqlx::query!(
        "SELECT title, body, status, revision FROM knowledge_article WHERE id = $1 AND tenant_id = current_tenant_id()",
        article_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let (embedder, identity) = state.embedders.embedder(&mut tx, job.tenant_id).await?;
    tx.commit().await?;
    let Some(article) = article else {
        return Ok(Outcome::Done);
    };
    if i64::from(article.revision) != revision {
        return Ok(Outcome::Done); // a newer revision has its own job
    }
    let passages = if article.status == "published" {
        chunk::chunk(&article.title, &article.body)
    } else {
        Vec::new()
    };
    let vectors = match embedder.embed_passages(&passages).await {
        Ok(embedded) => embedded.vectors,
        Err(e) if job.attempts < job.max_attempts => {
            return Ok(Outcome::Retry {
                error: e.to_string(),
                after: None,
            })
        }
        Err(e) => {
            let mut tx = state.db.tenant_tx(job.tenant_id).await?;
            sqlx::query!(
                "UPDATE knowledge_article SET embedding_status = 'failed', embedding_error = $3
                 WHERE id = $1 AND revision = $2",
                article_id,
                revision as i32,
                e.to_string()
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Outcome::Fail {
                error: e.to_string(),
            });
        }
    };

    if let Some(bad) = vectors
        .iter()
        .map(Vec::len)
        .find(|d| !SUPPORTED_DIMS.contains(d))
    {
        // No index (and no search) for this size: say so on the article, do not retry.
        let error = format!(
            "the embedding model returns {bad}-dimensional vectors; set embedding_dims to one of {SUPPORTED_DIMS:?}"
        );
        let mut tx = state.db.tenant_tx(job.tenant_id).await?;
        sqlx::query!(
            "UPDATE knowledge_article SET embedding_status = 'failed', embedding_error = $3
             WHERE id = $1 AND revision = $2",
            article_id,
            revision as i32,
            error
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Outcome::Fail { error });
    }

    let mut tx = state.db.tenant_tx(job.tenant_id).await?;
    // Only the current revision, embedded by the tenant's current embedder, may replace the
    // passages: a job that raced a settings change leaves them to the job of the new embedder.
    // The article's lock comes first, so the embedder is read after any change that marked the
    // article pending has committed.
    let current = sqlx::query_scalar!(
        "SELECT revision FROM knowledge_article WHERE id = $1 FOR UPDATE",
        article_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(current) = current else {
        return Ok(Outcome::Done);
    };
    if current != revision as i32
        || state.embedders.current(&mut tx, job.tenant_id).await? != identity
    {
        return Ok(Outcome::Done);
    }
    sqlx::query!(
        "DELETE FROM knowledge_chunk WHERE article_id = $1",
        article_id
    )
    .execute(&mut *tx)
    .await?;
    for (ordinal, (content, vector)) in passages.iter().zip(vectors).enumerate() {
        sqlx::query(
            "INSERT INTO knowledge_chunk (id, tenant_id, article_id, ordinal, content, dims, embedding, model)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(Uuid::now_v7())
        .bind(job.tenant_id)
        .bind(article_id)
        .bind(ordinal as i32)
        .bind(content)
        .bind(vector.len() as i32)
        .bind(Vector::from(vector))
        .bind(embedder.model())
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query!(
        "UPDATE knowledge_article SET embedding_status = 'ready', embedding_error = NULL WHERE id = $1",
        article_id
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Outcome::Done)
}
