//! Erasure and anonymisation of a contact (DSR-3): one call reaches every table, the PII vault
//! and the audit payloads included, while the audit chain still verifies (AUD-3); a legal hold
//! blocks it; the completion receipt is signed and verifiable.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

use crate::agent::{decision, execution, world};
use crate::common::{eventually, Member, Req, TestApp};

const NAME: &str = "Sheena Nelson";
const EMAIL: &str = "sheena.nelson@example.com";
/// The WhatsApp fixtures' sender: the contact's phone is `+16505551234`.
const PHONE_DIGITS: &str = "16505551234";
const EXTERNAL_ID: &str = "cust-4711";

/// Every text, JSON, array and byte column of every table, as superuser, searched for `needle`
/// (bytes as its UTF-8 form: files such as audit log exports): `table.column` for each column
/// that holds it.
async fn columns_holding(app: &TestApp, needle: &str) -> Vec<String> {
    let mut conn = app.superuser().await;
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = 'public'
           AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'ARRAY',
                             'bytea')
           AND table_name IN (SELECT table_name FROM information_schema.tables
                              WHERE table_schema = 'public' AND table_type = 'BASE TABLE')
         ORDER BY 1, 2",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(columns.len() > 50, "only {} columns found", columns.len());
    let mut found = Vec::new();
    for (table, column, data_type) in columns {
        let matches = match data_type.as_str() {
            "bytea" => format!("position(convert_to($2, 'UTF8') in \"{column}\") > 0"),
            _ => format!("\"{column}\"::text ILIKE $1"),
        };
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{table}\" WHERE {matches}"
        )))
        .bind(format!("%{needle}%"))
        .bind(needle)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if n > 0 {
            found.push(format!("{table}.{column}"));
        }
    }
    found
}

