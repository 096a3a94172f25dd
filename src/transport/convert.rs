//! Conversions between the wire types (`pb`) and the domain and storage
//! types. Field paths in errors are relative to the message converted.

use crate::{
    domain::{DomainError, Initiator, Micros, RawEvent, Taxonomy},
    pb,
    storage::{ContextSnapshot, EncodedEvent},
    wire::{fields, WireEvent},
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

/// The seconds of 0001-01-01T00:00:00Z and of 9999-12-31T23:59:59Z: the
/// range `google.protobuf.Timestamp` is defined over. Calendar arithmetic
/// on a time inside it (a quiet hour's next morning, a day's counters)
/// cannot overflow.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// The first instant a `google.protobuf.Timestamp` can hold.
pub const FIRST_TIMESTAMP: Micros = Micros(*TIMESTAMP_SECONDS.start() * Micros::PER_SECOND);

/// A `google.protobuf.Timestamp` to microseconds (finer digits truncated).
pub fn timestamp(field: &str, t: &prost_types::Timestamp) -> Result<Micros, DomainError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(DomainError::invalid(
            field,
            "nanos must be in [0, 999999999]",
        ));
    }
    if !TIMESTAMP_SECONDS.contains(&t.seconds) {
        return Err(DomainError::invalid(
            field,
            "out of range: a timestamp is from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z",
        ));
    }
    Micros::from_parts(t.seconds, t.nanos)
        .ok_or_else(|| DomainError::invalid(field, "out of the representable range"))
}

/// An instant as it is, in a `google.protobuf.Timestamp` (for requests: a
/// client sends what it was given, and the server refuses what is out of
/// range).
pub fn exact_timestamp(at: Micros) -> prost_types::Timestamp {
    let (seconds, nanos) = at.to_parts();
    prost_types::Timestamp { seconds, nanos }
}

/// An instant for an answer, as a `google.protobuf.Timestamp` held to the
/// range one can hold (0001 to 9999): an instant computed past it (the end
/// of a day, a quiet hour's end or a deadline after 9999-12-31) is answered
/// as the last instant of 9999, which clients can read, rather than as a
/// value their libraries refuse.
pub fn to_timestamp(at: Micros) -> prost_types::Timestamp {
    let (seconds, nanos) = at.to_parts();
    if seconds > *TIMESTAMP_SECONDS.end() {
        return prost_types::Timestamp {
            seconds: *TIMESTAMP_SECONDS.end(),
            nanos: 999_999_000,
        };
    }
    if seconds < *TIMESTAMP_SECONDS.start() {
        return prost_types::Timestamp {
            seconds: *TIMESTAMP_SECONDS.start(),
            nanos: 0,
        };
    }
    prost_types::Timestamp { seconds, nanos }
}

/// Events for a response, moved: the vector is reused in place, with no
/// reference count touched.
pub fn into_events(encoded: Vec<EncodedEvent>) -> Vec<WireEvent> {
    encoded.into_iter().map(|e| WireEvent(e.0)).collect()
}

