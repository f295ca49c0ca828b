//! The agent runtime end to end: a signed WhatsApp webhook, the agent behind the guardrails, a
//! fake OpenAI-compatible model over real HTTP that records everything it is sent, and the
//! reply through the fake Graph API — plus the ways a run must not simply answer.

use axum::http::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{eventually, fast_worker, Member, Req, TestApp};
use crate::fakes::graph::FakeGraph;
use crate::fakes::openai::{FakeOpenAI, FakeReply};

pub(crate) struct World {
    pub app: TestApp,
    pub graph: FakeGraph,
    pub model: FakeOpenAI,
    pub owner: Member,
    pub inbox: Uuid,
    pub secret: String,
}

impl World {
    /// The customer writes over WhatsApp, and Meta gets its 200.
    pub(crate) async fn customer_writes(&self, text: &str, wamid: &str) {
        let said = self
            .app
            .webhook(self.inbox, &customer_says(text, wamid), &self.secret)
            .await;
        assert_eq!(said.status, StatusCode::OK, "{}", said.body);
    }
}

pub(crate) async fn world(settings: Value) -> World {
    world_with(settings, true).await
}

/// A tenant with a WhatsApp inbox and the fake model as its provider; `workers: false` leaves
/// jobs queued, for a test that runs them itself.
pub(crate) async fn world_with(settings: Value, workers: bool) -> World {
    let graph = FakeGraph::start().await;
    let model = FakeOpenAI::start().await;
    // No `dimensions` is configured, so none is sent: the model's own size is taken.
    model.set_embedding_dimension(384);
    let url = graph.base_url.clone();
    let app = TestApp::spawn_with(|c| fast_worker(c, &url)).await;
    if workers {
        app.start_workers();
    }
    let owner = app.signup("acme").await;
    let (inbox, secret) = app.whatsapp_inbox(&owner, &graph.token).await;
    let mut body = json!({ "provider_base_url": model.base_url, "api_key": "sk-test-key", "max_retries": 1, "timeout_ms": 2000 });
    body.as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    let resp = app
        .send(
            Req::new(axum::http::Method::PUT, "/api/v1/agent/settings")
                .by(&owner)
                .json(body),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    World {
        app,
        graph,
        model,
        owner,
        inbox,
        secret,
    }
}

pub(crate) fn customer_says(text: &str, wamid: &str) -> Vec<u8> {
    json!({"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
        "contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":"16505551234"}],
        "messages":[{"from":"16505551234","id":wamid,"timestamp":"1750263773","type":"text","text":{"body":text}}]}}]}]})
    .to_string()
    .into_bytes()
}

pub(crate) fn decision(action: &str, reply: &str, confidence: f64) -> FakeReply {
    FakeReply::Json(
        json!({ "action": action, "reply": reply, "confidence": confidence, "reason_code": "answered", "cited_sources": [], "action_request": null }),
    )
}

