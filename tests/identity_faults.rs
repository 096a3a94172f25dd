//! A merge on Redis interrupted by a lost connection at every step: the
//! state left behind is consistent for readers, and the next operation on
//! the absorbed profile completes the merge (or it was never started),
//! carrying its journeys once. A sweep that meets a merge under way
//! completes it. A link cut between its steps leaves no identity on a
//! profile without its key.

mod support;

use std::time::Duration;

use journey::{
    domain::{
        journey::{testkit::MINUTE, Day, JourneyDefinitions, JourneyStatus},
        CustomerId, EventLimits, Identity, Initiator, MergeRules, Micros, Taxonomy,
    },
    storage::{
        redis_store::RedisSettings, JourneyTracker, MergeOutcome, RedisStore, Retention,
        TimelineStore,
    },
};
use support::{
    banking::{banking_state, BANKING},
    events::{banking_domain_event, domain_event},
    proxy::CountingProxy,
    redis_server::RedisServer,
};

/// An hour ago: recovery runs on the wall clock, so the events must be
/// inside retention by it.
fn t0() -> i64 {
    Micros::now().0 - 3_600_000_000
}

fn rules() -> MergeRules {
    MergeRules {
        unique_types: ["customer_id".to_string()].into(),
        max_identities: 100,
    }
}

fn store_via(proxy: &CountingProxy) -> RedisStore {
    store_with_rules(proxy, rules())
}

fn store_with_rules(proxy: &CountingProxy, rules: MergeRules) -> RedisStore {
    let settings = RedisSettings {
        url: proxy.url(),
        response_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
    };
    RedisStore::open(&settings, Retention::default(), rules).expect("open")
}

/// As `store_via`, following customers through the built-in journeys.
fn journey_store_via(proxy: &CountingProxy) -> RedisStore {
    with_journeys(store_via(proxy))
}

fn with_journeys(store: RedisStore) -> RedisStore {
    let taxonomy = std::sync::Arc::new(Taxonomy::builtin());
    let definitions = JourneyDefinitions::builtin(&taxonomy).expect("built-in journeys");
    let tracker = JourneyTracker::new(
        std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(definitions)),
        taxonomy,
    );
    store.with_journeys(tracker, 1_000, 32 << 20)
}

fn customer(id: &str) -> CustomerId {
    CustomerId::parse("customer_id", id, &EventLimits::default()).expect("id")
}

/// Seeds c{n} with 3 events and an anonymous profile with 4 (one shares
/// an id with c{n}), and answers both ids.
async fn seed(store: &dyn TimelineStore, n: usize) -> (CustomerId, CustomerId) {
    let c = format!("c{n}");
    let anon = CustomerId::anonymous(&format!("A{n}"));
    let now = Micros::now();
    let t0 = t0();
    let mine: Vec<_> = ["e1", "e2", "shared"]
        .iter()
        .enumerate()
        .map(|(i, id)| domain_event(&c, id, "web", Initiator::Customer, t0 + i as i64))
        .collect();
    store.append(&mine, now).await.expect("append");
    let theirs: Vec<_> = ["a1", "a2", "a3", "shared"]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut e = domain_event("x", id, "chat", Initiator::Customer, t0 + 10 + i as i64);
            e.customer_id = None;
            e.profile = anon.clone();
            e
        })
        .collect();
    store.append(&theirs, now).await.expect("append");
    (customer(&c), anon)
}

async fn total(store: &dyn TimelineStore, profile: &CustomerId) -> (CustomerId, u64, usize) {
    let snap = store
        .context(profile, 100, Micros(0))
        .await
        .expect("context")
        .expect("found");
    (snap.profile, snap.summary.total_events, snap.events.len())
}

