//! A WhatsApp number belongs to whoever Meta says may use it, not to the first tenant to type
//! in its id (security review, item 9). A squatter who registered the fixtures' number first
//! used to lock its owner out with `409 phone_number_taken`, an answer that also told the owner
//! some other tenant had it. These tests replay that attack through the API against a fake
//! Graph API on which only the owner's token may use the number.

use axum::http::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{fast_worker, fixture, Member, Req, Resp, TestApp, WA_PHONE_NUMBER_ID};
use crate::fakes::graph::{FakeGraph, Reply, FIXTURE_BUSINESS_ACCOUNT};

const OWNER_TOKEN: &str = "EAAG-the-numbers-real-owner";
const SQUATTER_TOKEN: &str = "EAAG-the-squatters-own-token";

/// An app on a fake Graph API where only the owner's token may use the fixtures' number.
async fn setup() -> (TestApp, FakeGraph) {
    let fake = FakeGraph::start().await;
    fake.only_token_for(WA_PHONE_NUMBER_ID, OWNER_TOKEN);
    let url = fake.base_url.clone();
    let app = TestApp::spawn_with(|c| fast_worker(c, &url)).await;
    (app, fake)
}

fn whatsapp_body(number: &str, token: &str, app_secret: &str) -> Value {
    json!({
        "name": "WhatsApp support",
        "channel": "whatsapp",
        "whatsapp": {
            "phone_number_id": number,
            "business_account_id": FIXTURE_BUSINESS_ACCOUNT,
            "verify_token": "the-verify-token",
            "app_secret": app_secret,
            "access_token": token,
        }
    })
}

async fn register(app: &TestApp, member: &Member, token: &str) -> Resp {
    app.send(Req::post("/api/v1/inboxes").by(member).json(whatsapp_body(
        WA_PHONE_NUMBER_ID,
        token,
        "owner-app-secret",
    )))
    .await
}

