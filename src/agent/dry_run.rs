//! Guardrail dry-run (AGT-3): before a tenant saves a new guardrail configuration or threshold,
//! evaluate it against the conversations of the last N days and show what would have been
//! blocked, handed off, masked or flagged, next to what the current configuration did, with
//! examples. Nothing is changed and nothing is sent.
//!
//! Customer messages are evaluated at the inbound stage and the agent's replies at the outbound
//! stage, each conversation in order with its own vault and the contact's known details, as a
//! run would. Stored replies hold real values (they were unmasked for the customer), so they
//! are masked with the conversation's vault first, as the model's draft would have been.
//! Examples show masked text only.
//!
//! A proposed confidence threshold is tried on the recorded runs: which answers would have gone
//! to a person instead (or no longer), with examples (the recorded draft, masked as the model
//! wrote it). A proposed approval policy is tried on the review items still pending and those
//! opened in the window: which would need a different role or number of approvals.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::AgentState;
use crate::auth::Ctx;
use crate::error::{Error, Result};
use crate::guardrails::{
    evaluate, mask_text, Action, Context, FindingKind, KnownEntities, PiiType, Policy, Stage,
    TenantConfig, Verdict,
};
use crate::http::{Access, Api, Contract, Json};
use crate::rbac::Permission;
use crate::reviews::{RequiredRole, ReviewKind, ReviewPolicy, ReviewStatus, Subject};
use utoipa::ToSchema;

/// Most messages one dry-run reads (newest first); the answer says when it stopped there.
const MAX_MESSAGES: i64 = 20_000;
const MAX_DAYS: i64 = 90;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    AgentState: axum::extract::FromRef<S>,
{
    api.endpoint(
        Method::POST,
        "/api/v1/agent/guardrails/dry-run",
        Access::Requires(Permission::GuardrailsManage),
        (
            "agent",
            "Evaluate a proposed guardrail configuration against recent conversations",
        ),
        Contract::new()
            .body::<DryRunBody>()
            .ok::<Report>()
            .error(StatusCode::BAD_REQUEST, "invalid_days")
            .error(StatusCode::BAD_REQUEST, "invalid_max_examples")
            .error(StatusCode::BAD_REQUEST, "invalid_threshold")
            .error(StatusCode::BAD_REQUEST, "invalid_policy")
            .error(StatusCode::BAD_REQUEST, "invalid_guardrails")
            .error(StatusCode::BAD_REQUEST, "required_pack")
            .error(StatusCode::BAD_REQUEST, "pii_type_mandatory")
            .error(StatusCode::CONFLICT, "duplicate_rule_id"),
        dry_run,
    )
}

/// What to try on the recent past; each part absent is the current one.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GuardrailDryRunRequest)]
struct DryRunBody {
    /// The proposed guardrail configuration (as for PUT /api/v1/agent/settings); the current
    /// one if absent.
    #[schema(value_type = Option<TenantConfig>)]
    guardrails: Option<Value>,
    /// The proposed confidence threshold; the current one if absent.
    #[schema(minimum = 0.0, maximum = 1.0)]
    confidence_threshold: Option<f32>,
    /// How many days back to look.
    #[serde(default = "default_days")]
    #[schema(default = 7, minimum = 1, maximum = 90)]
    days: i64,
    /// The most examples of each sort to show.
    #[serde(default = "default_examples")]
    #[schema(default = 20, minimum = 0, maximum = 100)]
    max_examples: usize,
    /// A proposed approval policy (as for PUT /api/v1/reviews/policy), tried on the review
    /// items pending now or opened in the window.
    #[schema(value_type = Option<ReviewPolicy>)]
    review_policy: Option<Value>,
}

fn default_days() -> i64 {
    7
}

fn default_examples() -> usize {
    20
}

/// What a configuration decided about the messages.
#[derive(Debug, Default, Serialize, PartialEq, ToSchema)]
#[schema(as = GuardrailTally)]
pub struct Tally {
    pub blocked: u64,
    pub handed_off: u64,
    pub redacted: u64,
    pub flagged: u64,
    /// Messages in which PII would be masked.
    pub masked: u64,
    /// Findings by rule id.
    pub by_rule: BTreeMap<String, u64>,
    /// Findings by PII type.
    pub by_pii_type: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, verdict: &Verdict) {
        match verdict.action {
            Action::Block => self.blocked += 1,
            Action::Handoff => self.handed_off += 1,
            Action::Redact => self.redacted += 1,
            Action::Flag => self.flagged += 1,
            Action::Allow => {}
        }
        let mut pii = false;
        for f in &verdict.findings {
            match f.kind {
                FindingKind::Pii(t) => {
                    pii = true;
                    *self.by_pii_type.entry(t.label().to_string()).or_default() += 1;
                }
                _ => *self.by_rule.entry(f.rule_id.clone()).or_default() += 1,
            }
        }
        if pii {
            self.masked += 1;
        }
    }
}

