//! Deals and pipelines through the API: a deal's life cycle through the stages to won or lost,
//! its stage history and the pipeline's report computed from it, stages that hold deals kept,
//! bad input refused without a change, another tenant's ids not found, partners who see only
//! what is shared (SEC-2), and tasks about a deal. The pages: the board's Move button and the
//! deal page's forms, in process.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{Member, Req, TestApp};
use crate::web::{form, html, page_token};

async fn deal(app: &TestApp, member: &Member, body: Value) -> Value {
    let resp = app
        .send(Req::post("/api/v1/deals").by(member).json(body))
        .await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
    resp.body
}

async fn default_pipeline(app: &TestApp, member: &Member) -> Value {
    let resp = app.send(Req::get("/api/v1/pipelines").by(member)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    let pipelines = resp.body.as_array().unwrap();
    pipelines
        .iter()
        .find(|p| p["is_default"] == true)
        .cloned()
        .expect("a default pipeline")
}

fn stage_id(pipeline: &Value, name: &str) -> String {
    pipeline["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn move_to(app: &TestApp, member: &Member, id: &str, stage: &str) -> Value {
    let resp = app
        .send(
            Req::patch(format!("/api/v1/deals/{id}"))
                .by(member)
                .json(json!({ "stage_id": stage })),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    resp.body
}

fn names(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect()
}

// proves: AUD-1
// Part of CS-1 (deals with pipeline stages); NPS/CSAT answers and product events are still to come.
#[tokio::test]
async fn a_deal_moves_through_the_stages_to_won_with_its_history_recorded_and_each_step_audited() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let agent = app.join(&owner, "agent").await;
    let account = app
        .send(
            Req::post("/api/v1/accounts")
                .by(&owner)
                .json(json!({ "name": "Globex" })),
        )
        .await
        .uuid("/id");
    let contact = app
        .send(
            Req::post("/api/v1/contacts")
                .by(&owner)
                .json(json!({ "name": "Gina", "account_id": account })),
        )
        .await
        .uuid("/id");

    // A new tenant has one pipeline: Lead, Qualified, Proposal, Negotiation.
    let pipeline = default_pipeline(&app, &agent).await;
    let stages: Vec<(&str, i64)> = pipeline["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["probability"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stages,
        vec![
            ("Lead", 10),
            ("Qualified", 30),
            ("Proposal", 60),
            ("Negotiation", 80)
        ]
    );
    assert_eq!(
        default_pipeline(&app, &owner).await["id"],
        pipeline["id"],
        "a second look made a second default"
    );

    let created = deal(
        &app,
        &agent,
        json!({
            "name": "  Globex renewal ", "value_minor": 1_250_000, "currency": "EUR",
            "expected_close_on": "2027-03-31", "account_id": account, "contact_ids": [contact, contact]
        }),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["name"], "Globex renewal");
    assert_eq!(created["value_minor"], 1_250_000);
    assert_eq!(created["currency"], "EUR");
    assert_eq!(created["expected_close_on"], "2027-03-31");
    assert_eq!(
        created["owner_id"],
        agent.member_id.to_string(),
        "the creator owns it"
    );
    assert_eq!(created["contact_ids"], json!([contact]));
    assert_eq!(created["pipeline_id"], pipeline["id"]);
    assert_eq!(created["stage_name"], "Lead");
    assert_eq!(created["status"], "open");
    let other = deal(
        &app,
        &agent,
        json!({ "name": "Initech pilot", "value_minor": 9_900, "currency": "USD" }),
    )
    .await;

    move_to(&app, &agent, &id, &stage_id(&pipeline, "Qualified")).await;
    let moved = move_to(&app, &agent, &id, &stage_id(&pipeline, "Proposal")).await;
    assert_eq!(moved["stage_name"], "Proposal");
    assert_eq!(moved["probability"], 60);
    let won = app
        .send(Req::post(format!("/api/v1/deals/{id}/won")).by(&agent))
        .await;
    assert_eq!(won.status, StatusCode::OK, "{}", won.body);
    assert_eq!(won.body["status"], "won");
    assert!(won.body["closed_at"].is_string());
    assert_eq!(won.body["closed_by"], agent.member_id.to_string());
    assert_eq!(won.body["lost_reason"], Value::Null);

    // A won deal stays where it was won: moving or winning it again is refused.
    let again = app
        .send(Req::post(format!("/api/v1/deals/{id}/won")).by(&agent))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "deal_closed");
    let refused = app
        .send(
            Req::patch(format!("/api/v1/deals/{id}"))
                .by(&agent)
                .json(json!({ "stage_id": stage_id(&pipeline, "Lead") })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.error_code(), "deal_closed");

    let history = app
        .send(Req::get(format!("/api/v1/deals/{id}/stages")).by(&owner))
        .await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.body);
    let steps: Vec<(Value, Value)> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["from_stage_name"].clone(), h["to_stage_name"].clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (Value::Null, json!("Lead")),
            (json!("Lead"), json!("Qualified")),
            (json!("Qualified"), json!("Proposal")),
        ]
    );
    assert!(history
        .body
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["changed_by"] == agent.member_id.to_string()));

    // Lost needs its reason; with one, it is recorded.
    let other_id = other["id"].as_str().unwrap();
    let no_reason = app
        .send(
            Req::post(format!("/api/v1/deals/{other_id}/lost"))
                .by(&agent)
                .json(json!({ "reason": "   " })),
        )
        .await;
    assert_eq!(
        no_reason.status,
        StatusCode::BAD_REQUEST,
        "{}",
        no_reason.body
    );
    let missing = app
        .send(
            Req::post(format!("/api/v1/deals/{other_id}/lost"))
                .by(&agent)
                .json(json!({})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.count("SELECT count(*) FROM deal WHERE status = 'lost'")
            .await,
        0
    );
    let lost = app
        .send(
            Req::post(format!("/api/v1/deals/{other_id}/lost"))
                .by(&agent)
                .json(json!({ "reason": "Went with a competitor" })),
        )
        .await;
    assert_eq!(lost.status, StatusCode::OK, "{}", lost.body);
    assert_eq!(lost.body["status"], "lost");
    assert_eq!(lost.body["lost_reason"], "Went with a competitor");
    let reopened = app
        .send(Req::post(format!("/api/v1/deals/{other_id}/reopen")).by(&agent))
        .await;
    assert_eq!(reopened.body["status"], "open");
    assert_eq!(reopened.body["lost_reason"], Value::Null);
    assert_eq!(reopened.body["closed_at"], Value::Null);

    // Filters.
    let list = |q: &str| app.send(Req::get(format!("/api/v1/deals?{q}")).by(&owner));
    assert_eq!(
        names(&list("status=won").await.body),
        vec!["Globex renewal"]
    );
    assert_eq!(names(&list("q=INITECH").await.body), vec!["Initech pilot"]);
    assert_eq!(
        names(&list(&format!("account_id={account}")).await.body),
        vec!["Globex renewal"]
    );
    assert_eq!(
        names(
            &list("close_from=2027-03-01&close_until=2027-03-31")
                .await
                .body
        ),
        vec!["Globex renewal"]
    );
    assert_eq!(
        names(&list("close_until=2027-03-30").await.body),
        Vec::<&str>::new()
    );
    let lead = stage_id(&pipeline, "Lead");
    assert_eq!(
        names(&list(&format!("stage_id={lead}&status=open")).await.body),
        vec!["Initech pilot"]
    );
    let page = list("limit=1").await;
    assert_eq!(names(&page.body), vec!["Initech pilot"]);
    let cursor = page.body["next_cursor"].as_str().unwrap().to_string();
    assert_eq!(
        names(&list(&format!("limit=1&after={cursor}")).await.body),
        vec!["Globex renewal"]
    );

    // Every change is audited, with before and after.
    assert_eq!(
        app.audit_events(owner.tenant_id, "deal.created")
            .await
            .len(),
        2
    );
    let moves = app.audit_events(owner.tenant_id, "deal.moved").await;
    assert_eq!(moves.len(), 2);
    assert_eq!(moves[0]["actor_id"], agent.member_id.to_string());
    assert_eq!(moves[0]["before"]["stage_name"], "Lead");
    assert_eq!(moves[0]["after"]["stage_name"], "Qualified");
    assert_eq!(app.audit_events(owner.tenant_id, "deal.won").await.len(), 1);
    let lost_events = app.audit_events(owner.tenant_id, "deal.lost").await;
    assert_eq!(lost_events.len(), 1);
    assert_eq!(
        lost_events[0]["after"]["lost_reason"],
        "Went with a competitor"
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "deal.reopened")
            .await
            .len(),
        1
    );
    assert_eq!(
        app.audit_events(owner.tenant_id, "pipeline.created")
            .await
            .len(),
        1,
        "the default pipeline's making is audited once"
    );

    let deleted = app
        .send(Req::new(Method::DELETE, format!("/api/v1/deals/{other_id}")).by(&agent))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.send(Req::get(format!("/api/v1/deals/{other_id}")).by(&agent))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let gone = app.audit_events(owner.tenant_id, "deal.deleted").await;
    assert_eq!(gone[0]["before"]["name"], "Initech pilot");
}