/// The tenants holding a WhatsApp inbox for the fixtures' number, read past row-level security.
async fn holders(app: &TestApp) -> Vec<Uuid> {
    let mut conn = app.superuser().await;
    sqlx::query_scalar(
        "SELECT tenant_id FROM inbox
         WHERE channel = 'whatsapp' AND settings ->> 'phone_number_id' = $1 ORDER BY created_at",
    )
    .bind(WA_PHONE_NUMBER_ID)
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// Asserts that an answer to the owner says nothing of the squatter's tenant.
fn names_no_other_tenant(resp: &Resp, squatter: &Member) {
    let text = resp.body.to_string();
    for word in [
        squatter.tenant_id.to_string().as_str(),
        squatter.slug.as_str(),
        "another tenant",
        "already connected",
        "taken",
    ] {
        assert!(!text.contains(word), "{word:?} in {text}");
    }
}

// proves: SEC-3
#[tokio::test]
async fn a_tenant_meta_does_not_confirm_cannot_take_a_number_and_its_owner_still_can() {
    let (app, fake) = setup().await;
    let squatter = app.signup("squatter").await;
    let owner = app.signup("owner").await;

    let squatted = register(&app, &squatter, SQUATTER_TOKEN).await;
    assert_eq!(
        squatted.status,
        StatusCode::BAD_REQUEST,
        "{}",
        squatted.body
    );
    assert_eq!(squatted.error_code(), "whatsapp_not_verified");
    let message = squatted.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Meta did not confirm"), "{message}");
    assert!(holders(&app).await.is_empty(), "nothing is stored");
    assert!(app
        .audit_events(squatter.tenant_id, "inbox.created")
        .await
        .is_empty());
    // Meta was asked with the squatter's own token, in the header.
    let asked = fake.lookups();
    assert_eq!(asked[0].path, format!("/v21.0/{WA_PHONE_NUMBER_ID}"));
    assert_eq!(
        asked[0].header("authorization"),
        Some(format!("Bearer {SQUATTER_TOKEN}").as_str())
    );

    let owned = register(&app, &owner, OWNER_TOKEN).await;
    assert_eq!(owned.status, StatusCode::CREATED, "{}", owned.body);
    // Not given, so taken from Meta's answer.
    assert_eq!(
        owned.body["settings"]["display_phone_number"],
        "+1 555-078-3881"
    );
    assert_eq!(holders(&app).await, vec![owner.tenant_id]);

    // Trying again after the owner has it changes nothing and tells the squatter nothing new.
    let again = register(&app, &squatter, SQUATTER_TOKEN).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    assert_eq!(again.error_code(), "whatsapp_not_verified");
    assert!(!again.body.to_string().contains(&owner.slug));
}

// proves: SEC-3
#[tokio::test]
async fn a_number_squatted_before_the_fix_neither_blocks_its_owner_nor_is_named_to_them() {
    let (app, _fake) = setup().await;
    let squatter = app.signup("squatter").await;
    let owner = app.signup("owner").await;
    // What a squatter left behind before numbers were confirmed with Meta.
    let mut conn = app.superuser().await;
    sqlx::query(
        "INSERT INTO inbox (id, tenant_id, name, channel, settings)
         VALUES ($1, $2, 'Squatted', 'whatsapp', $3)",
    )
    .bind(Uuid::now_v7())
    .bind(squatter.tenant_id)
    .bind(json!({ "phone_number_id": WA_PHONE_NUMBER_ID, "business_account_id": FIXTURE_BUSINESS_ACCOUNT }))
    .execute(&mut conn)
    .await
    .unwrap();

    let owned = register(&app, &owner, OWNER_TOKEN).await;
    assert_eq!(owned.status, StatusCode::CREATED, "{}", owned.body);
    names_no_other_tenant(&owned, &squatter);
    let inbox = owned.uuid("/id");

    // A second inbox for the same number is the owner's own conflict, and says only that.
    let twice = app
        .send(Req::post("/api/v1/inboxes").by(&owner).json(whatsapp_body(
            WA_PHONE_NUMBER_ID,
            OWNER_TOKEN,
            "another-app-secret",
        )))
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "{}", twice.body);
    assert_eq!(twice.error_code(), "phone_number_in_use");
    assert!(twice.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("your inboxes"));
    names_no_other_tenant(&twice, &squatter);

    // The owner's number works end to end: Meta's delivery lands with the owner only.
    let delivered = app
        .webhook(inbox, &fixture("text"), "owner-app-secret")
        .await;
    assert_eq!(delivered.status, StatusCode::OK, "{}", delivered.body);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM message WHERE tenant_id = '{}'",
            owner.tenant_id
        ))
        .await,
        1
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM message WHERE tenant_id = '{}'",
            squatter.tenant_id
        ))
        .await,
        0
    );
    let listed = app.send(Req::get("/api/v1/inboxes").by(&owner)).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1, "{}", listed.body);
    names_no_other_tenant(&listed, &squatter);
}

