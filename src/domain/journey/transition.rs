//! The journey state machine: `advance` applies one event of a customer to
//! their state in one journey, `sweep` drops a journey whose inactivity
//! deadline passed. Both are pure: they return the new state and the stat
//! deltas, and the caller stores both in one atomic step.
//!
//! `advance` must see every event of the customer, not only those that
//! match a step: a switch to an offline channel, the channels used and the
//! interactions before entering are read from events that match nothing.
//!
//! Rules, in the order they apply to an event:
//! 1. Duplicates: an event the state already recorded (a step visit, the
//!    last progress event, the offline switch, a recent event) has no
//!    effect. An event that changed nothing the first time changes nothing
//!    the second time either.
//! 2. Inactivity first: an event at or after the deadline of a journey in
//!    progress finds it dropped (at the deadline), exactly as if the sweeper
//!    had run on time; the event is then applied to the dropped state.
//! 3. Start: the `start` step's event enters a journey not started, or
//!    (with `reentry`) a finished one, if it is no older than the end of
//!    the last journey. An abandon event never starts one.
//! 4. In progress, an event older than the start is ignored (never moves
//!    the journey backwards); otherwise its channel is recorded, an offline
//!    event of a journey started online records the switch (first one only,
//!    at the step the customer was at at that instant), an abandon event no
//!    older than the last progress drops the journey at its current step
//!    (an older one is stale: the customer progressed after it).
//! 5. Steps, each counted once. In order: a step past the current one is
//!    progress (steps skipped count as passed, as in a funnel; they stay
//!    missing from the path); a missing earlier step is filled into the
//!    path only by an event older than the last progress (one delivered
//!    late), never counted as progress. In any order: any step not yet
//!    reached is progress, and it becomes the current step unless its event
//!    is older than the last progress. The `complete` step completes the
//!    journey. Progress moves `last_progress_at` only forwards and sets the
//!    deadline to `last_progress_at + inactivity_timeout`.
//! 6. Finished journeys are final: late events never un-complete or
//!    un-drop them, nor change their figures.

use std::collections::BTreeSet;

use super::{
    definition::{deadline_after, JourneyDefinition},
    delta::{Day, Outcome, StatChange, StatDelta},
    facts::EventFacts,
    state::{
        ChannelSet, DropCause, JourneyState, JourneyStatus, OfflineSwitch, RecentInteraction,
        StepRef, StepVisit,
    },
};
use crate::domain::Micros;

/// The outcome of applying an event (or a sweep) to a journey state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transition {
    /// The state to store; `None` when it did not change (nothing to write).
    pub state: Option<JourneyState>,
    /// What to add to the journey's statistics.
    pub deltas: Vec<StatDelta>,
}

/// Applies one event of the customer to their state in `definition`
/// (`None`: no state stored yet). See the module doc for the rules.
pub fn advance(
    definition: &JourneyDefinition,
    prior: Option<&JourneyState>,
    event: &EventFacts,
) -> Transition {
    let fresh;
    let before = match prior {
        Some(prior) => prior,
        None => {
            fresh = JourneyState::not_started(definition.name());
            &fresh
        }
    };
    if before.has_seen(&event.event_id) {
        return Transition::default();
    }
    let mut state = before.clone();
    let mut deltas = Vec::new();
    if state.status == JourneyStatus::InProgress && state.deadline.is_some_and(|d| event.at >= d) {
        let at_deadline = state.deadline.unwrap_or(event.at);
        drop_journey(
            definition,
            &mut state,
            DropCause::Inactivity,
            at_deadline,
            &mut deltas,
        );
    }
    match state.status {
        JourneyStatus::NotStarted => {
            if starts(definition, event) {
                start(definition, &mut state, event, &mut deltas);
            }
        }
        JourneyStatus::Completed | JourneyStatus::Dropped => {
            let after_the_last = state.finished_at.is_none_or(|end| event.at >= end);
            if definition.reentry() && after_the_last && starts(definition, event) {
                start(definition, &mut state, event, &mut deltas);
            }
        }
        JourneyStatus::InProgress => progress(definition, &mut state, event, &mut deltas),
    }
    remember(definition, &mut state, event);
    Transition {
        state: (state != *before).then_some(state),
        deltas,
    }
}

