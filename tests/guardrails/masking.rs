//! Reversible masking (AGT-2, engine side): the model sees placeholders, the
//! customer gets the real values back, and a placeholder never resolves to a
//! value it was not issued for.

use custodian::guardrails::{
    evaluate, mask, mask_text, unmask, Context, KnownEntities, Label, PiiSpan, PiiType, Policy,
    Stage, Vault,
};

const MESSAGE: &str = "Hi, I'm Ana Souza (ana.souza@example.com, +55 11 98765-4321). \
Card 4111 1111 1111 1111, CPF 529.982.247-25, IBAN DE89 3704 0044 0532 0130 00.";

const RAW_VALUES: &[&str] = &[
    "Ana Souza",
    "ana.souza@example.com",
    "+55 11 98765-4321",
    "4111 1111 1111 1111",
    "529.982.247-25",
    "DE89 3704 0044 0532 0130 00",
];

// proves: AGT-2
#[test]
fn the_inbound_stage_replaces_every_value_with_a_typed_numbered_placeholder() {
    let mut ctx = Context::default();
    let verdict = evaluate(Stage::Inbound, MESSAGE, &mut ctx, &Policy::builtin());
    assert_eq!(
        verdict.masked_text,
        "Hi, I'm [NAME_1] ([EMAIL_1], [PHONE_1]). Card [CARD_1], CPF [CPF_1], IBAN [IBAN_1]."
    );
    for raw in RAW_VALUES {
        assert!(
            !verdict.masked_text.contains(raw),
            "{raw} reached the model"
        );
    }
    assert!(verdict.action.proceeds());
}

// proves: AGT-2
#[test]
fn the_customer_gets_the_real_values_back_in_the_reply() {
    let mut ctx = Context::default();
    evaluate(Stage::Inbound, MESSAGE, &mut ctx, &Policy::builtin());
    let draft = "Thanks [NAME_1]! We will write to [EMAIL_1] and refund card [CARD_1].";
    let out = evaluate(Stage::Outbound, draft, &mut ctx, &Policy::builtin());
    assert!(out.action.proceeds(), "{:?}", out.findings);
    assert_eq!(
        unmask(&out.masked_text, &ctx.vault),
        "Thanks Ana Souza! We will write to ana.souza@example.com and refund card 4111 1111 1111 1111."
    );
}

// proves: AGT-2
#[test]
fn the_same_value_keeps_its_placeholder_across_a_conversation_and_a_stored_vault() {
    let policy = Policy::builtin();
    let mut ctx = Context::default();
    let first = evaluate(
        Stage::Inbound,
        "write to bob@example.org or eve@example.org",
        &mut ctx,
        &policy,
    );
    assert_eq!(first.masked_text, "write to [EMAIL_1] or [EMAIL_2]");
    // The vault is stored between messages (as JSON, encrypted by the runtime).
    let stored = serde_json::to_string(&ctx.vault).unwrap();
    let vault: Vault = serde_json::from_str(&stored).unwrap();
    let mut ctx = Context::new(vault, KnownEntities::default());
    let second = evaluate(
        Stage::Inbound,
        "did eve@example.org get it? also carol@example.org",
        &mut ctx,
        &policy,
    );
    assert_eq!(second.masked_text, "did [EMAIL_2] get it? also [EMAIL_3]");
}

// proves: AGT-2
#[test]
fn crm_fields_and_knowledge_are_masked_with_the_same_vault() {
    let known = KnownEntities::new()
        .with_name("João Araújo")
        .with_company("Padaria Estrela Ltda");
    let mut vault = Vault::new();
    let crm = mask_text(
        "Contact: João Araújo, company Padaria Estrela Ltda",
        &known,
        &mut vault,
    );
    let msg = mask_text("oi, aqui é o joao da padaria estrela", &known, &mut vault);
    assert_eq!(crm, "Contact: [NAME_1], company [COMPANY_1]");
    assert_eq!(msg, "oi, aqui é o [NAME_2] da [COMPANY_2]");
    assert_eq!(unmask(&msg, &vault), "oi, aqui é o joao da padaria estrela");
}

