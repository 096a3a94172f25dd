//! The Redis store: each customer's timeline is a sorted set of encoded
//! events (score = occurred_at in µs), with a hash of event ids for
//! idempotency and a hash of summary figures kept by the append script.
//!
//! Every RPC is one round trip: appends are one `EVALSHA` per customer,
//! all sent in one pipeline; reads are plain commands in one pipeline (a
//! script that returns events costs Redis about 3× a plain `ZREVRANGE`).
//! All of a customer's keys share the `{<customer_id>}` hash tag, so every
//! script and pipeline touches one Redis Cluster slot per customer.
//!
//! Every call goes through one multiplexed connection (`redis_conn`) whose
//! replies are zero-copy frames: the hot reads (context, page, contacts)
//! read events and entries in place (a page's events as slices of the
//! reply, a context's copied once into one framed run); the rest parse them with redis-rs's
//! `FromRedisValue`. redis-rs still builds the commands and scripts.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use redis::IntoConnectionInfo;

use super::{
    codec,
    commands::Pipeline,
    context_cache::{Cached, Lookup},
    redis_conn::{Frames, LuaScript, RedisConnection},
    redis_journeys::{
        kept_started_states, push_write_set, stale_reply, started_states, RedisJourneys,
        StatesCache, VersionedStates,
    },
    redis_keys::{index_key_of_packed, packed_identity, Keys},
    redis_replies::{self as replies, SummaryHash},
    redis_tracking::CachedReads,
    resp::{Frame, Reply},
    AppendOutcome, ContactHistory, ContextCacheStats, ContextSnapshot, Cursor, EncodedEvent,
    Forgotten, FramedEvents, JourneyListPage, JourneyListQuery, JourneyTracker, MergeOutcome,
    Reserved, Retention, StorageError, StoreStats, Swept, TimelinePage, TimelineQuery,
    TimelineStore, CONTEXT_MAX_CONTACTS,
};
use crate::domain::{
    event::CUSTOMER_ID_IDENTITY,
    journey::{Day, DayCounters, JourneyDefinitions},
    Contact, ContactNames, CustomerId, Event, Identity, Initiator, LinkedIdentity, MergeRules,
    Micros,
};

const JOURNEY_WRITES: &str = include_str!("journey_writes.lua");
const APPEND_SCRIPT: &str = include_str!("append.lua");
const SWEEP_SCRIPT: &str = include_str!("sweep.lua");
const RESERVE_SCRIPT: &str = include_str!("reserve.lua");
const CONTACT_TRIM: &str = include_str!("contact_trim.lua");
const CAS_SCRIPT: &str = include_str!("cas.lua");
const MERGE_RULES: &str = include_str!("merge_rules.lua");
const LINK_SCRIPT: &str = include_str!("link.lua");
const PUSH_SCRIPT: &str = include_str!("push.lua");
const PROFILE_EXPIRY: &str = include_str!("profile_expiry.lua");

/// How many merges a read or write follows before giving up: merges point
/// at a survivor that was alive then, so real chains are short.
pub(super) const MAX_HOPS: usize = 16;

/// Customers per round trip when reading many contact histories: large
/// enough that a 10,000-customer list takes ten round trips, small enough
/// that one reply stays a few megabytes.
const CUSTOMERS_PER_ROUND_TRIP: usize = 1_000;

/// A Redis URL without its credentials (user and password, in the
/// authority or, for a Unix socket, in the query), for logs and errors.
pub fn redacted_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return "redis".into();
    };
    let _ = u.set_password(None);
    let _ = u.set_username("");
    if u.query().is_some() {
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| k != "pass" && k != "user")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            u.set_query(None);
        } else {
            u.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    u.into()
}

/// Settings of the connection to Redis (`Debug` leaves credentials out).
#[derive(Clone)]
pub struct RedisSettings {
    pub url: String,
    /// How long one command (or pipeline) may take before it fails.
    pub response_timeout: Duration,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redacted_url(&self.url))
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

pub struct RedisStore {
    /// One multiplexed connection for every call (see `redis_conn`).
    pub(super) conn: RedisConnection,
    pub(super) append_script: LuaScript,
    reserve_script: LuaScript,
    pub(super) cas_script: LuaScript,
    pub(super) link_script: LuaScript,
    pub(super) push_script: LuaScript,
    pub(super) sweep_script: LuaScript,
    pub(super) retention: Retention,
    pub(super) rules: MergeRules,
    pub(super) journeys: Option<RedisJourneys>,
    /// The context cache, when on (`with_context_cache`).
    cached_reads: Option<CachedReads>,
}

