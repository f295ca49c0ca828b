//! The reviewer's pages in-process: the queue (tabs, counts, filters) and one item with its
//! decisions (approve, edit then approve, reject with a reason, assign), four-eyes shown to the
//! requester, and the pages' refusals. Every decision goes through the reviews domain's own
//! function, so each test checks what the API, the database and the audit log hold afterwards.

use axum::http::{header, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{eventually, fast_worker, Member, Req, Resp, TestApp};
use crate::fakes::openai::{FakeOpenAI, FakeReply};
use crate::web::{form, html, page_token};

struct World {
    app: TestApp,
    owner: Member,
    reviewer: Member,
    second_reviewer: Member,
    agent: Member,
    conversation: Uuid,
    refund: Uuid,
}

async fn world() -> World {
    let app = TestApp::spawn().await;
    let owner = app.signup("acme").await;
    let reviewer = app.join(&owner, "reviewer").await;
    let second_reviewer = app.join(&owner, "reviewer").await;
    let agent = app.join(&owner, "agent").await;
    let inbox = app.webchat_inbox(&owner, "https://shop.example").await;
    let (_, conversation) = app
        .visitor_writes(inbox, "My parcel arrived broken, I want my money back")
        .await;
    // Nothing here executes an action (no worker runs): the endpoint is never called.
    let created = app
        .send(Req::post("/api/v1/agent/actions").by(&owner).json(json!({
            "name": "issue_refund", "description": "refund for an order",
            "target_url": "http://127.0.0.1:9/actions", "secret": "action-secret",
            "kind": "refund", "amount_field": "amount",
            "parameters": { "type": "object", "required": ["order_id", "amount"], "additionalProperties": false,
                "properties": { "order_id": { "type": "string" }, "amount": { "type": "number" },
                                "currency": { "type": "string", "enum": ["EUR", "USD"] } } }
        })))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    World {
        refund: created.uuid("/id"),
        app,
        owner,
        reviewer,
        second_reviewer,
        agent,
        conversation,
    }
}

impl World {
    async fn propose(&self, by: &Member, amount: f64) -> Uuid {
        let resp = self
            .app
            .send(Req::post("/api/v1/reviews").by(by).json(json!({
                "kind": "action", "conversation_id": self.conversation, "action_id": self.refund,
                "arguments": { "order_id": "A-1001", "amount": amount, "currency": "EUR" },
                "note": "customer asked on the phone"
            })))
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
        resp.uuid("/id")
    }

    async fn human_review(&self, by: &Member) -> Uuid {
        let resp = self
            .app
            .send(Req::post("/api/v1/reviews").by(by).json(json!({
                "kind": "human_review", "conversation_id": self.conversation,
                "note": "the customer disputes the answer about returns"
            })))
            .await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.body);
        resp.uuid("/id")
    }

    async fn item(&self, id: Uuid) -> Value {
        let resp = self
            .app
            .send(Req::get(format!("/api/v1/reviews/{id}")).by(&self.owner))
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
        resp.body
    }

    async fn page(&self, by: &Member, path: &str) -> Resp {
        self.app.send(Req::get(path).by(by)).await
    }

    /// Posts one of an item's forms as the member's page would.
    async fn post(&self, by: &Member, id: Uuid, action: &str, fields: &[(&str, &str)]) -> Resp {
        let token = page_token(&self.app, by).await;
        let mut all = vec![("_csrf", token.as_str())];
        all.extend_from_slice(fields);
        self.app
            .send(
                Req::post(format!("/app/reviews/{id}/{action}"))
                    .by(by)
                    .raw("application/x-www-form-urlencoded", form(&all)),
            )
            .await
    }

    async fn audit(&self, action: &str) -> Vec<Value> {
        self.app.audit_events(self.owner.tenant_id, action).await
    }
}

fn went_back(resp: &Resp, id: Uuid) {
    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{}", resp.body);
    assert_eq!(resp.headers[header::LOCATION], format!("/app/reviews/{id}"));
}

/// The rows the queue page lists, by item id.
fn rows(page: &str) -> Vec<Uuid> {
    page.match_indices("data-review=\"")
        .map(|(at, m)| Uuid::parse_str(&page[at + m.len()..at + m.len() + 36]).unwrap())
        .collect()
}

