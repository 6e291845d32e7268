//! Sink stages: one thread per sink reads its cursor of the spool, batches by
//! rows and time, writes through the blocking [`Sink`], and acknowledges to
//! the spool only after the sink has committed.
//!
//! Invariants:
//! - a reading leaves the spool for a sink only through `ack`, after `write`
//!   returned `Ok` (or after a permanent error put the batch, fsynced, in
//!   the spool's `quarantine/`; if even that cannot be written, the batch
//!   stays in the spool and is retried);
//! - only what the sink calls *permanent* (certainly about the data: an HTTP
//!   4xx from the database, a row that cannot be encoded) is quarantined;
//!   everything else is retried with the shared jittered [`Backoff`], for as
//!   long as it takes; at shutdown, what is not yet stored stays in the spool
//!   for the next start (nothing is dropped to finish faster);
//! - what a stage holds is bounded: it reads from the spool only while it
//!   holds fewer than `batch_max_rows` readings (so at most that plus one
//!   record), and never while it retries a failed write;
//! - readings and alert transitions travel together but fail apart: each
//!   part is written (or quarantined) once, and the batch is acknowledged
//!   when both are done;
//! - every failure is this sink's own: its `SinkHealth` (failing since,
//!   last error) and every metric carry the sink's name.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use adit_core::{Backoff, PointRegistry, Reading};
use adit_spool::{AlertRecord, Spool};

use crate::{Health, Metrics};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth trying again later (database busy or down, disk I/O error,
    /// timeouts, 5xx, proxies, buffer limits).
    #[error("retryable: {0}")]
    Retryable(String),
    /// Certainly about the data: will fail again (rejected rows, a schema
    /// mismatch the database reports as a client error).
    #[error("permanent: {0}")]
    Permanent(String),
}

