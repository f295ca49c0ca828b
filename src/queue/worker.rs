//! The in-process worker: claims due jobs, runs them with bounded concurrency, settles each
//! outcome, and on shutdown stops claiming and lets running jobs finish (a job cut short
//! comes back to another worker when its lease expires).

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::{claim, settle, Job, Outcome};
use crate::app::AppState;

/// How long shutdown waits for running jobs before leaving them to lease expiry.
const DRAIN: Duration = Duration::from_secs(10);

pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = run(state).await {
            tracing::error!(error = ?e, "the job worker stopped");
        }
    })
}

async fn run(state: AppState) -> anyhow::Result<()> {
    let config = state.config.worker.clone();
    let worker_id = format!("worker-{}", Uuid::new_v4().simple());
    let stop = state.shutdown.clone();
    let mut listener = PgListener::connect_with(&state.db.system).await?;
    listener.listen("custodian_jobs").await?;
    let permits = Arc::new(Semaphore::new(config.concurrency));
    let mut running = JoinSet::new();
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
                running.spawn(async move {
                    let outcome = dispatch(&state, &job).await;
                    let backoff = (state.config.worker.base_backoff, state.config.worker.max_backoff);
                    if let Err(e) = settle(&state.db.system, &job, &worker_id, &outcome, backoff).await {
                        tracing::warn!(job_id = %job.id, error = %e, "settling a job failed; its lease will expire");
                    }
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
    let drained = tokio::time::timeout(DRAIN, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        running.abort_all();
    }
    Ok(())
}

async fn dispatch(state: &AppState, job: &Job) -> Outcome {
    let span = tracing::info_span!("job", job_id = %job.id, kind = %job.kind, tenant_id = %job.tenant_id, attempt = job.attempts);
    async {
        match job.kind.as_str() {
            super::SEND_MESSAGE => crate::conversations::delivery::run(state, job).await,
            crate::agent::runtime::RUN_JOB => crate::agent::runtime::run_job(state, job).await,
            crate::knowledge::EMBED_JOB => crate::knowledge::run_embed_job(state, job).await,
            crate::reviews::EXECUTE_JOB => crate::reviews::run_execute_job(state, job).await,
            crate::audit::export::JOB => crate::audit::export::run_job(state, job).await,
            other => Outcome::Fail {
                error: format!("unknown job kind {other}"),
            },
        }
    }
    .instrument(span)
    .await
}
