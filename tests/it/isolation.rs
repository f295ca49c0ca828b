//! Tenant isolation (SEC-3): the tenant comes from the credential, every query is filtered by
//! it, row-level security backs the filter, and another tenant's id answers 404.

use std::collections::HashMap;

use axum::http::StatusCode;
use custodian::http::Access;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::common::{Req, TestApp};

// proves: SEC-3
#[tokio::test]
async fn every_tenant_scoped_route_answers_404_for_another_tenants_ids() {
    let app = TestApp::spawn().await;
    let a = app.signup("alpha").await;
    let b = app.signup("bravo").await;
    let b_agent = app.join(&b, "agent").await;
    let (b_token, b_secret) = app.token(&b, "agent").await;
    let b_invitation = app
        .send(
            Req::post("/api/v1/invitations")
                .by(&b)
                .json(json!({ "email": "new@bravo.example", "role": "agent" })),
        )
        .await
        .uuid("/id");
    let b_account = app
        .send(
            Req::post("/api/v1/accounts")
                .by(&b)
                .json(json!({ "name": "Bravo Customer Ltd" })),
        )
        .await
        .uuid("/id");
    let b_contact = app
        .send(
            Req::post("/api/v1/contacts")
                .by(&b)
                .json(json!({ "name": "Bruna", "email": "bruna@customer.example" })),
        )
        .await
        .uuid("/id");
    let b_inbox = app.webchat_inbox(&b, "https://bravo.example").await;
    let (_, b_conversation) = app.visitor_writes(b_inbox, "hello from B's visitor").await;
    let b_article = app
        .send(
            Req::post("/api/v1/knowledge/articles")
                .by(&b)
                .json(json!({ "title": "B's secret playbook", "body": "internal" })),
        )
        .await
        .uuid("/id");
    let b_action = app
        .send(Req::post("/api/v1/agent/actions").by(&b).json(json!({ "name": "b_refund", "description": "x", "target_url": "https://b.example/r", "secret": "s" })))
        .await
        .uuid("/id");
    let b_review = app
        .send(Req::post("/api/v1/reviews").by(&b).json(json!({
            "kind": "human_review", "conversation_id": b_conversation, "note": "B's customer disputes a refusal"
        })))
        .await
        .uuid("/id");
    let b_export = app
        .send(
            Req::post("/api/v1/audit/exports")
                .by(&b)
                .json(json!({ "format": "csv" })),
        )
        .await
        .uuid("/id");
    let b_hold = app
        .send(Req::post("/api/v1/legal-holds").by(&b).json(
            json!({ "entity_type": "contact", "entity_id": b_contact, "reason": "litigation" }),
        ))
        .await
        .uuid("/id");
    let b_request = app
        .send(Req::post("/api/v1/privacy/requests").by(&b).json(json!({
            "type": "access", "contact_id": b_contact, "requester": "data_subject",
            "identity_check": "document"
        })))
        .await
        .uuid("/id");
    let b_consent = app
        .send(
            Req::post(format!("/api/v1/contacts/{b_contact}/consents"))
                .by(&b)
                .json(
                    json!({ "purpose": "marketing", "legal_basis": "consent", "source": "form" }),
                ),
        )
        .await
        .uuid("/id");
    let b_canned = app
        .send(
            Req::post("/api/v1/canned-replies")
                .by(&b)
                .json(json!({ "shortcut": "thanks", "title": "Thanks", "body": "Thanks from B" })),
        )
        .await
        .uuid("/id");
    let b_ticket = app
        .send(Req::post("/api/v1/tickets").by(&b).json(
            json!({ "subject": "B's ticket", "conversation_id": b_conversation, "account_id": b_account }),
        ))
        .await
        .uuid("/id");
    let b_task = app
        .send(
            Req::post("/api/v1/tasks")
                .by(&b)
                .json(json!({ "title": "B's task", "ticket_id": b_ticket })),
        )
        .await
        .uuid("/id");
    let b_deal = app
        .send(Req::post("/api/v1/deals").by(&b).json(json!({
            "name": "B's deal", "value_minor": 5000, "currency": "EUR",
            "account_id": b_account, "contact_ids": [b_contact]
        })))
        .await
        .uuid("/id");
    let b_pipeline = app
        .send(Req::get(format!("/api/v1/deals/{b_deal}")).by(&b))
        .await
        .uuid("/pipeline_id");
    let b_execution = uuid::Uuid::new_v4();
    let b_job = uuid::Uuid::new_v4();
    let mut conn = app.superuser().await;
    sqlx::query(
        "INSERT INTO agent_execution (id, tenant_id, conversation_id, contact_id, provider, model, offline, outcome)
         SELECT $1, tenant_id, id, contact_id, 'offline', 'offline', true, 'replied' FROM conversation WHERE id = $2",
    )
    .bind(b_execution)
    .bind(b_conversation)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("INSERT INTO job (id, tenant_id, kind, idempotency_key, status) VALUES ($1, $2, 'message.send', $3, 'dead')")
        .bind(b_job)
        .bind(b.tenant_id)
        .bind(format!("test:{b_job}"))
        .execute(&mut conn)
        .await
        .unwrap();

    // Every path parameter any route takes, mapped to an object of tenant B. A new route with
    // a parameter not listed here fails this test until its foreign-id case is covered.
    let foreign: HashMap<&str, Uuid> = HashMap::from([
        ("member_id", b_agent.member_id),
        ("token_id", b_token),
        ("invitation_id", b_invitation),
        ("account_id", b_account),
        ("contact_id", b_contact),
        ("inbox_id", b_inbox),
        ("conversation_id", b_conversation),
        ("job_id", b_job),
        ("article_id", b_article),
        ("action_id", b_action),
        ("execution_id", b_execution),
        ("review_id", b_review),
        ("export_id", b_export),
        ("hold_id", b_hold),
        ("request_id", b_request),
        ("consent_id", b_consent),
        ("canned_reply_id", b_canned),
        ("ticket_id", b_ticket),
        ("task_id", b_task),
        ("deal_id", b_deal),
        ("pipeline_id", b_pipeline),
    ]);

    let mut checked = 0;
    for spec in app.state.routes().to_vec() {
        if spec.access == Access::Public || spec.params().next().is_none() {
            continue;
        }
        let path = spec
            .path
            .split('/')
            .map(
                |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => foreign
                        .get(name)
                        .unwrap_or_else(|| {
                            panic!("{} takes {{{name}}}: add tenant B's id for it", spec.path)
                        })
                        .to_string(),
                    None => seg.to_string(),
                },
            )
            .collect::<Vec<_>>()
            .join("/");
        // A's owner holds every permission and each route gets a body it would accept, so
        // nothing but isolation can stop the request.
        let body = valid_body(spec.method.as_str(), spec.path);
        let resp = app
            .send(spec_req(&spec.method, &path).by(&a).json(body))
            .await;
        assert_eq!(
            resp.status,
            StatusCode::NOT_FOUND,
            "{} {path}: {}",
            spec.method,
            resp.body
        );
        assert_eq!(resp.error_code(), "not_found");
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} routes with ids were checked");

    // Nothing of B changed: its agent still works, its token still works, its invitation stands.
    let me = app.send(Req::get("/api/v1/auth/me").by(&b_agent)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["role"], "agent");
    assert_eq!(
        app.send(Req::get("/api/v1/auth/me").bearer(&b_secret))
            .await
            .status,
        StatusCode::OK
    );
    let invitations = app.send(Req::get("/api/v1/invitations").by(&b)).await;
    assert_eq!(invitations.body.as_array().unwrap().len(), 1);
    let review = app
        .send(Req::get(format!("/api/v1/reviews/{b_review}")).by(&b))
        .await;
    assert_eq!(review.body["status"], "pending", "B's review was decided");
    assert_eq!(review.body["approvals"], 0);
    assert_eq!(review.body["assignee_id"], Value::Null);
    for path in [
        format!("/api/v1/accounts/{b_account}"),
        format!("/api/v1/contacts/{b_contact}"),
        format!("/api/v1/inboxes/{b_inbox}"),
        format!("/api/v1/conversations/{b_conversation}"),
    ] {
        assert_eq!(
            app.send(Req::get(&path).by(&b)).await.status,
            StatusCode::OK,
            "{path} was harmed"
        );
    }
    let conversation = app
        .send(Req::get(format!("/api/v1/conversations/{b_conversation}")).by(&b))
        .await;
    assert_eq!(conversation.body["conversation"]["status"], "open");
    assert_eq!(conversation.body["conversation"]["labels"], json!([]));
    let thread = app
        .send(Req::get(format!("/api/v1/conversations/{b_conversation}/messages")).by(&b))
        .await;
    assert_eq!(
        thread.body["items"].as_array().unwrap().len(),
        1,
        "a message was added to B's thread"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM job WHERE id = '{b_job}' AND status = 'dead'"
        ))
        .await,
        1
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM privacy_request WHERE id = '{b_request}' AND status = 'received'"
        ))
        .await
            + app.count("SELECT count(*) FROM privacy_request_note").await,
        1,
        "B's request was changed by A"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM consent WHERE revoked_at IS NULL")
            .await,
        1,
        "B's consent was revoked, or one was added, by A"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM legal_hold WHERE id = '{b_hold}' AND released_at IS NULL"
        ))
        .await,
        1,
        "B's legal hold was released by A"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM ticket WHERE id = '{b_ticket}' AND subject = 'B''s ticket' AND status = 'new'"
        ))
        .await
            + app.count("SELECT count(*) FROM ticket_comment").await,
        1,
        "B's ticket was changed by A"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM task WHERE id = '{b_task}' AND title = 'B''s task' AND completed_at IS NULL"
        ))
        .await,
        1,
        "B's task was changed by A"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM deal WHERE id = '{b_deal}' AND name = 'B''s deal' AND status = 'open'"
        ))
        .await
            + app.count("SELECT count(*) FROM deal_stage_change").await
            + app.count("SELECT count(*) FROM deal_contact").await,
        3,
        "B's deal was changed by A"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM pipeline_stage WHERE pipeline_id = '{b_pipeline}'"
        ))
        .await
            + app
                .count(&format!(
                    "SELECT count(*) FROM pipeline WHERE id = '{b_pipeline}' AND name = 'Sales'"
                ))
                .await,
        5,
        "B's pipeline was changed by A"
    );
}

