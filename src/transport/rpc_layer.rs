//! The tower layer around every service of the server: it bounds the
//! calls under way on each client connection (`--max-in-flight`) and in the
//! whole server (`--max-in-flight-total`), and counts and times every call
//! for `metrics.rs`, refusals included. The per-connection bound is here
//! rather than tonic's `concurrency_limit_per_connection`, whose refusals
//! were answered outside this layer and so were never counted. A
//! call's status is in its response headers when it failed before sending
//! anything (a trailers-only response), else in the trailers that end the
//! response body: so the body is wrapped, and the call is recorded when its
//! trailers pass, at the end of the response (a streaming call's whole
//! life), or as Canceled when the response or its body is dropped first.
//! Without metrics the layer only bounds the calls.

use std::{
    collections::{hash_map::Entry, HashMap},
    future::Future,
    marker::PhantomData,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::{codegen::http, transport::server::TcpConnectInfo};

use super::{
    metrics::{Metrics, Rpcs},
    status::{connection_overloaded, overloaded},
};

/// Bounds the calls under way in the whole server and, with metrics,
/// counts and times every call of the service it wraps.
#[derive(Clone)]
pub struct RpcLayer {
    rpcs: Option<Arc<Rpcs>>,
    /// Calls under way, health checks aside.
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    /// Calls under way per client connection, by the peer's address. An
    /// entry lives while its connection has a call under way, so there are
    /// never more entries than calls under way.
    per_connection: ConnectionCounts,
    max_per_connection: usize,
}

/// Calls under way per client connection, by the peer's address. Hashed
/// with foldhash (seeded per process) rather than SipHash, which took most
/// of the map's ~1,000 instructions a call; the map never holds more
/// entries than calls under way.
type ConnectionCounts = Arc<Mutex<ConnectionMap>>;
type ConnectionMap = HashMap<SocketAddr, usize, foldhash::fast::RandomState>;

/// Why a call got no slot.
enum Refusal {
    Connection(usize),
    Server(usize),
}

impl RpcLayer {
    /// At most `max_in_flight` calls under way at once (health checks
    /// aside), recorded in `metrics` when given; no bound per connection
    /// until `per_connection` sets one.
    pub fn new(metrics: Option<&Metrics>, max_in_flight: usize) -> Self {
        Self {
            rpcs: metrics.map(Metrics::rpcs),
            in_flight: Arc::default(),
            max_in_flight,
            per_connection: Arc::default(),
            max_per_connection: usize::MAX,
        }
    }

    /// At most `max` calls under way on one client connection (health
    /// checks aside). A call whose request does not say its connection
    /// (no `TcpConnectInfo`) is bounded by the server's maximum only.
    pub fn per_connection(mut self, max: usize) -> Self {
        self.max_per_connection = max;
        self
    }

    /// A slot for one more call, if fewer than the maximums are under way
    /// on its connection and in the server. The server's count is a
    /// counter, not a semaphore: nobody waits for a slot, and releasing a
    /// tokio semaphore's permit takes a lock (~300 instructions a call
    /// under callgrind, against two atomic adds). The connections' counts
    /// share one map under a lock held for a lookup; it is taken only
    /// when a bound per connection is set.
    fn take_slot(&self, peer: Option<SocketAddr>) -> Result<Slot, Refusal> {
        let mut slot = Slot {
            server: None,
            connection: None,
        };
        if let Some(peer) = peer.filter(|_| self.max_per_connection < usize::MAX) {
            let mut counts = self.lock_connections();
            let count = counts.entry(peer).or_insert(0);
            if *count >= self.max_per_connection {
                return Err(Refusal::Connection(self.max_per_connection));
            }
            *count += 1;
            slot.connection = Some((self.per_connection.clone(), peer));
        }
        let max = self.max_in_flight;
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            // The connection's place, if taken, goes back with `slot`.
            .map_err(|_| Refusal::Server(max))?;
        slot.server = Some(self.in_flight.clone());
        Ok(slot)
    }

    fn lock_connections(&self) -> MutexGuard<'_, ConnectionMap> {
        lock(&self.per_connection)
    }
}

