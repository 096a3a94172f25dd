//! Measures what the Redis client costs the service on its hottest read:
//! the GetJourneyContext pipeline (7 commands on one customer), sent with
//! redis-rs (the client the store uses) and with fred (whose replies are
//! zero-copy `Bytes` frames), at the same concurrency against the same
//! seeded Redis. Prints calls per second and this process's CPU µs per
//! call for each, in alternating rounds. Built only with the `fred-bench`
//! feature, so the project itself does not depend on fred:
//!
//! ```sh
//! journey bench seed --target 127.0.0.1:50051 --customers 10000 --events-per-customer 50
//! cargo run --release --features fred-bench --example redis_clients -- redis://127.0.0.1:6379/0 10000 5 16
//! ```

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use fred::prelude::*;

fn cpu_micros() -> u64 {
    // utime + stime of this process, in clock ticks (100 per second here).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) * 10_000
}

fn keys(customer: u64) -> [String; 6] {
    let tag = format!("journey:{{bench-c{customer}}}");
    [
        format!("{tag}:alias"),
        format!("{tag}:tl"),
        format!("{tag}:sum"),
        format!("{tag}:contacts"),
        format!("{tag}:idents"),
        format!("{tag}:merges"),
    ]
}

type Reply = (
    Option<String>,
    Vec<Bytes>,
    HashMap<String, Bytes>,
    u64,
    Vec<(String, f64)>,
    HashMap<String, String>,
    HashMap<String, String>,
);

async fn with_redis_rs(url: &str, customers: u64, seconds: u64, concurrency: usize) -> (f64, f64) {
    let client = redis::Client::open(url).expect("url");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cpu = cpu_micros();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let mut conn = conn.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(t as u64);
                while Instant::now() < deadline {
                    let [alias, tl, sum, contacts, idents, merges] = keys(rng.u64(0..customers));
                    let mut pipe = redis::pipe();
                    pipe.cmd("GET").arg(&alias);
                    pipe.cmd("ZREVRANGE").arg(&tl).arg(0).arg(49);
                    pipe.cmd("HGETALL").arg(&sum);
                    pipe.cmd("ZCARD").arg(&tl);
                    pipe.cmd("ZRANGEBYSCORE")
                        .arg(&contacts)
                        .arg(0)
                        .arg("+inf")
                        .arg("WITHSCORES");
                    pipe.cmd("HGETALL").arg(&idents);
                    pipe.cmd("HGETALL").arg(&merges);
                    let reply: Reply = pipe.query_async(&mut conn).await.expect("pipeline");
                    assert!(!reply.1.is_empty(), "seeded customer");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let calls = done.load(Ordering::Relaxed) as f64;
    (calls / seconds as f64, (cpu_micros() - cpu) as f64 / calls)
}

async fn with_fred(url: &str, customers: u64, seconds: u64, concurrency: usize) -> (f64, f64) {
    let config = Config::from_url(url).expect("url");
    let client = Builder::from_config(config).build().expect("client");
    client.init().await.expect("connect");
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cpu = cpu_micros();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let client = client.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(t as u64);
                while Instant::now() < deadline {
                    let [alias, tl, sum, contacts, idents, merges] = keys(rng.u64(0..customers));
                    let pipe = client.pipeline();
                    let _: () = pipe.get(&alias).await.expect("queue");
                    let _: () = pipe.zrevrange(&tl, 0, 49, false).await.expect("queue");
                    let _: () = pipe.hgetall(&sum).await.expect("queue");
                    let _: () = pipe.zcard(&tl).await.expect("queue");
                    let _: () = pipe
                        .zrangebyscore(&contacts, 0, "+inf", true, None)
                        .await
                        .expect("queue");
                    let _: () = pipe.hgetall(&idents).await.expect("queue");
                    let _: () = pipe.hgetall(&merges).await.expect("queue");
                    let replies: Vec<Value> = pipe.all().await.expect("pipeline");
                    // Members as Bytes, straight from the frame buffer.
                    let members: Vec<Bytes> = match &replies[1] {
                        Value::Array(items) => items
                            .iter()
                            .filter_map(|v| match v {
                                Value::Bytes(b) => Some(b.clone()),
                                Value::String(s) => Some(s.inner().clone()),
                                _ => None,
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    assert!(!members.is_empty(), "seeded customer");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let calls = done.load(Ordering::Relaxed) as f64;
    (calls / seconds as f64, (cpu_micros() - cpu) as f64 / calls)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let customers: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let seconds: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5);
    let concurrency: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(16);
    println!("| round | client | calls/s | client CPU µs per call |");
    println!("|---|---|---|---|");
    for round in 1..=3 {
        let (rps, cpu) = with_redis_rs(&url, customers, seconds, concurrency).await;
        println!("| {round} | redis-rs 1.8 | {rps:.0} | {cpu:.1} |");
        let (rps, cpu) = with_fred(&url, customers, seconds, concurrency).await;
        println!("| {round} | fred 10 | {rps:.0} | {cpu:.1} |");
    }
}
