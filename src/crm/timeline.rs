//! One account's history, in time order: what each domain that holds something about the
//! account contributes (conversations, tickets, tasks, deals; survey answers and health changes
//! when they land) as [`Event`]s, merged by `cs::timeline`. The event and its cursor live here,
//! with the accounts, so every domain above can produce them without knowing the others.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Something that happened to or around an account.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = TimelineEvent)]
pub struct Event {
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happened: `conversation.opened`, `conversation.resolved`, `ticket.opened`,
    /// `ticket.solved`, `task.created`, `task.completed`, `deal.opened`, `deal.moved`,
    /// `deal.won`, `deal.lost`, and more as features land.
    pub kind: String,
    /// The object it is about: `conversation`, `ticket`, `task`, `deal`…
    pub entity_type: String,
    pub entity_id: Uuid,
    /// One line for people: the subject, title or the contact's name.
    pub title: String,
    /// The object's status now (an opened ticket may be solved since).
    #[schema(required = true)]
    pub status: Option<String>,
    /// The person it concerns, when one does.
    #[schema(required = true)]
    pub contact_id: Option<Uuid>,
}

impl Event {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            at: self.at,
            entity_id: self.entity_id,
            kind: self.kind.clone(),
        }
    }
}

/// A position in a timeline: events are ordered newest first by time, then object, then kind
/// (an object's events at the same instant keep one order), and a page continues strictly
/// after its last event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: OffsetDateTime,
    pub entity_id: Uuid,
    pub kind: String,
}

impl Cursor {
    /// `<microseconds since the epoch>~<object id>~<kind>`: opaque to clients.
    pub fn encode(&self) -> String {
        format!(
            "{}~{}~{}",
            self.at.unix_timestamp_nanos() / 1000,
            self.entity_id,
            self.kind
        )
    }

    pub fn parse(raw: &str) -> Result<Cursor> {
        let invalid = || {
            Error::bad_request(
                "invalid_cursor",
                "after must be a next_cursor this timeline gave",
            )
        };
        let mut parts = raw.splitn(3, '~');
        let (Some(micros), Some(id), Some(kind)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        // As the API document's pattern says (`cs::timeline::TimelineQuery`): 1 to 16 digits
        // (up to the year 2286) always make a time.
        if micros.is_empty() || micros.len() > 16 || !micros.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let micros: i128 = micros.parse().map_err(|_| invalid())?;
        let at = OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).map_err(|_| invalid())?;
        let entity_id = Uuid::parse_str(id).map_err(|_| invalid())?;
        if kind.is_empty()
            || kind.len() > 64
            || !kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
        {
            return Err(invalid());
        }
        Ok(Cursor {
            at,
            entity_id,
            kind: kind.to_string(),
        })
    }

    /// The parts a source's query compares `(at, entity_id, kind) < (…)` with; all `None`
    /// from the start.
    pub fn parts(
        cursor: Option<&Cursor>,
    ) -> (Option<OffsetDateTime>, Option<Uuid>, Option<String>) {
        match cursor {
            Some(c) => (Some(c.at), Some(c.entity_id), Some(c.kind.clone())),
            None => (None, None, None),
        }
    }
}

/// Newest first, as every source sorts: the merge of several sources keeps this order.
pub fn newest_first(a: &Event, b: &Event) -> std::cmp::Ordering {
    (b.at, b.entity_id, &b.kind).cmp(&(a.at, a.entity_id, &a.kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_wrote_to_the_microsecond() {
        let cursor = Cursor {
            at: OffsetDateTime::from_unix_timestamp_nanos(1_765_000_000_123_456_000).unwrap(),
            entity_id: Uuid::now_v7(),
            kind: "ticket.solved".into(),
        };
        assert_eq!(Cursor::parse(&cursor.encode()).unwrap(), cursor);
    }

    #[test]
    fn a_cursor_that_is_not_one_of_ours_is_refused_as_bad_input() {
        for raw in [
            "",
            "x",
            "1~2~3",
            "12~not-a-uuid~ticket.opened",
            "12~01a25316-c935-7655-9f38-1d89045c2034~DROP TABLE",
            "99999999999999999999999999~01a25316-c935-7655-9f38-1d89045c2034~ticket.opened",
        ] {
            let err = Cursor::parse(raw).unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST, "{raw}");
        }
    }
}
