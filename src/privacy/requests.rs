//! Data-subject requests (DSR-6): what a person asked of the tenant, who asked and how their
//! identity was checked, when the answer is due, and where it stands. The status moves along a
//! fixed workflow; every change and note is audited, so the request's trail is its proof.

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::crm::contacts::{self, E164};
use crate::crm::page_limit;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Ctx, Json, Page, Path, Query};
use crate::rbac::Permission;
use crate::tenants::members::Email;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    use Permission::DataSubjectRights;
    api.endpoint(
        Method::POST,
        "/api/v1/privacy/requests",
        Requires(DataSubjectRights),
        (
            "privacy",
            "Record a data-subject request (DSR-6); it is due in the tenant's period",
        ),
        Contract::new()
            .body::<NewRequest>()
            // The subject: a contact by id, or the e-mail or phone number that finds one.
            .body_rule(json!({ "oneOf": SUBJECT_FIELDS.map(|field| json!({
                "required": [field],
                "properties": { field: { "not": { "type": "null" } } }
            })) }))
            .created::<RequestView>()
            .error(StatusCode::BAD_REQUEST, "invalid_email")
            .error(StatusCode::BAD_REQUEST, "invalid_phone")
            .error(StatusCode::BAD_REQUEST, "invalid_subject")
            .error(StatusCode::BAD_REQUEST, "invalid_text")
            // No contact of the tenant is that id, e-mail or phone number.
            .error(StatusCode::NOT_FOUND, "not_found")
            .error(StatusCode::CONFLICT, "ambiguous_subject"),
        create,
    )
    .endpoint(
        Method::GET,
        "/api/v1/privacy/requests",
        Requires(DataSubjectRights),
        (
            "privacy",
            "List data-subject requests, newest first, by status, type or overdue",
        ),
        Contract::new()
            .query::<ListQuery>()
            .ok_page::<RequestView>()
            .error(StatusCode::BAD_REQUEST, "invalid_limit"),
        list,
    )
    .endpoint(
        Method::GET,
        "/api/v1/privacy/requests/{request_id}",
        Requires(DataSubjectRights),
        ("privacy", "Show a data-subject request with its notes"),
        Contract::new().ok::<RequestDetail>(),
        show,
    )
    .endpoint(
        Method::POST,
        "/api/v1/privacy/requests/{request_id}/status",
        Requires(DataSubjectRights),
        (
            "privacy",
            "Move a data-subject request along its workflow (a refusal needs a reason)",
        ),
        Contract::new()
            .body::<StatusChange>()
            // A refusal has its reason; nothing else has one.
            .body_rule(json!({
                "anyOf": [
                    {
                        "required": ["reason"],
                        "properties": {
                            "status": { "const": "refused" },
                            "reason": { "type": "string" }
                        }
                    },
                    {
                        "properties": {
                            "status": { "enum": ["received", "in_progress", "waiting_on_subject", "done"] },
                            "reason": { "type": "null" }
                        }
                    }
                ]
            }))
            .ok::<RequestView>()
            .error(StatusCode::BAD_REQUEST, "reason_required")
            .error(StatusCode::BAD_REQUEST, "reason_not_allowed")
            .error(StatusCode::BAD_REQUEST, "invalid_text")
            .error(StatusCode::CONFLICT, "illegal_transition"),
        change_status,
    )
    .endpoint(
        Method::POST,
        "/api/v1/privacy/requests/{request_id}/notes",
        Requires(DataSubjectRights),
        ("privacy", "Add a note to a data-subject request"),
        Contract::new()
            .body::<NewNote>()
            .created::<NoteView>()
            .error(StatusCode::BAD_REQUEST, "invalid_text"),
        add_note,
    )
    .endpoint(
        Method::GET,
        "/api/v1/privacy/summary",
        Requires(DataSubjectRights),
        (
            "privacy",
            "Counts of open and overdue data-subject requests, by status",
        ),
        Contract::new().ok::<Summary>(),
        summary,
    )
    .endpoint(
        Method::GET,
        "/api/v1/privacy/settings",
        Requires(DataSubjectRights),
        ("privacy", "The tenant's data-subject request settings"),
        Contract::new().ok::<Settings>(),
        show_settings,
    )
    .endpoint(
        Method::PUT,
        "/api/v1/privacy/settings",
        Requires(DataSubjectRights),
        (
            "privacy",
            "Change the period new data-subject requests are due in",
        ),
        Contract::new()
            .body::<Settings>()
            .ok::<Settings>()
            .error(StatusCode::BAD_REQUEST, "invalid_settings"),
        update_settings,
    )
}

