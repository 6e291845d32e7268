//! Self-health alerts: adit watching itself. They fire when the spool drops
//! readings, a sink has been failing for a while, a collector restarts in a
//! loop, or the audit log cannot be written, and resolve when that stops.

use std::time::{Duration, Instant};

/// A snapshot of adit's own health, taken once a second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SelfHealth {
    /// Readings the spool dropped since start (any reason).
    pub spool_dropped_total: u64,
    /// How full the spool is, 0.0 to 1.0 of its size bound.
    pub spool_fill: f64,
    /// How long the sinks have been failing, if they are.
    pub sink_failing_for: Option<Duration>,
    /// Supervised task restarts since start.
    pub task_restarts_total: u64,
    /// The audit log's last write failed, or entries were lost.
    pub audit_failing: bool,
}

/// Gives the watchdog a snapshot of adit's own health.
pub trait SelfHealthProbe: Send + 'static {
    fn sample(&self) -> SelfHealth;
}

/// When self-health alerts fire: `[alerting.self_health]` from the config.
pub use adit_config::SelfHealthConfig as SelfHealthThresholds;

/// Number of self-health checks.
pub const CHECK_COUNT: usize = 5;

/// One self-health alert's name, what it means (with the thresholds in
/// force) and what to check first.
pub fn describe(check: usize, t: &SelfHealthThresholds) -> (&'static str, String, &'static str) {
    match check {
        0 => ("AditSpoolDropping", format!("the spool dropped readings in the last {:?}", t.dropping_hold), "A sink is down or slow and the spool is full: check the databases, adit_sink_errors_total and spool.max_size."),
        1 => ("AditSinkFailing", format!("a sink has been failing for more than {:?}", t.sink_failing_for), "Is the database up and reachable? adit's log has the last error; readings wait in the spool meanwhile."),
        2 => ("AditCollectorRestartLoop", format!("collectors restarted {} or more times in {:?}", t.restarts, t.restart_window), "adit's log around the restarts; a panic is a bug to report with the log."),
        3 => ("AditAuditUnwritable", "audit entries cannot be written".to_string(), "The disk under the audit directory: space, permissions, I/O errors."),
        _ => ("AditSpoolFilling", format!("the spool is over {:.0} % of its size bound", t.spool_fill * 100.0), "A sink is down or too slow; at 100 % spool.when_full applies (drops or stalls). Check the databases and adit_sink_errors_total."),
    }
}

/// Decides which self-health alerts are raised, from successive snapshots.
#[derive(Debug, Default)]
pub struct SelfHealthRules {
    thresholds: SelfHealthThresholds,
    last_dropped: u64,
    last_drop_at: Option<Instant>,
    restarts: std::collections::VecDeque<(Instant, u64)>,
}

impl SelfHealthRules {
    pub fn new(thresholds: SelfHealthThresholds) -> Self {
        Self {
            thresholds,
            ..Self::default()
        }
    }

    pub fn thresholds(&self) -> &SelfHealthThresholds {
        &self.thresholds
    }

    /// Whether each alert of [`describe`] is raised now.
    pub fn evaluate(&mut self, s: &SelfHealth, now: Instant) -> [bool; CHECK_COUNT] {
        let t = self.thresholds;
        if s.spool_dropped_total > self.last_dropped {
            self.last_dropped = s.spool_dropped_total;
            self.last_drop_at = Some(now);
        }
        let dropping = self
            .last_drop_at
            .is_some_and(|at| now.saturating_duration_since(at) <= t.dropping_hold);
        let sink_failing = s.sink_failing_for.is_some_and(|d| d >= t.sink_failing_for);
        self.restarts.push_back((now, s.task_restarts_total));
        while self
            .restarts
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > t.restart_window)
        {
            self.restarts.pop_front();
        }
        let oldest = self
            .restarts
            .front()
            .map_or(s.task_restarts_total, |(_, n)| *n);
        let restart_loop = s.task_restarts_total.saturating_sub(oldest) >= t.restarts;
        [
            dropping,
            sink_failing,
            restart_loop,
            s.audit_failing,
            s.spool_fill > t.spool_fill,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_self_health_decisions() {
        let t0 = Instant::now();
        let mut r = SelfHealthRules::default();
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(r.evaluate(&SelfHealth::default(), at(0)), [false; 5]);
        assert!(
            r.evaluate(
                &SelfHealth {
                    spool_fill: 0.85,
                    ..SelfHealth::default()
                },
                at(0)
            )[4]
        );
        // Drops: raised for a minute after the last drop.
        let dropped = SelfHealth {
            spool_dropped_total: 10,
            ..SelfHealth::default()
        };
        assert!(r.evaluate(&dropped, at(1))[0]);
        assert!(r.evaluate(&dropped, at(60))[0]);
        assert!(!r.evaluate(&dropped, at(62))[0]);
        // A sink failing for 59 s is not yet an alert, for 60 s it is.
        let failing = |s| SelfHealth {
            spool_dropped_total: 10,
            sink_failing_for: Some(Duration::from_secs(s)),
            ..SelfHealth::default()
        };
        assert!(!r.evaluate(&failing(59), at(62))[1]);
        assert!(r.evaluate(&failing(60), at(63))[1]);
        // Three restarts within five minutes.
        let restarts = |n| SelfHealth {
            spool_dropped_total: 10,
            task_restarts_total: n,
            ..SelfHealth::default()
        };
        assert!(!r.evaluate(&restarts(2), at(100))[2]);
        assert!(r.evaluate(&restarts(3), at(120))[2]);
        assert!(
            !r.evaluate(&restarts(3), at(500))[2],
            "no restart for five minutes clears it"
        );
        assert!(
            r.evaluate(
                &SelfHealth {
                    audit_failing: true,
                    spool_dropped_total: 10,
                    task_restarts_total: 3,
                    ..SelfHealth::default()
                },
                at(501)
            )[3]
        );
    }

    #[test]
    fn thresholds_from_config_change_the_decisions_and_the_summaries() {
        let t = SelfHealthThresholds {
            spool_fill: 0.5,
            sink_failing_for: Duration::from_secs(10),
            restarts: 1,
            restart_window: Duration::from_secs(30),
            dropping_hold: Duration::from_secs(5),
        };
        let mut r = SelfHealthRules::new(t);
        let t0 = Instant::now();
        let raised = r.evaluate(
            &SelfHealth {
                spool_fill: 0.6,
                sink_failing_for: Some(Duration::from_secs(10)),
                ..SelfHealth::default()
            },
            t0,
        );
        assert!(raised[4] && raised[1]);
        assert!(
            r.evaluate(
                &SelfHealth {
                    task_restarts_total: 1,
                    ..SelfHealth::default()
                },
                t0 + Duration::from_secs(1)
            )[2]
        );
        assert_eq!(
            describe(4, &t).1,
            "the spool is over 50 % of its size bound"
        );
        assert_eq!(
            describe(2, &t).1,
            "collectors restarted 1 or more times in 30s"
        );
    }
}
