//! Meta's example webhook payloads (tests/fixtures/whatsapp) through the payload parser: every
//! documented message type, statuses, batches and system errors, and the clear codes a broken
//! payload is refused with.

use std::path::{Path, PathBuf};

use custodian::channels::whatsapp::payload::*;
use custodian::conversations::delivery::DeliveryStatus;
use serde_json::Value;
use time::OffsetDateTime;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/whatsapp")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn parse_fixture(name: &str) -> Webhook {
    parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn only_message(name: &str) -> InboundMessage {
    let webhook = parse_fixture(name);
    assert!(webhook.errors.is_empty(), "{name}: {:?}", webhook.errors);
    match <[Event; 1]>::try_from(webhook.events) {
        Ok([Event::Message(m)]) => m,
        other => panic!("{name}: expected one message, got {other:?}"),
    }
}

fn only_status(name: &str) -> StatusUpdate {
    match <[Event; 1]>::try_from(parse_fixture(name).events) {
        Ok([Event::Status(s)]) => s,
        other => panic!("{name}: expected one status, got {other:?}"),
    }
}

fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).unwrap()
}

#[test]
fn every_webhook_fixture_parses() {
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures directory") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // graph_*.json are Graph API responses, parsed by the client's tests.
        if !name.ends_with(".json") || name.starts_with("graph_") {
            continue;
        }
        let body = std::fs::read(&path).unwrap();
        let webhook = parse(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name != "account_update.json" {
            assert!(
                !webhook.events.is_empty() || !webhook.errors.is_empty(),
                "{name} produced nothing"
            );
        }
        seen += 1;
    }
    assert!(seen >= 20, "only {seen} webhook fixtures found");
}

#[test]
fn a_text_message_parses_with_its_sender_and_time() {
    let m = only_message("text.json");
    assert_eq!(m.phone_number_id, "106540352242922");
    assert_eq!(m.display_phone_number.as_deref(), Some("15550783881"));
    assert_eq!(m.from_wa_id.as_deref(), Some("16505551234"));
    assert_eq!(m.profile_name.as_deref(), Some("Sheena Nelson"));
    assert_eq!(
        m.provider_message_id,
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    );
    assert_eq!(m.timestamp, at(1_749_416_383));
    assert_eq!(m.context_message_id, None);
    assert!(!m.forwarded);
    assert_eq!(
        m.content,
        Content::Text {
            body: "Does it come in another color?".into()
        }
    );
    assert_eq!(m.content.text_summary(), "Does it come in another color?");
    assert_eq!(m.content.attachment(), None);
}

#[test]
fn every_documented_message_type_parses() {
    let cases: &[(&str, &str, &str)] = &[
        ("text.json", "text", "Does it come in another color?"),
        ("text_reply.json", "text", "Yes, the blue one please"),
        ("image.json", "image", "Is this the right part?"),
        ("audio_voice.json", "audio", "[voice message]"),
        ("video.json", "video", "[video]"),
        ("document.json", "document", "Here is the invoice"),
        ("sticker.json", "sticker", "[sticker]"),
        ("location.json", "location", "[location] Philz Coffee"),
        ("contacts.json", "contacts", "[contact] Barbara J. Johnson"),
        ("reaction.json", "reaction", "[reaction \u{1f44d}]"),
        ("reaction_removed.json", "reaction", "[reaction removed]"),
        (
            "interactive_button_reply.json",
            "interactive",
            "Yes, reschedule",
        ),
        (
            "interactive_list_reply.json",
            "interactive",
            "Priority shipping",
        ),
        ("button.json", "button", "Stop promotions"),
        (
            "unsupported.json",
            "unsupported",
            "[unsupported message: unsupported]",
        ),
        ("unknown_type.json", "order", "[unsupported message: order]"),
    ];
    for (name, message_type, summary) in cases {
        let m = only_message(name);
        assert_eq!(m.content.message_type(), *message_type, "{name}");
        assert_eq!(m.content.text_summary(), *summary, "{name}");
        assert_eq!(m.phone_number_id, "106540352242922", "{name}");
        assert!(m.provider_message_id.starts_with("wamid."), "{name}");
    }
}

