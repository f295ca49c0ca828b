//! The Graph API client on its own, against the fake Graph server: the shape of what it posts,
//! how it sorts Meta's answers into retryable, permanent and outside-the-window failures, the
//! reads that confirm a business number, and the access token kept out of every error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use custodian::channels::whatsapp::client::{
    ClientConfigError, ConfirmError, GraphClient, MediaSource, Outbound, SendError, Sent,
    THROTTLING_CODES, TRANSIENT_CODES,
};
use custodian::channels::whatsapp::payload::MediaKind;
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::fakes::graph::{FakeGraph, Reply};

const PHONE_NUMBER_ID: &str = "106540352242922";
const VERSION: &str = "v23.0";

fn client(fake: &FakeGraph) -> GraphClient {
    GraphClient::new(&fake.base_url, VERSION, Duration::from_secs(5)).unwrap()
}

fn token(fake: &FakeGraph) -> SecretString {
    SecretString::from(fake.token.clone())
}

fn text() -> Outbound {
    Outbound::Text {
        to: "16505551234".into(),
        body: "Your replacement part ships today.".into(),
        preview_url: false,
    }
}

async fn send_one(fake: &FakeGraph, reply: Reply) -> Result<Sent, SendError> {
    fake.push(reply);
    client(fake)
        .send(PHONE_NUMBER_ID, &token(fake), &text())
        .await
}

#[tokio::test]
async fn a_text_message_is_posted_with_the_bearer_token_and_returns_the_wamid() {
    let fake = FakeGraph::start().await;
    let sent = client(&fake)
        .send(PHONE_NUMBER_ID, &token(&fake), &text())
        .await
        .unwrap();

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v23.0/106540352242922/messages");
    assert_eq!(request.version.as_deref(), Some(VERSION));
    assert_eq!(request.phone_number_id.as_deref(), Some(PHONE_NUMBER_ID));
    assert!(request.authorized);
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {}", fake.token).as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.body,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "16505551234",
            "type": "text",
            "text": { "preview_url": false, "body": "Your replacement part ships today." }
        })
    );
    assert_eq!(Some(&sent.wamid), request.wamid.as_ref());
    assert!(sent.wamid.starts_with("wamid."));
    assert_eq!(sent.wa_id.as_deref(), Some("16505551234"));
    assert_eq!(sent.message_status.as_deref(), Some("accepted"));
}

#[tokio::test]
async fn templates_and_media_are_posted_in_graph_shape() {
    let fake = FakeGraph::start().await;
    let graph = client(&fake);
    let template = Outbound::Template {
        to: "16505551234".into(),
        name: "order_update".into(),
        language: "en_US".into(),
        components: json!([{ "type": "body", "parameters": [{ "type": "text", "text": "2291" }] }]),
    };
    let bare_template = Outbound::Template {
        to: "16505551234".into(),
        name: "hello_world".into(),
        language: "en_US".into(),
        components: Value::Null,
    };
    let document = Outbound::Media {
        to: "16505551234".into(),
        kind: MediaKind::Document,
        source: MediaSource::Id("1268523917764580".into()),
        caption: Some("Your invoice".into()),
        filename: Some("invoice-2291.pdf".into()),
    };
    let image = Outbound::Media {
        to: "16505551234".into(),
        kind: MediaKind::Image,
        source: MediaSource::Link("https://example.com/part.jpg".into()),
        caption: None,
        filename: None,
    };
    for message in [&template, &bare_template, &document, &image] {
        graph
            .send(PHONE_NUMBER_ID, &token(&fake), message)
            .await
            .unwrap();
    }
    let bodies: Vec<Value> = fake.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies[0]["type"], "template");
    assert_eq!(
        bodies[0]["template"],
        json!({
            "name": "order_update",
            "language": { "code": "en_US" },
            "components": [{ "type": "body", "parameters": [{ "type": "text", "text": "2291" }] }]
        })
    );
    assert_eq!(
        bodies[1]["template"],
        json!({ "name": "hello_world", "language": { "code": "en_US" } })
    );
    assert_eq!(bodies[2]["type"], "document");
    assert_eq!(
        bodies[2]["document"],
        json!({ "id": "1268523917764580", "caption": "Your invoice", "filename": "invoice-2291.pdf" })
    );
    assert_eq!(
        bodies[3]["image"],
        json!({ "link": "https://example.com/part.jpg" })
    );
    assert!(template.is_template() && !document.is_template());
}

