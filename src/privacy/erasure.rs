//! Erasure and anonymisation of one contact (DSR-3): one call, one transaction, every table that
//! holds the person's data, the audit payloads that mention them included, and a completion
//! receipt signed with the server's key that lists what went per data class.
//!
//! *Erase* deletes the person's rows. *Anonymise* keeps the rows the tenant's statistics count
//! (conversations, messages, executions, review items, tickets, consents: their counts, timings
//! and outcomes) with every personal value gone. Either way the audit log keeps the *fact*
//! (`contact.erased` / `contact.anonymised`, and `audit.payloads_erased` naming the rows whose
//! payload went) but not the values, and its chain still verifies (AUD-3).
//!
//! The transaction runs on the owner pool, pinned to the caller's tenant, as the retention purge
//! does: the application role may not delete agent executions, review items or jobs, and audit
//! rows change only through `audit_erase_payloads`. Every statement names the tenant. The
//! permission check, the actor and the request metadata are the caller's, as for any request.
//!
//! A legal hold on the contact or one of their conversations refuses the erasure (409
//! `legal_hold`, naming the hold) before anything changes; the database refuses the deletes too.
//!
//! Repeating an erasure: an erased contact no longer exists and answers 404 like any unknown id
//! (keeping a tombstone to answer otherwise would keep a trace of the person). Anonymising an
//! anonymised contact answers 409 `already_anonymised`: there is nothing left to anonymise, and
//! a second receipt claiming counts of zero would only confuse the record. Erasing an anonymised
//! contact is allowed: it deletes what anonymisation kept.

use std::collections::BTreeMap;

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, AuditEvent, Mentions};
use crate::crypto::{Sealer, Signer};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Ctx, Json, Path};
use crate::rbac::Permission;

/// Every table that holds a contact's data, or a reference to the contact or their
/// conversations, and what an erasure does with it. `tests/it/privacy_erasure.rs` checks this
/// list against the catalog: a new table with a `contact_id` or `conversation_id` column, or a
/// foreign key to `contact` or `conversation`, fails the test until it is added here (and
/// handled below).
pub const TABLES: &[(&str, &str)] = &[
    (
        "contact",
        "erase: deleted; anonymise: identifying fields and attributes cleared, restricted",
    ),
    (
        "conversation",
        "erase: deleted; anonymise: kept (status, timings, labels)",
    ),
    (
        "message",
        "erase: deleted; anonymise: body, attachments, delivery error, provider id cleared",
    ),
    (
        "conversation_vault",
        "deleted in both modes (the real values behind the placeholders)",
    ),
    (
        "conversation_read",
        "erase: deleted with the conversation; anonymise: kept (no personal value)",
    ),
    (
        "webchat_session",
        "deleted in both modes (ties a browser to the person)",
    ),
    (
        "agent_execution",
        "erase: deleted; anonymise: record cleared, outcome and timings kept",
    ),
    (
        "review_item",
        "erase: deleted; anonymise: content cleared as retention does, decision kept, \
         undecided or unexecuted items withdrawn (rejected with the reason)",
    ),
    (
        "review_approval",
        "erase: deleted with the item; anonymise: note cleared",
    ),
    (
        "ticket",
        "erase: deleted; anonymise: subject, description and tags cleared",
    ),
    (
        "ticket_comment",
        "erase: deleted with the ticket; anonymise: body cleared",
    ),
    (
        "ticket_conversation",
        "deleted with the ticket or the conversation; anonymise: kept (ids only)",
    ),
    (
        "task",
        "tasks about the person or their tickets: erase: deleted; anonymise: title and notes cleared",
    ),
    (
        "contact_export",
        "deleted in both modes, with its file (a copy of everything erased)",
    ),
    (
        "consent",
        "erase: deleted; anonymise: free text (text version) cleared, the record kept",
    ),
    (
        "privacy_request",
        "kept as the tenant's proof; the subject's own name as requester cleared",
    ),
    (
        "legal_hold",
        "kept (the legal record); an active hold refuses the erasure",
    ),
    (
        "job",
        "jobs about the messages or conversations deleted in both modes",
    ),
    (
        "audit_event",
        "payloads mentioning the person erased through audit_erase_payloads",
    ),
    (
        "audit_export_chunk",
        "audit log exports written past a row that mentions the person: content deleted, \
         the export record kept as expired",
    ),
];

