//! A generator of labelled support messages and the scorer that measures the
//! detectors against it.
//!
//! Messages are in English, Portuguese (Brazil), Spanish and German; every
//! PII type appears in several formats, with and without context words, next
//! to distractors that must not be masked (order numbers, dates, amounts,
//! tracking codes, ZIP codes), and a share of messages carry no PII at all.
//! Generated values are valid by construction (Luhn, mod 97, check digits)
//! and phone numbers are checked against libphonenumber's full validator, so
//! the labels do not depend on the detector's own notion of validity.
//!
//! Deterministic: the same seed gives the same corpus on every machine.
//!
//! Test support, not part of the crate: the guardrail tests, the bench and the examples mount
//! it with `#[path]`, so the shipped binary holds none of it. It uses only the crate's public
//! API.
#![allow(dead_code)] // each target that mounts it uses a different part

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use custodian::guardrails::pii::{
    cnpj_is_valid, cpf_is_valid, KnownEntities, KnownEntitiesSpec, PiiType,
};
use custodian::guardrails::{evaluate, Context, FindingKind, Lang, Policy, Stage};

/// What a labelled span is, finer than [`PiiType`] where targets differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
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
    /// A name the CRM context knows.
    NameCrm,
    /// A name from "my name is …" and its translations.
    NameIntro,
    /// A name under a sign-off.
    NameSignoff,
    Company,
    Address,
    /// Distractors: labelled so we can report how often they are masked.
    OrderNumber,
    Date,
    Amount,
    TrackingCode,
    ZipCode,
    /// References phrased otherwise or further from their keyword: "ref.",
    /// "Protokoll", "nº do pedido", "localizador", "invoice INV-…", "the
    /// order I placed on Monday has the number …".
    Reference,
}

impl Category {
    /// The PII type a detection must have to count for this category.
    pub fn pii_type(self) -> Option<PiiType> {
        Some(match self {
            Category::Email => PiiType::Email,
            Category::Phone => PiiType::Phone,
            Category::Card => PiiType::Card,
            Category::Iban => PiiType::Iban,
            Category::Ssn => PiiType::Ssn,
            Category::Cpf => PiiType::Cpf,
            Category::Cnpj => PiiType::Cnpj,
            Category::Ip => PiiType::Ip,
            Category::Secret => PiiType::Secret,
            Category::Url => PiiType::Url,
            Category::NameCrm | Category::NameIntro | Category::NameSignoff => PiiType::Name,
            Category::Company => PiiType::Company,
            Category::Address => PiiType::Address,
            _ => return None,
        })
    }

    /// Structured identifiers: the ones with a ≥ 0.99 fully-masked target.
    pub fn is_structured(self) -> bool {
        matches!(
            self,
            Category::Email
                | Category::Phone
                | Category::Card
                | Category::Iban
                | Category::Ssn
                | Category::Cpf
                | Category::Cnpj
                | Category::Ip
                | Category::Secret
                | Category::Url
        )
    }
}

/// A labelled span of a sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub category: Category,
    pub start: usize,
    pub end: usize,
}

/// One generated message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub lang: Lang,
    pub text: String,
    pub spans: Vec<Span>,
    /// CRM context to pass along (`context` in the scanner's input).
    pub context: KnownEntitiesSpec,
}

/// SplitMix64: tiny, fast, and the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    pub fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }

    fn alnum(&mut self, n: usize, alphabet: &[u8]) -> String {
        (0..n).map(|_| char::from(self.pick(alphabet))).collect()
    }
}

const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Builds a message piece by piece, recording labelled spans.
#[derive(Default)]
struct Builder {
    text: String,
    spans: Vec<Span>,
}

impl Builder {
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }

    fn value(&mut self, category: Category, value: &str) {
        let start = self.text.len();
        self.text.push_str(value);
        self.spans.push(Span {
            category,
            start,
            end: self.text.len(),
        });
    }

    /// Fills a template: `{}` is the value.
    fn template(&mut self, template: &str, category: Category, value: &str) {
        let (before, after) = template.split_once("{}").unwrap_or((template, ""));
        self.push(before);
        self.value(category, value);
        self.push(after);
    }
}

// ---------------------------------------------------------------- values

fn luhn_complete(rng: &mut Rng, prefix: &str, len: usize) -> String {
    let mut s = prefix.to_string();
    s.push_str(&rng.digits(len - prefix.len() - 1));
    for check in 0..10u8 {
        let candidate = format!("{s}{check}");
        if custodian::guardrails::pii::luhn_is_valid(&candidate) {
            return candidate;
        }
    }
    unreachable!("one of ten check digits always satisfies Luhn")
}

fn group(s: &str, sizes: &[usize], sep: &str) -> String {
    let mut out = Vec::new();
    let mut at = 0;
    for &n in sizes {
        if at >= s.len() {
            break;
        }
        let end = (at + n).min(s.len());
        out.push(&s[at..end]);
        at = end;
    }
    if at < s.len() {
        out.push(&s[at..]);
    }
    out.join(sep)
}

fn card(rng: &mut Rng) -> String {
    let (prefix, len): (String, usize) = match rng.below(13) {
        0 | 1 => ("4".into(), 16),
        2 => (format!("5{}", 1 + rng.below(5)), 16),
        3 => (format!("{}", 2221 + rng.below(500)), 16),
        4 => (["34", "37"][rng.below(2)].into(), 15),
        5 => ("6011".into(), 16),
        6 => (
            ["636368", "504175", "509066", "650031"][rng.below(4)].into(),
            16,
        ),
        7 => ("606282".into(), 16),
        8 => (format!("35{}", 28 + rng.below(62)), 16),
        // Mir, RuPay and Troy.
        9 => (format!("220{}", rng.below(5)), 16),
        10 => (["81", "82", "508", "6521"][rng.below(4)].into(), 16),
        11 => ("9792".into(), 16),
        _ => ("36".into(), 14),
    };
    let digits = luhn_complete(rng, &prefix, len);
    match (rng.below(4), len) {
        (0, _) => digits,
        (_, 15) => group(&digits, &[4, 6, 5], [" ", "-"][rng.below(2)]),
        (_, 14) => group(&digits, &[4, 6, 4], " "),
        (1, _) => group(&digits, &[4, 4, 4, 4], "-"),
        _ => group(&digits, &[4, 4, 4, 4], " "),
    }
}

