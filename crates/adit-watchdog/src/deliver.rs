//! Delivery of alerts, apart from the sink path: to Prometheus Alertmanager
//! (API v2), to generic JSON webhooks, and to the log.
//!
//! Delivery is by state, not by message: on every change and every
//! `resend_interval`, each receiver gets every firing alert (which keeps them
//! alive in Alertmanager, as it expects), the recently resolved ones with
//! their `endsAt`, and the heartbeat alert that fires for as long as the
//! watchdog runs (a dead man's switch: when it stops arriving, adit is gone).
//! A receiver that fails is retried at the next round; nothing queues up
//! without bound (resolved alerts are kept for a few rounds, at most 1000).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use adit_core::{Batch, Timestamp};
use prometheus::IntCounterVec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::{AlertView, Engine, Event};
use crate::rules::Transition;
use crate::selfhealth::{SelfHealthProbe, SelfHealthRules, CHECKS};

/// Where alerts go.
#[derive(Clone, Debug, Default)]
pub struct Receivers {
    /// Base URLs of Alertmanagers, e.g. `http://127.0.0.1:9093`.
    pub alertmanagers: Vec<String>,
    /// URLs that get the same JSON array by POST.
    pub webhooks: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct DeliveryOptions {
    pub resend_interval: Duration,
    pub heartbeat: bool,
    pub site: String,
}

/// Alertmanager v2 JSON for a list of alerts.
pub fn alertmanager_json(alerts: &[AlertView]) -> String {
    let list: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| {
            let labels: serde_json::Map<String, serde_json::Value> = a.labels.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
            let annotations: serde_json::Map<String, serde_json::Value> = a.annotations.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
            let mut alert = serde_json::json!({ "labels": labels, "annotations": annotations, "startsAt": a.starts_at.to_rfc3339() });
            if let Some(end) = a.ends_at {
                alert["endsAt"] = serde_json::Value::String(end.to_rfc3339());
            }
            alert
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

fn self_alert(site: &str, check: usize, since: Timestamp, ends_at: Option<Timestamp>) -> AlertView {
    let (name, summary, check_first) = CHECKS[check.min(CHECKS.len() - 1)];
    AlertView {
        labels: vec![
            ("alertname".into(), name.into()),
            ("site".into(), site.into()),
            ("rule".into(), "self_health".into()),
            ("severity".into(), "critical".into()),
        ],
        annotations: vec![
            ("summary".into(), format!("adit: {summary}")),
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

/// POSTs `body` to an `http://host:port/path` URL; Ok on a 2xx answer.
pub async fn post_json(url: &str, body: &str, limit: Duration) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// receivers are supported"))?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| format!("{host}: {e}"))?;
        let request = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
        let status = String::from_utf8_lossy(&head[..n])
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("{url}: HTTP {status}"))
        }
    };
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("{url}: no answer within {limit:?}")))
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
}

/// Counters of the watchdog.
#[derive(Clone)]
pub struct WatchdogMetrics {
    pub transitions: IntCounterVec,
    pub deliveries: IntCounterVec,
}

/// Runs the watchdog until shutdown: evaluates batches, ticks every second,
/// and delivers.
pub async fn run_watchdog(
    mut engine: Engine,
    mut rx: mpsc::Receiver<Batch>,
    receivers: Receivers,
    options: DeliveryOptions,
    metrics: WatchdogMetrics,
    hooks: Hooks,
    shutdown: CancellationToken,
) {
    let Hooks { probe, recorder } = hooks;
    let mut self_rules = SelfHealthRules::default();
    let mut self_firing = [None::<Timestamp>; CHECKS.len()];
    let started = Timestamp::now();
    let mut resolved: VecDeque<(AlertView, u32)> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_send = tokio::time::Instant::now() - options.resend_interval;
    let receivers = Arc::new(receivers);
    loop {
        let events = tokio::select! {
            batch = rx.recv() => match batch {
                Some(batch) => engine.observe(&batch, tokio::time::Instant::now().into_std()),
                None => return,
            },
            _ = tick.tick() => {
                let now = tokio::time::Instant::now().into_std();
                let mut events = engine.tick(now);
                if let Some(probe) = &probe {
                    let raised = self_rules.evaluate(&probe.sample(), now);
                    for (i, up) in raised.into_iter().enumerate() {
                        match (up, self_firing[i]) {
                            (true, None) => {
                                let at = Timestamp::now();
                                self_firing[i] = Some(at);
                                events.push(Event { transition: Transition::Fired, alert: self_alert(&options.site, i, at, None) });
                            }
                            (false, Some(since)) => {
                                self_firing[i] = None;
                                events.push(Event { transition: Transition::Resolved, alert: self_alert(&options.site, i, since, Some(Timestamp::now())) });
                            }
                            _ => {}
                        }
                    }
                }
                events
            }
            () = shutdown.cancelled() => return,
        };
        if let (Some(recorder), false) = (&recorder, events.is_empty()) {
            recorder.record(&events);
        }
        for e in &events {
            let name = e
                .alert
                .labels
                .iter()
                .find(|(k, _)| k == "alertname")
                .map_or("", |(_, v)| v.as_str());
            let subject = e
                .alert
                .labels
                .iter()
                .find(|(k, _)| k == "point" || k == "device")
                .map_or("", |(_, v)| v.as_str());
            let summary = e
                .alert
                .annotations
                .iter()
                .find(|(k, _)| k == "summary")
                .map_or("", |(_, v)| v.as_str());
            match e.transition {
                Transition::Fired => {
                    metrics.transitions.with_label_values(&["fired"]).inc();
                    tracing::warn!(alert = name, subject, summary, "ALERT firing");
                }
                Transition::Resolved => {
                    metrics.transitions.with_label_values(&["resolved"]).inc();
                    tracing::info!(alert = name, subject, "alert resolved");
                    resolved.push_back((e.alert.clone(), 0));
                    while resolved.len() > 1000 {
                        resolved.pop_front();
                    }
                }
            }
        }
        let due = last_send.elapsed() >= options.resend_interval;
        if events.is_empty() && !due {
            continue;
        }
        let mut alerts = engine.firing();
        alerts.extend(
            self_firing
                .iter()
                .enumerate()
                .filter_map(|(i, since)| since.map(|at| self_alert(&options.site, i, at, None))),
        );
        if options.heartbeat {
            alerts.push(heartbeat(&options.site, started));
        }
        alerts.extend(resolved.iter().map(|(a, _)| a.clone()));
        let body = alertmanager_json(&alerts);
        let mut all_ok = true;
        for base in &receivers.alertmanagers {
            let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
            all_ok &= deliver(&url, &body, &metrics, "alertmanager").await;
        }
        for url in &receivers.webhooks {
            all_ok &= deliver(url, &body, &metrics, "webhook").await;
        }
        last_send = tokio::time::Instant::now();
        // Resolutions are repeated for three rounds after everyone got them.
        for (_, rounds) in &mut resolved {
            if all_ok {
                *rounds += 1;
            }
        }
        resolved.retain(|(_, rounds)| *rounds < 3);
    }
}

async fn deliver(url: &str, body: &str, metrics: &WatchdogMetrics, kind: &str) -> bool {
    match post_json(url, body, Duration::from_secs(5)).await {
        Ok(()) => {
            metrics.deliveries.with_label_values(&[kind, "ok"]).inc();
            true
        }
        Err(e) => {
            metrics
                .deliveries
                .with_label_values(&[kind, "failed"])
                .inc();
            tracing::warn!(receiver = kind, error = %e, "alert delivery failed; retrying at the next round");
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
