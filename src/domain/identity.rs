//! Identities: the `(type, value)` pairs that name a customer — a customer
//! id, an email, a phone number, a device or cookie id. Each type has a
//! normaliser, so the same person is found whatever way a system writes
//! the identifier: `" Ann@Example.COM "` is `ann@example.com`, and
//! `06 12 34 56 78` read in France is `+33612345678`.

use std::fmt;

use serde::Deserialize;

use super::DomainError;

/// How an identity type's values are normalised and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalizer {
    /// Trimmed; non-empty; no control characters.
    Text,
    /// Trimmed and lower-cased; must be a valid address.
    Email,
    /// E.164 (`+33612345678`); numbers without a country code are read in
    /// the default region.
    Phone,
}

/// One identity type of the taxonomy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityType {
    pub normalize: Normalizer,
    /// A profile holds at most one value of a unique type.
    #[serde(default)]
    pub unique: bool,
}

/// A normalised identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub kind: String,
    pub value: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// Longest identity value, in bytes, after normalisation.
pub const MAX_IDENTITY_BYTES: usize = 256;

/// Normalises and checks `value` as an identity of a type; `field` names
/// the value in errors. `region` is the default phone region (ISO 3166
/// alpha-2, e.g. `FR`).
pub fn normalize(
    field: &str,
    spec: IdentityType,
    value: &str,
    region: phonenumber::country::Id,
) -> Result<String, DomainError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(DomainError::invalid(field, "empty value"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(DomainError::invalid(field, "contains control characters"));
    }
    let normal = match spec.normalize {
        Normalizer::Text => trimmed.to_string(),
        Normalizer::Email => {
            let lower = trimmed.to_lowercase();
            if !email_address::EmailAddress::is_valid(&lower) {
                return Err(DomainError::invalid(
                    field,
                    format!("{trimmed:?} is not an email address"),
                ));
            }
            lower
        }
        Normalizer::Phone => {
            let number = phonenumber::parse(Some(region), trimmed)
                .ok()
                .filter(phonenumber::is_valid)
                .ok_or_else(|| {
                    DomainError::invalid(
                        field,
                        format!(
                            "{trimmed:?} is not a valid phone number (default region {region:?})"
                        ),
                    )
                })?;
            number.format().mode(phonenumber::Mode::E164).to_string()
        }
    };
    if normal.len() > MAX_IDENTITY_BYTES {
        return Err(DomainError::invalid(
            field,
            format!(
                "{} bytes, at most {MAX_IDENTITY_BYTES} are allowed",
                normal.len()
            ),
        ));
    }
    Ok(normal)
}

/// Parses a region code such as `FR` for the default phone region.
pub fn parse_region(code: &str) -> Result<phonenumber::country::Id, String> {
    code.trim()
        .to_uppercase()
        .parse()
        .map_err(|_| format!("{code:?} is not an ISO 3166 region code such as FR or US"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: IdentityType = IdentityType {
        normalize: Normalizer::Text,
        unique: false,
    };
    const EMAIL: IdentityType = IdentityType {
        normalize: Normalizer::Email,
        unique: false,
    };
    const PHONE: IdentityType = IdentityType {
        normalize: Normalizer::Phone,
        unique: false,
    };

    fn fr() -> phonenumber::country::Id {
        parse_region("fr").expect("FR")
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            normalize("v", EMAIL, "  Ann.Lee@Example.COM ", fr()).expect("valid"),
            "ann.lee@example.com"
        );
        assert_eq!(
            normalize("v", EMAIL, "not-an-email", fr())
                .expect_err("invalid")
                .field(),
            "v"
        );
    }

    #[test]
    fn phones_become_e164_whatever_their_format() {
        for written in [
            "06 12 34 56 78",
            "+33 6 12 34 56 78",
            "0033612345678",
            "+33612345678",
            "06.12.34.56.78",
        ] {
            assert_eq!(
                normalize("v", PHONE, written, fr()).expect(written),
                "+33612345678",
                "{written}"
            );
        }
        let us = parse_region("US").expect("US");
        assert_eq!(
            normalize("v", PHONE, "(415) 555-2671", us).expect("valid"),
            "+14155552671"
        );
        assert!(normalize("v", PHONE, "12", fr()).is_err());
        assert!(normalize("v", PHONE, "call me", fr()).is_err());
    }

    #[test]
    fn text_is_trimmed_and_checked() {
        assert_eq!(normalize("v", TEXT, " abc ", fr()).expect("valid"), "abc");
        assert!(normalize("v", TEXT, "   ", fr()).is_err());
        assert!(normalize("v", TEXT, "a\u{0}b", fr()).is_err());
        assert!(normalize("v", TEXT, &"x".repeat(257), fr()).is_err());
    }

    #[test]
    fn bad_regions_are_refused() {
        assert!(parse_region("Atlantis").is_err());
    }
}
