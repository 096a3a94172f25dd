//! End-to-end tests of contact frequency over gRPC, on the memory store and
//! on a per-test redis-server: counts, rules, exempt contacts, unknown
//! customers, bad input, reserve mode under 50 racers and a 10,000-customer
//! list review.

mod support;

pub use support::journey_server::{memory_api, redis_api};

mod cases {
    use journey::{
        domain::Micros,
        pb::{self, journey_service_client::JourneyServiceClient},
    };
    use tonic::{transport::Channel, Code};
    use tonic_types::StatusExt;

    use crate::support::{
        append_all_stored,
        events::{campaign_email, page_view, timestamp},
    };

    type Client = JourneyServiceClient<Channel>;
    const HOUR: i64 = 3_600_000_000;
    const DAY: i64 = 24 * HOUR;

    fn now() -> i64 {
        Micros::now().0
    }

    fn email_check(customer: &str) -> pb::CheckContactRequest {
        pb::CheckContactRequest {
            customer_id: customer.into(),
            channel: "email".into(),
            reason: "campaign_offer".into(),
            ..Default::default()
        }
    }

    fn email(customer: &str, id: &str, at: i64, campaign: &str) -> pb::Event {
        let mut e = campaign_email(customer, id, at);
        e.attributes.insert("campaign_id".into(), campaign.into());
        e
    }

    fn bad_field(status: &tonic::Status) -> String {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        field_of(status)
    }

    /// The field a refusal names.
    fn field_of(status: &tonic::Status) -> String {
        status
            .get_error_details()
            .bad_request()
            .expect("BadRequest")
            .field_violations[0]
            .field
            .clone()
    }

    pub async fn rules_count_and_block(mut client: Client) {
        let t = now();
        append_all_stored(
            &mut client,
            vec![
                email("c1", "m1", t - 3 * HOUR, "a"),
                email("c1", "m2", t - 2 * HOUR, "b"),
                email("c1", "m3", t - HOUR, "c"),
                page_view("c1", "p1", t - HOUR),
            ],
        )
        .await;
        let at = timestamp(t);
        let blocked = client
            .check_contact_frequency(pb::CheckContactRequest {
                at: Some(at),
                ..email_check("c1")
            })
            .await
            .expect("check")
            .into_inner();
        assert!(!blocked.allowed && blocked.found);
        assert_eq!(blocked.violations.len(), 1, "{:?}", blocked.violations);
        let v = &blocked.violations[0];
        assert_eq!(
            (v.rule.as_str(), v.count, v.limit),
            ("email-3-per-7d", 3, 3)
        );
        assert_eq!(
            v.window,
            Some(prost_types::Duration {
                seconds: 7 * 86_400,
                nanos: 0
            })
        );
        assert_eq!(
            blocked.next_allowed_at,
            Some(timestamp(t - 3 * HOUR + 7 * DAY))
        );
        let counts = blocked.counts.expect("counts");
        assert_eq!(
            (counts.last_24h, counts.last_7d, counts.last_30d),
            (3, 3, 3)
        );
        assert_eq!(counts.per_channel["email"].last_24h, 3);

        // Another channel is governed by the other rules only. (One without
        // quiet hours, so the answer does not depend on the time of day.)
        let other = client
            .check_contact_frequency(pb::CheckContactRequest {
                channel: "notification".into(),
                at: Some(at),
                ..email_check("c1")
            })
            .await
            .expect("check")
            .into_inner();
        assert!(other.allowed, "{other:?}");
        // A campaign already sent this month is blocked on any channel.
        let same_campaign = client
            .check_contact_frequency(pb::CheckContactRequest {
                channel: "notification".into(),
                campaign_id: "b".into(),
                at: Some(at),
                ..email_check("c1")
            })
            .await
            .expect("check")
            .into_inner();
        assert!(!same_campaign.allowed);
        assert_eq!(same_campaign.violations[0].rule, "same-campaign-1-per-30d");

        // A check is not a contact.
        let again = client
            .check_contact_frequency(email_check("c1"))
            .await
            .expect("check")
            .into_inner();
        assert_eq!(again.counts.expect("counts").last_24h, 3);
        // The context shows the same counts.
        let ctx = client
            .get_journey_context(pb::GetJourneyContextRequest {
                customer_id: "c1".into(),
                max_events: 1,
                ..Default::default()
            })
            .await
            .expect("ctx")
            .into_inner();
        assert_eq!(ctx.contact_counts.expect("counts").last_7d, 3);
    }

