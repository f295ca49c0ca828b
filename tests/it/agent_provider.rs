//! The provider as a run meets it, end to end: logprobs and the tenant's weights in the
//! confidence, servers without structured outputs or logprobs, answers that are no decision,
//! rate limits and hangs; the offline responder's confidence; executions listed per
//! conversation; secrets and vaults sealed at rest; placeholders stable across turns.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::agent::{chat_call, decision, execution, world, World};
use crate::common::{eventually, fast_worker, Req, TestApp};
use crate::fakes::openai::FakeReply;

async fn customer(w: &World, text: &str, wamid: &str) -> Value {
    let before = w
        .app
        .count("SELECT count(*) FROM agent_execution WHERE outcome <> 'running'")
        .await;
    w.customer_writes(text, wamid).await;
    w.app
        .settled(
            "SELECT count(*) FROM agent_execution WHERE outcome <> 'running'",
            before + 1,
        )
        .await;
    execution(&w.app).await
}

fn decision_with_logprobs(reply: &str, confidence: f64, logprob: f32) -> FakeReply {
    let content = json!({ "action": "reply", "reply": reply, "confidence": confidence, "reason_code": "answered",
                          "cited_sources": [], "action_request": null })
    .to_string();
    FakeReply::WithLogprobs {
        content,
        logprobs: vec![logprob; 12],
    }
}

// proves: AGT-5 (logprobs count as the tenant's weights say)
#[tokio::test]
async fn token_logprobs_decide_the_confidence_when_the_tenant_weighs_only_them() {
    let w = world(json!({ "weight_self": 0.0, "weight_logprob": 1.0, "weight_retrieval": 0.0, "confidence_threshold": 0.5 })).await;
    w.model
        .push(decision_with_logprobs("It ships today.", 0.1, -0.01));
    let sure = customer(&w, "When does it ship?", "wamid.LP1").await;
    assert_eq!(sure["outcome"], "replied", "{sure}");
    let confidence = &sure["record"]["confidence"];
    assert!((confidence["token_probability"].as_f64().unwrap() - (-0.01f64).exp()).abs() < 1e-4);
    assert_eq!(confidence["weights"]["logprob"], 1.0);
    assert!((confidence["value"].as_f64().unwrap() - (-0.01f64).exp()).abs() < 1e-4);
    assert_eq!(w.model.chat_requests()[0].body["logprobs"], true);

    // The model says it is sure; its tokens say otherwise, and they are what counts here.
    w.model
        .push(decision_with_logprobs("It ships tomorrow?", 0.99, -3.0));
    let unsure = customer(&w, "And the other parcel?", "wamid.LP2").await;
    assert_eq!(unsure["outcome"], "handed_off", "{unsure}");
    assert_eq!(unsure["record"]["reason"], "low_confidence");
    assert!(unsure["record"]["confidence"]["value"].as_f64().unwrap() < 0.1);
}