async fn verify_chain(app: &TestApp, owner: &Member) -> Value {
    let resp = app.send(Req::get("/api/v1/audit/verify").by(owner)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    resp.body
}

fn user_hash(secret: &str, user_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(user_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A web chat inbox that verifies the tenant's users, and a session of user `user_id`.
async fn verified_visitor_writes(
    app: &TestApp,
    owner: &Member,
    user_id: &str,
    name: &str,
    text: &str,
) -> Uuid {
    let inbox = app
        .send(Req::post("/api/v1/inboxes").by(owner).json(json!({
            "name": "Site chat", "channel": "webchat",
            "webchat": { "allowed_origins": ["https://shop.example"], "identity_secret": "s3cret" }
        })))
        .await;
    assert_eq!(inbox.status, StatusCode::CREATED, "{}", inbox.body);
    let inbox = inbox.uuid("/id");
    let session = app
        .send(
            Req::post(format!("/api/v1/webchat/{inbox}/sessions")).json(json!({
                "name": name, "user_id": user_id, "user_hash": user_hash("s3cret", user_id)
            })),
        )
        .await;
    assert_eq!(session.status, StatusCode::CREATED, "{}", session.body);
    let token = session.body["session_token"].as_str().unwrap().to_string();
    let sent = app
        .send(
            Req::post(format!("/api/v1/webchat/{inbox}/messages"))
                .header("x-webchat-session", token)
                .json(json!({ "body": text })),
        )
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.body);
    sent.uuid("/conversation_id")
}

async fn erase(app: &TestApp, owner: &Member, contact: Uuid, body: Value) -> crate::common::Resp {
    app.send(
        Req::post(format!("/api/v1/contacts/{contact}/erasure"))
            .by(owner)
            .json(body),
    )
    .await
}

// proves: DSR-3, AUD-3
#[tokio::test]
#[allow(clippy::too_many_lines)]
async fn an_erased_contact_leaves_no_value_in_any_table_and_the_audit_chain_still_verifies() {
    let w = world(json!({ "confidence_threshold": 0.5 })).await;
    let (app, owner) = (&w.app, &w.owner);

    // An agent run that replies (the vault learns the person's values)...
    w.model.push(decision(
        "reply",
        "Hi [NAME_1]! We will write to [EMAIL_1] today.",
        0.9,
    ));
    w.customer_writes(
        &format!("Hi, I'm {NAME}, email {EMAIL}, call me on +{PHONE_DIGITS}. Where is my order?"),
        "wamid.ERASE1",
    )
    .await;
    let first = execution(app).await;
    assert_eq!(first["outcome"], "replied", "{first}");
    // ...and one unsure enough to wait for a reviewer with its unmasked draft.
    w.model.push(decision(
        "reply",
        "[NAME_1], your parcel left today; tracking goes to [EMAIL_1].",
        0.1,
    ));
    w.customer_writes(&format!("{NAME} again: any news?"), "wamid.ERASE2")
        .await;
    let contact: Uuid = eventually(20, "the second run to wait for review", || async {
        let mut conn = app.superuser().await;
        sqlx::query_scalar::<_, Uuid>(
            "SELECT e.contact_id FROM review_item r JOIN agent_execution e ON e.id = r.execution_id",
        )
        .fetch_optional(&mut conn)
        .await
        .unwrap()
    })
    .await;
    eventually(20, "the agent runs to finish", || async {
        (app.count("SELECT count(*) FROM agent_execution WHERE finished_at IS NULL")
            .await
            == 0)
            .then_some(())
    })
    .await;

    // The tenant knows more about them: an e-mail, their own id, a consent, a request.
    let patched = app
        .send(
            Req::patch(format!("/api/v1/contacts/{contact}"))
                .by(owner)
                .json(json!({ "email": EMAIL, "external_id": EXTERNAL_ID })),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    // The same person on the web chat, signed in on the tenant's site.
    verified_visitor_writes(
        app,
        owner,
        EXTERNAL_ID,
        NAME,
        &format!("It's {NAME} from WhatsApp, {EMAIL}"),
    )
    .await;
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM conversation WHERE contact_id = '{contact}'"
        ))
        .await,
        2,
        "the web chat session did not join the WhatsApp contact"
    );
    let consent = app
        .send(
            Req::post(format!("/api/v1/contacts/{contact}/consents"))
                .by(owner)
                .json(
                    json!({ "purpose": "marketing", "legal_basis": "consent", "source": "api",
                              "text_version": format!("newsletter v2 for {EMAIL}") }),
                ),
        )
        .await;
    assert_eq!(consent.status, StatusCode::CREATED, "{}", consent.body);
    let request = app
        .send(Req::post("/api/v1/privacy/requests").by(owner).json(json!({
            "type": "erasure", "contact_id": contact, "requester": "data_subject",
            "requester_name": NAME, "identity_check": "channel_identity"
        })))
        .await;
    assert_eq!(request.status, StatusCode::CREATED, "{}", request.body);
    let request_id = request.uuid("/id");
    // The team's work about them: a ticket with a comment, and a task, all naming them; and
    // an export of their data (a copy of everything).
    let conversation: Uuid = {
        let mut conn = app.superuser().await;
        sqlx::query_scalar("SELECT id FROM conversation WHERE contact_id = $1 LIMIT 1")
            .bind(contact)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    let ticket = app
        .send(Req::post("/api/v1/tickets").by(owner).json(json!({
            "subject": format!("Lost parcel for {NAME}"), "conversation_id": conversation
        })))
        .await;
    assert_eq!(ticket.status, StatusCode::CREATED, "{}", ticket.body);
    let ticket_id = ticket.uuid("/id");
    let comment = app
        .send(
            Req::post(format!("/api/v1/tickets/{ticket_id}/comments"))
                .by(owner)
                .json(json!({ "body": format!("Called {NAME} at {EMAIL}"), "public": false })),
        )
        .await;
    assert_eq!(comment.status, StatusCode::CREATED, "{}", comment.body);
    let task = app
        .send(Req::post("/api/v1/tasks").by(owner).json(json!({
            "title": format!("Write back to {NAME}"), "contact_id": contact
        })))
        .await;
    assert_eq!(task.status, StatusCode::CREATED, "{}", task.body);
    let export = app
        .send(
            Req::post(format!("/api/v1/contacts/{contact}/exports"))
                .by(owner)
                .json(json!({})),
        )
        .await;
    assert_eq!(export.status, StatusCode::ACCEPTED, "{}", export.body);
    // An auditor's export of the audit log: a file of copies of the payloads that name them.
    let audit_export = app
        .send(
            Req::post("/api/v1/audit/exports")
                .by(owner)
                .json(json!({ "format": "json" })),
        )
        .await;
    assert_eq!(
        audit_export.status,
        StatusCode::ACCEPTED,
        "{}",
        audit_export.body
    );
    let audit_export = audit_export.uuid("/id");
    // And one of the tenant's own events only: it copies nothing of the person and stays.
    let tenant_only = app
        .send(
            Req::post("/api/v1/audit/exports")
                .by(owner)
                .json(json!({ "format": "json", "action_prefix": "tenant." })),
        )
        .await
        .uuid("/id");
    for export in [audit_export, tenant_only] {
        eventually(20, "the audit log exports to finish", || async {
            let resp = app
                .send(Req::get(format!("/api/v1/audit/exports/{export}")).by(owner))
                .await;
            (resp.body["status"] == "done").then_some(())
        })
        .await;
    }
    assert!(
        columns_holding(app, EMAIL)
            .await
            .contains(&"audit_export_chunk.data".to_string()),
        "the audit log export holds no copy: the test proves nothing"
    );

    // Before: the values are all over the database.
    for needle in [NAME, EMAIL, PHONE_DIGITS] {
        assert!(
            !columns_holding(app, needle).await.is_empty(),
            "{needle} was never stored: the test proves nothing"
        );
    }
    assert!(
        app.count("SELECT count(*) FROM conversation_vault").await > 0,
        "no PII vault entry to erase"
    );
    let before = verify_chain(app, owner).await;
    assert_eq!(before["valid"], true, "{before}");

    let erased = erase(
        app,
        owner,
        contact,
        json!({ "mode": "erase", "request_id": request_id }),
    )
    .await;
    assert_eq!(erased.status, StatusCode::OK, "{}", erased.body);
    let receipt = erased.body.clone();
    assert_eq!(receipt["contact_id"], contact.to_string());
    assert_eq!(receipt["mode"], "erase");
    // The request it answered is done and carries the receipt, which still verifies.
    let answered = app
        .send(Req::get(format!("/api/v1/privacy/requests/{request_id}")).by(owner))
        .await;
    assert_eq!(
        answered.body["request"]["status"], "done",
        "{}",
        answered.body
    );
    assert_eq!(answered.body["receipt"], receipt, "{}", answered.body);
    let check = app
        .send(
            Req::post("/api/v1/erasure-receipts/verify")
                .by(owner)
                .json(answered.body["receipt"].clone()),
        )
        .await;
    assert_eq!(check.body["valid"], true, "{}", check.body);
    let counts = &receipt["erased"];
    assert_eq!(counts["contact"], 1, "{receipt}");
    assert_eq!(counts["conversations"], 2, "{receipt}");
    assert!(counts["messages"].as_i64().unwrap() >= 4, "{receipt}");
    assert!(
        counts["agent_executions"].as_i64().unwrap() >= 2,
        "{receipt}"
    );
    assert!(counts["review_items"].as_i64().unwrap() >= 1, "{receipt}");
    assert!(
        counts["pii_vault_entries"].as_i64().unwrap() >= 1,
        "{receipt}"
    );
    assert_eq!(counts["consents"], 1, "{receipt}");
    assert_eq!(counts["webchat_sessions"], 1, "{receipt}");
    assert!(counts["audit_payloads"].as_i64().unwrap() > 0, "{receipt}");
    assert_eq!(counts["tickets"], 1, "{receipt}");
    assert_eq!(counts["tasks"], 1, "{receipt}");
    assert_eq!(counts["contact_exports"], 1, "{receipt}");
    assert_eq!(counts["audit_exports"], 1, "{receipt}");
    let gone = app
        .send(Req::get(format!("/api/v1/audit/exports/{audit_export}/download")).by(owner))
        .await;
    assert_eq!(gone.status, StatusCode::GONE, "{}", gone.body);
    let kept = app
        .send(Req::get(format!("/api/v1/audit/exports/{tenant_only}/download")).by(owner))
        .await;
    assert_eq!(kept.status, StatusCode::OK, "{}", kept.body);
    for table in [
        "ticket",
        "ticket_comment",
        "task",
        "contact_export",
        "contact_export_chunk",
    ] {
        assert_eq!(
            app.count(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table} still holds rows about the erased person"
        );
    }

    // After: in no text or JSON column of any table.
    for needle in [
        NAME,
        "Sheena",
        "Nelson",
        EMAIL,
        PHONE_DIGITS,
        EXTERNAL_ID,
        "wamid.ERASE1",
    ] {
        let found = columns_holding(app, needle).await;
        assert!(found.is_empty(), "{needle} is still in {found:?}");
    }
    for table in [
        "contact",
        "conversation",
        "message",
        "conversation_vault",
        "agent_execution",
        "review_item",
        "webchat_session",
        "consent",
    ] {
        assert_eq!(
            app.count(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table} kept rows"
        );
    }
    // The request stays as the tenant's proof, done, with the receipt.
    let request = app
        .send(Req::get(format!("/api/v1/privacy/requests/{request_id}")).by(owner))
        .await;
    assert_eq!(
        request.body["request"]["status"], "done",
        "{}",
        request.body
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM privacy_request WHERE id = '{request_id}'
             AND receipt ->> 'id' = '{}'",
            receipt["id"].as_str().unwrap()
        ))
        .await,
        1
    );

    // The chain verifies; the erased payloads are reported as such, not as a break.
    let after = verify_chain(app, owner).await;
    assert_eq!(after["valid"], true, "{after}");
    assert!(after["erased"].as_u64().unwrap() > 0, "{after}");
    assert_eq!(
        after["erased"].as_i64(),
        counts["audit_payloads"].as_i64(),
        "{after}"
    );
    // The fact stays: who erased whom, when, and what went.
    let fact = app.audit_events(owner.tenant_id, "contact.erased").await;
    assert_eq!(fact.len(), 1);
    assert_eq!(fact[0]["after"]["receipt_id"], receipt["id"]);
    assert_eq!(
        app.audit_events(owner.tenant_id, "audit.payloads_erased")
            .await
            .len(),
        1
    );

    // The receipt verifies; the same receipt with one count changed does not.
    let check = |r: Value| {
        app.send(
            Req::post("/api/v1/erasure-receipts/verify")
                .by(owner)
                .json(r),
        )
    };
    let genuine = check(receipt.clone()).await;
    assert_eq!(genuine.status, StatusCode::OK, "{}", genuine.body);
    assert_eq!(genuine.body["valid"], true);
}

