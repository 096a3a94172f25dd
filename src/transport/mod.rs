//! The gRPC transport: handlers that decode, validate, call the store and
//! map errors. No rule of the domain and no Redis command lives here.

pub mod contact;
pub mod context_counts;
pub mod convert;
pub mod customers;
pub mod journeys;
pub mod page_token;
pub mod service;
pub mod status;

pub use service::{ApiLimits, JourneyApi};