fn iban(rng: &mut Rng) -> String {
    let (cc, bban): (&str, String) = match rng.below(8) {
        0 => ("DE", rng.digits(18)),
        1 => ("GB", format!("{}{}", rng.alnum(4, UPPER), rng.digits(14))),
        2 => ("FR", rng.digits(23)),
        3 => ("ES", rng.digits(20)),
        4 => ("PT", rng.digits(21)),
        5 => ("IT", format!("{}{}", rng.alnum(1, UPPER), rng.digits(22))),
        6 => (
            "BR",
            format!(
                "{}{}{}",
                rng.digits(23),
                rng.alnum(1, UPPER),
                rng.alnum(1, UPPER_DIGITS)
            ),
        ),
        _ => ("NL", format!("{}{}", rng.alnum(4, UPPER), rng.digits(10))),
    };
    let mut rem: u32 = 0;
    for c in format!("{bban}{cc}00").bytes() {
        let v = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    let compact = format!("{cc}{:02}{bban}", 98 - rem);
    if rng.chance(50) {
        compact
    } else {
        group(&compact, &[4; 9], " ")
    }
}

fn ssn(rng: &mut Rng) -> String {
    let mut area = 1 + rng.below(899);
    if area == 666 {
        area = 667;
    }
    let group_ = 1 + rng.below(99);
    let serial = 1 + rng.below(9999);
    format!("{area:03}-{group_:02}-{serial:04}")
}

fn cpf_digits(rng: &mut Rng) -> String {
    loop {
        let base = rng.digits(9);
        for d in 0..100 {
            let candidate = format!("{base}{d:02}");
            if cpf_is_valid(&candidate) {
                return candidate;
            }
        }
    }
}

fn cpf(rng: &mut Rng) -> String {
    let d = cpf_digits(rng);
    if rng.chance(70) {
        format!("{}.{}.{}-{}", &d[..3], &d[3..6], &d[6..9], &d[9..])
    } else {
        d
    }
}

fn cnpj(rng: &mut Rng) -> String {
    let alphanumeric = rng.chance(40);
    let base = if alphanumeric {
        format!(
            "{}{}",
            rng.alnum(8, UPPER_DIGITS),
            rng.alnum(4, UPPER_DIGITS)
        )
    } else {
        format!("{}0001", rng.digits(8))
    };
    let c = (0..100)
        .map(|d| format!("{base}{d:02}"))
        .find(|c| cnpj_is_valid(c))
        .unwrap_or_else(|| format!("{base}00"));
    if rng.chance(70) {
        format!(
            "{}.{}.{}/{}-{}",
            &c[..2],
            &c[2..5],
            &c[5..8],
            &c[8..12],
            &c[12..]
        )
    } else {
        c
    }
}

fn ip(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => format!("192.168.{}.{}", rng.below(256), 1 + rng.below(254)),
        1 => format!(
            "{}.{}.{}.{}",
            11 + rng.below(200),
            rng.below(256),
            rng.below(256),
            1 + rng.below(254)
        ),
        2 => format!(
            "2001:db8:{:x}:{:x}::{:x}",
            rng.below(0xffff),
            rng.below(0xffff),
            1 + rng.below(0xfffe)
        ),
        _ => format!(
            "fe80::{:x}:{:x}ff:fe{:02x}:{:x}",
            rng.below(0xffff),
            rng.below(0xff),
            rng.below(0xff),
            rng.below(0xffff)
        ),
    }
}

fn random_token(rng: &mut Rng, n: usize) -> String {
    // Guarantee the mix of classes real keys have.
    loop {
        let t = rng.alnum(n, ALNUM);
        let b = t.as_bytes();
        if b.iter().any(u8::is_ascii_lowercase)
            && b.iter().any(u8::is_ascii_uppercase)
            && b.iter().filter(|c| c.is_ascii_digit()).count() >= 2
        {
            return t;
        }
    }
}

fn secret(rng: &mut Rng) -> String {
    match rng.below(9) {
        0 => format!("sk_live_{}", random_token(rng, 24)),
        1 => format!("ghp_{}", random_token(rng, 36)),
        2 => format!("AKIA{}", rng.alnum(16, UPPER_DIGITS)),
        3 => format!(
            "xoxb-{}-{}-{}",
            rng.digits(11),
            rng.digits(12),
            random_token(rng, 24)
        ),
        4 => format!("AIza{}", random_token(rng, 35)),
        5 => format!("sk-proj-{}", random_token(rng, 40)),
        6 => format!(
            "eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}",
            random_token(rng, 30),
            random_token(rng, 43)
        ),
        7 => random_token(rng, 32),
        _ => format!(
            "{}{}!",
            rng.pick(&["Summer", "Hunter", "Blume", "Casa"]),
            rng.digits(4)
        ),
    }
}

fn url(rng: &mut Rng) -> String {
    let host = rng.pick(&[
        "app.example.com",
        "portal.loja.com.br",
        "shop.example.de",
        "cuenta.tienda.es",
    ]);
    match rng.below(5) {
        0 => format!(
            "https://{}:{}@{host}/login",
            rng.pick(&["admin", "maria", "ops"]),
            random_token(rng, 10)
        ),
        1 => format!("https://{host}/reset?token={}", random_token(rng, 28)),
        2 => format!(
            "https://{host}/api/v1/orders?api_key={}",
            random_token(rng, 24)
        ),
        3 => format!(
            "postgres://app:{}@db.{host}:5432/main",
            random_token(rng, 12)
        ),
        _ => format!("https://{host}/invite/{}", random_token(rng, 26)),
    }
}

/// National and international phone formats for our eight countries, each
/// number validated with libphonenumber before it is used.
fn phone(rng: &mut Rng) -> String {
    loop {
        let (cc, national, candidates) = phone_candidate(rng);
        let full = format!(
            "+{cc}{}",
            national
                .chars()
                .filter(char::is_ascii_digit)
                .collect::<String>()
        );
        let valid = phonenumber::parse(None, &full).is_ok_and(|p| phonenumber::is_valid(&p));
        if valid {
            return candidates[rng.below(candidates.len())].clone();
        }
    }
}