/// The chat call among a run record's provider calls.
pub(crate) fn chat_call(record: &Value) -> Value {
    record["provider_calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "chat")
        .cloned()
        .unwrap_or_else(|| panic!("no chat call in {record}"))
}

pub(crate) async fn execution(app: &TestApp) -> Value {
    eventually(20, "the agent run to finish", || async {
        let mut conn = app.superuser().await;
        sqlx::query_scalar::<_, Value>("SELECT to_jsonb(e) FROM agent_execution e WHERE outcome <> 'running' ORDER BY started_at DESC LIMIT 1")
            .fetch_optional(&mut conn)
            .await
            .unwrap()
    })
    .await
}

// proves: AGT-1, AGT-2, AGT-8, AGT-10
#[tokio::test]
#[allow(clippy::too_many_lines)]
async fn a_whatsapp_question_is_answered_through_the_guardrails_and_no_raw_pii_reaches_the_model() {
    let w = world(json!({ "confidence_threshold": 0.5 })).await;
    let article = w
        .app
        .send(Req::post("/api/v1/knowledge/articles").by(&w.owner).json(json!({ "title": "Refund timing", "body": "Refunds reach the original card within 5 business days. Contact billing@acme.example for invoices." })))
        .await;
    assert_eq!(article.status, StatusCode::CREATED);
    eventually(20, "the article to be embedded", || async {
        let s = w
            .app
            .send(Req::get("/api/v1/knowledge/status").by(&w.owner))
            .await;
        (s.body["ready"] == 1).then_some(())
    })
    .await;
    w.model.push(decision("reply", "Hi [NAME_1]! Your refund to the card ending as on file will reach you in 5 business days; we will confirm at [EMAIL_1].", 0.9));

    let text = "Hi, I'm Sheena Nelson, email sheena.nelson@example.com, card 4111 1111 1111 1111. When does my refund arrive?";
    assert_eq!(
        w.app
            .webhook(w.inbox, &customer_says(text, "wamid.AGENT1"), &w.secret)
            .await
            .status,
        StatusCode::OK
    );
    let run = execution(&w.app).await;
    assert_eq!(run["outcome"], "replied", "{run}");

    // The model saw placeholders only: no raw value of the conversation ever reached it.
    let seen = w.model.all_request_text();
    for raw in [
        "sheena.nelson@example.com",
        "4111 1111 1111 1111",
        "4111111111111111",
        "Sheena",
        "Nelson",
        "16505551234",
        "+16505551234",
        // The article's own personal data, on every endpoint: embeddings included.
        "billing@acme.example",
    ] {
        assert!(!seen.contains(raw), "{raw} reached the model");
    }
    // The passage was embedded masked, and the question too.
    let embedded: Vec<String> = w
        .model
        .embedding_requests()
        .iter()
        .map(|r| r.body["input"].to_string())
        .collect();
    assert!(
        embedded
            .iter()
            .any(|i| i.contains("Refunds reach the original card") && i.contains("[EMAIL_1]")),
        "{embedded:?}"
    );
    assert!(
        embedded
            .iter()
            .any(|i| i.contains("When does my refund arrive")),
        "{embedded:?}"
    );
    assert!(
        seen.contains("[EMAIL_1]") && seen.contains("[NAME_1]"),
        "the model never saw the placeholders"
    );
    assert!(
        w.model.request_count() >= 2,
        "embeddings and chat both go to the provider"
    );

    // The customer got the real values back, through the Graph API.
    let sent = eventually(20, "the reply to be sent", || async {
        w.graph.requests().into_iter().next()
    })
    .await;
    let body = sent.body["text"]["body"].as_str().unwrap();
    assert!(
        body.contains("Sheena") && body.contains("sheena.nelson@example.com"),
        "{body}"
    );
    assert!(!body.contains("[EMAIL_1]"));

    // AGT-8: the execution record holds every field.
    let record = &run["record"];
    for field in [
        "requests",
        "retrieval",
        "responses",
        "decision",
        "confidence",
        "guardrails",
        "templates",
        "parameters",
        "timings_ms",
        "usage",
    ] {
        assert!(!record[field].is_null(), "record lacks {field}: {record}");
    }
    assert_eq!(
        run["provider"],
        w.model
            .base_url
            .trim_start_matches("http://")
            .trim_end_matches("/v1")
    );
    assert!(record["retrieval"][0]["score"].is_number());
    assert!(record["requests"][0].to_string().contains("[EMAIL_1]"));
    assert_eq!(record["decision"]["action"], "reply");
    assert!(record["confidence"]["value"].as_f64().unwrap() >= 0.5);
    assert!(record["templates"][0]["sha256"].as_str().unwrap().len() == 64);
    assert!(record["guardrails"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["stage"] == "outbound"));
    // …and is linked into the hash-chained audit.
    let audited = w
        .app
        .audit_events(w.owner.tenant_id, "agent.executed")
        .await;
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0]["execution_id"], run["id"]);
    let verify = w
        .app
        .send(Req::get("/api/v1/audit/verify").by(&w.owner))
        .await;
    assert_eq!(verify.body["valid"], true);

    // AGT-10: which provider and model processed this contact's data.
    let contact = run["contact_id"].as_str().unwrap();
    let processors = w
        .app
        .send(Req::get(format!("/api/v1/contacts/{contact}/processors")).by(&w.owner))
        .await;
    assert_eq!(processors.status, StatusCode::OK);
    assert_eq!(processors.body["processors"][0]["model"], "gpt-4o-mini");
    assert_eq!(processors.body["processors"][0]["purpose"], "chat");
    assert_eq!(processors.body["processors"][0]["runs"], 1);
    // The embeddings API saw the (masked) question too: it is listed as well.
    assert_eq!(processors.body["processors"][1]["purpose"], "embeddings");
    assert_eq!(
        processors.body["processors"][1]["model"],
        "text-embedding-3-small"
    );
    assert_eq!(
        processors.body["processors"][1]["provider"],
        run["provider"]
    );
    assert_eq!(
        record["parameters"]["embedding"]["model"],
        "text-embedding-3-small"
    );
    assert_eq!(
        record["parameters"]["embedding"]["provider"],
        run["provider"]
    );
    let listed = w
        .app
        .send(Req::get(format!("/api/v1/contacts/{contact}/executions")).by(&w.owner))
        .await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    let shown = w
        .app
        .send(
            Req::get(format!(
                "/api/v1/executions/{}",
                run["id"].as_str().unwrap()
            ))
            .by(&w.owner),
        )
        .await;
    assert_eq!(shown.body["record"]["decision"]["action"], "reply");
    assert_eq!(shown.body["record_digest_ok"], true, "{}", shown.body);
    assert_eq!(
        shown.body["record_sha256"],
        audited[0]["after"]["record_sha256"]
    );
}

