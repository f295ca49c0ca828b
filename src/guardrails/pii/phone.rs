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
}

impl Region {
    fn matches(&self, digits: &str) -> bool {
        let input = Input::new(digits).anchored(Anchored::Yes);
        matches!(self.dfa.try_search_fwd(&input), Ok(Some(m)) if m.offset() == digits.len())
    }
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
            let alternatives: Vec<String> = DATABASE
                .iter()
                .filter(|meta| meta.country_code() == code)
                .flat_map(|meta| {
                    let d = meta.descriptors();
                    [d.fixed_line(), d.mobile(), d.voip(), d.personal_number()]
                        .into_iter()
                        .flatten()
                        // The metadata keeps the XML's layout whitespace in its patterns.
                        .map(|desc| {
                            desc.national_number()
                                .as_str()
                                .chars()
                                .filter(|c| !c.is_whitespace())
                                .collect()
                        })
                        .collect::<Vec<String>>()
                })
                .collect();
            let dfa = dense::Builder::new()
                .configure(
                    dense::DFA::config().start_kind(regex_automata::dfa::StartKind::Anchored),
                )
                .syntax(regex_automata::util::syntax::Config::new().unicode(false))
                .build(&format!("(?:{})$", alternatives.join("|")))
                .ok()?;
            Some(Region { code, prefix, dfa })
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
        national(digits)
    }
}
