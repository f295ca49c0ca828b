//! Contacts: the end customers. Created by members or upserted from a channel identity (a
//! WhatsApp id, a verified web-chat user id).

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::accounts::like_pattern;
use super::{check_attributes, page_limit};
use crate::audit::{AuditEvent, AuditSource};
use crate::auth::Ctx;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::http::Page;
use crate::http::{Access, Api, Contract, Json, Path, Query};
use crate::rbac::Permission;
use crate::tenants::members::Email;
use utoipa::{IntoParams, ToSchema};

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    api.endpoint(
        Method::GET,
        "/api/v1/contacts",
        Requires(Permission::ContactsRead),
        ("crm", "List and search contacts"),
        Contract::new()
            .query::<ListQuery>()
            .ok_page::<ContactView>()
            .error(StatusCode::BAD_REQUEST, "invalid_limit"),
        list,
    )
    .endpoint(
        Method::POST,
        "/api/v1/contacts",
        Requires(Permission::ContactsWrite),
        ("crm", "Create a contact"),
        written(Contract::new())
            // Something to know the person by.
            .body_rule(json!({ "anyOf": IDENTIFIERS.map(|field| {
                json!({ "required": [field], "properties": { field: { "type": "string" } } })
            }) }))
            .created::<ContactView>()
            .error(StatusCode::BAD_REQUEST, "empty_contact")
            .error(StatusCode::NOT_FOUND, "not_found"),
        create,
    )
    .endpoint(
        Method::GET,
        "/api/v1/contacts/{contact_id}",
        Requires(Permission::ContactsRead),
        ("crm", "Show a contact"),
        Contract::new().ok::<ContactView>(),
        show,
    )
    .endpoint(
        Method::PATCH,
        "/api/v1/contacts/{contact_id}",
        Requires(Permission::ContactsWrite),
        ("crm", "Correct a contact's fields"),
        written(Contract::new().ok::<ContactView>()),
        update,
    )
}