/// Drops a journey in progress whose deadline is at or before `now`, at
/// its current step, after its last progress event. `None` when there is
/// nothing to drop: not in progress (a dropped journey is never dropped
/// twice), or the deadline still ahead.
pub fn sweep(
    definition: &JourneyDefinition,
    state: &JourneyState,
    now: Micros,
) -> Option<Transition> {
    let deadline = state.deadline?;
    if state.status != JourneyStatus::InProgress || now < deadline {
        return None;
    }
    let mut dropped = state.clone();
    let mut deltas = Vec::new();
    drop_journey(
        definition,
        &mut dropped,
        DropCause::Inactivity,
        deadline,
        &mut deltas,
    );
    Some(Transition {
        state: Some(dropped),
        deltas,
    })
}

fn starts(definition: &JourneyDefinition, event: &EventFacts) -> bool {
    definition
        .matching_steps(event)
        .any(|i| i == definition.start_index())
        && !definition.is_abandon(event)
}

fn step_ref(definition: &JourneyDefinition, index: usize) -> StepRef {
    StepRef {
        index,
        name: definition.step_name(index).to_string(),
    }
}

fn delta(state: &JourneyState, change: StatChange) -> StatDelta {
    StatDelta {
        journey: state.journey.clone(),
        day: Day::of(state.started_at.unwrap_or_default()),
        change,
    }
}

/// Enters a new journey with `event`, replacing any finished one.
fn start(
    definition: &JourneyDefinition,
    state: &mut JourneyState,
    event: &EventFacts,
    deltas: &mut Vec<StatDelta>,
) {
    let before_entering: BTreeSet<_> = state
        .recent
        .iter()
        .filter(|r| r.at < event.at)
        .rev()
        .take(definition.lookback_events())
        .map(|r| r.interaction.clone())
        .collect();
    // Without re-entry the recent events are never read again: drop them
    // to keep the stored state small.
    let recent = if definition.reentry() {
        std::mem::take(&mut state.recent)
    } else {
        Vec::new()
    };
    let start = definition.start_index();
    *state = JourneyState {
        journey: definition.name().to_string(),
        status: JourneyStatus::InProgress,
        current_step: Some(step_ref(definition, start)),
        started_at: Some(event.at),
        last_progress_at: Some(event.at),
        last_event_id: Some(event.event_id.to_string()),
        last_interaction: Some(event.interaction()),
        channels: ChannelSet::from_iter([&*event.channel]),
        started_online: event.is_online(),
        step_path: vec![StepVisit {
            step: start,
            at: event.at,
            event_id: event.event_id.to_string(),
        }],
        deadline: Some(deadline_after(definition, event.at)),
        recent,
        ..JourneyState::default()
    };
    deltas.push(delta(state, StatChange::Entered));
    if !before_entering.is_empty() {
        deltas.push(delta(
            state,
            StatChange::PreEntry {
                interactions: before_entering,
            },
        ));
    }
    deltas.push(delta(
        state,
        StatChange::ReachedStep {
            step: step_ref(definition, start),
        },
    ));
}

/// How an event that reaches a new step changes a journey in progress.
enum Reach {
    /// Progress: the journey moves on to this step.
    Advance(usize),
    /// A missing step filled in by an event delivered late.
    Fill(usize),
}

