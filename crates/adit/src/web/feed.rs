//! The page's change feed: one task that, while anyone watches, looks at the
//! live state every `update_interval`, and broadcasts what changed as one
//! pre-rendered SSE frame shared by every client.
//!
//! Invariants:
//! - the pipeline never waits for a page: the feed holds the live-state lock
//!   only to copy the changed states, and `broadcast::send` never blocks; a
//!   client that falls more than [`CLIENT_QUEUE`] frames behind is `Lagged`
//!   and gets a fresh snapshot instead of the frames it missed;
//! - nobody watching costs one wake-up per [`TREND_STEP`] (the trend
//!   sample), no JSON;
//! - a frame is rendered once, whatever the number of clients (`Bytes`
//!   clones share it);
//! - something is sent at least every [`BEAT_EVERY`], so the page can tell a
//!   dead stream from a quiet one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use adit_core::{PointId, PointRegistry, QualityClass, Value};
use adit_pipeline::{LiveState, PointState};
use adit_watchdog::deliver::AlertState;
use axum::body::Bytes;
use tokio::sync::{broadcast, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::frames::{self, Seen};
use super::trend::Trends;

/// Frames a client may be behind before it is `Lagged` (then resent a snapshot).
pub const CLIENT_QUEUE: usize = 32;
/// The longest silence on a stream.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);
/// How often the trend rings take a sample of every point.
pub const TREND_STEP: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub enum Frame {
    /// Pre-rendered SSE text.
    Text(Bytes),
    /// The point set grew: every client needs a new snapshot.
    Resync,
}

/// Counters of the page.
#[derive(Clone)]
pub struct PageMetrics {
    pub clients: prometheus::IntGauge,
    pub lagged: prometheus::IntCounter,
    pub frames: prometheus::IntCounterVec,
    pub refused: prometheus::IntCounter,
}

impl PageMetrics {
    pub fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            clients: prometheus::IntGauge::new(
                "adit_page_clients",
                "Control-room page event streams connected now.",
            )?,
            lagged: prometheus::IntCounter::new(
                "adit_page_clients_lagged_total",
                "Times a page client fell behind and was resent a snapshot.",
            )?,
            frames: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "adit_page_frames_total",
                    "Frames the page feed rendered, by event.",
                ),
                &["event"],
            )?,
            refused: prometheus::IntCounter::new(
                "adit_page_clients_refused_total",
                "Event streams refused because http.max_clients were connected.",
            )?,
        };
        registry.register(Box::new(m.clients.clone()))?;
        registry.register(Box::new(m.lagged.clone()))?;
        registry.register(Box::new(m.frames.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        Ok(m)
    }
}

/// What client handlers share with the feed task.
pub struct Feed {
    pub site: String,
    pub interval: Duration,
    pub live: Arc<Mutex<LiveState>>,
    pub registry: Arc<PointRegistry>,
    pub alerts: watch::Receiver<Arc<AlertState>>,
    pub trends: Mutex<Trends>,
    pub tx: broadcast::Sender<Frame>,
    pub metrics: PageMetrics,
    pub max_clients: usize,
    clients: AtomicUsize,
    /// Bumped before every frame is sent: a snapshot rendered at `seq` is
    /// still complete for a client that subscribed while `seq` is unchanged.
    seq: AtomicU64,
    /// The last snapshot and the `seq` it was rendered at: clients arriving
    /// together share one rendering (a snapshot of 10k points is ~1 MB).
    /// Also bounded in age: a snapshot older than one interval is rendered
    /// again (its ages would be understated by its own age).
    snapshot_cache: Mutex<Option<(u64, Instant, Bytes)>>,
    /// Where the frames' `id` (ms of server monotonic time) counts from.
    epoch: Instant,
    /// Wakes the feed when the first client arrives.
    watcher_arrived: Notify,
    /// Ends the feed and every client's stream (the HTTP server waits for
    /// open streams before it stops).
    pub stop: CancellationToken,
}

