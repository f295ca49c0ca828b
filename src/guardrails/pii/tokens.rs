//! Token-shaped PII: e-mail addresses, URLs carrying credentials, secrets and
//! API keys, IPv6 addresses, IBANs and the alphanumeric CNPJ.
//!
//! Each scanner starts only at a cheap anchor (`@`, `://`, a known key prefix,
//! a `:` or a word start) and never moves backwards past the previous anchor,
//! so every byte is looked at a bounded number of times.

use std::net::Ipv6Addr;
use std::sync::LazyLock;

use memchr::{memchr_iter, memmem};

use crate::guardrails::fold::{self, Folded};
use crate::guardrails::pii::checks::{cnpj_is_valid, iban_is_valid, iban_length};
use crate::guardrails::pii::{Cue, CueMatch, PiiSpan, PiiType};

pub(super) fn detect(text: &str, folded: &Folded<'_>, cues: &[CueMatch], out: &mut Vec<PiiSpan>) {
    emails(text, out);
    urls(text, out);
    prefixed_secrets(text, folded, cues, out);
    pem_blocks(text, out);
    keyword_secrets(text, folded, cues, out);
    entropy_secrets(text, out);
    ipv6(text, out);
    word_starts(text, out);
}

fn is_local_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-' | '\'')
}

fn is_domain_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '-')
}

fn emails(text: &str, out: &mut Vec<PiiSpan>) {
    let bytes = text.as_bytes();
    let mut floor = 0;
    for at in memchr_iter(b'@', bytes) {
        if at < floor {
            continue;
        }
        let mut start = at;
        for (i, c) in text[floor..at].char_indices().rev() {
            if !is_local_char(c) {
                break;
            }
            start = floor + i;
        }
        while start < at && matches!(bytes[start], b'.' | b'\'') {
            start += 1;
        }
        let mut end = at + 1;
        for (i, c) in text[at + 1..].char_indices() {
            if !is_domain_char(c) {
                break;
            }
            end = at + 1 + i + c.len_utf8();
        }
        floor = end;
        while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if start == at || bytes[at - 1] == b'.' {
            continue;
        }
        let domain = &text[at + 1..end];
        let mut labels = domain.split('.');
        let tld = labels.next_back().unwrap_or("");
        let valid = domain.contains('.')
            && domain
                .split('.')
                .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'))
            && tld.chars().count() >= 2
            && tld.chars().all(char::is_alphabetic);
        if valid {
            out.push(PiiSpan::new(PiiType::Email, start, end, 0.98));
        }
    }
}

/// Query and fragment parameters whose value is a credential.
const TOKEN_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth",
    "auth_token",
    "authtoken",
    "api_key",
    "apikey",
    "key",
    "secret",
    "client_secret",
    "password",
    "passwd",
    "pass",
    "pwd",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "session",
    "sessionid",
    "session_id",
    "sid",
    "code",
    "jwt",
    "otp",
    "reset_token",
    "invite",
    "invite_token",
    "magic",
    "hash",
    "ticket",
    "st",
    "sv",
    "se",
    "skoid",
];

fn urls(text: &str, out: &mut Vec<PiiSpan>) {
    let bytes = text.as_bytes();
    let mut floor = 0;
    static SCHEME: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new("://"));
    for at in SCHEME.find_iter(bytes) {
        if at < floor {
            continue;
        }
        let mut start = at;
        while start > floor
            && (bytes[start - 1].is_ascii_alphanumeric()
                || matches!(bytes[start - 1], b'+' | b'.' | b'-'))
        {
            start -= 1;
        }
        if start == at || !bytes[start].is_ascii_alphabetic() {
            continue;
        }
        let mut end = at + 3;
        while end < bytes.len()
            && !bytes[end].is_ascii_whitespace()
            && !matches!(
                bytes[end],
                b'<' | b'>' | b'"' | b'`' | b'{' | b'}' | b'|' | b'\\' | b'^'
            )
        {
            end += 1;
        }
        // Unicode whitespace also ends a URL.
        if let Some(ws) = text[at + 3..end].find(char::is_whitespace) {
            end = at + 3 + ws;
        }
        floor = end;
        while end > at + 3
            && matches!(
                bytes[end - 1],
                b'.' | b',' | b';' | b':' | b'!' | b'?' | b')' | b'\'' | b']'
            )
        {
            end -= 1;
        }
        let url = &text[start..end];
        if let Some(score) = url_carries_secret(&url[at - start + 3..]) {
            out.push(PiiSpan::new(PiiType::Url, start, end, score));
        }
    }
}

