//! Consents (DSR-5): recorded per contact with purpose, legal basis, time, source and text
//! version; a revocation is audited, kept as history and takes effect at once, for the senders
//! that ask and for the agent, which stops processing a contact who revoked AI processing.

use axum::http::StatusCode;
use custodian::privacy::consent::{allows, Purpose};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::agent::{customer_says, execution, world};
use crate::common::{eventually, Member, Req, TestApp};

async fn contact(app: &TestApp, owner: &Member) -> Uuid {
    let resp = app
        .send(
            Req::post("/api/v1/contacts")
                .by(owner)
                .json(json!({ "name": "Ana Lima" })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    resp.uuid("/id")
}

async fn grant(app: &TestApp, owner: &Member, contact: Uuid, body: Value) -> crate::common::Resp {
    app.send(
        Req::post(format!("/api/v1/contacts/{contact}/consents"))
            .by(owner)
            .json(body),
    )
    .await
}

async fn revoke(
    app: &TestApp,
    owner: &Member,
    consent: &Value,
    source: &str,
) -> crate::common::Resp {
    app.send(
        Req::post(format!(
            "/api/v1/privacy/consents/{}/revoke",
            consent.as_str().unwrap()
        ))
        .by(owner)
        .json(json!({ "source": source })),
    )
    .await
}

async fn allowed(app: &TestApp, owner: &Member, contact: Uuid, purpose: Purpose) -> bool {
    let mut tx = app.state.db.tenant_tx(owner.tenant_id).await.unwrap();
    allows(&mut tx, contact, purpose).await.unwrap()
}

// proves: DSR-5
#[tokio::test]
async fn a_consent_is_recorded_with_its_basis_and_source_and_its_revocation_is_audited_and_kept() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let ana = contact(&app, &owner).await;
    assert!(!allowed(&app, &owner, ana, Purpose::Marketing).await);

    let given = grant(
        &app,
        &owner,
        ana,
        json!({ "purpose": "marketing", "legal_basis": "consent", "source": "form",
                "text_version": "newsletter-2026-03" }),
    )
    .await;
    assert_eq!(given.status, StatusCode::CREATED, "{}", given.body);
    assert_eq!(given.body["purpose"], "marketing");
    assert_eq!(given.body["legal_basis"], "consent");
    assert_eq!(given.body["source"], "form");
    assert_eq!(given.body["text_version"], "newsletter-2026-03");
    assert_eq!(given.body["granted_by"], json!(owner.member_id));
    assert!(given.body["granted_at"].is_string());
    assert_eq!(given.body["revoked_at"], Value::Null);
    assert!(allowed(&app, &owner, ana, Purpose::Marketing).await);
    assert!(!allowed(&app, &owner, ana, Purpose::Surveys).await);

    // One standing consent per purpose.
    let again = grant(
        &app,
        &owner,
        ana,
        json!({ "purpose": "marketing", "legal_basis": "consent", "source": "api" }),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "consent_already_given");

    let revoked = revoke(&app, &owner, &given.body["id"], "whatsapp").await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert!(revoked.body["revoked_at"].is_string());
    assert_eq!(revoked.body["revocation_source"], "whatsapp");
    assert_eq!(revoked.body["revoked_by"], json!(owner.member_id));
    // At once: the next sender's check says no.
    assert!(!allowed(&app, &owner, ana, Purpose::Marketing).await);
    let twice = revoke(&app, &owner, &given.body["id"], "whatsapp").await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert_eq!(twice.error_code(), "consent_already_revoked");

    // Given again later: a new record, the revoked one kept as history.
    let renewed = grant(
        &app,
        &owner,
        ana,
        json!({ "purpose": "marketing", "legal_basis": "consent", "source": "web_chat" }),
    )
    .await;
    assert_eq!(renewed.status, StatusCode::CREATED, "{}", renewed.body);
    let history = app
        .send(Req::get(format!("/api/v1/contacts/{ana}/consents")).by(&owner))
        .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    let items = history.body.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], renewed.body["id"]);
    assert_eq!(items[1]["id"], given.body["id"]);
    assert!(items[1]["revoked_at"].is_string());

    let granted = app.audit_events(owner.tenant_id, "consent.granted").await;
    assert_eq!(granted.len(), 2);
    let revocations = app.audit_events(owner.tenant_id, "consent.revoked").await;
    assert_eq!(revocations.len(), 1);
    assert_eq!(revocations[0]["entity_id"], given.body["id"]);
    assert_eq!(revocations[0]["after"]["revocation_source"], "whatsapp");
    assert_eq!(revocations[0]["actor_id"], owner.member_id.to_string());
}

