//! Alerts to an MQTT broker, by state, as retained messages:
//!
//! - `PREFIX/SITE/ALERTNAME[/SUBJECT]`: the alert as JSON, **retained** while
//!   it fires, so a dashboard that subscribes later sees every open alert at
//!   once. On resolution, one non-retained JSON with `"state": "resolved"` and
//!   `endsAt`, then an empty retained message that removes it from the broker.
//! - `PREFIX/SITE/status`: `{"state":"online"}` retained while connected; the
//!   broker publishes the Last Will `{"state":"offline"}` when adit vanishes
//!   (keep-alive 5 s), and adit publishes it itself on a clean stop. This is
//!   the dead man's switch for MQTT consumers.
//!
//! What is published is a pure function of the previous published set and
//! the new state ([`plan`]); a reconnect clears the set, so everything is
//! published again (the broker may have lost its retained messages).
//! Topic segments never carry `+`, `#` or `/` from labels.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::deliver::{alert_json, AlertState, WatchdogMetrics};

/// An alert as JSON with its state, for MQTT subscribers.
fn mqtt_json(a: &AlertView) -> Vec<u8> {
    let mut v = alert_json(a);
    v["state"] = serde_json::Value::String(
        if a.ends_at.is_some() {
            "resolved"
        } else {
            "firing"
        }
        .into(),
    );
    v.to_string().into_bytes()
}
use crate::engine::AlertView;

pub use adit_config::MqttTarget;

/// Marks a retained topic whose state on the broker is unknown (a publish
/// could not be queued); never equal to a JSON payload.
const UNKNOWN: &[u8] = b"?";

/// One message to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A label value made safe as one topic level.
fn segment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, '+' | '#' | '/' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn label<'a>(a: &'a AlertView, key: &str) -> Option<&'a str> {
    a.labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The retained topic of an alert.
pub fn alert_topic(prefix: &str, site: &str, a: &AlertView) -> String {
    let mut topic = format!(
        "{prefix}/{}/{}",
        segment(site),
        segment(label(a, "alertname").unwrap_or("unnamed"))
    );
    if let Some(subject) = label(a, "point").or_else(|| label(a, "device")) {
        topic.push('/');
        topic.push_str(&segment(subject));
    }
    topic
}

/// The status topic (online / offline, with the Last Will).
pub fn status_topic(prefix: &str, site: &str) -> String {
    format!("{prefix}/{}/status", segment(site))
}

/// What to publish to move the broker from `published` (topic → payload of
/// the retained messages adit put there) to `state`; updates `published`.
pub fn plan(
    prefix: &str,
    site: &str,
    state: &AlertState,
    published: &mut BTreeMap<String, Vec<u8>>,
) -> Vec<Publish> {
    let mut out = Vec::new();
    let mut firing: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for a in state.alerts.iter().filter(|a| a.ends_at.is_none()) {
        firing.insert(alert_topic(prefix, site, a), mqtt_json(a));
    }
    for (topic, payload) in &firing {
        if published.get(topic) != Some(payload) {
            out.push(Publish {
                topic: topic.clone(),
                payload: payload.clone(),
                retain: true,
            });
        }
    }
    for a in state.alerts.iter().filter(|a| a.ends_at.is_some()) {
        let topic = alert_topic(prefix, site, a);
        if published.contains_key(&topic) && !firing.contains_key(&topic) {
            out.push(Publish {
                topic: topic.clone(),
                payload: mqtt_json(a),
                retain: false,
            });
        }
    }
    // Whatever is still retained but no longer fires is cleared (including
    // alerts whose resolution aged out of the state while disconnected).
    for topic in published.keys() {
        if !firing.contains_key(topic) {
            out.push(Publish {
                topic: topic.clone(),
                payload: Vec::new(),
                retain: true,
            });
        }
    }
    *published = firing;
    out
}

fn status(state: &str, reason: &str) -> Vec<u8> {
    serde_json::json!({ "state": state, "reason": reason })
        .to_string()
        .into_bytes()
}