/// A message the proposal decides differently (or stops or flags anyway).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GuardrailDryRunExample)]
struct Example {
    message_id: Uuid,
    conversation_id: Uuid,
    /// `inbound` (the customer's message) or `outbound` (the agent's reply).
    #[schema(value_type = String)]
    stage: &'static str,
    current: Action,
    proposed: Action,
    /// The rules the proposal's verdict names.
    rules: Vec<String>,
    /// The message with PII masked, cut to 280 characters.
    text: String,
}

/// The proposed confidence threshold tried on the recorded runs.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GuardrailDryRunConfidence)]
struct Confidence {
    /// Recorded runs with a confidence in the window.
    executions: u64,
    current_threshold: f32,
    proposed_threshold: f32,
    /// Runs whose confidence falls below the threshold: their drafts go to a person.
    below_current: u64,
    below_proposed: u64,
    /// Answers (runs that decided to reply) the proposed threshold would hand to a person that
    /// the current one let through, and the other way round.
    newly_handed_off: u64,
    no_longer_handed_off: u64,
    /// Those runs, newest first.
    examples: Vec<ThresholdExample>,
}

/// A run the proposed threshold would treat otherwise.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GuardrailDryRunThresholdExample)]
struct ThresholdExample {
    execution_id: Uuid,
    conversation_id: Uuid,
    confidence: f32,
    /// What the run did.
    #[schema(value_type = super::runtime::RunOutcome)]
    outcome: String,
    /// What it would do under the proposed threshold: `handed_off` or `replied`.
    #[schema(value_type = String)]
    proposed: &'static str,
    /// The draft as the model wrote it (placeholders, not real values), cut to 280 characters.
    #[schema(required = true)]
    draft: Option<String>,
}

/// A review item whose demands the proposed policy would change.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GuardrailDryRunReviewChange)]
struct ReviewChange {
    review_id: Uuid,
    #[schema(value_type = ReviewKind)]
    kind: String,
    #[schema(value_type = ReviewStatus)]
    status: String,
    /// The tenant action's name, for an action.
    #[schema(required = true)]
    action: Option<String>,
    #[schema(required = true)]
    amount: Option<f64>,
    /// What the item needs now.
    current: Demands,
    /// What it would need under the proposed policy.
    proposed: ProposedDemands,
}

/// Who must approve a review item, and how many.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GuardrailDryRunDemands)]
struct Demands {
    #[schema(value_type = RequiredRole)]
    role: String,
    approvals: i32,
}

/// Who would have to approve a review item, how many, and by which of the policy's rules.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GuardrailDryRunProposedDemands)]
struct ProposedDemands {
    role: RequiredRole,
    approvals: i32,
    /// Indexes of the rules that matched.
    matched_rules: Vec<usize>,
}

/// The proposed approval policy tried on the review items.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GuardrailDryRunReviewPolicy)]
struct ReviewPolicyReport {
    /// Items pending now or opened in the window.
    checked: u64,
    /// Those whose demands would differ under the proposed policy.
    changed: Vec<ReviewChange>,
}

/// Which PII types each configuration masks before the model sees a message.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GuardrailDryRunPiiTypes)]
struct PiiTypes {
    /// Masked by every configuration, whatever it lists (AGT-2).
    #[schema(value_type = Vec<String>)]
    mandatory: Vec<PiiType>,
    #[schema(value_type = Vec<String>)]
    current: Vec<PiiType>,
    #[schema(value_type = Vec<String>)]
    proposed: Vec<PiiType>,
}

/// What the proposal would have done, next to what the current configuration did.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = GuardrailDryRun)]
struct Report {
    days: i64,
    /// The window's start.
    #[serde(with = "time::serde::rfc3339")]
    since: OffsetDateTime,
    /// Customer messages evaluated.
    inbound_messages: u64,
    /// Agent replies evaluated.
    outbound_messages: u64,
    /// The window held more messages than one dry-run reads (20,000): the newest were read.
    truncated: bool,
    current: Tally,
    proposed: Tally,
    /// The PII types masked under each configuration: the floor always among them.
    pii_types: PiiTypes,
    /// Messages on which the two configurations decide differently.
    changed: u64,
    confidence: Confidence,
    /// The messages decided differently first, then those the proposal stops or flags anyway.
    examples: Vec<Example>,
    /// Present when a review policy was proposed.
    #[serde(skip_serializing_if = "Option::is_none")]
    review_policy: Option<ReviewPolicyReport>,
}

