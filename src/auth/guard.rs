//! Who is calling. The guard wraps every non-public route: it resolves the credential
//! (session cookie or bearer token) to a [`Ctx`], checks the route's permission, applies the
//! per-tenant and per-client rate limits, and only then lets the handler run. The tenant comes
//! from the credential alone, never from the path or the body (SEC-3).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use super::session::COOKIE;
use super::token::{sha256, API_TOKEN_PREFIX};
use crate::app::AppState;
use crate::audit::{self, AuditEvent, AuditSource};
use crate::db::Tx;
use crate::error::{Error, Result};
use crate::http::{Access, RequestMeta};
use crate::rbac::Role;

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub tenant_id: Uuid,
    pub member_id: Uuid,
    pub role: Role,
    pub partner_org_id: Option<Uuid>,
    pub credential: Credential,
    pub meta: RequestMeta,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Session(Uuid),
    ApiToken(Uuid),
}

impl Ctx {
    /// A transaction pinned to the caller's tenant.
    pub async fn begin(&self, state: &AppState) -> Result<Tx> {
        Ok(state.db.tenant_tx(self.tenant_id).await?)
    }

    /// Appends an audit event by this caller, on the caller's transaction.
    pub async fn audit(&self, conn: &mut sqlx::PgConnection, event: AuditEvent) -> Result<()> {
        audit::record(conn, &self.audit_source(), event).await?;
        Ok(())
    }

