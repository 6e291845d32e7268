//! Liveness and readiness flags shared by the pipeline and the HTTP endpoint.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A process-wide monotonic epoch for the millisecond stamps below.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

#[derive(Debug, Default)]
pub struct Health {
    pipeline_running: AtomicBool,
    fatal: AtomicBool,
    sink_ready: AtomicBool,
    sink_failing_since_ms: AtomicU64,
}

impl Health {
    pub fn set_pipeline_running(&self, v: bool) {
        self.pipeline_running.store(v, Ordering::Relaxed);
    }
    /// A failure adit cannot recover from without a restart (a failed spool
    /// fsync): the process should exit so its supervisor restarts it.
    pub fn set_fatal(&self, v: bool) {
        self.fatal.store(v, Ordering::Relaxed);
    }
    pub fn is_fatal(&self) -> bool {
        self.fatal.load(Ordering::Relaxed)
    }
    pub fn set_sink_ready(&self, v: bool) {
        self.sink_ready.store(v, Ordering::Relaxed);
    }
    /// Records a sink failure at `now_ms` (monotonic ms); keeps the first one.
    pub fn sink_failed(&self, now_ms: u64) {
        let _ = self.sink_failing_since_ms.compare_exchange(
            0,
            now_ms.max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    /// Records a sink failure now (keeps the first of a streak).
    pub fn mark_sink_failed(&self) {
        self.sink_failed(now_ms());
    }
    /// How long the sinks have been failing, if they are.
    pub fn sink_failing_for(&self) -> Option<Duration> {
        match self.sink_failing_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }
    pub fn sink_succeeded(&self) {
        self.sink_failing_since_ms.store(0, Ordering::Relaxed);
    }
    /// Alive: the pipeline's stages are running.
    pub fn is_live(&self) -> bool {
        self.pipeline_running.load(Ordering::Relaxed) && !self.is_fatal()
    }
    /// Ready: alive, the sink is open, and its last write did not fail.
    pub fn is_ready(&self) -> bool {
        self.is_live()
            && self.sink_ready.load(Ordering::Relaxed)
            && self.sink_failing_since_ms.load(Ordering::Relaxed) == 0
    }
}