fn count(page: &str, tab: &str) -> i64 {
    let marker = format!("data-count=\"{tab}\">");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {tab} count"))
        + marker.len();
    page[at..page[at..].find('<').unwrap() + at]
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_queue_lists_waiting_items_with_counts_and_filters_by_kind_role_age_and_assignee() {
    let w = world().await;
    let refund = w.propose(&w.agent, 45.0).await;
    let contested = w.human_review(&w.agent).await;

    let queue = w.page(&w.reviewer, "/app/reviews").await;
    assert_eq!(queue.status, StatusCode::OK, "{}", queue.body);
    let page = html(&queue);
    assert_eq!(rows(page), [refund, contested]);
    assert_eq!(count(page, "pending"), 2);
    assert_eq!(count(page, "mine"), 0);
    assert_eq!(count(page, "decided"), 0);
    assert!(page.contains("issue_refund · 45.00 EUR"), "{page}");
    assert!(page.contains("the customer disputes the answer about returns"));
    assert!(page.contains("0 of 1"));
    assert!(page.contains("data-sla-breached=\"0\""));
    // The nav's count, which the live refresh swaps too.
    assert!(page.contains("id=\"nav-reviews-count\" title=\"waiting for review\">2<"));
    assert!(page.contains("hx-trigger=\"sse:review.updated"));

    let actions = html(&w.page(&w.reviewer, "/app/reviews?kind=action").await).to_string();
    assert_eq!(rows(&actions), [refund]);
    assert_eq!(count(&actions, "pending"), 1);
    let admins = html(&w.page(&w.reviewer, "/app/reviews?role=admin").await).to_string();
    assert!(rows(&admins).is_empty());
    assert!(admins.contains("No items match these filters."));
    let old = html(&w.page(&w.reviewer, "/app/reviews?age=1h").await).to_string();
    assert!(rows(&old).is_empty());
    let mut conn = w.app.superuser().await;
    sqlx::query(
        "UPDATE review_item SET created_at = now() - interval '2 hours', due_at = now() - interval '1 hour'
         WHERE id = $1",
    )
    .bind(contested)
    .execute(&mut conn)
    .await
    .unwrap();
    let old = html(&w.page(&w.reviewer, "/app/reviews?age=1h").await).to_string();
    assert_eq!(rows(&old), [contested]);
    assert!(old.contains("data-sla-breached=\"1\""), "{old}");
    assert!(old.contains("data-sla=\"breached\""));

    // Taking an item puts it in "assigned to me".
    went_back(
        &w.post(&w.reviewer, refund, "assign", &[("assignee", "me")])
            .await,
        refund,
    );
    assert_eq!(
        w.item(refund).await["assignee_id"],
        json!(w.reviewer.member_id)
    );
    let mine = html(&w.page(&w.reviewer, "/app/reviews?tab=mine").await).to_string();
    assert_eq!(rows(&mine), [refund]);
    assert_eq!(count(&mine, "mine"), 1);
    let theirs = html(&w.page(&w.second_reviewer, "/app/reviews?tab=mine").await).to_string();
    assert!(rows(&theirs).is_empty());
    assert_eq!(w.audit("review.assigned").await.len(), 1);

    // A filter the queue does not know is a clear error page.
    let bad = w.page(&w.reviewer, "/app/reviews?kind=refunds").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(html(&bad).contains("Kind must be one of"));

    // An item the policy gives to admins is found by that role, and its page names the rule.
    let policy = w
        .app
        .send(
            Req::new(axum::http::Method::PUT, "/api/v1/reviews/policy")
                .by(&w.owner)
                .json(json!({ "rules": [{ "kind": "refund", "above": 100, "role": "admin" }] })),
        )
        .await;
    assert_eq!(policy.status, StatusCode::OK, "{}", policy.body);
    let large = w.propose(&w.agent, 150.0).await;
    let admins = html(&w.page(&w.reviewer, "/app/reviews?role=admin").await).to_string();
    assert_eq!(rows(&admins), [large]);
    let page = html(&w.page(&w.owner, &format!("/app/reviews/{large}")).await).to_string();
    assert!(page.contains("rule 1: refund above 100 → admin"), "{page}");
    assert!(page.contains("an admin decides"));
    // A reviewer may not decide it, and is told why.
    let theirs = html(&w.page(&w.reviewer, &format!("/app/reviews/{large}")).await).to_string();
    assert!(theirs.contains("This item needs an admin"), "{theirs}");
    assert!(!theirs.contains("data-approve-form"));
}

// proves: AGT-6
#[tokio::test]
async fn a_reviewer_sees_the_proposal_and_the_rule_and_approves_it_from_the_page() {
    let w = world().await;
    let id = w.propose(&w.agent, 45.0).await;
    let shown = w.page(&w.reviewer, &format!("/app/reviews/{id}")).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    let page = html(&shown);
    assert!(page.contains("data-proposal-action>issue_refund<"));
    assert!(page.contains("data-amount>45.00 EUR<"));
    // The parameters as a form, each field with the proposed value.
    assert!(
        page.contains("value=\"A-1001\" data-param=\"order_id\""),
        "{page}"
    );
    assert!(page.contains("data-param=\"amount\""));
    assert!(page.contains("data-still-needs=\"1\""));
    assert!(page.contains("My parcel arrived broken"));
    assert!(page.contains("data-language>English<"));
    assert!(page.contains("data-approve"));

    let approved = w
        .post(
            &w.reviewer,
            id,
            "approve",
            &[("mode", "approve"), ("note", "receipt checked")],
        )
        .await;
    went_back(&approved, id);
    let item = w.item(id).await;
    assert_eq!(item["status"], "approved");
    assert_eq!(item["decided_by"], json!(w.reviewer.member_id));
    assert_eq!(item["approvals_given"][0]["note"], "receipt checked");
    let audited = w.audit("review.approved").await;
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0]["actor_id"], w.reviewer.member_id.to_string());

    // Decided: the page says so and offers no decision.
    let after = html(&w.page(&w.reviewer, &format!("/app/reviews/{id}")).await).to_string();
    assert!(after.contains("data-decision"));
    assert!(!after.contains("data-decide"));
}

