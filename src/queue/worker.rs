//! The in-process worker: claims due jobs, runs them with bounded concurrency, keeps their
//! leases alive while they run, settles each outcome, and on shutdown stops claiming, lets
//! running jobs finish for a while, then cuts the rest short and gives them back to the queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::{claim, heartbeat, release, settle, Job, Outcome};
use crate::app::AppState;

/// How long shutdown waits for running jobs before cutting them short and releasing them.
pub const DRAIN: Duration = Duration::from_secs(10);

pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    spawn_draining_for(state, DRAIN)
}

/// As [`spawn`], waiting at most `drain` for running jobs on shutdown.
pub fn spawn_draining_for(state: AppState, drain: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = run(state, drain).await {
            tracing::error!(error = ?e, "the job worker stopped");
        }
    })
}

/// Jobs this worker holds, by id: what is left here after the drain was cut short.
type Held = Arc<Mutex<HashMap<Uuid, Job>>>;

async fn run(state: AppState, drain: Duration) -> anyhow::Result<()> {
    let config = state.config.worker.clone();
    let worker_id = format!("worker-{}", Uuid::new_v4().simple());
    let stop = state.shutdown.clone();
    let mut listener = PgListener::connect_with(&state.db.system).await?;
    listener.listen("custodian_jobs").await?;
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
            let jobs = match claim(&state.db.system, &worker_id, config.lease, free as i64).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming jobs failed");
                    Vec::new()
                }
            };
            claimed = jobs.len();
            for job in jobs {
                let permit = permits.clone().acquire_owned().await?;
                let state = state.clone();
                let worker_id = worker_id.clone();
                let held = held.clone();
                held.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(job.id, job.clone());
                running.spawn(async move {
                    let outcome = run_alive(&state, &job, &worker_id).await;
                    let backoff = (state.config.worker.base_backoff, state.config.worker.max_backoff);
                    if let Err(e) = settle(&state.db.system, &job, &worker_id, &outcome, backoff).await {
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
            match release(&state.db.system, job, &worker_id).await {
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
async fn run_alive(state: &AppState, job: &Job, worker_id: &str) -> Outcome {
    let lease = state.config.worker.lease;
    let work = dispatch(state, job);
    tokio::pin!(work);
    let mut beat = tokio::time::interval(lease / 3);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The claim itself just set the lease.
    beat.tick().await;
    loop {
        tokio::select! {
            outcome = &mut work => return outcome,
            _ = beat.tick() => match heartbeat(&state.db.system, job, worker_id, lease).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(job_id = %job.id, kind = %job.kind, "lost the lease of a running job; another worker may run it too"),
                Err(e) => tracing::warn!(job_id = %job.id, error = %e, "renewing a job's lease failed"),
            },
        }
    }
}

async fn dispatch(state: &AppState, job: &Job) -> Outcome {
    let span = tracing::info_span!("job", job_id = %job.id, kind = %job.kind, tenant_id = %job.tenant_id, attempt = job.attempts);
    async {
        match job.kind.as_str() {
            super::SEND_MESSAGE => crate::conversations::delivery::run(state, job).await,
            crate::agent::runtime::RUN_JOB => crate::agent::runtime::run_job(state, job).await,
            crate::knowledge::EMBED_JOB => crate::knowledge::run_embed_job(state, job).await,
            crate::reviews::EXECUTE_JOB => crate::agent::tools::run_approved_job(state, job).await,
            crate::audit::export::JOB => crate::audit::export::run_job(state, job).await,
            other => Outcome::Fail {
                error: format!("unknown job kind {other}"),
            },
        }
    }
    .instrument(span)
    .await
}
