//! Client subcommands (`append`, `context`, `events`, `check`, `link`, `journeys`, ...): a person or a script
//! can use the service without other gRPC tools. Human-readable output by
//! default, `--json` for machines.

mod journeys;
mod output;

pub use journeys::{customers, journeys, stats, CustomersArgs, JourneysArgs, StatsArgs};

use std::{collections::BTreeMap, path::PathBuf};

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use tonic::transport::Channel;

use crate::{
    domain::Micros,
    pb::{self, journey_service_client::JourneyServiceClient},
    transport::convert::exact_timestamp,
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
    #[arg(long, required_unless_present_any = ["batch", "identities"])]
    pub customer: Option<String>,
    /// An identity the event carries, as TYPE=VALUE (email=..., phone=...,
    /// cookie_id=...); repeat for more. Without --customer: an anonymous visitor.
    #[arg(long = "identity", value_parser = parse_attribute)]
    pub identities: Vec<(String, String)>,
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
    #[command(flatten)]
    pub who: CustomerArgs,
    /// How many recent events to show (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub max_events: u32,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub who: CustomerArgs,
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
    #[command(flatten)]
    pub who: CustomerArgs,
    /// Review a list: a CSV file (customer id in the first column) or JSON
    /// Lines ({"customer_id": ...}); prints the over-contacted and unknown ones.
    #[arg(long)]
    pub batch: Option<PathBuf>,
    /// Customers per call with --batch: the server takes up to
    /// --max-check-batch (10,000 by default).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
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
    /// With --reserve: the id to record it under (e.g. the event id the
    /// contact will be sent with); the same check with the same id answers
    /// that reservation again instead of making another.
    #[arg(long, requires = "reserve")]
    pub reservation_id: Option<String>,
}

/// Who a command is about: a customer id, or any identity.
#[derive(Debug, Clone, Args)]
pub struct CustomerArgs {
    /// The customer's id.
    pub customer: Option<String>,
    /// Find the customer by email.
    #[arg(long)]
    pub email: Option<String>,
    /// Find the customer by phone number, in any format.
    #[arg(long)]
    pub phone: Option<String>,
    /// Find the customer by any identity, as TYPE=VALUE.
    #[arg(long = "identity", value_parser = parse_attribute)]
    pub identity: Option<(String, String)>,
    /// Name the profile by the profile id the service answered.
    #[arg(long)]
    pub profile: Option<String>,
}

