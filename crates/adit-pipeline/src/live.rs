//! Live state: the last value, quality and age of every point.
//!
//! Invariants:
//! - a reading without a value (link down, exception) changes the quality but
//!   keeps the last known value, so a lost device shows its last value marked
//!   Bad, never a blank and never Good;
//! - ages are measured on the monotonic clock (`Instant`), so wall-clock jumps
//!   cannot make a point look fresh;
//! - the state is indexed by `PointId` (a plain vector), updated once per batch
//!   under one lock.
//!
//! Staleness is deadline-driven (see [`crate::stale`]): a point with no sample
//! for its `stale_after` turns `Bad(Stale)` and keeps its last value; a
//! `Bad(Stale)` marker never refreshes its own point. The stale checker
//! sleeps until the wake-up it planned ([`LiveState::plan_wake`]); a point
//! whose deadline comes before it (a stale point fresh again, whose sample
//! was sent a while ago; a point registered at run time with a short
//! `stale_after`) wakes it early through [`LiveState::wake_handle`], so no
//! point is reported late.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

use adit_core::{PointId, PointRegistry, Quality, QualityClass, Reading, Reason, Timestamp, Value};

use crate::stale::StaleTracker;

/// A point's last known state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PointState {
    pub value: Option<Value>,
    pub quality: Quality,
    pub source_ts: Timestamp,
    pub received_ts: Timestamp,
    /// Monotonic time of the last reading, `None` before the first one.
    pub updated_at: Option<Instant>,
    /// Monotonic time of the last reading that carried a value.
    pub value_at: Option<Instant>,
    pub readings: u64,
}

/// Counts of points by state at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QualitySummary {
    pub good: usize,
    pub uncertain: usize,
    pub bad: usize,
    /// Points with no sample for their `stale_after` (counted in addition to
    /// their quality class).
    pub stale: usize,
    /// Points that have never had a reading.
    pub never: usize,
}

#[derive(Debug)]
pub struct LiveState {
    points: Vec<PointState>,
    tracker: StaleTracker,
    /// When the stale checker will look next (`None`: not planned yet).
    planned_wake: Option<Instant>,
    /// Rung when a deadline comes before `planned_wake`.
    wake: Arc<Notify>,
}

impl LiveState {
    pub fn new(registry: &PointRegistry) -> Self {
        Self::new_at(registry, Instant::now())
    }

    /// A live state whose staleness deadlines count from `start`.
    pub fn new_at(registry: &PointRegistry, start: Instant) -> Self {
        Self {
            points: vec![PointState::default(); registry.len()],
            tracker: StaleTracker::new(registry, start),
            planned_wake: None,
            wake: Arc::new(Notify::new()),
        }
    }

