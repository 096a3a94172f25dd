//! The journey context's summaries of a customer's timeline: activity per
//! channel, first and last seen, how many events are held. The memory store
//! keeps them with `record`/`forget`; the Redis store's append script keeps
//! the same figures, and the conformance suite checks both against
//! `CustomerSummary::from_events`.

use std::collections::BTreeMap;

use super::{Event, Initiator, Micros};

/// Activity on one channel over the events held for a customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelActivity {
    pub customer_initiated: u64,
    pub company_initiated: u64,
    /// The latest occurred_at among the events held on this channel.
    pub last_at: Option<Micros>,
}

/// The figures `GetJourneyContext` reports besides the events themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerSummary {
    /// Per channel name, over the events held (retention removes counts).
    pub channels: BTreeMap<String, ChannelActivity>,
    /// The earliest occurred_at ever stored; kept when retention trims it.
    pub first_seen: Option<Micros>,
    /// The latest occurred_at ever stored.
    pub last_seen: Option<Micros>,
    /// How many events are held.
    pub total_events: u64,
}

impl CustomerSummary {
    /// The summary of a timeline computed from scratch: the reference the
    /// incremental versions are tested against.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut summary = Self::default();
        for event in events {
            summary.record(event);
        }
        summary
    }

    /// Counts a newly stored event.
    pub fn record(&mut self, event: &Event) {
        self.record_parts(&event.channel, event.initiator, event.occurred_at);
    }

    /// Counts a newly stored event given by its parts.
    pub fn record_parts(&mut self, channel: &str, initiator: Initiator, at: Micros) {
        self.first_seen = Some(self.first_seen.map_or(at, |s| s.min(at)));
        self.last_seen = Some(self.last_seen.map_or(at, |s| s.max(at)));
        self.total_events += 1;
        let channel = self.channels.entry(channel.to_string()).or_default();
        match initiator {
            Initiator::Customer => channel.customer_initiated += 1,
            Initiator::Company => channel.company_initiated += 1,
        }
        channel.last_at = Some(channel.last_at.map_or(at, |l| l.max(at)));
    }

    /// Uncounts an event that retention removed. Retention removes the
    /// oldest events, so a channel's `last_at` only changes when none of its
    /// events is left, and first/last seen stay as they were.
    pub fn forget(&mut self, channel: &str, initiator: Initiator) {
        self.total_events = self.total_events.saturating_sub(1);
        let Some(activity) = self.channels.get_mut(channel) else {
            return;
        };
        match initiator {
            Initiator::Customer => {
                activity.customer_initiated = activity.customer_initiated.saturating_sub(1)
            }
            Initiator::Company => {
                activity.company_initiated = activity.company_initiated.saturating_sub(1)
            }
        }
        if activity.customer_initiated + activity.company_initiated == 0 {
            self.channels.remove(channel);
        }
    }
}