#[tokio::test]
async fn changing_an_inboxs_number_account_or_token_is_confirmed_with_meta_again() {
    let (app, fake) = setup().await;
    let owner = app.signup("owner").await;
    let created = register(&app, &owner, OWNER_TOKEN).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let path = format!("/api/v1/inboxes/{}", created.uuid("/id"));
    // Another business's number, one of another account, and one of the owner's own.
    fake.add_number("200000000000001", FIXTURE_BUSINESS_ACCOUNT);
    fake.only_token_for("200000000000001", "EAAG-another-business");
    fake.add_number("300000000000001", "999999999999999");
    fake.add_number("400000000000001", FIXTURE_BUSINESS_ACCOUNT);

    let stored = || async {
        let mut conn = app.superuser().await;
        sqlx::query_as::<_, (Value, Vec<u8>)>("SELECT settings, secrets FROM inbox")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    let before = stored().await;
    for change in [
        json!({ "access_token": SQUATTER_TOKEN }),
        json!({ "phone_number_id": "200000000000001" }),
        json!({ "phone_number_id": "300000000000001" }),
        json!({ "business_account_id": "999999999999999" }),
        json!({ "phone_number_id": "500000000000001", "access_token": OWNER_TOKEN }),
    ] {
        let asked = fake.lookups().len();
        let refused = app
            .send(
                Req::patch(&path)
                    .by(&owner)
                    .json(json!({ "name": "Moved", "whatsapp": change })),
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{change}: {}",
            refused.body
        );
        assert_eq!(refused.error_code(), "whatsapp_not_verified", "{change}");
        assert!(fake.lookups().len() > asked, "{change}: Meta was not asked");
        assert_eq!(stored().await, before, "{change}: the inbox changed");
    }
    assert!(app
        .audit_events(owner.tenant_id, "inbox.updated")
        .await
        .is_empty());

    // A rename alone asks Meta nothing.
    let asked = fake.lookups().len();
    let renamed = app
        .send(
            Req::patch(&path)
                .by(&owner)
                .json(json!({ "name": "Support" })),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(fake.lookups().len(), asked);

    // A number of the owner's own that Meta confirms is taken, shown as Meta shows it.
    let moved = app
        .send(
            Req::patch(&path)
                .by(&owner)
                .json(json!({ "whatsapp": { "phone_number_id": "400000000000001" } })),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    assert_eq!(moved.body["settings"]["phone_number_id"], "400000000000001");
    assert_eq!(
        moved.body["settings"]["display_phone_number"],
        "+1 555-0000001"
    );
    let asked_with = fake
        .lookups()
        .last()
        .unwrap()
        .header("authorization")
        .map(str::to_string);
    assert_eq!(asked_with, Some(format!("Bearer {OWNER_TOKEN}")));
}

#[tokio::test]
async fn when_meta_cannot_be_asked_nothing_is_stored_and_the_answer_says_so_without_a_500() {
    let (app, fake) = setup().await;
    let owner = app.signup("owner").await;
    for reply in [
        Reply::ServerError,
        Reply::TooManyRequests {
            retry_after_secs: Some(30),
        },
        // Longer than the app's Graph timeout (2 s in tests).
        Reply::Hang,
    ] {
        fake.push_lookup(reply.clone());
        let resp = register(&app, &owner, OWNER_TOKEN).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_GATEWAY,
            "{reply:?}: {}",
            resp.body
        );
        assert_eq!(resp.error_code(), "whatsapp_unreachable", "{reply:?}");
        assert!(holders(&app).await.is_empty(), "{reply:?}");
    }

    // No Graph API listening at all.
    let nowhere = TestApp::spawn_with(|c| fast_worker(c, "http://127.0.0.1:9")).await;
    let member = nowhere.signup("owner").await;
    let resp = register(&nowhere, &member, OWNER_TOKEN).await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{}", resp.body);
    assert_eq!(resp.error_code(), "whatsapp_unreachable");
    assert!(holders(&nowhere).await.is_empty());
}

/// An empty app secret would let anyone sign a webhook for the inbox, an empty verify token
/// let anyone pass the handshake: both are refused, as are an access token that cannot be sent
/// and a name over the limit, before Meta is asked anything and without storing a thing.
#[tokio::test]
async fn an_empty_secret_or_an_over_long_name_is_refused_before_meta_is_asked() {
    let (app, fake) = setup().await;
    let owner = app.signup("acme").await;
    let mut cases = Vec::new();
    for secret in ["verify_token", "app_secret"] {
        let mut body = whatsapp_body(WA_PHONE_NUMBER_ID, OWNER_TOKEN, "owner-app-secret");
        body["whatsapp"][secret] = json!("");
        cases.push((body, "missing_field"));
    }
    // An access token goes in an HTTP header: one that cannot was reported as Meta being
    // unreachable (502), though it is the token that is wrong.
    for token in ["", "EAAG token with spaces", "EAAG-tökén"] {
        let mut body = whatsapp_body(WA_PHONE_NUMBER_ID, OWNER_TOKEN, "owner-app-secret");
        body["whatsapp"]["access_token"] = json!(token);
        cases.push((body, "invalid_access_token"));
    }
    let mut long = whatsapp_body(WA_PHONE_NUMBER_ID, OWNER_TOKEN, "owner-app-secret");
    long["name"] = json!("n".repeat(101));
    cases.push((long, "name_too_long"));
    for (body, code) in cases {
        let resp = app
            .send(Req::post("/api/v1/inboxes").by(&owner).json(body.clone()))
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            resp.body
        );
        assert_eq!(resp.error_code(), code, "{body}");
    }
    assert!(fake.lookups().is_empty(), "Meta was asked");
    assert!(holders(&app).await.is_empty());

    let created = register(&app, &owner, OWNER_TOKEN).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let inbox = created.uuid("/id");
    let emptied = app
        .send(
            Req::patch(format!("/api/v1/inboxes/{inbox}"))
                .by(&owner)
                .json(json!({ "whatsapp": { "app_secret": "" } })),
        )
        .await;
    assert_eq!(emptied.status, StatusCode::BAD_REQUEST, "{}", emptied.body);
    assert_eq!(emptied.error_code(), "missing_field");
}
