//! Consents (DSR-5): what a contact agreed to, per purpose, on which legal basis, when, through
//! what and the text version they saw. Revoking one takes effect at once: every sender that
//! needs a purpose asks [`allows`] on its own transaction, and revoking consent to AI processing
//! restricts the contact (DSR-4), so the agent runtime does not process them from then on. A
//! revocation closes the record and keeps it: the history is the table.

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::crm::contacts;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Ctx, Json, Path};
use crate::rbac::Permission;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    use Permission::DataSubjectRights;
    api.endpoint(
        Method::GET,
        "/api/v1/contacts/{contact_id}/consents",
        Requires(DataSubjectRights),
        (
            "privacy",
            "A contact's consents, standing and revoked, newest first (DSR-5)",
        ),
        Contract::new().ok_list::<ConsentView>(),
        list,
    )
    .endpoint(
        Method::POST,
        "/api/v1/contacts/{contact_id}/consents",
        Requires(DataSubjectRights),
        ("privacy", "Record a contact's consent to a purpose (DSR-5)"),
        Contract::new()
            .body::<NewConsent>()
            .created::<ConsentView>()
            .error(StatusCode::BAD_REQUEST, "invalid_text")
            .error(StatusCode::CONFLICT, "consent_already_given"),
        grant,
    )
    .endpoint(
        Method::POST,
        "/api/v1/privacy/consents/{consent_id}/revoke",
        Requires(DataSubjectRights),
        (
            "privacy",
            "Revoke a consent: it takes effect at once, and is kept as history (DSR-5)",
        ),
        Contract::new()
            .body::<Revocation>()
            .ok::<ConsentView>()
            .error(StatusCode::CONFLICT, "consent_already_revoked"),
        revoke,
    )
}

/// What the contact's data is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[schema(as = ConsentPurpose)]
pub enum Purpose {
    /// The AI agent reads and answers their messages. Revoking it restricts the contact.
    AiProcessing,
    /// Campaigns and offers.
    Marketing,
    /// Satisfaction surveys (NPS, CSAT).
    Surveys,
    /// Product analytics about them.
    Analytics,
}

impl Purpose {
    pub const fn as_str(self) -> &'static str {
        match self {
            Purpose::AiProcessing => "ai_processing",
            Purpose::Marketing => "marketing",
            Purpose::Surveys => "surveys",
            Purpose::Analytics => "analytics",
        }
    }
}

/// The legal basis of the processing (LGPD Art. 7, GDPR Art. 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[schema(as = ConsentLegalBasis)]
pub enum LegalBasis {
    Consent,
    Contract,
    LegalObligation,
    LegitimateInterests,
    VitalInterests,
    PublicInterest,
}

impl LegalBasis {
    pub const fn as_str(self) -> &'static str {
        match self {
            LegalBasis::Consent => "consent",
            LegalBasis::Contract => "contract",
            LegalBasis::LegalObligation => "legal_obligation",
            LegalBasis::LegitimateInterests => "legitimate_interests",
            LegalBasis::VitalInterests => "vital_interests",
            LegalBasis::PublicInterest => "public_interest",
        }
    }
}

/// Through what the consent was given or revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[schema(as = ConsentSource)]
pub enum Source {
    /// A member recorded what the person said (a call, an e-mail).
    Member,
    /// The tenant's own systems, through the API.
    Api,
    WebChat,
    Whatsapp,
    /// A form the person filled in.
    Form,
    /// Brought over from another system.
    Import,
}

impl Source {
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Member => "member",
            Source::Api => "api",
            Source::WebChat => "web_chat",
            Source::Whatsapp => "whatsapp",
            Source::Form => "form",
            Source::Import => "import",
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Consent)]
pub struct ConsentView {
    pub id: Uuid,
    pub contact_id: Uuid,
    pub purpose: Purpose,
    pub legal_basis: LegalBasis,
    pub source: Source,
    /// The version of the text the person agreed to.
    #[schema(required = true)]
    pub text_version: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub granted_at: OffsetDateTime,
    /// The member who recorded it; `null` when a channel did.
    #[schema(required = true)]
    pub granted_by: Option<Uuid>,
    /// `null` while the consent stands.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub revoked_at: Option<OffsetDateTime>,
    #[schema(required = true)]
    pub revoked_by: Option<Uuid>,
    #[schema(required = true)]
    pub revocation_source: Option<Source>,
}

/// A consent to record: at most one stands per contact and purpose.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewConsent)]
struct NewConsent {
    purpose: Purpose,
    legal_basis: LegalBasis,
    source: Source,
    /// The version of the text the person agreed to, e.g. `privacy-notice-2026-03`.
    #[schema(max_length = 200, pattern = "$not_blank")]
    text_version: Option<String>,
}

/// Through what the person revoked it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ConsentRevocation)]
struct Revocation {
    source: Source,
}

