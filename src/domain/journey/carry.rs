//! What a merge of two profiles does to their journeys. An anonymous
//! visitor who starts a journey and then signs in is one person: the
//! survivor takes the absorbed profile's journey where that is what the
//! person did, and the absorbed profile leaves every listing and the
//! deadline index (its id no longer leads anywhere of its own). Pure: a
//! store reads both profiles' states, calls `carry_over` and writes the
//! result in the merge's atomic step.

use std::collections::HashSet;

use super::{
    definition::JourneyDefinitions,
    delta::{Day, StatChange, StatDelta},
    state::{JourneyState, JourneyStatus, RecentInteraction},
    states::JourneyStates,
    tracking::{listings, recent_capacity, DeadlineChange, JourneyUpdate},
};

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

/// Which of two states of one journey the merged profile keeps.
enum Keep {
    Survivor,
    Absorbed,
}

/// Per journey the absorbed profile entered:
/// - the survivor never entered it: the survivor takes the absorbed state;
/// - both hold the same journey (the same first step reached by the same
///   event: a merge that runs again after its write landed): the
///   survivor's stays;
/// - one is in progress and the other finished: the one in progress, the
///   journey under way (the finished one was counted when it finished);
/// - both in progress: the one that progressed last, where the person is
///   now; the other is closed as `Merged` in the stats of its start day,
///   so it does not stay in progress for good;
/// - both finished: the later finish.
///
/// Ties go to the survivor. The customer's latest interactions become the
/// latest of both lists. Journeys no longer defined are carried alike:
/// their states are data, and their counters are kept by name.
pub fn carry_over(
    definitions: &JourneyDefinitions,
    survivor: &JourneyStates,
    survivor_recent: &[RecentInteraction],
    absorbed: &JourneyStates,
    absorbed_recent: &[RecentInteraction],
) -> CarryOver {
    let mut carry = CarryOver::default();
    for (journey, theirs) in absorbed {
        if theirs.status == JourneyStatus::NotStarted {
            continue;
        }
        carry.absorbed.unlisted.extend(listings(theirs));
        if theirs.deadline.is_some() {
            carry.absorbed.deadlines.push(DeadlineChange {
                journey: journey.clone(),
                old: theirs.deadline,
                new: None,
            });
        }
        let ours = survivor
            .get(journey)
            .filter(|s| s.status != JourneyStatus::NotStarted);
        let keep = match ours {
            None => Keep::Absorbed,
            Some(ours) => kept(ours, theirs),
        };
        let closed = match keep {
            Keep::Survivor => theirs,
            Keep::Absorbed => {
                let closed = ours.map(|s| &**s);
                let mut taken = JourneyState::clone(theirs);
                taken.recent = Vec::new();
                let deltas = closed.and_then(merged_delta).into_iter().collect();
                carry.survivor.record(closed, taken, deltas);
                continue;
            }
        };
        if ours.is_some_and(|s| !same_journey(s, closed)) {
            carry.survivor.deltas.extend(merged_delta(closed));
        }
    }
    carry.survivor.recent = latest_of_both(
        recent_capacity(definitions),
        survivor_recent,
        absorbed_recent,
    );
    carry
}

/// Which of two started states of one journey goes on.
fn kept(ours: &JourneyState, theirs: &JourneyState) -> Keep {
    use JourneyStatus::InProgress;
    if same_journey(ours, theirs) {
        return Keep::Survivor;
    }
    let later = match (ours.status == InProgress, theirs.status == InProgress) {
        (true, false) => false,
        (false, true) => true,
        (true, true) => activity(theirs) > activity(ours),
        (false, false) => theirs.finished_at > ours.finished_at,
    };
    if later {
        Keep::Absorbed
    } else {
        Keep::Survivor
    }
}

/// Whether two states are one journey: started at the same instant by the
/// same event.
fn same_journey(a: &JourneyState, b: &JourneyState) -> bool {
    a.started_at == b.started_at
        && a.step_path.first().map(|v| &v.event_id) == b.step_path.first().map(|v| &v.event_id)
}

