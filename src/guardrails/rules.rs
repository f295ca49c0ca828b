//! Rules and rule packs: the data side of the guardrails.
//!
//! A rule is data (TOML in `guardrails/*.toml` for the built-in packs, JSON
//! for tenant rules stored in the database) and is parsed into domain types
//! at the edge: a rule that deserialises has a valid id, exactly one
//! non-empty matcher and a safe reply where its action needs one. Packs are
//! then compiled (regexes under size limits) and every rule's `must_match` /
//! `must_not_match` example is checked, so a bad pack fails at load with its
//! file, rule id and reason.
//!
//! Matching happens on folded text (see [`crate::guardrails::fold`]): phrases
//! are folded the same way and must sit on word boundaries; regexes are
//! applied case-insensitively to the folded text, so they should be written
//! without accents and treat any whitespace run as a single space. German
//! umlauts are the exception: write them (`kündigen`, `führe`), and the
//! phrase or regex also matches the `ue`/`oe`/`ae` spelling ("kuendigen")
//! besides the folded one ("kundigen").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};

use crate::guardrails::fold::{self, Folded};

/// Where a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleStage {
    /// Customer messages and anything else sent to the model.
    Inbound,
    /// The model's draft before it reaches the customer.
    Outbound,
    Both,
}

/// The stage a text is evaluated at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Inbound,
    Outbound,
}

impl RuleStage {
    pub fn applies_to(self, stage: Stage) -> bool {
        matches!(
            (self, stage),
            (RuleStage::Both, _)
                | (RuleStage::Inbound, Stage::Inbound)
                | (RuleStage::Outbound, Stage::Outbound)
        )
    }
}

/// What happens when a rule matches, from mildest to most severe. A verdict
/// takes the most severe action among its findings.
///
/// `Handoff` ranks above `Block`: when a message is both, say, a legal
/// question and a self-harm signal, a person must see it; a canned reply is
/// not enough.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Default,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[schema(as = GuardrailAction)]
pub enum Action {
    /// Nothing found.
    #[default]
    Allow,
    /// Go ahead, but record the finding.
    Flag,
    /// Go ahead with the masked/redacted text.
    Redact,
    /// Do not send; answer with the safe reply.
    Block,
    /// Do not send; hand the conversation to a human.
    Handoff,
}

impl Action {
    /// Whether the text may go on (to the model inbound, to the customer
    /// outbound), in its masked form.
    pub fn proceeds(self) -> bool {
        self <= Action::Redact
    }
}

/// Encodings a rule also looks inside (base64 blobs, hex dumps, %-escapes),
/// so that an instruction cannot be smuggled past it encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Base64,
    Hex,
    Url,
}

/// How a rule recognises text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Any of these phrases, on word boundaries, case- and accent-insensitive.
    Phrases(Vec<String>),
    /// A regular expression over the folded text.
    Regex(String),
}

/// One rule, built-in or tenant-defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RuleSpec", into = "RuleSpec")]
pub struct Rule {
    pub id: String,
    pub description: Option<String>,
    pub stage: RuleStage,
    pub matcher: Matcher,
    pub decode: Vec<Encoding>,
    pub action: Action,
    /// Key of the reply sent instead (tenant options or pack defaults).
    pub safe_reply: Option<String>,
    pub must_match: Vec<String>,
    pub must_not_match: Vec<String>,
}

/// The wire shape of a [`Rule`] (TOML table or JSON object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub stage: RuleStage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phrases: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decode: Vec<Encoding>,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_reply: Option<String>,
    #[serde(default)]
    pub must_match: Vec<String>,
    #[serde(default)]
    pub must_not_match: Vec<String>,
}

impl TryFrom<RuleSpec> for Rule {
    type Error = String;

