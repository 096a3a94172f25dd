//! The store's connection to Redis: one multiplexed socket, pipelines out
//! as packed bytes, replies back as frames (`resp.rs`) whose strings are
//! spans of the bytes read: an event read from Redis reaches the gRPC
//! response without being parsed into an owned value on the way (a page's
//! events as zero-copy slices, a context's copied once into one framed
//! run, `FramedEvents`). The hot paths read replies directly (`Frames`, `Strings`); the
//! others parse them with redis-rs's `FromRedisValue` (`query_as`).
//!
//! Why not redis-rs's connection: a profile of GetJourneyContext (50 events
//! of ~300 B, BENCHMARKS.md) put a third of the service's CPU in redis-rs's
//! reply parser (`combine`), its `Value` tree (one `Vec<u8>` per member)
//! and the conversions out of it, plus much of the malloc/free. fred, whose
//! frames are zero-copy too, saved only ~12 % of client CPU in the same
//! measurement (`examples/redis_clients.rs`): its command routing costs
//! what its frames save. Commands are built packed (`commands.rs`);
//! redis-rs still parses the cold paths' replies and URLs, and hashes
//! scripts.
//!
//! One writer task batches every request waiting into one `write`; one
//! reader task decodes replies and hands each request its replies, in the
//! order the requests were written (Redis answers a connection in order).
//! A broken connection fails what is in flight with `Unavailable` and is
//! replaced on the next request. A request that times out leaves its place
//! in the order: its replies, when they come, are dropped. A connection
//! that sends nothing for the response timeout while requests wait is taken
//! for dead (a host gone without a reset) and replaced the same way, as is
//! one that answers READONLY (its server was demoted by a failover).

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo, FromRedisValue};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, oneshot, Mutex},
};

use super::{
    commands::{self, Pipeline},
    redis_stats::{ConnectionStats, RedisStats},
    resp::{self, Decoded, Frame, Reply},
    StorageError,
};

/// Why a reader stops when its connection was let go (its writer ended).
const LET_GO: &str = "the connection was let go";
/// Most bytes the writer gathers into one write.
const MAX_WRITE_BATCH: usize = 256 * 1024;
/// Room the reader keeps free in its buffer before a read: one read takes
/// a whole 50-event context (~17 KB) and more.
const READ_CHUNK: usize = 64 * 1024;

type Answer = Result<Vec<Reply>, StorageError>;
/// The halves of a connection, TCP or Unix socket.
pub(super) type BoxedRead = Box<dyn AsyncRead + Send + Unpin>;
pub(super) type BoxedWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// What a request's caller hears back: its replies (or why there are
/// none), or that it was never written, its connection gone first, so it
/// can go again on a new one without running twice. Only the writer says
/// `NotSent`, and only of requests it knows it did not write.
enum Heard {
    Answer(Answer),
    NotSent,
}

/// A request on its way: its packed commands and how many replies it waits for.
struct Request {
    packed: Bytes,
    replies: usize,
    answer: oneshot::Sender<Heard>,
}

/// A request written, waiting for its replies.
struct Waiting {
    replies: usize,
    answer: oneshot::Sender<Heard>,
}

/// Where Redis listens.
#[derive(Debug, Clone)]
enum Address {
    Tcp(String, u16),
    /// A Unix socket (`redis+unix:///path` or `unix:///path`): Redis on the
    /// same host, without the loopback TCP stack's cost per call.
    #[cfg(unix)]
    Unix(std::path::PathBuf),
}

/// Where to connect and what to send first (its `Debug` leaves the
/// password out).
#[derive(Clone)]
struct Target {
    address: Address,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .finish()
    }
}

/// The live connection's request queue, or when the last attempt to
/// connect failed.
enum Current {
    None,
    Live(mpsc::UnboundedSender<Request>),
    /// Callers that waited for that attempt fail at once with its error
    /// rather than each trying again in turn (a Redis that drops connection
    /// attempts would make the last of N callers wait N connect timeouts).
    Failed(std::time::Instant, StorageError),
}

/// How long a failed attempt to connect answers for the next ones.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// A shared connection: clone the store, not this; calls from many tasks
/// are pipelined on one socket.
pub(super) struct RedisConnection {
    target: Target,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// The live connection's request queue (none, or closed: connect anew)
    /// or the last failed attempt to connect.
    /// A tokio mutex, because connecting (an await) happens under it, so
    /// concurrent callers wait for one connection instead of making many.
    current: Mutex<Current>,
    /// Set for the connection of the context cache's reads.
    tracking: Option<Tracking>,
    stats: Arc<ConnectionStats>,
}

/// A connection whose reads Redis tracks (`CLIENT TRACKING ... REDIRECT`):
/// the invalidations of the keys it reads go to another connection, the
/// invalidation listener's.
#[derive(Clone)]
pub(super) struct Tracking {
    /// The listener's client id; 0 while it is not subscribed (the
    /// connection then cannot be made).
    pub redirect: Arc<AtomicI64>,
    /// The listener's connection name (`CLIENT SETNAME`), unique to this
    /// store: a connection is made only if its redirect bears it.
    pub listener_name: Arc<str>,
    /// Called when a connection ends: Redis forgets what it tracked for
    /// it, so what was read through it can no longer be trusted.
    pub on_close: Arc<dyn Fn() + Send + Sync>,
    /// Called with the redirect when Redis does not know the listener by
    /// it (no such client, or another one: the listener's connection is to
    /// a server this one replaced): it subscribes again.
    pub on_stray: Arc<dyn Fn(i64) + Send + Sync>,
}

