//! Normalization: the pure step that makes every reading honest about itself.
//!
//! It only ever lowers quality (Good → Bad), never raises it, and never
//! discards a reading: a NaN becomes `Bad(Conversion)` without a value, a value
//! outside the point's engineering range becomes `Bad(OutOfRange)` with the
//! value kept (operators need to see the absurd number), and a source
//! timestamp before 1970, too far in the future or too old becomes
//! `Bad(ClockInvalid)` with the timestamp kept, and is stored at its receive
//! time (see [`give_receive_times`] for sources whose receive time field
//! holds a key derived from the sample's own time: there only a plainly
//! wrong time is replaced; a sample that is only too old keeps it).

use std::time::Duration;

use adit_core::{PointId, PointRegistry, Quality, Reading, Reason, Timestamp, Value};

/// The engineering ranges of the registry's points, dense by id: what
/// normalize reads per reading, 16 bytes a point next to each other instead
/// of each point's whole metadata behind the registry's lazily set cells
/// (about 4 % of adit's CPU at 20k readings/s went to that lookup).
/// Points registered later are taken in by [`sync`](Self::sync). A point
/// without a range has (−∞, +∞): no finite value is outside it (NaN never
/// gets here: it is flagged before, and its value removed).
#[derive(Clone, Debug, Default)]
pub struct Ranges(Vec<(f64, f64)>);

const NO_RANGE: (f64, f64) = (f64::NEG_INFINITY, f64::INFINITY);

impl Ranges {
    pub fn new(registry: &PointRegistry) -> Self {
        let mut ranges = Self::default();
        ranges.sync(registry);
        ranges
    }

    /// Takes in the points registered since the last call.
    pub fn sync(&mut self, registry: &PointRegistry) {
        for i in self.0.len()..registry.len() {
            let Some(meta) = registry.get(PointId(i as u32)) else {
                // Not set yet (cannot happen: slots are set before the
                // length is published); taken in on a later call.
                return;
            };
            self.0.push(meta.range.unwrap_or(NO_RANGE));
        }
    }

    fn of(&self, id: PointId) -> Option<(f64, f64)> {
        self.0.get(id.index()).copied()
    }
}

/// Limits for plausible source timestamps.
#[derive(Clone, Copy, Debug)]
pub struct ClockRules {
    pub max_future_skew: Duration,
    pub max_age: Duration,
}

/// Counts of readings whose quality normalization lowered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flagged {
    pub conversion: u64,
    pub out_of_range: u64,
    pub clock_invalid: u64,
}

/// Normalizes a batch in place against the points' ranges (synced with the
/// registry that named the batch's points) and the clock `now`.
pub fn normalize_batch(
    batch: &mut [Reading],
    ranges: &Ranges,
    rules: ClockRules,
    now: Timestamp,
) -> Flagged {
    let mut flagged = Flagged::default();
    let future_limit = now.saturating_add(rules.max_future_skew);
    let age_limit_us = i64::try_from(rules.max_age.as_micros()).unwrap_or(i64::MAX);
    for r in batch.iter_mut() {
        if let Some(Value::F64(v)) = r.value {
            if !v.is_finite() {
                r.value = None;
                r.quality = r.quality.worst(Quality::Bad(Reason::Conversion));
                flagged.conversion += 1;
            }
        }
        if let (Some(value), Some((lo, hi))) = (r.value.as_ref(), ranges.of(r.point)) {
            if let Some(v) = value.as_f64() {
                if v < lo || v > hi {
                    r.quality = r.quality.worst(Quality::Bad(Reason::OutOfRange));
                    flagged.out_of_range += 1;
                }
            }
        }
        let ts = r.source_ts;
        if ts.as_micros() < 0 || ts > future_limit || now.micros_since(ts) > age_limit_us {
            r.quality = r.quality.worst(Quality::Bad(Reason::ClockInvalid));
            flagged.clock_invalid += 1;
        }
    }
    flagged
}

/// Source times before this (2000-01-01) are a clock that was never set,
/// not late data.
const CLOCK_NEVER_SET_BEFORE: Timestamp = Timestamp(946_684_800_000_000);

