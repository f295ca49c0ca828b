//! Tickets: the team's queue of customer problems. A ticket is opened by a member, by a member
//! from a conversation in one click, or by the AI agent's `create_ticket` tool; it is worked
//! through comments (internal, or public and sent to the customer through the conversation's
//! channel) and carries SLA targets per priority whose breach times every view computes.
//! Every change is audited with before and after (AUD-1), a bulk change once per ticket.

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Deserializer, Serialize};
use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{begin, long_text, one_line, partner_scope};
use crate::audit::AuditEvent;
use crate::conversations::routes::{send_reply, ReplyBody};
use crate::crm::accounts::{self, like_pattern};
use crate::crm::{contacts, page_limit};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Ctx, Json, Page, Path, Query};
use crate::rbac::Permission;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    use Permission::*;
    api.endpoint(
        Method::GET,
        "/api/v1/tickets",
        Requires(TicketsRead),
        (
            "tickets",
            "List and search tickets, newest first (a partner sees the shared ones only)",
        ),
        Contract::new()
            .query::<ListQuery>()
            .ok_page::<TicketView>()
            .error(StatusCode::BAD_REQUEST, "invalid_limit")
            .error(StatusCode::BAD_REQUEST, "invalid_filter"),
        list_route,
    )
    .endpoint(
        Method::POST,
        "/api/v1/tickets",
        Requires(TicketsWrite),
        (
            "tickets",
            "Open a ticket, on its own or from a conversation (whose customer becomes the requester)",
        ),
        Contract::new()
            .body::<NewTicket>()
            .created::<TicketView>()
            .error(StatusCode::BAD_REQUEST, "invalid_text")
            .error(StatusCode::BAD_REQUEST, "invalid_tags")
            .error(StatusCode::NOT_FOUND, "not_found"),
        create_route,
    )
    .endpoint(
        Method::GET,
        "/api/v1/tickets/{ticket_id}",
        Requires(TicketsRead),
        ("tickets", "Show a ticket with its comments, oldest first"),
        Contract::new().ok::<TicketDetail>(),
        show_route,
    )
    .endpoint(
        Method::PATCH,
        "/api/v1/tickets/{ticket_id}",
        Requires(TicketsWrite),
        (
            "tickets",
            "Change a ticket: an absent field stays, `null` clears it",
        ),
        Contract::new()
            .body::<TicketChanges>()
            .ok::<TicketView>()
            .error(StatusCode::BAD_REQUEST, "invalid_text")
            .error(StatusCode::BAD_REQUEST, "invalid_tags")
            .error(StatusCode::CONFLICT, "ticket_closed"),
        update_route,
    )
    .endpoint(
        Method::POST,
        "/api/v1/tickets/{ticket_id}/comments",
        Requires(TicketsWrite),
        (
            "tickets",
            "Comment on a ticket: internal, or public and sent to the customer through the conversation's channel",
        ),
        Contract::new()
            .body::<NewComment>()
            .created::<CommentView>()
            .error(StatusCode::BAD_REQUEST, "invalid_text")
            .error(StatusCode::CONFLICT, "conversation_not_linked")
            .error(StatusCode::CONFLICT, "no_conversation")
            .error(StatusCode::CONFLICT, "outside_service_window")
            .error(StatusCode::CONFLICT, "ticket_closed"),
        comment_route,
    )
    .endpoint(
        Method::POST,
        "/api/v1/tickets/bulk-assign",
        Requires(TicketsWrite),
        (
            "tickets",
            "Assign many tickets at once (all or none), audited per ticket",
        ),
        Contract::new()
            .body::<BulkAssign>()
            .ok_list::<TicketView>()
            .error(StatusCode::BAD_REQUEST, "invalid_selection")
            .error(StatusCode::CONFLICT, "ticket_closed"),
        bulk_assign_route,
    )
    .endpoint(
        Method::POST,
        "/api/v1/tickets/bulk-status",
        Requires(TicketsWrite),
        (
            "tickets",
            "Change the status of many tickets at once (all or none), audited per ticket",
        ),
        Contract::new()
            .body::<BulkStatus>()
            .ok_list::<TicketView>()
            .error(StatusCode::BAD_REQUEST, "invalid_selection")
            .error(StatusCode::CONFLICT, "ticket_closed"),
        bulk_status_route,
    )
    .endpoint(
        Method::GET,
        "/api/v1/ticket-sla",
        Requires(TicketsRead),
        (
            "tickets",
            "The tenant's SLA targets per priority (defaults where none is set)",
        ),
        Contract::new().ok_list::<SlaTarget>(),
        sla_route,
    )
    .endpoint(
        Method::PUT,
        "/api/v1/ticket-sla",
        Requires(TenantManage),
        ("tickets", "Set the SLA targets of some priorities"),
        Contract::new()
            .body::<Vec<SlaTarget>>()
            .ok_list::<SlaTarget>()
            .error(StatusCode::BAD_REQUEST, "invalid_sla")
            .error(StatusCode::CONFLICT, "sla_contradiction"),
        set_sla_route,
    )
}

// ---- Vocabulary ----

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident as $schema:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
        #[serde(rename_all = "snake_case")]
        #[sqlx(type_name = "text", rename_all = "snake_case")]
        #[schema(as = $schema)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(raw: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.as_str() == raw)
            }
        }
    };
}

text_enum! {
    /// Where a ticket stands. `closed` is final: a new problem is a new ticket.
    Status as TicketStatus {
        New = "new", Open = "open", Pending = "pending", OnHold = "on_hold",
        Solved = "solved", Closed = "closed",
    }
}