/// A WhatsApp id as Meta gives it: the number's digits, or, for a user who hides their number
/// behind a username, a business-scoped user id such as `US.13491208655302741918`.
fn valid_whatsapp_id(id: &str) -> bool {
    let digits = !id.is_empty() && id.len() <= 20 && id.chars().all(|c| c.is_ascii_digit());
    let bytes = id.as_bytes();
    let scoped = (4..=128).contains(&id.len())
        && bytes[0].is_ascii_uppercase()
        && bytes[1].is_ascii_uppercase()
        && bytes[2] == b'.'
        && id[3..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.');
    digits || scoped
}

/// A phone number in E.164 (`+` and 7 to 15 digits); common separators are accepted on input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E164(String);

impl E164 {
    pub fn parse(raw: &str) -> Result<Self> {
        let compact: String = raw
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let digits = compact.strip_prefix('+').unwrap_or(&compact);
        let valid = compact.starts_with('+')
            && (7..=15).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0');
        if valid {
            Ok(E164(compact))
        } else {
            Err(Error::bad_request(
                "invalid_phone",
                "phone must be in E.164 form, e.g. +5511987654321",
            ))
        }
    }

    /// A WhatsApp id is the number's digits with the country code.
    pub fn from_whatsapp_id(wa_id: &str) -> Option<Self> {
        E164::parse(&format!("+{wa_id}")).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Contact)]
pub struct ContactView {
    pub id: Uuid,
    pub account_id: Option<Uuid>,
    pub name: Option<String>,
    #[schema(format = Email)]
    pub email: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    pub whatsapp_id: Option<String>,
    /// The contact's id in the tenant's own systems.
    pub external_id: Option<String>,
    /// Free-form: the tenant's own fields, a JSON object of at most 16 KiB.
    #[schema(value_type = Object)]
    pub attributes: Value,
    /// Processing is restricted (DSR-4): the agent does not answer them, people do.
    pub restricted: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl ContactView {
    /// How the staff's pages name the contact: their name, else their phone or e-mail.
    pub fn shown_name(&self) -> String {
        shown_name(
            self.name.as_deref(),
            self.phone.as_deref(),
            self.email.as_deref(),
        )
    }
}

fn shown_name(name: Option<&str>, phone: Option<&str>, email: Option<&str>) -> String {
    name.or(phone)
        .or(email)
        .unwrap_or("Unknown visitor")
        .to_string()
}

/// How the staff's pages name these contacts, in one query: pairs of contact id and name,
/// for the contacts of the caller's tenant that exist.
pub async fn shown_names(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>> {
    let rows = sqlx::query!(
        "SELECT id, name, phone, email FROM contact
         WHERE id = ANY ($1) AND tenant_id = current_tenant_id()",
        ids
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let name = shown_name(r.name.as_deref(), r.phone.as_deref(), r.email.as_deref());
            (r.id, name)
        })
        .collect())
}

/// Up to `limit` contacts of an account, by name (the account page's people).
pub async fn of_account(
    conn: &mut PgConnection,
    account_id: Uuid,
    limit: i64,
) -> Result<Vec<ContactView>> {
    Ok(sqlx::query_as!(
        ContactView,
        "SELECT id, account_id, name, email, phone, whatsapp_id, external_id, attributes, restricted,
                created_at, updated_at
         FROM contact WHERE account_id = $1 AND tenant_id = current_tenant_id()
         ORDER BY name NULLS LAST, id LIMIT $2",
        account_id,
        limit
    )
    .fetch_all(conn)
    .await?)
}

pub async fn fetch(conn: &mut PgConnection, id: Uuid) -> Result<ContactView> {
    sqlx::query_as!(
        ContactView,
        "SELECT id, account_id, name, email, phone, whatsapp_id, external_id, attributes, restricted,
                created_at, updated_at
         FROM contact WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// A case-insensitive part of the name, email, phone or external id.
    q: Option<String>,
    /// Only the contacts of this account.
    account_id: Option<Uuid>,
    /// The last id of the previous page (its `next_cursor`).
    after: Option<Uuid>,
    /// 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

async fn list(
    State(state): State<Db>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> Result<Json<Page<ContactView>>> {
    let limit = page_limit(query.limit)?;
    let pattern = query.q.as_deref().map(like_pattern);
    let mut tx = ctx.begin(&state).await?;
    let items = sqlx::query_as!(
        ContactView,
        "SELECT id, account_id, name, email, phone, whatsapp_id, external_id, attributes, restricted,
                created_at, updated_at
         FROM contact
         WHERE tenant_id = $1
           AND ($2::text IS NULL OR name ILIKE $2 OR email ILIKE $2 OR phone ILIKE $2 OR external_id ILIKE $2)
           AND ($3::uuid IS NULL OR account_id = $3)
           AND ($4::uuid IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5",
        ctx.tenant_id,
        pattern,
        query.account_id,
        query.after,
        limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(Page::new(items, limit, |c| c.id)))
}

/// A contact to create (with at least one of name, email, phone, whatsapp_id, external_id), or
/// the fields to correct: an absent field stays as it is, `null` (or an empty text) clears it.
/// Texts are trimmed.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ContactFields)]
pub struct ContactBody {
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(max_length = 200, pattern = "$not_blank")]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(format = Email, max_length = 254)]
    pub email: Option<Option<String>>,
    /// E.164 (`+` and 7 to 15 digits); spaces, dashes, dots and parentheses are dropped.
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(pattern = "^[ .()-]*\\+[ .()-]*[1-9]([ .()-]*[0-9]){6,14}[ .()-]*$")]
    pub phone: Option<Option<String>>,
    /// The number's digits, or a WhatsApp user id such as `US.13491208655302741918`.
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(pattern = "^([0-9]{1,20}|[A-Z]{2}\\.[A-Za-z0-9.]{1,125})$")]
    pub whatsapp_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(max_length = 200, pattern = "$not_blank")]
    pub external_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    pub account_id: Option<Option<Uuid>>,
    /// Free-form: the tenant's own fields, a JSON object of at most 16 KiB.
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
}

struct Fields {
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    whatsapp_id: Option<String>,
    external_id: Option<String>,
    account_id: Option<Uuid>,
    attributes: Value,
}

