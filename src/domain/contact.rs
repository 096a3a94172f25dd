//! A contact: one company-initiated event (or a reservation of one) as the
//! contact policy counts it, with the names it is counted by.
//!
//! The names live in one shared UTF-8 buffer, each at its range. Read from
//! Redis, that buffer is a zero-copy slice of the reply, so a contact read
//! costs no allocation and no copy: a check and a context each read ~20 of
//! them, and building five short strings per contact was about half of
//! reading it (callgrind).

use std::{fmt, ops::Range};

use bytestring::ByteString;

use super::Micros;

/// One past (or reserved) contact.
#[derive(Clone)]
pub struct Contact {
    pub at: Micros,
    /// A reservation made by a reserve-mode check, not yet an event.
    pub reserved: bool,
    text: ByteString,
    /// Where each name lies in `text`, in `Names` order.
    ranges: [(u32, u32); 5],
}

/// A contact's names, to build one from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Names<'a> {
    pub event_id: &'a str,
    pub channel: &'a str,
    pub reason: &'a str,
    pub event_type: &'a str,
    /// Empty when the contact was about no campaign.
    pub campaign_id: &'a str,
}

const EVENT_ID: usize = 0;
const CHANNEL: usize = 1;
const REASON: usize = 2;
const EVENT_TYPE: usize = 3;
const CAMPAIGN_ID: usize = 4;

impl Contact {
    /// A contact with these names (copied into a buffer of its own).
    pub fn new(at: Micros, reserved: bool, names: Names<'_>) -> Self {
        let parts = [
            names.event_id,
            names.channel,
            names.reason,
            names.event_type,
            names.campaign_id,
        ];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ranges = [(0u32, 0u32); 5];
        for (slot, part) in ranges.iter_mut().zip(parts) {
            // Requests are capped far below 4 GiB; a name that would end
            // past it is left out (empty) rather than the contact.
            let (Ok(start), Ok(end)) = (
                u32::try_from(text.len()),
                u32::try_from(text.len() + part.len()),
            ) else {
                continue;
            };
            text.push_str(part);
            *slot = (start, end);
        }
        Self {
            at,
            reserved,
            text: ByteString::from(text),
            ranges,
        }
    }

    /// A contact whose names already lie in `text` at these ranges (event
    /// id, channel, reason, type, campaign id), e.g. a stored entry: the
    /// names are not copied. `None` when a range is out of `text`, not at
    /// character boundaries, or past 4 GiB.
    pub fn in_text(
        at: Micros,
        reserved: bool,
        text: ByteString,
        ranges: [Range<usize>; 5],
    ) -> Option<Self> {
        let mut kept = [(0u32, 0u32); 5];
        for (slot, range) in kept.iter_mut().zip(ranges) {
            text.get(range.clone())?;
            *slot = (
                u32::try_from(range.start).ok()?,
                u32::try_from(range.end).ok()?,
            );
        }
        Some(Self {
            at,
            reserved,
            text,
            ranges: kept,
        })
    }

    /// The same contact with its names in a buffer of its own: one read
    /// from Redis shares its reply's buffer, which a contact kept for long
    /// would keep alive whole.
    pub fn detached(&self) -> Self {
        Self {
            text: ByteString::from(String::from(&*self.text)),
            ..self.clone()
        }
    }

    /// The length of the text the names lie in, in bytes.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    fn name(&self, which: usize) -> &str {
        let (start, end) = self.ranges[which];
        // Checked when the contact was made (and a u32 fits a usize on
        // every target this builds for).
        let range = usize::try_from(start).unwrap_or(usize::MAX)..usize::try_from(end).unwrap_or(0);
        self.text.get(range).unwrap_or_default()
    }

    pub fn event_id(&self) -> &str {
        self.name(EVENT_ID)
    }

    pub fn channel(&self) -> &str {
        self.name(CHANNEL)
    }

    pub fn reason(&self) -> &str {
        self.name(REASON)
    }

    pub fn event_type(&self) -> &str {
        self.name(EVENT_TYPE)
    }

    /// Empty when the contact was about no campaign.
    pub fn campaign_id(&self) -> &str {
        self.name(CAMPAIGN_ID)
    }
}

/// Equal when they say the same, however their names are laid out.
impl PartialEq for Contact {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
            && self.reserved == other.reserved
            && (0..5).all(|i| self.name(i) == other.name(i))
    }
}

impl Eq for Contact {}

impl fmt::Debug for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contact")
            .field("at", &self.at)
            .field("event_id", &self.event_id())
            .field("channel", &self.channel())
            .field("reason", &self.reason())
            .field("event_type", &self.event_type())
            .field("campaign_id", &self.campaign_id())
            .field("reserved", &self.reserved)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names<'static> {
        Names {
            event_id: "e1",
            channel: "email",
            reason: "marketing_campaign",
            event_type: "campaign_email",
            campaign_id: "c42",
        }
    }

    #[test]
    fn a_new_contact_answers_its_names() {
        let c = Contact::new(Micros(5), true, names());
        assert_eq!(c.event_id(), "e1");
        assert_eq!(c.channel(), "email");
        assert_eq!(c.reason(), "marketing_campaign");
        assert_eq!(c.event_type(), "campaign_email");
        assert_eq!(c.campaign_id(), "c42");
        assert!(c.reserved);
        assert_eq!(c.at, Micros(5));
    }

    #[test]
    fn names_read_in_place_equal_names_copied() {
        let text = ByteString::from("e1|X|email|marketing_campaign|campaign_email|c42");
        let read = Contact::in_text(Micros(5), true, text, [0..2, 5..10, 11..29, 30..44, 45..48])
            .expect("ranges in the text");
        assert_eq!(read, Contact::new(Micros(5), true, names()));
        assert_ne!(read, Contact::new(Micros(6), true, names()));
    }

    #[test]
    fn ranges_out_of_the_text_or_inside_a_character_are_refused() {
        let text = ByteString::from("é-abc");
        let ok = [0..2, 3..4, 4..5, 5..5, 5..5];
        assert!(Contact::in_text(Micros(0), false, text.clone(), ok).is_some());
        let inside_e = [0..1, 3..4, 4..5, 5..5, 5..5];
        assert!(Contact::in_text(Micros(0), false, text.clone(), inside_e).is_none());
        let past_end = [0..2, 3..4, 4..9, 5..5, 5..5];
        assert!(Contact::in_text(Micros(0), false, text.clone(), past_end).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = [0..2, 4..3, 4..5, 5..5, 5..5];
        assert!(Contact::in_text(Micros(0), false, text, reversed).is_none());
    }

    #[test]
    fn long_names_are_kept_whole() {
        // Past what 16-bit ranges held: a name of 70,000 bytes.
        let long = "c".repeat(70_000);
        let c = Contact::new(
            Micros(1),
            false,
            Names {
                campaign_id: &long,
                ..names()
            },
        );
        assert_eq!(c.channel(), "email");
        assert_eq!(c.campaign_id(), long);
        let text = ByteString::from(format!("e1|email|{long}"));
        let read = Contact::in_text(Micros(1), false, text, [0..2, 3..8, 0..0, 0..0, 9..70_009])
            .expect("ranges past 64 KiB");
        assert_eq!(read.campaign_id().len(), 70_000);
    }
}
