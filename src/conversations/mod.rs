//! Conversations and messages: the ingest path both channels share, the members' inbox API,
//! and the states of outbound messages on their way through the durable queue.

pub mod canned;
pub mod delivery;
pub mod erasure;
pub mod inbox;
pub mod routes;
pub mod timeline;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, AuditEvent};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::events::{self, Event};
use crate::guardrails::Lang;

/// Delivers an outbound message to the customer's channel. Conversations queue it with the
/// message; the channels, above them, register the handler that sends.
pub const SEND_MESSAGE: &str = "message.send";

/// What a customer's message asks for when the AI handles its conversation, or when the message
/// asks for a person's review (AGT-7): an agent run on it. The ingest statement queues it with
/// the message, so a stored message on an AI-handled conversation always has its run.
/// Conversations only asks: the agent sits above it and registers the handler. The kind keeps
/// the name stored jobs carry.
pub const AGENT_RUN: &str = "agent.run";

/// The agent run one message asks for; a message has one at most (its idempotency key).
pub fn agent_run(message_id: Uuid) -> crate::queue::NewJob {
    crate::queue::NewJob::new(
        AGENT_RUN,
        format!("agent:{message_id}"),
        json!({ "message_id": message_id }),
    )
}

/// Who answers a conversation: the AI agent, or the members (`conversation.handler`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Handler {
    Ai,
    Human,
}

impl Handler {
    pub const ALL: [Handler; 2] = [Handler::Ai, Handler::Human];

    pub const fn as_str(self) -> &'static str {
        match self {
            Handler::Ai => "ai",
            Handler::Human => "human",
        }
    }
}

/// Where a conversation stands for the members (`conversation.status`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[schema(as = ConversationStatus)]
pub enum Status {
    Open,
    Pending,
    Snoozed,
    Resolved,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Open,
        Status::Pending,
        Status::Snoozed,
        Status::Resolved,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Pending => "pending",
            Status::Snoozed => "snoozed",
            Status::Resolved => "resolved",
        }
    }
}

/// The channel a conversation runs on: its inbox's (`inbox.channel`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Channel {
    Whatsapp,
    Webchat,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Whatsapp, Channel::Webchat];

    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Whatsapp => "whatsapp",
            Channel::Webchat => "webchat",
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Conversation)]
pub struct ConversationView {
    pub id: Uuid,
    pub inbox_id: Uuid,
    pub contact_id: Uuid,
    pub channel: Channel,
    pub status: Status,
    pub handler: Handler,
    pub assignee_id: Option<Uuid>,
    pub labels: Vec<String>,
    /// The customer's language (`en`, `pt`, `es`, `de`), once known.
    pub language: Option<String>,
    /// Whether a member set the language (detection no longer changes it).
    pub language_set_by_member: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub snoozed_until: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub last_message_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_inbound_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Message)]
pub struct MessageView {
    pub id: Uuid,
    pub conversation_id: Uuid,
    /// `inbound` (from the customer) or `outbound`.
    pub direction: String,
    /// `customer`, `member`, `ai` or `system`.
    pub author_kind: String,
    pub author_id: Option<Uuid>,
    /// `text`, `template`...
    pub content_type: String,
    pub body: String,
    /// What came or went with the message (a template, media references), each free-form.
    #[schema(value_type = Vec<Object>)]
    pub attachments: Value,
    /// A note for the members, never sent to the customer.
    pub private: bool,
    /// The channel provider's id for the message (WhatsApp's `wamid`).
    pub provider_message_id: Option<String>,
    /// Where an outbound message is on its way to the customer.
    #[schema(value_type = Option<delivery::DeliveryStatus>)]
    pub delivery_status: Option<String>,
    /// Free-form: the provider's error when delivery failed.
    #[schema(value_type = Option<Object>)]
    pub delivery_error: Option<Value>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub provider_timestamp: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub read_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub failed_at: Option<OffsetDateTime>,
}

/// How the staff's pages name the contact of each of these conversations, in two queries
/// (a list of review items, say): pairs of conversation id and name, for the conversations of
/// the caller's tenant that exist.
pub async fn contact_names(
    conn: &mut PgConnection,
    conversation_ids: &[Uuid],
) -> Result<Vec<(Uuid, String)>> {
    let rows = sqlx::query!(
        "SELECT id, contact_id FROM conversation
         WHERE id = ANY ($1) AND tenant_id = current_tenant_id()",
        conversation_ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let contacts: Vec<Uuid> = rows.iter().map(|r| r.contact_id).collect();
    let names = crate::crm::contacts::shown_names(conn, &contacts).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let (_, name) = names.iter().find(|(id, _)| *id == r.contact_id)?;
            Some((r.id, name.clone()))
        })
        .collect())
}

