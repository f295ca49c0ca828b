//! Runtime guardrail configuration (AGT-3): a tenant's change applies to the very next message
//! without a restart, and a dry-run shows what a proposal would have done to recent
//! conversations without changing anything.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{eventually, Member, Req, TestApp};

const SAFE_REPLY: &str = "Please talk to us before contacting your bank: we will sort it out.";

fn chargeback_config() -> Value {
    json!({
        "rules": [{
            "id": "acme.chargeback",
            "description": "chargeback threats get the retention wording",
            "stage": "inbound",
            "phrases": ["chargeback", "estorno no cartão", "Rückbuchung"],
            "action": "block",
            "safe_reply": "chargeback",
            "must_match": ["I will file a chargeback"],
            "must_not_match": ["I want to charge my phone"]
        }],
        "options": { "safe_replies": { "chargeback": SAFE_REPLY } }
    })
}

async fn settings(app: &TestApp, owner: &Member) -> Value {
    let resp = app.send(Req::get("/api/v1/agent/settings").by(owner)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    resp.body
}

async fn finished_run(app: &TestApp, conversation: Uuid) -> Value {
    eventually(30, "the agent run to finish", || async {
        let mut conn = app.superuser().await;
        sqlx::query_scalar::<_, Value>(
            "SELECT to_jsonb(e) FROM agent_execution e WHERE conversation_id = $1 AND outcome <> 'running'",
        )
        .bind(conversation)
        .fetch_optional(&mut conn)
        .await
        .unwrap()
    })
    .await
}

// proves: AGT-3, AGT-4
#[tokio::test]
async fn a_guardrail_change_applies_to_the_next_message_without_a_restart() {
    let app = TestApp::spawn().await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let text = "If this is not fixed today I will file a chargeback with my bank";

    let (_, before) = app.visitor_writes(inbox, text).await;
    let run = finished_run(&app, before).await;
    assert_ne!(run["outcome"], "blocked", "{run}");

    let changed = app
        .send(
            Req::new(Method::PUT, "/api/v1/agent/settings")
                .by(&owner)
                .json(json!({ "guardrails": chargeback_config() })),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);

    // Same process, same caches: the next customer's identical message meets the new rule.
    let (_, after) = app.visitor_writes(inbox, text).await;
    let run = finished_run(&app, after).await;
    assert_eq!(run["outcome"], "blocked", "{run}");
    assert_eq!(run["record"]["reason"], "acme.chargeback");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{after}' AND direction = 'outbound'
             AND NOT private AND body = '{SAFE_REPLY}'"
        ))
        .await,
        1,
        "the customer did not get the tenant's safe reply"
    );
    let audit = app
        .audit_events(owner.tenant_id, "agent.settings_changed")
        .await;
    assert_eq!(audit.len(), 1, "the change was not audited");
}

// proves: AGT-3
#[tokio::test]
async fn a_dry_run_shows_what_a_proposed_configuration_would_have_done_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let other = app.signup("globex").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let other_inbox = app.webchat_inbox(&other, "https://globex.example").await;
    let (_, threat) = app
        .visitor_writes(inbox, "I will file a chargeback with my bank")
        .await;
    app.visitor_writes(
        inbox,
        "Please write to ana.silva@example.com about my order",
    )
    .await;
    let (_, old) = app
        .visitor_writes(inbox, "Last month I almost did a chargeback")
        .await;
    app.visitor_writes(other_inbox, "chargeback chargeback")
        .await;
    let mut conn = app.superuser().await;
    sqlx::query(
        "UPDATE message SET created_at = now() - interval '10 days' WHERE conversation_id = $1",
    )
    .bind(old)
    .execute(&mut conn)
    .await
    .unwrap();
    let before = settings(&app, &owner).await;

    let report = app
        .send(
            Req::post("/api/v1/agent/guardrails/dry-run")
                .by(&owner)
                .json(json!({ "guardrails": chargeback_config(), "days": 7 })),
        )
        .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    let r = &report.body;
    assert_eq!(r["inbound_messages"], 2, "{r}");
    assert_eq!(r["current"]["blocked"], 0);
    assert_eq!(r["proposed"]["blocked"], 1);
    assert_eq!(r["proposed"]["by_rule"]["acme.chargeback"], 1);
    assert_eq!(r["changed"], 1);
    assert_eq!(r["proposed"]["masked"], 1);
    assert_eq!(r["proposed"]["by_pii_type"]["EMAIL"], 1);
    let examples = r["examples"].as_array().unwrap();
    // The difference comes first; then what the proposal masks or stops anyway.
    assert_eq!(examples[0]["conversation_id"], threat.to_string());
    assert_eq!(examples[0]["current"], "allow");
    assert_eq!(examples[0]["proposed"], "block");
    assert_eq!(examples[0]["rules"], json!(["acme.chargeback"]));
    assert!(
        !r.to_string().contains("ana.silva@example.com"),
        "the report shows raw PII"
    );
    assert!(examples
        .iter()
        .any(|e| e["text"].as_str().unwrap().contains("[EMAIL_1]")));

    // A longer window reaches the old message.
    let wider = app
        .send(
            Req::post("/api/v1/agent/guardrails/dry-run")
                .by(&owner)
                .json(json!({ "guardrails": chargeback_config(), "days": 30 })),
        )
        .await;
    assert_eq!(wider.body["proposed"]["blocked"], 2);

    // Nothing changed: same configuration, same version, nothing sent.
    let after = settings(&app, &owner).await;
    assert_eq!(after["config_version"], before["config_version"]);
    assert_eq!(after["guardrails"], before["guardrails"]);
    assert_eq!(
        app.count("SELECT count(*) FROM message WHERE direction = 'outbound'")
            .await,
        0
    );

    for (bad, code) in [
        (json!({ "days": 0 }), "invalid_days"),
        (json!({ "days": 400 }), "invalid_days"),
        (
            json!({ "guardrails": { "rules": [{ "id": "x" }] } }),
            "invalid_guardrails",
        ),
        (json!({ "confidence_threshold": 2 }), "invalid_threshold"),
    ] {
        let resp = app
            .send(
                Req::post("/api/v1/agent/guardrails/dry-run")
                    .by(&owner)
                    .json(bad.clone()),
            )
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(resp.error_code(), code);
    }
}
