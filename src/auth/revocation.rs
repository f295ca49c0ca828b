//! Ending what a revoked credential still holds open. A request is authenticated once, when it
//! starts; a live stream goes on for long after, so it keeps the credential that opened it and
//! checks it again whenever one of its member's credentials is revoked (announced on the event
//! bus, so every process hears it) and every so often in case that announcement was missed.

use axum::http::{header, HeaderMap};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::guard::{authenticate, Credential, Ctx};
use super::AuthState;
use crate::error::Result;
use crate::events::{self, Event};
use crate::http::RequestMeta;
use crate::rbac::Permission;

/// The bus event announcing that credentials of a member were revoked, or the member changed.
pub const REVOKED: &str = events::CREDENTIALS_REVOKED;

/// Announces at commit that credentials of `member_id` may no longer hold: that member's open
/// streams, in every process, check theirs again.
pub async fn announce(conn: &mut PgConnection, tenant_id: Uuid, member_id: Uuid) -> Result<()> {
    events::publish(
        conn,
        &Event {
            tenant_id,
            kind: REVOKED.into(),
            conversation_id: None,
            message_id: None,
            data: json!({ "member_id": member_id }),
        },
    )
    .await?;
    Ok(())
}

/// The credential of a long-lived request, kept to be checked again while it lasts.
pub struct Held {
    state: AuthState,
    tenant_id: Uuid,
    member_id: Uuid,
    credential: Credential,
    permission: Permission,
    /// Only the headers that carry the credential.
    headers: HeaderMap,
}

impl Held {
    /// `permission` is what the request needed: a member who lost it loses the stream too.
    pub fn new(state: &AuthState, ctx: &Ctx, headers: &HeaderMap, permission: Permission) -> Held {
        let mut kept = HeaderMap::new();
        for name in [header::AUTHORIZATION, header::COOKIE] {
            for value in headers.get_all(&name) {
                kept.append(name.clone(), value.clone());
            }
        }
        Held {
            state: state.clone(),
            tenant_id: ctx.tenant_id,
            member_id: ctx.member_id,
            credential: ctx.credential,
            permission,
            headers: kept,
        }
    }
}

impl events::Revocable for Held {
    /// Whether `event` announces a revocation that may concern this credential.
    fn concerns(&self, event: &Event) -> bool {
        event.kind == REVOKED
            && event.tenant_id == self.tenant_id
            && event
                .data
                .get("member_id")
                .and_then(Value::as_str)
                .and_then(|id| Uuid::parse_str(id).ok())
                == Some(self.member_id)
    }

    /// Whether the credential still lets its holder do what the request did, by the very
    /// lookup that let the request in. If the lookup fails the answer is no: the client
    /// reconnects and is authenticated afresh.
    fn holds(&self) -> futures_util::future::BoxFuture<'_, bool> {
        Box::pin(self.check())
    }
}

impl Held {
    async fn check(&self) -> bool {
        match authenticate(&self.state, &self.headers, RequestMeta::default()).await {
            Ok(Some(ctx)) => ctx.credential == self.credential && ctx.role.can(self.permission),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "checking a stream's credential failed; ending the stream");
                false
            }
        }
    }
}
