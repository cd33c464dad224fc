//! Debug lines that a peer causes one per datagram (a publish datagram, a dropped probe or
//! garbage on the beacon port), at most [`DEBUG_LINES_PER_SEC`] a second: under a flood,
//! `-v` writes a few lines a second and how many it left out, not a line per datagram.
//! And a running count said in a warning at most once a minute ([`Unsaid`]).

use crate::limits::{warn_due, DEBUG_LINES_PER_SEC};
use std::time::{Duration, Instant};

/// One source of such lines and its budget.
pub struct LogRate {
    /// Start of the current window.
    start: Instant,
    window: Duration,
    /// Lines allowed per window.
    budget: u32,
    /// Lines logged in it.
    lines: u32,
    /// Lines left out since the last one logged.
    hidden: u64,
}

impl LogRate {
    pub fn new(now: Instant) -> LogRate {
        LogRate::per(now, Duration::from_secs(1), DEBUG_LINES_PER_SEC)
    }

    /// At most `budget` lines per `window`.
    pub fn per(now: Instant, window: Duration, budget: u32) -> LogRate {
        LogRate {
            start: now,
            window,
            budget,
            lines: 0,
            hidden: 0,
        }
    }

    /// Whether a line may be logged now: `Some(n)` when it may, `n` lines having been left
    /// out before it (the caller says so after its line); `None` when it is left out.
    pub fn take(&mut self, now: Instant) -> Option<u64> {
        if now.saturating_duration_since(self.start) >= self.window {
            self.start = now;
            self.lines = 0;
        }
        if self.lines >= self.budget {
            self.hidden += 1;
            return None;
        }
        self.lines += 1;
        Some(std::mem::take(&mut self.hidden))
    }

    /// Lines were left out and their window has passed: the caller says so now (with
    /// [`LogRate::take`]) rather than wait for a next line that may never come.
    pub fn overdue(&self, now: Instant) -> bool {
        self.hidden > 0 && now.saturating_duration_since(self.start) >= self.window
    }
}

/// A running count (datagrams the kernel dropped, datagrams ignored) said in a warning:
/// what it grew by since it was last said, at most once per
/// [`WARN_EVERY_SECS`](crate::limits::WARN_EVERY_SECS).
#[derive(Default)]
pub struct Unsaid {
    said: u64,
    warned: Option<Instant>,
}

impl Unsaid {
    /// How much `total` grew since it was last said, when that is to be said now.
    pub fn take(&mut self, total: u64, now: Instant) -> Option<u64> {
        let new = total.saturating_sub(self.said);
        if new == 0 || !warn_due(&mut self.warned, now) {
            return None;
        }
        self.said = total;
        Some(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gets_its_budget_a_second_and_the_count_of_the_rest() {
        let t0 = Instant::now();
        let mut r = LogRate::new(t0);
        let logged = (0..1000).filter(|_| r.take(t0).is_some()).count();
        assert_eq!(logged, DEBUG_LINES_PER_SEC as usize);
        let next = t0 + Duration::from_secs(1);
        assert_eq!(r.take(next), Some(1000 - u64::from(DEBUG_LINES_PER_SEC)));
        assert_eq!(r.take(next), Some(0));
    }
}
