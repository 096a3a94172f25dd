//! The server's view of the `journey.v1` schema: the same messages as
//! `pb`, generated a second time by `build.rs` with `journey.v1.Event`
//! carried as `WireEvent`, its protobuf encoding. Stores keep events
//! encoded, so a read puts the stored bytes straight into the response
//! (`0x0a varint(len) bytes` per event) instead of decoding every event
//! and encoding it again: on the context path that was most of the
//! server's CPU per call.

#![allow(clippy::all, missing_docs)]

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::{
    encoding::{decode_varint, encode_key, encode_varint, DecodeContext, WireType},
    DecodeError, Message,
};

/// A `journey.v1.Event` in its protobuf encoding.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct WireEvent(pub Bytes);

impl std::fmt::Debug for WireEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WireEvent({} bytes)", self.0.len())
    }
}

impl Message for WireEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    /// Keeps each field of an event decoded on its own as it came. The
    /// server's requests do not come this way: `AppendEventRequest` and
    /// `AppendEventsRequest` below take an event's bytes whole.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // The bytes so far are this value's alone while it is decoded, so
        // they become mutable again without a copy (fields are appended in
        // place, not the whole event copied once per field).
        let mut out = BytesMut::from(std::mem::take(&mut self.0));
        encode_key(tag, wire_type, &mut out);
        match wire_type {
            WireType::Varint => encode_varint(decode_varint(buf)?, &mut out),
            WireType::LengthDelimited => {
                let mut value = Bytes::new();
                prost::encoding::bytes::merge(wire_type, &mut value, buf, ctx)?;
                encode_varint(value.len() as u64, &mut out);
                out.put(value);
            }
            WireType::ThirtyTwoBit => {
                let mut value = 0u32;
                prost::encoding::fixed32::merge(wire_type, &mut value, buf, ctx)?;
                out.put_u32_le(value);
            }
            WireType::SixtyFourBit => {
                let mut value = 0u64;
                prost::encoding::fixed64::merge(wire_type, &mut value, buf, ctx)?;
                out.put_u64_le(value);
            }
            // journey.v1.Event has no groups: skip one as prost skips an
            // unknown field, and drop the key written above.
            WireType::StartGroup | WireType::EndGroup => {
                prost::encoding::skip_field(wire_type, tag, buf, ctx)?;
                out.truncate(out.len() - prost::encoding::key_len(tag));
            }
        }
        self.0 = out.freeze();
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// `journey.v1.AppendEventRequest` as the server reads it: the event's
/// bytes are taken whole (one slice of the request, no copy), and the
/// handler decodes them once. Generated code would hand `WireEvent` the
/// event field by field, re-encoding each one into a growing buffer: under
/// callgrind, ~10k instructions per AppendEvent before the handler ran.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct AppendEventRequest {
    pub event: Option<WireEvent>,
}

/// `journey.v1.AppendEventsRequest` as the server reads it: each event's
/// bytes taken whole, as in `AppendEventRequest`.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct AppendEventsRequest {
    pub events: Vec<WireEvent>,
    /// Events past `MAX_DECODED_EVENTS`, skipped unread (decoding only).
    pub skipped: usize,
}

/// Most events an `AppendEventsRequest` decodes; those past it are only
/// counted, so that a request of millions of empty events (2 bytes each on
/// the wire, 32 in memory) cannot take 16 times its size before its count
/// is refused. `--max-batch` may not exceed it.
pub const MAX_DECODED_EVENTS: usize = 100_000;

/// Field 1 of both requests: the event(s).
const EVENT_FIELD: u32 = 1;

/// Reads one occurrence of an embedded event into `event`. A repeated
/// occurrence is appended to the bytes so far: decoding concatenated
/// encodings merges them, as protobuf merges a repeated message field.
fn merge_event(
    wire_type: WireType,
    event: &mut WireEvent,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    let mut value = Bytes::new();
    prost::encoding::bytes::merge(wire_type, &mut value, buf, ctx)?;
    if event.0.is_empty() {
        event.0 = value;
    } else {
        let mut joined = BytesMut::from(std::mem::take(&mut event.0));
        joined.put(value);
        event.0 = joined.freeze();
    }
    Ok(())
}

