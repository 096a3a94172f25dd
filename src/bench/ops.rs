//! One RPC of each kind: the request built from the population, the answer
//! checked. A non-OK status, and an OK answer that does not say what was
//! asked (a rejected or duplicate event), is a `Failure` counted by code.

use tonic::{client::Grpc, transport::Channel, Code};

use super::{channels::MAX_RESPONSE_BYTES, lean, population, raw::RawRoute, scenario::Op};
use crate::{domain::Micros, pb, pb::journey_service_client::JourneyServiceClient};

/// Events per AppendEvents request of the `append-batch` and
/// `append-sessions` scenarios.
pub const BATCH_EVENTS: usize = 100;
/// Events per customer in an `append-sessions` batch.
pub const SESSION_EVENTS: usize = 10;
/// Events asked of GetJourneyContext and ListEvents.
pub const READ_EVENTS: u32 = 50;

/// Why one call did not succeed, by the key the report counts it under.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Self {
            code: code_name(status.code()),
            message: status.message().to_string(),
        }
    }
}

/// Where a load task's calls go. One per task, made once: the size of
/// its variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Route {
    /// The service, over gRPC.
    Grpc {
        /// Writes, through the generated client.
        client: JourneyServiceClient<Channel>,
        /// Reads, decoded lean (see `lean.rs`).
        reads: Grpc<Channel>,
    },
    /// Straight to Redis: the raw baseline (see `raw.rs`).
    Redis(RawRoute),
}

impl Route {
    pub fn grpc(channel: Channel) -> Self {
        Self::Grpc {
            client: JourneyServiceClient::new(channel.clone()),
            reads: Grpc::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES),
        }
    }
}

/// Sends the calls of one load task along its route.
pub struct Caller {
    route: Route,
    rng: fastrand::Rng,
    /// The customers drawn from: seeded ones, `customers.start` on.
    customers: std::ops::Range<u64>,
    /// Unique per run and task, so appended ids never collide with seeded
    /// ones, another task's, or an earlier run's.
    id_prefix: String,
    next_id: u64,
}

impl Caller {
    pub fn new(
        route: Route,
        rng: fastrand::Rng,
        customers: std::ops::Range<u64>,
        run_nonce: u64,
        task: usize,
    ) -> Self {
        // Never empty: a draw from an empty range would panic.
        let customers = customers.start..customers.end.max(customers.start.saturating_add(1));
        Self {
            route,
            rng,
            customers,
            id_prefix: format!("run{run_nonce:x}-t{task}-"),
            next_id: 0,
        }
    }

    pub fn rng(&mut self) -> &mut fastrand::Rng {
        &mut self.rng
    }

    /// Sends one call; returns how many events it wrote or read.
    pub async fn call(&mut self, op: Op) -> Result<u64, Failure> {
        if matches!(self.route, Route::Redis(_)) {
            return self.call_redis(op).await;
        }
        match op {
            Op::Append => self.append().await,
            Op::AppendIdentity => self.append_identity().await,
            Op::AppendBatch | Op::AppendSessions => self.append_batch(op).await,
            Op::Context => self.context().await,
            Op::List => self.list().await,
            Op::Check => self.check().await,
        }
    }

    fn client(&mut self) -> Result<&mut JourneyServiceClient<Channel>, Failure> {
        match &mut self.route {
            Route::Grpc { client, .. } => Ok(client),
            Route::Redis(_) => Err(not_grpc()),
        }
    }

    fn reads(&mut self) -> Result<&mut Grpc<Channel>, Failure> {
        match &mut self.route {
            Route::Grpc { reads, .. } => Ok(reads),
            Route::Redis(_) => Err(not_grpc()),
        }
    }

    /// The same call's Redis work, sent straight to Redis.
    async fn call_redis(&mut self, op: Op) -> Result<u64, Failure> {
        let customer = self.random_customer();
        let events = match op {
            Op::Append => vec![self.new_event()],
            Op::AppendBatch | Op::AppendSessions => self.batch(op),
            _ => Vec::new(),
        };
        let Route::Redis(raw) = &self.route else {
            return Err(Failure {
                code: "BAD_ROUTE",
                message: "not a Redis route".into(),
            });
        };
        match op {
            Op::Context => raw.context(&customer, READ_EVENTS as usize).await,
            Op::List => raw.list(&customer, READ_EVENTS as usize).await,
            Op::Check => raw.check(&customer).await,
            Op::Append | Op::AppendBatch | Op::AppendSessions => raw.append(events).await,
            Op::AppendIdentity => Err(Failure {
                code: "UNSUPPORTED",
                message: "append-identity has no raw form".into(),
            }),
        }
    }