#[tokio::test]
async fn the_pipeline_report_gives_deals_now_mean_days_in_stage_and_conversion_from_the_history() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let pipeline = default_pipeline(&app, &owner).await;
    let pid = pipeline["id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for name in ["A", "B", "C", "D"] {
        let d = deal(
            &app,
            &owner,
            json!({ "name": name, "value_minor": 100, "currency": "EUR" }),
        )
        .await;
        ids.push(d["id"].as_str().unwrap().to_string());
    }
    // A and B reach Qualified, A then Proposal, where it is won; C and D stay in Lead.
    move_to(&app, &owner, &ids[0], &stage_id(&pipeline, "Qualified")).await;
    move_to(&app, &owner, &ids[1], &stage_id(&pipeline, "Qualified")).await;
    move_to(&app, &owner, &ids[0], &stage_id(&pipeline, "Proposal")).await;
    app.send(Req::post(format!("/api/v1/deals/{}/won", ids[0])).by(&owner))
        .await;
    // Each deal entered Lead 10 days ago; A and B left it after 4 days; A left Qualified a day
    // later and was won 2 days after that; B is still in Qualified (6 days so far).
    let mut conn = app.superuser().await;
    for (deal, stage, days_ago) in [
        (&ids[0], "Lead", 10),
        (&ids[1], "Lead", 10),
        (&ids[2], "Lead", 10),
        (&ids[3], "Lead", 10),
        (&ids[0], "Qualified", 6),
        (&ids[1], "Qualified", 6),
        (&ids[0], "Proposal", 5),
    ] {
        sqlx::query(
            "UPDATE deal_stage_change SET changed_at = now() - make_interval(days => $3)
             WHERE deal_id = $1::uuid AND to_stage_name = $2",
        )
        .bind(deal)
        .bind(stage)
        .bind(days_ago)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE deal SET closed_at = now() - interval '3 days' WHERE id = $1::uuid")
        .bind(&ids[0])
        .execute(&mut conn)
        .await
        .unwrap();

    let report = app
        .send(Req::get(format!("/api/v1/pipelines/{pid}/report")).by(&owner))
        .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    let stage = |name: &str| {
        report.body["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap()
    };
    let close = |v: &Value, expected: f64| {
        let got = v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"));
        assert!((got - expected).abs() < 0.01, "{got} is not {expected}");
    };
    let lead = stage("Lead");
    assert_eq!(lead["deals_now"], 2);
    assert_eq!(lead["entered"], 4);
    // Two stays of 4 days and two still running at 10.
    close(&lead["mean_days_in_stage"], 7.0);
    close(&lead["conversion_to_next"], 0.5);
    let qualified = stage("Qualified");
    assert_eq!(qualified["deals_now"], 1);
    close(&qualified["mean_days_in_stage"], (1.0 + 6.0) / 2.0);
    close(&qualified["conversion_to_next"], 0.5);
    let proposal = stage("Proposal");
    assert_eq!(
        proposal["deals_now"], 0,
        "a won deal is not in the stage now"
    );
    close(&proposal["mean_days_in_stage"], 2.0);
    close(&proposal["conversion_to_next"], 0.0);
    let negotiation = stage("Negotiation");
    assert_eq!(negotiation["entered"], 0);
    assert_eq!(negotiation["mean_days_in_stage"], Value::Null);
    assert_eq!(
        negotiation["conversion_to_next"],
        Value::Null,
        "the last stage"
    );
    assert_eq!(report.body["won"], 1);
    assert_eq!(report.body["lost"], 0);
}

#[tokio::test]
async fn a_stage_holding_deals_cannot_be_removed_and_the_refusal_names_it() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let pipeline = default_pipeline(&app, &owner).await;
    let pid = pipeline["id"].as_str().unwrap().to_string();
    let d = deal(
        &app,
        &owner,
        json!({ "name": "Held", "value_minor": 1, "currency": "EUR",
                "stage_id": stage_id(&pipeline, "Qualified") }),
    )
    .await;
    let put = |body: Value| {
        Req::new(Method::PUT, format!("/api/v1/pipelines/{pid}/stages"))
            .by(&owner)
            .json(body)
    };
    let keep = |name: &str, probability: i64| json!({ "id": stage_id(&pipeline, name), "name": name, "probability": probability });
    let before = app.count("SELECT count(*) FROM pipeline_stage").await;
    let refused = app
        .send(put(json!([keep("Lead", 10), keep("Proposal", 60)])))
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.error_code(), "stage_has_deals");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Qualified"),
        "{}",
        refused.body
    );
    assert_eq!(
        app.count("SELECT count(*) FROM pipeline_stage").await,
        before
    );

    // Two stages of the same name are refused, whatever their case.
    let twice = app
        .send(put(
            json!([keep("Lead", 10), { "name": "lead", "probability": 5 }]),
        ))
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert_eq!(twice.error_code(), "duplicate_stage");

    // Rename, reorder, add and remove in one change: the deal keeps its stage.
    let changed = app
        .send(put(json!([
            keep("Lead", 5),
            { "id": stage_id(&pipeline, "Proposal"), "name": "Offer", "probability": 50 },
            keep("Qualified", 35),
            { "name": "Contract", "probability": 90 }
        ])))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let order: Vec<(&str, i64)> = changed.body["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["position"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        order,
        vec![("Lead", 0), ("Offer", 1), ("Qualified", 2), ("Contract", 3)]
    );
    let shown = app
        .send(Req::get(format!("/api/v1/deals/{}", d["id"].as_str().unwrap())).by(&owner))
        .await;
    assert_eq!(shown.body["stage_name"], "Qualified");
    assert_eq!(shown.body["probability"], 35);
    let audited = app
        .audit_events(owner.tenant_id, "pipeline.stages_updated")
        .await;
    assert_eq!(audited.len(), 1, "only the change that went through");
    assert_eq!(audited[0]["before"]["stages"][3]["name"], "Negotiation");

    // A new pipeline of its own stages; the deal moves there, to its first stage.
    let created = app
        .send(Req::post("/api/v1/pipelines").by(&owner).json(json!({
            "name": "Partnerships",
            "stages": [{ "name": "Intro", "probability": 20 }, { "name": "Signed", "probability": 100 }]
        })))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["is_default"], false);
    let moved = app
        .send(
            Req::patch(format!("/api/v1/deals/{}", d["id"].as_str().unwrap()))
                .by(&owner)
                .json(json!({ "pipeline_id": created.body["id"] })),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    assert_eq!(moved.body["stage_name"], "Intro");
    // A stage of another pipeline is refused as a conflict, not taken.
    let wrong = app
        .send(
            Req::patch(format!("/api/v1/deals/{}", d["id"].as_str().unwrap()))
                .by(&owner)
                .json(json!({ "stage_id": stage_id(&pipeline, "Lead") })),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::CONFLICT);
    assert_eq!(wrong.error_code(), "stage_of_another_pipeline");
    // Qualified is empty now and can go.
    let removed = app
        .send(put(json!([
            keep("Lead", 5),
            { "id": stage_id(&pipeline, "Proposal"), "name": "Offer", "probability": 50 }
        ])))
        .await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    assert_eq!(removed.body["stages"].as_array().unwrap().len(), 2);
    let taken = app
        .send(
            Req::patch(format!("/api/v1/pipelines/{pid}"))
                .by(&owner)
                .json(json!({ "name": "Partnerships" })),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert_eq!(taken.error_code(), "pipeline_taken");
    // The agent works deals but does not shape pipelines.
    let agent = app.join(&owner, "agent").await;
    let forbidden = app
        .send(
            Req::patch(format!("/api/v1/pipelines/{pid}"))
                .by(&agent)
                .json(json!({ "name": "Mine" })),
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn bad_deal_input_is_refused_with_a_4xx_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let d = deal(
        &app,
        &owner,
        json!({ "name": "Fine", "value_minor": 100, "currency": "EUR" }),
    )
    .await;
    let id = d["id"].as_str().unwrap().to_string();
    let deals_before = app.count("SELECT count(*) FROM deal").await;
    let audit_before = app.count("SELECT count(*) FROM audit_event").await;
    let cases = [
        (
            json!({ "name": "x", "value_minor": 1, "currency": "EURO" }),
            "invalid_currency",
        ),
        (
            json!({ "name": "x", "value_minor": 1, "currency": "eur" }),
            "invalid_currency",
        ),
        (
            json!({ "name": "x", "value_minor": 1, "currency": "XYZ" }),
            "invalid_currency",
        ),
        (
            json!({ "name": "x", "value_minor": -1, "currency": "EUR" }),
            "invalid_value",
        ),
        (
            json!({ "name": " ", "value_minor": 1, "currency": "EUR" }),
            "invalid_text",
        ),
    ];
    for (body, code) in cases {
        let resp = app
            .send(Req::post("/api/v1/deals").by(&owner).json(body.clone()))
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            resp.body
        );
        assert_eq!(resp.error_code(), code, "{body}");
    }
    for body in [
        json!({ "name": "x", "value_minor": 1.5, "currency": "EUR" }),
        json!({ "name": "x", "value_minor": 1, "currency": "EUR", "expected_close_on": "31/03/2027" }),
        json!({ "name": "x", "value_minor": 1, "currency": "EUR", "probability": 5 }),
        json!({ "name": "x", "currency": "EUR" }),
    ] {
        let resp = app
            .send(Req::post("/api/v1/deals").by(&owner).json(body.clone()))
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            resp.body
        );
    }
    for body in [
        json!({ "currency": "ABC" }),
        json!({ "value_minor": -5 }),
        json!({ "name": "" }),
    ] {
        let resp = app
            .send(
                Req::patch(format!("/api/v1/deals/{id}"))
                    .by(&owner)
                    .json(body.clone()),
            )
            .await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            resp.body
        );
    }
    let unknown = app
        .send(
            Req::patch(format!("/api/v1/deals/{id}"))
                .by(&owner)
                .json(json!({ "stage_id": Uuid::now_v7() })),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    for q in ["close_from=tomorrow", "status=pending", "limit=0"] {
        let resp = app
            .send(Req::get(format!("/api/v1/deals?{q}")).by(&owner))
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{q}");
    }
    assert_eq!(app.count("SELECT count(*) FROM deal").await, deals_before);
    assert_eq!(
        app.count("SELECT count(*) FROM audit_event").await,
        audit_before
    );
    let same = app
        .send(Req::get(format!("/api/v1/deals/{id}")).by(&owner))
        .await;
    assert_eq!(same.body["name"], "Fine");
    assert_eq!(same.body["currency"], "EUR");
}

