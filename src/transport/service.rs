//! The `JourneyService` handlers: decode, validate, call the store once,
//! map the answer.

use std::{collections::BTreeSet, sync::Arc};

use arc_swap::ArcSwap;
use tonic::{Request, Response, Status};
use ulid::Ulid;

use super::{
    context_counts::context_counts, convert, counters::ApiCounters, identity_work::IdentityWork,
    log_text::LogText, page_token, status::ApiError,
};
use crate::{
    domain::{
        journey::JourneyDefinitions, taxonomy::NameKind, ContactPolicy, DomainError, Event,
        EventLimits, MergeRules, Micros, Taxonomy,
    },
    storage::{profiles, AppendOutcome, StorageError, TimelineQuery, TimelineStore},
    wire::{self as pb, journey_service_server::JourneyService, WireEvent},
};

/// Limits of requests, beside the limits of one event.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    pub event: EventLimits,
    /// Most events in one `AppendEvents`.
    pub max_batch: usize,
    /// Events returned when a request names no number.
    pub default_page: usize,
    /// Most events one read may return.
    pub max_page: usize,
    /// Most customers in one CheckContactFrequencyBatch.
    pub max_check_batch: usize,
    /// How long a finished journey stays in the context.
    pub journey_lookback_micros: i64,
    /// Most identity tasks (links, merges) at once (`IdentityWork`).
    pub max_identity_tasks: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            event: EventLimits::default(),
            max_batch: 1_000,
            default_page: 50,
            max_page: 1_000,
            max_check_batch: 10_000,
            journey_lookback_micros: 24 * 3_600 * Micros::PER_SECOND,
            max_identity_tasks: 4_096,
        }
    }
}

/// The contact policy in force; replaced whole on reload, so a check never
/// sees half of an old policy and half of a new one.
pub type SharedPolicy = Arc<ArcSwap<ContactPolicy>>;

/// The journey definitions in force; replaced whole on reload.
pub type SharedJourneys = Arc<ArcSwap<JourneyDefinitions>>;

/// The service behind `journey.v1.JourneyService`.
pub struct JourneyApi {
    pub(super) store: Arc<dyn TimelineStore>,
    pub(super) taxonomy: Arc<Taxonomy>,
    pub(super) policy: SharedPolicy,
    pub(super) journeys: SharedJourneys,
    pub(super) rules: MergeRules,
    pub(super) limits: ApiLimits,
    /// What the handlers counted since start.
    pub(super) counters: Arc<ApiCounters>,
    /// Where links and merges run, to their end.
    pub(super) identity_work: IdentityWork,
}

impl JourneyApi {
    pub fn new(
        store: Arc<dyn TimelineStore>,
        taxonomy: Arc<Taxonomy>,
        policy: SharedPolicy,
        journeys: SharedJourneys,
        rules: MergeRules,
        limits: ApiLimits,
    ) -> Self {
        Self {
            store,
            taxonomy,
            policy,
            journeys,
            rules,
            identity_work: IdentityWork::new(limits.max_identity_tasks),
            limits,
            counters: Arc::default(),
        }
    }

    /// Where links and merges run: the server waits for it when it stops.
    pub fn identity_work(&self) -> IdentityWork {
        self.identity_work.clone()
    }

    /// Names outside the taxonomy that lenient mode accepted since start.
    pub fn unknown_names(&self) -> u64 {
        ApiCounters::read(&self.counters.unknown_names)
    }

    /// What the handlers counted since start (the metrics endpoint reads it).
    pub fn counters(&self) -> Arc<ApiCounters> {
        self.counters.clone()
    }