#[test]
fn media_messages_carry_their_attachment() {
    let image = only_message("image.json").content.attachment().unwrap();
    assert_eq!(image.kind, MediaKind::Image);
    assert_eq!(image.media_id, "1003383421387256");
    assert_eq!(image.mime_type.as_deref(), Some("image/jpeg"));
    assert_eq!(image.caption.as_deref(), Some("Is this the right part?"));

    let voice = only_message("audio_voice.json")
        .content
        .attachment()
        .unwrap();
    assert_eq!(voice.kind, MediaKind::Audio);
    assert!(voice.voice);
    assert_eq!(voice.mime_type.as_deref(), Some("audio/ogg; codecs=opus"));

    let document = only_message("document.json").content.attachment().unwrap();
    assert_eq!(document.kind, MediaKind::Document);
    assert_eq!(document.filename.as_deref(), Some("invoice-2291.pdf"));
    assert_eq!(
        serde_json::to_value(&document).unwrap(),
        serde_json::json!({
            "kind": "document",
            "media_id": "1268523917764580",
            "mime_type": "application/pdf",
            "caption": "Here is the invoice",
            "filename": "invoice-2291.pdf",
            "sha256": "Ky6nYO1dbvNq8hMbnUxcv0NIXbWTJ6lPJGmu2rnXnQ4="
        })
    );

    for (name, kind) in [
        ("video.json", MediaKind::Video),
        ("sticker.json", MediaKind::Sticker),
    ] {
        let a = only_message(name).content.attachment().unwrap();
        assert_eq!(a.kind, kind, "{name}");
        assert!(!a.media_id.is_empty(), "{name}");
    }
}

