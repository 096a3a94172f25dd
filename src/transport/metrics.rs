//! The service's Prometheus metrics: every RPC counted by method and status
//! code and timed by method (a tower layer around the gRPC services), and
//! the store's caches, read at each scrape. Names and labels follow the
//! usual gRPC server metrics (`grpc_server_handled_total`,
//! `grpc_server_handling_seconds`), so existing dashboards read them.
//!
//! One registry per server, not a global one: two servers in one process
//! (the tests do it) keep their figures apart. `metrics_http.rs` serves it.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use pin_project_lite::pin_project;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::Registry,
};
use prost::Message;
use tonic::codegen::http;

use crate::storage::TimelineStore;

/// Upper bounds of the latency buckets, in seconds: a context answered
/// from memory takes ~100 µs, a Redis round trip under load milliseconds.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The label set of a call; a path no registered service serves is
/// `unknown` (the path comes from the client: as a label it would let a
/// client grow the registry without bound).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    #[prometheus(flatten)]
    method: MethodLabels,
    grpc_code: &'static str,
}

/// One method's series, made once so a call touches no map but the
/// path's.
struct MethodSeries {
    labels: MethodLabels,
    ok: Counter,
    seconds: Histogram,
}

struct Rpcs {
    /// Index in `series` of each known path.
    by_path: HashMap<String, usize>,
    /// Every known method's series, then the `unknown` one.
    series: Vec<MethodSeries>,
    handled: Family<CallLabels, Counter>,
}

impl Rpcs {
    fn index(&self, path: &str) -> usize {
        self.by_path
            .get(path)
            .copied()
            .unwrap_or(self.series.len() - 1)
    }

    fn record(&self, index: usize, code: tonic::Code, started: Instant) {
        let Some(series) = self.series.get(index) else {
            return;
        };
        series.seconds.observe(started.elapsed().as_secs_f64());
        if code == tonic::Code::Ok {
            series.ok.inc();
        } else {
            self.handled
                .get_or_create(&CallLabels {
                    method: series.labels.clone(),
                    grpc_code: code_name(code),
                })
                .inc();
        }
    }
}

/// The registry and the layer that feeds it.
pub struct Metrics {
    registry: Registry,
    rpcs: Arc<Rpcs>,
}

impl Metrics {
    /// Metrics for the methods of the services described by
    /// `descriptor_sets` (encoded `FileDescriptorSet`s), and for the
    /// caches of `store`.
    pub fn new(descriptor_sets: &[&[u8]], store: Arc<dyn TimelineStore>) -> Self {
        let mut registry = Registry::default();
        let handled = Family::<CallLabels, Counter>::default();
        let seconds = Family::<MethodLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(LATENCY_BUCKETS)) as fn() -> Histogram,
        );
        let series = |labels: MethodLabels| MethodSeries {
            ok: handled.get_or_create_owned(&CallLabels {
                method: labels.clone(),
                grpc_code: code_name(tonic::Code::Ok),
            }),
            seconds: seconds.get_or_create_owned(&labels),
            labels,
        };
        let mut by_path = HashMap::new();
        let mut all = Vec::new();
        for (path, labels) in methods(descriptor_sets) {
            by_path.insert(path, all.len());
            all.push(series(labels));
        }
        all.push(series(MethodLabels {
            grpc_service: "unknown".into(),
            grpc_method: "unknown".into(),
            grpc_type: "unknown",
        }));
        registry.register(
            "grpc_server_handled",
            "RPCs answered, by method and status code (dropped calls count as Canceled)",
            handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from a call's arrival to its response headers (for a unary call, its handling)",
            seconds,
        );
        registry.register_collector(Box::new(StoreCaches(store)));
        Self {
            registry,
            rpcs: Arc::new(Rpcs {
                by_path,
                series: all,
                handled,
            }),
        }
    }

    /// The layer that counts and times every call of the services under it.
    pub fn layer(&self) -> RpcMetricsLayer {
        RpcMetricsLayer {
            rpcs: self.rpcs.clone(),
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `/package.Service/Method` of every method described, with its labels.
/// A set that does not decode is skipped (they are compiled in).
fn methods(descriptor_sets: &[&[u8]]) -> Vec<(String, MethodLabels)> {
    let mut found = Vec::new();
    for set in descriptor_sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
            continue;
        };
        for file in set.file {
            let package = file.package();
            for service in &file.service {
                let service_name = match package {
                    "" => service.name().to_string(),
                    package => format!("{package}.{}", service.name()),
                };
                for method in &service.method {
                    let grpc_type = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (false, true) => "server_stream",
                        (true, false) => "client_stream",
                        (true, true) => "bidi_stream",
                    };
                    found.push((
                        format!("/{service_name}/{}", method.name()),
                        MethodLabels {
                            grpc_service: service_name.clone(),
                            grpc_method: method.name().to_string(),
                            grpc_type,
                        },
                    ));
                }
            }
        }
    }
    found
}

/// The status code's name as gRPC's Go implementation spells it, which
/// the usual dashboards expect.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// What a wrapped service answered, as a status code.
pub trait CallOutcome {
    fn code(&self) -> tonic::Code;
}

impl<B, E> CallOutcome for Result<http::Response<B>, E> {
    /// The status is in the response's headers when the call failed (a
    /// trailers-only response), else in the trailers, which a unary call
    /// sends only after its message: taken as OK.
    fn code(&self) -> tonic::Code {
        match self {
            Ok(response) => response
                .headers()
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from),
            Err(_) => tonic::Code::Unknown,
        }
    }
}

