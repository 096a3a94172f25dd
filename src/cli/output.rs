//! How the client subcommands print answers: aligned text for people, one
//! JSON document (or one per page with `--all`) for machines.

use serde_json::{json, Value};

use crate::{domain::Micros, pb, transport::convert::timestamp};

pub(super) fn instant(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| timestamp("", t).ok())
        .map_or_else(|| "-".to_string(), |m: Micros| m.to_string())
}

pub(super) fn initiator_name(value: i32) -> &'static str {
    match pb::Initiator::try_from(value) {
        Ok(pb::Initiator::Customer) => "customer",
        Ok(pb::Initiator::Company) => "company",
        _ => "unspecified",
    }
}

fn outcome_name(value: i32) -> &'static str {
    match pb::Outcome::try_from(value) {
        Ok(pb::Outcome::Stored) => "stored",
        Ok(pb::Outcome::Duplicate) => "duplicate",
        Ok(pb::Outcome::Rejected) => "rejected",
        _ => "unspecified",
    }
}

pub fn event_json(e: &pb::Event) -> Value {
    json!({
        "event_id": e.event_id,
        "customer_id": e.customer_id,
        "session_id": e.session_id,
        "channel": e.channel,
        "reason": e.reason,
        "type": e.r#type,
        "initiator": initiator_name(e.initiator),
        "occurred_at": instant(&e.occurred_at),
        "attributes": e.attributes,
    })
}

fn event_line(e: &pb::Event) -> String {
    let mut attributes: Vec<String> = e
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    attributes.sort();
    format!(
        "{}  {:<12} {:<9} {:<20} {:<28} {}  [{}]",
        instant(&e.occurred_at),
        e.channel,
        initiator_name(e.initiator),
        e.r#type,
        e.reason,
        attributes.join(" "),
        e.event_id
    )
}

pub fn append_result(r: &pb::AppendEventResponse, as_json: bool) {
    if as_json {
        println!(
            "{}",
            json!({"event_id": r.event_id, "duplicate": r.duplicate})
        );
    } else if r.duplicate {
        println!("duplicate {} (already stored, nothing written)", r.event_id);
    } else {
        println!("stored {}", r.event_id);
    }
}

pub fn append_results(r: &pb::AppendEventsResponse, as_json: bool) {
    if as_json {
        let results: Vec<Value> = r
            .results
            .iter()
            .map(|x| json!({"event_id": x.event_id, "outcome": outcome_name(x.outcome), "error": x.error}))
            .collect();
        println!("{}", json!({ "results": results }));
        return;
    }
    let mut counts = [0usize; 3];
    for (i, x) in r.results.iter().enumerate() {
        let name = outcome_name(x.outcome);
        match name {
            "stored" => counts[0] += 1,
            "duplicate" => counts[1] += 1,
            _ => counts[2] += 1,
        }
        if x.error.is_empty() {
            println!("{i:>5} {name:<9} {}", x.event_id);
        } else {
            println!("{i:>5} {name:<9} {} {}", x.event_id, x.error);
        }
    }
    println!(
        "{} stored, {} duplicate, {} rejected",
        counts[0], counts[1], counts[2]
    );
}

