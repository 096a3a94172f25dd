//! Assembles and runs the gRPC server: the store chosen by configuration,
//! the journey service, health checking and reflection, limits and
//! graceful shutdown. The caller passes the bound listener and the shutdown
//! signal, so tests run it on `127.0.0.1:0` and stop it with a channel.

use std::{future::Future, sync::Arc, time::Duration};

use thiserror::Error;
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::{server::TcpIncoming, Server};
use tonic_health::{server::HealthReporter, ServingStatus};

use arc_swap::ArcSwap;

use crate::{
    config::{ServeConfig, StoreUrl},
    domain::{
        contact_policy::PolicyError,
        journey::{JourneyDefinitions, JourneyError},
        taxonomy::TaxonomyError,
        ContactPolicy, Micros, Taxonomy,
    },
    pb,
    storage::{
        redis_store::RedisSettings, JourneyTracker, MemoryStore, RedisStore, StorageError,
        TimelineStore,
    },
    transport::{
        metrics::Metrics,
        metrics_http,
        rpc_layer::RpcLayer,
        service::{SharedJourneys, SharedPolicy},
        JourneyApi,
    },
    wire::journey_service_server::JourneyServiceServer,
};

/// Why the server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot read taxonomy file {path}: {source}")]
    TaxonomyFile {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Taxonomy(#[from] TaxonomyError),
    #[error("cannot read contact policy file {path}: {source}")]
    PolicyFile {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot read journey definitions file {path}: {source}")]
    JourneysFile {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Journeys(#[from] JourneyError),
    #[error(transparent)]
    Store(#[from] StorageError),
    #[error("cannot listen for metrics on {address}: {source}")]
    MetricsListen {
        address: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Loads the taxonomy named by the configuration, or the built-in one.
pub fn load_taxonomy(config: &ServeConfig) -> Result<Taxonomy, ServeError> {
    let text = match &config.taxonomy {
        None => crate::domain::taxonomy::BUILTIN_TOML.to_string(),
        Some(path) => std::fs::read_to_string(path).map_err(|source| ServeError::TaxonomyFile {
            path: path.display().to_string(),
            source,
        })?,
    };
    Ok(Taxonomy::from_toml(&text, config.taxonomy_mode)?)
}

/// Loads the contact policy named by the configuration, or the built-in one.
pub fn load_policy(config: &ServeConfig, taxonomy: &Taxonomy) -> Result<ContactPolicy, ServeError> {
    match &config.contact_policy {
        None => Ok(ContactPolicy::builtin(taxonomy)?),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ServeError::PolicyFile {
                path: path.display().to_string(),
                source,
            })?;
            Ok(ContactPolicy::from_toml(&text, taxonomy)?)
        }
    }
}

/// Loads the journey definitions named by the configuration, or the built-in set.
pub fn load_journeys(
    config: &ServeConfig,
    taxonomy: &Taxonomy,
) -> Result<JourneyDefinitions, ServeError> {
    match &config.journeys {
        None => Ok(JourneyDefinitions::builtin(taxonomy)?),
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| ServeError::JourneysFile {
                    path: path.display().to_string(),
                    source,
                })?;
            Ok(JourneyDefinitions::from_toml(&text, taxonomy)?)
        }
    }
}

/// Reloads the contact policy and the journey definitions on every SIGHUP.
/// A file that does not load is reported and the set in force stays.
fn reload_on_sighup(
    config: ServeConfig,
    taxonomy: Arc<Taxonomy>,
    policy: SharedPolicy,
    journeys: SharedJourneys,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP: the policy and journeys cannot be reloaded");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match load_policy(&config, &taxonomy) {
                Ok(loaded) => {
                    policy.store(Arc::new(loaded));
                    tracing::info!("contact policy reloaded");
                }
                Err(err) => {
                    tracing::error!(error = %err, "contact policy not reloaded; the last good one stays")
                }
            }
            match load_journeys(&config, &taxonomy) {
                Ok(loaded) => {
                    journeys.store(Arc::new(loaded));
                    tracing::info!("journey definitions reloaded");
                }
                Err(err) => tracing::error!(
                    error = %err,
                    "journey definitions not reloaded; the last good ones stay"
                ),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (config, taxonomy, policy, journeys);
}

/// Opens the store named by the configuration.
pub fn open_store(
    config: &ServeConfig,
    taxonomy: &Taxonomy,
    tracker: JourneyTracker,
) -> Result<Arc<dyn TimelineStore>, ServeError> {
    let rules = config.merge_rules(taxonomy);
    Ok(match &config.store {
        StoreUrl::Memory => {
            tracing::warn!(
                max_events = config.memory_max_events,
                "using the in-memory store: nothing is persisted, data is lost on restart"
            );
            if config.context_cache_mib > 0 {
                // The memory store answers from memory already.
                tracing::warn!("--context-cache-mib applies to the Redis store only: ignored");
            }
            Arc::new(
                MemoryStore::new(config.retention(), rules, config.memory_max_events)
                    .with_journeys(tracker),
            )
        }
        StoreUrl::Redis(url) => {
            let settings = RedisSettings {
                url: url.clone(),
                response_timeout: config.redis_timeout(),
                connect_timeout: config.redis_timeout(),
            };
            Arc::new(
                RedisStore::open(&settings, config.retention(), rules)?
                    .with_journeys(
                        tracker,
                        config.journey_cache_customers,
                        config.journey_cache_mib.saturating_mul(1 << 20),
                    )
                    .with_context_cache(config.context_cache_mib.saturating_mul(1 << 20))?,
            )
        }
    })
}

/// Runs the server on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight calls finish and returns. The metrics
/// endpoint, when `--metrics-listen` is set, listens there.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics =
        match config.metrics_listen {
            None => None,
            Some(address) => Some(TcpListener::bind(address).await.map_err(|source| {
                ServeError::MetricsListen {
                    address: address.to_string(),
                    source,
                }
            })?),
        };
    run_with_metrics(config, listener, metrics, shutdown).await
}

/// `run`, with the metrics endpoint on `metrics` when given (whatever
/// `--metrics-listen` says): tests bind it to a free port.
pub async fn run_with_metrics(
    config: ServeConfig,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.check().map_err(ServeError::Config)?;
    let taxonomy = Arc::new(load_taxonomy(&config)?);
    let policy: SharedPolicy = Arc::new(ArcSwap::from_pointee(load_policy(&config, &taxonomy)?));
    let journeys: SharedJourneys =
        Arc::new(ArcSwap::from_pointee(load_journeys(&config, &taxonomy)?));
    reload_on_sighup(
        config.clone(),
        taxonomy.clone(),
        policy.clone(),
        journeys.clone(),
    );
    let tracker = JourneyTracker::new(journeys.clone(), taxonomy.clone());
    let store = open_store(&config, &taxonomy, tracker)?;
    let metrics_store = store.clone();
    let rules = config.merge_rules(&taxonomy);
    let api = JourneyApi::new(
        store.clone(),
        taxonomy,
        policy,
        journeys,
        rules,
        config.api_limits(),
    );

    let identity_work = api.identity_work();

    let (reporter, health_service) = tonic_health::server::health_reporter();
    report(&reporter, ServingStatus::NotServing).await;
    let (stop_health, health_stopped) = watch::channel(false);
    let sweeper = tokio::spawn(sweep_journeys(
        store.clone(),
        Duration::from_millis(config.journey_sweep_interval_ms),
        config.journey_sweep_batch,
        health_stopped.clone(),
    ));
    let health_task = tokio::spawn(watch_store_health(
        store,
        reporter.clone(),
        Duration::from_millis(config.health_interval_ms),
        health_stopped,
    ));

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let counters = api.counters();
    let journey =
        JourneyServiceServer::new(api).max_decoding_message_size(config.max_message_bytes);
    let (stop_metrics, metrics_stopped) = watch::channel(false);
    let mut metrics_task = None;
    let mut rpc_layer = RpcLayer::new(None, config.max_in_flight_total);
    if let Some(metrics_listener) = metrics_listener {
        let metrics = Arc::new(Metrics::new(
            &[
                pb::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ],
            counters,
            metrics_store,
        ));
        rpc_layer = RpcLayer::new(Some(&metrics), config.max_in_flight_total);
        let address = metrics_listener
            .local_addr()
            .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
        tracing::info!(listen = %address, "metrics endpoint started");
        let mut stopped = metrics_stopped;
        metrics_task = Some(tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            if let Err(err) = metrics_http::serve(metrics_listener, metrics, stop).await {
                tracing::error!(error = %err, "metrics endpoint stopped");
            }
        }));
    }
    let local = listener
        .local_addr()
        .map_or_else(|_| "unknown".to_string(), |a| a.to_string());
    // Keepalive finds peers gone without a word (a host down, a network
    // split): without it their connections, and the calls and slots of
    // `--max-in-flight-total` those held, stayed until the process ended.
    let keepalive = config.keepalive_interval();
    // TCP keepalive counts whole seconds, 1 to 32767 on Linux (outside,
    // the socket option fails on every connection); HTTP/2's PING takes
    // the interval as it is.
    let tcp_keepalive =
        keepalive.map(|d| d.clamp(Duration::from_secs(1), Duration::from_secs(32_767)));
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(tcp_keepalive);
    tracing::info!(listen = %local, store = %config.store, "journey server started");

    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight calls");
        // Stop the health task first so it cannot flip the status back.
        let _ = stop_health.send(true);
        let _ = health_task.await;
        let _ = sweeper.await;
        report(&reporter, ServingStatus::NotServing).await;
    };
    let served = Server::builder()
        .timeout(Duration::from_millis(config.request_timeout_ms))
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(Duration::from_millis(config.keepalive_timeout_ms)))
        .layer(rpc_layer.per_connection(config.max_in_flight))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(journey)
        .serve_with_incoming_shutdown(incoming, signal)
        .await;
    // Links and merges whose calls were cut short go on in tasks of their
    // own: each gets the time a call would have had to end.
    let left = identity_work
        .drain(Duration::from_millis(config.request_timeout_ms))
        .await;
    if left > 0 {
        tracing::warn!(tasks = left, "identity work still running at shutdown");
    }
    let _ = stop_metrics.send(true);
    if let Some(mut task) = metrics_task {
        // A graceful stop closes idle connections at once; whatever a
        // client does, the endpoint has nothing to finish: a second, then
        // it is cut, so no scraper can hold the server's stop.
        if tokio::time::timeout(Duration::from_secs(1), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
    served?;
    tracing::info!("journey server stopped");
    Ok(())
}

/// Pings the store every `interval` and reports SERVING or NOT_SERVING for
/// the whole server and for the journey service.
async fn watch_store_health(
    store: Arc<dyn TimelineStore>,
    reporter: HealthReporter,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => return,
        }
        let healthy = match tokio::time::timeout(interval, store.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "store ping failed");
                false
            }
            Err(_) => false,
        };
        if serving == Some(healthy) {
            continue;
        }
        serving = Some(healthy);
        let status = if healthy {
            tracing::info!("store reachable: serving");
            ServingStatus::Serving
        } else {
            tracing::warn!("store unreachable: not serving");
            ServingStatus::NotServing
        };
        report(&reporter, status).await;
    }
}