pub async fn fetch(conn: &mut PgConnection, id: Uuid) -> Result<ConversationView> {
    sqlx::query_as!(
        ConversationView,
        r#"SELECT c.id, c.inbox_id, c.contact_id, i.channel AS "channel: Channel", c.status AS "status: Status",
                c.handler AS "handler: Handler", c.assignee_id, c.labels,
                c.language, c.language_set_by_member, c.snoozed_until, c.last_message_at, c.last_inbound_at, c.created_at, c.updated_at
         FROM conversation c JOIN inbox i ON i.id = c.inbox_id
         WHERE c.id = $1 AND c.tenant_id = current_tenant_id()"#,
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

pub async fn fetch_message(conn: &mut PgConnection, id: Uuid) -> Result<MessageView> {
    sqlx::query_as!(
        MessageView,
        "SELECT id, conversation_id, direction, author_kind, author_id, content_type, body, attachments,
                private, provider_message_id, delivery_status, delivery_error, provider_timestamp,
                created_at, sent_at, delivered_at, read_at, failed_at
         FROM message WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

/// Who wrote an inbound message.
#[derive(Debug, Clone)]
pub enum Sender<'a> {
    /// A contact the channel already knows (a web-chat visitor's).
    Contact(Uuid),
    /// A WhatsApp identity: its contact is found, or created on first contact, by the same
    /// statement that stores the message.
    WhatsApp {
        wa_id: &'a str,
        profile_name: Option<&'a str>,
    },
}

/// A customer's message as a channel received it.
#[derive(Debug, Clone)]
pub struct Inbound<'a> {
    pub inbox_id: Uuid,
    pub from: Sender<'a>,
    /// The provider's id (WhatsApp's wamid); redeliveries of the same id are no-ops.
    pub provider_message_id: Option<&'a str>,
    pub content_type: &'a str,
    pub body: &'a str,
    pub attachments: Value,
    pub provider_timestamp: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    New {
        conversation_id: Uuid,
        message_id: Uuid,
    },
    Duplicate,
}

/// How old a provider's timestamp may be and still count. Meta retries a webhook for at most
/// seven days, so an older timestamp is a clock fault, not a late delivery: the message is then
/// taken as written when it arrived.
pub const PROVIDER_TIME_HORIZON: time::Duration = time::Duration::days(7);

/// Settings for a transaction that ingests messages (open it with
/// [`crate::db::Db::tenant_tx_with`]). The ingest statement's rows come as arrays, whose sizes
/// a custom plan sees and a generic one guesses, so PostgreSQL would judge the generic plan
/// dearer and plan every call anew (about 1 ms each, `pg_stat_statements`). Every lookup in it
/// is by key, so the generic plan is as good.
pub const INGEST_TX: &[(&str, &str)] = &[("plan_cache_mode", "force_generic_plan")];

/// Stores an inbound message on the caller's tenant transaction; see [`ingest_many`].
pub async fn ingest(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    msg: Inbound<'_>,
) -> Result<Ingested> {
    let stored = ingest_many(conn, tenant_id, std::slice::from_ref(&msg)).await?;
    Ok(stored[0])
}

/// Who a message is from, for telling senders apart within one batch.
fn sender_key<'a>(msg: &Inbound<'a>) -> (Option<Uuid>, Option<&'a str>) {
    match &msg.from {
        Sender::Contact(id) => (Some(*id), None),
        Sender::WhatsApp { wa_id, .. } => (None, Some(wa_id)),
    }
}

/// One message's parameters, as the ingest statement takes them (one array per column).
#[derive(Default)]
struct Columns {
    ord: Vec<i32>,
    inbox_id: Vec<Uuid>,
    known_id: Vec<Option<Uuid>>,
    wamid: Vec<Option<String>>,
    content_type: Vec<String>,
    body: Vec<String>,
    attachments: Vec<Value>,
    provider_ts: Vec<Option<OffsetDateTime>>,
    language: Vec<Option<String>>,
    wa_id: Vec<Option<String>>,
    profile_name: Vec<Option<String>>,
    phone: Vec<Option<String>>,
    asks_review: Vec<bool>,
    message_id: Vec<Uuid>,
    conversation_id: Vec<Uuid>,
    new_contact_id: Vec<Uuid>,
    job_id: Vec<Uuid>,
    job_payload: Vec<Value>,
    job_key: Vec<String>,
}

impl Columns {
    fn push(&mut self, ord: usize, msg: &Inbound<'_>) {
        let (known, wa_id, profile_name) = match &msg.from {
            Sender::Contact(id) => (Some(*id), None, None),
            Sender::WhatsApp {
                wa_id,
                profile_name,
            } => (
                None,
                Some(*wa_id),
                profile_name.map(|n| n.chars().take(200).collect::<String>()),
            ),
        };
        let message_id = Uuid::now_v7();
        let run = agent_run(message_id);
        self.ord.push(ord as i32);
        self.inbox_id.push(msg.inbox_id);
        self.known_id.push(known);
        self.wamid.push(msg.provider_message_id.map(str::to_string));
        self.content_type.push(msg.content_type.to_string());
        self.body.push(msg.body.to_string());
        self.attachments.push(msg.attachments.clone());
        self.provider_ts.push(msg.provider_timestamp);
        self.language
            .push(crate::guardrails::language::detect(msg.body).map(|l| l.code().to_string()));
        self.phone.push(
            wa_id
                .and_then(crate::crm::contacts::E164::from_whatsapp_id)
                .map(|p| p.as_str().to_string()),
        );
        self.wa_id.push(wa_id.map(str::to_string));
        self.profile_name.push(profile_name);
        // AGT-7: a customer may ask for a person to review a decision whoever handles the
        // conversation; on one that people handle, only such a message gets a run (which opens
        // the review item and calls no model). One pack's phrases: cheap enough for every
        // message.
        self.asks_review
            .push(crate::guardrails::asks_for_human_review(msg.body));
        self.message_id.push(message_id);
        self.conversation_id.push(Uuid::now_v7());
        self.new_contact_id.push(Uuid::now_v7());
        self.job_id.push(Uuid::now_v7());
        self.job_payload.push(run.payload);
        self.job_key.push(run.idempotency_key);
    }
}

/// What the ingest statement did with one message.
struct Row {
    ord: i32,
    seen: bool,
    contact_id: Option<Uuid>,
    contact_created: bool,
    contact_named: bool,
    conversation_id: Option<Uuid>,
    /// The message opened this conversation (none was open for the contact in that inbox).
    conversation_created: bool,
    /// Who answers the conversation: the AI or people.
    handler: Option<String>,
    language: Option<String>,
    message_id: Option<Uuid>,
    run_queued: bool,
}

/// Stores inbound messages on the caller's tenant transaction, in order, and says for each
/// whether it was new. For each message: finds (or, for a new WhatsApp number, creates) the
/// contact, joins the contact's open conversation in that inbox (opening one if none), wakes a
/// snoozed or pending one, starts WhatsApp's 24-hour service window at the time the customer
/// wrote (the provider's timestamp, never later than now), enqueues the agent's run when the AI
/// handles the conversation (or when the message asks for human review, AGT-7), and announces
/// the message at commit.
///
/// One statement stores a whole round of messages: under load a webhook writer stores many
/// deliveries in one transaction, and the database's fixed cost per statement (setting up the
/// executor, its constraint and trigger state) then counts once per round instead of once per
/// message. A round holds at most one message per sender, so no conversation is upserted twice
/// in one statement; a sender's next message goes in the next round, in order.
pub async fn ingest_many(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    msgs: &[Inbound<'_>],
) -> Result<Vec<Ingested>> {
    let mut outcome = vec![Ingested::Duplicate; msgs.len()];
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut seen_in_round: Vec<(Option<Uuid>, Option<&str>, usize)> = Vec::new();
    for (i, msg) in msgs.iter().enumerate() {
        let (known, wa) = sender_key(msg);
        let round = match seen_in_round
            .iter_mut()
            .find(|(k, w, _)| (*k, *w) == (known, wa))
        {
            Some(entry) => {
                entry.2 += 1;
                entry.2
            }
            None => {
                seen_in_round.push((known, wa, 0));
                0
            }
        };
        if rounds.len() <= round {
            rounds.push(Vec::new());
        }
        rounds[round].push(i);
    }
    let mut queued = false;
    for round in rounds {
        let mut pending = round;
        let mut attempts = 0;
        // A concurrent first message from the same number makes the contact insert a no-op this
        // statement cannot see: that message is then left alone, and the second attempt, with a
        // new snapshot, finds that contact.
        while !pending.is_empty() {
            attempts += 1;
            let mut cols = Columns::default();
            for &i in &pending {
                cols.push(i, &msgs[i]);
            }
            let rows = store_round(conn, tenant_id, &cols).await?;
            let mut retry = Vec::new();
            for row in rows {
                let i = row.ord as usize;
                let msg = &msgs[i];
                if !row.seen && row.contact_id.is_none() {
                    if matches!(msg.from, Sender::Contact(_)) {
                        return Err(Error::Internal(anyhow::anyhow!(
                            "the sender's contact does not exist"
                        )));
                    }
                    if attempts >= 2 {
                        return Err(Error::Internal(anyhow::anyhow!(
                            "contact for a WhatsApp id neither found nor created"
                        )));
                    }
                    retry.push(i);
                    continue;
                }
                queued |= row.run_queued;
                outcome[i] = settle(conn, tenant_id, msg, &row).await?;
            }
            pending = retry;
        }
    }
    if queued {
        events::notify(conn, crate::queue::JOBS_CHANNEL, String::new()).await?;
    }
    Ok(outcome)
}

/// Skips a redelivery before it touches anything (a replayed old message must not reopen the
/// conversation or move the service window). Finds each contact without writing a new row
/// version (nearly every message comes from a known one), fills in a name it lacks, creates it
/// on first contact. Joins or opens its conversation, stores the message (a concurrent
/// redelivery loses on the unique index) and, when the AI handles the conversation, enqueues
/// the agent's run for it. Every lookup is by key (a `LATERAL … LIMIT 1`, or `= ANY` of the
/// keys), so no plan can join the batch against a scan of the tenant's rows.
async fn store_round(conn: &mut PgConnection, tenant_id: Uuid, c: &Columns) -> Result<Vec<Row>> {
    let job = agent_run(Uuid::nil());
    let rows = sqlx::query!(
        r#"WITH input AS (
               SELECT * FROM unnest($2::int[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
                                    $8::jsonb[], $9::timestamptz[], $10::text[], $11::text[], $12::text[],
                                    $13::text[], $14::bool[], $15::uuid[], $16::uuid[], $17::uuid[],
                                    $18::uuid[], $19::jsonb[], $20::text[])
                   AS t(ord, inbox_id, known_id, wamid, content_type, body, attachments, provider_ts,
                        language, wa_id, profile_name, phone, asks_review, message_id, conversation_id,
                        new_contact_id, job_id, job_payload, job_key)
           ),
           facts AS (
               SELECT i.*, s.hit IS NOT NULL AS seen,
                      coalesce(k.id, w.id) AS found_id, coalesce(k.name, w.name) AS found_name
               FROM input i
               LEFT JOIN LATERAL (
                   SELECT 1 AS hit FROM message
                   WHERE i.wamid IS NOT NULL AND tenant_id = $1 AND inbox_id = i.inbox_id
                     AND provider_message_id = i.wamid
                   LIMIT 1) s ON true
               LEFT JOIN LATERAL (
                   SELECT id, name FROM contact
                   WHERE i.known_id IS NOT NULL AND tenant_id = $1 AND id = i.known_id
                   LIMIT 1) k ON true
               LEFT JOIN LATERAL (
                   SELECT id, name FROM contact
                   WHERE i.wa_id IS NOT NULL AND tenant_id = $1 AND whatsapp_id = i.wa_id
                   LIMIT 1) w ON true
           ),
           named AS (
               UPDATE contact
               SET name = (SELECT f.profile_name FROM facts f WHERE f.found_id = contact.id LIMIT 1),
                   updated_at = now()
               WHERE contact.tenant_id = $1 AND contact.id = ANY (ARRAY (
                   SELECT f.found_id FROM facts f
                   WHERE NOT f.seen AND f.found_name IS NULL AND f.profile_name IS NOT NULL))
               RETURNING contact.id
           ),
           created AS (
               INSERT INTO contact (id, tenant_id, name, phone, whatsapp_id)
               SELECT f.new_contact_id, $1, f.profile_name, f.phone, f.wa_id FROM facts f
               WHERE f.wa_id IS NOT NULL AND f.found_id IS NULL AND NOT f.seen
               ON CONFLICT (tenant_id, whatsapp_id) WHERE whatsapp_id IS NOT NULL DO NOTHING
               RETURNING id
           ),
           who AS (
               SELECT f.*, coalesce(f.found_id, c.id) AS contact_id, c.id IS NOT NULL AS created
               FROM facts f LEFT JOIN created c ON c.id = f.new_contact_id
               WHERE NOT f.seen
           ),
           conv AS (
               INSERT INTO conversation (id, tenant_id, inbox_id, contact_id, last_message_at, last_inbound_at, language)
               SELECT w.conversation_id, $1, w.inbox_id, w.contact_id, now(),
                      least(coalesce(CASE WHEN w.provider_ts > now() - make_interval(secs => $23)
                                          THEN w.provider_ts END, now()), now()),
                      w.language
               FROM who w WHERE w.contact_id IS NOT NULL
               ON CONFLICT (inbox_id, contact_id) WHERE status <> 'resolved'
               DO UPDATE SET last_message_at = now(), updated_at = now(),
                             last_inbound_at = greatest(conversation.last_inbound_at, EXCLUDED.last_inbound_at),
                             language = CASE WHEN conversation.language_set_by_member THEN conversation.language
                                             ELSE coalesce(EXCLUDED.language, conversation.language) END,
                             status = CASE WHEN conversation.status IN ('snoozed', 'pending') THEN 'open'
                                           ELSE conversation.status END,
                             snoozed_until = NULL
               RETURNING id, inbox_id, contact_id, handler, language, (xmax = 0) AS created
           ),
           joined AS (
               SELECT w.*, cv.id AS conv_id, cv.handler, cv.language AS conv_language,
                      cv.created AS conv_created FROM who w
               JOIN conv cv ON cv.inbox_id = w.inbox_id AND cv.contact_id = w.contact_id
           ),
           msg AS (
               INSERT INTO message (id, tenant_id, conversation_id, inbox_id, direction, author_kind,
                                    content_type, body, attachments, provider_message_id, provider_timestamp)
               SELECT j.message_id, $1, j.conv_id, j.inbox_id, 'inbound', 'customer', j.content_type, j.body,
                      j.attachments, j.wamid, j.provider_ts
               FROM joined j
               ON CONFLICT (tenant_id, inbox_id, provider_message_id) WHERE provider_message_id IS NOT NULL
               DO NOTHING
               RETURNING id
           ),
           run AS (
               INSERT INTO job (id, tenant_id, kind, payload, idempotency_key, max_attempts)
               SELECT j.job_id, $1, $21, j.job_payload, j.job_key, $22
               FROM joined j JOIN msg m ON m.id = j.message_id
               WHERE j.handler = 'ai' OR j.asks_review
               ON CONFLICT (idempotency_key) DO NOTHING
               RETURNING id
           )
           SELECT f.ord AS "ord!", f.seen AS "seen!", w.contact_id AS "contact_id?",
                  coalesce(w.created, false) AS "contact_created!",
                  EXISTS (SELECT 1 FROM named n WHERE n.id = w.contact_id) AS "contact_named!",
                  j.conv_id AS "conversation_id?", coalesce(j.conv_created, false) AS "conversation_created!",
                  j.handler AS "handler?", j.conv_language AS "conversation_language?",
                  m.id AS "message_id?",
                  r.id IS NOT NULL AS "run_queued!"
           FROM facts f
           LEFT JOIN who w ON w.ord = f.ord
           LEFT JOIN joined j ON j.ord = f.ord
           LEFT JOIN msg m ON m.id = j.message_id
           LEFT JOIN run r ON r.id = j.job_id
           ORDER BY f.ord"#,
        tenant_id,
        &c.ord,
        &c.inbox_id,
        &c.known_id as &[Option<Uuid>],
        &c.wamid as &[Option<String>],
        &c.content_type,
        &c.body,
        &c.attachments,
        &c.provider_ts as &[Option<OffsetDateTime>],
        &c.language as &[Option<String>],
        &c.wa_id as &[Option<String>],
        &c.profile_name as &[Option<String>],
        &c.phone as &[Option<String>],
        &c.asks_review,
        &c.message_id,
        &c.conversation_id,
        &c.new_contact_id,
        &c.job_id,
        &c.job_payload,
        &c.job_key,
        job.kind,
        job.max_attempts,
        PROVIDER_TIME_HORIZON.as_seconds_f64()
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Row {
            ord: r.ord,
            seen: r.seen,
            contact_id: r.contact_id,
            contact_created: r.contact_created,
            contact_named: r.contact_named,
            conversation_id: r.conversation_id,
            conversation_created: r.conversation_created,
            handler: r.handler,
            language: r.conversation_language,
            message_id: r.message_id,
            run_queued: r.run_queued,
        })
        .collect())
}

/// Audits a contact the message created or named, and announces a new message at commit.
async fn settle(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    msg: &Inbound<'_>,
    row: &Row,
) -> Result<Ingested> {
    if row.seen {
        return Ok(Ingested::Duplicate);
    }
    let (wa_id, profile_name) = match &msg.from {
        Sender::WhatsApp {
            wa_id,
            profile_name,
        } => (
            Some(*wa_id),
            profile_name.map(|n| n.chars().take(200).collect::<String>()),
        ),
        Sender::Contact(_) => (None, None),
    };
    if let (true, Some(contact_id), Some(wa_id)) = (row.contact_created, row.contact_id, wa_id) {
        let phone = crate::crm::contacts::E164::from_whatsapp_id(wa_id);
        audit::record(
            &mut *conn,
            &crate::crm::contacts::channel_source(tenant_id, msg.inbox_id),
            AuditEvent::new("contact.created", "contact", contact_id).after(
                crate::crm::contacts::channel_contact(
                    contact_id,
                    profile_name.as_deref(),
                    phone.as_ref().map(|p| p.as_str()),
                    Some(wa_id),
                    None,
                    &json!({}),
                ),
            ),
        )
        .await?;
    }
    if let (true, Some(contact_id)) = (row.contact_named, row.contact_id) {
        // The profile name filled in a name the contact lacked: a change like any other.
        audit::record(
            &mut *conn,
            &crate::crm::contacts::channel_source(tenant_id, msg.inbox_id),
            AuditEvent::new("contact.updated", "contact", contact_id)
                .before(json!({ "name": null }))
                .after(json!({ "name": profile_name })),
        )
        .await?;
    }
    if let (true, Some(conversation_id)) = (row.conversation_created, row.conversation_id) {
        // The customer's message opened it: tenant data the channel created, on record like a
        // member's change (AUD-1). Waking a snoozed or pending one is not on record yet: reading
        // its status before the upsert, one lookup per message, cost the ingest a third more
        // database time (BENCHMARKS.md, "AUD-1").
        audit::record(
            &mut *conn,
            &crate::crm::contacts::channel_source(tenant_id, msg.inbox_id),
            AuditEvent::new("conversation.created", "conversation", conversation_id).after(json!({
                "id": conversation_id,
                "inbox_id": msg.inbox_id,
                "contact_id": row.contact_id,
                "status": "open",
                "handler": row.handler,
                "language": row.language,
            })),
        )
        .await?;
    }
    let (Some(conversation_id), Some(message_id)) = (row.conversation_id, row.message_id) else {
        // A concurrent redelivery won the race.
        return Ok(Ingested::Duplicate);
    };
    events::publish(
        conn,
        &Event {
            tenant_id,
            kind: "message.created".into(),
            conversation_id: Some(conversation_id),
            message_id: Some(message_id),
            data: json!({ "direction": "inbound", "contact_id": row.contact_id, "inbox_id": msg.inbox_id }),
        },
    )
    .await?;
    Ok(Ingested::New {
        conversation_id,
        message_id,
    })
}

/// The language to write to the customer in: the conversation's, else English.
pub async fn language(conn: &mut PgConnection, conversation_id: Uuid) -> Result<Lang> {
    let code = sqlx::query_scalar!(
        "SELECT language FROM conversation WHERE id = $1 AND tenant_id = current_tenant_id()",
        conversation_id
    )
    .fetch_optional(conn)
    .await?
    .flatten();
    Ok(Lang::from_stored(code.as_deref()))
}

/// Who writes an outbound message that is not a member's reply from the inbox.
#[derive(Debug, Clone, Copy)]
pub enum Author {
    Ai,
    System,
    Member(Uuid),
}

impl Author {
    /// The `author_kind` and `author_id` a message stores.
    fn columns(self) -> (&'static str, Option<Uuid>) {
        match self {
            Author::Ai => ("ai", None),
            Author::System => ("system", None),
            Author::Member(id) => ("member", Some(id)),
        }
    }
}

/// Adds a private note for the members to a conversation of the caller's tenant, on the
/// caller's transaction; returns its id. The caller audits it in its own terms.
pub async fn add_note(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    conversation_id: Uuid,
    author: Author,
    text: &str,
) -> Result<Uuid> {
    let (author_kind, author_id) = author.columns();
    let id = Uuid::now_v7();
    let added = sqlx::query!(
        "INSERT INTO message (id, tenant_id, conversation_id, inbox_id, direction, author_kind, author_id,
                              content_type, body, private)
         SELECT $1, $2, c.id, c.inbox_id, 'outbound', $4, $5, 'note', $6, true
         FROM conversation c WHERE c.id = $3 AND c.tenant_id = current_tenant_id()",
        id,
        tenant_id,
        conversation_id,
        author_kind,
        author_id,
        text
    )
    .execute(&mut *conn)
    .await?;
    if added.rows_affected() == 0 {
        return Err(Error::NotFound);
    }
    Ok(id)
}