text_enum! {
    Priority as TicketPriority { Low = "low", Normal = "normal", High = "high", Urgent = "urgent" }
}

text_enum! {
    Kind as TicketType { Question = "question", Incident = "incident", Problem = "problem", Task = "task" }
}

text_enum! {
    /// Who opened the ticket: a member, a member from a conversation, or the AI agent.
    Origin as TicketOrigin { Member = "member", Conversation = "conversation", Agent = "agent" }
}

impl Status {
    /// The SLA's resolution clock stops in these.
    pub const fn is_solved(self) -> bool {
        matches!(self, Status::Solved | Status::Closed)
    }

    pub const fn label(self) -> &'static str {
        match self {
            Status::New => "New",
            Status::Open => "Open",
            Status::Pending => "Pending",
            Status::OnHold => "On hold",
            Status::Solved => "Solved",
            Status::Closed => "Closed",
        }
    }
}

// ---- SLA ----

/// The targets of one priority, in minutes from the ticket's creation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlaTarget {
    pub priority: Priority,
    /// Until the first public answer.
    #[schema(minimum = 1, maximum = 525600)]
    pub first_response_minutes: i32,
    /// Until the ticket is solved.
    #[schema(minimum = 1, maximum = 525600)]
    pub resolution_minutes: i32,
}

/// Used where a tenant set nothing: an hour to answer an urgent ticket, a day a low one.
pub const DEFAULT_SLA: [SlaTarget; 4] = [
    SlaTarget {
        priority: Priority::Low,
        first_response_minutes: 24 * 60,
        resolution_minutes: 7 * 24 * 60,
    },
    SlaTarget {
        priority: Priority::Normal,
        first_response_minutes: 8 * 60,
        resolution_minutes: 3 * 24 * 60,
    },
    SlaTarget {
        priority: Priority::High,
        first_response_minutes: 4 * 60,
        resolution_minutes: 24 * 60,
    },
    SlaTarget {
        priority: Priority::Urgent,
        first_response_minutes: 60,
        resolution_minutes: 4 * 60,
    },
];

/// The tenant's targets, one per priority.
#[derive(Debug, Clone)]
pub struct SlaPolicy(Vec<SlaTarget>);

impl SlaPolicy {
    fn target(&self, priority: Priority) -> SlaTarget {
        self.0
            .iter()
            .copied()
            .find(|t| t.priority == priority)
            .unwrap_or(DEFAULT_SLA[1])
    }

    pub fn targets(&self) -> &[SlaTarget] {
        &self.0
    }
}

pub async fn sla_policy(conn: &mut PgConnection) -> Result<SlaPolicy> {
    let set = sqlx::query!(
        r#"SELECT priority AS "priority: Priority", first_response_minutes, resolution_minutes
           FROM ticket_sla WHERE tenant_id = current_tenant_id()"#
    )
    .fetch_all(conn)
    .await?;
    Ok(SlaPolicy(
        DEFAULT_SLA
            .iter()
            .map(|d| {
                set.iter()
                    .find(|s| s.priority == d.priority)
                    .map(|s| SlaTarget {
                        priority: d.priority,
                        first_response_minutes: s.first_response_minutes,
                        resolution_minutes: s.resolution_minutes,
                    })
                    .unwrap_or(*d)
            })
            .collect(),
    ))
}

/// A ticket's SLA clocks: when each target falls due, and whether it was (or is being) missed.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = TicketSla)]
pub struct Sla {
    #[serde(with = "time::serde::rfc3339")]
    pub first_response_due_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub resolution_due_at: OffsetDateTime,
    /// Answered late, or still unanswered past the due time.
    pub first_response_breached: bool,
    /// Solved late, or still unsolved past the due time.
    pub resolution_breached: bool,
}

impl Sla {
    pub fn compute(
        target: SlaTarget,
        created_at: OffsetDateTime,
        first_response_at: Option<OffsetDateTime>,
        solved_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Sla {
        let first_response_due_at =
            created_at + Duration::minutes(target.first_response_minutes.into());
        let resolution_due_at = created_at + Duration::minutes(target.resolution_minutes.into());
        Sla {
            first_response_due_at,
            resolution_due_at,
            first_response_breached: first_response_at.unwrap_or(now) > first_response_due_at,
            resolution_breached: solved_at.unwrap_or(now) > resolution_due_at,
        }
    }

    pub fn breached(&self) -> bool {
        self.first_response_breached || self.resolution_breached
    }
}

// ---- Views ----

/// A ticket as stored.
struct Row {
    id: Uuid,
    subject: String,
    description: String,
    status: Status,
    priority: Priority,
    kind: Kind,
    assignee_id: Option<Uuid>,
    requester_id: Option<Uuid>,
    account_id: Option<Uuid>,
    conversation_ids: Vec<Uuid>,
    tags: Vec<String>,
    due_at: Option<OffsetDateTime>,
    origin: Origin,
    author_id: Option<Uuid>,
    shared: bool,
    first_response_at: Option<OffsetDateTime>,
    solved_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Ticket)]
