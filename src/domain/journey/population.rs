//! A generated population of banking journeys for tests (the unit test
//! below, and the end-to-end replay through the API on both stores):
//! completers, droppers at every step by inactivity and by abandon, offline
//! switchers, repeats, out-of-order deliveries, duplicates, re-entries,
//! customers who never start. The generator knows what happened, so the
//! expected figures are computed directly from that truth, without the
//! state machine, deltas or counters; the stats a run produces must equal
//! them.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    histogram,
    testkit::{banking_cancel, banking_step, facts, MINUTE},
    Day, EventFacts, JourneyStats, Leak, StepStats, TopEntry,
};
use crate::domain::{Initiator, Micros};

const COMPLETE: usize = 6;
const TIMEOUT: i64 = 30 * MINUTE;
const LOOKBACK: usize = 5;
const STEP_NAMES: [&str; 7] = [
    "signed_in",
    "prompted",
    "verification_started",
    "address_checked",
    "contact_checked",
    "income_checked",
    "completed",
];

/// splitmix64: a small deterministic generator, so the population is the
/// same on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn between(&mut self, low: i64, high: i64) -> i64 {
        low + self.below((high - low + 1) as u64) as i64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Completed,
    Inactive(usize),
    Abandoned(usize),
}

/// What the generator knows about one journey it made a customer take.
#[derive(Debug, Clone)]
pub struct Truth {
    start: i64,
    ending: Ending,
    duration: Option<i64>,
    /// Furthest step reached.
    furthest: usize,
    offline: Option<(usize, &'static str)>,
    /// Instant of the last step event; the next journey starts after the end.
    end: i64,
    before_entering: BTreeSet<String>,
}

/// Events of one journey in delivery order, and its truth.
fn journey_events(
    rng: &mut Rng,
    customer: usize,
    nth: usize,
    start: i64,
) -> (Vec<EventFacts<'static>>, Truth) {
    let id = |what: &str| format!("c{customer}-j{nth}-{what}");
    let ending = match rng.below(100) {
        0..=39 => Ending::Completed,
        40..=74 => Ending::Inactive(rng.below(COMPLETE as u64) as usize),
        _ => Ending::Abandoned(rng.below(COMPLETE as u64) as usize),
    };
    let furthest = match ending {
        Ending::Completed => COMPLETE,
        Ending::Inactive(k) | Ending::Abandoned(k) => k,
    };
    let mut at = start;
    let mut step_at = Vec::new();
    for step in 0..=furthest {
        if step > 0 {
            at += rng.between(1, 20) * MINUTE;
        }
        step_at.push(at);
    }
    let mut timeline: Vec<EventFacts> = step_at
        .iter()
        .enumerate()
        .map(|(step, &at)| banking_step(step, &id(&format!("s{step}")), at))
        .collect();
    // Repeats: the same step done again 30 s later (a second "modify").
    if rng.chance(20) {
        let step = rng.below(furthest.min(COMPLETE - 1) as u64 + 1) as usize;
        timeline.push(banking_step(
            step,
            &id("repeat"),
            step_at[step] + 30 * Micros::PER_SECOND,
        ));
    }
    // Going offline 45 s after a step the customer reached (before the
    // next step, the abandon or the deadline).
    let mut offline = None;
    if rng.chance(25) {
        let step = rng.below(furthest.min(COMPLETE - 1) as u64 + 1) as usize;
        let at = step_at[step] + 45 * Micros::PER_SECOND;
        let event = if rng.chance(70) {
            facts(
                &id("call"),
                at,
                "call_center",
                "personal_data_verification",
                "call",
                Initiator::Customer,
                &[],
            )
        } else {
            facts(
                &id("branch"),
                at,
                "branch",
                "personal_data_verification",
                "branch_visit",
                Initiator::Customer,
                &[],
            )
        };
        offline = Some((
            step,
            if event.channel == "branch" {
                "branch"
            } else {
                "call_center"
            },
        ));
        timeline.push(event);
    }
    let last_step_at = step_at[furthest];
    let (duration, end) = match ending {
        Ending::Completed => (Some(last_step_at - start), last_step_at),
        Ending::Inactive(_) => (None, last_step_at + TIMEOUT),
        Ending::Abandoned(_) => {
            let at = last_step_at + rng.between(1, 20) * MINUTE;
            timeline.push(banking_cancel(&id("cancel"), at));
            (None, at)
        }
    };
    timeline.sort_by_key(|e| e.at);
    // Out of order: step j delivered right after step j+1, where the late
    // arrival can change nothing final: j+1 short of the completion (a
    // step after completion is ignored), step j+1 before the deadline that
    // step j-1 alone sets (else the journey is rightly seen as dropped
    // first, and drops are final), no offline event between the two.
    if furthest >= 2 && rng.chance(25) {
        let j = 1 + rng.below((furthest - 1).min(COMPLETE - 2) as u64) as usize;
        let within_deadline = step_at[j + 1] - step_at[j - 1] < TIMEOUT;
        if within_deadline && offline.is_none_or(|(s, _)| s != j) {
            let from = timeline
                .iter()
                .position(|e| e.event_id == id(&format!("s{j}")));
            if let Some(from) = from {
                let moved = timeline.remove(from);
                let after = timeline
                    .iter()
                    .position(|e| e.event_id == id(&format!("s{}", j + 1)))
                    .map_or(timeline.len(), |p| p + 1);
                timeline.insert(after, moved);
            }
        }
    }
    let truth = Truth {
        start,
        ending,
        duration,
        furthest,
        offline,
        end,
        before_entering: BTreeSet::new(),
    };
    (timeline, truth)
}

/// Noise: interactions that match no step of the banking journey.
fn noise(rng: &mut Rng, id: String, at: i64) -> EventFacts<'static> {
    use Initiator::{Company, Customer};
    match rng.below(6) {
        0 => facts(
            &id,
            at,
            "email",
            "campaign_offer",
            "email_sent",
            Company,
            &[],
        ),
        1 => facts(&id, at, "sms", "payment_reminder", "sms_sent", Company, &[]),
        2 => facts(
            &id,
            at,
            "web",
            "check_accounts",
            "page_view",
            Customer,
            &[("page", "/accounts")],
        ),
        3 => facts(
            &id,
            at,
            "chat",
            "support_request",
            "chat_message",
            Customer,
            &[],
        ),
        4 => facts(
            &id,
            at,
            "branch",
            "complaint",
            "branch_visit",
            Customer,
            &[],
        ),
        _ => banking_step(1, &id, at), // a prompt without a sign-in: no start
    }
}

