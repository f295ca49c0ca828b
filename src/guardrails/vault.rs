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
//!
//! One value, several spellings. A placeholder stands for a *value*, not a
//! string: "+55 11 98765-4321" and "(11) 98765-4321", "JOAO@x.com" and
//! "joao@x.com", "João Silva" and "JOAO SILVA" share one, so the model sees
//! one customer phone, not two. Values are compared by an identity key per
//! type ([`identity_keys`]): phones by their E.164 form, e-mails lowercased,
//! names, companies and addresses folded (case, accents, and "ue" for "ü"),
//! cards, IBANs and national ids by their characters alone, IPs in canonical
//! form; secrets, URLs and literals only as written. What comes back:
//! * in text the vault has not seen (a model's draft), a placeholder
//!   resolves to the *first form seen*; every form is still kept, for export
//!   and erasure ([`Vault::iter_forms`]);
//! * in a text [`mask`] produced, each occurrence resolves to the form it
//!   replaced, so `unmask(mask(x)) == x` stays exact even when `x` spells a
//!   value two ways, or another way than an earlier message. When a masked
//!   text holds such a second form, the vault records, under that masked
//!   text, which form each of its placeholders replaced; `unmask` of exactly
//!   that text uses the record. Masked texts with first forms only (nearly
//!   all of them) record nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
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
    entries: Vec<Entry>,
    /// Entry indices per label, in number order (`[EMAIL_3]` is `[slot][2]`).
    numbered: [Vec<u32>; SLOTS],
    /// Number per identity key, per label.
    by_key: [HashMap<String, u32>; SLOTS],
    /// Masked texts holding a form other than the first, with the form each
    /// of their placeholders replaced, in order (see the module docs).
    round_trips: BTreeMap<String, Vec<u32>>,
}

#[derive(Clone)]
struct Entry {
    label: Label,
    /// The first form seen: what a placeholder in a draft resolves to.
    value: String,
    /// Other forms of the same value seen since, in order.
    forms: Vec<String>,
}