// proves: DSR-3
#[tokio::test]
async fn a_forged_or_foreign_receipt_fails_verification() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let other = app.signup("globex").await;
    let contact = app
        .send(
            Req::post("/api/v1/contacts")
                .by(&owner)
                .json(json!({ "name": "Ana Lima", "email": "ana@example.com" })),
        )
        .await
        .uuid("/id");
    let receipt = erase(&app, &owner, contact, json!({ "mode": "erase" }))
        .await
        .body;
    let check = |r: Value, by: &Member| {
        app.send(Req::post("/api/v1/erasure-receipts/verify").by(by).json(r))
    };
    assert_eq!(check(receipt.clone(), &owner).await.body["valid"], true);

    let mut more = receipt.clone();
    more["erased"]["contact"] = json!(2);
    let mut moved = receipt.clone();
    moved["contact_id"] = json!(Uuid::new_v4());
    let mut garbage = receipt.clone();
    garbage["signature"] = json!("not hex");
    // Signed by someone who knows the format but not the server's key.
    let mut self_signed = receipt.clone();
    self_signed["signature"] = json!(user_hash("guessed-key", "anything"));
    for forged in [more, moved, garbage, self_signed] {
        let resp = check(forged.clone(), &owner).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
        assert_eq!(resp.body["valid"], false, "{forged}");
    }
    // A genuine receipt is valid for its own tenant only.
    assert_eq!(check(receipt.clone(), &other).await.body["valid"], false);
    // A receipt with a field added is not a receipt.
    let mut extra = receipt.clone();
    extra["note"] = json!("trust me");
    assert_eq!(check(extra, &owner).await.status, StatusCode::BAD_REQUEST);
}

