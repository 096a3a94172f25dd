//! The store conformance suite: the same cases run against the memory store
//! and the Redis store (each test with its own redis-server), so the two
//! backends keep the same contract.

mod support;

use std::sync::Arc;

use journey::{
    domain::{journey::JourneyDefinitions, Taxonomy},
    storage::{JourneyTracker, MemoryStore, RedisStore, Retention, TimelineStore},
};
use support::redis_server::RedisServer;

/// A store under test and whatever must live as long as it, with the
/// journey definitions it follows (swapped as a reload does).
pub struct Fixture {
    pub store: Arc<dyn TimelineStore>,
    pub redis: Option<RedisServer>,
    pub definitions: Arc<arc_swap::ArcSwap<JourneyDefinitions>>,
}

pub fn rules() -> journey::domain::MergeRules {
    journey::domain::MergeRules {
        unique_types: ["customer_id".to_string(), "crm_id".to_string()].into(),
        max_identities: 6,
    }
}

/// The built-in journeys: every case runs with journeys followed, as the
/// service runs by default.
pub fn tracker() -> (JourneyTracker, Arc<arc_swap::ArcSwap<JourneyDefinitions>>) {
    let taxonomy = Arc::new(Taxonomy::builtin());
    let definitions = JourneyDefinitions::builtin(&taxonomy).expect("built-in journeys");
    let definitions = Arc::new(arc_swap::ArcSwap::from_pointee(definitions));
    (
        JourneyTracker::new(definitions.clone(), taxonomy),
        definitions,
    )
}

pub async fn memory_fixture(retention: Retention) -> Fixture {
    let (tracker, definitions) = tracker();
    Fixture {
        store: Arc::new(MemoryStore::new(retention, rules(), 1_000_000).with_journeys(tracker)),
        redis: None,
        definitions,
    }
}

pub async fn redis_fixture(retention: Retention) -> Fixture {
    let redis = RedisServer::start();
    let settings = journey::storage::redis_store::RedisSettings {
        url: redis.url(),
        response_timeout: std::time::Duration::from_secs(5),
        connect_timeout: std::time::Duration::from_secs(5),
    };
    let (tracker, definitions) = tracker();
    let store = RedisStore::open(&settings, retention, rules())
        .expect("open redis store")
        .with_journeys(tracker, 1_000, 32 << 20);
    Fixture {
        store: Arc::new(store),
        redis: Some(redis),
        definitions,
    }
}

mod cases {
    use std::collections::{BTreeSet, HashSet};

    use journey::{
        domain::{
            Contact, ContactNames, CustomerId, CustomerSummary, Event, EventLimits, Identity,
            Initiator, Micros,
        },
        storage::{
            codec, AppendOutcome, ContactHistory, Cursor, EncodedEvent, FramedEvents, MergeOutcome,
            Reserved, TimelineQuery, TimelineStore,
        },
    };

    use crate::support::{
        banking::{banking_listed, banking_listing, banking_state, BANKING},
        events::{banking_domain_event as banking_event, domain_event},
    };

    const T0: i64 = 1_763_800_000_000_000;
    const HOUR: i64 = 3_600_000_000;

    fn now() -> Micros {
        Micros(T0 + HOUR)
    }

    fn customer(id: &str) -> CustomerId {
        CustomerId::parse("customer_id", id, &EventLimits::default()).expect("valid id")
    }

    fn ids(events: &[EncodedEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| codec::decode(e).expect("decodes").event_id)
            .collect()
    }

    fn framed_ids(events: &FramedEvents) -> Vec<String> {
        ids(&events.iter().collect::<Vec<_>>())
    }

    fn query(c: &str, limit: usize) -> TimelineQuery {
        TimelineQuery {
            customer: customer(c),
            start: None,
            end: None,
            channels: BTreeSet::new(),
            initiator: None,
            limit,
            after: None,
        }
    }

