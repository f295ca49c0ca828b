//! PII detectors. Each returns byte spans of the original text, a type and a
//! score; [`detect`] runs them all and resolves overlaps deterministically.
//!
//! The detectors are hand-written scanners over bytes rather than a stack of
//! regexes: every one of them visits each byte a bounded number of times, so
//! the whole pass is linear in the input, and validation (Luhn, mod 97, check
//! digits, numbering plans) only runs on the few candidates that survive.

mod checks;
mod names;
mod numeric;
mod phone;
mod tokens;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use serde::{Deserialize, Serialize};

use crate::guardrails::fold::{self, Folded};

pub use checks::{cnpj_is_valid, cpf_is_valid, iban_is_valid, luhn_is_valid, ssn_is_valid};
pub use names::{KnownEntities, KnownEntitiesSpec};
pub(crate) use phone::e164_candidates;
pub use phone::phone_is_valid;

/// Loads what the detectors otherwise build on first use: the numbering
/// plans and the first-name list.
pub fn warm_up() {
    phone::warm_up();
    names::warm_up();
}

/// The kinds of personal data the engine detects and masks.
///
/// The serialised form is the placeholder label (`EMAIL` in `[EMAIL_1]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PiiType {
    Email,
    Phone,
    Card,
    Iban,
    Ssn,
    Cpf,
    Cnpj,
    Ip,
    Secret,
    Url,
    Name,
    Company,
    Address,
}

impl PiiType {
    /// Every type, in label order.
    pub const ALL: [PiiType; 13] = [
        PiiType::Email,
        PiiType::Phone,
        PiiType::Card,
        PiiType::Iban,
        PiiType::Ssn,
        PiiType::Cpf,
        PiiType::Cnpj,
        PiiType::Ip,
        PiiType::Secret,
        PiiType::Url,
        PiiType::Name,
        PiiType::Company,
        PiiType::Address,
    ];

    /// The label used in placeholders and JSON.
    pub const fn label(self) -> &'static str {
        match self {
            PiiType::Email => "EMAIL",
            PiiType::Phone => "PHONE",
            PiiType::Card => "CARD",
            PiiType::Iban => "IBAN",
            PiiType::Ssn => "SSN",
            PiiType::Cpf => "CPF",
            PiiType::Cnpj => "CNPJ",
            PiiType::Ip => "IP",
            PiiType::Secret => "SECRET",
            PiiType::Url => "URL",
            PiiType::Name => "NAME",
            PiiType::Company => "COMPANY",
            PiiType::Address => "ADDRESS",
        }
    }

    /// Index into per-type tables.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The floor no tenant can lower (AGT-2): structured identifiers, e-mail addresses, phone
    /// numbers, secrets (and URLs carrying them) and person names are always masked. A
    /// tenant's `pii_types` may leave out only the types found from the CRM's own records
    /// (companies, addresses), never these.
    pub const MANDATORY: [PiiType; 11] = [
        PiiType::Email,
        PiiType::Phone,
        PiiType::Card,
        PiiType::Iban,
        PiiType::Ssn,
        PiiType::Cpf,
        PiiType::Cnpj,
        PiiType::Ip,
        PiiType::Secret,
        PiiType::Url,
        PiiType::Name,
    ];

    /// Whether every policy masks this type, whatever the tenant configured.
    pub const fn is_mandatory(self) -> bool {
        !matches!(self, PiiType::Company | PiiType::Address)
    }

    /// The type whose label is `label`, if any.
    pub fn from_label(label: &str) -> Option<PiiType> {
        PiiType::ALL.into_iter().find(|t| t.label() == label)
    }

    /// The rule id findings of this type carry.
    pub const fn rule_id(self) -> &'static str {
        match self {
            PiiType::Email => "pii.email",
            PiiType::Phone => "pii.phone",
            PiiType::Card => "pii.card",
            PiiType::Iban => "pii.iban",
            PiiType::Ssn => "pii.ssn",
            PiiType::Cpf => "pii.cpf",
            PiiType::Cnpj => "pii.cnpj",
            PiiType::Ip => "pii.ip",
            PiiType::Secret => "pii.secret",
            PiiType::Url => "pii.url",
            PiiType::Name => "pii.name",
            PiiType::Company => "pii.company",
            PiiType::Address => "pii.address",
        }
    }
}

impl fmt::Display for PiiType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for PiiType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PiiType::from_label(&s.to_ascii_uppercase())
            .ok_or_else(|| format!("unknown PII type `{s}`"))
    }
}

/// One detected value: a byte range of the scanned text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PiiSpan {
    pub kind: PiiType,
    pub start: usize,
    pub end: usize,
    /// How sure the detector is, 0..=1. Checksummed values score high,
    /// context-free guesses lower.
    pub score: f32,
}

