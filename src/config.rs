//! Command line and environment: every setting is a flag with a `JOURNEY_*`
//! variable and a default that works with nothing set. Doc comments are the
//! `--help` text and the README's configuration table.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    domain::{EventLimits, Micros, TaxonomyMode},
    storage::Retention,
    transport::ApiLimits,
};

#[derive(Debug, Parser)]
#[command(
    name = "journey",
    version,
    about = "Customer journey context over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(ServeConfig),
    /// Append events (one from flags, or a batch from a JSON Lines file).
    Append(crate::cli::AppendArgs),
    /// Show a customer's journey context.
    Context(crate::cli::ContextArgs),
    /// List a customer's events, newest first, filtered and paginated.
    Events(crate::cli::EventsArgs),
    /// May the company contact a customer (or each customer of a list) now?
    Check(crate::cli::CheckArgs),
    /// Show the journey definitions the server loaded, or a customer's journeys.
    Journeys(crate::cli::JourneysArgs),
    /// Show a journey's funnel and figures over a range of days.
    Stats(crate::cli::StatsArgs),
    /// List the customers in a journey status (e.g. dropped at a step), for a campaign.
    Customers(crate::cli::CustomersArgs),
    /// Declare that identities belong to one person (their profiles merge).
    Link(crate::cli::LinkArgs),
    /// Remove a wrongly linked identity from a profile, going forward.
    Unlink(crate::cli::UnlinkArgs),
    /// Erase a customer: events, contacts, identities, journeys (right to erasure).
    Forget(crate::cli::ForgetArgs),
    /// Load generator: seed a population, run a scenario, or serve the echo baseline.
    Bench(crate::bench::BenchArgs),
}

/// Where timelines are kept. `Debug` shows it as `Display` does, without
/// credentials.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// In this process's memory; nothing is persisted.
    Memory,
    /// A Redis server, e.g. `redis://127.0.0.1:6379/0`.
    Redis(String),
}

/// Most runtime threads a command may ask for (`--worker-threads`): each
/// is made at start, with its stack. `main` checks it before it builds the
/// runtime (past it, building fails on memory rather than with a message).
pub const MAX_WORKER_THREADS: usize = 1024;

impl FromStr for StoreUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory" {
            return Ok(Self::Memory);
        }
        // Errors do not repeat the URL: it may hold a password.
        let url =
            url::Url::parse(s).map_err(|e| format!("the store is not `memory` or a URL: {e}"))?;
        match url.scheme() {
            "redis" => Ok(Self::Redis(s.to_string())),
            // A Unix socket, as redis-rs spells it: `redis+unix:///path?db=N`.
            "redis+unix" | "unix" => Ok(Self::Redis(s.to_string())),
            // The store's connection speaks no TLS (see
            // storage/redis_conn.rs); for TLS, put a TLS tunnel beside it.
            "rediss" => Err(format!(
                "{}: TLS to Redis (rediss://) is not supported; use redis:// (a TLS tunnel such as stunnel can carry it)",
                Self::Redis(s.to_string())
            )),
            other => Err(format!(
                "unsupported store scheme {other:?}: use `memory`, `redis://host:port/db` or `redis+unix:///path?db=N`"
            )),
        }
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

