//! Numbers written with digits and separators: payment cards, phones, US SSN,
//! CPF, numeric CNPJ and IPv4.
//!
//! The scanner cuts the text into *runs*: digit groups joined by short
//! separators (`4111 1111 1111 1111`, `+55 (11) 98765-4321`,
//! `123.456.789-09`). A run never crosses a line break or a letter, which is
//! the boundary check that keeps `BR123456789BR` and `5kg` out. Within a run,
//! windows of consecutive groups are classified from the left, longest valid
//! window first, so a card followed by its expiry date or two phones in a row
//! come out as separate values.
//!
//! What keeps order numbers, dates and amounts out: formats that no PII uses
//! (decimal commas, thousands grouping, `dd/mm/yyyy`), a currency sign before
//! the number, and an order/tracking/invoice word right before a bare number.

use std::sync::LazyLock;

use crate::guardrails::pii::checks::{
    card_brand_matches, cnpj_is_valid, cpf_is_valid, luhn_is_valid, ssn_is_valid,
};
use crate::guardrails::pii::names::KnownEntities;
use crate::guardrails::pii::{phone, PiiSpan, PiiType};

/// A window never spans more groups or digits than the longest value we look
/// for; this bound keeps the scan linear however long a run gets.
const MAX_WINDOW_GROUPS: usize = 8;
const MAX_WINDOW_DIGITS: usize = 19;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sep {
    Space,
    Dash,
    Dot,
    Slash,
    Comma,
    /// Contains a parenthesis, e.g. `) ` in `(11) 9…`.
    Paren,
    /// A `/` or `-` with spaces around it: lists ("… / …"), never inside a value.
    Loose,
}

impl Sep {
    fn parse(bytes: &[u8]) -> Option<Sep> {
        let spaces = bytes.iter().filter(|&&b| b == b' ').count();
        let punct: Vec<u8> = bytes.iter().copied().filter(|&b| b != b' ').collect();
        if punct.iter().any(|&b| b == b'(' || b == b')') {
            return punct
                .iter()
                .all(|&b| matches!(b, b'(' | b')' | b'-' | b'.'))
                .then_some(Sep::Paren);
        }
        // ". " and ", " end a sentence or a list item: they end the run too.
        match (punct.as_slice(), spaces) {
            ([], 1) => Some(Sep::Space),
            ([b'-'], 0) => Some(Sep::Dash),
            ([b'.'], 0) => Some(Sep::Dot),
            ([b'/'], 0) => Some(Sep::Slash),
            ([b','], 0) => Some(Sep::Comma),
            ([b'-' | b'/'], 2) => Some(Sep::Loose),
            _ => None,
        }
    }

    /// Whether this separator outside a window glues it to more digits.
    fn is_tight(self) -> bool {
        matches!(self, Sep::Dash | Sep::Dot | Sep::Slash | Sep::Comma)
    }
}

#[derive(Debug, Clone, Copy)]
struct Group {
    start: usize,
    end: usize,
}

impl Group {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

#[derive(Debug, Default)]
struct Run {
    groups: Vec<Group>,
    /// `seps[k]` sits between `groups[k]` and `groups[k + 1]`.
    seps: Vec<Sep>,
    /// Start of the first group including a leading `+` or `(`.
    lead_start: usize,
    plus: bool,
    paren_lead: bool,
    /// End of a phone extension written after the last group ("x5344",
    /// " ext. 12", " ramal 123"): a phone ending the run runs on to it.
    ext_end: Option<usize>,
}

pub(super) fn detect(text: &str, known: &KnownEntities, out: &mut Vec<PiiSpan>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut run = Run::default();
    while i < bytes.len() {
        let b = bytes[i];
        if !b.is_ascii_digit() {
            i += 1;
            continue;
        }
        if glued_before(text, i) {
            i = skip_token(bytes, i);
            continue;
        }
        i = scan_run(text, i, &mut run);
        classify_run(text, &run, known, out);
    }
}

/// Whether the digit at `i` continues a word (letter or digit before it, or a
/// decimal point/comma after a digit).
fn glued_before(text: &str, i: usize) -> bool {
    let bytes = text.as_bytes();
    match text[..i].chars().next_back() {
        None => false,
        Some(c) if c.is_alphanumeric() || c == '_' => true,
        Some('.' | ',') => i >= 2 && bytes[i - 2].is_ascii_digit(),
        Some(_) => false,
    }
}

/// Skips the rest of an alphanumeric token.
fn skip_token(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
        i += 1;
    }
    i.max(1)
}

/// Reads one run starting at the digit at `start`; returns where scanning
/// resumes.
fn scan_run(text: &str, start: usize, run: &mut Run) -> usize {
    let bytes = text.as_bytes();
    run.groups.clear();
    run.seps.clear();
    run.plus = false;
    run.paren_lead = false;
    run.ext_end = None;
    run.lead_start = start;
    // A leading "+" or "(" (or "+(") belongs to the value.
    let mut lead = start;
    if lead > 0 && bytes[lead - 1] == b'(' {
        lead -= 1;
        run.paren_lead = true;
    }
    if lead > 0 && bytes[lead - 1] == b'+' {
        lead -= 1;
        run.plus = true;
    }
    if lead > 0 && (bytes[lead - 1].is_ascii_alphanumeric()) {
        // "x+1": not a leading sign.
        run.plus = false;
        run.paren_lead = false;
        lead = start;
    }
    run.lead_start = lead;
    let mut i = start;
    loop {
        let g_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let group = Group {
            start: g_start,
            end: i,
        };
        // An hour ("14:30", "2026-04-26 05:08:31"): a clock, never part of
        // a number; the run ends before it.
        if i + 1 < bytes.len() && bytes[i] == b':' && bytes[i + 1].is_ascii_digit() {
            run.seps.pop();
            return i.max(start + 1);
        }
        // A letter right after the digits ("5kg", "3x") makes the group part
        // of a word: it ends the run and is not a candidate itself, unless
        // it is a phone extension glued on ("0743x9150").
        if i < bytes.len()
            && text[i..]
                .chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
        {
            if !run.groups.is_empty() || group.len() >= 7 {
                if let Some(end) = extension_at(bytes, i) {
                    run.groups.push(group);
                    run.ext_end = Some(end);
                    return end;
                }
            }
            return skip_token(bytes, i);
        }
        run.groups.push(group);
        // Look for a separator followed by another digit group.
        let mut j = i;
        while j < bytes.len()
            && j - i < 3
            && matches!(bytes[j], b' ' | b'-' | b'.' | b'/' | b',' | b'(' | b')')
        {
            j += 1;
        }
        let Some(sep) = (j > i && j < bytes.len() && bytes[j].is_ascii_digit())
            .then(|| Sep::parse(&bytes[i..j]))
            .flatten()
        else {
            if let Some(end) = extension_at(bytes, i) {
                run.ext_end = Some(end);
                return end;
            }
            return i.max(start + 1);
        };
        run.seps.push(sep);
        i = j;
    }
}

