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
    try_call(channel, pool, method, json)
        .await
        .expect("call succeeds")
}

/// A call from JSON, as grpcurl makes it; panics only on a JSON that the
/// schema does not read.
async fn try_call(
    channel: &Channel,
    pool: &DescriptorPool,
    method: &str,
    json: serde_json::Value,
) -> Result<serde_json::Value, Status> {
    let service = pool
        .get_service_by_name("journey.v1.JourneyService")
        .expect("service in schema");
    let method = service
        .methods()
        .find(|m| m.name() == method)
        .expect("method in schema");
    let input: MessageDescriptor = method.input();
    let request = DynamicMessage::deserialize(input, json.clone())
        .unwrap_or_else(|e| panic!("{method:?} cannot read {json}: {e}", method = method.name()));
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let path = format!("/journey.v1.JourneyService/{}", method.name())
        .parse()
        .expect("path");
    let reply = grpc
        .unary(tonic::Request::new(request.encode_to_vec()), path, RawCodec)
        .await?
        .into_inner();
    let response = DynamicMessage::decode(method.output(), reply.as_slice()).expect("decode");
    Ok(serde_json::to_value(&response).expect("to JSON"))
}

/// The server's schema as grpcurl builds it: the file holding the service,
/// then each imported file the answers do not hold yet.
async fn schema(channel: &Channel) -> DescriptorPool {
    let MessageResponse::FileDescriptorResponse(files) = ask(
        channel,
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
            ask(channel, MessageRequest::FileByFilename(missing.clone())).await
        else {
            panic!("the server cannot describe {missing}");
        };
        protos.extend(more.file_descriptor_proto.iter().map(decode));
    }
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(protos)
        .expect("schema builds");
    pool
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

    let pool = schema(&channel).await;

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

/// The README's grpcurl lines for the journey service, in order: the method
/// and the JSON given with `-d` (`{}` without it).
fn readme_grpcurl_calls() -> Vec<(String, serde_json::Value)> {
    let readme = include_str!("../README.md").replace("\\\n", " ");
    readme
        .lines()
        .filter(|line| line.starts_with("grpcurl ") && line.contains("journey.v1.JourneyService/"))
        .map(|line| {
            let method = line
                .rsplit("journey.v1.JourneyService/")
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                .expect("a method")
                .to_string();
            let json = match line.split_once("-d '") {
                Some((_, rest)) => {
                    let text = rest.split_once('\'').expect("closing quote").0;
                    serde_json::from_str(text)
                        .unwrap_or_else(|e| panic!("README JSON for {method}: {e}: {text}"))
                }
                None => serde_json::json!({}),
            };
            (method, json)
        })
        .collect()
}

/// Moves every `occurredAt` of a README example to yesterday, keeping its
/// time of day, so the examples stay within retention whatever the date.
fn recent(value: &mut serde_json::Value, yesterday: &str) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(text) if key == "occurredAt" => {
                        let time = text.split_once('T').expect("an RFC 3339 instant").1;
                        *text = format!("{yesterday}T{time}");
                    }
                    other => recent(other, yesterday),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| recent(v, yesterday)),
        _ => {}
    }
}

/// Every grpcurl example of the README reads against the served schema and
/// succeeds, in the README's order, on a fresh server with the defaults: a
/// renamed field or enum value, or an example the service refuses, fails
/// here. The lookup by phone names a customer nobody linked: NOT_FOUND.
#[tokio::test]
async fn the_readme_grpcurl_examples_work() {
    let server = JourneyServer::memory().await;
    let channel = server.channel().await;
    let pool = schema(&channel).await;
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let calls = readme_grpcurl_calls();
    let methods: Vec<&str> = calls.iter().map(|(m, _)| m.as_str()).collect();
    let service = pool
        .get_service_by_name("journey.v1.JourneyService")
        .expect("service in schema");
    for rpc in service.methods() {
        assert!(
            methods.contains(&rpc.name()),
            "the README has no grpcurl example of {}",
            rpc.name()
        );
    }
    for (method, mut json) in calls {
        recent(&mut json, &yesterday);
        let by_identity = json.pointer("/customer/identity").is_some();
        match try_call(&channel, &pool, &method, json.clone()).await {
            // AppendEvents answers OK with a verdict per event.
            Ok(reply) => assert!(
                !reply.to_string().contains("OUTCOME_REJECTED"),
                "{method} {json}: {reply}"
            ),
            Err(status) if by_identity && status.code() == tonic::Code::NotFound => {}
            Err(status) => panic!("{method} {json}: {status:?}"),
        }
    }
}