impl RedisConnection {
    /// A connection to the Redis `info` names; it connects on first use.
    /// TCP and Unix socket addresses are supported, not TLS.
    pub fn new(
        info: &ConnectionInfo,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, StorageError> {
        let address = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Address::Tcp(host.clone(), *port),
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Address::Unix(path.clone()),
            other => {
                return Err(StorageError::Unavailable(format!(
                    "unsupported Redis address {other}: use redis://host:port/db or redis+unix:///path?db=N"
                )))
            }
        };
        let settings = info.redis_settings();
        if settings.db() < 0 {
            return Err(StorageError::Unavailable(format!(
                "the Redis database index must be 0 or more, not {}",
                settings.db()
            )));
        }
        Ok(Self {
            target: Target {
                address,
                username: settings.username().map(str::to_string),
                password: settings.password().map(str::to_string),
                db: settings.db(),
            },
            connect_timeout,
            response_timeout,
            current: Mutex::new(Current::None),
            stats: Arc::default(),
            tracking: None,
        })
    }

    /// Another connection with the same settings (not connected yet).
    pub fn like(&self) -> Self {
        Self {
            target: self.target.clone(),
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            current: Mutex::new(Current::None),
            stats: Arc::default(),
            tracking: None,
        }
    }

    /// Another connection with the same settings, whose reads Redis tracks
    /// for `tracking`'s listener.
    pub fn tracked(&self, tracking: Tracking) -> Self {
        Self {
            tracking: Some(tracking),
            ..self.like()
        }
    }

    /// Lets the live connection go: the next request connects anew (with
    /// the settings of then, such as a new tracking redirect).
    pub async fn reset(&self) {
        *self.current.lock().await = Current::None;
    }

