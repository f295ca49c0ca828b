//! Both stages accept any UTF-8: findings stay on character boundaries,
//! the inbound text round-trips unless redacted, and nothing panics.
#![no_main]

use custodian::guardrails::{evaluate, unmask, Context, Policy, Stage, REDACTED};
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
        let policy = Policy::builtin();
        let mut ctx = Context::default();
        let inbound = evaluate(Stage::Inbound, text, &mut ctx, &policy);
        for f in &inbound.findings {
            assert!(f.start <= f.end && f.end <= text.len());
            assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
        }
        if !inbound.masked_text.contains(REDACTED) {
            assert_eq!(unmask(&inbound.masked_text, &ctx.vault), text);
        }
        let outbound = evaluate(Stage::Outbound, text, &mut ctx, &policy);
        for f in &outbound.findings {
            assert!(f.start <= f.end && f.end <= text.len());
            assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
        }
    }
);