// proves: DSR-5
#[tokio::test]
async fn consents_refuse_bad_input_and_stay_within_the_tenant() {
    let app = TestApp::spawn().await;
    let a = app.signup("alpha").await;
    let b = app.signup("bravo").await;
    let ana = contact(&app, &a).await;
    let bruna = contact(&app, &b).await;
    let b_consent = grant(
        &app,
        &b,
        bruna,
        json!({ "purpose": "surveys", "legal_basis": "legitimate_interests", "source": "member" }),
    )
    .await;
    assert_eq!(b_consent.status, StatusCode::CREATED);

    for body in [
        json!({ "purpose": "telepathy", "legal_basis": "consent", "source": "form" }),
        json!({ "purpose": "marketing", "legal_basis": "because", "source": "form" }),
        json!({ "purpose": "marketing", "legal_basis": "consent" }),
        json!({ "purpose": "marketing", "legal_basis": "consent", "source": "form", "text_version": " " }),
    ] {
        let resp = grant(&app, &a, ana, body.clone()).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            resp.body
        );
    }
    let foreign = grant(
        &app,
        &a,
        bruna,
        json!({ "purpose": "marketing", "legal_basis": "consent", "source": "form" }),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    let foreign_revoke = revoke(&app, &a, &b_consent.body["id"], "member").await;
    assert_eq!(foreign_revoke.status, StatusCode::NOT_FOUND);
    let foreign_list = app
        .send(Req::get(format!("/api/v1/contacts/{bruna}/consents")).by(&a))
        .await;
    assert_eq!(foreign_list.status, StatusCode::NOT_FOUND);
    assert!(allowed(&app, &b, bruna, Purpose::Surveys).await);
    assert_eq!(app.count("SELECT count(*) FROM consent").await, 1);
}

// proves: DSR-5, DSR-4
#[tokio::test]
async fn revoking_consent_to_ai_processing_stops_the_next_agent_run_for_that_contact() {
    let w = world(json!({})).await;
    w.customer_writes("first message", "wamid.C1").await;
    execution(&w.app).await;
    let mut conn = w.app.superuser().await;
    let contact: Uuid = sqlx::query_scalar("SELECT id FROM contact")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let given = grant(
        &w.app,
        &w.owner,
        contact,
        json!({ "purpose": "ai_processing", "legal_basis": "consent", "source": "whatsapp" }),
    )
    .await;
    assert_eq!(given.status, StatusCode::CREATED, "{}", given.body);
    let revoked = revoke(&w.app, &w.owner, &given.body["id"], "whatsapp").await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);

    // The contact is restricted at once, and their AI conversation is with people now.
    let shown = w
        .app
        .send(Req::get(format!("/api/v1/contacts/{contact}")).by(&w.owner))
        .await;
    assert_eq!(shown.body["restricted"], true);
    let restricted = w
        .app
        .audit_events(w.owner.tenant_id, "contact.restricted")
        .await;
    assert_eq!(restricted.len(), 1);
    // Even a conversation handed back to the AI is not processed for them.
    sqlx::query("UPDATE conversation SET handler = 'ai'")
        .execute(&mut conn)
        .await
        .unwrap();
    let before = w.model.request_count();
    let runs_before = w.app.count("SELECT count(*) FROM agent_execution").await;
    assert_eq!(
        w.app
            .webhook(
                w.inbox,
                &customer_says("I no longer want AI to read my messages", "wamid.C2"),
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
        "the model was called for a contact who revoked AI processing"
    );
    assert_eq!(
        w.app.count("SELECT count(*) FROM agent_execution").await,
        runs_before,
        "an agent run started after the revocation"
    );
}