pub struct TicketView {
    pub id: Uuid,
    pub subject: String,
    pub description: String,
    pub status: Status,
    pub priority: Priority,
    #[serde(rename = "type")]
    pub kind: Kind,
    #[schema(required = true)]
    pub assignee_id: Option<Uuid>,
    /// The contact who asked.
    #[schema(required = true)]
    pub requester_id: Option<Uuid>,
    #[schema(required = true)]
    pub account_id: Option<Uuid>,
    /// The conversations the ticket is about, the earliest linked first.
    pub conversation_ids: Vec<Uuid>,
    pub tags: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub due_at: Option<OffsetDateTime>,
    pub origin: Origin,
    /// The member who opened it; `null` when the AI agent did.
    #[schema(required = true)]
    pub author_id: Option<Uuid>,
    /// Shown to the partner organisation of its account.
    pub shared: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub first_response_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub solved_at: Option<OffsetDateTime>,
    pub sla: Sla,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Row {
    fn view(self, policy: &SlaPolicy, now: OffsetDateTime) -> TicketView {
        let sla = Sla::compute(
            policy.target(self.priority),
            self.created_at,
            self.first_response_at,
            self.solved_at,
            now,
        );
        TicketView {
            id: self.id,
            subject: self.subject,
            description: self.description,
            status: self.status,
            priority: self.priority,
            kind: self.kind,
            assignee_id: self.assignee_id,
            requester_id: self.requester_id,
            account_id: self.account_id,
            conversation_ids: self.conversation_ids,
            tags: self.tags,
            due_at: self.due_at,
            origin: self.origin,
            author_id: self.author_id,
            shared: self.shared,
            first_response_at: self.first_response_at,
            solved_at: self.solved_at,
            sla,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = TicketComment)]
pub struct CommentView {
    pub id: Uuid,
    pub ticket_id: Uuid,
    #[schema(required = true)]
    pub author_id: Option<Uuid>,
    pub body: String,
    /// Sent to the customer (as `message_id` of `conversation_id`); otherwise internal.
    pub public: bool,
    #[schema(required = true)]
    pub conversation_id: Option<Uuid>,
    #[schema(required = true)]
    pub message_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A ticket and its comments, oldest first (a partner sees the public ones only).
#[derive(Serialize, ToSchema)]
#[schema(as = TicketDetail)]
pub struct TicketDetail {
    pub ticket: TicketView,
    pub comments: Vec<CommentView>,
}

/// One ticket of the caller's tenant (and, for a partner, shared with it), or 404.
pub async fn fetch(conn: &mut PgConnection, partner: Option<Uuid>, id: Uuid) -> Result<TicketView> {
    let row = sqlx::query_as!(
        Row,
        r#"SELECT t.id, t.subject, t.description, t.status AS "status: Status",
                  t.priority AS "priority: Priority", t.kind AS "kind: Kind", t.assignee_id,
                  t.contact_id AS requester_id, t.account_id,
                  ARRAY(SELECT tc.conversation_id FROM ticket_conversation tc
                        WHERE tc.tenant_id = t.tenant_id AND tc.ticket_id = t.id
                        ORDER BY tc.linked_at, tc.conversation_id) AS "conversation_ids!",
                  t.tags, t.due_at, t.origin AS "origin: Origin", t.author_id, t.shared,
                  t.first_response_at, t.solved_at, t.created_at, t.updated_at
           FROM ticket t
           WHERE t.id = $1 AND t.tenant_id = current_tenant_id()
             AND ($2::uuid IS NULL OR (t.shared AND EXISTS (
                    SELECT 1 FROM account a WHERE a.tenant_id = t.tenant_id
                      AND a.id = t.account_id AND a.partner_org_id = $2)))"#,
        id,
        partner
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound)?;
    let policy = sla_policy(conn).await?;
    Ok(row.view(&policy, OffsetDateTime::now_utc()))
}

async fn comments(
    conn: &mut PgConnection,
    partner: Option<Uuid>,
    ticket_id: Uuid,
) -> Result<Vec<CommentView>> {
    Ok(sqlx::query_as!(
        CommentView,
        "SELECT id, ticket_id, author_id, body, public, conversation_id, message_id, created_at
         FROM ticket_comment
         WHERE ticket_id = $1 AND tenant_id = current_tenant_id() AND ($2::uuid IS NULL OR public)
         ORDER BY id",
        ticket_id,
        partner
    )
    .fetch_all(conn)
    .await?)
}

// ---- Listing ----

/// What a list asks for; every filter is optional and they combine.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub status: Option<Status>,
    pub priority: Option<Priority>,
    pub assignee_id: Option<Uuid>,
    /// Only the unassigned (`true`) or only the assigned (`false`).
    pub unassigned: Option<bool>,
    pub account_id: Option<Uuid>,
    pub requester_id: Option<Uuid>,
    pub tag: Option<String>,
    pub q: Option<String>,
    pub created_after: Option<OffsetDateTime>,
    pub created_before: Option<OffsetDateTime>,
    pub due_before: Option<OffsetDateTime>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// The tickets the caller may see that match, newest first.
pub async fn list(db: &impl AsRef<Db>, ctx: &Ctx, filter: &Filter) -> Result<Vec<TicketView>> {
    let partner = partner_scope(ctx)?;
    let pattern = filter.q.as_deref().map(like_pattern);
    let mut tx = begin(db, ctx).await?;
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT t.id, t.subject, t.description, t.status AS "status: Status",
                  t.priority AS "priority: Priority", t.kind AS "kind: Kind", t.assignee_id,
                  t.contact_id AS requester_id, t.account_id,
                  ARRAY(SELECT tc.conversation_id FROM ticket_conversation tc
                        WHERE tc.tenant_id = t.tenant_id AND tc.ticket_id = t.id
                        ORDER BY tc.linked_at, tc.conversation_id) AS "conversation_ids!",
                  t.tags, t.due_at, t.origin AS "origin: Origin", t.author_id, t.shared,
                  t.first_response_at, t.solved_at, t.created_at, t.updated_at
           FROM ticket t
           WHERE t.tenant_id = $1
             AND ($2::uuid IS NULL OR (t.shared AND EXISTS (
                    SELECT 1 FROM account a WHERE a.tenant_id = t.tenant_id
                      AND a.id = t.account_id AND a.partner_org_id = $2)))
             AND ($3::text IS NULL OR t.status = $3)
             AND ($4::text IS NULL OR t.priority = $4)
             AND ($5::uuid IS NULL OR t.assignee_id = $5)
             AND ($6::bool IS NULL OR (t.assignee_id IS NULL) = $6)
             AND ($7::uuid IS NULL OR t.account_id = $7)
             AND ($8::uuid IS NULL OR t.contact_id = $8)
             AND ($9::text IS NULL OR $9 = ANY (t.tags))
             AND ($10::text IS NULL OR t.subject ILIKE $10 OR t.description ILIKE $10)
             AND ($11::timestamptz IS NULL OR t.created_at >= $11)
             AND ($12::timestamptz IS NULL OR t.created_at < $12)
             AND ($13::timestamptz IS NULL OR t.due_at < $13)
             AND ($14::uuid IS NULL OR t.id < $14)
           ORDER BY t.id DESC
           LIMIT $15"#,
        ctx.tenant_id,
        partner,
        filter.status.map(Status::as_str),
        filter.priority.map(Priority::as_str),
        filter.assignee_id,
        filter.unassigned,
        filter.account_id,
        filter.requester_id,
        filter.tag.as_deref(),
        pattern,
        filter.created_after,
        filter.created_before,
        filter.due_before,
        filter.after,
        filter.limit
    )
    .fetch_all(&mut *tx)
    .await?;
    let policy = sla_policy(&mut tx).await?;
    tx.commit().await?;
    let now = OffsetDateTime::now_utc();
    Ok(rows.into_iter().map(|r| r.view(&policy, now)).collect())
}

/// How many tickets the caller may see are in each status.
pub async fn counts(db: &impl AsRef<Db>, ctx: &Ctx) -> Result<Vec<(Status, i64)>> {
    let partner = partner_scope(ctx)?;
    let mut tx = begin(db, ctx).await?;
    let rows = sqlx::query!(
        r#"SELECT t.status AS "status: Status", count(*) AS "count!"
           FROM ticket t
           WHERE t.tenant_id = $1
             AND ($2::uuid IS NULL OR (t.shared AND EXISTS (
                    SELECT 1 FROM account a WHERE a.tenant_id = t.tenant_id
                      AND a.id = t.account_id AND a.partner_org_id = $2)))
           GROUP BY t.status"#,
        ctx.tenant_id,
        partner
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Status::ALL
        .iter()
        .map(|s| {
            let n = rows.iter().find(|r| r.status == *s).map_or(0, |r| r.count);
            (*s, n)
        })
        .collect())
}

/// A ticket with its comments.
pub async fn detail(db: &impl AsRef<Db>, ctx: &Ctx, id: Uuid) -> Result<TicketDetail> {
    let partner = partner_scope(ctx)?;
    let mut tx = begin(db, ctx).await?;
    let ticket = fetch(&mut tx, partner, id).await?;
    let comments = comments(&mut tx, partner, id).await?;
    tx.commit().await?;
    Ok(TicketDetail { ticket, comments })
}

/// A ticket as a conversation's side panel lists it.
pub struct Linked {
    pub id: Uuid,
    pub subject: String,
    pub status: Status,
}

/// The tickets linked to a conversation, newest first (at most 20), on the caller's
/// transaction.
pub async fn of_conversation(
    conn: &mut PgConnection,
    conversation_id: Uuid,
) -> Result<Vec<Linked>> {
    Ok(sqlx::query_as!(
        Linked,
        r#"SELECT t.id, t.subject, t.status AS "status: Status"
           FROM ticket_conversation tc
           JOIN ticket t ON t.tenant_id = tc.tenant_id AND t.id = tc.ticket_id
           WHERE tc.tenant_id = current_tenant_id() AND tc.conversation_id = $1
           ORDER BY t.id DESC LIMIT 20"#,
        conversation_id
    )
    .fetch_all(conn)
    .await?)
}

/// A contact's tickets, as requester or through one of their conversations, each with its
/// comments: for their export (DSR-1).
pub async fn export_rows(
    conn: &mut PgConnection,
    contact_id: Uuid,
    conversation_ids: &[Uuid],
) -> Result<Vec<serde_json::Value>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT to_jsonb(t) || jsonb_build_object('comments',
                      (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.created_at, c.id), '[]'::jsonb)
                       FROM ticket_comment c WHERE c.tenant_id = t.tenant_id AND c.ticket_id = t.id)) AS "row!"
           FROM ticket t
           WHERE t.tenant_id = current_tenant_id()
             AND (t.contact_id = $1 OR t.conversation_id = ANY($2)
                  OR EXISTS (SELECT 1 FROM ticket_conversation tc
                             WHERE tc.tenant_id = t.tenant_id AND tc.ticket_id = t.id
                               AND tc.conversation_id = ANY($2)))
           ORDER BY t.created_at, t.id"#,
        contact_id,
        conversation_ids
    )
    .fetch_all(conn)
    .await?)
}

