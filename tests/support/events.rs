//! Builders of valid events for tests, in wire and domain form.

use std::collections::BTreeMap;

use journey::{
    domain::{journey::EventFacts, Event, EventLimits, Initiator, Micros, RawEvent, Taxonomy},
    pb,
};

/// An instant an hour ago: well inside retention and not in the future.
pub fn base_micros() -> i64 {
    Micros::now().0 - 3_600 * 1_000_000
}

/// A valid customer page view at `at` microseconds.
pub fn page_view(customer: &str, id: &str, at: i64) -> pb::Event {
    pb::Event {
        event_id: id.to_string(),
        customer_id: customer.to_string(),
        session_id: "s1".to_string(),
        channel: "web".to_string(),
        reason: "check_accounts".to_string(),
        r#type: "page_view".to_string(),
        initiator: pb::Initiator::Customer as i32,
        occurred_at: Some(timestamp(at)),
        attributes: BTreeMap::from([("page".to_string(), "/accounts".to_string())]),
        identities: Vec::new(),
    }
}

/// A valid company email at `at` microseconds.
pub fn campaign_email(customer: &str, id: &str, at: i64) -> pb::Event {
    pb::Event {
        event_id: id.to_string(),
        customer_id: customer.to_string(),
        session_id: String::new(),
        channel: "email".to_string(),
        reason: "campaign_offer".to_string(),
        r#type: "email_sent".to_string(),
        initiator: pb::Initiator::Company as i32,
        occurred_at: Some(timestamp(at)),
        attributes: BTreeMap::from([("campaign_id".to_string(), "c42".to_string())]),
        identities: Vec::new(),
    }
}

pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    let (seconds, nanos) = Micros(micros).to_parts();
    prost_types::Timestamp { seconds, nanos }
}

/// A validated domain event for store-level tests.
pub fn domain_event(
    customer: &str,
    id: &str,
    channel: &str,
    initiator: Initiator,
    at: i64,
) -> Event {
    let (reason, event_type) = match initiator {
        Initiator::Customer => ("support_request", "chat_message"),
        Initiator::Company => ("service_update", "notification_shown"),
    };
    let raw = RawEvent {
        event_id: id.to_string(),
        customer_id: customer.to_string(),
        channel: channel.to_string(),
        reason: reason.to_string(),
        event_type: event_type.to_string(),
        initiator: Some(initiator),
        occurred_at: Some(Micros(at)),
        ..RawEvent::default()
    };
    raw.validate(&Taxonomy::builtin(), &EventLimits::default(), Micros(at))
        .expect("test event is valid")
        .0
}

/// A generated journey event (`domain::journey::testkit`, `population`) as
/// a customer's wire event.
pub fn from_facts(customer: &str, facts: &EventFacts) -> pb::Event {
    pb::Event {
        event_id: facts.event_id.to_string(),
        customer_id: customer.to_string(),
        session_id: String::new(),
        channel: facts.channel.to_string(),
        reason: facts.reason.to_string(),
        r#type: facts.event_type.to_string(),
        initiator: match facts.initiator {
            Initiator::Customer => pb::Initiator::Customer,
            Initiator::Company => pb::Initiator::Company,
        } as i32,
        occurred_at: Some(timestamp(facts.at.0)),
        attributes: facts
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        identities: Vec::new(),
    }
}

/// The event that reaches step `step` (0..=6) of the banking example.
pub fn banking_step(customer: &str, step: usize, id: &str, at: i64) -> pb::Event {
    from_facts(
        customer,
        &journey::domain::journey::testkit::banking_step(step, id, at),
    )
}

/// The banking example's step `step`, as `customer`'s validated domain
/// event (for store-level tests).
pub fn banking_domain_event(customer: &str, step: usize, id: &str, at: i64) -> Event {
    let facts = journey::domain::journey::testkit::banking_step(step, id, at);
    let raw = RawEvent {
        event_id: facts.event_id.to_string(),
        customer_id: customer.into(),
        channel: facts.channel.to_string(),
        reason: facts.reason.to_string(),
        event_type: facts.event_type.to_string(),
        initiator: Some(facts.initiator),
        occurred_at: Some(facts.at),
        attributes: facts.attributes.clone().into_owned().into_iter().collect(),
        ..RawEvent::default()
    };
    raw.validate(&Taxonomy::builtin(), &EventLimits::default(), facts.at)
        .expect("test event is valid")
        .0
}
