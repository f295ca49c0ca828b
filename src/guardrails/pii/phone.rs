//! Phone number validation against libphonenumber's numbering plans.
//!
//! The `phonenumber` crate's full `parse` + `is_valid` costs about 12 µs per
//! call, more than our whole per-message budget, so we borrow only its data:
//! the national-number patterns (fixed line, mobile, VoIP, personal) of the
//! countries our customers write from, compiled once into anchored regexes.
//! Candidate extraction and the decision of which plan to try stay ours.

use std::collections::HashSet;
use std::sync::LazyLock;

use phonenumber::metadata::DATABASE;
use regex_automata::dfa::{dense, Automaton};
use regex_automata::{Anchored, Input};

/// How a country's national prefix appears in national writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    /// Numbers are written with the prefix ("030 …", "06 …", "020 …"); a
    /// number without it is not taken as national (too many false hits).
    Required(u8),
    /// Written with or without it ("(11) 9…" and "(011) 9…" in Brazil).
    Optional(u8),
    /// No national prefix (Spain, Portugal, Italy keep the 0 in the number).
    None,
}

/// Every region sharing a country code, folded into one anchored pattern and
/// compiled ahead of time into a dense DFA: a check is one pass over ten-odd
/// digits with no allocation, no cache and no lock, from any thread.
struct Region {
    code: u16,
    prefix: Prefix,
    dfa: dense::DFA<Vec<u32>>,
    /// Fixed-line numbers only: what a short number must be (see
    /// [`national_short_fixed`]).
    fixed: dense::DFA<Vec<u32>>,
}

impl Region {
    fn matches(&self, digits: &str) -> bool {
        full_match(&self.dfa, digits)
    }

    fn fixed_matches(&self, digits: &str) -> bool {
        full_match(&self.fixed, digits)
    }
}

fn full_match(dfa: &dense::DFA<Vec<u32>>, digits: &str) -> bool {
    let input = Input::new(digits).anchored(Anchored::Yes);
    matches!(dfa.try_search_fwd(&input), Ok(Some(m)) if m.offset() == digits.len())
}

/// An anchored DFA for the union of `patterns`.
fn compile(patterns: &[String]) -> Option<dense::DFA<Vec<u32>>> {
    dense::Builder::new()
        .configure(dense::DFA::config().start_kind(regex_automata::dfa::StartKind::Anchored))
        .syntax(regex_automata::util::syntax::Config::new().unicode(false))
        .build(&format!("(?:{})$", patterns.join("|")))
        .ok()
}