// proves: AGT-6
#[tokio::test]
async fn edit_then_approve_records_the_edit_and_refuses_a_field_outside_the_schema_changing_nothing(
) {
    let w = world().await;
    let id = w.propose(&w.agent, 45.0).await;
    let refused = w
        .post(
            &w.reviewer,
            id,
            "approve",
            &[
                ("mode", "edit"),
                ("arg.order_id", "A-1001"),
                ("arg.amount", "lots"),
                ("arg.currency", "EUR"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let page = html(&refused);
    assert!(page.contains("data-notice"));
    assert!(
        page.contains("Arguments.amount has the wrong type"),
        "{page}"
    );
    // What the reviewer typed is kept, in the edit form left open.
    assert!(page.contains("value=\"lots\" data-arg=\"amount\""));
    assert!(page.contains("<details open data-edit>"));
    let item = w.item(id).await;
    assert_eq!(item["approvals"], 0);
    assert_eq!(item["approved_proposal"], Value::Null);
    assert!(w.audit("review.approved").await.is_empty());

    let edited = w
        .post(
            &w.reviewer,
            id,
            "approve",
            &[
                ("mode", "edit"),
                ("arg.order_id", "A-1001"),
                ("arg.amount", "30"),
                ("arg.currency", "EUR"),
                ("note", "partial refund"),
            ],
        )
        .await;
    went_back(&edited, id);
    let item = w.item(id).await;
    assert_eq!(item["status"], "approved");
    assert_eq!(item["proposal"]["arguments"]["amount"], 45.0);
    assert_eq!(item["approved_proposal"]["arguments"]["amount"], 30);
    assert_eq!(item["approved_proposal"]["amount"], 30.0);
    let audited = w.audit("review.approved").await;
    let edit = &audited[0]["after"]["edit"];
    assert_eq!(edit["before"]["arguments"]["amount"], 45.0);
    assert_eq!(edit["after"]["arguments"]["amount"], 30);
}

// proves: AGT-6
#[tokio::test]
async fn rejecting_needs_a_reason_and_a_missing_one_shows_the_form_again_and_changes_nothing() {
    let w = world().await;
    let id = w.propose(&w.agent, 45.0).await;
    let refused = w
        .post(&w.reviewer, id, "reject", &[("reason", "   ")])
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let page = html(&refused);
    assert!(page.contains("data-notice"));
    assert!(page.contains("needs a reason"), "{page}");
    assert!(page.contains("data-reject-form"));
    assert_eq!(w.item(id).await["status"], "pending");
    assert!(w.audit("review.rejected").await.is_empty());

    let rejected = w
        .post(&w.reviewer, id, "reject", &[("reason", "no receipt")])
        .await;
    went_back(&rejected, id);
    let item = w.item(id).await;
    assert_eq!(item["status"], "rejected");
    assert_eq!(item["decision_reason"], "no receipt");
    assert_eq!(w.audit("review.rejected").await.len(), 1);
    let page = html(&w.page(&w.reviewer, &format!("/app/reviews/{id}")).await).to_string();
    assert!(page.contains("no receipt"));
}

// proves: AGT-6
#[tokio::test]
async fn the_requester_sees_why_they_cannot_approve_their_own_item_and_their_approval_is_refused() {
    let w = world().await;
    let id = w.propose(&w.reviewer, 20.0).await;
    let own = html(&w.page(&w.reviewer, &format!("/app/reviews/{id}")).await).to_string();
    assert!(own.contains("data-why-not"));
    assert!(own.contains("Four eyes: whoever asked for a review cannot approve it."));
    assert!(!own.contains("data-approve-form"));
    assert!(!own.contains("data-edit-form"));
    // They may still reject or assign it.
    assert!(own.contains("data-reject-form"));

    let refused = w
        .post(&w.reviewer, id, "approve", &[("mode", "approve")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(html(&refused).contains("Four eyes"));
    assert_eq!(w.item(id).await["approvals"], 0);

    // Another reviewer sees the buttons and approves.
    let other = html(
        &w.page(&w.second_reviewer, &format!("/app/reviews/{id}"))
            .await,
    )
    .to_string();
    assert!(other.contains("data-approve-form"));
    assert!(!other.contains("data-why-not"));
    went_back(&w.post(&w.second_reviewer, id, "approve", &[]).await, id);
    assert_eq!(w.item(id).await["status"], "approved");
}

// proves: SEC-1, SEC-2
#[tokio::test]
async fn an_agent_without_the_decide_permission_sees_no_decision_and_every_decision_post_is_refused(
) {
    let w = world().await;
    let id = w.propose(&w.owner, 45.0).await;
    let shown = w.page(&w.agent, &format!("/app/reviews/{id}")).await;
    assert_eq!(shown.status, StatusCode::OK);
    let page = html(&shown);
    assert!(page.contains("issue_refund"));
    for marker in [
        "data-decide",
        "data-approve-form",
        "data-edit-form",
        "data-reject-form",
        "data-assign-form",
    ] {
        assert!(!page.contains(marker), "{marker}");
    }
    for (action, fields) in [
        ("approve", vec![("mode", "approve")]),
        ("reject", vec![("reason", "no")]),
        ("assign", vec![("assignee", "me")]),
    ] {
        let resp = w.post(&w.agent, id, action, &fields).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{action}");
        assert!(html(&resp).contains("Not allowed"));
    }
    let item = w.item(id).await;
    assert_eq!(item["status"], "pending");
    assert_eq!(item["assignee_id"], Value::Null);
}

// proves: SEC-3
#[tokio::test]
async fn another_tenants_review_item_is_not_found_on_every_review_page() {
    let w = world().await;
    let id = w.propose(&w.agent, 45.0).await;
    let other = w.app.signup("bravo").await;
    let shown = w.page(&other, &format!("/app/reviews/{id}")).await;
    assert_eq!(shown.status, StatusCode::NOT_FOUND);
    assert!(!html(&shown).contains("issue_refund"));
    for (action, fields) in [
        ("approve", vec![("mode", "approve")]),
        ("reject", vec![("reason", "no")]),
        ("assign", vec![("assignee", "me")]),
    ] {
        let resp = w.post(&other, id, action, &fields).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{action}");
    }
    let queue = html(&w.page(&other, "/app/reviews").await).to_string();
    assert!(rows(&queue).is_empty());
    assert_eq!(w.item(id).await["status"], "pending");
}

#[tokio::test]
async fn a_human_review_is_resolved_from_the_page_with_an_outcome() {
    let w = world().await;
    let id = w.human_review(&w.agent).await;
    let page = html(&w.page(&w.reviewer, &format!("/app/reviews/{id}")).await).to_string();
    assert!(page.contains("data-request-note>the customer disputes"));
    assert!(page.contains("name=\"outcome\""));
    went_back(
        &w.post(
            &w.reviewer,
            id,
            "approve",
            &[("mode", "approve"), ("outcome", "changed"), ("message", "")],
        )
        .await,
        id,
    );
    let item = w.item(id).await;
    assert_eq!(item["status"], "resolved");
    assert_eq!(item["result"]["outcome"], "changed");
}

// proves: AGT-5
#[tokio::test]
async fn a_low_confidence_draft_is_edited_on_its_page_and_the_customer_receives_the_edit() {
    let app = TestApp::spawn_with(|c| fast_worker(c, "http://127.0.0.1:9")).await;
    app.start_workers();
    let owner = app.signup("acme").await;
    let reviewer = app.join(&owner, "reviewer").await;
    let model = FakeOpenAI::start().await;
    model.set_default_reply(FakeReply::Json(json!({
        "action": "reply", "reply": "Maybe restart it?", "confidence": 0.1,
        "reason_code": "unsure", "cited_sources": [], "action_request": null
    })));
    let settings = app
        .send(
            Req::new(axum::http::Method::PUT, "/api/v1/agent/settings")
                .by(&owner)
                .json(json!({ "provider_base_url": model.base_url, "api_key": "sk-test", "max_retries": 1,
                              "timeout_ms": 2000, "confidence_threshold": 0.7 })),
        )
        .await;
    assert_eq!(settings.status, StatusCode::OK, "{}", settings.body);
    let inbox = app.webchat_inbox(&owner, "https://help.example").await;
    let (_, conversation) = app
        .visitor_writes(inbox, "The device makes a strange noise")
        .await;
    let id = eventually(30, "the low-confidence draft", || async {
        let list = app
            .send(
                Req::get(format!(
                    "/api/v1/reviews?kind=low_confidence&conversation_id={conversation}"
                ))
                .by(&reviewer),
            )
            .await;
        list.body["items"][0]["id"]
            .as_str()
            .map(|id| Uuid::parse_str(id).unwrap())
    })
    .await;

    let page = app
        .send(Req::get(format!("/app/reviews/{id}")).by(&reviewer))
        .await;
    let page = html(&page);
    assert!(
        page.contains("data-draft-text>Maybe restart it?<"),
        "{page}"
    );
    assert!(page.contains("confidence 0.10"));
    assert!(page.contains("The device makes a strange noise"));
    assert!(page.contains("data-edit-draft>Maybe restart it?<"));

    let token = page_token(&app, &reviewer).await;
    let edited = "Please hold the power button for ten seconds.";
    let resp = app
        .send(
            Req::post(format!("/app/reviews/{id}/approve"))
                .by(&reviewer)
                .raw(
                    "application/x-www-form-urlencoded",
                    form(&[("_csrf", &token), ("mode", "edit"), ("draft", edited)]),
                ),
        )
        .await;
    went_back(&resp, id);
    let sent = |body: &str| {
        format!(
            "SELECT count(*) FROM message WHERE conversation_id = '{conversation}' AND NOT private
             AND body LIKE '%{body}%'"
        )
    };
    assert_eq!(app.count(&sent(edited)).await, 1);
    assert_eq!(app.count(&sent("Maybe restart")).await, 0);
    let audited = app.audit_events(owner.tenant_id, "review.approved").await;
    assert_eq!(
        audited[0]["after"]["edit"]["before"]["draft"],
        "Maybe restart it?"
    );
    assert_eq!(audited[0]["after"]["edit"]["after"]["draft"], edited);
}
