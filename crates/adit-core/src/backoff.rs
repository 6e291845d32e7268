//! The one retry backoff of adit: exponential from `min` to `max`, each wait
//! jittered to between 50 % and 100 % of the current step (so that many
//! collectors or sinks that failed together do not retry together), reset
//! after a success. Pure apart from [`Backoff::next_delay`]'s random draw;
//! [`Backoff::next_delay_with`] takes the jitter for tests and pure planners.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// `min` is clamped to at least 1 ms and `max` to at least `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            step: min,
        }
    }

    /// The next wait (randomly jittered), then the step doubles up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(fastrand::f64())
    }

    /// The next wait with `jitter01` in `[0, 1]` choosing between 50 % and
    /// 100 % of the step; then the step doubles up to `max`.
    pub fn next_delay_with(&mut self, jitter01: f64) -> Duration {
        let wait = self.step.mul_f64(0.5 + 0.5 * jitter01.clamp(0.0, 1.0));
        self.step = self.step.saturating_mul(2).min(self.max);
        wait
    }

    /// Back to `min` (after a success).
    pub fn reset(&mut self) {
        self.step = self.min;
    }

    /// The current step, before jitter.
    pub fn step(&self) -> Duration {
        self.step
    }
}

/// Full jitter between 50 % and 100 % of `d` (for periods that are not a
/// backoff: probes, resends).
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_min_to_max_with_jitter_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let waits: Vec<Duration> = (0..5).map(|_| b.next_delay_with(1.0)).collect();
        assert_eq!(waits, vec![ms(100), ms(200), ms(400), ms(500), ms(500)]);
        assert_eq!(
            b.next_delay_with(0.0),
            ms(250),
            "jitter floor is half the step"
        );
        b.reset();
        assert_eq!(b.next_delay_with(1.0), ms(100));
    }

    #[test]
    fn every_wait_stays_within_half_and_all_of_its_step() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
        for _ in 0..100 {
            let step = b.step();
            let wait = b.next_delay();
            assert!(wait >= step / 2 && wait <= step, "{wait:?} vs {step:?}");
        }
    }
}