/// `rest` is the URL after `scheme://`.
fn url_carries_secret(rest: &str) -> Option<f32> {
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if let Some(at) = authority.rfind('@') {
        if let Some((_, password)) = authority[..at].split_once(':') {
            if !password.is_empty() {
                return Some(0.97);
            }
        }
    }
    let tail = &rest[authority_end..];
    let (path, query) = tail.split_at(tail.find(['?', '#']).unwrap_or(tail.len()));
    for pair in query
        .trim_start_matches(['?', '#'])
        .split(['&', ';', '?', '#'])
    {
        if let Some((key, value)) = pair.split_once('=') {
            if value.len() >= 4 && TOKEN_PARAMS.contains(&key.to_ascii_lowercase().as_str()) {
                return Some(0.95);
            }
        }
    }
    // Magic links carry the token as a path segment.
    path.split('/')
        .any(|seg| seg.len() >= 20 && looks_random(seg))
        .then_some(0.85)
}

/// Well-known key prefixes and the shortest body that follows them.
pub(super) const PREFIXES: &[(&str, usize)] = &[
    ("sk-ant-", 20),
    ("sk-proj-", 20),
    ("sk-", 20),
    ("sk_live_", 16),
    ("sk_test_", 16),
    ("rk_live_", 16),
    ("rk_test_", 16),
    ("pk_live_", 16),
    ("whsec_", 16),
    ("ghp_", 30),
    ("gho_", 30),
    ("ghu_", 30),
    ("ghs_", 30),
    ("ghr_", 30),
    ("github_pat_", 30),
    ("glpat-", 20),
    ("xoxb-", 10),
    ("xoxp-", 10),
    ("xoxa-", 10),
    ("xoxs-", 10),
    ("xapp-", 10),
    ("AKIA", 16),
    ("ASIA", 16),
    ("AIza", 30),
    ("ya29.", 20),
    ("hf_", 30),
    ("npm_", 30),
    ("pypi-", 50),
    ("SG.", 20),
    ("shpat_", 20),
    ("shpss_", 20),
    ("dop_v1_", 40),
    ("secret_", 30),
    ("lin_api_", 30),
    ("rzp_live_", 14),
    ("sq0atp-", 20),
    ("EAAG", 30),
    ("eyJ", 20),
];

fn is_key_char(b: u8) -> bool {
    KEY_CHAR[b as usize]
}

fn prefixed_secrets(text: &str, folded: &Folded<'_>, cues: &[CueMatch], out: &mut Vec<PiiSpan>) {
    let bytes = text.as_bytes();
    for m in cues {
        let Cue::KeyPrefix(i) = m.cue else {
            continue;
        };
        let (prefix, min_body) = PREFIXES[usize::from(i)];
        let (start, _) = folded.original_range(m.start, m.end);
        // The cue matched case-insensitively; keys are case-sensitive.
        if !text[start..].starts_with(prefix) {
            continue;
        }
        let prefix_end = start + prefix.len();
        let mut end = prefix_end;
        while end < bytes.len() && is_key_char(bytes[end]) {
            end += 1;
        }
        while end > prefix_end && matches!(bytes[end - 1], b'.' | b'-' | b'/' | b'+') {
            end -= 1;
        }
        let body = &text[prefix_end..end];
        let ok = if prefix == "eyJ" {
            // A JWT: three base64url parts.
            let parts: Vec<&str> = text[start..end].split('.').collect();
            parts.len() == 3 && parts[0].len() >= 10 && parts[1].len() >= 10
        } else {
            body.len() >= min_body
                && body
                    .bytes()
                    .any(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        };
        if ok {
            out.push(PiiSpan::new(PiiType::Secret, start, end, 0.97));
        }
    }
}

fn pem_blocks(text: &str, out: &mut Vec<PiiSpan>) {
    static BEGIN: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new("-----BEGIN "));
    let mut from = 0;
    while let Some(rel) = BEGIN.find(&text.as_bytes()[from..]) {
        let start = from + rel;
        let header_end = text[start + 11..]
            .find("-----")
            .map_or(text.len(), |e| start + 11 + e + 5);
        let header = &text[start..header_end.min(text.len())];
        let end = match text[header_end..].find("-----END ") {
            Some(e) => {
                let after = header_end + e + 9;
                text[after..]
                    .find("-----")
                    .map_or(text.len(), |x| after + x + 5)
            }
            None => text.len(),
        };
        if header.contains("PRIVATE KEY") {
            out.push(PiiSpan::new(PiiType::Secret, start, end, 0.99));
        }
        from = end.max(start + 11);
    }
}

