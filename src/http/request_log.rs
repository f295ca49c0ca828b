//! The request log (RET-1 "request logs 30 days"): every authenticated API request leaves one
//! row — tenant, member and API token, method, the matched route's template (never the raw
//! path, which holds ids), status, duration, client address, user agent, request id, time. No
//! bodies, and nothing from public routes (sign-up, login, the web chat, webhooks: they have no
//! tenant-attributed caller, and webhooks are a hot path with their own storage).
//!
//! Logging stays off the request's critical path: the middleware hands the entry to a bounded
//! channel and returns; one task writes whatever waits in batches (`INSERT … SELECT FROM
//! UNNEST`) through the owner pool, since a batch spans tenants. When the channel is full the
//! entry is dropped and counted, with a warning, rather than slowing requests down. On
//! shutdown the task keeps writing until the requests still running have finished (bounded),
//! then stops. A request dropped before it had an answer (the timeout, or a client that went
//! away) is logged with status 499 once the guard had let it in. Requests the throttle refuses
//! (429) are not logged: that would add work exactly when a client floods.
//!
//! Admins and auditors read it through `GET /api/v1/request-log`; retention's `request_log`
//! class deletes rows older than the tenant's period (30 days at most).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Access, Api, Json, Query, RequestMeta};
use super::{Credential, Ctx};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::rbac::Permission;

/// Entries waiting for the writer; beyond this, new ones are dropped (and counted).
const QUEUE: usize = 4096;
/// Rows per INSERT.
const BATCH: usize = 500;
/// How long the writer waits, at shutdown, for requests still running to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// One logged request.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub member_id: Uuid,
    pub api_token_id: Option<Uuid>,
    pub method: String,
    pub route: &'static str,
    pub status: u16,
    pub duration_ms: f32,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub at: OffsetDateTime,
}

