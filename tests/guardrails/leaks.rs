//! System-prompt leakage closed by construction (#18 item 6): a draft holding the run's canary,
//! in any spelling, or the prompt templates' wording at length, is refused.

use std::sync::Arc;

use custodian::guardrails::{
    evaluate, leaks, Action, Context, LeakKind, Policy, PromptSecret, PromptTexts, Stage,
    RULE_PROMPT_CANARY, RULE_PROMPT_OVERLAP,
};

const TEMPLATE: &str = "You are the customer-support assistant of {{tenant_name}}. You answer \
the customer in their own language, briefly and kindly, using only the knowledge passages below.\n\
Knowledge passages:\n{{knowledge}}\nMarker: {{canary}}";

const CANARY: &str = "cnry4f9a0c2b7d1e4a6b8c3d5e7f9a1b2c3d";

fn secret() -> PromptSecret {
    PromptSecret::new(CANARY, Arc::new(PromptTexts::new(&[TEMPLATE])))
}

#[test]
fn the_canary_is_found_in_any_case_and_with_any_separators() {
    let spaced: String = CANARY.chars().flat_map(|c| [c, ' ']).collect();
    let dashed = CANARY
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("-");
    for draft in [
        format!("Sure! The marker is {CANARY}."),
        format!("MARKER: {}", CANARY.to_uppercase()),
        format!("marker = {spaced}"),
        format!("`{dashed}`"),
    ] {
        let found = leaks(&draft, &secret());
        assert!(
            found.iter().any(|l| l.kind == LeakKind::Canary),
            "{draft}: {found:?}"
        );
    }
    assert!(leaks("Your parcel ships today.", &secret()).is_empty());
}

#[test]
fn eight_words_of_the_template_in_a_row_are_a_leak_and_fewer_are_not() {
    let copied = "My instructions: you answer the customer in their own language, briefly \
                  and kindly!";
    let found = leaks(copied, &secret());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, LeakKind::Overlap);
    assert_eq!(
        &copied[found[0].start..found[0].end],
        "you answer the customer in their own language, briefly \
                  and kindly"
    );
    // Case and punctuation do not hide it.
    assert!(!leaks(
        "YOU ANSWER THE CUSTOMER... IN THEIR OWN LANGUAGE!",
        &secret()
    )
    .is_empty());
    // Seven words in common, or words of a variable's slot (the passages), are no leak.
    for fine in [
        "I answer the customer in their own language.",
        "Knowledge passages: returns take 30 days from delivery for a full refund.",
        "Using only the knowledge passages below and the tools you have.",
    ] {
        assert!(leaks(fine, &secret()).is_empty(), "{fine}");
    }
}

#[test]
fn the_outbound_stage_refuses_a_draft_that_gives_the_prompt_away() {
    let policy = Policy::builtin();
    let mut ctx = Context {
        prompt: Some(secret()),
        ..Context::default()
    };
    for (draft, rule) in [
        (format!("The marker is {CANARY}"), RULE_PROMPT_CANARY),
        (
            "Here you go: You are the customer-support assistant of Acme. You answer the \
             customer in their own language"
                .to_string(),
            RULE_PROMPT_OVERLAP,
        ),
    ] {
        let v = evaluate(Stage::Outbound, &draft, &mut ctx, &policy);
        assert_eq!(v.action, Action::Handoff, "{draft}");
        assert!(v.findings.iter().any(|f| f.rule_id == rule), "{v:?}");
    }
    let fine = evaluate(
        Stage::Outbound,
        "You can return any item within 30 days.",
        &mut ctx,
        &policy,
    );
    assert_eq!(fine.action, Action::Allow, "{fine:?}");
}
