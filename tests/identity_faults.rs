//! A merge on Redis interrupted by a lost connection at every step: the
//! state left behind is consistent for readers, and the next operation on
//! the absorbed profile completes the merge (or it was never started). A
//! link cut between its steps leaves no identity on a profile without its
//! key.

mod support;

use std::time::Duration;

use journey::{
    domain::{CustomerId, EventLimits, Identity, Initiator, MergeRules, Micros},
    storage::{redis_store::RedisSettings, MergeOutcome, RedisStore, Retention, TimelineStore},
};
use support::{events::domain_event, proxy::CountingProxy, redis_server::RedisServer};

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
    let settings = RedisSettings {
        url: proxy.url(),
        response_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
    };
    RedisStore::open(&settings, Retention::default(), rules()).expect("open")
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
