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

/// One self-health alert's name, what it means and what to check first.
pub const CHECKS: [(&str, &str, &str); 5] = [
    ("AditSpoolDropping", "the spool dropped readings in the last minute", "A sink is down or slow and the spool is full: check the databases, adit_sink_errors_total and spool.max_size."),
    ("AditSinkFailing", "a sink has been failing for more than a minute", "Is the database up and reachable? adit's log has the last error; readings wait in the spool meanwhile."),
    ("AditCollectorRestartLoop", "collectors restarted 3 or more times in 5 minutes", "adit's log around the restarts; a panic is a bug to report with the log."),
    ("AditAuditUnwritable", "audit entries cannot be written", "The disk under the audit directory: space, permissions, I/O errors."),
    ("AditSpoolFilling", "the spool is over 80 % of its size bound", "A sink is down or too slow; at 100 % spool.when_full applies (drops or stalls). Check the databases and adit_sink_errors_total."),
];

/// Decides which self-health alerts are raised, from successive snapshots.
#[derive(Debug, Default)]
pub struct SelfHealthRules {
    last_dropped: u64,
    last_drop_at: Option<Instant>,
    restarts: Vec<(Instant, u64)>,
}

impl SelfHealthRules {
    /// Whether each alert of [`CHECKS`] is raised now.
    pub fn evaluate(&mut self, s: &SelfHealth, now: Instant) -> [bool; 5] {
        if s.spool_dropped_total > self.last_dropped {
            self.last_dropped = s.spool_dropped_total;
            self.last_drop_at = Some(now);
        }
        let dropping = self
            .last_drop_at
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(60));
        let sink_failing = s
            .sink_failing_for
            .is_some_and(|d| d >= Duration::from_secs(60));
        self.restarts.push((now, s.task_restarts_total));
        self.restarts
            .retain(|(t, _)| now.saturating_duration_since(*t) <= Duration::from_secs(300));
        let oldest = self
            .restarts
            .first()
            .map_or(s.task_restarts_total, |(_, n)| *n);
        let restart_loop = s.task_restarts_total.saturating_sub(oldest) >= 3;
        [
            dropping,
            sink_failing,
            restart_loop,
            s.audit_failing,
            s.spool_fill > 0.8,
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
        assert!(!r.evaluate(&dropped, at(61))[0]);
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
}
