//! The reviewer's queue as people work it: what waits (for anyone, or for me), and what was
//! decided, narrowed by kind, by the role an item needs and by age, with a count per tab. The
//! API's list answers one status at a time for clients; this answers the questions a reviewer
//! asks of the queue.

use sqlx::PgConnection;
use time::Duration;
use uuid::Uuid;

use super::policy::RequiredRole;
use super::routes::ReviewView;
use super::{RequestedBy, ReviewKind, ReviewStatus};
use crate::error::Result;

/// Which part of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    /// Every item that waits, oldest first.
    Pending,
    /// The waiting items assigned to the member, oldest first.
    Mine,
    /// Every decided item (expired included), latest decision first.
    Decided,
}

impl Tab {
    pub const ALL: [Tab; 3] = [Tab::Pending, Tab::Mine, Tab::Decided];

    pub const fn as_str(self) -> &'static str {
        match self {
            Tab::Pending => "pending",
            Tab::Mine => "mine",
            Tab::Decided => "decided",
        }
    }

    pub fn parse(raw: &str) -> Option<Tab> {
        Self::ALL.into_iter().find(|t| t.as_str() == raw)
    }
}

/// What narrows the queue, on every tab alike.
#[derive(Debug, Clone, Copy, Default)]
pub struct Narrowing {
    pub kind: Option<ReviewKind>,
    pub role: Option<RequiredRole>,
    /// Only items opened at least this long ago.
    pub older_than: Option<Duration>,
}

/// How many items each tab holds under the same narrowing, and how many waiting ones are past
/// their SLA.
#[derive(Debug, Clone, Copy, Default)]
pub struct TabCounts {
    pub pending: i64,
    pub mine: i64,
    pub decided: i64,
    pub sla_breached: i64,
}

impl TabCounts {
    pub fn of(&self, tab: Tab) -> i64 {
        match tab {
            Tab::Pending => self.pending,
            Tab::Mine => self.mine,
            Tab::Decided => self.decided,
        }
    }
}

fn seconds(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_seconds_f64())
}

/// One tab of the caller's tenant's queue, at most `limit` items.
pub async fn worklist(
    conn: &mut PgConnection,
    member_id: Uuid,
    tab: Tab,
    narrowing: Narrowing,
    limit: i64,
) -> Result<Vec<ReviewView>> {
    Ok(sqlx::query_as!(
        ReviewView,
        r#"SELECT r.id, r.kind AS "kind: ReviewKind", r.status AS "status: ReviewStatus", r.expired,
                  r.conversation_id, r.execution_id, r.action_id, r.proposal, r.approved_proposal,
                  r.confidence, r.findings, r.requested_by AS "requested_by: RequestedBy",
                  r.requested_by_member, r.request_note, r.assignee_id,
                  r.required_role AS "required_role: RequiredRole", r.approvals_required,
                  (SELECT count(*) FROM review_approval a WHERE a.review_item_id = r.id) AS "approvals!",
                  r.policy, r.decided_by, r.decision_reason, r.result,
                  (r.status = 'pending' AND r.due_at < now()) AS "sla_breached!",
                  r.created_at, r.updated_at, r.due_at, r.expires_at, r.decided_at, r.executed_at,
                  r.content_purged_at
           FROM review_item r
           WHERE r.tenant_id = current_tenant_id()
             AND CASE $1::text
                   WHEN 'pending' THEN r.status = 'pending'
                   WHEN 'mine' THEN r.status = 'pending' AND r.assignee_id = $2
                   ELSE r.status <> 'pending'
                 END
             AND ($3::text IS NULL OR r.kind = $3)
             AND ($4::text IS NULL OR r.required_role = $4)
             AND ($5::float8 IS NULL OR r.created_at <= now() - make_interval(secs => $5))
           ORDER BY (CASE WHEN $1 = 'decided' THEN coalesce(r.decided_at, r.updated_at) END) DESC, r.id
           LIMIT $6"#,
        tab.as_str(),
        member_id,
        narrowing.kind.map(ReviewKind::as_str),
        narrowing.role.map(RequiredRole::as_str),
        seconds(narrowing.older_than),
        limit
    )
    .fetch_all(conn)
    .await?)
}

/// The count of every tab under the narrowing.
pub async fn tab_counts(
    conn: &mut PgConnection,
    member_id: Uuid,
    narrowing: Narrowing,
) -> Result<TabCounts> {
    let row = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE status = 'pending') AS "pending!",
                  count(*) FILTER (WHERE status = 'pending' AND assignee_id = $1) AS "mine!",
                  count(*) FILTER (WHERE status <> 'pending') AS "decided!",
                  count(*) FILTER (WHERE status = 'pending' AND due_at < now()) AS "breached!"
           FROM review_item
           WHERE tenant_id = current_tenant_id()
             AND ($2::text IS NULL OR kind = $2)
             AND ($3::text IS NULL OR required_role = $3)
             AND ($4::float8 IS NULL OR created_at <= now() - make_interval(secs => $4))"#,
        member_id,
        narrowing.kind.map(ReviewKind::as_str),
        narrowing.role.map(RequiredRole::as_str),
        seconds(narrowing.older_than),
    )
    .fetch_one(conn)
    .await?;
    Ok(TabCounts {
        pending: row.pending,
        mine: row.mine,
        decided: row.decided,
        sla_breached: row.breached,
    })
}

/// Whether the member's approval is already counted on the item.
pub async fn approved_by(conn: &mut PgConnection, item_id: Uuid, member_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM review_approval WHERE review_item_id = $1 AND member_id = $2)",
        item_id,
        member_id
    )
    .fetch_one(conn)
    .await?
    .unwrap_or(false))
}

/// How many items of the caller's tenant wait for review.
pub async fn pending(conn: &mut PgConnection) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM review_item
           WHERE tenant_id = current_tenant_id() AND status = 'pending'"#
    )
    .fetch_one(conn)
    .await?)
}