/// A phone extension starting at `at` (right after a digit group): "x5344",
/// " x 12", " ext. 12", " ext 123", " extension 12", " ramal 123", " Durchwahl
/// 12", " anexo 12"; returns where its digits end. Up to six digits, not
/// glued to a letter after.
fn extension_at(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    while i < bytes.len() && i - at < 2 && matches!(bytes[i], b' ' | b',' | b'-') {
        i += 1;
    }
    let word_start = i;
    while i < bytes.len() && bytes[i].is_ascii_alphabetic() && i - word_start < 10 {
        i += 1;
    }
    let word = std::str::from_utf8(&bytes[word_start..i]).ok()?;
    if !matches!(
        word.to_ascii_lowercase().as_str(),
        "x" | "ext" | "extn" | "extension" | "ramal" | "durchwahl" | "dw" | "anexo"
    ) {
        return None;
    }
    // "0743x9150" glues the x on; a spelled-out word needs a space before.
    if word.len() > 1 && word_start == at {
        return None;
    }
    while i < bytes.len() && matches!(bytes[i], b'.' | b':' | b' ') && i - word_start < 14 {
        i += 1;
    }
    let digits = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let n = i - digits;
    let glued = i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_');
    ((1..=6).contains(&n) && !glued).then_some(i)
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    last: usize,
    kind: PiiType,
    score: f32,
}

fn classify_run(text: &str, run: &Run, known: &KnownEntities, out: &mut Vec<PiiSpan>) {
    let n = run.groups.len();
    let total_digits: usize = run.groups.iter().map(Group::len).sum();
    // Nothing we look for has fewer than four digits (IPv4 "1.2.3.4").
    if total_digits < 4 {
        return;
    }
    let context = Context::before(text, run.lead_start);
    // Where the last value ended: a phone must start the run or follow a
    // value, never begin in the middle of an unexplained longer number
    // ("DE89 3704 0044 0532 0130 01" holds no phone).
    let mut resume = 0;
    let mut i = 0;
    let mut digits = String::with_capacity(MAX_WINDOW_DIGITS + 8);
    // ends[k]: length of `digits` after the k-th group of the window.
    let mut ends: Vec<usize> = Vec::with_capacity(MAX_WINDOW_GROUPS);
    while i < n {
        digits.clear();
        ends.clear();
        for g in &run.groups[i..n.min(i + MAX_WINDOW_GROUPS)] {
            if digits.len() + g.len() > MAX_WINDOW_DIGITS + 2 {
                break;
            }
            digits.push_str(&text[g.start..g.end]);
            ends.push(digits.len());
        }
        // A phone may also begin where a parenthesis opens, or where the
        // separators change from a space to dots or dashes: "SSN 597-96-2314
        // (960)675-4211", "… 5031 51 684.774.3092" after an IBAN's digits.
        let fresh = i == resume
            || (i > 0 && text.as_bytes()[run.groups[i].start - 1] == b'(')
            || (i > 0
                && run.seps[i - 1] == Sep::Space
                && run
                    .seps
                    .get(i)
                    .is_some_and(|s| matches!(s, Sep::Dot | Sep::Dash)));
        // Longest window first: the first valid one is the one we keep, and
        // shorter windows need no validation at all.
        let mut best: Option<Candidate> = None;
        for (k, &end) in ends.iter().enumerate().rev() {
            let window = Window {
                run,
                first: i,
                last: i + k,
                digits: &digits[..end],
                fresh,
            };
            if let Some((kind, score)) = window.classify(&context, known) {
                if kind != PiiType::Phone || fresh || score >= 1.0 {
                    best = Some(Candidate {
                        last: i + k,
                        kind,
                        score,
                    });
                    break;
                }
            }
        }
        match best {
            Some(c) => {
                let start = if i == 0 {
                    run.lead_start
                } else if text.as_bytes()[run.groups[i].start - 1] == b'(' {
                    run.groups[i].start - 1
                } else {
                    run.groups[i].start
                };
                let mut end = run.groups[c.last].end;
                if c.kind == PiiType::Phone && c.last + 1 == n {
                    end = run.ext_end.unwrap_or(end);
                }
                // "(11)" closes after the digits when the window starts inside it.
                if end < text.len()
                    && text.as_bytes()[end] == b')'
                    && run.paren_lead
                    && i == 0
                    && c.last == 0
                {
                    end += 1;
                }
                out.push(PiiSpan::new(c.kind, start, end, c.score));
                i = c.last + 1;
                resume = i;
            }
            None => i += 1,
        }
    }
}

