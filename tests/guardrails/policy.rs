//! Tenant rules and options (AGT-3): the same rule structure as the packs,
//! JSON-stored, compiled per tenant, cached per configuration version.

use std::collections::BTreeSet;
use std::sync::Arc;

use custodian::guardrails::{
    evaluate, tenant_rules_from_json, Action, Context, KnownEntities, PiiType, Policy, PolicyCache,
    Rule, Stage, TenantConfig, TenantOptions,
};

const TENANT_RULE: &str = r#"[{
  "id": "acme.cancel-threat",
  "description": "customers threatening to cancel go to retention",
  "stage": "inbound",
  "phrases": ["cancel my contract", "cancelar meu contrato", "Vertrag kündigen"],
  "action": "handoff",
  "must_match": ["I will CANCEL my contract", "quero cancelar meu contrato", "ich will den Vertrag kundigen"],
  "must_not_match": ["how do I cancel an order?"]
}]"#;

fn config(rules: &str) -> TenantConfig {
    TenantConfig {
        rules: tenant_rules_from_json("tenant:acme", rules).expect("tenant rules load"),
        options: TenantOptions::default(),
    }
}

// proves: AGT-3
#[test]
fn a_tenant_rule_from_json_applies_without_code_changes() {
    let policy = Policy::new(&config(TENANT_RULE)).unwrap();
    let v = evaluate(
        Stage::Inbound,
        "Ich will den Vertrag kündigen!",
        &mut Context::default(),
        &policy,
    );
    assert_eq!(v.action, Action::Handoff);
    assert_eq!(v.findings[0].rule_id, "acme.cancel-threat");
}

// proves: AGT-3
#[test]
fn tenant_rules_round_trip_through_json_as_stored_in_the_database() {
    let rules = config(TENANT_RULE).rules;
    let json = serde_json::to_string(&rules).unwrap();
    let back: Vec<Rule> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, rules);
}

// proves: AGT-3
#[test]
fn a_configuration_change_takes_effect_on_the_next_lookup_of_the_cache() {
    let cache: PolicyCache<String> = PolicyCache::new();
    let tenant = "tenant-a".to_string();
    let v1 = cache
        .get_or_compile(&tenant, 1, || Policy::new(&TenantConfig::default()))
        .unwrap();
    let again = cache
        .get_or_compile(&tenant, 1, || -> Result<Policy, String> {
            panic!("must not recompile")
        })
        .unwrap();
    assert!(Arc::ptr_eq(&v1, &again));
    let text = "I will cancel my contract";
    assert!(evaluate(Stage::Inbound, text, &mut Context::default(), &v1)
        .action
        .proceeds());
    // Version 2 adds the rule: the cache recompiles and the rule applies.
    let v2 = cache
        .get_or_compile(&tenant, 2, || Policy::new(&config(TENANT_RULE)))
        .unwrap();
    assert!(!Arc::ptr_eq(&v1, &v2));
    assert_eq!(
        evaluate(Stage::Inbound, text, &mut Context::default(), &v2).action,
        Action::Handoff
    );
    assert!(cache.get(&tenant, 1).is_none());
    assert_eq!(cache.len(), 1);
    cache.invalidate(&tenant);
    assert!(cache.is_empty());
}

#[test]
fn tenants_in_the_cache_do_not_see_each_others_rules() {
    let cache: PolicyCache<u64> = PolicyCache::new();
    let a = cache
        .get_or_compile(&1, 7, || Policy::new(&config(TENANT_RULE)))
        .unwrap();
    let b = cache
        .get_or_compile(&2, 7, || Policy::new(&TenantConfig::default()))
        .unwrap();
    let text = "I will cancel my contract";
    assert_eq!(
        evaluate(Stage::Inbound, text, &mut Context::default(), &a).action,
        Action::Handoff
    );
    assert!(evaluate(Stage::Inbound, text, &mut Context::default(), &b)
        .action
        .proceeds());
}