impl RedisStore {
    /// A store on the Redis at `settings.url`. The URL is checked now; the
    /// connection is made on first use and remade after a failure, so the
    /// service can start (and report NOT_SERVING) while Redis is down.
    pub fn open(
        settings: &RedisSettings,
        retention: Retention,
        rules: MergeRules,
    ) -> Result<Self, StorageError> {
        let info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| StorageError::Unavailable(format!("bad Redis URL: {e}")))?;
        let conn =
            RedisConnection::new(&info, settings.connect_timeout, settings.response_timeout)?;
        Ok(Self {
            conn,
            append_script: LuaScript::new(format!(
                "{JOURNEY_WRITES}\n{CONTACT_TRIM}\n{MERGE_RULES}\n{PROFILE_EXPIRY}\n{APPEND_SCRIPT}"
            )),
            sweep_script: LuaScript::new(format!("{JOURNEY_WRITES}\n{SWEEP_SCRIPT}")),
            reserve_script: LuaScript::new(format!(
                "{CONTACT_TRIM}\n{PROFILE_EXPIRY}\n{RESERVE_SCRIPT}"
            )),
            cas_script: LuaScript::new(CAS_SCRIPT.to_string()),
            link_script: LuaScript::new(format!("{MERGE_RULES}\n{LINK_SCRIPT}")),
            push_script: LuaScript::new(PUSH_SCRIPT.to_string()),
            retention,
            rules,
            journeys: None,
            cached_reads: None,
        })
    }

    /// Follows customers through the tracker's journeys as events arrive,
    /// caching the journey states of up to `cache_profiles` profiles in
    /// about `cache_bytes` of memory.
    pub fn with_journeys(
        mut self,
        tracker: JourneyTracker,
        cache_profiles: usize,
        cache_bytes: usize,
    ) -> Self {
        self.journeys = Some(RedisJourneys {
            tracker,
            cache: StatesCache::new(cache_profiles, cache_bytes),
        });
        self
    }

    /// Keeps journey contexts read in this instance's memory, up to
    /// `max_bytes` (estimated), kept true by Redis's invalidations (see
    /// `context_cache.rs`); 0 keeps none. Starts the invalidation listener,
    /// so it needs a Tokio runtime; the cache serves once it is subscribed.
    pub fn with_context_cache(mut self, max_bytes: usize) -> Result<Self, StorageError> {
        self.cached_reads = match max_bytes {
            0 => None,
            _ => Some(CachedReads::start(&self.conn, max_bytes)?),
        };
        Ok(self)
    }

    /// Forgets the contexts of customers this instance just wrote: Redis
    /// invalidates them too, but on another socket, maybe after the writer
    /// has its answer and reads again. Called once the write is answered
    /// (or failed: it may have landed), so a read that began before it
    /// cannot be kept either.
    pub(super) fn written<'a>(&self, profiles: impl IntoIterator<Item = &'a CustomerId>) {
        if let Some(cached) = &self.cached_reads {
            for profile in profiles {
                cached.cache.invalidate(profile.as_str());
            }
        }
    }

    /// How long a profile's keys live without a write: the retention, in ms.
    pub(super) fn ttl_ms(&self) -> i64 {
        (self.retention.max_age_micros / 1_000).max(1)
    }

    /// How long a key leading to a profile from another slot (an identity's
    /// index key, a merged profile's alias) lives: a little longer than the
    /// profile (whose keys live up to `ttl_ms` + 1 %), so a lookup never
    /// misses a profile that is still held.
    pub(super) fn identity_ttl_ms(&self) -> i64 {
        let ttl = self.ttl_ms();
        ttl.saturating_add(ttl / 50)
    }

    /// Pushes the expiry of the keys that lead to profiles from other
    /// slots (their identities' index keys, their merged profiles'
    /// aliases), each only if it still leads there (push.lua), as the
    /// append script asks when it pushed a profile's. Rare (about once per
    /// 1 % of the retention per active profile, and a profile's first
    /// write), so it costs a round trip of its own, one for all the
    /// profiles of a call. A failure is logged, not returned: the events
    /// are stored, and the next push tries again long before the keys
    /// expire.
    pub(super) async fn push_leads(&self, leads: &[(CustomerId, Vec<Lead>)]) {
        let count: usize = leads.iter().map(|(_, l)| l.len()).sum();
        if count == 0 {
            return;
        }
        let ttl = self.identity_ttl_ms();
        let mut pipe = Pipeline::new();
        for (profile, leads) in leads {
            for lead in leads {
                let call = self.push_script.call(&mut pipe).key(lead.key().as_slice());
                match lead {
                    Lead::Identity(_) => call.arg(profile.as_str()).arg(""),
                    Lead::Merged(_) => call.arg("done:").arg("prefix"),
                };
                call.arg(ttl);
            }
        }
        if let Err(error) = self
            .query_scripts::<redis::Value>(&self.push_script, &pipe)
            .await
        {
            tracing::warn!(%error, keys = count, "pushing the expiry of the keys leading to a profile failed");
        }
    }

    /// Opens the append script's call on a profile in `pipe`, with the
    /// header filled in and no event yet (see append.lua for the layout).
    pub(super) fn append_call<'p>(
        &self,
        pipe: &'p mut Pipeline,
        keys: &Keys,
        now: Micros,
        shape: CallShape,
    ) -> &'p mut Pipeline {
        let cutoff = now.saturating_sub_micros(self.retention.max_age_micros);
        let ttl_ms = self.ttl_ms();
        let call = self.append_script.call(pipe);
        for key in keys.scripts_keys() {
            call.key(key);
        }
        call.arg(cutoff.0)
            .arg(self.retention.max_events)
            .arg(ttl_ms)
            .arg(shape.events)
            .arg(shape.identities)
            .arg(shape.reservations);
        match shape.merge {
            None => {
                call.arg("").arg("").arg("").arg(0).arg("");
            }
            Some(merge) => {
                let unique: Vec<&str> =
                    self.rules.unique_types.iter().map(String::as_str).collect();
                let mut history = merge.at.0.to_string();
                for (from, at) in merge.history {
                    history.push('\u{1e}');
                    history.push_str(from);
                    history.push('\u{1f}');
                    history.push_str(at);
                }
                call.arg(merge.from.as_str())
                    .arg(history)
                    .arg(unique.join("\u{1f}"))
                    .arg(self.rules.max_identities)
                    .arg(
                        merge
                            .first_seen
                            .map(|m| m.0.to_string())
                            .unwrap_or_default(),
                    );
            }
        }
        match shape.journey_version {
            Some(version) => call.arg(version),
            None => call.arg(""),
        };
        call
    }

    /// Sends a pipeline of `script`'s calls (see `RedisConnection::query_scripts`).
    pub(super) async fn query_scripts<T: redis::FromRedisValue>(
        &self,
        script: &LuaScript,
        pipe: &Pipeline,
    ) -> Result<T, StorageError> {
        self.conn.query_scripts(script, pipe).await
    }
}

