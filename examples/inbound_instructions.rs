//! Runs the inbound stage over the benchmark's 2,000 messages `N` times, for
//! counting instructions per message with a tool that counts them
//! (load-independent, unlike the timings of `benches/guardrails.rs`):
//!
//! ```text
//! cargo build --release --example inbound_instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/inbound_instructions 0    # set-up only
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/inbound_instructions 5    # set-up + 5 passes
//! ```
//! (difference of the two "Collected" counts) / (5 × 2,000) = instructions
//! per message. Same message selection as the bench: corpus seed 1, 80-130
//! bytes, the first 2,000.

use std::hint::black_box;

use custodian::guardrails::{evaluate, Context, KnownEntities, Policy, Stage};

// The corpus generator is test support (tests/support/corpus.rs), kept out of the crate.
#[path = "../tests/support/corpus.rs"]
mod corpus;

use corpus::generate;

fn main() {
    let passes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let policy = Policy::builtin();
    custodian::guardrails::warm_up().expect("built-in packs load");
    let mut msgs: Vec<(String, KnownEntities)> = generate(1, 20_000)
        .into_iter()
        .filter(|s| (80..=130).contains(&s.text.len()))
        .take(2_000)
        .map(|s| (s.text, KnownEntities::from(s.context)))
        .collect();
    let mut total = 0usize;
    for _ in 0..passes {
        for (text, known) in &mut msgs {
            let mut ctx = Context::new(Default::default(), std::mem::take(known));
            let v = evaluate(Stage::Inbound, black_box(text), &mut ctx, &policy);
            *known = ctx.known;
            total += v.masked_text.len();
        }
    }
    println!(
        "{} messages x {passes} passes, {total} bytes out",
        msgs.len()
    );
}
