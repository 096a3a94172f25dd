//! The store's connections to Redis as a user configures them: a password
//! and a database number in the URL, over TCP or a Unix socket, a wrong
//! password, and reads that come back after Redis restarts. Each test starts its own redis-server.

mod support;

use std::time::{Duration, Instant};

use journey::{
    config::{ServeConfig, StoreUrl},
    pb,
};
use support::{
    append_all_stored,
    events::{banking_step, base_micros, campaign_email, page_view},
    journey_server::JourneyServer,
    proxy::CountingProxy,
    redis_server::RedisServer,
};
use tonic::{transport::Channel, Code};

type Client = pb::journey_service_client::JourneyServiceClient<Channel>;

async fn server_on(url: String) -> JourneyServer {
    JourneyServer::start(ServeConfig {
        store: StoreUrl::Redis(url),
        redis_timeout_ms: 5_000,
        health_interval_ms: 100,
        ..ServeConfig::default()
    })
    .await
}

async fn context(
    client: &mut Client,
    customer: &str,
) -> Result<pb::GetJourneyContextResponse, tonic::Status> {
    client
        .get_journey_context(pb::GetJourneyContextRequest {
            customer_id: customer.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Links c1 and the email a@example.com.
async fn link_email(client: &mut Client) {
    client
        .link_identities(pb::LinkIdentitiesRequest {
            identities: ["customer_id", "email"]
                .into_iter()
                .zip(["c1", "a@example.com"])
                .map(|(kind, value)| pb::Identity {
                    r#type: kind.into(),
                    value: value.into(),
                })
                .collect(),
        })
        .await
        .expect("link");
}

/// A server on `redis` whose profiles' keys live 10 days.
async fn server_keeping_10_days(redis: &RedisServer) -> JourneyServer {
    JourneyServer::start(ServeConfig {
        store: StoreUrl::Redis(redis.url()),
        redis_timeout_ms: 5_000,
        retention_days: 10,
        ..ServeConfig::default()
    })
    .await
}

/// The value of `field` (with its colon) in Redis's `INFO section`; empty
/// when it is not there.
fn info_field(admin: &mut redis::Connection, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg(section).query(admin).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// How many connections the Redis server has accepted so far.
fn connections_received(admin: &mut redis::Connection) -> u64 {
    info_field(admin, "stats", "total_connections_received:")
        .parse()
        .expect("total_connections_received")
}

#[tokio::test]
async fn a_password_and_a_database_in_the_url_are_used_by_every_path() {
    let redis = RedisServer::start_with_password(Some("s3cret"));
    every_path_uses_database_3(&redis, redis.url_with_db(3)).await;
}

#[tokio::test]
async fn a_unix_socket_url_with_password_and_database_serves_every_path() {
    let redis = RedisServer::start_with_password(Some("s3cret"));
    every_path_uses_database_3(&redis, redis.unix_url_with_db(3)).await;
}

#[tokio::test]
async fn a_unix_socket_nobody_listens_on_answers_unavailable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("redis+unix://{}", dir.path().join("none.sock").display());
    let server = server_on(url).await;
    let mut client = server.client().await;
    let status = context(&mut client, "c1").await.expect_err("no Redis");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// Appends and reads through `url` (database 3 of `redis`) on every read
/// path, and checks that the data landed in database 3 only.
async fn every_path_uses_database_3(redis: &RedisServer, url: String) {
    let server = server_on(url).await;
    let mut client = server.client().await;
    let at = base_micros();
    client
        .append_events(pb::AppendEventsRequest {
            events: vec![
                page_view("c1", "e1", at),
                campaign_email("c1", "e2", at + 1),
            ],
        })
        .await
        .expect("append");

    let read = context(&mut client, "c1").await.expect("context");
    assert_eq!(read.events.len(), 2);
    assert_eq!(read.contact_counts.map(|c| c.last_30d), Some(1));
    let page = client
        .list_events(pb::ListEventsRequest {
            customer_id: "c1".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.events.len(), 2);
    let check = client
        .check_contact_frequency(pb::CheckContactRequest {
            customer_id: "c1".into(),
            channel: "email".into(),
            ..Default::default()
        })
        .await
        .expect("check")
        .into_inner();
    assert!(check.found);
    assert_eq!(check.counts.map(|c| c.last_30d), Some(1));

    // Everything went to database 3, nothing to database 0.
    let mut conn = redis.connection();
    let exists = |conn: &mut redis::Connection| -> bool {
        redis::cmd("EXISTS")
            .arg("journey:{c1}:tl")
            .query(conn)
            .expect("EXISTS")
    };
    assert!(!exists(&mut conn), "nothing in database 0");
    redis::cmd("SELECT")
        .arg(3)
        .query::<()>(&mut conn)
        .expect("SELECT");
    assert!(exists(&mut conn), "the timeline is in database 3");
}

#[tokio::test]
async fn a_wrong_password_answers_unavailable_without_detail() {
    let redis = RedisServer::start_with_password(Some("s3cret"));
    let server = server_on(format!("redis://:wrong@127.0.0.1:{}/0", redis.port)).await;
    let mut client = server.client().await;
    let status = context(&mut client, "c1").await.expect_err("refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().contains("wrong"), "{status:?}");
    assert!(!status.message().contains("127.0.0.1"), "{status:?}");
}

#[tokio::test]
async fn reads_come_back_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let server = server_on(redis.url()).await;
    let mut client = server.client().await;
    client
        .append_event(pb::AppendEventRequest {
            event: Some(page_view("c1", "e1", base_micros())),
        })
        .await
        .expect("append");
    assert_eq!(
        context(&mut client, "c1")
            .await
            .expect("context")
            .events
            .len(),
        1
    );

    redis.kill();
    let status = context(&mut client, "c1").await.expect_err("Redis is down");
    assert!(
        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{status:?}"
    );

    // A new, empty Redis on the same port: once the read reaches it, the
    // customer is unknown (NOT_FOUND), which only Redis can answer.
    let _back = RedisServer::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    let last = loop {
        let status = context(&mut client, "c1")
            .await
            .expect_err("nothing stored any more");
        if status.code() == Code::NotFound || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(last.code(), Code::NotFound, "{last:?}");
}

/// Every key of a profile expires `--retention-days` after its last write
/// (give or take 1 %), including keys first written after the others had
/// their expiry set; the expiry is not pushed by every call, so this checks
/// the rule that replaces that.
#[tokio::test]
async fn every_key_of_a_profile_expires_after_the_retention() {
    let redis = RedisServer::start();
    let server = server_keeping_10_days(&redis).await;
    let mut client = server.client().await;
    let at = journey::domain::Micros::now().0 - 3_600_000_000;
    client
        .append_event(pb::AppendEventRequest {
            event: Some(page_view("c1", "e1", at)),
        })
        .await
        .expect("append");
    // A contact and an identity, in keys the first event did not create.
    let mut email = campaign_email("c1", "e2", at + 1);
    email.identities.push(pb::Identity {
        r#type: "cookie_id".into(),
        value: "k1".into(),
    });
    client
        .append_event(pb::AppendEventRequest { event: Some(email) })
        .await
        .expect("append");
    // A journey started, then moved on: its states hash is new to the
    // profile's keys, and its day's counters are global keys.
    for (step, id) in [(0, "s0"), (1, "s1")] {
        client
            .append_event(pb::AppendEventRequest {
                event: Some(banking_step("c1", step, id, at + 10 + step as i64)),
            })
            .await
            .expect("journey step");
    }

    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("journey:{c1}:*")
        .query(&mut conn)
        .expect("KEYS");
    for suffix in ["tl", "ids", "sum", "contacts", "cids", "idents", "jny"] {
        assert!(
            keys.contains(&format!("journey:{{c1}}:{suffix}")),
            "{suffix} in {keys:?}"
        );
    }
    let day_ms = 86_400_000_i64;
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).expect("PTTL");
        assert!(
            ttl > 10 * day_ms - 60_000 && ttl <= 10 * day_ms + 10 * day_ms / 100,
            "{key}: {ttl} ms"
        );
    }
    // A day's journey counters expire at a fixed instant: the end of the
    // 400th day after their day (when the memory store drops them too).
    let stats: Vec<String> = redis::cmd("KEYS")
        .arg("journey:jstats:*")
        .query(&mut conn)
        .expect("KEYS");
    assert!(!stats.is_empty(), "no journey counters written");
    let day = at.div_euclid(86_400_000_000);
    for key in &stats {
        assert!(key.ends_with(&format!(":{day}")), "{key}: not day {day}");
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).expect("PTTL");
        let now_ms = journey::domain::Micros::now().0 / 1_000;
        let expected = (day + 401) * day_ms - now_ms;
        assert!(
            (ttl - expected).abs() < 60_000,
            "{key}: {ttl} ms, not {expected}"
        );
    }
}

/// The keys that lead to a profile from other slots (identity index keys,
/// merged profiles' aliases) live as long as the profile: a link, an
/// event's identity and a merge give them the retention (+ 2 %), and when
/// the profile's keys are pushed, those keys are pushed too, so a phone
/// linked once stays found while the customer is active by customer id
/// alone, and a key written with no expiry (an older version) gets one.
#[tokio::test]
async fn keys_leading_to_a_profile_live_as_long_as_it() {
    let redis = RedisServer::start();
    let server = server_keeping_10_days(&redis).await;
    let mut client = server.client().await;
    let mut conn = redis.connection();
    let key = |kind: &str, value: &str| format!("journey:ident:{{{kind}\u{1f}{value}}}");
    let day_ms = 86_400_000_i64;
    let lives = |conn: &mut redis::Connection, key: &str| -> i64 {
        redis::cmd("PTTL").arg(key).query(conn).expect("PTTL")
    };
    let expected = 10 * day_ms + 10 * day_ms / 50;
    let assert_lives = |conn: &mut redis::Connection, key: &str, why: &str| {
        let ttl = lives(conn, key);
        assert!(
            ttl > expected - 60_000 && ttl <= expected,
            "{why}: {key} lives {ttl} ms, not ~{expected}"
        );
    };
    let identity = |kind: &str, value: &str| pb::Identity {
        r#type: kind.into(),
        value: value.into(),
    };
    let at = journey::domain::Micros::now().0 - 3_600_000_000;

    // An event's identity, linked on its first use.
    let mut first = page_view("c1", "e1", at);
    first.identities.push(identity("cookie_id", "k1"));
    append_all_stored(&mut client, vec![first]).await;
    assert_lives(&mut conn, &key("cookie_id", "k1"), "an event's identity");

    // A link.
    link_email(&mut client).await;
    assert_lives(&mut conn, &key("email", "a@example.com"), "a link");

    // A merge: an anonymous profile's cookie, repointed at c1.
    let mut anonymous = page_view("", "a1", at + 1);
    anonymous.identities.push(identity("cookie_id", "k2"));
    append_all_stored(&mut client, vec![anonymous]).await;
    let by_cookie = |value: &str| pb::GetJourneyContextRequest {
        customer: Some(pb::CustomerRef {
            r#ref: Some(pb::customer_ref::Ref::Identity(identity(
                "cookie_id",
                value,
            ))),
        }),
        ..Default::default()
    };
    let anonymous_profile = client
        .get_journey_context(by_cookie("k2"))
        .await
        .expect("the anonymous profile")
        .into_inner()
        .profile_id;
    let alias = format!("journey:{{{anonymous_profile}}}:alias");
    let mut login = page_view("c1", "e2", at + 2);
    login.identities.push(identity("cookie_id", "k2"));
    append_all_stored(&mut client, vec![login]).await;
    let owner: String = redis::cmd("GET")
        .arg(key("cookie_id", "k2"))
        .query(&mut conn)
        .expect("GET");
    assert_eq!(owner, "c1", "the merge repointed the cookie");
    assert_lives(&mut conn, &key("cookie_id", "k2"), "a merge");
    // The merged profile's alias leads to c1 as long as c1 lives.
    let done: String = redis::cmd("GET").arg(&alias).query(&mut conn).expect("GET");
    assert_eq!(done, "done:c1");
    assert_lives(&mut conn, &alias, "a merged profile's alias");

    // Linked again: its key lives the retention from now again.
    let _: () = redis::cmd("PEXPIRE")
        .arg(key("email", "a@example.com"))
        .arg(day_ms)
        .query(&mut conn)
        .expect("PEXPIRE");
    link_email(&mut client).await;
    assert_lives(&mut conn, &key("email", "a@example.com"), "a link again");

    // A chain: anonymous profiles A and B merge, then into c1; the alias
    // of the first one absorbed, about to expire, lives on with c1.
    for (event, cookie) in [("a2", "ka"), ("a3", "kb")] {
        let mut visit = page_view("", event, at + 4);
        visit.identities.push(identity("cookie_id", cookie));
        append_all_stored(&mut client, vec![visit]).await;
    }
    let mut both = page_view("", "a4", at + 5);
    both.identities = vec![identity("cookie_id", "ka"), identity("cookie_id", "kb")];
    append_all_stored(&mut client, vec![both]).await;
    let aliases: Vec<String> = redis::cmd("KEYS")
        .arg("journey:*:alias")
        .query(&mut conn)
        .expect("KEYS");
    let first_absorbed = aliases
        .into_iter()
        .find(|a| *a != alias)
        .expect("the alias of the first merge");
    let _: () = redis::cmd("PEXPIRE")
        .arg(&first_absorbed)
        .arg(day_ms)
        .query(&mut conn)
        .expect("PEXPIRE");
    let mut login = page_view("c1", "e4", at + 6);
    login.identities.push(identity("cookie_id", "ka"));
    append_all_stored(&mut client, vec![login]).await;
    assert_lives(&mut conn, &first_absorbed, "an alias merged in before");

    // A merge fence (a merge under way) is never given an expiry, and a
    // key that leads elsewhere now is left as it is.
    let _: () = redis::cmd("HSET")
        .arg(&["journey:{c1}:merges", "~fenced", "1"][..])
        .query(&mut conn)
        .expect("HSET");
    let _: () = redis::cmd("SET")
        .arg(&["journey:{~fenced}:alias", "pending:c1"][..])
        .query(&mut conn)
        .expect("SET");
    let _: () = redis::cmd("HSET")
        .arg(&["journey:{c1}:idents", "cookie_id\u{1f}moved", "1\u{1f}"][..])
        .query(&mut conn)
        .expect("HSET");
    let _: () = redis::cmd("SET")
        .arg(key("cookie_id", "moved"))
        .arg("c9")
        .query(&mut conn)
        .expect("SET");

    // A key with no expiry (written by an older version) and one about to
    // expire; the profile's keys due to be pushed. An event with the
    // customer id alone pushes them all.
    for persistent in [key("email", "a@example.com"), alias.clone()] {
        let _: () = redis::cmd("PERSIST")
            .arg(persistent)
            .query(&mut conn)
            .expect("PERSIST");
    }
    let _: () = redis::cmd("PEXPIRE")
        .arg(key("cookie_id", "k1"))
        .arg(day_ms)
        .query(&mut conn)
        .expect("PEXPIRE");
    let _: () = redis::cmd("PEXPIRE")
        .arg("journey:{c1}:tl")
        .arg(day_ms)
        .query(&mut conn)
        .expect("PEXPIRE");
    append_all_stored(&mut client, vec![page_view("c1", "e3", at + 3)]).await;
    for (kind, value) in [
        ("email", "a@example.com"),
        ("cookie_id", "k1"),
        ("cookie_id", "k2"),
    ] {
        assert_lives(&mut conn, &key(kind, value), "pushed with the profile");
    }
    assert_lives(&mut conn, &alias, "an alias pushed with the profile");
    for untouched in [
        "journey:{~fenced}:alias".to_string(),
        key("cookie_id", "moved"),
    ] {
        assert_eq!(lives(&mut conn, &untouched), -1, "{untouched} was pushed");
    }
    // The customer id has no index key: nothing made one.
    let exists: i64 = redis::cmd("EXISTS")
        .arg(key("customer_id", "c1"))
        .query(&mut conn)
        .expect("EXISTS");
    assert_eq!(exists, 0);
    // The email still finds the customer.
    let found = client
        .get_journey_context(pb::GetJourneyContextRequest {
            customer: Some(pb::CustomerRef {
                r#ref: Some(pb::customer_ref::Ref::Identity(identity(
                    "email",
                    "a@example.com",
                ))),
            }),
            ..Default::default()
        })
        .await
        .expect("by email")
        .into_inner();
    assert_eq!(found.customer_id, "c1");
}