    /// Converts and checks one event; `now` is shared by a whole batch.
    fn accept(&self, event: Option<WireEvent>, now: Micros) -> Result<Event, DomainError> {
        let event = event.ok_or_else(|| DomainError::invalid("", "required"))?;
        // Refused before it is decoded: a few MiB of empty identities (2
        // bytes each on the wire, 48 decoded) would take 24 times their
        // size before their count is checked.
        let most = max_encoded_event_bytes(&self.limits.event);
        if event.0.len() > most {
            return Err(DomainError::invalid(
                "",
                format!(
                    "the event's encoding is {} bytes; at most {most} (--max-event-bytes and its identities)",
                    event.0.len()
                ),
            ));
        }
        let event = <crate::pb::Event as prost::Message>::decode(event.0)
            .map_err(|e| DomainError::invalid("", format!("not a valid Event: {e}")))?;
        let mut raw = convert::raw_event(event)?;
        if raw.event_id.is_empty() {
            raw.event_id = Ulid::new().to_string();
        }
        let (event, leniency) = raw.validate(&self.taxonomy, &self.limits.event, now)?;
        if leniency.unknown_names > 0 {
            let names = u64::from(leniency.unknown_names);
            ApiCounters::add(&self.counters.unknown_names, names);
            tracing::debug!(
                channel = %event.channel, reason = %event.reason, r#type = %event.event_type,
                names, "accepted names outside the taxonomy (lenient mode)"
            );
        }
        Ok(event)
    }

    /// Places events that carry identities in the profiles they lead to
    /// (the others are placed by their customer id already). Those whose
    /// identities lead to one profile already are placed here; those with
    /// something to link, in a task that runs to its end even if the call
    /// is dropped (`IdentityWork`).
    async fn place(&self, events: &mut [Event]) -> Result<(), ApiError> {
        let mut linking = Vec::new();
        for (i, event) in events.iter_mut().enumerate() {
            if !profiles::place_known(self.store.as_ref(), event).await? {
                linking.push(i);
            }
        }
        if linking.is_empty() {
            return Ok(());
        }
        let mut placing: Vec<Event> = linking.iter().map(|&i| events[i].clone()).collect();
        let (store, rules) = (self.store.clone(), self.rules.clone());
        let placed = self
            .identity_work
            .run(async move {
                for event in &mut placing {
                    profiles::place_linking(store.as_ref(), &rules, event, Self::new_profile)
                        .await?;
                }
                Ok::<_, StorageError>(placing)
            })
            .await??;
        for (i, event) in linking.into_iter().zip(placed) {
            events[i] = event;
        }
        Ok(())
    }

    /// A requested number of events: 0 means the default.
    fn page_size(&self, field: &str, asked: u32) -> Result<usize, DomainError> {
        count_or_default(field, asked, self.limits.default_page, self.limits.max_page)
    }

    fn channel_filter(&self, channels: Vec<String>) -> Result<BTreeSet<String>, DomainError> {
        for (i, channel) in channels.iter().enumerate() {
            self.taxonomy
                .check_name(&format!("channels[{i}]"), NameKind::Channel, channel)?;
        }
        Ok(channels.into_iter().collect())
    }
}

#[tonic::async_trait]
impl JourneyService for JourneyApi {
    #[tracing::instrument(skip_all, fields(customer))]
    async fn append_event(
        &self,
        request: Request<pb::AppendEventRequest>,
    ) -> Result<Response<pb::AppendEventResponse>, Status> {
        let event = self
            .accept(request.into_inner().event, Micros::now())
            .map_err(|e| {
                ApiCounters::add(&self.counters.events_rejected, 1);
                e.within("event")
            })?;
        let mut events = [event];
        self.place(&mut events).await?;
        let [event] = events;
        tracing::Span::current().record("customer", event.profile.as_str());
        let outcomes = self
            .store
            .append(std::slice::from_ref(&event), Micros::now())
            .await?;
        let duplicate = outcomes.first() == Some(&AppendOutcome::Duplicate);
        let counter = match duplicate {
            true => &self.counters.events_duplicate,
            false => &self.counters.events_stored,
        };
        ApiCounters::add(counter, 1);
        Ok(Response::new(pb::AppendEventResponse {
            event_id: event.event_id.to_string(),
            duplicate,
        }))
    }