#[tokio::test]
async fn a_merge_cut_at_any_step_is_completed_by_the_next_operation() {
    let redis = RedisServer::start();
    let proxy = CountingProxy::start(redis.port).await;
    let store = store_via(&proxy);
    // Warm up: load the scripts so every attempt below takes the same steps.
    let (warm_c, warm_a) = seed(&store, 99).await;
    assert_eq!(
        store
            .merge(&warm_c, &warm_a, Micros::now())
            .await
            .expect("merge"),
        MergeOutcome::Merged
    );

    let mut completed_by_recovery = 0;
    for cut in 0..8 {
        let (c, anon) = seed(&store, cut as usize).await;
        proxy.cut_after(cut);
        let attempt = store.merge(&c, &anon, Micros::now()).await;
        proxy.heal();

        // Whatever the cut, a reader of the survivor sees all of the
        // absorbed profile or none of it, never a part.
        let (_, held, listed) = total(&store, &c).await;
        assert!(held == 3 || held == 6, "cut {cut}: survivor holds {held}");
        assert_eq!(held as usize, listed);

        // The next operation on the absorbed profile completes the merge
        // if it started (its fence is set) and reads the survivor.
        let (profile, held, _) = total(&store, &anon).await;
        match attempt {
            Ok(MergeOutcome::Merged) => {
                assert_eq!((profile.clone(), held), (c.clone(), 6), "cut {cut}")
            }
            Ok(other) => panic!("cut {cut}: unexpected {other:?}"),
            Err(_) if profile == c => {
                completed_by_recovery += 1;
                assert_eq!(held, 6, "cut {cut}: every event once after recovery");
            }
            Err(_) => {
                // Cut before the fence: nothing happened; merging now works.
                assert_eq!(held, 4, "cut {cut}");
                assert_eq!(
                    store.merge(&c, &anon, Micros::now()).await.expect("merge"),
                    MergeOutcome::Merged
                );
            }
        }
        let (profile, held, listed) = total(&store, &c).await;
        assert_eq!((profile, held, listed), (c.clone(), 6, 6), "cut {cut}");
    }
    assert!(
        completed_by_recovery > 0,
        "some cut fell between the fence and the finish"
    );
}

/// A link records its identities on the profile, then claims their keys:
/// a connection lost at any round trip leaves every identity the profile
/// lists leading to it (the recorded ones come off again when the claim
/// is lost), and a link that answered linked them all.
#[tokio::test]
async fn a_link_cut_at_any_step_leaves_no_identity_without_its_key() {
    let redis = RedisServer::start();
    let proxy = CountingProxy::start(redis.port).await;
    let store = store_via(&proxy);
    let identities = |n: i64| {
        vec![
            Identity {
                kind: "cookie_id".into(),
                value: format!("k{n}"),
            },
            Identity {
                kind: "email".into(),
                value: format!("e{n}@example.com"),
            },
        ]
    };
    // Warm up: load the scripts (a link, then the same again, which pushes
    // the keys held) so every attempt below takes the same round trips.
    let warm = customer("w");
    for _ in 0..2 {
        store
            .link(&warm, &identities(99), Micros::now())
            .await
            .expect("link")
            .expect("allowed");
    }
    // The round trips of a link that nothing cuts.
    let clean = {
        let before = proxy.round_trips();
        store
            .link(&customer("clean"), &identities(100), Micros::now())
            .await
            .expect("link")
            .expect("allowed");
        proxy.round_trips() - before
    };
    let mut sent_again = 0;
    // Each round trip cut before its request reaches Redis, then each with
    // its request run and only the reply lost.
    for (n, (cut, delivered)) in (0..4)
        .map(|c| (c, false))
        .chain((0..4).map(|c| (c, true)))
        .enumerate()
    {
        let n = n as i64;
        let c = customer(&format!("c{n}"));
        let event = domain_event(c.as_str(), "e1", "web", Initiator::Customer, t0());
        store.append(&[event], Micros::now()).await.expect("append");
        let before = proxy.round_trips();
        if delivered {
            proxy.lose_reply_after(cut);
        } else {
            proxy.cut_once_after(cut);
        }
        let attempt = store.link(&c, &identities(n), Micros::now()).await;
        let used = proxy.round_trips() - before;
        proxy.heal();
        let listed: Vec<Identity> = store
            .identities(&c)
            .await
            .expect("identities")
            .into_iter()
            .map(|l| l.identity)
            .filter(|i| i.kind != "customer_id")
            .collect();
        let leads = store.resolve(&listed).await.expect("resolve");
        assert!(
            leads.iter().all(|p| p.as_ref() == Some(&c)),
            "cut {cut} ({delivered}): {listed:?} lead to {leads:?}"
        );
        // And the other way: every key that leads to the profile is listed.
        let asked = identities(n);
        let owners = store.resolve(&asked).await.expect("resolve");
        for (identity, owner) in asked.iter().zip(owners) {
            if owner.as_ref() == Some(&c) {
                assert!(
                    listed.contains(identity),
                    "cut {cut} ({delivered}): {identity:?} leads to {c} unlisted"
                );
            }
        }
        match attempt {
            Ok(Ok(_)) => assert_eq!(listed.len(), 2, "cut {cut}: a link that answered"),
            Ok(Err(reason)) => panic!("cut {cut}: refused: {reason}"),
            Err(_) => {}
        }
        if used > clean {
            sent_again += 1;
        }
    }
    // The cuts after the first round trip find a step to send again (or,
    // for the claims, identities to take off).
    assert!(
        sent_again >= 4,
        "only {sent_again} cuts made the link send a step again"
    );
}

