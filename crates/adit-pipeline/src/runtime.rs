//! Wiring and lifecycle of the pipeline: sources → ingest (normalize, live
//! state, watchdog copy, deadband, spool append: one thread, one wake-up per
//! batch) → one stage per sink. Shutdown goes in order: sources stop, ingest
//! drains into the spool, the spool is flushed and fsynced, then each sink
//! delivers what it can until the drain deadline; anything left is safe in
//! the spool for the next start.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use adit_core::{Batch, PointRegistry, Quality, QualityClass, Reading, Reason, Timestamp};
use adit_spool::{AppendError, FsyncPolicy, Spool};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::deadband::Deadband;
use crate::normalize::{give_receive_times, normalize_batch, ClockRules, Ranges};
use crate::sink::{run_sink, Sink, SinkOptions, SinkStage, StopSignal};
use crate::supervisor::supervise;
use crate::Source;
use crate::{Health, LiveState, Metrics};
use adit_source::{Ack, DropReason, Envelope, Outcome, ReadingSender, SourceContext};

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
    /// The watchdog's input: every normalized batch, shared (not copied)
    /// with the spool writer, sent without waiting (a full queue is counted,
    /// the pipeline never waits for it).
    pub watchdog: Option<mpsc::Sender<Arc<Batch>>>,
}

/// A running pipeline.
pub struct Pipeline {
    shutdown: CancellationToken,
    sources: Vec<JoinHandle<()>>,
    ingest: JoinHandle<()>,
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
    spool: Spool,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.stop_sinks.stop_now_unless_stopping();
        // Wakes sink stages that sleep until a batch is due.
        self.spool.close();
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
        let (source_tx, source_rx) = mpsc::channel::<Envelope>(options.channel_capacity);
        let live = Arc::new(Mutex::new(LiveState::new_at(
            &registry,
            tokio::time::Instant::now().into_std(),
        )));
        let stop_sinks = Arc::new(StopSignal::default());
        // Before any reader exists: points that appear at run time are named
        // in the spool's point table before their first record, and readers
        // register them again from older tables.
        spool.attach_registry(registry.clone());

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
        let ingest = {
            let stage = Normalizer::new(
                watchdog,
                registry.clone(),
                live.clone(),
                options.clock,
                metrics,
            );
            let writer = SpoolWriter::new(spool.clone(), metrics, health.clone(), audit.clone());
            let capacity = options.channel_capacity;
            tokio::task::spawn_blocking(move || run_ingest(source_rx, stage, writer, capacity))
        };

