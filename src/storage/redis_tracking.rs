//! The context cache's link to Redis: a connection subscribed to
//! `__redis__:invalidate`, where Redis pushes the keys written after the
//! tracked connection read them, and the task that turns each into the
//! customer's context dropped from the cache.
//!
//! The cache serves only while this link is whole. It is switched on once
//! the listener is subscribed and the tracked connection has been made
//! anew, pointing at it (and checked to: `Tracking::check_redirect`); it is
//! cleared and switched off the moment the listener's connection fails,
//! leaves its pings unanswered for two periods, or the tracked connection
//! finds Redis does not know the listener. The tracked connection clears it
//! too when it ends (`redis_conn::Tracking::on_close`): Redis forgets what
//! it tracked for a connection gone.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::Notify,
    task::JoinHandle,
};

use super::{
    commands,
    context_cache::{customer_of_key, ContextCache, Counts},
    redis_conn::{BoxedRead, BoxedWrite, RedisConnection, Tracking},
    resp::{Decoded, Decoder, Frame, Reply},
    StorageError,
};

/// Where Redis sends invalidations in the RESP2 protocol.
const CHANNEL: &str = "__redis__:invalidate";
/// The listener pings this often; a connection that answers nothing for
/// two periods is taken for dead (a host gone without a reset).
const PING_EVERY: Duration = Duration::from_secs(1);
/// A subscription this long-lived was healthy: the next failure starts
/// the back-off (and its warning) afresh.
const HEALTHY: Duration = Duration::from_secs(10);
/// How often the cache's hits and misses are logged (when it was asked).
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// Waits between attempts to subscribe, doubling up to the last.
const BACKOFF: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
];

/// The cache, the tracked connection its reads go through, and the
/// listener and report tasks (stopped when this is dropped).
pub(super) struct CachedReads {
    pub cache: Arc<ContextCache>,
    pub conn: Arc<RedisConnection>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for CachedReads {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl CachedReads {
    /// Starts the listener on a runtime (the cache serves once it is
    /// subscribed). `conn` gives the connection settings.
    pub fn start(conn: &RedisConnection, max_bytes: usize) -> Result<Self, StorageError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StorageError::Unavailable("the context cache needs a Tokio runtime".into())
        })?;
        let cache = Arc::new(ContextCache::new(max_bytes));
        let redirect = Arc::new(AtomicI64::new(0));
        let stray = Arc::new(Stray::default());
        let name: Arc<str> = listener_name().into();
        let on_close = {
            let cache = cache.clone();
            Arc::new(move || cache.forget_all()) as Arc<dyn Fn() + Send + Sync>
        };
        let on_stray = {
            let stray = stray.clone();
            Arc::new(move |redirect| stray.report(redirect)) as Arc<dyn Fn(i64) + Send + Sync>
        };
        let tracked = Arc::new(conn.tracked(Tracking {
            redirect: redirect.clone(),
            listener_name: name.clone(),
            on_close,
            on_stray,
        }));
        let listener = runtime.spawn(listen(Listener {
            // Its own sockets, with the same settings.
            settings: conn.like(),
            name,
            tracked: tracked.clone(),
            cache: cache.clone(),
            redirect,
            stray,
        }));
        let reporter = runtime.spawn(report(cache.clone()));
        Ok(Self {
            cache,
            conn: tracked,
            tasks: [listener, reporter],
        })
    }
}

/// Logs what the cache answered, once a period in which it was asked.
async fn report(cache: Arc<ContextCache>) {
    let mut ticker = tokio::time::interval(REPORT_EVERY);
    ticker.tick().await;
    let mut before = Counts::default();
    loop {
        ticker.tick().await;
        let (counts, kept, _) = cache.counts();
        if counts != before {
            tracing::info!(
                hits = counts.hits - before.hits,
                misses = counts.misses - before.misses,
                off = counts.off - before.off,
                kept,
                "context cache in the last {REPORT_EVERY:?}"
            );
            before = counts;
        }
    }
}

/// A name no other client has (`CLIENT SETNAME`): the process and a
/// random number.
fn listener_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("journey-invalidations-{}-{random:016x}", std::process::id())
}

/// What the listener task holds.
struct Listener {
    /// Unused as a connection: the settings its sockets are opened with.
    settings: RedisConnection,
    name: Arc<str>,
    tracked: Arc<RedisConnection>,
    cache: Arc<ContextCache>,
    redirect: Arc<AtomicI64>,
    stray: Arc<Stray>,
}

/// The tracked connection's report that Redis does not know the listener
/// by the redirect it was given: which redirect, so that a report about a
/// subscription already replaced does not end the next one.
#[derive(Default)]
struct Stray {
    redirect: AtomicI64,
    notify: Notify,
}

impl Stray {
    fn report(&self, redirect: i64) {
        self.redirect.store(redirect, Ordering::Release);
        self.notify.notify_one();
    }

    /// Waits for a report about `redirect`.
    async fn about(&self, redirect: i64) {
        loop {
            self.notify.notified().await;
            if self.redirect.load(Ordering::Acquire) == redirect {
                return;
            }
        }
    }
}

