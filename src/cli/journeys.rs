//! The journey commands: `journey journeys` (the definitions loaded, or a
//! customer's journeys), `journey stats JOURNEY` (a funnel with a text bar
//! per step) and `journey customers JOURNEY` (who is in a status).

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use super::{
    connect,
    output::{humanize_seconds, initiator_name, instant},
    status_error, CliResult, CustomerArgs, Target,
};
use crate::{domain::Micros, pb, transport::convert::exact_timestamp};

/// `journey journeys [CUSTOMER]`: the journey definitions the server
/// loaded, or, given a customer, where that customer stands in each.
#[derive(Debug, Args)]
pub struct JourneysArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub who: CustomerArgs,
}

/// `journey stats JOURNEY`: the journey's funnel and figures.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub target: Target,
    /// The journey's name (see `journey journeys`).
    pub journey: String,
    /// Journeys started this long before --until (e.g. 7d, 24h), counted by whole UTC days.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// End of the range (RFC 3339); now when unset.
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Entries in each top list.
    #[arg(long, default_value_t = 5)]
    pub top: u32,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    InProgress,
    Completed,
    Dropped,
}

/// `journey customers JOURNEY --state dropped`: the customers in a status.
#[derive(Debug, Args)]
pub struct CustomersArgs {
    #[command(flatten)]
    pub target: Target,
    /// The journey's name.
    pub journey: String,
    /// Customers in this status.
    #[arg(long, value_enum)]
    pub state: StatusArg,
    /// Only those at this step (in progress: the current step; dropped: the step of the drop).
    #[arg(long, default_value = "")]
    pub step: String,
    /// Only those who entered the status within this long (e.g. 1d); any time when unset.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// Most customers to print, over as many pages as needed.
    #[arg(long, default_value_t = 1_000)]
    pub limit: usize,
}