enum Msg {
    Entry(Box<Entry>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

pub struct RequestLog {
    queue: mpsc::Sender<Msg>,
    /// The writer starts with the workers, or on first use (tests drive the router alone).
    idle: Mutex<Option<mpsc::Receiver<Msg>>>,
    started: AtomicBool,
    pool: PgPool,
    shutdown: CancellationToken,
    in_flight: Arc<AtomicUsize>,
    dropped: AtomicU64,
    failed: Arc<AtomicU64>,
}

impl RequestLog {
    pub fn new(pool: PgPool, shutdown: CancellationToken) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        RequestLog {
            queue,
            idle: Mutex::new(Some(receiver)),
            started: AtomicBool::new(false),
            pool,
            shutdown,
            in_flight: Arc::default(),
            dropped: AtomicU64::new(0),
            failed: Arc::default(),
        }
    }

    /// Starts the writer unless it runs already; the handle ends after the shutdown flush.
    pub fn start(&self) -> Option<tokio::task::JoinHandle<()>> {
        if self.started.load(Ordering::Acquire) {
            return None;
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let receiver = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        self.started.store(true, Ordering::Release);
        Some(runtime.spawn(write_loop(
            receiver,
            self.pool.clone(),
            self.shutdown.clone(),
            self.in_flight.clone(),
            self.failed.clone(),
        )))
    }

    /// Entries dropped because the queue was full (or the writer had stopped).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Entries lost because their batch could not be written.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Queues an entry without waiting; a full queue drops it.
    pub fn record(&self, entry: Entry) {
        self.start();
        if self.queue.try_send(Msg::Entry(Box::new(entry))).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_multiple_of(1000) {
                tracing::warn!(
                    dropped = n,
                    "request log queue full: entries dropped (the database is not keeping up)"
                );
            }
        }
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) {
        self.start();
        let (done, written) = oneshot::channel();
        if self.queue.send(Msg::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// Counts a request as running while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn write_loop(
    mut receiver: mpsc::Receiver<Msg>,
    pool: PgPool,
    shutdown: CancellationToken,
    in_flight: Arc<AtomicUsize>,
    failed: Arc<AtomicU64>,
) {
    let mut msgs = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            received = receiver.recv_many(&mut msgs, BATCH) => {
                if received == 0 {
                    return;
                }
                handle(&pool, &mut msgs, &failed).await;
            }
            _ = shutdown.cancelled() => break,
        }
    }
    // Shutting down: the server stops taking requests and lets running ones finish; their
    // entries are still written, for as long as the grace allows.
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    loop {
        while let Ok(msg) = receiver.try_recv() {
            msgs.push(msg);
            if msgs.len() >= BATCH {
                handle(&pool, &mut msgs, &failed).await;
            }
        }
        handle(&pool, &mut msgs, &failed).await;
        if (in_flight.load(Ordering::SeqCst) == 0 && receiver.is_empty())
            || Instant::now() >= deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.close();
    while let Ok(msg) = receiver.try_recv() {
        msgs.push(msg);
    }
    handle(&pool, &mut msgs, &failed).await;
}

async fn handle(pool: &PgPool, msgs: &mut Vec<Msg>, failed: &AtomicU64) {
    let mut entries = Vec::with_capacity(msgs.len());
    let mut waiting = Vec::new();
    for msg in msgs.drain(..) {
        match msg {
            Msg::Entry(e) => entries.push(*e),
            Msg::Flush(done) => waiting.push(done),
        }
    }
    if !entries.is_empty() {
        if let Err(e) = write(pool, &entries).await {
            failed.fetch_add(entries.len() as u64, Ordering::Relaxed);
            tracing::warn!(error = %e, lost = entries.len(), "writing the request log failed");
        }
    }
    for done in waiting {
        let _ = done.send(());
    }
}

/// One INSERT for the whole batch, whatever its tenants (the owner pool is not pinned to one).
async fn write(pool: &PgPool, entries: &[Entry]) -> sqlx::Result<()> {
    let mut id = Vec::with_capacity(entries.len());
    let mut tenant = Vec::with_capacity(entries.len());
    let mut member = Vec::with_capacity(entries.len());
    let mut token = Vec::with_capacity(entries.len());
    let mut method = Vec::with_capacity(entries.len());
    let mut route = Vec::with_capacity(entries.len());
    let mut status = Vec::with_capacity(entries.len());
    let mut duration = Vec::with_capacity(entries.len());
    let mut ip = Vec::with_capacity(entries.len());
    let mut agent = Vec::with_capacity(entries.len());
    let mut request_id = Vec::with_capacity(entries.len());
    let mut at = Vec::with_capacity(entries.len());
    for e in entries {
        id.push(e.id);
        tenant.push(e.tenant_id);
        member.push(e.member_id);
        token.push(e.api_token_id);
        method.push(e.method.clone());
        route.push(e.route.to_string());
        status.push(e.status as i16);
        duration.push(e.duration_ms);
        ip.push(e.ip.clone());
        agent.push(e.user_agent.clone());
        request_id.push(e.request_id.clone());
        at.push(e.at);
    }
    sqlx::query!(
        "INSERT INTO request_log (id, tenant_id, member_id, api_token_id, method, route, status, duration_ms,
                                  ip, user_agent, request_id, occurred_at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
                              $7::smallint[], $8::real[], $9::text[], $10::text[], $11::text[], $12::timestamptz[])
         ON CONFLICT (id) DO NOTHING",
        &id,
        &tenant,
        &member,
        &token as &[Option<Uuid>],
        &method,
        &route,
        &status,
        &duration,
        &ip as &[Option<String>],
        &agent as &[Option<String>],
        &request_id as &[Option<String>],
        &at
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Who the guard let through, handed from inside the guard to the log layer around it.
#[derive(Clone, Default)]
pub struct CallerSlot(Arc<Mutex<Option<Caller>>>);

#[derive(Clone, Copy)]
struct Caller {
    tenant_id: Uuid,
    member_id: Uuid,
    api_token_id: Option<Uuid>,
}

impl From<&Ctx> for Caller {
    fn from(ctx: &Ctx) -> Self {
        Caller {
            tenant_id: ctx.tenant_id,
            member_id: ctx.member_id,
            api_token_id: match ctx.credential {
                Credential::ApiToken(id) => Some(id),
                Credential::Session(_) => None,
            },
        }
    }
}

/// The route a log layer wraps.
#[derive(Clone)]
pub struct LogRoute {
    pub log: Arc<RequestLog>,
    pub route: &'static str,
}

/// Notes a caller the guard authenticated but refused for lack of permission: who tried what
/// is worth a line in the log, though the handler never ran.
pub fn note_refused(req: &Request, ctx: &Ctx) {
    if let Some(slot) = req.extensions().get::<CallerSlot>() {
        *slot.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Caller::from(ctx));
    }
}

/// Runs inside the guard: notes the authenticated caller for [`log`].
pub async fn note_caller(req: Request, next: Next) -> Response {
    if let (Some(slot), Some(ctx)) = (
        req.extensions().get::<CallerSlot>(),
        req.extensions().get::<Ctx>(),
    ) {
        *slot.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Caller::from(ctx));
    }
    next.run(req).await
}

/// A request being served. If it never finishes (the timeout layer or a client that went away
/// dropped it) it is still logged when dropped, as status 499, once the guard had let it in.
struct Pending {
    log: Arc<RequestLog>,
    slot: CallerSlot,
    started: Instant,
    at: OffsetDateTime,
    method: String,
    route: &'static str,
    meta: RequestMeta,
    finished: bool,
}

/// The status logged for a request dropped before it had an answer (nginx's "client closed").
const UNFINISHED: u16 = 499;

impl Pending {
    fn record(&self, caller: Caller, status: u16) {
        self.log.record(Entry {
            id: Uuid::now_v7(),
            tenant_id: caller.tenant_id,
            member_id: caller.member_id,
            api_token_id: caller.api_token_id,
            method: self.method.clone(),
            route: self.route,
            status,
            duration_ms: (self.started.elapsed().as_secs_f64() * 1000.0) as f32,
            ip: self.meta.ip.map(|ip| ip.to_string()),
            user_agent: self.meta.user_agent.clone(),
            request_id: self.meta.request_id.clone(),
            at: self.at,
        });
    }

