//! Speed of the inbound stage (rule packs + PII masking) on one thread.
//!
//! `cargo bench --bench guardrails` reports msg/s (`inbound/messages`), MB/s
//! (`inbound/bytes`), and then prints p50/p99 latency per message measured
//! message by message. Messages come from the labelled corpus generator
//! (80-130 bytes, ~100 on average; a mix of PII, distractors and clean text).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use custodian::guardrails::{evaluate, Context, KnownEntities, Policy, Stage};

// The corpus generator is test support (tests/support/corpus.rs), kept out of the crate.
#[path = "../tests/support/corpus.rs"]
mod corpus;

use corpus::generate;

struct Message {
    text: String,
    known: KnownEntities,
}

/// 2,000 corpus messages of 80 to 130 bytes (about 100 on average).
fn messages() -> Vec<Message> {
    generate(1, 20_000)
        .into_iter()
        .filter(|s| (80..=130).contains(&s.text.len()))
        .take(2_000)
        .map(|s| Message {
            text: s.text,
            known: KnownEntities::from(s.context),
        })
        .collect()
}

/// One message through the inbound stage with a fresh vault. The CRM context
/// is moved in and back out: the runtime builds it once per conversation,
/// not per message.
fn run(policy: &Policy, m: &mut Message) -> usize {
    let mut ctx = Context::new(Default::default(), std::mem::take(&mut m.known));
    let v = evaluate(Stage::Inbound, &m.text, &mut ctx, policy);
    m.known = ctx.known;
    v.masked_text.len()
}

fn inbound(c: &mut Criterion) {
    let policy = Policy::builtin();
    let mut msgs = messages();
    let bytes: usize = msgs.iter().map(|m| m.text.len()).sum();
    let mut group = c.benchmark_group("inbound");
    group.throughput(Throughput::Elements(msgs.len() as u64));
    group.bench_function("messages", |b| {
        b.iter(|| {
            msgs.iter_mut()
                .map(|m| run(&policy, black_box(m)))
                .sum::<usize>()
        })
    });
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("bytes", |b| {
        b.iter(|| {
            msgs.iter_mut()
                .map(|m| run(&policy, black_box(m)))
                .sum::<usize>()
        })
    });
    group.finish();
}

/// p50/p99 per message, timed one message at a time after a warm-up pass.
fn latency() {
    let policy = Policy::builtin();
    let mut msgs = messages();
    let mean_len = msgs.iter().map(|m| m.text.len()).sum::<usize>() as f64 / msgs.len() as f64;
    for m in &mut msgs {
        run(&policy, m);
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(msgs.len() * 20);
    for _ in 0..20 {
        for m in &mut msgs {
            let t = Instant::now();
            black_box(run(&policy, black_box(m)));
            samples.push(t.elapsed());
        }
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    let total: Duration = samples.iter().sum();
    println!(
        "inbound latency per message ({} messages, mean {:.0} bytes): p50 {:?}, p99 {:?}, max {:?}; {:.0} msg/s single-threaded",
        samples.len(),
        mean_len,
        at(0.50),
        at(0.99),
        samples[samples.len() - 1],
        samples.len() as f64 / total.as_secs_f64()
    );
}

criterion_group!(benches, inbound);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    latency();
}
