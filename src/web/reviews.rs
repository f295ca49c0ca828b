//! The reviewer's pages: the queue (pending, assigned to me, decided; narrowed by kind, by the
//! role an item needs and by age; counts and SLA breaches refreshed from the live stream), and
//! one item with what a reviewer needs to decide it (the proposal with its parameters as a
//! form, the approval rule, the guardrail verdicts, the knowledge the run used, the
//! conversation and the customer's language) and the decisions: approve, edit then approve,
//! reject with a reason, assign.
//!
//! Every decision posts to a page that calls the reviews domain's own function, the one the
//! API's route calls, under the same permission: what a reviewer may do, and what the audit
//! log records, is the same on both. A refused decision shows the item again with the reason
//! and what the reviewer typed, under the refusal's status.

use askama::Template;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::inbox::{age, author_label, one_line, readable, rfc3339};
use super::{render, see_other, Chrome, Form};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::guardrails::Lang;
use crate::http::{Access, Api, Ctx, Path, Query};
use crate::rbac::{Permission, Role};
use crate::reviews::routes::{detail, ReviewView};
use crate::reviews::worklist::{self, Narrowing, Tab};
use crate::reviews::{
    self, approval_refusal, ApproveBody, Edit, Outcome, RequiredRole, ReviewKind, ReviewStatus,
};

const QUEUE: &str = "/app/reviews";
/// How many items a tab shows.
const LIMIT: i64 = 100;

/// The review pages, each with the access of the API route it stands for.
pub fn pages(api: Api<AppState>) -> Api<AppState> {
    use Access::*;
    use Permission::*;
    api.page(Method::GET, QUEUE, Requires(ReviewsRead), queue)
        .page(
            Method::GET,
            "/app/reviews/{review_id}",
            Requires(ReviewsRead),
            item,
        )
        .page(
            Method::POST,
            "/app/reviews/{review_id}/approve",
            Requires(ReviewsDecide),
            approve,
        )
        .page(
            Method::POST,
            "/app/reviews/{review_id}/reject",
            Requires(ReviewsDecide),
            reject,
        )
        .page(
            Method::POST,
            "/app/reviews/{review_id}/assign",
            Requires(ReviewsDecide),
            assign,
        )
}

fn kind_label(kind: ReviewKind) -> &'static str {
    match kind {
        ReviewKind::Action => "Action",
        ReviewKind::LowConfidence => "Low-confidence draft",
        ReviewKind::GuardrailFlag => "Guardrail flag",
        ReviewKind::HumanReview => "Human review request",
    }
}

fn status_label(item: &ReviewView) -> &'static str {
    match item.status {
        ReviewStatus::Pending => "Pending",
        ReviewStatus::Approved => "Approved",
        ReviewStatus::Executing => "Executing",
        ReviewStatus::Executed => "Executed",
        ReviewStatus::Failed => "Failed",
        ReviewStatus::Rejected if item.expired => "Expired",
        ReviewStatus::Rejected => "Rejected",
        ReviewStatus::Resolved => "Resolved",
    }
}

fn role_label(role: RequiredRole) -> &'static str {
    match role {
        RequiredRole::Reviewer => "Reviewer",
        RequiredRole::Admin => "Admin",
        RequiredRole::Owner => "Owner",
    }
}

fn lang_label(lang: Lang) -> &'static str {
    match lang {
        Lang::En => "English",
        Lang::Pt => "Portuguese",
        Lang::Es => "Spanish",
        Lang::De => "German",
    }
}

