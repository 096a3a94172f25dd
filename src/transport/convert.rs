//! Conversions between the wire types (`pb`) and the domain and storage
//! types. Field paths in errors are relative to the message converted.

use crate::{
    domain::{
        CustomerSummary, DomainError, Initiator, LinkedIdentity, MergeRecord, Micros, RawEvent,
        Taxonomy,
    },
    pb,
    storage::{ContextSnapshot, EncodedEvent},
    wire::{self, WireEvent},
};

/// A producer's event as the domain reads it. Only what cannot be
/// represented (an unknown enum number, a timestamp out of range) fails
/// here; every rule is the domain's.
pub fn raw_event(event: pb::Event) -> Result<RawEvent, DomainError> {
    Ok(RawEvent {
        initiator: initiator("initiator", event.initiator)?,
        occurred_at: event
            .occurred_at
            .map(|t| timestamp("occurred_at", &t))
            .transpose()?,
        event_id: event.event_id,
        customer_id: event.customer_id,
        session_id: event.session_id,
        channel: event.channel,
        reason: event.reason,
        event_type: event.r#type,
        attributes: event.attributes,
        identities: event
            .identities
            .into_iter()
            .map(|i| (i.r#type, i.value))
            .collect(),
    })
}

/// `None` for `INITIATOR_UNSPECIFIED`.
pub fn initiator(field: &str, value: i32) -> Result<Option<Initiator>, DomainError> {
    match pb::Initiator::try_from(value) {
        Ok(pb::Initiator::Unspecified) => Ok(None),
        Ok(pb::Initiator::Customer) => Ok(Some(Initiator::Customer)),
        Ok(pb::Initiator::Company) => Ok(Some(Initiator::Company)),
        Err(_) => Err(DomainError::invalid(
            field,
            format!("{value} is not an Initiator value"),
        )),
    }
}

/// A `google.protobuf.Timestamp` to microseconds (finer digits truncated).
pub fn timestamp(field: &str, t: &prost_types::Timestamp) -> Result<Micros, DomainError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(DomainError::invalid(
            field,
            "nanos must be in [0, 999999999]",
        ));
    }
    Micros::from_parts(t.seconds, t.nanos)
        .filter(|m| m.to_datetime().is_some())
        .ok_or_else(|| DomainError::invalid(field, "out of the representable range"))
}

pub fn to_timestamp(at: Micros) -> prost_types::Timestamp {
    let (seconds, nanos) = at.to_parts();
    prost_types::Timestamp { seconds, nanos }
}

/// A stored event for a response, as stored: no decoding, no copy.
pub fn event(encoded: &EncodedEvent) -> WireEvent {
    WireEvent(encoded.0.clone())
}

/// Events for a response, moved: the vector is reused in place, with no
/// reference count touched.
pub fn into_events(encoded: Vec<EncodedEvent>) -> Vec<WireEvent> {
    encoded.into_iter().map(|e| WireEvent(e.0)).collect()
}

/// The context's fields that are the same for every call answered from
/// this snapshot (all but the events, contact counts and journeys),
/// encoded: the fields before the contact counts, and those after.
pub fn context_fixed(snapshot: &ContextSnapshot, taxonomy: &Taxonomy) -> [bytes::Bytes; 2] {
    let summary = &snapshot.summary;
    let profile = snapshot.profile.to_string();
    let head = wire::ContextHead {
        customer_id: if snapshot.profile.is_anonymous() {
            String::new()
        } else {
            profile.clone()
        },
        channels: channel_summaries(summary, taxonomy),
        first_seen: summary.first_seen.map(to_timestamp),
        last_seen: summary.last_seen.map(to_timestamp),
        total_events: summary.total_events,
        last_customer_interaction: snapshot.last_customer_interaction.as_ref().map(event),
        last_company_contact: snapshot.last_company_contact.as_ref().map(event),
    };
    let tail = wire::ContextTail {
        profile_id: profile,
        identities: snapshot.identities.iter().map(linked_identity).collect(),
        merges: snapshot.merges.iter().map(merge_record).collect(),
    };
    [
        prost::Message::encode_to_vec(&head).into(),
        prost::Message::encode_to_vec(&tail).into(),
    ]
}

/// The per-channel summary, in channel name order, with each channel's
/// class from the taxonomy ("unknown" for a name lenient mode let in).
pub fn channel_summaries(
    summary: &CustomerSummary,
    taxonomy: &Taxonomy,
) -> Vec<wire::ChannelSummary> {
    summary
        .channels
        .iter()
        .map(|(channel, activity)| wire::ChannelSummary {
            channel: channel.clone(),
            channel_class: taxonomy
                .channel_class(channel)
                .map_or("unknown", |c| c.as_str())
                .to_string(),
            customer_initiated: activity.customer_initiated,
            company_initiated: activity.company_initiated,
            last_interaction_at: activity.last_at.map(to_timestamp),
        })
        .collect()
}

pub fn linked_identity(linked: &LinkedIdentity) -> wire::LinkedIdentity {
    wire::LinkedIdentity {
        identity: Some(wire::Identity {
            r#type: linked.identity.kind.clone(),
            value: linked.identity.value.clone(),
        }),
        first_seen: Some(to_timestamp(linked.first_seen)),
        first_channel: linked.first_channel.clone(),
    }
}

pub fn merge_record(merge: &MergeRecord) -> wire::Merge {
    wire::Merge {
        from_profile_id: merge.from.to_string(),
        at: Some(to_timestamp(merge.at)),
    }
}