/// Returns (country code, national significant number, written forms).
fn phone_candidate(rng: &mut Rng) -> (u16, String, Vec<String>) {
    match rng.below(8) {
        0 => {
            let ddd = rng.pick(&[
                "11", "21", "31", "41", "51", "61", "71", "81", "85", "19", "47", "48",
            ]);
            let (a, b) = if rng.chance(75) {
                (format!("9{}", rng.digits(4)), rng.digits(4))
            } else {
                (
                    format!("{}{}", 2 + rng.below(4), rng.digits(3)),
                    rng.digits(4),
                )
            };
            let nsn = format!("{ddd}{a}{b}");
            (
                55,
                nsn.clone(),
                vec![
                    format!("+55 {ddd} {a}-{b}"),
                    format!("+55 ({ddd}) {a}-{b}"),
                    format!("({ddd}) {a}-{b}"),
                    format!("{ddd} {a}-{b}"),
                    format!("{ddd} {a} {b}"),
                    nsn.clone(),
                    format!("+55{nsn}"),
                    format!("0{ddd} {a}-{b}"),
                    format!("({ddd}){a}-{b}"),
                    format!("{ddd} {} {}-{b}", &a[..1], &a[1..]),
                    format!("+55 {ddd} {} {} {b}", &a[..1], &a[1..]),
                ],
            )
        }
        1 => {
            let npa = rng.pick(&[
                "201", "202", "212", "213", "305", "312", "415", "512", "617", "646", "702", "718",
                "805", "917",
            ]);
            let nxx = format!("{}{}", 2 + rng.below(8), rng.digits(2));
            let line = rng.digits(4);
            (
                1,
                format!("{npa}{nxx}{line}"),
                vec![
                    format!("({npa}) {nxx}-{line}"),
                    format!("{npa}-{nxx}-{line}"),
                    format!("{npa}.{nxx}.{line}"),
                    format!("+1 {npa} {nxx} {line}"),
                    format!("+1 ({npa}) {nxx}-{line}"),
                    format!("1-{npa}-{nxx}-{line}"),
                    format!("+1{npa}{nxx}{line}"),
                ],
            )
        }
        2 => {
            if rng.chance(50) {
                let pre = rng.pick(&["151", "160", "170", "171", "176"]);
                let rest = rng.digits(if pre == "151" || pre == "176" { 8 } else { 7 });
                (
                    49,
                    format!("{pre}{rest}"),
                    vec![
                        format!("0{pre} {rest}"),
                        format!("+49 {pre} {rest}"),
                        format!("0{pre}/{rest}"),
                        format!("+49 (0){pre} {rest}"),
                    ],
                )
            } else {
                let area = rng.pick(&["30", "40", "69", "89", "221"]);
                // Short landlines too ("089 12345"): 5-digit subscribers.
                let len = if rng.chance(30) { 4 } else { 6 };
                let rest = format!("{}{}", 2 + rng.below(7), rng.digits(len));
                (
                    49,
                    format!("{area}{rest}"),
                    vec![
                        format!("0{area} {rest}"),
                        format!("+49 {area} {rest}"),
                        format!("0{area}/{rest}"),
                        format!("0{area}-{rest}"),
                    ],
                )
            }
        }
        3 => {
            let first = rng.pick(&["6", "7", "1", "4"]);
            let nsn = format!("{first}{}", rng.digits(8));
            let pairs = group(&nsn[1..], &[2, 2, 2, 2], " ");
            (
                33,
                nsn.clone(),
                vec![
                    format!("0{first} {pairs}"),
                    format!("+33 {first} {pairs}"),
                    format!("0{nsn}"),
                    format!("+33 (0){first} {pairs}"),
                    format!("0{first}.{}", group(&nsn[1..], &[2, 2, 2, 2], ".")),
                ],
            )
        }
        4 => {
            let first = rng.pick(&["6", "7", "91", "93"]);
            let nsn = format!("{first}{}", rng.digits(9 - first.len()));
            (
                34,
                nsn.clone(),
                vec![
                    group(&nsn, &[3, 3, 3], " "),
                    group(&nsn, &[3, 2, 2, 2], " "),
                    format!("+34 {}", group(&nsn, &[3, 3, 3], " ")),
                    format!("+34{nsn}"),
                ],
            )
        }
        5 => {
            let first = rng.pick(&["91", "92", "93", "96", "21", "22"]);
            let nsn = format!("{first}{}", rng.digits(7));
            (
                351,
                nsn.clone(),
                vec![
                    group(&nsn, &[3, 3, 3], " "),
                    format!("+351 {}", group(&nsn, &[3, 3, 3], " ")),
                    format!("00351 {}", group(&nsn, &[3, 3, 3], " ")),
                ],
            )
        }
        6 => {
            if rng.chance(60) {
                let pre = rng.pick(&[
                    "320", "328", "333", "340", "347", "349", "366", "380", "393",
                ]);
                let rest = rng.digits(7);
                (
                    39,
                    format!("{pre}{rest}"),
                    vec![
                        format!("{pre} {} {}", &rest[..3], &rest[3..]),
                        format!("+39 {pre} {rest}"),
                        format!("{pre}{rest}"),
                    ],
                )
            } else if rng.chance(70) {
                let rest = rng.digits(8);
                (
                    39,
                    format!("06{rest}"),
                    vec![
                        format!("06 {} {}", &rest[..4], &rest[4..]),
                        format!("+39 06 {rest}"),
                    ],
                )
            } else {
                // Short landlines: Parma's 0521 with five or six digits.
                let len = 5 + rng.below(2);
                let rest = format!("{}{}", 2 + rng.below(7), rng.digits(len - 1));
                (
                    39,
                    format!("0521{rest}"),
                    vec![format!("0521 {rest}"), format!("+39 0521 {rest}")],
                )
            }
        }
        _ => {
            if rng.chance(60) {
                let pre = rng.pick(&["7911", "7700", "7400", "7507", "7824"]);
                let rest = rng.digits(6);
                (
                    44,
                    format!("{pre}{rest}"),
                    vec![
                        format!("0{pre} {rest}"),
                        format!("+44 {pre} {rest}"),
                        format!("+44 (0){pre} {rest}"),
                        format!("0{pre}{rest}"),
                    ],
                )
            } else {
                let rest = format!("{}{}", 3 + rng.below(5), rng.digits(3));
                let last = rng.digits(4);
                (
                    44,
                    format!("20{rest}{last}"),
                    vec![
                        format!("020 {rest} {last}"),
                        format!("+44 20 {rest} {last}"),
                        format!("+44 (0)20 {rest} {last}"),
                    ],
                )
            }
        }
    }
}

