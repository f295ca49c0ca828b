//! Who is calling. The guard wraps every non-public route: it resolves the credential
//! (session cookie or bearer token) to a [`Ctx`], checks the route's permission, applies the
//! per-tenant and per-client rate limits, and only then lets the handler run. The tenant comes
//! from the credential alone, never from the path or the body (SEC-3).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use super::session::COOKIE;
use super::token::{sha256, API_TOKEN_PREFIX};
use super::AuthState;
use crate::error::{Error, Result};
use crate::http::{Access, RequestMeta};
pub use crate::http::{Credential, Ctx};
use crate::rbac::Role;

#[derive(Clone)]
pub struct RouteGuard {
    pub state: AuthState,
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
    let (ctx, standing) = authenticate_with_standing(&guard.state, req.headers(), meta)
        .await?
        .ok_or(Error::Unauthorized)?;
    if standing.mfa_enrolment_owed {
        // The tenant requires a second factor of this member, who has none yet: until they
        // enrol, their session reaches enrolment and sign-out, and nothing else (SEC-7).
        let path = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or_else(|| req.uri().path(), |p| p.as_str());
        if !super::mfa::WHILE_ENROLLING.contains(&path) {
            crate::http::request_log::note_refused(&req, &ctx);
            return Err(Error::Refused {
                code: "mfa_enrolment_required",
                message: "your workspace requires two-factor sign-in: enrol an authenticator \
                          first (POST /api/v1/auth/mfa/enrolment)"
                    .into(),
            });
        }
    }
    if standing.tenant_closing {
        // The owner closed the tenant (RET-2): the other members are refused at once, and the
        // owner reaches the closure, the tenant export and reopening only.
        let path = req
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or_else(|| req.uri().path(), |p| p.as_str());
        if ctx.role != Role::Owner || !WHILE_CLOSING.contains(&path) {
            crate::http::request_log::note_refused(&req, &ctx);
            return Err(Error::Refused {
                code: "tenant_closed",
                message: if ctx.role == Role::Owner {
                    "this workspace is closed: only its export, its closure status and reopening \
                     remain (POST /api/v1/tenant/closure/reopen)"
                } else {
                    "this workspace is closed"
                }
                .into(),
            });
        }
    }
    if let Access::Requires(permission) = guard.access {
        if !ctx.role.can(permission) {
            crate::http::request_log::note_refused(&req, &ctx);
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

/// What a closing tenant's owner still reaches; everything else answers 403 `tenant_closed`.
pub const WHILE_CLOSING: &[&str] = &[
    "/api/v1/tenant/closure",
    "/api/v1/tenant/closure/reopen",
    "/api/v1/tenant/exports",
    "/api/v1/tenant/exports/{export_id}",
    "/api/v1/tenant/exports/{export_id}/download",
    "/api/v1/auth/logout",
    "/app/tenant/closure",
    "/app/tenant/closure/reopen",
    "/app/tenant/exports",
    "/app/logout",
];

/// What the guard knows of a caller besides who they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Standing {
    /// A session of a member the tenant requires a second factor of, who has not enrolled one:
    /// it may reach enrolment and sign-out only. API tokens never owe one (the machine path).
    pub mfa_enrolment_owed: bool,
    /// The tenant is closing (RET-2): only its owner passes, to [`WHILE_CLOSING`] only.
    pub tenant_closing: bool,
}

/// Resolves the request's credential, if any. A bearer token wins over a cookie.
/// Credentials are looked up through the owner pool: before this, no tenant is known.
pub async fn authenticate(
    state: &AuthState,
    headers: &HeaderMap,
    meta: RequestMeta,
) -> Result<Option<Ctx>> {
    // Its callers (live streams, the login page) serve nothing a closing tenant keeps, so a
    // credential of one resolves to nobody and its streams end.
    Ok(authenticate_with_standing(state, headers, meta)
        .await?
        .filter(|(_, standing)| !standing.tenant_closing)
        .map(|(ctx, _)| ctx))
}

/// [`authenticate`], with the caller's [`Standing`].
pub async fn authenticate_with_standing(
    state: &AuthState,
    headers: &HeaderMap,
    meta: RequestMeta,
) -> Result<Option<(Ctx, Standing)>> {
    if let Some(token) = bearer(headers) {
        if !token.starts_with(API_TOKEN_PREFIX) {
            return Ok(None);
        }
        let row = sqlx::query!(
            r#"SELECT t.id, t.tenant_id, t.created_by, t.role AS token_role,
                      m.role AS member_role, m.partner_org_id,
                      tn.status = 'closing' AS "tenant_closing!"
               FROM api_token t
               JOIN member m ON m.tenant_id = t.tenant_id AND m.id = t.created_by
               JOIN tenant tn ON tn.id = t.tenant_id
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
        return Ok(Some((
            Ctx {
                tenant_id: row.tenant_id,
                member_id: row.created_by,
                role,
                partner_org_id: row.partner_org_id,
                credential: Credential::ApiToken(row.id),
                meta,
            },
            Standing {
                tenant_closing: row.tenant_closing,
                ..Standing::default()
            },
        )));
    }

    let Some(cookie) = session_cookie(headers) else {
        return Ok(None);
    };
    let Some(hash) = state.keys.session_token_hash(cookie) else {
        return Ok(None);
    };
    // Whether the member owes an enrolment (`mfa::Requirement::applies_to`, in SQL, so the
    // guard asks one question per request as before).
    let row = sqlx::query!(
        r#"SELECT s.id, s.tenant_id, s.member_id, m.role, m.partner_org_id,
                  (CASE p.required
                       WHEN 'everyone' THEN true
                       WHEN 'admins' THEN m.role IN ('owner', 'admin')
                       ELSE false
                   END
                   AND NOT EXISTS (
                       SELECT 1 FROM member_mfa f
                       WHERE f.tenant_id = s.tenant_id AND f.member_id = s.member_id
                         AND f.confirmed_at IS NOT NULL
                   )) IS TRUE AS "mfa_enrolment_owed!",
                  tn.status = 'closing' AS "tenant_closing!"
           FROM session s
           JOIN member m ON m.tenant_id = s.tenant_id AND m.id = s.member_id
           JOIN tenant tn ON tn.id = s.tenant_id
           LEFT JOIN mfa_policy p ON p.tenant_id = s.tenant_id
           WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
             AND m.status = 'active'"#,
        hash
    )
    .fetch_optional(&state.db.system)
    .await?;
    Ok(row.and_then(|row| {
        Some((
            Ctx {
                tenant_id: row.tenant_id,
                member_id: row.member_id,
                role: Role::parse(&row.role)?,
                partner_org_id: row.partner_org_id,
                credential: Credential::Session(row.id),
                meta,
            },
            Standing {
                mfa_enrolment_owed: row.mfa_enrolment_owed,
                tenant_closing: row.tenant_closing,
            },
        ))
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
    crate::http::cookie(headers, COOKIE)
}

/// In-process throttles (SEC-5). Failed logins are budgeted per account and client address,
/// and per address across accounts; an account's failures from everywhere slow down attempts
/// from addresses its member does not use (see [`LoginAttempt`]). API limits count requests per
/// tenant and per credential.
pub struct Throttle {
    login_account: FailureBudget<(String, Option<IpAddr>)>,
    login_ip: FailureBudget<IpAddr>,
    login_pressure: AccountPressure,
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
            login_pressure: AccountPressure {
                accounts: Mutex::default(),
                free: limits.login_per_account_burst,
                period: limits.login_per_account_period,
                base: limits.login_delay_base,
                max: limits.login_delay_max,
            },
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
    /// checked: an address that has spent its failure budget, for this account or across
    /// accounts, is refused here, whatever the password, so a throttled answer never tells a
    /// right password from a wrong one. The account's budget is kept per address: failures
    /// from elsewhere never refuse its member, they only slow unfamiliar addresses down (see
    /// [`LoginAttempt::under_pressure`]), so nobody can lock a member out by guessing.
    /// The attempt holds one cell of each budget, so concurrent guesses cannot slip past it;
    /// [`LoginAttempt::succeeded`] gives them back, and anything else counts as a failure.
    pub fn login_attempt(&self, account: &str, ip: Option<IpAddr>) -> Result<LoginAttempt<'_>> {
        if let Some(ip) = ip {
            self.login_ip.take(&ip)?;
        }
        let key = (account.to_lowercase(), ip);
        if let Err(throttled) = self.login_account.take(&key) {
            // Refused before any password was looked at: no guess was made from the address.
            if let Some(ip) = ip {
                self.login_ip.give_back(&ip);
            }
            return Err(throttled);
        }
        let failures_before = self.login_pressure.add(&key.0, Instant::now());
        Ok(LoginAttempt {
            throttle: self,
            key,
            failures_before,
            turn: None,
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
        self.login_pressure.retain_recent(Instant::now());
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
    key: (String, Option<IpAddr>),
    /// The account's failures from everywhere, this attempt's not included, when it began.
    failures_before: u32,
    /// The account's turn, held from the wait until the attempt is over, when it had to wait.
    turn: Option<OwnedMutexGuard<()>>,
}

impl LoginAttempt<'_> {
    /// The account has seen its burst of failures from everywhere: unless this attempt comes
    /// from an address its member signs in from, it should [`wait_turn`](Self::wait_turn).
    /// Only then is it worth asking the database what those addresses are.
    pub fn under_pressure(&self) -> bool {
        self.failures_before >= self.throttle.login_pressure.free
    }

    /// Waits before the password is checked, longer the more the account has failed lately,
    /// behind every other waiting attempt for the account: guesses sent in parallel are
    /// checked one after another, so they cannot outrun the delay.
    pub async fn wait_turn(&mut self) {
        let pressure = &self.throttle.login_pressure;
        let turn = pressure.turn(&self.key.0).lock_owned().await;
        // Counted once in line, so the failures of the attempts checked meanwhile count too
        // (as do those still under way, each holding its cell).
        let failures = pressure
            .failures(&self.key.0, Instant::now())
            .saturating_sub(1);
        if let Some(delay) = pressure.delay(failures) {
            tokio::time::sleep(delay).await;
        }
        self.turn = Some(turn);
    }

    /// The password was right: the attempt costs nothing, so any number of successful logins
    /// pass while failures alone spend the budgets.
    pub fn succeeded(self) {
        let throttle = self.throttle;
        throttle.login_account.give_back(&self.key);
        if let Some(ip) = self.key.1 {
            throttle.login_ip.give_back(&ip);
        }
        throttle.login_pressure.remove(&self.key.0);
    }
}

/// An account's failed logins from every address, forgotten one per period (a GCRA's
/// theoretical arrival time again). They never refuse an attempt, as a refusal anyone can
/// provoke locks the member out; past `free` of them, attempts from addresses the member does
/// not use wait `base`, doubling per further failure up to `max`, one attempt at a time.
struct AccountPressure {
    accounts: Mutex<HashMap<String, Pressure>>,
    free: u32,
    period: Duration,
    base: Duration,
    max: Duration,
}

struct Pressure {
    /// When every failure recorded so far is forgotten.
    clear_at: Instant,
    /// Queues the attempts that wait, fairly, so they are checked one after another.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Pressure {
    fn of<'m>(
        accounts: &'m mut HashMap<String, Pressure>,
        account: &str,
        now: Instant,
    ) -> &'m mut Self {
        accounts
            .entry(account.to_owned())
            .or_insert_with(|| Pressure {
                clear_at: now,
                turn: Arc::default(),
            })
    }
}

impl AccountPressure {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pressure>> {
        // Instants and a lock handle, consistent at every step: a panic cannot spoil them.
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one failure ahead of the check (given back by [`Self::remove`] on success) and
    /// returns how many the account had before it.
    fn add(&self, account: &str, now: Instant) -> u32 {
        let mut accounts = self.lock();
        let pressure = Pressure::of(&mut accounts, account, now);
        let before = self.count(pressure.clear_at, now);
        pressure.clear_at = pressure.clear_at.max(now) + self.period;
        before
    }

    fn remove(&self, account: &str) {
        if let Some(pressure) = self.lock().get_mut(account) {
            pressure.clear_at = pressure
                .clear_at
                .checked_sub(self.period)
                .unwrap_or(pressure.clear_at);
        }
    }

    fn failures(&self, account: &str, now: Instant) -> u32 {
        self.lock()
            .get(account)
            .map_or(0, |p| self.count(p.clear_at, now))
    }

    fn count(&self, clear_at: Instant, now: Instant) -> u32 {
        let left = clear_at.saturating_duration_since(now).as_nanos();
        let period = self.period.as_nanos().max(1);
        u32::try_from(left.div_ceil(period)).unwrap_or(u32::MAX)
    }

    /// How long an attempt from an unfamiliar address waits after `failures`; none within the
    /// free burst.
    fn delay(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.free)?;
        Some(
            self.base
                .saturating_mul(2u32.saturating_pow(over))
                .min(self.max),
        )
    }

    fn turn(&self, account: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(&Pressure::of(&mut self.lock(), account, Instant::now()).turn)
    }

    /// Forgets accounts with no failure left and nobody waiting.
    fn retain_recent(&self, now: Instant) {
        self.lock()
            .retain(|_, p| p.clear_at > now || Arc::strong_count(&p.turn) > 1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimits;

    const MS: Duration = Duration::from_millis(1);

    fn throttle() -> Throttle {
        Throttle::new(&RateLimits {
            login_per_account_burst: 3,
            login_per_account_period: Duration::from_secs(60),
            login_delay_base: 100 * MS,
            login_delay_max: 1000 * MS,
            ..RateLimits::default()
        })
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    // proves: SEC-5
    #[test]
    fn one_address_is_refused_for_an_account_after_its_burst_while_others_are_not() {
        let throttle = throttle();
        for _ in 0..3 {
            drop(throttle.login_attempt("acme\nana", ip(1)).unwrap());
        }
        assert!(matches!(
            throttle.login_attempt("acme\nana", ip(1)),
            Err(Error::TooManyRequests { .. })
        ));
        // Another address, and the same address for another account, still get an answer.
        throttle
            .login_attempt("acme\nana", ip(2))
            .unwrap()
            .succeeded();
        throttle
            .login_attempt("acme\nbob", ip(1))
            .unwrap()
            .succeeded();
    }

    #[test]
    fn the_account_is_under_pressure_after_its_burst_of_failures_from_everywhere() {
        let throttle = throttle();
        for last in 0..3 {
            let attempt = throttle.login_attempt("acme\nana", ip(last)).unwrap();
            assert!(!attempt.under_pressure());
        }
        assert!(throttle
            .login_attempt("acme\nana", ip(9))
            .unwrap()
            .under_pressure());
    }

    #[test]
    fn successes_leave_no_pressure_behind() {
        let throttle = throttle();
        for last in 0..10 {
            let attempt = throttle.login_attempt("acme\nana", ip(last)).unwrap();
            assert!(!attempt.under_pressure());
            attempt.succeeded();
        }
    }

    #[test]
    fn the_delay_doubles_per_failure_past_the_burst_up_to_the_cap() {
        let pressure = throttle().login_pressure;
        let delays: Vec<_> = (0..9).map(|n| pressure.delay(n)).collect();
        assert_eq!(
            delays,
            [
                None,
                None,
                None,
                Some(100 * MS),
                Some(200 * MS),
                Some(400 * MS),
                Some(800 * MS),
                Some(1000 * MS),
                Some(1000 * MS),
            ]
        );
        assert_eq!(pressure.delay(u32::MAX), Some(1000 * MS));
    }

    #[test]
    fn an_accounts_failures_are_forgotten_one_per_period() {
        let pressure = throttle().login_pressure;
        let start = Instant::now();
        for _ in 0..4 {
            pressure.add("acme\nana", start);
        }
        let minute = Duration::from_secs(60);
        assert_eq!(pressure.failures("acme\nana", start), 4);
        assert_eq!(pressure.failures("acme\nana", start + minute), 3);
        assert_eq!(pressure.failures("acme\nana", start + 4 * minute), 0);
        // A failure long after the last starts from nothing.
        assert_eq!(pressure.add("acme\nana", start + 10 * minute), 0);
        pressure.retain_recent(start + 20 * minute);
        assert!(pressure.lock().is_empty());
    }

    // proves: SEC-5
    #[tokio::test]
    async fn parallel_guesses_under_pressure_wait_one_after_another() {
        let throttle = Arc::new(Throttle::new(&RateLimits {
            login_per_account_burst: 3,
            login_delay_base: 50 * MS,
            login_delay_max: 50 * MS,
            ..RateLimits::default()
        }));
        for last in 0..3 {
            drop(throttle.login_attempt("acme\nana", ip(last)).unwrap());
        }
        let start = tokio::time::Instant::now();
        let guesses = (10..14).map(|last| {
            let throttle = Arc::clone(&throttle);
            tokio::spawn(async move {
                let mut attempt = throttle.login_attempt("acme\nana", ip(last)).unwrap();
                assert!(attempt.under_pressure());
                attempt.wait_turn().await;
                // The password check happens here, still holding the turn.
                tokio::time::sleep(MS).await;
                drop(attempt);
            })
        });
        for guess in guesses.collect::<Vec<_>>() {
            guess.await.unwrap();
        }
        // Each is past the burst, so each waits its delay in turn, none alongside another.
        assert!(start.elapsed() >= 4 * 50 * MS, "{:?}", start.elapsed());
    }
}