// ---- Input ----

/// An RFC 3339 time, or a date (`2026-12-24`, midnight UTC); `null` clears.
fn when<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<OffsetDateTime>>, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    raw.map(|s| parse_when(&s).map_err(serde::de::Error::custom))
        .transpose()
        .map(Some)
}

/// A time as a client writes it: RFC 3339, or a date meaning its midnight UTC.
pub fn parse_when(raw: &str) -> std::result::Result<OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    let raw = raw.trim();
    OffsetDateTime::parse(raw, &Rfc3339)
        .or_else(|_| {
            time::Date::parse(
                raw,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .map(|d| d.midnight().assume_utc())
        })
        .map_err(|_| format!("{raw:?} is not a date (2026-12-24) or an RFC 3339 time"))
}

/// The tags as the API document states them: what [`tags`] accepts.
fn tags_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::http::contract::schema(serde_json::json!({
        "type": "array",
        "maxItems": 20,
        "items": { "type": "string", "maxLength": 50, "pattern": crate::http::contract::ONE_LINE }
    }))
}

/// Tags: trimmed, lower case, without duplicates, each 1 to 50 characters, 20 at most.
fn tags(raw: Vec<String>) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for tag in raw {
        let trimmed = tag.trim();
        if trimmed.is_empty()
            || trimmed.chars().count() > 50
            || trimmed.chars().any(char::is_control)
        {
            return Err(Error::bad_request(
                "invalid_tags",
                "each tag is one line of 1 to 50 characters",
            ));
        }
        let tag = trimmed.to_lowercase();
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > 20 {
        return Err(Error::bad_request(
            "invalid_tags",
            "a ticket takes at most 20 tags",
        ));
    }
    out.sort();
    Ok(out)
}

