//! This instance's cache of journey contexts read from Redis, kept true by
//! Redis itself: the reads go over a connection with `CLIENT TRACKING`, and
//! Redis pushes the name of every key written after such a read to this
//! instance's invalidation listener (`redis_tracking.rs`), which drops the
//! customer's context here. No I/O in this file: the bookkeeping that
//! decides what may be kept and served.
//!
//! Why a ticket per read: the reply of a read and the invalidation of a
//! write that came after it arrive on two sockets, in either order. A read
//! leaves a placeholder with its ticket; an invalidation (or a write of
//! this instance, or a lost connection) removes it; the reply is kept only
//! if its own placeholder is still there. So a reply older than a write
//! this instance has heard of is never kept.
//!
//! What a hit answers does not depend on when it was read: the contacts
//! are cut at the asked instant and the events at the asked count here,
//! and the parts that age (journeys, contact counts) are derived per call
//! from the snapshot by the handler (which reuses the counts' encoding
//! until the first instant they could change).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::BytesMut;
use lru::LruCache;

use super::{ContextSnapshot, EncodedEvent};
use crate::domain::{journey::JourneyDefinitions, Micros};

/// A context kept longer than this is read again, whatever Redis said: a
/// bound on how long a lost invalidation could leave it stale.
pub(super) const MAX_AGE: Duration = Duration::from_secs(30);

/// What one slot costs besides its content (the key, the LRU node, the
/// snapshot's fixed parts), so placeholders count too.
const SLOT_BYTES: usize = 256;

/// A context as read, with what it was read for.
pub(super) struct Cached {
    snapshot: ContextSnapshot,
    /// The page of events read (a request for more reads again).
    max_events: usize,
    /// The contacts read are those from this instant on (a request from
    /// earlier reads again).
    contacts_since: Micros,
    /// The journey definitions whose states were read (a reload reads
    /// again). Compared by address.
    definitions: Option<Arc<JourneyDefinitions>>,
    read_at: Instant,
    bytes: usize,
}

impl Cached {
    /// A snapshot read from Redis, its last events and contacts copied out
    /// of the reply: they are slices of the connection's read buffer, and
    /// keeping them would keep the whole buffer (64 KiB) alive. The events
    /// were copied out by the read (`FramedEvents::copied`); the other
    /// parts hold no reply bytes and are shared with the read's caller.
    pub fn new(
        snapshot: &ContextSnapshot,
        max_events: usize,
        contacts_since: Micros,
        definitions: Option<Arc<JourneyDefinitions>>,
    ) -> Self {
        let singles = [
            &snapshot.last_customer_interaction,
            &snapshot.last_company_contact,
        ];
        let single_bytes: usize = singles
            .iter()
            .filter_map(|e| e.as_ref())
            .map(|e| e.0.len())
            .sum();
        let mut buf = BytesMut::with_capacity(single_bytes);
        let mut copy = |event: &Option<EncodedEvent>| {
            event.as_ref().map(|event| {
                let start = buf.len();
                buf.extend_from_slice(&event.0);
                start..buf.len()
            })
        };
        let spans = singles.map(&mut copy);
        let all = buf.freeze();
        let [last_customer_interaction, last_company_contact] =
            spans.map(|span| span.map(|span| EncodedEvent(all.slice(span))));
        // The run's bytes and its offsets (shared with the read's caller).
        let event_bytes = snapshot.events.framed().len() + 8 * snapshot.events.len() + single_bytes;
        let contacts: Arc<[_]> = snapshot.contacts.iter().map(|c| c.detached()).collect();
        let contact_bytes: usize = contacts.iter().map(|c| c.text_len() + 64).sum();
        // The transport's renderings, made at the first call: the profile
        // id twice, timestamps and counts, the kept contact counts, the
        // single events again, and about as much as the summary, identities
        // and merges take here.
        let rendered_bytes = 256 + 2 * snapshot.profile.as_str().len() + single_bytes;
        let bytes = SLOT_BYTES
            + event_bytes
            + contact_bytes
            + rendered_bytes
            + 2 * 256 * (snapshot.identities.len() + snapshot.merges.len())
            + 1024 * snapshot.journeys.len()
            + 2 * 128 * snapshot.summary.channels.len();
        Self {
            snapshot: ContextSnapshot {
                events: snapshot.events.clone(),
                summary: snapshot.summary.clone(),
                last_customer_interaction,
                last_company_contact,
                contacts,
                contacts_capped: snapshot.contacts_capped,
                profile: snapshot.profile.clone(),
                identities: snapshot.identities.clone(),
                merges: snapshot.merges.clone(),
                journeys: snapshot.journeys.clone(),
                // Shared: the rendering the read's own call makes is the
                // hits' (it holds no part of the reply).
                rendered: snapshot.rendered.clone(),
            },
            max_events,
            contacts_since,
            definitions,
            read_at: Instant::now(),
            bytes,
        }
    }

