//! End-to-end tests of `journey.v1.JourneyService` through the generated
//! client, against a server on the memory store and one on a per-test
//! redis-server. Every bad input is shown to fail with INVALID_ARGUMENT,
//! name its field, and store nothing.

mod support;

use journey::pb;
use support::{journey_server::JourneyServer, redis_server::RedisServer};

pub use support::journey_server::{memory_api, redis_api};

mod cases {
    use std::collections::BTreeMap;

    use journey::pb::{self, journey_service_client::JourneyServiceClient};
    use tonic::{transport::Channel, Code, Status};
    use tonic_types::StatusExt;

    use crate::support::events::{base_micros, campaign_email, page_view, timestamp};

    type Client = JourneyServiceClient<Channel>;

    fn append(event: pb::Event) -> pb::AppendEventRequest {
        pb::AppendEventRequest { event: Some(event) }
    }

    fn context(customer: &str) -> pb::GetJourneyContextRequest {
        pb::GetJourneyContextRequest {
            customer_id: customer.into(),
            max_events: 0,
            ..Default::default()
        }
    }

    fn list(customer: &str) -> pb::ListEventsRequest {
        pb::ListEventsRequest {
            customer_id: customer.into(),
            ..Default::default()
        }
    }

    /// The field a BadRequest detail names.
    fn bad_field(status: &Status) -> String {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let details = status.get_error_details();
        let bad = details.bad_request().expect("BadRequest details");
        bad.field_violations[0].field.clone()
    }

    async fn held(client: &mut Client, customer: &str) -> Option<u64> {
        match client.get_journey_context(context(customer)).await {
            Ok(r) => Some(r.into_inner().total_events),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => panic!("unexpected status {s:?}"),
        }
    }

    pub async fn append_and_read_back(mut client: Client) {
        let at = base_micros();
        let mut event = page_view("c1", "", at);
        // Nanoseconds below the microsecond are truncated.
        event.occurred_at = Some(prost_types::Timestamp {
            nanos: 123_456_789,
            ..timestamp(at - at.rem_euclid(1_000_000))
        });
        let stored = client
            .append_event(append(event.clone()))
            .await
            .expect("append")
            .into_inner();
        assert!(!stored.duplicate);
        assert_eq!(
            stored.event_id.len(),
            26,
            "a ULID is assigned: {}",
            stored.event_id
        );

        event.event_id = stored.event_id.clone();
        let again = client
            .append_event(append(event))
            .await
            .expect("append")
            .into_inner();
        assert!(again.duplicate);
        assert_eq!(again.event_id, stored.event_id);

        let ctx = client
            .get_journey_context(context("c1"))
            .await
            .expect("ctx")
            .into_inner();
        assert_eq!(ctx.total_events, 1);
        assert_eq!(ctx.events.len(), 1);
        let got = &ctx.events[0];
        assert_eq!(got.event_id, stored.event_id);
        assert_eq!(got.occurred_at.map(|t| t.nanos), Some(123_456_000));
        assert_eq!(
            got.attributes.get("page").map(String::as_str),
            Some("/accounts")
        );
        assert_eq!(ctx.channels.len(), 1);
        assert_eq!(ctx.channels[0].channel, "web");
        assert_eq!(ctx.channels[0].channel_class, "online");
        assert_eq!(ctx.channels[0].customer_initiated, 1);
        assert_eq!(
            ctx.last_customer_interaction.as_ref().map(|e| &e.event_id),
            Some(&stored.event_id)
        );
        assert!(ctx.last_company_contact.is_none());
        assert_eq!(ctx.first_seen, got.occurred_at);
    }