// proves: AGT-2
#[test]
fn invented_mangled_and_foreign_placeholders_never_resolve() {
    let mut vault = Vault::new();
    let masked = mask_text("mail a@example.com", &KnownEntities::default(), &mut vault);
    assert_eq!(masked, "mail [EMAIL_1]");
    let draft =
        "[EMAIL_1] [EMAIL_2] [email_1] [EMAIL 1] [EMAIL_01] EMAIL_1 [PHONE_1] [FOO_1] [EMAIL_1";
    assert_eq!(
        unmask(draft, &vault),
        "a@example.com [EMAIL_2] [email_1] [EMAIL 1] [EMAIL_01] EMAIL_1 [PHONE_1] [FOO_1] [EMAIL_1"
    );
    // A placeholder issued by another conversation's vault means nothing here.
    let mut other = Vault::new();
    mask_text(
        "x b@example.com y c@example.com",
        &KnownEntities::default(),
        &mut other,
    );
    assert_eq!(unmask("[EMAIL_2]", &vault), "[EMAIL_2]");
    assert_eq!(unmask("[EMAIL_2]", &other), "c@example.com");
}

// proves: AGT-2
#[test]
fn placeholder_text_typed_by_a_customer_comes_back_verbatim_and_never_as_a_value() {
    let mut vault = Vault::new();
    let text = "my code is [EMAIL_1] and my mail is real@example.com";
    let masked = mask_text(text, &KnownEntities::default(), &mut vault);
    assert_eq!(masked, "my code is [LITERAL_1] and my mail is [EMAIL_1]");
    assert_eq!(unmask(&masked, &vault), text);
    // If the model copies the literal's placeholder, the customer sees what they typed.
    assert_eq!(
        unmask("you wrote [LITERAL_1]", &vault),
        "you wrote [EMAIL_1]"
    );
}

#[test]
fn mask_skips_spans_that_overlap_or_do_not_fall_on_character_boundaries() {
    let text = "ção@x.io";
    let spans = [
        PiiSpan {
            kind: PiiType::Email,
            start: 1,
            end: 4,
            score: 1.0,
        },
        PiiSpan {
            kind: PiiType::Email,
            start: 0,
            end: 99,
            score: 1.0,
        },
    ];
    let mut vault = Vault::new();
    let masked = mask(text, &spans, &mut vault);
    assert_eq!(masked, text);
    assert!(vault.is_empty());
}