/// An unlink cut at any round trip, before its request reaches Redis or
/// with only its reply lost, takes effect whole or not at all: the
/// identity leads to the profile exactly when the profile lists it.
#[tokio::test]
async fn an_unlink_cut_at_any_step_takes_effect_whole_or_not_at_all() {
    let redis = RedisServer::start();
    let proxy = CountingProxy::start(redis.port).await;
    let store = store_via(&proxy);
    let mut took_effect = 0;
    for (n, (cut, delivered)) in (0..3)
        .map(|c| (c, false))
        .chain((0..3).map(|c| (c, true)))
        .enumerate()
    {
        let c = customer(&format!("u{n}"));
        let email = Identity {
            kind: "email".into(),
            value: format!("u{n}@example.org"),
        };
        let event = domain_event(c.as_str(), "e1", "web", Initiator::Customer, t0());
        store.append(&[event], Micros::now()).await.expect("append");
        store
            .link(&c, std::slice::from_ref(&email), Micros::now())
            .await
            .expect("link")
            .expect("allowed");
        if delivered {
            proxy.lose_reply_after(cut);
        } else {
            proxy.cut_once_after(cut);
        }
        let attempt = store.unlink(&c, &email).await;
        proxy.heal();
        let listed = store
            .identities(&c)
            .await
            .expect("identities")
            .into_iter()
            .any(|l| l.identity == email);
        let leads = store
            .resolve(std::slice::from_ref(&email))
            .await
            .expect("resolve")
            == vec![Some(c.clone())];
        assert_eq!(
            listed, leads,
            "cut {cut} ({delivered}): listed {listed}, leads here {leads}"
        );
        if attempt.is_ok() {
            assert!(!leads, "cut {cut} ({delivered}): an unlink that answered");
        }
        if !leads {
            took_effect += 1;
        }
        // A retry finishes what a cut left.
        store.unlink(&c, &email).await.expect("unlink again");
        assert_eq!(
            store
                .resolve(std::slice::from_ref(&email))
                .await
                .expect("resolve"),
            vec![None]
        );
    }
    assert!(
        (2..6).contains(&took_effect),
        "the cuts fell outside the unlink: {took_effect} of 6 took effect"
    );
}

/// c{n} starts the banking journey at `t0`; an anonymous profile starts it
/// a minute later and takes its next step: both in progress, the
/// anonymous one moved last, unless `customer_last`: then c{n} takes its
/// next step after that. Answers both ids.
async fn seed_journeys(
    store: &dyn TimelineStore,
    n: usize,
    t0: i64,
    customer_last: bool,
) -> (CustomerId, CustomerId) {
    let c = format!("c{n}");
    let anon = CustomerId::anonymous(&format!("A{n}"));
    let mut own = vec![banking_domain_event(&c, 0, "s0", t0)];
    if customer_last {
        own.push(banking_domain_event(&c, 1, "s1", t0 + 3 * MINUTE));
    }
    store.append(&own, Micros::now()).await.expect("append");
    let theirs: Vec<_> = (0..2)
        .map(|step| {
            let at = t0 + (step as i64 + 1) * MINUTE;
            let mut e = banking_domain_event("x", step, &format!("a{step}"), at);
            e.customer_id = None;
            e.profile = anon.clone();
            e
        })
        .collect();
    store.append(&theirs, Micros::now()).await.expect("append");
    (customer(&c), anon)
}

/// The banking journey's counters of `t0`'s day: entered, merged,
/// dropped.
async fn banking_counts(store: &dyn TimelineStore, t0: i64) -> (u64, u64, u64) {
    let counters = store
        .journey_counters(BANKING, &[Day::of(Micros(t0))])
        .await
        .expect("counters");
    let get = |field: &str| counters[0].get(field).copied().unwrap_or(0);
    (get("entered"), get("merged"), get("dropped_by:inactivity"))
}