/// What the item proposes, on one line: the action and its amount, or the draft's start.
fn summary(item: &ReviewView) -> String {
    let proposal = item.approved_proposal.as_ref().unwrap_or(&item.proposal);
    match item.kind {
        ReviewKind::Action => {
            let name = proposal["action"].as_str().unwrap_or("an action");
            match amount_text(proposal) {
                Some(amount) => format!("{name} · {amount}"),
                None => name.to_string(),
            }
        }
        ReviewKind::LowConfidence => one_line(proposal["draft"].as_str().unwrap_or_default()),
        ReviewKind::GuardrailFlag => {
            let rules: Vec<&str> = proposal["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let outcome = proposal["outcome"].as_str().unwrap_or("flagged");
            if rules.is_empty() {
                outcome.to_string()
            } else {
                format!("{outcome}: {}", rules.join(", "))
            }
        }
        ReviewKind::HumanReview => one_line(item.request_note.as_deref().unwrap_or_default()),
    }
}

/// "45.00 EUR", when the proposal has an amount; the currency is the arguments' own, if any.
fn amount_text(proposal: &Value) -> Option<String> {
    let amount = proposal["amount"].as_f64()?;
    let currency = proposal["arguments"]["currency"].as_str().unwrap_or("");
    Some(format!("{amount:.2} {currency}").trim_end().to_string())
}

fn sla_state(item: &ReviewView, now: OffsetDateTime) -> (&'static str, String) {
    if item.status != ReviewStatus::Pending {
        return ("done", String::new());
    }
    match item.due_at {
        _ if item.sla_breached => ("breached", "SLA breached".to_string()),
        Some(due) => ("ok", format!("due in {}", age(now, due))),
        None => ("ok", String::new()),
    }
}

// ---------------------------------------------------------------------------------------
// The queue

#[derive(Deserialize, Default)]
pub struct QueueQuery {
    tab: Option<String>,
    kind: Option<String>,
    role: Option<String>,
    age: Option<String>,
}

/// The ages a reviewer can narrow to: items opened at least this long ago.
const AGES: [(&str, &str, i64); 3] = [
    ("1h", "Older than 1 hour", 3600),
    ("4h", "Older than 4 hours", 4 * 3600),
    ("1d", "Older than 1 day", 86_400),
];

#[derive(Clone, Default)]
pub struct QueueValues {
    pub tab: String,
    pub kind: String,
    pub role: String,
    pub age: String,
}

impl QueueValues {
    fn href(&self) -> String {
        let pairs: Vec<(&str, &str)> = [
            ("tab", self.tab.as_str()),
            ("kind", self.kind.as_str()),
            ("role", self.role.as_str()),
            ("age", self.age.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
        let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
        if query.is_empty() {
            QUEUE.to_string()
        } else {
            format!("{QUEUE}?{query}")
        }
    }
}

pub struct TabLink {
    pub label: &'static str,
    pub tab: &'static str,
    pub href: String,
    pub count: i64,
    pub current: bool,
}

pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

pub struct QueueRow {
    pub id: Uuid,
    pub href: String,
    pub kind: &'static str,
    pub kind_label: &'static str,
    pub summary: String,
    pub contact: String,
    pub age: String,
    pub at_iso: String,
    pub at_title: String,
    pub status: &'static str,
    pub status_label: &'static str,
    pub sla: &'static str,
    pub sla_label: String,
    pub role: &'static str,
    pub approvals: i64,
    pub approvals_required: i32,
    pub assignee: String,
}

#[derive(Template)]
#[template(path = "web/reviews.html")]
struct QueuePage {
    chrome: Chrome,
    tabs: Vec<TabLink>,
    filter: QueueValues,
    kinds: Vec<Choice>,
    roles: Vec<Choice>,
    ages: Vec<Choice>,
    rows: Vec<QueueRow>,
    sla_breached: i64,
    refresh_url: String,
    empty: String,
}

fn invalid(field: &str, allowed: &str) -> Error {
    Error::bad_request(
        "invalid_filter",
        format!("{field} must be one of {allowed}"),
    )
}

fn choices(options: &[(&str, &str)], current: &str, any: &str) -> Vec<Choice> {
    let mut all = vec![Choice {
        value: String::new(),
        label: any.to_string(),
        selected: current.is_empty(),
    }];
    all.extend(options.iter().map(|(value, label)| Choice {
        value: value.to_string(),
        label: label.to_string(),
        selected: current == *value,
    }));
    all
}

/// Names for the queue's rows: the contact of each conversation, the staff by id.
struct Names {
    contacts: Vec<(Uuid, String)>,
    staff: Vec<(Uuid, String, Role)>,
}

impl Names {
    async fn load(tx: &mut sqlx::PgConnection, items: &[&ReviewView]) -> Result<Names> {
        let mut conversations: Vec<Uuid> = items.iter().filter_map(|i| i.conversation_id).collect();
        conversations.sort();
        conversations.dedup();
        let contacts = crate::conversations::contact_names(&mut *tx, &conversations).await?;
        let staff = crate::tenants::members::active_staff(&mut *tx).await?;
        Ok(Names { contacts, staff })
    }

    fn contact(&self, conversation_id: Option<Uuid>) -> String {
        conversation_id
            .and_then(|c| self.contacts.iter().find(|(id, _)| *id == c))
            .map(|(_, name)| name.clone())
            .unwrap_or_else(|| "No conversation".to_string())
    }

    fn member(&self, member_id: Option<Uuid>) -> String {
        match member_id {
            None => String::new(),
            Some(id) => self
                .staff
                .iter()
                .find(|(m, _, _)| *m == id)
                .map(|(_, name, _)| name.clone())
                .unwrap_or_else(|| "A former member".to_string()),
        }
    }
}

/// `GET /app/reviews`: the queue.
pub async fn queue(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<QueueQuery>,
) -> Result<Response> {
    let blank = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let tab = match blank(q.tab) {
        None => Tab::Pending,
        Some(raw) => Tab::parse(&raw).ok_or_else(|| invalid("tab", "pending, mine, decided"))?,
    };
    let kind = blank(q.kind)
        .map(|raw| {
            ReviewKind::parse(&raw).ok_or_else(|| {
                invalid(
                    "kind",
                    "action, low_confidence, guardrail_flag, human_review",
                )
            })
        })
        .transpose()?;
    let role = blank(q.role)
        .map(|raw| {
            RequiredRole::parse(&raw).ok_or_else(|| invalid("role", "reviewer, admin, owner"))
        })
        .transpose()?;
    let age_key = blank(q.age);
    let older_than = age_key
        .as_deref()
        .map(|raw| {
            AGES.iter()
                .find(|(key, _, _)| *key == raw)
                .map(|(_, _, secs)| Duration::seconds(*secs))
                .ok_or_else(|| invalid("age", "1h, 4h, 1d"))
        })
        .transpose()?;
    let narrowing = Narrowing {
        kind,
        role,
        older_than,
    };
    let values = QueueValues {
        tab: tab.as_str().to_string(),
        kind: kind.map(|k| k.as_str().to_string()).unwrap_or_default(),
        role: role.map(|r| r.as_str().to_string()).unwrap_or_default(),
        age: age_key.unwrap_or_default(),
    };

    let chrome = Chrome::new(&state, &ctx, "reviews").await?;
    let mut tx = ctx.begin(&state).await?;
    let counts = worklist::tab_counts(&mut tx, ctx.member_id, narrowing).await?;
    let items = worklist::worklist(&mut tx, ctx.member_id, tab, narrowing, LIMIT).await?;
    let names = Names::load(&mut tx, &items.iter().collect::<Vec<_>>()).await?;
    tx.commit().await?;

    let now = OffsetDateTime::now_utc();
    let tabs = Tab::ALL
        .into_iter()
        .map(|t| TabLink {
            label: match t {
                Tab::Pending => "Pending",
                Tab::Mine => "Assigned to me",
                Tab::Decided => "Decided",
            },
            tab: t.as_str(),
            href: QueueValues {
                tab: t.as_str().to_string(),
                ..values.clone()
            }
            .href(),
            count: counts.of(t),
            current: t == tab,
        })
        .collect();
    let rows = items
        .iter()
        .map(|i| {
            let (sla, sla_label) = sla_state(i, now);
            QueueRow {
                id: i.id,
                href: format!("{QUEUE}/{}", i.id),
                kind: i.kind.as_str(),
                kind_label: kind_label(i.kind),
                summary: summary(i),
                contact: names.contact(i.conversation_id),
                age: age(i.created_at, now),
                at_iso: rfc3339(i.created_at),
                at_title: readable(i.created_at),
                status: i.status.as_str(),
                status_label: status_label(i),
                sla,
                sla_label,
                role: role_label(i.required_role),
                approvals: i.approvals,
                approvals_required: i.approvals_required,
                assignee: names.member(i.assignee_id),
            }
        })
        .collect();
    let narrowed = kind.is_some() || role.is_some() || older_than.is_some();
    let empty = match (tab, narrowed) {
        (_, true) => "No items match these filters.",
        (Tab::Pending, false) => "Nothing waits for review.",
        (Tab::Mine, false) => "Nothing is assigned to you.",
        (Tab::Decided, false) => "Nothing has been decided yet.",
    }
    .to_string();
    Ok(render(&QueuePage {
        chrome,
        tabs,
        kinds: choices(
            &[
                ("action", "Action"),
                ("low_confidence", "Low-confidence draft"),
                ("guardrail_flag", "Guardrail flag"),
                ("human_review", "Human review request"),
            ],
            &values.kind,
            "Any kind",
        ),
        roles: choices(
            &[
                ("reviewer", "Reviewer"),
                ("admin", "Admin"),
                ("owner", "Owner"),
            ],
            &values.role,
            "Any role",
        ),
        ages: choices(
            &AGES.map(|(key, label, _)| (key, label)),
            &values.age,
            "Any age",
        ),
        rows,
        sla_breached: counts.sla_breached,
        refresh_url: values.href(),
        filter: values,
        empty,
    }))
}

// ---------------------------------------------------------------------------------------
// One item

/// One parameter of the proposed action, as a form field.
pub struct Field {
    pub name: String,
    /// `text`, `number`, `integer`, `boolean`, `choice` or `json`.
    pub input: &'static str,
    pub value: String,
    pub required: bool,
    pub description: String,
    pub options: Vec<String>,
}

pub struct Verdict {
    pub stage: String,
    pub action: String,
    pub rules: String,
}

pub struct Source {
    pub title: String,
    pub score: String,
}

pub struct ContextRow {
    pub author: &'static str,
    pub body: String,
    pub private: bool,
    pub inbound: bool,
    pub at: String,
}

pub struct ApprovalRow {
    pub who: String,
    pub role: String,
    pub note: String,
    pub at: String,
}

/// What the member may do on this item; a button they may not use is not shown.
pub struct Can {
    /// Decide at all (`ReviewsDecide`) on a pending item.
    pub decide: bool,
    /// Approve as it stands.
    pub approve: bool,
    /// Why they may not approve, when they may decide otherwise (four eyes, the role).
    pub why_not: String,
    pub edit: bool,
}

/// What a refused post kept, and why it was refused.
#[derive(Default)]
pub struct Kept {
    pub status: Option<StatusCode>,
    pub notice: String,
    /// Which form was refused: `approve`, `edit`, `reject`, `assign`.
    pub form: String,
    pub note: String,
    pub reason: String,
    pub draft: Option<String>,
    pub arguments: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "web/review.html")]
struct ItemPage {
    chrome: Chrome,
    id: Uuid,
    /// The agent run that proposed the item, for a member who may read executions.
    execution_href: String,
    kind: &'static str,
    kind_label: &'static str,
    status: &'static str,
    status_label: &'static str,
    summary: String,
    action_name: String,
    amount: String,
    fields: Vec<Field>,
    draft: String,
    request_note: String,
    requested_by: String,
    confidence: String,
    rules: Vec<String>,
    role: &'static str,
    approvals: i64,
    approvals_required: i32,
    still_needs: i64,
    approvals_given: Vec<ApprovalRow>,
    sla: &'static str,
    sla_label: String,
    /// "3 h ago", "just now".
    opened: String,
    /// The role an item needs, inside a sentence.
    role_word: &'static str,
    verdicts: Vec<Verdict>,
    sources: Vec<Source>,
    context: Vec<ContextRow>,
    conversation_href: String,
    contact: String,
    language: String,
    assignee: String,
    assignees: Vec<Choice>,
    decision: String,
    can: Can,
    kept: Kept,
}

/// The fields of an action's parameters schema, filled with the proposal's arguments (or what
/// a refused edit kept).
fn fields(schema: &Value, arguments: &Value, kept: &[(String, String)]) -> Vec<Field> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = Vec::new();
    let properties = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<&String> = properties.keys().collect();
    // Arguments the schema does not name are still shown, so nothing proposed is hidden.
    let extra: Vec<String> = arguments
        .as_object()
        .map(|a| {
            a.keys()
                .filter(|k| !properties.contains_key(*k))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    names.extend(extra.iter());
    for name in names {
        let spec = properties.get(name).cloned().unwrap_or(Value::Null);
        let options: Vec<String> = spec["enum"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect();
        let input = if !options.is_empty() {
            "choice"
        } else {
            match spec["type"].as_str() {
                Some("string") => "text",
                Some("number") => "number",
                Some("integer") => "integer",
                Some("boolean") => "boolean",
                _ => "json",
            }
        };
        let value = match kept.iter().find(|(k, _)| k == name) {
            Some((_, v)) => v.clone(),
            None => match &arguments[name.as_str()] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
        };
        out.push(Field {
            name: name.clone(),
            input,
            value,
            required: required.contains(&name.as_str()),
            description: spec["description"].as_str().unwrap_or_default().to_string(),
            options,
        });
    }
    out
}

/// The edited arguments, typed by the schema: what a form sends is text, and the domain checks
/// the result against the action's schema (naming the field it refuses). A field left empty
/// is left out; text that does not read as its type is passed on as text, so the domain's
/// refusal names it.
fn arguments_from(schema: &Value, sent: &[(String, String)]) -> Value {
    let mut arguments = Map::new();
    for (name, raw) in sent {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        let spec = &schema["properties"][name.as_str()];
        let typed = match spec["type"].as_str() {
            Some("string") => json!(raw),
            Some("number") | Some("integer") => raw
                .parse::<i64>()
                .map(Value::from)
                .ok()
                .or_else(|| {
                    raw.parse::<f64>()
                        .ok()
                        .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                })
                .unwrap_or_else(|| json!(raw)),
            Some("boolean") => match raw {
                "true" => json!(true),
                "false" => json!(false),
                _ => json!(raw),
            },
            _ => serde_json::from_str(raw).unwrap_or_else(|_| json!(raw)),
        };
        arguments.insert(name.clone(), typed);
    }
    Value::Object(arguments)
}

/// An approval rule in words: "refund above 50 → admin, 2 approvals".
fn describe(rule: &reviews::policy::ApprovalRule) -> String {
    let mut what = Vec::new();
    if let Some(kind) = &rule.kind {
        what.push(kind.clone());
    }
    if let Some(action) = &rule.action {
        what.push(action.clone());
    }
    if what.is_empty() {
        what.push("any action".to_string());
    }
    let mut subject = what.join(" ");
    if let Some(above) = rule.above {
        subject.push_str(&format!(" above {above}"));
    }
    let mut needs = Vec::new();
    if let Some(role) = rule.role {
        needs.push(role.as_str().to_string());
    }
    if let Some(n) = rule.approvals {
        needs.push(format!("{n} approval{}", if n == 1 { "" } else { "s" }));
    }
    if needs.is_empty() {
        subject
    } else {
        format!("{subject} → {}", needs.join(", "))
    }
}

/// One guardrail verdict as recorded (by an item's findings, or by its run), on one line.
fn verdict_row(record: &Value) -> Verdict {
    let verdict = if record["verdict"].is_object() {
        &record["verdict"]
    } else {
        record
    };
    let rules: Vec<String> = verdict["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["rule_id"].as_str().or_else(|| f.as_str()))
        .map(str::to_string)
        .chain(
            record["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string),
        )
        .collect();
    Verdict {
        stage: record["stage"].as_str().unwrap_or("check").to_string(),
        action: verdict["action"]
            .as_str()
            .or_else(|| record["outcome"].as_str())
            .unwrap_or("flag")
            .to_string(),
        rules: rules.join(", "),
    }
}

/// `GET /app/reviews/{id}`.
pub async fn item(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Response> {
    show(&state, &ctx, id, Kept::default()).await
}

async fn show(state: &AppState, ctx: &Ctx, id: Uuid, kept: Kept) -> Result<Response> {
    let chrome = Chrome::new(state, ctx, "reviews").await?;
    let mut tx = ctx.begin(state).await?;
    let shown = detail(&mut tx, id).await?;
    let item = &shown.item;
    let names = Names::load(&mut tx, &[item]).await?;
    let action = match item.action_id {
        Some(action_id) => reviews::tenant_actions(&mut tx)
            .await?
            .into_iter()
            .find(|a| a.id == action_id),
        None => None,
    };
    let language = match item.conversation_id {
        Some(conversation_id) => {
            lang_label(crate::conversations::language(&mut tx, conversation_id).await?)
        }
        None => "",
    };
    let sources = match item.execution_id {
        Some(execution_id) => crate::agent::run_sources(&mut tx, execution_id).await?,
        None => Vec::new(),
    };
    let approved_already = worklist::approved_by(&mut tx, id, ctx.member_id).await?;
    let policy = reviews::load_policy(&mut tx).await?;
    tx.commit().await?;

    let now = OffsetDateTime::now_utc();
    let proposal = item.approved_proposal.as_ref().unwrap_or(&item.proposal);
    let pending = item.status == ReviewStatus::Pending;
    let decide = pending && ctx.role.can(Permission::ReviewsDecide);
    let refusal = approval_refusal(item, ctx, approved_already);
    let editable = matches!(item.kind, ReviewKind::Action | ReviewKind::LowConfidence)
        && item.content_purged_at.is_none();
    let can = Can {
        decide,
        approve: decide && refusal.is_none(),
        why_not: match (&refusal, decide) {
            (Some(e), true) => super::sentence(&e.to_string()),
            _ => String::new(),
        },
        // An edit withdraws the approvals given, this member's own included, so having
        // approved already does not stop one.
        edit: decide
            && editable
            && approval_refusal(item, ctx, false).is_none()
            && (item.kind != ReviewKind::Action || action.is_some()),
    };
    let schema = action
        .as_ref()
        .map(|a| a.parameters.clone())
        .unwrap_or(Value::Null);
    let mut verdicts: Vec<Verdict> = item
        .findings
        .as_array()
        .into_iter()
        .flatten()
        .map(verdict_row)
        .collect();
    if let Some(run) = shown.execution.as_ref().and_then(|e| e.guardrails.as_ref()) {
        for record in run.as_array().into_iter().flatten() {
            let row = verdict_row(record);
            if !verdicts
                .iter()
                .any(|v| v.stage == row.stage && v.rules == row.rules)
            {
                verdicts.push(row);
            }
        }
    }
    let still_needs = (i64::from(item.approvals_required) - item.approvals).max(0);
    let (sla, sla_label) = sla_state(item, now);
    let decision = match item.status {
        ReviewStatus::Pending => String::new(),
        ReviewStatus::Rejected if item.expired => {
            "Rejected as expired: nobody decided in time.".to_string()
        }
        ReviewStatus::Rejected => format!(
            "Rejected by {}: {}",
            names.member(item.decided_by),
            item.decision_reason.as_deref().unwrap_or_default()
        ),
        _ => format!(
            "{} by {}{}",
            status_label(item),
            names.member(item.decided_by),
            item.decided_at
                .map(|at| format!(" on {}", readable(at)))
                .unwrap_or_default()
        ),
    };
    let deciders: Vec<Choice> = std::iter::once(Choice {
        value: "none".to_string(),
        label: "Nobody".to_string(),
        selected: item.assignee_id.is_none(),
    })
    .chain(
        names
            .staff
            .iter()
            .filter(|(_, _, role)| {
                role.can(Permission::ReviewsDecide) && item.required_role.allows(*role)
            })
            .map(|(member, name, _)| Choice {
                value: member.to_string(),
                label: if *member == ctx.member_id {
                    format!("{name} (you)")
                } else {
                    name.clone()
                },
                selected: item.assignee_id == Some(*member),
            }),
    )
    .collect();
    let page = ItemPage {
        chrome,
        id,
        execution_href: match item.execution_id {
            Some(x) if ctx.role.can(Permission::ExecutionsRead) => format!("/app/executions/{x}"),
            _ => String::new(),
        },
        kind: item.kind.as_str(),
        kind_label: kind_label(item.kind),
        status: item.status.as_str(),
        status_label: status_label(item),
        summary: summary(item),
        action_name: proposal["action"].as_str().unwrap_or_default().to_string(),
        amount: amount_text(proposal).unwrap_or_default(),
        fields: if item.kind == ReviewKind::Action {
            fields(&schema, &proposal["arguments"], &kept.arguments)
        } else {
            Vec::new()
        },
        draft: kept
            .draft
            .clone()
            .unwrap_or_else(|| proposal["draft"].as_str().unwrap_or_default().to_string()),
        request_note: item.request_note.clone().unwrap_or_default(),
        requested_by: match item.requested_by {
            reviews::RequestedBy::Agent => "the AI agent".to_string(),
            reviews::RequestedBy::Customer => "the customer".to_string(),
            reviews::RequestedBy::Member => names.member(item.requested_by_member),
        },
        confidence: item
            .confidence
            .map(|c| format!("{c:.2}"))
            .unwrap_or_default(),
        rules: item.policy["matched_rules"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .map(|i| {
                // The item keeps which rules matched by their place in the policy; the words
                // are the policy's as it is now.
                match policy.rules.get(i as usize) {
                    Some(rule) => format!("rule {}: {}", i + 1, describe(rule)),
                    None => format!("rule {} (since removed)", i + 1),
                }
            })
            .collect(),
        role: role_label(item.required_role),
        approvals: item.approvals,
        approvals_required: item.approvals_required,
        still_needs,
        approvals_given: shown
            .approvals_given
            .iter()
            .map(|a| ApprovalRow {
                who: names.member(Some(a.member_id)),
                role: a.role.clone(),
                note: a.note.clone().unwrap_or_default(),
                at: readable(a.at),
            })
            .collect(),
        sla,
        sla_label,
        opened: match age(item.created_at, now).as_str() {
            "now" => "just now".to_string(),
            ago => format!("{ago} ago"),
        },
        role_word: item.required_role.as_str(),
        verdicts,
        sources: sources
            .into_iter()
            .map(|s| Source {
                title: s.title,
                score: format!("{:.2}", s.score),
            })
            .collect(),
        context: shown
            .context
            .iter()
            .map(|m| ContextRow {
                author: author_label(Some(m.author_kind.as_str())),
                body: m.body.clone(),
                private: m.private,
                inbound: m.direction == "inbound",
                at: readable(m.created_at),
            })
            .collect(),
        conversation_href: item
            .conversation_id
            .map(|c| format!("/app/conversations/{c}"))
            .unwrap_or_default(),
        contact: names.contact(item.conversation_id),
        language: language.to_string(),
        assignee: names.member(item.assignee_id),
        assignees: deciders,
        decision,
        can,
        kept,
    };
    let mut response = render(&page);
    if let Some(status) = page.kept.status {
        *response.status_mut() = status;
    }
    Ok(response)
}

/// The item, if the member's tenant has it: every decision checks this first, so a foreign
/// or unknown id is not found whatever the form says.
async fn visible(state: &AppState, ctx: &Ctx, id: Uuid) -> Result<ReviewView> {
    let mut tx = ctx.begin(state).await?;
    let item = detail(&mut tx, id).await?.item;
    tx.commit().await?;
    Ok(item)
}

fn back(id: Uuid) -> Response {
    see_other(&format!("{QUEUE}/{id}"))
}

/// A decision that worked goes back to the item; one the domain refused with a reason (bad
/// input, a conflict, four eyes or the role) shows the item again with the reason and what the
/// reviewer typed; anything else (not found, a failure) is the error page.
async fn settle<T>(
    state: &AppState,
    ctx: &Ctx,
    id: Uuid,
    result: Result<T>,
    kept: impl FnOnce() -> Kept,
) -> Result<Response> {
    match result {
        Ok(_) => Ok(back(id)),
        Err(e) => {
            let refused = super::refusal(e)?;
            let mut kept = kept();
            kept.status = Some(refused.status);
            kept.notice = refused.message;
            show(state, ctx, id, kept).await
        }
    }
}

/// The approve form, and the edit-then-approve form: a note, the outcome of a human review,
/// and, for an edit, the draft or the action's parameters as `arg.<name>` fields.
#[derive(Deserialize)]
pub struct ApproveForm {
    #[serde(default)]
    note: String,
    /// `edit` when the reviewer edits before approving.
    #[serde(default)]
    mode: String,
    #[serde(default)]
    draft: Option<String>,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    message: String,
    #[serde(flatten)]
    rest: std::collections::HashMap<String, String>,
}

/// `POST /app/reviews/{id}/approve`.
pub async fn approve(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<ApproveForm>,
) -> Result<Response> {
    let item = visible(&state, &ctx, id).await?;
    let mut tx = ctx.begin(&state).await?;
    let action = match item.action_id {
        Some(action_id) => reviews::tenant_actions(&mut tx)
            .await?
            .into_iter()
            .find(|a| a.id == action_id),
        None => None,
    };
    tx.commit().await?;
    let editing = match form.mode.as_str() {
        "edit" => true,
        "approve" | "" => false,
        _ => {
            return Err(Error::bad_request(
                "invalid_form",
                "mode is approve or edit",
            ))
        }
    };
    let mut sent: Vec<(String, String)> = form
        .rest
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("arg.")?.to_string(), v.clone())))
        .collect();
    sent.sort();
    let edit = match (editing, item.kind) {
        (false, _) => None,
        (true, ReviewKind::Action) => Some(Edit {
            arguments: Some(arguments_from(
                action.as_ref().map_or(&Value::Null, |a| &a.parameters),
                &sent,
            )),
            draft: None,
        }),
        (true, _) => Some(Edit {
            arguments: None,
            draft: Some(form.draft.clone().unwrap_or_default()),
        }),
    };
    let outcome = match form.outcome.as_str() {
        "" => None,
        "upheld" => Some(Outcome::Upheld),
        "changed" => Some(Outcome::Changed),
        _ => {
            return Err(Error::bad_request(
                "invalid_form",
                "outcome is upheld or changed",
            ))
        }
    };
    let message = Some(form.message.trim().to_string()).filter(|m| !m.is_empty());
    let body = ApproveBody {
        note: Some(form.note.clone()),
        edit,
        outcome,
        message,
    };
    let result = reviews::approve_item(&state.db, &ctx, id, &body).await;
    settle(&state, &ctx, id, result, || Kept {
        form: if editing { "edit" } else { "approve" }.to_string(),
        note: form.note.clone(),
        draft: form.draft.clone(),
        arguments: if editing { sent } else { Vec::new() },
        ..Kept::default()
    })
    .await
}

#[derive(Deserialize)]
pub struct RejectForm {
    #[serde(default)]
    reason: String,
}

/// `POST /app/reviews/{id}/reject`: a reason is required.
pub async fn reject(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<RejectForm>,
) -> Result<Response> {
    visible(&state, &ctx, id).await?;
    let result = reviews::reject_item(&state.db, &ctx, id, &form.reason).await;
    settle(&state, &ctx, id, result, || Kept {
        form: "reject".to_string(),
        reason: form.reason.clone(),
        ..Kept::default()
    })
    .await
}

#[derive(Deserialize)]
pub struct AssignForm {
    /// `me`, `none`, or a member's id.
    #[serde(default)]
    assignee: String,
}

/// `POST /app/reviews/{id}/assign`: take it, give it to someone who may decide it, or unassign.
pub async fn assign(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Form(form): Form<AssignForm>,
) -> Result<Response> {
    visible(&state, &ctx, id).await?;
    let assignee = match form.assignee.trim() {
        "me" => Some(ctx.member_id),
        "none" => None,
        raw => Some(Uuid::parse_str(raw).map_err(|_| {
            Error::bad_request("invalid_assignee", "assignee is me, none or a member's id")
        })?),
    };
    let result = reviews::assign_item(&state.db, &ctx, id, assignee).await;
    settle(&state, &ctx, id, result, || Kept {
        form: "assign".to_string(),
        ..Kept::default()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edited_arguments_take_the_schemas_types_and_pass_unreadable_text_on_for_the_domain_to_name()
    {
        let schema = json!({ "type": "object", "properties": {
            "order_id": { "type": "string" }, "amount": { "type": "number" },
            "express": { "type": "boolean" } } });
        let sent = [
            ("order_id".to_string(), " 123 ".to_string()),
            ("amount".to_string(), "12.5".to_string()),
            ("express".to_string(), "true".to_string()),
            ("note".to_string(), String::new()),
        ];
        assert_eq!(
            arguments_from(&schema, &sent),
            json!({ "order_id": "123", "amount": 12.5, "express": true })
        );
        let wrong = [("amount".to_string(), "twelve".to_string())];
        assert_eq!(
            arguments_from(&schema, &wrong),
            json!({ "amount": "twelve" })
        );
    }

    #[test]
    fn an_actions_amount_shows_with_the_currency_its_arguments_name() {
        assert_eq!(
            amount_text(&json!({ "amount": 45, "arguments": { "currency": "EUR" } })).unwrap(),
            "45.00 EUR"
        );
        assert_eq!(amount_text(&json!({ "amount": 3.5 })).unwrap(), "3.50");
        assert_eq!(amount_text(&json!({ "amount": null })), None);
    }
}