    /// Sends a pipeline and answers one frame per command (for a
    /// transaction: the frames of the `EXEC` reply). An error reply of a
    /// command stays in its place as `Frame::Error`.
    pub fn query(
        &self,
        pipe: &Pipeline,
    ) -> impl std::future::Future<Output = Result<Vec<Reply>, StorageError>> + Send + '_ {
        // Packed now, so the future does not hold the pipeline.
        let packed = pipe.packed();
        let (commands, transaction) = (pipe.len(), pipe.is_transaction());
        async move { self.query_packed(packed, commands, transaction).await }
    }

    /// A pipeline's replies parsed as redis-rs parses a pipeline's (a
    /// tuple or a `Vec`, one item per command); an error reply fails it.
    pub async fn query_as<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StorageError> {
        let frames = self.query(pipe).await?;
        parse_as(redis::Value::Array(values(frames)?))
    }

    /// One command's reply parsed as `T` (of a pipeline of one, from
    /// `commands::cmd`); an error reply fails it.
    pub fn cmd_as<T: FromRedisValue>(
        &self,
        cmd: &Pipeline,
    ) -> impl std::future::Future<Output = Result<T, StorageError>> + Send + '_ {
        let packed = cmd.packed();
        async move {
            let frames = self.send(packed, 1).await?;
            let value = values(frames)?
                .pop()
                .ok_or_else(|| StorageError::Corrupt("no reply".into()))?;
            parse_as(value)
        }
    }

    /// A pipeline of `script`'s calls, parsed as `T`. When Redis lost the
    /// script (a restart, `SCRIPT FLUSH`) it is loaded and the calls it
    /// refused are sent again: NOSCRIPT fails a call before it writes
    /// anything, and the calls that ran (a flush can land between two
    /// calls of a pipeline) must not run twice. Not for a transaction:
    /// the calls sent again would commit apart from the others.
    pub async fn query_scripts<T: FromRedisValue>(
        &self,
        script: &LuaScript,
        pipe: &Pipeline,
    ) -> Result<T, StorageError> {
        let (commands, transaction) = (pipe.len(), pipe.is_transaction());
        debug_assert!(!transaction, "script calls sent in a transaction");
        let mut frames = self
            .query_packed(pipe.packed(), commands, transaction)
            .await?;
        let refused: Vec<usize> = (0..frames.len())
            .filter(|&i| is_noscript(&frames[i]))
            .collect();
        if !refused.is_empty() {
            if refused.iter().any(|&i| i >= commands) {
                return Err(StorageError::Corrupt("more replies than calls".into()));
            }
            let _: String = self
                .cmd_as(commands::cmd("SCRIPT").arg("LOAD").arg(&script.source))
                .await?;
            let again = pipe.packed_only(refused.iter().copied());
            let replies = self.query_packed(again, refused.len(), transaction).await?;
            for (i, reply) in refused.into_iter().zip(replies) {
                frames[i] = reply;
            }
        }
        parse_as(redis::Value::Array(values(frames)?))
    }

    async fn query_packed(
        &self,
        packed: Bytes,
        commands: usize,
        transaction: bool,
    ) -> Result<Vec<Reply>, StorageError> {
        if transaction {
            // MULTI, one QUEUED per command, then EXEC with the replies.
            let mut frames = self.send(packed, commands + 2).await?;
            match frames.pop() {
                Some(Reply {
                    bytes,
                    frame: Frame::Array(items),
                }) => Ok(items
                    .into_iter()
                    .map(|frame| Reply {
                        bytes: bytes.clone(),
                        frame,
                    })
                    .collect()),
                Some(Reply {
                    bytes,
                    frame: Frame::Error(e),
                }) => Err(StorageError::Unavailable(format!(
                    "transaction failed: {}",
                    String::from_utf8_lossy(&bytes[e])
                ))),
                _ => Err(StorageError::Unavailable("transaction aborted".into())),
            }
        } else {
            self.send(packed, commands).await
        }
    }

    /// Connections opened and round trips so far.
    pub fn stats(&self) -> RedisStats {
        self.stats.snapshot()
    }

    /// Sends packed commands and answers their `replies` frames.
    async fn send(&self, packed: Bytes, replies: usize) -> Answer {
        self.send_on(packed, replies)
            .await
            .map(|(frames, _)| frames)
    }

    /// `send`, also answering the queue of the connection that answered.
    async fn send_on(
        &self,
        packed: Bytes,
        replies: usize,
    ) -> Result<(Vec<Reply>, Option<mpsc::UnboundedSender<Request>>), StorageError> {
        if replies == 0 {
            return Ok((Vec::new(), None));
        }
        // A request the queue refused or the writer did not write (its
        // connection broke meanwhile) goes once more, on a new connection.
        for _ in 0..2 {
            let queue = self.queue().await?;
            // Timed from here: waiting for a connection (or making one) is
            // not Redis's time.
            let started = std::time::Instant::now();
            let (tx, rx) = oneshot::channel();
            let request = Request {
                packed: packed.clone(),
                replies,
                answer: tx,
            };
            if queue.send(request).is_ok() {
                if let Heard::Answer(answer) = self.answer(rx).await {
                    self.stats.round_trip(started.elapsed());
                    return answer.map(|frames| (frames, Some(queue)));
                }
            }
            self.forget(&queue).await;
        }
        Err(StorageError::Unavailable(
            "the Redis connection closed twice in a row".into(),
        ))
    }

    /// Sends a pipeline (not a transaction), and lets the connection that
    /// answered go when `let_go` says so of its replies: the next request
    /// connects anew, while one made meanwhile on another connection is
    /// left alone.
    pub async fn query_then_let_go_if(
        &self,
        pipe: &Pipeline,
        let_go: impl FnOnce(&[Reply]) -> bool,
    ) -> Result<Vec<Reply>, StorageError> {
        debug_assert!(!pipe.is_transaction(), "a transaction");
        let (frames, queue) = self.send_on(pipe.packed(), pipe.len()).await?;
        if let Some(queue) = queue.filter(|_| let_go(&frames)) {
            self.forget(&queue).await;
        }
        Ok(frames)
    }

    async fn wait(&self, rx: oneshot::Receiver<Heard>) -> Answer {
        match self.answer(rx).await {
            Heard::Answer(answer) => answer,
            Heard::NotSent => Err(StorageError::Unavailable(
                "the Redis connection closed before sending the request".into(),
            )),
        }
    }

    /// What the connection says of a request, within the response timeout.
    async fn answer(&self, rx: oneshot::Receiver<Heard>) -> Heard {
        match tokio::time::timeout(self.response_timeout, rx).await {
            Ok(Ok(heard)) => heard,
            // Dropped unanswered (a task ended abnormally): it may have been
            // written, so it does not go again.
            Ok(Err(_)) => Heard::Answer(Err(StorageError::Unavailable(
                "the Redis connection closed before answering".into(),
            ))),
            // The reply may still come; it then goes to a dropped receiver
            // and the next request's reply to the next request.
            Err(_) => Heard::Answer(Err(StorageError::Timeout(format!(
                "no reply from Redis within {:?}",
                self.response_timeout
            )))),
        }
    }

    /// The live connection's queue, connecting first when there is none.
    async fn queue(&self) -> Result<mpsc::UnboundedSender<Request>, StorageError> {
        let mut current = self.current.lock().await;
        match &*current {
            Current::Live(queue) if !queue.is_closed() => return Ok(queue.clone()),
            Current::Failed(at, error) if at.elapsed() < RECONNECT_BACKOFF => {
                return Err(error.clone())
            }
            _ => {}
        }
        match self.connect().await {
            Ok(queue) => {
                self.stats.connected();
                *current = Current::Live(queue.clone());
                Ok(queue)
            }
            Err(error) => {
                *current = Current::Failed(std::time::Instant::now(), error.clone());
                Err(error)
            }
        }
    }

    async fn forget(&self, broken: &mpsc::UnboundedSender<Request>) {
        let mut current = self.current.lock().await;
        if matches!(&*current, Current::Live(q) if q.same_channel(broken)) {
            *current = Current::None;
        }
    }

    /// A socket connecting, within the connect timeout.
    async fn within_connect_timeout<S>(
        &self,
        connecting: impl std::future::Future<Output = std::io::Result<S>>,
    ) -> Result<S, StorageError> {
        // Unavailable, not Timeout: nothing was sent, so a call refused
        // here is safe to retry (UNAVAILABLE) as a refused connect is.
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| {
                StorageError::Unavailable(format!(
                    "connecting to Redis: no answer within {:?}",
                    self.connect_timeout
                ))
            })?
            .map_err(|e| StorageError::Unavailable(format!("connecting to Redis: {e}")))
    }

    /// A new socket to Redis, as its read and write halves, before any
    /// command (see `set_up` for what a connection sends first).
    pub async fn open_socket(&self) -> Result<(BoxedRead, BoxedWrite), StorageError> {
        // Either kind of socket, behind one reader and one writer: a call
        // through a vtable per read or write (callgrind counted the same
        // instructions per context and per check as with the two copies).
        Ok(match &self.target.address {
            Address::Tcp(host, port) => {
                let stream = self
                    .within_connect_timeout(TcpStream::connect((host.as_str(), *port)))
                    .await?;
                // Request/response traffic: Nagle's algorithm only adds latency.
                stream
                    .set_nodelay(true)
                    .map_err(|e| StorageError::Unavailable(format!("TCP_NODELAY: {e}")))?;
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
            #[cfg(unix)]
            Address::Unix(path) => {
                let stream = self
                    .within_connect_timeout(tokio::net::UnixStream::connect(path))
                    .await?;
                let (read, write) = stream.into_split();
                (Box::new(read), Box::new(write))
            }
        })
    }

    /// What a new connection sends first: `AUTH` and `SELECT` when the URL
    /// asks for them.
    pub fn set_up(&self) -> Pipeline {
        let target = &self.target;
        let mut hello = Pipeline::new();
        if let Some(password) = &target.password {
            let auth = hello.cmd("AUTH");
            if let Some(username) = &target.username {
                auth.arg(username);
            }
            auth.arg(password);
        }
        if target.db != 0 {
            hello.cmd("SELECT").arg(target.db);
        }
        hello
    }

    async fn connect(&self) -> Result<mpsc::UnboundedSender<Request>, StorageError> {
        let mut hello = self.set_up();
        // The tracked connection's redirect, read once: the one checked.
        let tracked = self
            .tracking
            .as_ref()
            .map(|t| (t, t.redirect.load(Ordering::Acquire)));
        if let Some((_, redirect)) = tracked {
            if redirect <= 0 {
                return Err(StorageError::Unavailable(
                    "the cache's invalidation listener is not subscribed".into(),
                ));
            }
            hello
                .cmd("CLIENT")
                .arg("TRACKING")
                .arg("ON")
                .arg("REDIRECT")
                .arg(redirect);
            // Last: checked by `Tracking::check_redirect`.
            hello.cmd("CLIENT").arg("LIST").arg("ID").arg(redirect);
        }
        let (read, write) = self.open_socket().await?;
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (written, written_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(write, requests_rx, written));
        let reading = read_loop(read, written_rx, self.response_timeout);
        match self.tracking.as_ref().map(|t| t.on_close.clone()) {
            None => drop(tokio::spawn(reading)),
            Some(on_close) => drop(tokio::spawn(async move {
                reading.await;
                on_close();
            })),
        }
        if !hello.is_empty() {
            let (tx, rx) = oneshot::channel();
            let request = Request {
                packed: hello.packed(),
                replies: hello.len(),
                answer: tx,
            };
            requests
                .send(request)
                .map_err(|_| StorageError::Unavailable("the Redis connection closed".into()))?;
            // No answer to the set-up: the caller's own request was not
            // sent, so it is safe to retry (Unavailable), not a timeout of
            // the call itself; callers within the back-off get the same.
            let replies = self.wait(rx).await.map_err(|error| match error {
                StorageError::Timeout(why) => {
                    StorageError::Unavailable(format!("setting up a Redis connection: {why}"))
                }
                other => other,
            })?;
            for reply in &replies {
                if let Frame::Error(e) = &reply.frame {
                    // For the tracked connection, most likely a redirect to
                    // a client id this server does not have.
                    if let Some((tracking, redirect)) = tracked {
                        (tracking.on_stray)(redirect);
                    }
                    return Err(StorageError::Unavailable(format!(
                        "Redis refused the connection set-up: {}",
                        String::from_utf8_lossy(&reply.bytes[e.clone()])
                    )));
                }
            }
            if let Some((tracking, redirect)) = tracked {
                tracking.check_redirect(redirect, replies.last())?;
            }
        }
        Ok(requests)
    }
}