/// Words after which a `:`/`=` (or "is") introduces a credential.
pub(super) const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "senha",
    "contrasena",
    "clave",
    "passwort",
    "kennwort",
    "pin",
    "api key",
    "apikey",
    "api_key",
    "api-key",
    "token",
    "access token",
    "secret",
    "secret key",
    "access key",
    "client secret",
    "chave de api",
    "chave api",
    "chave",
    "clave de api",
    "clave api",
    "llave",
    "schlussel",
    "api-schlussel",
    "api schlussel",
    "key",
    "zugangsdaten",
    "codigo de acesso",
    "codigo de seguranca",
    "cvv",
    "cvc",
];

/// Linking words between a secret word and its value ("my password is …").
const SECRET_LINKS: &[&str] = &["is", "e", "es", "ist", "lautet", "was", "era", "war"];

fn keyword_secrets(text: &str, folded: &Folded<'_>, cues: &[CueMatch], out: &mut Vec<PiiSpan>) {
    for m in cues {
        if m.cue != Cue::SecretWord {
            continue;
        }
        let (_, orig_end) = folded.original_range(m.start, m.end);
        // Look no further than a value can be long: without this bound,
        // "password-password-…" would rescan the whole text for every cue.
        let mut limit = (orig_end + 256).min(text.len());
        while !text.is_char_boundary(limit) {
            limit -= 1;
        }
        let rest = &text[orig_end..limit];
        let trimmed = rest.trim_start_matches([' ', '\t']);
        let (explicit, direct, value_from) = if let Some(r) = trimmed.strip_prefix([':', '=']) {
            (true, false, r)
        } else {
            let mut words = trimmed.splitn(2, ' ');
            let link = words.next().unwrap_or("");
            if SECRET_LINKS.contains(&fold::fold_str(link).as_str()) {
                (false, false, words.next().unwrap_or(""))
            } else {
                // "the token Xy12ab! stopped working": the value right after the word.
                (false, true, trimmed)
            }
        };
        let value_from = value_from.trim_start_matches([' ', '\t']);
        let value_start = limit - value_from.len();
        let len = value_from
            .find(char::is_whitespace)
            .unwrap_or(value_from.len());
        let value = value_from[..len].trim_end_matches(['.', ',', ';', ')', '"', '\'']);
        let value = value.trim_start_matches(['"', '\'']);
        if value.chars().count() < 4 || value.len() > 200 || value.starts_with('[') {
            continue;
        }
        let value_start = value_start
            + (value_from[..len].len() - value_from[..len].trim_start_matches(['"', '\'']).len());
        // Without ':' or '=' only a value that looks like a password counts:
        // "my password is wrong" is a complaint, "my password is Hunter2!" is not.
        // A value right after the word (no link) must mix letters and digits,
        // so "the token expired" or "key 12345" stay text.
        let digit = value.bytes().any(|b| b.is_ascii_digit());
        let letter = value.bytes().any(|b| b.is_ascii_alphabetic());
        let looks_secret = if direct {
            digit && letter && value.len() >= 6
        } else {
            digit
                || value.bytes().any(|b| b.is_ascii_punctuation())
                || (value.bytes().any(|b| b.is_ascii_uppercase())
                    && value.bytes().skip(1).any(|b| b.is_ascii_uppercase()))
        };
        if explicit || looks_secret {
            out.push(PiiSpan::new(
                PiiType::Secret,
                value_start,
                value_start + value.len(),
                if explicit { 0.9 } else { 0.8 },
            ));
        }
    }
}

