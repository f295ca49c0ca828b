//! Deals: a possible sale to an account, worth a value in a currency, owned by a member, with
//! the contacts it is with, sitting in one stage of one pipeline until it is won or lost (a
//! loss with its reason). Every entry into a stage is a `deal_stage_change` row (from, to, at,
//! by), which the stage history and the pipeline's report read. Every change is audited with
//! before and after (AUD-1). A partner (SEC-2) sees only the deals marked shared of accounts
//! shared with its organisation: the queries say so and the row policies of migration 0040
//! back them.

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sqlx::PgConnection;
use time::{Date, OffsetDateTime};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::pipelines::{self, Stage};
use super::{begin, long_text, one_line, partner_scope};
use crate::audit::AuditEvent;
use crate::crm::accounts::{self, like_pattern};
use crate::crm::{contacts, page_limit};
use crate::db::{Db, Tx};
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Ctx, Json, Page, Path, Query};
use crate::rbac::Permission;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    use Permission::*;
    api.endpoint(
        Method::GET,
        "/api/v1/deals",
        Requires(DealsRead),
        (
            "deals",
            "List and search deals, newest first (a partner sees the shared ones only)",
        ),
        Contract::new()
            .query::<ListQuery>()
            .ok_page::<DealView>()
            .error(StatusCode::BAD_REQUEST, "invalid_limit")
            .error(StatusCode::BAD_REQUEST, "invalid_filter"),
        list_route,
    )
    .endpoint(
        Method::POST,
        "/api/v1/deals",
        Requires(DealsWrite),
        (
            "deals",
            "Create a deal, in the first stage of the default pipeline unless one is named",
        ),
        Contract::new()
            .body::<NewDeal>()
            .created::<DealView>()
            .error(StatusCode::BAD_REQUEST, "invalid_text")
            .error(StatusCode::BAD_REQUEST, "invalid_currency")
            .error(StatusCode::BAD_REQUEST, "invalid_value")
            .error(StatusCode::BAD_REQUEST, "invalid_contacts")
            .error(StatusCode::NOT_FOUND, "not_found")
            .error(StatusCode::CONFLICT, "stage_of_another_pipeline"),
        create_route,
    )
    .endpoint(
        Method::GET,
        "/api/v1/deals/{deal_id}",
        Requires(DealsRead),
        ("deals", "Show a deal"),
        Contract::new().ok::<DealView>(),
        show_route,
    )
    .endpoint(
        Method::PATCH,
        "/api/v1/deals/{deal_id}",
        Requires(DealsWrite),
        (
            "deals",
            "Change a deal or move it to another stage: an absent field stays, `null` clears it",
        ),
        Contract::new()
            .body::<DealChanges>()
            .ok::<DealView>()
            .error(StatusCode::BAD_REQUEST, "invalid_text")
            .error(StatusCode::BAD_REQUEST, "invalid_currency")
            .error(StatusCode::BAD_REQUEST, "invalid_value")
            .error(StatusCode::BAD_REQUEST, "invalid_contacts")
            .error(StatusCode::CONFLICT, "deal_closed")
            .error(StatusCode::CONFLICT, "stage_of_another_pipeline"),
        update_route,
    )
    .endpoint(
        Method::DELETE,
        "/api/v1/deals/{deal_id}",
        Requires(DealsWrite),
        ("deals", "Delete a deal with its stage history"),
        Contract::new().no_content(),
        delete_route,
    )
    .endpoint(
        Method::GET,
        "/api/v1/deals/{deal_id}/stages",
        Requires(DealsRead),
        (
            "deals",
            "The deal's stage history, oldest first: each entry into a stage, from which, when and by whom",
        ),
        Contract::new().ok_list::<StageChangeView>(),
        history_route,
    )
    .endpoint(
        Method::POST,
        "/api/v1/deals/{deal_id}/won",
        Requires(DealsWrite),
        ("deals", "Mark an open deal won"),
        Contract::new()
            .ok::<DealView>()
            .error(StatusCode::CONFLICT, "deal_closed"),
        won_route,
    )
    .endpoint(
        Method::POST,
        "/api/v1/deals/{deal_id}/lost",
        Requires(DealsWrite),
        ("deals", "Mark an open deal lost, with the reason"),
        Contract::new()
            .body::<LostBody>()
            .ok::<DealView>()
            .error(StatusCode::BAD_REQUEST, "invalid_text")
            .error(StatusCode::CONFLICT, "deal_closed"),
        lost_route,
    )
    .endpoint(
        Method::POST,
        "/api/v1/deals/{deal_id}/reopen",
        Requires(DealsWrite),
        ("deals", "Reopen a won or lost deal, in the stage it was in"),
        Contract::new()
            .ok::<DealView>()
            .error(StatusCode::CONFLICT, "deal_open"),
        reopen_route,
    )
}