#[test]
fn a_vault_with_an_unknown_label_or_version_is_refused_on_load() {
    assert!(serde_json::from_str::<Vault>(
        r#"{"version":1,"entries":[{"label":"PASSPORT","value":"x"}]}"#
    )
    .is_err());
    assert!(serde_json::from_str::<Vault>(r#"{"version":2,"entries":[]}"#).is_err());
    let ok: Vault =
        serde_json::from_str(r#"{"version":1,"entries":[{"label":"EMAIL","value":"a@b.co"}]}"#)
            .unwrap();
    assert_eq!(
        ok.iter().next().map(|(p, v)| (p.to_string(), v)),
        Some(("[EMAIL_1]".into(), "a@b.co"))
    );
}

#[test]
fn debug_output_of_vault_and_known_entities_shows_no_values() {
    let mut vault = Vault::new();
    vault.placeholder(Label::Pii(PiiType::Email), "secret@example.com");
    let known = KnownEntities::new().with_name("Maria Secreta");
    let shown = format!("{vault:?} {known:?}");
    assert!(
        !shown.contains("secret@example.com") && !shown.contains("Maria"),
        "{shown}"
    );
}

// proves: AGT-2
#[test]
fn one_value_written_in_another_format_keeps_its_placeholder() {
    let policy = Policy::builtin();
    let known = KnownEntities::new().with_name("João Silva");
    let mut ctx = Context::new(Vault::new(), known);
    let first = evaluate(
        Stage::Inbound,
        "I'm João Silva, +55 11 98765-4321, JOAO@example.com, card 4111 1111 1111 1111",
        &mut ctx,
        &policy,
    );
    assert_eq!(
        first.masked_text,
        "I'm [NAME_1], [PHONE_1], [EMAIL_1], card [CARD_1]"
    );
    let second = evaluate(
        Stage::Inbound,
        "again: JOAO SILVA, (11) 98765-4321, joao@example.com, card 4111-1111-1111-1111",
        &mut ctx,
        &policy,
    );
    assert_eq!(
        second.masked_text,
        "again: [NAME_1], [PHONE_1], [EMAIL_1], card [CARD_1]"
    );
    // Each masked text still comes back exactly as written...
    assert_eq!(
        unmask(&second.masked_text, &ctx.vault),
        "again: JOAO SILVA, (11) 98765-4321, joao@example.com, card 4111-1111-1111-1111"
    );
    assert_eq!(
        unmask(&first.masked_text, &ctx.vault),
        "I'm João Silva, +55 11 98765-4321, JOAO@example.com, card 4111 1111 1111 1111"
    );
    // ...and a draft gets the first form seen.
    assert_eq!(
        unmask("Hi [NAME_1], we call [PHONE_1].", &ctx.vault),
        "Hi João Silva, we call +55 11 98765-4321."
    );
    let forms: Vec<&str> = ctx
        .vault
        .iter_forms()
        .filter(|(p, _)| p.to_string() == "[PHONE_1]")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(forms, ["+55 11 98765-4321", "(11) 98765-4321"]);
}

// proves: AGT-2
#[test]
fn two_formats_of_one_value_in_one_message_round_trip_exactly_and_survive_storage() {
    let mut vault = Vault::new();
    let text = "call +49 30 1234567 or 030 1234567, mail Ana@X.io / ana@x.io";
    let masked = mask_text(text, &KnownEntities::default(), &mut vault);
    assert_eq!(
        masked,
        "call [PHONE_1] or [PHONE_1], mail [EMAIL_1] / [EMAIL_1]"
    );
    assert_eq!(unmask(&masked, &vault), text);
    let stored: Vault = serde_json::from_str(&serde_json::to_string(&vault).unwrap()).unwrap();
    assert_eq!(unmask(&masked, &stored), text);
    assert_eq!(unmask("[PHONE_1]", &stored), "+49 30 1234567");
}

#[test]
fn a_vault_without_second_forms_serialises_as_before() {
    let mut vault = Vault::new();
    mask_text("a@b.io", &KnownEntities::default(), &mut vault);
    assert_eq!(
        serde_json::to_string(&vault).unwrap(),
        r#"{"version":1,"entries":[{"label":"EMAIL","value":"a@b.io"}]}"#
    );
}

// proves: AGT-2
#[test]
fn a_draft_rewriting_the_customers_own_phone_or_email_is_not_invented_pii() {
    let policy = Policy::builtin();
    let mut ctx = Context::default();
    evaluate(
        Stage::Inbound,
        "my number is (11) 98765-4321 and mail Ana.Souza@Example.com",
        &mut ctx,
        &policy,
    );
    let draft = "We will call +55 11 98765-4321 and write to ana.souza@example.com.";
    let v = evaluate(Stage::Outbound, draft, &mut ctx, &policy);
    assert!(v.action.proceeds(), "{:?}", v.findings);
    // Another number is still invented.
    let v = evaluate(
        Stage::Outbound,
        "Call +55 11 91234-5678.",
        &mut ctx,
        &policy,
    );
    assert!(!v.action.proceeds(), "{:?}", v.findings);
}
