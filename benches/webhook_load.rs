//! Load generator for WhatsApp ingestion: posts signed Cloud API webhooks to a running server
//! and reports sustained messages per second and latency percentiles. Every request is a new
//! customer message (unique wamid) from one of `--senders` customers, stored durably before
//! the server answers 200.
//!
//! ```sh
//! WHATSAPP_GRAPH_URL=http://127.0.0.1:8091 cargo run --release -- serve   # in one shell (any database)
//! cargo bench --bench webhook_load -- --url http://127.0.0.1:8080 --seconds 20 --concurrency 32
//! ```
//! `--warmup N` sends for N seconds before measuring, so the figures are the steady state of
//! known senders rather than the first contact with each.
//! It signs up a fresh tenant with a WhatsApp inbox through the API, so it needs nothing else:
//! the server confirms the inbox's number with Meta first, and the load generator stands in
//! for Meta on `--graph-listen` (default 127.0.0.1:8091), confirming its own number only.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use custodian::channels::whatsapp::signature;
use serde_json::{json, Value};

struct Args {
    url: String,
    seconds: u64,
    concurrency: usize,
    senders: u64,
    /// Requests started in the first `warmup` seconds (while the senders' contacts and
    /// conversations are first created) are sent but not counted.
    warmup: u64,
    /// Where to answer the server's Graph API reads of the load test's number.
    graph_listen: String,
}

fn args() -> Args {
    let mut args = Args {
        url: "http://127.0.0.1:8080".into(),
        seconds: 20,
        concurrency: 32,
        senders: 1000,
        warmup: 0,
        graph_listen: "127.0.0.1:8091".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value(),
            "--seconds" => args.seconds = value().parse().expect("--seconds"),
            "--concurrency" => args.concurrency = value().parse().expect("--concurrency"),
            "--senders" => args.senders = value().parse().expect("--senders"),
            "--warmup" => args.warmup = value().parse().expect("--warmup"),
            "--graph-listen" => args.graph_listen = value(),
            // cargo bench passes --bench; nothing else is ours.
            _ => {}
        }
    }
    args
}

fn webhook(phone_number_id: &str, sender: u64, wamid: &str) -> Vec<u8> {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "102290129340398", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550783881", "phone_number_id": phone_number_id },
            "contacts": [{ "profile": { "name": format!("Customer {sender}") }, "wa_id": format!("5511{sender:09}") }],
            "messages": [{
                "from": format!("5511{sender:09}"), "id": wamid, "timestamp": "1750263773",
                "type": "text", "text": { "body": "Olá! Meu pedido 48213 ainda não chegou, podem verificar?" }
            }]
        }}]}]
    })
    .to_string()
    .into_bytes()
}

/// Answers the two reads by which the server confirms a number with Meta, for `number` only.
async fn stand_in_for_meta(listen: &str, number: String) {
    use axum::extract::Path;
    use axum::routing::get;
    let number_read = number.clone();
    let app = axum::Router::new()
        .route(
            "/{version}/{id}",
            get(move |Path((_, id)): Path<(String, String)>| {
                let number = number_read.clone();
                async move {
                    let status = if id == number { 200 } else { 400 };
                    let status = axum::http::StatusCode::from_u16(status).unwrap();
                    let body = json!({ "id": id, "display_phone_number": "+1 555-000-0000" });
                    (status, axum::Json(body))
                }
            }),
        )
        .route(
            "/{version}/{account}/phone_numbers",
            get(move || async move { axum::Json(json!({ "data": [{ "id": number }] })) }),
        );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {listen} for the server's Graph reads: {e}"));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

#[tokio::main]
async fn main() {
    let args = args();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .unwrap();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let slug = format!("load-{}", &run[..12]);
    let signup = client
        .post(format!("{}/api/v1/auth/signup", args.url))
        .json(&json!({ "tenant_name": "Load test", "tenant_slug": slug, "email": format!("owner@{slug}.example"),
                       "display_name": "Load", "password": "a long load-test passphrase" }))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(
        signup.status(),
        201,
        "sign-up failed: {}",
        signup.text().await.unwrap_or_default()
    );
    let cookie = signup.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let phone_number_id = format!(
        "9{}",
        &run[..14]
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect::<String>()
    );
    let phone_number_id = format!("{phone_number_id:0<15}");
    stand_in_for_meta(&args.graph_listen, phone_number_id.clone()).await;
    let app_secret = format!("secret-{run}");
    let inbox: Value = client
        .post(format!("{}/api/v1/inboxes", args.url))
        .header("cookie", &cookie)
        .json(
            &json!({ "name": "Load", "channel": "whatsapp", "whatsapp": {
            "phone_number_id": phone_number_id, "business_account_id": "1", "verify_token": "v",
            "app_secret": app_secret, "access_token": "t" } }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let target = format!(
        "{}/webhooks/whatsapp/{}",
        args.url,
        inbox["id"].as_str().unwrap_or_else(|| panic!(
            "no inbox: {inbox} (is the server's WHATSAPP_GRAPH_URL http://{}?)",
            args.graph_listen
        ))
    );

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let warmup = Duration::from_secs(args.warmup);
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, target, stop, next, failures) = (
            client.clone(),
            target.clone(),
            stop.clone(),
            next.clone(),
            failures.clone(),
        );
        let (phone_number_id, app_secret, run, senders) = (
            phone_number_id.clone(),
            app_secret.clone(),
            run.clone(),
            args.senders,
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let body = webhook(&phone_number_id, n % senders, &format!("wamid.{run}.{n}"));
                let sig = signature::sign(app_secret.as_bytes(), &body);
                let t = Instant::now();
                let counted = t.duration_since(started) >= warmup;
                let ok = client
                    .post(&target)
                    .header("content-type", "application/json")
                    .header("x-hub-signature-256", sig)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status() == 200)
                    .unwrap_or(false);
                if counted {
                    latencies.push(t.elapsed());
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(warmup + Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<Duration> = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    let elapsed = (started.elapsed() - warmup).as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let failed = failures.load(Ordering::Relaxed);
    println!(
        "webhook ingestion: {} requests in {:.1} s = {:.0} msg/s stored; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} failed; concurrency {}, {} senders",
        latencies.len(),
        elapsed,
        (latencies.len() as u64 - failed) as f64 / elapsed,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
        failed,
        args.concurrency,
        args.senders,
    );
    // For per-message CPU accounting from outside (warm-up included).
    println!(
        "requests sent in all, warm-up included: {}",
        next.load(Ordering::Relaxed)
    );
}
