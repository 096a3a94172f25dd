//! The stored form of an event: the protobuf wire encoding of
//! `journey.v1.Event`, written once here.
//!
//! Ordering: both stores sort a timeline by (occurred_at, encoded bytes),
//! which is what a Redis sorted set does with score = occurred_at. Every
//! encoding starts with field 1, the event id (`0x0a`, varint length, id),
//! and ids are unique within a customer, so among events of the same
//! instant the order is decided inside that prefix: `id_prefix` alone
//! places a cursor exactly.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

use super::{Cursor, EncodedEvent, StorageError};
use crate::{
    domain::{Event, Initiator, Micros},
    pb,
};

/// Encodes an event for storage.
pub fn encode(event: &Event) -> EncodedEvent {
    let (seconds, nanos) = event.occurred_at.to_parts();
    let message = pb::Event {
        event_id: event.event_id.to_string(),
        customer_id: event.customer_id.to_string(),
        session_id: event.session_id.clone(),
        channel: event.channel.clone(),
        reason: event.reason.clone(),
        r#type: event.event_type.clone(),
        initiator: initiator_to_pb(event.initiator) as i32,
        occurred_at: Some(prost_types::Timestamp { seconds, nanos }),
        attributes: event
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    EncodedEvent(Bytes::from(message.encode_to_vec()))
}

/// Decodes a stored event.
pub fn decode(encoded: &EncodedEvent) -> Result<pb::Event, StorageError> {
    pb::Event::decode(encoded.0.clone())
        .map_err(|e| StorageError::Corrupt(format!("event does not decode: {e}")))
}

/// The bytes every encoding of an event with this id starts with.
pub fn id_prefix(event_id: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(event_id.len() + 3);
    buf.put_u8(0x0a); // field 1, length-delimited
    prost::encoding::encode_varint(event_id.len() as u64, &mut buf);
    buf.put_slice(event_id.as_bytes());
    buf.freeze()
}

/// The time, channel and initiator of a decoded event.
pub fn occurred_at(event: &pb::Event) -> Micros {
    event
        .occurred_at
        .as_ref()
        .and_then(|t| Micros::from_parts(t.seconds, t.nanos))
        .unwrap_or(Micros(0))
}

pub fn initiator_of(event: &pb::Event) -> Option<Initiator> {
    match pb::Initiator::try_from(event.initiator) {
        Ok(pb::Initiator::Customer) => Some(Initiator::Customer),
        Ok(pb::Initiator::Company) => Some(Initiator::Company),
        _ => None,
    }
}

/// The cursor that continues after this stored event.
pub fn cursor_after(encoded: &EncodedEvent) -> Result<Cursor, StorageError> {
    let event = decode(encoded)?;
    Ok(Cursor {
        occurred_at: occurred_at(&event),
        event_id: event.event_id,
    })
}

fn initiator_to_pb(initiator: Initiator) -> pb::Initiator {
    match initiator {
        Initiator::Customer => pb::Initiator::Customer,
        Initiator::Company => pb::Initiator::Company,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventLimits, RawEvent, Taxonomy};

    fn event(id: &str) -> Event {
        let raw = RawEvent {
            event_id: id.into(),
            customer_id: "c1".into(),
            channel: "web".into(),
            reason: "check_accounts".into(),
            event_type: "login".into(),
            occurred_at: Some(Micros(1_763_800_000_123_456)),
            ..RawEvent::default()
        };
        raw.validate(
            &Taxonomy::builtin(),
            &EventLimits::default(),
            Micros(1_763_800_000_123_456),
        )
        .expect("valid")
        .0
    }

    #[test]
    fn encoding_starts_with_the_id_prefix() {
        for id in ["a", &"x".repeat(127), &"y".repeat(128)] {
            let encoded = encode(&event(id));
            assert!(
                encoded.0.starts_with(&id_prefix(id)),
                "id of {} bytes",
                id.len()
            );
        }
    }

    #[test]
    fn prefixes_order_like_whole_encodings() {
        let ids = ["a", "b", "ab", &"z".repeat(127), &"z".repeat(128)];
        for x in ids {
            for y in ids {
                let whole = encode(&event(x)).0.cmp(&encode(&event(y)).0);
                assert_eq!(id_prefix(x).cmp(&id_prefix(y)), whole, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn round_trip_keeps_microseconds() {
        let encoded = encode(&event("e"));
        let decoded = decode(&encoded).expect("decodes");
        assert_eq!(occurred_at(&decoded), Micros(1_763_800_000_123_456));
        assert_eq!(decoded.occurred_at.map(|t| t.nanos), Some(123_456_000));
        assert_eq!(cursor_after(&encoded).expect("cursor").event_id, "e");
    }
}