/// The fields that name a request's subject: exactly one is given.
const SUBJECT_FIELDS: [&str; 3] = ["contact_id", "email", "phone"];

/// What the person asked for (LGPD Art. 18, GDPR Art. 15-22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[schema(as = PrivacyRequestType)]
pub enum Kind {
    /// Whether any of their data is processed at all.
    Confirmation,
    Access,
    Portability,
    Correction,
    Erasure,
    Anonymisation,
    Restriction,
    Objection,
    ConsentRevocation,
    /// With whom their data was shared.
    SharingInformation,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Confirmation => "confirmation",
            Kind::Access => "access",
            Kind::Portability => "portability",
            Kind::Correction => "correction",
            Kind::Erasure => "erasure",
            Kind::Anonymisation => "anonymisation",
            Kind::Restriction => "restriction",
            Kind::Objection => "objection",
            Kind::ConsentRevocation => "consent_revocation",
            Kind::SharingInformation => "sharing_information",
        }
    }
}

/// Where a request stands. `done` and `refused` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[schema(as = PrivacyRequestStatus)]
pub enum Status {
    Received,
    InProgress,
    WaitingOnSubject,
    Done,
    Refused,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::InProgress => "in_progress",
            Status::WaitingOnSubject => "waiting_on_subject",
            Status::Done => "done",
            Status::Refused => "refused",
        }
    }

    pub const fn is_final(self) -> bool {
        matches!(self, Status::Done | Status::Refused)
    }

    /// The workflow: work starts, may wait on the subject (for proof of identity, a missing
    /// detail) and resume, and ends done or refused. A final request stays final: a new ask is
    /// a new request.
    pub fn may_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Received, InProgress | WaitingOnSubject | Refused)
                | (InProgress, WaitingOnSubject | Done | Refused)
                | (WaitingOnSubject, InProgress | Refused)
        )
    }
}

/// Who made the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[schema(as = PrivacyRequester)]
pub enum Requester {
    /// The person themself.
    DataSubject,
    /// Someone acting for them (a lawyer, a guardian), who should be named.
    Representative,
    /// A data-protection authority (ANPD, a supervisory authority) or a court.
    Authority,
}

impl Requester {
    pub const fn as_str(self) -> &'static str {
        match self {
            Requester::DataSubject => "data_subject",
            Requester::Representative => "representative",
            Requester::Authority => "authority",
        }
    }
}

/// How the requester's identity (and right to ask) was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[schema(as = PrivacyIdentityCheck)]
pub enum IdentityCheck {
    /// The request came from the contact's own channel identity (their WhatsApp number, the
    /// web chat's verified user).
    ChannelIdentity,
    /// Signed in to the tenant's own product.
    SignedIn,
    Document,
    EmailConfirmation,
    PhoneConfirmation,
    InPerson,
    /// Said in a note.
    Other,
}

impl IdentityCheck {
    pub const fn as_str(self) -> &'static str {
        match self {
            IdentityCheck::ChannelIdentity => "channel_identity",
            IdentityCheck::SignedIn => "signed_in",
            IdentityCheck::Document => "document",
            IdentityCheck::EmailConfirmation => "email_confirmation",
            IdentityCheck::PhoneConfirmation => "phone_confirmation",
            IdentityCheck::InPerson => "in_person",
            IdentityCheck::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = PrivacyRequest)]