    /// Whether this answers a request for `max_events` events and the
    /// contacts since `contacts_since`, with these journey definitions.
    fn answers(
        &self,
        max_events: usize,
        contacts_since: Micros,
        definitions: Option<&Arc<JourneyDefinitions>>,
    ) -> bool {
        let same_definitions = match (&self.definitions, definitions) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        // A capped read left out contacts at or before its oldest one;
        // whether they fall in a later window is unknown: read again.
        let contacts_known = if self.snapshot.contacts_capped {
            contacts_since == self.contacts_since
        } else {
            contacts_since >= self.contacts_since
        };
        max_events <= self.max_events
            && contacts_known
            && same_definitions
            && self.read_at.elapsed() < MAX_AGE
    }

    /// The snapshot as a read for `max_events` and `contacts_since` would
    /// have answered it.
    pub fn view(&self, max_events: usize, contacts_since: Micros) -> ContextSnapshot {
        let s = &self.snapshot;
        // Usually none is cut (a call's window starts where the read's did,
        // or seconds later): then the kept contacts are shared, not copied.
        let contacts = if s.contacts.iter().all(|c| c.at >= contacts_since) {
            s.contacts.clone()
        } else {
            s.contacts
                .iter()
                .filter(|c| c.at >= contacts_since)
                .cloned()
                .collect()
        };
        // A capped read answers only its own window (`answers`), where
        // nothing is cut; an uncapped one left nothing unread.
        let contacts_capped = s.contacts_capped;
        ContextSnapshot {
            events: s.events.first(max_events),
            summary: s.summary.clone(),
            last_customer_interaction: s.last_customer_interaction.clone(),
            last_company_contact: s.last_company_contact.clone(),
            contacts,
            contacts_capped,
            profile: s.profile.clone(),
            identities: s.identities.clone(),
            merges: s.merges.clone(),
            journeys: s.journeys.clone(),
            rendered: s.rendered.clone(),
        }
    }
}

/// A read's claim to fill its customer's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ticket {
    token: u64,
    epoch: u64,
}

pub(super) enum Lookup {
    /// The cache is off or not in step with Redis: read, keep nothing.
    Off,
    Hit(Arc<Cached>),
    /// Read, then offer the snapshot with this ticket.
    Miss(Ticket),
}

enum Slot {
    Pending(u64),
    Ready(Arc<Cached>),
}

/// What the cache answered since it was made: for the metrics endpoint
/// and, as differences, the listener's periodic log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub hits: u64,
    pub misses: u64,
    /// Reads while the cache was off (its link to Redis not whole).
    pub off: u64,
}

struct Inner {
    /// Off until the invalidation listener is subscribed and the tracked
    /// connection points at it; off again as soon as either is lost.
    enabled: bool,
    /// Moves on every clear: tickets of before do not fill slots.
    epoch: u64,
    next_token: u64,
    bytes: usize,
    /// How many of `slots` are `Ready`.
    ready: usize,
    slots: LruCache<String, Slot>,
    counts: Counts,
}

