//! How agent runs meet the job queue's at-least-once delivery and the provider's failures: a
//! message is answered once however many runs race for it, a crashed attempt is closed when
//! the next one starts, a failing embeddings API hands the conversation over like a failing
//! chat model, and a run that fails on every attempt of its job hands it over too.

use custodian::agent::runtime::run_job;
use custodian::queue::{Job, Outcome};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::agent::{decision, execution, world, world_with, World};
use crate::common::{eventually, Req};
use crate::fakes::openai::{fake_embedding, FakeReply};

/// The customer writes; returns the agent run's job, still queued (no workers run).
async fn queued_run(w: &World, text: &str, wamid: &str) -> Job {
    w.customer_writes(text, wamid).await;
    let mut conn = w.app.superuser().await;
    let (id, tenant_id, payload, max_attempts): (Uuid, Uuid, Value, i32) = sqlx::query_as(
        "SELECT id, tenant_id, payload, max_attempts FROM job WHERE kind = 'agent.run' ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    Job {
        id,
        tenant_id,
        kind: "agent.run".into(),
        payload,
        attempts: 1,
        max_attempts,
    }
}

async fn ai_replies(w: &World) -> i64 {
    w.app
        .count("SELECT count(*) FROM message WHERE direction = 'outbound' AND author_kind = 'ai' AND NOT private")
        .await
}

// proves: AGT-11 (a message is answered once, whatever the delivery)
#[tokio::test]
async fn two_runs_of_one_message_racing_post_a_single_reply() {
    let w = world_with(json!({}), false).await;
    // Both runs are talking to the model at the same time, whatever the scheduling.
    w.model.hold_chat_until(2);
    w.model
        .push(decision("reply", "Your order ships today.", 0.9));
    w.model
        .push(decision("reply", "Your order ships today!", 0.9));
    let job = queued_run(&w, "Where is my order?", "wamid.RACE").await;

    let (first, second) = tokio::join!(
        run_job(&w.app.state.agent, &job),
        run_job(&w.app.state.agent, &job)
    );

    assert!(matches!(first, Outcome::Done), "{first:?}");
    assert!(matches!(second, Outcome::Done), "{second:?}");
    assert_eq!(
        w.model.chat_requests().len(),
        2,
        "both runs asked the model"
    );
    assert_eq!(ai_replies(&w).await, 1, "the customer got two answers");
    let mut conn = w.app.superuser().await;
    let outcomes: Vec<(String, bool, Value)> = sqlx::query_as(
        "SELECT outcome, finished_at IS NOT NULL, record FROM agent_execution ORDER BY outcome",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(outcomes[0].0, "abandoned");
    assert_eq!(outcomes[1].0, "replied");
    // The loser keeps its record (it did send the masked conversation to the provider).
    assert!(outcomes[0].1, "the abandoned run's record was not finished");
    assert!(!outcomes[0].2["requests"].as_array().unwrap().is_empty());
    // Both are in the audit, each with the digest of its record.
    let audited = w
        .app
        .audit_events(w.owner.tenant_id, "agent.executed")
        .await;
    assert_eq!(audited.len(), 2);
    assert!(audited.iter().all(|e| e["after"]["record_sha256"]
        .as_str()
        .is_some_and(|d| d.len() == 64)));
    // A third delivery of the same job does nothing.
    assert!(matches!(
        run_job(&w.app.state.agent, &job).await,
        Outcome::Done
    ));
    assert_eq!(w.model.chat_requests().len(), 2);
    assert_eq!(ai_replies(&w).await, 1);
}

/// What a worker that died mid-run leaves: a run of the customer's message still marked running.
async fn crashed_attempt(w: &World) -> Uuid {
    let crashed = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO agent_execution (id, tenant_id, conversation_id, contact_id, trigger_message_id, provider, model, offline)
         SELECT $1, m.tenant_id, m.conversation_id, c.contact_id, m.id, 'fake', 'fake', false
         FROM message m JOIN conversation c ON c.id = m.conversation_id WHERE m.direction = 'inbound'",
    )
    .bind(crashed)
    .execute(&mut w.app.superuser().await)
    .await
    .unwrap();
    crashed
}

// proves: AGT-11 (an attempt that crashed does not stay "running" for ever)
#[tokio::test]
async fn a_crashed_attempt_is_closed_as_abandoned_when_the_next_attempt_starts() {
    let w = world_with(json!({}), false).await;
    w.model
        .push(decision("reply", "Your order ships today.", 0.9));
    let job = queued_run(&w, "Where is my order?", "wamid.CRASHED").await;
    // What a worker that died mid-run leaves behind.
    let crashed = crashed_attempt(&w).await;
    let mut conn = w.app.superuser().await;

    assert!(matches!(
        run_job(&w.app.state.agent, &job).await,
        Outcome::Done
    ));

    let (outcome, finished, reason): (String, bool, Option<String>) = sqlx::query_as(
        "SELECT outcome, finished_at IS NOT NULL, record->>'reason' FROM agent_execution WHERE id = $1",
    )
    .bind(crashed)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(outcome, "abandoned");
    assert!(!finished, "the crashed attempt never finished");
    let new_run = execution(&w.app).await;
    assert_eq!(new_run["outcome"], "replied");
    assert_eq!(
        reason.unwrap(),
        format!("superseded_by:{}", new_run["id"].as_str().unwrap())
    );
    assert_eq!(ai_replies(&w).await, 1);
}

