//! Wiring and lifecycle of the pipeline: sources → normalize (+ live state,
//! deadband) → spool writer → one stage per sink. Shutdown goes in order:
//! sources stop, normalize drains into the spool, the spool is flushed and
//! fsynced, then each sink delivers what it can until the drain deadline;
//! anything left is safe in the spool for the next start.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use adit_core::{Batch, PointRegistry, Quality, QualityClass, Reading, Reason, Timestamp};
use adit_spool::{AppendError, Spool};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::deadband::Deadband;
use crate::normalize::{normalize_batch, ClockRules};
use crate::sink::{run_sink, Sink, SinkOptions, SinkStage, StopSignal};
use crate::source::{ReadingSender, Source, SourceContext};
use crate::supervisor::supervise;
use crate::{Health, LiveState, Metrics};

/// Builds a fresh source; called again after the source failed or panicked.
pub type SourceFactory = Box<dyn Fn() -> Box<dyn Source> + Send + Sync>;

#[derive(Clone, Copy, Debug)]
pub struct PipelineOptions {
    pub channel_capacity: usize,
    pub clock: ClockRules,
    /// How long shutdown may spend delivering spooled readings to sinks.
    pub drain_timeout: Duration,
}

/// Where the pipeline reports: metrics, health flags and the audit log.
#[derive(Clone)]
pub struct Observers {
    pub metrics: Metrics,
    pub health: Arc<Health>,
    pub audit: adit_audit::Audit,
    /// The watchdog's input: a copy of every normalized batch, sent without
    /// waiting (a full queue is counted, the pipeline never waits for it).
    pub watchdog: Option<mpsc::Sender<Batch>>,
}

/// A running pipeline.
pub struct Pipeline {
    shutdown: CancellationToken,
    sources: Vec<JoinHandle<()>>,
    normalize: JoinHandle<()>,
    writer: JoinHandle<()>,
    sinks: Vec<JoinHandle<()>>,
    spool_metrics: JoinHandle<()>,
    stop_sinks: Arc<StopSignal>,
    spool: Spool,
    live: Arc<Mutex<LiveState>>,
    registry: Arc<PointRegistry>,
    health: Arc<Health>,
    metrics: Metrics,
    drain_timeout: Duration,
    _stop_on_drop: StopOnDrop,
}

/// Stops every stage when a pipeline is dropped without [`Pipeline::shutdown`]
/// (a caller that panicked or returned early): sink threads would otherwise
/// run forever and the runtime would wait for them on its own shutdown.
/// After a proper shutdown it finds the stop already set and does nothing.
struct StopOnDrop {
    shutdown: CancellationToken,
    stop_sinks: Arc<StopSignal>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.stop_sinks.stop_now_unless_stopping();
    }
}

/// What shutdown achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every sink acknowledged everything that was spooled.
    pub drained: bool,
    /// Records left in the spool for the next start.
    pub left_in_spool: u64,
}

