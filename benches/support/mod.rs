//! What the benchmarks that drive the application's router in process share: a scratch
//! database, requests through the router, and a tenant signed up through the API. Each bench
//! names the parts it uses (`mod support;`).
#![allow(dead_code)]

use std::future::Future;
use std::str::FromStr;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use custodian::db::{Db, APP_ROLE};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tower::ServiceExt;
use uuid::Uuid;

/// Creates a scratch database (`{prefix}_{random}`) on the server named by `DATABASE_URL`
/// (default `postgres://postgres@127.0.0.1:5432/postgres`), runs `bench` with its pools and
/// its superuser options, then drops it, unless `keep` (to `EXPLAIN` on the data afterwards).
pub async fn with_scratch_db<F, Fut>(prefix: &str, keep: bool, bench: F) -> anyhow::Result<()>
where
    F: FnOnce(Db, PgConnectOptions) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let server = PgConnectOptions::from_str(&url)?;
    let name = format!("{prefix}_{}", Uuid::new_v4().simple());
    let mut maintenance = PgConnection::connect_with(&server).await?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut maintenance)
        .await?;
    let admin = server.clone().database(&name);
    let app = admin.clone().username(APP_ROLE);
    let db = Db::connect(admin.clone(), app).await?;
    // On its own task, so a failed assertion is reported and the database still dropped.
    let result = tokio::spawn(bench(db.clone(), admin)).await;
    db.app.close().await;
    db.system.close().await;
    if keep {
        eprintln!("kept the scratch database {name}");
    } else {
        sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut maintenance)
        .await?;
    }
    result.map_err(|e| anyhow::anyhow!("the benchmark failed: {e}"))
}

/// One request through the router: its status, body and the cookie it set, if any.
pub async fn send(
    router: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, Vec<u8>, Option<String>) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body, cookie)
}

pub fn post_json(path: &str, body: Value, cookie: Option<&str>) -> Request<Body> {
    let mut req = Request::post(path).header("content-type", "application/json");
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    req.body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

pub fn get(path: &str, cookie: &str) -> Request<Body> {
    Request::get(path)
        .header("cookie", cookie)
        .body(Body::empty())
        .unwrap()
}

/// A tenant with an owner signed in (its session cookie) and a web chat inbox.
pub async fn tenant(router: &axum::Router, slug: &str) -> (String, Uuid, Uuid) {
    let (status, body, cookie) = send(
        router,
        post_json(
            "/api/v1/auth/signup",
            json!({ "tenant_name": slug, "tenant_slug": slug, "email": format!("owner@{slug}.example"),
                    "display_name": "Owner", "password": "a long and unusual passphrase" }),
            None,
        ),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    let cookie = cookie.unwrap();
    let tenant_id = Uuid::parse_str(body["tenant"]["id"].as_str().unwrap()).unwrap();
    let (status, body, _) = send(
        router,
        post_json(
            "/api/v1/inboxes",
            json!({ "name": "Site chat", "channel": "webchat",
                    "webchat": { "allowed_origins": ["https://shop.example"] } }),
            Some(&cookie),
        ),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    let inbox_id = Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
    (cookie, tenant_id, inbox_id)
}