/// Gives the conversation to the humans, with a private note saying why (and the AI's draft
/// when there is one), on the caller's transaction: audited as the agent's doing, announced
/// live. The agent calls it when it stops short of an answer; so does an approved action that
/// failed.
pub async fn hand_to_humans(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    conversation_id: Uuid,
    reason: &str,
    suggestion: Option<&str>,
) -> Result<()> {
    sqlx::query!(
        "UPDATE conversation SET handler = 'human', status = CASE WHEN status = 'resolved' THEN status ELSE 'open' END,
                updated_at = now()
         WHERE id = $1",
        conversation_id
    )
    .execute(&mut *conn)
    .await?;
    let (note, author) = match suggestion {
        Some(draft) => (
            format!("Handed to a human ({reason}). The AI's draft, not sent:\n\n{draft}"),
            Author::Ai,
        ),
        None => (format!("Handed to a human ({reason})."), Author::System),
    };
    add_note(conn, tenant_id, conversation_id, author, &note).await?;
    audit::record(
        conn,
        &audit::AuditSource {
            tenant_id,
            actor_type: "agent",
            actor_id: None,
            meta: Default::default(),
        },
        AuditEvent::new("conversation.handed_off", "conversation", conversation_id)
            .after(json!({ "handler": "human", "reason": reason })),
    )
    .await?;
    events::publish(
        conn,
        &Event {
            tenant_id,
            kind: "conversation.updated".into(),
            conversation_id: Some(conversation_id),
            message_id: None,
            data: json!({ "action": "conversation.handed_off", "handler": "human", "reason": reason }),
        },
    )
    .await?;
    Ok(())
}

