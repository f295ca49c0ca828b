//! Retention (RET-1, AGT-9, DSR-7): a policy per tenant and data class, enforced by a purge that
//! housekeeping runs for every tenant and that records each purge in the audit log. Legal
//! holds on a contact or a conversation keep their data out of every purge until released.
//!
//! Review items carry conversation content too (the customer's words in a human-review
//! request, the unmasked draft of a low-confidence answer, an action's arguments and its
//! endpoint's answer). A decided item's content goes with what it came from: when its
//! conversation's content goes (closed conversations) or when it is older than the agent
//! executions' period, whichever comes first. The fact stays: kind, status, who decided, when
//! and why, the policy it was held under (`content_purged_at` says it happened).
//!
//! The purge runs on the owner pool, pinned to the tenant: the application role may not delete
//! agent executions, jobs or audit rows at all, and the audit log only loses rows through
//! `audit_purge`, which keeps the hash chain verifiable (a prefix goes, the anchor moves).

pub mod routes;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::audit::{self, AuditEvent, AuditSource};
use crate::db::Db;

/// Rows per DELETE statement.
pub const BATCH: i64 = 1000;
/// Batches per class and run: bounds one run's transaction; the next run continues.
pub const MAX_BATCHES: i64 = 50;

/// A class of data with a retention period of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RetentionClass)]
pub enum Class {
    /// Agent execution records (AGT-8), 180 days, may only be raised (AGT-9).
    AgentExecutions,
    /// The whole audit chain, security and authentication events included: at least 365 days.
    AuditLog,
    /// Messages (and the PII vault) of conversations resolved more than N days ago.
    ClosedConversations,
    /// Audit exports: seven days at most (DSR-7).
    Exports,
    /// Finished (done or dead) job rows: every outbound send and agent run leaves one, with
    /// its payload and last error. 30 days at most.
    FinishedJobs,
    /// The request log: one row per authenticated API request. 30 days at most (RET-1).
    RequestLog,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Class::AgentExecutions,
        Class::AuditLog,
        Class::ClosedConversations,
        Class::Exports,
        Class::FinishedJobs,
        Class::RequestLog,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::AgentExecutions => "agent_executions",
            Class::AuditLog => "audit_log",
            Class::ClosedConversations => "closed_conversations",
            Class::Exports => "exports",
            Class::FinishedJobs => "finished_jobs",
            Class::RequestLog => "request_log",
        }
    }

    /// (minimum, maximum, default) in days. The minimums and maximums are promises; the
    /// database holds the same bounds as CHECK constraints.
    pub fn bounds(self) -> Bounds {
        let (min, max, default) = match self {
            Class::AgentExecutions => (180, 3650, Some(180)),
            Class::AuditLog => (365, 3650, Some(365)),
            Class::ClosedConversations => (1, 3650, None),
            Class::Exports => (1, audit::export::MAX_DAYS, Some(audit::export::MAX_DAYS)),
            Class::FinishedJobs => (1, 30, Some(30)),
            Class::RequestLog => (1, 30, Some(30)),
        };
        Bounds { min, max, default }
    }
}

/// The periods a class may be kept, in days.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[schema(as = RetentionBounds)]
pub struct Bounds {
    pub min: i32,
    pub max: i32,
    /// `null`: kept until the tenant sets a period.
    #[schema(required = true)]
    pub default: Option<i32>,
}

/// A tenant's retention periods, in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = RetentionPeriods)]
pub struct Policy {
    pub agent_executions_days: i32,
    pub audit_log_days: i32,
    /// `null`: the content of closed conversations is kept.
    #[schema(required = true)]
    pub closed_conversations_days: Option<i32>,
    pub exports_days: i32,
    pub finished_jobs_days: i32,
    pub request_log_days: i32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            agent_executions_days: 180,
            audit_log_days: 365,
            closed_conversations_days: None,
            exports_days: audit::export::MAX_DAYS,
            finished_jobs_days: 30,
            request_log_days: 30,
        }
    }
}

