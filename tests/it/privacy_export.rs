//! A contact's access and portability export (DSR-1): everything held about the person as JSON
//! and CSV in one zip, written by a job with progress, the real values restored from the PII
//! vault, the agent's decisions and the providers that saw their data; kept seven days, then
//! deleted by retention (DSR-7). Nothing of another tenant's, nothing without the permission.

use std::io::Read;

use axum::http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

use crate::agent::{decision, execution, world};
use crate::common::{eventually, Member, Req, TestApp};
use crate::web::{form, html, page_token};

/// The raw bytes of a response: a zip is no text.
async fn send_raw(app: &TestApp, req: Req) -> (StatusCode, HeaderMap, Vec<u8>) {
    let response = app
        .router
        .clone()
        .oneshot(req.build())
        .await
        .expect("infallible router");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes.to_vec())
}

/// Asks for a contact's export and waits for it to be done; returns its last progress view.
async fn export_done(app: &TestApp, who: &Member, contact: Uuid, body: Value) -> Value {
    let asked = app
        .send(
            Req::post(format!("/api/v1/contacts/{contact}/exports"))
                .by(who)
                .json(body),
        )
        .await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    assert_eq!(asked.body["steps_done"], 0, "{}", asked.body);
    let id = asked.uuid("/id");
    eventually(30, "the export to be written", || async {
        let seen = app
            .send(Req::get(format!("/api/v1/contact-exports/{id}")).by(who))
            .await;
        assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
        assert_ne!(seen.body["status"], "failed", "{}", seen.body);
        (seen.body["status"] == "done").then_some(seen.body)
    })
    .await
}

/// The files of a zip, by name.
fn unzip(bytes: Vec<u8>) -> std::collections::BTreeMap<String, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    let mut files = std::collections::BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        files.insert(file.name().unwrap().to_string(), text);
    }
    files
}