#[async_trait]
impl TimelineStore for RedisStore {
    async fn append(
        &self,
        events: &[Event],
        now: Micros,
    ) -> Result<Vec<AppendOutcome>, StorageError> {
        let mut outcomes = vec![AppendOutcome::Stored; events.len()];
        // Events by target profile, in order of first appearance.
        // Per profile: its events, and the journey states a retry must
        // start from (those the script answered), if any.
        let mut pending: Vec<(CustomerId, Vec<usize>, Option<Arc<VersionedStates>>)> = Vec::new();
        let mut group_of: HashMap<&CustomerId, usize> = HashMap::new();
        for (i, event) in events.iter().enumerate() {
            let g = *group_of.entry(&event.profile).or_insert_with(|| {
                pending.push((event.profile.clone(), Vec::new(), None));
                pending.len() - 1
            });
            pending[g].1.push(i);
        }
        // One pipeline for all profiles; a profile merged away answers its
        // alias instead, and its events go again to the survivor; one whose
        // journey states moved on answers them, and its events go again
        // with transitions computed from those.
        let tracking = self
            .journeys
            .as_ref()
            .map(|j| (j, j.tracker.definitions()))
            .filter(|(_, definitions)| !definitions.is_empty());
        for _ in 0..MAX_HOPS {
            if pending.is_empty() {
                return Ok(outcomes);
            }
            let mut pipe = Pipeline::new();
            let mut planned = Vec::with_capacity(pending.len());
            for (profile, indices, fresh) in &mut pending {
                let keys = Keys::of(profile);
                let journey = tracking.as_ref().map(|(journeys, definitions)| {
                    let prior = fresh.take().unwrap_or_else(|| journeys.cache.get(profile));
                    let mine = indices.iter().map(|&i| &events[i]);
                    let update =
                        journeys
                            .tracker
                            .track(definitions, &prior.states, &prior.recent, mine);
                    let version = prior.next_version();
                    (prior, update, version)
                });
                let shape = CallShape {
                    events: indices.len(),
                    journey_version: journey.as_ref().map(|(prior, _, _)| prior.version),
                    ..CallShape::default()
                };
                let call = self.append_call(&mut pipe, &keys, now, shape);
                for &i in indices.iter() {
                    EventArgs::of_event(&events[i]).push(call);
                }
                if let Some((_, update, version)) = &journey {
                    push_write_set(call, profile, update, *version);
                }
                planned.push(journey);
            }
            let replies: Result<Vec<redis::Value>, _> =
                self.query_scripts(&self.append_script, &pipe).await;
            self.written(pending.iter().map(|(profile, _, _)| profile));
            let replies = replies?;
            let mut again = Vec::new();
            let mut leads_of = Vec::new();
            for (((profile, indices, _), journey), reply) in
                pending.into_iter().zip(planned).zip(replies)
            {
                match AppendReply::parse(reply)? {
                    AppendReply::Outcomes(stored, leads) if stored.len() == indices.len() => {
                        if !leads.is_empty() {
                            leads_of.push((profile.clone(), leads));
                        }
                        for (&i, stored) in indices.iter().zip(stored) {
                            if stored == 0 {
                                outcomes[i] = AppendOutcome::Duplicate;
                            }
                        }
                        if let (Some((journeys, _)), Some((prior, update, version))) =
                            (&tracking, journey)
                        {
                            journeys
                                .cache
                                .put(&profile, prior.after(update.states, update.recent, version));
                        }
                    }
                    AppendReply::Outcomes(stored, _) => {
                        return Err(StorageError::Corrupt(format!(
                            "append script answered {} outcomes for {} events",
                            stored.len(),
                            indices.len()
                        )))
                    }
                    AppendReply::Merged => {
                        let survivor = self.follow(&profile).await?;
                        again.push((survivor, indices, None));
                    }
                    AppendReply::Stale(current) => {
                        // The script's answer is the truth, whatever the
                        // cache held (even a hash that expired meanwhile).
                        let current = Arc::new(current);
                        if let Some((journeys, _)) = &tracking {
                            journeys.cache.note_stale();
                            journeys.cache.put_shared(&profile, current.clone());
                        }
                        again.push((profile, indices, Some(current)));
                    }
                    AppendReply::Held(positions) => {
                        // Duplicates: answered as such, and the others go
                        // again with a write set computed without them.
                        let mut remaining = Vec::with_capacity(indices.len());
                        for (position, i) in indices.into_iter().enumerate() {
                            if positions.contains(&position) {
                                outcomes[i] = AppendOutcome::Duplicate;
                            } else {
                                remaining.push(i);
                            }
                        }
                        if remaining.is_empty() {
                            continue;
                        }
                        // Nothing was written: the states the call was
                        // computed from are still current.
                        let prior = journey.map(|(prior, _, _)| prior);
                        again.push((profile, remaining, prior));
                    }
                    AppendReply::Refused(reason) => return Err(StorageError::Corrupt(reason)),
                    AppendReply::MergedAgain(_) => {
                        return Err(StorageError::Corrupt(
                            "an append was answered as a merge run again".into(),
                        ))
                    }
                }
            }
            self.push_leads(&leads_of).await;
            pending = again;
        }
        Err(StorageError::Contention(
            "the customer's profile or journey states kept changing under the append".into(),
        ))
    }

    async fn context(
        &self,
        customer: &CustomerId,
        max_events: usize,
        contacts_since: Micros,
    ) -> Result<Option<ContextSnapshot>, StorageError> {
        let definitions = self
            .journeys
            .as_ref()
            .map(|j| j.tracker.definitions())
            .filter(|d| !d.is_empty());
        let read = |conn| {
            self.read_context(
                conn,
                customer,
                max_events,
                contacts_since,
                definitions.as_deref(),
            )
        };
        let id = customer.as_str();
        let lookup = match &self.cached_reads {
            None => None,
            Some(cached) => {
                match cached
                    .cache
                    .begin(id, max_events, contacts_since, definitions.as_ref())
                {
                    Lookup::Hit(kept) => return Ok(Some(kept.view(max_events, contacts_since))),
                    Lookup::Miss(ticket) => Some((cached, ticket)),
                    Lookup::Off => None,
                }
            }
        };
        let Some((cached, ticket)) = lookup else {
            return Ok(read(&self.conn).await?.map(|(snapshot, _)| snapshot));
        };
        let read_tracked = read(&cached.conn).await;
        // Whatever happens to the read, its placeholder goes unless filled.
        match read_tracked {
            Ok(Some((snapshot, true))) => {
                let kept = Cached::new(&snapshot, max_events, contacts_since, definitions.clone());
                cached.cache.finish(id, ticket, kept);
                Ok(Some(snapshot))
            }
            Ok(other) => {
                cached.cache.invalidate(id);
                Ok(other.map(|(snapshot, _)| snapshot))
            }
            // The tracked connection failed (the listener just went away,
            // say): the read goes once more on the main one, kept nowhere.
            Err(StorageError::Unavailable(_)) => {
                cached.cache.invalidate(id);
                Ok(read(&self.conn).await?.map(|(snapshot, _)| snapshot))
            }
            Err(error) => {
                cached.cache.invalidate(id);
                Err(error)
            }
        }
    }

