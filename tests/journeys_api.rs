//! End-to-end tests of journeys over gRPC, on the memory store and on a
//! per-test redis-server: a generated population replayed through the API
//! gives the stats computed from its truth; the context shows journeys in
//! progress and finished; listings page; bad requests are refused; and on
//! Redis, two instances share the work without counting a drop twice.

mod support;

use journey::config::ServeConfig;
use support::journey_server::Api;

/// A server whose sweeper runs every 50 ms, so tests wait little for drops.
fn quick_sweeps() -> ServeConfig {
    ServeConfig {
        journey_sweep_interval_ms: 50,
        ..ServeConfig::default()
    }
}

pub async fn memory() -> Api {
    Api::memory_with(quick_sweeps()).await
}

pub async fn redis() -> Api {
    Api::redis_with(quick_sweeps()).await
}

mod cases {
    use std::{
        collections::BTreeSet,
        time::{Duration, Instant},
    };

    use journey::{
        domain::{
            journey::{
                population::Population, Day, DurationSummary, JourneyStats, Leak, StepStats,
                TopEntry,
            },
            Micros,
        },
        pb::{self, journey_service_client::JourneyServiceClient},
    };
    use tonic::{transport::Channel, Code};
    use tonic_types::StatusExt;

    use crate::support::events::{banking_step, from_facts, page_view, timestamp};

    pub type Client = JourneyServiceClient<Channel>;
    pub const JOURNEY: &str = "personal_data_verification";
    const MINUTE: i64 = 60_000_000;
    const DAY: i64 = 24 * 60 * MINUTE;

    fn now() -> i64 {
        Micros::now().0
    }

    pub async fn append_all(client: &mut Client, events: Vec<pb::Event>) {
        let results = client
            .append_events(pb::AppendEventsRequest { events })
            .await
            .expect("append")
            .into_inner()
            .results;
        for r in &results {
            assert_ne!(r.outcome(), pb::Outcome::Rejected, "{r:?}");
        }
    }

    pub async fn stats(
        client: &mut Client,
        start: i64,
        end: i64,
        top: u32,
    ) -> pb::GetJourneyStatsResponse {
        client
            .get_journey_stats(pb::GetJourneyStatsRequest {
                journey: JOURNEY.into(),
                start_time: Some(timestamp(start)),
                end_time: Some(timestamp(end)),
                top,
            })
            .await
            .expect("stats")
            .into_inner()
    }

