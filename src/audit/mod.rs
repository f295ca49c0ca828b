//! The audit log: every mutation and security event, appended in the same transaction as the
//! change it describes and hash-chained per tenant (AUD-1, AUD-2, AUD-3). The chain itself is
//! maintained by `audit_append` in the database, under a per-tenant row lock, so concurrent
//! writers can never fork it.

pub mod export;
pub mod routes;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::Result;
use crate::http::{Credential, Ctx, RequestMeta};

/// Who did something, and from where.
#[derive(Debug, Clone)]
pub struct AuditSource {
    pub tenant_id: Uuid,
    pub actor_type: &'static str,
    pub actor_id: Option<String>,
    pub meta: RequestMeta,
}

impl AuditSource {
    /// Someone not (yet) authenticated: sign-ups, failed logins, accepted invitations.
    pub fn anonymous(tenant_id: Uuid, meta: &RequestMeta) -> Self {
        AuditSource {
            tenant_id,
            actor_type: "anonymous",
            actor_id: None,
            meta: meta.clone(),
        }
    }

    pub fn member(tenant_id: Uuid, member_id: Uuid, meta: &RequestMeta) -> Self {
        AuditSource {
            tenant_id,
            actor_type: "member",
            actor_id: Some(member_id.to_string()),
            meta: meta.clone(),
        }
    }

    /// The platform itself: jobs, the command line.
    pub fn system(tenant_id: Uuid) -> Self {
        AuditSource {
            tenant_id,
            actor_type: "system",
            actor_id: None,
            meta: RequestMeta::default(),
        }
    }
}

/// One thing that happened to one entity.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub action: &'static str,
    pub entity_type: &'static str,
    pub entity_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub execution_id: Option<Uuid>,
}

impl AuditEvent {
    pub fn new(action: &'static str, entity_type: &'static str, entity_id: impl ToString) -> Self {
        AuditEvent {
            action,
            entity_type,
            entity_id: Some(entity_id.to_string()),
            before: None,
            after: None,
            execution_id: None,
        }
    }

    pub fn before(mut self, value: impl Serialize) -> Self {
        self.before = serde_json::to_value(value).ok();
        self
    }

    pub fn after(mut self, value: impl Serialize) -> Self {
        self.after = serde_json::to_value(value).ok();
        self
    }
}

/// Appends an event on the caller's connection, inside the caller's transaction: if the
/// change rolls back, so does its audit row, and without an audit row there is no change.
pub async fn record(
    conn: &mut PgConnection,
    source: &AuditSource,
    event: AuditEvent,
) -> sqlx::Result<i64> {
    let seq = sqlx::query_scalar!(
        "SELECT audit_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        source.tenant_id,
        source.actor_type,
        source.actor_id,
        event.action,
        event.entity_type,
        event.entity_id,
        event.before,
        event.after,
        source.meta.ip.map(|ip| ip.to_string()),
        source.meta.user_agent,
        source.meta.request_id,
        event.execution_id,
    )
    .fetch_one(conn)
    .await?;
    Ok(seq.unwrap_or_default())
}

