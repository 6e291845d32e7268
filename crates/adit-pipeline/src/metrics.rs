//! Pipeline metrics, registered once in the process's Prometheus registry.
//!
//! Names follow `adit_<thing>_<unit>[_total]`. Labels are bounded sets (stage,
//! protocol, sink, reason, quality class); never point ids or raw error text.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Spool counters, mirrored from the spool's own atomics once a second.
#[derive(Clone)]
pub struct SpoolMetrics {
    pub bytes: IntGauge,
    pub pending_records: IntGauge,
    pub appended_readings: IntCounter,
    pub dropped: IntCounterVec,
    pub block_waits: IntCounter,
    pub disk_full: IntCounter,
    pub fsyncs: IntCounter,
    pub fsync_failures: IntCounter,
    pub handed_off_records: IntCounter,
    seen: std::sync::Arc<std::sync::Mutex<[u64; 12]>>,
}

impl SpoolMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let plain = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(Self {
            bytes: gauge("adit_spool_bytes", "Bytes in spool segments on disk.")?,
            pending_records: gauge(
                "adit_spool_pending_records",
                "Spooled records not yet acknowledged by the slowest sink.",
            )?,
            appended_readings: plain(
                "adit_spool_appended_readings_total",
                "Readings appended to the spool.",
            )?,
            dropped: counter(
                registry,
                "adit_spool_dropped_readings_total",
                "Readings the spool dropped, by reason (full_oldest, full_newest, too_large, unknown_point, undecodable, unnamed_point).",
                &["reason"],
            )?,
            block_waits: plain(
                "adit_spool_block_waits_total",
                "Times an append waited for space (when_full = block).",
            )?,
            disk_full: plain(
                "adit_spool_disk_full_total",
                "Appends that hit a full disk (ENOSPC).",
            )?,
            fsyncs: plain("adit_spool_fsyncs_total", "fsync calls on spool segments.")?,
            fsync_failures: plain(
                "adit_spool_fsync_failures_total",
                "Failed fsyncs; each stops the spool writer until restart.",
            )?,
            handed_off_records: plain(
                "adit_spool_handed_off_records_total",
                "Records sinks took from the spool's memory (the handoff) instead of reading them back from disk.",
            )?,
            seen: std::sync::Arc::default(),
        })
    }

    /// Copies the spool's counters into the metrics.
    pub fn update(&self, spool: &adit_spool::Spool) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = spool.stats();
        let now = [
            s.appended_readings.load(Relaxed),
            s.dropped_oldest_readings.load(Relaxed),
            s.dropped_newest_readings.load(Relaxed),
            s.dropped_unknown_point_readings.load(Relaxed),
            s.block_waits.load(Relaxed),
            s.disk_full_events.load(Relaxed),
            s.fsyncs.load(Relaxed),
            s.fsync_failures.load(Relaxed),
            s.dropped_too_large_readings.load(Relaxed),
            s.undecodable_readings.load(Relaxed),
            s.dropped_unnamed_readings.load(Relaxed),
            s.handed_off_records.load(Relaxed),
        ];
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let delta: Vec<u64> = now
            .iter()
            .zip(seen.iter())
            .map(|(n, o)| n.saturating_sub(*o))
            .collect();
        *seen = now;
        drop(seen);
        self.appended_readings.inc_by(delta[0]);
        self.dropped
            .with_label_values(&["full_oldest"])
            .inc_by(delta[1]);
        self.dropped
            .with_label_values(&["full_newest"])
            .inc_by(delta[2]);
        self.dropped
            .with_label_values(&["unknown_point"])
            .inc_by(delta[3]);
        self.block_waits.inc_by(delta[4]);
        self.disk_full.inc_by(delta[5]);
        self.fsyncs.inc_by(delta[6]);
        self.fsync_failures.inc_by(delta[7]);
        self.dropped
            .with_label_values(&["too_large"])
            .inc_by(delta[8]);
        self.dropped
            .with_label_values(&["undecodable"])
            .inc_by(delta[9]);
        self.dropped
            .with_label_values(&["unnamed_point"])
            .inc_by(delta[10]);
        self.handed_off_records.inc_by(delta[11]);
        self.bytes
            .set(i64::try_from(s.bytes.load(Relaxed)).unwrap_or(i64::MAX));
        self.pending_records
            .set(i64::try_from(spool.pending_records()).unwrap_or(i64::MAX));
    }
}

