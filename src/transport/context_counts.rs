//! The contact counts of a journey context, encoded once for as long as
//! they hold. A customer's counts change only when one of their contacts
//! comes due or leaves a window (24 h, 7 d, 30 d, or the look-back the
//! context reads contacts over), so the encoding made for one call is
//! kept with the snapshot (`storage::Rendered::timed`) and answered again
//! until then: the context cache's hits share it. A reloaded policy is
//! another key, so it makes them again.

use std::{any::Any, sync::Arc};

use bytes::Bytes;

use super::contact;
use crate::{
    domain::{ContactPolicy, Micros},
    storage::{ContextSnapshot, TimedPart},
    wire,
};

/// The response's field 9 for `snapshot` at `now` under `policy`.
pub fn context_counts(
    snapshot: &ContextSnapshot,
    policy: &Arc<ContactPolicy>,
    now: Micros,
) -> Bytes {
    let key: Arc<dyn Any + Send + Sync> = policy.clone();
    snapshot
        .rendered
        .timed(TimedPart::ContactCounts, &key, now.0, || {
            let counts = wire::ContactCounts {
                capped: snapshot.contacts_capped,
                ..contact::contact_counts(&policy.counts(&snapshot.contacts, now))
            };
            // A contact leaves the snapshot's view once older than the
            // look-back: from then on it is not read, so not counted.
            let leaves_view = policy.lookback_micros().saturating_add(1);
            let until = ContactPolicy::counts_change_after(&snapshot.contacts, now, &[leaves_view]);
            (wire::contact_counts_field(&counts), until.0)
        })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::{
        domain::{Contact, ContactNames, Taxonomy},
        storage::ContextSnapshot,
    };

    const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
    const HOUR: i64 = 3_600 * Micros::PER_SECOND;
    const DAY: i64 = 24 * HOUR;

    fn contact(at: i64, channel: &str, reason: &str) -> Contact {
        Contact::new(
            Micros(at),
            false,
            ContactNames {
                event_id: &format!("e{at}"),
                channel,
                reason,
                event_type: "email_sent",
                campaign_id: "",
            },
        )
    }

    fn snapshot(contacts: Vec<Contact>) -> ContextSnapshot {
        ContextSnapshot {
            contacts: contacts.into(),
            ..ContextSnapshot::empty("c1")
        }
    }

    /// The snapshot as a read at `now` would hold it: the contacts in the
    /// look-back, sharing the renderings (as the context cache's views do).
    fn view(kept: &ContextSnapshot, policy: &ContactPolicy, now: i64) -> ContextSnapshot {
        let since = now - policy.lookback_micros();
        ContextSnapshot {
            contacts: kept
                .contacts
                .iter()
                .filter(|c| c.at.0 >= since)
                .cloned()
                .collect(),
            ..kept.clone()
        }
    }

    fn fresh(view: &ContextSnapshot, policy: &ContactPolicy, now: i64) -> wire::ContactCounts {
        wire::ContactCounts {
            capped: view.contacts_capped,
            ..contact::contact_counts(&policy.counts(&view.contacts, Micros(now)))
        }
    }

    fn decoded(field: Bytes) -> wire::ContactCounts {
        wire::GetJourneyContextResponse::decode(field)
            .expect("decodes")
            .contact_counts
            .expect("field 9")
    }

    /// The built-in policy (a look-back of 30 days, the counts' longest
    /// window) and one that reads contacts over 45 days.
    fn policies() -> Vec<Arc<ContactPolicy>> {
        let taxonomy = Taxonomy::builtin();
        let long = "[[rule]]\nname = \"sms-3-per-45-days\"\nchannel = \"sms\"\nmax = 3\nwindow = \"45d\"\n";
        vec![
            Arc::new(ContactPolicy::builtin(&taxonomy).expect("valid")),
            Arc::new(ContactPolicy::from_toml(long, &taxonomy).expect("valid")),
        ]
    }

    #[test]
    fn kept_counts_are_the_counts_of_the_moment_at_every_change() {
        for policy in policies() {
            let lookback = policy.lookback_micros();
            let kept = snapshot(vec![
                contact(T0 - lookback - DAY, "email", "campaign_offer"),
                contact(T0 - 40 * DAY, "sms", "campaign_offer"),
                contact(T0 - 8 * DAY, "sms", "campaign_offer"),
                contact(T0 - 2 * DAY, "email", "campaign_offer"),
                contact(T0 - HOUR, "email", "campaign_offer"),
                contact(T0 + HOUR, "push", "campaign_offer"),
            ]);
            // Every instant where something could change, and either side.
            let mut instants: Vec<i64> = kept
                .contacts
                .iter()
                .flat_map(|c| {
                    [0, DAY, 7 * DAY, 30 * DAY, lookback, lookback + 1].map(|w| c.at.0 + w)
                })
                .flat_map(|b| [b - 1, b, b + 1])
                .collect();
            instants.sort_unstable();
            let mut changes = 0;
            let mut last = None;
            // Forward in time, then back (a clock set back makes them again).
            for &now in instants.iter().chain(instants.iter().rev()) {
                let v = view(&kept, &policy, now);
                let counts = decoded(context_counts(&v, &policy, Micros(now)));
                let expected = fresh(&v, &policy, now);
                assert_eq!(counts, expected, "at {now}, look-back {lookback}");
                if last.as_ref() != Some(&expected) {
                    changes += 1;
                }
                last = Some(expected);
            }
            assert!(changes > 5, "the instants cover changes: {changes}");
        }
    }

    #[test]
    fn the_encoding_is_reused_until_the_counts_could_change() {
        let policy = &policies()[0];
        let kept = snapshot(vec![
            contact(T0 - 2 * DAY, "email", "campaign_offer"),
            contact(T0 - HOUR, "email", "campaign_offer"),
        ]);
        let at = |now: i64| context_counts(&view(&kept, policy, now), policy, Micros(now));
        let first = at(T0);
        // The same bytes (not equal ones: the same buffer) while they hold.
        for now in [T0, T0 + 1, T0 + DAY - HOUR - 1] {
            assert_eq!(at(now).as_ptr(), first.as_ptr(), "reused at {now}");
        }
        // The latest contact leaves the last 24 h: encoded again, then kept.
        let later = at(T0 + DAY - HOUR);
        assert_ne!(later.as_ptr(), first.as_ptr());
        assert_eq!(decoded(later.clone()).last_24h, 0);
        assert_eq!(at(T0 + DAY).as_ptr(), later.as_ptr());
        // Another policy object (a reload) encodes again.
        let reloaded = policies().swap_remove(0);
        let again = context_counts(
            &view(&kept, &reloaded, T0 + DAY),
            &reloaded,
            Micros(T0 + DAY),
        );
        assert_ne!(again.as_ptr(), later.as_ptr());
    }

    #[test]
    fn a_reloaded_policy_counts_again() {
        let taxonomy = Taxonomy::builtin();
        let plain = Arc::new(ContactPolicy::builtin(&taxonomy).expect("valid"));
        let exempting = Arc::new(
            ContactPolicy::from_toml("exempt_reasons = [\"campaign_offer\"]\n", &taxonomy)
                .expect("valid"),
        );
        let s = snapshot(vec![contact(T0 - HOUR, "email", "campaign_offer")]);
        let before = decoded(context_counts(&s, &plain, Micros(T0)));
        assert_eq!(before.last_24h, 1);
        let after = decoded(context_counts(&s, &exempting, Micros(T0)));
        assert_eq!(after.last_24h, 0, "the exempting policy's counts");
        assert_eq!(decoded(context_counts(&s, &plain, Micros(T0))).last_24h, 1);
    }
}