// proves: AGT-11 (a failing embeddings API is a provider failure: handed over, not re-run)
#[tokio::test]
async fn an_embedding_failure_inside_search_knowledge_hands_over_without_running_the_model_again() {
    let w = world(json!({ "max_retries": 1 })).await;
    let question = "What is your refund policy?";
    // The question's own retrieval works; the tool's search then finds the API down.
    w.model
        .push_embeddings(FakeReply::Embeddings(vec![fake_embedding(question, 384)]));
    w.model.push_embeddings(FakeReply::ServerError);
    w.model.push_embeddings(FakeReply::ServerError);
    w.model.push(FakeReply::ToolCalls(vec![(
        "search_knowledge".into(),
        json!({ "query": "refund policy" }),
    )]));
    w.customer_writes(question, "wamid.EMBED-DOWN").await;

    let run = execution(&w.app).await;
    assert_eq!(run["outcome"], "handed_off", "{run}");
    assert_eq!(run["record"]["reason"], "provider_unavailable");
    w.app
        .settled(
            "SELECT count(*) FROM job WHERE kind = 'agent.run' AND status = 'done' AND attempts = 1",
            1,
        )
        .await;
    assert_eq!(
        w.model.chat_requests().len(),
        1,
        "the model was asked again"
    );
    let calls = run["record"]["provider_calls"].as_array().unwrap();
    let failed = calls
        .iter()
        .find(|c| c["kind"] == "embeddings" && c["purpose"] == "search_knowledge")
        .expect("the failed embeddings call is on record");
    assert_eq!(failed["attempts"], 2);
    assert!(
        failed["error"].as_str().unwrap().contains("500"),
        "{failed}"
    );
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM conversation WHERE handler = 'human'")
            .await,
        1
    );
}

/// Breaks the conversation's sealed vault, so every run of it fails inside the platform.
async fn break_the_vault(w: &World) {
    let mut conn = w.app.superuser().await;
    sqlx::query(
        "INSERT INTO conversation_vault (conversation_id, tenant_id, sealed)
         SELECT id, tenant_id, '\\x00'::bytea FROM conversation",
    )
    .execute(&mut conn)
    .await
    .unwrap();
}

// proves: AGT-11 (a run that fails on every attempt hands the conversation to a person)
#[tokio::test]
async fn a_run_failing_on_the_last_attempt_of_its_job_hands_the_conversation_over() {
    let w = world_with(json!({}), false).await;
    let mut job = queued_run(&w, "Where is my order?", "wamid.DOOMED").await;
    break_the_vault(&w).await;
    // An attempt of an earlier run that crashed, still marked running.
    let crashed = crashed_attempt(&w).await;

    // An early attempt fails and is retried: nothing is handed over yet.
    assert!(matches!(
        run_job(&w.app.state.agent, &job).await,
        Outcome::Retry { .. }
    ));
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM conversation WHERE handler = 'ai'")
            .await,
        1
    );

    job.attempts = job.max_attempts;
    let last = run_job(&w.app.state.agent, &job).await;

    assert!(matches!(last, Outcome::Fail { .. }), "{last:?}");
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM conversation WHERE handler = 'human'")
            .await,
        1
    );
    let handed = w
        .app
        .audit_events(w.owner.tenant_id, "conversation.handed_off")
        .await;
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0]["after"]["reason"], "agent_failed");
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM message WHERE private AND body LIKE '%agent_failed%'")
            .await,
        1
    );
    // The attempt left running is closed as failed, with its audit entry and digest.
    let shown = w
        .app
        .send(Req::get(format!("/api/v1/executions/{crashed}")).by(&w.owner))
        .await;
    assert_eq!(shown.body["outcome"], "failed", "{}", shown.body);
    assert_eq!(shown.body["record"]["reason"], "agent_failed");
    assert_eq!(shown.body["record_digest_ok"], true);
    assert_eq!(ai_replies(&w).await, 0);
}

// proves: AGT-11 (through the real worker: the dead job's conversation is with a person)
#[tokio::test]
async fn a_dead_agent_job_leaves_its_conversation_with_a_person() {
    let w = world_with(json!({}), false).await;
    w.customer_writes("Hello?", "wamid.DEAD").await;
    break_the_vault(&w).await;
    let mut conn = w.app.superuser().await;
    sqlx::query("UPDATE job SET max_attempts = 2 WHERE kind = 'agent.run'")
        .execute(&mut conn)
        .await
        .unwrap();
    w.app.start_workers();

    eventually(20, "the job to die", || async {
        (w.app
            .count("SELECT count(*) FROM job WHERE kind = 'agent.run' AND status = 'dead'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(
        w.app
            .count("SELECT count(*) FROM conversation WHERE handler = 'human'")
            .await,
        1
    );
    assert_eq!(
        w.app
            .audit_events(w.owner.tenant_id, "conversation.handed_off")
            .await[0]["after"]["reason"],
        "agent_failed"
    );
}