// proves: DSR-3
#[tokio::test]
async fn anonymising_keeps_the_message_counts_and_removes_every_personal_value() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let conversation = verified_visitor_writes(
        &app,
        &owner,
        "user-zq",
        "Zelda Quist",
        "Hello, Zelda Quist here, zelda.quist@example.com",
    )
    .await;
    let contact = app
        .send(Req::get(format!("/api/v1/conversations/{conversation}")).by(&owner))
        .await
        .uuid("/conversation/contact_id");
    let reply = app
        .send(
            Req::post(format!("/api/v1/conversations/{conversation}/messages"))
                .by(&owner)
                .json(json!({ "body": "Hi Zelda Quist, we are on it." })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let patched = app
        .send(
            Req::patch(format!("/api/v1/contacts/{contact}"))
                .by(&owner)
                .json(json!({ "email": "zelda.quist@example.com", "phone": "+4915112345678" })),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    let messages = format!("SELECT count(*) FROM message WHERE conversation_id = '{conversation}'");
    let count_before = app.count(&messages).await;
    assert!(count_before >= 2);

    let done = erase(&app, &owner, contact, json!({ "mode": "anonymise" })).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["mode"], "anonymise");
    assert_eq!(done.body["erased"]["messages"], count_before);

    // The statistics stay: the contact, the conversation, every message, who wrote it, when.
    assert_eq!(app.count(&messages).await, count_before);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{conversation}' AND body = ''"
        ))
        .await,
        count_before
    );
    let shown = app
        .send(Req::get(format!("/api/v1/contacts/{contact}")).by(&owner))
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["name"], Value::Null);
    assert_eq!(shown.body["email"], Value::Null);
    assert_eq!(shown.body["restricted"], true);
    for needle in [
        "Zelda",
        "Quist",
        "zelda.quist@example.com",
        "4915112345678",
        "user-zq",
    ] {
        let found = columns_holding(&app, needle).await;
        assert!(found.is_empty(), "{needle} is still in {found:?}");
    }
    let chain = verify_chain(&app, &owner).await;
    assert_eq!(chain["valid"], true, "{chain}");
    assert!(chain["erased"].as_u64().unwrap() > 0, "{chain}");

    // Repeating it: nothing is left to anonymise, and the answer says so, changing nothing.
    let audit_rows = "SELECT count(*) FROM audit_event";
    let rows = app.count(audit_rows).await;
    let again = erase(&app, &owner, contact, json!({ "mode": "anonymise" })).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(again.error_code(), "already_anonymised");
    assert_eq!(app.count(audit_rows).await, rows);
    // Erasing it deletes what anonymisation kept; after that the contact is unknown.
    let erased = erase(&app, &owner, contact, json!({ "mode": "erase" })).await;
    assert_eq!(erased.status, StatusCode::OK, "{}", erased.body);
    assert_eq!(app.count(&messages).await, 0);
    let gone = erase(&app, &owner, contact, json!({ "mode": "erase" })).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
    assert_eq!(verify_chain(&app, &owner).await["valid"], true);
}

