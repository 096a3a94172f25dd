//! The embedded store: every timeline in this process's memory. The default
//! when nothing is configured, for trying the service and for single-node
//! use; nothing survives a restart. It keeps the same guarantees as the
//! Redis store (same ordering, retention and summaries), and a cap on the
//! events it holds in all so memory stays bounded.

use std::{
    collections::{hash_map::Entry as MapEntry, BTreeMap, HashMap, HashSet},
    ops::Bound,
    sync::Mutex,
};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    codec, AppendOutcome, ContactHistory, ContextSnapshot, EncodedEvent, Retention, StorageError,
    TimelinePage, TimelineQuery, TimelineStore,
};
use crate::domain::{Contact, CustomerId, CustomerSummary, Event, Initiator, Micros};

/// Sort key of a timeline entry: what a Redis sorted set orders by.
type Key = (Micros, Bytes);

#[derive(Debug)]
struct Meta {
    event_id: String,
    channel: String,
    initiator: Initiator,
}

#[derive(Debug, Default)]
struct Timeline {
    entries: BTreeMap<Key, Meta>,
    ids: HashSet<String>,
    summary: CustomerSummary,
    last_customer: Option<(Micros, Bytes)>,
    last_company: Option<(Micros, Bytes)>,
    /// The contact index, by event (or reservation) id.
    contacts: HashMap<String, Contact>,
    contact_version: u64,
    /// The latest `timezone` attribute, with the instant of its event.
    timezone: Option<(Micros, String)>,
    /// The customer is forgotten after this instant without a write.
    expires_at: Micros,
}

#[derive(Debug, Default)]
struct State {
    customers: HashMap<CustomerId, Timeline>,
    total_events: usize,
}

/// Timelines in memory behind one mutex: every operation is short and never
/// awaits while holding it, so a `std` mutex is the right tool.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    retention: Retention,
    max_total_events: usize,
}

impl MemoryStore {
    /// A store that keeps at most `max_total_events` events across all
    /// customers; appends beyond that are refused with `StorageError::Full`.
    pub fn new(retention: Retention, max_total_events: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            retention,
            max_total_events,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a timeline half
        // written in a way later calls would trip on, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// The customer's timeline if it has not expired; an expired one is
    /// dropped here, as Redis drops an expired key on access.
    fn live(&mut self, customer: &CustomerId, now: Micros) -> Option<&mut Timeline> {
        let expired = self.customers.get(customer)?.expires_at <= now;
        if expired {
            if let Some(gone) = self.customers.remove(customer) {
                self.total_events -= gone.entries.len();
            }
            return None;
        }
        self.customers.get_mut(customer)
    }

    fn sweep_expired(&mut self, now: Micros) {
        let mut freed = 0;
        self.customers.retain(|_, t| {
            let keep = t.expires_at > now;
            if !keep {
                freed += t.entries.len();
            }
            keep
        });
        self.total_events -= freed;
    }
}

impl Timeline {
    fn store(&mut self, event: &Event) -> AppendOutcome {
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
            self.contacts.insert(contact.event_id.clone(), contact);
            self.contact_version += 1;
        }
        if let Some(tz) = event.timezone() {
            if self.timezone.as_ref().is_none_or(|(t, _)| at > *t) {
                self.timezone = Some((at, tz.to_string()));
            }
        }
        AppendOutcome::Stored
    }

    /// Whether any event is held: a customer known only by a reservation
    /// has no journey context.
    fn has_events(&self) -> bool {
        self.summary.first_seen.is_some()
    }

    fn contact_history(&self, since: Micros) -> ContactHistory {
        let mut contacts: Vec<Contact> = self
            .contacts
            .values()
            .filter(|c| c.at >= since)
            .cloned()
            .collect();
        contacts.sort_by(|a, b| (a.at, &a.event_id).cmp(&(b.at, &b.event_id)));
        ContactHistory {
            known: true,
            contacts,
            timezone: self.timezone.as_ref().map(|(_, tz)| tz.clone()),
            version: self.contact_version,
        }
    }

    /// Applies retention to the contact index: the same age and count
    /// limits as the timeline.
    fn trim_contacts(&mut self, retention: &Retention, now: Micros) {
        let cutoff = now.saturating_sub_micros(retention.max_age_micros);
        self.contacts.retain(|_, c| c.at >= cutoff);
        if self.contacts.len() > retention.max_events {
            let mut by_age: Vec<(Micros, String)> = self
                .contacts
                .values()
                .map(|c| (c.at, c.event_id.clone()))
                .collect();
            by_age.sort();
            let excess = self.contacts.len() - retention.max_events;
            for (_, id) in by_age.into_iter().take(excess) {
                self.contacts.remove(&id);
            }
        }
    }

