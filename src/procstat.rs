//! A process's CPU time, time waiting for a CPU, resident memory and open
//! files, read from `/proc` (Linux): for the load generator's CPU and
//! run-queue wait per RPC of the processes it drives, and for the metrics
//! endpoint's process figures. Elsewhere every read fails with the reason.

use std::collections::BTreeMap;

/// Which process to read: this one or another by pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    Myself,
    Pid(u32),
}

impl Process {
    fn path(self, file: &str) -> String {
        match self {
            Self::Myself => format!("/proc/self/{file}"),
            Self::Pid(pid) => format!("/proc/{pid}/{file}"),
        }
    }

    /// How the process is named in errors: `self` or its pid.
    pub fn label(self) -> String {
        match self {
            Self::Myself => "self".to_string(),
            Self::Pid(pid) => pid.to_string(),
        }
    }

    /// The command name (`comm`), for reports; `None` when unreadable.
    pub fn name(self) -> Option<String> {
        std::fs::read_to_string(self.path("comm"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// User plus system CPU time so far, in clock ticks.
    pub fn cpu_ticks(self) -> Result<u64, String> {
        let stat = std::fs::read_to_string(self.path("stat")).map_err(|e| e.to_string())?;
        parse_stat_ticks(&stat).ok_or_else(|| "unexpected /proc stat format".to_string())
    }

    /// Time each of its threads has spent runnable but waiting for a CPU
    /// (on a run queue), in nanoseconds, by thread id: the second field of
    /// each thread's `schedstat`. On 2 shared cores this is where the
    /// scheduler delays a process that has work while the others run. A
    /// thread that ended is no longer listed; the kernel needs
    /// `CONFIG_SCHED_INFO` (an error when no thread's figure reads).
    pub fn run_queue_waits_ns(self) -> Result<BTreeMap<u32, u64>, String> {
        let tasks = std::fs::read_dir(self.path("task")).map_err(|e| e.to_string())?;
        let mut waits = BTreeMap::new();
        for task in tasks {
            let task = task.map_err(|e| e.to_string())?;
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // A thread may end between the listing and the read.
            let Ok(line) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            let wait = parse_schedstat_wait(&line).ok_or("unexpected schedstat format")?;
            waits.insert(tid, wait);
        }
        if waits.is_empty() {
            return Err("no thread's schedstat could be read".to_string());
        }
        Ok(waits)
    }

    /// Resident memory (`VmRSS`), in KiB.
    pub fn rss_kib(self) -> Result<u64, String> {
        let status = std::fs::read_to_string(self.path("status")).map_err(|e| e.to_string())?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmRSS line".to_string())
    }

    /// Open file descriptors (sockets included).
    pub fn open_fds(self) -> Result<u64, String> {
        let entries = std::fs::read_dir(self.path("fd")).map_err(|e| e.to_string())?;
        Ok(entries.count() as u64)
    }
}

/// utime + stime from a `/proc/PID/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces or ')', so fields are counted
/// from the last ')': state is the first after it, utime the 12th, stime
/// the 13th (fields 14 and 15 of proc(5)).
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The run-queue wait (ns) of a `schedstat` line: time on a CPU, time
/// waiting on a run queue, time slices (sched-stats.rst).
fn parse_schedstat_wait(line: &str) -> Option<u64> {
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Clock ticks per second of the times in `/proc/PID/stat`.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant; it has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // -1 means unknown; 100 is the value on every common Linux build.
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_whose_name_has_spaces_and_parens() {
        let line = "1234 (tokio (rt) x) S 1 1234 1234 0 -1 4194560 900 0 0 0 250 37 0 0 20 0 8 0";
        assert_eq!(parse_stat_ticks(line), Some(287));
    }

    #[test]
    fn parses_a_schedstat_line() {
        assert_eq!(parse_schedstat_wait("1200 345 7\n"), Some(345));
        assert_eq!(parse_schedstat_wait("1200"), None);
        assert_eq!(parse_schedstat_wait("1200 x 7"), None);
    }

    #[test]
    fn reads_its_own_figures() {
        assert!(Process::Myself.cpu_ticks().is_ok());
        assert!(ticks_per_second() > 0.0);
        assert!(Process::Myself.rss_kib().is_ok_and(|kib| kib > 0));
        assert!(Process::Myself.open_fds().is_ok_and(|n| n >= 3));
        assert!(Process::Myself
            .run_queue_waits_ns()
            .is_ok_and(|waits| waits.contains_key(&std::process::id())));
        assert_eq!(Process::Pid(u32::MAX).rss_kib().map_err(|_| ()), Err(()));
    }
}