pub struct RequestView {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub status: Status,
    /// The person the request is about; `null` once their contact was erased.
    #[schema(required = true)]
    pub contact_id: Option<Uuid>,
    pub requester: Requester,
    #[schema(required = true)]
    pub requester_name: Option<String>,
    pub identity_check: IdentityCheck,
    /// Why the request was refused; set with `refused` only.
    #[schema(required = true)]
    pub refusal_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub due_at: OffsetDateTime,
    /// Still open past its due date.
    pub overdue: bool,
    /// When it became done or refused.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub closed_at: Option<OffsetDateTime>,
    /// The member who recorded it.
    pub created_by: Uuid,
    /// When it was received (recorded).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = PrivacyRequestNote)]
pub struct NoteView {
    pub id: Uuid,
    pub request_id: Uuid,
    pub body: String,
    pub author_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A request and its notes, oldest note first. Its full trail is in the audit log
/// (`entity_type=privacy_request`).
#[derive(Serialize, ToSchema)]
#[schema(as = PrivacyRequestDetail)]
struct RequestDetail {
    request: RequestView,
    notes: Vec<NoteView>,
    /// The exports made to answer it (access, portability), newest first.
    exports: Vec<super::export::ExportView>,
    /// The signed receipt of the erasure that completed it, checkable with
    /// `POST /api/v1/erasure-receipts/verify`.
    #[schema(required = true)]
    receipt: Option<super::erasure::Receipt>,
}

/// A data-subject request to record. The subject is named by exactly one of `contact_id`,
/// `email` or `phone`; an e-mail or phone number must find exactly one of the tenant's contacts.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewPrivacyRequest)]
struct NewRequest {
    #[serde(rename = "type")]
    kind: Kind,
    contact_id: Option<Uuid>,
    #[schema(format = Email, max_length = 254)]
    email: Option<String>,
    /// E.164 (`+` and 7 to 15 digits); spaces, dashes, dots and parentheses are dropped. Finds
    /// the contact with that phone number or WhatsApp number.
    #[schema(pattern = "^[ .()-]*\\+[ .()-]*[1-9]([ .()-]*[0-9]){6,14}[ .()-]*$")]
    phone: Option<String>,
    requester: Requester,
    /// Who asked, when not the person themself.
    #[schema(max_length = 200, pattern = "$one_line")]
    requester_name: Option<String>,
    identity_check: IdentityCheck,
    /// A first note: what was asked, in the requester's words.
    #[schema(max_length = 4000, pattern = "$not_blank")]
    note: Option<String>,
}

/// The next status; `reason` goes with `refused`, and only with it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PrivacyRequestStatusChange)]
struct StatusChange {
    status: Status,
    #[schema(max_length = 2000, pattern = "$not_blank")]
    reason: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewPrivacyRequestNote)]
struct NewNote {
    #[schema(max_length = 4000, pattern = "$not_blank")]
    body: String,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<Status>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<Kind>,
    /// Only the open requests past their due date (`true`), or only the others (`false`).
    overdue: Option<bool>,
    /// Only the requests about this contact.
    contact_id: Option<Uuid>,
    /// The last id of the previous page (its `next_cursor`).
    after: Option<Uuid>,
    /// 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// How many requests are open, how many of them are overdue, and how many are in each status.
#[derive(Serialize, ToSchema)]
#[schema(as = PrivacySummary)]
struct Summary {
    open: i64,
    overdue: i64,
    received: i64,
    in_progress: i64,
    waiting_on_subject: i64,
    done: i64,
    refused: i64,
}

/// The tenant's data-subject request settings.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PrivacySettings)]
struct Settings {
    /// Days a new request is due in: 15 by default (LGPD Art. 19), 1 to 90.
    #[schema(minimum = 1, maximum = 90)]
    request_due_days: i32,
}

/// A text the client may leave out: trimmed, and blank is refused with `invalid_text`.
fn text(field: &str, value: Option<String>, max: usize) -> Result<Option<String>> {
    let Some(value) = value else { return Ok(None) };
    let value = value.trim().to_string();
    if value.is_empty() || value.chars().count() > max {
        return Err(Error::bad_request(
            "invalid_text",
            format!("{field} must be 1 to {max} characters, not blank"),
        ));
    }
    Ok(Some(value))
}

/// The contact a request is about: named by id, or found by e-mail or phone number.
async fn subject(conn: &mut PgConnection, body: &NewRequest) -> Result<Uuid> {
    match (body.contact_id, &body.email, &body.phone) {
        (Some(id), None, None) => Ok(contacts::fetch(conn, id).await?.id),
        (None, Some(email), None) => {
            let email = Email::parse(email)?;
            contacts::find_by_email(conn, &email)
                .await?
                .ok_or(Error::NotFound)
        }
        (None, None, Some(phone)) => {
            let phone = E164::parse(phone)?;
            let found = contacts::find_by_phone(conn, &phone).await?;
            match found.as_slice() {
                [] => Err(Error::NotFound),
                [one] => Ok(*one),
                _ => Err(Error::conflict(
                    "ambiguous_subject",
                    "several contacts have that phone number: name the contact by contact_id",
                )),
            }
        }
        _ => Err(Error::bad_request(
            "invalid_subject",
            "name the subject by exactly one of contact_id, email or phone",
        )),
    }
}

async fn create(
    State(db): State<Db>,
    ctx: Ctx,
    Json(body): Json<NewRequest>,
) -> Result<(StatusCode, Json<RequestView>)> {
    let requester_name = text("requester_name", body.requester_name.clone(), 200)?;
    if requester_name
        .as_deref()
        .is_some_and(|name| name.chars().any(char::is_control))
    {
        return Err(Error::bad_request(
            "invalid_text",
            "requester_name must be one line, without control characters",
        ));
    }
    let note = text("note", body.note.clone(), 4000)?;
    let mut tx = ctx.begin(&db).await?;
    let contact_id = subject(&mut tx, &body).await?;
    let days = due_days(&mut tx).await?;
    let request = sqlx::query_as!(
        RequestView,
        r#"INSERT INTO privacy_request (id, tenant_id, kind, contact_id, requester, requester_name,
                                       identity_check, due_at, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(days => $8), $9)
           RETURNING id, kind AS "kind: Kind", status AS "status: Status", contact_id,
                     requester AS "requester: Requester", requester_name,
                     identity_check AS "identity_check: IdentityCheck", refusal_reason, due_at,
                     false AS "overdue!", closed_at, created_by, created_at, updated_at"#,
        Uuid::now_v7(),
        ctx.tenant_id,
        body.kind.as_str(),
        contact_id,
        body.requester.as_str(),
        requester_name,
        body.identity_check.as_str(),
        days,
        ctx.member_id
    )
    .fetch_one(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("privacy_request.created", "privacy_request", request.id).after(&request),
    )
    .await?;
    if let Some(note) = note {
        insert_note(&mut tx, &ctx, request.id, &note).await?;
    }
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(request)))
}

