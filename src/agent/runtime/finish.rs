//! How a run ends: carry out its decision in the finishing transaction (reply, hand off, or
//! open a review item), store its record and link it into the audit chain; or close a run that
//! posts nothing, and give up on a message whose every attempt failed.

use std::time::Instant;

use serde_json::{json, Value};
use uuid::Uuid;

use super::record::{findings, millis, Record, RunOutcome};
use super::{agent_source, send_as_agent, vault_context, Facts, Final, AGENT_FAILED};
use crate::agent::pipeline::Guard;
use crate::agent::settings;
use crate::agent::AgentState;
use crate::audit::{self, AuditEvent, AuditSource};
use crate::conversations::{self, Handler};
use crate::db::Tx;
use crate::error::Result;
use crate::guardrails::Lang;
use crate::reviews;

/// The guardrail reason of a customer's request for human review (the `human_review` pack).
pub(super) const HUMAN_REVIEW_REASON: &str = "guardrail:human-review.request";

/// The agent's last finished decision in a conversation before this run: what a customer's
/// request for human review is about.
pub(super) async fn previous_decision(
    conn: &mut sqlx::PgConnection,
    conversation_id: Uuid,
    this_run: Uuid,
) -> Result<(Option<Uuid>, Value)> {
    let row = sqlx::query!(
        "SELECT id, outcome, record->'reason' AS reason, record->'decision' AS decision FROM agent_execution
         WHERE conversation_id = $1 AND id <> $2 AND outcome NOT IN ('running', 'abandoned')
         ORDER BY started_at DESC LIMIT 1",
        conversation_id,
        this_run
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map_or((None, Value::Null), |r| {
        (
            Some(r.id),
            json!({ "execution_id": r.id, "outcome": r.outcome, "reason": r.reason, "decision": r.decision }),
        )
    }))
}

/// A customer's request for human review on a conversation people handle: the item lands in
/// the queue (once per message, by its idempotency key) about the agent's last decision, and
/// the customer is told, in the tenant's wording of the pack's reply, that a person will look.
pub(super) async fn human_review_without_run(
    state: &AgentState,
    tx: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    facts: &Facts,
    message_id: Uuid,
) -> Result<()> {
    let (reviewed, decision) =
        previous_decision(&mut *tx, facts.conversation_id, Uuid::nil()).await?;
    let opened = reviews::open(
        &mut *tx,
        &AuditSource::system(tenant_id),
        reviews::NewItem {
            kind: reviews::ReviewKind::HumanReview,
            conversation_id: Some(facts.conversation_id),
            execution_id: reviewed,
            action: None,
            proposal: json!({ "request": facts.body, "decision": decision }),
            amount: None,
            confidence: None,
            findings: json!([]),
            requester: reviews::Requester::Customer,
            note: Some(facts.body.chars().take(4000).collect()),
            idempotency_key: format!("human-review:{message_id}"),
        },
    )
    .await?;
    if opened.is_some() {
        let settings = settings::load(&mut *tx, tenant_id).await?;
        let policy = settings::policy(state, tenant_id, &settings)?;
        let lang = Lang::from_stored(facts.language.as_deref());
        if let Some(text) = policy.safe_reply("human_review", lang) {
            crate::conversations::post_outbound(
                &mut *tx,
                tenant_id,
                facts.conversation_id,
                crate::conversations::Author::System,
                &text,
            )
            .await?;
        }
    }
    Ok(())
}

