//! Retention (RET-1, AGT-9, DSR-7): per-class periods with bounds, legal holds, an audited purge
//! that keeps the audit chain verifiable, and a preview that deletes nothing.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{eventually, Member, Req, TestApp};

fn put(path: &str) -> Req {
    Req::new(Method::PUT, path)
}

/// A visitor's conversation: (conversation id, contact id).
async fn conversation(app: &TestApp, owner: &Member, inbox: Uuid, text: &str) -> (Uuid, Uuid) {
    let (_, conversation) = app.visitor_writes(inbox, text).await;
    let contact = app
        .send(Req::get(format!("/api/v1/conversations/{conversation}")).by(owner))
        .await
        .uuid("/conversation/contact_id");
    (conversation, contact)
}

/// Records an agent execution of `conversation` that started `days_ago`.
async fn execution(app: &TestApp, conversation: Uuid, days_ago: i32) -> Uuid {
    let id = Uuid::new_v4();
    let mut conn = app.superuser().await;
    sqlx::query(
        "INSERT INTO agent_execution (id, tenant_id, conversation_id, contact_id, provider, model,
                                      offline, outcome, started_at)
         SELECT $1, tenant_id, id, contact_id, 'offline', 'offline', true, 'replied',
                now() - make_interval(days => $3)
         FROM conversation WHERE id = $2",
    )
    .bind(id)
    .bind(conversation)
    .bind(days_ago)
    .execute(&mut conn)
    .await
    .unwrap();
    id
}

/// Resolves a conversation through the API, then dates the resolution `days_ago`.
async fn resolve(app: &TestApp, owner: &Member, conversation: Uuid, days_ago: i32) {
    let resp = app
        .send(
            Req::post(format!("/api/v1/conversations/{conversation}/status"))
                .by(owner)
                .json(json!({ "status": "resolved" })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM conversation WHERE id = '{conversation}' AND resolved_at IS NOT NULL"
        ))
        .await,
        1,
        "resolving sets resolved_at"
    );
    let mut conn = app.superuser().await;
    sqlx::query(
        "UPDATE conversation SET resolved_at = now() - make_interval(days => $2) WHERE id = $1",
    )
    .bind(conversation)
    .bind(days_ago)
    .execute(&mut conn)
    .await
    .unwrap();
}

async fn run(app: &TestApp, who: &Member) -> Value {
    let resp = app
        .send(Req::post("/api/v1/retention/run").by(who).json(json!({})))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    resp.body
}

fn class<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

async fn purged_events(app: &TestApp, tenant: Uuid, class: &str) -> Vec<Value> {
    app.audit_events(tenant, "retention.purged")
        .await
        .into_iter()
        .filter(|e| e["after"]["class"] == class)
        .collect()
}

async fn exists(app: &TestApp, table: &str, id: Uuid) -> bool {
    app.count(&format!("SELECT count(*) FROM {table} WHERE id = '{id}'"))
        .await
        == 1
}

// proves: AGT-9, RET-1
#[tokio::test]
async fn executions_older_than_180_days_are_purged_and_younger_ones_kept_and_the_purge_is_recorded()
{
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://acme.example").await;
    let (conv, _) = conversation(&app, &owner, inbox, "hello").await;
    let old = execution(&app, conv, 181).await;
    let young = execution(&app, conv, 179).await;

    let report = run(&app, &owner).await;
    let executions = class(&report, "agent_executions");
    assert_eq!(executions["count"], 1, "{report}");
    assert_eq!(executions["days"], 180);
    assert!(!exists(&app, "agent_execution", old).await);
    assert!(exists(&app, "agent_execution", young).await);

    let events = purged_events(&app, owner.tenant_id, "agent_executions").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["actor_type"], "system");
    assert_eq!(events[0]["after"]["count"], 1);
    assert_eq!(events[0]["after"]["cutoff"], executions["cutoff"]);
    // Classes with nothing to purge leave no event.
    assert_eq!(
        app.audit_events(owner.tenant_id, "retention.purged")
            .await
            .len(),
        1
    );
    // A second run finds nothing more.
    assert_eq!(
        class(&run(&app, &owner).await, "agent_executions")["count"],
        0
    );
}

