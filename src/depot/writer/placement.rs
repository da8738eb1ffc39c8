//! Where a small round's file work and journal run: in place, on the
//! writer's own runtime thread, while such rounds stay quick; on a blocking
//! thread for a while after one did not.
//!
//! Handing a round to a blocking thread and back costs two cross-thread
//! wake-ups a round; on a two-vCPU machine under `direct` load that left a
//! fifth of the machine idle with work queued, and in place the depot wrote
//! more configs a second (docs/BENCHMARKS.md, twenty-fifth pass). A round in
//! place holds one runtime thread for its file work, which is fine while
//! that is a fraction of a millisecond (tmpfs, a healthy local disk) and not
//! when the directory stalls (a disk under writeback pressure, a network
//! file system): one slow round sends the rounds after it to a blocking
//! thread for [`PAUSE`], so a slow directory holds a runtime thread for one
//! round in that time — for as long as that round's calls take: a directory
//! that hangs holds it until they return. Hence only where the runtime has
//! another thread to serve calls meanwhile, and never for a round that must
//! reach the disk (the journal's fsync) or compact the journal. Rounds in
//! place one after another yield to the runtime's other tasks after
//! [`SLOW`] of file work.

use std::time::{Duration, Instant};

/// A round in place taking longer than this sends the rounds after it to a
/// blocking thread; rounds in place yield after this much file work.
pub const SLOW: Duration = Duration::from_millis(5);

/// How long rounds go to a blocking thread after a slow one in place.
pub const PAUSE: Duration = Duration::from_secs(10);

/// Whether small rounds run in place now.
#[derive(Debug, Default)]
pub struct Placement {
    /// Set by a slow round: rounds go to a blocking thread until then.
    blocking_until: Option<Instant>,
    /// File work done in place since the writer last yielded.
    unyielded: Duration,
}

/// What a round in place tells the writer.
#[derive(Debug, PartialEq, Eq)]
pub struct Ran {
    /// It was slow: the rounds of the next [`PAUSE`] go to a blocking thread.
    pub slow: bool,
    /// The writer should yield to the runtime's other tasks now.
    pub yield_now: bool,
}

impl Placement {
    /// Whether a small round run at `now` runs in place, on a runtime with
    /// `workers` threads.
    pub fn in_place(&self, now: Instant, workers: usize) -> bool {
        workers >= 2 && self.blocking_until.is_none_or(|until| now >= until)
    }

    /// Notes that a round ran in place from `started` to `ended`.
    pub fn ran(&mut self, started: Instant, ended: Instant) -> Ran {
        let took = ended.saturating_duration_since(started);
        let slow = took > SLOW;
        if slow {
            self.blocking_until = Some(ended + PAUSE);
        }
        self.unyielded += took;
        let yield_now = self.unyielded >= SLOW;
        if yield_now {
            self.unyielded = Duration::ZERO;
        }
        Ran { slow, yield_now }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn quick_rounds_stay_in_place_and_yield_after_a_while() {
        let mut placement = Placement::default();
        let t0 = Instant::now();
        assert!(placement.in_place(t0, 2));
        let quick = |at: u32| (t0 + MS * at, t0 + MS * at + MS * 2);
        let (a, b) = quick(0);
        assert_eq!(
            placement.ran(a, b),
            Ran {
                slow: false,
                yield_now: false
            }
        );
        let (a, b) = quick(2);
        assert_eq!(
            placement.ran(a, b),
            Ran {
                slow: false,
                yield_now: false
            }
        );
        let (a, b) = quick(4);
        // 6 ms of file work since the last yield.
        assert_eq!(
            placement.ran(a, b),
            Ran {
                slow: false,
                yield_now: true
            }
        );
        let (a, b) = quick(6);
        assert_eq!(
            placement.ran(a, b),
            Ran {
                slow: false,
                yield_now: false
            }
        );
        assert!(placement.in_place(t0 + MS * 8, 2));
    }

    #[test]
    fn a_slow_round_sends_the_next_to_a_blocking_thread_for_a_while() {
        let mut placement = Placement::default();
        let t0 = Instant::now();
        let ended = t0 + SLOW + MS;
        assert_eq!(
            placement.ran(t0, ended),
            Ran {
                slow: true,
                yield_now: true
            }
        );
        assert!(!placement.in_place(ended, 2));
        assert!(!placement.in_place(ended + PAUSE - MS, 2));
        assert!(placement.in_place(ended + PAUSE, 2));
    }

    #[test]
    fn a_runtime_with_one_thread_never_runs_a_round_in_place() {
        assert!(!Placement::default().in_place(Instant::now(), 1));
    }
}
