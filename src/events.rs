//! Live updates. Changes publish an event with `pg_notify` inside their own transaction (or, on
//! the hot inbound paths, right after it: see [`deferred`]), so an event exists only if its
//! change committed, and every server instance hears it. One listener
//! per process fans events out to the SSE streams of the inbox and the web chat, each of which
//! filters by tenant (and, for a visitor, by the contact and inbox a message is for). Streams
//! are counted per client and end after a while (see [`Streams`] and [`end_of_life`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{future, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::PgConnection;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::StreamLimits;
use crate::error::Error;

const CHANNEL: &str = "custodian_events";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub tenant_id: Uuid,
    /// `message.created`, `message.updated`, `conversation.updated`, …
    pub kind: String,
    pub conversation_id: Option<Uuid>,
    pub message_id: Option<Uuid>,
    /// Small, non-sensitive details; streams re-read anything large. `message.created`
    /// carries the `contact_id` and `inbox_id` the message belongs to.
    #[serde(default)]
    pub data: Value,
}

/// Publishes on the caller's transaction: delivered at commit, dropped on rollback.
pub async fn publish(conn: &mut PgConnection, event: &Event) -> sqlx::Result<()> {
    let payload = serde_json::to_string(event).expect("events serialise");
    notify(conn, CHANNEL, payload).await
}

tokio::task_local! {
    static DEFERRED: RefCell<Vec<(&'static str, String)>>;
}

/// `pg_notify` on the caller's transaction, or, inside [`deferred`], held back until after
/// the commit.
pub async fn notify(
    conn: &mut PgConnection,
    channel: &'static str,
    payload: String,
) -> sqlx::Result<()> {
    let mut payload = Some(payload);
    let held = DEFERRED
        .try_with(|pending| {
            let mut pending = pending.borrow_mut();
            let payload = payload.take().unwrap_or_default();
            // One wake-up per channel is as good as many when there is no payload.
            if !(payload.is_empty() && pending.iter().any(|(c, p)| *c == channel && p.is_empty())) {
                pending.push((channel, payload));
            }
        })
        .is_ok();
    if !held {
        sqlx::query_scalar!(
            "SELECT pg_notify($1, $2)",
            channel,
            payload.unwrap_or_default()
        )
        .fetch_one(conn)
        .await?;
    }
    Ok(())
}

/// Runs `work`, which commits its own transaction, and hands the notifications it produced to
/// the [`Notifier`], which sends them outside any write transaction.
///
/// A transaction that notifies holds a database-wide lock from its commit record until the
/// commit ends, so notifying writers commit one at a time and group commit cannot batch their
/// WAL flushes: under load that caps ingestion at one commit per disk flush. Hot paths (inbound
/// webhooks and chat messages) therefore notify after the commit. If that last step fails the
/// change is still stored: live streams miss one event and the job worker finds the work on its
/// next poll.
pub async fn deferred<T, E>(
    notifier: &Notifier,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let (result, pending) = DEFERRED
        .scope(RefCell::new(Vec::new()), async {
            let result = work.await;
            (result, DEFERRED.with(|p| p.take()))
        })
        .await;
    if result.is_ok() {
        for notification in pending {
            notifier.send(notification);
        }
    }
    result
}

type Notification = (&'static str, String);

/// Sends notifications after their transactions committed, from one task that takes whatever
/// has queued up since its last statement and sends it in one: under load, one statement for
/// many requests, and no request waits for its notification to go out.
pub struct Notifier {
    queue: mpsc::UnboundedSender<Notification>,
    /// The sending task starts on first use, inside the runtime.
    idle: std::sync::Mutex<Option<(mpsc::UnboundedReceiver<Notification>, sqlx::PgPool)>>,
}

/// At most this many notifications per statement.
const NOTIFY_BATCH: usize = 256;

impl Notifier {
    pub fn new(pool: sqlx::PgPool) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        Notifier {
            queue,
            idle: std::sync::Mutex::new(Some((receiver, pool))),
        }
    }

    fn send(&self, notification: Notification) {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((receiver, pool)) = idle {
            tokio::spawn(Self::run(receiver, pool));
        }
        // Fails only when the task is gone, at shutdown: the change itself is stored.
        let _ = self.queue.send(notification);
    }

    async fn run(mut receiver: mpsc::UnboundedReceiver<Notification>, pool: sqlx::PgPool) {
        let mut batch = Vec::with_capacity(NOTIFY_BATCH);
        // Ends when every sender (every copy of the state) is gone.
        while receiver.recv_many(&mut batch, NOTIFY_BATCH).await > 0 {
            let (channels, payloads): (Vec<String>, Vec<String>) =
                batch.drain(..).map(|(c, p)| (c.to_string(), p)).unzip();
            if let Err(e) = sqlx::query!(
                "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)",
                &channels,
                &payloads
            )
            .fetch_all(&pool)
            .await
            {
                tracing::warn!(error = %e, count = channels.len(), "sending notifications after their commits failed");
            }
        }
    }
}

/// The in-process side of the bus.
#[derive(Clone)]
pub struct Bus {
    sender: broadcast::Sender<Event>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            sender: broadcast::channel(1024).0,
        }
    }
}

