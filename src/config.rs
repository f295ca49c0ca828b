//! Configuration, read once from the environment at start-up. The README has the table.
//! Secrets stay in `secrecy` types so they never reach a log or `Debug` output.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use secrecy::SecretString;

/// Longest session lifetime the platform allows (SEC-6).
pub const MAX_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// Where the embedded database and the generated secret key live.
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    /// Where the embedded database's PostgreSQL server binaries are; found on the system
    /// (`pg_config --bindir`, `/usr/lib/postgresql/*/bin`) when absent.
    pub pg_bin_dir: Option<PathBuf>,
    /// Base64 of 32 bytes; signs session tokens. Generated into the data dir when absent.
    pub secret_key: Option<SecretString>,
    /// Base64 of 32 bytes; AES-256-GCM key for tenant secrets at rest (SEC-10). Generated into
    /// the data dir when absent.
    pub encryption_key: Option<SecretString>,
    pub worker: WorkerConfig,
    pub whatsapp: WhatsAppConfig,
    pub session_ttl: Duration,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_proxy: bool,
    /// How many trusted proxies stand in front of the server with `trust_proxy`: the client's
    /// address is the entry that many from the right of `X-Forwarded-For`.
    pub trusted_proxy_hops: usize,
    /// Let tenant actions call private, loopback and link-local addresses (off: SSRF guard).
    pub actions_allow_private: bool,
    /// Where browsers reach this server (`https://custodian.example`), for the addresses it
    /// hands to others: single sign-on's redirect URI. When absent, `https://` and the request's
    /// Host header.
    pub public_url: Option<String>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub log_json: bool,
    pub limits: RateLimits,
    pub streams: StreamLimits,
    /// How often housekeeping runs the retention purge for every tenant (RET-1).
    pub retention_interval: Duration,
}

/// The in-process worker of the durable job queue.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub enabled: bool,
    pub concurrency: usize,
    /// How long a claimed job is held before another worker may take it over (a crashed
    /// worker's jobs come back after this).
    pub lease: Duration,
    /// First retry delay; doubles per attempt up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// How often an idle worker looks for due jobs even without a notification.
    pub poll: Duration,
    /// How often housekeeping runs its sweeps (review expiry, throttle pruning).
    pub sweep: Duration,
}

/// Where the WhatsApp Cloud API (Graph API) is reached.
#[derive(Debug, Clone)]
pub struct WhatsAppConfig {
    pub graph_base_url: String,
    pub graph_version: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    /// No DATABASE_URL: run a private cluster under `data_dir/pg`.
    Embedded,
    External {
        /// Owner of the schema: runs migrations and system lookups.
        admin_url: SecretString,
        /// The non-superuser role requests run as; derived from `admin_url` when absent.
        app_url: Option<SecretString>,
    },
}

/// Throttles (SEC-5): failed-login bursts per account and client address and per address,
/// the delay an account's failures from everywhere impose on unfamiliar addresses, and request
/// rates per tenant and per credential for the API.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// Failures one address may make for one account before it is refused for it; also how
    /// many the account may see from everywhere before unfamiliar addresses are slowed down.
    pub login_per_account_burst: u32,
    pub login_per_account_period: Duration,
    /// The first delay of an attempt from an unfamiliar address once the account has seen
    /// its burst of failures; it doubles per further failure, up to `login_delay_max`.
    pub login_delay_base: Duration,
    pub login_delay_max: Duration,
    pub login_per_ip_burst: u32,
    pub login_per_ip_period: Duration,
    pub api_per_tenant_per_sec: u32,
    pub api_per_client_per_sec: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            login_per_account_burst: 5,
            login_per_account_period: Duration::from_secs(60),
            login_delay_base: Duration::from_millis(250),
            login_delay_max: Duration::from_secs(5),
            login_per_ip_burst: 20,
            login_per_ip_period: Duration::from_secs(6),
            api_per_tenant_per_sec: 200,
            api_per_client_per_sec: 50,
        }
    }
}

