//! The raw baseline (`journey bench run --redis`): each call's Redis work
//! without the service. A task sends the pipelines the Redis store sends
//! for the same call (`storage::redis_raw`) on a connection of its own, as
//! redis-benchmark's clients do, over the same seeded customers; the
//! service's figures are then read as ratios to these.

use std::{sync::Arc, time::Duration};

use super::{error::BenchError, ops::Failure, scenario::Scenario};
use crate::{
    domain::{
        journey::JourneyDefinitions, ContactPolicy, CustomerId, Event, EventLimits, Micros,
        Taxonomy,
    },
    pb,
    storage::{redis_raw::RawRedis, redis_store::RedisSettings, StorageError},
    transport::convert,
};

/// What every raw task shares: the built-in taxonomy (to turn the
/// generated events into stored ones) and the contact look-back.
#[derive(Clone)]
pub struct RawSetup {
    url: String,
    taxonomy: Arc<Taxonomy>,
    journeys: Arc<JourneyDefinitions>,
    contacts_lookback_micros: i64,
}

impl RawSetup {
    /// Checks that `scenario` has a raw form and loads the built-in
    /// taxonomy, journeys and contact policy (the service's defaults).
    pub fn new(url: &str, scenario: Scenario) -> Result<Self, BenchError> {
        if matches!(scenario, Scenario::AppendIdentity | Scenario::Echo) {
            return Err(BenchError::Args(format!(
                "--redis: the {} scenario has no raw form (context, list, check, append, append-batch, append-sessions, mix)",
                scenario.name()
            )));
        }
        let taxonomy = Taxonomy::builtin();
        let journeys = JourneyDefinitions::builtin(&taxonomy)
            .map_err(|e| BenchError::Args(format!("built-in journeys: {e}")))?;
        let policy = ContactPolicy::builtin(&taxonomy)
            .map_err(|e| BenchError::Args(format!("built-in contact policy: {e}")))?;
        Ok(Self {
            url: url.to_string(),
            contacts_lookback_micros: policy.lookback_micros(),
            taxonomy: Arc::new(taxonomy),
            journeys: Arc::new(journeys),
        })
    }

    /// A task's own connection (made on its first call).
    pub fn connect(&self) -> Result<RawRoute, BenchError> {
        let settings = RedisSettings {
            url: self.url.clone(),
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        };
        let redis = RawRedis::open(&settings, (*self.journeys).clone())
            .map_err(|e| BenchError::Args(format!("--redis {}: {e}", self.url)))?;
        Ok(RawRoute {
            redis,
            setup: self.clone(),
        })
    }
}

/// One task's connection to Redis and what it needs to build calls.
pub struct RawRoute {
    redis: RawRedis,
    setup: RawSetup,
}

impl RawRoute {
    pub async fn context(&self, customer: &str, max_events: usize) -> Result<u64, Failure> {
        let since = Micros::now().saturating_sub_micros(self.setup.contacts_lookback_micros);
        Ok(self
            .redis
            .context(&CustomerId::from_trusted(customer), max_events, since)
            .await?)
    }

    pub async fn list(&self, customer: &str, limit: usize) -> Result<u64, Failure> {
        Ok(self
            .redis
            .list(&CustomerId::from_trusted(customer), limit)
            .await?)
    }

    pub async fn check(&self, customer: &str) -> Result<u64, Failure> {
        let since = Micros::now().saturating_sub_micros(self.setup.contacts_lookback_micros);
        self.redis
            .contacts(&CustomerId::from_trusted(customer), since)
            .await?;
        Ok(0)
    }

    /// Stores new events; each must be stored (a duplicate is a failure).
    pub async fn append(&self, events: Vec<pb::Event>) -> Result<u64, Failure> {
        let now = Micros::now();
        let wanted = events.len() as u64;
        let events = events
            .into_iter()
            .map(|e| self.validate(e, now))
            .collect::<Result<Vec<_>, _>>()?;
        let stored = self.redis.append(&events, now).await?;
        if stored != wanted {
            return Err(Failure {
                code: "OUTCOME_DUPLICATE",
                message: format!("{stored} of {wanted} new events stored"),
            });
        }
        Ok(stored)
    }

    fn validate(&self, event: pb::Event, now: Micros) -> Result<Event, Failure> {
        let rejected = |e: crate::domain::DomainError| Failure {
            code: "OUTCOME_REJECTED",
            message: e.to_string(),
        };
        let raw = convert::raw_event(event).map_err(rejected)?;
        let (event, _) = raw
            .validate(&self.setup.taxonomy, &EventLimits::default(), now)
            .map_err(rejected)?;
        Ok(event)
    }
}

impl From<StorageError> for Failure {
    fn from(err: StorageError) -> Self {
        let code = match &err {
            StorageError::Unavailable(_) => "UNAVAILABLE",
            StorageError::Timeout(_) => "DEADLINE_EXCEEDED",
            StorageError::Full(_) => "RESOURCE_EXHAUSTED",
            StorageError::Contention(_) => "ABORTED",
            StorageError::Corrupt(_) => "INTERNAL",
        };
        Self {
            code,
            message: err.to_string(),
        }
    }
}