/// Applies an event to a journey in progress.
fn progress(
    definition: &JourneyDefinition,
    state: &mut JourneyState,
    event: &EventFacts,
    deltas: &mut Vec<StatDelta>,
) {
    let (Some(started_at), Some(last_progress_at)) = (state.started_at, state.last_progress_at)
    else {
        return;
    };
    if event.at < started_at {
        return;
    }
    let in_order = definition.in_order();
    let start = definition.start_index();
    let current = state.current_step.as_ref().map_or(start, |s| s.index);
    state
        .channels
        .insert(&event.channel, event.channel_class.is_some());
    if state.started_online && state.offline_switch.is_none() && event.is_offline() {
        let step = state.step_at(event.at, in_order).unwrap_or(current);
        state.offline_switch = Some(OfflineSwitch {
            step: step_ref(definition, step),
            channel: event.channel.to_string(),
            event_id: event.event_id.to_string(),
            at: event.at,
        });
        deltas.push(delta(
            state,
            StatChange::OfflineSwitch {
                step: step_ref(definition, step),
                channel: event.channel.to_string(),
            },
        ));
    }
    if definition.is_abandon(event) {
        if event.at >= last_progress_at {
            drop_journey(definition, state, DropCause::Abandon, event.at, deltas);
        }
        return;
    }
    let late = event.at < last_progress_at;
    let mut new_steps = definition
        .matching_steps(event)
        .filter(|&i| !state.reached(i));
    let reach = if in_order {
        let candidates: Vec<usize> = new_steps.collect();
        match candidates.iter().find(|&&i| i > current) {
            Some(&next) => Some(Reach::Advance(next)),
            None => candidates
                .first()
                .filter(|_| late)
                .map(|&gap| Reach::Fill(gap)),
        }
    } else {
        new_steps.next().map(|i| {
            if late {
                Reach::Fill(i)
            } else {
                Reach::Advance(i)
            }
        })
    };
    let Some(reach) = reach else {
        return;
    };
    let step = match reach {
        Reach::Advance(step) | Reach::Fill(step) => step,
    };
    let visit = StepVisit {
        step,
        at: event.at,
        event_id: event.event_id.to_string(),
    };
    // Keep the path in time order; equal instants keep arrival order.
    let position = state.step_path.partition_point(|v| v.at <= event.at);
    state.step_path.insert(position, visit);
    let counted: Vec<usize> = match (&reach, in_order) {
        (Reach::Advance(step), true) => (current + 1..=*step).collect(),
        (Reach::Fill(_), true) => Vec::new(),
        (_, false) => vec![step],
    };
    for index in counted {
        deltas.push(delta(
            state,
            StatChange::ReachedStep {
                step: step_ref(definition, index),
            },
        ));
    }
    if in_order && matches!(reach, Reach::Advance(_)) || !in_order && !late {
        state.current_step = Some(step_ref(definition, step));
    }
    if !late {
        state.last_progress_at = Some(event.at);
        state.last_event_id = Some(event.event_id.to_string());
        state.last_interaction = Some(event.interaction());
        state.deadline = Some(deadline_after(definition, event.at));
    }
    if step == definition.complete_index() {
        complete(definition, state, event, deltas);
    }
}

/// Completes a journey with its completing event.
fn complete(
    definition: &JourneyDefinition,
    state: &mut JourneyState,
    event: &EventFacts,
    deltas: &mut Vec<StatDelta>,
) {
    state.status = JourneyStatus::Completed;
    state.current_step = Some(step_ref(definition, definition.complete_index()));
    state.finished_at = Some(event.at);
    state.deadline = None;
    let duration_micros = state.duration_micros().unwrap_or(0);
    let contained = state.started_online && state.offline_switch.is_none();
    deltas.push(delta(
        state,
        StatChange::Completed {
            duration_micros,
            contained,
        },
    ));
    deltas.push(sequence(definition, state, Outcome::Completed));
}

/// Drops a journey in progress at its current step, at instant `at` (the
/// deadline for inactivity, the abandon event's instant). The last event
/// stays the last progress event, whatever the cause.
fn drop_journey(
    definition: &JourneyDefinition,
    state: &mut JourneyState,
    cause: DropCause,
    at: Micros,
    deltas: &mut Vec<StatDelta>,
) {
    let step = state
        .current_step
        .clone()
        .unwrap_or_else(|| step_ref(definition, definition.start_index()));
    state.status = JourneyStatus::Dropped;
    state.dropped_at_step = Some(step.clone());
    state.drop_cause = Some(cause);
    state.finished_at = Some(at);
    state.deadline = None;
    deltas.push(delta(
        state,
        StatChange::Dropped {
            step,
            cause,
            last: state.last_interaction.clone().unwrap_or_default(),
        },
    ));
    deltas.push(sequence(definition, state, Outcome::Dropped));
}

fn sequence(definition: &JourneyDefinition, state: &JourneyState, outcome: Outcome) -> StatDelta {
    let steps = state
        .step_path
        .iter()
        .map(|v| definition.step_name(v.step).to_string())
        .collect();
    delta(state, StatChange::Sequence { outcome, steps })
}