const FIRST_NAMES: &[&str] = &[
    "Rose",
    "Will",
    "Mark",
    "Grace",
    "Ben",
    "Paz",
    "Luz",
    "Amor",
    "Maria",
    "João",
    "Ana",
    "Pedro",
    "Lucía",
    "José",
    "Jürgen",
    "Sophie",
    "Thomas",
    "Emily",
    "Carlos",
    "Fernanda",
    "Guilherme",
    "Beatriz",
    "Hans",
    "Klaus",
    "Ingrid",
    "Sofía",
    "Diego",
    "Isabel",
    "Michael",
    "Sarah",
    "Olivia",
    "Lukas",
    "Matías",
    "Camila",
    "Renée",
    "André",
    "Antônio",
    "Gonçalo",
    "Inês",
    "Zoë",
    "Björn",
    "Jessica",
    "Daniel",
    "Raquel",
];
const LAST_NAMES: &[&str] = &[
    "Silva",
    "Souza",
    "Oliveira",
    "Müller",
    "Schmidt",
    "García",
    "Fernández",
    "López",
    "Smith",
    "Johnson",
    "Pereira",
    "Araújo",
    "Gonçalves",
    "Weber",
    "Schäfer",
    "Martínez",
    "Sánchez",
    "Brown",
    "Taylor",
    "Köhler",
    "Weiß",
    "Krüger",
    "Rodrigues",
    "Nogueira",
    "Castro",
    "Becker",
    "Wagner",
];
const PARTICLES: &[&str] = &["da", "de", "dos", "von", "del"];

fn person(rng: &mut Rng) -> String {
    let first = rng.pick(FIRST_NAMES);
    let last = rng.pick(LAST_NAMES);
    match rng.below(5) {
        0 => format!("{first} {} {last}", rng.pick(PARTICLES)),
        1 => format!("{first} {} {last}", rng.pick(FIRST_NAMES)),
        _ => format!("{first} {last}"),
    }
}

/// How people write a name without its accents, by the generator's own
/// table rather than the engine's folding (which the corpus is there to
/// test): plainly stripped ("Jurgen Muller", "Joao Araujo"), or the German
/// way with `ae`/`oe`/`ue`/`ss` ("Juergen Mueller", "Hauptstrasse").
fn ascii_spelling(s: &str, german: bool) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        let german_form = match c {
            'ä' => Some("ae"),
            'ö' => Some("oe"),
            'ü' => Some("ue"),
            'Ä' => Some("Ae"),
            'Ö' => Some("Oe"),
            'Ü' => Some("Ue"),
            _ => None,
        };
        match german_form {
            Some(two) if german => out.push_str(two),
            _ => out.push_str(match c {
                'á' | 'à' | 'â' | 'ã' | 'ä' | 'å' => "a",
                'Á' | 'À' | 'Â' | 'Ã' | 'Ä' | 'Å' => "A",
                'é' | 'è' | 'ê' | 'ë' => "e",
                'É' | 'È' | 'Ê' | 'Ë' => "E",
                'í' | 'ì' | 'î' | 'ï' => "i",
                'Í' | 'Ì' | 'Î' | 'Ï' => "I",
                'ó' | 'ò' | 'ô' | 'õ' | 'ö' => "o",
                'Ó' | 'Ò' | 'Ô' | 'Õ' | 'Ö' => "O",
                'ú' | 'ù' | 'û' | 'ü' => "u",
                'Ú' | 'Ù' | 'Û' | 'Ü' => "U",
                'ç' => "c",
                'Ç' => "C",
                'ñ' => "n",
                'Ñ' => "N",
                'ß' => "ss",
                _ => {
                    out.push(c);
                    continue;
                }
            }),
        }
    }
    out
}

fn email_for(rng: &mut Rng, name: &str) -> String {
    let german = rng.chance(50);
    let ascii: String = ascii_spelling(name, german)
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .collect();
    let parts: Vec<&str> = ascii.split_whitespace().collect();
    let first = parts.first().copied().unwrap_or("x");
    let last = parts.last().copied().unwrap_or("y");
    let local = match rng.below(5) {
        0 => format!("{first}.{last}"),
        1 => format!("{first}{last}{}", rng.below(100)),
        2 => format!("{}{last}", &first[..1]),
        3 => format!("{first}_{last}+shop"),
        _ => format!("{first}.{last}{}", 1970 + rng.below(40)),
    };
    let domain = rng.pick(&[
        "gmail.com",
        "outlook.com",
        "uol.com.br",
        "web.de",
        "yahoo.es",
        "empresa.com.br",
        "example.co.uk",
        "gmx.de",
        "hotmail.com",
        "correo.es",
    ]);
    let e = format!("{local}@{domain}");
    if rng.chance(10) {
        e.to_uppercase()
    } else {
        e
    }
}

const COMPANIES: &[&str] = &[
    "Padaria Estrela Ltda",
    "Müller & Söhne GmbH",
    "Acme Widgets Inc",
    "Construcciones Ibéricas SL",
    "Loja Bom Preço",
    "Blumenhaus Schäfer",
    "Northwind Traders",
    "Farmacia del Sol",
];
const ADDRESSES: &[&str] = &[
    "Rua das Flores 123, São Paulo",
    "Hauptstraße 5, 10115 Berlin",
    "Calle Mayor 10, Madrid",
    "221B Baker Street, London",
    "Avenida Paulista 1578, São Paulo",
    "Schillerstraße 12, München",
    "Calle de Alcalá 45, Madrid",
    "742 Evergreen Terrace, Springfield",
];

// ---------------------------------------------------------------- texts

