//! Alert rules: pure functions of a point's recent samples and the clock.
//!
//! A [`Condition`] looks at one sample and says whether it *raises* (true),
//! *clears* (false), or says nothing (inside a hysteresis band, or a sample it
//! cannot judge). The lifecycle ([`step`]) turns that into alert transitions:
//! inactive → pending (raised) → firing (still raised after `for`) →
//! inactive (cleared, reported as resolved). A pending alert that clears
//! before `for` never fires.

use std::time::{Duration, Instant};

use adit_core::{Quality, Reason, Timestamp};

/// What a rule tests.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// Raised above `raise`, cleared below `clear` (`clear <= raise`).
    Above { raise: f64, clear: f64 },
    /// Raised below `raise`, cleared above `clear` (`clear >= raise`).
    Below { raise: f64, clear: f64 },
    /// Raised when the value moves faster than this, per second, either way.
    Rate { max_per_second: f64 },
    /// Raised after this many identical good values in a row (a stuck
    /// sensor); cleared by any change.
    Flatline { samples: u32 },
    /// Raised while the point is stale (no sample for its `stale_after`).
    Stale,
    /// Raised while the quality is bad (any reason but stale).
    BadQuality,
    /// Raised when the device's time is off by more than this from adit's, or
    /// was judged invalid (1970, far future).
    Clock { max_skew: Duration },
    /// Raised while the device's points report `bad(comm_failure)`; keyed
    /// by device, not by point.
    DeviceDown,
}

impl Condition {
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::Above { .. } => "above",
            Condition::Below { .. } => "below",
            Condition::Rate { .. } => "rate",
            Condition::Flatline { .. } => "flatline",
            Condition::Stale => "stale",
            Condition::BadQuality => "bad_quality",
            Condition::Clock { .. } => "clock",
            Condition::DeviceDown => "device_down",
        }
    }

    /// Thresholds for annotations.
    pub fn describe(&self) -> String {
        match self {
            Condition::Above { raise, clear } => format!("above {raise} (clears below {clear})"),
            Condition::Below { raise, clear } => format!("below {raise} (clears above {clear})"),
            Condition::Rate { max_per_second } => format!("changes faster than {max_per_second}/s"),
            Condition::Flatline { samples } => format!("{samples} identical samples in a row"),
            Condition::Stale => "no sample within stale_after".into(),
            Condition::BadQuality => "quality bad".into(),
            Condition::Clock { max_skew } => format!("device clock off by more than {max_skew:?}"),
            Condition::DeviceDown => "device not answering".into(),
        }
    }
}

/// One sample as a rule sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub value: Option<f64>,
    pub quality: Quality,
    pub source_ts: Timestamp,
    pub received_ts: Timestamp,
    /// Monotonic time the sample was seen.
    pub at: Instant,
}

/// What a condition remembers between samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Memory {
    last_value: Option<f64>,
    last_at: Option<Instant>,
    same_count: u32,
}

/// The condition's verdict on one sample: raise, clear, or no change.
pub fn judge(cond: &Condition, mem: &mut Memory, s: &Sample) -> Option<bool> {
    let good_value = if s.quality.is_good() { s.value } else { None };
    let verdict = match cond {
        Condition::Above { raise, clear } => good_value.and_then(|v| {
            if v > *raise {
                Some(true)
            } else if v < *clear {
                Some(false)
            } else {
                None
            }
        }),
        Condition::Below { raise, clear } => good_value.and_then(|v| {
            if v < *raise {
                Some(true)
            } else if v > *clear {
                Some(false)
            } else {
                None
            }
        }),
        Condition::Rate { max_per_second } => match (good_value, mem.last_value, mem.last_at) {
            (Some(v), Some(prev), Some(then)) => {
                let dt = s.at.saturating_duration_since(then).as_secs_f64();
                (dt > 0.0).then(|| ((v - prev) / dt).abs() > *max_per_second)
            }
            _ => None,
        },
        // Clears only on a change; raises once `samples` identical values
        // are counted; no verdict while counting (so an alert restored
        // firing after a restart, with no history, is neither resolved by
        // the first samples nor fired again: only a change clears it).
        Condition::Flatline { samples } => match good_value {
            Some(v) if mem.last_value.is_some_and(|last| last != v) => {
                mem.same_count = 1;
                Some(false)
            }
            Some(_) => {
                mem.same_count = mem.same_count.saturating_add(1);
                (mem.same_count >= *samples).then_some(true)
            }
            None => None,
        },
        Condition::Stale => Some(s.quality == Quality::Bad(Reason::Stale)),
        Condition::BadQuality => match s.quality {
            Quality::Bad(Reason::Stale) => None,
            Quality::Bad(_) => Some(true),
            _ => Some(false),
        },
        Condition::Clock { max_skew } => {
            if s.quality.reason() == Some(Reason::ClockInvalid) {
                Some(true)
            } else if s.value.is_some() {
                let skew = s.received_ts.micros_since(s.source_ts).unsigned_abs();
                Some(Duration::from_micros(skew) > *max_skew)
            } else {
                None
            }
        }
        // A gateway's 0x0A/0x0B: the device behind it does not answer.
        Condition::DeviceDown => match s.quality {
            Quality::Bad(Reason::CommFailure | Reason::DeviceException(0x0A | 0x0B)) => Some(true),
            Quality::Bad(Reason::Stale) => None,
            _ => Some(false),
        },
    };
    if good_value.is_some() {
        mem.last_value = good_value;
        mem.last_at = Some(s.at);
    }
    verdict
}