async fn contact(app: &TestApp, owner: &Member, name: &str) -> Uuid {
    let resp = app
        .send(
            Req::post("/api/v1/contacts")
                .by(owner)
                .json(json!({ "name": name })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    resp.uuid("/id")
}

// proves: DSR-1
#[tokio::test]
#[allow(clippy::too_many_lines)]
async fn an_export_holds_the_persons_real_values_the_agents_decisions_the_providers_and_their_consents_as_json_and_csv(
) {
    let w = world(json!({ "confidence_threshold": 0.1 })).await;
    w.model.push(decision(
        "reply",
        "Thanks [NAME_1], we will confirm at [EMAIL_1].",
        0.9,
    ));
    w.customer_writes(
        "Hi, I'm Sheena Nelson, email sheena.nelson@example.com. Where is my order?",
        "wamid.EXPORT1",
    )
    .await;
    let run = execution(&w.app).await;
    assert_eq!(run["outcome"], "replied", "{run}");
    let mut conn = w.app.superuser().await;
    let person: Uuid = sqlx::query_scalar("SELECT contact_id FROM conversation")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let consent = w
        .app
        .send(
            Req::post(format!("/api/v1/contacts/{person}/consents"))
                .by(&w.owner)
                .json(json!({ "purpose": "ai_processing", "legal_basis": "consent", "source": "whatsapp",
                              "text_version": "notice-2026-11" })),
        )
        .await;
    assert_eq!(consent.status, StatusCode::CREATED, "{}", consent.body);
    let asked = w
        .app
        .send(
            Req::post("/api/v1/privacy/requests")
                .by(&w.owner)
                .json(json!({
            "type": "access", "contact_id": person, "requester": "data_subject",
            "identity_check": "channel_identity" })),
        )
        .await;
    assert_eq!(asked.status, StatusCode::CREATED, "{}", asked.body);
    let request_id = asked.uuid("/id");
    // A ticket about their order, with an internal comment, and a task to follow it up.
    let conversation: Uuid = sqlx::query_scalar("SELECT id FROM conversation")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let ticket = w
        .app
        .send(Req::post("/api/v1/tickets").by(&w.owner).json(json!({
            "subject": "Order for Sheena Nelson not delivered", "conversation_id": conversation
        })))
        .await;
    assert_eq!(ticket.status, StatusCode::CREATED, "{}", ticket.body);
    let ticket_id = ticket.uuid("/id");
    let comment = w
        .app
        .send(
            Req::post(format!("/api/v1/tickets/{ticket_id}/comments"))
                .by(&w.owner)
                .json(json!({ "body": "Carrier lost the parcel", "public": false })),
        )
        .await;
    assert_eq!(comment.status, StatusCode::CREATED, "{}", comment.body);
    let task = w
        .app
        .send(Req::post("/api/v1/tasks").by(&w.owner).json(json!({
            "title": "Call Sheena back", "ticket_id": ticket_id
        })))
        .await;
    assert_eq!(task.status, StatusCode::CREATED, "{}", task.body);

    let done = export_done(
        &w.app,
        &w.owner,
        person,
        json!({ "request_id": request_id }),
    )
    .await;
    assert_eq!(done["progress"], 100, "{done}");
    assert_eq!(done["steps_done"], done["steps_total"], "{done}");
    assert_eq!(done["request_id"], json!(request_id));
    assert_eq!(done["counts"]["agent_executions"], 1, "{done}");
    // The request shows the work on it: in progress since its export started, the export ready.
    let asked = w
        .app
        .send(Req::get(format!("/api/v1/privacy/requests/{request_id}")).by(&w.owner))
        .await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);
    assert_eq!(
        asked.body["request"]["status"], "in_progress",
        "{}",
        asked.body
    );
    assert_eq!(asked.body["exports"][0]["id"], done["id"], "{}", asked.body);
    assert_eq!(asked.body["exports"][0]["status"], "done");
    assert!(asked.body["receipt"].is_null(), "{}", asked.body);
    let id: Uuid = done["id"].as_str().unwrap().parse().unwrap();

    let (status, headers, bytes) = send_raw(
        &w.app,
        Req::get(format!("/api/v1/contact-exports/{id}/download")).by(&w.owner),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/zip");
    assert_eq!(done["bytes"], bytes.len());
    let files = unzip(bytes);
    for name in [
        "export.json",
        "profile.csv",
        "messages.csv",
        "consents.csv",
        "requests.csv",
        "agent_executions.csv",
        "review_items.csv",
        "sharing.csv",
    ] {
        assert!(files.contains_key(name), "no {name} in {:?}", files.keys());
    }
    let export: Value = serde_json::from_str(&files["export.json"]).unwrap();

    // The profile and the customer's own words, as they wrote them.
    assert_eq!(export["profile"]["name"], "Sheena Nelson");
    assert_eq!(export["profile"]["phone"], "+16505551234");
    let words = export["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["direction"] == "inbound")
        .expect("the customer's message");
    assert!(
        words["body"]
            .as_str()
            .unwrap()
            .contains("sheena.nelson@example.com"),
        "{words}"
    );

    // The agent's decision about them, with the values the model only saw as placeholders.
    let executions = export["agent_executions"].as_array().unwrap();
    assert_eq!(executions.len(), 1, "{executions:?}");
    let x = &executions[0];
    assert_eq!(x["outcome"], "replied");
    assert_eq!(x["provider"], run["provider"]);
    assert_eq!(x["model"], run["model"]);
    let reply = x["decision"]["reply"].as_str().unwrap();
    assert_eq!(
        reply, "Thanks Sheena Nelson, we will confirm at sheena.nelson@example.com.",
        "{x}"
    );
    // What the provider received stays as it received it: masked.
    let sent = x["sent_to_provider"].to_string();
    assert!(sent.contains("[EMAIL_1]"), "{sent}");
    assert!(!sent.contains("sheena.nelson@example.com"), "{sent}");
    let restored = x["record"].to_string();
    assert!(!restored.contains("[EMAIL_1]"), "{restored}");

    // With whom their data was shared: the model that answered.
    let sharing = export["sharing"].as_array().unwrap();
    assert!(
        sharing.iter().any(|s| s["kind"] == "ai_provider"
            && s["purpose"] == "chat"
            && s["provider"] == run["provider"]
            && s["model"] == run["model"]),
        "{sharing:?}"
    );

    // Their consents and their request.
    let consents = export["consents"].as_array().unwrap();
    assert_eq!(consents.len(), 1);
    assert_eq!(consents[0]["purpose"], "ai_processing");
    assert_eq!(consents[0]["text_version"], "notice-2026-11");
    assert_eq!(export["requests"][0]["id"], json!(request_id));
    // The tickets about them with their comments, and the tasks about those.
    assert_eq!(
        export["tickets"][0]["id"],
        json!(ticket_id),
        "{}",
        export["tickets"]
    );
    assert_eq!(
        export["tickets"][0]["comments"][0]["body"],
        "Carrier lost the parcel"
    );
    assert_eq!(export["tasks"][0]["title"], "Call Sheena back");
    assert!(files["tasks.csv"].contains("Call Sheena back"));

    // The CSV files say the same, one header and one row per record.
    assert!(files["messages.csv"].starts_with("\"id\","));
    assert!(files["messages.csv"].contains("sheena.nelson@example.com"));
    assert!(files["consents.csv"].contains("\"ai_processing\""));
    assert!(files["agent_executions.csv"].contains("sheena.nelson@example.com"));
    assert!(files["profile.csv"].contains("\"Sheena Nelson\""));
    assert_eq!(files["agent_executions.csv"].matches("\r\n\"").count(), 1);

    // Asking for it and downloading it are on the record, on the contact.
    let requested = w
        .app
        .audit_events(w.owner.tenant_id, "contact.export_requested")
        .await;
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0]["entity_id"], person.to_string());
    assert_eq!(requested[0]["after"]["export_id"], json!(id));
    assert_eq!(
        w.app
            .audit_events(w.owner.tenant_id, "contact.export_downloaded")
            .await
            .len(),
        1
    );
}

// proves: DSR-1
#[tokio::test]
async fn another_tenants_export_answers_404_and_a_member_without_the_right_gets_403() {
    let app = TestApp::spawn().await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let ana = contact(&app, &owner, "Ana Lima").await;
    let done = export_done(&app, &owner, ana, json!({})).await;
    let id = done["id"].as_str().unwrap().to_string();

    let other = app.signup("globex").await;
    for req in [
        Req::get(format!("/api/v1/contact-exports/{id}")),
        Req::get(format!("/api/v1/contact-exports/{id}/download")),
        Req::post(format!("/api/v1/contacts/{ana}/exports")).json(json!({})),
    ] {
        let resp = app.send(req.by(&other)).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.body);
    }

    let agent = app.join(&owner, "agent").await;
    for req in [
        Req::get(format!("/api/v1/contact-exports/{id}")),
        Req::get(format!("/api/v1/contact-exports/{id}/download")),
        Req::post(format!("/api/v1/contacts/{ana}/exports")).json(json!({})),
    ] {
        let resp = app.send(req.by(&agent)).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.body);
    }
    assert_eq!(app.count("SELECT count(*) FROM contact_export").await, 1);
    assert!(app
        .audit_events(owner.tenant_id, "contact.export_downloaded")
        .await
        .is_empty());
}

