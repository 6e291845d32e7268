//! Firing alerts outlive a restart of the watchdog: the second run starts
//! with the alert firing (same start time, no second "fired"), and tells
//! its resolution when the condition clears; an alert whose rule left the
//! config is resolved at start. Driven through `run_watchdog` itself, with
//! the state on a real directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use adit_audit::Audit;
use adit_core::{PointId, PointMeta, PointRegistry, Quality, Reading, Timestamp, Value};
use adit_watchdog::deliver::{
    run_watchdog, AlertRecorder, AlertState, DeliveryOptions, Hooks, Receivers, WatchdogMetrics,
};
use adit_watchdog::rules::{Condition, Transition};
use adit_watchdog::{Event, RuleSpec};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

struct Keep(Arc<Mutex<Vec<Event>>>);

impl AlertRecorder for Keep {
    fn record(&self, events: &[Event]) {
        self.0.lock().unwrap().extend_from_slice(events);
    }
}

fn rule(name: &str) -> RuleSpec {
    RuleSpec {
        name: name.into(),
        points: "bore_a.co_*".into(),
        condition: Condition::Above {
            raise: 100.0,
            clear: 80.0,
        },
        hold: Duration::ZERO,
        severity: "critical".into(),
        check_first: "ventilation".into(),
        runbook: None,
    }
}

fn co(value: f64) -> Arc<Vec<Reading>> {
    Arc::new(vec![Reading {
        point: PointId(0),
        value: Some(Value::F64(value)),
        quality: Quality::Good,
        source_ts: Timestamp::now(),
        received_ts: Timestamp::now(),
    }])
}

/// One run of the watchdog on `dir`: its batch sender, the alert state it
/// publishes, the transitions it records, and how to stop it.
struct Run {
    batches: mpsc::Sender<Arc<Vec<Reading>>>,
    state: watch::Receiver<Arc<AlertState>>,
    events: Arc<Mutex<Vec<Event>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(dir: &std::path::Path, rule_name: &str) -> Run {
    let mut registry = PointRegistry::new();
    registry
        .insert(PointMeta::plain("bore_a.co_1", "plc_a", 1000))
        .unwrap();
    let engine = adit_watchdog::Engine::new(
        "test-site",
        vec![rule(rule_name)],
        Arc::new(registry),
        Audit::disabled(),
    );
    let (batches, rx) = mpsc::channel(16);
    let (state_tx, state) = watch::channel(Arc::new(AlertState::default()));
    let events = Arc::new(Mutex::new(Vec::new()));
    let counter = |name: &str, labels: &[&str]| {
        prometheus::IntCounterVec::new(prometheus::Opts::new(name, "test"), labels).unwrap()
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_watchdog(
        engine,
        rx,
        Receivers::default(),
        DeliveryOptions {
            resend_interval: Duration::from_secs(60),
            state_dir: Some(dir.to_path_buf()),
            heartbeat: false,
            site: "test-site".into(),
            self_health: adit_watchdog::selfhealth::SelfHealthThresholds::default(),
        },
        WatchdogMetrics {
            transitions: counter("t", &["transition"]),
            deliveries: counter("d", &["receiver", "outcome"]),
        },
        Hooks {
            probe: None,
            recorder: Some(Box::new(Keep(events.clone()))),
            published: Some(state_tx),
        },
        stop.clone(),
    ));
    Run {
        batches,
        state,
        events,
        stop,
        task,
    }
}

impl Run {
    async fn until(&mut self, what: &str, ok: impl Fn(&AlertState) -> bool) {
        tokio::time::timeout(Duration::from_secs(20), async {
            while !ok(&self.state.borrow_and_update()) {
                self.state.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: {:?}", self.state.borrow().alerts));
    }

    async fn end(self) -> Vec<Event> {
        self.stop.cancel();
        self.task.await.unwrap();
        let events = self.events.lock().unwrap().clone();
        events
    }
}

/// A first run on `dir` in which `CoHigh` fires; stopped.
async fn fire_and_stop(dir: &std::path::Path) {
    let mut first = start(dir, "CoHigh");
    first.batches.send(co(150.0)).await.unwrap();
    first.until("fired", |s| firing(s).len() == 1).await;
    first.end().await;
}

fn firing(s: &AlertState) -> Vec<&adit_watchdog::AlertView> {
    s.alerts.iter().filter(|a| a.ends_at.is_none()).collect()
}

#[tokio::test]
async fn a_firing_alert_survives_a_restart_and_its_resolution_is_told_once() {
    let dir = tempfile::tempdir().unwrap();

    let mut first = start(dir.path(), "CoHigh");
    first.batches.send(co(150.0)).await.unwrap();
    first.until("fired", |s| firing(s).len() == 1).await;
    let started = firing(&first.state.borrow())[0].starts_at;
    let events = first.end().await;
    assert_eq!(events.len(), 1);
    assert!(
        std::fs::read_to_string(dir.path().join(adit_watchdog::keep::FILE))
            .unwrap()
            .contains("CoHigh")
    );

    // The CO cleared while adit was down; the second run starts firing.
    let mut second = start(dir.path(), "CoHigh");
    second.until("restored", |s| firing(s).len() == 1).await;
    assert_eq!(firing(&second.state.borrow())[0].starts_at, started);
    second.batches.send(co(20.0)).await.unwrap();
    second
        .until("resolved", |s| {
            firing(s).is_empty() && s.alerts.iter().any(|a| a.ends_at.is_some())
        })
        .await;
    let events = second.end().await;
    let told: Vec<Transition> = events.iter().map(|e| e.transition).collect();
    println!("second run told: {told:?}");
    assert_eq!(
        told,
        [Transition::Resolved],
        "no second 'fired', one 'resolved'"
    );

    // A third run has nothing to restore.
    let third = start(dir.path(), "CoHigh");
    third.batches.send(co(20.0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(firing(&third.state.borrow()).is_empty());
    assert!(third.end().await.is_empty());
}

#[tokio::test]
async fn an_alert_whose_rule_left_the_config_is_resolved_at_start() {
    let dir = tempfile::tempdir().unwrap();
    fire_and_stop(dir.path()).await;

    let mut renamed = start(dir.path(), "CoVeryHigh");
    renamed
        .until("resolved at start", |s| {
            s.alerts.iter().any(|a| {
                a.ends_at.is_some()
                    && a.labels
                        .iter()
                        .any(|(k, v)| k == "alertname" && v == "CoHigh")
            })
        })
        .await;
    let events = renamed.end().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].transition, Transition::Resolved);
    // And it is gone from the file: a later start does not resolve it again.
    let again = start(dir.path(), "CoVeryHigh");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(again.end().await.is_empty());
}

#[tokio::test]
async fn resolutions_found_at_start_are_told_even_when_the_stop_comes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    fire_and_stop(dir.path()).await;

    // Stopped before its task ever ran (current-thread runtime): the
    // resolution found at start is still recorded, and the file emptied.
    let renamed = start(dir.path(), "CoVeryHigh");
    renamed.stop.cancel();
    let events = renamed.end().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].transition, Transition::Resolved);
    let kept = adit_watchdog::keep::load(dir.path()).unwrap();
    assert!(kept.is_empty(), "{kept:?}");
}