/// A ticket to open. From a conversation (`conversation_id`), its customer is the requester
/// unless one is named, and their account the account.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewTicket)]
pub struct NewTicket {
    #[schema(min_length = 1, max_length = 300, pattern = "$one_line")]
    pub subject: String,
    #[schema(max_length = 20000)]
    pub description: Option<String>,
    /// `new` when absent.
    pub status: Option<Status>,
    /// `normal` when absent.
    pub priority: Option<Priority>,
    /// `question` when absent.
    #[serde(rename = "type")]
    pub kind: Option<Kind>,
    pub assignee_id: Option<Uuid>,
    /// The contact who asked.
    pub requester_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    /// The conversation the ticket is opened from.
    pub conversation_id: Option<Uuid>,
    #[schema(schema_with = tags_schema)]
    pub tags: Option<Vec<String>>,
    /// RFC 3339, or a date (midnight UTC).
    #[serde(default, deserialize_with = "when")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub due_at: Option<Option<OffsetDateTime>>,
    pub shared: Option<bool>,
}

/// The fields to change; an absent field stays as it is, `null` clears it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TicketChanges)]
pub struct TicketChanges {
    #[schema(min_length = 1, max_length = 300, pattern = "$one_line")]
    pub subject: Option<String>,
    #[schema(max_length = 20000)]
    pub description: Option<String>,
    pub status: Option<Status>,
    pub priority: Option<Priority>,
    #[serde(rename = "type")]
    pub kind: Option<Kind>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<Uuid>)]
    pub assignee_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<Uuid>)]
    pub requester_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<Uuid>)]
    pub account_id: Option<Option<Uuid>>,
    /// The linked conversations, all of them (replaces the list).
    pub conversation_ids: Option<Vec<Uuid>>,
    #[schema(schema_with = tags_schema)]
    pub tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "when")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub due_at: Option<Option<OffsetDateTime>>,
    pub shared: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewTicketComment)]
pub struct NewComment {
    #[schema(min_length = 1, max_length = 4096, pattern = "$not_blank")]
    pub body: String,
    /// Send it to the customer; `false` (internal) when absent.
    #[serde(default)]
    pub public: bool,
    /// Which linked conversation a public comment goes to; the latest linked when absent.
    pub conversation_id: Option<Uuid>,
}

/// Tickets to change together: all change, or (one missing, one closed) none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TicketBulkAssign)]
pub struct BulkAssign {
    #[schema(min_items = 1, max_items = 200)]
    pub ticket_ids: Vec<Uuid>,
    /// `null` unassigns.
    #[schema(required = true)]
    pub assignee_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TicketBulkStatus)]
pub struct BulkStatus {
    #[schema(min_items = 1, max_items = 200)]
    pub ticket_ids: Vec<Uuid>,
    pub status: Status,
}

// ---- Changes ----

/// Opens a ticket as the calling member; see [`NewTicket`].
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id))]
pub async fn create(db: &impl AsRef<Db>, ctx: &Ctx, new: NewTicket) -> Result<TicketView> {
    let subject = one_line("subject", &new.subject, 300)?;
    let description = long_text(
        "description",
        new.description.as_deref().unwrap_or(""),
        20000,
    )?;
    let tags = tags(new.tags.unwrap_or_default())?;
    let mut tx = ctx.begin(db).await?;
    let conversation = match new.conversation_id {
        Some(id) => Some(crate::conversations::fetch(&mut tx, id).await?),
        None => None,
    };
    let requester_id = new
        .requester_id
        .or(conversation.as_ref().map(|c| c.contact_id));
    let requester = match requester_id {
        Some(id) => Some(contacts::fetch(&mut tx, id).await?),
        None => None,
    };
    let account_id = match new.account_id {
        Some(id) => Some(accounts::fetch(&mut tx, id).await?.id),
        None => requester.as_ref().and_then(|c| c.account_id),
    };
    let status = new.status.unwrap_or(Status::New);
    let origin = if conversation.is_some() {
        Origin::Conversation
    } else {
        Origin::Member
    };
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO ticket (id, tenant_id, contact_id, conversation_id, subject, description, status,
                             priority, kind, assignee_id, account_id, tags, due_at, origin, author_id,
                             shared, created_by, solved_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 CASE WHEN $7 IN ('solved', 'closed') THEN now() END)",
        id,
        ctx.tenant_id,
        requester_id,
        new.conversation_id,
        subject,
        description,
        status.as_str(),
        new.priority.unwrap_or(Priority::Normal).as_str(),
        new.kind.unwrap_or(Kind::Question).as_str(),
        new.assignee_id,
        account_id,
        &tags,
        new.due_at.flatten(),
        origin.as_str(),
        ctx.member_id,
        new.shared.unwrap_or(false),
        format!("member:{}", ctx.member_id)
    )
    .execute(&mut *tx)
    .await?;
    if let Some(conversation_id) = new.conversation_id {
        link(&mut tx, id, conversation_id).await?;
    }
    let ticket = fetch(&mut tx, None, id).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("ticket.created", "ticket", id).after(&ticket),
    )
    .await?;
    tx.commit().await?;
    Ok(ticket)
}

