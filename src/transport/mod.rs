//! The gRPC transport: handlers that decode, validate, call the store and
//! map errors, and the metrics of the calls (served over HTTP). No rule of
//! the domain and no Redis command lives here.

pub mod contact;
pub mod context_counts;
pub mod convert;
pub mod counters;
pub mod customers;
pub mod identity_work;
pub mod journeys;
pub mod log_text;
pub mod metrics;
pub mod metrics_http;
pub mod page_token;
pub mod rpc_layer;
pub mod service;
pub mod status;

pub use service::{ApiLimits, JourneyApi};
