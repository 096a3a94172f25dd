//! Client subcommands (`append`, `context`, `events`): a person or a script
//! can use the service without other gRPC tools. Human-readable output by
//! default, `--json` for machines.

mod output;

use std::{collections::HashMap, path::PathBuf};

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use tonic::transport::Channel;

use crate::{
    domain::Micros,
    pb::{self, journey_service_client::JourneyServiceClient},
    transport::convert::to_timestamp,
};

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Where the client commands send their calls.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Address of the journey server.
    #[arg(long, env = "JOURNEY_TARGET", default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitiatorArg {
    Customer,
    Company,
}

impl From<InitiatorArg> for pb::Initiator {
    fn from(i: InitiatorArg) -> Self {
        match i {
            InitiatorArg::Customer => pb::Initiator::Customer,
            InitiatorArg::Company => pb::Initiator::Company,
        }
    }
}

#[derive(Debug, Args)]
pub struct AppendArgs {
    #[command(flatten)]
    pub target: Target,
    /// Append every event of this JSON Lines file (one event object a line) with AppendEvents.
    #[arg(long, conflicts_with_all = ["customer", "channel", "reason", "event_type"])]
    pub batch: Option<PathBuf>,
    /// The customer's id.
    #[arg(long, required_unless_present = "batch")]
    pub customer: Option<String>,
    /// Channel, e.g. web.
    #[arg(long, required_unless_present = "batch")]
    pub channel: Option<String>,
    /// Reason, e.g. check_accounts.
    #[arg(long, required_unless_present = "batch")]
    pub reason: Option<String>,
    /// Event type, e.g. page_view.
    #[arg(long = "type", required_unless_present = "batch")]
    pub event_type: Option<String>,
    /// Who started it; taken from the reason when it allows only one.
    #[arg(long, value_enum)]
    pub initiator: Option<InitiatorArg>,
    /// When it happened (RFC 3339, e.g. 2026-11-22T10:00:00.123456Z); now when unset.
    #[arg(long)]
    pub at: Option<DateTime<Utc>>,
    /// Idempotency key; the server assigns a ULID when unset.
    #[arg(long)]
    pub event_id: Option<String>,
    #[arg(long)]
    pub session: Option<String>,
    /// An attribute as KEY=VALUE; repeat for more.
    #[arg(long = "attr", value_parser = parse_attribute)]
    pub attributes: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct ContextArgs {
    #[command(flatten)]
    pub target: Target,
    /// The customer's id.
    pub customer: String,
    /// How many recent events to show (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub max_events: u32,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub target: Target,
    /// The customer's id.
    pub customer: String,
    /// Only events on this channel; repeat for more.
    #[arg(long = "channel")]
    pub channels: Vec<String>,
    #[arg(long, value_enum)]
    pub initiator: Option<InitiatorArg>,
    /// Events at or after this instant (RFC 3339).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// Events before this instant (RFC 3339).
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Events per page (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub page_size: u32,
    /// Continue from a previous page.
    #[arg(long, default_value = "")]
    pub page_token: String,
    /// Follow page tokens to the end of the timeline.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub target: Target,
    /// The customer's id (or use --batch).
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    pub customer: Option<String>,
    /// Review a list: a CSV file (customer id in the first column) or JSON
    /// Lines ({"customer_id": ...}); prints the over-contacted and unknown ones.
    #[arg(long)]
    pub batch: Option<PathBuf>,
    /// Channel of the proposed contact.
    #[arg(long)]
    pub channel: String,
    #[arg(long, default_value = "")]
    pub reason: String,
    #[arg(long = "type", default_value = "")]
    pub event_type: String,
    /// The campaign the contact is about.
    #[arg(long, default_value = "")]
    pub campaign: String,
    /// When the contact would happen (RFC 3339); now when unset.
    #[arg(long)]
    pub at: Option<DateTime<Utc>>,
    /// Record the contact if it is allowed (atomic check-and-record).
    #[arg(long, conflicts_with = "batch")]
    pub reserve: bool,
}

fn parse_attribute(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// One line of an `append --batch` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine {
    #[serde(default)]
    event_id: String,
    customer_id: String,
    #[serde(default)]
    session_id: String,
    channel: String,
    reason: String,
    #[serde(rename = "type")]
    event_type: String,
    initiator: Option<InitiatorArg>,
    occurred_at: Option<DateTime<Utc>>,
    #[serde(default)]
    attributes: HashMap<String, String>,
}

impl From<EventLine> for pb::Event {
    fn from(line: EventLine) -> Self {
        pb::Event {
            event_id: line.event_id,
            customer_id: line.customer_id,
            session_id: line.session_id,
            channel: line.channel,
            reason: line.reason,
            r#type: line.event_type,
            initiator: line
                .initiator
                .map_or(pb::Initiator::Unspecified, Into::into) as i32,
            occurred_at: Some(to_timestamp(Micros::from_datetime(
                line.occurred_at.unwrap_or_else(Utc::now),
            ))),
            attributes: line.attributes,
        }
    }
}

async fn connect(
    target: &Target,
) -> Result<JourneyServiceClient<Channel>, Box<dyn std::error::Error>> {
    let channel = Channel::from_shared(target.target.clone())
        .map_err(|e| format!("bad --target {:?}: {e}", target.target))?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.target))?;
    Ok(JourneyServiceClient::new(channel))
}

