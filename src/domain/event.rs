//! Interaction events: what a producer sends (`RawEvent`) and what the
//! service stores once every rule has passed (`Event`).

use std::{collections::BTreeMap, fmt};

use super::{identity::Identity, taxonomy::Taxonomy, DomainError, Micros};

/// Who started an interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Initiator {
    Customer,
    Company,
}

impl Initiator {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Company => "company",
        }
    }
}

impl fmt::Display for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Limits that keep one event, and so one customer's timeline, bounded.
#[derive(Debug, Clone)]
pub struct EventLimits {
    /// Longest event_id, customer_id or session_id, in bytes.
    pub max_id_bytes: usize,
    pub max_attributes: usize,
    pub max_attribute_key_bytes: usize,
    pub max_attribute_value_bytes: usize,
    /// Largest event: the bytes of its ids, names, attribute keys and values.
    pub max_event_bytes: usize,
    /// How far past `now` an occurred_at may lie (clock skew of producers).
    pub max_future_skew_micros: i64,
    /// Events older than this are outside retention and refused: they would
    /// be trimmed by the very write that stored them.
    pub retention_micros: i64,
    /// Most identities one event (or one link request) may carry.
    pub max_identities: usize,
    /// Region phone numbers without a country code are read in.
    pub phone_region: phonenumber::country::Id,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            max_id_bytes: 128,
            max_attributes: 64,
            max_attribute_key_bytes: 64,
            max_attribute_value_bytes: 1024,
            max_event_bytes: 16 * 1024,
            max_future_skew_micros: 5 * 60 * Micros::PER_SECOND,
            retention_micros: 90 * 86_400 * Micros::PER_SECOND,
            max_identities: 20,
            phone_region: phonenumber::country::Id::US,
        }
    }
}

/// A customer's id, checked: non-empty, bounded, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerId(String);

/// Profile ids of anonymous profiles (created for events that carry
/// identities but no customer id) start with this; customer ids may not.
pub const ANONYMOUS_PREFIX: char = '~';

impl CustomerId {
    /// Checks `value` as a customer id given in `field`.
    pub fn parse(field: &str, value: &str, limits: &EventLimits) -> Result<Self, DomainError> {
        if value.starts_with(ANONYMOUS_PREFIX) {
            return Err(DomainError::invalid(
                field,
                format!(
                    "customer ids may not start with {ANONYMOUS_PREFIX:?} (anonymous profiles do)"
                ),
            ));
        }
        Self::profile(field, value, limits)
    }

    /// Checks `value` as a profile id (a customer id or an anonymous
    /// profile's id) given in `field`.
    pub fn profile(field: &str, value: &str, limits: &EventLimits) -> Result<Self, DomainError> {
        if value.is_empty() {
            return Err(DomainError::invalid(field, "required"));
        }
        check_text(field, value, limits.max_id_bytes)?;
        Ok(Self(value.to_string()))
    }

    /// A profile id read back from a store or an identity that was
    /// checked when it came in.
    pub fn from_trusted(value: &str) -> Self {
        Self(value.to_string())
    }

    /// The id of a new anonymous profile; `unique` is a fresh ULID.
    pub fn anonymous(unique: &str) -> Self {
        Self(format!("{ANONYMOUS_PREFIX}{unique}"))
    }

    pub fn is_anonymous(&self) -> bool {
        self.0.starts_with(ANONYMOUS_PREFIX)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event's idempotency key, unique within its customer's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(String);

impl EventId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event as a producer sent it, before any rule is checked. Field paths
/// in errors are relative to the event (`channel`, `attributes.page`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawEvent {
    /// Empty only before the transport assigns an id.
    pub event_id: String,
    pub customer_id: String,
    pub session_id: String,
    pub channel: String,
    pub reason: String,
    pub event_type: String,
    /// `None` when the producer left it unspecified.
    pub initiator: Option<Initiator>,
    /// `None` when the producer sent no timestamp.
    pub occurred_at: Option<Micros>,
    pub attributes: BTreeMap<String, String>,
    /// Identities as sent: (type, value).
    pub identities: Vec<(String, String)>,
}

/// An event that passed every rule: what the stores hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: EventId,
    /// `None` for an anonymous visitor known only by its identities.
    pub customer_id: Option<CustomerId>,
    /// Other identities the event carries, normalised, without duplicates.
    pub identities: Vec<Identity>,
    /// The profile the event is stored under: its customer id, until
    /// identity resolution places it (see `is_placed`).
    pub profile: CustomerId,
    pub session_id: String,
    pub channel: String,
    pub reason: String,
    pub event_type: String,
    pub initiator: Initiator,
    pub occurred_at: Micros,
    pub attributes: BTreeMap<String, String>,
}

