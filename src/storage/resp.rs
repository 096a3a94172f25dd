//! RESP2, the protocol of Redis's replies: a decoder that takes complete
//! replies off the connection's read buffer, each as its bytes (frozen, so
//! a string kept, e.g. an event of a ListEvents page, is a zero-copy slice
//! of them) and its frames, whose strings are spans of those bytes.
//!
//! Why not a library: `redis-protocol` (fred's decoder) did this first, and
//! under callgrind its nom-based decoder took 22 % of the service's
//! instructions per GetJourneyContext (~70,000 of ~310,000), more than
//! any part of the service's own work. This decoder reads a reply in one
//! pass (resumed where it stopped when the reply comes over several reads),
//! each array allocated once at its final size when its bytes are at hand,
//! and makes a `Bytes` only of the strings a reader keeps.

use bytes::{Bytes, BytesMut};
use thiserror::Error;

/// Arrays nest at most this deep (Redis's replies to the store's commands
/// nest two deep; a deeper one is a protocol error, not a stack overflow).
const MAX_DEPTH: usize = 32;
/// Redis's own bound on a bulk string (`proto-max-bulk-len`).
const MAX_BULK: u64 = 512 << 20;
/// The longest first line of a reply (a type byte, then a length, an
/// integer, a status or an error message): a line without its CRLF within
/// this many bytes is a protocol error, not a buffer that grows forever.
const MAX_LINE: usize = 64 * 1024;

/// Where a string lies in its reply's bytes.
pub(super) type Span = std::ops::Range<usize>;

/// The frames of one RESP2 reply; strings are spans of the reply's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Frame {
    Simple(Span),
    Error(Span),
    Integer(i64),
    Bulk(Span),
    /// A nil bulk string or nil array.
    Null,
    Array(Vec<Frame>),
}

impl Frame {
    /// The kind of frame, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Simple(_) => "a simple string",
            Self::Error(_) => "an error",
            Self::Integer(_) => "an integer",
            Self::Bulk(_) => "a bulk string",
            Self::Null => "nil",
            Self::Array(_) => "an array",
        }
    }
}

/// One complete reply: its bytes and its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    pub bytes: Bytes,
    pub frame: Frame,
}

/// Bytes that are not RESP2: the connection cannot be trusted any more.
#[derive(Debug, Error)]
#[error("invalid RESP2 reply at byte {at}: {reason}")]
pub(super) struct ProtocolError {
    at: usize,
    reason: &'static str,
}

/// What the buffer held of the next reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decoded {
    /// The whole reply, taken off the buffer.
    Reply(Reply),
    /// Part of one: the buffer must hold at least `need` bytes before it
    /// can be complete (decoding again sooner would find it incomplete).
    Partial { need: usize },
}

/// Takes complete replies off a connection's read buffer. It keeps what it
/// has decoded of an incomplete reply, so a reply that arrives over many
/// reads is decoded once, not again from its start after every read (which
/// made a large reply's cost grow with the square of its size).
///
/// Between calls, the buffer may only grow at its end (more bytes read);
/// positions kept are offsets from its start.
#[derive(Debug, Default)]
pub(super) struct Decoder {
    /// The arrays of the reply in progress that still miss elements,
    /// outermost first: the elements so far and how many there will be.
    open: Vec<(Vec<Frame>, usize)>,
    /// Where the next element of the reply in progress starts.
    at: usize,
}