// proves: SEC-3
#[tokio::test]
async fn another_tenants_deal_and_pipeline_answer_404_and_stay_as_they_were() {
    let app = TestApp::spawn().await;
    let a = app.signup("alpha").await;
    let b = app.signup("bravo").await;
    let b_deal = deal(
        &app,
        &b,
        json!({ "name": "B's deal", "value_minor": 1, "currency": "EUR" }),
    )
    .await;
    let id = b_deal["id"].as_str().unwrap();
    let pid = b_deal["pipeline_id"].as_str().unwrap();
    for req in [
        Req::get(format!("/api/v1/deals/{id}")),
        Req::get(format!("/api/v1/deals/{id}/stages")),
        Req::patch(format!("/api/v1/deals/{id}")).json(json!({ "name": "hijacked" })),
        Req::post(format!("/api/v1/deals/{id}/won")),
        Req::new(Method::DELETE, format!("/api/v1/deals/{id}")),
        Req::get(format!("/api/v1/pipelines/{pid}")),
        Req::get(format!("/api/v1/pipelines/{pid}/report")),
        Req::patch(format!("/api/v1/pipelines/{pid}")).json(json!({ "name": "hijacked" })),
    ] {
        let resp = app.send(req.by(&a)).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{}", resp.body);
    }
    let listed = app.send(Req::get("/api/v1/deals").by(&a)).await;
    assert_eq!(listed.body["items"], json!([]));
    let shown = app
        .send(Req::get(format!("/api/v1/deals/{id}")).by(&b))
        .await;
    assert_eq!(shown.body["name"], "B's deal");
    assert_eq!(shown.body["status"], "open");
}