/// Everything a request with a foreign id in its body could touch, as one fingerprint taken
/// past row-level security.
async fn fingerprint(app: &TestApp) -> String {
    let mut conn = app.superuser().await;
    let mut parts = Vec::new();
    for table in [
        "member",
        "invitation",
        "partner_org",
        "account",
        "contact",
        "conversation",
        "message",
        "review_item",
        "legal_hold",
        "audit_event",
        "job",
        "privacy_request",
        "ticket",
        "ticket_conversation",
        "ticket_comment",
        "task",
        "pipeline",
        "pipeline_stage",
        "deal",
        "deal_contact",
        "deal_stage_change",
    ] {
        let digest: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {table} t"
        )))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        parts.push(format!("{table}:{}", digest.unwrap_or_default()));
    }
    parts.join(" ")
}

// proves: SEC-3
#[tokio::test]
async fn another_tenants_ids_in_request_bodies_answer_404_and_change_nothing() {
    let app = TestApp::spawn().await;
    let a = app.signup("alpha").await;
    let b = app.signup("bravo").await;

    // Tenant B's objects, whose ids A will name in bodies.
    let b_agent = app.join(&b, "agent").await;
    let b_reviewer = app.join(&b, "reviewer").await;
    let b_partner_org = app
        .send(
            Req::post("/api/v1/partner-orgs")
                .by(&b)
                .json(json!({ "name": "Bravo's reseller" })),
        )
        .await
        .uuid("/id");
    let b_account = app
        .send(
            Req::post("/api/v1/accounts")
                .by(&b)
                .json(json!({ "name": "Bravo Customer Ltd" })),
        )
        .await
        .uuid("/id");
    let b_contact = app
        .send(
            Req::post("/api/v1/contacts")
                .by(&b)
                .json(json!({ "name": "Bruna" })),
        )
        .await
        .uuid("/id");
    let b_inbox = app.webchat_inbox(&b, "https://bravo.example").await;
    let (_, b_conversation) = app.visitor_writes(b_inbox, "hello from B's visitor").await;
    let b_action = app
        .send(Req::post("/api/v1/agent/actions").by(&b).json(json!({
            "name": "b_refund", "description": "x", "target_url": "https://b.example/r", "secret": "s"
        })))
        .await
        .uuid("/id");
    let b_request = app
        .send(Req::post("/api/v1/privacy/requests").by(&b).json(json!({
            "type": "erasure", "contact_id": b_contact, "requester": "data_subject",
            "identity_check": "document"
        })))
        .await
        .uuid("/id");
    let b_execution = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO agent_execution (id, tenant_id, conversation_id, contact_id, provider, model, offline, outcome)
         SELECT $1, tenant_id, id, contact_id, 'offline', 'offline', true, 'replied' FROM conversation WHERE id = $2",
    )
    .bind(b_execution)
    .bind(b_conversation)
    .execute(&mut app.superuser().await)
    .await
    .unwrap();

    // Tenant A's own objects, which the requests act on: only the foreign id is wrong.
    let a_agent = app.join(&a, "agent").await;
    let a_account = app
        .send(
            Req::post("/api/v1/accounts")
                .by(&a)
                .json(json!({ "name": "Alpha Customer" })),
        )
        .await
        .uuid("/id");
    let a_contact = app
        .send(
            Req::post("/api/v1/contacts")
                .by(&a)
                .json(json!({ "name": "Ana" })),
        )
        .await
        .uuid("/id");
    let a_inbox = app.webchat_inbox(&a, "https://alpha.example").await;
    let (_, a_conversation) = app.visitor_writes(a_inbox, "hello from A's visitor").await;
    let a_review = app
        .send(Req::post("/api/v1/reviews").by(&a).json(json!({
            "kind": "human_review", "conversation_id": a_conversation, "note": "please look"
        })))
        .await
        .uuid("/id");

    let b_ticket = app
        .send(
            Req::post("/api/v1/tickets")
                .by(&b)
                .json(json!({ "subject": "B's ticket" })),
        )
        .await
        .uuid("/id");
    let a_ticket = app
        .send(
            Req::post("/api/v1/tickets")
                .by(&a)
                .json(json!({ "subject": "A's ticket" })),
        )
        .await
        .uuid("/id");
    let a_task = app
        .send(
            Req::post("/api/v1/tasks")
                .by(&a)
                .json(json!({ "title": "A's task" })),
        )
        .await
        .uuid("/id");
    let b_deal = app
        .send(Req::post("/api/v1/deals").by(&b).json(json!({
            "name": "B's deal", "value_minor": 100, "currency": "EUR"
        })))
        .await;
    let (b_deal, b_pipeline, b_stage) = (
        b_deal.uuid("/id"),
        b_deal.uuid("/pipeline_id"),
        b_deal.uuid("/stage_id"),
    );
    let a_deal = app
        .send(Req::post("/api/v1/deals").by(&a).json(json!({
            "name": "A's deal", "value_minor": 100, "currency": "EUR"
        })))
        .await
        .uuid("/id");
    let a_pipeline = app
        .send(Req::get(format!("/api/v1/deals/{a_deal}")).by(&a))
        .await
        .uuid("/pipeline_id");

    // Every request-body field that names an object, with tenant B's id in it.
    let cases: Vec<(Req, &str)> = vec![
        (
            Req::post("/api/v1/invitations").json(json!({
                "email": "reseller@alpha.example", "role": "partner", "partner_org_id": b_partner_org
            })),
            "invitation partner_org_id",
        ),
        (
            Req::patch(format!("/api/v1/members/{}", a_agent.member_id))
                .json(json!({ "role": "partner", "partner_org_id": b_partner_org })),
            "member partner_org_id with the partner role",
        ),
        (
            Req::patch(format!("/api/v1/members/{}", a_agent.member_id))
                .json(json!({ "partner_org_id": b_partner_org, "display_name": "Renamed" })),
            "member partner_org_id alone",
        ),
        (
            Req::post("/api/v1/reviews").json(json!({
                "kind": "human_review", "conversation_id": b_conversation, "note": "B's customer"
            })),
            "review conversation_id",
        ),
        (
            Req::post("/api/v1/reviews").json(json!({
                "kind": "human_review", "conversation_id": a_conversation,
                "execution_id": b_execution, "note": "B's decision"
            })),
            "review execution_id",
        ),
        (
            Req::post("/api/v1/reviews").json(json!({
                "kind": "action", "conversation_id": a_conversation, "action_id": b_action
            })),
            "review action_id",
        ),
        (
            Req::post(format!("/api/v1/reviews/{a_review}/assign"))
                .json(json!({ "assignee_id": b_reviewer.member_id })),
            "review assignee_id",
        ),
        (
            Req::post(format!("/api/v1/conversations/{a_conversation}/assign"))
                .json(json!({ "assignee_id": b_agent.member_id })),
            "conversation assignee_id",
        ),
        (
            Req::post("/api/v1/legal-holds").json(json!({
                "entity_type": "contact", "entity_id": b_contact, "reason": "litigation"
            })),
            "legal hold entity_id (contact)",
        ),
        (
            Req::post("/api/v1/legal-holds").json(json!({
                "entity_type": "conversation", "entity_id": b_conversation, "reason": "litigation"
            })),
            "legal hold entity_id (conversation)",
        ),
        (
            Req::post("/api/v1/accounts")
                .json(json!({ "name": "Resold", "partner_org_id": b_partner_org })),
            "account partner_org_id on create",
        ),
        (
            Req::patch(format!("/api/v1/accounts/{a_account}"))
                .json(json!({ "partner_org_id": b_partner_org })),
            "account partner_org_id on update",
        ),
        (
            Req::post("/api/v1/contacts").json(json!({ "name": "Bia", "account_id": b_account })),
            "contact account_id on create",
        ),
        (
            Req::patch(format!("/api/v1/contacts/{a_contact}"))
                .json(json!({ "account_id": b_account })),
            "contact account_id on update",
        ),
        (
            Req::post("/api/v1/privacy/requests").json(json!({
                "type": "access", "contact_id": b_contact, "requester": "data_subject",
                "identity_check": "document"
            })),
            "privacy request contact_id",
        ),
        (
            Req::post("/api/v1/tickets").json(json!({ "subject": "x", "requester_id": b_contact })),
            "ticket requester_id on create",
        ),
        (
            Req::post("/api/v1/tickets").json(json!({ "subject": "x", "account_id": b_account })),
            "ticket account_id on create",
        ),
        (
            Req::post("/api/v1/tickets")
                .json(json!({ "subject": "x", "conversation_id": b_conversation })),
            "ticket conversation_id on create",
        ),
        (
            Req::post("/api/v1/tickets")
                .json(json!({ "subject": "x", "assignee_id": b_agent.member_id })),
            "ticket assignee_id on create",
        ),
        (
            Req::patch(format!("/api/v1/tickets/{a_ticket}"))
                .json(json!({ "assignee_id": b_agent.member_id })),
            "ticket assignee_id on update",
        ),
        (
            Req::patch(format!("/api/v1/tickets/{a_ticket}"))
                .json(json!({ "requester_id": b_contact })),
            "ticket requester_id on update",
        ),
        (
            Req::patch(format!("/api/v1/tickets/{a_ticket}"))
                .json(json!({ "conversation_ids": [b_conversation] })),
            "ticket conversation_ids on update",
        ),
        (
            Req::post(format!("/api/v1/tickets/{a_ticket}/comments"))
                .json(json!({ "body": "x", "public": true, "conversation_id": b_conversation })),
            "ticket comment conversation_id",
        ),
        (
            Req::post("/api/v1/tickets/bulk-status")
                .json(json!({ "ticket_ids": [a_ticket, b_ticket], "status": "solved" })),
            "bulk status ticket_ids",
        ),
        (
            Req::post("/api/v1/tickets/bulk-assign")
                .json(json!({ "ticket_ids": [a_ticket], "assignee_id": b_agent.member_id })),
            "bulk assign assignee_id",
        ),
        (
            Req::post("/api/v1/tasks").json(json!({ "title": "x", "ticket_id": b_ticket })),
            "task ticket_id on create",
        ),
        (
            Req::post("/api/v1/tasks").json(json!({ "title": "x", "contact_id": b_contact })),
            "task contact_id on create",
        ),
        (
            Req::patch(format!("/api/v1/tasks/{a_task}"))
                .json(json!({ "account_id": b_account })),
            "task account_id on update",
        ),
        (
            Req::patch(format!("/api/v1/tasks/{a_task}"))
                .json(json!({ "assignee_id": b_agent.member_id })),
            "task assignee_id on update",
        ),
        (
            Req::post("/api/v1/tasks").json(json!({ "title": "x", "deal_id": b_deal })),
            "task deal_id on create",
        ),
        (
            Req::patch(format!("/api/v1/tasks/{a_task}")).json(json!({ "deal_id": b_deal })),
            "task deal_id on update",
        ),
        (
            Req::post("/api/v1/deals").json(json!({
                "name": "x", "value_minor": 1, "currency": "EUR", "account_id": b_account
            })),
            "deal account_id on create",
        ),
        (
            Req::post("/api/v1/deals").json(json!({
                "name": "x", "value_minor": 1, "currency": "EUR", "contact_ids": [b_contact]
            })),
            "deal contact_ids on create",
        ),
        (
            Req::post("/api/v1/deals").json(json!({
                "name": "x", "value_minor": 1, "currency": "EUR", "owner_id": b_agent.member_id
            })),
            "deal owner_id on create",
        ),
        (
            Req::post("/api/v1/deals").json(json!({
                "name": "x", "value_minor": 1, "currency": "EUR", "pipeline_id": b_pipeline
            })),
            "deal pipeline_id on create",
        ),
        (
            Req::post("/api/v1/deals").json(json!({
                "name": "x", "value_minor": 1, "currency": "EUR", "stage_id": b_stage
            })),
            "deal stage_id on create",
        ),
        (
            Req::patch(format!("/api/v1/deals/{a_deal}")).json(json!({ "stage_id": b_stage })),
            "deal stage_id on update",
        ),
        (
            Req::patch(format!("/api/v1/deals/{a_deal}"))
                .json(json!({ "pipeline_id": b_pipeline })),
            "deal pipeline_id on update",
        ),
        (
            Req::patch(format!("/api/v1/deals/{a_deal}"))
                .json(json!({ "owner_id": b_agent.member_id, "contact_ids": [b_contact] })),
            "deal owner_id and contact_ids on update",
        ),
        (
            Req::new(
                axum::http::Method::PUT,
                format!("/api/v1/pipelines/{a_pipeline}/stages"),
            )
                .json(json!([{ "id": b_stage, "name": "Hijacked", "probability": 5 }])),
            "pipeline stage id",
        ),
        (
            Req::post(format!("/api/v1/contacts/{a_contact}/erasure"))
                .json(json!({ "mode": "erase", "request_id": b_request })),
            "erasure request_id",
        ),
    ];

    let mut failures = Vec::new();
    for (req, what) in cases {
        let before = fingerprint(&app).await;
        let resp = app.send(req.by(&a)).await;
        assert_eq!(fingerprint(&app).await, before, "{what} changed something");
        let code = resp.body["error"]["code"].as_str().unwrap_or_default();
        if resp.status == StatusCode::NOT_FOUND && code == "not_found" {
            continue;
        }
        failures.push(format!("{what}: {} {}", resp.status, resp.body));
    }
    assert!(failures.is_empty(), "not answered 404: {failures:#?}");
}

