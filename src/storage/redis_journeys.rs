//! Journeys on the Redis store: the per-profile states hash, the global
//! stat counters, listings and deadline index, the write set the scripts
//! apply (see `journey_writes.lua`), this instance's cache of states, and
//! the reads of `GetJourneyStats`, `ListJourneys` and the sweeper.
//!
//! Why a cache: the transitions are Rust (the domain's state machine), so
//! the service must know a customer's states before the append script
//! runs. Reading them first would cost a second round trip on every
//! append; instead the service keeps the states it last wrote or read,
//! sends the transitions computed from them with their version, and the
//! script writes only if the version still holds. A miss (another instance
//! wrote, or this one has not seen the customer since it started) answers
//! the current states and costs one more round trip.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use bytes::Bytes;
use lru::LruCache;

use super::{
    commands::{self, Pipeline},
    redis_store::RedisStore,
    JourneyListPage, JourneyListQuery, JourneyStatesStats, JourneyTracker, StorageError, Swept,
};
use crate::domain::{
    journey::{
        deadline_left_behind, forgotten_deltas, listing_keys, sweep_due, CarryOver, Day,
        DayCounters, Interaction, JourneyDefinitions, JourneyState, JourneyStates, JourneyStatus,
        JourneyUpdate, RecentInteraction, StepVisit, STATS_KEPT_DAYS,
    },
    CustomerId, Micros,
};

const DAY_MS: i64 = 86_400_000;

/// When a day's stat counters expire (ms since the epoch): at the end of
/// the STATS_KEPT_DAYS-th day after it, when the memory store drops them.
fn stats_expire_at_ms(day: Day) -> i64 {
    (day.0 + 1 + STATS_KEPT_DAYS).saturating_mul(DAY_MS)
}

/// The deadline index: member `journey US profile`, score the deadline.
pub(super) const DEADLINES_KEY: &str = "journey:jdeadlines";

/// The set of every listing key a trim found defined: listings of
/// journeys or steps no longer defined are trimmed until they are empty.
pub(super) const LISTINGS_KEY: &str = "journey:jlistings";

pub(super) fn stats_key(journey: &str, day: Day) -> String {
    format!("journey:jstats:{journey}:{}", day.0)
}

pub(super) fn listing_key(listing: &str) -> String {
    format!("journey:jlist:{listing}")
}

fn deadline_member(journey: &str, profile: &CustomerId) -> String {
    format!("{journey}\u{1f}{profile}")
}

/// What the store needs to follow customers through journeys.
pub(super) struct RedisJourneys {
    pub tracker: JourneyTracker,
    pub cache: StatesCache,
}

/// The field of the states hash that holds the customer's latest
/// interactions (journey names cannot start with `~`).
const RECENT_FIELD: &str = "~recent";

/// Fields of the survivor's states hash that mark a merge's carry-over as
/// written: `~carried:<absorbed profile>` = the version of the absorbed
/// states carried (see `push_carry_over`).
const CARRIED_PREFIX: &str = "~carried:";

/// Separators of the packed latest interactions: event ids and taxonomy
/// names hold no control characters (events are validated).
const US: char = '\u{1f}';
const RS: char = '\u{1e}';

/// The customer's latest interactions as the states hash keeps them: per
/// interaction `event_id US at US channel US reason US type`, joined by RS.
/// Written on every append: as JSON, serde's string escaping cost the
/// append ~20,000 instructions (callgrind).
fn pack_recent(recent: &[RecentInteraction]) -> String {
    let mut packed = String::with_capacity(recent.len() * 64);
    // One buffer for every instant: `to_string` allocated a String each.
    let mut instant = itoa::Buffer::new();
    for (i, r) in recent.iter().enumerate() {
        if i > 0 {
            packed.push(RS);
        }
        for (j, part) in [
            &*r.event_id,
            instant.format(r.at.0),
            &r.interaction.channel,
            &r.interaction.reason,
            &r.interaction.event_type,
        ]
        .into_iter()
        .enumerate()
        {
            if j > 0 {
                packed.push(US);
            }
            packed.push_str(part);
        }
    }
    packed
}

