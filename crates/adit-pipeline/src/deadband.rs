//! Deadband: store a point's reading only when it moved by at least the
//! point's deadband since the last stored one, when its quality changed, or
//! when the heartbeat period has passed since the last stored one.
//!
//! Invariants:
//! - it applies after the live state, so suppressed samples still keep the
//!   point fresh (deadband thins storage, it never makes a point look stale);
//! - a quality change is always stored, so every Good → Bad → Good transition
//!   is in the history;
//! - a stored reading is at most `heartbeat` apart from the previous one while
//!   samples keep coming, so history shows the point was alive;
//! - every suppressed reading is counted (`adit_deadband_suppressed_total`).

use std::time::{Duration, Instant};

use adit_core::{PointRegistry, Quality, Reading};

/// What was last stored for a point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stored {
    pub value: Option<f64>,
    pub quality: Quality,
    pub at: Instant,
}

/// Whether `reading` should be stored, given what was stored last.
pub fn keep(
    last: Option<&Stored>,
    reading: &Reading,
    band: f64,
    heartbeat: Duration,
    now: Instant,
) -> bool {
    let Some(last) = last else {
        return true;
    };
    if reading.quality != last.quality || now.saturating_duration_since(last.at) >= heartbeat {
        return true;
    }
    match (
        reading.value.as_ref().and_then(adit_core::Value::as_f64),
        last.value,
    ) {
        (Some(v), Some(l)) => (v - l).abs() >= band,
        (None, None) => false,
        _ => true,
    }
}

/// Per-point deadband state for the whole registry.
#[derive(Debug)]
pub struct Deadband {
    /// (band, heartbeat) per point; `None` for points without a deadband.
    rules: Vec<Option<(f64, Duration)>>,
    last: Vec<Option<Stored>>,
    /// Any point has a deadband; decided once (asked once per batch).
    active: bool,
}

impl Deadband {
    pub fn new(registry: &PointRegistry) -> Self {
        let rules: Vec<_> = registry
            .iter()
            .map(|(_, m)| m.deadband.map(|band| (band, m.deadband_heartbeat)))
            .collect();
        let last = vec![None; rules.len()];
        let active = rules.iter().any(Option::is_some);
        Self {
            rules,
            last,
            active,
        }
    }

    /// Whether any point has a deadband (if not, `filter` is a no-op).
    /// O(1): it is asked for every batch.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Removes readings the deadband suppresses; returns how many.
    pub fn filter(&mut self, batch: &mut Vec<Reading>, now: Instant) -> usize {
        let before = batch.len();
        batch.retain(|r| {
            let i = r.point.index();
            let Some(Some((band, heartbeat))) = self.rules.get(i).copied() else {
                return true;
            };
            let slot = &mut self.last[i];
            if keep(slot.as_ref(), r, band, heartbeat, now) {
                *slot = Some(Stored {
                    value: r.value.as_ref().and_then(adit_core::Value::as_f64),
                    quality: r.quality,
                    at: now,
                });
                true
            } else {
                false
            }
        });
        before - batch.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::{PointId, Reason, Timestamp, Value};

    fn reading(value: Option<f64>, quality: Quality) -> Reading {
        Reading {
            point: PointId(0),
            value: value.map(Value::F64),
            quality,
            source_ts: Timestamp(1),
            received_ts: Timestamp(1),
        }
    }

    #[test]
    fn table_of_deadband_decisions() {
        let t0 = Instant::now();
        let hb = Duration::from_secs(60);
        let stored = Stored {
            value: Some(10.0),
            quality: Quality::Good,
            at: t0,
        };
        let bad = Quality::Bad(Reason::CommFailure);
        let cases = [
            (
                "first reading",
                None,
                reading(Some(10.0), Quality::Good),
                t0,
                true,
            ),
            (
                "small move",
                Some(stored),
                reading(Some(10.4), Quality::Good),
                t0,
                false,
            ),
            (
                "move of exactly the band",
                Some(stored),
                reading(Some(10.5), Quality::Good),
                t0,
                true,
            ),
            (
                "move down",
                Some(stored),
                reading(Some(9.4), Quality::Good),
                t0,
                true,
            ),
            ("quality change", Some(stored), reading(None, bad), t0, true),
            (
                "heartbeat due",
                Some(stored),
                reading(Some(10.0), Quality::Good),
                t0 + hb,
                true,
            ),
            (
                "heartbeat not due",
                Some(stored),
                reading(Some(10.0), Quality::Good),
                t0 + Duration::from_millis(59_999),
                false,
            ),
            (
                "repeated comm failure",
                Some(Stored {
                    value: None,
                    quality: bad,
                    at: t0,
                }),
                reading(None, bad),
                t0,
                false,
            ),
        ];
        for (name, last, r, now, expected) in cases {
            assert_eq!(keep(last.as_ref(), &r, 0.5, hb, now), expected, "{name}");
        }
    }
}
