//! The HTTP contract: one error shape for every failure, nothing changed by bad input,
//! security headers on every response (SEC-8), request ids, health, and the OpenAPI document.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::common::{Req, Resp, TestApp};

async fn tenant_names(app: &TestApp) -> Vec<String> {
    let mut conn = app.superuser().await;
    sqlx::query_scalar("SELECT name FROM tenant ORDER BY name")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_input_gets_a_clear_json_error_and_changes_nothing() {
    let app = TestApp::spawn_with(|c| c.max_body_bytes = 4096).await;
    let owner = app.signup("acme").await;
    let cases: Vec<(Req, StatusCode, &str)> = vec![
        (
            Req::patch("/api/v1/tenant").raw("application/json", "{\"name\": "),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            Req::patch("/api/v1/tenant").json(json!({ "name": 42 })),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            Req::patch("/api/v1/tenant").json(json!({ "name": "x", "extra": true })),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            Req::patch("/api/v1/tenant").raw("text/plain", "name=x"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Req::patch("/api/v1/tenant").json(json!({ "name": "x".repeat(10_000) })),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Req::patch("/api/v1/tenant").json(json!({ "name": "" })),
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            Req::patch("/api/v1/members/not-a-uuid").json(json!({})),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            Req::get("/api/v1/audit/events?limit=lots"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Req::get("/api/v1/no-such-route"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Req::new(Method::PUT, "/api/v1/tenant"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (req, status, code) in cases {
        let resp = app.send(req.by(&owner)).await;
        assert_eq!(resp.status, status, "{}", resp.body);
        assert_eq!(resp.error_code(), code);
        assert_has_security_headers(&resp);
    }
    assert_eq!(tenant_names(&app).await, vec!["acme Inc".to_string()]);
}

#[tokio::test]
async fn a_sign_up_with_a_taken_slug_or_bad_email_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    app.signup("acme").await;
    let signup = |slug: &str, email: &str| {
        Req::post("/api/v1/auth/signup").json(json!({
            "tenant_name": "Other", "tenant_slug": slug, "email": email,
            "display_name": "X", "password": crate::common::PASSWORD,
        }))
    };
    let taken = app.send(signup("acme", "x@other.example")).await;
    assert_eq!(
        (taken.status, taken.error_code()),
        (StatusCode::CONFLICT, "slug_taken")
    );
    let bad_slug = app.send(signup("Not A Slug!", "x@other.example")).await;
    assert_eq!(
        (bad_slug.status, bad_slug.error_code()),
        (StatusCode::CONFLICT, "invalid_slug")
    );
    let bad_email = app.send(signup("other", "not-an-email")).await;
    assert_eq!(
        (bad_email.status, bad_email.error_code()),
        (StatusCode::BAD_REQUEST, "invalid_email")
    );
    assert_eq!(tenant_names(&app).await, vec!["acme Inc".to_string()]);
}

fn assert_has_security_headers(resp: &Resp) {
    for (name, expected) in [
        ("strict-transport-security", "max-age="),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("content-security-policy", "frame-ancestors 'none'"),
        ("referrer-policy", "no-referrer"),
    ] {
        let value = resp
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing ({})", resp.status));
        assert!(
            value.to_str().unwrap().contains(expected),
            "{name}: {value:?}"
        );
    }
}

// proves: SEC-8
#[tokio::test]
async fn every_kind_of_response_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let responses = vec![
        app.send(Req::get("/healthz")).await,
        app.send(Req::get("/readyz")).await,
        app.send(Req::get("/api/openapi.json")).await,
        app.send(Req::get("/api/v1/tenant").by(&owner)).await,
        app.send(Req::get("/api/v1/tenant")).await,
        app.send(Req::get("/api/v1/nothing-here")).await,
        app.send(Req::new(Method::DELETE, "/healthz")).await,
        app.send(Req::post("/api/v1/auth/login").raw("application/json", "nope"))
            .await,
    ];
    let statuses: Vec<u16> = responses.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, vec![200, 200, 200, 200, 401, 404, 405, 400]);
    for resp in &responses {
        assert_has_security_headers(resp);
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_callers() {
    let app = TestApp::spawn().await;
    let fresh = app.send(Req::get("/healthz")).await;
    assert!(fresh.headers.get("x-request-id").is_some());
    let kept = app
        .send(Req::get("/healthz").header("x-request-id", "trace-me-42"))
        .await;
    assert_eq!(kept.headers["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn readiness_reports_the_database() {
    let app = TestApp::spawn().await;
    let resp = app.send(Req::get("/readyz")).await;
    assert_eq!(resp.status, StatusCode::OK);
    app.state.db.app.close().await;
    let down = app.send(Req::get("/readyz")).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.error_code(), "unavailable");
    assert_eq!(app.send(Req::get("/healthz")).await.status, StatusCode::OK);
}

// proves: SEC-1
#[tokio::test]
async fn the_openapi_document_lists_every_route_with_its_access_rule() {
    let app = TestApp::spawn().await;
    let doc = app.send(Req::get("/api/openapi.json")).await.body;
    assert_eq!(doc["openapi"], "3.1.0");
    for spec in app.state.routes() {
        let op = &doc["paths"][spec.path][spec.method.as_str().to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{} {} missing from the document",
            spec.method,
            spec.path
        );
        match spec.access {
            // No member's credential; a few check one of their own (a web chat visitor's
            // session, Meta's signature), named as such.
            custodian::http::Access::Public => {
                let security = op["security"].as_array().unwrap();
                assert!(
                    security
                        .iter()
                        .all(|s| s.get("session").is_none() && s.get("bearer").is_none()),
                    "{} {}: {security:?}",
                    spec.method,
                    spec.path
                );
            }
            custodian::http::Access::Authenticated => assert!(op["x-permission"].is_null()),
            custodian::http::Access::Requires(p) => assert_eq!(op["x-permission"], p.as_str()),
        }
        for param in spec.params() {
            assert!(op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == param));
        }
    }
    let ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), unique.len(), "operation ids repeat");
}

#[tokio::test]
async fn timestamps_in_responses_are_rfc3339_strings() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, conversation) = app.visitor_writes(inbox, "Hello").await;
    let token = app
        .send(
            Req::post("/api/v1/tokens")
                .by(&owner)
                .json(json!({ "name": "ci", "role": "agent", "expires_in_days": 30 })),
        )
        .await;
    let shown = app
        .send(Req::get(format!("/api/v1/conversations/{conversation}")).by(&owner))
        .await;
    let audit = app
        .send(Req::get("/api/v1/audit/events?limit=1").by(&owner))
        .await;
    for (what, value) in [
        ("token created_at", &token.body["created_at"]),
        ("token expires_at", &token.body["expires_at"]),
        (
            "conversation created_at",
            &shown.body["conversation"]["created_at"],
        ),
        ("audit occurred_at", &audit.body["events"][0]["occurred_at"]),
    ] {
        let text = value
            .as_str()
            .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{what} = {text}: {e}"));
    }
}

// proves: SEC-8
#[tokio::test]
async fn a_request_that_takes_too_long_answers_408_in_our_shape_and_changes_nothing() {
    let app =
        TestApp::spawn_with(|c| c.request_timeout = std::time::Duration::from_millis(300)).await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    // A member update first locks the tenant's owners; hold that lock so it cannot finish.
    let mut conn = app.superuser().await;
    let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
    sqlx::query("SELECT id FROM member WHERE tenant_id = $1 AND role = 'owner' FOR UPDATE")
        .bind(owner.tenant_id)
        .fetch_all(&mut *tx)
        .await
        .unwrap();

    let resp = app
        .send(
            Req::patch(format!("/api/v1/members/{}", agent.member_id))
                .by(&owner)
                .json(json!({ "display_name": "Renamed while locked" })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::REQUEST_TIMEOUT, "{}", resp.body);
    assert_eq!(resp.error_code(), "timeout");
    assert_has_security_headers(&resp);
    tx.rollback().await.unwrap();

    let member = app
        .send(Req::get(format!("/api/v1/members/{}", agent.member_id)).by(&owner))
        .await;
    assert_eq!(member.body["display_name"], "agent");
}

// proves: SEC-5, SEC-8
#[tokio::test]
async fn api_requests_are_rate_limited_per_tenant_across_its_clients_in_our_shape() {
    let app = TestApp::spawn_with(|c| {
        c.limits.api_per_tenant_per_sec = 1;
        c.limits.api_per_client_per_sec = 1000;
    })
    .await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let other = app.signup("other").await;
    // Two clients of one tenant take turns, so only the tenant's own limit can bite.
    let mut limited = None;
    for i in 0..40 {
        let member = if i % 2 == 0 { &owner } else { &agent };
        let resp = app.send(Req::get("/api/v1/auth/me").by(member)).await;
        if resp.status != StatusCode::OK {
            limited = Some(resp);
            break;
        }
    }
    let resp = limited.expect("40 rapid requests of one tenant were never limited");
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS, "{}", resp.body);
    assert_eq!(resp.error_code(), "rate_limited");
    let retry: u64 = resp.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_has_security_headers(&resp);
    // Another tenant has its own allowance.
    assert_eq!(
        app.send(Req::get("/api/v1/auth/me").by(&other))
            .await
            .status,
        StatusCode::OK
    );
}

// proves: SEC-8
#[tokio::test]
async fn a_server_error_answers_500_in_our_shape_without_its_cause() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    // The database stops accepting the application role on this tenant's database: new
    // connections are refused and the open ones are cut, as in an outage.
    let mut conn = app.superuser().await;
    for sql in [
        format!(
            "REVOKE CONNECT ON DATABASE {} FROM PUBLIC, custodian_app",
            app.db_name
        ),
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{}' AND usename = 'custodian_app'",
            app.db_name
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }

    let resp = app.send(Req::get("/api/v1/tenant").by(&owner)).await;
    assert_eq!(
        resp.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        resp.body
    );
    assert_eq!(resp.error_code(), "internal");
    assert_eq!(
        resp.body["error"]["message"], "an internal error occurred",
        "the cause stays in the log"
    );
    assert_has_security_headers(&resp);
}

#[tokio::test]
async fn a_nul_or_invalid_utf8_in_a_query_or_path_answers_400_before_reaching_the_database() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    for uri in [
        "/api/v1/audit/events?actor_id=%00",
        "/api/v1/audit/events?action=a%00b",
        "/api/v1/contacts?q=%FF",
        "/api/v1/contacts?q=caf%C3",
        "/api/v1/contacts/%00",
    ] {
        let resp = app.send(Req::get(uri).by(&owner)).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{uri}: {}", resp.body);
        assert_eq!(resp.error_code(), "invalid_text", "{uri}");
    }
    let fine = app
        .send(Req::get("/api/v1/contacts?q=caf%C3%A9").by(&owner))
        .await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.body);
}