/// Character classes and Shannon entropy of a token.
fn looks_random(token: &str) -> bool {
    let b = token.as_bytes();
    let lower = b.iter().any(u8::is_ascii_lowercase);
    let upper = b.iter().any(u8::is_ascii_uppercase);
    let digit = b.iter().any(u8::is_ascii_digit);
    let classes = usize::from(lower) + usize::from(upper) + usize::from(digit);
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    // Random tokens mix classes throughout; words with a number tacked on do not.
    classes == 3 && digits >= 2 && entropy(b) >= 3.5
}

fn entropy(b: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &c in b {
        counts[c as usize] += 1;
    }
    let n = b.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Bytes that may appear in a key or token, as a lookup table (this loop
/// touches every byte of every message).
static KEY_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'+' | b'/' | b'=');
        b += 1;
    }
    t
};

fn entropy_secrets(text: &str, out: &mut Vec<PiiSpan>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && !KEY_CHAR[bytes[i] as usize] {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && KEY_CHAR[bytes[i] as usize] {
            i += 1;
        }
        // Nearly every token is a short word: decide that first.
        if i - start < 24 {
            continue;
        }
        let mut s = start;
        let mut e = i;
        while s < e && matches!(bytes[s], b'.' | b'-' | b'/' | b'+' | b'=') {
            s += 1;
        }
        while e > s && matches!(bytes[e - 1], b'.' | b'-' | b'/' | b'+') {
            e -= 1;
        }
        let glued = (start > 0
            && !bytes[start - 1].is_ascii()
            && text[..start]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric))
            || (i < bytes.len()
                && !bytes[i].is_ascii()
                && text[i..].chars().next().is_some_and(char::is_alphanumeric));
        let token = &text[s..e];
        if glued || token.contains("://") {
            continue;
        }
        if (24..=512).contains(&token.len()) && looks_random(token) {
            out.push(PiiSpan::new(PiiType::Secret, s, e, 0.7));
        } else if token.len() >= HEX_KEY_MIN {
            hex_keys(text, s, e, out);
        }
    }
}

/// Shortest run of hex digits taken as a key: 128 bits, the size of most
/// hex API keys and tokens (32 characters; SHA-1 tokens are 40, SHA-256 64).
const HEX_KEY_MIN: usize = 32;

/// Hex keys and tokens in one case ("3f9a…", "A1B2…"), which the mixed-case
/// test of [`looks_random`] cannot see: every run of 32 to 128 hex digits
/// in the token, between its `-`, `.`, `/`, `_`, `+` or `=`, mixing letters
/// and digits with the entropy of random hex.
///
/// Masked without any context word: a privacy product would rather hide a
/// harmless hash (a commit id, a UUID written without dashes) than let a
/// 32-character key through. A dashed UUID is four short runs and stays
/// text; so does hex that decodes to readable text (an encoded instruction,
/// which the injection screen looks into, not a key).
fn hex_keys(text: &str, start: usize, end: usize, out: &mut Vec<PiiSpan>) {
    let b = text.as_bytes();
    let mut i = start;
    while i < end {
        let run = i;
        while i < end && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let part = &b[run..i];
        if (HEX_KEY_MIN..=128).contains(&part.len())
            && part.iter().all(u8::is_ascii_hexdigit)
            && part.iter().any(u8::is_ascii_digit)
            && part.iter().any(u8::is_ascii_alphabetic)
            && entropy(part) >= 2.75
            && !crate::guardrails::decode::hex_is_text(&text[run..i])
        {
            out.push(PiiSpan::new(PiiType::Secret, run, i, 0.75));
        }
        i += 1;
    }
}