/// Reads `pack_recent`'s form, or the JSON that versions before it wrote.
fn unpack_recent(text: &str) -> Result<Vec<RecentInteraction>, StorageError> {
    let corrupt = |why: String| StorageError::Corrupt(format!("recent interactions: {why}"));
    // Told apart by the separator, not by a leading `[`: an event id may
    // start with one, and JSON escapes control characters.
    let mut recent: Vec<RecentInteraction> = if text.starts_with('[') && !text.contains(US) {
        serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?
    } else if text.is_empty() {
        Vec::new()
    } else {
        text.split(RS)
            .map(|one| {
                let mut parts = one.split(US);
                let mut next = || {
                    parts
                        .next()
                        .ok_or_else(|| corrupt(format!("{one:?} is incomplete")))
                };
                let event_id = next()?.into();
                let at = next()?
                    .parse()
                    .map(Micros)
                    .map_err(|_| corrupt(format!("{one:?} has no instant")))?;
                Ok(RecentInteraction {
                    event_id,
                    at,
                    interaction: Interaction {
                        channel: next()?.into(),
                        reason: next()?.into(),
                        event_type: next()?.into(),
                    },
                })
            })
            .collect::<Result<_, StorageError>>()?
    };
    // Read by doubling, either form; the cache holds it as it is.
    recent.shrink_to_fit();
    Ok(recent)
}

/// A profile's journey states as of one version of its states hash.
#[derive(Debug, Clone, Default)]
pub(super) struct VersionedStates {
    pub version: u64,
    pub states: JourneyStates,
    pub recent: Vec<RecentInteraction>,
}

impl VersionedStates {
    /// Reads a states hash (`HGETALL`: journey → JSON, "" → version).
    pub fn parse(fields: impl IntoIterator<Item = (String, String)>) -> Result<Self, StorageError> {
        let mut read = Self::default();
        for (field, value) in fields {
            if field.is_empty() {
                read.version = value.parse().map_err(|_| {
                    StorageError::Corrupt(format!("journey states version {value:?}"))
                })?;
                continue;
            }
            if field == RECENT_FIELD {
                read.recent = unpack_recent(&value)?;
                continue;
            }
            if field.starts_with(CARRIED_PREFIX) {
                continue; // a merge's mark (`push_carry_over`), no state
            }
            let state = JourneyState::from_json(&value)
                .map_err(|e| StorageError::Corrupt(format!("journey state of {field:?}: {e}")))?;
            read.states.insert(field, Arc::new(state));
        }
        read.states.shrink_to_fit();
        Ok(read)
    }

    /// The version a write on top of these states gets: the next one, or,
    /// for a profile with no states (new, or its hash expired), a random
    /// one, so a version is never reused and an instance that cached the
    /// states from before an expiry cannot match a new hash by chance.
    pub fn next_version(&self) -> u64 {
        match self.version {
            0 => fastrand::u64(1..u64::MAX / 2),
            v => v + 1,
        }
    }

    /// The states after the script wrote an update's states and recent
    /// interactions at `version`; the changed parts move in, the others
    /// are shared with these (an `Arc` each).
    pub fn after(
        &self,
        changed: Vec<JourneyState>,
        recent: Option<Vec<RecentInteraction>>,
        version: u64,
    ) -> Self {
        if changed.is_empty() && recent.is_none() {
            return self.clone();
        }
        // Sized exactly (it is cached as it is), so nothing to shrink.
        let entering = changed
            .iter()
            .filter(|s| !self.states.contains_key(&s.journey))
            .count();
        let mut states = JourneyStates::with_capacity(self.states.len() + entering);
        states.extend(
            changed
                .into_iter()
                .map(|s| (s.journey.clone(), Arc::new(s))),
        );
        for (journey, state) in &self.states {
            if !states.contains_key(journey) {
                states.insert(journey.clone(), state.clone());
            }
        }
        Self {
            version,
            states,
            recent: recent.unwrap_or_else(|| self.recent.clone()),
        }
    }
}

/// The journey states of a profile being merged away, read from its hash
/// (`HGETALL`); `None` when it holds none. A field that does not read is
/// left out (logged): the merge carries the others rather than none.
pub(super) fn absorbed_states(
    profile: &CustomerId,
    fields: Vec<(String, String)>,
) -> Option<VersionedStates> {
    if fields.is_empty() {
        return None;
    }
    let readable = fields.into_iter().filter(|field| {
        let read = VersionedStates::parse([field.clone()]);
        if let Err(error) = &read {
            tracing::error!(%profile, field = %field.0, %error, "journey state unreadable; not carried by the merge");
        }
        read.is_ok()
    });
    VersionedStates::parse(readable).ok()
}

/// Adds to `pipe` what an erased profile's journey states (the fields of
/// its states hash) leave behind: its entry in every listing they name and
/// its deadlines (`push_leaving_states`), and each journey still in
/// progress counted as forgotten in its day's counters (it will neither
/// complete nor drop), in the erasure's own round trip. States that do not
/// read are skipped, logged: their entries go with the retention.
pub(super) fn push_forgetting(
    pipe: &mut Pipeline,
    profile: &CustomerId,
    fields: Vec<(String, String)>,
) {
    let Some(held) = absorbed_states(profile, fields) else {
        return;
    };
    push_leaving_states(pipe, profile, &held.states);
    for delta in forgotten_deltas(held.states.values().map(|s| &**s)) {
        let key = stats_key(&delta.journey, delta.day);
        for field in delta.counter_fields() {
            pipe.cmd("HINCRBY").arg(&key).arg(field).arg(1);
        }
        // A day's counters expire STATS_KEPT_DAYS after it, as the append
        // script sets when it makes them (NX: only on a key made here).
        pipe.cmd("PEXPIREAT")
            .arg(&key)
            .arg(stats_expire_at_ms(delta.day))
            .arg("NX");
    }
}

