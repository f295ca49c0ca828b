//! The web app's inbox page, rendered on the server for an inbox of 10,000 conversations
//! (issue #14: p99 under 20 ms).
//!
//! Creates a scratch database on the server named by `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), migrates it, signs a tenant up through the
//! API, loads `--conversations` conversations (contacts, three messages each, a spread of
//! statuses, handlers, assignees and labels) for it and as many for a neighbouring tenant, then
//! times whole requests for inbox pages through the application's router in process (session
//! check, queries, template), as the server answers them. The scratch database is dropped at
//! the end.
//!
//! ```sh
//! cargo bench --bench inbox_render
//! cargo bench --bench inbox_render -- --conversations 10000 --requests 400
//! ```

mod support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use custodian::auth::token::Keys;
use custodian::config::Config;
use custodian::db::Db;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use support::{send, tenant};
use uuid::Uuid;

struct Args {
    conversations: i64,
    requests: usize,
    keep: bool,
}

fn args() -> Args {
    let mut args = Args {
        conversations: 10_000,
        requests: 400,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--conversations" => args.conversations = it.next().unwrap().parse().unwrap(),
            "--requests" => args.requests = it.next().unwrap().parse().unwrap(),
            "--keep" => args.keep = true,
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

/// `n` conversations of a tenant, written directly as the superuser (loading, not measuring).
async fn load(conn: &mut PgConnection, tenant_id: Uuid, inbox_id: Uuid, n: i64) {
    let statements = [
        "CREATE TEMP TABLE seed AS
         SELECT i, gen_random_uuid() AS contact_id, gen_random_uuid() AS conversation_id,
                now() - make_interval(mins => i::int) AS at
         FROM generate_series(1, $3::bigint) AS i",
        "INSERT INTO contact (id, tenant_id, name, phone)
         SELECT contact_id, $1, 'Customer ' || i, '+3519' || lpad(i::text, 8, '0') FROM seed",
        "INSERT INTO conversation (id, tenant_id, inbox_id, contact_id, status, handler, assignee_id,
                                   labels, last_message_at, last_inbound_at, created_at)
         SELECT conversation_id, $1, $2, contact_id,
                (ARRAY['open', 'open', 'open', 'pending', 'snoozed', 'resolved', 'resolved'])[1 + i % 7],
                CASE WHEN i % 3 = 0 THEN 'human' ELSE 'ai' END,
                CASE WHEN i % 5 = 0 THEN (SELECT id FROM member WHERE tenant_id = $1 LIMIT 1) END,
                CASE WHEN i % 4 = 0 THEN ARRAY['billing'] WHEN i % 9 = 0 THEN ARRAY['vip', 'shipping'] ELSE '{}' END,
                at, at, at - interval '1 hour'
         FROM seed",
        "INSERT INTO message (id, tenant_id, conversation_id, inbox_id, direction, author_kind, body, created_at)
         SELECT gen_random_uuid(), $1, conversation_id, $2, d.direction, d.author, d.body || ' (' || i || ')',
                at - d.ago
         FROM seed, (VALUES ('inbound', 'customer', 'Hello, where is my order? It should have arrived by now.', interval '20 minutes'),
                            ('outbound', 'ai', 'From our help center: orders leave our warehouse within 2 business days.', interval '19 minutes'),
                            ('inbound', 'customer', 'Thanks, but the tracking page has not changed since Monday.', interval '0 minutes'))
                     AS d(direction, author, body, ago)",
        "DROP TABLE seed",
    ];
    for sql in statements {
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .bind(tenant_id)
            .bind(inbox_id)
            .bind(n)
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

async fn run(db: Db, admin: PgConnectOptions, args: &Args) {
    let mut config = Config::from_lookup(|_| None).unwrap();
    // The benchmark is one client asking as fast as it can.
    config.limits.api_per_client_per_sec = 1_000_000;
    config.limits.api_per_tenant_per_sec = 1_000_000;
    let state = custodian::AppState::new(
        config,
        db,
        Keys::random(),
        custodian::crypto::Sealer::new(rand::random()),
    )
    .unwrap();
    let router = custodian::web::router(state.clone());
    let (cookie, tenant_id, inbox_id) = tenant(&router, "bench").await;
    let (_, other_tenant, other_inbox) = tenant(&router, "neighbour").await;
    let started = Instant::now();
    let mut conn = PgConnection::connect_with(&admin).await.unwrap();
    load(&mut conn, tenant_id, inbox_id, args.conversations).await;
    load(&mut conn, other_tenant, other_inbox, args.conversations).await;
    sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
    eprintln!(
        "loaded {} conversations for each of two tenants in {:.1} s",
        args.conversations,
        started.elapsed().as_secs_f64()
    );

    println!("| page | requests | p50 ms | p95 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for path in [
        "/app",
        "/app?view=mine",
        "/app?view=unassigned&status=pending",
        "/app?status=resolved&handler=human",
        "/app?label=billing",
        "/app?q=Customer%2042",
        "/app?q=tracking",
    ] {
        let get = || {
            Request::get(path)
                .header("cookie", &cookie)
                .body(Body::empty())
                .unwrap()
        };
        for _ in 0..20 {
            let (status, body, _) = send(&router, get()).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{path}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let mut times = Vec::with_capacity(args.requests);
        for _ in 0..args.requests {
            let at = Instant::now();
            let (status, _, _) = send(&router, get()).await;
            times.push(at.elapsed());
            assert_eq!(status, StatusCode::OK);
        }
        times.sort();
        println!(
            "| `{path}` | {} | {} | {} | {} | {} |",
            times.len(),
            ms(percentile(&times, 0.50)),
            ms(percentile(&times, 0.95)),
            ms(percentile(&times, 0.99)),
            ms(*times.last().unwrap()),
        );
    }
    state.shutdown.cancel();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    let keep = args.keep;
    support::with_scratch_db("custodian_ibench", keep, |db, admin| async move {
        run(db, admin, &args).await
    })
    .await
}