    async fn contacts(
        &self,
        customers: &[CustomerId],
        since: Micros,
    ) -> Result<Vec<ContactHistory>, StorageError> {
        let mut histories = Vec::with_capacity(customers.len());
        for chunk in customers.chunks(CUSTOMERS_PER_ROUND_TRIP) {
            let read = match self.contact_histories(chunk, since, false).await? {
                Some(read) => read,
                // Entries written without their instant: read with scores.
                None => self
                    .contact_histories(chunk, since, true)
                    .await?
                    .ok_or_else(|| StorageError::Corrupt("contact entries need scores".into()))?,
            };
            histories.extend(read);
        }
        Ok(histories)
    }

    async fn reserve_contact(
        &self,
        customer: &CustomerId,
        contact: &Contact,
        expected_version: u64,
        now: Micros,
    ) -> Result<Reserved, StorageError> {
        let keys = Keys::of(customer);
        let cutoff = now.saturating_sub_micros(self.retention.max_age_micros);
        let mut pipe = Pipeline::new();
        let call = self.reserve_script.call(&mut pipe);
        for key in keys.scripts_keys() {
            call.key(key);
        }
        call.arg(expected_version)
            .arg(contact.at.0)
            .arg(contact.event_id())
            .arg(codec::pack_contact(contact))
            .arg(self.ttl_ms())
            .arg(cutoff.0)
            .arg(self.retention.max_events);
        let reply: Result<(redis::Value,), _> =
            self.query_scripts(&self.reserve_script, &pipe).await;
        self.written([customer]);
        let (reply,) = reply?;
        match ReserveReply::parse(reply)? {
            ReserveReply::Recorded(leads) => {
                self.push_leads(&[(customer.clone(), leads)]).await;
                Ok(Reserved::Recorded)
            }
            // The caller reads again (through the merge) and decides again.
            ReserveReply::NotRecorded => Ok(Reserved::Stale),
            ReserveReply::IdTaken => Ok(Reserved::IdTaken),
        }
    }

    async fn list(&self, query: &TimelineQuery) -> Result<Option<TimelinePage>, StorageError> {
        let mut query = query.clone();
        for _ in 0..MAX_HOPS {
            match self.list_once(&query).await? {
                Listed::Page(page) => return Ok(page),
                Listed::Merged => query.customer = self.follow(&query.customer).await?,
            }
        }
        Err(merges_kept_moving())
    }

    async fn forget(&self, profile: &CustomerId) -> Result<Option<Forgotten>, StorageError> {
        self.forget_profile(profile).await
    }

    async fn journey_counters(
        &self,
        journey: &str,
        days: &[Day],
    ) -> Result<Vec<DayCounters>, StorageError> {
        self.counters_of(journey, days).await
    }

    async fn list_journeys(
        &self,
        query: &JourneyListQuery,
    ) -> Result<JourneyListPage, StorageError> {
        self.listing_page(query).await
    }

    async fn sweep_journeys(&self, now: Micros, max: usize) -> Result<Swept, StorageError> {
        self.sweep(now, max).await
    }

    async fn trim_journeys(&self, now: Micros) -> Result<(), StorageError> {
        self.trim(now).await
    }

    /// Healthy when Redis answers and is a primary: after a failover the
    /// address may still lead to the demoted server (DNS not caught up, a
    /// proxy), which answers PING but refuses every write. Such a server's
    /// connection is let go, so the next call connects to wherever the
    /// address leads then. A server that refuses `ROLE` (an ACL without
    /// it, a proxy) is taken as a primary: its PING answered.
    async fn ping(&self) -> Result<(), StorageError> {
        let mut pipe = Pipeline::new();
        pipe.cmd("PING");
        pipe.cmd("ROLE");
        let on_a_replica = |replies: &[Reply]| replies.get(1).and_then(not_a_primary).is_some();
        // The context cache's reads have their own connection, which only
        // reads: nothing else would tell it that its server was demoted
        // (a failover that left the old primary up as a replica), and it
        // would go on reading from there what this instance writes to the
        // new primary. It is let go the same way, on its own task: what it
        // answers (or how long it takes) is the cache's business, whose
        // reads fall back, not the health check's.
        if let Some(reads) = &self.cached_reads {
            let conn = reads.conn.clone();
            let pipe = pipe.clone();
            tokio::spawn(async move {
                let _ = conn.query_then_let_go_if(&pipe, on_a_replica).await;
            });
        }
        let replies = self.conn.query_then_let_go_if(&pipe, on_a_replica).await?;
        if let Some(Reply {
            bytes,
            frame: Frame::Error(e),
        }) = replies.first()
        {
            return Err(StorageError::Unavailable(format!(
                "Redis answered PING with {}",
                String::from_utf8_lossy(&bytes[e.clone()])
            )));
        }
        match replies.get(1).and_then(not_a_primary) {
            Some(role) => Err(StorageError::Unavailable(format!(
                "Redis is not a primary (ROLE answered {role:?}): it would refuse writes"
            ))),
            None => Ok(()),
        }
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            redis: Some(self.conn.stats()),
            context: self.cached_reads.as_ref().map(|reads| {
                let (counts, kept, bytes) = reads.cache.counts();
                ContextCacheStats {
                    hits: counts.hits,
                    misses: counts.misses,
                    off: counts.off,
                    entries: kept as u64,
                    bytes: bytes as u64,
                }
            }),
            journey_states: self.journeys.as_ref().map(|j| j.cache.stats()),
        }
    }

    async fn resolve(
        &self,
        identities: &[Identity],
    ) -> Result<Vec<Option<CustomerId>>, StorageError> {
        self.resolve_identities(identities).await
    }

    async fn canonical(&self, profile: &CustomerId) -> Result<Option<CustomerId>, StorageError> {
        self.canonical_profile(profile).await
    }

    async fn identities(&self, profile: &CustomerId) -> Result<Vec<LinkedIdentity>, StorageError> {
        self.profile_identities(profile).await
    }

    async fn link(
        &self,
        profile: &CustomerId,
        identities: &[Identity],
        at: Micros,
    ) -> Result<Result<Vec<CustomerId>, String>, StorageError> {
        self.link_identities(profile, identities, at).await
    }

    async fn merge(
        &self,
        survivor: &CustomerId,
        absorbed: &CustomerId,
        at: Micros,
    ) -> Result<MergeOutcome, StorageError> {
        self.merge_profiles(survivor, absorbed, at).await
    }

    async fn unlink(
        &self,
        profile: &CustomerId,
        identity: &Identity,
    ) -> Result<bool, StorageError> {
        self.unlink_identity(profile, identity).await
    }
}