impl std::fmt::Display for StoreUrl {
    /// The store without credentials, for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Redis(url) => f.write_str(&crate::storage::redis_store::redacted_url(url)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Settings of `journey serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address the gRPC server listens on.
    #[arg(long, env = "JOURNEY_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`, HTTP/1.1), e.g. `127.0.0.1:9464`; none when unset.
    #[arg(long, env = "JOURNEY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// `memory` (the default: nothing persisted) or a Redis URL such as `redis://127.0.0.1:6379/0` or `redis+unix:///run/redis.sock?db=0`.
    #[arg(long, env = "JOURNEY_STORE", default_value = "memory")]
    pub store: StoreUrl,
    /// Taxonomy file (TOML); the built-in taxonomy when unset.
    #[arg(long, env = "JOURNEY_TAXONOMY")]
    pub taxonomy: Option<PathBuf>,
    /// Contact policy file (TOML); the built-in policy when unset. SIGHUP reloads it.
    #[arg(long, env = "JOURNEY_CONTACT_POLICY")]
    pub contact_policy: Option<PathBuf>,
    /// Region phone numbers without a country code are read in (ISO 3166, e.g. FR, US).
    #[arg(long, env = "JOURNEY_PHONE_REGION", default_value = "US")]
    pub phone_region: String,
    /// Most identities one profile may hold; a merge beyond it is refused.
    #[arg(
        long,
        env = "JOURNEY_MAX_IDENTITIES_PER_PROFILE",
        default_value_t = 100
    )]
    pub max_identities_per_profile: usize,
    /// Journey definitions file (TOML); the built-in set when unset. SIGHUP reloads it.
    #[arg(long, env = "JOURNEY_JOURNEYS")]
    pub journeys: Option<PathBuf>,
    /// How long a finished journey stays in GetJourneyContext, in minutes.
    #[arg(
        long,
        env = "JOURNEY_JOURNEY_LOOKBACK_MINUTES",
        default_value_t = 1_440
    )]
    pub journey_lookback_minutes: u32,
    /// How often the sweeper looks for journeys past their inactivity deadline, in milliseconds.
    #[arg(
        long,
        env = "JOURNEY_JOURNEY_SWEEP_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub journey_sweep_interval_ms: u64,
    /// Most deadline entries one sweeper pass reads; a full pass is followed by another at once.
    #[arg(long, env = "JOURNEY_JOURNEY_SWEEP_BATCH", default_value_t = 1_000)]
    pub journey_sweep_batch: usize,
    /// Redis store: customers whose journey states this instance keeps in
    /// memory, so an append needs no read first (a miss costs a round trip).
    #[arg(
        long,
        env = "JOURNEY_JOURNEY_CACHE_CUSTOMERS",
        default_value_t = 100_000
    )]
    pub journey_cache_customers: usize,
    /// Redis store: most memory (MiB, estimated) the cached journey states
    /// take; the least recently used customers go first. A customer with
    /// the built-in journeys takes a few KiB.
    #[arg(long, env = "JOURNEY_JOURNEY_CACHE_MIB", default_value_t = 32)]
    pub journey_cache_mib: usize,
    /// Redis store: most memory (MiB, estimated) this instance may keep
    /// journey contexts read in, served again until Redis says a key of
    /// the customer changed (client-side caching with `CLIENT TRACKING`,
    /// Redis 6.2 or later). 0, the default, keeps none. Writes made through
    /// this instance are seen at once; those made through others after
    /// Redis's invalidation reaches this one (about a round trip).
    #[arg(long, env = "JOURNEY_CONTEXT_CACHE_MIB", default_value_t = 0)]
    pub context_cache_mib: usize,
    /// Most customers in one CheckContactFrequencyBatch call.
    #[arg(long, env = "JOURNEY_MAX_CHECK_BATCH", default_value_t = 10_000)]
    pub max_check_batch: usize,
    /// `strict` rejects channels, reasons and types outside the taxonomy; `lenient` accepts and counts them.
    #[arg(
        long,
        env = "JOURNEY_TAXONOMY_MODE",
        value_enum,
        default_value = "strict"
    )]
    pub taxonomy_mode: TaxonomyMode,
    /// Most events in one AppendEvents call.
    #[arg(long, env = "JOURNEY_MAX_BATCH", default_value_t = 1_000)]
    pub max_batch: usize,
    /// Events kept per customer; the oldest go first.
    #[arg(long, env = "JOURNEY_MAX_EVENTS_PER_CUSTOMER", default_value_t = 1_000)]
    pub max_events_per_customer: usize,
    /// Days an event is kept; a customer with no event for this long is forgotten.
    #[arg(long, env = "JOURNEY_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,
    /// How far in the future (seconds) an event's occurred_at may be.
    #[arg(long, env = "JOURNEY_MAX_FUTURE_SKEW_SECS", default_value_t = 300)]
    pub max_future_skew_secs: u32,
    /// Most attributes one event may carry.
    #[arg(long, env = "JOURNEY_MAX_ATTRIBUTES", default_value_t = 64)]
    pub max_attributes: usize,
    /// Longest attribute value (and contact check campaign_id), in bytes.
    #[arg(
        long,
        env = "JOURNEY_MAX_ATTRIBUTE_VALUE_BYTES",
        default_value_t = 1024
    )]
    pub max_attribute_value_bytes: usize,
    /// Largest event: the bytes of its ids, names, attribute keys and values.
    #[arg(long, env = "JOURNEY_MAX_EVENT_BYTES", default_value_t = 16 * 1024)]
    pub max_event_bytes: usize,
    /// Most events the memory store holds across all customers, each
    /// contact reservation, identity and profile counting as one more.
    #[arg(long, env = "JOURNEY_MEMORY_MAX_EVENTS", default_value_t = 5_000_000)]
    pub memory_max_events: usize,
    /// Time limit of one Redis round trip, in milliseconds.
    #[arg(long, env = "JOURNEY_REDIS_TIMEOUT_MS", default_value_t = 1_000)]
    pub redis_timeout_ms: u64,
    /// Time limit of one RPC, in milliseconds (a shorter client deadline wins).
    #[arg(long, env = "JOURNEY_REQUEST_TIMEOUT_MS", default_value_t = 5_000)]
    pub request_timeout_ms: u64,
    /// Concurrent RPCs per client connection (health checks aside); more are refused at once with RESOURCE_EXHAUSTED (and counted in the metrics).
    #[arg(long, env = "JOURNEY_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
    /// Concurrent RPCs in the whole server, over all connections; more are refused at once with RESOURCE_EXHAUSTED (and counted in the metrics).
    #[arg(long, env = "JOURNEY_MAX_IN_FLIGHT_TOTAL", default_value_t = 4_096)]
    pub max_in_flight_total: usize,
    /// How often the server checks that a client connection's peer is
    /// still there, in milliseconds: an HTTP/2 PING after this long without
    /// a frame from it, and TCP keepalive probes after this long idle. A
    /// connection whose peer does not answer the PING within
    /// `--keepalive-timeout-ms` is closed, with the calls it held. 0: never.
    #[arg(long, env = "JOURNEY_KEEPALIVE_INTERVAL_MS", default_value_t = 60_000)]
    pub keepalive_interval_ms: u64,
    /// How long the server waits for the answer to its keepalive PING
    /// before it closes the connection, in milliseconds.
    #[arg(long, env = "JOURNEY_KEEPALIVE_TIMEOUT_MS", default_value_t = 20_000)]
    pub keepalive_timeout_ms: u64,
    /// Largest request message, in bytes.
    #[arg(long, env = "JOURNEY_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// How often the store is pinged for the health status, in milliseconds.
    #[arg(long, env = "JOURNEY_HEALTH_INTERVAL_MS", default_value_t = 1_000)]
    pub health_interval_ms: u64,
    /// Threads that run the server; 0 means one per core. On a small machine
    /// shared with Redis, 1 leaves Redis a core and costs less CPU per call.
    #[arg(long, env = "JOURNEY_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// Log format: `text` for people, `json` for log pipelines. `RUST_LOG` sets the level.
    #[arg(long, env = "JOURNEY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Default for ServeConfig {
    fn default() -> Self {
        // The defaults live in the clap attributes above; parsing no
        // arguments yields them, so tests and `main` share one source.
        let cli = Cli::try_parse_from(["journey", "serve"]);
        match cli {
            Ok(Cli {
                command: Command::Serve(config),
            }) => config,
            _ => unreachable!("`journey serve` with no flags always parses"),
        }
    }
}