impl Pipeline {
    /// Starts the stages; must be called inside a Tokio runtime.
    pub fn start(
        registry: Arc<PointRegistry>,
        sources: Vec<(&'static str, SourceFactory)>,
        sinks: Vec<(Box<dyn Sink>, SinkOptions)>,
        spool: Spool,
        options: PipelineOptions,
        observers: Observers,
    ) -> Self {
        let Observers {
            metrics,
            health,
            audit,
            watchdog,
        } = observers;
        let (metrics, audit) = (&metrics, &audit);
        let shutdown = CancellationToken::new();
        let (source_tx, source_rx) = mpsc::channel::<Batch>(options.channel_capacity);
        let (spool_tx, spool_rx) = mpsc::channel::<Batch>(options.channel_capacity);
        let live = Arc::new(Mutex::new(LiveState::new_at(
            &registry,
            tokio::time::Instant::now().into_std(),
        )));
        let stop_sinks = Arc::new(StopSignal::default());

        let sinks = sinks
            .into_iter()
            .map(|(sink, sink_options)| {
                // Known to readiness from the start, ready once its stage runs.
                health.sink(sink.name()).set_ready(false);
                let stage = SinkStage {
                    sink,
                    spool: spool.clone(),
                    registry: registry.clone(),
                    options: sink_options,
                    metrics: metrics.clone(),
                    health: health.clone(),
                    stop: stop_sinks.clone(),
                    audit: audit.clone(),
                };
                tokio::task::spawn_blocking(move || run_sink(stage))
            })
            .collect();
        let writer = {
            let spool = spool.clone();
            let metrics = metrics.clone();
            let health = health.clone();
            let audit = audit.clone();
            tokio::task::spawn_blocking(move || {
                run_spool_writer(spool_rx, &spool, &metrics, &health, &audit);
            })
        };
        let to_spool = ReadingSender::new(
            spool_tx,
            metrics.backpressure.with_label_values(&["spool"]),
            None,
        );
        let normalize = tokio::spawn(run_normalize(
            watchdog,
            source_rx,
            to_spool,
            registry.clone(),
            live.clone(),
            options.clock,
            metrics.clone(),
        ));

        let sources = sources
            .into_iter()
            .map(|(protocol, factory)| {
                let ctx = SourceContext {
                    out: ReadingSender::new(
                        source_tx.clone(),
                        metrics.backpressure.with_label_values(&["normalize"]),
                        Some(metrics.source_readings.with_label_values(&[protocol])),
                    ),
                    shutdown: shutdown.child_token(),
                };
                tokio::spawn(supervise(factory, ctx, metrics.clone()))
            })
            .collect();
        let stale_checker = {
            let out = ReadingSender::new(
                source_tx.clone(),
                metrics.backpressure.with_label_values(&["normalize"]),
                None,
            );
            tokio::spawn(run_stale_checker(
                live.clone(),
                out,
                shutdown.clone(),
                metrics.stale_transitions.clone(),
            ))
        };
        let mut sources: Vec<JoinHandle<()>> = sources;
        sources.push(stale_checker);
        drop(source_tx);
        health.set_pipeline_running(true);
        let spool_metrics = {
            let spool = spool.clone();
            let m = metrics.spool.clone();
            let stop = shutdown.clone();
            let audit = audit.clone();
            let audit_lost = metrics.audit_lost.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut audited = [0u64; 5];
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            m.update(&spool);
                            audit_lost.inc_by(audit.stats().lost.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(audit_lost.get()));
                            audit_spool_drops(&spool, &audit, &mut audited);
                        }
                        () = stop.cancelled() => return,
                    }
                }
            })
        };

        Self {
            _stop_on_drop: StopOnDrop {
                shutdown: shutdown.clone(),
                stop_sinks: stop_sinks.clone(),
            },
            shutdown,
            sources,
            normalize,
            writer,
            sinks,
            spool_metrics,
            stop_sinks,
            spool,
            live,
            registry,
            health,
            metrics: metrics.clone(),
            drain_timeout: options.drain_timeout,
        }
    }

    pub fn live(&self) -> Arc<Mutex<LiveState>> {
        self.live.clone()
    }

    pub fn registry(&self) -> Arc<PointRegistry> {
        self.registry.clone()
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Stops the sources, spools what is in flight, then lets the sinks
    /// deliver until the drain timeout. A spool writer waiting for space
    /// (`when_full = block`) gets the drain timeout too; then the spool is
    /// closed, and what still waits is counted as not accepted
    /// (`adit_sink_readings_dropped_total{sink="spool",reason="spool_closed"}`).
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.shutdown.cancel();
        for s in self.sources {
            let _ = s.await;
        }
        let (mut normalized, mut written) = (false, false);
        let spooled = tokio::time::timeout(self.drain_timeout, async {
            let _ = (&mut self.normalize).await;
            normalized = true;
            let _ = (&mut self.writer).await;
            written = true;
        })
        .await;
        if spooled.is_err() {
            tracing::warn!("the spool writer is still waiting for space at the drain deadline; closing the spool (what waits is counted as not accepted)");
            self.spool.close();
            if !normalized {
                let _ = self.normalize.await;
            }
            if !written {
                let _ = self.writer.await;
            }
        }
        self.spool.close();
        let final_seq = self.spool.last_seq();
        self.stop_sinks
            .stop(final_seq, std::time::Instant::now() + self.drain_timeout);
        for s in self.sinks {
            let _ = s.await;
        }
        // Every handle of the spool is gone after this (its directory lock
        // with it): a restart in the same process, or `adit spool`, can open it.
        let _ = self.spool_metrics.await;
        self.health.set_pipeline_running(false);
        let left_in_spool = self.spool.pending_records();
        self.metrics.spool.update(&self.spool);
        if left_in_spool > 0 {
            tracing::warn!(
                records = left_in_spool,
                "not every sink caught up before the drain deadline; the rest is kept in the spool"
            );
        }
        ShutdownReport {
            drained: left_in_spool == 0,
            left_in_spool,
        }
    }
}

/// Marks points stale when their deadline passes: wakes at the earliest
/// deadline (at least once a second), and sends one `Bad(Stale)` marker per
/// point that went stale, so that the history shows when adit did not know.
async fn run_stale_checker(
    live: Arc<Mutex<LiveState>>,
    out: ReadingSender,
    shutdown: CancellationToken,
    transitions: prometheus::IntCounter,
) {
    loop {
        let now = tokio::time::Instant::now();
        let next = live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_deadline();
        let wake = next.map_or(now + Duration::from_secs(1), |d| {
            tokio::time::Instant::from_std(d).min(now + Duration::from_secs(1))
        });
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = shutdown.cancelled() => return,
        }
        let expired = live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .expire(tokio::time::Instant::now().into_std());
        if expired.is_empty() {
            continue;
        }
        transitions.inc_by(expired.len() as u64);
        let ts = Timestamp::now();
        let batch: Batch = expired
            .into_iter()
            .map(|id| Reading::without_value(id, Quality::Bad(Reason::Stale), ts))
            .collect();
        if out.send(batch).await.is_err() {
            return;
        }
    }
}