    pub async fn exempt_contacts_never_count(mut client: Client) {
        let t = now();
        let receipts: Vec<pb::Event> = (0..5)
            .map(|i| {
                let mut e = campaign_email("c1", &format!("r{i}"), t - HOUR + i);
                e.reason = "payment_receipt".into();
                e
            })
            .collect();
        append_all_stored(&mut client, receipts).await;
        let check = client
            .check_contact_frequency(email_check("c1"))
            .await
            .expect("check")
            .into_inner();
        assert!(check.allowed);
        assert_eq!(check.counts.expect("counts").last_24h, 0);
        append_all_stored(
            &mut client,
            (0..3)
                .map(|i| email("c2", &format!("m{i}"), t - HOUR + i, ""))
                .collect(),
        )
        .await;
        let receipt = client
            .check_contact_frequency(pb::CheckContactRequest {
                reason: "payment_receipt".into(),
                ..email_check("c2")
            })
            .await
            .expect("check")
            .into_inner();
        assert!(receipt.allowed && receipt.exempt);
    }

    pub async fn unknown_customers_are_flagged(mut client: Client) {
        let check = client
            .check_contact_frequency(email_check("nobody"))
            .await
            .expect("check")
            .into_inner();
        assert!(check.allowed && !check.found);
        assert_eq!(check.timezone, "UTC");
    }

