//! `journey bench seed`: loads the population through AppendEvents batches,
//! several in flight. Events are laid out customer by customer, so a batch
//! of 100 holds a few customers' consecutive events, as a bulk import would.

use std::time::Instant;

use futures::{stream, StreamExt, TryStreamExt};
use serde::Serialize;

use super::{channels, error::BenchError, population, SeedArgs};
use crate::{domain::Micros, pb, pb::journey_service_client::JourneyServiceClient};

/// What a seeding did.
#[derive(Debug, Clone, Serialize)]
pub struct SeedSummary {
    pub customers: u64,
    pub events: u64,
    pub stored: u64,
    /// Already there from an earlier seeding with the same seed.
    pub duplicate: u64,
    pub seconds: f64,
    pub events_per_s: f64,
}

impl SeedSummary {
    pub fn line(&self) -> String {
        format!(
            "seeded {} customers, {} events ({} stored, {} duplicate) in {:.2} s: {:.0} events/s",
            self.customers,
            self.events,
            self.stored,
            self.duplicate,
            self.seconds,
            self.events_per_s
        )
    }
}

pub async fn seed(args: &SeedArgs) -> Result<SeedSummary, BenchError> {
    if args.concurrency == 0 || args.batch_size == 0 {
        return Err(BenchError::Args(
            "--concurrency and --batch-size must be at least 1".into(),
        ));
    }
    let pool =
        channels::connect(&args.target, args.concurrency.min(channels::MAX_CHANNELS)).await?;
    let total = args.customers * args.events_per_customer;
    let batch = args.batch_size as u64;
    let now = Micros::now().0;
    let started = Instant::now();
    let counts: Vec<(u64, u64)> = stream::iter(0..total.div_ceil(batch))
        .map(|b| {
            let mut client = JourneyServiceClient::new(pool[(b as usize) % pool.len()].clone());
            let events: Vec<pb::Event> = (b * batch..((b + 1) * batch).min(total))
                .map(|k| {
                    let (customer, j) =
                        (k / args.events_per_customer, k % args.events_per_customer);
                    population::seeded_event(args.seed, customer, j, now)
                })
                .collect();
            async move {
                let response = client
                    .append_events(pb::AppendEventsRequest { events })
                    .await
                    .map_err(|status| BenchError::Rpc {
                        what: "AppendEvents",
                        status,
                    })?
                    .into_inner();
                outcome_counts(&response)
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect()
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let stored = counts.iter().map(|c| c.0).sum();
    let duplicate = counts.iter().map(|c| c.1).sum();
    Ok(SeedSummary {
        customers: args.customers,
        events: total,
        stored,
        duplicate,
        seconds,
        events_per_s: total as f64 / seconds.max(1e-9),
    })
}

/// (stored, duplicate) of one batch; a rejected event stops the seeding,
/// since the population would not be what the runs assume.
fn outcome_counts(response: &pb::AppendEventsResponse) -> Result<(u64, u64), BenchError> {
    let mut counts = (0, 0);
    for result in &response.results {
        match pb::Outcome::try_from(result.outcome) {
            Ok(pb::Outcome::Stored) => counts.0 += 1,
            Ok(pb::Outcome::Duplicate) => counts.1 += 1,
            _ => {
                return Err(BenchError::Rejected(format!(
                    "{}: {}",
                    result.event_id, result.error
                )))
            }
        }
    }
    Ok(counts)
}
