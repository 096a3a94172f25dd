//! Following one customer through every defined journey: applies a batch of
//! their events (or a sweep) to all their journey states at once and says
//! what a store must write in the same atomic step — the changed states,
//! the stat deltas, the status listings (`ListJourneys`) and the deadline
//! index (the sweeper's). Pure: the store reads the prior states, calls
//! this, and writes the update.
//!
//! The customer's latest interactions (what the "before entering" figure
//! reads) are kept once per customer, not once per journey: a journey that
//! may still be entered would hold exactly the latest `lookback_events` of
//! them, so they are handed to `advance` inside its state and taken out
//! again before the state is stored. An event that matches no step then
//! changes one small list instead of every journey's state.

use super::{
    definition::{JourneyDefinition, JourneyDefinitions},
    delta::StatDelta,
    facts::EventFacts,
    state::{JourneyState, JourneyStatus, RecentInteraction},
    states::JourneyStates,
    transition::{advance, sweep},
};
use crate::domain::Micros;

/// A customer's place in one status listing of a journey: the listing of
/// every customer in that status, or (with `step`) of those at that step.
/// `at` orders the listing: when the journey started (in progress) or
/// finished (completed, dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub journey: String,
    pub status: JourneyStatus,
    pub step: Option<String>,
    pub at: Micros,
}

impl Listing {
    /// The listing's name, unique per journey, status and step: what a
    /// store keys it by. Journey and step names hold no `:`.
    pub fn key(&self) -> String {
        let status = status_name(self.status);
        match &self.step {
            None => format!("{}:{status}", self.journey),
            Some(step) => format!("{}:{status}:{step}", self.journey),
        }
    }

    /// Whether the two are the same listing (the same `key`), whatever
    /// their instants; without formatting either key.
    pub fn same_listing(&self, other: &Listing) -> bool {
        self.journey == other.journey && self.status == other.status && self.step == other.step
    }
}

/// Every listing key a journey can have: each status, and in progress and
/// dropped at each step (what a store trims by age).
pub fn listing_keys(definition: &JourneyDefinition) -> Vec<String> {
    let listing = |status, step: Option<&str>| {
        Listing {
            journey: definition.name().to_string(),
            status,
            step: step.map(str::to_string),
            at: Micros(0),
        }
        .key()
    };
    let mut keys: Vec<String> = [
        JourneyStatus::InProgress,
        JourneyStatus::Completed,
        JourneyStatus::Dropped,
    ]
    .into_iter()
    .map(|status| listing(status, None))
    .collect();
    for step in definition.steps() {
        keys.push(listing(JourneyStatus::InProgress, Some(&step.name)));
        keys.push(listing(JourneyStatus::Dropped, Some(&step.name)));
    }
    keys
}

/// The name of a status in listing keys.
pub fn status_name(status: JourneyStatus) -> &'static str {
    match status {
        JourneyStatus::NotStarted => "not_started",
        JourneyStatus::InProgress => "in_progress",
        JourneyStatus::Completed => "completed",
        JourneyStatus::Dropped => "dropped",
    }
}

/// The listings a state belongs to: none before the journey starts; its
/// status, and its status at its step (the current step in progress, the
/// step of the drop).
pub fn listings(state: &JourneyState) -> Vec<Listing> {
    let (at, step) = match state.status {
        JourneyStatus::NotStarted => return Vec::new(),
        JourneyStatus::InProgress => (state.started_at, state.current_step.as_ref()),
        JourneyStatus::Completed => (state.finished_at, None),
        JourneyStatus::Dropped => (state.finished_at, state.dropped_at_step.as_ref()),
    };
    let Some(at) = at else {
        return Vec::new();
    };
    let listing = |step: Option<String>| Listing {
        journey: state.journey.clone(),
        status: state.status,
        step,
        at,
    };
    let mut out = vec![listing(None)];
    if let Some(step) = step {
        out.push(listing(Some(step.name.clone())));
    }
    out
}