    pub async fn bad_checks_are_refused(mut client: Client) {
        let cases = vec![
            (
                "channel",
                pb::CheckContactRequest {
                    channel: String::new(),
                    ..email_check("c1")
                },
            ),
            (
                "channel",
                pb::CheckContactRequest {
                    channel: "fax".into(),
                    ..email_check("c1")
                },
            ),
            (
                "reason",
                pb::CheckContactRequest {
                    reason: "boredom".into(),
                    ..email_check("c1")
                },
            ),
            (
                "type",
                pb::CheckContactRequest {
                    r#type: "teleport".into(),
                    ..email_check("c1")
                },
            ),
            (
                "campaign_id",
                pb::CheckContactRequest {
                    campaign_id: "a\u{0}b".into(),
                    ..email_check("c1")
                },
            ),
            (
                "customer_id",
                pb::CheckContactRequest {
                    customer_id: String::new(),
                    ..email_check("c1")
                },
            ),
            (
                "at",
                pb::CheckContactRequest {
                    at: Some(prost_types::Timestamp {
                        seconds: 0,
                        nanos: -1,
                    }),
                    ..email_check("c1")
                },
            ),
        ];
        for (field, request) in cases {
            let status = client
                .check_contact_frequency(request)
                .await
                .expect_err(field);
            assert_eq!(bad_field(&status), field);
        }
        let too_many = pb::CheckContactBatchRequest {
            customer_ids: (0..10_001).map(|i| format!("c{i}")).collect(),
            channel: "email".into(),
            ..Default::default()
        };
        let status = client
            .check_contact_frequency_batch(too_many)
            .await
            .expect_err("over the limit");
        assert_eq!(bad_field(&status), "customer_ids");
        let bad_id = pb::CheckContactBatchRequest {
            customer_ids: vec!["ok".into(), String::new()],
            channel: "email".into(),
            ..Default::default()
        };
        let status = client
            .check_contact_frequency_batch(bad_id)
            .await
            .expect_err("empty id");
        assert_eq!(bad_field(&status), "customer_ids[1]");
        // Reserve mode with bad input records nothing.
        let status = client
            .check_contact_frequency(pb::CheckContactRequest {
                channel: "fax".into(),
                reserve: true,
                ..email_check("c9")
            })
            .await
            .expect_err("bad channel");
        assert_eq!(bad_field(&status), "channel");
        // A reservation takes an event's instants: none a day ahead, none
        // before the retention. A plain check may look at any instant of
        // protobuf's range, and no further.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        for seconds in [now + 86_400, now - 400 * 86_400] {
            let at = Some(prost_types::Timestamp { seconds, nanos: 0 });
            let status = client
                .check_contact_frequency(pb::CheckContactRequest {
                    at,
                    reserve: true,
                    ..email_check("c9")
                })
                .await
                .expect_err("a reservation out of an event's range");
            assert_eq!(bad_field(&status), "at", "{status:?}");
            let check = client
                .check_contact_frequency(pb::CheckContactRequest {
                    at,
                    ..email_check("c9")
                })
                .await
                .expect("a plain check at that instant")
                .into_inner();
            assert!(check.allowed);
        }
        // In quiet hours at the calendar's last second: their end, past
        // 9999, is answered as the last instant a timestamp holds.
        let last = client
            .check_contact_frequency(pb::CheckContactRequest {
                channel: "sms".into(),
                at: Some(prost_types::Timestamp {
                    seconds: 253_402_300_799,
                    nanos: 0,
                }),
                ..email_check("c9")
            })
            .await
            .expect("a check at the last second")
            .into_inner();
        assert!(last.quiet_hours && !last.allowed, "{last:?}");
        let next = last.next_allowed_at.expect("a next instant");
        assert_eq!((next.seconds, next.nanos), (253_402_300_799, 999_999_000));
        for seconds in [253_402_300_800, -62_135_596_801] {
            let status = client
                .check_contact_frequency(pb::CheckContactRequest {
                    at: Some(prost_types::Timestamp { seconds, nanos: 0 }),
                    ..email_check("c9")
                })
                .await
                .expect_err("past protobuf's range");
            assert_eq!(bad_field(&status), "at");
        }
        let check = client
            .check_contact_frequency(email_check("c9"))
            .await
            .expect("check")
            .into_inner();
        assert!(!check.found);
    }

    pub async fn reserve_admits_exactly_the_cap(mut client: Client) {
        let t = now();
        append_all_stored(&mut client, vec![email("c1", "m0", t - HOUR, "")]).await;
        // email-3-per-7d: two more fit. Fifty engines race for them.
        let racers: Vec<_> = (0..50)
            .map(|_| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    client
                        .check_contact_frequency(pb::CheckContactRequest {
                            reserve: true,
                            ..email_check("c1")
                        })
                        .await
                        .map(|r| r.into_inner())
                })
            })
            .collect();
        let mut admitted = Vec::new();
        for racer in racers {
            let answer = racer.await.expect("racer").expect("check answers");
            if answer.allowed {
                assert!(!answer.reservation_id.is_empty());
                admitted.push(answer.reservation_id);
            } else {
                assert!(answer.reservation_id.is_empty());
            }
        }
        assert_eq!(admitted.len(), 2, "exactly the cap is admitted");
        let after = client
            .check_contact_frequency(email_check("c1"))
            .await
            .expect("check")
            .into_inner();
        assert!(!after.allowed);
        assert_eq!(after.violations[0].count, 3);
        // The contact happens: its event carries the reservation id and
        // replaces the reservation rather than counting twice.
        let mut sent = email("c1", &admitted[0], t, "");
        sent.event_id = admitted[0].clone();
        append_all_stored(&mut client, vec![sent]).await;
        let after = client
            .check_contact_frequency(email_check("c1"))
            .await
            .expect("check")
            .into_inner();
        assert_eq!(after.violations[0].count, 3);
    }

    /// A reservation named by the client is made once: the same check
    /// again (a retry after a lost answer) answers it, allowed, even at the
    /// cap it now fills, and so does it once its event has replaced it.
    pub async fn a_named_reservation_is_made_once(mut client: Client) {
        let t = now();
        append_all_stored(&mut client, vec![email("c1", "m0", t - HOUR, "")]).await;
        let named = |id: &str| pb::CheckContactRequest {
            reserve: true,
            reservation_id: id.into(),
            at: Some(timestamp(t)),
            ..email_check("c1")
        };
        let counted = |check: &pb::CheckContactResponse| {
            check
                .counts
                .as_ref()
                .map(|c| c.last_24h)
                .unwrap_or_default()
        };
        // email-3-per-7d: two more fit.
        let first = client
            .check_contact_frequency(named("send-1"))
            .await
            .expect("reserve")
            .into_inner();
        assert!(first.allowed, "{first:?}");
        assert_eq!(first.reservation_id, "send-1");
        assert_eq!(counted(&first), 1, "counted before the reservation");
        for _ in 0..3 {
            let again = client
                .check_contact_frequency(named("send-1"))
                .await
                .expect("reserve again")
                .into_inner();
            assert_eq!(again, first, "the same answer");
        }
        let second = client
            .check_contact_frequency(named("send-2"))
            .await
            .expect("another")
            .into_inner();
        assert!(second.allowed);
        assert_eq!(counted(&second), 2, "send-1 counted once");
        // At the cap now: a new id is refused, the held ones still stand.
        let third = client
            .check_contact_frequency(named("send-3"))
            .await
            .expect("a third")
            .into_inner();
        assert!(!third.allowed && third.reservation_id.is_empty());
        assert_eq!(third.violations[0].count, 3);
        let mut sent = email("c1", "send-2", t, "");
        sent.event_id = "send-2".into();
        append_all_stored(&mut client, vec![sent]).await;
        let replaced = client
            .check_contact_frequency(named("send-2"))
            .await
            .expect("asked once sent")
            .into_inner();
        assert!(replaced.allowed, "{replaced:?}");
        assert_eq!(replaced.reservation_id, "send-2");
        let after = client
            .check_contact_frequency(email_check("c1"))
            .await
            .expect("check")
            .into_inner();
        assert_eq!(after.violations[0].count, 3, "nothing counted twice");
        // The id of another contact, or of an event that is no contact,
        // is taken: no reservation asked again, nor one to make.
        append_all_stored(&mut client, vec![page_view("c2", "p1", t - HOUR)]).await;
        for (request, why) in [
            (
                pb::CheckContactRequest {
                    channel: "sms".into(),
                    ..named("send-1")
                },
                "an email's id for an sms",
            ),
            (
                pb::CheckContactRequest {
                    customer_id: "c2".into(),
                    ..named("p1")
                },
                "a page view's id",
            ),
        ] {
            let status = client
                .check_contact_frequency(request)
                .await
                .expect_err(why);
            assert_eq!(
                status.code(),
                tonic::Code::AlreadyExists,
                "{why}: {status:?}"
            );
            assert_eq!(field_of(&status), "reservation_id", "{why}");
            assert!(!status.message().contains("CustomerId("), "{status:?}");
        }
        let c2 = client
            .check_contact_frequency(email_check("c2"))
            .await
            .expect("check")
            .into_inner();
        assert_eq!(counted(&c2), 0, "nothing recorded for the refusal");
        // The id is an event id, and only for reserve mode.
        for (request, why) in [
            (named("a\u{1f}b"), "a control character"),
            (named(&"x".repeat(10_000)), "too long"),
            (
                pb::CheckContactRequest {
                    reservation_id: "send-9".into(),
                    ..email_check("c1")
                },
                "without reserve",
            ),
        ] {
            let status = client
                .check_contact_frequency(request)
                .await
                .expect_err(why);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{why}");
            assert_eq!(bad_field(&status), "reservation_id", "{why}");
        }
    }

    pub async fn a_ten_thousand_customer_list_is_reviewed(mut client: Client) {
        let t = now();
        let mut events = Vec::new();
        for i in 0..10_000 {
            let c = format!("b{i}");
            match i % 4 {
                0 => events.extend((0..3).map(|k| email(&c, &format!("m{k}"), t - HOUR + k, ""))),
                1 => events.push(email(&c, "m0", t - HOUR, "")),
                2 => events.push(page_view(&c, "p0", t - HOUR)),
                _ => {}
            }
        }
        append_all_stored(&mut client, events).await;
        let request = pb::CheckContactBatchRequest {
            customer_ids: (0..10_000).map(|i| format!("b{i}")).collect(),
            channel: "email".into(),
            reason: "campaign_offer".into(),
            ..Default::default()
        };
        let results = client
            .check_contact_frequency_batch(request)
            .await
            .expect("batch")
            .into_inner()
            .results;
        assert_eq!(results.len(), 10_000);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.customer_id, format!("b{i}"));
            let (allowed, found) = match i % 4 {
                0 => (false, true),
                1 | 2 => (true, true),
                _ => (true, false),
            };
            assert_eq!((r.allowed, r.found), (allowed, found), "b{i}");
        }
    }
}

