//! `journey bench run`: N tasks send calls for a fixed time and tally them.
//!
//! Closed loop (default): each task sends its next call when the previous
//! one answered. Open loop (`--rate`): calls are due at evenly spaced
//! instants, handed out by a pacer thread (`pacer.rs`) to whichever task is
//! free, and each counts its latency from its due time, so a stalled server
//! shows as latency instead of silently lowering the load (no coordinated
//! omission).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{
    channels,
    cpu::{self, Process},
    error::BenchError,
    ops::{Caller, Failure, Route},
    pacer::{Pacer, Schedule},
    population,
    raw::RawSetup,
    report::{Report, Tally},
    scenario::{self, Op},
    RunArgs,
};

/// The highest `--rate`: a pacer thread hands out every call one by one.
const MAX_RATE: f64 = 10_000_000.0;

/// The longest run (warm-up and measured window), in seconds: a bound that
/// keeps every instant and call count of the plan far from overflowing.
const MAX_SPAN_S: f64 = 30.0 * 86_400.0;

/// When a run starts, measures and stops; shared by every task.
#[derive(Debug, Clone, Copy)]
struct Plan {
    measure_from: Instant,
    end: Instant,
}

/// Runs the load described by `args` and returns what it measured.
pub async fn run(args: &RunArgs) -> Result<Report, BenchError> {
    check(args)?;
    let mut processes = vec![Process::Myself];
    processes.extend(args.pids.iter().map(|&pid| Process::Pid(pid)));
    // Fail before sending anything if a pid cannot be read.
    sample(&processes)?;

    // The service over a few shared channels, or Redis itself (the raw
    // baseline) on one connection per task.
    let (target, mut routes) = match (&args.target, &args.redis) {
        (_, Some(redis)) => {
            let setup = RawSetup::new(redis, args.scenario)?;
            let routes = (0..args.concurrency)
                .map(|_| setup.connect().map(Route::Redis))
                .collect::<Result<Vec<_>, _>>()?;
            (redis.clone(), routes)
        }
        (Some(target), None) => {
            let pool =
                channels::connect(target, args.concurrency.min(channels::MAX_CHANNELS)).await?;
            let routes = (0..args.concurrency)
                .map(|task| Route::grpc(pool[task % pool.len()].clone()))
                .collect();
            (channels::target_url(target), routes)
        }
        (None, None) => return Err(BenchError::Args("give --target or --redis".into())),
    };
    let connections = match &args.redis {
        Some(_) => args.concurrency,
        None => args.concurrency.min(channels::MAX_CHANNELS),
    };
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let plan = Plan {
        measure_from,
        end: measure_from + Duration::from_secs_f64(args.duration),
    };
    let pacer = match args.rate {
        Some(rate) => Some(Arc::new(
            Pacer::start(
                Schedule {
                    start,
                    end: plan.end,
                    rate,
                },
                args.concurrency,
            )
            .map_err(BenchError::Pacer)?,
        )),
        None => None,
    };
    let nonce = run_nonce();
    let weights = args.scenario.weights();
    let mut tasks = Vec::with_capacity(args.concurrency);
    for (task, route) in routes.drain(..).enumerate() {
        let caller = Caller::new(
            route,
            fastrand::Rng::with_seed(population::mix(&[args.seed, nonce, task as u64])),
            args.first_customer..args.first_customer + args.customers,
            nonce,
            task,
        );
        tasks.push(tokio::spawn(load_task(
            plan,
            pacer.clone(),
            caller,
            weights,
        )));
    }

    tokio::time::sleep_until(measure_from.into()).await;
    let before = sample(&processes)?;
    let mut tally = Tally::new();
    for task in tasks {
        tally.merge(task.await?);
    }
    let after = sample(&processes)?;
    if let Some(pacer) = &pacer {
        tally_not_sent(&mut tally, pacer.not_taken_from(plan.measure_from));
    }

    let ok = tally.requests - tally.error_count();
    let per_rpc =
        |ticks: u64| (ok > 0).then(|| ticks as f64 / cpu::ticks_per_second() * 1e6 / ok as f64);
    let mut cpu_us_per_rpc = BTreeMap::new();
    let mut wait_us_per_rpc = BTreeMap::new();
    let mut cpu_processes = BTreeMap::new();
    for ((process, b), a) in processes.iter().zip(&before).zip(&after) {
        let key = match process {
            Process::Myself => "bench".to_string(),
            Process::Pid(pid) => pid.to_string(),
        };
        if let (Process::Pid(_), Some(name)) = (process, process.name()) {
            cpu_processes.insert(key.clone(), name);
        }
        cpu_us_per_rpc.insert(key.clone(), per_rpc(a.ticks.saturating_sub(b.ticks)));
        let waited = a.wait_ns.as_ref().zip(b.wait_ns.as_ref()).map(waited_ns);
        wait_us_per_rpc.insert(
            key,
            waited.and_then(|ns| (ok > 0).then(|| ns as f64 / 1e3 / ok as f64)),
        );
    }
    let latency = &tally.latency;
    let quantile = |q| {
        if latency.is_empty() {
            0
        } else {
            latency.value_at_quantile(q)
        }
    };
    Ok(Report {
        scenario: args.scenario.name(),
        target,
        concurrency: args.concurrency,
        channels: connections,
        rate: args.rate,
        duration_s: args.duration,
        warmup_s: args.warmup,
        requests: tally.requests,
        errors: tally.error_count(),
        errors_by_code: tally
            .errors
            .iter()
            .map(|(c, n)| (c.to_string(), *n))
            .collect(),
        error_samples: tally
            .error_samples
            .iter()
            .map(|(c, m)| (c.to_string(), m.clone()))
            .collect(),
        warmup_errors: tally.warmup_errors,
        rps: ok as f64 / args.duration,
        events_per_s: tally.events as f64 / args.duration,
        p50_us: quantile(0.5),
        p90_us: quantile(0.9),
        p99_us: quantile(0.99),
        p999_us: quantile(0.999),
        max_us: latency.max(),
        mean_us: latency.mean(),
        cpu_us_per_rpc,
        wait_us_per_rpc,
        cpu_processes,
    })
}

