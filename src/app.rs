//! The application: shared state, the router every test also uses, and the server's life.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::{header, HeaderName, Method, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::guard::{require, RouteGuard, Throttle};
use crate::auth::token::Keys;
use crate::auth::AuthState;
use crate::channels::ChannelsState;
use crate::config::Config;
use crate::crypto::Sealer;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::api::Guard;
use crate::http::api::PageSpec;
use crate::http::{middleware as mw, openapi, Access, Api, Contract, Json, RouteSpec};
use crate::queue::{Job, Outcome};

/// Everything a request handler may need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub keys: Arc<Keys>,
    pub throttle: Arc<Throttle>,
    /// Seals tenant secrets at rest (SEC-10).
    pub sealer: Arc<Sealer>,
    /// Live events, fed by the database's notifications.
    pub bus: crate::events::Bus,
    /// The live streams open in this process, per holder.
    pub streams: Arc<crate::events::Streams>,
    /// The agent's caches, secrets and outbound HTTP.
    pub agent: crate::agent::AgentState,
    /// The knowledge base's embedders, from the agent's settings.
    pub knowledge: crate::knowledge::KnowledgeState,
    /// Sends the notifications of the hot inbound paths after their commits.
    pub notifier: Arc<crate::events::Notifier>,
    /// What the channels need, their own parts (the Graph API client, the inbox cache, the
    /// webhook writer) with clones of the shared ones above.
    pub channels: ChannelsState,
    /// Authenticated API requests, written in batches off the request path.
    pub request_log: Arc<crate::http::request_log::RequestLog>,
    /// Cancelled once on shutdown; the server and every worker watch it.
    pub shutdown: CancellationToken,
    /// Single sign-on's HTTP client and caches.
    pub oidc: Arc<crate::auth::oidc::Oidc>,
    routes: Arc<std::sync::OnceLock<Vec<RouteSpec>>>,
    pages: Arc<std::sync::OnceLock<Vec<PageSpec>>>,
}

impl AppState {
    pub fn new(config: Config, db: Db, keys: Keys, sealer: Sealer) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let throttle = Arc::new(Throttle::new(&config.limits));
        let sealer = Arc::new(sealer);
        let notifier = Arc::new(crate::events::Notifier::new(db.system.clone()));
        let bus = crate::events::Bus::default();
        let streams: Arc<crate::events::Streams> = Arc::default();
        let shutdown = CancellationToken::new();
        let channels = ChannelsState::new(
            config.clone(),
            db.clone(),
            sealer.clone(),
            throttle.clone(),
            notifier.clone(),
            crate::events::Live {
                bus: bus.clone(),
                streams: streams.clone(),
                limits: config.streams,
                shutdown: shutdown.clone(),
            },
        )?;
        let agent = crate::agent::AgentState::new(
            db.clone(),
            sealer.clone(),
            config.actions_allow_private,
            notifier.clone(),
        )?;
        let knowledge = crate::knowledge::KnowledgeState {
            db: db.clone(),
            embedders: Arc::new(crate::agent::settings::KnowledgeEmbedders(agent.clone())),
        };
        let request_log = Arc::new(crate::http::request_log::RequestLog::new(
            db.system.clone(),
            shutdown.clone(),
        ));
        let oidc = Arc::new(crate::auth::oidc::Oidc::new(config.actions_allow_private)?);
        Ok(AppState {
            oidc,
            config,
            db,
            keys: Arc::new(keys),
            throttle,
            sealer,
            bus,
            streams,
            agent,
            knowledge,
            channels,
            notifier,
            request_log,
            shutdown,
            routes: Arc::default(),
            pages: Arc::default(),
        })
    }

    /// What authentication needs of the process.
    pub fn auth(&self) -> AuthState {
        AuthState {
            config: self.config.clone(),
            db: self.db.clone(),
            keys: self.keys.clone(),
            throttle: self.throttle.clone(),
            sealer: self.sealer.clone(),
            oidc: self.oidc.clone(),
        }
    }

    /// What live event streams need of the process.
    pub fn live(&self) -> crate::events::Live {
        crate::events::Live {
            bus: self.bus.clone(),
            streams: self.streams.clone(),
            limits: self.config.streams,
            shutdown: self.shutdown.clone(),
        }
    }

    /// Every route the router serves, with the access each one declared.
    pub fn routes(&self) -> &[RouteSpec] {
        self.routes.get().map(Vec::as_slice).unwrap_or_default()
    }

    /// Every page the router serves (the web app's, added by the layer above), with the access
    /// each one declared. They are not in the API's document.
    pub fn pages(&self) -> &[PageSpec] {
        self.pages.get().map(Vec::as_slice).unwrap_or_default()
    }
}

impl AsRef<Db> for AppState {
    fn as_ref(&self) -> &Db {
        &self.db
    }
}

impl FromRef<AppState> for AuthState {
    fn from_ref(state: &AppState) -> AuthState {
        state.auth()
    }
}

impl FromRef<AppState> for crate::events::Live {
    fn from_ref(state: &AppState) -> crate::events::Live {
        state.live()
    }
}