/// What precedes a run on its line.
struct Context<'t> {
    /// An order/tracking/invoice/ticket word (or `#`) right before the number.
    reference: bool,
    /// The reference word is a fiscal document ("nota", "NF", "fatura",
    /// "boleto"): one is issued *to* a CPF or CNPJ, so a checksum-valid
    /// one after it is still the person's or company's number.
    document: bool,
    /// A card word ("card", "cartão", "Karte"…) right before the number.
    card: bool,
    /// "the order I placed on Monday has the number …": a reference word
    /// earlier in the sentence, the number introduced as "the number", and
    /// no phone or contact word between (see [`Context::far_reference`]).
    reference_far: bool,
    /// Letters glued by a dash ("INV-", "RE-", "FAC-"): the digits are the
    /// tail of an identifier.
    code: bool,
    /// A currency sign or code right before the number.
    amount: bool,
    ssn: bool,
    phone: bool,
    cpf: bool,
    /// "CEP", "PLZ", "ZIP code": a postal code, which is no phone number.
    postal: bool,
    /// The run's line, for the words around it, read only when a candidate
    /// needs them (see [`Context::around`]).
    text: &'t str,
    at: usize,
    around: std::cell::OnceCell<Around>,
}

/// Words anywhere in the sentence around a number (before or after it).
#[derive(Debug, Clone, Copy, Default)]
struct Around {
    card: bool,
    ssn: bool,
    /// An SSN word in the sentence before the number ("the IRS letter
    /// lists …").
    ssn_before: bool,
    phone: bool,
    reference: bool,
}