impl Policy {
    pub fn days(&self, class: Class) -> Option<i32> {
        match class {
            Class::AgentExecutions => Some(self.agent_executions_days),
            Class::AuditLog => Some(self.audit_log_days),
            Class::ClosedConversations => self.closed_conversations_days,
            Class::Exports => Some(self.exports_days),
            Class::FinishedJobs => Some(self.finished_jobs_days),
            Class::RequestLog => Some(self.request_log_days),
        }
    }
}

/// The tenant's policy, or the defaults when it never changed one.
pub async fn policy(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<Policy> {
    let row = sqlx::query_as!(
        Policy,
        "SELECT agent_executions_days, audit_log_days, closed_conversations_days, exports_days,
                finished_jobs_days, request_log_days
         FROM retention_policy WHERE tenant_id = $1",
        tenant_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.unwrap_or_default())
}

/// Exports that a domain above retention keeps under the exports' period (a contact's export,
/// DSR-7). Retention cannot name that domain, so the application hands the purge these; they
/// are counted and deleted with the audit log's exports, on the purge's transaction, and
/// recorded in the same `retention.purged` event.
#[derive(Clone, Copy)]
pub struct OtherExports {
    /// How many are past their time: asked for before the cutoff, or past their own expiry.
    pub count:
        for<'a> fn(&'a mut PgConnection, Uuid, OffsetDateTime) -> BoxFuture<'a, sqlx::Result<i64>>,
    /// Deletes at most `limit` of them (the last argument) and says how many it deleted.
    pub expire: for<'a> fn(
        &'a mut PgConnection,
        Uuid,
        OffsetDateTime,
        i64,
    ) -> BoxFuture<'a, sqlx::Result<u64>>,
}

/// One class's purge, or what it would be.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = RetentionClassReport)]
pub struct ClassReport {
    pub class: Class,
    /// `null` when the class is kept (closed conversations without a period).
    #[schema(required = true)]
    pub days: Option<i32>,
    /// Rows older than this go; `null` when the class is kept.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub cutoff: Option<OffsetDateTime>,
    /// Rows deleted (run) or that would be deleted now (preview).
    pub count: i64,
    /// Rows past the cutoff that legal holds keep.
    pub held: i64,
    /// Decided review items whose content was blanked (run) or would be (preview), with the
    /// content of closed conversations or past the agent executions' period.
    pub review_items: i64,
    /// False when the run stopped at its batch limit and the next run continues.
    pub complete: bool,
}

/// Purges every class of one tenant. Each class is one transaction on the owner pool: its
/// batched deletes and the `retention.purged` audit event commit together, so no purge goes
/// unrecorded. A class with nothing to purge writes nothing.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id))]
pub async fn run(
    db: &Db,
    tenant_id: Uuid,
    others: &[OtherExports],
) -> anyhow::Result<Vec<ClassReport>> {
    let mut reports = Vec::new();
    for class in Class::ALL {
        let mut tx = db.system.begin().await?;
        crate::db::set_tenant(&mut tx, tenant_id).await?;
        // Several servers may run housekeeping at once: one purge per tenant and class at a
        // time, the others skip it until their next run.
        let key = format!("retention:{tenant_id}:{}", class.as_str());
        let mine = sqlx::query_scalar!(
            "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))",
            key
        )
        .fetch_one(&mut *tx)
        .await?;
        if mine != Some(true) {
            reports.push(ClassReport {
                complete: false,
                ..kept(class)
            });
            continue;
        }
        let policy = policy(&mut tx, tenant_id).await?;
        let report = purge(&mut tx, tenant_id, class, &policy, others).await?;
        if report.count > 0 || report.review_items > 0 {
            audit::record(
                &mut tx,
                &AuditSource::system(tenant_id),
                AuditEvent::new("retention.purged", "retention_class", class.as_str()).after(
                    json!({
                        "class": class,
                        "count": report.count,
                        "cutoff": report.cutoff.map(rfc3339),
                        "days": report.days,
                        "held": report.held,
                        "review_items": report.review_items,
                        "complete": report.complete,
                    }),
                ),
            )
            .await?;
            tracing::info!(
                class = class.as_str(),
                count = report.count,
                review_items = report.review_items,
                "retention purged"
            );
        }
        tx.commit().await?;
        reports.push(report);
    }
    Ok(reports)
}

