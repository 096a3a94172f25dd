//! Reading the Redis store's hashes and indexes back into domain values:
//! the summary hash, the contact index, a profile's identities and merges.
//! Each takes field/value pairs as the replies hold them (bytes), so the
//! lean connection's frames are read without an intermediate `String` map.

use bytes::Bytes;

use super::{
    codec::{self, integer},
    redis_conn::Strings,
    EncodedEvent, StorageError,
};
use crate::domain::{
    ChannelActivity, Contact, CustomerId, CustomerSummary, Identity, LinkedIdentity, MergeRecord,
    Micros,
};

/// The text of a reply; stored fields are always UTF-8.
pub(super) fn text(bytes: &[u8]) -> Result<&str, StorageError> {
    std::str::from_utf8(bytes)
        .map_err(|_| StorageError::Corrupt("a stored field is not UTF-8".into()))
}

fn micros(bytes: &[u8]) -> Option<Micros> {
    integer(bytes).map(Micros)
}

/// A sorted-set score as whole microseconds: scores are below 2^53, so
/// exact in the double Redis keeps, and Redis prints them without a fraction.
pub(super) fn score_micros(bytes: &[u8]) -> Result<Micros, StorageError> {
    let text = text(bytes)?;
    text.parse::<i64>()
        .or_else(|_| text.parse::<f64>().map(|f| f as i64))
        .map(Micros)
        .map_err(|_| StorageError::Corrupt(format!("score {text:?} is not a number")))
}

/// The summary hash, with the count of events held, as figures and the
/// latest customer and company events.
pub(super) struct SummaryHash {
    pub summary: CustomerSummary,
    pub last_customer_interaction: Option<EncodedEvent>,
    pub last_company_contact: Option<EncodedEvent>,
}

impl SummaryHash {
    /// Fields: `first`, `last` (µs), `lc`/`lk` (encoded events), and per
    /// channel `c:<channel>`, `k:<channel>` (counts), `t:<channel>` (µs).
    pub fn read(fields: &Strings, held: u64) -> Result<Self, StorageError> {
        let mut read = Self {
            summary: CustomerSummary {
                total_events: held,
                ..CustomerSummary::default()
            },
            last_customer_interaction: None,
            last_company_contact: None,
        };
        // Channels as met (each three times: c:, k:, t:), then sorted into
        // the summary's map once: a few linear probes beat a map lookup.
        let mut channels: Vec<(&[u8], ChannelActivity)> = Vec::new();
        for (i, field, value) in fields.pairs()? {
            match field {
                b"first" => read.summary.first_seen = micros(value),
                b"last" => read.summary.last_seen = micros(value),
                b"lc" => read.last_customer_interaction = Some(EncodedEvent(fields.slice(i + 1))),
                b"lk" => read.last_company_contact = Some(EncodedEvent(fields.slice(i + 1))),
                [kind @ (b'c' | b'k' | b't'), b':', channel @ ..] => {
                    let at = match channels.iter().position(|(c, _)| *c == channel) {
                        Some(at) => at,
                        None => {
                            channels.push((channel, ChannelActivity::default()));
                            channels.len() - 1
                        }
                    };
                    let activity = &mut channels[at].1;
                    let count = || integer(value).map_or(0, |n| n.max(0) as u64);
                    match kind {
                        b'c' => activity.customer_initiated = count(),
                        b'k' => activity.company_initiated = count(),
                        _ => activity.last_at = micros(value),
                    }
                }
                _ => {}
            }
        }
        read.summary.channels = channels
            .into_iter()
            .filter_map(|(name, activity)| Some((text(name).ok()?.to_string(), activity)))
            .collect();
        Ok(read)
    }
}

