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

    /// Keeps each field of an incoming event as it came, so the handler can
    /// decode the whole event once with `pb::Event`.
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
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedEncoder<T>;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SizedEncoder(std::marker::PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
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
    fn a_response_of_wire_events_decodes_as_plain_events() {
        let encoded = Bytes::from(event().encode_to_vec());
        let response = GetJourneyContextResponse {
            events: vec![WireEvent(encoded.clone()), WireEvent(encoded)],
            customer_id: "c1".into(),
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
    fn a_truncated_event_is_an_error() {
        let mut bytes = pb::AppendEventRequest {
            event: Some(event()),
        }
        .encode_to_vec();
        bytes.truncate(bytes.len() - 3);
        assert!(AppendEventRequest::decode(bytes.as_slice()).is_err());
    }
}
