//! journey: a gRPC service that keeps every customer's interactions across
//! channels and answers with their journey context in a few milliseconds.
//!
//! Layers, one folder each: `transport` (gRPC handlers), `domain` (events,
//! taxonomy, summaries: no I/O) and `storage` (the store trait with its
//! memory and Redis backends). `pb` is the generated wire schema.

pub mod bench;
pub mod cli;
pub mod config;
pub mod domain;
pub mod pb;
pub mod procstat;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod transport;
pub mod wire;
