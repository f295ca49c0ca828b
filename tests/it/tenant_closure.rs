//! Tenant closure (RET-2): the owner closes the tenant; every other member is refused at once and
//! the owner keeps only the export, the closure's status and reopening; the tenant's channels
//! stop taking messages; after the 60-day grace period the purge deletes every row of the tenant
//! in every table the catalog lists, audit log and vault included, and records the deletion with
//! counts, while another tenant keeps everything.

use std::collections::BTreeMap;
use std::io::Read;

use axum::http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sqlx::Row;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use tower::ServiceExt;
use uuid::Uuid;

use crate::common::{eventually, Member, Req, TestApp};

/// Tables that hold no tenant's rows, each for a stated reason. Any other table of the schema
/// must have a `tenant_id` column, or the purge (which finds tables by that column) would miss
/// it: a new table that breaks the rule fails the purge test until it is decided here.
const NOT_TENANT_TABLES: &[&str] = &[
    // sqlx's record of the migrations run.
    "_sqlx_migrations",
    // The tenants themselves: counted by `id`.
    "tenant",
    // What is left of a purged tenant: its id, dates and row counts, no data.
    "tenant_deletion",
];

/// Every table of the schema, from the catalog, and whether it has a `tenant_id` column.
async fn catalog(app: &TestApp) -> Vec<(String, bool)> {
    let mut conn = app.superuser().await;
    sqlx::query(
        "SELECT t.table_name::text AS name, EXISTS (
                SELECT 1 FROM information_schema.columns c
                WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name
                  AND c.column_name = 'tenant_id') AS scoped
         FROM information_schema.tables t
         WHERE t.table_schema = 'public' AND t.table_type = 'BASE TABLE'
         ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .map(|row| (row.get("name"), row.get("scoped")))
    .collect()
}

/// The tenant's rows in every table of the catalog, past row-level security. Fails on a table
/// that is neither scoped by `tenant_id` nor listed in [`NOT_TENANT_TABLES`].
async fn rows_of(app: &TestApp, tenant_id: Uuid) -> BTreeMap<String, i64> {
    let mut conn = app.superuser().await;
    let mut counts = BTreeMap::new();
    for (table, scoped) in catalog(app).await {
        let filter = if scoped {
            "tenant_id"
        } else if table == "tenant" {
            "id"
        } else {
            assert!(
                NOT_TENANT_TABLES.contains(&table.as_str()),
                "table {table} has no tenant_id column: the purge cannot find a tenant's rows \
                 in it; add the column (or, if it holds nothing of any tenant, list it in \
                 NOT_TENANT_TABLES with the reason)"
            );
            continue;
        };
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{table}\" WHERE {filter} = $1"
        )))
        .bind(tenant_id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        counts.insert(table, n);
    }
    counts
}

/// The rows of a tenant once nothing is under way: no job pending, the request log written.
async fn settled_rows_of(app: &TestApp, tenant_id: Uuid) -> BTreeMap<String, i64> {
    app.settled(
        "SELECT count(*) FROM job WHERE status NOT IN ('done', 'dead')",
        0,
    )
    .await;
    app.state.request_log.flush().await;
    rows_of(app, tenant_id).await
}

async fn created(app: &TestApp, who: &Member, path: &str, body: Value) -> Uuid {
    let resp = app.send(Req::post(path).by(who).json(body)).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{path}: {}", resp.body);
    resp.uuid("/id")
}

/// The raw bytes of a response: a zip is no text.
async fn send_raw(app: &TestApp, req: Req) -> (StatusCode, Vec<u8>) {
    let response = app
        .router
        .clone()
        .oneshot(req.build())
        .await
        .expect("infallible router");
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

fn unzip(bytes: Vec<u8>) -> BTreeMap<String, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    let mut files = BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        files.insert(file.name().unwrap().to_string(), text);
    }
    files
}

/// Asks for a tenant export and waits until it is written; returns its last view.
async fn tenant_export_done(app: &TestApp, owner: &Member) -> Value {
    let asked = app
        .send(Req::post("/api/v1/tenant/exports").by(owner))
        .await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    let id = asked.uuid("/id");
    eventually(30, "the tenant export to be written", || async {
        let seen = app
            .send(Req::get(format!("/api/v1/tenant/exports/{id}")).by(owner))
            .await;
        assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
        assert_ne!(seen.body["status"], "failed", "{}", seen.body);
        (seen.body["status"] == "done").then_some(seen.body)
    })
    .await
}

