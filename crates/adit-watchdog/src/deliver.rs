//! Delivery of alerts, apart from the sink path: to Prometheus Alertmanager
//! (API v2), to generic JSON webhooks, to MQTT (see `mqtt.rs`) and to the log.
//!
//! Delivery is by state, not by message: the watchdog publishes the whole
//! alert state (every firing alert, the recently resolved ones with their
//! `endsAt`, and the heartbeat alert that fires for as long as the watchdog
//! runs: a dead man's switch) on a `watch` channel, and each receiver has its
//! own task that delivers the latest state on every change, re-sends it every
//! `resend_interval` (which keeps alerts alive in Alertmanager, as it
//! expects) and retries with backoff after a failure.
//!
//! Invariants: a slow or dead receiver never delays rule evaluation or
//! another receiver; each receiver's queue is one state (bounded by
//! construction; resolved alerts stay for three resend intervals, at most
//! 1000). The complete history is in the audit log and the alerts table.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use adit_core::{Batch, Timestamp};
use prometheus::IntCounterVec;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::engine::{AlertView, Engine, Event};
use crate::http::HttpClient;
use crate::rules::Transition;
use crate::selfhealth::{describe, Raised, SelfHealthProbe, SelfHealthRules, SelfHealthThresholds};

/// Where alerts go.
#[derive(Clone, Debug, Default)]
pub struct Receivers {
    /// Base URLs of Alertmanagers, e.g. `http://127.0.0.1:9093`.
    pub alertmanagers: Vec<String>,
    /// URLs that get the same JSON array by POST.
    pub webhooks: Vec<String>,
    /// MQTT brokers and topic prefixes (retained alert state).
    pub mqtt: Vec<crate::mqtt::MqttTarget>,
    /// The client for http(s) receivers; `None`: public roots only.
    pub http: Option<HttpClient>,
}

#[derive(Clone, Debug)]
pub struct DeliveryOptions {
    pub resend_interval: Duration,
    /// Where the firing alerts are kept across restarts (see [`crate::keep`]);
    /// `None`: in memory only.
    pub state_dir: Option<std::path::PathBuf>,
    pub heartbeat: bool,
    pub site: String,
    pub self_health: SelfHealthThresholds,
}

/// One alert in Alertmanager v2 form (also what webhooks and MQTT carry).
pub fn alert_json(a: &AlertView) -> serde_json::Value {
    let map = |pairs: &[(String, String)]| -> serde_json::Map<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect()
    };
    let mut alert = serde_json::json!({
        "labels": map(&a.labels),
        "annotations": map(&a.annotations),
        "startsAt": a.starts_at.to_rfc3339(),
    });
    if let Some(end) = a.ends_at {
        alert["endsAt"] = serde_json::Value::String(end.to_rfc3339());
    }
    alert
}

/// Alertmanager v2 JSON for a list of alerts.
pub fn alertmanager_json(alerts: &[AlertView]) -> String {
    serde_json::Value::Array(alerts.iter().map(alert_json).collect()).to_string()
}

/// The whole alert state at one moment, as every receiver delivers it:
/// firing alerts (rules, self-health, heartbeat), then the recently resolved
/// ones with their `endsAt`.
#[derive(Debug, Default)]
pub struct AlertState {
    pub alerts: Vec<AlertView>,
    /// `alerts` as an Alertmanager v2 body (webhooks get the same).
    pub alertmanager_body: String,
}

impl AlertState {
    pub fn new(alerts: Vec<AlertView>) -> Self {
        let alertmanager_body = alertmanager_json(&alerts);
        Self {
            alerts,
            alertmanager_body,
        }
    }
}

fn self_alert(
    site: &str,
    thresholds: &SelfHealthThresholds,
    (check, subject): &Raised,
    since: Timestamp,
    ends_at: Option<Timestamp>,
) -> AlertView {
    let (name, summary, check_first) = describe(*check, thresholds);
    let mut labels = vec![
        ("alertname".into(), name.into()),
        ("site".into(), site.into()),
        ("rule".into(), "self_health".into()),
        ("severity".into(), "critical".into()),
    ];
    let summary = if subject.is_empty() {
        format!("adit: {summary}")
    } else {
        labels.push(("sink".into(), subject.clone()));
        format!("adit: sink {subject}: {summary}")
    };
    AlertView {
        labels,
        annotations: vec![
            ("summary".into(), summary),
            ("check_first".into(), check_first.into()),
        ],
        starts_at: since,
        ends_at,
    }
}