/// Keeps the customer's latest events (by time) for the "before entering"
/// figure, while the customer may still enter.
fn remember(definition: &JourneyDefinition, state: &mut JourneyState, event: &EventFacts) {
    let capacity = definition.lookback_events();
    let may_enter = state.status == JourneyStatus::NotStarted || definition.reentry();
    if !may_enter {
        return;
    }
    RecentInteraction::keep_latest(&mut state.recent, capacity, event);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::journey::testkit::{
        banking, banking_cancel, banking_step, call, facts, journey, run, MINUTE, T0,
    };
    use crate::domain::Initiator;

    fn changes(deltas: &[StatDelta]) -> Vec<String> {
        deltas.iter().flat_map(StatDelta::counter_fields).collect()
    }

    fn step_index(state: &JourneyState) -> Option<usize> {
        state.current_step.as_ref().map(|s| s.index)
    }

    #[test]
    fn a_journey_in_order_completes_with_its_duration() {
        let def = banking();
        let events: Vec<_> = (0..=6)
            .map(|s| banking_step(s, &format!("e{s}"), T0 + s as i64 * MINUTE))
            .collect();
        let (state, deltas) = run(&def, &events);
        assert_eq!(state.status, JourneyStatus::Completed);
        assert_eq!(state.duration_micros(), Some(6 * MINUTE));
        assert_eq!(state.deadline, None);
        assert_eq!(state.channels, ChannelSet::from_iter(["web"]));
        let fields = changes(&deltas);
        assert_eq!(
            fields.iter().filter(|f| f.starts_with("reached:")).count(),
            7
        );
        assert!(fields.contains(&"completed".to_string()));
        assert!(fields.contains(&"contained".to_string()));
        assert!(fields.contains(
            &"seq:completed:signed_in>prompted>verification_started>address_checked>contact_checked>income_checked>completed"
                .to_string()
        ));
        assert!(deltas.iter().all(|d| d.day == Day::of(Micros(T0))));
    }

    #[test]
    fn steps_before_the_start_do_not_start_a_journey() {
        let def = banking();
        let (state, deltas) = run(
            &def,
            &[banking_step(2, "e2", T0), banking_step(6, "e6", T0 + 1)],
        );
        assert_eq!(state.status, JourneyStatus::NotStarted);
        assert!(deltas.is_empty());
    }

    #[test]
    fn repeated_step_events_count_once_and_are_not_progress() {
        let def = banking();
        let (before, _) = run(
            &def,
            &[
                banking_step(0, "e0", T0),
                banking_step(1, "e1", T0 + MINUTE),
            ],
        );
        let again = advance(
            &def,
            Some(&before),
            &banking_step(1, "e1b", T0 + 20 * MINUTE),
        );
        assert!(again.deltas.is_empty());
        let after = again.state.unwrap_or(before.clone());
        assert_eq!(
            after.deadline, before.deadline,
            "a repeat does not push the deadline"
        );
        assert_eq!(after.step_path, before.step_path);
    }

    #[test]
    fn a_duplicate_event_has_no_second_effect() {
        let def = banking();
        let (state, _) = run(&def, &[banking_step(0, "e0", T0)]);
        for event in [
            banking_step(0, "e0", T0),
            banking_step(0, "e0", T0 + 5 * MINUTE),
        ] {
            assert_eq!(advance(&def, Some(&state), &event), Transition::default());
        }
        // After re-entry the old instance's ids are gone, but its events are
        // older than the new start and change nothing either.
        let (done, _) = run(
            &def,
            &(0..=6)
                .map(|s| banking_step(s, &format!("e{s}"), T0 + s as i64 * MINUTE))
                .chain([banking_step(0, "again", T0 + 60 * MINUTE)])
                .collect::<Vec<_>>(),
        );
        assert_eq!(done.status, JourneyStatus::InProgress);
        let replay = advance(&def, Some(&done), &banking_step(3, "e3", T0 + 3 * MINUTE));
        assert_eq!(replay, Transition::default());
    }

    #[test]
    fn the_sweeper_drops_once_at_the_deadline() {
        let def = banking();
        let (state, _) = run(
            &def,
            &[
                banking_step(0, "e0", T0),
                banking_step(1, "e1", T0 + 5 * MINUTE),
            ],
        );
        let deadline = Micros(T0 + 35 * MINUTE);
        assert_eq!(state.deadline, Some(deadline));
        assert_eq!(sweep(&def, &state, Micros(deadline.0 - 1)), None);
        let swept = sweep(&def, &state, deadline).expect("due");
        let dropped = swept.state.expect("new state");
        assert_eq!(dropped.status, JourneyStatus::Dropped);
        assert_eq!(
            dropped.dropped_at_step.as_ref().map(|s| s.name.as_str()),
            Some("prompted")
        );
        assert_eq!(dropped.drop_cause, Some(DropCause::Inactivity));
        assert_eq!(dropped.finished_at, Some(deadline));
        assert_eq!(dropped.last_event_id.as_deref(), Some("e1"));
        assert_eq!(dropped.deadline, None);
        assert_eq!(
            changes(&swept.deltas),
            [
                "dropped:prompted",
                "dropped_by:inactivity",
                "last:web/personal_data_verification/notification_shown",
                "seq:dropped:signed_in>prompted"
            ]
        );
        assert_eq!(sweep(&def, &dropped, Micros(deadline.0 + 1)), None);
    }

    #[test]
    fn an_event_after_the_deadline_finds_the_journey_dropped() {
        let def = banking();
        let late = T0 + 31 * MINUTE;
        let (state, deltas) = run(
            &def,
            &[banking_step(0, "e0", T0), banking_step(1, "e1", late)],
        );
        assert_eq!(state.status, JourneyStatus::Dropped);
        assert_eq!(state.finished_at, Some(Micros(T0 + 30 * MINUTE)));
        assert!(changes(&deltas).contains(&"dropped:signed_in".to_string()));
        // The same outcome as a sweeper that ran on time.
        let (early, _) = run(&def, &[banking_step(0, "e0", T0)]);
        let swept = sweep(&def, &early, Micros(late))
            .and_then(|t| t.state)
            .expect("dropped");
        let after = advance(&def, Some(&swept), &banking_step(1, "e1", late));
        assert_eq!(
            after.state.unwrap_or(swept.clone()).status,
            JourneyStatus::Dropped
        );
        assert!(after.deltas.is_empty());
    }

    #[test]
    fn a_late_step_does_not_undo_an_inactivity_drop() {
        // Step 1 happened 20 minutes after the start, but arrives after step
        // 2, which came 40 minutes after the start: by what was known, the
        // journey had no progress for 30 minutes, and drops are final.
        let def = banking();
        let (state, _) = run(
            &def,
            &[
                banking_step(0, "e0", T0),
                banking_step(2, "e2", T0 + 40 * MINUTE),
                banking_step(1, "e1", T0 + 20 * MINUTE),
            ],
        );
        assert_eq!(state.status, JourneyStatus::Dropped);
        assert_eq!(
            state.dropped_at_step.map(|s| s.name),
            Some("signed_in".into())
        );
    }

    #[test]
    fn an_abandon_drops_at_the_current_step_unless_stale() {
        let def = banking();
        let started = [0, 1, 2].map(|s| banking_step(s, &format!("e{s}"), T0 + s as i64 * MINUTE));
        let (state, _) = run(&def, &started);
        let stale = advance(&def, Some(&state), &banking_cancel("x", T0 + MINUTE));
        assert!(
            stale.deltas.is_empty(),
            "an abandon older than the last progress"
        );
        let t = advance(&def, Some(&state), &banking_cancel("x", T0 + 3 * MINUTE));
        let dropped = t.state.expect("changed");
        assert_eq!(dropped.status, JourneyStatus::Dropped);
        assert_eq!(dropped.drop_cause, Some(DropCause::Abandon));
        assert_eq!(dropped.finished_at, Some(Micros(T0 + 3 * MINUTE)));
        assert_eq!(dropped.last_event_id.as_deref(), Some("e2"));
        assert_eq!(
            changes(&t.deltas)[..2],
            ["dropped:verification_started", "dropped_by:abandon"]
        );
    }

    #[test]
    fn out_of_order_events_fill_gaps_and_never_move_back() {
        let def = banking();
        // Step 2's event arrives after step 3's, though it happened before.
        let events = [
            banking_step(0, "e0", T0),
            banking_step(1, "e1", T0 + MINUTE),
            banking_step(3, "e3", T0 + 3 * MINUTE),
            banking_step(2, "e2", T0 + 2 * MINUTE),
        ];
        let (state, deltas) = run(&def, &events);
        assert_eq!(step_index(&state), Some(3));
        let path: Vec<usize> = state.step_path.iter().map(|v| v.step).collect();
        assert_eq!(path, [0, 1, 2, 3]);
        let reached: Vec<String> = changes(&deltas)
            .into_iter()
            .filter(|f| f.starts_with("reached:"))
            .collect();
        assert_eq!(
            reached.len(),
            4,
            "the funnel counts step 2 once, when passed: {reached:?}"
        );
        assert_eq!(state.last_progress_at, Some(Micros(T0 + 3 * MINUTE)));
        // In order, a missing step done after a later one is not progress.
        let (skipped, _) = run(&def, &events[..3]);
        let back = advance(
            &def,
            Some(&skipped),
            &banking_step(2, "e2", T0 + 4 * MINUTE),
        );
        assert!(back.deltas.is_empty());
        assert!(!back.state.unwrap_or(skipped).reached(2));
    }

    #[test]
    fn finished_journeys_are_final() {
        let def = banking();
        let mut events: Vec<_> = [0, 1, 2, 3, 4, 6]
            .iter()
            .map(|&s| banking_step(s, &format!("e{s}"), T0 + s as i64 * MINUTE))
            .collect();
        let (done, _) = run(&def, &events);
        assert_eq!(done.status, JourneyStatus::Completed);
        events.push(banking_step(5, "e5", T0 + 5 * MINUTE));
        events.push(call("c", T0 + 5 * MINUTE));
        events.push(banking_cancel("x", T0 + 7 * MINUTE));
        let (after, deltas) = run(&def, &events);
        assert_eq!(after.status, JourneyStatus::Completed);
        assert!(after.offline_switch.is_none());
        assert_eq!(deltas.len(), run(&def, &events[..6]).1.len());
    }

    #[test]
    fn going_offline_is_recorded_once_at_the_step_of_that_instant() {
        let def = banking();
        let events = [
            banking_step(0, "e0", T0),
            banking_step(1, "e1", T0 + MINUTE),
            banking_step(2, "e2", T0 + 2 * MINUTE),
            call("c1", T0 + 3 * MINUTE),
            call("c2", T0 + 4 * MINUTE),
            banking_step(3, "e3", T0 + 5 * MINUTE),
        ];
        let (state, deltas) = run(&def, &events);
        let switch = state.offline_switch.as_ref().expect("switched");
        assert_eq!(switch.step.name, "verification_started");
        assert_eq!(switch.channel, "call_center");
        let fields = changes(&deltas);
        assert_eq!(
            fields
                .iter()
                .filter(|f| f.starts_with("offline:"))
                .collect::<Vec<_>>(),
            ["offline:verification_started:call_center"]
        );
        assert!(state.channels.contains("call_center"));
        // A late offline event is placed at the step of its own instant.
        let mut late = events.to_vec();
        late.retain(|e| !e.event_id.starts_with('c'));
        late.push(call("c0", T0 + MINUTE + 1));
        let (state, _) = run(&def, &late);
        assert_eq!(
            state.offline_switch.map(|s| s.step.name),
            Some("prompted".into())
        );
        // A journey started offline cannot switch, nor be contained.
        let branch_start = facts(
            "b0",
            T0,
            "branch",
            "check_accounts",
            "login",
            Initiator::Customer,
            &[],
        );
        let (offline, _) = run(&banking(), &[branch_start, call("c", T0 + 1)]);
        assert!(offline.offline_switch.is_none() && !offline.started_online);
    }

    #[test]
    fn reentry_starts_a_new_journey_only_when_allowed() {
        let def = banking();
        let (completed, _) = run(
            &def,
            &(0..=6)
                .map(|s| banking_step(s, &format!("e{s}"), T0 + s as i64 * MINUTE))
                .collect::<Vec<_>>(),
        );
        let before_end = advance(
            &def,
            Some(&completed),
            &banking_step(0, "r0", T0 + 5 * MINUTE),
        );
        assert!(before_end.deltas.is_empty(), "a start older than the end");
        let again = advance(
            &def,
            Some(&completed),
            &banking_step(0, "r0", T0 + DAY_AND_A_BIT),
        );
        let state = again.state.expect("new journey");
        assert_eq!(state.status, JourneyStatus::InProgress);
        assert_eq!(state.step_path.len(), 1);
        assert_eq!(again.deltas[0].day, Day::of(Micros(T0 + DAY_AND_A_BIT)));

        let card = journey("card_activation");
        let open = |id: &str, at: i64| {
            facts(
                id,
                at,
                "web",
                "card_activation",
                "page_view",
                Initiator::Customer,
                &[("page", "/cards/activate")],
            )
        };
        let (dropped, _) = run(&card, &[open("a", T0), open("b", T0 + 2 * 60 * MINUTE)]);
        assert_eq!(
            dropped.status,
            JourneyStatus::Dropped,
            "no re-entry for cards"
        );
        assert!(
            dropped.recent.is_empty(),
            "nothing kept once it cannot re-enter"
        );
    }

    const DAY_AND_A_BIT: i64 = 25 * 60 * MINUTE;

    #[test]
    fn the_interactions_before_entering_are_the_latest_distinct_ones() {
        let def = banking(); // lookback 5
        let mut events: Vec<_> = (0..7)
            .map(|i| {
                let channel = if i % 2 == 0 { "email" } else { "sms" };
                facts(
                    &format!("n{i}"),
                    T0 + i,
                    channel,
                    "campaign_offer",
                    "email_sent",
                    Initiator::Company,
                    &[],
                )
            })
            .collect();
        // Delivered late, but older than the five kept: no effect.
        events.push(facts(
            "old",
            T0 - 1,
            "branch",
            "complaint",
            "branch_visit",
            Initiator::Customer,
            &[],
        ));
        events.push(banking_step(0, "e0", T0 + MINUTE));
        let (state, deltas) = run(&def, &events);
        assert_eq!(state.status, JourneyStatus::InProgress);
        let pre: Vec<String> = changes(&deltas)
            .into_iter()
            .filter(|f| f.starts_with("pre:"))
            .collect();
        assert_eq!(
            pre,
            [
                "pre:email/campaign_offer/email_sent",
                "pre:sms/campaign_offer/email_sent"
            ]
        );
    }

    #[test]
    fn in_any_order_every_new_step_is_progress() {
        let loan = journey("loan_application");
        let form = |id: &str, at: i64, step: &str| {
            facts(
                id,
                at,
                "web",
                "purchase",
                "form_step",
                Initiator::Customer,
                &[("form", "loan_application"), ("step", step)],
            )
        };
        let day = 24 * 60 * MINUTE;
        let events = [
            form("s", T0, "start"),
            form("id", T0 + day, "identity"),
            form("inc", T0 + 2 * day, "income_proof"),
            // Delivered late: reached, but not the current step.
            facts(
                "offer",
                T0 + day / 2,
                "web",
                "purchase",
                "page_view",
                Initiator::Customer,
                &[("page", "/loans/offer")],
            ),
        ];
        let (state, deltas) = run(&loan, &events);
        assert_eq!(
            state.current_step.map(|s| s.name),
            Some("income_proof_uploaded".into())
        );
        let fields = changes(&deltas);
        assert_eq!(
            fields.iter().filter(|f| f.starts_with("reached:")).count(),
            4
        );
        assert!(fields.contains(&"reached:offer_viewed".to_string()));
        let sign = facts(
            "sign",
            T0 + 3 * day,
            "web",
            "purchase",
            "form_submitted",
            Initiator::Customer,
            &[("form", "loan_application")],
        );
        let (done, _) = run(&loan, &[events[0].clone(), sign]);
        assert_eq!(
            done.status,
            JourneyStatus::Completed,
            "completion needs no other step"
        );
    }

    #[test]
    fn nothing_to_write_when_nothing_changes() {
        let mut def = banking();
        let (started, _) = run(&def, &[banking_step(0, "e0", T0)]);
        let unrelated = facts(
            "u",
            T0 + 1,
            "web",
            "complaint",
            "logout",
            Initiator::Customer,
            &[],
        );
        // Banking re-enters, so it keeps the event among the recent ones.
        assert!(advance(&def, Some(&started), &unrelated).state.is_some());
        def = journey("card_activation");
        let (card, _) = run(
            &def,
            &[facts(
                "p",
                T0,
                "web",
                "card_activation",
                "page_view",
                Initiator::Customer,
                &[("page", "/cards/activate")],
            )],
        );
        let t = advance(&def, Some(&card), &unrelated);
        assert_eq!(t, Transition::default());
    }
}
