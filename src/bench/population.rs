//! The synthetic population: customers `bench-c{i:012}` and realistic events of
//! about 300 encoded bytes, named by the built-in taxonomy. Everything is a
//! function of the seed, so `seed` and `run` agree on who exists and a
//! re-seed sends the same event ids (the service answers them duplicate).

use std::collections::BTreeMap;

use crate::pb;

/// The id of the `index`-th customer of the population. Twelve digits,
/// zero-padded, as redis-benchmark writes `__rand_int__`: its raw commands
/// can then pick random seeded customers (`journey:{bench-c__rand_int__}:tl`
/// with `-r N` reads customers 0 to N-1).
pub fn customer_id(index: u64) -> String {
    format!("bench-c{index:012}")
}

/// Seeded events are spread over the last day minus these margins, so they
/// are inside any retention of a day or more and never in the future.
const NEWEST_AGE_MICROS: i64 = 60 * 1_000_000;
const OLDEST_AGE_MICROS: i64 = 86_400 * 1_000_000 - NEWEST_AGE_MICROS;

/// One kind of interaction: names from `taxonomy/default.toml` that go
/// together (the reason allows the initiator, the type's required
/// attributes are given). A unit test checks each against the taxonomy.
struct Shape {
    channel: &'static str,
    reason: &'static str,
    event_type: &'static str,
    initiator: pb::Initiator,
    attributes: fn(&mut fastrand::Rng) -> Vec<(&'static str, String)>,
}

const CUSTOMER: pb::Initiator = pb::Initiator::Customer;
const COMPANY: pb::Initiator = pb::Initiator::Company;

const SHAPES: &[Shape] = &[
    Shape {
        channel: "web",
        reason: "check_accounts",
        event_type: "page_view",
        initiator: CUSTOMER,
        attributes: |rng| {
            let page = pick(
                rng,
                &["/accounts", "/accounts/overview", "/cards", "/loans"],
            );
            vec![
                ("page", page.to_string()),
                ("url", format!("https://www.example-bank.com{page}?ref=nav")),
            ]
        },
    },
    Shape {
        channel: "mobile_app",
        reason: "check_accounts",
        event_type: "login",
        initiator: CUSTOMER,
        attributes: |rng| vec![("method", pick(rng, &["password", "face_id", "pin"]).into())],
    },
    Shape {
        channel: "email",
        reason: "campaign_offer",
        event_type: "email_sent",
        initiator: COMPANY,
        attributes: campaign,
    },
    Shape {
        channel: "email",
        reason: "product_information",
        event_type: "email_clicked",
        initiator: CUSTOMER,
        attributes: |rng| {
            let mut attrs = campaign(rng);
            attrs.push(("url", "https://www.example-bank.com/offers/savings".into()));
            attrs
        },
    },
    Shape {
        channel: "sms",
        reason: "payment_reminder",
        event_type: "sms_sent",
        initiator: COMPANY,
        attributes: campaign,
    },
    Shape {
        channel: "push",
        reason: "security_alert",
        event_type: "push_sent",
        initiator: COMPANY,
        attributes: campaign,
    },
    Shape {
        channel: "chat",
        reason: "support_request",
        event_type: "chat_message",
        initiator: CUSTOMER,
        attributes: |rng| {
            vec![
                ("sentiment", format!("{:.2}", rng.f64() * 2.0 - 1.0)),
                (
                    "topic",
                    pick(rng, &["card_blocked", "fees", "transfer"]).into(),
                ),
            ]
        },
    },
    Shape {
        channel: "call_center",
        reason: "complaint",
        event_type: "call",
        initiator: CUSTOMER,
        attributes: |rng| {
            vec![
                ("duration_s", rng.u32(20..1_800).to_string()),
                (
                    "lead_classification",
                    pick(rng, &["cold", "warm", "hot"]).into(),
                ),
            ]
        },
    },
    Shape {
        channel: "branch",
        reason: "account_opening",
        event_type: "branch_visit",
        initiator: CUSTOMER,
        attributes: |rng| vec![("branch_id", format!("br-{:04}", rng.u32(0..2_000)))],
    },
    Shape {
        channel: "web",
        reason: "purchase",
        event_type: "purchase",
        initiator: CUSTOMER,
        attributes: |rng| {
            vec![
                ("amount", format!("{:.2}", rng.f64() * 500.0)),
                ("currency", "EUR".into()),
                (
                    "product",
                    pick(rng, &["travel_insurance", "premium_card"]).into(),
                ),
            ]
        },
    },
    Shape {
        channel: "notification",
        reason: "service_update",
        event_type: "notification_shown",
        initiator: COMPANY,
        attributes: |rng| {
            vec![
                ("campaign_id", format!("cmp-{}", rng.u32(0..500))),
                ("page", "/home".into()),
            ]
        },
    },
    Shape {
        channel: "web",
        reason: "personal_data_verification",
        event_type: "form_step",
        initiator: CUSTOMER,
        attributes: |rng| {
            vec![
                ("form", "kyc_update".into()),
                ("step", rng.u32(1..6).to_string()),
                ("action", pick(rng, &["next", "back", "save"]).into()),
            ]
        },
    },
    Shape {
        channel: "display",
        reason: "product_information",
        event_type: "ad_impression",
        initiator: COMPANY,
        attributes: campaign,
    },
];

fn campaign(rng: &mut fastrand::Rng) -> Vec<(&'static str, String)> {
    vec![
        ("campaign_id", format!("cmp-{}", rng.u32(0..500))),
        ("offer_id", format!("offer-{}", rng.u32(0..5_000))),
    ]
}

fn pick<'a>(rng: &mut fastrand::Rng, choices: &[&'a str]) -> &'a str {
    choices[rng.usize(0..choices.len())]
}

