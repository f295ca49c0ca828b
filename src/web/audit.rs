//! The audit log pages (AUD-3, AUD-4): the search by actor, entity, action and time range with
//! cursor paging, one entry with its before and after, the chain's verification, and exports of
//! the filtered log with their live progress and download. Each page reads through the audit
//! engine's own functions, the ones the API's routes call, under the same permissions.

use askama::Template;
use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value};
use time::{OffsetDateTime, PrimitiveDateTime};
use uuid::Uuid;

use super::inbox::{readable, rfc3339};
use super::tickets::Choice;
use super::{render, see_other, Chrome, Form};
use crate::app::AppState;
use crate::audit::export::{self, ExportView};
use crate::audit::routes::{self as search, Entry, Filter};
use crate::audit::Verification;
use crate::error::{Error, Result};
use crate::http::{Access, Api, Ctx, Path, Query};
use crate::rbac::Permission;

const LOG: &str = "/app/audit";
/// Entries per page.
const LIMIT: i64 = 50;

/// The audit pages, under the permissions of the API's audit routes.
pub fn pages(api: Api<AppState>) -> Api<AppState> {
    use Access::*;
    use Permission::*;
    api.page(Method::GET, LOG, Requires(AuditRead), log)
        .page(
            Method::GET,
            "/app/audit/events/{event_id}",
            Requires(AuditRead),
            event,
        )
        .page(
            Method::POST,
            "/app/audit/exports",
            Requires(AuditExport),
            start_export,
        )
        .page(
            Method::GET,
            "/app/audit/exports/{export_id}",
            Requires(AuditExport),
            export_page,
        )
}

fn blank(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn invalid(message: impl Into<String>) -> Error {
    Error::bad_request("invalid_filter", message.into())
}

/// The search as the page's form sends it: every field optional, blanks ignored.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct SearchForm {
    /// `member:<id>`, or an actor type alone (`system`, `api_token`, `anonymous`, `member`).
    actor: Option<String>,
    entity_type: Option<String>,
    entity_id: Option<String>,
    /// An action; ending in `.` or `*`, every action starting with it.
    action: Option<String>,
    /// A date (`2026-12-08`), a time in UTC (`2026-12-08T09:30`) or RFC 3339.
    from: Option<String>,
    to: Option<String>,
    /// The cursor: entries below this sequence number.
    before: Option<i64>,
    /// `1`: verify the chain too.
    verify: Option<String>,
    /// Only on the export form.
    format: Option<String>,
    /// The export form's token, checked before the handler runs (`csrf.rs`).
    _csrf: Option<String>,
}

/// A time from the form: RFC 3339, or a date or local time taken as UTC.
fn instant(raw: &str, name: &str) -> Result<OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    if let Ok(at) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(at);
    }
    for format in [
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]"),
    ] {
        if let Ok(at) = PrimitiveDateTime::parse(raw, format) {
            return Ok(at.assume_utc());
        }
    }
    if let Ok(day) = time::Date::parse(raw, format_description!("[year]-[month]-[day]")) {
        return Ok(day.midnight().assume_utc());
    }
    Err(invalid(format!(
        "{name} must be a date (2026-12-08) or a time (2026-12-08T09:30, UTC)"
    )))
}

impl SearchForm {
    /// The audit engine's filter, checked as the API checks it.
    fn filter(&self) -> Result<Filter> {
        let (actor_type, actor_id) = match blank(&self.actor) {
            None => (None, None),
            Some(actor) => match actor.split_once(':') {
                Some((kind, id)) if !id.is_empty() => {
                    (Some(kind.to_string()), Some(id.to_string()))
                }
                _ => (Some(actor), None),
            },
        };
        let (action, action_prefix) = match blank(&self.action) {
            None => (None, None),
            Some(a) if a.ends_with('*') => (None, Some(a.trim_end_matches('*').to_string())),
            Some(a) if a.ends_with('.') => (None, Some(a)),
            Some(a) => (Some(a), None),
        };
        let filter = Filter {
            actor_type,
            actor_id,
            entity_type: blank(&self.entity_type),
            entity_id: blank(&self.entity_id),
            action,
            action_prefix: action_prefix.filter(|p| !p.is_empty()),
            execution_id: None,
            from: blank(&self.from).map(|f| instant(&f, "from")).transpose()?,
            to: blank(&self.to).map(|t| instant(&t, "to")).transpose()?,
        };
        filter.check()?;
        Ok(filter)
    }