/// The identity type that stands for the customer id.
pub const CUSTOMER_ID_IDENTITY: &str = "customer_id";

/// The attribute that carries the customer's IANA time zone, used for
/// quiet hours of the contact policy.
pub const TIMEZONE_ATTRIBUTE: &str = "timezone";
/// The attribute that names the campaign a contact is about.
pub const CAMPAIGN_ATTRIBUTE: &str = "campaign_id";

impl Event {
    /// A company-initiated event, as the contact index keeps it.
    pub fn as_contact(&self) -> Option<super::Contact> {
        (self.initiator == Initiator::Company).then(|| {
            super::Contact::new(
                self.occurred_at,
                false,
                super::ContactNames {
                    event_id: self.event_id.as_str(),
                    channel: &self.channel,
                    reason: &self.reason,
                    event_type: &self.event_type,
                    campaign_id: self
                        .attributes
                        .get(CAMPAIGN_ATTRIBUTE)
                        .map_or("", String::as_str),
                },
            )
        })
    }

    /// Whether the event has a profile to be stored under: an anonymous
    /// event is placed by identity resolution before it is stored.
    pub fn is_placed(&self) -> bool {
        self.profile.as_str() != ANONYMOUS_PREFIX.to_string()
    }

    /// Every identity of the event, its customer id first.
    pub fn all_identities(&self) -> Vec<Identity> {
        let customer = self.customer_id.iter().map(|c| Identity {
            kind: CUSTOMER_ID_IDENTITY.to_string(),
            value: c.to_string(),
        });
        customer.chain(self.identities.iter().cloned()).collect()
    }

    /// The customer's time zone, when the event states one.
    pub fn timezone(&self) -> Option<&str> {
        self.attributes.get(TIMEZONE_ATTRIBUTE).map(String::as_str)
    }
}

/// What validation learnt besides the event itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leniency {
    /// Names unknown to the taxonomy that lenient mode let through.
    pub unknown_names: u32,
}

impl RawEvent {
    /// Checks every rule and returns the event to store. `now` is the
    /// service's clock, passed in so the rules stay testable.
    pub fn validate(
        self,
        taxonomy: &Taxonomy,
        limits: &EventLimits,
        now: Micros,
    ) -> Result<(Event, Leniency), DomainError> {
        let (customer_id, identities) = self.identities_of(taxonomy, limits)?;
        if self.event_id.is_empty() {
            return Err(DomainError::invalid("event_id", "required"));
        }
        check_text("event_id", &self.event_id, limits.max_id_bytes)?;
        check_text("session_id", &self.session_id, limits.max_id_bytes)?;
        for (field, value) in [
            ("channel", &self.channel),
            ("reason", &self.reason),
            ("type", &self.event_type),
        ] {
            if value.is_empty() {
                return Err(DomainError::invalid(field, "required"));
            }
            check_text(field, value, limits.max_id_bytes)?;
        }
        let occurred_at = self
            .occurred_at
            .ok_or_else(|| DomainError::invalid("occurred_at", "required"))?;
        let occurred_at = check_instant("occurred_at", occurred_at, limits, now)?;
        check_attribute_shapes(&self.attributes, limits)?;
        if let Some(tz) = self.attributes.get(TIMEZONE_ATTRIBUTE) {
            if tz.parse::<chrono_tz::Tz>().is_err() {
                return Err(DomainError::invalid(
                    format!("attributes.{TIMEZONE_ATTRIBUTE}"),
                    format!("{tz:?} is not an IANA time zone such as \"Europe/Paris\""),
                ));
            }
        }
        let size = self.content_bytes();
        if size > limits.max_event_bytes {
            return Err(DomainError::invalid(
                "",
                format!(
                    "event is {size} bytes, over the limit of {} bytes",
                    limits.max_event_bytes
                ),
            ));
        }
        let checked = taxonomy.check(
            &self.channel,
            &self.reason,
            &self.event_type,
            self.initiator,
            &self.attributes,
        )?;
        let profile = customer_id
            .clone()
            .unwrap_or_else(|| CustomerId(ANONYMOUS_PREFIX.to_string()));
        let event = Event {
            event_id: EventId(self.event_id),
            customer_id,
            identities,
            profile,
            session_id: self.session_id,
            channel: self.channel,
            reason: self.reason,
            event_type: self.event_type,
            initiator: checked.initiator,
            occurred_at,
            attributes: self.attributes,
        };
        Ok((
            event,
            Leniency {
                unknown_names: checked.unknown_names,
            },
        ))
    }