#[test]
fn an_oversized_tenant_regex_is_refused() {
    let huge = r#"[{"id":"t.huge","stage":"inbound","regex":"(\\w{50}\\s){60}","action":"flag"}]"#;
    let err = tenant_rules_from_json("tenant:acme", huge)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("tenant:acme: rule `t.huge`: invalid regex"),
        "{err}"
    );
    assert!(err.contains("size limit"), "{err}");
}

#[test]
fn an_invalid_tenant_rule_is_refused_with_its_id_and_reason() {
    let unknown =
        r#"[{"id":"t.x","stage":"inbound","phrases":["a"],"action":"flag","colour":"red"}]"#;
    let err = tenant_rules_from_json("tenant:acme", unknown)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("tenant:acme: rule `t.x`: unknown field `colour`"),
        "{err}"
    );
    let failing = r#"[{"id":"t.y","stage":"inbound","phrases":["refund"],"action":"flag","must_match":["money back"]}]"#;
    let err = tenant_rules_from_json("tenant:acme", failing)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rule `t.y`: must_match example does not match"),
        "{err}"
    );
}

#[test]
fn a_tenant_rule_may_not_reuse_a_builtin_id() {
    let clash = r#"[{"id":"legal.threat","stage":"inbound","phrases":["x"],"action":"flag"}]"#;
    let err = Policy::new(&config(clash)).unwrap_err().to_string();
    assert_eq!(
        err,
        "tenant: rule `legal.threat`: id is already used by a built-in rule"
    );
}

// proves: AGT-2
#[test]
fn a_tenant_can_leave_out_optional_pii_types_but_never_the_floor() {
    let only_cards = TenantOptions {
        pii_types: Some(BTreeSet::from([PiiType::Card])),
        ..TenantOptions::default()
    };
    let policy = Policy::new(&TenantConfig {
        options: only_cards.clone(),
        ..TenantConfig::default()
    })
    .unwrap();
    let known = KnownEntities::new().with_company("Acme Widgets Ltd");
    let v = evaluate(
        Stage::Inbound,
        "a@b.io 4111 1111 1111 1111, call +1 415 555 0132, for Acme Widgets Ltd",
        &mut Context::new(Default::default(), known.clone()),
        &policy,
    );
    // The e-mail and the phone are masked though the list leaves them out; the company, an
    // optional type, is not.
    assert_eq!(
        v.masked_text,
        "[EMAIL_1] [CARD_1], call [PHONE_1], for Acme Widgets Ltd"
    );
    let all = evaluate(
        Stage::Inbound,
        "for Acme Widgets Ltd",
        &mut Context::new(Default::default(), known),
        &Policy::builtin(),
    );
    assert_eq!(all.masked_text, "for [COMPANY_1]");
    assert_eq!(policy.masked_pii_types(), PiiType::MANDATORY.to_vec());
    // What the list asked not to mask, for the API to refuse.
    let missing = only_cards.unmasked_mandatory();
    assert!(missing.contains(&PiiType::Email) && missing.contains(&PiiType::Name));
    assert!(!missing.contains(&PiiType::Card));
    assert!(TenantOptions::default().unmasked_mandatory().is_empty());
}

// proves: AGT-2
#[test]
fn an_empty_list_of_pii_types_still_masks_every_mandatory_type() {
    let policy = Policy::new(&TenantConfig {
        options: TenantOptions {
            pii_types: Some(BTreeSet::new()),
            ..TenantOptions::default()
        },
        ..TenantConfig::default()
    })
    .unwrap();
    for (kind, text) in [
        (PiiType::Email, "mail me at ana.silva@example.com please"),
        (PiiType::Phone, "call me on +49 151 23456789 today"),
        (PiiType::Card, "my card is 4111 1111 1111 1111"),
        (PiiType::Iban, "IBAN DE89 3704 0044 0532 0130 00"),
        (PiiType::Ssn, "my SSN is 123-45-6789"),
        (PiiType::Cpf, "meu CPF é 529.982.247-25"),
        (PiiType::Cnpj, "CNPJ 11.222.333/0001-81"),
        (PiiType::Ip, "my IP is 203.0.113.7"),
        (PiiType::Secret, "my password is Hunter2!"),
        (PiiType::Url, "use https://bob:hunter2@db.example.com/x"),
        (PiiType::Name, "Hello, my name is Jennifer Gay"),
    ] {
        let v = evaluate(Stage::Inbound, text, &mut Context::default(), &policy);
        assert!(
            v.masked_text.contains(&format!("[{}_1]", kind.label())),
            "{kind:?}: {}",
            v.masked_text
        );
    }
}

