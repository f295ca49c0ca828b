//! Pipelines: a tenant's ordered stages a deal passes through, each with the probability that a
//! deal there is won. A tenant gets a default pipeline (Lead, Qualified, Proposal, Negotiation)
//! on first use rather than at sign-up: the tenants domain ranks below this one and may not call
//! it (tests/it/architecture.rs), and first use also covers the tenants that existed before
//! deals did, without a backfill. A unique index keeps two first uses at once to one pipeline.
//!
//! Stages are replaced as a whole list (rename, reorder, add, remove in one audited change); a
//! stage that still holds deals cannot be removed: 409 naming it. The report reads the deals'
//! stage history (`deal_stage_change`) in SQL.

use axum::extract::{FromRef, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{begin, one_line, partner_scope};
use crate::audit::AuditEvent;
use crate::db::{Db, Tx};
use crate::error::{Error, Result};
use crate::http::{Access, Api, Contract, Ctx, Json, Path};
use crate::rbac::Permission;

/// The stages of a tenant's first pipeline, with their probabilities.
pub const DEFAULT_STAGES: [(&str, i32); 4] = [
    ("Lead", 10),
    ("Qualified", 30),
    ("Proposal", 60),
    ("Negotiation", 80),
];
pub const DEFAULT_NAME: &str = "Sales";
/// A pipeline holds 1 to this many stages.
pub const MAX_STAGES: usize = 20;

pub fn routes<S>(api: Api<S>) -> Api<S>
where
    S: Clone + Send + Sync + 'static,
    Db: FromRef<S>,
{
    use Access::*;
    use Permission::*;
    api.endpoint(
        Method::GET,
        "/api/v1/pipelines",
        Requires(DealsRead),
        (
            "deals",
            "The tenant's pipelines with their stages in order (a default one is made on first use)",
        ),
        Contract::new().ok_list::<PipelineView>(),
        list_route,
    )
    .endpoint(
        Method::POST,
        "/api/v1/pipelines",
        Requires(TenantManage),
        ("deals", "Create a pipeline with its stages in order"),
        Contract::new()
            .body::<NewPipeline>()
            .created::<PipelineView>()
            .error(StatusCode::BAD_REQUEST, "invalid_text")
            .error(StatusCode::CONFLICT, "pipeline_taken")
            .error(StatusCode::CONFLICT, "duplicate_stage"),
        create_route,
    )
    .endpoint(
        Method::GET,
        "/api/v1/pipelines/{pipeline_id}",
        Requires(DealsRead),
        ("deals", "Show a pipeline with its stages in order"),
        Contract::new().ok::<PipelineView>(),
        show_route,
    )
    .endpoint(
        Method::PATCH,
        "/api/v1/pipelines/{pipeline_id}",
        Requires(TenantManage),
        ("deals", "Rename a pipeline"),
        Contract::new()
            .body::<PipelineChanges>()
            .ok::<PipelineView>()
            .error(StatusCode::BAD_REQUEST, "invalid_text")
            .error(StatusCode::CONFLICT, "pipeline_taken"),
        rename_route,
    )
    .endpoint(
        Method::PUT,
        "/api/v1/pipelines/{pipeline_id}/stages",
        Requires(TenantManage),
        (
            "deals",
            "Replace a pipeline's stages, in order: a listed id keeps (and may rename) its stage, an item without one adds a stage, an unlisted stage is removed unless it holds deals",
        ),
        Contract::new()
            .body::<Vec<StageInput>>()
            .body_rule(serde_json::json!({ "minItems": 1, "maxItems": MAX_STAGES }))
            .ok::<PipelineView>()
            .error(StatusCode::BAD_REQUEST, "invalid_text")
            .error(StatusCode::CONFLICT, "duplicate_stage")
            .error(StatusCode::CONFLICT, "stage_has_deals")
            .error(StatusCode::CONFLICT, "stage_of_another_pipeline"),
        set_stages_route,
    )
    .endpoint(
        Method::GET,
        "/api/v1/pipelines/{pipeline_id}/report",
        Requires(DealsRead),
        (
            "deals",
            "Per stage: open deals now, mean days a deal stays, and the share of deals that reached a later stage",
        ),
        Contract::new().ok::<Report>(),
        report_route,
    )
}

// ---- Views ----

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = PipelineStage)]
pub struct StageView {
    pub id: Uuid,
    pub name: String,
    /// 0 for the first stage.
    pub position: i32,
    /// The chance, in percent, that a deal in this stage is won.
    #[schema(minimum = 0, maximum = 100)]
    pub probability: i32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Pipeline)]
