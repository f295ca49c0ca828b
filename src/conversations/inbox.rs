//! The inbox as a member reads it: one row per conversation with what a list shows at a glance
//! (who, on which channel, the last message, who holds it), the counts per status of a view,
//! and the inboxes and labels to filter by. The web app's inbox page is built from these.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Channel, Handler, Status};
use crate::crm::accounts::like_pattern;
use crate::error::Result;

/// Whose conversations a view holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignee {
    Anyone,
    Member(Uuid),
    Nobody,
}

/// What narrows a view, apart from the status (its tabs count each status of the same view).
#[derive(Debug, Clone)]
pub struct Filter {
    pub assignee: Assignee,
    pub inbox_id: Option<Uuid>,
    pub handler: Option<Handler>,
    pub label: Option<String>,
    /// Text in the contact's name, e-mail or phone, or in a message.
    pub q: Option<String>,
}

impl Filter {
    fn assignee_parts(&self) -> (bool, Option<Uuid>) {
        match self.assignee {
            Assignee::Anyone => (false, None),
            Assignee::Member(id) => (false, Some(id)),
            Assignee::Nobody => (true, None),
        }
    }

    fn pattern(&self) -> Option<String> {
        self.q
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(like_pattern)
    }
}

/// One conversation as a list row.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: Uuid,
    pub inbox_name: String,
    pub channel: Channel,
    pub status: Status,
    pub handler: Handler,
    pub assignee_id: Option<Uuid>,
    pub assignee_name: Option<String>,
    pub labels: Vec<String>,
    pub contact_name: Option<String>,
    pub contact_phone: Option<String>,
    pub contact_email: Option<String>,
    pub last_message_at: OffsetDateTime,
    pub last_inbound_at: Option<OffsetDateTime>,
    /// The newest message the customer sees (private notes left out): its text, and who
    /// wrote it (`customer`, `member`, `ai`, `system`).
    pub preview: Option<String>,
    pub preview_author: Option<String>,
    /// The customer wrote since the reading member last opened the conversation.
    pub unread: bool,
}

impl Row {
    /// The customer wrote last and nobody has answered yet.
    pub fn awaiting_reply(&self) -> bool {
        self.preview_author.as_deref() == Some("customer")
    }
}

/// The newest `limit` conversations of a view with `status`, newest activity first, with
/// whether `reader` (a member) has read each since the customer last wrote.
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    reader: Uuid,
    filter: &Filter,
    status: Status,
    limit: i64,
) -> Result<Vec<Row>> {
    let (unassigned, assignee) = filter.assignee_parts();
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT c.id, i.name AS inbox_name, i.channel AS "channel: Channel",
                  c.status AS "status: Status", c.handler AS "handler: Handler",
                  c.assignee_id, a.display_name AS "assignee_name?", c.labels,
                  p.name AS contact_name, p.phone AS contact_phone, p.email AS contact_email,
                  c.last_message_at, c.last_inbound_at,
                  last.body AS "preview?", last.author_kind AS "preview_author?",
                  (c.last_inbound_at IS NOT NULL
                   AND (r.read_at IS NULL OR r.read_at < c.last_inbound_at)) AS "unread!"
           FROM conversation c
           JOIN inbox i ON i.id = c.inbox_id
           JOIN contact p ON p.id = c.contact_id
           LEFT JOIN member a ON a.id = c.assignee_id
           LEFT JOIN LATERAL (
               SELECT m.body, m.author_kind FROM message m
               WHERE m.conversation_id = c.id AND NOT m.private ORDER BY m.id DESC LIMIT 1
           ) last ON true
           LEFT JOIN conversation_read r ON r.conversation_id = c.id AND r.member_id = $10
           WHERE c.tenant_id = $1 AND c.status = $2
             AND (NOT $3 OR c.assignee_id IS NULL)
             AND ($4::uuid IS NULL OR c.assignee_id = $4)
             AND ($5::uuid IS NULL OR c.inbox_id = $5)
             AND ($6::text IS NULL OR c.handler = $6)
             AND ($7::text IS NULL OR $7 = ANY (c.labels))
             AND ($8::text IS NULL OR p.name ILIKE $8 OR p.email ILIKE $8 OR p.phone ILIKE $8
                  OR EXISTS (SELECT 1 FROM message m WHERE m.conversation_id = c.id AND m.body ILIKE $8))
           ORDER BY c.activity_step DESC, c.last_message_at DESC, c.id DESC
           LIMIT $9"#,
        tenant_id,
        status.as_str(),
        unassigned,
        assignee,
        filter.inbox_id,
        filter.handler.map(Handler::as_str),
        filter.label,
        filter.pattern(),
        limit,
        reader
    )
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

