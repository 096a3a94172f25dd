//! Journeys: definitions (data, checked against the taxonomy), the
//! per-customer state machine that follows each customer through each
//! journey as their events are appended, the drop sweeper's rule, what a
//! merge of profiles carries over, and the statistics kept as per-day
//! counters. Pure domain: no storage, no clock
//! (the caller passes `now`), no transport.

mod carry;
mod definition;
mod delta;
mod facts;
mod histogram;
mod matcher;
mod state;
mod states;
mod stats;
mod tracking;
mod transition;

// Test support, public for the end-to-end tests: not part of the API.
#[doc(hidden)]
pub mod population;
#[doc(hidden)]
pub mod testkit;

pub use carry::{carry_over, CarryOver};
pub use definition::{
    JourneyDefinition, JourneyDefinitions, JourneyError, Step, BUILTIN_TOML, MAX_LOOKBACK_EVENTS,
};
pub use delta::{forgotten_deltas, Day, Outcome, StatChange, StatDelta};
pub use facts::{EventFacts, Interaction};
pub use histogram::MAX_RELATIVE_ERROR as TIME_TO_COMPLETE_MAX_RELATIVE_ERROR;
pub use matcher::{AttributeCondition, EventMatcher};
pub use state::{
    DropCause, JourneyState, JourneyStatus, OfflineSwitch, RecentInteraction, StepRef, StepVisit,
};
pub use states::JourneyStates;
pub use stats::{
    DayCounters, DurationSummary, JourneyStats, Leak, StatsLedger, StepStats, TopEntry,
    STATS_KEPT_DAYS,
};
pub use tracking::{
    deadline_left_behind, listing_keys, listings, status_name, sweep_due, track, visible,
    DeadlineChange, JourneyUpdate, Listing, UNDEFINED_JOURNEY_RETRY_MICROS,
};
pub use transition::{advance, sweep, Transition};