impl Message for AppendEventRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(event) = &self.event {
            prost::encoding::message::encode(EVENT_FIELD, event, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag == EVENT_FIELD {
            let event = self.event.get_or_insert_with(WireEvent::default);
            merge_event(wire_type, event, buf, ctx).map_err(|mut e| {
                e.push("AppendEventRequest", "event");
                e
            })
        } else {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        self.event.as_ref().map_or(0, |event| {
            prost::encoding::message::encoded_len(EVENT_FIELD, event)
        })
    }

    fn clear(&mut self) {
        self.event = None;
    }
}

impl Message for AppendEventsRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        prost::encoding::message::encode_repeated(EVENT_FIELD, &self.events, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag == EVENT_FIELD && self.events.len() >= MAX_DECODED_EVENTS {
            self.skipped += 1;
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        } else if tag == EVENT_FIELD {
            let mut event = WireEvent::default();
            merge_event(wire_type, &mut event, buf, ctx).map_err(|mut e| {
                e.push("AppendEventsRequest", "events");
                e
            })?;
            self.events.push(event);
            Ok(())
        } else {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        prost::encoding::message::encoded_len_repeated(EVENT_FIELD, &self.events)
    }

    fn clear(&mut self) {
        self.events.clear();
        self.skipped = 0;
    }
}

/// The server's codec: prost's, except that a response's buffer is grown
/// to the message's size before it is encoded. tonic starts each response
/// in an 8 KiB buffer, so a 50-event context (~17 KiB) was copied as the
/// buffer doubled twice: under callgrind, the largest single cost of the
/// context after the Redis reply's decoding.
#[derive(Debug, Clone, Copy)]
pub struct WireCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for WireCodec<T, U> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for WireCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + RequestBound + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SizedEncoder(std::marker::PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(tonic_prost::ProstDecoder::default())
    }
}

/// The largest encoding the server decodes of a request (the service's
/// `--max-message-bytes` applies first). The small requests (a customer
/// reference, at most 20 identities, a few filters) fit in far less than
/// `SMALL_REQUEST_BYTES`; capping them before they are decoded bounds what
/// a request of a million empty repeated entries would take in memory (2
/// bytes each on the wire, 24 to 48 decoded) before its count is refused.
/// The append and batch requests cap what they decode themselves.
pub trait RequestBound {
    const MAX_BYTES: usize = usize::MAX;
}

/// The most bytes a small request may take (see `RequestBound`).
pub const SMALL_REQUEST_BYTES: usize = 64 * 1024;

impl RequestBound for AppendEventRequest {}
impl RequestBound for AppendEventsRequest {}
impl RequestBound for CheckContactBatchRequest {}
macro_rules! small_requests {
    ($($request:ty),* $(,)?) => {
        $(impl RequestBound for $request {
            const MAX_BYTES: usize = SMALL_REQUEST_BYTES;
        })*
    };
}
small_requests!(
    GetJourneyContextRequest,
    ListEventsRequest,
    CheckContactRequest,
    LinkIdentitiesRequest,
    UnlinkIdentityRequest,
    ListJourneyDefinitionsRequest,
    GetJourneyStatsRequest,
    ListJourneysRequest,
    ForgetCustomerRequest,
);

/// prost's decoding, after a check of the request's size against its
/// `RequestBound`: a larger one is `RESOURCE_EXHAUSTED`, and bytes that do
/// not decode are `INVALID_ARGUMENT` (tonic's own decoder answers
/// `INTERNAL`).
#[derive(Debug)]
pub struct BoundedDecoder<U>(tonic_prost::ProstDecoder<U>);

impl<U: Message + Default + RequestBound> tonic::codec::Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<U>, tonic::Status> {
        let len = buf.remaining();
        if len > U::MAX_BYTES {
            return Err(crate::transport::status::request_too_large(
                len,
                U::MAX_BYTES,
            ));
        }
        U::decode(buf)
            .map(Some)
            .map_err(|e| crate::transport::status::undecodable_request(&e))
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.0.buffer_settings()
    }
}

/// Encodes a message into a buffer first grown to its size.
#[derive(Debug, Clone, Copy)]
pub struct SizedEncoder<T>(std::marker::PhantomData<T>);

impl<T: Message> tonic::codec::Encoder for SizedEncoder<T> {
    type Item = T;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: T,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        buf.reserve(item.encoded_len());
        // The buffer grows as needed, so encoding cannot run out of room.
        item.encode_raw(buf);
        Ok(())
    }
}

mod check_batch;
mod context;
pub mod fields;
pub use check_batch::{CheckContactBatchRequest, MAX_DECODED_CUSTOMERS};
pub use context::{
    contact_counts_field, journeys_field, ContextHead, ContextTail, GetJourneyContextResponse,
};

