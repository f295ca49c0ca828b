//! Tenant actions call only public addresses: a tenant cannot point the platform at its own
//! network (metadata service, database, admin ports), neither with an IP literal nor with a
//! name that resolves to a private address.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::common::{eventually, fast_worker, Req, TestApp};

#[tokio::test]
async fn a_tenant_action_cannot_reach_the_platforms_own_network() {
    let app = TestApp::spawn_with(|c| {
        fast_worker(c, "http://127.0.0.1:9");
        c.actions_allow_private = false;
    })
    .await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;

    for url in [
        "http://127.0.0.1:5432/",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials",
        "http://[::1]:8080/admin",
        "http://10.0.0.8/internal",
        "https://user:password@shop.example/refund",
        // IPv6 forms that carry a loopback IPv4 address: NAT64, SIIT, 6to4; and site-local.
        "http://[64:ff9b::7f00:1]:5432/",
        "http://[::ffff:0:7f00:1]:5432/",
        "http://[2002:7f00:1::]:5432/",
        "http://[fec0::1]/internal",
    ] {
        let refused = app
            .send(Req::post("/api/v1/agent/actions").by(&owner).json(json!({
                "name": "probe", "description": "x", "target_url": url, "secret": "s"
            })))
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{url}");
        assert_eq!(refused.error_code(), "invalid_url");
    }
    assert_eq!(app.count("SELECT count(*) FROM tenant_action").await, 0);

    // A name is checked when it is resolved: `localhost` leads nowhere.
    let calls: Arc<Mutex<Vec<Value>>> = Arc::default();
    let recorded = calls.clone();
    let endpoint = axum::Router::new().route(
        "/refund",
        axum::routing::post(move |body: axum::Json<Value>| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push(body.0);
                axum::Json(json!({ "ok": true }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, endpoint).await.unwrap() });
    let action = app
        .send(Req::post("/api/v1/agent/actions").by(&owner).json(json!({
            "name": "issue_refund", "description": "Refund an order", "kind": "refund",
            "target_url": format!("http://localhost:{port}/refund"), "secret": "s",
            "parameters": { "type": "object", "properties": { "order_id": { "type": "string" } } }
        })))
        .await;
    assert_eq!(action.status, StatusCode::CREATED, "{}", action.body);
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, conversation) = app.visitor_writes(inbox, "My order is broken").await;
    let item = app
        .send(Req::post("/api/v1/reviews").by(&agent).json(json!({
            "kind": "action", "conversation_id": conversation, "action_id": action.uuid("/id"),
            "arguments": { "order_id": "A-1" }
        })))
        .await;
    assert_eq!(item.status, StatusCode::CREATED, "{}", item.body);
    let id = item.uuid("/id");
    let approved = app
        .send(
            Req::post(format!("/api/v1/reviews/{id}/approve"))
                .by(&owner)
                .json(json!({})),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    let failed = eventually(30, "the refused call to be recorded", || async {
        let shown = app
            .send(Req::get(format!("/api/v1/reviews/{id}")).by(&owner))
            .await;
        (shown.body["status"] == "failed").then_some(shown.body)
    })
    .await;
    assert!(
        failed["result"]["body"]
            .as_str()
            .unwrap()
            .contains("public"),
        "{failed}"
    );
    assert!(
        calls.lock().unwrap().is_empty(),
        "the action reached a loopback endpoint"
    );
}

// A tenant names its model provider's URL too, and the platform posts the masked conversation
// there and shows what comes back: the same policy applies.
#[tokio::test]
async fn a_tenant_cannot_point_its_model_provider_at_the_platforms_own_network() {
    let graph = crate::fakes::graph::FakeGraph::start().await;
    let url = graph.base_url.clone();
    let app = TestApp::spawn_with(|c| {
        fast_worker(c, &url);
        c.actions_allow_private = false;
    })
    .await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let put = |body: Value| {
        app.send(
            Req::new(axum::http::Method::PUT, "/api/v1/agent/settings")
                .by(&owner)
                .json(body),
        )
    };

    for refused_url in [
        "http://127.0.0.1:11434/v1",
        "http://169.254.169.254/latest",
        "http://[::1]:8000/v1",
        "http://10.0.0.5/v1",
        "http://[64:ff9b::7f00:1]:11434/v1",
        "http://[2002:a9fe:a9fe::]/latest",
    ] {
        let refused = put(json!({ "provider_base_url": refused_url })).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused_url}");
        assert_eq!(refused.error_code(), "invalid_provider");
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ACTIONS_ALLOW_PRIVATE"),
            "{}",
            refused.body
        );
    }
    let shown = app
        .send(Req::get("/api/v1/agent/settings").by(&owner))
        .await;
    assert_eq!(shown.body["provider_base_url"], Value::Null);

    // A name that resolves to loopback is refused when the client resolves it: the fake model
    // listening there never hears from the platform, and the customer is handed to a person.
    let model = crate::fakes::openai::FakeOpenAI::start().await;
    let port = model
        .base_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/v1");
    let by_name = format!("http://localhost:{port}/v1");
    let saved = put(json!({ "provider_base_url": by_name, "max_retries": 0 })).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    let (inbox, secret) = app.whatsapp_inbox(&owner, &graph.token).await;
    let said = app
        .webhook(
            inbox,
            &crate::agent::customer_says("Hello?", "wamid.SSRF"),
            &secret,
        )
        .await;
    assert_eq!(said.status, StatusCode::OK);
    let run = crate::agent::execution(&app).await;
    assert_eq!(run["record"]["reason"], "provider_unavailable", "{run}");
    assert!(
        run["record"]["errors"].to_string().contains("public"),
        "{}",
        run["record"]["errors"]
    );
    assert_eq!(
        model.request_count(),
        0,
        "the provider call reached loopback"
    );
}