/// Data in as many of the tenant's tables as the API reaches: members, invitations, a partner,
/// a token, accounts and contacts, a web chat conversation (contact, conversation, message,
/// session, tallies), knowledge, tickets and tasks, a released legal hold, a canned reply, a
/// consent, a data-subject request with a note, a review, a contact export and a tenant export,
/// an agent execution, and the audit log and request log all of it wrote.
async fn seed(app: &TestApp, owner: &Member) -> Uuid {
    let agent = app.join(owner, "agent").await;
    app.join(owner, "partner").await;
    app.token(owner, "agent").await;
    let account = created(app, owner, "/api/v1/accounts", json!({ "name": "Globex" })).await;
    let contact = created(
        app,
        owner,
        "/api/v1/contacts",
        json!({ "name": "Gina Globex", "email": "gina@globex.example", "account_id": account }),
    )
    .await;
    let inbox = app.webchat_inbox(owner, "https://shop.example").await;
    let (_, conversation) = app
        .visitor_writes(
            inbox,
            "My order never arrived, write me at vera@visitor.example",
        )
        .await;
    created(
        app,
        owner,
        "/api/v1/knowledge/articles",
        json!({ "title": "Returns", "body": "Return any item within 30 days of delivery." }),
    )
    .await;
    let ticket = created(
        app,
        &agent,
        "/api/v1/tickets",
        json!({ "subject": "Order missing", "description": "Since Monday." }),
    )
    .await;
    created(
        app,
        &agent,
        &format!("/api/v1/tickets/{ticket}/comments"),
        json!({ "body": "Carrier asked." }),
    )
    .await;
    created(
        app,
        &agent,
        "/api/v1/tasks",
        json!({ "title": "Call Gina" }),
    )
    .await;
    let hold = created(
        app,
        owner,
        "/api/v1/legal-holds",
        json!({ "entity_type": "contact", "entity_id": contact, "reason": "pending lawsuit" }),
    )
    .await;
    let released = app
        .send(Req::delete(format!("/api/v1/legal-holds/{hold}")).by(owner))
        .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    created(
        app,
        owner,
        "/api/v1/canned-replies",
        json!({ "shortcut": "thanks", "title": "Thanks", "body": "Thank you!" }),
    )
    .await;
    created(
        app,
        owner,
        &format!("/api/v1/contacts/{contact}/consents"),
        json!({ "purpose": "marketing", "legal_basis": "consent", "source": "form",
                "text_version": "newsletter-2026-03" }),
    )
    .await;
    let request = created(
        app,
        owner,
        "/api/v1/privacy/requests",
        json!({ "type": "access", "contact_id": contact, "requester": "data_subject",
                "identity_check": "document" }),
    )
    .await;
    created(
        app,
        owner,
        &format!("/api/v1/privacy/requests/{request}/notes"),
        json!({ "body": "Identity checked." }),
    )
    .await;
    created(
        app,
        owner,
        "/api/v1/reviews",
        json!({ "kind": "human_review", "conversation_id": conversation, "note": "Check this" }),
    )
    .await;
    let export = app
        .send(
            Req::post(format!("/api/v1/contacts/{contact}/exports"))
                .by(owner)
                .json(json!({})),
        )
        .await;
    assert_eq!(export.status, StatusCode::ACCEPTED, "{}", export.body);
    tenant_export_done(app, owner).await;
    let mut conn = app.superuser().await;
    sqlx::query(
        "INSERT INTO agent_execution (id, tenant_id, conversation_id, contact_id, provider, model, offline, outcome)
         SELECT $1, tenant_id, id, contact_id, 'offline', 'offline', true, 'replied' FROM conversation WHERE id = $2",
    )
    .bind(Uuid::new_v4())
    .bind(conversation)
    .execute(&mut conn)
    .await
    .unwrap();
    inbox
}

fn without_request_log(mut rows: BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    rows.remove("request_log");
    rows
}