/// What one attempt at a page found.
enum Listed {
    Page(Option<TimelinePage>),
    Merged,
}

impl RedisStore {
    /// The journey states this instance holds for `profile`, if they are at
    /// `version` (as a states hash gives it; none for a hash not there).
    fn kept_states(
        &self,
        profile: &CustomerId,
        version: Option<&[u8]>,
    ) -> Option<Arc<VersionedStates>> {
        let version: u64 = std::str::from_utf8(version?).ok()?.parse().ok()?;
        let kept = self.journeys.as_ref()?.cache.get(profile);
        (version != 0 && kept.version == version).then_some(kept)
    }

    /// A context read over `conn`, and whether it may be kept by the
    /// context cache: only when read in one round trip from the customer's
    /// own keys (not those of a profile it was merged into, whose writes
    /// the cache would not link to this customer).
    async fn read_context(
        &self,
        conn: &RedisConnection,
        customer: &CustomerId,
        max_events: usize,
        contacts_since: Micros,
        definitions: Option<&JourneyDefinitions>,
    ) -> Result<Option<(ContextSnapshot, bool)>, StorageError> {
        let mut profile = customer.clone();
        for hop in 0..MAX_HOPS {
            let keys = Keys::of(&profile);
            let pipe = context_pipeline(&keys, max_events, contacts_since, definitions);
            let mut replies = Frames::new(conn.query(&pipe).await?);
            if replies.bulk()?.is_some() {
                profile = self.follow(&profile).await?;
                continue;
            }
            let members = replies.strings()?;
            let fields = replies.strings()?;
            let held = replies.int()?.max(0) as u64;
            if fields.is_empty() && held == 0 {
                return Ok(None);
            }
            let shown = members.len().min(max_events);
            // Copied out of the reply: a context kept by the cache would
            // otherwise keep the connection's whole read buffer alive.
            let events = FramedEvents::copied((0..shown).map(|i| members.get(i)));
            let (mut contacts, one_trip) = match replies::timed_contacts(&replies.strings()?)? {
                Some(contacts) => (contacts, hop == 0),
                None => (
                    self.latest_scored_contacts(&keys, contacts_since).await?,
                    false,
                ),
            };
            let capped = contacts.len() > CONTEXT_MAX_CONTACTS;
            contacts.truncate(CONTEXT_MAX_CONTACTS);
            contacts.reverse();
            let identities = replies::identities(replies::as_slices(&replies.pairs()?));
            let merges = replies::merges(replies::as_slices(&replies.pairs()?));
            // Only started journeys are shown. The states cache is left to
            // the writers (a reader's copy would cost more than it saves),
            // but when it holds the version read, its states are these:
            // versions are never reused, so their JSON need not be read.
            let journeys = match definitions {
                Some(definitions) => {
                    let mut json = replies.bulks_or_nil()?;
                    let version = json.pop().flatten();
                    match self.kept_states(&profile, version.as_deref()) {
                        Some(kept) => kept_started_states(definitions, &kept),
                        None => started_states(definitions.iter().map(|d| d.name()).zip(json)),
                    }
                }
                None => Vec::new(),
            };
            let summary = SummaryHash::read(&fields, held)?;
            let snapshot = ContextSnapshot {
                events,
                summary: summary.summary.into(),
                last_customer_interaction: summary.last_customer_interaction,
                last_company_contact: summary.last_company_contact,
                contacts: contacts.into(),
                contacts_capped: capped,
                profile,
                identities: identities.into(),
                merges: merges.into(),
                journeys: journeys.into(),
                rendered: Default::default(),
            };
            return Ok(Some((snapshot, one_trip)));
        }
        Err(merges_kept_moving())
    }

    /// The context's contact read again, with scores: for entries written
    /// before contact entries held their instant (one more round trip).
    async fn latest_scored_contacts(
        &self,
        keys: &Keys,
        since: Micros,
    ) -> Result<Vec<Contact>, StorageError> {
        let mut pipe = Pipeline::new();
        latest_contacts_cmd(&mut pipe, keys, since, true);
        replies::scored_contacts(Frames::new(self.conn.query(&pipe).await?).pairs()?)
    }

    /// The contact histories of a chunk of customers, in one round trip;
    /// `None` when an entry needs its score and `scores` is off.
    async fn contact_histories(
        &self,
        chunk: &[CustomerId],
        since: Micros,
        scores: bool,
    ) -> Result<Option<Vec<ContactHistory>>, StorageError> {
        let pipe = contacts_pipeline(chunk, since, scores);
        let mut replies = Frames::new(self.conn.query(&pipe).await?);
        let mut histories = Vec::with_capacity(chunk.len());
        for customer in chunk {
            let alias = replies.bulk()?;
            let exists = replies.int()?;
            let timezone = replies.bulk()?;
            let version = replies.bulk()?;
            let contacts = if scores {
                replies::scored_contacts(replies.pairs()?)?
            } else {
                match replies::timed_contacts(&replies.strings()?)? {
                    Some(contacts) => contacts,
                    None => return Ok(None),
                }
            };
            if alias.is_some() {
                // Merged away: read the survivor (rare, so one by one).
                let survivor = self.follow(customer).await?;
                let mut read =
                    Box::pin(self.contacts(std::slice::from_ref(&survivor), since)).await?;
                let mut history = read.pop().unwrap_or_default();
                history.read_from.get_or_insert(survivor);
                histories.push(history);
                continue;
            }
            histories.push(ContactHistory {
                known: exists > 0,
                contacts,
                timezone: timezone
                    .map(|tz| replies::text(&tz).map(str::to_string))
                    .transpose()?,
                version: match version {
                    None => 0,
                    Some(v) => replies::text(&v)?.parse().map_err(|_| {
                        StorageError::Corrupt("contact version is not a number".into())
                    })?,
                },
                read_from: None,
            });
        }
        Ok(Some(histories))
    }

