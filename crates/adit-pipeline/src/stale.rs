//! Staleness: a deadline per point, and a timing wheel of wake-up times
//! (one-millisecond slots, see [`crate::wheel`]), so that finding the
//! points that just went stale never scans every point.
//!
//! The wheel is updated lazily: a sample only moves the point's deadline in
//! a plain array (O(1), the hot path); the wheel keeps the point's older,
//! earlier entry. When that entry's slot comes due, `expire` finds the
//! point's real deadline later and files it again there: a push onto a
//! slot's vector. (A binary heap re-queued in place cost a sift through
//! every point's entry, about 4 % of adit's CPU at 20k readings/s; a
//! `BTreeSet` before it, a node split or merge, about 5 %.) So a point
//! costs at most one filing per `stale_after` period, however often it is
//! sampled.
//!
//! The wheel only decides which points to look at, a slot at a time; the
//! deadlines themselves are exact (nanoseconds): a point is reported at the
//! first `expire` at or after its deadline, never before, as before.
//!
//! Invariants:
//! - deadlines are monotonic (`Instant`) and only a real sample (not a stale
//!   marker) moves a point's deadline;
//! - every fresh point has exactly one entry in the wheel, in the slot of a
//!   time at or before its deadline; a stale point has none (its next
//!   sample files one);
//! - each fresh → stale transition is reported once; the next sample makes
//!   the point fresh again (reported by `seen`).

use std::time::{Duration, Instant};

use adit_core::{PointId, PointRegistry};

use crate::wheel::{Wheel, KEEP_CAPACITY, TICK_NS};