#[tokio::test]
async fn a_business_scoped_id_is_sent_as_recipient() {
    let fake = FakeGraph::start().await;
    let message = Outbound::Text {
        to: "US.13491208655302741918".into(),
        body: "Hello".into(),
        preview_url: false,
    };
    client(&fake)
        .send(PHONE_NUMBER_ID, &token(&fake), &message)
        .await
        .unwrap();
    let body = &fake.requests()[0].body;
    assert_eq!(body["recipient"], "US.13491208655302741918");
    assert!(body.get("to").is_none(), "{body}");
    // Phone numbers, with or without `+`, stay in `to`.
    for phone in ["16505551234", "+16505551234"] {
        let body = Outbound::Text {
            to: phone.into(),
            body: "x".into(),
            preview_url: false,
        }
        .to_request_body();
        assert_eq!(body["to"], phone);
        assert!(body.get("recipient").is_none());
    }
}

#[tokio::test]
async fn a_429_surfaces_retry_after_and_is_retryable() {
    let fake = FakeGraph::start().await;
    let err = send_one(
        &fake,
        Reply::TooManyRequests {
            retry_after_secs: Some(7),
        },
    )
    .await
    .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    match &err {
        SendError::Retryable {
            status, message, ..
        } => {
            assert_eq!(*status, 429);
            assert!(message.contains("130429"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.as_json()["retry_after_secs"], 7);

    let err = send_one(
        &fake,
        Reply::TooManyRequests {
            retry_after_secs: None,
        },
    )
    .await
    .unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), None);
}

#[tokio::test]
async fn a_500_is_retryable() {
    let fake = FakeGraph::start().await;
    let err = send_one(&fake, Reply::ServerError).await.unwrap_err();
    assert!(
        matches!(err, SendError::Retryable { status: 500, .. }),
        "{err:?}"
    );

    let err = send_one(
        &fake,
        Reply::Raw {
            status: 502,
            headers: vec![("content-type".into(), "text/html".into())],
            body: "<html>Bad Gateway</html>".into(),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SendError::Retryable { status: 502, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("Bad Gateway"), "{err}");
}

#[tokio::test]
async fn graph_throttling_codes_are_retryable_even_with_a_400() {
    let fake = FakeGraph::start().await;
    let err = send_one(&fake, Reply::pair_rate_limit()).await.unwrap_err();
    assert!(
        matches!(err, SendError::Retryable { status: 400, .. }),
        "{err:?}"
    );
    for code in THROTTLING_CODES.iter().chain(TRANSIENT_CODES) {
        let err = send_one(
            &fake,
            Reply::GraphError {
                status: 400,
                code: *code,
                message: format!("(#{code}) limit"),
                details: String::new(),
            },
        )
        .await
        .unwrap_err();
        assert!(err.is_retryable(), "code {code}: {err:?}");
    }
}

#[tokio::test]
async fn a_re_engagement_error_means_outside_the_window() {
    let fake = FakeGraph::start().await;
    let err = send_one(&fake, Reply::outside_window()).await.unwrap_err();
    match &err {
        SendError::OutsideWindow { code, message } => {
            assert_eq!(*code, 131_047);
            assert!(message.contains("24 hours"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(err.graph_code(), Some(131_047));
    assert_eq!(err.as_json()["kind"], "outside_window");
    assert_eq!(err.as_json()["code"], 131_047);
}

#[tokio::test]
async fn a_400_with_a_graph_error_is_permanent_and_keeps_its_code() {
    let fake = FakeGraph::start().await;
    let err = send_one(&fake, Reply::invalid_parameter())
        .await
        .unwrap_err();
    match &err {
        SendError::Permanent {
            status,
            code,
            message,
        } => {
            assert_eq!(*status, 400);
            assert_eq!(*code, Some(100));
            assert_eq!(
                message,
                "(#100) Invalid parameter: Parameter 'to' is not a valid phone number."
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(
        err.as_json(),
        json!({
            "kind": "permanent",
            "retryable": false,
            "status": 400,
            "code": 100,
            "message": err.to_string(),
        })
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_permanently() {
    let fake = FakeGraph::start().await;
    let err = client(&fake)
        .send(
            PHONE_NUMBER_ID,
            &SecretString::from("not-the-token"),
            &text(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SendError::Permanent {
                status: 401,
                code: Some(190),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!fake.requests()[0].authorized);
}

#[tokio::test]
async fn a_hanging_server_is_a_transport_error_after_the_timeout() {
    let fake = FakeGraph::start().await;
    fake.push(Reply::Hang);
    let graph = GraphClient::new(&fake.base_url, VERSION, Duration::from_millis(200)).unwrap();
    let started = std::time::Instant::now();
    let err = graph
        .send(PHONE_NUMBER_ID, &token(&fake), &text())
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match &err {
        SendError::Transport(message) => assert!(message.contains("timed out"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(err.is_retryable());
    assert!(
        err.may_have_been_sent(),
        "an unanswered request may have reached Meta"
    );
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn callback_data_is_posted_for_meta_to_echo_in_status_webhooks() {
    let fake = FakeGraph::start().await;
    client(&fake)
        .send_tagged(
            PHONE_NUMBER_ID,
            &token(&fake),
            &text(),
            Some("0190c1f6-0000-7000-8000-000000000001"),
        )
        .await
        .unwrap();
    client(&fake)
        .send(PHONE_NUMBER_ID, &token(&fake), &text())
        .await
        .unwrap();
    let requests = fake.requests();
    assert_eq!(
        requests[0].body["biz_opaque_callback_data"],
        "0190c1f6-0000-7000-8000-000000000001"
    );
    assert!(requests[1].body.get("biz_opaque_callback_data").is_none());
}

#[tokio::test]
async fn a_refused_connection_is_unreachable_and_so_certainly_not_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let graph =
        GraphClient::new(&format!("http://{addr}"), VERSION, Duration::from_secs(2)).unwrap();
    let err = graph
        .send(PHONE_NUMBER_ID, &SecretString::from("t"), &text())
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Unreachable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(!err.may_have_been_sent());
}

#[tokio::test]
async fn a_success_without_a_message_id_is_not_retried() {
    let fake = FakeGraph::start().await;
    let err = send_one(
        &fake,
        Reply::Raw {
            status: 200,
            headers: vec![],
            body: r#"{"messaging_product":"whatsapp","messages":[]}"#.into(),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SendError::Permanent { status: 200, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn the_access_token_never_appears_in_errors_or_debug_output() {
    let secret = "EAAG-very-secret-token-do-not-log";
    let fake = FakeGraph::start_with_token(secret).await;
    let graph = GraphClient::new(&fake.base_url, VERSION, Duration::from_millis(300)).unwrap();
    let token = SecretString::from(secret);
    let replies = [
        Reply::TooManyRequests {
            retry_after_secs: Some(1),
        },
        Reply::ServerError,
        Reply::outside_window(),
        Reply::invalid_parameter(),
        Reply::Hang,
    ];
    for reply in replies {
        fake.push(reply);
        let err = graph
            .send(PHONE_NUMBER_ID, &token, &text())
            .await
            .unwrap_err();
        for shown in [
            format!("{err}"),
            format!("{err:?}"),
            err.as_json().to_string(),
        ] {
            assert!(!shown.contains(secret), "token leaked: {shown}");
        }
    }
    assert!(!format!("{graph:?}").contains(secret));
    assert!(!format!("{token:?}").contains(secret));
    assert!(fake.requests().iter().all(|r| r.authorized));
}

const BUSINESS_ACCOUNT_ID: &str = "102290129340398";

#[tokio::test]
async fn a_number_the_token_may_use_is_confirmed_as_meta_shows_it() {
    let fake = FakeGraph::start().await;
    let token = SecretString::from("EAAG-the-owners-token");
    let number = client(&fake)
        .confirm_number(PHONE_NUMBER_ID, BUSINESS_ACCOUNT_ID, &token)
        .await
        .unwrap();
    assert_eq!(number.id, PHONE_NUMBER_ID);
    assert_eq!(
        number.display_phone_number.as_deref(),
        Some("+1 555-078-3881")
    );
    assert_eq!(number.verified_name.as_deref(), Some("Jaspers Market"));
    let lookups = fake.lookups();
    assert_eq!(lookups.len(), 2);
    assert_eq!(lookups[0].method, "GET");
    assert_eq!(lookups[0].path, "/v23.0/106540352242922");
    assert_eq!(lookups[1].path, "/v23.0/102290129340398/phone_numbers");
    for lookup in &lookups {
        // The token goes in the header only, never in a URL that proxies and logs keep.
        assert_eq!(
            lookup.header("authorization"),
            Some("Bearer EAAG-the-owners-token")
        );
    }
    assert_eq!(fake.request_count(), 0, "a lookup sends nothing");
}

#[tokio::test]
async fn a_token_meta_does_not_confirm_for_the_number_is_not_confirmed() {
    let fake = FakeGraph::start().await;
    fake.only_token_for(PHONE_NUMBER_ID, "EAAG-the-owners-token");
    let err = client(&fake)
        .confirm_number(
            PHONE_NUMBER_ID,
            BUSINESS_ACCOUNT_ID,
            &SecretString::from("EAAG-someone-elses-token"),
        )
        .await
        .unwrap_err();
    match &err {
        ConfirmError::NotConfirmed(reason) => {
            assert!(reason.contains("does not exist"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.lookups().len(), 1, "no second read after a refusal");
}

#[tokio::test]
async fn a_number_outside_the_business_account_is_not_confirmed() {
    let fake = FakeGraph::start().await;
    fake.add_number("200000000000001", "999999999999999");
    let err = client(&fake)
        .confirm_number(
            "200000000000001",
            BUSINESS_ACCOUNT_ID,
            &SecretString::from("t"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConfirmError::NotConfirmed(r) if r.contains("not one of the business account")),
        "{err:?}"
    );
    // An account the token cannot see is refused by Meta itself.
    let err = client(&fake)
        .confirm_number(PHONE_NUMBER_ID, "999999999999998", &SecretString::from("t"))
        .await
        .unwrap_err();
    assert!(matches!(err, ConfirmError::NotConfirmed(_)), "{err:?}");
}

#[tokio::test]
async fn a_business_accounts_numbers_are_read_page_after_page() {
    let fake = FakeGraph::start().await;
    for n in 0..150u64 {
        fake.add_number(&format!("3000000000{n:05}"), BUSINESS_ACCOUNT_ID);
    }
    let number = client(&fake)
        .confirm_number(
            "300000000000149",
            BUSINESS_ACCOUNT_ID,
            &SecretString::from("t"),
        )
        .await
        .unwrap();
    assert_eq!(number.id, "300000000000149");
    let lookups = fake.lookups();
    assert_eq!(lookups.len(), 3, "{lookups:?}");
    assert!(
        lookups[2].header("authorization").is_some() && lookups[2].path.ends_with("/phone_numbers")
    );
}

#[tokio::test]
async fn no_usable_answer_from_meta_is_unavailable_never_a_refusal() {
    let fake = FakeGraph::start().await;
    let graph = GraphClient::new(&fake.base_url, VERSION, Duration::from_millis(300)).unwrap();
    let token = SecretString::from("t");
    let replies = [
        Reply::ServerError,
        Reply::TooManyRequests {
            retry_after_secs: Some(3),
        },
        Reply::pair_rate_limit(),
        Reply::Hang,
        Reply::Raw {
            status: 403,
            headers: vec![("content-type".into(), "text/html".into())],
            body: "<html>Forbidden by proxy</html>".into(),
        },
        Reply::Raw {
            status: 200,
            headers: vec![],
            body: "not json".into(),
        },
    ];
    for reply in replies {
        fake.push_lookup(reply.clone());
        let err = graph
            .confirm_number(PHONE_NUMBER_ID, BUSINESS_ACCOUNT_ID, &token)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ConfirmError::Unavailable(_)),
            "{reply:?}: {err:?}"
        );
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let closed =
        GraphClient::new(&format!("http://{addr}"), VERSION, Duration::from_secs(2)).unwrap();
    let err = closed
        .confirm_number(PHONE_NUMBER_ID, BUSINESS_ACCOUNT_ID, &token)
        .await
        .unwrap_err();
    assert!(matches!(err, ConfirmError::Unavailable(_)), "{err:?}");
}

#[test]
fn the_messages_url_keeps_a_base_path_and_escapes_the_id() {
    let graph = GraphClient::new(
        "https://graph.example.com/proxy/",
        "v23.0",
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(
        graph.messages_url("106540352242922").as_str(),
        "https://graph.example.com/proxy/v23.0/106540352242922/messages"
    );
    assert_eq!(
        graph.messages_url("1/../2").as_str(),
        "https://graph.example.com/proxy/v23.0/1%2F..%2F2/messages"
    );
}

#[test]
fn bad_configuration_is_refused_at_construction() {
    let t = Duration::from_secs(1);
    assert!(matches!(
        GraphClient::new("graph.facebook.com", "v23.0", t),
        Err(ClientConfigError::BaseUrl(_))
    ));
    assert!(matches!(
        GraphClient::new("ftp://graph.facebook.com", "v23.0", t),
        Err(ClientConfigError::BaseUrl(_))
    ));
    assert!(matches!(
        GraphClient::new("https://graph.facebook.com", "", t),
        Err(ClientConfigError::Version(_))
    ));
    assert!(matches!(
        GraphClient::new("https://graph.facebook.com", "v23.0/x", t),
        Err(ClientConfigError::Version(_))
    ));
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/whatsapp")
}

#[tokio::test]
async fn every_graph_response_fixture_is_understood() {
    let expectations: &[(&str, u16, &str)] = &[
        ("graph_send_response.json", 200, "sent"),
        ("graph_error_outside_window.json", 400, "outside_window"),
        ("graph_error_invalid_parameter.json", 400, "permanent"),
        ("graph_error_rate_limit.json", 400, "retryable"),
    ];
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("graph_") && n.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = expectations.iter().map(|(n, ..)| n.to_string()).collect();
    expected.sort();
    assert_eq!(
        on_disk, expected,
        "every graph_*.json fixture needs an expectation"
    );

    for (name, status, kind) in expectations {
        let body = std::fs::read_to_string(fixtures_dir().join(name)).unwrap();
        let fake = FakeGraph::start().await;
        let outcome = send_one(
            &fake,
            Reply::Raw {
                status: *status,
                headers: vec![("content-type".into(), "application/json".into())],
                body,
            },
        )
        .await;
        match (outcome, *kind) {
            (Ok(sent), "sent") => {
                assert!(sent.wamid.starts_with("wamid."), "{name}");
                assert_eq!(sent.wa_id.as_deref(), Some("16505551234"), "{name}");
            }
            (Err(err), kind) => assert_eq!(err.kind(), kind, "{name}: {err:?}"),
            (other, kind) => panic!("{name}: expected {kind}, got {other:?}"),
        }
    }
}