    #[tracing::instrument(skip_all, fields(events))]
    async fn append_events(
        &self,
        request: Request<pb::AppendEventsRequest>,
    ) -> Result<Response<pb::AppendEventsResponse>, Status> {
        let request = request.into_inner();
        let got = request.events.len() + request.skipped;
        let events = request.events;
        tracing::Span::current().record("events", got);
        if got > self.limits.max_batch {
            return Err(DomainError::TooMany {
                field: "events".into(),
                got,
                max: self.limits.max_batch,
            }
            .into());
        }
        let now = Micros::now();
        let mut results = Vec::with_capacity(events.len());
        let mut accepted = Vec::with_capacity(events.len());
        let mut slots = Vec::with_capacity(events.len());
        for (i, event) in events.into_iter().enumerate() {
            let given_id = given_event_id(&event);
            match self.accept(Some(event), now) {
                Ok(event) => {
                    results.push(pb::AppendResult {
                        event_id: event.event_id.to_string(),
                        outcome: pb::Outcome::Unspecified as i32,
                        error: String::new(),
                    });
                    slots.push(i);
                    accepted.push(event);
                }
                Err(err) => results.push(pb::AppendResult {
                    event_id: given_id,
                    outcome: pb::Outcome::Rejected as i32,
                    error: err.within(&format!("events[{i}]")).to_string(),
                }),
            }
        }
        self.place(&mut accepted).await?;
        let outcomes = self.store.append(&accepted, now).await?;
        let counters = &self.counters;
        ApiCounters::add(
            &counters.events_rejected,
            (results.len() - accepted.len()) as u64,
        );
        for (slot, outcome) in slots.into_iter().zip(outcomes) {
            let (outcome, counter) = match outcome {
                AppendOutcome::Stored => (pb::Outcome::Stored, &counters.events_stored),
                AppendOutcome::Duplicate => (pb::Outcome::Duplicate, &counters.events_duplicate),
            };
            results[slot].outcome = outcome as i32;
            ApiCounters::add(counter, 1);
        }
        Ok(Response::new(pb::AppendEventsResponse { results }))
    }

    #[tracing::instrument(skip_all, fields(customer = %LogText(&request.get_ref().customer_id)))]
    async fn get_journey_context(
        &self,
        request: Request<pb::GetJourneyContextRequest>,
    ) -> Result<Response<pb::GetJourneyContextResponse>, Status> {
        let request = request.into_inner();
        // Every field is checked before an identity is resolved: bad input
        // is INVALID_ARGUMENT and costs no store read.
        let max_events = self.page_size("max_events", request.max_events)?;
        let customer = self
            .profile_of(&request.customer_id, request.customer.as_ref())
            .await?;
        let policy = self.policy.load_full();
        let now = Micros::now();
        let snapshot = self
            .store
            .context(
                &customer,
                max_events,
                now.saturating_sub_micros(policy.lookback_micros()),
            )
            .await?
            .ok_or_else(|| ApiError::UnknownCustomer(customer.to_string()))?;
        // Rendered once per read: a cached snapshot's hits share it.
        let [head, tail] = snapshot
            .rendered
            .get_or_init(|| convert::context_fixed(&snapshot, &self.taxonomy));
        Ok(Response::new(pb::GetJourneyContextResponse {
            contact_counts_encoded: context_counts(&snapshot, &policy, now),
            contact_counts: None,
            journeys_encoded: self.context_journeys(&snapshot, now),
            journeys: Vec::new(),
            head,
            tail,
            events_encoded: snapshot.events.framed().clone(),
            events: Vec::new(),
        }))
    }