    fn caller(&self) -> Option<Caller> {
        *self.slot.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(caller) = self.caller() {
            self.record(caller, UNFINISHED);
        }
    }
}

/// Runs around the guard of every non-public route: times the request and logs it once the
/// response is ready (a streamed body counts until its headers).
pub async fn log(State(layer): State<LogRoute>, mut req: Request, next: Next) -> Response {
    let _running = InFlight::new(&layer.log.in_flight);
    let mut pending = Pending {
        log: layer.log.clone(),
        slot: CallerSlot::default(),
        started: Instant::now(),
        at: OffsetDateTime::now_utc(),
        method: req.method().as_str().to_string(),
        route: layer.route,
        meta: req
            .extensions()
            .get::<RequestMeta>()
            .cloned()
            .unwrap_or_default(),
        finished: false,
    };
    req.extensions_mut().insert(pending.slot.clone());
    let response = next.run(req).await;
    let status = response.status();
    // Unauthenticated refusals (401) have no tenant to belong to and are not logged; a member
    // refused by the permission table was noted by the guard ([`note_refused`]).
    let caller = pending.caller();
    if let Some(caller) = caller {
        pending.record(caller, status.as_u16());
    }
    pending.finished = true;
    response
}

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: axum::extract::FromRef<S>,
{
    api.endpoint(
        Method::GET,
        "/api/v1/request-log",
        Access::Requires(Permission::RequestLogRead),
        (
            "audit",
            "The request log: authenticated API requests, newest first (kept 30 days at most)",
        ),
        super::Contract::new()
            .query::<ListQuery>()
            .ok_page::<LogView>()
            .error(axum::http::StatusCode::BAD_REQUEST, "invalid_limit")
            .error(axum::http::StatusCode::BAD_REQUEST, "invalid_status"),
        list,
    )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    member_id: Option<Uuid>,
    api_token_id: Option<Uuid>,
    /// A route template exactly as logged, e.g. `/api/v1/reviews/{review_id}`.
    route: Option<String>,
    method: Option<String>,
    #[param(minimum = 100, maximum = 599)]
    status: Option<i16>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    from: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    until: Option<OffsetDateTime>,
    /// Entries older than this one (the `next_cursor` of the previous page).
    before: Option<Uuid>,
    /// 100 when absent.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = RequestLogEntry)]
struct LogView {
    id: Uuid,
    member_id: Uuid,
    api_token_id: Option<Uuid>,
    method: String,
    route: String,
    status: i16,
    duration_ms: f32,
    ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
}

async fn list(
    State(db): State<Db>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> Result<Json<super::Page<LogView>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Error::bad_request(
            "invalid_limit",
            "limit must be 1 to 500",
        ));
    }
    if q.status.is_some_and(|s| !(100..=599).contains(&s)) {
        return Err(Error::bad_request(
            "invalid_status",
            "status must be an HTTP status, 100 to 599",
        ));
    }
    // `from` after `until` matches nothing, like any filter nothing meets.
    let method = q.method.map(|m| m.to_ascii_uppercase());
    let mut tx = ctx.begin(&db).await?;
    let items = sqlx::query_as!(
        LogView,
        "SELECT id, member_id, api_token_id, method, route, status, duration_ms, ip, user_agent, request_id,
                occurred_at
         FROM request_log
         WHERE tenant_id = current_tenant_id()
           AND ($1::uuid IS NULL OR member_id = $1)
           AND ($2::uuid IS NULL OR api_token_id = $2)
           AND ($3::text IS NULL OR route = $3)
           AND ($4::text IS NULL OR method = $4)
           AND ($5::smallint IS NULL OR status = $5)
           AND ($6::timestamptz IS NULL OR occurred_at >= $6)
           AND ($7::timestamptz IS NULL OR occurred_at < $7)
           AND ($8::uuid IS NULL OR id < $8)
         ORDER BY id DESC
         LIMIT $9",
        q.member_id,
        q.api_token_id,
        q.route,
        method,
        q.status,
        q.from,
        q.until,
        q.before,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(super::Page::new(items, limit, |i| i.id)))
}
