//! Journeys in the API: ListJourneyDefinitions shows what the service
//! loaded (`--journeys`, reloaded on SIGHUP); GetJourneyStats reads the
//! counters; ListJourneys pages through a status listing; the context
//! shows the customer's active and recently finished journeys.

use std::{any::Any, sync::Arc};

use bytes::Bytes;

use super::{
    convert, page_token,
    service::{count_or_default, JourneyApi},
    status::ApiError,
};
use crate::{
    domain::{
        journey::{
            visible, AttributeCondition, Day, EventMatcher, JourneyDefinition, JourneyDefinitions,
            JourneyState, JourneyStats, JourneyStatus, Listing, TopEntry,
        },
        DomainError, Initiator, Micros,
    },
    storage::{ContextSnapshot, JourneyListQuery, TimedPart},
    wire as pb,
};

impl JourneyApi {
    pub(super) fn journey_definitions(&self) -> pb::ListJourneyDefinitionsResponse {
        let journeys = self.journeys.load();
        pb::ListJourneyDefinitionsResponse {
            journeys: journeys.iter().map(definition).collect(),
        }
    }
}

fn definition(journey: &JourneyDefinition) -> pb::JourneyDefinition {
    let timeout = journey.inactivity_timeout_micros();
    pb::JourneyDefinition {
        name: journey.name().to_string(),
        description: journey.description().to_string(),
        steps: journey
            .steps()
            .iter()
            .map(|step| step_definition(&step.name, &step.matcher))
            .collect(),
        start_step: journey.step_name(journey.start_index()).to_string(),
        complete_step: journey.step_name(journey.complete_index()).to_string(),
        in_order: journey.in_order(),
        inactivity_timeout: Some(prost_types::Duration {
            seconds: timeout.div_euclid(Micros::PER_SECOND),
            nanos: (timeout.rem_euclid(Micros::PER_SECOND) * 1_000) as i32,
        }),
        reentry: journey.reentry(),
        lookback_events: journey.lookback_events() as u32,
        abandon: journey
            .abandon_matchers()
            .iter()
            .map(|m| step_definition("", m))
            .collect(),
    }
}

fn step_definition(name: &str, matcher: &EventMatcher) -> pb::JourneyStepDefinition {
    let list = |names: &std::collections::BTreeSet<String>| names.iter().cloned().collect();
    pb::JourneyStepDefinition {
        name: name.to_string(),
        types: list(&matcher.event_types),
        reasons: list(&matcher.reasons),
        channels: list(&matcher.channels),
        channel_class: matcher
            .channel_class
            .map(|c| c.as_str().to_string())
            .unwrap_or_default(),
        initiator: match matcher.initiator {
            None => pb::Initiator::Unspecified,
            Some(Initiator::Customer) => pb::Initiator::Customer,
            Some(Initiator::Company) => pb::Initiator::Company,
        } as i32,
        attributes: matcher
            .attributes
            .iter()
            .map(|(key, condition)| {
                let value = match condition {
                    AttributeCondition::Equals(v) => v.clone(),
                    AttributeCondition::OneOf(vs) => {
                        vs.iter().cloned().collect::<Vec<_>>().join("|")
                    }
                };
                (key.clone(), value)
            })
            .collect(),
    }
}

/// Longest range of days one GetJourneyStats reads: a year and a day.
const MAX_STATS_DAYS: i64 = 366;
const DEFAULT_STATS_DAYS: i64 = 7;
const DEFAULT_TOP: usize = 5;
const MAX_TOP: usize = 100;
const DEFAULT_LIST_PAGE: usize = 100;
const MAX_LIST_PAGE: usize = 1_000;

impl JourneyApi {
    /// The journeys a context shows, as the response's field 13: in
    /// progress, or finished within the look-back, of journeys still
    /// defined. What is shown changes only when a finished journey leaves
    /// the look-back, so the encoding is kept with the snapshot until then
    /// (`storage::Rendered::timed`), and a context cache's hits share it;
    /// reloaded definitions are another key, so they make it again.
    pub(super) fn context_journeys(&self, snapshot: &ContextSnapshot, now: Micros) -> Bytes {
        let journeys = self.journeys.load_full();
        context_journeys(
            &journeys,
            self.limits.journey_lookback_micros,
            snapshot,
            now,
        )
    }