fn check(args: &RunArgs) -> Result<(), BenchError> {
    let fail = |m: &str| Err(BenchError::Args(m.to_string()));
    if args.concurrency == 0 {
        return fail("--concurrency must be at least 1");
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        return fail("--duration must be above 0");
    }
    if !(args.warmup >= 0.0 && args.warmup.is_finite()) {
        return fail("--warmup must be 0 or more");
    }
    if args.customers == 0 {
        return fail("--customers must be at least 1");
    }
    if args.first_customer.checked_add(args.customers).is_none() {
        return fail("--first-customer + --customers must fit in 64 bits");
    }
    let span = args.warmup + args.duration;
    if span > MAX_SPAN_S {
        return fail("--warmup + --duration must be at most 30 days");
    }
    if let Some(rate) = args.rate {
        // One call a run at least; and a schedule a pacer thread can keep
        // (well past what one load generator sends).
        if !(rate.is_finite() && rate * span >= 1.0 && rate <= MAX_RATE) {
            return Err(BenchError::Args(format!(
                "--rate must give at least one call in --warmup + --duration and be at most {MAX_RATE} calls/s"
            )));
        }
    }
    Ok(())
}

/// One load task: sends calls until the plan ends (closed loop) or the
/// pacer has no more (open loop), tallies those sent in the measured
/// window.
async fn load_task(
    plan: Plan,
    pacer: Option<Arc<Pacer>>,
    mut caller: Caller,
    weights: &'static [(Op, u32)],
) -> Tally {
    let mut tally = Tally::new();
    // Open loop, far behind schedule: stop, and let the run count what was
    // never sent rather than drop it from the figures.
    let give_up = plan.end + (plan.end - plan.measure_from);
    loop {
        let sent_at = match &pacer {
            None => {
                let now = Instant::now();
                if now >= plan.end {
                    break;
                }
                now
            }
            Some(pacer) => {
                if Instant::now() >= give_up {
                    pacer.stop();
                    break;
                }
                match pacer.next().await {
                    Some((_, due)) => due,
                    None => break,
                }
            }
        };
        let op = scenario::pick(weights, caller.rng());
        let result = caller.call(op).await;
        if sent_at < plan.measure_from {
            if result.is_err() {
                tally.warmup_errors += 1;
            }
            continue;
        }
        match result {
            Ok(events) => {
                let us = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                tally.ok(us, events);
            }
            Err(failure) => tally.failed(failure),
        }
    }
    tally
}