    #[tracing::instrument(skip_all, fields(customer = %LogText(&request.get_ref().customer_id)))]
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let request = request.into_inner();
        let limit = self.page_size("page_size", request.page_size)?;
        let start = request
            .start_time
            .map(|t| convert::timestamp("start_time", &t))
            .transpose()?;
        let end = request
            .end_time
            .map(|t| convert::timestamp("end_time", &t))
            .transpose()?;
        if let (Some(start), Some(end)) = (start, end) {
            if end < start {
                return Err(DomainError::invalid("end_time", "before start_time").into());
            }
        }
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(page_token::decode(token, self.limits.event.max_id_bytes)?),
        };
        let channels = self.channel_filter(request.channels)?;
        let initiator = convert::initiator("initiator", request.initiator)?;
        let customer = self
            .profile_of(&request.customer_id, request.customer.as_ref())
            .await?;
        let query = TimelineQuery {
            customer: customer.clone(),
            start,
            end,
            channels,
            initiator,
            limit,
            after,
        };
        let page = self
            .store
            .list(&query)
            .await?
            .ok_or_else(|| ApiError::UnknownCustomer(customer.to_string()))?;
        Ok(Response::new(pb::ListEventsResponse {
            events: convert::into_events(page.events),
            next_page_token: page
                .next
                .as_ref()
                .map(page_token::encode)
                .unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(customer = %LogText(&request.get_ref().customer_id)))]
    async fn check_contact_frequency(
        &self,
        request: Request<pb::CheckContactRequest>,
    ) -> Result<Response<pb::CheckContactResponse>, Status> {
        Ok(Response::new(
            self.check_contact(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(customers = request.get_ref().customer_ids.len()))]
    async fn check_contact_frequency_batch(
        &self,
        request: Request<pb::CheckContactBatchRequest>,
    ) -> Result<Response<pb::CheckContactBatchResponse>, Status> {
        Ok(Response::new(
            self.check_contact_batch(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(identities = request.get_ref().identities.len()))]
    async fn link_identities(
        &self,
        request: Request<pb::LinkIdentitiesRequest>,
    ) -> Result<Response<pb::LinkIdentitiesResponse>, Status> {
        Ok(Response::new(self.link(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn unlink_identity(
        &self,
        request: Request<pb::UnlinkIdentityRequest>,
    ) -> Result<Response<pb::UnlinkIdentityResponse>, Status> {
        Ok(Response::new(self.unlink(request.into_inner()).await?))
    }

    async fn list_journey_definitions(
        &self,
        _request: Request<pb::ListJourneyDefinitionsRequest>,
    ) -> Result<Response<pb::ListJourneyDefinitionsResponse>, Status> {
        Ok(Response::new(self.journey_definitions()))
    }

    #[tracing::instrument(skip_all, fields(journey = %LogText(&request.get_ref().journey)))]
    async fn get_journey_stats(
        &self,
        request: Request<pb::GetJourneyStatsRequest>,
    ) -> Result<Response<pb::GetJourneyStatsResponse>, Status> {
        Ok(Response::new(
            self.journey_stats(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(customer = %LogText(&request.get_ref().customer_id)))]
    async fn forget_customer(
        &self,
        request: Request<pb::ForgetCustomerRequest>,
    ) -> Result<Response<pb::ForgetCustomerResponse>, Status> {
        Ok(Response::new(self.forget(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(journey = %LogText(&request.get_ref().journey)))]
    async fn list_journeys(
        &self,
        request: Request<pb::ListJourneysRequest>,
    ) -> Result<Response<pb::ListJourneysResponse>, Status> {
        Ok(Response::new(
            JourneyApi::list_journeys(self, request.into_inner()).await?,
        ))
    }
}

/// The id a producer gave an event, for a rejection: read from its first
/// field without decoding the rest (which may be what is wrong with it).
fn given_event_id(event: &WireEvent) -> String {
    #[derive(Clone, PartialEq, prost::Message)]
    struct IdOnly {
        #[prost(string, tag = "1")]
        event_id: String,
    }
    <IdOnly as prost::Message>::decode(event.0.clone())
        .map(|e| e.event_id)
        .unwrap_or_default()
}

/// A requested count: 0 (unset) means `default`; above `max` is refused.
pub(super) fn count_or_default(
    field: &str,
    asked: u32,
    default: usize,
    max: usize,
) -> Result<usize, DomainError> {
    match asked as usize {
        0 => Ok(default),
        n if n > max => Err(DomainError::invalid(
            field,
            format!("{n} is out of range [1, {max}]"),
        )),
        n => Ok(n),
    }
}

/// The largest encoding of an event the limits can admit: twice its
/// counted bytes (ids, names, attribute keys and values) for the framing,
/// 1 KiB per identity allowed, and 4 KiB for the rest.
fn max_encoded_event_bytes(limits: &crate::domain::EventLimits) -> usize {
    limits
        .max_event_bytes
        .saturating_mul(2)
        .saturating_add(limits.max_identities.saturating_mul(1024))
        .saturating_add(4096)
}
