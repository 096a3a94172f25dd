//! Contact policy: may the company contact this customer now, on this
//! channel? Pure functions over a customer's contact history; the caller
//! passes the instant, so every rule is tested with an explicit time.
//!
//! A contact is a company-initiated event. Rules cap the number of
//! contacts in a sliding window (exact to the microsecond: a contact
//! exactly one window ago no longer counts; contacts already recorded after
//! the proposed instant, such as reservations, count while they are less
//! than one window after it); quiet hours block channels at
//! night in the customer's time zone. Exempt reasons and types (payment
//! receipts, security alerts) never count and are never blocked.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration as ChronoDuration, LocalResult, NaiveDateTime, NaiveTime, Offset, TimeZone};
use chrono_tz::Tz;
use serde::Deserialize;
use thiserror::Error;

use super::{taxonomy::NameKind, ChannelClass, Contact, Micros, Taxonomy};

/// The policy the service uses when none is given.
pub const BUILTIN_TOML: &str = include_str!("../../policy/default.toml");

const HOUR: i64 = 3_600 * Micros::PER_SECOND;
const DAY: i64 = 24 * HOUR;

/// A policy file that cannot be used; the message names the line.
#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("contact policy: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("contact policy, line {line}: {reason}")]
    Rule { line: usize, reason: String },
}

/// The contact a caller proposes to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRequest {
    pub channel: String,
    /// Empty: unstated (rules scoped to a reason then do not apply).
    pub reason: String,
    /// Empty: unstated.
    pub event_type: String,
    /// Empty: no campaign.
    pub campaign_id: String,
    pub at: Micros,
}

impl ContactRequest {
    /// Whether `contact` is this proposed contact, made already: the same
    /// channel, and the same reason, type and campaign where the proposal
    /// states them (an event that replaced a reservation may state more).
    pub fn is_made_by(&self, contact: &Contact) -> bool {
        let stated = |asked: &str, held: &str| asked.is_empty() || asked == held;
        contact.channel() == self.channel
            && stated(&self.reason, contact.reason())
            && stated(&self.event_type, contact.event_type())
            && stated(&self.campaign_id, contact.campaign_id())
    }
}

/// Counts of contacts in the last 24 hours, 7 days and 30 days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounts {
    pub last_24h: u64,
    pub last_7d: u64,
    pub last_30d: u64,
}

/// The longest rule window: a century (contacts are kept no longer than
/// the retention, at most that).
const MAX_WINDOW_MICROS: i64 = 36_500 * DAY;

/// The windows `WindowCounts` counts over: 24 hours, 7 days, 30 days.
const COUNT_WINDOWS: [i64; 3] = [DAY, 7 * DAY, 30 * DAY];

impl WindowCounts {
    fn add(&mut self, age: i64) {
        let [day, week, month] = COUNT_WINDOWS;
        if age < day {
            self.last_24h += 1;
        }
        if age < week {
            self.last_7d += 1;
        }
        if age < month {
            self.last_30d += 1;
        }
    }
}

/// A past contact that counts toward rules (not exempt), with the class
/// of its channel (`None` as well when no governing rule needs it).
struct Counted<'a> {
    contact: &'a Contact,
    class: Option<ChannelClass>,
}

/// A rule that governs the proposed contact, with the instants of the
/// contacts it counts, sorted.
struct RuleInstants<'a> {
    rule: &'a Rule,
    instants: Vec<Micros>,
}

impl<'a> RuleInstants<'a> {
    fn new(rule: &'a Rule, counted: &[Counted<'_>], request: &ContactRequest) -> Self {
        let mut instants: Vec<Micros> = counted
            .iter()
            .filter(|c| rule.counts(c.contact, request, c.class))
            .map(|c| c.contact.at)
            .collect();
        // Cheap: the stores read contacts oldest first.
        instants.sort_unstable();
        Self { rule, instants }
    }
}

/// Contacts counted in total and per channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactCounts {
    pub total: WindowCounts,
    pub per_channel: BTreeMap<String, WindowCounts>,
}

/// A rule one more contact would break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleViolation {
    pub rule: String,
    /// Contacts already counted in the window.
    pub count: u64,
    pub limit: u64,
    pub window_micros: i64,
}

/// The answer to "may we contact this customer now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactDecision {
    pub allowed: bool,
    pub violations: Vec<RuleViolation>,
    /// The proposed instant falls in quiet hours of the channel.
    pub quiet_hours: bool,
    /// When blocked: the first instant the contact would be allowed.
    /// `None` when a rule with `max = 0` forbids it for good.
    pub next_allowed_at: Option<Micros>,
    /// The proposed contact is exempt (transactional).
    pub exempt: bool,
    pub counts: ContactCounts,
    /// The time zone quiet hours were read in.
    pub timezone: Tz,
}

