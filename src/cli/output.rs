//! How the client subcommands print answers: aligned text for people, one
//! JSON document (or one per page with `--all`) for machines.

use serde_json::{json, Value};

use crate::{domain::Micros, pb, transport::convert::timestamp};

fn instant(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| timestamp("", t).ok())
        .map_or_else(|| "-".to_string(), |m: Micros| m.to_string())
}

fn initiator_name(value: i32) -> &'static str {
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
        let doc = json!({
            "customer_id": r.customer_id,
            "total_events": r.total_events,
            "first_seen": instant(&r.first_seen),
            "last_seen": instant(&r.last_seen),
            "channels": channels,
            "last_customer_interaction": r.last_customer_interaction.as_ref().map(event_json),
            "last_company_contact": r.last_company_contact.as_ref().map(event_json),
            "events": r.events.iter().map(event_json).collect::<Vec<_>>(),
        });
        println!("{doc}");
        return;
    }
    println!("customer     {}", r.customer_id);
    println!("events held  {}", r.total_events);
    println!("first seen   {}", instant(&r.first_seen));
    println!("last seen    {}", instant(&r.last_seen));
    if let Some(e) = &r.last_customer_interaction {
        println!("last by customer  {}", event_line(e));
    }
    if let Some(e) = &r.last_company_contact {
        println!("last by company   {}", event_line(e));
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
