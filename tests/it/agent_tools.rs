//! The tools the model calls, and the actions it asks for in its decision: built-in tools
//! through scripted tool calls, arguments checked against each schema (an invalid call goes
//! back to the model once, then to a person), a tenant's action signed for its endpoint, and a
//! requested action that must name a real action with valid arguments and always waits for a
//! reviewer when it is material.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::agent::{decision, execution, world, World};
use crate::fakes::openai::FakeReply;

async fn customer(w: &World, text: &str, wamid: &str) -> Value {
    w.customer_writes(text, wamid).await;
    execution(&w.app).await
}

/// The `role: tool` messages of the model's n-th request.
fn tool_results(w: &World, n: usize) -> Vec<String> {
    w.model.chat_requests()[n].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            // A tool's result comes as a data block: its lines marked, between boundary lines.
            m["content"]
                .as_str()
                .unwrap()
                .lines()
                .filter_map(|l| l.strip_prefix("│ "))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

// proves: AGT-8
#[tokio::test]
async fn the_model_opens_a_ticket_leaves_a_note_and_hands_over_through_the_built_in_tools() {
    let w = world(json!({})).await;
    w.model.push(FakeReply::ToolCalls(vec![
        (
            "create_ticket".into(),
            json!({ "subject": "Replace the device of [NAME_1]", "description": "Arrived broken", "priority": "high" }),
        ),
        (
            "add_note".into(),
            json!({ "text": "[NAME_1] wants a replacement" }),
        ),
        (
            "handoff_to_human".into(),
            json!({ "reason": "needs_replacement" }),
        ),
    ]));

    let run = customer(&w, "Hi, my device arrived broken", "wamid.TOOLS").await;

    assert_eq!(run["outcome"], "handed_off", "{run}");
    assert_eq!(run["record"]["reason"], "needs_replacement");
    let mut conn = w.app.superuser().await;
    let (subject, priority, created_by): (String, String, String) =
        sqlx::query_as("SELECT subject, priority, created_by FROM ticket")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    // The placeholder is the real name again in the tenant's own records.
    assert_eq!(subject, "Replace the device of Sheena Nelson");
    assert_eq!(priority, "high");
    assert_eq!(created_by, format!("agent:{}", run["id"].as_str().unwrap()));
    // The team's ticket list shows it as the agent's, about the conversation it answered.
    let listed = w
        .app
        .send(crate::common::Req::get("/api/v1/tickets").by(&w.owner))
        .await;
    let ticket = &listed.body["items"][0];
    assert_eq!(ticket["origin"], "agent", "{}", listed.body);
    assert_eq!(ticket["author_id"], Value::Null);
    assert_eq!(ticket["status"], "new");
    assert_eq!(ticket["conversation_ids"].as_array().unwrap().len(), 1);
    assert!(ticket["requester_id"].is_string());
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM message WHERE private AND author_kind = 'ai' AND body = 'Sheena Nelson wants a replacement'")
            .await,
        1
    );
    for action in ["ticket.created", "note.created", "conversation.handed_off"] {
        assert_eq!(
            w.app.audit_events(w.owner.tenant_id, action).await.len(),
            1,
            "{action}"
        );
    }
    let effects: Vec<&str> = run["record"]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["effect"].as_str().unwrap())
        .collect();
    assert_eq!(effects, ["executed", "executed", "handoff"]);
    assert_eq!(w.model.chat_requests().len(), 1);
}