// ---- Vocabulary ----

/// Where a deal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[schema(as = DealStatus)]
pub enum Status {
    Open,
    Won,
    Lost,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Open, Status::Won, Status::Lost];

    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Won => "won",
            Status::Lost => "lost",
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Status::Open => "Open",
            Status::Won => "Won",
            Status::Lost => "Lost",
        }
    }

    pub fn parse(raw: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// The active ISO 4217 currency codes (funds, metals and testing codes left out).
pub const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// How many digits of a currency's amount are minor units (cents): 2 unless ISO 4217 says 0 or 3.
pub fn minor_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// The largest value a deal may have, in minor units.
pub const MAX_VALUE: i64 = 1_000_000_000_000_000;

fn currency(raw: &str) -> Result<String> {
    let code = raw.trim();
    if !CURRENCIES.contains(&code) {
        return Err(Error::bad_request(
            "invalid_currency",
            format!("{code:?} is not an ISO 4217 currency code (such as EUR, USD, BRL)"),
        ));
    }
    Ok(code.to_string())
}

fn value(raw: i64) -> Result<i64> {
    if !(0..=MAX_VALUE).contains(&raw) {
        return Err(Error::bad_request(
            "invalid_value",
            "value is a whole number of minor units (cents), 0 to 10^15",
        ));
    }
    Ok(raw)
}

/// An amount as people write it in major units (`1200`, `1,200.50`) in minor units of
/// `currency`; `None` when it is not one.
pub fn parse_amount(raw: &str, currency: &str) -> Option<i64> {
    let digits = minor_digits(currency);
    let cleaned: String = raw
        .trim()
        .chars()
        .filter(|c| *c != ',' && *c != ' ')
        .collect();
    let (whole, fraction) = cleaned.split_once('.').unwrap_or((&cleaned, ""));
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    if fraction.len() > digits as usize {
        return None;
    }
    let scale = 10i64.pow(digits);
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<width$}", width = digits as usize)
            .parse()
            .ok()?
    };
    let minor = whole.checked_mul(scale)?.checked_add(fraction)?;
    (minor <= MAX_VALUE).then_some(minor)
}

/// A value for people: `EUR 1,200.50`.
pub fn display_value(minor: i64, currency: &str) -> String {
    let digits = minor_digits(currency);
    let scale = 10i64.pow(digits);
    let whole = (minor / scale).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if digits == 0 {
        format!("{currency} {grouped}")
    } else {
        format!(
            "{currency} {grouped}.{:0width$}",
            minor % scale,
            width = digits as usize
        )
    }
}

const DATE: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// A calendar date as `2027-01-15`.
pub fn parse_date(raw: &str) -> std::result::Result<Date, String> {
    Date::parse(raw.trim(), DATE).map_err(|_| format!("{raw:?} is not a date (2027-01-15)"))
}

pub fn format_date(date: Date) -> String {
    date.format(DATE).unwrap_or_default()
}

fn date_out<S: Serializer>(date: &Option<Date>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match date {
        Some(d) => s.serialize_some(&format_date(*d)),
        None => s.serialize_none(),
    }
}

/// A date, or `null` to clear; absent stays.
fn date_in<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Option<Date>>, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    raw.map(|s| parse_date(&s).map_err(serde::de::Error::custom))
        .transpose()
        .map(Some)
}

fn currency_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::http::contract::schema(serde_json::json!({ "type": "string", "enum": CURRENCIES }))
}

/// The most contacts one deal names.
const MAX_CONTACTS: usize = 50;

fn contacts_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::http::contract::schema(serde_json::json!({
        "type": "array", "maxItems": MAX_CONTACTS,
        "items": { "type": "string", "format": "uuid" }
    }))
}

