//! The durable work queue: idempotent enqueueing, at-least-once delivery through lease expiry,
//! and a crash in the middle of a send that loses and duplicates nothing.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::process::{Child, Command};

use crate::common::{customer_then_reply, eventually, fast_worker, fixture, TestApp};
use crate::fakes::graph::{FakeGraph, Reply};

#[tokio::test]
async fn enqueueing_the_same_work_twice_creates_one_job() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let mut tx = app.state.db.tenant_tx(owner.tenant_id).await.unwrap();
    let job =
        || custodian::queue::NewJob::new(custodian::queue::SEND_MESSAGE, "send:same", json!({}));
    let first = custodian::queue::enqueue(&mut tx, owner.tenant_id, job())
        .await
        .unwrap();
    let second = custodian::queue::enqueue(&mut tx, owner.tenant_id, job())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(first.is_some());
    assert_eq!(second, None);
    assert_eq!(app.count("SELECT count(*) FROM job").await, 1);
}

#[tokio::test]
async fn a_job_whose_worker_died_is_taken_over_when_its_lease_expires() {
    let fake = FakeGraph::start().await;
    let url = fake.base_url.clone();
    let app = TestApp::spawn_with(|c| {
        fast_worker(c, &url);
        c.worker.lease = Duration::from_secs(1);
    })
    .await;
    let owner = app.signup("acme").await;
    let (inbox, secret) = app.whatsapp_inbox(&owner, &fake.token).await;
    let (_, reply) = customer_then_reply(&app, &owner, inbox, &secret).await;
    let mut conn = app.superuser().await;
    // This test is about the send; the agent run the message also queued is not.
    sqlx::query("DELETE FROM job WHERE kind = 'agent.run'")
        .execute(&mut conn)
        .await
        .unwrap();
    // A worker claims the job and dies without a word.
    let claimed = custodian::queue::claim(
        &app.state.db.system,
        "worker-that-dies",
        Duration::from_secs(1),
        10,
    )
    .await
    .unwrap();
    assert_eq!(claimed.len(), 1);
    app.start_workers();
    let sent_by = eventually(10, "the orphaned job to be taken over", || async {
        let mut conn = app.superuser().await;
        let row: (String, Option<String>) = sqlx::query_as(
            "SELECT delivery_status, provider_message_id FROM message WHERE id = $1",
        )
        .bind(reply)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        (row.0 == "sent").then_some(row.1)
    })
    .await;
    assert!(sent_by.is_some());
    assert_eq!(fake.request_count(), 1);
    app.settled(
        "SELECT count(*) FROM job WHERE status = 'done' AND attempts = 2",
        1,
    )
    .await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn server(app: &TestApp, graph_url: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_custodian"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", app.database_url())
        .env("ENCRYPTION_KEY", &app.encryption_key)
        .env("WHATSAPP_GRAPH_URL", graph_url)
        .env("WHATSAPP_TIMEOUT_SECS", "60")
        .env("JOB_LEASE_SECS", "2")
        .env("WORKER_POLL_MS", "100")
        .env("JOB_BACKOFF_MS", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn wait_ready(port: u16) {
    let client = reqwest::Client::new();
    eventually(60, "the server to be ready", || async {
        client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn killing_the_server_mid_send_loses_and_duplicates_nothing() {
    let fake = FakeGraph::start().await;
    let url = fake.base_url.clone();
    let app = TestApp::spawn_with(|c| fast_worker(c, &url)).await;
    let owner = app.signup("acme").await;
    let (inbox, secret) = app.whatsapp_inbox(&owner, &fake.token).await;
    let (_, reply) = customer_then_reply(&app, &owner, inbox, &secret).await;
    let mut conn = app.superuser().await;
    // This test is about the send; the agent run the message also queued is not.
    sqlx::query("DELETE FROM job WHERE kind = 'agent.run'")
        .execute(&mut conn)
        .await
        .unwrap();

    // The first send hangs at Meta; the process dies while waiting for the answer.
    fake.push(Reply::Hang);
    let port = free_port();
    let mut first = server(&app, &fake.base_url, port);
    wait_ready(port).await;
    eventually(30, "the send to be in flight", || async {
        (fake.request_count() == 1).then_some(())
    })
    .await;
    // A customer message accepted just before the crash must survive it.
    let body = String::from_utf8(fixture("text"))
        .unwrap()
        .replace("wamid.", "wamid.BEFORE-CRASH-");
    let signature =
        custodian::channels::whatsapp::signature::sign(secret.as_bytes(), body.as_bytes());
    let accepted = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/webhooks/whatsapp/{inbox}"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    first.start_kill().unwrap();
    first.wait().await.unwrap();

    let state: String = sqlx::query_scalar("SELECT delivery_status FROM message WHERE id = $1")
        .bind(reply)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        state, "queued",
        "a send that never got an answer was recorded as done"
    );

    fake.push(Reply::AcceptedWith {
        wamid: "wamid.AFTER-RESTART".into(),
    });
    let port = free_port();
    let second = server(&app, &fake.base_url, port);
    wait_ready(port).await;
    let wamid = eventually(30, "the send to complete after the restart", || async {
        let mut conn = app.superuser().await;
        let row: (String, Option<String>) = sqlx::query_as(
            "SELECT delivery_status, provider_message_id FROM message WHERE id = $1",
        )
        .bind(reply)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        (row.0 == "sent").then_some(row.1)
    })
    .await;
    drop(second);
    assert_eq!(wamid.as_deref(), Some("wamid.AFTER-RESTART"));
    // One reply row, one job, done; Meta answered exactly one send.
    assert_eq!(
        app.count("SELECT count(*) FROM message WHERE direction = 'outbound' AND NOT private")
            .await,
        1
    );
    app.settled("SELECT count(*) FROM job WHERE status = 'done'", 1)
        .await;
    assert_eq!(app.count("SELECT count(*) FROM job").await, 1);
    let answered = fake.requests().iter().filter(|r| r.wamid.is_some()).count();
    assert_eq!(answered, 1);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM message WHERE provider_message_id LIKE 'wamid.BEFORE-CRASH-%'"
        )
        .await,
        1
    );
}
