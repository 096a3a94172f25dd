//! `journey bench echo-server`: the gRPC-only ceiling. It implements the
//! same `JourneyService` with the same server settings and the same
//! server-side schema (`wire`: events as their encoded bytes) as `journey
//! serve`, but answers GetJourneyContext from memory with a context built
//! once (50 events of ~300 bytes and their summary), so a run against it
//! measures tonic, HTTP/2 and prost alone: no store, no decoding. The other
//! RPCs answer UNIMPLEMENTED.

use std::{collections::BTreeMap, future::Future, time::Duration};

use tokio::net::TcpListener;
use tonic::{
    transport::{server::TcpIncoming, Server},
    Request, Response, Status,
};

use super::{error::BenchError, population};
use prost::Message;

use crate::{
    config::ServeConfig,
    domain::{Micros, Taxonomy},
    pb,
    storage::{EncodedEvent, FramedEvents},
    transport::rpc_layer::RpcLayer,
    wire::{
        self,
        journey_service_server::{JourneyService, JourneyServiceServer},
    },
};

/// Events in the canned context: the real service's default `max_events`.
const CONTEXT_EVENTS: u64 = 50;

pub struct EchoService {
    context: wire::GetJourneyContextResponse,
}

impl EchoService {
    pub fn new() -> Self {
        // Decoded into the server-side schema, the events stay as bytes,
        // framed in one run as the service's store hands them over
        // (`FramedEvents`), and so do the fields the service renders once
        // per read (the summary, identities and merges: `wire::ContextHead`
        // and `ContextTail`): each answer clones reference-counted
        // buffers, as the real service answers with the bytes its store
        // returns.
        let bytes = canned_context(Micros::now().0).encode_to_vec();
        let mut context =
            wire::GetJourneyContextResponse::decode(bytes.as_slice()).unwrap_or_default();
        let events: Vec<EncodedEvent> = std::mem::take(&mut context.events)
            .into_iter()
            .map(|e| EncodedEvent(e.0))
            .collect();
        context.events_encoded = FramedEvents::from(&events[..]).framed().clone();
        Self { context }
    }
}

impl Default for EchoService {
    fn default() -> Self {
        Self::new()
    }
}

#[tonic::async_trait]
impl JourneyService for EchoService {
    async fn append_event(
        &self,
        _: Request<wire::AppendEventRequest>,
    ) -> Result<Response<wire::AppendEventResponse>, Status> {
        Err(Status::unimplemented(
            "the echo server only answers GetJourneyContext",
        ))
    }

    async fn append_events(
        &self,
        _: Request<wire::AppendEventsRequest>,
    ) -> Result<Response<wire::AppendEventsResponse>, Status> {
        Err(Status::unimplemented(
            "the echo server only answers GetJourneyContext",
        ))
    }

    async fn get_journey_context(
        &self,
        _: Request<wire::GetJourneyContextRequest>,
    ) -> Result<Response<wire::GetJourneyContextResponse>, Status> {
        // A clone, because tonic takes the message by value; the real
        // service builds a fresh one per call too.
        Ok(Response::new(self.context.clone()))
    }

    async fn list_events(
        &self,
        _: Request<wire::ListEventsRequest>,
    ) -> Result<Response<wire::ListEventsResponse>, Status> {
        Err(Status::unimplemented(
            "the echo server only answers GetJourneyContext",
        ))
    }

    async fn check_contact_frequency(
        &self,
        _: Request<wire::CheckContactRequest>,
    ) -> Result<Response<wire::CheckContactResponse>, Status> {
        Err(Status::unimplemented(
            "the echo server only answers GetJourneyContext",
        ))
    }

    async fn check_contact_frequency_batch(
        &self,
        _: Request<wire::CheckContactBatchRequest>,
    ) -> Result<Response<wire::CheckContactBatchResponse>, Status> {
        Err(Status::unimplemented(
            "the echo server only answers GetJourneyContext",
        ))
    }

    async fn link_identities(
        &self,
        _: Request<wire::LinkIdentitiesRequest>,
    ) -> Result<Response<wire::LinkIdentitiesResponse>, Status> {
        Err(Status::unimplemented(
            "the echo server only answers GetJourneyContext",
        ))
    }

    async fn unlink_identity(
        &self,
        _: Request<wire::UnlinkIdentityRequest>,
    ) -> Result<Response<wire::UnlinkIdentityResponse>, Status> {
        Err(Status::unimplemented(
            "the echo server only answers GetJourneyContext",
        ))
    }

    async fn list_journey_definitions(
        &self,
        _: Request<wire::ListJourneyDefinitionsRequest>,
    ) -> Result<Response<wire::ListJourneyDefinitionsResponse>, Status> {
        Err(Status::unimplemented(
            "the echo server only answers GetJourneyContext",
        ))
    }

    async fn get_journey_stats(
        &self,
        _: Request<wire::GetJourneyStatsRequest>,
    ) -> Result<Response<wire::GetJourneyStatsResponse>, Status> {
        Err(Status::unimplemented(
            "the echo server only answers GetJourneyContext",
        ))
    }

    async fn list_journeys(
        &self,
        _: Request<wire::ListJourneysRequest>,
    ) -> Result<Response<wire::ListJourneysResponse>, Status> {
        Err(Status::unimplemented(
            "the echo server only answers GetJourneyContext",
        ))
    }