async fn list(
    State(db): State<Db>,
    ctx: Ctx,
    Path(contact_id): Path<Uuid>,
) -> Result<Json<Vec<ConsentView>>> {
    let mut tx = ctx.begin(&db).await?;
    contacts::fetch(&mut tx, contact_id).await?;
    let items = sqlx::query_as!(
        ConsentView,
        r#"SELECT id, contact_id, purpose AS "purpose: Purpose", legal_basis AS "legal_basis: LegalBasis",
                  source AS "source: Source", text_version, granted_at, granted_by, revoked_at,
                  revoked_by, revocation_source AS "revocation_source: Source"
           FROM consent WHERE tenant_id = current_tenant_id() AND contact_id = $1
           ORDER BY id DESC"#,
        contact_id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(items))
}

async fn grant(
    State(db): State<Db>,
    ctx: Ctx,
    Path(contact_id): Path<Uuid>,
    Json(body): Json<NewConsent>,
) -> Result<(StatusCode, Json<ConsentView>)> {
    let text_version = match body.text_version.as_deref().map(str::trim) {
        None => None,
        Some(v) if !v.is_empty() && v.chars().count() <= 200 => Some(v.to_string()),
        Some(_) => {
            return Err(Error::bad_request(
                "invalid_text",
                "text_version must be 1 to 200 characters, not blank",
            ))
        }
    };
    let mut tx = ctx.begin(&db).await?;
    contacts::fetch(&mut tx, contact_id).await?;
    let consent = sqlx::query_as!(
        ConsentView,
        r#"INSERT INTO consent (id, tenant_id, contact_id, purpose, legal_basis, source, text_version, granted_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (tenant_id, contact_id, purpose) WHERE revoked_at IS NULL DO NOTHING
           RETURNING id, contact_id, purpose AS "purpose: Purpose", legal_basis AS "legal_basis: LegalBasis",
                     source AS "source: Source", text_version, granted_at, granted_by, revoked_at,
                     revoked_by, revocation_source AS "revocation_source: Source""#,
        Uuid::now_v7(),
        ctx.tenant_id,
        contact_id,
        body.purpose.as_str(),
        body.legal_basis.as_str(),
        body.source.as_str(),
        text_version,
        ctx.member_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| {
        Error::conflict(
            "consent_already_given",
            format!(
                "this contact's consent to {} stands: revoke it before recording a new one",
                body.purpose.as_str()
            ),
        )
    })?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("consent.granted", "consent", consent.id).after(&consent),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(consent)))
}

async fn revoke(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<Revocation>,
) -> Result<Json<ConsentView>> {
    let mut tx = ctx.begin(&db).await?;
    let consent = sqlx::query_as!(
        ConsentView,
        r#"UPDATE consent SET revoked_at = now(), revoked_by = $2, revocation_source = $3
           WHERE id = $1 AND tenant_id = current_tenant_id() AND revoked_at IS NULL
           RETURNING id, contact_id, purpose AS "purpose: Purpose", legal_basis AS "legal_basis: LegalBasis",
                     source AS "source: Source", text_version, granted_at, granted_by, revoked_at,
                     revoked_by, revocation_source AS "revocation_source: Source""#,
        id,
        ctx.member_id,
        body.source.as_str()
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(consent) = consent else {
        // Either no such consent of this tenant (404) or one already revoked (409).
        let exists = sqlx::query_scalar!(
            "SELECT 1 FROM consent WHERE id = $1 AND tenant_id = current_tenant_id()",
            id
        )
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        return Err(if exists {
            Error::conflict(
                "consent_already_revoked",
                "this consent was already revoked; its record is kept as history",
            )
        } else {
            Error::NotFound
        });
    };
    ctx.audit(
        &mut tx,
        AuditEvent::new("consent.revoked", "consent", consent.id).after(&consent),
    )
    .await?;
    // At once, in the same transaction: no AI run starts for them after this commits.
    if consent.purpose == Purpose::AiProcessing {
        super::restrict_on(&mut tx, &ctx, consent.contact_id, true, "consent_revoked").await?;
    }
    tx.commit().await?;
    Ok(Json(consent))
}

/// Whether a contact's standing consent allows `purpose`: the one check every sender that needs
/// a purpose (a campaign, a survey) makes, on its own transaction, right before it sends.
pub async fn allows(conn: &mut PgConnection, contact_id: Uuid, purpose: Purpose) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (
               SELECT 1 FROM consent
               WHERE tenant_id = current_tenant_id() AND contact_id = $1 AND purpose = $2
                 AND revoked_at IS NULL
           ) AS "allowed!""#,
        contact_id,
        purpose.as_str()
    )
    .fetch_one(conn)
    .await?)
}

/// A data subject's erasure (DSR-3), consents' part. `keep_rows`: anonymise (purpose, basis,
/// source and times stay as the record of what was agreed; the free text goes); otherwise the
/// consents are deleted with the person.
pub(crate) async fn erase(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    contact_id: Uuid,
    keep_rows: bool,
) -> Result<i64> {
    let n = if keep_rows {
        sqlx::query!(
            "UPDATE consent SET text_version = NULL WHERE tenant_id = $1 AND contact_id = $2",
            tenant_id,
            contact_id
        )
        .execute(conn)
        .await?
    } else {
        sqlx::query!(
            "DELETE FROM consent WHERE tenant_id = $1 AND contact_id = $2",
            tenant_id,
            contact_id
        )
        .execute(conn)
        .await?
    };
    Ok(n.rows_affected() as i64)
}