pub struct PipelineView {
    pub id: Uuid,
    pub name: String,
    /// The pipeline a deal goes to when none is named.
    pub is_default: bool,
    /// In order.
    pub stages: Vec<StageView>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

struct PipelineRow {
    id: Uuid,
    name: String,
    is_default: bool,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

/// A stage with the pipeline it belongs to, as the deals look it up.
#[derive(Debug, Clone)]
pub struct Stage {
    pub id: Uuid,
    pub pipeline_id: Uuid,
    pub name: String,
    pub position: i32,
    pub probability: i32,
}

async fn stages_of(conn: &mut PgConnection, pipeline_ids: &[Uuid]) -> Result<Vec<Stage>> {
    Ok(sqlx::query_as!(
        Stage,
        "SELECT id, pipeline_id, name, position, probability FROM pipeline_stage
         WHERE tenant_id = current_tenant_id() AND pipeline_id = ANY ($1)
         ORDER BY pipeline_id, position",
        pipeline_ids
    )
    .fetch_all(conn)
    .await?)
}

fn assemble(rows: Vec<PipelineRow>, stages: &[Stage]) -> Vec<PipelineView> {
    rows.into_iter()
        .map(|p| PipelineView {
            stages: stages
                .iter()
                .filter(|s| s.pipeline_id == p.id)
                .map(|s| StageView {
                    id: s.id,
                    name: s.name.clone(),
                    position: s.position,
                    probability: s.probability,
                })
                .collect(),
            id: p.id,
            name: p.name,
            is_default: p.is_default,
            created_at: p.created_at,
            updated_at: p.updated_at,
        })
        .collect()
}

/// One pipeline of the caller's tenant with its stages, or 404.
pub async fn fetch(conn: &mut PgConnection, id: Uuid) -> Result<PipelineView> {
    let row = sqlx::query_as!(
        PipelineRow,
        "SELECT id, name, is_default, created_at, updated_at FROM pipeline
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound)?;
    let stages = stages_of(conn, &[id]).await?;
    Ok(assemble(vec![row], &stages).remove(0))
}

/// One stage of the caller's tenant, or 404.
pub async fn stage(conn: &mut PgConnection, id: Uuid) -> Result<Stage> {
    sqlx::query_as!(
        Stage,
        "SELECT id, pipeline_id, name, position, probability FROM pipeline_stage
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound)
}

/// The tenant's pipelines, the default first, then by name.
async fn all(conn: &mut PgConnection) -> Result<Vec<PipelineView>> {
    let rows = sqlx::query_as!(
        PipelineRow,
        "SELECT id, name, is_default, created_at, updated_at FROM pipeline
         WHERE tenant_id = current_tenant_id() ORDER BY is_default DESC, lower(name), id"
    )
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let stages = stages_of(conn, &ids).await?;
    Ok(assemble(rows, &stages))
}

/// The tenant's default pipeline, made (and audited, as the caller's act) if the tenant has
/// none yet.
pub async fn default_pipeline(tx: &mut Tx, ctx: &Ctx) -> Result<PipelineView> {
    let id = Uuid::now_v7();
    let made = sqlx::query_scalar!(
        "INSERT INTO pipeline (id, tenant_id, name, is_default)
         SELECT $1, $2, $3, true
         WHERE NOT EXISTS (SELECT 1 FROM pipeline WHERE tenant_id = $2 AND is_default)
         ON CONFLICT DO NOTHING
         RETURNING id",
        id,
        ctx.tenant_id,
        DEFAULT_NAME
    )
    .fetch_optional(&mut **tx)
    .await?;
    if made.is_some() {
        for (position, (name, probability)) in DEFAULT_STAGES.iter().enumerate() {
            insert_stage(tx, id, name, position as i32, *probability).await?;
        }
        let pipeline = fetch(tx, id).await?;
        ctx.audit(
            tx,
            AuditEvent::new("pipeline.created", "pipeline", id).after(&pipeline),
        )
        .await?;
        return Ok(pipeline);
    }
    let id = sqlx::query_scalar!(
        "SELECT id FROM pipeline WHERE tenant_id = current_tenant_id() AND is_default"
    )
    .fetch_one(&mut **tx)
    .await?;
    fetch(tx, id).await
}

async fn insert_stage(
    conn: &mut PgConnection,
    pipeline_id: Uuid,
    name: &str,
    position: i32,
    probability: i32,
) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO pipeline_stage (id, tenant_id, pipeline_id, name, position, probability)
         VALUES ($1, current_tenant_id(), $2, $3, $4, $5)",
        id,
        pipeline_id,
        name,
        position,
        probability
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// The caller's pipelines. A member's first look makes the default one; a partner only reads.
pub async fn list(db: &impl AsRef<Db>, ctx: &Ctx) -> Result<Vec<PipelineView>> {
    let partner = partner_scope(ctx)?;
    let mut tx = begin(db, ctx).await?;
    if partner.is_none() {
        default_pipeline(&mut tx, ctx).await?;
    }
    let pipelines = all(&mut tx).await?;
    tx.commit().await?;
    Ok(pipelines)
}

pub async fn show(db: &impl AsRef<Db>, ctx: &Ctx, id: Uuid) -> Result<PipelineView> {
    let mut tx = begin(db, ctx).await?;
    let pipeline = fetch(&mut tx, id).await?;
    tx.commit().await?;
    Ok(pipeline)
}

// ---- Input ----

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PipelineStageInput)]
pub struct StageInput {
    /// An existing stage of this pipeline, to keep; absent for a new stage.
    pub id: Option<Uuid>,
    #[schema(min_length = 1, max_length = 100, pattern = "$one_line")]
    pub name: String,
    #[schema(minimum = 0, maximum = 100)]
    pub probability: i32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewPipeline)]
