//! The journey definitions for the API: ListJourneyDefinitions shows what
//! the service loaded (`--journeys`, reloaded on SIGHUP).

use super::service::JourneyApi;
use crate::{
    domain::{
        journey::{AttributeCondition, EventMatcher, JourneyDefinition},
        Initiator, Micros,
    },
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