impl<'t> Context<'t> {
    fn before(text: &'t str, at: usize) -> Context<'t> {
        let start = floor_char_boundary(text, at.saturating_sub(48));
        let window = &text[start..at];
        let window = window.rsplit(['\n', '\r']).next().unwrap_or(window);
        let trimmed = window.trim_end();
        let lower_ends = |suffix: &str| {
            trimmed.len() >= suffix.len()
                && trimmed.is_char_boundary(trimmed.len() - suffix.len())
                && trimmed[trimmed.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        };
        let amount = [
            "$", "€", "£", "r$", "us$", "eur", "usd", "brl", "gbp", "chf",
        ]
        .iter()
        .any(|c| lower_ends(c));
        let mut ctx = Context {
            document: false,
            card: false,
            text,
            at,
            around: std::cell::OnceCell::new(),
            reference_far: false,
            code: code_prefix(window),
            // "n." and "no." as words: "ankommen. 0871…" ends a sentence.
            reference: trimmed.ends_with('#')
                || (lower_ends("n.") || lower_ends("no.")) && {
                    let head = trimmed.trim_end_matches(['.', 'o', 'O']);
                    let head = head.strip_suffix(['n', 'N']).unwrap_or(head);
                    !head.chars().next_back().is_some_and(char::is_alphanumeric)
                }
                || trimmed.ends_with("nº"),
            amount,
            ssn: false,
            phone: false,
            cpf: false,
            postal: false,
        };
        // Walk back over the last few words; filler words ("number", "nº",
        // "is", "my") do not break the link between keyword and number.
        let mut buf = [0u8; 48];
        let words = trimmed
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .rev()
            .take(5);
        // "code" ends the walk as a reference word, unless a postal word
        // precedes it ("ZIP code", "código postal" reads the other way).
        let mut code = false;
        let mut number_noun = false;
        let mut last_was_number_noun = false;
        for (k, w) in words.enumerate() {
            let Some(w) = crate::guardrails::fold::fold_small(w, &mut buf) else {
                break;
            };
            number_noun |= k == 0 && NUMBER_NOUNS.contains(&w);
            if code {
                ctx.postal = contains(&POSTAL_WORDS_SORTED, w);
                ctx.reference = !ctx.postal;
                break;
            }
            if matches!(w, "code" | "codigo" | "codice") {
                code = true;
                continue;
            }
            if contains(&REFERENCE_WORDS_SORTED, w) {
                ctx.reference = true;
                ctx.document = DOCUMENT_WORDS.contains(&w);
                break;
            }
            if CARD_WORDS.contains(&w) {
                ctx.card = true;
                break;
            }
            if SSN_WORDS.contains(&w) {
                ctx.ssn = true;
                break;
            }
            // "my number is …", "meine Nummer …": someone's own number.
            if k > 0 && last_was_number_noun && POSSESSIVES.contains(&w) {
                ctx.phone = true;
                break;
            }
            last_was_number_noun = NUMBER_NOUNS.contains(&w);
            if contains(&PHONE_WORDS_SORTED, w) {
                ctx.phone = true;
                break;
            }
            if contains(&POSTAL_WORDS_SORTED, w) {
                ctx.postal = true;
                break;
            }
            if w == "cpf" {
                ctx.cpf = true;
                break;
            }
            if !contains(&FILLER_WORDS_SORTED, w) && w != "n" && w != "o" {
                break;
            }
        }
        ctx.reference |= code && !ctx.postal;
        // Only "… the number 123" pays for the longer look back.
        if number_noun && !(ctx.reference || ctx.phone || ctx.ssn || ctx.cpf || ctx.postal) {
            ctx.reference_far = Context::far_reference(text, at);
        }
        ctx
    }

    /// The card, SSN and phone words of the sentence around the number, up
    /// to 120 bytes either side on its line: "Can you refund to 4111…? It's
    /// the same card", "I entered 123 45 6789 in the tax form".
    fn around(&self) -> Around {
        *self.around.get_or_init(|| {
            let text = self.text;
            let start = floor_char_boundary(text, self.at.saturating_sub(120));
            let end = floor_char_boundary(text, (self.at + 160).min(text.len()));
            // The sentence before, and what follows on the line: a phone
            // word in an earlier sentence says nothing about this number,
            // but "Can you refund to …? It's the same card" does.
            let before = &text[start..self.at];
            let before = before
                .rfind(['\n', '\r'])
                .into_iter()
                .chain(before.rfind(". "))
                .max()
                .map_or(before, |cut| &before[cut + 1..]);
            let after = &text[self.at..end];
            let after = after.split(['\n', '\r']).next().unwrap_or(after);
            // Phone, SSN and reference words count in this sentence only.
            let sentence_end = ["? ", "! ", ". "]
                .iter()
                .filter_map(|p| after.find(p))
                .min()
                .unwrap_or(after.len());
            let mut around = Around::default();
            let mut buf = [0u8; 48];
            for w in before.split(|c: char| !c.is_alphanumeric() && c != '-') {
                if let Some(f) = crate::guardrails::fold::fold_small(w, &mut buf) {
                    around.ssn_before |= SSN_WORDS.contains(&f);
                }
            }
            let words = |s: &'t str| {
                s.split(|c: char| !c.is_alphanumeric() && c != '-')
                    .filter(|w| !w.is_empty() && !w.as_bytes()[0].is_ascii_digit())
            };
            for w in words(&after[sentence_end..]) {
                if let Some(f) = crate::guardrails::fold::fold_small(w, &mut buf) {
                    around.card |= CARD_WORDS.contains(&f);
                }
            }
            for w in words(before).chain(words(&after[..sentence_end])) {
                let Some(f) = crate::guardrails::fold::fold_small(w, &mut buf) else {
                    continue;
                };
                around.card |= CARD_WORDS.contains(&f);
                around.ssn |= SSN_WORDS.contains(&f);
                around.phone |= contains(&PHONE_WORDS_SORTED, f);
                around.reference |= contains(&REFERENCE_WORDS_SORTED, f);
            }
            around
        })
    }

    /// Whether the number at `at` is introduced as "the number" / "o número"
    /// / "die Nummer" (no possessive: "my number" is a phone) and a
    /// reference word comes earlier in the same sentence, with no phone,
    /// contact or identity-document word between. Suppresses only the
    /// weakest guesses (a bare number read as a national phone or CPF);
    /// formatted and international phones are unaffected.
    fn far_reference(text: &str, at: usize) -> bool {
        let start = floor_char_boundary(text, at.saturating_sub(160));
        let window = &text[start..at];
        let window = window.rsplit(['\n', '\r']).next().unwrap_or(window);
        let sentence = window
            .rfind([';', '!', '?'])
            .into_iter()
            .chain(window.rfind(". "))
            .max()
            .map_or(window, |cut| &window[cut + 1..]);
        let mut words = sentence
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .rev()
            .take(14);
        let mut buf = [0u8; 48];
        let is = |w: &str, list: &[&str], buf: &mut [u8; 48]| {
            crate::guardrails::fold::fold_small(w, buf).is_some_and(|f| list.contains(&f))
        };
        if !words.next().is_some_and(|w| is(w, NUMBER_NOUNS, &mut buf)) {
            return false;
        }
        let mut first = true;
        for w in words {
            let Some(f) = crate::guardrails::fold::fold_small(w, &mut buf) else {
                return false;
            };
            if first && POSSESSIVES.contains(&f) {
                return false;
            }
            first = false;
            if contains(&PHONE_WORDS_SORTED, f) || CONTACT_WORDS.contains(&f) {
                return false;
            }
            if contains(&REFERENCE_WORDS_SORTED, f) {
                return true;
            }
        }
        false
    }
}

/// Whether `window` (the text right before a number) ends with a word
/// glued to it by a dash, "INV-", "RE-", "SO12-", that is not a label such
/// as "Tel-" or "CPF-": the number is then the tail of an identifier.
fn code_prefix(window: &str) -> bool {
    let Some(head) = window.strip_suffix('-') else {
        return false;
    };
    let word = &head[head
        .trim_end_matches(|c: char| c.is_ascii_alphanumeric())
        .len()..];
    let lower = word.to_ascii_lowercase();
    (1..=12).contains(&word.len())
        && word.bytes().any(|b| b.is_ascii_alphabetic())
        && !contains(&PHONE_WORDS_SORTED, &lower)
        && !CONTACT_WORDS.contains(&lower.as_str())
}

/// Reference words naming a fiscal document, which is issued to a CPF or
/// CNPJ ("quero a nota no 52998224725", "nota para …").
/// (Portuguese only: a Spanish "factura n.º …" is an invoice number.)
const DOCUMENT_WORDS: &[&str] = &["nota", "nf", "nfe", "fatura", "boleto"];

/// Words that say a number is a payment card.
const CARD_WORDS: &[&str] = &[
    "card",
    "cards",
    "creditcard",
    "credit",
    "debit",
    "visa",
    "mastercard",
    "amex",
    "maestro",
    "jcb",
    "diners",
    "discover",
    "elo",
    "hipercard",
    "cartao",
    "cartoes",
    "credito",
    "debito",
    "tarjeta",
    "tarjetas",
    "karte",
    "kreditkarte",
    "kreditkartennummer",
    "kartennummer",
    "debitkarte",
    "ec-karte",
    "girocard",
    // A charge or a payment is made with a card.
    "payment",
    "payments",
    "pagamento",
    "parcela",
    "pago",
    "zahlung",
    "belastet",
    "charge",
    "charged",
    "cobranca",
    "cobraram",
    "cobrado",
    "cargo",
    "cobraron",
    "abbuchung",
    "abgebucht",
];

/// Words that say a 9-digit number is a US Social Security Number.
const SSN_WORDS: &[&str] = &[
    "ssn",
    "social",
    "security",
    "tax",
    "taxes",
    "taxpayer",
    "irs",
    "w-9",
    "w9",
    "w-2",
    "w2",
    "1099",
    "itin",
    "form",
    "forms",
    "verify",
    "verified",
    "verification",
    "identity",
    "identification",
    "ssa",
];

/// Words that name the number itself ("the number", "o número").
const NUMBER_NOUNS: &[&str] = &["number", "numero", "nummer", "nr", "no", "num", "nro"];

/// A possessive before "number" makes it someone's number: a phone.
const POSSESSIVES: &[&str] = &[
    "my", "your", "our", "his", "her", "their", "meu", "minha", "seu", "sua", "nosso", "nossa",
    "mi", "tu", "su", "nuestro", "nuestra", "mein", "meine", "meiner", "dein", "deine", "ihr",
    "ihre", "unser", "unsere", "sein", "seine",
];

/// Words that say the number is a way to reach someone, or a personal
/// document, which a far reference word must not override.
const CONTACT_WORDS: &[&str] = &[
    "contact",
    "reach",
    "text",
    "message",
    "dial",
    "ring",
    "contato",
    "contatar",
    "mensagem",
    "contacto",
    "contactar",
    "mensaje",
    "kontakt",
    "erreichen",
    "erreichbar",
    "nachricht",
    "cpf",
    "cnpj",
    "rg",
    "dni",
    "nie",
    "nif",
    "ssn",
    "iban",
    "card",
    "cartao",
    "tarjeta",
    "karte",
    "kreditkarte",
    "conta",
    "cuenta",
    "konto",
    "account",
];

pub(super) fn sorted(words: &'static [&'static str]) -> Vec<&'static str> {
    let mut v = words.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