/// A reservation keeps the whole profile alive, as an append does: a
/// customer the company only contacts stays found by the identity its
/// contacts were checked by (here an email whose key, like every key of
/// the profile, was about to expire), so the next check still counts them.
#[tokio::test]
async fn a_reservation_keeps_the_profile_and_its_keys_alive() {
    let redis = RedisServer::start();
    let server = server_keeping_10_days(&redis).await;
    let mut client = server.client().await;
    let mut conn = redis.connection();
    let day_ms = 86_400_000_i64;
    let email_key = "journey:ident:{email\u{1f}a@example.com}";
    let at = journey::domain::Micros::now().0 - 3_600_000_000;
    append_all_stored(&mut client, vec![page_view("c1", "e1", at)]).await;
    link_email(&mut client).await;
    let profile_keys: Vec<String> = ["tl", "ids", "sum", "idents"]
        .iter()
        .map(|suffix| format!("journey:{{c1}}:{suffix}"))
        .collect();
    for key in profile_keys.iter().map(String::as_str).chain([email_key]) {
        let set: i64 = redis::cmd("PEXPIRE")
            .arg(key)
            .arg(day_ms)
            .query(&mut conn)
            .expect("PEXPIRE");
        assert_eq!(set, 1, "{key} exists");
    }
    let by_email = || pb::CheckContactRequest {
        customer: Some(pb::CustomerRef {
            r#ref: Some(pb::customer_ref::Ref::Identity(pb::Identity {
                r#type: "email".into(),
                value: "a@example.com".into(),
            })),
        }),
        channel: "email".into(),
        reason: "campaign_offer".into(),
        ..Default::default()
    };
    let reserved = client
        .check_contact_frequency(pb::CheckContactRequest {
            reserve: true,
            ..by_email()
        })
        .await
        .expect("reserve")
        .into_inner();
    assert!(reserved.allowed && !reserved.reservation_id.is_empty());
    let pttl = |conn: &mut redis::Connection, key: &str| -> i64 {
        redis::cmd("PTTL").arg(key).query(conn).expect("PTTL")
    };
    // The profile's keys: the retention + 1 %; the email's: + 2 %.
    let ttl = 10 * day_ms;
    for key in profile_keys
        .iter()
        .map(String::as_str)
        .chain(["journey:{c1}:contacts", "journey:{c1}:cids"])
    {
        let lives = pttl(&mut conn, key);
        assert!(
            lives > ttl && lives <= ttl + ttl / 100,
            "{key} lives {lives} ms"
        );
    }
    let lives = pttl(&mut conn, email_key);
    assert!(
        lives > ttl + ttl / 100 && lives <= ttl + ttl / 50,
        "the email's key lives {lives} ms"
    );
    // A second reservation finds the keys pushed: it leaves them be.
    let _: () = redis::cmd("PEXPIRE")
        .arg(email_key)
        .arg(day_ms)
        .query(&mut conn)
        .expect("PEXPIRE");
    let again = client
        .check_contact_frequency(pb::CheckContactRequest {
            reserve: true,
            ..by_email()
        })
        .await
        .expect("reserve again")
        .into_inner();
    assert!(again.found && again.allowed, "{again:?}");
    assert!(pttl(&mut conn, email_key) <= day_ms, "pushed again");
}