/// The members of the deadline index that name `profile`.
fn deadlines_of(raw: &mut redis::Connection, profile: &CustomerId) -> usize {
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg("journey:jdeadlines")
        .arg(0)
        .arg(-1)
        .query(raw)
        .expect("zrange");
    members
        .iter()
        .filter(|m| m.ends_with(&format!("\u{1f}{profile}")))
        .count()
}

/// Ten minutes ago: the seeded journeys are well within their 30-minute
/// inactivity timeout on the wall clock, which a merge drops by.
fn journey_t0() -> i64 {
    Micros::now().0 - 10 * MINUTE
}

/// The survivor's banking state: its status and last event id.
async fn banking_status(
    store: &dyn TimelineStore,
    profile: &CustomerId,
) -> (JourneyStatus, String) {
    let state = banking_state(store, profile).await.expect("banking state");
    (state.status, state.last_event_id.unwrap_or_default())
}

/// A merge whose reply is lost at any round trip is completed by the next
/// operation. When the lost reply was the survivor's write (the script
/// ran), completing it writes the survivor again: the journeys it carried
/// are not carried a second time, nor the closed one counted twice. The
/// merges run on an instance that never saw the survivor, so each first
/// finds its copy of the survivor's states stale and sends again.
#[tokio::test]
async fn a_merge_run_again_carries_journeys_once() {
    let redis = RedisServer::start();
    let proxy = CountingProxy::start(redis.port).await;
    let store = journey_store_via(&proxy);
    let merger = journey_store_via(&proxy);
    let mut raw = redis.connection();
    let t0 = journey_t0();
    // Warm up: load the scripts so every attempt below takes the same steps.
    let (warm_c, warm_a) = seed_journeys(&store, 99, t0, false).await;
    let merged = merger.merge(&warm_c, &warm_a, Micros::now()).await;
    assert_eq!(merged.expect("merge"), MergeOutcome::Merged);
    assert_eq!(banking_counts(&store, t0).await, (2, 1, 0));

    let mut ran_again = 0;
    // Either journey may be the one that goes on: a run again must not
    // carry the one or close the other a second time.
    let shapes = (0..10).flat_map(|cut| [(cut, false), (cut, true)]);
    for (n, (cut, customer_last)) in shapes.enumerate() {
        let (c, anon) = seed_journeys(&store, n, t0, customer_last).await;
        proxy.lose_reply_after(cut);
        let attempt = merger.merge(&c, &anon, Micros::now()).await;
        proxy.heal();
        let landed: bool = redis::cmd("HEXISTS")
            .arg(format!("journey:{{{c}}}:merges"))
            .arg(anon.as_str())
            .query(&mut raw)
            .expect("hexists");
        let fence: Option<String> = redis::cmd("GET")
            .arg(format!("journey:{{{anon}}}:alias"))
            .query(&mut raw)
            .expect("get");
        let pending = fence.is_some_and(|f| f.starts_with("pending:"));
        // The survivor's write landed, the merge is not finished: the
        // next operation runs the write again.
        if attempt.is_err() && landed && pending && customer_last {
            ran_again += 1;
        }
        // The next operation on the absorbed profile completes the merge,
        // unless the cut came before the fence: then it merges now.
        if total(&store, &anon).await.0 != c {
            assert!(attempt.is_err(), "cut {cut}: {attempt:?}");
            let again = merger.merge(&c, &anon, Micros::now()).await;
            assert_eq!(again.expect("merge"), MergeOutcome::Merged, "cut {cut}");
        }
        let last = if customer_last { "s1" } else { "a1" };
        assert_eq!(
            banking_status(&store, &c).await,
            (JourneyStatus::InProgress, last.to_string()),
            "cut {cut}: the journey that moved last goes on"
        );
        let pairs = n as u64 + 2;
        assert_eq!(
            banking_counts(&store, t0).await,
            (2 * pairs, pairs, 0),
            "cut {cut}: one closed as merged per merge"
        );
        assert_eq!(deadlines_of(&mut raw, &anon), 0, "cut {cut}");
        assert_eq!(deadlines_of(&mut raw, &c), 1, "cut {cut}");
    }
    assert!(
        ran_again > 0,
        "no cut lost the reply of a survivor's write that kept its own journey"
    );
}

