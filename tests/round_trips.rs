//! Each RPC costs one Redis round trip, counted by a TCP proxy between the
//! service and a per-test redis-server.

mod support;

use journey::{
    config::{ServeConfig, StoreUrl},
    pb,
};
use support::{
    events::{banking_step, base_micros, campaign_email, page_view},
    journey_server::JourneyServer,
    proxy::CountingProxy,
    redis_server::RedisServer,
};

/// A server whose Redis traffic goes through `proxy`, ready (its one
/// health ping done), with no periodic Redis work during the test.
async fn instance(
    proxy: &CountingProxy,
) -> (
    JourneyServer,
    pb::journey_service_client::JourneyServiceClient<tonic::transport::Channel>,
) {
    let server = JourneyServer::start(ServeConfig {
        store: StoreUrl::Redis(proxy.url()),
        health_interval_ms: 3_600_000,
        journey_sweep_interval_ms: 3_600_000,
        redis_timeout_ms: 5_000,
        ..ServeConfig::default()
    })
    .await;
    let channel = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    assert!(support::wait_for_health(&mut health, "", true).await);
    let client = pb::journey_service_client::JourneyServiceClient::new(channel);
    (server, client)
}

#[tokio::test]
async fn every_rpc_is_one_redis_round_trip() {
    let redis = RedisServer::start();
    let proxy = CountingProxy::start(redis.port).await;
    let (_server, mut client) = instance(&proxy).await;
    let at = base_micros();

    // Warm-up: the first append loads the script (EVALSHA answered by
    // NOSCRIPT, SCRIPT LOAD, EVALSHA again): three round trips, which also
    // shows the proxy tells sequential commands apart.
    let before = proxy.round_trips();
    client
        .append_event(pb::AppendEventRequest {
            event: Some(page_view("warm", "w", at)),
        })
        .await
        .expect("warm-up");
    assert_eq!(proxy.round_trips() - before, 3, "script loading");

    let count = |label: &'static str| {
        let before = proxy.round_trips();
        move |proxy: &CountingProxy| assert_eq!(proxy.round_trips() - before, 1, "{label}")
    };

    let check = count("AppendEvent");
    client
        .append_event(pb::AppendEventRequest {
            event: Some(page_view("c1", "e1", at)),
        })
        .await
        .expect("append");
    check(&proxy);

    let check = count("AppendEvents over three customers");
    let events = vec![
        page_view("c1", "e2", at + 1),
        campaign_email("c2", "e3", at + 2),
        page_view("c3", "e4", at + 3),
        page_view("c1", "e5", at + 4),
    ];
    support::append_all_stored(&mut client, events).await;
    check(&proxy);

    let check = count("GetJourneyContext");
    let ctx = client
        .get_journey_context(pb::GetJourneyContextRequest {
            customer_id: "c1".into(),
            max_events: 50,
            ..Default::default()
        })
        .await
        .expect("context")
        .into_inner();
    assert_eq!(ctx.total_events, 3);
    check(&proxy);

    let check = count("ListEvents with a cursor and filters");
    let first = client
        .list_events(pb::ListEventsRequest {
            customer_id: "c1".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    check(&proxy);
    let check = count("ListEvents second page");
    let second = client
        .list_events(pb::ListEventsRequest {
            customer_id: "c1".into(),
            page_size: 1,
            channels: vec!["web".into()],
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(second.events[0].event_id, "e2");
    check(&proxy);

    let check = count("CheckContactFrequency");
    let answer = client
        .check_contact_frequency(pb::CheckContactRequest {
            customer_id: "c2".into(),
            channel: "email".into(),
            ..Default::default()
        })
        .await
        .expect("check")
        .into_inner();
    assert!(answer.found);
    check(&proxy);

    // Reserve mode: the read, then the compare-and-set (the first one also
    // loads its script).
    let reserve = || pb::CheckContactRequest {
        customer_id: "c2".into(),
        channel: "email".into(),
        reserve: true,
        ..Default::default()
    };
    let first = client.check_contact_frequency(reserve()).await;
    assert!(first.expect("reserve").into_inner().allowed);
    let before = proxy.round_trips();
    let answer = client
        .check_contact_frequency(reserve())
        .await
        .expect("reserve")
        .into_inner();
    assert!(answer.allowed && !answer.reservation_id.is_empty());
    assert_eq!(proxy.round_trips() - before, 2, "reserve mode");

    // A 10,000-customer list review: ten pipelines of 1,000 customers. The
    // proxy may see a pipeline this large as two bursts when Redis starts
    // answering before the write ends, so the bound allows for that; one
    // round trip per customer would be 10,000.
    let before = proxy.round_trips();
    let results = client
        .check_contact_frequency_batch(pb::CheckContactBatchRequest {
            customer_ids: (0..10_000).map(|i| format!("x{i}")).collect(),
            channel: "email".into(),
            ..Default::default()
        })
        .await
        .expect("batch")
        .into_inner()
        .results;
    assert_eq!(results.len(), 10_000);
    let trips = proxy.round_trips() - before;
    assert!((10..=20).contains(&trips), "batch took {trips} round trips");

    // An event whose identities are all linked to its profile already:
    // one round trip to resolve them, one to append.
    let with_cookie = |id: &str| {
        let mut e = page_view("c1", id, at + 9);
        e.identities = vec![pb::Identity {
            r#type: "cookie_id".into(),
            value: "ck-1".into(),
        }];
        pb::AppendEventRequest { event: Some(e) }
    };
    client
        .append_event(with_cookie("k1"))
        .await
        .expect("links the cookie");
    let before = proxy.round_trips();
    client
        .append_event(with_cookie("k2"))
        .await
        .expect("known cookie");
    assert_eq!(
        proxy.round_trips() - before,
        2,
        "append with a linked identity"
    );

    // Journeys: the state moves in the append's own round trip, and the
    // journey reads are one round trip each.
    let step = |n: usize| pb::AppendEventRequest {
        event: Some(banking_step("j1", n, &format!("s{n}"), at + n as i64)),
    };
    for n in 0..3 {
        let check = count("AppendEvent moving a journey");
        client.append_event(step(n)).await.expect("step");
        check(&proxy);
    }
    let check = count("GetJourneyStats");
    let stats = client
        .get_journey_stats(pb::GetJourneyStatsRequest {
            journey: "personal_data_verification".into(),
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.entered, 1);
    check(&proxy);
    let check = count("ListJourneys");
    let listed = client
        .list_journeys(pb::ListJourneysRequest {
            journey: "personal_data_verification".into(),
            state: pb::JourneyStatus::InProgress as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.customers.len(), 1);
    check(&proxy);

    // A second instance has not seen j1: its first append finds the states
    // moved on and goes again (two round trips), then it is warm (one);
    // the first instance, now behind, pays one extra round trip once.
    let (_other, mut other_client) = instance(&proxy).await;
    for (n, expected) in [(3, 2), (4, 1)] {
        let before = proxy.round_trips();
        other_client.append_event(step(n)).await.expect("step");
        assert_eq!(
            proxy.round_trips() - before,
            expected,
            "other instance, step {n}"
        );
    }
    for (n, expected) in [(5, 2), (6, 1)] {
        let before = proxy.round_trips();
        client.append_event(step(n)).await.expect("step");
        assert_eq!(
            proxy.round_trips() - before,
            expected,
            "first instance, step {n}"
        );
    }
    let journeys = client
        .get_journey_context(pb::GetJourneyContextRequest {
            customer_id: "j1".into(),
            ..Default::default()
        })
        .await
        .expect("context")
        .into_inner()
        .journeys;
    let banking = journeys
        .iter()
        .find(|j| j.journey == "personal_data_verification")
        .expect("banking journey");
    assert_eq!(banking.state(), pb::JourneyStatus::Completed);
    assert_eq!(banking.steps_reached.len(), 7, "{banking:?}");

    // Rejected input never reaches Redis.
    let before = proxy.round_trips();
    let mut bad = page_view("c1", "bad", at);
    bad.channel = "fax".into();
    client
        .append_event(pb::AppendEventRequest { event: Some(bad) })
        .await
        .expect_err("rejected");
    assert_eq!(proxy.round_trips(), before);
}
