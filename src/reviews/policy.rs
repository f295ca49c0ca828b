//! A tenant's approval policy: which proposals need which role and how many approvals, how long
//! an item may wait before it expires (fail closed: expired means rejected), the SLA after which
//! a waiting item is flagged, and the words the customer hears. Pure code: the routes store it
//! as JSON in `agent_settings.review_policy`.
//!
//! How a rule matches an item:
//! - `kind` (refund, discount, exchange — `exchange_approval`, the issue's name, is accepted and
//!   stored as `exchange` — or escalation) matches only action items whose action has that kind;
//! - `action` matches only action items of the tenant action with that name;
//! - `above` matches only items that have an amount greater than it. An item without an amount
//!   (a draft, a flag, a human-review request, an action without an amount field) never meets
//!   an amount threshold: give the action's kind or name a rule without `above` to demand more
//!   of it whatever the amount;
//! - a rule with none of these is a catch-all: it applies to every item of every kind (drafts,
//!   flags and human-review requests included), e.g. to give everything a shorter expiry.
//!
//! The customer's wording is a string (every language) or an object by language
//! (`{"en": …, "pt": …, "es": …, "de": …}`, any of them): the conversation's language is
//! used, else English, else the built-in text in the conversation's language.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::guardrails::language::WordingError;
pub use crate::guardrails::language::{ByLang, Wording};
use crate::guardrails::Lang;
use crate::rbac::Role;

pub const DEFAULT_SLA_MINUTES: u32 = 240;
pub const DEFAULT_EXPIRY_MINUTES: u32 = 24 * 60;
const MAX_MINUTES: u32 = 30 * 24 * 60;
const MAX_MESSAGE_CHARS: usize = crate::guardrails::language::MAX_WORDING_CHARS;
const MAX_RULES: usize = 100;

crate::error::message_error! {
    /// Why a review policy is refused: the message says what to fix.
    pub struct PolicyError;
}

impl From<WordingError> for PolicyError {
    fn from(e: WordingError) -> Self {
        PolicyError(e.into())
    }
}

/// What the customer is told when a reviewer rejects their request, by default.
pub fn default_rejection_message(lang: Lang) -> &'static str {
    lang.pick([
        "A colleague reviewed your request and could not approve it. If you have questions, just reply here.",
        "Um colega analisou o seu pedido e não pôde aprová-lo. Se tiver dúvidas, é só responder aqui.",
        "Un compañero revisó tu solicitud y no pudo aprobarla. Si tienes preguntas, responde aquí.",
        "Eine Kollegin oder ein Kollege hat Ihre Anfrage geprüft und konnte sie nicht genehmigen. Bei Fragen antworten Sie einfach hier.",
    ])
}

/// What the customer is told when nobody decided in time (expired means rejected), by default.
pub fn default_expiry_message(lang: Lang) -> &'static str {
    lang.pick([
        "We could not confirm your request in time, so it was not carried out. Please reply here if you still need it.",
        "Não conseguimos confirmar o seu pedido a tempo, por isso ele não foi realizado. Responda aqui se ainda precisar.",
        "No pudimos confirmar tu solicitud a tiempo, así que no se llevó a cabo. Responde aquí si todavía la necesitas.",
        "Wir konnten Ihre Anfrage nicht rechtzeitig bestätigen, daher wurde sie nicht ausgeführt. Antworten Sie hier, wenn Sie sie noch benötigen.",
    ])
}

/// What the customer is told when the approved action was carried out, by default.
pub fn default_approval_message(lang: Lang) -> &'static str {
    lang.pick([
        "Good news: a colleague approved your request.",
        "Boa notícia: um colega aprovou o seu pedido.",
        "Buenas noticias: un compañero aprobó tu solicitud.",
        "Gute Nachricht: Ihre Anfrage wurde genehmigt.",
    ])
}

/// What the customer is told when a person reviewed the decision they contested and it stands,
/// by default (the reviewer may write their own words instead).
pub fn default_upheld_message(lang: Lang) -> &'static str {
    lang.pick([
        "A colleague reviewed the decision you asked about, and it stands. If you have questions, just reply here.",
        "Um colega revisou a decisão que você contestou, e ela foi mantida. Se tiver dúvidas, é só responder aqui.",
        "Un compañero revisó la decisión que cuestionaste y se mantiene. Si tienes preguntas, responde aquí.",
        "Eine Kollegin oder ein Kollege hat die Entscheidung geprüft, und sie bleibt bestehen. Bei Fragen antworten Sie einfach hier.",
    ])
}

