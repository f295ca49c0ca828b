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

async fn put_settings(app: &TestApp, owner: &Member, body: Value) -> crate::common::Resp {
    app.send(
        Req::new(Method::PUT, "/api/v1/agent/settings")
            .by(owner)
            .json(body),
    )
    .await
}

// proves: AGT-3
#[tokio::test]
async fn pii_options_safe_reply_wording_and_the_threshold_each_apply_to_the_next_message() {
    let app = TestApp::spawn().await;
    app.start_workers();
    let owner = app.signup("acme").await;
    app.send(Req::post("/api/v1/knowledge/articles").by(&owner).json(json!({
        "title": "Returns",
        "body": "You can return any item within 30 days of delivery for a full refund. Start a return from your orders page."
    })))
    .await;
    eventually(20, "the article to be embedded", || async {
        (app.send(Req::get("/api/v1/knowledge/status").by(&owner))
            .await
            .body["ready"]
            == 1)
            .then_some(())
    })
    .await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;

    // PII options: the tenant's own address masked, then not (a public value).
    let email = "Write to help@acme.example: how many days do I have to return an item?";
    let (_, first) = app.visitor_writes(inbox, email).await;
    let run = finished_run(&app, first).await;
    assert!(
        run["record"]["guardrails"]
            .to_string()
            .contains("pii.email"),
        "{run}"
    );
    let changed = put_settings(
        &app,
        &owner,
        json!({ "guardrails": { "options": { "public_values": ["help@acme.example"] } } }),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let (_, second) = app.visitor_writes(inbox, email).await;
    let run = finished_run(&app, second).await;
    assert!(
        !run["record"]["guardrails"]
            .to_string()
            .contains("pii.email"),
        "{run}"
    );

    // The threshold: the same question answered, then handed to a person.
    let question = "How many days do I have to return an item?";
    put_settings(&app, &owner, json!({ "confidence_threshold": 0.01 })).await;
    let (_, low) = app.visitor_writes(inbox, question).await;
    let run = finished_run(&app, low).await;
    assert_eq!(run["outcome"], "replied", "{run}");
    let raised = put_settings(&app, &owner, json!({ "confidence_threshold": 0.99 })).await;
    assert_eq!(raised.status, StatusCode::OK);
    let (_, high) = app.visitor_writes(inbox, question).await;
    let run = finished_run(&app, high).await;
    assert_eq!(run["outcome"], "handed_off", "{run}");
    assert_eq!(run["record"]["reason"], "low_confidence");

    // Safe-reply wording: the tenant's text changes between two identical messages.
    let with_reply = |wording: Value| {
        let mut config = chargeback_config();
        config["options"]["safe_replies"]["chargeback"] = wording;
        json!({ "guardrails": config })
    };
    put_settings(&app, &owner, with_reply(json!("First wording."))).await;
    let threat = "I will file a chargeback";
    let (_, a) = app.visitor_writes(inbox, threat).await;
    finished_run(&app, a).await;
    put_settings(&app, &owner, with_reply(json!("Second wording."))).await;
    let (_, b) = app.visitor_writes(inbox, threat).await;
    finished_run(&app, b).await;
    // Wording by language: each customer hears the tenant's text in their own language.
    put_settings(
        &app,
        &owner,
        with_reply(json!({ "en": "Third wording.", "pt": "Terceira redação." })),
    )
    .await;
    let (_, c) = app.visitor_writes(inbox, threat).await;
    finished_run(&app, c).await;
    let ameaca = "Se não resolverem hoje eu vou pedir o estorno no cartão";
    let (_, d) = app.visitor_writes(inbox, ameaca).await;
    finished_run(&app, d).await;
    for (conversation, text) in [
        (a, "First wording."),
        (b, "Second wording."),
        (c, "Third wording."),
        (d, "Terceira redação."),
    ] {
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) FROM message WHERE conversation_id = '{conversation}' AND NOT private
                 AND direction = 'outbound' AND body = '{text}'"
            ))
            .await,
            1,
            "{text}"
        );
    }

    // Each change is audited with what it was and what it became.
    let audit = app
        .audit_events(owner.tenant_id, "agent.settings_changed")
        .await;
    assert_eq!(audit.len(), 6);
    let threshold = audit
        .iter()
        .find(|e| {
            e["after"]["confidence_threshold"]
                .as_f64()
                .is_some_and(|t| (t - 0.99).abs() < 1e-6)
        })
        .expect("the threshold change");
    assert!(
        (threshold["before"]["confidence_threshold"]
            .as_f64()
            .unwrap()
            - 0.01)
            .abs()
            < 1e-6
    );
    let pii = &audit[0];
    assert_eq!(pii["before"]["guardrails"], json!({}));
    assert_eq!(
        pii["after"]["guardrails"]["options"]["public_values"],
        json!(["help@acme.example"])
    );
}

