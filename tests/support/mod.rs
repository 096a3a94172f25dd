//! Shared test support: a real `redis-server` per test, the journey server
//! in-process on a free loopback port, a round-trip counting proxy, and
//! event builders. Each test binary uses a different part of it.

#![allow(dead_code)]

pub mod banking;
pub mod events;
pub mod journey_server;

/// Stamps each case of the test file's `cases` module (an `async fn` taking
/// a `JourneyServiceClient`) onto every backend given: one module per
/// backend, one test per case, each on a fresh server from the backend's
/// fixture (`async fn() -> Api`).
///
/// `backend_cases!([memory => crate::memory_api, redis => crate::redis_api], [case_a, case_b]);`
#[macro_export]
macro_rules! backend_cases {
    ([$($backend:ident => $fixture:path),* $(,)?], $cases:tt) => {
        $( $crate::backend_cases!(@backend $backend, $fixture, $cases); )*
    };
    (@backend $backend:ident, $fixture:path, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let api = $fixture().await;
                    $crate::cases::$case(api.server.client().await).await;
                }
            )*
        }
    };
}
pub mod proxy;
pub mod redis_server;

use std::time::{Duration, Instant};

use journey::pb::{self, journey_service_client::JourneyServiceClient};
use tonic::transport::Channel;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// Polls the health service until `service` reports the wanted state or
/// 15 s pass; returns whether it did. Polling a condition, not sleeping a
/// fixed time.
pub async fn wait_for_health(
    health: &mut HealthClient<Channel>,
    service: &str,
    serving: bool,
) -> bool {
    let wanted = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let request = HealthCheckRequest {
            service: service.to_string(),
        };
        if let Ok(r) = health.check(request).await {
            if r.into_inner().status() == wanted {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Appends `events` with AppendEvents (1,000 at a time, the default most
/// per call) and asserts that every one was stored.
pub async fn append_all_stored(client: &mut JourneyServiceClient<Channel>, events: Vec<pb::Event>) {
    for chunk in events.chunks(1_000) {
        let results = client
            .append_events(pb::AppendEventsRequest {
                events: chunk.to_vec(),
            })
            .await
            .expect("append")
            .into_inner()
            .results;
        assert!(
            results.iter().all(|r| r.outcome() == pb::Outcome::Stored),
            "{results:?}"
        );
    }
}
