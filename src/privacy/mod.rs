//! Data-subject rights that reach across domains. Restricting a contact's processing (DSR-4)
//! marks the contact (crm) and hands their AI conversations to people (conversations): the
//! privacy domain stands above both and asks each to do its part, in one transaction.
//! Data-subject requests (DSR-6) are tracked in [`requests`], consents (DSR-5) in [`consent`],
//! and a person's export (DSR-1, DSR-7) is written in [`export`].

pub mod closure;
pub mod consent;
pub mod erasure;
pub mod export;
pub mod requests;

use axum::extract::{FromRef, State};
use axum::http::Method;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::crm::contacts::{self, ContactView};
use crate::db::Db;
use crate::error::Result;
use crate::http::{Access, Api, Contract, Ctx, Json, Path};
use crate::rbac::Permission;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
    erasure::ReceiptKey: FromRef<S>,
{
    use Access::*;
    closure::routes(erasure::routes(export::routes(consent::routes(
        requests::routes(api),
    ))))
    .endpoint(
        Method::POST,
        "/api/v1/contacts/{contact_id}/restrict",
        Requires(Permission::DataSubjectRights),
        (
            "crm",
            "Restrict processing (DSR-4): the AI no longer handles this contact's messages",
        ),
        Contract::new().ok::<ContactView>(),
        restrict,
    )
    .endpoint(
        Method::POST,
        "/api/v1/contacts/{contact_id}/unrestrict",
        Requires(Permission::DataSubjectRights),
        ("crm", "Lift a restriction of processing (DSR-4)"),
        Contract::new().ok::<ContactView>(),
        unrestrict,
    )
}

async fn restrict(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<ContactView>> {
    set_restricted(&db, &ctx, id, true).await.map(Json)
}

async fn unrestrict(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<ContactView>> {
    set_restricted(&db, &ctx, id, false).await.map(Json)
}

/// DSR-4. Restricting also gives the contact's open conversations that the AI handles to the
/// members at once (the agent runtime refuses a restricted contact's messages in any case);
/// lifting it hands nothing back: a member decides that per conversation.
pub async fn set_restricted(db: &Db, ctx: &Ctx, id: Uuid, restricted: bool) -> Result<ContactView> {
    let mut tx = ctx.begin(db).await?;
    let after = restrict_on(&mut tx, ctx, id, restricted, "restricted_contact").await?;
    tx.commit().await?;
    Ok(after)
}

/// [`set_restricted`] on the caller's transaction; `reason` says why the AI conversations were
/// handed over (a restriction, a revoked consent).
pub(crate) async fn restrict_on(
    tx: &mut sqlx::PgConnection,
    ctx: &Ctx,
    id: Uuid,
    restricted: bool,
    reason: &str,
) -> Result<ContactView> {
    let (before, after) = contacts::set_restricted(&mut *tx, id, restricted).await?;
    let action = if restricted {
        "contact.restricted"
    } else {
        "contact.unrestricted"
    };
    ctx.audit(
        &mut *tx,
        AuditEvent::new(action, "contact", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    if restricted {
        crate::conversations::hand_contact_to_humans(&mut *tx, &ctx.audit_source(), id, reason)
            .await?;
    }
    Ok(after)
}