impl ServeConfig {
    pub fn retention(&self) -> Retention {
        Retention {
            max_events: self.max_events_per_customer,
            max_age_micros: i64::from(self.retention_days) * 86_400 * Micros::PER_SECOND,
        }
    }

    pub fn api_limits(&self) -> ApiLimits {
        ApiLimits {
            event: EventLimits {
                max_future_skew_micros: i64::from(self.max_future_skew_secs) * Micros::PER_SECOND,
                retention_micros: self.retention().max_age_micros,
                phone_region: crate::domain::identity::parse_region(&self.phone_region)
                    .unwrap_or(phonenumber::country::Id::US),
                max_attributes: self.max_attributes,
                max_attribute_value_bytes: self.max_attribute_value_bytes,
                max_event_bytes: self.max_event_bytes,
                ..EventLimits::default()
            },
            max_batch: self.max_batch,
            max_check_batch: self.max_check_batch,
            // As many as calls may be in flight: a call gone frees its
            // slot while its identity work goes on, so this bounds both.
            max_identity_tasks: self.max_in_flight_total,
            journey_lookback_micros: i64::from(self.journey_lookback_minutes)
                * 60
                * Micros::PER_SECOND,
            ..ApiLimits::default()
        }
    }

    /// The merge rules: unique identity types from the taxonomy, the
    /// identity limit from the flags.
    pub fn merge_rules(&self, taxonomy: &crate::domain::Taxonomy) -> crate::domain::MergeRules {
        crate::domain::MergeRules {
            unique_types: taxonomy
                .identity_types()
                .iter()
                .filter(|(_, t)| t.unique)
                .map(|(name, _)| name.clone())
                .collect(),
            max_identities: self.max_identities_per_profile,
        }
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// The keepalive interval, `None` when turned off.
    pub fn keepalive_interval(&self) -> Option<Duration> {
        (self.keepalive_interval_ms > 0).then(|| Duration::from_millis(self.keepalive_interval_ms))
    }

    /// Rules across settings, checked once at start-up.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("--max-batch", self.max_batch as u64),
            ("--max-check-batch", self.max_check_batch as u64),
            (
                "--max-events-per-customer",
                self.max_events_per_customer as u64,
            ),
            ("--retention-days", u64::from(self.retention_days)),
            ("--max-attributes", self.max_attributes as u64),
            (
                "--max-attribute-value-bytes",
                self.max_attribute_value_bytes as u64,
            ),
            ("--max-event-bytes", self.max_event_bytes as u64),
            ("--memory-max-events", self.memory_max_events as u64),
            ("--redis-timeout-ms", self.redis_timeout_ms),
            ("--request-timeout-ms", self.request_timeout_ms),
            ("--max-in-flight", self.max_in_flight as u64),
            ("--max-in-flight-total", self.max_in_flight_total as u64),
            ("--health-interval-ms", self.health_interval_ms),
            ("--keepalive-timeout-ms", self.keepalive_timeout_ms),
            (
                "--journey-sweep-interval-ms",
                self.journey_sweep_interval_ms,
            ),
            ("--journey-sweep-batch", self.journey_sweep_batch as u64),
            ("--journey-cache-mib", self.journey_cache_mib as u64),
            (
                "--journey-cache-customers",
                self.journey_cache_customers as u64,
            ),
        ];
        for (flag, value) in positive {
            if value == 0 {
                return Err(format!("{flag} must be above 0"));
            }
        }
        if self.max_event_bytes > self.max_message_bytes {
            return Err(format!(
                "--max-event-bytes ({}) cannot exceed --max-message-bytes ({}): such an event could not arrive",
                self.max_event_bytes, self.max_message_bytes
            ));
        }
        // Requests decode no more than these; past them items are counted.
        for (flag, value, cap) in [
            (
                "--max-batch",
                self.max_batch,
                crate::wire::MAX_DECODED_EVENTS,
            ),
            (
                "--max-check-batch",
                self.max_check_batch,
                crate::wire::MAX_DECODED_CUSTOMERS,
            ),
        ] {
            if value > cap {
                return Err(format!("{flag} must be at most {cap}"));
            }
        }
        crate::domain::identity::parse_region(&self.phone_region)
            .map_err(|e| format!("--phone-region: {e}"))?;
        if self.max_identities_per_profile < 2 {
            return Err("--max-identities-per-profile must be at least 2".into());
        }
        if self.retention_days > 36_500 {
            return Err("--retention-days must be at most 36500".into());
        }
        // Past these a setting is accepted but breaks at run time: the
        // states cache reserves its table up front, and a sweep's count is
        // a Redis LIMIT.
        for (flag, value, most) in [
            (
                "--journey-cache-customers",
                self.journey_cache_customers as u64,
                10_000_000,
            ),
            (
                "--journey-sweep-batch",
                self.journey_sweep_batch as u64,
                1_000_000,
            ),
            (
                "--journey-cache-mib",
                self.journey_cache_mib as u64,
                1 << 20,
            ),
            (
                "--worker-threads",
                self.worker_threads as u64,
                MAX_WORKER_THREADS as u64,
            ),
        ] {
            if value > most {
                return Err(format!("{flag} must be at most {most}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{ServeConfig, StoreUrl};

    /// Every flag of `journey serve` has its row in the README's
    /// configuration table, with its environment variable.
    #[test]
    fn the_readme_lists_every_setting() {
        use clap::CommandFactory;
        let readme = include_str!("../README.md");
        let cli = super::Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        let (mut missing, mut checked) = (Vec::new(), 0);
        for arg in serve.get_arguments() {
            let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
                continue;
            };
            checked += 1;
            let row = format!("| `--{long}` | `{}` |", env.to_string_lossy());
            if !readme.contains(&row) {
                missing.push(row);
            }
        }
        assert!(checked > 30, "only {checked} settings found");
        assert!(missing.is_empty(), "not in the README: {missing:#?}");
    }

    #[test]
    fn keepalive_is_on_by_default_and_a_zero_interval_turns_it_off() {
        assert_eq!(
            ServeConfig::default().keepalive_interval(),
            Some(Duration::from_secs(60))
        );
        let off = ServeConfig {
            keepalive_interval_ms: 0,
            ..ServeConfig::default()
        };
        assert_eq!(off.check(), Ok(()));
        assert_eq!(off.keepalive_interval(), None);
        let no_wait = ServeConfig {
            keepalive_timeout_ms: 0,
            ..ServeConfig::default()
        };
        assert_eq!(
            no_wait.check(),
            Err("--keepalive-timeout-ms must be above 0".to_string())
        );
        let huge_batches = ServeConfig {
            max_batch: crate::wire::MAX_DECODED_EVENTS + 1,
            ..ServeConfig::default()
        };
        assert_eq!(
            huge_batches.check(),
            Err("--max-batch must be at most 100000".to_string())
        );
        let bigger_than_a_message = ServeConfig {
            max_event_bytes: 32 * 1024 * 1024,
            ..ServeConfig::default()
        };
        assert!(bigger_than_a_message
            .check()
            .is_err_and(|e| e.contains("--max-event-bytes")));
        let no_attributes = ServeConfig {
            max_attributes: 0,
            ..ServeConfig::default()
        };
        assert_eq!(
            no_attributes.check(),
            Err("--max-attributes must be above 0".to_string())
        );
        let huge_lists = ServeConfig {
            max_check_batch: crate::wire::MAX_DECODED_CUSTOMERS + 1,
            ..ServeConfig::default()
        };
        assert_eq!(
            huge_lists.check(),
            Err("--max-check-batch must be at most 100000".to_string())
        );
    }

    #[test]
    fn settings_that_would_break_at_run_time_are_refused() {
        let refused = |config: ServeConfig| config.check().expect_err("refused");
        let too_many = refused(ServeConfig {
            journey_cache_customers: 100_000_000,
            ..ServeConfig::default()
        });
        assert!(too_many.contains("--journey-cache-customers"), "{too_many}");
        let batch = refused(ServeConfig {
            journey_sweep_batch: usize::MAX,
            ..ServeConfig::default()
        });
        assert!(batch.contains("--journey-sweep-batch"), "{batch}");
        let mib = refused(ServeConfig {
            journey_cache_mib: 1 << 44,
            ..ServeConfig::default()
        });
        assert!(mib.contains("--journey-cache-mib"), "{mib}");
        for threads in [1025, usize::MAX] {
            let refused = refused(ServeConfig {
                worker_threads: threads,
                ..ServeConfig::default()
            });
            assert!(refused.contains("--worker-threads"), "{refused}");
        }
        assert!(ServeConfig {
            journey_cache_customers: 10_000_000,
            journey_sweep_batch: 1_000_000,
            ..ServeConfig::default()
        }
        .check()
        .is_ok());
    }

    #[test]
    fn store_urls_of_tcp_and_unix_sockets_are_accepted() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "redis+unix:///run/redis.sock?db=2",
            "unix:///run/redis.sock",
        ] {
            assert_eq!(url.parse(), Ok(StoreUrl::Redis(url.into())), "{url}");
        }
        assert_eq!("memory".parse(), Ok(StoreUrl::Memory));
    }

    #[test]
    fn tls_and_other_schemes_are_refused_with_what_to_use() {
        let tls = "rediss://:s3cret@h:6380/0".parse::<StoreUrl>().unwrap_err();
        assert!(tls.contains("TLS"), "{tls}");
        assert!(!tls.contains("s3cret"), "{tls}");
        let unparsable = "redis://:s3cret@h:port".parse::<StoreUrl>().unwrap_err();
        assert!(!unparsable.contains("s3cret"), "{unparsable}");
        let other = "http://h/".parse::<StoreUrl>().unwrap_err();
        assert!(other.contains("redis+unix://"), "{other}");
    }

    #[test]
    fn credentials_are_left_out_of_the_displayed_url() {
        let tcp = StoreUrl::Redis("redis://u:s3cret@h:6379/1".into()).to_string();
        assert_eq!(tcp, "redis://h:6379/1");
        let unix = StoreUrl::Redis("redis+unix:///run/r.sock?db=2&user=u&pass=s3cret".into());
        assert_eq!(unix.to_string(), "redis+unix:///run/r.sock?db=2");
        let only = StoreUrl::Redis("redis+unix:///run/r.sock?pass=s3cret".into());
        assert_eq!(only.to_string(), "redis+unix:///run/r.sock");
        assert!(!format!("{only:?}").contains("s3cret"));
        let settings = crate::storage::redis_store::RedisSettings {
            url: "redis+unix:///run/r.sock?db=2&pass=s3cret".into(),
            response_timeout: std::time::Duration::from_secs(1),
            connect_timeout: std::time::Duration::from_secs(1),
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("db=2"),
            "{shown}"
        );
    }
}