// proves: AGT-9, RET-1, DSR-7
#[tokio::test]
async fn periods_outside_their_bounds_are_refused_and_a_valid_change_is_audited_with_before_and_after(
) {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let policy = app
        .send(Req::get("/api/v1/retention/policy").by(&owner))
        .await;
    assert_eq!(policy.status, StatusCode::OK);
    assert_eq!(policy.body["agent_executions_days"], 180);
    assert_eq!(policy.body["audit_log_days"], 365);
    assert_eq!(policy.body["closed_conversations_days"], Value::Null);
    assert_eq!(policy.body["exports_days"], 7);
    assert_eq!(policy.body["finished_jobs_days"], 30);
    assert_eq!(policy.body["request_log_days"], 30);
    assert_eq!(policy.body["bounds"]["agent_executions"]["min"], 180);

    for (body, code) in [
        (
            json!({ "agent_executions_days": 179 }),
            "retention_too_short",
        ),
        (
            json!({ "agent_executions_days": 30 }),
            "retention_too_short",
        ),
        (json!({ "audit_log_days": 364 }), "retention_too_short"),
        (json!({ "exports_days": 8 }), "retention_too_long"),
        (json!({ "finished_jobs_days": 31 }), "retention_too_long"),
        (json!({ "request_log_days": 31 }), "retention_too_long"),
        (json!({ "request_log_days": 0 }), "retention_too_short"),
        (
            json!({ "closed_conversations_days": 0 }),
            "retention_too_short",
        ),
        (json!({ "retain_forever": true }), "invalid_body"),
        (json!({ "exports_days": "seven" }), "invalid_body"),
    ] {
        let resp = app
            .send(
                put("/api/v1/retention/policy")
                    .by(&owner)
                    .json(body.clone()),
            )
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            resp.body
        );
        assert_eq!(resp.error_code(), code, "{body}");
    }
    let refused = app
        .send(
            put("/api/v1/retention/policy")
                .by(&owner)
                .json(json!({ "agent_executions_days": 90 })),
        )
        .await;
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("only be raised"));
    assert_eq!(app.count("SELECT count(*) FROM retention_policy").await, 0);
    assert!(app
        .audit_events(owner.tenant_id, "retention.policy_changed")
        .await
        .is_empty());

    let changed = app
        .send(put("/api/v1/retention/policy").by(&owner).json(json!({
            "agent_executions_days": 400, "closed_conversations_days": 30, "exports_days": 3
        })))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["agent_executions_days"], 400);
    assert_eq!(changed.body["audit_log_days"], 365, "untouched");
    let events = app
        .audit_events(owner.tenant_id, "retention.policy_changed")
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["before"]["agent_executions_days"], 180);
    assert_eq!(events[0]["after"]["agent_executions_days"], 400);
    assert_eq!(
        events[0]["before"]["closed_conversations_days"],
        Value::Null
    );
    assert_eq!(events[0]["after"]["closed_conversations_days"], 30);

    // null keeps closed conversations again.
    let cleared = app
        .send(
            put("/api/v1/retention/policy")
                .by(&owner)
                .json(json!({ "closed_conversations_days": null })),
        )
        .await;
    assert_eq!(cleared.body["closed_conversations_days"], Value::Null);
    assert_eq!(cleared.body["agent_executions_days"], 400);

    // An auditor may read the audit log but not manage retention.
    let auditor = app.join(&owner, "auditor").await;
    let resp = app
        .send(Req::get("/api/v1/retention/policy").by(&auditor))
        .await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
}

/// Moves the first `n` events of a tenant's chain `days` into the past and re-links the whole
/// chain, as if they had been written then.
async fn age_audit_prefix(app: &TestApp, tenant: Uuid, n: i64, days: i32) {
    let mut conn = app.superuser().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET session_replication_role = replica;
         UPDATE audit_event SET occurred_at = occurred_at - interval '{days} days'
          WHERE tenant_id = '{tenant}' AND seq <= {n};
         DO $$
         DECLARE r record; prev bytea := decode(repeat('00', 32), 'hex');
         BEGIN
             FOR r IN SELECT seq FROM audit_event WHERE tenant_id = '{tenant}' ORDER BY seq LOOP
                 UPDATE audit_event SET prev_hash = prev WHERE tenant_id = '{tenant}' AND seq = r.seq;
                 UPDATE audit_event e SET hash = sha256(prev || audit_canonical(e))
                  WHERE tenant_id = '{tenant}' AND seq = r.seq RETURNING hash INTO prev;
             END LOOP;
             UPDATE audit_chain_head SET hash = prev WHERE tenant_id = '{tenant}';
         END $$;
         SET session_replication_role = origin;"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
}

