//! CPU time of processes, from `/proc/PID/stat` (Linux): user plus system
//! time, read before and after the measured window to get CPU per RPC of
//! the load generator itself and of the server and Redis it drives.

use super::error::BenchError;

/// Which process to read: this one or another by pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    Myself,
    Pid(u32),
}

impl Process {
    fn stat_path(self) -> String {
        match self {
            Self::Myself => "/proc/self/stat".to_string(),
            Self::Pid(pid) => format!("/proc/{pid}/stat"),
        }
    }

    fn label(self) -> String {
        match self {
            Self::Myself => "self".to_string(),
            Self::Pid(pid) => pid.to_string(),
        }
    }

    /// The command name (`comm`), for the report; `None` when unreadable.
    pub fn name(self) -> Option<String> {
        let path = self.stat_path().replace("/stat", "/comm");
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// User plus system CPU time so far, in clock ticks.
    pub fn cpu_ticks(self) -> Result<u64, BenchError> {
        let fail = |reason: String| BenchError::Cpu {
            pid: self.label(),
            reason,
        };
        let stat = std::fs::read_to_string(self.stat_path()).map_err(|e| fail(e.to_string()))?;
        parse_stat_ticks(&stat).ok_or_else(|| fail("unexpected /proc stat format".into()))
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
    fn reads_its_own_cpu_time() {
        assert!(Process::Myself.cpu_ticks().is_ok());
        assert!(ticks_per_second() > 0.0);
    }
}