#[test]
fn a_location_keeps_its_coordinates() {
    match only_message("location.json").content {
        Content::Location {
            latitude,
            longitude,
            name,
            address,
        } => {
            assert!((latitude - 37.483_307).abs() < 1e-9);
            assert!((longitude - (-122.148_981)).abs() < 1e-9);
            assert_eq!(name.as_deref(), Some("Philz Coffee"));
            assert_eq!(
                address.as_deref(),
                Some("101 Forest Ave, Palo Alto, CA 94301")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn replies_name_the_message_they_answer() {
    let reply = only_message("text_reply.json");
    assert_eq!(
        reply.context_message_id.as_deref(),
        Some("wamid.HBgLMTY1MDUwNzY1MjAVAgARGBJBQjFDQjE4RjBGNTQ1RkQ3QTMA")
    );
    match only_message("interactive_button_reply.json") {
        InboundMessage {
            context_message_id: Some(_),
            content: Content::ButtonReply { id, title },
            ..
        } => {
            assert_eq!(id, "reschedule-yes");
            assert_eq!(title, "Yes, reschedule");
        }
        other => panic!("{other:?}"),
    }
    match only_message("interactive_list_reply.json").content {
        Content::ListReply {
            id,
            title,
            description,
        } => {
            assert_eq!(id, "shipping-priority");
            assert_eq!(title, "Priority shipping");
            assert_eq!(description.as_deref(), Some("Arrives in 1-2 business days"));
        }
        other => panic!("{other:?}"),
    }
    match only_message("button.json").content {
        Content::TemplateButton { payload, text } => {
            assert_eq!(payload, "STOP_PROMOTIONS");
            assert_eq!(text, "Stop promotions");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reaction_names_its_message_and_an_empty_emoji_means_removed() {
    match only_message("reaction.json").content {
        Content::Reaction { message_id, emoji } => {
            assert_eq!(
                message_id,
                "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
            );
            assert_eq!(emoji, "\u{1f44d}");
        }
        other => panic!("{other:?}"),
    }
    match only_message("reaction_removed.json").content {
        Content::Reaction { emoji, .. } => assert_eq!(emoji, ""),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unknown_message_type_is_kept_as_unsupported() {
    let m = only_message("unknown_type.json");
    match &m.content {
        Content::Unsupported { message_type, raw } => {
            assert_eq!(message_type, "order");
            assert_eq!(raw["order"]["catalog_id"], "194836987003835");
            assert_eq!(raw["id"], m.provider_message_id.as_str());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn metas_unsupported_type_keeps_its_errors() {
    let m = only_message("unsupported.json");
    assert!(matches!(m.content, Content::Unsupported { .. }));
    assert_eq!(m.errors.len(), 1);
    assert_eq!(m.errors[0].code, 131_051);
    assert_eq!(m.errors[0].title.as_deref(), Some("Message type unknown"));
    assert_eq!(
        m.errors[0].details.as_deref(),
        Some("Message type is currently not supported.")
    );
}

#[test]
fn a_sender_with_a_username_is_identified_by_business_scoped_id() {
    let m = only_message("text_from_username_user.json");
    assert_eq!(m.from_wa_id, None);
    assert_eq!(m.from_user_id.as_deref(), Some("US.13491208655302741918"));
    assert_eq!(m.username.as_deref(), Some("@sheena"));
    assert_eq!(m.profile_name.as_deref(), Some("Sheena Nelson"));
}

#[test]
fn statuses_parse_for_sent_delivered_read_and_failed() {
    let sent = only_status("status_sent.json");
    assert_eq!(sent.status, ReportedStatus::Sent);
    assert_eq!(sent.phone_number_id, "106540352242922");
    assert_eq!(
        sent.provider_message_id,
        "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
    );
    assert_eq!(sent.recipient_id.as_deref(), Some("16505551234"));
    assert_eq!(sent.timestamp, at(1_750_263_773));
    assert!(sent.errors.is_empty());

    assert_eq!(
        only_status("status_delivered.json").status,
        ReportedStatus::Delivered
    );
    assert_eq!(only_status("status_read.json").status, ReportedStatus::Read);

    let failed = only_status("status_failed.json");
    assert_eq!(failed.status, ReportedStatus::Failed);
    assert_eq!(failed.errors.len(), 1);
    assert_eq!(failed.errors[0].code, 131_047);
    assert!(failed.errors[0].is_outside_window());
    assert_eq!(
        failed.errors[0].title.as_deref(),
        Some("Re-engagement message")
    );
    assert!(failed.errors[0]
        .details
        .as_deref()
        .unwrap()
        .contains("24 hours"));
}

#[test]
fn a_status_without_delivered_can_be_read() {
    // Meta skips `delivered` when a message is read at once: `read` straight after
    // `sent` is a forward move, and a late `delivered` must not undo it.
    let rank = |status: ReportedStatus| status.delivery_status().map(DeliveryStatus::rank);
    let sent = rank(only_status("status_sent.json").status);
    let read = rank(only_status("status_read.json").status);
    let delivered = rank(only_status("status_delivered.json").status);
    assert!(read > sent);
    assert!(delivered < read);
    assert!(rank(ReportedStatus::Failed) > read);
    assert_eq!(rank(ReportedStatus::Played), read);
    assert_eq!(rank(ReportedStatus::Other("deleted".into())), None);
}

#[test]
fn a_batch_of_entries_flattens_in_order() {
    let webhook = parse_fixture("batch.json");
    let ids: Vec<(&str, &str)> = webhook
        .events
        .iter()
        .map(|e| match e {
            Event::Message(m) => (m.phone_number_id.as_str(), m.provider_message_id.as_str()),
            Event::Status(s) => (s.phone_number_id.as_str(), s.provider_message_id.as_str()),
        })
        .collect();
    assert_eq!(
        ids,
        vec![
            ("106540352242922", "wamid.BATCH-1"),
            ("106540352242922", "wamid.BATCH-2"),
            // Within one change: its messages, then its statuses.
            ("106540352242922", "wamid.BATCH-3"),
            ("106540352242922", "wamid.BATCH-OUT-1"),
            // The account_update change before it is skipped.
            ("113269274970227", "wamid.BATCH-4"),
        ]
    );
    // Each message takes the profile of its own sender.
    let names: Vec<Option<&str>> = webhook
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.profile_name.as_deref()),
            Event::Status(_) => None,
        })
        .collect();
    assert_eq!(
        names,
        vec![
            Some("Sheena Nelson"),
            Some("Sheena Nelson"),
            Some("Jordan Ortiz"),
            Some("Sheena Nelson"),
        ]
    );
}

#[test]
fn other_subscription_fields_are_skipped_not_refused() {
    let webhook = parse_fixture("account_update.json");
    assert!(webhook.events.is_empty());
    assert!(webhook.errors.is_empty());
}

#[test]
fn system_errors_are_reported_apart_from_events() {
    let webhook = parse_fixture("system_errors.json");
    assert!(webhook.events.is_empty());
    assert_eq!(webhook.errors.len(), 1);
    assert_eq!(webhook.errors[0].phone_number_id, "106540352242922");
    assert_eq!(webhook.errors[0].error.code, 130_429);
}

#[test]
fn missing_required_fields_name_the_field() {
    let text = String::from_utf8(fixture("text.json")).unwrap();
    let mut value: Value = serde_json::from_str(&text).unwrap();
    let cases: &[(&str, &str)] = &[
        ("/object", "object"),
        ("/entry", "entry"),
        ("/entry/0/changes", "entry[0].changes"),
        ("/entry/0/changes/0/field", "entry[0].changes[0].field"),
        (
            "/entry/0/changes/0/value/metadata/phone_number_id",
            "entry[0].changes[0].value.metadata.phone_number_id",
        ),
        (
            "/entry/0/changes/0/value/messages/0/id",
            "entry[0].changes[0].value.messages[0].id",
        ),
        (
            "/entry/0/changes/0/value/messages/0/from",
            "entry[0].changes[0].value.messages[0].from",
        ),
        (
            "/entry/0/changes/0/value/messages/0/timestamp",
            "entry[0].changes[0].value.messages[0].timestamp",
        ),
    ];
    for (pointer, path) in cases {
        let mut broken = value.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = if parent.is_empty() {
            &mut broken
        } else {
            broken.pointer_mut(parent).unwrap()
        };
        parent.as_object_mut().unwrap().remove(key).unwrap();
        let err = parse(&serde_json::to_vec(&broken).unwrap()).unwrap_err();
        assert_eq!(
            err,
            PayloadError::MissingField(path.to_string()),
            "{pointer}"
        );
        assert_eq!(err.code(), "missing_field");
        assert!(err.to_string().contains(path), "{err}");
    }
    // A status needs its id, value and timestamp too.
    value = serde_json::from_slice(&fixture("status_read.json")).unwrap();
    value["entry"][0]["changes"][0]["value"]["statuses"][0]
        .as_object_mut()
        .unwrap()
        .remove("status");
    let err = parse(&serde_json::to_vec(&value).unwrap()).unwrap_err();
    assert_eq!(
        err,
        PayloadError::MissingField("entry[0].changes[0].value.statuses[0].status".into())
    );
}

#[test]
fn timestamps_must_be_unix_seconds() {
    let text = String::from_utf8(fixture("text.json")).unwrap();
    for bad in [
        "\"yesterday\"",
        "\"\"",
        "\"1749416383.5\"",
        "true",
        "\"99999999999999999\"",
    ] {
        let body = text.replace("\"1749416383\"", bad);
        let err = parse(body.as_bytes()).unwrap_err();
        assert_eq!(err.code(), "bad_timestamp", "{bad}: {err}");
        assert!(
            err.to_string()
                .contains("entry[0].changes[0].value.messages[0].timestamp"),
            "{err}"
        );
    }
    // A bare number is accepted as well as Meta's string.
    let body = text.replace("\"1749416383\"", "1749416383");
    let m = match parse(body.as_bytes()).unwrap().events.remove(0) {
        Event::Message(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(m.timestamp, at(1_749_416_383));
}

#[test]
fn a_messaging_product_other_than_whatsapp_is_refused() {
    let text = String::from_utf8(fixture("text.json")).unwrap();
    let body = text.replace(
        "\"messaging_product\": \"whatsapp\"",
        "\"messaging_product\": \"instagram\"",
    );
    assert_ne!(body, text, "fixture layout changed");
    let err = parse(body.as_bytes()).unwrap_err();
    assert_eq!(err.code(), "wrong_messaging_product");
}