struct Phrases {
    greet: &'static [&'static str],
    no_pii: &'static [&'static str],
    email: &'static [&'static str],
    phone: &'static [&'static str],
    card: &'static [&'static str],
    iban: &'static [&'static str],
    secret: &'static [&'static str],
    url: &'static [&'static str],
    ip: &'static [&'static str],
    intro: &'static [&'static str],
    sign_off: &'static [&'static str],
    crm: &'static [&'static str],
    company: &'static [&'static str],
    address: &'static [&'static str],
    order: &'static [&'static str],
    date: &'static [&'static str],
    amount: &'static [&'static str],
    tracking: &'static [&'static str],
    zip: &'static [&'static str],
    reference: &'static [&'static str],
}

const EN: Phrases = Phrases {
    greet: &["Hi, ", "Hello! ", "Hey team, ", "Good morning. ", ""],
    no_pii: &[
        "My package still hasn't arrived and I'm getting worried.",
        "Can I change the size of my shoes before they ship?",
        "The app keeps crashing when I open my cart.",
        "I'd like to cancel my subscription at the end of the month.",
        "Do you ship to Canada? And how long does it take?",
        "Thanks for the quick help yesterday, everything works now.",
        "I'm Teacher at a school and ordered books for my class.",
    ],
    email: &[
        "my email is {}",
        "you can reach me at {}",
        "please send the invoice to {}",
        "contact: {}",
        "{}",
    ],
    phone: &[
        "my phone number is {}",
        "call me at {}",
        "you can reach me on {}",
        "whatsapp: {}",
        "{}",
    ],
    card: &[
        "I paid with my card {}",
        "card number {} was charged twice",
        "{} is the card I used",
    ],
    iban: &[
        "please refund to my IBAN {}",
        "my bank account: {}",
        "IBAN {}",
    ],
    secret: &[
        "here is my API key: {}",
        "the token {} stopped working",
        "our key {} leaked, please rotate",
    ],
    url: &[
        "the reset link {} does not work",
        "I log in via {}",
        "this link fails: {}",
    ],
    ip: &[
        "my IP address is {}",
        "the server {} is blocked",
        "requests from {} fail",
    ],
    intro: &[
        "my name is {}",
        "I'm {} and I ordered a blender",
        "this is {} from the flower shop",
        "My name's {}",
    ],
    sign_off: &[
        "Thanks,\n{}",
        "Best regards,\n{}",
        "Cheers, {}",
        "Kind regards\n{}",
    ],
    crm: &[
        "{} here, my order is late",
        "could you tell {} when it ships?",
        "it's {} again",
    ],
    company: &["I'm writing on behalf of {}", "we at {} need a new invoice"],
    address: &["please ship to {}", "my new address is {}"],
    order: &["order #{}", "order number {}", "my order {}"],
    date: &["on {}", "since {}", "placed on {}"],
    amount: &["I was charged {}", "the total was {}", "a refund of {}"],
    tracking: &["tracking number {}", "tracking {}"],
    zip: &["ZIP code {}", "zip {}"],
    reference: &[
        "ref. {}",
        "invoice INV-{}",
        "the order I placed on Monday has the number {}",
        "my order from last week, number {}",
        "booking reference {}",
        "case ID {}",
        "RMA {}",
    ],
};

const PT: Phrases = Phrases {
    greet: &["Olá, ", "Oi! ", "Bom dia, ", "Boa tarde. ", ""],
    no_pii: &[
        "Meu pedido ainda não chegou e já passou do prazo.",
        "Quero trocar o tamanho da camiseta, é possível?",
        "O aplicativo fecha sozinho quando abro o carrinho.",
        "Gostaria de cancelar a assinatura no fim do mês.",
        "Vocês entregam no interior? Qual o prazo?",
        "Obrigado pela ajuda de ontem, deu tudo certo.",
        "Sou Engenheiro e preciso da nota fiscal da compra.",
    ],
    email: &[
        "meu e-mail é {}",
        "pode me escrever em {}",
        "manda a nota fiscal para {}",
        "email: {}",
        "{}",
    ],
    phone: &[
        "meu telefone é {}",
        "me liga no {}",
        "meu whatsapp é {}",
        "celular: {}",
        "{}",
    ],
    card: &[
        "paguei com o cartão {}",
        "o cartão {} foi cobrado duas vezes",
        "{} é o cartão que usei",
    ],
    iban: &["para reembolso, meu IBAN é {}", "conta: {}"],
    secret: &[
        "segue minha chave de API: {}",
        "o token {} parou de funcionar",
    ],
    url: &["o link {} não funciona", "acesso por {}"],
    ip: &["meu IP é {}", "o servidor {} está bloqueado"],
    intro: &[
        "meu nome é {}",
        "me chamo {}",
        "aqui é o {} da padaria",
        "Meu nome é {}",
    ],
    sign_off: &[
        "Obrigado,\n{}",
        "Atenciosamente,\n{}",
        "Abraços, {}",
        "Obrigada!\n{}",
    ],
    crm: &[
        "aqui é {} de novo",
        "pode avisar {} quando enviar?",
        "{} falando, meu pedido atrasou",
    ],
    company: &["escrevo em nome da {}", "a {} precisa de uma nova nota"],
    address: &["entregar na {}", "meu novo endereço é {}"],
    order: &["pedido {}", "pedido nº {}", "número do pedido {}"],
    date: &["no dia {}", "desde {}", "feito em {}"],
    amount: &["fui cobrado {}", "o total deu {}", "reembolso de {}"],
    tracking: &["código de rastreio {}", "rastreio {}"],
    zip: &["CEP {}"],
    reference: &[
        "protocolo de atendimento {}",
        "nº do pedido {}",
        "o pedido que fiz ontem tem o número {}",
        "nota fiscal nº {}",
        "localizador {}",
        "ref. {}",
    ],
};