/// A reading whose own clock is invalid is stored at its receive time
/// ([`Reading::stored_ts`]), so that a device stuck in 1970 or 2300 still
/// lands now. A source whose `received_ts` is a key made from the sample's
/// own time (MQTT: [`Reading::received_is_key`]) has no receive time in
/// it: such a reading flagged `ClockInvalid` whose time is plainly wrong
/// (before 2000, or further ahead than `max_future_skew`) gets one here,
/// `now` (when normalize takes the batch, normally milliseconds after the
/// message arrived), 1 µs after the previous one given (`last`) if that is
/// within a second ahead (so none share a storage key while the wall clock
/// runs forward, and one stepped back does not drag the times along).
/// Nothing when adit's own clock reads before 2000. Returns how many it
/// gave.
///
/// A sample that is only too old (older than `max_age`: late data, a
/// retained copy of a dead publisher's last value) keeps its own time and
/// key: it is stored then, flagged, and a redelivery is the same row. One
/// with a wrong clock no longer has a key from the message: delivered
/// again (after a crash or a lost connection), it is a second row, flagged
/// like the first, never a loss.
pub fn give_receive_times(
    batch: &mut [Reading],
    rules: ClockRules,
    now: Timestamp,
    last: &mut Timestamp,
) -> usize {
    if now < CLOCK_NEVER_SET_BEFORE {
        // adit's own clock is not set (a gateway booted without one, before
        // NTP): every good time looks ahead of it. Keep the samples' own.
        return 0;
    }
    let future_limit = now.saturating_add(rules.max_future_skew);
    let mut given = 0;
    for r in batch {
        // Runs on every reading of every batch: the cheap test first.
        if r.quality.reason() != Some(Reason::ClockInvalid) || !r.received_is_key() {
            continue;
        }
        if r.source_ts < CLOCK_NEVER_SET_BEFORE || r.source_ts > future_limit {
            let next = last.0.saturating_add(1);
            let at = if next > now.0 && next - now.0 < 1_000_000 {
                next
            } else {
                now.0
            };
            r.received_ts = Timestamp(at);
            *last = r.received_ts;
            given += 1;
        }
    }
    given
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::{PointId, PointMeta};

    fn registry() -> PointRegistry {
        let mut r = PointRegistry::new();
        r.insert(PointMeta {
            name: "co".into(),
            device: "d".into(),
            unit: "ppm".into(),
            range: Some((0.0, 300.0)),
            expected_interval_ms: 1000,
            deadband: None,
            deadband_heartbeat: std::time::Duration::from_secs(60),
            stale_after: std::time::Duration::from_secs(3),
        })
        .unwrap();
        r
    }

    const RULES: ClockRules = ClockRules {
        max_future_skew: Duration::from_secs(300),
        max_age: Duration::from_secs(86_400),
    };

    fn reading(value: Option<Value>, source_ts: Timestamp) -> Reading {
        Reading {
            point: PointId(0),
            value,
            quality: Quality::Good,
            source_ts,
            received_ts: source_ts,
        }
    }

    #[test]
    fn a_point_registered_after_the_ranges_were_taken_gets_its_range_once_synced() {
        let registry = registry();
        let mut ranges = Ranges::new(&registry);
        let mut meta = PointMeta::plain("no2", "d", 1000);
        meta.range = Some((0.0, 5.0));
        let id = registry.register(meta).unwrap();
        let now = Timestamp::from_secs(1_800_000_000);
        let mut batch = vec![Reading {
            point: id,
            ..reading(Some(Value::F64(9.0)), now)
        }];
        normalize_batch(&mut batch, &ranges, RULES, now);
        assert_eq!(batch[0].quality, Quality::Good, "not known yet");
        ranges.sync(&registry);
        normalize_batch(&mut batch, &ranges, RULES, now);
        assert_eq!(batch[0].quality, Quality::Bad(Reason::OutOfRange));
    }

    #[test]
    fn samples_with_an_invalid_clock_and_a_key_for_a_receive_time_are_stored_now_each_apart() {
        let now = Timestamp::from_secs(1_800_000_000);
        let at_1970 = Timestamp(5);
        let at_2300 = Timestamp::from_secs(10_413_792_000);
        let keyed = |ts: Timestamp, offset: i64| Reading {
            received_ts: Timestamp(ts.0 + offset),
            ..reading(Some(Value::F64(1.0)), ts)
        };
        let mut batch = vec![
            keyed(at_1970, 0),
            keyed(at_1970, 2),
            keyed(at_2300, 999),
            // A receive time of its own (a device clock read over Modbus):
            // kept, it is already when adit had the sample.
            Reading {
                received_ts: now,
                ..reading(Some(Value::F64(1.0)), at_1970)
            },
            // A good sample keeps its key.
            keyed(now, 4),
        ];
        // Only too old (late data): its own time and key, flagged.
        let three_days_ago = Timestamp(now.0 - 3 * 86_400_000_000);
        batch.push(keyed(three_days_ago, 6));
        normalize_batch(&mut batch, &Ranges::new(&registry()), RULES, now);
        let mut last = Timestamp(now.0 + 1);
        assert_eq!(give_receive_times(&mut batch, RULES, now, &mut last), 3);
        let stored: Vec<i64> = batch.iter().map(|r| r.stored_ts().0).collect();
        assert_eq!(
            stored,
            [
                now.0 + 2,
                now.0 + 3,
                now.0 + 4,
                now.0,
                now.0,
                three_days_ago.0 + 6
            ],
            "stored now, apart, after the last one given; late data at its time"
        );
        assert_eq!(batch[0].source_ts, at_1970, "the device's own time is kept");
        assert_eq!(batch[4].received_ts, Timestamp(now.0 + 4));
        assert_eq!(batch[5].quality, Quality::Bad(Reason::ClockInvalid));
        assert_eq!(last, Timestamp(now.0 + 4));
        // A last time far ahead (the wall clock stepped back): now again.
        let mut batch = vec![keyed(at_1970, 0)];
        normalize_batch(&mut batch, &Ranges::new(&registry()), RULES, now);
        let mut last = Timestamp(now.0 + 3_600_000_000);
        give_receive_times(&mut batch, RULES, now, &mut last);
        assert_eq!(batch[0].received_ts, now);
        // A last time behind (the usual case): now.
        let mut batch = vec![keyed(at_1970, 0)];
        normalize_batch(&mut batch, &Ranges::new(&registry()), RULES, now);
        let mut last = Timestamp(now.0 - 5);
        give_receive_times(&mut batch, RULES, now, &mut last);
        assert_eq!((batch[0].received_ts, last), (now, now));
        // adit's own clock not set (1970): good samples look ahead of it;
        // their own times and keys are kept.
        let early = Timestamp::from_secs(60);
        let mut batch = vec![keyed(now, 2)];
        normalize_batch(&mut batch, &Ranges::new(&registry()), RULES, early);
        assert_eq!(batch[0].quality, Quality::Bad(Reason::ClockInvalid));
        let mut last = Timestamp(0);
        assert_eq!(give_receive_times(&mut batch, RULES, early, &mut last), 0);
        assert_eq!(batch[0].stored_ts(), Timestamp(now.0 + 2));
    }

    #[test]
    fn table_of_inputs_and_resulting_quality() {
        let now = Timestamp::from_secs(1_800_000_000);
        let cases = [
            (
                "in range",
                reading(Some(Value::F64(50.0)), now),
                Quality::Good,
                true,
            ),
            (
                "at the upper limit",
                reading(Some(Value::F64(300.0)), now),
                Quality::Good,
                true,
            ),
            (
                "above range",
                reading(Some(Value::F64(300.1)), now),
                Quality::Bad(Reason::OutOfRange),
                true,
            ),
            (
                "sentinel -32768",
                reading(Some(Value::I64(-32768)), now),
                Quality::Bad(Reason::OutOfRange),
                true,
            ),
            (
                "NaN",
                reading(Some(Value::F64(f64::NAN)), now),
                Quality::Bad(Reason::Conversion),
                false,
            ),
            (
                "infinity",
                reading(Some(Value::F64(f64::INFINITY)), now),
                Quality::Bad(Reason::Conversion),
                false,
            ),
            (
                "1970 timestamp",
                reading(
                    Some(Value::F64(1.0)),
                    Timestamp(0).saturating_add(Duration::from_secs(5)),
                ),
                Quality::Bad(Reason::ClockInvalid),
                true,
            ),
            (
                "before 1970",
                reading(Some(Value::F64(1.0)), Timestamp(-5)),
                Quality::Bad(Reason::ClockInvalid),
                true,
            ),
            (
                "year 2300",
                reading(Some(Value::F64(1.0)), Timestamp::from_secs(10_413_792_000)),
                Quality::Bad(Reason::ClockInvalid),
                true,
            ),
            (
                "4 minutes ahead",
                reading(
                    Some(Value::F64(1.0)),
                    now.saturating_add(Duration::from_secs(240)),
                ),
                Quality::Good,
                true,
            ),
        ];
        for (name, input, expected, keeps_value) in cases {
            let mut batch = vec![input.clone()];
            normalize_batch(&mut batch, &Ranges::new(&registry()), RULES, now);
            assert_eq!(batch[0].quality, expected, "{name}");
            assert_eq!(batch[0].value.is_some(), keeps_value, "{name}");
            assert_eq!(
                batch[0].source_ts, input.source_ts,
                "{name}: timestamp must be kept"
            );
        }
    }

    #[test]
    fn an_already_bad_reading_keeps_its_first_reason() {
        let now = Timestamp::from_secs(1_800_000_000);
        let mut batch = vec![Reading::without_value(
            PointId(0),
            Quality::Bad(Reason::CommFailure),
            Timestamp(0),
        )];
        normalize_batch(&mut batch, &Ranges::new(&registry()), RULES, now);
        assert_eq!(batch[0].quality, Quality::Bad(Reason::CommFailure));
    }
}
