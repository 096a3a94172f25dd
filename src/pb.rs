//! The `journey.v1` wire schema, generated from `proto/` by `build.rs`.
//! Shared by the transport (requests and responses) and the storage (which
//! keeps each event in its wire encoding); the domain never sees it.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("journey.v1");

/// The encoded file descriptor set that server reflection serves.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("journey_descriptor");