/// What the customer is told when a person reviewed the decision they contested and changed it,
/// by default.
pub fn default_changed_message(lang: Lang) -> &'static str {
    lang.pick([
        "A colleague reviewed the decision you asked about and changed it. We will follow up here with the details.",
        "Um colega revisou a decisão que você contestou e a alterou. Vamos continuar aqui com os detalhes.",
        "Un compañero revisó la decisión que cuestionaste y la cambió. Te daremos los detalles aquí.",
        "Eine Kollegin oder ein Kollege hat die Entscheidung geprüft und geändert. Die Einzelheiten folgen hier.",
    ])
}

/// The action kinds rules name, as stored; `exchange_approval` is the issue's name for
/// `exchange`.
pub fn canonical_kind(kind: &str) -> &str {
    match kind {
        "exchange_approval" => "exchange",
        other => other,
    }
}

/// The least role that may approve, in rank order. Also `review_item.required_role` (text,
/// CHECK `review_item_required_role`), read through `sqlx::Type`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RequiredRole {
    Reviewer,
    Admin,
    Owner,
}

impl RequiredRole {
    pub fn as_str(self) -> &'static str {
        match self {
            RequiredRole::Reviewer => "reviewer",
            RequiredRole::Admin => "admin",
            RequiredRole::Owner => "owner",
        }
    }

    pub fn parse(raw: &str) -> Option<RequiredRole> {
        match raw {
            "reviewer" => Some(RequiredRole::Reviewer),
            "admin" => Some(RequiredRole::Admin),
            "owner" => Some(RequiredRole::Owner),
            _ => None,
        }
    }

    /// Whether a member of `role` ranks high enough. Roles that cannot decide reviews at all
    /// are refused earlier, by the permission table.
    pub fn allows(self, role: Role) -> bool {
        let rank = match role {
            Role::Owner => RequiredRole::Owner,
            Role::Admin => RequiredRole::Admin,
            Role::Reviewer => RequiredRole::Reviewer,
            _ => return false,
        };
        rank >= self
    }
}

/// One rule: when it matches a proposal, its demands apply (the strictest of all matching rules
/// wins). It demands at least one of `role`, `approvals` and `expiry_minutes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    /// Built-in action kind (`exchange_approval` is accepted for `exchange`). Matches action
    /// items of that kind only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<super::ActionKind>, inline)]
    pub kind: Option<String>,
    /// A tenant action's name. Matches action items of that action only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 64, pattern = r"\S")]
    pub action: Option<String>,
    /// Applies only to items with an amount above this; an item without an amount never
    /// meets it (see the module's documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0)]
    pub above: Option<f64>,
    /// The least role that may decide a matching item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(inline)]
    pub role: Option<RequiredRole>,
    /// How many people must approve a matching item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 5)]
    pub approvals: Option<u8>,
    /// A matching item expires after this many minutes (at most 30 days), if sooner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 43200)]
    pub expiry_minutes: Option<u32>,
}

/// A tenant's approval policy. The customer's wordings are one text for every language or texts
/// by language; a wording left out (or `null`) is the built-in one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
// Named apart from a review item's `policy` field, which client generators would name alike.
#[schema(as = ApprovalPolicy)]
pub struct ReviewPolicy {
    /// A pending item older than this is flagged as breaching the SLA (240 when absent).
    #[schema(minimum = 1, maximum = 43200)]
    pub sla_minutes: Option<u32>,
    /// A pending item older than this is rejected as expired and the customer is told (1440
    /// when absent).
    #[schema(minimum = 1, maximum = 43200)]
    pub expiry_minutes: Option<u32>,
    /// What the customer hears when a reviewer rejects their request.
    pub rejection_message: Option<Wording>,
    /// What the customer hears when nobody decided in time.
    pub expiry_message: Option<Wording>,
    /// What the customer hears when the approved action was carried out.
    pub approval_message: Option<Wording>,
    /// A contested decision was reviewed and stands (when the reviewer writes nothing).
    pub upheld_message: Option<Wording>,
    /// A contested decision was reviewed and changed (when the reviewer writes nothing).
    pub changed_message: Option<Wording>,
    /// At most 100.
    #[schema(schema_with = rules_schema)]
    pub rules: Vec<ApprovalRule>,
}