/// The outcome of walking one tenant's chain.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[schema(as = AuditVerification)]
pub struct Verification {
    pub valid: bool,
    /// Rows checked.
    pub checked: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    /// Rows whose payload a data subject's erasure removed (DSR-3): their digest, link and
    /// order were checked, their content no longer exists to check.
    pub erased: u64,
    /// The first link that does not hold, when any.
    pub broken: Option<BrokenLink>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct BrokenLink {
    pub seq: i64,
    pub reason: String,
}

const GENESIS: [u8; 32] = [0; 32];
/// The event `audit_erase_payloads` appends, naming the rows it erased.
pub const ERASURE_ACTION: &str = "audit.payloads_erased";
/// Rows read per round trip while walking a chain.
const PAGE: i64 = 1000;

/// Recomputes every hash of a tenant's chain, from the retention anchor (or genesis) to the
/// head, and names the first link that does not hold: an edited row (hash mismatch), a
/// removed row (gap in sequence), a re-linked row (prev_hash mismatch) or a cut tail.
///
/// The walk takes many round trips while appends go on, so it reads one snapshot: in a
/// read-only REPEATABLE READ transaction the anchor, every page and the head are all as of
/// one instant, and a row appended meanwhile can never make the head look ahead of the rows
/// (a false break). Runs on `pool`, pinned to the tenant: the app pool for the API (row-level
/// security applies), the owner pool for the command line.
pub async fn verify(pool: &PgPool, tenant_id: Uuid) -> sqlx::Result<Verification> {
    verify_paged(pool, tenant_id, PAGE, async |_| {}).await
}

/// [`verify`], reading `page` rows per round trip and awaiting `after_page` with the number
/// of rows after each read, the last (empty) one included (tests append there, between the
/// reads of one walk).
pub async fn verify_paged(
    pool: &PgPool,
    tenant_id: Uuid,
    page: i64,
    mut after_page: impl AsyncFnMut(usize),
) -> sqlx::Result<Verification> {
    let mut tx = crate::db::snapshot_tx(pool, tenant_id).await?;
    let conn = &mut *tx;
    let anchor = sqlx::query!(
        "SELECT first_seq, prev_hash FROM audit_chain_anchor WHERE tenant_id = $1",
        tenant_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let (mut expected_seq, mut expected_prev) = match anchor {
        Some(a) => (a.first_seq, a.prev_hash),
        None => (1, GENESIS.to_vec()),
    };
    let mut report = Verification {
        valid: true,
        checked: 0,
        first_seq: None,
        last_seq: None,
        erased: 0,
        broken: None,
    };
    // Erased rows not yet named by an `audit.payloads_erased` event: an erasure that the chain
    // does not record (a row blanked behind the function's back) is a break, not an erasure.
    let mut unaccounted = std::collections::BTreeSet::new();
    let fail = |report: &mut Verification, seq: i64, reason: String| {
        report.valid = false;
        report.broken = Some(BrokenLink { seq, reason });
    };

    let mut after_seq = expected_seq - 1;
    'pages: loop {
        let rows = sqlx::query!(
            r#"SELECT seq, prev_hash, hash, audit_canonical(e) AS "canonical!", action, after,
                      payload_digest, audit_payload_digest(before, after) AS "computed!",
                      erased_at IS NOT NULL AS "erased!"
               FROM audit_event e
               WHERE tenant_id = $1 AND seq > $2
               ORDER BY seq LIMIT $3"#,
            tenant_id,
            after_seq,
            page.max(1)
        )
        .fetch_all(&mut *conn)
        .await?;
        after_page(rows.len()).await;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            report.first_seq.get_or_insert(row.seq);
            report.last_seq = Some(row.seq);
            report.checked += 1;
            if row.seq != expected_seq {
                fail(
                    &mut report,
                    expected_seq,
                    format!("row {expected_seq} is missing"),
                );
                break 'pages;
            }
            if row.prev_hash != expected_prev {
                fail(
                    &mut report,
                    row.seq,
                    "prev_hash does not match the previous row".into(),
                );
                break 'pages;
            }
            if row.erased {
                report.erased += 1;
                unaccounted.insert(row.seq);
            } else if row.computed != row.payload_digest {
                fail(
                    &mut report,
                    row.seq,
                    "payload does not match the digest its hash covers".into(),
                );
                break 'pages;
            } else if row.action == ERASURE_ACTION {
                let named = row.after.as_ref().and_then(|a| a.get("seqs"));
                for seq in named.and_then(Value::as_array).into_iter().flatten() {
                    if let Some(seq) = seq.as_i64() {
                        unaccounted.remove(&seq);
                    }
                }
            }
            let mut hasher = Sha256::new();
            hasher.update(&row.prev_hash);
            hasher.update(&row.canonical);
            if hasher.finalize().as_slice() != row.hash.as_slice() {
                fail(
                    &mut report,
                    row.seq,
                    "content does not match its hash".into(),
                );
                break 'pages;
            }
            expected_prev = row.hash.clone();
            expected_seq = row.seq + 1;
        }
        after_seq = expected_seq - 1;
    }