/// The agent's `create_ticket` tool: a ticket about the conversation it is answering, with its
/// customer as the requester. The caller audits it as the agent, on the same transaction.
#[allow(clippy::too_many_arguments)] // one call site, the tool's arguments as they come
pub async fn create_for_agent(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    contact_id: Uuid,
    conversation_id: Uuid,
    subject: &str,
    description: &str,
    priority: Priority,
    execution_id: Uuid,
) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO ticket (id, tenant_id, contact_id, conversation_id, subject, description,
                             priority, origin, created_by, account_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'agent', $8,
                 (SELECT account_id FROM contact WHERE tenant_id = $2 AND id = $3))",
        id,
        tenant_id,
        contact_id,
        conversation_id,
        subject,
        description,
        priority.as_str(),
        format!("agent:{execution_id}")
    )
    .execute(&mut *conn)
    .await?;
    link(conn, id, conversation_id).await?;
    Ok(id)
}

async fn link(conn: &mut PgConnection, ticket_id: Uuid, conversation_id: Uuid) -> Result<()> {
    sqlx::query!(
        "INSERT INTO ticket_conversation (tenant_id, ticket_id, conversation_id)
         VALUES (current_tenant_id(), $1, $2) ON CONFLICT DO NOTHING",
        ticket_id,
        conversation_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

fn refuse_closed(ticket: &TicketView) -> Result<()> {
    if ticket.status == Status::Closed {
        return Err(Error::conflict(
            "ticket_closed",
            "the ticket is closed: open a new one",
        ));
    }
    Ok(())
}

/// Applies `changes` to one ticket on the caller's transaction and audits it with before and
/// after. The single update and each ticket of a bulk change go through here.
async fn apply(
    tx: &mut crate::db::Tx,
    ctx: &Ctx,
    id: Uuid,
    changes: TicketChanges,
) -> Result<TicketView> {
    let before = fetch(tx, None, id).await?;
    refuse_closed(&before)?;
    let subject = match &changes.subject {
        Some(s) => one_line("subject", s, 300)?,
        None => before.subject.clone(),
    };
    let description = match &changes.description {
        Some(d) => long_text("description", d, 20000)?,
        None => before.description.clone(),
    };
    let tags = match changes.tags {
        Some(t) => tags(t)?,
        None => before.tags.clone(),
    };
    let requester_id = changes.requester_id.unwrap_or(before.requester_id);
    if let Some(contact) = requester_id.filter(|_| changes.requester_id.is_some()) {
        contacts::fetch(tx, contact).await?;
    }
    let account_id = changes.account_id.unwrap_or(before.account_id);
    if let Some(account) = account_id.filter(|_| changes.account_id.is_some()) {
        accounts::fetch(tx, account).await?;
    }
    let status = changes.status.unwrap_or(before.status);
    sqlx::query!(
        "UPDATE ticket SET subject = $2, description = $3, status = $4, priority = $5, kind = $6,
                assignee_id = $7, contact_id = $8, account_id = $9, tags = $10, due_at = $11,
                shared = $12, updated_at = now(),
                solved_at = CASE WHEN $4 IN ('solved', 'closed') THEN coalesce(solved_at, now()) END
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        subject,
        description,
        status.as_str(),
        changes.priority.unwrap_or(before.priority).as_str(),
        changes.kind.unwrap_or(before.kind).as_str(),
        changes.assignee_id.unwrap_or(before.assignee_id),
        requester_id,
        account_id,
        &tags,
        changes.due_at.unwrap_or(before.due_at),
        changes.shared.unwrap_or(before.shared)
    )
    .execute(&mut **tx)
    .await?;
    if let Some(ids) = changes.conversation_ids {
        sqlx::query!(
            "DELETE FROM ticket_conversation
             WHERE tenant_id = current_tenant_id() AND ticket_id = $1 AND NOT (conversation_id = ANY ($2))",
            id,
            &ids
        )
        .execute(&mut **tx)
        .await?;
        for conversation_id in ids {
            // Another tenant's conversation breaks the tenant-scoped key: 404.
            link(tx, id, conversation_id).await?;
        }
    }
    let after = fetch(tx, None, id).await?;
    ctx.audit(
        tx,
        AuditEvent::new("ticket.updated", "ticket", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    Ok(after)
}

#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, ticket_id = %id))]
pub async fn update(
    db: &impl AsRef<Db>,
    ctx: &Ctx,
    id: Uuid,
    changes: TicketChanges,
) -> Result<TicketView> {
    let mut tx = ctx.begin(db).await?;
    let after = apply(&mut tx, ctx, id, changes).await?;
    tx.commit().await?;
    Ok(after)
}

fn selection(ids: &[Uuid]) -> Result<()> {
    if ids.is_empty() || ids.len() > 200 {
        return Err(Error::bad_request(
            "invalid_selection",
            "name 1 to 200 tickets",
        ));
    }
    Ok(())
}

/// The same change to many tickets in one transaction, each audited on its own.
pub async fn bulk(
    db: &impl AsRef<Db>,
    ctx: &Ctx,
    ids: &[Uuid],
    change: impl Fn() -> TicketChanges,
) -> Result<Vec<TicketView>> {
    selection(ids)?;
    let mut unique = ids.to_vec();
    unique.sort();
    unique.dedup();
    let mut tx = ctx.begin(db).await?;
    let mut out = Vec::with_capacity(unique.len());
    for id in unique {
        out.push(apply(&mut tx, ctx, id, change()).await?);
    }
    tx.commit().await?;
    Ok(out)
}

/// Adds a comment. A public one is sent to the customer through the conversation's channel
/// by the conversations' own send path, and stops the first-response clock.
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, ticket_id = %id))]
pub async fn comment(
    db: &impl AsRef<Db>,
    ctx: &Ctx,
    id: Uuid,
    new: NewComment,
) -> Result<CommentView> {
    let mut tx = ctx.begin(db).await?;
    // Another tenant's ticket is not found, whatever the body says.
    let ticket = fetch(&mut tx, None, id).await?;
    let body = long_text("body", &new.body, 4096)?;
    if body.is_empty() {
        return Err(Error::bad_request("invalid_text", "body is required"));
    }
    refuse_closed(&ticket)?;
    let (conversation_id, message_id) = if new.public {
        if !ctx.role.can(Permission::ConversationsReply) {
            return Err(Error::Forbidden(
                "a public comment is a reply to the customer: it needs conversations.reply",
            ));
        }
        let conversation_id = match new.conversation_id {
            Some(c) if ticket.conversation_ids.contains(&c) => c,
            Some(c) => {
                // Another tenant's conversation is not found rather than not linked.
                crate::conversations::fetch(&mut tx, c).await?;
                return Err(Error::conflict(
                    "conversation_not_linked",
                    "that conversation is not linked to the ticket",
                ));
            }
            None => *ticket.conversation_ids.last().ok_or_else(|| {
                Error::conflict(
                    "no_conversation",
                    "a public comment goes to the customer through a conversation: link one first",
                )
            })?,
        };
        let conversation = crate::conversations::fetch(&mut tx, conversation_id).await?;
        let reply = ReplyBody {
            body: Some(body.clone()),
            private: false,
            template: None,
        };
        let message = send_reply(
            &mut tx,
            ctx,
            &conversation,
            &reply,
            crate::channels::free_form_open,
        )
        .await?;
        (Some(conversation_id), Some(message.id))
    } else {
        (None, None)
    };
    let comment = sqlx::query_as!(
        CommentView,
        "INSERT INTO ticket_comment (id, tenant_id, ticket_id, author_id, body, public, conversation_id, message_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING id, ticket_id, author_id, body, public, conversation_id, message_id, created_at",
        Uuid::now_v7(),
        ctx.tenant_id,
        id,
        ctx.member_id,
        body,
        new.public,
        conversation_id,
        message_id
    )
    .fetch_one(&mut *tx)
    .await?;
    if new.public {
        // The first public answer stops the first-response clock and opens a new ticket.
        sqlx::query!(
            "UPDATE ticket SET first_response_at = coalesce(first_response_at, now()),
                    status = CASE WHEN status = 'new' THEN 'open' ELSE status END, updated_at = now()
             WHERE id = $1 AND tenant_id = current_tenant_id()",
            id
        )
        .execute(&mut *tx)
        .await?;
    }
    ctx.audit(
        &mut tx,
        AuditEvent::new("ticket.commented", "ticket", id).after(&comment),
    )
    .await?;
    tx.commit().await?;
    Ok(comment)
}

/// The tenant's SLA targets.
pub async fn sla(db: &impl AsRef<Db>, ctx: &Ctx) -> Result<Vec<SlaTarget>> {
    let mut tx = ctx.begin(db).await?;
    let policy = sla_policy(&mut tx).await?;
    tx.commit().await?;
    Ok(policy.0)
}

pub async fn set_sla(
    db: &impl AsRef<Db>,
    ctx: &Ctx,
    targets: Vec<SlaTarget>,
) -> Result<Vec<SlaTarget>> {
    for t in &targets {
        let ok = |m: i32| (1..=525_600).contains(&m);
        if !ok(t.first_response_minutes) || !ok(t.resolution_minutes) {
            return Err(Error::bad_request(
                "invalid_sla",
                "targets are 1 to 525600 minutes (a year)",
            ));
        }
        // Each target is valid alone; these refuse targets that contradict each other.
        if t.first_response_minutes > t.resolution_minutes {
            return Err(Error::conflict(
                "sla_contradiction",
                "the first response cannot be due after the resolution",
            ));
        }
        if targets.iter().filter(|o| o.priority == t.priority).count() > 1 {
            return Err(Error::conflict(
                "sla_contradiction",
                "one target per priority",
            ));
        }
    }
    let mut tx = ctx.begin(db).await?;
    let before = sla_policy(&mut tx).await?;
    for t in &targets {
        sqlx::query!(
            "INSERT INTO ticket_sla (tenant_id, priority, first_response_minutes, resolution_minutes)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, priority) DO UPDATE
             SET first_response_minutes = EXCLUDED.first_response_minutes,
                 resolution_minutes = EXCLUDED.resolution_minutes, updated_at = now()",
            ctx.tenant_id,
            t.priority.as_str(),
            t.first_response_minutes,
            t.resolution_minutes
        )
        .execute(&mut *tx)
        .await?;
    }
    let after = sla_policy(&mut tx).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("ticket_sla.updated", "tenant", ctx.tenant_id)
            .before(before.targets())
            .after(after.targets()),
    )
    .await?;
    tx.commit().await?;
    Ok(after.0)
}