const ES: Phrases = Phrases {
    greet: &["Hola, ", "¡Buenas! ", "Buenos días, ", ""],
    no_pii: &[
        "Mi pedido todavía no ha llegado y ya pasó la fecha.",
        "¿Puedo cambiar la talla antes del envío?",
        "La aplicación se cierra cuando abro el carrito.",
        "Quiero cancelar la suscripción a final de mes.",
        "¿Hacen envíos a Canarias? ¿Cuánto tarda?",
        "Gracias por la ayuda de ayer, ya funciona todo.",
        "Soy Profesora y necesito la factura del pedido.",
    ],
    email: &[
        "mi correo es {}",
        "pueden escribirme a {}",
        "envíen la factura a {}",
        "correo: {}",
        "{}",
    ],
    phone: &[
        "mi teléfono es {}",
        "llámame al {}",
        "mi móvil es {}",
        "whatsapp: {}",
        "{}",
    ],
    card: &["pagué con la tarjeta {}", "la tarjeta {} tiene dos cargos"],
    iban: &["para el reembolso, mi IBAN es {}", "cuenta: {}"],
    secret: &[
        "esta es mi clave de API: {}",
        "el token {} dejó de funcionar",
    ],
    url: &["el enlace {} no funciona", "entro por {}"],
    ip: &["mi IP es {}", "el servidor {} está bloqueado"],
    intro: &["me llamo {}", "mi nombre es {}", "Me llamo {}"],
    sign_off: &[
        "Gracias,\n{}",
        "Saludos,\n{}",
        "Un saludo, {}",
        "Atentamente,\n{}",
    ],
    crm: &[
        "soy {} otra vez",
        "¿pueden avisar a {} cuando salga?",
        "{} aquí, mi pedido se retrasó",
    ],
    company: &["escribo en nombre de {}", "en {} necesitamos otra factura"],
    address: &["envíenlo a {}", "mi nueva dirección es {}"],
    order: &["pedido {}", "pedido n.º {}", "número de pedido {}"],
    date: &["el {}", "desde el {}", "hecho el {}"],
    amount: &["me cobraron {}", "el total fue {}", "un reembolso de {}"],
    tracking: &["número de seguimiento {}", "seguimiento {}"],
    zip: &["código postal {}"],
    reference: &[
        "localizador {}",
        "ref. {}",
        "el pedido que hice ayer tiene el número {}",
        "factura n.º {}",
        "nº de incidencia {}",
        "factura FAC-{}",
    ],
};

const DE: Phrases = Phrases {
    greet: &["Hallo, ", "Guten Tag, ", "Hi! ", "Moin, ", ""],
    no_pii: &[
        "Meine Bestellung ist immer noch nicht angekommen.",
        "Kann ich die Größe noch vor dem Versand ändern?",
        "Die App stürzt ab, wenn ich den Warenkorb öffne.",
        "Ich möchte mein Abo zum Monatsende kündigen.",
        "Liefern Sie auch nach Österreich? Wie lange dauert das?",
        "Danke für die schnelle Hilfe gestern, jetzt klappt alles.",
        "Ich bin Lehrerin und brauche eine Rechnung für die Schule.",
    ],
    email: &[
        "meine E-Mail ist {}",
        "Sie erreichen mich unter {}",
        "bitte die Rechnung an {}",
        "E-Mail: {}",
        "{}",
    ],
    phone: &[
        "meine Telefonnummer ist {}",
        "rufen Sie mich unter {} an",
        "Handy: {}",
        "Tel. {}",
        "{}",
    ],
    card: &[
        "ich habe mit der Karte {} bezahlt",
        "die Karte {} wurde doppelt belastet",
    ],
    iban: &["bitte erstatten auf meine IBAN {}", "Konto: {}", "IBAN: {}"],
    secret: &[
        "hier mein API-Schlüssel: {}",
        "das Token {} funktioniert nicht mehr",
    ],
    url: &[
        "der Link {} funktioniert nicht",
        "ich melde mich über {} an",
    ],
    ip: &["meine IP-Adresse ist {}", "der Server {} ist gesperrt"],
    intro: &[
        "ich heiße {}",
        "mein Name ist {}",
        "Mein Name ist {}",
        "Ich heiße {}",
    ],
    sign_off: &[
        "Viele Grüße\n{}",
        "Mit freundlichen Grüßen\n{}",
        "Danke,\n{}",
        "LG {}",
    ],
    crm: &[
        "hier ist {} nochmal",
        "können Sie {} Bescheid geben?",
        "{} hier, meine Bestellung ist spät",
    ],
    company: &[
        "ich schreibe im Namen von {}",
        "wir von {} brauchen eine neue Rechnung",
    ],
    address: &["bitte liefern an {}", "meine neue Adresse ist {}"],
    order: &["Bestellung {}", "Bestellnummer {}", "Auftrag Nr. {}"],
    date: &["am {}", "seit dem {}", "bestellt am {}"],
    amount: &[
        "mir wurden {} berechnet",
        "der Betrag war {}",
        "eine Erstattung von {}",
    ],
    tracking: &["Sendungsnummer {}", "Sendungsverfolgung {}"],
    zip: &["PLZ {}"],
    reference: &[
        "Protokoll {}",
        "Ref. {}",
        "meine Bestellung vom Montag hat die Nummer {}",
        "Rechnung RE-{}",
        "Vorgangsnummer {}",
        "Aktenzeichen {}",
    ],
};

fn phrases(lang: Lang) -> &'static Phrases {
    match lang {
        Lang::En => &EN,
        Lang::Pt => &PT,
        Lang::Es => &ES,
        Lang::De => &DE,
    }
}