/// Every row of the tables an erasure touches, as one fingerprint taken past row-level security.
async fn fingerprint(app: &TestApp) -> String {
    let mut conn = app.superuser().await;
    let mut parts = Vec::new();
    for (table, _) in custodian::privacy::erasure::TABLES {
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

// proves: DSR-3
#[tokio::test]
async fn a_legal_hold_blocks_erasure_with_a_409_naming_the_hold_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, conversation) = app.visitor_writes(inbox, "Where is my order?").await;
    let contact = app
        .send(Req::get(format!("/api/v1/conversations/{conversation}")).by(&owner))
        .await
        .uuid("/conversation/contact_id");
    // The hold is on one conversation: the contact's erasure would reach it.
    let hold = app
        .send(Req::post("/api/v1/legal-holds").by(&owner).json(json!({
            "entity_type": "conversation", "entity_id": conversation, "reason": "pending lawsuit"
        })))
        .await;
    assert_eq!(hold.status, StatusCode::CREATED, "{}", hold.body);
    let hold_id = hold.uuid("/id");

    let before = fingerprint(&app).await;
    for mode in ["erase", "anonymise"] {
        let refused = erase(&app, &owner, contact, json!({ "mode": mode })).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
        assert_eq!(refused.error_code(), "legal_hold");
        let message = refused.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&hold_id.to_string()), "{message}");
        assert!(message.contains("pending lawsuit"), "{message}");
    }
    let deleted = app
        .send(Req::delete(format!("/api/v1/contacts/{contact}")).by(&owner))
        .await;
    assert_eq!(deleted.status, StatusCode::CONFLICT, "{}", deleted.body);
    assert_eq!(deleted.error_code(), "legal_hold");
    assert_eq!(
        fingerprint(&app).await,
        before,
        "a refused erasure changed something"
    );

    // Released, the same call goes through.
    let released = app
        .send(Req::delete(format!("/api/v1/legal-holds/{hold_id}")).by(&owner))
        .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    let done = erase(&app, &owner, contact, json!({ "mode": "erase" })).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
}

