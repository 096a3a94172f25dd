//! The Redis work of one RPC without the service, for the load generator's
//! raw baseline (`journey bench run --redis`): the very pipelines the Redis
//! store sends for a context, a page, a contact check or an append (built
//! by the same functions), sent on a connection of its own, with the
//! replies only checked for errors. What the service adds on top of this
//! is what its performance targets measure.
//!
//! Not part of the service's API: the bench is its only user.

use std::sync::Arc;

use super::{
    commands::Pipeline,
    redis_conn::Frames,
    redis_keys::Keys,
    redis_store::{
        contacts_pipeline, context_pipeline, list_pipeline, CallShape, EventArgs, RedisSettings,
    },
    RedisStore, Retention, StorageError, TimelineQuery,
};
use crate::domain::{journey::JourneyDefinitions, CustomerId, Event, MergeRules, Micros};

/// One connection to Redis sending the store's pipelines.
pub struct RawRedis {
    store: RedisStore,
    journeys: Arc<JourneyDefinitions>,
}

impl RawRedis {
    /// A connection to the Redis at `settings.url`; `journeys` are the
    /// definitions whose states a context reads.
    pub fn open(
        settings: &RedisSettings,
        journeys: JourneyDefinitions,
    ) -> Result<Self, StorageError> {
        Ok(Self {
            // No merge is ever sent: the rules are never read.
            store: RedisStore::open(
                settings,
                Retention::default(),
                MergeRules {
                    unique_types: Default::default(),
                    max_identities: usize::MAX,
                },
            )?,
            journeys: Arc::new(journeys),
        })
    }

    /// A context's reads of `customer`; answers the events read.
    pub async fn context(
        &self,
        customer: &CustomerId,
        max_events: usize,
        contacts_since: Micros,
    ) -> Result<u64, StorageError> {
        let journeys = (!self.journeys.is_empty()).then_some(self.journeys.as_ref());
        let pipe = context_pipeline(&Keys::of(customer), max_events, contacts_since, journeys);
        let mut replies = Frames::new(self.store.conn.query(&pipe).await?);
        replies.next()?; // the alias
        Ok(replies.bulks()?.len() as u64)
    }

    /// A first page of `limit` events of `customer`; answers the events read.
    pub async fn list(&self, customer: &CustomerId, limit: usize) -> Result<u64, StorageError> {
        let query = TimelineQuery {
            customer: customer.clone(),
            start: None,
            end: None,
            channels: Default::default(),
            initiator: None,
            limit,
            after: None,
        };
        let (pipe, _) = list_pipeline(&query);
        let mut replies = Frames::new(self.store.conn.query(&pipe).await?);
        replies.int()?;
        replies.int()?;
        Ok(replies.bulks()?.len() as u64)
    }

    /// A contact check's read of `customer` (in MULTI/EXEC, as a check).
    pub async fn contacts(&self, customer: &CustomerId, since: Micros) -> Result<(), StorageError> {
        let pipe = contacts_pipeline(std::slice::from_ref(customer), since, false);
        let mut replies = Frames::new(self.store.conn.query(&pipe).await?);
        for _ in 0..pipe.len() {
            replies.next()?;
        }
        Ok(())
    }

    /// Appends `events` (validated, placed) with the append script, one
    /// call per customer in one pipeline, without a journey write set;
    /// answers the events stored.
    pub async fn append(&self, events: &[Event], now: Micros) -> Result<u64, StorageError> {
        let mut by_profile: Vec<(&CustomerId, Vec<&Event>)> = Vec::new();
        for event in events {
            match by_profile.iter_mut().find(|(p, _)| **p == event.profile) {
                Some((_, mine)) => mine.push(event),
                None => by_profile.push((&event.profile, vec![event])),
            }
        }
        let mut pipe = Pipeline::new();
        for (profile, mine) in &by_profile {
            let shape = CallShape {
                events: mine.len(),
                ..CallShape::default()
            };
            let call = self
                .store
                .append_call(&mut pipe, &Keys::of(profile), now, shape);
            for event in mine {
                EventArgs::of_event(event).push(call);
            }
        }
        // Each reply is the outcomes, then maybe identities (strings).
        let replies: Vec<Vec<redis::Value>> = self
            .store
            .query_scripts(&self.store.append_script, &pipe)
            .await?;
        Ok(replies
            .iter()
            .flatten()
            .filter(|o| matches!(o, redis::Value::Int(1)))
            .count() as u64)
    }
}