/// Subscribes, serves invalidations until the connection fails, and
/// subscribes again, for as long as the store lives.
async fn listen(l: Listener) {
    let mut failures = 0usize;
    loop {
        let error = match subscribe(&l.settings, &l.name).await {
            Ok((sub, id)) => {
                // The tracked connection is made anew to send its
                // invalidations here, and must be made before the cache
                // serves (a Redis without `CLIENT LIST ID`, or an ACL
                // without it, refuses it: the cache then stays off).
                l.redirect.store(id, Ordering::Release);
                l.tracked.reset().await;
                match l.tracked.cmd_as::<String>(&commands::cmd("PING")).await {
                    Ok(_) => {
                        // Tickets of before are void.
                        l.cache.clear(true);
                        tracing::info!(
                            client_id = id,
                            "context cache: invalidation listener subscribed"
                        );
                        let since = tokio::time::Instant::now();
                        let error = serve(sub, &l.cache, &l.stray, id).await;
                        if since.elapsed() >= HEALTHY {
                            failures = 0;
                        }
                        error
                    }
                    Err(error) => error,
                }
            }
            Err(error) => error,
        };
        l.cache.clear(false);
        l.redirect.store(0, Ordering::Release);
        l.tracked.reset().await;
        if failures == 0 {
            tracing::warn!(%error, "context cache: invalidation listener lost; cache off until it is back");
        }
        let wait = BACKOFF[failures.min(BACKOFF.len() - 1)];
        failures += 1;
        tokio::time::sleep(wait).await;
    }
}

/// A subscribed connection, and its client id (the tracked connection's
/// redirect).
async fn subscribe(
    settings: &RedisConnection,
    name: &str,
) -> Result<(Subscribed, i64), StorageError> {
    let (mut read, mut write) = settings.open_socket().await?;
    let mut hello = settings.set_up();
    // Refused by a Redis without tracking (before 6.0): the cache then
    // stays off.
    hello.cmd("CLIENT").arg("TRACKING").arg("OFF");
    hello.cmd("CLIENT").arg("SETNAME").arg(name);
    hello.cmd("CLIENT").arg("ID");
    hello.cmd("SUBSCRIBE").arg(CHANNEL);
    let mut reader = Replies::new();
    write
        .write_all(&hello.packed())
        .await
        .map_err(|e| lost(&e))?;
    let mut id = None;
    for _ in 0..hello.len() {
        let reply = tokio::time::timeout(2 * PING_EVERY, reader.next(&mut read))
            .await
            .map_err(|_| StorageError::Timeout("subscribing to invalidations".into()))??;
        match reply.frame {
            Frame::Error(e) => {
                return Err(StorageError::Unavailable(format!(
                    "Redis refused the invalidation listener: {}",
                    String::from_utf8_lossy(&reply.bytes[e])
                )))
            }
            Frame::Integer(n) => id = Some(n),
            _ => {}
        }
    }
    let id = id.ok_or_else(|| StorageError::Corrupt("no client id".into()))?;
    Ok((
        Subscribed {
            read,
            write,
            reader,
        },
        id,
    ))
}

struct Subscribed {
    read: BoxedRead,
    write: BoxedWrite,
    reader: Replies,
}

/// Drops the context of every customer whose key Redis names, until the
/// connection fails, answers nothing for two ping periods, or the tracked
/// connection finds Redis does not know this listener as `id`.
async fn serve(mut sub: Subscribed, cache: &ContextCache, stray: &Stray, id: i64) -> StorageError {
    let ping = commands::cmd("PING").packed();
    let mut ticker = tokio::time::interval(PING_EVERY);
    // Ticks since anything was heard: the second ends the subscription,
    // one to two periods after the last message.
    let mut silent_ticks = 0;
    loop {
        tokio::select! {
            () = stray.about(id) => {
                return StorageError::Unavailable(
                    "the tracked connection's server does not know this listener".into(),
                );
            }
            reply = sub.reader.next(&mut sub.read) => match reply {
                Ok(reply) => {
                    silent_ticks = 0;
                    invalidate(cache, &reply);
                }
                Err(error) => return error,
            },
            _ = ticker.tick() => {
                silent_ticks += 1;
                if silent_ticks >= 2 {
                    return StorageError::Timeout(format!(
                        "no answer to a ping within {:?}",
                        2 * PING_EVERY
                    ));
                }
                if let Err(e) = sub.write.write_all(&ping).await {
                    return lost(&e);
                }
            }
        }
    }
}

/// Applies one message: `message`, the channel, then the keys written
/// (nil when Redis flushed a whole database).
fn invalidate(cache: &ContextCache, reply: &Reply) {
    let Frame::Array(items) = &reply.frame else {
        return;
    };
    let text = |f: &Frame| match f {
        Frame::Bulk(span) | Frame::Simple(span) => Some(&reply.bytes[span.clone()]),
        _ => None,
    };
    if items.first().and_then(text) != Some(b"message".as_slice()) {
        return; // a pong or the subscription's confirmation
    }
    match items.get(2) {
        Some(Frame::Array(keys)) => {
            for key in keys.iter().filter_map(text) {
                if let Some(customer) = customer_of_key(key) {
                    cache.invalidate(customer);
                }
            }
        }
        // Nil: Redis flushed a database. Anything else (a key as a lone
        // string) would be a protocol this does not know: trust nothing kept.
        _ => cache.forget_all(),
    }
}

fn lost(e: &std::io::Error) -> StorageError {
    StorageError::Unavailable(format!("invalidation listener: {e}"))
}

/// Replies read off a socket one at a time.
struct Replies {
    buf: BytesMut,
    decoder: Decoder,
}

impl Replies {
    fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(4096),
            decoder: Decoder::default(),
        }
    }

    /// The next reply. Cancel-safe: what was read stays in the buffer.
    async fn next(&mut self, read: &mut BoxedRead) -> Result<Reply, StorageError> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Decoded::Reply(reply)) => return Ok(reply),
                Ok(Decoded::Partial { .. }) => {}
                Err(e) => return Err(StorageError::Corrupt(e.to_string())),
            }
            self.buf.reserve(4096);
            match read.read_buf(&mut self.buf).await {
                Ok(0) => {
                    return Err(StorageError::Unavailable(
                        "Redis closed the invalidation listener's connection".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(lost(&e)),
            }
        }
    }
}