fn ipv6(text: &str, out: &mut Vec<PiiSpan>) {
    let bytes = text.as_bytes();
    let mut floor = 0;
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for at in memchr_iter(b':', bytes) {
        if at < floor {
            continue;
        }
        let is_v6 = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
        let mut start = at;
        while start > floor && is_v6(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = at;
        while end < bytes.len() && is_v6(bytes[end]) {
            end += 1;
        }
        floor = end;
        while end > start && bytes[end - 1] == b'.' {
            end -= 1;
        }
        if end < bytes.len() && word(bytes[end]) {
            continue;
        }
        if let Some(s) = ipv6_start(text, start, end) {
            out.push(PiiSpan::new(PiiType::Ip, s, end, 0.9));
        }
    }
}

/// Where an IPv6 address ending at `end` starts, if `start..end` holds one.
///
/// A candidate glued to a word before it is not an address ("std::io")
/// unless that word is a label closed by a colon: "IP:2001:db8::1",
/// "ipv6:fe80::1" (where the label's last letters may even be hex digits
/// the scan took for the address). The address then starts after the
/// label's colon and must hold on its own, so "Zeit:10:30" or "ab:cd:ef"
/// stay text.
fn ipv6_start(text: &str, start: usize, end: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let valid = |s: usize| {
        let candidate = &text[s..end];
        let colons = candidate.bytes().filter(|&b| b == b':').count();
        let hex_groups = candidate.split(':').filter(|g| !g.is_empty()).count();
        colons >= 2 && hex_groups >= 2 && candidate.parse::<Ipv6Addr>().is_ok()
    };
    let glued = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
    if !glued {
        if valid(start) {
            return Some(start);
        }
        // "IP :2001:db8::1": the label's colon, not the address's "::".
        let lone_colon = bytes[start] == b':' && bytes.get(start + 1) != Some(&b':');
        return (lone_colon && start + 1 < end && valid(start + 1)).then_some(start + 1);
    }
    // The label: the word before the candidate, up to the first colon.
    let mut label_start = start;
    while label_start > 0 && bytes[label_start - 1].is_ascii_alphanumeric() {
        label_start -= 1;
    }
    let colon = start + text[start..end].find(':')?;
    let label = &text[label_start..colon];
    let is_label = label.bytes().any(|b| b.is_ascii_alphabetic())
        && (label_start == 0 || !matches!(bytes[label_start - 1], b'_' | b':' | b'.'));
    (is_label && valid(colon + 1)).then_some(colon + 1)
}

/// Scanners anchored at the start of an ASCII word: IBAN and alphanumeric CNPJ.
fn word_starts(text: &str, out: &mut Vec<PiiSpan>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        // A word start: not glued to a letter or digit before it.
        let glued = i > 0
            && (bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || (!bytes[i - 1].is_ascii()
                    && text[..i]
                        .chars()
                        .next_back()
                        .is_some_and(char::is_alphanumeric)));
        if !glued {
            let looks_iban = bytes.len() >= i + 4
                && bytes[i].is_ascii_alphabetic()
                && bytes[i + 1].is_ascii_alphabetic()
                && bytes[i + 2].is_ascii_digit()
                && bytes[i + 3].is_ascii_digit();
            if let Some(end) = looks_iban.then(|| iban_at(text, i)).flatten() {
                out.push(PiiSpan::new(PiiType::Iban, i, end, 0.99));
                i = end;
                continue;
            }
            let looks_cnpj = bytes.len() >= i + 14
                && (bytes[i].is_ascii_digit() || bytes[i].is_ascii_uppercase());
            if let Some((end, score)) = looks_cnpj.then(|| alnum_cnpj_at(text, i)).flatten() {
                out.push(PiiSpan::new(PiiType::Cnpj, i, end, score));
                i = end;
                continue;
            }
        }
        while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
    }
}