impl Bus {
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

/// Something a process does with every event it hears, before any stream sees it: a domain's
/// cache dropping what another process changed, say. The bus knows no domain; the composition
/// hands it the hooks.
pub type Hook = Arc<dyn Fn(&Event) + Send + Sync>;

/// Listens for notifications until shutdown, reconnecting if the connection drops. Each event
/// runs the `hooks`, then goes to the in-process subscribers.
pub fn spawn_listener(
    system: sqlx::PgPool,
    bus: Bus,
    shutdown: CancellationToken,
    hooks: Vec<Hook>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !shutdown.is_cancelled() {
            match listen(&system, &bus, &shutdown, &hooks).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "event listener lost its connection; reconnecting");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    })
}

async fn listen(
    system: &sqlx::PgPool,
    bus: &Bus,
    shutdown: &CancellationToken,
    hooks: &[Hook],
) -> sqlx::Result<()> {
    let mut listener = PgListener::connect_with(system).await?;
    listener.listen(CHANNEL).await?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            notification = listener.recv() => {
                let notification = notification?;
                match serde_json::from_str::<Event>(notification.payload()) {
                    Ok(event) => {
                        for hook in hooks {
                            hook(&event);
                        }
                        // No subscribers is fine: nobody is watching.
                        let _ = bus.sender.send(event);
                    }
                    Err(e) => tracing::warn!(error = %e, "malformed event notification"),
                }
            }
        }
    }
}

/// What live streams need of the process: the bus they read, the streams open, their limits
/// and the shutdown they end at.
#[derive(Clone)]
pub struct Live {
    pub bus: Bus,
    pub streams: Arc<Streams>,
    pub limits: StreamLimits,
    pub shutdown: CancellationToken,
}

/// The live streams this process holds open, counted per holder so that no client holds more
/// than its share: every open stream costs memory and a copy of every event, and a web chat
/// stream also a database lookup for each reply to its visitor. Counts are per process; a
/// client spread over several processes gets a share in each.
#[derive(Default)]
pub struct Streams {
    open: std::sync::Mutex<HashMap<Holder, usize>>,
    lookups: AtomicU64,
}

/// Who holds streams open, as counted against a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Holder {
    /// A web chat visitor's session.
    Visitor(Uuid),
    /// A client address; see [`Holder::address`].
    Address(IpAddr),
    /// A member's session or API token.
    Credential(Uuid),
}

impl Holder {
    /// An IPv4 address, or the /64 of an IPv6 one: a single subscriber usually holds a whole
    /// /64, so counting its addresses one by one would not cap anything.
    pub fn address(ip: IpAddr) -> Holder {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
            },
            v4 => v4,
        };
        Holder::Address(ip)
    }
}

/// A cap on one holder's open streams; `per` names the holder in the refusal.
pub struct Cap {
    pub holder: Holder,
    pub limit: usize,
    pub per: &'static str,
}

impl Streams {
    /// Opens a stream against every cap at once, or refuses it (and takes nothing) when any
    /// holder already has its limit open. The slot is given back when it is dropped.
    pub fn open(self: &Arc<Self>, caps: &[Cap]) -> Result<Slot, Error> {
        let mut open = self.lock();
        if let Some(full) = caps
            .iter()
            .find(|cap| open.get(&cap.holder).copied().unwrap_or(0) >= cap.limit)
        {
            return Err(Error::TooManyStreams {
                limit: full.limit,
                per: full.per,
            });
        }
        for cap in caps {
            *open.entry(cap.holder).or_default() += 1;
        }
        Ok(Slot {
            streams: self.clone(),
            holders: caps.iter().map(|cap| cap.holder).collect(),
        })
    }

    /// Counts one database lookup made for a stream.
    pub fn looked_up(&self) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
    }

    /// How many database lookups streams have made since start.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Holder, usize>> {
        // Plain counts, consistent after every statement: a panic elsewhere cannot spoil them.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One open stream's place under its holders' caps. It lives inside the stream, so however