// ---- Routes ----

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<Status>,
    priority: Option<Priority>,
    assignee_id: Option<Uuid>,
    /// Only the unassigned (`true`) or only the assigned (`false`).
    unassigned: Option<bool>,
    account_id: Option<Uuid>,
    /// The contact who asked.
    requester_id: Option<Uuid>,
    tag: Option<String>,
    /// A case-insensitive part of the subject or description.
    q: Option<String>,
    /// RFC 3339 or a date: created at or after.
    #[param(value_type = Option<String>, format = DateTime)]
    created_after: Option<String>,
    /// RFC 3339 or a date: created before.
    #[param(value_type = Option<String>, format = DateTime)]
    created_before: Option<String>,
    /// RFC 3339 or a date: due before.
    #[param(value_type = Option<String>, format = DateTime)]
    due_before: Option<String>,
    /// The last id of the previous page (its `next_cursor`).
    after: Option<Uuid>,
    /// 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

fn time_filter(field: &str, raw: Option<&str>) -> Result<Option<OffsetDateTime>> {
    raw.map(|r| {
        parse_when(r).map_err(|e| Error::bad_request("invalid_filter", format!("{field}: {e}")))
    })
    .transpose()
}

async fn list_route(
    State(db): State<Db>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> Result<Json<Page<TicketView>>> {
    let limit = page_limit(query.limit)?;
    if query.q.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(Error::bad_request(
            "invalid_filter",
            "search for at most 200 characters",
        ));
    }
    let filter = Filter {
        status: query.status,
        priority: query.priority,
        assignee_id: query.assignee_id,
        unassigned: query.unassigned,
        account_id: query.account_id,
        requester_id: query.requester_id,
        tag: query.tag.map(|t| t.trim().to_lowercase()),
        q: query.q,
        created_after: time_filter("created_after", query.created_after.as_deref())?,
        created_before: time_filter("created_before", query.created_before.as_deref())?,
        due_before: time_filter("due_before", query.due_before.as_deref())?,
        after: query.after,
        limit,
    };
    let items = list(&db, &ctx, &filter).await?;
    Ok(Json(Page::new(items, limit, |t| t.id)))
}

