//! Searching and exporting the audit log (AUD-4); exports are audit events (AUD-2).

use axum::http::{header, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{eventually, Member, Req, TestApp};

/// A tenant with an admin, an auditor, two contacts created by the admin, two `review.*` events
/// and one event of an agent execution.
struct World {
    owner: Member,
    admin: Member,
    auditor: Member,
    contacts: [Uuid; 2],
    execution_id: Uuid,
}

async fn world(app: &TestApp) -> World {
    let owner = app.signup("acme").await;
    let admin = app.join(&owner, "admin").await;
    let auditor = app.join(&owner, "auditor").await;
    let mut contacts = [Uuid::nil(); 2];
    for (i, name) in ["Ana", "Bruno"].into_iter().enumerate() {
        let resp = app
            .send(
                Req::post("/api/v1/contacts")
                    .by(&admin)
                    .json(json!({ "name": name })),
            )
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
        contacts[i] = resp.uuid("/id");
    }
    let execution_id = Uuid::new_v4();
    append(app, owner.tenant_id, "review.approved", None).await;
    append(app, owner.tenant_id, "review.rejected", None).await;
    append(app, owner.tenant_id, "agent.executed", Some(execution_id)).await;
    World {
        owner,
        admin,
        auditor,
        contacts,
        execution_id,
    }
}

/// Appends an event the way the platform does, through the chain function.
async fn append(app: &TestApp, tenant_id: Uuid, action: &str, execution_id: Option<Uuid>) {
    let mut conn = app.superuser().await;
    sqlx::query(
        "SELECT audit_append($1, 'system', NULL, $2, 'conversation', $3, NULL, '{}'::jsonb,
                             NULL, NULL, NULL, $4)",
    )
    .bind(tenant_id)
    .bind(action)
    .bind(Uuid::new_v4().to_string())
    .bind(execution_id)
    .execute(&mut conn)
    .await
    .unwrap();
}

async fn search(app: &TestApp, who: &Member, query: &str) -> Vec<Value> {
    let resp = app
        .send(Req::get(format!("/api/v1/audit/events?{query}")).by(who))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{query}: {}", resp.body);
    resp.body["events"].as_array().unwrap().clone()
}

fn enc(value: &str) -> String {
    value
        .replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
}

// proves: AUD-4
#[tokio::test]
async fn an_auditor_and_an_admin_can_search_by_actor_entity_action_time_and_execution() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let t = w.owner.tenant_id;
    let total = app
        .count(&format!(
            "SELECT count(*) FROM audit_event WHERE tenant_id = '{t}'"
        ))
        .await;

    for who in [&w.admin, &w.auditor] {
        // By actor: exactly the admin's own events.
        let by_admin = search(
            &app,
            who,
            &format!("actor_type=member&actor_id={}", w.admin.member_id),
        )
        .await;
        let expected = app
            .count(&format!(
                "SELECT count(*) FROM audit_event WHERE tenant_id = '{t}'
                 AND actor_type = 'member' AND actor_id = '{}'",
                w.admin.member_id
            ))
            .await;
        assert_eq!(by_admin.len() as i64, expected);
        assert!(by_admin.len() >= 2);
        assert!(by_admin
            .iter()
            .all(|e| e["actor_id"] == json!(w.admin.member_id.to_string())));

        // By entity: the one contact's creation, nothing of the other.
        let by_entity = search(
            &app,
            who,
            &format!("entity_type=contact&entity_id={}", w.contacts[0]),
        )
        .await;
        assert_eq!(by_entity.len(), 1, "{by_entity:?}");
        assert_eq!(by_entity[0]["action"], "contact.created");

        // By exact action and by prefix.
        let created = search(&app, who, "action=contact.created").await;
        assert_eq!(created.len(), 2);
        let reviews = search(&app, who, "action_prefix=review.").await;
        let actions: Vec<&str> = reviews
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["review.rejected", "review.approved"]);

        // By execution id.
        let by_execution = search(&app, who, &format!("execution_id={}", w.execution_id)).await;
        assert_eq!(by_execution.len(), 1);
        assert_eq!(by_execution[0]["action"], "agent.executed");

        // By time range: from the second contact's creation on, and before it.
        let pivot = created[0]["occurred_at"].as_str().unwrap().to_string();
        let later = search(&app, who, &format!("from={}", enc(&pivot))).await;
        let earlier = search(&app, who, &format!("to={}", enc(&pivot))).await;
        assert!(later.iter().any(|e| e["id"] == created[0]["id"]));
        assert!(earlier.iter().all(|e| e["id"] != created[0]["id"]));
        assert!(earlier.iter().any(|e| e["id"] == created[1]["id"]));
        assert!(
            later.len() + earlier.len() >= total as usize,
            "the two halves cover the log"
        );
        let both = search(
            &app,
            who,
            &format!("action=contact.created&to={}", enc(&pivot)),
        )
        .await;
        assert_eq!(both.len(), 1);
        assert_eq!(both[0]["id"], created[1]["id"]);
    }

    // The cursor pages through without overlap.
    let first = app
        .send(Req::get("/api/v1/audit/events?limit=3").by(&w.auditor))
        .await;
    let cursor = first.body["next_cursor"].as_i64().unwrap();
    let second = search(&app, &w.auditor, &format!("limit=3&before_seq={cursor}")).await;
    assert!(second.iter().all(|e| e["seq"].as_i64().unwrap() < cursor));
}

