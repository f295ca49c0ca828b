//! The review queue: four-eyes approval, approval policies, exactly-once execution of approved
//! actions against a tenant's endpoint over real HTTP, rejection and expiry that tell the
//! customer, human-review requests, and live updates.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{eventually, fast_worker, Member, Req, Resp, TestApp};
use crate::fakes::openai::{FakeOpenAI, FakeReply};

/// One call a tenant's action endpoint received.
#[derive(Debug, Clone)]
struct Call {
    body: Value,
    idempotency_key: String,
}

struct World {
    app: TestApp,
    owner: Member,
    admin: Member,
    reviewer: Member,
    second_reviewer: Member,
    agent: Member,
    conversation: Uuid,
    refund: Uuid,
    discount: Uuid,
    calls: Arc<Mutex<Vec<Call>>>,
}

/// A tenant's action endpoint that records every call and answers slowly enough for
/// concurrent approvals to overlap with the execution.
async fn action_endpoint() -> (String, Arc<Mutex<Vec<Call>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let recorded = calls.clone();
    let app = axum::Router::new().route(
        "/actions",
        axum::routing::post(move |headers: HeaderMap, body: axum::Json<Value>| {
            let recorded = recorded.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                recorded.lock().unwrap().push(Call {
                    body: body.0,
                    idempotency_key: headers["idempotency-key"].to_str().unwrap().to_string(),
                });
                axum::Json(json!({ "ok": true }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/actions", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

async fn world() -> World {
    let app = TestApp::spawn_with(|c| {
        fast_worker(c, "http://127.0.0.1:9");
        c.worker.sweep = Duration::from_millis(100);
    })
    .await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let admin = app.join(&owner, "admin").await;
    let reviewer = app.join(&owner, "reviewer").await;
    let second_reviewer = app.join(&owner, "reviewer").await;
    let agent = app.join(&owner, "agent").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, conversation) = app
        .visitor_writes(inbox, "Hello, my parcel arrived broken")
        .await;
    let (url, calls) = action_endpoint().await;
    let mut ids = Vec::new();
    for (name, kind, field) in [
        ("issue_refund", "refund", "amount"),
        ("grant_discount", "discount", "percent"),
    ] {
        let created = app
            .send(Req::post("/api/v1/agent/actions").by(&owner).json(json!({
                "name": name, "description": format!("{kind} for an order"), "target_url": url,
                "secret": "action-secret", "kind": kind, "amount_field": field,
                "parameters": { "type": "object", "required": ["order_id", field], "additionalProperties": false,
                    "properties": { "order_id": { "type": "string" }, field: { "type": "number" } } }
            })))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        ids.push(created.uuid("/id"));
    }
    World {
        app,
        owner,
        admin,
        reviewer,
        second_reviewer,
        agent,
        conversation,
        refund: ids[0],
        discount: ids[1],
        calls,
    }
}

impl World {
    /// A member proposes an action for the customer; returns the review item.
    async fn propose(&self, by: &Member, action: Uuid, arguments: Value) -> Uuid {
        let resp = self
            .app
            .send(Req::post("/api/v1/reviews").by(by).json(json!({
                "kind": "action", "conversation_id": self.conversation, "action_id": action,
                "arguments": arguments, "note": "customer asked on the phone"
            })))
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
        assert_eq!(resp.body["status"], "pending");
        resp.uuid("/id")
    }

    async fn refund(&self, by: &Member, amount: f64) -> Uuid {
        self.propose(
            by,
            self.refund,
            json!({ "order_id": "A-1001", "amount": amount }),
        )
        .await
    }

    async fn approve(&self, by: &Member, item: Uuid, body: Value) -> Resp {
        self.app
            .send(
                Req::post(format!("/api/v1/reviews/{item}/approve"))
                    .by(by)
                    .json(body),
            )
            .await
    }

    async fn item(&self, item: Uuid) -> Value {
        let resp = self
            .app
            .send(Req::get(format!("/api/v1/reviews/{item}")).by(&self.owner))
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
        resp.body
    }

    async fn wait_for(&self, item: Uuid, status: &str) -> Value {
        eventually(30, "the review item's status", || async {
            let shown = self.item(item).await;
            (shown["status"] == status).then_some(shown)
        })
        .await
    }

    /// Waits for the first review item of `kind` in a conversation.
    async fn first_item(&self, kind: &str, conversation: Uuid) -> Value {
        eventually(30, "the review item", || async {
            let list = self
                .app
                .send(
                    Req::get(format!(
                        "/api/v1/reviews?kind={kind}&conversation_id={conversation}"
                    ))
                    .by(&self.reviewer),
                )
                .await;
            list.body["items"].as_array().unwrap().first().cloned()
        })
        .await
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Outbound messages to the customer (not notes) whose body contains `text`.
    async fn told(&self, text: &str) -> i64 {
        self.app
            .count(&format!(
                "SELECT count(*) FROM message WHERE conversation_id = '{}' AND direction = 'outbound'
                 AND NOT private AND body LIKE '%{}%'",
                self.conversation,
                text.replace('\'', "''")
            ))
            .await
    }
}

// proves: AGT-6
#[tokio::test]
async fn a_requester_who_tries_to_approve_their_own_item_is_refused() {
    let w = world().await;
    let item = w.refund(&w.reviewer, 20.0).await;
    let own = w.approve(&w.reviewer, item, json!({})).await;
    assert_eq!(own.status, StatusCode::FORBIDDEN, "{}", own.body);
    assert!(own.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("four eyes"));
    let unchanged = w.item(item).await;
    assert_eq!(unchanged["status"], "pending");
    assert_eq!(unchanged["approvals"], 0);

    let other = w.approve(&w.second_reviewer, item, json!({})).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    let done = w.wait_for(item, "executed").await;
    assert_eq!(done["decided_by"], w.second_reviewer.member_id.to_string());
    assert_eq!(done["result"]["status"], 200);
    let calls = w.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body["action"], "issue_refund");
    assert_eq!(calls[0].body["arguments"]["amount"], 20.0);
}

// proves: AGT-6
#[tokio::test]
async fn two_reviewers_approving_at_the_same_moment_execute_the_action_once() {
    let w = world().await;
    let item = w.refund(&w.agent, 35.0).await;
    let (a, b) = tokio::join!(
        w.approve(&w.reviewer, item, json!({ "note": "ok" })),
        w.approve(&w.second_reviewer, item, json!({ "note": "fine" })),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{} / {}",
        a.body,
        b.body
    );
    let loser = if a.status == StatusCode::CONFLICT {
        &a
    } else {
        &b
    };
    assert_eq!(loser.error_code(), "already_decided");
    w.wait_for(item, "executed").await;
    // Give a duplicate execution every chance to show itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = w.calls();
    assert_eq!(calls.len(), 1, "the action ran {} times", calls.len());
    let mut conn = w.app.superuser().await;
    let key: String = sqlx::query_scalar("SELECT idempotency_key FROM review_item WHERE id = $1")
        .bind(item)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(calls[0].idempotency_key, key);
    assert_eq!(calls[0].body["idempotency_key"], key);
    for action in ["review.approved", "review.executed"] {
        assert_eq!(
            w.app
                .count(&format!(
                    "SELECT count(*) FROM audit_event WHERE action = '{action}' AND entity_id = '{item}'"
                ))
                .await,
            1,
            "{action}"
        );
    }
    assert_eq!(w.told("approved your request").await, 1);
}

// proves: AGT-6
#[tokio::test]
async fn approval_policies_demand_an_admin_above_a_threshold_and_two_approvals_for_large_discounts()
{
    let w = world().await;
    let policy = w
        .app
        .send(
            Req::new(Method::PUT, "/api/v1/reviews/policy")
                .by(&w.owner)
                .json(json!({ "rules": [
                    { "kind": "refund", "above": 50, "role": "admin" },
                    { "kind": "discount", "above": 15, "approvals": 2 }
                ] })),
        )
        .await;
    assert_eq!(policy.status, StatusCode::OK, "{}", policy.body);

    let small = w.refund(&w.agent, 20.0).await;
    assert_eq!(w.item(small).await["required_role"], "reviewer");
    assert_eq!(
        w.approve(&w.reviewer, small, json!({})).await.status,
        StatusCode::OK
    );

    let large = w.refund(&w.agent, 80.0).await;
    assert_eq!(w.item(large).await["required_role"], "admin");
    let refused = w.approve(&w.reviewer, large, json!({})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("admin"));
    assert_eq!(w.item(large).await["approvals"], 0);
    assert_eq!(
        w.approve(&w.admin, large, json!({})).await.status,
        StatusCode::OK
    );

    // Editing a small refund into a large one raises what the item needs.
    let edited = w.refund(&w.agent, 10.0).await;
    let raised = w
        .approve(
            &w.reviewer,
            edited,
            json!({ "edit": { "arguments": { "order_id": "A-1001", "amount": 500 } } }),
        )
        .await;
    assert_eq!(raised.status, StatusCode::FORBIDDEN, "{}", raised.body);
    assert_eq!(w.item(edited).await["approvals"], 0);

    let discount = w
        .propose(
            &w.agent,
            w.discount,
            json!({ "order_id": "A-1001", "percent": 20 }),
        )
        .await;
    assert_eq!(w.item(discount).await["approvals_required"], 2);
    let first = w.approve(&w.reviewer, discount, json!({})).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body["status"], "pending");
    assert_eq!(first.body["approvals"], 1);
    let again = w.approve(&w.reviewer, discount, json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "already_approved");
    let second = w.approve(&w.second_reviewer, discount, json!({})).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);

    for item in [small, large, discount] {
        w.wait_for(item, "executed").await;
    }
    let calls = w.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.body["action"] == "grant_discount")
            .count(),
        1
    );
    assert_eq!(w.item(edited).await["status"], "pending");
}

// proves: AGT-6
#[tokio::test]
async fn an_edited_action_executes_with_the_reviewers_arguments() {
    let w = world().await;
    let item = w.refund(&w.agent, 45.0).await;
    let approved = w
        .approve(
            &w.reviewer,
            item,
            json!({ "edit": { "arguments": { "order_id": "A-1001", "amount": 30 } }, "note": "partial refund" }),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    let done = w.wait_for(item, "executed").await;
    assert_eq!(done["proposal"]["arguments"]["amount"], 45.0);
    assert_eq!(done["approved_proposal"]["arguments"]["amount"], 30);
    assert_eq!(done["approvals_given"][0]["note"], "partial refund");
    assert_eq!(w.calls()[0].body["arguments"]["amount"], 30);
}

// proves: AGT-6
#[tokio::test]
async fn a_rejection_needs_a_reason_is_final_and_the_customer_is_told() {
    let w = world().await;
    let item = w.refund(&w.agent, 25.0).await;
    for body in [json!({ "reason": "   " }), json!({})] {
        let refused = w
            .app
            .send(
                Req::post(format!("/api/v1/reviews/{item}/reject"))
                    .by(&w.reviewer)
                    .json(body),
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    }
    assert_eq!(w.item(item).await["status"], "pending");

    let rejected = w
        .app
        .send(
            Req::post(format!("/api/v1/reviews/{item}/reject"))
                .by(&w.reviewer)
                .json(json!({ "reason": "order was already refunded in the shop" })),
        )
        .await;
    assert_eq!(rejected.status, StatusCode::OK, "{}", rejected.body);
    assert_eq!(rejected.body["status"], "rejected");
    assert_eq!(
        rejected.body["decision_reason"],
        "order was already refunded in the shop"
    );
    let late = w.approve(&w.second_reviewer, item, json!({})).await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    assert_eq!(late.error_code(), "already_decided");
    assert_eq!(w.told("could not approve it").await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.calls().is_empty(), "a rejected action ran");
    let audit = w
        .app
        .audit_events(w.owner.tenant_id, "review.rejected")
        .await;
    assert_eq!(audit.len(), 1);
    assert_eq!(
        audit[0]["after"]["reason"],
        "order was already refunded in the shop"
    );
}

// proves: AGT-6
#[tokio::test]
async fn an_expired_item_is_rejected_and_the_customer_is_told() {
    let w = world().await;
    let policy = w
        .app
        .send(
            Req::new(Method::PUT, "/api/v1/reviews/policy")
                .by(&w.owner)
                .json(json!({ "expiry_minutes": 60, "expiry_message": "Sorry, we could not confirm your refund in time." })),
        )
        .await;
    assert_eq!(policy.status, StatusCode::OK, "{}", policy.body);
    let item = w.refund(&w.agent, 25.0).await;
    let shown = w.item(item).await;
    assert!(shown["expires_at"].is_string());
    let mut conn = w.app.superuser().await;
    sqlx::query("UPDATE review_item SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(item)
        .execute(&mut conn)
        .await
        .unwrap();
    // Fail closed: whether or not the sweep got there first, the approval is refused.
    let late = w.approve(&w.reviewer, item, json!({})).await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.body);

    let expired = w.wait_for(item, "rejected").await;
    assert_eq!(expired["expired"], true);
    assert_eq!(expired["decision_reason"], "expired");
    assert_eq!(w.told("could not confirm your refund in time").await, 1);
    assert_eq!(
        w.app
            .audit_events(w.owner.tenant_id, "review.expired")
            .await
            .len(),
        1
    );
    assert!(w.calls().is_empty(), "an expired action ran");
}

// proves: AGT-7
#[tokio::test]
async fn a_customer_asking_for_a_person_to_review_a_decision_lands_in_the_queue_in_four_languages()
{
    let w = world().await;
    let inbox: Uuid = {
        let mut conn = w.app.superuser().await;
        sqlx::query_scalar("SELECT inbox_id FROM conversation WHERE id = $1")
            .bind(w.conversation)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    for text in [
        "That is wrong, I want a human to review this decision.",
        "Isso está errado, quero que uma pessoa revise essa decisão.",
        "Esto no es justo, quiero que una persona revise esta decisión.",
        "Das ist falsch, ich möchte eine menschliche Überprüfung.",
    ] {
        let (_, conversation) = w.app.visitor_writes(inbox, text).await;
        let item = w.first_item("human_review", conversation).await;
        assert_eq!(item["requested_by"], "customer", "{text}");
        assert_eq!(item["request_note"], text);
        assert_eq!(item["status"], "pending");
        let shown = w
            .app
            .send(Req::get(format!("/api/v1/conversations/{conversation}")).by(&w.owner))
            .await;
        assert_eq!(shown.body["conversation"]["handler"], "human", "{text}");
    }
    // Asking to review an order is not asking to review a decision.
    let (_, plain) = w
        .app
        .visitor_writes(inbox, "Please review my order, it has two items.")
        .await;
    eventually(30, "the plain message's run", || async {
        (w.app
            .count(&format!(
                "SELECT count(*) FROM agent_execution WHERE conversation_id = '{plain}' AND outcome <> 'running'"
            ))
            .await
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(
        w.app
            .count(&format!(
                "SELECT count(*) FROM review_item WHERE conversation_id = '{plain}' AND kind = 'human_review'"
            ))
            .await,
        0
    );
}

// proves: AGT-7
#[tokio::test]
async fn a_member_can_ask_for_human_review_on_a_customers_behalf() {
    let w = world().await;
    // The visitor's message started a run of its own; it must be over before the two runs
    // below are placed after it.
    w.app
        .settled(
            &format!(
                "SELECT count(*) FROM agent_execution
                 WHERE conversation_id = '{}' AND outcome <> 'running'",
                w.conversation
            ),
            1,
        )
        .await;
    // The decision under review is the latest run that decided something: a run cut short
    // and abandoned after it decided nothing.
    let mut conn = w.app.superuser().await;
    let (decided, abandoned): (Uuid, Uuid) = (Uuid::new_v4(), Uuid::new_v4());
    for (id, outcome, secs_ago) in [(decided, "replied", -1), (abandoned, "abandoned", -2)] {
        sqlx::query(
            "INSERT INTO agent_execution (id, tenant_id, conversation_id, contact_id, provider, model,
                                          offline, outcome, started_at)
             SELECT $1, tenant_id, id, contact_id, 'offline', 'offline', true, $3,
                    now() - make_interval(secs => $4)
             FROM conversation WHERE id = $2",
        )
        .bind(id)
        .bind(w.conversation)
        .bind(outcome)
        .bind(secs_ago as f64)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let opened = w
        .app
        .send(Req::post("/api/v1/reviews").by(&w.agent).json(json!({
            "kind": "human_review", "conversation_id": w.conversation,
            "note": "The customer says the bot refused a valid warranty claim"
        })))
        .await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    assert_eq!(opened.body["requested_by"], "member");
    assert_eq!(
        opened.body["requested_by_member"],
        w.agent.member_id.to_string()
    );
    let item = opened.uuid("/id");
    let shown = w.item(item).await;
    assert!(
        !shown["context"].as_array().unwrap().is_empty(),
        "the item shows the conversation"
    );
    assert_eq!(shown["execution_id"], decided.to_string(), "{shown}");
    // An agent may ask but not decide; a note is required.
    assert_eq!(
        w.approve(&w.agent, item, json!({})).await.status,
        StatusCode::FORBIDDEN
    );
    let silent = w
        .app
        .send(Req::post("/api/v1/reviews").by(&w.agent).json(json!({
            "kind": "human_review", "conversation_id": w.conversation
        })))
        .await;
    assert_eq!(silent.status, StatusCode::BAD_REQUEST);
    assert_eq!(silent.error_code(), "note_required");
    // A human review takes no action's fields, and an unknown kind is refused.
    for body in [
        json!({ "kind": "human_review", "conversation_id": w.conversation, "note": "why",
                "action_id": Uuid::now_v7() }),
        json!({ "kind": "refund", "conversation_id": w.conversation, "note": "why" }),
    ] {
        let refused = w
            .app
            .send(Req::post("/api/v1/reviews").by(&w.agent).json(body.clone()))
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(refused.error_code(), "invalid_body", "{body}");
    }
    // Another tenant's conversation is not found.
    let other = w.app.signup("globex").await;
    let foreign = w
        .app
        .send(Req::post("/api/v1/reviews").by(&other).json(json!({
            "kind": "human_review", "conversation_id": w.conversation, "note": "hijack"
        })))
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    assert_eq!(
        w.app.count("SELECT count(*) FROM review_item").await,
        1,
        "a refused request opened an item"
    );
}

#[tokio::test]
async fn reviewers_follow_the_queue_live_with_counts_and_sla_breaches() {
    let w = world().await;
    let (status, _, mut stream) = w
        .app
        .open_stream(Req::get("/api/v1/events").by(&w.reviewer))
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let item = w.refund(&w.agent, 12.0).await;
    loop {
        let event = stream.next_event("review.updated", 10).await;
        if event["data"]["review_id"] == item.to_string() {
            assert_eq!(event["data"]["status"], "pending");
            break;
        }
    }
    let second = w.refund(&w.agent, 13.0).await;
    let mut conn = w.app.superuser().await;
    sqlx::query("UPDATE review_item SET due_at = now() - interval '1 minute' WHERE id = $1")
        .bind(second)
        .execute(&mut conn)
        .await
        .unwrap();
    let counts = w
        .app
        .send(Req::get("/api/v1/reviews/counts").by(&w.reviewer))
        .await;
    assert_eq!(counts.status, StatusCode::OK);
    assert_eq!(counts.body["by_status"]["pending"], 2);
    assert_eq!(counts.body["pending_by_kind"]["action"], 2);
    assert_eq!(counts.body["sla_breached"], 1);
    let breached = w
        .app
        .send(Req::get("/api/v1/reviews?sla_breached=true").by(&w.reviewer))
        .await;
    let items = breached.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], second.to_string());
    assert_eq!(items[0]["sla_breached"], true);

    // Reassigning: to a reviewer yes, to someone who cannot decide no.
    let assigned = w
        .app
        .send(
            Req::post(format!("/api/v1/reviews/{item}/assign"))
                .by(&w.reviewer)
                .json(json!({ "assignee_id": w.second_reviewer.member_id })),
        )
        .await;
    assert_eq!(assigned.status, StatusCode::OK, "{}", assigned.body);
    assert_eq!(
        assigned.body["assignee_id"],
        w.second_reviewer.member_id.to_string()
    );
    let to_agent = w
        .app
        .send(
            Req::post(format!("/api/v1/reviews/{item}/assign"))
                .by(&w.reviewer)
                .json(json!({ "assignee_id": w.agent.member_id })),
        )
        .await;
    assert_eq!(to_agent.status, StatusCode::CONFLICT);
    assert_eq!(to_agent.error_code(), "invalid_assignee");
    let mine = w
        .app
        .send(
            Req::get(format!(
                "/api/v1/reviews?assignee_id={}",
                w.second_reviewer.member_id
            ))
            .by(&w.reviewer),
        )
        .await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_queue_filters_refuse_an_unknown_status_or_kind_and_speak_the_stored_names() {
    let w = world().await;
    let item = w.refund(&w.agent, 12.0).await;

    let status = w
        .app
        .send(Req::get("/api/v1/reviews?status=expired").by(&w.reviewer))
        .await;
    assert_eq!(status.status, StatusCode::BAD_REQUEST);
    assert_eq!(status.error_code(), "invalid_status");
    assert_eq!(
        status.body["error"]["message"],
        "status must be one of pending, approved, executing, executed, failed, rejected, resolved"
    );
    let kind = w
        .app
        .send(Req::get("/api/v1/reviews?kind=Action").by(&w.reviewer))
        .await;
    assert_eq!(kind.status, StatusCode::BAD_REQUEST);
    assert_eq!(kind.error_code(), "invalid_kind");
    assert_eq!(
        kind.body["error"]["message"],
        "kind must be one of action, low_confidence, guardrail_flag, human_review"
    );

    let found = w
        .app
        .send(Req::get("/api/v1/reviews?status=pending&kind=action").by(&w.reviewer))
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    let items = found.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], item.to_string());
    assert_eq!(items[0]["kind"], "action");
    assert_eq!(items[0]["status"], "pending");
    assert_eq!(items[0]["requested_by"], "member");
    assert_eq!(items[0]["required_role"], "reviewer");
    let none = w
        .app
        .send(Req::get("/api/v1/reviews?kind=low_confidence").by(&w.reviewer))
        .await;
    assert_eq!(none.body["items"], json!([]));

    // Every status and kind is counted, at zero when nothing has it.
    let counts = w
        .app
        .send(Req::get("/api/v1/reviews/counts").by(&w.reviewer))
        .await;
    assert_eq!(
        counts.body,
        json!({
            "by_status": { "pending": 1, "approved": 0, "executing": 0, "executed": 0,
                           "failed": 0, "rejected": 0, "resolved": 0 },
            "pending_by_kind": { "action": 1, "low_confidence": 0, "guardrail_flag": 0,
                                 "human_review": 0 },
            "sla_breached": 0,
        })
    );
}

#[tokio::test]
async fn an_approval_policy_that_makes_no_sense_is_refused_and_changes_are_audited() {
    let w = world().await;
    for bad in [
        json!({ "rules": [{ "kind": "refund" }] }),
        json!({ "rules": [{ "kind": "gift", "role": "admin" }] }),
        json!({ "rules": [{ "approvals": 7 }] }),
        json!({ "expiry_minutes": 0 }),
        json!({ "unknown": true }),
    ] {
        let resp = w
            .app
            .send(
                Req::new(Method::PUT, "/api/v1/reviews/policy")
                    .by(&w.owner)
                    .json(bad.clone()),
            )
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(resp.error_code(), "invalid_policy");
    }
    let good =
        json!({ "sla_minutes": 30, "rules": [{ "action": "issue_refund", "approvals": 2 }] });
    let reviewer_try = w
        .app
        .send(
            Req::new(Method::PUT, "/api/v1/reviews/policy")
                .by(&w.reviewer)
                .json(good.clone()),
        )
        .await;
    assert_eq!(reviewer_try.status, StatusCode::FORBIDDEN);
    let changed = w
        .app
        .send(
            Req::new(Method::PUT, "/api/v1/reviews/policy")
                .by(&w.admin)
                .json(good.clone()),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let audit = w
        .app
        .audit_events(w.owner.tenant_id, "review_policy.updated")
        .await;
    assert_eq!(audit.len(), 1, "only the accepted change is recorded");
    assert_eq!(audit[0]["after"]["sla_minutes"], 30);
    // The next item follows the new policy at once.
    let item = w.refund(&w.agent, 5.0).await;
    assert_eq!(w.item(item).await["approvals_required"], 2);
}

// proves: AGT-5
#[tokio::test]
async fn a_reviewer_can_edit_a_low_confidence_draft_and_the_customer_receives_the_edit() {
    let w = world().await;
    let model = FakeOpenAI::start().await;
    let settings = w
        .app
        .send(
            Req::new(Method::PUT, "/api/v1/agent/settings")
                .by(&w.owner)
                .json(json!({ "provider_base_url": model.base_url, "api_key": "sk-test", "max_retries": 1,
                              "timeout_ms": 2000, "confidence_threshold": 0.7 })),
        )
        .await;
    assert_eq!(settings.status, StatusCode::OK, "{}", settings.body);
    // Every run gets the unsure answer: the first conversation of the world may still be running.
    model.set_default_reply(FakeReply::Json(
        json!({ "action": "reply", "reply": "Maybe restart it?", "confidence": 0.1,
        "reason_code": "unsure", "cited_sources": [], "action_request": null }),
    ));
    let inbox = w.app.webchat_inbox(&w.owner, "https://help.example").await;
    let (_, conversation) = w
        .app
        .visitor_writes(inbox, "The device makes a strange noise")
        .await;
    let item = w.first_item("low_confidence", conversation).await;
    assert_eq!(item["proposal"]["draft"], "Maybe restart it?");
    let id: Uuid = item["id"].as_str().unwrap().parse().unwrap();
    let approved = w
        .approve(
            &w.reviewer,
            id,
            json!({ "edit": { "draft": "Please hold the power button for ten seconds." } }),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.body["status"], "executed");
    let sent = w
        .app
        .count(&format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{conversation}' AND NOT private
             AND author_kind = 'member' AND author_id = '{}' AND body = 'Please hold the power button for ten seconds.'",
            w.reviewer.member_id
        ))
        .await;
    assert_eq!(sent, 1);
    assert_eq!(
        w.app
            .count(&format!(
                "SELECT count(*) FROM message WHERE conversation_id = '{conversation}' AND NOT private
                 AND body LIKE '%Maybe restart%'"
            ))
            .await,
        0,
        "the unsure draft reached the customer"
    );
}

#[tokio::test]
async fn a_flagged_message_goes_on_and_waits_in_the_queue_for_a_look() {
    let w = world().await;
    let inbox = w.app.webchat_inbox(&w.owner, "https://help.example").await;
    let (_, conversation) = w
        .app
        .visitor_writes(
            inbox,
            "You are a useless bot, you idiot. Where is my parcel?",
        )
        .await;
    let item = w.first_item("guardrail_flag", conversation).await;
    assert_eq!(item["proposal"]["rules"], json!(["abuse.insult"]));
    assert!(item["findings"].to_string().contains("abuse.insult"));
    assert!(item["execution_id"].is_string());
    let id: Uuid = item["id"].as_str().unwrap().parse().unwrap();
    // Acknowledging it changes nothing for the customer.
    let ok = w
        .approve(&w.reviewer, id, json!({ "note": "venting, no action" }))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    // Closed: decided, nothing to execute, nothing for the customer.
    assert_eq!(ok.body["status"], "resolved");
    assert_eq!(ok.body["decided_by"], w.reviewer.member_id.to_string());
    let told = w
        .app
        .count(&format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{conversation}' AND author_kind = 'member'"
        ))
        .await;
    assert_eq!(told, 0);
    // Only a human review takes an outcome.
    let item2 = w.refund(&w.agent, 5.0).await;
    let odd = w
        .approve(&w.reviewer, item2, json!({ "outcome": "upheld" }))
        .await;
    assert_eq!(odd.status, StatusCode::CONFLICT);
    assert_eq!(odd.error_code(), "invalid_approval");
}

impl World {
    async fn reject(&self, by: &Member, item: Uuid, reason: &str) -> Resp {
        self.app
            .send(
                Req::post(format!("/api/v1/reviews/{item}/reject"))
                    .by(by)
                    .json(json!({ "reason": reason })),
            )
            .await
    }

    async fn put_policy(&self, policy: Value) {
        let resp = self
            .app
            .send(
                Req::new(Method::PUT, "/api/v1/reviews/policy")
                    .by(&self.owner)
                    .json(policy),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    }

    async fn set_language(&self, conversation: Uuid, code: &str) {
        let mut conn = self.app.superuser().await;
        sqlx::query("UPDATE conversation SET language = $2 WHERE id = $1")
            .bind(conversation)
            .bind(code)
            .execute(&mut conn)
            .await
            .unwrap();
    }

    /// A member asks for human review of the world's conversation; returns the item.
    async fn human_review(&self) -> Uuid {
        let opened = self
            .app
            .send(Req::post("/api/v1/reviews").by(&self.agent).json(json!({
                "kind": "human_review", "conversation_id": self.conversation,
                "note": "The customer contests the refusal"
            })))
            .await;
        assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
        opened.uuid("/id")
    }
}

// proves: AGT-6
#[tokio::test]
async fn a_rejection_tells_the_customer_in_their_language_with_the_tenants_wording() {
    let w = world().await;
    w.put_policy(json!({ "rejection_message": {
        "en": "Sorry, we could not do that.", "pt": "Desculpe, não foi possível."
    } }))
    .await;
    w.set_language(w.conversation, "pt").await;
    let item = w.refund(&w.agent, 25.0).await;
    assert_eq!(
        w.reject(&w.reviewer, item, "no receipt").await.status,
        StatusCode::OK
    );
    assert_eq!(w.told("Desculpe, não foi possível.").await, 1);
    // A language the tenant did not word falls back to its English text.
    w.set_language(w.conversation, "es").await;
    let item = w.refund(&w.agent, 26.0).await;
    assert_eq!(
        w.reject(&w.reviewer, item, "no receipt").await.status,
        StatusCode::OK
    );
    assert_eq!(w.told("Sorry, we could not do that.").await, 1);
    // One string is every language's wording.
    w.put_policy(json!({ "rejection_message": "Nope, sorry." }))
        .await;
    w.set_language(w.conversation, "de").await;
    let item = w.refund(&w.agent, 27.0).await;
    w.reject(&w.reviewer, item, "no receipt").await;
    assert_eq!(w.told("Nope, sorry.").await, 1);
    // A wording in a language we do not speak is refused.
    let bad = w
        .app
        .send(
            Req::new(Method::PUT, "/api/v1/reviews/policy")
                .by(&w.owner)
                .json(json!({ "rejection_message": { "fr": "Non." } })),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_code(), "invalid_policy");
}

#[tokio::test]
async fn rejecting_an_item_needs_the_role_its_approval_needs() {
    let w = world().await;
    w.put_policy(json!({ "rules": [{ "kind": "refund", "above": 50, "role": "admin" }] }))
        .await;
    let large = w.refund(&w.agent, 80.0).await;
    let refused = w.reject(&w.reviewer, large, "too much").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.error_code() == "forbidden");
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("admin"));
    assert_eq!(w.item(large).await["status"], "pending");
    assert_eq!(w.told("could not approve it").await, 0);
    assert_eq!(
        w.reject(&w.admin, large, "too much").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_item_cannot_be_assigned_to_a_member_who_could_not_decide_it() {
    let w = world().await;
    w.put_policy(json!({ "rules": [{ "kind": "refund", "above": 50, "role": "admin" }] }))
        .await;
    let large = w.refund(&w.agent, 80.0).await;
    let to_reviewer = w
        .app
        .send(
            Req::post(format!("/api/v1/reviews/{large}/assign"))
                .by(&w.admin)
                .json(json!({ "assignee_id": w.reviewer.member_id })),
        )
        .await;
    assert_eq!(to_reviewer.status, StatusCode::CONFLICT);
    assert_eq!(to_reviewer.error_code(), "assignee_cannot_decide");
    assert!(w.item(large).await["assignee_id"].is_null());
    let to_admin = w
        .app
        .send(
            Req::post(format!("/api/v1/reviews/{large}/assign"))
                .by(&w.reviewer)
                .json(json!({ "assignee_id": w.admin.member_id })),
        )
        .await;
    assert_eq!(to_admin.status, StatusCode::OK, "{}", to_admin.body);
    assert_eq!(to_admin.body["assignee_id"], w.admin.member_id.to_string());
}

// proves: AGT-7
#[tokio::test]
async fn a_human_review_is_resolved_with_an_outcome_and_the_customer_hears_it_in_their_language() {
    let w = world().await;
    w.put_policy(json!({ "upheld_message": { "pt": "Revisamos: a decisão foi mantida." } }))
        .await;
    w.set_language(w.conversation, "pt").await;
    let item = w.human_review().await;
    // Resolving needs an outcome; a human review is not edited.
    let bare = w.approve(&w.reviewer, item, json!({})).await;
    // The item's kind decides what its approval says: a conflict with the item, not a
    // malformed body.
    assert_eq!(bare.status, StatusCode::CONFLICT);
    assert_eq!(bare.error_code(), "outcome_required");
    let edited = w
        .approve(
            &w.reviewer,
            item,
            json!({ "outcome": "upheld", "edit": { "draft": "hi" } }),
        )
        .await;
    assert_eq!(edited.status, StatusCode::CONFLICT);
    assert_eq!(edited.error_code(), "invalid_edit");
    let upheld = w
        .approve(&w.reviewer, item, json!({ "outcome": "upheld" }))
        .await;
    assert_eq!(upheld.status, StatusCode::OK, "{}", upheld.body);
    assert_eq!(upheld.body["status"], "resolved");
    assert_eq!(upheld.body["result"]["outcome"], "upheld");
    assert_eq!(upheld.body["result"]["wording"], "template");
    assert_eq!(w.told("Revisamos: a decisão foi mantida.").await, 1);
    let audit = w
        .app
        .audit_events(w.owner.tenant_id, "review.approved")
        .await;
    assert_eq!(audit[0]["after"]["outcome"], "upheld");
    assert_eq!(audit[0]["after"]["status"], "resolved");
    assert!(audit[0]["after"]["customer_message_id"].is_string());

    // The reviewer's own words reach the customer as they wrote them.
    let second = w.human_review().await;
    let changed = w
        .approve(
            &w.reviewer,
            second,
            json!({ "outcome": "changed", "message": "Você tem razão: o reembolso foi liberado." }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["result"]["outcome"], "changed");
    assert_eq!(w.told("Você tem razão: o reembolso foi liberado.").await, 1);
    let sent_by = w
        .app
        .count(&format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{}' AND author_id = '{}'
             AND body LIKE 'Você tem razão%'",
            w.conversation, w.reviewer.member_id
        ))
        .await;
    assert_eq!(sent_by, 1, "the reviewer signs the message");
    // Resolved is final.
    let again = w.reject(&w.admin, second, "changed my mind").await;
    assert_eq!(again.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn an_expired_low_confidence_draft_is_rejected_without_telling_the_customer() {
    let w = world().await;
    let model = FakeOpenAI::start().await;
    let settings = w
        .app
        .send(
            Req::new(Method::PUT, "/api/v1/agent/settings")
                .by(&w.owner)
                .json(json!({ "provider_base_url": model.base_url, "api_key": "sk-test", "max_retries": 1,
                              "timeout_ms": 2000, "confidence_threshold": 0.7 })),
        )
        .await;
    assert_eq!(settings.status, StatusCode::OK, "{}", settings.body);
    model.set_default_reply(FakeReply::Json(
        json!({ "action": "reply", "reply": "Maybe restart it?", "confidence": 0.1,
        "reason_code": "unsure", "cited_sources": [], "action_request": null }),
    ));
    let inbox = w.app.webchat_inbox(&w.owner, "https://help.example").await;
    let (_, conversation) = w
        .app
        .visitor_writes(inbox, "The device makes a strange noise")
        .await;
    let item = w.first_item("low_confidence", conversation).await;
    let id: Uuid = item["id"].as_str().unwrap().parse().unwrap();
    let outbound_before = w
        .app
        .count(&format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{conversation}' AND NOT private"
        ))
        .await;
    let mut conn = w.app.superuser().await;
    sqlx::query("UPDATE review_item SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(&mut conn)
        .await
        .unwrap();
    let expired = w.wait_for(id, "rejected").await;
    assert_eq!(expired["expired"], true);
    assert_eq!(expired["decision_reason"], "expired");
    // The conversation is with a person already; the customer was promised nothing about the
    // draft, so nothing is sent: not the draft, not a rejection.
    assert_eq!(
        w.app
            .count(&format!(
                "SELECT count(*) FROM message WHERE conversation_id = '{conversation}' AND NOT private"
            ))
            .await,
        outbound_before
    );
    let events = w
        .app
        .audit_events(w.owner.tenant_id, "review.expired")
        .await;
    assert_eq!(events.len(), 1);
    assert!(events[0]["after"]["customer_message_id"].is_null());
    let shown = w
        .app
        .send(Req::get(format!("/api/v1/conversations/{conversation}")).by(&w.owner))
        .await;
    assert_eq!(shown.body["conversation"]["handler"], "human");
}

// proves: AGT-5
#[tokio::test]
async fn a_low_confidence_draft_approved_unedited_reaches_the_customer_and_the_item_shows_its_run()
{
    let w = world().await;
    let model = FakeOpenAI::start().await;
    let settings = w
        .app
        .send(
            Req::new(Method::PUT, "/api/v1/agent/settings")
                .by(&w.owner)
                .json(json!({ "provider_base_url": model.base_url, "api_key": "sk-test", "max_retries": 1,
                              "timeout_ms": 2000, "confidence_threshold": 0.7 })),
        )
        .await;
    assert_eq!(settings.status, StatusCode::OK, "{}", settings.body);
    model.set_default_reply(FakeReply::Json(
        json!({ "action": "reply", "reply": "Maybe restart it?", "confidence": 0.1,
        "reason_code": "unsure", "cited_sources": [], "action_request": null }),
    ));
    let inbox = w.app.webchat_inbox(&w.owner, "https://help.example").await;
    let (_, conversation) = w
        .app
        .visitor_writes(inbox, "The device makes a strange noise")
        .await;
    let item = w.first_item("low_confidence", conversation).await;
    let id: Uuid = item["id"].as_str().unwrap().parse().unwrap();
    let shown = w.item(id).await;
    let confidence = shown["confidence"]
        .as_f64()
        .expect("the item shows its confidence");
    assert!(confidence < 0.7, "{shown}");
    assert_eq!(shown["execution"]["id"], shown["execution_id"]);
    assert_eq!(shown["execution"]["outcome"], "handed_off");
    assert_eq!(shown["execution"]["reason"], "low_confidence");
    assert!(shown["execution"]["confidence"].as_f64().is_some());

    let approved = w.approve(&w.reviewer, id, json!({})).await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.body["status"], "executed");
    let sent = w
        .app
        .count(&format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{conversation}' AND NOT private
             AND author_kind = 'member' AND author_id = '{}' AND body = 'Maybe restart it?'",
            w.reviewer.member_id
        ))
        .await;
    assert_eq!(sent, 1);
}

// proves: AGT-6
#[tokio::test]
async fn two_approvals_at_the_same_moment_on_an_item_that_needs_two_execute_it_once() {
    let w = world().await;
    w.put_policy(json!({ "rules": [{ "kind": "discount", "above": 15, "approvals": 2 }] }))
        .await;
    let item = w
        .propose(
            &w.agent,
            w.discount,
            json!({ "order_id": "A-1001", "percent": 20 }),
        )
        .await;
    let (a, b) = tokio::join!(
        w.approve(&w.reviewer, item, json!({})),
        w.approve(&w.second_reviewer, item, json!({})),
    );
    // Serialised on the item: one records the first approval, the other completes it.
    assert_eq!(
        (a.status, b.status),
        (StatusCode::OK, StatusCode::OK),
        "{} / {}",
        a.body,
        b.body
    );
    let mut seen = [a.body["approvals"].as_i64(), b.body["approvals"].as_i64()];
    seen.sort();
    assert_eq!(seen, [Some(1), Some(2)]);
    let done = w.wait_for(item, "executed").await;
    assert_eq!(done["approvals"], 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.calls().len(), 1);
    assert_eq!(
        w.app
            .audit_events(w.owner.tenant_id, "review.approved")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn decisions_reach_the_live_stream_not_only_new_items() {
    let w = world().await;
    let (status, _, mut stream) = w
        .app
        .open_stream(Req::get("/api/v1/events").by(&w.reviewer))
        .await;
    assert_eq!(status, StatusCode::OK);
    let approved = w.refund(&w.agent, 12.0).await;
    let rejected = w.refund(&w.agent, 13.0).await;
    assert_eq!(
        w.approve(&w.reviewer, approved, json!({})).await.status,
        StatusCode::OK
    );
    assert_eq!(
        w.reject(&w.reviewer, rejected, "duplicate").await.status,
        StatusCode::OK
    );
    let mut seen: Vec<(String, String)> = Vec::new();
    let wanted = [
        (approved.to_string(), "approved".to_string()),
        (approved.to_string(), "executed".to_string()),
        (rejected.to_string(), "rejected".to_string()),
    ];
    while !wanted.iter().all(|w| seen.contains(w)) {
        let event = stream.next_event("review.updated", 20).await;
        seen.push((
            event["data"]["review_id"].as_str().unwrap().to_string(),
            event["data"]["status"].as_str().unwrap().to_string(),
        ));
    }
}

#[tokio::test]
async fn a_decided_item_cannot_change_in_the_database_even_as_the_app_role() {
    let w = world().await;
    let item = w.refund(&w.agent, 25.0).await;
    assert_eq!(
        w.reject(&w.reviewer, item, "no receipt").await.status,
        StatusCode::OK
    );
    let app_role = w.app.admin.clone().username(custodian::db::APP_ROLE);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&app_role)
        .await
        .unwrap();
    for change in [
        "UPDATE review_item SET status = 'pending' WHERE id = $1",
        "UPDATE review_item SET status = 'approved', decision_reason = NULL WHERE id = $1",
        "UPDATE review_item SET decision_reason = 'never mind' WHERE id = $1",
        "UPDATE review_item SET decided_by = NULL WHERE id = $1",
        "UPDATE review_item SET proposal = '{\"action\": \"other\"}' WHERE id = $1",
        "UPDATE review_item SET expired = true WHERE id = $1",
    ] {
        let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(w.owner.tenant_id.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let err = sqlx::query(change)
            .bind(item)
            .execute(&mut *tx)
            .await
            .expect_err(change);
        let db = err.as_database_error().expect("a database error");
        assert_eq!(db.constraint(), Some("review_item_final"), "{change}: {db}");
        tx.rollback().await.unwrap();
    }
    // Nor may the app role delete a decision.
    let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(w.owner.tenant_id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let denied = sqlx::query("DELETE FROM review_item WHERE id = $1")
        .bind(item)
        .execute(&mut *tx)
        .await
        .expect_err("the app role deleted a decision");
    assert!(denied.to_string().contains("permission denied"), "{denied}");
    tx.rollback().await.unwrap();
    // Retention may blank its content, keeping the decision (as the owner does it).
    let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(w.owner.tenant_id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE review_item SET request_note = NULL, proposal = '{}', content_purged_at = now() WHERE id = $1",
    )
    .bind(item)
    .execute(&mut *tx)
    .await
    .expect("blanking content is allowed");
    tx.rollback().await.unwrap();
    let shown = w.item(item).await;
    assert_eq!(shown["status"], "rejected");
    assert_eq!(shown["decision_reason"], "no receipt");
}

// proves: AGT-7
#[tokio::test]
async fn a_customer_can_ask_for_review_on_a_conversation_people_handle_and_no_model_runs() {
    let w = world().await;
    let inbox = w.app.webchat_inbox(&w.owner, "https://help.example").await;
    // No knowledge: the offline responder hands the conversation to people.
    let (token, conversation) = w.app.visitor_writes(inbox, "Where is my parcel?").await;
    eventually(30, "the hand-off", || async {
        (w.app
            .count(&format!(
                "SELECT count(*) FROM conversation WHERE id = '{conversation}' AND handler = 'human'"
            ))
            .await
            == 1)
            .then_some(())
    })
    .await;
    let executions = |c: Uuid| {
        let app = &w.app;
        async move {
            app.count(&format!(
                "SELECT count(*) FROM agent_execution WHERE conversation_id = '{c}'"
            ))
            .await
        }
    };
    assert_eq!(executions(conversation).await, 1);
    let write = |text: &'static str| {
        let (app, token) = (&w.app, token.clone());
        async move {
            let sent = app
                .send(
                    Req::post(format!("/api/v1/webchat/{inbox}/messages"))
                        .header("x-webchat-session", token)
                        .json(json!({ "body": text })),
                )
                .await;
            assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.body);
            sent.uuid("/id")
        }
    };
    // A plain message on a conversation people handle queues nothing.
    let plain = write("Thanks, I will wait.").await;
    assert_eq!(
        w.app
            .count(&format!(
                "SELECT count(*) FROM job WHERE payload->>'message_id' = '{plain}'"
            ))
            .await,
        0
    );
    let text = "That is wrong, I want a human to review this decision.";
    write(text).await;
    let item = w.first_item("human_review", conversation).await;
    assert_eq!(item["requested_by"], "customer");
    assert_eq!(item["request_note"], text);
    assert_eq!(item["status"], "pending");
    // The decision under review is the agent's last one.
    let run: Uuid = {
        let mut conn = w.app.superuser().await;
        sqlx::query_scalar("SELECT id FROM agent_execution WHERE conversation_id = $1")
            .bind(conversation)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(item["execution_id"], run.to_string());
    // The customer hears that a person will look; no model ran.
    w.app
        .settled(
            &format!(
                "SELECT count(*) FROM message WHERE conversation_id = '{conversation}' AND NOT private
                 AND author_kind = 'system' AND body LIKE '%will review this decision%'"
            ),
            1,
        )
        .await;
    assert_eq!(executions(conversation).await, 1);
    assert_eq!(
        w.app
            .count(&format!(
                "SELECT count(*) FROM review_item WHERE conversation_id = '{conversation}'"
            ))
            .await,
        1
    );
}

// proves: AGT-7
#[tokio::test]
async fn a_configuration_stored_without_the_human_review_pack_still_hears_the_request() {
    let w = world().await;
    // Saved before the settings API refused it: only the legal pack.
    let mut conn = w.app.superuser().await;
    sqlx::query(
        "INSERT INTO agent_settings (tenant_id, guardrails) VALUES ($1, '{\"options\": {\"packs\": [\"legal_advice\"]}}')
         ON CONFLICT (tenant_id) DO UPDATE SET guardrails = EXCLUDED.guardrails,
             config_version = agent_settings.config_version + 1",
    )
    .bind(w.owner.tenant_id)
    .execute(&mut conn)
    .await
    .unwrap();
    let inbox = w.app.webchat_inbox(&w.owner, "https://help.example").await;
    let text = "I'd like to appeal this decision.";
    let (_, conversation) = w.app.visitor_writes(inbox, text).await;
    let item = w.first_item("human_review", conversation).await;
    assert_eq!(item["requested_by"], "customer");
    assert_eq!(item["request_note"], text);
    w.app
        .settled(
            &format!(
                "SELECT count(*) FROM message WHERE conversation_id = '{conversation}' AND NOT private
                 AND body LIKE '%will review this decision%'"
            ),
            1,
        )
        .await;
}

// proves: AGT-6
#[tokio::test]
async fn an_edit_withdraws_the_approvals_given_so_every_approver_approves_what_executes() {
    let w = world().await;
    let policy = w
        .app
        .send(
            Req::new(Method::PUT, "/api/v1/reviews/policy")
                .by(&w.owner)
                .json(json!({ "rules": [{ "kind": "discount", "above": 15, "approvals": 2 }] })),
        )
        .await;
    assert_eq!(policy.status, StatusCode::OK, "{}", policy.body);
    let item = w
        .propose(
            &w.agent,
            w.discount,
            json!({ "order_id": "A-1001", "percent": 20 }),
        )
        .await;
    let first = w.approve(&w.reviewer, item, json!({})).await;
    assert_eq!(first.body["approvals"], 1, "{}", first.body);

    // The second reviewer lowers the discount: the first approval was of 20 %, not of 18 %.
    let edited = w
        .approve(
            &w.second_reviewer,
            item,
            json!({ "edit": { "arguments": { "order_id": "A-1001", "percent": 18 } } }),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(edited.body["status"], "pending");
    assert_eq!(edited.body["approvals"], 1);
    let shown = w.item(item).await;
    let approvers: Vec<&Value> = shown["approvals_given"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["member_id"])
        .collect();
    assert_eq!(approvers, [&json!(w.second_reviewer.member_id)]);
    let recorded = w
        .app
        .audit_events(w.owner.tenant_id, "review.approval_recorded")
        .await;
    let edit = &recorded.last().unwrap()["after"]["edit"];
    assert_eq!(edit["before"]["arguments"]["percent"], 20);
    assert_eq!(edit["after"]["arguments"]["percent"], 18);
    assert_eq!(edit["approvals_withdrawn"], json!([w.reviewer.member_id]));
    assert!(w.calls().is_empty());

    // The first reviewer approves again, this time what will execute.
    let again = w.approve(&w.reviewer, item, json!({})).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    w.wait_for(item, "executed").await;
    let calls = w.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body["arguments"]["percent"], 18);

    // A decided item's approvals stay, whoever tries to withdraw them.
    let app_role = w.app.admin.clone().username(custodian::db::APP_ROLE);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&app_role)
        .await
        .unwrap();
    let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(w.owner.tenant_id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let withdrawn = sqlx::query("DELETE FROM review_approval WHERE review_item_id = $1")
        .bind(item)
        .execute(&mut *tx)
        .await;
    let err = withdrawn.expect_err("a decided item's approvals cannot be deleted");
    assert_eq!(
        err.as_database_error().and_then(|e| e.constraint()),
        Some("review_approval_withdrawn"),
        "{err}"
    );
}

// proves: AGT-6
#[tokio::test]
async fn edited_arguments_outside_the_actions_schema_are_refused_naming_the_field_and_change_nothing(
) {
    let w = world().await;
    let item = w.refund(&w.agent, 40.0).await;
    for (arguments, field) in [
        (json!({ "order_id": "A-1001", "amount": "lots" }), "amount"),
        (json!({ "order_id": "A-1001" }), "amount"),
        (
            json!({ "order_id": "A-1001", "amount": 10, "coupon": "X" }),
            "coupon",
        ),
    ] {
        let refused = w
            .approve(
                &w.reviewer,
                item,
                json!({ "edit": { "arguments": arguments } }),
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
        assert_eq!(refused.error_code(), "invalid_arguments");
        let message = refused.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{field}: {message}");
    }
    let shown = w.item(item).await;
    assert_eq!(shown["approvals"], 0);
    assert_eq!(shown["approved_proposal"], Value::Null);
    assert_eq!(shown["status"], "pending");
    assert!(w
        .app
        .audit_events(w.owner.tenant_id, "review.approved")
        .await
        .is_empty());
}
