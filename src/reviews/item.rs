//! The closed sets a review item is stored with: its kind, its status and who asked for it.
//! The columns are `text` (kind and status with CHECK constraints); these enums map to them
//! through `sqlx::Type`, and to JSON, audit entries and live events as the same snake_case
//! names. Queries bind them with `as_str()`: the macros check a text parameter's Rust type,
//! and a `&str` always fits.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a person is asked to decide: a material action (AGT-6), a low-confidence draft, a
/// guardrail flag or a request for human review (AGT-7). `review_item.kind`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ReviewKind {
    Action,
    LowConfidence,
    GuardrailFlag,
    HumanReview,
}

impl ReviewKind {
    /// In the order the API lists them (the list filter's refusal, the counts).
    pub const ALL: [ReviewKind; 4] = [
        ReviewKind::Action,
        ReviewKind::LowConfidence,
        ReviewKind::GuardrailFlag,
        ReviewKind::HumanReview,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ReviewKind::Action => "action",
            ReviewKind::LowConfidence => "low_confidence",
            ReviewKind::GuardrailFlag => "guardrail_flag",
            ReviewKind::HumanReview => "human_review",
        }
    }

    pub fn parse(raw: &str) -> Option<ReviewKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// Kinds where the customer asked or was promised something, so hears the outcome of a
    /// rejection or an expiry: an action (they were told it waits for approval) and a
    /// human-review request (they asked for it).
    ///
    /// Not a low-confidence draft: when it was opened the conversation went to a person, and
    /// the customer was neither shown the draft nor promised anything about it; the draft is
    /// only a suggestion to whoever answers in the inbox. Rejecting it (or letting it expire)
    /// means the draft is not sent; the conversation itself stays with the people, who answer
    /// the customer themselves. Telling the customer "your request was not approved" about a
    /// request they never made would be wrong. Nor a guardrail flag: the run went on and the
    /// customer already has its answer; the flag only asks a person to look.
    pub fn customer_waits(self) -> bool {
        matches!(self, ReviewKind::Action | ReviewKind::HumanReview)
    }
}

/// Where an item is: `pending` until decided; an approved action goes `approved → executing →
/// executed | failed`, an approved draft `executed`, a resolved human review or flag
/// `resolved`; `rejected` covers expiry too. `review_item.status`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ReviewStatus {
    Pending,
    Approved,
    Executing,
    Executed,
    Failed,
    Rejected,
    Resolved,
}

impl ReviewStatus {
    /// In the order the API lists them (the list filter's refusal, the counts).
    pub const ALL: [ReviewStatus; 7] = [
        ReviewStatus::Pending,
        ReviewStatus::Approved,
        ReviewStatus::Executing,
        ReviewStatus::Executed,
        ReviewStatus::Failed,
        ReviewStatus::Rejected,
        ReviewStatus::Resolved,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Pending => "pending",
            ReviewStatus::Approved => "approved",
            ReviewStatus::Executing => "executing",
            ReviewStatus::Executed => "executed",
            ReviewStatus::Failed => "failed",
            ReviewStatus::Rejected => "rejected",
            ReviewStatus::Resolved => "resolved",
        }
    }

    pub fn parse(raw: &str) -> Option<ReviewStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// For messages such as "this item is already executed".
impl fmt::Display for ReviewStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who asked for the review, as stored: `review_item.requested_by` (the member, when a member
/// asked, is in `requested_by_member`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RequestedBy {
    Agent,
    Member,
    Customer,
}

impl RequestedBy {
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestedBy::Agent => "agent",
            RequestedBy::Member => "member",
            RequestedBy::Customer => "customer",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are what the CHECK constraints list, the API shows and old audit entries hold:
    /// serde, sqlx (through the same rename rule) and `as_str` must agree.
    #[test]
    fn every_name_is_the_stored_snake_case_one_whichever_way_it_is_written() {
        for kind in ReviewKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(ReviewKind::parse(kind.as_str()), Some(kind));
        }
        for status in ReviewStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            assert_eq!(ReviewStatus::parse(status.as_str()), Some(status));
            assert_eq!(status.to_string(), status.as_str());
        }
        for by in [
            RequestedBy::Agent,
            RequestedBy::Member,
            RequestedBy::Customer,
        ] {
            assert_eq!(serde_json::to_value(by).unwrap(), by.as_str());
        }
        assert_eq!(ReviewKind::parse("Action"), None);
        assert_eq!(ReviewStatus::parse("expired"), None);
    }
}