impl Tracking {
    /// Whether the client the invalidations go to (`CLIENT LIST ID`'s
    /// answer) is this store's listener on this very server: client ids
    /// start again after a restart, and a failover leads to another
    /// server, so the id alone could name a stranger, to whom Redis would
    /// send the invalidations.
    fn check_redirect(&self, redirect: i64, listed: Option<&Reply>) -> Result<(), StorageError> {
        let name = format!("name={}", self.listener_name);
        let ours = match listed {
            Some(Reply {
                bytes,
                frame: Frame::Bulk(span),
            }) => bytes[span.clone()]
                .split(|b| *b == b' ' || *b == b'\n')
                .any(|field| field == name.as_bytes()),
            _ => false,
        };
        if ours {
            return Ok(());
        }
        (self.on_stray)(redirect);
        Err(StorageError::Unavailable(
            "the cache's invalidations would go to another client: resubscribing".into(),
        ))
    }
}

/// Writes requests as they come, every request waiting in one write, and
/// tells the reader about each before its bytes leave. When it stops (the
/// connection broke or was let go), the requests it did not take are told
/// they were not sent.
async fn write_loop(
    socket: impl AsyncWrite + Unpin,
    mut requests: mpsc::UnboundedReceiver<Request>,
    written: mpsc::UnboundedSender<Waiting>,
) {
    write_until_broken(socket, &mut requests, written).await;
    requests.close();
    // `recv` until `None`: `try_recv` could miss a send under way.
    while let Some(request) = requests.recv().await {
        let _ = request.answer.send(Heard::NotSent);
    }
}