    pub(super) async fn journey_stats(
        &self,
        request: pb::GetJourneyStatsRequest,
    ) -> Result<pb::GetJourneyStatsResponse, ApiError> {
        let journeys = self.journeys.load();
        let definition = known_journey(&journeys, &request.journey)?;
        let now = Micros::now();
        let end = optional_time("end_time", request.end_time.as_ref())?.unwrap_or(now);
        // The default range starts no earlier than protobuf's first
        // instant: the response names its start.
        let start = optional_time("start_time", request.start_time.as_ref())?.unwrap_or(
            end.saturating_sub_micros(DEFAULT_STATS_DAYS * DAY_MICROS)
                .max(super::convert::FIRST_TIMESTAMP),
        );
        if end <= start {
            return Err(DomainError::invalid("end_time", "must be after start_time").into());
        }
        let (first, last) = (Day::of(start), Day::of(Micros(end.0 - 1)));
        if last.0 - first.0 + 1 > MAX_STATS_DAYS {
            return Err(DomainError::invalid(
                "end_time",
                format!("a range covers at most {MAX_STATS_DAYS} days"),
            )
            .into());
        }
        let top = count_or_default("top", request.top, DEFAULT_TOP, MAX_TOP)?;
        let days: Vec<Day> = Day::range(first, last).collect();
        let counters = self
            .store
            .journey_counters(definition.name(), &days)
            .await?;
        let stats = JourneyStats::from_counters(definition, &counters, top);
        Ok(stats_response(
            stats,
            first.start(),
            Day(last.0 + 1).start(),
        ))
    }

    pub(super) async fn list_journeys(
        &self,
        request: pb::ListJourneysRequest,
    ) -> Result<pb::ListJourneysResponse, ApiError> {
        let journeys = self.journeys.load();
        let definition = known_journey(&journeys, &request.journey)?;
        let status = match pb::JourneyStatus::try_from(request.state) {
            Ok(pb::JourneyStatus::InProgress) => JourneyStatus::InProgress,
            Ok(pb::JourneyStatus::Completed) => JourneyStatus::Completed,
            Ok(pb::JourneyStatus::Dropped) => JourneyStatus::Dropped,
            _ => {
                return Err(DomainError::invalid(
                    "state",
                    "must be JOURNEY_STATUS_IN_PROGRESS, _COMPLETED or _DROPPED",
                )
                .into())
            }
        };
        let step = match request.step.as_str() {
            "" => None,
            _ if status == JourneyStatus::Completed => {
                return Err(DomainError::invalid(
                    "step",
                    "completed journeys are not listed by step",
                )
                .into())
            }
            name if definition.steps().iter().any(|s| s.name == name) => Some(name.to_string()),
            name => {
                return Err(DomainError::invalid(
                    "step",
                    format!("journey {} has no step {name:?}", definition.name()),
                )
                .into())
            }
        };
        let start = optional_time("start_time", request.start_time.as_ref())?.unwrap_or(Micros(0));
        let end = optional_time("end_time", request.end_time.as_ref())?.unwrap_or(Micros(i64::MAX));
        if end <= start {
            return Err(DomainError::invalid("end_time", "must be after start_time").into());
        }
        let limit = count_or_default(
            "page_size",
            request.page_size,
            DEFAULT_LIST_PAGE,
            MAX_LIST_PAGE,
        )?;
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(page_token::decode_listing(token)?),
        };
        let listing = Listing {
            journey: definition.name().to_string(),
            status,
            step,
            at: Micros(0),
        };
        let page = self
            .store
            .list_journeys(&JourneyListQuery {
                listing: listing.key(),
                start,
                end,
                limit,
                after,
            })
            .await?;
        Ok(pb::ListJourneysResponse {
            customers: page
                .customers
                .into_iter()
                .map(|(customer, at)| pb::JourneyCustomer {
                    customer_id: customer.to_string(),
                    at: Some(convert::to_timestamp(at)),
                })
                .collect(),
            next_page_token: page
                .next
                .map(|c| page_token::encode_listing(&c))
                .unwrap_or_default(),
        })
    }
}

const DAY_MICROS: i64 = 86_400 * Micros::PER_SECOND;

fn known_journey<'a>(
    journeys: &'a JourneyDefinitions,
    name: &str,
) -> Result<&'a JourneyDefinition, ApiError> {
    if name.is_empty() {
        return Err(DomainError::invalid("journey", "is required").into());
    }
    journeys
        .get(name)
        .ok_or_else(|| ApiError::UnknownJourney(name.to_string()))
}

fn optional_time(
    field: &str,
    at: Option<&prost_types::Timestamp>,
) -> Result<Option<Micros>, DomainError> {
    at.map(|t| convert::timestamp(field, t)).transpose()
}

fn duration(micros: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: micros.div_euclid(Micros::PER_SECOND),
        nanos: (micros.rem_euclid(Micros::PER_SECOND) * 1_000) as i32,
    }
}

