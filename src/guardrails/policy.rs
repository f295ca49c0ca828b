//! Policies: built-in packs + a tenant's rules and options, compiled once and
//! cached per tenant and configuration version.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use crate::guardrails::fold::Folded;
use crate::guardrails::language::Wording;
use crate::guardrails::links::LinkHosts;
use crate::guardrails::pii::PiiType;
use crate::guardrails::rules::{
    check_unique_ids, compile_validated, Action, CompiledRules, Hit, Lang, Limits, Matcher,
    PackError, Rule, RuleMeta, RulePack, RuleStage, SafeReply, Stage,
};

/// The built-in packs, compiled into the binary. A test fails if
/// `guardrails/` holds a `.toml` that is not listed here.
pub const BUILTIN_PACK_FILES: &[(&str, &str)] = &[
    (
        "abusive_language.toml",
        include_str!("../../guardrails/abusive_language.toml"),
    ),
    (
        "competitors.toml",
        include_str!("../../guardrails/competitors.toml"),
    ),
    (
        "financial_guarantees.toml",
        include_str!("../../guardrails/financial_guarantees.toml"),
    ),
    (
        "human_review.toml",
        include_str!("../../guardrails/human_review.toml"),
    ),
    (
        "legal_advice.toml",
        include_str!("../../guardrails/legal_advice.toml"),
    ),
    (
        "medical_advice.toml",
        include_str!("../../guardrails/medical_advice.toml"),
    ),
    (
        "prompt_injection.toml",
        include_str!("../../guardrails/prompt_injection.toml"),
    ),
    (
        "self_harm.toml",
        include_str!("../../guardrails/self_harm.toml"),
    ),
];

/// Parses and validates the built-in packs (every example of every rule is
/// checked). Call at start-up so a bad pack fails loudly there.
pub fn load_builtin_packs() -> Result<Vec<RulePack>, PackError> {
    let packs = BUILTIN_PACK_FILES
        .iter()
        .map(|(file, src)| RulePack::from_toml(&format!("guardrails/{file}"), src))
        .collect::<Result<Vec<_>, _>>()?;
    check_unique_ids(&packs)?;
    Ok(packs)
}

/// Compiled rules of a set of packs, shared by every tenant policy built on them.
#[derive(Debug)]
pub struct PackSet {
    packs: Vec<RulePack>,
    rules: CompiledRules,
    /// Index into `packs` for each compiled rule.
    rule_pack: Vec<usize>,
    safe_replies: HashMap<String, SafeReply>,
}

impl PackSet {
    /// Compiles already validated packs (see [`RulePack::from_toml`]).
    /// Refuses a rule id or safe-reply key defined by two packs, naming both
    /// files.
    pub fn new(packs: Vec<RulePack>) -> Result<PackSet, PackError> {
        check_unique_ids(&packs)?;
        let all: Vec<Rule> = packs.iter().flat_map(|p| p.rules.iter().cloned()).collect();
        let rule_pack = packs
            .iter()
            .enumerate()
            .flat_map(|(i, p)| std::iter::repeat_n(i, p.rules.len()))
            .collect();
        let rules = CompiledRules::compile("packs", &all, Limits::BUILTIN)?;
        let safe_replies = packs.iter().flat_map(|p| p.safe_replies.clone()).collect();
        Ok(PackSet {
            packs,
            rules,
            rule_pack,
            safe_replies,
        })
    }

    /// The built-in packs, loaded and compiled on first use.
    ///
    /// # Panics
    /// If a built-in pack is invalid. The test suite loads every built-in
    /// pack, so this cannot ship; call [`load_builtin_packs`] at start-up to
    /// fail with a message instead.
    pub fn builtin() -> Arc<PackSet> {
        static BUILTIN: LazyLock<Arc<PackSet>> = LazyLock::new(|| {
            let packs =
                load_builtin_packs().unwrap_or_else(|e| panic!("invalid built-in rule pack: {e}"));
            Arc::new(
                PackSet::new(packs).unwrap_or_else(|e| panic!("invalid built-in rule pack: {e}")),
            )
        });
        BUILTIN.clone()
    }

