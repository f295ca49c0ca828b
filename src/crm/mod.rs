//! The customer-success core: accounts (companies) and contacts (people), with search and
//! cursor pagination. Every mutation is audited with before and after (AUD-1).

pub mod accounts;
pub mod contacts;
pub mod timeline;

use crate::error::{Error, Result};

/// Page size requested by a client, bounded.
pub fn page_limit(requested: Option<i64>) -> Result<i64> {
    let limit = requested.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Error::bad_request(
            "invalid_limit",
            "limit must be 1 to 200",
        ));
    }
    Ok(limit)
}

/// A custom-attributes value must be a JSON object of modest size (the API document says so
/// where a body carries one).
pub fn check_attributes(value: &serde_json::Value) -> Result<()> {
    if !value.is_object() {
        return Err(Error::bad_request(
            "invalid_attributes",
            "attributes must be a JSON object",
        ));
    }
    if value.to_string().len() > 16 * 1024 {
        return Err(Error::bad_request(
            "invalid_attributes",
            "attributes are limited to 16 KiB",
        ));
    }
    Ok(())
}