/// The journeys of `snapshot` a context shows at `now`, as the response's
/// field 13, kept with the snapshot while they hold (see
/// `JourneyApi::context_journeys`).
fn context_journeys(
    journeys: &Arc<JourneyDefinitions>,
    lookback: i64,
    snapshot: &ContextSnapshot,
    now: Micros,
) -> Bytes {
    let key: Arc<dyn Any + Send + Sync> = journeys.clone();
    snapshot
        .rendered
        .timed(TimedPart::Journeys, &key, now.0, || {
            let (shown, until) = shown_journeys(journeys, lookback, &snapshot.journeys, now);
            (pb::journeys_field(&shown), until)
        })
}

/// The journeys shown at `now`, and the first instant after it at which
/// that could change (a finished journey leaving the look-back).
fn shown_journeys(
    journeys: &JourneyDefinitions,
    lookback: i64,
    states: &[JourneyState],
    now: Micros,
) -> (Vec<pb::JourneyState>, i64) {
    let shown = visible(journeys, states, now.saturating_sub_micros(lookback));
    // Shown while `finished_at >= now - lookback`.
    let until = shown
        .iter()
        .filter_map(|s| s.finished_at)
        .map(|at| at.0.saturating_add(lookback).saturating_add(1))
        .min()
        .unwrap_or(i64::MAX);
    let rendered = shown
        .into_iter()
        .filter_map(|s| journeys.get(&s.journey).map(|d| journey_state(s, d)))
        .collect();
    (rendered, until)
}

fn journey_state(state: &JourneyState, definition: &JourneyDefinition) -> pb::JourneyState {
    let name = |s: &Option<crate::domain::journey::StepRef>| {
        s.as_ref().map(|s| s.name.clone()).unwrap_or_default()
    };
    let at = |t: Option<Micros>| t.map(convert::to_timestamp);
    pb::JourneyState {
        journey: state.journey.clone(),
        state: match state.status {
            JourneyStatus::NotStarted => pb::JourneyStatus::Unspecified,
            JourneyStatus::InProgress => pb::JourneyStatus::InProgress,
            JourneyStatus::Completed => pb::JourneyStatus::Completed,
            JourneyStatus::Dropped => pb::JourneyStatus::Dropped,
        } as i32,
        current_step: name(&state.current_step),
        started_at: at(state.started_at),
        last_progress_at: at(state.last_progress_at),
        finished_at: at(state.finished_at),
        dropped_at_step: name(&state.dropped_at_step),
        last_event_id: state.last_event_id.clone().unwrap_or_default(),
        channels: state.channels.iter().cloned().collect(),
        offline_switch_step: state
            .offline_switch
            .as_ref()
            .map(|s| s.step.name.clone())
            .unwrap_or_default(),
        drop_cause: state
            .drop_cause
            .map(|c| c.as_str().to_string())
            .unwrap_or_default(),
        offline_switch_channel: state
            .offline_switch
            .as_ref()
            .map(|s| s.channel.clone())
            .unwrap_or_default(),
        deadline: at(state.deadline),
        steps_reached: state
            .step_path
            .iter()
            .map(|v| definition.step_name(v.step).to_string())
            .collect(),
        duration: state.duration_micros().map(duration),
    }
}

