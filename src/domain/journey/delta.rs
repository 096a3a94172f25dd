//! Stat deltas: what one transition adds to a journey's statistics, keyed
//! by journey and by the UTC day the journey started (a cohort), so a time
//! range sums whole days. Each delta maps to counter fields a store adds
//! one to (a hash per journey and day, e.g. Redis `HINCRBY`); the stats
//! read those counters back, so the in-memory sums and a store's agree.

use std::{collections::BTreeSet, fmt};

use super::{
    facts::Interaction,
    histogram,
    state::{DropCause, JourneyState, JourneyStatus, StepRef},
};
use crate::domain::Micros;

const DAY_MICROS: i64 = 86_400 * Micros::PER_SECOND;

/// A UTC day, counted from 1970-01-01 (day 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i64);

impl Day {
    /// The UTC day holding `at`.
    pub fn of(at: Micros) -> Self {
        Self(at.0.div_euclid(DAY_MICROS))
    }

    /// The first instant of the day.
    pub fn start(self) -> Micros {
        Micros(self.0.saturating_mul(DAY_MICROS))
    }

    /// The days from `first` to `last`, both included (empty if reversed).
    pub fn range(first: Day, last: Day) -> impl Iterator<Item = Day> {
        (first.0..=last.0).map(Day)
    }
}

impl fmt::Display for Day {
    /// `YYYY-MM-DD`, the form a store key can carry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.start().to_datetime() {
            Some(at) => write!(f, "{}", at.format("%Y-%m-%d")),
            None => write!(f, "day{}", self.0),
        }
    }
}

/// How a finished journey ended, for the step sequence figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Completed,
    Dropped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Dropped => "dropped",
        }
    }
}

/// What a transition changed in the statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatChange {
    /// A customer entered the journey.
    Entered,
    /// The distinct interactions among the last `lookback_events` events
    /// before the customer entered (each counted once per journey).
    PreEntry { interactions: BTreeSet<Interaction> },
    /// A step was reached for the first time in this journey. In order,
    /// reaching a step counts every step before it too (a funnel).
    ReachedStep { step: StepRef },
    Completed {
        duration_micros: i64,
        /// Started online and never switched to an offline channel.
        contained: bool,
    },
    Dropped {
        step: StepRef,
        cause: DropCause,
        /// The interaction of the last event that moved the journey.
        last: Interaction,
    },
    /// The first offline event of a journey started online.
    OfflineSwitch { step: StepRef, channel: String },
    /// The steps a finished journey reached, in time order.
    Sequence {
        outcome: Outcome,
        steps: Vec<String>,
    },
    /// A journey in progress was closed by a merge of two profiles that
    /// both had it in progress: one person, one journey, so the other one
    /// goes on (see `carry::carry_over`). Neither completed nor dropped.
    Merged,
    /// A journey in progress was closed by the erasure of its customer
    /// (ForgetCustomer): it will neither complete nor drop.
    Forgotten,
}

/// The `Forgotten` deltas of an erased customer's journeys: one for each
/// still in progress, on the day it started.
pub fn forgotten_deltas<'a>(states: impl IntoIterator<Item = &'a JourneyState>) -> Vec<StatDelta> {
    states
        .into_iter()
        .filter(|state| state.status == JourneyStatus::InProgress)
        .filter_map(|state| {
            Some(StatDelta {
                journey: state.journey.clone(),
                day: Day::of(state.started_at?),
                change: StatChange::Forgotten,
            })
        })
        .collect()
}

/// One change to one journey's statistics for one start day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatDelta {
    pub journey: String,
    /// The UTC day the journey started, whatever day the change happened.
    pub day: Day,
    pub change: StatChange,
}

/// Counter field names (of the per-journey, per-day hash).
pub(super) mod field {
    pub const ENTERED: &str = "entered";
    pub const COMPLETED: &str = "completed";
    pub const CONTAINED: &str = "contained";
    pub const REACHED: &str = "reached:";
    pub const DROPPED: &str = "dropped:";
    pub const DROPPED_BY: &str = "dropped_by:";
    pub const OFFLINE: &str = "offline:";
    pub const TIME_TO_COMPLETE: &str = "ttc:";
    pub const BEFORE_ENTERING: &str = "pre:";
    pub const LAST_BEFORE_DROP: &str = "last:";
    pub const SEQUENCE: &str = "seq:";
    pub const MERGED: &str = "merged";
    pub const FORGOTTEN: &str = "forgotten";
    /// Joins step names in a sequence field; step names cannot hold it.
    pub const STEP_SEPARATOR: &str = ">";
}

impl StatDelta {
    /// The counter fields this delta adds one to. Step names are letters,
    /// digits, `_` and `-` (checked at load), so `:` and `>` separate safely.
    pub fn counter_fields(&self) -> Vec<String> {
        use field::*;
        match &self.change {
            StatChange::Entered => vec![ENTERED.into()],
            StatChange::PreEntry { interactions } => interactions
                .iter()
                .map(|i| format!("{BEFORE_ENTERING}{i}"))
                .collect(),
            StatChange::ReachedStep { step } => vec![format!("{REACHED}{}", step.name)],
            StatChange::Completed {
                duration_micros,
                contained,
            } => {
                let mut fields = vec![
                    COMPLETED.to_string(),
                    format!(
                        "{TIME_TO_COMPLETE}{}",
                        histogram::bucket_of(*duration_micros)
                    ),
                ];
                if *contained {
                    fields.push(CONTAINED.into());
                }
                fields
            }
            StatChange::Dropped { step, cause, last } => vec![
                format!("{DROPPED}{}", step.name),
                format!("{DROPPED_BY}{}", cause.as_str()),
                format!("{LAST_BEFORE_DROP}{last}"),
            ],
            StatChange::OfflineSwitch { step, channel } => {
                vec![format!("{OFFLINE}{}:{channel}", step.name)]
            }
            StatChange::Sequence { outcome, steps } => vec![format!(
                "{SEQUENCE}{}:{}",
                outcome.as_str(),
                steps.join(STEP_SEPARATOR)
            )],
            StatChange::Merged => vec![MERGED.into()],
            StatChange::Forgotten => vec![FORGOTTEN.into()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_and_display_as_dates() {
        let at = Micros(1_763_800_000_000_000); // 2025-11-22T08:26:40Z
        assert_eq!(Day::of(at).to_string(), "2025-11-22");
        assert_eq!(Day::of(Day::of(at).start()), Day::of(at));
        assert_eq!(Day::of(Micros(-1)), Day(-1));
        assert_eq!(Day::range(Day(3), Day(5)).count(), 3);
    }

    #[test]
    fn deltas_name_their_counter_fields() {
        let step = StepRef {
            index: 2,
            name: "started".into(),
        };
        let delta = |change| StatDelta {
            journey: "j".into(),
            day: Day(0),
            change,
        };
        let last = Interaction {
            channel: "web".into(),
            reason: "r".into(),
            event_type: "t".into(),
        };
        assert_eq!(
            delta(StatChange::Dropped {
                step: step.clone(),
                cause: DropCause::Abandon,
                last,
            })
            .counter_fields(),
            ["dropped:started", "dropped_by:abandon", "last:web/r/t"]
        );
        assert_eq!(
            delta(StatChange::OfflineSwitch {
                step,
                channel: "call_center".into()
            })
            .counter_fields(),
            ["offline:started:call_center"]
        );
        assert_eq!(
            delta(StatChange::Sequence {
                outcome: Outcome::Completed,
                steps: vec!["a".into(), "b".into()]
            })
            .counter_fields(),
            ["seq:completed:a>b"]
        );
    }
}