backend_cases!(
    [memory => crate::memory_api, redis => crate::redis_api],
    [
        rules_count_and_block,
        exempt_contacts_never_count,
        unknown_customers_are_flagged,
        bad_checks_are_refused,
        reserve_admits_exactly_the_cap,
        a_named_reservation_is_made_once,
        a_ten_thousand_customer_list_is_reviewed,
    ]
);

/// Contact entries written before entries held their instant (kind `e`/`r`,
/// the instant only in the score) still count, in the context and in a
/// check, each at its score.
#[tokio::test]
async fn redis_contact_entries_without_their_instant_still_count() {
    use journey::{domain::Micros, pb};

    let api = redis_api().await;
    let mut client = api.server.client().await;
    let now = Micros::now().0;
    let hour = 3_600_000_000;
    client
        .append_event(pb::AppendEventRequest {
            event: Some(support::events::page_view("c1", "p1", now - hour)),
        })
        .await
        .expect("append");
    let redis = api.redis.as_ref().expect("redis fixture");
    let mut conn = redis.connection();
    // Two days and 10 days old, in the layout of earlier versions.
    for (id, age) in [("old1", 2 * 24 * hour), ("old2", 10 * 24 * hour)] {
        let packed = format!("{id}\u{1f}e\u{1f}email\u{1f}campaign_offer\u{1f}email_sent\u{1f}");
        ::redis::pipe()
            .cmd("ZADD")
            .arg("journey:{c1}:contacts")
            .arg(now - age)
            .arg(&packed)
            .cmd("HSET")
            .arg("journey:{c1}:cids")
            .arg(id)
            .arg(&packed)
            .query::<()>(&mut conn)
            .expect("write legacy entries");
    }

    let context = client
        .get_journey_context(pb::GetJourneyContextRequest {
            customer_id: "c1".into(),
            ..Default::default()
        })
        .await
        .expect("context")
        .into_inner();
    let counts = context.contact_counts.expect("counts");
    assert_eq!(
        (counts.last_24h, counts.last_7d, counts.last_30d),
        (0, 1, 2)
    );
    let check = client
        .check_contact_frequency(pb::CheckContactRequest {
            customer_id: "c1".into(),
            channel: "email".into(),
            ..Default::default()
        })
        .await
        .expect("check")
        .into_inner();
    let counts = check.counts.expect("counts");
    assert_eq!(
        (counts.last_24h, counts.last_7d, counts.last_30d),
        (0, 1, 2)
    );
}