/// The sweeper meets a journey due on a profile whose merge is under way
/// (fenced, not finished): it writes nothing there, completes the merge,
/// and the journey, carried to the survivor, is dropped once.
#[tokio::test]
async fn a_sweep_meeting_a_merge_under_way_completes_it() {
    let redis = RedisServer::start();
    let proxy = CountingProxy::start(redis.port).await;
    let store = journey_store_via(&proxy);
    let mut raw = redis.connection();
    let t0 = journey_t0();
    let (c, anon) = seed_journeys(&store, 1, t0, false).await;
    let alias = format!("journey:{{{anon}}}:alias");
    let () = redis::cmd("SET")
        .arg(&alias)
        .arg(format!("pending:{c}"))
        .query(&mut raw)
        .expect("fence");
    let far = Micros(Micros::now().0 + 400 * 24 * 60 * MINUTE);
    let swept = store.sweep_journeys(far, 100).await.expect("sweep");
    assert_eq!(
        (swept.due, swept.dropped),
        (2, 1),
        "the customer's own dropped, not the fenced one"
    );
    let finished: String = redis::cmd("GET").arg(&alias).query(&mut raw).expect("get");
    assert_eq!(
        finished,
        format!("done:{c}"),
        "the sweep completed the merge"
    );
    // The customer's journey had dropped: the one under way came along,
    // and nothing was closed as merged.
    assert_eq!(banking_counts(&store, t0).await, (2, 0, 1));
    assert_eq!(
        deadlines_of(&mut raw, &anon),
        0,
        "the fenced profile's went"
    );
    assert_eq!(
        banking_status(&store, &c).await,
        (JourneyStatus::InProgress, "a1".to_string())
    );
    let swept = store.sweep_journeys(far, 100).await.expect("sweep");
    assert_eq!(
        (swept.due, swept.dropped),
        (1, 1),
        "the carried journey, once"
    );
    let again = store.sweep_journeys(far, 100).await.expect("sweep");
    assert_eq!((again.due, again.dropped), (0, 0));
    assert_eq!(banking_status(&store, &c).await.0, JourneyStatus::Dropped);
}

/// With customer ids not unique (a taxonomy may say so), a customer merged
/// into another, unlinked, and merged again with a journey started
/// meanwhile: the second merge carries that journey too (a merge run
/// again is told apart by the version of the states it carried, not by
/// the history naming the profile), so the profile merged away leaves the
/// listings.
#[tokio::test]
async fn a_profile_merged_again_after_an_unlink_carries_its_new_journey() {
    use journey::domain::journey::JourneyStatus;
    use support::banking::banking_listed;
    let redis = RedisServer::start();
    let proxy = CountingProxy::start(redis.port).await;
    let loose = MergeRules {
        unique_types: Default::default(),
        max_identities: 100,
    };
    let store = with_journeys(store_with_rules(&proxy, loose));
    let t0 = journey_t0();
    let (c1, c2) = (customer("c1"), customer("c2"));
    let append = |events: Vec<journey::domain::Event>| {
        let store = &store;
        async move { store.append(&events, Micros::now()).await.expect("append") }
    };
    append(vec![domain_event(
        "c1",
        "own",
        "web",
        Initiator::Customer,
        t0,
    )])
    .await;
    append(vec![banking_domain_event("c2", 0, "first", t0)]).await;
    assert_eq!(
        store.merge(&c1, &c2, Micros::now()).await.expect("merge"),
        MergeOutcome::Merged
    );
    let c2_id = Identity {
        kind: "customer_id".into(),
        value: "c2".into(),
    };
    assert!(store.unlink(&c1, &c2_id).await.expect("unlink"));
    append(vec![banking_domain_event(
        "c2",
        0,
        "again",
        t0 + 5 * MINUTE,
    )])
    .await;
    let listed = || banking_listed(&store, JourneyStatus::InProgress, None);
    assert_eq!(listed().await, ["c1", "c2"]);
    assert_eq!(
        store.merge(&c1, &c2, Micros::now()).await.expect("merge"),
        MergeOutcome::Merged
    );
    assert_eq!(listed().await, ["c1"], "c2 left the listing");
    assert_eq!(
        banking_status(&store, &c1).await,
        (JourneyStatus::InProgress, "again".to_string()),
        "the journey moved last goes on"
    );
    assert_eq!(
        banking_counts(&store, t0).await.1,
        1,
        "the other closed as merged"
    );
}