impl ContactDecision {
    /// The answer for a contact already admitted (a reservation asked for
    /// again): allowed, whatever has been counted since, with the counts
    /// and time zone of `decision`.
    pub fn admitted(decision: Self) -> Self {
        Self {
            allowed: true,
            violations: Vec::new(),
            quiet_hours: false,
            next_allowed_at: None,
            ..decision
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Scope {
    channel: Option<String>,
    channel_class: Option<ChannelClass>,
    reason: Option<String>,
    campaign: Option<String>,
    per_campaign: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    name: String,
    max: u64,
    window_micros: i64,
    scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct QuietHours {
    /// Empty: every channel.
    channels: BTreeSet<String>,
    start: NaiveTime,
    end: NaiveTime,
}

/// A loaded, checked contact policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactPolicy {
    default_timezone: Tz,
    exempt_reasons: BTreeSet<String>,
    exempt_types: BTreeSet<String>,
    rules: Vec<Rule>,
    quiet_hours: Vec<QuietHours>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default = "utc")]
    default_timezone: toml::Spanned<String>,
    #[serde(default)]
    exempt_reasons: Vec<toml::Spanned<String>>,
    #[serde(default)]
    exempt_types: Vec<toml::Spanned<String>>,
    #[serde(default)]
    rule: Vec<toml::Spanned<RuleSpec>>,
    #[serde(default)]
    quiet_hours: Vec<toml::Spanned<QuietSpec>>,
}

fn utc() -> toml::Spanned<String> {
    toml::Spanned::new(0..0, "UTC".to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    max: i64,
    window: String,
    channel: Option<String>,
    channel_class: Option<ChannelClass>,
    reason: Option<String>,
    campaign: Option<String>,
    #[serde(default)]
    per_campaign: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuietSpec {
    #[serde(default)]
    channels: BTreeSet<String>,
    start: String,
    end: String,
}

impl ContactPolicy {
    /// The built-in policy, checked against `taxonomy`.
    pub fn builtin(taxonomy: &Taxonomy) -> Result<Self, PolicyError> {
        Self::from_toml(BUILTIN_TOML, taxonomy)
    }

    /// Parses and checks a policy file's text; channels must exist in
    /// the taxonomy.
    pub fn from_toml(text: &str, taxonomy: &Taxonomy) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text)?;
        let line_of = |span: std::ops::Range<usize>| {
            let before = text.get(..span.start).unwrap_or(text);
            before.bytes().filter(|b| *b == b'\n').count() + 1
        };
        let fail = |span, reason: String| PolicyError::Rule {
            line: line_of(span),
            reason,
        };
        let default_timezone = file.default_timezone.get_ref().parse::<Tz>().map_err(|_| {
            fail(
                file.default_timezone.span(),
                format!("unknown time zone {:?}", file.default_timezone.get_ref()),
            )
        })?;
        // A name the taxonomy does not hold (in strict mode, where events
        // cannot carry it either) would make its rule or exemption never
        // apply: refused, as a misspelt channel is.
        let exempt = |names: &[toml::Spanned<String>], label: &str, kind: NameKind| {
            names
                .iter()
                .map(|name| {
                    taxonomy
                        .check_name(label, kind, name.get_ref())
                        .map_err(|e| fail(name.span(), e.to_string()))?;
                    Ok(name.get_ref().clone())
                })
                .collect::<Result<BTreeSet<String>, PolicyError>>()
        };
        let exempt_reasons = exempt(&file.exempt_reasons, "exempt_reasons", NameKind::Reason)?;
        let exempt_types = exempt(&file.exempt_types, "exempt_types", NameKind::EventType)?;
        let mut names = BTreeSet::new();
        let mut rules = Vec::with_capacity(file.rule.len());
        for spanned in &file.rule {
            let spec = spanned.get_ref();
            let fail =
                |reason: String| fail(spanned.span(), format!("rule {:?}: {reason}", spec.name));
            if spec.name.trim().is_empty() {
                return Err(fail(
                    "a rule needs a name (answers name the rule broken)".into(),
                ));
            }
            if !names.insert(spec.name.clone()) {
                return Err(fail("a rule with this name is defined twice".into()));
            }
            let max = u64::try_from(spec.max)
                .map_err(|_| fail(format!("max {} is negative", spec.max)))?;
            let window = humantime::parse_duration(&spec.window)
                .map_err(|e| fail(format!("window {:?}: {e}", spec.window)))?;
            let window_micros = match i64::try_from(window.as_micros()) {
                Ok(w) if w > MAX_WINDOW_MICROS => {
                    return Err(fail(format!(
                        "window {:?} is longer than 36500 days",
                        spec.window
                    )))
                }
                Ok(w) if w > 0 => w,
                Ok(_) => return Err(fail(format!("window {:?} must be above zero", spec.window))),
                Err(_) => {
                    return Err(fail(format!(
                        "window {:?} is longer than 36500 days",
                        spec.window
                    )))
                }
            };
            if let Some(channel) = &spec.channel {
                if !taxonomy.has_channel(channel) {
                    return Err(fail(format!("unknown channel {channel:?}")));
                }
                // Both given, they must agree, or the rule never applies.
                if let Some(class) = spec.channel_class {
                    if taxonomy.channel_class(channel) != Some(class) {
                        return Err(fail(format!(
                            "channel {channel:?} is not of channel_class {:?}",
                            class.as_str()
                        )));
                    }
                }
            }
            if let Some(reason) = &spec.reason {
                if let Err(e) = taxonomy.check_name("reason", NameKind::Reason, reason) {
                    return Err(fail(e.to_string()));
                }
            }
            if spec.campaign.is_some() && spec.per_campaign {
                return Err(fail("campaign and per_campaign exclude each other".into()));
            }
            rules.push(Rule {
                name: spec.name.clone(),
                max,
                window_micros,
                scope: Scope {
                    channel: spec.channel.clone(),
                    channel_class: spec.channel_class,
                    reason: spec.reason.clone(),
                    campaign: spec.campaign.clone(),
                    per_campaign: spec.per_campaign,
                },
            });
        }
        let mut quiet_hours = Vec::with_capacity(file.quiet_hours.len());
        for spanned in &file.quiet_hours {
            let spec = spanned.get_ref();
            let fail = |reason: String| fail(spanned.span(), format!("quiet hours: {reason}"));
            let time = |s: &str| {
                NaiveTime::parse_from_str(s, "%H:%M")
                    .map_err(|_| fail(format!("{s:?} is not HH:MM")))
            };
            let (start, end) = (time(&spec.start)?, time(&spec.end)?);
            if start == end {
                return Err(fail("start and end are equal".into()));
            }
            if let Some(channel) = spec.channels.iter().find(|c| !taxonomy.has_channel(c)) {
                return Err(fail(format!("unknown channel {channel:?}")));
            }
            quiet_hours.push(QuietHours {
                channels: spec.channels.clone(),
                start,
                end,
            });
        }
        Ok(Self {
            default_timezone,
            exempt_reasons,
            exempt_types,
            rules,
            quiet_hours,
        })
    }

    /// How far back a decision looks: the longest rule window, and at
    /// least the 30 days the counts report.
    pub fn lookback_micros(&self) -> i64 {
        self.rules
            .iter()
            .map(|r| r.window_micros)
            .max()
            .unwrap_or(0)
            .max(COUNT_WINDOWS[2])
    }

    pub fn is_exempt(&self, reason: &str, event_type: &str) -> bool {
        self.exempt_reasons.contains(reason) || self.exempt_types.contains(event_type)
    }

    /// Non-exempt contacts before or at `at`, counted in the last 24 h,
    /// 7 d and 30 d (windows exclusive of their start).
    pub fn counts(&self, contacts: &[Contact], at: Micros) -> ContactCounts {
        Self::count(contacts.iter().filter(|c| self.counts_at(c, at)), at)
    }

    /// The first instant after `at` at which `counts(contacts, ·)` may
    /// answer differently from at `at`: a contact's own instant (it starts
    /// to count) or the end of one of its windows, the counts' own or one
    /// of `also` (e.g. how long the caller keeps a contact in view).
    /// `Micros(i64::MAX)` when nothing is left to change.
    pub fn counts_change_after(contacts: &[Contact], at: Micros, also: &[i64]) -> Micros {
        contacts
            .iter()
            .flat_map(|c| {
                std::iter::once(0)
                    .chain(COUNT_WINDOWS)
                    .chain(also.iter().copied())
                    .map(move |w| c.at.0.saturating_add(w))
            })
            .filter(|&t| t > at.0)
            .min()
            .map_or(Micros(i64::MAX), Micros)
    }

    /// `contacts` (non-exempt, at or before `at`) counted per window.
    fn count<'a>(contacts: impl Iterator<Item = &'a Contact>, at: Micros) -> ContactCounts {
        let mut counts = ContactCounts::default();
        for c in contacts {
            let age = at.0 - c.at.0;
            counts.total.add(age);
            // Looked up first: the channel's name is allocated once.
            match counts.per_channel.get_mut(c.channel()) {
                Some(window) => window.add(age),
                None => {
                    let mut window = WindowCounts::default();
                    window.add(age);
                    counts.per_channel.insert(String::from(c.channel()), window);
                }
            }
        }
        counts
    }

