//! Interop with independent MQTT publishers, run by the test as Python
//! programs (`tests/interop/mqtt_publishers.py`): paho-mqtt for JSON and
//! pysparkplug (its own Sparkplug B encoder, not our prost code) for births,
//! data and death, through a real Mosquitto. Ground truth is what the
//! Python side says the broker acknowledged or it published.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_mosquitto;
mod support_mqtt;
mod support_vm;
mod support_wait;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use adit::app::{App, HttpBind};
use support_mosquitto::Mosquitto;
use support_mqtt::{config_text, metric, rows, rows_us as stored};
use support_vm::free_port;
use support_wait::wait_for;

const JSON_MESSAGES: usize = 400;

/// Runs the publisher script to the end (killed after 120 s); its stdout lines.
async fn python(args: &[String]) -> Vec<String> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/mqtt_publishers.py");
    let out_dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = (out_dir.path().join("out"), out_dir.path().join("err"));
    let mut child = Command::new("python3")
        .arg(&script)
        .args(args)
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("python3 must be installed (tests/run.sh installs paho-mqtt and pysparkplug)");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the Python publisher did not finish in 120 s: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "the Python publisher failed (is paho-mqtt 1.6.1 / pysparkplug 0.6.1 installed?): {}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    std::fs::read_to_string(&stdout)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_json_and_pysparkplug_births_data_and_death_are_read_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Mosquitto::start(dir.path(), port);
    let text = config_text(
        dir.path(),
        port,
        "[[device.subscription]]\nfilter = \"interop/json/+\"\ntemplate = \"interop/json/{s}\"\n\
         point = \"py.{s}\"\nvalue = \"/v\"\ntimestamp = \"/t\"\ntimestamp_unit = \"ms\"\n\
         [[device.subscription]]\nfilter = \"spBv1.0/interop/#\"\nformat = \"sparkplug\"\n",
    );
    let config = adit_config::load_str(&text, "interop.toml").unwrap();
    let app = App::start(&config, HttpBind::BestEffort).await.unwrap();
    wait_for(Duration::from_secs(30), "adit subscribed", || {
        metric(&app, "adit_mqtt_subscribed", &[("device", "edge")]) == 1.0
    })
    .await;
    let db = dir.path().join("readings.db");

    // paho-mqtt, JSON, QoS 1: every acknowledged message, exact value and
    // millisecond.
    let acked = python(&[
        "json".into(),
        "127.0.0.1".into(),
        port.to_string(),
        JSON_MESSAGES.to_string(),
    ])
    .await;
    let expected: Vec<(String, f64, i64)> = acked
        .iter()
        .filter_map(|l| {
            let mut w = l.strip_prefix("acked ")?.split(' ');
            let topic = w.next()?;
            let value = w.next()?.parse().ok()?;
            let ms: i64 = w.next()?.parse().ok()?;
            let sensor = topic.rsplit('/').next()?;
            Some((format!("py.{sensor}"), value, ms * 1000))
        })
        .collect();
    assert_eq!(expected.len(), JSON_MESSAGES, "paho's acknowledgements");
    let took = wait_for(Duration::from_secs(30), "every paho message", || {
        ["py.s0", "py.s1", "py.s2", "py.s3"]
            .iter()
            .map(|p| stored(&db, p).len())
            .sum::<usize>()
            >= JSON_MESSAGES
    })
    .await;
    for (point, value, ts) in &expected {
        let got = stored(&db, point);
        assert!(
            got.iter()
                .any(|r| r.1 == *ts && r.0 == Some(*value) && r.2 == 0),
            "{point} {value} at {ts} µs not stored exactly: {:?}",
            got.iter().find(|r| r.1 == *ts)
        );
    }
    let total: usize = ["py.s0", "py.s1", "py.s2", "py.s3"]
        .iter()
        .map(|p| stored(&db, p).len())
        .sum();
    assert_eq!(total, JSON_MESSAGES, "nothing more, nothing twice");
    println!("figures: paho-mqtt {JSON_MESSAGES} JSON messages, all stored exactly, {took:?} after the last acknowledgement");

    // pysparkplug: NBIRTH + DBIRTH (CO 1.5), three DDATA, then NDEATH.
    let published = python(&["sparkplug".into(), "127.0.0.1".into(), port.to_string()]).await;
    let mut values: Vec<f64> = vec![1.5];
    values.extend(
        published
            .iter()
            .filter_map(|l| l.strip_prefix("ddata CO ")?.parse::<f64>().ok()),
    );
    assert_eq!(values.len(), 4, "the publisher's output: {published:?}");
    let co = "interop/py1/d1/CO";
    wait_for(
        Duration::from_secs(20),
        "the birth, the data and the death",
        || {
            let r = stored(&db, co);
            r.iter().filter(|r| r.2 == 0).count() >= values.len()
                && r.last().is_some_and(|r| r.2 == 2)
        },
    )
    .await;
    let rows_co = stored(&db, co);
    let good: Vec<f64> = rows_co
        .iter()
        .filter(|r| r.2 == 0)
        .filter_map(|r| r.0)
        .collect();
    assert_eq!(good, values, "birth and data values, in order");
    let last = rows_co.last().unwrap();
    assert_eq!(last.3.as_deref(), Some("comm_failure"), "{rows_co:?}");
    assert_eq!(last.0, None, "a death row carries no value of its own");
    assert!(
        rows(&db, "interop/py1/Uptime")
            .iter()
            .any(|r| r.0 == Some(7.0) && r.2 == "good"),
        "the node's own birth metric"
    );
    assert_eq!(
        metric(&app, "adit_mqtt_rejected_total", &[]),
        0.0,
        "an independent encoder's messages are all understood"
    );
    println!(
        "figures: pysparkplug birth + {} DDATA + NDEATH read as {} good readings then bad/comm_failure",
        values.len() - 1,
        good.len()
    );
    assert!(app.shutdown().await);
}
