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
use bytestring::ByteString;
use prost::Message;

use super::{Cursor, EncodedEvent, StorageError};
use crate::{
    domain::{Contact, Event, Initiator, Micros},
    pb,
};

/// Encodes an event for storage: the bytes `pb::Event::encode_to_vec`
/// gives for it (a unit test holds them equal; attributes in key order),
/// written straight from the domain event. Building a `pb::Event` first
/// copied every string and hashed every attribute into a `HashMap`: a
/// third of the append's storage preparation under callgrind.
pub fn encode(event: &Event) -> EncodedEvent {
    use prost::encoding::{btree_map, encode_key, encode_varint, message, string, WireType};

    let customer = event.customer_id.as_ref().map_or("", |c| c.as_str());
    let strings = event.event_id.as_str().len()
        + customer.len()
        + event.session_id.len()
        + event.channel.len()
        + event.reason.len()
        + event.event_type.len();
    let attributes: usize = event
        .attributes
        .iter()
        .map(|(k, v)| k.len() + v.len() + 6)
        .sum();
    let identities: usize = event
        .identities
        .iter()
        .map(|i| i.kind.len() + i.value.len() + 6)
        .sum();
    let mut buf = Vec::with_capacity(strings + attributes + identities + 40);

    // proto3: a field at its default value is left out, as prost does.
    let text = |tag: u32, value: &str, buf: &mut Vec<u8>| {
        if !value.is_empty() {
            encode_key(tag, WireType::LengthDelimited, buf);
            encode_varint(value.len() as u64, buf);
            buf.extend_from_slice(value.as_bytes());
        }
    };
    text(1, event.event_id.as_str(), &mut buf);
    text(2, customer, &mut buf);
    text(3, &event.session_id, &mut buf);
    text(4, &event.channel, &mut buf);
    text(5, &event.reason, &mut buf);
    text(6, &event.event_type, &mut buf);
    let initiator = initiator_to_pb(event.initiator) as i32;
    if initiator != 0 {
        prost::encoding::int32::encode(7, &initiator, &mut buf);
    }
    let (seconds, nanos) = event.occurred_at.to_parts();
    message::encode(8, &prost_types::Timestamp { seconds, nanos }, &mut buf);
    btree_map::encode(
        string::encode,
        string::encoded_len,
        string::encode,
        string::encoded_len,
        9,
        &event.attributes,
        &mut buf,
    );
    for identity in &event.identities {
        let field = |tag, value: &str| {
            if value.is_empty() {
                0
            } else {
                prost::encoding::key_len(tag)
                    + prost::encoding::encoded_len_varint(value.len() as u64)
                    + value.len()
            }
        };
        encode_key(10, WireType::LengthDelimited, &mut buf);
        encode_varint(
            (field(1, &identity.kind) + field(2, &identity.value)) as u64,
            &mut buf,
        );
        text(1, &identity.kind, &mut buf);
        text(2, &identity.value, &mut buf);
    }
    EncodedEvent(Bytes::from(buf))
}

/// Separates the fields of a contact index entry. Ids and taxonomy names
/// hold no control characters; the campaign id comes last, so whatever it
/// holds stays in it.
const SEP: char = '\u{1f}';

/// A contact index entry: `event_id SEP kind SEP channel SEP reason SEP
/// type SEP at SEP campaign_id`, kind `E` for an event, `R` for a
/// reservation. The event id comes first so the scripts can find it; the
/// instant (µs) is in the entry so a read needs no `WITHSCORES`, whose
/// number formatting was the costliest part of the context's contact read
/// in Redis 7.0.
///
/// Entries written before the instant was added have kind `e` or `r` and
/// no `at` field: their instant is their score.
pub fn pack_contact(contact: &Contact) -> String {
    let kind = if contact.reserved { "R" } else { "E" };
    [
        contact.event_id(),
        kind,
        contact.channel(),
        contact.reason(),
        contact.event_type(),
        &contact.at.0.to_string(),
        contact.campaign_id(),
    ]
    .join(&SEP.to_string())
}

