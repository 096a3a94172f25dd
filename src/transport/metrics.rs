//! The service's Prometheus metrics: every RPC counted by method and status
//! code and timed by method (by the tower layer of `rpc_layer.rs`), and
//! the store's caches, read at each scrape. Names and labels follow the
//! usual gRPC server metrics (`grpc_server_handled_total`,
//! `grpc_server_handling_seconds`), so existing dashboards read them.
//!
//! One registry per server, not a global one: two servers in one process
//! (the tests do it) keep their figures apart. `metrics_http.rs` serves it.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Weak},
    time::Instant,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet},
    metrics::MetricType,
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::Registry,
};
use prost::Message;

use super::counters::ApiCounters;
use crate::{
    procstat::{ticks_per_second, Process},
    storage::{redis_stats::ROUND_TRIP_BOUNDS_MICROS, TimelineStore},
};

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

pub(super) struct Rpcs {
    /// Index in `series` of each known path.
    by_path: HashMap<String, usize>,
    /// Every known method's series, then the `unknown` one.
    series: Vec<MethodSeries>,
    handled: Family<CallLabels, Counter>,
}

impl Rpcs {
    pub(super) fn index(&self, path: &str) -> usize {
        self.by_path
            .get(path)
            .copied()
            .unwrap_or(self.series.len() - 1)
    }

    /// Counts a call that ended with `code` and, when it started (was
    /// handled at all), times it: a refusal timed at ~0 s would make the
    /// latencies look better just when the server is overloaded.
    pub(super) fn record(&self, index: usize, code: tonic::Code, started: Option<Instant>) {
        let Some(series) = self.series.get(index) else {
            return;
        };
        if let Some(started) = started {
            series.seconds.observe(started.elapsed().as_secs_f64());
        }
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
    /// `descriptor_sets` (encoded `FileDescriptorSet`s), the handlers'
    /// `counters`, and the caches of `store`.
    pub fn new(
        descriptor_sets: &[&[u8]],
        counters: Arc<ApiCounters>,
        store: Arc<dyn TimelineStore>,
    ) -> Self {
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
            "Time from a call's arrival to the end of its response (its status sent)",
            seconds,
        );
        registry.register_collector(Box::new(ProcessFigures));
        registry.register_collector(Box::new(Handled(counters)));
        registry.register_collector(Box::new(StoreCaches(Arc::downgrade(&store))));
        Self {
            registry,
            rpcs: Arc::new(Rpcs {
                by_path,
                series: all,
                handled,
            }),
        }
    }

    /// The series of the calls, for `rpc_layer::RpcLayer`.
    pub(super) fn rpcs(&self) -> Arc<Rpcs> {
        self.rpcs.clone()
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

/// The process's CPU time, resident memory and open files, read from
/// `/proc` at each scrape under the names Prometheus's own clients use; a
/// figure that cannot be read (not Linux) is left out.
#[derive(Debug)]
struct ProcessFigures;

impl Collector for ProcessFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let me = Process::Myself;
        if let Ok(ticks) = me.cpu_ticks() {
            let seconds = ConstCounter::new(ticks as f64 / ticks_per_second());
            seconds.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time of the process",
                None,
                seconds.metric_type(),
            )?)?;
        }
        if let Ok(kib) = me.rss_kib() {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory of the process",
                kib.saturating_mul(1024),
            )?;
        }
        if let Ok(open) = me.open_fds() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors of the process (client connections among them)",
                open,
            )?;
        }
        Ok(())
    }
}

/// What the handlers counted, read at each scrape.
#[derive(Debug)]
struct Handled(Arc<ApiCounters>);

impl Collector for Handled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let c = &self.0;
        let read = ApiCounters::read;
        labelled_counter(
            &mut encoder,
            "journey_events",
            "Events appended, by outcome: stored, duplicate (the customer had the id: nothing written) or rejected (refused by validation)",
            "outcome",
            &[
                ("stored", read(&c.events_stored)),
                ("duplicate", read(&c.events_duplicate)),
                ("rejected", read(&c.events_rejected)),
            ],
        )?;
        counter(
            &mut encoder,
            "journey_unknown_names",
            "Channel, reason and type names outside the taxonomy that lenient mode accepted",
            read(&c.unknown_names),
        )?;
        labelled_counter(
            &mut encoder,
            "journey_contact_decisions",
            "Contact checks answered, one per customer of a batch, by decision",
            "decision",
            &[
                ("allowed", read(&c.contacts_allowed)),
                ("blocked", read(&c.contacts_blocked)),
            ],
        )?;
        counter(
            &mut encoder,
            "journey_contact_reservations",
            "Contacts recorded by checks in reserve mode",
            read(&c.reservations),
        )
    }
}

/// The store's caches and Redis connection, read at each scrape. Held weakly: a scrape still
/// under way when the server stops must not keep the store (its Redis
/// connections) alive.
struct StoreCaches(Weak<dyn TimelineStore>);

impl fmt::Debug for StoreCaches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreCaches")
    }
}

impl Collector for StoreCaches {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(store) = self.0.upgrade() else {
            return Ok(());
        };
        let stats = store.stats();
        if let Some(redis) = stats.redis {
            counter(
                &mut encoder,
                "journey_redis_connects",
                "Connections the store opened to Redis: the first, then one per reconnection",
                redis.connects,
            )?;
            let buckets: Vec<(f64, u64)> = ROUND_TRIP_BOUNDS_MICROS
                .iter()
                .map(|&micros| micros as f64 / 1e6)
                .chain([f64::INFINITY])
                .zip(redis.round_trip_buckets)
                .collect();
            encoder
                .encode_descriptor(
                    "journey_redis_round_trip_seconds",
                    "Time from a request (a pipeline or a script call) to its answer on the store's Redis connection, timeouts included",
                    None,
                    MetricType::Histogram,
                )?
                .encode_histogram::<NoLabelSet>(
                    redis.round_trip_sum_nanos as f64 / 1e9,
                    redis.round_trips,
                    &buckets,
                    None,
                )?;
        }
        if let Some(context) = stats.context {
            labelled_counter(
                &mut encoder,
                "journey_context_cache_lookups",
                "GetJourneyContext reads by what the context cache answered: hit (from memory), miss (read from Redis, then kept), off (read from Redis: the cache's link to Redis is not whole)",
                "result",
                &[
                    ("hit", context.hits),
                    ("miss", context.misses),
                    ("off", context.off),
                ],
            )?;
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
            counter(
                &mut encoder,
                "journey_states_cache_stale_writes",
                "Writes sent again because this instance's copy of the customer's journey states was not current (one more Redis round trip each)",
                states.stale,
            )?;
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

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

/// One counter per value of `label`.
fn labelled_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> Result<(), fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for &(value, n) in values {
        ConstCounter::new(n).encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
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
    use super::*;

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
