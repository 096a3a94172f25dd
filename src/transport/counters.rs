//! What the handlers count as they answer: events stored, duplicate or
//! refused, names lenient mode let in, contact decisions and reservations.
//! Plain atomics, always on (one relaxed add per answer); the metrics
//! endpoint reads them at each scrape.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct ApiCounters {
    /// Events written (AppendEvent and AppendEvents).
    pub events_stored: AtomicU64,
    /// Events whose id the customer already had: nothing written.
    pub events_duplicate: AtomicU64,
    /// Events refused by validation: an AppendEvent answered
    /// INVALID_ARGUMENT, or an AppendEvents result REJECTED.
    pub events_rejected: AtomicU64,
    /// Channel, reason and type names outside the taxonomy that lenient
    /// mode accepted.
    pub unknown_names: AtomicU64,
    /// Contact checks answered "allowed" (one per customer of a batch).
    pub contacts_allowed: AtomicU64,
    /// Contact checks answered "not allowed".
    pub contacts_blocked: AtomicU64,
    /// Contacts recorded by a check in reserve mode.
    pub reservations: AtomicU64,
}

impl ApiCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn read(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