    async fn list_once(&self, query: &TimelineQuery) -> Result<Listed, StorageError> {
        let (pipe, tie) = list_pipeline(query);
        let mut replies = Frames::new(self.conn.query(&pipe).await?);
        if replies.int()? > 0 {
            return Ok(Listed::Merged);
        }
        if replies.int()? == 0 {
            return Ok(Listed::Page(None));
        }
        let mut candidates: Vec<Bytes> = Vec::new();
        if let Some((at, prefix)) = &tie {
            let same_instant = replies.bulks()?;
            let in_range = query.start.is_none_or(|s| *at >= s);
            candidates.extend(
                same_instant
                    .into_iter()
                    .filter(|m| in_range && m.as_ref() < prefix.as_ref()),
            );
        }
        let rest = replies.bulks()?;
        candidates.extend(rest);

        let mut events = Vec::with_capacity(query.limit + 1);
        for member in candidates {
            let encoded = EncodedEvent(member);
            if query.filters_by_content() {
                let event = codec::decode(&encoded)?;
                if !query.keeps_event(&event.channel, codec::initiator_of(&event)) {
                    continue;
                }
            }
            events.push(encoded);
            if events.len() > query.limit {
                break;
            }
        }
        let next = if events.len() > query.limit {
            events.truncate(query.limit);
            events.last().map(codec::cursor_after).transpose()?
        } else {
            None
        };
        Ok(Listed::Page(Some(TimelinePage { events, next })))
    }
}

/// The reads of a page: whether the profile was merged away, whether it
/// holds anything, the events at the cursor's own instant (when a cursor
/// sits above the end time) and the range; with the cursor's instant and
/// id prefix, to keep those of its instant that sort below it.
pub(super) fn list_pipeline(query: &TimelineQuery) -> (Pipeline, Option<(Micros, Bytes)>) {
    let keys = Keys::of(&query.customer);
    let (upper, tie) = upper_bound(query);
    let lower = query.start.map_or("-inf".to_string(), |s| s.0.to_string());
    let mut pipe = Pipeline::new();
    pipe.cmd("EXISTS").arg(keys.alias());
    pipe.cmd("EXISTS").arg(keys.summary());
    if let Some((at, _)) = &tie {
        pipe.cmd("ZREVRANGEBYSCORE")
            .arg(keys.timeline())
            .arg(at.0)
            .arg(at.0);
    }
    let main = pipe
        .cmd("ZREVRANGEBYSCORE")
        .arg(keys.timeline())
        .arg(&upper)
        .arg(&lower);
    if !query.filters_by_content() {
        // Without channel or initiator filters the page is the first
        // `limit` members; one more tells whether a next page exists.
        // With them, the range is read whole: retention bounds it.
        main.arg("LIMIT").arg(0).arg(query.limit + 1);
    }
    (pipe, tie)
}

/// A profile that kept being merged away while an operation followed it.
pub(super) fn merges_kept_moving() -> StorageError {
    StorageError::Contention("merges kept moving the profile; try again".into())
}

/// The reads of a context: alias, the latest `max_events` events, the
/// summary, the count held, the latest contacts, identities, merges and,
/// when journeys are followed, the defined journeys' states (by name: the
/// hash also holds the recent interactions and the version, which a
/// context skips). Each reply in this order, one round trip.
pub(super) fn context_pipeline(
    keys: &Keys,
    max_events: usize,
    contacts_since: Micros,
    journeys: Option<&JourneyDefinitions>,
) -> Pipeline {
    let stop = max_events.saturating_sub(1) as i64;
    let mut pipe = Pipeline::new();
    pipe.cmd("GET").arg(keys.alias());
    pipe.cmd("ZREVRANGE").arg(keys.timeline()).arg(0).arg(stop);
    pipe.cmd("HGETALL").arg(keys.summary());
    pipe.cmd("ZCARD").arg(keys.timeline());
    latest_contacts_cmd(&mut pipe, keys, contacts_since, false);
    pipe.cmd("HGETALL").arg(keys.idents());
    pipe.cmd("HGETALL").arg(keys.merges());
    if let Some(definitions) = journeys {
        let read = pipe.cmd("HMGET").arg(keys.journeys());
        for definition in definitions.iter() {
            read.arg(definition.name());
        }
        // Last, the states' version: the states this instance holds at
        // that version are these very states (`kept_states`).
        read.arg("");
    }
    pipe
}

/// The reads of customers' contact histories: per customer its alias,
/// whether anything is held, its time zone, contact version and contacts
/// since `since`. For one customer, in MULTI/EXEC, so the version goes with
/// the contacts read (reserve mode relies on it).
pub(super) fn contacts_pipeline(customers: &[CustomerId], since: Micros, scores: bool) -> Pipeline {
    let mut pipe = Pipeline::new();
    if customers.len() == 1 {
        pipe.atomic();
    }
    for customer in customers {
        let keys = Keys::of(customer);
        pipe.cmd("GET").arg(keys.alias());
        // Known by its events, its contacts or its links alone, as on the
        // memory store (and as `canonical_profile` counts).
        pipe.cmd("EXISTS")
            .arg(keys.summary())
            .arg(keys.contacts())
            .arg(keys.idents());
        pipe.cmd("HGET").arg(keys.summary()).arg("tz");
        pipe.cmd("HGET").arg(keys.contact_ids()).arg("");
        contacts_since_cmd(&mut pipe, &keys, since, scores);
    }
    pipe
}

/// Adds the read of a customer's contacts since `since`, oldest first.
fn contacts_since_cmd(pipe: &mut Pipeline, keys: &Keys, since: Micros, scores: bool) {
    let read = pipe
        .cmd("ZRANGEBYSCORE")
        .arg(keys.contacts())
        .arg(since.0)
        .arg("+inf");
    if scores {
        read.arg("WITHSCORES");
    }
}