/// Redis lost its scripts (`SCRIPT FLUSH`, a restart without them) between
/// two batches: the refused calls are loaded and sent again, and every event
/// is stored once, none reported as a duplicate.
#[tokio::test]
async fn appends_go_on_after_redis_loses_its_scripts() {
    let redis = RedisServer::start();
    let server = server_on(redis.url()).await;
    let mut client = server.client().await;
    let at = base_micros();
    let batch = |n: i64| {
        ["c1", "c2", "c3"]
            .iter()
            .map(|c| page_view(c, &format!("{c}-e{n}"), at + n))
            .collect()
    };
    for n in 0..2 {
        support::append_all_stored(&mut client, batch(n)).await;
        let mut conn = redis.connection();
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query::<()>(&mut conn)
            .expect("SCRIPT FLUSH");
    }
    for customer in ["c1", "c2", "c3"] {
        let read = context(&mut client, customer).await.expect("context");
        assert_eq!(read.events.len(), 2, "{customer}");
    }
}

/// A failover that demotes the server the service is connected to (Redis
/// keeps its clients connected): the write it refuses with READONLY fails
/// as UNAVAILABLE and the connection is let go, so the next call connects
/// afresh (to where a DNS name or a virtual address leads now) instead of
/// being refused on the old connection for good.
#[tokio::test]
async fn a_server_demoted_to_replica_is_left_for_a_new_connection() {
    let redis = RedisServer::start();
    let primary = RedisServer::start();
    let server = server_on(redis.url()).await;
    let mut client = server.client().await;
    let at = base_micros();
    support::append_all_stored(&mut client, vec![page_view("c1", "e1", at)]).await;
    // Opened before counting, so the test's own connection is not counted.
    let mut admin = redis.connection();
    let before = connections_received(&mut admin);
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port)
        .query::<()>(&mut admin)
        .expect("REPLICAOF");
    let status = client
        .append_event(pb::AppendEventRequest {
            event: Some(page_view("c1", "e2", at + 1)),
        })
        .await
        .expect_err("a replica refuses writes");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query::<()>(&mut admin)
        .expect("REPLICAOF NO ONE");
    support::append_all_stored(&mut client, vec![page_view("c1", "e3", at + 2)]).await;
    assert!(
        connections_received(&mut admin) > before,
        "the service kept its connection to the demoted server"
    );
}

