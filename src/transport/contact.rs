//! The contact-frequency handlers: build the proposed contact from the
//! request, read the customers' contact histories (one round trip for one
//! customer, pipelined for a list) and let the policy decide.

use ulid::Ulid;

use super::{convert, counters::ApiCounters, service::JourneyApi, status::ApiError};
use crate::{
    domain::{
        taxonomy::NameKind, Contact, ContactCounts, ContactDecision, ContactNames, ContactPolicy,
        ContactRequest, CustomerId, DomainError, Micros, WindowCounts,
    },
    storage::{ContactHistory, Reserved, StorageError},
    wire as pb,
};

/// How often a reservation is retried when another writer changed the
/// customer's contacts between the read and the write. Each lost race
/// means another engine recorded a contact, so the cap is reached within
/// a few rounds and later reads answer "not allowed" without writing.
const RESERVE_ATTEMPTS: usize = 64;

/// Customers of a batch whose contact histories are read and decided
/// together (the Redis store reads as many in one round trip).
const CUSTOMERS_PER_READ: usize = 1_000;

impl JourneyApi {
    /// The proposed contact of a check, validated.
    fn contact_request(
        &self,
        channel: &str,
        reason: &str,
        event_type: &str,
        campaign_id: &str,
        at: Option<prost_types::Timestamp>,
    ) -> Result<ContactRequest, DomainError> {
        if channel.is_empty() {
            return Err(DomainError::invalid("channel", "required"));
        }
        // Shapes first, as for an event's names: in lenient mode the
        // taxonomy takes any name, and a reservation stores these.
        let max = self.limits.event.max_id_bytes;
        for (field, value) in [
            ("channel", channel),
            ("reason", reason),
            ("type", event_type),
        ] {
            crate::domain::event::check_text(field, value, max)?;
        }
        let taxonomy = &self.taxonomy;
        taxonomy.check_name("channel", NameKind::Channel, channel)?;
        if !reason.is_empty() {
            taxonomy.check_name("reason", NameKind::Reason, reason)?;
        }
        if !event_type.is_empty() {
            taxonomy.check_name("type", NameKind::EventType, event_type)?;
        }
        let max = self.limits.event.max_attribute_value_bytes;
        if campaign_id.len() > max || campaign_id.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                "campaign_id",
                format!("at most {max} bytes, no control characters"),
            ));
        }
        let at = match at {
            Some(t) => convert::timestamp("at", &t)?,
            None => Micros::now(),
        };
        Ok(ContactRequest {
            channel: channel.to_string(),
            reason: reason.to_string(),
            event_type: event_type.to_string(),
            campaign_id: campaign_id.to_string(),
            at,
        })
    }

    /// The policy's answer for one customer's history.
    fn decide(
        &self,
        policy: &ContactPolicy,
        history: &ContactHistory,
        proposal: &ContactRequest,
    ) -> ContactDecision {
        policy.decide(
            &self.taxonomy,
            &history.contacts,
            proposal,
            history.timezone.as_deref(),
        )
    }

    pub(super) async fn check_contact(
        &self,
        request: pb::CheckContactRequest,
    ) -> Result<pb::CheckContactResponse, ApiError> {
        // Every field is checked before an identity is resolved.
        let proposal = self.contact_request(
            &request.channel,
            &request.reason,
            &request.r#type,
            &request.campaign_id,
            request.at,
        )?;
        if request.reserve {
            // A reservation is a contact, which an event with its id later
            // replaces: it takes an event's instants (far-future ones would
            // stay ahead of every real contact and never be trimmed).
            crate::domain::event::check_instant(
                "at",
                proposal.at,
                &self.limits.event,
                Micros::now(),
            )?;
            // And its id is an event id.
            crate::domain::event::check_text(
                "reservation_id",
                &request.reservation_id,
                self.limits.event.max_id_bytes,
            )?;
        } else if !request.reservation_id.is_empty() {
            return Err(DomainError::invalid("reservation_id", "only with reserve").into());
        }
        let customer =
            match self.reference(&request.customer_id, request.customer.as_ref(), "customer")? {
                super::customers::Named::Profile(profile) => profile,
                super::customers::Named::Identity(identity) => {
                    match self
                        .store
                        .resolve(std::slice::from_ref(&identity))
                        .await?
                        .pop()
                        .flatten()
                    {
                        Some(profile) => profile,
                        // Nobody holds this identity: a reservation would
                        // belong to no one, so reserve mode is NOT_FOUND;
                        // a plain check answers "unknown customer".
                        None if request.reserve => {
                            return Err(ApiError::UnknownCustomer(identity.to_string()))
                        }
                        None => CustomerId::anonymous(&Ulid::new().to_string()),
                    }
                }
            };
        for _ in 0..RESERVE_ATTEMPTS {
            let policy = self.policy.load();
            let since = proposal.at.saturating_sub_micros(policy.lookback_micros());
            let history = self
                .store
                .contacts(std::slice::from_ref(&customer), since)
                .await?
                .pop()
                .unwrap_or_default();
            if request.reserve && customer.is_anonymous() && !history.known {
                // An anonymous profile id names a profile the store made: a
                // reservation for one it does not hold (gone, or never
                // made) would belong to no one, and no event could replace
                // it.
                return Err(ApiError::UnknownCustomer(customer.to_string()));
            }
            if let Some(held) = held_reservation(&history, &request.reservation_id, &proposal)? {
                // Asked again (a retry after a lost answer): the contact
                // recorded under this id stands, admitted when it was.
                let decision = self.decide(&policy, &held, &proposal);
                return Ok(self.answer(
                    &customer,
                    history.known,
                    &ContactDecision::admitted(decision),
                    request.reservation_id,
                ));
            }
            let decision = self.decide(&policy, &history, &proposal);
            if !request.reserve || !decision.allowed {
                return Ok(self.answer(&customer, history.known, &decision, String::new()));
            }
            let id = match request.reservation_id.as_str() {
                "" => Ulid::new().to_string(),
                given => given.to_string(),
            };
            let reservation = Contact::new(
                proposal.at,
                true,
                ContactNames {
                    event_id: &id,
                    channel: &proposal.channel,
                    reason: &proposal.reason,
                    event_type: &proposal.event_type,
                    campaign_id: &proposal.campaign_id,
                },
            );
            // Where the contacts were read: the customer's profile, or the
            // one it was merged into.
            let profile = history.read_from.as_ref().unwrap_or(&customer);
            let recorded = match self
                .store
                .reserve_contact(profile, &reservation, history.version, Micros::now())
                .await
            {
                Ok(Reserved::IdTaken) => {
                    return Err(ApiError::IdTaken(
                        "reservation_id",
                        format!(
                        "customer {:?} already has an event or an older contact with the id {id:?}",
                        customer.as_str()
                    ),
                    ))
                }
                Ok(recorded) => recorded == Reserved::Recorded,
                // The connection broke before the answer: the script ran
                // whole or not at all, and the reservation's id was held by
                // nothing, so the next read tells which. Without it a client
                // retrying UNAVAILABLE could reserve twice.
                Err(StorageError::Unavailable(why)) => self
                    .reservation_landed(profile, &reservation, since)
                    .await
                    .map_err(|_| StorageError::Unavailable(why))?,
                Err(other) => return Err(other.into()),
            };
            if recorded {
                ApiCounters::add(&self.counters.reservations, 1);
                return Ok(self.answer(
                    &customer,
                    history.known,
                    &decision,
                    reservation.event_id().to_string(),
                ));
            }
        }
        Err(ApiError::Contention(format!(
            "contacts of customer {:?} kept changing; try again",
            customer.as_str()
        )))
    }

    pub(super) async fn check_contact_batch(
        &self,
        request: pb::CheckContactBatchRequest,
    ) -> Result<pb::CheckContactBatchResponse, ApiError> {
        let max = self.limits.max_check_batch;
        let asked = request.customers.len() + request.customer_ids.len() + request.skipped;
        if asked > max {
            // The limit is on both together: blame the longer list.
            let field = if request.customers.len() > request.customer_ids.len() {
                "customers"
            } else {
                "customer_ids"
            };
            return Err(DomainError::TooMany {
                field: field.into(),
                got: asked,
                max,
            }
            .into());
        }
        let proposal = self.contact_request(
            &request.channel,
            &request.reason,
            &request.r#type,
            &request.campaign_id,
            request.at,
        )?;
        let customers = self
            .batch_profiles(&request.customers, &request.customer_ids)
            .await?;
        let policy = self.policy.load();
        let since = proposal.at.saturating_sub_micros(policy.lookback_micros());
        // Read and decided a thousand at a time: a batch holds one slice
        // of histories at once, not every customer's (up to the retention's
        // count of contacts each).
        let mut results = Vec::with_capacity(customers.len());
        for slice in customers.chunks(CUSTOMERS_PER_READ) {
            let histories = self.store.contacts(slice, since).await?;
            results.extend(slice.iter().zip(histories).map(|(customer, history)| {
                let decision = self.decide(&policy, &history, &proposal);
                self.answer(customer, history.known, &decision, String::new())
            }));
        }
        Ok(pb::CheckContactBatchResponse { results })
    }
}

