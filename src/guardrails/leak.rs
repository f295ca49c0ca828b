//! System-prompt leakage, closed by construction rather than by recognising the request for it:
//! each run puts a fresh canary in its system prompt, and the outbound stage refuses a draft
//! that holds the canary (in any case, with any separators between its characters) or repeats
//! the prompt templates' own wording at length ([`OVERLAP_WORDS`] consecutive words). Whatever
//! made the model write its instructions out, the customer does not get them.
//!
//! Only the templates' fixed text counts: their variables hold the knowledge passages and the
//! customer's profile, which a good answer quotes.

use std::collections::HashSet;
use std::sync::Arc;

/// This many consecutive words of a prompt template in a draft are a leak (about 50 characters
/// of running text: longer than any phrase an answer shares with the instructions by chance).
pub const OVERLAP_WORDS: usize = 8;

/// The fixed wording of prompt templates, as windows of [`OVERLAP_WORDS`] words.
#[derive(Debug, Default)]
pub struct PromptTexts {
    windows: HashSet<u64>,
}

impl PromptTexts {
    /// From template texts; `{{variable}}` slots split a text (a window never spans one).
    pub fn new(templates: &[&str]) -> PromptTexts {
        let mut windows = HashSet::new();
        for template in templates {
            for segment in fixed_segments(template) {
                let words: Vec<u64> = words(segment).map(|(_, _, h)| h).collect();
                for window in words.windows(OVERLAP_WORDS) {
                    windows.insert(combine(window));
                }
            }
        }
        PromptTexts { windows }
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

/// What one run's outbound stage guards: its canary and the templates its prompt came from.
#[derive(Debug, Clone)]
pub struct PromptSecret {
    canary: String,
    texts: Arc<PromptTexts>,
}

impl PromptSecret {
    /// `canary`: a fresh random token of at least 16 letters or digits.
    pub fn new(canary: impl Into<String>, texts: Arc<PromptTexts>) -> PromptSecret {
        PromptSecret {
            canary: canary.into(),
            texts,
        }
    }

    pub fn canary(&self) -> &str {
        &self.canary
    }
}

/// How a draft leaks its prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakKind {
    Canary,
    Overlap,
}

/// A leak: its byte range in the draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub kind: LeakKind,
    pub start: usize,
    pub end: usize,
}

/// Where `draft` leaks the prompt `secret` guards.
pub fn leaks(draft: &str, secret: &PromptSecret) -> Vec<Leak> {
    let mut out = Vec::new();
    // The canary, compared on letters and digits alone, lowercase: spacing, dashes or case
    // changes do not hide it.
    let key: Vec<char> = secret
        .canary
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    if !key.is_empty() {
        let folded: Vec<(usize, usize, char)> = draft
            .char_indices()
            .filter(|(_, c)| c.is_alphanumeric())
            .flat_map(|(i, c)| c.to_lowercase().map(move |l| (i, i + c.len_utf8(), l)))
            .collect();
        let mut at = 0;
        while at + key.len() <= folded.len() {
            if folded[at..at + key.len()]
                .iter()
                .zip(&key)
                .all(|((_, _, c), k)| c == k)
            {
                out.push(Leak {
                    kind: LeakKind::Canary,
                    start: folded[at].0,
                    end: folded[at + key.len() - 1].1,
                });
                at += key.len();
            } else {
                at += 1;
            }
        }
    }
    if !secret.texts.is_empty() {
        let words: Vec<(usize, usize, u64)> = words(draft).collect();
        let hashes: Vec<u64> = words.iter().map(|w| w.2).collect();
        let mut covered_to = 0;
        for (i, window) in hashes.windows(OVERLAP_WORDS).enumerate() {
            if secret.texts.windows.contains(&combine(window)) {
                let (start, end) = (words[i].0, words[i + OVERLAP_WORDS - 1].1);
                match out.last_mut() {
                    // Overlapping windows make one leak.
                    Some(last) if last.kind == LeakKind::Overlap && start < covered_to => {
                        last.end = end;
                    }
                    _ => out.push(Leak {
                        kind: LeakKind::Overlap,
                        start,
                        end,
                    }),
                }
                covered_to = end;
            }
        }
    }
    out
}

/// The parts of a template outside its `{{…}}` slots.
fn fixed_segments(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push(&rest[..open]);
        match rest[open..].find("}}") {
            Some(close) => rest = &rest[open + close + 2..],
            None => return out,
        }
    }
    out.push(rest);
    out
}

/// Words (runs of letters and digits), lowercase, each with its byte range and a hash.
fn words(text: &str) -> impl Iterator<Item = (usize, usize, u64)> + '_ {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some(&(_, c)) = chars.peek() {
            if c.is_alphanumeric() {
                break;
            }
            chars.next();
        }
        let &(start, _) = chars.peek()?;
        let mut end = start;
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        while let Some(&(i, c)) = chars.peek() {
            if !c.is_alphanumeric() {
                break;
            }
            for l in c.to_lowercase() {
                let mut buf = [0u8; 4];
                for b in l.encode_utf8(&mut buf).bytes() {
                    hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
            }
            end = i + c.len_utf8();
            chars.next();
        }
        Some((start, end, hash))
    })
}

fn combine(window: &[u64]) -> u64 {
    window.iter().fold(0xcbf2_9ce4_8422_2325u64, |acc, &w| {
        (acc ^ w).wrapping_mul(0x0100_0000_01b3).rotate_left(17)
    })
}
