//! The guardrail engine: PII masking, topic blocklists, the prompt-injection
//! screen and output checks, as pure functions over rule packs that are data.
//!
//! Every LLM call of the agent runtime goes through [`evaluate`]:
//!
//! * **inbound** (customer message, CRM fields, retrieved knowledge): rule
//!   packs for the inbound stage, then PII replaced by typed placeholders
//!   (`[EMAIL_1]`) issued by the conversation's [`Vault`] (AGT-2);
//! * **outbound** (the model's draft): rule packs for the outbound stage,
//!   tenant-forbidden commitments, maximum length, PII the vault never issued,
//!   placeholders it cannot resolve, links to hosts the tenant did not allow,
//!   and the run's system prompt (its canary, or its templates' wording at
//!   length), all read with the placeholders restored, as the customer would
//!   get it; then [`unmask`] restores the real values for the customer.
//!
//! A [`Verdict`] whose action is `block` or `handoff` stops the text (AGT-4).
//! Rules live in `guardrails/*.toml` (built in) and in tenant configuration
//! ([`TenantConfig`], JSON), compiled into a [`Policy`] and cached per tenant
//! and version by [`PolicyCache`] (AGT-3).
//!
//! Two smaller pure checks live here too, as domains at different heights ask them: [`schema`]
//! checks tool-call arguments against a JSON schema (the agent before a call, the review queue
//! before an edited action is approved), and [`asks_for_human_review`] recognises a customer
//! asking for a person to review a decision (the ingest, the agent).
//!
//! Nothing here does I/O (except [`RulePack::load_dir`] and [`scan_jsonl`],
//! which take their reader/writer from the caller), nothing is async, and
//! every scanner is linear in its input: hand-written byte scanners,
//! Aho-Corasick and the `regex` crate, which does not backtrack.

mod decode;
mod evaluate;
pub mod fold;
mod human_review;
pub mod language;
mod leak;
mod links;
pub mod pii;
mod policy;
mod rules;
mod scan;
pub mod schema;
mod vault;

pub use evaluate::{
    evaluate, Context, Finding, FindingKind, Verdict, KEY_HANDOFF, RULE_LINK_HOST, RULE_MAX_LENGTH,
    RULE_PROMPT_CANARY, RULE_PROMPT_OVERLAP, RULE_UNISSUED_PII, RULE_UNKNOWN_PLACEHOLDER,
};
pub use human_review::{asks_for_human_review, injection_rules, HUMAN_REVIEW_RULE};
pub use language::{ByLang, Wording};
pub use leak::{leaks, Leak, LeakKind, PromptSecret, PromptTexts, OVERLAP_WORDS};
pub use links::{foreign_links, links, Link, LinkHosts};
pub use pii::{detect_all, KnownEntities, KnownEntitiesSpec, PiiSpan, PiiType};
pub use policy::{
    load_builtin_packs, PackSet, Policy, PolicyCache, TenantConfig, TenantOptions,
    BUILTIN_PACK_FILES, COMMITMENT_RULE, KEY_COMMITMENT, REQUIRED_PACK,
};
pub use rules::{
    tenant_rules_from_json, validate_rules, Action, Encoding, Lang, Limits, Matcher, PackError,
    Rule, RulePack, RuleSpec, RuleStage, SafeReply, Stage,
};
pub use scan::{scan_jsonl, ScanStats};
pub use vault::{
    mask, parse_placeholder, unmask, unmask_value, unresolved_placeholders, Label, Placeholder,
    Vault, REDACTED,
};

/// Loads and compiles everything that is otherwise built lazily (built-in
/// packs, the default policy, phone numbering plans), so the first message
/// does not pay for it and a broken built-in pack fails at start-up.
pub fn warm_up() -> Result<(), PackError> {
    load_builtin_packs()?;
    Policy::builtin();
    pii::warm_up();
    Ok(())
}

/// Masks `text` for the model: detects PII (every type, plus the CRM values
/// in `known`) and replaces it with placeholders from `vault`. Rule packs are
/// not applied; use [`evaluate`] for the full inbound stage.
pub fn mask_text(text: &str, known: &KnownEntities, vault: &mut Vault) -> String {
    let folded = fold::Folded::new(text);
    let spans = pii::detect(text, &folded, known, &[true; PiiType::ALL.len()]);
    mask(text, &spans, vault)
}
