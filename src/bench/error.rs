//! Why a bench command failed. Failures of single RPCs during a run are not
//! errors of the command: they are counted by code in the report.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BenchError {
    #[error("invalid target {target:?}: {reason}")]
    Target { target: String, reason: String },
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: tonic::transport::Error,
    },
    #[error("{what} failed: {status}")]
    Rpc {
        what: &'static str,
        status: tonic::Status,
    },
    #[error("the service rejected a seeded event: {0}")]
    Rejected(String),
    #[error("invalid arguments: {0}")]
    Args(String),
    #[error("cannot read CPU time of pid {pid}: {reason}")]
    Cpu { pid: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("echo server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot start the open loop's pacer thread: {0}")]
    Pacer(std::io::Error),
    #[error("a load task stopped abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot write the report: {0}")]
    Output(#[from] serde_json::Error),
}