    /// The ids of every page from `q` on, following the cursors; each page
    /// holds at most `q.limit` events.
    async fn all_pages(store: &dyn TimelineStore, mut q: TimelineQuery) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let page = store.list(&q).await.expect("list").expect("found");
            assert!(page.events.len() <= q.limit);
            seen.extend(ids(&page.events));
            match page.next {
                Some(next) => q.after = Some(next),
                None => return seen,
            }
        }
    }

    /// A mixed timeline: channels, initiators, out-of-order times and
    /// several events at one instant.
    fn mixed(c: &str, n: usize) -> Vec<Event> {
        let channels = ["web", "email", "chat", "call_center", "branch"];
        (0..n)
            .map(|i| {
                let initiator = if i % 3 == 0 {
                    Initiator::Company
                } else {
                    Initiator::Customer
                };
                // Every fourth event shares the instant of its neighbour;
                // the order of appends is shuffled against time.
                let at = T0 + ((i * 7919) % n) as i64 / 2 * 1_000 + 1;
                domain_event(
                    c,
                    &format!("e{i:03}"),
                    channels[i % channels.len()],
                    initiator,
                    at,
                )
            })
            .collect()
    }

    /// Newest first, ties by encoded bytes descending: the contract's order.
    fn expected_order(events: &[Event]) -> Vec<String> {
        let mut keyed: Vec<(Micros, Vec<u8>, String)> = events
            .iter()
            .map(|e| {
                (
                    e.occurred_at,
                    codec::encode(e).0.to_vec(),
                    e.event_id.to_string(),
                )
            })
            .collect();
        keyed.sort();
        keyed.reverse();
        keyed.into_iter().map(|(_, _, id)| id).collect()
    }

    pub async fn append_is_idempotent(store: &dyn TimelineStore) {
        let e = domain_event("c1", "e1", "web", Initiator::Customer, T0);
        let first = store
            .append(std::slice::from_ref(&e), now())
            .await
            .expect("append");
        let again = store
            .append(std::slice::from_ref(&e), now())
            .await
            .expect("append");
        assert_eq!(first, vec![AppendOutcome::Stored]);
        assert_eq!(again, vec![AppendOutcome::Duplicate]);
        // Same id, different content: still a duplicate, first one wins.
        let changed = domain_event("c1", "e1", "email", Initiator::Company, T0 + 5);
        assert_eq!(
            store.append(&[changed], now()).await.expect("append"),
            vec![AppendOutcome::Duplicate]
        );
        let snap = store
            .context(&customer("c1"), 50, Micros(0))
            .await
            .expect("ctx")
            .expect("found");
        assert_eq!(snap.summary.total_events, 1);
        assert_eq!(framed_ids(&snap.events), vec!["e1"]);
        assert_eq!(
            snap.summary.channels.keys().collect::<Vec<_>>(),
            vec!["web"]
        );
    }

    pub async fn duplicates_within_one_batch(store: &dyn TimelineStore) {
        let a = domain_event("c1", "x", "web", Initiator::Customer, T0);
        let b = domain_event("c2", "x", "web", Initiator::Customer, T0);
        let outcomes = store
            .append(&[a.clone(), b, a], now())
            .await
            .expect("append");
        // The same id for another customer is another event.
        assert_eq!(
            outcomes,
            vec![
                AppendOutcome::Stored,
                AppendOutcome::Stored,
                AppendOutcome::Duplicate
            ]
        );
    }

    pub async fn unknown_customer_is_none(store: &dyn TimelineStore) {
        assert!(store
            .context(&customer("nobody"), 50, Micros(0))
            .await
            .expect("ctx")
            .is_none());
        assert!(store
            .list(&query("nobody", 10))
            .await
            .expect("list")
            .is_none());
    }

    pub async fn out_of_order_events_land_in_place(store: &dyn TimelineStore) {
        let events = mixed("c1", 40);
        for chunk in events.chunks(7) {
            store.append(chunk, now()).await.expect("append");
        }
        let snap = store
            .context(&customer("c1"), 1_000, Micros(0))
            .await
            .expect("ctx")
            .expect("found");
        assert_eq!(framed_ids(&snap.events), expected_order(&events));
        let few = store
            .context(&customer("c1"), 5, Micros(0))
            .await
            .expect("ctx")
            .expect("found");
        assert_eq!(
            framed_ids(&few.events),
            expected_order(&events)[..5].to_vec()
        );
    }

    pub async fn summary_matches_a_direct_computation(store: &dyn TimelineStore) {
        let events = mixed("c1", 60);
        store.append(&events, now()).await.expect("append");
        let snap = store
            .context(&customer("c1"), 10, Micros(0))
            .await
            .expect("ctx")
            .expect("found");
        assert_eq!(*snap.summary, CustomerSummary::from_events(&events));
        let latest = |who: Initiator| {
            let mut of: Vec<&Event> = events.iter().filter(|e| e.initiator == who).collect();
            // The earliest appended wins among events of the same instant.
            of.sort_by_key(|e| std::cmp::Reverse(e.occurred_at));
            of.first().map(|e| e.occurred_at)
        };
        let at = |e: &Option<EncodedEvent>| {
            e.as_ref()
                .map(|e| codec::occurred_at(&codec::decode(e).expect("decodes")))
        };
        assert_eq!(
            at(&snap.last_customer_interaction),
            latest(Initiator::Customer)
        );
        assert_eq!(at(&snap.last_company_contact), latest(Initiator::Company));
    }

    pub async fn retention_keeps_the_newest_events(store: &dyn TimelineStore) {
        // The fixture keeps at most 10 events per customer.
        let events = mixed("c1", 25);
        for chunk in events.chunks(4) {
            store.append(chunk, now()).await.expect("append");
        }
        let snap = store
            .context(&customer("c1"), 1_000, Micros(0))
            .await
            .expect("ctx")
            .expect("found");
        let order = expected_order(&events);
        assert_eq!(framed_ids(&snap.events), order[..10].to_vec());
        let held: Vec<&Event> = events
            .iter()
            .filter(|e| order[..10].contains(&e.event_id.to_string()))
            .collect();
        let reference = CustomerSummary::from_events(held.iter().copied());
        assert_eq!(snap.summary.total_events, 10);
        assert_eq!(snap.summary.channels, reference.channels);
        // First seen is the first event ever stored, even once trimmed.
        assert_eq!(
            snap.summary.first_seen,
            events.iter().map(|e| e.occurred_at).min()
        );
    }

    pub async fn retention_drops_old_events(store: &dyn TimelineStore) {
        let old = domain_event("c1", "old", "web", Initiator::Customer, T0);
        let new = domain_event("c1", "new", "chat", Initiator::Customer, T0 + 10 * HOUR);
        store.append(&[old], now()).await.expect("append");
        // The fixture keeps 5 hours: by T0 + 10h the first event is out.
        store
            .append(&[new], Micros(T0 + 10 * HOUR))
            .await
            .expect("append");
        let snap = store
            .context(&customer("c1"), 50, Micros(0))
            .await
            .expect("ctx")
            .expect("found");
        assert_eq!(framed_ids(&snap.events), vec!["new"]);
        assert_eq!(
            snap.summary.channels.keys().collect::<Vec<_>>(),
            vec!["chat"]
        );
        assert_eq!(snap.summary.total_events, 1);
    }

    pub async fn pages_cover_the_timeline_once(store: &dyn TimelineStore) {
        let events = mixed("c1", 9);
        store.append(&events, now()).await.expect("append");
        let seen = all_pages(store, query("c1", 2)).await;
        assert_eq!(seen, expected_order(&events));
    }

    pub async fn filters_and_time_range(store: &dyn TimelineStore) {
        let events = mixed("c1", 9);
        store.append(&events, now()).await.expect("append");
        let (start, end) = (Micros(T0 + 1_000), Micros(T0 + 3_001));
        let mut q = query("c1", 2);
        q.channels = ["web".to_string(), "chat".to_string()].into();
        q.initiator = Some(Initiator::Customer);
        q.start = Some(start);
        q.end = Some(end);
        let seen = all_pages(store, q).await;
        let kept: Vec<Event> = events
            .iter()
            .filter(|e| ["web", "chat"].contains(&e.channel.as_str()))
            .filter(|e| e.initiator == Initiator::Customer)
            .filter(|e| e.occurred_at >= start && e.occurred_at < end)
            .cloned()
            .collect();
        assert!(!kept.is_empty(), "the case must select something");
        assert_eq!(seen, expected_order(&kept));
    }

    pub async fn paging_is_stable_while_events_arrive(store: &dyn TimelineStore) {
        let events = mixed("c1", 12);
        store.append(&events, now()).await.expect("append");
        let first = store
            .list(&query("c1", 4))
            .await
            .expect("list")
            .expect("found");
        // Newer events and an event at the cursor's very instant arrive.
        let cursor: Cursor = first.next.clone().expect("more pages");
        let newer = domain_event("c1", "newer", "web", Initiator::Customer, T0 + HOUR / 2);
        let same_instant_after = domain_event(
            "c1",
            "zzzz",
            "web",
            Initiator::Customer,
            cursor.occurred_at.0,
        );
        store
            .append(&[newer, same_instant_after], now())
            .await
            .expect("append");
        let mut seen: Vec<String> = ids(&first.events);
        let mut q = query("c1", 4);
        q.after = first.next;
        seen.extend(all_pages(store, q).await);
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "no event repeated: {seen:?}");
        for id in expected_order(&events) {
            assert!(seen.contains(&id), "{id} skipped");
        }
        assert!(
            !seen.contains(&"newer".to_string()),
            "newer events are not in old pages"
        );
    }

    pub async fn customers_are_isolated(store: &dyn TimelineStore) {
        // Ids with the characters of the Redis key layout.
        let tricky = ["a", "a}:tl", "{a}", "a}:sum", "a:b", "é 🙂"];
        for (i, c) in tricky.iter().enumerate() {
            let e = domain_event(c, "same-id", "web", Initiator::Customer, T0 + i as i64);
            assert_eq!(
                store.append(&[e], now()).await.expect("append"),
                vec![AppendOutcome::Stored]
            );
        }
        for (i, c) in tricky.iter().enumerate() {
            let snap = store
                .context(&customer(c), 50, Micros(0))
                .await
                .expect("ctx")
                .expect("found");
            assert_eq!(snap.summary.total_events, 1, "{c}");
            let decoded = codec::decode(&snap.events.get(0).expect("an event")).expect("decodes");
            assert_eq!(decoded.customer_id, *c);
            assert_eq!(codec::occurred_at(&decoded), Micros(T0 + i as i64));
        }
    }

    pub async fn microseconds_survive(store: &dyn TimelineStore) {
        let at = T0 + 123_457;
        store
            .append(
                &[domain_event("c1", "e", "web", Initiator::Customer, at)],
                now(),
            )
            .await
            .expect("append");
        let snap = store
            .context(&customer("c1"), 1, Micros(0))
            .await
            .expect("ctx")
            .expect("found");
        let event = codec::decode(&snap.events.get(0).expect("an event")).expect("decodes");
        assert_eq!(
            event.occurred_at.map(|t| t.nanos % 1_000_000_000),
            Some(123_457_000)
        );
        assert_eq!(snap.summary.last_seen, Some(Micros(at)));
    }

    pub async fn ping_answers(store: &dyn TimelineStore) {
        store.ping().await.expect("ping");
    }

    fn company(c: &str, id: &str, channel: &str, at: i64, campaign: &str) -> Event {
        let mut e = domain_event(c, id, channel, Initiator::Company, at);
        if !campaign.is_empty() {
            e.attributes.insert("campaign_id".into(), campaign.into());
        }
        e
    }

    fn reservation(id: &str, at: i64) -> Contact {
        Contact::new(
            Micros(at),
            true,
            ContactNames {
                event_id: id,
                channel: "email",
                reason: "service_update",
                event_type: "notification_shown",
                campaign_id: "c42",
            },
        )
    }

    async fn history(store: &dyn TimelineStore, c: &str, since: i64) -> ContactHistory {
        store
            .contacts(&[customer(c)], Micros(since))
            .await
            .expect("contacts")
            .pop()
            .expect("one history")
    }

    pub async fn company_events_feed_the_contact_index(store: &dyn TimelineStore) {
        let mut with_tz = domain_event("c1", "u1", "web", Initiator::Customer, T0);
        with_tz
            .attributes
            .insert("timezone".into(), "Europe/Paris".into());
        let events = vec![
            company("c1", "k1", "email", T0 + 10, "c42"),
            with_tz,
            company("c1", "k2", "sms", T0 + 5, ""),
            domain_event("c1", "u2", "chat", Initiator::Customer, T0 + 20),
        ];
        store.append(&events, now()).await.expect("append");
        let h = history(store, "c1", 0).await;
        assert!(h.known);
        assert_eq!(h.timezone.as_deref(), Some("Europe/Paris"));
        let got: Vec<(i64, &str, &str, &str)> = h
            .contacts
            .iter()
            .map(|c| (c.at.0, c.event_id(), c.channel(), c.campaign_id()))
            .collect();
        assert_eq!(
            got,
            vec![(T0 + 5, "k2", "sms", ""), (T0 + 10, "k1", "email", "c42")]
        );
        assert!(h
            .contacts
            .iter()
            .all(|c| !c.reserved && c.reason() == "service_update"));
        // Only contacts at or after `since` are read.
        assert_eq!(history(store, "c1", T0 + 6).await.contacts.len(), 1);
        // Duplicates add nothing and leave the version alone.
        let version = h.version;
        store.append(&events[..1], now()).await.expect("append");
        let again = history(store, "c1", 0).await;
        assert_eq!((again.contacts.len(), again.version), (2, version));
        // The context carries the contacts since the asked instant.
        let snap = store
            .context(&customer("c1"), 1, Micros(T0 + 6))
            .await
            .expect("ctx")
            .expect("found");
        assert_eq!(snap.contacts.len(), 1);
        assert_eq!(snap.contacts[0].event_id(), "k1");
    }

    pub async fn unknown_customers_have_empty_histories(store: &dyn TimelineStore) {
        let h = history(store, "nobody", 0).await;
        assert_eq!(h, ContactHistory::default());
    }

    pub async fn reservations_are_compare_and_set(store: &dyn TimelineStore) {
        let c = customer("c1");
        let v0 = history(store, "c1", 0).await.version;
        assert_eq!(
            store
                .reserve_contact(&c, &reservation("r1", T0), v0, now())
                .await
                .expect("reserve"),
            Reserved::Recorded
        );
        // A second writer that read the same version loses.
        assert_eq!(
            store
                .reserve_contact(&c, &reservation("r2", T0), v0, now())
                .await
                .expect("reserve"),
            Reserved::Stale
        );
        let h = history(store, "c1", 0).await;
        assert_eq!(h.contacts.len(), 1);
        assert!(h.contacts[0].reserved);
        assert_ne!(h.version, v0);
        // A customer known only by a reservation has no journey context.
        assert!(store
            .context(&c, 10, Micros(0))
            .await
            .expect("ctx")
            .is_none());
        // The event appended with the reservation's id replaces it.
        store
            .append(&[company("c1", "r1", "email", T0 + 1, "c42")], now())
            .await
            .expect("append");
        let h = history(store, "c1", 0).await;
        assert_eq!(h.contacts.len(), 1, "{:?}", h.contacts);
        assert!(!h.contacts[0].reserved);
        assert_eq!(h.contacts[0].at, Micros(T0 + 1));
    }

    /// A reservation is not recorded under an id the profile holds
    /// already, an event's (not a contact) or a contact's older than the
    /// read looked back: it would count until it left the window, an event
    /// with its id being a duplicate rather than its replacement.
    pub async fn a_reservation_takes_no_id_already_held(store: &dyn TimelineStore) {
        let c = customer("c1");
        store
            .append(
                &[domain_event("c1", "seen-1", "web", Initiator::Customer, T0)],
                now(),
            )
            .await
            .expect("append");
        let version = history(store, "c1", 0).await.version;
        assert_eq!(
            store
                .reserve_contact(&c, &reservation("seen-1", T0 + 1), version, now())
                .await
                .expect("reserve"),
            Reserved::IdTaken
        );
        assert_eq!(
            store
                .reserve_contact(&c, &reservation("r1", T0 + 1), version, now())
                .await
                .expect("reserve"),
            Reserved::Recorded
        );
        // Read from after it: r1 is not among the contacts, yet held.
        let later = history(store, "c1", T0 + 2).await;
        assert!(later.contacts.is_empty());
        assert_eq!(
            store
                .reserve_contact(&c, &reservation("r1", T0 + 3), later.version, now())
                .await
                .expect("reserve"),
            Reserved::IdTaken
        );
        let h = history(store, "c1", 0).await;
        let ids: Vec<_> = h.contacts.iter().map(|c| (c.event_id(), c.at)).collect();
        assert_eq!(ids, [("r1", Micros(T0 + 1))], "nothing recorded twice");
        assert_eq!(h.version, later.version, "refusals change nothing");
    }

    /// A history read through a merge names the survivor, where a
    /// reservation decided on it goes; one sent to the profile merged away
    /// is refused (its version is not the survivor's).
    pub async fn reservations_follow_a_merge(store: &dyn TimelineStore) {
        let anon = anonymous("R");
        let c = customer("c7");
        store
            .append(
                &[
                    domain_event("c7", "e1", "web", Initiator::Customer, T0),
                    placed(company("x", "e2", "email", T0 + 1, "c42"), &anon),
                ],
                now(),
            )
            .await
            .expect("append");
        assert_eq!(
            store.merge(&c, &anon, Micros(T0 + 2)).await.expect("merge"),
            MergeOutcome::Merged
        );
        let read = store
            .contacts(std::slice::from_ref(&anon), Micros(0))
            .await
            .expect("contacts")
            .pop()
            .expect("one history");
        assert_eq!(read.contacts.len(), 1, "read through the merge");
        assert_eq!(read.read_from, Some(c.clone()));
        assert_eq!(
            store
                .reserve_contact(&anon, &reservation("r0", T0 + 3), read.version, now())
                .await
                .expect("reserve"),
            Reserved::Stale
        );
        assert_eq!(
            store
                .reserve_contact(&c, &reservation("r1", T0 + 3), read.version, now())
                .await
                .expect("reserve"),
            Reserved::Recorded
        );
        let h = history(store, "c7", 0).await;
        assert_eq!(h.contacts.len(), 2, "{:?}", h.contacts);
        assert!(h.contacts[1].reserved);
    }

    /// A merge carries the absorbed profile's whole contact index: contacts
    /// whose events the timeline's count limit took still count, and the
    /// absorbed profile's event replaces the survivor's reservation of its
    /// id (retention: 10 events).
    pub async fn merges_carry_every_contact(store: &dyn TimelineStore) {
        let anon = anonymous("K");
        let c = customer("c8");
        let mut theirs: Vec<Event> = (0..3)
            .map(|i| placed(company("x", &format!("m{i}"), "email", T0 + i, ""), &anon))
            .collect();
        theirs.push(placed(company("x", "r1", "email", T0 + 5, ""), &anon));
        theirs.extend((0..12).map(|i| {
            placed(
                domain_event(
                    "x",
                    &format!("w{i}"),
                    "web",
                    Initiator::Customer,
                    T0 + 10 + i,
                ),
                &anon,
            )
        }));
        store.append(&theirs, now()).await.expect("append");
        store
            .append(
                &[domain_event("c8", "own", "web", Initiator::Customer, T0)],
                now(),
            )
            .await
            .expect("append");
        let v0 = history(store, "c8", 0).await.version;
        assert_eq!(
            store
                .reserve_contact(&c, &reservation("r1", T0 + 4), v0, now())
                .await
                .expect("reserve"),
            Reserved::Recorded
        );
        assert_eq!(
            store
                .merge(&c, &anon, Micros(T0 + 30))
                .await
                .expect("merge"),
            MergeOutcome::Merged
        );
        let h = history(store, "c8", 0).await;
        let ids: Vec<&str> = h.contacts.iter().map(|c| c.event_id()).collect();
        assert_eq!(ids, ["m0", "m1", "m2", "r1"], "{:?}", h.contacts);
        let r1 = &h.contacts[3];
        assert!(!r1.reserved, "the event replaced the reservation");
        assert_eq!(r1.at, Micros(T0 + 5));
    }

    pub async fn many_histories_come_back_in_order(store: &dyn TimelineStore) {
        // More customers than one Redis round trip carries.
        let customers: Vec<CustomerId> = (0..2_500).map(|i| customer(&format!("m{i}"))).collect();
        let events: Vec<Event> = (0..2_500)
            .step_by(3)
            .map(|i| company(&format!("m{i}"), "k", "email", T0 + i as i64, ""))
            .collect();
        for chunk in events.chunks(500) {
            store.append(chunk, now()).await.expect("append");
        }
        let histories = store
            .contacts(&customers, Micros(0))
            .await
            .expect("contacts");
        assert_eq!(histories.len(), 2_500);
        for (i, h) in histories.iter().enumerate() {
            assert_eq!(h.known, i % 3 == 0, "m{i}");
            if h.known {
                assert_eq!(h.contacts[0].at, Micros(T0 + i as i64), "m{i}");
            }
        }
    }

    fn identity(kind: &str, value: &str) -> Identity {
        Identity {
            kind: kind.into(),
            value: value.into(),
        }
    }

    fn anonymous(id: &str) -> CustomerId {
        CustomerId::anonymous(id)
    }

    /// An anonymous visitor's event, placed in `profile`.
    fn placed(mut event: Event, profile: &CustomerId) -> Event {
        event.customer_id = None;
        event.identities.push(identity("device_id", "d1"));
        event.profile = profile.clone();
        event
    }

    pub async fn identities_link_resolve_and_unlink(store: &dyn TimelineStore) {
        let anon = anonymous("A");
        let cookie = identity("cookie_id", "ck1");
        assert_eq!(
            store
                .resolve(std::slice::from_ref(&cookie))
                .await
                .expect("resolve"),
            vec![None]
        );
        let owners = store
            .link(&anon, std::slice::from_ref(&cookie), Micros(T0))
            .await
            .expect("link")
            .expect("the rules allow it");
        assert_eq!(owners, vec![anon.clone()]);
        // Linked already: another profile does not take it.
        let owners = store
            .link(&customer("c2"), std::slice::from_ref(&cookie), Micros(T0))
            .await
            .expect("link")
            .expect("the rules allow it");
        assert_eq!(owners, vec![anon.clone()]);
        assert_eq!(
            store
                .resolve(std::slice::from_ref(&cookie))
                .await
                .expect("resolve"),
            vec![Some(anon.clone())]
        );
        // A customer id names its profile directly.
        let by_id = store
            .resolve(&[identity("customer_id", "c9")])
            .await
            .expect("resolve");
        assert_eq!(by_id, vec![Some(customer("c9"))]);
        assert_eq!(
            store.canonical(&anon).await.expect("canonical"),
            Some(anon.clone())
        );
        assert_eq!(
            store
                .canonical(&customer("nobody"))
                .await
                .expect("canonical"),
            None
        );
        let linked = store.identities(&anon).await.expect("identities");
        assert_eq!(linked.len(), 1);
        assert_eq!(linked[0].identity, cookie);
        // Known by its links alone: a contact check finds it.
        let histories = store
            .contacts(std::slice::from_ref(&anon), Micros(0))
            .await
            .expect("contacts");
        assert!(histories[0].known, "{histories:?}");
        assert!(store.unlink(&anon, &cookie).await.expect("unlink"));
        assert_eq!(
            store
                .resolve(std::slice::from_ref(&cookie))
                .await
                .expect("resolve"),
            vec![None]
        );
        assert!(!store.unlink(&anon, &cookie).await.expect("unlink"));
    }

    pub async fn a_merge_moves_everything_once(store: &dyn TimelineStore) {
        let anon = anonymous("A");
        let c1 = customer("c1");
        let mut web = domain_event("c1", "e1", "web", Initiator::Customer, T0);
        web.identities.push(identity("email", "ann@x.org"));
        let mine = vec![
            web,
            domain_event("c1", "shared", "web", Initiator::Customer, T0 + 1),
        ];
        let theirs = vec![
            placed(company("x", "e3", "email", T0 + 2, "c42"), &anon),
            placed(
                domain_event("x", "shared", "web", Initiator::Customer, T0 + 1),
                &anon,
            ),
            placed(
                domain_event("x", "e4", "chat", Initiator::Customer, T0 - 5),
                &anon,
            ),
        ];
        store.append(&mine, now()).await.expect("append");
        store.append(&theirs, now()).await.expect("append");
        store
            .link(&anon, &[identity("cookie_id", "ck1")], Micros(T0))
            .await
            .expect("link")
            .expect("the rules allow it");

        assert_eq!(
            store
                .merge(&c1, &anon, Micros(T0 + 9))
                .await
                .expect("merge"),
            MergeOutcome::Merged
        );
        let snap = store
            .context(&c1, 50, Micros(0))
            .await
            .expect("ctx")
            .expect("found");
        let mut got = framed_ids(&snap.events);
        got.sort();
        assert_eq!(got, ["e1", "e3", "e4", "shared"], "each event once");
        let unique: Vec<&Event> = mine
            .iter()
            .chain(theirs[..1].iter())
            .chain(theirs[2..].iter())
            .collect();
        let reference = CustomerSummary::from_events(unique.iter().copied());
        assert_eq!(*snap.summary, reference);
        assert_eq!(snap.profile, c1);
        assert_eq!(snap.merges.len(), 1);
        assert_eq!(snap.merges[0].from, anon);
        let kinds: Vec<String> = snap
            .identities
            .iter()
            .map(|l| l.identity.to_string())
            .collect();
        assert!(kinds.contains(&"cookie_id:ck1".to_string()), "{kinds:?}");
        assert!(kinds.contains(&"email:ann@x.org".to_string()), "{kinds:?}");
        assert!(kinds.contains(&"customer_id:c1".to_string()), "{kinds:?}");
        assert!(kinds.contains(&"device_id:d1".to_string()), "{kinds:?}");
        let email = snap
            .identities
            .iter()
            .find(|l| l.identity.kind == "email")
            .expect("email");
        assert_eq!(
            (email.first_seen, email.first_channel.as_str()),
            (Micros(T0), "web")
        );
        // The absorbed id, its identities and its contacts lead to c1.
        let via_old = store
            .context(&anon, 50, Micros(0))
            .await
            .expect("ctx")
            .expect("found");
        assert_eq!(via_old.profile, c1);
        let cookie = store
            .resolve(&[identity("cookie_id", "ck1")])
            .await
            .expect("resolve");
        let owner = cookie[0].clone().expect("linked");
        assert_eq!(
            store.canonical(&owner).await.expect("canonical"),
            Some(c1.clone())
        );
        let h = history(store, "c1", 0).await;
        assert_eq!(h.contacts.len(), 1);
        // Appends to the old id land in the survivor.
        let late = placed(
            domain_event("x", "late", "web", Initiator::Customer, T0 + 3),
            &anon,
        );
        store.append(&[late], now()).await.expect("append");
        let snap = store
            .context(&c1, 50, Micros(0))
            .await
            .expect("ctx")
            .expect("found");
        assert_eq!(snap.summary.total_events, 5);
        // Merging again changes nothing.
        assert_eq!(
            store
                .merge(&c1, &anon, Micros(T0 + 10))
                .await
                .expect("merge"),
            MergeOutcome::AlreadyOne
        );
    }

    /// A profile that absorbed another brings that merge along when it is
    /// absorbed in turn: the survivor's history names every profile whose
    /// data it holds.
    pub async fn merges_carry_the_absorbed_profiles_own(store: &dyn TimelineStore) {
        let (first, second, c1) = (anonymous("A"), anonymous("B"), customer("c1"));
        let visit = |id: &str, profile: &CustomerId, at: i64| {
            let mut event = domain_event("x", id, "web", Initiator::Customer, at);
            event.customer_id = None;
            event.profile = profile.clone();
            event
        };
        store
            .append(
                &[
                    visit("a1", &first, T0),
                    visit("b1", &second, T0 + 1),
                    domain_event("c1", "c1", "web", Initiator::Customer, T0 + 2),
                ],
                now(),
            )
            .await
            .expect("append");
        for (target, other, at) in [(&first, &second, T0 + 5), (&c1, &first, T0 + 9)] {
            assert_eq!(
                store.merge(target, other, Micros(at)).await.expect("merge"),
                MergeOutcome::Merged
            );
        }
        let snap = store
            .context(&c1, 50, Micros(0))
            .await
            .expect("ctx")
            .expect("found");
        let history: Vec<(String, Micros)> = snap
            .merges
            .iter()
            .map(|m| (m.from.to_string(), m.at))
            .collect();
        assert_eq!(
            history,
            [
                (second.to_string(), Micros(T0 + 5)),
                (first.to_string(), Micros(T0 + 9))
            ]
        );
        assert_eq!(snap.events.len(), 3);
    }

    /// The store checks the merge rules with the link's write, so two
    /// links that each passed a check made before them cannot together
    /// break them: the second is refused and links nothing.
    pub async fn links_that_break_rules_are_refused_and_link_nothing(store: &dyn TimelineStore) {
        let a = anonymous("A");
        store
            .link(&a, &[identity("crm_id", "A1")], Micros(T0))
            .await
            .expect("link")
            .expect("a first CRM id");
        let refused = store
            .link(
                &a,
                &[identity("email", "a@example.com"), identity("crm_id", "B2")],
                Micros(T0),
            )
            .await
            .expect("link")
            .expect_err("a second CRM id");
        assert!(
            refused.contains("crm_id") && refused.contains("A1 and B2"),
            "{refused}"
        );
        assert_eq!(
            store
                .resolve(&[identity("email", "a@example.com"), identity("crm_id", "B2")])
                .await
                .expect("resolve"),
            vec![None, None],
            "a refused link claims nothing"
        );
        let held: Vec<Identity> = store
            .identities(&a)
            .await
            .expect("identities")
            .into_iter()
            .map(|l| l.identity)
            .collect();
        assert_eq!(held, vec![identity("crm_id", "A1")]);
        // Linking again what the profile holds is never refused.
        assert_eq!(
            store
                .link(&a, &[identity("crm_id", "A1")], Micros(T0))
                .await
                .expect("link"),
            Ok(vec![a.clone()])
        );
        // The limit (6 in the fixture): one past it is refused and linked
        // nowhere. A customer's own id counts as one of them.
        for (profile, room) in [(anonymous("X"), 6), (customer("c1"), 5)] {
            let cookies: Vec<Identity> = (0..=room)
                .map(|i| identity("cookie_id", &format!("{profile}-{i}")))
                .collect();
            store
                .link(&profile, &cookies[..room], Micros(T0))
                .await
                .expect("link")
                .unwrap_or_else(|r| panic!("{profile}: {room} refused: {r}"));
            let refused = store
                .link(&profile, &cookies[room..], Micros(T0))
                .await
                .expect("link")
                .expect_err("one past the limit");
            assert!(refused.contains("limit of 6"), "{profile}: {refused}");
            assert_eq!(
                store.resolve(&cookies[room..]).await.expect("resolve"),
                vec![None]
            );
        }
    }

    pub async fn merges_that_break_rules_are_refused(store: &dyn TimelineStore) {
        let (c1, c2) = (customer("c1"), customer("c2"));
        store
            .append(
                &[domain_event("c1", "e1", "web", Initiator::Customer, T0)],
                now(),
            )
            .await
            .expect("append");
        store
            .append(
                &[domain_event("c2", "e2", "web", Initiator::Customer, T0)],
                now(),
            )
            .await
            .expect("append");
        // Two customer ids: two real customers.
        let refused = store.merge(&c1, &c2, Micros(T0)).await.expect("merge");
        assert!(
            matches!(&refused, MergeOutcome::Refused(r) if r.contains("customer_id")),
            "{refused:?}"
        );
        let snap = store
            .context(&c2, 10, Micros(0))
            .await
            .expect("ctx")
            .expect("found");
        assert_eq!(snap.profile, c2, "nothing moved");
        // Two CRM ids on anonymous profiles.
        let (a, b) = (anonymous("A"), anonymous("B"));
        store
            .link(&a, &[identity("crm_id", "A1")], Micros(T0))
            .await
            .expect("link")
            .expect("the rules allow it");
        store
            .link(&b, &[identity("crm_id", "B2")], Micros(T0))
            .await
            .expect("link")
            .expect("the rules allow it");
        let refused = store.merge(&a, &b, Micros(T0)).await.expect("merge");
        assert!(
            matches!(&refused, MergeOutcome::Refused(r) if r.contains("crm_id") && r.contains("A1 and B2")),
            "{refused:?}"
        );
        // Too many identities (the fixture allows 6).
        let (x, y) = (anonymous("X"), anonymous("Y"));
        let cookies = |p: &str| {
            (0..4)
                .map(|i| identity("cookie_id", &format!("{p}{i}")))
                .collect::<Vec<_>>()
        };
        store
            .link(&x, &cookies("x"), Micros(T0))
            .await
            .expect("link")
            .expect("the rules allow it");
        store
            .link(&y, &cookies("y"), Micros(T0))
            .await
            .expect("link")
            .expect("the rules allow it");
        let refused = store.merge(&x, &y, Micros(T0)).await.expect("merge");
        assert!(
            matches!(&refused, MergeOutcome::Refused(r) if r.contains("limit of 6")),
            "{refused:?}"
        );
        assert_eq!(store.canonical(&y).await.expect("canonical"), Some(y));
    }

    pub async fn racing_merges_end_in_one_profile(store: &dyn TimelineStore) {
        let c1 = customer("c1");
        let anon = anonymous("A");
        store
            .append(
                &[domain_event("c1", "e1", "web", Initiator::Customer, T0)],
                now(),
            )
            .await
            .expect("append");
        let theirs: Vec<Event> = (0..20)
            .map(|i| {
                placed(
                    domain_event("x", &format!("a{i}"), "chat", Initiator::Customer, T0 + i),
                    &anon,
                )
            })
            .collect();
        store.append(&theirs, now()).await.expect("append");
        let (one, two) = tokio::join!(
            store.merge(&c1, &anon, Micros(T0)),
            store.merge(&c1, &anon, Micros(T0))
        );
        let outcomes = [one.expect("merge"), two.expect("merge")];
        assert!(outcomes.contains(&MergeOutcome::Merged), "{outcomes:?}");
        let snap = store
            .context(&c1, 100, Micros(0))
            .await
            .expect("ctx")
            .expect("found");
        assert_eq!(snap.summary.total_events, 21);
        assert_eq!(snap.events.len(), 21);
    }

    pub async fn retention_trims_contacts(store: &dyn TimelineStore) {
        // The fixture keeps 10 events and 5 hours.
        let events: Vec<Event> = (0..14)
            .map(|i| company("c1", &format!("k{i}"), "email", T0 + i, ""))
            .collect();
        store.append(&events, now()).await.expect("append");
        let h = history(store, "c1", 0).await;
        let ids: Vec<&str> = h.contacts.iter().map(|c| c.event_id()).collect();
        assert_eq!(
            ids,
            ["k4", "k5", "k6", "k7", "k8", "k9", "k10", "k11", "k12", "k13"]
        );
        let late = company("c1", "late", "sms", T0 + 10 * HOUR, "");
        store
            .append(&[late], Micros(T0 + 10 * HOUR))
            .await
            .expect("append");
        let h = history(store, "c1", 0).await;
        assert_eq!(h.contacts.len(), 1);
        assert_eq!(h.contacts[0].event_id(), "late");
    }

    pub async fn reservations_alone_keep_the_retention(store: &dyn TimelineStore) {
        // The fixture keeps 10 events and 5 hours; no append comes to trim.
        let c = customer("c1");
        let reserve = |id: String, at: i64, now: Micros| {
            let c = c.clone();
            async move {
                let version = history(store, "c1", 0).await.version;
                assert_eq!(
                    store
                        .reserve_contact(&c, &reservation(&id, at), version, now)
                        .await
                        .expect("reserve"),
                    Reserved::Recorded
                );
            }
        };
        for i in 0..14 {
            reserve(format!("r{i}"), T0 + i, now()).await;
        }
        let h = history(store, "c1", 0).await;
        let ids: Vec<&str> = h.contacts.iter().map(|c| c.event_id()).collect();
        assert_eq!(
            ids,
            ["r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "r13"]
        );
        reserve("late".into(), T0 + 10 * HOUR, Micros(T0 + 10 * HOUR)).await;
        let h = history(store, "c1", 0).await;
        let ids: Vec<&str> = h.contacts.iter().map(|c| c.event_id()).collect();
        assert_eq!(ids, ["late"]);
    }

    /// Journeys move with appends (state, listings, counters, deadline),
    /// and a sweep past the deadline drops one exactly once.
    pub async fn journeys_follow_appends_and_sweeps(store: &dyn TimelineStore) {
        use journey::domain::journey::{testkit::MINUTE, Day, JourneyStatus};
        let at = T0 + 10 * MINUTE;
        let step = |n: usize| banking_event("j1", n, &format!("s{n}"), at + n as i64 * MINUTE);
        store
            .append(&[step(0), step(1)], now())
            .await
            .expect("append");
        // The same events again change nothing.
        store.append(&[step(1)], now()).await.expect("append");
        let state = banking_state(store, &customer("j1"))
            .await
            .expect("journey state");
        assert_eq!(state.status, JourneyStatus::InProgress);
        assert_eq!(
            state.current_step.as_ref().map(|s| s.name.as_str()),
            Some("prompted")
        );
        let deadline = state.deadline.expect("deadline");
        let listing = banking_listing;
        let page = store
            .list_journeys(&listing(JourneyStatus::InProgress, Some("prompted")))
            .await
            .expect("list");
        assert_eq!(page.customers, vec![(customer("j1"), Micros(at))]);

        let early = store
            .sweep_journeys(Micros(deadline.0 - 1), 100)
            .await
            .expect("sweep");
        assert_eq!((early.due, early.dropped), (0, 0));
        let swept = store.sweep_journeys(deadline, 100).await.expect("sweep");
        assert_eq!((swept.due, swept.dropped), (1, 1));
        let again = store.sweep_journeys(deadline, 100).await.expect("sweep");
        assert_eq!((again.due, again.dropped), (0, 0), "dropped once");
        let in_progress = store
            .list_journeys(&listing(JourneyStatus::InProgress, None))
            .await
            .expect("list");
        assert!(in_progress.customers.is_empty());
        let dropped = store
            .list_journeys(&listing(JourneyStatus::Dropped, Some("prompted")))
            .await
            .expect("list");
        assert_eq!(dropped.customers, vec![(customer("j1"), deadline)]);
        let day = Day::of(Micros(at));
        let counters = store
            .journey_counters(BANKING, &[Day(day.0 - 1), day])
            .await
            .expect("counters");
        assert!(counters[0].is_empty());
        assert_eq!(counters[1].get("entered"), Some(&1));
        assert_eq!(counters[1].get("dropped:prompted"), Some(&1));
        assert_eq!(counters[1].get("dropped_by:inactivity"), Some(&1));

        // Listings keep the retention's span (5 hours here): a trim long
        // after the drop forgets the entry.
        store
            .trim_journeys(Micros(deadline.0 + 3_600_000_000))
            .await
            .expect("trim");
        let kept = store
            .list_journeys(&listing(JourneyStatus::Dropped, None))
            .await
            .expect("list");
        assert_eq!(kept.customers.len(), 1, "within the retention");
        store
            .trim_journeys(Micros(deadline.0 + 6 * 3_600_000_000))
            .await
            .expect("trim");
        let trimmed = store
            .list_journeys(&listing(JourneyStatus::Dropped, Some("prompted")))
            .await
            .expect("list");
        assert!(trimmed.customers.is_empty());
    }

    /// A journey an anonymous profile started moves with a merge: the
    /// survivor holds it with its deadline and listings, the absorbed
    /// profile's id leaves them, and the sweep drops it once, under the
    /// survivor. Journeys in progress on both sides become one (`merged`).
    pub async fn a_merge_carries_journeys_and_their_deadlines(store: &dyn TimelineStore) {
        use journey::domain::journey::{testkit::MINUTE, Day, JourneyStatus};
        // On the wall clock: a merge drops the journeys past their
        // deadline by it, as the sweeper would.
        let wall = Micros::now();
        let at = wall.0 - 10 * MINUTE;
        let anonymous = |unique: &str, step: usize, id: &str, at: i64| {
            let mut event = banking_event("x", step, id, at);
            event.customer_id = None;
            event.profile = CustomerId::anonymous(unique);
            event
        };
        store
            .append(
                &[
                    anonymous("M", 0, "a0", at),
                    anonymous("M", 1, "a1", at + MINUTE),
                    // Another profile's journey in progress, merged into
                    // the same survivor later.
                    anonymous("N", 0, "n0", at),
                ],
                wall,
            )
            .await
            .expect("append");
        let listed_at = |status, step| banking_listed(store, status, step);
        let listed = |status| listed_at(status, None);
        assert_eq!(listed(JourneyStatus::InProgress).await.len(), 2);
        store
            .append(
                &[domain_event("m1", "own", "web", Initiator::Customer, at)],
                wall,
            )
            .await
            .expect("append");
        let merged = store
            .merge(&customer("m1"), &CustomerId::anonymous("M"), wall)
            .await
            .expect("merge");
        assert_eq!(merged, MergeOutcome::Merged);
        let state = banking_state(store, &customer("m1"))
            .await
            .expect("the journey came along");
        assert_eq!(state.status, JourneyStatus::InProgress);
        assert_eq!(state.started_at, Some(Micros(at)));
        let deadline = state.deadline.expect("deadline");
        assert_eq!(listed(JourneyStatus::InProgress).await, ["m1", "~N"]);
        let at_step = listed_at(JourneyStatus::InProgress, Some("prompted")).await;
        assert_eq!(at_step, ["m1"], "M left its step's listing too");

        // N's journey last moved at `at`, before M's step a minute later:
        // M's goes on, N's is counted as merged.
        let merged = store
            .merge(&customer("m1"), &CustomerId::anonymous("N"), wall)
            .await
            .expect("merge");
        assert_eq!(merged, MergeOutcome::Merged);
        assert_eq!(listed(JourneyStatus::InProgress).await, ["m1"]);

        let swept = store.sweep_journeys(deadline, 100).await.expect("sweep");
        assert_eq!(
            (swept.due, swept.dropped),
            (1, 1),
            "one deadline, the survivor's"
        );
        let again = store.sweep_journeys(deadline, 100).await.expect("sweep");
        assert_eq!((again.due, again.dropped), (0, 0), "dropped once");
        assert_eq!(listed(JourneyStatus::Dropped).await, ["m1"]);
        let counters = store
            .journey_counters(BANKING, &[Day::of(Micros(at))])
            .await
            .expect("counters");
        assert_eq!(counters[0].get("entered"), Some(&2));
        assert_eq!(counters[0].get("merged"), Some(&1));
        assert_eq!(counters[0].get("dropped_by:inactivity"), Some(&1));
    }

    /// Forty merges, each absorbing the survivor of the one before: the
    /// first profile's id still leads to the last survivor (more merges
    /// than a read follows: each merge points the ids that led to the
    /// absorbed profile at the survivor).
    pub async fn a_long_line_of_merges_is_followed_to_its_end(store: &dyn TimelineStore) {
        let anon = |i: usize| CustomerId::anonymous(&format!("line{i:02}"));
        for i in 0..=40 {
            let mut event = domain_event("x", &format!("e{i}"), "web", Initiator::Customer, T0);
            event.customer_id = None;
            event.profile = anon(i);
            store.append(&[event], now()).await.expect("append");
        }
        for i in 0..40 {
            let merged = store.merge(&anon(i + 1), &anon(i), now()).await;
            assert_eq!(merged.expect("merge"), MergeOutcome::Merged, "merge {i}");
        }
        let first = store
            .context(&anon(0), 100, Micros(0))
            .await
            .expect("context")
            .expect("found");
        assert_eq!(first.profile, anon(40));
        assert_eq!(first.summary.total_events, 41);
    }

    /// Forgetting a customer erases the profile and everything that leads
    /// to it: its events, contacts, identities (they resolve to nobody),
    /// the ids of profiles merged into it, its journey listings and
    /// deadlines. Forgotten, it is unknown; a new event starts it afresh.
    pub async fn forgetting_a_customer_erases_everything_that_leads_to_it(
        store: &dyn TimelineStore,
    ) {
        use journey::domain::journey::{testkit::MINUTE, Day, JourneyStatus};
        let wall = Micros::now();
        let at = wall.0 - 10 * MINUTE;
        let email = identity("email", "ann@example.org");
        let cookie = identity("cookie_id", "ck-f");
        let mut own = vec![
            banking_event("f1", 0, "b0", at),
            company("f1", "k1", "email", at + 1, ""),
        ];
        own[0].identities = vec![email.clone()];
        store.append(&own, wall).await.expect("append");
        store
            .link(&customer("f1"), std::slice::from_ref(&email), Micros(at))
            .await
            .expect("link")
            .expect("allowed");
        let anon = anonymous("F");
        store
            .link(&anon, std::slice::from_ref(&cookie), Micros(at))
            .await
            .expect("link")
            .expect("allowed");
        let merged = store.merge(&customer("f1"), &anon, wall).await;
        assert_eq!(merged.expect("merge"), MergeOutcome::Merged);
        let in_progress = banking_listing(JourneyStatus::InProgress, None);
        assert_eq!(
            store
                .list_journeys(&in_progress)
                .await
                .expect("list")
                .customers
                .len(),
            1
        );

        let forgotten = store
            .forget(&anon)
            .await
            .expect("forget")
            .expect("held: through the merge");
        assert_eq!(forgotten.profile, customer("f1"));
        assert_eq!(forgotten.events, 2);
        assert_eq!(forgotten.merged, vec![anon.clone()]);
        assert!(forgotten.identities >= 2, "{forgotten:?}");

        let unknown = store.context(&customer("f1"), 10, Micros(0)).await;
        assert!(unknown.expect("context").is_none());
        let owners = store.resolve(&[email, cookie]).await.expect("resolve");
        assert_eq!(owners, vec![None, None]);
        assert_eq!(store.canonical(&anon).await.expect("canonical"), None);
        assert!(store
            .list_journeys(&in_progress)
            .await
            .expect("list")
            .customers
            .is_empty());
        assert!(history(store, "f1", 0).await.contacts.is_empty());
        let swept = store
            .sweep_journeys(Micros(wall.0 + 3_600_000_000), 100)
            .await
            .expect("sweep");
        assert_eq!(swept.due, 0, "no deadline left");
        // Its journey in progress will neither complete nor drop: closed
        // as forgotten, on the day it started (its counters name no one).
        let counters = store
            .journey_counters(BANKING, &[Day::of(Micros(at))])
            .await
            .expect("counters");
        assert_eq!(counters[0].get("entered"), Some(&1));
        assert_eq!(counters[0].get("forgotten"), Some(&1));
        assert_eq!(store.forget(&customer("f1")).await.expect("forget"), None);
        let again = store
            .journey_counters(BANKING, &[Day::of(Micros(at))])
            .await
            .expect("counters");
        assert_eq!(again[0].get("forgotten"), Some(&1), "counted once");

        store
            .append(
                &[domain_event("f1", "new", "web", Initiator::Customer, at)],
                wall,
            )
            .await
            .expect("append");
        let fresh = store.context(&customer("f1"), 10, Micros(0)).await;
        let fresh = fresh.expect("context").expect("found");
        assert_eq!(fresh.summary.total_events, 1);
        assert!(fresh.merges.is_empty());
    }

    /// A journey in progress whose definition goes away for a while (a
    /// reload under way on another instance, or undone here): its due
    /// deadline waits an hour instead of being forgotten, and once the
    /// journey is defined again the sweep drops it.
    pub async fn a_journey_undefined_for_a_while_is_still_dropped(fx: &crate::Fixture) {
        use journey::domain::journey::{
            testkit::MINUTE, JourneyDefinitions, JourneyStatus, UNDEFINED_JOURNEY_RETRY_MICROS,
        };
        let store = fx.store.as_ref();
        let at = T0 + 10 * MINUTE;
        store
            .append(&[banking_event("u1", 0, "u0", at)], now())
            .await
            .expect("append");
        let state = || async { banking_state(store, &customer("u1")).await.expect("state") };
        let deadline = state().await.deadline.expect("deadline");
        let builtin = fx.definitions.load_full();
        fx.definitions.store(std::sync::Arc::new(
            JourneyDefinitions::from_toml("", &journey::domain::Taxonomy::builtin())
                .expect("no journeys"),
        ));
        let swept = store.sweep_journeys(deadline, 100).await.expect("sweep");
        assert_eq!((swept.due, swept.dropped), (1, 0));
        let again = store.sweep_journeys(deadline, 100).await.expect("sweep");
        assert_eq!(again.due, 0, "it waits");
        fx.definitions.store(builtin);
        let later = Micros(deadline.0 + UNDEFINED_JOURNEY_RETRY_MICROS);
        let swept = store.sweep_journeys(later, 100).await.expect("sweep");
        assert_eq!((swept.due, swept.dropped), (1, 1));
        assert_eq!(state().await.status, JourneyStatus::Dropped);
    }

    /// The context reads the latest 100 contacts and says when there were
    /// more; the contact history (for checks) still holds them all.
    pub async fn the_context_reads_the_latest_contacts_only(store: &dyn TimelineStore) {
        let events: Vec<Event> = (0..120)
            .map(|i| company("cap", &format!("k{i:03}"), "email", T0 + i as i64, ""))
            .collect();
        store.append(&events, now()).await.expect("append");
        let snapshot = store
            .context(&customer("cap"), 5, Micros(0))
            .await
            .expect("context")
            .expect("found");
        assert!(snapshot.contacts_capped);
        let ids: Vec<&str> = snapshot.contacts.iter().map(|c| c.event_id()).collect();
        assert_eq!(ids.len(), journey::storage::CONTEXT_MAX_CONTACTS);
        assert_eq!(ids.first(), Some(&"k020"), "oldest of the latest 100 first");
        assert_eq!(ids.last(), Some(&"k119"));
        assert_eq!(history(store, "cap", 0).await.contacts.len(), 120);
        let few = store
            .context(&customer("cap"), 5, Micros(T0 + 100))
            .await
            .expect("context")
            .expect("found");
        assert!(!few.contacts_capped);
        assert_eq!(few.contacts.len(), 20);
    }
}