    pub async fn batch_reports_each_event(mut client: Client) {
        let at = base_micros();
        let mut bad = page_view("c1", "b1", at);
        bad.channel = "carrier_pigeon".into();
        let events = vec![
            page_view("c1", "a1", at),
            bad,
            page_view("c1", "a1", at),
            campaign_email("c2", "m1", at + 1),
        ];
        let results = client
            .append_events(pb::AppendEventsRequest { events })
            .await
            .expect("batch")
            .into_inner()
            .results;
        let outcomes: Vec<pb::Outcome> = results.iter().map(|r| r.outcome()).collect();
        assert_eq!(
            outcomes,
            vec![
                pb::Outcome::Stored,
                pb::Outcome::Rejected,
                pb::Outcome::Duplicate,
                pb::Outcome::Stored
            ]
        );
        assert!(
            results[1]
                .error
                .starts_with("events[1].channel: unknown channel"),
            "{}",
            results[1].error
        );
        assert_eq!(results[1].event_id, "b1");
        assert_eq!(held(&mut client, "c1").await, Some(1));
        let c2 = client
            .get_journey_context(context("c2"))
            .await
            .expect("ctx")
            .into_inner();
        assert_eq!(c2.channels[0].company_initiated, 1);
        assert_eq!(
            c2.last_company_contact.map(|e| e.event_id).as_deref(),
            Some("m1")
        );
    }

    pub async fn batch_over_the_limit_is_refused(mut client: Client) {
        let events = (0..1_001)
            .map(|i| page_view("c1", &format!("e{i}"), base_micros()))
            .collect();
        let status = client
            .append_events(pb::AppendEventsRequest { events })
            .await
            .expect_err("over the limit");
        assert_eq!(bad_field(&status), "events");
        assert_eq!(held(&mut client, "c1").await, None);
    }

    pub async fn bad_events_are_refused_and_store_nothing(mut client: Client) {
        let at = base_micros();
        let good = || page_view("victim", "e1", at);
        let with = |f: &dyn Fn(&mut pb::Event)| {
            let mut e = good();
            f(&mut e);
            e
        };
        let attrs = |pairs: Vec<(String, String)>| -> BTreeMap<String, String> {
            pairs.into_iter().collect()
        };
        let cases: Vec<(&str, pb::Event)> = vec![
            ("event.customer_id", with(&|e| e.customer_id = "x\u{7}y".into())),
            ("event.customer_id", with(&|e| e.customer_id = "c".repeat(129))),
            ("event.event_id", with(&|e| e.event_id = "e".repeat(129))),
            ("event.event_id", with(&|e| e.event_id = "a\tb".into())),
            ("event.channel", with(&|e| e.channel = "fax".into())),
            ("event.reason", with(&|e| e.reason = "boredom".into())),
            ("event.type", with(&|e| e.r#type = "teleport".into())),
            ("event.initiator", with(&|e| e.initiator = pb::Initiator::Company as i32)),
            ("event.initiator", with(&|e| e.initiator = 7)),
            ("event.occurred_at", with(&|e| e.occurred_at = None)),
            ("event.occurred_at", with(&|e| e.occurred_at = Some(timestamp(-1)))),
            ("event.occurred_at", with(&|e| e.occurred_at = Some(timestamp(at + 2 * 3_600_000_000)))),
            ("event.occurred_at", with(&|e| e.occurred_at = Some(prost_types::Timestamp { seconds: 1, nanos: -5 }))),
            ("event.occurred_at", with(&|e| e.occurred_at = Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }))),
            ("event.attributes", with(&|e| {
                e.attributes = attrs((0..65).map(|i| (format!("k{i}"), "v".into())).collect())
            })),
            ("event.attributes.kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", with(&|e| {
                e.attributes.insert("k".repeat(65), "v".into());
            })),
            ("event.attributes.big", with(&|e| {
                e.attributes.insert("big".into(), "v".repeat(1_025));
            })),
            ("event", with(&|e| {
                e.attributes = attrs((0..20).map(|i| (format!("k{i}"), "v".repeat(1_000))).collect());
                e.attributes.insert("page".into(), "/".into());
            })),
            ("event.attributes.sentiment", with(&|e| {
                e.channel = "chat".into();
                e.r#type = "chat_message".into();
                e.attributes = attrs(vec![("sentiment".into(), "1.5".into())]);
            })),
            ("event.attributes.page", with(&|e| e.attributes.clear())),
        ];
        for (field, event) in cases {
            let status = client
                .append_event(append(event.clone()))
                .await
                .expect_err(field);
            assert_eq!(bad_field(&status), field, "{status:?}");
            // The batch path rejects the same event with the same field.
            let results = client
                .append_events(pb::AppendEventsRequest {
                    events: vec![event],
                })
                .await
                .expect("batch answers")
                .into_inner()
                .results;
            assert_eq!(results[0].outcome(), pb::Outcome::Rejected);
            let batch_field = field.replacen("event", "events[0]", 1);
            assert!(
                results[0].error.starts_with(&format!("{batch_field}:")),
                "{}",
                results[0].error
            );
        }
        let missing_customer = with(&|e| e.customer_id.clear());
        let status = client
            .append_event(append(missing_customer))
            .await
            .expect_err("no customer");
        assert_eq!(bad_field(&status), "event.customer_id");
        let status = client
            .append_event(pb::AppendEventRequest { event: None })
            .await
            .expect_err("no event");
        assert_eq!(bad_field(&status), "event");
        assert_eq!(
            held(&mut client, "victim").await,
            None,
            "nothing was stored"
        );
        // And the good event is accepted, so the cases above failed for
        // the reason they name.
        client
            .append_event(append(good()))
            .await
            .expect("good event");
        assert_eq!(held(&mut client, "victim").await, Some(1));
    }

