//! Masking round-trips any UTF-8, through a stored vault, and never panics.
#![no_main]

use custodian::guardrails::{mask_text, unmask, KnownEntities, Vault};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    // The numbering plans and packs load once, lazily; under the fuzzer's
    // instrumentation that takes longer than its per-input timeout, so load
    // them before the first input.
    init: {
        custodian::guardrails::warm_up().expect("built-in packs are valid");
    },
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let known = KnownEntities::new()
            .with_name("João da Silva")
            .with_phone("+55 11 98765-4321")
            .with_company("Padaria Estrela Ltda");
        let mut vault = Vault::new();
        let masked = mask_text(text, &known, &mut vault);
        assert_eq!(unmask(&masked, &vault), text);
        // A second message with the same vault, after a storage round trip.
        let stored: Vault = serde_json::from_str(&serde_json::to_string(&vault).unwrap()).unwrap();
        let mut vault = stored;
        let again = mask_text(text, &known, &mut vault);
        assert_eq!(again, masked, "the same values keep the same placeholders");
        assert_eq!(unmask(&again, &vault), text);
    }
);
