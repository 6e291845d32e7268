//! Sample → acknowledgement latency per sink: the time from a reading's
//! receive timestamp (when the collector had the answer) to the sink's commit
//! of the batch that holds it.
//!
//! The sink thread records every reading of a committed batch into its own
//! HDR histogram (µs, 2 significant digits; no atomics, no allocation) and
//! merges it into the shared one once per batch (one lock per batch).
//! Exported as the Prometheus histogram `adit_sink_ack_latency_seconds{sink}`
//! with log-spaced buckets (×1.25 from 100 µs to about 65 s), so a load tool
//! can take the difference of two scrapes and read quantiles of any window.

use std::sync::{Arc, Mutex, PoisonError};

use adit_core::{Reading, Timestamp};
use hdrhistogram::Histogram;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, LabelPair, Metric, MetricFamily, MetricType};

const NAME: &str = "adit_sink_ack_latency_seconds";
const HELP: &str = "Time from a reading's receipt to its commit in a sink.";
/// Highest latency tracked exactly (an hour); longer ones count as an hour.
const MAX_MICROS: u64 = 3_600_000_000;

/// A fresh histogram for one sink thread.
pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 2 significant digits: about 20 KiB, allocated once.
    Histogram::new_with_bounds(1, MAX_MICROS, 2)
        .unwrap_or_else(|_| Histogram::new(2).unwrap_or_else(|_| unreachable_bounds()))
}

#[cold]
fn unreachable_bounds() -> ! {
    #[allow(clippy::panic)]
    {
        panic!("constant histogram bounds rejected")
    }
}

/// Records the latency of every reading in `readings`, committed at `now`.
/// Returns the sum in µs (for the histogram's `_sum`).
///
/// Readings taken together (a poll's block, one message) share their receive
/// time: each run of equal times is one histogram update of that count.
pub fn record_batch(h: &mut Histogram<u64>, readings: &[Reading], now: Timestamp) -> u64 {
    let mut sum = 0u64;
    let mut record = |received: i64, count: u64| {
        let micros = u64::try_from(now.0.saturating_sub(received)).unwrap_or(0);
        h.saturating_record_n(micros.max(1), count);
        sum = sum.saturating_add(micros.saturating_mul(count));
    };
    let mut run: Option<(i64, u64)> = None;
    for r in readings {
        match &mut run {
            Some((at, count)) if *at == r.received_ts.0 => *count += 1,
            _ => {
                if let Some((at, count)) = run {
                    record(at, count);
                }
                run = Some((r.received_ts.0, 1));
            }
        }
    }
    if let Some((at, count)) = run {
        record(at, count);
    }
    sum
}

struct PerSink {
    sink: &'static str,
    histogram: Histogram<u64>,
    sum_micros: u64,
}

/// The shared latency histograms of every sink, and their exporter.
#[derive(Clone)]
pub struct AckLatency {
    inner: Arc<Mutex<Vec<PerSink>>>,
    desc: Arc<Desc>,
}

impl AckLatency {
    pub fn new() -> prometheus::Result<Self> {
        Ok(Self {
            inner: Arc::default(),
            desc: Arc::new(Desc::new(
                NAME.into(),
                HELP.into(),
                vec!["sink".into()],
                std::collections::HashMap::new(),
            )?),
        })
    }

    /// Adds a sink thread's histogram and resets it.
    pub fn merge(&self, sink: &'static str, local: &mut Histogram<u64>, sum_micros: u64) {
        let mut all = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let index = if let Some(i) = all.iter().position(|p| p.sink == sink) {
            i
        } else {
            all.push(PerSink {
                sink,
                histogram: new_histogram(),
                sum_micros: 0,
            });
            all.len() - 1
        };
        if let Some(entry) = all.get_mut(index) {
            // Same bounds on both sides: this cannot fail; if it did, the
            // batch would only be missing from the latency figures.
            let _ = entry.histogram.add(&*local);
            entry.sum_micros = entry.sum_micros.saturating_add(sum_micros);
        }
        drop(all);
        local.reset();
    }

    /// The latency at quantile `q` (0..=1) of everything `sink` committed.
    pub fn quantile(&self, sink: &str, q: f64) -> Option<std::time::Duration> {
        let all = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let p = all.iter().find(|p| p.sink == sink)?;
        (!p.histogram.is_empty())
            .then(|| std::time::Duration::from_micros(p.histogram.value_at_quantile(q)))
    }

    /// Upper bounds of the exported buckets, in seconds.
    pub fn bucket_bounds() -> impl Iterator<Item = f64> {
        (0..=60).map(|k| 0.0001 * 1.25f64.powi(k))
    }
}

