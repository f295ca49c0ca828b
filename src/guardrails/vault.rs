//! Reversible masking: typed, numbered placeholders and the vault that maps
//! them back.
//!
//! One vault lives per conversation (the agent runtime stores it encrypted),
//! so the same value gets the same placeholder in every message, knowledge
//! chunk and CRM field sent to the model during that conversation.
//!
//! Safety argument for `unmask(mask(x)) == x` and for "a placeholder resolves
//! only to the value it was issued for":
//! * placeholders have one strict grammar, `[LABEL_N]` with a known label and
//!   `N` in decimal without leading zeros, parsed by [`parse_placeholder`] in
//!   both directions;
//! * text that already has that shape before masking (a customer pasting
//!   `[EMAIL_1]`, a knowledge article quoting one) is itself vaulted as a
//!   `LITERAL` value, so it comes back verbatim and never reaches the value
//!   the vault issued under that name;
//! * a placeholder cannot straddle original text and an inserted placeholder,
//!   because the grammar has no `[` inside it;
//! * `unmask` resolves only numbers this vault issued for that label and
//!   leaves everything else as it is, so invented (`[EMAIL_9]`), mangled
//!   (`[email 1]`) or foreign placeholders stay inert text.

use std::collections::HashMap;
use std::fmt;

use memchr::memchr_iter;
use serde::{Deserialize, Serialize};

use crate::guardrails::pii::{PiiSpan, PiiType};

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Label {
    Pii(PiiType),
    /// Placeholder-shaped text found in the input, kept verbatim.
    Literal,
}

impl Label {
    const LITERAL: &'static str = "LITERAL";

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Pii(t) => t.label(),
            Label::Literal => Self::LITERAL,
        }
    }

    pub fn parse(s: &str) -> Option<Label> {
        if s == Self::LITERAL {
            Some(Label::Literal)
        } else {
            PiiType::from_label(s).map(Label::Pii)
        }
    }

    fn slot(self) -> usize {
        match self {
            Label::Pii(t) => t.index(),
            Label::Literal => PiiType::ALL.len(),
        }
    }
}

const SLOTS: usize = PiiType::ALL.len() + 1;

/// A placeholder parsed from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placeholder {
    pub label: Label,
    pub number: u32,
}

impl Placeholder {
    /// Appends `[LABEL_N]` without the formatting machinery (hot path).
    fn write_to(self, out: &mut String) {
        out.push('[');
        out.push_str(self.label.as_str());
        out.push('_');
        let mut digits = [0u8; 10];
        let mut n = self.number;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend(digits[i..].iter().map(|&d| char::from(d)));
        out.push(']');
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}_{}]", self.label.as_str(), self.number)
    }
}

/// Parses the strict placeholder grammar at byte `at` of `s`; returns the
/// placeholder and the byte just past its `]`.
pub fn parse_placeholder(s: &str, at: usize) -> Option<(Placeholder, usize)> {
    let b = s.as_bytes();
    if b.get(at) != Some(&b'[') {
        return None;
    }
    let label_start = at + 1;
    let mut i = label_start;
    while i < b.len() && b[i].is_ascii_uppercase() && i - label_start < 16 {
        i += 1;
    }
    if i == label_start || b.get(i) != Some(&b'_') {
        return None;
    }
    let label = Label::parse(&s[label_start..i])?;
    let digits_start = i + 1;
    let mut j = digits_start;
    while j < b.len() && b[j].is_ascii_digit() && j - digits_start < 9 {
        j += 1;
    }
    if j == digits_start || b[digits_start] == b'0' || b.get(j) != Some(&b']') {
        return None;
    }
    let number = s[digits_start..j].parse().ok()?;
    Some((Placeholder { label, number }, j + 1))
}

