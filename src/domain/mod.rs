//! The domain: events, the taxonomy that names them, time, and the journey
//! context built from a customer's timeline. Plain Rust with no I/O: it never
//! sees protobuf, Redis or the async runtime, so every rule here is tested
//! with plain values and an explicit `now`.

pub mod contact;
pub mod contact_policy;
pub mod context;
pub mod error;
pub mod event;
pub mod identity;
pub mod journey;
pub mod profile;
pub mod taxonomy;
pub mod time;

pub use contact::{Contact, Names as ContactNames};
pub use contact_policy::{
    ContactCounts, ContactDecision, ContactPolicy, ContactRequest, WindowCounts,
};
pub use context::{ChannelActivity, CustomerSummary};
pub use error::DomainError;
pub use event::{CustomerId, Event, EventId, EventLimits, Initiator, RawEvent};
pub use identity::Identity;
pub use profile::{LinkedIdentity, MergeRecord, MergeRules};
pub use taxonomy::{ChannelClass, Taxonomy, TaxonomyMode};
pub use time::Micros;
