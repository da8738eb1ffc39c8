//! CPU spent during a phase of `direct` (and its no-op baseline): by the
//! depot driven (self-contained: its process is a child of the run), by
//! this load test, and how idle the machine was — whether a rate was bound
//! by the depot, by the load generator beside it, or by neither.

use serde::Serialize;

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`, as the kernel
/// tells this process).
pub fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// CPU spent during a phase, per call.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseCpu {
    /// The depot's CPU per call, µs (when its process is known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depot_us_per_call: Option<f64>,
    /// This process's CPU per call, µs (the load generator's).
    pub loadtest_us_per_call: f64,
    /// Share of the machine's CPU time idle during the phase, %.
    pub machine_idle_percent: f64,
}

/// CPU times at one moment, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    depot: Option<u64>,
    own: u64,
    idle: u64,
    total: u64,
}

impl Sample {
    /// The CPU times now of `depot` (a process id, if known), of this
    /// process and of the machine; `None` where `/proc` cannot tell.
    pub fn take(depot: Option<u32>) -> Option<Self> {
        let (idle, total) = machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?;
        Some(Self {
            depot: depot.and_then(process_ticks),
            own: process_ticks(std::process::id())?,
            idle,
            total,
        })
    }

    /// What was spent from `self` to `later`, over `calls` calls.
    pub fn until(&self, later: &Self, calls: u64) -> PhaseCpu {
        let hz = ticks_per_second();
        let per_call = |ticks: u64| ticks as f64 / hz * 1e6 / calls.max(1) as f64;
        let total = later.total.saturating_sub(self.total);
        PhaseCpu {
            depot_us_per_call: self
                .depot
                .zip(later.depot)
                .map(|(a, b)| per_call(b.saturating_sub(a))),
            loadtest_us_per_call: per_call(later.own.saturating_sub(self.own)),
            machine_idle_percent: match total {
                0 => 0.0,
                t => later.idle.saturating_sub(self.idle) as f64 * 100.0 / t as f64,
            },
        }
    }
}

/// User and system time of process `pid` so far, in clock ticks (see
/// [`ticks_per_second`]); `None` once it is gone.
pub fn process_ticks(pid: u32) -> Option<u64> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// User and system time of the `/proc/<pid>/stat` at `path`, in clock ticks.
fn stat_ticks(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields count from
    // after its last `)`; utime and stime are the stat's 14th and 15th.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's idle (idle and iowait) and total CPU time of `/proc/stat`'s
/// first line, in clock ticks (guest time is counted in user time already).
fn machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((idle, ticks.iter().sum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_line_counts_idle_and_iowait_of_user_to_steal() {
        let stat = "cpu  100 5 50 800 20 1 2 3 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(machine_ticks(stat), Some((820, 981)));
        assert_eq!(machine_ticks("intr 1 2 3"), None);
    }

    #[test]
    fn a_process_spends_what_its_stat_says_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stat");
        // 14th and 15th fields: utime 250, stime 40; a name with ") (".
        let fields = "S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 7 0";
        std::fs::write(&path, format!("4242 (a) (b c) {fields}\n")).unwrap();
        assert_eq!(stat_ticks(path.to_str().unwrap()), Some(290));
        // Work is counted: spinning moves this process's own time.
        let me = std::process::id();
        let own = process_ticks(me).unwrap();
        let spin = std::time::Instant::now();
        while process_ticks(me).unwrap() == own {
            assert!(
                spin.elapsed() < std::time::Duration::from_secs(10),
                "no time counted"
            );
        }
    }

    #[test]
    fn a_phase_is_per_call_and_idle_is_a_share() {
        let a = Sample {
            depot: Some(100),
            own: 10,
            idle: 1_000,
            total: 2_000,
        };
        let b = Sample {
            depot: Some(164),
            own: 30,
            idle: 1_021,
            total: 2_100,
        };
        let cpu = a.until(&b, 10_000);
        // 64 ticks over 10,000 calls.
        let us = |ticks: f64| ticks / ticks_per_second() * 1e6 / 10_000.0;
        assert_eq!(cpu.depot_us_per_call, Some(us(64.0)));
        assert_eq!(cpu.loadtest_us_per_call, us(20.0));
        assert_eq!(cpu.machine_idle_percent, 21.0);
        assert!(Sample::take(Some(std::process::id())).is_some());
    }
}
