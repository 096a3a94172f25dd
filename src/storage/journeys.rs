//! What the stores share to follow customers through journeys: the
//! definitions in force (swapped on reload) with the taxonomy that gives
//! each event its facts, and the types of the journey listing queries.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::domain::{
    journey::{
        track, EventFacts, JourneyDefinitions, JourneyStates, JourneyUpdate, RecentInteraction,
    },
    CustomerId, Event, Micros, Taxonomy,
};

/// The journey definitions a store follows customers through. Shared with
/// the service, which swaps the definitions on reload.
#[derive(Clone)]
pub struct JourneyTracker {
    definitions: Arc<ArcSwap<JourneyDefinitions>>,
    taxonomy: Arc<Taxonomy>,
}

impl JourneyTracker {
    pub fn new(definitions: Arc<ArcSwap<JourneyDefinitions>>, taxonomy: Arc<Taxonomy>) -> Self {
        Self {
            definitions,
            taxonomy,
        }
    }

    /// The definitions in force now.
    pub fn definitions(&self) -> Arc<JourneyDefinitions> {
        self.definitions.load_full()
    }

    /// What `events` (of one customer, one call; of an id sent twice, the
    /// first copy) change in their journeys, taken in time order whatever
    /// the order of the call: a batch that
    /// sends a step before the journey's start moves the journey as the
    /// same events sent one by one in time would.
    pub fn track<'a>(
        &self,
        definitions: &JourneyDefinitions,
        prior: &JourneyStates,
        recent: &[RecentInteraction],
        events: impl IntoIterator<Item = &'a Event>,
    ) -> JourneyUpdate {
        // An id sent twice in one call is stored once, as its first copy:
        // only that one is followed (on Redis every copy reaches here).
        let mut seen = std::collections::HashSet::new();
        let mut facts: Vec<EventFacts> = events
            .into_iter()
            .filter(|e| seen.insert(e.event_id.as_str()))
            .map(|e| EventFacts::from_event(e, &self.taxonomy))
            .collect();
        // Stable: events of one instant keep the call's order.
        facts.sort_by_key(|f| f.at);
        track(definitions, prior, recent, &facts)
    }
}

impl std::fmt::Debug for JourneyTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JourneyTracker")
            .field("journeys", &self.definitions.load().len())
            .finish()
    }
}

/// Where a listing page ends: the instant of its last customer and how
/// many customers at exactly that instant were returned so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingCursor {
    pub at: Micros,
    pub skip: usize,
}

/// A page of one journey listing (see `Listing::key`).
#[derive(Debug, Clone)]
pub struct JourneyListQuery {
    pub listing: String,
    /// Inclusive.
    pub start: Micros,
    /// Exclusive.
    pub end: Micros,
    pub limit: usize,
    pub after: Option<ListingCursor>,
}

/// Customers of a listing, oldest first, and where the next page starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JourneyListPage {
    pub customers: Vec<(CustomerId, Micros)>,
    pub next: Option<ListingCursor>,
}

impl JourneyListQuery {
    /// Where to start reading: the instant and how many entries at it to skip.
    pub fn from(&self) -> (Micros, usize) {
        match self.after {
            Some(c) if c.at >= self.start => (c.at, c.skip),
            _ => (self.start, 0),
        }
    }

    /// Builds the page from up to `limit + 1` entries read from `from()`.
    pub fn page(&self, mut entries: Vec<(CustomerId, Micros)>) -> JourneyListPage {
        let more = entries.len() > self.limit;
        entries.truncate(self.limit);
        let next = match (more, entries.last()) {
            (true, Some(&(_, last))) => {
                let (from, skipped) = self.from();
                let here = entries.iter().filter(|(_, at)| *at == last).count();
                Some(ListingCursor {
                    at: last,
                    skip: if last == from { skipped + here } else { here },
                })
            }
            _ => None,
        };
        JourneyListPage {
            customers: entries,
            next,
        }
    }
}
