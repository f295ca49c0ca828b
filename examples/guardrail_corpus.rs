//! Generates the labelled guardrail corpus and prints per-category precision,
//! recall and fully-masked rate of the inbound stage.
//!
//! ```text
//! cargo run --release --example guardrail_corpus -- [--seed 42] [--count 20000] [--jsonl]
//! ```
//! `--misses` also lists every missed value and false detection.
//! With `--jsonl` it prints the corpus as JSON lines instead (text, context,
//! labels), ready for `custodian guardrails scan` or any external scorer.

use custodian::guardrails::Policy;

// The corpus generator is test support (tests/support/corpus.rs), kept out of the crate.
#[path = "../tests/support/corpus.rs"]
mod corpus;

fn main() {
    let mut seed = 42u64;
    let mut count = 20_000usize;
    let mut jsonl = false;
    let mut misses = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).unwrap_or(seed),
            "--count" => count = args.next().and_then(|v| v.parse().ok()).unwrap_or(count),
            "--jsonl" => jsonl = true,
            "--misses" => misses = true,
            other => {
                eprintln!(
                    "unknown argument {other}; usage: [--seed N] [--count N] [--jsonl] [--misses]"
                );
                std::process::exit(2);
            }
        }
    }
    let samples = corpus::generate(seed, count);
    if jsonl {
        for s in &samples {
            println!("{}", corpus::to_jsonl(s));
        }
        return;
    }
    let report = corpus::score(&samples, &Policy::builtin());
    println!("seed {seed}");
    print!("{report}");
    if misses {
        for m in &report.misses {
            println!("{}: {:?} in {:?}", m.what, m.value, m.text);
        }
    }
}