include!(concat!(env!("OUT_DIR"), "/wire/journey.v1.rs"));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn event() -> pb::Event {
        pb::Event {
            event_id: "e1".into(),
            customer_id: "c1".into(),
            channel: "web".into(),
            initiator: 1,
            occurred_at: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: 6_000,
            }),
            attributes: [("page".to_string(), "/x".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn events_past_the_decoding_cap_are_counted_not_kept() {
        // An empty event is two bytes on the wire: tag 1, length 0.
        let extra = 5;
        let wire = [0x0a_u8, 0x00].repeat(MAX_DECODED_EVENTS + extra);
        let request = AppendEventsRequest::decode(wire.as_slice()).expect("decodes");
        assert_eq!(request.events.len(), MAX_DECODED_EVENTS);
        assert_eq!(request.skipped, extra);
    }

    #[test]
    fn a_response_of_wire_events_decodes_as_plain_events() {
        let encoded = Bytes::from(event().encode_to_vec());
        let response = GetJourneyContextResponse {
            events: vec![WireEvent(encoded.clone()), WireEvent(encoded)],
            head: ContextHead {
                customer_id: "c1".into(),
                ..Default::default()
            }
            .encode_to_vec()
            .into(),
            ..Default::default()
        };
        let plain = pb::GetJourneyContextResponse::decode(response.encode_to_vec().as_slice())
            .expect("decodes");
        assert_eq!(plain.events, vec![event(), event()]);
        assert_eq!(plain.customer_id, "c1");
    }

    #[test]
    fn a_request_event_is_kept_whole() {
        let request = pb::AppendEventRequest {
            event: Some(event()),
        };
        let wire = AppendEventRequest::decode(request.encode_to_vec().as_slice()).expect("decodes");
        let bytes = wire.event.expect("event").0;
        assert_eq!(pb::Event::decode(bytes).expect("decodes"), event());
    }

    #[test]
    fn a_batch_keeps_each_event_whole_and_in_order() {
        let mut second = event();
        second.event_id = "e2".into();
        let request = pb::AppendEventsRequest {
            events: vec![event(), second.clone()],
        };
        let encoded = request.encode_to_vec();
        let wire = AppendEventsRequest::decode(encoded.as_slice()).expect("decodes");
        let events: Vec<pb::Event> = wire
            .events
            .iter()
            .map(|e| pb::Event::decode(e.0.clone()).expect("decodes"))
            .collect();
        assert_eq!(events, vec![event(), second]);
        // And it encodes back to the same bytes.
        assert_eq!(wire.encode_to_vec(), encoded);
        assert_eq!(wire.encoded_len(), encoded.len());
    }

    #[test]
    fn a_repeated_event_field_merges_as_protobuf_does() {
        let later = pb::Event {
            channel: "app".into(),
            ..Default::default()
        };
        let mut bytes = pb::AppendEventRequest {
            event: Some(event()),
        }
        .encode_to_vec();
        bytes.extend(pb::AppendEventRequest { event: Some(later) }.encode_to_vec());
        let expected = pb::AppendEventRequest::decode(bytes.as_slice()).expect("decodes");
        let wire = AppendEventRequest::decode(bytes.as_slice()).expect("decodes");
        let merged = pb::Event::decode(wire.event.expect("event").0).expect("decodes");
        assert_eq!(Some(merged), expected.event);
        assert_eq!(expected.event.map(|e| e.channel).as_deref(), Some("app"));
    }

    #[test]
    fn unknown_request_fields_are_skipped() {
        let mut bytes = Vec::new();
        prost::encoding::string::encode(7, &"later field".to_string(), &mut bytes);
        bytes.extend(
            pb::AppendEventsRequest {
                events: vec![event()],
            }
            .encode_to_vec(),
        );
        let wire = AppendEventsRequest::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(wire.events.len(), 1);
        let one = AppendEventRequest::decode(bytes.as_slice()).expect("decodes");
        assert!(one.event.is_some());
    }

    #[test]
    fn an_event_field_of_the_wrong_type_is_an_error() {
        let mut bytes = Vec::new();
        prost::encoding::uint64::encode(1, &5, &mut bytes);
        assert!(AppendEventRequest::decode(bytes.as_slice()).is_err());
        assert!(AppendEventsRequest::decode(bytes.as_slice()).is_err());
    }

    #[test]
    fn a_truncated_event_is_an_error() {
        let mut bytes = pb::AppendEventRequest {
            event: Some(event()),
        }
        .encode_to_vec();
        bytes.truncate(bytes.len() - 3);
        assert!(AppendEventRequest::decode(bytes.as_slice()).is_err());
    }

    /// Requests as any client could send them, and what the hand-written
    /// decoders above make of them, against prost's generated ones.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn text() -> impl Strategy<Value = String> {
            "[a-z0-9_é]{0,6}"
        }

        fn event() -> impl Strategy<Value = pb::Event> {
            (
                (text(), text(), text(), text(), text(), text()),
                0..4i32,
                proptest::option::of((any::<i64>(), 0..1_000_000_000i32)),
                proptest::collection::btree_map(text(), text(), 0..3),
                proptest::collection::vec((text(), text()), 0..3),
            )
                .prop_map(|(names, initiator, at, attributes, identities)| {
                    let (event_id, customer_id, session_id, channel, reason, r#type) = names;
                    pb::Event {
                        event_id,
                        customer_id,
                        session_id,
                        channel,
                        reason,
                        r#type,
                        initiator,
                        occurred_at: at
                            .map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
                        attributes,
                        identities: identities
                            .into_iter()
                            .map(|(r#type, value)| pb::Identity { r#type, value })
                            .collect(),
                    }
                })
        }

        /// An encoded request of random events, then damaged: bytes
        /// changed, cut short, or more added.
        fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
            (
                proptest::collection::vec(event(), 0..4),
                proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
                any::<prop::sample::Index>(),
                proptest::collection::vec(any::<u8>(), 0..8),
                0..4u8,
            )
                .prop_map(|(events, changes, cut, extra, damage)| {
                    let mut bytes = pb::AppendEventsRequest { events }.encode_to_vec();
                    if bytes.is_empty() || damage == 0 {
                        return bytes;
                    }
                    match damage {
                        1 => {
                            for (at, byte) in changes {
                                let at = at.index(bytes.len());
                                bytes[at] = byte;
                            }
                        }
                        2 => bytes.truncate(cut.index(bytes.len())),
                        _ => bytes.extend(extra),
                    }
                    bytes
                })
        }

        fn events_of(wire: &[WireEvent]) -> Vec<pb::Event> {
            wire.iter()
                .map(|e| pb::Event::decode(e.0.clone()).expect("an event prost read reads"))
                .collect()
        }

        proptest! {
            /// Whatever prost reads as a request, the server's decoders read
            /// too, each event's bytes whole, decoding to the same events.
            #[test]
            fn requests_read_as_prost_reads_them(bytes in request_bytes()) {
                if let Ok(plain) = pb::AppendEventsRequest::decode(bytes.as_slice()) {
                    let wire = AppendEventsRequest::decode(bytes.as_slice());
                    prop_assert!(wire.is_ok(), "{wire:?}");
                    prop_assert_eq!(events_of(&wire.unwrap_or_default().events), plain.events);
                }
                if let Ok(plain) = pb::AppendEventRequest::decode(bytes.as_slice()) {
                    let wire = AppendEventRequest::decode(bytes.as_slice());
                    prop_assert!(wire.is_ok(), "{wire:?}");
                    let event = wire.unwrap_or_default().event;
                    prop_assert_eq!(
                        event.map(|e| events_of(&[e]).remove(0)),
                        plain.event
                    );
                }
            }

            /// Any bytes: decoded or refused, never a panic.
            #[test]
            fn any_bytes_decode_or_fail_without_panicking(
                bytes in proptest::collection::vec(any::<u8>(), 0..200)
            ) {
                let _ = AppendEventsRequest::decode(bytes.as_slice());
                let _ = AppendEventRequest::decode(bytes.as_slice());
                let _ = WireEvent::decode(bytes.as_slice());
                let _ = GetJourneyContextResponse::decode(bytes.as_slice());
            }

            /// A response of stored events reads, for a client, as the
            /// events themselves.
            #[test]
            fn responses_of_wire_events_read_as_their_events(
                events in proptest::collection::vec(event(), 0..4)
            ) {
                let response = GetJourneyContextResponse {
                    events: events
                        .iter()
                        .map(|e| WireEvent(e.encode_to_vec().into()))
                        .collect(),
                    ..Default::default()
                };
                let bytes = response.encode_to_vec();
                prop_assert_eq!(bytes.len(), response.encoded_len());
                let plain = pb::GetJourneyContextResponse::decode(bytes.as_slice());
                prop_assert_eq!(plain.map(|p| p.events).ok(), Some(events));
            }
        }
    }
}