/// The context's fields that are the same for every call answered from
/// this snapshot (all but the events, contact counts and journeys),
/// encoded: the fields before the contact counts (2–8), and those after
/// (10–12). Written straight from the snapshot (`wire::fields`), as prost
/// would write them from `wire::ContextHead` and `ContextTail`.
pub fn context_fixed(snapshot: &ContextSnapshot, taxonomy: &Taxonomy) -> [bytes::Bytes; 2] {
    let summary = &snapshot.summary;
    let profile = snapshot.profile.as_str().as_bytes();
    let singles = [
        &snapshot.last_customer_interaction,
        &snapshot.last_company_contact,
    ];
    let single_bytes: usize = singles
        .iter()
        .filter_map(|e| e.as_ref())
        .map(|e| e.0.len())
        .sum();
    let mut head = Vec::with_capacity(128 + 64 * summary.channels.len() + single_bytes);
    if !snapshot.profile.is_anonymous() {
        fields::string(2, profile, &mut head);
    }
    for (channel, activity) in &summary.channels {
        fields::message(3, &mut head, |buf| {
            fields::string(1, channel.as_bytes(), buf);
            let class = taxonomy
                .channel_class(channel)
                .map_or("unknown", |c| c.as_str());
            fields::string(2, class.as_bytes(), buf);
            fields::uint64(3, activity.customer_initiated, buf);
            fields::uint64(4, activity.company_initiated, buf);
            if let Some(at) = activity.last_at {
                fields::timestamp(5, &to_timestamp(at), buf);
            }
        });
    }
    for (tag, at) in [(4, summary.first_seen), (5, summary.last_seen)] {
        if let Some(at) = at {
            fields::timestamp(tag, &to_timestamp(at), &mut head);
        }
    }
    fields::uint64(6, summary.total_events, &mut head);
    for (tag, event) in [7, 8].into_iter().zip(singles) {
        if let Some(event) = event {
            fields::embedded(tag, &event.0, &mut head);
        }
    }
    let mut tail = Vec::with_capacity(
        64 + profile.len() + 96 * (snapshot.identities.len() + snapshot.merges.len()),
    );
    fields::string(10, profile, &mut tail);
    for linked in snapshot.identities.iter() {
        fields::message(11, &mut tail, |buf| {
            fields::message(1, buf, |buf| {
                fields::string(1, linked.identity.kind.as_bytes(), buf);
                fields::string(2, linked.identity.value.as_bytes(), buf);
            });
            fields::timestamp(2, &to_timestamp(linked.first_seen), buf);
            fields::string(3, linked.first_channel.as_bytes(), buf);
        });
    }
    for merge in snapshot.merges.iter() {
        fields::message(12, &mut tail, |buf| {
            fields::string(1, merge.from.as_str().as_bytes(), buf);
            fields::timestamp(2, &to_timestamp(merge.at), buf);
        });
    }
    [head.into(), tail.into()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn instants_past_a_timestamp_s_range_are_held_to_it() {
        let last = super::to_timestamp(Micros(i64::MAX));
        assert_eq!((last.seconds, last.nanos), (253_402_300_799, 999_999_000));
        let first = super::to_timestamp(Micros(i64::MIN));
        assert_eq!((first.seconds, first.nanos), (-62_135_596_800, 0));
        let inside = super::to_timestamp(Micros(1_500_000));
        assert_eq!((inside.seconds, inside.nanos), (1, 500_000_000));
        // Each reads back as an instant.
        for t in [last, first, inside] {
            assert!(super::timestamp("t", &t).is_ok(), "{t:?}");
        }
    }

    use std::sync::Arc;

    use prost::Message;

    use super::*;
    use crate::{
        domain::{
            ChannelActivity, CustomerId, CustomerSummary, EventLimits, Identity, LinkedIdentity,
            MergeRecord,
        },
        wire,
    };

    /// `context_fixed` as it was written before: prost's owned structs,
    /// encoded. What the direct writing must give, byte for byte.
    fn through_prost(snapshot: &ContextSnapshot, taxonomy: &Taxonomy) -> [Vec<u8>; 2] {
        let summary = &snapshot.summary;
        let profile = snapshot.profile.to_string();
        let event = |e: &EncodedEvent| WireEvent(e.0.clone());
        let head = wire::ContextHead {
            customer_id: if snapshot.profile.is_anonymous() {
                String::new()
            } else {
                profile.clone()
            },
            channels: summary
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
                .collect(),
            first_seen: summary.first_seen.map(to_timestamp),
            last_seen: summary.last_seen.map(to_timestamp),
            total_events: summary.total_events,
            last_customer_interaction: snapshot.last_customer_interaction.as_ref().map(event),
            last_company_contact: snapshot.last_company_contact.as_ref().map(event),
        };
        let tail = wire::ContextTail {
            profile_id: profile,
            identities: snapshot
                .identities
                .iter()
                .map(|linked: &LinkedIdentity| wire::LinkedIdentity {
                    identity: Some(wire::Identity {
                        r#type: linked.identity.kind.clone(),
                        value: linked.identity.value.clone(),
                    }),
                    first_seen: Some(to_timestamp(linked.first_seen)),
                    first_channel: linked.first_channel.clone(),
                })
                .collect(),
            merges: snapshot
                .merges
                .iter()
                .map(|merge: &MergeRecord| wire::Merge {
                    from_profile_id: merge.from.to_string(),
                    at: Some(to_timestamp(merge.at)),
                })
                .collect(),
        };
        [head.encode_to_vec(), tail.encode_to_vec()]
    }

    fn id(text: &str) -> CustomerId {
        CustomerId::parse("customer_id", text, &EventLimits::default()).expect("valid")
    }

    #[test]
    fn timestamps_are_taken_over_the_range_protobuf_defines() {
        let at = |seconds, nanos| timestamp("at", &prost_types::Timestamp { seconds, nanos });
        let first = at(-62_135_596_800, 0).expect("0001-01-01T00:00:00Z");
        assert_eq!(first.to_string(), "0001-01-01T00:00:00.000000Z");
        let last = at(253_402_300_799, 999_999_999).expect("the last instant of 9999");
        assert_eq!(last.to_string(), "9999-12-31T23:59:59.999999Z");
        for (seconds, nanos) in [
            (-62_135_596_801, 0),
            (253_402_300_800, 0),
            (i64::MIN, 0),
            (i64::MAX, 0),
            (0, -1),
            (0, 1_000_000_000),
        ] {
            let err = at(seconds, nanos).expect_err("out of range");
            assert!(
                matches!(&err, DomainError::Invalid { field, .. } if field == "at"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn the_fixed_parts_are_written_as_prost_writes_them() {
        let taxonomy = Taxonomy::builtin();
        let empty = ContextSnapshot::empty("c1");
        let mut full = ContextSnapshot::empty("c2");
        let mut summary = CustomerSummary {
            first_seen: Some(Micros(-1_500_000)),
            last_seen: Some(Micros(1_763_800_000_123_456)),
            total_events: 51,
            ..CustomerSummary::default()
        };
        for (i, channel) in ["web", "branch", "not_in_the_taxonomy", &"x".repeat(300)]
            .into_iter()
            .enumerate()
        {
            summary.channels.insert(
                channel.to_string(),
                ChannelActivity {
                    customer_initiated: i as u64,
                    company_initiated: 7 * i as u64,
                    last_at: (i != 1).then_some(Micros(i as i64 * 1_000_001)),
                },
            );
        }
        full.summary = Arc::new(summary);
        full.last_customer_interaction = Some(EncodedEvent(vec![9u8; 300].into()));
        full.last_company_contact = Some(EncodedEvent(bytes::Bytes::new()));
        full.identities = vec![
            LinkedIdentity {
                identity: Identity {
                    kind: "email".into(),
                    value: "a@example.com".into(),
                },
                first_seen: Micros(0),
                first_channel: String::new(),
            },
            LinkedIdentity {
                identity: Identity {
                    kind: "phone".into(),
                    value: "+33600000000".into(),
                },
                first_seen: Micros(5),
                first_channel: "app".into(),
            },
            // Long enough that the identity's own length and its
            // entry's are both patched in: one inside the other.
            LinkedIdentity {
                identity: Identity {
                    kind: "cookie".into(),
                    value: "v".repeat(200),
                },
                first_seen: Micros(6),
                first_channel: "web".into(),
            },
        ]
        .into();
        full.merges = vec![MergeRecord {
            from: id("c0"),
            at: Micros(42),
        }]
        .into();
        // A profile made for identities alone: its id is not a customer id.
        let anonymous = ContextSnapshot {
            profile: CustomerId::anonymous("01J0000000000000000000000"),
            ..full.clone()
        };
        assert!(anonymous.profile.is_anonymous());
        for snapshot in [&empty, &full, &anonymous] {
            let [head, tail] = context_fixed(snapshot, &taxonomy);
            let [expected_head, expected_tail] = through_prost(snapshot, &taxonomy);
            assert_eq!(&head[..], &expected_head[..]);
            assert_eq!(&tail[..], &expected_tail[..]);
        }
    }
}