/// The values behind one conversation's placeholders.
///
/// `Debug` shows only counts: the values are PII.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "VaultData", into = "VaultData")]
pub struct Vault {
    entries: Vec<(Label, String)>,
    /// Entry indices per label, in number order (`[EMAIL_3]` is `[slot][2]`).
    numbered: [Vec<u32>; SLOTS],
    /// Number per value, per label (looked up by `&str`, no allocation).
    by_value: [HashMap<String, u32>; SLOTS],
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// Serialised form: `{"version": 1, "entries": [{"label": "EMAIL", "value": "…"}]}`.
/// Numbers are implied by order within a label.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultData {
    version: u32,
    entries: Vec<VaultEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultEntry {
    label: String,
    value: String,
}

impl TryFrom<VaultData> for Vault {
    type Error = String;
    fn try_from(data: VaultData) -> Result<Self, Self::Error> {
        if data.version != 1 {
            return Err(format!("unsupported vault version {}", data.version));
        }
        let mut vault = Vault::default();
        for e in data.entries {
            let label = Label::parse(&e.label)
                .ok_or_else(|| format!("unknown vault label `{}`", e.label))?;
            if vault.by_value[label.slot()].contains_key(&e.value) {
                return Err(format!("duplicate vault entry under {}", e.label));
            }
            vault.issue(label, &e.value);
        }
        Ok(vault)
    }
}

impl From<Vault> for VaultData {
    fn from(v: Vault) -> Self {
        VaultData {
            version: 1,
            entries: v
                .entries
                .into_iter()
                .map(|(label, value)| VaultEntry {
                    label: label.as_str().to_string(),
                    value,
                })
                .collect(),
        }
    }
}

impl Vault {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The placeholder for `value` under `label`, issuing a new one the first
    /// time the value is seen.
    pub fn placeholder(&mut self, label: Label, value: &str) -> Placeholder {
        if let Some(&number) = self.by_value[label.slot()].get(value) {
            return Placeholder { label, number };
        }
        self.issue(label, value)
    }

    fn issue(&mut self, label: Label, value: &str) -> Placeholder {
        let index = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        self.entries.push((label, value.to_string()));
        let numbers = &mut self.numbered[label.slot()];
        numbers.push(index);
        let number = u32::try_from(numbers.len()).unwrap_or(u32::MAX);
        self.by_value[label.slot()].insert(value.to_string(), number);
        Placeholder { label, number }
    }

    /// The value issued for `placeholder`, if this vault issued it.
    pub fn resolve(&self, placeholder: Placeholder) -> Option<&str> {
        let index = placeholder.number.checked_sub(1)? as usize;
        let entry = *self.numbered[placeholder.label.slot()].get(index)?;
        self.entries.get(entry as usize).map(|(_, v)| v.as_str())
    }

    /// Whether a value of this type is in the vault, comparing the way the
    /// type is usually rewritten (digits only for numbers, lowercase e-mail).
    pub fn contains_value(&self, kind: PiiType, value: &str) -> bool {
        let key = comparable(kind, value);
        self.numbered[Label::Pii(kind).slot()]
            .iter()
            .any(|&i| comparable(kind, &self.entries[i as usize].1) == key)
    }

    /// Every issued placeholder with its value, in issue order (for export
    /// and erasure of a data subject's data).
    pub fn iter(&self) -> impl Iterator<Item = (Placeholder, &str)> + '_ {
        let mut counters = [0u32; SLOTS];
        self.entries.iter().map(move |(label, value)| {
            counters[label.slot()] += 1;
            (
                Placeholder {
                    label: *label,
                    number: counters[label.slot()],
                },
                value.as_str(),
            )
        })
    }
}

fn comparable(kind: PiiType, value: &str) -> String {
    match kind {
        PiiType::Card
        | PiiType::Phone
        | PiiType::Iban
        | PiiType::Ssn
        | PiiType::Cpf
        | PiiType::Cnpj => value
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_uppercase())
            .collect(),
        _ => value.trim().to_lowercase(),
    }
}

/// A piece of text to replace while masking.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Replace {
    /// Reversible: a placeholder from the vault.
    Pii(PiiSpan),
    /// Irreversible: `[REDACTED]` (a rule with action `redact`).
    Redact { start: usize, end: usize },
}

impl Replace {
    fn range(&self) -> (usize, usize) {
        match *self {
            Replace::Pii(s) => (s.start, s.end),
            Replace::Redact { start, end } => (start, end),
        }
    }
}

/// The irreversible replacement text.
pub const REDACTED: &str = "[REDACTED]";

