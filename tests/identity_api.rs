//! Identity stitching end to end over gRPC, on the memory store and on a
//! per-test redis-server: lookups by any identifier, links that merge
//! profiles, the unique-type rule, racing conflicting links, unlinking and
//! bad input.

mod support;

use journey::config::ServeConfig;
use support::journey_server::Api;

/// Phone numbers without a country code are read as French here.
fn config() -> ServeConfig {
    ServeConfig {
        phone_region: "FR".into(),
        ..ServeConfig::default()
    }
}

pub async fn memory_api() -> Api {
    Api::memory_with(config()).await
}

pub async fn redis_api() -> Api {
    Api::redis_with(config()).await
}

mod cases {
    use journey::pb::{self, customer_ref::Ref, journey_service_client::JourneyServiceClient};
    use tonic::{transport::Channel, Code};
    use tonic_types::StatusExt;

    use crate::support::{
        append_all_stored,
        events::{base_micros, campaign_email, page_view},
    };

    type Client = JourneyServiceClient<Channel>;

    fn id(kind: &str, value: &str) -> pb::Identity {
        pb::Identity {
            r#type: kind.into(),
            value: value.into(),
        }
    }

    fn by(kind: &str, value: &str) -> Option<pb::CustomerRef> {
        Some(pb::CustomerRef {
            r#ref: Some(Ref::Identity(id(kind, value))),
        })
    }

