//! The targets of issue 18 on the independent evaluation set: messages
//! generated from Faker's locale providers by `scripts/pii_eval/generate.py`
//! (seed 18, 1,500 per locale), not by the crate's own corpus generator.
//! `cargo run --release --example pii_eval -- scripts/pii_eval/eval-seed18.jsonl`
//! prints the full table; both count with `tests/support/pii_eval.rs`.

use custodian::guardrails::{PiiType, Policy};

use crate::pii_eval::{ratio, score_line, Line, Rows};

// proves: AGT-2
#[test]
fn the_independent_set_meets_the_issue_18_targets_in_every_locale() {
    let policy = Policy::builtin();
    let data = include_str!("../../scripts/pii_eval/eval-seed18.jsonl");
    let mut rows = Rows::new();
    for line in data.lines().filter(|l| !l.trim().is_empty()) {
        let line: Line = serde_json::from_str(line).expect("a labelled line");
        score_line(&line, &policy, &mut rows, &mut |_| {});
    }
    let mut failures = Vec::new();
    let mut distractors = (0usize, 0usize);
    for ((kind, locale), r) in rows.iter().filter(|((_, locale), _)| locale != "all") {
        if PiiType::from_label(kind).is_none() {
            distractors.0 += r.labelled;
            distractors.1 += r.found;
            continue;
        }
        let (fully, precision) = (ratio(r.fully, r.labelled), ratio(r.correct, r.predicted));
        println!("{kind} {locale}: fully masked {fully:.4}, precision {precision:.4} ({r:?})");
        let (fully_target, precision_target) = if kind == "NAME" {
            (0.85, 0.90)
        } else {
            (0.99, 0.95)
        };
        if fully < fully_target || precision < precision_target {
            failures.push(format!("{kind} {locale}: {fully:.4} / {precision:.4}"));
        }
    }
    assert!(failures.is_empty(), "below target: {failures:?}");
    assert!(distractors.0 > 0, "the set has distractors");
    assert!(
        distractors.1 * 100 <= distractors.0,
        "distractors masked: {} of {}",
        distractors.1,
        distractors.0
    );
}