    fn try_from(s: RuleSpec) -> Result<Self, Self::Error> {
        let valid_id = !s.id.is_empty()
            && s.id.len() <= 100
            && s.id.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            });
        if !valid_id {
            return Err(format!(
                "rule `{}`: id must be 1-100 characters of a-z, 0-9, `.`, `-`, `_`",
                s.id
            ));
        }
        let matcher = match (s.phrases, s.regex) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "rule `{}`: has both `phrases` and `regex`; use one",
                    s.id
                ))
            }
            (None, None) => {
                return Err(format!(
                    "rule `{}`: empty matcher (needs `phrases` or `regex`)",
                    s.id
                ))
            }
            (Some(p), None) => {
                if p.is_empty() {
                    return Err(format!(
                        "rule `{}`: empty matcher (`phrases` is empty)",
                        s.id
                    ));
                }
                if let Some(bad) = p.iter().find(|p| fold::fold_str(p).trim().is_empty()) {
                    return Err(format!("rule `{}`: blank phrase {bad:?}", s.id));
                }
                Matcher::Phrases(p)
            }
            (None, Some(r)) => {
                if r.trim().is_empty() {
                    return Err(format!("rule `{}`: empty matcher (`regex` is empty)", s.id));
                }
                Matcher::Regex(r)
            }
        };
        // A blocked text is answered with the safe reply, so it must name one.
        // (Pack rules need one whatever their action, see `RulePack::from_toml`;
        // a tenant's handoff rule without one gets the engine's hand-off
        // wording, which keeps configurations stored before this rule valid.)
        if matches!(s.action, Action::Block) && s.safe_reply.is_none() {
            return Err(format!(
                "rule `{}`: action `block` needs a `safe_reply` key",
                s.id
            ));
        }
        if s.action == Action::Allow {
            return Err(format!(
                "rule `{}`: action `allow` does nothing; use flag, redact, block or handoff",
                s.id
            ));
        }
        Ok(Rule {
            id: s.id,
            description: s.description,
            stage: s.stage,
            matcher,
            decode: s.decode,
            action: s.action,
            safe_reply: s.safe_reply,
            must_match: s.must_match,
            must_not_match: s.must_not_match,
        })
    }
}

impl From<Rule> for RuleSpec {
    fn from(r: Rule) -> Self {
        let (phrases, regex) = match r.matcher {
            Matcher::Phrases(p) => (Some(p), None),
            Matcher::Regex(x) => (None, Some(x)),
        };
        RuleSpec {
            id: r.id,
            description: r.description,
            stage: r.stage,
            phrases,
            regex,
            decode: r.decode,
            action: r.action,
            safe_reply: r.safe_reply,
            must_match: r.must_match,
            must_not_match: r.must_not_match,
        }
    }
}

/// Default safe replies per language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafeReply {
    pub en: String,
    pub pt: String,
    pub es: String,
    pub de: String,
}

/// The languages our customers write in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    En,
    Pt,
    Es,
    De,
}

impl SafeReply {
    pub fn get(&self, lang: Lang) -> &str {
        lang.pick([&self.en, &self.pt, &self.es, &self.de])
    }
}

/// A loaded, validated rule pack.
#[derive(Debug, Clone, PartialEq)]
pub struct RulePack {
    /// Where the pack was read from (the file name given to
    /// [`RulePack::from_toml`]), so errors across packs can name the file.
    pub source: String,
    pub name: String,
    pub description: String,
    /// Templates (e.g. competitor names) are off unless a tenant enables them.
    pub template: bool,
    pub safe_replies: BTreeMap<String, SafeReply>,
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackHeader {
    name: String,
    description: String,
    #[serde(default)]
    template: bool,
    #[serde(default)]
    safe_replies: BTreeMap<String, SafeReply>,
    #[serde(default)]
    rule: Vec<toml::Value>,
}

/// Why a pack or a tenant rule set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PackError {
    /// The file (or `tenant:<id>` for tenant rules).
    pub source_name: String,
    pub rule: Option<String>,
    pub reason: String,
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Some(rule) => write!(f, "{}: rule `{}`: {}", self.source_name, rule, self.reason),
            None => write!(f, "{}: {}", self.source_name, self.reason),
        }
    }
}

