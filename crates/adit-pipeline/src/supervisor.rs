//! Supervision of source tasks: a source that fails or panics is rebuilt from
//! its factory and restarted with exponential backoff; every restart is counted
//! and logged. A source that ran for a while before failing starts over from
//! the shortest backoff.

use std::time::Duration;

use adit_core::Backoff;

use crate::{Metrics, SourceFactory};
use adit_source::{SourceContext, SourceError};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const HEALTHY_RUN: Duration = Duration::from_secs(60);

pub async fn supervise(factory: SourceFactory, ctx: SourceContext, metrics: Metrics) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        let mut source = factory();
        let name = source.name().to_string();
        let run_ctx = ctx.clone();
        let started = tokio::time::Instant::now();
        let handle = tokio::spawn(async move { source.run(&run_ctx).await });
        let cause = match handle.await {
            Ok(Ok(()) | Err(SourceError::PipelineClosed)) => return,
            Ok(Err(e)) => {
                tracing::error!(source = %name, error = %e, "source failed; restarting");
                "error"
            }
            Err(e) if e.is_panic() => {
                tracing::error!(source = %name, "source panicked; restarting");
                "panic"
            }
            Err(_) => return,
        };
        if ctx.shutdown.is_cancelled() {
            return;
        }
        metrics
            .task_restarts
            .with_label_values(&["source", cause])
            .inc();
        if started.elapsed() > HEALTHY_RUN {
            backoff.reset();
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = ctx.shutdown.cancelled() => return,
        }
    }
}