/// Counts the measured window's calls that were due but never sent.
fn tally_not_sent(tally: &mut Tally, calls: u64) {
    tally.failed_n(
        Failure {
            code: "NOT_SENT",
            message: "the load generator fell too far behind the intended rate".into(),
        },
        calls,
    );
}

/// A process's CPU time and its threads' run-queue waits at one instant.
struct Sample {
    ticks: u64,
    /// By thread id. `None` where the kernel keeps no scheduler
    /// statistics: the report then says n/a rather than failing the run.
    wait_ns: Option<BTreeMap<u32, u64>>,
}

/// The run-queue wait between two samples, thread by thread: a thread
/// started in between counts whole, one that ended in between (as the
/// open loop's pacer does once it has handed out its last call) is not
/// counted at all, rather than taking its earlier wait off the others'.
fn waited_ns((after, before): (&BTreeMap<u32, u64>, &BTreeMap<u32, u64>)) -> u64 {
    after
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}

fn sample(processes: &[Process]) -> Result<Vec<Sample>, BenchError> {
    processes
        .iter()
        .map(|&p| {
            Ok(Sample {
                ticks: cpu::cpu_ticks(p)?,
                wait_ns: p.run_queue_waits_ns().ok(),
            })
        })
        .collect()
}

/// Differs between runs, so appended event ids are new every run.
fn run_nonce() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    population::mix(&[nanos, u64::from(std::process::id())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Scenario;

    #[test]
    fn run_queue_waits_are_taken_thread_by_thread() {
        let before = BTreeMap::from([(1, 100), (2, 50), (3, 1_000)]);
        // 3 ended (its 1,000 must not come off the others), 4 started.
        let after = BTreeMap::from([(1, 130), (2, 50), (4, 7)]);
        assert_eq!(waited_ns((&after, &before)), 37);
    }

    fn args(rate: Option<f64>, warmup: f64, duration: f64) -> RunArgs {
        RunArgs {
            target: Some("127.0.0.1:1".into()),
            redis: None,
            scenario: Scenario::Context,
            concurrency: 4,
            duration,
            rate,
            customers: 10,
            first_customer: 0,
            json: false,
            pids: Vec::new(),
            seed: 1,
            warmup,
            threads: 1,
        }
    }

    #[test]
    fn rates_and_spans_a_pacer_cannot_keep_are_refused() {
        assert!(check(&args(Some(1000.0), 1.0, 5.0)).is_ok());
        assert!(check(&args(None, 0.0, 3600.0)).is_ok());
        for bad in [
            args(Some(1e9), 1.0, 5.0),
            args(Some(0.1), 1.0, 5.0),
            args(Some(f64::NAN), 1.0, 5.0),
            args(Some(-5.0), 1.0, 5.0),
            args(Some(1000.0), 1.0, 1e18),
            args(None, 1e18, 1.0),
        ] {
            let refused = check(&bad).expect_err("refused");
            assert!(matches!(refused, BenchError::Args(_)), "{refused}");
        }
    }
}