/// One generated customer.
pub struct Customer {
    /// Every distinct event, in time order.
    pub timeline: Vec<EventFacts<'static>>,
    /// The events as delivered: out of order in places, some twice.
    pub delivery: Vec<EventFacts<'static>>,
    journeys: Vec<Truth>,
}

/// Generated customers and the truth of their journeys.
pub struct Population {
    pub customers: Vec<Customer>,
}

impl Population {
    /// `customers` customers from `seed`, the first starting at `t0` (µs)
    /// and the next every 5 minutes, so 800 span about three days. Every
    /// journey ends (completes, is abandoned, or passes its deadline)
    /// within a day of its customer's start.
    pub fn generate(customers: usize, seed: u64, t0: i64) -> Self {
        let mut rng = Rng(seed);
        Self {
            customers: (0..customers).map(|i| customer(&mut rng, i, t0)).collect(),
        }
    }

    /// The journeys that started on `day`, or all of them.
    pub fn truths(&self, day: Option<Day>) -> Vec<&Truth> {
        self.customers
            .iter()
            .flat_map(|c| &c.journeys)
            .filter(|t| day.is_none_or(|d| Day::of(Micros(t.start)) == d))
            .collect()
    }

    /// Whether `actual` (of the journeys started on `day`, or all) equals
    /// the figures computed from the truth: exactly, except time to
    /// complete, which must be within the histogram's error.
    pub fn check(
        &self,
        actual: &JourneyStats,
        day: Option<Day>,
        top_n: usize,
    ) -> Result<(), String> {
        let truths = self.truths(day);
        let mut expected = expected_stats(&truths, top_n);
        let mut durations: Vec<i64> = truths.iter().filter_map(|t| t.duration).collect();
        if !durations.is_empty() {
            let summary = actual
                .time_to_complete
                .ok_or("no time to complete, though journeys completed")?;
            for (q, got) in [(0.5, summary.median_micros), (0.9, summary.p90_micros)] {
                let exact = exact_quantile(&mut durations, q) as f64;
                let error = (got as f64 - exact).abs() / exact;
                if error > histogram::MAX_RELATIVE_ERROR {
                    return Err(format!("q{q}: {got} vs exact {exact}: error {error}"));
                }
            }
        }
        expected.time_to_complete = actual.time_to_complete;
        if *actual != expected {
            return Err(format!(
                "stats differ:\n actual {actual:#?}\n expected {expected:#?}"
            ));
        }
        Ok(())
    }
}