/// Stamps every case onto one backend, so a failure names case and backend.
macro_rules! conformance {
    ($backend:ident, $fixture:path) => {
        mod $backend {
            use journey::{domain::Micros, storage::Retention};

            fn retention() -> Retention {
                Retention {
                    max_events: 10,
                    max_age_micros: 5 * 3_600 * Micros::PER_SECOND,
                }
            }

            fn roomy() -> Retention {
                Retention {
                    max_events: 1_000,
                    max_age_micros: 5 * 3_600 * Micros::PER_SECOND,
                }
            }

            conformance!(@case append_is_idempotent, roomy, $fixture);
            conformance!(@case duplicates_within_one_batch, roomy, $fixture);
            conformance!(@case unknown_customer_is_none, roomy, $fixture);
            conformance!(@case out_of_order_events_land_in_place, roomy, $fixture);
            conformance!(@case summary_matches_a_direct_computation, roomy, $fixture);
            conformance!(@case retention_keeps_the_newest_events, retention, $fixture);
            conformance!(@case retention_drops_old_events, retention, $fixture);
            conformance!(@case pages_cover_the_timeline_once, roomy, $fixture);
            conformance!(@case filters_and_time_range, roomy, $fixture);
            conformance!(@case paging_is_stable_while_events_arrive, roomy, $fixture);
            conformance!(@case customers_are_isolated, roomy, $fixture);
            conformance!(@case microseconds_survive, roomy, $fixture);
            conformance!(@case ping_answers, roomy, $fixture);
            conformance!(@case company_events_feed_the_contact_index, roomy, $fixture);
            conformance!(@case unknown_customers_have_empty_histories, roomy, $fixture);
            conformance!(@case reservations_are_compare_and_set, roomy, $fixture);
            conformance!(@case a_reservation_takes_no_id_already_held, roomy, $fixture);
            conformance!(@case reservations_follow_a_merge, roomy, $fixture);
            conformance!(@case merges_carry_every_contact, retention, $fixture);
            conformance!(@case many_histories_come_back_in_order, roomy, $fixture);
            conformance!(@case retention_trims_contacts, retention, $fixture);
            conformance!(@case reservations_alone_keep_the_retention, retention, $fixture);
            conformance!(@case identities_link_resolve_and_unlink, roomy, $fixture);
            conformance!(@case a_merge_moves_everything_once, roomy, $fixture);
            conformance!(@case merges_that_break_rules_are_refused, roomy, $fixture);
            conformance!(@case links_that_break_rules_are_refused_and_link_nothing, roomy, $fixture);
            conformance!(@case merges_carry_the_absorbed_profiles_own, roomy, $fixture);
            conformance!(@case racing_merges_end_in_one_profile, roomy, $fixture);
            conformance!(@case journeys_follow_appends_and_sweeps, roomy, $fixture);
            conformance!(@case a_merge_carries_journeys_and_their_deadlines, roomy, $fixture);
            conformance!(@case a_long_line_of_merges_is_followed_to_its_end, roomy, $fixture);
            conformance!(@case forgetting_a_customer_erases_everything_that_leads_to_it, roomy, $fixture);
            conformance!(@case the_context_reads_the_latest_contacts_only, roomy, $fixture);
            conformance!(@fixture_case a_journey_undefined_for_a_while_is_still_dropped, roomy, $fixture);
        }
    };
    (@case $case:ident, $retention:ident, $fixture:path) => {
        #[tokio::test]
        async fn $case() {
            let fx = $fixture($retention()).await;
            crate::cases::$case(fx.store.as_ref()).await;
        }
    };
    (@fixture_case $case:ident, $retention:ident, $fixture:path) => {
        #[tokio::test]
        async fn $case() {
            let fx = $fixture($retention()).await;
            crate::cases::$case(&fx).await;
        }
    };
}

conformance!(memory, crate::memory_fixture);
conformance!(redis, crate::redis_fixture);
