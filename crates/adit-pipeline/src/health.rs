//! Liveness and readiness shared by the pipeline and the HTTP endpoint, with
//! one health record **per sink**: a sink that fails while another succeeds
//! is still seen failing (readiness, self-health alerts and `/readyz` name it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// A process-wide monotonic epoch for the millisecond stamps below.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// One sink's health.
#[derive(Debug, Default)]
pub struct SinkHealth {
    ready: AtomicBool,
    /// Monotonic ms of the first failure of the current streak; 0 = healthy.
    failing_since_ms: AtomicU64,
    last_error: Mutex<String>,
}

impl SinkHealth {
    pub fn set_ready(&self, v: bool) {
        self.ready.store(v, Ordering::Relaxed);
    }
    /// Records a failure at `now_ms` (monotonic ms); keeps the first of a streak.
    pub fn failed_at(&self, now_ms: u64, error: &str) {
        let _ = self.failing_since_ms.compare_exchange(
            0,
            now_ms.max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.clear();
        // At most 300 bytes, cut on a character boundary (errors echo names).
        let mut end = error.len().min(300);
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        last.push_str(&error[..end]);
    }
    /// Records a failure now.
    pub fn failed(&self, error: &str) {
        self.failed_at(now_ms(), error);
    }
    pub fn succeeded(&self) {
        self.failing_since_ms.store(0, Ordering::Relaxed);
    }
    /// How long this sink has been failing, if it is.
    pub fn failing_for(&self) -> Option<Duration> {
        match self.failing_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.failing_for().is_none()
    }
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[derive(Debug, Default)]
pub struct Health {
    pipeline_running: AtomicBool,
    fatal: AtomicBool,
    fatal_set: tokio::sync::Notify,
    sinks: Mutex<Vec<(&'static str, Arc<SinkHealth>)>>,
}

/// One sink's state as `/readyz` and the self-health probe see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkStatus {
    pub sink: &'static str,
    pub ready: bool,
    pub failing_for: Option<Duration>,
    pub last_error: String,
}

impl Health {
    pub fn set_pipeline_running(&self, v: bool) {
        self.pipeline_running.store(v, Ordering::Relaxed);
    }
    /// A failure adit cannot recover from without a restart (a failed spool
    /// fsync): the process should exit so its supervisor restarts it.
    pub fn set_fatal(&self, v: bool) {
        self.fatal.store(v, Ordering::Release);
        if v {
            self.fatal_set.notify_waiters();
        }
    }
    pub fn is_fatal(&self) -> bool {
        self.fatal.load(Ordering::Acquire)
    }
    /// Returns once a fatal failure is set (at once if it already is): the
    /// main loop waits on this instead of looking every second.
    pub async fn fatal(&self) {
        loop {
            let set = self.fatal_set.notified();
            tokio::pin!(set);
            // Registered before the check: a `set_fatal` between the check
            // and the await still wakes this waiter.
            set.as_mut().enable();
            if self.is_fatal() {
                return;
            }
            set.await;
        }
    }
    /// The health record of sink `name` (created on first use).
    pub fn sink(&self, name: &'static str) -> Arc<SinkHealth> {
        let mut sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, h)) = sinks.iter().find(|(n, _)| *n == name) {
            return h.clone();
        }
        let h = Arc::new(SinkHealth::default());
        sinks.push((name, h.clone()));
        h
    }
    /// Every sink's status, in registration order.
    pub fn sinks(&self) -> Vec<SinkStatus> {
        self.sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(sink, h)| SinkStatus {
                sink,
                ready: h.ready.load(Ordering::Relaxed),
                failing_for: h.failing_for(),
                last_error: h.last_error(),
            })
            .collect()
    }
    /// Alive: the pipeline's stages are running.
    pub fn is_live(&self) -> bool {
        self.pipeline_running.load(Ordering::Relaxed) && !self.is_fatal()
    }
    /// Ready: alive, at least one sink, and every sink open and not failing.
    pub fn is_ready(&self) -> bool {
        let sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        self.is_live() && !sinks.is_empty() && sinks.iter().all(|(_, h)| h.is_ready())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failing_sink_makes_adit_unready_while_another_is_healthy() {
        let h = Health::default();
        h.set_pipeline_running(true);
        let (sqlite, questdb) = (h.sink("sqlite"), h.sink("questdb"));
        sqlite.set_ready(true);
        questdb.set_ready(true);
        assert!(h.is_ready());
        questdb.failed("connection refused");
        sqlite.succeeded(); // a healthy sink's success does not hide the other
        assert!(!h.is_ready());
        let failing: Vec<&str> = h
            .sinks()
            .iter()
            .filter(|s| s.failing_for.is_some())
            .map(|s| s.sink)
            .collect();
        assert_eq!(failing, vec!["questdb"]);
        assert_eq!(h.sinks()[1].last_error, "connection refused");
        questdb.failed(&"é".repeat(400)); // multi-byte characters across the cut
        assert!(h.sinks()[1].last_error.len() <= 300);
        questdb.succeeded();
        assert!(h.is_ready());
    }

    #[tokio::test]
    async fn a_fatal_failure_set_on_another_thread_wakes_the_waiter() {
        let h = Arc::new(Health::default());
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.fatal().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "returned before anything was fatal");
        let setter = std::thread::spawn({
            let h = h.clone();
            move || h.set_fatal(true)
        });
        setter.join().unwrap();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter was not woken")
            .unwrap();
        // Already fatal: returns at once.
        h.fatal().await;
    }
}