impl CustomerArgs {
    /// The reference to send, or `None` when no customer was named.
    pub fn to_ref(&self) -> Result<Option<pb::CustomerRef>, String> {
        use pb::customer_ref::Ref;
        let identity = |kind: &str, value: &str| {
            Ref::Identity(pb::Identity {
                r#type: kind.to_string(),
                value: value.to_string(),
            })
        };
        let mut given = Vec::new();
        if let Some(c) = &self.customer {
            given.push(Ref::CustomerId(c.clone()));
        }
        if let Some(e) = &self.email {
            given.push(identity("email", e));
        }
        if let Some(p) = &self.phone {
            given.push(identity("phone", p));
        }
        if let Some((k, v)) = &self.identity {
            given.push(identity(k, v));
        }
        if let Some(p) = &self.profile {
            given.push(Ref::ProfileId(p.clone()));
        }
        match given.len() {
            0 => Ok(None),
            1 => Ok(given.pop().map(|r| pb::CustomerRef { r#ref: Some(r) })),
            _ => Err(
                "name the customer one way: CUSTOMER, --email, --phone, --identity or --profile"
                    .into(),
            ),
        }
    }

    fn required(&self) -> Result<pb::CustomerRef, Box<dyn std::error::Error>> {
        self.to_ref()?.ok_or_else(|| {
            "name the customer: CUSTOMER, --email, --phone, --identity or --profile".into()
        })
    }
}

/// `journey link`: declares that identities belong to one person.
#[derive(Debug, Args)]
pub struct LinkArgs {
    #[command(flatten)]
    pub target: Target,
    /// An identity as TYPE=VALUE (customer_id=c1, email=..., phone=..., cookie_id=...); at least two.
    #[arg(long = "identity", value_parser = parse_attribute, required = true, num_args = 1)]
    pub identities: Vec<(String, String)>,
}

/// `journey unlink`: removes a wrongly linked identity from a profile.
#[derive(Debug, Args)]
pub struct UnlinkArgs {
    #[command(flatten)]
    pub target: Target,
    /// The profile's customer id, or the profile id with --profile.
    pub customer: Option<String>,
    #[arg(long)]
    pub profile: Option<String>,
    /// The identity to remove, as TYPE=VALUE.
    #[arg(long = "remove", value_parser = parse_attribute)]
    pub remove: (String, String),
}

/// `journey forget`: erases a customer (right to erasure).
#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub who: CustomerArgs,
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
    #[serde(default)]
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
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    identities: Vec<IdentityLine>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityLine {
    #[serde(rename = "type")]
    kind: String,
    value: String,
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
            occurred_at: Some(exact_timestamp(Micros::from_datetime(
                line.occurred_at.unwrap_or_else(Utc::now),
            ))),
            attributes: line.attributes,
            identities: line
                .identities
                .into_iter()
                .map(|i| pb::Identity {
                    r#type: i.kind,
                    value: i.value,
                })
                .collect(),
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
        occurred_at: Some(exact_timestamp(Micros::from_datetime(at))),
        attributes: args.attributes.into_iter().collect(),
        identities: args
            .identities
            .into_iter()
            .map(|(k, v)| pb::Identity {
                r#type: k,
                value: v,
            })
            .collect(),
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
            customer: Some(args.who.required()?),
            max_events: args.max_events,
            ..Default::default()
        })
        .await
        .map_err(status_error)?
        .into_inner();
    output::context(&response, args.target.json);
    Ok(())
}

pub async fn events(args: EventsArgs) -> CliResult {
    let mut client = connect(&args.target).await?;
    let customer = args.who.required()?;
    let mut token = args.page_token.clone();
    loop {
        let response = client
            .list_events(pb::ListEventsRequest {
                customer: Some(customer.clone()),
                customer_id: String::new(),
                start_time: args
                    .since
                    .map(|t| exact_timestamp(Micros::from_datetime(t))),
                end_time: args
                    .until
                    .map(|t| exact_timestamp(Micros::from_datetime(t))),
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
/// `customer_id` header, quoted fields as spreadsheets write them, read by
/// the `csv` crate) or JSON Lines with a `customer_id` field, told apart by
/// the first line that holds anything.
fn read_customer_list(path: &std::path::Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // A spreadsheet's export may start with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let json_lines = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .is_some_and(|line| line.starts_with('{'));
    if json_lines {
        let mut ids = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
            let id = value["customer_id"].as_str().ok_or_else(|| {
                format!("{}:{}: no \"customer_id\" string", path.display(), n + 1)
            })?;
            ids.push(id.to_string());
        }
        return Ok(ids);
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut ids: Vec<String> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            format!("{}:{line}: {e}", path.display())
        })?;
        let first = record.get(0).unwrap_or_default();
        if first.is_empty() && record.len() <= 1 {
            continue; // a blank line
        }
        // The header, on the first line that holds anything.
        if ids.is_empty() && first.eq_ignore_ascii_case("customer_id") {
            continue;
        }
        ids.push(first.to_string());
    }
    Ok(ids)
}

pub async fn check(args: CheckArgs) -> CliResult {
    let mut client = connect(&args.target).await?;
    let at = args.at.map(|t| exact_timestamp(Micros::from_datetime(t)));
    if let Some(path) = &args.batch {
        if args.who.to_ref()?.is_some() {
            return Err("--batch reviews a list: name no customer beside it".into());
        }
        let ids = read_customer_list(path)?;
        let (mut flagged, mut reviewed) = (0usize, 0usize);
        for chunk in ids.chunks(args.batch_size as usize) {
            let results = client
                .check_contact_frequency_batch(pb::CheckContactBatchRequest {
                    customer_ids: chunk.to_vec(),
                    customers: Vec::new(),
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
            customer: Some(args.who.required()?),
            customer_id: String::new(),
            channel: args.channel,
            reason: args.reason,
            campaign_id: args.campaign,
            at,
            reserve: args.reserve,
            r#type: args.event_type,
            reservation_id: args.reservation_id.unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    output::check(&response, args.target.json);
    Ok(())
}

pub async fn link(args: LinkArgs) -> CliResult {
    let mut client = connect(&args.target).await?;
    let identities = args
        .identities
        .into_iter()
        .map(|(k, v)| pb::Identity {
            r#type: k,
            value: v,
        })
        .collect();
    let response = client
        .link_identities(pb::LinkIdentitiesRequest { identities })
        .await
        .map_err(status_error)?
        .into_inner();
    output::linked(&response, args.target.json);
    Ok(())
}

pub async fn unlink(args: UnlinkArgs) -> CliResult {
    let mut client = connect(&args.target).await?;
    let who = CustomerArgs {
        customer: args.customer,
        email: None,
        phone: None,
        identity: None,
        profile: args.profile,
    };
    let (kind, value) = args.remove;
    client
        .unlink_identity(pb::UnlinkIdentityRequest {
            customer: Some(who.required()?),
            identity: Some(pb::Identity {
                r#type: kind.clone(),
                value: value.clone(),
            }),
            customer_id: String::new(),
        })
        .await
        .map_err(status_error)?;
    if args.target.json {
        println!(
            "{}",
            serde_json::json!({"unlinked": {"type": kind, "value": value}})
        );
    } else {
        println!("unlinked {kind}={value}");
    }
    Ok(())
}

pub async fn forget(args: ForgetArgs) -> CliResult {
    let mut client = connect(&args.target).await?;
    let forgotten = client
        .forget_customer(pb::ForgetCustomerRequest {
            customer: Some(args.who.required()?),
            customer_id: String::new(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.target.json {
        println!(
            "{}",
            serde_json::json!({
                "profile_id": forgotten.profile_id,
                "events": forgotten.events,
                "identities": forgotten.identities,
                "merged_profile_ids": forgotten.merged_profile_ids,
            })
        );
    } else {
        println!(
            "forgot {}: {} events, {} identities, {} merged profiles",
            forgotten.profile_id,
            forgotten.events,
            forgotten.identities,
            forgotten.merged_profile_ids.len()
        );
    }
    Ok(())
}
