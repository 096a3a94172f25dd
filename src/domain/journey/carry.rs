//! What a merge of two profiles does to their journeys. An anonymous
//! visitor who starts a journey and then signs in is one person: the
//! survivor takes the absorbed profile's journey where that is what the
//! person did, and the absorbed profile leaves every listing and the
//! deadline index (its id no longer leads anywhere of its own). Pure: a
//! store reads both profiles' states, calls `carry_over` and writes the
//! result in the merge's atomic step.

use std::{borrow::Cow, collections::HashSet};

use super::{
    definition::JourneyDefinitions,
    delta::{Day, StatChange, StatDelta},
    state::{DropCause, JourneyState, JourneyStatus, RecentInteraction},
    states::JourneyStates,
    tracking::{listings, recent_capacity, DeadlineChange, JourneyUpdate},
    transition::sweep,
};
use crate::domain::Micros;

/// The two halves of a merge's journey write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CarryOver {
    /// The survivor's: the states it takes, its latest interactions when
    /// the absorbed profile's change them, the listings and deadlines
    /// that follow, and the journeys closed as merged.
    pub survivor: JourneyUpdate,
    /// The absorbed profile's: the listings and deadlines it leaves.
    pub absorbed: JourneyUpdate,
}

impl CarryOver {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        let quiet = |u: &JourneyUpdate| {
            u.is_empty() && u.unlisted.is_empty() && u.listed.is_empty() && u.deadlines.is_empty()
        };
        quiet(&self.survivor) && quiet(&self.absorbed)
    }
}

/// Per journey the absorbed profile entered, once each side's journey
/// past its inactivity deadline is dropped (as the sweeper would have, had
/// it come first; the drop is written with the merge):
/// - the survivor never entered it: the survivor takes the absorbed state;
/// - otherwise the journey that moved last stays (its last step, or its
///   finish: where the person is now), ties to the survivor's. One still in
///   progress that does not stay is closed as `Merged` in the stats of its
///   start day (one person, one journey: it neither completed nor dropped),
///   so it does not stay in progress for good. Two copies of one journey
///   (an event stored in both profiles) count the same way: it entered
///   twice.
///
/// A merge is not carried twice: the stores apply it once (the Redis
/// script skips the journeys of a merge completed again). The customer's
/// latest interactions become the latest of both lists. Journeys no
/// longer defined are carried alike: their states are data, and their
/// counters are kept by name (they are not swept here).
pub fn carry_over(
    definitions: &JourneyDefinitions,
    now: Micros,
    survivor: &JourneyStates,
    survivor_recent: &[RecentInteraction],
    absorbed: &JourneyStates,
    absorbed_recent: &[RecentInteraction],
) -> CarryOver {
    let mut carry = CarryOver::default();
    for (journey, held) in absorbed {
        if held.status == JourneyStatus::NotStarted {
            continue;
        }
        // The absorbed profile leaves what it is indexed in as it is.
        carry.absorbed.unlisted.extend(listings(held));
        if held.deadline.is_some() {
            carry.absorbed.deadlines.push(DeadlineChange {
                journey: journey.clone(),
                old: held.deadline,
                new: None,
            });
        }
        let (theirs, their_deltas) = settled(definitions, held, now);
        carry.survivor.deltas.extend(their_deltas);
        let before = survivor
            .get(journey)
            .map(|s| &**s)
            .filter(|s| s.status != JourneyStatus::NotStarted);
        let Some(before) = before else {
            carry.survivor.record(None, stored(theirs), Vec::new());
            continue;
        };
        let (ours, mut deltas) = settled(definitions, before, now);
        if moved_at(&theirs) > moved_at(&ours) {
            deltas.extend(merged_delta(&ours));
            carry.survivor.record(Some(before), stored(theirs), deltas);
        } else {
            deltas.extend(merged_delta(&theirs));
            match ours {
                // Dropped here: the drop is the survivor's change.
                Cow::Owned(dropped) => carry.survivor.record(Some(before), dropped, deltas),
                Cow::Borrowed(_) => carry.survivor.deltas.extend(deltas),
            }
        }
    }
    carry.survivor.recent = latest_of_both(
        recent_capacity(definitions),
        survivor_recent,
        absorbed_recent,
    );
    carry
}

/// A state with its journey dropped if its inactivity deadline is at or
/// before `now` (and the drop's deltas); as it is otherwise.
fn settled<'a>(
    definitions: &JourneyDefinitions,
    state: &'a JourneyState,
    now: Micros,
) -> (Cow<'a, JourneyState>, Vec<StatDelta>) {
    let dropped = definitions
        .get(&state.journey)
        .and_then(|definition| sweep(definition, state, now))
        .and_then(|t| Some((t.state?, t.deltas)));
    match dropped {
        Some((state, deltas)) => (Cow::Owned(state), deltas),
        None => (Cow::Borrowed(state), Vec::new()),
    }
}

