//! WhatsApp's customer-service window: a business may write to a customer freely only within
//! 24 hours of the customer's last message; after that only a template message reaches them,
//! until they write again.

use time::OffsetDateTime;

/// How long after the customer's last message a free-form message may still go.
pub const SERVICE_WINDOW: time::Duration = time::Duration::hours(24);

/// Whether the window is open at `now` for a customer who last wrote at `last_inbound_at`
/// (closed when they never wrote).
pub fn is_open(last_inbound_at: Option<OffsetDateTime>, now: OffsetDateTime) -> bool {
    last_inbound_at.is_some_and(|at| now - at <= SERVICE_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_open_for_24_hours_after_the_customers_last_message() {
        let now = OffsetDateTime::now_utc();
        assert!(is_open(Some(now - time::Duration::hours(23)), now));
        assert!(is_open(Some(now - SERVICE_WINDOW), now));
        assert!(!is_open(
            Some(now - SERVICE_WINDOW - time::Duration::seconds(1)),
            now
        ));
        assert!(!is_open(None, now));
    }
}