pub(super) fn contains(sorted: &[&str], word: &str) -> bool {
    sorted.binary_search(&word).is_ok()
}

static REFERENCE_WORDS_SORTED: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| sorted(REFERENCE_WORDS));
static PHONE_WORDS_SORTED: LazyLock<Vec<&'static str>> = LazyLock::new(|| sorted(PHONE_WORDS));
static FILLER_WORDS_SORTED: LazyLock<Vec<&'static str>> = LazyLock::new(|| sorted(FILLER_WORDS));
static POSTAL_WORDS_SORTED: LazyLock<Vec<&'static str>> = LazyLock::new(|| sorted(POSTAL_WORDS));

/// Words that introduce a postal code.
const POSTAL_WORDS: &[&str] = &[
    "cep",
    "zip",
    "zipcode",
    "postcode",
    "postal",
    "plz",
    "postleitzahl",
    "cp",
    "cap",
];

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Words that introduce a reference number rather than personal data.
const REFERENCE_WORDS: &[&str] = &[
    "order",
    "orders",
    "pedido",
    "pedidos",
    "encomenda",
    "compra",
    "bestellung",
    "bestellnummer",
    "auftrag",
    "auftragsnummer",
    "commande",
    "ordine",
    "ticket",
    "chamado",
    "protocolo",
    "protocol",
    "invoice",
    "fatura",
    "factura",
    "rechnung",
    "rechnungsnummer",
    "nota",
    "nf",
    "nfe",
    "tracking",
    "rastreio",
    "rastreamento",
    "seguimiento",
    "envio",
    "envío",
    "sendung",
    "sendungsnummer",
    "sendungsverfolgung",
    "verfolgung",
    "seguimento",
    "trackingnummer",
    "paket",
    "paketnummer",
    "package",
    "parcel",
    "shipment",
    "remessa",
    "ref",
    "reference",
    "referencia",
    "referenz",
    "sku",
    "item",
    "artikel",
    "artikelnummer",
    "produto",
    "product",
    "producto",
    "case",
    "caso",
    "vorgang",
    "vorgangsnummer",
    "kundennummer",
    "customer",
    "cliente",
    "contrato",
    "contract",
    "vertrag",
    "vertragsnummer",
    "serial",
    "serie",
    "seriennummer",
    "lote",
    "batch",
    "code",
    "codigo",
    "boleto",
    "voucher",
    "cupom",
    "cupon",
    "gutschein",
    "localizador",
    "reserva",
    "booking",
    "buchung",
    "buchungsnummer",
    "transaction",
    "transacao",
    "transaccion",
    "transaktion",
    "protokoll",
    "protokollnummer",
    "aktenzeichen",
    "incidencia",
    "incidente",
    "expediente",
    "rma",
    "fac",
    "inv",
];

const PHONE_WORDS: &[&str] = &[
    "phone",
    "tel",
    "telephone",
    "mobile",
    "cell",
    "cellphone",
    "call",
    "whatsapp",
    "whats",
    "zap",
    "wpp",
    "telefone",
    "fone",
    "celular",
    "cel",
    "ligar",
    "ligue",
    "contato",
    "telefono",
    "movil",
    "llamar",
    "llama",
    "llamame",
    "telefon",
    "handy",
    "mobil",
    "handynummer",
    "telefonnummer",
    "rufnummer",
    "anrufen",
    "sms",
    "fax",
    "festnetz",
    "festnetznummer",
    "liga",
    "fijo",
    "fixo",
    "calling",
    "called",
    "reach",
    "text",
    "ligou",
    "ligando",
    "liguem",
    "retornem",
    "llamen",
    "llamarme",
    "llamada",
    "llamando",
    "rufen",
    "rufe",
    "ruf",
    "anruf",
    "ruckruf",
    "angerufen",
    "durchwahl",
    "ramal",
    "erreichbar",
    "buronummer",
    "mobilnummer",
    "privatnummer",
    "geschaftsnummer",
    "kontaktnummer",
];

const FILLER_WORDS: &[&str] = &[
    "number",
    "no",
    "nr",
    "nro",
    "num",
    "numero",
    "nummer",
    "n",
    "o",
    "is",
    "e",
    "es",
    "ist",
    "my",
    "your",
    "the",
    "a",
    "an",
    "meu",
    "minha",
    "mi",
    "su",
    "seu",
    "sua",
    "mein",
    "meine",
    "ihre",
    "die",
    "der",
    "das",
    "do",
    "da",
    "de",
    "del",
    "of",
    "for",
    "para",
    "fur",
    "says",
    "said",
    "shows",
    "showed",
    "mostra",
    "diz",
    "zeigt",
    "dice",
    "muestra",
    "to",
    "auf",
    "al",
    "on",
    "at",
    "me",
    "em",
    "en",
    "na",
    "unter",
    "under",
    "am",
    "im",
    "um",
    "here",
    "aqui",
    "hier",
    "was",
    "foi",
    "fue",
    "war",
    "with",
    "com",
    "con",
    "mit",
    "id",
    "atendimento",
    "fiscal",
];

/// A Brazilian area code (DDD) in use.
fn brazil_area(dd: &[u8]) -> bool {
    const DDD: &[u8] = &[
        11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 24, 27, 28, 31, 32, 33, 34, 35, 37, 38, 41, 42,
        43, 44, 45, 46, 47, 48, 49, 51, 53, 54, 55, 61, 62, 63, 64, 65, 66, 67, 68, 69, 71, 73, 74,
        75, 77, 79, 81, 82, 83, 84, 85, 86, 87, 88, 89, 91, 92, 93, 94, 95, 96, 97, 98, 99,
    ];
    dd.len() == 2
        && dd.iter().all(u8::is_ascii_digit)
        && DDD.contains(&((dd[0] - b'0') * 10 + (dd[1] - b'0')))
}

