//! The durable work queue, in PostgreSQL. Outbound sends and agent runs are jobs, enqueued in
//! the same transaction as the change that asks for them, so work is never promised and then
//! lost. Delivery is at-least-once: a worker claims due jobs with `FOR UPDATE SKIP LOCKED`
//! under a lease; a job whose worker dies comes back when its lease runs out. Failures retry
//! with exponential backoff and end in a visible dead-letter state.
//!
//! The queue is an engine and knows no domain: a job's kind is only a name here. The domains
//! register a handler for each kind they run in a [`Handlers`] table, which the application
//! assembles (`app.rs`) and hands to the [`worker`].

pub mod worker;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// Workers listen here for new work.
pub const JOBS_CHANNEL: &str = "custodian_jobs";

pub struct NewJob {
    pub kind: &'static str,
    pub payload: Value,
    /// Enqueueing the same key twice is a no-op.
    pub idempotency_key: String,
    pub max_attempts: i32,
}

impl NewJob {
    pub fn new(kind: &'static str, idempotency_key: impl Into<String>, payload: Value) -> Self {
        NewJob {
            kind,
            payload,
            idempotency_key: idempotency_key.into(),
            max_attempts: 8,
        }
    }
}

/// Enqueues on the caller's (tenant-pinned) transaction; returns the job id, or `None` when a
/// job with that idempotency key already exists. Workers are woken at commit.
pub async fn enqueue(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    job: NewJob,
) -> sqlx::Result<Option<Uuid>> {
    let id = sqlx::query_scalar!(
        "INSERT INTO job (id, tenant_id, kind, payload, idempotency_key, max_attempts)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING id",
        Uuid::now_v7(),
        tenant_id,
        job.kind,
        job.payload,
        job.idempotency_key,
        job.max_attempts
    )
    .fetch_optional(&mut *conn)
    .await?;
    if id.is_some() {
        crate::events::notify(conn, JOBS_CHANNEL, String::new()).await?;
    }
    Ok(id)
}

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub kind: String,
    pub payload: Value,
    pub attempts: i32,
    pub max_attempts: i32,
}

/// Claims up to `limit` due jobs (and jobs whose lease expired) for this worker. Runs as the
/// schema owner: the queue is shared by all tenants, and each job then works inside its own
/// tenant's transaction.
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    lease: Duration,
    limit: i64,
) -> sqlx::Result<Vec<Job>> {
    sqlx::query_as!(
        Job,
        "UPDATE job SET status = 'running', attempts = attempts + 1, locked_by = $1,
                locked_until = now() + make_interval(secs => $2), updated_at = now()
         WHERE id IN (
             SELECT id FROM job
             WHERE (status = 'queued' AND run_at <= now())
                OR (status = 'running' AND locked_until < now())
             ORDER BY run_at
             LIMIT $3
             FOR UPDATE SKIP LOCKED)
         RETURNING id, tenant_id, kind, payload, attempts, max_attempts",
        worker,
        lease.as_secs_f64(),
        limit
    )
    .fetch_all(pool)
    .await
}

/// What running a job came to.
#[derive(Debug)]
pub enum Outcome {
    Done,
    /// Try again later (after `after` when the far side said so).
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Will never succeed: straight to the dead letters.
    Fail {
        error: String,
    },
    /// Not now, and not a failure: run again after `after` without spending an attempt (a
    /// send that waits for Meta's word on an interrupted attempt).
    Later {
        after: Duration,
        note: String,
    },
}

/// Runs one job of a kind, borrowing the state and the job: an `async fn(&S, &Job) -> Outcome`
/// behind `Box::pin`. A plain function, not a closure: a handler carries no state of its own.
pub type Handler<S> = for<'a> fn(&'a S, &'a Job) -> BoxFuture<'a, Outcome>;

/// Which handler runs which kind of job, each registered by the domain that owns the work.
pub struct Handlers<S> {
    by_kind: HashMap<&'static str, Handler<S>>,
}

impl<S> Default for Handlers<S> {
    fn default() -> Self {
        Handlers {
            by_kind: HashMap::new(),
        }
    }
}

impl<S> Handlers<S> {
    /// Two handlers for one kind would be a wiring mistake that silently drops one domain's
    /// work, so it stops the start instead.
    pub fn register(&mut self, kind: &'static str, handler: Handler<S>) {
        let earlier = self.by_kind.insert(kind, handler);
        assert!(earlier.is_none(), "job kind {kind} registered twice");
    }