// ---- Views ----

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Deal)]
pub struct DealView {
    pub id: Uuid,
    pub name: String,
    /// In minor units of the currency (cents): 120050 EUR is EUR 1,200.50.
    pub value_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// A date (2027-01-15).
    #[serde(serialize_with = "date_out")]
    #[schema(value_type = Option<String>, format = Date, required = true)]
    pub expected_close_on: Option<Date>,
    /// The member who owns it.
    #[schema(required = true)]
    pub owner_id: Option<Uuid>,
    #[schema(required = true)]
    pub account_id: Option<Uuid>,
    pub contact_ids: Vec<Uuid>,
    pub pipeline_id: Uuid,
    pub stage_id: Uuid,
    pub stage_name: String,
    /// The stage's probability, in percent.
    pub probability: i32,
    /// When it entered its present stage.
    #[serde(with = "time::serde::rfc3339")]
    pub stage_entered_at: OffsetDateTime,
    pub status: Status,
    /// Why it was lost; set exactly when lost.
    #[schema(required = true)]
    pub lost_reason: Option<String>,
    /// When it was won or lost.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub closed_at: Option<OffsetDateTime>,
    #[schema(required = true)]
    pub closed_by: Option<Uuid>,
    /// Shown to the partner organisation of its account.
    pub shared: bool,
    #[schema(required = true)]
    pub created_by: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = DealStageChange)]
pub struct StageChangeView {
    pub id: Uuid,
    /// `null` for the stage the deal was created in (and for a stage since removed).
    #[schema(required = true)]
    pub from_stage_id: Option<Uuid>,
    #[schema(required = true)]
    pub from_stage_name: Option<String>,
    /// `null` for a stage since removed.
    #[schema(required = true)]
    pub to_stage_id: Option<Uuid>,
    pub to_stage_name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub changed_at: OffsetDateTime,
    #[schema(required = true)]
    pub changed_by: Option<Uuid>,
}