/// A destination for readings. Blocking: it runs on its own thread.
pub trait Sink: Send + 'static {
    /// Label for metrics, logs and the spool cursor (`sqlite`, `questdb`).
    fn name(&self) -> &'static str;
    /// Writes and commits the readings, all or nothing. Returns the rows the
    /// database now holds that it did not before, as far as it can tell (a
    /// replay of stored readings adds none); a database that gives no count
    /// returns the number of rows it accepted.
    fn write(&mut self, readings: &[Reading]) -> Result<u64, SinkError>;
    /// Writes and commits alert transitions (the alert history). Sinks
    /// without an alert table accept and ignore them.
    fn write_alerts(&mut self, alerts: &[AlertRecord]) -> Result<(), SinkError> {
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

/// What a stage holds between reading it from the spool and acknowledging it.
#[derive(Default)]
struct Held {
    readings: Vec<Reading>,
    alerts: Vec<AlertRecord>,
    last_seq: u64,
    first_at: Option<Instant>,
    /// Each part is written (or quarantined) once, independently.
    readings_done: bool,
    alerts_done: bool,
    /// A part went to quarantine (the sink is then reported failing).
    quarantined: bool,
}

impl Held {
    fn clear(&mut self) {
        self.readings.clear();
        self.alerts.clear();
        self.first_at = None;
        self.readings_done = false;
        self.alerts_done = false;
        self.quarantined = false;
    }
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
    let health = health.sink(name);
    let m = StageMetrics::new(&metrics, name);
    let mut reader = spool.reader(name, &registry);
    let mut acked = spool.cursors().get(name).copied().unwrap_or(0);
    let mut held = Held {
        readings: Vec::with_capacity(options.batch_max_rows),
        last_seq: acked,
        ..Held::default()
    };
    let mut backoff = Backoff::new(options.retry_min, options.retry_max);
    let mut retrying = false;
    let mut latency = crate::latency::new_histogram();
    health.set_ready(true);

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
        // Read only while there is room and no failed write waits for a retry.
        if !retrying && held.readings.len() < options.batch_max_rows {
            let room = options.batch_max_rows - held.readings.len();
            // Sleep until a batch is due: a full one, or the delay since the
            // first reading held; with nothing held, until anything comes.
            // Appends in between do not wake this thread.
            match held.first_at {
                Some(t) => reader.wait_for(room as u64, Some(t + options.batch_max_delay)),
                None if stopping.is_none() => reader.wait_for(1, None),
                None => {}
            }
            match reader.next_into(&mut held.readings, room, Duration::ZERO) {
                Ok(d) if d.records > 0 => {
                    held.alerts.extend(d.alerts);
                    held.last_seq = d.last_seq;
                    held.first_at.get_or_insert_with(Instant::now);
                }
                Ok(_) => {}
                Err(e) => {
                    health.failed(&format!("spool read: {e}"));
                    tracing::error!(sink = name, error = %e, "spool read failed; reopening the cursor");
                    std::thread::sleep(Duration::from_secs(1));
                    reader = spool.reader(name, &registry);
                    held.clear();
                    held.last_seq = acked;
                    continue;
                }
            }
            m.queue_rows.set(held.readings.len() as i64);
        }
        let due = held.last_seq > acked
            && (retrying
                || held.readings.len() >= options.batch_max_rows
                || held
                    .first_at
                    .is_some_and(|t| t.elapsed() >= options.batch_max_delay)
                || stopping.is_some());
        if !due {
            continue;
        }
        let timer = m.write_seconds.start_timer();
        let failure = write_held(&mut *sink, &mut held, &spool, &m, &audit, &mut latency);
        timer.observe_duration();
        if let Some(reason) = failure {
            m.retryable.inc();
            health.failed(&reason);
            let wait = backoff.next_delay();
            tracing::warn!(sink = name, rows = held.readings.len(), alerts = held.alerts.len(), %reason, retry_in_ms = wait.as_millis() as u64, "sink write failed; retrying");
            let until = Instant::now() + wait;
            while Instant::now() < until && stop.get().is_none_or(|(_, d)| Instant::now() < d) {
                std::thread::sleep(
                    Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())),
                );
            }
            retrying = true;
            continue;
        }
        retrying = false;
        backoff.reset();
        if held.quarantined {
            // Data went to quarantine: this sink is not storing everything.
            health.failed("a batch was refused for good and quarantined");
        } else {
            health.succeeded();
        }
        m.batches.inc();
        if let Err(e) = spool.ack(name, held.last_seq) {
            tracing::error!(sink = name, error = %e, "cannot record the acknowledgement; these readings will be sent again after a restart");
        }
        acked = held.last_seq;
        held.clear();
        m.queue_rows.set(0);
    }
    if let Err(e) = spool.flush_ledger() {
        tracing::error!(sink = name, error = %e, "cannot record the last acknowledgements; these readings will be sent again after a restart");
    }
    tracing::debug!(sink = name, acked, "sink stage stopped");
}

/// The metric children of one sink, resolved once.
struct StageMetrics {
    name: &'static str,
    written: prometheus::IntCounter,
    stored: prometheus::IntCounter,
    retryable: prometheus::IntCounter,
    permanent: prometheus::IntCounter,
    quarantined: prometheus::IntCounter,
    alerts_quarantined: prometheus::IntCounter,
    batches: prometheus::IntCounter,
    queue_rows: prometheus::IntGauge,
    write_seconds: prometheus::Histogram,
    ack_latency: crate::latency::AckLatency,
}

impl StageMetrics {
    fn new(metrics: &Metrics, name: &'static str) -> Self {
        Self {
            name,
            written: metrics.sink_rows_written.with_label_values(&[name]),
            stored: metrics.sink_rows_stored.with_label_values(&[name]),
            retryable: metrics.sink_errors.with_label_values(&[name, "retryable"]),
            permanent: metrics.sink_errors.with_label_values(&[name, "permanent"]),
            quarantined: metrics
                .sink_dropped
                .with_label_values(&[name, "quarantined"]),
            alerts_quarantined: metrics.sink_alerts_quarantined.with_label_values(&[name]),
            batches: metrics.sink_batches.with_label_values(&[name]),
            queue_rows: metrics.sink_queue_rows.with_label_values(&[name]),
            write_seconds: metrics.sink_write_seconds.with_label_values(&[name]),
            ack_latency: metrics.ack_latency.clone(),
        }
    }
}

