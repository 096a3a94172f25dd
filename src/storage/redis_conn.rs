//! A lean, multiplexed connection to Redis for the hot paths (context,
//! page, contact check, append): pipelines go out as packed bytes, replies
//! come back as `redis-protocol` frames whose bulk strings are zero-copy
//! slices of the read buffer, so an event read from Redis reaches the gRPC
//! response without being copied or parsed into owned values on the way.
//!
//! Why not redis-rs for these paths: a profile of GetJourneyContext (50
//! events of ~300 B, BENCHMARKS.md) put a third of the service's CPU in
//! redis-rs's reply parser (`combine`), its `Value` tree (one `Vec<u8>` per
//! member) and the conversions out of it, plus much of the malloc/free.
//! fred, whose frames are zero-copy too, saved only ~12 % of client CPU in
//! the same measurement (`examples/redis_clients.rs`): its command routing
//! costs what the frames save. Commands are still built with redis-rs's
//! `Pipeline` (its packing is cheap), and the store's other paths keep
//! redis-rs's `ConnectionManager`.
//!
//! One writer task batches every request waiting into one `write`; one
//! reader task decodes replies and hands each request its frames, in the
//! order the requests were written (Redis answers a connection in order).
//! A broken connection fails what is in flight with `Unavailable` and is
//! replaced on the next request.

use std::{collections::VecDeque, time::Duration};

use bytes::{Bytes, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo};
use redis_protocol::resp2::{
    decode::decode_bytes_mut,
    types::{BytesFrame, Resp2Frame},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpStream,
    },
    sync::{mpsc, oneshot, Mutex},
};

use super::StorageError;

/// Most bytes the writer gathers into one write.
const MAX_WRITE_BATCH: usize = 256 * 1024;
/// Room the reader keeps free in its buffer before a read: one read takes
/// a whole 50-event context (~17 KB) and more.
const READ_CHUNK: usize = 64 * 1024;

type Reply = Result<Vec<BytesFrame>, StorageError>;

/// A request on its way: its packed commands and how many replies it waits for.
struct Request {
    packed: Bytes,
    replies: usize,
    answer: oneshot::Sender<Reply>,
}

/// A request written, waiting for its replies.
struct Waiting {
    replies: usize,
    answer: oneshot::Sender<Reply>,
}

/// Where to connect and what to send first.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

/// A shared connection: clone the store, not this; calls from many tasks
/// are pipelined on one socket.
pub(super) struct LeanConnection {
    target: Target,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// The live connection's request queue; `None` or closed: connect anew.
    /// A tokio mutex, because connecting (an await) happens under it, so
    /// concurrent callers wait for one connection instead of making many.
    current: Mutex<Option<mpsc::UnboundedSender<Request>>>,
}

impl LeanConnection {
    /// A connection to the Redis `info` names; it connects on first use.
    /// Only TCP addresses are supported (the service's URLs are
    /// `redis://host:port/db`).
    pub fn new(
        info: &ConnectionInfo,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, StorageError> {
        let (host, port) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            other => {
                return Err(StorageError::Unavailable(format!(
                    "unsupported Redis address {other}: use redis://host:port/db"
                )))
            }
        };
        let settings = info.redis_settings();
        Ok(Self {
            target: Target {
                host,
                port,
                username: settings.username().map(str::to_string),
                password: settings.password().map(str::to_string),
                db: settings.db(),
            },
            connect_timeout,
            response_timeout,
            current: Mutex::new(None),
        })
    }

    /// Sends a pipeline and answers one frame per command (for a
    /// transaction: the frames of the `EXEC` reply). An error reply of a
    /// command stays in its place as `BytesFrame::Error`.
    pub async fn query(&self, pipe: &redis::Pipeline) -> Result<Vec<BytesFrame>, StorageError> {
        let packed = Bytes::from(pipe.get_packed_pipeline());
        if pipe.is_transaction() {
            // MULTI, one QUEUED per command, then EXEC with the replies.
            let mut frames = self.send(packed, pipe.len() + 2).await?;
            match frames.pop() {
                Some(BytesFrame::Array(replies)) => Ok(replies),
                Some(BytesFrame::Error(e)) => Err(StorageError::Unavailable(format!(
                    "transaction failed: {e}"
                ))),
                _ => Err(StorageError::Unavailable("transaction aborted".into())),
            }
        } else {
            self.send(packed, pipe.len()).await
        }
    }