    pub async fn bad_reads_are_refused(mut client: Client) {
        client
            .append_event(append(page_view("c1", "e1", base_micros())))
            .await
            .expect("append");
        let ctx = |customer: &str, max_events: u32| pb::GetJourneyContextRequest {
            customer_id: customer.into(),
            max_events,
            ..Default::default()
        };
        let status = client
            .get_journey_context(ctx("c1", 1_001))
            .await
            .expect_err("too many");
        assert_eq!(bad_field(&status), "max_events");
        let status = client
            .get_journey_context(ctx("", 0))
            .await
            .expect_err("no customer");
        assert_eq!(bad_field(&status), "customer_id");

        let cases: Vec<(&str, pb::ListEventsRequest)> = vec![
            (
                "page_size",
                pb::ListEventsRequest {
                    page_size: 1_001,
                    ..list("c1")
                },
            ),
            (
                "page_token",
                pb::ListEventsRequest {
                    page_token: "garbage!".into(),
                    ..list("c1")
                },
            ),
            (
                "page_token",
                pb::ListEventsRequest {
                    page_token: "AQID".into(),
                    ..list("c1")
                },
            ),
            (
                "channels[1]",
                pb::ListEventsRequest {
                    channels: vec!["web".into(), "fax".into()],
                    ..list("c1")
                },
            ),
            (
                "initiator",
                pb::ListEventsRequest {
                    initiator: 9,
                    ..list("c1")
                },
            ),
            (
                "end_time",
                pb::ListEventsRequest {
                    start_time: Some(timestamp(2_000_000)),
                    end_time: Some(timestamp(1_000_000)),
                    ..list("c1")
                },
            ),
            (
                "start_time",
                pb::ListEventsRequest {
                    start_time: Some(prost_types::Timestamp {
                        seconds: 0,
                        nanos: 2_000_000_000,
                    }),
                    ..list("c1")
                },
            ),
            ("customer_id", list("")),
        ];
        for (field, request) in cases {
            let status = client.list_events(request).await.expect_err(field);
            assert_eq!(bad_field(&status), field);
        }
    }

    pub async fn unknown_customer_is_not_found(mut client: Client) {
        let status = client
            .get_journey_context(context("nobody"))
            .await
            .expect_err("unknown");
        assert_eq!(status.code(), Code::NotFound);
        let status = client
            .list_events(list("nobody"))
            .await
            .expect_err("unknown");
        assert_eq!(status.code(), Code::NotFound);
    }