fn merge(body: ContactBody, base: Option<&ContactView>) -> Result<Fields> {
    let pick = |new: Option<Option<String>>, old: Option<&Option<String>>| -> Option<String> {
        match new {
            Some(value) => value
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            None => old.cloned().flatten(),
        }
    };
    let email = pick(body.email, base.map(|b| &b.email))
        .map(|e| Email::parse(&e).map(|e| e.as_str().to_string()))
        .transpose()?;
    let phone = pick(body.phone, base.map(|b| &b.phone))
        .map(|p| E164::parse(&p).map(|p| p.0))
        .transpose()?;
    let whatsapp_id = pick(body.whatsapp_id, base.map(|b| &b.whatsapp_id));
    // What the channel stored stays acceptable as it is; a new value must look like Meta's.
    let unchanged = whatsapp_id.as_ref() == base.and_then(|b| b.whatsapp_id.as_ref());
    if !unchanged
        && whatsapp_id
            .as_deref()
            .is_some_and(|w| !valid_whatsapp_id(w))
    {
        return Err(Error::bad_request(
            "invalid_whatsapp_id",
            "whatsapp_id is the number's digits, or a WhatsApp user id such as US.13491208655302741918",
        ));
    }
    let attributes = body
        .attributes
        .or_else(|| base.map(|b| b.attributes.clone()))
        .unwrap_or_else(|| json!({}));
    check_attributes(&attributes)?;
    Ok(Fields {
        name: pick(body.name, base.map(|b| &b.name)),
        email,
        phone,
        whatsapp_id,
        external_id: pick(body.external_id, base.map(|b| &b.external_id)),
        account_id: body.account_id.unwrap_or(base.and_then(|b| b.account_id)),
        attributes,
    })
}

async fn create(
    State(state): State<Db>,
    ctx: Ctx,
    Json(body): Json<ContactBody>,
) -> Result<(StatusCode, Json<ContactView>)> {
    let f = merge(body, None)?;
    if f.name.is_none()
        && f.email.is_none()
        && f.phone.is_none()
        && f.whatsapp_id.is_none()
        && f.external_id.is_none()
    {
        return Err(Error::bad_request(
            "empty_contact",
            "a contact needs a name, email, phone, whatsapp_id or external_id",
        ));
    }
    let mut tx = ctx.begin(&state).await?;
    let contact = sqlx::query_as!(
        ContactView,
        "INSERT INTO contact (id, tenant_id, account_id, name, email, phone, whatsapp_id, external_id, attributes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         RETURNING id, account_id, name, email, phone, whatsapp_id, external_id, attributes, restricted,
                   created_at, updated_at",
        Uuid::now_v7(),
        ctx.tenant_id,
        f.account_id,
        f.name,
        f.email,
        f.phone,
        f.whatsapp_id,
        f.external_id,
        f.attributes
    )
    .fetch_one(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("contact.created", "contact", contact.id).after(&contact),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(contact)))
}

async fn show(
    State(state): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<ContactView>> {
    let mut tx = ctx.begin(&state).await?;
    let contact = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Json(contact))
}

async fn update(
    State(state): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<ContactBody>,
) -> Result<Json<ContactView>> {
    correct(&state, &ctx, id, body).await.map(Json)
}