/// An event of `customer` at `at_micros`; `rng` picks its shape, session
/// and attribute values.
pub fn event(
    rng: &mut fastrand::Rng,
    customer: &str,
    event_id: String,
    at_micros: i64,
) -> pb::Event {
    let shape = &SHAPES[rng.usize(0..SHAPES.len())];
    let mut attributes: BTreeMap<String, String> = (shape.attributes)(rng)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    // Context most producers attach to every event; it brings the encoding
    // to the ~300 bytes of a real event.
    attributes.insert(
        "device".into(),
        pick(
            rng,
            &[
                "ios 17.4; iPhone15,2; app 5.12.0",
                "android 14; Pixel 8; app 5.11.3",
                "macos 14.4; Safari 17.3",
                "windows 11; Edge 123.0",
            ],
        )
        .into(),
    );
    attributes.insert(
        "locale".into(),
        pick(rng, &["fr-FR", "en-GB", "de-DE"]).into(),
    );
    attributes.insert("source_system".into(), "bench-generator".into());
    attributes.insert("trace_id".into(), format!("{:032x}", rng.u128(..)));
    pb::Event {
        event_id,
        customer_id: customer.to_string(),
        session_id: format!("sess-{:016x}", rng.u64(..)),
        channel: shape.channel.into(),
        reason: shape.reason.into(),
        r#type: shape.event_type.into(),
        initiator: shape.initiator as i32,
        occurred_at: Some(timestamp(at_micros)),
        attributes,
        identities: Vec::new(),
    }
}

/// The `j`-th seeded event of customer `index`. It depends only on its
/// arguments, so batches can be built in any order by any task; `now_micros`
/// anchors the last day its time falls in.
pub fn seeded_event(seed: u64, index: u64, j: u64, now_micros: i64) -> pb::Event {
    let mut rng = fastrand::Rng::with_seed(mix(&[seed, index, j]));
    let at = now_micros - rng.i64(NEWEST_AGE_MICROS..OLDEST_AGE_MICROS);
    let customer = customer_id(index);
    let event_id = format!("{customer}-s{seed}-e{j}");
    event(&mut rng, &customer, event_id, at)
}

/// Combines seeds into one, so nearby inputs give unrelated streams.
pub fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0x9e37_79b9_7f4a_7c15, |acc, &p| {
        // splitmix64's finaliser: cheap and spreads every input bit.
        let mut z = (acc ^ p).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::{
        domain::{EventLimits, Micros, Taxonomy},
        transport::convert,
    };

    #[test]
    fn customer_ids_are_what_redis_benchmark_draws() {
        // redis-benchmark's __rand_int__ is 12 zero-padded digits.
        assert_eq!(customer_id(1_234), "bench-c000000001234");
        assert_eq!(customer_id(0), "bench-c000000000000");
    }

    #[test]
    fn every_shape_is_valid_in_the_builtin_taxonomy() {
        let now = Micros::now().0;
        let taxonomy = Taxonomy::builtin();
        let mut rng = fastrand::Rng::with_seed(7);
        for (i, _) in SHAPES.iter().enumerate() {
            // Draw until each shape has been produced at least once.
            for j in 0..200 {
                let event = event(&mut rng, "bench-c0", format!("e{i}-{j}"), now - 1_000);
                let raw = convert::raw_event(event).expect("converts");
                if let Err(err) = raw.validate(&taxonomy, &EventLimits::default(), Micros(now)) {
                    panic!("generated event is invalid: {err}");
                }
            }
        }
    }

    #[test]
    fn seeded_events_are_deterministic_recent_and_about_300_bytes() {
        let now = Micros::now().0;
        let mut total = 0;
        for j in 0..200 {
            let a = seeded_event(42, 3, j, now);
            assert_eq!(a, seeded_event(42, 3, j, now));
            let at = a
                .occurred_at
                .as_ref()
                .map(|t| t.seconds * 1_000_000)
                .unwrap_or(0);
            assert!(at < now && at > now - 86_400 * 1_000_000);
            total += a.encoded_len();
        }
        let mean = total / 200;
        assert!((250..=350).contains(&mean), "mean encoded size {mean}");
    }
}