/// How many conversations of a view are in each status, in `Status::ALL`'s order. Views
/// narrowed only by assignee, inbox and handler read the tallies the database keeps
/// (`migrations/0038_inbox_tallies.sql`); a label or a search counts the conversations.
pub async fn counts(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    filter: &Filter,
) -> Result<Vec<(Status, i64)>> {
    let (unassigned, assignee) = filter.assignee_parts();
    let counted: Vec<(Status, i64)> = if filter.label.is_none() && filter.pattern().is_none() {
        sqlx::query!(
            r#"SELECT t.status AS "status: Status", sum(t.n)::bigint AS "count!"
               FROM conversation_tally t
               WHERE t.tenant_id = $1
                 AND (NOT $2 OR t.assignee_id IS NULL)
                 AND ($3::uuid IS NULL OR t.assignee_id = $3)
                 AND ($4::uuid IS NULL OR t.inbox_id = $4)
                 AND ($5::text IS NULL OR t.handler = $5)
               GROUP BY t.status"#,
            tenant_id,
            unassigned,
            assignee,
            filter.inbox_id,
            filter.handler.map(Handler::as_str),
        )
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(|r| (r.status, r.count))
        .collect()
    } else {
        sqlx::query!(
            r#"SELECT c.status AS "status: Status", count(*) AS "count!"
               FROM conversation c
               WHERE c.tenant_id = $1
                 AND (NOT $2 OR c.assignee_id IS NULL)
                 AND ($3::uuid IS NULL OR c.assignee_id = $3)
                 AND ($4::uuid IS NULL OR c.inbox_id = $4)
                 AND ($5::text IS NULL OR c.handler = $5)
                 AND ($6::text IS NULL OR $6 = ANY (c.labels))
                 AND ($7::text IS NULL
                      OR EXISTS (SELECT 1 FROM contact p WHERE p.id = c.contact_id
                                 AND (p.name ILIKE $7 OR p.email ILIKE $7 OR p.phone ILIKE $7))
                      OR EXISTS (SELECT 1 FROM message m WHERE m.conversation_id = c.id AND m.body ILIKE $7))
               GROUP BY c.status"#,
            tenant_id,
            unassigned,
            assignee,
            filter.inbox_id,
            filter.handler.map(Handler::as_str),
            filter.label,
            filter.pattern(),
        )
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(|r| (r.status, r.count))
        .collect()
    };
    Ok(Status::ALL
        .iter()
        .map(|status| {
            let n = counted
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            (*status, n)
        })
        .collect())
}

/// An inbox to filter by, with how many of its conversations are open.
#[derive(Debug, Clone)]
pub struct InboxCount {
    pub id: Uuid,
    pub name: String,
    pub channel: Channel,
    pub open: i64,
}

/// The tenant's inboxes by name, each with its open conversations.
pub async fn inboxes(conn: &mut PgConnection, tenant_id: Uuid) -> Result<Vec<InboxCount>> {
    let rows = sqlx::query_as!(
        InboxCount,
        r#"SELECT i.id, i.name, i.channel AS "channel: Channel",
                  (SELECT coalesce(sum(t.n), 0)::bigint FROM conversation_tally t
                   WHERE t.tenant_id = i.tenant_id AND t.inbox_id = i.id AND t.status = 'open')
                   AS "open!"
           FROM inbox i WHERE i.tenant_id = $1 ORDER BY i.name, i.id"#,
        tenant_id
    )
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

/// Every label in use on the tenant's conversations, sorted.
pub async fn labels(conn: &mut PgConnection, tenant_id: Uuid) -> Result<Vec<String>> {
    let labels = sqlx::query_scalar!(
        r#"SELECT label FROM conversation_label_tally
           WHERE tenant_id = $1 GROUP BY label HAVING sum(n) > 0 ORDER BY label"#,
        tenant_id
    )
    .fetch_all(conn)
    .await?;
    Ok(labels)
}

/// The newest `limit` messages of a conversation, oldest first (private notes included: this
/// is the members' view).
pub async fn recent_messages(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    limit: i64,
) -> Result<Vec<super::MessageView>> {
    let messages = sqlx::query_as!(
        super::MessageView,
        r#"SELECT id AS "id!", conversation_id AS "conversation_id!", direction AS "direction!",
                  author_kind AS "author_kind!", author_id, content_type AS "content_type!",
                  body AS "body!", attachments AS "attachments!", private AS "private!",
                  provider_message_id, delivery_status, delivery_error, provider_timestamp,
                  created_at AS "created_at!", sent_at, delivered_at, read_at, failed_at
           FROM (SELECT * FROM message
                 WHERE conversation_id = $1 AND tenant_id = current_tenant_id()
                 ORDER BY id DESC LIMIT $2) newest
           ORDER BY id"#,
        conversation_id,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(messages)
}

/// Records that `member` has read the conversation up to now (they opened it).
pub async fn mark_read(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    member_id: Uuid,
    conversation_id: Uuid,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO conversation_read (tenant_id, conversation_id, member_id) VALUES ($1, $2, $3)
         ON CONFLICT (conversation_id, member_id) DO UPDATE SET read_at = now()",
        tenant_id,
        conversation_id,
        member_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// One of a contact's conversations, for the contact panel.
pub struct ContactConversation {
    pub id: Uuid,
    pub channel: Channel,
    pub status: Status,
    pub last_message_at: OffsetDateTime,
}

/// A contact's conversations, newest activity first (at most `limit`).
pub async fn of_contact(
    conn: &mut PgConnection,
    contact_id: Uuid,
    limit: i64,
) -> Result<Vec<ContactConversation>> {
    let rows = sqlx::query_as!(
        ContactConversation,
        r#"SELECT c.id, i.channel AS "channel: Channel", c.status AS "status: Status", c.last_message_at
           FROM conversation c JOIN inbox i ON i.id = c.inbox_id
           WHERE c.contact_id = $1 AND c.tenant_id = current_tenant_id()
           ORDER BY c.last_message_at DESC, c.id DESC LIMIT $2"#,
        contact_id,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows)
}