    pub async fn list_pages_through_the_timeline(mut client: Client) {
        let at = base_micros();
        let events: Vec<pb::Event> = (0..7)
            .map(|i| {
                if i % 2 == 0 {
                    page_view("c1", &format!("e{i}"), at + i)
                } else {
                    campaign_email("c1", &format!("e{i}"), at + i)
                }
            })
            .collect();
        client
            .append_events(pb::AppendEventsRequest { events })
            .await
            .expect("append");
        let mut seen = Vec::new();
        let mut request = pb::ListEventsRequest {
            page_size: 3,
            ..list("c1")
        };
        loop {
            let page = client
                .list_events(request.clone())
                .await
                .expect("list")
                .into_inner();
            assert!(page.events.len() <= 3);
            seen.extend(page.events.into_iter().map(|e| e.event_id));
            if page.next_page_token.is_empty() {
                break;
            }
            request.page_token = page.next_page_token;
        }
        assert_eq!(seen, ["e6", "e5", "e4", "e3", "e2", "e1", "e0"]);

        let company = client
            .list_events(pb::ListEventsRequest {
                initiator: pb::Initiator::Company as i32,
                channels: vec!["email".into()],
                start_time: Some(timestamp(at + 2)),
                end_time: Some(timestamp(at + 5)),
                ..list("c1")
            })
            .await
            .expect("list")
            .into_inner();
        let ids: Vec<String> = company.events.into_iter().map(|e| e.event_id).collect();
        assert_eq!(ids, ["e3"]);
        assert!(company.next_page_token.is_empty());
    }

    /// A request body sent as given, to send bytes the generated client
    /// would never encode.
    #[derive(Clone, Debug, Default, PartialEq)]
    struct Raw(Vec<u8>);

    impl prost::Message for Raw {
        fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
            buf.put_slice(&self.0);
        }

        fn merge_field(
            &mut self,
            tag: u32,
            wire_type: prost::encoding::WireType,
            buf: &mut impl bytes::Buf,
            ctx: prost::encoding::DecodeContext,
        ) -> Result<(), prost::DecodeError> {
            prost::encoding::skip_field(wire_type, tag, buf, ctx)
        }

        fn encoded_len(&self) -> usize {
            self.0.len()
        }

        fn clear(&mut self) {
            self.0.clear();
        }
    }

    async fn raw_call<R: prost::Message + Default + Send + 'static>(
        channel: &Channel,
        method: &'static str,
        body: Vec<u8>,
    ) -> Result<R, Status> {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("ready");
        grpc.unary(
            tonic::Request::new(Raw(body)),
            tonic::codegen::http::uri::PathAndQuery::from_static(method),
            tonic_prost::ProstCodec::<Raw, R>::default(),
        )
        .await
        .map(tonic::Response::into_inner)
    }

    /// An event whose own bytes are not protobuf, inside a well-formed
    /// request, is refused alone: INVALID_ARGUMENT for AppendEvent,
    /// REJECTED in a batch whose other events are stored.
    pub async fn a_malformed_event_is_refused_alone(channel: Channel) {
        use prost::Message;
        // Field 1 (an event) of 2 bytes: a string field claiming 5.
        let broken = [0x0a, 0x02, 0x0a, 0x05];
        let mut batch = pb::AppendEventsRequest {
            events: vec![page_view("c1", "g1", base_micros())],
        }
        .encode_to_vec();
        batch.extend_from_slice(&broken);
        let results = raw_call::<pb::AppendEventsResponse>(
            &channel,
            "/journey.v1.JourneyService/AppendEvents",
            batch,
        )
        .await
        .expect("the request itself decodes")
        .results;
        let outcomes: Vec<pb::Outcome> = results.iter().map(|r| r.outcome()).collect();
        assert_eq!(outcomes, vec![pb::Outcome::Stored, pb::Outcome::Rejected]);
        assert!(
            results[1].error.starts_with("events[1]: not a valid Event"),
            "{}",
            results[1].error
        );

        let status = raw_call::<pb::AppendEventResponse>(
            &channel,
            "/journey.v1.JourneyService/AppendEvent",
            broken.to_vec(),
        )
        .await
        .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("not a valid Event"), "{status:?}");

        let mut client = JourneyServiceClient::new(channel.clone());
        assert_eq!(held(&mut client, "c1").await, Some(1));

        // A request whose own bytes do not decode is bad input too, not
        // the server's fault: INVALID_ARGUMENT, naming the request.
        for (method, body) in [
            ("/journey.v1.JourneyService/AppendEvent", vec![0xff, 0xff]),
            ("/journey.v1.JourneyService/AppendEvents", vec![0x0a, 0x05]),
            // customer_id (field 1) of invalid UTF-8.
            (
                "/journey.v1.JourneyService/GetJourneyContext",
                vec![0x0a, 0x02, 0xc3, 0x28],
            ),
        ] {
            let status = raw_call::<pb::AppendEventResponse>(&channel, method, body)
                .await
                .expect_err("refused");
            assert_eq!(status.code(), Code::InvalidArgument, "{method}: {status:?}");
            assert!(
                status.message().starts_with("request: not a valid message"),
                "{method}: {status:?}"
            );
        }
        assert_eq!(held(&mut client, "c1").await, Some(1), "nothing stored");
    }

    pub async fn health_reports_serving(channel: Channel) {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        for service in ["", "journey.v1.JourneyService"] {
            let status = crate::support::wait_for_health(&mut health, service, true).await;
            assert!(status, "{service} serving");
        }
    }
}

