//! The metrics endpoint (`--metrics-listen`) of a server in-process, scraped
//! over HTTP: calls counted by method and status code and timed, a path no
//! service serves counted under `unknown`, events by outcome and contact
//! decisions as answered, calls beyond `--max-in-flight-total` refused and
//! counted, a stream counted when it ends,
//! a stop with scrapers connected, and, on a real redis-server, the
//! context cache's lookups, the journey states cache's stale writes, and
//! the Redis connection's round trips and reconnections.

mod support;

use std::time::{Duration, Instant};

use journey::{
    config::{ServeConfig, StoreUrl},
    domain::TaxonomyMode,
    pb::{self, journey_service_client::JourneyServiceClient},
    server,
};
use support::{
    events::{banking_step, base_micros, page_view},
    journey_server::JourneyServer,
    redis_server::RedisServer,
};
use tonic::transport::Channel;

/// The value of the sample `name` whose labels include every one of
/// `labels`; `None` when there is none.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, value)| value.parse().ok())
}

fn journey_call<'a>(method: &'a str, code: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("grpc_service", "journey.v1.JourneyService"),
        ("grpc_method", method),
        ("grpc_code", code),
    ]
}

async fn scrape(server: &JourneyServer) -> String {
    let (status, body) = server.metrics_get("/metrics").await;
    assert!(status.contains(" 200 "), "scrape answered {status:?}");
    body
}

/// Calls a method no service has, as a client built for another version
/// of the API would.
async fn call_unknown_method(channel: Channel) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    grpc.unary::<(), (), _>(
        tonic::Request::new(()),
        "/journey.v1.JourneyService/NoSuchMethod"
            .parse()
            .expect("path"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .expect_err("no such method")
}

#[tokio::test]
async fn calls_are_counted_by_method_and_status_and_timed() {
    let server = JourneyServer::start_with_metrics(ServeConfig::default()).await;
    let before = scrape(&server).await;
    assert_eq!(
        sample(
            &before,
            "grpc_server_handled_total",
            &journey_call("AppendEvent", "OK")
        ),
        Some(0.0),
        "every method's series is there from the start"
    );
    let channel = server.channel().await;
    let mut client = JourneyServiceClient::new(channel.clone());
    client
        .append_event(pb::AppendEventRequest {
            event: Some(page_view("c1", "e1", base_micros())),
        })
        .await
        .expect("append");
    let refused = client
        .get_journey_context(pb::GetJourneyContextRequest::default())
        .await
        .expect_err("no customer");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        call_unknown_method(channel).await.code(),
        tonic::Code::Unimplemented
    );

    let text = scrape(&server).await;
    let handled = |labels: &[(&str, &str)]| sample(&text, "grpc_server_handled_total", labels);
    assert_eq!(handled(&journey_call("AppendEvent", "OK")), Some(1.0));
    assert_eq!(
        handled(&journey_call("GetJourneyContext", "InvalidArgument")),
        Some(1.0)
    );
    assert_eq!(handled(&journey_call("GetJourneyContext", "OK")), Some(0.0));
    assert_eq!(
        handled(&[
            ("grpc_service", "unknown"),
            ("grpc_method", "unknown"),
            ("grpc_code", "Unimplemented")
        ]),
        Some(1.0),
        "a path no service serves is counted, under no name the client chose"
    );
    assert!(
        !text.contains("NoSuchMethod"),
        "the client's path is no label"
    );
    let timed = [
        ("grpc_service", "journey.v1.JourneyService"),
        ("grpc_method", "AppendEvent"),
    ];
    assert_eq!(
        sample(&text, "grpc_server_handling_seconds_count", &timed),
        Some(1.0)
    );
    let seconds = sample(&text, "grpc_server_handling_seconds_sum", &timed).expect("sum");
    assert!(seconds > 0.0 && seconds < 60.0, "took {seconds} s");
    assert!(
        !text.contains("journey_context_cache"),
        "the memory store has no context cache"
    );
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics ends so");
    // The process's own figures (the test's process: the server is in it).
    let rss = sample(&text, "process_resident_memory_bytes", &[]).expect("rss");
    assert!(rss > 1_048_576.0, "{rss} B resident");
    let fds = sample(&text, "process_open_fds", &[]).expect("fds");
    assert!(fds >= 4.0, "listeners and a connection at least: {fds}");
    assert!(sample(&text, "process_cpu_seconds_total", &[]).is_some_and(|s| s >= 0.0));

    let (status, _) = server.metrics_get("/other").await;
    assert!(status.contains(" 404 "), "answered {status:?}");
}

