//! A per-device circuit breaker, pure: the caller passes the clock.
//!
//! Closed: every poll goes out; `threshold` consecutive failures open it.
//! Open: polls are skipped (the device's points are marked
//! `Bad(CommFailure)` without any I/O) until a jittered backoff has passed.
//! Half-open: one poll goes out as a probe; success closes the breaker and
//! resets the backoff, failure opens it again for twice as long (capped).
//! So a dead device costs its neighbours on a shared connection at most one
//! timeout per probe period.

use std::time::Duration;

use adit_core::Backoff;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

/// What the breaker says about the next poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Poll normally.
    Allow,
    /// Poll once to test whether the device is back.
    Probe,
    /// Skip the poll.
    Deny,
}

#[derive(Clone, Debug)]
pub struct Breaker {
    state: State,
    failures: u32,
    threshold: u32,
    backoff: Backoff,
}

impl Breaker {
    pub fn new(threshold: u32, min: Duration, max: Duration) -> Self {
        Self {
            state: State::Closed,
            failures: 0,
            threshold: threshold.max(1),
            backoff: Backoff::new(min, max),
        }
    }

    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed => Admission::Allow,
            State::HalfOpen => Admission::Probe,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                Admission::Probe
            }
            State::Open { .. } => Admission::Deny,
        }
    }

    pub fn success(&mut self) {
        self.state = State::Closed;
        self.failures = 0;
        self.backoff.reset();
    }

    /// Records a failed poll; `jitter01` in `[0, 1)` spreads the open period
    /// over 50-100 % of the backoff. Returns true if the breaker just opened.
    pub fn failure(&mut self, now: Instant, jitter01: f64) -> bool {
        self.failures = self.failures.saturating_add(1);
        let trip = self.state == State::HalfOpen || self.failures >= self.threshold;
        if !trip {
            return false;
        }
        let was_open = !matches!(self.state, State::Closed);
        self.state = State::Open {
            until: now + self.backoff.next_delay_with(jitter01),
        };
        !was_open
    }

    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(8);

    #[test]
    fn opens_after_the_threshold_and_skips_until_the_backoff_passes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, MIN, MAX);
        assert!(!b.failure(t0, 1.0));
        assert!(!b.failure(t0, 1.0));
        assert_eq!(b.admit(t0), Admission::Allow);
        assert!(b.failure(t0, 1.0), "third failure opens");
        assert_eq!(b.admit(t0 + Duration::from_millis(999)), Admission::Deny);
        assert_eq!(b.admit(t0 + MIN), Admission::Probe);
    }

    #[test]
    fn a_failed_probe_reopens_for_twice_as_long_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, MIN, MAX);
        b.failure(t0, 1.0);
        let mut now = t0 + MIN;
        let mut expected = MIN * 2;
        for _ in 0..5 {
            assert_eq!(b.admit(now), Admission::Probe);
            assert!(!b.failure(now, 1.0), "still open, not newly opened");
            assert_eq!(
                b.admit(now + expected - Duration::from_millis(1)),
                Admission::Deny
            );
            now += expected;
            expected = (expected * 2).min(MAX);
        }
    }

    #[test]
    fn a_successful_probe_closes_and_resets() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, MIN, MAX);
        b.failure(t0, 0.0);
        assert_eq!(b.admit(t0 + MIN), Admission::Probe);
        b.success();
        assert_eq!(b.admit(t0 + MIN), Admission::Allow);
        assert!(!b.is_open());
        b.failure(t0 + MIN, 0.0);
        // Backoff was reset: jitter 0 gives half of MIN.
        assert_eq!(b.admit(t0 + MIN + MIN / 2), Admission::Probe);
    }

    #[test]
    fn jitter_spreads_the_open_period_between_half_and_all_of_the_backoff() {
        let t0 = Instant::now();
        let mut early = Breaker::new(1, MIN, MAX);
        early.failure(t0, 0.0);
        assert_eq!(early.admit(t0 + MIN / 2), Admission::Probe);
        let mut late = Breaker::new(1, MIN, MAX);
        late.failure(t0, 0.999);
        assert_eq!(late.admit(t0 + MIN / 2), Admission::Deny);
    }
}