// proves: AUD-4
#[tokio::test]
async fn an_agent_can_neither_search_nor_export_the_audit_log() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    for req in [
        Req::get("/api/v1/audit/events"),
        Req::get("/api/v1/audit/exports"),
        Req::post("/api/v1/audit/exports").json(json!({ "format": "csv" })),
    ] {
        let resp = app.send(req.by(&agent)).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN);
        assert_eq!(resp.error_code(), "forbidden");
    }
    assert_eq!(app.count("SELECT count(*) FROM audit_export").await, 0);
}

// proves: AUD-4
#[tokio::test]
async fn bad_searches_and_export_requests_are_refused_and_create_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    for (query, code) in [
        ("execution_id=not-a-uuid", "invalid_query"),
        ("tenant_id=x", "invalid_query"),
        ("limit=0", "invalid_limit"),
        ("action_prefix=", "invalid_filter"),
    ] {
        let resp = app
            .send(Req::get(format!("/api/v1/audit/events?{query}")).by(&owner))
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(resp.error_code(), code, "{query}");
    }
    for (body, code) in [
        (json!({ "format": "xml" }), "invalid_format"),
        (json!({}), "invalid_format"),
        (
            json!({ "format": "csv", "tenant_id": "x" }),
            "invalid_filter",
        ),
    ] {
        let resp = app
            .send(
                Req::post("/api/v1/audit/exports")
                    .by(&owner)
                    .json(body.clone()),
            )
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(resp.error_code(), code, "{body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM audit_export").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM job WHERE kind = 'audit.export'")
            .await,
        0
    );
    assert!(app
        .audit_events(owner.tenant_id, "audit.export_requested")
        .await
        .is_empty());
}

#[tokio::test]
async fn a_range_that_ends_before_it_starts_matches_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let reversed = "from=2030-01-01T00%3A00%3A00Z&to=2020-01-01T00%3A00%3A00Z";
    let all = app.send(Req::get("/api/v1/audit/events").by(&owner)).await;
    assert!(!all.body["events"].as_array().unwrap().is_empty());
    let resp = app
        .send(Req::get(format!("/api/v1/audit/events?{reversed}")).by(&owner))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(resp.body["events"], json!([]));
    let resp = app
        .send(
            Req::get(
                "/api/v1/request-log?from=2030-01-01T00%3A00%3A00Z&until=2020-01-01T00%3A00%3A00Z",
            )
            .by(&owner),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(resp.body["items"], json!([]));
}

// proves: AUD-4
#[tokio::test]
async fn a_filter_of_200_characters_is_accepted_whatever_their_bytes_and_one_more_is_refused() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    // The document says 200 characters; "é" takes two bytes.
    for (n, status) in [(200, StatusCode::OK), (201, StatusCode::BAD_REQUEST)] {
        let resp = app
            .send(
                Req::get(format!(
                    "/api/v1/audit/events?actor_id={}",
                    "%C3%A9".repeat(n)
                ))
                .by(&owner),
            )
            .await;
        assert_eq!(resp.status, status, "{n}: {}", resp.body);
    }
    for (n, status) in [(200, StatusCode::ACCEPTED), (201, StatusCode::BAD_REQUEST)] {
        let resp = app
            .send(
                Req::post("/api/v1/audit/exports")
                    .by(&owner)
                    .json(json!({ "format": "json", "entity_id": "é".repeat(n) })),
            )
            .await;
        assert_eq!(resp.status, status, "{n}: {}", resp.body);
        if status == StatusCode::BAD_REQUEST {
            assert_eq!(resp.error_code(), "invalid_filter");
        }
    }
    assert_eq!(app.count("SELECT count(*) FROM audit_export").await, 1);
}

