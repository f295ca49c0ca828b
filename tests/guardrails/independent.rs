//! The targets of issue 18 on the independent evaluation set: messages
//! generated from Faker's locale providers by `scripts/pii_eval/generate.py`
//! (seed 18, 1,500 per locale), not by the crate's own corpus generator.
//! `cargo run --release --example pii_eval -- scripts/pii_eval/eval-seed18.jsonl`
//! prints the full table.

use std::collections::BTreeMap;

use custodian::guardrails::{evaluate, Context, FindingKind, PiiType, Policy, Stage};
use serde::Deserialize;

#[derive(Deserialize)]
struct Line {
    locale: String,
    text: String,
    spans: Vec<Label>,
}

#[derive(Deserialize)]
struct Label {
    #[serde(rename = "type")]
    kind: String,
    start: usize,
    end: usize,
}

#[derive(Default, Debug)]
struct Row {
    labelled: usize,
    fully: usize,
    predicted: usize,
    correct: usize,
}

// proves: AGT-2
#[test]
fn the_independent_set_meets_the_issue_18_targets_in_every_locale() {
    let policy = Policy::builtin();
    let data = include_str!("../../scripts/pii_eval/eval-seed18.jsonl");
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut distractors = (0usize, 0usize);
    for line in data.lines().filter(|l| !l.trim().is_empty()) {
        let l: Line = serde_json::from_str(line).expect("a labelled line");
        let v = evaluate(Stage::Inbound, &l.text, &mut Context::default(), &policy);
        let pii: Vec<(PiiType, usize, usize)> = v
            .findings
            .iter()
            .filter_map(|f| match f.kind {
                FindingKind::Pii(t) => Some((t, f.start, f.end)),
                _ => None,
            })
            .collect();
        for s in &l.spans {
            let fully = (s.start..s.end).all(|i| pii.iter().any(|&(_, a, b)| a <= i && i < b));
            if PiiType::from_label(&s.kind).is_some() {
                let row = rows.entry((s.kind.clone(), l.locale.clone())).or_default();
                row.labelled += 1;
                row.fully += usize::from(fully);
            } else {
                distractors.0 += 1;
                distractors.1 += usize::from(pii.iter().any(|&(_, a, b)| a < s.end && s.start < b));
            }
        }
        for &(t, a, b) in &pii {
            let row = rows
                .entry((t.label().to_string(), l.locale.clone()))
                .or_default();
            row.predicted += 1;
            row.correct += usize::from(
                l.spans
                    .iter()
                    .any(|s| PiiType::from_label(&s.kind) == Some(t) && s.start < b && a < s.end),
            );
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    let mut failures = Vec::new();
    for ((kind, locale), r) in &rows {
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
    assert!(
        distractors.1 * 100 <= distractors.0,
        "distractors masked: {} of {}",
        distractors.1,
        distractors.0
    );
}