struct Window<'a> {
    run: &'a Run,
    first: usize,
    last: usize,
    digits: &'a str,
    /// Starts the run, follows a value, or opens a new group style.
    fresh: bool,
}

impl Window<'_> {
    fn groups(&self) -> &[Group] {
        &self.run.groups[self.first..=self.last]
    }

    fn inner_seps(&self) -> &[Sep] {
        &self.run.seps[self.first..self.last]
    }

    fn sizes(&self) -> impl Iterator<Item = usize> + '_ {
        self.groups().iter().map(Group::len)
    }

    fn sizes_are(&self, expected: &[usize]) -> bool {
        self.groups().len() == expected.len() && self.sizes().zip(expected).all(|(a, &b)| a == b)
    }

    fn seps_are(&self, expected: &[Sep]) -> bool {
        self.inner_seps() == expected
    }

    fn compact(&self) -> bool {
        self.first == self.last
    }

    fn uniform_sep(&self) -> Option<Sep> {
        let seps = self.inner_seps();
        let first = *seps.first()?;
        seps.iter().all(|&s| s == first).then_some(first)
    }

    fn starts_run(&self) -> bool {
        self.first == 0
    }

    /// Separators just outside the window; a tight one means the window is a
    /// slice of a longer number.
    fn glued_outside(&self) -> bool {
        let before = (self.first > 0).then(|| self.run.seps[self.first - 1]);
        let after = self.run.seps.get(self.last).copied();
        before.is_some_and(Sep::is_tight) || after.is_some_and(Sep::is_tight)
    }

    fn classify(&self, ctx: &Context<'_>, known: &KnownEntities) -> Option<(PiiType, f32)> {
        let n = self.digits.len();
        if known.is_known_phone(self.digits) {
            return Some((PiiType::Phone, 1.0));
        }
        if self.glued_outside() || self.inner_seps().contains(&Sep::Comma) || ctx.amount || ctx.code
        {
            return None;
        }
        // A bare number right after "order", "pedido", "Sendungsnummer"… is a
        // reference, whatever checksum it happens to pass.
        let bare = self.compact() && !self.run.plus && !self.run.paren_lead;
        // …except a checksum-valid CPF or CNPJ after a fiscal-document word:
        // a "nota" is issued *to* one ("quero a nota no 52998224725").
        let checksummed_id =
            (n == 11 && cpf_is_valid(self.digits)) || (n == 14 && cnpj_is_valid(self.digits));
        if bare && ctx.reference && !(ctx.document && checksummed_id) {
            return None;
        }
        // A leading "+" announces a phone number, whatever checksum the
        // digits happen to pass. ("00" does not: CPFs start with 00 too.)
        if self.starts_run() && self.run.plus {
            return self.phone(ctx);
        }
        use Sep::*;
        if n == 14 && cnpj_is_valid(self.digits) {
            let formatted =
                self.sizes_are(&[2, 3, 3, 4, 2]) && self.seps_are(&[Dot, Dot, Slash, Dash]);
            let partly = (self.sizes_are(&[8, 4, 2]) && self.seps_are(&[Slash, Dash]))
                || (self.sizes_are(&[12, 2]) && self.seps_are(&[Dash]));
            if formatted || partly || self.compact() {
                return Some((PiiType::Cnpj, if formatted { 0.99 } else { 0.9 }));
            }
        }
        if n == 11 && cpf_is_valid(self.digits) {
            let formatted = self.sizes_are(&[3, 3, 3, 2]) && self.seps_are(&[Dot, Dot, Dash]);
            if formatted {
                return Some((PiiType::Cpf, 0.99));
            }
            let partly = self.sizes_are(&[9, 2]) && self.seps_are(&[Dash]);
            // An 11-digit string passing both the CPF check and a Brazilian
            // mobile plan is more often a CPF (1 in 100 numbers pass the check
            // digits, about 1 in 15 look like a mobile), unless the words
            // around it say phone.
            let phone_words = !ctx.cpf && (ctx.phone || ctx.around().phone);
            let phone_like = phone::national(self.digits) || self.digits.starts_with('0');
            if partly || (self.compact() && !ctx.reference_far && !(phone_words && phone_like)) {
                return Some((PiiType::Cpf, if self.compact() { 0.9 } else { 0.95 }));
            }
        }
        if (12..=19).contains(&n) && self.card_grouping() && luhn_is_valid(self.digits) {
            // A brand's range is evidence enough from 13 digits on; a
            // 12-digit Maestro needs its 4-4-4 grouping or a card word in
            // the sentence, and a number of no listed range (a Maestro
            // range we do not list, a new issuer) a card word.
            let brand = card_brand_matches(self.digits);
            let worded = ctx.card || ctx.around().card;
            let card = if n == 12 {
                (brand && !self.compact()) || worded
            } else {
                brand || worded
            };
            if card {
                return Some((PiiType::Card, if self.compact() { 0.93 } else { 0.97 }));
            }
        }
        if n == 9 {
            if let Some(found) = self.ssn(ctx) {
                return found;
            }
        }
        if self.groups().len() == 4 && self.uniform_sep() == Some(Dot) && self.is_ipv4() {
            return Some((PiiType::Ip, 0.9));
        }
        if n == 9 && self.compact() && self.bare_ssn(ctx) {
            return Some((PiiType::Ssn, 0.6));
        }
        self.phone(ctx)
    }

    /// A 9-digit window read as a US SSN by the SSA's structure rules (area
    /// not 000, 666 or 900-999, group not 00, serial not 0000) and its shape
    /// or the words around it: `Some(Some(..))` an SSN, `Some(None)` not PII
    /// at all (SSN-shaped but invalid), `None` undecided (may be a phone).
    #[allow(clippy::option_option)]
    fn ssn(&self, ctx: &Context<'_>) -> Option<Option<(PiiType, f32)>> {
        use Sep::*;
        let dashed = self.sizes_are(&[3, 2, 4]) && self.uniform_sep() == Some(Dash);
        let spaced = self.sizes_are(&[3, 2, 4]) && self.uniform_sep() == Some(Space);
        // An SSN word before the number only counts for the shapes SSNs
        // are written in ("is my SSN. 217 705 980" is a phone).
        let worded = ctx.ssn && (self.compact() || spaced);
        if !ssn_is_valid(self.digits) {
            return (dashed || worded).then_some(None);
        }
        if dashed || worded {
            return Some(Some((PiiType::Ssn, 0.95)));
        }
        // "123 45 6789" is how an SSN is read out; no phone plan of ours
        // groups nine digits 3-2-4, so only a phone word makes it a phone.
        let around = ctx.around();
        if spaced && (around.ssn || !around.phone) {
            return Some(Some((PiiType::Ssn, 0.85)));
        }
        if self.compact() && around.ssn && (!around.phone || around.ssn_before) {
            return Some(Some((PiiType::Ssn, 0.85)));
        }
        None
    }

    /// A compact, SSA-valid 9-digit number that nothing else explains, in an
    /// English message with no order or phone word around it: an SSN is what
    /// such a number most often is there ("here is the number you asked
    /// for: 123456789"), and a placeholder too many costs little.
    fn bare_ssn(&self, ctx: &Context<'_>) -> bool {
        let around = ctx.around();
        ssn_is_valid(self.digits)
            && !around.phone
            && !around.reference
            && !ctx.reference
            && !ctx.reference_far
            && !ctx.postal
            && !ctx.phone
            && crate::guardrails::language::detect(ctx.text) == Some(crate::guardrails::Lang::En)
    }

    /// Written the way phone numbers are written in our countries, valid in
    /// a numbering plan or not (people mistype, fake-data libraries draw
    /// area codes at random, and plans change: "77 9056-6615" is an old
    /// Brazilian mobile): NANP "415-555-2671" / "(415)555-2671", Brazil
    /// "11 91234-5678" / "(11) 3456-7890" / "0800 123 4567", a trunk-zero
    /// area code apart ("(03449) 78690", "03662 585178"), Spain "612 34 56
    /// 78"; or any 0-prefixed 10-12 digits with a phone word around.
    fn phone_shaped(&self, ctx: &Context<'_>) -> bool {
        use Sep::*;
        if (!self.starts_run() && !self.fresh) || self.digits.len() < 7 {
            return false;
        }
        let d = self.digits.as_bytes();
        let n = d.len();
        let seps = self.inner_seps();
        let sizes: Vec<usize> = self.sizes().collect();
        let uniform = matches!(self.uniform_sep(), Some(Space | Dash | Dot));
        let opens = if self.starts_run() {
            self.run.paren_lead
        } else {
            self.run.seps[self.first - 1] == Paren
        };
        let paren = opens && seps.first() == Some(&Paren);
        let tidy = seps
            .iter()
            .all(|s| matches!(s, Space | Dash | Dot | Paren | Slash));
        if !tidy {
            return false;
        }
        if sizes == [3, 3, 4] && (uniform || (paren && seps[1..].iter().all(|&s| s == seps[1]))) {
            return true;
        }
        if sizes == [1, 3, 3, 4] && d[0] == b'1' && uniform {
            return true;
        }
        let dash_last = seps.last() == Some(&Dash);
        if matches!(sizes.as_slice(), [2, 4, 4] | [2, 5, 4]) && dash_last && brazil_area(&d[..2]) {
            return true;
        }
        if matches!(sizes.as_slice(), [3, 4, 4] | [3, 5, 4])
            && dash_last
            && d[0] == b'0'
            && brazil_area(&d[1..3])
        {
            return true;
        }
        if sizes == [4, 3, 4] && d[0] == b'0' && d[2..4] == *b"00" && b"3589".contains(&d[1]) {
            return true;
        }
        // With a phone word in the sentence, whatever the digits: "Ich habe
        // von (00247) 89787 aus angerufen".
        let worded = || ctx.phone || ctx.around().phone;
        if d[0] == b'0'
            && (d[1] != b'0' || worded())
            && (3..=5).contains(&sizes[0])
            && (2..=3).contains(&sizes.len())
            && (8..=12).contains(&n)
            && n - sizes[0] >= 4
            && (paren || matches!(self.uniform_sep(), Some(Space | Slash | Dash)))
        {
            return true;
        }
        if matches!(sizes.as_slice(), [3, 3, 3] | [3, 2, 2, 2])
            && (b'6'..=b'9').contains(&d[0])
            && self.uniform_sep() == Some(Space)
        {
            return true;
        }
        // Bare digits need a phone word: "my cell is 9688546251", "bitte
        // rufen Sie 04694191339 an".
        self.compact()
            && ((d[0] == b'0' && (10..=12).contains(&n))
                || (n == 10 && d[0] != b'0')
                || (n == 11 && d[0] == b'1'))
            && worded()
    }

    /// "089 12345", "089/12345", "(089) 12345", "0521-1234": a trunk zero and
    /// area code as their own group, then the subscriber number.
    fn area_code_apart(&self) -> bool {
        let groups = self.groups();
        let area = groups[0];
        // The subscriber part has four digits or more: "01310-100" is a
        // Brazilian CEP, not Alessandria's 0131.
        self.starts_run()
            && (2..=3).contains(&groups.len())
            && (2..=5).contains(&area.len())
            && self.digits.len() - area.len() >= 4
            && self.digits.starts_with('0')
            && !self.digits.starts_with("00")
            && (self.run.paren_lead
                || matches!(
                    self.uniform_sep(),
                    Some(Sep::Space | Sep::Slash | Sep::Dash)
                ))
    }

    fn card_grouping(&self) -> bool {
        if self.compact() {
            return true;
        }
        if !matches!(self.uniform_sep(), Some(Sep::Space | Sep::Dash)) {
            return false;
        }
        let groups = self.groups();
        let (last, head) = groups
            .split_last()
            .map_or((0, &[][..]), |(l, h)| (l.len(), h));
        (head.iter().all(|g| g.len() == 4) && (1..=4).contains(&last))
            || self.sizes_are(&[4, 6, 5])
            || self.sizes_are(&[4, 6, 4])
    }

    fn is_ipv4(&self) -> bool {
        let mut at = 0;
        self.groups().iter().all(|g| {
            let s = &self.digits[at..at + g.len()];
            at += g.len();
            s.len() <= 3
                && !(s.len() > 1 && s.starts_with('0'))
                && s.parse::<u16>().is_ok_and(|v| v <= 255)
        })
    }

    fn looks_like_date(&self) -> bool {
        if !matches!(self.uniform_sep(), Some(Sep::Dot | Sep::Slash | Sep::Dash)) {
            return false;
        }
        const DATES: &[&[usize]] = &[
            &[2, 2, 4],
            &[4, 2, 2],
            &[2, 2, 2],
            &[1, 2, 4],
            &[2, 1, 4],
            &[1, 1, 4],
            &[1, 1, 2],
            &[2, 2],
            &[1, 2],
            &[2, 1],
        ];
        DATES.iter().any(|d| self.sizes_are(d))
    }

    /// "1.234.567" and "12 345 678" style thousands grouping.
    fn looks_like_thousands(&self) -> bool {
        let groups = self.groups();
        groups.len() >= 2
            && (1..=3).contains(&groups[0].len())
            && groups[1..].iter().all(|g| g.len() == 3)
            && matches!(self.uniform_sep(), Some(Sep::Dot | Sep::Comma))
    }

    fn phone(&self, ctx: &Context<'_>) -> Option<(PiiType, f32)> {
        let seps = self.inner_seps();
        if seps.iter().any(|s| matches!(s, Sep::Loose | Sep::Comma))
            || self.looks_like_date()
            || self.looks_like_thousands()
        {
            return None;
        }
        // A leading "+" is the strongest sign of a phone there is: a country
        // code and a length that country's numbers have will do when the
        // number is not in its plan ("+55 91 0388-3685", "+49(0) 901915084").
        if self.starts_run() && self.run.plus {
            return phone::international(self.digits)
                .or_else(|| phone::international_possible(self.digits))
                .map(|s| (PiiType::Phone, s));
        }
        if ctx.postal {
            return None;
        }
        if let Some(rest) = self.digits.strip_prefix("00") {
            if let Some(score) = phone::international(rest) {
                return Some((PiiType::Phone, score - 0.05));
            }
            // "001-248-323-5762", "00 49 151 …": an exit prefix written
            // apart (CPFs start with 00 too, but are never grouped so).
            let apart = !self.compact() && self.groups()[0].len() <= 3;
            if self.starts_run() && (apart || ctx.phone || ctx.around().phone) {
                if let Some(score) = phone::international_possible(rest) {
                    return Some((PiiType::Phone, score - 0.05));
                }
            }
        }
        let formatted = !self.compact() || (self.starts_run() && self.run.paren_lead);
        // A Unix timestamp of these years (15…-19…, 2017-2033) read as a
        // bare 10-digit national number: no phone without a phone word.
        if self.compact()
            && self.digits.len() == 10
            && self.digits.as_bytes()[0] == b'1'
            && (b'5'..=b'9').contains(&self.digits.as_bytes()[1])
            && !ctx.phone
        {
            return None;
        }
        if !phone::national(self.digits) {
            if !ctx.reference && !ctx.reference_far && self.phone_shaped(ctx) {
                return Some((PiiType::Phone, 0.7));
            }
            // A short landline ("089 12345", "030 123456", "0521 1234") is
            // valid for libphonenumber, but so is nearly any 6-8 digit
            // number somewhere: it counts only as a fixed line of one of our
            // countries, and only with a phone word before it or its area
            // code written apart with the trunk zero, never after an order
            // word (dates, amounts and thousands are already out).
            let short = phone::national_short_fixed(self.digits)
                && !ctx.reference
                && !ctx.reference_far
                && (ctx.phone || self.area_code_apart());
            if !short {
                return None;
            }
            return Some((PiiType::Phone, if ctx.phone { 0.9 } else { 0.8 }));
        }
        if !formatted && (ctx.reference || ctx.reference_far) {
            return None;
        }
        let score = match (formatted, ctx.phone) {
            (_, true) => 0.95,
            (true, false) => 0.85,
            (false, false) => 0.75,
        };
        Some((PiiType::Phone, score))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(PiiType, &str)> {
        let mut out = Vec::new();
        detect(text, &KnownEntities::default(), &mut out);
        out.iter()
            .map(|s| (s.kind, &text[s.start..s.end]))
            .collect()
    }

    #[test]
    fn formatted_cpf_and_card_are_found() {
        assert_eq!(
            kinds("CPF 529.982.247-25 ok"),
            vec![(PiiType::Cpf, "529.982.247-25")]
        );
        assert_eq!(
            kinds("card 4111 1111 1111 1111 12/27"),
            vec![(PiiType::Card, "4111 1111 1111 1111")]
        );
    }

    #[test]
    fn phones_in_several_national_formats_are_found() {
        for p in [
            "+55 11 98765-4321",
            "(11) 98765-4321",
            "+1 415-555-0132",
            "030 12345678",
            "06 12 34 56 78",
            "+44 20 7946 0958",
        ] {
            let text = format!("ring me at {p} please");
            assert_eq!(kinds(&text), vec![(PiiType::Phone, p)], "{p}");
        }
    }

    #[test]
    fn dates_amounts_and_order_numbers_are_not_pii() {
        for t in [
            "on 12/03/2024",
            "R$ 1.234,56",
            "order #4155550132",
            "pedido 11987654321",
            "BR123456789BR",
            "2024-03-12",
        ] {
            assert_eq!(kinds(t), vec![], "{t}");
        }
    }
}
