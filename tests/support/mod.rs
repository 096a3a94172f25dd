//! Shared test support: a real `redis-server` per test, the journey server
//! in-process on a free loopback port, a round-trip counting proxy, and
//! event builders. Each test binary uses a different part of it.

#![allow(dead_code)]

pub mod events;
pub mod journey_server;
pub mod proxy;
pub mod redis_server;