/// Carries out a run's decision and stores its record, in one transaction that locks the
/// conversation: a person who took over meanwhile gets nothing posted, flagged findings open a
/// review item, the vault is stored if it learned a value, and the record is linked into the
/// audit chain, unless another attempt answered the message first.
#[allow(clippy::too_many_arguments)]
pub(super) async fn finish(
    state: &AgentState,
    tenant_id: Uuid,
    facts: &Facts,
    message_id: Uuid,
    mut record: Record,
    final_step: Final,
    guard: &Guard<'_>,
    actions: &[reviews::TenantAction],
    vault_before: Option<&[u8]>,
) -> Result<()> {
    let finishing = Instant::now();
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let handler = sqlx::query_scalar!(
        r#"SELECT handler AS "handler: Handler" FROM conversation WHERE id = $1 FOR UPDATE"#,
        facts.conversation_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let run = Finishing {
        tenant_id,
        facts,
        message_id,
        confidence: record.confidence.as_ref().map(|c| c.value as f32),
    };
    if handler != Handler::Ai {
        // A person took over while the agent was thinking: record, send nothing.
        record.outcome = RunOutcome::HandedOff;
        record.reason = "taken_over_during_run".into();
    } else {
        run.carry_out(&mut tx, &mut record, final_step, guard, actions)
            .await?;
    }
    run.open_flag_review(&mut tx, &record).await?;
    let vault = serde_json::to_vec(&guard.ctx.vault)
        .map_err(|e| anyhow::anyhow!("conversation {} vault: {e}", facts.conversation_id))?;
    if vault_before != Some(vault.as_slice()) {
        let sealed = state
            .sealer
            .seal(&vault, &vault_context(facts.conversation_id));
        conversations::store_vault(&mut tx, tenant_id, facts.conversation_id, &sealed).await?;
    }
    // Everything but this last write and the commit.
    record.timings_ms.insert("finish", millis(finishing));
    run.settle(state, tx, record).await
}

/// What the steps of [`finish`] share about the run.
struct Finishing<'a> {
    tenant_id: Uuid,
    facts: &'a Facts,
    message_id: Uuid,
    confidence: Option<f32>,
}