/// Runs the purge for every tenant, one after the other (housekeeping). A failing tenant is
/// logged and does not stop the others; `stop` ends it between tenants.
pub async fn run_all(db: &Db, stop: &tokio_util::sync::CancellationToken, others: &[OtherExports]) {
    let tenants = match sqlx::query_scalar!("SELECT id FROM tenant ORDER BY id")
        .fetch_all(&db.system)
        .await
    {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "retention: cannot list tenants");
            return;
        }
    };
    for tenant_id in tenants {
        if stop.is_cancelled() {
            return;
        }
        if let Err(e) = run(db, tenant_id, others).await {
            tracing::warn!(%tenant_id, error = ?e, "retention run failed");
        }
    }
}

/// What a run would do now, deleting nothing. Runs on any connection pinned to the tenant.
pub async fn preview(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    others: &[OtherExports],
) -> sqlx::Result<Vec<ClassReport>> {
    let policy = policy(conn, tenant_id).await?;
    let mut reports = Vec::new();
    for class in Class::ALL {
        let days = policy.days(class);
        let Some(cutoff) = days.map(cutoff_for) else {
            reports.push(kept(class));
            continue;
        };
        let review_items = review_items_due(conn, tenant_id, class, cutoff).await?;
        let (count, held) = match class {
            Class::AgentExecutions => {
                let r = sqlx::query!(
                    r#"SELECT count(*) FILTER (WHERE NOT held) AS "count!", count(*) FILTER (WHERE held) AS "held!"
                       FROM (SELECT legal_hold_covers(x.tenant_id, x.contact_id, x.conversation_id) AS held
                             FROM agent_execution x WHERE x.tenant_id = $1 AND x.started_at < $2) s"#,
                    tenant_id,
                    cutoff
                )
                .fetch_one(&mut *conn)
                .await?;
                (r.count, r.held)
            }
            Class::ClosedConversations => {
                let r = sqlx::query!(
                    r#"SELECT count(*) FILTER (WHERE NOT held) AS "count!", count(*) FILTER (WHERE held) AS "held!"
                       FROM (SELECT legal_hold_covers(c.tenant_id, c.contact_id, c.id) AS held
                             FROM message m JOIN conversation c ON c.id = m.conversation_id AND c.tenant_id = m.tenant_id
                             WHERE m.tenant_id = $1 AND c.status = 'resolved' AND c.resolved_at < $2) s"#,
                    tenant_id,
                    cutoff
                )
                .fetch_one(&mut *conn)
                .await?;
                (r.count, r.held)
            }
            Class::AuditLog => {
                let floor = audit_cutoff(conn, tenant_id, cutoff).await?;
                let r = sqlx::query!(
                    r#"SELECT count(*) FILTER (WHERE occurred_at < $3) AS "count!", count(*) FILTER (WHERE occurred_at >= $3) AS "held!"
                       FROM audit_event WHERE tenant_id = $1 AND occurred_at < $2"#,
                    tenant_id,
                    cutoff,
                    floor
                )
                .fetch_one(&mut *conn)
                .await?;
                (r.count, r.held)
            }
            Class::Exports => {
                let mut n = audit::export::count_expired(conn, tenant_id, cutoff).await?;
                for other in others {
                    n += (other.count)(&mut *conn, tenant_id, cutoff).await?;
                }
                (n, 0)
            }
            Class::FinishedJobs => {
                let n = sqlx::query_scalar!(
                    r#"SELECT count(*) AS "n!" FROM job
                       WHERE tenant_id = $1 AND status IN ('done', 'dead') AND finished_at < $2"#,
                    tenant_id,
                    cutoff
                )
                .fetch_one(&mut *conn)
                .await?;
                (n, 0)
            }
            Class::RequestLog => {
                let n = sqlx::query_scalar!(
                    r#"SELECT count(*) AS "n!" FROM request_log WHERE tenant_id = $1 AND occurred_at < $2"#,
                    tenant_id,
                    cutoff
                )
                .fetch_one(&mut *conn)
                .await?;
                (n, 0)
            }
        };
        reports.push(ClassReport {
            class,
            days,
            cutoff: Some(cutoff),
            count,
            held,
            review_items,
            complete: true,
        });
    }
    Ok(reports)
}