/// Live event streams (SSE) are long-lived and cost the server for every event they watch, so
/// each client may hold only so many open at once, and none lives forever: a browser's
/// EventSource reconnects by itself, authenticating again.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Open web chat streams per visitor session.
    pub webchat_per_session: usize,
    /// Open web chat streams per client address (per /64 for IPv6), whatever the session.
    pub webchat_per_address: usize,
    /// Open members' streams per session or API token.
    pub member_per_credential: usize,
    /// The longest any stream stays open.
    pub max_lifetime: Duration,
    /// How often a members' stream checks that its credential still holds, in case the
    /// notification of a revocation was missed.
    pub recheck: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            webchat_per_session: 3,
            webchat_per_address: 20,
            member_per_credential: 10,
            max_lifetime: Duration::from_secs(3600),
            recheck: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// How many proxies' entries of `X-Forwarded-For` to trust: none unless `trust_proxy`.
    pub fn trusted_proxies(&self) -> usize {
        if self.trust_proxy {
            self.trusted_proxy_hops
        } else {
            0
        }
    }

    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Parses configuration from any lookup, so tests can feed their own variables.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let data_dir = PathBuf::from(get("CUSTODIAN_DATA_DIR").unwrap_or_else(|| "./var".into()));
        let database = match get("DATABASE_URL") {
            None => DatabaseConfig::Embedded,
            Some(url) => DatabaseConfig::External {
                admin_url: url.into(),
                app_url: get("APP_DATABASE_URL").map(Into::into),
            },
        };
        let session_ttl = Duration::from_secs(3600 * parse_or(&get, "SESSION_TTL_HOURS", 720u64)?);
        if session_ttl > MAX_SESSION_TTL || session_ttl.is_zero() {
            bail!("SESSION_TTL_HOURS must be between 1 and 720 (30 days)");
        }
        let defaults = RateLimits::default();
        let limits = RateLimits {
            login_per_account_burst: parse_or(
                &get,
                "LOGIN_ACCOUNT_BURST",
                defaults.login_per_account_burst,
            )?,
            login_per_ip_burst: parse_or(&get, "LOGIN_IP_BURST", defaults.login_per_ip_burst)?,
            login_delay_base: Duration::from_millis(parse_or(
                &get,
                "LOGIN_DELAY_BASE_MS",
                defaults.login_delay_base.as_millis() as u64,
            )?),
            login_delay_max: Duration::from_millis(parse_or(
                &get,
                "LOGIN_DELAY_MAX_MS",
                defaults.login_delay_max.as_millis() as u64,
            )?),
            api_per_tenant_per_sec: parse_or(
                &get,
                "API_TENANT_RPS",
                defaults.api_per_tenant_per_sec,
            )?,
            api_per_client_per_sec: parse_or(
                &get,
                "API_CLIENT_RPS",
                defaults.api_per_client_per_sec,
            )?,
            ..defaults
        };
        if limits.login_per_account_burst == 0
            || limits.login_per_ip_burst == 0
            || limits.api_per_tenant_per_sec == 0
            || limits.api_per_client_per_sec == 0
        {
            bail!("rate limits must be at least 1");
        }
        let stream_defaults = StreamLimits::default();
        let streams = StreamLimits {
            webchat_per_session: parse_or(
                &get,
                "WEBCHAT_STREAMS_PER_SESSION",
                stream_defaults.webchat_per_session,
            )?,
            webchat_per_address: parse_or(
                &get,
                "WEBCHAT_STREAMS_PER_ADDRESS",
                stream_defaults.webchat_per_address,
            )?,
            member_per_credential: parse_or(
                &get,
                "EVENT_STREAMS_PER_CREDENTIAL",
                stream_defaults.member_per_credential,
            )?,
            max_lifetime: Duration::from_secs(parse_or(
                &get,
                "STREAM_MAX_LIFETIME_SECS",
                stream_defaults.max_lifetime.as_secs(),
            )?),
            recheck: Duration::from_secs(parse_or(
                &get,
                "STREAM_RECHECK_SECS",
                stream_defaults.recheck.as_secs(),
            )?),
        };
        if streams.webchat_per_session == 0
            || streams.webchat_per_address == 0
            || streams.member_per_credential == 0
        {
            bail!("stream limits must be at least 1");
        }
        if !(1..=86_400).contains(&streams.max_lifetime.as_secs()) {
            bail!("STREAM_MAX_LIFETIME_SECS must be between 1 and 86400 (a day)");
        }
        if !(1..=3_600).contains(&streams.recheck.as_secs()) {
            bail!("STREAM_RECHECK_SECS must be between 1 and 3600 (an hour)");
        }
        if limits.login_delay_base > limits.login_delay_max {
            bail!("LOGIN_DELAY_BASE_MS must not exceed LOGIN_DELAY_MAX_MS");
        }
        let trusted_proxy_hops = parse_or(&get, "TRUSTED_PROXY_HOPS", 1usize)?;
        if trusted_proxy_hops == 0 {
            bail!("TRUSTED_PROXY_HOPS must be at least 1 (set TRUST_PROXY=false for no proxy)");
        }
        Ok(Config {
            bind: parse_or(&get, "BIND_ADDR", "127.0.0.1:8080".parse()?)?,
            data_dir,
            database,
            pg_bin_dir: get("CUSTODIAN_PG_BINDIR").map(PathBuf::from),
            secret_key: get("SECRET_KEY").map(Into::into),
            encryption_key: get("ENCRYPTION_KEY").map(Into::into),
            worker: WorkerConfig {
                enabled: parse_or(&get, "WORKER_ENABLED", true)?,
                concurrency: parse_or(&get, "WORKER_CONCURRENCY", 4usize)?.max(1),
                lease: Duration::from_secs(parse_or(&get, "JOB_LEASE_SECS", 60u64)?.max(1)),
                base_backoff: Duration::from_millis(parse_or(&get, "JOB_BACKOFF_MS", 2000u64)?),
                max_backoff: Duration::from_secs(parse_or(&get, "JOB_MAX_BACKOFF_SECS", 3600u64)?),
                poll: Duration::from_millis(parse_or(&get, "WORKER_POLL_MS", 1000u64)?.max(10)),
                sweep: Duration::from_millis(
                    parse_or(&get, "SWEEP_INTERVAL_MS", 30_000u64)?.max(50),
                ),
            },
            whatsapp: WhatsAppConfig {
                graph_base_url: get("WHATSAPP_GRAPH_URL")
                    .unwrap_or_else(|| "https://graph.facebook.com".into()),
                graph_version: get("WHATSAPP_GRAPH_VERSION").unwrap_or_else(|| "v21.0".into()),
                timeout: Duration::from_secs(parse_or(&get, "WHATSAPP_TIMEOUT_SECS", 15u64)?),
            },
            session_ttl,
            trust_proxy: parse_or(&get, "TRUST_PROXY", false)?,
            trusted_proxy_hops,
            actions_allow_private: parse_or(&get, "ACTIONS_ALLOW_PRIVATE", false)?,
            public_url: get("PUBLIC_URL")
                .map(|u| u.trim().trim_end_matches('/').to_string())
                .filter(|u| !u.is_empty()),
            max_body_bytes: parse_or(&get, "MAX_BODY_BYTES", 1024 * 1024)?,
            request_timeout: Duration::from_secs(parse_or(&get, "REQUEST_TIMEOUT_SECS", 30)?),
            log_json: get("LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json")),
            limits,
            streams,
            retention_interval: Duration::from_secs(
                parse_or(&get, "RETENTION_INTERVAL_SECS", 3600u64)?.max(1),
            ),
        })
    }
}