fn distractor(rng: &mut Rng, lang: Lang, b: &mut Builder) {
    let p = phrases(lang);
    match rng.below(6) {
        5 => {
            let n = match rng.below(4) {
                0 => {
                    let len = 5 + rng.below(3);
                    rng.digits(len)
                }
                1 => format!("{}{}", 1 + rng.below(9), rng.digits(9)),
                2 => format!("{}{}", 1 + rng.below(9), rng.digits(10)),
                _ => rng.alnum(6, UPPER_DIGITS),
            };
            b.template(rng.pick(p.reference), Category::Reference, &n);
        }
        0 => {
            let n = match rng.below(3) {
                0 => {
                    let len = 5 + rng.below(3);
                    rng.digits(len)
                }
                1 => format!("{}{}", 1 + rng.below(9), rng.digits(9)),
                _ => format!("{}{}", 1 + rng.below(9), rng.digits(10)),
            };
            b.template(rng.pick(p.order), Category::OrderNumber, &n);
        }
        1 => {
            let (d, m, y) = (1 + rng.below(28), 1 + rng.below(12), 2020 + rng.below(6));
            let date = match rng.below(4) {
                0 => format!("{d:02}/{m:02}/{y}"),
                1 => format!("{y}-{m:02}-{d:02}"),
                2 => format!("{d:02}.{m:02}.{y}"),
                _ => format!("{d}/{m}/{}", y % 100),
            };
            b.template(rng.pick(p.date), Category::Date, &date);
        }
        2 => {
            let whole = 1 + rng.below(4999);
            let cents = rng.below(100);
            let thousands = |sep: char| {
                if whole >= 1000 {
                    format!("{}{sep}{:03}", whole / 1000, whole % 1000)
                } else {
                    whole.to_string()
                }
            };
            let amount = match rng.below(4) {
                0 => format!("R$ {},{cents:02}", thousands('.')),
                1 => format!("${}.{cents:02}", thousands(',')),
                2 => format!("{},{cents:02} €", thousands('.')),
                _ => format!("USD {}.{cents:02}", thousands(',')),
            };
            b.template(rng.pick(p.amount), Category::Amount, &amount);
        }
        3 => {
            let code = match rng.below(4) {
                0 => format!("{}{}BR", rng.alnum(2, UPPER), rng.digits(9)),
                1 => format!("1Z{}{}", rng.alnum(6, UPPER_DIGITS), rng.digits(10)),
                2 => format!("JD{}", rng.digits(18)),
                _ => rng.digits(12),
            };
            b.template(rng.pick(p.tracking), Category::TrackingCode, &code);
        }
        _ => {
            let zip = match lang {
                Lang::Pt => format!("{}-{}", rng.digits(5), rng.digits(3)),
                Lang::En => rng.digits(5),
                _ => rng.digits(5),
            };
            b.template(rng.pick(p.zip), Category::ZipCode, &zip);
        }
    }
}

/// Generates `n` labelled messages from `seed`.
pub fn generate(seed: u64, n: usize) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    (0..n).map(|i| sample(&mut rng, i)).collect()
}

fn sample(rng: &mut Rng, i: usize) -> Sample {
    let lang = [Lang::En, Lang::Pt, Lang::Es, Lang::De][i % 4];
    let p = phrases(lang);
    let mut b = Builder::default();
    let mut context = KnownEntitiesSpec::default();
    b.push(rng.pick(p.greet));
    // One message in eight carries no PII, only distractors.
    let kind = if rng.chance(12) {
        None
    } else {
        Some(rng.below(17))
    };
    match kind {
        None => {
            b.push(rng.pick(p.no_pii));
        }
        Some(k) => {
            let (template, category, value): (&str, Category, String) = match k {
                0 | 1 => (rng.pick(p.email), Category::Email, {
                    let who = person(rng);
                    email_for(rng, &who)
                }),
                2 | 3 => (rng.pick(p.phone), Category::Phone, phone(rng)),
                4 => (rng.pick(p.card), Category::Card, card(rng)),
                5 => (rng.pick(p.iban), Category::Iban, iban(rng)),
                6 => (
                    rng.pick(&[
                        "my SSN is {}",
                        "social security number {}",
                        "SSN: {}",
                        "{} is my SSN",
                    ]),
                    Category::Ssn,
                    ssn(rng),
                ),
                7 => (
                    rng.pick(&["meu CPF é {}", "CPF: {}", "CPF {}", "segue o CPF {}", "{}"]),
                    Category::Cpf,
                    cpf(rng),
                ),
                8 => (
                    rng.pick(&["CNPJ {}", "o CNPJ da empresa é {}", "CNPJ: {}", "{}"]),
                    Category::Cnpj,
                    cnpj(rng),
                ),
                9 => (rng.pick(p.ip), Category::Ip, ip(rng)),
                10 => (rng.pick(p.secret), Category::Secret, secret(rng)),
                11 => (rng.pick(p.url), Category::Url, url(rng)),
                12 | 13 => {
                    let name = person(rng);
                    context.names.push(name.clone());
                    let first = name.split(' ').next().unwrap_or(&name).to_string();
                    // Every way a customer writes the name the CRM holds,
                    // including without accents and with German "ue" for "ü".
                    let written = match rng.below(8) {
                        0 => first,
                        1 => name.to_lowercase(),
                        2 => ascii_spelling(&name, false),
                        3 => name.to_uppercase(),
                        4 => ascii_spelling(&name, true),
                        5 => ascii_spelling(&first, true).to_lowercase(),
                        _ => name,
                    };
                    (rng.pick(p.crm), Category::NameCrm, written)
                }
                14 => {
                    let name = person(rng);
                    // People type their own name in lowercase in chats.
                    let name = if rng.chance(15) {
                        name.to_lowercase()
                    } else {
                        name
                    };
                    (rng.pick(p.intro), Category::NameIntro, name)
                }
                15 => {
                    let name = person(rng);
                    let name = if rng.chance(10) {
                        name.to_lowercase()
                    } else {
                        name
                    };
                    (rng.pick(p.sign_off), Category::NameSignoff, name)
                }
                _ => {
                    // The CRM holds the accented form; customers often type
                    // it without ("Mueller & Soehne", "Hauptstrasse", "Sao Paulo").
                    let german = rng.chance(50);
                    let plain = rng.chance(30);
                    let written = |v: &str| {
                        if plain {
                            ascii_spelling(v, german)
                        } else {
                            v.to_string()
                        }
                    };
                    if rng.chance(50) {
                        let company = rng.pick(COMPANIES).to_string();
                        context.companies.push(company.clone());
                        (rng.pick(p.company), Category::Company, written(&company))
                    } else {
                        let address = rng.pick(ADDRESSES).to_string();
                        context.addresses.push(address.clone());
                        (rng.pick(p.address), Category::Address, written(&address))
                    }
                }
            };
            // Sign-offs close the message; everything else may be followed
            // by a distractor sentence.
            if category == Category::NameSignoff {
                if rng.chance(50) {
                    distractor(rng, lang, &mut b);
                    b.push(". ");
                }
                b.push(rng.pick(p.no_pii));
                b.push("\n");
                b.template(template, category, &value);
            } else {
                b.template(template, category, &value);
                b.push(if rng.chance(50) { ". " } else { ", " });
            }
        }
    }
    if kind.is_some() && kind != Some(15) && rng.chance(20) {
        // A second value in the same message.
        let (template, category, value) = if rng.chance(50) {
            (rng.pick(p.email), Category::Email, {
                let who = person(rng);
                email_for(rng, &who)
            })
        } else {
            (rng.pick(p.phone), Category::Phone, phone(rng))
        };
        b.template(template, category, &value);
        b.push(". ");
    }
    if (kind.is_none() || rng.chance(60)) && kind != Some(15) {
        distractor(rng, lang, &mut b);
        b.push(".");
    }
    if kind != Some(15) && rng.chance(10) {
        // Numbers with no keyword at all: a bare "#" reference, a time, a quantity.
        let bare = match rng.below(4) {
            0 => format!(" #{}", rng.digits(6)),
            1 => format!(" {}:{:02}", rng.below(24), rng.below(60)),
            2 => format!(" {}x", 1 + rng.below(9)),
            _ => format!(" {}%", rng.below(100)),
        };
        b.push(&bare);
    }
    Sample {
        lang,
        text: b.text,
        spans: b.spans,
        context,
    }
}