fn lock(counts: &ConnectionCounts) -> MutexGuard<'_, ConnectionMap> {
    // A count is changed in one statement: a panic elsewhere cannot leave
    // it half-updated, so a poisoned map is still right.
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One call's place among those under way, in the server and on its
/// connection; given back on drop.
struct Slot {
    server: Option<Arc<AtomicUsize>>,
    connection: Option<(ConnectionCounts, SocketAddr)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some((counts, peer)) = &self.connection {
            let mut counts = lock(counts);
            if let Entry::Occupied(mut entry) = counts.entry(*peer) {
                *entry.get_mut() -= 1;
                if *entry.get() == 0 {
                    entry.remove();
                }
            }
        }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    layer: RpcLayer,
}

/// Whether a call takes one of the server's slots. Health checks do not:
/// an overloaded server that failed its probes would be taken out of
/// service (or restarted) just when it is busiest.
fn takes_a_slot(path: &str) -> bool {
    !path.starts_with("/grpc.health.v1.Health/")
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Error: Into<tower::BoxError>,
{
    type Response = http::Response<RecordedBody<R>>;
    type Error = tower::BoxError;
    type Future = Recorded<S::Future, R, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let pending = self.layer.rpcs.as_ref().map(|rpcs| Pending {
            index: rpcs.index(path),
            rpcs: rpcs.clone(),
            started: Instant::now(),
        });
        let slot = if takes_a_slot(path) {
            let peer = request
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr);
            match self.layer.take_slot(peer) {
                Ok(slot) => Some(slot),
                Err(refusal) => {
                    if let Some(pending) = pending {
                        pending.refused();
                    }
                    return Recorded {
                        inner: None,
                        pending: None,
                        slot: None,
                        refused: Some(refusal),
                        _output: PhantomData,
                    };
                }
            }
        } else {
            None
        };
        Recorded {
            inner: Some(self.inner.call(request)),
            pending,
            slot,
            refused: None,
            _output: PhantomData,
        }
    }
}

/// A call not recorded yet.
struct Pending {
    rpcs: Arc<Rpcs>,
    index: usize,
    started: Instant,
}

impl Pending {
    fn record(self, code: tonic::Code) {
        self.rpcs.record(self.index, code, Some(self.started));
    }

    /// Counts a call refused before it was handled (and not timed).
    fn refused(self) {
        self.rpcs
            .record(self.index, tonic::Code::ResourceExhausted, None);
    }
}

/// The code of `grpc-status` in `headers`, if it is there.
fn status_in(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?;
    let code = value.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from(code))
}

/// Records the call as Canceled if it is still pending: the future or the
/// body was dropped before the call's status passed.
fn cancel(pending: &mut Option<Pending>) {
    if let Some(pending) = pending.take() {
        pending.record(tonic::Code::Cancelled);
    }
}

pin_project! {
    /// The wrapped service's future (none for a call refused for want of
    /// a slot): a failure answered in the headers is recorded at once, any
    /// other response goes on in a `RecordedBody`, with the call's slot: a
    /// unary reply is encoded and sent as its body is read, so the slot
    /// bounds what calls hold until then.
    pub struct Recorded<F, R, E> {
        #[pin]
        inner: Option<F>,
        pending: Option<Pending>,
        slot: Option<Slot>,
        refused: Option<Refusal>,
        _output: PhantomData<fn() -> (R, E)>,
    }

    impl<F, R, E> PinnedDrop for Recorded<F, R, E> {
        fn drop(this: Pin<&mut Self>) {
            cancel(this.project().pending);
        }
    }
}

impl<F, R, E> Future for Recorded<F, R, E>
where
    F: Future<Output = Result<http::Response<R>, E>>,
    E: Into<tower::BoxError>,
{
    type Output = Result<http::Response<RecordedBody<R>>, tower::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            let status = match this.refused {
                Some(Refusal::Connection(max)) => connection_overloaded(*max),
                Some(Refusal::Server(max)) => overloaded(*max),
                None => tonic::Status::internal("a call polled after its refusal was answered"),
            };
            return Poll::Ready(Err(Box::new(status)));
        };
        let output = std::task::ready!(inner.poll(cx));
        let slot = this.slot.take();
        let mut pending = this.pending.take();
        Poll::Ready(match output {
            Ok(response) => {
                // Without metrics nothing is pending: the headers are not
                // read (~130 instructions a call).
                if let Some(code) = pending.as_ref().and_then(|_| status_in(response.headers())) {
                    if let Some(pending) = pending.take() {
                        pending.record(code);
                    }
                }
                Ok(response.map(|inner| RecordedBody {
                    inner,
                    pending,
                    slot,
                }))
            }
            Err(error) => {
                let error = error.into();
                if let Some(pending) = pending {
                    // tonic answers an error of the stack with the status
                    // it carries, else UNKNOWN.
                    let code = error
                        .downcast_ref::<tonic::Status>()
                        .map_or(tonic::Code::Unknown, tonic::Status::code);
                    pending.record(code);
                }
                Err(error)
            }
        })
    }
}

