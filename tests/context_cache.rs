//! The context cache (`--context-cache-mib`) against a real redis-server:
//! a context read again is served from memory (Redis sees no read), and
//! every write shows at once through the instance that made it and within
//! an invalidation's trip through another instance or Redis itself, also
//! after the invalidation listener's connection was cut, after a failover
//! to a server that does not know the listener, and with a Redis user not
//! allowed the commands the cache needs (the cache then stays off).

mod support;

use std::time::{Duration, Instant};

use journey::{
    config::{ServeConfig, StoreUrl},
    pb::{self, journey_service_client::JourneyServiceClient},
};
use support::{
    events::{base_micros, page_view},
    journey_server::JourneyServer,
    proxy::CountingProxy,
    redis_server::RedisServer,
};
use tonic::transport::Channel;

type Client = JourneyServiceClient<Channel>;

/// How long a write may take to show through another instance: far above
/// an invalidation's trip, far below the cache's 30 s age limit.
const SHOWS_WITHIN: Duration = Duration::from_secs(5);

async fn instance(redis: &RedisServer, cache_mib: usize) -> (JourneyServer, Client) {
    instance_at(redis.url(), cache_mib).await
}

async fn instance_at(url: String, cache_mib: usize) -> (JourneyServer, Client) {
    let server = JourneyServer::start(ServeConfig {
        store: StoreUrl::Redis(url),
        context_cache_mib: cache_mib,
        redis_timeout_ms: 5_000,
        request_timeout_ms: 60_000,
        ..ServeConfig::default()
    })
    .await;
    let channel = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    assert!(support::wait_for_health(&mut health, "", true).await);
    (server, JourneyServiceClient::new(channel))
}

/// The ids of the customer's latest events, newest first (`None`: the
/// customer is unknown).
async fn try_event_ids(
    client: &mut Client,
    customer: &str,
) -> Result<Option<Vec<String>>, tonic::Status> {
    match client
        .get_journey_context(pb::GetJourneyContextRequest {
            customer_id: customer.into(),
            max_events: 50,
            ..Default::default()
        })
        .await
    {
        Ok(context) => Ok(Some(
            context
                .into_inner()
                .events
                .into_iter()
                .map(|e| e.event_id)
                .collect(),
        )),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(status),
    }
}

async fn event_ids(client: &mut Client, customer: &str) -> Option<Vec<String>> {
    try_event_ids(client, customer)
        .await
        .unwrap_or_else(|status| panic!("context: {status}"))
}

async fn append(client: &mut Client, customer: &str, id: &str, at: i64) {
    client
        .append_event(pb::AppendEventRequest {
            event: Some(page_view(customer, id, at)),
        })
        .await
        .expect("append");
}

/// How many `ZREVRANGE`s Redis has run: one per context read from it.
fn timeline_reads(redis: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.connection())
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_zrevrange:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Reads the customer's context until two reads in a row leave Redis
/// untouched (the cache is subscribed and holds it), within 15 s.
async fn until_served_from_memory(client: &mut Client, redis: &RedisServer, customer: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        event_ids(client, customer).await;
        let before = timeline_reads(redis);
        event_ids(client, customer).await;
        event_ids(client, customer).await;
        if timeline_reads(redis) == before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the context of {customer} was never served from the cache");
}

