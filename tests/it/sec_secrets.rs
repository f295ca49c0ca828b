//! Stored secrets go only where they were saved for. An admin who may change the agent's
//! provider address must not be able to send the owner's stored API key to a host of their own
//! (security review, item 1): a changed address needs the key again, and a key is sealed for its
//! destination, so an address changed by any other path finds a key that does not open.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{Req, TestApp};
use crate::fakes::openai::FakeOpenAI;

const OWNER_KEY: &str = "sk-the-owners-own-key";

fn bearers(model: &FakeOpenAI) -> Vec<String> {
    model
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect()
}

async fn put_settings(
    app: &TestApp,
    by: &crate::common::Member,
    body: Value,
) -> crate::common::Resp {
    app.send(
        Req::new(Method::PUT, "/api/v1/agent/settings")
            .by(by)
            .json(body),
    )
    .await
}

#[tokio::test]
async fn an_admin_cannot_redirect_the_stored_api_key_to_a_host_of_their_own() {
    let app = TestApp::spawn().await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let rogue = app.join(&owner, "admin").await;
    let provider = FakeOpenAI::start().await;
    provider.set_embedding_dimension(384);
    let attacker = FakeOpenAI::start().await;
    attacker.set_embedding_dimension(384);

    let saved = put_settings(
        &app,
        &owner,
        json!({ "provider_base_url": provider.base_url, "api_key": OWNER_KEY }),
    )
    .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    let version = saved.body["config_version"].clone();

    // The attack: point the provider at the attacker's host and keep the stored key.
    let moved = put_settings(
        &app,
        &rogue,
        json!({ "provider_base_url": attacker.base_url }),
    )
    .await;
    assert_eq!(moved.status, StatusCode::BAD_REQUEST, "{}", moved.body);
    assert_eq!(moved.error_code(), "api_key_required");
    // Nothing changed, so nothing was scheduled to run against the new address either.
    let shown = app
        .send(Req::get("/api/v1/agent/settings").by(&owner))
        .await;
    assert_eq!(shown.body["provider_base_url"], json!(provider.base_url));
    assert_eq!(shown.body["config_version"], version);
    assert_eq!(
        app.count("SELECT count(*) FROM audit_event WHERE action = 'agent.settings_changed'")
            .await,
        1
    );

    // With a key of their own the admin may move the provider: that key is what travels.
    let own = put_settings(
        &app,
        &rogue,
        json!({ "provider_base_url": attacker.base_url, "api_key": "sk-the-admins-key" }),
    )
    .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    let searched = app
        .send(
            Req::post("/api/v1/knowledge/search")
                .by(&rogue)
                .json(json!({ "query": "returns" })),
        )
        .await;
    assert_eq!(searched.status, StatusCode::OK, "{}", searched.body);
    let seen = bearers(&attacker);
    assert!(!seen.is_empty(), "the search reached the new provider");
    assert!(
        seen.iter().all(|b| b == "Bearer sk-the-admins-key"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_key_sealed_for_one_provider_does_not_open_for_an_address_changed_in_the_database() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let provider = FakeOpenAI::start().await;
    provider.set_embedding_dimension(384);
    let attacker = FakeOpenAI::start().await;
    attacker.set_embedding_dimension(384);
    let saved = put_settings(
        &app,
        &owner,
        json!({ "provider_base_url": provider.base_url, "api_key": OWNER_KEY }),
    )
    .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);

    // Any path that changes the address behind the API's back (a bad migration, a restored
    // backup, a future route that forgets the rule) meets the seal.
    let mut db = app.superuser().await;
    sqlx::query(
        "UPDATE agent_settings SET provider_base_url = $1, config_version = config_version + 1",
    )
    .bind(&attacker.base_url)
    .execute(&mut db)
    .await
    .unwrap();
    let searched = app
        .send(
            Req::post("/api/v1/knowledge/search")
                .by(&owner)
                .json(json!({ "query": "returns" })),
        )
        .await;
    assert_eq!(
        searched.status,
        StatusCode::BAD_REQUEST,
        "{}",
        searched.body
    );
    assert_eq!(searched.error_code(), "api_key_required");
    assert!(attacker.requests().is_empty(), "{:?}", bearers(&attacker));
}

#[tokio::test]
async fn switching_to_the_offline_responder_drops_the_key_and_a_new_address_needs_one() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let provider = FakeOpenAI::start().await;
    let saved = put_settings(
        &app,
        &owner,
        json!({ "provider_base_url": provider.base_url, "api_key": OWNER_KEY }),
    )
    .await;
    assert_eq!(saved.body["api_key_configured"], true, "{}", saved.body);
    let offline = put_settings(&app, &owner, json!({ "provider_base_url": null })).await;
    assert_eq!(offline.status, StatusCode::OK, "{}", offline.body);
    assert_eq!(offline.body["api_key_configured"], false);

    let keyless = put_settings(&app, &owner, json!({ "api_key": "sk-nowhere" })).await;
    assert_eq!(keyless.status, StatusCode::BAD_REQUEST, "{}", keyless.body);
    assert_eq!(keyless.error_code(), "invalid_provider");
}