/// A change to the deadline index for one journey of the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineChange {
    pub journey: String,
    /// The deadline to remove, if one was indexed.
    pub old: Option<Micros>,
    /// The deadline to index, if the journey is (still) in progress.
    pub new: Option<Micros>,
}

/// Everything one customer's events (or a sweep) change in the journeys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JourneyUpdate {
    /// The states that changed, in their new form (without `recent`).
    pub states: Vec<JourneyState>,
    /// The customer's latest interactions, when they changed.
    pub recent: Option<Vec<RecentInteraction>>,
    pub deltas: Vec<StatDelta>,
    /// Listings the customer leaves.
    pub unlisted: Vec<Listing>,
    /// Listings the customer joins, or stays in with a new instant.
    pub listed: Vec<Listing>,
    pub deadlines: Vec<DeadlineChange>,
}

impl JourneyUpdate {
    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.deltas.is_empty() && self.recent.is_none()
    }

    /// Records the change of one journey from `before` to `after`.
    pub(super) fn record(
        &mut self,
        before: Option<&JourneyState>,
        after: JourneyState,
        deltas: Vec<StatDelta>,
    ) {
        let old = before.map(listings).unwrap_or_default();
        let new = listings(&after);
        self.unlisted.extend(
            old.iter()
                .filter(|o| !new.iter().any(|n| n.same_listing(o)))
                .cloned(),
        );
        self.listed
            .extend(new.into_iter().filter(|n| !old.contains(n)));
        let old_deadline = before.and_then(|s| s.deadline);
        if old_deadline != after.deadline {
            self.deadlines.push(DeadlineChange {
                journey: after.journey.clone(),
                old: old_deadline,
                new: after.deadline,
            });
        }
        self.deltas.extend(deltas);
        self.states.push(after);
    }
}

/// Applies a customer's events, in the order given, to their states in
/// every defined journey, with `recent` the customer's latest interactions.
/// States of journeys no longer defined are left alone.
pub fn track(
    definitions: &JourneyDefinitions,
    prior: &JourneyStates,
    recent: &[RecentInteraction],
    events: &[EventFacts],
) -> JourneyUpdate {
    let capacity = recent_capacity(definitions);
    // Sized for the most it will hold, so that the list a cache keeps has
    // no spare room (see `keep_latest`): a full list stays at its length,
    // a shorter one grows by at most the events, up to `capacity`.
    let longest = recent.len().max(capacity.min(recent.len() + events.len()));
    let mut shared = Vec::with_capacity(longest);
    shared.extend_from_slice(recent);
    let mut current: Vec<Option<JourneyState>> = vec![None; definitions.len()];
    let mut deltas: Vec<Vec<StatDelta>> = vec![Vec::new(); definitions.len()];
    for event in events {
        for (i, definition) in definitions.iter().enumerate() {
            let stored = current[i]
                .as_ref()
                .or_else(|| prior.get(definition.name()).map(|s| &**s));
            // Outside a journey, an event that cannot start one changes
            // only the interactions kept, which live outside the state:
            // skip the state machine (most events take this path).
            let in_progress = stored.is_some_and(|s| s.status == JourneyStatus::InProgress);
            if !in_progress && !could_start(definition, event) {
                continue;
            }
            let state = stored
                .cloned()
                .unwrap_or_else(|| JourneyState::not_started(definition.name()));
            let before = with_recent(definition, state, &shared);
            let transition = advance(definition, Some(&before), event);
            deltas[i].extend(transition.deltas);
            if let Some(mut after) = transition.state {
                // Freed, not cleared: the state is cached as it is.
                after.recent = Vec::new();
                current[i] = Some(after);
            }
        }
        remember(&mut shared, capacity, event);
    }
    let mut update = JourneyUpdate::default();
    for ((definition, after), deltas) in definitions.iter().zip(current).zip(deltas) {
        let before = prior.get(definition.name());
        let unchanged = match (&after, before) {
            (None, _) => true,
            (Some(after), Some(before)) => after == &**before,
            // Nothing stored and still not started: nothing to store.
            (Some(after), None) => *after == JourneyState::not_started(definition.name()),
        };
        match after {
            Some(after) if !unchanged => update.record(before.map(|s| &**s), after, deltas),
            _ => update.deltas.extend(deltas),
        }
    }
    if shared.as_slice() != recent {
        update.recent = Some(shared);
    }
    update
}