/// Corrects a contact's fields (DSR-2): the fields `body` names change, an explicit null clears
/// one; audited with before and after.
pub async fn correct(state: &Db, ctx: &Ctx, id: Uuid, body: ContactBody) -> Result<ContactView> {
    let mut tx = ctx.begin(state).await?;
    let before = fetch(&mut tx, id).await?;
    let f = merge(body, Some(&before))?;
    let after = sqlx::query_as!(
        ContactView,
        "UPDATE contact SET account_id = $2, name = $3, email = $4, phone = $5, whatsapp_id = $6,
                external_id = $7, attributes = $8, updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()
         RETURNING id, account_id, name, email, phone, whatsapp_id, external_id, attributes, restricted,
                   created_at, updated_at",
        id,
        f.account_id,
        f.name,
        f.email,
        f.phone,
        f.whatsapp_id,
        f.external_id,
        f.attributes
    )
    .fetch_one(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("contact.updated", "contact", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// The values that identify a contact, read for an erasure (DSR-3): the erasure searches the
/// audit log for them, then removes them.
#[derive(Debug)]
pub struct Identity {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub whatsapp_id: Option<String>,
    pub external_id: Option<String>,
    /// Set once the contact was anonymised: there is nothing left to erase.
    pub anonymised: bool,
}

/// Locks the tenant's contact for an erasure and reads what identifies them. The erasure runs on
/// the owner pool, so the tenant is named, not left to row-level security.
pub async fn lock_for_erasure(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Identity> {
    sqlx::query_as!(
        Identity,
        r#"SELECT name, email, phone, whatsapp_id, external_id, anonymised_at IS NOT NULL AS "anonymised!"
           FROM contact WHERE tenant_id = $1 AND id = $2 FOR UPDATE"#,
        tenant_id,
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

/// Anonymises a contact (DSR-3): every identifying field goes, the row stays so their
/// conversations still count; they stay restricted (DSR-4), as nobody is there to answer.
pub async fn anonymise(conn: &mut PgConnection, tenant_id: Uuid, id: Uuid) -> Result<()> {
    sqlx::query!(
        "UPDATE contact
         SET name = NULL, email = NULL, phone = NULL, whatsapp_id = NULL, external_id = NULL,
             attributes = '{}', restricted = true, anonymised_at = now(), updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a contact for an erasure (DSR-3); a legal hold refuses it in the database.
pub async fn delete_for_erasure(conn: &mut PgConnection, tenant_id: Uuid, id: Uuid) -> Result<()> {
    sqlx::query!(
        "DELETE FROM contact WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets a contact's restriction of processing (DSR-4) on the caller's transaction; returns the
/// contact before and after. The privacy domain decides what else a restriction does.
pub async fn set_restricted(
    conn: &mut PgConnection,
    id: Uuid,
    restricted: bool,
) -> Result<(ContactView, ContactView)> {
    let before = fetch(&mut *conn, id).await?;
    let after = sqlx::query_as!(
        ContactView,
        "UPDATE contact SET restricted = $2, updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()
         RETURNING id, account_id, name, email, phone, whatsapp_id, external_id, attributes, restricted,
                   created_at, updated_at",
        id,
        restricted
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((before, after))
}

/// The caller's tenant's contact with this e-mail (e-mails are unique per tenant, in any case).
pub async fn find_by_email(conn: &mut PgConnection, email: &Email) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM contact
         WHERE tenant_id = current_tenant_id() AND email IS NOT NULL AND lower(email) = lower($1)",
        email.as_str()
    )
    .fetch_optional(conn)
    .await?)
}

/// The caller's tenant's contacts with this phone number, as their phone or as their WhatsApp
/// number (a WhatsApp id is the number's digits). Phone numbers are not unique: several
/// contacts may share one.
pub async fn find_by_phone(conn: &mut PgConnection, phone: &E164) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM contact
         WHERE tenant_id = current_tenant_id() AND (phone = $1 OR whatsapp_id = ltrim($1, '+'))
         ORDER BY id",
        phone.as_str()
    )
    .fetch_all(conn)
    .await?)
}

/// What the audit log records about a contact a channel created: the fields of a contact, as
/// for one a member creates, so every `contact.created` entry reads the same.
pub fn channel_contact(
    id: Uuid,
    name: Option<&str>,
    phone: Option<&str>,
    whatsapp_id: Option<&str>,
    external_id: Option<&str>,
    attributes: &Value,
) -> Value {
    json!({
        "id": id,
        "account_id": null,
        "name": name,
        "email": null,
        "phone": phone,
        "whatsapp_id": whatsapp_id,
        "external_id": external_id,
        "attributes": attributes,
        "restricted": false,
    })
}

/// The audit actor for changes a channel makes on a customer's behalf.
pub fn channel_source(tenant_id: Uuid, inbox_id: Uuid) -> AuditSource {
    AuditSource {
        tenant_id,
        actor_type: "channel",
        actor_id: Some(inbox_id.to_string()),
        meta: Default::default(),
    }
}

/// A contact the web chat identified by the tenant's own user id, as [`upsert_by_external_id`]
/// left it.
pub struct Identified {
    pub id: Uuid,
    /// Whether this call created the contact.
    pub inserted: bool,
    pub name: Option<String>,
    /// The name before the call (`None` for a new contact, or one that had none).
    pub prior_name: Option<String>,
}

/// Finds the tenant's contact with this external id, or creates it; a name fills in only a
/// missing one. On the caller's transaction; the caller audits what changed.
pub async fn upsert_by_external_id(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    name: Option<&str>,
    external_id: &str,
) -> Result<Identified> {
    // `prior` reads the snapshot before the upsert: whether a name was filled in.
    let row = sqlx::query!(
        r#"WITH prior AS (
                       SELECT name FROM contact WHERE tenant_id = $2 AND external_id = $4
                   ),
                   upserted AS (
                       INSERT INTO contact (id, tenant_id, name, external_id) VALUES ($1, $2, $3, $4)
                       ON CONFLICT (tenant_id, external_id) WHERE external_id IS NOT NULL
                       DO UPDATE SET name = COALESCE(contact.name, EXCLUDED.name)
                       RETURNING id, (xmax = 0) AS inserted, name
                   )
                   SELECT id AS "id!", inserted AS "inserted!", name,
                          (SELECT name FROM prior) AS prior_name
                   FROM upserted"#,
        Uuid::now_v7(),
        tenant_id,
        name,
        external_id
    )
    .fetch_one(conn)
    .await?;
    Ok(Identified {
        id: row.id,
        inserted: row.inserted,
        name: row.name,
        prior_name: row.prior_name,
    })
}

/// Creates a contact for an unverified web chat visitor (what they claim, such as an e-mail,
/// kept in `attributes`, never merged into an existing customer). On the caller's transaction;
/// the caller audits it.
pub async fn create_visitor(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    name: Option<&str>,
    attributes: &serde_json::Value,
) -> Result<Uuid> {
    Ok(sqlx::query_scalar!(
        "INSERT INTO contact (id, tenant_id, name, attributes) VALUES ($1, $2, $3, $4) RETURNING id",
        Uuid::now_v7(),
        tenant_id,
        name,
        attributes
    )
    .fetch_one(conn)
    .await?)
}

/// The fields a contact is known by: creating one needs at least one of them.
const IDENTIFIERS: [&str; 5] = ["name", "email", "phone", "whatsapp_id", "external_id"];

/// What creating and correcting a contact share: the body, and the refusals of its fields.
fn written(contract: Contract) -> Contract {
    contract
        .body::<ContactBody>()
        .error(StatusCode::BAD_REQUEST, "invalid_email")
        .error(StatusCode::BAD_REQUEST, "invalid_phone")
        .error(StatusCode::BAD_REQUEST, "invalid_whatsapp_id")
        .error(StatusCode::BAD_REQUEST, "invalid_attributes")
        .error(StatusCode::BAD_REQUEST, "name_too_long")
        .error(StatusCode::BAD_REQUEST, "external_id_too_long")
        .error(StatusCode::CONFLICT, "email_taken")
        .error(StatusCode::CONFLICT, "whatsapp_id_taken")
        .error(StatusCode::CONFLICT, "external_id_taken")
}

/// The whole contact row, every column as stored, for the person's own export (DSR-1); `None`
/// for another tenant's contact.
pub async fn export_row(conn: &mut PgConnection, id: Uuid) -> Result<Option<serde_json::Value>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT to_jsonb(c) AS "row!" FROM contact c WHERE id = $1 AND tenant_id = current_tenant_id()"#,
        id
    )
    .fetch_optional(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_normalised_to_e164_or_refused() {
        assert_eq!(
            E164::parse("+55 (11) 98765-4321").unwrap().as_str(),
            "+5511987654321"
        );
        assert_eq!(
            E164::from_whatsapp_id("4915112345678").unwrap().as_str(),
            "+4915112345678"
        );
        for bad in [
            "11987654321",
            "+0123456789",
            "+12",
            "+1234567890123456",
            "+55 11 abc",
        ] {
            assert!(E164::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn whatsapp_ids_are_digits_or_business_scoped_user_ids() {
        for good in [
            "16505551234",
            "US.13491208655302741918",
            "US.ENT.11815799212886844830",
        ] {
            assert!(valid_whatsapp_id(good), "{good} refused");
        }
        for bad in [
            "",
            "+16505551234",
            "us.123",
            "US.",
            "U.123",
            "US.12 34",
            "US.1/2",
        ] {
            assert!(!valid_whatsapp_id(bad), "{bad} accepted");
        }
    }
}
