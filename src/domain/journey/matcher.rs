//! Which events a journey step (or an abandon rule) matches: conditions on
//! type, reason, channel, channel class, initiator and attributes, all of
//! which must hold. Checked against the taxonomy at load time, so a
//! condition that can never hold is an error, not a silent dead step.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use toml::Spanned;

use super::facts::EventFacts;
use crate::domain::{taxonomy::NameKind, ChannelClass, DomainError, Initiator, Taxonomy};

/// A condition on one attribute of the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeCondition {
    /// The attribute is present and equal to this value.
    Equals(String),
    /// The attribute is present and one of these values.
    OneOf(BTreeSet<String>),
}

impl AttributeCondition {
    fn holds(&self, value: Option<&String>) -> bool {
        match (self, value) {
            (Self::Equals(expected), Some(value)) => expected == value,
            (Self::OneOf(allowed), Some(value)) => allowed.contains(value),
            (_, None) => false,
        }
    }
}

/// Conditions an event must all meet; an empty set of names means "any".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventMatcher {
    pub event_types: BTreeSet<String>,
    pub reasons: BTreeSet<String>,
    pub channels: BTreeSet<String>,
    pub channel_class: Option<ChannelClass>,
    pub initiator: Option<Initiator>,
    pub attributes: BTreeMap<String, AttributeCondition>,
}

impl EventMatcher {
    pub fn matches(&self, event: &EventFacts) -> bool {
        let named = |names: &BTreeSet<String>, name: &str| names.is_empty() || names.contains(name);
        named(&self.event_types, &event.event_type)
            && named(&self.reasons, &event.reason)
            && named(&self.channels, &event.channel)
            && self
                .channel_class
                .is_none_or(|class| event.channel_class == Some(class))
            && self.initiator.is_none_or(|who| event.initiator == who)
            && self
                .attributes
                .iter()
                .all(|(key, condition)| condition.holds(event.attributes.get(key)))
    }
}

impl EventMatcher {
    /// Whether every event `other` matches, this one matches too (a sure
    /// answer only when the conditions show it; `false` when unsure).
    pub fn covers(&self, other: &EventMatcher, taxonomy: &Taxonomy) -> bool {
        // Any name, or a list holding all of the other's (a non-empty one).
        let names = |mine: &BTreeSet<String>, theirs: &BTreeSet<String>| {
            mine.is_empty() || (!theirs.is_empty() && theirs.is_subset(mine))
        };
        let class = self.channel_class.is_none_or(|class| {
            other.channel_class == Some(class)
                || (!other.channels.is_empty()
                    && other
                        .channels
                        .iter()
                        .all(|c| taxonomy.channel_class(c) == Some(class)))
        });
        let attributes = self.attributes.iter().all(|(key, mine)| {
            let allowed = |value: &String| mine.holds(Some(value));
            match other.attributes.get(key) {
                Some(AttributeCondition::Equals(value)) => allowed(value),
                Some(AttributeCondition::OneOf(values)) => values.iter().all(allowed),
                None => false,
            }
        });
        names(&self.event_types, &other.event_types)
            && names(&self.reasons, &other.reasons)
            && names(&self.channels, &other.channels)
            && class
            && self
                .initiator
                .is_none_or(|who| other.initiator == Some(who))
            && attributes
    }
}

/// One name or a list of names, as a definition file may write either.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_set(self) -> BTreeSet<String> {
        match self {
            Self::One(name) => BTreeSet::from([name]),
            Self::Many(names) => names.into_iter().collect(),
        }
    }
}

/// An attribute condition as written: `"value"` or `["a", "b"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum AttributeSpec {
    Equals(String),
    OneOf(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum InitiatorName {
    Customer,
    Company,
}

impl From<InitiatorName> for Initiator {
    fn from(name: InitiatorName) -> Self {
        match name {
            InitiatorName::Customer => Initiator::Customer,
            InitiatorName::Company => Initiator::Company,
        }
    }
}

/// The matcher fields of a step or abandon table, each with its place in
/// the file so an error names the line of the offending condition.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MatcherSpec {
    /// Required on a step, optional (a label) on an abandon rule.
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<Spanned<OneOrMany>>,
    pub reason: Option<Spanned<OneOrMany>>,
    pub channel: Option<Spanned<OneOrMany>>,
    pub channel_class: Option<Spanned<ChannelClass>>,
    pub initiator: Option<Spanned<InitiatorName>>,
    pub attributes: Option<Spanned<BTreeMap<String, AttributeSpec>>>,
}

/// A condition that can never hold, or a name the taxonomy lacks, with the
/// byte span of the condition in the file.
pub(super) type SpannedError = (std::ops::Range<usize>, String);