/// The days a new request of the caller's tenant is due in.
async fn due_days(conn: &mut PgConnection) -> Result<i32> {
    Ok(sqlx::query_scalar!(
        "SELECT request_due_days FROM privacy_settings WHERE tenant_id = current_tenant_id()"
    )
    .fetch_optional(conn)
    .await?
    .unwrap_or(DEFAULT_DUE_DAYS))
}

const DEFAULT_DUE_DAYS: i32 = 15;

/// One request of the caller's tenant; `lock` holds it for a change.
pub async fn fetch(conn: &mut PgConnection, id: Uuid, lock: bool) -> Result<RequestView> {
    // Two statements rather than a formatted one: both are checked at compile time.
    let query = if lock {
        sqlx::query_as!(
            RequestView,
            r#"SELECT id, kind AS "kind: Kind", status AS "status: Status", contact_id,
                      requester AS "requester: Requester", requester_name,
                      identity_check AS "identity_check: IdentityCheck", refusal_reason, due_at,
                      (status NOT IN ('done', 'refused') AND due_at < now()) AS "overdue!",
                      closed_at, created_by, created_at, updated_at
               FROM privacy_request WHERE id = $1 AND tenant_id = current_tenant_id()
               FOR UPDATE"#,
            id
        )
        .fetch_optional(conn)
        .await?
    } else {
        sqlx::query_as!(
            RequestView,
            r#"SELECT id, kind AS "kind: Kind", status AS "status: Status", contact_id,
                      requester AS "requester: Requester", requester_name,
                      identity_check AS "identity_check: IdentityCheck", refusal_reason, due_at,
                      (status NOT IN ('done', 'refused') AND due_at < now()) AS "overdue!",
                      closed_at, created_by, created_at, updated_at
               FROM privacy_request WHERE id = $1 AND tenant_id = current_tenant_id()"#,
            id
        )
        .fetch_optional(conn)
        .await?
    };
    query.ok_or(Error::NotFound)
}