/// Asks for an export, waits for it to be done, and downloads it.
async fn export(app: &TestApp, who: &Member, body: Value) -> (Value, crate::common::Resp) {
    let resp = app
        .send(Req::post("/api/v1/audit/exports").by(who).json(body))
        .await;
    assert_eq!(resp.status, StatusCode::ACCEPTED, "{}", resp.body);
    let id = resp.uuid("/id");
    let done = eventually(20, "the export to finish", || async {
        let resp = app
            .send(Req::get(format!("/api/v1/audit/exports/{id}")).by(who))
            .await;
        (resp.body["status"] == "done").then_some(resp.body)
    })
    .await;
    let file = app
        .send(Req::get(format!("/api/v1/audit/exports/{id}/download")).by(who))
        .await;
    assert_eq!(file.status, StatusCode::OK, "{}", file.body);
    (done, file)
}

fn fast(app_config: &mut custodian::config::Config) {
    app_config.worker.poll = std::time::Duration::from_millis(50);
}

/// Splits an all-quoted CSV document into records of cells.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => record.push(std::mem::take(&mut cell)),
            ('\r', false) => {}
            ('\n', false) => {
                record.push(std::mem::take(&mut cell));
                records.push(std::mem::take(&mut record));
            }
            (c, _) => cell.push(c),
        }
    }
    records
}

// proves: AUD-4, AUD-2
#[tokio::test]
async fn a_csv_and_a_json_export_of_a_filtered_log_hold_exactly_the_matching_events() {
    let app = TestApp::spawn_with(fast).await;
    app.start_workers();
    let w = world(&app).await;
    let expected: Vec<String> = search(&app, &w.auditor, "action=contact.created")
        .await
        .iter()
        .rev()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(expected.len(), 2);

    let (progress, file) = export(
        &app,
        &w.auditor,
        json!({ "format": "csv", "action": "contact.created" }),
    )
    .await;
    assert_eq!(progress["rows_total"], 2);
    assert_eq!(progress["rows_done"], 2);
    assert_eq!(
        file.headers[header::CONTENT_TYPE],
        "text/csv; charset=utf-8"
    );
    let id = progress["id"].as_str().unwrap();
    assert_eq!(
        file.headers[header::CONTENT_DISPOSITION],
        format!("attachment; filename=\"audit-export-{id}.csv\"").as_str()
    );
    let records = parse_csv(file.body.as_str().unwrap());
    assert_eq!(records[0][..3], ["seq", "id", "occurred_at"]);
    let ids: Vec<&str> = records[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(ids, expected);
    assert!(records[1..].iter().all(|r| r[5] == "contact.created"));

    let (progress, file) = export(
        &app,
        &w.admin,
        json!({ "format": "json", "action_prefix": "review." }),
    )
    .await;
    assert_eq!(progress["rows_done"], 2);
    assert_eq!(file.headers[header::CONTENT_TYPE], "application/json");
    let actions: Vec<&str> = file
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["review.approved", "review.rejected"]);

    // Both exports were asked for and downloaded on the record, by whom and in which format.
    let requested = app
        .audit_events(w.owner.tenant_id, "audit.export_requested")
        .await;
    assert_eq!(requested.len(), 2);
    assert_eq!(
        requested[0]["actor_id"],
        json!(w.auditor.member_id.to_string())
    );
    assert_eq!(
        requested[0]["after"]["filters"]["action"],
        "contact.created"
    );
    let downloaded = app
        .audit_events(w.owner.tenant_id, "audit.export_downloaded")
        .await;
    assert_eq!(downloaded.len(), 2);
    assert_eq!(downloaded[1]["entity_id"], progress["id"]);
    // The chain still holds after all that.
    let verify = app
        .send(Req::get("/api/v1/audit/verify").by(&w.auditor))
        .await;
    assert_eq!(verify.body["valid"], true, "{}", verify.body);
}