/// How many latest interactions a customer keeps: the most any journey
/// looks back.
pub(super) fn recent_capacity(definitions: &JourneyDefinitions) -> usize {
    definitions
        .iter()
        .map(|d| d.lookback_events())
        .max()
        .unwrap_or(0)
}

/// Whether `event` reaches the start step without abandoning: the only way
/// into a journey (see `transition::advance`).
fn could_start(definition: &JourneyDefinition, event: &EventFacts) -> bool {
    definition
        .matching_steps(event)
        .any(|i| i == definition.start_index())
        && !definition.is_abandon(event)
}

/// A stored state with the interactions it would hold if it kept its own:
/// the latest `lookback_events` while the journey may still be entered.
fn with_recent(
    definition: &JourneyDefinition,
    mut state: JourneyState,
    shared: &[RecentInteraction],
) -> JourneyState {
    let may_enter = state.status == JourneyStatus::NotStarted || definition.reentry();
    if may_enter {
        let keep = definition.lookback_events().min(shared.len());
        state.recent = shared[shared.len() - keep..].to_vec();
    }
    state
}

/// Keeps the customer's latest `capacity` interactions by time, each once
/// (the rule `advance` applies to a state's own list).
fn remember(recent: &mut Vec<RecentInteraction>, capacity: usize, event: &EventFacts) {
    if recent.iter().any(|r| *r.event_id == *event.event_id) {
        return;
    }
    RecentInteraction::keep_latest(recent, capacity, event);
}

/// How long a due deadline of a journey not defined here waits before it
/// is looked at again.
pub const UNDEFINED_JOURNEY_RETRY_MICROS: i64 = 3_600 * Micros::PER_SECOND;

/// Where a due entry of the deadline index that `sweep_due` did not drop
/// goes: none when there is nothing left to drop (a state gone with its
/// profile, finished, or at a later deadline already indexed), else the
/// instant to index it at: its state's later deadline, or, for a journey
/// this instance does not define while its state is still in progress,
/// an hour from now. Another instance may define it (a reload under way),
/// or this one again later: forgotten, the journey would stay in progress
/// for good.
pub fn deadline_left_behind(
    definitions: &JourneyDefinitions,
    journey: &str,
    state: Option<&JourneyState>,
    now: Micros,
) -> Option<Micros> {
    let deadline = state
        .filter(|s| s.status == JourneyStatus::InProgress)
        .and_then(|s| s.deadline)?;
    if definitions.get(journey).is_none() {
        return Some(now.saturating_add_micros(UNDEFINED_JOURNEY_RETRY_MICROS));
    }
    (deadline > now).then_some(deadline)
}

/// Drops every journey of the customer whose inactivity deadline is at or
/// before `now`.
pub fn sweep_due(
    definitions: &JourneyDefinitions,
    prior: &JourneyStates,
    now: Micros,
) -> JourneyUpdate {
    let mut update = JourneyUpdate::default();
    for definition in definitions.iter() {
        let Some(before) = prior.get(definition.name()) else {
            continue;
        };
        if let Some(transition) = sweep(definition, before, now) {
            if let Some(after) = transition.state {
                update.record(Some(before), after, transition.deltas);
            }
        }
    }
    update
}

