//! What the journey state machine needs to know about one event: its id,
//! instant, names, channel class, initiator and attributes. Built once per
//! appended event and shared by every journey definition.

use std::{borrow::Cow, collections::BTreeMap, fmt};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::domain::{ChannelClass, Event, Initiator, Micros, Taxonomy};

/// The facts of one event, as every journey sees them. Borrowed from the
/// stored event on the append path (copying its names and attributes was
/// ~2,000 instructions an append); tests build their own.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFacts<'a> {
    pub event_id: Cow<'a, str>,
    pub at: Micros,
    pub event_type: Cow<'a, str>,
    pub reason: Cow<'a, str>,
    pub channel: Cow<'a, str>,
    /// `None` for a channel outside the taxonomy (lenient mode): such a
    /// channel is neither online nor offline.
    pub channel_class: Option<ChannelClass>,
    pub initiator: Initiator,
    pub attributes: Cow<'a, BTreeMap<String, String>>,
}

impl<'a> EventFacts<'a> {
    /// The facts of a stored event; the channel class comes from `taxonomy`.
    pub fn from_event(event: &'a Event, taxonomy: &Taxonomy) -> Self {
        Self {
            event_id: Cow::Borrowed(event.event_id.as_str()),
            at: event.occurred_at,
            event_type: Cow::Borrowed(&event.event_type),
            reason: Cow::Borrowed(&event.reason),
            channel: Cow::Borrowed(&event.channel),
            channel_class: taxonomy.channel_class(&event.channel),
            initiator: event.initiator,
            attributes: Cow::Borrowed(&event.attributes),
        }
    }

    pub fn is_offline(&self) -> bool {
        self.channel_class == Some(ChannelClass::Offline)
    }

    pub fn is_online(&self) -> bool {
        self.channel_class == Some(ChannelClass::Online)
    }

    /// The kind of interaction this event is, as the stats count it.
    pub fn interaction(&self) -> Interaction {
        Interaction {
            channel: CompactString::from(&*self.channel),
            reason: CompactString::from(&*self.reason),
            event_type: CompactString::from(&*self.event_type),
        }
    }
}

/// A kind of interaction: channel, reason and type, without the instant or
/// the attributes. The unit of the "what did they do before" figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Interaction {
    // Inline short strings: every append copies the customer's latest
    // interactions, and most taxonomy names fit in 24 bytes (longer ones,
    // e.g. "personal_data_verification", go to the heap).
    pub channel: CompactString,
    pub reason: CompactString,
    #[serde(rename = "type")]
    pub event_type: CompactString,
}

impl fmt::Display for Interaction {
    /// `channel/reason/type`, the form stats counters are keyed by.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.channel, self.reason, self.event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{event::RawEvent, EventLimits};

    #[test]
    fn facts_carry_the_channel_class_from_the_taxonomy() {
        let taxonomy = Taxonomy::builtin();
        let at = Micros(1_763_800_000_000_000);
        let raw = RawEvent {
            event_id: "e1".into(),
            customer_id: "c1".into(),
            channel: "call_center".into(),
            reason: "complaint".into(),
            event_type: "call".into(),
            occurred_at: Some(at),
            ..RawEvent::default()
        };
        let (event, _) = raw
            .validate(&taxonomy, &EventLimits::default(), at)
            .expect("valid event");
        let facts = EventFacts::from_event(&event, &taxonomy);
        // Borrowed from the event, every name unchanged.
        for (fact, of_event) in [
            (&facts.event_id, event.event_id.as_str()),
            (&facts.channel, event.channel.as_str()),
            (&facts.reason, event.reason.as_str()),
            (&facts.event_type, event.event_type.as_str()),
        ] {
            assert!(
                matches!(fact, Cow::Borrowed(name) if *name == of_event),
                "{fact:?}"
            );
        }
        assert!(matches!(facts.attributes, Cow::Borrowed(a) if *a == event.attributes));
        assert!(facts.is_offline());
        assert_eq!(facts.initiator, Initiator::Customer);
        assert_eq!(
            facts.interaction().to_string(),
            "call_center/complaint/call"
        );
    }
}