/// The types no configuration may leave out (AGT-2).
const MANDATORY: [&str; 11] = [
    "EMAIL", "PHONE", "CARD", "IBAN", "SSN", "CPF", "CNPJ", "IP", "SECRET", "URL", "NAME",
];

// proves: AGT-2
#[tokio::test]
async fn a_tenant_cannot_switch_off_masking_of_a_mandatory_pii_type_and_an_older_config_gets_the_floor(
) {
    let app = TestApp::spawn().await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let before = settings(&app, &owner).await;

    // Leaving e-mails out is refused, saying which types, and changes nothing.
    let refused = put_settings(
        &app,
        &owner,
        json!({ "guardrails": { "options": { "pii_types": ["PHONE", "ADDRESS"] } } }),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert_eq!(refused.error_code(), "pii_type_mandatory");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("EMAIL") && message.contains("NAME"),
        "{message}"
    );
    assert!(!message.contains("ADDRESS"), "{message}");
    assert_eq!(settings(&app, &owner).await, before);
    assert!(app
        .audit_events(owner.tenant_id, "agent.settings_changed")
        .await
        .is_empty());
    // The dry-run refuses it too, and shows which types each configuration masks.
    let dry = |guardrails: Value| {
        app.send(
            Req::post("/api/v1/agent/guardrails/dry-run")
                .by(&owner)
                .json(json!({ "guardrails": guardrails })),
        )
    };
    let tried = dry(json!({ "options": { "pii_types": [] } })).await;
    assert_eq!(tried.status, StatusCode::BAD_REQUEST, "{}", tried.body);
    assert_eq!(tried.error_code(), "pii_type_mandatory");
    let shown = dry(json!({ "options": { "pii_types": MANDATORY } })).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert_eq!(shown.body["pii_types"]["mandatory"], json!(MANDATORY));
    assert_eq!(shown.body["pii_types"]["proposed"], json!(MANDATORY));
    let current = shown.body["pii_types"]["current"].as_array().unwrap();
    assert!(current.contains(&json!("ADDRESS")) && current.contains(&json!("EMAIL")));

    // Adding to the floor is fine, and audited.
    let more = [MANDATORY.as_slice(), &["ADDRESS"]].concat();
    let added = put_settings(
        &app,
        &owner,
        json!({ "guardrails": { "options": { "pii_types": more } } }),
    )
    .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert_eq!(
        app.audit_events(owner.tenant_id, "agent.settings_changed")
            .await
            .len(),
        1
    );

    // A configuration stored before the floor existed: read with the floor, and applied so.
    let mut conn = app.superuser().await;
    sqlx::query(
        "UPDATE agent_settings SET guardrails = $2, config_version = config_version + 1 WHERE tenant_id = $1",
    )
    .bind(owner.tenant_id)
    .bind(json!({ "options": { "pii_types": ["PHONE"] } }))
    .execute(&mut conn)
    .await
    .unwrap();
    let stored = settings(&app, &owner).await;
    let types = stored["guardrails"]["options"]["pii_types"]
        .as_array()
        .unwrap();
    for t in MANDATORY {
        assert!(types.contains(&json!(t)), "{t}: {stored}");
    }
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, conversation) = app
        .visitor_writes(
            inbox,
            "Write to ana.silva@example.com about my order, please",
        )
        .await;
    let run = finished_run(&app, conversation).await;
    assert!(
        run["record"]["guardrails"]
            .to_string()
            .contains("pii.email"),
        "{run}"
    );
    let sent = run["record"].to_string();
    assert!(!sent.contains("ana.silva@example.com"), "{sent}");
}