macro_rules! api_cases {
    ($backend:ident, $fixture:path) => {
        mod $backend {
            api_cases!(@case append_and_read_back, $fixture);
            api_cases!(@case batch_reports_each_event, $fixture);
            api_cases!(@case batch_over_the_limit_is_refused, $fixture);
            api_cases!(@case bad_events_are_refused_and_store_nothing, $fixture);
            api_cases!(@case bad_reads_are_refused, $fixture);
            api_cases!(@case unknown_customer_is_not_found, $fixture);
            api_cases!(@case list_pages_through_the_timeline, $fixture);

            #[tokio::test]
            async fn a_malformed_event_is_refused_alone() {
                let api = $fixture().await;
                crate::cases::a_malformed_event_is_refused_alone(api.server.channel().await).await;
            }

            #[tokio::test]
            async fn health_reports_serving() {
                let api = $fixture().await;
                crate::cases::health_reports_serving(api.server.channel().await).await;
            }
        }
    };
    (@case $case:ident, $fixture:path) => {
        #[tokio::test]
        async fn $case() {
            let api = $fixture().await;
            crate::cases::$case(api.server.client().await).await;
            api.server.stop().await.expect("clean shutdown");
        }
    };
}

api_cases!(memory, crate::memory_api);
api_cases!(redis, crate::redis_api);

/// With Redis gone the server reports NOT_SERVING and answers UNAVAILABLE;
/// when Redis is back it serves again.
#[tokio::test]
async fn redis_outage_is_reported_and_recovered() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let server = JourneyServer::start(journey::config::ServeConfig {
        store: journey::config::StoreUrl::Redis(redis.url()),
        health_interval_ms: 100,
        redis_timeout_ms: 2_000,
        ..Default::default()
    })
    .await;
    let channel = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut client = pb::journey_service_client::JourneyServiceClient::new(channel);
    assert!(support::wait_for_health(&mut health, "", true).await);

    redis.kill();
    assert!(support::wait_for_health(&mut health, "", false).await);
    let status = client
        .append_event(pb::AppendEventRequest {
            event: Some(support::events::page_view(
                "c1",
                "e1",
                support::events::base_micros(),
            )),
        })
        .await
        .expect_err("store down");
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        ),
        "{status:?}"
    );
    assert!(
        !status.message().contains("127.0.0.1"),
        "no backend detail leaks: {status:?}"
    );

    let _again = RedisServer::start_on(port);
    assert!(support::wait_for_health(&mut health, "", true).await);
    client
        .append_event(pb::AppendEventRequest {
            event: Some(support::events::page_view(
                "c1",
                "e1",
                support::events::base_micros(),
            )),
        })
        .await
        .expect("store back");
}

/// The keepalive settings of the keepalive tests: a PING after 200 ms
/// without a frame, 200 ms for its answer.
fn quick_keepalive() -> journey::config::ServeConfig {
    journey::config::ServeConfig {
        keepalive_interval_ms: 200,
        keepalive_timeout_ms: 200,
        ..Default::default()
    }
}

/// A peer that stops answering (a host gone without a word) has its
/// connection closed by the server's keepalive, instead of holding it, and
/// whatever its calls held, until the process ends.
#[tokio::test]
async fn keepalive_closes_the_connection_of_a_silent_peer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = JourneyServer::start(quick_keepalive()).await;
    let mut socket = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    // The HTTP/2 client preface and an empty SETTINGS frame; then nothing,
    // not even the acknowledgement of the server's SETTINGS or PING.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    socket.write_all(&hello).await.expect("preface");
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut sink = [0u8; 1024];
        loop {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closed the silent connection");
    server.stop().await.expect("clean shutdown");
}

