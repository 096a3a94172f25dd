//! Storage of customer timelines: the `TimelineStore` trait, the contract
//! that both backends keep (proved by the conformance suite in
//! `tests/conformance.rs`), and the types it speaks.
//!
//! Events are kept in their protobuf wire encoding (`EncodedEvent`), written
//! once at append and handed back as bytes, so a read never decodes and
//! re-encodes what it only forwards.

pub mod codec;
mod commands;
mod context_cache;
pub mod error;
mod framed_events;
pub mod journeys;
mod memory_journeys;
pub mod memory_store;
mod memory_timeline;
pub mod profiles;
mod redis_conn;
mod redis_journeys;
mod redis_keys;
mod redis_profiles;
#[doc(hidden)]
pub mod redis_raw;
mod redis_replies;
pub mod redis_stats;
pub mod redis_store;
mod redis_tracking;
mod resp;

use std::{collections::BTreeSet, sync::Arc};

use async_trait::async_trait;
use bytes::Bytes;

use crate::domain::{
    journey::{Day, DayCounters, JourneyState},
    Contact, CustomerId, CustomerSummary, Event, Identity, Initiator, LinkedIdentity, MergeRecord,
    Micros,
};

pub use error::StorageError;
pub use framed_events::FramedEvents;
pub use journeys::{JourneyListPage, JourneyListQuery, JourneyTracker, ListingCursor};
pub use memory_store::MemoryStore;
pub use redis_store::RedisStore;

/// One event in the protobuf wire encoding of `journey.v1.Event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent(pub Bytes);

/// What became of one appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    Stored,
    /// An event with the same id was already stored for the customer;
    /// nothing was written.
    Duplicate,
}

/// How much of a customer's timeline is kept; enforced on every write.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// At most this many events per customer: the oldest go first.
    pub max_events: usize,
    /// Events older than this go, and a customer with no write for this
    /// long is forgotten altogether.
    pub max_age_micros: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_events: 1_000,
            max_age_micros: 90 * 86_400 * Micros::PER_SECOND,
        }
    }
}

/// Most contacts a context reads (the latest ones): the context's contact
/// counts are for people to read, and the bound keeps its cost flat
/// however often a customer is contacted.
pub const CONTEXT_MAX_CONTACTS: usize = 100;

/// What one sweeper pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Deadline entries read: `max` means more may be due.
    pub due: usize,
    /// Journeys dropped.
    pub dropped: usize,
}

/// What `GetJourneyContext` needs from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextSnapshot {
    /// The most recent events, newest first, framed as the response
    /// carries them.
    pub events: FramedEvents,
    /// The summary, identities, merges and journeys are shared: the
    /// context cache hands the same ones to every call it answers.
    pub summary: Arc<CustomerSummary>,
    pub last_customer_interaction: Option<EncodedEvent>,
    pub last_company_contact: Option<EncodedEvent>,
    /// Contacts (company events and reservations) since the asked instant,
    /// at most the latest `CONTEXT_MAX_CONTACTS`.
    pub contacts: Arc<[Contact]>,
    /// There were more contacts than `CONTEXT_MAX_CONTACTS`.
    pub contacts_capped: bool,
    /// The profile read: the one asked for, or the one it was merged into.
    pub profile: CustomerId,
    pub identities: Arc<[LinkedIdentity]>,
    pub merges: Arc<[MergeRecord]>,
    /// The customer's state in every journey they have a state in.
    pub journeys: Arc<[JourneyState]>,
    /// What the transport renders of this snapshot (the summary, identities,
    /// merges and last events; the contact counts while they hold): kept
    /// with the snapshot and shared with every view of it the context
    /// cache hands out, so a hit renders them once. A view must therefore
    /// keep every part a rendering reads as the read gave it (`Cached::view`
    /// cuts only the events and the contacts, and the counts' rendering
    /// holds only while the contacts it counted are the view's).
    pub rendered: Rendered,
}

#[cfg(test)]
impl ContextSnapshot {
    /// A snapshot of `profile` holding nothing, for tests to fill.
    pub(crate) fn empty(profile: &str) -> Self {
        Self {
            events: FramedEvents::default(),
            summary: Default::default(),
            last_customer_interaction: None,
            last_company_contact: None,
            contacts: Arc::from([]),
            contacts_capped: false,
            profile: CustomerId::parse(
                "customer_id",
                profile,
                &crate::domain::EventLimits::default(),
            )
            .expect("a valid customer id"),
            identities: Arc::from([]),
            merges: Arc::from([]),
            journeys: Arc::from([]),
            rendered: Default::default(),
        }
    }
}