impl PackError {
    fn new(source_name: &str, rule: Option<&str>, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        // Serde messages from TryFrom already name the rule; do not say it twice.
        let reason = match rule {
            Some(r) => reason
                .strip_prefix(&format!("rule `{r}`: "))
                .map(str::to_string)
                .unwrap_or(reason),
            None => reason,
        };
        PackError {
            source_name: source_name.to_string(),
            rule: rule.map(str::to_string),
            reason,
        }
    }
}

/// Size limits for compiling rules. Tenant rules get the tight ones: an
/// oversized regex is refused instead of costing every message memory and time.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub regex_size: usize,
    pub dfa_size: usize,
    pub pattern_len: usize,
    pub phrases: usize,
    pub phrase_len: usize,
    pub rules: usize,
}

impl Limits {
    pub const BUILTIN: Limits = Limits {
        regex_size: 4 << 20,
        dfa_size: 8 << 20,
        pattern_len: 4096,
        phrases: 10_000,
        phrase_len: 300,
        rules: 1000,
    };
    pub const TENANT: Limits = Limits {
        regex_size: 256 << 10,
        dfa_size: 1 << 20,
        pattern_len: 1000,
        phrases: 2000,
        phrase_len: 200,
        rules: 200,
    };
}

impl RulePack {
    /// Parses and validates a pack from TOML; `source_name` names it in errors.
    pub fn from_toml(source_name: &str, src: &str) -> Result<RulePack, PackError> {
        let header: PackHeader =
            toml::from_str(src).map_err(|e| PackError::new(source_name, None, e.to_string()))?;
        let mut rules = Vec::with_capacity(header.rule.len());
        for value in header.rule {
            let id = value.get("id").and_then(|v| v.as_str()).map(str::to_string);
            let rule: Rule = value.try_into().map_err(|e: toml::de::Error| {
                PackError::new(source_name, id.as_deref(), e.message().to_string())
            })?;
            rules.push(rule);
        }
        let pack = RulePack {
            source: source_name.to_string(),
            name: header.name,
            description: header.description,
            template: header.template,
            safe_replies: header.safe_replies,
            rules,
        };
        // Every pack rule names its reply, whatever its action: the issue's
        // rule structure has one for every rule, and a pack is also a
        // template tenants copy (the competitor names) and escalate from
        // `flag` to `block`, which then needs the reply at hand.
        for rule in &pack.rules {
            let Some(key) = &rule.safe_reply else {
                return Err(PackError::new(
                    source_name,
                    Some(&rule.id),
                    "missing `safe_reply` key (every pack rule needs one)",
                ));
            };
            if !pack.safe_replies.contains_key(key) {
                return Err(PackError::new(
                    source_name,
                    Some(&rule.id),
                    format!("safe_reply `{key}` is not defined in this pack"),
                ));
            }
        }
        validate_rules(source_name, &pack.rules, Limits::BUILTIN)?;
        Ok(pack)
    }

