//! The embedded store: every timeline in this process's memory. The default
//! when nothing is configured, for trying the service and for single-node
//! use; nothing survives a restart. It keeps the same guarantees as the
//! Redis store (same ordering, retention and summaries), and a cap on the
//! events it holds in all so memory stays bounded.

use std::{
    collections::{hash_map::Entry as MapEntry, BTreeSet, HashMap, HashSet},
    sync::Mutex,
};

use async_trait::async_trait;

use super::{
    memory_journeys::JourneyBook, memory_timeline::Timeline, AppendOutcome, ContactHistory,
    ContextSnapshot, Forgotten, FramedEvents, JourneyListPage, JourneyListQuery, JourneyTracker,
    MergeOutcome, Reserved, Retention, StorageError, Swept, TimelinePage, TimelineQuery,
    TimelineStore, CONTEXT_MAX_CONTACTS,
};
use crate::domain::{
    event::CUSTOMER_ID_IDENTITY,
    journey::{
        carry_over, deadline_left_behind, sweep_due, Day, DayCounters, JourneyUpdate,
        STATS_KEPT_DAYS,
    },
    Contact, CustomerId, Event, Identity, LinkedIdentity, MergeRules, Micros,
};

#[derive(Debug, Default)]
struct State {
    customers: HashMap<CustomerId, Timeline>,
    /// Merged profiles: absorbed id -> survivor id.
    aliases: HashMap<CustomerId, CustomerId>,
    /// The identity index (customer_id identities name their profile).
    index: HashMap<Identity, CustomerId>,
    /// Events and reservations held, across profiles (`Timeline::held`).
    total_events: usize,
    journeys: JourneyBook,
}

/// Timelines in memory behind one mutex: every operation is short and never
/// awaits while holding it, so a `std` mutex is the right tool.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    retention: Retention,
    rules: MergeRules,
    max_total_events: usize,
    tracker: Option<JourneyTracker>,
}

