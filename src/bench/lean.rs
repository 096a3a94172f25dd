//! Lean decoding of read responses. The load generator only counts the
//! events a read returns, so it keeps them as encoded bytes instead of
//! decoding each into a `pb::Event` (ten strings and a map). That keeps its
//! own CPU per call low, which matters on a machine it shares with the
//! server it measures: what it saves is left to the server.

use bytes::Bytes;
use tonic::{client::Grpc, codegen::http::uri::PathAndQuery, transport::Channel, Request, Status};

pub const GET_JOURNEY_CONTEXT: &str = "/journey.v1.JourneyService/GetJourneyContext";
pub const LIST_EVENTS: &str = "/journey.v1.JourneyService/ListEvents";

/// Field 1 of both `GetJourneyContextResponse` and `ListEventsResponse`,
/// the events, left encoded; prost skips the other fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventsOnly {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub events: Vec<Bytes>,
}

/// Sends a unary read to `path`; returns how many events it answered.
pub async fn read_events<Req>(
    grpc: &mut Grpc<Channel>,
    path: &'static str,
    request: Req,
) -> Result<u64, Status>
where
    Req: prost::Message + Send + 'static,
{
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<Req, EventsOnly>::default();
    let response = grpc
        .unary(
            Request::new(request),
            PathAndQuery::from_static(path),
            codec,
        )
        .await?;
    Ok(response.into_inner().events.len() as u64)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb;

    #[test]
    fn counts_the_events_of_a_full_context() {
        let full = pb::GetJourneyContextResponse {
            events: vec![pb::Event::default(), pb::Event::default()],
            customer_id: "c1".into(),
            total_events: 9,
            last_customer_interaction: Some(pb::Event::default()),
            ..pb::GetJourneyContextResponse::default()
        };
        let lean = EventsOnly::decode(full.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(lean.events.len(), 2);
    }
}