async fn list(
    State(db): State<Db>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<RequestView>>> {
    let limit = page_limit(q.limit)?;
    let mut tx = ctx.begin(&db).await?;
    let items = sqlx::query_as!(
        RequestView,
        r#"SELECT id, kind AS "kind: Kind", status AS "status: Status", contact_id,
                  requester AS "requester: Requester", requester_name,
                  identity_check AS "identity_check: IdentityCheck", refusal_reason, due_at,
                  (status NOT IN ('done', 'refused') AND due_at < now()) AS "overdue!",
                  closed_at, created_by, created_at, updated_at
           FROM privacy_request
           WHERE tenant_id = $1
             AND ($2::text IS NULL OR status = $2)
             AND ($3::text IS NULL OR kind = $3)
             AND ($4::bool IS NULL
                  OR $4 = (status NOT IN ('done', 'refused') AND due_at < now()))
             AND ($5::uuid IS NULL OR contact_id = $5)
             AND ($6::uuid IS NULL OR id < $6)
           ORDER BY id DESC LIMIT $7"#,
        ctx.tenant_id,
        q.status.map(Status::as_str),
        q.kind.map(Kind::as_str),
        q.overdue,
        q.contact_id,
        q.after,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(Page::new(items, limit, |r| r.id)))
}

async fn show(State(db): State<Db>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<Json<RequestDetail>> {
    let mut tx = ctx.begin(&db).await?;
    let request = fetch(&mut tx, id, false).await?;
    let notes = sqlx::query_as!(
        NoteView,
        "SELECT id, request_id, body, author_id, created_at FROM privacy_request_note
         WHERE tenant_id = current_tenant_id() AND request_id = $1 ORDER BY id",
        id
    )
    .fetch_all(&mut *tx)
    .await?;
    let exports = super::export::for_request(&mut tx, id).await?;
    let receipt = receipt(&mut tx, id)
        .await?
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| Error::Internal(anyhow::anyhow!("a stored receipt does not parse: {e}")))?;
    tx.commit().await?;
    Ok(Json(RequestDetail {
        request,
        notes,
        exports,
        receipt,
    }))
}

async fn change_status(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<StatusChange>,
) -> Result<Json<RequestView>> {
    let reason = text("reason", body.reason, 2000)?;
    match (body.status, &reason) {
        (Status::Refused, None) => {
            return Err(Error::bad_request(
                "reason_required",
                "a refusal must say why: give a reason",
            ))
        }
        (status, Some(_)) if status != Status::Refused => {
            return Err(Error::bad_request(
                "reason_not_allowed",
                "a reason goes with the status refused only; add a note instead",
            ))
        }
        _ => {}
    }
    let mut tx = ctx.begin(&db).await?;
    let after = set_status(&mut tx, &ctx, id, body.status, reason.as_deref()).await?;
    tx.commit().await?;
    Ok(Json(after))
}

/// Moves a request to `next` on the caller's transaction, audited; refuses a move the workflow
/// does not allow with 409 `illegal_transition`.
pub async fn set_status(
    conn: &mut PgConnection,
    ctx: &Ctx,
    id: Uuid,
    next: Status,
    reason: Option<&str>,
) -> Result<RequestView> {
    let before = fetch(&mut *conn, id, true).await?;
    if !before.status.may_become(next) {
        return Err(Error::conflict(
            "illegal_transition",
            format!(
                "a request that is {} cannot become {}{}",
                before.status.as_str(),
                next.as_str(),
                if before.status.is_final() {
                    ": it is closed; record a new request instead"
                } else {
                    ""
                }
            ),
        ));
    }
    let after = sqlx::query_as!(
        RequestView,
        r#"UPDATE privacy_request
           SET status = $2, refusal_reason = $3,
               closed_at = CASE WHEN $4 THEN now() END, updated_at = now()
           WHERE id = $1 AND tenant_id = current_tenant_id()
           RETURNING id, kind AS "kind: Kind", status AS "status: Status", contact_id,
                     requester AS "requester: Requester", requester_name,
                     identity_check AS "identity_check: IdentityCheck", refusal_reason, due_at,
                     (status NOT IN ('done', 'refused') AND due_at < now()) AS "overdue!",
                     closed_at, created_by, created_at, updated_at"#,
        id,
        next.as_str(),
        reason,
        next.is_final()
    )
    .fetch_one(&mut *conn)
    .await?;
    ctx.audit(
        conn,
        AuditEvent::new("privacy_request.status_changed", "privacy_request", id)
            .before(json!({ "status": before.status }))
            .after(json!({ "status": after.status, "refusal_reason": after.refusal_reason })),
    )
    .await?;
    Ok(after)
}

async fn add_note(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<NewNote>,
) -> Result<(StatusCode, Json<NoteView>)> {
    let body = text("body", Some(body.body), 4000)?.unwrap_or_default();
    let mut tx = ctx.begin(&db).await?;
    // Locked: a note lands on a request as it stands, not beside a concurrent change.
    fetch(&mut tx, id, true).await?;
    let note = insert_note(&mut tx, &ctx, id, &body).await?;
    sqlx::query!(
        "UPDATE privacy_request SET updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(note)))
}

async fn insert_note(
    conn: &mut PgConnection,
    ctx: &Ctx,
    request_id: Uuid,
    body: &str,
) -> Result<NoteView> {
    let note = sqlx::query_as!(
        NoteView,
        "INSERT INTO privacy_request_note (id, tenant_id, request_id, body, author_id)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, request_id, body, author_id, created_at",
        Uuid::now_v7(),
        ctx.tenant_id,
        request_id,
        body,
        ctx.member_id
    )
    .fetch_one(&mut *conn)
    .await?;
    ctx.audit(
        conn,
        AuditEvent::new("privacy_request.note_added", "privacy_request", request_id).after(&note),
    )
    .await?;
    Ok(note)
}

async fn summary(State(db): State<Db>, ctx: Ctx) -> Result<Json<Summary>> {
    let mut tx = ctx.begin(&db).await?;
    let row = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE status NOT IN ('done', 'refused')) AS "open!",
                  count(*) FILTER (WHERE status NOT IN ('done', 'refused') AND due_at < now()) AS "overdue!",
                  count(*) FILTER (WHERE status = 'received') AS "received!",
                  count(*) FILTER (WHERE status = 'in_progress') AS "in_progress!",
                  count(*) FILTER (WHERE status = 'waiting_on_subject') AS "waiting_on_subject!",
                  count(*) FILTER (WHERE status = 'done') AS "done!",
                  count(*) FILTER (WHERE status = 'refused') AS "refused!"
           FROM privacy_request WHERE tenant_id = $1"#,
        ctx.tenant_id
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(Summary {
        open: row.open,
        overdue: row.overdue,
        received: row.received,
        in_progress: row.in_progress,
        waiting_on_subject: row.waiting_on_subject,
        done: row.done,
        refused: row.refused,
    }))
}