impl FromRef<AppState> for crate::agent::AgentState {
    fn from_ref(state: &AppState) -> crate::agent::AgentState {
        state.agent.clone()
    }
}

impl FromRef<AppState> for crate::knowledge::KnowledgeState {
    fn from_ref(state: &AppState) -> crate::knowledge::KnowledgeState {
        state.knowledge.clone()
    }
}

impl FromRef<AppState> for ChannelsState {
    fn from_ref(state: &AppState) -> ChannelsState {
        state.channels.clone()
    }
}

impl FromRef<AppState> for crate::privacy::erasure::ReceiptKey {
    fn from_ref(state: &AppState) -> Self {
        crate::privacy::erasure::ReceiptKey::from_master(&state.sealer)
    }
}

impl FromRef<AppState> for Db {
    fn from_ref(state: &AppState) -> Db {
        state.db.clone()
    }
}

/// The registry's guard: authentication and the permission check, from `auth`.
fn guard(state: &AppState) -> Guard<AppState> {
    let state = state.clone();
    Arc::new(move |access, route| {
        route.route_layer(axum::middleware::from_fn_with_state(
            RouteGuard {
                state: state.auth(),
                access,
            },
            require,
        ))
    })
}

/// All domain routes, registered with their access rules.
fn api(state: AppState) -> Api<AppState> {
    use Access::Public;
    let api = Api::new(guard(&state), state.request_log.clone())
        .endpoint(
            Method::GET,
            "/healthz",
            Public,
            ("system", "Liveness"),
            Contract::new().ok::<Health>(),
            healthz,
        )
        .endpoint(
            Method::GET,
            "/readyz",
            Public,
            ("system", "Readiness: the database answers"),
            Contract::new()
                .ok::<Health>()
                .error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            readyz,
        )
        .endpoint(
            Method::GET,
            "/api/openapi.json",
            Public,
            ("system", "This API's OpenAPI 3.1 document"),
            Contract::new().ok_free_form("this API's OpenAPI 3.1 document"),
            openapi_doc,
        )
        .endpoint(
            Method::GET,
            "/api/docs",
            Public,
            ("system", "This API's reference, as a page for people"),
            Contract::new().returns_media(
                StatusCode::OK,
                "text/html",
                "The reference page, rendered from /api/openapi.json",
            ),
            api_docs,
        )
        .endpoint(
            Method::GET,
            "/api/docs.css",
            Public,
            ("system", "The reference page's stylesheet"),
            Contract::new().returns_media(StatusCode::OK, "text/css", "A stylesheet"),
            api_docs_css,
        );
    let api = crate::auth::routes::routes(api);
    let api = crate::tenants::routes(api);
    let api = crate::audit::routes::routes(api, enqueue);
    let api = crate::crm::accounts::routes(api);
    let api = crate::crm::contacts::routes(api);
    let api = crate::privacy::routes(api);
    let api = crate::channels::routes(api);
    let api = crate::conversations::routes::routes(api, crate::channels::free_form_open);
    let api = crate::conversations::canned::routes(api);
    let api = crate::knowledge::routes::routes(api);
    let api = crate::cs::tickets::routes(api);
    let api = crate::cs::tasks::routes(api);
    let api = crate::cs::timeline::routes(api);
    let api = crate::cs::pipelines::routes(api);
    let api = crate::cs::deals::routes(api);
    let api = crate::agent::routes(api);
    let api = crate::reviews::routes::routes(api);
    let api = crate::retention::routes::routes(api, OTHER_EXPORTS);
    let api = crate::http::request_log::routes(api);
    crate::channels::jobs::routes(api)
}

/// The API's router with every layer, without the web app's pages.
pub fn router(state: AppState) -> Router {
    router_with(state, |api| api)
}

/// The complete router with every layer, with the routes of the layer above (the web app's
/// pages, which `above` registers) served behind the same layers; `main` serves it and the
/// tests drive it.
pub fn router_with(state: AppState, above: impl FnOnce(Api<AppState>) -> Api<AppState>) -> Router {
    let api = above(api(state.clone()));
    let _ = state.pages.set(api.pages().to_vec());
    let (routes, specs) = api.into_parts();
    let _ = state.routes.set(specs);
    let request_id = HeaderName::from_static("x-request-id");
    routes
        .fallback(mw::not_found)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            mw::TrustedProxies(state.config.trusted_proxies()),
            mw::request_meta,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.config.request_timeout,
        ))
        .layer(CatchPanicLayer::custom(mw::panic_response))
        .layer(axum::middleware::from_fn(mw::error_shape))
        .layer(axum::middleware::from_fn(mw::security_headers))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let request_id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!(
                    "request",
                    method = %req.method(),
                    path = %req.uri().path(),
                    request_id,
                    tenant_id = tracing::field::Empty,
                    member_id = tracing::field::Empty,
                )
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    status: HealthStatus,
}

/// Whether the server answers (`ok`, liveness) or also its database (`ready`).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum HealthStatus {
    Ok,
    Ready,
}

async fn healthz() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Health>> {
    sqlx::query_scalar!("SELECT 1 AS \"one!\"")
        .fetch_one(&state.db.app)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "database not ready");
            Error::Unavailable("the database does not answer")
        })?;
    Ok(Json(Health {
        status: HealthStatus::Ready,
    }))
}