fn parse_or<T>(get: &impl Fn(&str) -> Option<String>, name: &str, default: T) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match get(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .with_context(|| format!("{name} has an invalid value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn no_database_url_means_the_embedded_database() {
        let config = from(&[]).unwrap();
        assert!(matches!(config.database, DatabaseConfig::Embedded));
        assert_eq!(config.session_ttl, MAX_SESSION_TTL);
    }

    #[test]
    fn a_session_lifetime_beyond_thirty_days_is_refused() {
        let err = from(&[("SESSION_TTL_HOURS", "721")]).unwrap_err();
        assert!(err.to_string().contains("SESSION_TTL_HOURS"));
    }

    #[test]
    fn a_stream_that_would_live_longer_than_a_day_is_refused() {
        let err = from(&[("STREAM_MAX_LIFETIME_SECS", "86401")]).unwrap_err();
        assert!(err.to_string().contains("STREAM_MAX_LIFETIME_SECS"));
        assert!(from(&[("WEBCHAT_STREAMS_PER_SESSION", "0")]).is_err());
    }

    #[test]
    fn a_malformed_value_names_the_variable() {
        let err = from(&[("BIND_ADDR", "not an address")]).unwrap_err();
        assert!(err.to_string().contains("BIND_ADDR"));
    }

    #[test]
    fn trusted_proxy_hops_count_only_with_trust_proxy_and_are_at_least_one() {
        assert_eq!(from(&[]).unwrap().trusted_proxies(), 0);
        assert_eq!(
            from(&[("TRUST_PROXY", "true")]).unwrap().trusted_proxies(),
            1
        );
        let two = from(&[("TRUST_PROXY", "true"), ("TRUSTED_PROXY_HOPS", "2")]).unwrap();
        assert_eq!(two.trusted_proxies(), 2);
        let err = from(&[("TRUSTED_PROXY_HOPS", "0")]).unwrap_err();
        assert!(err.to_string().contains("TRUSTED_PROXY_HOPS"));
    }

    #[test]
    fn a_login_delay_base_above_its_cap_is_refused() {
        let err = from(&[("LOGIN_DELAY_BASE_MS", "6000")]).unwrap_err();
        assert!(err.to_string().contains("LOGIN_DELAY_BASE_MS"));
        let limits = from(&[("LOGIN_DELAY_BASE_MS", "10"), ("LOGIN_DELAY_MAX_MS", "40")])
            .unwrap()
            .limits;
        assert_eq!(limits.login_delay_base, Duration::from_millis(10));
        assert_eq!(limits.login_delay_max, Duration::from_millis(40));
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let config = from(&[("DATABASE_URL", "postgres://u:hunter2-secret@h/db")]).unwrap();
        assert!(!format!("{config:?}").contains("hunter2-secret"));
    }
}