fn heartbeat(site: &str, since: Timestamp) -> AlertView {
    AlertView {
        labels: vec![("alertname".into(), "AditWatchdogHeartbeat".into()), ("site".into(), site.into()), ("severity".into(), "none".into())],
        annotations: vec![(
            "summary".into(),
            "Always firing while adit's watchdog runs. Route it to a dead man's switch: when it stops, adit or its alerting is gone.".into(),
        )],
        starts_at: since,
        ends_at: None,
    }
}

/// Keeps alert transitions (the App stores them through the spool).
pub trait AlertRecorder: Send + 'static {
    fn record(&self, events: &[Event]);
}

/// Optional hooks of the watchdog.
#[derive(Default)]
pub struct Hooks {
    pub probe: Option<Box<dyn SelfHealthProbe>>,
    pub recorder: Option<Box<dyn AlertRecorder>>,
    /// Receives every new alert state (the control-room page shows it).
    pub published: Option<watch::Sender<Arc<AlertState>>>,
}

/// Counters of the watchdog.
#[derive(Clone)]
pub struct WatchdogMetrics {
    pub transitions: IntCounterVec,
    pub deliveries: IntCounterVec,
}

/// Runs the watchdog until shutdown: evaluates batches, ticks every second,
/// and publishes the alert state to one delivery task per receiver.
pub async fn run_watchdog(
    mut engine: Engine,
    mut rx: mpsc::Receiver<std::sync::Arc<Batch>>,
    receivers: Receivers,
    options: DeliveryOptions,
    metrics: WatchdogMetrics,
    hooks: Hooks,
    shutdown: CancellationToken,
) {
    let Hooks {
        probe,
        recorder,
        published,
    } = hooks;
    let mut self_rules = SelfHealthRules::new(options.self_health);
    let thresholds = options.self_health;
    let mut self_firing: std::collections::BTreeMap<Raised, Timestamp> =
        std::collections::BTreeMap::new();
    let started = Timestamp::now();
    // Resolutions stay in the state for three resend rounds, at most 1000.
    let keep_resolved = options.resend_interval * 3;
    let mut resolved: VecDeque<(AlertView, tokio::time::Instant)> = VecDeque::new();
    // On the housekeeping grid, so the once-a-second evaluation shares its
    // wake-up with the polls and the pipeline's own tick.
    let mut tick = adit_core::schedule::housekeeping_interval();
    let current = |engine: &Engine,
                   self_firing: &std::collections::BTreeMap<Raised, Timestamp>,
                   resolved: &VecDeque<(AlertView, tokio::time::Instant)>| {
        let mut alerts = engine.firing();
        alerts.extend(
            self_firing
                .iter()
                .map(|(key, at)| self_alert(&options.site, &thresholds, key, *at, None)),
        );
        if options.heartbeat {
            alerts.push(heartbeat(&options.site, started));
        }
        alerts.extend(resolved.iter().map(|(a, _)| a.clone()));
        Arc::new(AlertState::new(alerts))
    };
    // The alerts that were firing before a restart fire again (silently),
    // or resolve now when their rule or subject left the config.
    let mut restart_events = Vec::new();
    // What the file holds: the writer's starting point, so that the first
    // set that differs (resolutions at start included) is written.
    let mut on_disk = Vec::new();
    if let Some(dir) = options.state_dir.clone() {
        let read = tokio::task::spawn_blocking(move || crate::keep::load(&dir))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match read {
            Ok(records) => {
                restart_events = engine.restore(&records, tokio::time::Instant::now().into_std());
                if !records.is_empty() {
                    tracing::info!(
                        firing = records.len() - restart_events.len(),
                        resolved = restart_events.len(),
                        "alerts firing before the restart taken back"
                    );
                }
                on_disk = records;
            }
            Err(e) => tracing::error!(
                error = %e,
                "could not read the alerts firing before the restart: none restored (an alert that cleared meanwhile will not be told resolved)"
            ),
        }
    }
    let (firing_tx, firing_rx) = watch::channel(on_disk);
    let keeper = options
        .state_dir
        .clone()
        .map(|dir| tokio::spawn(crate::keep::keep_firing(dir, firing_rx)));
    let state_tx = match published {
        Some(tx) => {
            tx.send_replace(current(&engine, &self_firing, &resolved));
            tx
        }
        None => watch::channel(current(&engine, &self_firing, &resolved)).0,
    };
    let stop_receivers = shutdown.child_token();
    let mut tasks = Vec::new();
    let client = match receivers.http.clone() {
        Some(c) => Some(c),
        None => HttpClient::new(None)
            .map_err(|e| tracing::error!(error = %e, "no TLS client; https receivers will fail"))
            .ok(),
    };
    for base in &receivers.alertmanagers {
        let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
        tasks.push(tokio::spawn(run_http_receiver(
            client.clone(),
            "alertmanager",
            url,
            state_tx.subscribe(),
            options.resend_interval,
            metrics.clone(),
            stop_receivers.clone(),
        )));
    }
    for url in &receivers.webhooks {
        tasks.push(tokio::spawn(run_http_receiver(
            client.clone(),
            "webhook",
            url.clone(),
            state_tx.subscribe(),
            options.resend_interval,
            metrics.clone(),
            stop_receivers.clone(),
        )));
    }
    for target in &receivers.mqtt {
        tasks.push(tokio::spawn(crate::mqtt::run_mqtt_receiver(
            target.clone(),
            options.site.clone(),
            state_tx.subscribe(),
            metrics.clone(),
            stop_receivers.clone(),
        )));
    }
    // The first round takes the resolutions found at start (recorded,
    // published and the file rewritten before anything else can happen);
    // the set is compared with the file's even when there are none.
    let mut first_round = Some(restart_events);
    let mut compare_with_file = true;
    loop {
        let events = if let Some(events) = first_round.take() {
            events
        } else {
            tokio::select! {
                batch = rx.recv() => match batch {
                    Some(batch) => engine.observe(&batch, tokio::time::Instant::now().into_std()),
                    None => break,
                },
                _ = tick.tick() => {
                    let now = tokio::time::Instant::now().into_std();
                    let mut events = engine.tick(now);
                    if let Some(probe) = &probe {
                        let raised = self_rules.evaluate(&probe.sample(), now);
                        let gone: Vec<Raised> = self_firing.keys().filter(|k| !raised.contains(*k)).cloned().collect();
                        for key in gone {
                            if let Some(since) = self_firing.remove(&key) {
                                events.push(Event { transition: Transition::Resolved, alert: self_alert(&options.site, &thresholds, &key, since, Some(Timestamp::now())) });
                            }
                        }
                        for key in raised {
                            if let std::collections::btree_map::Entry::Vacant(slot) = self_firing.entry(key) {
                                let at = Timestamp::now();
                                events.push(Event { transition: Transition::Fired, alert: self_alert(&options.site, &thresholds, slot.key(), at, None) });
                                slot.insert(at);
                            }
                        }
                    }
                    events
                }
                () = shutdown.cancelled() => break,
            }
        };
        if let (Some(recorder), false) = (&recorder, events.is_empty()) {
            recorder.record(&events);
        }
        for e in &events {
            log_transition(e, &metrics);
            if e.transition == Transition::Resolved {
                resolved.push_back((e.alert.clone(), tokio::time::Instant::now()));
                while resolved.len() > 1000 {
                    resolved.pop_front();
                }
            }
        }
        let before = resolved.len();
        resolved.retain(|(_, at)| at.elapsed() < keep_resolved);
        if !events.is_empty() || resolved.len() != before {
            state_tx.send_replace(current(&engine, &self_firing, &resolved));
        }
        if !events.is_empty() || std::mem::take(&mut compare_with_file) {
            let firing = engine.firing_records();
            firing_tx.send_if_modified(|kept| {
                let changed = *kept != firing;
                if changed {
                    *kept = firing;
                }
                changed
            });
        }
    }
    drop(firing_tx);
    if let Some(keeper) = keeper {
        // The last set on disk before the process goes (bounded: a disk
        // that hangs must not hold the shutdown).
        if tokio::time::timeout(Duration::from_secs(5), keeper)
            .await
            .is_err()
        {
            tracing::error!("the firing alerts could not be written within 5 s at shutdown");
        }
    }
    stop_receivers.cancel();
    for t in tasks {
        let _ = t.await;
    }
}