impl MemoryStore {
    /// A store that keeps at most `max_total_events` events across all
    /// customers, each reservation, identity and profile counting as one more;
    /// writes beyond that are refused with `StorageError::Full`.
    pub fn new(retention: Retention, rules: MergeRules, max_total_events: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            retention,
            rules,
            max_total_events,
            tracker: None,
        }
    }

    /// Follows customers through the tracker's journeys as events arrive.
    pub fn with_journeys(mut self, tracker: JourneyTracker) -> Self {
        self.tracker = Some(tracker);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a timeline half
        // written in a way later calls would trip on, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// The profile an id leads to: itself, or the survivor of its merges.
    fn follow(&self, profile: &CustomerId) -> CustomerId {
        let mut current = profile.clone();
        // A merge points the ids that led to its absorbed profile at the
        // survivor, so a chain is one step; the bound only guards against
        // a cycle.
        for _ in 0..32 {
            match self.aliases.get(&current) {
                Some(next) => current = next.clone(),
                None => break,
            }
        }
        current
    }

    /// The customer's timeline if it has not expired; an expired one is
    /// dropped here, as Redis drops an expired key on access.
    fn live(&mut self, customer: &CustomerId, now: Micros) -> Option<&mut Timeline> {
        let expired = self.customers.get(customer)?.expires_at <= now;
        if expired {
            if let Some(gone) = self.customers.remove(customer) {
                self.total_events -= gone.held();
            }
            return None;
        }
        self.customers.get_mut(customer)
    }

    /// Writes a profile's journey update: its states, then the indexes.
    fn apply_journeys(&mut self, profile: &CustomerId, update: JourneyUpdate) {
        if update.is_empty() {
            return;
        }
        self.journeys.apply(profile, &update);
        if let Some(timeline) = self.customers.get_mut(profile) {
            for changed in update.states {
                timeline
                    .journeys
                    .insert(changed.journey.clone(), std::sync::Arc::new(changed));
            }
            if let Some(recent) = update.recent {
                timeline.journey_recent = recent;
            }
        }
    }

    /// Drops expired profiles, with the identities and merged-away ids
    /// that lead only to profiles no longer held.
    fn sweep_expired(&mut self, now: Micros) {
        let mut freed = 0;
        self.customers.retain(|_, t| {
            let keep = t.expires_at > now;
            if !keep {
                freed += t.held();
            }
            keep
        });
        self.total_events -= freed;
        let gone = |state: &Self, profile: &CustomerId| {
            !state.customers.contains_key(&state.follow(profile))
        };
        let dead_identities: Vec<Identity> = self
            .index
            .iter()
            .filter(|(_, profile)| gone(self, profile))
            .map(|(identity, _)| identity.clone())
            .collect();
        let dead_aliases: Vec<CustomerId> = self
            .aliases
            .keys()
            .filter(|absorbed| gone(self, absorbed))
            .cloned()
            .collect();
        for identity in dead_identities {
            self.index.remove(&identity);
        }
        for absorbed in dead_aliases {
            self.aliases.remove(&absorbed);
        }
    }

    /// Whether a write to `profile` starts it (again, if it expired): one
    /// more profile for the cap.
    fn starts(&self, profile: &CustomerId, now: Micros) -> bool {
        self.customers
            .get(profile)
            .is_none_or(|t| t.expires_at <= now)
    }

    /// Whether linking `identity` adds an index entry (customer ids are
    /// their own profile's, never indexed).
    fn unindexed(&self, identity: &Identity) -> bool {
        identity.kind != CUSTOMER_ID_IDENTITY && !self.index.contains_key(identity)
    }

    /// What the cap counts: events, and one for each identity and each
    /// profile (a link or a reservation makes profiles without events).
    fn used(&self) -> usize {
        self.total_events + self.index.len() + self.customers.len()
    }

    /// Room for `more` under the cap, expired profiles dropped first if
    /// needed: a clear refusal rather than memory without bound.
    fn make_room(&mut self, more: usize, max: usize, now: Micros) -> Result<(), StorageError> {
        if self.used() + more <= max {
            return Ok(());
        }
        self.sweep_expired(now);
        if self.used() + more <= max {
            return Ok(());
        }
        Err(StorageError::Full(format!(
            "the memory store holds {} events and reservations, {} identities and {} \
             profiles, {} in all; its limit is {max}",
            self.total_events,
            self.index.len(),
            self.customers.len(),
            self.used()
        )))
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
        // What the cap counts that this batch may add: its events, the
        // profiles it starts (an expired one is started again), and the
        // identities it indexes again (below).
        let mut new_profiles: HashSet<CustomerId> = HashSet::new();
        let mut unindexed: HashSet<&Identity> = HashSet::new();
        for event in events {
            let profile = state.follow(&event.profile);
            if state.starts(&profile, wall) {
                new_profiles.insert(profile);
            }
            unindexed.extend(event.identities.iter().filter(|i| state.unindexed(i)));
        }
        state.make_room(
            events.len() + new_profiles.len() + unindexed.len(),
            self.max_total_events,
            wall,
        )?;
        let expires_at = wall.saturating_add_micros(self.retention.max_age_micros);
        let mut outcomes = Vec::with_capacity(events.len());
        let mut touched = HashSet::new();
        let mut by_profile: Vec<(CustomerId, Vec<&Event>)> = Vec::new();
        let mut group_of: HashMap<CustomerId, usize> = HashMap::new();
        for event in events {
            let profile = state.follow(&event.profile);
            state.live(&profile, wall);
            let timeline = match state.customers.entry(profile.clone()) {
                MapEntry::Occupied(o) => o.into_mut(),
                MapEntry::Vacant(v) => v.insert(Timeline::default()),
            };
            let before = timeline.held();
            let outcome = timeline.store(event);
            timeline.keep_until(expires_at);
            // One more event, one reservation fewer when it replaces one.
            let after = timeline.held();
            state.total_events = state.total_events + after - before;
            // An identity the event was placed by leads to its profile: a
            // sweep between the lookup and this write (which drops the
            // identities of expired profiles) must not strand the profile.
            for identity in &event.identities {
                if state.unindexed(identity) {
                    state.index.insert(identity.clone(), profile.clone());
                }
            }
            // Only stored events move journeys: a duplicate (one of a
            // profile merged in, an id sent again) did once, or was
            // another profile's.
            let group = *group_of.entry(profile.clone()).or_insert_with(|| {
                by_profile.push((profile.clone(), Vec::new()));
                by_profile.len() - 1
            });
            if outcome == AppendOutcome::Stored {
                by_profile[group].1.push(event);
            }
            touched.insert(profile);
            outcomes.push(outcome);
        }
        if let Some(tracker) = &self.tracker {
            let definitions = tracker.definitions();
            for (profile, mine) in by_profile {
                let update = match state.customers.get(&profile) {
                    Some(t) => tracker.track(&definitions, &t.journeys, &t.journey_recent, mine),
                    None => continue,
                };
                state.apply_journeys(&profile, update);
            }
        }
        for customer in touched {
            if let Some(timeline) = state.customers.get_mut(&customer) {
                let before = timeline.held();
                timeline.trim(&self.retention, now);
                timeline.trim_contacts(&self.retention, now);
                let removed = before - timeline.held();
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
        let read = {
            let mut state = self.lock();
            let profile = state.follow(customer);
            state
                .live(&profile, Micros::now())
                .filter(|t| t.has_events())
                .map(|t| {
                    let mut contacts = t.contact_history(contacts_since).contacts;
                    let capped = contacts.len() > CONTEXT_MAX_CONTACTS;
                    contacts.drain(..contacts.len().saturating_sub(CONTEXT_MAX_CONTACTS));
                    let snapshot = ContextSnapshot {
                        contacts: contacts.into(),
                        contacts_capped: capped,
                        ..t.snapshot(profile.clone())
                    };
                    (snapshot, t.latest(max_events))
                })
        };
        // Framed once the lock is released: up to `max_page` events are
        // copied, which must not hold up every other call.
        Ok(read.map(|(snapshot, events)| ContextSnapshot {
            events: FramedEvents::copied(events.iter().map(|e| &e[..])),
            ..snapshot
        }))
    }

    async fn list(&self, query: &TimelineQuery) -> Result<Option<TimelinePage>, StorageError> {
        let mut state = self.lock();
        let profile = state.follow(&query.customer);
        state
            .live(&profile, Micros::now())
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
                let profile = state.follow(c);
                let mut history = state
                    .live(&profile, wall)
                    .map(|t| t.contact_history(since))
                    .unwrap_or_default();
                history.read_from = (profile != *c).then_some(profile);
                history
            })
            .collect())
    }

    async fn reserve_contact(
        &self,
        customer: &CustomerId,
        contact: &Contact,
        expected_version: u64,
        now: Micros,
    ) -> Result<Reserved, StorageError> {
        let wall = Micros::now();
        let mut state = self.lock();
        let profile = state.follow(customer);
        if profile != *customer {
            // Merged away since the read: its version is not the
            // survivor's. The caller reads again, through the merge.
            return Ok(Reserved::Stale);
        }
        // A reservation counts as an event until its event replaces it
        // (and the profile it starts as one more).
        let starts = state.starts(&profile, wall);
        state.make_room(1 + usize::from(starts), self.max_total_events, wall)?;
        state.live(&profile, wall);
        let timeline = state.customers.entry(profile).or_default();
        if timeline.contact_version != expected_version {
            return Ok(Reserved::Stale);
        }
        if timeline.holds_id(contact.event_id()) {
            return Ok(Reserved::IdTaken);
        }
        let before = timeline.held();
        timeline.reserve(contact.clone());
        // Retention as an append enforces it: reservations alone (exempt
        // ones are always allowed) cannot grow the index.
        timeline.trim_contacts(&self.retention, now);
        timeline.keep_until(wall.saturating_add_micros(self.retention.max_age_micros));
        let after = timeline.held();
        state.total_events = state.total_events + after - before;
        Ok(Reserved::Recorded)
    }

    async fn resolve(
        &self,
        identities: &[Identity],
    ) -> Result<Vec<Option<CustomerId>>, StorageError> {
        let state = self.lock();
        Ok(identities
            .iter()
            .map(|identity| {
                if identity.kind == CUSTOMER_ID_IDENTITY {
                    return Some(customer_profile(identity));
                }
                state.index.get(identity).cloned()
            })
            .collect())
    }

    async fn canonical(&self, profile: &CustomerId) -> Result<Option<CustomerId>, StorageError> {
        let mut state = self.lock();
        let profile = state.follow(profile);
        let held = state.live(&profile, Micros::now()).is_some();
        Ok(held.then_some(profile))
    }

    async fn identities(&self, profile: &CustomerId) -> Result<Vec<LinkedIdentity>, StorageError> {
        let mut state = self.lock();
        let profile = state.follow(profile);
        Ok(state
            .live(&profile, Micros::now())
            .map(|t| t.identities())
            .unwrap_or_default())
    }

    async fn link(
        &self,
        profile: &CustomerId,
        identities: &[Identity],
        at: Micros,
    ) -> Result<Result<Vec<CustomerId>, String>, StorageError> {
        let wall = Micros::now();
        let mut state = self.lock();
        let profile = state.follow(profile);
        // Only what the link adds takes room: identities not indexed yet,
        // and the profile if it starts here. Linking again what is linked
        // adds nothing.
        let starts = state.starts(&profile, wall);
        let unindexed = identities.iter().filter(|i| state.unindexed(i)).count();
        state.make_room(unindexed + usize::from(starts), self.max_total_events, wall)?;
        let owners: Vec<CustomerId> = identities
            .iter()
            .map(|identity| {
                if identity.kind == CUSTOMER_ID_IDENTITY {
                    customer_profile(identity)
                } else {
                    state
                        .index
                        .get(identity)
                        .cloned()
                        .unwrap_or_else(|| profile.clone())
                }
            })
            .collect();
        let linked: Vec<Identity> = identities
            .iter()
            .zip(&owners)
            .filter(|(identity, owner)| identity.kind != CUSTOMER_ID_IDENTITY && **owner == profile)
            .map(|(identity, _)| identity.clone())
            .collect();
        // The merge rules, checked under the lock with the write: racing
        // links cannot each pass them and together break them. Linking
        // again what the profile holds is never refused.
        let mut held: BTreeSet<Identity> = state
            .live(&profile, wall)
            .map(|t| t.identity_set().cloned().collect())
            .unwrap_or_default();
        let own = customer_identity(&profile);
        if !own.value.is_empty() {
            held.insert(own);
        }
        if linked.iter().any(|i| !held.contains(i)) {
            if let Some(reason) = self.rules.conflict(held.iter().chain(&linked)) {
                return Ok(Err(reason));
            }
        }
        for identity in &linked {
            state.index.insert(identity.clone(), profile.clone());
        }
        state.live(&profile, wall);
        let timeline = state.customers.entry(profile).or_default();
        timeline.record_identities(&linked, at);
        timeline.keep_until(wall.saturating_add_micros(self.retention.max_age_micros));
        Ok(Ok(owners))
    }

    async fn merge(
        &self,
        survivor: &CustomerId,
        absorbed: &CustomerId,
        at: Micros,
    ) -> Result<MergeOutcome, StorageError> {
        let wall = Micros::now();
        let mut state = self.lock();
        let (survivor, absorbed) = (state.follow(survivor), state.follow(absorbed));
        if survivor == absorbed {
            return Ok(MergeOutcome::AlreadyOne);
        }
        state.live(&survivor, wall);
        state.live(&absorbed, wall);
        let mut identities: Vec<Identity> = Vec::new();
        for profile in [&survivor, &absorbed] {
            identities.push(customer_identity(profile));
            if let Some(t) = state.customers.get(profile) {
                identities.extend(t.identity_set().cloned());
            }
        }
        identities.retain(|i| !i.value.is_empty());
        if let Some(reason) = self.rules.conflict(&identities) {
            return Ok(MergeOutcome::Refused(reason));
        }
        let gone = state.customers.remove(&absorbed).unwrap_or_default();
        let moved: Vec<Identity> = gone.identity_set().cloned().collect();
        // Every profile whose data the absorbed one holds (its history).
        let history: Vec<CustomerId> = gone.merged_ids().cloned().collect();
        let before = gone.held();
        let timeline = state.customers.entry(survivor.clone()).or_default();
        let survivor_before = timeline.held();
        let carried = self.tracker.as_ref().map(|tracker| {
            carry_over(
                &tracker.definitions(),
                wall,
                &timeline.journeys,
                &timeline.journey_recent,
                &gone.journeys,
                &gone.journey_recent,
            )
        });
        timeline.absorb(
            gone,
            crate::domain::MergeRecord {
                from: absorbed.clone(),
                at,
            },
        );
        // Both customer ids (if any) are the survivor's identities now.
        let own: Vec<Identity> = [&survivor, &absorbed]
            .into_iter()
            .map(customer_identity)
            .filter(|i| !i.value.is_empty())
            .collect();
        timeline.record_identities(&own, at);
        timeline.trim(&self.retention, at);
        timeline.trim_contacts(&self.retention, at);
        timeline.keep_until(wall.saturating_add_micros(self.retention.max_age_micros));
        // Events already held by the survivor were counted twice until now.
        let after = timeline.held();
        state.total_events = state.total_events + after - before - survivor_before;
        for identity in moved {
            if state.index.get(&identity) == Some(&absorbed) {
                state.index.insert(identity, survivor.clone());
            }
        }
        if let Some(carried) = carried {
            state.journeys.apply(&absorbed, &carried.absorbed);
            state.apply_journeys(&survivor, carried.survivor);
        }
        // The ids that led to the absorbed profile lead to the survivor
        // directly: no chain of merges grows longer than one step.
        for id in history {
            if state.aliases.get(&id) == Some(&absorbed) {
                state.aliases.insert(id, survivor.clone());
            }
        }
        state.aliases.insert(absorbed, survivor);
        Ok(MergeOutcome::Merged)
    }

    async fn unlink(
        &self,
        profile: &CustomerId,
        identity: &Identity,
    ) -> Result<bool, StorageError> {
        let mut state = self.lock();
        let profile = state.follow(profile);
        if identity.kind == CUSTOMER_ID_IDENTITY {
            // The customer id of a merged profile stops leading here.
            let id = customer_profile(identity);
            let was = state.aliases.get(&id).map(|s| state.follow(s)) == Some(profile.clone());
            if was {
                state.aliases.remove(&id);
            }
            if let Some(t) = state.customers.get_mut(&profile) {
                t.forget_identity(identity);
            }
            return Ok(was);
        }
        let linked_here = state.index.get(identity) == Some(&profile);
        if linked_here {
            state.index.remove(identity);
        }
        let recorded = state
            .customers
            .get_mut(&profile)
            .is_some_and(|t| t.forget_identity(identity));
        Ok(linked_here || recorded)
    }

    async fn forget(&self, profile: &CustomerId) -> Result<Option<Forgotten>, StorageError> {
        let mut state = self.lock();
        let profile = state.follow(profile);
        state.journeys.forget(&profile);
        let held = state.live(&profile, Micros::now()).is_some();
        let Some(gone) = state.customers.remove(&profile).filter(|_| held) else {
            // Expired, or never held: what still leads to it goes, as the
            // sweep of expired profiles would take it.
            state.index.retain(|_, to| *to != profile);
            state.aliases.retain(|_, to| *to != profile);
            return Ok(None);
        };
        state.total_events -= gone.held();
        state.journeys.count_forgotten(&gone.journeys);
        state.index.retain(|_, to| *to != profile);
        let merged: Vec<CustomerId> = gone
            .merged_ids()
            .filter(|id| state.aliases.get(*id) == Some(&profile))
            .cloned()
            .collect();
        for id in &merged {
            state.aliases.remove(id);
        }
        Ok(Some(Forgotten {
            events: gone.events() as u64,
            identities: gone.identity_set().count() as u64,
            merged,
            profile,
        }))
    }

    async fn journey_counters(
        &self,
        journey: &str,
        days: &[Day],
    ) -> Result<Vec<DayCounters>, StorageError> {
        Ok(self.lock().journeys.counters(journey, days))
    }

    async fn list_journeys(
        &self,
        query: &JourneyListQuery,
    ) -> Result<JourneyListPage, StorageError> {
        Ok(self.lock().journeys.page(query))
    }

    async fn sweep_journeys(&self, now: Micros, max: usize) -> Result<Swept, StorageError> {
        let Some(tracker) = &self.tracker else {
            return Ok(Swept::default());
        };
        let definitions = tracker.definitions();
        let mut state = self.lock();
        let due = state.journeys.due(now, max);
        let mut dropped = 0;
        for entry in &due {
            let profile = &entry.2;
            let update = state
                .live(profile, Micros::now())
                .map(|t| sweep_due(&definitions, &t.journeys, now))
                .unwrap_or_default();
            if update.states.is_empty() {
                // Expired, merged away, or its journey not defined here:
                // forgotten, or looked at again later.
                let held = state
                    .customers
                    .get(profile)
                    .and_then(|t| t.journeys.get(&entry.1).cloned());
                let later = deadline_left_behind(&definitions, &entry.1, held.as_deref(), now);
                state.journeys.move_deadline(entry, later);
                continue;
            }
            dropped += update.states.len();
            state.apply_journeys(profile, update);
        }
        Ok(Swept {
            due: due.len(),
            dropped,
        })
    }

    async fn trim_journeys(&self, now: Micros) -> Result<(), StorageError> {
        let listed_before = now.saturating_sub_micros(self.retention.max_age_micros);
        let first_day = Day(Day::of(now).0 - STATS_KEPT_DAYS);
        self.lock().journeys.trim(listed_before, first_day);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// The profile a customer id names.
fn customer_profile(identity: &Identity) -> CustomerId {
    CustomerId::from_trusted(&identity.value)
}

/// A profile's own customer id as an identity (empty for anonymous ones).
fn customer_identity(profile: &CustomerId) -> Identity {
    Identity {
        kind: CUSTOMER_ID_IDENTITY.to_string(),
        value: if profile.is_anonymous() {
            String::new()
        } else {
            profile.to_string()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max_age_micros: i64, cap: usize) -> MemoryStore {
        let retention = Retention {
            max_events: 100,
            max_age_micros,
        };
        let rules = MergeRules {
            unique_types: Default::default(),
            max_identities: 100,
        };
        MemoryStore::new(retention, rules, cap)
    }

    fn cookie(value: &str) -> Identity {
        Identity {
            kind: "cookie_id".into(),
            value: value.into(),
        }
    }

    /// Links `values` (cookies) to the anonymous profile `~id`, expecting
    /// the room for it (`why`) and no rule broken.
    async fn link_cookies(store: &MemoryStore, id: &str, values: &[&str], why: &str) {
        let cookies: Vec<Identity> = values.iter().map(|v| cookie(v)).collect();
        store
            .link(&CustomerId::anonymous(id), &cookies, Micros(1))
            .await
            .expect(why)
            .expect("the rules allow it");
    }

    #[tokio::test]
    async fn links_count_against_the_cap() {
        // Two links of two identities: 2 profiles + 4 identities = 6.
        let store = store(3_600 * Micros::PER_SECOND, 6);
        for (id, values) in [("a", ["1", "2"]), ("b", ["3", "4"])] {
            link_cookies(&store, id, &values, "room").await;
        }
        let full = store
            .link(&CustomerId::anonymous("c"), &[cookie("5")], Micros(1))
            .await
            .expect_err("no room");
        assert!(
            matches!(&full, StorageError::Full(why) if why.contains("4 identities and 2 profiles")),
            "{full:?}"
        );
        // What adds nothing takes no room: linking again what is linked.
        link_cookies(&store, "a", &["1"], "nothing new").await;
        // A reservation counts as an event, even for a profile held.
        let reservation = Contact::new(
            Micros(1),
            true,
            crate::domain::ContactNames {
                event_id: "r1",
                channel: "email",
                reason: "",
                event_type: "",
                campaign_id: "",
            },
        );
        let held = store
            .reserve_contact(&CustomerId::anonymous("a"), &reservation, 0, Micros(1))
            .await;
        assert!(matches!(held, Err(StorageError::Full(_))), "{held:?}");
        let new = store
            .reserve_contact(&CustomerId::anonymous("d"), &reservation, 0, Micros(1))
            .await;
        assert!(matches!(new, Err(StorageError::Full(_))), "{new:?}");
    }

    /// A reservation (an exempt one is always allowed) counts against the
    /// cap until it leaves: a client cannot fill memory with reservations
    /// on profiles the cap counts once.
    #[tokio::test]
    async fn reservations_count_against_the_cap_until_they_leave() {
        let store = store(3_600 * Micros::PER_SECOND, 5);
        let reserve = |profile: &str, id: &str, at: i64, version: u64| {
            let profile = CustomerId::anonymous(profile);
            let store = &store;
            let contact = Contact::new(
                Micros(at),
                true,
                crate::domain::ContactNames {
                    event_id: id,
                    channel: "email",
                    reason: "",
                    event_type: "",
                    campaign_id: "",
                },
            );
            async move {
                store
                    .reserve_contact(&profile, &contact, version, Micros(at))
                    .await
            }
        };
        let used = || store.lock().used();
        assert!(matches!(
            reserve("a", "r1", 1, 0).await,
            Ok(Reserved::Recorded)
        ));
        assert!(matches!(
            reserve("a", "r2", 1, 1).await,
            Ok(Reserved::Recorded)
        ));
        assert_eq!(used(), 3, "a profile and two reservations");
        assert!(matches!(
            reserve("b", "r3", 1, 0).await,
            Ok(Reserved::Recorded)
        ));
        assert_eq!(used(), 5);
        let full = reserve("b", "r4", 1, 1).await;
        assert!(matches!(full, Err(StorageError::Full(_))), "{full:?}");
        // A merge counts the survivor's profile and all three once.
        let merged = store
            .merge(
                &CustomerId::anonymous("b"),
                &CustomerId::anonymous("a"),
                Micros(2),
            )
            .await;
        assert!(matches!(merged, Ok(MergeOutcome::Merged)), "{merged:?}");
        assert_eq!(used(), 4);
        // Past the retention, the old reservations leave with the next.
        let later = 2 * 3_600 * Micros::PER_SECOND;
        let version = store
            .contacts(&[CustomerId::anonymous("b")], Micros(0))
            .await
            .expect("contacts")[0]
            .version;
        assert!(matches!(
            reserve("b", "r5", later, version).await,
            Ok(Reserved::Recorded)
        ));
        assert_eq!(used(), 2, "the profile and its one reservation");
    }

    #[tokio::test]
    async fn expired_profiles_make_room_with_their_identities() {
        // Profiles live one microsecond: gone by the next call.
        let store = store(1, 4);
        link_cookies(&store, "a", &["1", "2"], "room").await;
        link_cookies(
            &store,
            "b",
            &["3", "4"],
            "the expired profile and its identities made room",
        )
        .await;
        let resolved = store
            .resolve(&[cookie("1"), cookie("3")])
            .await
            .expect("resolve");
        assert_eq!(resolved, [None, Some(CustomerId::anonymous("b"))]);
    }

    /// Erasing an expired profile finds nothing held, yet lets go of the
    /// identities that still led to it (the cap never swept them).
    #[tokio::test]
    async fn forgetting_an_expired_profile_lets_its_identities_go() {
        let store = store(1, 100);
        link_cookies(&store, "x", &["9"], "room").await;
        let before = store.resolve(&[cookie("9")]).await.expect("resolve");
        assert_eq!(before, [Some(CustomerId::anonymous("x"))]);
        let forgotten = store.forget(&CustomerId::anonymous("x")).await;
        assert_eq!(forgotten.expect("forget"), None, "expired: nothing held");
        let after = store.resolve(&[cookie("9")]).await.expect("resolve");
        assert_eq!(after, [None]);
    }

    #[tokio::test]
    async fn an_event_placed_by_an_identity_swept_meanwhile_indexes_it_again() {
        use crate::domain::{EventLimits, Initiator, RawEvent, Taxonomy};
        // Profiles live one microsecond; a cap of 4.
        let store = store(1, 4);
        let visitor = CustomerId::anonymous("a");
        link_cookies(&store, "a", &["x"], "room").await;
        // The event was placed in ~a by cookie x; before it is written, a
        // sweep (another write needing room) drops ~a and x.
        link_cookies(&store, "b", &["y", "z"], "room made by the sweep").await;
        assert_eq!(
            store.resolve(&[cookie("x")]).await.expect("resolve"),
            [None]
        );
        let now = Micros::now();
        let (mut event, _) = RawEvent {
            event_id: "e1".into(),
            customer_id: String::new(),
            channel: "web".into(),
            reason: "support_request".into(),
            event_type: "chat_message".into(),
            initiator: Some(Initiator::Customer),
            occurred_at: Some(now),
            identities: vec![("cookie_id".into(), "x".into())],
            ..RawEvent::default()
        }
        .validate(&Taxonomy::builtin(), &EventLimits::default(), now)
        .expect("valid");
        event.profile = visitor.clone();
        store.append(&[event], now).await.expect("room");
        assert_eq!(
            store.resolve(&[cookie("x")]).await.expect("resolve"),
            [Some(visitor)]
        );
    }
}
