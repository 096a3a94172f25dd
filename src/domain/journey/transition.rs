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
        DropCause, JourneyState, JourneyStatus, OfflineSwitch, RecentInteraction, StepRef,
        StepVisit,
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
    let before = prior
        .cloned()
        .unwrap_or_else(|| JourneyState::not_started(definition.name()));
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
        state: (state != before).then_some(state),
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
        last_event_id: Some(event.event_id.clone()),
        last_interaction: Some(event.interaction()),
        channels: BTreeSet::from([event.channel.clone()]),
        started_online: event.is_online(),
        step_path: vec![StepVisit {
            step: start,
            at: event.at,
            event_id: event.event_id.clone(),
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
    state.channels.insert(event.channel.clone());
    if state.started_online && state.offline_switch.is_none() && event.is_offline() {
        let step = state.step_at(event.at, in_order).unwrap_or(current);
        state.offline_switch = Some(OfflineSwitch {
            step: step_ref(definition, step),
            channel: event.channel.clone(),
            event_id: event.event_id.clone(),
            at: event.at,
        });
        deltas.push(delta(
            state,
            StatChange::OfflineSwitch {
                step: step_ref(definition, step),
                channel: event.channel.clone(),
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
        event_id: event.event_id.clone(),
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
        state.last_event_id = Some(event.event_id.clone());
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
    if capacity == 0 || !may_enter {
        return;
    }
    let position = state.recent.partition_point(|r| r.at <= event.at);
    if position == 0 && state.recent.len() >= capacity {
        return; // older than every event kept
    }
    state.recent.insert(
        position,
        RecentInteraction {
            event_id: event.event_id.clone(),
            at: event.at,
            interaction: event.interaction(),
        },
    );
    while state.recent.len() > capacity {
        state.recent.remove(0);
    }
}