// proves: AGT-7
#[tokio::test]
async fn the_human_review_pack_cannot_be_turned_off() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let before = settings(&app, &owner).await;
    let refused = put_settings(
        &app,
        &owner,
        json!({ "guardrails": { "options": { "packs": ["legal_advice", "self_harm"] } } }),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert_eq!(refused.error_code(), "required_pack");
    assert_eq!(
        settings(&app, &owner).await["config_version"],
        before["config_version"]
    );
    let dry = app
        .send(
            Req::post("/api/v1/agent/guardrails/dry-run")
                .by(&owner)
                .json(json!({ "guardrails": { "options": { "packs": [] } } })),
        )
        .await;
    assert_eq!(dry.status, StatusCode::BAD_REQUEST);
    assert_eq!(dry.error_code(), "required_pack");
    let fewer = put_settings(
        &app,
        &owner,
        json!({ "guardrails": { "options": { "packs": ["human_review", "self_harm"] } } }),
    )
    .await;
    assert_eq!(fewer.status, StatusCode::OK, "{}", fewer.body);
}

#[tokio::test]
async fn two_rules_with_one_id_conflict_and_nothing_is_saved_or_tried() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let before = settings(&app, &owner).await;
    let rule =
        json!({ "id": "acme.refund", "stage": "inbound", "phrases": ["refund"], "action": "flag" });
    let twice = json!({ "rules": [rule, rule] });
    let refused = put_settings(&app, &owner, json!({ "guardrails": twice })).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.error_code(), "duplicate_rule_id");
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("acme.refund"));
    assert_eq!(settings(&app, &owner).await, before);
    let dry = app
        .send(
            Req::post("/api/v1/agent/guardrails/dry-run")
                .by(&owner)
                .json(json!({ "guardrails": twice })),
        )
        .await;
    assert_eq!(dry.status, StatusCode::CONFLICT, "{}", dry.body);
    assert_eq!(dry.error_code(), "duplicate_rule_id");
    let once = put_settings(&app, &owner, json!({ "guardrails": { "rules": [rule] } })).await;
    assert_eq!(once.status, StatusCode::OK, "{}", once.body);
}

/// Records a finished run of `conversation` that decided to reply with `confidence`.
async fn recorded_run(
    app: &TestApp,
    conversation: Uuid,
    confidence: f32,
    outcome: &str,
    draft: &str,
) -> Uuid {
    let id = Uuid::now_v7();
    let mut conn = app.superuser().await;
    sqlx::query(
        "INSERT INTO agent_execution (id, tenant_id, conversation_id, contact_id, provider, model, offline,
                                      outcome, confidence, record)
         SELECT $1, tenant_id, id, contact_id, 'fake', 'fake-model', false, $3, $4,
                jsonb_build_object('decision', jsonb_build_object('action', 'reply', 'reply', $5::text))
         FROM conversation WHERE id = $2",
    )
    .bind(id)
    .bind(conversation)
    .bind(outcome)
    .bind(confidence)
    .bind(draft)
    .execute(&mut conn)
    .await
    .unwrap();
    id
}

