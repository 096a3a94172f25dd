//! A context's events in one buffer, each already framed as a protobuf
//! length-delimited field 1 (`0x0a varint(len) event`): the context
//! response's `repeated Event events = 1` is the run spliced whole.
//!
//! Why not one `Bytes` per event: under callgrind, each event cost ~200
//! instructions on its way from the Redis reply to the response (a slice
//! of the reply with its reference count, a place in a vector, its key and
//! length encoded, its copy, its drop), ~10,000 per 50-event context; the
//! context cache then cut its views event by event again. A run is one
//! copy out of the reply, and a view of its first events is one slice.

use std::sync::Arc;

use bytes::Bytes;
use prost::encoding::{decode_varint, encoded_len_varint};

use super::EncodedEvent;
use crate::wire::fields;

/// The response's field the events go in (its key, length-delimited, is
/// one byte: `get` skips it so).
const FIELD: u32 = 1;

/// Encoded events, framed, newest first as a context lists them. Its
/// buffer is always its own (every constructor copies the events into
/// it): a context cache that keeps a run never keeps a Redis read buffer
/// alive through it.
#[derive(Clone, Default)]
pub struct FramedEvents {
    framed: Bytes,
    /// Where each framed event ends in `framed`: the first `count` are
    /// this run's (a view of the first events shares a longer run's).
    ends: Arc<[usize]>,
    count: usize,
}

impl PartialEq for FramedEvents {
    fn eq(&self, other: &Self) -> bool {
        self.framed == other.framed && self.ends() == other.ends()
    }
}

impl Eq for FramedEvents {}

impl std::fmt::Debug for FramedEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FramedEvents({} events, {} bytes)",
            self.count,
            self.framed.len()
        )
    }
}

