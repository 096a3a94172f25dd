//! Errors of the domain: input that breaks a rule, named by field.

use thiserror::Error;

/// A rule of the domain that an input breaks. Every variant names the field
/// (a path such as `event.channel`) so the client can tell what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// A field's value is not acceptable.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// More items in one request than the configured limit allows.
    #[error("{field}: {got} items, at most {max} are allowed in one request")]
    TooMany {
        field: String,
        got: usize,
        max: usize,
    },
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error with its field path placed under `parent`, so a rule
    /// checked on an event reads `events[3].channel` in a batch.
    pub fn within(self, parent: &str) -> Self {
        let join = |field: String| {
            if field.is_empty() {
                parent.to_string()
            } else {
                format!("{parent}.{field}")
            }
        };
        match self {
            Self::Invalid { field, reason } => Self::Invalid {
                field: join(field),
                reason,
            },
            Self::TooMany { field, got, max } => Self::TooMany {
                field: join(field),
                got,
                max,
            },
        }
    }

    /// The field path the error is about.
    pub fn field(&self) -> &str {
        match self {
            Self::Invalid { field, .. } | Self::TooMany { field, .. } => field,
        }
    }
}