    pub fn audit_source(&self) -> AuditSource {
        let (actor_type, actor_id) = match self.credential {
            Credential::Session(_) => ("member", self.member_id.to_string()),
            Credential::ApiToken(id) => ("api_token", id.to_string()),
        };
        AuditSource {
            tenant_id: self.tenant_id,
            actor_type,
            actor_id: Some(actor_id),
            meta: self.meta.clone(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Only the guard puts a Ctx here. A handler asking for one on a public route is a
        // programming error, and must fail closed.
        parts
            .extensions
            .get::<Ctx>()
            .cloned()
            .ok_or(Error::Unauthorized)
    }
}

#[derive(Clone)]
pub struct RouteGuard {
    pub state: AppState,
    pub access: Access,
}

pub async fn require(
    State(guard): State<RouteGuard>,
    mut req: Request,
    next: Next,
) -> Result<Response> {
    let meta = req
        .extensions()
        .get::<RequestMeta>()
        .cloned()
        .unwrap_or_default();
    let ctx = authenticate(&guard.state, req.headers(), meta)
        .await?
        .ok_or(Error::Unauthorized)?;
    if let Access::Requires(permission) = guard.access {
        if !ctx.role.can(permission) {
            return Err(Error::Forbidden("your role does not allow this"));
        }
    }
    guard.state.throttle.check_api(&ctx)?;
    let span = tracing::Span::current();
    span.record("tenant_id", tracing::field::display(ctx.tenant_id));
    span.record("member_id", tracing::field::display(ctx.member_id));
    req.extensions_mut().insert(ctx);
    Ok(next.run(req).await)
}

/// Resolves the request's credential, if any. A bearer token wins over a cookie.
/// Credentials are looked up through the owner pool: before this, no tenant is known.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    meta: RequestMeta,
) -> Result<Option<Ctx>> {
    if let Some(token) = bearer(headers) {
        if !token.starts_with(API_TOKEN_PREFIX) {
            return Ok(None);
        }
        let row = sqlx::query!(
            r#"SELECT t.id, t.tenant_id, t.created_by, t.role AS token_role,
                      m.role AS member_role, m.partner_org_id
               FROM api_token t
               JOIN member m ON m.tenant_id = t.tenant_id AND m.id = t.created_by
               WHERE t.token_hash = $1 AND t.revoked_at IS NULL
                 AND (t.expires_at IS NULL OR t.expires_at > now())
                 AND m.status = 'active'"#,
            sha256(token.as_bytes())
        )
        .fetch_optional(&state.db.system)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (Some(role), Some(creator_role)) =
            (Role::parse(&row.token_role), Role::parse(&row.member_role))
        else {
            return Ok(None);
        };
        // A token never outranks the member who made it, even after a demotion.
        if !creator_role.can_grant(role) {
            return Ok(None);
        }
        sqlx::query!(
            "UPDATE api_token SET last_used_at = now()
             WHERE id = $1 AND tenant_id = $2
               AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
            row.id,
            row.tenant_id
        )
        .execute(&state.db.system)
        .await?;
        return Ok(Some(Ctx {
            tenant_id: row.tenant_id,
            member_id: row.created_by,
            role,
            partner_org_id: row.partner_org_id,
            credential: Credential::ApiToken(row.id),
            meta,
        }));
    }

    let Some(cookie) = session_cookie(headers) else {
        return Ok(None);
    };
    let Some(hash) = state.keys.session_token_hash(cookie) else {
        return Ok(None);
    };
    let row = sqlx::query!(
        r#"SELECT s.id, s.tenant_id, s.member_id, m.role, m.partner_org_id
           FROM session s
           JOIN member m ON m.tenant_id = s.tenant_id AND m.id = s.member_id
           WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
             AND m.status = 'active'"#,
        hash
    )
    .fetch_optional(&state.db.system)
    .await?;
    Ok(row.and_then(|row| {
        Some(Ctx {
            tenant_id: row.tenant_id,
            member_id: row.member_id,
            role: Role::parse(&row.role)?,
            partner_org_id: row.partner_org_id,
            credential: Credential::Session(row.id),
            meta,
        })
    }))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// In-process throttles (SEC-5). Failed logins are budgeted per account and per client
/// address (see [`LoginAttempt`]); API limits count requests per tenant and per credential.
pub struct Throttle {
    login_account: FailureBudget<String>,
    login_ip: FailureBudget<IpAddr>,
    api_tenant: DefaultKeyedRateLimiter<Uuid>,
    api_client: DefaultKeyedRateLimiter<Uuid>,
}

impl Throttle {
    pub fn new(limits: &crate::config::RateLimits) -> Self {
        let burst = |n: u32| NonZeroU32::new(n.max(1)).expect("at least one");
        let per = |period: Duration, n: u32| {
            Quota::with_period(period)
                .expect("non-zero period")
                .allow_burst(burst(n))
        };
        Throttle {
            login_account: FailureBudget::new(per(
                limits.login_per_account_period,
                limits.login_per_account_burst,
            )),
            login_ip: FailureBudget::new(per(
                limits.login_per_ip_period,
                limits.login_per_ip_burst,
            )),
            api_tenant: RateLimiter::keyed(
                Quota::per_second(burst(limits.api_per_tenant_per_sec))
                    .allow_burst(burst(limits.api_per_tenant_per_sec.saturating_mul(2))),
            ),
            api_client: RateLimiter::keyed(
                Quota::per_second(burst(limits.api_per_client_per_sec))
                    .allow_burst(burst(limits.api_per_client_per_sec.saturating_mul(2))),
            ),
        }
    }

    /// Starts an attempt to authenticate as `account` from `ip`, before any password is
    /// checked: an account or address whose failure budget is spent is refused here, whatever
    /// the password, so a throttled answer never tells a right password from a wrong one.
    /// The attempt holds one cell of each budget, so concurrent guesses cannot slip past it;
    /// [`LoginAttempt::succeeded`] gives them back, and anything else counts as a failure.
    pub fn login_attempt(&self, account: &str, ip: Option<IpAddr>) -> Result<LoginAttempt<'_>> {
        if let Some(ip) = ip {
            self.login_ip.take(&ip)?;
        }
        let account = account.to_lowercase();
        if let Err(throttled) = self.login_account.take(&account) {
            // Refused before any password was looked at: no guess was made from the address.
            if let Some(ip) = ip {
                self.login_ip.give_back(&ip);
            }
            return Err(throttled);
        }
        Ok(LoginAttempt {
            throttle: self,
            account,
            ip,
        })
    }

    /// Counts an anonymous action (sign-up, invitation acceptance) against the client address.
    pub fn check_ip(&self, ip: Option<IpAddr>) -> Result<()> {
        match ip {
            Some(ip) => self.login_ip.take(&ip),
            None => Ok(()),
        }
    }

    pub fn check_api(&self, ctx: &Ctx) -> Result<()> {
        check(&self.api_tenant, &ctx.tenant_id)?;
        let client = match ctx.credential {
            Credential::Session(id) | Credential::ApiToken(id) => id,
        };
        check(&self.api_client, &client)
    }

    /// Counts a request of an anonymous client identified by its own session (web chat).
    pub fn check_client(&self, client: Uuid) -> Result<()> {
        check(&self.api_client, &client)
    }

    /// Forgets keys whose limits have fully recovered, so memory stays bounded.
    pub fn shrink(&self) {
        self.login_account.limiter.retain_recent();
        self.login_ip.limiter.retain_recent();
        self.api_tenant.retain_recent();
        self.api_client.retain_recent();
    }
}

fn check<K, S>(limiter: &RateLimiter<K, S, DefaultClock>, key: &K) -> Result<()>
where
    K: Clone + Eq + Hash,
    S: StateStore<Key = K>,
{
    limiter
        .check_key(key)
        .map_err(|not_until| Error::TooManyRequests {
            retry_after_secs: not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                + 1,
        })
}

/// One login (or password check) under way; see [`Throttle::login_attempt`].
#[must_use = "an attempt counts as failed unless it is marked as succeeded"]
pub struct LoginAttempt<'a> {
    throttle: &'a Throttle,
    account: String,
    ip: Option<IpAddr>,
}

