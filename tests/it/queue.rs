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
    let job = || {
        custodian::queue::NewJob::new(
            custodian::conversations::SEND_MESSAGE,
            "send:same",
            json!({}),
        )
    };
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

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real server binary on this test's database, sending to `graph_url`.
pub(crate) fn server_command(app: &TestApp, graph_url: &str, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_custodian"));
    command
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", app.database_url())
        .env("ENCRYPTION_KEY", &app.encryption_key)
        .env("WHATSAPP_GRAPH_URL", graph_url)
        // Far longer than the lease: only the heartbeat keeps a hanging send's job ours.
        .env("WHATSAPP_TIMEOUT_SECS", "60")
        .env("JOB_LEASE_SECS", "2")
        .env("WORKER_POLL_MS", "100")
        .env("JOB_BACKOFF_MS", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    command
}

fn server(app: &TestApp, graph_url: &str, port: u16) -> Child {
    server_command(app, graph_url, port).spawn().unwrap()
}

pub(crate) async fn wait_ready(port: u16) {
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

async fn message_row(app: &TestApp, id: uuid::Uuid) -> (String, Option<String>) {
    let mut conn = app.superuser().await;
    sqlx::query_as("SELECT delivery_status, provider_message_id FROM message WHERE id = $1")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// A reply waiting to be sent, with nothing else queued.
async fn reply_to_send(app: &TestApp, fake: &FakeGraph) -> (uuid::Uuid, uuid::Uuid, String) {
    let owner = app.signup("acme").await;
    let (inbox, secret) = app.whatsapp_inbox(&owner, &fake.token).await;
    let (_, reply) = customer_then_reply(app, &owner, inbox, &secret).await;
    let mut conn = app.superuser().await;
    // These tests are about the send; the agent run the message also queued is not.
    sqlx::query("DELETE FROM job WHERE kind = 'agent.run'")
        .execute(&mut conn)
        .await
        .unwrap();
    (reply, inbox, secret)
}

#[tokio::test]
async fn killing_the_server_mid_send_loses_and_duplicates_nothing() {
    let fake = FakeGraph::start().await;
    let url = fake.base_url.clone();
    let app = TestApp::spawn_with(|c| fast_worker(c, &url)).await;
    let (reply, inbox, secret) = reply_to_send(&app, &fake).await;
    let mut conn = app.superuser().await;

    // The first send hangs at Meta; the process dies while waiting for the answer.
    fake.push(Reply::Hang);
    let port = free_port();
    let mut first = server(&app, &fake.base_url, port);
    wait_ready(port).await;
    eventually(30, "the send to be in flight", || async {
        (fake.request_count() == 1).then_some(())
    })
    .await;
    // The request hangs past the lease the job was claimed with (2 s; the Graph timeout is
    // 60 s): the worker's heartbeat keeps the job its own, so no one sends it a second time.
    let claimed_until: time::OffsetDateTime =
        sqlx::query_scalar("SELECT locked_until FROM job WHERE kind = 'message.send'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    eventually(
        30,
        "the first lease to run out while the send hangs",
        || async {
            let mut conn = app.superuser().await;
            let renewed: bool = sqlx::query_scalar(
            "SELECT now() > $1 + interval '1 second' AND locked_until > now() AND status = 'running'
                    AND last_error IS NULL
             FROM job WHERE kind = 'message.send'",
        )
        .bind(claimed_until)
        .fetch_one(&mut conn)
        .await
        .unwrap();
            renewed.then_some(())
        },
    )
    .await;
    assert_eq!(
        fake.request_count(),
        1,
        "a live worker's job was taken over"
    );
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

    // Meta may have the message: it is `sending`, not `queued`, and not `sent`.
    assert_eq!(
        message_row(&app, reply).await,
        ("sending".to_string(), None),
        "a send that never got an answer was recorded as settled"
    );
    // No status webhook names it within the grace period (simulated: the attempt is old).
    sqlx::query(
        "UPDATE message SET send_attempted_at = now() - interval '10 minutes' WHERE id = $1",
    )
    .bind(reply)
    .execute(&mut conn)
    .await
    .unwrap();

    fake.push(Reply::AcceptedWith {
        wamid: "wamid.AFTER-RESTART".into(),
    });
    let port = free_port();
    let second = server(&app, &fake.base_url, port);
    wait_ready(port).await;
    let wamid = eventually(30, "the send to complete after the restart", || async {
        let (status, wamid) = message_row(&app, reply).await;
        (status == "sent").then_some(wamid)
    })
    .await;
    app.settled("SELECT count(*) FROM job WHERE status = 'done'", 1)
        .await;
    drop(second);
    assert_eq!(wamid.as_deref(), Some("wamid.AFTER-RESTART"));
    // One reply row, one job, done. Every request Meta received: the one it never answered
    // and the one it took.
    assert_eq!(
        app.count("SELECT count(*) FROM message WHERE direction = 'outbound' AND NOT private")
            .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM job").await, 1);
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests.iter().filter(|r| r.wamid.is_some()).count(), 1);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM message WHERE provider_message_id LIKE 'wamid.BEFORE-CRASH-%'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_crash_after_meta_took_the_message_does_not_send_it_twice() {
    let fake = FakeGraph::start().await;
    let url = fake.base_url.clone();
    let app = TestApp::spawn_with(|c| fast_worker(c, &url)).await;
    let (reply, inbox, secret) = reply_to_send(&app, &fake).await;

    // Meta takes the message; the process dies before Meta's 200 reaches it.
    fake.push(Reply::AcceptedOnRelease {
        wamid: "wamid.TAKEN".into(),
    });
    let port = free_port();
    let mut first = server(&app, &fake.base_url, port);
    wait_ready(port).await;
    eventually(30, "Meta to have the message", || async {
        (fake.request_count() == 1).then_some(())
    })
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    fake.release();
    assert_eq!(
        message_row(&app, reply).await,
        ("sending".to_string(), None)
    );

    // Meta's status webhook names the wamid we never learnt, and our message id, which the
    // send gave Meta as callback data.
    let callback = fake.requests()[0].body["biz_opaque_callback_data"]
        .as_str()
        .expect("the send carried callback data")
        .to_string();
    assert_eq!(callback, reply.to_string());
    let status = json!({"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":crate::common::WA_PHONE_NUMBER_ID},
        "statuses":[{"id":"wamid.TAKEN","status":"sent","timestamp":"1750263773","recipient_id":"16505551234",
                     "biz_opaque_callback_data":callback}]}}]}]})
    .to_string();
    assert_eq!(
        app.webhook(inbox, status.as_bytes(), &secret).await.status,
        axum::http::StatusCode::OK
    );
    assert_eq!(
        message_row(&app, reply).await,
        ("sent".to_string(), Some("wamid.TAKEN".to_string()))
    );

    // The restarted server takes the job over when its lease runs out, and sends nothing.
    let port = free_port();
    let second = server(&app, &fake.base_url, port);
    wait_ready(port).await;
    app.settled(
        "SELECT count(*) FROM job WHERE status = 'done' AND attempts = 2",
        1,
    )
    .await;
    drop(second);
    assert_eq!(fake.request_count(), 1, "the message was sent twice");
}