impl Decoder {
    /// Takes the first complete reply off `buf`, or says how much of it is
    /// missing.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        loop {
            let pos = self.at;
            let incomplete = Decoded::Partial {
                need: buf.len() + 1,
            };
            let Some(&kind) = buf.get(pos) else {
                return Ok(incomplete);
            };
            let (mut frame, end) = match kind {
                b'$' => match length_line(buf, pos + 1, MAX_BULK)? {
                    None => return Ok(incomplete),
                    Some((None, next)) => (Frame::Null, next),
                    Some((Some(len), next)) => {
                        let end = next + len + 2;
                        if buf.len() < end {
                            return Ok(Decoded::Partial { need: end });
                        }
                        if buf[end - 2] != b'\r' || buf[end - 1] != b'\n' {
                            return Err(ProtocolError {
                                at: end - 2,
                                reason: "bulk string without its CRLF",
                            });
                        }
                        (Frame::Bulk(next..next + len), end)
                    }
                },
                b'*' => match length_line(buf, pos + 1, u64::from(u32::MAX))? {
                    None => return Ok(incomplete),
                    Some((None, next)) => (Frame::Null, next),
                    Some((Some(0), next)) => (Frame::Array(Vec::new()), next),
                    Some((Some(count), next)) => {
                        if self.open.len() >= MAX_DEPTH {
                            return Err(ProtocolError {
                                at: pos,
                                reason: "arrays nested too deep",
                            });
                        }
                        // Every element takes at least 3 bytes: a count
                        // larger than the bytes at hand allow is not
                        // allocated up front (it may be bogus).
                        let room = buf.len().saturating_sub(next) / 3;
                        self.open.push((Vec::with_capacity(count.min(room)), count));
                        self.at = next;
                        continue;
                    }
                },
                b'+' | b'-' | b':' => {
                    let Some((line, next)) = line(buf, pos + 1)? else {
                        return Ok(incomplete);
                    };
                    let span = pos + 1..pos + 1 + line.len();
                    match kind {
                        b'+' => (Frame::Simple(span), next),
                        b'-' => (Frame::Error(span), next),
                        _ => (Frame::Integer(integer(line, pos + 1)?), next),
                    }
                }
                _ => {
                    return Err(ProtocolError {
                        at: pos,
                        reason: "unknown reply type",
                    })
                }
            };
            self.at = end;
            // The element goes into the innermost open array (in place: no
            // move of the array per element); it may complete that array,
            // which may complete its own.
            loop {
                let Some((items, count)) = self.open.last_mut() else {
                    self.at = 0;
                    return Ok(Decoded::Reply(Reply {
                        bytes: buf.split_to(end).freeze(),
                        frame,
                    }));
                };
                items.push(frame);
                if items.len() < *count {
                    break;
                }
                frame = Frame::Array(std::mem::take(items));
                self.open.pop();
            }
        }
    }
}

/// Takes the first complete reply off `buf` with a decoder of its own.
#[cfg(test)]
pub(super) fn decode(buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
    Decoder::default().decode(buf)
}

/// The line starting at `start` (after a reply's type byte), without its
/// CRLF, and the index after the CRLF; `None` if incomplete.
fn line(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = &buf[start.min(buf.len())..];
    let Some(cr) = rest.iter().take(MAX_LINE).position(|&b| b == b'\r') else {
        if rest.len() >= MAX_LINE {
            return Err(ProtocolError {
                at: start - 1,
                reason: "a line longer than 64 KiB",
            });
        }
        return Ok(None);
    };
    match rest.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((&rest[..cr], start + cr + 2))),
        Some(_) => Err(ProtocolError {
            at: start + cr,
            reason: "CR without LF",
        }),
    }
}

/// The length line of a bulk string or an array, starting at `start`
/// (after the `$` or `*`), read in the pass that finds its end: the length
/// (`None` for nil, -1) and the index after the CRLF; `None` if the line
/// is incomplete. Why not `line` then `integer`: a reply is mostly such
/// lines (a 50-event context has ~140), and two passes over each cost
/// ~170 instructions a line under callgrind.
#[allow(clippy::type_complexity)]
fn length_line(
    buf: &[u8],
    start: usize,
    max: u64,
) -> Result<Option<(Option<usize>, usize)>, ProtocolError> {
    let bad = |reason| ProtocolError { at: start, reason };
    let negative = buf.get(start) == Some(&b'-');
    let digits = start + usize::from(negative);
    let mut at = digits;
    let mut value: u64 = 0;
    loop {
        match buf.get(at) {
            None => return Ok(None),
            Some(b'\r') => break,
            // 19 digits cannot overflow a u64; more are not a length.
            Some(&d @ b'0'..=b'9') if at - digits < 19 => {
                value = value * 10 + u64::from(d - b'0');
                at += 1;
            }
            Some(_) => return Err(bad("not an integer")),
        }
    }
    if at == digits {
        return Err(bad("not an integer"));
    }
    match buf.get(at + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => {
            return Err(ProtocolError {
                at,
                reason: "CR without LF",
            })
        }
    }
    let length = match (negative, value) {
        (true, 1) => None,
        // `-0` is a number, as `integer` reads it.
        (true, 0) => Some(0),
        (false, n) if n <= max => Some(n as usize),
        _ => return Err(bad("length out of range")),
    };
    Ok(Some((length, at + 2)))
}