impl Finishing<'_> {
    /// Replies, hands off (opening the review a low-confidence draft or a customer's request
    /// for review asks for), or holds a material action for a reviewer.
    async fn carry_out(
        &self,
        tx: &mut Tx,
        record: &mut Record,
        final_step: Final,
        guard: &Guard<'_>,
        actions: &[reviews::TenantAction],
    ) -> Result<()> {
        let (tenant_id, conversation_id) = (self.tenant_id, self.facts.conversation_id);
        match final_step {
            Final::Reply { text, outcome } => {
                send_as_agent(tx, tenant_id, conversation_id, &text).await?;
                record.outcome = outcome;
            }
            Final::Handoff {
                reason,
                suggestion,
                tell_customer,
            } => {
                // Every hand-off tells the customer that a person will answer, so nobody is left
                // waiting in silence.
                if let Some(text) = tell_customer.or_else(|| guard.handoff_notice(&reason)) {
                    send_as_agent(tx, tenant_id, conversation_id, &guard.unmask(&text)).await?;
                }
                conversations::hand_to_humans(
                    tx,
                    tenant_id,
                    conversation_id,
                    &reason,
                    suggestion.as_deref(),
                )
                .await?;
                self.open_handoff_review(tx, record, &reason, suggestion)
                    .await?;
                record.reason = reason;
                record.outcome = RunOutcome::HandedOff;
            }
            Final::PendingReview {
                action_id,
                name,
                arguments,
                amount,
                tell_customer,
            } => {
                // AGT-6: a material action waits for a named reviewer; nothing is executed here.
                let action = actions.iter().find(|a| a.id == action_id);
                let item = reviews::open(
                    tx,
                    &agent_source(tenant_id, record.execution_id),
                    reviews::NewItem {
                        kind: reviews::ReviewKind::Action,
                        conversation_id: Some(conversation_id),
                        execution_id: Some(record.execution_id),
                        action,
                        proposal: json!({ "action": name, "arguments": arguments, "amount": amount }),
                        amount,
                        confidence: self.confidence,
                        findings: findings(record),
                        requester: reviews::Requester::Agent,
                        note: None,
                        idempotency_key: format!("action:{}", record.execution_id),
                    },
                )
                .await?;
                send_as_agent(tx, tenant_id, conversation_id, &tell_customer).await?;
                record.outcome = RunOutcome::PendingReview;
                record.reason = match item {
                    Some(item) => format!("review_item:{item}"),
                    None => "review_item_exists".into(),
                };
            }
        }
        Ok(())
    }

    /// The review item a hand-off asks for, if any: a low-confidence draft waits for a person
    /// as a suggestion (AGT-5); a customer's request for review is about the agent's last
    /// decision (AGT-7).
    async fn open_handoff_review(
        &self,
        tx: &mut Tx,
        record: &Record,
        reason: &str,
        suggestion: Option<String>,
    ) -> Result<()> {
        let facts = self.facts;
        let (kind, proposal, key, note, reviewed) = match reason {
            "low_confidence" => (
                reviews::ReviewKind::LowConfidence,
                json!({ "draft": suggestion }),
                format!("low-confidence:{}", record.execution_id),
                None,
                None,
            ),
            HUMAN_REVIEW_REASON => {
                let (reviewed, decision) =
                    previous_decision(tx, facts.conversation_id, record.execution_id).await?;
                (
                    reviews::ReviewKind::HumanReview,
                    json!({ "request": facts.body, "decision": decision }),
                    format!("human-review:{}", self.message_id),
                    Some(facts.body.chars().take(4000).collect::<String>()),
                    reviewed,
                )
            }
            _ => return Ok(()),
        };
        reviews::open(
            tx,
            &agent_source(self.tenant_id, record.execution_id),
            reviews::NewItem {
                kind,
                conversation_id: Some(facts.conversation_id),
                // The decision under review, else this run (which handed the request over).
                execution_id: Some(reviewed.unwrap_or(record.execution_id)),
                action: None,
                proposal,
                amount: None,
                confidence: self.confidence,
                findings: findings(record),
                requester: if kind == reviews::ReviewKind::HumanReview {
                    reviews::Requester::Customer
                } else {
                    reviews::Requester::Agent
                },
                note,
                idempotency_key: key,
            },
        )
        .await?;
        Ok(())
    }

    /// Flagged findings let the run go on; a person looks at them afterwards.
    async fn open_flag_review(&self, tx: &mut Tx, record: &Record) -> Result<()> {
        let flagged: std::collections::BTreeSet<&str> = record
            .guardrails
            .iter()
            .filter(|v| v.verdict.action == crate::guardrails::Action::Flag)
            .flat_map(|v| v.verdict.findings.iter())
            .filter(|f| f.action == crate::guardrails::Action::Flag)
            .map(|f| f.rule_id.as_str())
            .collect();
        if flagged.is_empty() {
            return Ok(());
        }
        reviews::open(
            tx,
            &agent_source(self.tenant_id, record.execution_id),
            reviews::NewItem {
                kind: reviews::ReviewKind::GuardrailFlag,
                conversation_id: Some(self.facts.conversation_id),
                execution_id: Some(record.execution_id),
                action: None,
                proposal: json!({ "outcome": record.outcome, "rules": flagged }),
                amount: None,
                confidence: self.confidence,
                findings: findings(record),
                requester: reviews::Requester::Agent,
                note: None,
                idempotency_key: format!("flag:{}", record.execution_id),
            },
        )
        .await?;
        Ok(())
    }

    /// Stores the record and its audit entry, and commits, if this run is still the live one
    /// (no newer attempt superseded it) and no other run of the message finished: checked
    /// after the conversation's lock, so of two runs racing for one message exactly one posts.
    /// The loser's transaction is dropped and its record closed as abandoned.
    async fn settle(&self, state: &AgentState, mut tx: Tx, record: Record) -> Result<()> {
        let outcome = match record.outcome {
            RunOutcome::Blocked
            | RunOutcome::Replied
            | RunOutcome::HandedOff
            | RunOutcome::PendingReview => record.outcome,
            _ => RunOutcome::Failed,
        };
        // The digest is of the record as stored.
        let digest = sqlx::query_scalar!(
            r#"UPDATE agent_execution SET outcome = $2, confidence = $3, record = $4, finished_at = now()
           WHERE id = $1 AND outcome = 'running'
             AND NOT EXISTS (SELECT 1 FROM agent_execution x
                             WHERE x.tenant_id = current_tenant_id() AND x.conversation_id = $5
                               AND x.trigger_message_id = $6 AND x.id <> $1
                               AND x.outcome NOT IN ('running', 'abandoned'))
           RETURNING encode(sha256(convert_to(record::text, 'UTF8')), 'hex') AS "digest!""#,
            record.execution_id,
            outcome.as_str(),
            self.confidence,
            serde_json::to_value(&record).unwrap_or_default(),
            self.facts.conversation_id,
            self.message_id
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(digest) = digest else {
            // Another attempt answered (or is answering) this message: nothing of this run's
            // outcome is posted; its record stays, marked abandoned.
            drop(tx);
            tracing::warn!(execution_id = %record.execution_id, message_id = %self.message_id, "another run answered this message; this one is abandoned");
            return close_execution(
                state,
                self.tenant_id,
                self.facts.conversation_id,
                record,
                RunOutcome::Abandoned,
                "superseded",
            )
            .await;
        };
        audit_execution(
            &mut tx,
            self.tenant_id,
            self.facts.conversation_id,
            &record,
            outcome,
            self.confidence,
            &digest,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The `agent.executed` audit entry: the run's summary and the SHA-256 digest of its record as
/// stored (PostgreSQL's canonical jsonb text), so a record changed afterwards no longer matches
/// the hash-chained audit (AGT-8).
pub(super) async fn audit_execution(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    conversation_id: Uuid,
    record: &Record,
    outcome: RunOutcome,
    confidence: Option<f32>,
    digest: &str,
) -> Result<()> {
    let mut event = AuditEvent::new("agent.executed", "conversation", conversation_id).after(json!({
        "execution_id": record.execution_id, "trigger_message_id": record.trigger_message_id, "outcome": outcome,
        "reason": record.reason, "provider": record.provider, "model": record.model, "offline": record.offline,
        "confidence": confidence, "record_sha256": digest,
    }));
    event.execution_id = Some(record.execution_id);
    audit::record(conn, &agent_source(tenant_id, record.execution_id), event).await?;
    Ok(())
}

/// Finishes a run that posts nothing (`abandoned`: another attempt answered; `failed`: the
/// job gave up), with its record and audit entry. A row already finished is left alone.
pub(super) async fn close_execution(
    state: &AgentState,
    tenant_id: Uuid,
    conversation_id: Uuid,
    mut record: Record,
    outcome: RunOutcome,
    reason: &str,
) -> Result<()> {
    record.outcome = outcome;
    record.reason = reason.into();
    let confidence = record.confidence.as_ref().map(|c| c.value as f32);
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let digest = sqlx::query_scalar!(
        r#"UPDATE agent_execution SET outcome = $2, confidence = $3, record = $4, finished_at = now()
           WHERE id = $1 AND finished_at IS NULL
           RETURNING encode(sha256(convert_to(record::text, 'UTF8')), 'hex') AS "digest!""#,
        record.execution_id,
        outcome.as_str(),
        confidence,
        serde_json::to_value(&record).unwrap_or_default()
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(digest) = digest {
        audit_execution(
            &mut tx,
            tenant_id,
            conversation_id,
            &record,
            outcome,
            confidence,
            &digest,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The job's last attempt failed: the conversation goes to a person (AGT-11), unless a run
/// answered the message after all or people already have it, and the attempts still marked
/// running are closed as failed.
pub(super) async fn give_up(
    state: &AgentState,
    tenant_id: Uuid,
    message_id: Uuid,
    error: &str,
) -> Result<()> {
    let mut tx = state.db.tenant_tx(tenant_id).await?;
    let Some(row) = sqlx::query!(
        r#"SELECT c.id AS conversation_id, c.handler AS "handler: Handler",
                  EXISTS (SELECT 1 FROM agent_execution x
                          WHERE x.tenant_id = m.tenant_id AND x.conversation_id = m.conversation_id
                            AND x.trigger_message_id = m.id
                            AND x.outcome NOT IN ('running', 'abandoned')) AS "done!"
           FROM message m JOIN conversation c ON c.id = m.conversation_id
           WHERE m.id = $1 AND m.tenant_id = current_tenant_id()
           FOR UPDATE OF c"#,
        message_id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(());
    };
    if !row.done && row.handler == Handler::Ai {
        conversations::hand_to_humans(&mut tx, tenant_id, row.conversation_id, AGENT_FAILED, None)
            .await?;
    }
    let closed = sqlx::query!(
        r#"UPDATE agent_execution
           SET outcome = 'failed', finished_at = now(),
               record = record || jsonb_build_object('outcome', 'failed', 'reason', $3::text,
                                                     'errors', jsonb_build_array($4::text))
           WHERE tenant_id = current_tenant_id() AND conversation_id = $1 AND trigger_message_id = $2
             AND outcome = 'running'
           RETURNING id, provider, model, offline,
                     encode(sha256(convert_to(record::text, 'UTF8')), 'hex') AS "digest!""#,
        row.conversation_id,
        message_id,
        AGENT_FAILED,
        error
    )
    .fetch_all(&mut *tx)
    .await?;
    for execution in closed {
        let record = Record {
            execution_id: execution.id,
            conversation_id: row.conversation_id,
            trigger_message_id: message_id,
            provider: execution.provider,
            model: execution.model,
            offline: execution.offline,
            reason: AGENT_FAILED.into(),
            ..Record::default()
        };
        audit_execution(
            &mut tx,
            tenant_id,
            row.conversation_id,
            &record,
            RunOutcome::Failed,
            None,
            &execution.digest,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