#[tokio::test]
async fn events_and_contact_decisions_are_counted() {
    let server = JourneyServer::start_with_metrics(ServeConfig {
        taxonomy_mode: TaxonomyMode::Lenient,
        ..ServeConfig::default()
    })
    .await;
    let mut client = server.client().await;
    let at = base_micros();
    let mut unknown_channel = page_view("c1", "e3", at + 2);
    unknown_channel.channel = "pigeon_post".into();
    let results = client
        .append_events(pb::AppendEventsRequest {
            events: vec![
                page_view("c1", "e1", at),
                page_view("c1", "e2", at + 1),
                page_view("c1", "e1", at),
                unknown_channel,
                page_view("", "e4", at),
            ],
        })
        .await
        .expect("append")
        .into_inner()
        .results;
    let outcomes: Vec<_> = results.iter().map(|r| r.outcome()).collect();
    use pb::Outcome::*;
    assert_eq!(outcomes, [Stored, Stored, Duplicate, Stored, Rejected]);
    let refused = client
        .append_event(pb::AppendEventRequest {
            event: Some(page_view("", "e5", at)),
        })
        .await
        .expect_err("no customer");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // Reservations until the policy says no, at noon yesterday (UTC):
    // outside any quiet hours, inside retention.
    let day = 86_400 * 1_000_000;
    let noon = (base_micros() / day - 1) * day + day / 2;
    let check = pb::CheckContactRequest {
        customer_id: "c2".into(),
        channel: "email".into(),
        reason: "campaign_offer".into(),
        reserve: true,
        at: Some(support::events::timestamp(noon)),
        ..Default::default()
    };
    let mut allowed = 0.0;
    loop {
        let answer = client
            .check_contact_frequency(check.clone())
            .await
            .expect("check")
            .into_inner();
        if !answer.allowed {
            break;
        }
        allowed += 1.0;
        assert!(allowed < 50.0, "the policy never said no");
    }
    assert!(allowed >= 1.0);
    // A batch: one decision per customer (c2 is at its cap, c3 is new).
    let batch = client
        .check_contact_frequency_batch(pb::CheckContactBatchRequest {
            customer_ids: vec!["c2".into(), "c3".into()],
            channel: check.channel.clone(),
            reason: check.reason.clone(),
            at: check.at,
            ..Default::default()
        })
        .await
        .expect("batch")
        .into_inner()
        .results;
    let says: Vec<_> = batch.iter().map(|r| r.allowed).collect();
    assert_eq!(says, [false, true]);

    let text = scrape(&server).await;
    let events = |outcome| sample(&text, "journey_events_total", &[("outcome", outcome)]);
    assert_eq!(events("stored"), Some(3.0));
    assert_eq!(events("duplicate"), Some(1.0));
    assert_eq!(events("rejected"), Some(2.0));
    assert_eq!(sample(&text, "journey_unknown_names_total", &[]), Some(1.0));
    let decisions = |decision| {
        sample(
            &text,
            "journey_contact_decisions_total",
            &[("decision", decision)],
        )
    };
    assert_eq!(decisions("allowed"), Some(allowed + 1.0));
    assert_eq!(decisions("blocked"), Some(2.0));
    assert_eq!(
        sample(&text, "journey_contact_reservations_total", &[]),
        Some(allowed)
    );
}

/// A server on its own Redis with `limits` set, and customer c1 stored.
async fn limited_server(redis: &RedisServer, limits: ServeConfig) -> JourneyServer {
    let server = JourneyServer::start_with_metrics(ServeConfig {
        store: StoreUrl::Redis(redis.url()),
        redis_timeout_ms: 10_000,
        request_timeout_ms: 60_000,
        ..limits
    })
    .await;
    server
        .client()
        .await
        .append_event(pb::AppendEventRequest {
            event: Some(page_view("c1", "e1", base_micros())),
        })
        .await
        .expect("append");
    server
}

/// Redis holds every command for `ms`, so each call reaching it holds its
/// slot that long (the pause only has to outlast the calls' arrival).
fn pause_redis(redis: &RedisServer, ms: u64) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("ALL")
        .query(&mut redis.connection())
        .expect("pause");
}