/// Replaces each span with its placeholder (issuing new ones into `vault`)
/// and escapes placeholder-shaped text already present.
///
/// `spans` should be sorted and non-overlapping, as [`crate::guardrails::pii::detect`]
/// returns them; any span that is not (or does not fall on character
/// boundaries) is skipped rather than trusted.
pub fn mask(text: &str, spans: &[PiiSpan], vault: &mut Vault) -> String {
    let items: Vec<Replace> = spans.iter().copied().map(Replace::Pii).collect();
    rewrite(text, &items, vault)
}

pub(crate) fn rewrite(text: &str, items: &[Replace], vault: &mut Vault) -> String {
    let mut out = String::with_capacity(text.len() + items.len() * 8);
    let mut at = 0;
    for item in items {
        let (start, end) = item.range();
        if start < at
            || end <= start
            || end > text.len()
            || !text.is_char_boundary(start)
            || !text.is_char_boundary(end)
        {
            continue;
        }
        escape_into(&text[at..start], vault, &mut out);
        match item {
            Replace::Pii(span) => {
                let p = vault.placeholder(Label::Pii(span.kind), &text[start..end]);
                p.write_to(&mut out);
            }
            Replace::Redact { .. } => out.push_str(REDACTED),
        }
        at = end;
    }
    escape_into(&text[at..], vault, &mut out);
    out
}

/// Copies `segment`, vaulting any placeholder-shaped text as a literal.
fn escape_into(segment: &str, vault: &mut Vault, out: &mut String) {
    let mut copied = 0;
    for open in memchr_iter(b'[', segment.as_bytes()) {
        if open < copied {
            continue;
        }
        if let Some((_, end)) = parse_placeholder(segment, open) {
            out.push_str(&segment[copied..open]);
            let p = vault.placeholder(Label::Literal, &segment[open..end]);
            p.write_to(out);
            copied = end;
        }
    }
    out.push_str(&segment[copied..]);
}

/// Restores the values of every placeholder this vault issued; anything
/// else, including placeholders it did not issue, is left as it is.
pub fn unmask(text: &str, vault: &Vault) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for open in memchr_iter(b'[', text.as_bytes()) {
        if open < copied {
            continue;
        }
        if let Some((p, end)) = parse_placeholder(text, open) {
            if let Some(value) = vault.resolve(p) {
                out.push_str(&text[copied..open]);
                out.push_str(value);
                copied = end;
            }
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// Byte ranges of placeholder-like text that `unmask` would not resolve:
/// strict placeholders this vault never issued, and mangled ones
/// (`[email 1]`, `EMAIL_1`, `[EMAIL_01]`). A draft containing any would show
/// the customer a broken reply.
pub fn unresolved_placeholders(text: &str, vault: &Vault) -> Vec<(usize, usize)> {
    // Bracketed with any case and separator, or bare with the exact label.
    static LOOSE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        let labels: Vec<&str> = PiiType::ALL
            .iter()
            .map(|t| t.label())
            .chain([Label::LITERAL])
            .collect();
        let labels = labels.join("|");
        regex::Regex::new(&format!(
            r"\[\s*(?i:{labels})[ _-]?\d+\s*\]|\b(?:{labels})_\d+\b"
        ))
        .expect("static pattern compiles")
    });
    LOOSE
        .find_iter(text)
        .filter(|m| match parse_placeholder(text, m.start()) {
            Some((p, end)) => end != m.end() || vault.resolve(p).is_none(),
            None => true,
        })
        .map(|m| (m.start(), m.end()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_stable_per_value() {
        let mut v = Vault::new();
        let a = v.placeholder(Label::Pii(PiiType::Email), "a@x.io");
        let b = v.placeholder(Label::Pii(PiiType::Email), "b@x.io");
        let a2 = v.placeholder(Label::Pii(PiiType::Email), "a@x.io");
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("[EMAIL_1]".into(), "[EMAIL_2]".into())
        );
        assert_eq!(a, a2);
    }

    #[test]
    fn strict_grammar_rejects_leading_zeros_and_unknown_labels() {
        assert!(parse_placeholder("[EMAIL_01]", 0).is_none());
        assert!(parse_placeholder("[FOO_1]", 0).is_none());
        assert!(parse_placeholder("[EMAIL_1", 0).is_none());
        assert_eq!(
            parse_placeholder("x[CARD_12]", 1).map(|(p, e)| (p.number, e)),
            Some((12, 10))
        );
    }
}