/// What a profile leaving the journeys removes, for states already read:
/// its entry in every listing they name, and its deadlines.
pub(super) fn push_leaving_states(
    pipe: &mut Pipeline,
    profile: &CustomerId,
    states: &JourneyStates,
) {
    for state in states.values() {
        for listing in crate::domain::journey::listings(state) {
            pipe.cmd("ZREM")
                .arg(listing_key(&listing.key()))
                .arg(profile.as_str());
        }
        if state.deadline.is_some() {
            pipe.cmd("ZREM")
                .arg(DEADLINES_KEY)
                .arg(deadline_member(&state.journey, profile));
        }
    }
}

/// The started journeys among states this instance holds, in the order
/// of the definitions: what `started_states` gives for the same version.
pub(super) fn kept_started_states(
    definitions: &JourneyDefinitions,
    kept: &VersionedStates,
) -> Vec<JourneyState> {
    definitions
        .iter()
        .filter_map(|d| kept.states.get(d.name()))
        .filter(|state| state.status != JourneyStatus::NotStarted)
        .map(|state| JourneyState::clone(state))
        .collect()
}

/// The started journeys among states read by journey name (`HMGET`);
/// a state that does not read is logged and left out.
pub(super) fn started_states<'a>(
    states: impl IntoIterator<Item = (&'a str, Option<Bytes>)>,
) -> Vec<JourneyState> {
    states
        .into_iter()
        .filter_map(|(journey, json)| {
            let json = json?;
            let read = std::str::from_utf8(&json)
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    if JourneyState::is_not_started_json(text) {
                        return Ok(None);
                    }
                    JourneyState::from_json(text)
                        .map(Some)
                        .map_err(|e| e.to_string())
                });
            read.unwrap_or_else(|error| {
                tracing::error!(%journey, %error, "journey state unreadable; left out of the context");
                None
            })
        })
        .collect()
}

/// The states this instance last wrote or read, per profile, bounded in
/// count and in (estimated) bytes: the least recently used go first.
pub(super) struct StatesCache {
    inner: Mutex<Cached>,
    max_bytes: usize,
    /// Writes sent again because the copy held was not current.
    stale: AtomicU64,
}

struct Cached {
    lru: LruCache<CustomerId, Arc<VersionedStates>>,
    /// The estimated size of what `lru` holds.
    bytes: usize,
}

impl StatesCache {
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            inner: Mutex::new(Cached {
                lru: LruCache::new(capacity),
                bytes: 0,
            }),
            max_bytes,
            stale: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached states, or none at version 0 (what a new customer has).
    pub fn get(&self, profile: &CustomerId) -> Arc<VersionedStates> {
        self.lock().lru.get(profile).cloned().unwrap_or_default()
    }

    /// Counts a write the store answered "stale": the copy held (if any)
    /// was not the current one.
    pub fn note_stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }

    /// Stale writes so far, customers kept and their estimated bytes.
    pub fn stats(&self) -> JourneyStatesStats {
        let cached = self.lock();
        JourneyStatesStats {
            stale: self.stale.load(Ordering::Relaxed),
            entries: cached.lru.len() as u64,
            bytes: cached.bytes as u64,
        }
    }

    /// The estimated size of what the cache holds, in bytes.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().lru.len()
    }

    /// Keeps `states` as this instance's copy. Two calls racing on one
    /// profile may leave the older copy: the next write then finds it stale
    /// and reads the current one (a round trip, never a wrong write).
    pub fn put(&self, profile: &CustomerId, states: VersionedStates) {
        self.put_shared(profile, Arc::new(states));
    }

    /// Drops this instance's copy, when it cannot know what was written
    /// (the next write reads the current states: one more round trip).
    pub fn forget(&self, profile: &CustomerId) {
        let mut cached = self.lock();
        if let Some(old) = cached.lru.pop(profile) {
            cached.bytes -= entry_bytes(profile, &old);
        }
    }

    pub fn put_shared(&self, profile: &CustomerId, states: Arc<VersionedStates>) {
        let size = entry_bytes(profile, &states);
        let mut cached = self.lock();
        if size > self.max_bytes {
            // Larger than the whole cache: not kept (its old copy neither).
            if let Some(old) = cached.lru.pop(profile) {
                cached.bytes -= entry_bytes(profile, &old);
            }
            return;
        }
        cached.bytes += size;
        // `push` answers the entry it replaced or, at the count bound, the
        // one it evicted.
        if let Some((key, old)) = cached.lru.push(profile.clone(), states) {
            cached.bytes -= entry_bytes(&key, &old);
        }
        while cached.bytes > self.max_bytes {
            match cached.lru.pop_lru() {
                Some((key, old)) => cached.bytes -= entry_bytes(&key, &old),
                None => break,
            }
        }
    }
}