    /// Whether a proposed contact fits the policy, and if not, why and
    /// when it would. `timezone` is the customer's, if known.
    pub fn decide(
        &self,
        taxonomy: &Taxonomy,
        contacts: &[Contact],
        request: &ContactRequest,
        timezone: Option<&str>,
    ) -> ContactDecision {
        let tz = timezone
            .and_then(|name| name.parse::<Tz>().ok())
            .unwrap_or(self.default_timezone);
        let exempt = self.is_exempt(&request.reason, &request.event_type);
        if exempt {
            return ContactDecision {
                allowed: true,
                violations: Vec::new(),
                quiet_hours: false,
                next_allowed_at: None,
                exempt,
                counts: self.counts(contacts, request.at),
                timezone: tz,
            };
        }
        let request_class = taxonomy.channel_class(&request.channel);
        let governing: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| r.applies_to(request, request_class))
            .collect();
        // Exemption and channel class are the same for every rule, every
        // instant tried and the counts: settled once per contact, not per
        // rule and step (a blocked check tries several instants). The
        // class is looked up only when a governing rule is scoped by it
        // (the built-in policy has none): a lookup per contact otherwise
        // cost a tenth of the decision.
        let needs_class = governing.iter().any(|r| r.scope.channel_class.is_some());
        let counted: Vec<Counted<'_>> = contacts
            .iter()
            .filter(|c| !self.is_exempt(c.reason(), c.event_type()))
            .map(|c| Counted {
                contact: c,
                class: needs_class
                    .then(|| taxonomy.channel_class(c.channel()))
                    .flatten(),
            })
            .collect();
        let at = request.at;
        let counts = Self::count(counted.iter().map(|c| c.contact).filter(|c| c.at <= at), at);
        // Which contacts a rule counts does not depend on the instant
        // tried: settled once per rule, as sorted instants that each
        // instant tried then cuts a window from.
        let rules: Vec<RuleInstants<'_>> = governing
            .into_iter()
            .map(|rule| RuleInstants::new(rule, &counted, request))
            .collect();
        let violations = Self::violations(&rules, request.at);
        let quiet = self.quiet_end(&request.channel, request.at, tz);
        let allowed = violations.is_empty() && quiet.is_none();
        let next_allowed_at = if allowed {
            None
        } else {
            self.next_allowed(&rules, request, tz)
        };
        ContactDecision {
            allowed,
            violations: violations.into_iter().map(|(v, _)| v).collect(),
            quiet_hours: quiet.is_some(),
            next_allowed_at,
            exempt,
            counts,
            timezone: tz,
        }
    }

    /// A contact counts at `at` when it happened by then and is not exempt.
    fn counts_at(&self, contact: &Contact, at: Micros) -> bool {
        contact.at <= at && !self.is_exempt(contact.reason(), contact.event_type())
    }

    /// The rules one more contact at `at` would break, each with the
    /// instant it stops being broken (`None` for a rule with `max = 0`).
    fn violations(rules: &[RuleInstants<'_>], at: Micros) -> Vec<(RuleViolation, Option<Micros>)> {
        let mut broken = Vec::new();
        for RuleInstants { rule, instants } in rules {
            // A window ending at `at` counts the contacts before it; one
            // starting at `at` counts those already recorded after it
            // (reservations of other engines, scheduled sends). Counting
            // both keeps every window that would hold the new contact
            // within the cap.
            let since = at.0.saturating_sub(rule.window_micros);
            let until = at.0.saturating_add(rule.window_micros);
            let first = instants.partition_point(|t| t.0 <= since);
            let last = instants.partition_point(|t| t.0 < until);
            // Windows are positive (checked at load), so `first <= last`.
            let inside = instants.get(first..last).unwrap_or_default();
            let count = inside.len() as u64;
            if count < rule.max {
                continue;
            }
            // One more fits once `count - max + 1` of them have left the
            // window: the oldest of those leaves last, one window after it
            // happened.
            let release = usize::try_from(count - rule.max)
                .ok()
                .and_then(|k| inside.get(k))
                .map(|t| t.saturating_add_micros(rule.window_micros));
            broken.push((
                RuleViolation {
                    rule: rule.name.clone(),
                    count,
                    limit: rule.max,
                    window_micros: rule.window_micros,
                },
                release,
            ));
        }
        broken
    }

    /// The first instant from `request.at` at which no rule is broken and
    /// no quiet hours apply.
    fn next_allowed(
        &self,
        rules: &[RuleInstants<'_>],
        request: &ContactRequest,
        tz: Tz,
    ) -> Option<Micros> {
        let mut at = request.at;
        // Each step past a release lets a contact leave a window (contacts
        // after `at`, which a check of a past instant may count, can enter
        // one as `at` moves), and leaves quiet hours: the steps are bounded
        // by the contacts counted, and an instant not settled within them
        // is not answered rather than guessed.
        let contacts: usize = rules.iter().map(|r| r.instants.len()).sum();
        for _ in 0..contacts.saturating_mul(2).saturating_add(16) {
            let broken = Self::violations(rules, at);
            let mut next = at;
            for (_, release) in &broken {
                next = next.max((*release)?);
            }
            // Quiet hours that overlap end one inside the next: out of
            // them all, once per step.
            for _ in 0..=self.quiet_hours.len() {
                match self.quiet_end(&request.channel, next, tz) {
                    Some(end) if end > next => next = end,
                    _ => break,
                }
            }
            if broken.is_empty() && next == at {
                return Some(at);
            }
            at = next;
        }
        None
    }

    /// When `at` falls in quiet hours of `channel`, the instant they end.
    fn quiet_end(&self, channel: &str, at: Micros, tz: Tz) -> Option<Micros> {
        // Checked: at the calendar's ends the local time does not exist.
        let utc = at.to_datetime()?.naive_utc();
        let local = utc.checked_add_offset(tz.offset_from_utc_datetime(&utc).fix())?;
        self.quiet_hours
            .iter()
            .filter(|q| q.channels.is_empty() || q.channels.contains(channel))
            .filter_map(|q| q.end_after(local))
            .filter_map(|end| first_instant_at_or_after(tz, end, at))
            .max()
    }
}

impl Rule {
    /// Whether the rule governs the proposed contact.
    fn applies_to(&self, request: &ContactRequest, class: Option<ChannelClass>) -> bool {
        let s = &self.scope;
        s.channel.as_ref().is_none_or(|c| *c == request.channel)
            && s.channel_class.is_none_or(|c| Some(c) == class)
            && s.reason.as_ref().is_none_or(|r| *r == request.reason)
            && s.campaign
                .as_ref()
                .is_none_or(|c| *c == request.campaign_id)
            && (!s.per_campaign || !request.campaign_id.is_empty())
    }

    /// Whether a past contact counts toward the rule for this request.
    fn counts(
        &self,
        contact: &Contact,
        request: &ContactRequest,
        class: Option<ChannelClass>,
    ) -> bool {
        let s = &self.scope;
        s.channel.as_ref().is_none_or(|c| c == contact.channel())
            && s.channel_class.is_none_or(|c| Some(c) == class)
            && s.reason.as_ref().is_none_or(|r| r == contact.reason())
            && s.campaign
                .as_ref()
                .is_none_or(|c| c == contact.campaign_id())
            && (!s.per_campaign || contact.campaign_id() == request.campaign_id)
    }
}

impl QuietHours {
    /// When `local` falls inside these quiet hours, the local end time.
    fn end_after(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        let time = local.time();
        let date = local.date();
        if self.start < self.end {
            (self.start <= time && time < self.end).then(|| date.and_time(self.end))
        } else if time >= self.start {
            // Started this evening: ends tomorrow morning (on the last
            // day a calendar holds, no tomorrow: not a quiet end).
            date.succ_opt().map(|tomorrow| tomorrow.and_time(self.end))
        } else if time < self.end {
            Some(date.and_time(self.end))
        } else {
            None
        }
    }
}

/// The first instant after `after` whose local time is `local` or later: a
/// local time skipped by a DST change maps to the end of the gap, an
/// ambiguous one (the hour a DST change repeats) to its first occurrence
/// after `after`.
fn first_instant_at_or_after(tz: Tz, local: NaiveDateTime, after: Micros) -> Option<Micros> {
    let mut candidate = local;
    let utc = |t: chrono::DateTime<Tz>| Micros::from_datetime(t.with_timezone(&chrono::Utc));
    // Gaps last at most a few hours; step by minutes to the first time
    // that exists.
    for _ in 0..(24 * 60) {
        match tz.from_local_datetime(&candidate) {
            LocalResult::Single(t) => return Some(utc(t)),
            LocalResult::Ambiguous(first, second) => {
                let first = utc(first);
                return Some(if first > after { first } else { utc(second) });
            }
            LocalResult::None => {
                candidate = candidate.checked_add_signed(ChronoDuration::minutes(1))?
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

    fn policy(text: &str) -> ContactPolicy {
        ContactPolicy::from_toml(text, &Taxonomy::builtin()).expect("valid policy")
    }

    fn contact(at: i64, channel: &str, campaign: &str) -> Contact {
        contact_for(at, channel, "campaign_offer", campaign)
    }

    fn contact_for(at: i64, channel: &str, reason: &str, campaign: &str) -> Contact {
        Contact::new(
            Micros(at),
            false,
            crate::domain::ContactNames {
                event_id: &format!("e{at}"),
                channel,
                reason,
                event_type: "email_sent",
                campaign_id: campaign,
            },
        )
    }

    fn request(channel: &str, at: i64) -> ContactRequest {
        ContactRequest {
            channel: channel.into(),
            reason: "campaign_offer".into(),
            event_type: String::new(),
            campaign_id: String::new(),
            at: Micros(at),
        }
    }

    const TWO_EMAILS_A_DAY: &str = r#"
[[rule]]
name = "email-2-per-day"
channel = "email"
max = 2
window = "1d"
"#;

    #[test]
    fn counts_hold_until_the_next_change_they_name() {
        let p = policy(&format!(
            "exempt_reasons = [\"payment_receipt\"]\n{TWO_EMAILS_A_DAY}"
        ));
        let contacts = [
            contact(T0 - 40 * DAY, "email", ""),
            contact(T0 - 8 * DAY, "sms", ""),
            contact_for(T0 - 2 * DAY, "email", "payment_receipt", ""),
            contact(T0 - HOUR, "email", ""),
            contact(T0 + HOUR, "push", ""),
        ];
        let also = [45 * DAY];
        let mut boundaries: Vec<i64> = contacts
            .iter()
            .flat_map(|c| [0, DAY, 7 * DAY, 30 * DAY, 45 * DAY].map(|w| c.at.0 + w))
            .collect();
        boundaries.sort_unstable();
        let instants: Vec<i64> = boundaries
            .iter()
            .flat_map(|&b| [b - 1, b, b + 1])
            .chain([T0 - 100 * DAY, T0, T0 + 100 * DAY])
            .collect();
        for &at in &instants {
            let held = p.counts(&contacts, Micros(at));
            let until = ContactPolicy::counts_change_after(&contacts, Micros(at), &also);
            assert!(until.0 > at);
            // Every instant where anything could change, up to `until`.
            for &t in instants.iter().filter(|&&t| t > at && t < until.0) {
                assert_eq!(p.counts(&contacts, Micros(t)), held, "from {at} to {t}");
            }
            if until.0 < i64::MAX {
                assert_eq!(p.counts(&contacts, Micros(until.0 - 1)), held);
            }
        }
        // The last window of the last contact ends, and nothing is left.
        let end = ContactPolicy::counts_change_after(&contacts, Micros(T0 + 50 * DAY), &also);
        assert_eq!(end, Micros(i64::MAX));
        // A contact in the future changes the counts when it comes.
        assert_eq!(
            ContactPolicy::counts_change_after(&contacts, Micros(T0), &[]),
            Micros(T0 + HOUR)
        );
    }

    #[test]
    fn builtin_policy_loads() {
        let p = ContactPolicy::builtin(&Taxonomy::builtin()).expect("valid");
        assert_eq!(p.lookback_micros(), 30 * DAY);
        assert!(p.is_exempt("payment_receipt", "email_sent"));
    }

    #[test]
    fn window_edges_are_exact_to_the_microsecond() {
        let p = policy(TWO_EMAILS_A_DAY);
        let t = Taxonomy::builtin();
        let history = [contact(T0, "email", ""), contact(T0 + HOUR, "email", "")];
        // One microsecond before the first contact leaves the window.
        let blocked = p.decide(&t, &history, &request("email", T0 + DAY - 1), None);
        assert!(!blocked.allowed);
        assert_eq!(blocked.violations[0].count, 2);
        assert_eq!(blocked.next_allowed_at, Some(Micros(T0 + DAY)));
        // Exactly one window after it, it no longer counts.
        let allowed = p.decide(&t, &history, &request("email", T0 + DAY), None);
        assert!(allowed.allowed, "{allowed:?}");
        assert_eq!(allowed.counts.per_channel["email"].last_24h, 1);
    }

    #[test]
    fn rules_only_govern_their_scope() {
        let p = policy(TWO_EMAILS_A_DAY);
        let t = Taxonomy::builtin();
        let history = [contact(T0, "email", ""), contact(T0 + 1, "email", "")];
        assert!(
            p.decide(&t, &history, &request("sms", T0 + 2), None)
                .allowed
        );
        let history = [contact(T0, "sms", ""), contact(T0 + 1, "sms", "")];
        assert!(
            p.decide(&t, &history, &request("email", T0 + 2), None)
                .allowed
        );
    }

    #[test]
    fn a_class_rule_counts_every_channel_of_its_class() {
        let p = policy(
            r#"
[[rule]]
name = "offline-1-per-day"
channel_class = "offline"
max = 1
window = "1d"
"#,
        );
        let t = Taxonomy::builtin();
        let history = [contact(T0, "branch", ""), contact(T0 + 1, "email", "")];
        let call = p.decide(&t, &history, &request("call_center", T0 + 2), None);
        assert!(
            !call.allowed,
            "the branch visit counts for a call: {call:?}"
        );
        assert_eq!(call.violations[0].count, 1, "the email does not");
        assert_eq!(call.next_allowed_at, Some(Micros(T0 + DAY)));
        assert!(
            p.decide(&t, &history, &request("email", T0 + 2), None)
                .allowed,
            "online channels are not governed"
        );
    }

    #[test]
    fn exempt_contacts_never_count_and_are_never_blocked() {
        let p = policy(&format!(
            "exempt_reasons = [\"payment_receipt\"]\n{TWO_EMAILS_A_DAY}"
        ));
        let t = Taxonomy::builtin();
        let receipt = contact_for(T0, "email", "payment_receipt", "");
        let history = [
            receipt.clone(),
            receipt.clone(),
            contact(T0 + 1, "email", ""),
        ];
        let d = p.decide(&t, &history, &request("email", T0 + 2), None);
        assert!(d.allowed);
        assert_eq!(d.counts.total.last_24h, 1);
        let full = [contact(T0, "email", ""), contact(T0 + 1, "email", "")];
        let mut r = request("email", T0 + 2);
        r.reason = "payment_receipt".into();
        let d = p.decide(&t, &full, &r, None);
        assert!(d.allowed && d.exempt);
    }

    #[test]
    fn per_campaign_rules_count_the_same_campaign() {
        let p = policy("[[rule]]\nname = \"one-per-campaign\"\nper_campaign = true\nmax = 1\nwindow = \"30d\"\n");
        let t = Taxonomy::builtin();
        let history = [contact(T0, "email", "c41")];
        let mut r = request("sms", T0 + DAY);
        r.campaign_id = "c42".into();
        assert!(p.decide(&t, &history, &r, None).allowed);
        r.campaign_id = "c41".into();
        let d = p.decide(&t, &history, &r, None);
        assert!(!d.allowed);
        assert_eq!(d.next_allowed_at, Some(Micros(T0 + 30 * DAY)));
    }

    #[test]
    fn contacts_recorded_after_the_instant_count() {
        let p = policy(TWO_EMAILS_A_DAY);
        let t = Taxonomy::builtin();
        // Two reservations made a moment later by other engines.
        let later = [contact(T0 + 5, "email", ""), contact(T0 + 6, "email", "")];
        let d = p.decide(&t, &later, &request("email", T0), None);
        assert!(!d.allowed);
        // Free once the first of them is one window old.
        assert_eq!(d.next_allowed_at, Some(Micros(T0 + 5 + DAY)));
        // A contact one window or more after the instant does not count.
        let far = [
            contact(T0 + DAY, "email", ""),
            contact(T0 + DAY + 1, "email", ""),
        ];
        assert!(p.decide(&t, &far, &request("email", T0), None).allowed);
    }

    #[test]
    fn max_zero_forbids_with_no_next_time() {
        let p =
            policy("[[rule]]\nname = \"no-mail\"\nchannel = \"mail\"\nmax = 0\nwindow = \"1d\"\n");
        let d = p.decide(&Taxonomy::builtin(), &[], &request("mail", T0), None);
        assert!(!d.allowed);
        assert_eq!(d.next_allowed_at, None);
    }

    const QUIET: &str = r#"
default_timezone = "Europe/Paris"
[[quiet_hours]]
channels = ["call_center"]
start = "21:00"
end = "08:00"
"#;

    #[test]
    fn quiet_hours_block_until_their_end_in_the_customer_zone() {
        let p = policy(QUIET);
        let t = Taxonomy::builtin();
        // 2026-01-01T22:30:00Z is 23:30 in Paris (UTC+1).
        let at = T0 + 22 * HOUR + 30 * 60 * Micros::PER_SECOND;
        let d = p.decide(&t, &[], &request("call_center", at), None);
        assert!(!d.allowed && d.quiet_hours);
        // 08:00 Paris on 2026-01-02 is 07:00Z.
        assert_eq!(d.next_allowed_at, Some(Micros(T0 + DAY + 7 * HOUR)));
        // In New York it is 17:30: allowed.
        let d = p.decide(
            &t,
            &[],
            &request("call_center", at),
            Some("America/New_York"),
        );
        assert!(d.allowed);
        // Other channels are not quiet.
        assert!(p.decide(&t, &[], &request("email", at), None).allowed);
    }

    #[test]
    fn quiet_hours_at_the_calendar_s_last_evening_do_not_overflow() {
        let p = policy(QUIET);
        let t = Taxonomy::builtin();
        let last = chrono::NaiveDate::MAX
            .and_hms_opt(23, 0, 0)
            .expect("time")
            .and_utc();
        let d = p.decide(
            &t,
            &[],
            &request("call_center", Micros::from_datetime(last).0),
            None,
        );
        assert!(d.allowed, "no local time after the last day: {d:?}");
        // The API's last evening (protobuf's range ends with 9999) ends
        // quiet on the morning of 10000-01-01, Paris time.
        let evening = chrono::DateTime::parse_from_rfc3339("9999-12-31T22:30:00Z").expect("date");
        let d = p.decide(
            &t,
            &[],
            &request("call_center", Micros::from_datetime(evening.into()).0),
            None,
        );
        assert!(!d.allowed && d.quiet_hours);
        let morning = chrono::NaiveDate::from_ymd_opt(10_000, 1, 1)
            .and_then(|d| d.and_hms_opt(7, 0, 0))
            .expect("date")
            .and_utc();
        assert_eq!(d.next_allowed_at, Some(Micros::from_datetime(morning)));
    }

    #[test]
    fn quiet_hours_end_across_a_dst_change() {
        // Paris springs forward on 2026-03-29 at 02:00 -> 03:00.
        let p = policy("default_timezone = \"Europe/Paris\"\n[[quiet_hours]]\nstart = \"21:00\"\nend = \"08:00\"\n");
        let t = Taxonomy::builtin();
        let sat_2300_paris = Micros::from_datetime(
            chrono::DateTime::parse_from_rfc3339("2026-03-28T23:00:00+01:00")
                .expect("date")
                .into(),
        );
        let d = p.decide(&t, &[], &request("sms", sat_2300_paris.0), None);
        // 08:00 on Sunday is already summer time (UTC+2): 06:00Z.
        let expected = chrono::DateTime::parse_from_rfc3339("2026-03-29T06:00:00Z").expect("date");
        assert_eq!(
            d.next_allowed_at,
            Some(Micros::from_datetime(expected.into()))
        );
        // A quiet end inside the gap moves to the end of the gap.
        let p = policy("default_timezone = \"Europe/Paris\"\n[[quiet_hours]]\nstart = \"01:00\"\nend = \"02:30\"\n");
        let at = chrono::DateTime::parse_from_rfc3339("2026-03-29T01:30:00+01:00").expect("date");
        let d = p.decide(
            &t,
            &[],
            &request("sms", Micros::from_datetime(at.into()).0),
            None,
        );
        let gap_end =
            chrono::DateTime::parse_from_rfc3339("2026-03-29T03:00:00+02:00").expect("date");
        assert_eq!(
            d.next_allowed_at,
            Some(Micros::from_datetime(gap_end.into()))
        );
    }

    #[test]
    fn a_quiet_end_in_the_repeated_hour_comes_after_the_request() {
        // New York falls back on 2026-11-01 at 02:00 EDT -> 01:00 EST: the
        // hour from 01:00 is lived twice. A request at 01:15 EST (the
        // second time) ends its quiet hours at 01:30 EST, not at 01:30 EDT,
        // an hour before it.
        let p = policy("default_timezone = \"America/New_York\"\n[[quiet_hours]]\nstart = \"22:00\"\nend = \"01:30\"\n");
        let t = Taxonomy::builtin();
        let instant = |text: &str| {
            Micros::from_datetime(
                chrono::DateTime::parse_from_rfc3339(text)
                    .expect("date")
                    .into(),
            )
        };
        let d = p.decide(
            &t,
            &[],
            &request("sms", instant("2026-11-01T06:15:00Z").0),
            None,
        );
        assert!(d.quiet_hours);
        assert_eq!(d.next_allowed_at, Some(instant("2026-11-01T06:30:00Z")));
        // The first time through the hour: the first 01:30.
        let d = p.decide(
            &t,
            &[],
            &request("sms", instant("2026-11-01T05:15:00Z").0),
            None,
        );
        assert_eq!(d.next_allowed_at, Some(instant("2026-11-01T05:30:00Z")));
    }

    #[test]
    fn overlapping_quiet_hours_end_together() {
        // Sixteen quiet hours, each ending inside the next: the first
        // instant out of all of them is 16:05.
        let mut text = String::from("default_timezone = \"UTC\"\n");
        for k in 0..16 {
            text.push_str(&format!(
                "[[quiet_hours]]\nstart = \"{k:02}:00\"\nend = \"{:02}:05\"\n",
                k + 1
            ));
        }
        let p = policy(&text);
        let t = Taxonomy::builtin();
        let midnight = (T0 / DAY) * DAY;
        let d = p.decide(
            &t,
            &[],
            &request("sms", midnight + 10 * 60 * Micros::PER_SECOND),
            None,
        );
        assert!(d.quiet_hours);
        assert_eq!(
            d.next_allowed_at,
            Some(Micros(midnight + 16 * HOUR + 5 * 60 * Micros::PER_SECOND))
        );
    }

    #[test]
    fn next_allowed_settles_past_many_contacts_ahead() {
        // A check of a past instant counts the contacts after it too: one
        // SMS a day, sent every 25 hours for 30 days; each step frees one
        // contact and lets the next one in, 30 steps in all.
        let p = policy(
            "[[rule]]\nname = \"sms-1-per-day\"\nchannel = \"sms\"\nmax = 1\nwindow = \"1d\"\n",
        );
        let t = Taxonomy::builtin();
        let history: Vec<Contact> = (0..30)
            .map(|k| contact(T0 + k * 25 * HOUR, "sms", ""))
            .collect();
        let d = p.decide(&t, &history, &request("sms", T0), None);
        let next = d.next_allowed_at.expect("an instant");
        assert!(
            next.0 > T0 + 29 * 25 * HOUR,
            "{next:?} is among the contacts"
        );
        assert!(
            p.decide(&t, &history, &request("sms", next.0), None)
                .allowed
        );
        assert!(
            !p.decide(&t, &history, &request("sms", next.0 - 1), None)
                .allowed
        );
    }

    #[test]
    fn next_allowed_waits_for_rules_then_quiet_hours() {
        let text = format!(
            "{QUIET}{}",
            TWO_EMAILS_A_DAY.replace("email", "call_center")
        );
        let p = policy(&text);
        let t = Taxonomy::builtin();
        let minute = 60 * Micros::PER_SECOND;
        // Calls at 19:00 and 19:00:00.000001 Paris (18:00Z): the oldest
        // leaves the window at 19:00 Paris the next day, not quiet.
        let history = [
            contact(T0 + 18 * HOUR, "call_center", ""),
            contact(T0 + 18 * HOUR + 1, "call_center", ""),
        ];
        let d = p.decide(&t, &history, &request("call_center", T0 + 19 * HOUR), None);
        assert_eq!(d.next_allowed_at, Some(Micros(T0 + DAY + 18 * HOUR)));
        // Calls at 21:10 and 21:20 Paris: the rule frees at 21:10 the next
        // day, inside quiet hours, so the answer is 08:00 Paris after that.
        let night = [
            contact(T0 + 20 * HOUR + 10 * minute, "call_center", ""),
            contact(T0 + 20 * HOUR + 20 * minute, "call_center", ""),
        ];
        let d = p.decide(
            &t,
            &night,
            &request("call_center", T0 + 20 * HOUR + 30 * minute),
            None,
        );
        assert!(d.quiet_hours);
        assert_eq!(d.next_allowed_at, Some(Micros(T0 + 2 * DAY + 7 * HOUR)));
    }

    #[test]
    fn a_contact_is_the_proposal_made_when_what_it_states_agrees() {
        let asked = request("email", 0);
        let made = contact_for(1, "email", "campaign_offer", "c42");
        assert!(asked.is_made_by(&made), "unstated type and campaign");
        assert!(!request("sms", 0).is_made_by(&made), "another channel");
        let other_reason = contact_for(1, "email", "service_update", "c42");
        assert!(!asked.is_made_by(&other_reason));
        let campaign = ContactRequest {
            campaign_id: "c7".into(),
            ..request("email", 0)
        };
        assert!(!campaign.is_made_by(&made), "another campaign");
    }

    #[test]
    fn bad_files_name_the_line() {
        let t = Taxonomy::builtin();
        let cases = [
            ("[[rule]]\nname = \"a\"\nmax = -1\nwindow = \"1d\"\n", "line 1", "negative"),
            ("\n[[rule]]\nname = \"a\"\nmax = 1\nwindow = \"0s\"\n", "line 2", "above zero"),
            ("[[rule]]\nname = \"a\"\nmax = 1\nwindow = \"1d\"\nchannel = \"fax\"\n", "line 1", "unknown channel"),
            ("\n[[rule]]\nname = \"a\"\nmax = 1\nwindow = \"1d\"\nreason = \"campain_offer\"\n", "line 2", "unknown reason \"campain_offer\""),
            ("\n\nexempt_reasons = [\"payment_receipt\", \"paymnet_receipt\"]\n", "line 3", "exempt_reasons: unknown reason \"paymnet_receipt\""),
            ("exempt_types = [\"no_such_type\"]\n", "line 1", "exempt_types: unknown type \"no_such_type\""),
            ("[[rule]]\nname = \"a\"\nmax = 1\nwindow = \"soon\"\n", "line 1", "window"),
            ("[[rule]]\nname = \"a\"\nmax = 1\n", "line 1", "window"),
            ("default_timezone = \"Mars/Olympus\"\n", "line 1", "time zone"),
            ("[[quiet_hours]]\nstart = \"25:00\"\nend = \"08:00\"\n", "line 1", "HH:MM"),
            ("[[rule]]\nname = \"a\"\nmax = 1\nwindow = \"1d\"\n[[rule]]\nname = \"a\"\nmax = 1\nwindow = \"1d\"\n", "line 5", "twice"),
            ("[[rule]]\nname = \"a\"\nmax = 1\nwindow = \"1000000000d\"\n", "line 1", "longer than 36500 days"),
            ("[[rule]]\nname = \"a\"\nmax = 1\nwindow = \"36501d\"\n", "line 1", "longer than 36500 days"),
            ("[[rule]]\nname = \" \"\nmax = 1\nwindow = \"1d\"\n", "line 1", "needs a name"),
            ("[[rule]]\nname = \"a\"\nmax = 1\nwindow = \"1d\"\nchannel = \"email\"\nchannel_class = \"offline\"\n", "line 1", "not of channel_class \"offline\""),
        ];
        for (text, line, reason) in cases {
            let err = ContactPolicy::from_toml(text, &t)
                .expect_err(text)
                .to_string();
            assert!(
                err.contains(line) && err.contains(reason),
                "{text:?} -> {err}"
            );
        }
    }
}
