//! The tower layer that counts and times every call for `metrics.rs`. A
//! call's status is in its response headers when it failed before sending
//! anything (a trailers-only response), else in the trailers that end the
//! response body: so the body is wrapped, and the call is recorded when its
//! trailers pass, at the end of the response (a streaming call's whole
//! life), or as Canceled when the response or its body is dropped first.
//! Without metrics the layer passes calls through untouched.

use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::codegen::http;

use super::metrics::Rpcs;

/// Counts and times every call of the service it wraps (or, made by
/// `off`, nothing).
#[derive(Clone)]
pub struct RpcMetricsLayer {
    rpcs: Option<Arc<Rpcs>>,
}

impl RpcMetricsLayer {
    pub(super) fn new(rpcs: Arc<Rpcs>) -> Self {
        Self { rpcs: Some(rpcs) }
    }

    /// A layer that records nothing: the server without `--metrics-listen`.
    pub fn off() -> Self {
        Self { rpcs: None }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            rpcs: self.rpcs.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    rpcs: Option<Arc<Rpcs>>,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<RecordedBody<R>>;
    type Error = S::Error;
    type Future = Recorded<S::Future, R, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let pending = self.rpcs.as_ref().map(|rpcs| Pending {
            index: rpcs.index(request.uri().path()),
            rpcs: rpcs.clone(),
            started: Instant::now(),
        });
        Recorded {
            inner: self.inner.call(request),
            pending,
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
        self.rpcs.record(self.index, code, self.started);
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
    /// The wrapped service's future: a failure answered in the headers is
    /// recorded at once, any other response goes on in a `RecordedBody`.
    pub struct Recorded<F, R, E> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
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
{
    type Output = Result<http::Response<RecordedBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        let mut pending = this.pending.take();
        Poll::Ready(match output {
            Ok(response) => {
                if let Some(code) = status_in(response.headers()) {
                    if let Some(pending) = pending.take() {
                        pending.record(code);
                    }
                }
                Ok(response.map(|inner| RecordedBody { inner, pending }))
            }
            Err(error) => {
                if let Some(pending) = pending {
                    pending.record(tonic::Code::Unknown);
                }
                Err(error)
            }
        })
    }
}

pin_project! {
    /// A response body that records its call when the trailers pass.
    pub struct RecordedBody<B> {
        #[pin]
        inner: B,
        pending: Option<Pending>,
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
        let mut service = metrics.layer().layer(tower::service_fn(|_| {
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
        let mut service = metrics.layer().layer(tower::service_fn(|_| {
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
        let mut service = metrics.layer().layer(tower::service_fn(|_| {
            pending::<Result<http::Response<Frames>, Infallible>>()
        }));
        let call = service.ready().await.expect("ready");
        drop(call.call(request("AppendEvent")));
        assert_eq!(handled(&metrics, "AppendEvent", "Canceled"), 1);

        // A body dropped before its trailers (a stream the client left).
        let mut service = metrics.layer().layer(tower::service_fn(|_| {
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
    async fn the_layer_off_passes_calls_through() {
        let mut service = RpcMetricsLayer::off().layer(tower::service_fn(|_| {
            ready(Ok::<_, Infallible>(http::Response::new(Frames(
                VecDeque::from([trailers("0")]),
            ))))
        }));
        let call = service.ready().await.expect("ready");
        let response = call.call(request("ListJourneys")).await.expect("answer");
        assert_eq!(drain(response.into_body()).await, 1, "the trailers pass");
    }
}
