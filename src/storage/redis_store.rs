//! The Redis store: each customer's timeline is a sorted set of encoded
//! events (score = occurred_at in µs), with a hash of event ids for
//! idempotency and a hash of summary figures kept by the append script.
//!
//! Every RPC is one round trip: appends are one `EVALSHA` per customer,
//! all sent in one pipeline; reads are plain commands in one pipeline (a
//! script that returns events costs Redis about 3× a plain `ZREVRANGE`).
//! All of a customer's keys share the `{<customer_id>}` hash tag, so every
//! script and pipeline touches one Redis Cluster slot per customer.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    io::tcp::TcpSettings,
    IntoConnectionInfo, Pipeline, Script,
};

use super::{
    codec, AppendOutcome, ContactHistory, ContextSnapshot, Cursor, EncodedEvent, Retention,
    StorageError, TimelinePage, TimelineQuery, TimelineStore,
};
use crate::domain::{
    ChannelActivity, Contact, CustomerId, CustomerSummary, Event, Initiator, Micros,
};

const APPEND_SCRIPT: &str = include_str!("append.lua");
const RESERVE_SCRIPT: &str = include_str!("reserve.lua");

/// Customers per round trip when reading many contact histories: large
/// enough that a 10,000-customer list takes ten round trips, small enough
/// that one reply stays a few megabytes.
const CUSTOMERS_PER_ROUND_TRIP: usize = 1_000;

/// The three keys of one customer. The id goes inside the hash tag as it
/// is: the suffixes after `}:` are fixed and contain no `}`, so no two
/// customers' keys can be equal, whatever characters the ids hold.
struct Keys {
    timeline: String,
    ids: String,
    summary: String,
    contacts: String,
    contact_ids: String,
}

impl Keys {
    fn of(customer: &CustomerId) -> Self {
        let tag = format!("journey:{{{customer}}}");
        Self {
            timeline: format!("{tag}:tl"),
            ids: format!("{tag}:ids"),
            summary: format!("{tag}:sum"),
            contacts: format!("{tag}:contacts"),
            contact_ids: format!("{tag}:cids"),
        }
    }
}

/// Settings of the connection to Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// How long one command (or pipeline) may take before it fails.
    pub response_timeout: Duration,
    pub connect_timeout: Duration,
}

pub struct RedisStore {
    conn: ConnectionManager,
    append_script: Script,
    reserve_script: Script,
    retention: Retention,
}

impl RedisStore {
    /// A store on the Redis at `settings.url`. The URL is checked now; the
    /// connection is made on first use and remade after a failure, so the
    /// service can start (and report NOT_SERVING) while Redis is down.
    pub fn open(settings: &RedisSettings, retention: Retention) -> Result<Self, StorageError> {
        let info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| StorageError::Unavailable(format!("bad Redis URL: {e}")))?;
        // Nagle's algorithm only adds latency to request/response traffic,
        // and redis-rs 1.x leaves TCP_NODELAY off.
        let tcp = TcpSettings::default().set_nodelay(true);
        let client = redis::Client::open(info.set_tcp_settings(tcp))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.response_timeout))
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            append_script: Script::new(APPEND_SCRIPT),
            reserve_script: Script::new(RESERVE_SCRIPT),
            retention,
        })
    }

    /// Sends a pipeline of script calls, loading the script and sending
    /// again if Redis lost it (a restart or `SCRIPT FLUSH`). NOSCRIPT fails
    /// every call of the pipeline before any write, so resending is safe.
    async fn query_scripts<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        pipe: &Pipeline,
    ) -> Result<T, StorageError> {
        let mut conn = self.conn.clone();
        match pipe.query_async(&mut conn).await {
            Ok(value) => Ok(value),
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                script.prepare_invoke().load_async(&mut conn).await?;
                Ok(pipe.query_async(&mut conn).await?)
            }
            Err(err) => Err(err.into()),
        }
    }
}