/// A connected client; counts itself out when dropped.
pub struct ClientSlot(Arc<Feed>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.clients.dec();
    }
}

/// The page's settings (from `[http]` and `site`).
pub struct FeedSettings {
    pub site: String,
    pub interval: Duration,
    pub max_clients: usize,
}

impl Feed {
    pub fn new(
        settings: FeedSettings,
        live: Arc<Mutex<LiveState>>,
        registry: Arc<PointRegistry>,
        alerts: watch::Receiver<Arc<AlertState>>,
        metrics: PageMetrics,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let FeedSettings {
            site,
            interval,
            max_clients,
        } = settings;
        let (tx, _) = broadcast::channel(CLIENT_QUEUE);
        Arc::new(Self {
            site,
            interval,
            live,
            registry,
            alerts,
            trends: Mutex::new(Trends::default()),
            tx,
            metrics,
            max_clients,
            clients: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            snapshot_cache: Mutex::new(None),
            epoch: Instant::now(),
            watcher_arrived: Notify::new(),
            stop,
        })
    }

    /// A slot for one more client, or `None` at `max_clients`.
    pub fn join(self: &Arc<Self>) -> Option<ClientSlot> {
        let n = self.clients.fetch_add(1, Ordering::AcqRel);
        if n >= self.max_clients {
            self.clients.fetch_sub(1, Ordering::AcqRel);
            self.metrics.refused.inc();
            return None;
        }
        self.metrics.clients.inc();
        self.watcher_arrived.notify_one();
        Some(ClientSlot(self.clone()))
    }

    /// Everything a client needs to start, as one SSE event. Call after
    /// subscribing: a frame sent after the snapshot reaches the client.
    pub fn snapshot(&self) -> Bytes {
        let seq = self.seq.load(Ordering::Acquire);
        let mut cache = self
            .snapshot_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((at, rendered, bytes)) = cache.as_ref() {
            // Nothing was sent since it was rendered: every later change
            // reaches this client as a frame.
            if *at == seq && rendered.elapsed() < self.interval {
                self.metrics
                    .frames
                    .with_label_values(&["snapshot_shared"])
                    .inc();
                return bytes.clone();
            }
        }
        let bytes = self.render_snapshot(seq);
        *cache = Some((seq, Instant::now(), bytes.clone()));
        bytes
    }

    fn render_snapshot(&self, seq: u64) -> Bytes {
        let alerts = self.alerts.borrow().clone();
        // Copied under the lock, rendered outside it: the pipeline waits
        // for a copy, never for JSON.
        let (states, now) = {
            let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            let states: Vec<_> = self
                .registry
                .iter()
                .filter_map(|(id, meta)| {
                    live.get(id)
                        .map(|s| (id, meta, s.clone(), live.is_stale(id)))
                })
                .collect();
            (states, Instant::now())
        };
        let data = frames::snapshot_data(
            &self.site,
            seq,
            u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            states
                .iter()
                .map(|(id, meta, s, stale)| (*id, *meta, s, *stale)),
            &alerts.alerts,
            now.into_std(),
        );
        self.metrics.frames.with_label_values(&["snapshot"]).inc();
        let mut out = String::with_capacity(data.len() + 48);
        frames::push_event_at(&mut out, "snapshot", self.ms_since_epoch(now), &data);
        Bytes::from(out)
    }

    fn ms_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn send_text(&self, event: &str, data: &str) {
        let mut out = String::with_capacity(data.len() + 48);
        frames::push_event_at(&mut out, event, self.ms_since_epoch(Instant::now()), data);
        self.metrics.frames.with_label_values(&[event]).inc();
        // No receivers is not an error: nobody is watching.
        let _ = self.tx.send(Frame::Text(Bytes::from(out)));
    }