// proves: RET-2
#[tokio::test]
async fn a_closed_tenant_leaves_no_row_in_any_table_of_the_catalog_after_its_grace_period_while_another_keeps_all(
) {
    let app = TestApp::spawn().await;
    app.start_workers();
    let gone = app.signup("closing").await;
    seed(&app, &gone).await;
    let kept = app.signup("staying").await;
    seed(&app, &kept).await;

    let closed = app
        .send(
            Req::post("/api/v1/tenant/closure")
                .by(&gone)
                .json(json!({ "confirm_slug": "closing" })),
        )
        .await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    let purge_after =
        OffsetDateTime::parse(closed.body["purge_after"].as_str().unwrap(), &Rfc3339).unwrap();
    let closed_at =
        OffsetDateTime::parse(closed.body["closed_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(purge_after - closed_at, Duration::days(60));

    let gone_rows = settled_rows_of(&app, gone.tenant_id).await;
    let kept_rows = settled_rows_of(&app, kept.tenant_id).await;
    let seeded: Vec<&String> = gone_rows
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(t, _)| t)
        .collect();
    let empty: Vec<&String> = gone_rows
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(t, _)| t)
        .collect();
    assert!(
        seeded.len() >= 28,
        "only {} tables hold the tenant's rows; empty: {empty:?}",
        seeded.len()
    );
    for table in ["audit_event", "message", "member", "job", "tenant"] {
        assert!(gone_rows[table] > 0, "{table} was not seeded");
    }

    // Within the grace period the purge deletes nothing.
    for now in [
        OffsetDateTime::now_utc(),
        purge_after - Duration::minutes(1),
    ] {
        let purged = custodian::tenants::closure::purge_due(&app.state.db, now)
            .await
            .unwrap();
        assert!(purged.is_empty(), "purged before its time: {now}");
    }
    assert_eq!(
        without_request_log(rows_of(&app, gone.tenant_id).await),
        without_request_log(gone_rows.clone())
    );

    let purged = custodian::tenants::closure::purge_due(&app.state.db, purge_after)
        .await
        .unwrap();
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].tenant_id, gone.tenant_id);

    // Nothing of the closed tenant remains, in any table.
    let after = rows_of(&app, gone.tenant_id).await;
    let left: Vec<_> = after.iter().filter(|(_, n)| **n > 0).collect();
    assert!(
        left.is_empty(),
        "rows of the purged tenant remain: {left:?}"
    );
    // The other tenant lost nothing (its request log may only grow: it is written later).
    let kept_after = rows_of(&app, kept.tenant_id).await;
    assert_eq!(
        without_request_log(kept_after.clone()),
        without_request_log(kept_rows.clone())
    );
    assert!(kept_after["request_log"] >= kept_rows["request_log"]);
    let me = app.send(Req::get("/api/v1/auth/me").by(&kept)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);

    // The deletion is recorded outside the tenant: its id, dates and what went, table by table.
    let mut conn = app.superuser().await;
    let record = sqlx::query(
        "SELECT closed_at, purge_after, purged_at, row_counts FROM tenant_deletion
         WHERE deleted_tenant_id = $1",
    )
    .bind(gone.tenant_id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let counts: Value = record.get("row_counts");
    for (table, n) in &gone_rows {
        if table == "request_log" {
            assert!(counts[table].as_i64().unwrap() >= *n);
            continue;
        }
        assert_eq!(counts[table], json!(n), "{table} in {counts}");
    }
    assert_eq!(
        record.get::<OffsetDateTime, _>("purge_after"),
        purge_after,
        "{counts}"
    );
    // Its record holds no data: counts per table and dates only.
    assert!(counts.as_object().unwrap().values().all(Value::is_number));
    // The slug is free again: nothing of the tenant is left to hold it.
    let again = app.signup("closing").await;
    assert_ne!(again.tenant_id, gone.tenant_id);
}

