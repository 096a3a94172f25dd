//! One profile's timeline in the memory store: events in the order a Redis
//! sorted set keeps them, the summary, the contact index and identities,
//! kept with the same rules as the Redis scripts.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ops::Bound,
    sync::Arc,
};

use bytes::Bytes;

use super::{
    codec, AppendOutcome, ContactHistory, ContextSnapshot, EncodedEvent, FramedEvents, Retention,
    StorageError, TimelinePage, TimelineQuery,
};
use crate::domain::{
    journey::{JourneyStates, RecentInteraction},
    Contact, CustomerId, CustomerSummary, Event, Identity, Initiator, LinkedIdentity, MergeRecord,
    Micros,
};

/// Sort key of a timeline entry: what a Redis sorted set orders by.
type Key = (Micros, Bytes);

#[derive(Debug)]
struct Meta {
    event_id: String,
    channel: String,
    initiator: Initiator,
}

#[derive(Debug, Default)]
pub(super) struct Timeline {
    entries: BTreeMap<Key, Meta>,
    ids: HashSet<String>,
    summary: CustomerSummary,
    last_customer: Option<(Micros, Bytes)>,
    last_company: Option<(Micros, Bytes)>,
    /// The contact index, by event (or reservation) id.
    contacts: HashMap<String, Contact>,
    /// How many entries of `contacts` are reservations (no event yet):
    /// the store's cap counts them beside the events.
    reservations: usize,
    pub(super) contact_version: u64,
    /// The latest `timezone` attribute, with the instant of its event.
    timezone: Option<(Micros, String)>,
    /// Identities recorded on the profile: first seen, first channel.
    idents: BTreeMap<Identity, (Micros, String)>,
    merges: Vec<MergeRecord>,
    /// The customer's state in each journey, and their latest interactions
    /// (shared by the journeys, see `domain::journey::tracking`).
    pub(super) journeys: JourneyStates,
    pub(super) journey_recent: Vec<RecentInteraction>,
    /// The customer is forgotten after this instant without a write.
    pub(super) expires_at: Micros,
}

impl Timeline {
    pub(super) fn store(&mut self, event: &Event) -> AppendOutcome {
        if !self.ids.insert(event.event_id.to_string()) {
            return AppendOutcome::Duplicate;
        }
        let encoded = codec::encode(event).0;
        let at = event.occurred_at;
        let last = match event.initiator {
            Initiator::Customer => &mut self.last_customer,
            Initiator::Company => &mut self.last_company,
        };
        if last.as_ref().is_none_or(|(t, _)| at > *t) {
            *last = Some((at, encoded.clone()));
        }
        self.entries.insert(
            (at, encoded),
            Meta {
                event_id: event.event_id.to_string(),
                channel: event.channel.clone(),
                initiator: event.initiator,
            },
        );
        self.summary.record(event);
        if let Some(contact) = event.as_contact() {
            // A reservation with this id becomes the contact itself.
            let replaced = self
                .contacts
                .insert(contact.event_id().to_string(), contact);
            if replaced.is_some_and(|old| old.reserved) {
                self.reservations -= 1;
            }
            self.contact_version += 1;
        }
        if let Some(tz) = event.timezone() {
            if self.timezone.as_ref().is_none_or(|(t, _)| at > *t) {
                self.timezone = Some((at, tz.to_string()));
            }
        }
        for identity in event.all_identities() {
            self.note_identity(identity, at, &event.channel);
        }
        AppendOutcome::Stored
    }

    /// Records where an identity was first seen: the earliest sighting
    /// wins, and at the same instant an event's channel beats a bare link.
    fn note_identity(&mut self, identity: Identity, at: Micros, channel: &str) {
        let seen = self
            .idents
            .entry(identity)
            .or_insert((at, channel.to_string()));
        if at < seen.0 || (at == seen.0 && seen.1.is_empty()) {
            *seen = (at, channel.to_string());
        }
    }

    /// Records identities linked to the profile without an event.
    pub(super) fn record_identities(&mut self, identities: &[Identity], at: Micros) {
        for identity in identities {
            self.note_identity(identity.clone(), at, "");
        }
    }

    pub(super) fn forget_identity(&mut self, identity: &Identity) -> bool {
        self.idents.remove(identity).is_some()
    }