async fn show_settings(State(db): State<Db>, ctx: Ctx) -> Result<Json<Settings>> {
    let mut tx = ctx.begin(&db).await?;
    let request_due_days = due_days(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(Settings { request_due_days }))
}

/// Changes the period for requests recorded from now on; a recorded request keeps its due date.
async fn update_settings(
    State(db): State<Db>,
    ctx: Ctx,
    Json(body): Json<Settings>,
) -> Result<Json<Settings>> {
    if !(1..=90).contains(&body.request_due_days) {
        return Err(Error::bad_request(
            "invalid_settings",
            "request_due_days must be 1 to 90",
        ));
    }
    let mut tx = ctx.begin(&db).await?;
    let before = Settings {
        request_due_days: due_days(&mut tx).await?,
    };
    sqlx::query!(
        "INSERT INTO privacy_settings (tenant_id, request_due_days) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET request_due_days = EXCLUDED.request_due_days,
                                               updated_at = now()",
        ctx.tenant_id,
        body.request_due_days
    )
    .execute(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("privacy_settings.updated", "tenant", ctx.tenant_id)
            .before(&before)
            .after(&body),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(body))
}

/// Checks that request `id` may be answered by erasing or anonymising `contact_id`: it is an
/// erasure or anonymisation request about that contact, still open. Locks it.
pub(crate) async fn check_for_erasure(
    conn: &mut PgConnection,
    id: Uuid,
    contact_id: Uuid,
) -> Result<()> {
    let request = fetch(&mut *conn, id, true).await?;
    if !matches!(request.kind, Kind::Erasure | Kind::Anonymisation) {
        return Err(Error::conflict(
            "request_mismatch",
            format!(
                "request {id} is a {} request, not an erasure or anonymisation",
                request.kind.as_str()
            ),
        ));
    }
    if request.contact_id != Some(contact_id) {
        return Err(Error::conflict(
            "request_mismatch",
            format!("request {id} is about another contact"),
        ));
    }
    if request.status.is_final() {
        return Err(Error::conflict(
            "illegal_transition",
            format!(
                "request {id} is {} and closed; record a new request instead",
                request.status.as_str()
            ),
        ));
    }
    Ok(())
}

