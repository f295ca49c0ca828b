//! What one agent turn costs apart from the model: guardrails on everything sent and received,
//! the run's database reads and writes, retrieval in pgvector, prompt assembly, decision
//! parsing, unmasking and the execution record. Drives a running server over HTTP with the
//! test suite's fake OpenAI-compatible model (answering at once), one web-chat turn after
//! another, and reads each run's own timings from its execution record:
//! overhead = total + finish − model − embedding (the provider's two calls).
//!
//! ```sh
//! cargo run --release -- serve                     # in one shell (any database)
//! cargo bench --bench agent_turn -- --url http://127.0.0.1:8080 --turns 300
//! ```

#[path = "../tests/it/fakes/openai.rs"]
mod openai;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Args {
    url: String,
    turns: usize,
    articles: usize,
}

fn args() -> Args {
    let mut args = Args {
        url: "http://127.0.0.1:8080".into(),
        turns: 300,
        articles: 40,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value(),
            "--turns" => args.turns = value().parse().expect("--turns"),
            "--articles" => args.articles = value().parse().expect("--articles"),
            _ => {}
        }
    }
    args
}

const TOPICS: &[(&str, &str)] = &[
    ("Returns", "You can return any item within 30 days of delivery for a full refund. Start a return from your orders page; we email a prepaid label."),
    ("Refund timing", "Refunds reach your card 5 to 10 business days after we receive the return. Bank transfers can take a little longer."),
    ("Shipping", "Orders ship within two business days. Express delivery arrives the next business day when ordered before noon."),
    ("Warranty", "Every device has a two-year warranty covering manufacturing defects. Keep your order number for claims."),
    ("Password", "To reset your password, use the link on the sign-in page. The link is valid for one hour."),
];

struct Client {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", &self.cookie);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("the server answers");
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = args();
    let model = openai::FakeOpenAI::start().await;
    model.set_default_reply(openai::FakeReply::Json(json!({
        "action": "reply", "confidence": 0.92, "reason_code": "answered", "cited_sources": [],
        "reply": "Hi [NAME_1]! Refunds reach your card 5 to 10 business days after we receive the return; we will write to [EMAIL_1] when it is on its way.",
        "action_request": null
    })));
    let http = reqwest::Client::new();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let slug = format!("turn-{}", &run[..12]);
    let signup = http
        .post(format!("{}/api/v1/auth/signup", args.url))
        .json(&json!({ "tenant_name": "Turn bench", "tenant_slug": slug, "email": format!("owner@{slug}.example"),
                       "display_name": "Bench", "password": "a long benchmark passphrase" }))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(signup.status(), 201, "sign-up failed");
    let cookie = signup.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let c = Client {
        http: http.clone(),
        base: args.url.clone(),
        cookie,
    };
    c.call(
        reqwest::Method::PUT,
        "/api/v1/agent/settings",
        // The fake's vectors carry no meaning: keep retrieval out of the confidence so every
        // turn replies (a hand-off would skip the outbound stage and unmasking).
        Some(json!({ "provider_base_url": model.base_url, "api_key": "sk-bench", "embedding_dims": 384,
                     "weight_retrieval": 0.0, "weight_self": 1.0, "weight_logprob": 0.0 })),
    )
    .await;
    for i in 0..args.articles {
        let (title, body) = TOPICS[i % TOPICS.len()];
        c.call(
            reqwest::Method::POST,
            "/api/v1/knowledge/articles",
            Some(json!({ "title": format!("{title} {i}"), "body": format!("{body}\n\nSection {i}: {body}") })),
        )
        .await;
    }
    // Let the embedding jobs finish before measuring.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let queued = c
            .call(reqwest::Method::GET, "/api/v1/jobs?status=queued", None)
            .await;
        if queued.as_array().is_some_and(|a| a.is_empty()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let inbox = c
        .call(
            reqwest::Method::POST,
            "/api/v1/inboxes",
            Some(json!({ "name": "Bench chat", "channel": "webchat", "webchat": { "allowed_origins": ["https://bench.example"] } })),
        )
        .await;
    let inbox = inbox["id"].as_str().unwrap().to_string();

    let mut overhead = Vec::new();
    let mut parts: [Vec<f64>; 4] = Default::default();
    let warmup = 20.min(args.turns / 5);
    for turn in 0..args.turns + warmup {
        let session: Value = http
            .post(format!("{}/api/v1/webchat/{inbox}/sessions", args.url))
            .json(&json!({ "name": "Sheena Nelson", "email": format!("sheena{turn}@example.com") }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = session["session_token"]
            .as_str()
            .expect("a session")
            .to_string();
        let sent: Value = http
            .post(format!("{}/api/v1/webchat/{inbox}/messages", args.url))
            .header("x-webchat-session", &token)
            .json(&json!({ "body": format!("Hi, I'm Sheena Nelson (sheena{turn}@example.com, +1 650 555 1234). Order 48213 came back to you last week: when will my refund arrive?") }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let conversation = sent["conversation_id"]
            .as_str()
            .expect("a conversation")
            .to_string();
        let execution = loop {
            let list = c
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/conversations/{conversation}/executions"),
                    None,
                )
                .await;
            let done = list
                .as_array()
                .or_else(|| list["items"].as_array())
                .and_then(|a| a.first().cloned())
                .filter(|e| e["outcome"] != "running");
            if let Some(e) = done {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let id = execution["id"].as_str().unwrap();
        let full = c
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/executions/{id}"),
                None,
            )
            .await;
        let t = &full["record"]["timings_ms"];
        let get = |k: &str| t[k].as_f64().unwrap_or(0.0);
        assert_eq!(full["outcome"], "replied", "{full}");
        if turn < warmup {
            continue;
        }
        let cost = get("total") + get("finish") - get("model") - get("embedding");
        overhead.push(cost);
        for (slot, key) in parts
            .iter_mut()
            .zip(["retrieval", "model", "embedding", "finish"])
        {
            slot.push(get(key));
        }
    }
    overhead.sort_by(f64::total_cmp);
    for p in parts.iter_mut() {
        p.sort_by(f64::total_cmp);
    }
    println!(
        "agent turn overhead (model and embedding calls excluded), {} turns: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        overhead.len(),
        pct(&overhead, 0.50),
        pct(&overhead, 0.95),
        pct(&overhead, 0.99),
        overhead.last().unwrap(),
    );
    for (name, p) in [
        "retrieval (incl. embedding)",
        "model (fake, local HTTP)",
        "embedding (fake, local HTTP)",
        "finish (before the last write)",
    ]
    .iter()
    .zip(parts.iter())
    {
        println!(
            "  {name}: p50 {:.2} ms, p99 {:.2} ms",
            pct(p, 0.50),
            pct(p, 0.99)
        );
    }
}