/// the stream ends (the client leaves, its lifetime or credential runs out, shutdown), the
/// place is given back.
pub struct Slot {
    streams: Arc<Streams>,
    holders: Vec<Holder>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.lock();
        for holder in &self.holders {
            if let Some(count) = open.get_mut(holder) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(holder);
                }
            }
        }
    }
}

/// The SSE event that tells a client its stream fell behind and dropped events: it should
/// fetch what it shows again instead of trusting the stream to be complete.
pub const RESYNC: &str = "resync";

/// The `resync` event for a stream that missed `missed` events.
pub fn resync_event(missed: u64) -> SseEvent {
    SseEvent::default()
        .event(RESYNC)
        .json_data(serde_json::json!({ "missed": missed }))
        .unwrap_or_else(|_| SseEvent::default().event(RESYNC).data("{}"))
}

/// Resolves when a stream must end: at shutdown, at `deadline` if given, and at the latest
/// once it has lived the longest lifetime. Streams end rather than live forever so that
/// nothing a client was once allowed lasts beyond a reconnect, where it is checked afresh
/// (a browser's EventSource reconnects by itself).
pub fn end_of_life(
    live: &Live,
    deadline: Option<tokio::time::Instant>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let stop = live.shutdown.clone();
    let latest = later(live.limits.max_lifetime);
    let at = deadline.map_or(latest, |d| d.min(latest));
    async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep_until(at) => {}
        }
    }
}

/// `after` from now; the configuration keeps it small, so the fallback is never reached.
fn later(after: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(86_400))
}

/// The bus event announcing that credentials of a member were revoked, or the member changed
/// (disabled, given another role). Internal: streams act on it and never deliver it.
pub const CREDENTIALS_REVOKED: &str = "credentials.revoked";

/// What keeps a members' stream open: the credential that opened it, checked again while the
/// stream lasts. The bus knows no domain, so the holder says which events may have revoked it
/// and whether it still holds.
pub trait Revocable: Send + Sync + 'static {
    /// Whether `event` may have revoked what is held: check before delivering anything after it.
    fn concerns(&self, event: &Event) -> bool;
    /// Whether the stream may go on.
    fn holds(&self) -> futures_util::future::BoxFuture<'_, bool>;
}

/// What a members' stream does with one item of its input.
enum Step {
    Deliver(SseEvent),
    /// Check the credential; go on (with this event, if any) only if it still holds.
    Check(Option<SseEvent>),
    Skip,
}

/// A members' SSE response of the events that `keep` accepts. It ends at shutdown, at the
/// end of its lifetime, and as soon as its credential no longer holds: checked when one of
/// its member's credentials is revoked, before anything after that revocation is delivered,
/// and every `recheck` in case a revocation went unheard. A stream too slow to keep up loses
/// events; it then gets a `resync` event instead of silence (once its credential is checked,
/// as the lost events may have held a revocation). `slot` is held while the stream is open.
pub fn stream(
    live: &Live,
    keep: impl Fn(&Event) -> bool + Send + 'static,
    held: impl Revocable,
    slot: Slot,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let held = Arc::new(held);
    let concerns = held.clone();
    let events = BroadcastStream::new(live.bus.subscribe()).map(move |item| match item {
        Ok(event) if concerns.concerns(&event) => Step::Check(None),
        Ok(event) if event.kind != CREDENTIALS_REVOKED && keep(&event) => Step::Deliver(
            SseEvent::default()
                .event(event.kind.clone())
                .json_data(&event)
                .unwrap_or_else(|_| SseEvent::default().comment("unserialisable event")),
        ),
        Ok(_) => Step::Skip,
        Err(BroadcastStreamRecvError::Lagged(missed)) => {
            tracing::warn!(missed, "an event stream fell behind; telling it to resync");
            Step::Check(Some(resync_event(missed)))
        }
    });
    let every = live.limits.recheck;
    let mut ticks = tokio::time::interval_at(later(every), every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let checks = futures_util::stream::unfold(ticks, |mut ticks| async move {
        ticks.tick().await;
        Some((Step::Check(None), ticks))
    });
    let events = futures_util::stream::select(events, checks)
        .then(move |step| {
            let held = held.clone();
            async move {
                match step {
                    Step::Deliver(event) => Some(Some(event)),
                    Step::Skip => Some(None),
                    Step::Check(then) => held.holds().await.then_some(then),
                }
            }
        })
        // The credential no longer holds: the stream ends here, whatever comes after.
        .take_while(|step| future::ready(step.is_some()))
        .filter_map(|step| future::ready(step.flatten()))
        .map(move |event| {
            let _open = &slot;
            Ok(event)
        })
        .take_until(end_of_life(live, None));
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