/// When a contact with the reservation id asked (not empty) is among the
/// history's: the history without it, to decide as when it was reserved.
/// A contact that does not fit the proposal (another channel, or another
/// reason, type or campaign where the proposal states one) is another
/// contact: the id is taken, not the reservation asked again.
fn held_reservation(
    history: &ContactHistory,
    id: &str,
    proposal: &ContactRequest,
) -> Result<Option<ContactHistory>, ApiError> {
    if id.is_empty() {
        return Ok(None);
    }
    let Some(held) = history.contacts.iter().find(|c| c.event_id() == id) else {
        return Ok(None);
    };
    if !proposal.is_made_by(held) {
        return Err(ApiError::IdTaken(
            "reservation_id",
            format!(
                "names another contact of the customer (channel {:?}, reason {:?}, type {:?}, campaign {:?})",
                held.channel(),
                held.reason(),
                held.event_type(),
                held.campaign_id()
            ),
        ));
    }
    Ok(Some(ContactHistory {
        contacts: history
            .contacts
            .iter()
            .filter(|c| c.event_id() != id)
            .cloned()
            .collect(),
        timezone: history.timezone.clone(),
        read_from: history.read_from.clone(),
        ..*history
    }))
}

impl JourneyApi {
    /// Whether `reservation` is among `profile`'s contacts since `since`.
    async fn reservation_landed(
        &self,
        profile: &CustomerId,
        reservation: &Contact,
        since: Micros,
    ) -> Result<bool, StorageError> {
        let read = self
            .store
            .contacts(std::slice::from_ref(profile), since)
            .await?;
        Ok(read.iter().any(|history| {
            history
                .contacts
                .iter()
                .any(|c| c.event_id() == reservation.event_id())
        }))
    }