/// A snapshot's renderings by the transport (opaque to the store): one
/// made at most once, and one per `TimedPart` that holds over a span of
/// time, made again when it ends. They are derived from the snapshot, so they never make two
/// snapshots differ: all compare equal.
#[derive(Clone, Default)]
pub struct Rendered(Arc<Renderings>);

#[derive(Default)]
struct Renderings {
    fixed: std::sync::OnceLock<[bytes::Bytes; 2]>,
    timed: [arc_swap::ArcSwapOption<Timed>; 2],
}

/// The renderings of a snapshot that hold over a span of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimedPart {
    /// Until a contact comes due or leaves a window.
    ContactCounts = 0,
    /// Until a finished journey leaves the context's look-back.
    Journeys = 1,
}

/// A rendering made at `from` with `key`, true until `until` (µs).
struct Timed {
    key: Arc<dyn std::any::Any + Send + Sync>,
    from: i64,
    until: i64,
    bytes: bytes::Bytes,
}

impl Rendered {
    /// The rendering (in two parts), made by `render` if this is the first
    /// call. A call that comes while another renders waits for it.
    pub fn get_or_init(&self, render: impl FnOnce() -> [bytes::Bytes; 2]) -> [bytes::Bytes; 2] {
        self.0.fixed.get_or_init(render).clone()
    }

    /// The rendering for the instant `now` (µs) and `key` (the same object,
    /// not an equal one: it is held, so its address is not reused): the one
    /// kept if it was made with this key, at or before `now`, and holds
    /// after it; else `render`'s, which says until when it holds, and is
    /// kept in its place.
    pub fn timed(
        &self,
        part: TimedPart,
        key: &Arc<dyn std::any::Any + Send + Sync>,
        now: i64,
        render: impl FnOnce() -> (bytes::Bytes, i64),
    ) -> bytes::Bytes {
        let slot = &self.0.timed[part as usize];
        if let Some(kept) = &*slot.load() {
            if std::ptr::addr_eq(Arc::as_ptr(&kept.key), Arc::as_ptr(key))
                && kept.from <= now
                && now < kept.until
            {
                return kept.bytes.clone();
            }
        }
        let (bytes, until) = render();
        slot.store(Some(Arc::new(Timed {
            key: key.clone(),
            from: now,
            until,
            bytes: bytes.clone(),
        })));
        bytes
    }
}

impl PartialEq for Rendered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Rendered({:?} bytes)",
            self.0.fixed.get().map(|[a, b]| a.len() + b.len())
        )
    }
}

/// What became of a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The absorbed profile's events, contacts and identities are now the
    /// survivor's; the absorbed id leads to the survivor.
    Merged,
    /// Both ids already lead to the same profile.
    AlreadyOne,
    /// The merge would break a rule; nothing changed.
    Refused(String),
}

/// What `forget` erased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    /// The profile the id led to, erased.
    pub profile: CustomerId,
    /// Events it held.
    pub events: u64,
    /// Identities linked to it (customer ids included).
    pub identities: u64,
    /// Profiles merged into it, whose ids led to it and lead nowhere now.
    pub merged: Vec<CustomerId>,
}

/// What the contact policy needs to know of one customer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactHistory {
    /// Whether anything is held for the customer (events or contacts).
    pub known: bool,
    /// Contacts since the asked instant, oldest first.
    pub contacts: Vec<Contact>,
    /// The `timezone` attribute of the customer's latest event with one.
    pub timezone: Option<String>,
    /// Changes whenever a contact is added; a reservation made against a
    /// version that is no longer current is refused.
    pub version: u64,
    /// The profile these were read from when the customer's was merged
    /// into it: where a reservation decided on them goes.
    pub read_from: Option<CustomerId>,
}

/// What became of a reservation (`TimelineStore::reserve_contact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    Recorded,
    /// Not recorded: the contact version moved, or the customer was merged
    /// away, since the read (read again, through the merge, and decide
    /// again).
    Stale,
    /// Not recorded: the profile already holds an event or a contact with
    /// the reservation's id, one the read did not return (older than it
    /// looked back, or not a contact). Recorded, it would count until it
    /// left the window: an event with its id would be a duplicate, not its
    /// replacement.
    IdTaken,
}