pub struct NewPipeline {
    #[schema(min_length = 1, max_length = 100, pattern = "$one_line")]
    pub name: String,
    /// In order; new stages only (no ids).
    #[schema(schema_with = new_stages_schema)]
    pub stages: Vec<StageInput>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PipelineChanges)]
pub struct PipelineChanges {
    #[schema(min_length = 1, max_length = 100, pattern = "$one_line")]
    pub name: String,
}

fn stage_item_schema(with_id: bool) -> serde_json::Value {
    let mut properties = serde_json::json!({
        "name": { "type": "string", "minLength": 1, "maxLength": 100,
                  "pattern": crate::http::contract::ONE_LINE },
        "probability": { "type": "integer", "format": "int32", "minimum": 0, "maximum": 100 }
    });
    if with_id {
        properties["id"] = serde_json::json!({ "type": ["string", "null"], "format": "uuid" });
    }
    serde_json::json!({
        "type": "object",
        "required": ["name", "probability"],
        "additionalProperties": false,
        "properties": properties
    })
}

/// The stages of a new pipeline as the API document states them: what [`stages`] accepts.
fn new_stages_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::http::contract::schema(serde_json::json!({
        "type": "array", "minItems": 1, "maxItems": MAX_STAGES,
        "items": stage_item_schema(false)
    }))
}

/// Checks the stages' shape (400) and that their names differ (409: each is valid alone).
fn stages(raw: Vec<StageInput>) -> Result<Vec<StageInput>> {
    if raw.is_empty() || raw.len() > MAX_STAGES {
        return Err(Error::bad_request(
            "invalid_stages",
            format!("a pipeline has 1 to {MAX_STAGES} stages"),
        ));
    }
    let mut out: Vec<StageInput> = Vec::with_capacity(raw.len());
    for s in raw {
        if !(0..=100).contains(&s.probability) {
            return Err(Error::bad_request(
                "invalid_stages",
                "a stage's probability is 0 to 100",
            ));
        }
        let name = one_line("stage name", &s.name, 100)?;
        if out
            .iter()
            .any(|o| o.name.to_lowercase() == name.to_lowercase())
        {
            return Err(Error::conflict(
                "duplicate_stage",
                format!("two stages are named {name:?}"),
            ));
        }
        if s.id.is_some() && out.iter().any(|o| o.id == s.id) {
            return Err(Error::conflict(
                "duplicate_stage",
                "a stage is listed twice",
            ));
        }
        out.push(StageInput { name, ..s });
    }
    Ok(out)
}

// ---- Changes ----

#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id))]
pub async fn create(db: &impl AsRef<Db>, ctx: &Ctx, new: NewPipeline) -> Result<PipelineView> {
    let name = one_line("name", &new.name, 100)?;
    if new.stages.iter().any(|s| s.id.is_some()) {
        return Err(Error::bad_request(
            "invalid_stages",
            "a new pipeline's stages are new: leave out their ids",
        ));
    }
    let stages = stages(new.stages)?;
    let mut tx = ctx.begin(db).await?;
    // The first pipeline a tenant makes is not its default: that one exists from first use.
    default_pipeline(&mut tx, ctx).await?;
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO pipeline (id, tenant_id, name) VALUES ($1, $2, $3)",
        id,
        ctx.tenant_id,
        name
    )
    .execute(&mut *tx)
    .await?;
    for (position, s) in stages.iter().enumerate() {
        insert_stage(&mut tx, id, &s.name, position as i32, s.probability).await?;
    }
    let pipeline = fetch(&mut tx, id).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("pipeline.created", "pipeline", id).after(&pipeline),
    )
    .await?;
    tx.commit().await?;
    Ok(pipeline)
}