fn stats_response(stats: JourneyStats, start: Micros, end: Micros) -> pb::GetJourneyStatsResponse {
    let top = |entries: Vec<TopEntry>| {
        entries
            .into_iter()
            .map(|e| pb::TopEntry {
                key: e.key,
                count: e.count,
            })
            .collect()
    };
    pb::GetJourneyStatsResponse {
        journey: stats.journey,
        entered: stats.entered,
        completed: stats.completed,
        dropped: stats.dropped,
        steps: stats
            .steps
            .into_iter()
            .map(|s| pb::StepStats {
                step: s.name,
                reached: s.reached,
                dropped_here: s.dropped_here,
                conversion_to_next: s.conversion_to_next,
                offline_switches: s.offline_switches,
            })
            .collect(),
        containment_rate: stats.containment_rate,
        conversion_rate: stats.conversion_rate,
        in_progress: stats.in_progress,
        merged: stats.merged,
        forgotten: stats.forgotten,
        dropped_by_inactivity: stats.dropped_by_inactivity,
        dropped_by_abandon: stats.dropped_by_abandon,
        contained: stats.contained,
        leaks: stats
            .leaks
            .into_iter()
            .map(|l| pb::Leak {
                step: l.step,
                channel: l.channel,
                count: l.count,
            })
            .collect(),
        time_to_complete_p50: stats.time_to_complete.map(|d| duration(d.median_micros)),
        time_to_complete_p90: stats.time_to_complete.map(|d| duration(d.p90_micros)),
        time_to_complete_max_relative_error: stats
            .time_to_complete
            .map_or(0.0, |d| d.max_relative_error),
        top_before_entering: top(stats.top_before_entering),
        top_last_before_drop: top(stats.top_last_before_drop),
        top_sequences_completed: top(stats.top_sequences_completed),
        top_sequences_dropped: top(stats.top_sequences_dropped),
        start_time: Some(convert::to_timestamp(start)),
        end_time: Some(convert::to_timestamp(end)),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::domain::Taxonomy;

    const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
    const HOUR: i64 = 3_600 * Micros::PER_SECOND;
    const LOOKBACK: i64 = 24 * HOUR;

    fn definitions() -> Arc<JourneyDefinitions> {
        Arc::new(JourneyDefinitions::builtin(&Taxonomy::builtin()).expect("built-in definitions"))
    }

    fn state(journey: &str, status: JourneyStatus, finished_at: Option<i64>) -> JourneyState {
        JourneyState {
            status,
            started_at: Some(Micros(T0 - 48 * HOUR)),
            last_progress_at: Some(Micros(T0 - 30 * HOUR)),
            finished_at: finished_at.map(Micros),
            ..JourneyState::not_started(journey)
        }
    }

    /// One journey in progress, two finished at different instants, one
    /// not started.
    fn snapshot() -> ContextSnapshot {
        ContextSnapshot {
            journeys: vec![
                state(
                    "personal_data_verification",
                    JourneyStatus::InProgress,
                    None,
                ),
                state(
                    "card_activation",
                    JourneyStatus::Completed,
                    Some(T0 - 20 * HOUR),
                ),
                state(
                    "loan_application",
                    JourneyStatus::Dropped,
                    Some(T0 - 2 * HOUR),
                ),
                state("not_a_defined_journey", JourneyStatus::Completed, Some(T0)),
            ]
            .into(),
            ..ContextSnapshot::empty("c1")
        }
    }

    fn names(field: Bytes) -> Vec<String> {
        pb::GetJourneyContextResponse::decode(field)
            .expect("decodes")
            .journeys
            .into_iter()
            .map(|j| j.journey)
            .collect()
    }

    #[test]
    fn kept_journeys_are_those_of_the_moment_at_every_change() {
        let journeys = definitions();
        let kept = snapshot();
        // Around each instant a finished journey leaves the look-back,
        // forward in time, then back (a clock set back makes them again).
        let mut instants: Vec<i64> = kept
            .journeys
            .iter()
            .filter_map(|s| s.finished_at)
            .map(|at| at.0 + LOOKBACK)
            .flat_map(|b| [b - 1, b, b + 1, b + 2])
            .chain([T0 - 30 * HOUR, T0])
            .collect();
        instants.sort_unstable();
        let mut seen = std::collections::BTreeSet::new();
        for &now in instants.iter().chain(instants.iter().rev()) {
            let field = context_journeys(&journeys, LOOKBACK, &kept, Micros(now));
            let (fresh, _) = shown_journeys(&journeys, LOOKBACK, &kept.journeys, Micros(now));
            assert_eq!(field, pb::journeys_field(&fresh), "at {now}");
            seen.insert(names(field));
        }
        assert!(seen.len() >= 3, "the instants cover changes: {seen:?}");
    }

    #[test]
    fn the_encoding_is_reused_until_a_finished_journey_leaves_the_look_back() {
        let journeys = definitions();
        let kept = snapshot();
        let at = |now: i64| context_journeys(&journeys, LOOKBACK, &kept, Micros(now));
        let first = at(T0);
        assert_eq!(
            names(first.clone()),
            [
                "loan_application",
                "card_activation",
                "personal_data_verification"
            ]
        );
        // The same buffer while nothing changes.
        let leaves = T0 - 20 * HOUR + LOOKBACK + 1;
        for now in [T0, T0 + 1, leaves - 1] {
            assert_eq!(at(now).as_ptr(), first.as_ptr(), "reused at {now}");
        }
        // The journey finished 20 h before T0 leaves: encoded again.
        let later = at(leaves);
        assert_ne!(later.as_ptr(), first.as_ptr());
        assert_eq!(
            names(later.clone()),
            ["loan_application", "personal_data_verification"]
        );
        assert_eq!(at(leaves + HOUR).as_ptr(), later.as_ptr());
        // Reloaded definitions (another object) encode again.
        let reloaded = definitions();
        let again = context_journeys(&reloaded, LOOKBACK, &kept, Micros(leaves + HOUR));
        assert_ne!(again.as_ptr(), later.as_ptr());
        assert_eq!(again, later);
    }
}