/// Nanoseconds from `origin` to `at` (0 before it; saturating far after).
fn nanos_since(origin: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// About a century, in nanoseconds: the farthest a deadline goes ahead
/// (a `stale_after` meaning "never" must not overflow the clock).
const CENTURY_NS: u64 = 100 * 365 * 86_400 * 1_000_000_000;

/// A `stale_after` in nanoseconds, at most [`CENTURY_NS`].
fn after_ns(after: Duration) -> u64 {
    u64::try_from(after.as_nanos())
        .unwrap_or(u64::MAX)
        .min(CENTURY_NS)
}

/// A monotonic time as the tracker keeps it (nanoseconds since its
/// origin): taken once per batch with [`StaleTracker::clock`], so a sample
/// costs an addition, not `Instant` arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TrackerTime(u64);

#[derive(Debug)]
pub struct StaleTracker {
    /// Times are kept as nanoseconds since this instant.
    origin: Instant,
    /// Each point's `stale_after`, in nanoseconds (see [`after_ns`]).
    after_ns: Vec<u64>,
    /// Nanoseconds since `origin`.
    deadline: Vec<u64>,
    stale: Vec<bool>,
    /// One entry per fresh point, by the tick of a time at or before its
    /// deadline.
    wheel: Wheel,
    /// The ids of the slot being looked at (kept: no allocation per slot).
    due: Vec<PointId>,
}

impl StaleTracker {
    /// Every point starts with a deadline `stale_after` from `start`.
    pub fn new(registry: &PointRegistry, start: Instant) -> Self {
        // A year before `start`: a caller whose clock lags the one that gave
        // `start` (a paused test clock) still maps to distinct times.
        let origin = start
            .checked_sub(Duration::from_secs(365 * 86_400))
            .unwrap_or(start);
        let start_ns = nanos_since(origin, start);
        let after_ns: Vec<u64> = registry
            .iter()
            .map(|(_, m)| after_ns(m.stale_after))
            .collect();
        let deadline: Vec<u64> = after_ns
            .iter()
            .map(|a| start_ns.saturating_add(*a))
            .collect();
        let mut wheel = Wheel::new(nanos_since(origin, start) / TICK_NS);
        for (i, d) in deadline.iter().enumerate() {
            wheel.insert(d / TICK_NS, PointId(i as u32));
        }
        wheel.shrink();
        let stale = vec![false; after_ns.len()];
        Self {
            origin,
            after_ns,
            deadline,
            stale,
            wheel,
            due: Vec::new(),
        }
    }

    fn ns(&self, at: Instant) -> u64 {
        nanos_since(self.origin, at)
    }

    /// Tracks the points registered since (ids beyond the current ones),
    /// with deadlines counted from `now`.
    pub fn grow(&mut self, registry: &PointRegistry, now: Instant) {
        let now = self.ns(now);
        for i in self.after_ns.len()..registry.len() {
            let id = PointId(i as u32);
            let after = after_ns(
                registry
                    .get(id)
                    .map_or(Duration::from_secs(60), |m| m.stale_after),
            );
            let deadline = now.saturating_add(after);
            self.after_ns.push(after);
            self.deadline.push(deadline);
            self.stale.push(false);
            self.wheel.insert(deadline / TICK_NS, id);
        }
    }

    /// A sample of `id` arrived at `now`: push its deadline out (never in: a
    /// sample sent before one already seen does not shorten it). Returns
    /// true if the point was stale and is fresh again.
    pub fn seen(&mut self, id: PointId, now: Instant) -> bool {
        self.seen_at(id, self.clock(now))
    }

    /// `now` as the tracker keeps it, for [`seen_at`](Self::seen_at).
    pub fn clock(&self, now: Instant) -> TrackerTime {
        TrackerTime(self.ns(now))
    }

    /// [`seen`](Self::seen) with the time already taken by [`clock`](Self::clock)
    /// (once for a whole batch).
    pub fn seen_at(&mut self, id: PointId, now: TrackerTime) -> bool {
        let i = id.index();
        let (Some(deadline), Some(after), Some(stale)) = (
            self.deadline.get_mut(i),
            self.after_ns.get(i).copied(),
            self.stale.get_mut(i),
        ) else {
            return false;
        };
        *deadline = (*deadline).max(now.0.saturating_add(after));
        if std::mem::replace(stale, false) {
            // A stale point has no entry in the wheel: file it again.
            self.wheel.insert(*deadline / TICK_NS, id);
            true
        } else {
            false
        }
    }

    /// The point's deadline (`None` for an unknown point).
    pub fn deadline_of(&self, id: PointId) -> Option<Instant> {
        let ns = *self.deadline.get(id.index())?;
        Some(self.origin + Duration::from_nanos(ns))
    }

    /// Points whose deadline passed at or before `now` and that were not yet
    /// reported stale; each is reported once.
    pub fn expire(&mut self, now: Instant) -> Vec<PointId> {
        let mut out = Vec::new();
        let now = self.ns(now);
        let now_tick = now / TICK_NS;
        let mut due = std::mem::take(&mut self.due);
        while let Some(tick) = self.wheel.take_due(now_tick, &mut due) {
            for id in due.drain(..) {
                let i = id.index();
                let deadline = self.deadline.get(i).copied().unwrap_or(0);
                if deadline > now {
                    // Sampled since it was filed, or due later in this very
                    // millisecond: file it at its real deadline.
                    self.wheel.insert(deadline / TICK_NS, id);
                    continue;
                }
                if let Some(stale) = self.stale.get_mut(i) {
                    if !*stale {
                        *stale = true;
                        out.push(id);
                    }
                }
            }
            if tick >= now_tick {
                // The current millisecond's slot may hold points filed
                // again just now for later in it: look at it next time.
                break;
            }
        }
        if due.capacity() > KEEP_CAPACITY {
            due = Vec::new();
        }
        self.due = due;
        out
    }

    /// The next time a point may go stale (possibly earlier: a point sampled
    /// since is then filed again without being reported).
    pub fn next_deadline(&self) -> Option<Instant> {
        let (tick, ids) = self.wheel.earliest()?;
        // Within the earliest slot, the earliest real deadline, but no
        // later than the slot's end (its points may all have moved on: the
        // slot is then emptied at its end). Beyond the window: its start.
        let start = tick.saturating_mul(TICK_NS);
        let end = start.saturating_add(TICK_NS);
        let first = ids
            .iter()
            .filter_map(|id| self.deadline.get(id.index()).copied())
            .min()
            .map_or(start, |d| d.min(end));
        Some(self.origin + Duration::from_nanos(first))
    }

    pub fn is_stale(&self, id: PointId) -> bool {
        self.stale.get(id.index()).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::PointMeta;

    fn registry() -> PointRegistry {
        let mut r = PointRegistry::new();
        let mut fast = PointMeta::plain("fast", "d", 1000);
        fast.stale_after = Duration::from_secs(3);
        let mut slow = PointMeta::plain("slow", "d", 10_000);
        slow.stale_after = Duration::from_secs(30);
        r.insert(fast).unwrap();
        r.insert(slow).unwrap();
        r
    }

    #[test]
    fn a_point_goes_stale_once_at_its_deadline_and_fresh_with_the_next_sample() {
        let t0 = Instant::now();
        let mut t = StaleTracker::new(&registry(), t0);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(3)));
        assert!(t.expire(t0 + Duration::from_millis(2999)).is_empty());
        assert_eq!(t.expire(t0 + Duration::from_secs(3)), vec![PointId(0)]);
        assert!(t.is_stale(PointId(0)));
        assert!(
            t.expire(t0 + Duration::from_secs(4)).is_empty(),
            "reported once"
        );
        assert!(
            t.seen(PointId(0), t0 + Duration::from_secs(5)),
            "fresh again"
        );
        assert!(!t.is_stale(PointId(0)));
        assert_eq!(t.expire(t0 + Duration::from_secs(8)), vec![PointId(0)]);
        assert_eq!(t.expire(t0 + Duration::from_secs(30)), vec![PointId(1)]);
    }

    #[test]
    fn samples_before_the_deadline_keep_a_point_fresh() {
        let t0 = Instant::now();
        let mut t = StaleTracker::new(&registry(), t0);
        for s in 1..20 {
            assert!(!t.seen(PointId(0), t0 + Duration::from_secs(s)));
            assert!(t
                .expire(t0 + Duration::from_secs(s))
                .iter()
                .all(|id| *id != PointId(0)));
        }
    }

    #[test]
    fn a_busy_point_costs_one_requeue_per_period_and_still_goes_stale_on_time() {
        let t0 = Instant::now();
        let mut t = StaleTracker::new(&registry(), t0);
        // Sampled every 10 ms for 10 s: the set never holds more than one
        // entry per point, and the point never goes stale.
        for ms in (10..10_000).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            assert!(!t.seen(PointId(0), now));
            assert!(!t.expire(now).contains(&PointId(0)));
            assert!(t.wheel.len() <= 2);
        }
        // Silence: stale exactly 3 s after the last sample, not before.
        let last = t0 + Duration::from_millis(9_990);
        assert!(!t
            .expire(last + Duration::from_millis(2_999))
            .contains(&PointId(0)));
        assert!(t
            .expire(last + Duration::from_secs(3))
            .contains(&PointId(0)));
    }

    proptest::proptest! {
        /// Against a model that scans every point: random samples and
        /// checks over five points with stale_after 1..=5 s, time moving
        /// forward in steps of 0..2 s or of a few µs (checks inside one
        /// millisecond, before and after a deadline in it; 5 s is beyond
        /// the wheel's window), some samples sent up to 0.5 s before the
        /// check (as envelopes that waited in the channel are), and a
        /// point registered at run time. Each check reports exactly the points
        /// whose last sample is `stale_after` or more ago and that were not
        /// reported since that sample, and the next deadline is never later
        /// than the earliest real one.
        #[test]
        fn reports_what_a_full_scan_would(
            steps in proptest::collection::vec(
                (
                    proptest::prop_oneof![0u64..2_000_000, 0u64..1_500],
                    proptest::option::of((0u32..6, proptest::prop_oneof![proptest::strategy::Just(0u64), 0u64..500_000])),
                ),
                1..200,
            ),
            grow_at in 0usize..200,
        ) {
            let mut registry = PointRegistry::new();
            let stale_after = |i: usize| if i < 5 { Duration::from_secs(i as u64 + 1) } else { Duration::from_millis(300) };
            for i in 0..5usize {
                let mut m = PointMeta::plain(&format!("p{i}"), "d", 1000);
                m.stale_after = stale_after(i);
                registry.insert(m).unwrap();
            }
            let t0 = Instant::now();
            let mut tracker = StaleTracker::new(&registry, t0);
            let mut points = 5usize;
            let mut last_seen = [t0; 6];
            let mut reported = [false; 6];
            let mut now = t0;
            for (step, (advance, sample)) in steps.into_iter().enumerate() {
                now += Duration::from_micros(advance);
                if step == grow_at {
                    // A point named at run time (MQTT), stale_after 300 ms.
                    let mut m = PointMeta::plain("p5", "d", 1000);
                    m.stale_after = stale_after(5);
                    registry.insert(m).unwrap();
                    tracker.grow(&registry, now);
                    last_seen[5] = now;
                    points = 6;
                }
                if let Some((p, back)) = sample {
                    let p = p as usize % points;
                    // Sent a little before now (it waited in the channel).
                    let sent = now.checked_sub(Duration::from_micros(back)).unwrap_or(now).max(t0);
                    let was_stale = tracker.seen(PointId(p as u32), sent);
                    proptest::prop_assert_eq!(was_stale, reported[p]);
                    last_seen[p] = last_seen[p].max(sent);
                    reported[p] = false;
                }
                let mut got = tracker.expire(now);
                got.sort();
                let mut want = Vec::new();
                for i in 0..points {
                    let due = last_seen[i] + stale_after(i);
                    if due <= now && !reported[i] {
                        reported[i] = true;
                        want.push(PointId(i as u32));
                    }
                }
                proptest::prop_assert_eq!(got, want);
                let fresh = tracker.stale.iter().filter(|s| !**s).count();
                proptest::prop_assert_eq!(tracker.wheel.len(), fresh, "one entry per fresh point");
                let earliest = (0..points)
                    .filter(|&i| !reported[i])
                    .map(|i| last_seen[i] + stale_after(i))
                    .min();
                let next = tracker.next_deadline();
                if let Some(earliest) = earliest {
                    proptest::prop_assert!(next.is_some_and(|d| d <= earliest), "never wakes late");
                }
                // Never a wake-up that finds nothing to do in a loop.
                proptest::prop_assert!(next.is_none_or(|d| d > now), "no spin: {:?} after {:?}", next.map(|d| d - t0), now - t0);
            }
        }
    }
}