#[derive(Clone)]
pub struct Metrics {
    pub spool: SpoolMetrics,
    pub registry: Registry,
    pub source_readings: IntCounterVec,
    pub readings: IntCounterVec,
    pub flagged: IntCounterVec,
    pub backpressure: IntCounterVec,
    pub task_restarts: IntCounterVec,
    pub sink_rows_written: IntCounterVec,
    pub sink_rows_stored: IntCounterVec,
    pub sink_errors: IntCounterVec,
    pub sink_dropped: IntCounterVec,
    pub sink_alerts_quarantined: IntCounterVec,
    pub sink_write_seconds: HistogramVec,
    pub points: IntGaugeVec,
    pub sink_queue_rows: IntGaugeVec,
    pub sink_batches: IntCounterVec,
    pub deadband_suppressed: IntCounter,
    pub stale_transitions: IntCounter,
    pub points_refused: IntCounter,
    pub watchdog_dropped: IntCounter,
    pub audit_lost: IntCounter,
    pub ack_latency: crate::latency::AckLatency,
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    pub fn new(registry: Registry) -> prometheus::Result<Self> {
        let sink_write_seconds = HistogramVec::new(
            HistogramOpts::new(
                "adit_sink_write_seconds",
                "Time to write and commit one batch to a sink.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["sink"],
        )?;
        registry.register(Box::new(sink_write_seconds.clone()))?;
        let points = IntGaugeVec::new(
            Opts::new(
                "adit_points",
                "Configured points by current state (good, uncertain, bad, stale, never).",
            ),
            &["state"],
        )?;
        registry.register(Box::new(points.clone()))?;
        let sink_queue_rows = IntGaugeVec::new(
            Opts::new(
                "adit_sink_queue_rows",
                "Readings held by a sink stage, not yet committed.",
            ),
            &["sink"],
        )?;
        registry.register(Box::new(sink_queue_rows.clone()))?;
        let deadband_suppressed = IntCounter::new(
            "adit_deadband_suppressed_total",
            "Readings not stored because they moved less than their point's deadband (the live state still saw them).",
        )?;
        registry.register(Box::new(deadband_suppressed.clone()))?;
        let stale_transitions = IntCounter::new(
            "adit_stale_transitions_total",
            "Times a point went stale (no sample for its stale_after).",
        )?;
        registry.register(Box::new(stale_transitions.clone()))?;
        let points_refused = IntCounter::new(
            "adit_points_refused_total",
            "Points a source named at run time that were refused: pipeline.max_points reached (audited).",
        )?;
        registry.register(Box::new(points_refused.clone()))?;
        let watchdog_dropped = IntCounter::new(
            "adit_watchdog_dropped_readings_total",
            "Readings the watchdog could not take (its queue was full); stored anyway, but not checked by rules.",
        )?;
        registry.register(Box::new(watchdog_dropped.clone()))?;
        let audit_lost = IntCounter::new(
            "adit_audit_entries_lost_total",
            "Audit entries not written (queue full or file unwritable).",
        )?;
        registry.register(Box::new(audit_lost.clone()))?;
        let ack_latency = crate::latency::AckLatency::new()?;
        registry.register(Box::new(ack_latency.clone()))?;
        Ok(Self {
            spool: SpoolMetrics::new(&registry)?,
            source_readings: counter(
                &registry,
                "adit_source_readings_total",
                "Readings emitted by sources, by protocol.",
                &["protocol"],
            )?,
            readings: counter(
                &registry,
                "adit_readings_total",
                "Readings after normalization, by quality class.",
                &["quality"],
            )?,
            flagged: counter(
                &registry,
                "adit_normalize_flagged_total",
                "Readings whose quality normalization lowered, by reason.",
                &["reason"],
            )?,
            backpressure: counter(
                &registry,
                "adit_pipeline_backpressure_total",
                "Sends that had to wait for a full channel, by stage.",
                &["stage"],
            )?,
            task_restarts: counter(
                &registry,
                "adit_task_restarts_total",
                "Supervised tasks restarted after an error or panic.",
                &["kind", "cause"],
            )?,
            sink_rows_written: counter(
                &registry,
                "adit_sink_rows_written_total",
                "Readings committed to a sink (replays of already stored readings included).",
                &["sink"],
            )?,
            sink_rows_stored: counter(
                &registry,
                "adit_sink_rows_stored_total",
                "Rows the database reports it now holds that it did not before (SQLite: inserted rows; line protocol: rows the server accepted, it gives no count).",
                &["sink"],
            )?,
            sink_batches: counter(
                &registry,
                "adit_sink_batches_total",
                "Batches committed to a sink.",
                &["sink"],
            )?,
            sink_alerts_quarantined: counter(
                &registry,
                "adit_sink_alerts_quarantined_total",
                "Alert transitions a sink refused for good, kept in the spool's quarantine/.",
                &["sink"],
            )?,
            sink_errors: counter(
                &registry,
                "adit_sink_errors_total",
                "Failed sink writes, by kind (retryable, permanent).",
                &["sink", "kind"],
            )?,
            sink_dropped: counter(
                &registry,
                "adit_sink_readings_dropped_total",
                "Readings a sink could not store, by reason.",
                &["sink", "reason"],
            )?,
            sink_write_seconds,
            points,
            sink_queue_rows,
            deadband_suppressed,
            stale_transitions,
            points_refused,
            watchdog_dropped,
            audit_lost,
            ack_latency,
            registry,
        })
    }

    /// The sum of a counter over every series whose labels include all of
    /// `labels` (for self-health checks, tests and tools; not a hot path).
    pub fn counter_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.sample_sum(name, labels)
    }

    /// The sum of a counter's or a gauge's series whose labels include all
    /// of `labels` (tests and tools; not a hot path).
    pub fn sample_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| {
                labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                })
            })
            // A series is a counter or a gauge: the other reads 0.
            .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
            .sum()
    }

    /// Metrics in a private registry, for tests and tools.
    pub fn for_tests() -> Self {
        match Self::new(Registry::new()) {
            Ok(m) => m,
            Err(e) => unreachable_registry(&e),
        }
    }
}

#[cold]
fn unreachable_registry(e: &prometheus::Error) -> ! {
    // A fresh registry cannot hold duplicates; this would be a programming error.
    #[allow(clippy::panic)]
    {
        panic!("metrics registration failed in a fresh registry: {e}")
    }
}