/// The memory one cached profile takes, estimated from its parts: struct
/// sizes, list capacities and string lengths. Checked
/// against the process's
/// resident memory in BENCHMARKS.md; it bounds the cache within a small
/// factor of `--journey-cache-mib`.
fn entry_bytes(profile: &CustomerId, states: &VersionedStates) -> usize {
    use std::mem::size_of;
    // An interaction's names are inline up to 24 bytes (`CompactString`),
    // on the heap past that; its event id is on the heap with its Arc's
    // two counts, rounded up to a word.
    let spilled = |name: &str| if name.len() > 24 { name.len() } else { 0 };
    let recent = |r: &Vec<RecentInteraction>| {
        r.capacity() * size_of::<RecentInteraction>()
            + r.iter()
                .map(|i| {
                    (2 * size_of::<usize>() + i.event_id.len()).next_multiple_of(size_of::<usize>())
                        + spilled(&i.interaction.channel)
                        + spilled(&i.interaction.reason)
                        + spilled(&i.interaction.event_type)
                })
                .sum::<usize>()
    };
    let state = |name: &String, s: &JourneyState| {
        name.capacity()
            + s.journey.capacity()
            + recent(&s.recent)
            + s.step_path.capacity() * size_of::<StepVisit>()
            + s.step_path
                .iter()
                .map(|v| v.event_id.capacity())
                .sum::<usize>()
            + s.channels.capacity() * size_of::<String>()
            + s.channels.iter().map(String::capacity).sum::<usize>()
            + s.last_event_id.as_ref().map_or(0, String::capacity)
            + [&s.current_step, &s.dropped_at_step]
                .iter()
                .filter_map(|step| step.as_ref())
                .map(|step| step.name.capacity())
                .sum::<usize>()
    };
    // The LRU's entry: the key (map and list), list links, the Arc's box.
    2 * profile.as_str().len()
        + 96
        + size_of::<VersionedStates>()
        + recent(&states.recent)
        + states.states.capacity() * size_of::<(String, Arc<JourneyState>)>()
        // Each state with its Arc's two counts.
        + states.states.len() * (size_of::<JourneyState>() + 2 * size_of::<usize>())
        + states
            .states
            .iter()
            .map(|(name, s)| state(name, s))
            .sum::<usize>()
}

/// Appends an update's write set to a script call (the layout of
/// `journey_writes.lua`).
pub(super) fn push_write_set(
    call: &mut Pipeline,
    profile: &CustomerId,
    update: &JourneyUpdate,
    version: u64,
) {
    // Whether the write changes anything of the journeys (a state, a
    // counter, the latest interactions): then the script first makes sure
    // no event is a duplicate the states did not recognize.
    push_writes(
        call,
        !update.is_empty(),
        &[(profile, update)],
        None,
        version,
    );
}

/// Appends a merge's journey write set to the merge call: the survivor's
/// update, and the listings and deadlines the absorbed profile leaves.
/// Without the duplicate check: the events a merge carries move no
/// journey (their profile's states come with `carry`). Its first field
/// marks the carry as written, `~carried:<absorbed>` = `carried_version`
/// (the absorbed states' version): the script leaves the write set of a
/// merge run again that finds it.
pub(super) fn push_carry_over(
    call: &mut Pipeline,
    survivor: &CustomerId,
    absorbed: &CustomerId,
    carry: &CarryOver,
    carried_version: u64,
    version: u64,
) {
    let mark = (format!("{CARRIED_PREFIX}{absorbed}"), carried_version);
    push_writes(
        call,
        false,
        &[(survivor, &carry.survivor), (absorbed, &carry.absorbed)],
        Some(mark),
        version,
    );
}