impl Entry {
    /// Form 0 is `value`, form `k` is `forms[k - 1]`.
    fn form(&self, k: u32) -> Option<&str> {
        match k {
            0 => Some(&self.value),
            k => self.forms.get(k as usize - 1).map(String::as_str),
        }
    }
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// Serialised form: `{"version": 1, "entries": [{"label": "EMAIL", "value":
/// "…", "forms": ["…"]}], "round_trips": [{"masked": "…", "forms": [0, 1]}]}`.
/// Numbers are implied by order within a label; `forms` and `round_trips`
/// are left out when empty, so a vault without second spellings reads and
/// writes exactly as before they existed.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultData {
    version: u32,
    entries: Vec<VaultEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    round_trips: Vec<RoundTrip>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultEntry {
    label: String,
    value: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    forms: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoundTrip {
    masked: String,
    forms: Vec<u32>,
}

impl TryFrom<VaultData> for Vault {
    type Error = String;
    fn try_from(data: VaultData) -> Result<Self, Self::Error> {
        if data.version != 1 {
            return Err(format!("unsupported vault version {}", data.version));
        }
        let mut vault = Vault::default();
        let mut seen: HashSet<(usize, &str)> = HashSet::new();
        for e in &data.entries {
            let label = Label::parse(&e.label)
                .ok_or_else(|| format!("unknown vault label `{}`", e.label))?;
            if !seen.insert((label.slot(), e.value.as_str())) {
                return Err(format!("duplicate vault entry under {}", e.label));
            }
            // Vaults written before identity keys may hold two spellings of
            // one value as two entries: both keep their numbers, and the
            // first one keeps the key for new occurrences.
            vault.issue(label, &e.value);
            if let Some(entry) = vault.entries.last_mut() {
                entry.forms.clone_from(&e.forms);
            }
        }
        vault.round_trips = data
            .round_trips
            .into_iter()
            .map(|r| (r.masked, r.forms))
            .collect();
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
                .map(|e| VaultEntry {
                    label: e.label.as_str().to_string(),
                    value: e.value,
                    forms: e.forms,
                })
                .collect(),
            round_trips: v
                .round_trips
                .into_iter()
                .map(|(masked, forms)| RoundTrip { masked, forms })
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
    /// time the value is seen in any of its forms.
    pub fn placeholder(&mut self, label: Label, value: &str) -> Placeholder {
        self.placeholder_form(label, value).0
    }

    /// The placeholder and which of its entry's forms `value` is (0 for the
    /// first), recording a new form.
    fn placeholder_form(&mut self, label: Label, value: &str) -> (Placeholder, u32) {
        let slot = label.slot();
        let keys = identity_keys(label, value);
        let Some(number) = keys.iter().find_map(|k| self.by_key[slot].get(k).copied()) else {
            return (self.issue_keyed(label, value, keys), 0);
        };
        let placeholder = Placeholder { label, number };
        let index = self.numbered[slot][number as usize - 1] as usize;
        let entry = &mut self.entries[index];
        if entry.value == value {
            return (placeholder, 0);
        }
        let k = match entry.forms.iter().position(|f| f == value) {
            Some(i) => i,
            None => {
                entry.forms.push(value.to_string());
                entry.forms.len() - 1
            }
        };
        (placeholder, u32::try_from(k + 1).unwrap_or(u32::MAX))
    }

    fn issue(&mut self, label: Label, value: &str) -> Placeholder {
        let keys = identity_keys(label, value);
        self.issue_keyed(label, value, keys)
    }

    fn issue_keyed(&mut self, label: Label, value: &str, keys: Vec<String>) -> Placeholder {
        let index = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        self.entries.push(Entry {
            label,
            value: value.to_string(),
            forms: Vec::new(),
        });
        let numbers = &mut self.numbered[label.slot()];
        numbers.push(index);
        let number = u32::try_from(numbers.len()).unwrap_or(u32::MAX);
        for key in keys {
            self.by_key[label.slot()].entry(key).or_insert(number);
        }
        Placeholder { label, number }
    }

    fn entry(&self, placeholder: Placeholder) -> Option<&Entry> {
        let index = placeholder.number.checked_sub(1)? as usize;
        let entry = *self.numbered[placeholder.label.slot()].get(index)?;
        self.entries.get(entry as usize)
    }

    /// The value issued for `placeholder` (its first form seen), if this
    /// vault issued it.
    pub fn resolve(&self, placeholder: Placeholder) -> Option<&str> {
        self.entry(placeholder).map(|e| e.value.as_str())
    }

    /// Whether a value of this type is in the vault in any of its forms,
    /// compared by identity key: a draft may rewrite the customer's phone
    /// or e-mail in another format without it counting as invented.
    pub fn contains_value(&self, kind: PiiType, value: &str) -> bool {
        let label = Label::Pii(kind);
        identity_keys(label, value)
            .iter()
            .any(|k| self.by_key[label.slot()].contains_key(k))
    }

    /// Every issued placeholder with its value (first form), in issue order.
    pub fn iter(&self) -> impl Iterator<Item = (Placeholder, &str)> + '_ {
        self.iter_entries().map(|(p, e)| (p, e.value.as_str()))
    }

    /// Every form of every value, with its placeholder, in issue order (for
    /// export and erasure of a data subject's data).
    pub fn iter_forms(&self) -> impl Iterator<Item = (Placeholder, &str)> + '_ {
        self.iter_entries().flat_map(|(p, e)| {
            std::iter::once(e.value.as_str())
                .chain(e.forms.iter().map(String::as_str))
                .map(move |v| (p, v))
        })
    }

    fn iter_entries(&self) -> impl Iterator<Item = (Placeholder, &Entry)> + '_ {
        let mut counters = [0u32; SLOTS];
        self.entries.iter().map(move |e| {
            counters[e.label.slot()] += 1;
            (
                Placeholder {
                    label: e.label,
                    number: counters[e.label.slot()],
                },
                e,
            )
        })
    }

    /// Remembers which form each placeholder of `masked` replaced, when one
    /// is not the first form; forgets an older record of the same masked
    /// text otherwise, so the latest masking is the one `unmask` undoes.
    fn record_round_trip(&mut self, masked: &str, forms: Vec<u32>) {
        if forms.iter().any(|&k| k != 0) {
            self.round_trips.insert(masked.to_string(), forms);
        } else if !self.round_trips.is_empty() {
            self.round_trips.remove(masked);
        }
    }
}

/// The keys under which `value` is the same value as another spelling of it
/// (the first is the one a new entry is known by). A nationally written
/// phone valid in two of our countries has a key for each.
fn identity_keys(label: Label, value: &str) -> Vec<String> {
    let Label::Pii(kind) = label else {
        return vec![value.to_string()];
    };
    match kind {
        PiiType::Email => vec![value.trim().to_lowercase()],
        PiiType::Phone => {
            let digits: String = value.chars().filter(char::is_ascii_digit).collect();
            let (international, digits) = if value.trim_start().starts_with('+') {
                (true, digits.as_str())
            } else if let Some(rest) = digits.strip_prefix("00") {
                (true, rest)
            } else {
                (false, digits.as_str())
            };
            let keys = crate::guardrails::pii::e164_candidates(digits, international);
            if keys.is_empty() {
                // Not in a plan we know: the digits are all we can compare.
                vec![format!("#{}", digits.trim_start_matches('0'))]
            } else {
                keys
            }
        }
        PiiType::Card | PiiType::Iban | PiiType::Ssn | PiiType::Cpf | PiiType::Cnpj => {
            vec![value
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_uppercase())
                .collect()]
        }
        PiiType::Ip => {
            let v = value.trim();
            vec![v
                .parse::<std::net::IpAddr>()
                .map_or_else(|_| v.to_ascii_lowercase(), |ip| ip.to_string())]
        }
        PiiType::Name | PiiType::Company | PiiType::Address => {
            let folded = crate::guardrails::fold::fold_str(value.trim());
            vec![crate::guardrails::fold::umlaut_insensitive(&folded)]
        }
        // Case matters in a credential.
        PiiType::Secret | PiiType::Url => vec![value.to_string()],
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
    // The form each written placeholder replaced, in order.
    let mut forms: Vec<u32> = Vec::with_capacity(items.len());
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
        escape_into(&text[at..start], vault, &mut out, &mut forms);
        match item {
            Replace::Pii(span) => {
                let (p, form) = vault.placeholder_form(Label::Pii(span.kind), &text[start..end]);
                p.write_to(&mut out);
                forms.push(form);
            }
            Replace::Redact { .. } => out.push_str(REDACTED),
        }
        at = end;
    }
    escape_into(&text[at..], vault, &mut out, &mut forms);
    vault.record_round_trip(&out, forms);
    out
}

