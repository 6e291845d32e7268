//! Staleness: a deadline per point, kept in an ordered set, so that finding
//! the points that just went stale costs O(log n) per point that changed, and
//! never a scan of every point.
//!
//! Invariants:
//! - deadlines are monotonic (`Instant`) and only a real sample (not a stale
//!   marker) moves a point's deadline;
//! - each fresh → stale transition is reported once; the next sample makes
//!   the point fresh again (reported by `seen`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use adit_core::{PointId, PointRegistry};

#[derive(Debug)]
pub struct StaleTracker {
    stale_after: Vec<Duration>,
    deadline: Vec<Instant>,
    stale: Vec<bool>,
    by_deadline: BTreeSet<(Instant, PointId)>,
}

impl StaleTracker {
    /// Every point starts with a deadline `stale_after` from `start`.
    pub fn new(registry: &PointRegistry, start: Instant) -> Self {
        let stale_after: Vec<Duration> = registry.iter().map(|(_, m)| m.stale_after).collect();
        let deadline: Vec<Instant> = stale_after.iter().map(|d| start + *d).collect();
        let by_deadline = deadline
            .iter()
            .enumerate()
            .map(|(i, d)| (*d, PointId(i as u32)))
            .collect();
        let stale = vec![false; stale_after.len()];
        Self {
            stale_after,
            deadline,
            stale,
            by_deadline,
        }
    }

    /// A sample of `id` arrived at `now`: push its deadline out. Returns true
    /// if the point was stale and is fresh again.
    pub fn seen(&mut self, id: PointId, now: Instant) -> bool {
        let i = id.index();
        let (Some(old), Some(after)) = (
            self.deadline.get(i).copied(),
            self.stale_after.get(i).copied(),
        ) else {
            return false;
        };
        self.by_deadline.remove(&(old, id));
        let new = now + after;
        self.deadline[i] = new;
        self.by_deadline.insert((new, id));
        std::mem::replace(&mut self.stale[i], false)
    }

    /// Points whose deadline passed at or before `now` and that were not yet
    /// reported stale; each is reported once.
    pub fn expire(&mut self, now: Instant) -> Vec<PointId> {
        let mut out = Vec::new();
        while let Some(&(deadline, id)) = self.by_deadline.first() {
            if deadline > now {
                break;
            }
            self.by_deadline.pop_first();
            if !self.stale[id.index()] {
                self.stale[id.index()] = true;
                out.push(id);
            }
        }
        out
    }

    /// When the next point goes stale, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(d, _)| *d)
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
}
