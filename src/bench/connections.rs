//! `journey bench connections`: opens many client connections at once, makes
//! one call on each so every HTTP/2 connection is fully set up, holds them,
//! and reports the resident memory of the given processes (the server) with
//! all of them open: the "RSS with 1,000 connections" figure.

use std::time::Duration;

use serde::Serialize;

use super::{channels::connect, error::BenchError, population};
use crate::pb::{self, journey_service_client::JourneyServiceClient};

#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionsArgs {
    /// The server, `HOST:PORT` or `http://HOST:PORT`.
    #[arg(long)]
    pub target: String,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1_000)]
    pub count: usize,
    /// Seconds to hold them open before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub hold: f64,
    /// Processes whose resident memory is reported (e.g. the server).
    #[arg(long, value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Calls go to customers among the first N seeded ones.
    #[arg(long, default_value_t = 10)]
    pub customers: u64,
}

#[derive(Debug, Serialize)]
pub struct ConnectionsReport {
    pub connections: usize,
    pub failed_calls: usize,
    /// VmRSS in KiB of each pid, before opening and with all connections open.
    pub rss_kib_before: Vec<(u32, u64)>,
    pub rss_kib_open: Vec<(u32, u64)>,
}

fn rss_of(pids: &[u32]) -> Result<Vec<(u32, u64)>, BenchError> {
    pids.iter()
        .map(|&p| super::cpu::rss_kib(p).map(|r| (p, r)))
        .collect()
}

pub async fn hold(args: &ConnectionsArgs) -> Result<ConnectionsReport, BenchError> {
    let before = rss_of(&args.pids)?;
    let channels = connect(&args.target, args.count).await?;
    let mut failed = 0;
    let mut calls = Vec::with_capacity(channels.len());
    for (i, channel) in channels.iter().enumerate() {
        let mut client = JourneyServiceClient::new(channel.clone());
        let customer = population::customer_id(i as u64 % args.customers.max(1));
        calls.push(tokio::spawn(async move {
            client
                .get_journey_context(pb::GetJourneyContextRequest {
                    customer_id: customer,
                    max_events: 1,
                    ..Default::default()
                })
                .await
        }));
    }
    for call in calls {
        if !matches!(call.await, Ok(Ok(_))) {
            failed += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(args.hold.max(0.0))).await;
    let open = rss_of(&args.pids)?;
    drop(channels);
    Ok(ConnectionsReport {
        connections: args.count,
        failed_calls: failed,
        rss_kib_before: before,
        rss_kib_open: open,
    })
}