impl PiiSpan {
    pub(crate) fn new(kind: PiiType, start: usize, end: usize, score: f32) -> Self {
        PiiSpan {
            kind,
            start,
            end,
            score,
        }
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// A set of PII types, e.g. the ones a tenant has enabled.
pub type PiiTypes = BTreeSet<PiiType>;

/// Runs every detector whose type is in `enabled` over `text` and returns
/// non-overlapping spans in text order.
///
/// `folded` must be the folding of `text` (callers usually have it already for
/// rule matching); `known` carries CRM entities of the conversation.
pub fn detect(
    text: &str,
    folded: &Folded<'_>,
    known: &KnownEntities,
    enabled: &[bool; PiiType::ALL.len()],
) -> Vec<PiiSpan> {
    let mut found = Vec::new();
    let cues = cue_matches(folded);
    tokens::detect(text, folded, &cues, &mut found);
    numeric::detect(text, known, &mut found);
    names::detect(text, folded, &cues, known, &mut found);
    found.retain(|s| enabled[s.kind.index()] && !s.is_empty());
    resolve_overlaps(found)
}

/// Cue phrases several detectors start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cue {
    /// "my name is", "me llamo"…; `strong` ones accept a lowercase name.
    Intro { strong: bool },
    /// "Obrigado,", "Viele Grüße"…
    SignOff,
    /// A relation or role word ("mother", "atendente", "Techniker"): a
    /// lowercase first name after it is still a name.
    Role,
    /// "password", "senha", "API key"…
    SecretWord,
    /// A well-known key prefix (`sk_live_`, `ghp_`, `AKIA`…), by index into
    /// the prefix table; matched folded, its case checked on the original.
    KeyPrefix(u16),
}

/// A cue found in the folded text (folded offsets, on word boundaries).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CueMatch {
    pub cue: Cue,
    pub start: usize,
    pub end: usize,
}

/// One automaton for every cue, so the folded text is scanned once for all
/// of them (a DFA without prefilter: messages are short).
static CUES: LazyLock<(AhoCorasick, Vec<Cue>)> = LazyLock::new(|| {
    let mut patterns: Vec<&str> = Vec::new();
    let mut cues = Vec::new();
    for &(p, strong) in names::INTRODUCTIONS {
        patterns.push(p);
        cues.push(Cue::Intro { strong });
    }
    for &p in names::SIGN_OFFS {
        patterns.push(p);
        cues.push(Cue::SignOff);
    }
    for &p in names::ROLE_WORDS {
        if !patterns.contains(&p) {
            patterns.push(p);
            cues.push(Cue::Role);
        }
    }
    for &p in tokens::SECRET_WORDS {
        patterns.push(p);
        cues.push(Cue::SecretWord);
    }
    let prefixes: Vec<String> = tokens::PREFIXES
        .iter()
        .map(|(p, _)| p.to_ascii_lowercase())
        .collect();
    for (i, _) in tokens::PREFIXES.iter().enumerate() {
        cues.push(Cue::KeyPrefix(u16::try_from(i).expect("few prefixes")));
    }
    let patterns: Vec<&str> = patterns
        .into_iter()
        .chain(prefixes.iter().map(String::as_str))
        .collect();
    let ac = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .kind(Some(AhoCorasickKind::DFA))
        .prefilter(false)
        .build(&patterns)
        .expect("static cue phrases compile");
    (ac, cues)
});

pub(crate) fn cue_matches(folded: &Folded<'_>) -> Vec<CueMatch> {
    let f = folded.as_str();
    let (ac, cues) = &*CUES;
    ac.find_iter(f)
        .filter_map(|m| {
            let cue = cues[m.pattern().as_usize()];
            // Key prefixes run on into the key: no boundary after them.
            let bounded = fold::boundary_before(f, m.start())
                && (matches!(cue, Cue::KeyPrefix(_)) || fold::boundary_after(f, m.end()));
            bounded.then_some(CueMatch {
                cue,
                start: m.start(),
                end: m.end(),
            })
        })
        .collect()
}

/// Convenience: detect with every type enabled and no CRM context.
pub fn detect_all(text: &str) -> Vec<PiiSpan> {
    detect(
        text,
        &Folded::new(text),
        &KnownEntities::default(),
        &[true; PiiType::ALL.len()],
    )
}

/// Merges overlapping candidates into one span each.
///
/// Overlaps are merged rather than dropped so that everything any detector
/// saw ends up masked (a partly masked e-mail is still a leak). The merged
/// span takes the type of its strongest member: longest first, then highest
/// score, then the type order, which makes the outcome independent of the
/// order in which detectors ran.
pub fn resolve_overlaps(mut spans: Vec<PiiSpan>) -> Vec<PiiSpan> {
    spans.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out: Vec<PiiSpan> = Vec::with_capacity(spans.len());
    let mut best: Option<PiiSpan> = None;
    for span in spans {
        match out.last_mut() {
            Some(last) if span.start < last.end => {
                let leader = best.get_or_insert(*last);
                if stronger(&span, leader) {
                    *leader = span;
                }
                last.end = last.end.max(span.end);
                last.kind = leader.kind;
                last.score = leader.score;
            }
            _ => {
                best = Some(span);
                out.push(span);
            }
        }
    }
    out
}

fn stronger(a: &PiiSpan, b: &PiiSpan) -> bool {
    (a.len(), a.score, std::cmp::Reverse(a.kind)) > (b.len(), b.score, std::cmp::Reverse(b.kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_spans_merge_under_the_longest_member() {
        let spans = vec![
            PiiSpan::new(PiiType::Name, 0, 5, 1.0),
            PiiSpan::new(PiiType::Email, 0, 15, 0.95),
            PiiSpan::new(PiiType::Phone, 20, 30, 0.9),
        ];
        let out = resolve_overlaps(spans);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].kind, out[0].start, out[0].end),
            (PiiType::Email, 0, 15)
        );
    }
}