/// One deal of the caller's tenant (and, for a partner, shared with it), or 404.
pub async fn fetch(conn: &mut PgConnection, partner: Option<Uuid>, id: Uuid) -> Result<DealView> {
    sqlx::query_as!(
        DealView,
        r#"SELECT d.id, d.name, d.value_minor, d.currency, d.expected_close_on, d.owner_id,
                  d.account_id,
                  ARRAY(SELECT dc.contact_id FROM deal_contact dc
                        WHERE dc.tenant_id = d.tenant_id AND dc.deal_id = d.id
                        ORDER BY dc.contact_id) AS "contact_ids!",
                  d.pipeline_id, d.stage_id, s.name AS stage_name, s.probability,
                  d.stage_entered_at, d.status AS "status: Status", d.lost_reason, d.closed_at,
                  d.closed_by, d.shared, d.created_by, d.created_at, d.updated_at
           FROM deal d
           JOIN pipeline_stage s ON s.tenant_id = d.tenant_id AND s.id = d.stage_id
           WHERE d.id = $1 AND d.tenant_id = current_tenant_id()
             AND ($2::uuid IS NULL OR (d.shared AND EXISTS (
                    SELECT 1 FROM account a WHERE a.tenant_id = d.tenant_id
                      AND a.id = d.account_id AND a.partner_org_id = $2)))"#,
        id,
        partner
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

pub async fn show(db: &impl AsRef<Db>, ctx: &Ctx, id: Uuid) -> Result<DealView> {
    let partner = partner_scope(ctx)?;
    let mut tx = begin(db, ctx).await?;
    let deal = fetch(&mut tx, partner, id).await?;
    tx.commit().await?;
    Ok(deal)
}

/// The deal's stage history, oldest first.
pub async fn history(db: &impl AsRef<Db>, ctx: &Ctx, id: Uuid) -> Result<Vec<StageChangeView>> {
    let partner = partner_scope(ctx)?;
    let mut tx = begin(db, ctx).await?;
    fetch(&mut tx, partner, id).await?;
    let changes = sqlx::query_as!(
        StageChangeView,
        "SELECT id, from_stage_id, from_stage_name, to_stage_id, to_stage_name, changed_at, changed_by
         FROM deal_stage_change
         WHERE tenant_id = current_tenant_id() AND deal_id = $1
         ORDER BY changed_at, id",
        id
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(changes)
}

// ---- Listing ----

/// What a list asks for; every filter is optional and they combine.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub pipeline_id: Option<Uuid>,
    pub stage_id: Option<Uuid>,
    pub status: Option<Status>,
    pub owner_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub q: Option<String>,
    pub close_from: Option<Date>,
    pub close_until: Option<Date>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// The deals the caller may see that match, newest first.
pub async fn list(db: &impl AsRef<Db>, ctx: &Ctx, filter: &Filter) -> Result<Vec<DealView>> {
    let partner = partner_scope(ctx)?;
    let pattern = filter.q.as_deref().map(like_pattern);
    let mut tx = begin(db, ctx).await?;
    let rows = sqlx::query_as!(
        DealView,
        r#"SELECT d.id, d.name, d.value_minor, d.currency, d.expected_close_on, d.owner_id,
                  d.account_id,
                  ARRAY(SELECT dc.contact_id FROM deal_contact dc
                        WHERE dc.tenant_id = d.tenant_id AND dc.deal_id = d.id
                        ORDER BY dc.contact_id) AS "contact_ids!",
                  d.pipeline_id, d.stage_id, s.name AS stage_name, s.probability,
                  d.stage_entered_at, d.status AS "status: Status", d.lost_reason, d.closed_at,
                  d.closed_by, d.shared, d.created_by, d.created_at, d.updated_at
           FROM deal d
           JOIN pipeline_stage s ON s.tenant_id = d.tenant_id AND s.id = d.stage_id
           WHERE d.tenant_id = $1
             AND ($2::uuid IS NULL OR (d.shared AND EXISTS (
                    SELECT 1 FROM account a WHERE a.tenant_id = d.tenant_id
                      AND a.id = d.account_id AND a.partner_org_id = $2)))
             AND ($3::uuid IS NULL OR d.pipeline_id = $3)
             AND ($4::uuid IS NULL OR d.stage_id = $4)
             AND ($5::text IS NULL OR d.status = $5)
             AND ($6::uuid IS NULL OR d.owner_id = $6)
             AND ($7::uuid IS NULL OR d.account_id = $7)
             AND ($8::text IS NULL OR d.name ILIKE $8)
             AND ($9::date IS NULL OR d.expected_close_on >= $9)
             AND ($10::date IS NULL OR d.expected_close_on <= $10)
             AND ($11::uuid IS NULL OR d.id < $11)
           ORDER BY d.id DESC
           LIMIT $12"#,
        ctx.tenant_id,
        partner,
        filter.pipeline_id,
        filter.stage_id,
        filter.status.map(Status::as_str),
        filter.owner_id,
        filter.account_id,
        pattern,
        filter.close_from,
        filter.close_until,
        filter.after,
        filter.limit
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

/// How many open deals a board column shows at most.
pub const BOARD_LIMIT: i64 = 200;

/// A pipeline (the default one when none is named) and its open deals, each column newest
/// first, for the board.
pub async fn board(
    db: &impl AsRef<Db>,
    ctx: &Ctx,
    pipeline_id: Option<Uuid>,
) -> Result<(pipelines::PipelineView, Vec<DealView>)> {
    let pipeline = match pipeline_id {
        Some(id) => pipelines::show(db, ctx, id).await?,
        None => {
            let all = pipelines::list(db, ctx).await?;
            all.into_iter()
                .find(|p| p.is_default)
                .ok_or(Error::NotFound)?
        }
    };
    let partner = partner_scope(ctx)?;
    let mut tx = begin(db, ctx).await?;
    let deals = sqlx::query_as!(
        DealView,
        r#"SELECT d.id, d.name, d.value_minor, d.currency, d.expected_close_on, d.owner_id,
                  d.account_id,
                  ARRAY(SELECT dc.contact_id FROM deal_contact dc
                        WHERE dc.tenant_id = d.tenant_id AND dc.deal_id = d.id
                        ORDER BY dc.contact_id) AS "contact_ids!",
                  d.pipeline_id, d.stage_id, s.name AS stage_name, s.probability,
                  d.stage_entered_at, d.status AS "status: Status", d.lost_reason, d.closed_at,
                  d.closed_by, d.shared, d.created_by, d.created_at, d.updated_at
           FROM pipeline_stage s
           CROSS JOIN LATERAL (
               SELECT * FROM deal d
               WHERE d.tenant_id = s.tenant_id AND d.stage_id = s.id AND d.status = 'open'
                 AND ($2::uuid IS NULL OR (d.shared AND EXISTS (
                        SELECT 1 FROM account a WHERE a.tenant_id = d.tenant_id
                          AND a.id = d.account_id AND a.partner_org_id = $2)))
               ORDER BY d.id DESC LIMIT $3) d
           WHERE s.tenant_id = current_tenant_id() AND s.pipeline_id = $1
           ORDER BY s.position, d.id DESC"#,
        pipeline.id,
        partner,
        BOARD_LIMIT
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((pipeline, deals))
}

/// The deals a contact is on, each with its stage history: for their export (DSR-1).
pub async fn export_rows(
    conn: &mut PgConnection,
    contact_id: Uuid,
) -> Result<Vec<serde_json::Value>> {
    Ok(sqlx::query_scalar!(
        r#"SELECT to_jsonb(d) || jsonb_build_object('stage_changes',
                      (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.changed_at, c.id), '[]'::jsonb)
                       FROM deal_stage_change c WHERE c.tenant_id = d.tenant_id AND c.deal_id = d.id)) AS "row!"
           FROM deal d
           WHERE d.tenant_id = current_tenant_id()
             AND EXISTS (SELECT 1 FROM deal_contact dc
                         WHERE dc.tenant_id = d.tenant_id AND dc.deal_id = d.id AND dc.contact_id = $1)
           ORDER BY d.created_at, d.id"#,
        contact_id
    )
    .fetch_all(conn)
    .await?)
}

// ---- Input ----

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewDeal)]
pub struct NewDeal {
    #[schema(min_length = 1, max_length = 300, pattern = "$one_line")]
    pub name: String,
    /// In minor units of the currency (cents).
    #[schema(minimum = 0, maximum = 1000000000000000_i64)]
    pub value_minor: i64,
    /// ISO 4217.
    #[schema(schema_with = currency_schema)]
    pub currency: String,
    /// A date (2027-01-15).
    #[serde(default, deserialize_with = "date_in")]
    #[schema(value_type = Option<String>, format = Date)]
    pub expected_close_on: Option<Option<Date>>,
    /// A member; the caller when absent.
    pub owner_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    #[schema(schema_with = contacts_schema)]
    pub contact_ids: Option<Vec<Uuid>>,
    /// The default pipeline when absent (or the named stage's).
    pub pipeline_id: Option<Uuid>,
    /// The pipeline's first stage when absent.
    pub stage_id: Option<Uuid>,
    pub shared: Option<bool>,
}

/// The fields to change; an absent field stays as it is, `null` clears it. Naming another
/// stage (or pipeline) moves the deal there and records the move.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DealChanges)]
pub struct DealChanges {
    #[schema(min_length = 1, max_length = 300, pattern = "$one_line")]
    pub name: Option<String>,
    #[schema(minimum = 0, maximum = 1000000000000000_i64)]
    pub value_minor: Option<i64>,
    #[schema(schema_with = currency_schema)]
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "date_in")]
    #[schema(value_type = Option<String>, format = Date)]
    pub expected_close_on: Option<Option<Date>>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<Uuid>)]
    pub owner_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "crate::http::explicit_null")]
    #[schema(value_type = Option<Uuid>)]
    pub account_id: Option<Option<Uuid>>,
    /// All the deal's contacts (replaces the list).
    #[schema(schema_with = contacts_schema)]
    pub contact_ids: Option<Vec<Uuid>>,
    /// Another pipeline: the deal moves to its first stage unless `stage_id` names one of it.
    pub pipeline_id: Option<Uuid>,
    pub stage_id: Option<Uuid>,
    pub shared: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DealLost)]
