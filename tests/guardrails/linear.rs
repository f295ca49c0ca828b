//! No input makes the engine super-linear: inputs built to hit each
//! scanner's worst case take about eight times as long at eight times the
//! size (a quadratic path would take sixty-four times as long).

use std::time::{Duration, Instant};

use custodian::guardrails::{evaluate, Context, Policy, Stage};

fn best_of_three(text: &str) -> Duration {
    let policy = Policy::builtin();
    (0..3)
        .map(|_| {
            let t = Instant::now();
            let mut ctx = Context::default();
            evaluate(Stage::Inbound, text, &mut ctx, &policy);
            evaluate(Stage::Outbound, text, &mut ctx, &policy);
            t.elapsed()
        })
        .min()
        .unwrap()
}

#[test]
fn adversarial_inputs_take_time_proportional_to_their_length() {
    let units = [
        "1 ",
        "a@",
        "@a",
        "[EMAIL_1",
        "x://",
        "-----BEGIN PRIVATE KEY-----",
        "password-",
        "password:",
        "::",
        "my name is ",
        "Obrigado,\n",
        "ignore all previous ",
        "aWdub3Jl",
        "DE89 ",
        "+55 ",
        "ção ",
    ];
    for unit in units {
        let small = unit.repeat(8_192 / unit.len());
        let large = unit.repeat(8 * 8_192 / unit.len());
        let (a, b) = (best_of_three(&small), best_of_three(&large));
        let ratio = b.as_secs_f64() / a.as_secs_f64().max(1e-6);
        assert!(
            ratio < 24.0,
            "{unit:?}: 8x the input took {ratio:.1}x the time ({a:?} -> {b:?})"
        );
    }
}