/// An IBAN starting at `start`, compact or grouped by single spaces, of
/// exactly its country's length and not followed by more alphanumerics.
fn iban_at(text: &str, start: usize) -> Option<usize> {
    let b = text.as_bytes();
    if b.len() < start + 4
        || !b[start].is_ascii_alphabetic()
        || !b[start + 1].is_ascii_alphabetic()
        || !b[start + 2].is_ascii_digit()
        || !b[start + 3].is_ascii_digit()
    {
        return None;
    }
    let country = text[start..start + 2].to_ascii_uppercase();
    let want = iban_length(&country)?;
    let mut compact = String::with_capacity(want);
    let mut i = start;
    while compact.len() < want && i < b.len() {
        let c = b[i];
        if c.is_ascii_alphanumeric() {
            compact.push(c as char);
            i += 1;
        } else if (c == b' ' || c == b'-')
            && i + 1 < b.len()
            && b[i + 1].is_ascii_alphanumeric()
            && i > start
        {
            i += 1;
        } else {
            return None;
        }
    }
    let boundary = i >= b.len()
        || !text[i..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
    (compact.len() == want && boundary && iban_is_valid(&compact)).then_some(i)
}

/// The alphanumeric CNPJ (from July 2026): `12.ABC.345/01DE-35` or compact,
/// uppercase. Purely numeric ones are left to the numeric scanner.
fn alnum_cnpj_at(text: &str, start: usize) -> Option<(usize, f32)> {
    let b = text.as_bytes();
    let is_c = |c: u8| c.is_ascii_digit() || c.is_ascii_uppercase();
    let mut compact = [0u8; 14];
    let mut n = 0;
    let mut i = start;
    let mut formatted = true;
    // Expected separators after character index 1, 4, 7 and 11.
    let seps: [(usize, u8); 4] = [(2, b'.'), (5, b'.'), (8, b'/'), (12, b'-')];
    while n < 14 && i < b.len() {
        if let Some(&(_, sep)) = seps.iter().find(|(at, _)| *at == n) {
            if b[i] == sep {
                i += 1;
            } else if n == 2 {
                formatted = false;
            }
        }
        if i >= b.len() || !is_c(b[i]) {
            return None;
        }
        compact[n] = b[i];
        n += 1;
        i += 1;
    }
    let boundary = i >= b.len()
        || !text[i..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
    let has_letter = compact[..12].iter().any(u8::is_ascii_uppercase);
    let s = std::str::from_utf8(&compact).ok()?;
    (n == 14 && boundary && has_letter && cnpj_is_valid(s))
        .then_some((i, if formatted { 0.99 } else { 0.9 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<(PiiType, &str)> {
        let mut out = Vec::new();
        let folded = Folded::new(text);
        detect(
            text,
            &folded,
            &crate::guardrails::pii::cue_matches(&folded),
            &mut out,
        );
        out.iter()
            .map(|s| (s.kind, &text[s.start..s.end]))
            .collect()
    }

    #[test]
    fn token_detectors_find_their_values() {
        assert_eq!(
            found("mail me: ana.souza+x@example.com.br."),
            vec![(PiiType::Email, "ana.souza+x@example.com.br")]
        );
        assert_eq!(
            found("IBAN DE89 3704 0044 0532 0130 00 thanks"),
            vec![(PiiType::Iban, "DE89 3704 0044 0532 0130 00")]
        );
        assert_eq!(
            found("CNPJ 12.ABC.345/01DE-35"),
            vec![(PiiType::Cnpj, "12.ABC.345/01DE-35")]
        );
        assert_eq!(
            found("ip fe80::1ff:fe23:4567:890a here"),
            vec![(PiiType::Ip, "fe80::1ff:fe23:4567:890a")]
        );
        assert_eq!(
            found("use https://bob:hunter2@db.example.com/x"),
            vec![
                (PiiType::Email, "hunter2@db.example.com"),
                (PiiType::Url, "https://bob:hunter2@db.example.com/x")
            ]
        );
        assert_eq!(
            found("my password is Hunter2!"),
            vec![(PiiType::Secret, "Hunter2!")]
        );
    }

    #[test]
    fn a_grouped_iban_with_trailing_digits_is_refused() {
        assert_eq!(found("DE89 3704 0044 0532 0130 0012"), vec![]);
    }
}