/// Copies `segment`, vaulting any placeholder-shaped text as a literal.
fn escape_into(segment: &str, vault: &mut Vault, out: &mut String, forms: &mut Vec<u32>) {
    let mut copied = 0;
    for open in memchr_iter(b'[', segment.as_bytes()) {
        if open < copied {
            continue;
        }
        if let Some((_, end)) = parse_placeholder(segment, open) {
            out.push_str(&segment[copied..open]);
            let p = vault.placeholder(Label::Literal, &segment[open..end]);
            p.write_to(out);
            forms.push(0);
            copied = end;
        }
    }
    out.push_str(&segment[copied..]);
}

/// Restores the values of every placeholder this vault issued; anything
/// else, including placeholders it did not issue, is left as it is. A text
/// [`mask`] produced gets back each occurrence's own form; any other text
/// (a model's draft) gets each value's first form.
pub fn unmask(text: &str, vault: &Vault) -> String {
    unmask_mapped(text, vault).0
}

/// A placeholder [`unmask`] resolved: its range in the masked text and the range of its value
/// in the unmasked one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resolved {
    pub masked: (usize, usize),
    pub unmasked: (usize, usize),
}

/// [`unmask`], and where each resolved placeholder went, to map ranges of the unmasked text
/// back onto the masked one ([`masked_range`]).
pub(crate) fn unmask_mapped(text: &str, vault: &Vault) -> (String, Vec<Resolved>) {
    let mut resolved = Vec::new();
    let forms = if vault.round_trips.is_empty() {
        None
    } else {
        vault.round_trips.get(text)
    };
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut occurrence = 0;
    for open in memchr_iter(b'[', text.as_bytes()) {
        if open < copied {
            continue;
        }
        if let Some((p, end)) = parse_placeholder(text, open) {
            if let Some(entry) = vault.entry(p) {
                let form = forms.and_then(|f| f.get(occurrence)).copied().unwrap_or(0);
                occurrence += 1;
                out.push_str(&text[copied..open]);
                let start = out.len();
                out.push_str(entry.form(form).unwrap_or(&entry.value));
                resolved.push(Resolved {
                    masked: (open, end),
                    unmasked: (start, out.len()),
                });
                copied = end;
            }
        }
    }
    out.push_str(&text[copied..]);
    (out, resolved)
}

/// The range of the masked text that produced `range` of the unmasked one: a range touching a
/// placeholder's value covers the whole placeholder.
pub(crate) fn masked_range(resolved: &[Resolved], range: (usize, usize)) -> (usize, usize) {
    let map = |at: usize, is_end: bool| -> usize {
        // The last placeholder starting at or before `at` (strictly before, for an end).
        let before = resolved.partition_point(|r| {
            if is_end {
                r.unmasked.0 < at
            } else {
                r.unmasked.0 <= at
            }
        });
        match before.checked_sub(1).map(|i| resolved[i]) {
            None => at,
            Some(r) if at < r.unmasked.1 || (is_end && at == r.unmasked.1) => {
                if is_end {
                    r.masked.1
                } else {
                    r.masked.0
                }
            }
            Some(r) => r.masked.1 + (at - r.unmasked.1),
        }
    };
    (map(range.0, false), map(range.1, true))
}

/// Every string in `value` with the vault's placeholders replaced by the values they stand for:
/// a stored record (an execution's, a person's export) shown with its real values.
pub fn unmask_value(value: &serde_json::Value, vault: &Vault) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('[') => Value::String(unmask(s, vault)),
        Value::Array(items) => Value::Array(items.iter().map(|v| unmask_value(v, vault)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), unmask_value(v, vault)))
                .collect(),
        ),
        other => other.clone(),
    }
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