/// Stores the conversation's PII vault (sealed by the agent) on the caller's transaction.
pub async fn store_vault(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    conversation_id: Uuid,
    sealed: &[u8],
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO conversation_vault (conversation_id, tenant_id, sealed) VALUES ($1, $2, $3)
             ON CONFLICT (conversation_id) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = now()",
        conversation_id,
        tenant_id,
        sealed
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores a message to the customer on the caller's tenant transaction, queues its delivery
/// (web chat visitors receive it over their live stream instead) and announces it.
pub async fn post_outbound(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    conversation_id: Uuid,
    author: Author,
    text: &str,
) -> Result<Uuid> {
    let (author_kind, author_id) = author.columns();
    let id = Uuid::now_v7();
    // One round trip: the conversation's channel decides the status (web chat is delivered by
    // the live stream at once, other channels by a send job), and the conversation is touched.
    let row = sqlx::query!(
        r#"WITH c AS (SELECT c.id, c.inbox_id, c.contact_id, i.channel
                      FROM conversation c JOIN inbox i ON i.id = c.inbox_id
                      WHERE c.id = $3 AND c.tenant_id = current_tenant_id()),
                m AS (INSERT INTO message (id, tenant_id, conversation_id, inbox_id, direction, author_kind,
                                           author_id, content_type, body, delivery_status, sent_at)
                      SELECT $1, $2, c.id, c.inbox_id, 'outbound', $4, $5, 'text', $6,
                             CASE WHEN c.channel = 'webchat' THEN 'sent' ELSE 'queued' END,
                             CASE WHEN c.channel = 'webchat' THEN now() END
                      FROM c
                      RETURNING delivery_status),
                touched AS (UPDATE conversation SET last_message_at = now(), updated_at = now()
                            WHERE id IN (SELECT id FROM c))
           SELECT m.delivery_status AS "delivery_status!", c.contact_id AS "contact_id!",
                  c.inbox_id AS "inbox_id!"
           FROM m CROSS JOIN c"#,
        id,
        tenant_id,
        conversation_id,
        author_kind,
        author_id,
        text
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound)?;
    let status = row.delivery_status;
    if status == "queued" {
        crate::queue::enqueue(
            conn,
            tenant_id,
            crate::queue::NewJob::new(
                SEND_MESSAGE,
                format!("send:{id}"),
                json!({ "message_id": id }),
            ),
        )
        .await?;
    }
    events::publish(
        conn,
        &Event {
            tenant_id,
            kind: "message.created".into(),
            conversation_id: Some(conversation_id),
            message_id: Some(id),
            // Who the message is for, so a visitor's stream passes over everyone else's
            // replies without a lookup.
            data: json!({ "direction": "outbound", "private": false, "author_kind": author_kind,
                          "contact_id": row.contact_id, "inbox_id": row.inbox_id }),
        },
    )
    .await?;
    Ok(id)
}