/// The rules: at most 100, each an [`ApprovalRule`] that demands something (a rule with none of
/// `role`, `approvals` and `expiry_minutes` is refused), which the derive cannot say.
fn rules_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
    use utoipa::PartialSchema;
    // At least one demand with a value (`null` demands nothing).
    let demands = [
        ("role", Type::String),
        ("approvals", Type::Integer),
        ("expiry_minutes", Type::Integer),
    ]
    .into_iter()
    .fold(AnyOfBuilder::new(), |any, (field, value)| {
        any.item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(field, ObjectBuilder::new().schema_type(value))
                .required(field),
        )
    });
    ArrayBuilder::new()
        .items(
            AllOfBuilder::new()
                .item(ApprovalRule::schema())
                .item(demands),
        )
        .max_items(Some(MAX_RULES))
        .description(Some("At most 100 rules."))
        .build()
}

/// What a proposal needs, worked out when its item is opened and kept with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Requirement {
    pub role: RequiredRole,
    pub approvals: i32,
    #[serde(skip)]
    pub expires_in: Duration,
    #[serde(skip)]
    pub sla: Duration,
    /// Indexes of the rules that matched.
    pub matched_rules: Vec<usize>,
}

/// What a proposal is, for matching rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    pub kind: Option<&'a str>,
    pub action: Option<&'a str>,
    pub amount: Option<f64>,
}

impl ReviewPolicy {
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (name, minutes) in [
            ("sla_minutes", self.sla_minutes),
            ("expiry_minutes", self.expiry_minutes),
        ] {
            if let Some(m) = minutes {
                if m == 0 || m > MAX_MINUTES {
                    return Err(format!("{name} must be 1 to {MAX_MINUTES}").into());
                }
            }
        }
        for (name, wording) in [
            ("rejection_message", &self.rejection_message),
            ("expiry_message", &self.expiry_message),
            ("approval_message", &self.approval_message),
            ("upheld_message", &self.upheld_message),
            ("changed_message", &self.changed_message),
        ] {
            let Some(wording) = wording else { continue };
            wording.check(name, MAX_MESSAGE_CHARS)?;
        }
        if self.rules.len() > MAX_RULES {
            return Err(format!("at most {MAX_RULES} rules").into());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            if let Some(kind) = &rule.kind {
                if !super::MATERIAL_KINDS.contains(&canonical_kind(kind)) {
                    return Err(format!(
                        "{at}.kind must be one of {} (exchange_approval stands for exchange)",
                        super::MATERIAL_KINDS.join(", ")
                    )
                    .into());
                }
            }
            if let Some(action) = &rule.action {
                if action.trim().is_empty() || action.chars().count() > 64 {
                    return Err(format!("{at}.action must be 1 to 64 characters").into());
                }
            }
            if let Some(above) = rule.above {
                if !above.is_finite() || above < 0.0 {
                    return Err(format!("{at}.above must be a number of at least 0").into());
                }
            }
            if let Some(n) = rule.approvals {
                if !(1..=5).contains(&n) {
                    return Err(format!("{at}.approvals must be 1 to 5").into());
                }
            }
            if let Some(m) = rule.expiry_minutes {
                if m == 0 || m > MAX_MINUTES {
                    return Err(format!("{at}.expiry_minutes must be 1 to {MAX_MINUTES}").into());
                }
            }
            if rule.role.is_none() && rule.approvals.is_none() && rule.expiry_minutes.is_none() {
                return Err(format!(
                    "{at} demands nothing: give role, approvals or expiry_minutes"
                )
                .into());
            }
        }
        Ok(())
    }

    /// The policy as stored: rule kinds under their stored names.
    pub fn normalized(mut self) -> Self {
        for rule in &mut self.rules {
            if let Some(kind) = &mut rule.kind {
                *kind = canonical_kind(kind).to_string();
            }
        }
        self
    }

    /// The strictest demands of every matching rule over the defaults.
    pub fn requirement(&self, subject: Subject<'_>) -> Requirement {
        let mut req = Requirement {
            role: RequiredRole::Reviewer,
            approvals: 1,
            expires_in: minutes(self.expiry_minutes.unwrap_or(DEFAULT_EXPIRY_MINUTES)),
            sla: minutes(self.sla_minutes.unwrap_or(DEFAULT_SLA_MINUTES)),
            matched_rules: Vec::new(),
        };
        for (i, rule) in self.rules.iter().enumerate() {
            let kind_ok = rule
                .kind
                .as_deref()
                .is_none_or(|k| subject.kind.map(canonical_kind) == Some(canonical_kind(k)));
            let action_ok = rule
                .action
                .as_deref()
                .is_none_or(|a| subject.action == Some(a));
            // A threshold speaks about amounts: an item without one is not above it.
            let amount_ok = match (rule.above, subject.amount) {
                (None, _) => true,
                (Some(limit), Some(amount)) => amount > limit,
                (Some(_), None) => false,
            };
            if !(kind_ok && action_ok && amount_ok) {
                continue;
            }
            req.matched_rules.push(i);
            if let Some(role) = rule.role {
                req.role = req.role.max(role);
            }
            if let Some(n) = rule.approvals {
                req.approvals = req.approvals.max(i32::from(n));
            }
            if let Some(m) = rule.expiry_minutes {
                req.expires_in = req.expires_in.min(minutes(m));
            }
        }
        req
    }

    /// The tenant's wording in the customer's language, else the default in it.
    pub fn rejection_message(&self, lang: Lang) -> &str {
        wording(&self.rejection_message, lang, default_rejection_message)
    }

    pub fn expiry_message(&self, lang: Lang) -> &str {
        wording(&self.expiry_message, lang, default_expiry_message)
    }

    pub fn approval_message(&self, lang: Lang) -> &str {
        wording(&self.approval_message, lang, default_approval_message)
    }

    pub fn upheld_message(&self, lang: Lang) -> &str {
        wording(&self.upheld_message, lang, default_upheld_message)
    }

    pub fn changed_message(&self, lang: Lang) -> &str {
        wording(&self.changed_message, lang, default_changed_message)
    }
}