// proves: AUD-4
#[tokio::test]
async fn an_export_larger_than_a_batch_is_written_in_chunks_with_progress_to_done() {
    let app = TestApp::spawn_with(fast).await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let mut conn = app.superuser().await;
    sqlx::query(
        "SELECT audit_append($1, 'system', NULL, 'bulk.event', 'thing', g::text, NULL, NULL,
                             NULL, NULL, NULL, NULL)
         FROM generate_series(1, 2345) g",
    )
    .bind(owner.tenant_id)
    .execute(&mut conn)
    .await
    .unwrap();
    let (progress, file) = export(
        &app,
        &owner,
        json!({ "format": "json", "action": "bulk.event" }),
    )
    .await;
    assert_eq!(progress["rows_total"], 2345);
    assert_eq!(progress["rows_done"], 2345);
    let id = progress["id"].as_str().unwrap();
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM audit_export_chunk WHERE export_id = '{id}'"
        ))
        .await,
        3
    );
    let events = file.body.as_array().unwrap();
    assert_eq!(events.len(), 2345);
    let entity_ids: Vec<String> = events
        .iter()
        .map(|e| e["entity_id"].as_str().unwrap().to_string())
        .collect();
    let wanted: Vec<String> = (1..=2345).map(|i| i.to_string()).collect();
    assert_eq!(
        entity_ids, wanted,
        "in chain order, none twice, none missing"
    );
    let list = app.send(Req::get("/api/v1/audit/exports").by(&owner)).await;
    assert_eq!(list.body[0]["id"], progress["id"]);
    assert_eq!(list.body[0]["status"], "done");
}

// proves: AUD-4
#[tokio::test]
async fn csv_exports_neutralise_spreadsheet_formulas() {
    let app = TestApp::spawn_with(fast).await;
    app.start_workers();
    let owner = app.signup("acme").await;
    for ua in [
        "=HYPERLINK(\"http://evil.example\",\"x\")",
        "+1+1",
        "-2",
        "@SUM(A1)",
    ] {
        let resp = app
            .send(
                Req::post("/api/v1/contacts")
                    .by(&owner)
                    .header("user-agent", ua)
                    .json(json!({ "name": "=cmd|'/C calc'!A0" })),
            )
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    }
    let (_, file) = export(
        &app,
        &owner,
        json!({ "format": "csv", "action": "contact.created" }),
    )
    .await;
    let text = file.body.as_str().unwrap();
    let records = parse_csv(text);
    let agents: Vec<&str> = records[1..].iter().map(|r| r[11].as_str()).collect();
    assert_eq!(
        agents,
        [
            "'=HYPERLINK(\"http://evil.example\",\"x\")",
            "'+1+1",
            "'-2",
            "'@SUM(A1)"
        ]
    );
    for record in &records[1..] {
        for cell in record {
            assert!(
                !cell.starts_with(['=', '+', '-', '@']),
                "a live formula: {cell}"
            );
        }
    }
}

// proves: AUD-4
#[tokio::test]
async fn an_export_that_is_not_finished_cannot_be_downloaded_yet() {
    // No worker: the export stays queued.
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let resp = app
        .send(
            Req::post("/api/v1/audit/exports")
                .by(&owner)
                .json(json!({ "format": "csv" })),
        )
        .await;
    assert_eq!(resp.body["status"], "queued");
    let id = resp.uuid("/id");
    let file = app
        .send(Req::get(format!("/api/v1/audit/exports/{id}/download")).by(&owner))
        .await;
    assert_eq!(file.status, StatusCode::CONFLICT);
    assert_eq!(file.error_code(), "export_not_ready");
    assert!(app
        .audit_events(owner.tenant_id, "audit.export_downloaded")
        .await
        .is_empty());
}

/// A query-string value with the characters route templates hold.
fn q(value: &str) -> String {
    enc(value)
        .replace('{', "%7B")
        .replace('}', "%7D")
        .replace('/', "%2F")
}

async fn request_log(app: &TestApp, who: &Member, query: &str) -> Value {
    app.state.request_log.flush().await;
    let resp = app
        .send(Req::get(format!("/api/v1/request-log?{query}")).by(who))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{query}: {}", resp.body);
    resp.body
}