/// A live peer answers the PINGs: its connection stays open through idle
/// time several times the interval and its timeout, and serves the next
/// call on the same connection (a raw HTTP/2 client, which, unlike a tonic
/// channel, would not connect again behind the test's back).
#[tokio::test]
async fn keepalive_keeps_the_connection_of_a_live_peer() {
    let server = JourneyServer::start(quick_keepalive()).await;
    let socket = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(socket).await.expect("handshake");
    // Driven all along, so the server's PINGs are answered.
    let driver = tokio::spawn(connection);
    let addr = server.addr;
    let health_check = |client: h2::client::SendRequest<bytes::Bytes>| async move {
        let mut client = client.ready().await.expect("the connection is open");
        let request = tonic::codegen::http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let (response, mut body) = client.send_request(request, false).expect("sent");
        // An empty HealthCheckRequest: uncompressed, zero bytes long.
        body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .expect("body");
        let response = response.await.expect("answered on the same connection");
        assert_eq!(response.status(), 200);
        client
    };
    let client = health_check(client).await;
    // Idle for three rounds of PING and answer window.
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let _client = health_check(client).await;
    assert!(!driver.is_finished(), "the connection is still up");
    server.stop().await.expect("clean shutdown");
}

/// The memory store's cap holds for every kind of write: events, and the
/// identities and profiles that links make without events. A write past it
/// is RESOURCE_EXHAUSTED and stores nothing.
#[tokio::test]
async fn a_full_memory_store_refuses_writes_with_resource_exhausted() {
    use support::events::{base_micros, page_view};
    let server = JourneyServer::start(journey::config::ServeConfig {
        memory_max_events: 5,
        ..journey::config::ServeConfig::default()
    })
    .await;
    let mut client = server.client().await;
    let at = base_micros();
    // Two profiles and three events: 5 of 5.
    support::append_all_stored(
        &mut client,
        vec![
            page_view("c1", "e1", at),
            page_view("c1", "e2", at + 1),
            page_view("c2", "e3", at + 2),
        ],
    )
    .await;
    let cookie = |value: &str| pb::Identity {
        r#type: "cookie_id".into(),
        value: value.into(),
    };
    // A new profile and two identities would make 8.
    let status = client
        .link_identities(pb::LinkIdentitiesRequest {
            identities: vec![cookie("k1"), cookie("k2")],
        })
        .await
        .expect_err("no room for the link");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("limit is 5"), "{status:?}");
    let status = client
        .append_event(pb::AppendEventRequest {
            event: Some(page_view("c3", "e4", at + 3)),
        })
        .await
        .expect_err("no room for a new customer and its event");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let lookup = client
        .get_journey_context(pb::GetJourneyContextRequest {
            customer: Some(pb::CustomerRef {
                r#ref: Some(pb::customer_ref::Ref::Identity(cookie("k1"))),
            }),
            ..Default::default()
        })
        .await
        .expect_err("nothing was linked");
    assert_eq!(lookup.code(), tonic::Code::NotFound);
    server.stop().await.expect("clean shutdown");
}

/// The event limits are settings: lowered, an event within the defaults but
/// past them is refused, naming the field; one within them is stored.
#[tokio::test]
async fn the_event_limits_follow_the_settings() {
    use support::events::{base_micros, page_view};
    use tonic_types::StatusExt;
    let server = JourneyServer::start(journey::config::ServeConfig {
        max_attributes: 2,
        max_attribute_value_bytes: 9,
        max_event_bytes: 150,
        ..journey::config::ServeConfig::default()
    })
    .await;
    let mut client = server.client().await;
    let at = base_micros();
    // A page view carries one attribute: page = "/accounts" (9 bytes).
    let with = |event_id: &str, extra: &[(&str, &str)]| {
        let mut event = page_view("c1", event_id, at);
        for (key, value) in extra {
            event.attributes.insert((*key).into(), (*value).into());
        }
        event
    };
    let cases = [
        ("event.attributes", with("e1", &[("a", "1"), ("b", "2")])),
        ("event.attributes.a", with("e2", &[("a", "0123456789")])),
        // Within each attribute limit; only the whole event is too large.
        ("event", with(&"e".repeat(100), &[("a", "012345678")])),
    ];
    for (field, event) in cases {
        let status = client
            .append_event(pb::AppendEventRequest { event: Some(event) })
            .await
            .expect_err(field);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let details = status.get_error_details();
        let violation = &details.bad_request().expect("BadRequest").field_violations[0];
        assert_eq!(violation.field, field, "{status:?}");
    }
    support::append_all_stored(&mut client, vec![with("ok", &[("a", "012345678")])]).await;
    server.stop().await.expect("clean shutdown");
}