impl MatcherSpec {
    /// Checks the conditions against `taxonomy` and builds the matcher.
    /// `fallback` is the span to blame when a condition has none of its
    /// own (the whole table).
    pub fn build(
        self,
        taxonomy: &Taxonomy,
        fallback: std::ops::Range<usize>,
    ) -> Result<EventMatcher, SpannedError> {
        if self.event_type.is_none() && self.reason.is_none() && self.channel.is_none() {
            return Err((
                fallback,
                "matches every event: give at least a type, reason or channel".into(),
            ));
        }
        let event_types = names(self.event_type, taxonomy, NameKind::EventType)?;
        let reasons = names(self.reason, taxonomy, NameKind::Reason)?;
        let channels = names(self.channel, taxonomy, NameKind::Channel)?;
        let channel_class = self.channel_class.map(|spanned| {
            let span = spanned.span();
            (spanned.into_inner(), span)
        });
        if let Some((class, span)) = &channel_class {
            for channel in &channels.0 {
                if let Some(actual) = taxonomy.channel_class(channel) {
                    if actual != *class {
                        return Err((
                            span.clone(),
                            format!(
                                "channel {channel:?} is {}, so channel_class {} never matches it",
                                actual.as_str(),
                                class.as_str()
                            ),
                        ));
                    }
                }
            }
        }
        let initiator = self.initiator.map(|spanned| {
            let span = spanned.span();
            (Initiator::from(spanned.into_inner()), span)
        });
        if let Some((who, span)) = &initiator {
            for reason in &reasons.0 {
                if !reason_allows(taxonomy, reason, *who) {
                    return Err((
                        span.clone(),
                        format!("reason {reason:?} is never started by the {who}, so this never matches"),
                    ));
                }
            }
        }
        let (attributes_span, specs) = match self.attributes {
            Some(spanned) => (spanned.span(), spanned.into_inner()),
            None => (fallback, BTreeMap::new()),
        };
        let mut attributes = BTreeMap::new();
        for (key, spec) in specs {
            let condition = match spec {
                AttributeSpec::Equals(value) => AttributeCondition::Equals(value),
                AttributeSpec::OneOf(values) if values.is_empty() => {
                    return Err((
                        attributes_span.clone(),
                        format!("attribute {key:?} has an empty list, so it never matches"),
                    ))
                }
                AttributeSpec::OneOf(values) => {
                    AttributeCondition::OneOf(values.into_iter().collect())
                }
            };
            attributes.insert(key, condition);
        }
        Ok(EventMatcher {
            event_types: event_types.0,
            reasons: reasons.0,
            channels: channels.0,
            channel_class: channel_class.map(|(class, _)| class),
            initiator: initiator.map(|(who, _)| who),
            attributes,
        })
    }
}

/// The set of names of one condition, each checked against the taxonomy
/// (strict mode refuses unknown names; lenient mode lets them through, as
/// it does for events), with the condition's span.
fn names(
    spec: Option<Spanned<OneOrMany>>,
    taxonomy: &Taxonomy,
    kind: NameKind,
) -> Result<(BTreeSet<String>, std::ops::Range<usize>), SpannedError> {
    let Some(spanned) = spec else {
        return Ok((BTreeSet::new(), 0..0));
    };
    let span = spanned.span();
    let names = spanned.into_inner().into_set();
    if names.is_empty() {
        return Err((span, "an empty list never matches".into()));
    }
    for name in &names {
        taxonomy
            .check_name("", kind, name)
            .map_err(|err| (span.clone(), reason_of(err)))?;
    }
    Ok((names, span))
}

/// The message of a taxonomy error without its (empty) field path.
fn reason_of(err: DomainError) -> String {
    match err {
        DomainError::Invalid { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Whether the taxonomy lets `who` start an interaction for `reason`.
/// A reason outside the taxonomy (lenient mode) allows anyone.
///
/// The taxonomy exposes this rule only through `Taxonomy::check`, so this
/// asks it about a probe event: a known channel, the reason, `who`, and an
/// event type no taxonomy holds. Only an error on the `initiator` field
/// means the reason excludes `who`; a unit test pins this behaviour.
pub(super) fn reason_allows(taxonomy: &Taxonomy, reason: &str, who: Initiator) -> bool {
    let Some((channel, _)) = taxonomy.channels().next() else {
        return true;
    };
    let probe_type = "\u{1}journey-probe";
    match taxonomy.check(channel, reason, probe_type, Some(who), &BTreeMap::new()) {
        Err(err) => err.field() != "initiator",
        Ok(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Micros;

    fn facts(
        channel: &str,
        reason: &str,
        event_type: &str,
        attrs: &[(&str, &str)],
    ) -> EventFacts<'static> {
        let taxonomy = Taxonomy::builtin();
        EventFacts {
            event_id: "e".into(),
            at: Micros(0),
            event_type: event_type.to_string().into(),
            reason: reason.to_string().into(),
            channel: channel.to_string().into(),
            channel_class: taxonomy.channel_class(channel),
            initiator: Initiator::Customer,
            attributes: std::borrow::Cow::Owned(
                attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
        }
    }

    #[test]
    fn every_condition_must_hold() {
        let matcher = EventMatcher {
            event_types: BTreeSet::from(["form_step".to_string()]),
            channel_class: Some(ChannelClass::Online),
            initiator: Some(Initiator::Customer),
            attributes: BTreeMap::from([
                ("form".to_string(), AttributeCondition::Equals("kyc".into())),
                (
                    "action".to_string(),
                    AttributeCondition::OneOf(BTreeSet::from(["confirm".into(), "modify".into()])),
                ),
            ]),
            ..EventMatcher::default()
        };
        let ok = [("form", "kyc"), ("action", "modify")];
        assert!(matcher.matches(&facts("web", "x", "form_step", &ok)));
        assert!(!matcher.matches(&facts("branch", "x", "form_step", &ok)));
        assert!(!matcher.matches(&facts("web", "x", "login", &ok)));
        assert!(!matcher.matches(&facts("web", "x", "form_step", &[("form", "kyc")])));
        assert!(!matcher.matches(&facts(
            "web",
            "x",
            "form_step",
            &[("form", "kyc"), ("action", "cancel")]
        )));
    }

    #[test]
    fn the_initiator_probe_reads_the_taxonomy_rule() {
        let t = Taxonomy::builtin();
        assert!(!reason_allows(&t, "campaign_offer", Initiator::Customer));
        assert!(reason_allows(&t, "campaign_offer", Initiator::Company));
        assert!(reason_allows(
            &t,
            "personal_data_verification",
            Initiator::Customer
        ));
        assert!(reason_allows(
            &t,
            "personal_data_verification",
            Initiator::Company
        ));
        assert!(!reason_allows(&t, "check_accounts", Initiator::Company));
    }
}
