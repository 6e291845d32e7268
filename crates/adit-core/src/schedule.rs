//! Aligned schedules: instants on the monotonic clock that fall on whole
//! multiples of a period of the wall clock, so that what is periodic in the
//! process (polls with `poll_phase = "aligned"`, the once-a-second
//! housekeeping of the pipeline, the watchdog and the main loop) wakes
//! together, once per period, instead of each at a phase of its own. On a
//! lightly loaded site every separate wake-up is a context switch or two,
//! and those are most of what adit costs there.
//!
//! Invariant: a grid is computed from the wall clock once, then kept on the
//! monotonic clock (a wall-clock step never bunches or skips instants).

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The period of the process-wide housekeeping grid ([`Grid::housekeeping`]).
pub const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(1);

/// How long from `since_epoch` (wall time) to the next whole multiple of
/// `interval` (zero when it is on one): where an aligned schedule starts.
pub fn aligned_phase(interval: Duration, since_epoch: Duration) -> Duration {
    let period = interval.as_nanos().max(1);
    let into = since_epoch.as_nanos() % period;
    let left = (period - into) % period;
    Duration::from_nanos(u64::try_from(left).unwrap_or(0))
}

/// Wall time since the Unix epoch (zero for a clock set before 1970).
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The instants `origin + k × period` (k any integer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    origin: Instant,
    period: Duration,
}

impl Grid {
    /// The grid of `period` whose instants fall on whole multiples of
    /// `period` of the wall clock, given both clocks read at one moment
    /// (`now`, `since_epoch`).
    pub fn aligned(period: Duration, now: Instant, since_epoch: Duration) -> Self {
        let period = period.max(Duration::from_nanos(1));
        Self {
            origin: now + aligned_phase(period, since_epoch),
            period,
        }
    }

    /// The process-wide housekeeping grid ([`HOUSEKEEPING_PERIOD`]),
    /// computed on first use; its instants coincide with those of aligned
    /// polls whose interval is a whole number of seconds.
    pub fn housekeeping() -> Self {
        static GRID: OnceLock<Grid> = OnceLock::new();
        *GRID.get_or_init(|| Grid::aligned(HOUSEKEEPING_PERIOD, Instant::now(), since_epoch()))
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// The first instant of the grid strictly after `now`.
    pub fn next_after(&self, now: Instant) -> Instant {
        let period = self.period.as_nanos();
        if now < self.origin {
            let ahead = (self.origin - now).as_nanos();
            // The largest k ≥ 0 with origin - k × period > now.
            let k = (ahead - 1) / period;
            return self
                .origin
                .checked_sub(nanos(k * period))
                .unwrap_or(self.origin);
        }
        let past = (now - self.origin).as_nanos();
        self.origin + nanos((past / period + 1) * period)
    }
}

/// A tokio interval on the housekeeping grid: its ticks fall on
/// [`Grid::housekeeping`], the first one at the next instant of the grid
/// (not at once); a missed tick is skipped, never made up in a burst.
#[cfg(feature = "tokio")]
pub fn housekeeping_interval() -> tokio::time::Interval {
    let grid = Grid::housekeeping();
    // Tokio's clock (it differs from std's while a test pauses time).
    let first = grid.next_after(tokio::time::Instant::now().into_std());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::from_std(first), grid.period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn aligned_phases_land_on_whole_multiples_of_the_interval() {
        for (interval, now, expected) in [
            (ms(1000), ms(1_700_000_000_250), ms(750)),
            (ms(1000), ms(1_700_000_001_000), ms(0)),
            (ms(250), ms(1_700_000_000_240), ms(10)),
            (ms(250), ms(1_700_000_000_260), ms(240)),
            (Duration::from_secs(60), ms(1_700_000_030_000), ms(10_000)),
            (ms(60_000), ms(59_999), ms(1)),
        ] {
            assert_eq!(
                aligned_phase(interval, now),
                expected,
                "{interval:?} at {now:?}"
            );
        }
        // Two devices started apart agree on the wall-clock slot.
        let a = ms(1_700_000_000_100) + aligned_phase(ms(250), ms(1_700_000_000_100));
        let b = ms(1_700_000_000_180) + aligned_phase(ms(250), ms(1_700_000_000_180));
        assert_eq!(a, b);
    }

    #[test]
    fn a_grid_made_at_two_moments_is_the_same_grid() {
        let t0 = Instant::now();
        let a = Grid::aligned(ms(1000), t0, ms(1_700_000_000_250));
        let b = Grid::aligned(ms(1000), t0 + ms(180), ms(1_700_000_000_430));
        assert_eq!(a.next_after(t0), b.next_after(t0));
        assert_eq!(a.next_after(t0), t0 + ms(750));
    }

    proptest! {
        #[test]
        fn next_after_is_the_first_grid_instant_after_now(
            period_ms in 1u64..5_000,
            wall_ms in 0u64..10_000_000,
            offset_ms in 0u64..100_000,
            before in any::<bool>(),
        ) {
            let base = Instant::now() + ms(200_000);
            let grid = Grid::aligned(ms(period_ms), base, ms(wall_ms));
            let now = if before { base.checked_sub(ms(offset_ms)).unwrap() } else { base + ms(offset_ms) };
            let next = grid.next_after(now);
            prop_assert!(next > now);
            prop_assert!(next - now <= ms(period_ms));
            // On the grid: a whole number of periods from its origin.
            let origin = base + aligned_phase(ms(period_ms), ms(wall_ms));
            let gap = if next >= origin { next - origin } else { origin - next };
            prop_assert_eq!(gap.as_nanos() % ms(period_ms).as_nanos(), 0);
        }
    }
}
