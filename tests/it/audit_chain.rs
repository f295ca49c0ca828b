//! The audit log is append-only and hash-chained; tampering is detected and named (AUD-3).

use axum::http::StatusCode;
use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::common::{Member, Req, TestApp};

async fn busy_tenant(app: &TestApp) -> Member {
    let owner = app.signup("acme").await;
    for role in ["agent", "reviewer", "auditor"] {
        app.join(&owner, role).await;
    }
    owner
}

async fn verify(app: &TestApp, owner: &Member) -> serde_json::Value {
    let resp = app.send(Req::get("/api/v1/audit/verify").by(owner)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    resp.body
}

// proves: AUD-3
#[tokio::test]
async fn an_untouched_chain_verifies() {
    let app = TestApp::spawn().await;
    let owner = busy_tenant(&app).await;
    let report = verify(&app, &owner).await;
    assert_eq!(report["valid"], true, "{report}");
    assert!(report["checked"].as_u64().unwrap() >= 8);
    assert_eq!(report["first_seq"], 1);
    assert!(report["broken"].is_null());
}

// proves: AUD-3
#[tokio::test]
async fn the_app_role_can_neither_update_nor_delete_audit_rows() {
    let app = TestApp::spawn().await;
    let owner = busy_tenant(&app).await;
    let mut tx = app.state.db.tenant_tx(owner.tenant_id).await.unwrap();
    let update = sqlx::query("UPDATE audit_event SET action = 'nothing.happened'")
        .execute(&mut *tx)
        .await;
    assert!(update
        .unwrap_err()
        .to_string()
        .contains("permission denied"));
    drop(tx);
    let mut tx = app.state.db.tenant_tx(owner.tenant_id).await.unwrap();
    // Setting the purge flag by hand does not help: the role has no DELETE privilege at all.
    sqlx::query("SELECT set_config('custodian.audit_purge', 'on', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let delete = sqlx::query("DELETE FROM audit_event")
        .execute(&mut *tx)
        .await;
    assert!(delete
        .unwrap_err()
        .to_string()
        .contains("permission denied"));
    drop(tx);
    let purge = sqlx::query("SELECT audit_purge($1, now(), 10)")
        .bind(owner.tenant_id)
        .execute(&app.state.db.app)
        .await;
    assert!(purge.unwrap_err().to_string().contains("permission denied"));
}

// proves: AUD-3
#[tokio::test]
async fn even_the_owner_role_cannot_rewrite_audit_rows_while_the_trigger_stands() {
    let app = TestApp::spawn().await;
    let owner = busy_tenant(&app).await;
    let mut conn = app.superuser().await;
    for sql in [
        "UPDATE audit_event SET action = 'x' WHERE seq = 2",
        "DELETE FROM audit_event WHERE seq = 2",
        "TRUNCATE audit_event",
    ] {
        let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(verify(&app, &owner).await["valid"], true);
}

// proves: AUD-3
#[tokio::test]
async fn a_row_edited_as_superuser_is_named_as_the_first_broken_link() {
    let app = TestApp::spawn().await;
    let owner = busy_tenant(&app).await;
    let mut conn = app.superuser().await;
    // A determined superuser switches the trigger off and rewrites history.
    sqlx::raw_sql(
        "SET session_replication_role = replica;
         UPDATE audit_event SET after = '{\"role\": \"owner\"}' WHERE seq = 4;
         UPDATE audit_event SET ip = '6.6.6.6' WHERE seq = 6;
         SET session_replication_role = origin;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let report = verify(&app, &owner).await;
    assert_eq!(report["valid"], false);
    assert_eq!(report["broken"]["seq"], 4, "{report}");
    assert!(report["broken"]["reason"]
        .as_str()
        .unwrap()
        .contains("hash"));
}

// proves: AUD-3
#[tokio::test]
async fn a_row_deleted_or_a_hash_recomputed_as_superuser_is_detected() {
    let app = TestApp::spawn().await;
    let owner = busy_tenant(&app).await;
    let mut conn = app.superuser().await;
    sqlx::raw_sql("SET session_replication_role = replica; DELETE FROM audit_event WHERE seq = 3;")
        .execute(&mut conn)
        .await
        .unwrap();
    let report = verify(&app, &owner).await;
    assert_eq!(report["valid"], false);
    assert_eq!(report["broken"]["seq"], 3, "{report}");
    assert!(report["broken"]["reason"]
        .as_str()
        .unwrap()
        .contains("missing"));

    // A forger who edits a row and recomputes its own hash still breaks the next link.
    let app = TestApp::spawn().await;
    let owner = busy_tenant(&app).await;
    let mut conn = app.superuser().await;
    sqlx::raw_sql(
        "SET session_replication_role = replica;
         UPDATE audit_event SET action = 'nothing.happened' WHERE seq = 5;
         UPDATE audit_event e SET hash = sha256(prev_hash || audit_canonical(e)) WHERE seq = 5;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let report = verify(&app, &owner).await;
    assert_eq!(report["valid"], false);
    assert_eq!(report["broken"]["seq"], 6, "{report}");
}

// proves: AUD-3
#[tokio::test]
async fn the_command_line_verifier_names_the_broken_link_and_fails() {
    let app = TestApp::spawn().await;
    let owner = busy_tenant(&app).await;
    let run = |tenant: String| {
        let url = app.database_url();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_custodian"))
                .args(["audit", "verify", "--tenant", &tenant])
                .env("DATABASE_URL", url)
                .env("RUST_LOG", "warn")
                .output()
                .await
                .unwrap()
        }
    };
    let clean = run("acme".into()).await;
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    let mut conn = app.superuser().await;
    sqlx::raw_sql("SET session_replication_role = replica; UPDATE audit_event SET actor_id = 'someone-else' WHERE seq = 2;")
        .execute(&mut conn)
        .await
        .unwrap();
    let broken = run(owner.tenant_id.to_string()).await;
    assert_eq!(broken.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&broken.stdout).unwrap();
    assert_eq!(report["broken"]["seq"], 2);
}

// proves: AUD-3
#[tokio::test]
async fn concurrent_audited_changes_never_fork_the_chain() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let router = app.router.clone();
        let cookie = owner.cookie.clone();
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let req = axum::http::Request::post("/api/v1/tokens")
                .header("content-type", "application/json")
                .header("cookie", format!("custodian_session={cookie}"))
                .body(axum::body::Body::from(
                    json!({ "name": format!("t{i}"), "role": "agent" }).to_string(),
                ))
                .unwrap();
            router.oneshot(req).await.unwrap().status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::CREATED);
    }
    let report = verify(&app, &owner).await;
    assert_eq!(report["valid"], true, "{report}");
    let mut conn = app.superuser().await;
    let (n, distinct_prev): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT prev_hash) FROM audit_event WHERE tenant_id = $1",
    )
    .bind(owner.tenant_id)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        n, distinct_prev,
        "two rows share a parent: the chain forked"
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "token.created")
            .await
            .len(),
        24
    );
}