/// libphonenumber's pattern of a descriptor, without the XML's layout
/// whitespace its metadata keeps.
fn pattern(desc: &phonenumber::metadata::Descriptor) -> String {
    desc.national_number()
        .as_str()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

struct Plan {
    regions: Vec<Region>,
    country_codes: HashSet<u16>,
}

/// The country codes we validate precisely, with how their national prefix
/// is written. Every region sharing one of these codes is included (Jersey,
/// Guernsey and the Isle of Man share +44, Canada shares +1), since a
/// customer's number may belong to any of them.
const COUNTRIES: &[(u16, Prefix)] = &[
    (55, Prefix::Optional(b'0')), // BR
    (1, Prefix::Optional(b'1')),  // US (NANP)
    (49, Prefix::Required(b'0')), // DE
    (33, Prefix::Required(b'0')), // FR
    (34, Prefix::None),           // ES
    (351, Prefix::None),          // PT
    (39, Prefix::None),           // IT (the 0 of landlines is part of the number)
    (44, Prefix::Required(b'0')), // UK
];

static PLAN: LazyLock<Plan> = LazyLock::new(|| {
    let regions = COUNTRIES
        .iter()
        .filter_map(|&(code, prefix)| {
            let metas = || DATABASE.iter().filter(|meta| meta.country_code() == code);
            let alternatives: Vec<String> = metas()
                .flat_map(|meta| {
                    let d = meta.descriptors();
                    [d.fixed_line(), d.mobile(), d.voip(), d.personal_number()]
                        .into_iter()
                        .flatten()
                        .map(pattern)
                        .collect::<Vec<String>>()
                })
                .collect();
            let fixed: Vec<String> = metas()
                .filter_map(|meta| meta.descriptors().fixed_line().map(pattern))
                .collect();
            Some(Region {
                code,
                prefix,
                dfa: compile(&alternatives)?,
                fixed: compile(&fixed)?,
            })
        })
        .collect();
    let country_codes = DATABASE.iter().map(|m| m.country_code()).collect();
    Plan {
        regions,
        country_codes,
    }
});

/// Forces the numbering plans to load (done lazily on first use otherwise).
pub fn warm_up() {
    LazyLock::force(&PLAN);
}

/// Validates a number written with an international prefix (`+` or `00`);
/// `digits` excludes the prefix. Returns a score.
pub fn international(digits: &str) -> Option<f32> {
    if !(8..=15).contains(&digits.len()) {
        return None;
    }
    let plan = &*PLAN;
    for cc_len in 1..=3 {
        let Ok(cc) = digits[..cc_len].parse::<u16>() else {
            continue;
        };
        if !plan.country_codes.contains(&cc) {
            continue;
        }
        let nsn = &digits[cc_len..];
        let known: Vec<&Region> = plan.regions.iter().filter(|r| r.code == cc).collect();
        if known.is_empty() {
            // A country we have no precise plan for: E.164 length is all we check.
            return (6..=13).contains(&nsn.len()).then_some(0.8);
        }
        for region in known {
            if region.matches(nsn) {
                return Some(0.98);
            }
            // "+44 (0)20 …": the trunk 0 written after the country code.
            if let Prefix::Required(p) | Prefix::Optional(p) = region.prefix {
                if nsn.as_bytes().first() == Some(&p) && region.matches(&nsn[1..]) {
                    return Some(0.95);
                }
            }
        }
        if cc == 1 && nanp_like(nsn) {
            return Some(0.9);
        }
        return None;
    }
    None
}

/// A number written with an international prefix that is not in its
/// country's plan but has a length that country's numbers have (after a
/// trunk digit written in, as in "+49 (0)30 …"): a mistyped or unassigned
/// number is still someone's phone once a "+" announces it. Lower score
/// than a valid one.
pub fn international_possible(digits: &str) -> Option<f32> {
    if !(8..=15).contains(&digits.len()) {
        return None;
    }
    let plan = &*PLAN;
    for cc_len in 1..=3 {
        let Ok(cc) = digits[..cc_len].parse::<u16>() else {
            continue;
        };
        if !plan.country_codes.contains(&cc) {
            continue;
        }
        let mut nsn = &digits[cc_len..];
        let lengths = match cc {
            1 => 10..=10,
            55 => 10..=11,
            49 => 5..=13,
            33 | 34 | 351 => 9..=9,
            39 => 6..=11,
            44 => 9..=10,
            _ => 6..=13,
        };
        let trunk = plan
            .regions
            .iter()
            .find(|r| r.code == cc)
            .and_then(|r| match r.prefix {
                Prefix::Required(p) | Prefix::Optional(p) => Some(p),
                Prefix::None => None,
            });
        if let Some(p) = trunk {
            // A trunk digit written in ("+49 (0)30 …"; German numbers
            // never start with 0 after the country code).
            if nsn.as_bytes().first() == Some(&p) && (cc == 49 || !lengths.contains(&nsn.len())) {
                nsn = &nsn[1..];
            }
        }
        return lengths.contains(&nsn.len()).then_some(0.75);
    }
    None
}

/// Validates a number written nationally (no country code) against the
/// plans of our customers' countries.
pub fn national(digits: &str) -> bool {
    if !(9..=12).contains(&digits.len()) {
        return false;
    }
    let first = digits.as_bytes()[0];
    PLAN.regions.iter().any(|r| match r.prefix {
        Prefix::Required(p) => first == p && r.matches(&digits[1..]),
        Prefix::Optional(p) => r.matches(digits) || (first == p && r.matches(&digits[1..])),
        Prefix::None => r.matches(digits),
    })
}

/// Validates a short national number, 6 to 8 digits with its trunk prefix
/// ("089 12345", "030 123456", Italy's "0521 1234"), as a *fixed line* of
/// one of our countries. Below nine digits almost any number is some
/// country's landline, so the caller accepts one only with more evidence
/// (a phone word, or an area code with its trunk zero written apart).
pub fn national_short_fixed(digits: &str) -> bool {
    if !(6..=8).contains(&digits.len()) {
        return false;
    }
    let first = digits.as_bytes()[0];
    PLAN.regions.iter().any(|r| match r.prefix {
        Prefix::Required(p) => first == p && r.fixed_matches(&digits[1..]),
        Prefix::Optional(p) => {
            r.fixed_matches(digits) || (first == p && r.fixed_matches(&digits[1..]))
        }
        Prefix::None => r.fixed_matches(digits),
    })
}

/// The E.164 forms (`+4930123456`) a number may stand for: one when it is
/// written with a country code, one per country whose plan validates it
/// when written nationally (usually exactly one). `digits` excludes a
/// leading `+` or `00`, as `international_form` says.
pub(crate) fn e164_candidates(digits: &str, international_form: bool) -> Vec<String> {
    let plan = &*PLAN;
    let mut out: Vec<String> = Vec::new();
    if international_form {
        for cc_len in 1..=3.min(digits.len()) {
            let Ok(cc) = digits[..cc_len].parse::<u16>() else {
                continue;
            };
            if !plan.country_codes.contains(&cc) {
                continue;
            }
            let nsn = &digits[cc_len..];
            // "+44 (0)20 …": drop the trunk digit written after the code.
            let nsn = plan
                .regions
                .iter()
                .filter(|r| r.code == cc)
                .find_map(|r| match r.prefix {
                    Prefix::Required(p) | Prefix::Optional(p)
                        if nsn.as_bytes().first() == Some(&p) && !r.matches(nsn) =>
                    {
                        Some(&nsn[1..])
                    }
                    _ => None,
                })
                .unwrap_or(nsn);
            out.push(format!("+{cc}{nsn}"));
            break;
        }
        return out;
    }
    let first = digits.as_bytes().first().copied();
    for r in &plan.regions {
        let valid = |d: &str| r.matches(d) || r.fixed_matches(d);
        let nsn = match r.prefix {
            Prefix::Required(p) if first == Some(p) && valid(&digits[1..]) => &digits[1..],
            Prefix::Optional(_) if valid(digits) => digits,
            Prefix::Optional(p) if first == Some(p) && valid(&digits[1..]) => &digits[1..],
            Prefix::None if valid(digits) => digits,
            _ => continue,
        };
        let e164 = format!("+{}{nsn}", r.code);
        if !out.contains(&e164) {
            out.push(e164);
        }
    }
    out
}

/// North American numbering: NXX NXX XXXX.
fn nanp_like(nsn: &str) -> bool {
    let b = nsn.as_bytes();
    b.len() == 10 && b[0] >= b'2' && b[3] >= b'2'
}

/// Whether `digits` (no separators) is a valid phone number, either with a
/// country code (`international`) or in one of our countries' national
/// formats.
pub fn phone_is_valid(digits: &str, international_form: bool) -> bool {
    if international_form {
        international(digits).is_some()
    } else {
        national(digits) || national_short_fixed(digits)
    }
}