    /// The customer id and the other identities, checked and normalised.
    /// An identity of type `customer_id` stands for the customer id.
    fn identities_of(
        &self,
        taxonomy: &Taxonomy,
        limits: &EventLimits,
    ) -> Result<(Option<CustomerId>, Vec<Identity>), DomainError> {
        if self.identities.len() > limits.max_identities {
            return Err(DomainError::TooMany {
                field: "identities".into(),
                got: self.identities.len(),
                max: limits.max_identities,
            });
        }
        let mut customer_id = match self.customer_id.as_str() {
            "" => None,
            id => Some(CustomerId::parse("customer_id", id, limits)?),
        };
        let mut identities: Vec<Identity> = Vec::with_capacity(self.identities.len());
        for (i, (kind, value)) in self.identities.iter().enumerate() {
            let field = format!("identities[{i}]");
            let identity = taxonomy.identity(&field, kind, value, limits.phone_region)?;
            if identity.kind == CUSTOMER_ID_IDENTITY {
                let id = CustomerId::parse(&format!("{field}.value"), &identity.value, limits)?;
                match &customer_id {
                    Some(given) if *given != id => {
                        return Err(DomainError::invalid(
                            format!("{field}.value"),
                            format!("{id} differs from the event's customer_id {given}"),
                        ))
                    }
                    _ => customer_id = Some(id),
                }
                continue;
            }
            if !identities.contains(&identity) {
                identities.push(identity);
            }
        }
        if customer_id.is_none() && identities.is_empty() {
            return Err(DomainError::invalid(
                "customer_id",
                "required when the event carries no identity",
            ));
        }
        Ok((customer_id, identities))
    }