fn customer(rng: &mut Rng, index: usize, t0: i64) -> Customer {
    // Starts spread over about three days, so stats span several days.
    let base = t0 + index as i64 * 5 * MINUTE;
    let mut delivery: Vec<EventFacts> = (0..rng.below(9))
        .rev()
        .map(|i| {
            noise(
                rng,
                format!("c{index}-n{i}"),
                base - (i as i64 + 1) * 3 * MINUTE,
            )
        })
        .collect();
    let mut journeys = Vec::new();
    if !rng.chance(10) {
        let (events, truth) = journey_events(rng, index, 0, base);
        let end = truth.end;
        delivery.extend(events);
        journeys.push(truth);
        if rng.chance(15) {
            let again = end + rng.between(1, 60) * MINUTE;
            let (events, truth) = journey_events(rng, index, 1, again);
            delivery.extend(events);
            journeys.push(truth);
        }
    }
    let mut timeline = delivery.clone();
    timeline.sort_by_key(|e| e.at);
    for truth in &mut journeys {
        let before: Vec<&EventFacts> = timeline.iter().filter(|e| e.at.0 < truth.start).collect();
        truth.before_entering = before
            .iter()
            .rev()
            .take(LOOKBACK)
            .map(|e| e.interaction().to_string())
            .collect();
    }
    // Duplicates: some events delivered a second time, later.
    if rng.chance(20) && !delivery.is_empty() {
        for _ in 0..=rng.below(2) {
            let original = rng.below(delivery.len() as u64) as usize;
            let copy = delivery[original].clone();
            let at = original + 1 + rng.below((delivery.len() - original) as u64) as usize;
            delivery.insert(at, copy);
        }
    }
    Customer {
        timeline,
        delivery,
        journeys,
    }
}

fn interaction_of_step(step: usize) -> String {
    banking_step(step, "x", 0).interaction().to_string()
}

/// The figures computed straight from the truths, without the state
/// machine, deltas or counters.
fn expected_stats(truths: &[&Truth], top_n: usize) -> JourneyStats {
    let count = |f: &dyn Fn(&Truth) -> bool| truths.iter().filter(|t| f(t)).count() as u64;
    let entered = truths.len() as u64;
    let completed = count(&|t| t.ending == Ending::Completed);
    let dropped_by_inactivity = count(&|t| matches!(t.ending, Ending::Inactive(_)));
    let dropped_by_abandon = count(&|t| matches!(t.ending, Ending::Abandoned(_)));
    let contained = count(&|t| t.ending == Ending::Completed && t.offline.is_none());
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    let reached: Vec<u64> = (0..=COMPLETE)
        .map(|s| count(&|t| t.furthest >= s))
        .collect();
    let steps = (0..=COMPLETE)
        .map(|s| StepStats {
            name: STEP_NAMES[s].to_string(),
            reached: reached[s],
            dropped_here: count(
                &|t| matches!(t.ending, Ending::Inactive(k) | Ending::Abandoned(k) if k == s),
            ),
            offline_switches: count(&|t| t.offline.is_some_and(|(k, _)| k == s)),
            conversion_to_next: reached.get(s + 1).and_then(|&next| ratio(next, reached[s])),
        })
        .collect();
    let mut leaks: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut before: BTreeMap<String, u64> = BTreeMap::new();
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut sequences: [BTreeMap<String, u64>; 2] = Default::default();
    for t in truths {
        if let Some((step, channel)) = t.offline {
            *leaks
                .entry((STEP_NAMES[step].to_string(), channel.to_string()))
                .or_default() += 1;
        }
        for i in &t.before_entering {
            *before.entry(i.clone()).or_default() += 1;
        }
        let path = STEP_NAMES[..=t.furthest].join(">");
        match t.ending {
            Ending::Completed => *sequences[0].entry(path).or_default() += 1,
            Ending::Inactive(k) | Ending::Abandoned(k) => {
                *sequences[1].entry(path).or_default() += 1;
                *last.entry(interaction_of_step(k)).or_default() += 1;
            }
        }
    }
    let top = |map: &BTreeMap<String, u64>| {
        let mut entries: Vec<TopEntry> = map
            .iter()
            .map(|(key, &count)| TopEntry {
                key: key.clone(),
                count,
            })
            .collect();
        entries.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        entries.truncate(top_n);
        entries
    };
    let mut leaks: Vec<Leak> = leaks
        .into_iter()
        .map(|((step, channel), count)| Leak {
            step,
            channel,
            count,
        })
        .collect();
    leaks.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.step, &a.channel).cmp(&(&b.step, &b.channel)))
    });
    JourneyStats {
        journey: "personal_data_verification".into(),
        entered,
        completed,
        dropped: dropped_by_inactivity + dropped_by_abandon,
        dropped_by_inactivity,
        dropped_by_abandon,
        in_progress: 0,
        merged: 0,
        forgotten: 0,
        steps,
        conversion_rate: ratio(completed, entered),
        contained,
        containment_rate: ratio(contained, completed),
        leaks,
        time_to_complete: None, // compared separately: it is approximate
        top_before_entering: top(&before),
        top_last_before_drop: top(&last),
        top_sequences_completed: top(&sequences[0]),
        top_sequences_dropped: top(&sequences[1]),
    }
}

