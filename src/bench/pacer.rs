//! Open-loop pacing: a thread of its own releases the run's calls at their
//! intended send times, to the microsecond, and any free task takes the
//! next one.
//!
//! Why not each task sleeping until its own next send: tokio's timer fires
//! on millisecond ticks, so every call due within a millisecond went out in
//! the same burst (rate / 1,000 calls at once) and the server queued them,
//! a latency that a load at a fixed rate does not cause. And a task held by
//! one slow answer delayed its own later calls while other tasks idled.
//!
//! Here the n-th call is due at `start + n / rate`. The pacer sleeps (timer
//! slack 1 ns) until it is due and hands out one ticket. A call's latency
//! counts from its due time, whether a task was free then or not, so a
//! stalled server shows as latency (no coordinated omission); a pacer
//! woken late by a busy machine is charged too, which can only make the
//! figures worse.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

/// The schedule of an open-loop run: the n-th call is due at
/// `start + n / rate`, for every such instant before `end`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub end: Instant,
    pub rate: f64,
}

impl Schedule {
    /// When the n-th call is due.
    pub fn due(&self, n: u64) -> Instant {
        self.start + Duration::from_secs_f64(n as f64 / self.rate)
    }

    /// How many calls are due before `end`.
    pub fn calls(&self) -> u64 {
        let span = self.end.saturating_duration_since(self.start).as_secs_f64();
        // The n-th is due before end while n / rate < span.
        let calls = (span * self.rate).ceil() as u64;
        // Float rounding can land one off either way; settle it exactly.
        if calls > 0 && self.due(calls - 1) >= self.end {
            calls - 1
        } else if self.due(calls) < self.end {
            calls.saturating_add(1)
        } else {
            calls
        }
    }

    /// The first call due at or after `at`.
    pub fn first_at_or_after(&self, at: Instant) -> u64 {
        let span = at.saturating_duration_since(self.start).as_secs_f64();
        let mut n = (span * self.rate).floor() as u64;
        while n > 0 && self.due(n - 1) >= at {
            n -= 1;
        }
        while self.due(n) < at {
            n += 1;
        }
        n
    }
}

/// Releases tickets on schedule from its own thread until the schedule
/// ends or it is stopped. Dropping it stops it.
pub struct Pacer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    schedule: Schedule,
    calls: u64,
    /// Permits added once the schedule is over or stopped: one per task,
    /// each of which then takes a number past the last call and stops.
    closing: usize,
    tickets: Semaphore,
    taken: AtomicU64,
    stop: AtomicBool,
}

impl Pacer {
    /// Starts handing out `schedule`'s calls to `tasks` tasks.
    pub fn start(schedule: Schedule, tasks: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            schedule,
            calls: schedule.calls(),
            closing: tasks.min(Semaphore::MAX_PERMITS),
            tickets: Semaphore::new(0),
            taken: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let pacing = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("bench-pacer".into())
            .spawn(move || pace(&pacing))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits for the next call to be due and returns its number and due
    /// time; `None` once the schedule's calls are all taken (or the pacer
    /// stopped).
    pub async fn next(&self) -> Option<(u64, Instant)> {
        let permit = self.shared.tickets.acquire().await.ok()?;
        permit.forget();
        if self.shared.stop.load(Ordering::Relaxed) {
            return None;
        }
        let n = self.shared.taken.fetch_add(1, Ordering::Relaxed);
        (n < self.shared.calls).then(|| (n, self.shared.schedule.due(n)))
    }

    /// Stops releasing tickets; waiting tasks wake and get `None`.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    /// The calls of the schedule due at or after `from` that no task took.
    pub fn not_taken_from(&self, from: Instant) -> u64 {
        let taken = self
            .shared
            .taken
            .load(Ordering::Relaxed)
            .min(self.shared.calls);
        let first = self.shared.schedule.first_at_or_after(from).max(taken);
        self.shared.calls.saturating_sub(first)
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The pacer thread: one ticket per call at its due time, then enough
/// for every task to see the end.
fn pace(shared: &Shared) {
    fine_timer_slack();
    let schedule = shared.schedule;
    let mut n = 0;
    while n < shared.calls && !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let due = schedule.due(n);
        if due > now {
            // At most 10 ms at a time, so a stop is seen soon.
            std::thread::sleep((due - now).min(Duration::from_millis(10)));
            continue;
        }
        // Every call already due goes out now.
        let mut ready = 0;
        while n < shared.calls && schedule.due(n) <= now {
            n += 1;
            ready += 1;
        }
        shared.tickets.add_permits(ready);
    }
    shared.tickets.add_permits(shared.closing);
}

/// Linux lets a sleeping thread wake up to 50 µs late by default (its
/// timer slack), a third of the gap between calls at 8,000 calls/s.
#[cfg(target_os = "linux")]
fn fine_timer_slack() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes an integer and touches no
    // memory of ours; on failure the default slack stays.
    unsafe {
        libc::prctl(
            libc::PR_SET_TIMERSLACK,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn fine_timer_slack() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(rate: f64, millis: u64) -> Schedule {
        let start = Instant::now();
        Schedule {
            start,
            end: start + Duration::from_millis(millis),
            rate,
        }
    }

    #[test]
    fn the_calls_are_those_due_before_the_end() {
        for (rate, millis, calls) in [(1000.0, 10, 10), (3.0, 1000, 3), (7.0, 1001, 8)] {
            let s = schedule(rate, millis);
            assert_eq!(s.calls(), calls, "rate {rate} over {millis} ms");
            assert!(s.due(calls - 1) < s.end);
            assert!(s.due(calls) >= s.end);
        }
    }

    #[test]
    fn the_first_call_at_or_after_an_instant() {
        let s = schedule(1000.0, 100);
        assert_eq!(s.first_at_or_after(s.start), 0);
        assert_eq!(s.first_at_or_after(s.due(40)), 40);
        assert_eq!(
            s.first_at_or_after(s.due(40) + Duration::from_micros(1)),
            41
        );
    }

    #[tokio::test]
    async fn every_call_is_handed_out_once_not_before_it_is_due() {
        let s = schedule(2000.0, 50);
        let pacer = Arc::new(Pacer::start(s, 3).expect("pacer thread"));
        let mut takers = Vec::new();
        for _ in 0..3 {
            let pacer = Arc::clone(&pacer);
            takers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some((n, due)) = pacer.next().await {
                    assert!(Instant::now() >= due, "call {n} handed out early");
                    got.push(n);
                }
                got
            }));
        }
        let mut all = Vec::new();
        for taker in takers {
            all.extend(taker.await.expect("taker"));
        }
        all.sort_unstable();
        assert_eq!(all, (0..s.calls()).collect::<Vec<_>>());
        assert_eq!(pacer.not_taken_from(s.start), 0);
    }

    #[tokio::test]
    async fn a_stopped_pacer_counts_what_nobody_took() {
        let s = schedule(1000.0, 60_000);
        let pacer = Pacer::start(s, 1).expect("pacer thread");
        let (first, _) = pacer.next().await.expect("first call");
        assert_eq!(first, 0);
        pacer.stop();
        while pacer.next().await.is_some() {}
        let measured_from = s.start + Duration::from_secs(1);
        assert_eq!(
            pacer.not_taken_from(measured_from),
            s.calls() - s.first_at_or_after(measured_from)
        );
    }
}