pub async fn journeys(args: JourneysArgs) -> CliResult {
    let mut client = connect(&args.target).await?;
    let Some(customer) = args.who.to_ref()? else {
        let response = client
            .list_journey_definitions(pb::ListJourneyDefinitionsRequest {})
            .await
            .map_err(status_error)?
            .into_inner();
        print_definitions(&response, args.target.json);
        return Ok(());
    };
    let context = client
        .get_journey_context(pb::GetJourneyContextRequest {
            customer: Some(customer),
            max_events: 1,
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .into_inner();
    print_states(&context.journeys, args.target.json);
    Ok(())
}

pub async fn stats(args: StatsArgs) -> CliResult {
    let mut client = connect(&args.target).await?;
    let end = args
        .until
        .map_or_else(Micros::now, |t| Micros(t.timestamp_micros()));
    let since = i64::try_from(args.since.as_micros()).map_err(|_| "--since is too long")?;
    let response = client
        .get_journey_stats(pb::GetJourneyStatsRequest {
            journey: args.journey,
            start_time: Some(exact_timestamp(end.saturating_sub_micros(since))),
            end_time: Some(exact_timestamp(end)),
            top: args.top,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    print_stats(&response, args.target.json);
    Ok(())
}

pub async fn customers(args: CustomersArgs) -> CliResult {
    let mut client = connect(&args.target).await?;
    let state = match args.state {
        StatusArg::InProgress => pb::JourneyStatus::InProgress,
        StatusArg::Completed => pb::JourneyStatus::Completed,
        StatusArg::Dropped => pb::JourneyStatus::Dropped,
    };
    let start_time = match args.since {
        None => None,
        Some(since) => {
            let since = i64::try_from(since.as_micros()).map_err(|_| "--since is too long")?;
            Some(exact_timestamp(Micros::now().saturating_sub_micros(since)))
        }
    };
    let mut token = String::new();
    let mut printed = 0;
    let mut listed = Vec::new();
    while printed < args.limit {
        let page = client
            .list_journeys(pb::ListJourneysRequest {
                journey: args.journey.clone(),
                state: state as i32,
                step: args.step.clone(),
                start_time,
                page_size: (args.limit - printed).min(1_000) as u32,
                page_token: token,
                ..Default::default()
            })
            .await
            .map_err(status_error)?
            .into_inner();
        for c in &page.customers {
            if args.target.json {
                listed.push(json!({"customer_id": c.customer_id, "at": instant(&c.at)}));
            } else {
                println!("{}  {}", instant(&c.at), c.customer_id);
            }
        }
        printed += page.customers.len();
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    if args.target.json {
        println!("{}", json!({ "customers": listed }));
    }
    Ok(())
}

fn status_name(value: i32) -> &'static str {
    match pb::JourneyStatus::try_from(value) {
        Ok(pb::JourneyStatus::InProgress) => "in progress",
        Ok(pb::JourneyStatus::Completed) => "completed",
        Ok(pb::JourneyStatus::Dropped) => "dropped",
        _ => "unspecified",
    }
}

fn seconds(d: &Option<prost_types::Duration>) -> i64 {
    d.as_ref().map_or(0, |d| d.seconds)
}

/// A duration for people: 1h5m, 12m30s, 45s.
fn span(total: i64) -> String {
    let (h, m, s) = (total / 3_600, total % 3_600 / 60, total % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

fn print_states(states: &[pb::JourneyState], as_json: bool) {
    if as_json {
        println!("{}", json!({ "journeys": states_json(states) }));
        return;
    }
    if states.is_empty() {
        println!("no journey in progress or finished recently");
        return;
    }
    print_state_lines(states);
}

/// A customer's journey states as JSON values.
pub(super) fn states_json(states: &[pb::JourneyState]) -> Vec<Value> {
    states
        .iter()
        .map(|j| {
            json!({
                "journey": j.journey, "state": status_name(j.state),
                "current_step": j.current_step, "started_at": instant(&j.started_at),
                "last_progress_at": instant(&j.last_progress_at),
                "finished_at": instant(&j.finished_at), "dropped_at_step": j.dropped_at_step,
                "drop_cause": j.drop_cause, "last_event_id": j.last_event_id,
                "channels": j.channels, "offline_switch_step": j.offline_switch_step,
                "offline_switch_channel": j.offline_switch_channel,
                "deadline": instant(&j.deadline), "steps_reached": j.steps_reached,
                "duration_s": j.duration.as_ref().map(|d| d.seconds),
            })
        })
        .collect()
}

/// A customer's journey states for people: where they stand and since when.
pub(super) fn print_state_lines(states: &[pb::JourneyState]) {
    let now = Micros::now();
    let ago = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map(|t| span(((now.0 / 1_000_000) - t.seconds).max(0)))
            .unwrap_or_default()
    };
    for j in states {
        match pb::JourneyStatus::try_from(j.state) {
            Ok(pb::JourneyStatus::InProgress) => println!(
                "{}: in progress, at {} since {} (started {} ago; drops at {})",
                j.journey,
                j.current_step,
                ago(&j.last_progress_at),
                ago(&j.started_at),
                instant(&j.deadline)
            ),
            Ok(pb::JourneyStatus::Completed) => println!(
                "{}: completed {} ago, in {}",
                j.journey,
                ago(&j.finished_at),
                span(seconds(&j.duration))
            ),
            _ => println!(
                "{}: dropped at {} ({}) {} ago",
                j.journey,
                j.dropped_at_step,
                j.drop_cause,
                ago(&j.finished_at)
            ),
        }
        println!("  steps: {}", j.steps_reached.join(" > "));
        println!("  channels: {}", j.channels.join(", "));
        if !j.offline_switch_step.is_empty() {
            println!(
                "  went offline ({}) at step {}",
                j.offline_switch_channel, j.offline_switch_step
            );
        }
    }
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0))
}

/// A bar of `width` cells for `value` out of `max`, in eighths of a cell.
fn bar(value: u64, max: u64, width: usize) -> String {
    const PARTS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    if max == 0 {
        return String::new();
    }
    let eighths = (value as u128 * width as u128 * 8 / max as u128) as usize;
    format!("{}{}", "█".repeat(eighths / 8), PARTS[eighths % 8])
}

fn print_stats(r: &pb::GetJourneyStatsResponse, as_json: bool) {
    let top_json = |entries: &[pb::TopEntry]| {
        entries
            .iter()
            .map(|e| json!({"key": e.key, "count": e.count}))
            .collect::<Vec<_>>()
    };
    if as_json {
        let steps: Vec<Value> = r
            .steps
            .iter()
            .map(|s| {
                json!({"step": s.step, "reached": s.reached, "dropped_here": s.dropped_here,
                       "conversion_to_next": s.conversion_to_next, "offline_switches": s.offline_switches})
            })
            .collect();
        let leaks: Vec<Value> = r
            .leaks
            .iter()
            .map(|l| json!({"step": l.step, "channel": l.channel, "count": l.count}))
            .collect();
        println!(
            "{}",
            json!({
                "journey": r.journey, "start_time": instant(&r.start_time),
                "end_time": instant(&r.end_time), "entered": r.entered,
                "completed": r.completed, "dropped": r.dropped, "in_progress": r.in_progress,
                "merged": r.merged, "forgotten": r.forgotten,
                "dropped_by_inactivity": r.dropped_by_inactivity,
                "dropped_by_abandon": r.dropped_by_abandon, "conversion_rate": r.conversion_rate,
                "contained": r.contained, "containment_rate": r.containment_rate,
                "time_to_complete_p50_s": r.time_to_complete_p50.as_ref().map(|d| d.seconds),
                "time_to_complete_p90_s": r.time_to_complete_p90.as_ref().map(|d| d.seconds),
                "time_to_complete_max_relative_error": r.time_to_complete_max_relative_error,
                "steps": steps, "leaks": leaks,
                "top_before_entering": top_json(&r.top_before_entering),
                "top_last_before_drop": top_json(&r.top_last_before_drop),
                "top_sequences_completed": top_json(&r.top_sequences_completed),
                "top_sequences_dropped": top_json(&r.top_sequences_dropped),
            })
        );
        return;
    }
    println!(
        "{}: journeys started from {} to {}",
        r.journey,
        instant(&r.start_time),
        instant(&r.end_time)
    );
    println!(
        "entered {}  completed {} ({})  dropped {} (inactivity {}, abandon {})  in progress {}{}{}",
        r.entered,
        r.completed,
        percent(r.conversion_rate),
        r.dropped,
        r.dropped_by_inactivity,
        r.dropped_by_abandon,
        r.in_progress,
        if r.merged > 0 {
            format!("  merged {}", r.merged)
        } else {
            String::new()
        },
        if r.forgotten > 0 {
            format!("  forgotten {}", r.forgotten)
        } else {
            String::new()
        }
    );
    println!(
        "contained {} of {} completed ({})",
        r.contained,
        r.completed,
        percent(r.containment_rate)
    );
    if r.time_to_complete_p50.is_some() {
        println!(
            "time to complete: median {}, p90 {} (within {:.1}%)",
            span(seconds(&r.time_to_complete_p50)),
            span(seconds(&r.time_to_complete_p90)),
            r.time_to_complete_max_relative_error * 100.0
        );
    }
    println!();
    let width = r
        .steps
        .iter()
        .map(|s| s.step.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "  {:<width$}  {:<30} {:>7} {:>8} {:>8} {:>7}",
        "step", "", "reached", "dropped", "offline", "→ next"
    );
    let most = r.steps.iter().map(|s| s.reached).max().unwrap_or(0);
    for s in &r.steps {
        println!(
            "  {:<width$}  {:<30} {:>7} {:>8} {:>8} {:>7}",
            s.step,
            bar(s.reached, most, 30),
            s.reached,
            s.dropped_here,
            s.offline_switches,
            percent(s.conversion_to_next)
        );
    }
    if !r.leaks.is_empty() {
        println!();
        println!("leaks to offline channels:");
        for l in &r.leaks {
            println!("  at {} → {}: {}", l.step, l.channel, l.count);
        }
    }
    for (title, entries) in [
        (
            "most common interactions before entering",
            &r.top_before_entering,
        ),
        (
            "most common last interactions before a drop",
            &r.top_last_before_drop,
        ),
        (
            "most common paths of completers",
            &r.top_sequences_completed,
        ),
        ("most common paths of droppers", &r.top_sequences_dropped),
    ] {
        if entries.is_empty() {
            continue;
        }
        println!();
        println!("{title}:");
        for e in entries {
            println!("  {:>6}  {}", e.count, e.key);
        }
    }
}

fn step_text(step: &pb::JourneyStepDefinition) -> String {
    let mut parts = Vec::new();
    for (label, values) in [
        ("type", &step.types),
        ("reason", &step.reasons),
        ("channel", &step.channels),
    ] {
        if !values.is_empty() {
            parts.push(format!("{label}={}", values.join("|")));
        }
    }
    if !step.channel_class.is_empty() {
        parts.push(format!("class={}", step.channel_class));
    }
    if step.initiator != 0 {
        parts.push(format!("by={}", initiator_name(step.initiator)));
    }
    let mut attributes: Vec<String> = step
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    attributes.sort();
    parts.extend(attributes);
    parts.join(" ")
}

fn print_definitions(r: &pb::ListJourneyDefinitionsResponse, as_json: bool) {
    let step_json = |s: &pb::JourneyStepDefinition| {
        json!({
            "name": s.name, "types": s.types, "reasons": s.reasons, "channels": s.channels,
            "channel_class": s.channel_class, "initiator": initiator_name(s.initiator),
            "attributes": s.attributes,
        })
    };
    if as_json {
        let journeys: Vec<Value> = r
            .journeys
            .iter()
            .map(|j| {
                json!({
                    "name": j.name, "description": j.description,
                    "steps": j.steps.iter().map(step_json).collect::<Vec<_>>(),
                    "start_step": j.start_step, "complete_step": j.complete_step,
                    "in_order": j.in_order,
                    "inactivity_timeout_s": j.inactivity_timeout.map_or(0, |d| d.seconds),
                    "reentry": j.reentry, "lookback_events": j.lookback_events,
                    "abandon": j.abandon.iter().map(step_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", json!({ "journeys": journeys }));
        return;
    }
    for j in &r.journeys {
        let timeout = j.inactivity_timeout.map_or(0, |d| d.seconds);
        println!(
            "{}  ({}, drop after {} without progress{})",
            j.name,
            if j.in_order {
                "steps in order"
            } else {
                "steps in any order"
            },
            humanize_seconds(timeout),
            if j.reentry { ", re-entry allowed" } else { "" }
        );
        if !j.description.is_empty() {
            println!("  {}", j.description);
        }
        for (i, step) in j.steps.iter().enumerate() {
            let mark = if step.name == j.start_step {
                " (start)"
            } else if step.name == j.complete_step {
                " (complete)"
            } else {
                ""
            };
            println!("  {}. {}{mark}: {}", i + 1, step.name, step_text(step));
        }
        for abandon in &j.abandon {
            println!("  abandon on: {}", step_text(abandon));
        }
    }
}