#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, pipeline_id = %id))]
pub async fn rename(
    db: &impl AsRef<Db>,
    ctx: &Ctx,
    id: Uuid,
    changes: PipelineChanges,
) -> Result<PipelineView> {
    let mut tx = ctx.begin(db).await?;
    let before = fetch(&mut tx, id).await?;
    let name = one_line("name", &changes.name, 100)?;
    sqlx::query!(
        "UPDATE pipeline SET name = $2, updated_at = now()
         WHERE id = $1 AND tenant_id = current_tenant_id()",
        id,
        name
    )
    .execute(&mut *tx)
    .await?;
    let after = fetch(&mut tx, id).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("pipeline.updated", "pipeline", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Replaces the stages of a pipeline with `wanted`, in that order; see the route.
#[tracing::instrument(skip_all, fields(tenant_id = %ctx.tenant_id, pipeline_id = %id))]
pub async fn set_stages(
    db: &impl AsRef<Db>,
    ctx: &Ctx,
    id: Uuid,
    wanted: Vec<StageInput>,
) -> Result<PipelineView> {
    let mut tx = ctx.begin(db).await?;
    let before = fetch(&mut tx, id).await?;
    let wanted = stages(wanted)?;
    for s in &wanted {
        if let Some(stage_id) = s.id {
            if !before.stages.iter().any(|b| b.id == stage_id) {
                // Another tenant's stage is not found; another pipeline's is a conflict.
                stage(&mut tx, stage_id).await?;
                return Err(Error::conflict(
                    "stage_of_another_pipeline",
                    "that stage belongs to another pipeline",
                ));
            }
        }
    }
    let kept: Vec<Uuid> = wanted.iter().filter_map(|s| s.id).collect();
    let removed: Vec<&StageView> = before
        .stages
        .iter()
        .filter(|s| !kept.contains(&s.id))
        .collect();
    for gone in &removed {
        let holding = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM deal
               WHERE tenant_id = current_tenant_id() AND stage_id = $1"#,
            gone.id
        )
        .fetch_one(&mut *tx)
        .await?;
        if holding > 0 {
            return Err(Error::conflict(
                "stage_has_deals",
                format!(
                    "the stage {:?} holds {holding} deal(s): move them first",
                    gone.name
                ),
            ));
        }
    }
    let removed_ids: Vec<Uuid> = removed.iter().map(|s| s.id).collect();
    sqlx::query!(
        "DELETE FROM pipeline_stage WHERE tenant_id = current_tenant_id() AND id = ANY ($1)",
        &removed_ids
    )
    .execute(&mut *tx)
    .await?;
    // Positions and names are unique per pipeline, checked at commit, so the order can be
    // rewritten in place.
    for (position, s) in wanted.iter().enumerate() {
        match s.id {
            Some(stage_id) => {
                sqlx::query!(
                    "UPDATE pipeline_stage SET name = $2, position = $3, probability = $4
                     WHERE id = $1 AND tenant_id = current_tenant_id()",
                    stage_id,
                    s.name,
                    position as i32,
                    s.probability
                )
                .execute(&mut *tx)
                .await?;
            }
            None => {
                insert_stage(&mut tx, id, &s.name, position as i32, s.probability).await?;
            }
        }
    }
    sqlx::query!(
        "UPDATE pipeline SET updated_at = now() WHERE id = $1 AND tenant_id = current_tenant_id()",
        id
    )
    .execute(&mut *tx)
    .await?;
    let after = fetch(&mut tx, id).await?;
    ctx.audit(
        &mut tx,
        AuditEvent::new("pipeline.stages_updated", "pipeline", id)
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

// ---- Report ----

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = PipelineStageReport)]
pub struct StageReport {
    pub stage_id: Uuid,
    pub name: String,
    pub position: i32,
    pub probability: i32,
    /// Open deals in the stage now.
    pub deals_now: i64,
    /// How many deals ever entered the stage.
    pub entered: i64,
    /// The mean time, in days, a deal stayed (or, for one still there, has stayed so far);
    /// `null` when no deal entered it.
    #[schema(required = true)]
    pub mean_days_in_stage: Option<f64>,
    /// Of the deals that entered the stage, the share (0 to 1) that later entered a later
    /// stage; `null` for the last stage or when no deal entered it.
    #[schema(required = true)]
    pub conversion_to_next: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = PipelineReport)]
