//! A black-box client that knows only server reflection, as grpcurl or
//! Postman would: it fetches the schema from the server, builds requests
//! from JSON with dynamic messages, appends an event and reads it back with
//! its microsecond timestamp intact.

mod support;

use bytes::{Buf, BufMut};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use support::journey_server::JourneyServer;
use tokio_stream::StreamExt;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
    Status,
};
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest,
};

/// Asks reflection one question and returns the answer.
async fn ask(channel: &Channel, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    answers
        .next()
        .await
        .expect("an answer")
        .expect("answer ok")
        .message_response
        .expect("answer body")
}

/// Raw protobuf bytes in and out: the schema is only known at run time.
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn call(
    channel: &Channel,
    pool: &DescriptorPool,
    method: &str,
    json: serde_json::Value,
) -> serde_json::Value {
    let service = pool
        .get_service_by_name("journey.v1.JourneyService")
        .expect("service in schema");
    let method = service
        .methods()
        .find(|m| m.name() == method)
        .expect("method in schema");
    let input: MessageDescriptor = method.input();
    let request = DynamicMessage::deserialize(input, json).expect("request from JSON");
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let path = format!("/journey.v1.JourneyService/{}", method.name())
        .parse()
        .expect("path");
    let reply = grpc
        .unary(tonic::Request::new(request.encode_to_vec()), path, RawCodec)
        .await
        .expect("call succeeds")
        .into_inner();
    let response = DynamicMessage::decode(method.output(), reply.as_slice()).expect("decode");
    serde_json::to_value(&response).expect("to JSON")
}

#[tokio::test]
async fn a_reflection_only_client_appends_and_reads_back() {
    let server = JourneyServer::memory().await;
    let channel = server.channel().await;

    let MessageResponse::ListServicesResponse(list) =
        ask(&channel, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"journey.v1.JourneyService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );

    let MessageResponse::FileDescriptorResponse(files) = ask(
        &channel,
        MessageRequest::FileContainingSymbol("journey.v1.JourneyService".into()),
    )
    .await
    else {
        panic!("expected file descriptors");
    };
    // Like grpcurl: ask for each imported file the answers do not hold yet.
    let decode = |bytes: &Vec<u8>| {
        prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("descriptor")
    };
    let mut protos: Vec<_> = files.file_descriptor_proto.iter().map(decode).collect();
    while let Some(missing) = protos
        .iter()
        .flat_map(|p| p.dependency.iter())
        .find(|d| !protos.iter().any(|p| p.name() == d.as_str()))
        .cloned()
    {
        let MessageResponse::FileDescriptorResponse(more) =
            ask(&channel, MessageRequest::FileByFilename(missing.clone())).await
        else {
            panic!("the server cannot describe {missing}");
        };
        protos.extend(more.file_descriptor_proto.iter().map(decode));
    }
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(protos)
        .expect("schema builds");

    // A minute ago, with 123456 µs: e.g. 2026-11-22T10:00:00.123456Z.
    let minute_ago = journey::domain::Micros::now().0 - 60_000_000;
    let at = journey::domain::Micros(minute_ago - minute_ago.rem_euclid(1_000_000) + 123_456);
    let stamp = at.to_string();
    let appended = call(
        &channel,
        &pool,
        "AppendEvent",
        serde_json::json!({"event": {
            "eventId": "r1", "customerId": "reflect", "channel": "chat",
            "reason": "complaint", "type": "chat_message",
            "initiator": "INITIATOR_CUSTOMER", "occurredAt": stamp,
            "attributes": {"sentiment": "-0.5"}
        }}),
    )
    .await;
    assert_eq!(appended["eventId"], "r1");

    let context = call(
        &channel,
        &pool,
        "GetJourneyContext",
        serde_json::json!({"customerId": "reflect"}),
    )
    .await;
    assert_eq!(context["events"][0]["eventId"], "r1");
    assert_eq!(context["events"][0]["occurredAt"], stamp.as_str());
    assert_eq!(context["channels"][0]["channelClass"], "online");
}

/// Older tools speak reflection v1alpha: it is served too.
#[tokio::test]
async fn reflection_v1alpha_is_served() {
    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient as AlphaClient,
        server_reflection_request::MessageRequest as AlphaRequest,
        server_reflection_response::MessageResponse as AlphaResponse,
        ServerReflectionRequest as AlphaReflectionRequest,
    };
    let server = JourneyServer::memory().await;
    let mut client = AlphaClient::new(server.channel().await);
    let request = AlphaReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha call")
        .into_inner();
    let answer = answers.next().await.expect("answer").expect("ok");
    let Some(AlphaResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list");
    };
    assert!(list
        .service
        .iter()
        .any(|s| s.name == "journey.v1.JourneyService"));
}