#[tokio::test]
async fn an_export_for_a_request_of_another_type_or_person_is_refused_and_nothing_is_queued() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let ana = contact(&app, &owner, "Ana Lima").await;
    let bruno = contact(&app, &owner, "Bruno Dias").await;
    let mut refused = Vec::new();
    for (kind, about) in [("erasure", ana), ("portability", bruno)] {
        let asked = app
            .send(
                Req::post("/api/v1/privacy/requests")
                    .by(&owner)
                    .json(json!({
                "type": kind, "contact_id": about, "requester": "data_subject",
                "identity_check": "document" })),
            )
            .await;
        assert_eq!(asked.status, StatusCode::CREATED, "{}", asked.body);
        refused.push(asked.uuid("/id"));
    }
    for request_id in refused {
        let resp = app
            .send(
                Req::post(format!("/api/v1/contacts/{ana}/exports"))
                    .by(&owner)
                    .json(json!({ "request_id": request_id })),
            )
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.body);
        assert_eq!(resp.error_code(), "invalid_request");
    }
    let unknown = app
        .send(
            Req::post(format!("/api/v1/contacts/{ana}/exports"))
                .by(&owner)
                .json(json!({ "request_id": Uuid::now_v7() })),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
    assert_eq!(app.count("SELECT count(*) FROM contact_export").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM job WHERE kind = 'privacy.contact_export'")
            .await,
        0
    );
}

