//! Waiting for a condition in async end-to-end tests, with a limit that
//! fails the test (and says what it waited for) instead of hanging.

#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms until it holds; returns how long that took.
pub async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}
