//! The in-process worker: claims due jobs, runs them with bounded concurrency, keeps their
//! leases alive while they run, settles each outcome, and on shutdown stops claiming, lets
//! running jobs finish for a while, then cuts the rest short and gives them back to the queue.
//!
//! Generic over the state its handlers take: the worker is part of the queue engine and names
//! no domain, nor the application's state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::{claim, heartbeat, release, settle, Handlers, Job, Outcome, JOBS_CHANNEL};
use crate::config::WorkerConfig;

/// How long shutdown waits for running jobs before cutting them short and releasing them.
pub const DRAIN: Duration = Duration::from_secs(10);

/// What a worker runs with.
pub struct Worker<S> {
    /// Handed to every job's handler.
    pub state: S,
    pub jobs: Handlers<S>,
    /// Claims, renews and settles as the schema owner: the queue is shared by all tenants, and
    /// each handler works inside its own tenant's transaction.
    pub pool: PgPool,
    pub config: WorkerConfig,
    /// Cancelled once on shutdown.
    pub shutdown: CancellationToken,
}

/// What every running job shares.
struct Shared<S> {
    state: S,
    jobs: Handlers<S>,
    pool: PgPool,
    config: WorkerConfig,
}

pub fn spawn<S>(worker: Worker<S>) -> tokio::task::JoinHandle<()>
where
    S: Send + Sync + 'static,
{
    spawn_draining_for(worker, DRAIN)
}

/// As [`spawn`], waiting at most `drain` for running jobs on shutdown.
pub fn spawn_draining_for<S>(worker: Worker<S>, drain: Duration) -> tokio::task::JoinHandle<()>
where
    S: Send + Sync + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = run(worker, drain).await {
            tracing::error!(error = ?e, "the job worker stopped");
        }
    })
}

/// Jobs this worker holds, by id: what is left here after the drain was cut short.
type Held = Arc<Mutex<HashMap<Uuid, Job>>>;

async fn run<S>(worker: Worker<S>, drain: Duration) -> anyhow::Result<()>
where
    S: Send + Sync + 'static,
{
    let Worker {
        state,
        jobs,
        pool,
        config,
        shutdown: stop,
    } = worker;
    let shared = Arc::new(Shared {
        state,
        jobs,
        pool,
        config: config.clone(),
    });
    let worker_id = format!("worker-{}", Uuid::new_v4().simple());
    let mut listener = PgListener::connect_with(&shared.pool).await?;
    listener.listen(JOBS_CHANNEL).await?;
    let permits = Arc::new(Semaphore::new(config.concurrency));
    let mut running = JoinSet::new();
    let held: Held = Arc::default();
    tracing::info!(%worker_id, concurrency = config.concurrency, "job worker started");

    loop {
        if stop.is_cancelled() {
            break;
        }
        let free = permits.available_permits();
        let mut claimed = 0;
        if free > 0 {
            let jobs = match claim(&shared.pool, &worker_id, config.lease, free as i64).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming jobs failed");
                    Vec::new()
                }
            };
            claimed = jobs.len();
            for job in jobs {
                let permit = permits.clone().acquire_owned().await?;
                let shared = shared.clone();
                let worker_id = worker_id.clone();
                let held = held.clone();
                held.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(job.id, job.clone());
                running.spawn(async move {
                    let outcome = run_alive(&shared, &job, &worker_id).await;
                    let backoff = (shared.config.base_backoff, shared.config.max_backoff);
                    if let Err(e) = settle(&shared.pool, &job, &worker_id, &outcome, backoff).await {
                        tracing::warn!(job_id = %job.id, error = %e, "settling a job failed; its lease will expire");
                    }
                    held.lock().unwrap_or_else(PoisonError::into_inner).remove(&job.id);
                    drop(permit);
                });
            }
        }
        if claimed > 0 && claimed == free {
            // There may be more due work: go round again once a slot frees up.
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = running.join_next() => {}
            }
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = listener.recv() => {}
            _ = tokio::time::sleep(config.poll) => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
        }
    }

    tracing::info!(running = running.len(), "job worker draining");
    let drained = tokio::time::timeout(drain, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        running.abort_all();
        while running.join_next().await.is_some() {}
        // Cut short, not failed: back to the queue at once, the attempt not counted, instead
        // of sitting `running` until the lease runs out. A job that settled just before the
        // abort is no longer `running` under our name, and releasing it changes nothing.
        let cut: Vec<Job> = held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, job)| job)
            .collect();
        for job in &cut {
            match release(&shared.pool, job, &worker_id).await {
                Ok(()) => {
                    tracing::info!(job_id = %job.id, kind = %job.kind, "job cut short by shutdown and released")
                }
                Err(e) => {
                    tracing::warn!(job_id = %job.id, error = %e, "releasing a job failed; its lease will expire")
                }
            }
        }
    }
    Ok(())
}

/// Runs the job while renewing its lease, a third of a lease apart, so that a live worker
/// keeps its job however long it runs (a send waiting on a slow Graph API, an agent run
/// waiting on its model) and only a dead worker's job is taken over.
async fn run_alive<S>(shared: &Shared<S>, job: &Job, worker_id: &str) -> Outcome {
    let lease = shared.config.lease;
    let span = tracing::info_span!("job", job_id = %job.id, kind = %job.kind, tenant_id = %job.tenant_id, attempt = job.attempts);
    let work = shared.jobs.run(&shared.state, job).instrument(span);
    tokio::pin!(work);
    let mut beat = tokio::time::interval(lease / 3);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The claim itself just set the lease.
    beat.tick().await;
    loop {
        tokio::select! {
            outcome = &mut work => return outcome,
            _ = beat.tick() => match heartbeat(&shared.pool, job, worker_id, lease).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(job_id = %job.id, kind = %job.kind, "lost the lease of a running job; another worker may run it too"),
                Err(e) => tracing::warn!(job_id = %job.id, error = %e, "renewing a job's lease failed"),
            },
        }
    }
}