#[tokio::test]
async fn an_export_still_being_written_cannot_be_downloaded_yet() {
    // No worker: the export stays queued.
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let ana = contact(&app, &owner, "Ana Lima").await;
    let asked = app
        .send(
            Req::post(format!("/api/v1/contacts/{ana}/exports"))
                .by(&owner)
                .json(json!({})),
        )
        .await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    assert_eq!(asked.body["status"], "queued");
    assert_eq!(asked.body["progress"], 0);
    let id = asked.uuid("/id");
    let file = app
        .send(Req::get(format!("/api/v1/contact-exports/{id}/download")).by(&owner))
        .await;
    assert_eq!(file.status, StatusCode::CONFLICT, "{}", file.body);
    assert_eq!(file.error_code(), "export_not_ready");
}

// proves: DSR-7
#[tokio::test]
async fn an_export_past_seven_days_answers_410_then_retention_deletes_it_and_it_answers_404() {
    let app = TestApp::spawn().await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let ana = contact(&app, &owner, "Ana Lima").await;
    let done = export_done(&app, &owner, ana, json!({})).await;
    let id = done["id"].as_str().unwrap().to_string();
    // Kept seven days from the request, the tenant's default.
    let kept = app
        .count(&format!(
            "SELECT count(*) FROM contact_export WHERE id = '{id}'
               AND expires_at BETWEEN created_at + interval '7 days' - interval '1 minute'
                                  AND created_at + interval '7 days' + interval '1 minute'"
        ))
        .await;
    assert_eq!(kept, 1);
    let download = format!("/api/v1/contact-exports/{id}/download");
    let (status, _, _) = send_raw(&app, Req::get(&download).by(&owner)).await;
    assert_eq!(status, StatusCode::OK);

    let mut conn = app.superuser().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE contact_export SET created_at = now() - interval '8 days',
                expires_at = now() - interval '1 day' WHERE id = '{id}'"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let late = app.send(Req::get(&download).by(&owner)).await;
    assert_eq!(late.status, StatusCode::GONE, "{}", late.body);

    let run = app
        .send(Req::post("/api/v1/retention/run").by(&owner))
        .await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.body);
    let exports = run.body["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == "exports")
        .unwrap()
        .clone();
    assert_eq!(exports["count"], 1, "{exports}");
    // The file and the row are gone.
    assert_eq!(app.count("SELECT count(*) FROM contact_export").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM contact_export_chunk").await,
        0
    );
    for path in [download.clone(), format!("/api/v1/contact-exports/{id}")] {
        let resp = app.send(Req::get(path).by(&owner)).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.body);
    }
    // The purge is on the record like every other.
    let purged: Vec<Value> = app
        .audit_events(owner.tenant_id, "retention.purged")
        .await
        .into_iter()
        .filter(|e| e["after"]["class"] == "exports")
        .collect();
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0]["after"]["count"], 1);
}