async fn write_until_broken(
    mut socket: impl AsyncWrite + Unpin,
    requests: &mut mpsc::UnboundedReceiver<Request>,
    written: mpsc::UnboundedSender<Waiting>,
) {
    let mut batch = BytesMut::new();
    loop {
        // The reader gone (the connection broke) ends the writer too, which
        // closes the request queue: the next request connects anew.
        let first = tokio::select! {
            request = requests.recv() => request,
            () = written.closed() => None,
        };
        let Some(first) = first else {
            return;
        };
        let mut next = Some(first);
        while let Some(request) = next.take() {
            if request.answer.is_closed() {
                // Its caller gave up (timed out) before it left: not sent,
                // so a retry of a write cannot apply it twice.
                next = requests.try_recv().ok();
                continue;
            }
            batch.extend_from_slice(&request.packed);
            let waiting = Waiting {
                replies: request.replies,
                answer: request.answer,
            };
            if let Err(mpsc::error::SendError(refused)) = written.send(waiting) {
                // The reader is gone: this one and the rest are not sent;
                // those announced before it are the reader's to answer.
                let _ = refused.answer.send(Heard::NotSent);
                return;
            }
            if batch.len() < MAX_WRITE_BATCH {
                next = requests.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        // A reader that gave up on the connection has answered what it was
        // told of (Unavailable): not written then, and a write that a dead
        // peer would block for the kernel's minutes is abandoned.
        if written.is_closed() {
            return;
        }
        tokio::select! {
            biased;
            () = written.closed() => return,
            written_all = socket.write_all(&batch) => if let Err(e) = written_all {
                tracing::warn!(error = %e, "writing to Redis failed; reconnecting on next use");
                return;
            },
        }
        batch.clear();
    }
}

/// Decodes replies and answers the requests in the order they were written.
/// While requests wait, a connection that sends nothing for `silence` is
/// taken for dead (a host gone without a reset, a network split): the
/// requests fail and the next one connects anew, instead of every call
/// timing out until the kernel gives up on the socket.
async fn read_loop(
    mut socket: impl AsyncRead + Unpin,
    mut written: mpsc::UnboundedReceiver<Waiting>,
    silence: Duration,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut decoder = resp::Decoder::default();
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    let mut frames: Vec<Reply> = Vec::new();
    // A reply known to be incomplete is not decoded again before the
    // buffer holds what it needs (a large reply may take several reads).
    let mut need = 0;
    let mut read_only = false;
    let failure = loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        while let Ok(next) = written.try_recv() {
            waiting.push_back(next);
        }
        let read = if waiting.is_empty() {
            // Idle: wait for bytes or for the next request (`read_buf` is
            // cancel-safe: nothing read is lost when the other branch wins).
            tokio::select! {
                read = socket.read_buf(&mut buf) => read,
                next = written.recv() => match next {
                    Some(next) => {
                        waiting.push_back(next);
                        continue;
                    }
                    // The writer is gone: the connection was let go.
                    None => break LET_GO.to_string(),
                },
            }
        } else {
            match tokio::time::timeout(silence, socket.read_buf(&mut buf)).await {
                Ok(read) => read,
                Err(_) => break format!("no reply from Redis within {silence:?}"),
            }
        };
        match read {
            Ok(0) => break "Redis closed the connection".to_string(),
            Ok(_) => {}
            Err(e) => break format!("reading from Redis: {e}"),
        }
        let mut broken = None;
        while buf.len() >= need {
            let frame = match decoder.decode(&mut buf) {
                Ok(Decoded::Reply(reply)) => reply,
                Ok(Decoded::Partial { need: more }) => {
                    need = more;
                    break;
                }
                Err(e) => {
                    broken = Some(format!("undecodable reply from Redis: {e}"));
                    break;
                }
            };
            need = 0;
            // The writer announces a request before writing it, so its
            // entry is here by the time a reply to it can arrive.
            while let Ok(next) = written.try_recv() {
                waiting.push_back(next);
            }
            let Some(front) = waiting.front() else {
                broken = Some("a reply from Redis that nothing asked for".into());
                break;
            };
            if frames.is_empty() {
                frames.reserve_exact(front.replies);
            }
            read_only |= is_read_only(&frame);
            frames.push(frame);
            if frames.len() == front.replies {
                if let Some(done) = waiting.pop_front() {
                    let _ = done
                        .answer
                        .send(Heard::Answer(Ok(std::mem::take(&mut frames))));
                }
                if read_only {
                    // This server became a replica (a failover): the next
                    // connection, made afresh, reaches the new primary
                    // where a DNS name or a virtual address now leads.
                    broken = Some("Redis answered READONLY: it is a replica now".into());
                    break;
                }
            }
        }
        if let Some(reason) = broken {
            break reason;
        }
    };
    written.close();
    if waiting.is_empty() && written.is_empty() && failure == LET_GO {
        return; // an idle connection let go, not a failure
    }
    tracing::warn!(reason = %failure, "Redis connection lost; reconnecting on next use");
    // `recv` until `None`: `try_recv` could miss an announcement under way,
    // whose request would then go unanswered.
    while let Some(next) = written.recv().await {
        waiting.push_back(next);
    }
    for request in waiting {
        let _ = request
            .answer
            .send(Heard::Answer(Err(StorageError::Unavailable(
                failure.clone(),
            ))));
    }
}

/// Reads the replies of a pipeline in order, as the types the store
/// expects; a missing reply or one of another type is `Corrupt`.
pub(super) struct Frames(std::vec::IntoIter<Reply>);

impl Frames {
    pub fn new(replies: Vec<Reply>) -> Self {
        Self(replies.into_iter())
    }

    /// The next reply as it is; an error reply is `Unavailable` with the
    /// server's message (the store never sends a command that should fail).
    pub fn next(&mut self) -> Result<Reply, StorageError> {
        match self.0.next() {
            Some(Reply {
                bytes,
                frame: Frame::Error(e),
            }) => Err(answered(&bytes[e])),
            Some(reply) => Ok(reply),
            None => Err(StorageError::Corrupt("short pipeline reply".into())),
        }
    }

    /// A bulk string or nil.
    pub fn bulk(&mut self) -> Result<Option<Bytes>, StorageError> {
        let reply = self.next()?;
        match reply.frame {
            Frame::Bulk(s) | Frame::Simple(s) => Ok(Some(reply.bytes.slice(s))),
            Frame::Null => Ok(None),
            other => Err(unexpected("a string", &other)),
        }
    }

    /// An integer reply.
    pub fn int(&mut self) -> Result<i64, StorageError> {
        match self.next()?.frame {
            Frame::Integer(i) => Ok(i),
            other => Err(unexpected("an integer", &other)),
        }
    }

    /// An array of bulk strings (nil: empty).
    pub fn bulks(&mut self) -> Result<Vec<Bytes>, StorageError> {
        let reply = self.next()?;
        match reply.frame {
            Frame::Array(items) => items
                .into_iter()
                .map(|item| bulk_of(&reply.bytes, item))
                .collect(),
            Frame::Null => Ok(Vec::new()),
            other => Err(unexpected("an array", &other)),
        }
    }

    /// An array of strings, read in place: for replies parsed into other
    /// values, which need no `Bytes` of their own (nil: empty).
    pub fn strings(&mut self) -> Result<Strings, StorageError> {
        let reply = self.next()?;
        let spans = match reply.frame {
            Frame::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Frame::Bulk(s) | Frame::Simple(s) => Ok(s),
                    other => Err(unexpected("a string", &other)),
                })
                .collect::<Result<_, _>>()?,
            Frame::Null => Vec::new(),
            other => return Err(unexpected("an array", &other)),
        };
        Ok(Strings {
            bytes: reply.bytes,
            spans,
        })
    }

    /// An array of bulk strings and nils (`HMGET`).
    pub fn bulks_or_nil(&mut self) -> Result<Vec<Option<Bytes>>, StorageError> {
        let reply = self.next()?;
        match reply.frame {
            Frame::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Frame::Null => Ok(None),
                    other => bulk_of(&reply.bytes, other).map(Some),
                })
                .collect(),
            other => Err(unexpected("an array", &other)),
        }
    }

    /// An array of field/value pairs (`HGETALL`, `WITHSCORES`).
    pub fn pairs(&mut self) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        let flat = self.bulks()?;
        if flat.len() % 2 != 0 {
            return Err(StorageError::Corrupt(
                "a field without its value in a reply".into(),
            ));
        }
        let mut pairs = Vec::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let (Some(field), Some(value)) = (items.next(), items.next()) {
            pairs.push((field, value));
        }
        Ok(pairs)
    }
}

