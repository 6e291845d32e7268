//! Wiring and lifecycle of the pipeline: starts the stages, supervises the
//! sources, and shuts down in order (sources, then normalize, then sink), each
//! stage draining what it holds.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use adit_core::{Batch, PointRegistry, QualityClass, Timestamp};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::deadband::Deadband;
use crate::normalize::{normalize_batch, ClockRules};
use crate::sink::{run_sink, Sink, SinkOptions};
use crate::source::{ReadingSender, Source, SourceContext};
use crate::supervisor::supervise;
use crate::{Health, LiveState, Metrics};

/// Builds a fresh source; called again after the source failed or panicked.
pub type SourceFactory = Box<dyn Fn() -> Box<dyn Source> + Send + Sync>;

#[derive(Clone, Copy, Debug)]
pub struct PipelineOptions {
    pub channel_capacity: usize,
    pub clock: ClockRules,
    pub sink: SinkOptions,
    /// How long shutdown may take to drain before giving up on the sink.
    pub drain_timeout: Duration,
}

/// A running pipeline.
pub struct Pipeline {
    shutdown: CancellationToken,
    drain_deadline: watch::Sender<Option<Instant>>,
    sources: Vec<JoinHandle<()>>,
    normalize: JoinHandle<()>,
    sink: JoinHandle<()>,
    live: Arc<Mutex<LiveState>>,
    registry: Arc<PointRegistry>,
    health: Arc<Health>,
    drain_timeout: Duration,
}

/// What shutdown achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every stage finished within the drain timeout.
    pub drained: bool,
}

impl Pipeline {
    /// Starts the stages; must be called inside a Tokio runtime.
    pub fn start(
        registry: Arc<PointRegistry>,
        sources: Vec<(&'static str, SourceFactory)>,
        sink: Box<dyn Sink>,
        options: PipelineOptions,
        metrics: &Metrics,
        health: Arc<Health>,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let (drain_deadline, drain_rx) = watch::channel(None);
        let (source_tx, source_rx) = mpsc::channel::<Batch>(options.channel_capacity);
        let (sink_tx, sink_rx) = mpsc::channel::<Batch>(options.channel_capacity);
        let live = Arc::new(Mutex::new(LiveState::new(&registry)));

        let sink = tokio::spawn(run_sink(
            sink,
            sink_rx,
            options.sink,
            metrics.clone(),
            health.clone(),
            drain_rx,
        ));
        let to_sink = ReadingSender::new(
            sink_tx,
            metrics.backpressure.with_label_values(&["sink"]),
            None,
        );
        let normalize = tokio::spawn(run_normalize(
            source_rx,
            to_sink,
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
        drop(source_tx);
        health.set_pipeline_running(true);

        Self {
            shutdown,
            drain_deadline,
            sources,
            normalize,
            sink,
            live,
            registry,
            health,
            drain_timeout: options.drain_timeout,
        }
    }

    pub fn live(&self) -> Arc<Mutex<LiveState>> {
        self.live.clone()
    }

    pub fn registry(&self) -> Arc<PointRegistry> {
        self.registry.clone()
    }

    /// Stops the sources, then drains normalize and sink within the drain timeout.
    pub async fn shutdown(self) -> ShutdownReport {
        let deadline = Instant::now() + self.drain_timeout;
        self.shutdown.cancel();
        let _ = self.drain_deadline.send(Some(deadline));
        let all = async {
            for s in self.sources {
                let _ = s.await;
            }
            let _ = self.normalize.await;
            let _ = self.sink.await;
        };
        let drained = tokio::time::timeout_at(deadline + Duration::from_secs(1), all)
            .await
            .is_ok();
        self.health.set_pipeline_running(false);
        if !drained {
            tracing::error!("pipeline did not drain within {:?}", self.drain_timeout);
        }
        ShutdownReport { drained }
    }
}

async fn run_normalize(
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
    let sink_gone = metrics
        .sink_dropped
        .with_label_values(&["any", "sink_stopped"]);
    let mut deadband = Deadband::new(&registry);
    while let Some(mut batch) = rx.recv().await {
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
        let now = std::time::Instant::now();
        live.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(&batch, now);
        if deadband.is_active() {
            let suppressed = deadband.filter(&mut batch, now);
            metrics.deadband_suppressed.inc_by(suppressed as u64);
        }
        let n = batch.len();
        if out.send(batch).await.is_err() {
            sink_gone.inc_by(n as u64);
            tracing::error!(readings = n, "sink stage is gone; readings not stored");
        }
    }
}
