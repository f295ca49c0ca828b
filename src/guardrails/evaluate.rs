//! The one entry point: [`evaluate`] a text at a stage under a policy.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::guardrails::fold::Folded;
use crate::guardrails::leak::{self, LeakKind, PromptSecret};
use crate::guardrails::links;
use crate::guardrails::pii::{self, KnownEntities, PiiType};
use crate::guardrails::policy::Policy;
use crate::guardrails::rules::{Action, Lang, Stage};
use crate::guardrails::vault::{self, Replace, Vault};

/// Per-conversation state the engine reads and extends.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Placeholders issued so far in this conversation; inbound evaluation
    /// adds to it, outbound evaluation only reads it.
    pub vault: Vault,
    /// What the CRM knows about the contact.
    pub known: KnownEntities,
    /// Language of the conversation, for default safe replies.
    pub language: Lang,
    /// The run's system prompt, which no draft may give away: its canary and templates.
    pub prompt: Option<PromptSecret>,
}

impl Context {
    pub fn new(vault: Vault, known: KnownEntities) -> Self {
        Context {
            vault,
            known,
            language: Lang::default(),
            prompt: None,
        }
    }
}

/// What a finding is about. Serialised as the PII label (`EMAIL`) or as
/// `topic`, `length`, `placeholder`, `link`, `leak`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum FindingKind {
    Pii(PiiType),
    /// A rule of a pack or of the tenant (topics, injection, commitments).
    Topic,
    /// The draft is longer than the tenant allows.
    Length,
    /// The draft holds a placeholder the vault did not issue.
    Placeholder,
    /// The draft links to a host the tenant did not allow.
    Link,
    /// The draft gives the system prompt away (its canary, or its wording).
    Leak,
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FindingKind::Pii(t) => f.write_str(t.label()),
            FindingKind::Topic => f.write_str("topic"),
            FindingKind::Length => f.write_str("length"),
            FindingKind::Placeholder => f.write_str("placeholder"),
            FindingKind::Link => f.write_str("link"),
            FindingKind::Leak => f.write_str("leak"),
        }
    }
}

impl From<FindingKind> for String {
    fn from(k: FindingKind) -> String {
        k.to_string()
    }
}

impl TryFrom<String> for FindingKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "topic" => Ok(FindingKind::Topic),
            "length" => Ok(FindingKind::Length),
            "placeholder" => Ok(FindingKind::Placeholder),
            "link" => Ok(FindingKind::Link),
            "leak" => Ok(FindingKind::Leak),
            other => PiiType::from_str(other).map(FindingKind::Pii),
        }
    }
}

/// One thing the engine found, with byte offsets into the evaluated text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub rule_id: String,
    #[serde(rename = "type")]
    pub kind: FindingKind,
    pub start: usize,
    pub end: usize,
    pub score: f32,
    pub action: Action,
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The most severe action of any finding; `Allow` when nothing was found.
    pub action: Action,
    /// Inbound: the text with PII replaced by placeholders (what the model
    /// may see). Outbound: the draft with redactions applied, placeholders
    /// kept (pass it to [`crate::guardrails::unmask`] before sending).
    pub masked_text: String,
    pub findings: Vec<Finding>,
    /// For `block`/`handoff`: which safe reply to send.
    pub safe_reply_key: Option<String>,
    /// That reply's text (tenant wording, else the pack default in the
    /// conversation's language).
    pub safe_reply: Option<String>,
}

impl Verdict {
    /// Whether the text must not go on (AGT-4).
    pub fn is_stopped(&self) -> bool {
        !self.action.proceeds()
    }
}

pub const RULE_UNISSUED_PII: &str = "output.unissued-pii";
pub const RULE_UNKNOWN_PLACEHOLDER: &str = "output.unknown-placeholder";
pub const RULE_MAX_LENGTH: &str = "output.max-length";
/// A draft links to (or shows an image from) a host the tenant did not allow.
pub const RULE_LINK_HOST: &str = "output.link-host";
/// A draft holds the run's canary: it is copying the system prompt out.
pub const RULE_PROMPT_CANARY: &str = "output.prompt-canary";
/// A draft repeats the prompt templates' wording at length.
pub const RULE_PROMPT_OVERLAP: &str = "output.prompt-overlap";
/// Safe-reply key of the engine's own hand-offs.
pub const KEY_HANDOFF: &str = "handoff";

/// Evaluates `text` at `stage`. Pure: no I/O, no clock, no globals beyond the
/// lazily compiled built-in tables; the only effect is new placeholders in
/// `ctx.vault` on the inbound stage.
///
/// Inbound (customer messages, CRM fields, retrieved knowledge): rule packs
/// for the inbound stage, then PII masking. Outbound (the model's draft):
/// rule packs for the outbound stage, forbidden commitments, maximum length,
/// PII the vault did not issue, and placeholders it cannot resolve.
pub fn evaluate(stage: Stage, text: &str, ctx: &mut Context, policy: &Policy) -> Verdict {
    let folded = Folded::new(text);
    let mut findings: Vec<(Finding, Option<String>)> = Vec::new();
    let mut redactions: Vec<(usize, usize)> = Vec::new();
    for (meta, start, end) in policy.rule_hits(&folded, stage) {
        if meta.action == Action::Redact {
            redactions.push((start, end));
        }
        findings.push((
            Finding {
                rule_id: meta.id.clone(),
                kind: FindingKind::Topic,
                start,
                end,
                score: 1.0,
                action: meta.action,
            },
            meta.safe_reply.clone(),
        ));
    }
    let masked_text = match stage {
        Stage::Inbound => inbound(text, &folded, ctx, policy, &mut findings, redactions),
        Stage::Outbound => outbound(text, &folded, ctx, policy, &mut findings, redactions),
    };
    findings
        .sort_by(|(a, _), (b, _)| (a.start, a.end, &a.rule_id).cmp(&(b.start, b.end, &b.rule_id)));
    let action = findings
        .iter()
        .map(|(f, _)| f.action)
        .max()
        .unwrap_or_default();
    let (safe_reply_key, safe_reply) = if action.proceeds() {
        (None, None)
    } else {
        let key = findings
            .iter()
            .find(|(f, _)| f.action == action)
            .and_then(|(_, k)| k.clone())
            .unwrap_or_else(|| KEY_HANDOFF.to_string());
        let reply = policy.safe_reply(&key, ctx.language);
        (Some(key), reply)
    };
    Verdict {
        action,
        masked_text,
        findings: findings.into_iter().map(|(f, _)| f).collect(),
        safe_reply_key,
        safe_reply,
    }
}