async fn verify(app: &TestApp, who: &Member) -> Value {
    let resp = app.send(Req::get("/api/v1/audit/verify").by(who)).await;
    assert_eq!(resp.status, StatusCode::OK);
    resp.body
}

// proves: RET-1, AUD-3
#[tokio::test]
async fn after_an_audit_log_purge_the_chain_still_verifies() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    for role in ["agent", "auditor"] {
        app.join(&owner, role).await;
    }
    age_audit_prefix(&app, owner.tenant_id, 4, 400).await;
    assert_eq!(
        verify(&app, &owner).await["valid"],
        true,
        "the aged chain holds"
    );

    let report = run(&app, &owner).await;
    assert_eq!(class(&report, "audit_log")["count"], 4, "{report}");
    let after = verify(&app, &owner).await;
    assert_eq!(after["valid"], true, "{after}");
    assert_eq!(after["first_seq"], 5);
    let events = purged_events(&app, owner.tenant_id, "audit_log").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["after"]["count"], 4);
    assert_eq!(
        app.audit_events(owner.tenant_id, "audit.purged")
            .await
            .len(),
        1
    );
}

// proves: RET-1
#[tokio::test]
async fn the_audit_purge_stops_before_the_oldest_event_about_a_held_contact() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let contact = app
        .send(
            Req::post("/api/v1/contacts")
                .by(&owner)
                .json(json!({ "name": "Held" })),
        )
        .await
        .uuid("/id");
    let held_seq = app
        .count(&format!(
            "SELECT seq FROM audit_event WHERE action = 'contact.created' AND entity_id = '{contact}'"
        ))
        .await;
    app.join(&owner, "agent").await;
    app.join(&owner, "auditor").await;
    let aged = held_seq + 3;
    age_audit_prefix(&app, owner.tenant_id, aged, 400).await;
    let hold = app
        .send(Req::post("/api/v1/legal-holds").by(&owner).json(
            json!({ "entity_type": "contact", "entity_id": contact, "reason": "pending lawsuit" }),
        ))
        .await;
    assert_eq!(hold.status, StatusCode::CREATED, "{}", hold.body);

    let report = run(&app, &owner).await;
    let audit = class(&report, "audit_log");
    assert_eq!(audit["count"], held_seq - 1, "{report}");
    assert_eq!(audit["held"], aged - held_seq + 1, "{report}");
    let after = verify(&app, &owner).await;
    assert_eq!(after["valid"], true, "{after}");
    assert_eq!(after["first_seq"], held_seq);

    // Released, the rest of the aged prefix goes on the next run.
    let released = app
        .send(Req::delete(format!("/api/v1/legal-holds/{}", hold.uuid("/id"))).by(&owner))
        .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    let report = run(&app, &owner).await;
    assert_eq!(class(&report, "audit_log")["count"], aged - held_seq + 1);
    let after = verify(&app, &owner).await;
    assert_eq!(after["valid"], true, "{after}");
    assert_eq!(after["first_seq"], aged + 1);
}