/// Writes one audit entry per second in which the spool dropped readings.
fn audit_spool_drops(spool: &Spool, audit: &adit_audit::Audit, audited: &mut [u64; 5]) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = spool.stats();
    let now = [
        s.dropped_oldest_readings.load(Relaxed),
        s.dropped_newest_readings.load(Relaxed),
        s.dropped_unknown_point_readings.load(Relaxed),
        s.dropped_too_large_readings.load(Relaxed),
        s.undecodable_readings.load(Relaxed),
    ];
    for ((reason, n), seen) in [
        "full_oldest",
        "full_newest",
        "unknown_point",
        "too_large",
        "undecodable",
    ]
    .iter()
    .zip(now)
    .zip(audited.iter_mut())
    {
        if n > *seen {
            audit.record(
                "spool_dropped",
                serde_json::json!({ "reason": reason, "readings": n - *seen, "total": n }),
            );
            *seen = n;
        }
    }
}

/// Appends every batch to the spool. Blocking.
fn run_spool_writer(
    mut rx: mpsc::Receiver<Batch>,
    spool: &Spool,
    metrics: &Metrics,
    health: &Health,
    audit: &adit_audit::Audit,
) {
    let failed = metrics
        .sink_dropped
        .with_label_values(&["spool", "spool_failed"]);
    let closed = metrics
        .sink_dropped
        .with_label_values(&["spool", "spool_closed"]);
    let mut reported = false;
    while let Some(batch) = rx.blocking_recv() {
        match spool.append(&batch) {
            Ok(_) | Err(AppendError::Dropped(_)) => {} // drops are counted by the spool
            Err(AppendError::Failed(why)) => {
                failed.inc_by(batch.len() as u64);
                health.set_fatal(true);
                if !reported {
                    tracing::error!(error = %why, "spool writer failed: readings cannot be stored until adit restarts");
                    audit.record("spool_writer_failed", serde_json::json!({ "error": why }));
                    reported = true;
                }
            }
            Err(AppendError::Closed) => {
                closed.inc_by(batch.len() as u64);
            }
        }
    }
}

/// Most readings the normalize stage merges into one batch.
const COALESCE_MAX_READINGS: usize = 8192;

async fn run_normalize(
    watchdog: Option<mpsc::Sender<Batch>>,
    mut rx: mpsc::Receiver<Batch>,
    out: ReadingSender,
    registry: Arc<PointRegistry>,
    live: Arc<Mutex<LiveState>>,
    rules: ClockRules,
    metrics: Metrics,
) {
    let by_class = [
        QualityClass::Good,
        QualityClass::Uncertain,
        QualityClass::Bad,
    ]
    .map(|c| metrics.readings.with_label_values(&[c.name()]));
    let flagged_conversion = metrics.flagged.with_label_values(&["conversion"]);
    let flagged_range = metrics.flagged.with_label_values(&["out_of_range"]);
    let flagged_clock = metrics.flagged.with_label_values(&["clock_invalid"]);
    let spool_gone = metrics
        .sink_dropped
        .with_label_values(&["spool", "writer_stopped"]);
    let mut deadband = Deadband::new(&registry);
    while let Some(mut batch) = rx.recv().await {
        // Batch across the hop: take what else is already waiting, so that
        // under load the later stages wake (and the spool frames) once per
        // many polls instead of once per poll.
        while batch.len() < COALESCE_MAX_READINGS {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let flagged = normalize_batch(&mut batch, &registry, rules, Timestamp::now());
        flagged_conversion.inc_by(flagged.conversion);
        flagged_range.inc_by(flagged.out_of_range);
        flagged_clock.inc_by(flagged.clock_invalid);
        let mut counts = [0u64; 3];
        for r in &batch {
            counts[r.quality.class() as usize] += 1;
        }
        for (counter, n) in by_class.iter().zip(counts) {
            counter.inc_by(n);
        }
        let now = tokio::time::Instant::now().into_std();
        live.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(&batch, now);
        if let Some(tx) = &watchdog {
            if tx.try_send(batch.clone()).is_err() {
                metrics.watchdog_dropped.inc_by(batch.len() as u64);
            }
        }
        if deadband.is_active() {
            let suppressed = deadband.filter(&mut batch, now);
            metrics.deadband_suppressed.inc_by(suppressed as u64);
        }
        let n = batch.len();
        if out.send(batch).await.is_err() {
            spool_gone.inc_by(n as u64);
            tracing::error!(readings = n, "spool writer is gone; readings not stored");
        }
    }
}
