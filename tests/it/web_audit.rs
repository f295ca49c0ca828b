//! The governance pages in-process, through the same router as the API: the audit log (search,
//! paging, an entry's before and after, the chain's verification, exports with their progress
//! and download) and the execution record viewer with its audited reveal. Each reads through the
//! engine's or domain's own functions, so what a page shows is what the API answers.

use axum::http::{header, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::agent::{decision, execution, world};
use crate::common::{eventually, Member, Req, Resp, TestApp};
use crate::web::{form, html, page_token};
use custodian::rbac::{Permission, Role};

async fn page(app: &TestApp, by: &Member, path: &str) -> Resp {
    app.send(Req::get(path).by(by)).await
}

/// The sequence numbers of the entries a page of the log lists, in order.
fn seqs(body: &str) -> Vec<i64> {
    body.split("data-entry=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap())
        .collect()
}

/// The actions a page of the log lists, in order.
fn actions(body: &str) -> Vec<String> {
    body.split("data-entry-action>")
        .skip(1)
        .map(|rest| rest[..rest.find('<').unwrap()].to_string())
        .collect()
}

// proves: SEC-2
#[tokio::test]
async fn only_roles_allowed_to_read_the_audit_log_see_its_link_and_pages() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let export = app
        .send(
            Req::post("/api/v1/audit/exports")
                .by(&owner)
                .json(json!({ "format": "csv" })),
        )
        .await
        .uuid("/id");
    let event = app.audit_events(owner.tenant_id, "tenant.created").await;
    let event = event
        .first()
        .and_then(|e| e["id"].as_str())
        .map(str::to_string)
        .expect("the sign-up's audit entry");
    let mut members = Vec::new();
    for role in [
        Role::Admin,
        Role::Agent,
        Role::Reviewer,
        Role::Auditor,
        Role::Partner,
    ] {
        members.push((role, app.join(&owner, role.as_str()).await));
    }
    members.push((Role::Owner, owner));
    for (role, member) in &members {
        let reads = role.can(Permission::AuditRead);
        let exports = role.can(Permission::AuditExport);
        for (path, allowed) in [
            ("/app/audit".to_string(), reads),
            ("/app/audit?verify=1".to_string(), reads),
            (format!("/app/audit/events/{event}"), reads),
            (format!("/app/audit/exports/{export}"), exports),
        ] {
            let resp = page(&app, member, &path).await;
            let expected = if allowed {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(resp.status, expected, "{role:?} {path}: {}", resp.body);
            if !allowed {
                assert!(html(&resp).contains("Not allowed"));
                assert!(!html(&resp).contains("data-audit-entries"));
            }
        }
        let token = page_token(&app, member).await;
        let before = app.count("SELECT count(*) FROM audit_export").await;
        let posted = app
            .send(Req::post("/app/audit/exports").by(member).raw(
                "application/x-www-form-urlencoded",
                form(&[("_csrf", &token), ("format", "json")]),
            ))
            .await;
        let after = app.count("SELECT count(*) FROM audit_export").await;
        if exports {
            assert_eq!(
                posted.status,
                StatusCode::SEE_OTHER,
                "{role:?}: {}",
                posted.body
            );
            assert_eq!(after, before + 1);
        } else {
            assert_eq!(posted.status, StatusCode::FORBIDDEN, "{role:?}");
            assert_eq!(after, before, "{role:?} started an export");
        }
        // The link is where the page is: shown to a role that may open it, to no other.
        let home = page(&app, member, "/app/password").await;
        assert_eq!(
            html(&home).contains(r#"href="/app/audit""#),
            reads,
            "{role:?}'s navigation"
        );
    }
}

// proves: AUD-4
#[tokio::test]
async fn the_audit_log_filters_by_actor_action_entity_and_time_and_pages_by_cursor() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let mut tickets = Vec::new();
    for subject in ["First", "Second", "Third"] {
        let resp = app
            .send(
                Req::post("/api/v1/tickets")
                    .by(&agent)
                    .json(json!({ "subject": subject })),
            )
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
        tickets.push(resp.uuid("/id"));
    }

    let all = page(&app, &owner, "/app/audit").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let listed = seqs(html(&all));
    assert!(listed.len() >= 5, "{listed:?}");
    assert!(
        listed.windows(2).all(|w| w[0] > w[1]),
        "newest first: {listed:?}"
    );

    // By actor: the agent opened the three tickets, the owner none.
    let by_agent = page(
        &app,
        &owner,
        &format!(
            "/app/audit?actor=member:{}&action=ticket.*",
            agent.member_id
        ),
    )
    .await;
    assert_eq!(
        actions(html(&by_agent)),
        vec!["ticket.created"; 3],
        "{}",
        by_agent.body
    );
    let by_owner = page(
        &app,
        &owner,
        &format!(
            "/app/audit?actor=member:{}&action=ticket.*",
            owner.member_id
        ),
    )
    .await;
    assert!(html(&by_owner).contains("No entries match these filters."));
    assert!(!actions(html(&all)).is_empty());
    // By action prefix and by exact action.
    let tickets_only = page(&app, &owner, "/app/audit?action=ticket.*").await;
    assert_eq!(seqs(html(&tickets_only)).len(), 3);
    let exact = page(&app, &owner, "/app/audit?action=ticket.created").await;
    assert_eq!(seqs(html(&exact)).len(), 3);
    // By entity.
    let one = page(
        &app,
        &owner,
        &format!("/app/audit?entity_type=ticket&entity_id={}", tickets[1]),
    )
    .await;
    assert_eq!(actions(html(&one)), vec!["ticket.created"]);
    // By time: nothing in a window that ended yesterday, everything in one that ends tomorrow.
    let yesterday = (time::OffsetDateTime::now_utc() - time::Duration::days(1)).date();
    let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(1)).date();
    let past = page(&app, &owner, &format!("/app/audit?to={yesterday}")).await;
    assert!(html(&past).contains("No entries match these filters."));
    let window = page(
        &app,
        &owner,
        &format!("/app/audit?from={yesterday}T00:00&to={tomorrow}&action=ticket.created"),
    )
    .await;
    assert_eq!(seqs(html(&window)).len(), 3);
    // The cursor: the page below the newest ticket entry holds the two older ones.
    let newest = seqs(html(&exact))[0];
    let older = page(
        &app,
        &owner,
        &format!("/app/audit?action=ticket.created&before={newest}"),
    )
    .await;
    assert_eq!(seqs(html(&older)), seqs(html(&exact))[1..].to_vec());
    // A bad filter is a clear 400 page, not a 500.
    let bad = page(&app, &owner, "/app/audit?from=yesterday").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(html(&bad).contains("must be a date (2026-12-08)"));
    let unknown = page(&app, &owner, "/app/audit?colour=red").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
}

// proves: AUD-4, DSR-3
#[tokio::test]
async fn an_entry_shows_its_before_and_after_and_an_erased_payload_as_erased() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let changed = app
        .send(
            Req::patch(format!("/api/v1/members/{}", agent.member_id))
                .by(&owner)
                .json(json!({ "role": "reviewer" })),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let change = app
        .audit_events(owner.tenant_id, "member.role_changed")
        .await
        .pop()
        .expect("the role change's entry");
    let id = change["id"].as_str().unwrap();

    let entry = page(&app, &owner, &format!("/app/audit/events/{id}")).await;
    assert_eq!(entry.status, StatusCode::OK, "{}", entry.body);
    let body = html(&entry);
    assert!(body.contains("member.role_changed"));
    let before = &body[body.find("data-before>").expect("a before")..];
    assert!(
        before[..before.find("</pre>").unwrap()].contains("agent"),
        "{body}"
    );
    let after = &body[body.find("data-after>").expect("an after")..];
    assert!(after[..after.find("</pre>").unwrap()].contains("reviewer"));

    let mut conn = app.superuser().await;
    sqlx::query("SELECT audit_erase_payloads($1, ARRAY[$2::bigint], '{\"request\": \"test\"}')")
        .bind(owner.tenant_id)
        .bind(change["seq"].as_i64().unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
    let erased = page(&app, &owner, &format!("/app/audit/events/{id}")).await;
    let body = html(&erased);
    assert!(body.contains("data-erased"), "{body}");
    assert!(!body.contains("data-before") && !body.contains("data-after"));
    let listed = page(&app, &owner, "/app/audit?action=member.role_changed").await;
    assert!(html(&listed).contains("payload erased"));
    // The erasure is itself on the chain, which still holds.
    let verified = page(&app, &owner, "/app/audit?verify=1").await;
    assert!(
        html(&verified).contains(r#"data-chain="ok""#),
        "{}",
        verified.body
    );

    let nobody = page(
        &app,
        &owner,
        &format!("/app/audit/events/{}", Uuid::new_v4()),
    )
    .await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND);
}

// proves: AUD-3
#[tokio::test]
async fn verifying_the_chain_shows_it_holds_and_after_tampering_names_the_first_broken_link() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    for role in ["agent", "reviewer", "auditor"] {
        app.join(&owner, role).await;
    }
    let auditor = app.join(&owner, "auditor").await;

    let ok = page(&app, &auditor, "/app/audit?verify=1").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert!(html(&ok).contains(r#"data-chain="ok""#), "{}", ok.body);
    assert!(html(&ok).contains("The chain holds"));
    // Without asking, nothing is verified.
    assert!(!html(&page(&app, &auditor, "/app/audit").await).contains("data-chain"));

    let mut conn = app.superuser().await;
    sqlx::raw_sql(
        "SET session_replication_role = replica;
         UPDATE audit_event SET after = '{\"role\": \"owner\"}' WHERE seq = 4;
         SET session_replication_role = origin;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let broken = page(&app, &auditor, "/app/audit?verify=1").await;
    let body = html(&broken);
    assert!(body.contains(r#"data-chain="broken""#), "{body}");
    assert!(body.contains("data-broken-seq>4<"), "{body}");
}

// proves: AUD-4
#[tokio::test]
async fn an_export_of_the_filtered_log_shows_its_progress_and_is_downloaded_when_ready() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let auditor = app.join(&owner, "auditor").await;
    let token = page_token(&app, &auditor).await;
    let started = app
        .send(Req::post("/app/audit/exports").by(&auditor).raw(
            "application/x-www-form-urlencoded",
            form(&[
                ("_csrf", &token),
                ("format", "json"),
                ("action", "member.*"),
                ("actor", ""),
            ]),
        ))
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.body);
    let location = started.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    let id = location.rsplit('/').next().unwrap().to_string();
    let requested = app
        .audit_events(owner.tenant_id, "audit.export_requested")
        .await;
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0]["after"]["filters"]["action_prefix"], "member.");

    // Before the job runs the page polls itself, and offers no download.
    let waiting = page(&app, &auditor, &location).await;
    let body = html(&waiting);
    assert!(body.contains(r#"hx-trigger="every 1s""#), "{body}");
    assert!(!body.contains("data-download"));

    app.start_workers();
    let ready = eventually(20, "the export to be written", || async {
        let resp = page(&app, &auditor, &location).await;
        html(&resp).contains("data-download").then_some(resp)
    })
    .await;
    let body = html(&ready);
    assert!(
        !body.contains("hx-trigger"),
        "a finished export stops polling"
    );
    let href = format!("/api/v1/audit/exports/{id}/download");
    assert!(body.contains(&href));
    let file = app.send(Req::get(&href).by(&auditor)).await;
    assert_eq!(file.status, StatusCode::OK);
    let rows = file.body.as_array().expect("a JSON export");
    assert!(!rows.is_empty());
    assert!(rows
        .iter()
        .all(|r| r["action"].as_str().unwrap().starts_with("member.")));
}

// proves: AGT-8
#[tokio::test]
async fn an_execution_shows_placeholders_and_a_reveal_shows_the_real_values_and_is_audited() {
    let w = world(json!({ "confidence_threshold": 0.5 })).await;
    let reviewer = w.app.join(&w.owner, "reviewer").await;
    let agent = w.app.join(&w.owner, "agent").await;
    w.model.push(decision(
        "reply",
        "Thanks [NAME_1], we will write to [EMAIL_1].",
        0.9,
    ));
    w.customer_writes(
        "Hi, I'm Sheena Nelson, email sheena.nelson@example.com. Where is my order?",
        "wamid.REVEAL",
    )
    .await;
    let run = execution(&w.app).await;
    let id = run["id"].as_str().unwrap().to_string();
    let path = format!("/app/executions/{id}");

    for member in [&agent, &reviewer] {
        let masked = page(&w.app, member, &path).await;
        assert_eq!(masked.status, StatusCode::OK, "{}", masked.body);
        let body = html(&masked);
        assert!(body.contains(r#"data-placeholder="[EMAIL_1]""#), "{body}");
        assert!(!body.contains("sheena.nelson@example.com"));
        assert!(body.contains(r#"data-digest="ok""#));
        assert!(body.contains("data-threshold>0.500<"));
        assert!(body.contains(run["model"].as_str().unwrap()));
    }
    // Only a member allowed to reveal is offered the button.
    assert!(!html(&page(&w.app, &agent, &path).await).contains("data-reveal>"));
    assert!(html(&page(&w.app, &reviewer, &path).await).contains("data-reveal>"));
    assert!(w
        .app
        .audit_events(w.owner.tenant_id, "execution.revealed")
        .await
        .is_empty());

    let token = page_token(&w.app, &agent).await;
    let refused = w
        .app
        .send(Req::post(format!("{path}/reveal")).by(&agent).raw(
            "application/x-www-form-urlencoded",
            form(&[("_csrf", &token)]),
        ))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let token = page_token(&w.app, &reviewer).await;
    let revealed = w
        .app
        .send(Req::post(format!("{path}/reveal")).by(&reviewer).raw(
            "application/x-www-form-urlencoded",
            form(&[("_csrf", &token)]),
        ))
        .await;
    assert_eq!(revealed.status, StatusCode::OK, "{}", revealed.body);
    let body = html(&revealed);
    assert!(
        body.contains(r#"data-revealed="[EMAIL_1]">sheena.nelson@example.com<"#),
        "{body}"
    );
    assert!(body.contains("Sheena Nelson"));
    let events = w
        .app
        .audit_events(w.owner.tenant_id, "execution.revealed")
        .await;
    assert_eq!(events.len(), 1, "one reveal, one audit entry");
    assert_eq!(events[0]["actor_id"], json!(reviewer.member_id.to_string()));
    assert_eq!(events[0]["execution_id"], json!(id));
    // The entry names what was revealed, never the values.
    assert!(!events[0].to_string().contains("sheena.nelson@example.com"));
    assert!(events[0]["after"]["placeholders"]
        .as_array()
        .unwrap()
        .contains(&json!("[EMAIL_1]")));

    // The conversation page links its runs to the viewer.
    let conversation = run["conversation_id"].as_str().unwrap();
    let thread = page(
        &w.app,
        &reviewer,
        &format!("/app/conversations/{conversation}"),
    )
    .await;
    assert!(
        html(&thread).contains(&format!(r#"href="{path}""#)),
        "{}",
        thread.body
    );
    // Another tenant's run, or none, is not found.
    let stranger = page(
        &w.app,
        &reviewer,
        &format!("/app/executions/{}", Uuid::new_v4()),
    )
    .await;
    assert_eq!(stranger.status, StatusCode::NOT_FOUND);
}
