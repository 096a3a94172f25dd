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
}

impl From<DomainError> for Status {
    fn from(err: DomainError) -> Self {
        let message = err.to_string();
        let reason = match &err {
            DomainError::Invalid { reason, .. } => reason.clone(),
            DomainError::TooMany { .. } => message.clone(),
        };
        Status::with_error_details(
            Code::InvalidArgument,
            message,
            ErrorDetails::with_bad_request_violation(err.field(), reason),
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
                Status::not_found(err.to_string())
            }
            ApiError::Contention(_) => Status::aborted(err.to_string()),
            ApiError::Conflict(_) => Status::failed_precondition(err.to_string()),
            ApiError::NotLinked(_) => Status::not_found(err.to_string()),
        }
    }
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