type Client = pb::journey_service_client::JourneyServiceClient<Channel>;

async fn read_c1(client: &Client) -> Result<pb::GetJourneyContextResponse, tonic::Status> {
    client
        .clone()
        .get_journey_context(pb::GetJourneyContextRequest {
            customer_id: "c1".into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Exactly one of two answers is a RESOURCE_EXHAUSTED refusal whose
/// message holds `why`, and the metrics count it beside `ok` answered.
async fn one_refused_and_counted(
    server: &JourneyServer,
    answers: [&Result<pb::GetJourneyContextResponse, tonic::Status>; 2],
    why: &str,
    ok: f64,
) {
    let refused: Vec<_> = answers
        .into_iter()
        .filter_map(|answer| answer.as_ref().err())
        .collect();
    assert_eq!(refused.len(), 1, "{answers:?}");
    assert_eq!(refused[0].code(), tonic::Code::ResourceExhausted);
    assert!(refused[0].message().contains(why), "{:?}", refused[0]);
    let text = scrape(server).await;
    let handled = |code| {
        sample(
            &text,
            "grpc_server_handled_total",
            &journey_call("GetJourneyContext", code),
        )
    };
    assert_eq!(handled("ResourceExhausted"), Some(1.0));
    assert_eq!(handled("OK"), Some(ok));
}

#[tokio::test]
async fn calls_beyond_the_servers_limit_are_refused_and_counted() {
    let redis = RedisServer::start();
    let limits = ServeConfig {
        max_in_flight_total: 1,
        ..ServeConfig::default()
    };
    let server = limited_server(&redis, limits).await;
    let client = server.client().await;
    // The first context read holds the server's only slot while Redis is
    // paused, so the second is refused at once.
    pause_redis(&redis, 5_000);
    let (a, b) = tokio::join!(read_c1(&client), read_c1(&client));
    one_refused_and_counted(&server, [&a, &b], "--max-in-flight-total", 1.0).await;
}

/// `--max-in-flight` bounds the calls under way on one connection: a
/// second call on a busy connection is refused at once and counted, while
/// another connection is served.
#[tokio::test]
async fn calls_beyond_a_connections_limit_are_refused_and_counted() {
    let redis = RedisServer::start();
    let limits = ServeConfig {
        max_in_flight: 1,
        ..ServeConfig::default()
    };
    let server = limited_server(&redis, limits).await;
    let (busy, other) = (server.client().await, server.client().await);
    pause_redis(&redis, 2_000);
    let (a, b, c) = tokio::join!(read_c1(&busy), read_c1(&busy), read_c1(&other));
    let c = c.expect("another connection is served");
    assert_eq!(c.customer_id, "c1");
    one_refused_and_counted(
        &server,
        [&a, &b],
        "this connection has 1 calls under way (--max-in-flight)",
        2.0,
    )
    .await;
}

#[tokio::test]
async fn a_stream_is_counted_when_it_ends() {
    let server = JourneyServer::start_with_metrics(ServeConfig::default()).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("watch")
        .into_inner();
    watch.message().await.expect("a status").expect("one");
    let watched = [
        ("grpc_service", "grpc.health.v1.Health"),
        ("grpc_method", "Watch"),
    ];
    let text = scrape(&server).await;
    assert_eq!(
        sample(&text, "grpc_server_handling_seconds_count", &watched),
        Some(0.0),
        "a stream still open is not counted yet"
    );
    // The client leaves: the server hears the reset, then counts it.
    drop(watch);
    let deadline = Instant::now() + Duration::from_secs(10);
    let canceled = [watched[0], watched[1], ("grpc_code", "Canceled")];
    let ok = [watched[0], watched[1], ("grpc_code", "OK")];
    loop {
        let text = scrape(&server).await;
        if sample(&text, "grpc_server_handled_total", &canceled) == Some(1.0) {
            assert_eq!(sample(&text, "grpc_server_handled_total", &ok), Some(0.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream the client left was not counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_server_stops_with_scrapers_connected() {
    use tokio::io::AsyncWriteExt;
    let server = JourneyServer::start_with_metrics(ServeConfig::default()).await;
    let addr = server.metrics_addr.expect("metrics");
    // One scraper that keeps its connection alive after a scrape, and one
    // that connected and sent nothing.
    let mut alive = tokio::net::TcpStream::connect(addr).await.expect("connect");
    alive
        .write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let _silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    scrape(&server).await;
    tokio::time::timeout(Duration::from_secs(20), server.stop())
        .await
        .expect("the server stops, its metrics endpoint too")
        .expect("cleanly");
}

#[tokio::test]
async fn a_metrics_address_taken_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("addr");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = ServeConfig {
        metrics_listen: Some(address),
        ..ServeConfig::default()
    };
    let error = server::run(config, listener, async {})
        .await
        .expect_err("the metrics address is taken");
    assert!(
        matches!(error, server::ServeError::MetricsListen { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&address.to_string()), "{error}");
}

#[tokio::test]
async fn the_redis_stores_caches_are_reported() {
    let redis = RedisServer::start();
    let config = |cache_mib| ServeConfig {
        store: StoreUrl::Redis(redis.url()),
        context_cache_mib: cache_mib,
        redis_timeout_ms: 5_000,
        request_timeout_ms: 60_000,
        // The test's events are an hour old, past a built-in journey's
        // inactivity timeout: a sweep between the appends would write a
        // version of the states too.
        journey_sweep_interval_ms: 3_600_000,
        ..ServeConfig::default()
    };
    let measured = JourneyServer::start_with_metrics(config(16)).await;
    let other = JourneyServer::start(config(0)).await;
    let mut a = measured.client().await;
    let mut b = other.client().await;
    let at = base_micros();
    // The journey states: the measured instance writes first (a new
    // customer, nothing to be stale), the other one next, so the measured
    // instance's copy is one version behind at its second write.
    for (by_measured, step, id) in [(true, 0, "e1"), (false, 1, "e2"), (true, 2, "e3")] {
        let client = if by_measured { &mut a } else { &mut b };
        client
            .append_event(pb::AppendEventRequest {
                event: Some(banking_step("c1", step, id, at + step as i64)),
            })
            .await
            .expect("append");
    }
    let text = scrape(&measured).await;
    assert_eq!(
        sample(&text, "journey_states_cache_stale_writes_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "journey_states_cache_entries", &[]),
        Some(1.0)
    );
    assert!(sample(&text, "journey_states_cache_bytes", &[]).is_some_and(|b| b > 0.0));

    // The context cache serves once its invalidation listener is
    // subscribed: read until a read is a hit.
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let request = pb::GetJourneyContextRequest {
            customer_id: "c1".into(),
            ..Default::default()
        };
        a.get_journey_context(request).await.expect("context");
        let text = scrape(&measured).await;
        let hits = sample(
            &text,
            "journey_context_cache_lookups_total",
            &[("result", "hit")],
        );
        if hits.is_some_and(|h| h > 0.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no context was answered from memory: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lookups = |result| {
        sample(
            &text,
            "journey_context_cache_lookups_total",
            &[("result", result)],
        )
        .unwrap_or(-1.0)
    };
    assert!(lookups("miss") >= 1.0, "the first read served was a miss");
    let reads = lookups("hit") + lookups("miss") + lookups("off");
    let answered = sample(
        &text,
        "grpc_server_handled_total",
        &journey_call("GetJourneyContext", "OK"),
    )
    .unwrap_or(-1.0);
    assert_eq!(reads, answered, "every context read is one lookup");
    assert_eq!(
        sample(&text, "journey_context_cache_entries", &[]),
        Some(1.0)
    );

    // The store's Redis connection: its round trips, and a reconnection
    // after Redis dropped every client.
    let trips = sample(&text, "journey_redis_round_trip_seconds_count", &[]).unwrap_or(0.0);
    assert!(trips >= 4.0, "three appends and the reads: {trips}");
    assert_eq!(
        sample(
            &text,
            "journey_redis_round_trip_seconds_bucket",
            &[("le", "+Inf")]
        ),
        Some(trips)
    );
    let connects = sample(&text, "journey_redis_connects_total", &[]).expect("connects");
    assert!(connects >= 1.0);
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut redis.connection())
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // The first write after the cut may fail with it; a later one
        // reconnects.
        let _ = a
            .append_event(pb::AppendEventRequest {
                event: Some(page_view("c9", "e9", at)),
            })
            .await;
        let text = scrape(&measured).await;
        if sample(&text, "journey_redis_connects_total", &[]).is_some_and(|n| n > connects) {
            break;
        }
        assert!(Instant::now() < deadline, "no reconnection counted: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