    /// Sends packed commands and answers their `replies` frames.
    async fn send(&self, packed: Bytes, replies: usize) -> Reply {
        if replies == 0 {
            return Ok(Vec::new());
        }
        let (tx, rx) = oneshot::channel();
        let mut request = Request {
            packed,
            replies,
            answer: tx,
        };
        // A queue closed since it was handed out (the connection broke)
        // gives the request back: the second try uses a new connection.
        for _ in 0..2 {
            let queue = self.queue().await?;
            match queue.send(request) {
                Ok(()) => return self.wait(rx).await,
                Err(mpsc::error::SendError(back)) => {
                    self.forget(&queue).await;
                    request = back;
                }
            }
        }
        Err(StorageError::Unavailable(
            "the Redis connection closed twice in a row".into(),
        ))
    }

    async fn wait(&self, rx: oneshot::Receiver<Reply>) -> Reply {
        match tokio::time::timeout(self.response_timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(StorageError::Unavailable(
                "the Redis connection closed before answering".into(),
            )),
            // The reply may still come; it then goes to a dropped receiver
            // and the next request's reply to the next request.
            Err(_) => Err(StorageError::Timeout(format!(
                "no reply from Redis within {:?}",
                self.response_timeout
            ))),
        }
    }

    /// The live connection's queue, connecting first when there is none.
    async fn queue(&self) -> Result<mpsc::UnboundedSender<Request>, StorageError> {
        let mut current = self.current.lock().await;
        if let Some(queue) = current.as_ref().filter(|q| !q.is_closed()) {
            return Ok(queue.clone());
        }
        let queue = self.connect().await?;
        *current = Some(queue.clone());
        Ok(queue)
    }

    async fn forget(&self, broken: &mpsc::UnboundedSender<Request>) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|q| q.same_channel(broken)) {
            *current = None;
        }
    }

    async fn connect(&self) -> Result<mpsc::UnboundedSender<Request>, StorageError> {
        let target = &self.target;
        let address = (target.host.as_str(), target.port);
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| StorageError::Timeout("connecting to Redis".into()))?
            .map_err(|e| StorageError::Unavailable(format!("connecting to Redis: {e}")))?;
        // Request/response traffic: Nagle's algorithm only adds latency.
        stream
            .set_nodelay(true)
            .map_err(|e| StorageError::Unavailable(format!("TCP_NODELAY: {e}")))?;
        let (read, write) = stream.into_split();
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (written, written_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(write, requests_rx, written));
        tokio::spawn(read_loop(read, written_rx));

        let mut hello = redis::pipe();
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
        if !hello.is_empty() {
            let (tx, rx) = oneshot::channel();
            let request = Request {
                packed: Bytes::from(hello.get_packed_pipeline()),
                replies: hello.len(),
                answer: tx,
            };
            requests
                .send(request)
                .map_err(|_| StorageError::Unavailable("the Redis connection closed".into()))?;
            for frame in self.wait(rx).await? {
                if let BytesFrame::Error(e) = frame {
                    return Err(StorageError::Unavailable(format!(
                        "Redis refused the connection set-up: {e}"
                    )));
                }
            }
        }
        Ok(requests)
    }
}

/// Writes requests as they come, every request waiting in one write, and
/// tells the reader about each before its bytes leave.
async fn write_loop(
    mut socket: OwnedWriteHalf,
    mut requests: mpsc::UnboundedReceiver<Request>,
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
            batch.extend_from_slice(&request.packed);
            let waiting = Waiting {
                replies: request.replies,
                answer: request.answer,
            };
            if written.send(waiting).is_err() {
                return; // the reader is gone: the connection is broken
            }
            if batch.len() < MAX_WRITE_BATCH {
                next = requests.try_recv().ok();
            }
        }
        if let Err(e) = socket.write_all(&batch).await {
            tracing::warn!(error = %e, "writing to Redis failed; reconnecting on next use");
            return;
        }
        batch.clear();
    }
}