/// A state as a store keeps it: without the latest interactions, which
/// live beside the states.
fn stored(state: Cow<'_, JourneyState>) -> JourneyState {
    let mut state = state.into_owned();
    state.recent = Vec::new();
    state
}

/// When the person last moved the journey: its completing or abandon
/// event, else its last step (a drop by inactivity is no move: its
/// instant is the deadline).
fn moved_at(state: &JourneyState) -> Option<Micros> {
    let finish = match state.drop_cause {
        Some(DropCause::Inactivity) => None,
        _ => state.finished_at,
    };
    finish.or(state.last_progress_at).or(state.started_at)
}

/// The `Merged` delta of a journey in progress that a merge closes.
fn merged_delta(state: &JourneyState) -> Option<StatDelta> {
    let started = state.started_at?;
    (state.status == JourneyStatus::InProgress).then(|| StatDelta {
        journey: state.journey.clone(),
        day: Day::of(started),
        change: StatChange::Merged,
    })
}

/// The latest `capacity` interactions of both lists by time, each id once
/// (the survivor's copy first); `None` when that is the survivor's list.
fn latest_of_both(
    capacity: usize,
    ours: &[RecentInteraction],
    theirs: &[RecentInteraction],
) -> Option<Vec<RecentInteraction>> {
    if theirs.is_empty() || capacity == 0 {
        // Capacity 0: no journey looks back (none defined, for a while):
        // the list stays as it is, as `track` leaves it.
        return None;
    }
    let mut both: Vec<RecentInteraction> = ours.iter().chain(theirs).cloned().collect();
    // Stable: at one instant, the survivor's come first.
    both.sort_by_key(|r| r.at);
    let mut seen = HashSet::new();
    both.retain(|r| seen.insert(r.event_id.clone()));
    let excess = both.len().saturating_sub(capacity);
    both.drain(..excess);
    (both.as_slice() != ours).then_some(both)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::{
        journey::{
            testkit::{banking, banking_step, recent, run, MINUTE, T0},
            Listing,
        },
        Taxonomy,
    };

    const PDV: &str = "personal_data_verification";
    const HOUR: i64 = 60 * MINUTE;

    fn definitions() -> JourneyDefinitions {
        JourneyDefinitions::builtin(&Taxonomy::builtin()).expect("built-in definitions")
    }

    /// The banking journey after steps `steps` (each a minute apart from
    /// `start`), ids prefixed by `who`. Its inactivity timeout is 30 min.
    fn banking_after(who: &str, start: i64, steps: &[usize]) -> JourneyState {
        let events: Vec<_> = steps
            .iter()
            .enumerate()
            .map(|(i, &step)| banking_step(step, &format!("{who}{i}"), start + i as i64 * MINUTE))
            .collect();
        let (mut state, _) = run(&banking(), &events);
        state.recent = Vec::new();
        state
    }

    const ALL_STEPS: [usize; 7] = [0, 1, 2, 3, 4, 5, 6];

    fn states(list: &[JourneyState]) -> JourneyStates {
        list.iter()
            .map(|s| (s.journey.clone(), Arc::new(s.clone())))
            .collect()
    }

    /// The merge of `theirs` into `ours` at `now`.
    fn carry(now: i64, ours: &[JourneyState], theirs: &[JourneyState]) -> CarryOver {
        carry_over(
            &definitions(),
            Micros(now),
            &states(ours),
            &[],
            &states(theirs),
            &[],
        )
    }

    fn count(update: &JourneyUpdate, wanted: fn(&StatChange) -> bool) -> usize {
        update.deltas.iter().filter(|d| wanted(&d.change)).count()
    }

    fn merged(update: &JourneyUpdate) -> usize {
        count(update, |c| *c == StatChange::Merged)
    }

    fn dropped(update: &JourneyUpdate) -> usize {
        count(update, |c| matches!(c, StatChange::Dropped { .. }))
    }

    fn keys(listed: &[Listing]) -> Vec<String> {
        listed.iter().map(Listing::key).collect()
    }

    fn deadline_moves(update: &JourneyUpdate) -> Vec<(Option<Micros>, Option<Micros>)> {
        update.deadlines.iter().map(|d| (d.old, d.new)).collect()
    }

    #[test]
    fn a_journey_the_survivor_never_entered_moves_with_its_listings_and_deadline() {
        let theirs = banking_after("a", T0, &[0, 1]);
        assert_eq!(theirs.status, JourneyStatus::InProgress);
        let carried = carry(T0 + 5 * MINUTE, &[], std::slice::from_ref(&theirs));
        assert_eq!(carried.survivor.states, std::slice::from_ref(&theirs));
        assert_eq!(
            keys(&carried.survivor.listed),
            keys(&carried.absorbed.unlisted)
        );
        assert!(keys(&carried.survivor.listed).contains(&format!("{PDV}:in_progress")));
        assert_eq!(deadline_moves(&carried.survivor), [(None, theirs.deadline)]);
        assert_eq!(deadline_moves(&carried.absorbed), [(theirs.deadline, None)]);
        assert!(carried.survivor.deltas.is_empty());
    }

    #[test]
    fn of_two_in_progress_the_one_moved_last_goes_on_and_the_other_is_merged() {
        // The survivor's started the day before (a long-lived deadline).
        let mut ours = banking_after("s", T0 - 12 * HOUR, &[0]);
        ours.deadline = Some(Micros(T0 + HOUR));
        let theirs = banking_after("a", T0, &[0, 1]);
        let now = T0 + 5 * MINUTE;
        let carried = carry(
            now,
            std::slice::from_ref(&ours),
            std::slice::from_ref(&theirs),
        );
        assert_eq!(carried.survivor.states, std::slice::from_ref(&theirs));
        assert_eq!(merged(&carried.survivor), 1);
        assert_eq!(
            carried.survivor.deltas[0].day,
            Day::of(Micros(T0 - 12 * HOUR)),
            "the closed one's cohort"
        );
        assert_eq!(
            deadline_moves(&carried.survivor),
            [(ours.deadline, theirs.deadline)]
        );

        // The other way round: the survivor's goes on, the absorbed one is
        // merged, in its own cohort.
        let carried = carry(
            now,
            std::slice::from_ref(&theirs),
            std::slice::from_ref(&ours),
        );
        assert!(carried.survivor.states.is_empty());
        assert!(carried.survivor.listed.is_empty());
        assert_eq!(merged(&carried.survivor), 1);
        assert_eq!(
            carried.survivor.deltas[0].day,
            Day::of(Micros(T0 - 12 * HOUR))
        );
        assert_eq!(deadline_moves(&carried.absorbed), [(ours.deadline, None)]);
    }

    #[test]
    fn a_finish_after_the_last_step_of_one_in_progress_stays() {
        // Started on one device, finished on the other.
        let ours = banking_after("s", T0, &[0]);
        let theirs = banking_after("a", T0 + 5 * MINUTE, &ALL_STEPS);
        assert_eq!(theirs.status, JourneyStatus::Completed);
        let now = T0 + 12 * MINUTE;
        let carried = carry(
            now,
            std::slice::from_ref(&ours),
            std::slice::from_ref(&theirs),
        );
        assert_eq!(carried.survivor.states, std::slice::from_ref(&theirs));
        assert_eq!(merged(&carried.survivor), 1, "the one left in progress");
        assert!(keys(&carried.survivor.unlisted).contains(&format!("{PDV}:in_progress")));
        assert_eq!(deadline_moves(&carried.survivor), [(ours.deadline, None)]);
        let carried = carry(
            now,
            std::slice::from_ref(&theirs),
            std::slice::from_ref(&ours),
        );
        assert!(carried.survivor.states.is_empty());
        assert_eq!(merged(&carried.survivor), 1);
    }

    #[test]
    fn a_journey_entered_after_a_finish_stays() {
        let finished = banking_after("f", T0, &ALL_STEPS);
        let under_way = banking_after("u", T0 + HOUR, &[0]);
        let now = T0 + HOUR + MINUTE;
        let carried = carry(
            now,
            std::slice::from_ref(&finished),
            std::slice::from_ref(&under_way),
        );
        assert_eq!(carried.survivor.states, std::slice::from_ref(&under_way));
        assert_eq!(merged(&carried.survivor), 0, "a finished one was counted");
        let carried = carry(
            now,
            std::slice::from_ref(&under_way),
            std::slice::from_ref(&finished),
        );
        assert!(carried.survivor.states.is_empty());
        assert_eq!(merged(&carried.survivor), 0);
        assert!(keys(&carried.absorbed.unlisted).contains(&format!("{PDV}:completed")));
    }

    #[test]
    fn a_journey_past_its_deadline_drops_first() {
        // The survivor's timed out at T0 + 30 min, unswept; the absorbed
        // one moved at T0 + 11 min and is still under way.
        let ours = banking_after("s", T0, &[0]);
        let theirs = banking_after("a", T0 + 10 * MINUTE, &[0, 1]);
        let now = T0 + 35 * MINUTE;
        let carried = carry(
            now,
            std::slice::from_ref(&ours),
            std::slice::from_ref(&theirs),
        );
        assert_eq!(carried.survivor.states, std::slice::from_ref(&theirs));
        assert_eq!(
            dropped(&carried.survivor),
            1,
            "the survivor's drop is counted"
        );
        assert_eq!(merged(&carried.survivor), 0, "it dropped, not merged");

        // Both past their deadline: both drop; the later move stays.
        let now = T0 + 2 * HOUR;
        let carried = carry(
            now,
            std::slice::from_ref(&ours),
            std::slice::from_ref(&theirs),
        );
        assert_eq!(dropped(&carried.survivor), 2);
        assert_eq!(merged(&carried.survivor), 0);
        let kept = &carried.survivor.states;
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].status, JourneyStatus::Dropped);
        assert_eq!(kept[0].last_event_id.as_deref(), Some("a1"));
        assert_eq!(deadline_moves(&carried.survivor), [(ours.deadline, None)]);

        // The survivor's own moved last: it drops in place.
        let carried = carry(
            now,
            std::slice::from_ref(&theirs),
            std::slice::from_ref(&ours),
        );
        assert_eq!(dropped(&carried.survivor), 2);
        assert_eq!(carried.survivor.states.len(), 1);
        assert_eq!(carried.survivor.states[0].status, JourneyStatus::Dropped);
        assert!(keys(&carried.survivor.listed).contains(&format!("{PDV}:dropped")));
    }

    #[test]
    fn of_two_finished_journeys_the_later_finish_stays() {
        let early = banking_after("e", T0, &ALL_STEPS);
        let late = banking_after("l", T0 + HOUR, &ALL_STEPS);
        let now = T0 + 2 * HOUR;
        let carried = carry(
            now,
            std::slice::from_ref(&early),
            std::slice::from_ref(&late),
        );
        assert_eq!(carried.survivor.states, std::slice::from_ref(&late));
        let carried = carry(
            now,
            std::slice::from_ref(&late),
            std::slice::from_ref(&early),
        );
        assert!(carried.survivor.states.is_empty());
        assert_eq!(carried.survivor.deltas, []);
    }

    #[test]
    fn one_journey_held_by_both_profiles_counts_once_in_progress() {
        // An event stored in both profiles entered the journey in both.
        let both = banking_after("x", T0, &[0, 1]);
        let carried = carry(
            T0 + 5 * MINUTE,
            std::slice::from_ref(&both),
            std::slice::from_ref(&both),
        );
        assert!(carried.survivor.states.is_empty(), "a tie: the survivor's");
        assert_eq!(merged(&carried.survivor), 1);
    }

    #[test]
    fn nothing_started_on_the_absorbed_profile_changes_nothing() {
        let ours = banking_after("s", T0, &[0]);
        let carried = carry(
            T0 + MINUTE,
            std::slice::from_ref(&ours),
            &[JourneyState::not_started(PDV)],
        );
        assert!(carried.is_empty(), "{carried:?}");
    }

    #[test]
    fn the_latest_interactions_of_both_are_kept_each_once() {
        let defs = definitions();
        let capacity = recent_capacity(&defs);
        let ours: Vec<_> = (0..capacity)
            .map(|i| recent(&format!("s{i}"), T0 + i as i64))
            .collect();
        let theirs = vec![recent("a0", T0 + 1_000), recent("s3", T0 + 3)];
        let none = JourneyStates::new();
        let carried = carry_over(&defs, Micros(T0), &none, &ours, &none, &theirs);
        let latest = carried
            .survivor
            .recent
            .expect("a later interaction came in");
        assert_eq!(latest.len(), capacity);
        assert_eq!(&*latest.last().expect("one").event_id, "a0");
        assert_eq!(&*latest[0].event_id, "s1", "the oldest made room");
        let ids: HashSet<_> = latest.iter().map(|r| r.event_id.clone()).collect();
        assert_eq!(ids.len(), latest.len(), "each id once");

        // Older than all of a full list: the survivor's list stands.
        let older = vec![recent("old", T0 - MINUTE)];
        let carried = carry_over(&defs, Micros(T0), &none, &ours, &none, &older);
        assert_eq!(carried.survivor.recent, None);
        assert!(carried.is_empty());

        // No journey defined (for a while): the list is left alone.
        let no_journeys =
            JourneyDefinitions::from_toml("", &Taxonomy::builtin()).expect("no journeys");
        let carried = carry_over(&no_journeys, Micros(T0), &none, &ours, &none, &theirs);
        assert_eq!(carried.survivor.recent, None);
    }
}