    /// The search as a query string, without the cursor and without verifying.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("actor", &self.actor),
            ("entity_type", &self.entity_type),
            ("entity_id", &self.entity_id),
            ("action", &self.action),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter_map(|(name, value)| blank(value).map(|v| (name, v)))
        .collect()
    }

    fn href(&self, before: Option<i64>) -> String {
        let mut pairs = self.pairs();
        if let Some(seq) = before {
            pairs.push(("before", seq.to_string()));
        }
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        if query.is_empty() {
            LOG.to_string()
        } else {
            format!("{LOG}?{query}")
        }
    }
}

pub struct Row {
    pub href: String,
    pub seq: i64,
    pub at: String,
    pub at_iso: String,
    pub actor: String,
    pub action: String,
    pub entity: String,
    pub erased: bool,
}

pub struct Checked {
    pub valid: bool,
    pub summary: String,
    pub broken_seq: Option<i64>,
    pub broken_reason: String,
}

pub struct ExportRow {
    pub href: String,
    pub download: String,
    pub status: String,
    pub format: String,
    pub progress: String,
    pub percent: i64,
    pub done: bool,
    pub live: bool,
    pub error: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "web/audit.html")]
struct LogPage {
    chrome: Chrome,
    actors: Vec<Choice>,
    entity_type: String,
    entity_id: String,
    action: String,
    from: String,
    to: String,
    hidden: Vec<(&'static str, String)>,
    verify_href: String,
    verification: Option<Checked>,
    rows: Vec<Row>,
    older_url: Option<String>,
    newest_url: Option<String>,
    filtered: bool,
    can_export: bool,
    exports: Vec<ExportRow>,
}

fn actor_label(staff: &[(Uuid, String)], kind: &str, id: Option<&str>) -> String {
    match (kind, id) {
        ("member", Some(id)) => staff
            .iter()
            .find(|(m, _)| m.to_string() == id)
            .map(|(_, name)| name.clone())
            .unwrap_or_else(|| format!("member {id}")),
        ("system", _) => "the platform".to_string(),
        ("anonymous", _) => "not signed in".to_string(),
        (kind, Some(id)) => format!("{kind} {id}"),
        (kind, None) => kind.to_string(),
    }
}

fn checked(v: &Verification) -> Checked {
    let summary = match (v.valid, v.first_seq, v.last_seq) {
        (true, Some(first), Some(last)) => format!(
            "The chain holds: {} entries checked, {first} to {last}{}.",
            v.checked,
            match v.erased {
                0 => String::new(),
                n => format!(", {n} with payloads erased on request"),
            }
        ),
        (true, _, _) => "The chain holds: there are no entries yet.".to_string(),
        (false, _, _) => "The chain is broken.".to_string(),
    };
    Checked {
        valid: v.valid,
        summary,
        broken_seq: v.broken.as_ref().map(|b| b.seq),
        broken_reason: v
            .broken
            .as_ref()
            .map(|b| b.reason.clone())
            .unwrap_or_default(),
    }
}

fn export_row(e: &ExportView) -> ExportRow {
    let total = e.rows_total.unwrap_or(0);
    let percent = match (e.status.as_str(), total) {
        ("done", _) => 100,
        (_, 0) => 0,
        (_, total) => (e.rows_done * 100 / total).clamp(0, 100),
    };
    ExportRow {
        href: format!("/app/audit/exports/{}", e.id),
        download: format!("/api/v1/audit/exports/{}/download", e.id),
        status: e.status.clone(),
        format: e.format.to_uppercase(),
        progress: match e.rows_total {
            Some(total) => format!("{} of {total} entries", e.rows_done),
            None => "counting entries".to_string(),
        },
        percent,
        done: e.status == "done" && e.purged_at.is_none(),
        live: matches!(e.status.as_str(), "queued" | "running"),
        error: e.error.clone().unwrap_or_default(),
        created: readable(e.created_at),
    }
}

/// `GET /app/audit`: the log, newest first, narrowed by the form; with `verify=1`, the chain's
/// verification as well (the button asks for it with htmx and swaps in that part alone).
pub async fn log(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(form): Query<SearchForm>,
) -> Result<Response> {
    let filter = form.filter()?;
    if form.before.is_some_and(|b| b < 1) {
        return Err(invalid("before must be a sequence number above 0"));
    }
    let chrome = Chrome::new(&state, &ctx, "audit").await?;
    let verification = match form.verify.as_deref() {
        Some("1") => Some(checked(
            &crate::audit::verify(&state.db.app, ctx.tenant_id).await?,
        )),
        _ => None,
    };
    let can_export = ctx.role.can(Permission::AuditExport);
    let mut tx = ctx.begin(&state).await?;
    let entries = search::search(&mut tx, ctx.tenant_id, &filter, form.before, LIMIT).await?;
    let staff = crate::tenants::members::assignable(&mut tx).await?;
    let exports = match can_export {
        true => export::recent(&mut tx, ctx.tenant_id, 5).await?,
        false => Vec::new(),
    };
    tx.commit().await?;

    let rows = entries.iter().map(|e| row(e, &staff)).collect();
    let older_url = (entries.len() as i64 == LIMIT)
        .then(|| entries.last().map(|e| form.href(Some(e.event.seq))))
        .flatten();
    let chosen = blank(&form.actor).unwrap_or_default();
    let mut actors = vec![Choice {
        value: String::new(),
        label: "Anyone".into(),
        selected: chosen.is_empty(),
    }];
    actors.extend(staff.iter().map(|(id, name)| {
        let value = format!("member:{id}");
        Choice {
            selected: chosen == value,
            value,
            label: name.clone(),
        }
    }));
    for (value, label) in [
        ("member", "Any member"),
        ("api_token", "API tokens"),
        ("system", "The platform"),
        ("anonymous", "Not signed in"),
    ] {
        actors.push(Choice {
            value: value.into(),
            label: label.into(),
            selected: chosen == value,
        });
    }
    let mut verify_pairs = form.pairs();
    verify_pairs.push(("verify", "1".into()));
    Ok(render(&LogPage {
        chrome,
        actors,
        entity_type: blank(&form.entity_type).unwrap_or_default(),
        entity_id: blank(&form.entity_id).unwrap_or_default(),
        action: blank(&form.action).unwrap_or_default(),
        from: blank(&form.from).unwrap_or_default(),
        to: blank(&form.to).unwrap_or_default(),
        hidden: form.pairs(),
        verify_href: format!(
            "{LOG}?{}",
            serde_urlencoded::to_string(&verify_pairs).unwrap_or_default()
        ),
        verification,
        rows,
        older_url,
        newest_url: form.before.map(|_| form.href(None)),
        filtered: !form.pairs().is_empty(),
        can_export,
        exports: exports.iter().map(export_row).collect(),
    }))
}

fn row(e: &Entry, staff: &[(Uuid, String)]) -> Row {
    let ev = &e.event;
    Row {
        href: format!("/app/audit/events/{}", ev.id),
        seq: ev.seq,
        at: readable(ev.occurred_at),
        at_iso: rfc3339(ev.occurred_at),
        actor: actor_label(staff, &ev.actor_type, ev.actor_id.as_deref()),
        action: ev.action.clone(),
        entity: match &ev.entity_id {
            Some(id) => format!("{} {id}", ev.entity_type),
            None => ev.entity_type.clone(),
        },
        erased: e.erased,
    }
}

#[derive(Template)]
#[template(path = "web/audit_event.html")]
struct EventPage {
    chrome: Chrome,
    seq: i64,
    id: Uuid,
    at: String,
    at_iso: String,
    actor: String,
    action: String,
    entity_type: String,
    entity_id: String,
    entity_href: String,
    execution_href: String,
    erased: bool,
    before: String,
    after: String,
    ip: String,
    user_agent: String,
    request_id: String,
}

fn pretty(value: &Option<Value>) -> String {
    value
        .as_ref()
        .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
        .unwrap_or_default()
}

/// `GET /app/audit/events/{id}`: one entry, its payload as it was before and after the change,
/// or that an erasure took it.
pub async fn event(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    let chrome = Chrome::new(&state, &ctx, "audit").await?;
    let mut tx = ctx.begin(&state).await?;
    let entry = search::entry(&mut tx, id).await?;
    let staff = crate::tenants::members::assignable(&mut tx).await?;
    tx.commit().await?;
    let ev = &entry.event;
    let entity_id = ev.entity_id.clone().unwrap_or_default();
    // A link where the staff app has a page for the entity and this member may open it.
    let entity_href = match (ev.entity_type.as_str(), Uuid::parse_str(&entity_id)) {
        ("conversation", Ok(id)) if ctx.role.can(Permission::ConversationsRead) => {
            format!("/app/conversations/{id}")
        }
        ("ticket", Ok(id)) if ctx.role.can(Permission::TicketsRead) => {
            format!("/app/tickets/{id}")
        }
        ("review_item", Ok(id)) if ctx.role.can(Permission::ReviewsRead) => {
            format!("/app/reviews/{id}")
        }
        ("audit_export", Ok(id)) if ctx.role.can(Permission::AuditExport) => {
            format!("/app/audit/exports/{id}")
        }
        _ => String::new(),
    };
    let execution_href = match ev.execution_id {
        Some(x) if ctx.role.can(Permission::ExecutionsRead) => format!("/app/executions/{x}"),
        _ => String::new(),
    };
    Ok(render(&EventPage {
        chrome,
        seq: ev.seq,
        id: ev.id,
        at: readable(ev.occurred_at),
        at_iso: rfc3339(ev.occurred_at),
        actor: actor_label(&staff, &ev.actor_type, ev.actor_id.as_deref()),
        action: ev.action.clone(),
        entity_type: ev.entity_type.clone(),
        entity_id,
        entity_href,
        execution_href,
        erased: entry.erased,
        before: pretty(&ev.before),
        after: pretty(&ev.after),
        ip: ev.ip.clone().unwrap_or_default(),
        user_agent: ev.user_agent.clone().unwrap_or_default(),
        request_id: ev.request_id.clone().unwrap_or_default(),
    }))
}

/// `POST /app/audit/exports`: asks for an export of the log as the form narrows it, through the
/// engine's own `create` (so the request is audited and the job queued as by the API), then
/// shows its progress.
pub async fn start_export(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<SearchForm>,
) -> Result<Response> {
    let filter = form.filter()?;
    let mut body: Map<String, Value> = match serde_json::to_value(&filter) {
        Ok(Value::Object(map)) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => Map::new(),
    };
    body.insert(
        "format".into(),
        Value::String(blank(&form.format).unwrap_or_else(|| "csv".into())),
    );
    let (_, crate::http::Json(view)) =
        export::create(state.db.clone(), ctx, body, crate::app::enqueue).await?;
    Ok(see_other(&format!("/app/audit/exports/{}", view.id)))
}

#[derive(Template)]
#[template(path = "web/audit_export.html")]
struct ExportPage {
    chrome: Chrome,
    export: ExportRow,
    filters: Vec<(String, String)>,
}

/// `GET /app/audit/exports/{id}`: one export's progress; while it is being written the page
/// asks for itself every second (htmx) and swaps in the progress part, until the download link
/// is there.
pub async fn export_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    let chrome = Chrome::new(&state, &ctx, "audit").await?;
    let mut tx = ctx.begin(&state).await?;
    let view = export::fetch(&mut tx, id).await?;
    tx.commit().await?;
    let filters = view
        .filters
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            (
                k.replace('_', " "),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            )
        })
        .collect();
    Ok(render(&ExportPage {
        chrome,
        export: export_row(&view),
        filters,
    }))
}