fn kept(class: Class) -> ClassReport {
    ClassReport {
        class,
        days: None,
        cutoff: None,
        count: 0,
        held: 0,
        review_items: 0,
        complete: true,
    }
}

fn cutoff_for(days: i32) -> OffsetDateTime {
    OffsetDateTime::now_utc() - Duration::days(days.into())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The audit chain may only lose a prefix, so the cutoff stops before the oldest event about a
/// held contact, or a held conversation, or a conversation of a held contact.
async fn audit_cutoff(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    cutoff: OffsetDateTime,
) -> sqlx::Result<OffsetDateTime> {
    // From the (few) active holds to their events through the entity index, rather than
    // testing every old event against the holds.
    let oldest_held = sqlx::query_scalar!(
        r#"WITH held (entity_type, entity_id) AS (
               SELECT h.entity_type, h.entity_id::text FROM legal_hold h
               WHERE h.tenant_id = $1 AND h.released_at IS NULL
               UNION
               SELECT 'conversation', c.id::text FROM legal_hold h
               JOIN conversation c ON c.tenant_id = h.tenant_id AND c.contact_id = h.entity_id
               WHERE h.tenant_id = $1 AND h.released_at IS NULL AND h.entity_type = 'contact')
           SELECT min(e.occurred_at) FROM held
           JOIN audit_event e ON e.tenant_id = $1 AND e.entity_type = held.entity_type
                             AND e.entity_id = held.entity_id
           WHERE e.occurred_at < $2"#,
        tenant_id,
        cutoff
    )
    .fetch_one(conn)
    .await?;
    Ok(oldest_held.map_or(cutoff, |held| held.min(cutoff)))
}

async fn purge(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    class: Class,
    policy: &Policy,
    others: &[OtherExports],
) -> sqlx::Result<ClassReport> {
    let days = policy.days(class);
    let Some(cutoff) = days.map(cutoff_for) else {
        return Ok(kept(class));
    };
    let mut count = 0;
    let mut complete = false;
    let mut effective_cutoff = cutoff;
    if class == Class::AuditLog {
        effective_cutoff = audit_cutoff(conn, tenant_id, cutoff).await?;
        let limit = i32::try_from(BATCH * MAX_BATCHES).unwrap_or(i32::MAX);
        count = sqlx::query_scalar!(
            "SELECT audit_purge($1, $2, $3)",
            tenant_id,
            effective_cutoff,
            limit
        )
        .fetch_one(&mut *conn)
        .await?
        .unwrap_or(0);
        complete = count < i64::from(limit);
    } else {
        for _ in 0..MAX_BATCHES {
            let n = purge_batch(conn, tenant_id, class, cutoff, others).await?;
            count += n;
            if n < BATCH {
                complete = true;
                break;
            }
        }
    }
    // The review items' content that goes with this class's data, in batches of its own.
    let mut review_items = 0;
    if matches!(class, Class::AgentExecutions | Class::ClosedConversations) {
        let mut done = false;
        for _ in 0..MAX_BATCHES {
            let n = blank_review_items(conn, tenant_id, class, cutoff).await?;
            review_items += n;
            if n < BATCH {
                done = true;
                break;
            }
        }
        complete &= done;
    }
    let held = held_count(conn, tenant_id, class, cutoff, effective_cutoff).await?;
    Ok(ClassReport {
        class,
        days,
        cutoff: Some(effective_cutoff),
        count,
        held,
        review_items,
        complete,
    })
}