// proves: AGT-4
#[tokio::test]
async fn a_blocked_topic_never_reaches_the_model_and_the_customer_gets_the_safe_reply() {
    let w = world(json!({})).await;
    assert_eq!(
        w.app
            .webhook(
                w.inbox,
                &customer_says("Can I sue you for this delay?", "wamid.LEGAL"),
                &w.secret
            )
            .await
            .status,
        StatusCode::OK
    );
    let run = execution(&w.app).await;
    assert_eq!(run["outcome"], "blocked", "{run}");
    let chat_calls = w.model.chat_requests().len();
    assert_eq!(chat_calls, 0, "a blocked message was sent to the model");
    let sent = eventually(20, "the safe reply to be sent", || async {
        w.graph.requests().into_iter().next()
    })
    .await;
    assert!(!sent.body["text"]["body"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("sue"));
    assert_eq!(run["record"]["guardrails"][0]["verdict"]["action"], "block");
}

// proves: AGT-4
#[tokio::test]
async fn a_draft_with_a_forbidden_commitment_is_not_sent() {
    let w = world(
        json!({ "guardrails": { "options": { "forbidden_commitments": ["guaranteed refund"] } } }),
    )
    .await;
    w.model.push(decision(
        "reply",
        "Don't worry, you have a guaranteed refund today!",
        0.95,
    ));
    assert_eq!(
        w.app
            .webhook(
                w.inbox,
                &customer_says("My parcel never arrived", "wamid.PROMISE"),
                &w.secret
            )
            .await
            .status,
        StatusCode::OK
    );
    let run = execution(&w.app).await;
    assert_ne!(run["outcome"], "replied", "{run}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for request in w.graph.requests() {
        assert!(
            !request.body.to_string().contains("guaranteed refund"),
            "the promise reached the customer"
        );
    }
}

// proves: AGT-5
#[tokio::test]
async fn a_low_confidence_draft_goes_to_a_human_as_a_suggestion() {
    let w = world(json!({ "confidence_threshold": 0.7 })).await;
    w.model
        .push(decision("reply", "Maybe try restarting it?", 0.2));
    assert_eq!(
        w.app
            .webhook(
                w.inbox,
                &customer_says("The device makes a strange noise", "wamid.UNSURE"),
                &w.secret
            )
            .await
            .status,
        StatusCode::OK
    );
    let run = execution(&w.app).await;
    assert_eq!(run["outcome"], "handed_off");
    assert_eq!(run["record"]["reason"], "low_confidence");
    // The customer is told a person will reply; the unsure draft never reaches them.
    let told = crate::common::eventually(10, "the hand-off notice on WhatsApp", || async {
        let sent = w.graph.requests();
        (!sent.is_empty()).then_some(sent)
    })
    .await;
    assert_eq!(told.len(), 1);
    let text = told[0].body["text"]["body"].as_str().unwrap_or_default();
    assert!(text.contains("a colleague will pick up"), "{text}");
    assert!(!text.contains("restarting"), "the unsure draft was sent");
    let conversation = run["conversation_id"].as_str().unwrap();
    let shown = w
        .app
        .send(Req::get(format!("/api/v1/conversations/{conversation}")).by(&w.owner))
        .await;
    assert_eq!(shown.body["conversation"]["handler"], "human");
    let thread = w
        .app
        .send(Req::get(format!("/api/v1/conversations/{conversation}/messages")).by(&w.owner))
        .await;
    let note = thread.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["private"] == true)
        .expect("a note with the draft");
    assert!(note["body"]
        .as_str()
        .unwrap()
        .contains("Maybe try restarting it?"));
    assert_eq!(w.app.count("SELECT count(*) FROM review_item WHERE kind = 'low_confidence' AND status = 'pending'").await, 1);
}