#[test]
fn the_tenants_own_public_contact_details_are_not_masked_nor_flagged() {
    let policy = Policy::new(&TenantConfig {
        options: TenantOptions {
            public_values: vec!["help@acme.example".into(), "+1 415 555 0132".into()],
            ..TenantOptions::default()
        },
        ..TenantConfig::default()
    })
    .unwrap();
    let mut ctx = Context::default();
    let v = evaluate(
        Stage::Inbound,
        "I wrote to help@acme.example and 415-555-0132",
        &mut ctx,
        &policy,
    );
    assert_eq!(
        v.masked_text,
        "I wrote to help@acme.example and 415-555-0132"
    );
    let v = evaluate(
        Stage::Outbound,
        "Write to help@acme.example any time.",
        &mut ctx,
        &policy,
    );
    assert_eq!(v.action, Action::Allow);
}

#[test]
fn a_tenant_can_choose_packs_and_enable_the_competitor_template() {
    let policy = Policy::new(&TenantConfig {
        options: TenantOptions {
            packs: Some(vec!["competitors".into()]),
            ..TenantOptions::default()
        },
        ..TenantConfig::default()
    })
    .unwrap();
    let v = evaluate(
        Stage::Inbound,
        "Is ExampleRival cheaper? I want to end my life",
        &mut Context::default(),
        &policy,
    );
    assert_eq!(
        v.action,
        Action::Flag,
        "self-harm pack is off, competitors on: {:?}",
        v.findings
    );
    let err = Policy::new(&TenantConfig {
        options: TenantOptions {
            packs: Some(vec!["nope".into()]),
            ..TenantOptions::default()
        },
        ..TenantConfig::default()
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "tenant: unknown pack `nope`");
}

#[test]
fn tenant_options_deserialise_strictly_from_json() {
    let ok: TenantOptions =
        serde_json::from_str(r#"{"pii_types":["EMAIL","PHONE"],"max_output_chars":800}"#).unwrap();
    assert_eq!(ok.max_output_chars, Some(800));
    assert_eq!(ok.unissued_pii_action, Action::Handoff);
    assert!(serde_json::from_str::<TenantOptions>(r#"{"max_chars":800}"#).is_err());
}

// proves: AGT-3
#[test]
fn a_tenant_phrase_with_an_umlaut_matches_the_ue_spelling() {
    let policy = Policy::new(&config(TENANT_RULE)).unwrap();
    let v = evaluate(
        Stage::Inbound,
        "Ich will den Vertrag kuendigen!",
        &mut Context::default(),
        &policy,
    );
    assert_eq!(v.action, Action::Handoff);
}

#[test]
fn a_tenant_rule_may_name_the_engines_handoff_reply_but_not_an_undefined_one() {
    let ok = r#"[{"id":"t.h","stage":"inbound","phrases":["manager"],"action":"handoff","safe_reply":"handoff"}]"#;
    Policy::new(&config(ok)).expect("the engine's own hand-off reply is defined");
    let bad = r#"[{"id":"t.h","stage":"inbound","phrases":["manager"],"action":"handoff","safe_reply":"nope"}]"#;
    assert_eq!(
        Policy::new(&config(bad)).unwrap_err().to_string(),
        "tenant: rule `t.h`: safe_reply `nope` is not defined"
    );
}