// proves: RET-1, AGT-9
#[tokio::test]
async fn a_legal_hold_on_a_contact_keeps_its_messages_and_executions_until_it_is_released() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://acme.example").await;
    let (held_conv, held_contact) = conversation(&app, &owner, inbox, "keep me").await;
    let (free_conv, _) = conversation(&app, &owner, inbox, "let me go").await;
    for conv in [held_conv, free_conv] {
        resolve(&app, &owner, conv, 40).await;
    }
    let held_exec = execution(&app, held_conv, 200).await;
    let free_exec = execution(&app, free_conv, 200).await;
    let messages = |conv: Uuid| {
        let app = &app;
        async move {
            app.count(&format!(
                "SELECT count(*) FROM message WHERE conversation_id = '{conv}'"
            ))
            .await
        }
    };
    assert!(messages(held_conv).await >= 1);
    let set = app
        .send(
            put("/api/v1/retention/policy")
                .by(&owner)
                .json(json!({ "closed_conversations_days": 30 })),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);

    let hold = app
        .send(Req::post("/api/v1/legal-holds").by(&owner).json(
            json!({ "entity_type": "contact", "entity_id": held_contact, "reason": "regulator inquiry" }),
        ))
        .await;
    assert_eq!(hold.status, StatusCode::CREATED, "{}", hold.body);
    let hold_id = hold.uuid("/id");

    let report = run(&app, &owner).await;
    assert_eq!(class(&report, "agent_executions")["count"], 1, "{report}");
    assert_eq!(class(&report, "agent_executions")["held"], 1);
    assert!(
        class(&report, "closed_conversations")["held"]
            .as_i64()
            .unwrap()
            >= 1
    );
    assert!(exists(&app, "agent_execution", held_exec).await);
    assert!(!exists(&app, "agent_execution", free_exec).await);
    assert!(messages(held_conv).await >= 1, "held messages were purged");
    assert_eq!(messages(free_conv).await, 0);
    let purged = purged_events(&app, owner.tenant_id, "closed_conversations").await;
    assert_eq!(purged.len(), 1);
    assert!(purged[0]["after"]["count"].as_i64().unwrap() >= 1);

    // Released: kept as history, and the next purge takes what it held.
    let released = app
        .send(Req::delete(format!("/api/v1/legal-holds/{hold_id}")).by(&owner))
        .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    assert_eq!(
        released.body["released_by"],
        json!(owner.member_id.to_string())
    );
    let again = app
        .send(Req::delete(format!("/api/v1/legal-holds/{hold_id}")).by(&owner))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "hold_already_released");
    let holds = app.send(Req::get("/api/v1/legal-holds").by(&owner)).await;
    assert_eq!(holds.body.as_array().unwrap().len(), 1);
    assert!(holds.body[0]["released_at"].is_string());

    run(&app, &owner).await;
    assert!(!exists(&app, "agent_execution", held_exec).await);
    assert_eq!(messages(held_conv).await, 0);
    assert!(
        exists(&app, "conversation", held_conv).await,
        "the conversation itself stays"
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "legal_hold.placed")
            .await
            .len(),
        1
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "legal_hold.released")
            .await
            .len(),
        1
    );
}

// proves: RET-1
#[tokio::test]
async fn a_hold_on_a_conversation_keeps_only_that_conversation() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://acme.example").await;
    let (conv, _) = conversation(&app, &owner, inbox, "hello").await;
    let (other, _) = conversation(&app, &owner, inbox, "hi").await;
    let kept = execution(&app, conv, 365).await;
    let gone = execution(&app, other, 365).await;
    let hold = app
        .send(Req::post("/api/v1/legal-holds").by(&owner).json(
            json!({ "entity_type": "conversation", "entity_id": conv, "reason": "complaint" }),
        ))
        .await;
    assert_eq!(hold.status, StatusCode::CREATED, "{}", hold.body);
    // Closed-conversation retention on: the held conversation keeps its messages too.
    resolve(&app, &owner, conv, 40).await;
    resolve(&app, &owner, other, 40).await;
    let changed = app
        .send(
            put("/api/v1/retention/policy")
                .by(&owner)
                .json(json!({ "closed_conversations_days": 30 })),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let messages = |c: Uuid| format!("SELECT count(*) FROM message WHERE conversation_id = '{c}'");
    let held_messages = app.count(&messages(conv)).await;
    assert!(held_messages > 0);
    let report = run(&app, &owner).await;
    assert!(exists(&app, "agent_execution", kept).await);
    assert!(!exists(&app, "agent_execution", gone).await);
    assert_eq!(app.count(&messages(conv)).await, held_messages);
    assert_eq!(app.count(&messages(other)).await, 0);
    assert_eq!(
        class(&report, "closed_conversations")["held"],
        held_messages
    );
}

// proves: RET-1
#[tokio::test]
async fn bad_legal_hold_requests_are_refused_and_create_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let other = app.signup("other").await;
    let contact = app
        .send(
            Req::post("/api/v1/contacts")
                .by(&owner)
                .json(json!({ "name": "C" })),
        )
        .await
        .uuid("/id");
    let foreign = app
        .send(
            Req::post("/api/v1/contacts")
                .by(&other)
                .json(json!({ "name": "F" })),
        )
        .await
        .uuid("/id");
    for (body, status, code) in [
        (
            json!({ "entity_type": "account", "entity_id": contact, "reason": "x" }),
            StatusCode::BAD_REQUEST,
            "invalid_entity_type",
        ),
        (
            json!({ "entity_type": "contact", "entity_id": contact, "reason": "  " }),
            StatusCode::BAD_REQUEST,
            "invalid_reason",
        ),
        (
            json!({ "entity_type": "contact", "entity_id": "nope", "reason": "x" }),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({ "entity_type": "contact", "entity_id": foreign, "reason": "x" }),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({ "entity_type": "conversation", "entity_id": contact, "reason": "x" }),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        let resp = app
            .send(
                Req::post("/api/v1/legal-holds")
                    .by(&owner)
                    .json(body.clone()),
            )
            .await;
        assert_eq!(resp.status, status, "{body}: {}", resp.body);
        assert_eq!(resp.error_code(), code, "{body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM legal_hold").await, 0);
    assert!(app
        .audit_events(owner.tenant_id, "legal_hold.placed")
        .await
        .is_empty());
}