async fn openapi_doc(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(openapi::document(state.routes()))
}

async fn api_docs(State(state): State<AppState>) -> impl IntoResponse {
    let page = crate::http::docs::page(&openapi::document(state.routes()));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, crate::http::docs::CSP),
        ],
        page,
    )
}

async fn api_docs_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        crate::http::docs::STYLESHEET,
    )
}

/// Every job kind the application runs and its handler, each registered by the domain that
/// owns the work: the queue itself knows none of them.
pub fn jobs() -> crate::queue::Handlers<AppState> {
    let mut jobs = crate::queue::Handlers::default();
    jobs.register(crate::audit::export::JOB, audit_export);
    crate::knowledge::register(&mut jobs);
    crate::channels::register(&mut jobs);
    crate::agent::register(&mut jobs);
    crate::privacy::export::register(&mut jobs);
    crate::privacy::closure::register(&mut jobs);
    jobs
}

/// The exports of domains above retention that its purge deletes with the audit log's (DSR-7).
const OTHER_EXPORTS: &[crate::retention::OtherExports] = &[
    crate::privacy::export::RETENTION,
    crate::privacy::closure::RETENTION,
];

/// The queue's enqueue, in terms an engine may take without naming the queue: the audit
/// export's routes queue its job with it, as audit and the queue are both engines and neither
/// may import the other. The web app's audit page queues exports with it too.
pub fn enqueue<'a>(
    conn: &'a mut sqlx::PgConnection,
    tenant_id: uuid::Uuid,
    kind: &'static str,
    key: String,
    payload: serde_json::Value,
) -> BoxFuture<'a, sqlx::Result<()>> {
    let job = crate::queue::NewJob::new(kind, key, payload);
    Box::pin(async move { crate::queue::enqueue(conn, tenant_id, job).await.map(drop) })
}

/// The audit export's job, in the queue's terms.
fn audit_export<'a>(state: &'a AppState, job: &'a Job) -> BoxFuture<'a, Outcome> {
    use crate::audit::export::{run_job, Written};
    Box::pin(async move {
        let last_attempt = job.attempts >= job.max_attempts;
        match run_job(&state.db, job.tenant_id, &job.payload, last_attempt).await {
            Written::Done => Outcome::Done,
            Written::Retry(error) => Outcome::Retry { error, after: None },
            Written::Invalid(error) => Outcome::Fail { error },
        }
    })
}

/// The job worker, running every registered kind against this state.
pub fn worker(state: &AppState) -> crate::queue::worker::Worker<AppState> {
    crate::queue::worker::Worker {
        state: state.clone(),
        jobs: jobs(),
        pool: state.db.system.clone(),
        config: state.config.worker.clone(),
        shutdown: state.shutdown.clone(),
    }
}

/// Background work that lives as long as the server: the event listener, the job worker (unless
/// disabled), housekeeping and the request log's writer. All stop when `state.shutdown` is
/// cancelled (the request log's writer once the requests still running are logged).
pub fn spawn_workers(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![spawn_listener(state)];
    tasks.extend(state.request_log.start());
    if state.config.worker.enabled {
        tasks.push(crate::queue::worker::spawn(worker(state)));
    }
    tasks.push(housekeeping(state));
    tasks
}

/// The event listener, with what each domain does with every event it hears first.
pub fn spawn_listener(state: &AppState) -> tokio::task::JoinHandle<()> {
    let hooks = vec![crate::channels::forget_changed_inboxes(
        state.channels.endpoints.clone(),
    )];
    crate::events::spawn_listener(
        state.db.system.clone(),
        state.bus.clone(),
        state.shutdown.clone(),
        hooks,
    )
}

fn housekeeping(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    let stop = state.shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.config.worker.sweep);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Retention (RET-1): first a minute after start, so frequent restarts cannot starve it.
        let every = state.config.retention_interval;
        let first = tokio::time::Instant::now() + every.min(Duration::from_secs(60));
        let mut retention = tokio::time::interval_at(first, every);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    state.throttle.shrink();
                    // Fail closed: a review that waited too long is rejected and the customer told.
                    match crate::reviews::expire_due(&state.db).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(expired = n, "review items expired"),
                        Err(e) => tracing::warn!(error = %e, "expiring review items failed"),
                    }
                    // A snooze ends by itself when its time comes, not only when the customer writes.
                    match crate::conversations::wake_snoozed(&state.db).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(woken = n, "snoozed conversations woke"),
                        Err(e) => tracing::warn!(error = %e, "waking snoozed conversations failed"),
                    }
                }
                _ = retention.tick() => {
                    crate::retention::run_all(&state.db, &state.shutdown, OTHER_EXPORTS).await;
                    // Closed tenants past their grace period go on the same schedule (RET-2).
                    if let Err(e) = crate::tenants::closure::purge_due(&state.db, time::OffsetDateTime::now_utc()).await {
                        tracing::warn!(error = %e, "purging closed tenants failed");
                    }
                }
            }
        }
    })
}