/// Contact index entries read without their scores, in the order given;
/// `None` when one was written without its instant, so the read must be
/// made again with scores (`scored_contacts`).
pub(super) fn timed_contacts(members: &Strings) -> Result<Option<Vec<Contact>>, StorageError> {
    let mut contacts = Vec::with_capacity(members.len());
    for i in 0..members.len() {
        match codec::unpack_contact(members.slice(i), None) {
            Ok(contact) => contacts.push(contact),
            Err(_) if codec::needs_score(members.get(i)) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(contacts))
}

/// Contact index entries with their scores (`WITHSCORES`), in the order given.
pub(super) fn scored_contacts(entries: Vec<(Bytes, Bytes)>) -> Result<Vec<Contact>, StorageError> {
    entries
        .into_iter()
        .map(|(packed, score)| codec::unpack_contact(packed, Some(score_micros(&score)?)))
        .collect()
}

/// A profile's identities hash: `type US value` -> `first seen US channel`,
/// sorted by identity. Entries that do not read are left out.
pub(super) fn identities<'a>(
    entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<LinkedIdentity> {
    let mut linked: Vec<LinkedIdentity> = entries
        .into_iter()
        .filter_map(|(packed, seen)| {
            let (kind, value) = std::str::from_utf8(packed).ok()?.split_once('\u{1f}')?;
            let seen = std::str::from_utf8(seen).ok()?;
            let (at, channel) = seen.split_once('\u{1f}').unwrap_or((seen, ""));
            Some(LinkedIdentity {
                identity: Identity {
                    kind: kind.to_string(),
                    value: value.to_string(),
                },
                first_seen: Micros(at.parse().ok()?),
                first_channel: channel.to_string(),
            })
        })
        .collect();
    linked.sort_by(|a, b| a.identity.cmp(&b.identity));
    linked
}

/// A profile's merges hash: absorbed profile -> when, oldest first.
pub(super) fn merges<'a>(
    entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<MergeRecord> {
    let mut records: Vec<MergeRecord> = entries
        .into_iter()
        .filter_map(|(from, at)| {
            Some(MergeRecord {
                from: CustomerId::from_trusted(std::str::from_utf8(from).ok()?),
                at: micros(at)?,
            })
        })
        .collect();
    records.sort_by_key(|m| m.at);
    records
}

/// Borrows pairs of owned bytes as slices.
pub(super) fn as_slices(pairs: &[(Bytes, Bytes)]) -> impl Iterator<Item = (&[u8], &[u8])> {
    pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(k: &str, v: &str) -> (Bytes, Bytes) {
        (Bytes::from(k.to_string()), Bytes::from(v.to_string()))
    }

    #[test]
    fn summary_reads_every_field() {
        let read = SummaryHash::read(
            &Strings::of(&[
                "first",
                "10",
                "last",
                "30",
                "c:web",
                "2",
                "k:web",
                "1",
                "t:web",
                "30",
                "k:email",
                "4",
                "lc",
                "event",
                "tz",
                "Europe/Paris",
            ]),
            7,
        )
        .expect("reads");
        let s = &read.summary;
        assert_eq!(
            (s.first_seen, s.last_seen),
            (Some(Micros(10)), Some(Micros(30)))
        );
        assert_eq!(s.total_events, 7);
        assert_eq!(s.channels["web"].customer_initiated, 2);
        assert_eq!(s.channels["web"].company_initiated, 1);
        assert_eq!(s.channels["web"].last_at, Some(Micros(30)));
        assert_eq!(s.channels["email"].company_initiated, 4);
        assert_eq!(s.channels.len(), 2);
        assert_eq!(
            read.last_customer_interaction,
            Some(EncodedEvent(Bytes::from_static(b"event")))
        );
        assert_eq!(read.last_company_contact, None);
    }

    #[test]
    fn a_field_without_its_value_is_corrupt() {
        assert!(SummaryHash::read(&Strings::of(&["first", "10", "last"]), 0).is_err());
    }

    #[test]
    fn integers_read_from_bytes() {
        assert_eq!(integer(b"1795681326665022"), Some(1_795_681_326_665_022));
        assert_eq!(integer(b"-5"), Some(-5));
        for bad in [&b""[..], b"-", b"12a", b" 1", b"1234567890123456789"] {
            assert_eq!(integer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn scores_read_as_integers_or_doubles() {
        assert_eq!(
            score_micros(b"1795681326665022").ok(),
            Some(Micros(1_795_681_326_665_022))
        );
        assert_eq!(score_micros(b"1.5e3").ok(), Some(Micros(1_500)));
        assert!(score_micros(b"soon").is_err());
    }

    #[test]
    fn identities_and_merges_sort_and_skip_what_does_not_read() {
        let idents = [
            pair("email\u{1f}a@x", "5\u{1f}web"),
            pair("cookie_id\u{1f}k", "3"),
            pair("broken", "1"),
        ];
        let read = identities(as_slices(&idents));
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].identity.kind, "cookie_id");
        assert_eq!(read[0].first_channel, "");
        assert_eq!(read[1].first_channel, "web");
        let merged = [pair("p2", "9"), pair("p1", "4"), pair("p3", "x")];
        let read = merges(as_slices(&merged));
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].at, Micros(4));
    }
}