/// Publishes alert state to one broker until shutdown.
pub async fn run_mqtt_receiver(
    target: MqttTarget,
    site: String,
    mut rx: watch::Receiver<Arc<AlertState>>,
    metrics: WatchdogMetrics,
    shutdown: CancellationToken,
) {
    let client_id = format!("adit-alerts-{}-{}", segment(&site), std::process::id());
    let status_topic = status_topic(&target.prefix, &site);
    let mut options = MqttOptions::new(client_id, target.host.clone(), target.port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_last_will(LastWill::new(
        status_topic.clone(),
        status("offline", "connection lost"),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut eventloop) = AsyncClient::new(options, 4096);
    let ok = metrics.deliveries.with_label_values(&["mqtt", "ok"]);
    let failed = metrics.deliveries.with_label_values(&["mqtt", "failed"]);
    let mut published: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut connected = false;
    let mut backoff = adit_core::Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    // Returns false when some message could not be queued; those topics
    // are then marked unknown so that the retry sends them again.
    let publish_state = |published: &mut BTreeMap<String, Vec<u8>>, state: &AlertState| {
        let mut all = true;
        for p in plan(&target.prefix, &site, state, published) {
            let queued = client
                .try_publish(p.topic.clone(), QoS::AtLeastOnce, p.retain, p.payload)
                .is_ok();
            if !queued && p.retain {
                // Unknown on the broker: a firing alert is re-sent (the
                // marker never equals a payload), a clear is repeated.
                published.insert(p.topic, UNKNOWN.to_vec());
            }
            all &= queued;
        }
        if all {
            ok.inc();
        } else {
            failed.inc();
        }
        all
    };
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry_pending = false;
    loop {
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    backoff.reset();
                    tracing::info!(broker = %target.host, port = target.port, "alert MQTT receiver connected");
                    published.clear();
                    let online = client.try_publish(status_topic.clone(), QoS::AtLeastOnce, true, status("online", "watchdog running"));
                    if online.is_err() {
                        failed.inc();
                    }
                    let state = rx.borrow_and_update().clone();
                    retry_pending = !publish_state(&mut published, &state);
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!(broker = %target.host, error = %e, "alert MQTT receiver lost its broker; reconnecting");
                    }
                    connected = false;
                    failed.inc();
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            },
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                if connected {
                    let state = rx.borrow_and_update().clone();
                    retry_pending = !publish_state(&mut published, &state);
                }
            }
            _ = retry.tick(), if retry_pending && connected => {
                let state = rx.borrow().clone();
                retry_pending = !publish_state(&mut published, &state);
            }
            () = shutdown.cancelled() => {
                if connected {
                    let _ = client.try_publish(status_topic.clone(), QoS::AtLeastOnce, true, status("offline", "adit stopped"));
                    let _ = client.try_disconnect();
                    // Drive the event loop until the goodbye is out (bounded).
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while eventloop.poll().await.is_ok() {}
                    })
                    .await;
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adit_core::Timestamp;

    fn alert(name: &str, point: &str, ends: Option<i64>) -> AlertView {
        AlertView {
            labels: vec![
                ("alertname".into(), name.into()),
                ("point".into(), point.into()),
            ],
            annotations: vec![("summary".into(), format!("{name} on {point}"))],
            starts_at: Timestamp(1_000),
            ends_at: ends.map(Timestamp),
        }
    }

    fn state(alerts: Vec<AlertView>) -> AlertState {
        AlertState::new(alerts)
    }

    fn summary(p: &[Publish]) -> Vec<(String, bool, bool)> {
        p.iter()
            .map(|p| (p.topic.clone(), p.retain, p.payload.is_empty()))
            .collect()
    }

    #[test]
    fn topics_are_per_alert_and_subject_without_wildcards_from_labels() {
        let a = alert("Co+High", "bore_a/co#1", None);
        assert_eq!(
            alert_topic("adit/alerts", "site 1", &a),
            "adit/alerts/site 1/Co_High/bore_a_co_1"
        );
    }

    #[test]
    fn firing_is_retained_once_and_resolution_clears_it() {
        let mut published = BTreeMap::new();
        let p = plan(
            "a",
            "s",
            &state(vec![alert("CoHigh", "co1", None)]),
            &mut published,
        );
        assert_eq!(summary(&p), vec![("a/s/CoHigh/co1".into(), true, false)]);

        // The same state again publishes nothing (a resend round).
        let p = plan(
            "a",
            "s",
            &state(vec![alert("CoHigh", "co1", None)]),
            &mut published,
        );
        assert!(p.is_empty(), "{p:?}");

        // Resolved: one non-retained resolution, then the retained one cleared.
        let resolved = state(vec![alert("CoHigh", "co1", Some(2_000))]);
        let p = plan("a", "s", &resolved, &mut published);
        assert_eq!(
            summary(&p),
            vec![
                ("a/s/CoHigh/co1".into(), false, false),
                ("a/s/CoHigh/co1".into(), true, true),
            ]
        );
        let body: serde_json::Value = serde_json::from_slice(&p[0].payload).unwrap();
        assert_eq!(body["state"], "resolved");
        assert!(body["endsAt"].is_string());

        // Later rounds with the resolution still in the state are quiet.
        assert!(plan("a", "s", &resolved, &mut published).is_empty());
    }

    #[test]
    fn an_alert_gone_from_the_state_while_disconnected_is_still_cleared() {
        let mut published = BTreeMap::new();
        plan(
            "a",
            "s",
            &state(vec![alert("X", "p", None)]),
            &mut published,
        );
        let p = plan("a", "s", &state(vec![]), &mut published);
        assert_eq!(summary(&p), vec![("a/s/X/p".into(), true, true)]);
        assert!(published.is_empty());
    }

    #[test]
    fn after_a_reconnect_everything_firing_is_published_again() {
        let mut published = BTreeMap::new();
        let s = state(vec![alert("X", "p", None), alert("Y", "q", None)]);
        plan("a", "s", &s, &mut published);
        published.clear(); // what the receiver does on ConnAck
        assert_eq!(plan("a", "s", &s, &mut published).len(), 2);
    }

    #[test]
    fn topics_whose_publish_failed_are_sent_again_or_cleared_again() {
        let mut published = BTreeMap::new();
        published.insert("a/s/X/p".to_string(), UNKNOWN.to_vec());
        published.insert("a/s/Y/q".to_string(), UNKNOWN.to_vec());
        let p = plan(
            "a",
            "s",
            &state(vec![alert("X", "p", None)]),
            &mut published,
        );
        assert_eq!(
            summary(&p),
            vec![
                ("a/s/X/p".into(), true, false),
                ("a/s/Y/q".into(), true, true),
            ]
        );
    }
}