    /// Applies retention; returns how many events it removed.
    fn trim(&mut self, retention: &Retention, now: Micros) -> usize {
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

    fn snapshot(&self, max_events: usize) -> ContextSnapshot {
        ContextSnapshot {
            events: self
                .entries
                .keys()
                .rev()
                .take(max_events)
                .map(|(_, bytes)| EncodedEvent(bytes.clone()))
                .collect(),
            summary: self.summary.clone(),
            last_customer_interaction: self
                .last_customer
                .as_ref()
                .map(|(_, b)| EncodedEvent(b.clone())),
            last_company_contact: self
                .last_company
                .as_ref()
                .map(|(_, b)| EncodedEvent(b.clone())),
            contacts: Vec::new(),
        }
    }

    fn page(&self, query: &TimelineQuery) -> Result<TimelinePage, StorageError> {
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

#[async_trait]
impl TimelineStore for MemoryStore {
    async fn append(
        &self,
        events: &[Event],
        now: Micros,
    ) -> Result<Vec<AppendOutcome>, StorageError> {
        // Expiry follows the wall clock, as Redis key TTLs do; `now` only
        // places the retention cutoff among the events.
        let wall = Micros::now();
        let mut state = self.lock();
        if state.total_events + events.len() > self.max_total_events {
            state.sweep_expired(wall);
            if state.total_events + events.len() > self.max_total_events {
                return Err(StorageError::Full(format!(
                    "the memory store holds {} events, its limit is {}",
                    state.total_events, self.max_total_events
                )));
            }
        }
        let expires_at = wall.saturating_add_micros(self.retention.max_age_micros);
        let mut outcomes = Vec::with_capacity(events.len());
        let mut touched = HashSet::new();
        for event in events {
            state.live(&event.customer_id, wall);
            let timeline = match state.customers.entry(event.customer_id.clone()) {
                MapEntry::Occupied(o) => o.into_mut(),
                MapEntry::Vacant(v) => v.insert(Timeline::default()),
            };
            let outcome = timeline.store(event);
            timeline.expires_at = expires_at;
            if outcome == AppendOutcome::Stored {
                state.total_events += 1;
            }
            touched.insert(&event.customer_id);
            outcomes.push(outcome);
        }
        for customer in touched {
            if let Some(timeline) = state.customers.get_mut(customer) {
                let removed = timeline.trim(&self.retention, now);
                timeline.trim_contacts(&self.retention, now);
                state.total_events -= removed;
            }
        }
        Ok(outcomes)
    }

    async fn context(
        &self,
        customer: &CustomerId,
        max_events: usize,
        contacts_since: Micros,
    ) -> Result<Option<ContextSnapshot>, StorageError> {
        let mut state = self.lock();
        Ok(state
            .live(customer, Micros::now())
            .filter(|t| t.has_events())
            .map(|t| ContextSnapshot {
                contacts: t.contact_history(contacts_since).contacts,
                ..t.snapshot(max_events)
            }))
    }

    async fn list(&self, query: &TimelineQuery) -> Result<Option<TimelinePage>, StorageError> {
        let mut state = self.lock();
        state
            .live(&query.customer, Micros::now())
            .filter(|t| t.has_events())
            .map(|t| t.page(query))
            .transpose()
    }

    async fn contacts(
        &self,
        customers: &[CustomerId],
        since: Micros,
    ) -> Result<Vec<ContactHistory>, StorageError> {
        let mut state = self.lock();
        let wall = Micros::now();
        Ok(customers
            .iter()
            .map(|c| {
                state
                    .live(c, wall)
                    .map(|t| t.contact_history(since))
                    .unwrap_or_default()
            })
            .collect())
    }

    async fn reserve_contact(
        &self,
        customer: &CustomerId,
        contact: &Contact,
        expected_version: u64,
        _now: Micros,
    ) -> Result<bool, StorageError> {
        let wall = Micros::now();
        let mut state = self.lock();
        state.live(customer, wall);
        let timeline = state.customers.entry(customer.clone()).or_default();
        if timeline.contact_version != expected_version {
            return Ok(false);
        }
        timeline
            .contacts
            .insert(contact.event_id.clone(), contact.clone());
        timeline.contact_version += 1;
        timeline.expires_at = timeline
            .expires_at
            .max(wall.saturating_add_micros(self.retention.max_age_micros));
        Ok(true)
    }

    async fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