/// Reads through `client` until `wanted` holds, within `SHOWS_WITHIN`. A
/// read may fail meanwhile (one sent on a connection Redis just cut).
async fn until_shown(
    client: &mut Client,
    customer: &str,
    what: &str,
    wanted: impl Fn(&Option<Vec<String>>) -> bool,
) {
    let deadline = Instant::now() + SHOWS_WITHIN;
    loop {
        let seen = try_event_ids(client, customer).await;
        if seen.as_ref().is_ok_and(&wanted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not show within {SHOWS_WITHIN:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn holds(id: &'static str) -> impl Fn(&Option<Vec<String>>) -> bool {
    move |seen| seen.as_ref().is_some_and(|ids| ids.iter().any(|e| e == id))
}

#[tokio::test]
async fn a_cached_context_follows_every_write() {
    let redis = RedisServer::start();
    let (_cached, mut a) = instance(&redis, 16).await;
    let (_other, mut b) = instance(&redis, 0).await;
    let at = base_micros();
    append(&mut a, "c1", "e1", at).await;
    until_served_from_memory(&mut a, &redis, "c1").await;
    assert_eq!(event_ids(&mut a, "c1").await, Some(vec!["e1".to_string()]));

    // Written through the same instance: the next read shows it, every time,
    // in the events and in the parts rendered once per read (the summary).
    for i in 2..12 {
        let id = format!("e{i}");
        append(&mut a, "c1", &id, at + i).await;
        let seen = event_ids(&mut a, "c1").await.expect("known");
        assert_eq!(seen.first(), Some(&id), "read after its own write");
        let context = a
            .get_journey_context(pb::GetJourneyContextRequest {
                customer_id: "c1".into(),
                ..Default::default()
            })
            .await
            .expect("context")
            .into_inner();
        assert_eq!(
            context.total_events, i as u64,
            "summary after its own write"
        );
        assert_eq!(
            context.last_customer_interaction.map(|e| e.event_id),
            Some(id)
        );
    }

    // Written through another instance, or straight into Redis: shown once
    // Redis's invalidation arrives.
    until_served_from_memory(&mut a, &redis, "c1").await;
    append(&mut b, "c1", "from-b", at + 100).await;
    until_shown(&mut a, "c1", "a write of another instance", holds("from-b")).await;

    until_served_from_memory(&mut a, &redis, "c1").await;
    let _: i64 = redis::cmd("DEL")
        .arg("journey:{c1}:tl")
        .arg("journey:{c1}:sum")
        .query(&mut redis.connection())
        .expect("DEL");
    until_shown(&mut a, "c1", "a deletion in Redis", |seen| seen.is_none()).await;
}

#[tokio::test]
async fn a_cut_listener_stops_the_cache_until_it_is_back() {
    let redis = RedisServer::start();
    let (_cached, mut a) = instance(&redis, 16).await;
    let (_other, mut b) = instance(&redis, 0).await;
    let at = base_micros();
    append(&mut a, "c2", "e1", at).await;
    until_served_from_memory(&mut a, &redis, "c2").await;

    // The listener's connection is cut: the invalidation of the next write
    // is lost with it, so what the cache held must not be served again.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut redis.connection())
        .expect("CLIENT KILL");
    assert_eq!(killed, 1, "one listener");
    append(&mut b, "c2", "after-cut", at + 1).await;
    until_shown(
        &mut a,
        "c2",
        "a write while the listener was cut",
        holds("after-cut"),
    )
    .await;

    // It subscribes again and the cache serves again, still in step.
    until_served_from_memory(&mut a, &redis, "c2").await;
    append(&mut b, "c2", "after-return", at + 2).await;
    until_shown(
        &mut a,
        "c2",
        "a write after the listener's return",
        holds("after-return"),
    )
    .await;

    // The tracked connection cut: what it read is no longer tracked, so
    // the cache forgets it.
    until_served_from_memory(&mut a, &redis, "c2").await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut redis.connection())
        .expect("CLIENT LIST");
    let tracked: Vec<&str> = clients
        .lines()
        .filter(|l| {
            l.split(' ').any(|f| {
                f.strip_prefix("flags=")
                    .is_some_and(|flags| flags.contains('t'))
            })
        })
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .collect();
    assert_eq!(tracked.len(), 1, "one tracked connection: {clients}");
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(tracked[0])
        .query(&mut redis.connection())
        .expect("CLIENT KILL");
    append(&mut b, "c2", "after-data-cut", at + 3).await;
    until_shown(
        &mut a,
        "c2",
        "a write after the tracked connection was cut",
        holds("after-data-cut"),
    )
    .await;
}

#[tokio::test]
async fn a_restarted_redis_is_followed() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let (_cached, mut a) = instance(&redis, 16).await;
    let at = base_micros();
    append(&mut a, "c3", "e1", at).await;
    until_served_from_memory(&mut a, &redis, "c3").await;

    // A new, empty Redis on the same port (client ids start again there):
    // what the cache held is gone with the old one.
    redis.kill();
    let back = RedisServer::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(None) = try_event_ids(&mut a, "c3").await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old context outlived its Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The cache serves again, in step with the new Redis.
    append(&mut a, "c3", "e2", at + 1).await;
    until_served_from_memory(&mut a, &back, "c3").await;
    let (_other, mut b) = instance(&back, 0).await;
    append(&mut b, "c3", "from-b", at + 2).await;
    until_shown(
        &mut a,
        "c3",
        "a write of another instance after the restart",
        holds("from-b"),
    )
    .await;
}

/// The client id of the cache's invalidation listener on `redis`, if one
/// is subscribed there.
fn listener_id(redis: &RedisServer) -> Option<i64> {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut redis.connection())
        .expect("CLIENT LIST");
    clients
        .lines()
        .filter(|l| l.contains(" name=journey-invalidations-"))
        .find_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .and_then(|id| id.parse().ok())
}

fn next_client_id(redis: &RedisServer) -> i64 {
    redis::cmd("CLIENT")
        .arg("ID")
        .query(&mut redis.connection())
        .expect("CLIENT ID")
}

#[tokio::test]
async fn a_failover_to_a_server_without_the_listener_is_followed() {
    let old = RedisServer::start();
    let new = RedisServer::start();
    // Each connection takes the next client id: the listener's id on the
    // old server will be one the new server has not given out.
    for _ in 0..100 {
        drop(old.connection());
    }
    let proxy = CountingProxy::start(old.port).await;
    let (_cached, mut a) = instance_at(proxy.url(), 16).await;
    let (_other, mut b) = instance(&new, 0).await;
    let at = base_micros();
    append(&mut a, "c4", "e1", at).await;
    until_served_from_memory(&mut a, &old, "c4").await;
    let listener = listener_id(&old).expect("the listener is on the old server");
    append(&mut b, "c4", "on-new", at + 1).await;
    assert!(
        next_client_id(&new) < listener,
        "the new server has not given out the listener's id {listener}"
    );

    // The failover: new connections reach the new server, while the
    // listener's stays on the old one. The store's connections are cut
    // there; the tracked one comes back on the new server with a redirect
    // to a client id it does not have, which Redis refuses.
    proxy.switch_to(new.port);
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut old.connection())
        .expect("CLIENT KILL");
    assert!(
        killed >= 2,
        "the store's connection and the tracked one: {killed}"
    );
    until_shown(&mut a, "c4", "the new server's timeline", |seen| {
        seen.as_deref() == Some(&["on-new".to_string()][..])
    })
    .await;

    // The listener follows to the new server, and the cache serves again,
    // in step with it.
    until_served_from_memory(&mut a, &new, "c4").await;
    assert!(listener_id(&new).is_some(), "the listener moved");
    append(&mut b, "c4", "after-failover", at + 2).await;
    until_shown(
        &mut a,
        "c4",
        "a write on the new server",
        holds("after-failover"),
    )
    .await;
}

