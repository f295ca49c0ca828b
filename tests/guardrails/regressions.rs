//! Inputs found by fuzzing and property tests, kept so they stay fixed.

use custodian::guardrails::{
    evaluate, mask_text, unmask, Context, KnownEntities, Policy, Stage, Vault,
};

fn round_trip(text: &str) {
    let mut vault = Vault::new();
    let masked = mask_text(text, &KnownEntities::new().with_name("Ana"), &mut vault);
    assert_eq!(unmask(&masked, &vault), text);
    let mut ctx = Context::default();
    evaluate(Stage::Inbound, text, &mut ctx, &Policy::builtin());
    evaluate(Stage::Outbound, text, &mut ctx, &Policy::builtin());
}

#[test]
fn edge_inputs_round_trip_and_do_not_panic() {
    for text in [
        "",
        "[",
        "[EMAIL_",
        "[EMAIL_1",
        "[[EMAIL_1]]",
        "[EMAIL_4294967296]",
        "[LITERAL_1][LITERAL_1]",
        "+",
        "+(",
        "(1",
        "0",
        "@",
        "a@",
        "@b.co",
        "://",
        "x://",
        "-----BEGIN ",
        "-----BEGIN PRIVATE KEY-----",
        ":::",
        "ß",
        "\u{200b}",
        "é\u{301}",
        "my name is",
        "Obrigado,\n",
        "password:",
        "password: ",
        "ана@пример.рф",
        // Found by cargo-fuzz: the first input paid for loading the numbering
        // plans and timed out; `warm_up` now loads them at start.
        "+49 151 53923175. ",
    ] {
        round_trip(text);
    }
}