async fn purge_batch(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    class: Class,
    cutoff: OffsetDateTime,
    others: &[OtherExports],
) -> sqlx::Result<i64> {
    let deleted = match class {
        Class::AgentExecutions => sqlx::query!(
            "DELETE FROM agent_execution WHERE id IN (
                 SELECT x.id FROM agent_execution x
                 WHERE x.tenant_id = $1 AND x.started_at < $2
                   AND NOT legal_hold_covers(x.tenant_id, x.contact_id, x.conversation_id)
                 ORDER BY x.started_at LIMIT $3)",
            tenant_id,
            cutoff,
            BATCH
        )
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        Class::ClosedConversations => {
            let n = sqlx::query!(
                "DELETE FROM message WHERE id IN (
                     SELECT m.id FROM message m
                     JOIN conversation c ON c.id = m.conversation_id AND c.tenant_id = m.tenant_id
                     WHERE m.tenant_id = $1 AND c.status = 'resolved' AND c.resolved_at < $2
                       AND NOT legal_hold_covers(c.tenant_id, c.contact_id, c.id)
                     LIMIT $3)",
                tenant_id,
                cutoff,
                BATCH
            )
            .execute(&mut *conn)
            .await?
            .rows_affected();
            // The PII vault of a conversation whose messages are gone holds nothing to restore.
            sqlx::query!(
                "DELETE FROM conversation_vault v USING conversation c
                 WHERE v.tenant_id = $1 AND c.id = v.conversation_id AND c.tenant_id = v.tenant_id
                   AND c.status = 'resolved' AND c.resolved_at < $2
                   AND NOT EXISTS (SELECT 1 FROM message m WHERE m.conversation_id = c.id)",
                tenant_id,
                cutoff
            )
            .execute(&mut *conn)
            .await?;
            n
        }
        Class::Exports => {
            let mut n = audit::export::expire(conn, tenant_id, cutoff, BATCH).await?;
            for other in others {
                n += (other.expire)(&mut *conn, tenant_id, cutoff, BATCH).await?;
            }
            n
        }
        Class::FinishedJobs => sqlx::query!(
            "DELETE FROM job WHERE id IN (
                 SELECT id FROM job
                 WHERE tenant_id = $1 AND status IN ('done', 'dead') AND finished_at < $2
                 LIMIT $3)",
            tenant_id,
            cutoff,
            BATCH
        )
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        Class::RequestLog => sqlx::query!(
            "DELETE FROM request_log WHERE id IN (
                 SELECT id FROM request_log WHERE tenant_id = $1 AND occurred_at < $2
                 ORDER BY occurred_at LIMIT $3)",
            tenant_id,
            cutoff,
            BATCH
        )
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        Class::AuditLog => 0,
    };
    Ok(deleted as i64)
}

/// Rows past the policy's cutoff that holds kept, after a purge.
async fn held_count(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    class: Class,
    cutoff: OffsetDateTime,
    effective_cutoff: OffsetDateTime,
) -> sqlx::Result<i64> {
    Ok(match class {
        Class::AgentExecutions => sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM agent_execution WHERE tenant_id = $1 AND started_at < $2"#,
            tenant_id,
            cutoff
        )
        .fetch_one(conn)
        .await?,
        Class::ClosedConversations => sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM message m
               JOIN conversation c ON c.id = m.conversation_id AND c.tenant_id = m.tenant_id
               WHERE m.tenant_id = $1 AND c.status = 'resolved' AND c.resolved_at < $2"#,
            tenant_id,
            cutoff
        )
        .fetch_one(conn)
        .await?,
        Class::AuditLog if effective_cutoff < cutoff => sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM audit_event
               WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3"#,
            tenant_id,
            effective_cutoff,
            cutoff
        )
        .fetch_one(conn)
        .await?,
        _ => 0,
    })
}

/// Decided review items whose content is due with `class`'s data: of conversations whose content
/// goes (closed conversations), or decided before the executions' cutoff (agent executions).
/// Legal holds on the conversation or its contact keep them.
async fn review_items_due(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    class: Class,
    cutoff: OffsetDateTime,
) -> sqlx::Result<i64> {
    Ok(match class {
        Class::ClosedConversations => sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM review_item i
               JOIN conversation c ON c.id = i.conversation_id AND c.tenant_id = i.tenant_id
               WHERE i.tenant_id = $1 AND i.content_purged_at IS NULL
                 AND i.status IN ('rejected', 'executed', 'failed', 'resolved')
                 AND c.status = 'resolved' AND c.resolved_at < $2
                 AND NOT legal_hold_covers(c.tenant_id, c.contact_id, c.id)"#,
            tenant_id,
            cutoff
        )
        .fetch_one(conn)
        .await?,
        Class::AgentExecutions => sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM review_item i
               LEFT JOIN conversation c ON c.id = i.conversation_id AND c.tenant_id = i.tenant_id
               WHERE i.tenant_id = $1 AND i.content_purged_at IS NULL
                 AND i.status IN ('rejected', 'executed', 'failed', 'resolved') AND i.decided_at < $2
                 AND NOT legal_hold_covers(i.tenant_id, c.contact_id, i.conversation_id)"#,
            tenant_id,
            cutoff
        )
        .fetch_one(conn)
        .await?,
        _ => 0,
    })
}

