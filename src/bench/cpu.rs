//! CPU time of the processes a load runs against (`crate::procstat`),
//! read before and after the measured window to get CPU per RPC of the
//! load generator itself and of the server and Redis it drives.

use super::error::BenchError;
pub use crate::procstat::{ticks_per_second, Process};

/// User plus system CPU time of `process` so far, in clock ticks.
pub fn cpu_ticks(process: Process) -> Result<u64, BenchError> {
    process.cpu_ticks().map_err(|reason| BenchError::Cpu {
        pid: process.label(),
        reason,
    })
}

/// Resident memory of the process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    Process::Pid(pid)
        .rss_kib()
        .map_err(|reason| BenchError::Cpu {
            pid: pid.to_string(),
            reason,
        })
}