/// Reads a contact index entry; `score` (its score in the index) is only
/// needed for an entry without its instant (`needs_score`). Works on the
/// bytes as Redis answers them, validating them once and cutting them at
/// the separators found in one pass; the contact's names stay in those
/// bytes (a slice of the reply: no copy), as a context reads up to a
/// hundred entries.
pub fn unpack_contact(packed: Bytes, score: Option<Micros>) -> Result<Contact, StorageError> {
    let corrupt = |what: &str, packed: &[u8]| {
        StorageError::Corrupt(format!(
            "contact entry {:?} {what}",
            String::from_utf8_lossy(packed)
        ))
    };
    // The first six separators: the campaign, last, may hold more.
    let (cuts, found) = first_separators(&packed);
    if found < 5 {
        return Err(corrupt("is incomplete", &packed));
    }
    let text = ByteString::try_from(packed)
        .map_err(|_| StorageError::Corrupt("a contact entry is not UTF-8".into()))?;
    // Separators are ASCII, so every cut is a char boundary.
    let range = |n: usize| {
        let start = if n == 0 { 0 } else { cuts[n - 1] + 1 };
        let end = if n < found { cuts[n] } else { text.len() };
        start..end
    };
    let field = |n: usize| text.get(range(n)).unwrap_or_default();
    let (reserved, timed) = match field(1) {
        "E" => (false, true),
        "R" => (true, true),
        "e" => (false, false),
        "r" => (true, false),
        _ => return Err(corrupt("has no kind", text.as_bytes())),
    };
    let (at, campaign_start) = if timed {
        if found < 6 {
            return Err(corrupt("is incomplete", text.as_bytes()));
        }
        let at = integer(field(5).as_bytes())
            .map(Micros)
            .ok_or_else(|| corrupt("has no instant", text.as_bytes()))?;
        (at, cuts[5] + 1)
    } else {
        (
            score.ok_or_else(|| corrupt("needs its score", text.as_bytes()))?,
            cuts[4] + 1,
        )
    };
    let ranges = [
        range(0),
        range(2),
        range(3),
        range(4),
        campaign_start..text.len(),
    ];
    Contact::in_text(at, reserved, text, ranges)
        .ok_or_else(|| StorageError::Corrupt("a contact entry is longer than 4 GiB".into()))
}

/// Where the first six separators of `packed` are, and how many there
/// are (at most six). A word at a time: an entry is ~100 bytes with its
/// separators a few bytes apart, where memchr's vector search paid its
/// set-up once per separator (~40 instructions each under callgrind).
fn first_separators(packed: &[u8]) -> ([usize; 6], usize) {
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    const SEPS: u64 = u64::from_ne_bytes([SEP as u8; 8]);
    let mut cuts = [0usize; 6];
    let mut found = 0;
    let mut chunks = packed.chunks_exact(8);
    let mut base = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // Zero bytes of `x` are the separators; the high bit of each byte
        // of `hits` says whether that byte of `x` is zero (exactly: no
        // carry crosses bytes, unlike the shorter `(x - 0x01..) & !x`).
        let x = u64::from_le_bytes(word) ^ SEPS;
        let mut hits = !(((x & LOW7) + LOW7) | x | LOW7);
        while hits != 0 {
            cuts[found] = base + (hits.trailing_zeros() / 8) as usize;
            found += 1;
            if found == cuts.len() {
                return (cuts, found);
            }
            hits &= hits - 1;
        }
        base += 8;
    }
    for (i, &b) in chunks.remainder().iter().enumerate() {
        if b == SEP as u8 {
            cuts[found] = base + i;
            found += 1;
            if found == cuts.len() {
                break;
            }
        }
    }
    (cuts, found)
}

/// A decimal integer as Redis writes counters and the store writes
/// instants (no `str` round trip: a context reads dozens of them).
pub fn integer(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(d - b'0');
    }
    Some(if negative { -value } else { value })
}