/// Closes request `id` as done with the erasure's completion receipt, through the workflow's
/// own audited steps (a request not yet in progress is taken into progress first).
pub(crate) async fn complete_with_receipt(
    conn: &mut PgConnection,
    ctx: &Ctx,
    id: Uuid,
    receipt: &serde_json::Value,
) -> Result<()> {
    let request = fetch(&mut *conn, id, true).await?;
    if request.status != Status::InProgress {
        set_status(&mut *conn, ctx, id, Status::InProgress, None).await?;
    }
    set_status(&mut *conn, ctx, id, Status::Done, None).await?;
    sqlx::query!(
        "UPDATE privacy_request SET receipt = $2 WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        receipt
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An erasure (DSR-3) keeps the requests about the person (they are the tenant's proof), but not
/// the person's own name as the requester.
pub(crate) async fn forget_subject_names(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    contact_id: Uuid,
) -> Result<i64> {
    let n = sqlx::query!(
        "UPDATE privacy_request SET requester_name = NULL, updated_at = now()
         WHERE tenant_id = $1 AND contact_id = $2 AND requester = 'data_subject'
           AND requester_name IS NOT NULL",
        tenant_id,
        contact_id
    )
    .execute(conn)
    .await?;
    Ok(n.rows_affected() as i64)
}

/// The completion receipt an erasure left on request `id`, if any.
pub async fn receipt(conn: &mut PgConnection, id: Uuid) -> Result<Option<serde_json::Value>> {
    Ok(sqlx::query_scalar!(
        "SELECT receipt FROM privacy_request WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .fetch_optional(conn)
    .await?
    .flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_moves_only_forward_along_its_workflow_and_stays_closed_once_final() {
        use Status::*;
        let all = [Received, InProgress, WaitingOnSubject, Done, Refused];
        let allowed = [
            (Received, InProgress),
            (Received, WaitingOnSubject),
            (Received, Refused),
            (InProgress, WaitingOnSubject),
            (InProgress, Done),
            (InProgress, Refused),
            (WaitingOnSubject, InProgress),
            (WaitingOnSubject, Refused),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    from.may_become(to),
                    allowed.contains(&(from, to)),
                    "{} -> {}",
                    from.as_str(),
                    to.as_str()
                );
            }
        }
    }
}