// proves: AUD-3
#[tokio::test]
async fn the_retention_purge_keeps_the_remaining_chain_verifiable() {
    let app = TestApp::spawn().await;
    let owner = busy_tenant(&app).await;
    let mut conn = PgConnection::connect_with(&app.admin).await.unwrap();
    let purged: i64 = sqlx::query_scalar("SELECT audit_purge($1, now(), 3)")
        .bind(owner.tenant_id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(purged, 3);
    let report = verify(&app, &owner).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["first_seq"], 4);
    let purge_events = app.audit_events(owner.tenant_id, "audit.purged").await;
    assert_eq!(purge_events.len(), 1);
    assert_eq!(purge_events[0]["after"]["count"], 3);
}

// proves: AUD-3
#[tokio::test]
async fn a_refused_change_leaves_no_audit_row_and_the_chain_intact() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let before = app
        .audit_events(owner.tenant_id, "token.created")
        .await
        .len();
    // A duplicate active token name fails at the insert: no token, and no audit row either.
    app.send(
        Req::post("/api/v1/tokens")
            .by(&owner)
            .json(json!({ "name": "ci", "role": "agent" })),
    )
    .await;
    let dup = app
        .send(
            Req::post("/api/v1/tokens")
                .by(&owner)
                .json(json!({ "name": "CI", "role": "agent" })),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.error_code(), "token_name_taken");
    assert_eq!(
        app.audit_events(owner.tenant_id, "token.created")
            .await
            .len(),
        before + 1
    );
    assert_eq!(verify(&app, &owner).await["valid"], true);
}

/// Appends one event to `tenant`'s chain in its own committed transaction.
async fn append(db: &custodian::db::Db, tenant: uuid::Uuid) {
    use custodian::audit::{record, AuditEvent, AuditSource};
    let mut tx = db.tenant_tx(tenant).await.unwrap();
    record(
        &mut tx,
        &AuditSource::system(tenant),
        AuditEvent::new("test.appended", "tenant", tenant),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

// proves: AUD-3
#[tokio::test]
async fn appends_committed_between_the_pages_of_a_verification_never_look_like_a_break() {
    let app = TestApp::spawn().await;
    let owner = busy_tenant(&app).await;
    let db = app.state.db.clone();
    let tenant = owner.tenant_id;
    let before = app
        .count(&format!(
            "SELECT count(*) FROM audit_event WHERE tenant_id = '{tenant}'"
        ))
        .await as u64;

    // Two rows a page, a committed append after each of the first reads (the head moves on
    // while the walk is under way) and one after the last, empty read, just before the head
    // is read.
    let mut appended = 0u64;
    let report = custodian::audit::verify_paged(&db.app, tenant, 2, async |rows| {
        if rows == 0 || appended < 3 {
            append(&db, tenant).await;
            appended += 1;
        }
    })
    .await
    .unwrap();
    assert!(report.valid, "{report:?}");
    assert_eq!(
        report.checked, before,
        "the walk read one snapshot, as of its start"
    );
    assert_eq!(
        appended, 4,
        "appends ran between the pages and before the head"
    );

    let report = verify(&app, &owner).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["checked"], before + appended);
}

// proves: AUD-3
#[tokio::test]
async fn verification_holds_while_appends_run_concurrently() {
    let app = TestApp::spawn().await;
    let owner = busy_tenant(&app).await;
    let db = app.state.db.clone();
    let tenant = owner.tenant_id;
    let stop = tokio_util::sync::CancellationToken::new();
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (db, stop) = (db.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.is_cancelled() {
                    append(&db, tenant).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    for _ in 0..20 {
        let report = custodian::audit::verify_paged(&db.app, tenant, 1, async |_| {
            tokio::task::yield_now().await;
        })
        .await
        .unwrap();
        assert!(report.valid, "{report:?}");
        // The command line reads through the owner's pool; it holds just the same.
        let report = custodian::audit::verify(&db.system, tenant).await.unwrap();
        assert!(report.valid, "{report:?}");
    }
    stop.cancel();
    let mut appended = 0;
    for writer in writers {
        appended += writer.await.unwrap();
    }
    assert!(appended > 0);
    assert_eq!(verify(&app, &owner).await["valid"], true);
}