/// Drops journeys past their inactivity deadline, on time, until stopped.
/// Several instances may sweep one Redis: each drop is written by one of
/// them only (see `TimelineStore::sweep_journeys`).
async fn sweep_journeys(
    store: Arc<dyn TimelineStore>,
    interval: Duration,
    batch: usize,
    mut stopped: watch::Receiver<bool>,
) {
    // Listings and counters are trimmed at most once a minute.
    const TRIM_EVERY_MICROS: i64 = 60 * Micros::PER_SECOND;
    let mut next_trim = Micros(0);
    // The first pass comes one interval after start, like every other.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => return,
        }
        let now = Micros::now();
        if now >= next_trim {
            next_trim = now.saturating_add_micros(TRIM_EVERY_MICROS);
            if let Err(err) = store.trim_journeys(now).await {
                tracing::warn!(error = %err, "journey index trim failed; retrying later");
            }
        }
        // A full batch means more are due: go on without waiting.
        loop {
            match store.sweep_journeys(Micros::now(), batch).await {
                Ok(swept) => {
                    if swept.dropped > 0 {
                        tracing::debug!(dropped = swept.dropped, "journeys dropped for inactivity");
                    }
                    if swept.due < batch {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "journey sweep failed; retrying next tick");
                    break;
                }
            }
            if *stopped.borrow() {
                return;
            }
        }
    }
}

/// Sets the health status of the whole server and of the journey service.
async fn report(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(
            <JourneyServiceServer<JourneyApi> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}