/// The write set of `updates`, each naming its profile in the listings
/// and deadline index; the states of the first (and `mark`, a field
/// written first) are the hash's (the script's profile).
fn push_writes(
    call: &mut Pipeline,
    check_duplicates: bool,
    updates: &[(&CustomerId, &JourneyUpdate)],
    mark: Option<(String, u64)>,
    version: u64,
) {
    call.arg(if check_duplicates { "1" } else { "0" });
    let Some((_, own)) = updates.first() else {
        call.arg(0).arg(0);
        return;
    };
    let fields = own.states.len() + usize::from(own.recent.is_some()) + usize::from(mark.is_some());
    call.arg(fields);
    if fields > 0 {
        call.arg(version);
    }
    if let Some((field, value)) = &mark {
        call.arg(field).arg(*value);
    }
    for state in &own.states {
        call.arg(&state.journey).arg(state.to_json());
    }
    if let Some(recent) = &own.recent {
        call.arg(RECENT_FIELD).arg(pack_recent(recent));
    }
    // Counter increments summed per hash and field: a batch often adds to
    // the same ones.
    let mut counters: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut days: BTreeMap<String, Day> = BTreeMap::new();
    for delta in updates.iter().flat_map(|(_, u)| &u.deltas) {
        let fields = delta.counter_fields();
        if fields.is_empty() {
            continue;
        }
        let key = stats_key(&delta.journey, delta.day);
        for field in fields {
            *counters.entry((key.clone(), field)).or_default() += 1;
        }
        days.entry(key).or_insert(delta.day);
    }
    // Each op is 4 arguments; numbers go in as integers (written straight
    // into the command), not as formatted Strings: ~10 allocations fewer
    // per append.
    let index_ops: usize = updates
        .iter()
        .map(|(_, u)| u.unlisted.len() + u.listed.len() + u.deadlines.len())
        .sum();
    call.arg(counters.len() + days.len() + index_ops);
    for ((key, field), n) in &counters {
        call.arg("h").arg(key).arg(field).arg(*n);
    }
    // A day's counters expire STATS_KEPT_DAYS after their day (set when
    // the script creates the key).
    for (key, day) in &days {
        call.arg("e").arg(key).arg(stats_expire_at_ms(*day)).arg("");
    }
    for (profile, update) in updates {
        let member = profile.as_str();
        for listing in &update.unlisted {
            call.arg("r")
                .arg(listing_key(&listing.key()))
                .arg("")
                .arg(member);
        }
        for listing in &update.listed {
            call.arg("z")
                .arg(listing_key(&listing.key()))
                .arg(listing.at.0)
                .arg(member);
        }
        for change in &update.deadlines {
            let member = deadline_member(&change.journey, profile);
            match change.new {
                Some(at) => call.arg("z").arg(DEADLINES_KEY).arg(at.0).arg(member),
                None => call.arg("r").arg(DEADLINES_KEY).arg("").arg(member),
            };
        }
    }
}

/// Reads a script's `{"stale", fields...}` answer (the journey states moved
/// on; these are current); `None` for any other reply.
pub(super) fn stale_reply(items: &[redis::Value]) -> Option<Result<VersionedStates, StorageError>> {
    match items.first() {
        Some(redis::Value::BulkString(tag)) if tag.as_slice() == b"stale" => {}
        _ => return None,
    }
    let fields = items.get(1).cloned().unwrap_or(redis::Value::Nil);
    Some(
        redis::from_redis_value::<Vec<(String, String)>>(fields)
            .map_err(|e| StorageError::Corrupt(format!("journey states reply: {e}")))
            .and_then(VersionedStates::parse),
    )
}

impl RedisStore {
    pub(super) async fn counters_of(
        &self,
        journey: &str,
        days: &[Day],
    ) -> Result<Vec<DayCounters>, StorageError> {
        if days.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = Pipeline::new();
        for &day in days {
            pipe.cmd("HGETALL").arg(stats_key(journey, day));
        }
        let days: Vec<HashMap<String, u64>> = self.conn.query_as(&pipe).await?;
        Ok(days.into_iter().map(|d| d.into_iter().collect()).collect())
    }

    pub(super) async fn listing_page(
        &self,
        query: &JourneyListQuery,
    ) -> Result<JourneyListPage, StorageError> {
        let (from, skip) = query.from();
        let entries: Vec<(String, i64)> = self
            .conn
            .cmd_as(
                commands::cmd("ZRANGE")
                    .arg(listing_key(&query.listing))
                    .arg(from.0)
                    .arg(format!("({}", query.end.0))
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(skip)
                    .arg(query.limit + 1)
                    .arg("WITHSCORES"),
            )
            .await?;
        let entries = entries
            .into_iter()
            .map(|(p, at)| (CustomerId::from_trusted(&p), Micros(at)))
            .collect();
        Ok(query.page(entries))
    }