/// In lenient mode a check may name a channel outside the taxonomy, and a
/// reservation stores it: such names are still bounded and free of control
/// characters (the contact index separates fields with one), and a name
/// that passes is counted under itself on the next check.
#[tokio::test]
async fn lenient_names_are_bounded_and_reserved_as_given() {
    use journey::{config::ServeConfig, domain::TaxonomyMode, pb};

    let api = support::journey_server::Api::redis_with(ServeConfig {
        taxonomy_mode: TaxonomyMode::Lenient,
        ..ServeConfig::default()
    })
    .await;
    let mut client = api.server.client().await;
    let check = |channel: &str| pb::CheckContactRequest {
        customer_id: "c1".into(),
        channel: channel.into(),
        reason: "campaign_offer".into(),
        reserve: true,
        ..Default::default()
    };
    for (channel, says) in [
        ("pigeon\u{1f}post".to_string(), "control characters"),
        ("p".repeat(60_000), "at most 128"),
    ] {
        let status = client
            .check_contact_frequency(check(&channel))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(says), "{status:?}");
    }
    for _ in 0..2 {
        let answer = client
            .check_contact_frequency(check("pigeon_post"))
            .await
            .expect("an unknown channel, lenient")
            .into_inner();
        assert!(answer.allowed);
        assert!(!answer.reservation_id.is_empty());
    }
    // The two reservations read back under the name given, and only those.
    let counts = client
        .check_contact_frequency(pb::CheckContactRequest {
            reserve: false,
            ..check("pigeon_post")
        })
        .await
        .expect("check")
        .into_inner()
        .counts
        .expect("counts");
    assert_eq!(counts.last_24h, 2);
    assert_eq!(
        counts.per_channel.get("pigeon_post").map(|w| w.last_24h),
        Some(2),
        "{:?}",
        counts.per_channel
    );
}