/// Where an alert is in its lifecycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Status {
    #[default]
    Inactive,
    Pending {
        since: Instant,
    },
    Firing {
        since: Instant,
    },
}

/// A change worth telling someone about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Fired,
    Resolved,
}

/// Advances the lifecycle with a verdict (`None`: no new information, only
/// time passed) at `now`.
pub fn step(
    status: Status,
    verdict: Option<bool>,
    hold: Duration,
    now: Instant,
) -> (Status, Option<Transition>) {
    match (status, verdict) {
        (Status::Inactive, Some(true)) if hold.is_zero() => {
            (Status::Firing { since: now }, Some(Transition::Fired))
        }
        (Status::Inactive, Some(true)) => (Status::Pending { since: now }, None),
        (Status::Pending { .. }, Some(false)) => (Status::Inactive, None),
        (Status::Pending { since }, _) if now.saturating_duration_since(since) >= hold => {
            (Status::Firing { since: now }, Some(Transition::Fired))
        }
        (Status::Firing { .. }, Some(false)) => (Status::Inactive, Some(Transition::Resolved)),
        (s, _) => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(value: f64, at: Instant) -> Sample {
        Sample {
            value: Some(value),
            quality: Quality::Good,
            source_ts: Timestamp(1_000_000),
            received_ts: Timestamp(1_000_000),
            at,
        }
    }

    /// Feeds values one second apart; returns the transitions per sample.
    fn run(cond: &Condition, hold: Duration, values: &[f64]) -> Vec<Option<Transition>> {
        let t0 = Instant::now();
        let mut mem = Memory::default();
        let mut status = Status::Inactive;
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let now = t0 + Duration::from_secs(i as u64);
                let verdict = judge(cond, &mut mem, &sample(*v, now));
                let (s, t) = step(status, verdict, hold, now);
                status = s;
                t
            })
            .collect()
    }

    use Transition::{Fired as F, Resolved as R};

    #[test]
    fn above_with_hysteresis_raises_holds_and_clears_only_below_the_clear_level() {
        // CO: congested-traffic warning at 70 ppm, clears below 60 (PIARC).
        let co = Condition::Above {
            raise: 70.0,
            clear: 60.0,
        };
        let got = run(
            &co,
            Duration::ZERO,
            &[50.0, 71.0, 75.0, 65.0, 69.0, 71.0, 59.0, 65.0],
        );
        assert_eq!(
            got,
            vec![None, Some(F), None, None, None, None, Some(R), None]
        );
    }

    #[test]
    fn a_for_duration_keeps_a_short_excursion_from_firing() {
        let co = Condition::Above {
            raise: 70.0,
            clear: 60.0,
        };
        // 2 s above, then below clear: pending, never fired.
        assert_eq!(
            run(&co, Duration::from_secs(3), &[80.0, 80.0, 50.0, 50.0]),
            vec![None, None, None, None]
        );
        // Above for 3 s: fires on the fourth sample.
        assert_eq!(
            run(&co, Duration::from_secs(3), &[80.0, 80.0, 80.0, 80.0, 50.0]),
            vec![None, None, None, Some(F), Some(R)]
        );
    }

    #[test]
    fn below_mirrors_above() {
        let velocity = Condition::Below {
            raise: -8.0,
            clear: -6.0,
        };
        assert_eq!(
            run(&velocity, Duration::ZERO, &[0.0, -9.0, -7.0, -5.0]),
            vec![None, Some(F), None, Some(R)]
        );
    }

    #[test]
    fn rate_of_change_catches_a_spike_and_clears_when_the_signal_settles() {
        let spike = Condition::Rate {
            max_per_second: 20.0,
        };
        assert_eq!(
            run(&spike, Duration::ZERO, &[30.0, 32.0, 150.0, 31.0, 33.0]),
            vec![None, None, Some(F), None, Some(R)]
        );
    }

    #[test]
    fn flatline_fires_after_n_identical_samples_and_clears_on_change() {
        let stuck = Condition::Flatline { samples: 4 };
        assert_eq!(
            run(&stuck, Duration::ZERO, &[3.1, 3.2, 3.2, 3.2, 3.2, 3.2, 3.3]),
            vec![None, None, None, None, Some(F), None, Some(R)]
        );
        // No history (an alert restored firing after a restart): counting
        // up gives no verdict, so the stuck sensor is neither resolved nor
        // fired again; only a change clears it.
        let mut mem = Memory::default();
        let at = |value: f64| Sample {
            value: Some(value),
            quality: Quality::Good,
            source_ts: Timestamp(0),
            received_ts: Timestamp(0),
            at: Instant::now(),
        };
        let verdicts: Vec<Option<bool>> = [3.2, 3.2, 3.2, 3.2, 3.3]
            .iter()
            .map(|&v| judge(&stuck, &mut mem, &at(v)))
            .collect();
        assert_eq!(verdicts, [None, None, None, Some(true), Some(false)]);
    }

    #[test]
    fn stale_bad_quality_and_device_down_follow_quality() {
        let t0 = Instant::now();
        let q = |quality: Quality, i: u64| Sample {
            value: None,
            quality,
            source_ts: Timestamp(0),
            received_ts: Timestamp(0),
            at: t0 + Duration::from_secs(i),
        };
        let stale = Quality::Bad(Reason::Stale);
        let comm = Quality::Bad(Reason::CommFailure);
        let cases: [(&Condition, Quality, Option<bool>); 10] = [
            (&Condition::Stale, stale, Some(true)),
            (&Condition::Stale, Quality::Good, Some(false)),
            (&Condition::Stale, comm, Some(false)),
            (&Condition::BadQuality, comm, Some(true)),
            (&Condition::BadQuality, stale, None),
            (
                &Condition::BadQuality,
                Quality::Uncertain(Reason::LastKnownValue),
                Some(false),
            ),
            (&Condition::DeviceDown, comm, Some(true)),
            (
                &Condition::DeviceDown,
                Quality::Bad(Reason::DeviceException(0x0B)),
                Some(true),
            ),
            (
                &Condition::DeviceDown,
                Quality::Bad(Reason::DeviceException(2)),
                Some(false),
            ),
            (&Condition::DeviceDown, stale, None),
        ];
        for (i, (cond, quality, expected)) in cases.into_iter().enumerate() {
            assert_eq!(
                judge(cond, &mut Memory::default(), &q(quality, i as u64)),
                expected,
                "{cond:?} on {quality}"
            );
        }
    }

    #[test]
    fn clock_rule_catches_1970_and_a_skewed_device() {
        let t0 = Instant::now();
        let rule = Condition::Clock {
            max_skew: Duration::from_secs(60),
        };
        let mut mem = Memory::default();
        let rtc_reset = Sample {
            value: Some(1.0),
            quality: Quality::Bad(Reason::ClockInvalid),
            source_ts: Timestamp(5),
            received_ts: Timestamp::from_secs(1_800_000_000),
            at: t0,
        };
        assert_eq!(judge(&rule, &mut mem, &rtc_reset), Some(true));
        let an_hour_off = Sample {
            value: Some(1.0),
            quality: Quality::Good,
            source_ts: Timestamp::from_secs(1_800_003_600),
            received_ts: Timestamp::from_secs(1_800_000_000),
            at: t0,
        };
        assert_eq!(judge(&rule, &mut mem, &an_hour_off), Some(true));
        let fine = Sample {
            source_ts: Timestamp::from_secs(1_800_000_001),
            ..an_hour_off
        };
        assert_eq!(judge(&rule, &mut mem, &fine), Some(false));
    }

    #[test]
    fn a_pending_alert_fires_on_time_even_without_new_samples() {
        let t0 = Instant::now();
        let (s, t) = step(Status::Inactive, Some(true), Duration::from_secs(10), t0);
        assert_eq!((s, t), (Status::Pending { since: t0 }, None));
        let (s, t) = step(
            s,
            None,
            Duration::from_secs(10),
            t0 + Duration::from_secs(9),
        );
        assert_eq!(t, None);
        let (_, t) = step(
            s,
            None,
            Duration::from_secs(10),
            t0 + Duration::from_secs(10),
        );
        assert_eq!(t, Some(Transition::Fired));
    }
}