pub struct LostBody {
    /// Why the deal was lost.
    #[schema(min_length = 1, max_length = 1000, pattern = "$not_blank")]
    pub reason: String,
}

fn contact_list(raw: Vec<Uuid>) -> Result<Vec<Uuid>> {
    let mut ids = raw;
    if ids.len() > MAX_CONTACTS {
        return Err(Error::bad_request(
            "invalid_contacts",
            format!("a deal names at most {MAX_CONTACTS} contacts"),
        ));
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

async fn set_contacts(tx: &mut Tx, deal_id: Uuid, ids: &[Uuid]) -> Result<()> {
    for id in ids {
        // Another tenant's contact is not found.
        contacts::fetch(tx, *id).await?;
    }
    sqlx::query!(
        "DELETE FROM deal_contact
         WHERE tenant_id = current_tenant_id() AND deal_id = $1 AND NOT (contact_id = ANY ($2))",
        deal_id,
        ids
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "INSERT INTO deal_contact (tenant_id, deal_id, contact_id)
         SELECT current_tenant_id(), $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING",
        deal_id,
        ids
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn record_move(
    tx: &mut Tx,
    ctx: &Ctx,
    deal_id: Uuid,
    from: Option<&Stage>,
    to: &Stage,
) -> Result<()> {
    sqlx::query!(
        "INSERT INTO deal_stage_change (id, tenant_id, deal_id, from_stage_id, from_stage_name,
                                        to_stage_id, to_stage_name, changed_by)
         VALUES ($1, current_tenant_id(), $2, $3, $4, $5, $6, $7)",
        Uuid::now_v7(),
        deal_id,
        from.map(|s| s.id),
        from.map(|s| s.name.clone()),
        to.id,
        to.name,
        ctx.member_id
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The stage a deal goes to: the named one (of the named pipeline, if one is named), or the
/// first stage of the named pipeline.
async fn target_stage(tx: &mut Tx, pipeline_id: Uuid, stage_id: Option<Uuid>) -> Result<Stage> {
    match stage_id {
        Some(id) => {
            let stage = pipelines::stage(tx, id).await?;
            if stage.pipeline_id != pipeline_id {
                return Err(Error::conflict(
                    "stage_of_another_pipeline",
                    "that stage belongs to another pipeline",
                ));
            }
            Ok(stage)
        }
        None => {
            let pipeline = pipelines::fetch(tx, pipeline_id).await?;
            let first = pipeline.stages.first().ok_or(Error::NotFound)?;
            pipelines::stage(tx, first.id).await
        }
    }
}

// ---- Changes ----

#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id))]
pub async fn create(db: &impl AsRef<Db>, ctx: &Ctx, new: NewDeal) -> Result<DealView> {
    let name = one_line("name", &new.name, 300)?;
    let value_minor = value(new.value_minor)?;
    let currency = currency(&new.currency)?;
    let contact_ids = contact_list(new.contact_ids.unwrap_or_default())?;
    let mut tx = ctx.begin(db).await?;
    let pipeline_id = match (new.pipeline_id, new.stage_id) {
        (Some(p), _) => pipelines::fetch(&mut tx, p).await?.id,
        (None, Some(s)) => pipelines::stage(&mut tx, s).await?.pipeline_id,
        (None, None) => pipelines::default_pipeline(&mut tx, ctx).await?.id,
    };
    let stage = target_stage(&mut tx, pipeline_id, new.stage_id).await?;
    if let Some(account) = new.account_id {
        accounts::fetch(&mut tx, account).await?;
    }
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO deal (id, tenant_id, name, value_minor, currency, expected_close_on, owner_id,
                           account_id, pipeline_id, stage_id, shared, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        id,
        ctx.tenant_id,
        name,
        value_minor,
        currency,
        new.expected_close_on.flatten(),
        new.owner_id.unwrap_or(ctx.member_id),
        new.account_id,
        pipeline_id,
        stage.id,
        new.shared.unwrap_or(false),
        ctx.member_id
    )
    .execute(&mut *tx)
    .await?;
    set_contacts(&mut tx, id, &contact_ids).await?;
    record_move(&mut tx, ctx, id, None, &stage).await?;
    let deal = fetch(&mut tx, None, id).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("deal.created", "deal", id).after(&deal),
    )
    .await?;
    tx.commit().await?;
    Ok(deal)
}

#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, deal_id = %id))]
pub async fn update(
    db: &impl AsRef<Db>,
    ctx: &Ctx,
    id: Uuid,
    changes: DealChanges,
) -> Result<DealView> {
    let mut tx = ctx.begin(db).await?;
    let before = fetch(&mut tx, None, id).await?;
    let name = match &changes.name {
        Some(n) => one_line("name", n, 300)?,
        None => before.name.clone(),
    };
    let value_minor = value(changes.value_minor.unwrap_or(before.value_minor))?;
    let currency = match &changes.currency {
        Some(c) => currency(c)?,
        None => before.currency.clone(),
    };
    let contact_ids = changes.contact_ids.map(contact_list).transpose()?;
    if let Some(Some(account)) = changes.account_id {
        accounts::fetch(&mut tx, account).await?;
    }
    let pipeline_id = match changes.pipeline_id {
        Some(p) => pipelines::fetch(&mut tx, p).await?.id,
        None => before.pipeline_id,
    };
    let moving =
        pipeline_id != before.pipeline_id || changes.stage_id.is_some_and(|s| s != before.stage_id);
    let stage = if moving {
        let stage = target_stage(&mut tx, pipeline_id, changes.stage_id).await?;
        if before.status != Status::Open {
            return Err(Error::conflict(
                "deal_closed",
                "the deal is won or lost: reopen it to move it",
            ));
        }
        Some(stage)
    } else {
        None
    };
    sqlx::query!(
        "UPDATE deal SET name = $2, value_minor = $3, currency = $4, expected_close_on = $5,
                owner_id = $6, account_id = $7, pipeline_id = $8, stage_id = $9, shared = $10,
                stage_entered_at = CASE WHEN $11 THEN now() ELSE stage_entered_at END,
                updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        name,
        value_minor,
        currency,
        changes
            .expected_close_on
            .unwrap_or(before.expected_close_on),
        changes.owner_id.unwrap_or(before.owner_id),
        changes.account_id.unwrap_or(before.account_id),
        pipeline_id,
        stage.as_ref().map_or(before.stage_id, |s| s.id),
        changes.shared.unwrap_or(before.shared),
        moving
    )
    .execute(&mut *tx)
    .await?;
    if let Some(ids) = &contact_ids {
        set_contacts(&mut tx, id, ids).await?;
    }
    if let Some(to) = &stage {
        let from = pipelines::stage(&mut tx, before.stage_id).await?;
        record_move(&mut tx, ctx, id, Some(&from), to).await?;
    }
    let after = fetch(&mut tx, None, id).await?;
    let action = if moving { "deal.moved" } else { "deal.updated" };
    ctx.audit(
        &mut tx,
        AuditEvent::new(action, "deal", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// How a deal ends.
#[derive(Debug, Clone)]
pub enum Outcome {
    Won,
    Lost { reason: String },
}

/// Marks an open deal won or lost, audited as `deal.won` / `deal.lost`.
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, deal_id = %id))]
pub async fn close(db: &impl AsRef<Db>, ctx: &Ctx, id: Uuid, outcome: Outcome) -> Result<DealView> {
    let (status, reason) = match &outcome {
        Outcome::Won => (Status::Won, None),
        Outcome::Lost { reason } => {
            let reason = long_text("reason", reason, 1000)?;
            if reason.is_empty() {
                return Err(Error::bad_request(
                    "invalid_text",
                    "a lost deal needs the reason",
                ));
            }
            (Status::Lost, Some(reason))
        }
    };
    let mut tx = ctx.begin(db).await?;
    let before = fetch(&mut tx, None, id).await?;
    if before.status != Status::Open {
        return Err(Error::conflict(
            "deal_closed",
            format!("the deal is already {}", before.status.as_str()),
        ));
    }
    sqlx::query!(
        "UPDATE deal SET status = $2, lost_reason = $3, closed_at = now(), closed_by = $4,
                updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        status.as_str(),
        reason,
        ctx.member_id
    )
    .execute(&mut *tx)
    .await?;
    let after = fetch(&mut tx, None, id).await?;
    let action = match outcome {
        Outcome::Won => "deal.won",
        Outcome::Lost { .. } => "deal.lost",
    };
    ctx.audit(
        &mut tx,
        AuditEvent::new(action, "deal", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Opens a won or lost deal again, in the stage it was in.
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, deal_id = %id))]
pub async fn reopen(db: &impl AsRef<Db>, ctx: &Ctx, id: Uuid) -> Result<DealView> {
    let mut tx = ctx.begin(db).await?;
    let before = fetch(&mut tx, None, id).await?;
    if before.status == Status::Open {
        return Err(Error::conflict("deal_open", "the deal is open"));
    }
    sqlx::query!(
        "UPDATE deal SET status = 'open', lost_reason = NULL, closed_at = NULL, closed_by = NULL,
                updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .execute(&mut *tx)
    .await?;
    let after = fetch(&mut tx, None, id).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("deal.reopened", "deal", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, deal_id = %id))]
pub async fn delete(db: &impl AsRef<Db>, ctx: &Ctx, id: Uuid) -> Result<()> {
    let mut tx = ctx.begin(db).await?;
    let before = fetch(&mut tx, None, id).await?;
    sqlx::query!(
        "DELETE FROM deal WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .execute(&mut *tx)
    .await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("deal.deleted", "deal", id).before(&before),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

// ---- Routes ----

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    pipeline_id: Option<Uuid>,
    stage_id: Option<Uuid>,
    status: Option<Status>,
    owner_id: Option<Uuid>,
    account_id: Option<Uuid>,
    /// A case-insensitive part of the name.
    q: Option<String>,
    /// Expected to close on or after this date.
    #[param(value_type = Option<String>, format = Date)]
    close_from: Option<String>,
    /// Expected to close on or before this date.
    #[param(value_type = Option<String>, format = Date)]
    close_until: Option<String>,
    /// The last id of the previous page (its `next_cursor`).
    after: Option<Uuid>,
    /// 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

fn date_filter(field: &str, raw: Option<&str>) -> Result<Option<Date>> {
    raw.map(|r| {
        parse_date(r).map_err(|e| Error::bad_request("invalid_filter", format!("{field}: {e}")))
    })
    .transpose()
}

async fn list_route(
    State(db): State<Db>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> Result<Json<Page<DealView>>> {
    let limit = page_limit(query.limit)?;
    if query.q.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(Error::bad_request(
            "invalid_filter",
            "search for at most 200 characters",
        ));
    }
    let filter = Filter {
        pipeline_id: query.pipeline_id,
        stage_id: query.stage_id,
        status: query.status,
        owner_id: query.owner_id,
        account_id: query.account_id,
        q: query.q,
        close_from: date_filter("close_from", query.close_from.as_deref())?,
        close_until: date_filter("close_until", query.close_until.as_deref())?,
        after: query.after,
        limit,
    };
    let items = list(&db, &ctx, &filter).await?;
    Ok(Json(Page::new(items, limit, |d| d.id)))
}

async fn create_route(
    State(db): State<Db>,
    ctx: Ctx,
    Json(body): Json<NewDeal>,
) -> Result<(StatusCode, Json<DealView>)> {
    Ok((StatusCode::CREATED, Json(create(&db, &ctx, body).await?)))
}

async fn show_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<DealView>> {
    Ok(Json(show(&db, &ctx, id).await?))
}

async fn update_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<DealChanges>,
) -> Result<Json<DealView>> {
    Ok(Json(update(&db, &ctx, id, body).await?))
}

async fn delete_route(State(db): State<Db>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<StatusCode> {
    delete(&db, &ctx, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn history_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<Vec<StageChangeView>>> {
    Ok(Json(history(&db, &ctx, id).await?))
}

async fn won_route(State(db): State<Db>, ctx: Ctx, Path(id): Path<Uuid>) -> Result<Json<DealView>> {
    Ok(Json(close(&db, &ctx, id, Outcome::Won).await?))
}

async fn lost_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<LostBody>,
) -> Result<Json<DealView>> {
    Ok(Json(
        close(
            &db,
            &ctx,
            id,
            Outcome::Lost {
                reason: body.reason,
            },
        )
        .await?,
    ))
}

async fn reopen_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<DealView>> {
    Ok(Json(reopen(&db, &ctx, id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_in_the_minor_units_of_their_currency() {
        assert_eq!(parse_amount("1,200.5", "EUR"), Some(120_050));
        assert_eq!(parse_amount("1200", "USD"), Some(120_000));
        assert_eq!(parse_amount("1200", "JPY"), Some(1200));
        assert_eq!(parse_amount("12.5", "JPY"), None);
        assert_eq!(parse_amount("1.234", "KWD"), Some(1234));
        assert_eq!(parse_amount("-5", "EUR"), None);
        assert_eq!(parse_amount("", "EUR"), None);
    }

    #[test]
    fn values_are_shown_in_major_units_with_their_currency() {
        assert_eq!(display_value(120_050, "EUR"), "EUR 1,200.50");
        assert_eq!(display_value(5, "USD"), "USD 0.05");
        assert_eq!(display_value(1_234_567, "JPY"), "JPY 1,234,567");
    }

    #[test]
    fn only_iso_4217_codes_are_currencies() {
        assert!(currency("EUR").is_ok());
        assert!(currency("eur").is_err());
        assert!(currency("EURO").is_err());
        assert!(currency("XYZ").is_err());
    }
}