/// A body each route would accept, so a missing tenant check would show as a change.
fn valid_body(method: &str, path: &str) -> serde_json::Value {
    match (method, path.rsplit('/').next().unwrap_or_default()) {
        ("POST", "messages") => json!({ "body": "written by another tenant" }),
        ("POST", "status") if path.starts_with("/api/v1/privacy/") => {
            json!({ "status": "in_progress" })
        }
        ("POST", "status") => json!({ "status": "resolved" }),
        ("POST", "notes") => json!({ "body": "written by another tenant" }),
        ("POST", "comments") => json!({ "body": "written by another tenant" }),
        ("PATCH", "{ticket_id}") => json!({ "subject": "hijacked", "status": "closed" }),
        ("PATCH", "{task_id}") => json!({ "title": "hijacked" }),
        ("POST", "lost") => json!({ "reason": "lost by another tenant" }),
        ("PUT", "stages") => json!([{ "name": "Hijacked", "probability": 5 }]),
        ("POST", "consents") => {
            json!({ "purpose": "surveys", "legal_basis": "consent", "source": "api" })
        }
        ("POST", "revoke") => json!({ "source": "api" }),
        ("POST", "erasure") => json!({ "mode": "anonymise" }),
        ("POST", "reject") => json!({ "reason": "rejected by another tenant" }),
        ("POST", "send-draft") => json!({ "text": "sent by another tenant" }),
        ("PUT", "labels") => json!({ "labels": ["hijacked"] }),
        ("PUT", "language") => json!({ "language": "de" }),
        ("POST", "assign") => json!({ "assignee_id": null }),
        ("PATCH", "{member_id}") => json!({ "status": "disabled" }),
        ("PATCH", "{article_id}") => json!({ "title": "hijacked" }),
        ("PATCH", "{canned_reply_id}") => json!({ "title": "hijacked" }),
        ("PATCH", _) => json!({ "name": "hijacked" }),
        _ => json!({}),
    }
}

