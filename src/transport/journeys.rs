//! Journeys in the API: ListJourneyDefinitions shows what the service
//! loaded (`--journeys`, reloaded on SIGHUP); GetJourneyStats reads the
//! counters; ListJourneys pages through a status listing; the context
//! shows the customer's active and recently finished journeys.

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
    storage::JourneyListQuery,
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
    /// The journeys a context shows: in progress, or finished within the
    /// look-back, of journeys still defined.
    pub(super) fn context_journeys(
        &self,
        states: &[JourneyState],
        now: Micros,
    ) -> Vec<pb::JourneyState> {
        let journeys = self.journeys.load();
        let since = now.saturating_sub_micros(self.limits.journey_lookback_micros);
        visible(&journeys, states, since)
            .into_iter()
            .filter_map(|s| journeys.get(&s.journey).map(|d| journey_state(s, d)))
            .collect()
    }

    pub(super) async fn journey_stats(
        &self,
        request: pb::GetJourneyStatsRequest,
    ) -> Result<pb::GetJourneyStatsResponse, ApiError> {
        let journeys = self.journeys.load();
        let definition = known_journey(&journeys, &request.journey)?;
        let now = Micros::now();
        let end = optional_time("end_time", request.end_time.as_ref())?.unwrap_or(now);
        let start = optional_time("start_time", request.start_time.as_ref())?
            .unwrap_or(end.saturating_sub_micros(DEFAULT_STATS_DAYS * DAY_MICROS));
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