/// A tenant's action endpoint that records every call.
async fn action_endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = calls.clone();
    let app = axum::Router::new().route(
        "/refund",
        axum::routing::post(move |body: axum::Json<Value>| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push(body.0);
                axum::Json(json!({ "ok": true }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/refund", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

/// Registers a refund action (a material kind) at a local endpoint and scripts the model to
/// call it for order A-1001; returns what the endpoint receives.
async fn refund_action_requested(w: &World) -> std::sync::Arc<std::sync::Mutex<Vec<Value>>> {
    let (url, calls) = action_endpoint().await;
    let action = w
        .app
        .send(Req::post("/api/v1/agent/actions").by(&w.owner).json(json!({
            "name": "issue_refund", "description": "Refund an order", "target_url": url, "secret": "action-secret",
            "kind": "refund", "requires_approval": false, "amount_field": "amount",
            "parameters": { "type": "object", "required": ["order_id", "amount"], "properties": { "order_id": { "type": "string" }, "amount": { "type": "number" } } }
        })))
        .await;
    assert_eq!(action.status, StatusCode::CREATED, "{}", action.body);
    w.model.push(FakeReply::ToolCalls(vec![(
        "issue_refund".into(),
        json!({ "order_id": "A-1001", "amount": 79.9 }),
    )]));
    calls
}

// proves: AGT-6
#[tokio::test]
async fn a_refund_waits_for_a_reviewer_and_runs_once_after_approval() {
    let w = world(json!({})).await;
    let calls = refund_action_requested(&w).await;
    assert_eq!(
        w.app
            .webhook(
                w.inbox,
                &customer_says(
                    "Please refund order A-1001, it arrived broken",
                    "wamid.REFUND"
                ),
                &w.secret
            )
            .await
            .status,
        StatusCode::OK
    );
    let run = execution(&w.app).await;
    assert_eq!(run["outcome"], "pending_review", "{run}");
    let mut conn = w.app.superuser().await;
    let item: Value =
        sqlx::query_scalar("SELECT to_jsonb(r) FROM review_item r WHERE kind = 'action'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(item["status"], "pending");
    assert_eq!(item["proposal"]["action"], "issue_refund");
    assert_eq!(item["proposal"]["amount"], 79.9);
    assert_eq!(item["execution_id"], run["id"]);
    // The customer is told a person will confirm; the refund endpoint was never called.
    let told = eventually(20, "the customer to be told", || async {
        w.graph.requests().into_iter().next()
    })
    .await;
    assert!(told.body["text"]["body"]
        .as_str()
        .unwrap()
        .contains("confirm"));
    assert!(
        calls.lock().unwrap().is_empty(),
        "a refund ran without approval"
    );

    // A named reviewer approves: the refund runs, once, with the item's idempotency key.
    let reviewer = w.app.join(&w.owner, "reviewer").await;
    let id = item["id"].as_str().unwrap();
    let approved = w
        .app
        .send(
            Req::post(format!("/api/v1/reviews/{id}/approve"))
                .by(&reviewer)
                .json(json!({})),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    eventually(20, "the approved refund to run", || async {
        (calls.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    let call = calls.lock().unwrap()[0].clone();
    assert_eq!(call["arguments"]["order_id"], "A-1001");
    assert_eq!(call["idempotency_key"], item["idempotency_key"]);
    let executed = eventually(20, "the item to be executed", || async {
        let shown = w
            .app
            .send(Req::get(format!("/api/v1/reviews/{id}")).by(&reviewer))
            .await;
        (shown.body["status"] == "executed").then_some(shown.body)
    })
    .await;
    assert_eq!(executed["decided_by"], reviewer.member_id.to_string());
}

// proves: AGT-11
#[tokio::test]
async fn a_provider_outage_hands_the_conversation_to_a_human_and_keeps_the_message() {
    let w = world(json!({})).await;
    for _ in 0..6 {
        w.model.push(FakeReply::ServerError);
    }
    assert_eq!(
        w.app
            .webhook(
                w.inbox,
                &customer_says("Hello? Anyone there?", "wamid.OUTAGE"),
                &w.secret
            )
            .await
            .status,
        StatusCode::OK
    );
    let run = execution(&w.app).await;
    assert_eq!(run["outcome"], "handed_off");
    assert_eq!(run["record"]["reason"], "provider_unavailable");
    assert!(w.model.request_count() >= 2, "no retry happened");
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM message WHERE body = 'Hello? Anyone there?'")
            .await,
        1
    );
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM conversation WHERE handler = 'human'")
            .await,
        1
    );
}

// proves: DSR-4
#[tokio::test]
async fn a_restricted_contacts_messages_are_never_processed_by_the_agent() {
    let w = world(json!({})).await;
    assert_eq!(
        w.app
            .webhook(
                w.inbox,
                &customer_says("first message", "wamid.R1"),
                &w.secret
            )
            .await
            .status,
        StatusCode::OK
    );
    let first = execution(&w.app).await;
    let mut conn = w.app.superuser().await;
    // The data subject asks for restriction; a member records it through the API.
    let contact: Uuid = sqlx::query_scalar("SELECT id FROM contact")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let restricted = w
        .app
        .send(Req::post(format!("/api/v1/contacts/{contact}/restrict")).by(&w.owner))
        .await;
    assert_eq!(restricted.status, StatusCode::OK, "{}", restricted.body);
    assert_eq!(restricted.body["restricted"], true);
    // Even a conversation handed back to the AI is not processed for a restricted contact.
    sqlx::query("UPDATE conversation SET handler = 'ai'")
        .execute(&mut conn)
        .await
        .unwrap();
    let before = w.model.request_count();
    assert_eq!(
        w.app
            .webhook(
                w.inbox,
                &customer_says("please do not use AI on my data", "wamid.R2"),
                &w.secret
            )
            .await
            .status,
        StatusCode::OK
    );
    eventually(20, "the conversation to reach the humans", || async {
        (w.app
            .count("SELECT count(*) FROM conversation WHERE handler = 'human'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        w.model.request_count(),
        before,
        "the model was called for a restricted contact"
    );
    assert_eq!(
        w.app
            .count(&format!(
                "SELECT count(*) FROM agent_execution WHERE id <> '{}'",
                first["id"].as_str().unwrap()
            ))
            .await,
        0
    );
}

#[tokio::test]
async fn the_offline_responder_answers_a_web_chat_question_from_the_knowledge_base_and_says_so() {
    let app = TestApp::spawn_with(|c| fast_worker(c, "http://127.0.0.1:9")).await;
    app.start_workers();
    let owner = app.signup("acme").await;
    for (title, body) in [
        ("Returns", "You can return any item within 30 days of delivery for a full refund. Start a return from your orders page."),
        ("Shipping", "Orders leave our warehouse within two business days and arrive in three to five days."),
    ] {
        app.send(Req::post("/api/v1/knowledge/articles").by(&owner).json(json!({ "title": title, "body": body }))).await;
    }
    eventually(20, "the articles to be embedded", || async {
        (app.send(Req::get("/api/v1/knowledge/status").by(&owner))
            .await
            .body["ready"]
            == 2)
            .then_some(())
    })
    .await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (token, _) = app
        .visitor_writes(inbox, "How many days do I have to return an item?")
        .await;
    let reply = eventually(20, "the offline answer", || async {
        let h = app
            .send(
                Req::get(format!("/api/v1/webchat/{inbox}/messages"))
                    .header("x-webchat-session", token.clone()),
            )
            .await;
        h.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["author_kind"] == "ai")
            .cloned()
    })
    .await;
    assert!(
        reply["body"].as_str().unwrap().contains("30 days"),
        "{reply}"
    );
    let run = execution(&app).await;
    assert_eq!(run["offline"], true);
    assert_eq!(run["provider"], "offline");
    assert_eq!(run["record"]["decision"]["reason_code"], "offline_quote");
}

// --- The customer's language -------------------------------------------------------------

async fn conversation_of(app: &TestApp) -> Uuid {
    let mut conn = app.superuser().await;
    sqlx::query_scalar("SELECT id FROM conversation ORDER BY created_at DESC LIMIT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

async fn nth_sent_text(graph: &FakeGraph, n: usize) -> String {
    eventually(20, "a message to the customer", || async {
        graph.requests().into_iter().nth(n)
    })
    .await
    .body["text"]["body"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_portuguese_customer_gets_the_safe_reply_in_portuguese() {
    let w = world(json!({})).await;
    w.customer_writes(
        "Olá, posso processar vocês por causa deste atraso? Quero um advogado.",
        "wamid.LEGAL-PT",
    )
    .await;
    let run = execution(&w.app).await;
    assert_eq!(run["outcome"], "blocked", "{run}");
    let key = run["record"]["guardrails"][0]["verdict"]["safe_reply_key"]
        .as_str()
        .expect("a blocked verdict names its safe reply")
        .to_string();
    let expected = custodian::guardrails::Policy::builtin()
        .safe_reply(&key, custodian::guardrails::Lang::Pt)
        .unwrap();
    assert_ne!(
        expected,
        custodian::guardrails::Policy::builtin()
            .safe_reply(&key, custodian::guardrails::Lang::En)
            .unwrap()
    );
    assert_eq!(nth_sent_text(&w.graph, 0).await, expected);
    let shown = w
        .app
        .send(
            Req::get(format!(
                "/api/v1/conversations/{}",
                conversation_of(&w.app).await
            ))
            .by(&w.owner),
        )
        .await;
    assert_eq!(
        shown.body["conversation"]["language"], "pt",
        "{}",
        shown.body
    );
    assert_eq!(shown.body["conversation"]["language_set_by_member"], false);
}

#[tokio::test]
async fn a_spanish_customer_is_told_in_spanish_that_a_person_will_confirm_and_then_that_it_was_rejected(
) {
    use custodian::guardrails::Lang;
    let w = world(json!({})).await;
    let calls = refund_action_requested(&w).await;
    w.customer_writes(
        "Hola, quiero el reembolso del pedido A-1001, llegó roto",
        "wamid.REFUND-ES",
    )
    .await;
    assert_eq!(execution(&w.app).await["outcome"], "pending_review");
    assert_eq!(
        nth_sent_text(&w.graph, 0).await,
        custodian::agent::tools::pending_message(Lang::Es)
    );

    let mut conn = w.app.superuser().await;
    let item: Uuid = sqlx::query_scalar("SELECT id FROM review_item WHERE kind = 'action'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let reviewer = w.app.join(&w.owner, "reviewer").await;
    let rejected = w
        .app
        .send(
            Req::post(format!("/api/v1/reviews/{item}/reject"))
                .by(&reviewer)
                .json(json!({ "reason": "already refunded" })),
        )
        .await;
    assert_eq!(rejected.status, StatusCode::OK, "{}", rejected.body);
    assert_eq!(
        nth_sent_text(&w.graph, 1).await,
        custodian::reviews::policy::default_rejection_message(Lang::Es)
    );
    assert!(calls.lock().unwrap().is_empty(), "a rejected refund ran");
}

#[tokio::test]
async fn a_language_set_by_a_member_holds_until_handed_back_to_detection() {
    let w = world(json!({})).await;
    w.model.push(decision("reply", "Hello!", 0.9));
    w.app
        .webhook(
            w.inbox,
            &customer_says("Hi, where is my order?", "wamid.L1"),
            &w.secret,
        )
        .await;
    execution(&w.app).await;
    let conversation = conversation_of(&w.app).await;
    let path = format!("/api/v1/conversations/{conversation}/language");
    let put = |body: Value| {
        w.app.send(
            Req::new(axum::http::Method::PUT, path.clone())
                .by(&w.owner)
                .json(body),
        )
    };

    for bad in [
        json!({ "language": "fr" }),
        json!({ "language": 7 }),
        json!({}),
    ] {
        let refused = put(bad.clone()).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            refused.body
        );
    }
    let show = format!("/api/v1/conversations/{conversation}");
    let shown = || async {
        w.app.send(Req::get(show.clone()).by(&w.owner)).await.body["conversation"].clone()
    };
    assert_eq!(shown().await["language"], "en");

    let set = put(json!({ "language": "de-AT" })).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(set.body["language"], "de");
    assert_eq!(set.body["language_set_by_member"], true);
    let audit = w
        .app
        .audit_events(w.owner.tenant_id, "conversation.language_set")
        .await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["before"]["language"], "en");
    assert_eq!(audit[0]["after"]["language"], "de");

    // An English message does not override the member's choice…
    w.model.push(decision("reply", "Sure.", 0.9));
    w.app
        .webhook(
            w.inbox,
            &customer_says("Thanks, and when will it arrive?", "wamid.L2"),
            &w.secret,
        )
        .await;
    w.app
        .settled(
            "SELECT count(*) FROM message WHERE direction = 'inbound'",
            2,
        )
        .await;
    assert_eq!(shown().await["language"], "de");

    // …until the member hands it back to detection, and the next clear message decides.
    let back = put(json!({ "language": null })).await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    assert_eq!(back.body["language_set_by_member"], false);
    w.model.push(decision("reply", "Claro.", 0.9));
    w.app
        .webhook(
            w.inbox,
            &customer_says("Hola, ¿dónde está mi pedido?", "wamid.L3"),
            &w.secret,
        )
        .await;
    eventually(20, "the language to follow the customer again", || async {
        (shown().await["language"] == "es").then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_agent_run_whose_job_runs_again_after_it_finished_does_nothing_twice() {
    let w = world(json!({})).await;
    w.model
        .push(decision("reply", "Your order ships today.", 0.9));
    w.customer_writes("Where is my order?", "wamid.AGAIN").await;
    assert_eq!(execution(&w.app).await["outcome"], "replied");
    nth_sent_text(&w.graph, 0).await;
    w.app
        .settled(
            "SELECT count(*) FROM job WHERE kind = 'agent.run' AND status = 'done'",
            1,
        )
        .await;

    // At-least-once delivery: the same job runs again, as after a crash before its settle.
    let mut conn = w.app.superuser().await;
    sqlx::query("UPDATE job SET status = 'queued', run_at = now(), finished_at = NULL WHERE kind = 'agent.run'")
        .execute(&mut conn)
        .await
        .unwrap();
    w.app
        .settled(
            "SELECT count(*) FROM job WHERE kind = 'agent.run' AND status = 'done' AND finished_at IS NOT NULL",
            1,
        )
        .await;
    assert_eq!(w.app.count("SELECT count(*) FROM agent_execution").await, 1);
    assert_eq!(
        w.model.chat_requests().len(),
        1,
        "the model was asked twice"
    );
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM message WHERE direction = 'outbound'")
            .await,
        1
    );
}
