//! `journey.v1.GetJourneyContextResponse` as the server writes it. The
//! fields that stay the same for every call answered from one read of a
//! customer (all but the events, the contact counts and the journeys,
//! which depend on the call's page size and instant) go in as bytes
//! encoded once (fields 2–8 and 10–12, written straight from the store's
//! snapshot by `transport::convert::context_fixed` as prost would write
//! `ContextHead` and `ContextTail`): the context cache keeps
//! them with its snapshot, so a hit copies them instead of converting and
//! encoding the summary, identities and merges again. The contact counts,
//! which change only when a contact comes due or leaves a window, can come
//! encoded too (`contact_counts_field`). The events go in as stored, each
//! already framed as field 1 in one run (`events_encoded`, from
//! `storage::FramedEvents`), or one by one (`WireEvent`). Every field is
//! written in field-number order, as prost writes the generated type.

use bytes::{BufMut, Bytes};
use prost::{
    encoding::{self, DecodeContext, WireType},
    DecodeError, Message,
};

use super::{ChannelSummary, ContactCounts, JourneyState, LinkedIdentity, Merge, WireEvent};

/// Fields 2–8 of the response as a message of their own: what `head`
/// holds, for decoding and for tests (the server writes the bytes
/// directly).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContextHead {
    #[prost(string, tag = "2")]
    pub customer_id: String,
    #[prost(message, repeated, tag = "3")]
    pub channels: Vec<ChannelSummary>,
    #[prost(message, optional, tag = "4")]
    pub first_seen: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "5")]
    pub last_seen: Option<prost_types::Timestamp>,
    #[prost(uint64, tag = "6")]
    pub total_events: u64,
    #[prost(message, optional, tag = "7")]
    pub last_customer_interaction: Option<WireEvent>,
    #[prost(message, optional, tag = "8")]
    pub last_company_contact: Option<WireEvent>,
}

/// Fields 10–12 of the response as a message of their own: what `tail`
/// holds, as `ContextHead` is for `head`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContextTail {
    #[prost(string, tag = "10")]
    pub profile_id: String,
    #[prost(message, repeated, tag = "11")]
    pub identities: Vec<LinkedIdentity>,
    #[prost(message, repeated, tag = "12")]
    pub merges: Vec<Merge>,
}

const EVENTS: u32 = 1;
/// The size of the pieces `events_encoded` is copied in.
const COPY_PIECE: usize = 2_048;
const TOTAL_EVENTS: u32 = 6;
const CONTACT_COUNTS: u32 = 9;
const JOURNEYS: u32 = 13;

/// The response: the events, the encoded head, the contact counts
/// (encoded, or not), the encoded tail and the journeys.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct GetJourneyContextResponse {
    /// Field 1 encoded, keys included, once per event (written before
    /// `events`), as `storage::FramedEvents` frames it: written as given,
    /// unchecked. Decoding fills `events` instead.
    pub events_encoded: Bytes,
    pub events: Vec<WireEvent>,
    /// Fields 2–8, encoded (`ContextHead`'s bytes); decoding keeps them
    /// here as they came.
    pub head: Bytes,
    /// Field 9 encoded, key included (`contact_counts_field`), or empty.
    /// Decoding fills `contact_counts` instead.
    pub contact_counts_encoded: Bytes,
    pub contact_counts: Option<ContactCounts>,
    /// Fields 10–12, encoded (`ContextTail`'s bytes); decoding keeps them
    /// here as they came.
    pub tail: Bytes,
    /// Field 13 encoded, keys included, once per journey
    /// (`journeys_field`; written before `journeys`). Decoding fills
    /// `journeys` instead.
    pub journeys_encoded: Bytes,
    pub journeys: Vec<JourneyState>,
}

/// The journeys as the response's field 13, keys included: what
/// `journeys_encoded` takes.
pub fn journeys_field(journeys: &[JourneyState]) -> Bytes {
    let mut buf = Vec::with_capacity(encoding::message::encoded_len_repeated(JOURNEYS, journeys));
    encoding::message::encode_repeated(JOURNEYS, journeys, &mut buf);
    buf.into()
}

/// The contact counts as the response's field 9, key included: what
/// `contact_counts_encoded` takes.
pub fn contact_counts_field(counts: &ContactCounts) -> Bytes {
    let mut buf = Vec::with_capacity(encoding::message::encoded_len(CONTACT_COUNTS, counts));
    encoding::message::encode(CONTACT_COUNTS, counts, &mut buf);
    buf.into()
}

