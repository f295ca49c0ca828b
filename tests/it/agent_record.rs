//! The execution record (AGT-8): what it holds after a run with tool rounds and after a
//! provider failure, and that it is the record the hash-chained audit vouches for: immutable
//! once finished, and a change made past the application is detected.

use serde_json::{json, Value};

use crate::agent::{chat_call, decision, execution, world};
use crate::common::Req;
use crate::fakes::openai::FakeReply;

// proves: AGT-8
#[tokio::test]
async fn a_record_sums_usage_over_every_call_and_times_each_one() {
    let w = world(json!({ "confidence_threshold": 0.1 })).await;
    w.model.push(FakeReply::ToolCalls(vec![(
        "search_knowledge".into(),
        json!({ "query": "shipping times" }),
    )]));
    w.model.push(FakeReply::ToolCalls(vec![(
        "get_customer_profile".into(),
        json!({}),
    )]));
    w.model
        .push(decision("reply", "It ships in two days.", 0.9));
    w.customer_writes("How long does shipping take?", "wamid.USAGE")
        .await;

    let run = execution(&w.app).await;
    assert_eq!(run["outcome"], "replied", "{run}");
    let record = &run["record"];

    // Three chat rounds, two embeddings calls (the question, the tool's query).
    let calls = record["provider_calls"].as_array().unwrap();
    let chats: Vec<&Value> = calls.iter().filter(|c| c["kind"] == "chat").collect();
    let embeddings: Vec<&Value> = calls.iter().filter(|c| c["kind"] == "embeddings").collect();
    assert_eq!(chats.len(), 3, "{calls:?}");
    assert_eq!(embeddings.len(), 2, "{calls:?}");
    for call in calls {
        assert_eq!(call["attempts"], 1, "{call}");
        assert!(call["latency_ms"].as_f64().unwrap() >= 0.0, "{call}");
        assert!(
            call["provider"].is_string() && call["model"].is_string(),
            "{call}"
        );
    }
    // Usage is the sum over every round, embeddings included.
    let sent_prompt_tokens: i64 = chats
        .iter()
        .map(|c| c["prompt_tokens"].as_i64().unwrap())
        .sum();
    let responses = record["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 3);
    let reported: i64 = responses
        .iter()
        .map(|r| r["usage"]["prompt_tokens"].as_i64().unwrap())
        .sum();
    assert_eq!(record["usage"]["prompt_tokens"], reported);
    assert_eq!(sent_prompt_tokens, reported);
    let completion: i64 = responses
        .iter()
        .map(|r| r["usage"]["completion_tokens"].as_i64().unwrap())
        .sum();
    assert_eq!(record["usage"]["completion_tokens"], completion);
    let embedding_tokens: i64 = embeddings
        .iter()
        .map(|c| c["tokens"].as_i64().unwrap())
        .sum();
    assert!(embedding_tokens > 0);
    assert_eq!(record["usage"]["embedding_tokens"], embedding_tokens);
    // Each tool call with its parameters, result and effect.
    let tools = record["tool_calls"].as_array().unwrap();
    assert_eq!(tools.len(), 2, "{tools:?}");
    assert_eq!(tools[0]["name"], "search_knowledge");
    assert_eq!(tools[0]["arguments"], r#"{"query":"shipping times"}"#);
    assert_eq!(tools[0]["effect"], "data");
    assert!(tools[0]["result"].is_string());
    assert_eq!(tools[1]["name"], "get_customer_profile");
    assert!(
        tools[1]["result"].as_str().unwrap().contains("[NAME_1]"),
        "{}",
        tools[1]
    );
    for timing in ["embedding", "retrieval", "model", "finish", "total"] {
        assert!(
            record["timings_ms"][timing].is_number(),
            "no {timing} timing: {record}"
        );
    }
    assert_eq!(record["requests"].as_array().unwrap().len(), 3);
}

// proves: AGT-8, AGT-11 (a failed call is on record with its attempts and time)
#[tokio::test]
async fn a_provider_failure_still_records_the_model_time_and_each_attempt() {
    let w = world(json!({ "max_retries": 2 })).await;
    for _ in 0..3 {
        w.model.push(FakeReply::ServerError);
    }
    w.customer_writes("Hello?", "wamid.DOWN").await;

    let run = execution(&w.app).await;
    assert_eq!(run["record"]["reason"], "provider_unavailable", "{run}");
    let record = &run["record"];
    assert!(record["timings_ms"]["model"].is_number(), "{record}");
    let chat = chat_call(record);
    assert_eq!(chat["attempts"], 3, "{chat}");
    assert!(
        chat["error"].as_str().unwrap().contains("unavailable"),
        "{chat}"
    );
    assert!(chat["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(!record["errors"].as_array().unwrap().is_empty());
}

async fn finished_run(w: &crate::agent::World) -> Value {
    w.model
        .push(decision("reply", "Your order ships today.", 0.9));
    w.customer_writes("Where is my order?", "wamid.TAMPER")
        .await;
    execution(&w.app).await
}

// proves: AGT-8 (a record changed behind the application's back is detected)
#[tokio::test]
async fn a_record_tampered_with_by_a_superuser_no_longer_matches_its_audited_digest() {
    let w = world(json!({})).await;
    let run = finished_run(&w).await;
    let id = run["id"].as_str().unwrap().to_string();
    let show = || async {
        w.app
            .send(Req::get(format!("/api/v1/executions/{id}")).by(&w.owner))
            .await
            .body
    };
    assert_eq!(show().await["record_digest_ok"], true);

    // Past the trigger, as only a superuser can: the record now says something else.
    let mut conn = w.app.superuser().await;
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE agent_execution SET record = jsonb_set(record, '{decision,reply}', '\"We refund everything.\"') WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&mut conn)
    .await
    .unwrap();

    let shown = show().await;
    assert_eq!(shown["record_digest_ok"], false, "{shown}");
    assert_eq!(
        shown["record"]["decision"]["reply"],
        "We refund everything."
    );
    // The audit chain itself still holds: the digest it vouches for is the original's.
    let verify = w
        .app
        .send(Req::get("/api/v1/audit/verify").by(&w.owner))
        .await;
    assert_eq!(verify.body["valid"], true);
}

// proves: AGT-8 (a finished record is immutable for the application)
#[tokio::test]
async fn the_application_cannot_change_a_finished_record() {
    let w = world(json!({})).await;
    let run = finished_run(&w).await;
    let id: uuid::Uuid = run["id"].as_str().unwrap().parse().unwrap();

    let mut tx = w.app.state.db.tenant_tx(w.owner.tenant_id).await.unwrap();
    let refused = sqlx::query("UPDATE agent_execution SET record = '{}' WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    drop(tx);
    assert!(refused.to_string().contains("finished"), "{refused}");
    let mut tx = w.app.state.db.tenant_tx(w.owner.tenant_id).await.unwrap();
    let refused = sqlx::query("UPDATE agent_execution SET outcome = 'failed' WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await;
    assert!(refused.is_err());
    drop(tx);
    // The superuser too, short of switching the trigger off.
    let mut conn = w.app.superuser().await;
    assert!(
        sqlx::query("UPDATE agent_execution SET confidence = 1 WHERE id = $1")
            .bind(id)
            .execute(&mut conn)
            .await
            .is_err()
    );
    // The retention purge deletes, which stays possible.
    let deleted = sqlx::query("DELETE FROM agent_execution WHERE id = $1")
        .bind(id)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 1);
}