pin_project! {
    /// A response body that records its call when the trailers pass, and
    /// gives its slot back at its end.
    pub struct RecordedBody<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
        slot: Option<Slot>,
    }

    impl<B> PinnedDrop for RecordedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            cancel(this.project().pending);
        }
    }
}

impl<B: Body> Body for RecordedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = std::task::ready!(this.inner.poll_frame(cx));
        let ended = match &polled {
            Some(Ok(frame)) => frame.is_trailers(),
            Some(Err(_)) | None => true,
        };
        if ended {
            this.slot.take();
        }
        if this.pending.is_some() {
            let code = match &polled {
                Some(Ok(frame)) => frame
                    .trailers_ref()
                    .map(|trailers| status_in(trailers).unwrap_or(tonic::Code::Unknown)),
                // A body that fails is reset: the client sees no status.
                Some(Err(_)) => Some(tonic::Code::Unknown),
                // Ended with no trailers: not a gRPC answer.
                None => Some(tonic::Code::Unknown),
            };
            if let Some(code) = code {
                if let Some(pending) = this.pending.take() {
                    pending.record(code);
                }
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        convert::Infallible,
        future::{pending, ready},
    };

    use bytes::Bytes;
    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::{
        storage::{MemoryStore, Retention},
        transport::metrics::Metrics,
    };

    /// A body of the given frames.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn trailers(code: &str) -> Frame<Bytes> {
        let mut map = http::HeaderMap::new();
        map.insert("grpc-status", code.parse().expect("value"));
        Frame::trailers(map)
    }

    fn metrics() -> Metrics {
        let rules = crate::domain::MergeRules {
            unique_types: Default::default(),
            max_identities: 100,
        };
        let store = MemoryStore::new(Retention::default(), rules, 1_000);
        Metrics::new(
            &[crate::pb::FILE_DESCRIPTOR_SET],
            Arc::default(),
            Arc::new(store),
        )
    }

    fn request(method: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(format!("/journey.v1.JourneyService/{method}"))
            .body(())
            .expect("request")
    }

    /// The count of `method` ending with `code`, 0 when not there.
    fn handled(metrics: &Metrics, method: &str, code: &str) -> u64 {
        let text = metrics.render().expect("render");
        text.lines()
            .find(|line| {
                line.starts_with("grpc_server_handled_total{")
                    && line.contains(&format!("grpc_method=\"{method}\""))
                    && line.contains(&format!("grpc_code=\"{code}\""))
            })
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Reads the body to its end; answers how many frames it had.
    async fn drain<B: Body + Unpin>(mut body: B) -> usize {
        use std::future::poll_fn;
        let mut frames = 0;
        while poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .is_some()
        {
            frames += 1;
        }
        frames
    }

    #[tokio::test]
    async fn a_failure_in_the_headers_is_counted_with_its_code() {
        let metrics = metrics();
        let mut service = RpcLayer::new(Some(&metrics), 16).layer(tower::service_fn(|_| {
            let response = http::Response::builder()
                .header("grpc-status", "5")
                .body(Frames(VecDeque::new()))
                .expect("response");
            ready(Ok::<_, Infallible>(response))
        }));
        let call = service.ready().await.expect("ready");
        let response = call
            .call(request("GetJourneyContext"))
            .await
            .expect("answer");
        assert_eq!(handled(&metrics, "GetJourneyContext", "NotFound"), 1);
        drop(response);
        assert_eq!(
            handled(&metrics, "GetJourneyContext", "Canceled"),
            0,
            "recorded once"
        );
    }

    #[tokio::test]
    async fn a_status_in_the_trailers_is_counted_when_they_pass() {
        let metrics = metrics();
        let mut service = RpcLayer::new(Some(&metrics), 16).layer(tower::service_fn(|_| {
            let frames = VecDeque::from([Frame::data(Bytes::from_static(b"x")), trailers("13")]);
            ready(Ok::<_, Infallible>(http::Response::new(Frames(frames))))
        }));
        let call = service.ready().await.expect("ready");
        let response = call.call(request("ListEvents")).await.expect("answer");
        assert_eq!(
            handled(&metrics, "ListEvents", "Internal"),
            0,
            "not before the trailers"
        );
        drain(response.into_body()).await;
        assert_eq!(handled(&metrics, "ListEvents", "Internal"), 1);
        assert_eq!(handled(&metrics, "ListEvents", "OK"), 0);
    }

    #[tokio::test]
    async fn a_call_dropped_before_its_status_counts_as_canceled() {
        let metrics = metrics();
        let mut service = RpcLayer::new(Some(&metrics), 16).layer(tower::service_fn(|_| {
            pending::<Result<http::Response<Frames>, Infallible>>()
        }));
        let call = service.ready().await.expect("ready");
        drop(call.call(request("AppendEvent")));
        assert_eq!(handled(&metrics, "AppendEvent", "Canceled"), 1);

        // A body dropped before its trailers (a stream the client left).
        let mut service = RpcLayer::new(Some(&metrics), 16).layer(tower::service_fn(|_| {
            let frames = VecDeque::from([Frame::data(Bytes::from_static(b"x")), trailers("0")]);
            ready(Ok::<_, Infallible>(http::Response::new(Frames(frames))))
        }));
        let call = service.ready().await.expect("ready");
        let response = call.call(request("ListJourneys")).await.expect("answer");
        drop(response);
        assert_eq!(handled(&metrics, "ListJourneys", "Canceled"), 1);
        assert_eq!(handled(&metrics, "ListJourneys", "OK"), 0);
    }

    #[tokio::test]
    async fn a_refusal_of_the_layers_below_is_counted_with_its_code() {
        let metrics = metrics();
        let mut service = RpcLayer::new(Some(&metrics), 16).layer(tower::service_fn(|_| {
            let refusal: tower::BoxError = Box::new(tonic::Status::resource_exhausted("full"));
            ready(Err::<http::Response<Frames>, _>(refusal))
        }));
        let call = service.ready().await.expect("ready");
        let refused = call.call(request("CheckContactFrequency")).await;
        assert!(refused.is_err());
        assert_eq!(
            handled(&metrics, "CheckContactFrequency", "ResourceExhausted"),
            1
        );
    }

    fn on_connection(method: &str, peer: &str) -> http::Request<()> {
        let mut request = request(method);
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer.parse().expect("an address")),
        });
        request
    }

    #[tokio::test]
    async fn calls_beyond_a_connections_slots_are_refused_and_its_places_given_back() {
        let metrics = metrics();
        let layer = RpcLayer::new(Some(&metrics), 16).per_connection(2);
        let mut service = layer.clone().layer(tower::service_fn(|_| {
            pending::<Result<http::Response<Frames>, Infallible>>()
        }));
        let (a, b) = ("127.0.0.1:40001", "127.0.0.1:40002");
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(
                service
                    .ready()
                    .await
                    .expect("ready")
                    .call(on_connection("ListEvents", a)),
            );
        }
        let refused = service
            .ready()
            .await
            .expect("ready")
            .call(on_connection("ListEvents", a))
            .await
            .err()
            .expect("the connection's places are taken");
        let status = refused.downcast_ref::<tonic::Status>().expect("a status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("(--max-in-flight)"), "{status:?}");
        assert_eq!(handled(&metrics, "ListEvents", "ResourceExhausted"), 1);
        // Another connection, and a health check on the busy one, go on.
        held.push(
            service
                .ready()
                .await
                .expect("ready")
                .call(on_connection("ListEvents", b)),
        );
        let health = on_connection("x", a);
        let (mut parts, body) = health.into_parts();
        parts.uri = "/grpc.health.v1.Health/Check".parse().expect("uri");
        held.push(
            service
                .ready()
                .await
                .expect("ready")
                .call(http::Request::from_parts(parts, body)),
        );
        assert_eq!(
            layer.lock_connections().get(&a.parse().expect("a")),
            Some(&2)
        );
        assert_eq!(layer.in_flight.load(Ordering::Acquire), 3);
        // Calls ended (here: dropped) give their places back, and a
        // connection with none under way leaves the map.
        drop(held);
        assert!(layer.lock_connections().is_empty());
        assert_eq!(layer.in_flight.load(Ordering::Acquire), 0);
        let again = service
            .ready()
            .await
            .expect("ready")
            .call(on_connection("ListEvents", a));
        assert_eq!(
            layer.lock_connections().get(&a.parse().expect("a")),
            Some(&1)
        );
        drop(again);
    }

    #[tokio::test]
    async fn a_call_refused_by_the_server_gives_its_connection_place_back() {
        let layer = RpcLayer::new(None, 1).per_connection(4);
        let mut service = layer.clone().layer(tower::service_fn(|_| {
            pending::<Result<http::Response<Frames>, Infallible>>()
        }));
        let held = service
            .ready()
            .await
            .expect("ready")
            .call(on_connection("ListEvents", "127.0.0.1:40001"));
        let refused = service
            .ready()
            .await
            .expect("ready")
            .call(on_connection("ListEvents", "127.0.0.1:40001"))
            .await
            .err()
            .expect("the server's only place is taken");
        let status = refused.downcast_ref::<tonic::Status>().expect("a status");
        assert!(
            status.message().contains("--max-in-flight-total"),
            "{status:?}"
        );
        let peer = "127.0.0.1:40001".parse().expect("peer");
        assert_eq!(layer.lock_connections().get(&peer), Some(&1));
        drop(held);
        assert!(layer.lock_connections().is_empty());
    }

    #[tokio::test]
    async fn calls_beyond_the_slots_are_refused_and_health_checks_are_not() {
        let metrics = metrics();
        let mut service = RpcLayer::new(Some(&metrics), 1).layer(tower::service_fn(|_| {
            pending::<Result<http::Response<Frames>, Infallible>>()
        }));
        let under_way = service
            .ready()
            .await
            .expect("ready")
            .call(request("ListEvents"));
        let refused = service
            .ready()
            .await
            .expect("ready")
            .call(request("ListEvents"))
            .await
            .err()
            .expect("no slot left");
        let status = refused.downcast_ref::<tonic::Status>().expect("a status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("--max-in-flight-total"));
        assert_eq!(handled(&metrics, "ListEvents", "ResourceExhausted"), 1);
        assert!(
            !metrics
                .render()
                .expect("render")
                .contains("grpc_server_handling_seconds_count{grpc_service=\"journey.v1.JourneyService\",grpc_method=\"ListEvents\",grpc_type=\"unary\"} 1"),
            "a refusal is not timed"
        );
        assert_eq!(
            handled(&metrics, "ListEvents", "Canceled"),
            0,
            "nor counted again when dropped"
        );
        let health = http::Request::builder()
            .uri("/grpc.health.v1.Health/Check")
            .body(())
            .expect("request");
        let mut check = service.ready().await.expect("ready").call(health);
        let waker = std::task::Waker::noop();
        assert!(
            Pin::new(&mut check)
                .poll(&mut Context::from_waker(waker))
                .is_pending(),
            "a health check takes no slot: it reached the service"
        );
        drop(under_way);
        let again = service
            .ready()
            .await
            .expect("ready")
            .call(request("ListEvents"));
        let mut again = Box::pin(again);
        assert!(
            again
                .as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_pending(),
            "the slot came back when the call ended"
        );
    }

    #[tokio::test]
    async fn a_slot_is_held_until_the_response_body_ends() {
        let mut service = RpcLayer::new(None, 1).layer(tower::service_fn(|_| {
            let frames = VecDeque::from([Frame::data(Bytes::from_static(b"x")), trailers("0")]);
            ready(Ok::<_, Infallible>(http::Response::new(Frames(frames))))
        }));
        let first = service
            .ready()
            .await
            .expect("ready")
            .call(request("ListEvents"))
            .await
            .expect("answer");
        let while_sent = service
            .ready()
            .await
            .expect("ready")
            .call(request("ListEvents"))
            .await;
        assert!(while_sent.is_err(), "the first reply is not sent yet");
        assert_eq!(drain(first.into_body()).await, 2);
        let after = service
            .ready()
            .await
            .expect("ready")
            .call(request("ListEvents"))
            .await;
        assert!(after.is_ok(), "the slot came back at the trailers");
    }

    #[tokio::test]
    async fn the_layer_off_passes_calls_through() {
        let mut service = RpcLayer::new(None, 16).layer(tower::service_fn(|_| {
            ready(Ok::<_, Infallible>(http::Response::new(Frames(
                VecDeque::from([trailers("0")]),
            ))))
        }));
        let call = service.ready().await.expect("ready");
        let response = call.call(request("ListJourneys")).await.expect("answer");
        assert_eq!(drain(response.into_body()).await, 1, "the trailers pass");
    }
}