/// The exact nearest-rank quantile of `durations`.
fn exact_quantile(durations: &mut [i64], q: f64) -> i64 {
    durations.sort_unstable();
    let rank = ((q * durations.len() as f64).ceil() as usize).clamp(1, durations.len());
    durations[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::journey::{
        advance, sweep,
        testkit::{banking, T0},
        JourneyState, StatsLedger,
    };

    const CUSTOMERS: usize = 800;
    const SEED: u64 = 0x006A_6F75_726E_6579;

    #[test]
    fn stats_from_deltas_equal_the_ground_truth_of_a_generated_population() {
        let definition = banking();
        let population = Population::generate(CUSTOMERS, SEED, T0);
        let customers = &population.customers;
        let mut rng = Rng(SEED ^ 1);
        let mut ledger = StatsLedger::default();
        let mut finals: Vec<JourneyState> = Vec::new();
        let mut out_of_order = 0;
        for c in customers {
            let mut state: Option<JourneyState> = None;
            let mut clock = Micros(i64::MIN);
            for event in &c.delivery {
                // A sweeper may or may not have run before this event arrived,
                // at an instant no later than the latest event seen: the
                // outcome must not depend on it.
                if rng.chance(50) {
                    if let Some(swept) = state.as_ref().and_then(|s| sweep(&definition, s, clock)) {
                        ledger.apply_all(&swept.deltas);
                        state = swept.state;
                    }
                }
                if event.at < clock {
                    out_of_order += 1;
                }
                clock = clock.max(event.at);
                let transition = advance(&definition, state.as_ref(), event);
                ledger.apply_all(&transition.deltas);
                if let Some(next) = transition.state {
                    // What a store would write and read back.
                    state = Some(JourneyState::from_json(&next.to_json()).expect("round trip"));
                }
            }
            if let Some(state) = state {
                finals.push(state);
            }
            assert!(c.timeline.windows(2).all(|w| w[0].at <= w[1].at));
        }
        let end = Micros(T0 + 10 * 24 * 60 * MINUTE);
        for state in &finals {
            if let Some(swept) = sweep(&definition, state, end) {
                ledger.apply_all(&swept.deltas);
                let dropped = swept.state.expect("dropped");
                assert!(sweep(&definition, &dropped, end).is_none(), "dropped once");
            }
        }
        let truths = population.truths(None);
        // The population covers every case the test is about.
        assert!(out_of_order > 20, "{out_of_order} late deliveries");
        assert!(customers
            .iter()
            .any(|c| c.delivery.len() > c.timeline.len()));
        assert!(truths.iter().filter(|t| t.offline.is_some()).count() > 50);
        for step in 0..COMPLETE {
            for abandon in [false, true] {
                assert!(truths.iter().any(|t| t.ending
                    == if abandon {
                        Ending::Abandoned(step)
                    } else {
                        Ending::Inactive(step)
                    }));
            }
        }

        let first = Day::of(Micros(T0 - 60 * MINUTE));
        let last = Day::of(end);
        let all = ledger.stats(&definition, first, last, usize::MAX);
        population.check(&all, None, usize::MAX).expect("all days");
        assert!(all.entered > 700 && all.completed > 200, "{all:?}");

        // One start day alone: the cohort of journeys that started that day.
        let day = Day::of(Micros(T0)).0 + 1;
        let one_day = ledger.stats(&definition, Day(day), Day(day), 3);
        assert!(!population.truths(Some(Day(day))).is_empty());
        population
            .check(&one_day, Some(Day(day)), 3)
            .expect("one day");
    }
}