    /// Forgets listing entries older than the retention, in every listing
    /// a definition in force here or anywhere before named (`LISTINGS_KEY`):
    /// a journey removed or a step renamed leaves listings no append
    /// writes any more, which must still empty. Two round trips (a third
    /// when listings of journeys no longer defined are gone).
    pub(super) async fn trim(&self, now: Micros) -> Result<(), StorageError> {
        let Some(journeys) = &self.journeys else {
            return Ok(());
        };
        let cutoff = format!(
            "({}",
            now.saturating_sub_micros(self.retention.max_age_micros).0
        );
        let defined: HashSet<String> = journeys
            .tracker
            .definitions()
            .iter()
            .flat_map(listing_keys)
            .map(|key| listing_key(&key))
            .collect();
        let mut pipe = Pipeline::new();
        if !defined.is_empty() {
            let add = pipe.cmd("SADD").arg(LISTINGS_KEY);
            for key in &defined {
                add.arg(key);
            }
        }
        pipe.cmd("SMEMBERS").arg(LISTINGS_KEY);
        let mut replies: Vec<redis::Value> = self.conn.query_as(&pipe).await?;
        let registered: Vec<String> =
            super::redis_store::parse(replies.pop().unwrap_or(redis::Value::Nil))?;
        if registered.is_empty() {
            return Ok(());
        }
        let mut pipe = Pipeline::new();
        for key in &registered {
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(key)
                .arg("-inf")
                .arg(&cutoff);
        }
        let undefined: Vec<&String> = registered
            .iter()
            .filter(|k| !defined.contains(*k))
            .collect();
        for key in &undefined {
            pipe.cmd("EXISTS").arg(key);
        }
        let trimmed: Vec<i64> = self.conn.query_as(&pipe).await?;
        let gone: Vec<String> = undefined
            .into_iter()
            .zip(trimmed.get(registered.len()..).unwrap_or_default())
            .filter(|(_, exists)| **exists == 0)
            .map(|(key, _)| key.clone())
            .collect();
        if !gone.is_empty() {
            let _: i64 = self
                .conn
                .cmd_as(commands::cmd("SREM").arg(LISTINGS_KEY).arg(gone))
                .await?;
        }
        Ok(())
    }

    /// One sweeper pass: reads the due deadlines, the states of their
    /// profiles (one round trip each), computes the drops and writes them
    /// with a compare-and-set per profile (one round trip for all).
    pub(super) async fn sweep(&self, now: Micros, max: usize) -> Result<Swept, StorageError> {
        let Some(journeys) = &self.journeys else {
            return Ok(Swept::default());
        };
        let definitions = journeys.tracker.definitions();
        let due: Vec<String> = self
            .conn
            .cmd_as(
                commands::cmd("ZRANGE")
                    .arg(DEADLINES_KEY)
                    .arg("-inf")
                    .arg(now.0)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(max),
            )
            .await?;
        let read_count = due.len();
        // Entries that cannot be swept leave the index, so they never
        // hold the front of it: malformed members, unreadable profiles.
        let mut unsweepable: Vec<String> = Vec::new();
        let mut profiles: Vec<(CustomerId, Vec<String>)> = Vec::new();
        let mut index_of: HashMap<CustomerId, usize> = HashMap::new();
        for member in due {
            let Some((journey, profile)) = member.split_once('\u{1f}') else {
                unsweepable.push(member);
                continue;
            };
            let profile = CustomerId::from_trusted(profile);
            let at = *index_of.entry(profile.clone()).or_insert_with(|| {
                profiles.push((profile, Vec::new()));
                profiles.len() - 1
            });
            profiles[at].1.push(journey.to_string());
        }
        if profiles.is_empty() && unsweepable.is_empty() {
            return Ok(Swept {
                due: read_count,
                dropped: 0,
            });
        }
        let mut read = Pipeline::new();
        for (profile, _) in &profiles {
            read.cmd("HGETALL")
                .arg(super::redis_keys::Keys::of(profile).journeys());
        }
        let states: Vec<Vec<(String, String)>> = if profiles.is_empty() {
            Vec::new()
        } else {
            self.conn.query_as(&read).await?
        };
        let mut write = Pipeline::new();
        let mut planned = Vec::new();
        for ((profile, due_journeys), fields) in profiles.into_iter().zip(states) {
            // One unreadable profile must not stop the sweeper for all.
            let current = match VersionedStates::parse(fields) {
                Ok(current) => current,
                Err(err) => {
                    tracing::error!(profile = %profile, error = %err, "journey states unreadable; its deadlines are dropped unswept");
                    unsweepable.extend(due_journeys.iter().map(|j| deadline_member(j, &profile)));
                    continue;
                }
            };
            let mut update = sweep_due(&definitions, &current.states, now);
            // Deadlines left behind (a profile expired or merged away, a
            // journey no longer defined here) go, or wait where the
            // domain says (`deadline_left_behind`).
            for journey in &due_journeys {
                if update.states.iter().any(|s| &s.journey == journey) {
                    continue;
                }
                let state = current.states.get(journey).map(|s| &**s);
                update
                    .deadlines
                    .push(crate::domain::journey::DeadlineChange {
                        journey: journey.clone(),
                        old: None,
                        new: deadline_left_behind(&definitions, journey, state, now),
                    });
            }
            let keys = super::redis_keys::Keys::of(&profile);
            let call = self
                .sweep_script
                .call(&mut write)
                .key(keys.journeys())
                .key(keys.alias())
                .arg(current.version)
                .arg(self.ttl_ms());
            let version = current.next_version();
            push_write_set(call, &profile, &update, version);
            planned.push((profile, current, update, version));
        }
        if !unsweepable.is_empty() {
            // Rare (a bug or a foreign writer): a round trip of its own.
            let _: i64 = self
                .conn
                .cmd_as(commands::cmd("ZREM").arg(DEADLINES_KEY).arg(&unsweepable))
                .await?;
        }
        if planned.is_empty() {
            return Ok(Swept {
                due: read_count,
                dropped: 0,
            });
        }
        let replies: Vec<redis::Value> = self.query_scripts(&self.sweep_script, &write).await?;
        let mut dropped = 0;
        let mut merging = Vec::new();
        for ((profile, current, update, version), reply) in planned.into_iter().zip(replies) {
            let stale = match &reply {
                redis::Value::Array(items) if is_tag(items, "merging") => {
                    merging.push((profile, update));
                    continue;
                }
                redis::Value::Array(items) => stale_reply(items),
                _ => None,
            };
            match stale {
                // Another instance or an append got there first; a journey
                // still due is seen again on the next pass.
                Some(Ok(fresh)) => journeys.cache.put(&profile, fresh),
                Some(Err(err)) => {
                    tracing::error!(profile = %profile, error = %err, "journey states unreadable; not swept")
                }
                None => {
                    dropped += update.states.len();
                    journeys
                        .cache
                        .put(&profile, current.after(update.states, None, version));
                }
            }
        }
        for (profile, update) in merging {
            self.complete_merging(&profile, &update, now).await;
        }
        Ok(Swept {
            due: read_count,
            dropped,
        })
    }