/// Decodes replies and answers the requests in the order they were written.
async fn read_loop(mut socket: OwnedReadHalf, mut written: mpsc::UnboundedReceiver<Waiting>) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    let mut frames: Vec<BytesFrame> = Vec::new();
    let failure = loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        match socket.read_buf(&mut buf).await {
            Ok(0) => break "Redis closed the connection".to_string(),
            Ok(_) => {}
            Err(e) => break format!("reading from Redis: {e}"),
        }
        let mut broken = None;
        loop {
            match decode_bytes_mut(&mut buf) {
                Ok(Some((frame, _, _))) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    broken = Some(format!("undecodable reply from Redis: {e:?}"));
                    break;
                }
            }
            // The writer announces a request before writing it, so its
            // entry is here by the time a reply to it can arrive.
            while let Ok(next) = written.try_recv() {
                waiting.push_back(next);
            }
            if let Some(front) = waiting.front() {
                if frames.len() == front.replies {
                    if let Some(done) = waiting.pop_front() {
                        let _ = done.answer.send(Ok(std::mem::take(&mut frames)));
                    }
                }
            } else {
                broken = Some("a reply from Redis that nothing asked for".into());
                break;
            }
        }
        if let Some(reason) = broken {
            break reason;
        }
    };
    tracing::warn!(reason = %failure, "Redis connection lost; reconnecting on next use");
    written.close();
    while let Ok(next) = written.try_recv() {
        waiting.push_back(next);
    }
    for request in waiting {
        let _ = request
            .answer
            .send(Err(StorageError::Unavailable(failure.clone())));
    }
}

/// Reads the frames of a pipeline reply in order, as the types the store
/// expects; a missing frame or one of another type is `Corrupt`.
pub(super) struct Frames(std::vec::IntoIter<BytesFrame>);

impl Frames {
    pub fn new(frames: Vec<BytesFrame>) -> Self {
        Self(frames.into_iter())
    }

    /// The next reply as it is; an error reply is `Unavailable` with the
    /// server's message (the store never sends a command that should fail).
    pub fn next(&mut self) -> Result<BytesFrame, StorageError> {
        match self.0.next() {
            Some(BytesFrame::Error(e)) => {
                Err(StorageError::Unavailable(format!("Redis answered: {e}")))
            }
            Some(frame) => Ok(frame),
            None => Err(StorageError::Corrupt("short pipeline reply".into())),
        }
    }

    /// A bulk string or nil.
    pub fn bulk(&mut self) -> Result<Option<Bytes>, StorageError> {
        match self.next()? {
            BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => Ok(Some(b)),
            BytesFrame::Null => Ok(None),
            other => Err(unexpected("a string", &other)),
        }
    }

    /// An integer reply.
    pub fn int(&mut self) -> Result<i64, StorageError> {
        match self.next()? {
            BytesFrame::Integer(i) => Ok(i),
            other => Err(unexpected("an integer", &other)),
        }
    }

    /// An array of bulk strings (nil: empty).
    pub fn bulks(&mut self) -> Result<Vec<Bytes>, StorageError> {
        match self.next()? {
            BytesFrame::Array(items) => items.into_iter().map(bulk_of).collect(),
            BytesFrame::Null => Ok(Vec::new()),
            other => Err(unexpected("an array", &other)),
        }
    }

    /// An array of bulk strings and nils (`HMGET`).
    pub fn bulks_or_nil(&mut self) -> Result<Vec<Option<Bytes>>, StorageError> {
        match self.next()? {
            BytesFrame::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    BytesFrame::Null => Ok(None),
                    other => bulk_of(other).map(Some),
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

fn bulk_of(frame: BytesFrame) -> Result<Bytes, StorageError> {
    match frame {
        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => Ok(b),
        other => Err(unexpected("a string", &other)),
    }
}

fn unexpected(wanted: &str, got: &BytesFrame) -> StorageError {
    StorageError::Corrupt(format!(
        "expected {wanted} in a reply, got {:?}",
        got.kind()
    ))
}
