//! The contact-frequency handlers: build the proposed contact from the
//! request, read the customers' contact histories (one round trip for one
//! customer, pipelined for a list) and let the policy decide.

use ulid::Ulid;

use super::{convert, service::JourneyApi, status::ApiError};
use crate::{
    domain::{
        taxonomy::NameKind, Contact, ContactCounts, ContactDecision, ContactRequest, CustomerId,
        DomainError, Micros, WindowCounts,
    },
    wire as pb,
};

/// How often a reservation is retried when another writer changed the
/// customer's contacts between the read and the write. Each lost race
/// means another engine recorded a contact, so the cap is reached within
/// a few rounds and later reads answer "not allowed" without writing.
const RESERVE_ATTEMPTS: usize = 64;

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

    pub(super) async fn check_contact(
        &self,
        request: pb::CheckContactRequest,
    ) -> Result<pb::CheckContactResponse, ApiError> {
        let customer = self.customer(&request.customer_id)?;
        let proposal = self.contact_request(
            &request.channel,
            &request.reason,
            &request.r#type,
            &request.campaign_id,
            request.at,
        )?;
        for _ in 0..RESERVE_ATTEMPTS {
            let policy = self.policy.load();
            let since = proposal.at.saturating_sub_micros(policy.lookback_micros());
            let history = self
                .store
                .contacts(std::slice::from_ref(&customer), since)
                .await?
                .pop()
                .unwrap_or_default();
            let decision = policy.decide(
                &self.taxonomy,
                &history.contacts,
                &proposal,
                history.timezone.as_deref(),
            );
            if !request.reserve || !decision.allowed {
                return Ok(answer(&customer, history.known, &decision, String::new()));
            }
            let reservation = Contact {
                at: proposal.at,
                event_id: Ulid::new().to_string(),
                channel: proposal.channel.clone(),
                reason: proposal.reason.clone(),
                event_type: proposal.event_type.clone(),
                campaign_id: proposal.campaign_id.clone(),
                reserved: true,
            };
            if self
                .store
                .reserve_contact(&customer, &reservation, history.version, Micros::now())
                .await?
            {
                return Ok(answer(
                    &customer,
                    history.known,
                    &decision,
                    reservation.event_id,
                ));
            }
        }
        Err(ApiError::Contention(format!(
            "contacts of customer {customer:?} kept changing; try again"
        )))
    }

    pub(super) async fn check_contact_batch(
        &self,
        request: pb::CheckContactBatchRequest,
    ) -> Result<pb::CheckContactBatchResponse, ApiError> {
        let max = self.limits.max_check_batch;
        if request.customer_ids.len() > max {
            return Err(DomainError::TooMany {
                field: "customer_ids".into(),
                got: request.customer_ids.len(),
                max,
            }
            .into());
        }
        let customers = request
            .customer_ids
            .iter()
            .enumerate()
            .map(|(i, id)| CustomerId::parse(&format!("customer_ids[{i}]"), id, &self.limits.event))
            .collect::<Result<Vec<_>, _>>()?;
        let proposal = self.contact_request(
            &request.channel,
            &request.reason,
            &request.r#type,
            &request.campaign_id,
            request.at,
        )?;
        let policy = self.policy.load();
        let since = proposal.at.saturating_sub_micros(policy.lookback_micros());
        let histories = self.store.contacts(&customers, since).await?;
        let results = customers
            .iter()
            .zip(histories)
            .map(|(customer, history)| {
                let decision = policy.decide(
                    &self.taxonomy,
                    &history.contacts,
                    &proposal,
                    history.timezone.as_deref(),
                );
                answer(customer, history.known, &decision, String::new())
            })
            .collect();
        Ok(pb::CheckContactBatchResponse { results })
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
        customer_id: customer.to_string(),
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
    }
}