/// Contexts by customer, bounded in (estimated) bytes, least recently
/// used first out.
pub(super) struct ContextCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

impl ContextCache {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                enabled: false,
                epoch: 0,
                next_token: 0,
                bytes: 0,
                ready: 0,
                slots: LruCache::unbounded(),
                counts: Counts::default(),
            }),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The customer's context if one is kept that answers the request;
    /// else a ticket to offer the one read (or `Off`).
    pub fn begin(
        &self,
        customer: &str,
        max_events: usize,
        contacts_since: Micros,
        definitions: Option<&Arc<JourneyDefinitions>>,
    ) -> Lookup {
        let mut inner = self.lock();
        if !inner.enabled {
            inner.counts.off += 1;
            return Lookup::Off;
        }
        if let Some(Slot::Ready(cached)) = inner.slots.get(customer) {
            if cached.answers(max_events, contacts_since, definitions) {
                let hit = Lookup::Hit(cached.clone());
                inner.counts.hits += 1;
                return hit;
            }
        }
        inner.counts.misses += 1;
        inner.next_token += 1;
        let ticket = Ticket {
            token: inner.next_token,
            epoch: inner.epoch,
        };
        inner.put(customer, Slot::Pending(ticket.token));
        self.evict(&mut inner);
        Lookup::Miss(ticket)
    }

    /// Keeps `cached` if nothing dropped the ticket's placeholder since.
    pub fn finish(&self, customer: &str, ticket: Ticket, cached: Cached) {
        let mut inner = self.lock();
        let current = matches!(
            inner.slots.peek(customer),
            Some(Slot::Pending(token)) if *token == ticket.token
        );
        if !(inner.enabled && inner.epoch == ticket.epoch && current) {
            return;
        }
        if cached.bytes > self.max_bytes {
            inner.remove(customer);
            return;
        }
        inner.put(customer, Slot::Ready(Arc::new(cached)));
        self.evict(&mut inner);
    }

    /// Drops the customer's context (and any read's placeholder): a key of
    /// theirs was written, or the read failed.
    pub fn invalidate(&self, customer: &str) {
        self.lock().remove(customer);
    }

    /// Drops everything; the cache serves again only if `enabled`.
    pub fn clear(&self, enabled: bool) {
        self.lock().reset(Some(enabled));
    }

    /// Drops everything, serving on or off as before (under one lock, so
    /// the listener's clear cannot be undone in between).
    pub fn forget_all(&self) {
        self.lock().reset(None);
    }

    /// The counts so far, how many contexts are kept and their
    /// (estimated) bytes, placeholders of reads under way included. Kept
    /// up to date as slots come and go: a scrape must not walk the cache
    /// under the lock every read takes.
    pub fn counts(&self) -> (Counts, usize, usize) {
        let inner = self.lock();
        (inner.counts, inner.ready, inner.bytes)
    }

    fn evict(&self, inner: &mut Inner) {
        while inner.bytes > self.max_bytes {
            match inner.slots.pop_lru() {
                Some((_, slot)) => inner.forgot(&slot),
                None => break,
            }
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Whether a context is kept for `customer` (without touching it).
    #[cfg(test)]
    fn holds(&self, customer: &str) -> bool {
        matches!(self.lock().slots.peek(customer), Some(Slot::Ready(_)))
    }
}

impl Inner {
    fn reset(&mut self, enabled: Option<bool>) {
        self.slots.clear();
        self.bytes = 0;
        self.ready = 0;
        self.epoch += 1;
        if let Some(enabled) = enabled {
            self.enabled = enabled;
        }
    }

    fn put(&mut self, customer: &str, slot: Slot) {
        self.bytes += slot_bytes(&slot);
        self.ready += usize::from(matches!(slot, Slot::Ready(_)));
        if let Some(old) = self.slots.put(customer.to_string(), slot) {
            self.forgot(&old);
        }
    }

    fn remove(&mut self, customer: &str) {
        if let Some(old) = self.slots.pop(customer) {
            self.forgot(&old);
        }
    }

    /// Takes a slot that left `slots` out of the totals.
    fn forgot(&mut self, slot: &Slot) {
        self.bytes -= slot_bytes(slot);
        self.ready -= usize::from(matches!(slot, Slot::Ready(_)));
    }
}

fn slot_bytes(slot: &Slot) -> usize {
    match slot {
        Slot::Pending(_) => SLOT_BYTES,
        Slot::Ready(cached) => cached.bytes,
    }
}

/// The customer whose key Redis names (`journey:{<id>}:<suffix>`); `None`
/// for a key that is not a profile's (the identity index, counters).
pub(super) fn customer_of_key(key: &[u8]) -> Option<&str> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix("journey:{")?;
    // The suffix after `}:` holds no `}`; the id may.
    let end = rest.rfind("}:")?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::domain::{Contact, ContactNames};

    const T0: i64 = 1_767_225_600_000_000;

    fn contact(at: i64) -> Contact {
        Contact::new(
            Micros(at),
            false,
            ContactNames {
                event_id: &format!("e{at}"),
                channel: "email",
                reason: "campaign_offer",
                event_type: "email_sent",
                campaign_id: "",
            },
        )
    }

    /// A snapshot of `events` events of `size` bytes and contacts at these
    /// instants (oldest first, as the store answers them).
    fn snapshot(events: usize, size: usize, contacts: &[i64], capped: bool) -> ContextSnapshot {
        // One buffer for all, as a reply is.
        let reply = Bytes::from(vec![7u8; events * size]);
        ContextSnapshot {
            events: (0..events)
                .map(|i| EncodedEvent(reply.slice(i * size..(i + 1) * size)))
                .collect(),
            summary: Default::default(),
            last_customer_interaction: Some(EncodedEvent(reply.slice(0..size))),
            contacts: contacts.iter().map(|&at| contact(at)).collect(),
            contacts_capped: capped,
            ..ContextSnapshot::empty("c1")
        }
    }

    fn kept(s: &ContextSnapshot, max_events: usize) -> Cached {
        Cached::new(s, max_events, Micros(T0), None)
    }

    fn ticket(cache: &ContextCache, customer: &str) -> Ticket {
        match cache.begin(customer, 50, Micros(T0), None) {
            Lookup::Miss(ticket) => ticket,
            Lookup::Hit(_) => panic!("a hit where a miss was expected"),
            Lookup::Off => panic!("the cache is off"),
        }
    }

    fn hit(cache: &ContextCache, customer: &str) -> Option<Arc<Cached>> {
        match cache.begin(customer, 50, Micros(T0), None) {
            Lookup::Hit(kept) => Some(kept),
            _ => None,
        }
    }

    #[test]
    fn keys_name_their_customer() {
        assert_eq!(customer_of_key(b"journey:{c-1}:tl"), Some("c-1"));
        assert_eq!(customer_of_key(b"journey:{a}:b}:jny"), Some("a}:b"));
        assert_eq!(customer_of_key(b"journey:jstats:x:1"), None);
        assert_eq!(customer_of_key(b"other"), None);
        assert_eq!(customer_of_key(&[0xff, 0xfe]), None);
    }

    #[test]
    fn off_until_enabled_and_a_read_is_kept_then_served() {
        let cache = ContextCache::new(1 << 20);
        assert!(matches!(
            cache.begin("c1", 50, Micros(T0), None),
            Lookup::Off
        ));
        cache.clear(true);
        let s = snapshot(3, 100, &[T0 + 1], false);
        let t = ticket(&cache, "c1");
        cache.finish("c1", t, kept(&s, 50));
        let served = hit(&cache, "c1").expect("kept").view(50, Micros(T0));
        assert_eq!(served, s, "a hit answers what was read");
        let counts = Counts {
            hits: 1,
            misses: 1,
            off: 1,
        };
        let (so_far, kept, bytes) = cache.counts();
        assert_eq!((so_far, kept), (counts, 1));
        assert!(bytes > 0, "the kept context is counted in bytes");
        assert_eq!(cache.counts().0, counts, "reading the counts keeps them");
        cache.clear(false);
        assert!(matches!(
            cache.begin("c1", 50, Micros(T0), None),
            Lookup::Off
        ));
    }

    #[test]
    fn a_read_overtaken_by_an_invalidation_or_a_clear_is_not_kept() {
        let cache = ContextCache::new(1 << 20);
        cache.clear(true);
        let s = snapshot(1, 10, &[], false);
        // Invalidated while the read was under way.
        let t = ticket(&cache, "c1");
        cache.invalidate("c1");
        cache.finish("c1", t, kept(&s, 50));
        assert!(!cache.holds("c1"));
        // Cleared (a connection lost) while it was under way, even though
        // another read has put a placeholder since.
        let t = ticket(&cache, "c1");
        cache.clear(true);
        let _later = ticket(&cache, "c1");
        cache.finish("c1", t, kept(&s, 50));
        assert!(!cache.holds("c1"));
        // A later read's placeholder replaces an earlier one's.
        let first = ticket(&cache, "c2");
        let second = ticket(&cache, "c2");
        cache.finish("c2", first, kept(&s, 50));
        assert!(!cache.holds("c2"), "the older read is not kept");
        cache.finish("c2", second, kept(&s, 50));
        assert!(cache.holds("c2"));
        // And a kept context goes on invalidation.
        cache.invalidate("c2");
        assert!(!cache.holds("c2"));
    }

    #[test]
    fn a_hit_needs_enough_events_contacts_from_early_enough_and_the_same_journeys() {
        let cache = ContextCache::new(1 << 20);
        cache.clear(true);
        let s = snapshot(5, 10, &[], false);
        let t = ticket(&cache, "c1");
        cache.finish("c1", t, kept(&s, 5));
        let fewer = cache.begin("c1", 3, Micros(T0 + 5), None);
        let Lookup::Hit(k) = fewer else {
            panic!("fewer events from later are served")
        };
        assert_eq!(k.view(3, Micros(T0 + 5)).events.len(), 3);
        assert!(matches!(
            cache.begin("c1", 6, Micros(T0), None),
            Lookup::Miss(_)
        ));
        let t = ticket(&cache, "c1");
        cache.finish("c1", t, kept(&s, 50));
        assert!(matches!(
            cache.begin("c1", 50, Micros(T0 - 1), None),
            Lookup::Miss(_)
        ));
        let t = ticket(&cache, "c1");
        cache.finish("c1", t, kept(&s, 50));
        let definitions = Arc::new(JourneyDefinitions::default());
        assert!(matches!(
            cache.begin("c1", 50, Micros(T0), Some(&definitions)),
            Lookup::Miss(_)
        ));
    }

    #[test]
    fn contacts_are_cut_at_the_asked_instant() {
        let s = snapshot(1, 10, &[T0, T0 + 10, T0 + 20], false);
        let k = kept(&s, 50);
        let whole = k.view(50, Micros(T0));
        assert_eq!(whole.contacts.len(), 3);
        // Nothing cut: the kept contacts themselves, shared.
        assert!(Arc::ptr_eq(
            &whole.contacts,
            &k.view(50, Micros(T0 - 5)).contacts
        ));
        let later = k.view(50, Micros(T0 + 10));
        let at: Vec<i64> = later.contacts.iter().map(|c| c.at.0).collect();
        assert_eq!(at, vec![T0 + 10, T0 + 20], "from the instant on, inclusive");
        assert!(!later.contacts_capped);
    }

    #[test]
    fn a_capped_read_answers_only_its_own_window() {
        // More contacts than a context holds: those left out may or may
        // not fall in a later window, so only the same one is served.
        let cache = ContextCache::new(1 << 20);
        cache.clear(true);
        let s = snapshot(1, 10, &[T0, T0 + 10], true);
        let t = ticket(&cache, "c1");
        cache.finish("c1", t, kept(&s, 50));
        let Lookup::Hit(k) = cache.begin("c1", 50, Micros(T0), None) else {
            panic!("the same window is served")
        };
        assert!(k.view(50, Micros(T0)).contacts_capped);
        assert!(matches!(
            cache.begin("c1", 50, Micros(T0 + 1), None),
            Lookup::Miss(_)
        ));
    }

    #[test]
    fn views_of_one_read_share_its_renderings_and_a_new_read_does_not() {
        let read = snapshot(3, 10, &[T0], false);
        let cached = kept(&read, 3);
        let rendered = |s: &ContextSnapshot, made: &'static str| {
            s.rendered
                .get_or_init(|| [Bytes::from_static(made.as_bytes()), Bytes::new()])
        };
        // The read's own call renders; the views after it answer the same.
        assert_eq!(rendered(&read, "first")[0], "first");
        assert_eq!(rendered(&cached.view(3, Micros(T0)), "again")[0], "first");
        assert_eq!(
            rendered(&cached.view(1, Micros(T0 + 1)), "again")[0],
            "first"
        );
        let next = kept(&snapshot(3, 10, &[T0], false), 3);
        assert_eq!(
            rendered(&next.view(3, Micros(T0)), "new read")[0],
            "new read"
        );
    }

    #[test]
    fn kept_bytes_are_copied_out_of_the_reply() {
        let s = snapshot(3, 100, &[T0], false);
        let k = kept(&s, 50);
        let view = k.view(50, Micros(T0));
        assert_eq!(view.last_customer_interaction, s.last_customer_interaction);
        // Not a slice of the reply's buffer: another allocation.
        let ptr = |e: &Option<EncodedEvent>| e.as_ref().map(|e| e.0.as_ptr());
        assert_ne!(
            ptr(&view.last_customer_interaction),
            ptr(&s.last_customer_interaction)
        );
        // The events were copied out by the read: kept and viewed as
        // they are, no copy.
        assert_eq!(view.events, s.events);
        assert_eq!(view.events.framed().as_ptr(), s.events.framed().as_ptr());
        let fewer = k.view(2, Micros(T0));
        assert_eq!(fewer.events, s.events.first(2));
        assert_eq!(fewer.events.framed().as_ptr(), s.events.framed().as_ptr());
    }

    #[test]
    fn the_cache_keeps_within_its_bytes_and_drops_the_least_recent() {
        let s = snapshot(10, 1_000, &[], false);
        let one = kept(&s, 50).bytes;
        let cache = ContextCache::new(3 * one);
        cache.clear(true);
        for c in ["a", "b", "c", "d"] {
            let t = ticket(&cache, c);
            cache.finish(c, t, kept(&s, 50));
            assert!(cache.bytes() <= 3 * one);
        }
        assert!(!cache.holds("a"), "the oldest went");
        assert!(cache.holds("b") && cache.holds("d"));
        assert_eq!(cache.counts().1, 3, "the kept count follows evictions");
        let t = ticket(&cache, "e");
        assert!(cache.counts().1 <= 3, "a placeholder is not kept context");
        cache.invalidate("b");
        cache.finish("e", t, kept(&s, 50));
        let kept_now = ["b", "c", "d", "e"]
            .iter()
            .filter(|c| cache.holds(c))
            .count();
        assert_eq!(cache.counts().1, kept_now, "and invalidations");
        cache.forget_all();
        assert_eq!(cache.counts().1, 0, "and a clear");
        // A context larger than the whole cache is not kept.
        let small = ContextCache::new(one / 2);
        small.clear(true);
        let t = ticket(&small, "a");
        small.finish("a", t, kept(&s, 50));
        assert!(!small.holds("a"));
        assert_eq!(small.bytes(), 0, "nor its placeholder");
    }
}