// proves: AGT-3
#[tokio::test]
async fn a_dry_run_shows_which_answers_a_new_threshold_hands_off_and_which_reviews_a_new_policy_changes(
) {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let reviewer = app.join(&owner, "reviewer").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (conversation, _) = {
        let (_, c) = app.visitor_writes(inbox, "hello").await;
        (c, ())
    };
    let sure = recorded_run(&app, conversation, 0.9, "replied", "Sure answer.").await;
    let borderline = recorded_run(
        &app,
        conversation,
        0.65,
        "replied",
        "Borderline answer about [EMAIL_1].",
    )
    .await;
    let unsure = recorded_run(&app, conversation, 0.5, "handed_off", "Unsure answer.").await;

    let dry = |body: Value| {
        let app = &app;
        let owner = owner.clone();
        async move {
            let resp = app
                .send(
                    Req::post("/api/v1/agent/guardrails/dry-run")
                        .by(&owner)
                        .json(body),
                )
                .await;
            assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
            resp.body
        }
    };
    let stricter = dry(json!({ "confidence_threshold": 0.7 })).await;
    let c = &stricter["confidence"];
    assert!(
        (c["current_threshold"].as_f64().unwrap() - 0.6).abs() < 1e-6,
        "{c}"
    );
    assert_eq!(c["executions"], 3);
    assert_eq!(c["newly_handed_off"], 1, "{c}");
    assert_eq!(c["no_longer_handed_off"], 0);
    let examples = c["examples"].as_array().unwrap();
    assert_eq!(examples.len(), 1);
    assert_eq!(examples[0]["execution_id"], borderline.to_string());
    assert_eq!(examples[0]["outcome"], "replied");
    assert_eq!(examples[0]["proposed"], "handed_off");
    assert!((examples[0]["confidence"].as_f64().unwrap() - 0.65).abs() < 1e-6);
    assert_eq!(examples[0]["draft"], "Borderline answer about [EMAIL_1].");
    let looser = dry(json!({ "confidence_threshold": 0.4 })).await;
    assert_eq!(looser["confidence"]["no_longer_handed_off"], 1);
    assert_eq!(
        looser["confidence"]["examples"][0]["execution_id"],
        unsure.to_string()
    );
    assert_eq!(looser["confidence"]["examples"][0]["proposed"], "replied");
    assert!(!looser.to_string().contains(&sure.to_string()));
    assert!(looser.get("review_policy").is_none());

    // A proposed approval policy: which waiting items would need someone else.
    let action = app
        .send(Req::post("/api/v1/agent/actions").by(&owner).json(json!({
            "name": "issue_refund", "description": "refund", "target_url": "https://refunds.example/hook",
            "secret": "s", "kind": "refund", "amount_field": "amount",
            "parameters": { "type": "object", "properties": { "amount": { "type": "number" } } }
        })))
        .await;
    assert_eq!(action.status, StatusCode::CREATED, "{}", action.body);
    let mut items = Vec::new();
    for amount in [20, 80] {
        let item = app
            .send(Req::post("/api/v1/reviews").by(&owner).json(json!({
                "kind": "action", "conversation_id": conversation, "action_id": action.uuid("/id"),
                "arguments": { "amount": amount }
            })))
            .await;
        assert_eq!(item.status, StatusCode::CREATED, "{}", item.body);
        items.push(item.uuid("/id"));
    }
    let report = dry(json!({ "review_policy": { "rules": [
        { "kind": "refund", "above": 50, "role": "admin" }
    ] } }))
    .await;
    let rp = &report["review_policy"];
    assert_eq!(rp["checked"], 2, "{rp}");
    let changed = rp["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["review_id"], items[1].to_string());
    assert_eq!(changed[0]["current"]["role"], "reviewer");
    assert_eq!(changed[0]["proposed"]["role"], "admin");
    assert_eq!(changed[0]["amount"], 80.0);
    // Nothing was saved.
    let policy = app
        .send(Req::get("/api/v1/reviews/policy").by(&owner))
        .await;
    assert_eq!(policy.body["rules"], json!([]));
    let bad = app
        .send(
            Req::post("/api/v1/agent/guardrails/dry-run")
                .by(&owner)
                .json(json!({ "review_policy": { "rules": [{ "kind": "refund" }] } })),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_code(), "invalid_policy");

    // Only who may change guardrails may dry-run them.
    let refused = app
        .send(
            Req::post("/api/v1/agent/guardrails/dry-run")
                .by(&reviewer)
                .json(json!({ "confidence_threshold": 0.7 })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}
