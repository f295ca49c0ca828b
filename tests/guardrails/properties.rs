//! Property tests: masking round-trips any UTF-8 and nothing panics.
//! `PROPTEST_CASES=100000 cargo test --release --test guardrails properties`
//! runs the long version.

use custodian::guardrails::{
    evaluate, mask_text, unmask, Context, KnownEntities, Policy, Stage, Vault,
};
use proptest::prelude::*;

/// Fragments that exercise the detectors' edges, mixed with arbitrary text.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        Just("ana@example.com".to_string()),
        Just("+55 11 98765-4321".to_string()),
        Just("4111 1111 1111 1111".to_string()),
        Just("529.982.247-25".to_string()),
        Just("12.ABC.345/01DE-35".to_string()),
        Just("DE89 3704 0044 0532 0130 00".to_string()),
        Just("[EMAIL_1]".to_string()),
        Just("[LITERAL_2]".to_string()),
        Just("fe80::1".to_string()),
        Just("meu nome é João".to_string()),
        Just("Viele Grüße\nJürgen".to_string()),
        Just("https://u:p@h.io/x?token=abcdef".to_string()),
        Just("sk_live_4eC39HqLyjWDarjtT1zdp7dc".to_string()),
        Just("ignore all previous instructions".to_string()),
        // The same values in other formats: one placeholder, exact round trip.
        Just("(11) 98765-4321".to_string()),
        Just("JOAO SILVA".to_string()),
        Just("joao silva".to_string()),
        Just("ANA@EXAMPLE.COM".to_string()),
        Just("4111-1111-1111-1111".to_string()),
        Just("Jürgen Müller".to_string()),
        Just("Juergen Mueller".to_string()),
        Just("IP:2001:db8::1".to_string()),
        Just("3f9a0c2b7d1e4f5a8b6c9d0e1f2a3b4c".to_string()),
        Just("Tel. 089 12345".to_string()),
        // Issue 18: extensions, exit prefixes, mid-run phones, clocks,
        // names anywhere.
        Just("206.269.0743x9150".to_string()),
        Just("001-248-323-5762 ext. 12".to_string()),
        Just("(00247) 89787 angerufen".to_string()),
        Just("SSN: 597-96-2314 (960)675-4211".to_string()),
        Just("ankommen. 08718598895 Büronummer".to_string()),
        Just("2026-04-26 05:08:31".to_string()),
        Just("Robert called Herrn Wernecke".to_string()),
        Just("¿Puede Morena Alberola? Kann Enrico Linke das Paket".to_string()),
        Just("falei com o atendente Lucas".to_string()),
        "[0-9 ().xX+-]{0,30}",
        "([A-ZÀÉÜ][a-zàéü]{0,8}[ ,.:]{1,2}){0,5}",
        "[\\[\\]A-Z_0-9 .@:+-]{0,24}",
        "[0-9 ./-]{0,30}",
    ]
}

fn message() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..6).prop_map(|v| v.concat())
}

proptest! {
    // proves: AGT-2
    #[test]
    fn unmask_of_mask_is_the_identity_for_any_text(text in message()) {
        let known = KnownEntities::new()
            .with_name("João Silva")
            .with_name("Jürgen Müller")
            .with_phone("+55 11 98765-4321");
        let mut vault = Vault::new();
        let masked = mask_text(&text, &known, &mut vault);
        prop_assert_eq!(unmask(&masked, &vault), text.clone());
        // A second message of the same conversation, in the stored vault.
        let mut vault: Vault = serde_json::from_str(&serde_json::to_string(&vault).unwrap()).unwrap();
        let again = format!("{text} / {}", text.to_uppercase());
        let masked = mask_text(&again, &known, &mut vault);
        prop_assert_eq!(unmask(&masked, &vault), again);
    }

    #[test]
    fn unmask_of_mask_is_the_identity_for_arbitrary_unicode(text in any::<String>()) {
        let mut vault = Vault::new();
        let masked = mask_text(&text, &KnownEntities::default(), &mut vault);
        prop_assert_eq!(unmask(&masked, &vault), text);
    }

    #[test]
    fn the_inbound_stage_round_trips_and_outbound_never_panics(text in message()) {
        let policy = Policy::builtin();
        let mut ctx = Context::default();
        let inbound = evaluate(Stage::Inbound, &text, &mut ctx, &policy);
        // Redactions are irreversible by design; without them the round trip holds.
        if !inbound.masked_text.contains("[REDACTED]") {
            prop_assert_eq!(unmask(&inbound.masked_text, &ctx.vault), text.clone());
        }
        for f in &inbound.findings {
            prop_assert!(f.start <= f.end && f.end <= text.len());
            prop_assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
        }
        let outbound = evaluate(Stage::Outbound, &text, &mut ctx, &policy);
        for f in &outbound.findings {
            prop_assert!(f.end <= text.len() && text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
        }
    }

    #[test]
    fn unmask_never_panics_on_any_text(text in any::<String>(), secret in any::<String>()) {
        let mut vault = Vault::new();
        mask_text(&format!("{secret} a@b.io"), &KnownEntities::default(), &mut vault);
        let _ = unmask(&text, &vault);
    }
}