/// Blanks one batch of due review items' content (see [`review_items_due`]). What stays of the
/// proposal is what names the decision (action, amount, flagged rules, the run's outcome); the
/// endpoint's answer loses its body and keeps its status. The database lets a final item lose
/// content, never change its decision (`review_item_final`).
async fn blank_review_items(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    class: Class,
    cutoff: OffsetDateTime,
) -> sqlx::Result<i64> {
    let ids = match class {
        Class::ClosedConversations => {
            sqlx::query_scalar!(
                "SELECT i.id FROM review_item i
                 JOIN conversation c ON c.id = i.conversation_id AND c.tenant_id = i.tenant_id
                 WHERE i.tenant_id = $1 AND i.content_purged_at IS NULL
                   AND i.status IN ('rejected', 'executed', 'failed', 'resolved')
                   AND c.status = 'resolved' AND c.resolved_at < $2
                   AND NOT legal_hold_covers(c.tenant_id, c.contact_id, c.id)
                 LIMIT $3",
                tenant_id,
                cutoff,
                BATCH
            )
            .fetch_all(&mut *conn)
            .await?
        }
        Class::AgentExecutions => {
            sqlx::query_scalar!(
                "SELECT i.id FROM review_item i
                 LEFT JOIN conversation c ON c.id = i.conversation_id AND c.tenant_id = i.tenant_id
                 WHERE i.tenant_id = $1 AND i.content_purged_at IS NULL
                   AND i.status IN ('rejected', 'executed', 'failed', 'resolved') AND i.decided_at < $2
                   AND NOT legal_hold_covers(i.tenant_id, c.contact_id, i.conversation_id)
                 ORDER BY i.decided_at LIMIT $3",
                tenant_id,
                cutoff,
                BATCH
            )
            .fetch_all(&mut *conn)
            .await?
        }
        _ => return Ok(0),
    };
    if ids.is_empty() {
        return Ok(0);
    }
    let n = sqlx::query!(
        "UPDATE review_item r
         SET content_purged_at = now(), updated_at = now(), request_note = NULL, approved_proposal = NULL,
             findings = '[]',
             proposal = (SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM jsonb_each(r.proposal) AS e(k, v)
                         WHERE k IN ('action', 'amount', 'rules', 'outcome')),
             result = r.result - 'body'
         WHERE r.tenant_id = $1 AND r.id = ANY($2) AND r.content_purged_at IS NULL",
        tenant_id,
        &ids
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n as i64)
}

/// An active legal hold on a contact or on one of these conversations, oldest first: its id and
/// reason. A data subject's erasure asks it first so its refusal can name the hold.
pub async fn active_hold(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    contact_id: Uuid,
    conversations: &[Uuid],
) -> sqlx::Result<Option<(Uuid, String)>> {
    let hold = sqlx::query!(
        "SELECT id, reason FROM legal_hold
         WHERE tenant_id = $1 AND released_at IS NULL
           AND ((entity_type = 'contact' AND entity_id = $2)
             OR (entity_type = 'conversation' AND entity_id = ANY ($3)))
         ORDER BY created_at, id LIMIT 1",
        tenant_id,
        contact_id,
        conversations
    )
    .fetch_optional(conn)
    .await?;
    Ok(hold.map(|h| (h.id, h.reason)))
}

/// Whether any legal hold of the tenant is active: a closed tenant cannot be purged while one
/// is, so closing is refused until they are released.
pub async fn any_active_hold(conn: &mut PgConnection, tenant_id: Uuid) -> sqlx::Result<bool> {
    let held = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM legal_hold WHERE tenant_id = $1 AND released_at IS NULL) AS "held!""#,
        tenant_id
    )
    .fetch_one(conn)
    .await?;
    Ok(held)
}
