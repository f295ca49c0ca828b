//! The conversations' part of an account's timeline: each conversation of the account's
//! contacts opened, and resolved (its latest resolution).

use sqlx::PgConnection;
use uuid::Uuid;

use crate::crm::timeline::{Cursor, Event};
use crate::error::Result;

/// Up to `limit` events of account `account_id`'s conversations after `after`, newest first.
pub async fn events(
    conn: &mut PgConnection,
    account_id: Uuid,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<Event>> {
    let (at, id, kind) = Cursor::parts(after);
    let rows = sqlx::query!(
        r#"SELECT e.at AS "at!", e.kind AS "kind!", e.id AS "id!", e.contact_id AS "contact_id!",
                  e.contact_name, e.contact_phone, e.channel AS "channel!", e.status AS "status!"
           FROM (
               SELECT c.created_at AS at, 'conversation.opened' AS kind, c.id, c.contact_id,
                      p.name AS contact_name, p.phone AS contact_phone, i.channel, c.status
               FROM conversation c
               JOIN contact p ON p.id = c.contact_id
               JOIN inbox i ON i.id = c.inbox_id
               WHERE c.tenant_id = current_tenant_id() AND p.account_id = $1
               UNION ALL
               SELECT c.resolved_at, 'conversation.resolved', c.id, c.contact_id,
                      p.name, p.phone, i.channel, c.status
               FROM conversation c
               JOIN contact p ON p.id = c.contact_id
               JOIN inbox i ON i.id = c.inbox_id
               WHERE c.tenant_id = current_tenant_id() AND p.account_id = $1
                 AND c.status = 'resolved' AND c.resolved_at IS NOT NULL
           ) e
           WHERE $2::timestamptz IS NULL OR (e.at, e.id, e.kind) < ($2, $3::uuid, $4::text)
           ORDER BY e.at DESC, e.id DESC, e.kind DESC
           LIMIT $5"#,
        account_id,
        at,
        id,
        kind,
        limit
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let who = r
                .contact_name
                .or(r.contact_phone)
                .unwrap_or_else(|| "a visitor".to_string());
            let channel = match r.channel.as_str() {
                "whatsapp" => "WhatsApp",
                "webchat" => "web chat",
                other => other,
            };
            let title = if r.kind == "conversation.opened" {
                format!("Conversation with {who} on {channel}")
            } else {
                format!("Conversation with {who} resolved")
            };
            Event {
                at: r.at,
                kind: r.kind,
                entity_type: "conversation".into(),
                entity_id: r.id,
                title,
                status: Some(r.status),
                contact_id: Some(r.contact_id),
            }
        })
        .collect())
}
