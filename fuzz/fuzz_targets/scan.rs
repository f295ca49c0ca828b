//! The JSON-lines scanner answers every line, valid or not, with one line.
#![no_main]

use custodian::guardrails::{scan_jsonl, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    // The numbering plans and packs load once, lazily; under the fuzzer's
    // instrumentation that takes longer than its per-input timeout, so load
    // them before the first input.
    init: {
        custodian::guardrails::warm_up().expect("built-in packs are valid");
    },
    |data: &[u8]| {
        let mut out = Vec::new();
        let stats = scan_jsonl(data, &mut out, &Policy::builtin()).expect("in-memory I/O");
        let lines = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64;
        assert_eq!(lines, stats.lines);
        for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            serde_json::from_slice::<serde_json::Value>(line).expect("every output line is JSON");
        }
    }
);