// proves: RET-1
#[tokio::test]
async fn the_preview_reports_counts_and_held_rows_and_deletes_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://acme.example").await;
    let (held_conv, held_contact) = conversation(&app, &owner, inbox, "one").await;
    let (free_conv, _) = conversation(&app, &owner, inbox, "two").await;
    execution(&app, held_conv, 200).await;
    execution(&app, free_conv, 200).await;
    execution(&app, free_conv, 10).await;
    let mut conn = app.superuser().await;
    sqlx::query(
        "INSERT INTO job (id, tenant_id, kind, idempotency_key, status, finished_at)
         VALUES ($1, $2, 'message.send', 'old-job', 'done', now() - interval '31 days')",
    )
    .bind(Uuid::new_v4())
    .bind(owner.tenant_id)
    .execute(&mut conn)
    .await
    .unwrap();
    app.send(
        Req::post("/api/v1/legal-holds")
            .by(&owner)
            .json(json!({ "entity_type": "contact", "entity_id": held_contact, "reason": "hold" })),
    )
    .await;

    let before = app.count("SELECT count(*) FROM agent_execution").await;
    let preview = app
        .send(Req::get("/api/v1/retention/preview").by(&owner))
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    let executions = class(&preview.body, "agent_executions");
    assert_eq!(executions["count"], 1, "{}", preview.body);
    assert_eq!(executions["held"], 1);
    assert!(executions["cutoff"].is_string());
    assert_eq!(class(&preview.body, "finished_jobs")["count"], 1);
    let closed = class(&preview.body, "closed_conversations");
    assert!(closed["cutoff"].is_null(), "kept by default: {closed}");
    assert_eq!(closed["count"], 0);

    assert_eq!(
        app.count("SELECT count(*) FROM agent_execution").await,
        before
    );
    assert_eq!(
        app.count("SELECT count(*) FROM job WHERE idempotency_key = 'old-job'")
            .await,
        1
    );
    assert!(app
        .audit_events(owner.tenant_id, "retention.purged")
        .await
        .is_empty());

    // The run then does what the preview said.
    let report = run(&app, &owner).await;
    assert_eq!(class(&report, "agent_executions")["count"], 1);
    assert_eq!(class(&report, "finished_jobs")["count"], 1);
    assert_eq!(
        purged_events(&app, owner.tenant_id, "finished_jobs")
            .await
            .len(),
        1
    );
}

// proves: DSR-7
#[tokio::test]
async fn an_export_older_than_seven_days_is_deleted_by_the_retention_run_and_its_download_answers_410(
) {
    let app = TestApp::spawn_with(|c| c.worker.poll = std::time::Duration::from_millis(50)).await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let created = app
        .send(
            Req::post("/api/v1/audit/exports")
                .by(&owner)
                .json(json!({ "format": "csv" })),
        )
        .await;
    let id = created.uuid("/id");
    let expires: time::OffsetDateTime = time::OffsetDateTime::parse(
        created.body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let days = (expires - time::OffsetDateTime::now_utc()).whole_hours();
    assert!((167..=168).contains(&days), "expires in {days} h");
    eventually(20, "the export to finish", || async {
        let resp = app
            .send(Req::get(format!("/api/v1/audit/exports/{id}")).by(&owner))
            .await;
        (resp.body["status"] == "done").then_some(())
    })
    .await;
    let download = format!("/api/v1/audit/exports/{id}/download");
    assert_eq!(
        app.send(Req::get(&download).by(&owner)).await.status,
        StatusCode::OK
    );

    let mut conn = app.superuser().await;
    sqlx::query(
        "UPDATE audit_export SET created_at = now() - interval '8 days',
                                 expires_at = now() - interval '1 day' WHERE id = $1",
    )
    .bind(id)
    .execute(&mut conn)
    .await
    .unwrap();
    let report = run(&app, &owner).await;
    assert_eq!(class(&report, "exports")["count"], 1, "{report}");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM audit_export_chunk WHERE export_id = '{id}'"
        ))
        .await,
        0,
        "the content is gone"
    );
    let gone = app.send(Req::get(&download).by(&owner)).await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert_eq!(gone.error_code(), "gone");
    let shown = app
        .send(Req::get(format!("/api/v1/audit/exports/{id}")).by(&owner))
        .await;
    assert_eq!(shown.body["status"], "expired");
    assert!(shown.body["purged_at"].is_string());
    assert_eq!(
        purged_events(&app, owner.tenant_id, "exports").await.len(),
        1
    );
}