pub fn context(r: &pb::GetJourneyContextResponse, as_json: bool) {
    if as_json {
        let channels: Vec<Value> = r
            .channels
            .iter()
            .map(|c| {
                json!({
                    "channel": c.channel,
                    "channel_class": c.channel_class,
                    "customer_initiated": c.customer_initiated,
                    "company_initiated": c.company_initiated,
                    "last_interaction_at": instant(&c.last_interaction_at),
                })
            })
            .collect();
        let identities: Vec<Value> = r
            .identities
            .iter()
            .map(|l| {
                let i = l.identity.clone().unwrap_or_default();
                json!({"type": i.r#type, "value": i.value, "first_seen": instant(&l.first_seen), "first_channel": l.first_channel})
            })
            .collect();
        let merges: Vec<Value> = r
            .merges
            .iter()
            .map(|m| json!({"from_profile_id": m.from_profile_id, "at": instant(&m.at)}))
            .collect();
        let doc = json!({
            "customer_id": r.customer_id,
            "profile_id": r.profile_id,
            "identities": identities,
            "merges": merges,
            "total_events": r.total_events,
            "first_seen": instant(&r.first_seen),
            "last_seen": instant(&r.last_seen),
            "channels": channels,
            "last_customer_interaction": r.last_customer_interaction.as_ref().map(event_json),
            "last_company_contact": r.last_company_contact.as_ref().map(event_json),
            "events": r.events.iter().map(event_json).collect::<Vec<_>>(),
            "contact_counts": counts_json(&r.contact_counts),
            "contact_counts_capped": r.contact_counts.as_ref().is_some_and(|c| c.capped),
            "journeys": super::journeys::states_json(&r.journeys),
        });
        println!("{doc}");
        return;
    }
    println!("customer     {}", r.customer_id);
    if r.profile_id != r.customer_id {
        println!("profile      {}", r.profile_id);
    }
    println!("events held  {}", r.total_events);
    println!("first seen   {}", instant(&r.first_seen));
    println!("last seen    {}", instant(&r.last_seen));
    if let Some(e) = &r.last_customer_interaction {
        println!("last by customer  {}", event_line(e));
    }
    if let Some(e) = &r.last_company_contact {
        println!("last by company   {}", event_line(e));
    }
    if !r.identities.is_empty() {
        println!("identities:");
        for linked in &r.identities {
            let identity = linked.identity.clone().unwrap_or_default();
            let channel = match linked.first_channel.as_str() {
                "" => "link",
                channel => channel,
            };
            println!(
                "  {:<12} {:<32} first seen {} ({channel})",
                identity.r#type,
                identity.value,
                instant(&linked.first_seen)
            );
        }
    }
    for merge in &r.merges {
        println!(
            "merged in   {} at {}",
            merge.from_profile_id,
            instant(&merge.at)
        );
    }
    println!();
    println!(
        "{:<14} {:<8} {:>9} {:>8}  last interaction",
        "channel", "class", "customer", "company"
    );
    for c in &r.channels {
        println!(
            "{:<14} {:<8} {:>9} {:>8}  {}",
            c.channel,
            c.channel_class,
            c.customer_initiated,
            c.company_initiated,
            instant(&c.last_interaction_at)
        );
    }
    if !r.journeys.is_empty() {
        println!();
        println!("journeys:");
        super::journeys::print_state_lines(&r.journeys);
    }
    println!();
    println!("recent events (newest first):");
    for e in &r.events {
        println!("  {}", event_line(e));
    }
}

pub fn events_page(r: &pb::ListEventsResponse, as_json: bool, following: bool) {
    if as_json {
        let doc = json!({
            "events": r.events.iter().map(event_json).collect::<Vec<_>>(),
            "next_page_token": r.next_page_token,
        });
        println!("{doc}");
        return;
    }
    for e in &r.events {
        println!("{}", event_line(e));
    }
    if !following && !r.next_page_token.is_empty() {
        println!("next page: --page-token {}", r.next_page_token);
    }
}

fn counts_json(c: &Option<pb::ContactCounts>) -> Value {
    let c = c.clone().unwrap_or_default();
    let per_channel: serde_json::Map<String, Value> = c
        .per_channel
        .iter()
        .map(|(ch, n)| {
            (
                ch.clone(),
                json!({"last_24h": n.last_24h, "last_7d": n.last_7d, "last_30d": n.last_30d}),
            )
        })
        .collect();
    json!({"last_24h": c.last_24h, "last_7d": c.last_7d, "last_30d": c.last_30d, "per_channel": per_channel})
}

pub fn check_json(r: &pb::CheckContactResponse) -> Value {
    let violations: Vec<Value> = r
        .violations
        .iter()
        .map(|v| {
            json!({
                "rule": v.rule, "count": v.count, "limit": v.limit,
                "window_s": v.window.map_or(0, |w| w.seconds),
            })
        })
        .collect();
    json!({
        "customer_id": r.customer_id,
        "allowed": r.allowed,
        "found": r.found,
        "exempt": r.exempt,
        "quiet_hours": r.quiet_hours,
        "violations": violations,
        "next_allowed_at": r.next_allowed_at.map(|t| instant(&Some(t))),
        "reservation_id": r.reservation_id,
        "timezone": r.timezone,
        "counts": counts_json(&r.counts),
    })
}

/// Why a customer is flagged in a list review.
fn flag_reason(r: &pb::CheckContactResponse) -> String {
    if !r.found {
        return "unknown customer".into();
    }
    let mut reasons: Vec<String> = r
        .violations
        .iter()
        .map(|v| format!("{} ({}/{})", v.rule, v.count, v.limit))
        .collect();
    if r.quiet_hours {
        reasons.push("quiet hours".into());
    }
    reasons.join("; ")
}

pub fn flagged(r: &pb::CheckContactResponse, as_json: bool) {
    if as_json {
        println!("{}", check_json(r));
    } else {
        println!("{},{}", r.customer_id, flag_reason(r));
    }
}

pub fn check(r: &pb::CheckContactResponse, as_json: bool) {
    if as_json {
        println!("{}", check_json(r));
        return;
    }
    let verdict = match (r.allowed, r.exempt) {
        (true, true) => "allowed (exempt)",
        (true, false) => "allowed",
        (false, _) => "blocked",
    };
    println!("{verdict}");
    if !r.found {
        println!("  unknown customer: nothing is held for {}", r.customer_id);
    }
    for v in &r.violations {
        let window = v.window.map_or(0, |w| w.seconds);
        println!(
            "  rule {}: {} of {} in {}",
            v.rule,
            v.count,
            v.limit,
            humanize_seconds(window)
        );
    }
    if r.quiet_hours {
        println!("  quiet hours ({})", r.timezone);
    }
    if !r.allowed {
        match &r.next_allowed_at {
            Some(t) => println!("  next allowed at {}", instant(&Some(*t))),
            None => println!("  not allowed at any time by the current policy"),
        }
    }
    if !r.reservation_id.is_empty() {
        println!(
            "  reserved: append the contact's event with event_id {}",
            r.reservation_id
        );
    }
    let c = r.counts.clone().unwrap_or_default();
    println!(
        "  company contacts: {} in 24h, {} in 7d, {} in 30d",
        c.last_24h, c.last_7d, c.last_30d
    );
    let mut channels: Vec<_> = c.per_channel.iter().collect();
    channels.sort_by(|a, b| a.0.cmp(b.0));
    for (channel, n) in channels {
        println!(
            "    {channel:<14} {} / {} / {}",
            n.last_24h, n.last_7d, n.last_30d
        );
    }
}

pub(super) fn humanize_seconds(s: i64) -> String {
    if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3_600 == 0 {
        format!("{}h", s / 3_600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

pub fn linked(r: &pb::LinkIdentitiesResponse, as_json: bool) {
    if as_json {
        println!(
            "{}",
            json!({"profile_id": r.profile_id, "merged_profile_ids": r.merged_profile_ids})
        );
        return;
    }
    println!("profile {}", r.profile_id);
    for merged in &r.merged_profile_ids {
        println!("  merged {merged}");
    }
}