// proves: AGT-2 (tool results reach the model masked)
#[tokio::test]
async fn knowledge_and_the_profile_reach_the_model_through_tools_masked() {
    let w = world(json!({ "confidence_threshold": 0.1 })).await;
    let article = w
        .app
        .send(
            crate::common::Req::post("/api/v1/knowledge/articles")
                .by(&w.owner)
                .json(json!({ "title": "Warranty claims", "body": "Warranty claims go to claims@acme.example or +1 415 555 0100 within two years." })),
        )
        .await;
    assert_eq!(article.status, StatusCode::CREATED);
    crate::common::eventually(20, "the article to be embedded", || async {
        (w.app
            .count("SELECT count(*) FROM knowledge_article WHERE embedding_status = 'ready'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    w.model.push(FakeReply::ToolCalls(vec![
        (
            "search_knowledge".into(),
            json!({ "query": "warranty claims" }),
        ),
        ("get_customer_profile".into(), json!({})),
    ]));
    w.model.push(decision("reply", "Write to [EMAIL_1].", 0.9));

    let run = customer(&w, "How do I claim the warranty?", "wamid.MASKED-TOOLS").await;

    assert_eq!(run["outcome"], "replied", "{run}");
    let results = tool_results(&w, 1);
    assert_eq!(results.len(), 2);
    assert!(results[0].contains("Warranty claims go to"), "{results:?}");
    assert!(results[1].contains("name: [NAME_"), "{results:?}");
    let seen = w.model.all_request_text();
    for raw in [
        "claims@acme.example",
        "415 555 0100",
        "Sheena",
        "16505551234",
    ] {
        assert!(!seen.contains(raw), "{raw} reached the model");
    }
}

// proves: AGT-8
#[tokio::test]
async fn an_invalid_tool_call_is_returned_to_the_model_once_and_the_second_hands_over() {
    let w = world(json!({})).await;
    w.model.push(FakeReply::ToolCalls(vec![(
        "create_ticket".into(),
        json!({ "priority": "high" }),
    )]));
    w.model.push(FakeReply::ToolCalls(vec![(
        "create_ticket".into(),
        json!({ "subject": "x", "priority": "whenever" }),
    )]));

    let run = customer(&w, "My device is broken", "wamid.INVALID").await;

    assert_eq!(run["outcome"], "handed_off", "{run}");
    assert_eq!(run["record"]["reason"], "invalid_tool_call");
    assert_eq!(
        w.model.chat_requests().len(),
        2,
        "returned to the model once"
    );
    let first = tool_results(&w, 1);
    assert_eq!(
        first,
        ["error: missing required argument arguments.subject"]
    );
    assert_eq!(w.app.count("SELECT count(*) FROM ticket").await, 0);
}

#[tokio::test]
async fn a_tool_call_corrected_after_its_error_goes_ahead() {
    let w = world(json!({})).await;
    w.model.push(FakeReply::ToolCalls(vec![(
        "create_ticket".into(),
        json!("not json at all"),
    )]));
    w.model.push(FakeReply::ToolCalls(vec![(
        "create_ticket".into(),
        json!({ "subject": "Broken device" }),
    )]));
    w.model
        .push(decision("reply", "I opened a ticket for you.", 0.9));

    let run = customer(&w, "My device is broken", "wamid.FIXED").await;

    assert_eq!(run["outcome"], "replied", "{run}");
    assert_eq!(
        tool_results(&w, 1),
        ["error: the arguments are not valid JSON"]
    );
    assert_eq!(w.app.count("SELECT count(*) FROM ticket").await, 1);
}

/// A tenant's endpoint that checks the platform's signature with the action's secret and
/// records each call: (body, signature valid, idempotency key).
async fn signed_endpoint(secret: &'static str) -> (String, Arc<Mutex<Vec<(Value, bool, String)>>>) {
    let calls: Arc<Mutex<Vec<(Value, bool, String)>>> = Arc::default();
    let recorded = calls.clone();
    let app = axum::Router::new().route(
        "/orders",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let recorded = recorded.clone();
            async move {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
                mac.update(&body);
                let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                let presented = headers
                    .get("x-custodian-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                recorded.lock().unwrap().push((
                    serde_json::from_slice(&body).unwrap(),
                    presented == expected,
                    key,
                ));
                axum::Json(json!({ "status": "shipped", "eta_days": 2 }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/orders", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

#[tokio::test]
async fn a_non_material_action_runs_at_once_signed_with_its_secret_and_with_the_real_values() {
    let w = world(json!({})).await;
    let (url, calls) = signed_endpoint("order-lookup-secret").await;
    let created = w
        .app
        .send(crate::common::Req::post("/api/v1/agent/actions").by(&w.owner).json(json!({
            "name": "lookup_order",
            "description": "Look an order up (escalations: ops@acme.example)",
            "target_url": url, "secret": "order-lookup-secret", "requires_approval": false,
            "parameters": { "type": "object", "required": ["order_id", "email"], "additionalProperties": false, "properties": {
                "order_id": { "type": "string", "pattern": "^A-[0-9]+$" },
                "email": { "type": "string", "pattern": "^[^@ ]+@[^@ ]+$" } } }
        })))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    w.model.push(FakeReply::ToolCalls(vec![(
        "lookup_order".into(),
        json!({ "order_id": "A-1001", "email": "[EMAIL_1]" }),
    )]));
    w.model
        .push(decision("reply", "Your order has shipped.", 0.9));

    let run = customer(
        &w,
        "Where is order A-1001? My email is sheena.nelson@example.com",
        "wamid.LOOKUP",
    )
    .await;

    assert_eq!(run["outcome"], "replied", "{run}");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let (body, signed, key) = &calls[0];
    assert!(signed, "the x-custodian-signature did not verify");
    assert_eq!(body["action"], "lookup_order");
    // Checked against the schema, and sent, with the value behind the placeholder.
    assert_eq!(body["arguments"]["email"], "sheena.nelson@example.com");
    assert_eq!(body["idempotency_key"], key.as_str());
    assert!(key.starts_with(run["id"].as_str().unwrap()));
    assert!(tool_results(&w, 1)[0].starts_with("HTTP 200:"));
    assert_eq!(
        w.app
            .audit_events(w.owner.tenant_id, "action.executed")
            .await
            .len(),
        1
    );
    // The tenant's description reached the model through the inbound stage.
    let offered = &w.model.chat_requests()[0].body["tools"];
    let lookup = offered
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "lookup_order")
        .unwrap();
    let description = lookup["function"]["description"].as_str().unwrap();
    assert!(!description.contains("ops@acme.example"), "{description}");
    assert!(description.contains("[EMAIL_"), "{description}");
}

/// A refund action (a material kind) at a local endpoint; returns its id.
async fn refund_action(w: &World, requires_approval: bool) -> Value {
    let created = w
        .app
        .send(crate::common::Req::post("/api/v1/agent/actions").by(&w.owner).json(json!({
            "name": "issue_refund", "description": "Refund an order", "target_url": "http://127.0.0.1:9/refund",
            "secret": "s", "kind": "refund", "requires_approval": requires_approval, "amount_field": "amount",
            "parameters": { "type": "object", "required": ["order_id", "amount"], "additionalProperties": false, "properties": {
                "order_id": { "type": "string" }, "amount": { "type": "number", "exclusiveMinimum": 0, "maximum": 1000 } } }
        })))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body
}

fn request_action(name: &str, arguments: Value) -> FakeReply {
    FakeReply::Json(json!({
        "action": "request_action", "reply": "", "confidence": 0.9, "reason_code": "action_needed",
        "cited_sources": [], "action_request": { "name": name, "arguments": arguments }
    }))
}

// proves: AGT-6
#[tokio::test]
async fn a_request_for_an_action_that_does_not_exist_is_handed_over_and_opens_no_item() {
    let w = world(json!({})).await;
    refund_action(&w, true).await;
    w.model.push(request_action("teleport_parcel", json!("{}")));

    let run = customer(&w, "Can you teleport my parcel?", "wamid.UNKNOWN").await;

    assert_eq!(run["outcome"], "handed_off", "{run}");
    assert_eq!(run["record"]["reason"], "unknown_action");
    assert_eq!(w.app.count("SELECT count(*) FROM review_item").await, 0);
}

// proves: AGT-6
#[tokio::test]
async fn an_action_request_with_invalid_arguments_goes_back_once_then_to_a_person() {
    let w = world(json!({})).await;
    refund_action(&w, true).await;
    w.model.push(request_action(
        "issue_refund",
        json!(r#"{"order_id":"A-1001"}"#),
    ));
    w.model.push(request_action(
        "issue_refund",
        json!(r#"{"order_id":"A-1001","amount":-5}"#),
    ));

    let run = customer(&w, "Refund order A-1001 please", "wamid.BADARGS").await;

    assert_eq!(run["outcome"], "handed_off", "{run}");
    assert_eq!(run["record"]["reason"], "invalid_action_request");
    assert_eq!(w.model.chat_requests().len(), 2);
    let second = w.model.chat_requests()[1].body["messages"].to_string();
    assert!(
        second.contains("missing required argument arguments.amount"),
        "{second}"
    );
    assert_eq!(w.app.count("SELECT count(*) FROM review_item").await, 0);
}

// proves: AGT-6
#[tokio::test]
async fn an_action_request_corrected_after_its_error_waits_for_a_reviewer() {
    let w = world(json!({})).await;
    let action = refund_action(&w, true).await;
    w.model
        .push(request_action("issue_refund", json!({ "order_id": 1001 })));
    w.model.push(request_action(
        "issue_refund",
        json!(r#"{"order_id":"A-1001","amount":79.9}"#),
    ));

    let run = customer(&w, "Refund order A-1001 please", "wamid.GOODARGS").await;

    assert_eq!(run["outcome"], "pending_review", "{run}");
    let mut conn = w.app.superuser().await;
    let item: Value = sqlx::query_scalar("SELECT to_jsonb(r) FROM review_item r")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(item["action_id"], action["id"]);
    assert_eq!(item["proposal"]["arguments"]["order_id"], "A-1001");
    assert_eq!(item["proposal"]["amount"], 79.9);
}

// proves: AGT-6 (refunds, discounts, exchanges and escalations always need a reviewer)
#[tokio::test]
async fn a_refund_action_saved_without_approval_still_waits_for_a_reviewer() {
    let w = world(json!({})).await;
    let action = refund_action(&w, false).await;
    assert_eq!(action["requires_approval"], true, "{action}");
    // Not even the database lets the flag say otherwise.
    let mut conn = w.app.superuser().await;
    assert!(
        sqlx::query("UPDATE tenant_action SET requires_approval = false")
            .execute(&mut conn)
            .await
            .is_err()
    );
    // The model names the kind rather than the action: the one refund action answers.
    w.model.push(request_action(
        "refund",
        json!(r#"{"order_id":"A-1001","amount":20}"#),
    ));

    let run = customer(&w, "Refund order A-1001 please", "wamid.KIND").await;

    assert_eq!(run["outcome"], "pending_review", "{run}");
    let (action_id, status): (uuid::Uuid, String) =
        sqlx::query_as("SELECT action_id, status FROM review_item")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(action_id.to_string(), action["id"].as_str().unwrap());
    assert_eq!(status, "pending");
}

/// The function names the model was offered in its n-th request.
fn offered(w: &World, n: usize) -> Vec<String> {
    w.model.chat_requests()[n].body["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .map(|t| t["function"]["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn an_action_created_or_deleted_between_two_turns_is_what_the_next_turn_offers() {
    let w = world(json!({})).await;
    let turn = |n: usize, wamid: &'static str| {
        let w = &w;
        async move {
            w.model.push(decision("reply", "Happy to help.", 0.9));
            w.customer_writes("Hi, a question", wamid).await;
            crate::common::eventually(20, "the turn to finish", || async {
                let done = w
                    .app
                    .count("SELECT count(*) FROM agent_execution WHERE outcome <> 'running'")
                    .await;
                (done >= n as i64).then_some(())
            })
            .await;
        }
    };
    turn(1, "wamid.BEFORE").await;
    assert!(!offered(&w, 0).contains(&"issue_refund".to_string()));

    // Runs keep the tenant's actions between turns; a change must reach the very next one.
    let action = refund_action(&w, true).await;
    turn(2, "wamid.CREATED").await;
    assert!(
        offered(&w, 1).contains(&"issue_refund".to_string()),
        "{:?}",
        offered(&w, 1)
    );

    let deleted = w
        .app
        .send(
            crate::common::Req::delete(format!(
                "/api/v1/agent/actions/{}",
                action["id"].as_str().unwrap()
            ))
            .by(&w.owner),
        )
        .await;
    assert!(deleted.status.is_success(), "{}", deleted.body);
    turn(3, "wamid.DELETED").await;
    assert!(!offered(&w, 2).contains(&"issue_refund".to_string()));
}