// proves: RET-1, AGT-9
#[tokio::test]
async fn housekeeping_runs_the_purge_for_every_tenant_on_its_interval() {
    let app =
        TestApp::spawn_with(|c| c.retention_interval = std::time::Duration::from_millis(200)).await;
    let mut olds = Vec::new();
    for slug in ["alpha", "bravo"] {
        let owner = app.signup(slug).await;
        let inbox = app.webchat_inbox(&owner, "https://x.example").await;
        let (conv, _) = conversation(&app, &owner, inbox, "hello").await;
        olds.push((owner.tenant_id, execution(&app, conv, 181).await));
    }
    app.start_workers();
    let ids: Vec<String> = olds.iter().map(|(_, id)| format!("'{id}'")).collect();
    let sql = format!(
        "SELECT count(*) FROM agent_execution WHERE id IN ({})",
        ids.join(",")
    );
    eventually(20, "the scheduled purge", || async {
        (app.count(&sql).await == 0).then_some(())
    })
    .await;
    for (tenant, _) in olds {
        assert_eq!(
            purged_events(&app, tenant, "agent_executions").await.len(),
            1
        );
    }
}

/// Opens a member's human-review request on `conversation` and rejects it; returns the item.
async fn decided_review(app: &TestApp, owner: &Member, conversation: Uuid, note: &str) -> Uuid {
    let opened = app
        .send(Req::post("/api/v1/reviews").by(owner).json(json!({
            "kind": "human_review", "conversation_id": conversation, "note": note
        })))
        .await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    let id = opened.uuid("/id");
    let rejected = app
        .send(
            Req::post(format!("/api/v1/reviews/{id}/reject"))
                .by(owner)
                .json(json!({ "reason": "not a decision" })),
        )
        .await;
    assert_eq!(rejected.status, StatusCode::OK, "{}", rejected.body);
    id
}

async fn review_row(app: &TestApp, id: Uuid) -> Value {
    let mut conn = app.superuser().await;
    sqlx::query_scalar::<_, Value>("SELECT to_jsonb(r) FROM review_item r WHERE id = $1")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

// proves: RET-1
#[tokio::test]
async fn decided_review_items_lose_their_content_with_their_conversation_unless_held() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://acme.example").await;
    let (gone_conv, _) = conversation(&app, &owner, inbox, "my card 4111 is wrong").await;
    let (held_conv, _) = conversation(&app, &owner, inbox, "hello").await;
    let gone = decided_review(
        &app,
        &owner,
        gone_conv,
        "Customer says: my address is Rua X 1",
    )
    .await;
    let held = decided_review(&app, &owner, held_conv, "Customer says: call me").await;
    // Still pending: not decided, so its content stays whatever its age.
    let pending = app
        .send(Req::post("/api/v1/reviews").by(&owner).json(json!({
            "kind": "human_review", "conversation_id": gone_conv, "note": "still open"
        })))
        .await
        .uuid("/id");
    resolve(&app, &owner, gone_conv, 40).await;
    resolve(&app, &owner, held_conv, 40).await;
    app.send(Req::post("/api/v1/legal-holds").by(&owner).json(
        json!({ "entity_type": "conversation", "entity_id": held_conv, "reason": "dispute" }),
    ))
    .await;
    let changed = app
        .send(
            put("/api/v1/retention/policy")
                .by(&owner)
                .json(json!({ "closed_conversations_days": 30 })),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK);

    let preview = app
        .send(Req::get("/api/v1/retention/preview").by(&owner))
        .await;
    let closed = class(&preview.body, "closed_conversations");
    assert_eq!(closed["review_items"], 1, "{}", preview.body);
    assert!(closed["count"].as_i64().unwrap() > 0);
    assert!(review_row(&app, gone).await["content_purged_at"].is_null());

    let report = run(&app, &owner).await;
    assert_eq!(class(&report, "closed_conversations")["review_items"], 1);
    let blanked = review_row(&app, gone).await;
    assert!(blanked["content_purged_at"].is_string(), "{blanked}");
    assert_eq!(blanked["request_note"], Value::Null);
    assert_eq!(
        blanked["proposal"],
        json!({}),
        "the request and decision context go"
    );
    // The fact and the decision stay.
    assert_eq!(blanked["status"], "rejected");
    assert_eq!(blanked["kind"], "human_review");
    assert_eq!(blanked["decision_reason"], "not a decision");
    assert_eq!(blanked["decided_by"], owner.member_id.to_string());
    let shown = app
        .send(Req::get(format!("/api/v1/reviews/{gone}")).by(&owner))
        .await;
    assert!(
        shown.body["content_purged_at"].is_string(),
        "{}",
        shown.body
    );
    assert!(shown.body["request_note"].is_null());
    assert_eq!(shown.body["status"], "rejected");
    let kept = review_row(&app, held).await;
    assert_eq!(kept["request_note"], "Customer says: call me");
    assert!(kept["content_purged_at"].is_null());
    assert_eq!(
        review_row(&app, pending).await["request_note"],
        "still open"
    );
    let events = purged_events(&app, owner.tenant_id, "closed_conversations").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["after"]["review_items"], 1);
}