impl FramedEvents {
    /// The events, copied into one buffer of their own.
    pub fn copied<'a>(events: impl IntoIterator<Item = &'a [u8]> + Clone) -> Self {
        let (count, size) = events.clone().into_iter().fold((0, 0), |(n, size), e| {
            (
                n + 1,
                size + 1 + encoded_len_varint(e.len() as u64) + e.len(),
            )
        });
        // A `Vec` sized up front, not a `BytesMut`: each of its `put_*`
        // checks and may grow the buffer, ~200 instructions an event here.
        let mut framed = Vec::with_capacity(size);
        let mut ends = Vec::with_capacity(count);
        for event in events {
            fields::embedded(FIELD, event, &mut framed);
            ends.push(framed.len());
        }
        Self {
            framed: framed.into(),
            ends: ends.into(),
            count,
        }
    }

    fn ends(&self) -> &[usize] {
        &self.ends[..self.count]
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The run as a response carries it: keys and lengths included.
    pub fn framed(&self) -> &Bytes {
        &self.framed
    }

    /// The first `n` events (all if fewer), sharing this run's buffer and
    /// offsets: no allocation.
    pub fn first(&self, n: usize) -> Self {
        if n >= self.count {
            return self.clone();
        }
        let end = n.checked_sub(1).map_or(0, |last| self.ends[last]);
        Self {
            framed: self.framed.slice(..end),
            ends: self.ends.clone(),
            count: n,
        }
    }

    /// The `i`-th event, without its frame (a slice of the run).
    pub fn get(&self, i: usize) -> Option<EncodedEvent> {
        let end = *self.ends().get(i)?;
        let start = i.checked_sub(1).map_or(0, |before| self.ends[before]);
        // The frame was written by `copied`: a key, then the length.
        let mut frame = self.framed.get(start + 1..end)?;
        let len = decode_varint(&mut frame).ok()? as usize;
        Some(EncodedEvent(self.framed.slice(end - len..end)))
    }

    /// The events, without their frames.
    pub fn iter(&self) -> impl Iterator<Item = EncodedEvent> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl FromIterator<EncodedEvent> for FramedEvents {
    fn from_iter<I: IntoIterator<Item = EncodedEvent>>(events: I) -> Self {
        let events: Vec<EncodedEvent> = events.into_iter().collect();
        Self::from(&events[..])
    }
}

impl From<&[EncodedEvent]> for FramedEvents {
    fn from(events: &[EncodedEvent]) -> Self {
        Self::copied(events.iter().map(|e| &e.0[..]))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Events of sizes that take one- and two-byte lengths.
    fn events() -> Vec<EncodedEvent> {
        [0usize, 1, 127, 128, 300]
            .iter()
            .enumerate()
            .map(|(i, &size)| EncodedEvent(Bytes::from(vec![i as u8; size])))
            .collect()
    }

    #[test]
    fn the_run_is_the_repeated_field_prost_encodes() {
        let events = events();
        let run = FramedEvents::from(&events[..]);
        let mut expected = Vec::new();
        for event in &events {
            prost::encoding::bytes::encode(1, &event.0, &mut expected);
        }
        assert_eq!(&run.framed()[..], &expected[..]);
        assert_eq!(run.len(), events.len());
        assert_eq!(run.iter().collect::<Vec<_>>(), events);
        // And clients read it as such.
        #[derive(Clone, PartialEq, Message)]
        struct Repeated {
            #[prost(bytes = "bytes", repeated, tag = "1")]
            events: Vec<Bytes>,
        }
        let read = Repeated::decode(run.framed().clone()).expect("decodes");
        assert_eq!(
            read.events,
            events.iter().map(|e| e.0.clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_first_events_share_the_buffer() {
        let events = events();
        let run = FramedEvents::from(&events[..]);
        for n in 0..=events.len() + 1 {
            let first = run.first(n);
            let kept = n.min(events.len());
            assert_eq!(first.iter().collect::<Vec<_>>(), events[..kept].to_vec());
            assert_eq!(first, FramedEvents::from(&events[..kept]), "first {n}");
            if kept > 0 {
                assert_eq!(first.framed().as_ptr(), run.framed().as_ptr(), "no copy");
            }
            assert!(Arc::ptr_eq(&first.ends, &run.ends), "offsets shared");
        }
        assert!(run.first(0).is_empty());
        assert_eq!(run.get(events.len()), None);
        assert!(FramedEvents::default().framed().is_empty());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::{pb, wire};

        /// Events of up to ~20 KiB: lengths of one to three varint bytes.
        fn event() -> impl Strategy<Value = pb::Event> {
            ("[a-z0-9]{1,8}", 0..20_000usize).prop_map(|(id, size)| pb::Event {
                event_id: id,
                attributes: [("a".to_string(), "x".repeat(size))].into(),
                ..Default::default()
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// A response of a run (copied in pieces) and events on their
            /// own: its length as announced, read by clients as the run's
            /// events, then the others.
            #[test]
            fn a_run_in_a_response_reads_as_its_events(
                framed in proptest::collection::vec(event(), 0..5),
                alone in proptest::collection::vec(event(), 0..2),
                shown in 0..6usize,
            ) {
                let encoded: Vec<EncodedEvent> = framed
                    .iter()
                    .map(|e| EncodedEvent(e.encode_to_vec().into()))
                    .collect();
                let run = FramedEvents::from(&encoded[..]).first(shown);
                let response = wire::GetJourneyContextResponse {
                    events_encoded: run.framed().clone(),
                    events: alone
                        .iter()
                        .map(|e| wire::WireEvent(e.encode_to_vec().into()))
                        .collect(),
                    ..Default::default()
                };
                let bytes = response.encode_to_vec();
                prop_assert_eq!(bytes.len(), response.encoded_len());
                let read = pb::GetJourneyContextResponse::decode(bytes.as_slice());
                let mut expected = framed[..shown.min(framed.len())].to_vec();
                expected.extend(alone);
                prop_assert_eq!(read.map(|r| r.events).ok(), Some(expected));
                prop_assert_eq!(run.iter().collect::<Vec<_>>(), encoded[..run.len()].to_vec());
            }
        }
    }
}