    pub(super) fn identities(&self) -> Vec<LinkedIdentity> {
        self.idents
            .iter()
            .map(|(identity, (at, channel))| LinkedIdentity {
                identity: identity.clone(),
                first_seen: *at,
                first_channel: channel.clone(),
            })
            .collect()
    }

    pub(super) fn identity_set(&self) -> impl Iterator<Item = &Identity> {
        self.idents.keys()
    }

    /// Takes in everything of a profile merged into this one: events not
    /// held yet (by id), contacts, identities (the earliest sighting wins),
    /// the time zone and the merge history.
    pub(super) fn absorb(&mut self, other: Timeline, record: MergeRecord) {
        for ((at, bytes), meta) in other.entries {
            if !self.ids.insert(meta.event_id.clone()) {
                continue;
            }
            let last = match meta.initiator {
                Initiator::Customer => &mut self.last_customer,
                Initiator::Company => &mut self.last_company,
            };
            if last.as_ref().is_none_or(|(t, _)| at > *t) {
                *last = Some((at, bytes.clone()));
            }
            self.summary.record_parts(&meta.channel, meta.initiator, at);
            self.entries.insert((at, bytes), meta);
        }
        if let Some(first) = other.summary.first_seen {
            self.summary.first_seen = Some(self.summary.first_seen.map_or(first, |s| s.min(first)));
        }
        // As the Redis merge does: a contact whose id the survivor holds is
        // left out, unless it is the event that replaces its reservation.
        for (id, contact) in other.contacts {
            match self.contacts.entry(id) {
                std::collections::hash_map::Entry::Vacant(entry) => {
                    self.reservations += usize::from(contact.reserved);
                    entry.insert(contact);
                }
                std::collections::hash_map::Entry::Occupied(mut held)
                    if held.get().reserved && !contact.reserved =>
                {
                    self.reservations -= 1;
                    held.insert(contact);
                }
                std::collections::hash_map::Entry::Occupied(_) => {}
            }
        }
        self.contact_version += 1;
        if let Some((at, tz)) = other.timezone {
            if self.timezone.as_ref().is_none_or(|(t, _)| at > *t) {
                self.timezone = Some((at, tz));
            }
        }
        for (identity, (at, channel)) in other.idents {
            self.note_identity(identity, at, &channel);
        }
        self.merges.extend(other.merges);
        self.merges.push(record);
        // In the order they happened, as Redis answers them.
        self.merges.sort_by_key(|m| m.at);
        self.keep_until(other.expires_at);
    }

    /// How many events are held.
    pub(super) fn events(&self) -> usize {
        self.entries.len()
    }

    /// The profiles whose data this one holds (merged into it, directly
    /// or through a profile merged into it).
    pub(super) fn merged_ids(&self) -> impl Iterator<Item = &CustomerId> {
        self.merges.iter().map(|m| &m.from)
    }

    /// Keeps the customer at least until `at` (writes push expiry later).
    pub(super) fn keep_until(&mut self, at: Micros) {
        self.expires_at = self.expires_at.max(at);
    }

    /// What the store's cap counts of this profile: its events and its
    /// reservations.
    pub(super) fn held(&self) -> usize {
        self.entries.len() + self.reservations
    }

    /// Records a reservation (a contact whose event is not in yet).
    pub(super) fn reserve(&mut self, contact: Contact) {
        let replaced = self
            .contacts
            .insert(contact.event_id().to_string(), contact);
        if replaced.is_none_or(|old| !old.reserved) {
            self.reservations += 1;
        }
        self.contact_version += 1;
    }

    /// Whether an event or a contact (a reservation) has this id.
    pub(super) fn holds_id(&self, id: &str) -> bool {
        self.ids.contains(id) || self.contacts.contains_key(id)
    }

    pub(super) fn has_events(&self) -> bool {
        self.summary.first_seen.is_some()
    }

    pub(super) fn contact_history(&self, since: Micros) -> ContactHistory {
        let mut contacts: Vec<Contact> = self
            .contacts
            .values()
            .filter(|c| c.at >= since)
            .cloned()
            .collect();
        contacts.sort_by(|a, b| (a.at, a.event_id()).cmp(&(b.at, b.event_id())));
        ContactHistory {
            known: true,
            contacts,
            timezone: self.timezone.as_ref().map(|(_, tz)| tz.clone()),
            version: self.contact_version,
            read_from: None,
        }
    }