    async fn context(
        client: &mut Client,
        customer: Option<pb::CustomerRef>,
    ) -> Result<pb::GetJourneyContextResponse, tonic::Status> {
        client
            .get_journey_context(pb::GetJourneyContextRequest {
                customer,
                max_events: 100,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn link(
        client: &mut Client,
        identities: Vec<pb::Identity>,
    ) -> Result<pb::LinkIdentitiesResponse, tonic::Status> {
        client
            .link_identities(pb::LinkIdentitiesRequest { identities })
            .await
            .map(|r| r.into_inner())
    }

    fn anonymous(mut event: pb::Event, identities: Vec<pb::Identity>) -> pb::Event {
        event.customer_id.clear();
        event.identities = identities;
        event
    }

    fn bad_field(status: &tonic::Status) -> String {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        status
            .get_error_details()
            .bad_request()
            .expect("BadRequest")
            .field_violations[0]
            .field
            .clone()
    }

    pub async fn a_phone_in_any_format_reaches_the_email_profile(mut client: Client) {
        let t = base_micros();
        // An anonymous visitor known by an email address.
        append_all_stored(
            &mut client,
            vec![anonymous(
                page_view("", "v1", t),
                vec![id("email", " Ann@Example.org ")],
            )],
        )
        .await;
        let ctx = context(&mut client, by("email", "ann@example.org"))
            .await
            .expect("by email");
        assert!(
            ctx.profile_id.starts_with('~'),
            "anonymous profile {}",
            ctx.profile_id
        );
        assert_eq!(ctx.customer_id, "");
        assert_eq!(ctx.total_events, 1);
        assert_eq!(
            context(&mut client, by("phone", "06 12 34 56 78"))
                .await
                .expect_err("not linked yet")
                .code(),
            Code::NotFound
        );
        // A call-center CRM match ties the email and the phone together.
        let linked = link(
            &mut client,
            vec![
                id("email", "ANN@example.org"),
                id("phone", "+33 6 12 34 56 78"),
            ],
        )
        .await
        .expect("link");
        assert_eq!(linked.profile_id, ctx.profile_id);
        for written in [
            "06 12 34 56 78",
            "+33612345678",
            "0033 6 12 34 56 78",
            "06.12.34.56.78",
        ] {
            let found = context(&mut client, by("phone", written))
                .await
                .expect(written);
            assert_eq!(found.profile_id, ctx.profile_id, "{written}");
            assert_eq!(found.events[0].event_id, "v1");
        }
        let phone = ctx_identity(
            &context(&mut client, by("phone", "0612345678"))
                .await
                .expect("ctx"),
            "phone",
        );
        assert_eq!(phone.identity.expect("identity").value, "+33612345678");
        assert_eq!(phone.first_channel, "");
        let email = ctx_identity(
            &context(&mut client, by("email", "ann@example.org"))
                .await
                .expect("ctx"),
            "email",
        );
        assert_eq!(email.first_channel, "web");
        // Other RPCs take the same references.
        let check = client
            .check_contact_frequency(pb::CheckContactRequest {
                customer: by("phone", "06 12 34 56 78"),
                channel: "sms".into(),
                ..Default::default()
            })
            .await
            .expect("check")
            .into_inner();
        assert!(check.found);
        // An identity nobody holds: a check answers "unknown", a
        // reservation has no one to belong to.
        let unknown = client
            .check_contact_frequency(pb::CheckContactRequest {
                customer: by("email", "nobody@example.org"),
                channel: "email".into(),
                ..Default::default()
            })
            .await
            .expect("check")
            .into_inner();
        assert!(unknown.allowed && !unknown.found);
        assert_eq!(unknown.customer_id, "");
        let refused = client
            .check_contact_frequency(pb::CheckContactRequest {
                customer: by("email", "nobody@example.org"),
                channel: "email".into(),
                reserve: true,
                ..Default::default()
            })
            .await
            .expect_err("no profile to reserve for");
        assert_eq!(refused.code(), Code::NotFound);
        // Nor for an anonymous profile id the store does not hold.
        let refused = client
            .check_contact_frequency(pb::CheckContactRequest {
                customer: Some(pb::CustomerRef {
                    r#ref: Some(Ref::ProfileId("~never-made".into())),
                }),
                channel: "email".into(),
                reserve: true,
                ..Default::default()
            })
            .await
            .expect_err("no such profile to reserve for");
        assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
        let batch = client
            .check_contact_frequency_batch(pb::CheckContactBatchRequest {
                customers: vec![
                    by("phone", "0612345678").expect("ref"),
                    by("email", "nobody@example.org").expect("ref"),
                ],
                customer_ids: vec!["nobody".into()],
                channel: "email".into(),
                ..Default::default()
            })
            .await
            .expect("batch")
            .into_inner()
            .results;
        let found: Vec<bool> = batch.iter().map(|r| r.found).collect();
        assert_eq!(found, [true, false, false]);
        assert_eq!(batch[0].customer_id, ctx.profile_id);
        let page = client
            .list_events(pb::ListEventsRequest {
                customer: by("email", "ann@example.org"),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(page.events.len(), 1);
    }

    fn ctx_identity(ctx: &pb::GetJourneyContextResponse, kind: &str) -> pb::LinkedIdentity {
        ctx.identities
            .iter()
            .find(|l| l.identity.as_ref().is_some_and(|i| i.r#type == kind))
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} identity in {:?}", ctx.identities))
    }

    pub async fn a_login_merges_the_cookie_profile_into_the_customer(mut client: Client) {
        let t = base_micros();
        append_all_stored(
            &mut client,
            vec![
                page_view("c1", "e1", t),
                page_view("c1", "shared", t + 1),
                campaign_email("c1", "m1", t + 2),
            ],
        )
        .await;
        let cookie = vec![id("cookie_id", "ck-1")];
        append_all_stored(
            &mut client,
            vec![
                anonymous(page_view("", "a1", t + 3), cookie.clone()),
                anonymous(page_view("", "shared", t + 1), cookie.clone()),
                anonymous(campaign_email("", "a2", t + 4), cookie.clone()),
            ],
        )
        .await;
        let anon = context(&mut client, by("cookie_id", "ck-1"))
            .await
            .expect("cookie profile");
        assert_eq!(anon.total_events, 3);
        // The login event carries both: the profiles merge.
        append_all_stored(
            &mut client,
            vec![{
                let mut login = page_view("c1", "login", t + 5);
                login.identities = cookie.clone();
                login
            }],
        )
        .await;
        let ctx = context(&mut client, by("cookie_id", "ck-1"))
            .await
            .expect("merged");
        assert_eq!(ctx.profile_id, "c1");
        assert_eq!(ctx.customer_id, "c1");
        let mut ids: Vec<&str> = ctx.events.iter().map(|e| e.event_id.as_str()).collect();
        ids.sort();
        assert_eq!(
            ids,
            ["a1", "a2", "e1", "login", "m1", "shared"],
            "each event once"
        );
        assert_eq!(ctx.total_events, 6);
        let per_channel: u64 = ctx
            .channels
            .iter()
            .map(|c| c.customer_initiated + c.company_initiated)
            .sum();
        assert_eq!(per_channel, ctx.total_events, "per-channel counts add up");
        let web = ctx
            .channels
            .iter()
            .find(|c| c.channel == "web")
            .expect("web");
        assert_eq!((web.customer_initiated, web.company_initiated), (4, 0));
        assert_eq!(ctx.merges.len(), 1);
        assert_eq!(ctx.merges[0].from_profile_id, anon.profile_id);
        assert_eq!(ctx.contact_counts.expect("counts").last_24h, 2);
        // The old profile id leads to the survivor too.
        let old = context(
            &mut client,
            Some(pb::CustomerRef {
                r#ref: Some(Ref::ProfileId(anon.profile_id.clone())),
            }),
        )
        .await
        .expect("old id");
        assert_eq!(old.profile_id, "c1");
    }

    pub async fn two_customers_are_never_fused(mut client: Client) {
        let t = base_micros();
        append_all_stored(
            &mut client,
            vec![page_view("c1", "e1", t), page_view("c2", "e2", t)],
        )
        .await;
        let refused = link(
            &mut client,
            vec![id("customer_id", "c1"), id("customer_id", "c2")],
        )
        .await
        .expect_err("two customers");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(
            refused.message().contains("customer_id"),
            "{}",
            refused.message()
        );
        // CRM ids are unique too.
        link(
            &mut client,
            vec![id("customer_id", "c1"), id("crm_id", "CRM-A")],
        )
        .await
        .expect("link");
        link(
            &mut client,
            vec![
                id("customer_id", "c3"),
                id("crm_id", "CRM-B"),
                id("email", "x@y.org"),
            ],
        )
        .await
        .expect("link");
        let refused = link(
            &mut client,
            vec![id("crm_id", "CRM-A"), id("email", "x@y.org")],
        )
        .await
        .expect_err("two CRM ids");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(
            refused
                .message()
                .contains("crm_id is unique per profile but the profiles hold CRM-A and CRM-B"),
            "{}",
            refused.message()
        );
        assert_eq!(
            context(&mut client, by("customer_id", "c2"))
                .await
                .expect("c2")
                .total_events,
            1
        );
    }

    pub async fn an_event_brings_no_identity_the_rules_refuse(mut client: Client) {
        let t = base_micros();
        let with = |event_id: &str, at: i64, identities: Vec<pb::Identity>| {
            let mut event = page_view("c1", event_id, at);
            event.identities = identities;
            event
        };
        append_all_stored(
            &mut client,
            vec![with("e1", t, vec![id("crm_id", "CRM-A")])],
        )
        .await;
        // A second CRM id: the merge is refused, the event is stored under
        // its customer with the email it also carries, not the CRM id.
        append_all_stored(
            &mut client,
            vec![with(
                "e2",
                t + 1,
                vec![id("crm_id", "CRM-B"), id("email", "b@x.org")],
            )],
        )
        .await;
        let c1 = context(&mut client, by("customer_id", "c1"))
            .await
            .expect("c1");
        assert_eq!(c1.total_events, 2);
        let mut held: Vec<(String, String)> = c1
            .identities
            .iter()
            .filter_map(|l| l.identity.as_ref())
            .map(|i| (i.r#type.clone(), i.value.clone()))
            .collect();
        held.sort();
        assert_eq!(
            held,
            [
                ("crm_id".to_string(), "CRM-A".to_string()),
                ("customer_id".to_string(), "c1".to_string()),
                ("email".to_string(), "b@x.org".to_string())
            ]
        );
        let status = context(&mut client, by("crm_id", "CRM-B"))
            .await
            .expect_err("CRM-B leads nowhere");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            context(&mut client, by("email", "b@x.org"))
                .await
                .expect("the email leads to c1")
                .profile_id,
            "c1"
        );
        // An identity held by another customer takes no room: c3's event
        // names c2's CRM id first, then one of its own, which it keeps.
        let mut c2 = page_view("c2", "f1", t + 2);
        c2.identities = vec![id("crm_id", "CRM-X")];
        let mut c3 = page_view("c3", "g1", t + 3);
        c3.identities = vec![id("crm_id", "CRM-X"), id("crm_id", "CRM-Y")];
        append_all_stored(&mut client, vec![c2]).await;
        append_all_stored(&mut client, vec![c3]).await;
        for (crm, customer) in [("CRM-X", "c2"), ("CRM-Y", "c3")] {
            assert_eq!(
                context(&mut client, by("crm_id", crm))
                    .await
                    .expect(crm)
                    .profile_id,
                customer
            );
        }
    }

    pub async fn racing_conflicting_links_end_in_one_consistent_profile(mut client: Client) {
        let t = base_micros();
        append_all_stored(
            &mut client,
            vec![page_view("c1", "e1", t), page_view("c2", "e2", t)],
        )
        .await;
        append_all_stored(
            &mut client,
            vec![anonymous(
                page_view("", "s1", t + 1),
                vec![id("device_id", "shared-tablet")],
            )],
        )
        .await;
        let (mut first, mut second) = (client.clone(), client.clone());
        let (one, two) = tokio::join!(
            link(
                &mut first,
                vec![id("customer_id", "c1"), id("device_id", "shared-tablet")]
            ),
            link(
                &mut second,
                vec![id("customer_id", "c2"), id("device_id", "shared-tablet")]
            ),
        );
        let won: Vec<String> = [&one, &two]
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| r.profile_id.clone())
            .collect();
        assert_eq!(won.len(), 1, "exactly one link wins: {one:?} / {two:?}");
        let lost = [one, two]
            .into_iter()
            .find_map(Result::err)
            .expect("one refused");
        assert_eq!(lost.code(), Code::FailedPrecondition);
        let winner = &won[0];
        let device = context(&mut client, by("device_id", "shared-tablet"))
            .await
            .expect("device");
        assert_eq!(&device.profile_id, winner);
        assert_eq!(
            device.total_events, 2,
            "the winner holds its event and the tablet's"
        );
        let loser = if winner == "c1" { "c2" } else { "c1" };
        let other = context(&mut client, by("customer_id", loser))
            .await
            .expect("loser");
        assert_eq!((other.profile_id.as_str(), other.total_events), (loser, 1));
    }

    /// Links racing to give one customer different CRM ids, each with the
    /// same cookie: the rule is checked with each write, so exactly one CRM
    /// id lands, every other link is refused, and the cookie stays linked
    /// however they interleave.
    pub async fn racing_links_of_different_crm_ids_leave_one(client: Client) {
        let t = base_micros();
        append_all_stored(&mut client.clone(), vec![page_view("c1", "e1", t)]).await;
        let links = (0..8).map(|i| {
            let mut client = client.clone();
            async move {
                link(
                    &mut client,
                    vec![
                        id("customer_id", "c1"),
                        id("cookie_id", "shared"),
                        id("crm_id", &format!("crm-{i}")),
                    ],
                )
                .await
            }
        });
        let results = futures::future::join_all(links).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{results:?}");
        for lost in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(lost.code(), Code::FailedPrecondition, "{lost:?}");
        }
        let ctx = context(&mut client.clone(), by("customer_id", "c1"))
            .await
            .expect("c1");
        let crm: Vec<&str> = ctx
            .identities
            .iter()
            .filter_map(|l| l.identity.as_ref())
            .filter(|i| i.r#type == "crm_id")
            .map(|i| i.value.as_str())
            .collect();
        assert_eq!(crm.len(), 1, "{crm:?}");
        // The cookie every link carried leads to c1: no refused link took
        // back a key the winner relies on.
        let by_cookie = context(&mut client.clone(), by("cookie_id", "shared"))
            .await
            .expect("the shared cookie");
        assert_eq!(by_cookie.profile_id, "c1");
    }

    pub async fn unlink_removes_an_identity_going_forward(mut client: Client) {
        let t = base_micros();
        let mut e = page_view("c1", "e1", t);
        e.identities = vec![id("cookie_id", "wrong")];
        append_all_stored(&mut client, vec![e]).await;
        assert_eq!(
            context(&mut client, by("cookie_id", "wrong"))
                .await
                .expect("linked")
                .profile_id,
            "c1"
        );
        client
            .unlink_identity(pb::UnlinkIdentityRequest {
                customer_id: "c1".into(),
                identity: Some(id("cookie_id", "wrong")),
                ..Default::default()
            })
            .await
            .expect("unlink");
        assert_eq!(
            context(&mut client, by("cookie_id", "wrong"))
                .await
                .expect_err("gone")
                .code(),
            Code::NotFound
        );
        let ctx = context(&mut client, by("customer_id", "c1"))
            .await
            .expect("c1");
        assert_eq!(ctx.total_events, 1, "events already merged stay");
        assert!(ctx
            .identities
            .iter()
            .all(|l| l.identity.as_ref().is_some_and(|i| i.r#type != "cookie_id")));
        let again = client
            .unlink_identity(pb::UnlinkIdentityRequest {
                customer_id: "c1".into(),
                identity: Some(id("cookie_id", "wrong")),
                ..Default::default()
            })
            .await
            .expect_err("not linked");
        assert_eq!(again.code(), Code::NotFound);
        let own = client
            .unlink_identity(pb::UnlinkIdentityRequest {
                customer_id: "c1".into(),
                identity: Some(id("customer_id", "c1")),
                ..Default::default()
            })
            .await
            .expect_err("own id");
        assert_eq!(own.code(), Code::FailedPrecondition);
        // A value no customer id can have is refused, as a link refuses it.
        let invalid = client
            .unlink_identity(pb::UnlinkIdentityRequest {
                customer_id: "c1".into(),
                identity: Some(id("customer_id", "~not-a-customer")),
                ..Default::default()
            })
            .await
            .expect_err("no customer id starts with ~");
        assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");
    }

    /// A right-to-erasure request by email: the customer's profile goes
    /// with every identity, the anonymous profile merged into it, and its
    /// contacts; a second request, or one for an unknown customer, is
    /// NOT_FOUND; a bad reference is INVALID_ARGUMENT.
    pub async fn forget_erases_a_customer_found_by_email(mut client: Client) {
        let t = base_micros();
        let mut visit = anonymous(page_view("", "v", t), vec![id("cookie_id", "ck-er")]);
        visit.event_id = "v".into();
        let mut login = page_view("erased", "l", t + 1);
        login.identities = vec![id("cookie_id", "ck-er"), id("email", "er@example.org")];
        append_all_stored(
            &mut client,
            vec![visit, login, campaign_email("erased", "m", t + 2)],
        )
        .await;
        let forgotten = client
            .forget_customer(pb::ForgetCustomerRequest {
                customer: by("email", "ER@example.org"),
                ..Default::default()
            })
            .await
            .expect("forget")
            .into_inner();
        assert_eq!(forgotten.profile_id, "erased");
        assert_eq!(forgotten.events, 3);
        assert_eq!(forgotten.merged_profile_ids.len(), 1, "{forgotten:?}");
        assert!(forgotten.identities >= 3, "{forgotten:?}");
        for who in [
            by("email", "er@example.org"),
            by("cookie_id", "ck-er"),
            by("customer_id", "erased"),
            Some(pb::CustomerRef {
                r#ref: Some(Ref::ProfileId(forgotten.merged_profile_ids[0].clone())),
            }),
        ] {
            let gone = context(&mut client, who.clone())
                .await
                .expect_err("forgotten");
            assert_eq!(gone.code(), Code::NotFound, "{who:?}: {gone:?}");
        }
        let again = client
            .forget_customer(pb::ForgetCustomerRequest {
                customer_id: "erased".into(),
                ..Default::default()
            })
            .await
            .expect_err("nothing left");
        assert_eq!(again.code(), Code::NotFound);
        let bad = client
            .forget_customer(pb::ForgetCustomerRequest::default())
            .await
            .expect_err("no customer named");
        assert_eq!(bad_field(&bad), "customer_id");
    }

    pub async fn bad_identities_are_refused(mut client: Client) {
        let t = base_micros();
        let with = |ids: Vec<pb::Identity>| anonymous(page_view("", "x", t), ids);
        let cases = vec![
            ("event.identities[0].type", with(vec![id("fax", "1")])),
            ("event.identities[0].value", with(vec![id("email", "")])),
            (
                "event.identities[0].value",
                with(vec![id("phone", "call me")]),
            ),
            (
                "event.identities[1].value",
                with(vec![id("cookie_id", "ok"), id("email", "not-an-email")]),
            ),
            (
                "event.identities",
                with((0..21).map(|i| id("cookie_id", &i.to_string())).collect()),
            ),
            ("event.customer_id", with(vec![])),
        ];
        for (field, event) in cases {
            let status = client
                .append_event(pb::AppendEventRequest { event: Some(event) })
                .await
                .expect_err(field);
            assert_eq!(bad_field(&status), field);
        }
        let too_many = link(
            &mut client,
            (0..21).map(|i| id("cookie_id", &i.to_string())).collect(),
        )
        .await
        .expect_err("21");
        assert_eq!(bad_field(&too_many), "identities");
        let one = link(&mut client, vec![id("email", "a@b.org")])
            .await
            .expect_err("one");
        assert_eq!(bad_field(&one), "identities");
        let bad = link(&mut client, vec![id("email", "a@b.org"), id("phone", "12")])
            .await
            .expect_err("bad phone");
        assert_eq!(bad_field(&bad), "identities[1].value");
        let status = context(&mut client, by("shoe_size", "42"))
            .await
            .expect_err("unknown type");
        assert_eq!(bad_field(&status), "customer.identity.type");
        let status = context(&mut client, Some(pb::CustomerRef { r#ref: None }))
            .await
            .expect_err("empty ref");
        assert_eq!(bad_field(&status), "customer");
        // Nothing was stored by the refused events.
        let status = context(&mut client, by("cookie_id", "ok"))
            .await
            .expect_err("nothing stored");
        assert_eq!(status.code(), Code::NotFound);
    }

    /// A request naming an unknown identity and carrying a bad field is
    /// refused for the field (INVALID_ARGUMENT), not NOT_FOUND: every field
    /// is checked before the identity is looked up.
    pub async fn bad_fields_are_refused_before_the_identity_is_looked_up(mut client: Client) {
        let nobody = || by("email", "nobody@example.org");
        let status = client
            .get_journey_context(pb::GetJourneyContextRequest {
                customer: nobody(),
                max_events: 1_000_000,
                ..Default::default()
            })
            .await
            .expect_err("context");
        assert_eq!(bad_field(&status), "max_events");
        let status = client
            .list_events(pb::ListEventsRequest {
                customer: nobody(),
                channels: vec!["carrier_pigeon".into()],
                ..Default::default()
            })
            .await
            .expect_err("list");
        assert_eq!(bad_field(&status), "channels[0]");
        let status = client
            .check_contact_frequency(pb::CheckContactRequest {
                customer: nobody(),
                channel: "carrier_pigeon".into(),
                reserve: true,
                ..Default::default()
            })
            .await
            .expect_err("check");
        assert_eq!(bad_field(&status), "channel");
        let status = client
            .check_contact_frequency_batch(pb::CheckContactBatchRequest {
                customers: vec![pb::CustomerRef {
                    r#ref: Some(Ref::Identity(id("email", "nobody@example.org"))),
                }],
                channel: "".into(),
                ..Default::default()
            })
            .await
            .expect_err("batch");
        assert_eq!(bad_field(&status), "channel");
        let status = client
            .unlink_identity(pb::UnlinkIdentityRequest {
                customer: nobody(),
                identity: Some(id("shoe_size", "42")),
                ..Default::default()
            })
            .await
            .expect_err("unlink");
        assert_eq!(bad_field(&status), "identity.type");
        // The same requests with good fields reach the lookup: NOT_FOUND.
        let status = context(&mut client, nobody()).await.expect_err("unknown");
        assert_eq!(status.code(), Code::NotFound);
    }
}

backend_cases!(
    [memory => crate::memory_api, redis => crate::redis_api],
    [
        a_phone_in_any_format_reaches_the_email_profile,
        a_login_merges_the_cookie_profile_into_the_customer,
        two_customers_are_never_fused,
        an_event_brings_no_identity_the_rules_refuse,
        racing_conflicting_links_end_in_one_consistent_profile,
        racing_links_of_different_crm_ids_leave_one,
        unlink_removes_an_identity_going_forward,
        forget_erases_a_customer_found_by_email,
        bad_identities_are_refused,
        bad_fields_are_refused_before_the_identity_is_looked_up,
    ]
);