// proves: RET-2
#[tokio::test]
async fn closing_refuses_other_members_at_once_leaves_the_owner_export_and_reopen_and_reopening_restores_everyone(
) {
    let app = TestApp::spawn().await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let admin = app.join(&owner, "admin").await;
    let (_, admin_token) = app.token(&admin, "admin").await;
    let contact = created(
        &app,
        &owner,
        "/api/v1/contacts",
        json!({ "name": "Gina Globex" }),
    )
    .await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (visitor, _) = app.visitor_writes(inbox, "Hello there").await;

    // Only the owner closes, and only naming the tenant; a refusal changes nothing.
    let by_admin = app
        .send(
            Req::post("/api/v1/tenant/closure")
                .by(&admin)
                .json(json!({ "confirm_slug": "acme" })),
        )
        .await;
    assert_eq!(by_admin.status, StatusCode::FORBIDDEN);
    let mistyped = app
        .send(
            Req::post("/api/v1/tenant/closure")
                .by(&owner)
                .json(json!({ "confirm_slug": "acne" })),
        )
        .await;
    assert_eq!(mistyped.status, StatusCode::CONFLICT, "{}", mistyped.body);
    assert_eq!(mistyped.error_code(), "confirmation_mismatch");
    // A legal hold would outlive the purge: closing waits until it is released.
    let hold = created(
        &app,
        &owner,
        "/api/v1/legal-holds",
        json!({ "entity_type": "contact", "entity_id": contact, "reason": "pending lawsuit" }),
    )
    .await;
    let held = app
        .send(
            Req::post("/api/v1/tenant/closure")
                .by(&owner)
                .json(json!({ "confirm_slug": "acme" })),
        )
        .await;
    assert_eq!(held.status, StatusCode::CONFLICT, "{}", held.body);
    assert_eq!(held.error_code(), "legal_hold");
    app.send(Req::delete(format!("/api/v1/legal-holds/{hold}")).by(&owner))
        .await;
    assert_eq!(
        app.count("SELECT count(*) FROM tenant WHERE status = 'active'")
            .await,
        1
    );
    assert!(app
        .audit_events(owner.tenant_id, "tenant.closed")
        .await
        .is_empty());

    let closed = app
        .send(
            Req::post("/api/v1/tenant/closure")
                .by(&owner)
                .json(json!({ "confirm_slug": " acme " })),
        )
        .await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    assert_eq!(closed.body["status"], "closing");
    assert_eq!(closed.body["closed_by"], json!(owner.member_id));
    let audited = app.audit_events(owner.tenant_id, "tenant.closed").await;
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0]["after"]["status"], "closing");

    // Every other member is refused at once, by session and by token alike.
    for req in [
        Req::get("/api/v1/auth/me").by(&admin),
        Req::get("/api/v1/contacts").by(&admin),
        Req::get("/api/v1/tenant/closure").by(&admin),
        Req::get("/api/v1/auth/me").bearer(&admin_token),
    ] {
        let resp = app.send(req).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.body);
        assert_eq!(resp.error_code(), "tenant_closed");
    }
    // The owner keeps the closure, the export and reopening, and nothing else.
    for (method, path) in [
        (Method::GET, "/api/v1/contacts"),
        (Method::GET, "/api/v1/auth/me"),
        (Method::GET, "/api/v1/tenant"),
        (Method::GET, "/api/v1/audit/events"),
    ] {
        let resp = app.send(Req::new(method, path).by(&owner)).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{path}: {}", resp.body);
        assert_eq!(resp.error_code(), "tenant_closed", "{path}");
    }
    let status = app
        .send(Req::get("/api/v1/tenant/closure").by(&owner))
        .await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.body["status"], "closing");

    // Its web chat answers as an unknown inbox and stores nothing.
    let messages = app.count("SELECT count(*) FROM message").await;
    eventually(
        15,
        "the closed tenant's chat to answer as unknown",
        || async {
            let resp = app
                .send(
                    Req::get(format!("/api/v1/webchat/{inbox}/messages"))
                        .header("x-webchat-session", visitor.clone()),
                )
                .await;
            (resp.status == StatusCode::NOT_FOUND).then_some(())
        },
    )
    .await;
    let sent = app
        .send(
            Req::post(format!("/api/v1/webchat/{inbox}/messages"))
                .header("x-webchat-session", visitor.clone())
                .json(json!({ "body": "Anyone there?" })),
        )
        .await;
    assert_eq!(sent.status, StatusCode::NOT_FOUND, "{}", sent.body);
    let opened = app
        .send(
            Req::post(format!("/api/v1/webchat/{inbox}/sessions"))
                .json(json!({ "name": "Another visitor" })),
        )
        .await;
    assert_eq!(opened.status, StatusCode::NOT_FOUND, "{}", opened.body);
    assert_eq!(app.count("SELECT count(*) FROM message").await, messages);

    // The owner downloads the whole tenant: one JSON and one CSV per table.
    let done = tenant_export_done(&app, &owner).await;
    // Gina, and the visitor the web chat made a contact of.
    assert_eq!(done["counts"]["contact"], 2, "{done}");
    assert_eq!(done["progress"], 100);
    let id = done["id"].as_str().unwrap();
    let (status, bytes) = send_raw(
        &app,
        Req::get(format!("/api/v1/tenant/exports/{id}/download")).by(&owner),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done["bytes"], bytes.len());
    let files = unzip(bytes);
    for name in [
        "export.json",
        "tenant.csv",
        "contact.csv",
        "message.csv",
        "member.csv",
        "audit_event.csv",
    ] {
        assert!(files.contains_key(name), "no {name} in {:?}", files.keys());
    }
    assert!(files["contact.csv"].contains("Gina Globex"));
    let export: Value = serde_json::from_str(&files["export.json"]).unwrap();
    assert_eq!(export["tenant"]["slug"], "acme");
    assert!(
        export["message"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["body"] == "Hello there"),
        "{}",
        export["message"]
    );
    // What proves identity stays out: password hashes and credential hashes.
    assert!(export["member"][0].get("password_hash").is_none());
    assert!(export["session"][0].get("token_hash").is_none());
    assert_eq!(
        app.audit_events(owner.tenant_id, "tenant.export_downloaded")
            .await
            .len(),
        1
    );
    // Another member cannot reach it even after reopening: it is the owner's.
    let listed = app
        .send(Req::get("/api/v1/tenant/exports").by(&owner))
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body.as_array().unwrap().len(), 1);

    // Reopening brings everyone back.
    let reopened = app
        .send(Req::post("/api/v1/tenant/closure/reopen").by(&owner))
        .await;
    assert_eq!(reopened.status, StatusCode::OK, "{}", reopened.body);
    assert_eq!(reopened.body["status"], "active");
    assert_eq!(reopened.body["purge_after"], Value::Null);
    assert_eq!(
        app.audit_events(owner.tenant_id, "tenant.reopened")
            .await
            .len(),
        1
    );
    for req in [
        Req::get("/api/v1/auth/me").by(&admin),
        Req::get("/api/v1/auth/me").bearer(&admin_token),
        Req::get("/api/v1/contacts").by(&owner),
    ] {
        let resp = app.send(req).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    }
    let exports = app
        .send(Req::get("/api/v1/tenant/exports").by(&admin))
        .await;
    assert_eq!(exports.status, StatusCode::FORBIDDEN);
    let sent = app
        .send(
            Req::post(format!("/api/v1/webchat/{inbox}/messages"))
                .header("x-webchat-session", visitor)
                .json(json!({ "body": "Back again" })),
        )
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.body);
    // Reopened, the tenant is not due for any purge.
    let far = OffsetDateTime::now_utc() + Duration::days(365);
    assert!(custodian::tenants::closure::purge_due(&app.state.db, far)
        .await
        .unwrap()
        .is_empty());
    let again = app
        .send(Req::post("/api/v1/tenant/closure/reopen").by(&owner))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "tenant_not_closing");
}

