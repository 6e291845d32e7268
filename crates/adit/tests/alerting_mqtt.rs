//! Alerts to MQTT end to end, against a real Mosquitto (Debian package,
//! started here on a loopback port): a simulator fault becomes a retained
//! alert message, its resolution clears it, the status topic says online and
//! then offline, and after a broker restart (which loses retained messages)
//! adit publishes its state again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_mosquitto;
mod support_vm;
mod support_wait;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adit::app::{App, HttpBind};
use adit_sim_modbus::{Framing, Simulator, UnitSpec};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support_mosquitto::Mosquitto;
use support_vm::free_port;
use support_wait::wait_for;

/// (topic, retained flag, payload) of every message a subscriber got.
type Messages = Arc<Mutex<Vec<(String, bool, String)>>>;

/// Subscribes to `filter` with a fresh client and records every message.
async fn subscribe(port: u16, filter: &str) -> (Messages, tokio::task::JoinHandle<()>) {
    let id = format!("test-sub-{}", fastrand::u32(..));
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 100);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let messages: Messages = Arc::default();
    let sink = messages.clone();
    let task = tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                sink.lock().unwrap().push((
                    p.topic.clone(),
                    p.retain,
                    String::from_utf8_lossy(&p.payload).into_owned(),
                ));
            }
        }
    });
    (messages, task)
}

fn has(messages: &Messages, topic: &str, pred: impl Fn(bool, &str) -> bool) -> bool {
    messages
        .lock()
        .unwrap()
        .iter()
        .any(|(t, retain, body)| t == topic && pred(*retain, body))
}

fn config(dir: &std::path::Path, sim: SocketAddr, broker: u16) -> String {
    format!(
        r#"site = "mqtt-test"
data_dir = "{}"
[http]
listen = "off"
[alerting]
mqtt = ["mqtt://127.0.0.1:{broker}/adit/alerts"]
resend_interval = "1s"

[[rule]]
name = "CoHigh"
points = "u1.co"
kind = "above"
raise = 70.0
clear = 60.0
check_first = "Jet fans running? Traffic jam in the bore?"

[[device]]
id = "plc1"
protocol = "modbus_tcp"
address = "{sim}"
unit_id = 1
poll_interval = "200ms"
[[device.point]]
id = "u1.co"
table = "holding"
address = 0
type = "f32"
unit = "ppm"
"#,
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_retained_on_mqtt_while_firing_cleared_when_resolved_and_republished_after_a_broker_restart(
) {
    const STATUS: &str = "adit/alerts/mqtt-test/status";
    const CO_HIGH: &str = "adit/alerts/mqtt-test/CoHigh/u1.co";
    const HEARTBEAT: &str = "adit/alerts/mqtt-test/AditWatchdogHeartbeat";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Mosquitto::start(dir.path(), port);
    let units = [UnitSpec {
        frozen: vec![("co_1".into(), 40.0)],
        ..UnitSpec::healthy(1)
    }];
    let sim = Simulator::start_tcp(SocketAddr::from(([127, 0, 0, 1], 0)), Framing::Tcp, &units)
        .await
        .unwrap();
    let (live, _live_task) = subscribe(port, "adit/alerts/#").await;
    let cfg = adit_config::load_str(&config(dir.path(), sim.addr(), port), "mqtt.toml").unwrap();
    let app = App::start(&cfg, HttpBind::Required).await.unwrap();

    wait_for(
        Duration::from_secs(10),
        "online status and heartbeat",
        || {
            // (A live subscriber gets retained messages with the flag unset,
            // as MQTT 3.1.1 says; late subscribers below see it set.)
            has(&live, STATUS, |_, body| body.contains("\"online\""))
                && has(&live, HEARTBEAT, |_, body| body.contains("\"firing\""))
        },
    )
    .await;

    sim.set(1, "co_1", 120.0);
    let fired = wait_for(Duration::from_secs(10), "CoHigh on MQTT", || {
        has(&live, CO_HIGH, |_, body| body.contains("\"firing\""))
    })
    .await;
    let body = live
        .lock()
        .unwrap()
        .iter()
        .find(|(t, _, _)| t == CO_HIGH)
        .map(|(_, _, b)| b.clone())
        .unwrap();
    let alert: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(alert["labels"]["point"], "u1.co");
    assert_eq!(alert["labels"]["device"], "plc1");
    assert_eq!(alert["annotations"]["value"], "120 ppm");

    // A dashboard that subscribes now gets the open alert at once (retained).
    let (late, late_task) = subscribe(port, "adit/alerts/#").await;
    wait_for(Duration::from_secs(5), "retained CoHigh", || {
        has(&late, CO_HIGH, |retain, body| {
            retain && body.contains("\"firing\"")
        })
    })
    .await;
    late_task.abort();

    sim.set(1, "co_1", 40.0);
    let resolved = wait_for(
        Duration::from_secs(10),
        "CoHigh resolved and cleared",
        || {
            has(&live, CO_HIGH, |retain, body| {
                !retain && body.contains("\"resolved\"")
            }) && has(&live, CO_HIGH, |_, body| body.is_empty())
        },
    )
    .await;
    println!("fault → retained alert on MQTT in {fired:?}; cleared → resolved and removed in {resolved:?}");
    let (late, late_task) = subscribe(port, "adit/alerts/#").await;
    // Retained messages come together on subscribing: once the heartbeat
    // is here, a retained CoHigh would be too.
    wait_for(Duration::from_secs(10), "the retained heartbeat", || {
        has(&late, HEARTBEAT, |retain, _| retain)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !has(&late, CO_HIGH, |_, _| true),
        "a resolved alert is no longer retained"
    );
    assert!(has(&late, HEARTBEAT, |retain, _| retain));
    late_task.abort();

    // The broker restarts and forgets every retained message: adit reconnects
    // and publishes its state again (an open alert included).
    sim.set(1, "co_1", 150.0);
    wait_for(Duration::from_secs(10), "CoHigh again", || {
        has(&live, CO_HIGH, |_, body| {
            body.contains("\"firing\"") && body.contains("150 ppm")
        })
    })
    .await;
    drop(broker);
    let restarted = Instant::now();
    broker = Mosquitto::start(dir.path(), port);
    let (after, after_task) = subscribe(port, "adit/alerts/#").await;
    let back = wait_for(
        Duration::from_secs(20),
        "state republished after restart",
        || {
            has(&after, CO_HIGH, |_, body| body.contains("\"firing\""))
                && has(&after, STATUS, |_, body| body.contains("\"online\""))
        },
    )
    .await;
    println!(
        "broker restart → state republished {back:?} after the new broker accepted connections ({:?} in all)",
        restarted.elapsed()
    );
    after_task.abort();
    let (late, late_task) = subscribe(port, "adit/alerts/#").await;
    wait_for(
        Duration::from_secs(5),
        "retained CoHigh on the new broker",
        || {
            has(&late, CO_HIGH, |retain, body| {
                retain && body.contains("\"firing\"")
            })
        },
    )
    .await;
    late_task.abort();

    // A clean stop says offline (retained) for whoever looks next.
    assert!(app.shutdown().await);
    let (last, last_task) = subscribe(port, STATUS).await;
    wait_for(Duration::from_secs(5), "offline status", || {
        has(&last, STATUS, |retain, body| {
            retain && body.contains("\"offline\"")
        })
    })
    .await;
    last_task.abort();
    drop(broker);
}