/// Unions overlapping ranges.
fn merge(mut ranges: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    ranges.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s < last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn inbound(
    text: &str,
    folded: &Folded<'_>,
    ctx: &mut Context,
    policy: &Policy,
    findings: &mut Vec<(Finding, Option<String>)>,
    redactions: Vec<(usize, usize)>,
) -> String {
    let redactions = merge(redactions);
    let spans = pii::detect(text, folded, &ctx.known, policy.pii_enabled());
    let mut items: Vec<Replace> = Vec::with_capacity(spans.len() + redactions.len());
    for span in spans {
        if policy.is_public(&text[span.start..span.end]) {
            continue;
        }
        findings.push((
            Finding {
                rule_id: span.kind.rule_id().to_string(),
                kind: FindingKind::Pii(span.kind),
                start: span.start,
                end: span.end,
                score: span.score,
                action: Action::Redact,
            },
            None,
        ));
        // A redaction already hides this value, and hides it for good.
        if !redactions
            .iter()
            .any(|&(s, e)| span.start < e && s < span.end)
        {
            items.push(Replace::Pii(span));
        }
    }
    items.extend(
        redactions
            .into_iter()
            .map(|(start, end)| Replace::Redact { start, end }),
    );
    items.sort_by_key(|r| match r {
        Replace::Pii(s) => s.start,
        Replace::Redact { start, .. } => *start,
    });
    vault::rewrite(text, &items, &mut ctx.vault)
}

fn outbound(
    text: &str,
    folded: &Folded<'_>,
    ctx: &mut Context,
    policy: &Policy,
    findings: &mut Vec<(Finding, Option<String>)>,
    mut redactions: Vec<(usize, usize)>,
) -> String {
    let options = policy.options();
    if let Some(max) = options.max_output_chars {
        if let Some((cut, _)) = text.char_indices().nth(max) {
            findings.push((
                Finding {
                    rule_id: RULE_MAX_LENGTH.into(),
                    kind: FindingKind::Length,
                    start: cut,
                    end: text.len(),
                    score: 1.0,
                    action: Action::Handoff,
                },
                None,
            ));
        }
    }
    // Names found by introductions or sign-offs are skipped here: a draft
    // signing as the assistant ("I'm Alex") is not a leak. Structured values
    // and CRM values are checked against the vault.
    for span in pii::detect(text, folded, &ctx.known, policy.pii_enabled()) {
        let value = &text[span.start..span.end];
        let heuristic_name = matches!(
            span.kind,
            PiiType::Name | PiiType::Company | PiiType::Address
        ) && span.score < 0.95;
        if heuristic_name || ctx.vault.contains_value(span.kind, value) || policy.is_public(value) {
            continue;
        }
        let action = options.unissued_pii_action;
        if action == Action::Redact {
            redactions.push((span.start, span.end));
        }
        findings.push((
            Finding {
                rule_id: RULE_UNISSUED_PII.into(),
                kind: FindingKind::Pii(span.kind),
                start: span.start,
                end: span.end,
                score: span.score,
                action,
            },
            None,
        ));
    }
    // Links are judged on the draft as the customer would get it: a placeholder may stand for
    // a URL (from a passage the model was given) that only unmasking brings back.
    let (unmasked, resolved) = vault::unmask_mapped(text, &ctx.vault);
    for link in links::foreign_links(&unmasked, policy.link_hosts()) {
        let (start, end) = vault::masked_range(&resolved, (link.start, link.end));
        findings.push((
            Finding {
                rule_id: RULE_LINK_HOST.into(),
                kind: FindingKind::Link,
                start,
                end,
                score: 1.0,
                action: Action::Handoff,
            },
            None,
        ));
    }
    if let Some(secret) = &ctx.prompt {
        for leak in leak::leaks(&unmasked, secret) {
            let (start, end) = vault::masked_range(&resolved, (leak.start, leak.end));
            let rule = match leak.kind {
                LeakKind::Canary => RULE_PROMPT_CANARY,
                LeakKind::Overlap => RULE_PROMPT_OVERLAP,
            };
            findings.push((
                Finding {
                    rule_id: rule.into(),
                    kind: FindingKind::Leak,
                    start,
                    end,
                    score: 1.0,
                    action: Action::Handoff,
                },
                None,
            ));
        }
    }
    for (start, end) in vault::unresolved_placeholders(text, &ctx.vault) {
        findings.push((
            Finding {
                rule_id: RULE_UNKNOWN_PLACEHOLDER.into(),
                kind: FindingKind::Placeholder,
                start,
                end,
                score: 1.0,
                action: Action::Handoff,
            },
            None,
        ));
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e) in merge(redactions) {
        out.push_str(&text[at..s]);
        out.push_str(vault::REDACTED);
        at = e;
    }
    out.push_str(&text[at..]);
    out
}