/// Adds the read of a customer's latest contacts since `since` (newest
/// first): one more than a context keeps, to tell whether there were more.
fn latest_contacts_cmd(pipe: &mut Pipeline, keys: &Keys, since: Micros, scores: bool) {
    let read = pipe
        .cmd("ZREVRANGEBYSCORE")
        .arg(keys.contacts())
        .arg("+inf")
        .arg(since.0);
    if scores {
        read.arg("WITHSCORES");
    }
    read.arg("LIMIT").arg(0).arg(CONTEXT_MAX_CONTACTS + 1);
}

pub(super) fn parse<T: redis::FromRedisValue>(value: redis::Value) -> Result<T, StorageError> {
    redis::from_redis_value(value).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// The exclusive upper score of the main range, and, when a cursor sits
/// above the end time, the cursor's instant and id prefix: members at that
/// very instant are read apart and kept when they sort below the cursor.
fn upper_bound(query: &TimelineQuery) -> (String, Option<(Micros, Bytes)>) {
    let cursor: Option<&Cursor> = query
        .after
        .as_ref()
        .filter(|c| query.end.is_none_or(|end| c.occurred_at < end));
    match (cursor, query.end) {
        (Some(c), _) => (
            format!("({}", c.occurred_at.0),
            Some((c.occurred_at, codec::id_prefix(&c.event_id))),
        ),
        (None, Some(end)) => (format!("({}", end.0), None),
        (None, None) => ("+inf".to_string(), None),
    }
}

/// How many of each part an append-script call carries.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct CallShape<'a> {
    pub events: usize,
    pub identities: usize,
    pub reservations: usize,
    pub merge: Option<MergeArgs<'a>>,
    /// The version of the journey states a write set was computed from;
    /// `None`: no journey write (the script then skips the check).
    pub journey_version: Option<u64>,
}

/// The merge-mode arguments of an append-script call.
#[derive(Debug, Clone, Copy)]
pub(super) struct MergeArgs<'a> {
    pub from: &'a CustomerId,
    pub at: Micros,
    pub first_seen: Option<Micros>,
    /// The absorbed profile's own merges: absorbed id, instant (µs).
    pub history: &'a [(String, String)],
}

/// What the append script answered for one profile.
pub(super) enum AppendReply {
    /// One integer per event (1 stored, 0 duplicate), and the keys leading
    /// to the profile to push when the profile's were pushed.
    Outcomes(Vec<i64>, Vec<Lead>),
    /// The profile was merged away: nothing was written.
    Merged,
    Refused(String),
    /// The journey states moved on (these are current): nothing was written.
    Stale(VersionedStates),
    /// These events (positions in the call) are held already and the
    /// journey write set counted them: nothing was written.
    Held(Vec<usize>),
    /// A merge run again after its first run landed: written as
    /// `Outcomes` (these are its leads), but not its journey write set
    /// (the first run's was).
    MergedAgain(Vec<Lead>),
}

impl AppendReply {
    pub(super) fn parse(value: redis::Value) -> Result<Self, StorageError> {
        match value {
            redis::Value::Array(items) => {
                if let Some(current) = stale_reply(&items) {
                    return Ok(Self::Stale(current?));
                }
                if let Some(redis::Value::BulkString(tag)) = items.first() {
                    if tag.as_slice() == b"held" {
                        let positions = items[1..]
                            .iter()
                            .map(|item| match item {
                                redis::Value::Int(p) => usize::try_from(*p).map_err(|_| {
                                    StorageError::Corrupt(format!("a held position {p}"))
                                }),
                                other => {
                                    Err(StorageError::Corrupt(format!("a held position {other:?}")))
                                }
                            })
                            .collect::<Result<_, _>>()?;
                        return Ok(Self::Held(positions));
                    }
                    if tag.as_slice() == b"refused" {
                        let reason: String = items
                            .get(1)
                            .cloned()
                            .map(parse)
                            .transpose()?
                            .unwrap_or_default();
                        return Ok(Self::Refused(reason));
                    }
                }
                // The outcomes, then the leads, then "again" if so.
                if let Some(redis::Value::BulkString(tag)) = items.last() {
                    if tag.as_slice() == b"again" {
                        let leads = items[..items.len() - 1]
                            .iter()
                            .position(|item| !matches!(item, redis::Value::Int(_)))
                            .map(|split| Lead::parse_all(&items[split..items.len() - 1]))
                            .unwrap_or_default();
                        return Ok(Self::MergedAgain(leads));
                    }
                }
                let split = items
                    .iter()
                    .position(|item| !matches!(item, redis::Value::Int(_)))
                    .unwrap_or(items.len());
                let stored = items[..split]
                    .iter()
                    .filter_map(|item| match item {
                        redis::Value::Int(outcome) => Some(*outcome),
                        _ => None,
                    })
                    .collect();
                let leads = Lead::parse_all(&items[split..]);
                Ok(Self::Outcomes(stored, leads))
            }
            other => {
                parse::<String>(other)?;
                Ok(Self::Merged)
            }
        }
    }
}

/// The role a `ROLE` reply names when it is one that refuses writes (a
/// replica, a sentinel); `None` for a primary or any other answer.
fn not_a_primary(role: &Reply) -> Option<String> {
    let Frame::Array(items) = &role.frame else {
        return None;
    };
    match items.first() {
        Some(Frame::Bulk(name)) => match &role.bytes[name.clone()] {
            name @ (b"slave" | b"replica" | b"sentinel") => {
                Some(String::from_utf8_lossy(name).into_owned())
            }
            _ => None,
        },
        _ => None,
    }
}

/// A key in another slot that leads to a profile, as the append script
/// names it when it pushed the profile's expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Lead {
    /// An identity's index key (the identity packed `type US value`).
    Identity(Vec<u8>),
    /// The alias key of a profile merged into this one.
    Merged(CustomerId),
}

/// What the reserve script answered.
enum ReserveReply {
    /// Recorded, with the keys leading to the profile to push when the
    /// profile's were pushed.
    Recorded(Vec<Lead>),
    /// The contact version moved, or the profile was merged away since the
    /// read (its version is not the survivor's).
    NotRecorded,
    /// The profile holds an event or contact with the reservation's id.
    IdTaken,
}

