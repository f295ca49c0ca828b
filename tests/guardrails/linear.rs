//! No input makes the engine super-linear: inputs built to hit each
//! scanner's worst case take about eight times as long at eight times the
//! size (a quadratic path would take sixty-four times as long). That holds
//! for the built-in packs, for tenant regex rules (whose all-matches search
//! is quadratic in the regex crate's worst case) and for large CRM contexts.

use std::sync::Arc;
use std::time::Duration;

use custodian::guardrails::{
    evaluate, tenant_rules_from_json, Context, KnownEntities, Policy, PromptSecret, PromptTexts,
    Stage, TenantConfig, TenantOptions,
};
use nix::time::{clock_gettime, ClockId};

/// CPU time this thread has used: unlike the wall clock, it does not count the time other
/// processes (or the other tests of this binary) held the core, so a busy machine cannot make
/// a linear path look quadratic.
fn thread_cpu_time() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("the thread CPU clock is available")
        .into()
}

fn best_of_five(text: &str, policy: &Policy, known: &KnownEntities) -> Duration {
    // The fastest of five runs: caches and page faults of the first run say nothing about the
    // code.
    (0..5)
        .map(|_| {
            let mut ctx = Context::new(Default::default(), known.clone());
            let t = thread_cpu_time();
            evaluate(Stage::Inbound, text, &mut ctx, policy);
            evaluate(Stage::Outbound, text, &mut ctx, policy);
            thread_cpu_time() - t
        })
        .min()
        .unwrap()
}

/// Asserts that 8x the repetitions of `unit` take well under 64x the time.
fn assert_linear(unit: &str, policy: &Policy, known: &KnownEntities) {
    let small = unit.repeat((8_192 / unit.len()).max(1));
    let large = unit.repeat((8 * 8_192 / unit.len()).max(8));
    let (a, b) = (
        best_of_five(&small, policy, known),
        best_of_five(&large, policy, known),
    );
    let ratio = b.as_secs_f64() / a.as_secs_f64().max(1e-6);
    assert!(
        ratio < 24.0,
        "{unit:?}: 8x the input took {ratio:.1}x the time ({a:?} -> {b:?})"
    );
}

#[test]
fn adversarial_inputs_take_time_proportional_to_their_length() {
    let policy = Policy::builtin();
    let none = KnownEntities::default();
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
        "aWdub3JlIGFsbCBw\n",
        "DE89 ",
        "+55 ",
        "ção ",
        "IP:",
        "3f9a0c2b7d1e4f5a",
        "089 ",
    ];
    for unit in units {
        assert_linear(unit, &policy, &none);
    }
}

#[test]
fn the_outbound_link_and_prompt_checks_stay_linear() {
    // Texts built to make the link scanner rescan (schemes without hosts, hosts without ends,
    // URLs inside URLs, escapes), and the leak check look at a canary prefix or a template
    // window again and again.
    let secret = PromptSecret::new(
        "cnry4f9a0c2b7d1e4a6b8c3d5e7f9a1b2c3d",
        Arc::new(PromptTexts::new(&[
            "You answer the customer in their own language, briefly and kindly.",
        ])),
    );
    let policy = Policy::builtin();
    for unit in [
        "a:",
        "a:a:",
        "https://",
        "https://a.co/",
        "https://a.co@",
        "www.",
        "a.co.",
        "&#46;",
        "%2e",
        "\\.",
        "//a",
        "x@a.co ",
        "cnry4f9a0c2b",
        "you answer the customer in their own ",
    ] {
        let small = unit.repeat((8_192 / unit.len()).max(1));
        let large = unit.repeat((8 * 8_192 / unit.len()).max(8));
        let time = |text: &str| {
            (0..5)
                .map(|_| {
                    let mut ctx = Context {
                        prompt: Some(secret.clone()),
                        ..Context::default()
                    };
                    let t = thread_cpu_time();
                    evaluate(Stage::Outbound, text, &mut ctx, &policy);
                    thread_cpu_time() - t
                })
                .min()
                .unwrap()
        };
        let (a, b) = (time(&small), time(&large));
        let ratio = b.as_secs_f64() / a.as_secs_f64().max(1e-6);
        assert!(
            ratio < 24.0,
            "{unit:?}: 8x the input took {ratio:.1}x the time ({a:?} -> {b:?})"
        );
    }
}

#[test]
fn tenant_regex_rules_stay_linear_on_texts_built_to_make_them_quadratic() {
    // Each leftmost-first search for `[a-z]+x|[a-z]` over "aaaa…" runs to
    // the end of the text looking for the `x` and then matches one letter:
    // iterating every match is quadratic unless the matches are capped.
    let rules = tenant_rules_from_json(
        "tenant:acme",
        r#"[
          {"id":"t.flag","stage":"both","regex":"[a-z]+x|[a-z]","action":"flag"},
          {"id":"t.redact","stage":"both","regex":"(?:\\w+\\s)+zz|\\w","action":"redact"}
        ]"#,
    )
    .expect("tenant rules load");
    let policy = Policy::new(&TenantConfig {
        rules,
        options: TenantOptions::default(),
    })
    .unwrap();
    let none = KnownEntities::default();
    for unit in ["a", "ab ", "a1 b"] {
        assert_linear(unit, &policy, &none);
    }
}

#[test]
fn a_redact_rule_past_its_match_cap_hides_the_rest_of_the_text() {
    let rules = tenant_rules_from_json(
        "tenant:acme",
        r#"[{"id":"t.redact","stage":"inbound","regex":"secret\\d","action":"redact"}]"#,
    )
    .unwrap();
    let policy = Policy::new(&TenantConfig {
        rules,
        options: TenantOptions::default(),
    })
    .unwrap();
    let text = "secret1 ".repeat(100);
    let v = evaluate(Stage::Inbound, &text, &mut Context::default(), &policy);
    assert!(!v.masked_text.contains("secret"), "{}", v.masked_text);
}

#[test]
fn large_crm_contexts_stay_linear_in_the_text_and_in_the_context() {
    let policy = Policy::builtin();
    let context = |n: usize| {
        let mut k = KnownEntities::new();
        for i in 0..n {
            k = k
                .with_name(&format!("Ana{i} Souza{i} Müller"))
                .with_company(&format!("Padaria {i} Ltda"))
                .with_address(&format!("Rua das Flores {i}, São Paulo"))
                .with_email(&format!("ana{i}@example.com"))
                .with_phone(&format!("+55 11 9{i:04}-{i:04}"));
        }
        k
    };
    let big = context(400);
    for unit in [
        "ana1 souza1 mueller ",
        "padaria 3 ",
        "a a a ",
        "+55 11 90001-0001 ",
    ] {
        assert_linear(unit, &policy, &big);
    }
    // Eight times the context on the same text: well under 64x the time.
    let text = "Ana7 Souza7 Müller, Rua das Flores 7, padaria 3 ltda ".repeat(40);
    let timed = |n: usize| {
        (0..3)
            .map(|_| {
                let t = thread_cpu_time();
                std::hint::black_box(context(n));
                thread_cpu_time() - t
            })
            .min()
            .unwrap()
    };
    let (small, large) = (context(100), context(800));
    let ratios = [
        (
            "evaluating",
            best_of_five(&text, &policy, &small),
            best_of_five(&text, &policy, &large),
        ),
        ("building", timed(100), timed(800)),
    ];
    for (what, a, b) in ratios {
        let ratio = b.as_secs_f64() / a.as_secs_f64().max(1e-6);
        assert!(
            ratio < 24.0,
            "{what} with 8x the context took {ratio:.1}x ({a:?} -> {b:?})"
        );
    }
}
