//! The customer-success team's work objects: tickets (with comments, linked conversations and
//! SLA targets) and tasks. A domain of its own, ranked after conversations and channels and
//! before the agent: a public comment goes to the customer through the conversation's send
//! path, and the agent's `create_ticket` tool opens tickets through here. Both tables carry
//! `account_id` and `created_at` so an account's timeline can read them by account.
//!
//! A partner member (SEC-2) reads only the tickets and tasks marked shared of the accounts
//! shared with its organisation: the queries say so, and a row-level policy (migration 0033)
//! backs them in every transaction [`begin`] opens for a partner.

pub mod erasure;
pub mod tasks;
pub mod tickets;
pub mod timeline;

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::db::{Db, Tx};
use crate::error::{Error, Result};
use crate::http::Ctx;
use crate::rbac::Role;

/// The partner organisation whose view the caller is limited to, if the caller is a partner.
pub fn partner_scope(ctx: &Ctx) -> Result<Option<Uuid>> {
    if ctx.role != Role::Partner {
        return Ok(None);
    }
    ctx.partner_org_id
        .map(Some)
        .ok_or(Error::Forbidden("a partner without a partner organisation"))
}

/// A transaction pinned to the caller's tenant and, for a partner, to its organisation, so
/// the `partner_shared` policies hide everything not shared with it.
pub async fn begin(db: &impl AsRef<Db>, ctx: &Ctx) -> Result<Tx> {
    match partner_scope(ctx)? {
        None => ctx.begin(db).await,
        // Both values are UUIDs, which print as hex digits and dashes only.
        Some(org) => Ok(db
            .as_ref()
            .app
            .begin_with(AssertSqlSafe(format!(
                "BEGIN; SELECT set_config('app.tenant_id', '{}', true), \
                 set_config('app.partner_org_id', '{org}', true)",
                ctx.tenant_id
            )))
            .await?),
    }
}

/// A required one-line text: trimmed, 1 to `max` characters, no control characters.
pub(crate) fn one_line(field: &str, value: &str, max: usize) -> Result<String> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(Error::bad_request(
            "invalid_text",
            format!("{field} must be one line of 1 to {max} characters"),
        ));
    }
    Ok(value.to_string())
}

/// A free text of at most `max` characters (line breaks kept, `\r\n` made `\n`).
pub(crate) fn long_text(field: &str, value: &str, max: usize) -> Result<String> {
    let value = value.replace("\r\n", "\n").trim().to_string();
    if value.chars().count() > max {
        return Err(Error::bad_request(
            "invalid_text",
            format!("{field} is limited to {max} characters"),
        ));
    }
    Ok(value)
}
