//! Debug lines that a peer causes one per datagram (a publish datagram, a dropped probe or
//! garbage on the beacon port), at most [`DEBUG_LINES_PER_SEC`] a second: under a flood,
//! `-v` writes a few lines a second and how many it left out, not a line per datagram.
//! And warnings that repeat while a condition lasts, ever less often ([`Repeat`]), such as
//! a running count ([`Unsaid`]).

use crate::limits::{DEBUG_LINES_PER_SEC, WARN_EVERY_SECS, WARN_MAX_SECS};
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

/// A warning that repeats while its condition lasts: said the first time, then again after
/// [`WARN_EVERY_SECS`], and after twice as long each time up to [`WARN_MAX_SECS`], however
/// often it is asked (each interval, up to an hour apart). Nothing said for twice
/// [`WARN_MAX_SECS`] (the condition went away for a while) starts it over, as [`reset`]
/// does at once.
///
/// [`reset`]: Repeat::reset
#[derive(Default)]
pub struct Repeat {
    /// When it was last said (None: never, or reset).
    last: Option<Instant>,
    /// Seconds from `last` until it may be said again.
    gap: u64,
}

impl Repeat {
    /// Is it to be said now? (Said, if so.)
    pub fn due(&mut self, now: Instant) -> bool {
        let since = self
            .last
            .map(|t| now.saturating_duration_since(t).as_secs());
        let gap = self.gap.max(WARN_EVERY_SECS);
        self.gap = match since {
            Some(s) if s < gap => return false,
            Some(s) if s < 2 * WARN_MAX_SECS => (2 * gap).min(WARN_MAX_SECS),
            _ => WARN_EVERY_SECS,
        };
        self.last = Some(now);
        true
    }

    /// Said now by other means (a line about a change): the next repeat is a gap away.
    pub fn said(&mut self, now: Instant) {
        self.last = Some(now);
    }

    /// The condition changed: the next one is said at once, and repeats start over.
    pub fn reset(&mut self) {
        *self = Repeat::default();
    }

    pub fn last(&self) -> Option<Instant> {
        self.last
    }
}

/// A running count (datagrams the kernel dropped, datagrams ignored) said in a warning:
/// what it grew by since it was last said, as a [`Repeat`] allows.
#[derive(Default)]
pub struct Unsaid {
    said: u64,
    warned: Repeat,
}

impl Unsaid {
    /// How much `total` grew since it was last said, when that is to be said now.
    pub fn take(&mut self, total: u64, now: Instant) -> Option<u64> {
        let new = total.saturating_sub(self.said);
        if new == 0 || !self.warned.due(now) {
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
    fn a_repeating_warning_is_said_ever_less_often_and_starts_over_after_a_pause() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut r = Repeat::default();
        // Asked every second for a day: said at 0, 1, 3, 7, 15, 31, 63 minutes, then hourly.
        let said: Vec<u64> = (0..86_400).filter(|&s| r.due(at(s))).collect();
        let minutes: Vec<u64> = said.iter().take(8).map(|s| s / 60).collect();
        assert_eq!(minutes, [0, 1, 3, 7, 15, 31, 63, 123]);
        assert!(said.windows(2).all(|w| w[1] - w[0] <= WARN_MAX_SECS));
        assert_eq!(said.len(), 29);
        // Asked once per 5-minute interval, or once an hour: the same backing off, to
        // hourly (not every time, as a start over at twice the gap would have it).
        for (every, lines) in [(300, 29), (600, 29), (WARN_MAX_SECS, 24)] {
            let mut r = Repeat::default();
            let said = (0..86_400 / every)
                .filter(|&k| r.due(at(k * every)))
                .count();
            assert_eq!(said, lines, "asked every {every} s");
        }
        // Quiet for two hours (the condition went away): said at once, a minute later again.
        let back = 86_400 + 2 * WARN_MAX_SECS;
        assert!(r.due(at(back)));
        assert!(!r.due(at(back + 59)));
        assert!(r.due(at(back + 60)));
        // A change said by other means counts as said; a reset says the next at once.
        r.said(at(back + 100));
        assert!(!r.due(at(back + 101)));
        r.reset();
        assert!(r.due(at(back + 102)));
    }

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