// proves: AGT-9
#[tokio::test]
async fn a_decided_review_item_older_than_the_executions_period_loses_its_content() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://acme.example").await;
    let (conv, _) = conversation(&app, &owner, inbox, "hello").await;
    let old = decided_review(&app, &owner, conv, "old words").await;
    let young = decided_review(&app, &owner, conv, "young words").await;
    // Date the old decision back, past the final-item guard, as if it were made then.
    let mut conn = app.superuser().await;
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE review_item SET decided_at = now() - interval '181 days' WHERE id = $1")
        .bind(old)
        .execute(&mut conn)
        .await
        .unwrap();
    let report = run(&app, &owner).await;
    assert_eq!(class(&report, "agent_executions")["review_items"], 1);
    assert_eq!(review_row(&app, old).await["request_note"], Value::Null);
    assert_eq!(review_row(&app, young).await["request_note"], "young words");
    let events = purged_events(&app, owner.tenant_id, "agent_executions").await;
    assert_eq!(events[0]["after"]["review_items"], 1);
    assert_eq!(events[0]["after"]["count"], 0);
}

/// Writes `n` request-log rows of `tenant`, `days` old.
async fn old_requests(app: &TestApp, tenant: Uuid, member: Uuid, n: i64, days: i32) {
    let mut conn = app.superuser().await;
    sqlx::query(
        "INSERT INTO request_log (id, tenant_id, member_id, method, route, status, duration_ms, occurred_at)
         SELECT gen_random_uuid(), $1, $2, 'GET', '/api/v1/reviews', 200, 1.5,
                now() - make_interval(days => $4) - make_interval(secs => g)
         FROM generate_series(1, $3) g",
    )
    .bind(tenant)
    .bind(member)
    .bind(n)
    .bind(days)
    .execute(&mut conn)
    .await
    .unwrap();
}

// proves: RET-1
#[tokio::test]
async fn request_log_entries_older_than_thirty_days_are_purged_and_the_purge_is_recorded() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let other = app.signup("globex").await;
    old_requests(&app, owner.tenant_id, owner.member_id, 3, 31).await;
    old_requests(&app, owner.tenant_id, owner.member_id, 2, 29).await;
    old_requests(&app, other.tenant_id, other.member_id, 4, 31).await;
    let count = |t: Uuid| {
        format!("SELECT count(*) FROM request_log WHERE tenant_id = '{t}' AND route = '/api/v1/reviews'")
    };

    let preview = app
        .send(Req::get("/api/v1/retention/preview").by(&owner))
        .await;
    assert_eq!(class(&preview.body, "request_log")["count"], 3);
    let report = run(&app, &owner).await;
    let log = class(&report, "request_log");
    assert_eq!(log["count"], 3, "{report}");
    assert_eq!(log["days"], 30);
    assert_eq!(app.count(&count(owner.tenant_id)).await, 2);
    assert_eq!(
        app.count(&count(other.tenant_id)).await,
        4,
        "another tenant's log is its own"
    );
    let events = purged_events(&app, owner.tenant_id, "request_log").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["after"]["count"], 3);
    assert_eq!(events[0]["after"]["cutoff"], log["cutoff"]);

    // A tenant may lower the period, never raise it past 30 days.
    let lowered = app
        .send(
            put("/api/v1/retention/policy")
                .by(&owner)
                .json(json!({ "request_log_days": 7 })),
        )
        .await;
    assert_eq!(lowered.status, StatusCode::OK, "{}", lowered.body);
    assert_eq!(class(&run(&app, &owner).await, "request_log")["count"], 2);
}