    fn new_event(&mut self) -> pb::Event {
        let customer = self.random_customer();
        self.new_event_of(&customer)
    }

    fn new_event_of(&mut self, customer: &str) -> pb::Event {
        let event_id = format!("{}{}", self.id_prefix, self.next_id);
        self.next_id += 1;
        // A little in the past, as events reach a real service.
        let at = Micros::now().0 - self.rng.i64(0..60_000_000);
        population::event(&mut self.rng, customer, event_id, at)
    }

    /// The events of one AppendEvents request: of random customers, or
    /// (`AppendSessions`) of a few, several each.
    fn batch(&mut self, op: Op) -> Vec<pb::Event> {
        if op != Op::AppendSessions {
            return (0..BATCH_EVENTS).map(|_| self.new_event()).collect();
        }
        let mut events = Vec::with_capacity(BATCH_EVENTS);
        while events.len() < BATCH_EVENTS {
            let customer = self.random_customer();
            for _ in 0..SESSION_EVENTS.min(BATCH_EVENTS - events.len()) {
                events.push(self.new_event_of(&customer));
            }
        }
        events
    }

    fn random_customer(&mut self) -> String {
        population::customer_id(self.rng.u64(self.customers.clone()))
    }

    /// A new event carrying the customer's cookie id: resolved (and linked
    /// the first time) before the append.
    async fn append_identity(&mut self) -> Result<u64, Failure> {
        let mut event = self.new_event();
        event.identities = vec![pb::Identity {
            r#type: "cookie_id".into(),
            value: format!("ck-{}", event.customer_id),
        }];
        self.send_append(event).await
    }

    async fn append(&mut self) -> Result<u64, Failure> {
        let event = self.new_event();
        self.send_append(event).await
    }

    async fn send_append(&mut self, event: pb::Event) -> Result<u64, Failure> {
        let request = pb::AppendEventRequest { event: Some(event) };
        let response = self.client()?.append_event(request).await?.into_inner();
        if response.duplicate {
            return Err(Failure {
                code: "OUTCOME_DUPLICATE",
                message: format!("new event {} answered duplicate", response.event_id),
            });
        }
        Ok(1)
    }

    async fn append_batch(&mut self, op: Op) -> Result<u64, Failure> {
        let events = self.batch(op);
        let request = pb::AppendEventsRequest { events };
        let response = self.client()?.append_events(request).await?.into_inner();
        if response.results.len() != BATCH_EVENTS {
            return Err(Failure {
                code: "BAD_RESPONSE",
                message: format!(
                    "{} results for {BATCH_EVENTS} events",
                    response.results.len()
                ),
            });
        }
        for result in &response.results {
            match pb::Outcome::try_from(result.outcome) {
                Ok(pb::Outcome::Stored) => {}
                Ok(pb::Outcome::Duplicate) => {
                    return Err(Failure {
                        code: "OUTCOME_DUPLICATE",
                        message: format!("new event {} answered duplicate", result.event_id),
                    })
                }
                _ => {
                    return Err(Failure {
                        code: "OUTCOME_REJECTED",
                        message: result.error.clone(),
                    })
                }
            }
        }
        Ok(BATCH_EVENTS as u64)
    }

    async fn context(&mut self) -> Result<u64, Failure> {
        let request = pb::GetJourneyContextRequest {
            customer_id: self.random_customer(),
            max_events: READ_EVENTS,
            ..Default::default()
        };
        Ok(lean::read_events(self.reads()?, lean::GET_JOURNEY_CONTEXT, request).await?)
    }

    async fn check(&mut self) -> Result<u64, Failure> {
        let request = pb::CheckContactRequest {
            customer_id: self.random_customer(),
            channel: "email".into(),
            reason: "campaign_offer".into(),
            ..Default::default()
        };
        let answer = self
            .client()?
            .check_contact_frequency(request)
            .await?
            .into_inner();
        if answer.counts.is_none() {
            return Err(Failure {
                code: "BAD_RESPONSE",
                message: "a check answered no counts".into(),
            });
        }
        Ok(0)
    }

    async fn list(&mut self) -> Result<u64, Failure> {
        let request = pb::ListEventsRequest {
            customer_id: self.random_customer(),
            page_size: READ_EVENTS,
            ..pb::ListEventsRequest::default()
        };
        Ok(lean::read_events(self.reads()?, lean::LIST_EVENTS, request).await?)
    }
}

fn not_grpc() -> Failure {
    Failure {
        code: "BAD_ROUTE",
        message: "a gRPC call on a Redis route".into(),
    }
}

/// The canonical gRPC name of a status code, as other tools print it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