    pub fn packs(&self) -> &[RulePack] {
        &self.packs
    }
}

fn default_unissued_action() -> Action {
    Action::Handoff
}

/// What a tenant can tune without code (AGT-3). Stored as JSON by the
/// configuration API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantOptions {
    /// PII types to mask; `None` masks every type. The types of [`PiiType::MANDATORY`] are
    /// masked whether listed or not (AGT-2); the API refuses a list that leaves one out
    /// ([`TenantOptions::unmasked_mandatory`]).
    pub pii_types: Option<BTreeSet<PiiType>>,
    /// Built-in packs to apply; `None` applies every pack except templates.
    pub packs: Option<Vec<String>>,
    /// Longest draft (in characters) that may go out.
    pub max_output_chars: Option<usize>,
    /// Phrases a draft must never contain ("guaranteed refund").
    pub forbidden_commitments: Vec<String>,
    /// The tenant's own wording of safe replies, by key: one text for every language, or
    /// texts by language (`{"en": …, "pt": …}`, any of them).
    pub safe_replies: BTreeMap<String, Wording>,
    /// Public values of the tenant itself (support e-mail, hotline) that are
    /// neither masked nor treated as invented PII in drafts.
    pub public_values: Vec<String>,
    /// What to do when a draft holds PII the vault never issued.
    #[serde(default = "default_unissued_action")]
    pub unissued_pii_action: Action,
    /// Hosts a draft may link to or show images from (each with its subdomains); a draft
    /// with a link to any other host is handed to a person. Empty by default: the tenant adds
    /// its own site.
    pub link_hosts: Vec<String>,
    /// Kinds of hand-off (`low_confidence`, `no_knowledge`, `provider_error`, `guardrail`...)
    /// after which the customer is not told that a person will reply. Empty by default: every
    /// hand-off is announced.
    pub quiet_handoffs: BTreeSet<String>,
}

impl Default for TenantOptions {
    fn default() -> Self {
        TenantOptions {
            pii_types: None,
            packs: None,
            max_output_chars: None,
            forbidden_commitments: Vec::new(),
            safe_replies: BTreeMap::new(),
            public_values: Vec::new(),
            unissued_pii_action: default_unissued_action(),
            link_hosts: Vec::new(),
            quiet_handoffs: BTreeSet::new(),
        }
    }
}

impl TenantOptions {
    /// The types of the floor that `pii_types` leaves out: what a tenant asked not to mask
    /// but cannot have (AGT-2).
    pub fn unmasked_mandatory(&self) -> Vec<PiiType> {
        match &self.pii_types {
            None => Vec::new(),
            Some(types) => PiiType::MANDATORY
                .into_iter()
                .filter(|t| !types.contains(t))
                .collect(),
        }
    }
}

/// A tenant's whole guardrail configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    pub rules: Vec<Rule>,
    pub options: TenantOptions,
}

/// The built-in pack a tenant cannot turn off: it hears customers asking for a person to
/// review a decision, which is their right (AGT-7), not a tenant option.
pub const REQUIRED_PACK: &str = "human_review";

/// Longest tenant safe reply, in characters, in any language.
const MAX_SAFE_REPLY_CHARS: usize = 1000;

/// Rule id of the synthesised forbidden-commitment rule.
pub const COMMITMENT_RULE: &str = "tenant.forbidden-commitment";
/// Safe-reply keys of the engine's own checks.
pub const KEY_COMMITMENT: &str = "forbidden_commitment";