/// The label of the key that signs receipts, derived from the master key.
const RECEIPT_KEY_LABEL: &str = "custodian/erasure-receipt/v1";

/// The server's receipt-signing key, derived from the master (encryption) key.
#[derive(Clone, Debug)]
pub struct ReceiptKey(Signer);

impl ReceiptKey {
    pub fn from_master(sealer: &Sealer) -> Self {
        ReceiptKey(sealer.signer(RECEIPT_KEY_LABEL))
    }
}

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
    ReceiptKey: FromRef<S>,
{
    use Access::*;
    api.endpoint(
        Method::POST,
        "/api/v1/contacts/{contact_id}/erasure",
        Requires(Permission::DataSubjectRights),
        (
            "privacy",
            "Erase or anonymise a contact across every table (DSR-3); answers a signed receipt",
        ),
        Contract::new()
            .body::<ErasureBody>()
            .ok::<Receipt>()
            .error(StatusCode::CONFLICT, "legal_hold")
            .error(StatusCode::CONFLICT, "already_anonymised")
            .error(StatusCode::CONFLICT, "request_mismatch")
            .error(StatusCode::CONFLICT, "illegal_transition"),
        erasure,
    )
    .endpoint(
        Method::DELETE,
        "/api/v1/contacts/{contact_id}",
        // Deleting a person's data is a data-subject decision, not everyday CRM work: it is the
        // erasure above, so no copy of their values stays behind (the audit log's included).
        Requires(Permission::DataSubjectRights),
        (
            "crm",
            "Delete a contact and everything about them: an erasure (DSR-3), not while under a legal hold",
        ),
        Contract::new()
            .no_content()
            .error(StatusCode::CONFLICT, "legal_hold"),
        delete,
    )
    .endpoint(
        Method::POST,
        "/api/v1/erasure-receipts/verify",
        Requires(Permission::DataSubjectRights),
        (
            "privacy",
            "Check that an erasure receipt is one this server signed for the caller's tenant",
        ),
        Contract::new().body::<Receipt>().ok::<ReceiptCheck>(),
        verify,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ErasureMode)]
pub enum Mode {
    /// Delete the person's rows.
    Erase,
    /// Keep the rows for statistics, with every personal value gone.
    Anonymise,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureBody {
    pub mode: Mode,
    /// The data-subject request (DSR-6) this answers: it must be an erasure or anonymisation
    /// request about this contact, still open; it is closed as done with the receipt.
    #[serde(default)]
    pub request_id: Option<Uuid>,
}

/// What an erasure did, signed by the server. `signature` is HMAC-SHA256, under a key derived
/// from the server's master key, of the JSON of every other field in this order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ErasureReceipt)]
pub struct Receipt {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub contact_id: Uuid,
    pub mode: Mode,
    #[schema(required = true)]
    pub request_id: Option<Uuid>,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub completed_at: String,
    /// Rows (or entries) erased per data class.
    pub erased: BTreeMap<String, i64>,
    /// Hex.
    pub signature: String,
}

/// The signed part of a receipt: every field but the signature, in a fixed order.
#[derive(Serialize)]
struct Signed<'a> {
    id: Uuid,
    tenant_id: Uuid,
    contact_id: Uuid,
    mode: Mode,
    request_id: Option<Uuid>,
    completed_at: &'a str,
    erased: &'a BTreeMap<String, i64>,
}

impl Receipt {
    fn signed_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&Signed {
            id: self.id,
            tenant_id: self.tenant_id,
            contact_id: self.contact_id,
            mode: self.mode,
            request_id: self.request_id,
            completed_at: &self.completed_at,
            erased: &self.erased,
        })
        .expect("a receipt serialises")
    }

    fn sign(mut self, key: &ReceiptKey) -> Self {
        self.signature = hex::encode(key.0.sign(&self.signed_bytes()));
        self
    }

    pub fn verifies(&self, key: &ReceiptKey) -> bool {
        hex::decode(&self.signature).is_ok_and(|sig| key.0.verify(&self.signed_bytes(), &sig))
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ErasureReceiptCheck)]
pub struct ReceiptCheck {
    /// This server signed it, for the caller's tenant, and not a byte of it changed.
    pub valid: bool,
}