// proves: SEC-2
#[tokio::test]
async fn a_partner_sees_only_the_shared_deals_of_accounts_shared_with_it() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let partner = app.join(&owner, "partner").await;
    let me = app.send(Req::get("/api/v1/auth/me").by(&partner)).await;
    let org = me.body["member"]["partner_org_id"].clone();
    let shared_account = app
        .send(
            Req::post("/api/v1/accounts")
                .by(&owner)
                .json(json!({ "name": "Resold Ltd", "partner_org_id": org })),
        )
        .await
        .uuid("/id");
    let own_account = app
        .send(
            Req::post("/api/v1/accounts")
                .by(&owner)
                .json(json!({ "name": "Direct Ltd" })),
        )
        .await
        .uuid("/id");
    let visible = deal(
        &app,
        &owner,
        json!({ "name": "Shared", "value_minor": 1, "currency": "EUR",
                "account_id": shared_account, "shared": true }),
    )
    .await;
    let visible = visible["id"].as_str().unwrap().to_string();
    let mut hidden = Vec::new();
    for body in [
        json!({ "name": "Not marked", "account_id": shared_account }),
        json!({ "name": "Other account", "account_id": own_account, "shared": true }),
        json!({ "name": "No account", "shared": true }),
    ] {
        let mut body = body;
        body["value_minor"] = json!(1);
        body["currency"] = json!("EUR");
        hidden.push(
            deal(&app, &owner, body).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }

    let list = app.send(Req::get("/api/v1/deals").by(&partner)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(names(&list.body), vec!["Shared"]);
    for path in [
        format!("/api/v1/deals/{visible}"),
        format!("/api/v1/deals/{visible}/stages"),
    ] {
        let resp = app.send(Req::get(&path).by(&partner)).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.body);
    }
    let pipelines = app.send(Req::get("/api/v1/pipelines").by(&partner)).await;
    assert_eq!(pipelines.status, StatusCode::OK, "{}", pipelines.body);
    let pid = pipelines.body[0]["id"].as_str().unwrap().to_string();
    let report = app
        .send(Req::get(format!("/api/v1/pipelines/{pid}/report")).by(&partner))
        .await;
    assert_eq!(
        report.body["stages"][0]["deals_now"], 1,
        "the report counts what the partner may see only"
    );

    // Every deal route: what is not shared is not found, and the partner writes nothing.
    let mut checked = 0;
    for spec in app.state.routes().to_vec() {
        if !spec.path.contains("{deal_id}") {
            continue;
        }
        for id in &hidden {
            let path = spec.path.replace("{deal_id}", id);
            let resp = app
                .send(
                    Req::new(spec.method.clone(), &path)
                        .by(&partner)
                        .json(json!({})),
                )
                .await;
            let expected = if spec.method == Method::GET {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(
                resp.status, expected,
                "{} {path}: {}",
                spec.method, resp.body
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 15,
        "only {checked} partner requests were checked"
    );
    let create = app
        .send(
            Req::post("/api/v1/deals")
                .by(&partner)
                .json(json!({ "name": "x", "value_minor": 1, "currency": "EUR" })),
        )
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN);

    // Row-level security holds even without the query's filter.
    let mut tx = app
        .state
        .db
        .app
        .begin_with(sqlx::AssertSqlSafe(format!(
            "BEGIN; SELECT set_config('app.tenant_id', '{}', true), set_config('app.partner_org_id', '{}', true)",
            owner.tenant_id,
            org.as_str().unwrap()
        )))
        .await
        .unwrap();
    let rows: Vec<String> = sqlx::query_scalar("SELECT name FROM deal")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(rows, vec!["Shared"]);
    let history: i64 = sqlx::query_scalar("SELECT count(*) FROM deal_stage_change")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(history, 1, "the history of hidden deals showed");
}

#[tokio::test]
async fn a_task_about_a_deal_takes_its_account_and_is_listed_by_it() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let account = app
        .send(
            Req::post("/api/v1/accounts")
                .by(&owner)
                .json(json!({ "name": "Globex" })),
        )
        .await
        .uuid("/id");
    let d = deal(
        &app,
        &owner,
        json!({ "name": "Renewal", "value_minor": 1, "currency": "EUR", "account_id": account }),
    )
    .await;
    let id = d["id"].as_str().unwrap();
    let task = app
        .send(
            Req::post("/api/v1/tasks")
                .by(&owner)
                .json(json!({ "title": "Send the proposal", "deal_id": id })),
        )
        .await;
    assert_eq!(task.status, StatusCode::CREATED, "{}", task.body);
    assert_eq!(task.body["deal_id"], id);
    assert_eq!(task.body["account_id"], account.to_string());
    app.send(
        Req::post("/api/v1/tasks")
            .by(&owner)
            .json(json!({ "title": "Unrelated" })),
    )
    .await;
    let listed = app
        .send(Req::get(format!("/api/v1/tasks?deal_id={id}")).by(&owner))
        .await;
    let titles: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, vec!["Send the proposal"]);
    // Deleting the deal keeps the task, unlinked.
    app.send(Req::new(Method::DELETE, format!("/api/v1/deals/{id}")).by(&owner))
        .await;
    let kept = app
        .send(Req::get(format!("/api/v1/tasks/{}", task.uuid("/id"))).by(&owner))
        .await;
    assert_eq!(kept.status, StatusCode::OK);
    assert_eq!(kept.body["deal_id"], Value::Null);
}