/// A position in a timeline: the last event a page returned. The order is
/// newest first by occurred_at, ties broken by event id (see `codec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub occurred_at: Micros,
    pub event_id: String,
}

/// A filtered, paginated read of one customer's timeline.
#[derive(Debug, Clone)]
pub struct TimelineQuery {
    pub customer: CustomerId,
    /// Inclusive.
    pub start: Option<Micros>,
    /// Exclusive.
    pub end: Option<Micros>,
    /// Empty: every channel.
    pub channels: BTreeSet<String>,
    pub initiator: Option<Initiator>,
    pub limit: usize,
    /// Continue after this event.
    pub after: Option<Cursor>,
}

impl TimelineQuery {
    fn keeps_event(&self, channel: &str, initiator: Option<Initiator>) -> bool {
        (self.channels.is_empty() || self.channels.contains(channel))
            && (self.initiator.is_none() || self.initiator == initiator)
    }

    fn filters_by_content(&self) -> bool {
        !self.channels.is_empty() || self.initiator.is_some()
    }
}

/// One page of a timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelinePage {
    pub events: Vec<EncodedEvent>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// What a store's caches and its Redis connection did since it opened,
/// read at each scrape of the metrics endpoint. Counters only grow; sizes
/// are estimates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// The store's Redis connection (not the context cache's own).
    pub redis: Option<redis_stats::RedisStats>,
    /// The context cache, when the store has one.
    pub context: Option<ContextCacheStats>,
    /// The journey states cache, when the store has one.
    pub journey_states: Option<JourneyStatesStats>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextCacheStats {
    /// Contexts answered from memory.
    pub hits: u64,
    /// Contexts read from Redis while the cache served.
    pub misses: u64,
    /// Contexts read from Redis while the cache was off (its link to Redis
    /// not whole).
    pub off: u64,
    /// Contexts kept now.
    pub entries: u64,
    /// Their estimated size, in bytes.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JourneyStatesStats {
    /// Customers' writes sent again because this instance's copy of their
    /// journey states was not the current one: each cost a round trip.
    pub stale: u64,
    /// Customers whose states are kept now.
    pub entries: u64,
    /// Their estimated size, in bytes.
    pub bytes: u64,
}