fn spec_req(method: &axum::http::Method, path: &str) -> Req {
    Req::new(method.clone(), path.to_string())
}

// proves: SEC-3
#[tokio::test]
async fn lists_show_only_the_callers_tenant() {
    let app = TestApp::spawn().await;
    let a = app.signup("alpha").await;
    let b = app.signup("bravo").await;
    app.join(&b, "agent").await;
    app.token(&b, "agent").await;

    let members = app.send(Req::get("/api/v1/members").by(&a)).await;
    let emails: Vec<&str> = members
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, vec!["owner@alpha.example"]);
    let tokens = app.send(Req::get("/api/v1/tokens").by(&a)).await;
    assert_eq!(tokens.body, json!([]));
    let events = app.send(Req::get("/api/v1/audit/events").by(&a)).await;
    for event in events.body["events"].as_array().unwrap() {
        assert_ne!(event["entity_id"], json!(b.member_id.to_string()));
        assert_ne!(event["entity_id"], json!(b.tenant_id.to_string()));
    }
    let tenant = app.send(Req::get("/api/v1/tenant").by(&a)).await;
    assert_eq!(tenant.body["slug"], "alpha");
}

// proves: SEC-3
#[tokio::test]
async fn row_level_security_hides_other_tenants_rows_from_the_app_role_even_without_a_filter() {
    let app = TestApp::spawn().await;
    let a = app.signup("alpha").await;
    let b = app.signup("bravo").await;
    let pool = &app.state.db.app;

    // No tenant pinned: nothing at all is visible.
    let unpinned: i64 = sqlx::query_scalar("SELECT count(*) FROM member")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(unpinned, 0);

    // Pinned to A: an unfiltered query sees A alone.
    let mut tx = app.state.db.tenant_tx(a.tenant_id).await.unwrap();
    let visible: Vec<Uuid> = sqlx::query_scalar("SELECT tenant_id FROM member")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(visible, vec![a.tenant_id]);
    // Writing into B from A's transaction is refused by the policy.
    let err = sqlx::query("UPDATE member SET display_name = 'x' WHERE tenant_id = $1")
        .bind(b.tenant_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(err.rows_affected(), 0);
    let insert = sqlx::query("INSERT INTO partner_org (id, tenant_id, name) VALUES ($1, $2, 'x')")
        .bind(Uuid::new_v4())
        .bind(b.tenant_id)
        .execute(&mut *tx)
        .await;
    assert!(insert.is_err(), "inserted a row into another tenant");
}

// proves: SEC-3
#[tokio::test]
async fn every_table_holding_tenant_data_forces_row_level_security_and_the_app_role_cannot_bypass_it(
) {
    let app = TestApp::spawn().await;
    let mut conn = app.superuser().await;
    let unprotected: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
         WHERE c.relkind = 'r'
           AND (c.relname = 'tenant' OR EXISTS (
                SELECT 1 FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped))
           AND NOT (c.relrowsecurity AND c.relforcerowsecurity
                    AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        unprotected.is_empty(),
        "tables without forced row-level security: {unprotected:?}"
    );

    let (superuser, bypass): (bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'custodian_app'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(!superuser && !bypass);
    let mut app_conn = PgConnection::connect_with(&app.admin.clone().username("custodian_app"))
        .await
        .unwrap();
    let who: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut app_conn)
        .await
        .unwrap();
    assert_eq!(who, "custodian_app");
}

// proves: SEC-3
#[tokio::test]
async fn the_tenant_comes_from_the_credential_not_from_the_request() {
    let app = TestApp::spawn().await;
    let a = app.signup("alpha").await;
    let b = app.signup("bravo").await;
    // Naming B in headers or the query string changes nothing.
    let resp = app
        .send(
            Req::get(format!("/api/v1/members?tenant_id={}", b.tenant_id))
                .by(&a)
                .header("x-tenant-id", b.tenant_id.to_string()),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let emails: Vec<&str> = resp
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, vec![a.email.as_str()]);
}