#[tokio::test]
async fn a_knowledge_search_limit_out_of_range_is_refused_not_clamped() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    for limit in [-1, 0, 51] {
        let resp = app
            .send(
                Req::post("/api/v1/knowledge/search")
                    .by(&owner)
                    .json(json!({ "query": "returns", "limit": limit })),
            )
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{limit}: {}",
            resp.body
        );
        assert_eq!(resp.error_code(), "invalid_limit");
    }
}

#[tokio::test]
async fn a_number_jsonb_could_not_give_back_is_refused_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    // PostgreSQL keeps 1e-311 as hundreds of digits that no JSON reader takes back: stored,
    // it would make the contact unreadable for good.
    for tiny in ["-2.225073858507e-311", "1e-320", "1e301"] {
        let body = format!(r#"{{"name": "Ana", "attributes": {{"score": [{tiny}]}}}}"#);
        let resp = app
            .send(
                Req::post("/api/v1/contacts")
                    .by(&owner)
                    .raw("application/json", body),
            )
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{tiny}: {}",
            resp.body
        );
        assert_eq!(resp.error_code(), "invalid_number");
    }
    assert_eq!(app.count("SELECT count(*) FROM contact").await, 0);
    let resp = app
        .send(Req::post("/api/v1/contacts").by(&owner).json(json!({
            "name": "Ana", "attributes": { "score": [0.0, 1.5e-300, -3.25, 1e300] }
        })))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    let id = resp.uuid("/id");
    let shown = app
        .send(Req::get(format!("/api/v1/contacts/{id}")).by(&owner))
        .await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
}

#[tokio::test]
async fn a_whole_number_written_as_a_float_fills_an_integer_field() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    // JSON Schema calls 30.0 an integer, and Python's json writes a float so.
    let resp = app
        .send(Req::post("/api/v1/tokens").by(&owner).raw(
            "application/json",
            r#"{"name": "ci", "role": "agent", "expires_in_days": 30.0}"#,
        ))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    let resp = app
        .send(Req::post("/api/v1/tokens").by(&owner).raw(
            "application/json",
            r#"{"name": "ci2", "role": "agent", "expires_in_days": 30.5}"#,
        ))
        .await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{}", resp.body);
    assert_eq!(resp.error_code(), "invalid_body");
}