// proves: RET-1
#[tokio::test]
async fn an_authenticated_request_is_logged_with_its_route_template_and_member() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let contact = w.contacts[0];
    let shown = app
        .send(
            Req::get(format!("/api/v1/contacts/{contact}"))
                .by(&w.admin)
                .header("user-agent", "inbox-tests/1.0")
                .client_ip("203.0.113.9"),
        )
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    let request_id = shown.headers["x-request-id"].to_str().unwrap().to_string();
    // A member refused by the permission table is named too.
    let refused = app
        .send(
            Req::post("/api/v1/contacts")
                .by(&w.auditor)
                .json(json!({ "name": "Mallory" })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // An API token's requests carry the token.
    let (token_id, token) = app.token(&w.owner, "auditor").await;
    let by_token = app.send(Req::get("/api/v1/contacts").bearer(&token)).await;
    assert_eq!(by_token.status, StatusCode::OK, "{}", by_token.body);

    let route = "/api/v1/contacts/{contact_id}";
    let log = request_log(
        &app,
        &w.auditor,
        &format!("member_id={}&route={}", w.admin.member_id, q(route)),
    )
    .await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{log}");
    let entry = &items[0];
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["route"], route);
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["ip"], "203.0.113.9");
    assert_eq!(entry["user_agent"], "inbox-tests/1.0");
    assert_eq!(entry["request_id"], request_id);
    assert!(entry["api_token_id"].is_null());
    assert!(entry["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        !log.to_string().contains(&contact.to_string()),
        "the raw path with its id was logged"
    );
    let forbidden = request_log(&app, &w.admin, "status=403").await;
    let forbidden = forbidden["items"].as_array().unwrap();
    assert_eq!(forbidden.len(), 1);
    assert_eq!(forbidden[0]["member_id"], w.auditor.member_id.to_string());
    assert_eq!(forbidden[0]["route"], "/api/v1/contacts");
    assert_eq!(forbidden[0]["method"], "POST");
    let tokens = request_log(&app, &w.admin, &format!("api_token_id={token_id}")).await;
    assert_eq!(tokens["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        tokens["items"][0]["member_id"],
        w.owner.member_id.to_string()
    );

    // Newest first, a page at a time.
    let page = request_log(&app, &w.admin, "limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let next = request_log(&app, &w.admin, &format!("limit=2&before={cursor}")).await;
    let first_ids: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["id"])
        .collect();
    for item in next["items"].as_array().unwrap() {
        assert!(!first_ids.contains(&&item["id"]));
        assert!(item["id"].as_str().unwrap() < cursor.as_str());
    }
    // Reading it needs the permission.
    let agent = app.join(&w.owner, "agent").await;
    let denied = app.send(Req::get("/api/v1/request-log").by(&agent)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let bad = app
        .send(Req::get("/api/v1/request-log?limit=0").by(&w.admin))
        .await;
    assert_eq!(bad.error_code(), "invalid_limit");
}

// proves: RET-1
#[tokio::test]
async fn an_unauthenticated_request_is_not_attributed_to_any_tenant() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    for req in [
        Req::get("/api/v1/contacts"),
        Req::get("/api/v1/contacts").cookie("forged"),
        Req::get("/api/v1/contacts").bearer("cst_not-a-real-token"),
    ] {
        assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    }
    // Public routes (login, the web chat) leave nothing either.
    let login = app.login("acme", &owner.email, "not the password").await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED);
    let inbox = app.webchat_inbox(&owner, "https://acme.example").await;
    app.visitor_writes(inbox, "hello").await;
    app.state.request_log.flush().await;
    assert_eq!(
        app.count("SELECT count(*) FROM request_log WHERE route <> '/api/v1/inboxes'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM request_log").await,
        1,
        "only the owner's request that made the inbox"
    );
}

// proves: RET-1
#[tokio::test]
async fn another_tenants_request_log_is_invisible() {
    let app = TestApp::spawn().await;
    let w = world(&app).await;
    let other = app.signup("globex").await;
    app.send(Req::get("/api/v1/contacts").by(&w.admin)).await;
    app.state.request_log.flush().await;
    assert!(
        app.count(&format!(
            "SELECT count(*) FROM request_log WHERE tenant_id = '{}'",
            w.owner.tenant_id
        ))
        .await
            > 0
    );
    let theirs = request_log(&app, &other, "").await;
    for item in theirs["items"].as_array().unwrap() {
        assert_eq!(item["member_id"], other.member_id.to_string(), "{item}");
    }
    let filtered = request_log(&app, &other, &format!("member_id={}", w.admin.member_id)).await;
    assert_eq!(filtered["items"], json!([]));
}