/// An erasure cut at any round trip (Redis gone mid-way) is finished by
/// the next one, whether it names the customer id or an identity (as a
/// right-to-erasure request retried by email would): afterwards no key of
/// the customer, of the profile merged into it, nor of its email is left.
#[tokio::test]
async fn a_forget_cut_at_any_step_is_finished_by_the_next() {
    let redis = RedisServer::start();
    let proxy = CountingProxy::start(redis.port).await;
    let store = journey_store_via(&proxy);
    let mut raw = redis.connection();
    let keys_of = |raw: &mut redis::Connection, profile: &CustomerId| -> Vec<String> {
        redis::cmd("KEYS")
            .arg(format!("journey:{{{profile}}}*"))
            .query(raw)
            .expect("keys")
    };
    for by_identity in [false, true] {
        let mut cut_short = 0;
        for cut in 0..10 {
            let (c, anon) = seed(&store, cut + if by_identity { 100 } else { 0 }).await;
            let email = Identity {
                kind: "email".into(),
                value: format!("f{cut}-{by_identity}@example.org"),
            };
            store
                .link(&c, std::slice::from_ref(&email), Micros::now())
                .await
                .expect("link")
                .expect("allowed");
            let merged = store.merge(&c, &anon, Micros::now()).await;
            assert_eq!(merged.expect("merge"), MergeOutcome::Merged);
            proxy.cut_once_after(cut as i64);
            let attempt = store.forget(&c).await;
            proxy.heal();
            if attempt.is_err() {
                cut_short += 1;
                if by_identity {
                    // As ForgetCustomer does when named by an identity.
                    // Leading nowhere, it finds nothing to erase: what
                    // is left then, if anything, is what the asserts
                    // below find.
                    let owner = store
                        .resolve(std::slice::from_ref(&email))
                        .await
                        .expect("resolve")
                        .pop()
                        .flatten();
                    if let Some(owner) = owner {
                        if store.forget(&owner).await.expect("forget again").is_none() {
                            store.unlink(&owner, &email).await.expect("unlink");
                        }
                    }
                } else {
                    // The next erasure finishes it (or finds nothing left).
                    store.forget(&c).await.expect("forget again");
                }
            }
            let label = format!("cut {cut}, retried by identity: {by_identity}");
            assert!(
                keys_of(&mut raw, &c).is_empty(),
                "{label}: {:?}",
                keys_of(&mut raw, &c)
            );
            assert!(
                keys_of(&mut raw, &anon).is_empty(),
                "{label}: {:?}",
                keys_of(&mut raw, &anon)
            );
            let owners = store
                .resolve(std::slice::from_ref(&email))
                .await
                .expect("resolve");
            assert_eq!(owners, vec![None], "{label}");
        }
        assert!(
            cut_short > 2,
            "only {cut_short} cuts fell inside the erasure"
        );
    }
}

/// A survivor whose journey states do not read: the merge goes on without
/// carrying journeys (rather than never), and the absorbed profile still
/// leaves the listings.
#[tokio::test]
async fn a_merge_into_unreadable_states_goes_on_and_lists_the_absorbed_no_more() {
    use journey::domain::journey::JourneyStatus;
    use support::banking::banking_listed;
    let redis = RedisServer::start();
    let proxy = CountingProxy::start(redis.port).await;
    let store = journey_store_via(&proxy);
    let mut raw = redis.connection();
    let t0 = journey_t0();
    let (c, anon) = seed_journeys(&store, 1, t0, false).await;
    let () = redis::cmd("HSET")
        .arg(format!("journey:{{{c}}}:jny"))
        .arg("personal_data_verification")
        .arg("{not json")
        .query(&mut raw)
        .expect("corrupt");
    let listed = || banking_listed(&store, JourneyStatus::InProgress, None);
    assert!(listed().await.contains(&anon.to_string()));
    // Another instance: its copy of the survivor's states is not current,
    // so the script answers the (unreadable) current ones.
    let other = journey_store_via(&proxy);
    let merged = other.merge(&c, &anon, Micros::now()).await;
    assert_eq!(merged.expect("merge"), MergeOutcome::Merged);
    let after = listed().await;
    assert!(!after.contains(&anon.to_string()), "{after:?}");
}
