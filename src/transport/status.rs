//! Every error the service answers becomes a gRPC `Status` here, and only
//! here. The matches have no wildcard arm: a new error variant does not
//! compile until someone picks its status code.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{domain::DomainError, storage::StorageError};

/// Errors a handler can end with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("no events are held for customer {0:?}")]
    UnknownCustomer(String),
    #[error("no journey is defined with the name {0:?}")]
    UnknownJourney(String),
    /// A reservation lost too many races; the client may retry.
    #[error("{0}")]
    Contention(String),
    /// A link or unlink that would break a rule of profiles.
    #[error("{0}")]
    Conflict(String),
    /// An identity that is not linked where the request says.
    #[error("{0}")]
    NotLinked(String),
    /// A reservation id the customer's profile already holds for another
    /// contact or event: the field, and why.
    #[error("{0}: {1}")]
    IdTaken(&'static str, String),
}

/// Most bytes of a message, and of a violation's reason, that a status
/// carries; a field path gets `MAX_FIELD_BYTES`. Messages may quote what
/// the client sent (an unknown name, an over-long key), and a status goes
/// out in HTTP/2 headers, the message percent-encoded (up to 3 bytes a
/// byte) and again with the details in base64: past a client's header
/// limit (16 KiB in hyper, 8 KiB in grpc-java) the call would be reset
/// and seen as UNAVAILABLE, a code clients retry.
const MAX_MESSAGE_BYTES: usize = 1024;
const MAX_FIELD_BYTES: usize = 256;

/// `text` cut to at most `max` bytes on a character boundary, marked `…`
/// when cut.
fn clip(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

impl From<DomainError> for Status {
    fn from(err: DomainError) -> Self {
        let message = clip(err.to_string(), MAX_MESSAGE_BYTES);
        let reason = match &err {
            DomainError::Invalid { reason, .. } => clip(reason.clone(), MAX_MESSAGE_BYTES),
            DomainError::TooMany { .. } => message.clone(),
        };
        Status::with_error_details(
            Code::InvalidArgument,
            message,
            ErrorDetails::with_bad_request_violation(
                clip(err.field().to_string(), MAX_FIELD_BYTES),
                reason,
            ),
        )
    }
}

impl From<StorageError> for Status {
    fn from(err: StorageError) -> Self {
        // The cause goes to the log; clients get no backend detail.
        tracing::warn!(error = %err, "store error");
        match err {
            StorageError::Unavailable(_) => Status::unavailable("the store is unavailable"),
            StorageError::Timeout(_) => {
                Status::deadline_exceeded("the store did not answer in time")
            }
            StorageError::Full(reason) => Status::resource_exhausted(reason),
            StorageError::Contention(reason) => Status::aborted(reason),
            StorageError::Corrupt(_) => Status::internal("stored data could not be read"),
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::Domain(e) => e.into(),
            ApiError::Storage(e) => e.into(),
            ApiError::UnknownCustomer(_) | ApiError::UnknownJourney(_) => {
                Status::not_found(clip(err.to_string(), MAX_MESSAGE_BYTES))
            }
            ApiError::Contention(_) => Status::aborted(clip(err.to_string(), MAX_MESSAGE_BYTES)),
            ApiError::Conflict(_) => {
                Status::failed_precondition(clip(err.to_string(), MAX_MESSAGE_BYTES))
            }
            ApiError::NotLinked(_) => Status::not_found(clip(err.to_string(), MAX_MESSAGE_BYTES)),
            ApiError::IdTaken(field, ref reason) => Status::with_error_details(
                Code::AlreadyExists,
                clip(err.to_string(), MAX_MESSAGE_BYTES),
                ErrorDetails::with_bad_request_violation(
                    field,
                    clip(reason.clone(), MAX_MESSAGE_BYTES),
                ),
            ),
        }
    }
}

/// The refusal of a request larger than its method takes, before it is
/// decoded.
pub fn request_too_large(len: usize, max: usize) -> Status {
    Status::resource_exhausted(format!(
        "the request is {len} bytes; this method takes at most {max}"
    ))
}

/// The refusal of request bytes that are not the method's message (a
/// truncated or garbled body, a string that is not UTF-8): bad input, not
/// the server's fault, so `INVALID_ARGUMENT` rather than the `INTERNAL`
/// tonic answers it with.
pub fn undecodable_request(err: &prost::DecodeError) -> Status {
    let reason = clip(format!("not a valid message: {err}"), MAX_MESSAGE_BYTES);
    Status::with_error_details(
        Code::InvalidArgument,
        format!("request: {reason}"),
        ErrorDetails::with_bad_request_violation("request", reason),
    )
}

/// The refusal of a call beyond `--max-in-flight` on its connection.
pub fn connection_overloaded(max: usize) -> Status {
    Status::resource_exhausted(format!(
        "this connection has {max} calls under way (--max-in-flight); retry later or spread calls over more connections"
    ))
}

/// The server's refusal of a call beyond `--max-in-flight-total`.
pub fn overloaded(max_in_flight: usize) -> Status {
    Status::resource_exhausted(format!(
        "the server has {max_in_flight} calls under way (--max-in-flight-total); retry later"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_text_ends_on_a_character_boundary() {
        assert_eq!(clip("short".into(), 10), "short");
        let long = "é".repeat(600); // 1,200 bytes
        let cut = clip(long, MAX_MESSAGE_BYTES);
        assert!(cut.len() <= MAX_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn a_status_quoting_a_huge_input_stays_small() {
        let status: Status = DomainError::invalid(
            format!("event.attributes.{}", "k".repeat(10_000)),
            format!("key of {} bytes", "k".repeat(10_000)),
        )
        .into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        assert!(
            status.details().len() < 4 * MAX_MESSAGE_BYTES,
            "{}",
            status.details().len()
        );
    }
}