/// Counts and times every call of the service it wraps.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    rpcs: Arc<Rpcs>,
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
    rpcs: Arc<Rpcs>,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let index = self.rpcs.index(request.uri().path());
        Recorded {
            inner: self.inner.call(request),
            pending: Some(Pending {
                rpcs: self.rpcs.clone(),
                index,
                started,
            }),
        }
    }
}

/// A call not answered yet: recorded when it is, or as Canceled when it
/// is dropped first (the client went away, or `--request-timeout` passed).
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

pin_project! {
    /// The wrapped service's future, recording the call when it completes.
    pub struct Recorded<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }

    impl<F> PinnedDrop for Recorded<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(pending) = this.project().pending.take() {
                pending.record(tonic::Code::Cancelled);
            }
        }
    }
}

impl<F> Future for Recorded<F>
where
    F: Future,
    F::Output: CallOutcome,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Some(pending) = this.pending.take() {
            pending.record(output.code());
        }
        Poll::Ready(output)
    }
}

/// The store's caches, read at each scrape.
struct StoreCaches(Arc<dyn TimelineStore>);

impl fmt::Debug for StoreCaches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreCaches")
    }
}

impl Collector for StoreCaches {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = self.0.cache_stats();
        if let Some(context) = stats.context {
            let counter = ConstCounter::new(0u64);
            let mut lookups = encoder.encode_descriptor(
                "journey_context_cache_lookups",
                "GetJourneyContext reads by what the context cache answered: hit (from memory), miss (read from Redis, then kept), off (read from Redis: the cache's link to Redis is not whole)",
                None,
                counter.metric_type(),
            )?;
            for (result, n) in [
                ("hit", context.hits),
                ("miss", context.misses),
                ("off", context.off),
            ] {
                ConstCounter::new(n).encode(lookups.encode_family(&[("result", result)])?)?;
            }
            gauge(
                &mut encoder,
                "journey_context_cache_entries",
                "Customers whose context the cache keeps",
                context.entries,
            )?;
            gauge(
                &mut encoder,
                "journey_context_cache_bytes",
                "Estimated memory the kept contexts take",
                context.bytes,
            )?;
        }
        if let Some(states) = stats.journey_states {
            let stale = ConstCounter::new(states.stale);
            stale.encode(encoder.encode_descriptor(
                "journey_states_cache_stale_writes",
                "Writes sent again because this instance's copy of the customer's journey states was not current (one more Redis round trip each)",
                None,
                stale.metric_type(),
            )?)?;
            gauge(
                &mut encoder,
                "journey_states_cache_entries",
                "Customers whose journey states this instance keeps",
                states.entries,
            )?;
            gauge(
                &mut encoder,
                "journey_states_cache_bytes",
                "Estimated memory the kept journey states take",
                states.bytes,
            )?;
        }
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

#[cfg(test)]
mod tests {
    use std::future::{pending, ready};

    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::storage::{MemoryStore, Retention};

    const DESCRIPTORS: &[&[u8]] = &[crate::pb::FILE_DESCRIPTOR_SET];

    fn metrics() -> Metrics {
        let rules = crate::domain::MergeRules {
            unique_types: Default::default(),
            max_identities: 100,
        };
        let store = MemoryStore::new(Retention::default(), rules, 1_000);
        Metrics::new(DESCRIPTORS, Arc::new(store))
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(path)
            .body(())
            .expect("request")
    }

    fn line_of<'a>(text: &'a str, method: &str, code: &str) -> Option<&'a str> {
        text.lines().find(|line| {
            line.starts_with("grpc_server_handled_total{")
                && line.contains(&format!("grpc_method=\"{method}\""))
                && line.contains(&format!("grpc_code=\"{code}\""))
        })
    }

    #[tokio::test]
    async fn a_call_is_counted_with_the_code_its_response_carries() {
        let metrics = metrics();
        let mut service = metrics.layer().layer(tower::service_fn(|_| {
            ready(Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .header("grpc-status", "5")
                    .body(())
                    .expect("response"),
            ))
        }));
        let path = "/journey.v1.JourneyService/GetJourneyContext";
        let _ = service
            .ready()
            .await
            .expect("ready")
            .call(request(path))
            .await;
        let text = metrics.render().expect("render");
        let line = line_of(&text, "GetJourneyContext", "NotFound").expect("counted");
        assert!(line.ends_with(" 1"), "{line}");
    }

    #[tokio::test]
    async fn a_call_dropped_before_its_answer_counts_as_canceled() {
        let metrics = metrics();
        let mut service = metrics.layer().layer(tower::service_fn(|_| {
            pending::<Result<http::Response<()>, std::convert::Infallible>>()
        }));
        let call = service
            .ready()
            .await
            .expect("ready")
            .call(request("/journey.v1.JourneyService/AppendEvent"));
        drop(call);
        let text = metrics.render().expect("render");
        let line = line_of(&text, "AppendEvent", "Canceled").expect("counted");
        assert!(line.ends_with(" 1"), "{line}");
    }

    #[test]
    fn every_method_of_the_descriptors_is_known_with_its_kind() {
        let found = methods(&[
            crate::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ]);
        let kind = |path: &str| {
            found
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, labels)| labels.grpc_type)
        };
        assert_eq!(
            kind("/journey.v1.JourneyService/GetJourneyContext"),
            Some("unary")
        );
        assert_eq!(kind("/grpc.health.v1.Health/Watch"), Some("server_stream"));
        assert_eq!(kind("/journey.v1.JourneyService/Nope"), None);
    }
}
