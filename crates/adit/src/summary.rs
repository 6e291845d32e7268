//! The one-line live summary printed by `adit demo` and logged by `adit run`.

use std::time::Instant;

use adit_pipeline::{LiveState, Metrics, QualitySummary};

/// How far back the readings rate looks: long enough to span several polls,
/// so that a summary tick landing on a poll does not alias the rate.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Rates over a trailing window of samples taken at each call.
pub struct SummaryClock {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

fn total_readings(metrics: &Metrics) -> u64 {
    ["good", "uncertain", "bad"]
        .iter()
        .map(|q| metrics.readings.with_label_values(&[q]).get())
        .sum()
}

impl SummaryClock {
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            samples: std::iter::once((Instant::now(), total_readings(metrics))).collect(),
        }
    }

    /// Returns the summary line and updates the point gauges.
    pub fn line(&mut self, metrics: &Metrics, live: &LiveState) -> (String, QualitySummary) {
        let now = Instant::now();
        let readings = total_readings(metrics);
        self.samples.push_back((now, readings));
        // Keep the newest sample that is at least RATE_WINDOW old, and all after it.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| now.duration_since(*t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let (then, before) = self.samples.front().copied().unwrap_or((now, readings));
        let rate = readings.saturating_sub(before) as f64
            / now.duration_since(then).as_secs_f64().max(1e-3);
        let s = live.summary(now);
        for (state, n) in [
            ("good", s.good),
            ("uncertain", s.uncertain),
            ("bad", s.bad),
            ("stale", s.stale),
            ("never", s.never),
        ] {
            metrics.points.with_label_values(&[state]).set(n as i64);
        }
        let stored = metrics
            .sink_rows_written
            .with_label_values(&["sqlite"])
            .get();
        let line = format!(
            "readings/s {rate:>7.1} | points good {} uncertain {} bad {} stale {} never {} | stored {stored}",
            s.good, s.uncertain, s.bad, s.stale, s.never
        );
        (line, s)
    }
}