/// A request message past `--max-message-bytes` is refused before it is
/// buffered whole, with tonic's OUT_OF_RANGE, and stores nothing.
#[tokio::test]
async fn a_message_over_the_size_setting_is_out_of_range() {
    use support::events::{base_micros, page_view};
    let server = JourneyServer::start(journey::config::ServeConfig {
        max_message_bytes: 100_000,
        ..journey::config::ServeConfig::default()
    })
    .await;
    let mut client = server.client().await;
    let at = base_micros();
    // 500 events of ~300 bytes: ~150 KB.
    let events: Vec<_> = (0..500)
        .map(|i| {
            let mut event = page_view("c1", &format!("e{i}"), at + i);
            event.attributes.insert("note".into(), "n".repeat(200));
            event
        })
        .collect();
    let Err(status) = client
        .append_events(pb::AppendEventsRequest { events })
        .await
    else {
        panic!("a request over the setting was taken");
    };
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    let read = client
        .get_journey_context(pb::GetJourneyContextRequest {
            customer_id: "c1".into(),
            ..Default::default()
        })
        .await
        .expect_err("nothing stored");
    assert_eq!(read.code(), tonic::Code::NotFound);
    server.stop().await.expect("clean shutdown");
}

/// Requests made of many empty repeated entries (2 bytes each on the wire,
/// tens in memory) are refused before they are decoded: an event's
/// encoding past what its limits admit is INVALID_ARGUMENT, a small
/// request past 64 KiB RESOURCE_EXHAUSTED. A refusal that quotes a huge
/// input stays INVALID_ARGUMENT. Requests of the usual size pass.
#[tokio::test]
async fn oversized_repeated_fields_are_refused_before_decoding() {
    use support::events::{base_micros, page_view};
    let server = JourneyServer::start(journey::config::ServeConfig::default()).await;
    let mut client = server.client().await;
    let mut event = page_view("c1", "e1", base_micros());
    event.identities = vec![pb::Identity::default(); 300_000];
    let status = client
        .append_event(pb::AppendEventRequest { event: Some(event) })
        .await
        .expect_err("600 KB of empty identities");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("encoding"), "{status:?}");

    let status = client
        .link_identities(pb::LinkIdentitiesRequest {
            identities: vec![pb::Identity::default(); 100_000],
        })
        .await
        .expect_err("200 KB of empty identities");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let status = client
        .list_events(pb::ListEventsRequest {
            customer_id: "c1".into(),
            channels: vec![String::new(); 100_000],
            ..Default::default()
        })
        .await
        .expect_err("200 KB of empty channels");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    // A refusal quoting a huge input (a 10 KB attribute key) is clipped:
    // whole, its headers would pass a client's limit and the call be
    // reset, seen as UNAVAILABLE.
    let mut event = page_view("c1", "e3", base_micros());
    event.attributes.insert("k".repeat(10_000), "v".into());
    let status = client
        .append_event(pb::AppendEventRequest { event: Some(event) })
        .await
        .expect_err("a 10 KB key");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let status = client
        .list_events(pb::ListEventsRequest {
            customer_id: "c1".into(),
            channels: vec!["x".repeat(10_000)],
            ..Default::default()
        })
        .await
        .expect_err("a 10 KB channel");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // Within the limits: answered as before (nothing linked yet: a link
    // of one customer id alone is refused on its count, not its size).
    let status = client
        .link_identities(pb::LinkIdentitiesRequest {
            identities: vec![pb::Identity {
                r#type: "customer_id".into(),
                value: "c1".into(),
            }],
        })
        .await
        .expect_err("one identity");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    support::append_all_stored(&mut client, vec![page_view("c1", "e2", base_micros())]).await;
    server.stop().await.expect("clean shutdown");
}