// ---------------------------------------------------------------- scoring

/// Scores for one category.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    pub labelled: usize,
    /// Labelled values with a detection of the right type overlapping them.
    pub found: usize,
    /// Labelled values whose every byte ended up inside a masked span.
    pub fully_masked: usize,
    /// Detections of this category's type (precision denominator).
    pub predicted: usize,
    /// Of those, the ones overlapping a label of the type.
    pub predicted_correct: usize,
}

impl Row {
    pub fn recall(&self) -> f64 {
        ratio(self.found, self.labelled)
    }

    pub fn fully_masked_rate(&self) -> f64 {
        ratio(self.fully_masked, self.labelled)
    }

    pub fn precision(&self) -> f64 {
        ratio(self.predicted_correct, self.predicted)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// A labelled value that was not found, or a detection that matched no label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Miss {
    pub text: String,
    /// `missed CATEGORY` or `false TYPE`.
    pub what: String,
    pub value: String,
}

/// Per-category scores over a corpus.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub messages: usize,
    pub rows: BTreeMap<Category, Row>,
    /// Every miss and false detection, for inspection.
    pub misses: Vec<Miss>,
}

/// Runs the inbound stage over each sample (with its CRM context and a fresh
/// vault) and scores the PII findings against the labels.
pub fn score(samples: &[Sample], policy: &Policy) -> Report {
    let mut report = Report {
        messages: samples.len(),
        ..Report::default()
    };
    let mut predicted_by_type: BTreeMap<PiiType, (usize, usize)> = BTreeMap::new();
    for s in samples {
        let mut ctx = Context::new(Default::default(), KnownEntities::from(s.context.clone()));
        let verdict = evaluate(Stage::Inbound, &s.text, &mut ctx, policy);
        let pii: Vec<(PiiType, usize, usize)> = verdict
            .findings
            .iter()
            .filter_map(|f| match f.kind {
                FindingKind::Pii(t) => Some((t, f.start, f.end)),
                _ => None,
            })
            .collect();
        for span in &s.spans {
            let row = report.rows.entry(span.category).or_default();
            row.labelled += 1;
            let overlaps = |&&(_, a, b): &&(PiiType, usize, usize)| a < span.end && span.start < b;
            let value = &s.text[span.start..span.end];
            if let Some(t) = span.category.pii_type() {
                if pii.iter().filter(overlaps).any(|(k, _, _)| *k == t) {
                    row.found += 1;
                } else {
                    report.misses.push(Miss {
                        text: s.text.clone(),
                        what: format!("missed {:?}", span.category),
                        value: value.to_string(),
                    });
                }
            } else if pii.iter().any(|p| overlaps(&p)) {
                // A masked distractor: counted as "found" so the report shows it.
                row.found += 1;
                report.misses.push(Miss {
                    text: s.text.clone(),
                    what: format!("masked {:?}", span.category),
                    value: value.to_string(),
                });
            }
            let covered =
                (span.start..span.end).all(|i| pii.iter().any(|&(_, a, b)| a <= i && i < b));
            if covered {
                row.fully_masked += 1;
            }
        }
        for &(t, a, b) in &pii {
            let entry = predicted_by_type.entry(t).or_default();
            entry.0 += 1;
            let correct = s
                .spans
                .iter()
                .any(|l| l.category.pii_type() == Some(t) && l.start < b && a < l.end);
            if correct {
                entry.1 += 1;
            } else {
                report.misses.push(Miss {
                    text: s.text.clone(),
                    what: format!("false {t}"),
                    value: s.text[a..b].to_string(),
                });
            }
        }
    }
    for (category, row) in report.rows.iter_mut() {
        if let Some(t) = category.pii_type() {
            let (p, c) = predicted_by_type.get(&t).copied().unwrap_or_default();
            row.predicted = p;
            row.predicted_correct = c;
        }
    }
    report
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} messages", self.messages)?;
        writeln!(
            f,
            "| category | labelled | recall | fully masked | precision (type) |\n|---|---:|---:|---:|---:|"
        )?;
        for (category, row) in &self.rows {
            if category.pii_type().is_some() {
                writeln!(
                    f,
                    "| {category:?} | {} | {:.4} | {:.4} | {:.4} ({}/{}) |",
                    row.labelled,
                    row.recall(),
                    row.fully_masked_rate(),
                    row.precision(),
                    row.predicted_correct,
                    row.predicted
                )?;
            }
        }
        writeln!(
            f,
            "\n| distractor | labelled | masked (should be 0) |\n|---|---:|---:|"
        )?;
        for (category, row) in &self.rows {
            if category.pii_type().is_none() {
                writeln!(f, "| {category:?} | {} | {} |", row.labelled, row.found)?;
            }
        }
        Ok(())
    }
}

/// The sample as a JSON line for `custodian guardrails scan` (labels kept,
/// the scanner ignores them).
pub fn to_jsonl(sample: &Sample) -> String {
    serde_json::json!({
        "text": sample.text,
        "context": sample.context,
        "labels": sample.spans,
    })
    .to_string()
}
