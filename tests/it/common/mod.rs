//! The test harness: every test gets the real router on a fresh PostgreSQL database with
//! pgvector, migrated by the application's own migrator, and talks to it over HTTP requests.
//!
//! The server is `TEST_DATABASE_URL` when set (a superuser URL), otherwise an embedded cluster
//! that the harness starts under the target directory and shares between tests.

#![allow(dead_code)]

use std::str::FromStr;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use custodian::auth::token::Keys;
use custodian::config::Config;
use custodian::db::embedded::EmbeddedPostgres;
use custodian::db::{Db, APP_ROLE};
use custodian::AppState;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::OnceCell;
use tower::ServiceExt;
use uuid::Uuid;

pub const PASSWORD: &str = "a long and unusual passphrase";
/// The business number in Meta's example payloads (tests/fixtures/whatsapp).
pub const WA_PHONE_NUMBER_ID: &str = "106540352242922";

/// A fixture from tests/fixtures/whatsapp.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/whatsapp")
        .join(format!("{name}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A route's path with a fresh id in place of each `{parameter}`.
pub fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                Uuid::new_v4().to_string()
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Polls `check` until it returns Some, or fails after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Fast worker settings for tests, pointing WhatsApp at `graph_url`.
pub fn fast_worker(config: &mut Config, graph_url: &str) {
    config.whatsapp.graph_base_url = graph_url.to_string();
    config.whatsapp.timeout = std::time::Duration::from_secs(2);
    config.worker.base_backoff = std::time::Duration::from_millis(50);
    config.worker.max_backoff = std::time::Duration::from_millis(200);
    config.worker.poll = std::time::Duration::from_millis(50);
    config.worker.lease = std::time::Duration::from_secs(5);
}

static SERVER: OnceCell<PgConnectOptions> = OnceCell::const_new();

/// Superuser options for the maintenance database of the test server.
pub async fn server() -> PgConnectOptions {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
                return PgConnectOptions::from_str(&url).expect("TEST_DATABASE_URL is a URL");
            }
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-pg");
            let pg = EmbeddedPostgres::start(&dir)
                .await
                .expect("start the embedded test cluster");
            // Left running for the other tests of this run; scripts/test.sh stops it.
            pg.connect_options("postgres")
        })
        .await
        .clone()
}

pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    pub db_name: String,
    /// Superuser options for this test's database (for tampering and inspection).
    pub admin: PgConnectOptions,
    /// The key channel secrets are sealed with, base64, for a server process sharing the database.
    pub encryption_key: String,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let server = server().await;
        let db_name = format!("t_{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&server)
            .await
            .expect("connect to the test server");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        conn.close().await.ok();

        let admin = server.clone().database(&db_name);
        let app = admin.clone().username(APP_ROLE);
        let db = Db::connect(admin.clone(), app)
            .await
            .expect("migrate and connect");
        let mut config = Config::from_lookup(|_| None).expect("default config");
        config.trust_proxy = true;
        // The fake action endpoints listen on loopback.
        config.actions_allow_private = true;
        tweak(&mut config);
        let key: [u8; 32] = rand::random();
        let state = AppState::new(
            config,
            db,
            Keys::random(),
            custodian::crypto::Sealer::new(key),
        )
        .expect("state");
        let router = custodian::web::router(state.clone());
        use base64::Engine;
        let encryption_key = base64::engine::general_purpose::STANDARD.encode(key);
        TestApp {
            state,
            router,
            db_name,
            admin,
            encryption_key,
        }
    }

    /// A second server process on the same database: its own pools, caches, listener and
    /// session keys, and the same key for channel secrets (as every replica shares it).
    pub async fn another_process(&self, tweak: impl FnOnce(&mut AppState)) -> TestApp {
        let app = self.admin.clone().username(APP_ROLE);
        let db = Db::connect(self.admin.clone(), app)
            .await
            .expect("connect the second process");
        use base64::Engine;
        let key: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(&self.encryption_key)
            .expect("the key is base64")
            .try_into()
            .expect("the key has 32 bytes");
        let mut state = AppState::new(
            (*self.state.config).clone(),
            db,
            Keys::random(),
            custodian::crypto::Sealer::new(key),
        )
        .expect("state");
        tweak(&mut state);
        TestApp {
            router: custodian::web::router(state.clone()),
            state,
            db_name: self.db_name.clone(),
            admin: self.admin.clone(),
            encryption_key: self.encryption_key.clone(),
        }
    }

    /// Starts the event listener and the job worker, as the server does.
    pub fn start_workers(&self) {
        custodian::app::spawn_workers(&self.state);
    }

    /// Creates a WhatsApp inbox for the fixtures' business number, sending through `graph_token`.
    /// Returns the inbox id and its app secret.
    pub async fn whatsapp_inbox(&self, owner: &Member, graph_token: &str) -> (Uuid, String) {
        let app_secret = format!("app-secret-{}", Uuid::new_v4().simple());
        let resp = self
            .send(Req::post("/api/v1/inboxes").by(owner).json(json!({
                "name": "WhatsApp support",
                "channel": "whatsapp",
                "whatsapp": {
                    "phone_number_id": WA_PHONE_NUMBER_ID,
                    "business_account_id": "102290129340398",
                    "verify_token": "the-verify-token",
                    "app_secret": app_secret,
                    "access_token": graph_token,
                }
            })))
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
        (resp.uuid("/id"), app_secret)
    }

    /// Posts a webhook body signed with `app_secret`, as Meta does.
    pub async fn webhook(&self, inbox_id: Uuid, body: &[u8], app_secret: &str) -> Resp {
        let signature = custodian::channels::whatsapp::signature::sign(app_secret.as_bytes(), body);
        self.send(
            Req::post(format!("/webhooks/whatsapp/{inbox_id}"))
                .raw("application/json", body.to_vec())
                .header("x-hub-signature-256", signature),
        )
        .await
    }

    /// A count from this test's database (as superuser, past row-level security).
    pub async fn count(&self, sql: &str) -> i64 {
        let mut conn = self.superuser().await;
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut conn)
            .await
            .expect(sql)
    }

    /// Waits until `sql` counts `expected`. A worker records a job's outcome in its own
    /// statement just after the job's effect (a message marked sent), so a test that saw the
    /// effect must wait for the outcome rather than read it at once.
    pub async fn settled(&self, sql: &str, expected: i64) {
        eventually(10, sql, || async {
            (self.count(sql).await == expected).then_some(())
        })
        .await;
    }

    /// A superuser URL of this test's database, for a server or command-line process.
    pub fn database_url(&self) -> String {
        let o = &self.admin;
        let host = match o.get_socket() {
            Some(dir) => dir.display().to_string().replace('/', "%2F"),
            None => o.get_host().to_string(),
        };
        format!(
            "postgres://{}@{}:{}/{}",
            o.get_username(),
            host,
            o.get_port(),
            self.db_name
        )
    }

    /// A superuser connection to this test's database.
    pub async fn superuser(&self) -> PgConnection {
        PgConnection::connect_with(&self.admin)
            .await
            .expect("superuser connection")
    }

    pub async fn send(&self, req: Req) -> Resp {
        let response = self
            .router
            .clone()
            .oneshot(req.build())
            .await
            .expect("infallible router");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Signs up a new tenant; its owner is logged in.
    pub async fn signup(&self, slug: &str) -> Member {
        let resp = self
            .send(Req::post("/api/v1/auth/signup").json(json!({
                "tenant_name": format!("{slug} Inc"),
                "tenant_slug": slug,
                "email": format!("owner@{slug}.example"),
                "display_name": "Owner",
                "password": PASSWORD,
            })))
            .await;
        assert_eq!(
            resp.status,
            StatusCode::CREATED,
            "signup failed: {}",
            resp.body
        );
        Member {
            cookie: resp.session_cookie().expect("signup sets a session cookie"),
            tenant_id: resp.uuid("/tenant/id"),
            member_id: resp.uuid("/member/id"),
            email: format!("owner@{slug}.example"),
            slug: slug.to_string(),
        }
    }

    /// Invites someone with `role` and has them accept; they are logged in.
    pub async fn join(&self, inviter: &Member, role: &str) -> Member {
        let partner_org_id = if role == "partner" {
            let org = self
                .send(
                    Req::post("/api/v1/partner-orgs")
                        .by(inviter)
                        .json(json!({ "name": format!("Partner {}", Uuid::new_v4()) })),
                )
                .await;
            assert_eq!(org.status, StatusCode::CREATED, "{}", org.body);
            Some(org.body["id"].clone())
        } else {
            None
        };
        let email = format!(
            "{role}-{}@{}.example",
            Uuid::new_v4().simple(),
            inviter.slug
        );
        let invitation = self
            .send(Req::post("/api/v1/invitations").by(inviter).json(json!({
                "email": email, "role": role, "partner_org_id": partner_org_id,
            })))
            .await;
        assert_eq!(
            invitation.status,
            StatusCode::CREATED,
            "{}",
            invitation.body
        );
        let accepted = self
            .send(Req::post("/api/v1/invitations/accept").json(json!({
                "token": invitation.body["token"], "display_name": role, "password": PASSWORD,
            })))
            .await;
        assert_eq!(accepted.status, StatusCode::CREATED, "{}", accepted.body);
        Member {
            cookie: accepted.session_cookie().expect("accepting logs in"),
            tenant_id: inviter.tenant_id,
            member_id: accepted.uuid("/member/id"),
            email,
            slug: inviter.slug.clone(),
        }
    }

    pub async fn login(&self, slug: &str, email: &str, password: &str) -> Resp {
        self.send(Req::post("/api/v1/auth/login").json(json!({
            "tenant": slug, "email": email, "password": password,
        })))
        .await
    }

    /// Creates an API token with `role` for `member`; returns (id, secret).
    pub async fn token(&self, member: &Member, role: &str) -> (Uuid, String) {
        let resp = self
            .send(
                Req::post("/api/v1/tokens")
                    .by(member)
                    .json(json!({ "name": format!("token {}", Uuid::new_v4()), "role": role })),
            )
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
        (
            resp.uuid("/id"),
            resp.body["token"].as_str().unwrap().to_string(),
        )
    }

    /// Audit events of a tenant with a given action, read straight from the table.
    pub async fn audit_events(&self, tenant_id: Uuid, action: &str) -> Vec<Value> {
        let mut conn = self.superuser().await;
        sqlx::query_scalar::<_, Value>(
            "SELECT to_jsonb(e) - 'hash' - 'prev_hash' FROM audit_event e
             WHERE tenant_id = $1 AND action = $2 ORDER BY seq",
        )
        .bind(tenant_id)
        .bind(action)
        .fetch_all(&mut conn)
        .await
        .expect("read audit events")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop this app's workers and listeners before its database goes.
        self.state.shutdown.cancel();
        // Drop the database from a thread with its own runtime: Drop cannot await.
        let server = self.admin.clone().database("postgres");
        let name = self.db_name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect_with(&server).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A logged-in member.
#[derive(Debug, Clone)]
pub struct Member {
    pub cookie: String,
    pub tenant_id: Uuid,
    pub member_id: Uuid,
    pub email: String,
    pub slug: String,
}

/// A request under construction.
pub struct Req {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Req {
    pub fn new(method: Method, path: impl Into<String>) -> Req {
        Req {
            method,
            path: path.into(),
            headers: vec![],
            body: None,
        }
    }
    pub fn get(path: impl Into<String>) -> Req {
        Req::new(Method::GET, path)
    }
    pub fn post(path: impl Into<String>) -> Req {
        Req::new(Method::POST, path)
    }
    pub fn put(path: impl Into<String>) -> Req {
        Req::new(Method::PUT, path)
    }
    pub fn patch(path: impl Into<String>) -> Req {
        Req::new(Method::PATCH, path)
    }
    pub fn delete(path: impl Into<String>) -> Req {
        Req::new(Method::DELETE, path)
    }
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Req {
        self.headers.push((name.to_string(), value.into()));
        self
    }
    pub fn json(mut self, body: Value) -> Req {
        self.body = Some(serde_json::to_vec(&body).unwrap());
        self.header("content-type", "application/json")
    }
    pub fn raw(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Req {
        self.body = Some(body.into());
        self.header("content-type", content_type)
    }
    pub fn cookie(self, cookie: &str) -> Req {
        self.header("cookie", format!("custodian_session={cookie}"))
    }
    pub fn by(self, member: &Member) -> Req {
        let cookie = member.cookie.clone();
        self.cookie(&cookie)
    }
    pub fn bearer(self, token: &str) -> Req {
        self.header("authorization", format!("Bearer {token}"))
    }
    pub fn client_ip(self, ip: &str) -> Req {
        self.header("x-forwarded-for", ip)
    }
    pub fn build(self) -> Request<Body> {
        let mut builder = Request::builder().method(self.method).uri(self.path);
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(self.body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap()
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn uuid(&self, pointer: &str) -> Uuid {
        self.body
            .pointer(pointer)
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .unwrap_or_else(|| panic!("no uuid at {pointer} in {}", self.body))
    }

    pub fn set_cookie(&self) -> Option<&str> {
        self.headers
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
    }

    pub fn session_cookie(&self) -> Option<String> {
        let value = self.set_cookie()?.split(';').next()?;
        value.strip_prefix("custodian_session=").map(str::to_string)
    }

    /// Asserts the platform's error shape and returns the code.
    pub fn error_code(&self) -> &str {
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "no error message in {} ({})",
            self.body,
            self.status
        );
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.body))
    }
}

impl TestApp {
    /// A web chat inbox open to `origin`; returns its id.
    pub async fn webchat_inbox(&self, owner: &Member, origin: &str) -> Uuid {
        let resp = self
            .send(Req::post("/api/v1/inboxes").by(owner).json(json!({
                "name": "Site chat", "channel": "webchat",
                "webchat": { "allowed_origins": [origin] }
            })))
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
        resp.uuid("/id")
    }

    /// A visitor starts a session and writes; returns (session token, conversation id).
    pub async fn visitor_writes(&self, inbox_id: Uuid, text: &str) -> (String, Uuid) {
        let session = self
            .send(
                Req::post(format!("/api/v1/webchat/{inbox_id}/sessions"))
                    .json(json!({ "name": "Visitor" })),
            )
            .await;
        assert_eq!(session.status, StatusCode::CREATED, "{}", session.body);
        let token = session.body["session_token"].as_str().unwrap().to_string();
        let sent = self
            .send(
                Req::post(format!("/api/v1/webchat/{inbox_id}/messages"))
                    .header("x-webchat-session", token.clone())
                    .json(json!({ "body": text })),
            )
            .await;
        assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.body);
        (token, sent.uuid("/conversation_id"))
    }
}

/// An open server-sent-events response, read frame by frame.
pub struct EventStream {
    pub body: axum::body::Body,
    buffer: String,
}

impl TestApp {
    pub async fn open_stream(&self, req: Req) -> (StatusCode, HeaderMap, EventStream) {
        let response = self
            .router
            .clone()
            .oneshot(req.build())
            .await
            .expect("infallible router");
        let (parts, body) = response.into_parts();
        (
            parts.status,
            parts.headers,
            EventStream {
                body,
                buffer: String::new(),
            },
        )
    }
}

impl EventStream {
    /// The next event of `kind` (its JSON data), skipping others; fails after `secs`.
    pub async fn next_event(&mut self, kind: &str, secs: u64) -> Value {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let event = block
                    .lines()
                    .find_map(|l| l.strip_prefix("event:"))
                    .map(str::trim);
                let data = block
                    .lines()
                    .find_map(|l| l.strip_prefix("data:"))
                    .map(str::trim);
                if let (Some(event), Some(data)) = (event, data) {
                    if event == kind {
                        return serde_json::from_str(data).expect("event data is JSON");
                    }
                }
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("no {kind} event within {secs} s"))
                .expect("the stream ended")
                .expect("stream error");
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
}

/// Stores Meta's example text message, opens the service window, and has `owner` reply;
/// returns the conversation and the reply's ids.
pub async fn customer_then_reply(
    app: &TestApp,
    owner: &Member,
    inbox: Uuid,
    secret: &str,
) -> (Uuid, Uuid) {
    assert_eq!(
        app.webhook(inbox, &fixture("text"), secret).await.status,
        StatusCode::OK
    );
    let mut conn = app.superuser().await;
    // Meta's example is old; the customer wrote "just now" for the service window.
    sqlx::query("UPDATE conversation SET last_inbound_at = now()")
        .execute(&mut conn)
        .await
        .unwrap();
    let conversation: Uuid = sqlx::query_scalar("SELECT id FROM conversation")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let reply = app
        .send(
            Req::post(format!("/api/v1/conversations/{conversation}/messages"))
                .by(owner)
                .json(json!({ "body": "Hello Sheena, how can we help?" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["delivery_status"], "queued");
    (conversation, reply.uuid("/id"))
}