impl Collector for AckLatency {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let all = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let bounds: Vec<f64> = Self::bucket_bounds().collect();
        let metrics = all
            .iter()
            .map(|p| {
                let mut counts = vec![0u64; bounds.len()];
                for v in p.histogram.iter_recorded() {
                    let secs = p.histogram.highest_equivalent(v.value_iterated_to()) as f64 / 1e6;
                    let first = bounds.partition_point(|b| *b < secs);
                    if let Some(c) = counts.get_mut(first) {
                        *c += v.count_since_last_iteration();
                    }
                }
                let mut cumulative = 0;
                let buckets = bounds
                    .iter()
                    .zip(counts)
                    .map(|(bound, n)| {
                        cumulative += n;
                        let mut b = Bucket::default();
                        b.set_upper_bound(*bound);
                        b.set_cumulative_count(cumulative);
                        b
                    })
                    .collect();
                let mut h = prometheus::proto::Histogram::default();
                h.set_sample_count(p.histogram.len());
                h.set_sample_sum(p.sum_micros as f64 / 1e6);
                h.set_bucket(buckets);
                let mut label = LabelPair::default();
                label.set_name("sink".into());
                label.set_value(p.sink.into());
                let mut m = Metric::default();
                m.set_label(vec![label]);
                m.set_histogram(h);
                m
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(NAME.into());
        family.set_help(HELP.into());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(metrics);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::{PointId, Quality};

    fn reading(received: i64) -> Reading {
        Reading::without_value(PointId(0), Quality::Good, Timestamp(received))
    }

    #[test]
    fn latencies_land_in_the_right_buckets_and_quantiles() {
        let latency = AckLatency::new().unwrap();
        let mut local = new_histogram();
        // 98 readings 10 ms old, one 200 ms, one 2 s, committed at t = 10 s.
        let now = Timestamp(10_000_000);
        let mut batch: Vec<Reading> = (0..98).map(|_| reading(now.0 - 10_000)).collect();
        batch.push(reading(now.0 - 200_000));
        batch.push(reading(now.0 - 2_000_000));
        let sum = record_batch(&mut local, &batch, now);
        assert_eq!(sum, 98 * 10_000 + 200_000 + 2_000_000);
        latency.merge("sqlite", &mut local, sum);
        assert_eq!(
            local.len(),
            0,
            "the thread's histogram is reset after a merge"
        );

        let ms = |q| latency.quantile("sqlite", q).unwrap().as_secs_f64() * 1e3;
        assert!((ms(0.5) - 10.0).abs() < 0.1, "{}", ms(0.5));
        assert!((ms(0.99) - 200.0).abs() < 2.0, "{}", ms(0.99));
        assert!((ms(1.0) - 2000.0).abs() < 20.0, "{}", ms(1.0));
        assert!(latency.quantile("questdb", 0.5).is_none());

        let family = &latency.collect()[0];
        let h = family.get_metric()[0].get_histogram();
        assert_eq!(h.get_sample_count(), 100);
        let le = |secs: f64| {
            h.get_bucket()
                .iter()
                .rfind(|b| b.upper_bound() <= secs)
                .unwrap()
                .cumulative_count()
        };
        // Count of readings at or below the largest bound under each figure.
        assert_eq!(le(0.0099), 0);
        assert_eq!(le(0.0125), 98);
        assert_eq!(le(0.19), 98);
        assert_eq!(le(0.3), 99);
        assert_eq!(le(1.9), 99);
        assert_eq!(le(3.0), 100);
    }

    #[test]
    fn runs_of_equal_receive_times_count_every_reading() {
        let mut local = new_histogram();
        let now = Timestamp(10_000_000);
        let times = [1_000, 1_000, 5_000, 1_000, 1_000, 1_000, 9_000];
        let batch: Vec<Reading> = times.iter().map(|t| reading(now.0 - t)).collect();
        let sum = record_batch(&mut local, &batch, now);
        assert_eq!(sum, times.iter().map(|t| *t as u64).sum::<u64>());
        assert_eq!(local.len(), 7);
        assert_eq!(local.count_at(1_000), 5);
        assert_eq!(local.count_at(5_000), 1);
        assert_eq!(local.count_at(9_000), 1);
    }

    #[test]
    fn clocks_that_step_back_count_as_zero_not_as_a_panic() {
        let mut local = new_histogram();
        let sum = record_batch(&mut local, &[reading(5_000_000)], Timestamp(1_000_000));
        assert_eq!(sum, 0);
        assert_eq!(local.len(), 1);
    }
}
