//! Writes verified WhatsApp deliveries in shared transactions. Under load many webhooks arrive
//! at once; instead of one transaction (and one disk flush, and a `BEGIN` and a `COMMIT`) each,
//! a few writer tasks take whatever deliveries are waiting, store them in one transaction per
//! tenant and answer each request only after that transaction committed. A delivery still gets
//! its 200 only once it is durable, and Meta's retries of a failed one stay welcome.
//!
//! One delivery that cannot be stored must not cost the others theirs: when a shared
//! transaction fails, each of its deliveries is stored again on its own, so only the bad one
//! fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::webhook::store_deliveries;
use super::{Event, Webhook};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::events::{self, Notifier};

/// Writer tasks: while one waits for its commit to reach the disk, the others fill the next
/// transactions.
const WRITERS: usize = 4;
/// At most this many deliveries share a transaction.
const BATCH: usize = 32;
/// Deliveries waiting for a writer; beyond this, requests wait before being queued.
const QUEUE: usize = 1024;

/// One verified delivery to store.
pub struct Delivery {
    pub tenant_id: Uuid,
    pub inbox_id: Uuid,
    /// The inbox's phone-number id.
    pub our_number: String,
    /// Other numbers of the same tenant and Meta app named in the delivery, with their inboxes:
    /// their events go there. Events for any other number are ignored.
    pub others: Vec<(String, Uuid)>,
    pub webhook: Webhook,
}

impl Delivery {
    /// The inbox of the number an event is for; `None` for a number that is not ours (those
    /// were logged on receipt).
    pub fn route(&self, number: &str) -> Option<Uuid> {
        if number == self.our_number {
            Some(self.inbox_id)
        } else {
            self.others
                .iter()
                .find(|(n, _)| n == number)
                .map(|(_, id)| *id)
        }
    }

    /// The first message's sender, which names the conversation it joins.
    fn sender(&self) -> Option<&str> {
        self.webhook.events.iter().find_map(|event| match event {
            Event::Message(msg) => msg.from_wa_id.as_deref().or(msg.from_user_id.as_deref()),
            Event::Status(_) => None,
        })
    }
}

type Pending = (Delivery, oneshot::Sender<Result<usize>>);
type Shared = Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>;

pub struct WebhookWriter {
    queue: mpsc::Sender<Pending>,
    /// The writer tasks start on first use, inside the runtime.
    idle: Mutex<Option<(Shared, Db, Arc<Notifier>)>>,
    /// Shared transactions that failed, so that their deliveries were stored one by one.
    shared_failures: Arc<AtomicU64>,
}

impl WebhookWriter {
    pub fn new(db: Db, notifier: Arc<Notifier>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        WebhookWriter {
            queue,
            idle: Mutex::new(Some((
                Arc::new(tokio::sync::Mutex::new(receiver)),
                db,
                notifier,
            ))),
            shared_failures: Arc::default(),
        }
    }

    /// How many shared transactions failed since start (each then stored its deliveries one
    /// by one). Anything above zero deserves a look at the warnings in the log.
    pub fn shared_failures(&self) -> u64 {
        self.shared_failures.load(Ordering::Relaxed)
    }

    /// Stores the delivery and returns how many new messages it held, once they are durable.
    pub async fn write(&self, delivery: Delivery) -> Result<usize> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((receiver, db, notifier)) = idle {
            for _ in 0..WRITERS {
                tokio::spawn(run(
                    receiver.clone(),
                    db.clone(),
                    notifier.clone(),
                    self.shared_failures.clone(),
                ));
            }
        }
        let (done, answer) = oneshot::channel();
        self.queue
            .send((delivery, done))
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down"))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the server is shutting down"))?
    }
}

/// A writer: takes whatever is waiting (at most [`BATCH`]) and stores it, until every sender is
/// gone.
async fn run(receiver: Shared, db: Db, notifier: Arc<Notifier>, failures: Arc<AtomicU64>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let received = receiver.lock().await.recv_many(&mut batch, BATCH).await;
        if received == 0 {
            return;
        }
        // One transaction per tenant: each is pinned to its tenant for row-level security.
        while !batch.is_empty() {
            let tenant_id = batch[0].0.tenant_id;
            let (same, rest): (Vec<Pending>, Vec<Pending>) =
                batch.drain(..).partition(|(d, _)| d.tenant_id == tenant_id);
            batch = rest;
            write_together(&db, &notifier, tenant_id, same, &failures).await;
        }
    }
}

/// Stores one tenant's deliveries in one transaction; if that fails, each on its own.
async fn write_together(
    db: &Db,
    notifier: &Notifier,
    tenant_id: Uuid,
    mut pending: Vec<Pending>,
    failures: &AtomicU64,
) {
    if pending.len() > 1 {
        // Writers lock conversations in the same order (by sender), so two shared transactions
        // do not wait on each other's rows.
        pending.sort_by(|(a, _), (b, _)| a.sender().cmp(&b.sender()));
        let deliveries: Vec<&Delivery> = pending.iter().map(|(d, _)| d).collect();
        match store(db, notifier, tenant_id, &deliveries).await {
            Ok(stored) => {
                for ((_, done), count) in pending.into_iter().zip(stored) {
                    // The request may have gone (client timeout): its delivery is stored anyway.
                    let _ = done.send(Ok(count));
                }
                return;
            }
            Err(e) => {
                failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, count = pending.len(), "a shared webhook transaction failed; storing its deliveries one by one");
            }
        }
    }
    for (delivery, done) in pending {
        let alone = store(db, notifier, tenant_id, &[&delivery])
            .await
            .map(|stored| stored[0]);
        let _ = done.send(alone);
    }
}

/// Stores the deliveries in one transaction; returns how many new messages each held. Their
/// notifications go out after the commit.
async fn store(
    db: &Db,
    notifier: &Notifier,
    tenant_id: Uuid,
    deliveries: &[&Delivery],
) -> Result<Vec<usize>> {
    events::deferred(notifier, async {
        let mut tx = db
            .tenant_tx_with(tenant_id, crate::conversations::INGEST_TX)
            .await?;
        let stored = store_deliveries(&mut tx, tenant_id, deliveries).await?;
        tx.commit().await?;
        Ok(stored)
    })
    .await
}