/// A server demoted to a replica answers PING but refuses writes: health
/// says NOT_SERVING without waiting for a write to fail, lets the
/// connection go (the next ping connects anew, to wherever the address
/// leads after a failover), and says SERVING once it is a primary again.
/// A user whose ACL forbids `ROLE` is served on its PING alone.
#[tokio::test]
async fn health_reports_a_replica_as_not_serving() {
    let redis = RedisServer::start();
    let primary = RedisServer::start();
    let server = server_on(redis.url()).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    assert!(support::wait_for_health(&mut health, "", true).await);
    let mut admin = redis.connection();
    let before = connections_received(&mut admin);
    make_replica(&mut admin, &primary);
    // A replica answers LOADING while it syncs, which is NOT_SERVING as
    // any error; what counts is the state once it has synced and the
    // service has pinged it twice since.
    let deadline = Instant::now() + Duration::from_secs(15);
    while info_field(&mut admin, "replication", "master_link_status:") != "up" {
        assert!(Instant::now() < deadline, "the replica never synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Only the service's health check sends ROLE here: two more of them
    // after the sync, and the status below was set from a synced
    // replica's answer (the report of one comes before the next is sent).
    let roles = |admin: &mut redis::Connection| command_calls(admin, "role");
    let synced = roles(&mut admin);
    while roles(&mut admin) < synced + 2 {
        assert!(Instant::now() < deadline, "the service stopped checking");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for service in ["", "journey.v1.JourneyService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner()
            .status();
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::NotServing,
            "{service:?} on a synced replica"
        );
    }
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query::<()>(&mut admin)
        .expect("REPLICAOF NO ONE");
    assert!(support::wait_for_health(&mut health, "", true).await);
    assert!(
        connections_received(&mut admin) > before,
        "the service kept its connection to the demoted server"
    );
    let mut client = server.client().await;
    support::append_all_stored(&mut client, vec![page_view("c1", "e1", base_micros())]).await;

    redis::cmd("ACL")
        .arg(
            &[
                "SETUSER", "limited", "on", ">secret", "~*", "&*", "+@all", "-role",
            ][..],
        )
        .query::<()>(&mut admin)
        .expect("ACL SETUSER");
    let limited = server_on(format!("redis://limited:secret@127.0.0.1:{}/0", redis.port)).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(limited.channel().await);
    assert!(
        support::wait_for_health(&mut health, "", true).await,
        "a user without ROLE is not served"
    );
}

/// Makes the server behind `admin` a replica of `primary`, which syncs it
/// at once (not after the default 5 s).
fn make_replica(admin: &mut redis::Connection, primary: &RedisServer) {
    redis::cmd("CONFIG")
        .arg(&["SET", "repl-diskless-sync-delay", "0"][..])
        .query::<()>(&mut primary.connection())
        .expect("CONFIG SET");
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port)
        .query::<()>(admin)
        .expect("REPLICAOF");
}

/// Calls of `command` (as `INFO commandstats` names it, e.g. `role` or
/// `client|tracking`) the server has answered.
fn command_calls(admin: &mut redis::Connection, command: &str) -> u64 {
    let stat = info_field(admin, "commandstats", &format!("cmdstat_{command}:"));
    stat.strip_prefix("calls=")
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The context cache reads through a connection of its own: demoted to a
/// replica, its server loses it as it loses the main one, so after a
/// failover the cache cannot go on reading the old primary. Seen from the
/// demoted server: the tracked connection is made again (its set-up's
/// `CLIENT TRACKING`) at each health ping.
#[tokio::test]
async fn the_context_caches_connection_leaves_a_demoted_server() {
    let redis = RedisServer::start();
    let primary = RedisServer::start();
    let server = JourneyServer::start(ServeConfig {
        store: StoreUrl::Redis(redis.url()),
        redis_timeout_ms: 5_000,
        health_interval_ms: 100,
        context_cache_mib: 16,
        ..ServeConfig::default()
    })
    .await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    assert!(support::wait_for_health(&mut health, "", true).await);
    let mut client = server.client().await;
    support::append_all_stored(&mut client, vec![page_view("c1", "e1", base_micros())]).await;
    context(&mut client, "c1")
        .await
        .expect("a context, through the cache's connection");
    let mut admin = redis.connection();
    let deadline = Instant::now() + Duration::from_secs(15);
    let made = command_calls(&mut admin, "client|tracking");
    assert!(made >= 1, "the cache's connection set up tracking");
    // Serving: the tracked connection, made once, is not made again.
    let roles = command_calls(&mut admin, "role");
    while command_calls(&mut admin, "role") < roles + 4 {
        assert!(Instant::now() < deadline, "the service stopped checking");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(command_calls(&mut admin, "client|tracking"), made);
    make_replica(&mut admin, &primary);
    while command_calls(&mut admin, "client|tracking") < made + 2 {
        assert!(
            Instant::now() < deadline,
            "the cache's connection stayed on the demoted server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server on a fresh Redis reached through a proxy that can cut it, with
/// no health probe to use the connection between the calls a test makes.
async fn server_behind_proxy() -> (RedisServer, CountingProxy, JourneyServer) {
    let redis = RedisServer::start();
    let proxy = CountingProxy::start(redis.port).await;
    let server = JourneyServer::start(ServeConfig {
        store: StoreUrl::Redis(proxy.url()),
        redis_timeout_ms: 5_000,
        health_interval_ms: 3_600_000,
        ..ServeConfig::default()
    })
    .await;
    (redis, proxy, server)
}

/// A reservation whose answer is lost with its connection (the script ran
/// in Redis) is found by the next read: the check answers it, once, rather
/// than UNAVAILABLE, which a client would retry into a second reservation.
#[tokio::test]
async fn a_reservation_whose_answer_is_lost_is_answered_once() {
    let (_redis, proxy, server) = server_behind_proxy().await;
    let mut client = server.client().await;
    let reserve = |customer: &str| pb::CheckContactRequest {
        customer_id: customer.into(),
        channel: "email".into(),
        reason: "campaign_offer".into(),
        reserve: true,
        ..Default::default()
    };
    // The reserve script loaded on another customer first.
    let warm = client.check_contact_frequency(reserve("c0")).await;
    assert!(warm.expect("reserve").into_inner().allowed);
    // The read goes through; the script runs, and its answer is lost.
    proxy.lose_reply_after(1);
    let answer = client
        .check_contact_frequency(reserve("c1"))
        .await
        .expect("answered, not UNAVAILABLE")
        .into_inner();
    proxy.heal();
    assert!(
        answer.allowed && !answer.reservation_id.is_empty(),
        "{answer:?}"
    );
    let check = client
        .check_contact_frequency(pb::CheckContactRequest {
            reserve: false,
            ..reserve("c1")
        })
        .await
        .expect("check")
        .into_inner();
    let email = check.counts.expect("counts").per_channel;
    assert_eq!(
        email.get("email").map(|c| c.last_24h),
        Some(1),
        "one reservation: {email:?}"
    );
}

/// A reservation whose answer is lost and whose check cannot read again
/// (Redis gone after running it) fails UNAVAILABLE; retried with the same
/// reservation id, it is answered, not made twice.
#[tokio::test]
async fn a_named_reservation_retried_after_unavailable_is_made_once() {
    let (_redis, proxy, server) = server_behind_proxy().await;
    let mut client = server.client().await;
    let reserve = |customer: &str, id: &str| pb::CheckContactRequest {
        customer_id: customer.into(),
        channel: "email".into(),
        reason: "campaign_offer".into(),
        reserve: true,
        reservation_id: id.into(),
        ..Default::default()
    };
    let warm = client.check_contact_frequency(reserve("c0", "")).await;
    assert!(warm.expect("reserve").into_inner().allowed);
    // The read goes through; the script runs, its answer is lost, and the
    // read that would tell whether it landed finds Redis gone.
    proxy.lose_reply_then_cut_after(1);
    let status = client
        .check_contact_frequency(reserve("c1", "send-1"))
        .await
        .expect_err("Redis gone");
    proxy.heal();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let again = client
        .check_contact_frequency(reserve("c1", "send-1"))
        .await
        .expect("the retry")
        .into_inner();
    assert!(again.allowed, "{again:?}");
    assert_eq!(again.reservation_id, "send-1");
    let check = client
        .check_contact_frequency(reserve("c1", ""))
        .await
        .expect("another")
        .into_inner();
    let counts = check.counts.expect("counts");
    assert_eq!(counts.last_24h, 1, "send-1 recorded once: {counts:?}");
}

/// A Redis that accepts connections and never answers (a host gone without
/// a reset, a network split): calls fail in time, and the silent connection
/// is replaced by a new one rather than reused until the kernel gives up.
/// A listener on loopback that accepts connections, reads everything and
/// answers nothing; with its port and how many connections it accepted.
async fn black_hole() -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };
    use tokio::io::AsyncReadExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (port, accepted, task)
}

/// A server whose store is the black hole on `port` (database `db`),
/// waiting 200 ms for each answer, with no health pings of its own.
async fn server_of_silence(port: u16, db: u8) -> JourneyServer {
    JourneyServer::start(ServeConfig {
        store: StoreUrl::Redis(format!("redis://127.0.0.1:{port}/{db}")),
        redis_timeout_ms: 200,
        health_interval_ms: 3_600_000,
        ..ServeConfig::default()
    })
    .await
}

/// A connection whose set-up (here `SELECT`) gets no answer sent nothing
/// of the call that made it: UNAVAILABLE (safe to retry), not
/// DEADLINE_EXCEEDED, for that call and those refused after it.
#[tokio::test]
async fn a_set_up_with_no_answer_is_unavailable() {
    let (port, _, black_hole) = black_hole().await;
    let server = server_of_silence(port, 1).await;
    let mut client = server.client().await;
    for _ in 0..2 {
        let status = context(&mut client, "c1").await.expect_err("no answer");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    black_hole.abort();
}

#[tokio::test]
async fn a_connection_that_stops_answering_is_replaced() {
    use std::sync::atomic::Ordering;

    let (port, accepted, black_hole) = black_hole().await;
    let server = server_of_silence(port, 0).await;
    let mut client = server.client().await;

    let status = context(&mut client, "c1").await.expect_err("no answer");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{status:?}"
    );
    let before = accepted.load(Ordering::SeqCst);
    assert!(before >= 1, "the store connected");
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::SeqCst) == before && Instant::now() < deadline {
        let status = context(&mut client, "c1").await.expect_err("no answer");
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
            "{status:?}"
        );
    }
    assert!(
        accepted.load(Ordering::SeqCst) > before,
        "a new connection replaced the silent one"
    );
    black_hole.abort();
}