    async fn forget_customer(
        &self,
        _: Request<wire::ForgetCustomerRequest>,
    ) -> Result<Response<wire::ForgetCustomerResponse>, Status> {
        Err(Status::unimplemented(
            "the echo server only answers GetJourneyContext",
        ))
    }
}

/// A context shaped like the real service's for a seeded customer: events
/// newest first, per-channel counts, first and last seen, last interactions.
fn canned_context(now: i64) -> pb::GetJourneyContextResponse {
    let mut events: Vec<pb::Event> = (0..CONTEXT_EVENTS)
        .map(|j| population::seeded_event(0, 0, j, now))
        .collect();
    let micros = |e: &pb::Event| {
        e.occurred_at
            .as_ref()
            .map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos / 1_000))
    };
    events.sort_by_key(|e| std::cmp::Reverse(micros(e)));
    let taxonomy = Taxonomy::builtin();
    let mut channels: BTreeMap<String, pb::ChannelSummary> = BTreeMap::new();
    for event in &events {
        let summary = channels
            .entry(event.channel.clone())
            .or_insert_with(|| pb::ChannelSummary {
                channel: event.channel.clone(),
                channel_class: taxonomy
                    .channel_class(&event.channel)
                    .map_or("unknown", |c| c.as_str())
                    .to_string(),
                last_interaction_at: event.occurred_at,
                ..pb::ChannelSummary::default()
            });
        if event.initiator == pb::Initiator::Customer as i32 {
            summary.customer_initiated += 1;
        } else {
            summary.company_initiated += 1;
        }
    }
    let latest_by = |who: pb::Initiator| events.iter().find(|e| e.initiator == who as i32).cloned();
    // The company contacts' counts, as the real context answers them.
    const DAY: i64 = 86_400_000_000;
    let mut counts = pb::ContactCounts::default();
    for event in events
        .iter()
        .filter(|e| e.initiator == pb::Initiator::Company as i32)
    {
        let age = now - micros(event);
        let within = |span: i64| u64::from(age <= span);
        let channel = counts.per_channel.entry(event.channel.clone()).or_default();
        for (total, per_channel, span) in [
            (&mut counts.last_24h, &mut channel.last_24h, DAY),
            (&mut counts.last_7d, &mut channel.last_7d, 7 * DAY),
            (&mut counts.last_30d, &mut channel.last_30d, 30 * DAY),
        ] {
            *total += within(span);
            *per_channel += within(span);
        }
    }
    // A journey under way, as the built-in ones leave in a seeded
    // customer's context (a login starts the banking one).
    let at = |micros: i64| {
        Some(prost_types::Timestamp {
            seconds: micros.div_euclid(1_000_000),
            nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
        })
    };
    let journeys = vec![pb::JourneyState {
        journey: "personal_data_verification".into(),
        state: pb::JourneyStatus::InProgress as i32,
        current_step: "prompted".into(),
        started_at: at(now - 10 * 60_000_000),
        last_progress_at: at(now - 9 * 60_000_000),
        last_event_id: events
            .first()
            .map(|e| e.event_id.clone())
            .unwrap_or_default(),
        channels: vec!["web".into()],
        deadline: at(now + 21 * 60_000_000),
        steps_reached: vec!["signed_in".into(), "prompted".into()],
        ..pb::JourneyState::default()
    }];
    pb::GetJourneyContextResponse {
        customer_id: population::customer_id(0),
        channels: channels.into_values().collect(),
        first_seen: events.last().and_then(|e| e.occurred_at),
        last_seen: events.first().and_then(|e| e.occurred_at),
        total_events: events.len() as u64,
        last_customer_interaction: latest_by(pb::Initiator::Customer),
        last_company_contact: latest_by(pb::Initiator::Company),
        contact_counts: Some(counts),
        journeys,
        profile_id: population::customer_id(0),
        identities: Vec::new(),
        merges: Vec::new(),
        events,
    }
}

/// Serves the echo service on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BenchError> {
    // The real server's limits, from the same defaults `journey serve` uses.
    let config = ServeConfig::default();
    let service = JourneyServiceServer::new(EchoService::new())
        .max_decoding_message_size(config.max_message_bytes);
    // The same middleware as the service's (without metrics), so the two
    // differ only by what their handlers do.
    Server::builder()
        .timeout(Duration::from_millis(config.request_timeout_ms))
        .layer(RpcLayer::new(None, config.max_in_flight_total).per_connection(config.max_in_flight))
        .add_service(service)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_context_looks_like_a_real_one() {
        let context = canned_context(Micros::now().0);
        assert_eq!(context.events.len(), CONTEXT_EVENTS as usize);
        assert!(!context.channels.is_empty());
        assert!(context.last_customer_interaction.is_some());
        let seconds = |t: Option<prost_types::Timestamp>| t.map_or(0, |t| t.seconds);
        assert!(seconds(context.first_seen) <= seconds(context.last_seen));
        // The parts a seeded customer's real context has too.
        let counts = context.contact_counts.as_ref().expect("counts");
        assert!(counts.last_30d > 0 && !counts.per_channel.is_empty());
        assert_eq!(context.journeys.len(), 1);
        // ~300 bytes an event, plus the summary.
        let size = context.encoded_len();
        assert!((12_000..20_000).contains(&size), "encoded size {size}");
    }
}
