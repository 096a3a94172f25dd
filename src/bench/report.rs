//! What a run measured: per-task tallies merged into one report, printed as
//! a table for people or one JSON object for scripts.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::ops::Failure;

/// Latencies up to a minute at 3 significant digits: a slower call is
/// recorded as a minute (and shows in `max_us`).
const MAX_LATENCY_US: u64 = 60_000_000;

/// What one load task saw in the measured window.
pub struct Tally {
    /// Latency of successful calls, in µs.
    pub latency: Histogram<u64>,
    /// Calls sent in the window, successful or not.
    pub requests: u64,
    /// Events written or read by the successful ones.
    pub events: u64,
    pub errors: BTreeMap<&'static str, u64>,
    /// The first message seen for each error code, to tell why.
    pub error_samples: BTreeMap<&'static str, String>,
    /// Failed calls of the warm-up, excluded from the figures but reported.
    pub warmup_errors: u64,
}

impl Tally {
    pub fn new() -> Self {
        Self {
            // 3 significant digits from 1 µs to a minute: bounds are valid.
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("constant histogram bounds are valid"),
            requests: 0,
            events: 0,
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            warmup_errors: 0,
        }
    }

    pub fn ok(&mut self, latency_us: u64, events: u64) {
        self.requests += 1;
        self.events += events;
        self.latency.saturating_record(latency_us.max(1));
    }

    pub fn failed(&mut self, failure: Failure) {
        self.failed_n(failure, 1);
    }

    /// `count` calls that failed alike.
    pub fn failed_n(&mut self, failure: Failure, count: u64) {
        if count == 0 {
            return;
        }
        self.requests += count;
        *self.errors.entry(failure.code).or_default() += count;
        self.error_samples
            .entry(failure.code)
            .or_insert(failure.message);
    }

    pub fn merge(&mut self, other: Tally) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.requests += other.requests;
        self.events += other.events;
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        for (code, message) in other.error_samples {
            self.error_samples.entry(code).or_insert(message);
        }
        self.warmup_errors += other.warmup_errors;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

/// The figures of one run; the JSON field names are what scripts read.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub concurrency: usize,
    pub channels: usize,
    /// Intended requests per second (open loop); `null` for a closed loop.
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Calls sent in the measured window, successful or not.
    pub requests: u64,
    /// Calls of the window that failed (a status other than OK, or an
    /// answer that rejected or deduplicated a new event).
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub error_samples: BTreeMap<String, String>,
    pub warmup_errors: u64,
    /// Successful calls per second.
    pub rps: f64,
    /// Events written or read per second by the successful calls.
    pub events_per_s: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
    /// CPU µs per successful call: `bench` for this process, then one per
    /// `--pids` entry, by pid.
    pub cpu_us_per_rpc: BTreeMap<String, Option<f64>>,
    /// Time the same processes' threads waited for a CPU (runnable, on a
    /// run queue) per successful call, µs: the scheduler's share of the
    /// latency when the cores are shared. `None` where unreadable.
    pub wait_us_per_rpc: BTreeMap<String, Option<f64>>,
    /// The command name of each pid.
    pub cpu_processes: BTreeMap<String, String>,
}

impl Report {
    /// The table printed without `--json`.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            out.push_str(&format!("{label:<14}{value}\n"));
        };
        line("scenario", self.scenario.clone());
        line("target", self.target.clone());
        let mode = match self.rate {
            Some(rate) => format!("open loop at {rate} rps"),
            None => "closed loop".to_string(),
        };
        line(
            "load",
            format!(
                "{mode}, {} tasks over {} HTTP/2 channels",
                self.concurrency, self.channels
            ),
        );
        line(
            "window",
            format!(
                "{:.1} s after {:.1} s of warm-up",
                self.duration_s, self.warmup_s
            ),
        );
        line(
            "requests",
            format!("{} ({:.0} ok/s)", self.requests, self.rps),
        );
        line("events", format!("{:.0} events/s", self.events_per_s));
        line("errors", self.errors.to_string());
        for (code, n) in &self.errors_by_code {
            let sample = self.error_samples.get(code).map_or("", String::as_str);
            line("", format!("{n:>8} {code}: {sample}"));
        }
        if self.warmup_errors > 0 {
            line("warm-up errs", self.warmup_errors.to_string());
        }
        line(
            "latency µs",
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.0}",
                self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us, self.mean_us
            ),
        );
        let per_process = |figures: &BTreeMap<String, Option<f64>>| {
            let shown: Vec<String> = figures
                .iter()
                .map(|(who, us)| {
                    let name = self
                        .cpu_processes
                        .get(who)
                        .map_or(String::new(), |n| format!(" ({n})"));
                    let value = us.map_or("n/a".to_string(), |us| format!("{us:.1}"));
                    format!("{who}{name} {value}")
                })
                .collect();
            shown.join("  ")
        };
        line("cpu µs/rpc", per_process(&self.cpu_us_per_rpc));
        line("wait µs/rpc", per_process(&self.wait_us_per_rpc));
        out
    }
}