/// Writes what is not yet done of `held`: alerts and readings each on their
/// own; a permanent error quarantines that part only. Returns the reason of
/// a failure worth retrying, if any.
fn write_held(
    sink: &mut dyn Sink,
    held: &mut Held,
    spool: &Spool,
    m: &StageMetrics,
    audit: &adit_audit::Audit,
    latency: &mut hdrhistogram::Histogram<u64>,
) -> Option<String> {
    let mut failure = None;
    if !held.alerts_done {
        let result = if held.alerts.is_empty() {
            Ok(())
        } else {
            sink.write_alerts(&held.alerts)
        };
        match result {
            Ok(()) => held.alerts_done = true,
            Err(SinkError::Retryable(reason)) => failure = Some(reason),
            Err(SinkError::Permanent(reason)) => {
                let copy = spool.quarantine_alerts(m.name, held.last_seq, &held.alerts);
                match quarantined(
                    m,
                    audit,
                    "alerts",
                    held.alerts.len(),
                    held.last_seq,
                    &reason,
                    copy,
                ) {
                    Ok(()) => {
                        m.alerts_quarantined.inc_by(held.alerts.len() as u64);
                        held.alerts_done = true;
                        held.quarantined = true;
                    }
                    Err(why) => failure = Some(why),
                }
            }
        }
    }
    if !held.readings_done {
        let result = if held.readings.is_empty() {
            Ok(0)
        } else {
            sink.write(&held.readings)
        };
        match result {
            Ok(new_rows) => {
                let sum = crate::latency::record_batch(
                    latency,
                    &held.readings,
                    adit_core::Timestamp::now(),
                );
                m.ack_latency.merge(m.name, latency, sum);
                m.written.inc_by(held.readings.len() as u64);
                m.stored.inc_by(new_rows);
                held.readings_done = true;
            }
            Err(SinkError::Retryable(reason)) => failure = failure.or(Some(reason)),
            Err(SinkError::Permanent(reason)) => {
                let copy = spool.quarantine_readings(m.name, held.last_seq, &held.readings);
                match quarantined(
                    m,
                    audit,
                    "readings",
                    held.readings.len(),
                    held.last_seq,
                    &reason,
                    copy,
                ) {
                    Ok(()) => {
                        m.quarantined.inc_by(held.readings.len() as u64);
                        held.readings_done = true;
                        held.quarantined = true;
                    }
                    Err(why) => failure = failure.or(Some(why)),
                }
            }
        }
    }
    failure
}

/// After a permanent refusal of one part: counts it and, if its quarantine
/// copy was written, logs and audits it; otherwise returns why the part must
/// stay in the spool and be retried.
fn quarantined(
    m: &StageMetrics,
    audit: &adit_audit::Audit,
    what: &str,
    items: usize,
    seq: u64,
    reason: &str,
    copy: std::io::Result<std::path::PathBuf>,
) -> Result<(), String> {
    m.permanent.inc();
    let file = copy.map_err(|e| format!("{reason}; and the quarantine copy failed: {e}"))?;
    report_quarantine(m.name, what, items, seq, &file, reason, audit);
    Ok(())
}

fn report_quarantine(
    sink: &str,
    what: &str,
    items: usize,
    seq: u64,
    file: &std::path::Path,
    reason: &str,
    audit: &adit_audit::Audit,
) {
    tracing::error!(sink, what, items, %reason, quarantine = %file.display(), "permanent sink error; batch quarantined (adit spool quarantine retry re-delivers it)");
    audit.record(
        "sink_quarantine",
        serde_json::json!({ "sink": sink, "what": what, "items": items, "spool_seq": seq, "file": file.display().to_string(), "reason": reason }),
    );
}