    #[cfg(test)]
    pub fn send_for_test(&self, event: &str, data: &str) {
        self.seq.fetch_add(1, Ordering::AcqRel);
        self.send_text(event, data);
    }

    /// Runs until `stop`: deltas while anyone watches, trend samples always.
    pub async fn run(self: Arc<Self>) {
        let stop = self.stop.clone();
        let mut alerts = self.alerts.clone();
        let mut alerts_open = true;
        let mut shadow: Vec<Seen> = Vec::new();
        let mut changed: Vec<(PointId, PointState, bool)> = Vec::new();
        let mut next_trend = Instant::now() + TREND_STEP;
        // Deadlines, not delays: an alerts frame between ticks neither
        // postpones the next delta nor the next beat.
        let mut next_delta = Instant::now();
        let mut last_sent = Instant::now();
        loop {
            let watching = self.tx.receiver_count() > 0;
            let next_tick = if watching {
                next_delta.min(next_trend).min(last_sent + BEAT_EVERY)
            } else {
                next_trend
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next_tick) => {}
                () = self.watcher_arrived.notified(), if !watching => continue,
                r = alerts.changed(), if alerts_open => {
                    match r {
                        Ok(()) => {
                            self.seq.fetch_add(1, Ordering::AcqRel);
                            let data = frames::alerts_data(&alerts.borrow_and_update().alerts);
                            self.send_text("alerts", &data);
                            last_sent = Instant::now();
                        }
                        Err(_) => alerts_open = false,
                    }
                    continue;
                }
            }
            let now = Instant::now();
            let sample_trend = now >= next_trend;
            if sample_trend {
                next_trend = now + TREND_STEP;
            }
            let watching = self.tx.receiver_count() > 0;
            let delta_due = watching && now >= next_delta;
            if delta_due {
                next_delta = now + self.interval;
            }
            let mut resync = false;
            changed.clear();
            {
                let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
                if sample_trend {
                    let mut trends = self.trends.lock().unwrap_or_else(PoisonError::into_inner);
                    trends.sample((0..live.len()).map(|i| {
                        let id = PointId(i as u32);
                        live.get(id)
                            .map_or(f32::NAN, |s| trend_value(s, live.is_stale(id)))
                    }));
                }
                if delta_due {
                    if live.len() != shadow.len() {
                        resync = !shadow.is_empty();
                        shadow.resize(live.len(), Seen::default());
                    }
                    for (i, seen) in shadow.iter_mut().enumerate() {
                        let id = PointId(i as u32);
                        let Some(state) = live.get(id) else { continue };
                        let now_seen = Seen::of(state, live.is_stale(id));
                        if now_seen != *seen {
                            *seen = now_seen;
                            changed.push((id, state.clone(), now_seen.stale()));
                        }
                    }
                }
            }
            if !watching {
                continue;
            }
            let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
            if resync {
                self.metrics.frames.with_label_values(&["resync"]).inc();
                let _ = self.tx.send(Frame::Resync);
                last_sent = now;
            } else if !changed.is_empty() {
                let data = frames::delta_data(
                    seq,
                    changed.iter().map(|(id, s, stale)| (*id, s, *stale)),
                    now.into_std(),
                );
                self.send_text("delta", &data);
                last_sent = now;
            } else if now.duration_since(last_sent) >= BEAT_EVERY {
                self.send_text("beat", &format!("{{\"seq\":{seq}}}"));
                last_sent = now;
            }
        }
    }
}

/// A point's trend sample: its value while good or uncertain and fresh,
/// else a gap.
fn trend_value(s: &PointState, stale: bool) -> f32 {
    if stale || s.updated_at.is_none() || s.quality.class() == QualityClass::Bad {
        return f32::NAN;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    match &s.value {
        Some(Value::F64(v)) => *v as f32,
        Some(Value::I64(v)) => *v as f32,
        Some(Value::Bool(v)) => f32::from(u8::from(*v)),
        Some(Value::Text(_)) | None => f32::NAN,
    }
}
