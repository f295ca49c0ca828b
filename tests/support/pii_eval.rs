//! Scores the inbound stage on an external labelled set of JSON lines, such as the Faker-based
//! one of `scripts/pii_eval/generate.py`:
//! `{"locale": "pt_BR", "text": "…", "spans": [{"type": "CPF", "start": 3, "end": 17}]}` with
//! UTF-8 byte offsets. Uppercase types are PII labels (`NAME`, `PHONE`…); lowercase ones are
//! distractors that must stay unmasked. Shared by the test that holds the targets
//! (`tests/guardrails/independent.rs`) and the example that prints the table
//! (`examples/pii_eval.rs`), so both count alike.
//!
//! Per type and locale (and `all`, their sum): *recall* = labels with a detection of their type
//! overlapping them; *fully masked* = labels every byte of which ended up inside a placeholder
//! (any type); *precision* = detections of the type that overlap a label of that type. Each
//! message gets a fresh vault and no CRM context, as a new user's first message would.

use std::collections::BTreeMap;

use custodian::guardrails::{evaluate, Context, FindingKind, PiiType, Policy, Stage};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Line {
    #[serde(default)]
    pub locale: String,
    pub text: String,
    pub spans: Vec<Label>,
}

#[derive(Deserialize)]
pub struct Label {
    #[serde(rename = "type")]
    pub kind: String,
    pub start: usize,
    pub end: usize,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Row {
    pub labelled: usize,
    /// Labels with a detection of their type overlapping them (for a distractor: any
    /// detection, which is a false one).
    pub found: usize,
    pub fully: usize,
    pub predicted: usize,
    pub correct: usize,
}

/// What went wrong with one label or detection, for `--misses`. (The test counts only.)
#[allow(dead_code)]
pub enum Miss<'a> {
    /// A PII label not fully masked (`partly` when a detection of its type overlaps it).
    Label {
        label: &'a Label,
        line: &'a Line,
        partly: bool,
        masked_text: &'a str,
    },
    /// A distractor that was masked.
    Distractor {
        label: &'a Label,
        line: &'a Line,
        masked_text: &'a str,
    },
    /// A detection that overlaps no label of its type.
    False {
        kind: PiiType,
        start: usize,
        end: usize,
        line: &'a Line,
    },
}

/// `a / b`, and 1 when there is nothing to divide.
pub fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

pub type Rows = BTreeMap<(String, String), Row>;

/// Scores one labelled line into `rows` (by type and locale, and by type for locale `all`),
/// telling `on_miss` about each miss.
pub fn score_line(line: &Line, policy: &Policy, rows: &mut Rows, on_miss: &mut dyn FnMut(Miss)) {
    let verdict = evaluate(Stage::Inbound, &line.text, &mut Context::default(), policy);
    let pii: Vec<(PiiType, usize, usize)> = verdict
        .findings
        .iter()
        .filter_map(|f| match f.kind {
            FindingKind::Pii(t) => Some((t, f.start, f.end)),
            _ => None,
        })
        .collect();
    let mut bump = |kind: &str, f: &dyn Fn(&mut Row)| {
        for locale in [line.locale.as_str(), "all"] {
            f(rows
                .entry((kind.to_string(), locale.to_string()))
                .or_default());
        }
    };
    for label in &line.spans {
        let overlapping = |&(_, a, b): &(PiiType, usize, usize)| a < label.end && label.start < b;
        let pii_type = PiiType::from_label(&label.kind);
        let found = match pii_type {
            Some(t) => pii
                .iter()
                .filter(|p| overlapping(p))
                .any(|(k, _, _)| *k == t),
            None => pii.iter().any(overlapping),
        };
        let fully = (label.start..label.end).all(|i| pii.iter().any(|&(_, a, b)| a <= i && i < b));
        bump(&label.kind, &|r| {
            r.labelled += 1;
            r.found += usize::from(found);
            r.fully += usize::from(fully);
        });
        let masked_text = verdict.masked_text.as_str();
        match pii_type {
            Some(_) if !fully => on_miss(Miss::Label {
                label,
                line,
                partly: found,
                masked_text,
            }),
            None if found => on_miss(Miss::Distractor {
                label,
                line,
                masked_text,
            }),
            _ => {}
        }
    }
    for &(kind, start, end) in &pii {
        let correct = line
            .spans
            .iter()
            .any(|s| PiiType::from_label(&s.kind) == Some(kind) && s.start < end && start < s.end);
        bump(kind.label(), &|r| {
            r.predicted += 1;
            r.correct += usize::from(correct);
        });
        if !correct {
            on_miss(Miss::False {
                kind,
                start,
                end,
                line,
            });
        }
    }
}