// proves: DSR-3, SEC-3
#[tokio::test]
async fn another_tenants_contact_or_request_answers_404_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let a = app.signup("alpha").await;
    let b = app.signup("bravo").await;
    let new_contact = |by: &Member, name: &str| {
        app.send(
            Req::post("/api/v1/contacts")
                .by(by)
                .json(json!({ "name": name })),
        )
    };
    let a_contact = new_contact(&a, "Alma").await.uuid("/id");
    let b_contact = new_contact(&b, "Bruna").await.uuid("/id");
    let b_request = app
        .send(Req::post("/api/v1/privacy/requests").by(&b).json(json!({
            "type": "erasure", "contact_id": b_contact, "requester": "data_subject",
            "identity_check": "document"
        })))
        .await
        .uuid("/id");

    let before = fingerprint(&app).await;
    let foreign = erase(&app, &a, b_contact, json!({ "mode": "erase" })).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{}", foreign.body);
    assert_eq!(foreign.error_code(), "not_found");
    let foreign_request = erase(
        &app,
        &a,
        a_contact,
        json!({ "mode": "erase", "request_id": b_request }),
    )
    .await;
    assert_eq!(
        foreign_request.status,
        StatusCode::NOT_FOUND,
        "{}",
        foreign_request.body
    );
    assert_eq!(fingerprint(&app).await, before);
}

// proves: DSR-3
#[tokio::test]
async fn a_request_about_someone_else_or_of_another_kind_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let new_contact = |name: &str| {
        app.send(
            Req::post("/api/v1/contacts")
                .by(&owner)
                .json(json!({ "name": name })),
        )
    };
    let ana = new_contact("Ana").await.uuid("/id");
    let bea = new_contact("Bea").await.uuid("/id");
    let request = |kind: &str, contact: Uuid| {
        app.send(
            Req::post("/api/v1/privacy/requests")
                .by(&owner)
                .json(json!({
                    "type": kind, "contact_id": contact, "requester": "data_subject",
                    "identity_check": "document"
                })),
        )
    };
    let about_bea = request("erasure", bea).await.uuid("/id");
    let access = request("access", ana).await.uuid("/id");
    let before = fingerprint(&app).await;
    for request_id in [about_bea, access] {
        let refused = erase(
            &app,
            &owner,
            ana,
            json!({ "mode": "erase", "request_id": request_id }),
        )
        .await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
        assert_eq!(refused.error_code(), "request_mismatch");
    }
    let bad = app
        .send(
            Req::post(format!("/api/v1/contacts/{ana}/erasure"))
                .by(&owner)
                .json(json!({ "mode": "shred" })),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert_eq!(fingerprint(&app).await, before);
}

// proves: DSR-3
#[tokio::test]
async fn every_table_that_references_a_contact_or_a_conversation_is_in_the_erasure_list() {
    let app = TestApp::spawn().await;
    let mut conn = app.superuser().await;
    let referencing: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT c.table_name::text FROM information_schema.columns c
         JOIN information_schema.tables t USING (table_schema, table_name)
         WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
           AND c.column_name IN ('contact_id', 'conversation_id')
         UNION
         SELECT DISTINCT conrelid::regclass::text FROM pg_constraint
         WHERE contype = 'f' AND confrelid IN ('contact'::regclass, 'conversation'::regclass)",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let listed: BTreeSet<&str> = custodian::privacy::erasure::TABLES
        .iter()
        .map(|(t, _)| *t)
        .collect();
    let forgotten: Vec<&String> = referencing
        .iter()
        .filter(|t| !listed.contains(t.as_str()))
        .collect();
    assert!(
        forgotten.is_empty(),
        "tables that hold a contact's data but the erasure does not know: {forgotten:?} \
         (add them to privacy::erasure::TABLES and erase them)"
    );
    let existing: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for table in &listed {
        assert!(
            existing.iter().any(|t| t == table),
            "{table} is listed but does not exist"
        );
    }
}