impl ReserveReply {
    fn parse(value: redis::Value) -> Result<Self, StorageError> {
        match value {
            redis::Value::Int(0 | -1) => Ok(Self::NotRecorded),
            redis::Value::Int(-2) => Ok(Self::IdTaken),
            redis::Value::Array(items) if items.first() == Some(&redis::Value::Int(1)) => {
                Ok(Self::Recorded(Lead::parse_all(&items[1..])))
            }
            other => Err(StorageError::Corrupt(format!(
                "the reserve script answered {other:?}"
            ))),
        }
    }
}

impl Lead {
    /// The leads of a script's answer: the contact or events are stored,
    /// so a lead that does not read is only not pushed.
    fn parse_all(items: &[redis::Value]) -> Vec<Self> {
        items
            .iter()
            .filter_map(|item| {
                let read = match item {
                    redis::Value::BulkString(tagged) => Self::parse(tagged),
                    other => Err(StorageError::Corrupt(format!("a lead reads {other:?}"))),
                };
                read.map_err(|error| tracing::warn!(%error, "a lead not pushed"))
                    .ok()
            })
            .collect()
    }

    fn parse(tagged: &[u8]) -> Result<Self, StorageError> {
        match tagged.split_first() {
            Some((b'i', packed)) => Ok(Self::Identity(packed.to_vec())),
            Some((b'm', id)) => Ok(Self::Merged(CustomerId::from_trusted(
                std::str::from_utf8(id).map_err(|_| {
                    StorageError::Corrupt("a merged profile id is not UTF-8".into())
                })?,
            ))),
            _ => Err(StorageError::Corrupt(format!(
                "a script answered the lead {:?}",
                String::from_utf8_lossy(tagged)
            ))),
        }
    }

    /// The key to push.
    fn key(&self) -> Vec<u8> {
        match self {
            Self::Identity(packed) => index_key_of_packed(packed),
            Self::Merged(id) => Keys::of(id).alias().as_bytes().to_vec(),
        }
    }
}

/// The append script's eight arguments for one event.
pub(super) struct EventArgs {
    score: i64,
    event_id: String,
    channel: String,
    initiator: Initiator,
    body: Bytes,
    contact: String,
    timezone: String,
    identities: String,
}

impl EventArgs {
    pub(super) fn of_event(event: &Event) -> Self {
        Self {
            score: event.occurred_at.0,
            event_id: event.event_id.to_string(),
            channel: event.channel.clone(),
            initiator: event.initiator,
            body: codec::encode(event).0,
            contact: event
                .as_contact()
                .map(|c| codec::pack_contact(&c))
                .unwrap_or_default(),
            timezone: event.timezone().unwrap_or_default().to_string(),
            identities: pack_identities(&event.all_identities()),
        }
    }

    /// The arguments of an event read back from a profile being merged.
    pub(super) fn of_stored(body: Bytes) -> Result<Self, StorageError> {
        let event = codec::decode(&EncodedEvent(body.clone()))?;
        let initiator = codec::initiator_of(&event).unwrap_or(Initiator::Customer);
        let at = codec::occurred_at(&event);
        let campaign = event
            .attributes
            .get(crate::domain::event::CAMPAIGN_ATTRIBUTE);
        let contact = (initiator == Initiator::Company).then(|| {
            codec::pack_contact(&Contact::new(
                at,
                false,
                ContactNames {
                    event_id: &event.event_id,
                    channel: &event.channel,
                    reason: &event.reason,
                    event_type: &event.r#type,
                    campaign_id: campaign.map_or("", String::as_str),
                },
            ))
        });
        let mut identities: Vec<Identity> = event
            .identities
            .iter()
            .map(|i| Identity {
                kind: i.r#type.clone(),
                value: i.value.clone(),
            })
            .collect();
        if !event.customer_id.is_empty() {
            identities.insert(
                0,
                Identity {
                    kind: CUSTOMER_ID_IDENTITY.to_string(),
                    value: event.customer_id.clone(),
                },
            );
        }
        Ok(Self {
            score: at.0,
            event_id: event.event_id.clone(),
            channel: event.channel.clone(),
            initiator,
            body,
            contact: contact.unwrap_or_default(),
            timezone: event
                .attributes
                .get(crate::domain::event::TIMEZONE_ATTRIBUTE)
                .cloned()
                .unwrap_or_default(),
            identities: pack_identities(&identities),
        })
    }

    /// Adds the event's arguments to the open append call.
    pub(super) fn push(&self, call: &mut Pipeline) {
        call.arg(self.score)
            .arg(&self.event_id)
            .arg(&self.channel)
            .arg(match self.initiator {
                Initiator::Customer => "1",
                Initiator::Company => "2",
            })
            .arg(self.body.as_ref())
            .arg(&self.contact)
            .arg(&self.timezone)
            .arg(&self.identities);
    }
}

fn pack_identities(identities: &[Identity]) -> String {
    identities
        .iter()
        .map(packed_identity)
        .collect::<Vec<_>>()
        .join("\u{1e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_an_append_asks_to_push_are_read_from_their_tags() {
        let reply = redis::Value::Array(vec![
            redis::Value::Int(1),
            redis::Value::Int(0),
            redis::Value::BulkString(b"iemail\x1fa@example.com".to_vec()),
            redis::Value::BulkString(b"m~anon".to_vec()),
        ]);
        let AppendReply::Outcomes(stored, leads) = AppendReply::parse(reply).expect("parsed")
        else {
            panic!("not outcomes");
        };
        assert_eq!(stored, [1, 0]);
        let keys: Vec<Vec<u8>> = leads.iter().map(Lead::key).collect();
        assert_eq!(
            keys,
            [
                b"journey:ident:{email\x1fa@example.com}".to_vec(),
                b"journey:{~anon}:alias".to_vec(),
            ]
        );
        // One that does not read is left out: the events are stored.
        for bad in [&b"x?"[..], b"", b"m\xff"] {
            let reply = redis::Value::Array(vec![
                redis::Value::Int(1),
                redis::Value::BulkString(bad.to_vec()),
            ]);
            assert!(
                matches!(AppendReply::parse(reply), Ok(AppendReply::Outcomes(s, l)) if s == [1] && l.is_empty()),
                "{bad:?}"
            );
        }
    }
}
