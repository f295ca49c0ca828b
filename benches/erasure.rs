//! Erasing a contact with 10,000 messages (issue #16, DSR-3): the whole erasure call, through
//! the application's router in process, as the server answers it.
//!
//! Creates a scratch database on the server named by `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), migrates it, signs a tenant up through the
//! API and loads, as the superuser: two contacts with `--messages` messages each over
//! `--conversations` conversations, one audit entry per message that mentions it (as a member's
//! note does), and as many messages and audit entries of other contacts of the same tenant, so
//! the erasure's search of the audit log reads a log of realistic size. Then it times erasing
//! the first contact and anonymising the second, and checks the chain still verifies. The
//! scratch database is dropped at the end.
//!
//! ```sh
//! cargo bench --bench erasure
//! cargo bench --bench erasure -- --messages 10000 --conversations 4
//! ```

mod support;

use std::time::Instant;

use axum::http::StatusCode;
use custodian::auth::token::Keys;
use custodian::config::Config;
use custodian::db::Db;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use support::{post_json, send, tenant};
use uuid::Uuid;

struct Args {
    messages: i64,
    conversations: i64,
    keep: bool,
}

fn args() -> Args {
    let mut args = Args {
        messages: 10_000,
        conversations: 4,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--messages" => args.messages = it.next().unwrap().parse().unwrap(),
            "--conversations" => args.conversations = it.next().unwrap().parse().unwrap(),
            "--keep" => args.keep = true,
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

/// A contact with `messages` messages over `conversations` conversations (at most one open per
/// inbox: the others resolved), each message with an audit entry that quotes it. Returns the
/// contact's id.
async fn load(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    inbox_id: Uuid,
    n: i32,
    messages: i64,
    conversations: i64,
) -> Uuid {
    let contact = Uuid::new_v4();
    let statements = [
        "INSERT INTO contact (id, tenant_id, name, email, phone)
         VALUES ($4, $1, 'Customer ' || $6::int, 'customer' || $6::int || '@example.com',
                 '+3519' || lpad($6::text, 8, '0'))",
        "CREATE TEMP TABLE conv AS
         SELECT i, gen_random_uuid() AS id FROM generate_series(1, $5::bigint) AS i",
        "INSERT INTO conversation (id, tenant_id, inbox_id, contact_id, status)
         SELECT id, $1, $2, $4, CASE WHEN i = 1 THEN 'open' ELSE 'resolved' END FROM conv",
        "CREATE TEMP TABLE seed AS
         SELECT i, gen_random_uuid() AS id, (SELECT id FROM conv WHERE conv.i = 1 + s.i % $5) AS conversation_id
         FROM generate_series(1, $3::bigint) AS s(i)",
        "INSERT INTO message (id, tenant_id, conversation_id, inbox_id, direction, author_kind, body, created_at)
         SELECT id, $1, conversation_id, $2,
                CASE WHEN i % 2 = 0 THEN 'inbound' ELSE 'outbound' END,
                CASE WHEN i % 2 = 0 THEN 'customer' ELSE 'member' END,
                'Message ' || i || ' from Customer ' || $6::int, now() - make_interval(secs => i::int)
         FROM seed",
        "SELECT count(audit_append($1, 'member', NULL, 'note.created', 'message', id::text, NULL,
                jsonb_build_object('conversation_id', conversation_id, 'body', 'Customer ' || $6::int || ' wrote'),
                NULL, NULL, NULL, NULL))
         FROM (SELECT * FROM seed ORDER BY i) s",
        "DROP TABLE seed",
        "DROP TABLE conv",
    ];
    for sql in statements {
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .bind(tenant_id)
            .bind(inbox_id)
            .bind(messages)
            .bind(contact)
            .bind(conversations)
            .bind(n)
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    contact
}

async fn run(db: Db, admin: PgConnectOptions, args: &Args) {
    let config = Config::from_lookup(|_| None).unwrap();
    let state = custodian::AppState::new(
        config,
        db,
        Keys::random(),
        custodian::crypto::Sealer::new(rand::random()),
    )
    .unwrap();
    let router = custodian::web::router(state.clone());
    let (cookie, tenant_id, _) = tenant(&router, "bench").await;
    let mut conn = PgConnection::connect_with(&admin).await.unwrap();
    let started = Instant::now();
    // Each contact in its own inbox: one open conversation per contact and inbox.
    let mut contacts = Vec::new();
    for n in 0..4i32 {
        let inbox: Uuid = sqlx::query_scalar(
            "INSERT INTO inbox (id, tenant_id, name, channel) VALUES (gen_random_uuid(), $1, 'Chat ' || $2, 'webchat') RETURNING id",
        )
        .bind(tenant_id)
        .bind(n)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        contacts.push(
            load(
                &mut conn,
                tenant_id,
                inbox,
                n,
                args.messages,
                args.conversations,
            )
            .await,
        );
    }
    sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
    let audit_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_event")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    eprintln!(
        "loaded 4 contacts with {} messages each ({audit_rows} audit rows) in {:.1} s",
        args.messages,
        started.elapsed().as_secs_f64()
    );

    println!("| call | messages | audit payloads erased | ms |");
    println!("|---|---|---|---|");
    // Contacts 0 and 1 are erased and anonymised; 2 and 3 stay, so the log holds others' rows.
    for (contact, mode) in [(contacts[0], "erase"), (contacts[1], "anonymise")] {
        let at = Instant::now();
        let (status, body, _) = send(
            &router,
            post_json(
                &format!("/api/v1/contacts/{contact}/erasure"),
                json!({ "mode": mode }),
                Some(&cookie),
            ),
        )
        .await;
        let took = at.elapsed();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let receipt: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(receipt["erased"]["messages"], args.messages, "{receipt}");
        println!(
            "| {mode} | {} | {} | {:.0} |",
            receipt["erased"]["messages"],
            receipt["erased"]["audit_payloads"],
            took.as_secs_f64() * 1000.0
        );
    }
    let report = custodian::audit::verify(&state.db.system, tenant_id)
        .await
        .unwrap();
    assert!(report.valid, "{report:?}");
    eprintln!(
        "the chain verifies: {} rows, {} erased",
        report.checked, report.erased
    );
    state.shutdown.cancel();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    let keep = args.keep;
    support::with_scratch_db("custodian_ebench", keep, |db, admin| async move {
        run(db, admin, &args).await
    })
    .await
}
