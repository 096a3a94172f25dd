//! The memory store's journey indexes, kept beside the timelines under the
//! same lock: the stat counters per journey and day, the deadline index the
//! sweeper reads and the status listings of `ListJourneys`. The customers'
//! journey states themselves live in their timelines.

use std::collections::{BTreeSet, HashMap};

use super::{JourneyListPage, JourneyListQuery};
use crate::domain::{
    journey::{forgotten_deltas, Day, DayCounters, JourneyStates, JourneyUpdate, StatsLedger},
    CustomerId, Micros,
};

#[derive(Debug, Default)]
pub(super) struct JourneyBook {
    ledger: StatsLedger,
    /// (deadline, journey, profile).
    deadlines: BTreeSet<(Micros, String, CustomerId)>,
    /// Listing key → (instant, profile).
    listings: HashMap<String, BTreeSet<(Micros, CustomerId)>>,
    /// (listing key, profile) → its instant in that listing.
    listed_at: HashMap<(String, CustomerId), Micros>,
}

impl JourneyBook {
    /// Records what one profile's update changes outside its states.
    pub(super) fn apply(&mut self, profile: &CustomerId, update: &JourneyUpdate) {
        self.ledger.apply_all(&update.deltas);
        for listing in &update.unlisted {
            self.unlist(listing.key(), profile);
        }
        for listing in &update.listed {
            // A listing holds a profile once, at its latest instant.
            let key = listing.key();
            self.unlist(key.clone(), profile);
            self.listings
                .entry(key.clone())
                .or_default()
                .insert((listing.at, profile.clone()));
            self.listed_at.insert((key, profile.clone()), listing.at);
        }
        for change in &update.deadlines {
            if let Some(old) = change.old {
                self.deadlines
                    .remove(&(old, change.journey.clone(), profile.clone()));
            }
            if let Some(new) = change.new {
                self.deadlines
                    .insert((new, change.journey.clone(), profile.clone()));
            }
        }
    }

    fn unlist(&mut self, key: String, profile: &CustomerId) {
        let member = (key, profile.clone());
        if let Some(at) = self.listed_at.remove(&member) {
            if let Some(set) = self.listings.get_mut(&member.0) {
                set.remove(&(at, member.1));
            }
        }
    }

    /// Counts the journeys of an erased profile still in progress as
    /// forgotten (they will neither complete nor drop).
    pub(super) fn count_forgotten(&mut self, states: &JourneyStates) {
        self.ledger
            .apply_all(&forgotten_deltas(states.values().map(|s| &**s)));
    }

    /// Lets go of `profile` in every listing and in the deadline index
    /// (a scan: erasure is rare).
    pub(super) fn forget(&mut self, profile: &CustomerId) {
        let listed: Vec<String> = self
            .listed_at
            .keys()
            .filter(|(_, p)| p == profile)
            .map(|(key, _)| key.clone())
            .collect();
        for key in listed {
            self.unlist(key, profile);
        }
        self.deadlines.retain(|(_, _, p)| p != profile);
    }

    /// Up to `max` deadlines at or before `now`, earliest first.
    pub(super) fn due(&self, now: Micros, max: usize) -> Vec<(Micros, String, CustomerId)> {
        self.deadlines
            .iter()
            .take_while(|(at, _, _)| *at <= now)
            .take(max)
            .cloned()
            .collect()
    }

    /// Moves a due deadline the sweep did not drop to `later`, or forgets
    /// it (none: nothing left to drop).
    pub(super) fn move_deadline(
        &mut self,
        entry: &(Micros, String, CustomerId),
        later: Option<Micros>,
    ) {
        self.deadlines.remove(entry);
        if let Some(at) = later {
            self.deadlines
                .insert((at, entry.1.clone(), entry.2.clone()));
        }
    }

    /// Forgets listing entries before `listed_before` and counters of days
    /// before `first_day`.
    pub(super) fn trim(&mut self, listed_before: Micros, first_day: Day) {
        self.ledger.forget_before(first_day);
        for (key, set) in &mut self.listings {
            let kept = set.split_off(&(listed_before, CustomerId::from_trusted("")));
            for (_, profile) in std::mem::replace(set, kept) {
                self.listed_at.remove(&(key.clone(), profile));
            }
        }
    }

    pub(super) fn counters(&self, journey: &str, days: &[Day]) -> Vec<DayCounters> {
        days.iter()
            .map(|&day| self.ledger.day(journey, day).cloned().unwrap_or_default())
            .collect()
    }

    pub(super) fn page(&self, query: &JourneyListQuery) -> JourneyListPage {
        let Some(set) = self.listings.get(&query.listing) else {
            return JourneyListPage::default();
        };
        let (from, skip) = query.from();
        let entries = set
            .range((from, CustomerId::from_trusted(""))..)
            .take_while(|(at, _)| *at < query.end)
            .skip(skip)
            .take(query.limit + 1)
            .map(|(at, p)| (p.clone(), *at))
            .collect();
        query.page(entries)
    }
}
