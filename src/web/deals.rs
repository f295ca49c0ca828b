//! The deal pages: the board of a pipeline (a column per stage, a card per open deal, each card
//! with a stage select and a Move button that works without script), the list with its
//! filters, one deal with its edit, move, won and lost forms and its stage history, and the form
//! that creates a deal. Every change calls the cs domain's own functions, the ones the API's
//! routes call, so permissions and audit events are the same.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::inbox::{readable, rfc3339};
use super::{render, see_other, Chrome, Form};
use crate::app::AppState;
use crate::cs::deals::{
    self, display_value, format_date, parse_amount, parse_date, DealChanges, DealView, Filter,
    NewDeal, Outcome, Status, CURRENCIES,
};
use crate::cs::pipelines::{self, PipelineView};
use crate::error::{Error, Result};
use crate::http::{Access, Api, Ctx, Path, Query};
use crate::rbac::Permission;

const LIST: &str = "/app/deals";
const BOARD: &str = "/app/deals/board";
/// How many deals a list page shows.
const LIMIT: i64 = 50;

/// The deal pages, each with the access of the API route it stands for.
pub fn pages(api: Api<AppState>) -> Api<AppState> {
    use Access::*;
    use Permission::*;
    api.page(Method::GET, LIST, Requires(DealsRead), list)
        .page(Method::POST, LIST, Requires(DealsWrite), create)
        .page(Method::GET, BOARD, Requires(DealsRead), board)
        .page(
            Method::GET,
            "/app/deals/{deal_id}",
            Requires(DealsRead),
            show,
        )
        .page(
            Method::POST,
            "/app/deals/{deal_id}",
            Requires(DealsWrite),
            update,
        )
        .page(
            Method::POST,
            "/app/deals/{deal_id}/move",
            Requires(DealsWrite),
            move_deal,
        )
        .page(
            Method::POST,
            "/app/deals/{deal_id}/won",
            Requires(DealsWrite),
            won,
        )
        .page(
            Method::POST,
            "/app/deals/{deal_id}/lost",
            Requires(DealsWrite),
            lost,
        )
        .page(
            Method::POST,
            "/app/deals/{deal_id}/reopen",
            Requires(DealsWrite),
            reopen,
        )
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

fn blank(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn invalid(message: &str) -> Error {
    Error::bad_request("invalid_filter", message.to_string())
}

fn bad_form(message: &str) -> Error {
    Error::bad_request("invalid_form", message.to_string())
}

fn uuid_field(raw: &str, what: &str) -> Result<Option<Uuid>> {
    match raw.trim() {
        "" => Ok(None),
        raw => Uuid::parse_str(raw)
            .map(Some)
            .map_err(|_| bad_form(&format!("{what} is not an id"))),
    }
}

async fn staff(state: &AppState, ctx: &Ctx) -> Result<Vec<(Uuid, String)>> {
    let mut tx = ctx.begin(state).await?;
    let staff = crate::tenants::members::assignable(&mut tx).await?;
    tx.commit().await?;
    Ok(staff)
}

fn name_of(staff: &[(Uuid, String)], id: Option<Uuid>) -> String {
    id.and_then(|id| staff.iter().find(|(m, _)| *m == id))
        .map(|(_, n)| n.clone())
        .unwrap_or_default()
}

fn currencies(selected: &str) -> Vec<Choice> {
    CURRENCIES
        .iter()
        .map(|c| Choice {
            value: (*c).into(),
            label: (*c).into(),
            selected: *c == selected,
        })
        .collect()
}

fn board_href(pipeline: Uuid) -> String {
    format!("{BOARD}?pipeline={pipeline}")
}

fn stage_choices(pipeline: &PipelineView, current: Uuid) -> Vec<Choice> {
    pipeline
        .stages
        .iter()
        .map(|s| Choice {
            value: s.id.to_string(),
            label: s.name.clone(),
            selected: s.id == current,
        })
        .collect()
}

fn pipeline_choices(pipelines: &[PipelineView], current: Option<Uuid>) -> Vec<Choice> {
    pipelines
        .iter()
        .map(|p| Choice {
            value: p.id.to_string(),
            label: p.name.clone(),
            selected: Some(p.id) == current,
        })
        .collect()
}

// ---- The board ----

pub struct Card {
    pub id: Uuid,
    pub href: String,
    pub name: String,
    pub value: String,
    pub owner: String,
    pub stages: Vec<Choice>,
}

pub struct Column {
    pub id: Uuid,
    pub name: String,
    pub probability: i32,
    pub count: usize,
    pub total: String,
    pub cards: Vec<Card>,
}

#[derive(Template)]
#[template(path = "web/deals_board.html")]
struct BoardPage {
    chrome: Chrome,
    can_write: bool,
    pipeline_id: Uuid,
    pipeline_name: String,
    pipelines: Vec<Choice>,
    columns: Vec<Column>,
    currencies: Vec<Choice>,
}

#[derive(Deserialize, Default)]
pub struct BoardQuery {
    pipeline: Option<String>,
}

/// The sum of the column's values per currency (`EUR 1,000.00 + USD 50.00`).
fn totals(deals: &[&DealView]) -> String {
    let mut sums: Vec<(String, i64)> = Vec::new();
    for d in deals {
        match sums.iter_mut().find(|(c, _)| *c == d.currency) {
            Some((_, n)) => *n = n.saturating_add(d.value_minor),
            None => sums.push((d.currency.clone(), d.value_minor)),
        }
    }
    sums.sort();
    sums.iter()
        .map(|(c, n)| display_value(*n, c))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// `GET /app/deals/board`: the default pipeline's board, or the one `?pipeline=` names.
pub async fn board(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<BoardQuery>,
) -> Result<Response> {
    let pipeline_id = blank(&query.pipeline)
        .map(|p| Uuid::parse_str(p).map_err(|_| invalid("pipeline must be a pipeline id")))
        .transpose()?;
    let (pipeline, open) = deals::board(&state, &ctx, pipeline_id).await?;
    let all = pipelines::list(&state, &ctx).await?;
    let staff = staff(&state, &ctx).await?;
    let chrome = Chrome::new(&state, &ctx, "deals").await?;
    let columns = pipeline
        .stages
        .iter()
        .map(|s| {
            let here: Vec<&DealView> = open.iter().filter(|d| d.stage_id == s.id).collect();
            Column {
                id: s.id,
                name: s.name.clone(),
                probability: s.probability,
                count: here.len(),
                total: totals(&here),
                cards: here
                    .iter()
                    .map(|d| Card {
                        id: d.id,
                        href: format!("{LIST}/{}", d.id),
                        name: d.name.clone(),
                        value: display_value(d.value_minor, &d.currency),
                        owner: name_of(&staff, d.owner_id),
                        stages: stage_choices(&pipeline, d.stage_id),
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(render(&BoardPage {
        chrome,
        can_write: ctx.role.can(Permission::DealsWrite),
        pipeline_id: pipeline.id,
        pipeline_name: pipeline.name.clone(),
        pipelines: pipeline_choices(&all, Some(pipeline.id)),
        columns,
        currencies: currencies("EUR"),
    }))
}

// ---- The list ----

#[derive(Deserialize, Default)]
pub struct ListQuery {
    pipeline: Option<String>,
    status: Option<String>,
    q: Option<String>,
    after: Option<String>,
}

pub struct Row {
    pub id: Uuid,
    pub href: String,
    pub name: String,
    pub value: String,
    pub stage: String,
    pub status: &'static str,
    pub status_label: &'static str,
    pub owner: String,
    pub close: String,
    pub created: String,
    pub created_iso: String,
}

#[derive(Template)]
#[template(path = "web/deals.html")]
struct ListPage {
    chrome: Chrome,
    can_write: bool,
    q: String,
    pipelines: Vec<Choice>,
    statuses: Vec<Choice>,
    rows: Vec<Row>,
    older_url: Option<String>,
    empty: &'static str,
    currencies: Vec<Choice>,
    board_url: String,
}

fn list_href(pipeline: &str, status: &str, q: &str, after: Option<Uuid>) -> String {
    let after = after.map(|id| id.to_string()).unwrap_or_default();
    let pairs: Vec<(&str, &str)> = [
        ("pipeline", pipeline),
        ("status", status),
        ("q", q),
        ("after", after.as_str()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect();
    let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
    if query.is_empty() {
        LIST.to_string()
    } else {
        format!("{LIST}?{query}")
    }
}

/// `GET /app/deals`: the deals, newest first, by pipeline, status or words in the name.
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(query): Query<ListQuery>,
) -> Result<Response> {
    let pipeline_id = blank(&query.pipeline)
        .map(|p| Uuid::parse_str(p).map_err(|_| invalid("pipeline must be a pipeline id")))
        .transpose()?;
    let status = blank(&query.status)
        .map(|s| Status::parse(s).ok_or_else(|| invalid("status is open, won or lost")))
        .transpose()?;
    let q = blank(&query.q).unwrap_or_default().to_string();
    if q.chars().count() > 200 {
        return Err(invalid("search for at most 200 characters"));
    }
    let after = blank(&query.after)
        .map(|a| Uuid::parse_str(a).map_err(|_| invalid("after must be a deal id")))
        .transpose()?;
    let all = pipelines::list(&state, &ctx).await?;
    let items = deals::list(
        &state,
        &ctx,
        &Filter {
            pipeline_id,
            status,
            q: (!q.is_empty()).then(|| q.clone()),
            after,
            limit: LIMIT,
            ..Filter::default()
        },
    )
    .await?;
    let staff = staff(&state, &ctx).await?;
    let chrome = Chrome::new(&state, &ctx, "deals").await?;
    let pipeline_str = pipeline_id.map(|p| p.to_string()).unwrap_or_default();
    let status_str = status.map(Status::as_str).unwrap_or_default();
    let older_url = (items.len() as i64 == LIMIT)
        .then(|| {
            items
                .last()
                .map(|d| list_href(&pipeline_str, status_str, &q, Some(d.id)))
        })
        .flatten();
    let rows = items
        .iter()
        .map(|d| Row {
            id: d.id,
            href: format!("{LIST}/{}", d.id),
            name: d.name.clone(),
            value: display_value(d.value_minor, &d.currency),
            stage: d.stage_name.clone(),
            status: d.status.as_str(),
            status_label: d.status.label(),
            owner: name_of(&staff, d.owner_id),
            close: d.expected_close_on.map(format_date).unwrap_or_default(),
            created: readable(d.created_at),
            created_iso: rfc3339(d.created_at),
        })
        .collect();
    let mut pipelines = vec![Choice {
        value: String::new(),
        label: "Any pipeline".into(),
        selected: pipeline_id.is_none(),
    }];
    pipelines.extend(pipeline_choices(&all, pipeline_id));
    let mut statuses = vec![Choice {
        value: String::new(),
        label: "Any status".into(),
        selected: status.is_none(),
    }];
    statuses.extend(Status::ALL.iter().map(|s| Choice {
        value: s.as_str().into(),
        label: s.label().into(),
        selected: status == Some(*s),
    }));
    let filtered = pipeline_id.is_some() || status.is_some() || !q.is_empty();
    Ok(render(&ListPage {
        chrome,
        can_write: ctx.role.can(Permission::DealsWrite),
        q,
        pipelines,
        statuses,
        rows,
        older_url,
        empty: if filtered {
            "No deals match these filters."
        } else {
            "No deals yet."
        },
        currencies: currencies("EUR"),
        board_url: match pipeline_id {
            Some(p) => board_href(p),
            None => BOARD.to_string(),
        },
    }))
}

// ---- Creating a deal ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NewForm {
    name: String,
    /// In major units (`1,200.50`).
    value: String,
    currency: String,
    expected_close_on: String,
    pipeline_id: String,
    /// `board`: back to the pipeline's board; otherwise to the new deal.
    back: String,
}

/// `POST /app/deals`: creates a deal and goes to it, or back to the board it was made on.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<NewForm>,
) -> Result<Response> {
    let currency = form.currency.trim().to_string();
    let value_minor = match form.value.trim() {
        "" => 0,
        raw => parse_amount(raw, &currency).ok_or_else(|| {
            bad_form("value is an amount such as 1200 or 1,200.50 in the currency's units")
        })?,
    };
    let expected_close_on = match form.expected_close_on.trim() {
        "" => None,
        raw => Some(parse_date(raw).map_err(|e| bad_form(&e))?),
    };
    let deal = deals::create(
        &state,
        &ctx,
        NewDeal {
            name: form.name,
            value_minor,
            currency,
            expected_close_on: Some(expected_close_on),
            pipeline_id: uuid_field(&form.pipeline_id, "pipeline")?,
            ..NewDeal::default()
        },
    )
    .await?;
    if form.back == "board" {
        return Ok(see_other(&board_href(deal.pipeline_id)));
    }
    Ok(see_other(&format!("{LIST}/{}", deal.id)))
}

// ---- One deal ----

pub struct HistoryRow {
    pub from: String,
    pub to: String,
    pub by: String,
    pub at: String,
    pub at_iso: String,
}

#[derive(Template)]
#[template(path = "web/deal.html")]
struct DealPage {
    chrome: Chrome,
    can_write: bool,
    id: Uuid,
    name: String,
    value: String,
    value_input: String,
    status: &'static str,
    status_label: &'static str,
    lost_reason: String,
    closed_at: String,
    stage_name: String,
    probability: i32,
    pipeline_name: String,
    board_url: String,
    owner: String,
    account: String,
    contacts: Vec<String>,
    close: String,
    shared: bool,
    stages: Vec<Choice>,
    owners: Vec<Choice>,
    currencies: Vec<Choice>,
    history: Vec<HistoryRow>,
}

/// The value as the edit form shows it, in major units without grouping.
fn value_input(d: &DealView) -> String {
    display_value(d.value_minor, &d.currency)
        .trim_start_matches(d.currency.as_str())
        .trim()
        .replace(',', "")
}

/// `GET /app/deals/{id}`.
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    let d = deals::show(&state, &ctx, id).await?;
    let history = deals::history(&state, &ctx, id).await?;
    let pipeline = pipelines::show(&state, &ctx, d.pipeline_id).await?;
    let staff = staff(&state, &ctx).await?;
    let chrome = Chrome::new(&state, &ctx, "deals").await?;
    let mut tx = ctx.begin(&state).await?;
    let account = match d.account_id {
        Some(a) => crate::crm::accounts::fetch(&mut tx, a)
            .await
            .map(|a| a.name)
            .unwrap_or_default(),
        None => String::new(),
    };
    let mut contacts = Vec::new();
    if ctx.role.can(Permission::ContactsRead) {
        for c in &d.contact_ids {
            if let Ok(contact) = crate::crm::contacts::fetch(&mut tx, *c).await {
                contacts.push(contact.shown_name());
            }
        }
    }
    tx.commit().await?;
    let page = DealPage {
        chrome,
        can_write: ctx.role.can(Permission::DealsWrite),
        id: d.id,
        name: d.name.clone(),
        value: display_value(d.value_minor, &d.currency),
        value_input: value_input(&d),
        status: d.status.as_str(),
        status_label: d.status.label(),
        lost_reason: d.lost_reason.clone().unwrap_or_default(),
        closed_at: d.closed_at.map(readable).unwrap_or_default(),
        stage_name: d.stage_name.clone(),
        probability: d.probability,
        pipeline_name: pipeline.name.clone(),
        board_url: board_href(pipeline.id),
        owner: name_of(&staff, d.owner_id),
        account,
        contacts,
        close: d.expected_close_on.map(format_date).unwrap_or_default(),
        shared: d.shared,
        stages: stage_choices(&pipeline, d.stage_id),
        owners: std::iter::once(Choice {
            value: "none".into(),
            label: "Nobody".into(),
            selected: d.owner_id.is_none(),
        })
        .chain(staff.iter().map(|(m, name)| Choice {
            value: m.to_string(),
            label: if *m == ctx.member_id {
                format!("{name} (you)")
            } else {
                name.clone()
            },
            selected: d.owner_id == Some(*m),
        }))
        .collect(),
        currencies: currencies(&d.currency),
        history: history
            .into_iter()
            .map(|h| HistoryRow {
                from: h.from_stage_name.unwrap_or_default(),
                to: h.to_stage_name,
                by: name_of(&staff, h.changed_by),
                at: readable(h.changed_at),
                at_iso: rfc3339(h.changed_at),
            })
            .collect(),
    };
    Ok(render(&page))
}

/// The edit form: every field is sent; `owner` is `none` or a member's id.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EditForm {
    name: String,
    value: String,
    currency: String,
    expected_close_on: String,
    owner: String,
    /// A checkbox: present when ticked.
    shared: Option<String>,
}

/// `POST /app/deals/{id}`: name, value, currency, expected close, owner, shared.
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<EditForm>,
) -> Result<Response> {
    // Another tenant's deal is not found, whatever the form says.
    deals::show(&state, &ctx, id).await?;
    let currency = form.currency.trim().to_string();
    let value_minor = parse_amount(&form.value, &currency).ok_or_else(|| {
        bad_form("value is an amount such as 1200 or 1,200.50 in the currency's units")
    })?;
    let expected_close_on = match form.expected_close_on.trim() {
        "" => None,
        raw => Some(parse_date(raw).map_err(|e| bad_form(&e))?),
    };
    let owner_id = match form.owner.trim() {
        "" | "none" => None,
        raw => Some(Uuid::parse_str(raw).map_err(|_| bad_form("owner is a member's id"))?),
    };
    deals::update(
        &state,
        &ctx,
        id,
        DealChanges {
            name: Some(form.name),
            value_minor: Some(value_minor),
            currency: Some(currency),
            expected_close_on: Some(expected_close_on),
            owner_id: Some(owner_id),
            shared: Some(form.shared.is_some()),
            ..DealChanges::default()
        },
    )
    .await?;
    Ok(see_other(&format!("{LIST}/{id}")))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MoveForm {
    stage_id: String,
    /// `board`: back to the board; otherwise to the deal.
    back: String,
}

/// `POST /app/deals/{id}/move`: the card's select and Move button, and the deal page's.
pub async fn move_deal(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<MoveForm>,
) -> Result<Response> {
    deals::show(&state, &ctx, id).await?;
    let stage_id = uuid_field(&form.stage_id, "stage")?.ok_or_else(|| bad_form("pick a stage"))?;
    let deal = deals::update(
        &state,
        &ctx,
        id,
        DealChanges {
            stage_id: Some(stage_id),
            ..DealChanges::default()
        },
    )
    .await?;
    if form.back == "board" {
        return Ok(see_other(&board_href(deal.pipeline_id)));
    }
    Ok(see_other(&format!("{LIST}/{id}")))
}

/// `POST /app/deals/{id}/won`.
pub async fn won(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    deals::close(&state, &ctx, id, Outcome::Won).await?;
    Ok(see_other(&format!("{LIST}/{id}")))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LostForm {
    reason: String,
}

/// `POST /app/deals/{id}/lost`: needs the reason.
pub async fn lost(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<LostForm>,
) -> Result<Response> {
    deals::show(&state, &ctx, id).await?;
    deals::close(
        &state,
        &ctx,
        id,
        Outcome::Lost {
            reason: form.reason,
        },
    )
    .await?;
    Ok(see_other(&format!("{LIST}/{id}")))
}

/// `POST /app/deals/{id}/reopen`.
pub async fn reopen(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    deals::reopen(&state, &ctx, id).await?;
    Ok(see_other(&format!("{LIST}/{id}")))
}