fn integer(digits: &[u8], at: usize) -> Result<i64, ProtocolError> {
    let bad = |reason| ProtocolError { at, reason };
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(bad("not an integer"));
    }
    // Accumulated on the negative side, which holds one more value than
    // the positive: `i64::MIN` is a reply Redis can send.
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(bad("not an integer"));
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_sub(i64::from(d - b'0')))
            .ok_or(bad("integer out of range"))?;
    }
    if negative {
        Ok(value)
    } else {
        value.checked_neg().ok_or(bad("integer out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame with its strings resolved, to compare with what is expected.
    #[derive(Debug, Clone, PartialEq)]
    enum Plain {
        Simple(&'static str),
        Error(&'static str),
        Integer(i64),
        Bulk(String),
        Null,
        Array(Vec<Plain>),
    }

    fn plain(bytes: &Bytes, frame: &Frame) -> Plain {
        let text = |span: &Span| String::from_utf8_lossy(&bytes[span.clone()]).into_owned();
        match frame {
            Frame::Simple(s) => Plain::Simple(Box::leak(text(s).into_boxed_str())),
            Frame::Error(s) => Plain::Error(Box::leak(text(s).into_boxed_str())),
            Frame::Integer(i) => Plain::Integer(*i),
            Frame::Bulk(s) => Plain::Bulk(text(s)),
            Frame::Null => Plain::Null,
            Frame::Array(items) => Plain::Array(items.iter().map(|f| plain(bytes, f)).collect()),
        }
    }

    /// A pipeline's replies, one after the other, as Redis sends them.
    const REPLIES: &[u8] = b"+OK\r\n-ERR wrong\r\n:42\r\n:-7\r\n$5\r\nhe\r\no\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n+x\r\n";

    fn expected() -> Vec<Plain> {
        vec![
            Plain::Simple("OK"),
            Plain::Error("ERR wrong"),
            Plain::Integer(42),
            Plain::Integer(-7),
            Plain::Bulk("he\r\no".into()),
            Plain::Bulk(String::new()),
            Plain::Null,
            Plain::Null,
            Plain::Array(vec![]),
            Plain::Array(vec![
                Plain::Bulk("a".into()),
                Plain::Array(vec![Plain::Integer(1), Plain::Null]),
                Plain::Simple("x"),
            ]),
        ]
    }

    fn decode_all(buf: &mut BytesMut) -> Vec<Plain> {
        decode_all_with(&mut Decoder::default(), buf)
    }

    fn decode_all_with(decoder: &mut Decoder, buf: &mut BytesMut) -> Vec<Plain> {
        let mut frames = Vec::new();
        while let Ok(Decoded::Reply(reply)) = decoder.decode(buf) {
            frames.push(plain(&reply.bytes, &reply.frame));
        }
        frames
    }

    #[test]
    fn every_kind_of_reply_decodes() {
        let mut buf = BytesMut::from(REPLIES);
        assert_eq!(decode_all(&mut buf), expected());
        assert!(buf.is_empty());
    }

    #[test]
    fn replies_split_anywhere_decode_once_complete() {
        for split in 0..REPLIES.len() {
            let mut buf = BytesMut::from(&REPLIES[..split]);
            let mut frames = decode_all(&mut buf);
            // What is left is a partial reply that asks for more bytes.
            if !buf.is_empty() {
                match decode(&mut buf) {
                    Ok(Decoded::Partial { need }) => assert!(need > buf.len(), "split {split}"),
                    other => panic!("split {split}: {other:?}"),
                }
            }
            buf.extend_from_slice(&REPLIES[split..]);
            frames.extend(decode_all(&mut buf));
            assert_eq!(frames, expected(), "split at {split}");
        }
    }

    /// The same, one decoder kept across the split: it resumes the reply
    /// in progress where it stopped (the connection's way).
    #[test]
    fn a_decoder_resumes_a_reply_split_anywhere() {
        for split in 0..REPLIES.len() {
            let mut decoder = Decoder::default();
            let mut buf = BytesMut::from(&REPLIES[..split]);
            let mut frames = decode_all_with(&mut decoder, &mut buf);
            buf.extend_from_slice(&REPLIES[split..]);
            frames.extend(decode_all_with(&mut decoder, &mut buf));
            assert_eq!(frames, expected(), "split at {split}");
            assert!(buf.is_empty(), "split at {split}");
        }
        // And byte by byte, as a slow connection would hand them over.
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for &byte in REPLIES {
            buf.extend_from_slice(&[byte]);
            frames.extend(decode_all_with(&mut decoder, &mut buf));
        }
        assert_eq!(frames, expected());
    }

    /// A large reply read in many pieces is not decoded again from its
    /// start each time: what was decoded stays decoded.
    #[test]
    fn a_resumed_reply_is_not_decoded_again() {
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::from(&b"*3\r\n$1\r\na\r\n:7\r\n"[..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Ok(Decoded::Partial { .. })
        ));
        // Bytes already decoded are changed behind the decoder's back: a
        // decoder that started over would see them; this one does not.
        buf[5] = b'X';
        buf.extend_from_slice(b"+z\r\n");
        let Ok(Decoded::Reply(reply)) = decoder.decode(&mut buf) else {
            panic!("the reply completes");
        };
        let Frame::Array(items) = &reply.frame else {
            panic!("an array");
        };
        assert_eq!(items.len(), 3);
        assert_eq!(items[1], Frame::Integer(7));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_partial_bulk_string_names_the_bytes_it_needs() {
        let mut buf = BytesMut::from(&b"$10\r\nabc"[..]);
        assert!(matches!(
            decode(&mut buf),
            Ok(Decoded::Partial { need: 17 })
        ));
    }

    #[test]
    fn a_reply_is_the_read_buffer_itself() {
        let mut buf = BytesMut::from(&b"*1\r\n$3\r\nabc\r\n"[..]);
        let start = buf.as_ptr() as usize;
        let Ok(Decoded::Reply(reply)) = decode(&mut buf) else {
            panic!("a reply");
        };
        assert_eq!(reply.bytes.as_ptr() as usize, start, "no copy");
        let Frame::Array(items) = &reply.frame else {
            panic!("an array");
        };
        assert_eq!(items[0], Frame::Bulk(8..11));
        assert_eq!(&reply.bytes[8..11], b"abc");
    }

    #[test]
    fn what_is_not_resp2_is_an_error() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b":99999999999999999999\r\n",
            b"$-2\r\n",
            b"$3\r\nabcXY",
            b"*-5\r\n",
            b"+OK\rX",
            b"$9999999999\r\n",
            b"$\r\n",
            b"$-\r\n",
            b"$3x\r\n",
            b"*1 \r\n",
            b"$3\rX",
            b"*12345678901234567890\r\n",
            b"$99999999999999999999999999",
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(
                decode(&mut buf).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut deep = BytesMut::from("*1\r\n".repeat(MAX_DEPTH + 1).as_bytes());
        deep.extend_from_slice(b":1\r\n");
        assert!(decode(&mut deep).is_err(), "nested too deep");
        for overflow in [
            &b":9223372036854775808\r\n"[..],
            b":-9223372036854775809\r\n",
        ] {
            assert!(decode(&mut BytesMut::from(overflow)).is_err());
        }
    }

    #[test]
    fn the_extreme_integers_decode() {
        for (wire, value) in [
            (&b":-9223372036854775808\r\n"[..], i64::MIN),
            (b":9223372036854775807\r\n", i64::MAX),
            (b":-0\r\n", 0),
        ] {
            let Ok(Decoded::Reply(reply)) = decode(&mut BytesMut::from(wire)) else {
                panic!("{wire:?} decodes");
            };
            assert_eq!(reply.frame, Frame::Integer(value));
        }
    }

    /// Lengths are read in the pass that finds their line's end: every
    /// prefix of a length line is incomplete, not an error.
    #[test]
    fn lengths_decode_and_their_prefixes_wait_for_more() {
        for (wire, expected) in [
            (&b"$-0\r\n\r\n"[..], Plain::Bulk(String::new())),
            (
                b"$0012\r\nhello world!\r\n",
                Plain::Bulk("hello world!".into()),
            ),
            (b"*-1\r\n", Plain::Null),
            (b"*01\r\n:5\r\n", Plain::Array(vec![Plain::Integer(5)])),
        ] {
            let Ok(Decoded::Reply(reply)) = decode(&mut BytesMut::from(wire)) else {
                panic!("{wire:?} decodes");
            };
            assert_eq!(plain(&reply.bytes, &reply.frame), expected, "{wire:?}");
            for cut in 1..wire.len() {
                assert!(
                    matches!(
                        decode(&mut BytesMut::from(&wire[..cut])),
                        Ok(Decoded::Partial { .. })
                    ),
                    "{:?}",
                    &wire[..cut]
                );
            }
        }
        // The longest bulk string Redis allows is a length; one more is not.
        let mut at_max = BytesMut::from(format!("${MAX_BULK}\r\n").as_bytes());
        assert!(matches!(
            decode(&mut at_max),
            Ok(Decoded::Partial { need }) if need == at_max.len() + MAX_BULK as usize + 2
        ));
        let over = format!("${}\r\n", MAX_BULK + 1);
        assert!(decode(&mut BytesMut::from(over.as_bytes())).is_err());
    }

    #[test]
    fn a_line_without_its_end_is_an_error_once_too_long() {
        let mut short = BytesMut::from(&b"+no end yet"[..]);
        assert!(matches!(decode(&mut short), Ok(Decoded::Partial { .. })));
        let mut long = BytesMut::from(&b"+"[..]);
        long.extend_from_slice(&vec![b'x'; MAX_LINE]);
        assert!(decode(&mut long).is_err(), "the buffer would grow forever");
    }

    /// Replies as Redis could send them, over reads cut anywhere; and
    /// bytes that are not replies.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// A reply and its encoding.
        fn reply() -> impl Strategy<Value = (Plain, Vec<u8>)> {
            let leaf = prop_oneof![
                "[ -~]{0,8}".prop_map(|s| (
                    Plain::Simple(Box::leak(s.clone().into_boxed_str())),
                    format!("+{s}\r\n").into_bytes()
                )),
                "[ -~]{0,8}".prop_map(|s| (
                    Plain::Error(Box::leak(s.clone().into_boxed_str())),
                    format!("-{s}\r\n").into_bytes()
                )),
                any::<i64>().prop_map(|n| (Plain::Integer(n), format!(":{n}\r\n").into_bytes())),
                // Bulk strings hold any bytes, CRLF included.
                proptest::collection::vec(
                    prop_oneof![Just(b'\r'), Just(b'\n'), b'a'..=b'z'],
                    0..12
                )
                .prop_map(|b| {
                    let mut wire = format!("${}\r\n", b.len()).into_bytes();
                    wire.extend_from_slice(&b);
                    wire.extend_from_slice(b"\r\n");
                    (Plain::Bulk(String::from_utf8(b).unwrap_or_default()), wire)
                }),
                Just((Plain::Null, b"$-1\r\n".to_vec())),
                Just((Plain::Null, b"*-1\r\n".to_vec())),
            ];
            leaf.prop_recursive(3, 40, 6, |inner| {
                proptest::collection::vec(inner, 0..6).prop_map(|items| {
                    let mut wire = format!("*{}\r\n", items.len()).into_bytes();
                    let mut plains = Vec::new();
                    for (plain, bytes) in items {
                        plains.push(plain);
                        wire.extend(bytes);
                    }
                    (Plain::Array(plains), wire)
                })
            })
        }

        /// `bytes` handed to one decoder in pieces cut at `cuts`: the
        /// replies it gave, and its error if it failed.
        fn decode_in_pieces(
            bytes: &[u8],
            cuts: &[prop::sample::Index],
        ) -> (Vec<Plain>, Option<ProtocolError>, BytesMut) {
            let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            ends.push(bytes.len());
            ends.sort_unstable();
            let mut decoder = Decoder::default();
            let mut buf = BytesMut::new();
            let mut replies = Vec::new();
            let mut from = 0;
            for end in ends {
                buf.extend_from_slice(&bytes[from..end]);
                from = end;
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Decoded::Reply(reply)) => {
                            replies.push(plain(&reply.bytes, &reply.frame))
                        }
                        Ok(Decoded::Partial { need }) => {
                            assert!(need > buf.len(), "asks for more than it holds");
                            break;
                        }
                        Err(error) => return (replies, Some(error), buf),
                    }
                }
            }
            (replies, None, buf)
        }

        proptest! {
            #[test]
            fn replies_read_in_any_pieces_decode_as_sent(
                replies in proptest::collection::vec(reply(), 1..4),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
            ) {
                let (expected, wire): (Vec<Plain>, Vec<Vec<u8>>) = replies.into_iter().unzip();
                let (decoded, error, left) = decode_in_pieces(&wire.concat(), &cuts);
                prop_assert!(error.is_none(), "{error:?}");
                prop_assert_eq!(decoded, expected);
                prop_assert!(left.is_empty());
            }

            /// Bytes mostly of RESP's own characters, so that many get far:
            /// decoded or refused, never a panic, and every span decoded
            /// lies in its reply (`plain` would panic otherwise).
            #[test]
            fn any_bytes_decode_or_fail_without_panicking(
                bytes in proptest::collection::vec(
                    prop_oneof![
                        prop::sample::select(b"$*+-:\r\n0123456789".to_vec()),
                        any::<u8>(),
                    ],
                    0..64,
                ),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
            ) {
                let _ = decode_in_pieces(&bytes, &cuts);
            }
        }
    }
}
