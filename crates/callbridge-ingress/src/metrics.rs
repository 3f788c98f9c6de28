//! The ingress's metrics, recorded through the `metrics` facade and served
//! by `callbridge_runtime::health` on `/metrics`.

use std::time::Duration;

use callbridge_types::event::EventType;

use crate::error::CallbackError;

/// The seed's histogram: handling time of one callback, whatever its outcome.
pub const CALLBACK_PROCESSING_TIME_SECONDS: &str = "callback_processing_time_seconds";
/// Callbacks by `event_type` and `outcome` (accepted, unauthorized, invalid, too_large,
/// timeout, unavailable).
pub const CALLBACKS_TOTAL: &str = "callbacks_total";
pub use crate::publisher::PUBLISH_CONFIRM_SECONDS;

/// Records one callback. `event_type` is `None` when the body was never read as an
/// event (too large, unauthorized, invalid); unknown event types are counted as
/// `other`, so a sender cannot create label values without limit.
pub fn record_callback(
    event_type: Option<&EventType>,
    error: Option<&CallbackError>,
    elapsed: Duration,
) {
    let event_type = match event_type {
        None => "unknown",
        Some(EventType::Other(_)) => "other",
        Some(known) => known.as_str(),
    };
    let outcome = error.map_or("accepted", CallbackError::outcome);
    metrics::histogram!(CALLBACK_PROCESSING_TIME_SECONDS).record(elapsed);
    metrics::counter!(CALLBACKS_TOTAL, "event_type" => event_type.to_owned(), "outcome" => outcome)
        .increment(1);
}
