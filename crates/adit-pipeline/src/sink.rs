//! The sink stage: batches readings by rows and by time, writes them through a
//! blocking [`Sink`] off the async runtime, retries what can be retried.
//!
//! Invariants:
//! - one write in flight at a time; while a write is retried, upstream channels
//!   fill and apply backpressure (nothing is dropped to make room);
//! - a batch is retried with exponential backoff and jitter for as long as the
//!   sink says the error is retryable, except after shutdown was requested and
//!   the drain deadline has passed: those readings are counted as dropped with
//!   reason `shutdown_sink_unavailable`;
//! - a permanent error drops that batch only, counted with reason
//!   `permanent_error`, and the stage moves on.

use std::time::Duration;

use adit_core::{Batch, Reading};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{Health, Metrics};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth trying again later (database busy, disk I/O error, connection refused).
    #[error("retryable: {0}")]
    Retryable(String),
    /// Will fail again (schema mismatch, constraint violation).
    #[error("permanent: {0}")]
    Permanent(String),
}

/// A destination for readings. Blocking: it runs on a blocking thread.
pub trait Sink: Send + 'static {
    /// Label for metrics and logs (`sqlite`, `questdb`).
    fn name(&self) -> &'static str;
    /// Writes and commits the readings, all or nothing.
    fn write(&mut self, readings: &[Reading]) -> Result<(), SinkError>;
}

#[derive(Clone, Copy, Debug)]
pub struct SinkOptions {
    pub batch_max_rows: usize,
    pub batch_max_delay: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

/// Runs the sink stage until its input closes and everything is written.
/// `drain_deadline` is set by the runtime when shutdown starts.
pub async fn run_sink(
    sink: Box<dyn Sink>,
    mut rx: mpsc::Receiver<Batch>,
    options: SinkOptions,
    metrics: Metrics,
    health: std::sync::Arc<Health>,
    drain_deadline: tokio::sync::watch::Receiver<Option<Instant>>,
) {
    let name = sink.name();
    let rows_written = metrics.sink_rows_written.with_label_values(&[name]);
    let retryable = metrics.sink_errors.with_label_values(&[name, "retryable"]);
    let permanent = metrics.sink_errors.with_label_values(&[name, "permanent"]);
    let dropped_permanent = metrics
        .sink_dropped
        .with_label_values(&[name, "permanent_error"]);
    let dropped_shutdown = metrics
        .sink_dropped
        .with_label_values(&[name, "shutdown_sink_unavailable"]);
    let started = std::time::Instant::now();
    let mut sink = Some(sink);
    let mut pending: Vec<Reading> = Vec::with_capacity(options.batch_max_rows);
    let mut input_open = true;
    health.set_sink_ready(true);

    while input_open || !pending.is_empty() {
        // Fill the batch until it is full, its oldest reading has waited long
        // enough, or the input is closed.
        let mut batch_deadline: Option<Instant> = None;
        while input_open && pending.len() < options.batch_max_rows {
            let next = match batch_deadline {
                None => rx.recv().await,
                Some(deadline) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            match next {
                Some(batch) => {
                    if batch_deadline.is_none() && !batch.is_empty() {
                        batch_deadline = Some(Instant::now() + options.batch_max_delay);
                    }
                    pending.extend(batch);
                }
                None => input_open = false,
            }
        }
        metrics.sink_queue_rows.set(pending.len() as i64);
        if pending.is_empty() {
            continue;
        }

        let mut backoff = options.retry_min;
        loop {
            let Some(mut s) = sink.take() else {
                return;
            };
            let rows = std::mem::take(&mut pending);
            let timer = metrics.sink_write_seconds.start_timer();
            let joined = tokio::task::spawn_blocking(move || {
                let result = s.write(&rows);
                (s, rows, result)
            })
            .await;
            timer.observe_duration();
            let (s, rows, result) = match joined {
                Ok(parts) => parts,
                Err(e) => {
                    // The sink panicked: its state is unknown and it is gone.
                    tracing::error!(sink = name, error = %e, "sink panicked; stopping the sink stage");
                    health.set_sink_ready(false);
                    return;
                }
            };
            sink = Some(s);
            pending = rows;
            match result {
                Ok(()) => {
                    rows_written.inc_by(pending.len() as u64);
                    metrics.sink_batches.inc();
                    health.sink_succeeded();
                    pending.clear();
                    break;
                }
                Err(SinkError::Permanent(reason)) => {
                    permanent.inc();
                    dropped_permanent.inc_by(pending.len() as u64);
                    tracing::error!(sink = name, rows = pending.len(), %reason, "permanent sink error; batch dropped");
                    pending.clear();
                    break;
                }
                Err(SinkError::Retryable(reason)) => {
                    retryable.inc();
                    health.sink_failed(started.elapsed().as_millis() as u64);
                    let deadline = *drain_deadline.borrow();
                    if deadline.is_some_and(|d| Instant::now() + backoff > d) {
                        dropped_shutdown.inc_by(pending.len() as u64);
                        tracing::error!(sink = name, rows = pending.len(), %reason, "sink still failing at the shutdown deadline; readings not stored");
                        pending.clear();
                        break;
                    }
                    tracing::warn!(sink = name, rows = pending.len(), %reason, retry_in_ms = backoff.as_millis() as u64, "sink write failed; retrying");
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(options.retry_max);
                }
            }
        }
        metrics.sink_queue_rows.set(0);
    }
    tracing::debug!(sink = name, "sink stage drained");
}

/// Full jitter between 50 % and 100 % of `d`.
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64() * 0.5)
}