#[tokio::test]
async fn a_server_that_refuses_logprobs_is_asked_without_them_until_the_settings_change() {
    let w = world(json!({})).await;
    w.model.push(FakeReply::Status(
        400,
        json!({ "error": { "message": "logprobs are not supported by this model" } }).to_string(),
    ));
    w.model.push(decision("reply", "Hello!", 0.9));
    assert_eq!(
        customer(&w, "Hi", "wamid.NOLP1").await["outcome"],
        "replied"
    );
    w.model.push(decision("reply", "Hello again!", 0.9));
    assert_eq!(
        customer(&w, "Hi again", "wamid.NOLP2").await["outcome"],
        "replied"
    );
    let asked: Vec<bool> = w
        .model
        .chat_requests()
        .iter()
        .map(|r| r.body.get("logprobs").is_some())
        .collect();
    assert_eq!(asked, [true, false, false]);

    // A new configuration version is a new provider: it is asked again.
    let put = w
        .app
        .send(
            Req::new(Method::PUT, "/api/v1/agent/settings")
                .by(&w.owner)
                .json(json!({ "temperature": 0.3 })),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    w.model.push(decision("reply", "Hi!", 0.9));
    customer(&w, "Hello?", "wamid.NOLP3").await;
    assert_eq!(w.model.chat_requests()[3].body["logprobs"], true);
}

#[tokio::test]
async fn a_server_without_structured_outputs_gets_json_object_and_prose_around_the_decision_is_read(
) {
    let w = world(json!({})).await;
    w.model.push(FakeReply::json_schema_unsupported());
    w.model.push(FakeReply::Text(
        "Sure! Here is my answer:\n```json\n{\"action\":\"reply\",\"reply\":\"We ship in 2 days.\",\"confidence\":0.9,\"reason_code\":\"answered\",\"cited_sources\":[],\"action_request\":null}\n```".into(),
    ));
    let run = customer(&w, "How fast do you ship?", "wamid.JSONOBJ").await;
    assert_eq!(run["outcome"], "replied", "{run}");
    w.model.push(decision("reply", "Yes.", 0.9));
    customer(&w, "Really?", "wamid.JSONOBJ2").await;
    let formats: Vec<Value> = w
        .model
        .chat_requests()
        .iter()
        .map(|r| r.body["response_format"]["type"].clone())
        .collect();
    assert_eq!(formats, ["json_schema", "json_object", "json_object"]);
    // The strict schema sent first is one strict mode accepts (checked by a unit test too).
    let schema = &w.model.chat_requests()[0].body["response_format"]["json_schema"];
    assert_eq!(schema["strict"], true);
    assert_eq!(
        schema["schema"]["properties"]["action_request"]["properties"]["arguments"]["type"],
        "string"
    );
}

#[tokio::test]
async fn an_answer_that_is_no_decision_is_handed_over_with_the_text_as_a_suggestion() {
    let w = world(json!({})).await;
    w.model
        .push(FakeReply::Text("Maybe restart the device?".into()));
    let run = customer(&w, "It makes a noise", "wamid.PROSE").await;
    assert_eq!(run["outcome"], "handed_off", "{run}");
    assert_eq!(run["record"]["reason"], "unparseable_decision");
    assert!(!run["record"]["errors"].as_array().unwrap().is_empty());
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM message WHERE private AND body LIKE '%Maybe restart the device?%'")
            .await,
        1
    );
    tokio::task::yield_now().await;
    // The customer hears that a person will reply, and never the unparsed text.
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM message WHERE direction = 'outbound' AND NOT private")
            .await,
        1
    );
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM message WHERE direction = 'outbound' AND NOT private AND body LIKE '%a colleague will pick up%'")
            .await,
        1
    );
}

// proves: AGT-11 (Retry-After is honoured, end to end)
#[tokio::test]
async fn a_rate_limited_call_waits_for_retry_after_and_then_answers() {
    let w = world(json!({})).await;
    w.model.push(FakeReply::RateLimited {
        retry_after_secs: Some(1),
    });
    w.model.push(decision("reply", "Here I am.", 0.9));
    let run = customer(&w, "Hello?", "wamid.429").await;
    assert_eq!(run["outcome"], "replied", "{run}");
    let chats = w.model.chat_requests();
    assert_eq!(chats.len(), 2);
    assert!(chats[1].received_at - chats[0].received_at >= Duration::from_millis(950));
    let call = chat_call(&run["record"]);
    assert_eq!(call["attempts"], 2);
    assert!(call["latency_ms"].as_f64().unwrap() >= 950.0);
}