/// How many times Redis refused `command` (e.g. `client|list`) to a user
/// by its ACL (`ACL LOG` counts repeats in one entry).
fn refusals(redis: &RedisServer, command: &str) -> i64 {
    let entries: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("ACL")
        .arg("LOG")
        .query(&mut redis.connection())
        .expect("ACL LOG");
    entries
        .iter()
        .filter(|e| {
            e.get("object").is_some_and(|o| {
                redis::from_redis_value::<String>(o.clone()).ok().as_deref() == Some(command)
            })
        })
        .filter_map(|e| e.get("count"))
        .filter_map(|c| redis::from_redis_value::<i64>(c.clone()).ok())
        .sum()
}

// `-client|list` (a subcommand in an ACL) needs Redis 7, as CI installs.
#[tokio::test]
async fn a_user_without_client_list_or_tracking_reads_without_the_cache() {
    for denied in ["client|list", "client|tracking"] {
        let redis = RedisServer::start();
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("journey")
            .arg("on")
            .arg(">secret")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .arg(format!("-{denied}"))
            .query(&mut redis.connection())
            .expect("ACL SETUSER");
        let url = format!("redis://journey:secret@127.0.0.1:{}/0", redis.port);
        let (_cached, mut a) = instance_at(url, 16).await;
        let at = base_micros();
        append(&mut a, "c5", "e1", at).await;

        // The listener has tried to set the cache up, and tried again.
        let deadline = Instant::now() + Duration::from_secs(15);
        while refusals(&redis, denied) < 2 {
            assert!(Instant::now() < deadline, "{denied} was never tried");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Every read goes to Redis, and answers.
        let before = timeline_reads(&redis);
        for _ in 0..5 {
            assert_eq!(
                event_ids(&mut a, "c5").await,
                Some(vec!["e1".to_string()]),
                "without {denied}"
            );
        }
        assert_eq!(
            timeline_reads(&redis),
            before + 5,
            "without {denied}, no read is served from memory"
        );
    }
}