/// Whether an entry was written without its instant (before it was added
/// to the format): reading it needs its score.
pub fn needs_score(packed: &[u8]) -> bool {
    let mut fields = packed.splitn(3, |b| *b == SEP as u8);
    matches!(fields.nth(1), Some(b"e" | b"r"))
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

    /// What `encode` must give: the event as a `pb::Event`.
    fn through_pb(event: &Event) -> pb::Event {
        let (seconds, nanos) = event.occurred_at.to_parts();
        pb::Event {
            event_id: event.event_id.to_string(),
            customer_id: event
                .customer_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            session_id: event.session_id.clone(),
            channel: event.channel.clone(),
            reason: event.reason.clone(),
            r#type: event.event_type.clone(),
            initiator: initiator_to_pb(event.initiator) as i32,
            occurred_at: Some(prost_types::Timestamp { seconds, nanos }),
            attributes: event.attributes.clone().into_iter().collect(),
            identities: event
                .identities
                .iter()
                .map(|i| pb::Identity {
                    r#type: i.kind.clone(),
                    value: i.value.clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn encoding_is_prosts_encoding_of_the_event() {
        let plain = event("e1");
        let mut full = event(&"x".repeat(128));
        full.session_id = "s".repeat(200);
        full.initiator = Initiator::Company;
        full.occurred_at = Micros(1_763_800_000_000_000); // whole second: nanos 0
        full.attributes = [
            ("page", "/accounts"),
            ("empty", ""),
            ("", "no key"),
            ("long", &"v".repeat(300)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        full.identities = vec![
            crate::domain::Identity {
                kind: "email".into(),
                value: "a@b.c".into(),
            },
            crate::domain::Identity {
                kind: "cookie_id".into(),
                value: String::new(),
            },
        ];
        let mut anonymous = event("e2");
        anonymous.customer_id = None;
        anonymous.occurred_at = Micros(0);
        // Byte for byte: pb's maps are BTreeMaps (build.rs), so prost too
        // writes the attributes in key order.
        for e in [&plain, &full, &anonymous] {
            assert_eq!(encode(e).0, through_pb(e).encode_to_vec(), "{e:?}");
        }
    }

    #[test]
    fn separators_are_found_as_a_plain_search_finds_them() {
        let mut rng = fastrand::Rng::with_seed(7);
        for len in 0..80 {
            for _ in 0..50 {
                // Separators, bytes next to them in value (0x1e, 0x20, 0x9f)
                // and any other byte, so a search that confuses them fails.
                let bytes: Vec<u8> = (0..len)
                    .map(|_| match rng.u8(0..6) {
                        0 => SEP as u8,
                        1 => 0x1e,
                        2 => 0x20,
                        3 => 0x9f,
                        _ => rng.u8(..),
                    })
                    .collect();
                let expected: Vec<usize> = bytes
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b == SEP as u8)
                    .map(|(i, _)| i)
                    .take(6)
                    .collect();
                let (cuts, found) = first_separators(&bytes);
                assert_eq!(&cuts[..found], expected.as_slice(), "{bytes:?}");
            }
        }
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
    fn contacts_pack_and_unpack() {
        let contact = Contact::new(
            Micros(7),
            true,
            crate::domain::ContactNames {
                event_id: "e1",
                channel: "email",
                reason: "campaign_offer",
                event_type: "email_sent",
                campaign_id: "odd\u{1f}campaign",
            },
        );
        let packed = pack_contact(&contact);
        assert!(packed.starts_with("e1\u{1f}"));
        assert!(!needs_score(packed.as_bytes()));
        let bytes = Bytes::from(packed);
        assert_eq!(
            unpack_contact(bytes.clone(), None).expect("unpacks"),
            contact
        );
        assert_eq!(
            unpack_contact(bytes, Some(Micros(99))).expect("the entry's instant wins"),
            contact
        );
        let bad = |entry: &'static [u8]| unpack_contact(Bytes::from_static(entry), None).is_err();
        assert!(bad(b"e1"));
        assert!(bad(b"e1\x1fE\x1femail\x1fr\x1ft\x1fsoon\x1f"));
        assert!(bad(b"e1\x1fE\x1fem\xffail\x1fr\x1ft\x1f5\x1f"));
        assert!(bad(b"e1\x1fX\x1femail\x1fr\x1ft\x1f5\x1f"));
    }

    #[test]
    fn entries_without_their_instant_read_with_the_score() {
        let old = "e1\u{1f}e\u{1f}email\u{1f}campaign_offer\u{1f}email_sent\u{1f}odd\u{1f}campaign";
        assert!(needs_score(old.as_bytes()));
        assert!(unpack_contact(Bytes::from_static(old.as_bytes()), None).is_err());
        let read =
            unpack_contact(Bytes::from_static(old.as_bytes()), Some(Micros(5))).expect("unpacks");
        assert_eq!(read.at, Micros(5));
        assert_eq!(read.campaign_id(), "odd\u{1f}campaign");
        assert_eq!(read.channel(), "email");
        assert!(!read.reserved);
        let reserved = Bytes::from_static("e2\u{1f}r\u{1f}sms\u{1f}\u{1f}\u{1f}".as_bytes());
        assert!(
            unpack_contact(reserved, Some(Micros(5)))
                .expect("unpacks")
                .reserved
        );
    }

    #[test]
    fn round_trip_keeps_microseconds() {
        let encoded = encode(&event("e"));
        let decoded = decode(&encoded).expect("decodes");
        assert_eq!(occurred_at(&decoded), Micros(1_763_800_000_123_456));
        assert_eq!(decoded.occurred_at.map(|t| t.nanos), Some(123_456_000));
        assert_eq!(cursor_after(&encoded).expect("cursor").event_id, "e");
    }

    /// Contact entries of any names, and bytes that are not entries.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn name() -> impl Strategy<Value = String> {
            "[a-z0-9_é]{0,6}"
        }

        proptest! {
            #[test]
            fn contacts_unpack_as_packed(
                names in (name(), name(), name(), name()),
                // A campaign id may hold the separator (it comes last).
                campaign in "[a-z\u{1f}]{0,6}",
                at in -100_000_000_000_000_000i64..100_000_000_000_000_000,
                reserved in any::<bool>(),
            ) {
                let contact = Contact::new(
                    Micros(at),
                    reserved,
                    crate::domain::ContactNames {
                        event_id: &names.0,
                        channel: &names.1,
                        reason: &names.2,
                        event_type: &names.3,
                        campaign_id: &campaign,
                    },
                );
                let packed = Bytes::from(pack_contact(&contact));
                let read = unpack_contact(packed, None);
                prop_assert!(read.is_ok(), "{read:?}");
                let read = read.unwrap_or_else(|_| contact.clone());
                prop_assert_eq!(&read, &contact);
                prop_assert_eq!(read.campaign_id(), campaign.as_str());
                prop_assert_eq!(read.at, Micros(at));
            }

            /// Bytes mostly of separators, kinds and digits: unpacked or
            /// refused, never a panic.
            #[test]
            fn any_entry_unpacks_or_fails_without_panicking(
                bytes in proptest::collection::vec(
                    prop_oneof![
                        prop::sample::select(b"\x1fEeRr-0123456789".to_vec()),
                        any::<u8>(),
                    ],
                    0..40,
                ),
                score in proptest::option::of(any::<i64>()),
            ) {
                let _ = needs_score(&bytes);
                let _ = unpack_contact(Bytes::from(bytes), score.map(Micros));
            }

            /// `integer` reads what Rust's parser reads, within 18 digits.
            #[test]
            fn integers_read_as_rust_parses_them(text in "-?[0-9]{0,18}|[-+ 0-9a]{0,6}") {
                let expected = text.parse::<i64>().ok().filter(|_| !text.starts_with('+'));
                prop_assert_eq!(integer(text.as_bytes()), expected);
            }
        }
    }
}
