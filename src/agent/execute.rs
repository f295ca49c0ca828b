//! Carrying out what a reviewer approved (`review.execute`, AGT-6): the tenant's endpoint is
//! called once, signed with the action's secret, and a failure that will not heal hands the
//! conversation to the people.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

use super::actions::secret_context;
use super::AgentState;
use crate::error::Result;
use crate::queue::{Job, Outcome};
use crate::reviews::{self, tenant_actions, TenantAction};

/// The `review.execute` job: carries out an action a reviewer approved (AGT-6), exactly once.
/// The review queue claims the item and records the outcome; calling the endpoint, and handing
/// the conversation to the people when it fails for good, are the agent's.
pub async fn run_approved_job(state: &AgentState, job: &Job) -> Outcome {
    let Some(item_id) = reviews::approved_item(job) else {
        return Outcome::Fail {
            error: "the job names no review item".into(),
        };
    };
    match execute_approved(state, job, item_id).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Retry {
            error: e.to_string(),
            after: None,
        },
    }
}

async fn execute_approved(state: &AgentState, job: &Job, item_id: Uuid) -> Result<Outcome> {
    let tenant_id = job.tenant_id;
    let Some(approved) = reviews::claim_approved(&state.db, tenant_id, item_id).await? else {
        return Ok(Outcome::Done);
    };
    let action = match approved.action_id {
        Some(id) => tenant_actions(&mut *state.db.tenant_tx(tenant_id).await?)
            .await?
            .into_iter()
            .find(|a| a.id == id),
        None => None,
    };
    let (status, body) = match (&action, approved.conversation_id) {
        (Some(action), Some(conversation_id)) => {
            invoke(
                state,
                action,
                &approved.arguments,
                conversation_id,
                &approved.idempotency_key,
            )
            .await
        }
        _ => (0, "the action no longer exists".to_string()),
    };
    let success = (200..300).contains(&status);
    let permanent =
        action.is_none() || ((400..500).contains(&status) && status != 408 && status != 429);
    if !success && !permanent && job.attempts < job.max_attempts {
        return Ok(Outcome::Retry {
            error: format!("the action endpoint answered {status}: {body}"),
            after: None,
        });
    }

    let mut tx = state.db.tenant_tx(tenant_id).await?;
    // Handed over in the transaction that records the failure, and audited before it.
    if let (false, Some(conversation_id)) = (success, approved.conversation_id) {
        crate::conversations::hand_to_humans(
            &mut tx,
            tenant_id,
            conversation_id,
            "approved_action_failed",
            None,
        )
        .await?;
    }
    reviews::settle_approved(&mut tx, tenant_id, &approved, success, status, &body).await?;
    tx.commit().await?;
    Ok(Outcome::Done)
}

/// Calls a tenant's action endpoint: JSON body, HMAC-SHA256 signature of the body under the
/// action's secret, and an idempotency key the endpoint can use to act once.
pub(super) async fn invoke(
    state: &AgentState,
    action: &TenantAction,
    arguments: &Value,
    conversation_id: Uuid,
    idempotency_key: &str,
) -> (u16, String) {
    if let Err(e) = crate::http::egress::check_url(&action.target_url, state.allow_private) {
        return (0, format!("refused: {e}"));
    }
    let Ok(secret) = state.sealer.open(
        &action.secret,
        &secret_context(action.id, &action.target_url),
    ) else {
        return (
            0,
            "refused: the action's secret was saved for another endpoint".into(),
        );
    };
    let body = json!({ "action": action.name, "arguments": arguments, "conversation_id": conversation_id, "idempotency_key": idempotency_key }).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret).expect("HMAC takes any key");
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let response = state
        .http
        .post(&action.target_url)
        .header("content-type", "application/json")
        .header("x-custodian-signature", signature)
        .header("idempotency-key", idempotency_key)
        .body(body)
        .send()
        .await;
    match response {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            (status, text.chars().take(2000).collect())
        }
        Err(e) => {
            // reqwest's message names the URL only; the cause (a refused address, a timeout)
            // is in its source chain.
            let mut message = format!("the action endpoint did not answer: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            (0, message)
        }
    }
}