#[tokio::test]
async fn a_clean_stop_gives_jobs_it_cut_short_back_to_the_queue() {
    let fake = FakeGraph::start().await;
    let url = fake.base_url.clone();
    let app = TestApp::spawn_with(|c| {
        fast_worker(c, &url);
        c.whatsapp.timeout = Duration::from_secs(60);
    })
    .await;
    let (reply, _, _) = reply_to_send(&app, &fake).await;
    fake.push(Reply::Hang);
    let worker = custodian::queue::worker::spawn_draining_for(
        custodian::app::worker(&app.state),
        Duration::from_millis(200),
    );
    eventually(10, "the send to be in flight", || async {
        (fake.request_count() == 1).then_some(())
    })
    .await;
    app.state.shutdown.cancel();
    worker.await.unwrap();
    let mut conn = app.superuser().await;
    let (status, attempts, locked_by, locked_until): (
        String,
        i32,
        Option<String>,
        Option<time::OffsetDateTime>,
    ) = sqlx::query_as("SELECT status, attempts, locked_by, locked_until FROM job")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(status, "queued", "a cut-short job was left running");
    assert_eq!(
        attempts, 0,
        "the cut-short attempt was counted as a failure"
    );
    assert_eq!((locked_by, locked_until), (None, None));
    // The request had left: the next run waits for Meta's word before sending again.
    assert_eq!(message_row(&app, reply).await.0, "sending");
}