/// Default wording of the replies the engine's own checks ask for.
fn engine_reply(key: &str, lang: Lang) -> Option<&'static str> {
    let texts: [&str; 4] = match key {
        "handoff" | KEY_COMMITMENT => [
            "Thanks for your patience: a colleague will pick up this conversation shortly.",
            "Obrigado pela paciência: um colega vai continuar este atendimento em instantes.",
            "Gracias por tu paciencia: un compañero continuará esta conversación en breve.",
            "Danke für Ihre Geduld: Eine Kollegin oder ein Kollege übernimmt das Gespräch in Kürze.",
        ],
        _ => return None,
    };
    Some(lang.pick(texts))
}

/// A compiled policy: what [`crate::guardrails::evaluate`] applies.
#[derive(Debug)]
pub struct Policy {
    packs: Arc<PackSet>,
    pack_enabled: Vec<bool>,
    /// Whether any enabled pack rule applies at [Inbound, Outbound]: lets a
    /// policy without packs for a stage skip the scan entirely.
    packs_apply: [bool; 2],
    tenant: CompiledRules,
    pii_enabled: [bool; PiiType::ALL.len()],
    /// `public_values` reduced to lowercase alphanumerics.
    public: BTreeSet<String>,
    link_hosts: LinkHosts,
    options: TenantOptions,
}