    /// Loads every `*.toml` in `dir`, sorted by file name.
    pub fn load_dir(dir: &std::path::Path) -> Result<Vec<RulePack>, PackError> {
        let name = dir.display().to_string();
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| PackError::new(&name, None, e.to_string()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let packs = files
            .iter()
            .map(|path| {
                let file = path.display().to_string();
                let src = std::fs::read_to_string(path)
                    .map_err(|e| PackError::new(&file, None, e.to_string()))?;
                RulePack::from_toml(&file, &src)
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_unique_ids(&packs)?;
        Ok(packs)
    }
}

/// Rule ids and safe-reply keys must be unique across every pack loaded
/// together: a second definition would silently shadow the first. The error
/// names the file of the second definition and the file of the first.
pub fn check_unique_ids(packs: &[RulePack]) -> Result<(), PackError> {
    let mut ids: HashMap<&str, &str> = HashMap::new();
    let mut keys: HashMap<&str, &str> = HashMap::new();
    for pack in packs {
        for rule in &pack.rules {
            if let Some(first) = ids.insert(&rule.id, &pack.source) {
                return Err(PackError::new(
                    &pack.source,
                    Some(&rule.id),
                    format!("duplicate rule id (first defined in {first})"),
                ));
            }
        }
        for key in pack.safe_replies.keys() {
            if let Some(first) = keys.insert(key, &pack.source) {
                return Err(PackError::new(
                    &pack.source,
                    None,
                    format!("duplicate safe_reply key `{key}` (first defined in {first})"),
                ));
            }
        }
    }
    Ok(())
}

/// Parses tenant rules from JSON (an array of rule objects) and validates
/// them like a pack, with the tenant limits.
pub fn tenant_rules_from_json(source_name: &str, json: &str) -> Result<Vec<Rule>, PackError> {
    let values: Vec<serde_json::Value> =
        serde_json::from_str(json).map_err(|e| PackError::new(source_name, None, e.to_string()))?;
    let rules = values
        .into_iter()
        .map(|v| {
            let id = v.get("id").and_then(|x| x.as_str()).map(str::to_string);
            serde_json::from_value::<Rule>(v)
                .map_err(|e| PackError::new(source_name, id.as_deref(), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    validate_rules(source_name, &rules, Limits::TENANT)?;
    Ok(rules)
}

/// Checks ids are unique, each rule compiles within `limits`, and each rule
/// matches all its `must_match` examples and none of its `must_not_match`.
pub fn validate_rules(source_name: &str, rules: &[Rule], limits: Limits) -> Result<(), PackError> {
    if rules.len() > limits.rules {
        return Err(PackError::new(
            source_name,
            None,
            format!("too many rules ({} > {})", rules.len(), limits.rules),
        ));
    }
    compile_validated(source_name, rules, limits).map(|_| ())
}

/// Compiles `rules` once, as the set they will run in, and checks ids and
/// examples against that compiled set: each regex is built once, not once
/// to validate and again to run (tenant policies are compiled on every
/// configuration change). Errors name the rule.
pub(crate) fn compile_validated(
    source_name: &str,
    rules: &[Rule],
    limits: Limits,
) -> Result<CompiledRules, PackError> {
    let mut seen = HashSet::new();
    for rule in rules {
        if !seen.insert(rule.id.as_str()) {
            return Err(PackError::new(
                source_name,
                Some(&rule.id),
                "duplicate rule id",
            ));
        }
    }
    let compiled = CompiledRules::compile_rules(rules, limits).map_err(|(at, reason)| {
        PackError::new(source_name, at.map(|i| rules[i].id.as_str()), reason)
    })?;
    let mut hits = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let only = |r: u32| r as usize == i;
        let mut matches = |example: &str| {
            hits.clear();
            compiled.find(&Folded::new(example), &only, &mut hits);
            !hits.is_empty()
        };
        if let Some(example) = rule.must_match.iter().find(|e| !matches(e)) {
            return Err(PackError::new(
                source_name,
                Some(&rule.id),
                format!("must_match example does not match: {example:?}"),
            ));
        }
        if let Some(example) = rule.must_not_match.iter().find(|e| matches(e)) {
            return Err(PackError::new(
                source_name,
                Some(&rule.id),
                format!("must_not_match example matches: {example:?}"),
            ));
        }
    }
    Ok(compiled)
}

/// Per-rule facts needed at match time.
#[derive(Debug, Clone)]
pub(crate) struct RuleMeta {
    pub id: String,
    pub stage: RuleStage,
    pub action: Action,
    pub safe_reply: Option<String>,
    pub decode: Vec<Encoding>,
}

#[derive(Debug, Clone, Copy)]
struct PhraseOwner {
    rule: u32,
    start_boundary: bool,
    end_boundary: bool,
}

/// A rule match, in original-text byte offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub rule: u32,
    pub start: usize,
    pub end: usize,
}

/// A set of rules compiled into one Aho-Corasick automaton (all phrases) and
/// one `RegexSet` (all regexes), so a message is scanned once per kind of
/// matcher however many rules there are.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRules {
    pub rules: Vec<RuleMeta>,
    phrases: Option<AhoCorasick>,
    owners: Vec<PhraseOwner>,
    regex_set: Option<RegexSet>,
    regexes: Vec<(u32, Regex)>,
    any_decode: bool,
}

/// Folds the non-ASCII characters of a pattern, leaving ASCII (and so every
/// escape such as `\D`, `\W`, `\B`) untouched, and makes word boundaries
/// ASCII ones. A German umlaut outside a character class becomes a group
/// matching both spellings, `ü` → `(?:u|ue)`, so `führe` matches "fuhre"
/// and "fuehre" (see [`fold::umlaut_spelling`]); inside a class it folds to
/// its vowel, as a class holds single characters.
///
/// Why ASCII boundaries: the regex crate's lazy DFA cannot evaluate a Unicode
/// `\b` on non-ASCII input and falls back to a far slower engine. Folded
/// text of our four languages is ASCII apart from punctuation such as `¿`,
/// which is no word character either way.
fn fold_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    // Nesting depth of character classes (`[a[bc]]`, `[[:alpha:]]`).
    let mut class_depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('b') if class_depth == 0 => out.push_str("(?-u:\\b)"),
                Some('B') if class_depth == 0 => out.push_str("(?-u:\\B)"),
                Some(next) => {
                    out.push('\\');
                    if next.is_ascii() {
                        out.push(next);
                    } else {
                        fold::fold_char(next, &mut out);
                    }
                }
                None => out.push('\\'),
            },
            '[' => {
                out.push('[');
                class_depth += 1;
                // A `]` right after `[` or `[^` is a literal member.
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('^');
                }
                if chars.peek() == Some(&']') {
                    chars.next();
                    out.push(']');
                }
            }
            ']' if class_depth > 0 => {
                out.push(']');
                class_depth -= 1;
            }
            c if c.is_ascii() => out.push(c),
            c => match fold::umlaut_expansion(c) {
                Some(two) if class_depth == 0 => {
                    let vowel = &two[..1].to_ascii_lowercase();
                    out.push_str("(?:");
                    out.push_str(vowel);
                    out.push('|');
                    out.push_str(&two.to_ascii_lowercase());
                    out.push(')');
                }
                _ => fold::fold_char(c, &mut out),
            },
        }
    }
    out
}

