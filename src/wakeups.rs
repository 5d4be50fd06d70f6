//! When the single writer wakes up by itself: the idle refresh (every `server.refresh_interval`,
//! sooner with backoff while the origin fails) and the engine's next deadline (a verification
//! whose `stable_for` or `within` has passed, a phase's soak end). Deadlines are acted on when
//! due, not at the next refresh; both are kept as instants, so a steady stream of jobs delays
//! neither.

use std::time::{Duration, Instant};

/// Deadline work runs at most this often: one that stays due (a note that cannot be written
/// yet) is tried again no faster than this.
const DEADLINE_FLOOR: Duration = Duration::from_secs(1);

/// A deadline is acted on this long after it falls, so that the engine's clock reads it passed.
const PAST: Duration = Duration::from_millis(5);

/// The furthest ahead a deadline is kept: the refresh comes sooner anyway.
const HORIZON: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Fetch, publish, and do what is due (the idle tick).
    Refresh,
    /// Do what is due: a deadline passed.
    Deadline,
}

#[derive(Debug)]
pub(crate) struct Wakeups {
    refresh_at: Instant,
    deadline: Option<Instant>,
    last_deadline_run: Option<Instant>,
}

impl Wakeups {
    /// The first refresh at once: the writer starts by fetching.
    pub(crate) fn new(now: Instant) -> Self {
        Wakeups { refresh_at: now, deadline: None, last_deadline_run: None }
    }

    /// What is due at `now`; the refresh first (it does the deadline work too).
    pub(crate) fn due(&self, now: Instant) -> Option<Wake> {
        if now >= self.refresh_at {
            Some(Wake::Refresh)
        } else if self.deadline.is_some_and(|d| now >= d) {
            Some(Wake::Deadline)
        } else {
            None
        }
    }

    /// How long to wait for a job before something is due.
    pub(crate) fn wait(&self, now: Instant) -> Duration {
        let next = self.deadline.map_or(self.refresh_at, |d| d.min(self.refresh_at));
        next.saturating_duration_since(now)
    }

    /// A refresh ran at `now` (with what is due); the next one comes `next_in` later.
    pub(crate) fn refreshed(&mut self, now: Instant, next_in: Duration) {
        self.refresh_at = now.checked_add(next_in.min(HORIZON)).unwrap_or(now);
        self.deadline_ran(now);
    }

    /// Refresh at once (a rebuilt engine reads its watches back from git).
    pub(crate) fn refresh_now(&mut self, now: Instant) {
        self.refresh_at = now;
    }

    /// What was due ran at `now`.
    pub(crate) fn deadline_ran(&mut self, now: Instant) {
        self.last_deadline_run = Some(now);
        self.deadline = None;
    }

    /// The engine's next deadline is `in_` from `now` (`None`: nothing waits for a time).
    pub(crate) fn set_deadline(&mut self, now: Instant, in_: Option<Duration>) {
        self.deadline = in_.map(|d| {
            let at = now.checked_add(d.min(HORIZON) + PAST).unwrap_or(now);
            match self.last_deadline_run.and_then(|l| l.checked_add(DEADLINE_FLOOR)) {
                Some(floor) => at.max(floor),
                None => at,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_refresh_is_at_once_and_the_next_after_its_interval() {
        let t0 = Instant::now();
        let mut w = Wakeups::new(t0);
        assert_eq!(w.due(t0), Some(Wake::Refresh));
        w.refreshed(t0, 30 * S);
        assert_eq!(w.due(t0 + 29 * S), None);
        assert_eq!(w.wait(t0 + 10 * S), 20 * S);
        assert_eq!(w.due(t0 + 30 * S), Some(Wake::Refresh));
    }

    #[test]
    fn a_deadline_before_the_refresh_wakes_the_writer_when_it_falls() {
        let t0 = Instant::now();
        let mut w = Wakeups::new(t0);
        w.refreshed(t0, 300 * S);
        w.set_deadline(t0 + 10 * S, Some(3 * S));
        assert_eq!(w.wait(t0 + 10 * S), 3 * S + PAST);
        assert_eq!(w.due(t0 + 13 * S), None);
        assert_eq!(w.due(t0 + 13 * S + PAST), Some(Wake::Deadline));
        w.deadline_ran(t0 + 13 * S + PAST);
        assert_eq!(w.due(t0 + 14 * S), None, "done until the engine names another");
    }

    #[test]
    fn a_deadline_that_stays_due_is_tried_again_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut w = Wakeups::new(t0);
        w.refreshed(t0, 300 * S);
        w.deadline_ran(t0 + 5 * S);
        w.set_deadline(t0 + 5 * S, Some(Duration::ZERO));
        assert_eq!(w.due(t0 + 5 * S + PAST), None);
        assert_eq!(w.due(t0 + 6 * S), Some(Wake::Deadline));
    }

    #[test]
    fn jobs_do_not_push_the_refresh_back() {
        let t0 = Instant::now();
        let mut w = Wakeups::new(t0);
        w.refreshed(t0, 30 * S);
        // Jobs come and go: only the deadline is set again after each.
        for i in 1..30 {
            w.set_deadline(t0 + i * S, None);
        }
        assert_eq!(w.due(t0 + 30 * S), Some(Wake::Refresh));
    }

    #[test]
    fn a_far_deadline_does_not_overflow() {
        let t0 = Instant::now();
        let mut w = Wakeups::new(t0);
        w.refreshed(t0, Duration::MAX);
        w.set_deadline(t0, Some(Duration::MAX));
        assert!(w.wait(t0) <= HORIZON + PAST);
    }
}