/// Lowercase alphanumerics only: how public values are compared.
pub(crate) fn public_key(value: &str) -> String {
    value
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

impl Policy {
    /// The built-in packs with default options, compiled once.
    pub fn builtin() -> Arc<Policy> {
        static DEFAULT: LazyLock<Arc<Policy>> = LazyLock::new(|| {
            Arc::new(
                Policy::new(&TenantConfig::default())
                    .unwrap_or_else(|e| panic!("default policy: {e}")),
            )
        });
        DEFAULT.clone()
    }

    /// Built-in packs plus a tenant's configuration.
    pub fn new(config: &TenantConfig) -> Result<Policy, PackError> {
        Policy::with_packs(PackSet::builtin(), config)
    }

    /// A given pack set (e.g. loaded from a directory) plus a tenant's
    /// configuration. Tenant rules are validated with the tenant limits and
    /// their examples checked; their ids must not clash with pack rules.
    pub fn with_packs(packs: Arc<PackSet>, config: &TenantConfig) -> Result<Policy, PackError> {
        let err = |rule: Option<&str>, reason: String| PackError {
            source_name: "tenant".into(),
            rule: rule.map(str::to_string),
            reason,
        };
        let options = &config.options;
        let pack_enabled: Vec<bool> = match &options.packs {
            None => packs.packs.iter().map(|p| !p.template).collect(),
            Some(names) => {
                if let Some(unknown) = names
                    .iter()
                    .find(|n| !packs.packs.iter().any(|p| &p.name == *n))
                {
                    return Err(err(None, format!("unknown pack `{unknown}`")));
                }
                packs
                    .packs
                    .iter()
                    .map(|p| names.contains(&p.name))
                    .collect()
            }
        };
        if config.rules.len() > Limits::TENANT.rules {
            return Err(err(
                None,
                format!(
                    "too many rules ({} > {})",
                    config.rules.len(),
                    Limits::TENANT.rules
                ),
            ));
        }
        if options.quiet_handoffs.len() > 50
            || options.quiet_handoffs.iter().any(|k| {
                k.is_empty()
                    || k.len() > 64
                    || !k.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    })
            })
        {
            return Err(err(
                None,
                "quiet_handoffs holds at most 50 kinds of hand-off, each 1 to 64 of a-z, 0-9, _ and -"
                    .into(),
            ));
        }
        for (key, wording) in &options.safe_replies {
            wording
                .check(&format!("safe_replies.{key}"), MAX_SAFE_REPLY_CHARS)
                .map_err(|reason| err(None, reason.into()))?;
        }
        for rule in &config.rules {
            if packs.rules.rules.iter().any(|r| r.id == rule.id) || rule.id == COMMITMENT_RULE {
                return Err(err(
                    Some(&rule.id),
                    "id is already used by a built-in rule".into(),
                ));
            }
            if let Some(key) = &rule.safe_reply {
                if !options.safe_replies.contains_key(key)
                    && !packs.safe_replies.contains_key(key)
                    && engine_reply(key, Lang::En).is_none()
                {
                    return Err(err(
                        Some(&rule.id),
                        format!("safe_reply `{key}` is not defined"),
                    ));
                }
            }
        }
        let mut rules = config.rules.clone();
        let commitments: Vec<String> = options
            .forbidden_commitments
            .iter()
            .filter(|c| !c.trim().is_empty())
            .cloned()
            .collect();
        if !commitments.is_empty() {
            rules.push(Rule {
                id: COMMITMENT_RULE.into(),
                description: Some("tenant-forbidden commitments in drafts".into()),
                stage: RuleStage::Outbound,
                matcher: Matcher::Phrases(commitments),
                decode: Vec::new(),
                action: Action::Handoff,
                safe_reply: Some(KEY_COMMITMENT.into()),
                must_match: Vec::new(),
                must_not_match: Vec::new(),
            });
        }
        let link_hosts = LinkHosts::new(&options.link_hosts).map_err(|reason| err(None, reason))?;
        // Validated and compiled in one go: each tenant regex is built once.
        let tenant = compile_validated("tenant", &rules, Limits::TENANT)?;
        // The floor (AGT-2): a configuration may leave out only the optional types. One saved
        // before the floor existed, or written behind the API's back, is read with it applied.
        let mut pii_enabled = [true; PiiType::ALL.len()];
        if let Some(types) = &options.pii_types {
            for t in PiiType::ALL {
                pii_enabled[t.index()] = t.is_mandatory() || types.contains(&t);
            }
        }
        let packs_apply = [Stage::Inbound, Stage::Outbound].map(|stage| {
            packs
                .rules
                .rules
                .iter()
                .zip(&packs.rule_pack)
                .any(|(rule, &pack)| pack_enabled[pack] && rule.stage.applies_to(stage))
        });
        Ok(Policy {
            packs,
            pack_enabled,
            packs_apply,
            tenant,
            pii_enabled,
            public: options
                .public_values
                .iter()
                .map(|v| public_key(v))
                .filter(|k| !k.is_empty())
                .collect(),
            link_hosts,
            options: options.clone(),
        })
    }

    pub fn options(&self) -> &TenantOptions {
        &self.options
    }

    pub(crate) fn pii_enabled(&self) -> &[bool; PiiType::ALL.len()] {
        &self.pii_enabled
    }

    /// The PII types this policy masks: the floor ([`PiiType::MANDATORY`]) and the optional
    /// types the tenant kept.
    pub fn masked_pii_types(&self) -> Vec<PiiType> {
        PiiType::ALL
            .into_iter()
            .filter(|t| self.pii_enabled[t.index()])
            .collect()
    }

    /// The same rules with no PII detection at all: for checks whose text never goes to a
    /// model (whether a customer asks for human review), so they skip the detectors' cost.
    pub(crate) fn without_pii(mut self) -> Policy {
        self.pii_enabled = [false; PiiType::ALL.len()];
        self
    }

    /// The hosts drafts may link to.
    pub fn link_hosts(&self) -> &LinkHosts {
        &self.link_hosts
    }

    /// Whether `value` is one of the tenant's own public values.
    pub(crate) fn is_public(&self, value: &str) -> bool {
        if self.public.is_empty() {
            return false;
        }
        let key = public_key(value);
        if self.public.contains(&key) {
            return true;
        }
        // Phones are written with or without country code and trunk prefix.
        let digits = |k: &str| k.len() >= 8 && k.bytes().all(|b| b.is_ascii_digit());
        digits(&key)
            && self.public.iter().any(|p| {
                let (short, long) = if p.len() <= key.len() {
                    (p.as_str(), key.as_str())
                } else {
                    (key.as_str(), p.as_str())
                };
                digits(p)
                    && long.len() - short.len() <= 4
                    && long
                        .trim_start_matches('0')
                        .ends_with(short.trim_start_matches('0'))
            })
    }

    /// Rule matches for `stage`, in original offsets.
    pub(crate) fn rule_hits(
        &self,
        folded: &Folded<'_>,
        stage: Stage,
    ) -> Vec<(&RuleMeta, usize, usize)> {
        let mut hits: Vec<Hit> = Vec::new();
        let packs = &self.packs;
        if self.packs_apply[stage as usize] {
            packs.rules.find(
                folded,
                &|r| {
                    let i = r as usize;
                    self.pack_enabled[packs.rule_pack[i]]
                        && packs.rules.rules[i].stage.applies_to(stage)
                },
                &mut hits,
            );
        }
        let builtin = hits.len();
        if !self.tenant.rules.is_empty() {
            self.tenant.find(
                folded,
                &|r| self.tenant.rules[r as usize].stage.applies_to(stage),
                &mut hits,
            );
        }
        hits.iter()
            .enumerate()
            .map(|(i, h)| {
                let meta = if i < builtin {
                    &packs.rules.rules[h.rule as usize]
                } else {
                    &self.tenant.rules[h.rule as usize]
                };
                (meta, h.start, h.end)
            })
            .collect()
    }

    /// The reply for `key`: the tenant's wording in `lang` (else its English
    /// one), else the pack default in `lang`.
    /// Whether the tenant asked not to announce hand-offs of this kind to the customer.
    pub fn quiet_handoff(&self, kind: &str) -> bool {
        self.options.quiet_handoffs.contains(kind)
    }

    pub fn safe_reply(&self, key: &str, lang: Lang) -> Option<String> {
        self.options
            .safe_replies
            .get(key)
            .and_then(|w| w.get(lang))
            .map(str::to_string)
            .or_else(|| {
                self.packs
                    .safe_replies
                    .get(key)
                    .map(|r| r.get(lang).to_string())
            })
            .or_else(|| engine_reply(key, lang).map(str::to_string))
    }
}