/// Housekeeping: reopens snoozed conversations whose time has come, each in its tenant's own
/// transaction, audited as the platform's doing, announced live. (A customer's message wakes
/// one sooner: see [`ingest`].) Returns how many woke.
pub async fn wake_snoozed(db: &Db) -> Result<usize> {
    let due = sqlx::query!(
        "SELECT id, tenant_id FROM conversation WHERE status = 'snoozed' AND snoozed_until <= now()
         ORDER BY snoozed_until LIMIT 500"
    )
    .fetch_all(&db.system)
    .await?;
    let mut woken = 0;
    for row in due {
        match wake(db, row.tenant_id, row.id).await {
            Ok(true) => woken += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(conversation_id = %row.id, error = %e, "waking a snoozed conversation failed")
            }
        }
    }
    Ok(woken)
}

async fn wake(db: &Db, tenant_id: Uuid, id: Uuid) -> Result<bool> {
    let mut tx = db.tenant_tx(tenant_id).await?;
    // Locked, and still due: a customer's message or a member may have woken it meanwhile.
    let due = sqlx::query_scalar!(
        "SELECT id FROM conversation WHERE id = $1 AND status = 'snoozed' AND snoozed_until <= now()
         FOR UPDATE",
        id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if due.is_none() {
        tx.commit().await?;
        return Ok(false);
    }
    let before = fetch(&mut tx, id).await?;
    sqlx::query!(
        "UPDATE conversation SET status = 'open', snoozed_until = NULL, updated_at = now() WHERE id = $1",
        id
    )
    .execute(&mut *tx)
    .await?;
    let after = fetch(&mut tx, id).await?;
    audit::record(
        &mut tx,
        &audit::AuditSource::system(tenant_id),
        AuditEvent::new("conversation.woken", "conversation", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    events::publish(
        &mut tx,
        &Event {
            tenant_id,
            kind: "conversation.updated".into(),
            conversation_id: Some(id),
            message_id: None,
            data: json!({ "action": "conversation.woken", "status": after.status,
                          "handler": after.handler, "assignee_id": after.assignee_id }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Resolves a conversation of the transaction's tenant on behalf of `source` (the demo seed;
/// members go through the inbox API, audited as themselves), audited with before and after and
/// announced live.
pub async fn resolve(
    conn: &mut PgConnection,
    source: &audit::AuditSource,
    id: Uuid,
) -> Result<ConversationView> {
    let before = fetch(conn, id).await?;
    sqlx::query!(
        "UPDATE conversation SET status = 'resolved', snoozed_until = NULL, updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .execute(&mut *conn)
    .await?;
    let after = fetch(conn, id).await?;
    audit::record(
        conn,
        source,
        AuditEvent::new("conversation.status_changed", "conversation", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    events::publish(
        conn,
        &Event {
            tenant_id: source.tenant_id,
            kind: "conversation.updated".into(),
            conversation_id: Some(id),
            message_id: None,
            data: json!({ "action": "conversation.status_changed", "status": after.status,
                          "handler": after.handler, "assignee_id": after.assignee_id }),
        },
    )
    .await?;
    Ok(after)
}

/// Gives every open conversation of a contact that the AI handles to the members, on the
/// caller's transaction (audited as the caller, announced live); returns their ids. Restricting
/// a contact's processing (DSR-4) does this, so no AI answers them from then on.
pub async fn hand_contact_to_humans(
    conn: &mut PgConnection,
    source: &audit::AuditSource,
    contact_id: Uuid,
    reason: &str,
) -> Result<Vec<Uuid>> {
    let handed_over = sqlx::query_scalar!(
        "UPDATE conversation SET handler = 'human', updated_at = now()
             WHERE tenant_id = current_tenant_id() AND contact_id = $1 AND handler = 'ai'
               AND status <> 'resolved'
             RETURNING id",
        contact_id
    )
    .fetch_all(&mut *conn)
    .await?;
    for &conversation_id in &handed_over {
        audit::record(
            &mut *conn,
            source,
            AuditEvent::new("conversation.taken_over", "conversation", conversation_id)
                .before(json!({ "handler": "ai" }))
                .after(json!({ "handler": "human", "reason": reason })),
        )
        .await?;
        events::publish(
            &mut *conn,
            &Event {
                tenant_id: source.tenant_id,
                kind: "conversation.updated".into(),
                conversation_id: Some(conversation_id),
                message_id: None,
                data: json!({ "action": "conversation.taken_over", "handler": "human",
                              "reason": reason }),
            },
        )
        .await?;
    }
    Ok(handed_over)
}

/// A contact's conversations, every column as stored, oldest first: for their export (DSR-1).
pub async fn export_conversations(conn: &mut PgConnection, contact_id: Uuid) -> Result<Vec<Value>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT to_jsonb(c) AS "row!" FROM conversation c
           WHERE contact_id = $1 AND tenant_id = current_tenant_id() ORDER BY created_at, id"#,
        contact_id
    )
    .fetch_all(conn)
    .await?)
}

/// The messages of these conversations, private notes included, in order: for the export of
/// the contact they belong to (DSR-1).
pub async fn export_messages(
    conn: &mut PgConnection,
    conversation_ids: &[Uuid],
) -> Result<Vec<Value>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT to_jsonb(m) AS "row!" FROM message m
           WHERE conversation_id = ANY($1) AND tenant_id = current_tenant_id()
           ORDER BY conversation_id, created_at, id"#,
        conversation_ids
    )
    .fetch_all(conn)
    .await?)
}

/// The sealed PII vaults of these conversations (the agent opens them).
pub async fn sealed_vaults(
    conn: &mut PgConnection,
    conversation_ids: &[Uuid],
) -> Result<Vec<(Uuid, Vec<u8>)>> {
    let rows = sqlx::query!(
        "SELECT conversation_id, sealed FROM conversation_vault
         WHERE conversation_id = ANY($1) AND tenant_id = current_tenant_id()",
        conversation_ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.conversation_id, r.sealed))
        .collect())
}