    /// A due profile being merged: its journeys go to the survivor with
    /// the merge, which this completes (`follow`); its due deadlines leave
    /// the index with it, or are swept on the next pass if the merge was
    /// refused (the profile stands again) or left behind (below).
    async fn complete_merging(&self, profile: &CustomerId, update: &JourneyUpdate, now: Micros) {
        let Err(error) = self.follow(profile).await else {
            return;
        };
        // A merge that cannot be completed now (its survivor's states
        // kept moving, Redis went away) must not hold the front of the
        // index: its deadlines wait a minute, as long as they are there.
        tracing::warn!(%profile, %error, "a due profile's merge could not be completed; its deadlines wait a minute");
        if update.deadlines.is_empty() {
            return;
        }
        let later = now.saturating_add_micros(MERGE_RETRY_MICROS).0;
        let mut wait = commands::cmd("ZADD");
        wait.arg(DEADLINES_KEY).arg("XX");
        for change in &update.deadlines {
            wait.arg(later)
                .arg(deadline_member(&change.journey, profile));
        }
        if let Err(error) = self.conn.cmd_as::<i64>(&wait).await {
            tracing::warn!(%profile, %error, "a merging profile's deadlines stay due");
        }
    }
}

/// How long the due deadlines of a profile whose merge could not be
/// completed wait before the sweeper tries again.
const MERGE_RETRY_MICROS: i64 = 60 * Micros::PER_SECOND;

/// Whether a script's array reply is `{tag}`.
fn is_tag(items: &[redis::Value], tag: &str) -> bool {
    matches!(items, [redis::Value::BulkString(t)] if t.as_slice() == tag.as_bytes())
}

#[cfg(test)]
mod recent_tests {
    use super::*;

    use crate::domain::journey::testkit::recent as interaction;

    #[test]
    fn latest_interactions_pack_and_unpack() {
        let recent = vec![
            interaction("e1", 5),
            interaction("e-2", 1_795_681_326_665_022),
        ];
        assert_eq!(
            unpack_recent(&pack_recent(&recent)).expect("unpacks"),
            recent
        );
        assert_eq!(unpack_recent(&pack_recent(&[])).expect("empty"), vec![]);
        let ten: Vec<_> = (0..10).map(|i| interaction(&format!("e{i}"), i)).collect();
        let read = unpack_recent(&pack_recent(&ten)).expect("ten");
        assert_eq!(read.len(), 10);
        assert!(read.capacity() <= 10, "no spare room: {}", read.capacity());
        // Ids may start as JSON does.
        let bracketed = vec![interaction("[e1", 5), interaction("[{\"x\":1}]", 6)];
        assert_eq!(
            unpack_recent(&pack_recent(&bracketed)).expect("bracketed ids"),
            bracketed
        );
        assert!(unpack_recent("e1\u{1f}soon\u{1f}web\u{1f}r\u{1f}t").is_err());
        assert!(unpack_recent("e1\u{1f}5").is_err());
    }

