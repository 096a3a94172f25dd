//! Test helpers: the built-in journeys and events of the banking example,
//! built as `EventFacts` with explicit instants.

use std::collections::BTreeMap;

use super::{
    advance, EventFacts, Interaction, JourneyDefinition, JourneyDefinitions, JourneyState,
    RecentInteraction, StatDelta,
};
use crate::domain::{Initiator, Micros, Taxonomy};

pub const T0: i64 = 1_763_800_000_000_000; // 2025-11-22T08:26:40Z
pub const MINUTE: i64 = 60 * Micros::PER_SECOND;

pub fn journey(name: &str) -> JourneyDefinition {
    let taxonomy = Taxonomy::builtin();
    JourneyDefinitions::builtin(&taxonomy)
        .expect("built-in definitions are valid")
        .get(name)
        .expect("built-in journey")
        .clone()
}

pub fn banking() -> JourneyDefinition {
    journey("personal_data_verification")
}

/// One of a customer's latest interactions: a page view on the web.
pub fn recent(id: &str, at: i64) -> RecentInteraction {
    RecentInteraction {
        event_id: id.into(),
        at: Micros(at),
        interaction: Interaction {
            channel: "web".into(),
            reason: "check_accounts".into(),
            event_type: "page_view".into(),
        },
    }
}

pub fn facts(
    id: &str,
    at: i64,
    channel: &str,
    reason: &str,
    event_type: &str,
    initiator: Initiator,
    attrs: &[(&str, &str)],
) -> EventFacts<'static> {
    EventFacts {
        event_id: id.to_string().into(),
        at: Micros(at),
        event_type: event_type.to_string().into(),
        reason: reason.to_string().into(),
        channel: channel.to_string().into(),
        channel_class: Taxonomy::builtin().channel_class(channel),
        initiator,
        attributes: std::borrow::Cow::Owned(
            attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
    }
}

const PDV: &str = "personal_data_verification";
/// The sections of the banking form, steps 3, 4 and 5.
const SECTIONS: [&str; 3] = ["address", "contact", "income"];

/// The event that reaches banking step `step` (0..=6).
pub fn banking_step(step: usize, id: &str, at: i64) -> EventFacts<'static> {
    use Initiator::{Company, Customer};
    match step {
        0 => facts(id, at, "web", "check_accounts", "login", Customer, &[]),
        1 => facts(id, at, "web", PDV, "notification_shown", Company, &[]),
        2 => facts(id, at, "web", PDV, "notification_clicked", Customer, &[]),
        3..=5 => facts(
            id,
            at,
            "web",
            PDV,
            "form_step",
            Customer,
            &[
                ("form", "personal_data"),
                ("step", SECTIONS[step - 3]),
                (
                    "action",
                    if step.is_multiple_of(2) {
                        "modify"
                    } else {
                        "confirm"
                    },
                ),
            ],
        ),
        _ => facts(
            id,
            at,
            "web",
            PDV,
            "form_submitted",
            Customer,
            &[("form", "personal_data")],
        ),
    }
}

/// The customer cancels the verification form.
pub fn banking_cancel(id: &str, at: i64) -> EventFacts<'static> {
    facts(
        id,
        at,
        "web",
        PDV,
        "form_step",
        Initiator::Customer,
        &[
            ("form", "personal_data"),
            ("step", "address"),
            ("action", "cancel"),
        ],
    )
}

/// The customer calls the call center about the verification.
pub fn call(id: &str, at: i64) -> EventFacts<'static> {
    facts(id, at, "call_center", PDV, "call", Initiator::Customer, &[])
}

/// Applies `events` in turn from no state; the last state and all deltas.
pub fn run(
    definition: &JourneyDefinition,
    events: &[EventFacts],
) -> (JourneyState, Vec<StatDelta>) {
    let mut state: Option<JourneyState> = None;
    let mut deltas = Vec::new();
    for event in events {
        let transition = advance(definition, state.as_ref(), event);
        if let Some(next) = transition.state {
            state = Some(next);
        }
        deltas.extend(transition.deltas);
    }
    (
        state.unwrap_or_else(|| JourneyState::not_started(definition.name())),
        deltas,
    )
}