/// The strings of an array reply, read in place.
pub(super) struct Strings {
    bytes: Bytes,
    spans: Vec<resp::Span>,
}

impl Strings {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Strings as a reply would hold them, for tests of their readers.
    #[cfg(test)]
    pub fn of(items: &[&str]) -> Self {
        let mut bytes = Vec::new();
        let mut spans = Vec::new();
        for item in items {
            spans.push(bytes.len()..bytes.len() + item.len());
            bytes.extend_from_slice(item.as_bytes());
        }
        Self {
            bytes: Bytes::from(bytes),
            spans,
        }
    }

    /// The `i`-th string's bytes (empty past the end).
    pub fn get(&self, i: usize) -> &[u8] {
        self.spans
            .get(i)
            .and_then(|s| self.bytes.get(s.clone()))
            .unwrap_or_default()
    }

    /// The `i`-th string as `Bytes` of its own, for a value kept.
    pub fn slice(&self, i: usize) -> Bytes {
        self.spans
            .get(i)
            .map(|s| self.bytes.slice(s.clone()))
            .unwrap_or_default()
    }

    /// Field/value pairs (`HGETALL`), by index of the field: `(i, field,
    /// value)`, the value at `i + 1`.
    pub fn pairs(&self) -> Result<impl Iterator<Item = (usize, &[u8], &[u8])>, StorageError> {
        if !self.len().is_multiple_of(2) {
            return Err(StorageError::Corrupt(
                "a field without its value in a reply".into(),
            ));
        }
        Ok((0..self.len())
            .step_by(2)
            .map(|i| (i, self.get(i), self.get(i + 1))))
    }
}

fn bulk_of(bytes: &Bytes, frame: Frame) -> Result<Bytes, StorageError> {
    match frame {
        Frame::Bulk(s) | Frame::Simple(s) => Ok(bytes.slice(s)),
        other => Err(unexpected("a string", &other)),
    }
}

fn unexpected(wanted: &str, got: &Frame) -> StorageError {
    StorageError::Corrupt(format!("expected {wanted} in a reply, got {}", got.kind()))
}

/// An error reply as the store's error (the store never sends a command
/// that should fail).
fn answered(error: &[u8]) -> StorageError {
    StorageError::Unavailable(format!(
        "Redis answered: {}",
        String::from_utf8_lossy(error)
    ))
}

/// A Lua script with its source, to load it again when Redis lost it.
pub(super) struct LuaScript {
    sha: String,
    source: String,
}

impl LuaScript {
    pub fn new(source: String) -> Self {
        Self {
            sha: redis::Script::new(&source).get_hash().to_string(),
            source,
        }
    }

    /// Opens a call of the script in `pipe` (by SHA; `key` and `arg` fill
    /// it in).
    pub fn call<'p>(&self, pipe: &'p mut Pipeline) -> &'p mut Pipeline {
        pipe.script(&self.sha)
    }

    /// Opens a call of the script in `pipe` by its source (`EVAL`): for
    /// a pipeline that a NOSCRIPT refusal must not split in two (the
    /// commands after a refused call would run before it is sent again).
    pub fn call_by_source<'p>(&self, pipe: &'p mut Pipeline) -> &'p mut Pipeline {
        pipe.eval(&self.source)
    }
}

fn is_noscript(reply: &Reply) -> bool {
    matches!(&reply.frame, Frame::Error(e) if reply.bytes[e.clone()].starts_with(b"NOSCRIPT"))
}