/// Appends one field, key and value, to encoded bytes (as `WireEvent`
/// keeps an event's fields), once its wire type is the one the schema
/// gives it.
fn keep_field(
    kept: &mut Bytes,
    tag: u32,
    wire_type: WireType,
    buf: &mut impl bytes::Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    let expected = if tag == TOTAL_EVENTS {
        WireType::Varint
    } else {
        WireType::LengthDelimited
    };
    encoding::check_wire_type(expected, wire_type)?;
    let mut field = WireEvent(std::mem::take(kept));
    let merged = field.merge_field(tag, wire_type, buf, ctx);
    *kept = field.0;
    merged
}

impl Message for GetJourneyContextResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        // In pieces below glibc's `rep movsb` threshold (2,048 bytes at
        // least): on this project's machines (AMD EPYC), one 15 KiB copy
        // by `rep movsb` cost the echo server ~5 µs of CPU per call more
        // than the same bytes copied by vector loads (BENCHMARKS.md).
        for piece in self.events_encoded.chunks(COPY_PIECE) {
            buf.put_slice(piece);
        }
        encoding::message::encode_repeated(EVENTS, &self.events, buf);
        buf.put_slice(&self.head);
        buf.put_slice(&self.contact_counts_encoded);
        if let Some(counts) = &self.contact_counts {
            encoding::message::encode(CONTACT_COUNTS, counts, buf);
        }
        buf.put_slice(&self.tail);
        buf.put_slice(&self.journeys_encoded);
        encoding::message::encode_repeated(JOURNEYS, &self.journeys, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let merged = match tag {
            EVENTS => encoding::message::merge_repeated(wire_type, &mut self.events, buf, ctx),
            2..=8 => keep_field(&mut self.head, tag, wire_type, buf, ctx),
            CONTACT_COUNTS => encoding::message::merge(
                wire_type,
                self.contact_counts.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            10..=12 => keep_field(&mut self.tail, tag, wire_type, buf, ctx),
            JOURNEYS => encoding::message::merge_repeated(wire_type, &mut self.journeys, buf, ctx),
            // Skipped, as prost skips an unknown field.
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        };
        merged.map_err(|mut e| {
            e.push("GetJourneyContextResponse", "field");
            e
        })
    }

    fn encoded_len(&self) -> usize {
        self.events_encoded.len()
            + encoding::message::encoded_len_repeated(EVENTS, &self.events)
            + self.head.len()
            + self.contact_counts_encoded.len()
            + self
                .contact_counts
                .as_ref()
                .map_or(0, |c| encoding::message::encoded_len(CONTACT_COUNTS, c))
            + self.tail.len()
            + self.journeys_encoded.len()
            + encoding::message::encoded_len_repeated(JOURNEYS, &self.journeys)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn event(id: &str) -> pb::Event {
        pb::Event {
            event_id: id.into(),
            customer_id: "c1".into(),
            channel: "web".into(),
            initiator: 1,
            ..Default::default()
        }
    }

    fn wire_event(id: &str) -> WireEvent {
        WireEvent(event(id).encode_to_vec().into())
    }

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    /// Every field of the response set, as clients see it.
    fn plain() -> pb::GetJourneyContextResponse {
        pb::GetJourneyContextResponse {
            events: vec![event("e2"), event("e1")],
            customer_id: "c1".into(),
            channels: vec![pb::ChannelSummary {
                channel: "web".into(),
                channel_class: "online".into(),
                customer_initiated: 2,
                company_initiated: 0,
                last_interaction_at: at(9),
            }],
            first_seen: at(1),
            last_seen: at(9),
            total_events: 2,
            last_customer_interaction: Some(event("e2")),
            last_company_contact: Some(event("k1")),
            contact_counts: Some(pb::ContactCounts {
                last_24h: 1,
                last_7d: 2,
                last_30d: 3,
                capped: true,
                ..Default::default()
            }),
            profile_id: "c1".into(),
            identities: vec![pb::LinkedIdentity {
                identity: Some(pb::Identity {
                    r#type: "email".into(),
                    value: "a@example.com".into(),
                }),
                first_seen: at(1),
                first_channel: "web".into(),
            }],
            merges: vec![pb::Merge {
                from_profile_id: "c0".into(),
                at: at(5),
            }],
            journeys: vec![
                pb::JourneyState {
                    journey: "onboarding".into(),
                    ..Default::default()
                },
                pb::JourneyState {
                    journey: "loan".into(),
                    state: pb::JourneyStatus::InProgress as i32,
                    ..Default::default()
                },
            ],
        }
    }

    fn wire() -> GetJourneyContextResponse {
        let head = ContextHead {
            customer_id: "c1".into(),
            channels: vec![ChannelSummary {
                channel: "web".into(),
                channel_class: "online".into(),
                customer_initiated: 2,
                company_initiated: 0,
                last_interaction_at: at(9),
            }],
            first_seen: at(1),
            last_seen: at(9),
            total_events: 2,
            last_customer_interaction: Some(wire_event("e2")),
            last_company_contact: Some(wire_event("k1")),
        };
        let tail = ContextTail {
            profile_id: "c1".into(),
            identities: vec![LinkedIdentity {
                identity: Some(super::super::Identity {
                    r#type: "email".into(),
                    value: "a@example.com".into(),
                }),
                first_seen: at(1),
                first_channel: "web".into(),
            }],
            merges: vec![Merge {
                from_profile_id: "c0".into(),
                at: at(5),
            }],
        };
        // The first event framed in the run, the second on its own: both
        // ways write the same bytes.
        let mut framed = Vec::new();
        encoding::message::encode(EVENTS, &wire_event("e2"), &mut framed);
        GetJourneyContextResponse {
            events_encoded: framed.into(),
            events: vec![wire_event("e1")],
            head: head.encode_to_vec().into(),
            contact_counts_encoded: contact_counts_field(&ContactCounts {
                last_24h: 1,
                last_7d: 2,
                last_30d: 3,
                capped: true,
                ..Default::default()
            }),
            contact_counts: None,
            tail: tail.encode_to_vec().into(),
            // The first journey encoded ahead, the second on its own.
            journeys_encoded: journeys_field(&[JourneyState {
                journey: "onboarding".into(),
                ..Default::default()
            }]),
            journeys: vec![JourneyState {
                journey: "loan".into(),
                state: pb::JourneyStatus::InProgress as i32,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn clients_read_every_field_and_the_bytes_are_prosts() {
        let response = wire();
        let bytes = response.encode_to_vec();
        assert_eq!(bytes.len(), response.encoded_len());
        let read = pb::GetJourneyContextResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(read, plain());
        // Field-number order, as the generated type writes it.
        assert_eq!(bytes, plain().encode_to_vec());
    }

    #[test]
    fn decoding_refuses_a_known_field_of_the_wrong_type_and_skips_unknown_ones() {
        let mut wrong = Vec::new();
        encoding::string::encode(TOTAL_EVENTS, &"six".to_string(), &mut wrong);
        assert!(pb::GetJourneyContextResponse::decode(wrong.as_slice()).is_err());
        assert!(GetJourneyContextResponse::decode(wrong.as_slice()).is_err());
        let mut unknown = plain().encode_to_vec();
        encoding::uint64::encode(99, &7, &mut unknown);
        let decoded = GetJourneyContextResponse::decode(unknown.as_slice()).expect("decodes");
        assert_eq!(decoded.encode_to_vec(), plain().encode_to_vec());
    }

    #[test]
    fn a_plain_response_decodes_into_the_same_fields() {
        let decoded =
            GetJourneyContextResponse::decode(plain().encode_to_vec().as_slice()).expect("decodes");
        let read = pb::GetJourneyContextResponse::decode(decoded.encode_to_vec().as_slice())
            .expect("decodes again");
        assert_eq!(read, plain());
        assert_eq!(decoded.events.len(), 2);
        assert_eq!(decoded.journeys.len(), 2);
        assert!(decoded.contact_counts.is_some());
    }

    #[test]
    fn contact_counts_encode_the_same_either_way() {
        let encoded = wire();
        let plain_counts = GetJourneyContextResponse {
            contact_counts_encoded: Bytes::new(),
            contact_counts: plain().contact_counts.map(|c| ContactCounts {
                last_24h: c.last_24h,
                last_7d: c.last_7d,
                last_30d: c.last_30d,
                capped: c.capped,
                ..Default::default()
            }),
            ..encoded.clone()
        };
        assert_eq!(encoded.encode_to_vec(), plain_counts.encode_to_vec());
    }

    #[test]
    fn an_empty_response_encodes_to_nothing() {
        assert!(GetJourneyContextResponse::default()
            .encode_to_vec()
            .is_empty());
    }
}