impl LoginAttempt<'_> {
    /// The password was right: the attempt costs nothing, so any number of successful logins
    /// pass while failures alone spend the budgets.
    pub fn succeeded(self) {
        self.throttle.login_account.give_back(&self.account);
        if let Some(ip) = self.ip {
            self.throttle.login_ip.give_back(&ip);
        }
    }
}

/// A failed-login budget: governor's GCRA limiter over a state store that can also return a
/// cell. A cell is taken before the password is checked (so a spent budget refuses the
/// attempt unseen, and parallel attempts each hold one) and given back when it was right.
struct FailureBudget<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, RefundableStore<K>, DefaultClock>,
    store: RefundableStore<K>,
    cell: Nanos,
}

impl<K: Hash + Eq + Clone> FailureBudget<K> {
    fn new(quota: Quota) -> Self {
        let store = RefundableStore(Arc::new(Mutex::new(HashMap::new())));
        FailureBudget {
            limiter: RateLimiter::new(quota, store.clone(), DefaultClock::default()),
            store,
            cell: quota
                .replenish_interval()
                .max(Duration::from_nanos(1))
                .into(),
        }
    }

    fn take(&self, key: &K) -> Result<()> {
        check(&self.limiter, key)
    }

    /// Undoes one `take`: the key's theoretical arrival time moves back by one cell.
    fn give_back(&self, key: &K) {
        let mut map = self.store.lock();
        if let Some(tat) = map.get_mut(key) {
            *tat = tat.saturating_sub(self.cell);
        }
    }
}

/// Per-key GCRA state (the theoretical arrival time governor computes) in a map behind a
/// mutex, shared between the limiter and its [`FailureBudget`].
#[derive(Clone)]
struct RefundableStore<K>(Arc<Mutex<HashMap<K, Nanos>>>);

impl<K> RefundableStore<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Nanos>> {
        // The map holds plain numbers, always consistent: a panic elsewhere cannot spoil it.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Hash + Eq + Clone> StateStore for RefundableStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> std::result::Result<T, E>
    where
        F: Fn(Option<Nanos>) -> std::result::Result<(T, Nanos), E>,
    {
        let mut map = self.lock();
        let (outcome, tat) = f(map.get(key).copied())?;
        map.insert(key.clone(), tat);
        Ok(outcome)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for RefundableStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.lock().retain(|_, tat| *tat > drop_below);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}
