//! Errors of the storage layer.

use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum StorageError {
    /// The backend cannot be reached or failed to answer.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend did not answer in time.
    #[error("store timed out: {0}")]
    Timeout(String),
    /// The store holds as much as it is allowed to.
    #[error("store full: {0}")]
    Full(String),
    /// Concurrent writers kept changing what the operation depends on;
    /// retrying later may succeed.
    #[error("contention: {0}")]
    Contention(String),
    /// Stored data that does not decode: a bug or a foreign writer.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}
