//! The one-line live summary printed by `adit demo` and logged by `adit run`.

use std::time::Instant;

use adit_pipeline::{LiveState, Metrics, QualitySummary};

/// Rates computed between two calls.
pub struct SummaryClock {
    last_at: Instant,
    last_readings: u64,
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
            last_at: Instant::now(),
            last_readings: total_readings(metrics),
        }
    }

    /// Returns the summary line and updates the point gauges.
    pub fn line(&mut self, metrics: &Metrics, live: &LiveState) -> (String, QualitySummary) {
        let now = Instant::now();
        let readings = total_readings(metrics);
        let elapsed = now.duration_since(self.last_at).as_secs_f64().max(1e-3);
        let rate = (readings - self.last_readings) as f64 / elapsed;
        self.last_at = now;
        self.last_readings = readings;
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
