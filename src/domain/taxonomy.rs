//! The shared event taxonomy: which channels, reasons and event types exist,
//! how channels are classed, who may start an interaction for each reason and
//! which attributes each type expects. It is data (TOML), with a built-in
//! default in `taxonomy/default.toml`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use thiserror::Error;

use super::{
    identity::{self, Identity, IdentityType},
    DomainError, Initiator,
};

/// The taxonomy file the service uses when none is given.
pub const BUILTIN_TOML: &str = include_str!("../../taxonomy/default.toml");

/// Whether a channel is a cheap online one or a costly offline one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelClass {
    Online,
    Offline,
}

impl ChannelClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
        }
    }
}

/// How names outside the taxonomy are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TaxonomyMode {
    /// Unknown channels, reasons and types are rejected.
    #[default]
    Strict,
    /// Unknown names are accepted and counted.
    Lenient,
}

/// Which list of the taxonomy a name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Channel,
    Reason,
    EventType,
}

/// A taxonomy file that cannot be used; the message names the line or entry.
#[derive(Debug, Error)]
pub enum TaxonomyError {
    #[error("taxonomy: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("taxonomy: {0}")]
    Rule(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum InitiatorName {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ValueKind {
    String,
    Number,
    Integer,
}

/// An attribute's kind, written either `"number"` or `{ kind = "number", min = -1.0 }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum AttributeSpec {
    Kind(ValueKind),
    Bounded {
        kind: ValueKind,
        min: Option<f64>,
        max: Option<f64>,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventTypeSpec {
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, AttributeSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaxonomyFile {
    channels: BTreeMap<String, ChannelClass>,
    reasons: BTreeMap<String, Vec<InitiatorName>>,
    event_types: BTreeMap<String, EventTypeSpec>,
    /// Absent from a file: the built-in identity types.
    identity_types: Option<BTreeMap<String, IdentityType>>,
}

/// A loaded, checked taxonomy.
#[derive(Debug, Clone)]
pub struct Taxonomy {
    file: TaxonomyFile,
    mode: TaxonomyMode,
}

/// What `Taxonomy::check` settled for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The initiator, taken from the reason when the producer left it out
    /// and the reason allows only one.
    pub initiator: Initiator,
    /// Names lenient mode let through.
    pub unknown_names: u32,
}

impl Taxonomy {
    /// The built-in taxonomy, strict.
    pub fn builtin() -> Self {
        // The built-in file is part of the binary and covered by a test, so
        // failing here is a bug in this repository, not bad input.
        Self::from_toml(BUILTIN_TOML, TaxonomyMode::Strict).expect("built-in taxonomy is valid")
    }

    /// Parses and checks a taxonomy file's text.
    pub fn from_toml(text: &str, mode: TaxonomyMode) -> Result<Self, TaxonomyError> {
        let mut file: TaxonomyFile = toml::from_str(text)?;
        if file.identity_types.is_none() {
            file.identity_types = Some(builtin_identity_types());
        }
        check_file(&file)?;
        Ok(Self { file, mode })
    }

    pub fn mode(&self) -> TaxonomyMode {
        self.mode
    }

    /// The class of a channel; `None` for a channel outside the taxonomy
    /// (accepted only in lenient mode).
    pub fn channel_class(&self, channel: &str) -> Option<ChannelClass> {
        self.file.channels.get(channel).copied()
    }

    pub fn channels(&self) -> impl Iterator<Item = (&str, ChannelClass)> {
        self.file.channels.iter().map(|(n, c)| (n.as_str(), *c))
    }

    /// The identity types, by name.
    pub fn identity_types(&self) -> &BTreeMap<String, IdentityType> {
        // `from_toml` fills in the built-in types when a file has none.
        static NONE: BTreeMap<String, IdentityType> = BTreeMap::new();
        self.file.identity_types.as_ref().unwrap_or(&NONE)
    }

    /// Normalises and checks an identity; `field` is the path of the
    /// identity in the request (`identities[2]`).
    pub fn identity(
        &self,
        field: &str,
        kind: &str,
        value: &str,
        region: phonenumber::country::Id,
    ) -> Result<Identity, DomainError> {
        let spec = self.identity_types().get(kind).ok_or_else(|| {
            let names: Vec<&str> = self.identity_types().keys().map(String::as_str).collect();
            DomainError::invalid(
                format!("{field}.type"),
                format!(
                    "unknown identity type {kind:?}; allowed: {}",
                    names.join(", ")
                ),
            )
        })?;
        let value = identity::normalize(&format!("{field}.value"), *spec, value, region)?;
        Ok(Identity {
            kind: kind.to_string(),
            value,
        })
    }

    pub fn has_channel(&self, channel: &str) -> bool {
        self.file.channels.contains_key(channel)
    }

    /// Checks that a channel, reason or event type named in a query exists
    /// (in strict mode), with the same error an event would get.
    pub fn check_name(&self, field: &str, kind: NameKind, name: &str) -> Result<(), DomainError> {
        let (label, known, names): (&str, bool, Vec<&String>) = match kind {
            NameKind::Channel => (
                "channel",
                self.file.channels.contains_key(name),
                self.file.channels.keys().collect(),
            ),
            NameKind::Reason => (
                "reason",
                self.file.reasons.contains_key(name),
                self.file.reasons.keys().collect(),
            ),
            NameKind::EventType => (
                "type",
                self.file.event_types.contains_key(name),
                self.file.event_types.keys().collect(),
            ),
        };
        if known {
            return Ok(());
        }
        self.unknown(field, label, name, names.into_iter())
    }

    /// Checks an event's names, initiator and attributes against the taxonomy.
    pub fn check(
        &self,
        channel: &str,
        reason: &str,
        event_type: &str,
        initiator: Option<Initiator>,
        attributes: &BTreeMap<String, String>,
    ) -> Result<Checked, DomainError> {
        let mut unknown_names = 0;
        if !self.file.channels.contains_key(channel) {
            self.unknown("channel", "channel", channel, self.file.channels.keys())?;
            unknown_names += 1;
        }
        let initiator = match self.file.reasons.get(reason) {
            Some(allowed) => settle_initiator(reason, allowed, initiator)?,
            None => {
                self.unknown("reason", "reason", reason, self.file.reasons.keys())?;
                unknown_names += 1;
                initiator.ok_or_else(|| {
                    DomainError::invalid("initiator", "required for a reason outside the taxonomy")
                })?
            }
        };
        match self.file.event_types.get(event_type) {
            Some(spec) => check_attributes(event_type, spec, attributes)?,
            None => {
                self.unknown("type", "type", event_type, self.file.event_types.keys())?;
                unknown_names += 1;
            }
        }
        Ok(Checked {
            initiator,
            unknown_names,
        })
    }

    /// In strict mode, the error for a name outside the taxonomy, listing the
    /// allowed ones; in lenient mode, nothing.
    fn unknown<'a>(
        &self,
        field: &str,
        label: &str,
        name: &str,
        allowed: impl Iterator<Item = &'a String>,
    ) -> Result<(), DomainError> {
        match self.mode {
            TaxonomyMode::Lenient => Ok(()),
            TaxonomyMode::Strict => {
                let allowed: Vec<&str> = allowed.map(String::as_str).collect();
                Err(DomainError::invalid(
                    field,
                    format!("unknown {label} {name:?}; allowed: {}", allowed.join(", ")),
                ))
            }
        }
    }
}

fn settle_initiator(
    reason: &str,
    allowed: &[InitiatorName],
    given: Option<Initiator>,
) -> Result<Initiator, DomainError> {
    // Every append comes here: the answers that stand allocate nothing.
    let mut kinds = allowed.iter().map(|&n| Initiator::from(n));
    match (given, kinds.next()) {
        (Some(initiator), Some(first)) if first == initiator || kinds.any(|i| i == initiator) => {
            return Ok(initiator)
        }
        (None, Some(only)) if allowed.iter().all(|&n| Initiator::from(n) == only) => {
            return Ok(only)
        }
        _ => {}
    }
    let allowed: BTreeSet<Initiator> = allowed.iter().map(|&n| n.into()).collect();
    let names = || {
        allowed
            .iter()
            .map(|i| i.as_str())
            .collect::<Vec<_>>()
            .join(" or ")
    };
    match given {
        Some(initiator) if allowed.contains(&initiator) => Ok(initiator),
        Some(initiator) => Err(DomainError::invalid(
            "initiator",
            format!(
                "reason {reason:?} is started by the {}, not the {initiator}",
                names()
            ),
        )),
        None if allowed.len() == 1 => Ok(*allowed.iter().next().unwrap_or(&Initiator::Customer)),
        None => Err(DomainError::invalid(
            "initiator",
            format!(
                "required: reason {reason:?} may be started by the {}",
                names()
            ),
        )),
    }
}

fn check_attributes(
    event_type: &str,
    spec: &EventTypeSpec,
    attributes: &BTreeMap<String, String>,
) -> Result<(), DomainError> {
    for key in &spec.required {
        if !attributes.contains_key(key) {
            return Err(DomainError::invalid(
                format!("attributes.{key}"),
                format!("required for type {event_type:?}"),
            ));
        }
    }
    for (key, value) in attributes {
        if let Some(attr) = spec.attributes.get(key) {
            check_value(attr, value)
                .map_err(|reason| DomainError::invalid(format!("attributes.{key}"), reason))?;
        }
    }
    Ok(())
}

fn check_value(spec: &AttributeSpec, value: &str) -> Result<(), String> {
    let (kind, min, max) = match *spec {
        AttributeSpec::Kind(kind) => (kind, None, None),
        AttributeSpec::Bounded { kind, min, max } => (kind, min, max),
    };
    let number = match kind {
        ValueKind::String => return Ok(()),
        ValueKind::Integer => value
            .trim()
            .parse::<i64>()
            .map(|n| n as f64)
            .map_err(|_| format!("{value:?} is not an integer"))?,
        ValueKind::Number => value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(|| format!("{value:?} is not a number"))?,
    };
    if min.is_some_and(|min| number < min) || max.is_some_and(|max| number > max) {
        let low = min.map_or("-inf".to_string(), |m| m.to_string());
        let high = max.map_or("inf".to_string(), |m| m.to_string());
        return Err(format!("{value} is outside [{low}, {high}]"));
    }
    Ok(())
}

/// The identity types of the built-in taxonomy, for files that name none.
fn builtin_identity_types() -> BTreeMap<String, IdentityType> {
    // The built-in file is covered by tests; were it broken, files without
    // identity types would get none rather than a panic.
    toml::from_str::<TaxonomyFile>(BUILTIN_TOML)
        .ok()
        .and_then(|file| file.identity_types)
        .unwrap_or_default()
}

fn check_file(file: &TaxonomyFile) -> Result<(), TaxonomyError> {
    let rule = |msg: String| Err(TaxonomyError::Rule(msg));
    if file.channels.is_empty() {
        return rule("no channels defined".into());
    }
    if file.event_types.is_empty() {
        return rule("no event types defined".into());
    }
    for (reason, initiators) in &file.reasons {
        if initiators.is_empty() {
            return rule(format!("reason {reason:?} names no initiator"));
        }
    }
    for (name, spec) in &file.event_types {
        for (attr, kind) in &spec.attributes {
            if let AttributeSpec::Bounded {
                min: Some(min),
                max: Some(max),
                ..
            } = kind
            {
                if min > max {
                    return rule(format!(
                        "event type {name:?}: attribute {attr:?} has min {min} above max {max}"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn builtin_covers_the_documented_examples() {
        let t = Taxonomy::builtin();
        for channel in [
            "web",
            "mobile_app",
            "email",
            "sms",
            "chat",
            "call_center",
            "branch",
        ] {
            assert!(t.has_channel(channel), "{channel}");
        }
        assert_eq!(t.channel_class("branch"), Some(ChannelClass::Offline));
        assert_eq!(t.channel_class("web"), Some(ChannelClass::Online));
    }

    #[test]
    fn unknown_names_list_the_allowed_ones() {
        let t = Taxonomy::builtin();
        let err = t
            .check("webb", "check_accounts", "login", None, &attrs(&[]))
            .expect_err("unknown channel");
        assert_eq!(err.field(), "channel");
        assert!(err.to_string().contains("allowed: atm, branch"), "{err}");
    }

    #[test]
    fn lenient_mode_counts_unknown_names() {
        let t = Taxonomy::from_toml(BUILTIN_TOML, TaxonomyMode::Lenient).expect("valid");
        let checked = t
            .check(
                "kiosk",
                "browse",
                "tap",
                Some(Initiator::Customer),
                &attrs(&[]),
            )
            .expect("accepted");
        assert_eq!(checked.unknown_names, 3);
    }

    #[test]
    fn initiator_must_match_the_reason() {
        let t = Taxonomy::builtin();
        let err = t
            .check(
                "email",
                "campaign_offer",
                "email_sent",
                Some(Initiator::Customer),
                &attrs(&[]),
            )
            .expect_err("customer cannot start a campaign");
        assert_eq!(err.field(), "initiator");
        let inferred = t
            .check("email", "campaign_offer", "email_sent", None, &attrs(&[]))
            .expect("single initiator is inferred");
        assert_eq!(inferred.initiator, Initiator::Company);
        let both = t.check(
            "web",
            "personal_data_verification",
            "login",
            None,
            &attrs(&[]),
        );
        assert_eq!(both.expect_err("ambiguous").field(), "initiator");
        for who in [Initiator::Customer, Initiator::Company] {
            let given = t
                .check(
                    "web",
                    "personal_data_verification",
                    "login",
                    Some(who),
                    &attrs(&[]),
                )
                .expect("either may start it");
            assert_eq!(given.initiator, who);
        }
    }

    #[test]
    fn an_initiator_listed_twice_is_still_the_only_one() {
        use InitiatorName as N;
        let twice = [N::Customer, N::Customer];
        assert_eq!(
            settle_initiator("r", &twice, None).expect("inferred"),
            Initiator::Customer
        );
        let err = settle_initiator("r", &twice, Some(Initiator::Company)).expect_err("not allowed");
        assert_eq!(
            err.to_string(),
            settle_initiator("r", &[N::Customer], Some(Initiator::Company))
                .expect_err("not allowed")
                .to_string()
        );
        assert!(settle_initiator("r", &[], None).is_err());
        assert!(settle_initiator("r", &[], Some(Initiator::Customer)).is_err());
    }

    #[test]
    fn attribute_kinds_and_bounds() {
        let t = Taxonomy::builtin();
        let chat = |s: &str| {
            t.check(
                "chat",
                "complaint",
                "chat_message",
                None,
                &attrs(&[("sentiment", s)]),
            )
        };
        assert!(chat("-1").is_ok());
        assert!(chat("0.25").is_ok());
        assert_eq!(
            chat("1.5").expect_err("above 1").field(),
            "attributes.sentiment"
        );
        assert!(chat("NaN").is_err());
        assert!(chat("happy").is_err());
        let call = t.check(
            "call_center",
            "complaint",
            "call",
            None,
            &attrs(&[("duration_s", "1.5")]),
        );
        assert_eq!(
            call.expect_err("not an integer").field(),
            "attributes.duration_s"
        );
    }

    #[test]
    fn required_attributes() {
        let t = Taxonomy::builtin();
        let err = t
            .check("web", "check_accounts", "page_view", None, &attrs(&[]))
            .expect_err("page is required");
        assert_eq!(err.field(), "attributes.page");
    }

    #[test]
    fn identities_are_normalised_by_type() {
        let t = Taxonomy::builtin();
        let fr = identity::parse_region("FR").expect("FR");
        let phone = t
            .identity("identity", "phone", "06 12 34 56 78", fr)
            .expect("valid");
        assert_eq!(phone.value, "+33612345678");
        let err = t
            .identity("identities[1]", "fax", "1", fr)
            .expect_err("unknown type");
        assert_eq!(err.field(), "identities[1].type");
        let err = t.identity("identity", "email", "", fr).expect_err("empty");
        assert_eq!(err.field(), "identity.value");
        assert!(t.identity_types()["customer_id"].unique);
        assert!(!t.identity_types()["email"].unique);
    }

    #[test]
    fn a_file_without_identity_types_gets_the_builtin_ones() {
        let text = "[channels]\nweb='online'\n[reasons]\nx=['customer']\n[event_types.t]\n";
        let t = Taxonomy::from_toml(text, TaxonomyMode::Strict).expect("valid");
        assert!(t.identity_types().contains_key("phone"));
    }

    #[test]
    fn a_bad_file_names_its_line() {
        let err = Taxonomy::from_toml("[channels]\nweb = \"onlin\"\n", TaxonomyMode::Strict)
            .expect_err("bad class");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn impossible_bounds_are_refused() {
        let text = "[channels]\nweb='online'\n[reasons]\nx=['customer']\n[event_types.t]\nattributes = { a = { kind = 'number', min = 2.0, max = 1.0 } }\n";
        let err = Taxonomy::from_toml(text, TaxonomyMode::Strict).expect_err("min > max");
        assert!(err.to_string().contains("min 2 above max 1"), "{err}");
    }
}
