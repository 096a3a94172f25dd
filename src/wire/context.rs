//! `journey.v1.GetJourneyContextResponse` as the server writes it. The
//! fields that stay the same for every call answered from one read of a
//! customer (all but the events, the contact counts and the journeys,
//! which depend on the call's page size and instant) go in as bytes
//! encoded once (`ContextFixed`): the context cache keeps them with its
//! snapshot, so a hit copies them instead of converting and encoding the
//! summary, identities and merges again. The contact counts, which change
//! only when a contact's window ends, can come encoded too
//! (`contact_counts_field`). The events go in as stored (`WireEvent`).
//! Protobuf reads fields in any order, so the encoded parts sit between
//! the events and the rest.

use bytes::{BufMut, Bytes};
use prost::{
    encoding::{self, DecodeContext, WireType},
    DecodeError, Message,
};

use super::{ChannelSummary, ContactCounts, JourneyState, LinkedIdentity, Merge, WireEvent};

/// Fields 2–8 and 10–12 of the response, encoded by prost on their own.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContextFixed {
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
    #[prost(string, tag = "10")]
    pub profile_id: String,
    #[prost(message, repeated, tag = "11")]
    pub identities: Vec<LinkedIdentity>,
    #[prost(message, repeated, tag = "12")]
    pub merges: Vec<Merge>,
}

const EVENTS: u32 = 1;
const CONTACT_COUNTS: u32 = 9;
const JOURNEYS: u32 = 13;

/// The response: the events, the fixed part's bytes, the contact counts
/// (encoded, or not) and the journeys.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct GetJourneyContextResponse {
    pub events: Vec<WireEvent>,
    /// `ContextFixed`, encoded; decoding keeps every field other than
    /// 1, 9 and 13 here, as it came.
    pub fixed: Bytes,
    /// Field 9 encoded, key included (`contact_counts_field`), or empty.
    /// Decoding fills `contact_counts` instead.
    pub contact_counts_encoded: Bytes,
    pub contact_counts: Option<ContactCounts>,
    pub journeys: Vec<JourneyState>,
}

/// The contact counts as the response's field 9, key included: what
/// `contact_counts_encoded` takes.
pub fn contact_counts_field(counts: &ContactCounts) -> Bytes {
    let mut buf = Vec::with_capacity(encoding::message::encoded_len(CONTACT_COUNTS, counts));
    encoding::message::encode(CONTACT_COUNTS, counts, &mut buf);
    buf.into()
}

impl Message for GetJourneyContextResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encoding::message::encode_repeated(EVENTS, &self.events, buf);
        buf.put_slice(&self.fixed);
        buf.put_slice(&self.contact_counts_encoded);
        if let Some(counts) = &self.contact_counts {
            encoding::message::encode(CONTACT_COUNTS, counts, buf);
        }
        encoding::message::encode_repeated(JOURNEYS, &self.journeys, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            EVENTS => encoding::message::merge_repeated(wire_type, &mut self.events, buf, ctx),
            CONTACT_COUNTS => encoding::message::merge(
                wire_type,
                self.contact_counts.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            JOURNEYS => encoding::message::merge_repeated(wire_type, &mut self.journeys, buf, ctx),
            // Appended to the fixed bytes with its key, as `WireEvent`
            // keeps an event's fields.
            _ => {
                let mut fixed = WireEvent(std::mem::take(&mut self.fixed));
                let merged = fixed.merge_field(tag, wire_type, buf, ctx);
                self.fixed = fixed.0;
                merged
            }
        }
    }

    fn encoded_len(&self) -> usize {
        encoding::message::encoded_len_repeated(EVENTS, &self.events)
            + self.fixed.len()
            + self.contact_counts_encoded.len()
            + self
                .contact_counts
                .as_ref()
                .map_or(0, |c| encoding::message::encoded_len(CONTACT_COUNTS, c))
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
            journeys: vec![pb::JourneyState {
                journey: "onboarding".into(),
                ..Default::default()
            }],
        }
    }

    fn wire() -> GetJourneyContextResponse {
        let fixed = ContextFixed {
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
        GetJourneyContextResponse {
            events: vec![wire_event("e2"), wire_event("e1")],
            fixed: fixed.encode_to_vec().into(),
            contact_counts_encoded: contact_counts_field(&ContactCounts {
                last_24h: 1,
                last_7d: 2,
                last_30d: 3,
                capped: true,
                ..Default::default()
            }),
            contact_counts: None,
            journeys: vec![JourneyState {
                journey: "onboarding".into(),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn clients_read_every_field_of_the_fixed_part() {
        let response = wire();
        let bytes = response.encode_to_vec();
        assert_eq!(bytes.len(), response.encoded_len());
        let read = pb::GetJourneyContextResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(read, plain());
    }

    #[test]
    fn a_plain_response_decodes_into_the_same_fields() {
        let decoded =
            GetJourneyContextResponse::decode(plain().encode_to_vec().as_slice()).expect("decodes");
        let read = pb::GetJourneyContextResponse::decode(decoded.encode_to_vec().as_slice())
            .expect("decodes again");
        assert_eq!(read, plain());
        assert_eq!(decoded.events.len(), 2);
        assert_eq!(decoded.journeys.len(), 1);
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