// proves: DSR-1 (from the inbox)
#[tokio::test]
async fn the_contact_panel_asks_for_an_export_and_links_its_download_for_members_with_the_right() {
    let app = TestApp::spawn().await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, id) = app
        .visitor_writes(inbox, "Send me everything you hold about me")
        .await;
    let page = format!("/app/conversations/{id}");
    let token = page_token(&app, &owner).await;
    let asked = app
        .send(Req::post(format!("{page}/export")).by(&owner).raw(
            "application/x-www-form-urlencoded",
            form(&[("_csrf", &token)]),
        ))
        .await;
    assert_eq!(asked.status, StatusCode::SEE_OTHER, "{}", asked.body);
    assert_eq!(
        app.audit_events(owner.tenant_id, "contact.export_requested")
            .await
            .len(),
        1
    );
    let shown = eventually(30, "the panel to link the written export", || async {
        let panel = app.send(Req::get(&page).by(&owner)).await;
        let text = html(&panel).to_string();
        text.contains("data-export-download").then_some(text)
    })
    .await;
    let start = shown.find("/api/v1/contact-exports/").unwrap();
    let href = &shown[start..start + shown[start..].find('"').unwrap()];
    let (status, _, bytes) = send_raw(&app, Req::get(href).by(&owner)).await;
    assert_eq!(status, StatusCode::OK);
    let files = unzip(bytes);
    assert!(
        files["export.json"].contains("Send me everything you hold about me"),
        "{}",
        files["export.json"]
    );

    // A member without the right sees no button, and the page refuses the post.
    let agent = app.join(&owner, "agent").await;
    let panel = app.send(Req::get(&page).by(&agent)).await;
    assert!(!html(&panel).contains("data-export"));
    let token = page_token(&app, &agent).await;
    let refused = app
        .send(Req::post(format!("{page}/export")).by(&agent).raw(
            "application/x-www-form-urlencoded",
            form(&[("_csrf", &token)]),
        ))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(app.count("SELECT count(*) FROM contact_export").await, 1);
}

// proves: DSR-1 (the right to know with whom their data was shared)
#[tokio::test]
async fn the_sharing_list_names_the_action_endpoint_the_agent_sent_their_data_to() {
    let w = world(json!({})).await;
    let app = axum::Router::new().route(
        "/orders",
        axum::routing::post(|| async { axum::Json(json!({ "status": "shipped" })) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/orders", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let created = w
        .app
        .send(Req::post("/api/v1/agent/actions").by(&w.owner).json(json!({
            "name": "lookup_order", "description": "Look an order up",
            "target_url": url, "secret": "order-lookup-secret", "requires_approval": false,
            "parameters": { "type": "object", "properties": { "email": { "type": "string" } } }
        })))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    w.model
        .push(crate::fakes::openai::FakeReply::ToolCalls(vec![(
            "lookup_order".into(),
            json!({ "email": "[EMAIL_1]" }),
        )]));
    w.model
        .push(decision("reply", "Your order has shipped.", 0.9));
    w.customer_writes(
        "Where is my order? My email is sheena.nelson@example.com",
        "wamid.SHARED",
    )
    .await;
    assert_eq!(execution(&w.app).await["outcome"], "replied");
    let mut conn = w.app.superuser().await;
    let person: Uuid = sqlx::query_scalar("SELECT contact_id FROM conversation")
        .fetch_one(&mut conn)
        .await
        .unwrap();

    let done = export_done(&w.app, &w.owner, person, json!({})).await;
    let id = done["id"].as_str().unwrap();
    let (status, _, bytes) = send_raw(
        &w.app,
        Req::get(format!("/api/v1/contact-exports/{id}/download")).by(&w.owner),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let files = unzip(bytes);
    let export: Value = serde_json::from_str(&files["export.json"]).unwrap();
    let sharing = export["sharing"].as_array().unwrap();
    assert!(
        sharing.iter().any(|s| s["kind"] == "action_endpoint"
            && s["name"] == "lookup_order"
            && s["target_url"] == url.as_str()),
        "{sharing:?}"
    );
    assert!(files["sharing.csv"].contains(&url));
    // The call's arguments as the person would recognise them.
    let calls = export["agent_executions"][0]["record"]["tool_calls"].to_string();
    assert!(calls.contains("sheena.nelson@example.com"), "{calls}");
}