fn wording(tenant: &Option<Wording>, lang: Lang, builtin: fn(Lang) -> &'static str) -> &str {
    match tenant {
        Some(w) => w.pick(lang, builtin),
        None => builtin(lang),
    }
}

fn minutes(m: u32) -> Duration {
    Duration::from_secs(u64::from(m) * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ReviewPolicy {
        serde_json::from_value(serde_json::json!({
            "rules": [
                { "kind": "refund", "above": 50, "role": "admin" },
                { "kind": "discount", "above": 15, "approvals": 2 },
                { "action": "cancel_contract", "expiry_minutes": 30 }
            ]
        }))
        .unwrap()
    }

    #[test]
    fn a_small_refund_needs_one_reviewer_and_a_large_one_an_admin() {
        let p = policy();
        let small = p.requirement(Subject {
            kind: Some("refund"),
            action: Some("issue_refund"),
            amount: Some(20.0),
        });
        assert_eq!((small.role, small.approvals), (RequiredRole::Reviewer, 1));
        let large = p.requirement(Subject {
            kind: Some("refund"),
            action: Some("issue_refund"),
            amount: Some(50.01),
        });
        assert_eq!(large.role, RequiredRole::Admin);
        assert_eq!(large.matched_rules, vec![0]);
    }

    #[test]
    fn an_amount_threshold_never_matches_an_item_without_an_amount() {
        let r = policy().requirement(Subject {
            kind: Some("discount"),
            action: None,
            amount: None,
        });
        assert_eq!((r.role, r.approvals), (RequiredRole::Reviewer, 1));
        assert!(r.matched_rules.is_empty());
        // A draft or a flag has neither kind nor amount: only catch-all rules reach it.
        let draft = policy().requirement(Subject::default());
        assert!(draft.matched_rules.is_empty());
    }

    #[test]
    fn a_kind_or_action_rule_never_matches_items_that_are_not_that_action() {
        let p: ReviewPolicy = serde_json::from_value(serde_json::json!({
            "rules": [{ "kind": "refund", "role": "admin" }, { "action": "issue_refund", "approvals": 2 }]
        }))
        .unwrap();
        let draft = p.requirement(Subject::default());
        assert_eq!((draft.role, draft.approvals), (RequiredRole::Reviewer, 1));
        let refund = p.requirement(Subject {
            kind: Some("refund"),
            action: Some("issue_refund"),
            amount: None,
        });
        assert_eq!((refund.role, refund.approvals), (RequiredRole::Admin, 2));
    }

    #[test]
    fn a_catch_all_rule_applies_to_every_item_but_its_threshold_only_to_amounts() {
        let p: ReviewPolicy = serde_json::from_value(serde_json::json!({
            "rules": [{ "expiry_minutes": 30 }, { "above": 1000, "role": "owner" }]
        }))
        .unwrap();
        assert!(p.validate().is_ok());
        let draft = p.requirement(Subject::default());
        assert_eq!(draft.expires_in, Duration::from_secs(30 * 60));
        assert_eq!(draft.role, RequiredRole::Reviewer);
        let big = p.requirement(Subject {
            kind: Some("refund"),
            action: Some("issue_refund"),
            amount: Some(1500.0),
        });
        assert_eq!(big.role, RequiredRole::Owner);
        assert_eq!(big.matched_rules, vec![0, 1]);
    }

    #[test]
    fn exchange_approval_is_accepted_and_stored_as_exchange() {
        let p: ReviewPolicy = serde_json::from_value(serde_json::json!({
            "rules": [{ "kind": "exchange_approval", "role": "admin" }]
        }))
        .unwrap();
        assert!(p.validate().is_ok());
        let p = p.normalized();
        assert_eq!(p.rules[0].kind.as_deref(), Some("exchange"));
        let r = p.requirement(Subject {
            kind: Some("exchange"),
            action: None,
            amount: None,
        });
        assert_eq!(r.role, RequiredRole::Admin);
    }

    #[test]
    fn a_wording_is_one_string_or_texts_by_language_with_fallbacks() {
        let p: ReviewPolicy = serde_json::from_value(serde_json::json!({
            "rejection_message": "No.",
            "expiry_message": { "pt": "Expirou.", "en": "Expired." },
            "approval_message": { "de": "Genehmigt." }
        }))
        .unwrap();
        assert!(p.validate().is_ok());
        assert_eq!(p.rejection_message(Lang::De), "No.");
        assert_eq!(p.expiry_message(Lang::Pt), "Expirou.");
        assert_eq!(p.expiry_message(Lang::Es), "Expired.");
        assert_eq!(p.approval_message(Lang::De), "Genehmigt.");
        assert_eq!(
            p.approval_message(Lang::Es),
            default_approval_message(Lang::Es)
        );
        assert_eq!(p.upheld_message(Lang::Pt), default_upheld_message(Lang::Pt));
        // Round trip as stored.
        let stored = serde_json::to_value(&p).unwrap();
        assert_eq!(stored["expiry_message"]["pt"], "Expirou.");
        assert_eq!(stored["rejection_message"], "No.");
        let back: ReviewPolicy = serde_json::from_value(stored).unwrap();
        assert_eq!(back, p);
        for bad in [
            serde_json::json!({ "rejection_message": { "fr": "Non." } }),
            serde_json::json!({ "rejection_message": 7 }),
        ] {
            assert!(serde_json::from_value::<ReviewPolicy>(bad).is_err());
        }
        for bad in [
            serde_json::json!({ "rejection_message": {} }),
            serde_json::json!({ "rejection_message": { "en": " " } }),
        ] {
            let p: ReviewPolicy = serde_json::from_value(bad).unwrap();
            assert!(p.validate().is_err());
        }
    }

    #[test]
    fn matching_rules_combine_to_the_strictest_demands() {
        let mut p = policy();
        p.rules.push(ApprovalRule {
            kind: Some("discount".into()),
            action: None,
            above: None,
            role: Some(RequiredRole::Owner),
            approvals: Some(1),
            expiry_minutes: Some(600),
        });
        let r = p.requirement(Subject {
            kind: Some("discount"),
            action: Some("cancel_contract"),
            amount: Some(20.0),
        });
        assert_eq!(r.role, RequiredRole::Owner);
        assert_eq!(r.approvals, 2);
        assert_eq!(r.expires_in, Duration::from_secs(30 * 60));
    }

    #[test]
    fn an_admin_may_approve_what_needs_a_reviewer_but_not_what_needs_an_owner() {
        assert!(RequiredRole::Reviewer.allows(Role::Admin));
        assert!(RequiredRole::Admin.allows(Role::Owner));
        assert!(!RequiredRole::Admin.allows(Role::Reviewer));
        assert!(!RequiredRole::Owner.allows(Role::Admin));
        assert!(!RequiredRole::Reviewer.allows(Role::Agent));
    }

    /// The policy's schema in the API document, as JSON.
    fn schema() -> serde_json::Value {
        use utoipa::PartialSchema;
        serde_json::to_value(ReviewPolicy::schema()).unwrap()
    }

    #[test]
    fn the_documented_limits_are_the_ones_a_policy_is_checked_against() {
        let doc = schema();
        let rules = &doc["properties"]["rules"];
        assert_eq!(rules["maxItems"], MAX_RULES);
        let rule = &rules["items"]["allOf"][0]["properties"];
        for minutes in [
            &doc["properties"]["sla_minutes"],
            &doc["properties"]["expiry_minutes"],
            &rule["expiry_minutes"],
        ] {
            assert_eq!(
                (&minutes["minimum"], &minutes["maximum"]),
                (&1.into(), &MAX_MINUTES.into())
            );
        }
        assert_eq!(rule["action"]["maxLength"], 64);
        // At the limits, a policy is valid; past them, not.
        let at = |minutes: u32, rules: usize, action: String| ReviewPolicy {
            sla_minutes: Some(minutes),
            rules: vec![
                ApprovalRule {
                    kind: None,
                    action: Some(action),
                    above: Some(0.0),
                    role: None,
                    approvals: Some(5),
                    expiry_minutes: Some(minutes),
                };
                rules
            ],
            ..ReviewPolicy::default()
        };
        // The limit is in characters, as JSON Schema counts them, not bytes.
        assert!(at(MAX_MINUTES, MAX_RULES, "é".repeat(64))
            .validate()
            .is_ok());
        assert!(at(MAX_MINUTES + 1, 1, "a".into()).validate().is_err());
        assert!(at(1, MAX_RULES + 1, "a".into()).validate().is_err());
        assert!(at(1, 1, "é".repeat(65)).validate().is_err());
    }

    #[test]
    fn the_document_says_a_rule_must_demand_something_with_a_value() {
        let doc = schema();
        let demands = &doc["properties"]["rules"]["items"]["allOf"][1]["anyOf"];
        let required: Vec<&str> = demands
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["required"][0].as_str().unwrap())
            .collect();
        assert_eq!(required, ["role", "approvals", "expiry_minutes"]);
        // Present, and with a value: a `null` demand is none.
        for demand in demands.as_array().unwrap() {
            let field = demand["required"][0].as_str().unwrap();
            let kind = demand["properties"][field]["type"].as_str();
            assert!(matches!(kind, Some("string" | "integer")), "{demand}");
        }
        let nothing: ReviewPolicy =
            serde_json::from_value(serde_json::json!({ "rules": [{ "approvals": null }] }))
                .unwrap();
        assert!(nothing.validate().is_err());
    }

    #[test]
    fn rules_that_demand_nothing_or_name_unknown_kinds_are_refused() {
        let bad = |v: serde_json::Value| {
            serde_json::from_value::<ReviewPolicy>(v)
                .map_err(|e| e.to_string())
                .and_then(|p| p.validate().map_err(String::from))
                .unwrap_err()
        };
        assert!(
            bad(serde_json::json!({ "rules": [{ "kind": "refund" }] })).contains("demands nothing")
        );
        assert!(
            bad(serde_json::json!({ "rules": [{ "kind": "gift", "role": "admin" }] }))
                .contains("kind")
        );
        assert!(bad(serde_json::json!({ "rules": [{ "approvals": 9 }] })).contains("approvals"));
        assert!(bad(serde_json::json!({ "expiry_minutes": 0 })).contains("expiry_minutes"));
        assert!(bad(serde_json::json!({ "rules": [{ "role": "king" }] }))
            .contains("unknown variant `king`"));
        assert!(policy().validate().is_ok());
    }
}
