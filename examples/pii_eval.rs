//! Scores the inbound stage on an external labelled set of JSON lines (the format and the
//! measures: `tests/support/pii_eval.rs`, which the targets' test shares), such as the
//! Faker-based one of `scripts/pii_eval/generate.py`, and prints the table.
//!
//! ```text
//! cargo run --release --example pii_eval -- eval.jsonl [--misses]
//! ```

use std::io::{BufRead, BufReader};

use custodian::guardrails::{PiiType, Policy};

#[path = "../tests/support/pii_eval.rs"]
mod pii_eval;

use pii_eval::{ratio, score_line, Line, Miss, Rows};

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
    let mut rows = Rows::new();
    let mut messages = 0;
    for line in reader.lines() {
        let line = line.expect("readable input");
        if line.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(&line).expect("a labelled JSON line");
        messages += 1;
        score_line(&line, &policy, &mut rows, &mut |miss| {
            if !misses {
                return;
            }
            match miss {
                Miss::Label {
                    label,
                    line,
                    partly,
                    masked_text,
                } => println!(
                    "{} {} {:?} in {:?} -> {masked_text:?}",
                    if partly { "partly" } else { "missed" },
                    label.kind,
                    &line.text[label.start..label.end],
                    line.text
                ),
                Miss::Distractor {
                    label,
                    line,
                    masked_text,
                } => println!(
                    "masked {} {:?} in {:?} -> {masked_text:?}",
                    label.kind,
                    &line.text[label.start..label.end],
                    line.text
                ),
                Miss::False {
                    kind,
                    start,
                    end,
                    line,
                } => {
                    println!(
                        "false {kind} {:?} in {:?}",
                        &line.text[start..end],
                        line.text
                    )
                }
            }
        });
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
