//! Scores the inbound stage on an external labelled set of JSON lines, such
//! as the Faker-based one of `scripts/pii_eval/generate.py`:
//! `{"locale": "pt_BR", "text": "…", "spans": [{"type": "CPF", "start": 3, "end": 17}]}`
//! with UTF-8 byte offsets. Uppercase types are PII labels (`NAME`, `PHONE`…);
//! lowercase ones are distractors that must stay unmasked.
//!
//! ```text
//! cargo run --release --example pii_eval -- eval.jsonl [--misses]
//! ```
//!
//! Per type and locale: *recall* = labels with a detection of their type
//! overlapping them; *fully masked* = labels every byte of which ended up
//! inside a placeholder (any type); *precision* = detections of the type that
//! overlap a label of that type. Each message gets a fresh vault and no CRM
//! context, as a new user's first message would.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};

use custodian::guardrails::{evaluate, Context, FindingKind, PiiType, Policy, Stage};
use serde::Deserialize;

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
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

#[derive(Default, Clone, Copy)]
struct Row {
    labelled: usize,
    found: usize,
    fully: usize,
    predicted: usize,
    correct: usize,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

fn main() {
    let mut path = None;
    let mut misses = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--misses" => misses = true,
            other => path = Some(other.to_string()),
        }
    }
    let reader: Box<dyn BufRead> = match &path {
        Some(p) => Box::new(BufReader::new(
            std::fs::File::open(p).unwrap_or_else(|e| panic!("{p}: {e}")),
        )),
        None => Box::new(BufReader::new(std::io::stdin())),
    };
    let policy = Policy::builtin();
    // (type, locale) -> row; locale "all" sums the locales.
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut messages = 0;
    for line in reader.lines() {
        let line = line.expect("readable input");
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(&line).expect("a labelled JSON line");
        messages += 1;
        let mut ctx = Context::default();
        let verdict = evaluate(Stage::Inbound, &l.text, &mut ctx, &policy);
        let pii: Vec<(PiiType, usize, usize)> = verdict
            .findings
            .iter()
            .filter_map(|f| match f.kind {
                FindingKind::Pii(t) => Some((t, f.start, f.end)),
                _ => None,
            })
            .collect();
        let mut bump = |kind: &str, f: &dyn Fn(&mut Row)| {
            for loc in [l.locale.as_str(), "all"] {
                f(rows.entry((kind.to_string(), loc.to_string())).or_default());
            }
        };
        for label in &l.spans {
            let overlapping =
                |&&(_, a, b): &&(PiiType, usize, usize)| a < label.end && label.start < b;
            let value = &l.text[label.start..label.end];
            let pii_type = PiiType::from_label(&label.kind);
            let found = match pii_type {
                Some(t) => pii.iter().filter(overlapping).any(|(k, _, _)| *k == t),
                None => pii.iter().any(|p| overlapping(&p)),
            };
            let fully =
                (label.start..label.end).all(|i| pii.iter().any(|&(_, a, b)| a <= i && i < b));
            bump(&label.kind, &|r| {
                r.labelled += 1;
                r.found += usize::from(found);
                r.fully += usize::from(fully);
            });
            if misses && (pii_type.is_some() && !fully || pii_type.is_none() && found) {
                let what = if pii_type.is_some() {
                    if found {
                        "partly"
                    } else {
                        "missed"
                    }
                } else {
                    "masked"
                };
                println!(
                    "{what} {} {value:?} in {:?} -> {:?}",
                    label.kind, l.text, verdict.masked_text
                );
            }
        }
        for &(t, a, b) in &pii {
            let correct = l
                .spans
                .iter()
                .any(|s| PiiType::from_label(&s.kind) == Some(t) && s.start < b && a < s.end);
            bump(t.label(), &|r| {
                r.predicted += 1;
                r.correct += usize::from(correct);
            });
            if misses && !correct {
                println!("false {t} {:?} in {:?}", &l.text[a..b], l.text);
            }
        }
    }
    println!("{messages} messages");
    println!("| type | locale | labelled | recall | fully masked | precision |");
    println!("|---|---|---:|---:|---:|---:|");
    for ((kind, loc), r) in &rows {
        if PiiType::from_label(kind).is_none() || r.labelled == 0 {
            continue;
        }
        println!(
            "| {kind} | {loc} | {} | {:.4} | {:.4} | {:.4} ({}/{}) |",
            r.labelled,
            ratio(r.found, r.labelled),
            ratio(r.fully, r.labelled),
            ratio(r.correct, r.predicted),
            r.correct,
            r.predicted
        );
    }
    println!("\n| distractor | locale | labelled | masked |\n|---|---|---:|---:|");
    for ((kind, loc), r) in &rows {
        if PiiType::from_label(kind).is_none() && r.labelled > 0 {
            println!("| {kind} | {loc} | {} | {} |", r.labelled, r.found);
        }
    }
    let unlabelled: Vec<_> = rows
        .iter()
        .filter(|((k, l), r)| l == "all" && r.labelled == 0 && r.predicted > 0 && !k.is_empty())
        .map(|((k, _), r)| format!("{k} {}", r.predicted))
        .collect();
    if !unlabelled.is_empty() {
        println!("\ndetections of types the set does not label (all false): {unlabelled:?}");
    }
}