/// The states a reader of the customer's context wants: journeys in
/// progress, and those finished at or after `finished_since`, of journeys
/// still defined, most recent activity first.
pub fn visible<'a>(
    definitions: &JourneyDefinitions,
    states: impl IntoIterator<Item = &'a JourneyState>,
    finished_since: Micros,
) -> Vec<&'a JourneyState> {
    let mut shown: Vec<&JourneyState> = states
        .into_iter()
        .filter(|s| definitions.get(&s.journey).is_some())
        .filter(|s| match s.status {
            JourneyStatus::NotStarted => false,
            JourneyStatus::InProgress => true,
            JourneyStatus::Completed | JourneyStatus::Dropped => {
                s.finished_at.is_some_and(|at| at >= finished_since)
            }
        })
        .collect();
    shown.sort_by_key(|s| std::cmp::Reverse(s.finished_at.or(s.last_progress_at).or(s.started_at)));
    shown
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::{
        journey::testkit::{banking_step, MINUTE as MIN, T0},
        Taxonomy,
    };

    fn banking_set() -> JourneyDefinitions {
        JourneyDefinitions::builtin(&Taxonomy::builtin()).expect("built-in definitions")
    }

    /// The banking sign-in `at` µs after T0.
    fn sign_in(id: &str, at: i64) -> EventFacts<'static> {
        banking_step(0, id, T0 + at)
    }

    #[test]
    fn a_start_lists_the_customer_in_progress_and_indexes_a_deadline() {
        let defs = banking_set();
        let update = track(&defs, &JourneyStates::new(), &[], &[sign_in("e1", 0)]);
        let state = update
            .states
            .iter()
            .find(|s| s.journey == "personal_data_verification")
            .expect("banking state");
        assert_eq!(state.status, JourneyStatus::InProgress);
        let keys: Vec<String> = update.listed.iter().map(Listing::key).collect();
        assert!(keys.contains(&"personal_data_verification:in_progress".to_string()));
        assert!(keys
            .iter()
            .any(|k| k.starts_with("personal_data_verification:in_progress:")));
        assert!(update.unlisted.is_empty());
        let deadline = update
            .deadlines
            .iter()
            .find(|d| d.journey == "personal_data_verification")
            .expect("deadline");
        assert_eq!(deadline.old, None);
        assert!(deadline.new.is_some());
    }

    #[test]
    fn a_sweep_moves_the_customer_from_in_progress_to_dropped_once() {
        let defs = banking_set();
        let started = track(&defs, &JourneyStates::new(), &[], &[sign_in("e1", 0)]);
        let prior: JourneyStates = started
            .states
            .into_iter()
            .map(|s| (s.journey.clone(), Arc::new(s)))
            .collect();
        let early = sweep_due(&defs, &prior, Micros(T0 + MIN));
        assert!(early.is_empty(), "nothing is due after a minute");
        let late = sweep_due(&defs, &prior, Micros(T0 + 365 * 24 * 60 * MIN));
        let dropped = late
            .states
            .iter()
            .find(|s| s.journey == "personal_data_verification")
            .expect("dropped state");
        assert_eq!(dropped.status, JourneyStatus::Dropped);
        assert!(late
            .unlisted
            .iter()
            .any(|l| l.key() == "personal_data_verification:in_progress"));
        assert!(late
            .listed
            .iter()
            .any(|l| l.key() == "personal_data_verification:dropped"));
        assert!(late.deadlines.iter().any(|d| d.new.is_none()));
        let after: JourneyStates = late
            .states
            .into_iter()
            .map(|s| (s.journey.clone(), Arc::new(s)))
            .collect();
        let mut merged = prior.clone();
        merged.extend(after);
        assert!(sweep_due(&defs, &merged, Micros(T0 + 366 * 24 * 60 * MIN)).is_empty());
    }

    #[test]
    fn an_event_that_starts_nothing_changes_only_the_shared_interactions() {
        let defs = banking_set();
        let noise = crate::domain::journey::testkit::facts(
            "n1",
            T0,
            "email",
            "campaign_offer",
            "email_sent",
            crate::domain::Initiator::Company,
            &[],
        );
        let update = track(&defs, &JourneyStates::new(), &[], &[noise]);
        assert!(update.states.is_empty(), "{:?}", update.states);
        assert!(update.deltas.is_empty());
        let recent = update.recent.expect("the interaction is kept");
        assert_eq!(recent.len(), 1);
        // A start then reads it as "before entering", and the stored state
        // does not carry its own copy.
        let started = track(&defs, &JourneyStates::new(), &recent, &[sign_in("e1", 1)]);
        assert!(started.states.iter().all(|s| s.recent.is_empty()));
        assert!(started.deltas.iter().any(|d| matches!(
            &d.change,
            crate::domain::journey::StatChange::PreEntry { interactions } if interactions.len() == 1
        )));
    }

    #[test]
    fn the_same_listing_is_the_same_key() {
        let mut all = Vec::new();
        for journey in ["a", "b"] {
            for status in [
                JourneyStatus::InProgress,
                JourneyStatus::Completed,
                JourneyStatus::Dropped,
            ] {
                for step in [None, Some("s1"), Some("s2")] {
                    for at in [1, 2] {
                        all.push(Listing {
                            journey: journey.into(),
                            status,
                            step: step.map(str::to_string),
                            at: Micros(at),
                        });
                    }
                }
            }
        }
        for a in &all {
            for b in &all {
                assert_eq!(a.same_listing(b), a.key() == b.key(), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn a_full_list_of_interactions_has_no_spare_room() {
        let defs = banking_set();
        let capacity = defs.iter().map(|d| d.lookback_events()).max().expect("one");
        let noise = |i: usize| {
            crate::domain::journey::testkit::facts(
                &format!("n{i}"),
                T0 + i as i64,
                "email",
                "campaign_offer",
                "email_sent",
                crate::domain::Initiator::Company,
                &[],
            )
        };
        let mut recent = Vec::new();
        for i in 0..capacity + 3 {
            let update = track(&defs, &JourneyStates::new(), &recent, &[noise(i)]);
            recent = update.recent.expect("a newer interaction is kept");
            // What the Redis store caches per customer: ~100 bytes an
            // entry, once, not twice as after a doubling, nor room for
            // `capacity` while it holds fewer.
            assert!(
                recent.capacity() <= capacity.min(i + 1),
                "{i}: {}",
                recent.capacity()
            );
        }
        assert_eq!(recent.len(), capacity);
        assert_eq!(&*recent[0].event_id, "n3", "the oldest left");
    }

    #[test]
    fn deadlines_left_behind_go_or_wait() {
        const BANKING: &str = "personal_data_verification";
        let defs = banking_set();
        let now = Micros(1_000);
        let in_progress = |deadline: i64| JourneyState {
            status: JourneyStatus::InProgress,
            deadline: Some(Micros(deadline)),
            ..JourneyState::not_started(BANKING)
        };
        // Nothing left to drop: no state, or a finished one.
        assert_eq!(deadline_left_behind(&defs, BANKING, None, now), None);
        let done = JourneyState {
            status: JourneyStatus::Completed,
            ..JourneyState::not_started(BANKING)
        };
        assert_eq!(deadline_left_behind(&defs, BANKING, Some(&done), now), None);
        // A later deadline of a defined journey is indexed at it.
        let later = in_progress(5_000);
        assert_eq!(
            deadline_left_behind(&defs, BANKING, Some(&later), now),
            Some(Micros(5_000))
        );
        assert_eq!(
            deadline_left_behind(&defs, BANKING, Some(&in_progress(900)), now),
            None
        );
        // Not defined here: looked at again in an hour.
        assert_eq!(
            deadline_left_behind(&defs, "elsewhere", Some(&in_progress(900)), now),
            Some(Micros(1_000 + UNDEFINED_JOURNEY_RETRY_MICROS))
        );
    }

    #[test]
    fn visible_keeps_active_and_recently_finished_journeys() {
        let defs = banking_set();
        let started = track(&defs, &JourneyStates::new(), &[], &[sign_in("e1", 0)]);
        let shown = visible(&defs, started.states.iter(), Micros(0));
        assert!(shown.iter().all(|s| s.status == JourneyStatus::InProgress));
        assert!(!shown.is_empty());
    }
}