    if let (true, Some(&seq)) = (report.valid, unaccounted.first()) {
        fail(
            &mut report,
            seq,
            "payload marked erased but no erasure event names it".into(),
        );
    }
    if report.valid {
        let head = sqlx::query!(
            "SELECT seq, hash FROM audit_chain_head WHERE tenant_id = $1",
            tenant_id
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(head) = head {
            if head.seq != expected_seq - 1 || (head.seq > 0 && head.hash != expected_prev) {
                fail(
                    &mut report,
                    expected_seq,
                    format!(
                        "the chain ends at {} but its head is at {}",
                        expected_seq - 1,
                        head.seq
                    ),
                );
            }
        }
    }
    tx.commit().await?;
    Ok(report)
}

/// What an erasure looks for in one tenant's audit log: rows about these entities, rows of these
/// agent executions, payloads that hold any of `substrings` (phone numbers, e-mail addresses)
/// or have one of `exact` as a whole JSON string value (a name, which as a substring would match
/// unrelated words), and payloads that hold one of `ids_in_payloads` unless the row is about an
/// entity of `spared_entity_types` (records that name the person by id only and must stay).
#[derive(Debug, Default)]
pub struct Mentions {
    pub entities: Vec<(&'static str, Vec<String>)>,
    pub execution_ids: Vec<Uuid>,
    pub substrings: Vec<String>,
    pub exact: Vec<String>,
    pub ids_in_payloads: Vec<String>,
    pub spared_entity_types: Vec<&'static str>,
}

/// The sequence numbers of the tenant's rows that mention a data subject, erased ones and the
/// erasure facts themselves left out. Runs on the caller's transaction.
pub async fn mentioning(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    mentions: &Mentions,
) -> sqlx::Result<Vec<i64>> {
    let (mut types, mut ids) = (Vec::new(), Vec::new());
    for (entity_type, entity_ids) in &mentions.entities {
        for id in entity_ids {
            types.push(entity_type.to_string());
            ids.push(id.clone());
        }
    }
    let escape = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    };
    let mut patterns: Vec<String> = mentions
        .substrings
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| format!("%{}%", escape(s)))
        .collect();
    for value in mentions.exact.iter().filter(|s| !s.is_empty()) {
        let quoted = serde_json::to_string(value).unwrap_or_default();
        patterns.push(format!("%{}%", escape(&quoted)));
    }
    let id_patterns: Vec<String> = mentions
        .ids_in_payloads
        .iter()
        .map(|s| format!("%{}%", escape(s)))
        .collect();
    let spared: Vec<String> = mentions
        .spared_entity_types
        .iter()
        .map(|s| s.to_string())
        .collect();
    let seqs = sqlx::query_scalar!(
        r#"SELECT seq FROM audit_event e
           WHERE e.tenant_id = $1 AND e.erased_at IS NULL
             AND e.action NOT IN ('audit.payloads_erased', 'contact.erased', 'contact.anonymised')
             AND ((e.entity_type, e.entity_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))
               OR e.execution_id = ANY ($4)
               OR coalesce(e.before::text, '') || ' ' || coalesce(e.after::text, '') LIKE ANY ($5)
               OR (e.entity_type <> ALL ($7)
                   AND coalesce(e.before::text, '') || ' ' || coalesce(e.after::text, '') LIKE ANY ($6)))
           ORDER BY seq"#,
        tenant_id,
        &types,
        &ids,
        &mentions.execution_ids,
        &patterns,
        &id_patterns,
        &spared
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(seqs)
}

/// Erases the payloads of these rows through `audit_erase_payloads` (the only way, AUD-3), which
/// records the erasure in the chain; returns how many rows it erased.
pub async fn erase_payloads(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    seqs: &[i64],
    reason: Value,
) -> sqlx::Result<i64> {
    if seqs.is_empty() {
        return Ok(0);
    }
    let n = sqlx::query_scalar!(
        "SELECT audit_erase_payloads($1, $2, $3)",
        tenant_id,
        seqs,
        reason
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(n.unwrap_or(0))
}

/// The caller's audit helpers: written here, beside what they record, so the foundation's
/// [`Ctx`] needs to know nothing of the audit log.
impl Ctx {
    /// Appends an audit event by this caller, on the caller's transaction.
    pub async fn audit(&self, conn: &mut sqlx::PgConnection, event: AuditEvent) -> Result<()> {
        record(conn, &self.audit_source(), event).await?;
        Ok(())
    }

    pub fn audit_source(&self) -> AuditSource {
        let (actor_type, actor_id) = match self.credential {
            Credential::Session(_) => ("member", self.member_id.to_string()),
            Credential::ApiToken(id) => ("api_token", id.to_string()),
        };
        AuditSource {
            tenant_id: self.tenant_id,
            actor_type,
            actor_id: Some(actor_id),
            meta: self.meta.clone(),
        }
    }
}
