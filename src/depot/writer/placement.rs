//! Where a small round's file work and journal run: in place, on the
//! writer's own runtime thread, while such rounds stay quick; on a blocking
//! thread for a while after one did not.
//!
//! Handing a round to a blocking thread and back costs two cross-thread
//! wake-ups a round; on a two-vCPU machine under `direct` load that left a
//! fifth of the machine idle with work queued, and in place the depot spent
//! less CPU per config and wrote more configs a second (docs/BENCHMARKS.md,
//! twenty-fifth pass). A round in place holds one runtime thread for its
//! file work, which is fine while that is a fraction of a millisecond
//! (tmpfs, a healthy local disk) and not when the directory stalls (a disk
//! under writeback pressure, a network file system): one slow round sends
//! the rounds after it to a blocking thread for [`PAUSE`], so a slow
//! directory holds a runtime thread for at most one round in that time.

use std::time::{Duration, Instant};

/// A round in place taking longer than this sends the rounds after it to a
/// blocking thread.
pub const SLOW: Duration = Duration::from_millis(5);

/// How long rounds go to a blocking thread after a slow one in place.
pub const PAUSE: Duration = Duration::from_secs(10);

/// Whether small rounds run in place now.
#[derive(Debug, Default)]
pub struct Placement {
    /// Set by a slow round: rounds go to a blocking thread until then.
    blocking_until: Option<Instant>,
}

impl Placement {
    /// Whether a small round run at `now` runs in place.
    pub fn in_place(&self, now: Instant) -> bool {
        self.blocking_until.is_none_or(|until| now >= until)
    }

    /// Notes that a round ran in place from `started` to `ended`; true when
    /// it was slow (the rounds of the next [`PAUSE`] go to a blocking thread).
    pub fn ran(&mut self, started: Instant, ended: Instant) -> bool {
        let slow = ended.saturating_duration_since(started) > SLOW;
        if slow {
            self.blocking_until = Some(ended + PAUSE);
        }
        slow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_rounds_stay_in_place() {
        let mut placement = Placement::default();
        let t0 = Instant::now();
        assert!(placement.in_place(t0));
        assert!(!placement.ran(t0, t0 + SLOW));
        assert!(placement.in_place(t0 + SLOW));
    }

    #[test]
    fn a_slow_round_sends_the_next_to_a_blocking_thread_for_a_while() {
        let mut placement = Placement::default();
        let t0 = Instant::now();
        let ended = t0 + SLOW + Duration::from_millis(1);
        assert!(placement.ran(t0, ended));
        assert!(!placement.in_place(ended));
        assert!(!placement.in_place(ended + PAUSE - Duration::from_millis(1)));
        assert!(placement.in_place(ended + PAUSE));
    }
}