fn status_error(status: tonic::Status) -> Box<dyn std::error::Error> {
    format!("{:?}: {}", status.code(), status.message()).into()
}

pub async fn append(args: AppendArgs) -> CliResult {
    let mut client = connect(&args.target).await?;
    if let Some(path) = &args.batch {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut events = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let line: EventLine = serde_json::from_str(line)
                .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
            events.push(pb::Event::from(line));
        }
        let response = client
            .append_events(pb::AppendEventsRequest { events })
            .await
            .map_err(status_error)?
            .into_inner();
        output::append_results(&response, args.target.json);
        return Ok(());
    }
    let at = args.at.unwrap_or_else(Utc::now);
    let event = pb::Event {
        event_id: args.event_id.unwrap_or_default(),
        customer_id: args.customer.unwrap_or_default(),
        session_id: args.session.unwrap_or_default(),
        channel: args.channel.unwrap_or_default(),
        reason: args.reason.unwrap_or_default(),
        r#type: args.event_type.unwrap_or_default(),
        initiator: args
            .initiator
            .map_or(pb::Initiator::Unspecified, Into::into) as i32,
        occurred_at: Some(to_timestamp(Micros::from_datetime(at))),
        attributes: args.attributes.into_iter().collect(),
    };
    let response = client
        .append_event(pb::AppendEventRequest { event: Some(event) })
        .await
        .map_err(status_error)?
        .into_inner();
    output::append_result(&response, args.target.json);
    Ok(())
}

pub async fn context(args: ContextArgs) -> CliResult {
    let mut client = connect(&args.target).await?;
    let response = client
        .get_journey_context(pb::GetJourneyContextRequest {
            customer_id: args.customer,
            max_events: args.max_events,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    output::context(&response, args.target.json);
    Ok(())
}

pub async fn events(args: EventsArgs) -> CliResult {
    let mut client = connect(&args.target).await?;
    let mut token = args.page_token.clone();
    loop {
        let response = client
            .list_events(pb::ListEventsRequest {
                customer_id: args.customer.clone(),
                start_time: args.since.map(|t| to_timestamp(Micros::from_datetime(t))),
                end_time: args.until.map(|t| to_timestamp(Micros::from_datetime(t))),
                channels: args.channels.clone(),
                initiator: args
                    .initiator
                    .map_or(pb::Initiator::Unspecified, Into::into)
                    as i32,
                page_size: args.page_size,
                page_token: token,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        output::events_page(&response, args.target.json, args.all);
        if !args.all || response.next_page_token.is_empty() {
            return Ok(());
        }
        token = response.next_page_token;
    }
}

/// Customer ids of a list file: CSV (first column, an optional
/// `customer_id` header) or JSON Lines with a `customer_id` field.
fn read_customer_list(path: &std::path::Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let id = if line.starts_with('{') {
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
            value["customer_id"]
                .as_str()
                .ok_or_else(|| format!("{}:{}: no \"customer_id\" string", path.display(), n + 1))?
                .to_string()
        } else {
            let first = line
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .trim_matches('"');
            if n == 0 && first == "customer_id" {
                continue;
            }
            first.to_string()
        };
        ids.push(id);
    }
    Ok(ids)
}

pub async fn check(args: CheckArgs) -> CliResult {
    let mut client = connect(&args.target).await?;
    let at = args.at.map(|t| to_timestamp(Micros::from_datetime(t)));
    if let Some(path) = &args.batch {
        let ids = read_customer_list(path)?;
        let (mut flagged, mut reviewed) = (0usize, 0usize);
        // The server takes up to 10,000 customers a call by default.
        for chunk in ids.chunks(10_000) {
            let results = client
                .check_contact_frequency_batch(pb::CheckContactBatchRequest {
                    customer_ids: chunk.to_vec(),
                    channel: args.channel.clone(),
                    reason: args.reason.clone(),
                    campaign_id: args.campaign.clone(),
                    at,
                    r#type: args.event_type.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .results;
            reviewed += results.len();
            for r in results.iter().filter(|r| !r.allowed || !r.found) {
                flagged += 1;
                output::flagged(r, args.target.json);
            }
        }
        if !args.target.json {
            eprintln!("{reviewed} customers reviewed, {flagged} flagged");
        }
        return Ok(());
    }
    let response = client
        .check_contact_frequency(pb::CheckContactRequest {
            customer_id: args.customer.unwrap_or_default(),
            channel: args.channel,
            reason: args.reason,
            campaign_id: args.campaign,
            at,
            reserve: args.reserve,
            r#type: args.event_type,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    output::check(&response, args.target.json);
    Ok(())
}