async fn erasure(
    State(db): State<Db>,
    State(key): State<ReceiptKey>,
    ctx: Ctx,
    Path(contact_id): Path<Uuid>,
    Json(body): Json<ErasureBody>,
) -> Result<Json<Receipt>> {
    erase(&db, &key, &ctx, contact_id, body.mode, body.request_id)
        .await
        .map(Json)
}

async fn delete(
    State(db): State<Db>,
    State(key): State<ReceiptKey>,
    ctx: Ctx,
    Path(contact_id): Path<Uuid>,
) -> Result<StatusCode> {
    erase(&db, &key, &ctx, contact_id, Mode::Erase, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn verify(
    State(key): State<ReceiptKey>,
    ctx: Ctx,
    Json(receipt): Json<Receipt>,
) -> Result<Json<ReceiptCheck>> {
    Ok(Json(ReceiptCheck {
        valid: receipt.tenant_id == ctx.tenant_id && receipt.verifies(&key),
    }))
}

/// Erases or anonymises one contact of the caller's tenant, in one transaction, and answers the
/// signed receipt. The web app's form calls this too.
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, contact_id = %contact_id))]
pub async fn erase(
    db: &Db,
    key: &ReceiptKey,
    ctx: &Ctx,
    contact_id: Uuid,
    mode: Mode,
    request_id: Option<Uuid>,
) -> Result<Receipt> {
    let tenant_id = ctx.tenant_id;
    let mut tx = db.system.begin().await?;
    crate::db::set_tenant(&mut tx, tenant_id).await?;
    let erased = erase_on(&mut tx, ctx, contact_id, mode, request_id).await?;
    let receipt = Receipt {
        id: Uuid::now_v7(),
        tenant_id,
        contact_id,
        mode,
        request_id,
        completed_at: OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(anyhow::Error::from)?,
        erased,
        signature: String::new(),
    }
    .sign(key);
    let receipt_json = serde_json::to_value(&receipt).map_err(anyhow::Error::from)?;
    if let Some(request_id) = request_id {
        super::requests::complete_with_receipt(&mut tx, ctx, request_id, &receipt_json).await?;
    }
    let action = match mode {
        Mode::Erase => "contact.erased",
        Mode::Anonymise => "contact.anonymised",
    };
    // The fact stays, the values do not: ids and counts only.
    ctx.audit(
        &mut tx,
        AuditEvent::new(action, "contact", contact_id).after(json!({
            "mode": mode,
            "receipt_id": receipt.id,
            "request_id": request_id,
            "erased": receipt.erased,
        })),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(mode = ?mode, "contact erased");
    Ok(receipt)
}

/// The erasure itself, on the caller's transaction (owner pool, pinned to the tenant).
async fn erase_on(
    tx: &mut PgConnection,
    ctx: &Ctx,
    contact_id: Uuid,
    mode: Mode,
    request_id: Option<Uuid>,
) -> Result<BTreeMap<String, i64>> {
    use crate::{agent, channels, conversations, crm, queue, retention, reviews};
    let tenant_id = ctx.tenant_id;
    let keep_rows = mode == Mode::Anonymise;

    let identity = crm::contacts::lock_for_erasure(&mut *tx, tenant_id, contact_id).await?;
    if identity.anonymised && keep_rows {
        return Err(Error::conflict(
            "already_anonymised",
            format!("contact {contact_id} is already anonymised: nothing personal is left"),
        ));
    }
    if let Some(request_id) = request_id {
        super::requests::check_for_erasure(&mut *tx, request_id, contact_id).await?;
    }
    let held = conversations::erasure::of_contact(&mut *tx, tenant_id, contact_id).await?;
    if let Some((hold_id, reason)) =
        retention::active_hold(&mut *tx, tenant_id, contact_id, &held.conversations).await?
    {
        return Err(Error::conflict(
            "legal_hold",
            format!(
                "contact {contact_id} is under legal hold {hold_id} ({reason}): release the hold before erasing"
            ),
        ));
    }
    let executions =
        agent::erasure::executions_of(&mut *tx, tenant_id, contact_id, &held.conversations).await?;
    let tickets =
        crate::cs::erasure::tickets_of(&mut *tx, tenant_id, contact_id, &held.conversations)
            .await?;
    let items =
        reviews::erasure::items_of(&mut *tx, tenant_id, &held.conversations, &executions).await?;

    // The audit log first, while every id that can name the person is still known.
    let text = |ids: &[Uuid]| ids.iter().map(Uuid::to_string).collect::<Vec<_>>();
    let mut substrings: Vec<String> = [
        identity.email.clone(),
        identity.phone.clone(),
        identity
            .phone
            .as_deref()
            .map(|p| p.trim_start_matches('+').to_string()),
        identity.whatsapp_id.clone(),
        identity.external_id.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    substrings.sort();
    substrings.dedup();
    let mut ids_in_payloads = vec![contact_id.to_string()];
    ids_in_payloads.extend(text(&held.conversations));
    let mentions = Mentions {
        entities: vec![
            ("contact", vec![contact_id.to_string()]),
            ("conversation", text(&held.conversations)),
            ("message", text(&held.messages)),
            ("agent_execution", text(&executions)),
            ("review_item", text(&items)),
            ("ticket", text(&tickets)),
        ],
        execution_ids: executions.clone(),
        substrings,
        exact: identity.name.clone().into_iter().collect(),
        ids_in_payloads,
        // The tenant's legal record names the contact by id only: it stays whole.
        spared_entity_types: vec!["privacy_request", "legal_hold"],
    };
    let seqs = audit::mentioning(&mut *tx, tenant_id, &mentions).await?;
    // Audit log exports written past those rows hold copies of their payloads.
    let audit_exports = audit::export::expire_holding(&mut *tx, tenant_id, &seqs).await? as i64;
    let audit_payloads = audit::erase_payloads(
        &mut *tx,
        tenant_id,
        &seqs,
        json!({ "dsr": "DSR-3", "mode": mode, "contact_id": contact_id }),
    )
    .await?;

    let mut ids_for_jobs = text(&held.conversations);
    ids_for_jobs.extend(text(&held.messages));
    ids_for_jobs.push(contact_id.to_string());
    let jobs = queue::forget(&mut *tx, tenant_id, &ids_for_jobs).await?;
    let webchat_sessions =
        channels::webchat::erase_sessions(&mut *tx, tenant_id, contact_id).await?;
    let reviews = reviews::erasure::erase(&mut *tx, tenant_id, &items, keep_rows).await?;
    let agent_executions =
        agent::erasure::erase_executions(&mut *tx, tenant_id, &executions, keep_rows).await?;
    let (tickets, tasks) =
        crate::cs::erasure::erase(&mut *tx, tenant_id, contact_id, &tickets, keep_rows).await?;
    let consents = super::consent::erase(&mut *tx, tenant_id, contact_id, keep_rows).await?;
    let requester_names =
        super::requests::forget_subject_names(&mut *tx, tenant_id, contact_id).await?;
    let contact_exports =
        super::export::forget_for_contact(&mut *tx, tenant_id, contact_id).await? as i64;
    let conv =
        conversations::erasure::erase(&mut *tx, tenant_id, &held.conversations, keep_rows).await?;
    if keep_rows {
        crm::contacts::anonymise(&mut *tx, tenant_id, contact_id).await?;
    } else {
        crm::contacts::delete_for_erasure(&mut *tx, tenant_id, contact_id).await?;
    }

    let conversations_count = if keep_rows {
        held.conversations.len() as i64
    } else {
        conv.conversations
    };
    Ok(BTreeMap::from([
        ("contact".to_string(), 1),
        ("conversations".to_string(), conversations_count),
        ("messages".to_string(), conv.messages),
        ("attachments".to_string(), conv.attachments),
        ("pii_vault_entries".to_string(), conv.vault_entries),
        ("conversation_read_marks".to_string(), conv.read_marks),
        ("webchat_sessions".to_string(), webchat_sessions),
        ("agent_executions".to_string(), agent_executions),
        ("review_items".to_string(), reviews.items),
        ("review_items_withdrawn".to_string(), reviews.withdrawn),
        ("tickets".to_string(), tickets),
        ("tasks".to_string(), tasks),
        ("consents".to_string(), consents),
        ("privacy_request_names".to_string(), requester_names),
        ("jobs".to_string(), jobs),
        ("audit_payloads".to_string(), audit_payloads),
        ("contact_exports".to_string(), contact_exports),
        ("audit_exports".to_string(), audit_exports),
    ]))
}