    /// The bytes the event carries: ids, names, attribute keys and values.
    fn content_bytes(&self) -> usize {
        let texts = [
            &self.event_id,
            &self.customer_id,
            &self.session_id,
            &self.channel,
            &self.reason,
            &self.event_type,
        ];
        texts.iter().map(|s| s.len()).sum::<usize>()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + self
                .identities
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// A name or id: at most `max_bytes`, no control characters (the stores
/// separate fields with them).
pub fn check_text(field: &str, value: &str, max_bytes: usize) -> Result<(), DomainError> {
    if value.len() > max_bytes {
        return Err(DomainError::invalid(
            field,
            format!("{} bytes, at most {max_bytes} are allowed", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(DomainError::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// An instant a stored event (or a reserved contact, which an event
/// replaces) may have: from 1970, not further in the future than the skew
/// allowed, not older than the retention.
pub fn check_instant(
    field: &str,
    at: Micros,
    limits: &EventLimits,
    now: Micros,
) -> Result<Micros, DomainError> {
    if at.0 < 0 {
        return Err(DomainError::invalid(field, "before 1970-01-01T00:00:00Z"));
    }
    let latest = now.saturating_add_micros(limits.max_future_skew_micros);
    if at > latest {
        return Err(DomainError::invalid(
            field,
            format!(
                "{at} is more than {}s in the future (server time {now})",
                limits.max_future_skew_micros / Micros::PER_SECOND
            ),
        ));
    }
    let oldest = now.saturating_sub_micros(limits.retention_micros);
    if at < oldest {
        return Err(DomainError::invalid(
            field,
            format!(
                "{at} is older than the retention of {} days",
                limits.retention_micros / (86_400 * Micros::PER_SECOND)
            ),
        ));
    }
    Ok(at)
}

fn check_attribute_shapes(
    attributes: &BTreeMap<String, String>,
    limits: &EventLimits,
) -> Result<(), DomainError> {
    if attributes.len() > limits.max_attributes {
        return Err(DomainError::TooMany {
            field: "attributes".into(),
            got: attributes.len(),
            max: limits.max_attributes,
        });
    }
    for (key, value) in attributes {
        if key.is_empty() {
            return Err(DomainError::invalid("attributes", "empty key"));
        }
        // Named only for an error: formatting it for every valid key was
        // a measurable part of an append.
        let field = || format!("attributes.{}", printable(key));
        if key.len() > limits.max_attribute_key_bytes {
            return Err(DomainError::invalid(
                field(),
                format!(
                    "key is {} bytes, at most {} are allowed",
                    key.len(),
                    limits.max_attribute_key_bytes
                ),
            ));
        }
        if key.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                field(),
                "key contains control characters",
            ));
        }
        if value.len() > limits.max_attribute_value_bytes {
            return Err(DomainError::invalid(
                field(),
                format!(
                    "value is {} bytes, at most {} are allowed",
                    value.len(),
                    limits.max_attribute_value_bytes
                ),
            ));
        }
    }
    Ok(())
}

/// A key as it may appear in an error message: control characters escaped.
fn printable(key: &str) -> String {
    key.escape_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Micros = Micros(1_763_800_000_000_000);

    fn raw() -> RawEvent {
        RawEvent {
            event_id: "e1".into(),
            customer_id: "c1".into(),
            channel: "web".into(),
            reason: "check_accounts".into(),
            event_type: "page_view".into(),
            initiator: Some(Initiator::Customer),
            occurred_at: Some(NOW),
            attributes: [("page".to_string(), "/accounts".to_string())].into(),
            ..RawEvent::default()
        }
    }

    fn check(raw: RawEvent) -> Result<Event, DomainError> {
        raw.validate(&Taxonomy::builtin(), &EventLimits::default(), NOW)
            .map(|(event, _)| event)
    }

    fn field_of(raw: RawEvent) -> String {
        check(raw)
            .expect_err("must be rejected")
            .field()
            .to_string()
    }

    #[test]
    fn a_good_event_passes() {
        let event = check(raw()).expect("valid");
        assert_eq!(
            event.customer_id.as_ref().map(CustomerId::as_str),
            Some("c1")
        );
        assert_eq!(event.profile.as_str(), "c1");
        assert!(event.is_placed());
        assert_eq!(event.initiator, Initiator::Customer);
    }

    #[test]
    fn missing_fields_are_named() {
        assert_eq!(
            field_of(RawEvent {
                customer_id: String::new(),
                ..raw()
            }),
            "customer_id"
        );
        assert_eq!(
            field_of(RawEvent {
                occurred_at: None,
                ..raw()
            }),
            "occurred_at"
        );
        assert_eq!(
            field_of(RawEvent {
                channel: String::new(),
                ..raw()
            }),
            "channel"
        );
    }

    #[test]
    fn ids_are_bounded_and_printable() {
        assert_eq!(
            field_of(RawEvent {
                customer_id: "x".repeat(129),
                ..raw()
            }),
            "customer_id"
        );
        assert_eq!(
            field_of(RawEvent {
                event_id: "a\nb".into(),
                ..raw()
            }),
            "event_id"
        );
        assert!(check(RawEvent {
            customer_id: "x".repeat(128),
            ..raw()
        })
        .is_ok());
    }

    #[test]
    fn time_bounds() {
        let before_1970 = RawEvent {
            occurred_at: Some(Micros(-1)),
            ..raw()
        };
        assert_eq!(field_of(before_1970), "occurred_at");
        let skew = EventLimits::default().max_future_skew_micros;
        let too_late = RawEvent {
            occurred_at: Some(NOW.saturating_add_micros(skew + 1)),
            ..raw()
        };
        assert_eq!(field_of(too_late), "occurred_at");
        let just_in = RawEvent {
            occurred_at: Some(NOW.saturating_add_micros(skew)),
            ..raw()
        };
        assert!(check(just_in).is_ok());
        let retention = EventLimits::default().retention_micros;
        let too_old = RawEvent {
            occurred_at: Some(NOW.saturating_sub_micros(retention + 1)),
            ..raw()
        };
        assert_eq!(field_of(too_old), "occurred_at");
    }

    #[test]
    fn attribute_limits() {
        let many = (0..65)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert_eq!(
            field_of(RawEvent {
                attributes: many,
                ..raw()
            }),
            "attributes"
        );
        let long_key = [("k".repeat(65), "v".to_string())].into();
        assert!(field_of(RawEvent {
            attributes: long_key,
            ..raw()
        })
        .starts_with("attributes.k"));
        let mut long_value = raw().attributes;
        long_value.insert("extra".into(), "v".repeat(1025));
        assert_eq!(
            field_of(RawEvent {
                attributes: long_value,
                ..raw()
            }),
            "attributes.extra"
        );
    }

    #[test]
    fn identities_are_normalised_and_may_replace_the_customer_id() {
        let ids = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let anonymous = RawEvent {
            customer_id: String::new(),
            identities: ids(&[
                ("cookie_id", " ck1 "),
                ("email", "Ann@X.org"),
                ("cookie_id", "ck1"),
            ]),
            ..raw()
        };
        let event = check(anonymous).expect("valid");
        assert_eq!(event.customer_id, None);
        assert!(!event.is_placed());
        let values: Vec<&str> = event.identities.iter().map(|i| i.value.as_str()).collect();
        assert_eq!(values, ["ck1", "ann@x.org"]);
        let by_identity = RawEvent {
            customer_id: String::new(),
            identities: ids(&[("customer_id", "c9")]),
            ..raw()
        };
        let event = check(by_identity).expect("valid");
        assert_eq!(event.profile.as_str(), "c9");
        assert!(event.identities.is_empty());
        let clash = RawEvent {
            identities: ids(&[("customer_id", "c9")]),
            ..raw()
        };
        assert_eq!(field_of(clash), "identities[0].value");
        let none = RawEvent {
            customer_id: String::new(),
            ..raw()
        };
        assert_eq!(field_of(none), "customer_id");
        let many = RawEvent {
            identities: (0..21)
                .map(|i| ("cookie_id".to_string(), format!("c{i}")))
                .collect(),
            ..raw()
        };
        assert_eq!(field_of(many), "identities");
        let bad = RawEvent {
            identities: ids(&[("phone", "call me")]),
            ..raw()
        };
        assert_eq!(field_of(bad), "identities[0].value");
        let reserved = RawEvent {
            customer_id: "~x".into(),
            ..raw()
        };
        assert_eq!(field_of(reserved), "customer_id");
    }

    #[test]
    fn a_timezone_attribute_must_be_a_known_zone() {
        let mut attributes = raw().attributes;
        attributes.insert("timezone".into(), "Europe/Paris".into());
        assert!(check(RawEvent {
            attributes: attributes.clone(),
            ..raw()
        })
        .is_ok());
        attributes.insert("timezone".into(), "Paris".into());
        assert_eq!(
            field_of(RawEvent {
                attributes,
                ..raw()
            }),
            "attributes.timezone"
        );
    }

    #[test]
    fn whole_event_size_is_bounded() {
        let attributes = (0..20)
            .map(|i| (format!("k{i}"), "v".repeat(1000)))
            .collect();
        let err = check(RawEvent {
            attributes,
            ..raw()
        })
        .expect_err("too big");
        assert!(
            err.to_string().contains("over the limit of 16384 bytes"),
            "{err}"
        );
    }
}
