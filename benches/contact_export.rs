//! Exporting everything held about one contact (DSR-1) who wrote and received 10,000 messages
//! (issue #16: "how long exporting a contact with 10,000 messages takes").
//!
//! Creates a scratch database on the server named by `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), migrates it, signs a tenant up through the
//! API, loads one contact with `--messages` messages over ten conversations (and a neighbouring
//! contact with as many, so the export's queries have someone else's rows to pass over), then
//! runs the job worker and, `--runs` times, asks for the contact's export through the API and
//! times it until the job has written the zip, then times its download. The scratch database is
//! dropped at the end.
//!
//! ```sh
//! cargo bench --bench contact_export
//! cargo bench --bench contact_export -- --messages 10000 --runs 5
//! ```

mod support;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use custodian::auth::token::Keys;
use custodian::config::Config;
use custodian::db::Db;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use support::{get, post_json, send, tenant};
use uuid::Uuid;

struct Args {
    messages: i64,
    runs: usize,
}

fn args() -> Args {
    let mut args = Args {
        messages: 10_000,
        runs: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--messages" => args.messages = it.next().unwrap().parse().unwrap(),
            "--runs" => args.runs = it.next().unwrap().parse().unwrap(),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

/// A contact with `n` messages over ten conversations, written directly as the superuser
/// (loading, not measuring); returns the contact's id.
async fn load(conn: &mut PgConnection, tenant_id: Uuid, inbox_id: Uuid, n: i64, tag: &str) -> Uuid {
    let contact_id = Uuid::now_v7();
    let statements = [
        "INSERT INTO contact (id, tenant_id, name, email, phone)
         VALUES ($3, $1, 'Customer ' || $5, $5 || '@example.com', '+351912345678')",
        "INSERT INTO conversation (id, tenant_id, inbox_id, contact_id, status, last_message_at, created_at)
         SELECT gen_random_uuid(), $1, $2, $3, 'resolved', now() - make_interval(days => c), now() - make_interval(days => c)
         FROM generate_series(1, 10) AS c",
        "INSERT INTO message (id, tenant_id, conversation_id, inbox_id, direction, author_kind, body, created_at)
         SELECT gen_random_uuid(), $1, c.id, $2,
                CASE WHEN i % 2 = 0 THEN 'inbound' ELSE 'outbound' END,
                CASE WHEN i % 2 = 0 THEN 'customer' ELSE 'ai' END,
                CASE WHEN i % 2 = 0
                     THEN 'Hello, where is my order ' || i || '? Write to me at ' || $5 || '@example.com or call +351 912 345 678.'
                     ELSE 'From our help center: orders leave our warehouse within 2 business days (' || i || ').' END,
                c.created_at + make_interval(secs => i)
         FROM (SELECT id, created_at, row_number() OVER (ORDER BY id) AS k FROM conversation WHERE contact_id = $3) c,
              generate_series(1, $4::bigint / 10) AS i",
    ];
    for sql in statements {
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .bind(tenant_id)
            .bind(inbox_id)
            .bind(contact_id)
            .bind(n)
            .bind(tag)
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    contact_id
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

async fn run(db: Db, admin: PgConnectOptions, args: &Args) {
    let mut config = Config::from_lookup(|_| None).unwrap();
    config.limits.api_per_client_per_sec = 1_000_000;
    config.limits.api_per_tenant_per_sec = 1_000_000;
    config.worker.poll = Duration::from_millis(20);
    let state = custodian::AppState::new(
        config,
        db,
        Keys::random(),
        custodian::crypto::Sealer::new(rand::random()),
    )
    .unwrap();
    let router = custodian::router(state.clone());
    let (cookie, tenant_id, inbox_id) = tenant(&router, "bench").await;
    let mut conn = PgConnection::connect_with(&admin).await.unwrap();
    let person = load(&mut conn, tenant_id, inbox_id, args.messages, "person").await;
    load(&mut conn, tenant_id, inbox_id, args.messages, "neighbour").await;
    sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
    let tasks = custodian::app::spawn_workers(&state);

    let mut written = Vec::new();
    let mut downloaded = Vec::new();
    let mut bytes = 0;
    for _ in 0..args.runs {
        let at = Instant::now();
        let (status, body, _) = send(
            &router,
            post_json(
                &format!("/api/v1/contacts/{person}/exports"),
                json!({}),
                Some(&cookie),
            ),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let id = serde_json::from_slice::<Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        loop {
            let (_, body, _) = send(
                &router,
                get(&format!("/api/v1/contact-exports/{id}"), &cookie),
            )
            .await;
            let view: Value = serde_json::from_slice(&body).unwrap();
            match view["status"].as_str() {
                Some("done") => break,
                Some("failed") => panic!("the export failed: {view}"),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        written.push(at.elapsed());
        let at = Instant::now();
        let (status, body, _) = send(
            &router,
            get(&format!("/api/v1/contact-exports/{id}/download"), &cookie),
        )
        .await;
        downloaded.push(at.elapsed());
        assert_eq!(status, StatusCode::OK);
        bytes = body.len();
    }
    println!("| messages | runs | asked → written, median ms | min ms | max ms | download, median ms | zip KiB |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} |",
        args.messages,
        args.runs,
        ms(median(written.clone())),
        ms(*written.iter().min().unwrap()),
        ms(*written.iter().max().unwrap()),
        ms(median(downloaded)),
        bytes / 1024
    );
    state.shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    let keep = false;
    support::with_scratch_db("custodian_xbench", keep, |db, admin| async move {
        run(db, admin, &args).await
    })
    .await
}