// proves: RET-1
#[tokio::test]
async fn a_purge_larger_than_one_run_reports_it_is_incomplete_and_the_next_run_continues() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let per_run = custodian::retention::BATCH * custodian::retention::MAX_BATCHES;
    old_requests(&app, owner.tenant_id, owner.member_id, per_run + 7, 40).await;
    let first = run(&app, &owner).await;
    let log = class(&first, "request_log");
    assert_eq!(log["count"], per_run, "{log}");
    assert_eq!(log["complete"], false);
    let events = purged_events(&app, owner.tenant_id, "request_log").await;
    assert_eq!(events[0]["after"]["complete"], false);
    let second = run(&app, &owner).await;
    let log = class(&second, "request_log");
    assert_eq!(log["count"], 7);
    assert_eq!(log["complete"], true);
    assert_eq!(
        app.count("SELECT count(*) FROM request_log WHERE route = '/api/v1/reviews'")
            .await,
        0
    );
    assert_eq!(
        purged_events(&app, owner.tenant_id, "request_log")
            .await
            .len(),
        2
    );
}

// proves: RET-1
#[tokio::test]
async fn the_preview_with_closed_conversation_retention_on_counts_messages_and_held_ones() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://acme.example").await;
    let (old, _) = conversation(&app, &owner, inbox, "old").await;
    let (held, held_contact) = conversation(&app, &owner, inbox, "held").await;
    let (recent, _) = conversation(&app, &owner, inbox, "recent").await;
    resolve(&app, &owner, old, 20).await;
    resolve(&app, &owner, held, 20).await;
    resolve(&app, &owner, recent, 5).await;
    app.send(
        Req::post("/api/v1/legal-holds")
            .by(&owner)
            .json(json!({ "entity_type": "contact", "entity_id": held_contact, "reason": "hold" })),
    )
    .await;
    app.send(
        put("/api/v1/retention/policy")
            .by(&owner)
            .json(json!({ "closed_conversations_days": 10 })),
    )
    .await;
    let messages = |c: Uuid| format!("SELECT count(*) FROM message WHERE conversation_id = '{c}'");
    let (n_old, n_held) = (
        app.count(&messages(old)).await,
        app.count(&messages(held)).await,
    );
    let preview = app
        .send(Req::get("/api/v1/retention/preview").by(&owner))
        .await;
    let closed = class(&preview.body, "closed_conversations");
    assert_eq!(closed["days"], 10);
    assert!(closed["cutoff"].is_string());
    assert_eq!(closed["count"], n_old, "{closed}");
    assert_eq!(closed["held"], n_held);
    // Nothing went.
    assert_eq!(app.count(&messages(old)).await, n_old);
    let report = run(&app, &owner).await;
    assert_eq!(class(&report, "closed_conversations")["count"], n_old);
    assert_eq!(app.count(&messages(old)).await, 0);
    assert_eq!(app.count(&messages(held)).await, n_held);
    assert!(app.count(&messages(recent)).await > 0);
}

/// The document states each period's bounds where a client reads them: the policy change's
/// minimum and maximum are the ones the server enforces, class by class.
#[tokio::test]
async fn the_documented_period_bounds_are_the_enforced_ones() {
    use custodian::retention::Class;
    let app = TestApp::spawn().await;
    let doc = app.send(Req::get("/api/openapi.json")).await.body;
    let change = &doc["components"]["schemas"]["RetentionPolicyChange"]["properties"];
    for class in Class::ALL {
        let bounds = class.bounds();
        let field = &change[format!("{}_days", class.as_str())];
        assert_eq!(field["minimum"], bounds.min, "{class:?}: {field}");
        assert_eq!(field["maximum"], bounds.max, "{class:?}: {field}");
    }
}
