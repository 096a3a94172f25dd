//! Protobuf fields written straight from borrowed values, as prost writes
//! the generated types (proto3: a field at its default is left out; a
//! message field that is set is written even when empty). For what is
//! encoded once per read from values the store holds: building prost's
//! owned structs first (a `String` per name) and encoding them, which
//! walks nested messages twice for their lengths, cost the context ~16k
//! instructions per read from Redis under callgrind.

use prost::encoding::{encode_varint, WireType};

/// A `string` (or `bytes`) field.
#[inline]
pub fn string(tag: u32, value: &[u8], buf: &mut Vec<u8>) {
    if !value.is_empty() {
        embedded(tag, value, buf);
    }
}

/// A length-delimited field written whatever its length: an embedded
/// message already encoded, set.
#[inline]
pub fn embedded(tag: u32, encoded: &[u8], buf: &mut Vec<u8>) {
    key(tag, WireType::LengthDelimited, buf);
    varint(encoded.len() as u64, buf);
    buf.extend_from_slice(encoded);
}

/// A field's key.
#[inline]
fn key(tag: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    varint(u64::from(tag << 3 | wire_type as u32), buf);
}

/// A varint, pushed byte by byte onto the `Vec` (prost's `encode_varint`
/// goes through `BufMut`). With these writers inlined, framing a
/// context's events here costs what the hand-written loop it replaced in
/// `FramedEvents::copied` did (~8.6k instructions for 50 events).
#[inline]
fn varint(mut value: u64, buf: &mut Vec<u8>) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// A `uint64` field.
#[inline]
pub fn uint64(tag: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        key(tag, WireType::Varint, buf);
        varint(value, buf);
    }
}

/// A `google.protobuf.Timestamp` field, set.
pub fn timestamp(tag: u32, at: &prost_types::Timestamp, buf: &mut Vec<u8>) {
    message(tag, buf, |buf| {
        // int64 and int32 go as the varint of their 64-bit two's
        // complement, as prost writes them.
        uint64(1, at.seconds as u64, buf);
        uint64(2, i64::from(at.nanos) as u64, buf);
    });
}

/// An embedded message field, set, whose body `write` appends: its length
/// is patched in after, so nothing is walked twice.
pub fn message(tag: u32, buf: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    key(tag, WireType::LengthDelimited, buf);
    let at = buf.len();
    // One byte for the length, the common case (bodies under 128 bytes).
    buf.push(0);
    write(buf);
    let len = buf.len() - at - 1;
    if len < 0x80 {
        buf[at] = len as u8;
    } else {
        let mut varint = [0u8; 10];
        let mut rest = &mut varint[..];
        encode_varint(len as u64, &mut rest);
        let used = 10 - rest.len();
        buf.splice(at..at + 1, varint[..used].iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb;

    fn channel(buf: &mut Vec<u8>, summary: &pb::ChannelSummary) {
        message(3, buf, |buf| {
            string(1, summary.channel.as_bytes(), buf);
            string(2, summary.channel_class.as_bytes(), buf);
            uint64(3, summary.customer_initiated, buf);
            uint64(4, summary.company_initiated, buf);
            if let Some(at) = &summary.last_interaction_at {
                timestamp(5, at, buf);
            }
        });
    }

    /// What prost writes for a response holding only these channels.
    fn prost_bytes(channels: &[pb::ChannelSummary]) -> Vec<u8> {
        pb::GetJourneyContextResponse {
            channels: channels.to_vec(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn fields_are_written_as_prost_writes_them() {
        let cases = [
            pb::ChannelSummary::default(),
            pb::ChannelSummary {
                channel: "web".into(),
                channel_class: "online".into(),
                customer_initiated: 3,
                company_initiated: u64::MAX,
                last_interaction_at: Some(prost_types::Timestamp {
                    seconds: -5,
                    nanos: 999_999_999,
                }),
            },
            pb::ChannelSummary {
                last_interaction_at: Some(prost_types::Timestamp::default()),
                ..Default::default()
            },
            // Bodies of 127 and 128 bytes (the name's key and length take
            // 2): the last one-byte length, and the first patched in.
            pb::ChannelSummary {
                channel: "b".repeat(125),
                ..Default::default()
            },
            pb::ChannelSummary {
                channel: "c".repeat(126),
                ..Default::default()
            },
            pb::ChannelSummary {
                channel: "d".repeat(20_000),
                channel_class: "x".into(),
                ..Default::default()
            },
        ];
        for case in &cases {
            let mut buf = Vec::new();
            channel(&mut buf, case);
            assert_eq!(
                buf,
                prost_bytes(std::slice::from_ref(case)),
                "{}",
                case.channel.len()
            );
            if case.channel.len() == 125 {
                assert_eq!(buf[1], 127, "a one-byte length");
            }
            if case.channel.len() == 126 {
                assert_eq!(buf[1..3], [0x80, 0x01], "a two-byte length");
            }
        }
        let mut all = Vec::new();
        cases.iter().for_each(|c| channel(&mut all, c));
        assert_eq!(all, prost_bytes(&cases));
    }
}