    /// Applies retention to the contact index: the same age and count
    /// limits as the timeline.
    pub(super) fn trim_contacts(&mut self, retention: &Retention, now: Micros) {
        let cutoff = now.saturating_sub_micros(retention.max_age_micros);
        let mut reservations_gone = 0;
        self.contacts.retain(|_, c| {
            let keep = c.at >= cutoff;
            reservations_gone += usize::from(!keep && c.reserved);
            keep
        });
        if self.contacts.len() > retention.max_events {
            let mut by_age: Vec<(Micros, String)> = self
                .contacts
                .values()
                .map(|c| (c.at, c.event_id().to_string()))
                .collect();
            by_age.sort();
            let excess = self.contacts.len() - retention.max_events;
            for (_, id) in by_age.into_iter().take(excess) {
                let gone = self.contacts.remove(&id);
                reservations_gone += usize::from(gone.is_some_and(|c| c.reserved));
            }
        }
        self.reservations -= reservations_gone;
    }

    /// Applies retention; returns how many events it removed.
    pub(super) fn trim(&mut self, retention: &Retention, now: Micros) -> usize {
        let cutoff = now.saturating_sub_micros(retention.max_age_micros);
        let mut removed = 0;
        loop {
            let held = self.entries.len();
            let Some(entry) = self.entries.first_entry() else {
                break;
            };
            if entry.key().0 >= cutoff && held <= retention.max_events {
                break;
            }
            let meta = entry.remove();
            self.ids.remove(&meta.event_id);
            self.summary.forget(&meta.channel, meta.initiator);
            removed += 1;
        }
        removed
    }

    /// The context's parts, its events left out (`FramedEvents::default`).
    pub(super) fn snapshot(&self, profile: CustomerId) -> ContextSnapshot {
        ContextSnapshot {
            events: FramedEvents::default(),
            summary: self.summary.clone().into(),
            last_customer_interaction: self
                .last_customer
                .as_ref()
                .map(|(_, b)| EncodedEvent(b.clone())),
            last_company_contact: self
                .last_company
                .as_ref()
                .map(|(_, b)| EncodedEvent(b.clone())),
            contacts: Arc::from([]),
            contacts_capped: false,
            rendered: Default::default(),
            profile,
            identities: self.identities().into(),
            merges: self.merges.clone().into(),
            journeys: self.journeys.values().map(|s| (**s).clone()).collect(),
        }
    }

    /// The latest `max_events` events, newest first (shared, not copied).
    pub(super) fn latest(&self, max_events: usize) -> Vec<Bytes> {
        self.entries
            .keys()
            .rev()
            .take(max_events)
            .map(|(_, bytes)| bytes.clone())
            .collect()
    }

    pub(super) fn page(&self, query: &TimelineQuery) -> Result<TimelinePage, StorageError> {
        let upper = upper_bound(query);
        let lower = match query.start {
            Some(start) => Bound::Included((start, Bytes::new())),
            None => Bound::Unbounded,
        };
        if matches!((&lower, &upper), (Bound::Included(lo), Bound::Excluded(hi)) if lo >= hi) {
            return Ok(TimelinePage {
                events: Vec::new(),
                next: None,
            });
        }
        let mut events: Vec<EncodedEvent> = self
            .entries
            .range((lower, upper))
            .rev()
            .filter(|(_, meta)| query.keeps_event(&meta.channel, Some(meta.initiator)))
            .take(query.limit + 1)
            .map(|((_, bytes), _)| EncodedEvent(bytes.clone()))
            .collect();
        let next = if events.len() > query.limit {
            events.truncate(query.limit);
            events.last().map(codec::cursor_after).transpose()?
        } else {
            None
        };
        Ok(TimelinePage { events, next })
    }
}

/// The exclusive upper end of a page: the cursor or the end time, whichever
/// comes first going back in time.
fn upper_bound(query: &TimelineQuery) -> Bound<Key> {
    let cursor = query
        .after
        .as_ref()
        .map(|c| (c.occurred_at, codec::id_prefix(&c.event_id)));
    let end = query.end.map(|end| (end, Bytes::new()));
    match (cursor, end) {
        (Some(c), Some(e)) => Bound::Excluded(c.min(e)),
        (Some(k), None) | (None, Some(k)) => Bound::Excluded(k),
        (None, None) => Bound::Unbounded,
    }
}