        let registrar = {
            let audit = audit.clone();
            adit_source::PointRegistrar::new(
                registry.clone(),
                metrics.points_refused.clone(),
                Arc::new(move |name: &str, e: &adit_core::PointRegistryError| {
                    tracing::warn!(point = name, error = %e, "point refused: pipeline.max_points reached");
                    audit.record(
                        "point_refused",
                        serde_json::json!({ "point": name, "reason": e.to_string() }),
                    );
                }),
            )
        };
        let sources = sources
            .into_iter()
            .map(|(protocol, factory)| {
                let ctx = SourceContext {
                    points: registrar.clone(),
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
                // On the housekeeping grid: shares its wake-up with the
                // polls, the stale checker and the watchdog.
                m.update(&spool);
                let mut tick = adit_core::schedule::housekeeping_interval();
                let mut audited = [0u64; 6];
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
                spool: spool.clone(),
            },
            shutdown,
            sources,
            ingest,
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
        let spooled = tokio::time::timeout(self.drain_timeout, &mut self.ingest).await;
        if spooled.is_err() {
            tracing::warn!("the spool writer is still waiting for space at the drain deadline; closing the spool (what waits is counted as not accepted)");
            self.spool.close();
            let _ = self.ingest.await;
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
/// deadline (and at the next instant of the housekeeping grid, so at least
/// once a second, together with the other periodic work), and sends one
/// `Bad(Stale)` marker per point that went stale, so that the history shows
/// when adit did not know.
async fn run_stale_checker(
    live: Arc<Mutex<LiveState>>,
    out: ReadingSender,
    shutdown: CancellationToken,
    transitions: prometheus::IntCounter,
) {
    let doorbell = live
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .wake_handle();
    loop {
        let now = tokio::time::Instant::now();
        let housekeeping = tokio::time::Instant::from_std(
            adit_core::schedule::Grid::housekeeping().next_after(now.into_std()),
        );
        let wake = {
            let mut live = live.lock().unwrap_or_else(PoisonError::into_inner);
            let wake = live.next_deadline().map_or(housekeeping, |d| {
                tokio::time::Instant::from_std(d).min(housekeeping)
            });
            // A deadline that comes before this (a point fresh again with
            // an old sample, one registered since) rings the doorbell.
            live.plan_wake(wake.into_std());
            wake
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            // Plan again: something is due before `wake`.
            () = doorbell.notified() => continue,
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
fn audit_spool_drops(spool: &Spool, audit: &adit_audit::Audit, audited: &mut [u64; 6]) {
    use std::sync::atomic::Ordering::Relaxed;
    let s = spool.stats();
    let now = [
        s.dropped_oldest_readings.load(Relaxed),
        s.dropped_newest_readings.load(Relaxed),
        s.dropped_unknown_point_readings.load(Relaxed),
        s.dropped_too_large_readings.load(Relaxed),
        s.undecodable_readings.load(Relaxed),
        s.dropped_unnamed_readings.load(Relaxed),
    ];
    for ((reason, n), seen) in [
        "full_oldest",
        "full_newest",
        "unknown_point",
        "too_large",
        "undecodable",
        "unnamed_point",
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

/// Applies each source envelope's part of `batch` to the live state at the
/// time it was sent (never later than `now`); readings beyond the last
/// part at `now`.
fn apply_as_sent(live: &mut LiveState, batch: &[Reading], sent: &[(usize, Instant)], now: Instant) {
    let mut start = 0;
    for &(end, at) in sent {
        if let Some(part) = batch.get(start..end) {
            live.apply(part, at.min(now));
        }
        start = end;
    }
    if let Some(rest) = batch.get(start..) {
        live.apply(rest, now);
    }
}

/// The ingest stage. Blocking, on its own thread: takes every batch the
/// sources sent (and whatever else already waits, merged into one batch),
/// normalizes it, updates the live state, gives the watchdog its copy,
/// applies the deadband, appends it to the spool and settles its acks.
/// Under load one wake-up of this thread carries many polls.
fn run_ingest(
    mut rx: mpsc::Receiver<Envelope>,
    mut stage: Normalizer,
    mut writer: SpoolWriter,
    capacity: usize,
) {
    let mut acker = Acker::new(capacity);
    // Where each merged envelope's readings end, and when it was sent.
    let mut sent: Vec<(usize, Instant)> = Vec::new();
    let mut waiting: Vec<Envelope> = Vec::new();
    while let Some(mut envelope) = rx.blocking_recv() {
        // Batch across the hop: take what else is already waiting, so that
        // under load the later stages wake (and the spool frames) once per
        // many polls instead of once per poll. Acks travel along. The
        // merged batch is sized once (growing it envelope by envelope
        // copied every reading again at each doubling).
        let mut total = envelope.readings.len();
        while total < COALESCE_MAX_READINGS {
            match rx.try_recv() {
                Ok(more) => {
                    total += more.readings.len();
                    waiting.push(more);
                }
                Err(_) => break,
            }
        }
        envelope
            .readings
            .reserve_exact(total - envelope.readings.len());
        sent.clear();
        sent.push((envelope.readings.len(), envelope.sent_at));
        for more in waiting.drain(..) {
            let at = more.sent_at;
            envelope.merge(more);
            sent.push((envelope.readings.len(), at));
        }
        let Envelope { readings, acks, .. } = envelope;
        match stage.process(readings, &sent) {
            Some(batch) => writer.append(&batch, acks, &mut acker),
            // Nothing left to store: the deadband settled every reading.
            None => adit_source::ack::settle_all(acks, Outcome::Settled),
        }
    }
    acker.finish();
}

/// Appends batches to the spool and settles their acks.
///
/// Under `fsync = always` and `never` a record is as durable as promised
/// when `append` returns, so its acks are settled at once; under `interval`
/// they go to an acker thread that settles them when the spool's interval
/// fsync has covered the record (a bounded queue: a full one makes the
/// writer wait, which is backpressure, never a drop).
struct SpoolWriter {
    spool: Spool,
    health: Arc<Health>,
    audit: adit_audit::Audit,
    failed: prometheus::IntCounter,
    closed: prometheus::IntCounter,
    reported: bool,
}

impl SpoolWriter {
    fn new(spool: Spool, metrics: &Metrics, health: Arc<Health>, audit: adit_audit::Audit) -> Self {
        Self {
            spool,
            health,
            audit,
            failed: metrics
                .sink_dropped
                .with_label_values(&["spool", "spool_failed"]),
            closed: metrics
                .sink_dropped
                .with_label_values(&["spool", "spool_closed"]),
            reported: false,
        }
    }

    /// Appends the batch and shares it with the spool, which keeps it in
    /// memory for sinks that keep up (they need not read it back).
    fn append(&mut self, readings: &Arc<Vec<Reading>>, acks: Vec<Ack>, acker: &mut Acker) {
        let spool = &self.spool;
        let count = readings.len() as u64;
        let outcome = match spool.append_shared(readings) {
            Ok(seq) => {
                if !acks.is_empty() && matches!(spool.fsync_policy(), FsyncPolicy::Interval(_)) {
                    acker.settle_when_durable(spool, seq, acks);
                    return;
                }
                Outcome::Durable
            }
            // Counted by the spool (full_newest, too_large).
            Err(AppendError::Dropped(_)) => Outcome::Dropped(DropReason::SpoolFull),
            Err(AppendError::TooLarge(_)) => Outcome::Dropped(DropReason::TooLarge),
            Err(AppendError::Failed(why)) => {
                self.failed.inc_by(count);
                self.health.set_fatal(true);
                if !self.reported {
                    tracing::error!(error = %why, "spool writer failed: readings cannot be stored until adit restarts");
                    self.audit
                        .record("spool_writer_failed", serde_json::json!({ "error": why }));
                    self.reported = true;
                }
                Outcome::Dropped(DropReason::SpoolFailed)
            }
            Err(AppendError::Closed) => {
                self.closed.inc_by(count);
                Outcome::Dropped(DropReason::SpoolClosed)
            }
        };
        adit_source::ack::settle_all(acks, outcome);
    }
}

/// The thread that settles acks, in append order, once the interval fsync
/// covered their record; started on the first acked batch.
struct Acker {
    capacity: usize,
    running: Option<(AckQueue, std::thread::JoinHandle<()>)>,
}

/// Appended records (by sequence number) whose acks wait for an fsync.
type AckQueue = std::sync::mpsc::SyncSender<(u64, Vec<Ack>)>;

impl Acker {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            running: None,
        }
    }

    fn settle_when_durable(&mut self, spool: &Spool, seq: u64, acks: Vec<Ack>) {
        if self.running.is_none() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<Ack>)>(self.capacity);
            let s = spool.clone();
            let spawned = std::thread::Builder::new()
                .name("adit-spool-acker".into())
                .spawn(move || {
                    while let Ok((seq, acks)) = rx.recv() {
                        settle_when_durable(&s, seq, acks);
                    }
                });
            match spawned {
                Ok(handle) => self.running = Some((tx, handle)),
                // Without the thread, wait here: slower, still correct.
                Err(e) => tracing::error!(error = %e, "cannot start the spool acker thread"),
            }
        }
        match &self.running {
            Some((tx, _)) => {
                if let Err(std::sync::mpsc::SendError((seq, acks))) = tx.send((seq, acks)) {
                    settle_when_durable(spool, seq, acks);
                }
            }
            None => settle_when_durable(spool, seq, acks),
        }
    }

    fn finish(self) {
        if let Some((tx, handle)) = self.running {
            drop(tx);
            let _ = handle.join();
        }
    }
}

/// Waits for record `seq` to be durable, then settles `acks`: `Durable`, or
/// `SpoolFailed` if the fsync that should have covered it failed.
fn settle_when_durable(spool: &Spool, seq: u64, acks: Vec<Ack>) {
    let outcome = loop {
        if spool.wait_durable(seq, Duration::from_millis(100)) {
            break Outcome::Durable;
        }
        if spool.has_failed() {
            break Outcome::Dropped(DropReason::SpoolFailed);
        }
    };
    adit_source::ack::settle_all(acks, outcome);
}

/// Most readings the ingest stage merges into one batch.
const COALESCE_MAX_READINGS: usize = 8192;

/// Normalization and what is fed from it: clock and range rules, the
/// per-quality counters, the live state, the watchdog's copy, the deadband.
struct Normalizer {
    watchdog: Option<mpsc::Sender<Arc<Batch>>>,
    registry: Arc<PointRegistry>,
    ranges: Ranges,
    live: Arc<Mutex<LiveState>>,
    rules: ClockRules,
    metrics: Metrics,
    by_class: [prometheus::IntCounter; 3],
    flagged: [prometheus::IntCounter; 3],
    deadband: Deadband,
    /// The last receive time given to a reading with an invalid clock (see
    /// [`give_receive_times`]).
    last_given: Timestamp,
}

impl Normalizer {
    fn new(
        watchdog: Option<mpsc::Sender<Arc<Batch>>>,
        registry: Arc<PointRegistry>,
        live: Arc<Mutex<LiveState>>,
        rules: ClockRules,
        metrics: &Metrics,
    ) -> Self {
        let deadband = Deadband::new(&registry);
        Self {
            watchdog,
            live,
            rules,
            by_class: [
                QualityClass::Good,
                QualityClass::Uncertain,
                QualityClass::Bad,
            ]
            .map(|c| metrics.readings.with_label_values(&[c.name()])),
            flagged: ["conversion", "out_of_range", "clock_invalid"]
                .map(|reason| metrics.flagged.with_label_values(&[reason])),
            metrics: metrics.clone(),
            deadband,
            ranges: Ranges::new(&registry),
            registry,
            last_given: Timestamp(0),
        }
    }

    /// Normalizes the batch and feeds the live state and the watchdog;
    /// returns what is left to store (the deadband may settle every
    /// reading). The watchdog and the spool writer share one batch; with
    /// the deadband on, the spool's part is a copy (the watchdog usually
    /// still holds the original when the deadband filters).
    /// `sent`: where each source's envelope ends in `batch`, and when it was
    /// sent (the live state's time for its readings).
    fn process(&mut self, mut batch: Batch, sent: &[(usize, Instant)]) -> Option<Arc<Batch>> {
        self.ranges.sync(&self.registry);
        let wall = Timestamp::now();
        let flagged = normalize_batch(&mut batch, &self.ranges, self.rules, wall);
        // Not only when normalize flagged some: a source may flag a clock
        // itself (an MQTT time that does not parse).
        give_receive_times(&mut batch, self.rules, wall, &mut self.last_given);
        for (counter, n) in self.flagged.iter().zip([
            flagged.conversion,
            flagged.out_of_range,
            flagged.clock_invalid,
        ]) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        let mut counts = [0u64; 3];
        for r in &batch {
            counts[r.quality.class() as usize] += 1;
        }
        for (counter, n) in self.by_class.iter().zip(counts) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        let now = tokio::time::Instant::now().into_std();
        {
            let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            // Points named at run time count from the oldest envelope: their
            // first staleness check is never later than their deadline.
            // (Not always the first: a send waiting on a full channel took
            // its time before a later one got in.)
            let oldest = sent
                .iter()
                .map(|&(_, at)| at)
                .min()
                .map_or(now, |at| at.min(now));
            live.grow(&self.registry, oldest);
            apply_as_sent(&mut live, &batch, sent, now);
        }
        let mut shared = Arc::new(batch);
        if let Some(tx) = &self.watchdog {
            if tx.try_send(shared.clone()).is_err() {
                self.metrics.watchdog_dropped.inc_by(shared.len() as u64);
            }
        }
        if self.deadband.is_active() {
            let batch = Arc::make_mut(&mut shared);
            let suppressed = self.deadband.filter(batch, now);
            self.metrics.deadband_suppressed.inc_by(suppressed as u64);
        }
        (!shared.is_empty()).then_some(shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::{PointId, PointMeta, Quality, Value};

    #[test]
    fn readings_that_waited_in_the_channel_are_as_old_as_when_they_were_sent() {
        let mut registry = PointRegistry::new();
        for name in ["a", "b"] {
            let mut meta = PointMeta::plain(name, "d", 1000);
            meta.stale_after = Duration::from_secs(3);
            registry.insert(meta).unwrap();
        }
        let t0 = Instant::now();
        let mut live = LiveState::new_at(&registry, t0);
        let good = |p: u32| Reading {
            point: PointId(p),
            value: Some(Value::F64(1.0)),
            quality: Quality::Good,
            source_ts: Timestamp(1),
            received_ts: Timestamp(1),
        };
        // Point a was sent at t0, point b 10 s later; the ingest (stalled
        // behind a slow disk) takes both at t0 + 10 s.
        let now = t0 + Duration::from_secs(10);
        let batch = [good(0), good(1)];
        apply_as_sent(&mut live, &batch, &[(1, t0), (2, now)], now);
        assert_eq!(live.get(PointId(0)).unwrap().value_at, Some(t0));
        assert_eq!(live.get(PointId(1)).unwrap().value_at, Some(now));
        // a is 10 s old: stale at once, not 3 s from now; b is fresh.
        assert_eq!(live.expire(now), [PointId(0)]);
        assert!(!live.is_stale(PointId(1)));
    }

    /// The checker plans its next look (≤ 1 s ahead); a point registered
    /// after that with a shorter `stale_after` rings it, and it reports the
    /// point at its deadline, not at the planned look.
    #[tokio::test(start_paused = true)]
    async fn the_stale_checker_reports_a_deadline_that_came_after_its_plan_on_time() {
        let mut registry = PointRegistry::new();
        let mut slow = PointMeta::plain("slow", "d", 1000);
        slow.stale_after = Duration::from_secs(60);
        registry.insert(slow).unwrap();
        // Just after an instant of the housekeeping grid: the checker's
        // plan is then almost a second ahead.
        let grid = adit_core::schedule::Grid::housekeeping();
        let next = grid.next_after(tokio::time::Instant::now().into_std());
        tokio::time::sleep_until(tokio::time::Instant::from_std(next) + Duration::from_millis(1))
            .await;
        let live = Arc::new(Mutex::new(LiveState::new_at(
            &registry,
            tokio::time::Instant::now().into_std(),
        )));
        let (tx, mut rx) = mpsc::channel(8);
        let waited = prometheus::IntCounter::new("w", "w").unwrap();
        let out = ReadingSender::new(tx, waited, None);
        let shutdown = CancellationToken::new();
        let transitions = prometheus::IntCounter::new("t", "t").unwrap();
        let checker = tokio::spawn(run_stale_checker(
            Arc::clone(&live),
            out,
            shutdown.clone(),
            transitions,
        ));
        // Let the checker plan.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        let mut fast = PointMeta::plain("fast", "d", 50);
        fast.stale_after = Duration::from_millis(100);
        let fast_id = registry.insert(fast).unwrap();
        let registered = tokio::time::Instant::now();
        live.lock().unwrap().grow(&registry, registered.into_std());
        let envelope = rx.recv().await.unwrap();
        let after = registered.elapsed();
        let ids: Vec<PointId> = envelope.readings.iter().map(|r| r.point).collect();
        println!(
            "stale marker for a point registered after the plan: {after:?} (stale_after 100 ms)"
        );
        assert_eq!(ids, [fast_id]);
        assert!(
            after <= Duration::from_millis(101),
            "reported at the planned look ({after:?}), not at the deadline"
        );
        shutdown.cancel();
        checker.await.unwrap();
    }
}