// proves: AUD-3
#[tokio::test]
async fn a_payload_changed_or_blanked_outside_an_erasure_breaks_the_chain() {
    // Edited, not marked erased: its digest no longer matches.
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    app.token(&owner, "agent").await;
    let mut conn = app.superuser().await;
    let seq: i64 = sqlx::query_scalar("SELECT seq FROM audit_event WHERE action = 'token.created'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET session_replication_role = replica;
         UPDATE audit_event SET after = '{{\"name\": \"forged\"}}' WHERE seq = {seq};
         SET session_replication_role = origin;"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let report = verify_chain(&app, &owner).await;
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report["broken"]["seq"], seq, "{report}");

    // Blanked and marked erased by hand: no erasure event names it.
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    app.token(&owner, "agent").await;
    let mut conn = app.superuser().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET session_replication_role = replica;
         UPDATE audit_event SET before = NULL, after = NULL, erased_at = now() WHERE seq = {seq};
         SET session_replication_role = origin;"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let report = verify_chain(&app, &owner).await;
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report["broken"]["seq"], seq, "{report}");
    assert!(
        report["broken"]["reason"]
            .as_str()
            .unwrap()
            .contains("erased"),
        "{report}"
    );

    // The application role cannot erase payloads itself, directly or through the function.
    for sql in [
        "UPDATE audit_event SET before = NULL, after = NULL, erased_at = now()",
        "SELECT set_config('custodian.audit_erase', 'on', false); UPDATE audit_event SET after = NULL",
    ] {
        let mut conn = app.superuser().await;
        let err = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET ROLE custodian_app; SELECT set_config('app.tenant_id', '{}', false); {sql}",
            owner.tenant_id
        )))
        .execute(&mut conn)
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("permission denied")
                || err.to_string().contains("append-only"),
            "{sql}: {err}"
        );
    }
    let mut conn = app.superuser().await;
    let err = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET ROLE custodian_app; SELECT audit_erase_payloads('{}', ARRAY[1::bigint], '{{}}')",
        owner.tenant_id
    )))
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
}

// proves: DSR-3
#[tokio::test]
async fn anonymising_blanks_the_agents_records_and_review_items_but_keeps_their_outcomes() {
    let w = world(json!({ "confidence_threshold": 0.5 })).await;
    let (app, owner) = (&w.app, &w.owner);
    w.model.push(decision("reply", "Hi [NAME_1]!", 0.9));
    w.customer_writes(&format!("Hi, I'm {NAME}, {EMAIL}"), "wamid.ANON1")
        .await;
    execution(app).await;
    w.model
        .push(decision("reply", "[NAME_1], it left today.", 0.1));
    w.customer_writes("Any news?", "wamid.ANON2").await;
    let contact: Uuid = eventually(20, "the second run to wait for review", || async {
        let mut conn = app.superuser().await;
        sqlx::query_scalar::<_, Uuid>(
            "SELECT e.contact_id FROM review_item r JOIN agent_execution e ON e.id = r.execution_id",
        )
        .fetch_optional(&mut conn)
        .await
        .unwrap()
    })
    .await;
    eventually(20, "the agent runs to finish", || async {
        (app.count("SELECT count(*) FROM agent_execution WHERE finished_at IS NULL")
            .await
            == 0)
            .then_some(())
    })
    .await;
    let outcomes = "SELECT count(*) FROM agent_execution WHERE finished_at IS NOT NULL";
    let runs = eventually(20, "both runs to finish", || async {
        let n = app.count(outcomes).await;
        let running = app
            .count("SELECT count(*) FROM agent_execution WHERE finished_at IS NULL")
            .await;
        (n >= 2 && running == 0).then_some(n)
    })
    .await;

    let done = erase(app, owner, contact, json!({ "mode": "anonymise" })).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["erased"]["agent_executions"], runs);
    assert!(done.body["erased"]["review_items"].as_i64().unwrap() >= 1);
    // The low-confidence draft waited for a reviewer: emptied, it is withdrawn, not left for
    // someone to approve and send as nothing.
    assert_eq!(
        done.body["erased"]["review_items_withdrawn"], 1,
        "{}",
        done.body
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM review_item WHERE status IN ('pending', 'approved')
             OR (status = 'rejected' AND decision_reason NOT LIKE 'withdrawn:%')"
        )
        .await,
        0
    );
    // The outcomes stay for the statistics; the records and the drafts are gone.
    assert_eq!(app.count(outcomes).await, runs);
    assert_eq!(
        app.count("SELECT count(*) FROM agent_execution WHERE record <> '{}' OR content_erased_at IS NULL")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM review_item WHERE content_purged_at IS NULL")
            .await,
        0
    );
    for needle in ["Sheena", "Nelson", EMAIL, PHONE_DIGITS] {
        let found = columns_holding(app, needle).await;
        assert!(found.is_empty(), "{needle} is still in {found:?}");
    }
    assert_eq!(verify_chain(app, owner).await["valid"], true);
}