    /// Runs the job with its kind's handler. A kind nobody registered can never run here, so it
    /// goes to the dead letters at once, named, rather than retrying in vain.
    pub async fn run(&self, state: &S, job: &Job) -> Outcome {
        match self.by_kind.get(job.kind.as_str()) {
            Some(handler) => handler(state, job).await,
            None => Outcome::Fail {
                error: format!("unknown job kind {}", job.kind),
            },
        }
    }
}

/// Records the outcome of a claimed job. Only the worker holding the claim may settle it.
pub async fn settle(
    pool: &PgPool,
    job: &Job,
    worker: &str,
    outcome: &Outcome,
    backoff: (Duration, Duration),
) -> sqlx::Result<()> {
    match outcome {
        Outcome::Done => {
            sqlx::query!(
                "UPDATE job SET status = 'done', finished_at = now(), updated_at = now(),
                        locked_until = NULL, last_error = NULL
                 WHERE id = $1 AND locked_by = $2 AND status = 'running'",
                job.id,
                worker
            )
            .execute(pool)
            .await?;
        }
        Outcome::Retry { error, after } if job.attempts < job.max_attempts => {
            let delay = after.unwrap_or_else(|| backoff_delay(job.attempts, backoff.0, backoff.1));
            sqlx::query!(
                "UPDATE job SET status = 'queued', run_at = now() + make_interval(secs => $3),
                        last_error = $4, locked_until = NULL, locked_by = NULL, updated_at = now()
                 WHERE id = $1 AND locked_by = $2 AND status = 'running'",
                job.id,
                worker,
                delay.as_secs_f64(),
                error
            )
            .execute(pool)
            .await?;
        }
        Outcome::Later { after, note } => {
            sqlx::query!(
                "UPDATE job SET status = 'queued', attempts = greatest(attempts - 1, 0),
                        run_at = now() + make_interval(secs => $3), last_error = $4,
                        locked_until = NULL, locked_by = NULL, updated_at = now()
                 WHERE id = $1 AND locked_by = $2 AND status = 'running'",
                job.id,
                worker,
                after.as_secs_f64(),
                note
            )
            .execute(pool)
            .await?;
        }
        Outcome::Retry { error, .. } | Outcome::Fail { error } => {
            tracing::warn!(job_id = %job.id, kind = %job.kind, %error, "job moved to the dead letters");
            sqlx::query!(
                "UPDATE job SET status = 'dead', finished_at = now(), last_error = $3,
                        locked_until = NULL, updated_at = now()
                 WHERE id = $1 AND locked_by = $2 AND status = 'running'",
                job.id,
                worker,
                error
            )
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// Extends the lease of a job this worker is still running, so that a job which runs longer
/// than one lease (a slow send, a long agent run) is not taken over by another worker while it
/// is alive. Returns false when the claim is no longer ours (the lease ran out and another
/// worker took the job, or it was settled).
pub async fn heartbeat(
    pool: &PgPool,
    job: &Job,
    worker: &str,
    lease: Duration,
) -> sqlx::Result<bool> {
    let renewed = sqlx::query!(
        "UPDATE job SET locked_until = now() + make_interval(secs => $3), updated_at = now()
         WHERE id = $1 AND locked_by = $2 AND status = 'running'",
        job.id,
        worker,
        lease.as_secs_f64()
    )
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Gives a claimed job back untouched (on shutdown), without spending an attempt.
pub async fn release(pool: &PgPool, job: &Job, worker: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE job SET status = 'queued', attempts = greatest(attempts - 1, 0), locked_until = NULL,
                locked_by = NULL, updated_at = now()
         WHERE id = $1 AND locked_by = $2 AND status = 'running'",
        job.id,
        worker
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Exponential backoff with jitter: base · 2^(attempt-1), capped, ±20 %.
pub fn backoff_delay(attempt: i32, base: Duration, max: Duration) -> Duration {
    let exp = 2f64.powi((attempt - 1).clamp(0, 30));
    let raw = (base.as_secs_f64() * exp).min(max.as_secs_f64());
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    Duration::from_secs_f64(raw * jitter)
}

/// Where a job is (`job.status`, CHECK `job_status_known`): waiting for its time or a worker,
/// being run, done, or dead (out of attempts, or failed for good).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Done,
    Dead,
}

impl JobStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Dead => "dead",
        }
    }
}

/// A job as members see it in the dead-letter view.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Job)]
pub struct JobView {
    pub id: Uuid,
    /// What the job does, e.g. `message.send`.
    pub kind: String,
    #[schema(value_type = JobStatus)]
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// Free-form: what the job was given to do.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// When it runs (next).
    #[serde(with = "time::serde::rfc3339")]
    pub run_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub finished_at: Option<OffsetDateTime>,
}

/// A tenant's jobs, newest first, of one status or all: what the dead-letter view lists.
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    status: Option<JobStatus>,
    limit: i64,
) -> sqlx::Result<Vec<JobView>> {
    sqlx::query_as!(
        JobView,
        "SELECT id, kind, status, attempts, max_attempts, last_error, payload, run_at, created_at, finished_at
         FROM job WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2)
         ORDER BY created_at DESC LIMIT $3",
        tenant_id,
        status.map(JobStatus::as_str),
        limit
    )
    .fetch_all(conn)
    .await
}