    /// Polls the stats until no journey of the range is in progress (the
    /// sweeper has dropped every timed-out one), for at most 60 s.
    pub async fn settled(
        client: &mut Client,
        start: i64,
        end: i64,
        top: u32,
    ) -> pb::GetJourneyStatsResponse {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = stats(client, start, end, top).await;
            if s.in_progress == 0 || Instant::now() > deadline {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn micros(d: &Option<prost_types::Duration>) -> i64 {
        d.as_ref()
            .map_or(0, |d| d.seconds * 1_000_000 + i64::from(d.nanos) / 1_000)
    }

    /// The response in domain form, to compare with the population's truth.
    fn domain_stats(r: &pb::GetJourneyStatsResponse) -> JourneyStats {
        let top = |entries: &[pb::TopEntry]| {
            entries
                .iter()
                .map(|e| TopEntry {
                    key: e.key.clone(),
                    count: e.count,
                })
                .collect()
        };
        JourneyStats {
            journey: r.journey.clone(),
            entered: r.entered,
            completed: r.completed,
            dropped: r.dropped,
            dropped_by_inactivity: r.dropped_by_inactivity,
            dropped_by_abandon: r.dropped_by_abandon,
            in_progress: r.in_progress,
            merged: r.merged,
            forgotten: r.forgotten,
            steps: r
                .steps
                .iter()
                .map(|s| StepStats {
                    name: s.step.clone(),
                    reached: s.reached,
                    dropped_here: s.dropped_here,
                    offline_switches: s.offline_switches,
                    conversion_to_next: s.conversion_to_next,
                })
                .collect(),
            conversion_rate: r.conversion_rate,
            contained: r.contained,
            containment_rate: r.containment_rate,
            leaks: r
                .leaks
                .iter()
                .map(|l| Leak {
                    step: l.step.clone(),
                    channel: l.channel.clone(),
                    count: l.count,
                })
                .collect(),
            time_to_complete: r.time_to_complete_p50.is_some().then(|| DurationSummary {
                median_micros: micros(&r.time_to_complete_p50),
                p90_micros: micros(&r.time_to_complete_p90),
                max_relative_error: r.time_to_complete_max_relative_error,
            }),
            top_before_entering: top(&r.top_before_entering),
            top_last_before_drop: top(&r.top_last_before_drop),
            top_sequences_completed: top(&r.top_sequences_completed),
            top_sequences_dropped: top(&r.top_sequences_dropped),
        }
    }

    /// 400 generated customers (completers, droppers at every step by
    /// inactivity and abandon, offline switchers, repeats, out-of-order and
    /// duplicate deliveries, re-entries), starting four days ago, each
    /// customer's deliveries sent in order in one batch with others'. The
    /// sweeper drops the journeys whose deadline passed; then the stats
    /// equal the figures computed from the generator's truth, for all days
    /// and for one day.
    pub async fn a_generated_population_replays_to_the_true_stats(mut client: Client) {
        let t0 = now() - 4 * DAY;
        let population = Population::generate(400, 0x6a6f75726e6579, t0);
        let mut batch = Vec::new();
        for (i, customer) in population.customers.iter().enumerate() {
            let id = format!("p{i}");
            batch.extend(customer.delivery.iter().map(|f| from_facts(&id, f)));
            if batch.len() > 500 {
                append_all(&mut client, std::mem::take(&mut batch)).await;
            }
        }
        append_all(&mut client, batch).await;

        let (start, end) = (t0 - DAY, now() + DAY);
        let all = settled(&mut client, start, end, 100).await;
        assert_eq!(
            all.in_progress, 0,
            "the sweeper dropped every timed-out journey"
        );
        population
            .check(&domain_stats(&all), None, 100)
            .expect("all days");
        assert!(all.entered > 300 && all.completed > 100, "{all:?}");

        let day = Day(Day::of(Micros(t0)).0 + 1);
        let one_day = stats(&mut client, day.start().0, Day(day.0 + 1).start().0, 3).await;
        population
            .check(&domain_stats(&one_day), Some(day), 3)
            .expect("one day");
        assert_eq!(one_day.start_time, Some(timestamp(day.start().0)));
    }

    pub fn banking_of(context: &pb::GetJourneyContextResponse) -> Option<&pb::JourneyState> {
        context.journeys.iter().find(|j| j.journey == JOURNEY)
    }

    pub async fn context(client: &mut Client, customer: &str) -> pb::GetJourneyContextResponse {
        client
            .get_journey_context(pb::GetJourneyContextRequest {
                customer_id: customer.into(),
                ..Default::default()
            })
            .await
            .expect("context")
            .into_inner()
    }

    async fn listed(client: &mut Client, state: pb::JourneyStatus, step: &str) -> Vec<String> {
        client
            .list_journeys(pb::ListJourneysRequest {
                journey: JOURNEY.into(),
                state: state as i32,
                step: step.into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .customers
            .into_iter()
            .map(|c| c.customer_id)
            .collect()
    }

    /// A bot's view: stuck at step 2 since 10 minutes, then the journey
    /// completes, with its offline switch, and the listings follow.
    pub async fn the_context_shows_where_the_customer_stands(mut client: Client) {
        let at = now() - 12 * MINUTE;
        let mut call = page_view("bob", "call", at + 3 * MINUTE);
        call.channel = "call_center".into();
        call.reason = JOURNEY.into();
        call.r#type = "call".into();
        call.attributes.clear();
        append_all(
            &mut client,
            vec![
                page_view("bob", "before", at - MINUTE),
                banking_step("bob", 0, "s0", at),
                banking_step("bob", 1, "s1", at + MINUTE),
                banking_step("bob", 2, "s2", at + 2 * MINUTE),
                call,
            ],
        )
        .await;
        let ctx = context(&mut client, "bob").await;
        let bob = banking_of(&ctx).expect("banking journey in the context");
        assert_eq!(bob.state(), pb::JourneyStatus::InProgress);
        assert_eq!(bob.current_step, "verification_started");
        assert_eq!(bob.started_at, Some(timestamp(at)));
        assert_eq!(bob.last_progress_at, Some(timestamp(at + 2 * MINUTE)));
        assert_eq!(bob.last_event_id, "s2");
        assert_eq!(bob.offline_switch_step, "verification_started");
        assert_eq!(bob.offline_switch_channel, "call_center");
        assert_eq!(
            bob.channels,
            vec!["call_center".to_string(), "web".to_string()]
        );
        assert_eq!(bob.deadline, Some(timestamp(at + 32 * MINUTE)));
        assert_eq!(
            listed(&mut client, pb::JourneyStatus::InProgress, "").await,
            vec!["bob".to_string()]
        );
        assert_eq!(
            listed(
                &mut client,
                pb::JourneyStatus::InProgress,
                "verification_started"
            )
            .await,
            vec!["bob".to_string()]
        );
        assert!(
            listed(&mut client, pb::JourneyStatus::InProgress, "prompted")
                .await
                .is_empty()
        );

        append_all(
            &mut client,
            (3..=6)
                .map(|s| banking_step("bob", s, &format!("s{s}"), at + (3 + s as i64) * MINUTE))
                .collect(),
        )
        .await;
        let ctx = context(&mut client, "bob").await;
        let bob = banking_of(&ctx).expect("a finished journey stays in the context");
        assert_eq!(bob.state(), pb::JourneyStatus::Completed);
        assert_eq!(bob.finished_at, Some(timestamp(at + 9 * MINUTE)));
        assert_eq!(micros(&bob.duration), 9 * MINUTE);
        assert_eq!(bob.deadline, None);
        assert_eq!(bob.steps_reached.len(), 7);
        assert!(listed(&mut client, pb::JourneyStatus::InProgress, "")
            .await
            .is_empty());
        assert_eq!(
            listed(&mut client, pb::JourneyStatus::Completed, "").await,
            vec!["bob".to_string()]
        );
        let s = stats(&mut client, now() - DAY, now() + MINUTE, 5).await;
        assert_eq!((s.entered, s.completed, s.contained), (1, 1, 0));
        assert_eq!(s.leaks.len(), 1);
        assert_eq!(s.leaks[0].channel, "call_center");
    }

    /// A batch follows the journey in time order, whatever its own order:
    /// a step sent before the start still counts once the start is in.
    pub async fn a_batch_moves_journeys_in_time_order(mut client: Client) {
        let at = now() - 12 * MINUTE;
        append_all(
            &mut client,
            vec![
                banking_step("eve", 2, "s2", at + 2 * MINUTE),
                banking_step("eve", 1, "s1", at + MINUTE),
                banking_step("eve", 0, "s0", at),
            ],
        )
        .await;
        let ctx = context(&mut client, "eve").await;
        let eve = banking_of(&ctx).expect("the journey started");
        assert_eq!(eve.state(), pb::JourneyStatus::InProgress);
        assert_eq!(eve.started_at, Some(timestamp(at)));
        assert_eq!(eve.steps_reached.len(), 3, "{eve:?}");
        assert_eq!(eve.last_event_id, "s2");
    }

    /// An anonymous visitor `cookie` whose first event (`id`, at `at`)
    /// starts the banking journey.
    fn anonymous_start(cookie: &str, id: &str, at: i64) -> pb::Event {
        let mut visit = banking_step("", 0, id, at);
        visit.identities = vec![cookie_id(cookie)];
        visit
    }

    fn cookie_id(value: &str) -> pb::Identity {
        pb::Identity {
            r#type: "cookie_id".into(),
            value: value.into(),
        }
    }

    /// `customer` logs in on the device of `cookie`: the profiles merge.
    async fn log_in(client: &mut Client, customer: &str, cookie: &str, id: &str, at: i64) {
        let mut login = page_view(customer, id, at);
        login.identities = vec![cookie_id(cookie)];
        append_all(client, vec![login]).await;
    }

    /// An anonymous visitor starts a journey, then logs in: the profiles
    /// merge and the journey comes along. The producer sends the first
    /// event again: a duplicate, which enters nothing.
    pub async fn a_duplicate_of_a_merged_event_enters_nothing(mut client: Client) {
        let at = now() - 12 * MINUTE;
        let visit = anonymous_start("ck-dup", "v0", at);
        append_all(&mut client, vec![visit.clone()]).await;
        log_in(&mut client, "dupe", "ck-dup", "login", at + MINUTE).await;
        let merged = context(&mut client, "dupe").await;
        assert_eq!(merged.total_events, 2, "the visit moved in with the merge");
        let results = client
            .append_events(pb::AppendEventsRequest {
                events: vec![visit],
            })
            .await
            .expect("append")
            .into_inner()
            .results;
        assert_eq!(results[0].outcome(), pb::Outcome::Duplicate, "{results:?}");
        let s = stats(&mut client, at - MINUTE, now() + MINUTE, 5).await;
        assert_eq!((s.entered, s.in_progress), (1, 1), "{s:?}");
        let ctx = context(&mut client, "dupe").await;
        let state = banking_of(&ctx).expect("the visit's journey came along");
        assert_eq!(state.started_at, Some(timestamp(at)));
        assert_eq!(state.last_event_id, "v0");
    }

    /// The journey an anonymous visitor started goes on under the customer
    /// they log in as: the context shows it, the listings name the
    /// customer alone, and the customer's next step moves it on.
    pub async fn a_merge_carries_the_absorbed_journey_over(mut client: Client) {
        let at = now() - 12 * MINUTE;
        append_all(&mut client, vec![anonymous_start("ck-go", "g0", at)]).await;
        let anonymous = listed(&mut client, pb::JourneyStatus::InProgress, "").await;
        assert_eq!(anonymous.len(), 1, "{anonymous:?}");
        assert!(anonymous[0].starts_with('~'), "{anonymous:?}");
        log_in(&mut client, "goes-on", "ck-go", "login", at + MINUTE).await;

        let ctx = context(&mut client, "goes-on").await;
        let state = banking_of(&ctx).expect("the journey came along");
        assert_eq!(state.state(), pb::JourneyStatus::InProgress);
        assert_eq!(state.started_at, Some(timestamp(at)));
        assert_eq!(
            listed(&mut client, pb::JourneyStatus::InProgress, "").await,
            ["goes-on"],
            "the anonymous profile left the listing"
        );
        append_all(
            &mut client,
            vec![banking_step("goes-on", 1, "g1", at + 2 * MINUTE)],
        )
        .await;
        let ctx = context(&mut client, "goes-on").await;
        let state = banking_of(&ctx).expect("the journey goes on");
        assert_eq!(state.last_event_id, "g1");
        assert_eq!(state.started_at, Some(timestamp(at)), "the same journey");
        assert_eq!(state.steps_reached.len(), 2, "{state:?}");
        let s = stats(&mut client, at - MINUTE, now() + MINUTE, 5).await;
        assert_eq!((s.entered, s.in_progress, s.merged), (1, 1, 0), "{s:?}");
    }

    /// The customer and the anonymous visitor both had the journey in
    /// progress: the one that moved last goes on, the other is counted as
    /// merged, so the stats keep one journey in progress, not two.
    pub async fn two_journeys_in_progress_merge_into_one(mut client: Client) {
        let at = now() - 20 * MINUTE;
        append_all(&mut client, vec![banking_step("twin", 0, "t0", at)]).await;
        append_all(
            &mut client,
            vec![anonymous_start("ck-twin", "a0", at + MINUTE), {
                let mut step = banking_step("", 1, "a1", at + 2 * MINUTE);
                step.identities = vec![cookie_id("ck-twin")];
                step
            }],
        )
        .await;
        let before = stats(&mut client, at - MINUTE, now() + MINUTE, 5).await;
        assert_eq!((before.entered, before.in_progress), (2, 2), "{before:?}");
        log_in(&mut client, "twin", "ck-twin", "login", at + 3 * MINUTE).await;

        let s = stats(&mut client, at - MINUTE, now() + MINUTE, 5).await;
        assert_eq!(
            (s.entered, s.in_progress, s.merged, s.dropped),
            (2, 1, 1, 0),
            "{s:?}"
        );
        let ctx = context(&mut client, "twin").await;
        let state = banking_of(&ctx).expect("one journey goes on");
        assert_eq!(state.last_event_id, "a1", "the one that moved last");
        assert_eq!(state.started_at, Some(timestamp(at + MINUTE)));
        assert_eq!(
            listed(&mut client, pb::JourneyStatus::InProgress, "").await,
            ["twin"]
        );
    }

    /// An erased customer's journey in progress will neither complete nor
    /// drop: the stats count it as forgotten, not in progress for ever,
    /// and leave it out of the conversion rate.
    pub async fn a_forgotten_customer_s_journey_leaves_the_count_in_progress(mut client: Client) {
        let at = now() - 10 * MINUTE;
        append_all(&mut client, vec![banking_step("erased", 0, "e0", at)]).await;
        let before = stats(&mut client, at - MINUTE, now() + MINUTE, 5).await;
        assert_eq!((before.entered, before.in_progress), (1, 1), "{before:?}");
        client
            .forget_customer(pb::ForgetCustomerRequest {
                customer_id: "erased".into(),
                ..Default::default()
            })
            .await
            .expect("forget");
        let s = stats(&mut client, at - MINUTE, now() + MINUTE, 5).await;
        assert_eq!(
            (s.entered, s.in_progress, s.forgotten, s.dropped),
            (1, 0, 1, 0),
            "{s:?}"
        );
        assert_eq!(s.conversion_rate, None, "none left to convert");
    }

    /// An id sent twice in one call is stored as its first copy, and only
    /// that copy moves journeys, even when the second is earlier in time.
    pub async fn an_id_twice_in_one_call_counts_as_its_first_copy(mut client: Client) {
        let at = now() - 12 * MINUTE;
        let results = client
            .append_events(pb::AppendEventsRequest {
                events: vec![
                    banking_step("twice", 0, "s0", at),
                    banking_step("twice", 0, "s0", at - MINUTE),
                ],
            })
            .await
            .expect("append")
            .into_inner()
            .results;
        let outcomes: Vec<_> = results.iter().map(|r| r.outcome()).collect();
        assert_eq!(outcomes, [pb::Outcome::Stored, pb::Outcome::Duplicate]);
        let ctx = context(&mut client, "twice").await;
        let state = banking_of(&ctx).expect("the first copy started the journey");
        assert_eq!(state.state(), pb::JourneyStatus::InProgress);
        assert_eq!(state.started_at, Some(timestamp(at)));
    }

    /// 30 customers dropped at one step, 10 of them at the same instant,
    /// read 4 at a time: each once, oldest first; a time range narrows.
    pub async fn listings_page_through_each_customer_once(mut client: Client) {
        let base = now() - 3 * 60 * MINUTE;
        let mut events = Vec::new();
        for i in 0..30 {
            let at = base + if i < 10 { 0 } else { i as i64 * MINUTE };
            let c = format!("d{i:02}");
            events.push(banking_step(&c, 0, "s0", at));
            events.push(banking_step(&c, 1, "s1", at + 1));
        }
        append_all(&mut client, events).await;
        let _ = settled(&mut client, base - DAY, now() + MINUTE, 5).await;
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut last_at = None;
        loop {
            let page = client
                .list_journeys(pb::ListJourneysRequest {
                    journey: JOURNEY.into(),
                    state: pb::JourneyStatus::Dropped as i32,
                    step: "prompted".into(),
                    page_size: 4,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .expect("page")
                .into_inner();
            assert!(page.customers.len() <= 4);
            for c in &page.customers {
                let at = c.at.expect("instant");
                let at = (at.seconds, at.nanos);
                assert!(last_at.is_none_or(|l| l <= at), "oldest first");
                last_at = Some(at);
                seen.push(c.customer_id.clone());
            }
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        let distinct: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(seen.len(), 30, "{seen:?}");
        assert_eq!(distinct.len(), 30);

        // Dropped at the deadline: 30 minutes after the last progress.
        let narrowed = client
            .list_journeys(pb::ListJourneysRequest {
                journey: JOURNEY.into(),
                state: pb::JourneyStatus::Dropped as i32,
                start_time: Some(timestamp(base + 30 * MINUTE + 2)),
                end_time: Some(timestamp(base + 30 * MINUTE + 12 * MINUTE)),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        let names: Vec<&str> = narrowed
            .customers
            .iter()
            .map(|c| c.customer_id.as_str())
            .collect();
        assert_eq!(
            names,
            ["d10", "d11"],
            "dropped 40 and 41 minutes after base"
        );
    }

    fn bad_field(status: &tonic::Status) -> String {
        status
            .get_details_bad_request()
            .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
            .unwrap_or_default()
    }

    pub async fn bad_journey_requests_are_refused(mut client: Client) {
        let unknown = client
            .get_journey_stats(pb::GetJourneyStatsRequest {
                journey: "no_such_journey".into(),
                ..Default::default()
            })
            .await
            .expect_err("unknown journey");
        assert_eq!(unknown.code(), Code::NotFound);
        assert!(unknown.message().contains("no_such_journey"));

        let backwards = client
            .get_journey_stats(pb::GetJourneyStatsRequest {
                journey: JOURNEY.into(),
                start_time: Some(timestamp(now())),
                end_time: Some(timestamp(now() - DAY)),
                top: 0,
            })
            .await
            .expect_err("end before start");
        assert_eq!(backwards.code(), Code::InvalidArgument);
        assert_eq!(bad_field(&backwards), "end_time");

        // The default week before an end in year 0001's first days starts
        // at protobuf's first instant, which a client can read.
        let first = prost_types::Timestamp {
            seconds: -62_135_596_800,
            nanos: 0,
        };
        let earliest = client
            .get_journey_stats(pb::GetJourneyStatsRequest {
                journey: JOURNEY.into(),
                end_time: Some(prost_types::Timestamp {
                    seconds: first.seconds + 2 * 86_400,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await
            .expect("stats")
            .into_inner();
        assert_eq!(earliest.start_time, Some(first));

        let too_long = client
            .get_journey_stats(pb::GetJourneyStatsRequest {
                journey: JOURNEY.into(),
                start_time: Some(timestamp(now() - 400 * DAY)),
                end_time: Some(timestamp(now())),
                top: 0,
            })
            .await
            .expect_err("range too long");
        assert_eq!(bad_field(&too_long), "end_time");

        let too_many = client
            .get_journey_stats(pb::GetJourneyStatsRequest {
                journey: JOURNEY.into(),
                top: 101,
                ..Default::default()
            })
            .await
            .expect_err("top too large");
        assert_eq!(too_many.code(), Code::InvalidArgument);
        assert_eq!(bad_field(&too_many), "top");

        let list = |f: fn(&mut pb::ListJourneysRequest)| {
            let mut r = pb::ListJourneysRequest {
                journey: JOURNEY.into(),
                state: pb::JourneyStatus::Dropped as i32,
                ..Default::default()
            };
            f(&mut r);
            r
        };
        type Change = fn(&mut pb::ListJourneysRequest);
        let cases: [(Change, Code, &str); 6] = [
            (|r| r.journey = "nope".into(), Code::NotFound, ""),
            (|r| r.state = 0, Code::InvalidArgument, "state"),
            (|r| r.step = "nope".into(), Code::InvalidArgument, "step"),
            (
                |r| r.page_token = "garbage".into(),
                Code::InvalidArgument,
                "page_token",
            ),
            (
                |r| r.page_size = 100_000,
                Code::InvalidArgument,
                "page_size",
            ),
            (
                |r| {
                    r.start_time = Some(timestamp(1_000_000));
                    r.end_time = Some(timestamp(1));
                },
                Code::InvalidArgument,
                "end_time",
            ),
        ];
        for (change, code, field) in cases {
            let err = client
                .list_journeys(list(change))
                .await
                .expect_err("refused");
            assert_eq!(err.code(), code, "{err:?}");
            assert_eq!(bad_field(&err), field, "{err:?}");
        }
    }
}

backend_cases!(
    [memory => crate::memory, redis => crate::redis],
    [
        a_generated_population_replays_to_the_true_stats,
        the_context_shows_where_the_customer_stands,
        a_batch_moves_journeys_in_time_order,
        a_duplicate_of_a_merged_event_enters_nothing,
        a_merge_carries_the_absorbed_journey_over,
        two_journeys_in_progress_merge_into_one,
        a_forgotten_customer_s_journey_leaves_the_count_in_progress,
        an_id_twice_in_one_call_counts_as_its_first_copy,
        listings_page_through_each_customer_once,
        bad_journey_requests_are_refused,
    ]
);

/// Two instances on one Redis, both sweeping every 10 ms: 200 journeys
/// past their deadline are dropped once each, and appends that alternate
/// between the instances build one state.
mod two_instances {
    use std::time::{Duration, Instant};

    use journey::{
        config::{ServeConfig, StoreUrl},
        domain::Micros,
        pb,
    };

    use crate::{
        cases::{append_all, banking_of, context, stats, JOURNEY},
        support::{events::banking_step, journey_server::JourneyServer, redis_server::RedisServer},
    };

    const MINUTE: i64 = 60_000_000;

    async fn instance(redis: &RedisServer) -> JourneyServer {
        let server = JourneyServer::start(ServeConfig {
            store: StoreUrl::Redis(redis.url()),
            redis_timeout_ms: 5_000,
            request_timeout_ms: 60_000,
            journey_sweep_interval_ms: 10,
            journey_sweep_batch: 16,
            ..ServeConfig::default()
        })
        .await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
        assert!(crate::support::wait_for_health(&mut health, "", true).await);
        server
    }

    /// A command through redis-cli, answering its output.
    fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn deadlines_left(redis: &RedisServer) -> usize {
        redis_cli(redis, &["ZCARD", "journey:jdeadlines"])
            .parse()
            .expect("a count")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_drop_is_counted_once() {
        let redis = RedisServer::start();
        // Entries no sweeper can use, at the front of the index and more
        // than a pass reads (16): they must not stall the sweepers.
        for i in 0..20 {
            redis_cli(
                &redis,
                &["ZADD", "journey:jdeadlines", "0", &format!("garbage{i}")],
            );
        }
        let (a, b) = (instance(&redis).await, instance(&redis).await);
        let (mut ca, mut cb) = (a.client().await, b.client().await);
        let at = Micros::now().0 - 2 * 60 * MINUTE;
        for (client, range) in [(&mut ca, 0..100), (&mut cb, 100..200)] {
            let events = range
                .flat_map(|i| {
                    let c = format!("t{i}");
                    [
                        banking_step(&c, 0, "s0", at),
                        banking_step(&c, 1, "s1", at + MINUTE),
                    ]
                })
                .collect();
            append_all(client, events).await;
        }
        // Both sweepers race over the same deadlines until none is left.
        let deadline = Instant::now() + Duration::from_secs(60);
        while deadlines_left(&redis) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(deadlines_left(&redis), 0);
        let s = stats(&mut ca, at - 60 * MINUTE, Micros::now().0 + MINUTE, 5).await;
        assert_eq!(s.entered, 200);
        assert_eq!(s.dropped, 200, "{s:?}");
        assert_eq!(s.dropped_by_inactivity, 200);
        assert_eq!(s.in_progress, 0);
        let prompted = s
            .steps
            .iter()
            .find(|st| st.step == "prompted")
            .expect("step");
        assert_eq!(prompted.dropped_here, 200);

        // The day's counters expire at the end of the 400th day after it.
        let day = journey::domain::journey::Day::of(Micros(at)).0;
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "TTL"])
            .arg(format!("journey:jstats:{JOURNEY}:{day}"))
            .output()
            .expect("redis-cli");
        let ttl: i64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a ttl");
        let expected = (day + 401) * 86_400 - Micros::now().0 / 1_000_000;
        assert!((ttl - expected).abs() <= 60, "ttl {ttl}, not {expected}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_alternating_between_instances_build_one_state() {
        let redis = RedisServer::start();
        let (a, b) = (instance(&redis).await, instance(&redis).await);
        let mut clients = [a.client().await, b.client().await];
        let at = Micros::now().0 - 10 * MINUTE;
        for step in 0..=6 {
            let client = &mut clients[step % 2];
            client
                .append_event(pb::AppendEventRequest {
                    event: Some(banking_step(
                        "alt",
                        step,
                        &format!("s{step}"),
                        at + step as i64,
                    )),
                })
                .await
                .expect("append");
        }
        let ctx = context(&mut clients[0], "alt").await;
        let state = banking_of(&ctx).expect("journey");
        assert_eq!(state.state(), pb::JourneyStatus::Completed);
        assert_eq!(state.steps_reached.len(), 7, "{state:?}");
        let s = stats(&mut clients[1], at - MINUTE, Micros::now().0 + MINUTE, 5).await;
        assert_eq!((s.entered, s.completed), (1, 1));
        assert!(s.steps.iter().all(|st| st.reached == 1), "{s:?}");
    }

    /// Listings a definitions file before this one wrote (a journey
    /// removed, a step renamed) are still trimmed by the retention, until
    /// they are empty and leave the set of listings.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_of_journeys_no_longer_defined_are_trimmed() {
        let redis = RedisServer::start();
        let (gone, kept) = (
            "journey:jlist:gone:in_progress",
            "journey:jlist:kept:dropped",
        );
        let recent = Micros::now().0.to_string();
        redis_cli(&redis, &["SADD", "journey:jlistings", gone, kept]);
        redis_cli(&redis, &["ZADD", gone, "1", "old"]);
        redis_cli(&redis, &["ZADD", kept, "1", "old", &recent, "recent"]);
        let _a = instance(&redis).await;
        let member = |key: &str| redis_cli(&redis, &["SISMEMBER", "journey:jlistings", key]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while member(gone) != "0" && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(member(gone), "0", "an emptied listing leaves the set");
        assert_eq!(redis_cli(&redis, &["EXISTS", gone]), "0");
        assert_eq!(redis_cli(&redis, &["ZRANGE", kept, "0", "-1"]), "recent");
        assert_eq!(member(kept), "1", "a listing with entries stays");
        assert_eq!(
            member(&format!("journey:jlist:{JOURNEY}:in_progress")),
            "1",
            "the listings defined now are in the set"
        );
    }

    /// An event id that starts as JSON does (`[`) is read back from the
    /// states hash by an instance that did not write it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_starting_with_a_bracket_read_back() {
        let redis = RedisServer::start();
        let (a, b) = (instance(&redis).await, instance(&redis).await);
        let (mut ca, mut cb) = (a.client().await, b.client().await);
        let at = Micros::now().0 - 10 * MINUTE;
        let step = |n: usize, id: &str| pb::AppendEventRequest {
            event: Some(banking_step("bracket", n, id, at + n as i64)),
        };
        ca.append_event(step(0, "[s0")).await.expect("append");
        cb.append_event(step(1, "[{s1}]"))
            .await
            .expect("append through the instance that reads the states");
        let state = banking_of(&context(&mut ca, "bracket").await)
            .expect("journey")
            .clone();
        assert_eq!(state.last_event_id, "[{s1}]");
        assert_eq!(state.steps_reached.len(), 2, "{state:?}");
    }

    /// The instance that wrote a customer's journey states answers its
    /// contexts from its own copy of them (same version), the other from
    /// Redis's: both the same, also once the other instance wrote a newer
    /// version than the copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writers_copy_of_the_states_and_redis_give_one_context() {
        let redis = RedisServer::start();
        let (a, b) = (instance(&redis).await, instance(&redis).await);
        let (mut ca, mut cb) = (a.client().await, b.client().await);
        let at = Micros::now().0 - 10 * MINUTE;
        let step = |n: usize| pb::AppendEventRequest {
            event: Some(banking_step("copy", n, &format!("s{n}"), at + n as i64)),
        };
        for n in 0..3 {
            ca.append_event(step(n)).await.expect("append");
        }
        let (from_a, from_b) = (
            context(&mut ca, "copy").await,
            context(&mut cb, "copy").await,
        );
        assert_eq!(from_a.journeys, from_b.journeys);
        let state = banking_of(&from_a).expect("journey");
        assert_eq!(state.last_event_id, "s2");

        // A newer version written by the other instance: the writer's copy
        // is older, so the context reads Redis's.
        cb.append_event(step(3)).await.expect("append");
        let (from_a, from_b) = (
            context(&mut ca, "copy").await,
            context(&mut cb, "copy").await,
        );
        assert_eq!(from_a.journeys, from_b.journeys);
        assert_eq!(banking_of(&from_a).expect("journey").last_event_id, "s3");
    }

    /// A customer's journey states hash that expired (here: deleted) under
    /// an instance that still caches them: the next append rebuilds it
    /// instead of failing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_states_hash_is_rebuilt() {
        let redis = RedisServer::start();
        let a = instance(&redis).await;
        let mut client = a.client().await;
        let at = Micros::now().0 - 10 * MINUTE;
        let step = |n: usize, id: &str| pb::AppendEventRequest {
            event: Some(banking_step("exp", n, id, at + n as i64)),
        };
        client.append_event(step(0, "s0")).await.expect("append");
        assert_eq!(redis_cli(&redis, &["DEL", "journey:{exp}:jny"]), "1");
        client
            .append_event(step(1, "s1"))
            .await
            .expect("append after expiry");
        // The rebuilt hash expires with the profile's other keys, though
        // they had their expiry already.
        let ttl: i64 = redis_cli(&redis, &["PTTL", "journey:{exp}:jny"])
            .parse()
            .expect("a PTTL");
        assert!(ttl > 0, "the rebuilt states hash has no expiry ({ttl})");
        client.append_event(step(0, "again")).await.expect("append");
        let ctx = context(&mut client, "exp").await;
        let state = banking_of(&ctx).expect("a journey started on the rebuilt hash");
        assert_eq!(state.last_event_id, "again");
    }

    /// A merge takes the absorbed profile's journey states away with its
    /// data, carried to the survivor: the deadline index names the
    /// survivor, no longer the profile that is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_merge_removes_the_absorbed_states() {
        let redis = RedisServer::start();
        let a = instance(&redis).await;
        let mut client = a.client().await;
        let mut visit = banking_step("", 0, "v0", Micros::now().0 - MINUTE);
        visit.identities = vec![pb::Identity {
            r#type: "cookie_id".into(),
            value: "ck-9".into(),
        }];
        client
            .append_event(pb::AppendEventRequest { event: Some(visit) })
            .await
            .expect("anonymous visit");
        let anonymous = redis_cli(&redis, &["KEYS", "journey:{~*}:jny"]);
        assert!(anonymous.starts_with("journey:{~"), "{anonymous}");
        let linked = client
            .link_identities(pb::LinkIdentitiesRequest {
                identities: vec![
                    pb::Identity {
                        r#type: "customer_id".into(),
                        value: "known".into(),
                    },
                    pb::Identity {
                        r#type: "cookie_id".into(),
                        value: "ck-9".into(),
                    },
                ],
            })
            .await
            .expect("link")
            .into_inner();
        assert_eq!(linked.merged_profile_ids.len(), 1, "{linked:?}");
        assert_eq!(redis_cli(&redis, &["EXISTS", &anonymous]), "0");
        let deadlines = redis_cli(&redis, &["ZRANGE", "journey:jdeadlines", "0", "-1"]);
        let gone = &linked.merged_profile_ids[0];
        assert!(deadlines.contains("known"), "{deadlines:?}");
        assert!(!deadlines.contains(gone.as_str()), "{deadlines:?}");
    }
}