// proves: AGT-11 (a hanging provider is given up on, and the conversation handed over)
#[tokio::test]
async fn a_hanging_provider_times_out_on_every_attempt_and_the_conversation_is_handed_over() {
    let w = world(json!({ "timeout_ms": 1000, "max_retries": 1 })).await;
    w.model.push(FakeReply::Hang);
    w.model.push(FakeReply::Hang);
    let run = customer(&w, "Hello?", "wamid.HANG").await;
    assert_eq!(run["outcome"], "handed_off", "{run}");
    assert_eq!(run["record"]["reason"], "provider_unavailable");
    let call = chat_call(&run["record"]);
    assert_eq!(call["attempts"], 2);
    assert!(
        call["error"].as_str().unwrap().contains("timed out"),
        "{call}"
    );
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM conversation WHERE handler = 'human'")
            .await,
        1
    );
}

/// An offline tenant with one article, and a visitor's question; returns the run.
async fn offline_answer(scale: Option<f64>) -> Value {
    let app = TestApp::spawn_with(|c| fast_worker(c, "http://127.0.0.1:9")).await;
    app.start_workers();
    let owner = app.signup("acme").await;
    if let Some(scale) = scale {
        let put = app
            .send(
                Req::new(Method::PUT, "/api/v1/agent/settings")
                    .by(&owner)
                    .json(json!({ "retrieval_scale": scale })),
            )
            .await;
        assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    }
    app.send(Req::post("/api/v1/knowledge/articles").by(&owner).json(json!({
        "title": "Returns", "body": "You can return any item within 30 days of delivery for a full refund."
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
    app.visitor_writes(inbox, "How many days do I have to return an item?")
        .await;
    execution(&app).await
}

#[tokio::test]
async fn the_offline_confidence_records_the_raw_similarity_and_the_scale_that_maps_it() {
    let run = offline_answer(None).await;
    let record = &run["record"];
    let score = record["retrieval"][0]["score"].as_f64().unwrap();
    let confidence = &record["confidence"];
    // The raw similarity is the input; the scale (2 for the built-in embedder) maps it.
    assert_eq!(confidence["retrieval"].as_f64().unwrap(), score);
    assert_eq!(confidence["weights"]["retrieval_scale"], 2.0);
    let certainty = (score * 2.0).min(1.0);
    assert!((confidence["retrieval_certainty"].as_f64().unwrap() - certainty).abs() < 1e-9);
    assert!((confidence["value"].as_f64().unwrap() - certainty).abs() < 1e-9);
    assert_eq!(record["parameters"]["weights"]["retrieval_scale"], 2.0);

    let unscaled = offline_answer(Some(1.0)).await;
    let confidence = &unscaled["record"]["confidence"];
    assert_eq!(confidence["weights"]["retrieval_scale"], 1.0);
    assert_eq!(
        confidence["retrieval_certainty"].as_f64().unwrap(),
        confidence["retrieval"].as_f64().unwrap().min(1.0)
    );
}

#[tokio::test]
async fn a_conversations_executions_are_listed_newest_first_and_hidden_from_other_tenants() {
    let w = world(json!({})).await;
    w.model.push(decision("reply", "One.", 0.9));
    let first = customer(&w, "First question", "wamid.E1").await;
    w.model.push(decision("reply", "Two.", 0.9));
    let second = customer(&w, "Second question", "wamid.E2").await;
    let conversation = first["conversation_id"].as_str().unwrap();

    let listed = w
        .app
        .send(Req::get(format!("/api/v1/conversations/{conversation}/executions")).by(&w.owner))
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let ids: Vec<&Value> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(ids, [&second["id"], &first["id"]]);
    assert_eq!(listed.body[0]["outcome"], "replied");
    assert_eq!(
        listed.body[0]["trigger_message_id"],
        second["trigger_message_id"]
    );

    let other = w.app.signup("globex").await;
    let refused = w
        .app
        .send(Req::get(format!("/api/v1/conversations/{conversation}/executions")).by(&other))
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    let refused = w
        .app
        .send(
            Req::get(format!(
                "/api/v1/executions/{}",
                first["id"].as_str().unwrap()
            ))
            .by(&other),
        )
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
}

// proves: SEC-10 (the API key and the PII vault are sealed at rest)
#[tokio::test]
async fn the_api_key_and_the_conversations_vault_hold_no_plaintext_in_the_database() {
    let key = "sk-live-0123456789abcdef";
    let w = world(json!({ "api_key": key })).await;
    w.model
        .push(decision("reply", "Thanks [NAME_1], noted.", 0.9));
    let run = customer(
        &w,
        "I'm Sheena Nelson, sheena.nelson@example.com, please update my address",
        "wamid.SEALED",
    )
    .await;
    assert_eq!(run["outcome"], "replied", "{run}");
    assert_eq!(
        w.model.chat_requests()[0].header("authorization"),
        Some(format!("Bearer {key}").as_str())
    );

    let mut conn = w.app.superuser().await;
    let (api_key, settings_row): (Vec<u8>, String) =
        sqlx::query_as("SELECT provider_api_key, s::text FROM agent_settings s")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let (vault, vault_row): (Vec<u8>, String) =
        sqlx::query_as("SELECT sealed, v::text FROM conversation_vault v")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let contains = |haystack: &[u8], needle: &str| {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    };
    assert!(!contains(&api_key, key) && !settings_row.contains(key));
    for raw in ["sheena.nelson@example.com", "Sheena", "Nelson"] {
        assert!(!contains(&vault, raw), "{raw} in the sealed vault");
        assert!(!vault_row.contains(raw), "{raw} in the vault row");
    }
    let shown = w
        .app
        .send(Req::get("/api/v1/agent/settings").by(&w.owner))
        .await;
    assert_eq!(shown.body["api_key_configured"], true);
    assert!(!shown.body.to_string().contains(key));
}

// proves: AGT-2 (a person's data keeps its placeholder from one turn to the next)
#[tokio::test]
async fn placeholders_stay_the_same_across_the_turns_of_a_conversation() {
    let w = world(json!({})).await;
    let turns = [
        ("My email is sheena.nelson@example.com", "wamid.P1"),
        ("Did you get sheena.nelson@example.com right?", "wamid.P2"),
        (
            "Also write to billing@acme.example, and sheena.nelson@example.com",
            "wamid.P3",
        ),
    ];
    for (text, wamid) in turns {
        w.model.push(decision("reply", "Noted.", 0.9));
        assert_eq!(customer(&w, text, wamid).await["outcome"], "replied");
    }
    let last_user = |n: usize| {
        w.model.chat_requests()[n].body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .unwrap()["content"]
            .as_str()
            .unwrap()
            .lines()
            // The message comes as a data block: its lines marked, between boundary lines.
            .filter_map(|l| l.strip_prefix("│ "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(last_user(0), "My email is [EMAIL_1]");
    assert_eq!(last_user(1), "Did you get [EMAIL_1] right?");
    assert_eq!(last_user(2), "Also write to [EMAIL_2], and [EMAIL_1]");
    // The history sent with the third turn uses the same placeholders.
    let history = w.model.chat_requests()[2].body["messages"].to_string();
    assert!(history.contains("My email is [EMAIL_1]"), "{history}");
    assert!(!w
        .model
        .all_request_text()
        .contains("sheena.nelson@example.com"));
}

#[tokio::test]
async fn a_settings_change_is_checked_even_while_the_current_client_is_cached() {
    let w = world(json!({})).await;
    w.model.push(decision("reply", "Hello!", 0.9));
    // A run caches the client of the current configuration version.
    assert_eq!(
        customer(&w, "Hi", "wamid.CACHED").await["outcome"],
        "replied"
    );

    let refused = w
        .app
        .send(
            Req::new(Method::PUT, "/api/v1/agent/settings")
                .by(&w.owner)
                .json(json!({ "api_key": "sk-abc\ndef" })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert_eq!(refused.error_code(), "invalid_provider");
    assert!(!refused.body.to_string().contains("sk-abc"));
}
