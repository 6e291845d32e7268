//! Sink stages: one thread per sink reads its cursor of the spool, batches by
//! rows and time, writes through the blocking [`Sink`], and acknowledges to
//! the spool only after the sink has committed.
//!
//! Invariants:
//! - a reading leaves the spool for a sink only through `ack`, after `write`
//!   returned `Ok` (or after a permanent error put the batch in quarantine);
//! - retryable errors are retried with exponential backoff and jitter, for as
//!   long as it takes; at shutdown, what is not yet stored stays in the spool
//!   for the next start (nothing is dropped to finish faster);
//! - a permanent error quarantines that batch (a file under the spool's
//!   `quarantine/`, counted) and the stage moves on: it never wedges.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use adit_core::{PointRegistry, Reading};
use adit_spool::Spool;

use crate::{Health, Metrics};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth trying again later (database busy, disk I/O error, connection refused).
    #[error("retryable: {0}")]
    Retryable(String),
    /// Will fail again (schema mismatch, rejected data).
    #[error("permanent: {0}")]
    Permanent(String),
}

/// A destination for readings. Blocking: it runs on its own thread.
pub trait Sink: Send + 'static {
    /// Label for metrics, logs and the spool cursor (`sqlite`, `questdb`).
    fn name(&self) -> &'static str;
    /// Writes and commits the readings, all or nothing.
    fn write(&mut self, readings: &[Reading]) -> Result<(), SinkError>;
    /// Writes and commits alert transitions (the alert history). Sinks
    /// without an alert table accept and ignore them.
    fn write_alerts(&mut self, alerts: &[adit_spool::AlertRecord]) -> Result<(), SinkError> {
        let _ = alerts;
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct SinkOptions {
    pub batch_max_rows: usize,
    pub batch_max_delay: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

/// Tells sink stages when to stop: once they have acknowledged `final_seq`,
/// or at `deadline`, whichever comes first.
#[derive(Debug, Default)]
pub struct StopSignal {
    inner: Mutex<Option<(u64, Instant)>>,
}

impl StopSignal {
    pub fn stop(&self, final_seq: u64, deadline: Instant) {
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner) = Some((final_seq, deadline));
    }
    /// Stops at once unless a stop is already under way (used when a
    /// pipeline is dropped without `shutdown`, e.g. a panicking caller).
    pub fn stop_now_unless_stopping(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.is_none() {
            *inner = Some((0, Instant::now()));
        }
    }
    fn get(&self) -> Option<(u64, Instant)> {
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Full jitter between 50 % and 100 % of `d`.
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// Everything a sink stage needs.
pub struct SinkStage {
    pub sink: Box<dyn Sink>,
    pub spool: Spool,
    pub registry: Arc<PointRegistry>,
    pub options: SinkOptions,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    pub stop: Arc<StopSignal>,
    pub audit: adit_audit::Audit,
}

/// Runs a sink stage until told to stop. Blocking.
pub fn run_sink(stage: SinkStage) {
    let SinkStage {
        mut sink,
        spool,
        registry,
        options,
        metrics,
        health,
        stop,
        audit,
    } = stage;
    let name = sink.name();
    let rows_written = metrics.sink_rows_written.with_label_values(&[name]);
    let retryable = metrics.sink_errors.with_label_values(&[name, "retryable"]);
    let permanent = metrics.sink_errors.with_label_values(&[name, "permanent"]);
    let quarantined = metrics
        .sink_dropped
        .with_label_values(&[name, "quarantined"]);
    let mut reader = spool.reader(name, &registry);
    let mut acked = spool.cursors().get(name).copied().unwrap_or(0);
    let mut pending: Vec<Reading> = Vec::with_capacity(options.batch_max_rows);
    let mut pending_alerts: Vec<adit_spool::AlertRecord> = Vec::new();
    let mut pending_last_seq = acked;
    let mut first_at: Option<Instant> = None;
    let mut backoff = options.retry_min;
    let mut latency = crate::latency::new_histogram();
    health.set_sink_ready(true);

    loop {
        let stopping = stop.get();
        if let Some((final_seq, deadline)) = stopping {
            if acked >= final_seq.min(spool.last_seq()) {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    sink = name,
                    left = spool.last_seq().saturating_sub(acked),
                    "shutdown deadline: records left in the spool for the next start"
                );
                break;
            }
        }
        let room = options.batch_max_rows.saturating_sub(pending.len()).max(1);
        let wait = match first_at {
            Some(t) => options.batch_max_delay.saturating_sub(t.elapsed()),
            None => Duration::from_millis(200),
        };
        match reader.next(room, wait) {
            Ok(d) if d.records > 0 => {
                pending.extend(d.readings);
                pending_alerts.extend(d.alerts);
                pending_last_seq = d.last_seq;
                first_at.get_or_insert_with(Instant::now);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(sink = name, error = %e, "spool read failed; reopening the cursor");
                std::thread::sleep(Duration::from_secs(1));
                reader = spool.reader(name, &registry);
                pending.clear();
                pending_alerts.clear();
                first_at = None;
                continue;
            }
        }
        metrics.sink_queue_rows.set(pending.len() as i64);
        let due = pending_last_seq > acked
            && (pending.len() >= options.batch_max_rows
                || first_at.is_some_and(|t| t.elapsed() >= options.batch_max_delay)
                || stopping.is_some());
        if !due {
            continue;
        }
        let timer = metrics.sink_write_seconds.start_timer();
        let alerts_result = if pending_alerts.is_empty() {
            Ok(())
        } else {
            sink.write_alerts(&pending_alerts)
        };
        let result = match alerts_result {
            Err(e) => Err(e),
            Ok(()) if pending.is_empty() => Ok(()),
            Ok(()) => sink.write(&pending),
        };
        timer.observe_duration();
        match result {
            Ok(()) => {
                let sum = crate::latency::record_batch(
                    &mut latency,
                    &pending,
                    adit_core::Timestamp::now(),
                );
                metrics.ack_latency.merge(name, &mut latency, sum);
                rows_written.inc_by(pending.len() as u64);
                metrics.sink_batches.inc();
                health.sink_succeeded();
                backoff = options.retry_min;
            }
            Err(SinkError::Permanent(reason)) => {
                permanent.inc();
                quarantined.inc_by(pending.len() as u64);
                let file = quarantine_batch(&spool, name, pending_last_seq, &pending);
                tracing::error!(sink = name, rows = pending.len(), %reason, quarantine = %file, "permanent sink error; batch quarantined");
                audit.record(
                    "sink_quarantine",
                    serde_json::json!({ "sink": name, "readings": pending.len(), "spool_seq": pending_last_seq, "file": file, "reason": reason }),
                );
            }
            Err(SinkError::Retryable(reason)) => {
                retryable.inc();
                health.mark_sink_failed();
                tracing::warn!(sink = name, rows = pending.len(), %reason, retry_in_ms = backoff.as_millis() as u64, "sink write failed; retrying");
                let until = Instant::now() + jitter(backoff);
                while Instant::now() < until && stop.get().is_none_or(|(_, d)| Instant::now() < d) {
                    std::thread::sleep(
                        Duration::from_millis(20)
                            .min(until.saturating_duration_since(Instant::now())),
                    );
                }
                backoff = (backoff * 2).min(options.retry_max);
                continue;
            }
        }
        if let Err(e) = spool.ack(name, pending_last_seq) {
            tracing::error!(sink = name, error = %e, "cannot record the acknowledgement; these readings will be sent again after a restart");
        }
        acked = pending_last_seq;
        pending.clear();
        pending_alerts.clear();
        first_at = None;
        metrics.sink_queue_rows.set(0);
    }
    tracing::debug!(sink = name, acked, "sink stage stopped");
}

/// Writes a batch a sink refused for good next to the spool, for inspection
/// and manual replay. Returns the file written (or why not).
fn quarantine_batch(spool: &Spool, sink: &str, seq: u64, readings: &[Reading]) -> String {
    let dir = spool.dir().join("quarantine");
    let path = dir.join(format!("sink-{sink}-{seq:020}.bin"));
    let mut payload = Vec::new();
    adit_spool::codec::encode_batch(spool.fingerprint(), readings, &mut payload);
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &payload)) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("(not written: {e})"),
    }
}