    /// The stale checker's doorbell (see the module docs).
    pub fn wake_handle(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// The stale checker will look next at `at`.
    pub fn plan_wake(&mut self, at: Instant) {
        self.planned_wake = Some(at);
    }

    /// Rings the checker if `deadline` comes before its planned wake-up.
    fn wake_before(&mut self, deadline: Option<Instant>) {
        if let (Some(d), Some(planned)) = (deadline, self.planned_wake) {
            if d < planned {
                // Planned again when it wakes; ring once until then.
                self.planned_wake = None;
                self.wake.notify_one();
            }
        }
    }

    /// Takes in the points registered since (a pushed source naming points
    /// at run time): never seen, their staleness counted from `now`.
    pub fn grow(&mut self, registry: &PointRegistry, now: Instant) {
        if registry.len() > self.points.len() {
            let first = self.points.len();
            self.points.resize(registry.len(), PointState::default());
            self.tracker.grow(registry, now);
            let earliest = (first..self.points.len())
                .filter_map(|i| self.tracker.deadline_of(PointId(i as u32)))
                .min();
            self.wake_before(earliest);
        }
    }

    /// Applies a batch of normalized readings observed at monotonic time `now`.
    pub fn apply(&mut self, batch: &[Reading], now: Instant) {
        let mut revived: Option<Instant> = None;
        let at = self.tracker.clock(now);
        for r in batch {
            let Some(state) = self.points.get_mut(r.point.index()) else {
                continue;
            };
            if r.quality == Quality::Bad(Reason::Stale) && r.value.is_none() {
                // adit's stale marker (valueless): the quality changes,
                // nothing else does. A source's own "stale" with a value
                // (MQTT JSON, Sparkplug quality 500) is a sample like any.
                state.quality = r.quality;
                continue;
            }
            if self.tracker.seen_at(r.point, at) {
                // Fresh again: a new deadline, perhaps before the checker's
                // planned look (the sample was sent a while ago).
                let deadline = self.tracker.deadline_of(r.point);
                revived = match (revived, deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            if let Some(v) = &r.value {
                state.value = Some(v.clone());
                state.value_at = Some(now);
            }
            state.quality = r.quality;
            state.source_ts = r.source_ts;
            state.received_ts = r.received_ts;
            state.updated_at = Some(now);
            state.readings += 1;
        }
        self.wake_before(revived);
    }

    pub fn get(&self, id: PointId) -> Option<&PointState> {
        self.points.get(id.index())
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Whether the point has had no sample for its `stale_after`.
    pub fn is_stale(&self, id: PointId) -> bool {
        self.tracker.is_stale(id)
    }

    /// Points that went stale by `now` (each reported once).
    pub fn expire(&mut self, now: Instant) -> Vec<PointId> {
        self.tracker.expire(now)
    }

    /// When the next point goes stale.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.tracker.next_deadline()
    }

    pub fn summary(&self, _now: Instant) -> QualitySummary {
        let mut s = QualitySummary::default();
        for (i, p) in self.points.iter().enumerate() {
            if p.updated_at.is_none() {
                s.never += 1;
                continue;
            }
            match p.quality.class() {
                QualityClass::Good => s.good += 1,
                QualityClass::Uncertain => s.uncertain += 1,
                QualityClass::Bad => s.bad += 1,
            }
            if self.is_stale(PointId(i as u32)) {
                s.stale += 1;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::PointMeta;
    use std::time::Duration;

    fn registry(n: usize) -> PointRegistry {
        let mut r = PointRegistry::new();
        for i in 0..n {
            r.insert(PointMeta {
                name: format!("p{i}").into(),
                device: "d".into(),
                unit: String::new().into(),
                range: None,
                expected_interval_ms: 1000,
                deadband: None,
                deadband_heartbeat: std::time::Duration::from_secs(60),
                stale_after: std::time::Duration::from_secs(3),
            })
            .unwrap();
        }
        r
    }

    fn good(point: u32, v: f64) -> Reading {
        Reading {
            point: PointId(point),
            value: Some(Value::F64(v)),
            quality: Quality::Good,
            source_ts: Timestamp(1),
            received_ts: Timestamp(1),
        }
    }

    #[tokio::test]
    async fn a_deadline_before_the_checkers_planned_look_rings_it() {
        let t0 = Instant::now();
        let mut live = LiveState::new_at(&registry(2), t0);
        let doorbell = live.wake_handle();
        let rang = || async {
            tokio::time::timeout(std::time::Duration::from_millis(50), doorbell.notified())
                .await
                .is_ok()
        };
        // Point 0 goes stale; the checker then plans to look in 1 s.
        let stale_at = t0 + std::time::Duration::from_secs(10);
        assert_eq!(live.expire(stale_at), vec![PointId(0), PointId(1)]);
        live.plan_wake(stale_at + std::time::Duration::from_secs(1));
        // A sample of point 1 (stale too): its new deadline (3 s) is after that.
        live.apply(&[good(1, 1.0)], stale_at);
        assert!(!rang().await, "no reason to wake early");
        // Point 0 again, with a sample sent 2.5 s before: due in 0.5 s,
        // before the planned look. The checker is rung.
        let sent = t0 + std::time::Duration::from_millis(7_500);
        live.apply(&[good(0, 1.0)], sent);
        assert!(rang().await, "rung for the earlier deadline");
    }

    #[test]
    fn link_loss_keeps_the_last_value_and_marks_it_bad() {
        let mut live = LiveState::new(&registry(1));
        let t0 = Instant::now();
        live.apply(&[good(0, 42.0)], t0);
        live.apply(
            &[Reading::without_value(
                PointId(0),
                Quality::Bad(Reason::CommFailure),
                Timestamp(2),
            )],
            t0,
        );
        let s = live.get(PointId(0)).unwrap();
        assert_eq!(s.value, Some(Value::F64(42.0)));
        assert_eq!(s.quality, Quality::Bad(Reason::CommFailure));
        assert_eq!(s.readings, 2);
    }

    #[test]
    fn a_sources_own_stale_value_is_a_sample_and_adits_marker_is_not() {
        let mut live = LiveState::new(&registry(1));
        let t0 = Instant::now();
        live.apply(&[good(0, 42.0)], t0);
        let marker = Reading::without_value(PointId(0), Quality::Bad(Reason::Stale), Timestamp(2));
        live.apply(&[marker], t0 + Duration::from_secs(4));
        let s = live.get(PointId(0)).unwrap();
        assert_eq!((s.value.clone(), s.readings), (Some(Value::F64(42.0)), 1));
        let source_stale = Reading {
            quality: Quality::Bad(Reason::Stale),
            ..good(0, 43.0)
        };
        live.apply(&[source_stale], t0 + Duration::from_secs(5));
        let s = live.get(PointId(0)).unwrap();
        assert_eq!(s.value, Some(Value::F64(43.0)), "the new value is shown");
        assert_eq!((s.quality, s.readings), (Quality::Bad(Reason::Stale), 2));
    }

    #[test]
    fn summary_counts_classes_stale_and_never_seen() {
        let t0 = Instant::now();
        let mut live = LiveState::new_at(&registry(3), t0);
        live.apply(
            &[
                good(0, 1.0),
                Reading::without_value(PointId(1), Quality::Bad(Reason::CommFailure), Timestamp(1)),
            ],
            t0,
        );
        let s = live.summary(t0);
        assert_eq!((s.good, s.bad, s.never, s.stale), (1, 1, 1, 0));
        let later = t0 + Duration::from_millis(3001);
        assert_eq!(
            live.expire(later).len(),
            3,
            "never-seen points go stale too"
        );
        assert_eq!(
            live.summary(later).stale,
            2,
            "but the summary counts them as never, not stale"
        );
    }

    #[test]
    fn readings_for_unknown_points_are_ignored_not_a_panic() {
        let mut live = LiveState::new(&registry(1));
        live.apply(&[good(7, 1.0)], Instant::now());
        assert!(live.get(PointId(7)).is_none());
    }
}