    #[test]
    fn the_json_of_earlier_versions_still_reads() {
        // As versions before the packed form wrote it (and as serde still
        // writes it: the stored form did not change with the id's type).
        let json = r#"[{"event_id":"e1","at":5,"interaction":{"channel":"web","reason":"check_accounts","type":"page_view"}}]"#;
        let recent = vec![interaction("e1", 5)];
        assert_eq!(unpack_recent(json).expect("reads"), recent);
        assert_eq!(serde_json::to_string(&recent).expect("json"), json);
    }

    #[test]
    fn an_interaction_counts_its_id_and_long_names_on_the_heap() {
        let one = |id: &str, channel: &str| {
            let mut recent = vec![interaction(id, 5)];
            recent[0].interaction.channel = channel.into();
            recent.shrink_to_fit();
            let states = VersionedStates {
                version: 1,
                states: JourneyStates::new(),
                recent,
            };
            entry_bytes(&CustomerId::from_trusted("c"), &states)
        };
        // An Arc<str> of 8 bytes takes 16 + 8; of 9, 16 + 9 rounded to 32.
        assert_eq!(one("12345678a", "web") - one("12345678", "web"), 8);
        assert_eq!(one(&"x".repeat(26), "web") - one("12345678", "web"), 24);
        // A name past CompactString's 24 inline bytes is counted.
        assert_eq!(one("e1", &"c".repeat(25)) - one("e1", "web"), 25);
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;
    use crate::domain::journey::Interaction;

    fn states(recent: usize) -> VersionedStates {
        VersionedStates {
            version: 1,
            states: JourneyStates::new(),
            recent: (0..recent)
                .map(|i| RecentInteraction {
                    event_id: format!("e{i}").into(),
                    at: Micros(i as i64),
                    interaction: Interaction::default(),
                })
                .collect(),
        }
    }

    fn id(i: usize) -> CustomerId {
        CustomerId::from_trusted(&format!("c{i}"))
    }

    #[test]
    fn states_after_a_write_share_the_unchanged_and_have_no_spare_room() {
        let mut before = states(0);
        for journey in ["a", "b"] {
            before
                .states
                .insert(journey.into(), Arc::new(JourneyState::not_started(journey)));
        }
        let mut changed_b = JourneyState::not_started("b");
        changed_b.status = JourneyStatus::InProgress;
        let after = before.after(
            vec![changed_b.clone(), JourneyState::not_started("c")],
            None,
            2,
        );
        let names: Vec<&str> = after.states.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(after.states.capacity() <= 3, "sized exactly");
        assert_eq!(after.version, 2);
        assert_eq!(**after.states.get("b").expect("b"), changed_b);
        let (Some(a_before), Some(a_after)) = (before.states.get("a"), after.states.get("a"))
        else {
            panic!("a is kept");
        };
        assert!(
            Arc::ptr_eq(a_before, a_after),
            "the unchanged state is shared"
        );
    }

    #[test]
    fn the_cache_keeps_within_its_bytes_and_drops_the_least_recent() {
        let one = entry_bytes(&id(0), &states(10));
        let cache = StatesCache::new(1_000, 3 * one);
        for i in 0..10 {
            cache.put(&id(i), states(10));
            assert!(cache.bytes() <= 3 * one, "{} > {}", cache.bytes(), 3 * one);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.bytes(), 3 * one);
        assert_eq!(cache.get(&id(9)).version, 1, "the latest stays");
        assert_eq!(cache.get(&id(0)).version, 0, "the oldest went");
    }

    #[test]
    fn replacing_evicting_by_count_and_oversized_entries_keep_the_count_right() {
        let small = entry_bytes(&id(0), &states(1));
        let cache = StatesCache::new(2, 100 * small);
        cache.put(&id(0), states(1));
        cache.put(&id(0), states(2));
        assert_eq!(cache.bytes(), entry_bytes(&id(0), &states(2)), "replaced");
        cache.put(&id(1), states(1));
        cache.put(&id(2), states(1));
        assert_eq!(cache.len(), 2, "the count bound");
        assert_eq!(cache.bytes(), 2 * small);
        // Larger than the whole cache: not kept, and its old copy goes.
        cache.put(&id(2), states(10_000));
        assert_eq!(cache.get(&id(2)).version, 0);
        assert_eq!(cache.bytes(), small);
    }
}