// proves: AUD-4
#[tokio::test]
async fn an_export_is_seen_running_with_partial_progress_before_it_is_done() {
    let app = TestApp::spawn_with(fast).await;
    let owner = app.signup("acme").await;
    let mut conn = app.superuser().await;
    sqlx::query(
        "SELECT audit_append($1, 'system', NULL, 'bulk.event', 'thing', g::text, NULL, NULL,
                             NULL, NULL, NULL, NULL)
         FROM generate_series(1, 2345) g",
    )
    .bind(owner.tenant_id)
    .execute(&mut conn)
    .await
    .unwrap();
    // The second chunk waits for a lock this test holds: the job stops after its first batch
    // until the test has looked, whatever the machine's speed.
    sqlx::raw_sql(
        "CREATE FUNCTION test_hold_second_chunk() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.ordinal = 1 THEN PERFORM pg_advisory_xact_lock(4242); END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER test_hold_second_chunk BEFORE INSERT ON audit_export_chunk
             FOR EACH ROW EXECUTE FUNCTION test_hold_second_chunk();
         SELECT pg_advisory_lock(4242);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    app.start_workers();
    let resp = app
        .send(
            Req::post("/api/v1/audit/exports")
                .by(&owner)
                .json(json!({ "format": "csv", "action": "bulk.event" })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::ACCEPTED, "{}", resp.body);
    let id = resp.uuid("/id");
    let running = eventually(20, "the first batch", || async {
        let resp = app
            .send(Req::get(format!("/api/v1/audit/exports/{id}")).by(&owner))
            .await;
        (resp.body["rows_done"] == 1000).then_some(resp.body)
    })
    .await;
    assert_eq!(running["status"], "running", "{running}");
    assert_eq!(running["rows_total"], 2345);
    let early = app
        .send(Req::get(format!("/api/v1/audit/exports/{id}/download")).by(&owner))
        .await;
    assert!(early.status.is_client_error(), "{}", early.status);
    sqlx::query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut conn)
        .await
        .unwrap();
    let done = eventually(20, "the export to finish", || async {
        let resp = app
            .send(Req::get(format!("/api/v1/audit/exports/{id}")).by(&owner))
            .await;
        (resp.body["status"] == "done").then_some(resp.body)
    })
    .await;
    assert_eq!(done["rows_done"], 2345);
}

// proves: RET-1
#[tokio::test]
async fn a_request_dropped_by_the_timeout_is_still_logged_as_unfinished() {
    let app = TestApp::spawn_with(|c| c.request_timeout = std::time::Duration::from_secs(2)).await;
    let owner = app.signup("acme").await;
    let reviewer = app.join(&owner, "reviewer").await;
    let inbox = app.webchat_inbox(&owner, "https://acme.example").await;
    let (_, conversation) = app.visitor_writes(inbox, "hello").await;
    let item = app
        .send(Req::post("/api/v1/reviews").by(&owner).json(json!({
            "kind": "human_review", "conversation_id": conversation, "note": "please look"
        })))
        .await
        .uuid("/id");
    // The item is locked elsewhere: the approval waits past the request timeout.
    let mut conn = app.superuser().await;
    let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
    sqlx::query("SELECT id FROM review_item WHERE id = $1 FOR UPDATE")
        .bind(item)
        .execute(&mut *tx)
        .await
        .unwrap();
    let timed_out = app
        .send(
            Req::post(format!("/api/v1/reviews/{item}/approve"))
                .by(&reviewer)
                .json(json!({ "outcome": "upheld" })),
        )
        .await;
    assert_eq!(timed_out.status, StatusCode::REQUEST_TIMEOUT);
    tx.rollback().await.unwrap();
    let log = request_log(
        &app,
        &owner,
        &format!("route={}", q("/api/v1/reviews/{review_id}/approve")),
    )
    .await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{log}");
    assert_eq!(items[0]["status"], 499);
    assert_eq!(items[0]["member_id"], reviewer.member_id.to_string());
}

// proves: RET-1
#[tokio::test]
async fn on_shutdown_the_request_log_writer_writes_what_was_queued_and_stops() {
    let app = TestApp::spawn().await;
    let writer = app
        .state
        .request_log
        .start()
        .expect("the writer was not running yet");
    let owner = app.signup("acme").await;
    for _ in 0..3 {
        app.send(Req::get("/api/v1/contacts").by(&owner)).await;
    }
    app.state.shutdown.cancel();
    writer.await.expect("the writer ends cleanly");
    assert_eq!(
        app.count("SELECT count(*) FROM request_log WHERE route = '/api/v1/contacts'")
            .await,
        3
    );
    assert_eq!(app.state.request_log.dropped(), 0);
}