/// A dead job as it died.
#[derive(Debug)]
pub struct DeadJob {
    pub kind: String,
    pub payload: Value,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// Locks one of the tenant's dead jobs for a retry, on the caller's transaction; `None` when
/// the tenant has no such dead job.
pub async fn lock_dead(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    job_id: Uuid,
) -> sqlx::Result<Option<DeadJob>> {
    sqlx::query_as!(
        DeadJob,
        "SELECT kind, payload, attempts, last_error FROM job
         WHERE id = $1 AND tenant_id = $2 AND status = 'dead' FOR UPDATE",
        job_id,
        tenant_id
    )
    .fetch_optional(conn)
    .await
}

/// Puts a dead job (locked by [`lock_dead`]) back in line with all its attempts, due now;
/// workers are woken at commit.
pub async fn revive(conn: &mut PgConnection, job_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE job SET status = 'queued', attempts = 0, run_at = now(), finished_at = NULL,
                last_error = NULL, updated_at = now()
         WHERE id = $1",
        job_id
    )
    .execute(&mut *conn)
    .await?;
    crate::events::notify(conn, JOBS_CHANNEL, String::new()).await
}

/// A data subject's erasure (DSR-3): jobs about their messages or conversations (sends, agent
/// runs, finished ones with their last errors) go, so nothing is sent or retried for erased
/// data. `ids` are the messages' and conversations' ids as text.
pub async fn forget(conn: &mut PgConnection, tenant_id: Uuid, ids: &[String]) -> sqlx::Result<i64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let n = sqlx::query!(
        "DELETE FROM job
         WHERE tenant_id = $1
           AND (payload ->> 'message_id' = ANY ($2) OR payload ->> 'conversation_id' = ANY ($2)
                OR payload ->> 'contact_id' = ANY ($2))",
        tenant_id,
        ids
    )
    .execute(conn)
    .await?;
    Ok(n.rows_affected() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(kind: &str) -> Job {
        Job {
            id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            kind: kind.into(),
            payload: Value::Null,
            attempts: 1,
            max_attempts: 8,
        }
    }

    #[tokio::test]
    async fn a_job_runs_with_its_kinds_handler_and_an_unknown_kind_fails_for_good() {
        let mut jobs = Handlers::<u32>::default();
        jobs.register("known", |seen, _| {
            Box::pin(async move {
                assert_eq!(*seen, 7);
                Outcome::Done
            })
        });
        assert!(matches!(jobs.run(&7, &job("known")).await, Outcome::Done));
        match jobs.run(&7, &job("stray")).await {
            Outcome::Fail { error } => assert_eq!(error, "unknown job kind stray"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    #[should_panic(expected = "job kind twice registered twice")]
    fn a_kind_registered_twice_stops_the_start() {
        let mut jobs = Handlers::<()>::default();
        jobs.register("twice", |_, _| Box::pin(async { Outcome::Done }));
        jobs.register("twice", |_, _| Box::pin(async { Outcome::Done }));
    }

    #[test]
    fn backoff_grows_exponentially_and_stops_at_the_cap() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        let d1 = backoff_delay(1, base, max).as_secs_f64();
        let d3 = backoff_delay(3, base, max).as_secs_f64();
        let d20 = backoff_delay(20, base, max).as_secs_f64();
        assert!((1.6..=2.4).contains(&d1), "{d1}");
        assert!((6.4..=9.6).contains(&d3), "{d3}");
        assert!((48.0..=72.0).contains(&d20), "{d20}");
    }
}
