//! Self-health alerts: adit watching itself. They fire when the spool drops
//! readings, a sink has been failing for a while (one alert per sink, with
//! a `sink` label: a failing sink is never hidden by a healthy one), a
//! collector restarts in a loop, or the audit log cannot be written, and
//! resolve when that stops.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A snapshot of adit's own health, taken once a second.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SelfHealth {
    /// Readings the spool dropped since start (any reason).
    pub spool_dropped_total: u64,
    /// How full the spool is, 0.0 to 1.0 of its size bound.
    pub spool_fill: f64,
    /// Every sink that is failing, with how long it has been.
    pub sinks_failing: Vec<(String, Duration)>,
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

/// The check that is raised once per failing sink.
pub const SINK_FAILING: usize = 1;

/// A raised self-health alert: the check (an index of [`describe`]) and its
/// subject (the sink's name for [`SINK_FAILING`], empty otherwise).
pub type Raised = (usize, String);

/// One self-health alert's name, what it means (with the thresholds in
/// force) and what to check first.
pub fn describe(check: usize, t: &SelfHealthThresholds) -> (&'static str, String, &'static str) {
    match check {
        0 => ("AditSpoolDropping", format!("the spool dropped readings in the last {:?}", t.dropping_hold), "A sink is down or slow and the spool is full: check the databases, adit_sink_errors_total and spool.max_size."),
        1 => ("AditSinkFailing", format!("the sink has been failing for more than {:?}", t.sink_failing_for), "Is the database up and reachable? adit's log has the last error; readings wait in the spool meanwhile."),
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

    /// Which alerts are raised now.
    pub fn evaluate(&mut self, s: &SelfHealth, now: Instant) -> BTreeSet<Raised> {
        let t = self.thresholds;
        if s.spool_dropped_total > self.last_dropped {
            self.last_dropped = s.spool_dropped_total;
            self.last_drop_at = Some(now);
        }
        let dropping = self
            .last_drop_at
            .is_some_and(|at| now.saturating_duration_since(at) <= t.dropping_hold);
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
        let mut raised: BTreeSet<Raised> = [
            (0, dropping),
            (2, restart_loop),
            (3, s.audit_failing),
            (4, s.spool_fill > t.spool_fill),
        ]
        .into_iter()
        .filter(|(_, up)| *up)
        .map(|(check, _)| (check, String::new()))
        .collect();
        raised.extend(
            s.sinks_failing
                .iter()
                .filter(|(_, d)| *d >= t.sink_failing_for)
                .map(|(sink, _)| (SINK_FAILING, sink.clone())),
        );
        raised
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(raised: &BTreeSet<Raised>, check: usize) -> bool {
        raised.iter().any(|(c, _)| *c == check)
    }

    #[test]
    fn table_of_self_health_decisions() {
        let t0 = Instant::now();
        let mut r = SelfHealthRules::default();
        let at = |s| t0 + Duration::from_secs(s);
        assert!(r.evaluate(&SelfHealth::default(), at(0)).is_empty());
        assert!(up(
            &r.evaluate(
                &SelfHealth {
                    spool_fill: 0.85,
                    ..SelfHealth::default()
                },
                at(0)
            ),
            4
        ));
        // Drops: raised for a minute after the last drop.
        let dropped = SelfHealth {
            spool_dropped_total: 10,
            ..SelfHealth::default()
        };
        assert!(up(&r.evaluate(&dropped, at(1)), 0));
        assert!(up(&r.evaluate(&dropped, at(60)), 0));
        assert!(!up(&r.evaluate(&dropped, at(62)), 0));
        // A sink failing for 59 s is not yet an alert, for 60 s it is.
        let failing = |s| SelfHealth {
            spool_dropped_total: 10,
            sinks_failing: vec![("questdb".into(), Duration::from_secs(s))],
            ..SelfHealth::default()
        };
        assert!(!up(&r.evaluate(&failing(59), at(62)), SINK_FAILING));
        assert!(r
            .evaluate(&failing(60), at(63))
            .contains(&(SINK_FAILING, "questdb".to_string())));
        // Three restarts within five minutes.
        let restarts = |n| SelfHealth {
            spool_dropped_total: 10,
            task_restarts_total: n,
            ..SelfHealth::default()
        };
        assert!(!up(&r.evaluate(&restarts(2), at(100)), 2));
        assert!(up(&r.evaluate(&restarts(3), at(120)), 2));
        assert!(
            !up(&r.evaluate(&restarts(3), at(500)), 2),
            "no restart for five minutes clears it"
        );
        assert!(up(
            &r.evaluate(
                &SelfHealth {
                    audit_failing: true,
                    spool_dropped_total: 10,
                    task_restarts_total: 3,
                    ..SelfHealth::default()
                },
                at(501)
            ),
            3
        ));
    }

    #[test]
    fn each_failing_sink_is_its_own_alert() {
        let mut r = SelfHealthRules::default();
        let raised = r.evaluate(
            &SelfHealth {
                sinks_failing: vec![
                    ("questdb".into(), Duration::from_secs(61)),
                    ("sqlite".into(), Duration::from_secs(90)),
                ],
                ..SelfHealth::default()
            },
            Instant::now(),
        );
        let sinks: Vec<&str> = raised.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(sinks, vec!["questdb", "sqlite"]);
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
                sinks_failing: vec![("sqlite".into(), Duration::from_secs(10))],
                ..SelfHealth::default()
            },
            t0,
        );
        assert!(up(&raised, 4) && up(&raised, SINK_FAILING));
        assert!(up(
            &r.evaluate(
                &SelfHealth {
                    task_restarts_total: 1,
                    ..SelfHealth::default()
                },
                t0 + Duration::from_secs(1)
            ),
            2
        ));
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
