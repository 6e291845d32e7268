//! kill -9 of adit while QoS 1 messages arrive, again and again, then a
//! clean run: every message the broker acknowledged to the publisher is in
//! `SQLite`, exactly once.
//!
//! The pieces are real: a Mosquitto with persistence (started here), adit's
//! own binary as a child process with `spool.fsync = always`, and a rumqttc
//! publisher whose PUBACKs are counted. adit acknowledges a message to the
//! broker only when its readings are durable in the spool, so a kill between
//! receipt and durability leaves the message unacknowledged in adit's
//! persistent session and the broker sends it again on the next connect.
//! Each message carries its own timestamp, from which its `received_ts` is
//! derived (the same for the same message, also after a restart), so a
//! redelivery of a message that did reach the spool is the same storage key
//! and is stored once.
//!
//! Ground truth from outside adit: the broker's acknowledgements to the
//! publisher (what was published) and `SQLite`'s own count (what was stored).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_adit;
mod support_mosquitto;
mod support_mqtt;
mod support_vm;
mod support_wait;

use std::time::{Duration, Instant};

use adit_core::Timestamp;
use support_adit::Adit;
use support_mosquitto::{Mosquitto, MosquittoOptions};
use support_mqtt::{config_text, count, Publisher};
use support_vm::{free_port, http};
use support_wait::wait_for;

const MESSAGES: i64 = 4000;
const KILLS: usize = 8;

/// A kill delay in 150..750 ms, varied per run without a random crate.
fn kill_delay(run: usize) -> Duration {
    let nanos = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos(),
    );
    Duration::from_millis(150 + (nanos.wrapping_mul(run as u64 + 7) % 600))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_between_receipt_and_durability_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Mosquitto::start_with(
        dir.path(),
        port,
        &MosquittoOptions {
            persistence: true,
            ..MosquittoOptions::default()
        },
    );
    let config_path = dir.path().join("adit.toml");
    let http_port = free_port();
    std::fs::write(
        &config_path,
        config_text(
            dir.path(),
            port,
            "[[device.subscription]]\nfilter = \"k9/+\"\ntemplate = \"k9/{n}\"\npoint = \"k9.{n}\"\ntimestamp = \"/ts\"\n",
        )
        .replace("listen = \"off\"", &format!("listen = \"127.0.0.1:{http_port}\"")),
    )
    .unwrap();
    // adit up, and the broker confirmed its subscription.
    let subscribed = || {
        http(http_port, "GET", "/metrics", "").is_some_and(|m| {
            m.lines()
                .any(|l| l.starts_with("adit_mqtt_subscribed{") && l.ends_with(" 1"))
        })
    };
    let db = dir.path().join("readings.db");

    // The first start makes the persistent session (and its subscription).
    let mut adit = Adit::spawn(&config_path);
    wait_for(Duration::from_secs(60), "adit subscribed", subscribed).await;

    let publisher = Publisher::connect(port, "k9-pub");
    let base = Timestamp::now().as_micros() / 1000 - 3_600_000;
    let publishing = async {
        for i in 0..MESSAGES {
            publisher
                .publish(
                    &format!("k9/s{}", i % 20),
                    format!("{{\"value\": {i}, \"ts\": {}}}", base + i),
                )
                .await;
            if i % 2 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let distinct = || {
        count(
            &db,
            "SELECT count(DISTINCT value) FROM readings_view WHERE point LIKE 'k9.%' AND quality = 'good'",
        )
    };
    // Kills that landed while messages the broker had taken were not yet
    // stored: what the test is about (at least one must).
    let mut kills_in_flight = 0;
    let killing = async {
        for run in 0..KILLS {
            tokio::time::sleep(kill_delay(run)).await;
            let in_flight = publisher.acked() as i64 > distinct();
            adit.kill9();
            kills_in_flight += usize::from(in_flight);
            adit = Adit::spawn(&config_path);
        }
    };
    let started = Instant::now();
    tokio::join!(publishing, killing);
    let published_in = started.elapsed();
    wait_for(
        Duration::from_secs(60),
        "the broker's acknowledgement of every message",
        || publisher.acked() >= MESSAGES as u64,
    )
    .await;

    let drained = wait_for(
        Duration::from_secs(90),
        "every acknowledged message in SQLite",
        || distinct() >= MESSAGES,
    )
    .await;
    // The last start may be only milliseconds old: let it come up (signal
    // handlers installed, subscribed) before the graceful stop.
    wait_for(
        Duration::from_secs(60),
        "the last adit subscribed",
        subscribed,
    )
    .await;
    let status = adit.stop();
    let good_rows = count(
        &db,
        "SELECT count(*) FROM readings_view WHERE point LIKE 'k9.%' AND quality = 'good'",
    );
    let out_of_range = count(
        &db,
        &format!(
            "SELECT count(*) FROM readings_view WHERE point LIKE 'k9.%' AND quality = 'good' \
             AND (value < 0 OR value >= {MESSAGES})"
        ),
    );
    println!(
        "figures: kill -9 × {KILLS} ({kills_in_flight} with messages in flight) while {MESSAGES} QoS 1 messages were published ({published_in:?}); \
         broker acked {}, SQLite holds {} distinct in {good_rows} good rows; all stored {drained:?} after the last publish",
        publisher.acked(),
        distinct(),
    );
    assert!(
        kills_in_flight >= 1,
        "no kill landed while messages were in flight: the test proved nothing"
    );
    assert!(status.success(), "graceful stop at the end: {status:?}");
    assert_eq!(
        distinct(),
        MESSAGES,
        "a message the broker acknowledged was lost"
    );
    assert_eq!(good_rows, MESSAGES, "a redelivery was stored twice");
    assert_eq!(out_of_range, 0, "values nobody published");
}