pub struct Report {
    pub pipeline_id: Uuid,
    pub stages: Vec<StageReport>,
    /// Deals of the pipeline won and lost, all time.
    pub won: i64,
    pub lost: i64,
}

/// The pipeline's report, from the stage history: a stay in a stage runs from entering it to
/// the deal's next stage change, its closing, or now.
pub async fn report(db: &impl AsRef<Db>, ctx: &Ctx, id: Uuid) -> Result<Report> {
    let mut tx = begin(db, ctx).await?;
    fetch(&mut tx, id).await?;
    let stages = sqlx::query_as!(
        StageReport,
        r#"WITH stays AS (
               SELECT c.id, c.deal_id, c.to_stage_id AS stage_id, c.changed_at AS entered,
                      coalesce(lead(c.changed_at) OVER w, d.closed_at, now()) AS left_at
               FROM deal_stage_change c
               JOIN deal d ON d.tenant_id = c.tenant_id AND d.id = c.deal_id
               WHERE c.tenant_id = current_tenant_id()
               WINDOW w AS (PARTITION BY c.deal_id ORDER BY c.changed_at, c.id)
           )
           SELECT s.id AS stage_id, s.name, s.position, s.probability,
                  (SELECT count(*) FROM deal d
                   WHERE d.tenant_id = s.tenant_id AND d.stage_id = s.id AND d.status = 'open') AS "deals_now!",
                  (SELECT count(DISTINCT st.deal_id) FROM stays st WHERE st.stage_id = s.id) AS "entered!",
                  (SELECT (avg(extract(epoch FROM st.left_at - st.entered)) / 86400)::float8
                   FROM stays st WHERE st.stage_id = s.id) AS mean_days_in_stage,
                  CASE WHEN s.position = max(s.position) OVER () THEN NULL
                  ELSE (SELECT count(DISTINCT st.deal_id) FILTER (WHERE EXISTS (
                               SELECT 1 FROM stays later
                               JOIN pipeline_stage ls ON ls.tenant_id = s.tenant_id AND ls.id = later.stage_id
                               WHERE later.deal_id = st.deal_id AND ls.pipeline_id = s.pipeline_id
                                 AND ls.position > s.position
                                 AND (later.entered, later.id) > (st.entered, st.id)))::float8
                               / nullif(count(DISTINCT st.deal_id), 0)
                        FROM stays st WHERE st.stage_id = s.id)
                  END AS conversion_to_next
           FROM pipeline_stage s
           WHERE s.tenant_id = current_tenant_id() AND s.pipeline_id = $1
           ORDER BY s.position"#,
        id
    )
    .fetch_all(&mut *tx)
    .await?;
    let totals = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE status = 'won') AS "won!",
                  count(*) FILTER (WHERE status = 'lost') AS "lost!"
           FROM deal WHERE tenant_id = current_tenant_id() AND pipeline_id = $1"#,
        id
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Report {
        pipeline_id: id,
        stages,
        won: totals.won,
        lost: totals.lost,
    })
}

// ---- Routes ----

async fn list_route(State(db): State<Db>, ctx: Ctx) -> Result<Json<Vec<PipelineView>>> {
    Ok(Json(list(&db, &ctx).await?))
}

async fn create_route(
    State(db): State<Db>,
    ctx: Ctx,
    Json(body): Json<NewPipeline>,
) -> Result<(StatusCode, Json<PipelineView>)> {
    Ok((StatusCode::CREATED, Json(create(&db, &ctx, body).await?)))
}

async fn show_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<PipelineView>> {
    Ok(Json(show(&db, &ctx, id).await?))
}

async fn rename_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<PipelineChanges>,
) -> Result<Json<PipelineView>> {
    Ok(Json(rename(&db, &ctx, id, body).await?))
}

async fn set_stages_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
    Json(body): Json<Vec<StageInput>>,
) -> Result<Json<PipelineView>> {
    Ok(Json(set_stages(&db, &ctx, id, body).await?))
}

async fn report_route(
    State(db): State<Db>,
    ctx: Ctx,
    Path(id): Path<Uuid>,
) -> Result<Json<Report>> {
    Ok(Json(report(&db, &ctx, id).await?))
}