    /// The profiles of a batch, in order: references first, then plain
    /// ids. Identities are resolved in one round trip; one that leads
    /// nowhere gets a fresh anonymous id, so it answers "not found".
    async fn batch_profiles(
        &self,
        refs: &[pb::CustomerRef],
        ids: &[String],
    ) -> Result<Vec<CustomerId>, ApiError> {
        use super::customers::Named;
        let mut named = Vec::with_capacity(refs.len() + ids.len());
        for (i, r) in refs.iter().enumerate() {
            named.push(self.reference("", Some(r), &format!("customers[{i}]"))?);
        }
        for (i, id) in ids.iter().enumerate() {
            named.push(Named::Profile(CustomerId::parse(
                &format!("customer_ids[{i}]"),
                id,
                &self.limits.event,
            )?));
        }
        let identities: Vec<_> = named
            .iter()
            .filter_map(|n| match n {
                Named::Identity(identity) => Some(identity.clone()),
                Named::Profile(_) => None,
            })
            .collect();
        let mut resolved = if identities.is_empty() {
            Vec::new()
        } else {
            self.store.resolve(&identities).await?
        }
        .into_iter();
        Ok(named
            .into_iter()
            .map(|n| match n {
                Named::Profile(profile) => profile,
                Named::Identity(_) => resolved
                    .next()
                    .flatten()
                    .unwrap_or_else(|| CustomerId::anonymous(&Ulid::new().to_string())),
            })
            .collect())
    }
}

impl JourneyApi {
    /// The answer for one customer, counted as allowed or not.
    fn answer(
        &self,
        customer: &CustomerId,
        found: bool,
        decision: &ContactDecision,
        reservation_id: String,
    ) -> pb::CheckContactResponse {
        let counter = match decision.allowed {
            true => &self.counters.contacts_allowed,
            false => &self.counters.contacts_blocked,
        };
        ApiCounters::add(counter, 1);
        answer(customer, found, decision, reservation_id)
    }
}

fn answer(
    customer: &CustomerId,
    found: bool,
    decision: &ContactDecision,
    reservation_id: String,
) -> pb::CheckContactResponse {
    pb::CheckContactResponse {
        allowed: decision.allowed,
        violations: decision
            .violations
            .iter()
            .map(|v| pb::RuleViolation {
                rule: v.rule.clone(),
                count: v.count,
                limit: v.limit,
                window: Some(prost_types::Duration {
                    seconds: v.window_micros.div_euclid(Micros::PER_SECOND),
                    nanos: (v.window_micros.rem_euclid(Micros::PER_SECOND) * 1_000) as i32,
                }),
            })
            .collect(),
        next_allowed_at: decision.next_allowed_at.map(convert::to_timestamp),
        counts: Some(contact_counts(&decision.counts)),
        found,
        // An identity that led nowhere has no profile to name.
        customer_id: if !found && customer.is_anonymous() {
            String::new()
        } else {
            customer.to_string()
        },
        quiet_hours: decision.quiet_hours,
        reservation_id,
        timezone: decision.timezone.name().to_string(),
        exempt: decision.exempt,
    }
}

fn window_counts(c: &WindowCounts) -> pb::ChannelContactCounts {
    pb::ChannelContactCounts {
        last_24h: c.last_24h,
        last_7d: c.last_7d,
        last_30d: c.last_30d,
    }
}

/// Contact counts for a response.
pub fn contact_counts(counts: &ContactCounts) -> pb::ContactCounts {
    pb::ContactCounts {
        last_24h: counts.total.last_24h,
        last_7d: counts.total.last_7d,
        last_30d: counts.total.last_30d,
        per_channel: counts
            .per_channel
            .iter()
            .map(|(channel, c)| (channel.clone(), window_counts(c)))
            .collect(),
        capped: false,
    }
}