#[tokio::test]
async fn the_board_moves_a_card_with_its_select_and_the_deal_page_marks_it_lost_with_the_reason() {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let token = page_token(&app, &owner).await;
    let post = |path: String, fields: &[(&str, &str)]| {
        let mut all = vec![("_csrf", token.as_str())];
        all.extend_from_slice(fields);
        Req::post(path)
            .by(&owner)
            .raw("application/x-www-form-urlencoded", form(&all))
    };
    let created = app
        .send(post(
            "/app/deals".into(),
            &[
                ("name", "Board deal"),
                ("value", "1,200.50"),
                ("currency", "EUR"),
                ("expected_close_on", "2027-02-01"),
                ("back", "board"),
            ],
        ))
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let list = app.send(Req::get("/api/v1/deals").by(&owner)).await;
    let d = &list.body["items"][0];
    assert_eq!(d["value_minor"], 120_050);
    let id = d["id"].as_str().unwrap().to_string();
    let pipeline = default_pipeline(&app, &owner).await;

    let board = app.send(Req::get("/app/deals/board").by(&owner)).await;
    assert_eq!(board.status, StatusCode::OK, "{}", board.body);
    let body = html(&board);
    assert!(
        body.contains("Board deal") && body.contains("EUR 1,200.50"),
        "{body}"
    );
    assert!(body.contains(&format!(r#"action="/app/deals/{id}/move""#)));

    let proposal = stage_id(&pipeline, "Proposal");
    let moved = app
        .send(post(
            format!("/app/deals/{id}/move"),
            &[("stage_id", &proposal), ("back", "board")],
        ))
        .await;
    assert_eq!(moved.status, StatusCode::SEE_OTHER, "{}", moved.body);
    let shown = app
        .send(Req::get(format!("/api/v1/deals/{id}")).by(&owner))
        .await;
    assert_eq!(shown.body["stage_name"], "Proposal");

    let no_reason = app
        .send(post(format!("/app/deals/{id}/lost"), &[("reason", "")]))
        .await;
    assert_eq!(no_reason.status, StatusCode::BAD_REQUEST);
    let lost = app
        .send(post(
            format!("/app/deals/{id}/lost"),
            &[("reason", "Budget frozen")],
        ))
        .await;
    assert_eq!(lost.status, StatusCode::SEE_OTHER);
    let page = app
        .send(Req::get(format!("/app/deals/{id}")).by(&owner))
        .await;
    let body = html(&page);
    assert!(body.contains(r#"data-status="lost""#), "{body}");
    assert!(body.contains("Budget frozen"));
    assert!(
        body.contains("Lead → Proposal"),
        "the history shows the move"
    );
    let list = app
        .send(Req::get("/app/deals?status=lost").by(&owner))
        .await;
    assert!(html(&list).contains("Board deal"));
}