/// When the journey last moved.
fn activity(state: &JourneyState) -> Option<crate::domain::Micros> {
    state.last_progress_at.or(state.started_at)
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
    if theirs.is_empty() {
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
        Micros, Taxonomy,
    };

    const PDV: &str = "personal_data_verification";

    fn definitions() -> JourneyDefinitions {
        JourneyDefinitions::builtin(&Taxonomy::builtin()).expect("built-in definitions")
    }

    /// The banking journey after steps `steps` (each a minute apart from
    /// `start`), ids prefixed by `who`.
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

    fn states(list: &[JourneyState]) -> JourneyStates {
        list.iter()
            .map(|s| (s.journey.clone(), Arc::new(s.clone())))
            .collect()
    }

    fn carry(ours: &[JourneyState], theirs: &[JourneyState]) -> CarryOver {
        carry_over(&definitions(), &states(ours), &[], &states(theirs), &[])
    }

    fn merged_count(update: &JourneyUpdate) -> usize {
        update
            .deltas
            .iter()
            .filter(|d| d.change == StatChange::Merged)
            .count()
    }

    fn listed_keys(listed: &[Listing]) -> Vec<String> {
        listed.iter().map(Listing::key).collect()
    }

    #[test]
    fn a_journey_the_survivor_never_entered_moves_with_its_listings_and_deadline() {
        let theirs = banking_after("a", T0, &[0, 1]);
        assert_eq!(theirs.status, JourneyStatus::InProgress);
        let carried = carry(&[], std::slice::from_ref(&theirs));
        assert_eq!(carried.survivor.states, std::slice::from_ref(&theirs));
        assert_eq!(
            listed_keys(&carried.survivor.listed),
            listed_keys(&carried.absorbed.unlisted)
        );
        assert!(listed_keys(&carried.survivor.listed).contains(&format!("{PDV}:in_progress")));
        let moved = |u: &JourneyUpdate| {
            u.deadlines
                .iter()
                .map(|d| (d.old, d.new))
                .collect::<Vec<_>>()
        };
        assert_eq!(moved(&carried.survivor), [(None, theirs.deadline)]);
        assert_eq!(moved(&carried.absorbed), [(theirs.deadline, None)]);
        assert_eq!(merged_count(&carried.survivor), 0);
    }

    #[test]
    fn the_journey_that_progressed_last_goes_on_and_the_other_is_closed_as_merged() {
        let ours = banking_after("s", T0, &[0]);
        let theirs = banking_after("a", T0 + MINUTE, &[0, 1]);
        let carried = carry(std::slice::from_ref(&ours), std::slice::from_ref(&theirs));
        assert_eq!(carried.survivor.states, std::slice::from_ref(&theirs));
        assert_eq!(merged_count(&carried.survivor), 1);
        assert_eq!(
            carried.survivor.deltas[0].day,
            Day::of(Micros(T0)),
            "the closed one's cohort"
        );
        assert!(
            !carried.survivor.unlisted.is_empty(),
            "the survivor's own listings go"
        );

        // The other way round: the survivor's goes on, the absorbed one closes.
        let ours = banking_after("s", T0 + 5 * MINUTE, &[0]);
        let carried = carry(std::slice::from_ref(&ours), std::slice::from_ref(&theirs));
        assert!(carried.survivor.states.is_empty());
        assert!(carried.survivor.listed.is_empty());
        assert_eq!(merged_count(&carried.survivor), 1);
        assert_eq!(carried.survivor.deltas[0].day, Day::of(Micros(T0 + MINUTE)));
        assert_eq!(carried.absorbed.deadlines.len(), 1);
    }

    #[test]
    fn the_journey_under_way_beats_a_finished_one_either_way() {
        let finished = banking_after("f", T0, &[0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(finished.status, JourneyStatus::Completed);
        let under_way = banking_after("u", T0 + 60 * MINUTE, &[0]);

        let carried = carry(
            std::slice::from_ref(&finished),
            std::slice::from_ref(&under_way),
        );
        assert_eq!(carried.survivor.states, std::slice::from_ref(&under_way));
        assert_eq!(
            merged_count(&carried.survivor),
            0,
            "a finished one was counted"
        );

        let carried = carry(
            std::slice::from_ref(&under_way),
            std::slice::from_ref(&finished),
        );
        assert!(carried.survivor.states.is_empty());
        assert_eq!(merged_count(&carried.survivor), 0);
        assert!(
            !carried.absorbed.unlisted.is_empty(),
            "its completed listing goes"
        );
    }

    #[test]
    fn of_two_finished_journeys_the_later_finish_stays() {
        let early = banking_after("e", T0, &[0, 1, 2, 3, 4, 5, 6]);
        let late = banking_after("l", T0 + 60 * MINUTE, &[0, 1, 2, 3, 4, 5, 6]);
        let carried = carry(std::slice::from_ref(&early), std::slice::from_ref(&late));
        assert_eq!(carried.survivor.states, std::slice::from_ref(&late));
        let carried = carry(std::slice::from_ref(&late), std::slice::from_ref(&early));
        assert!(carried.survivor.states.is_empty());
        assert_eq!(merged_count(&carried.survivor), 0);
    }

    #[test]
    fn a_merge_run_again_carries_nothing_twice() {
        let theirs = banking_after("a", T0, &[0, 1]);
        let first = carry(&[], std::slice::from_ref(&theirs));
        // The survivor went on after the first run.
        let mut ours = first.survivor.states[0].clone();
        ours.last_progress_at = Some(Micros(T0 + 30 * MINUTE));
        let again = carry(std::slice::from_ref(&ours), std::slice::from_ref(&theirs));
        assert!(again.survivor.states.is_empty());
        assert_eq!(merged_count(&again.survivor), 0);
        assert_eq!(
            again.absorbed, first.absorbed,
            "it still leaves its listings"
        );
    }

    #[test]
    fn nothing_started_on_the_absorbed_profile_changes_nothing() {
        let ours = banking_after("s", T0, &[0]);
        let carried = carry(
            std::slice::from_ref(&ours),
            &[JourneyState::not_started(PDV)],
        );
        assert!(carried.is_empty(), "{carried:?}");
    }

    #[test]
    fn the_latest_interactions_of_both_are_kept_each_once() {
        let capacity = recent_capacity(&definitions());
        let ours: Vec<_> = (0..capacity)
            .map(|i| recent(&format!("s{i}"), T0 + i as i64))
            .collect();
        let theirs = vec![recent("a0", T0 + 1_000), recent("s3", T0 + 3)];
        let carried = carry_over(
            &definitions(),
            &JourneyStates::new(),
            &ours,
            &JourneyStates::new(),
            &theirs,
        );
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
        let carried = carry_over(
            &definitions(),
            &JourneyStates::new(),
            &ours,
            &JourneyStates::new(),
            &older,
        );
        assert_eq!(carried.survivor.recent, None);
        assert!(carried.is_empty());
    }
}