/// A write refused because the server is a replica: `READONLY ...`, or
/// on Redis 6 a script's `ERR Error running script ... -READONLY ...`. In
/// a transaction the command is refused as it is queued, so top-level
/// replies are enough.
fn is_read_only(reply: &Reply) -> bool {
    matches!(&reply.frame, Frame::Error(e)
        if reply.bytes[e.clone()].windows(8).any(|w| w == b"READONLY"))
}

fn parse_as<T: FromRedisValue>(value: redis::Value) -> Result<T, StorageError> {
    redis::from_redis_value(value).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// Replies as redis-rs values; the first error reply fails them all, as a
/// redis-rs pipeline does.
fn values(replies: Vec<Reply>) -> Result<Vec<redis::Value>, StorageError> {
    replies
        .into_iter()
        .map(|reply| to_value(&reply.bytes, reply.frame))
        .collect()
}

fn to_value(bytes: &Bytes, frame: Frame) -> Result<redis::Value, StorageError> {
    Ok(match frame {
        Frame::Simple(s) => match std::str::from_utf8(&bytes[s.clone()]) {
            Ok("OK") => redis::Value::Okay,
            Ok(text) => redis::Value::SimpleString(text.to_string()),
            Err(_) => redis::Value::BulkString(bytes[s].to_vec()),
        },
        Frame::Bulk(s) => redis::Value::BulkString(bytes[s].to_vec()),
        Frame::Integer(i) => redis::Value::Int(i),
        Frame::Array(items) => redis::Value::Array(
            items
                .into_iter()
                .map(|item| to_value(bytes, item))
                .collect::<Result<_, _>>()?,
        ),
        Frame::Null => redis::Value::Nil,
        Frame::Error(e) => return Err(answered(&bytes[e])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn a_tracking_redirect_must_bear_the_listeners_name() {
        use std::sync::atomic::AtomicUsize;
        let strays = Arc::new(AtomicUsize::new(0));
        let counted = strays.clone();
        let tracking = Tracking {
            redirect: Arc::new(AtomicI64::new(7)),
            listener_name: "journey-invalidations-1-ab".into(),
            on_close: Arc::new(|| {}),
            on_stray: Arc::new(move |redirect| {
                assert_eq!(redirect, 7);
                counted.fetch_add(1, Ordering::Relaxed);
            }),
        };
        let listed = |line: &str| {
            let bytes = Bytes::from(line.to_string());
            Reply {
                frame: Frame::Bulk(0..bytes.len()),
                bytes,
            }
        };
        let ours = listed("id=7 addr=127.0.0.1:5 name=journey-invalidations-1-ab age=0 sub=1\n");
        assert!(tracking.check_redirect(7, Some(&ours)).is_ok());
        for stranger in [
            listed("id=7 addr=127.0.0.1:5 name= age=0 sub=0\n"),
            listed("id=7 name=journey-invalidations-1-abc sub=1\n"),
            listed(""),
        ] {
            assert!(tracking.check_redirect(7, Some(&stranger)).is_err());
        }
        assert!(tracking.check_redirect(7, None).is_err());
        assert_eq!(strays.load(Ordering::Relaxed), 4, "each stray is reported");
    }

    fn request(packed: &'static [u8]) -> (Request, oneshot::Receiver<Heard>) {
        let (answer, heard) = oneshot::channel();
        let request = Request {
            packed: Bytes::from_static(packed),
            replies: 1,
            answer,
        };
        (request, heard)
    }

    /// A request the writer never took is told it was not sent (so `send`
    /// may try it again on a new connection): here the reader is gone
    /// before the writer starts.
    #[tokio::test]
    async fn a_request_left_in_the_queue_is_told_not_sent() {
        let (requests, queue) = mpsc::unbounded_channel();
        let (written, reader) = mpsc::unbounded_channel::<Waiting>();
        drop(reader);
        let (ping, heard) = request(b"*1\r\n$4\r\nPING\r\n");
        requests.send(ping).map_err(|_| "queued").expect("queued");
        write_loop(tokio::io::sink(), queue, written).await;
        assert!(matches!(heard.await, Ok(Heard::NotSent)));
    }

    /// A request announced to the reader may be on the wire: it is the
    /// reader's to answer, never "not sent"; one queued behind a write that
    /// the writer abandons (the reader gave up on the connection) is.
    #[tokio::test]
    async fn only_requests_behind_an_abandoned_write_are_told_not_sent() {
        let (requests, queue) = mpsc::unbounded_channel();
        let (written, mut reader) = mpsc::unbounded_channel::<Waiting>();
        // A peer that reads nothing: the write of more than one byte waits.
        let (socket, _peer) = tokio::io::duplex(1);
        let writer = tokio::spawn(write_loop(socket, queue, written));
        let (first, first_heard) = request(b"*1\r\n$4\r\nPING\r\n");
        requests.send(first).map_err(|_| "queued").expect("queued");
        let announced = reader.recv().await.expect("the first is announced");
        assert_eq!(announced.replies, 1);
        let (second, second_heard) = request(b"*1\r\n$4\r\nPING\r\n");
        requests.send(second).map_err(|_| "queued").expect("queued");
        drop(reader);
        writer.await.expect("the writer ends");
        assert!(matches!(second_heard.await, Ok(Heard::NotSent)));
        // The first's answer is with what the reader held, not "not sent".
        drop(announced);
        assert!(first_heard.await.is_err());
    }

    fn replies(wire: &[u8]) -> Vec<Reply> {
        let mut buf = BytesMut::from(wire);
        let mut all = Vec::new();
        while let Ok(resp::Decoded::Reply(reply)) = resp::decode(&mut buf) {
            all.push(reply);
        }
        all
    }

    /// A connect that gets no answer (a listener whose backlog is full drops
    /// the handshake, as a host gone does) fails as unavailable in time:
    /// nothing was sent, so the call is safe to retry.
    #[tokio::test]
    async fn a_connect_without_answer_is_unavailable() {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        let address = socket.local_addr().expect("address");
        let _listener = socket.listen(0).expect("listen");
        // Never accepted: these fill the backlog, so the next handshake
        // waits unanswered.
        let mut held = Vec::new();
        let mut filled = false;
        for _ in 0..8 {
            match tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(address),
            )
            .await
            {
                Ok(Ok(stream)) => held.push(stream),
                _ => {
                    filled = true;
                    break;
                }
            }
        }
        assert!(filled, "the backlog never filled");
        let info = redis::IntoConnectionInfo::into_connection_info(format!("redis://{address}/0"))
            .expect("a URL");
        let conn = RedisConnection::new(&info, Duration::from_millis(200), Duration::from_secs(1))
            .expect("a TCP address");
        let err = conn
            .cmd_as::<String>(&commands::cmd("PING"))
            .await
            .expect_err("no answer");
        assert!(
            matches!(&err, StorageError::Unavailable(why) if why.contains("no answer within")),
            "{err:?}"
        );
    }

    /// A failed connect is the answer of the calls right after it: they do
    /// not each try again (and wait) in turn.
    #[tokio::test]
    async fn a_failed_connect_answers_the_calls_right_after_it() {
        // A port nothing listens on: the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let info =
            redis::IntoConnectionInfo::into_connection_info(format!("redis://127.0.0.1:{port}/0"))
                .expect("a URL");
        let conn = RedisConnection::new(&info, Duration::from_secs(1), Duration::from_secs(1))
            .expect("a TCP address");
        let ping = commands::cmd("PING");
        let first = conn.cmd_as::<String>(&ping).await.expect_err("refused");
        let failed_at = std::time::Instant::now();
        assert!(matches!(first, StorageError::Unavailable(_)), "{first:?}");

        // Now something listens there; within the back-off the failure
        // stands and nothing connects.
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("rebind");
        listener.set_nonblocking(true).expect("non-blocking");
        let second = conn.cmd_as::<String>(&ping).await.expect_err("remembered");
        assert_eq!(second.to_string(), first.to_string());
        if failed_at.elapsed() < RECONNECT_BACKOFF {
            assert!(
                listener.accept().is_err(),
                "no connection attempt within the back-off"
            );
        }
    }

    #[test]
    fn a_target_is_debugged_without_its_password() {
        let info = redis::IntoConnectionInfo::into_connection_info("redis://u:s3cret@h:6379/2")
            .expect("a URL");
        let conn = RedisConnection::new(&info, Duration::from_secs(1), Duration::from_secs(1))
            .expect("a TCP address");
        let shown = format!("{:?}", conn.target);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("\"***\""), "{shown}");
    }

    #[test]
    fn replies_become_the_values_redis_rs_parses() {
        let parsed: ((), String, i64, Option<String>, Vec<i64>) = parse_as(redis::Value::Array(
            values(replies(
                b"+OK\r\n$1\r\nv\r\n:3\r\n$-1\r\n*2\r\n:1\r\n:2\r\n",
            ))
            .expect("no error"),
        ))
        .expect("parses");
        assert_eq!(parsed.1, "v");
        assert_eq!(parsed.2, 3);
        assert_eq!(parsed.3, None);
        assert_eq!(parsed.4, vec![1, 2]);
    }

    #[test]
    fn read_only_refusals_are_told_apart() {
        let all = replies(
            b"-READONLY You can't write against a read only replica.\r\n\
              -ERR Error running script (call to f_0): @user_script:1: -READONLY You can't write\r\n\
              -ERR unknown command\r\n+READONLY\r\n",
        );
        let told: Vec<bool> = all.iter().map(is_read_only).collect();
        assert_eq!(told, [true, true, false, false]);
    }

    #[test]
    fn an_error_reply_fails_the_pipeline_and_noscript_is_told_apart() {
        let all =
            replies(b"-NOSCRIPT No matching script\r\n-WRONGTYPE x\r\n*2\r\n:1\r\n-NOSCRIPT y\r\n");
        assert!(is_noscript(&all[0]));
        assert!(!is_noscript(&all[1]));
        assert!(matches!(
            values(vec![all[2].clone()]),
            Err(StorageError::Unavailable(_))
        ));
    }

    #[test]
    fn frames_read_the_types_the_store_expects() {
        let mut frames = Frames::new(replies(
            b"$-1\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n:7\r\n*4\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\ng\r\n$1\r\nw\r\n*2\r\n$-1\r\n$1\r\nz\r\n:1\r\n",
        ));
        assert_eq!(frames.bulk().expect("nil"), None);
        assert_eq!(
            frames.bulks().expect("bulks"),
            vec![Bytes::from("a"), Bytes::from("bc")]
        );
        assert_eq!(frames.int().expect("int"), 7);
        let pairs = frames.pairs().expect("pairs");
        assert_eq!(pairs[1], (Bytes::from("g"), Bytes::from("w")));
        assert_eq!(
            frames.bulks_or_nil().expect("hmget"),
            vec![None, Some(Bytes::from("z"))]
        );
        assert!(
            matches!(frames.bulk(), Err(StorageError::Corrupt(_))),
            "an integer is not a string"
        );
        assert!(
            matches!(frames.int(), Err(StorageError::Corrupt(_))),
            "nothing left"
        );
    }
}