fn log_transition(e: &Event, metrics: &WatchdogMetrics) {
    let find = |pairs: &[(String, String)], keys: &[&str]| {
        pairs
            .iter()
            .find(|(k, _)| keys.contains(&k.as_str()))
            .map_or(String::new(), |(_, v)| v.clone())
    };
    let name = find(&e.alert.labels, &["alertname"]);
    let subject = find(&e.alert.labels, &["point", "device"]);
    match e.transition {
        Transition::Fired => {
            metrics.transitions.with_label_values(&["fired"]).inc();
            let summary = find(&e.alert.annotations, &["summary"]);
            tracing::warn!(alert = name, subject, summary, "ALERT firing");
        }
        Transition::Resolved => {
            metrics.transitions.with_label_values(&["resolved"]).inc();
            tracing::info!(alert = name, subject, "alert resolved");
        }
    }
}

/// Delivers the alert state to one HTTP receiver (Alertmanager or webhook):
/// at once on every change, again every `resend_interval` (Alertmanager
/// expects firing alerts to be re-sent), and after a failure with backoff
/// from 1 s up to the resend interval. Its queue is the latest state only,
/// so a dead receiver holds no memory and costs the others nothing.
async fn run_http_receiver(
    client: Option<HttpClient>,
    kind: &'static str,
    url: String,
    mut rx: watch::Receiver<Arc<AlertState>>,
    resend_interval: Duration,
    metrics: WatchdogMetrics,
    shutdown: CancellationToken,
) {
    let mut backoff = adit_core::Backoff::new(Duration::from_secs(1), resend_interval);
    loop {
        let state = rx.borrow_and_update().clone();
        let delivered = tokio::select! {
            ok = deliver(client.as_ref(), &url, &state.alertmanager_body, &metrics, kind) => ok,
            () = shutdown.cancelled() => return,
        };
        let wait = if delivered {
            backoff.reset();
            resend_interval
        } else {
            backoff.next_delay()
        };
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn deliver(
    client: Option<&HttpClient>,
    url: &str,
    body: &str,
    metrics: &WatchdogMetrics,
    kind: &str,
) -> bool {
    let result = match client {
        Some(c) => c.post_json(url, body, Duration::from_secs(5)).await,
        None => Err("no HTTP client".to_string()),
    };
    match result {
        Ok(()) => {
            metrics.deliveries.with_label_values(&[kind, "ok"]).inc();
            true
        }
        Err(e) => {
            metrics
                .deliveries
                .with_label_values(&[kind, "failed"])
                .inc();
            tracing::warn!(receiver = kind, error = %e, "alert delivery failed; retrying");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alertmanager_payload_has_labels_annotations_and_times() {
        let a = AlertView {
            labels: vec![
                ("alertname".into(), "CoHigh".into()),
                ("point".into(), "bore_a.co_1".into()),
            ],
            annotations: vec![("summary".into(), "CO above 70".into())],
            starts_at: Timestamp(1_800_000_000_000_000),
            ends_at: Some(Timestamp(1_800_000_060_000_000)),
        };
        let v: serde_json::Value = serde_json::from_str(&alertmanager_json(&[a])).unwrap();
        assert_eq!(v[0]["labels"]["alertname"], "CoHigh");
        assert_eq!(v[0]["annotations"]["summary"], "CO above 70");
        assert_eq!(v[0]["startsAt"], "2027-01-15T08:00:00.000Z");
        assert_eq!(v[0]["endsAt"], "2027-01-15T08:01:00.000Z");
    }
}