async fn create_route(
    State(db): State<Db>,
    ctx: Ctx,
    Json(body): Json<NewTicket>,
) -> Result<(StatusCode, Json<TicketView>)> {
    Ok((StatusCode::CREATED, Json(create(&db, &ctx, body).await?)))
}

async fn show_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<TicketDetail>> {
    Ok(Json(detail(&db, &ctx, id).await?))
}

async fn update_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<TicketChanges>,
) -> Result<Json<TicketView>> {
    Ok(Json(update(&db, &ctx, id, body).await?))
}

async fn comment_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<NewComment>,
) -> Result<(StatusCode, Json<CommentView>)> {
    Ok((
        StatusCode::CREATED,
        Json(comment(&db, &ctx, id, body).await?),
    ))
}

async fn bulk_assign_route(
    State(db): State<Db>,
    ctx: Ctx,
    Json(body): Json<BulkAssign>,
) -> Result<Json<Vec<TicketView>>> {
    let assignee = body.assignee_id;
    let changed = bulk(&db, &ctx, &body.ticket_ids, || TicketChanges {
        assignee_id: Some(assignee),
        ..TicketChanges::default()
    })
    .await?;
    Ok(Json(changed))
}

async fn bulk_status_route(
    State(db): State<Db>,
    ctx: Ctx,
    Json(body): Json<BulkStatus>,
) -> Result<Json<Vec<TicketView>>> {
    let status = body.status;
    let changed = bulk(&db, &ctx, &body.ticket_ids, || TicketChanges {
        status: Some(status),
        ..TicketChanges::default()
    })
    .await?;
    Ok(Json(changed))
}

async fn sla_route(State(db): State<Db>, ctx: Ctx) -> Result<Json<Vec<SlaTarget>>> {
    Ok(Json(sla(&db, &ctx).await?))
}

async fn set_sla_route(
    State(db): State<Db>,
    ctx: Ctx,
    Json(body): Json<Vec<SlaTarget>>,
) -> Result<Json<Vec<SlaTarget>>> {
    Ok(Json(set_sla(&db, &ctx, body).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_urgent_ticket_breaches_its_first_response_an_hour_after_creation() {
        let created = OffsetDateTime::now_utc() - Duration::minutes(61);
        let sla = Sla::compute(
            DEFAULT_SLA[3],
            created,
            None,
            None,
            OffsetDateTime::now_utc(),
        );
        assert!(sla.first_response_breached);
        assert!(!sla.resolution_breached);
        assert_eq!(sla.first_response_due_at, created + Duration::hours(1));
    }

    #[test]
    fn an_answer_in_time_stops_the_first_response_clock() {
        let created = OffsetDateTime::now_utc() - Duration::days(2);
        let answered = created + Duration::minutes(30);
        let sla = Sla::compute(
            DEFAULT_SLA[3],
            created,
            Some(answered),
            None,
            OffsetDateTime::now_utc(),
        );
        assert!(!sla.first_response_breached);
        assert!(sla.resolution_breached);
    }

    #[test]
    fn tags_are_trimmed_lower_cased_and_deduplicated() {
        assert_eq!(
            tags(vec![" VIP".into(), "vip".into(), "billing".into()]).unwrap(),
            vec!["billing", "vip"]
        );
        assert!(tags(vec!["  ".into()]).is_err());
    }
}