/// Compiled policies per tenant, keyed by tenant id and configuration
/// version: asking with a newer version recompiles, so a configuration change
/// takes effect on the next message without a restart (AGT-3).
#[derive(Debug)]
pub struct PolicyCache<K = String> {
    inner: RwLock<HashMap<K, (u64, Arc<Policy>)>>,
}

impl<K> Default for PolicyCache<K> {
    fn default() -> Self {
        PolicyCache {
            inner: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> PolicyCache<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached policy for this tenant at exactly this version.
    pub fn get(&self, tenant: &K, version: u64) -> Option<Arc<Policy>> {
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        map.get(tenant)
            .filter(|(v, _)| *v == version)
            .map(|(_, p)| p.clone())
    }

    /// The cached policy, or `compile()`'s result cached under this version.
    /// Compilation runs outside the lock; two threads racing on a new version
    /// may both compile, and one result wins.
    pub fn get_or_compile<E>(
        &self,
        tenant: &K,
        version: u64,
        compile: impl FnOnce() -> Result<Policy, E>,
    ) -> Result<Arc<Policy>, E> {
        if let Some(p) = self.get(tenant, version) {
            return Ok(p);
        }
        let policy = Arc::new(compile()?);
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        map.insert(tenant.clone(), (version, policy.clone()));
        Ok(policy)
    }

    /// Drops a tenant's entry (e.g. tenant deleted).
    pub fn invalidate(&self, tenant: &K) {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(tenant);
    }

    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A tenant configuration as the API document states it (`GuardrailConfig`). Stricter than
/// [`Policy::new`] where JSON Schema cannot follow it, so that whatever it describes compiles:
/// phrases and regexes are plain lowercase words (a regex engine reads them as literals), a
/// `safe_reply` names a reply the built-in packs or the engine define, and no examples
/// (`must_match`, `must_not_match`) are listed, as a schema cannot say which texts a rule
/// matches. The server takes all of those too, and checks them. Two rules with one id conflict
/// (409 `duplicate_rule_id`).
impl utoipa::PartialSchema for TenantConfig {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::http::contract::raw_schema(config_schema(&PackSet::builtin()))
    }
}

impl utoipa::ToSchema for TenantConfig {
    fn name() -> std::borrow::Cow<'static, str> {
        "GuardrailConfig".into()
    }
}

fn config_schema(packs: &PackSet) -> serde_json::Value {
    use serde_json::json;
    let words = "^[a-z0-9]+( [a-z0-9]+)*$";
    let builtin_ids: Vec<&str> = packs
        .rules
        .rules
        .iter()
        .map(|r| r.id.as_str())
        .chain([COMMITMENT_RULE])
        .collect();
    let mut reply_keys: Vec<&str> = packs.safe_replies.keys().map(String::as_str).collect();
    reply_keys.extend(["handoff", KEY_COMMITMENT]);
    reply_keys.sort_unstable();
    let pack_names: Vec<&str> = packs.packs.iter().map(|p| p.name.as_str()).collect();
    let pii_types: Vec<&str> = PiiType::ALL.iter().map(|t| t.label()).collect();
    let mandatory: Vec<serde_json::Value> = PiiType::MANDATORY
        .iter()
        .map(|t| json!({ "contains": { "const": t.label() } }))
        .collect();
    let actions = ["allow", "flag", "redact", "block", "handoff"];
    let text = json!({ "type": "string", "minLength": 1, "maxLength": MAX_SAFE_REPLY_CHARS,
                       "pattern": crate::http::contract::NOT_BLANK });
    let wording = json!({
        "description": "One text for every language, or texts by language (at least one).",
        "oneOf": [
            text,
            { "type": "object", "additionalProperties": false, "minProperties": 1,
              "properties": { "en": text, "pt": text, "es": text, "de": text } }
        ]
    });
    let no_examples = json!({
        "type": "array", "maxItems": 0,
        "description": "Texts the rule must (not) match, checked when the configuration is \
                        saved. The server takes them; this document lists none, as a schema \
                        cannot say which texts a rule matches."
    });
    let rule = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["id", "stage", "action"],
        "properties": {
            "id": { "type": "string", "pattern": "^[a-z0-9._-]{1,100}$",
                    "not": { "enum": builtin_ids },
                    "description": "Unique in the configuration; not the id of a built-in rule." },
            "description": { "type": ["string", "null"], "maxLength": 1000 },
            "stage": { "type": "string", "enum": ["inbound", "outbound", "both"] },
            "phrases": { "type": "array", "minItems": 1, "maxItems": 100,
                         "items": { "type": "string", "maxLength": Limits::TENANT.phrase_len, "pattern": words },
                         "description": "Any of these phrases, on word boundaries, case- and \
                                         accent-insensitive; or `regex`." },
            "regex": { "type": "string", "maxLength": Limits::TENANT.pattern_len, "pattern": words,
                       "description": "A regular expression over the folded text; or `phrases`." },
            "decode": { "type": "array", "items": { "type": "string", "enum": ["base64", "hex", "url"] } },
            "action": { "type": "string", "enum": ["flag", "redact", "block", "handoff"] },
            "safe_reply": { "type": "string", "enum": reply_keys,
                            "description": "The reply a `block` answers with (required then)." },
            "must_match": no_examples,
            "must_not_match": no_examples,
        },
        "oneOf": [{ "required": ["phrases"] }, { "required": ["regex"] }],
        "if": { "properties": { "action": { "const": "block" } } },
        "then": { "required": ["safe_reply"] },
    });
    let list =
        |items: serde_json::Value| json!({ "type": "array", "maxItems": 100, "items": items });
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": "A tenant's guardrails: its own rules, and options over the built-in packs.",
        "properties": {
            "rules": { "type": "array", "maxItems": Limits::TENANT.rules, "items": rule },
            "options": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "pii_types": { "type": ["array", "null"], "items": { "type": "string", "enum": pii_types },
                                   "allOf": mandatory,
                                   "description": "PII types to mask; every type when absent or null. \
                                                   Always includes the types no tenant may turn off \
                                                   (structured identifiers, e-mails, phones, secrets, \
                                                   URLs carrying them, names): leaving one out is refused \
                                                   (`pii_type_mandatory`)." },
                    "packs": { "type": ["array", "null"], "items": { "type": "string", "enum": pack_names },
                               "contains": { "const": REQUIRED_PACK },
                               "description": "Built-in packs to apply (always `human_review`); \
                                               every pack but the templates when absent or null." },
                    "max_output_chars": { "type": ["integer", "null"], "minimum": 0,
                                          "description": "Longest draft, in characters." },
                    "forbidden_commitments": list(json!({ "type": "string", "maxLength": Limits::TENANT.phrase_len })),
                    "safe_replies": { "type": "object", "maxProperties": 100,
                                      "propertyNames": { "type": "string", "pattern": "^[a-z0-9._-]{1,100}$" },
                                      "additionalProperties": wording },
                    "public_values": list(json!({ "type": "string", "maxLength": 1000 })),
                    "link_hosts": {
                        "type": "array", "maxItems": 100,
                        "items": { "type": "string", "maxLength": 253,
                                   "pattern": "^(\\*\\.)?[a-z0-9_-]{1,63}(\\.[a-z0-9_-]{1,63})*$" },
                        "description": "Hosts a draft may link to or show images from, each with \
                                        its subdomains (`shop.example`); a draft linking anywhere \
                                        else goes to a person. Empty by default."
                    },
                    "quiet_handoffs": {
                        "type": "array", "maxItems": 50, "uniqueItems": true,
                        "items": { "type": "string", "pattern": "^[a-z0-9_-]{1,64}$" },
                        "description": "Kinds of hand-off (`low_confidence`, `no_knowledge`, \
                                        `provider_error`, `guardrail`...) after which the customer \
                                        is not told that a person will reply; every hand-off is \
                                        announced by default (wording: safe reply \
                                        `handoff.<kind>`, else `handoff`)."
                    },
                    "unissued_pii_action": { "type": "string", "enum": actions },
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compiles(config: serde_json::Value) -> Result<Policy, String> {
        let config: TenantConfig = serde_json::from_value(config).map_err(|e| e.to_string())?;
        Policy::new(&config).map_err(|e| e.to_string())
    }

    /// The document's lists are the server's: each reply key it offers lets a `block` rule
    /// compile, each pack it names exists, and each id it rules out is refused.
    #[test]
    fn what_the_configuration_schema_offers_compiles_and_what_it_rules_out_does_not() {
        let packs = PackSet::builtin();
        let schema = config_schema(&packs);
        let rule = &schema["properties"]["rules"]["items"];
        for key in rule["properties"]["safe_reply"]["enum"].as_array().unwrap() {
            let config = json!({ "rules": [{ "id": "t.one", "stage": "both", "regex": "refund now",
                "action": "block", "safe_reply": key }] });
            assert!(compiles(config).is_ok(), "{key}");
        }
        let names = &schema["properties"]["options"]["properties"]["packs"]["items"]["enum"];
        assert!(compiles(json!({ "options": { "packs": names } })).is_ok());
        for id in rule["properties"]["id"]["not"]["enum"].as_array().unwrap() {
            let config = json!({ "rules": [{ "id": id, "stage": "inbound", "phrases": ["x"],
                "action": "flag" }] });
            assert!(compiles(config).is_err(), "{id}");
        }
        let types = &schema["properties"]["options"]["properties"]["pii_types"]["items"]["enum"];
        assert!(compiles(json!({ "options": { "pii_types": types } })).is_ok());
    }
}