/// The contract of a timeline store. Every backend keeps every guarantee
/// stated here; `tests/conformance.rs` runs the same cases on each.
#[async_trait]
pub trait TimelineStore: Send + Sync + 'static {
    /// Appends events (of any customers) and answers one outcome per event,
    /// in order. Each goes to the profile `event.profile` leads to (its
    /// survivor, once merged), with its identities recorded there. An event
    /// id already stored in that profile, earlier or in the same call, is a
    /// duplicate and writes nothing. Retention is
    /// applied, with `now` as the clock, to each customer written. With a
    /// journey tracker, the customer's journey states, stat counters,
    /// listings and deadlines change in the same atomic step. On the Redis
    /// backend this is one round trip and atomic per customer (two when
    /// this instance's copy of the customer's journey states is stale).
    async fn append(
        &self,
        events: &[Event],
        now: Micros,
    ) -> Result<Vec<AppendOutcome>, StorageError>;

    /// The customer's most recent `max_events` events and summaries, with
    /// the contacts since `contacts_since`, or `None` when no event is held
    /// for the customer. One round trip.
    async fn context(
        &self,
        customer: &CustomerId,
        max_events: usize,
        contacts_since: Micros,
    ) -> Result<Option<ContextSnapshot>, StorageError>;

    /// The contact histories of customers since `since`, in input order.
    /// For one customer the read is one round trip and consistent (its
    /// version matches its contacts); for many it is pipelined, a bounded
    /// number of customers per round trip.
    async fn contacts(
        &self,
        customers: &[CustomerId],
        since: Micros,
    ) -> Result<Vec<ContactHistory>, StorageError>;

    /// Records a reserved contact if the customer's contact history is
    /// still at `expected_version` and holds no event or contact with its
    /// id. An event appended later with the reservation's id replaces it
    /// rather than counting twice.
    async fn reserve_contact(
        &self,
        customer: &CustomerId,
        contact: &Contact,
        expected_version: u64,
        now: Micros,
    ) -> Result<Reserved, StorageError>;

    /// A page of the customer's timeline, newest first, or `None` when
    /// nothing is held for the customer. Events appended while a client
    /// pages are never repeated, and none is skipped unless it lands in a
    /// part of the timeline the client already passed. One round trip.
    async fn list(&self, query: &TimelineQuery) -> Result<Option<TimelinePage>, StorageError>;

    /// The profile each identity is linked to, without following merges.
    /// A `customer_id` identity names its profile directly. One round trip.
    async fn resolve(
        &self,
        identities: &[Identity],
    ) -> Result<Vec<Option<CustomerId>>, StorageError>;

    /// The profile an id leads to now (following merges, completing any
    /// merge left half done), or `None` when nothing is held under it.
    async fn canonical(&self, profile: &CustomerId) -> Result<Option<CustomerId>, StorageError>;

    /// The identities of the profile an id leads to.
    async fn identities(&self, profile: &CustomerId) -> Result<Vec<LinkedIdentity>, StorageError>;

    /// Links each identity not linked yet to `profile`, recording it on
    /// the profile; answers, for each, the profile it is linked to after
    /// the call (another one if it was linked before). `customer_id`
    /// identities are not linked this way: their profile is their value.
    /// When the profile would then hold what the store's merge rules
    /// forbid (checked atomically with the write, so racing links cannot
    /// together break them), nothing is linked and the answer is
    /// `Err(reason)`.
    async fn link(
        &self,
        profile: &CustomerId,
        identities: &[Identity],
        at: Micros,
    ) -> Result<Result<Vec<CustomerId>, String>, StorageError>;

    /// Merges `absorbed` into `survivor`: events (each once: event ids
    /// still deduplicate), summaries, contacts, identities and merge
    /// history move, and the absorbed id and identities lead to the
    /// survivor from then on. Idempotent; a reader never sees a half-moved
    /// timeline, and a merge interrupted halfway is completed by the next
    /// operation on the absorbed profile. Refused, changing nothing, when
    /// the store's merge rules would be broken.
    /// The store's merge rules (`merge` and its recovery apply them).
    async fn merge(
        &self,
        survivor: &CustomerId,
        absorbed: &CustomerId,
        at: Micros,
    ) -> Result<MergeOutcome, StorageError>;

    /// Removes an identity from a profile going forward: it no longer
    /// leads there, events already stored stay. Answers whether it was
    /// linked to the profile.
    async fn unlink(&self, profile: &CustomerId, identity: &Identity)
        -> Result<bool, StorageError>;

    /// Erases the profile an id leads to (following merges): its events,
    /// contacts and reservations, summary, journey states (and their
    /// listing and deadline entries), identities (their index entries,
    /// where they still lead to it) and the ids of the profiles merged
    /// into it. The journeys' day counters, which name no one, stay. An
    /// event or merge arriving meanwhile may start the profile again.
    /// `None` when nothing is held under it.
    async fn forget(&self, profile: &CustomerId) -> Result<Option<Forgotten>, StorageError>;

    /// The stat counters of `journey` for each of `days`, in order (empty
    /// for a day without any). One round trip.
    async fn journey_counters(
        &self,
        journey: &str,
        days: &[Day],
    ) -> Result<Vec<DayCounters>, StorageError>;

    /// A page of a journey listing: the customers in a status (at a step),
    /// by the instant they entered it. One round trip.
    async fn list_journeys(
        &self,
        query: &JourneyListQuery,
    ) -> Result<JourneyListPage, StorageError>;

    /// Reads up to `max` entries of the deadline index at or before `now`
    /// and drops their journeys, each once however many instances sweep.
    async fn sweep_journeys(&self, now: Micros, max: usize) -> Result<Swept, StorageError>;

    /// Bounds the journey indexes: forgets listing entries older than the
    /// retention (their customers may be gone) and stat counters of days
    /// more than `STATS_KEPT_DAYS` ago. Called now and then by the sweeper.
    async fn trim_journeys(&self, now: Micros) -> Result<(), StorageError>;

    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StorageError>;

    /// What the store's caches and Redis connection did so far (none by
    /// default).
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}