#[async_trait]
impl TimelineStore for RedisStore {
    async fn append(
        &self,
        events: &[Event],
        now: Micros,
    ) -> Result<Vec<AppendOutcome>, StorageError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // One script call per customer, in order of first appearance.
        let mut groups: Vec<(&CustomerId, Vec<usize>)> = Vec::new();
        let mut group_of: HashMap<&CustomerId, usize> = HashMap::new();
        for (i, event) in events.iter().enumerate() {
            let g = *group_of.entry(&event.customer_id).or_insert_with(|| {
                groups.push((&event.customer_id, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }
        let cutoff = now.saturating_sub_micros(self.retention.max_age_micros);
        let ttl_ms = (self.retention.max_age_micros / 1_000).max(1);
        let mut pipe = redis::pipe();
        for (customer, indices) in &groups {
            let keys = Keys::of(customer);
            let mut call = self.append_script.prepare_invoke();
            call.key(&keys.timeline)
                .key(&keys.ids)
                .key(&keys.summary)
                .key(&keys.contacts)
                .key(&keys.contact_ids)
                .arg(cutoff.0)
                .arg(self.retention.max_events)
                .arg(ttl_ms);
            for &i in indices {
                let event = &events[i];
                call.arg(event.occurred_at.0)
                    .arg(event.event_id.as_str())
                    .arg(event.channel.as_str())
                    .arg(match event.initiator {
                        Initiator::Customer => "1",
                        Initiator::Company => "2",
                    })
                    .arg(codec::encode(event).0.as_ref())
                    .arg(
                        event
                            .as_contact()
                            .map(|c| codec::pack_contact(&c))
                            .unwrap_or_default(),
                    )
                    .arg(event.timezone().unwrap_or_default());
            }
            pipe.invoke_script(&call);
        }
        let replies: Vec<Vec<i64>> = self.query_scripts(&self.append_script, &pipe).await?;
        let mut outcomes = vec![AppendOutcome::Stored; events.len()];
        for ((_, indices), reply) in groups.iter().zip(replies) {
            if reply.len() != indices.len() {
                return Err(StorageError::Corrupt(format!(
                    "append script answered {} outcomes for {} events",
                    reply.len(),
                    indices.len()
                )));
            }
            for (&i, stored) in indices.iter().zip(reply) {
                if stored == 0 {
                    outcomes[i] = AppendOutcome::Duplicate;
                }
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
        let keys = Keys::of(customer);
        let stop = max_events.saturating_sub(1) as i64;
        let mut pipe = redis::pipe();
        pipe.cmd("ZREVRANGE").arg(&keys.timeline).arg(0).arg(stop);
        pipe.cmd("HGETALL").arg(&keys.summary);
        pipe.cmd("ZCARD").arg(&keys.timeline);
        contacts_since_cmd(&mut pipe, &keys, contacts_since);
        let mut conn = self.conn.clone();
        let (mut members, fields, held, contacts): (
            Vec<Bytes>,
            HashMap<String, Bytes>,
            u64,
            Vec<(String, f64)>,
        ) = pipe.query_async(&mut conn).await?;
        if fields.is_empty() && held == 0 {
            return Ok(None);
        }
        members.truncate(max_events);
        let mut snapshot = snapshot_from(members, fields, held);
        snapshot.contacts = unpack_contacts(contacts)?;
        Ok(Some(snapshot))
    }

    async fn contacts(
        &self,
        customers: &[CustomerId],
        since: Micros,
    ) -> Result<Vec<ContactHistory>, StorageError> {
        let mut histories = Vec::with_capacity(customers.len());
        for chunk in customers.chunks(CUSTOMERS_PER_ROUND_TRIP) {
            let mut pipe = redis::pipe();
            if chunk.len() == 1 {
                // One customer: read it in MULTI/EXEC so the version goes
                // with the contacts read (reserve mode relies on it).
                pipe.atomic();
            }
            for customer in chunk {
                let keys = Keys::of(customer);
                pipe.cmd("EXISTS").arg(&keys.summary).arg(&keys.contacts);
                pipe.cmd("HGET").arg(&keys.summary).arg("tz");
                pipe.cmd("HGET").arg(&keys.contact_ids).arg("");
                contacts_since_cmd(&mut pipe, &keys, since);
            }
            let mut conn = self.conn.clone();
            let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
            let mut replies = replies.into_iter();
            for _ in chunk {
                let mut next = || {
                    replies
                        .next()
                        .ok_or_else(|| StorageError::Corrupt("short pipeline reply".into()))
                };
                let exists: u64 = parse(next()?)?;
                let timezone: Option<String> = parse(next()?)?;
                let version: Option<u64> = parse(next()?)?;
                let contacts: Vec<(String, f64)> = parse(next()?)?;
                histories.push(ContactHistory {
                    known: exists > 0,
                    contacts: unpack_contacts(contacts)?,
                    timezone,
                    version: version.unwrap_or(0),
                });
            }
        }
        Ok(histories)
    }

    async fn reserve_contact(
        &self,
        customer: &CustomerId,
        contact: &Contact,
        expected_version: u64,
        _now: Micros,
    ) -> Result<bool, StorageError> {
        let keys = Keys::of(customer);
        let ttl_ms = (self.retention.max_age_micros / 1_000).max(1);
        let mut call = self.reserve_script.prepare_invoke();
        call.key(&keys.contacts)
            .key(&keys.contact_ids)
            .arg(expected_version)
            .arg(contact.at.0)
            .arg(&contact.event_id)
            .arg(codec::pack_contact(contact))
            .arg(ttl_ms);
        let mut pipe = redis::pipe();
        pipe.invoke_script(&call);
        let (recorded,): (i64,) = self.query_scripts(&self.reserve_script, &pipe).await?;
        Ok(recorded == 1)
    }

    async fn list(&self, query: &TimelineQuery) -> Result<Option<TimelinePage>, StorageError> {
        let keys = Keys::of(&query.customer);
        let (upper, tie) = upper_bound(query);
        let lower = query.start.map_or("-inf".to_string(), |s| s.0.to_string());
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(&keys.summary);
        // Events at the cursor's own instant that sort below it.
        if let Some((at, _)) = &tie {
            pipe.cmd("ZREVRANGEBYSCORE")
                .arg(&keys.timeline)
                .arg(at.0)
                .arg(at.0);
        }
        let main = pipe
            .cmd("ZREVRANGEBYSCORE")
            .arg(&keys.timeline)
            .arg(&upper)
            .arg(&lower);
        if !query.filters_by_content() {
            // Without channel or initiator filters the page is the first
            // `limit` members; one more tells whether a next page exists.
            // With them, the range is read whole: retention bounds it.
            main.arg("LIMIT").arg(0).arg(query.limit + 1);
        }
        let mut conn = self.conn.clone();
        let mut replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let exists: bool = redis::from_redis_value(replies.remove(0))
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        if !exists {
            return Ok(None);
        }
        let mut candidates: Vec<Bytes> = Vec::new();
        if let Some((at, prefix)) = &tie {
            let same_instant: Vec<Bytes> = redis::from_redis_value(replies.remove(0))
                .map_err(|e| StorageError::Corrupt(e.to_string()))?;
            let in_range = query.start.is_none_or(|s| *at >= s);
            candidates.extend(
                same_instant
                    .into_iter()
                    .filter(|m| in_range && m.as_ref() < prefix.as_ref()),
            );
        }
        let rest: Vec<Bytes> = redis::from_redis_value(replies.remove(0))
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
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
        Ok(Some(TimelinePage { events, next }))
    }

    async fn ping(&self) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(Into::into)
    }
}

/// Adds the read of a customer's contacts since `since`, with scores.
fn contacts_since_cmd(pipe: &mut Pipeline, keys: &Keys, since: Micros) {
    pipe.cmd("ZRANGEBYSCORE")
        .arg(&keys.contacts)
        .arg(since.0)
        .arg("+inf")
        .arg("WITHSCORES");
}

fn parse<T: redis::FromRedisValue>(value: redis::Value) -> Result<T, StorageError> {
    redis::from_redis_value(value).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// Contact index entries with their scores, oldest first.
fn unpack_contacts(entries: Vec<(String, f64)>) -> Result<Vec<Contact>, StorageError> {
    entries
        .into_iter()
        // Scores are whole microseconds below 2^53, exact in an f64.
        .map(|(packed, score)| codec::unpack_contact(Micros(score as i64), &packed))
        .collect()
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

fn snapshot_from(
    members: Vec<Bytes>,
    mut fields: HashMap<String, Bytes>,
    held: u64,
) -> ContextSnapshot {
    let micros = |v: &Bytes| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .map(Micros)
    };
    let mut summary = CustomerSummary {
        total_events: held,
        first_seen: fields.get("first").and_then(micros),
        last_seen: fields.get("last").and_then(micros),
        ..CustomerSummary::default()
    };
    for (field, value) in &fields {
        let Some((kind, channel)) = field.split_once(':') else {
            continue;
        };
        let activity: &mut ChannelActivity =
            summary.channels.entry(channel.to_string()).or_default();
        let count = || micros(value).map_or(0, |m| m.0.max(0) as u64);
        match kind {
            "c" => activity.customer_initiated = count(),
            "k" => activity.company_initiated = count(),
            "t" => activity.last_at = micros(value),
            _ => {}
        }
    }
    ContextSnapshot {
        events: members.into_iter().map(EncodedEvent).collect(),
        summary,
        last_customer_interaction: fields.remove("lc").map(EncodedEvent),
        last_company_contact: fields.remove("lk").map(EncodedEvent),
        contacts: Vec::new(),
    }
}