#[tokio::test]
async fn the_owner_closes_exports_and_reopens_from_the_closure_page_and_other_members_cannot_open_it(
) {
    use crate::web::{csrf_field, form, html};
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let admin = app.join(&owner, "admin").await;
    let refused = app.send(Req::get("/app/tenant/closure").by(&admin)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let page = app.send(Req::get("/app/tenant/closure").by(&owner)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(html(&page).contains("data-closure=\"active\""));
    let token = csrf_field(html(&page));
    let post = |path: &str, fields: &[(&str, &str)]| {
        Req::post(path)
            .by(&owner)
            .raw("application/x-www-form-urlencoded", form(fields))
    };

    let mistyped = app
        .send(post(
            "/app/tenant/closure",
            &[("_csrf", &token), ("confirm_slug", "acne")],
        ))
        .await;
    assert_eq!(mistyped.status, StatusCode::CONFLICT);
    assert!(html(&mistyped).contains("data-notice=\"error\""));
    let closed = app
        .send(post(
            "/app/tenant/closure",
            &[("_csrf", &token), ("confirm_slug", "acme")],
        ))
        .await;
    assert_eq!(closed.status, StatusCode::SEE_OTHER, "{}", closed.body);
    assert_eq!(
        app.audit_events(owner.tenant_id, "tenant.closed")
            .await
            .len(),
        1
    );
    let page = app.send(Req::get("/app/tenant/closure").by(&owner)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(html(&page).contains("data-closure=\"closing\""));
    assert!(html(&page).contains("data-purge-after"));
    // The rest of the app is closed to the owner too.
    let inbox = app.send(Req::get("/app/tickets").by(&owner)).await;
    assert_eq!(inbox.status, StatusCode::FORBIDDEN);

    let exported = app
        .send(post("/app/tenant/exports", &[("_csrf", &token)]))
        .await;
    assert_eq!(exported.status, StatusCode::SEE_OTHER, "{}", exported.body);
    assert_eq!(
        app.audit_events(owner.tenant_id, "tenant.export_requested")
            .await
            .len(),
        1
    );
    let reopened = app
        .send(post("/app/tenant/closure/reopen", &[("_csrf", &token)]))
        .await;
    assert_eq!(reopened.status, StatusCode::SEE_OTHER, "{}", reopened.body);
    let page = app.send(Req::get("/app/tenant/closure").by(&owner)).await;
    assert!(html(&page).contains("data-closure=\"active\""));
    assert!(html(&page).contains("data-export-row"));
    let me = app.send(Req::get("/api/v1/auth/me").by(&admin)).await;
    assert_eq!(me.status, StatusCode::OK);
}