/// Most matches one regex reports per text. The regex crate documents a
/// worst case of O(m·n²) for iterating over every match (each search may
/// scan to the end of the text to settle a leftmost match and the next
/// starts one character later), so an unbounded `find_iter` over an
/// adversarial text is quadratic; a cap keeps it at `MAX·n`. Past the cap a
/// `redact` rule hides the rest of the text, so capping never leaks.
pub(crate) const MAX_MATCHES_PER_REGEX: usize = 32;

impl CompiledRules {
    /// Compiles rules gathered from several packs; an error names `source_name` and the rule.
    pub fn compile(
        source_name: &str,
        rules: &[Rule],
        limits: Limits,
    ) -> Result<CompiledRules, PackError> {
        Self::compile_rules(rules, limits).map_err(|(at, reason)| PackError {
            source_name: source_name.into(),
            rule: None,
            reason: match at {
                Some(i) => format!("rule `{}`: {reason}", rules[i].id),
                None => reason,
            },
        })
    }

    /// Compiles every rule once; an error carries the index of the rule at
    /// fault when there is one.
    fn compile_rules(
        rules: &[Rule],
        limits: Limits,
    ) -> Result<CompiledRules, (Option<usize>, String)> {
        let mut patterns = Vec::new();
        let mut owners = Vec::new();
        let mut regex_sources = Vec::new();
        let mut regexes = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let idx = u32::try_from(i).map_err(|_| (None, "too many rules".to_string()))?;
            let fail = |reason: String| (Some(i), reason);
            match &rule.matcher {
                Matcher::Phrases(phrases) => {
                    if phrases.len() > limits.phrases {
                        return Err(fail(format!(
                            "too many phrases ({} > {})",
                            phrases.len(),
                            limits.phrases
                        )));
                    }
                    for p in phrases {
                        if p.chars().count() > limits.phrase_len {
                            return Err(fail(format!(
                                "phrase longer than {} characters",
                                limits.phrase_len
                            )));
                        }
                        let spellings = std::iter::once(p.trim().to_string())
                            .chain(fold::umlaut_spelling(p.trim()));
                        for spelling in spellings {
                            let folded = fold::fold_str(&spelling);
                            owners.push(PhraseOwner {
                                rule: idx,
                                start_boundary: folded
                                    .chars()
                                    .next()
                                    .is_some_and(fold::is_word_char),
                                end_boundary: folded
                                    .chars()
                                    .next_back()
                                    .is_some_and(fold::is_word_char),
                            });
                            patterns.push(folded);
                        }
                    }
                }
                Matcher::Regex(source) => {
                    if source.chars().count() > limits.pattern_len {
                        return Err(fail(format!(
                            "regex longer than {} characters",
                            limits.pattern_len
                        )));
                    }
                    let folded = fold_pattern(source);
                    let re = RegexBuilder::new(&folded)
                        .case_insensitive(true)
                        .size_limit(limits.regex_size)
                        .dfa_size_limit(limits.dfa_size)
                        .build()
                        .map_err(|e| fail(format!("invalid regex: {e}")))?;
                    regexes.push((idx, re));
                    regex_sources.push(folded);
                }
            }
        }
        let phrases = if patterns.is_empty() {
            None
        } else {
            // Standard semantics so overlapping matches are all reported: a
            // phrase failing its word-boundary check must not hide another.
            // A DFA without prefilter: messages are short, and a prefilter's
            // set-up costs more than it saves on a hundred bytes.
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::DFA))
                    .prefilter(false)
                    .build(&patterns)
                    .map_err(|e| (None, format!("phrases do not compile: {e}")))?,
            )
        };
        let regex_set = if regex_sources.is_empty() {
            None
        } else {
            Some(
                RegexSetBuilder::new(&regex_sources)
                    .case_insensitive(true)
                    .size_limit(limits.regex_size.saturating_mul(regex_sources.len()))
                    .dfa_size_limit(limits.dfa_size.saturating_mul(2))
                    .build()
                    .map_err(|e| (None, format!("invalid regex: {e}")))?,
            )
        };
        Ok(CompiledRules {
            rules: rules
                .iter()
                .map(|r| RuleMeta {
                    id: r.id.clone(),
                    stage: r.stage,
                    action: r.action,
                    safe_reply: r.safe_reply.clone(),
                    decode: r.decode.clone(),
                })
                .collect(),
            phrases,
            owners,
            regex_set,
            regexes,
            any_decode: rules.iter().any(|r| !r.decode.is_empty()),
        })
    }

    /// Runs every accepted rule over folded text `f`, reporting folded offsets.
    fn scan_folded(
        &self,
        f: &str,
        accept: &dyn Fn(u32) -> bool,
        emit: &mut dyn FnMut(u32, usize, usize),
    ) {
        if let Some(ac) = &self.phrases {
            for m in ac.find_overlapping_iter(f) {
                let owner = self.owners[m.pattern().as_usize()];
                if !accept(owner.rule) {
                    continue;
                }
                if (owner.start_boundary && !fold::boundary_before(f, m.start()))
                    || (owner.end_boundary && !fold::boundary_after(f, m.end()))
                {
                    continue;
                }
                emit(owner.rule, m.start(), m.end());
            }
        }
        if let Some(set) = &self.regex_set {
            if !set.is_match(f) {
                return;
            }
            for i in set.matches(f).iter() {
                let (rule, re) = &self.regexes[i];
                if !accept(*rule) {
                    continue;
                }
                for (n, m) in re.find_iter(f).enumerate() {
                    if n == MAX_MATCHES_PER_REGEX {
                        if self.rules[*rule as usize].action == Action::Redact {
                            emit(*rule, m.start(), f.len());
                        }
                        break;
                    }
                    emit(*rule, m.start(), m.end());
                }
            }
        }
    }

    /// Every match of the accepted rules in `folded`, in original offsets,
    /// including matches inside encoded payloads for rules that decode.
    pub fn find(&self, folded: &Folded<'_>, accept: &dyn Fn(u32) -> bool, out: &mut Vec<Hit>) {
        let before = out.len();
        self.scan_folded(folded.as_str(), accept, &mut |rule, s, e| {
            let (start, end) = folded.original_range(s, e);
            out.push(Hit { rule, start, end });
        });
        if self.any_decode {
            let decoders = |rule: u32, enc: Encoding| {
                accept(rule) && self.rules[rule as usize].decode.contains(&enc)
            };
            for payload in crate::guardrails::decode::payloads(folded.original()) {
                let inner = Folded::new(&payload.decoded);
                let accept_inner = |rule: u32| decoders(rule, payload.encoding);
                self.scan_folded(inner.as_str(), &accept_inner, &mut |rule, _, _| {
                    out.push(Hit {
                        rule,
                        start: payload.start,
                        end: payload.end,
                    });
                });
            }
        }
        // One finding per rule and span.
        let found = &mut out[before..];
        found.sort_by_key(|h| (h.start, h.end, h.rule));
        let mut kept = before;
        for i in before..out.len() {
            if kept == before || out[kept - 1] != out[i] {
                out[kept] = out[i];
                kept += 1;
            }
        }
        out.truncate(kept);
    }

    /// Whether any rule matches `text`.
    #[cfg(test)]
    pub fn matches_any(&self, text: &str) -> bool {
        let mut hits = Vec::new();
        self.find(&Folded::new(text), &|_| true, &mut hits);
        !hits.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(phrases: &[&str]) -> Rule {
        Rule {
            id: "t.r".into(),
            description: None,
            stage: RuleStage::Both,
            matcher: Matcher::Phrases(phrases.iter().map(|s| s.to_string()).collect()),
            decode: vec![],
            action: Action::Flag,
            safe_reply: None,
            must_match: vec![],
            must_not_match: vec![],
        }
    }

    #[test]
    fn phrases_match_on_word_boundaries_only() {
        let c = CompiledRules::compile("test", &[rule(&["sue"])], Limits::BUILTIN).unwrap();
        assert!(c.matches_any("I will SUE you"));
        assert!(!c.matches_any("I will pursue this"));
    }

    #[test]
    fn accents_and_case_do_not_matter() {
        let c =
            CompiledRules::compile("test", &[rule(&["ação judicial"])], Limits::BUILTIN).unwrap();
        assert!(c.matches_any("vou entrar com uma ACAO   JUDICIAL"));
    }

    #[test]
    fn umlauts_in_patterns_match_both_spellings_outside_classes_only() {
        assert_eq!(fold_pattern(r"\bführe\b"), r"(?-u:\b)f(?:u|ue)hre(?-u:\b)");
        assert_eq!(fold_pattern("[äöü]+x"), "[aou]+x");
        assert_eq!(fold_pattern(r"[\]ä]ö"), r"[\]a](?:o|oe)");
        assert_eq!(fold_pattern("[]ä]Ü"), "[]a](?:u|ue)");
    }
}