struct Row {
    id: Uuid,
    conversation_id: Uuid,
    direction: String,
    body: String,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

async fn dry_run(
    State(state): State<AgentState>,
    ctx: Ctx,
    Json(body): Json<DryRunBody>,
) -> Result<Json<Report>> {
    if !(1..=MAX_DAYS).contains(&body.days) {
        return Err(Error::bad_request(
            "invalid_days",
            format!("days must be 1 to {MAX_DAYS}"),
        ));
    }
    if body.max_examples > 100 {
        return Err(Error::bad_request(
            "invalid_max_examples",
            "max_examples must be 0 to 100",
        ));
    }
    if let Some(t) = body.confidence_threshold {
        if !(0.0..=1.0).contains(&t) {
            return Err(Error::bad_request(
                "invalid_threshold",
                "confidence_threshold must be between 0 and 1",
            ));
        }
    }
    let review_policy = match &body.review_policy {
        None => None,
        Some(v) => {
            let policy: ReviewPolicy = serde_json::from_value(v.clone())
                .map_err(|e| Error::bad_request("invalid_policy", e.to_string()))?;
            policy
                .validate()
                .map_err(|e| Error::bad_request("invalid_policy", e))?;
            Some(policy.normalized())
        }
    };
    let mut tx = ctx.begin(&state).await?;
    let settings = super::settings::load(&mut tx, ctx.tenant_id).await?;
    let current = super::settings::policy(&state, ctx.tenant_id, &settings)?;
    let proposed = match &body.guardrails {
        None => current.clone(),
        Some(config) => {
            let config: TenantConfig = serde_json::from_value(config.clone())
                .map_err(|e| Error::bad_request("invalid_guardrails", e.to_string()))?;
            std::sync::Arc::new(super::settings::check_guardrails(&config)?)
        }
    };
    let since = OffsetDateTime::now_utc() - time::Duration::days(body.days);
    // Newest first so a cut keeps the most recent; evaluated oldest first per conversation.
    let mut rows = sqlx::query_as!(
        Row,
        r#"SELECT m.id, m.conversation_id, m.direction, m.body,
                  p.name AS "name?", p.email AS "email?", p.phone AS "phone?"
           FROM message m
           JOIN conversation c ON c.id = m.conversation_id
           JOIN contact p ON p.id = c.contact_id
           WHERE m.tenant_id = current_tenant_id() AND m.created_at >= $1 AND NOT m.private
             AND (m.direction = 'inbound' OR m.author_kind = 'ai') AND m.body <> ''
           ORDER BY m.created_at DESC
           LIMIT $2"#,
        since,
        MAX_MESSAGES + 1
    )
    .fetch_all(&mut *tx)
    .await?;
    let runs = sqlx::query!(
        r#"SELECT id, conversation_id, confidence AS "confidence!", outcome,
                  record->'decision'->>'action' AS "action?", record->'decision'->>'reply' AS "draft?"
           FROM agent_execution
           WHERE tenant_id = current_tenant_id() AND started_at >= $1 AND confidence IS NOT NULL
           ORDER BY started_at DESC"#,
        since
    )
    .fetch_all(&mut *tx)
    .await?;
    let items = match &review_policy {
        None => Vec::new(),
        Some(_) => {
            sqlx::query!(
                r#"SELECT id, kind, status, required_role, approvals_required,
                          policy->>'action_kind' AS "action_kind?", proposal->>'action' AS "action?",
                          (policy->>'amount')::float8 AS "amount?"
                   FROM review_item
                   WHERE tenant_id = current_tenant_id() AND (status = 'pending' OR created_at >= $1)
                   ORDER BY created_at DESC
                   LIMIT 5000"#,
                since
            )
            .fetch_all(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    let review_policy = review_policy.map(|policy| {
        let changed = items
            .iter()
            .filter_map(|item| {
                let is_action = item.kind == "action";
                let needs = policy.requirement(Subject {
                    kind: item.action_kind.as_deref().filter(|_| is_action),
                    action: item.action.as_deref().filter(|_| is_action),
                    amount: item.amount,
                });
                let now = RequiredRole::parse(&item.required_role);
                (now != Some(needs.role) || item.approvals_required != needs.approvals).then(|| {
                    ReviewChange {
                        review_id: item.id,
                        kind: item.kind.clone(),
                        status: item.status.clone(),
                        action: item.action.clone().filter(|_| is_action),
                        amount: item.amount,
                        current: Demands {
                            role: item.required_role.clone(),
                            approvals: item.approvals_required,
                        },
                        proposed: ProposedDemands {
                            role: needs.role,
                            approvals: needs.approvals,
                            matched_rules: needs.matched_rules,
                        },
                    }
                })
            })
            .collect();
        ReviewPolicyReport {
            checked: items.len() as u64,
            changed,
        }
    });
    let truncated = rows.len() as i64 > MAX_MESSAGES;
    rows.truncate(MAX_MESSAGES as usize);
    rows.reverse();

    let proposed_threshold = body
        .confidence_threshold
        .unwrap_or(settings.confidence_threshold);
    // Only an answer meets the threshold (a hand-off or an action goes to a person anyway).
    let current_threshold = settings.confidence_threshold;
    let newly = |c: f32| c < proposed_threshold && c >= current_threshold;
    let no_longer = |c: f32| c >= proposed_threshold && c < current_threshold;
    let answers: Vec<_> = runs
        .iter()
        .filter(|r| r.action.as_deref() == Some("reply"))
        .collect();
    let threshold_examples = answers
        .iter()
        .filter(|r| newly(r.confidence) || no_longer(r.confidence))
        .take(body.max_examples)
        .map(|r| ThresholdExample {
            execution_id: r.id,
            conversation_id: r.conversation_id,
            confidence: r.confidence,
            outcome: r.outcome.clone(),
            proposed: if r.confidence < proposed_threshold {
                "handed_off"
            } else {
                "replied"
            },
            draft: r.draft.as_deref().map(excerpt),
        })
        .collect();
    let confidence = Confidence {
        newly_handed_off: answers.iter().filter(|r| newly(r.confidence)).count() as u64,
        no_longer_handed_off: answers.iter().filter(|r| no_longer(r.confidence)).count() as u64,
        examples: threshold_examples,
        executions: runs.len() as u64,
        current_threshold: settings.confidence_threshold,
        proposed_threshold,
        below_current: runs
            .iter()
            .filter(|r| r.confidence < settings.confidence_threshold)
            .count() as u64,
        below_proposed: runs
            .iter()
            .filter(|r| r.confidence < proposed_threshold)
            .count() as u64,
    };
    let pii_types = PiiTypes {
        mandatory: PiiType::MANDATORY.to_vec(),
        current: current.masked_pii_types(),
        proposed: proposed.masked_pii_types(),
    };
    let days = body.days;
    let max_examples = body.max_examples;
    // Pure CPU work: off the async threads.
    let report = tokio::task::spawn_blocking(move || {
        let mut report = Report {
            days,
            since,
            inbound_messages: 0,
            outbound_messages: 0,
            truncated,
            current: Tally::default(),
            proposed: Tally::default(),
            pii_types,
            changed: 0,
            confidence,
            examples: Vec::new(),
            review_policy,
        };
        let mut contexts: BTreeMap<Uuid, (Context, Context)> = BTreeMap::new();
        let mut others = Vec::new();
        for row in &rows {
            let (now, next) = contexts.entry(row.conversation_id).or_insert_with(|| {
                let known = known(row);
                (
                    Context::new(Default::default(), known.clone()),
                    Context::new(Default::default(), known),
                )
            });
            let inbound = row.direction == "inbound";
            let (stage, label) = if inbound {
                (Stage::Inbound, "inbound")
            } else {
                (Stage::Outbound, "outbound")
            };
            let judge = |ctx: &mut Context, policy: &Policy| {
                if inbound {
                    evaluate(stage, &row.body, ctx, policy)
                } else {
                    let known = ctx.known.clone();
                    let draft = mask_text(&row.body, &known, &mut ctx.vault);
                    evaluate(stage, &draft, ctx, policy)
                }
            };
            let was = judge(now, &current);
            let would = judge(next, &proposed);
            if inbound {
                report.inbound_messages += 1;
            } else {
                report.outbound_messages += 1;
            }
            report.current.add(&was);
            report.proposed.add(&would);
            let differs = was.action != would.action;
            if differs {
                report.changed += 1;
            }
            let example = || Example {
                message_id: row.id,
                conversation_id: row.conversation_id,
                stage: label,
                current: was.action,
                proposed: would.action,
                rules: would
                    .findings
                    .iter()
                    .filter(|f| !matches!(f.kind, FindingKind::Pii(_)))
                    .map(|f| f.rule_id.clone())
                    .collect(),
                // Both stages keep placeholders in the verdict's text: nothing real shows.
                text: excerpt(&would.masked_text),
            };
            if differs && report.examples.len() < max_examples {
                report.examples.push(example());
            } else if !differs && would.action != Action::Allow && others.len() < max_examples {
                others.push(example());
            }
        }
        // Differences first; then what the proposal stops or flags anyway.
        let room = max_examples.saturating_sub(report.examples.len());
        report.examples.extend(others.into_iter().take(room));
        report
    })
    .await
    .map_err(|e| Error::Internal(anyhow::anyhow!("the dry-run failed: {e}")))?;
    Ok(Json(report))
}

fn known(row: &Row) -> KnownEntities {
    let mut known = KnownEntities::new();
    if let Some(v) = &row.name {
        known = known.with_name(v);
    }
    if let Some(v) = &row.email {
        known = known.with_email(v);
    }
    if let Some(v) = &row.phone {
        known = known.with_phone(v);
    }
    known
}

fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(280).collect();
    if text.chars().count() > 280 {
        out.push('…');
    }
    out
}
